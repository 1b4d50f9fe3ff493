/* The single entry point to BLIS for dense products. Row-major callers pass
 * row strides; BLIS's typed API takes both strides, so no copies or
 * transpositions are needed. */
#include <blis.h>

#include "unlearn/ops.h"

/* Below this many multiply-adds (about 10 µs on one core) a product runs on
 * one thread: waking BLIS's thread team costs more than it saves, and on a
 * busy machine each wake-up can wait for a whole scheduler time slice. */
#define UL_GEMM_SERIAL_MACS (64.0 * 64.0 * 64.0)

void ul_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    /* The strides describe the matrices as stored; BLIS applies the
     * transposition itself. BLIS 0.9 takes non-const pointers but does not
     * write to a, b, alpha or beta. */
    trans_t ta = trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE;
    trans_t tb = trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE;
    if ((double)m * n * k < UL_GEMM_SERIAL_MACS) {
        rntm_t rntm = BLIS_RNTM_INITIALIZER;
        bli_rntm_set_num_threads(1, &rntm);
        bli_sgemm_ex(ta, tb, m, n, k, &alpha, (float *)a, lda, 1, (float *)b, ldb, 1, &beta, c,
                     ldc, 1, NULL, &rntm);
    } else {
        bli_sgemm(ta, tb, m, n, k, &alpha, (float *)a, lda, 1, (float *)b, ldb, 1, &beta, c, ldc,
                  1);
    }
}
