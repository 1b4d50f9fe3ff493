/* 3×3, stride-1, pad-1 convolutions by Winograd's minimal filtering
 * F(2×2, 3×3) and F(4×4, 3×3) (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016), with the products on BLIS's
 * micro-kernel. F(4×4, 3×3) (see "The forward F(4×4, 3×3)" below) takes
 * the forward pass, dX as the forward convolution of dY with the kernels
 * transposed and turned by 180° (ul_wino_dx), and dW through the adjoint
 * chain described here for 2×2 tiles, with 4×4 tiles' matrices. F(2×2,
 * 3×3), described here, takes all three when UNLEARN_WINOGRAD_F4=0 (dX and
 * dW in one pass), and the tests' forced modes.
 *
 * The output is cut into 2×2 tiles; tile (ty, tx) of an image reads the
 * 4×4 input patch whose top-left corner is (2·ty − 1, 2·tx − 1), zero
 * outside the image. With
 *     Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],
 *     G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
 *     Aᵀ = [1 1 1 0; 0 1 −1 −1],
 * a tile of channel k is Aᵀ·(Σ_c U[k][c] ⊙ V[c])·A, where U = G·g·Gᵀ is the
 * transformed 3×3 kernel and V = Bᵀ·d·B the transformed patch. For each of
 * the 16 positions ξ of the 4×4 transform the sum over c is a GEMM:
 *     M[ξ] (K × tiles) = U[ξ] (K × C) · V[ξ] (C × tiles),
 * 16 products of 4·K·C multiply-adds per output tile against the direct
 * convolution's 9·4·K·C: 2.25× fewer. The backward pass is the exact
 * adjoint of the same chain:
 *     dM = A·dY·Aᵀ,  dV[ξ] = U[ξ]ᵀ·dM[ξ],  dX += scatter of B·dV·Bᵀ,
 *     dU[ξ] = Σ_tiles dM[ξ]·V[ξ]ᵀ,  dW = Gᵀ·dU·G,
 * so dX and dW take 2.25× fewer multiply-adds as well. The transforms'
 * coefficients are 0, ±1 and ±½, but the sums round differently from a
 * direct convolution's: results agree with it to float rounding, not
 * bit for bit (UNLEARN_WINOGRAD=0 turns the path off).
 *
 * The transforms write their results straight into the micro-kernel's
 * packed panel layouts (pack_gemm.h): tiles across the R panels' lanes, or
 * along the depth for the weight-gradient products. The panels are 16
 * lanes wide for the AVX2 kernels (6×16), which every part of the path
 * can use; the forward products with 4×4 tiles (and dX, a forward pass)
 * take AVX-512's kernel instead where it is the main one (wino_fwd_pk: 32
 * tiles by 12 channels, computed transposed). Tiles are numbered
 * image by image, row by row, and processed in blocks of nt; one call runs
 * on one thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops_local.h"
#include "ops_wino.h"
#include "pack_gemm.h"
#include "transpose.h"
#include "wino4.h"

/* Where the path pays, measured layer by layer on a 2-core Zen 3 VM with
 * build/bench/unlearn-bench-conv (one thread, 64 images, against the
 * direct paths of ops_conv.c). 4×4 tiles, whose transforms keep 8 or 16
 * channels in vector lanes: forward 1.3–3.8× and backward (dX as a
 * convolution, dW by the adjoint) 1.1–2.9× from 16 channels on, every
 * image size of ResNet-18; forward from 12 channels (13: 1.25–1.70× on
 * 32×32 down to 7×7 images, 12: 1.1–1.6× but for one size; 10: 0.93–1.5×),
 * while backward with 12–13 channels came out even (0.7–1.4×), so it keeps
 * 16. 2×2 tiles (UNLEARN_WINOGRAD_F4=0): forward from
 * 32 channels (16: slower than direct); backward (dX and dW in one pass)
 * from 32 channels on 32×32 images, from 64 on images of 12×12 and more and
 * from 128 on smaller ones, below which the transforms and transposes cost
 * about as much as the products they save. Shapes the direct path for few
 * channels takes (ul_conv_small_ok: up to 15 channels both ways, say)
 * stay off the path unless UNLEARN_WINOGRAD=all or a test forces it, or
 * (UL_WINO4_MIN_C_WIDE) the forward products have the AVX-512 kernel. */
#define UL_WINO4_MIN_C_FWD 12
#define UL_WINO4_MIN_C_BWD 16
/* With the AVX-512 kernel for the forward products (ul_pk_get_wide),
 * measured the same way on a 2-core AVX-512 EPYC (best of 30): 4×4 tiles
 * run ahead of the direct path for few channels from 12 channels both
 * ways, forward (12 on 16×16 1.12×, 13 on 7×7 … 32×32 1.23–1.59×, 15 on
 * 16×16 1.54×) and backward (dX on the wide kernel, dW on the 16-lane one:
 * 12 on 16×16 1.34×, 13 1.05–1.37×, 15 1.66×); with 8 and 10 channels
 * they came out even (0.7–1.2×). So there the path takes 12–15 channels
 * both ways from the direct path, and backward starts at 12 as well. */
#define UL_WINO4_MIN_C_WIDE 12
#define UL_WINO_MIN_C_FWD 32
#define UL_WINO_MIN_C_BWD 64
#define UL_WINO_LARGE_HW 1024 /* from here on backward from half the channels */
#define UL_WINO_MIN_HW_BWD 144 /* from here on from UL_WINO_MIN_C_BWD; below, twice as many */

static int wino_default_tile(void);

enum { XI = 16 }; /* values of one transformed tile */
enum { WR = 16 }; /* lanes of an R panel: the path needs a kernel with NR = 16 */
/* The forward products with 4×4 tiles may take the AVX-512 kernel instead
 * (ul_pk_get_wide: R panels of 32 lanes, tiles computed transposed). */
enum { WR_MAX = 32 };

/* The transforms are elementwise adds along the tiles: their AVX2 builds
 * (UL_VEC_CLONES) do twice the work per instruction of the baseline SSE2
 * ones. */

/* The least number of input and output channels for the path, forward
 * and backward; 0 turns it off. UNLEARN_WINOGRAD=0 turns it off,
 * UNLEARN_WINOGRAD=all takes every 3×3 stride-1 pad-1 layer. */
static int wino_min(bool backward)
{
    static int mins[2] = {-1, -1};
    int m = __atomic_load_n(&mins[backward], __ATOMIC_RELAXED);
    if (m < 0) {
        const char *e = getenv("UNLEARN_WINOGRAD");
        const char *t = getenv(backward ? "UNLEARN_WINOGRAD_MIN_BWD" : "UNLEARN_WINOGRAD_MIN_FWD");
        m = t && atoi(t) > 0         ? atoi(t)
            : wino_default_tile() == 4 && ul_pk_get_wide() ? UL_WINO4_MIN_C_WIDE
            : wino_default_tile() == 4 ? (backward ? UL_WINO4_MIN_C_BWD : UL_WINO4_MIN_C_FWD)
            : backward                 ? UL_WINO_MIN_C_BWD
                                       : UL_WINO_MIN_C_FWD;
        if (e && strcmp(e, "0") == 0)
            m = 0;
        else if (e && strcmp(e, "all") == 0)
            m = 1;
        __atomic_store_n(&mins[backward], m, __ATOMIC_RELAXED);
    }
    return m;
}

static int wino_forced;

/* A shape of the direct path for few channels that 4×4 tiles on the wide
 * kernel take instead (UL_WINO4_MIN_C_WIDE). */
static bool wino_few_wide(const ul_conv_shape *s)
{
    return wino_default_tile() == 4 && ul_pk_get_wide() && s->C >= UL_WINO4_MIN_C_WIDE &&
           s->K >= UL_WINO4_MIN_C_WIDE;
}

void ul_wino_force(int mode) { __atomic_store_n(&wino_forced, mode, __ATOMIC_RELAXED); }
bool ul_wino_forced(void) { return __atomic_load_n(&wino_forced, __ATOMIC_RELAXED) > 0; }

bool ul_wino_ok(const ul_conv_shape *s, bool backward)
{
    if (s->R != 3 || s->S != 3 || s->stride != 1 || s->pad != 1)
        return false;
    const int mode = __atomic_load_n(&wino_forced, __ATOMIC_RELAXED);
    if (mode < 0 || (mode == 3 && backward))
        return false;
    const bool forced = mode > 0;
    const int m = forced ? 1 : wino_min(backward);
    /* The direct path for few channels is ahead where it applies, unless
     * UNLEARN_WINOGRAD=all, or the wide kernel takes the forward products
     * and both sides have UL_WINO4_MIN_C_WIDE channels. */
    if (m == 0 || (m > 1 && ul_conv_small_ok(s) && !wino_few_wide(s)))
        return false;
    int need = m;
    if (backward && !forced && m > 1 && wino_default_tile() == 2) {
        /* The channel count the image size asks for (2×2 tiles), scaled
         * with a moved threshold (UNLEARN_WINOGRAD_MIN_BWD). */
        const int hw = s->H * s->W;
        need = hw >= UL_WINO_LARGE_HW ? m / 2 : hw >= UL_WINO_MIN_HW_BWD ? m : 2 * m;
    }
    if (s->C < need || s->K < need)
        return false;
    const ul_pk *pk = ul_pk_get_native();
    return pk && ul_pk_native(pk) && pk->wr == WR && pk->wl <= 16;
}

/* The tile side the thresholds use: 4 unless UNLEARN_WINOGRAD_F4=0. */
static int wino_default_tile(void)
{
    static int tile = -1;
    int t = __atomic_load_n(&tile, __ATOMIC_RELAXED);
    if (t < 0) {
        const char *e = getenv("UNLEARN_WINOGRAD_F4");
        t = e && strcmp(e, "0") == 0 ? 2 : 4;
        __atomic_store_n(&tile, t, __ATOMIC_RELAXED);
    }
    return t;
}

/* 4×4 tiles keep 8 channels in vector lanes where their L panels have at
 * most 8 lanes (the micro-kernel's MR); with more, 2×2 tiles. */
static int wino_fit(int m) { return m == 4 && ul_pk_get_native()->wl > 8 ? 2 : m; }

/* The kernel of a forward pass (and of dX as one) with tile side m: the
 * AVX-512 one where there is one, with 4×4 tiles (their transforms and
 * products take any panel width; the 2×2 tiles' take 16 lanes), else the
 * native 16-lane one. On a 2-core AVX-512 EPYC the skx kernel ran the
 * products' shapes (K × 256 tiles × C, C = K = 16 … 512, one thread)
 * at 88–202 GFLOP/s against 48–102 for the AVX2 kernel. */
static const ul_pk *wino_fwd_pk(int m)
{
    const ul_pk *wide = m == 4 ? ul_pk_get_wide() : NULL;
    return wide ? wide : ul_pk_get_native();
}

int ul_wino_tile(const ul_conv_shape *s)
{
    if (!ul_wino_ok(s, false))
        return 0;
    const int mode = __atomic_load_n(&wino_forced, __ATOMIC_RELAXED);
    return wino_fit(mode > 0 ? (mode >= 2 ? 4 : 2) : wino_default_tile());
}

int ul_wino_dw_tile(const ul_conv_shape *s)
{
    if (!ul_wino_ok(s, true))
        return 0;
    const int mode = __atomic_load_n(&wino_forced, __ATOMIC_RELAXED);
    return wino_fit(mode > 0 ? (mode == 4 ? 4 : 2) : wino_default_tile());
}

