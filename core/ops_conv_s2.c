/* The forward pass of 3×3, stride-2, pad-1 convolutions (ResNet-18's
 * downsampling layers), computed directly on CPUs with AVX-512: one
 * 16-lane register holds 16 output channels of one output pixel, and
 * every input value is broadcast straight from memory into the products
 * of up to four such registers:
 *   acc[q][kv] += w[c][r][s][kv·16 .. kv·16 + 15] · xp[c][2p + r][2q + s]
 * for a tile of one output row's COLS pixels (14, 8, 7 or 4, whichever
 * divides the row) and KB registers of channels. xp is the image copied
 * into a zero-bordered buffer (one padding row and column on each side,
 * so the taps need no edge tests), w the weights transposed once per call
 * to (c, r, s, k) with k padded to whole registers. A tile's results go
 * to a pixel-major buffer (P·Q, K rounded up to 16), transposed into the
 * NCHW output at the end of each image.
 *
 * The packed GEMM assembles its right operand from strided reads of the
 * image (im2col gathers, rows of 14, 7 or 4 at 1×28×28), which took a
 * third to two fifths of these layers' time; here nothing is assembled
 * per output column.
 *
 * Sums run in a fixed order (bias, then c, r, s), so results repeat run
 * to run. Only compiled as an AVX-512 function; elsewhere (and where
 * ul_conv_s2_ok says no) the other paths of ops_conv.c take these layers. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "ops_local.h"
#include "transpose.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define S2_X86 1
#include <immintrin.h>
#define S2_TARGET __attribute__((target("avx512f,fma")))
#endif

enum { S2_VL = 16, S2_KB = 2 };

static int s2_kv(const ul_conv_shape *s) { return (s->K + S2_VL - 1) / S2_VL; }
/* Padded row pitch and rows: one padding column on the left, enough on the
 * right for the last tap of the last pixel (2(Q−1) + 2 ≤ W + 1). */
static int s2_pitch(const ul_conv_shape *s) { return s->W + 2; }
static int s2_rows(const ul_conv_shape *s) { return s->H + 2; }

/* A tile: rows × cols output pixels times kb registers of channels. Two
 * registers (every pair of a layer's channel registers): one row of 7 or
 * 8 pixels, or two rows of 4 — 14 to 16 accumulators, enough to cover
 * the latency of the multiply-adds, few enough that GCC keeps them and
 * the operands in the 32 registers (28, 14 × 2, spilled and ran at three
 * quarters of the speed). One register (K ≤ 16, or the last of an odd
 * count): rows of 14 or 16, or four rows of 4, for the same reason.
 * cols 0: no tile divides Q. */
typedef struct s2_plan {
    int rows, cols;
} s2_plan;

static s2_plan s2_plan_of(int Q, int kb)
{
    static const int two[][2] = {{1, 7}, {1, 8}, {2, 4}};
    static const int one[][2] = {{1, 14}, {1, 16}, {1, 7}, {1, 8}, {4, 4}};
    const int(*t)[2] = kb == 2 ? two : one;
    const int n = kb == 2 ? 3 : 5;
    for (int i = 0; i < n; i++)
        if (Q % t[i][1] == 0)
            return (s2_plan){t[i][0], t[i][1]};
    return (s2_plan){1, 0};
}

/* Images per batch: as many as keep their padded copies within
 * S2_BATCH_FLOATS (192 KiB), at least one. A pair of channel registers'
 * weights (C·9·32 floats, up to 72 KiB at 64 channels) is then read from
 * L2 once per batch, not once per image. */
enum { S2_BATCH_FLOATS = 48 * 1024 };
static int s2_batch(const ul_conv_shape *s)
{
    const size_t img = (size_t)s->C * s2_rows(s) * s2_pitch(s);
    const size_t nb = img < S2_BATCH_FLOATS ? S2_BATCH_FLOATS / img : 1;
    return nb < (size_t)s->N ? (int)nb : s->N;
}

static bool s2_off;
void ul_conv_s2_force_off(bool on) { __atomic_store_n(&s2_off, on, __ATOMIC_RELAXED); }

static bool s2_cpu(void)
{
    if (__atomic_load_n(&s2_off, __ATOMIC_RELAXED))
        return false;
#ifdef S2_X86
    static int ok = -1;
    if (ok < 0)
        ok = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return ok == 1;
#else
    return false;
#endif
}

