/* 3×3, stride-1, pad-1 convolutions with few channels each way (at most
 * UL_SMALL_CONV_CH on one side and UL_SMALL_CONV_MAX on the other: the
 * CNN's and ResNet-18's first layers, the CNN's second at narrow widths and
 * ResNet-18's first stage at width 0.1; or at most UL_SMALL_CONV_BOTH both
 * ways: ResNet-18's second stage at width 0.1), computed directly; and the
 * forward pass of such layers with stride 2 (ResNet-18's first
 * downsampling layer at width 0.1), from copies that put each padded
 * row's even columns before its odd ones (sm_pitch). Against the packed
 * GEMM and the shifted copies on a 2-core AVX-512 EPYC, one thread, 64
 * images (best of 40, two runs): 6 → 13 channels on 32×32 inputs 0.49–0.59
 * → 0.36 ms, on 28×28 0.45–0.56 → 0.32, 8 → 16 on 28×28 0.58 → 0.42, 13 →
 * 13 on 16×16 0.29 → 0.23, 8 → 32 on 32×32 1.07 → 0.86–1.06.
 *
 * Against the other paths, one thread and 64 images (unlearn-bench-conv's
 * setting, median of 60 passes, three runs each): 13 channels each way on
 * 16×16 images backward 3.4 → 2.7–2.8 ms (shifted copies before; dX and
 * dW by Winograd start at 16), 13 on 32×32 12.1–12.4 → 10.1–11.6, 14 on
 * 16×16 3.4–3.7 → 2.9–3.2, 13 on 8×8 1.2 → 0.8; forward against
 * Winograd's F(4×4, 3×3) even or slightly ahead (13 on 16×16 1.0–1.55 →
 * 1.29–1.42 ms). With 16 channels Winograd's forward pass was ahead on
 * 14×14 images and its backward pass even.
 *
 * With 3 or 6 channels a GEMM is mostly empty: the micro-kernel's 6×16
 * tiles are a few rows deep, the shifted weight gradient pads 6 output
 * channels to 16 lanes, and the copies cost more than the arithmetic. Here
 * the image is copied once into a zero-bordered plane per channel (so
 * every tap is an unaligned 8-lane load, with no edge cases), and a pass
 * accumulates 16 output columns (32 for one or two channels) of up to 8
 * output channels in registers, each input load feeding every channel:
 *   forward  y[k][p][q]  = b[k] + Σ_c Σ_rs w[k][c][r][s] · xp[c][p+r][q+s]
 *   dX       the same on the padded dY with the kernel turned (w[k][c][2−r][2−s],
 *            channels swapped),
 *   dW       nine accumulators per (c, k): Σ_pq dY[k][p][q] · xp[c][p+r][q+s],
 *            reading dY from its padded copy.
 * The bodies are compiled for AVX2+FMA and for the baseline, picked at run
 * time. Sums run in a fixed order, so results repeat run to run; the two
 * builds round differently (fused multiply-adds). */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "ops_local.h"

/* 8-lane vectors; in the baseline build GCC splits them into SSE pairs. The
 * helpers taking and returning them are static and inlined, so the note
 * that their ABI differs without AVX does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v8 __attribute__((vector_size(32)));

enum { SM_COLS = 32 }; /* most output columns per accumulator row: four vectors */

static bool sm_channels_ok(const ul_conv_shape *s)
{
    const int lo = s->C < s->K ? s->C : s->K, hi = s->C < s->K ? s->K : s->C;
    return s->R == 3 && s->S == 3 && s->pad == 1 &&
           ((lo <= UL_SMALL_CONV_CH && hi <= UL_SMALL_CONV_MAX) || hi <= UL_SMALL_CONV_BOTH);
}

bool ul_conv_small_ok(const ul_conv_shape *s) { return s->stride == 1 && sm_channels_ok(s); }

bool ul_conv_small_fwd_ok(const ul_conv_shape *s)
{
    return (s->stride == 1 || s->stride == 2) && sm_channels_ok(s);
}

/* A padded plane: H + 2 rows of wp floats; column 0 and row 0 are the left
 * and top padding, the image's row h is row h + 1 from column 1, and the
 * rest is zero. wp leaves room for the last vector's loads at offset 2. */
static int sm_wv(int W) { return (W + 7) & ~7; }
static int sm_wp(int W) { return sm_wv(W) + 8; }

/* Stride 2 (forward only) reads each padded row as its even columns, then
 * its odd ones, each half sm_wp(Q) floats: output column q's taps are
 * even[q], odd[q] and even[q + 1], three unaligned loads again. */
