/* The single entry point to BLIS for dense products. Row-major callers pass
 * row strides; BLIS's typed API takes both strides, so no copies or
 * transpositions are needed. */
#include <blis.h>

#include "gemm.h"

/* Below this many multiply-adds (about 10 µs on one core) a product runs on
 * one thread: waking BLIS's thread team costs more than it saves, and on a
 * busy machine each wake-up can wait for a whole scheduler time slice. */
#define UL_GEMM_SERIAL_MACS (64.0 * 64.0 * 64.0)

void ul_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    ul_sgemm_threads(0, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ul_sgemm_threads(int threads, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    rntm_t rntm;
    bli_rntm_init_from_global(&rntm);
    /* BLIS 0.9's small-matrix ("sup") kernels read one element past the end
     * of an operand on some shapes (flame/blis#635, #824; seen here under
     * valgrind), which can fault at a page boundary. The packed path reads
     * only within bounds. */
    bli_rntm_disable_l3_sup(&rntm);
    if (threads > 0)
        bli_rntm_set_num_threads(threads, &rntm);
    else if ((double)m * n * k < UL_GEMM_SERIAL_MACS)
        bli_rntm_set_num_threads(1, &rntm);
    /* The strides describe the matrices as stored; BLIS applies the
     * transposition itself. BLIS 0.9 takes non-const pointers but does not
     * write to a, b, alpha or beta. */
    bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, m, n, k, &alpha, (float *)a, lda,
                 1, (float *)b, ldb, 1, &beta, c, ldc, 1, NULL, &rntm);
}
