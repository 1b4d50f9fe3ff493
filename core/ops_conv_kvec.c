/* The forward pass of 3×3, pad-1 convolutions with stride 2 (ResNet-18's
 * downsampling layers) or with stride 1 and few channels (the stems, and
 * the narrow layers the few-channel path of ops_conv_small.c took),
 * computed directly on CPUs with AVX-512: one 16-lane register holds 16
 * output channels of one output pixel, and each input value is broadcast
 * into the products of one or two such registers:
 *   acc[p][q][kv] += w[c][r][s][16·kv .. 16·kv + 15] · xp[c][σp + r][σq + s]
 * (σ the stride) over a tile of output pixels (one row of 7, 8, 14 or 16,
 * or two to four rows of 4: kv_plan_of) and one or two registers of
 * channels. xp is the image copied into a zero-bordered buffer (one
 * padding row and column on each side, so the taps need no edge tests),
 * w the weights transposed once per call to (c, r, s, k) with k padded to
 * whole registers. Input channels are taken 64 at a time (kv_chunk),
 * images a batch at a time (kv_batch). Tiles write a pixel-major buffer
 * (P·Q, K rounded up to 16), transposed into the NCHW output eight
 * channels at a time.
 *
 * For stride 2 the packed GEMM assembles its right operand from strided
 * reads of the image (im2col gathers, rows of 14, 7 or 4 at 1×28×28),
 * which took a third to two fifths of those layers' time; here nothing
 * is assembled per output column. With few channels the few-channel path
 * keeps output pixels in the lanes and so reads the weights as
 * broadcasts; here 16 output channels share each input broadcast.
 *
 * Sums run in a fixed order (bias, then c, r, s), so results repeat run
 * to run. Only compiled for AVX-512 (intrinsics, fused multiply-adds);
 * elsewhere, and where ul_conv_kvec_ok says no, the other paths of
 * ops_conv.c take these layers. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops_local.h"
#include "transpose.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KV_X86 1
#include <immintrin.h>
#define KV_TARGET __attribute__((target("avx512f,fma")))
#endif

enum { KV_VL = 16, KV_KB = 2 };

static int kv_kv(const ul_conv_shape *s) { return (s->K + KV_VL - 1) / KV_VL; }
/* Padded row pitch and rows: one padding column on the left, enough on the
 * right for the last tap of the last pixel (σ(Q−1) + 2 ≤ W + 1), and
 * the same for the rows. */
static int kv_pitch(const ul_conv_shape *s) { return s->W + 2; }
static int kv_rows(const ul_conv_shape *s) { return s->H + 2; }

/* A tile: rows × cols output pixels times kb registers of channels. Two
 * registers (every pair of a layer's channel registers): one row of 7 or
 * 8 pixels, or two rows of 4 — 14 to 16 accumulators, enough to cover
 * the latency of the multiply-adds, few enough that GCC keeps them and
 * the operands in the 32 registers (28, 14 × 2, spilled and ran at three
 * quarters of the speed). One register (K ≤ 16, or the last of an odd
 * count): rows of 14 or 16, or four rows of 4, for the same reason.
 * cols 0: no tile divides Q. */
typedef struct kv_plan {
    int rows, cols;
} kv_plan;

static kv_plan kv_plan_of(int Q, int kb)
{
    static const int two[][2] = {{1, 7}, {1, 8}, {2, 4}};
    static const int one[][2] = {{1, 14}, {1, 16}, {1, 7}, {1, 8}, {4, 4}};
    const int(*t)[2] = kb == 2 ? two : one;
    const int n = kb == 2 ? 3 : 5;
    for (int i = 0; i < n; i++)
        if (Q % t[i][1] == 0)
            return (kv_plan){t[i][0], t[i][1]};
    return (kv_plan){1, 0};
}

/* Input channels per chunk: a tile sums over one chunk of the input
 * channels, then (from the second chunk on) adds to what the chunks before
 * it left in the results, so that one pair of channel registers' weights
 * for a chunk (KV_CHUNK·9·32 floats, 72 KiB) stays in L2 while it serves
 * a whole batch of images. */
enum { KV_CHUNK = 64 };
static int kv_chunk(const ul_conv_shape *s) { return s->C < KV_CHUNK ? s->C : KV_CHUNK; }

