/* 2-D convolution as GEMMs, with direct-loop references.
 *
 * 3×3, stride-1, pad-1 layers with enough channels go through Winograd's
 * minimal filtering instead (ops_wino.c): F(4×4, 3×3) forward, for dX
 * (ul_wino_tile, ul_wino_dx_ok) and for dW (ul_wino_dw_tile), or F(2×2,
 * 3×3) (ul_wino_ok decides, forward and backward separately). Otherwise, three ways to the same products,
 * chosen per shape:
 *  - 3×3, stride 1, pad 1 (every such layer of ResNet-18 and the CNN,
 *    stems included, except where the one-thread entry points take the
 *    direct path for few channels, below): forward and dX from three shifted copies of each
 *    image, read in place by BLIS's micro-kernel (see "shifted copies"
 *    below) — no im2col at all; the forward pass of 3×3, stride-2, pad-1
 *    layers with at most 16 input channels and output rows of more than
 *    half a panel too, from copies of every other column
 *    (conv_shifted_fwd_ok);
 *  - otherwise, when BLIS's micro-kernel is available (pack_gemm.h): the
 *    packed GEMM, with the im2col matrix packed straight from the image
 *    into micro-panels and the weights packed once per call;
 *  - otherwise (UNLEARN_PACKED_GEMM=0, or no usable kernel): im2col into
 *    a buffer and bli_sgemm.
 * The shifted layers' weight gradient is nine products over two
 * interleaved copies (conv_shifted_dw, below); every other weight gradient
 * goes through im2col and bli_sgemm, one product per unit (below) so that
 * its depth is a whole image or more. The dX of 3×3, stride-2, pad-1
 * layers gathers its columns (col2im_s2) instead of scattering them; the
 * offset-table gathers of strided rows (the packer's, and dW's im2col of
 * rows of at most 8) run as AVX2 masked gathers where the CPU has them.
 * The one-thread entry points (ul_conv2d_*_local, which the nets' passes
 * use) also take three shapes their own way:
 *  - forward passes of 3×3, pad-1 layers with stride 2 and up to 128 input
 *    channels, or with stride 1 and few channels (ul_conv_kvec_ok), where
 *    the CPU has AVX-512: computed directly with 16 output channels to a
 *    register (ops_conv_kvec.c), ahead of every other path, Winograd's
 *    included (conv_kvec_first);
 *  - 3×3, stride 1, pad 1 with at most UL_SMALL_CONV_CH channels on one
 *    side or UL_SMALL_CONV_BOTH both ways: computed directly
 *    (ops_conv_small.c), no GEMM;
 *  - 1×1 unpadded with stride > 1: the pointwise path on a subsampled copy
 *    (below).
 *
 * The work is cut into column blocks of about UL_CONV_COLS output positions:
 * a few output rows of one image when P·Q is large, or nb whole images when
 * P·Q is small. Small blocks keep the packed operands in cache (on a 2-core
 * Zen 3 VM, 256 columns took about half the CPU time of 1024 or more on
 * ResNet-18's 32×32, 16×16 and 8×8 layers); whole images per block keep the
 * GEMMs of late stages (4×4) from shrinking to a handful of columns. A
 * "unit" is the blocks of one image, or one block of several images.
 * A block of several images lays its columns out image after image, so its
 * GEMM result (K, nb·P·Q) is scattered into NCHW through tmp; a block inside
 * one image is written in place with row stride P·Q.
 *
 * Scratch, per thread (conv_scratch_layout; each part 64-byte aligned):
 *   col   (C·R·S, nb·P·Q)  im2col of a unit for dW; dX's columns of a block
 *                          (the shifted layers: conv_shifted_dw's copies)
 *   tmp   (K, cols)        only when blocks hold several images
 *   dw    (K, C·R·S)       the thread's weight-gradient partial
 *   wp                     packed weights (forward W, backward Wᵀ or the
 *                          shifted path's per-offset weights)
 *   rb                     the packed GEMM's right-operand panels
 *   tbl   (R·S, cols)      im2col offsets of a block (int32)
 *   xs                     the shifted path's three copies of one image
 * The public functions take ul_conv2d_scratch() floats (every processor's
 * part, plus alignment slack); a 1×1 stride-1 unpadded conv within one
 * image needs no col: the image already is its own (C, H·W) matrix. */
#include <omp.h>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <string.h>

#include "gemm.h"
#include "ops_local.h"
#include "ops_wino.h"
#include "pack_gemm.h"

#define UL_CONV_COLS 256
#define UL_OMP_MIN 32768

bool ul_conv_shape_init(ul_conv_shape *s, int N, int C, int H, int W, int K, int R, int S,
                        int stride, int pad)
{
    *s = (ul_conv_shape){.N = N, .C = C, .H = H, .W = W, .K = K, .R = R, .S = S,
                         .stride = stride, .pad = pad};
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || K <= 0 || R <= 0 || S <= 0 || stride <= 0 ||
        pad < 0 || H + 2 * pad < R || W + 2 * pad < S)
        return false;
    s->P = (H + 2 * pad - R) / stride + 1;
    s->Q = (W + 2 * pad - S) / stride + 1;
    return true;
}

/* Images per block (nb) and output rows per block (pb); one of them is 1
 * or whole. */
static void conv_blocking(const ul_conv_shape *s, int *nb, int *pb)
{
    int pq = s->P * s->Q;
    if (pq >= UL_CONV_COLS) {
        int rows = UL_CONV_COLS / s->Q;
        *nb = 1;
        *pb = rows < 1 ? 1 : rows > s->P ? s->P : rows;
    } else {
        int n = (UL_CONV_COLS + pq - 1) / pq;
        *nb = n < s->N ? n : s->N;
        *pb = s->P;
    }
}

static bool conv_is_pointwise(const ul_conv_shape *s)
{
    return s->R == 1 && s->S == 1 && s->stride == 1 && s->pad == 0;
}

/* Output positions q in [*lo, *hi) read input column q·stride + off inside
 * [0, W); the rest fall on padding. */
static void conv_valid_range(int off, int stride, int W, int Q, int *lo, int *hi)
{
    int a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int b = W - 1 - off < 0 ? 0 : (W - 1 - off) / stride + 1;
    if (a > Q)
        a = Q;
    if (b > Q)
        b = Q;
    *lo = a;
    *hi = b < a ? a : b;
}

/* A block: images [n0, n0+nbc) and, when nbc = 1, output rows [p0, p1). */
typedef struct {
    int n0, nbc, p0, p1;
} conv_block;

static int conv_block_cols(const ul_conv_shape *s, const conv_block *b)
{
    return b->nbc * (b->p1 - b->p0) * s->Q;
}

static void im2col(float *col, const float *in, const ul_conv_shape *s, const conv_block *b)
{
    // col is (C*R*S, nbc*(p1-p0)*Q), in is (N,C,H,W)
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int st = s->stride, pad = s->pad, nbc = b->nbc, p0 = b->p0, p1 = b->p1;
    const size_t img_cols = (size_t)(p1 - p0) * Q, ld = (size_t)nbc * img_cols;
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel() && (size_t)C * R * S * ld >= UL_OMP_MIN)
    for (int c = 0; c < C; c++) {
        for (int n = 0; n < nbc; n++) {
            const float *x = in + ((size_t)(b->n0 + n) * C + c) * H * W;
            for (int r = 0; r < R; r++) {
                for (int sx = 0; sx < S; sx++) {
                    float *dst = col + ((size_t)(c * R + r) * S + sx) * ld + n * img_cols;
                    int q0, q1;
                    conv_valid_range(sx - pad, st, W, Q, &q0, &q1);
                    for (int p = p0; p < p1; p++) {
                        float *d = dst + (size_t)(p - p0) * Q;
                        int h = p * st - pad + r;
                        if (h < 0 || h >= H) {
                            memset(d, 0, (size_t)Q * sizeof(float));
                            continue;
                        }
                        const float *xr = x + (size_t)h * W + (q0 * st - pad + sx);
                        for (int q = 0; q < q0; q++)
                            d[q] = 0.0f;
                        if (st == 1)
                            memcpy(d + q0, xr, (size_t)(q1 - q0) * sizeof(float));
                        else if (st == 2)
                            for (int q = q0; q < q1; q++)
                                d[q] = xr[2 * (q - q0)];
                        else
                            for (int q = q0; q < q1; q++)
                                d[q] = xr[(q - q0) * st];
                        for (int q = q1; q < Q; q++)
                            d[q] = 0.0f;
                    }
                }
            }
        }
    }
}

/* Adds the columns back onto the image; each (n,c) plane is owned by one
 * thread and summed in a fixed order, so the result is deterministic. */
static void col2im_add(float *din, const float *col, const ul_conv_shape *s,
                       const conv_block *b)
{
    // din is (N,C,H,W), col is (C*R*S, nbc*(p1-p0)*Q)
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int st = s->stride, pad = s->pad, nbc = b->nbc, p0 = b->p0, p1 = b->p1;
    const size_t img_cols = (size_t)(p1 - p0) * Q, ld = (size_t)nbc * img_cols;
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel() && (size_t)C * R * S * ld >= UL_OMP_MIN)
    for (int n = 0; n < nbc; n++) {
        for (int c = 0; c < C; c++) {
            float *x = din + ((size_t)(b->n0 + n) * C + c) * H * W;
            for (int r = 0; r < R; r++) {
                for (int sx = 0; sx < S; sx++) {
                    const float *src = col + ((size_t)(c * R + r) * S + sx) * ld + n * img_cols;
                    int q0, q1;
                    conv_valid_range(sx - pad, st, W, Q, &q0, &q1);
                    for (int p = p0; p < p1; p++) {
                        int h = p * st - pad + r;
                        if (h < 0 || h >= H)
                            continue;
                        float *xr = x + (size_t)h * W + (q0 * st - pad + sx);
                        const float *sr = src + (size_t)(p - p0) * Q;
                        if (st == 1)
                            for (int q = q0; q < q1; q++)
                                xr[q - q0] += sr[q];
                        else if (st == 2)
                            for (int q = q0; q < q1; q++)
                                xr[2 * (q - q0)] += sr[q];
                        else
                            for (int q = q0; q < q1; q++)
                                xr[(q - q0) * st] += sr[q];
                    }
                }
            }
        }
    }
}

/* ---- col2im of 3×3, stride-2, pad-1 layers -----------------------------------
 * ResNet-18's downsampling 3×3 layers. Input row h = 2i + a takes kernel
 * row 1 of output row i (a = 0), or rows 0 and 2 of output rows i + 1 and
 * i (a = 1); likewise the columns, so every input value is the sum of one,
 * two or four columns' values. col2im_s2 gathers those sums and stores
 * each input row once, even and odd columns together, where col2im_add
 * adds nine stride-2 scatters into it. */