/* Where it measured faster than the other paths (one thread, 64 images,
 * best of 10–50, against ul_conv2d_forward_local without it, on a 2-core
 * AVX-512 EPYC): up to 64 input channels at every output size (6 → 13
 * channels on 28×28 inputs 0.34 → 0.17 ms, against the few-channel
 * direct path; 16 → 32 1.50 → 0.62; 32 → 64 on 14×14 1.12 → 0.66, 64 →
 * 128 on 7×7 1.02 → 0.81 and on 28×28 15.2 → 10.2). From 128 channels
 * the packed GEMM is near the multiply-add rate already: 128 → 256 even
 * (12.5 against 12.7 ms on 14×14, 4.3 against 4.0 on 7×7) or behind
 * (14.8 against 16.4 on 16×16), 256 → 512 14.8 against 19.2 on 7×7. */
bool ul_conv_s2_ok(const ul_conv_shape *s)
{
    if (!s2_cpu() || s->R != 3 || s->S != 3 || s->stride != 2 || s->pad != 1)
        return false;
    if (s->C > 64)
        return false;
    return s2_plan_of(s->Q, 2).cols > 0 && s2_plan_of(s->Q, 1).cols > 0;
}

size_t ul_conv_s2_scratch(const ul_conv_shape *s)
{
    const size_t kp = (size_t)s2_kv(s) * S2_VL;
    const size_t nb = (size_t)s2_batch(s);
    const size_t xp = nb * s->C * s2_rows(s) * s2_pitch(s);
    const size_t wp = (size_t)s->C * 9 * kp;
    const size_t yb = nb * s->P * s->Q * kp;
    return (xp + 15) / 16 * 16 + (wp + 15) / 16 * 16 + (yb + 15) / 16 * 16;
}

#ifdef S2_X86
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float s2_v __attribute__((vector_size(64)));

/* One tile: COLS pixels of output row p starting at column q0, KB
 * registers of channels from kv0. x points at the padded image, w at
 * register kv0 of tap 0 of channel 0 (stride kp floats per tap), yb at
 * the tile's first pixel in the pixel-major buffer (stride kp). */
static inline __attribute__((always_inline)) S2_TARGET void
s2_tile(float *restrict yb, const float *restrict x, const float *restrict w, const s2_v *bias,
        int C, int Q, size_t plane, int pitch, size_t kp, const int ROWS, const int COLS, const int KB)
{
    __m512 acc[4][16][S2_KB];
    _Pragma("GCC unroll 16")
    for (int i = 0; i < ROWS; i++)
    _Pragma("GCC unroll 16")
    for (int j = 0; j < COLS; j++)
        _Pragma("GCC unroll 16")
        for (int b = 0; b < KB; b++)
            acc[i][j][b] = (__m512)bias[b];
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * plane;
        const float *wc = w + (size_t)c * 9 * kp;
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 3; r++) {
            const float *xr = xc + (size_t)r * pitch;
            _Pragma("GCC unroll 16")
            for (int t = 0; t < 3; t++) {
                __m512 wv[S2_KB];
                _Pragma("GCC unroll 16")
                for (int b = 0; b < KB; b++)
                    wv[b] = _mm512_load_ps(wc + (size_t)(r * 3 + t) * kp + b * S2_VL);
                _Pragma("GCC unroll 16")
                for (int i = 0; i < ROWS; i++)
                _Pragma("GCC unroll 16")
                for (int j = 0; j < COLS; j++) {
                    const __m512 xv = _mm512_set1_ps(xr[(size_t)i * 2 * pitch + 2 * j + t]);
                    _Pragma("GCC unroll 16")
                    for (int b = 0; b < KB; b++)
                        acc[i][j][b] = _mm512_fmadd_ps(wv[b], xv, acc[i][j][b]);
                }
            }
        }
    }
    _Pragma("GCC unroll 16")
    for (int i = 0; i < ROWS; i++)
    _Pragma("GCC unroll 16")
    for (int j = 0; j < COLS; j++)
        _Pragma("GCC unroll 16")
        for (int b = 0; b < KB; b++)
            _mm512_store_ps(yb + ((size_t)i * Q + j) * kp + b * S2_VL, acc[i][j][b]);
}