static int sm_pitch(const ul_conv_shape *s)
{
    return s->stride == 2 ? 2 * sm_wp(s->Q) : sm_wp(s->W);
}
static size_t sm_plane(const ul_conv_shape *s) { return (size_t)(s->H + 2) * sm_pitch(s); }

/* Where sm_row finds an output row's input: padded planes `plane` floats
 * apart, rows `pitch` apart, output row p at row st·p, and kernel columns
 * 0, 1 and 2 at offsets 0, o1 and o2 within a row. The output is P × Q. */
typedef struct {
    int P, Q, st, pitch, o1, o2;
    size_t plane;
} sm_geom;

static sm_geom sm_geom_of(const ul_conv_shape *s)
{
    const int pitch = sm_pitch(s);
    const sm_geom g = {s->P, s->Q, s->stride, pitch, s->stride == 2 ? pitch / 2 : 1,
                       s->stride == 2 ? 1 : 2, sm_plane(s)};
    return g;
}
static size_t sm_a16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Floats of a grouped kernel, forward (K·C) or turned (C·K): the output
 * channels rounded up to whole groups of at most 8. */
static size_t sm_wg_size(const ul_conv_shape *s)
{
    const size_t hi = (size_t)(s->C > s->K ? s->C : s->K);
    return (hi + 7) * 9 * hi;
}

/* Scratch: padded input planes (C), padded dY planes (K), the turned
 * kernel (C·K·9), the grouped kernel and the weight gradient's
 * accumulators (C·K·9 vectors). */
size_t ul_conv_small_scratch(const ul_conv_shape *s)
{
    const size_t ck9 = (size_t)s->C * s->K * 9;
    return sm_a16((size_t)s->C * sm_plane(s)) + sm_a16((size_t)s->K * sm_plane(s)) +
           sm_a16(ck9) + sm_a16(sm_wg_size(s)) + ck9 * 8;
}

/* Copies planes [0, ch) of x (ch, H, W) into the interiors of xp's padded
 * planes; the borders stay as they were (zero). */
static void sm_pad(float *xp, const float *x, int ch, int H, int W)
{
    const int wp = sm_wp(W);
    const size_t plane = (size_t)(H + 2) * wp;
    for (int c = 0; c < ch; c++)
        for (int h = 0; h < H; h++)
            ul_copy_floats(xp + c * plane + (size_t)(h + 1) * wp + 1, x + ((size_t)c * H + h) * W,
                           W);
}

/* The same for stride 2 (sm_pitch): padded column m = input column m − 1
 * goes to even[m/2] or odd[m/2], so input column i to odd[i/2] when i is
 * even and to even[(i + 1)/2] when it is odd. */
static void sm_pad2(float *xp, const float *x, int ch, const sm_geom *g, int H, int W)
{
    const int half = g->pitch / 2;
    for (int c = 0; c < ch; c++)
        for (int h = 0; h < H; h++) {
            const float *xr = x + ((size_t)c * H + h) * W;
            float *ev = xp + c * g->plane + (size_t)(h + 1) * g->pitch, *od = ev + half;
            for (int i = 0; 2 * i < W; i++)
                od[i] = xr[2 * i];
            for (int i = 0; 2 * i + 1 < W; i++)
                ev[i + 1] = xr[2 * i + 1];
        }
}

static inline v8 ld8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

/* Output row p, columns [q0, q0 + 8·NQ), of KB channels at once (each
 * loaded input vector feeds KB accumulators): Σ over ci padded planes of
 * xp and their taps (kernel row r at r·pitch, column t at 0, o1, o2),
 * wg[(c·9 + rs)·KB + j] for the group's channel j (zero past the last
 * channel). Channel j is written to y + j·HW (n valid columns, kb
 * channels), or added to it. */
