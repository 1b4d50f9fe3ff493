/* C = A·Bᵀ (+ beta·C) as blocks of dot products (gemm.h, ul_sgemm_dot).
 *
 * A linear layer's forward product reads both operands along their rows:
 * the micro-kernel needs both transposed into panels first, which costs
 * about as much as the arithmetic when one side is narrow (a layer of a
 * few dozen units). Here 3 rows of A meet 4 rows of B directly: twelve
 * 8-lane accumulators, seven loads per twelve FMAs — as many FMAs per
 * multiply-add as the micro-kernel — and no copies. Depth is taken 512 at
 * a time so that the three rows of A stay in L1 while B streams past. */
#include <stdbool.h>
#include <stddef.h>

#include "gemm.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

enum { DOT_MR = 3, DOT_NR = 4, DOT_KB = 512 };

#define DOT_TARGET __attribute__((target("avx2,fma")))

DOT_TARGET static inline float dot_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One mr×nr block (mr ≤ 3, nr ≤ 4, constants once inlined) over depth k. */
DOT_TARGET __attribute__((always_inline)) static inline void
dot_block(int mr, int nr, int k, const float *a, int lda, const float *b, int ldb, float beta,
          float *c, int ldc)
{
    __m256 acc[DOT_MR][DOT_NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    int kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        __m256 av[DOT_MR];
        for (int i = 0; i < mr; i++)
            av[i] = _mm256_loadu_ps(a + (size_t)i * lda + kk);
        for (int j = 0; j < nr; j++) {
            const __m256 bv = _mm256_loadu_ps(b + (size_t)j * ldb + kk);
            for (int i = 0; i < mr; i++)
                acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
        }
    }
    if (kk < k) {
        /* The last k % 8 values, loaded under a mask (nothing past the
         * row is read). */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(k - kk), lane);
        __m256 av[DOT_MR];
        for (int i = 0; i < mr; i++)
            av[i] = _mm256_maskload_ps(a + (size_t)i * lda + kk, mask);
        for (int j = 0; j < nr; j++) {
            const __m256 bv = _mm256_maskload_ps(b + (size_t)j * ldb + kk, mask);
            for (int i = 0; i < mr; i++)
                acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float *cij = c + (size_t)i * ldc + j;
            const float s = dot_hsum(acc[i][j]);
            *cij = beta == 0.0f ? s : s + beta * *cij;
        }
}

/* Rows of A in groups of 3 against rows of B in groups of 4; the edge
 * blocks get their own constant shapes. */
DOT_TARGET static void dot_rows(int mr, int n, int k, const float *a, int lda, const float *b,
                                int ldb, float beta, float *c, int ldc)
{
    int j = 0;
#define DOT_CASE(M)                                                                       \
    for (; j + 4 <= n; j += 4)                                                            \
        dot_block(M, 4, k, a, lda, b + (size_t)j * ldb, ldb, beta, c + j, ldc);           \
    switch (n - j) {                                                                      \
    case 3: dot_block(M, 3, k, a, lda, b + (size_t)j * ldb, ldb, beta, c + j, ldc); break; \
    case 2: dot_block(M, 2, k, a, lda, b + (size_t)j * ldb, ldb, beta, c + j, ldc); break; \
    case 1: dot_block(M, 1, k, a, lda, b + (size_t)j * ldb, ldb, beta, c + j, ldc); break; \
    default: break;                                                                       \
    }
    if (mr == 3) {
        DOT_CASE(3)
    } else if (mr == 2) {
        DOT_CASE(2)
    } else {
        DOT_CASE(1)
    }
#undef DOT_CASE
}

bool ul_sgemm_dot(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc)
{
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return false;
    if (m <= 0 || n <= 0)
        return true;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return true;
    }
    for (int k0 = 0; k0 < k; k0 += DOT_KB) {
        const int kb = k - k0 < DOT_KB ? k - k0 : DOT_KB;
        const float bk = k0 == 0 ? beta : 1.0f;
        for (int i = 0; i < m; i += DOT_MR)
            dot_rows(m - i < DOT_MR ? m - i : DOT_MR, n, kb, a + (size_t)i * lda + k0, lda,
                     b + k0, ldb, bk, c + (size_t)i * ldc, ldc);
    }
    return true;
}

#else

bool ul_sgemm_dot(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc)
{
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c,
        (void)ldc;
    return false;
}

#endif
