/* The forward pass of 3×3, stride-1, pad-1 convolutions whose channel
 * counts are multiples of 16 (ResNet-18's first stages from width 0.25
 * on), by Winograd's F(4×4, 3×3) (wino4.h) with 16 channels in the lanes
 * of an AVX-512 register all the way through:
 *  - the images of a group are copied into zero-bordered, pixel-major
 *    buffers, 16 channels per pixel (xp[n][cb][row][col][16]);
 *  - the input transform V = Bᵀ·d·B of a tile is then plain vector
 *    arithmetic on 36 pixel registers, for every 16-channel block, into
 *    V[ξ][tile][c] for a batch of NT tiles;
 *  - per ξ, M[ξ] (tiles × K) = V[ξ] (tiles × C) · U[ξ] (C × K): a row of
 *    TT tiles times one or two registers of output channels in
 *    accumulators, each V value broadcast into the multiply-adds with the
 *    registers of U (kernels transformed once per call,
 *    ul_wino4_pack_k16), stored as M[tile][kb][ξ][16];
 *  - the output transform Aᵀ·M·A of a tile is vector arithmetic again,
 *    plus the bias, into pixel-major results Y[n][kb][pixel][16], which
 *    are transposed into the NCHW output 16 channels at a time.
 * The general Winograd path (ops_wino.c) keeps tiles in the lanes and
 * channels along the products' depth, so it transposes every tile's
 * values on the way in (from NCHW planes) and on the way out; with 16 to
 * 64 channels those transposes and the transforms took more than half of
 * a layer's time, the products (BLIS-style panels) a third. Here the only
 * transposes are the two between NCHW and the pixel-major buffers, 16×16
 * blocks in registers.
 *
 * Sums run in a fixed order (c ascending per ξ), so results repeat run to
 * run. Compiled for AVX-512 only (intrinsics, fused multiply-adds, and
 * contraction of the transforms' products and sums); elsewhere, and where
 * ul_conv_kwino_ok says no, the other paths take these layers. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops_local.h"
#include "ops_wino.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KW_X86 1
/* -std=c11 turns contraction off; the transforms' a·x + b become fused
 * multiply-adds here. */
#pragma GCC optimize("fp-contract=fast")
#include <immintrin.h>

#include "wino4.h"
#define KW_TARGET __attribute__((target("avx512f,fma")))
#endif

enum { KW_VL = 16, KW_XI = 36 };

/* Floats of one group's padded copies, or of its results, whichever is
 * larger: the group's images (at least one) stay in L2 between the copy,
 * the transforms and the transposes. */
enum { KW_GROUP_FLOATS = 48 * 1024 };

typedef struct kw_geom {
    int TH, TW, tpi; /* tiles down, across, per image */
    int Hp, Wp;      /* the padded copy: 4·TH + 2 rows of 4·TW + 2 pixels */
    int CB, KB;      /* 16-channel blocks in and out */
    int KBB, TT;     /* a product tile: TT tiles × KBB registers of channels */
    int NT;          /* tiles per batch */
    int G;           /* images per group */
} kw_geom;

static kw_geom kw_geometry(const ul_conv_shape *s)
{
    kw_geom g;
    g.TH = (s->H + 3) / 4;
    g.TW = (s->W + 3) / 4;
    g.tpi = g.TH * g.TW;
    g.Hp = 4 * g.TH + 2;
    g.Wp = 4 * g.TW + 2;
    g.CB = s->C / KW_VL;
    g.KB = s->K / KW_VL;
    /* 24 or 16 accumulators: enough to cover the multiply-adds' latency,
     * few enough to leave registers for U and the broadcasts. */
    g.KBB = g.KB % 2 == 0 ? 2 : 1;
    g.TT = g.KBB == 2 ? 12 : 16;
    g.NT = g.TT * (s->C + s->K <= 64 ? 2 : 1);
    const size_t img = (size_t)s->C * g.Hp * g.Wp, res = (size_t)s->K * s->H * s->W;
    const size_t big = img > res ? img : res;
    const size_t G = big < KW_GROUP_FLOATS ? KW_GROUP_FLOATS / big : 1;
    g.G = G < (size_t)s->N ? (int)G : s->N;
    return g;
}

static size_t a16(size_t n) { return (n + 15) / 16 * 16; }

/* The scratch's parts, in floats from its start. */
typedef struct kw_layout {
    size_t u, xp, v, m, y, total;
} kw_layout;