/* Images per batch: as many as keep their padded copies of one chunk
 * within KV_BATCH_FLOATS (192 KiB) and their pixel-major results within
 * KV_RESULT_FLOATS (256 KiB), at least one. A pair of channel registers'
 * weights for the chunk is then read from L2 once per batch, not once
 * per image, and the results are still in L2 when they are transposed
 * into the output. */
enum { KV_BATCH_FLOATS = 48 * 1024, KV_RESULT_FLOATS = 64 * 1024 };
static int kv_batch(const ul_conv_shape *s)
{
    const size_t bf = KV_BATCH_FLOATS, rf = KV_RESULT_FLOATS;
    const size_t img = (size_t)kv_chunk(s) * kv_rows(s) * kv_pitch(s);
    const size_t res = (size_t)s->P * s->Q * kv_kv(s) * KV_VL;
    size_t nb = img < bf ? bf / img : 1;
    if (nb * res > rf)
        nb = res < rf ? rf / res : 1;
    return nb < (size_t)s->N ? (int)nb : s->N;
}

static bool kv_off;
void ul_conv_kvec_force_off(bool on) { __atomic_store_n(&kv_off, on, __ATOMIC_RELAXED); }

bool ul_conv_avx512_ok(void)
{
#ifdef KV_X86
    /* UNLEARN_KVEC=0 turns the paths off. */
    static int ok = -1;
    int v = __atomic_load_n(&ok, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv("UNLEARN_KVEC");
        v = __builtin_cpu_supports("avx512f") && !(e && strcmp(e, "0") == 0) ? 1 : 0;
        __atomic_store_n(&ok, v, __ATOMIC_RELAXED);
    }
    return v == 1;
#else
    return false;
#endif
}

static bool kv_cpu(void) { return !__atomic_load_n(&kv_off, __ATOMIC_RELAXED) && ul_conv_avx512_ok(); }

/* Where it measured faster than the other paths (one thread, 64 images,
 * best of 10–50, against ul_conv2d_forward_local without it, on a 2-core
 * AVX-512 EPYC).
 * Stride 2: up to 128 input channels at every output size (6 → 13
 * channels on 28×28 inputs 0.34 → 0.17 ms, against the few-channel
 * path; 16 → 32 1.50 → 0.62; 32 → 64 on 14×14 1.12 → 0.66, 64 → 128 on
 * 7×7 1.02 → 0.81 and on 28×28 14.2 → 9.9, 128 → 256 on 7×7 3.6 → 3.2,
 * on 14×14 12.9 → 10.5, on 16×16 14.7 → 12.5). With 256 the packed GEMM
 * is as fast (13.9 ms each way on 7×7 inputs, over every batch size
 * tried), and before the input channels were taken in chunks of 64 the
 * 128-channel layers were even or behind (the weights of all channels,
 * 1.2 MiB, did not stay in L2 from one batch of images to the next).
 * Stride 1, with at least 8 output channels (with 6, most lanes idle,
 * the few-channel path stays ahead: 6 → 6 on 28×28 0.39 against 0.44
 * ms, 3 → 6 on 32×32 0.30 against 0.41): the few-channel path's layers
 * (ul_conv_small_ok; 1 → 16 on 28×28 0.27 → 0.16, 3 → 16 on 32×32 0.80
 * → 0.51, 13 → 13 on 14×14 0.36 → 0.24, 6 → 32 on 28×28 2.6 → 1.3, 8 →
 * 32 2.9 → 1.5, 32 → 8 3.4 → 2.7, 3 → 32 on 32×32 1.77 → 1.22), stems of
 * up to 3 input channels and 64 output ones (1 → 64 on 28×28 2.0 → 1.0,
 * 3 → 64 on 32×32 3.2 → 2.0, against the shifted copies), and at most 16
 * channels each way. Against Winograd's path 16 → 16 is even here (1.21
 * against 1.24 ms on 28×28, 1.91 against 1.98 on 32×32) but ahead in the
 * net, where the layer's input comes from memory rather than from the
 * last repetition: 1.69 → 1.47 ms per pass on 28×28 on thread 0's clock,
 * ResNet-18 width 0.25 inference on 1×28×28 5588–6567 → 5963–6864 img/s
 * (four alternated runs), on 3×32×32 even, training even. With 32
 * channels Winograd's path stays ahead (32 → 32 on 14×14 0.87 against
 * 1.18 here; width 0.5 inference on 1×28×28 1736–1746 against 1608–1649
 * img/s, width 0.25 6700–6865 against 6525–6746 with its 32-channel
 * layers on 14×14 here too). */
