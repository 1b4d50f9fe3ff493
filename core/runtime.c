/* BLIS set-up. Debian's BLIS 0.9 picks its kernels from the CPU model and
 * falls back to the slow `generic` kernels on CPUs it does not know, even
 * when they have AVX2/FMA or AVX-512. We choose from the CPU's features
 * instead, before BLIS initialises, unless the user set BLIS_ARCH_TYPE.
 * BLIS 0.9 only honours BLIS_ARCH_TYPE when bli_init() runs before the
 * first query, so ul_runtime_init always calls it first. */
#include <blis.h>
#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int n_threads = 1;
static bool threads_from_env;
static char arch_source[96] = "detected by BLIS";

/* The kernels of the packed paths (see load_packed below). */
static struct {
    cntx_t *cntx;    /* NULL: the main instance's */
    char name[32];   /* their configuration's name */
    char note[160];  /* how they were chosen, or why the second instance failed */
} packed = {NULL, "", "the main instance's"};

#if defined(__x86_64__) || defined(__i386__)
static int choose_arch(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return BLIS_ARCH_SKX;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_is("amd") ? -1 /* BLIS knows the Zen family */ : BLIS_ARCH_HASWELL;
    return -1;
}
#else
static int choose_arch(void) { return -1; }
#endif

/* The CPU quota of a cgroup, rounded up to whole CPUs, or 0 for none:
 * cgroup v2's cpu.max ("max 100000" or "200000 100000") of the process's
 * group, else cgroup v1's cpu.cfs_quota_us / cpu.cfs_period_us at the
 * hierarchy's root, which is the process's own group inside a container
 * (docker --cpus), the case this is for. */
static int cgroup_cpus(void)
{
    char path[600] = "", line[512];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max",
                         strcmp(line + 3, "/") == 0 ? "" : line + 3);
            }
        fclose(f);
    }
    long long quota = -1, period = 0;
    char q[32];
    if (path[0] && (f = fopen(path, "r"))) {
        if (fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") != 0)
            quota = atoll(q);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r"))) {
        if (fscanf(f, "%lld", &quota) != 1)
            quota = -1;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r"))) {
            if (fscanf(f, "%lld", &period) != 1)
                period = 0;
            fclose(f);
        }
    }
    if (quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

int ul_runtime_cpus(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    const int quota = cgroup_cpus();
    if (quota >= 1 && quota < n)
        n = quota;
    return n;
}

/* The packed paths (pack_gemm.c: the Winograd and shifted-copy
 * convolutions) lay their R panels out for a micro-kernel that stores C by
 * rows, 16 columns wide: BLIS's AVX2 sgemm kernels (haswell, zen, zen2,
 * zen3: 6×16). BLIS's AVX-512 kernel (skx: 32×12, storing C by columns)
 * runs large GEMMs faster, but those paths cannot use it and are then off.
 * On a 2-core AVX-512 EPYC (batch 128) ResNet-18 trained and inferred
 * 1.3–2.5× slower and the CNN at width 1 1.4–1.6× slower with the skx
 * kernels than with zen3's, while the MLP at width 1 ran 1.5× faster and
 * sgemm 2048³ gave 230–290 GFLOP/s against 180–190. BLIS 0.9 picks one
 * configuration per process and exports no way to reach another's
 * kernels, so when the main configuration's kernel does not fit, a second
 * copy of the same library file is loaded into a link-map namespace of its
 * own (dlmopen), configured for AVX2, and the packed paths take its
 * micro-kernel; everything else, bli_sgemm included, stays on the main
 * instance. The copy runs no BLIS operation of its own: it only serves its
 * kernel and the context the kernel reads. UNLEARN_PACKED_ARCH=main keeps
 * the main instance's kernel; UNLEARN_PACKED_ARCH=NAME names the second
 * instance's configuration (haswell, zen3, ...). */
static bool kernel_fits(cntx_t *cntx)
{
    return cntx && bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cntx) &&
           bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, cntx) == 16;
}

/* Whether this BLIS build holds configuration id: BLIS aborts on one it
 * lacks and exports no way to ask. Debian's x86-64 build holds the x86_64
 * family of BLIS 0.9's configuration registry (checked id by id with
 * `unlearn --version`: knc and the ARM and POWER ones abort). */
static bool arch_available(int id)
{
#if defined(__x86_64__)
    switch (id) {
    case BLIS_ARCH_SKX:
    case BLIS_ARCH_KNL:
    case BLIS_ARCH_HASWELL:
    case BLIS_ARCH_SANDYBRIDGE:
    case BLIS_ARCH_PENRYN:
    case BLIS_ARCH_ZEN3:
    case BLIS_ARCH_ZEN2:
    case BLIS_ARCH_ZEN:
    case BLIS_ARCH_EXCAVATOR:
    case BLIS_ARCH_STEAMROLLER:
    case BLIS_ARCH_PILEDRIVER:
    case BLIS_ARCH_BULLDOZER:
    case BLIS_ARCH_GENERIC:
        return true;
    default:
        return false;
    }
#else
    return id >= 0 && id < BLIS_NUM_ARCHS;
#endif
}