static kw_layout kw_layout_of(const ul_conv_shape *s, const kw_geom *g)
{
    kw_layout L;
    L.u = 0;
    L.xp = L.u + a16((size_t)KW_XI * s->C * s->K);
    L.v = L.xp + a16((size_t)g->G * s->C * g->Hp * g->Wp);
    L.m = L.v + a16((size_t)KW_XI * g->NT * s->C);
    L.y = L.m + a16((size_t)KW_XI * g->NT * s->K);
    L.total = L.y + a16((size_t)g->G * s->K * s->H * s->W);
    return L;
}

static bool kw_off;
void ul_conv_kwino_force_off(bool on) { __atomic_store_n(&kw_off, on, __ATOMIC_RELAXED); }

bool ul_conv_kwino_ok(const ul_conv_shape *s)
{
#ifdef KW_X86
    if (__atomic_load_n(&kw_off, __ATOMIC_RELAXED) || !ul_conv_avx512_ok())
        return false;
    if (s->R != 3 || s->S != 3 || s->pad != 1 || s->stride != 1)
        return false;
    if (s->C % KW_VL || s->K % KW_VL)
        return false;
    return s->C <= 64 && s->K <= 64;
#else
    (void)s;
    return false;
#endif
}

size_t ul_conv_kwino_scratch(const ul_conv_shape *s)
{
    const kw_geom g = kw_geometry(s);
    return kw_layout_of(s, &g).total;
}

#ifdef KW_X86
#pragma GCC diagnostic ignored "-Wpsabi"

/* r[i][j] → r[j][i] for a 16 × 16 block in registers: pairs of floats,
 * then of pairs, within each 128-bit quarter; then quarters between
 * registers twice. After the first two steps u[4g + k] holds column k +
 * 4L of rows 4g .. 4g + 3 in quarter L. */
static inline __attribute__((always_inline)) KW_TARGET void kw_tr16(__m512 r[16])
{
    __m512 t[16], u[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 16
    for (int g = 0; g < 16; g += 4) {
        const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]),
                      c = _mm512_castps_pd(t[g + 2]), d = _mm512_castps_pd(t[g + 3]);
        u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88),
                     v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd),
                     w0 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88),
                     w1 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
        r[k] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[k + 4] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[k + 12] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/* A 16-channel block of an image (16 planes HW floats apart) into the
 * interior of its padded copy (dst at pixel (1, 1), pitch Wp pixels of
 * 16 floats): 16 consecutive pixels of the planes at a time, rows crossed
 * within a block. */
static KW_TARGET void kw_image_in(float *restrict dst, const float *restrict src, int H, int W,
                                  int Wp)
{
    const int HW = H * W;
    int x = 0;
    float *d = dst;
    for (int p0 = 0; p0 < HW; p0 += KW_VL) {
        const int n = HW - p0 < KW_VL ? HW - p0 : KW_VL;
        const __mmask16 k = (__mmask16)((1u << n) - 1u);
        __m512 r[16];
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++)
            r[c] = _mm512_maskz_loadu_ps(k, src + (size_t)c * HW + p0);
        kw_tr16(r);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i == n)
                break;
            _mm512_store_ps(d, r[i]);
            d += KW_VL;
            if (++x == W) {
                x = 0;
                d += (size_t)(Wp - W) * KW_VL;
            }
        }
    }
}

/* len pixel registers at src → 16 channel planes (plane floats apart). */
static KW_TARGET void kw_rows_out(float *restrict dst, size_t plane, const float *restrict src,
                                  int len)
{
    for (int p0 = 0; p0 < len; p0 += KW_VL) {
        const int n = len - p0 < KW_VL ? len - p0 : KW_VL;
        const __mmask16 k = (__mmask16)((1u << n) - 1u);
        __m512 r[16];
#pragma GCC unroll 16
        for (int x = 0; x < 16; x++)
            r[x] = x < n ? _mm512_load_ps(src + (size_t)(p0 + x) * KW_VL) : _mm512_setzero_ps();
        kw_tr16(r);
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++)
            _mm512_mask_storeu_ps(dst + (size_t)c * plane + p0, k, r[c]);
    }
}

/* The position of tile t of a group. */
typedef struct kw_tile {
    int n, ty, tx;
} kw_tile;

static kw_tile kw_tile_at(const kw_geom *g, int t)
{
    const int r = t % g->tpi;
    return (kw_tile){t / g->tpi, r / g->TW, r % g->TW};
}