static bool conv_s2(const ul_conv_shape *s)
{
    return s->R == 3 && s->S == 3 && s->stride == 2 && s->pad == 1;
}

/* Whether conv_backward_unit's blocks hold whole images, so that with
 * col2im_s2 each writes its images' dX outright (no zeroed din needed). */
static bool conv_s2_writes(const ul_conv_shape *s)
{
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    return conv_s2(s) && pb == s->P;
}

/* Plane x (one image and channel) from its nine col rows (src0, ld apart),
 * output rows [p0, p1) of them: added, or with write (p0 = 0, p1 = P)
 * stored. */
UL_VEC_CLONES static void col2im_s2_plane(float *x, const float *src0, size_t ld,
                                          const ul_conv_shape *s, int p0, int p1, bool write)
{
    const int H = s->H, W = s->W, Q = s->Q, we = (W + 1) / 2, wo = W / 2;
    /* Odd columns 2j + 1 read kernel column 0 at j + 1 too, up to Q − 1. */
    const int jo = wo < Q - 1 ? wo : Q - 1;
    for (int h = 0; h < H; h++) {
        const int i = h >> 1;
        /* The kernel rows r (and output rows p) that reach input row h:
         * a[] points at (r, s = 0), a[] + ld at s = 1, a[] + 2·ld at s = 2. */
        const float *a[2];
        int nt = 0;
        const int rr[2] = {h & 1 ? 0 : 1, 2}, pp[2] = {h & 1 ? i + 1 : i, i};
        for (int k = 0; k < (h & 1 ? 2 : 1); k++)
            if (pp[k] >= p0 && pp[k] < p1)
                a[nt++] = src0 + (size_t)(3 * rr[k]) * ld + (size_t)(pp[k] - p0) * Q;
        float *xr = x + (size_t)h * W;
        if (nt == 0) {
            if (write)
                memset(xr, 0, (size_t)W * sizeof(float));
            continue;
        }
        const float *a0 = a[0], *a1 = a[0] + ld, *a2 = a[0] + 2 * ld;
        const float *b0 = nt > 1 ? a[1] : a0, *b1 = b0 + ld, *b2 = b0 + 2 * ld;
        int j = 0;
        /* Even column 2j, then odd column 2j + 1, stored (OP =) or added. */
#define S2_COLS(OP, E, O)                                                                      \
    for (; j < jo; j++) {                                                                      \
        xr[2 * j] OP(E);                                                                       \
        xr[2 * j + 1] OP(O);                                                                   \
    }
        if (nt == 1 && write)
            S2_COLS(=, a1[j], a0[j + 1] + a2[j])
        else if (nt == 1)
            S2_COLS(+=, a1[j], a0[j + 1] + a2[j])
        else if (write)
            S2_COLS(=, a1[j] + b1[j], (a0[j + 1] + a2[j]) + (b0[j + 1] + b2[j]))
        else
            S2_COLS(+=, a1[j] + b1[j], (a0[j + 1] + a2[j]) + (b0[j + 1] + b2[j]))
#undef S2_COLS
        /* The last one or two columns: no kernel column 0 from j + 1. */
        for (; j < we; j++) {
            const float e = nt > 1 ? a1[j] + b1[j] : a1[j];
            xr[2 * j] = write ? e : xr[2 * j] + e;
            if (j < wo) {
                const float o = nt > 1 ? a2[j] + b2[j] : a2[j];
                xr[2 * j + 1] = write ? o : xr[2 * j + 1] + o;
            }
        }
    }
}

static void col2im_s2(float *din, const float *col, const ul_conv_shape *s, const conv_block *b,
                      bool write)
{
    const int C = s->C, H = s->H, W = s->W, Q = s->Q, p0 = b->p0, p1 = b->p1;
    const size_t img_cols = (size_t)(p1 - p0) * Q, ld = (size_t)b->nbc * img_cols;
    for (int n = 0; n < b->nbc; n++)
        for (int c = 0; c < C; c++)
            col2im_s2_plane(din + ((size_t)(b->n0 + n) * C + c) * H * W,
                            col + (size_t)c * 9 * ld + n * img_cols, ld, s, p0, p1, write);
}

/* dX of a block from its columns: gathered for 3×3 stride-2 pad-1 layers
 * (with write, stored outright), else added. */
static void col2im_block(float *din, const float *col, const ul_conv_shape *s,
                         const conv_block *b, bool write)
{
    if (conv_s2(s))
        col2im_s2(din, col, s, b, write);
    else
        col2im_add(din, col, s, b);
}

/* ---- threading --------------------------------------------------------------
 * With T > 1 threads the blocks are spread over the threads, each with its
 * own scratch and single-threaded GEMMs: one fork-join per convolution
 * instead of several per block, which is what small blocks need. Blocks go
 * to threads in whole "units" — the blocks of one image, or one block of
 * several images — so no two threads ever add into the same input image in
 * backward. Weight gradients are summed per thread and then added in thread
 * order, so results are identical run to run for a given thread count.
 * With one thread, or fewer units than threads, blocks run one after the
 * other and BLIS threads each GEMM. */

static int conv_max_threads(void)
{
    int t = omp_get_num_procs();
    return t < 1 ? 1 : t;
}

static int conv_threads(int units)
{
    int t = omp_get_max_threads(), tm = conv_max_threads();
    if (t > tm)
        t = tm;
    return units >= t ? t : 1;
}

/* ---- 3×3 stride-1 convolutions from shifted copies -------------------------------
 * For a 3×3, stride 1, pad 1 convolution whose output rows are at least one
 * R panel (nr columns) wide, the im2col panels need no packing at all
 * (narrower rows: conv_shifted_lanes, several images per panel). Each
 * image is copied three times, once per horizontal kernel offset s, into
 * xs[qb][h'][s][c][nr] = x[c][h' − 1][qb·nr + j + s − 1] (zero outside the
 * image). Padded rows p, p+1, p+2 of one column block then form a
 * contiguous (9·C)×nr panel: the R panel of output row p, block qb, for all
 * nine offsets, which the micro-kernel reads in place. The weights are
 * packed with depth index (r·3 + s)·C + c. An image costs three copies of
 * its input instead of im2col's nine, and no per-block packing; a product
 * is 9·C deep (taken in stretches of at most SHIFT_KC), so narrow layers
 * still make few, deep micro-kernel calls. The backward pass's dX is the
 * same computation on dY with the weights transposed and flipped. */

enum { SHIFT_KC = 384 };