bool ul_conv_kvec_ok(const ul_conv_shape *s)
{
    if (!kv_cpu() || s->R != 3 || s->S != 3 || s->pad != 1)
        return false;
    if (s->stride == 2) {
        if (s->C > 128)
            return false;
    } else if (s->stride == 1) {
        const bool one_reg = s->K <= 16 && s->C <= 16, stem = s->C <= 3 && s->K <= 64;
        if (s->K < 8 || !(one_reg || stem || ul_conv_small_ok(s)))
            return false;
    } else {
        return false;
    }
    return kv_plan_of(s->Q, 2).cols > 0 && kv_plan_of(s->Q, 1).cols > 0;
}

size_t ul_conv_kvec_scratch(const ul_conv_shape *s)
{
    const size_t kp = (size_t)kv_kv(s) * KV_VL;
    const size_t nb = (size_t)kv_batch(s);
    const size_t xp = nb * kv_chunk(s) * kv_rows(s) * kv_pitch(s);
    const size_t wp = (size_t)s->C * 9 * kp;
    const size_t yb = nb * s->P * s->Q * kp;
    return (xp + 15) / 16 * 16 + (wp + 15) / 16 * 16 + (yb + 15) / 16 * 16;
}

#ifdef KV_X86
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float kv_v __attribute__((vector_size(64)));

/* One tile: ROWS × COLS output pixels from (p, q0), KB registers of
 * channels from kv0, stride ST, summed over C input channels onto bias,
 * or with bias NULL onto what yb holds. x points at input pixel (σp, σq0) of the
 * padded image, w at register kv0 of tap 0 of channel 0 (kp floats per
 * tap), yb at the tile's first pixel in the pixel-major buffer (kp floats
 * per pixel, Q pixels per row). */