/* V of tile t, every channel block: v[ξ·vx + c]. The row transforms' 36 results and the inputs do not fit in the 32
 * registers (GCC spilled them to the stack and read them back), so the
 * tile goes in two halves: the first three outputs of each row's
 * transform (from its columns 0–4), then the column transforms of those
 * three columns; then the same for the last three (columns 1–5). */
static inline __attribute__((always_inline)) KW_TARGET void
kw_tile_in(float *restrict v, size_t vx, const float *restrict xp, const kw_geom *g, int t,
           const int CB)
{
    const kw_tile p = kw_tile_at(g, t);
    const size_t blk = (size_t)g->Hp * g->Wp * KW_VL, pitch = (size_t)g->Wp * KW_VL;
    for (int cb = 0; cb < CB; cb++) {
        const float *d = xp + ((size_t)p.n * CB + cb) * blk +
                         ((size_t)4 * p.ty * g->Wp + 4 * p.tx) * KW_VL;
        float *vc = v + cb * KW_VL;
#define KW_LD(r, c) _mm512_load_ps(d + (size_t)(r) * pitch + (c) * KW_VL)
#define KW_ST(i, j, x) _mm512_store_ps(vc + (size_t)(6 * (i) + (j)) * vx, x)
        {
            __m512 e[6][3];
#pragma GCC unroll 6
            for (int r = 0; r < 6; r++)
                WINO4_BT_LO(KW_LD(r, 0), KW_LD(r, 1), KW_LD(r, 2), KW_LD(r, 3), KW_LD(r, 4),
                            e[r][0], e[r][1], e[r][2]);
#pragma GCC unroll 3
            for (int j = 0; j < 3; j++) {
                __m512 o[6];
                WINO4_BT(e[0][j], e[1][j], e[2][j], e[3][j], e[4][j], e[5][j], o[0], o[1], o[2],
                         o[3], o[4], o[5]);
#pragma GCC unroll 6
                for (int i = 0; i < 6; i++)
                    KW_ST(i, j, o[i]);
            }
        }
        {
            __m512 e[6][3];
#pragma GCC unroll 6
            for (int r = 0; r < 6; r++)
                WINO4_BT_HI(KW_LD(r, 1), KW_LD(r, 2), KW_LD(r, 3), KW_LD(r, 4), KW_LD(r, 5),
                            e[r][0], e[r][1], e[r][2]);
#pragma GCC unroll 3
            for (int j = 0; j < 3; j++) {
                __m512 o[6];
                WINO4_BT(e[0][j], e[1][j], e[2][j], e[3][j], e[4][j], e[5][j], o[0], o[1], o[2],
                         o[3], o[4], o[5]);
#pragma GCC unroll 6
                for (int i = 0; i < 6; i++)
                    KW_ST(i, 3 + j, o[i]);
            }
        }
#undef KW_LD
#undef KW_ST
    }
}

/* kw_tile_in for tiles [t0, t0 + nt), tile i's values at v + i·C, for 1
 * to 4 channel blocks. */
static KW_TARGET __attribute__((noinline)) void kw_tiles_in(float *v, size_t vx, const float *xp,
                                                            const kw_geom *g, int t0, int nt)
{
    const size_t C = (size_t)g->CB * KW_VL;
    for (int i = 0; i < nt; i++)
        switch (g->CB) {
        case 1: kw_tile_in(v + i * C, vx, xp, g, t0 + i, 1); break;
        case 2: kw_tile_in(v + i * C, vx, xp, g, t0 + i, 2); break;
        case 3: kw_tile_in(v + i * C, vx, xp, g, t0 + i, 3); break;
        case 4: kw_tile_in(v + i * C, vx, xp, g, t0 + i, 4); break;
        default: break;
        }
}

/* Y = Aᵀ·M·A + bias of tile t (with relu, then max(0, ·)), every channel
 * block, from m[(kb·36 + ξ)·16] into the group's pixel-major results
 * (rows and columns past the image dropped). */