/* The shape of the convolution that gives the input gradient of s: the
 * output gradient's K channels in, C out, same image size. */
static ul_conv_shape wino_dx_shape(const ul_conv_shape *s)
{
    ul_conv_shape d = *s;
    d.C = s->K;
    d.K = s->C;
    return d;
}

bool ul_wino_dx_ok(const ul_conv_shape *s)
{
    if (s->R != 3 || s->S != 3 || s->stride != 1 || s->pad != 1)
        return false;
    const ul_conv_shape d = wino_dx_shape(s);
    if (ul_wino_tile(&d) != 4)
        return false;
    /* dX is a forward convolution of dY, but part of the backward pass:
     * it keeps the backward threshold, unless a test forces the path. */
    const int mode = __atomic_load_n(&wino_forced, __ATOMIC_RELAXED);
    const int m = mode > 0 ? 1 : wino_min(true);
    return m > 0 && s->C >= m && s->K >= m;
}

/* ---- geometry and scratch ------------------------------------------------------ */

static size_t rnd(size_t x, size_t m) { return (x + m - 1) / m * m; }

typedef struct {
    int TW, tpi; /* tiles per row, per image */
    int T;       /* tiles of all s->N images */
    int ntf, ntb;
} wino_geom;

/* Tiles per block. Forward: the transformed inputs and the products of a
 * block, 16·(C + K)·ntf floats, stay within 256 KiB (half a Zen 3 core's
 * L2). Backward: the weight-gradient products
 * take the block as their depth, and their results (16·C·K) are read and
 * written once per block, so blocks are deeper. */
static int wino_ntf(const ul_conv_shape *s, int wr, int xi)
{
    int nt = (1 << 16) / (xi * (s->C + s->K)) / wr * wr;
    return nt < wr ? wr : nt > 256 ? 256 : nt;
}

static int wino_ntb(const ul_conv_shape *s, int wr)
{
    const int ch = s->C > s->K ? s->C : s->K;
    return (int)rnd(ch <= 128 ? 256 : 128, (size_t)wr);
}

/* The number of values of a transformed tile of side m: (m + 2)². */
static int wino_xi(int m) { return (m + 2) * (m + 2); }

/* Floats of a row cache for segments of up to ld tiles: m + 2 rows of
 * m + 2 transformed arrays, and as many zeros. */
static size_t wino_rows_floats(int ld, int m) { return (size_t)(m + 3) * (m + 2) * ld; }

/* Floats of wino4_in_block8's buffers for rows of up to tw tiles: six
 * input rows of 4·tw + 2 columns, 8 channels each, and a panel's tiles
 * (up to 32) of 36 values, 8 channels each. */
static size_t wino4_c8_floats(int tw) { return (size_t)6 * (4 * tw + 2) * 8 + 36 * WR_MAX * 8; }

static wino_geom wino_geometry(const ul_conv_shape *s, const ul_pk *pk, int m)
{
    wino_geom g;
    const int TH = (s->H + m - 1) / m;
    g.TW = (s->W + m - 1) / m;
    g.tpi = TH * g.TW;
    g.T = s->N * g.tpi;
    g.ntf = wino_ntf(s, pk->wr, wino_xi(m));
    g.ntb = wino_ntb(s, pk->wr);
    return g;
}

/* Offsets (floats) of the scratch parts, each 64-byte aligned. Forward:
 * up (packed U), vp (V as R panels), mb (M, 16·K·ntf, panel-ordered as
 * wino_products writes it). Backward: ut (packed Uᵀ), r1 (dM as R panels,
 * depth K), dv (dV, 16·C·ntb, panel-ordered), vl (V as L panels, depth
 * tiles), r2 (dM as R panels, depth tiles), du (dUᵀ, C × K per ξ). */
typedef struct {
    size_t up, vp, mb, fwd;
    size_t ut, r1, dv, vl, r2, du, bwd;
    size_t rows; /* the transforms' row buffers, after either set */
    size_t st;   /* backward staging: 16 channels × 16 ξ × ntb tiles */
    /* per-ξ strides */
    size_t up_x, vp_x, mb_x, ut_x, r1_x, dv_x, vl_x, r2_x, du_x;
} wino_layout;

static size_t a16(size_t n) { return rnd(n, 16); }

/* The distance between R panels of depth kd and wr lanes: kd·wr floats,
 * plus one cache line when that is a multiple of 1 KiB, for the same
 * reason as xi_stride: a transform writes one row of every panel. */
static size_t panel_stride(size_t kd, size_t wr)
{
    const size_t n = kd * wr;
    return n % 256 == 0 ? n + 16 : n;
}

/* A per-ξ stride: 64-byte aligned, and never a multiple of 1 KiB, so that
 * the 16 arrays a transform reads or writes at once fall in different
 * cache sets (at multiples of 4 KiB they would all compete for one set's
 * eight ways). */
static size_t xi_stride(size_t n)
{
    n = a16(n);
    return n % 256 == 0 ? n + 16 : n;
}

/* The layout for tile side m. The backward pass shares the space from 0
 * with the forward one. */
static wino_layout wino_scratch_layout(const ul_conv_shape *s, const ul_pk *pk, int m)
{
    const size_t C = (size_t)s->C, K = (size_t)s->K, wl = (size_t)pk->wl, wr = (size_t)pk->wr;
    const size_t xi = (size_t)wino_xi(m);
    const size_t ntf = (size_t)wino_ntf(s, pk->wr, (int)xi), ntb = (size_t)wino_ntb(s, pk->wr);
    wino_layout L = {0};
    L.up_x = xi_stride(rnd(K, wl) * C);
    L.vp_x = xi_stride(ntf / wr * panel_stride(C, wr));
    L.mb_x = a16(K * ntf);
    L.up = 0;
    L.vp = L.up + xi * L.up_x;
    L.mb = L.vp + xi * L.vp_x;
    L.fwd = L.mb + xi * L.mb_x;
    /* The backward pass: with 4×4 tiles it computes dW only (no ut, r1,
     * dv). */
    const bool dx = m == 2;
    L.ut_x = dx ? xi_stride(rnd(C, wl) * K) : 0;
    L.r1_x = dx ? xi_stride(ntb / wr * panel_stride(K, wr)) : 0;
    L.dv_x = dx ? a16(C * ntb) : 0;
    L.vl_x = xi_stride(rnd(C, wl) * ntb);
    L.r2_x = xi_stride(rnd(K, wr) * ntb);
    L.du_x = xi_stride(C * K);
    L.ut = 0;
    L.r1 = L.ut + xi * L.ut_x;
    L.dv = L.r1 + xi * L.r1_x;
    L.vl = L.dv + xi * L.dv_x;
    L.r2 = L.vl + xi * L.vl_x;
    L.du = L.r2 + xi * L.r2_x;
    L.bwd = L.du + xi * L.du_x;
    /* Then seg (xi·TW), the row cache (wino_rows_floats) and tmp: an output
     * panel and its values in pixel order (2·m²·wr), the output gradient's
     * rows split by column (m²·TW), or for 2×2 tiles the backward pass's
     * transformed panel (16·16) and two rows of TW + 1, or its own row
     * cache. With 4×4 tiles the vector-lane
     * transforms' buffers (wino4_c8_floats) take the same place. */
    const size_t tw = (size_t)(s->W + m - 1) / (size_t)m, hb = wino_rows_floats((int)tw, m);
    size_t tmp = 2 * m * m * wr > m * m * tw ? 2 * m * m * wr : m * m * tw;
    if (m == 2) {
        const size_t tp = XI * WR + 2 * (tw + 1);
        tmp = tp > hb ? tp : hb;
    }
    L.rows = L.fwd > L.bwd ? L.fwd : L.bwd;
    const size_t rows = xi * tw + hb + tmp, c8 = m == 4 ? wino4_c8_floats((int)tw) : 0;
    L.fwd = L.bwd = L.rows + a16(rows > c8 ? rows : c8);
    /* The backward staging of 2×2 tiles: 16 channels × xi values × ntb
     * tiles (4×4 tiles go straight to their panels). */
    L.st = L.bwd;
    L.bwd = L.st + (m == 2 ? a16(WR * xi * ntb) : 0);
    return L;
}

size_t ul_wino_scratch(const ul_conv_shape *s)
{
    const ul_pk *pk = ul_pk_get_native();
    if (!pk)
        return 0;
    const wino_layout L = wino_scratch_layout(s, pk, 2);
    size_t n = L.fwd > L.bwd ? L.fwd : L.bwd;
    if (ul_wino_tile(s) == 4) {
        const size_t f = wino_scratch_layout(s, wino_fwd_pk(4), 4).fwd;
        n = f > n ? f : n;
    }
    if (ul_wino_dw_tile(s) == 4) {
        const size_t b = wino_scratch_layout(s, pk, 4).bwd;
        n = b > n ? b : n;
    }
    if (ul_wino_dx_ok(s)) {
        const ul_conv_shape d = wino_dx_shape(s);
        const size_t f = wino_scratch_layout(&d, wino_fwd_pk(4), 4).fwd;
        n = f > n ? f : n;
    }
    return n;
}

/* ---- the transforms --------------------------------------------------------------- */

/* Gᵀ applied to m + 2 values (tile side m): three. */
static inline __attribute__((always_inline)) void wino_gt(int m, const float *u, float *g)
{
    if (m == 2) {
        g[0] = u[0] + 0.5f * (u[1] + u[2]);
        g[1] = 0.5f * (u[1] - u[2]);
        g[2] = 0.5f * (u[1] + u[2]) + u[3];
    } else {
        const float s12 = u[1] + u[2], s34 = u[3] + u[4];
        g[0] = 0.25f * u[0] - s12 * (1.0f / 6.0f) + s34 * (1.0f / 24.0f);
        g[1] = (u[2] - u[1]) * (1.0f / 6.0f) + (u[3] - u[4]) * (1.0f / 12.0f);
        g[2] = (s34 - s12) * (1.0f / 6.0f) + u[5];
    }
}

/* dW[k][c] += Gᵀ·dU·G for every kernel (tile side m), from
 * du[ξ·du_x + c·K + k] (dUᵀ), 16 output channels k side by side. */
static inline __attribute__((always_inline)) void
wino_grad_kernels_m(float *dw, const float *du, size_t du_x, int K, int C, const int m)
{
    enum { LN = 16 };
    const int n = m + 2;
    for (int c = 0; c < C; c++)
        for (int k0 = 0; k0 < K; k0 += LN) {
            const int kn = K - k0 < LN ? K - k0 : LN;
            float u[36][LN], t[3][6][LN], g[9][LN];
            for (int x = 0; x < n * n; x++) {
                const float *src = du + x * du_x + (size_t)c * K + k0;
                /* n² streams, more than the hardware follows: each is
                 * fetched twelve lines ahead. */
                __builtin_prefetch(src + 12 * LN, 0, 3);
                if (kn == LN)
                    memcpy(u[x], src, sizeof u[x]);
                else
                    for (int l = 0; l < LN; l++)
                        u[x][l] = l < kn ? src[l] : 0.0f;
            }
            /* Gᵀ down each column j, then along the three rows. */
            for (int j = 0; j < n; j++)
                for (int l = 0; l < LN; l++) {
                    float v[6], r[3];
                    for (int i = 0; i < n; i++)
                        v[i] = u[i * n + j][l];
                    wino_gt(m, v, r);
                    for (int i = 0; i < 3; i++)
                        t[i][j][l] = r[i];
                }
            for (int i = 0; i < 3; i++)
                for (int l = 0; l < LN; l++) {
                    float v[6], r[3];
                    for (int j = 0; j < n; j++)
                        v[j] = t[i][j][l];
                    wino_gt(m, v, r);
                    for (int q = 0; q < 3; q++)
                        g[i * 3 + q][l] = r[q];
                }
            for (int l = 0; l < kn; l++) {
                float *d = dw + ((size_t)(k0 + l) * C + c) * 9;
                for (int r = 0; r < 9; r++)
                    d[r] += g[r][l];
            }
        }
}