static inline __attribute__((always_inline)) void
sm_row(int NQ, int KB, float *y, size_t HW, int n, int kb, bool add, const float *bias,
       const float *xp, size_t plane, int pitch, int o1, int o2, const float *wg, int ci)
{
    /* Sized [KB][NQ] (constants once inlined, so GCC makes it a fixed
     * array and keeps it in registers). An [8][4] array zero-initialised
     * instead was cleared on every call (a 1 KiB rep stos: a third of the
     * 1-channel stem's time) and spilled in the baseline build. */
    v8 acc[KB][NQ];
    for (int j = 0; j < KB; j++) {
        const float bj = bias && j < kb ? bias[j] : 0.0f;
        for (int v = 0; v < NQ; v++)
            acc[j][v] = (v8){bj, bj, bj, bj, bj, bj, bj, bj};
    }
    for (int c = 0; c < ci; c++) {
        const float *x0 = xp + c * plane;
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 3; t++) {
                const float *xr = x0 + (size_t)r * pitch + (t == 0 ? 0 : t == 1 ? o1 : o2);
                const float *wk = wg + ((size_t)c * 9 + r * 3 + t) * KB;
                v8 xv[4];
                for (int v = 0; v < NQ; v++)
                    xv[v] = ld8(xr + 8 * v);
                for (int j = 0; j < KB; j++) {
                    const float wv = wk[j];
                    const v8 w8 = {wv, wv, wv, wv, wv, wv, wv, wv};
                    for (int v = 0; v < NQ; v++)
                        acc[j][v] += xv[v] * w8;
                }
            }
    }
    for (int j = 0; j < kb && j < KB; j++) {
        float *yj = y + j * HW;
        if (n == 8 * NQ) {
            for (int v = 0; v < NQ; v++)
                st8(yj + 8 * v, add ? ld8(yj + 8 * v) + acc[j][v] : acc[j][v]);
            continue;
        }
        /* Whole vectors, then the last one's first n mod 8 values through
         * a vector-sized buffer (a buffer of the row, zeroed per channel,
         * had cost the 1-channel stem a third of its time). */
        int v = 0;
        for (; v < NQ && 8 * (v + 1) <= n; v++)
            st8(yj + 8 * v, add ? ld8(yj + 8 * v) + acc[j][v] : acc[j][v]);
        if (v < NQ && 8 * v < n) {
            float t[8];
            st8(t, acc[j][v]);
            float *yv = yj + 8 * v;
            if (add)
                for (int i = 0; i < n - 8 * v; i++)
                    yv[i] += t[i];
            else
                for (int i = 0; i < n - 8 * v; i++)
                    yv[i] = t[i];
        }
    }
}

/* Channels per group for ko output channels and rows of nq0 vectors: at
 * most 12 accumulators (they, the row's two input vectors and a broadcast
 * weight fit AVX2's sixteen registers), from the group sizes sm_row is
 * instantiated for. A tap costs nq0 input loads and KB broadcasts for
 * KB·nq0 multiply-adds, over the channels rounded up to whole groups;
 * the cheapest total wins. Six channels take one group of 6 × 2 vectors
 * rather than two of 3 × 2: fewer loads, and twelve independent sums,
 * more than the eight fused multiply-adds in flight that hide their
 * latency. */
static int sm_group(int ko, int nq0)
{
    static const int sizes[] = {8, 6, 4, 3, 2, 1};
    int best = 1;
    double best_cost = 1e300;
    for (int i = 0; i < 6; i++) {
        const int kb = sizes[i];
        if (kb * nq0 > 12)
            continue;
        const double cost = (double)((ko + kb - 1) / kb * kb) * (nq0 + kb) / (nq0 * kb);
        if (cost < best_cost) {
            best = kb;
            best_cost = cost;
        }
    }
    return best;
}

/* Output columns per pass for ko channels of width W: two vectors, so that
 * each unaligned input load feeds up to four channels' accumulators, or
 * four for one or two channels, which would otherwise leave too few
 * independent accumulators to hide the FMA latency. */
static int sm_cols(int ko, int W)
{
    const int cols = ko <= 2 ? SM_COLS : 16, wv = sm_wv(W);
    return wv < cols ? wv : cols;
}

/* Groups the kernel wt (ko, ci, 3, 3) by KB output channels for sm_row:
 * wg[((g·ci + c)·9 + rs)·KB + j] = wt[g·KB + j][c][rs], zero past ko. */
static void sm_group_weights(float *wg, const float *wt, int ko, int ci, int KB)
{
    for (int g = 0; g * KB < ko; g++)
        for (int c = 0; c < ci; c++)
            for (int rs = 0; rs < 9; rs++)
                for (int j = 0; j < KB; j++) {
                    const int k = g * KB + j;
                    wg[(((size_t)g * ci + c) * 9 + rs) * KB + j] =
                        k < ko ? wt[((size_t)k * ci + c) * 9 + rs] : 0.0f;
                }
}

/* y (ko, P, Q) = bias + the convolution of the ci padded planes xp (laid
 * out as g says) with the grouped kernel wg (sm_group_weights with KB =
 * sm_group of the first chunk); with add, y += the convolution (bias is
 * then NULL). */