static KW_TARGET void kw_tile_out(float *restrict y, const float *restrict m, const float *b,
                                  const kw_geom *g, int H, int W, int t, bool relu)
{
    const kw_tile p = kw_tile_at(g, t);
    const size_t HW = (size_t)H * W;
    const int rows = H - 4 * p.ty < 4 ? H - 4 * p.ty : 4;
    const int cols = W - 4 * p.tx < 4 ? W - 4 * p.tx : 4;
    for (int kb = 0; kb < g->KB; kb++) {
        const float *mk = m + (size_t)kb * KW_XI * KW_VL;
        const __m512 bias = b ? _mm512_loadu_ps(b + kb * KW_VL) : _mm512_setzero_ps();
        __m512 a[4][6];
        for (int j = 0; j < 6; j++)
            WINO4_AT(_mm512_load_ps(mk + j * 16), _mm512_load_ps(mk + (6 + j) * 16),
                     _mm512_load_ps(mk + (12 + j) * 16), _mm512_load_ps(mk + (18 + j) * 16),
                     _mm512_load_ps(mk + (24 + j) * 16), _mm512_load_ps(mk + (30 + j) * 16),
                     a[0][j], a[1][j], a[2][j], a[3][j]);
        float *yk = y + ((size_t)p.n * g->KB + kb) * HW * KW_VL +
                    ((size_t)4 * p.ty * W + 4 * p.tx) * KW_VL;
        for (int i = 0; i < rows; i++) {
            __m512 o[4];
            WINO4_AT(a[i][0], a[i][1], a[i][2], a[i][3], a[i][4], a[i][5], o[0], o[1], o[2],
                     o[3]);
            for (int q = 0; q < cols; q++) {
                /* With relu max(0, ·), which keeps a NaN (the second
                 * operand of a comparison with one). */
                const __m512 x = o[q] + bias;
                _mm512_store_ps(yk + ((size_t)i * W + q) * KW_VL,
                                relu ? _mm512_max_ps(_mm512_setzero_ps(), x) : x);
            }
        }
    }
}

/* M of TT tiles and KBB registers of channels at one ξ: v at the first
 * tile's row of V[ξ] (C floats per tile), u at the first register's block
 * of U[ξ] (C·16 floats per block), m at the first tile's first block of
 * M (ms floats per tile, KW_XI·16 per block). C is a constant of each
 * build, so that the TT broadcasts of a step address one pointer at fixed
 * offsets (with C a variable GCC kept a pointer per tile, more than the
 * general registers hold). */
static inline __attribute__((always_inline)) KW_TARGET void
kw_mm(float *restrict m, const float *restrict v, const float *restrict u, size_t ms,
      const int C, const int TT, const int KBB)
{
    __m512 acc[16][2];
    for (int t = 0; t < TT; t++)
        for (int k = 0; k < KBB; k++)
            acc[t][k] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int c = 0; c < C; c++) {
        __m512 w[2];
        for (int k = 0; k < KBB; k++)
            w[k] = _mm512_load_ps(u + ((size_t)k * C + c) * KW_VL);
        for (int t = 0; t < TT; t++) {
            const __m512 x = _mm512_set1_ps(v[t * C + c]);
            for (int k = 0; k < KBB; k++)
                acc[t][k] = _mm512_fmadd_ps(w[k], x, acc[t][k]);
        }
    }
    for (int t = 0; t < TT; t++)
        for (int k = 0; k < KBB; k++)
            _mm512_store_ps(m + (size_t)t * ms + (size_t)k * KW_XI * KW_VL, acc[t][k]);
}

#define KW_MM(C, TT, KBB)                                                                      \
    case ((C) / 16 * 32 + (TT)) * 4 + (KBB):                                                   \
        kw_mm(m, v, u, ms, C, TT, KBB);                                                        \
        break;
#define KW_MM_C(C)                                                                             \
    KW_MM(C, 1, 1) KW_MM(C, 2, 1) KW_MM(C, 3, 1) KW_MM(C, 4, 1) KW_MM(C, 5, 1) KW_MM(C, 6, 1)  \
    KW_MM(C, 7, 1) KW_MM(C, 8, 1) KW_MM(C, 9, 1) KW_MM(C, 10, 1) KW_MM(C, 11, 1)              \
    KW_MM(C, 12, 1) KW_MM(C, 13, 1) KW_MM(C, 14, 1) KW_MM(C, 15, 1) KW_MM(C, 16, 1)           \
    KW_MM(C, 1, 2) KW_MM(C, 2, 2) KW_MM(C, 3, 2) KW_MM(C, 4, 2) KW_MM(C, 5, 2) KW_MM(C, 6, 2)  \
    KW_MM(C, 7, 2) KW_MM(C, 8, 2) KW_MM(C, 9, 2) KW_MM(C, 10, 2) KW_MM(C, 11, 2)              \
    KW_MM(C, 12, 2)

/* kw_mm for C of 16, 32, 48 or 64 and any tt ≤ 16 (kbb 1) or ≤ 12
 * (kbb 2). */
