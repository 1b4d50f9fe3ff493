/* BLIS set-up. Debian's BLIS 0.9 picks its kernels from the CPU model and
 * falls back to the slow `generic` kernels on CPUs it does not know, even
 * when they have AVX2/FMA or AVX-512. We choose from the CPU's features
 * instead, before BLIS initialises, unless the user set BLIS_ARCH_TYPE.
 * BLIS 0.9 only honours BLIS_ARCH_TYPE when bli_init() runs before the
 * first query, so ul_runtime_init always calls it first. */
#include <blis.h>
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

static void init_once(void)
{
    if (getenv("BLIS_ARCH_TYPE")) {
        snprintf(arch_source, sizeof arch_source, "set by BLIS_ARCH_TYPE");
    } else {
        int id = choose_arch();
        if (id >= 0) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", id);
            setenv("BLIS_ARCH_TYPE", buf, 0);
            snprintf(arch_source, sizeof arch_source, "chosen by unlearn from CPU features");
        }
    }
    bli_init();

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