static int arch_by_name(const char *name)
{
    for (int id = 0; id < BLIS_NUM_ARCHS; id++)
        if (strcmp(bli_arch_string((arch_t)id), name) == 0)
            return id;
    return -1;
}

/* Called with the main instance initialised and BLIS_ARCH_TYPE as it was
 * for it (set or unset as saved in main_env). */
static void load_packed(const char *main_env)
{
    const char *want = getenv("UNLEARN_PACKED_ARCH");
    if (want && strcmp(want, "main") == 0) {
        snprintf(packed.note, sizeof packed.note, "the main instance's (UNLEARN_PACKED_ARCH=main)");
        return;
    }
    /* Every kernel that fits needs AVX2 and FMA. */
    bool avx2 = false, amd = false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    amd = __builtin_cpu_is("amd");
#endif
    int id = -1;
    if (want && *want) {
        id = arch_by_name(want);
        if (id < 0 || !arch_available(id) || !avx2) {
            fprintf(stderr,
                    "unlearn: UNLEARN_PACKED_ARCH=%s %s; the packed paths keep the main "
                    "instance's kernel\n",
                    want,
                    id < 0                ? "names no BLIS configuration (haswell, zen3, ... or main)"
                    : !arch_available(id) ? "names a configuration this BLIS build lacks"
                                          : "needs a CPU with AVX2 and FMA, which this one lacks");
            return;
        }
    } else {
        if (kernel_fits(bli_gks_query_cntx()) || !avx2)
            return;
        id = amd ? BLIS_ARCH_ZEN3 : BLIS_ARCH_HASWELL;
    }
    Dl_info info;
    if (!dladdr((void *)bli_init, &info) || !info.dli_fname) {
        snprintf(packed.note, sizeof packed.note, "the main instance's (libblis not found)");
        return;
    }
    /* The copy reads BLIS_ARCH_TYPE when it initialises: set it for that
     * moment, then put back what the main instance saw (ul_runtime_init
     * runs before unlearn starts any thread of its own). */
    char buf[16];
    snprintf(buf, sizeof buf, "%d", id);
    setenv("BLIS_ARCH_TYPE", buf, 1);
    void *h = dlmopen(LM_ID_NEWLM, info.dli_fname, RTLD_NOW | RTLD_LOCAL);
    cntx_t *cntx = NULL;
    int got = -1;
    if (h) {
        void (*init)(void) = (void (*)(void))dlsym(h, "bli_init");
        cntx_t *(*query)(void) = (cntx_t * (*)(void)) dlsym(h, "bli_gks_query_cntx");
        arch_t (*qid)(void) = (arch_t(*)(void))dlsym(h, "bli_arch_query_id");
        if (init && query && qid) {
            init();
            cntx = query();
            got = (int)qid();
        }
    }
    if (main_env)
        setenv("BLIS_ARCH_TYPE", main_env, 1);
    else
        unsetenv("BLIS_ARCH_TYPE");
    if (!h) {
        snprintf(packed.note, sizeof packed.note,
                 "the main instance's (loading a second one failed: %.90s)", dlerror());
        return;
    }
    if (got != id || !kernel_fits(cntx)) {
        /* The copy stays loaded: unloading a namespace that holds a libc
         * of its own is not worth the risk. */
        snprintf(packed.note, sizeof packed.note,
                 "the main instance's (a second one set to '%s' did not offer a 6x16 kernel)",
                 bli_arch_string((arch_t)id));
        return;
    }
    packed.cntx = cntx;
    snprintf(packed.name, sizeof packed.name, "%s", bli_arch_string((arch_t)id));
    snprintf(packed.note, sizeof packed.note, "from a second BLIS instance%s",
             want && *want ? " (UNLEARN_PACKED_ARCH)" : "");
}

/* What a kernel set needs of the CPU that this one lacks, or NULL. */
static const char *arch_lacks(int id)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if ((id == BLIS_ARCH_SKX || id == BLIS_ARCH_KNL) && !__builtin_cpu_supports("avx512f"))
        return "AVX-512";
    if ((id == BLIS_ARCH_HASWELL || id == BLIS_ARCH_ZEN || id == BLIS_ARCH_ZEN2 ||
         id == BLIS_ARCH_ZEN3) &&
        !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return "AVX2 and FMA";
#else
    (void)id;
#endif
    return NULL;
}