static KW_TARGET __attribute__((noinline)) void kw_mm_any(float *m, const float *v,
                                                          const float *u, int c, size_t ms,
                                                          int tt, int kbb)
{
    switch ((c / 16 * 32 + tt) * 4 + kbb) {
        KW_MM_C(16)
        KW_MM_C(32)
        KW_MM_C(48)
        KW_MM_C(64)
    default:
        break;
    }
}
#endif

size_t ul_conv_kwino_kernel_floats(const ul_conv_shape *s)
{
    return (size_t)KW_XI * s->C * s->K;
}

/* The kind of kernels the path keeps in a cache (ul_kc_hit). */
enum { KW_KIND = 1 };

void ul_conv_kwino_forward(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch)
{
    ul_conv_kwino_forward_kc(out, in, w, b, s, scratch, NULL, false);
}

void ul_conv_kwino_forward_kc(float *out, const float *in, const float *w, const float *b,
                              const ul_conv_shape *s, float *scratch, const ul_conv_kc_use *use,
                              bool relu)
{
#ifdef KW_X86
    const kw_geom g = kw_geometry(s);
    const kw_layout L = kw_layout_of(s, &g);
    const int C = s->C, K = s->K, H = s->H, W = s->W;
    const size_t HW = (size_t)H * W, blk = (size_t)g.Hp * g.Wp * KW_VL;
    const size_t vx = (size_t)g.NT * C, ms = (size_t)g.KB * KW_XI * KW_VL;
    float *xp = scratch + L.xp, *v = scratch + L.v, *m = scratch + L.m, *y = scratch + L.y;
    const float *u = ul_kc_hit(use, KW_KIND);
    if (!u && use && use->c->cap >= ul_conv_kwino_kernel_floats(s)) {
        /* This thread's share of the 16-channel blocks into the cache. */
        const int k0 = g.KB * use->t / use->T * KW_VL, k1 = g.KB * (use->t + 1) / use->T * KW_VL;
        if (k0 < k1)
            ul_wino4_pack_k16_rows(use->c->buf, w, K, C, k0, k1);
        ul_kc_filled(use, KW_KIND);
        u = use->c->buf;
    } else if (!u) {
        ul_wino4_pack_k16(scratch + L.u, w, K, C);
        u = scratch + L.u;
    }
    /* The borders stay zero: only the interiors are copied below. */
    memset(xp, 0, (size_t)g.G * g.CB * blk * sizeof(float));
    for (int n0 = 0; n0 < s->N; n0 += g.G) {
        const int gn = s->N - n0 < g.G ? s->N - n0 : g.G;
        for (int n = 0; n < gn; n++)
            for (int cb = 0; cb < g.CB; cb++)
                kw_image_in(xp + ((size_t)n * g.CB + cb) * blk + ((size_t)g.Wp + 1) * KW_VL,
                            in + ((size_t)(n0 + n) * C + (size_t)cb * KW_VL) * HW, H, W, g.Wp);
        const int T = gn * g.tpi;
        for (int t0 = 0; t0 < T; t0 += g.NT) {
            const int nt = T - t0 < g.NT ? T - t0 : g.NT;
            kw_tiles_in(v, vx, xp, &g, t0, nt);
            for (int xi = 0; xi < KW_XI; xi++)
                for (int i0 = 0; i0 < nt; i0 += g.TT) {
                    const int tt = nt - i0 < g.TT ? nt - i0 : g.TT;
                    for (int kb = 0; kb < g.KB; kb += g.KBB)
                        kw_mm_any(m + ((size_t)i0 * g.KB + kb) * KW_XI * KW_VL +
                                      (size_t)xi * KW_VL,
                                  v + (size_t)xi * vx + (size_t)i0 * C,
                                  u + (size_t)xi * K * C + (size_t)kb * C * KW_VL, C, ms, tt,
                                  g.KBB);
                }
            for (int i = 0; i < nt; i++)
                kw_tile_out(y, m + (size_t)i * ms, b, &g, H, W, t0 + i, relu);
        }
        for (int n = 0; n < gn; n++)
            for (int kb = 0; kb < g.KB; kb++)
                kw_rows_out(out + ((size_t)(n0 + n) * K + (size_t)kb * KW_VL) * HW, HW,
                            y + ((size_t)n * g.KB + kb) * HW * KW_VL, (int)HW);
    }
#else
    (void)out, (void)in, (void)w, (void)b, (void)s, (void)scratch, (void)use, (void)relu;
#endif
}