UL_VEC_CLONES static void wino_grad_kernels(float *dw, const float *du, size_t du_x, int K, int C,
                                          int m)
{
    if (m == 4)
        wino_grad_kernels_m(dw, du, du_x, K, C, 4);
    else
        wino_grad_kernels_m(dw, du, du_x, K, C, 2);
}

/* The data transforms work on a segment of one tile row at a time: tiles
 * [tx0, tx0 + len) of tile row ty, each of the 16 values ξ as an array
 * over the segment (row stride ld), so that every loop runs along the
 * tiles with unit stride. */

/* The tiles of a segment whose patch columns m·tx − 1 .. m·tx + m lie
 * inside a row of width W: t in [*a, *b). The others reach into the
 * zero padding and take their values through wino_edge_vals. */
static void wino_inner_tiles(int m, int W, int tx0, int len, int *a, int *b)
{
    const int last = W - 1 - m >= 0 ? (W - 1 - m) / m : -1; /* last inner tile */
    int lo = tx0 == 0 ? 1 : 0, hi = last - tx0 + 1;
    lo = lo < len ? lo : len;
    hi = hi > len ? len : hi < lo ? lo : hi;
    *a = lo;
    *b = hi;
}

/* The n = m + 2 columns c0 .. c0 + n − 1 of an input row of width W, zero
 * outside it. */
static inline __attribute__((always_inline)) void wino_edge_vals(float *d, const float *row,
                                                                  int W, int c0, int n)
{
    for (int i = 0; i < n; i++)
        d[i] = (unsigned)(c0 + i) < (unsigned)W ? row[c0 + i] : 0.0f;
}

/* Horizontal half of Bᵀ·d·B for input row h (inside the image): for tile
 * tx, with a..d the row's columns 2·tx − 1 .. 2·tx + 2 (zero outside the
 * image), hr[j·ld + t] = (a − c, b + c, c − b, b − d)[j]. */
#define WINO2_HROW(d, t)                                                                       \
    do {                                                                                       \
        const float a_ = (d)[0], b_ = (d)[1], c_ = (d)[2], e_ = (d)[3];                        \
        h0[t] = a_ - c_;                                                                       \
        h1[t] = b_ + c_;                                                                       \
        h2[t] = c_ - b_;                                                                       \
        h3[t] = b_ - e_;                                                                       \
    } while (0)

UL_VEC_CLONES static void wino_hrow(float *restrict hr, int ld, const float *x, int h, int W,
                                  int tx0, int len)
{
    float *restrict h0 = hr, *restrict h1 = hr + ld, *restrict h2 = hr + 2 * (size_t)ld,
                    *restrict h3 = hr + 3 * (size_t)ld;
    const float *restrict row = x + (size_t)h * W;
    int a, b;
    wino_inner_tiles(2, W, tx0, len, &a, &b);
    for (int e = 0; e < a + len - b; e++) { /* the edge tiles */
        const int t = e < a ? e : b + e - a;
        float d[4];
        wino_edge_vals(d, row, W, 2 * (tx0 + t) - 1, 4);
        WINO2_HROW(d, t);
    }
    const float *restrict xr = row + 2 * tx0 - 1;
    for (int t = a; t < b; t++)
        WINO2_HROW(xr + 2 * t, t);
}

/* The horizontal transforms of the m + 2 input rows of the last segment,
 * kept so that the next tile row of the same plane and columns computes
 * only its m new rows (tile rows overlap by two input rows). slot[i] is
 * row i's transform: own[i], or zero for a row outside the image. */
typedef struct {
    const float *plane;
    int m, ty, tx0, len;
    float *own[6];
    const float *slot[6], *zero;
} wino_rows;

/* hb holds wino_rows_floats(ld, m) floats. */
static void wino_rows_init(wino_rows *r, float *hb, int ld, int m)
{
    const size_t row = (size_t)(m + 2) * ld;
    r->plane = NULL;
    r->m = m;
    for (int i = 0; i < m + 2; i++)
        r->own[i] = hb + (size_t)i * row;
    r->zero = hb + (size_t)(m + 2) * row;
    memset(hb + (size_t)(m + 2) * row, 0, row * sizeof(float));
}

/* Whether the rows of the last segment continue into tile row ty of the
 * same plane and columns; if so, the two rows they share move to the
 * first slots and the first row still to compute is returned, else 0. */
static int wino_rows_reuse(wino_rows *rc, const float *x, int ty, int tx0, int len)
{
    const int n = rc->m + 2;
    int first = 0;
    if (rc->plane == x && rc->ty + 1 == ty && rc->tx0 == tx0 && rc->len == len) {
        float *own[6];
        const float *slot[6];
        for (int i = 0; i < n; i++)
            own[i] = rc->own[i], slot[i] = rc->slot[i];
        for (int i = 0; i < n; i++) {
            rc->own[i] = own[(i + n - 2) % n];
            rc->slot[i] = slot[(i + n - 2) % n];
        }
        first = 2;
    }
    rc->plane = x;
    rc->ty = ty;
    rc->tx0 = tx0;
    rc->len = len;
    return first;
}

/* V = Bᵀ·d·B for the segment: v[ξ·vs + t]. ld ≥ len is the row buffers'
 * stride. */
UL_VEC_CLONES static void wino_in_rows(float *restrict v, size_t vs, int ld, const float *x, int H,
                                     int W, int ty, int tx0, int len, wino_rows *rc)
{
    for (int r = wino_rows_reuse(rc, x, ty, tx0, len); r < 4; r++) {
        const int h = 2 * ty - 1 + r;
        rc->slot[r] = h < 0 || h >= H ? rc->zero : rc->own[r];
        if (rc->slot[r] != rc->zero)
            wino_hrow(rc->own[r], ld, x, h, W, tx0, len);
    }
    for (int j = 0; j < 4; j++) {
        const float *restrict d0 = rc->slot[0] + (size_t)j * ld,
                              *restrict d1 = rc->slot[1] + (size_t)j * ld,
                              *restrict d2 = rc->slot[2] + (size_t)j * ld,
                              *restrict d3 = rc->slot[3] + (size_t)j * ld;
        float *restrict v0 = v + j * vs, *restrict v1 = v0 + 4 * vs, *restrict v2 = v0 + 8 * vs,
                        *restrict v3 = v0 + 12 * vs;
        for (int t = 0; t < len; t++) {
            v0[t] = d0[t] - d2[t];
            v1[t] = d1[t] + d2[t];
            v2[t] = d2[t] - d1[t];
            v3[t] = d1[t] - d3[t];
        }
    }
}

/* Y = Aᵀ·M·A for the 16 tiles of a panel, m[ξ·16 + lane]: y[q·16 + lane]
 * for the tile's values q = (0,0), (0,1), (1,0), (1,1). */
UL_VEC_CLONES static void wino_out_panel(float *restrict y, const float *restrict m)
{
    for (int l = 0; l < WR; l++) {
        /* Rows of Aᵀ·M, then columns. */
        float a[4], b[4];
        for (int j = 0; j < 4; j++) {
            a[j] = m[j * WR + l] + m[(4 + j) * WR + l] + m[(8 + j) * WR + l];
            b[j] = m[(4 + j) * WR + l] - m[(8 + j) * WR + l] - m[(12 + j) * WR + l];
        }
        y[0 * WR + l] = a[0] + a[1] + a[2];
        y[1 * WR + l] = a[1] - a[2] - a[3];
        y[2 * WR + l] = b[0] + b[1] + b[2];
        y[3 * WR + l] = b[1] - b[2] - b[3];
    }
}

/* Writes the 2×2 tiles of a segment (y[q·16 + t], t < len) + bias into
 * rows 2·ty and 2·ty + 1 of the output plane, clipped at odd edges. */
static void wino_store_rows(float *out, int H, int W, int ty, int tx0, int len,
                            const float *restrict y, float bias)
{
    for (int i = 0; i < 2; i++) {
        const int h = 2 * ty + i;
        if (h >= H)
            break;
        float *restrict row = out + (size_t)h * W + 2 * tx0;
        const float *restrict l = y + 2 * i * WR, *restrict r = l + WR;
        /* The last tile of a row of odd width has one column. */
        const int full = 2 * (tx0 + len) <= W ? len : len - 1;
        for (int t = 0; t < full; t++) {
            row[2 * t] = l[t] + bias;
            row[2 * t + 1] = r[t] + bias;
        }
        if (full < len)
            row[2 * full] = l[full] + bias;
    }
}

/* Y = Aᵀ·M·A for the LN tiles of a panel, m[ξ·LN + lane]: y[q·LN + lane],
 * q = 4·row + column of the tile's 4×4 values. */
static inline __attribute__((always_inline)) void
wino4_out_panel_n(float *restrict y, const float *restrict m, const int LN)
{
    float t[4][6][LN];
    for (int j = 0; j < 6; j++)
        for (int l = 0; l < LN; l++)
            WINO4_AT(m[j * LN + l], m[(6 + j) * LN + l], m[(12 + j) * LN + l],
                     m[(18 + j) * LN + l], m[(24 + j) * LN + l], m[(30 + j) * LN + l], t[0][j][l],
                     t[1][j][l], t[2][j][l], t[3][j][l]);
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < LN; l++)
            WINO4_AT(t[i][0][l], t[i][1][l], t[i][2][l], t[i][3][l], t[i][4][l], t[i][5][l],
                     y[(4 * i) * LN + l], y[(4 * i + 1) * LN + l], y[(4 * i + 2) * LN + l],
                     y[(4 * i + 3) * LN + l]);
}

UL_VEC_CLONES static void wino4_out_panel(float *restrict y, const float *restrict m)
{
    wino4_out_panel_n(y, m, WR);
}

UL_VEC_CLONES static void wino4_out_panel32(float *restrict y, const float *restrict m)
{
    wino4_out_panel_n(y, m, WR_MAX);
}

/* Y's values in pixel order: z[i·4·wr + 4·lane + j] = y[(4·i + j)·wr +
 * lane] + bias, row i of every tile of the panel with its four columns
 * next to each other, so that a segment's output rows are plain copies of
 * z (wino4_store_rows). Eight lanes at a time (wr is a multiple of 8):
 * the 4 × 8 values of rows y0..y3 are transposed into 8 × 4 by pairs of
 * lanes, then pairs of pairs, then halves. */
