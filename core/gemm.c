/* The single entry point to BLIS for dense products. Row-major callers pass
 * row strides; BLIS's typed API takes both strides, so no copies or
 * transpositions are needed. */
#include <blis.h>

#include "gemm.h"
#include "pack_gemm.h"

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

/* Up to this many columns ul_sgemm_local takes A·Bᵀ as dot products
 * (measured on MLPs: 1.2–1.35× the packed path's inference rate with 26
 * units, even with 64 units it is 0.8–0.9×). */
#define UL_DOT_MAX_N 32

static size_t a16(size_t n) { return (n + 15) / 16 * 16; }

size_t ul_sgemm_local_scratch(int m, int n, int k)
{
    const ul_pk *pk = ul_pk_get();
    if (!pk || m <= 0 || n <= 0 || k <= 0)
        return 0;
    const int kc = k < UL_PK_KC ? k : UL_PK_KC, nc = n < UL_PK_NC ? n : UL_PK_NC;
    return a16(ul_pk_l_size(pk, m, kc)) + a16(ul_pk_rr_size(pk, nc, kc));
}

void ul_sgemm_local(bool trans_a, bool trans_b, int m, int n, int k, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc, float *scratch,
                    size_t scratch_floats)
{
    /* A narrow A·Bᵀ (a linear layer of a few dozen units) as dot products:
     * packing its wide side would cost about what its arithmetic does. */
    if (!trans_a && trans_b && n <= UL_DOT_MAX_N &&
        ul_sgemm_dot(m, n, k, a, lda, b, ldb, beta, c, ldc))
        return;
    const ul_pk *pk = ul_pk_get();
    if (!pk || !scratch || k <= 0 || scratch_floats < ul_sgemm_local_scratch(m, n, k)) {
        ul_sgemm_threads(1, trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (m <= 0 || n <= 0)
        return;
    const int kmax = k < UL_PK_KC ? k : UL_PK_KC;
    float *lp = scratch, *rp = scratch + a16(ul_pk_l_size(pk, m, kmax));
    for (int k0 = 0; k0 < k; k0 += UL_PK_KC) {
        const int kc = k - k0 < UL_PK_KC ? k - k0 : UL_PK_KC;
        const float beta_k = k0 == 0 ? beta : 1.0f;
        /* op(A)'s columns k0.. and op(B)'s rows k0.. */
        ul_pk_pack_l(pk, lp, trans_a ? a + (size_t)k0 * lda : a + k0, m, kc, lda, trans_a);
        for (int j0 = 0; j0 < n; j0 += UL_PK_NC) {
            const int nc = n - j0 < UL_PK_NC ? n - j0 : UL_PK_NC;
            ul_pk_pack_rr(pk, rp,
                          trans_b ? b + (size_t)j0 * ldb + k0 : b + (size_t)k0 * ldb + j0, nc,
                          kc, ldb, trans_b);
            ul_pk_gemm_pp(pk, m, nc, kc, lp, rp, beta_k, c + j0, ldc);
        }
    }
}
