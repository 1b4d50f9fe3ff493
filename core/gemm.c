/* The single entry point to BLIS for dense products. Row-major callers pass
 * row strides; BLIS's typed API takes both strides, so no copies or
 * transpositions are needed. */
#include <blis.h>

#include "unlearn/ops.h"

void ul_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    /* The strides describe the matrices as stored; BLIS applies the
     * transposition itself. BLIS 0.9 takes non-const pointers but does not
     * write to a, b, alpha or beta. */
    bli_sgemm(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, m, n, k, &alpha, (float *)a, lda, 1,
              (float *)b, ldb, 1, &beta, c, ldc, 1);
}