#define S2_CASE(ROWS, COLS, KB)                                                             \
    case ((ROWS) * 16 + (COLS)) * 8 + (KB):                                                 \
        s2_tile(yb, x, w, bias, C, Q, plane, pitch, kp, ROWS, COLS, KB);                    \
        break;

static S2_TARGET __attribute__((noinline)) void
s2_tile_any(float *yb, const float *x, const float *w, const s2_v *bias, int C, int Q,
            size_t plane, int pitch, size_t kp, int rows, int cols, int kb)
{
    switch ((rows * 16 + cols) * 8 + kb) {
        S2_CASE(1, 7, 2)
        S2_CASE(1, 8, 2)
        S2_CASE(2, 4, 2)
        S2_CASE(1, 4, 2)
        S2_CASE(1, 14, 1)
        S2_CASE(1, 16, 1)
        S2_CASE(1, 7, 1)
        S2_CASE(1, 8, 1)
        S2_CASE(4, 4, 1)
        S2_CASE(3, 4, 1)
        S2_CASE(2, 4, 1)
        S2_CASE(1, 4, 1)
    default:
        break;
    }
}
#endif

void ul_conv_s2_forward(float *out, const float *in, const float *w, const float *b,
                        const ul_conv_shape *s, float *scratch)
{
#ifdef S2_X86
    const int C = s->C, K = s->K, H = s->H, W = s->W, P = s->P, Q = s->Q;
    const int pitch = s2_pitch(s), kv = s2_kv(s), NB = s2_batch(s);
    const size_t kp = (size_t)kv * S2_VL, plane = (size_t)s2_rows(s) * pitch;
    const size_t img = (size_t)C * plane, PQ = (size_t)P * Q, HW = (size_t)H * W;
    float *xp = scratch;
    float *wp = xp + ((size_t)NB * img + 15) / 16 * 16;
    float *yb = wp + ((size_t)C * 9 * kp + 15) / 16 * 16;
    /* Weights (K, C·9) → (C·9, kp), the padding channels zero. */
    ul_transpose(w, (size_t)C * 9, wp, kp, K, C * 9);
    if ((size_t)K < kp)
        for (size_t i = 0; i < (size_t)C * 9; i++)
            memset(wp + i * kp + K, 0, (kp - (size_t)K) * sizeof(float));
    /* The borders stay zero: only the interiors are copied below. */
    memset(xp, 0, (size_t)NB * img * sizeof(float));
    for (int n0 = 0; n0 < s->N; n0 += NB) {
        const int nb = s->N - n0 < NB ? s->N - n0 : NB;
        for (int n = 0; n < nb; n++) {
            const float *xn = in + (size_t)(n0 + n) * C * HW;
            for (int c = 0; c < C; c++)
                for (int h = 0; h < H; h++)
                    ul_copy_floats(xp + n * img + (size_t)c * plane + (size_t)(h + 1) * pitch + 1,
                                   xn + (size_t)c * HW + (size_t)h * W, W);
        }
        for (int k0 = 0; k0 < kv; k0 += 2) {
            const int kb = kv - k0 < 2 ? kv - k0 : 2;
            const s2_plan t = s2_plan_of(Q, kb);
            s2_v bias[2];
            for (int v = 0; v < kb; v++)
                for (int l = 0; l < S2_VL; l++) {
                    const int k = (k0 + v) * S2_VL + l;
                    bias[v][l] = b && k < K ? b[k] : 0.0f;
                }
            for (int n = 0; n < nb; n++)
                for (int p = 0; p < P; p += t.rows) {
                    const int rows = P - p < t.rows ? P - p : t.rows;
                    for (int q0 = 0; q0 < Q; q0 += t.cols)
                        s2_tile_any(yb + ((size_t)n * PQ + (size_t)p * Q + q0) * kp +
                                        (size_t)k0 * S2_VL,
                                    xp + n * img + (size_t)(2 * p) * pitch + 2 * q0,
                                    wp + (size_t)k0 * S2_VL, bias, C, Q, plane, pitch, kp, rows,
                                    t.cols, kb);
                }
        }
        for (int n = 0; n < nb; n++)
            ul_transpose(yb + (size_t)n * PQ * kp, kp, out + (size_t)(n0 + n) * K * PQ, PQ,
                         (int)PQ, K);
    }
#else
    (void)out, (void)in, (void)w, (void)b, (void)s, (void)scratch;
#endif
}