static size_t round_up_sz(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t a16(size_t n) { return round_up_sz(n, 16); }

static bool conv_shifted_ok(const ul_conv_shape *s)
{
    return ul_pk_get_native() && s->R == 3 && s->S == 3 && s->stride == 1 && s->pad == 1;
}

/* The forward pass takes stride 2 as well (ResNet-18's downsampling 3×3
 * layers): copies of every other input column, and output row p reading
 * from copy row 2p. Only where it measured faster than the packed GEMM,
 * in the net (µs per image, shifted against packed): at most 16 input
 * channels (ResNet-18 width 0.1, 6 → 13 channels at 16×16 outputs: 9 against
 * 15; width 0.25, 16 → 32: 0.11–0.14 s against 0.13–0.16 s of a run; width
 * 0.5, 32 → 64: 170–200 against 125–130; width 1: 160 against 130) and
 * output rows of more than half a panel (with several images side by
 * side, conv_shifted_group, the packed GEMM over blocks of whole images
 * stayed faster: width 0.25, 8×8 and 4×4 outputs, 0.12 s against 0.10 s).
 * Where the packed GEMM has a kernel of its own (the AVX-512 one, the
 * copies keeping the 16-lane one), only output rows of whole 16-lane
 * blocks stay here: on a 2-core AVX-512 EPYC, one thread, 64 images, 16
 * → 32 channels on 28×28 inputs (rows of 14) took 2.12–2.20 ms shifted
 * against 1.35–1.53 packed, 8 → 16 0.66 against 0.56; with rows of 16,
 * 6 → 13 took 0.48–0.51 against 0.56–0.59 and 16 → 32 came out even.
 * dX and dW of those layers go the general way. */
static bool conv_shifted_fwd_ok(const ul_conv_shape *s)
{
    const ul_pk *pk = ul_pk_get_native();
    if (!pk || s->R != 3 || s->S != 3 || s->pad != 1)
        return false;
    if (s->stride == 1)
        return true;
    const ul_pk *gemm = ul_pk_get();
    return s->stride == 2 && s->C <= 16 && 2 * s->Q > pk->wr &&
           (!gemm || gemm->kid == pk->kid || s->Q % pk->wr == 0);
}

/* Images per lane group: rows narrower than a panel (Q < nr) put
 * G = nr / Q images side by side in the lanes (8×8 images two at a time,
 * 4×4 four at a time, 7×7 two with two lanes idle); wider rows take one
 * image, cut into column blocks. */
static int conv_shifted_group(const ul_conv_shape *s, const ul_pk *pk)
{
    return s->Q >= pk->wr ? 1 : pk->wr / s->Q;
}

/* Floats of the three shifted copies (of the input, or of dY for dX). */
static size_t conv_shifted_xs(const ul_conv_shape *s, const ul_pk *pk)
{
    const size_t ch = (size_t)(s->C > s->K ? s->C : s->K), nr = (size_t)pk->wr;
    const size_t qb = ((size_t)s->Q + nr - 1) / nr;
    if (s->Q >= pk->wr)
        return 3 * qb * (size_t)(s->H + 2) * ch * nr;
    /* One column block, plus the group's result (ch, H, nr) before it is
     * scattered back to the images. */
    return 3 * (size_t)(s->H + 2) * ch * nr + ch * (size_t)s->H * nr;
}

/* Floats of the shifted weights, forward or backward. */
static size_t conv_shifted_wp(const ul_conv_shape *s, const ul_pk *pk)
{
    const size_t f = round_up_sz((size_t)s->K, (size_t)pk->wl) * 9 * (size_t)s->C;
    const size_t b = round_up_sz((size_t)s->C, (size_t)pk->wl) * 9 * (size_t)s->K;
    return f > b ? f : b;
}

/* Packs the weights for conv_shifted_image: Ko rows of depth 9·Ci, depth
 * index (r·3 + s)·Ci + c. Forward (Ko, Ci) = (K, C) and the value is
 * w[k][c][r][s]; with flip (Ko, Ci) = (C, K) and the value is
 * w[c][k][2 − r][2 − s], the transposed convolution's kernel. */
static void pack_w_shifted(const ul_pk *pk, float *dst, const float *w, int K, int C, bool flip)
{
    const int wl = pk->wl, Ko = flip ? C : K, Ci = flip ? K : C, kd = 9 * Ci;
    for (int i0 = 0; i0 < Ko; i0 += wl) {
        float *p = dst + (size_t)i0 * kd;
        for (int kk = 0; kk < kd; kk++) {
            const int r = kk / (3 * Ci), sx = kk / Ci % 3, c = kk % Ci;
            for (int l = 0; l < wl; l++) {
                const int k = i0 + l;
                float v = 0.0f;
                if (k < Ko)
                    v = flip ? w[((size_t)c * C + k) * 9 + (2 - r) * 3 + (2 - sx)]
                             : w[((size_t)k * C + c) * 9 + r * 3 + sx];
                p[(size_t)kk * wl + l] = v;
            }
        }
    }
}

/* c (mm×nn, row stride ldc) = beta·c + the 9·Ci-deep product of the packed
 * weight rows a and the shifted panel b, in stretches of SHIFT_KC. */
static void shifted_tile(const ul_pk *pk, int mm, int nn, int Ci, const float *a, const float *b,
                         float beta, float *c, int ldc)
{
    const int kd = 9 * Ci;
    for (int k0 = 0; k0 < kd; k0 += SHIFT_KC) {
        const int kc = kd - k0 < SHIFT_KC ? kd - k0 : SHIFT_KC;
        ul_pk_tile(pk, mm, nn, kc, a + (size_t)k0 * pk->wl, b + (size_t)k0 * pk->wr,
                   k0 == 0 ? beta : 1.0f, c, ldc);
    }
}

/* The shifted copies of x (Ci, H, W) that conv_shifted_image reads: copy
 * row hp of column block qb and shift sx is xs[((qb·Hp + hp)·3 + sx)·Ci·nr
 * + c·nr + j] = x[c][hp − 1][st·(qb·nr + j) + sx − 1], zero off the image
 * (Hp = H + 2). They are made channel by channel and row by row, each
 * input row read once for its three shifts: a plane is then one run the
 * hardware prefetcher follows, where the copies' own order (a row of
 * every channel in turn) jumped a plane at every step. Built for AVX2
 * too, and with the strides spelled out, so that the copies vectorise:
 * the stride-2 copies of 28 × 28 images (14 lanes of 16, no whole
 * interior block) had cost about as much as the products. */
UL_VEC_CLONES static void shifted_copies(float *xs, const float *x, int Ci, int H, int W, int st,
                                         int QB, int nr)
{
    const int Hp = H + 2;
    const size_t HW = (size_t)H * W, panel = (size_t)Ci * nr;
    for (int qb = 0; qb < QB; qb++) {
        int q0[3], jlo[3], jhi[3];
        for (int sx = 0; sx < 3; sx++) {
            q0[sx] = st * qb * nr + sx - 1; /* input column of lane 0 */
            /* Lanes [jlo, jhi) lie inside the image. */
            jlo[sx] = q0[sx] < 0 ? (-q0[sx] + st - 1) / st : 0;
            const int hi = W - q0[sx] <= 0 ? 0 : (W - q0[sx] + st - 1) / st;
            jhi[sx] = hi < nr ? hi : nr;
        }
        /* The padding rows above and below. */
        memset(xs + (size_t)qb * Hp * 3 * panel, 0, 3 * panel * sizeof(float));
        memset(xs + ((size_t)qb * Hp + Hp - 1) * 3 * panel, 0, 3 * panel * sizeof(float));
        for (int c = 0; c < Ci; c++)
            for (int h = 0; h < H; h++) {
                const float *xr = x + (size_t)c * HW + (size_t)h * W;
                float *d = xs + ((size_t)qb * Hp + h + 1) * 3 * panel + (size_t)c * nr;
                for (int sx = 0; sx < 3; sx++, d += panel) {
                    const int o = q0[sx], lo = jlo[sx], hi = jhi[sx];
                    if (nr == 16 && lo == 0 && hi == 16) {
                        /* An interior block: 16 plain values. */
                        if (st == 1)
                            for (int j = 0; j < 16; j++)
                                d[j] = xr[o + j];
                        else
                            for (int j = 0; j < 16; j++)
                                d[j] = xr[o + 2 * j];
                        continue;
                    }
                    for (int j = 0; j < lo; j++)
                        d[j] = 0.0f;
                    if (st == 2)
                        for (int j = lo; j < hi; j++)
                            d[j] = xr[o + 2 * j];
                    else if (st == 1)
                        for (int j = lo; j < hi; j++)
                            d[j] = xr[o + j];
                    else
                        for (int j = lo; j < hi; j++)
                            d[j] = xr[o + st * j];
                    for (int j = hi > lo ? hi : lo; j < nr; j++)
                        d[j] = 0.0f;
                }
            }
    }
}

/* y (Ko, P·Q) = beta·y + the convolution (3×3, pad 1, stride st of 1 or
 * 2) of x (Ci, H, W) with the shifted weights wp; xs is scratch for the
 * copies. Copy row hp holds input row hp − 1, lane j of column block qb
 * its column st·(qb·nr + j) + sx − 1 (zero off the image), so the 9·Ci
 * values output row p needs lie in one run from copy row st·p on. */
static void conv_shifted_image(float *y, const float *x, const float *wp, int Ko, int Ci, int H,
                               int W, int st, float beta, float *xs, const ul_pk *pk)
{
    const int P = (H - 1) / st + 1, Q = (W - 1) / st + 1;
    const int nr = pk->wr, wl = pk->wl, QB = (Q + nr - 1) / nr, Hp = H + 2, kd = 9 * Ci;
    const size_t PQ = (size_t)P * Q, panel = (size_t)Ci * nr;
    shifted_copies(xs, x, Ci, H, W, st, QB, nr);
    /* Rows in groups of SHIFT_ROWS, so each weight panel is loaded once per
     * group rather than once per output row. */
    enum { SHIFT_ROWS = 4 };
    for (int qb = 0; qb < QB; qb++) {
        const int nn = Q - qb * nr < nr ? Q - qb * nr : nr;
        for (int pg = 0; pg < P; pg += SHIFT_ROWS) {
            const int pe = P - pg < SHIFT_ROWS ? P : pg + SHIFT_ROWS;
            for (int ip = 0; ip < Ko; ip += wl) {
                const int mm = Ko - ip < wl ? Ko - ip : wl;
                for (int p = pg; p < pe; p++)
                    shifted_tile(pk, mm, nn, Ci, wp + (size_t)ip * kd,
                                 xs + ((size_t)qb * Hp + (size_t)st * p) * 3 * panel, beta,
                                 y + (size_t)ip * PQ + (size_t)p * Q + (size_t)qb * nr, (int)PQ);
            }
        }
    }
}

/* The lane-group form of conv_shifted_image for rows narrower than a
 * panel: g images (g·W ≤ nr lanes) side by side. The result goes to a
 * (Ko, H, nr) buffer first, then to each image: y_i = result + bias, or
 * y_i += result when accumulating (dX). */
static void conv_shifted_lanes(float *y, size_t y_img, const float *x, size_t x_img, int g,
                               const float *wp, const float *bias, bool accumulate, int Ko,
                               int Ci, int H, int W, float *xs, const ul_pk *pk)
{
    const int nr = pk->wr, wl = pk->wl, Hp = H + 2, kd = 9 * Ci, lanes = g * W;
    const size_t HW = (size_t)H * W, panel = (size_t)Ci * nr;
    float *yt = xs + 3 * (size_t)Hp * panel;
    for (int sx = 0; sx < 3; sx++)
        for (int hp = 0; hp < Hp; hp++) {
            float *d = xs + ((size_t)hp * 3 + sx) * panel;
            const int h = hp - 1;
            if (h < 0 || h >= H) {
                memset(d, 0, panel * sizeof(float));
                continue;
            }
            /* Lane i·W + q holds column q + sx − 1 of image i. */
            const int qlo = sx == 0 ? 1 : 0, qhi = sx == 2 ? W - 1 : W;
            for (int c = 0; c < Ci; c++) {
                float *dc = d + (size_t)c * nr;
                for (int i = 0; i < g; i++) {
                    const float *xr = x + i * x_img + (size_t)c * HW + (size_t)h * W + sx - 1;
                    float *di = dc + i * W;
                    for (int q = 0; q < qlo; q++)
                        di[q] = 0.0f;
                    for (int q = qlo; q < qhi; q++)
                        di[q] = xr[q];
                    for (int q = qhi; q < W; q++)
                        di[q] = 0.0f;
                }
                for (int j = lanes; j < nr; j++)
                    dc[j] = 0.0f;
            }
        }
    const int ldt = H * nr;
    for (int ip = 0; ip < Ko; ip += wl) {
        const int mm = Ko - ip < wl ? Ko - ip : wl;
        for (int p = 0; p < H; p++)
            shifted_tile(pk, mm, lanes, Ci, wp + (size_t)ip * kd, xs + (size_t)p * 3 * panel,
                         0.0f, yt + (size_t)ip * ldt + (size_t)p * nr, ldt);
    }
    for (int i = 0; i < g; i++)
        for (int k = 0; k < Ko; k++) {
            float *yk = y + i * y_img + (size_t)k * HW;
            const float bk = bias ? bias[k] : 0.0f;
            for (int p = 0; p < H; p++) {
                const float *t = yt + (size_t)k * ldt + (size_t)p * nr + (size_t)i * W;
                float *yr = yk + (size_t)p * W;
                if (accumulate)
                    for (int q = 0; q < W; q++)
                        yr[q] += t[q];
                else
                    for (int q = 0; q < W; q++)
                        yr[q] = t[q] + bk;
            }
        }
}

/* Forward of images [0, N) of s through the shifted path; wp already
 * packed, xs one thread's copies. Lane groups (G > 1) only come with
 * stride 1 (conv_shifted_fwd_ok). */
static void conv_shifted_forward_images(float *out, const float *in, const float *wp,
                                        const float *b, const ul_conv_shape *s, int n0, int n1,
                                        float *xs)
{
    const ul_pk *pk = ul_pk_get_native();
    const int K = s->K, PQ = s->P * s->Q, G = conv_shifted_group(s, pk);
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)K * PQ;
    if (G > 1) {
        for (int n = n0; n < n1; n += G)
            conv_shifted_lanes(out + n * out_img, out_img, in + n * in_img, in_img,
                               n1 - n < G ? n1 - n : G, wp, b, false, K, s->C, s->H, s->W, xs,
                               pk);
        return;
    }
    for (int n = n0; n < n1; n++) {
        float *y = out + n * out_img;
        float beta = 0.0f;
        if (b) {
            for (int k = 0; k < K; k++)
                for (int j = 0; j < PQ; j++)
                    y[(size_t)k * PQ + j] = b[k];
            beta = 1.0f;
        }
        conv_shifted_image(y, in + n * in_img, wp, K, s->C, s->H, s->W, s->stride, beta, xs,
                           pk);
    }
}