static inline __attribute__((always_inline)) void
sm_image_body(float *y, const float *xp, const float *wg, const float *bias, bool add, int ko,
              int ci, const sm_geom *g)
{
    const int P = g->P, W = g->Q, wv = sm_wv(W), pitch = g->pitch, o1 = g->o1, o2 = g->o2;
    const size_t plane = g->plane, HW = (size_t)P * W;
    const int cols = sm_cols(ko, W), KB = sm_group(ko, cols / 8);
    for (int p = 0; p < P; p++)
        for (int q0 = 0; q0 < W; q0 += cols) {
            const int n = W - q0 < cols ? W - q0 : cols;
            const int nq = (wv - q0 < cols ? wv - q0 : cols) / 8;
            const float *x0 = xp + (size_t)p * g->st * pitch + q0;
            for (int k0 = 0; k0 < ko; k0 += KB) {
                float *yr = y + k0 * HW + (size_t)p * W + q0;
                const float *bk = bias ? bias + k0 : NULL;
                const float *wk = wg + (size_t)k0 * ci * 9;
                const int kb = ko - k0;
#define SM_ROW(NQ, KB_)                                                                      \
    sm_row(NQ, KB_, yr, HW, n, kb, add, bk, x0, plane, pitch, o1, o2, wk, ci)
                switch (KB * 8 + nq) {
                case 1 * 8 + 4: SM_ROW(4, 1); break;
                case 1 * 8 + 3: SM_ROW(3, 1); break;
                case 1 * 8 + 2: SM_ROW(2, 1); break;
                case 1 * 8 + 1: SM_ROW(1, 1); break;
                case 2 * 8 + 4: SM_ROW(4, 2); break;
                case 2 * 8 + 3: SM_ROW(3, 2); break;
                case 2 * 8 + 2: SM_ROW(2, 2); break;
                case 2 * 8 + 1: SM_ROW(1, 2); break;
                case 3 * 8 + 2: SM_ROW(2, 3); break;
                case 3 * 8 + 1: SM_ROW(1, 3); break;
                case 4 * 8 + 2: SM_ROW(2, 4); break;
                case 4 * 8 + 1: SM_ROW(1, 4); break;
                case 6 * 8 + 2: SM_ROW(2, 6); break;
                case 6 * 8 + 1: SM_ROW(1, 6); break;
                default: SM_ROW(1, 8); break;
                }
#undef SM_ROW
            }
        }
}

/* acc[(c·ko + k)·9 + rs] += Σ_pq dY[k][p][q] · xp[c][p + r][q + s] for one
 * image; dY is read from the padded planes yp (zero past column W). */
