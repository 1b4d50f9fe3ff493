/* Out-of-place float transposes (transpose.h). */
#include <string.h>

#include "transpose.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define TR_X86 1
#endif

/* The general case, one value at a time. */
static void tr_scalar(const float *src, size_t ss, float *dst, size_t ds, int rows, int cols)
{
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++)
            dst[(size_t)j * ds + i] = src[(size_t)i * ss + j];
}

#ifdef TR_X86
/* Eight columns of rows ≤ 8 source rows (missing rows read as row 0 and
 * are not stored): dst row j gets rows values. With cols < 8, only the
 * first cols columns are read (masked loads) and stored. Inlined into
 * loops with rows and cols constants, so that the choices fold away. */
__attribute__((target("avx2"), always_inline)) static inline void
tr8_avx2(const float *src, size_t ss, float *dst, size_t ds, int rows, int cols)
{
    __m256 r[8];
    if (cols < 8) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
        for (int i = 0; i < 8; i++)
            r[i] = _mm256_maskload_ps(src + (size_t)(i < rows ? i : 0) * ss, mask);
    } else
        for (int i = 0; i < 8; i++)
            r[i] = _mm256_loadu_ps(src + (size_t)(i < rows ? i : 0) * ss);
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    __m256 o[8];
    for (int j = 0; j < 4; j++) {
        o[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        o[j + 4] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
    if (rows == 8) {
        for (int j = 0; j < 8 && j < cols; j++)
            _mm256_storeu_ps(dst + (size_t)j * ds, o[j]);
    } else if (rows == 6) {
        /* The micro-kernel's L panels are 6 wide. */
        for (int j = 0; j < 8 && j < cols; j++) {
            _mm_storeu_ps(dst + (size_t)j * ds, _mm256_castps256_ps128(o[j]));
            _mm_storel_pi((__m64 *)(dst + (size_t)j * ds + 4), _mm256_extractf128_ps(o[j], 1));
        }
    } else {
        for (int j = 0; j < 8 && j < cols; j++) {
            float a[8];
            _mm256_storeu_ps(a, o[j]);
            memcpy(dst + (size_t)j * ds, a, (size_t)rows * sizeof(float));
        }
    }
}

/* Columns [0, cols8) of rows ≤ 8 rows, cols8 a multiple of 8. */
__attribute__((target("avx2"))) static void tr_avx2(const float *src, size_t ss, float *dst,
                                                    size_t ds, int rows, int cols8)
{
    if (rows == 8)
        for (int j = 0; j < cols8; j += 8)
            tr8_avx2(src + j, ss, dst + (size_t)j * ds, ds, 8, 8);
    else if (rows == 6)
        for (int j = 0; j < cols8; j += 8)
            tr8_avx2(src + j, ss, dst + (size_t)j * ds, ds, 6, 8);
    else
        for (int j = 0; j < cols8; j += 8)
            tr8_avx2(src + j, ss, dst + (size_t)j * ds, ds, rows, 8);
}

/* cols < 8 columns of rows ≤ 8 rows. */
__attribute__((target("avx2"))) static void tr_avx2_narrow(const float *src, size_t ss,
                                                           float *dst, size_t ds, int rows,
                                                           int cols)
{
    if (rows == 8)
        tr8_avx2(src, ss, dst, ds, 8, cols);
    else
        tr8_avx2(src, ss, dst, ds, rows, cols);
}
#endif

void ul_transpose(const float *src, size_t ss, float *dst, size_t ds, int rows, int cols)
{
    for (int i0 = 0; i0 < rows; i0 += 8) {
        const int ri = rows - i0 < 8 ? rows - i0 : 8;
        const float *s = src + (size_t)i0 * ss;
        float *d = dst + i0;
        int j = 0;
#ifdef TR_X86
        if (__builtin_cpu_supports("avx2") && cols >= 8) {
            j = cols / 8 * 8;
            tr_avx2(s, ss, d, ds, ri, j);
            /* A ragged end: the last eight columns once more, which
             * rewrites some of the rows just stored with the same
             * values (the copy is out of place). */
            if (j < cols)
                tr_avx2(s + cols - 8, ss, d + (size_t)(cols - 8) * ds, ds, ri, 8);
            j = cols;
        } else if (__builtin_cpu_supports("avx2") && cols > 1) {
            tr_avx2_narrow(s, ss, d, ds, ri, cols);
            j = cols;
        }
#endif
        for (; j < cols; j += 8)
            tr_scalar(s + j, ss, d + (size_t)j * ds, ds, ri, cols - j < 8 ? cols - j : 8);
    }
}