/* Adds dX of images [n0, n1) through the shifted path (or, with
 * overwrite, writes it); wp holds the flipped weights. */
static void conv_shifted_dx_images(float *din, const float *dout, const float *wp,
                                   const ul_conv_shape *s, int n0, int n1, float *xs,
                                   bool overwrite)
{
    const ul_pk *pk = ul_pk_get_native();
    const int G = conv_shifted_group(s, pk);
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->K * s->P * s->Q;
    if (G > 1) {
        for (int n = n0; n < n1; n += G)
            conv_shifted_lanes(din + n * in_img, in_img, dout + n * out_img, out_img,
                               n1 - n < G ? n1 - n : G, wp, NULL, !overwrite, s->C, s->K, s->P,
                               s->Q, xs, pk);
        return;
    }
    for (int n = n0; n < n1; n++)
        conv_shifted_image(din + n * in_img, dout + n * out_img, wp, s->C, s->K, s->P, s->Q, 1,
                           overwrite ? 0.0f : 1.0f, xs, pk);
}

/* ---- shifted weight gradient -------------------------------------------------
 * dW of a 3×3, stride-1, pad-1 layer as nine products that share two
 * interleaved copies, with no im2col:
 *   dW[k][c][r][s] = Σ over positions of dY[k][pos] · X[c][pos + D(r, s)].
 * Images are laid out one after the other as planes of H+1 rows of W+1
 * values: a leading zero row, then each image row followed by one zero.
 * That zero column is the right padding of a row and the left padding of
 * the next, and the zero row is the bottom padding of one image and the top
 * padding of the next. In that layout input (h + r − 1, w + s − 1) sits at
 * a fixed distance D(r, s) = (r − 1)(W + 1) + s − 1 from output (h, w), so
 * the nine offsets are the same two buffers read from shifted starts:
 *   xp  the input, channels interleaved by the kernel's L width (6 on Zen),
 *   dyp dY, channels interleaved by its R width (16), zero on the padding,
 * and each micro-tile (6 input channels × 16 output channels at one offset)
 * runs straight over a stretch of positions. The zeros of dyp cancel the
 * products that straddle a padding slot. Units of about SDW_POS positions
 * (whole images) are copied at a time; the tiles are summed over a unit in
 * stretches of SDW_KC positions, which keep dyp's panel in L1. */

enum { SDW_POS = 1024, SDW_KC = 256 };

typedef struct sdw_geom {
    int wp, plane, g;   /* row length W+1, plane (H+1)(W+1), images per unit */
    int cpad, kpad;     /* C and K rounded up to the panel widths */
    size_t xs, ys;      /* floats of one channel panel of xp / dyp */
} sdw_geom;

static sdw_geom sdw_geometry(const ul_conv_shape *s, const ul_pk *pk)
{
    sdw_geom g;
    g.wp = s->W + 1;
    g.plane = (s->H + 1) * g.wp;
    g.g = SDW_POS / g.plane > 1 ? SDW_POS / g.plane : 1;
    if (g.g > s->N)
        g.g = s->N;
    g.cpad = (int)round_up_sz((size_t)s->C, (size_t)pk->wl);
    g.kpad = (int)round_up_sz((size_t)s->K, (size_t)pk->wr);
    /* xp covers positions [−1, g·plane + wp + 1), plus slack for the
     * kernel's look-ahead; dyp positions [0, g·plane). */
    g.xs = a16(((size_t)g.g * g.plane + (size_t)g.wp + 2 + 16) * (size_t)pk->wl);
    g.ys = (size_t)g.g * g.plane * (size_t)pk->wr;
    return g;
}

/* Floats of the shifted dW scratch: xp, dyp and the (9, cpad, kpad) sums. */
static size_t conv_shifted_dw_size(const ul_conv_shape *s, const ul_pk *pk)
{
    const sdw_geom g = sdw_geometry(s, pk);
    return (size_t)g.cpad / pk->wl * g.xs + a16((size_t)g.kpad / pk->wr * g.ys) +
           (size_t)9 * g.cpad * g.kpad;
}

/* Interleaves channels [c0, c0+w) of images [0, g) of src (channels ch,
 * H·W values each) into dst, position by position (w floats each) in the
 * plane layout, starting at position `first`; channels ≥ ch and the
 * padding slots are zero. */
static void sdw_interleave(float *dst, int w, int first, const float *src, size_t img, int ch,
                           int c0, int g, int H, int W, int wp, int plane, size_t count)
{
    memset(dst, 0, count * (size_t)w * sizeof(float));
    const size_t HW = (size_t)H * W;
    const int lanes = ch - c0 < w ? ch - c0 : w;
    for (int n = 0; n < g; n++)
        for (int l = 0; l < lanes; l++) {
            const float *x = src + n * img + (size_t)(c0 + l) * HW;
            for (int h = 0; h < H; h++) {
                float *d = dst + ((size_t)n * plane + (size_t)(h + 1) * wp - first) * w + l;
                const float *xr = x + (size_t)h * W;
                for (int q = 0; q < W; q++)
                    d[(size_t)q * w] = xr[q];
            }
        }
}

/* Adds dW of images [n0, n1) to dw_acc (K, C, 3, 3); scratch holds
 * conv_shifted_dw_size floats, 64-byte aligned. */
static void conv_shifted_dw(float *dw_acc, const float *dout, const float *in,
                            const ul_conv_shape *s, int n0, int n1, float *scratch)
{
    const ul_pk *pk = ul_pk_get_native();
    const sdw_geom g = sdw_geometry(s, pk);
    const int wl = pk->wl, wr = pk->wr, C = s->C, K = s->K;
    const int cpn = g.cpad / wl, kpn = g.kpad / wr;
    const size_t in_img = (size_t)C * s->H * s->W, out_img = (size_t)K * s->H * s->W;
    float *xp = scratch, *dyp = xp + (size_t)cpn * g.xs;
    float *acc = dyp + a16((size_t)kpn * g.ys);
    memset(acc, 0, (size_t)9 * g.cpad * g.kpad * sizeof(float));
    for (int n = n0; n < n1; n += g.g) {
        const int gi = n1 - n < g.g ? n1 - n : g.g;
        const int end = gi * g.plane; /* positions [wp, end) hold the outputs */
        for (int cp = 0; cp < cpn; cp++)
            sdw_interleave(xp + cp * g.xs, wl, -1, in + n * in_img, in_img, C, cp * wl, gi,
                           s->H, s->W, g.wp, g.plane, (size_t)end + g.wp + 2);
        for (int kp = 0; kp < kpn; kp++)
            sdw_interleave(dyp + kp * g.ys, wr, 0, dout + n * out_img, out_img, K, kp * wr, gi,
                           s->H, s->W, g.wp, g.plane, (size_t)end);
        for (int p0 = g.wp; p0 < end; p0 += SDW_KC) {
            const int kc = end - p0 < SDW_KC ? end - p0 : SDW_KC;
            for (int kp = 0; kp < kpn; kp++) {
                const float *b = dyp + kp * g.ys + (size_t)p0 * wr;
                for (int cp = 0; cp < cpn; cp++)
                    for (int r = 0; r < 3; r++)
                        for (int sx = 0; sx < 3; sx++) {
                            /* xp's position −1 is at index 0. */
                            const int d = (r - 1) * g.wp + sx - 1;
                            const float *a = xp + cp * g.xs + (size_t)(p0 + d + 1) * wl;
                            float *c = acc + ((size_t)(r * 3 + sx) * g.cpad + (size_t)cp * wl) *
                                                 g.kpad +
                                       (size_t)kp * wr;
                            ul_pk_tile(pk, wl, wr, kc, a, b, 1.0f, c, g.kpad);
                        }
            }
        }
    }
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++)
            for (int o = 0; o < 9; o++)
                dw_acc[((size_t)k * C + c) * 9 + o] += acc[((size_t)o * g.cpad + c) * g.kpad + k];
}

/* ---- 1×1 strided convolutions -------------------------------------------------
 * A 1×1 unpadded convolution with stride st > 1 (ResNet-18's downsampling
 * shortcuts) reads only the inputs at (p·st, q·st): it is the pointwise
 * convolution of the subsampled image. The one-thread entry points take
 * images in groups of g: their subsampled planes are gathered into a
 * compact (g, C, P, Q) buffer, the pointwise path (plain GEMMs on whole
 * planes) runs on it, and dX comes back through a compact buffer too,
 * scattered onto the strided positions; the other positions get no
 * gradient. The general path would gather the same values one table
 * lookup at a time for every column block, and scatter dX through col2im. */

enum { SUB_FLOATS = 65536 }; /* about how much of the input a group copies */

static bool conv_subsampled_ok(const ul_conv_shape *s)
{
    return s->R == 1 && s->S == 1 && s->pad == 0 && s->stride > 1;
}

static int conv_subsampled_group(const ul_conv_shape *s)
{
    const size_t plane = (size_t)s->P * s->Q * (size_t)(s->C > s->K ? s->C : s->K);
    size_t g = SUB_FLOATS / plane;
    if (g < 1)
        g = 1;
    return g > (size_t)s->N ? s->N : (int)g;
}

/* The pointwise shape of a group of g images. */
static ul_conv_shape conv_subsampled_shape(const ul_conv_shape *s, int g)
{
    ul_conv_shape p;
    ul_conv_shape_init(&p, g, s->C, s->P, s->Q, s->K, 1, 1, 1, 0);
    return p;
}

/* The compact input and dX of a group, then the pointwise path's scratch. */
static size_t conv_subsampled_size(const ul_conv_shape *s)
{
    const int g = conv_subsampled_group(s);
    const ul_conv_shape p = conv_subsampled_shape(s, g);
    return 2 * a16((size_t)g * s->C * s->P * s->Q) + ul_conv2d_local_scratch(&p);
}

/* xs (g, C, P, Q) = the inputs of images [0, g) of x at the strided positions. */
static void subsample(float *xs, const float *x, int g, const ul_conv_shape *s)
{
    const int H = s->H, W = s->W, P = s->P, Q = s->Q, st = s->stride;
    const size_t planes = (size_t)g * s->C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *d = xs + pl * P * Q;
        for (int p = 0; p < P; p++, d += Q) {
            const float *xr = xp + (size_t)p * st * W;
            if (st == 2)
                for (int q = 0; q < Q; q++)
                    d[q] = xr[2 * q];
            else
                for (int q = 0; q < Q; q++)
                    d[q] = xr[(size_t)q * st];
        }
    }
}

/* Puts the compact dX of images [0, g) onto din's strided positions: adds
 * it, or with overwrite writes it and zeroes every other position. */