static inline __attribute__((always_inline)) void
sm_dw_body(v8 *acc, const float *xp, const float *yp, int ko, int ci, int H, int W)
{
    const int wp = sm_wp(W), nv = sm_wv(W) / 8;
    const size_t plane = (size_t)(H + 2) * wp;
    for (int c = 0; c < ci; c++)
        for (int k = 0; k < ko; k++) {
            v8 a[9];
            v8 *dst = acc + ((size_t)c * ko + k) * 9;
            for (int i = 0; i < 9; i++)
                a[i] = dst[i];
            const float *x0 = xp + c * plane, *y0 = yp + k * plane + wp + 1;
            for (int p = 0; p < H; p++)
                for (int j = 0; j < nv; j++) {
                    const v8 d = ld8(y0 + (size_t)p * wp + 8 * j);
                    const float *xr = x0 + (size_t)p * wp + 8 * j;
                    for (int r = 0; r < 3; r++)
                        for (int t = 0; t < 3; t++)
                            a[r * 3 + t] += d * ld8(xr + (size_t)r * wp + t);
                }
            for (int i = 0; i < 9; i++)
                dst[i] = a[i];
        }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SM_FAST __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
#define SM_HAVE_FAST 1
#else
#define SM_HAVE_FAST 0
#endif

static void sm_image_base(float *y, const float *xp, const float *wg, const float *bias,
                          bool add, int ko, int ci, const sm_geom *g)
{
    sm_image_body(y, xp, wg, bias, add, ko, ci, g);
}

static void sm_dw_base(v8 *acc, const float *xp, const float *yp, int ko, int ci, int H, int W)
{
    sm_dw_body(acc, xp, yp, ko, ci, H, W);
}

#if SM_HAVE_FAST
SM_FAST static void sm_image_fast(float *y, const float *xp, const float *wg, const float *bias,
                                  bool add, int ko, int ci, const sm_geom *g)
{
    sm_image_body(y, xp, wg, bias, add, ko, ci, g);
}

SM_FAST static void sm_dw_fast(v8 *acc, const float *xp, const float *yp, int ko, int ci, int H,
                               int W)
{
    sm_dw_body(acc, xp, yp, ko, ci, H, W);
}
#endif

static bool sm_baseline_forced;

void ul_conv_small_force_baseline(bool on) { sm_baseline_forced = on; }

static bool sm_use_fast(void)
{
#if SM_HAVE_FAST
    return !sm_baseline_forced && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static void sm_image(float *y, const float *xp, const float *wg, const float *bias, bool add,
                     int ko, int ci, const sm_geom *g)
{
#if SM_HAVE_FAST
    if (sm_use_fast()) {
        sm_image_fast(y, xp, wg, bias, add, ko, ci, g);
        return;
    }
#endif
    sm_image_base(y, xp, wg, bias, add, ko, ci, g);
}

static void sm_dw(v8 *acc, const float *xp, const float *yp, int ko, int ci, int H, int W)
{
#if SM_HAVE_FAST
    if (sm_use_fast()) {
        sm_dw_fast(acc, xp, yp, ko, ci, H, W);
        return;
    }
#endif
    sm_dw_base(acc, xp, yp, ko, ci, H, W);
}

/* The scratch's parts, 64-byte aligned when scratch is. */
typedef struct {
    float *xp, *yp, *wt, *wg;
    v8 *acc;
} sm_parts;

static sm_parts sm_split(const ul_conv_shape *s, float *scratch)
{
    sm_parts q;
    q.xp = scratch;
    q.yp = q.xp + sm_a16((size_t)s->C * sm_plane(s));
    q.wt = q.yp + sm_a16((size_t)s->K * sm_plane(s));
    q.wg = q.wt + sm_a16((size_t)s->C * s->K * 9);
    q.acc = (v8 *)(void *)(q.wg + sm_a16(sm_wg_size(s)));
    return q;
}

/* KB for ko channels of width W (sm_image_body's choice). */
static int sm_kb(int ko, int W) { return sm_group(ko, sm_cols(ko, W) / 8); }

void ul_conv_small_forward(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch)
{
    const sm_parts q = sm_split(s, scratch);
    const sm_geom g = sm_geom_of(s);
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->K * s->P * s->Q;
    memset(q.xp, 0, (size_t)s->C * sm_plane(s) * sizeof(float));
    sm_group_weights(q.wg, w, s->K, s->C, sm_kb(s->K, s->Q));
    for (int n = 0; n < s->N; n++) {
        if (s->stride == 2)
            sm_pad2(q.xp, in + n * in_img, s->C, &g, s->H, s->W);
        else
            sm_pad(q.xp, in + n * in_img, s->C, s->H, s->W);
        sm_image(out + n * out_img, q.xp, q.wg, b, false, s->K, s->C, &g);
    }
}

void ul_conv_small_backward(float *din, float *dw_acc, const float *dout, const float *in,
                            const float *w, const ul_conv_shape *s, float *scratch,
                            bool din_overwrite)
{
    const sm_parts q = sm_split(s, scratch);
    const int C = s->C, K = s->K, H = s->H, W = s->W;
    const size_t in_img = (size_t)C * H * W, out_img = (size_t)K * H * W;
    memset(q.yp, 0, (size_t)K * sm_plane(s) * sizeof(float));
    if (dw_acc) {
        memset(q.xp, 0, (size_t)C * sm_plane(s) * sizeof(float));
        memset(q.acc, 0, (size_t)C * K * 9 * sizeof(v8));
    }
    if (din) { /* dX's kernel: (C, K, 3, 3), turned */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++)
                for (int rs = 0; rs < 9; rs++)
                    q.wt[((size_t)c * K + k) * 9 + rs] = w[((size_t)k * C + c) * 9 + 8 - rs];
        sm_group_weights(q.wg, q.wt, C, K, sm_kb(C, W));
    }
    const sm_geom g = sm_geom_of(s); /* stride 1: dX is H × W as well */
    for (int n = 0; n < s->N; n++) {
        sm_pad(q.yp, dout + n * out_img, K, H, W);
        if (din)
            sm_image(din + n * in_img, q.yp, q.wg, NULL, !din_overwrite, C, K, &g);
        if (dw_acc) {
            sm_pad(q.xp, in + n * in_img, C, H, W);
            sm_dw(q.acc, q.xp, q.yp, K, C, H, W);
        }
    }
    if (!dw_acc)
        return;
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++)
            for (int rs = 0; rs < 9; rs++) {
                const v8 v = q.acc[((size_t)c * K + k) * 9 + rs];
                float sum = 0.0f;
                for (int l = 0; l < 8; l++)
                    sum += v[l];
                dw_acc[((size_t)k * C + c) * 9 + rs] += sum;
            }
}