typedef float wino_v8 __attribute__((vector_size(32), aligned(4)));
UL_VEC_CLONES static void wino4_interleave(float *restrict z, const float *restrict y, int wr,
                                         float bias, bool relu)
{
    typedef int wino_i8 __attribute__((vector_size(32), aligned(4)));
    const wino_v8 zero = {0};
    for (int i = 0; i < 4; i++) {
        const float *restrict y0 = y + 4 * i * wr, *restrict y1 = y0 + wr,
                              *restrict y2 = y1 + wr, *restrict y3 = y2 + wr;
        float *restrict zi = z + (size_t)4 * i * wr;
        for (int l = 0; l < wr; l += 8) {
            wino_v8 a = *(const wino_v8 *)(y0 + l) + bias,
                    b = *(const wino_v8 *)(y1 + l) + bias,
                    c = *(const wino_v8 *)(y2 + l) + bias,
                    d = *(const wino_v8 *)(y3 + l) + bias;
            if (relu) {
                /* max(0, v), a NaN kept (as net_relu1). */
                a = (wino_v8)((wino_i8)a & ~(wino_i8)(a < zero));
                b = (wino_v8)((wino_i8)b & ~(wino_i8)(b < zero));
                c = (wino_v8)((wino_i8)c & ~(wino_i8)(c < zero));
                d = (wino_v8)((wino_i8)d & ~(wino_i8)(d < zero));
            }
            /* a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | a6 b6 a7 b7. */
            const wino_v8 ab0 = __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13),
                          ab1 = __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15),
                          cd0 = __builtin_shufflevector(c, d, 0, 8, 1, 9, 4, 12, 5, 13),
                          cd1 = __builtin_shufflevector(c, d, 2, 10, 3, 11, 6, 14, 7, 15);
            /* Tile t's four values, t and t + 4 in one vector. */
            const wino_v8 r0 = __builtin_shufflevector(ab0, cd0, 0, 1, 8, 9, 4, 5, 12, 13),
                          r1 = __builtin_shufflevector(ab0, cd0, 2, 3, 10, 11, 6, 7, 14, 15),
                          r2 = __builtin_shufflevector(ab1, cd1, 0, 1, 8, 9, 4, 5, 12, 13),
                          r3 = __builtin_shufflevector(ab1, cd1, 2, 3, 10, 11, 6, 7, 14, 15);
            float *restrict o = zi + 4 * l;
            *(wino_v8 *)o = __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 8, 9, 10, 11);
            *(wino_v8 *)(o + 8) = __builtin_shufflevector(r2, r3, 0, 1, 2, 3, 8, 9, 10, 11);
            *(wino_v8 *)(o + 16) = __builtin_shufflevector(r0, r1, 4, 5, 6, 7, 12, 13, 14, 15);
            *(wino_v8 *)(o + 24) = __builtin_shufflevector(r2, r3, 4, 5, 6, 7, 12, 13, 14, 15);
        }
    }
}

/* Writes (or with add, adds) the 4×4 tiles of a segment into rows
 * 4·ty .. 4·ty + 3 of the output plane, clipped at the edges: row i is
 * z[i·zs + x] for the segment's columns x (wino4_interleave's order, from
 * the segment's first tile). */
static void wino4_store_rows(float *out, int H, int W, int ty, int tx0, int len,
                             const float *restrict z, size_t zs, bool add)
{
    const int n = 4 * len < W - 4 * tx0 ? 4 * len : W - 4 * tx0;
    for (int i = 0; i < 4; i++) {
        const int h = 4 * ty + i;
        if (h >= H)
            break;
        float *restrict row = out + (size_t)h * W + 4 * tx0;
        const float *restrict zi = z + i * zs;
        if (add)
            for (int x = 0; x < n; x++)
                row[x] += zi[x];
        else
            ul_copy_floats(row, zi, n);
    }
}

/* A applied to four values (A = (Aᵀ)ᵀ, 6×4). */
#define WINO4_A(y0, y1, y2, y3, o0, o1, o2, o3, o4, o5)                                           \
    do {                                                                                       \
        const __typeof__(y0) e_ = (y0) + (y2), o_ = (y1) + (y3);                               \
        const __typeof__(y0) e4_ = (y0) + 4.0f * (y2), o4_ = 2.0f * (y1) + 8.0f * (y3);        \
        (o0) = (y0);                                                                           \
        (o1) = e_ + o_;                                                                        \
        (o2) = e_ - o_;                                                                        \
        (o3) = e4_ + o4_;                                                                      \
        (o4) = e4_ - o4_;                                                                      \
        (o5) = (y3);                                                                           \
    } while (0)

/* dM = A·dY·Aᵀ for the segment of output plane dy: m[ξ·ld + t]; tmp
 * holds 4·len floats. */
UL_VEC_CLONES static void wino_out_adj_rows(float *restrict m, int ld, const float *dy, int H,
                                          int W, int ty, int tx0, int len, float *restrict tmp)
{
    float *restrict e0 = tmp, *restrict o0 = tmp + len, *restrict e1 = tmp + 2 * (size_t)len,
                    *restrict o1 = tmp + 3 * (size_t)len;
    for (int i = 0; i < 2; i++) {
        float *restrict e = i ? e1 : e0, *restrict o = i ? o1 : o0;
        const int h = 2 * ty + i;
        if (h >= H) {
            memset(e, 0, (size_t)len * sizeof(float));
            memset(o, 0, (size_t)len * sizeof(float));
            continue;
        }
        const float *restrict row = dy + (size_t)h * W + 2 * tx0;
        const int full = 2 * (tx0 + len) <= W ? len : len - 1;
        for (int t = 0; t < full; t++) {
            e[t] = row[2 * t];
            o[t] = row[2 * t + 1];
        }
        if (full < len) {
            e[full] = row[2 * full];
            o[full] = 0.0f;
        }
    }
    for (int t = 0; t < len; t++) {
        /* A·dY (4×2), then times Aᵀ along the rows. */
        const float y00 = e0[t], y01 = o0[t], y10 = e1[t], y11 = o1[t];
        const float r[4][2] = {{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11},
                               {-y10, -y11}};
        for (int i = 0; i < 4; i++) {
            m[(size_t)(4 * i + 0) * ld + t] = r[i][0];
            m[(size_t)(4 * i + 1) * ld + t] = r[i][0] + r[i][1];
            m[(size_t)(4 * i + 2) * ld + t] = r[i][0] - r[i][1];
            m[(size_t)(4 * i + 3) * ld + t] = -r[i][1];
        }
    }
}

/* B·dV·Bᵀ for the 16 tiles of a panel, v[ξ·16 + lane]: d[ξ·16 + lane]. */
UL_VEC_CLONES static void wino_in_adj_panel(float *restrict d, const float *restrict v)
{
    float t[XI][WR];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < WR; l++) {
            const float v0 = v[j * WR + l], v1 = v[(4 + j) * WR + l];
            const float v2 = v[(8 + j) * WR + l], v3 = v[(12 + j) * WR + l];
            t[j][l] = v0;
            t[4 + j][l] = v1 - v2 + v3;
            t[8 + j][l] = v1 + v2 - v0;
            t[12 + j][l] = -v3;
        }
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < WR; l++) {
            const float t0 = t[4 * i][l], t1 = t[4 * i + 1][l];
            const float t2 = t[4 * i + 2][l], t3 = t[4 * i + 3][l];
            d[(4 * i + 0) * WR + l] = t0;
            d[(4 * i + 1) * WR + l] = t1 - t2 + t3;
            d[(4 * i + 2) * WR + l] = t1 + t2 - t0;
            d[(4 * i + 3) * WR + l] = -t3;
        }
}

/* Adds the 4×4 patches of a segment (d[ξ·16 + t], t < len) onto the input
 * plane dx. Tiles overlap by two columns: column 2·(tx0 + t) − 1 takes the
 * first value of tile t and the third of tile t − 1, column 2·(tx0 + t)
 * the second of t and the fourth of t − 1. ev and od hold len + 1 floats. */
static void wino_scatter_rows(float *dx, int H, int W, int ty, int tx0, int len,
                              const float *restrict d, float *restrict ev, float *restrict od)
{
    for (int i = 0; i < 4; i++) {
        const int h = 2 * ty - 1 + i;
        if (h < 0 || h >= H)
            continue;
        const float *restrict a = d + 4 * i * WR, *restrict b = a + WR, *restrict c = a + 2 * WR,
                              *restrict e = a + 3 * WR;
        ev[0] = a[0];
        od[0] = b[0];
        for (int t = 1; t < len; t++) {
            ev[t] = a[t] + c[t - 1];
            od[t] = b[t] + e[t - 1];
        }
        ev[len] = c[len - 1];
        od[len] = e[len - 1];
        /* Pairs t whose columns 2·(tx0 + t) − 1 and 2·(tx0 + t) are both
         * inside the row, then the edges. */
        float *restrict row = dx + (size_t)h * W;
        int lo = tx0 >= 1 ? 0 : 1 - tx0, hi = (W - 2) / 2 + 1 - tx0;
        hi = hi > len + 1 ? len + 1 : hi;
        lo = lo > hi ? hi : lo;
        float *restrict pair = row + 2 * (tx0 + lo) - 1;
        for (int t = lo; t < hi; t++) {
            pair[2 * (t - lo)] += ev[t];
            pair[2 * (t - lo) + 1] += od[t];
        }
        for (int t = 0; t <= len; t++) {
            if (t == lo)
                t = hi;
            if (t > len)
                break;
            const int col = 2 * (tx0 + t) - 1;
            if (col >= 0 && col < W)
                row[col] += ev[t];
            if (col + 1 >= 0 && col + 1 < W)
                row[col + 1] += od[t];
        }
    }
}

/* Copies len values into lanes [tl, tl + len) of row r of R panels that
 * lie ps floats apart: panel p at p·ps, element [r·wr + lane]. */
static void wino_put_lanes(float *dst, size_t ps, int wr, int r, int tl, const float *src,
                           int len)
{
    while (len > 0) {
        const int lane = tl % wr, chunk = len < wr - lane ? len : wr - lane;
        float *p = dst + (size_t)(tl / wr) * ps + (size_t)r * wr + lane;
        for (int t = 0; t < chunk; t++)
            p[t] = src[t];
        tl += chunk;
        src += chunk;
        len -= chunk;
    }
}

/* The weight-gradient products take the tiles as their depth, so their
 * operands have the channels along the lanes while the transforms produce
 * rows along the tiles: a transpose per 16 tiles (ul_transpose). */

/* A segment of a block: len tiles of tile row ty of image n from column
 * tx0, at block position tl. */
typedef struct {
    int n, ty, tx0, len, tl;
} wino_seg;

/* The next segment of block [t0, t0 + nb) starting at tile t. */
static wino_seg wino_seg_at(const wino_geom *g, int t, int t0, int nb)
{
    const int r = t % g->tpi, tx0 = r % g->TW, left = t0 + nb - t;
    return (wino_seg){t / g->tpi, r / g->TW, tx0, g->TW - tx0 < left ? g->TW - tx0 : left,
                      t - t0};
}

/* The end of the tiles of one image that start at tile t, within a
 * block ending at end. */
static int wino_image_end(const wino_geom *g, int t, int end)
{
    const int e = (t / g->tpi + 1) * g->tpi;
    return e < end ? e : end;
}

/* The input transforms with the channels along the vector lanes, 8 at a
 * time: a segment's six input rows are gathered channel-interleaved into
 * r8 (column k of row r at (r·cols + k)·8, zero outside the image and past
 * the channels taken), and each tile is transformed in 8-lane vectors:
 * Bᵀ along its six rows, then down its six columns, the same operations
 * in the same order for every lane (wino_v8 vectors). */