/* BLIS 0.9 reads BLIS_ARCH_TYPE as a number (its arch_t) through atoi: a
 * name reads as 0, which is skx (whose AVX-512 code stops an AVX2 CPU
 * with an illegal instruction), and a number past its list makes it
 * abort. unlearn takes a number in range or a configuration's name (skx,
 * haswell, zen3, ...), hands BLIS the number, and otherwise says so and
 * drops the variable. A set the CPU cannot run is kept (no kernel runs
 * for `unlearn --version`) with a warning. Returns whether the variable
 * stays set. */
static bool blis_arch_env(void)
{
    const char *e = getenv("BLIS_ARCH_TYPE");
    if (!e)
        return false;
    char *end;
    const long v = strtol(e, &end, 10);
    const bool number = *e && *end == '\0' && v >= 0 && v < BLIS_NUM_ARCHS;
    const int id = number ? (int)v : arch_by_name(e);
    if (id < 0 || !arch_available(id)) {
        if (id < 0)
            fprintf(stderr,
                    "unlearn: BLIS_ARCH_TYPE=%s is neither a BLIS configuration's number (0 to "
                    "%d) nor its name (skx, haswell, zen3, ...); ignoring it\n",
                    e, BLIS_NUM_ARCHS - 1);
        else
            fprintf(stderr,
                    "unlearn: BLIS_ARCH_TYPE=%s names '%s', which this BLIS build lacks (it "
                    "would abort); ignoring it\n",
                    e, bli_arch_string((arch_t)id));
        unsetenv("BLIS_ARCH_TYPE");
        return false;
    }
    if (number) {
        snprintf(arch_source, sizeof arch_source, "set by BLIS_ARCH_TYPE");
    } else {
        char buf[16];
        snprintf(arch_source, sizeof arch_source, "set by BLIS_ARCH_TYPE=%s", e);
        snprintf(buf, sizeof buf, "%d", id);
        setenv("BLIS_ARCH_TYPE", buf, 1);
    }
    const char *lacks = arch_lacks(id);
    if (lacks)
        fprintf(stderr,
                "unlearn: BLIS_ARCH_TYPE selects BLIS's '%s' kernels, which need %s; this CPU "
                "lacks it, so the first BLIS product will stop with an illegal instruction\n",
                bli_arch_string((arch_t)id), lacks);
    return true;
}

static void init_once(void)
{
    if (!blis_arch_env()) {
        int id = choose_arch();
        if (id >= 0) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", id);
            setenv("BLIS_ARCH_TYPE", buf, 0);
            snprintf(arch_source, sizeof arch_source, "chosen by unlearn from CPU features");
        }
    }
    bli_init();
    {
        const char *e = getenv("BLIS_ARCH_TYPE");
        char *saved = e ? strdup(e) : NULL;
        load_packed(saved);
        free(saved);
    }

    n_threads = ul_runtime_cpus();
    const char *t = getenv("UNLEARN_THREADS");
    if (t && *t) {
        char *end;
        long v = strtol(t, &end, 10);
        if (*end == '\0' && v >= 1 && v <= 1024) {
            const int cpus = n_threads;
            n_threads = (int)v;
            threads_from_env = true;
            if (n_threads > cpus)
                fprintf(stderr,
                        "unlearn: UNLEARN_THREADS=%d is more than the %d CPU(s) this process "
                        "may use; threads that wait by spinning will slow each other down\n",
                        n_threads, cpus);
        } else
            fprintf(stderr,
                    "unlearn: UNLEARN_THREADS=%s is not a whole number from 1 to 1024; "
                    "using %d thread(s), the CPUs this process may use\n",
                    t, n_threads);
    }
    bli_thread_set_num_threads(n_threads);
    omp_set_num_threads(n_threads);
}

void ul_runtime_init(void) { pthread_once(&once, init_once); }

int ul_runtime_threads(void)
{
    ul_runtime_init();
    return n_threads;
}

void ul_runtime_set_threads(int n)
{
    ul_runtime_init();
    if (n >= 1) {
        n_threads = n;
        bli_thread_set_num_threads(n);
        omp_set_num_threads(n);
    }
}

const char *ul_runtime_threads_source(void)
{
    ul_runtime_init();
    return threads_from_env ? "set by UNLEARN_THREADS" : "the CPUs this process may use";
}

const char *ul_runtime_blis_arch(void)
{
    ul_runtime_init();
    return bli_arch_string(bli_arch_query_id());
}

const char *ul_runtime_blis_version(void)
{
    ul_runtime_init();
    return bli_info_get_version_str();
}

const char *ul_runtime_blis_arch_source(void)
{
    ul_runtime_init();
    return arch_source;
}

void *ul_runtime_packed_cntx(void)
{
    ul_runtime_init();
    return packed.cntx;
}

const char *ul_runtime_packed_arch(void)
{
    ul_runtime_init();
    return packed.cntx ? packed.name : ul_runtime_blis_arch();
}

const char *ul_runtime_packed_source(void)
{
    ul_runtime_init();
    return packed.note;
}