static void unsubsample(float *din, const float *dxs, int g, const ul_conv_shape *s,
                        bool overwrite)
{
    const int H = s->H, W = s->W, P = s->P, Q = s->Q, st = s->stride;
    const size_t planes = (size_t)g * s->C;
    for (size_t pl = 0; pl < planes; pl++) {
        float *xp = din + pl * H * W;
        const float *d = dxs + pl * P * Q;
        if (overwrite)
            memset(xp, 0, (size_t)H * W * sizeof(float));
        for (int p = 0; p < P; p++, d += Q) {
            float *xr = xp + (size_t)p * st * W;
            if (st == 2)
                for (int q = 0; q < Q; q++)
                    xr[2 * q] += d[q];
            else
                for (int q = 0; q < Q; q++)
                    xr[(size_t)q * st] += d[q];
        }
    }
}

static void conv_subsampled_forward(float *out, const float *in, const float *w,
                                    const float *b, const ul_conv_shape *s, float *scratch)
{
    const int g = conv_subsampled_group(s);
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->K * s->P * s->Q;
    float *xs = scratch, *sub = xs + 2 * a16((size_t)g * s->C * s->P * s->Q);
    for (int n = 0; n < s->N; n += g) {
        const int gi = s->N - n < g ? s->N - n : g;
        const ul_conv_shape p = conv_subsampled_shape(s, gi);
        subsample(xs, in + n * in_img, gi, s);
        ul_conv2d_forward_local(out + n * out_img, xs, w, b, &p, sub);
    }
}

static void conv_subsampled_backward(float *din, float *dw_acc, const float *dout,
                                     const float *in, const float *w, const ul_conv_shape *s,
                                     float *scratch, bool din_overwrite)
{
    const int g = conv_subsampled_group(s);
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->K * s->P * s->Q;
    const size_t part = a16((size_t)g * s->C * s->P * s->Q);
    float *xs = scratch, *dxs = xs + part, *sub = xs + 2 * part;
    for (int n = 0; n < s->N; n += g) {
        const int gi = s->N - n < g ? s->N - n : g;
        const ul_conv_shape p = conv_subsampled_shape(s, gi);
        if (dw_acc)
            subsample(xs, in + n * in_img, gi, s);
        ul_conv2d_backward_local(din ? dxs : NULL, dw_acc, NULL, dout + n * out_img, xs, w, &p,
                                 sub, true);
        if (din)
            unsubsample(din + n * in_img, dxs, gi, s, din_overwrite);
    }
}

/* ---- scratch ------------------------------------------------------------------ */

/* Offsets (floats) of the parts of one thread's scratch; see the top of the
 * file. Each part starts on a 64-byte boundary. */
typedef struct conv_scratch {
    size_t col, tmp, dw, wp, rb, tbl, xs, sub, small, total; /* Winograd starts at wp */
} conv_scratch;

static bool conv_subsampled_ok(const ul_conv_shape *s);
static size_t conv_subsampled_size(const ul_conv_shape *s);

static conv_scratch conv_scratch_layout(const ul_conv_shape *s)
{
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const size_t crs = (size_t)s->C * s->R * s->S, cols = (size_t)nb * pb * s->Q;
    conv_scratch L = {0};
    size_t off = 0;
    L.col = off;
    /* im2col of a whole unit for dW (nb images, or one whole image); the
     * shifted path's dW uses the space for its own copies instead. */
    if (conv_shifted_ok(s))
        off += a16(conv_shifted_dw_size(s, ul_pk_get_native()));
    else
        off += a16((nb == 1 && conv_is_pointwise(s)) ? 0 : crs * (size_t)nb * s->P * s->Q);
    L.tmp = off;
    off += a16(nb > 1 ? (size_t)s->K * cols : 0);
    L.dw = off;
    off += a16((size_t)s->K * crs);
    L.wp = L.rb = L.tbl = L.xs = off;
    /* The general products' operands (pk), or the shifted copies' (npk). */
    const ul_pk *pk = ul_pk_get(), *npk = ul_pk_get_native();
    if (pk) {
        size_t fw = ul_pk_l_size(pk, s->K, (int)crs), bw = ul_pk_l_size(pk, (int)crs, s->K);
        size_t sw = conv_shifted_fwd_ok(s) ? conv_shifted_wp(s, npk) : 0;
        fw = fw > bw ? fw : bw;
        off += a16(fw > sw ? fw : sw);
        L.rb = off;
        size_t fr = ul_pk_r_size(pk, (int)cols, (int)crs), br = ul_pk_r_size(pk, (int)cols, s->K);
        off += a16(fr > br ? fr : br);
        L.tbl = off;
        off += a16((size_t)s->R * s->S * cols); /* int32 entries */
        L.xs = off;
        off += a16(conv_shifted_fwd_ok(s) ? conv_shifted_xs(s, npk) : 0);
        /* The Winograd path's buffers share the space from wp on. */
        if (ul_wino_ok(s, false) || ul_wino_ok(s, true) || ul_wino_dx_ok(s)) {
            const size_t end = L.wp + a16(ul_wino_scratch(s));
            off = end > off ? end : off;
        }
    }
    L.sub = off;
    if (conv_subsampled_ok(s))
        off += a16(conv_subsampled_size(s));
    /* The two direct paths' forward passes share their part. */
    L.small = off;
    {
        const size_t sm = ul_conv_small_fwd_ok(s) ? ul_conv_small_scratch(s) : 0;
        const size_t kv = ul_conv_kvec_ok(s) ? ul_conv_kvec_scratch(s) : 0;
        const size_t kw = ul_conv_kwino_ok(s) ? ul_conv_kwino_scratch(s) : 0;
        const size_t dm = sm > kv ? sm : kv;
        off += a16(dm > kw ? dm : kw);
    }
    L.total = off;
    return L;
}

/* The public entry points accept any float-aligned scratch and round it up
 * to 64 bytes, hence the 15 extra floats. */
size_t ul_conv2d_scratch(const ul_conv_shape *s)
{
    return conv_scratch_layout(s).total * (size_t)conv_max_threads() + 15;
}