static inline __attribute__((always_inline)) KV_TARGET void
kv_tile(float *restrict yb, const float *restrict x, const float *restrict w, const kv_v *bias,
        int C, int Q, size_t plane, int pitch, size_t kp, bool relu, const int ST, const int ROWS,
        const int COLS, const int KB)
{
    __m512 acc[4][16][KV_KB];
    _Pragma("GCC unroll 16")
    for (int i = 0; i < ROWS; i++)
    _Pragma("GCC unroll 16")
    for (int j = 0; j < COLS; j++)
        _Pragma("GCC unroll 16")
        for (int b = 0; b < KB; b++)
            acc[i][j][b] = bias ? (__m512)bias[b]
                                : _mm512_load_ps(yb + ((size_t)i * Q + j) * kp + b * KV_VL);
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * plane;
        const float *wc = w + (size_t)c * 9 * kp;
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 3; r++) {
            const float *xr = xc + (size_t)r * pitch;
            _Pragma("GCC unroll 16")
            for (int t = 0; t < 3; t++) {
                __m512 wv[KV_KB];
                _Pragma("GCC unroll 16")
                for (int b = 0; b < KB; b++)
                    wv[b] = _mm512_load_ps(wc + (size_t)(r * 3 + t) * kp + b * KV_VL);
                _Pragma("GCC unroll 16")
                for (int i = 0; i < ROWS; i++)
                _Pragma("GCC unroll 16")
                for (int j = 0; j < COLS; j++) {
                    const __m512 xv = _mm512_set1_ps(xr[(size_t)i * ST * pitch + ST * j + t]);
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
            _mm512_store_ps(yb + ((size_t)i * Q + j) * kp + b * KV_VL,
                            relu ? _mm512_max_ps(_mm512_setzero_ps(), acc[i][j][b])
                                 : acc[i][j][b]);
}

#define KV_CASE(ST, ROWS, COLS, KB)                                                         \
    case (((ST) * 8 + (ROWS)) * 32 + (COLS)) * 4 + (KB):                                      \
        kv_tile(yb, x, w, bias, C, Q, plane, pitch, kp, relu, ST, ROWS, COLS, KB);          \
        break;
#define KV_CASES(ST)                                                                        \
    KV_CASE(ST, 1, 7, 2)                                                                    \
    KV_CASE(ST, 1, 8, 2)                                                                    \
    KV_CASE(ST, 2, 4, 2)                                                                    \
    KV_CASE(ST, 1, 4, 2)                                                                    \
    KV_CASE(ST, 1, 14, 1)                                                                   \
    KV_CASE(ST, 1, 16, 1)                                                                   \
    KV_CASE(ST, 1, 7, 1)                                                                    \
    KV_CASE(ST, 1, 8, 1)                                                                    \
    KV_CASE(ST, 4, 4, 1)                                                                    \
    KV_CASE(ST, 3, 4, 1)                                                                    \
    KV_CASE(ST, 2, 4, 1)                                                                    \
    KV_CASE(ST, 1, 4, 1)

/* Every tile kv_plan_of gives, with its rows cut at the bottom edge. */
static KV_TARGET __attribute__((noinline)) void
kv_tile_any(float *yb, const float *x, const float *w, const kv_v *bias, int C, int Q,
            size_t plane, int pitch, size_t kp, bool relu, int st, int rows, int cols, int kb)
{
    switch (((st * 8 + rows) * 32 + cols) * 4 + kb) {
        KV_CASES(1)
        KV_CASES(2)
    default:
        break;
    }
}
#endif

void ul_conv_kvec_forward(float *out, const float *in, const float *w, const float *b,
                          const ul_conv_shape *s, float *scratch)
{
    ul_conv_kvec_forward_relu(out, in, w, b, s, scratch, false);
}

void ul_conv_kvec_forward_relu(float *out, const float *in, const float *w, const float *b,
                               const ul_conv_shape *s, float *scratch, bool relu)
{
#ifdef KV_X86
    const int C = s->C, K = s->K, H = s->H, W = s->W, P = s->P, Q = s->Q, st = s->stride;
    const int pitch = kv_pitch(s), kv = kv_kv(s), NB = kv_batch(s), CC = kv_chunk(s);
    const size_t kp = (size_t)kv * KV_VL, plane = (size_t)kv_rows(s) * pitch;
    const size_t img = (size_t)CC * plane, PQ = (size_t)P * Q, HW = (size_t)H * W;
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
        for (int c0 = 0; c0 < C; c0 += CC) {
            const int cc = C - c0 < CC ? C - c0 : CC;
            for (int n = 0; n < nb; n++) {
                const float *xn = in + ((size_t)(n0 + n) * C + c0) * HW;
                for (int c = 0; c < cc; c++)
                    for (int h = 0; h < H; h++)
                        ul_copy_floats(xp + n * img + (size_t)c * plane +
                                           (size_t)(h + 1) * pitch + 1,
                                       xn + (size_t)c * HW + (size_t)h * W, W);
            }
            for (int k0 = 0; k0 < kv; k0 += 2) {
                const int kb = kv - k0 < 2 ? kv - k0 : 2;
                const kv_plan t = kv_plan_of(Q, kb);
                kv_v bias[2];
                for (int v = 0; v < kb; v++)
                    for (int l = 0; l < KV_VL; l++) {
                        const int k = (k0 + v) * KV_VL + l;
                        bias[v][l] = b && k < K ? b[k] : 0.0f;
                    }
                const float *wc = wp + (size_t)c0 * 9 * kp + (size_t)k0 * KV_VL;
                for (int n = 0; n < nb; n++)
                    for (int p = 0; p < P; p += t.rows) {
                        const int rows = P - p < t.rows ? P - p : t.rows;
                        for (int q0 = 0; q0 < Q; q0 += t.cols)
                            kv_tile_any(yb + ((size_t)n * PQ + (size_t)p * Q + q0) * kp +
                                            (size_t)k0 * KV_VL,
                                        xp + n * img + (size_t)(st * p) * pitch + st * q0, wc,
                                        c0 == 0 ? bias : NULL, cc, Q, plane, pitch, kp,
                                        relu && c0 + cc == C, st, rows, t.cols, kb);
                    }
            }
        }
        /* Eight channels at a time: a whole image at once would store
         * each 8-pixel block into K planes P·Q floats apart, which share
         * the L1 sets when P·Q is a multiple of 1024 (3 → 64 channels on
         * 32×32: 4.8 → 1.9 ms, the transposes 80% of it before). */
        for (int n = 0; n < nb; n++)
            for (int k = 0; k < K; k += 8)
                ul_transpose(yb + (size_t)n * PQ * kp + k, kp,
                             out + ((size_t)(n0 + n) * K + k) * PQ, PQ, (int)PQ,
                             K - k < 8 ? K - k : 8);
    }
#else
    (void)out, (void)in, (void)w, (void)b, (void)s, (void)scratch, (void)relu;
#endif
}
