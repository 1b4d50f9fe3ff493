/* Private: GEMM with an explicit thread count. */
#ifndef UL_GEMM_H
#define UL_GEMM_H

#include "unlearn/ops.h"

/* ul_sgemm with `threads` BLIS threads (0: the global setting, as
 * ul_sgemm). Callers already inside a parallel region pass 1. */
void ul_sgemm_threads(int threads, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

#endif