static float *align64(float *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

size_t ul_conv2d_local_scratch(const ul_conv_shape *s) { return conv_scratch_layout(s).total; }

static int conv_units(const ul_conv_shape *s, int nb)
{
    return (s->N + nb - 1) / nb;
}

/* ---- packed right operands ------------------------------------------------------ */

/* The im2col matrix of a block, packed straight from the image: row crs =
 * (c, r, s) of column (n, p, q) is in[n0+n, c, p·stride − pad + r,
 * q·stride − pad + s], zero on the padding. */
typedef struct im2col_ctx {
    const float *in;
    const ul_conv_shape *s;
    conv_block b;
    const int32_t *tbl;  /* im2col_table of the block */
} im2col_ctx;

/* For each kernel offset (r, s) and block column, the input's offset from
 * image n0, channel 0 — or −1 on padding. Packing then adds c·H·W and
 * gathers; every channel and image of the block shares the table. */
static void im2col_table(int32_t *tbl, const ul_conv_shape *s, const conv_block *b)
{
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int st = s->stride, pad = s->pad;
    int32_t *t = tbl;
    for (int r = 0; r < R; r++)
        for (int sx = 0; sx < S; sx++)
            for (int n = 0; n < b->nbc; n++)
                for (int p = b->p0; p < b->p1; p++) {
                    const int h = p * st - pad + r;
                    for (int q = 0; q < Q; q++) {
                        const int x = q * st - pad + sx;
                        *t++ = h >= 0 && h < H && x >= 0 && x < W
                                   ? (int32_t)((size_t)n * C * H * W + (size_t)h * W + x)
                                   : -1;
                    }
                }
}

/* Whether pack_im2col_rows16 applies (given the whole block in one call). */
static bool im2col_rows16(const ul_conv_shape *s, int w)
{
    return (w == 16 || w == 32) && (s->stride == 1 || s->stride == 2) && s->Q % 16 == 0;
}

/* Eight floats, aligned and not. */
typedef float pk_v8 __attribute__((vector_size(32)));
typedef float pk_v8u __attribute__((vector_size(32), aligned(4)));

/* The common cases, stride 1 or 2 with output rows a whole number of
 * 16-lane chunks wide: every output row starts a chunk, and all but its
 * edge chunks are plain 16-float copies (stride 1) or every other float
 * of 32 (stride 2), with no offset table. Panels of 32 lanes (the AVX-512
 * kernel's) take two chunks each; the second half of a last panel with
 * one is zero (no garbage, denormals say, in the lanes the kernel
 * computes and nobody stores). On a 2-core AVX-512 EPYC (one thread, 64
 * images, best of 40, alternated) a 32 → 64 channel stride-2 layer on
 * 32×32 inputs went from 7.85–8.13 to 6.5–6.84 ms against the offset
 * table's gathers, 64 → 128 from 21.9–22.9 to 19.5–20.3. The edge
 * chunks through a window and the valid ranges worked out once took the
 * 32 → 64 layer (best of 200) from 5.45–5.71 to 4.90–5.45 ms. */
UL_VEC_CLONES static void pack_im2col_rows16(float *dst, int w, int k0, int kc,
                                            const im2col_ctx *x)
{
    const ul_conv_shape *s = x->s;
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q, pad = s->pad;
    const int st = s->stride, per = w / 16;
    const size_t HW = (size_t)H * W;
    /* Chunk by chunk, each one's kc rows, so that the panels are written
     * in order; each kernel column's valid output columns
     * (conv_valid_range, two divisions) worked out once. */
    enum { SMAX = 16 };
    int vr[2 * SMAX];
    for (int sx = 0; sx < S && sx < SMAX; sx++)
        conv_valid_range(sx - pad, st, W, Q, &vr[2 * sx], &vr[2 * sx + 1]);
    int j = 0;
    for (int n = 0; n < x->b.nbc; n++) {
        const float *img = x->in + (size_t)(x->b.n0 + n) * C * HW;
        for (int p = x->b.p0; p < x->b.p1; p++)
            for (int q0 = 0; q0 < Q; q0 += 16, j++) {
                float *d = dst + (size_t)(j / per) * w * kc + (size_t)(j % per) * 16;
                int c = k0 / (R * S), r = k0 / S % R, sx = k0 % S;
                for (int kk = 0; kk < kc; kk++, d += w) {
                    const int h = p * st - pad + r;
                    int qlo, qhi;
                    if (sx < SMAX) {
                        qlo = vr[2 * sx];
                        qhi = vr[2 * sx + 1];
                    } else {
                        conv_valid_range(sx - pad, st, W, Q, &qlo, &qhi);
                    }
                    /* Output column q reads xr[q·st]. */
                    const float *xr = img + (size_t)c * HW + (size_t)h * W + sx - pad;
                    if (h < 0 || h >= H) {
                        for (int t = 0; t < 16; t++)
                            d[t] = 0.0f;
                    } else if (q0 >= qlo && q0 + 16 <= qhi) {
                        if (st == 1)
                            for (int t = 0; t < 16; t++)
                                d[t] = xr[q0 + t];
                        else
                            for (int t = 0; t < 16; t++)
                                d[t] = xr[2 * (q0 + t)];
                    } else {
                        /* An edge chunk: its window of the row (st·16
                         * values from column st·q0 + sx − pad) copied with
                         * zeros outside the image, then read as the inside
                         * ones (the columns inside alone, one value at a
                         * time, had taken most of a 32 → 64 channel
                         * stride-2 layer's packing on 32×32 inputs). */
                        float win[32] __attribute__((aligned(32)));
                        const int c0 = st * q0 + sx - pad, nw = st * 16;
                        const int lo = c0 >= 0 ? 0 : -c0 < nw ? -c0 : nw;
                        const int hi = W - c0 >= nw ? nw : W - c0 > lo ? W - c0 : lo;
                        const float *row = img + (size_t)c * HW + (size_t)h * W;
                        for (int i = 0; i < lo; i++)
                            win[i] = 0.0f;
                        for (int i = lo; i < hi; i++)
                            win[i] = row[c0 + i];
                        for (int i = hi; i < nw; i++)
                            win[i] = 0.0f;
                        if (st == 1)
                            for (int t = 0; t < 16; t++)
                                d[t] = win[t];
                        else
                            for (int t = 0; t < 16; t += 8) {
                                /* Every other value, as vectors: GCC's
                                 * loop read the window a float at a time. */
                                const pk_v8 a = *(const pk_v8 *)(win + 2 * t),
                                            b = *(const pk_v8 *)(win + 2 * t + 8);
                                *(pk_v8u *)(d + t) =
                                    __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
                            }
                    }
                    if (++sx == S) {
                        sx = 0;
                        if (++r == R) {
                            r = 0;
                            c++;
                        }
                    }
                }
            }
    }
    /* A last panel with chunks missing: zero in its other lanes. */
    if (j % per) {
        float *d = dst + (size_t)(j / per) * w * kc;
        for (int kk = 0; kk < kc; kk++, d += w)
            for (int t = (j % per) * 16; t < w; t++)
                d[t] = 0.0f;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* d[0..8) = base[t[l]], or 0 where the offset t[l] is negative (the
 * padding): one AVX2 masked gather. */
__attribute__((target("avx2"), always_inline)) static inline void tbl_gather8(float *d,
                                                                              const float *base,
                                                                              const int32_t *t)
{
    const __m256i o = _mm256_loadu_si256((const __m256i *)t);
    const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(o, _mm256_set1_epi32(-1)));
    _mm256_storeu_ps(d, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, o, m, 4));
}

/* pack_im2col's table gather for whole panels of w lanes (a multiple of
 * 8: 16 for the AVX2 kernels, 32 for the AVX-512 one), w / 8 gathers
 * each. */
__attribute__((target("avx2"))) static void pack_tbl_avx2(float *dst, int kc, const float *base,
                                                          const int32_t *t, int panels, int kk,
                                                          int w)
{
    for (int pn = 0; pn < panels; pn++) {
        float *d = dst + (size_t)pn * w * kc + (size_t)kk * w;
        for (int l = 0; l < w; l += 8)
            tbl_gather8(d + l, base, t + pn * w + l);
    }
}

/* im2col of a block through its offset table (im2col_table), eight
 * values per masked gather: rows of every other input value, a few to a
 * gather at 8×8 and 4×4 outputs, which im2col copies a short run at a
 * time. */
__attribute__((target("avx2"))) static void im2col_gather(float *col, const float *in,
                                                          const ul_conv_shape *s,
                                                          const conv_block *b,
                                                          const int32_t *tbl)
{
    const int RS = s->R * s->S, cols = conv_block_cols(s, b);
    const size_t HW = (size_t)s->H * s->W;
    const float *in0 = in + (size_t)b->n0 * s->C * HW;
    for (int c = 0; c < s->C; c++)
        for (int rs = 0; rs < RS; rs++) {
            const int32_t *t = tbl + (size_t)rs * cols;
            const float *base = in0 + (size_t)c * HW;
            float *d = col + ((size_t)c * RS + rs) * cols;
            int j = 0;
            for (; j + 8 <= cols; j += 8)
                tbl_gather8(d + j, base, t + j);
            for (; j < cols; j++)
                d[j] = t[j] >= 0 ? base[t[j]] : 0.0f;
        }
}
#define PACK_TBL_AVX2 1
#endif

static void pack_im2col(float *dst, int w, int j0, int nj, int k0, int kc, const void *ctx)
{
    const im2col_ctx *x = ctx;
    const ul_conv_shape *s = x->s;
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int seg = (x->b.p1 - x->b.p0) * Q;
    if (im2col_rows16(s, w) && j0 == 0 && nj == x->b.nbc * seg) {
        pack_im2col_rows16(dst, w, k0, kc, x);
        return;
    }
    const int cols = x->b.nbc * seg, RS = R * S;
    const float *in0 = x->in + (size_t)x->b.n0 * C * H * W;
#ifdef PACK_TBL_AVX2
    const bool pack_avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int kk = 0; kk < kc; kk++) {
        const int crs = k0 + kk, c = crs / RS;
        const int32_t *t = x->tbl + (size_t)(crs % RS) * cols + j0;
        const float *base = in0 + (size_t)c * H * W;
        int jp = 0;
#ifdef PACK_TBL_AVX2
        if (w % 8 == 0 && pack_avx2) {
            pack_tbl_avx2(dst, kc, base, t, nj / w, kk, w);
            jp = nj / w * w;
        }
#endif
        for (; jp < nj; jp += w) {
            float *d = dst + (size_t)jp * kc + (size_t)kk * w;
            const int cnt = nj - jp < w ? nj - jp : w;
            for (int l = 0; l < cnt; l++) {
                const int32_t o = t[jp + l];
                d[l] = o >= 0 ? base[o] : 0.0f;
            }
            for (int l = cnt; l < w; l++)
                d[l] = 0.0f;
        }
    }
}

/* ---- forward -------------------------------------------------------------------- */

/* One unit of the forward pass. wp is the packed weights for the packed
 * GEMM, or NULL to go through ul_sgemm_threads with `threads` threads. */
static void conv_forward_unit(float *out, const float *in, const float *w, const float *b,
                              const ul_conv_shape *s, int unit, float *scratch, int threads,
                              const float *wp)
{
    const int N = s->N, K = s->K, CRS = s->C * s->R * s->S, P = s->P, Q = s->Q, PQ = P * Q;
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)K * PQ;
    const conv_scratch L = conv_scratch_layout(s);
    const ul_pk *pk = wp ? ul_pk_get() : NULL;
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int n0 = unit * nb;
    float *tmp = scratch + L.tmp;
    for (int p0 = 0; p0 < P; p0 += pb) {
        conv_block blk = {n0, N - n0 < nb ? N - n0 : nb, p0, P - p0 < pb ? P : p0 + pb};
        const int cols = conv_block_cols(s, &blk);
        /* y is (K, cols): inside image n0 with row stride PQ, or tmp. The
         * bias goes in first either way and the products are added to it
         * (depth block by depth block), so that an image's outputs do not
         * depend on how many images share its block. */
        float *y = tmp;
        int ldy = cols;
        float beta = 0.0f;
        if (blk.nbc == 1) {
            y = out + n0 * out_img + (size_t)p0 * Q;
            ldy = PQ;
        }
        if (b) {
            for (int k = 0; k < K; k++)
                for (int j = 0; j < cols; j++)
                    y[(size_t)k * ldy + j] = b[k];
            beta = 1.0f;
        }
        if (pk && conv_is_pointwise(s)) {
            ul_pk_rows r = {in + n0 * in_img + (size_t)p0 * Q, in_img, (size_t)PQ,
                            (blk.p1 - blk.p0) * Q};
            ul_pk_gemm(pk, K, cols, CRS, wp, ul_pk_pack_rows, &r, beta, y, ldy,
                       scratch + L.rb);
        } else if (pk) {
            /* The gather table, unless the block packs as whole rows. */
            int32_t *tbl = (int32_t *)(scratch + L.tbl);
            if (!im2col_rows16(s, pk->wr) || cols > UL_PK_NC)
                im2col_table(tbl, s, &blk);
            im2col_ctx x = {in, s, blk, tbl};
            ul_pk_gemm(pk, K, cols, CRS, wp, pack_im2col, &x, beta, y, ldy, scratch + L.rb);
        } else {
            const float *col = scratch + L.col;
            int ldcol = cols;
            if (conv_is_pointwise(s) && blk.nbc == 1) {
                col = in + n0 * in_img + (size_t)p0 * Q;
                ldcol = PQ;
            } else {
                im2col(scratch + L.col, in, s, &blk);
            }
            ul_sgemm_threads(threads, false, false, K, cols, CRS, 1.0f, w, CRS, col, ldcol,
                             beta, y, ldy);
        }
        if (blk.nbc == 1)
            continue;
        // tmp is (K, nbc*PQ); scatter it into out (nbc,K,P,Q)
        float *yo = out + n0 * out_img;
        for (int n = 0; n < blk.nbc; n++)
            for (int k = 0; k < K; k++) {
                const float *t = tmp + (size_t)k * cols + (size_t)n * PQ;
                float *yy = yo + ((size_t)n * K + k) * PQ;
                for (int j = 0; j < PQ; j++)
                    yy[j] = t[j];
            }
    }
}

/* Packs w (forward) or wᵀ (backward) into the scratch's wp part; NULL when
 * the packed GEMM is unavailable. */
static const float *conv_pack_weights(const ul_conv_shape *s, const float *w, float *scratch,
                                      bool transposed)
{
    const ul_pk *pk = ul_pk_get();
    if (!pk)
        return NULL;
    const int K = s->K, CRS = s->C * s->R * s->S;
    float *wp = scratch + conv_scratch_layout(s).wp;
    if (transposed)
        ul_pk_pack_l(pk, wp, w, CRS, K, CRS, true);
    else
        ul_pk_pack_l(pk, wp, w, K, CRS, CRS, false);
    return wp;
}

/* The Winograd path over the batch: one contiguous range of images per
 * thread, each with its own scratch; weight gradients are summed per
 * thread and then added in thread order. conv_wino_images runs the forward
 * pass, or with dx the input gradient as a forward convolution of dY
 * (ul_wino_dx, adding into out = din from in = dout). */
