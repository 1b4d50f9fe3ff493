/* Private: GEMM with an explicit thread count. */
#ifndef UL_GEMM_H
#define UL_GEMM_H

#include "unlearn/ops.h"

/* ul_sgemm with `threads` BLIS threads (0: the global setting, as
 * ul_sgemm). Callers already inside a parallel region pass 1. */
void ul_sgemm_threads(int threads, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

/* Scratch floats ul_sgemm_local needs for an m×n product of depth k (0
 * when the packed GEMM is off); a multiple of 16. */
size_t ul_sgemm_local_scratch(int m, int n, int k);

/* C = op(A)·op(B) + beta·C on the calling thread alone (alpha 1), through
 * the micro-kernel with both operands packed into scratch (64-byte
 * aligned, scratch_floats long) a depth block at a time — no bli_sgemm
 * set-up per call. With less scratch than ul_sgemm_local_scratch, or
 * NULL, it calls ul_sgemm_threads(1, …) instead. */
void ul_sgemm_local(bool trans_a, bool trans_b, int m, int n, int k, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc, float *scratch,
                    size_t scratch_floats);

/* C (m×n) = A·Bᵀ + beta·C with A (m×k) and B (n×k) row-major, as blocks
 * of dot products on the calling thread (AVX2 + FMA; beta 0 does not read
 * C). Returns false, touching nothing, on CPUs without them. */
bool ul_sgemm_dot(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc);

#endif