/* An 8 × 8 block transposed: dst[j·ds + i] = src[i·ss + j]. Pairs of
 * lanes, then pairs of pairs, then halves, as wino4_interleave; inlined
 * into the vector-lane loops, where ul_transpose's calls per block cost
 * as much as its shuffles. */
static inline __attribute__((always_inline)) void wino_tr8(const float *restrict src, size_t ss,
                                                           float *restrict dst, size_t ds)
{
    wino_v8 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++)
        r[i] = *(const wino_v8 *)(src + i * ss);
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int k = 0; k < 2; k++) {
            u[i + 2 * k] =
                __builtin_shufflevector(t[i + k], t[i + 2 + k], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 2 * k + 1] =
                __builtin_shufflevector(t[i + k], t[i + 2 + k], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    /* u[i] holds columns i and i + 4 of rows 0-3, u[4 + i] of rows 4-7. */
    for (int j = 0; j < 4; j++) {
        *(wino_v8 *)(dst + j * ds) =
            __builtin_shufflevector(u[j], u[4 + j], 0, 1, 2, 3, 8, 9, 10, 11);
        *(wino_v8 *)(dst + (j + 4) * ds) =
            __builtin_shufflevector(u[j], u[4 + j], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* Gathers rows row0 .. row0 + nrows − 1, columns col0 .. col0 + ncol − 1
 * of cn channels of plane x (the first channel's, planes HW apart). */
static inline __attribute__((always_inline)) void
wino_gather8(float *r8, size_t cols, const float *x, size_t HW, int H, int W, int row0,
             int nrows, int col0, int ncol, int cn)
{
    /* Columns [klo, khi) of the segment lie inside the image. */
    const int klo = col0 < 0 ? -col0 : 0, khi = W - col0 < ncol ? W - col0 : ncol;
    for (int r = 0; r < nrows; r++) {
        const int h = row0 + r;
        const bool inside = h >= 0 && h < H;
        float *rr = r8 + (size_t)r * cols * 8;
        /* Zero outside the image, and in the lanes past cn. */
        const bool all = !inside || cn < 8;
        for (int k = 0; k < (all ? ncol : klo); k++)
            *(wino_v8 *)(rr + k * 8) = (wino_v8){0};
        for (int k = all ? ncol : khi; k < ncol; k++)
            *(wino_v8 *)(rr + k * 8) = (wino_v8){0};
        if (inside && cn == 8 && khi - klo >= 8) {
            /* Blocks of 8 columns, the last one ending at khi (it may
             * overlap the one before: the same values again). */
            const float *xr = x + (size_t)h * W + col0;
            for (int k = klo;; k += 8) {
                const int k8 = k + 8 <= khi ? k : khi - 8;
                wino_tr8(xr + k8, HW, rr + (size_t)k8 * 8, 8);
                if (k8 + 8 >= khi)
                    break;
            }
        } else if (inside) {
            ul_transpose(x + (size_t)h * W + col0 + klo, HW, rr + klo * 8, 8, cn, khi - klo);
        }
    }
}

/* Prefetches what wino_gather8 would read of cn planes at x (HW apart):
 * rows row0 .. row0 + nrows − 1, columns col0 .. col0 + ncol − 1, clipped
 * to the image, as one range per plane from the first row's first column
 * to the last row's last. */
static inline __attribute__((always_inline)) void
wino_prefetch8(const float *x, size_t HW, int H, int W, int row0, int nrows, int col0, int ncol,
               int cn)
{
    const int h0 = row0 < 0 ? 0 : row0, h1 = row0 + nrows > H ? H : row0 + nrows;
    const int k0 = col0 < 0 ? 0 : col0, k1 = col0 + ncol > W ? W : col0 + ncol;
    if (h0 >= h1 || k0 >= k1)
        return;
    for (int c = 0; c < cn; c++) {
        const char *p = (const char *)(x + (size_t)c * HW + (size_t)h0 * W + k0);
        const char *e = (const char *)(x + (size_t)c * HW + (size_t)(h1 - 1) * W + k1);
        for (p = (const char *)((uintptr_t)p & ~(uintptr_t)63); p < e; p += 64)
            __builtin_prefetch(p, 0, 3);
    }
}

/* The segment two segments of this length after segment sg (tile t),
 * when it lies in the block and in another image: its image's planes
 * are at a distance the hardware prefetcher does not follow (small
 * images: a segment per image, one image's planes each channel block
 * apart), so the gathers fetch them ahead. */
static inline __attribute__((always_inline)) bool
wino_seg_ahead(const wino_geom *g, const wino_seg *sg, int t, int t0, int nb, wino_seg *ahead)
{
    const int ta = t + 2 * sg->len;
    if (ta >= t0 + nb || ta / g->tpi == sg->n)
        return false;
    *ahead = wino_seg_at(g, ta, t0, nb);
    return true;
}

/* The six input rows of segment sg's patches. */
static inline __attribute__((always_inline)) void
wino4_gather8(float *r8, size_t cols, const float *x, size_t HW, int H, int W,
              const wino_seg *sg, int cn)
{
    wino_gather8(r8, cols, x, HW, H, W, 4 * sg->ty - 1, 6, 4 * sg->tx0 - 1, 4 * sg->len + 2, cn);
}

/* V = Bᵀ·d·B of tile i of the gathered segment: o[ξ·os], 8 channels
 * each, stored as the column transforms produce them. */
static inline __attribute__((always_inline)) void wino4_tile8(const float *r8, size_t cols, int i,
                                                               float *o, size_t os)
{
    wino_v8 e[6][6];
    for (int r = 0; r < 6; r++) {
        const float *d = r8 + ((size_t)r * cols + 4 * (size_t)i) * 8;
        const wino_v8 d0 = *(const wino_v8 *)d, d1 = *(const wino_v8 *)(d + 8),
                      d2 = *(const wino_v8 *)(d + 16), d3 = *(const wino_v8 *)(d + 24),
                      d4 = *(const wino_v8 *)(d + 32), d5 = *(const wino_v8 *)(d + 40);
        WINO4_BT(d0, d1, d2, d3, d4, d5, e[r][0], e[r][1], e[r][2], e[r][3], e[r][4], e[r][5]);
    }
#define WINO4_O(xi) (*(wino_v8 *)(o + (size_t)(xi) * os))
    for (int j = 0; j < 6; j++)
        WINO4_BT(e[0][j], e[1][j], e[2][j], e[3][j], e[4][j], e[5][j], WINO4_O(j), WINO4_O(6 + j),
                 WINO4_O(12 + j), WINO4_O(18 + j), WINO4_O(24 + j), WINO4_O(30 + j));
#undef WINO4_O
}

/* The forward input transform of tiles [t0, t0 + nb) into the R panels
 * of wr lanes, vp[ξ·vp_x + (tl/wr)·vps + c·wr + tl%wr]: a panel's wr
 * tiles gather in st8 (ξ, lane, channel) until one transpose per ξ puts
 * them in place. */
UL_VEC_CLONES static void wino4_in_block8(float *vp, size_t vp_x, size_t vps, int wr,
                                        const float *in, size_t in_img, int C, int H, int W,
                                        const wino_geom *g, int t0, int nb, float *buf)
{
    const size_t HW = (size_t)H * W, cols = (size_t)4 * g->TW + 2;
    float *r8 = buf, *st8 = buf + 6 * cols * 8;
    for (int c0 = 0; c0 < C; c0 += 8) {
        const int cn = C - c0 < 8 ? C - c0 : 8;
        for (int t = t0; t < t0 + nb;) {
            const wino_seg sg = wino_seg_at(g, t, t0, nb);
            wino4_gather8(r8, cols, in + sg.n * in_img + (size_t)c0 * HW, HW, H, W, &sg, cn);
            wino_seg sa;
            if (wino_seg_ahead(g, &sg, t, t0, nb, &sa))
                wino_prefetch8(in + sa.n * in_img + (size_t)c0 * HW, HW, H, W, 4 * sa.ty - 1, 6,
                               4 * sa.tx0 - 1, 4 * sa.len + 2, cn);
            for (int i = 0; i < sg.len; i++) {
                const int lane = (sg.tl + i) % wr;
                wino4_tile8(r8, cols, i, st8 + (size_t)lane * 8, (size_t)wr * 8);
                /* A panel complete, or the block's last tile: in place. */
                if (lane == wr - 1 || sg.tl + i == nb - 1) {
                    float *pd = vp + (size_t)((sg.tl + i) / wr) * vps + (size_t)c0 * wr;
                    if (cn == 8 && (lane + 1) % 8 == 0)
                        for (int xi = 0; xi < 36; xi++)
                            for (int l8 = 0; l8 <= lane; l8 += 8)
                                wino_tr8(st8 + ((size_t)xi * wr + l8) * 8, 8,
                                         pd + xi * vp_x + l8, (size_t)wr);
                    else
                        for (int xi = 0; xi < 36; xi++)
                            ul_transpose(st8 + (size_t)xi * wr * 8, 8, pd + xi * vp_x,
                                         (size_t)wr, lane + 1, cn);
                }
            }
            t += sg.len;
        }
    }
}

/* The weight gradient's input transform of tiles [t0, t0 + nb) into the L
 * panels, channels along their wl ≤ 8 lanes and the tiles along the depth,
 * vl[ξ·vl_x + (c/wl)·nt·wl + tl·wl + c%wl]: each tile's values go straight
 * to their place; channels past C are zero. */
UL_VEC_CLONES static void wino4_in_block_l(float *vl, size_t vl_x, int nt, int wl, const float *in,
                                         size_t in_img, int C, int H, int W,
                                         const wino_geom *g, int t0, int nb, float *buf)
{
    const size_t HW = (size_t)H * W, cols = (size_t)4 * g->TW + 2;
    for (int c0 = 0; c0 < C; c0 += wl) {
        const int cn = C - c0 < wl ? C - c0 : wl;
        for (int t = t0; t < t0 + nb;) {
            const wino_seg sg = wino_seg_at(g, t, t0, nb);
            wino4_gather8(buf, cols, in + sg.n * in_img + (size_t)c0 * HW, HW, H, W, &sg, cn);
            wino_seg sa;
            if (wino_seg_ahead(g, &sg, t, t0, nb, &sa))
                wino_prefetch8(in + sa.n * in_img + (size_t)c0 * HW, HW, H, W, 4 * sa.ty - 1, 6,
                               4 * sa.tx0 - 1, 4 * sa.len + 2, cn);
            for (int i = 0; i < sg.len; i++) {
                wino_v8 o[36];
                wino4_tile8(buf, cols, i, (float *)o, 8);
                float *d = vl + (size_t)c0 * nt + (size_t)(sg.tl + i) * wl;
                for (int xi = 0; xi < 36; xi++) {
                    float *dx = d + xi * vl_x;
                    if (wl == 6)
                        memcpy(dx, &o[xi], 6 * sizeof(float));
                    else
                        for (int l = 0; l < wl; l++)
                            dx[l] = o[xi][l];
                }
            }
            t += sg.len;
        }
    }
}

/* The weight gradient's dM = A·dY·Aᵀ of tiles [t0, t0 + nb) (4×4 tiles)
 * into the R panels of output channels, depth tiles, r2[ξ·r2_x +
 * (k/16)·nt·16 + tl·16 + k%16]: 16 channels at a time, two 8-lane vectors,
 * each tile's values straight to their place; channels past K are zero.
 * A down each column of the 4×4 tile, then along each of the six rows. */
UL_VEC_CLONES static void wino4_out_adj_block16(float *r2, size_t r2_x, int nt, const float *dout,
                                              size_t out_img, int K, int H, int W,
                                              const wino_geom *g, int t0, int nb, float *buf)
{
    const size_t HW = (size_t)H * W, cols = (size_t)4 * g->TW;
    float *r8[2] = {buf, buf + 4 * cols * 8};
    for (int k0 = 0; k0 < K; k0 += WR) {
        const int kn = K - k0 < WR ? K - k0 : WR;
        for (int t = t0; t < t0 + nb;) {
            const wino_seg sg = wino_seg_at(g, t, t0, nb);
            const float *dy = dout + sg.n * out_img + (size_t)k0 * HW;
            for (int h8 = 0; h8 < 2; h8++) {
                const int cn = kn - 8 * h8 < 8 ? kn - 8 * h8 : 8;
                if (cn > 0)
                    wino_gather8(r8[h8], cols, dy + 8 * h8 * HW, HW, H, W, 4 * sg.ty, 4,
                                 4 * sg.tx0, 4 * sg.len, cn);
            }
            wino_seg sa;
            if (wino_seg_ahead(g, &sg, t, t0, nb, &sa))
                wino_prefetch8(dout + sa.n * out_img + (size_t)k0 * HW, HW, H, W, 4 * sa.ty, 4,
                               4 * sa.tx0, 4 * sa.len, kn);
            for (int i = 0; i < sg.len; i++) {
                float *d = r2 + (size_t)k0 * nt + (size_t)(sg.tl + i) * WR;
                for (int h8 = 0; h8 < 2; h8++) {
                    wino_v8 c[6][4], o[6];
                    if (kn <= 8 * h8) {
                        for (int xi = 0; xi < 36; xi++)
                            *(wino_v8 *)(d + xi * r2_x + 8 * h8) = (wino_v8){0};
                        continue;
                    }
                    /* A·dY down each column j, then ·Aᵀ along each row. */
                    for (int j = 0; j < 4; j++) {
                        const float *y = r8[h8] + (4 * (size_t)i + j) * 8;
                        const size_t rs = cols * 8;
                        WINO4_A(*(const wino_v8 *)y, *(const wino_v8 *)(y + rs),
                                *(const wino_v8 *)(y + 2 * rs), *(const wino_v8 *)(y + 3 * rs),
                                c[0][j], c[1][j], c[2][j], c[3][j], c[4][j], c[5][j]);
                    }
                    for (int a = 0; a < 6; a++) {
                        WINO4_A(c[a][0], c[a][1], c[a][2], c[a][3], o[0], o[1], o[2], o[3], o[4],
                                o[5]);
                        for (int q = 0; q < 6; q++)
                            *(wino_v8 *)(d + (size_t)(6 * a + q) * r2_x + 8 * h8) = o[q];
                    }
                }
            }
            t += sg.len;
        }
    }
}

/* G·(g0, g1, g2) for tile side m: m + 2 values. */
static inline __attribute__((always_inline)) void wino_g(int m, float g0, float g1, float g2,
                                                          float *u)
{
    if (m == 2) {
        u[0] = g0;
        u[1] = 0.5f * (g0 + g1 + g2);
        u[2] = 0.5f * (g0 - g1 + g2);
        u[3] = g2;
    } else {
        const float e = g0 * (1.0f / 24.0f) + g2 * (1.0f / 6.0f), o = g1 * (1.0f / 12.0f);
        u[0] = 0.25f * g0;
        u[1] = -(g0 + g1 + g2) * (1.0f / 6.0f);
        u[2] = -(g0 - g1 + g2) * (1.0f / 6.0f);
        u[3] = e + o;
        u[4] = e - o;
        u[5] = g2;
    }
}

/* wino_pack_kernels for a constant tile side m and LN lanes (LN ≥ wl),
 * inlined into each of its callers' builds. */
static inline __attribute__((always_inline)) void
wino_pack_kernels_m(float *dst, size_t stride, const float *w, int K, int C, bool transposed,
                    bool flip, int wl, int o_lo, int o_hi, const int m, const int LN)
{
    const int Ko = transposed ? C : K, Ki = transposed ? K : C, n = m + 2;
    /* One panel row group at a time: the wl kernels of rows o0 .. o0+wl−1
     * at depth i, transformed side by side (lane l = row o0 + l, zero past
     * Ko) and stored as wl consecutive floats per ξ. */
    for (int o0 = o_lo; o0 < Ko && o0 < o_hi; o0 += wl) {
        const int on = Ko - o0 < wl ? Ko - o0 : wl;
        for (int i = 0; i < Ki; i++) {
            float g[9][16], t[6][3][16], u[6][6][16];
            for (int l = 0; l < LN; l++)
                for (int r = 0; r < 9; r++)
                    g[r][l] = 0.0f;
            for (int l = 0; l < on; l++) {
                const float *src =
                    w + 9 * (transposed ? (size_t)i * C + o0 + l : (size_t)(o0 + l) * C + i);
                for (int r = 0; r < 9; r++)
                    g[r][l] = src[flip ? 8 - r : r];
            }
            /* The kernels' reads and the n² destination streams, more
             * than the hardware prefetcher follows, are fetched ahead:
             * the weights of depth i + 8 and the destinations' values of
             * depth i + 16. */
            if (i + 8 < Ki) {
                if (transposed)
                    for (int b = 0; b < 9 * on; b += 16)
                        __builtin_prefetch(w + 9 * ((size_t)(i + 8) * C + o0) + b, 0, 3);
                else
                    for (int l = 0; l < on; l++)
                        __builtin_prefetch(w + 9 * ((size_t)(o0 + l) * C + i + 8), 0, 3);
            }
            if (i + 16 < Ki)
                for (int x = 0; x < n * n; x++)
                    __builtin_prefetch(dst + (size_t)x * stride + (size_t)o0 * Ki +
                                           (size_t)(i + 16) * wl,
                                       1, 3);
            /* G·g column by column, then ·Gᵀ row by row. */
            for (int j = 0; j < 3; j++)
                for (int l = 0; l < LN; l++) {
                    float v[6];
                    wino_g(m, g[j][l], g[3 + j][l], g[6 + j][l], v);
                    for (int r = 0; r < n; r++)
                        t[r][j][l] = v[r];
                }
            for (int r = 0; r < n; r++)
                for (int l = 0; l < LN; l++) {
                    float v[6];
                    wino_g(m, t[r][0][l], t[r][1][l], t[r][2][l], v);
                    for (int q = 0; q < n; q++)
                        u[r][q][l] = v[q];
                }
            float *d = dst + (size_t)o0 * Ki + (size_t)i * wl;
            for (int r = 0; r < n; r++)
                for (int q = 0; q < n; q++) {
                    float *dq = d + (size_t)(n * r + q) * stride;
                    if (wl == 6)
                        memcpy(dq, u[r][q], 6 * sizeof(float));
                    else
                        for (int l = 0; l < wl; l++)
                            dq[l] = u[r][q][l];
                }
        }
    }
}

/* Packs U[ξ] = G·g·Gᵀ (tile side m; rows o of Ko, depth i of Ki) as L
 * panels for every ξ: dst[ξ·stride + (o/wl)·Ki·wl + i·wl + o%wl].
 * Forward (Ko, Ki) = (K, C); with transposed, (Ko, Ki) = (C, K) and the
 * value is U[ξ][i][o]; with flip, of the kernel turned by 180°. Rows past
 * Ko are zero. wl ≤ 16. */
UL_VEC_CLONES static void wino_pack_kernels_rows(float *dst, size_t stride, const float *w,
                                               int K, int C, bool transposed, bool flip,
                                               int wl, int m, int o_lo, int o_hi)
{
    if (m == 4 && wl <= 8)
        wino_pack_kernels_m(dst, stride, w, K, C, transposed, flip, wl, o_lo, o_hi, 4, 8);
    else if (m == 4)
        wino_pack_kernels_m(dst, stride, w, K, C, transposed, flip, wl, o_lo, o_hi, 4, 16);
    else if (wl <= 8)
        wino_pack_kernels_m(dst, stride, w, K, C, transposed, flip, wl, o_lo, o_hi, 2, 8);
    else
        wino_pack_kernels_m(dst, stride, w, K, C, transposed, flip, wl, o_lo, o_hi, 2, 16);
}

/* All the rows. */
static void wino_pack_kernels(float *dst, size_t stride, const float *w, int K, int C,
                              bool transposed, bool flip, int wl, int m)
{
    wino_pack_kernels_rows(dst, stride, w, K, C, transposed, flip, wl, m, 0, transposed ? C : K);
}

/* U[ξ] of every kernel, 16 output channels to a row of lanes:
 * dst[ξ·Kp·C + (k/16)·C·16 + c·16 + k%16], Kp = K rounded up to 16, the
 * lanes past K zero (ops_conv_kwino.c's layout). */
void ul_wino4_pack_k16(float *dst, const float *w, int K, int C)
{
    ul_wino4_pack_k16_rows(dst, w, K, C, 0, K);
}

void ul_wino4_pack_k16_rows(float *dst, const float *w, int K, int C, int k0, int k1)
{
    const size_t kp = ((size_t)K + 15) / 16 * 16;
    wino_pack_kernels_rows(dst, kp * (size_t)C, w, K, C, false, false, 16, 4, k0, k1);
}

/* The packed kernels a forward pass reads: packed here into up, or with a
 * team, this thread's share of the row groups packed into the team's
 * buffer of this turn and, after a barrier, that buffer. */
static const float *wino_team_kernels(float *up, size_t up_x, const float *w, int K, int C,
                                      bool dx, int wl, int m, ul_wino_team *team)
{
    const int Ko = dx ? C : K;
    if (!team || team->T < 2) {
        wino_pack_kernels(up, up_x, w, K, C, dx, dx, wl, m);
        return up;
    }
    float *buf = team->buf[team->turn++ & 1u];
    const int groups = (Ko + wl - 1) / wl;
    const int g0 = (int)((long)groups * team->t / team->T);
    const int g1 = (int)((long)groups * (team->t + 1) / team->T);
    wino_pack_kernels_rows(buf, up_x, w, K, C, dx, dx, wl, m, g0 * wl, g1 * wl);
#pragma omp barrier
    return buf;
}

/* The nxi products of a block (16, or 36 for 4×4 tiles), O[ξ] (rows × nb)
 * = L[ξ] (rows × depth, packed L panels, lp[ξ·lp_x + ...]) · R[ξ] (depth ×
 * nb, R panels of wr tiles ps floats apart, r[ξ·r_x + ...]), stored panel
 * by panel as out[((p·rows + row)·nxi + ξ)·wr + lane]: one tile's values
 * of a row at fixed distances for the transform that follows. Lanes past
 * nb in the last R panel are zeroed first. */
static void wino_products(const ul_pk *pk, int nxi, int rows, int nb, int depth, const float *lp,
                          size_t lp_x, float *r, size_t r_x, size_t ps, float *out)
{
    const int wl = pk->wl, wr = pk->wr;
    if (nb % wr)
        for (int xi = 0; xi < nxi; xi++)
            for (int d = 0; d < depth; d++)
                for (int l = nb % wr; l < wr; l++)
                    r[xi * r_x + (size_t)(nb / wr) * ps + (size_t)d * wr + l] = 0.0f;
    for (int xi = 0; xi < nxi; xi++)
        for (int ip = 0; ip < rows; ip += wl) {
            const int mm = rows - ip < wl ? rows - ip : wl;
            for (int j = 0; j < nb; j += wr)
                ul_pk_tile(pk, mm, nb - j < wr ? nb - j : wr, depth,
                           lp + xi * lp_x + (size_t)ip * depth,
                           r + xi * r_x + (size_t)(j / wr) * ps, 0.0f,
                           out + (((size_t)(j / wr) * rows + ip) * nxi + xi) * wr,
                           nxi * wr);
        }
}

/* ---- forward ---------------------------------------------------------------------- */

/* The output statistics of a forward pass (wino_forward with st): per
 * output channel, Σ(x − k) and Σ(x − k)² over the stored values x, around
 * k, the channel's first value (image 0, position (0, 0)), which the first
 * panel stores before any sum needs it. msk[q·wr + lane] has all bits set
 * for the values q of the panel's tiles that lie inside the image, else
 * none: the others are and-ed away rather than multiplied by 0, since the
 * lanes past the last tile hold whatever the scratch held (an infinity
 * there times 0 would be NaN). */
typedef struct {
    double *s1, *s2;
    uint32_t msk[36 * WR_MAX];
    bool full; /* every value of the panel is inside the image */
} wino_stats;

static void wino_stats_mask(wino_stats *st, const wino_geom *g, int m, int wr, int H, int W,
                            int t, int nl)
{
    st->full = true;
    for (int l = 0; l < wr; l++, t++) {
        const int r = t % g->tpi, ty = r / g->TW, tx = r % g->TW;
        for (int q = 0; q < m * m; q++) {
            const int h = m * ty + q / m, x = m * tx + q % m;
            st->msk[q * wr + l] = l < nl && h < H && x < W ? UINT32_MAX : 0u;
            st->full = st->full && st->msk[q * wr + l] != 0u;
        }
    }
}

/* Adds one panel's values y[q·wr + lane] + bias (nq per tile) of channel
 * k, whose first value is k0, 16 lanes at a time: per lane in two 8-lane
 * vectors (written out: GCC's own vectorisation of the loop permuted every
 * load), then the 16 lanes' sums in double, in pairs. */
typedef float wino_sv8 __attribute__((vector_size(32), aligned(4)));
typedef uint32_t wino_su8 __attribute__((vector_size(32), aligned(4)));
typedef float wino_sf4 __attribute__((vector_size(16)));
typedef double wino_sd4 __attribute__((vector_size(32)));

/* The sixteen lanes of a and b in four doubles, summed in pairs. Always
 * inlined, so the note that its ABI differs without AVX does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
static inline __attribute__((always_inline)) wino_sd4 wino_sd4_of(wino_sv8 a, wino_sv8 b)
{
    const wino_sf4 a_lo = __builtin_shufflevector(a, a, 0, 1, 2, 3),
                   a_hi = __builtin_shufflevector(a, a, 4, 5, 6, 7),
                   b_lo = __builtin_shufflevector(b, b, 0, 1, 2, 3),
                   b_hi = __builtin_shufflevector(b, b, 4, 5, 6, 7);
    return (__builtin_convertvector(a_lo, wino_sd4) + __builtin_convertvector(a_hi, wino_sd4)) +
           (__builtin_convertvector(b_lo, wino_sd4) + __builtin_convertvector(b_hi, wino_sd4));
}

UL_VEC_CLONES static void wino_stats_add(wino_stats *st, int k, const float *restrict y, int wr,
                                       int nq, float bias, float k0)
{
    for (int g = 0; g < wr; g += 16) {
        wino_sv8 a0 = {0}, a1 = {0}, q0 = {0}, q1 = {0};
        for (int q = 0; q < nq; q++) {
            wino_sv8 d0 = *(const wino_sv8 *)(y + q * wr + g) + bias - k0;
            wino_sv8 d1 = *(const wino_sv8 *)(y + q * wr + g + 8) + bias - k0;
            if (!st->full) {
                d0 = (wino_sv8)((wino_su8)d0 & *(const wino_su8 *)(st->msk + q * wr + g));
                d1 = (wino_sv8)((wino_su8)d1 & *(const wino_su8 *)(st->msk + q * wr + g + 8));
            }
            a0 += d0;
            a1 += d1;
            q0 += d0 * d0;
            q1 += d1 * d1;
        }
        const wino_sd4 t1 = wino_sd4_of(a0, a1), t2 = wino_sd4_of(q0, q1);
        st->s1[k] += (t1[0] + t1[1]) + (t1[2] + t1[3]);
        st->s2[k] += (t2[0] + t2[1]) + (t2[2] + t2[3]);
    }
}

/* out (N,K,H,W) = conv(in, w) + b with tiles of side m, for shape s.
 * With dx (m = 4 only), w is the (K', C') = (C, K) weight tensor of the
 * layer whose input gradient this is: the kernels are taken transposed and
 * turned by 180°, and the results are added to out. */
static void wino_forward(float *out, const float *in, const float *w, const float *b,
                         const ul_conv_shape *s, float *scratch, int m, bool dx, bool add,
                         wino_stats *st, ul_wino_team *team, const ul_conv_kc_use *use,
                         bool relu)
{
    const ul_pk *pk = wino_fwd_pk(m);
    const int nxi = wino_xi(m);
    const wino_geom g = wino_geometry(s, pk, m);
    const wino_layout L = wino_scratch_layout(s, pk, m);
    const int C = s->C, K = s->K, H = s->H, W = s->W, wl = pk->wl, wr = pk->wr, nt = g.ntf;
    const int ld = g.TW;
    const size_t HW = (size_t)H * W, in_img = (size_t)C * HW, out_img = (size_t)K * HW;
    float *vp = scratch + L.vp, *mb = scratch + L.mb;
    const size_t vps = panel_stride((size_t)C, (size_t)wr);
    float *seg = scratch + L.rows, *hb = seg + (size_t)nxi * ld;
    float *tmp = hb + wino_rows_floats(ld, m), *z = tmp + m * m * wr;
    wino_rows rc;
    wino_rows_init(&rc, hb, ld, m);
    /* (K, C) of this convolution are (C, K) of the layer whose dX it is. */
    const float *up = ul_kc_hit(use, m);
    if (!up && use && use->c->cap >= (size_t)nxi * L.up_x) {
        /* This thread's share of the row groups into the cache. */
        const int groups = (K + wl - 1) / wl;
        const int g0 = (int)((long)groups * use->t / use->T);
        const int g1 = (int)((long)groups * (use->t + 1) / use->T);
        wino_pack_kernels_rows(use->c->buf, L.up_x, w, K, C, false, false, wl, m, g0 * wl,
                               g1 * wl);
        ul_kc_filled(use, m);
        up = use->c->buf;
    } else if (!up) {
        up = dx ? wino_team_kernels(scratch + L.up, L.up_x, w, C, K, true, wl, m, team)
                : wino_team_kernels(scratch + L.up, L.up_x, w, K, C, false, wl, m, team);
    }
    for (int t0 = 0; t0 < g.T; t0 += nt) {
        const int nb = g.T - t0 < nt ? g.T - t0 : nt;
        /* V of the block as R panels: vp[ξ][(tl/16)·vps + c·16 + tl%16].
         * 4×4 tiles: 8 channels at a time in vector lanes. 2×2 tiles:
         * image by image and within an image plane by plane: a plane's
         * rows are read once while they are warm, and on small images the
         * planes read one after another lie next to each other, where the
         * prefetchers find them (walking the images in the inner loop
         * strides over pages, which they do not follow). Straight into the
         * panel when a segment's lanes are all in one; through seg
         * otherwise. */
        if (m == 4)
            wino4_in_block8(vp, L.vp_x, vps, wr, in, in_img, C, H, W, &g, t0, nb,
                            scratch + L.rows);
        else
            for (int i0 = t0, i1; i0 < t0 + nb; i0 = i1) {
                i1 = wino_image_end(&g, i0, t0 + nb);
                for (int c = 0; c < C; c++)
                    for (int t = i0; t < i1;) {
                        const wino_seg sg = wino_seg_at(&g, t, t0, nb);
                        const float *x = in + sg.n * in_img + c * HW;
                        const bool whole = sg.tl % wr + sg.len <= wr;
                        float *v = whole ? vp + (size_t)(sg.tl / wr) * vps + (size_t)c * wr +
                                               sg.tl % wr
                                         : seg;
                        const size_t vs = whole ? L.vp_x : (size_t)ld;
                        wino_in_rows(v, vs, ld, x, H, W, sg.ty, sg.tx0, sg.len, &rc);
                        if (!whole)
                            for (int xi = 0; xi < nxi; xi++)
                                wino_put_lanes(vp + xi * L.vp_x, vps, wr, c, sg.tl,
                                               seg + (size_t)xi * ld, sg.len);
                        t += sg.len;
                    }
            }
        /* M[ξ] = U[ξ] · V[ξ]. */
        wino_products(pk, nxi, K, nb, C, up, L.up_x, vp, L.vp_x, vps, mb);
        /* Y = Aᵀ·M·A + bias: a panel's wr tiles at once, then stored
         * segment by segment (2×2 tiles: wr is 16). */
        for (int p = 0; p * wr < nb; p++) {
            const int pe = t0 + (nb - p * wr < wr ? nb : (p + 1) * wr);
            if (st)
                wino_stats_mask(st, &g, m, wr, H, W, t0 + p * wr, pe - t0 - p * wr);
            /* The panel's segments, the same for every channel (their
             * divisions, per channel, took 1.5% of an inference's perf
             * samples at width 0.25). */
            wino_seg segs[WR_MAX];
            int ns = 0;
            for (int t = t0 + p * wr; t < pe; t += segs[ns++].len) {
                segs[ns] = wino_seg_at(&g, t, t0, nb);
                segs[ns].len = segs[ns].len < pe - t ? segs[ns].len : pe - t;
            }
            for (int k = 0; k < K; k++) {
                const float *mk = mb + ((size_t)p * K + k) * nxi * wr;
                if (m == 4 && wr == WR_MAX)
                    wino4_out_panel32(tmp, mk);
                else if (m == 4)
                    wino4_out_panel(tmp, mk);
                else
                    wino_out_panel(tmp, mk);
                if (m == 4)
                    wino4_interleave(z, tmp, wr, b ? b[k] : 0.0f, relu);
                for (int i = 0; i < ns; i++) {
                    const wino_seg sg = segs[i];
                    float *o = out + sg.n * out_img + k * HW;
                    const int l = sg.tl - p * wr; /* the segment's first lane */
                    if (m == 4)
                        wino4_store_rows(o, H, W, sg.ty, sg.tx0, sg.len, z + 4 * l,
                                         (size_t)4 * wr, add);
                    else
                        wino_store_rows(o, H, W, sg.ty, sg.tx0, sg.len, tmp + l,
                                        b ? b[k] : 0.0f);
                }
                if (st)
                    wino_stats_add(st, k, tmp, wr, m * m, b ? b[k] : 0.0f, out[k * HW]);
            }
        }
    }
}

/* Sharing the kernel transforms among a team halves them (two threads)
 * but costs a barrier, at which a thread that is behind from the layers
 * before makes the other wait; with fewer than 256 × 256 kernels that
 * cost more than it saved. ResNet-18 inference on 3×32×32, two threads,
 * against sharing every layer: width 0.1 (at most 51 × 51 kernels)
 * 5493–5648 → 5842–6068 img/s, width 0.25 (128 × 128) convolutions 74–75
 * → 71 ms per pass; training was even at both widths. At full width
 * sharing the 256- and 512-channel layers pays. The forced modes of
 * ul_wino_force share every shape, so that the tests' small nets take
 * the shared path. */
#define UL_WINO_SHARE_MIN_KERNELS (256 * 256)

size_t ul_wino_shared_floats(const ul_conv_shape *s)
{
    const ul_pk *pk = ul_pk_get_native();
    size_t n = 0;
    /* The forced modes (the tests') share every shape. */
    if ((size_t)s->C * (size_t)s->K < UL_WINO_SHARE_MIN_KERNELS &&
        __atomic_load_n(&wino_forced, __ATOMIC_RELAXED) <= 0)
        return 0;
    if (pk && ul_wino_ok(s, false)) {
        const int m = ul_wino_tile(s) == 4 ? 4 : 2;
        n = (size_t)wino_xi(m) * wino_scratch_layout(s, wino_fwd_pk(m), m).up_x;
    }
    if (pk && ul_wino_dx_ok(s)) {
        const ul_conv_shape d = wino_dx_shape(s);
        const size_t x = (size_t)wino_xi(4) * wino_scratch_layout(&d, wino_fwd_pk(4), 4).up_x;
        n = x > n ? x : n;
    }
    return n;
}

void ul_wino_forward(float *out, const float *in, const float *w, const float *b,
                     const ul_conv_shape *s, float *scratch, ul_wino_team *team)
{
    wino_forward(out, in, w, b, s, scratch, ul_wino_tile(s) == 4 ? 4 : 2, false, false, NULL,
                 team, NULL, false);
}

size_t ul_wino_kernel_floats(const ul_conv_shape *s)
{
    const int m = ul_wino_tile(s) == 4 ? 4 : 2;
    return (size_t)wino_xi(m) * wino_scratch_layout(s, wino_fwd_pk(m), m).up_x;
}

bool ul_wino_forward_kc(float *out, const float *in, const float *w, const float *b,
                        const ul_conv_shape *s, float *scratch, ul_wino_team *team,
                        const ul_conv_kc_use *use, bool relu)
{
    const int m = ul_wino_tile(s) == 4 ? 4 : 2;
    wino_forward(out, in, w, b, s, scratch, m, false, false, NULL, team, use, relu && m == 4);
    return relu && m == 4;
}

void ul_wino_forward_stats(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch, double *mean, double *m2,
                           ul_wino_team *team)
{
    wino_stats st = {mean, m2, {0}, false};
    for (int k = 0; k < s->K; k++)
        mean[k] = m2[k] = 0.0;
    wino_forward(out, in, w, b, s, scratch, ul_wino_tile(s) == 4 ? 4 : 2, false, false, &st,
                 team, NULL, false);
    const double M = (double)s->N * s->H * s->W;
    for (int k = 0; k < s->K && M > 0; k++) {
        const double s1 = mean[k], k0 = out[(size_t)k * s->H * s->W];
        mean[k] = k0 + s1 / M;
        m2[k] -= s1 * s1 / M;
    }
}

void ul_wino_dx(float *din, const float *dout, const float *w, const ul_conv_shape *s,
                float *scratch, bool add, ul_wino_team *team)
{
    const ul_conv_shape d = wino_dx_shape(s);
    wino_forward(din, dout, w, NULL, &d, scratch, 4, true, add, NULL, team, NULL, false);
}

/* ---- backward --------------------------------------------------------------------- */

void ul_wino_backward(float *din, float *dw_acc, const float *dout, const float *in,
                      const float *w, const ul_conv_shape *s, float *scratch)
{
    if (!din && !dw_acc)
        return;
    const ul_pk *pk = ul_pk_get_native();
    /* dW alone may take 4×4 tiles. */
    const int m = !din && ul_wino_dw_tile(s) == 4 ? 4 : 2, nxi = wino_xi(m);
    const wino_geom g = wino_geometry(s, pk, m);
    const wino_layout L = wino_scratch_layout(s, pk, m);
    const int C = s->C, K = s->K, H = s->H, W = s->W, wl = pk->wl, nt = g.ntb;
    const int ld = g.TW;
    const size_t HW = (size_t)H * W, in_img = (size_t)C * HW, out_img = (size_t)K * HW;
    float *ut = scratch + L.ut, *r1 = scratch + L.r1, *dv = scratch + L.dv;
    float *vl = scratch + L.vl, *r2 = scratch + L.r2, *du = scratch + L.du;
    const size_t r1s = panel_stride((size_t)K, WR);
    float *seg = scratch + L.rows, *hb = seg + (size_t)nxi * ld;
    float *tmp = hb + wino_rows_floats(ld, m);
    if (din)
        wino_pack_kernels(ut, L.ut_x, w, K, C, true, false, wl, 2);
    float *st = scratch + L.st;
    for (int t0 = 0; t0 < g.T; t0 += nt) {
        const int nb = g.T - t0 < nt ? g.T - t0 : nt;
        /* dM of the block, 16 channels k at a time, plane by plane into the
         * staging buffer st[kk][ξ][tl], then as R panels of tiles (depth
         * K) for dV, r1[ξ][(tl/16)·r1s + k·16 + tl%16], and, transposed, as
         * R panels of channels (depth tiles) for dU, r2[ξ][(k/16)·nt·16 +
         * tl·16 + k%16]. */
        if (m == 4)
            wino4_out_adj_block16(r2, L.r2_x, nt, dout, out_img, K, H, W, &g, t0, nb,
                                  scratch + L.rows);
        else
            for (int k0 = 0; k0 < K; k0 += WR) {
                const int kn = K - k0 < WR ? K - k0 : WR;
                /* Image by image, as in wino_forward. */
                for (int i0 = t0, i1; i0 < t0 + nb; i0 = i1) {
                    i1 = wino_image_end(&g, i0, t0 + nb);
                    for (int kk = 0; kk < kn; kk++) {
                        float *sk = st + (size_t)kk * nxi * nt;
                        for (int t = i0; t < i1;) {
                            const wino_seg sg = wino_seg_at(&g, t, t0, nb);
                            const float *dy = dout + sg.n * out_img + (k0 + kk) * HW;
                            wino_out_adj_rows(sk + sg.tl, nt, dy, H, W, sg.ty, sg.tx0, sg.len,
                                              tmp);
                            t += sg.len;
                        }
                    }
                }
                for (int kk = 0; kk < kn; kk++) {
                    const int k = k0 + kk;
                    const float *sk = st + (size_t)kk * nxi * nt;
                    if (din)
                        for (int xi = 0; xi < XI; xi++)
                            wino_put_lanes(r1 + xi * L.r1_x, r1s, WR, k, 0, sk + (size_t)xi * nt,
                                           nb);
                }
                if (dw_acc)
                    for (int xi = 0; xi < nxi; xi++) {
                        float *p = r2 + xi * L.r2_x + (size_t)k0 * nt;
                        for (int k8 = 0; k8 < kn; k8 += 8)
                            ul_transpose(st + ((size_t)k8 * nxi + xi) * nt, (size_t)nxi * nt,
                                         p + k8, WR, kn - k8 < 8 ? kn - k8 : 8, nb);
                        if (kn < WR)
                            for (int t2 = 0; t2 < nb; t2++)
                                for (int kk = kn; kk < WR; kk++)
                                    p[(size_t)t2 * WR + kk] = 0.0f;
                    }
            }
        if (din) {
            /* dV[ξ] = U[ξ]ᵀ · dM[ξ]. */
            wino_products(pk, XI, C, nb, K, ut, L.ut_x, r1, L.r1_x, r1s, dv);
            /* dX += B·dV·Bᵀ over each tile's patch: a panel's 16 tiles at
             * once, then added segment by segment, channel by channel. */
            float *dd = tmp, *ev = tmp + XI * WR, *od = ev + ld + 1;
            for (int c = 0; c < C; c++)
                for (int p = 0; p * WR < nb; p++) {
                    const int pe = t0 + (nb - p * WR < WR ? nb : (p + 1) * WR);
                    wino_in_adj_panel(dd, dv + ((size_t)p * C + c) * XI * WR);
                    for (int t = t0 + p * WR; t < pe;) {
                        wino_seg sg = wino_seg_at(&g, t, t0, nb);
                        sg.len = sg.len < pe - t ? sg.len : pe - t;
                        wino_scatter_rows(din + sg.n * in_img + c * HW, H, W, sg.ty, sg.tx0,
                                          sg.len, dd + (t - t0 - p * WR), ev, od);
                        t += sg.len;
                    }
                }
        }
        if (!dw_acc)
            continue;
        /* V of the block as L panels with the tiles along the depth,
         * vl[ξ][(c/wl)·nt·wl + tl·wl + c%wl]: for 4×4 tiles straight from
         * vector lanes; for 2×2 tiles wl channels at a time, plane by plane
         * into the staging buffer, then transposed. */
        if (m == 4)
            wino4_in_block_l(vl, L.vl_x, nt, wl, in, in_img, C, H, W, &g, t0, nb, scratch + L.rows);
        else
            for (int c0 = 0; c0 < C; c0 += wl) {
                const int cn = C - c0 < wl ? C - c0 : wl;
                wino_rows rc;
                wino_rows_init(&rc, hb, ld, m);
                for (int i0 = t0, i1; i0 < t0 + nb; i0 = i1) {
                    i1 = wino_image_end(&g, i0, t0 + nb);
                    for (int cc = 0; cc < cn; cc++) {
                        float *sc = st + (size_t)cc * nxi * nt;
                        for (int t = i0; t < i1;) {
                            const wino_seg sg = wino_seg_at(&g, t, t0, nb);
                            const float *x = in + sg.n * in_img + (c0 + cc) * HW;
                            wino_in_rows(sc + sg.tl, (size_t)nt, ld, x, H, W, sg.ty, sg.tx0,
                                         sg.len, &rc);
                            t += sg.len;
                        }
                    }
                }
                for (int xi = 0; xi < nxi; xi++) {
                    float *p = vl + xi * L.vl_x + (size_t)c0 * nt;
                    for (int c8 = 0; c8 < cn; c8 += 8)
                        ul_transpose(st + ((size_t)c8 * nxi + xi) * nt, (size_t)nxi * nt, p + c8,
                                     (size_t)wl, cn - c8 < 8 ? cn - c8 : 8, nb);
                    if (cn < wl)
                        for (int t2 = 0; t2 < nb; t2++)
                            for (int cc = cn; cc < wl; cc++)
                                p[(size_t)t2 * wl + cc] = 0.0f;
                }
            }
        /* dUᵀ[ξ] (C × K) += V[ξ] · dM[ξ]ᵀ, the block's tiles as the depth;
         * the first block's products set it. */
        const float beta = t0 == 0 ? 0.0f : 1.0f;
        for (int xi = 0; xi < nxi; xi++)
            for (int ip = 0; ip < C; ip += wl) {
                const int mm = C - ip < wl ? C - ip : wl;
                for (int j = 0; j < K; j += WR)
                    ul_pk_tile(pk, mm, K - j < WR ? K - j : WR, nb,
                               vl + xi * L.vl_x + (size_t)ip * nt,
                               r2 + xi * L.r2_x + (size_t)j * nt, beta,
                               du + xi * L.du_x + (size_t)ip * K + j, K);
            }
    }
    if (!dw_acc)
        return;
    wino_grad_kernels(dw_acc, du, L.du_x, K, C, m);
}