static void conv_wino_images(float *out, const float *in, const float *w, const float *b,
                             const ul_conv_shape *s, float *scratch, bool dx)
{
    const conv_scratch L = conv_scratch_layout(s);
    const int T = conv_threads(s->N);
    const size_t x_img = (size_t)s->C * s->H * s->W, y_img = (size_t)s->K * s->P * s->Q;
    const size_t in_img = dx ? y_img : x_img, out_img = dx ? x_img : y_img;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int n0 = s->N * t / nt, n1 = s->N * (t + 1) / nt;
        ul_conv_shape sub = *s;
        sub.N = n1 - n0;
        float *mine = scratch + L.total * (size_t)t + L.wp;
        if (sub.N > 0 && dx)
            ul_wino_dx(out + n0 * out_img, in + n0 * in_img, w, &sub, mine, true, NULL);
        else if (sub.N > 0)
            ul_wino_forward(out + n0 * out_img, in + n0 * in_img, w, b, &sub, mine, NULL);
    }
}

static void conv_wino_backward(float *din, float *dw, const float *dout, const float *in,
                               const float *w, const ul_conv_shape *s, float *scratch)
{
    const conv_scratch L = conv_scratch_layout(s);
    const int T = conv_threads(s->N);
    if (T == 1) {
        ul_wino_backward(din, dw, dout, in, w, s, scratch + L.wp);
        return;
    }
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->K * s->P * s->Q;
    const size_t wsize = (size_t)s->K * s->C * 9;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int n0 = s->N * t / nt, n1 = s->N * (t + 1) / nt;
        float *mine = scratch + L.total * (size_t)t;
        float *acc = dw ? mine + L.dw : NULL;
        if (acc)
            memset(acc, 0, wsize * sizeof(float));
        ul_conv_shape sub = *s;
        sub.N = n1 - n0;
        if (sub.N > 0)
            ul_wino_backward(din ? din + n0 * in_img : NULL, acc, dout + n0 * out_img,
                             in + n0 * in_img, w, &sub, mine + L.wp);
        if (dw) {
#pragma omp barrier
#pragma omp for schedule(static)
            for (size_t i = 0; i < wsize; i++) {
                float sum = 0.0f;
                for (int j = 0; j < nt; j++)
                    sum += scratch[L.total * (size_t)j + L.dw + i];
                dw[i] += sum;
            }
        }
    }
}

void ul_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const ul_conv_shape *s, float *scratch)
{
    // out is (N,K,P,Q), in is (N,C,H,W), w is (K,C,R,S), b is (K) or NULL
    scratch = align64(scratch);
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb), T = conv_threads(units);
    const conv_scratch L = conv_scratch_layout(s);
    const size_t per = L.total;
    if (ul_wino_ok(s, false)) {
        conv_wino_images(out, in, w, b, s, scratch, false);
        return;
    }
    if (conv_shifted_fwd_ok(s)) {
        /* Packed once into thread 0's scratch, shared; copies per thread. */
        float *wp = scratch + L.wp;
        pack_w_shifted(ul_pk_get_native(), wp, w, s->K, s->C, false);
        const int G = conv_shifted_group(s, ul_pk_get_native()), groups = (s->N + G - 1) / G;
        const int Ts = conv_threads(groups);
        if (Ts == 1) {
            conv_shifted_forward_images(out, in, wp, b, s, 0, s->N, scratch + L.xs);
            return;
        }
#pragma omp parallel for schedule(static) num_threads(Ts)
        for (int gi = 0; gi < groups; gi++)
            conv_shifted_forward_images(out, in, wp, b, s, gi * G,
                                        s->N - gi * G < G ? s->N : gi * G + G,
                                        scratch + per * (size_t)omp_get_thread_num() + L.xs);
        return;
    }
    /* The packed weights live in thread 0's scratch and are shared. */
    const float *wp = conv_pack_weights(s, w, scratch, false);
    if (T == 1) {
        for (int u = 0; u < units; u++)
            conv_forward_unit(out, in, w, b, s, u, scratch, 0, wp);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(T)
    for (int u = 0; u < units; u++)
        conv_forward_unit(out, in, w, b, s, u, scratch + per * (size_t)omp_get_thread_num(), 1,
                          wp);
}

/* ---- backward ------------------------------------------------------------------- */

/* Backward of one unit: adds dW into dw_acc (K, CRS) and dX into din. wp is
 * the packed wᵀ for dX, or NULL to use ul_sgemm_threads. */
static void conv_backward_unit(float *din, float *dw_acc, const float *dout, const float *in,
                               const float *w, const ul_conv_shape *s, int unit,
                               float *scratch, int threads, const float *wp, bool din_write)
{
    const int N = s->N, C = s->C, K = s->K, CRS = C * s->R * s->S, P = s->P, Q = s->Q;
    const int PQ = P * Q;
    const size_t in_img = (size_t)C * s->H * s->W, out_img = (size_t)K * PQ;
    const bool pointwise = conv_is_pointwise(s);
    const conv_scratch L = conv_scratch_layout(s);
    const ul_pk *pk = wp ? ul_pk_get() : NULL;
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int n0 = unit * nb, nbc = N - n0 < nb ? N - n0 : nb;
    float *col = scratch + L.col, *tmp = scratch + L.tmp;
    /* dY of the whole unit, (K, nbc·PQ) with row stride lddy_u: in place
     * for one image, gathered into tmp for several. */
    const float *dy_u = dout + n0 * out_img;
    int lddy_u = PQ;
    if (nbc > 1 && (dw_acc || !pk)) {
        const int cols_u = nbc * PQ;
        for (int n = 0; n < nbc; n++)
            for (int k = 0; k < K; k++)
                memcpy(tmp + (size_t)k * cols_u + (size_t)n * PQ,
                       dy_u + n * out_img + (size_t)k * PQ, (size_t)PQ * sizeof(float));
        dy_u = tmp;
        lddy_u = cols_u;
    }
    if (dw_acc) {
        /* dW in one product over the whole unit: im2col of all its rows at
         * once, so the GEMM is as deep as the unit (e.g. 1024 positions for
         * a 32×32 image) and its set-up is paid once per unit. */
        conv_block whole = {n0, nbc, 0, P};
        const int cols_u = nbc * PQ;
        const float *cm = col;
        int ldcol = cols_u;
        if (pointwise && nbc == 1) {
            cm = in + n0 * in_img;
            ldcol = PQ;
        } else {
#ifdef PACK_TBL_AVX2
            /* Strided layers with output rows of at most 8 (longer rows
             * copy as fast by runs), whose units are blocks (the table's
             * size). */
            if (pk && s->stride == 2 && Q <= 8 && pb == P && __builtin_cpu_supports("avx2")) {
                int32_t *tbl = (int32_t *)(scratch + L.tbl);
                im2col_table(tbl, s, &whole);
                im2col_gather(col, in, s, &whole, tbl);
            } else
#endif
                im2col(col, in, s, &whole);
        }
        ul_sgemm_threads(threads, false, true, K, CRS, cols_u, 1.0f, dy_u, lddy_u, cm, ldcol,
                         1.0f, dw_acc, CRS);
    }
    if (!din)
        return;
    for (int p0 = 0; p0 < P; p0 += pb) {
        conv_block blk = {n0, nbc, p0, P - p0 < pb ? P : p0 + pb};
        const int cols = conv_block_cols(s, &blk);
        const bool direct = pointwise && nbc == 1;
        if (!pk) {
            /* Several images make one block (pb = P), so dy_u is the block. */
            const float *dy = dy_u + (size_t)p0 * Q;
            if (direct)
                ul_sgemm_threads(threads, true, false, C, cols, K, 1.0f, w, CRS, dy, lddy_u,
                                 1.0f, din + n0 * in_img + (size_t)p0 * Q, PQ);
            else {
                ul_sgemm_threads(threads, true, false, CRS, cols, K, 1.0f, w, CRS, dy, lddy_u,
                                 0.0f, col, cols);
                col2im_block(din, col, s, &blk, din_write);
            }
            continue;
        }
        ul_pk_rows r = {dout + n0 * out_img + (size_t)p0 * Q, out_img, (size_t)PQ,
                        (blk.p1 - blk.p0) * Q};
        if (direct) {
            ul_pk_gemm(pk, C, cols, K, wp, ul_pk_pack_rows, &r, 1.0f,
                       din + n0 * in_img + (size_t)p0 * Q, PQ, scratch + L.rb);
        } else {
            ul_pk_gemm(pk, CRS, cols, K, wp, ul_pk_pack_rows, &r, 0.0f, col, cols,
                       scratch + L.rb);
            col2im_block(din, col, s, &blk, din_write);
        }
    }
}

/* Σ over images and positions of dout's channel k. */
static float conv_bias_grad(const float *dout, const ul_conv_shape *s, int k)
{
    const int PQ = s->P * s->Q;
    const size_t out_img = (size_t)s->K * PQ;
    double acc = 0.0;
    for (int n = 0; n < s->N; n++) {
        const float *d = dout + n * out_img + (size_t)k * PQ;
        float part = 0.0f;
        for (int j = 0; j < PQ; j++)
            part += d[j];
        acc += part;
    }
    return (float)acc;
}

/* The AVX-512 direct path goes ahead of every other in the one-thread
 * forward pass, Winograd's included, except where tests force Winograd's
 * path on (ul_wino_force) and it can take the layer. */
static bool conv_kvec_first(const ul_conv_shape *s)
{
    return ul_conv_kvec_ok(s) && !(ul_wino_forced() && ul_wino_ok(s, false));
}

/* The same for the AVX-512 Winograd path, which goes ahead of that one. */
static bool conv_kwino_first(const ul_conv_shape *s)
{
    return ul_conv_kwino_ok(s) && !(ul_wino_forced() && ul_wino_ok(s, false));
}

bool ul_conv2d_forward_team(float *out, const float *in, const float *w, const float *b,
                            const ul_conv_shape *s, float *scratch, ul_wino_team *team,
                            double *mean, double *m2)
{
    if (!ul_wino_ok(s, false) || conv_kwino_first(s) || conv_kvec_first(s)) {
        ul_conv2d_forward_local(out, in, w, b, s, scratch);
        return false;
    }
    float *ws = scratch + conv_scratch_layout(s).wp;
    if (mean && m2)
        ul_wino_forward_stats(out, in, w, b, s, ws, mean, m2, team);
    else
        ul_wino_forward(out, in, w, b, s, ws, team);
    return mean && m2;
}

size_t ul_conv2d_kcache_floats(const ul_conv_shape *s)
{
    if (conv_kwino_first(s))
        return ul_conv_kwino_kernel_floats(s);
    if (ul_wino_ok(s, false) && !conv_kvec_first(s))
        return ul_wino_kernel_floats(s);
    return 0;
}

void ul_kc_filled(const ul_conv_kc_use *use, int kind)
{
    if (use->T > 1) {
#pragma omp barrier
    }
    if (use->t == 0) {
        use->c->have = use->key;
        use->c->kind = kind;
    }
}

