/* Private: process-wide set-up of BLIS (kernel selection, threads). */
#ifndef UL_RUNTIME_H
#define UL_RUNTIME_H

#include "unlearn/common.h"

/* Must run before the first BLIS call. Chooses BLIS kernels for this CPU
 * unless BLIS_ARCH_TYPE is set, and the thread count from UNLEARN_THREADS
 * (default: ul_runtime_cpus()). Idempotent. */
UL_API void ul_runtime_init(void);
UL_API int ul_runtime_threads(void);
UL_API const char *ul_runtime_blis_arch(void);
UL_API const char *ul_runtime_blis_version(void);
/* How the kernels were chosen, e.g. "detected by BLIS" or "set by unlearn
 * (avx512)" or "set by BLIS_ARCH_TYPE". */
UL_API const char *ul_runtime_blis_arch_source(void);
UL_API void ul_runtime_set_threads(int n);
/* The CPUs this process may run on: those of its affinity mask (taskset,
 * numactl, a container's cpuset), at most its cgroup's CPU quota rounded up
 * (docker --cpus). More threads than that would spin against each other. */
UL_API int ul_runtime_cpus(void);
/* Where the thread count came from, for --version and run records. */
UL_API const char *ul_runtime_threads_source(void);

/* The BLIS context whose micro-kernel the packed paths use (pack_gemm.c)
 * when it is not the main instance's: one of a second, private instance
 * with AVX2 kernels, loaded when the main configuration's kernel does not
 * fit those paths (AVX-512's skx). NULL: the main instance's. */
void *ul_runtime_packed_cntx(void);
/* The packed paths' kernel configuration, and how it was chosen. */
UL_API const char *ul_runtime_packed_arch(void);
UL_API const char *ul_runtime_packed_source(void);

#endif