bool ul_conv2d_kc_relu(const ul_conv_shape *s)
{
    return conv_kwino_first(s) || conv_kvec_first(s) ||
           (ul_wino_ok(s, false) && ul_wino_tile(s) == 4);
}

bool ul_conv2d_forward_kc(float *out, const float *in, const float *w, const float *b,
                          const ul_conv_shape *s, float *scratch, ul_wino_team *team,
                          const ul_conv_kc_use *use, bool relu)
{
    if (conv_kwino_first(s)) {
        ul_conv_kwino_forward_kc(out, in, w, b, s, scratch + conv_scratch_layout(s).small, use,
                                 relu);
        return relu;
    }
    if (conv_kvec_first(s)) {
        ul_conv_kvec_forward_relu(out, in, w, b, s, scratch + conv_scratch_layout(s).small, relu);
        return relu;
    }
    if (ul_wino_ok(s, false))
        return ul_wino_forward_kc(out, in, w, b, s, scratch + conv_scratch_layout(s).wp, team, use,
                                  relu);
    ul_conv2d_forward_local(out, in, w, b, s, scratch);
    return false;
}

void ul_conv2d_forward_local(float *out, const float *in, const float *w, const float *b,
                             const ul_conv_shape *s, float *scratch)
{
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb);
    if (conv_kwino_first(s)) {
        ul_conv_kwino_forward(out, in, w, b, s, scratch + conv_scratch_layout(s).small);
        return;
    }
    if (conv_kvec_first(s)) {
        ul_conv_kvec_forward(out, in, w, b, s, scratch + conv_scratch_layout(s).small);
        return;
    }
    if (ul_wino_ok(s, false)) {
        ul_wino_forward(out, in, w, b, s, scratch + conv_scratch_layout(s).wp, NULL);
        return;
    }
    if (conv_subsampled_ok(s)) {
        conv_subsampled_forward(out, in, w, b, s, scratch + conv_scratch_layout(s).sub);
        return;
    }
    if (ul_conv_small_fwd_ok(s)) {
        ul_conv_small_forward(out, in, w, b, s, scratch + conv_scratch_layout(s).small);
        return;
    }
    if (conv_shifted_fwd_ok(s)) {
        const conv_scratch L = conv_scratch_layout(s);
        pack_w_shifted(ul_pk_get_native(), scratch + L.wp, w, s->K, s->C, false);
        conv_shifted_forward_images(out, in, scratch + L.wp, b, s, 0, s->N, scratch + L.xs);
        return;
    }
    const float *wp = conv_pack_weights(s, w, scratch, false);
    for (int u = 0; u < units; u++)
        conv_forward_unit(out, in, w, b, s, u, scratch, 1, wp);
}

void ul_conv2d_backward_local(float *din, float *dw_acc, float *db_acc, const float *dout,
                              const float *in, const float *w, const ul_conv_shape *s,
                              float *scratch, bool din_overwrite)
{
    ul_conv2d_backward_team(din, dw_acc, db_acc, dout, in, w, s, scratch, din_overwrite, NULL);
}

void ul_conv2d_backward_team(float *din, float *dw_acc, float *db_acc, const float *dout,
                             const float *in, const float *w, const ul_conv_shape *s,
                             float *scratch, bool din_overwrite, ul_wino_team *team)
{
    if (db_acc)
        for (int k = 0; k < s->K; k++)
            db_acc[k] += conv_bias_grad(dout, s, k);
    if (!din && !dw_acc)
        return;
    if (conv_subsampled_ok(s)) {
        conv_subsampled_backward(din, dw_acc, dout, in, w, s,
                                 scratch + conv_scratch_layout(s).sub, din_overwrite);
        return;
    }
    if (ul_conv_small_ok(s) && !ul_wino_dx_ok(s) && !ul_wino_ok(s, true)) {
        ul_conv_small_backward(din, dw_acc, dout, in, w, s, scratch + conv_scratch_layout(s).small,
                               din_overwrite);
        return;
    }
    if (din && ul_wino_dx_ok(s)) {
        ul_wino_dx(din, dout, w, s, scratch + conv_scratch_layout(s).wp, !din_overwrite, team);
        din = NULL;
        if (!dw_acc)
            return;
    }
    /* Only the shifted dX and col2im_s2 over whole images write their
     * result outright; the other paths add into a zeroed din. */
    const bool s2_write = din && din_overwrite && !ul_wino_ok(s, true) && conv_s2_writes(s);
    if (din && din_overwrite && !s2_write && (ul_wino_ok(s, true) || !conv_shifted_ok(s)))
        memset(din, 0, (size_t)s->N * s->C * s->H * s->W * sizeof(float));
    if (ul_wino_ok(s, true)) {
        ul_wino_backward(din, dw_acc, dout, in, w, s, scratch + conv_scratch_layout(s).wp);
        return;
    }
    if (din && conv_shifted_ok(s)) {
        const conv_scratch L = conv_scratch_layout(s);
        pack_w_shifted(ul_pk_get_native(), scratch + L.wp, w, s->K, s->C, true);
        conv_shifted_dx_images(din, dout, scratch + L.wp, s, 0, s->N, scratch + L.xs,
                               din_overwrite);
        din = NULL;
    }
    if (conv_shifted_ok(s)) {
        if (dw_acc)
            conv_shifted_dw(dw_acc, dout, in, s, 0, s->N, scratch + conv_scratch_layout(s).col);
        return;
    }
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb);
    const float *wp = din ? conv_pack_weights(s, w, scratch, true) : NULL;
    for (int u = 0; u < units; u++)
        conv_backward_unit(din, dw_acc, dout, in, w, s, u, scratch, 1, wp, s2_write);
}

void ul_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const ul_conv_shape *s, float *scratch)
{
    // din is (N,C,H,W), dw is (K,C,R,S), db is (K), dout is (N,K,P,Q)
    scratch = align64(scratch);
    const int N = s->N, K = s->K, CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    const size_t out_img = (size_t)K * PQ;
    if (db) {
#pragma omp parallel for schedule(static) if ((size_t)N * out_img >= UL_OMP_MIN)
        for (int k = 0; k < K; k++)
            db[k] += conv_bias_grad(dout, s, k);
    }
    if (!din && !dw)
        return;
    if (din && ul_wino_dx_ok(s)) {
        conv_wino_images(din, dout, w, NULL, s, scratch, true);
        din = NULL;
        if (!dw)
            return;
    }
    if (ul_wino_ok(s, true)) {
        conv_wino_backward(din, dw, dout, in, w, s, scratch);
        return;
    }
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    /* The shifted path's dW takes units of ug images (sdw_geometry). */
    const bool sdw = conv_shifted_ok(s);
    const int ug = sdw ? sdw_geometry(s, ul_pk_get_native()).g : nb;
    const int units = sdw ? (N + ug - 1) / ug : conv_units(s, nb), T = conv_threads(units);
    const conv_scratch L = conv_scratch_layout(s);
    const size_t per = L.total, wsize = (size_t)K * CRS;
    if (din && sdw) {
        float *wps = scratch + L.wp;
        pack_w_shifted(ul_pk_get_native(), wps, w, K, s->C, true);
        const int G = conv_shifted_group(s, ul_pk_get_native()), groups = (N + G - 1) / G;
        const int Ts = conv_threads(groups);
        if (Ts == 1) {
            conv_shifted_dx_images(din, dout, wps, s, 0, N, scratch + L.xs, false);
        } else {
#pragma omp parallel for schedule(static) num_threads(Ts)
            for (int gi = 0; gi < groups; gi++)
                conv_shifted_dx_images(din, dout, wps, s, gi * G, N - gi * G < G ? N : gi * G + G,
                                       scratch + per * (size_t)omp_get_thread_num() + L.xs,
                                       false);
        }
        din = NULL;
        if (!dw)
            return;
    }
    const float *wp = din ? conv_pack_weights(s, w, scratch, true) : NULL;
    if (T == 1) {
        if (sdw)
            conv_shifted_dw(dw, dout, in, s, 0, N, scratch + L.col);
        else
            for (int u = 0; u < units; u++)
                conv_backward_unit(din, dw, dout, in, w, s, u, scratch, 0, wp, false);
        return;
    }
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *mine = scratch + per * (size_t)t;
        float *acc = dw ? mine + L.dw : NULL;
        if (acc)
            memset(acc, 0, wsize * sizeof(float));
#pragma omp for schedule(static)
        for (int u = 0; u < units; u++) {
            if (sdw)
                conv_shifted_dw(acc, dout, in, s, u * ug, N - u * ug < ug ? N : u * ug + ug,
                                mine + L.col);
            else
                conv_backward_unit(din, acc, dout, in, w, s, u, mine, 1, wp, false);
        }
        if (dw) {
            /* Implicit barrier above; each thread then sums a slice of dW
             * over the partials in thread order. */
#pragma omp for schedule(static)
            for (size_t i = 0; i < wsize; i++) {
                float sum = 0.0f;
                for (int j = 0; j < T; j++)
                    sum += scratch[per * (size_t)j + L.dw + i];
                dw[i] += sum;
            }
        }
    }
}

void ul_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s)
{
    const int N = s->N, C = s->C, H = s->H, W = s->W, K = s->K, R = s->R, S = s->S;
    const int P = s->P, Q = s->Q, st = s->stride, pad = s->pad;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double acc = b ? b[k] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int sx = 0; sx < S; sx++) {
                                int h = p * st - pad + r, ww = q * st - pad + sx;
                                if (h < 0 || h >= H || ww < 0 || ww >= W)
                                    continue;
                                acc += (double)in[(((size_t)n * C + c) * H + h) * W + ww] *
                                       w[(((size_t)k * C + c) * R + r) * S + sx];
                            }
                    out[(((size_t)n * K + k) * P + p) * Q + q] = (float)acc;
                }
}

void ul_conv2d_backward_ref(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, const ul_conv_shape *s)
{
    const int N = s->N, C = s->C, H = s->H, W = s->W, K = s->K, R = s->R, S = s->S;
    const int P = s->P, Q = s->Q, st = s->stride, pad = s->pad;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    float g = dout[(((size_t)n * K + k) * P + p) * Q + q];
                    if (db)
                        db[k] += g;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int sx = 0; sx < S; sx++) {
                                int h = p * st - pad + r, ww = q * st - pad + sx;
                                if (h < 0 || h >= H || ww < 0 || ww >= W)
                                    continue;
                                size_t xi = (((size_t)n * C + c) * H + h) * W + ww;
                                size_t wi = (((size_t)k * C + c) * R + r) * S + sx;
                                if (din)
                                    din[xi] += g * w[wi];
                                if (dw)
                                    dw[wi] += g * in[xi];
                            }
                }
}
