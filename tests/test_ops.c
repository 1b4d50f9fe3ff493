/* Tests of the numeric ops (unlearn/ops.h).
 *
 * Backward passes are checked against central finite differences of a random
 * scalar loss L = Σ out·G (G fixed and random, so every output matters; L is
 * accumulated in double). Tolerance for a gradient element:
 *   |analytic − numeric| ≤ 1e-2 · (max(|analytic|, |numeric|) + 0.1·max_j |analytic_j|)
 * — relative 1e-2, with a floor at the gradient's own scale for elements near
 * zero, where float32 rounding in the forward dominates the difference.
 * Fast kernels are held to their naive references at 1e-4 relative to the
 * largest reference magnitude. Hand-computed values use their own stated
 * tolerances. Seeds are fixed. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "ops_local.h"
#include "ops_wino.h"
#include "pack_gemm.h"
#include "runtime.h"
#include "transpose.h"
#include "unlearn/ops.h"
#include "unlearn/rng.h"

#define FD_RTOL 1e-2
#define FD_MAX_SAMPLES 64
#define REF_RTOL 1e-4

/* ---- helpers ------------------------------------------------------------ */

static float *falloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

/* n floats on a 64-byte boundary, plus 16 past the end (the packed
 * kernels may read a vector beyond a buffer's last value). */
static float *falloc64(size_t n)
{
    float *p = NULL;
    ck_assert_int_eq(posix_memalign((void **)&p, 64, (n + 16) * sizeof(float)), 0);
    return p;
}

/* Scratch a kernel has not written yet: NaN, so that a value it lets into
 * a result without writing it first (even times 0) shows. */
static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

static void fill_uniform(ul_rng *r, float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * ul_rng_uniform(r));
}

static float *rand_buf(ul_rng *r, size_t n, double lo, double hi)
{
    float *x = falloc(n);
    fill_uniform(r, x, n, lo, hi);
    return x;
}

static double sum_prod(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* Fails unless max_i |got_i − want_i| ≤ rtol · max_i |want_i|. */
static void assert_close(const char *what, const float *got, const float *want, size_t n,
                         double rtol)
{
    double scale = max_abs(want, n);
    ck_assert_msg(scale > 0.0, "%s: reference is all zero, the comparison proves nothing", what);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        ck_assert_msg(d <= rtol * scale, "%s[%zu]: expected %.8g, got %.8g (|diff| %.3g > %.3g)",
                      what, i, want[i], got[i], d, rtol * scale);
    }
}

typedef double (*loss_fn)(void *ctx);

/* Compares grad, the analytic gradient of f with respect to x (n values),
 * with central differences at up to FD_MAX_SAMPLES elements. */
static void check_fd(const char *what, loss_fn f, void *ctx, float *x, const float *grad,
                     size_t n, float eps)
{
    double gmax = max_abs(grad, n);
    ck_assert_msg(gmax > 0.0, "%s: analytic gradient is all zero, the check proves nothing",
                  what);
    ul_rng r;
    ul_rng_seed(&r, 99, 1);
    size_t count = n < FD_MAX_SAMPLES ? n : FD_MAX_SAMPLES;
    for (size_t t = 0; t < count; t++) {
        size_t i = n <= FD_MAX_SAMPLES ? t : ul_rng_below(&r, (uint32_t)n);
        float old = x[i];
        float xp = old + eps, xm = old - eps;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = old;
        double num = (lp - lm) / ((double)xp - xm);
        double an = grad[i];
        double tol = FD_RTOL * (fmax(fabs(an), fabs(num)) + 0.1 * gmax);
        ck_assert_msg(fabs(an - num) <= tol,
                      "%s[%zu]: finite difference %.8g, backward %.8g (|diff| %.3g > %.3g)",
                      what, i, num, an, fabs(an - num), tol);
    }
}

/* ---- GEMM ----------------------------------------------------------------- */

static void gemm_naive(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                       int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int p = 0; p < k; p++) {
                float av = ta ? a[p * lda + i] : a[i * lda + p];
                float bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                acc += (double)av * bv;
            }
            c[i * ldc + j] = (float)(alpha * acc + beta * c[i * ldc + j]);
        }
}

static const int gemm_sizes[][3] = {{5, 7, 3}, {67, 45, 129}, {1, 33, 17}, {40, 1, 8}};

START_TEST(test_sgemm_transposes)
{
    for (int combo = 0; combo < 4; combo++) {
        bool ta = combo & 1, tb = combo & 2;
        for (size_t z = 0; z < sizeof gemm_sizes / sizeof gemm_sizes[0]; z++) {
            int m = gemm_sizes[z][0], n = gemm_sizes[z][1], k = gemm_sizes[z][2];
            /* Stored shapes, each with 3 padding columns that must stay untouched. */
            int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int lda = ac + 3, ldb = bc + 3, ldc = n + 3;
            ul_rng r;
            ul_rng_seed(&r, 1000 + (uint64_t)combo * 10 + z, 0);
            float *a = rand_buf(&r, (size_t)ar * lda, -1, 1);
            float *b = rand_buf(&r, (size_t)br * ldb, -1, 1);
            float *c = rand_buf(&r, (size_t)m * ldc, -1, 1);
            float *want = falloc((size_t)m * ldc);
            memcpy(want, c, (size_t)m * ldc * sizeof(float));
            gemm_naive(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, want, ldc);
            ul_sgemm(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c, ldc);
            char what[64];
            snprintf(what, sizeof what, "sgemm(ta=%d,tb=%d,%dx%dx%d)", ta, tb, m, n, k);
            assert_close(what, c, want, (size_t)m * ldc, REF_RTOL);
            for (int i = 0; i < m; i++)
                for (int j = n; j < ldc; j++)
                    ck_assert_msg(c[i * ldc + j] == want[i * ldc + j],
                                  "%s wrote into the padding at (%d,%d)", what, i, j);
            free(a);
            free(b);
            free(c);
            free(want);
        }
    }
}
END_TEST

START_TEST(test_sgemm_beta_zero_ignores_nan)
{
    /* beta = 0 must overwrite C, not multiply it: workspace is often garbage. */
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {NAN, NAN, NAN, NAN};
    ul_sgemm(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(c[i] == a[i], "c[%d]: expected %g, got %g", i, a[i], c[i]);
}
END_TEST

/* ---- linear ----------------------------------------------------------------- */

typedef struct {
    int N, I, O;
    float *in, *w, *b, *out, *G;
} linear_ctx;

static double linear_loss(void *p)
{
    linear_ctx *c = p;
    ul_linear_forward(c->out, c->in, c->w, c->b, c->N, c->I, c->O);
    return sum_prod(c->out, c->G, (size_t)c->N * c->O);
}

START_TEST(test_linear_forward_hand)
{
    /* out = in·Wᵀ + b with in (1,2) = [1, 2], W (2,2) = [[1, 2], [3, 4]], b = [10, 20]. */
    float in[2] = {1, 2}, w[4] = {1, 2, 3, 4}, b[2] = {10, 20}, out[2];
    ul_linear_forward(out, in, w, b, 1, 2, 2);
    ck_assert_msg(out[0] == 15.0f && out[1] == 31.0f, "expected [15, 31], got [%g, %g]",
                  out[0], out[1]);
}
END_TEST

START_TEST(test_linear_grad)
{
    ul_rng r;
    ul_rng_seed(&r, 1, 0);
    linear_ctx c = {.N = 3, .I = 5, .O = 4};
    c.in = rand_buf(&r, 15, -1, 1);
    c.w = rand_buf(&r, 20, -1, 1);
    c.b = rand_buf(&r, 4, -1, 1);
    c.out = falloc(12);
    c.G = rand_buf(&r, 12, -1, 1);
    float *din = falloc(15), *dw = falloc(20), *db = falloc(4);
    linear_loss(&c);
    ul_linear_backward(din, dw, db, c.G, c.in, c.w, c.N, c.I, c.O);
    check_fd("linear din", linear_loss, &c, c.in, din, 15, 1e-2f);
    check_fd("linear dw", linear_loss, &c, c.w, dw, 20, 1e-2f);
    check_fd("linear db", linear_loss, &c, c.b, db, 4, 1e-2f);
    free(c.in), free(c.w), free(c.b), free(c.out), free(c.G), free(din), free(dw), free(db);
}
END_TEST

/* ---- conv2d ----------------------------------------------------------------- */

typedef struct {
    int N, C, H, W, K, R, S, stride, pad, bias;
} conv_case;

/* Covers kernels 1, 3, 5×3, 2×4 and whole-input, strides 1–3, paddings 0–2,
 * and every blocking of ops_conv.c: several images per block (with a ragged
 * last block), a few output rows per block (ragged too), single rows wider
 * than a block, and the scratch-free 1×1 path. */
static const conv_case conv_cases[] = {
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1},   {3, 2, 9, 7, 3, 5, 3, 2, 2, 0},
    {2, 2, 8, 8, 3, 1, 1, 1, 0, 1},   {2, 3, 6, 6, 2, 1, 1, 2, 0, 0},
    {2, 2, 5, 5, 3, 3, 3, 2, 0, 1},   {2, 2, 32, 32, 3, 3, 3, 1, 1, 1},
    {2, 3, 32, 32, 4, 1, 1, 1, 0, 0}, {4, 2, 20, 20, 3, 1, 1, 1, 0, 1},
    {5, 3, 10, 10, 4, 3, 3, 1, 2, 0}, {1, 1, 4, 4, 1, 4, 4, 1, 0, 1},
    {3, 2, 11, 9, 3, 2, 4, 3, 1, 1},   {2, 2, 23, 19, 3, 3, 3, 1, 1, 1},
    {1, 1, 3, 300, 2, 3, 3, 1, 1, 1},
    /* The packed GEMM's cases (pack_gemm.c): 16-wide output rows, 8×8 and
     * 4×4 images several to a block, C·R·S and K deeper than one k-block
     * (256), K not a multiple of the micro-kernel's 6 rows. */
    {2, 4, 16, 16, 20, 3, 3, 1, 1, 1}, {3, 40, 8, 8, 5, 3, 3, 1, 1, 0},
    {3, 6, 4, 4, 7, 3, 3, 1, 1, 0},    {1, 2, 6, 6, 300, 3, 3, 1, 1, 0},
    /* A wide strided kernel (1×18, stride 2, pad 3): output rows of 17,
     * a panel and one lane of the next. */
    {2, 2, 5, 44, 3, 1, 18, 2, 3, 1},
    /* 1×1 strided (the subsampled pointwise path of the one-thread entry
     * points): stride 3 on odd sizes that leave trailing rows and columns
     * unread, and groups of 4 images for 64 channels at 16×16 outputs with
     * a ragged last group (6 = 4 + 2). */
    {3, 5, 7, 9, 4, 1, 1, 3, 0, 1}, {6, 64, 32, 32, 40, 1, 1, 2, 0, 1},
    /* 3×3 stride 2, pad 1 with few channels (the direct path's stride-2
     * forward pass: even and odd columns apart) with output rows of 16
     * and 32, the second clipped by the right edge (63 columns); of 14
     * (odd sizes) and of 23 (two passes of 16 columns, the second
     * partial). */
    {2, 3, 32, 32, 5, 3, 3, 2, 1, 1}, {1, 2, 5, 63, 4, 3, 3, 2, 1, 0},
    {2, 3, 7, 27, 5, 3, 3, 2, 1, 1},  {1, 4, 9, 45, 6, 3, 3, 2, 1, 1},
    /* ... and with 9 channels into 17, too many for it: the shifted
     * path's stride-2 copies, the same row lengths (14 and 23 through the
     * packed GEMM's table gather where it has a kernel of its own). */
    {2, 9, 32, 32, 17, 3, 3, 2, 1, 1}, {1, 9, 5, 63, 17, 3, 3, 2, 1, 0},
    {2, 9, 7, 27, 17, 3, 3, 2, 1, 1},  {1, 9, 9, 45, 17, 3, 3, 2, 1, 1},
    /* ... and with 17 input channels, too many for those copies: the
     * packed GEMM's stride-2 packer, output rows of 16. */
    {2, 17, 32, 32, 5, 3, 3, 2, 1, 1},
    /* A row of 550 outputs, more than the packed GEMM packs at once (512):
     * the second call starts inside the row. */
    {1, 2, 3, 1100, 3, 3, 3, 2, 1, 0},
    /* Rows of 16 packed without the table into 32-lane panels (the
     * AVX-512 kernel's): 17 rows of a stride-2 layer with 17 channels, and
     * a 5×3 kernel's 13 rows at stride 1, each an odd number of 16-lane
     * chunks, so that a last panel is half full. */
    {1, 17, 33, 32, 5, 3, 3, 2, 1, 1}, {1, 3, 15, 16, 4, 5, 3, 1, 1, 1},
    /* The AVX-512 direct path (ops_conv_kvec.c) with stride 2: rows of 14
     * (tiles of 7) with 16 → 32 channels over a ragged batch of images
     * (3 + 2 padded copies); rows of 7 and 5 output rows, 20 channels (the
     * second register 4 lanes full), no bias; rows of 16 with one register
     * of channels (tiles of 16); rows of 4 with three registers (tiles of
     * two rows, then four rows of one register), square and with 7 output
     * rows (both tiles cut short at the bottom); rows of 14 with one
     * register (tiles of 14); rows of 8 with three registers; 70 input
     * channels (two chunks, 64 + 6, the second adding to the first). */
    {2, 6, 16, 16, 48, 3, 3, 2, 1, 1},  {3, 70, 7, 7, 20, 3, 3, 2, 1, 1},
    /* ... and with stride 1 (few channels): rows of 16 with 13 outputs,
     * one input channel into 32 on rows of 28 (two registers, tiles of
     * 7), rows of 8 with 13 channels each way, rows of 4 with 5 output
     * rows (four-row tiles, then one row), no bias; 16 channels each way
     * (Winograd's shape otherwise) on rows of 14; a 3-channel stem into 64
     * on rows of 32 (four registers, tiles of 8). */
    {2, 8, 9, 16, 13, 3, 3, 1, 1, 1},   {1, 1, 6, 28, 32, 3, 3, 1, 1, 1},
    {2, 13, 7, 8, 13, 3, 3, 1, 1, 1},   {2, 10, 5, 4, 9, 3, 3, 1, 1, 0},
    {2, 16, 9, 14, 16, 3, 3, 1, 1, 1},  {1, 3, 8, 32, 64, 3, 3, 1, 1, 1},
    /* The direct path for few channels (ops_conv_small.c): one output
     * channel (32-column passes, a ragged 8-column tail), a 1-channel 28×28
     * stem into 16, and 32 outputs (groups of 4) on rows of 16 + 16 + 1. */
    {2, 8, 5, 40, 1, 3, 3, 1, 1, 1}, {2, 1, 28, 28, 16, 3, 3, 1, 1, 0},
    {2, 3, 9, 33, 32, 3, 3, 1, 1, 1},
    /* The shifted path in the one-thread entry points too: 11 channels
     * into 17, too many for the direct path and too few for Winograd's;
     * then 13 into 20, where the forward pass takes Winograd's path and
     * the backward pass the shifted one (Winograd's too where its
     * forward products have the AVX-512 kernel). 13 into 14 takes the
     * direct path (at most UL_SMALL_CONV_BOTH both ways; Winograd's on
     * the AVX-512 kind): three groups of 6 output channels, the last
     * with 2 (forward) or 1 (dX) of them; 13 into 8 the direct path on
     * every kind, groups 6 + 2 forward and 6 + 6 + 1 for dX. */
    {2, 11, 10, 10, 17, 3, 3, 1, 1, 1}, {2, 13, 9, 11, 20, 3, 3, 1, 1, 1},
    {2, 13, 9, 11, 14, 3, 3, 1, 1, 1},  {2, 13, 9, 11, 8, 3, 3, 1, 1, 1},
    /* The shifted path with rows of one and a half panels (23 columns). */
    {2, 5, 9, 23, 6, 3, 3, 1, 1, 1},
    /* Its weight gradient (conv_shifted_dw): one 30×30 image per unit,
     * three units over the threads, 8 input channels (a full and a partial
     * panel of 6) and 17 outputs (one lane in the second panel of 16); then
     * six 12×12 images per unit, the last unit ragged (7 = 6 + 1). */
    {3, 8, 30, 30, 17, 3, 3, 1, 1, 0}, {7, 4, 12, 12, 4, 3, 3, 1, 1, 1},
    /* The AVX-512 Winograd path (ops_conv_kwino.c, channel counts
     * multiples of 16 up to 64): 16 each way on 28×28 over three images (a
     * group of two padded copies and a ragged one of one, batches of 32
     * tiles that span images, 98 % 32 = 2 tiles in the last); 32 each way
     * on 14×14, clipped edge tiles, no bias; 64 on 7×7, five images in one
     * group (20 tiles: a batch of 12 and one of 8); 16 into 48 (three
     * registers of output channels, taken one at a time); 48 into 32 (two
     * registers, the product kernel's depth 48); 3×3 images, smaller
     * than a tile; 17×30, where the 16-pixel blocks of the input copy
     * cross rows and the last is partial. */
    {3, 16, 28, 28, 16, 3, 3, 1, 1, 1}, {2, 32, 14, 14, 32, 3, 3, 1, 1, 0},
    {5, 64, 7, 7, 64, 3, 3, 1, 1, 1},   {2, 16, 5, 9, 48, 3, 3, 1, 1, 1},
    {3, 48, 6, 6, 32, 3, 3, 1, 1, 1},   {1, 64, 3, 3, 16, 3, 3, 1, 1, 1},
    {2, 16, 17, 30, 16, 3, 3, 1, 1, 1},
    /* The Winograd path (ops_wino.c, 16 or more channels each way): odd
     * sizes (clipped edge tiles), channels not a multiple of the
     * micro-kernel's 6 rows or 16 lanes, blocks of tiles that span images
     * and end in a partial panel (3·100 tiles against blocks of 256), a
     * block size cut for 130 channels, and 4×4 images. */
    {3, 17, 20, 20, 20, 3, 3, 1, 1, 1}, {2, 16, 7, 9, 33, 3, 3, 1, 1, 0},
    {2, 130, 6, 5, 16, 3, 3, 1, 1, 1}, {5, 24, 4, 4, 18, 3, 3, 1, 1, 1},
    /* Wide enough for the path both ways at the default thresholds. */
    {2, 256, 4, 4, 260, 3, 3, 1, 1, 1},
};
#define N_CONV_CASES ((int)(sizeof conv_cases / sizeof conv_cases[0]))
/* The last five cases run with the Winograd path forced (ul_wino_force),
 * so that narrow shapes cover its edge cases, except the last, which needs
 * no forcing. Counted from the end, so that cases added before them keep
 * their meaning. */
#define FIRST_WINO_CASE (N_CONV_CASES - 5)
#define DEFAULT_WINO_CASE (N_CONV_CASES - 1)

typedef struct {
    ul_conv_shape s;
    size_t nin, nw, nout, nscratch;
    float *in, *w, *b, *out, *G, *scratch;
} conv_ctx;

#define CANARY 16

static void conv_ctx_init(conv_ctx *c, const conv_case *k, uint64_t seed)
{
    ck_assert(ul_conv_shape_init(&c->s, k->N, k->C, k->H, k->W, k->K, k->R, k->S, k->stride,
                                 k->pad));
    ul_rng r;
    ul_rng_seed(&r, seed, 0);
    c->nin = (size_t)k->N * k->C * k->H * k->W;
    c->nw = (size_t)k->K * k->C * k->R * k->S;
    c->nout = (size_t)k->N * k->K * c->s.P * c->s.Q;
    c->nscratch = ul_conv2d_scratch(&c->s);
    c->in = rand_buf(&r, c->nin, -1, 1);
    c->w = rand_buf(&r, c->nw, -1, 1);
    c->b = k->bias ? rand_buf(&r, (size_t)k->K, -1, 1) : NULL;
    c->out = falloc(c->nout);
    c->G = rand_buf(&r, c->nout, -1, 1);
    /* A canary after the declared scratch size catches overruns. */
    c->scratch = falloc(c->nscratch + CANARY);
    fill_nan(c->scratch, c->nscratch);
    for (int i = 0; i < CANARY; i++)
        c->scratch[c->nscratch + i] = 12345.0f;
}

static void conv_ctx_check_canary(const conv_ctx *c)
{
    for (int i = 0; i < CANARY; i++)
        ck_assert_msg(c->scratch[c->nscratch + i] == 12345.0f,
                      "conv wrote past ul_conv2d_scratch() = %zu floats", c->nscratch);
}

static void conv_ctx_free(conv_ctx *c)
{
    free(c->in), free(c->w), free(c->b), free(c->out), free(c->G), free(c->scratch);
}

/* Gradients that start random (backward must add to them) and copies of
 * them for the reference. */
typedef struct {
    float *din, *dw, *db, *din_ref, *dw_ref, *db_ref;
} conv_grads;

static conv_grads conv_grads_new(const conv_ctx *c, size_t K, uint64_t seed)
{
    ul_rng r;
    ul_rng_seed(&r, seed, 0);
    conv_grads g;
    g.din = rand_buf(&r, c->nin, -1, 1);
    g.dw = rand_buf(&r, c->nw, -1, 1);
    g.db = rand_buf(&r, K, -1, 1);
    g.din_ref = falloc(c->nin);
    g.dw_ref = falloc(c->nw);
    g.db_ref = falloc(K);
    memcpy(g.din_ref, g.din, c->nin * sizeof(float));
    memcpy(g.dw_ref, g.dw, c->nw * sizeof(float));
    memcpy(g.db_ref, g.db, K * sizeof(float));
    return g;
}

static void conv_grads_free(conv_grads *g)
{
    free(g->din), free(g->dw), free(g->db), free(g->din_ref), free(g->dw_ref), free(g->db_ref);
}

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    ul_conv2d_forward(c->out, c->in, c->w, c->b, &c->s, c->scratch);
    return sum_prod(c->out, c->G, c->nout);
}

/* ---- the packed GEMM ------------------------------------------------------------- */

typedef struct dense_r {
    const float *b;  /* k×n, row-major */
    int n;
} dense_r;

static void pack_dense(float *dst, int w, int j0, int nj, int k0, int kc, const void *ctx)
{
    const dense_r *r = ctx;
    for (int jp = 0; jp < nj; jp += w)
        for (int kk = 0; kk < kc; kk++)
            for (int l = 0; l < w; l++)
                dst[(size_t)jp * kc + (size_t)kk * w + l] =
                    jp + l < nj ? r->b[(size_t)(k0 + kk) * r->n + j0 + jp + l] : 0.0f;
}

/* C = A·B + beta·C against a double-precision triple loop, at sizes that
 * cross every panel and block edge (6/16-wide panels, k-blocks of 256,
 * column blocks of 512), with L packed from A and from Aᵀ, on the kernel's
 * own tile orientation and on the transposed one. beta = 0 must not read C
 * (it starts as NaN). */
START_TEST(test_pk_gemm_vs_naive)
{
    const ul_pk *pk = ul_pk_get();
    const char *off = getenv("UNLEARN_PACKED_GEMM");
    if (off && strcmp(off, "0") == 0) {
        /* The switch the ops-blis run uses must really turn the path off. */
        ck_assert_msg(pk == NULL, "UNLEARN_PACKED_GEMM=0 left the packed GEMM on");
        return;
    }
    ck_assert_msg(pk != NULL, "BLIS offers no micro-kernel here");
    static const int dims[][3] = {{1, 1, 1},    {7, 15, 5},    {16, 16, 256}, {37, 33, 300},
                                  {6, 600, 40}, {50, 17, 600}, {13, 1030, 9}};
    ul_rng r;
    ul_rng_seed(&r, 41, 0);
    for (int forced = 0; forced < 2; forced++) {
        ul_pk_force_cols(forced);
        pk = ul_pk_get();
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (int trans = 0; trans < 2; trans++)
                for (int bi = 0; bi < 2; bi++) {
                    const int m = dims[d][0], n = dims[d][1], k = dims[d][2];
                    const float beta = bi ? 0.5f : 0.0f;
                    float *a = rand_buf(&r, (size_t)m * k, -1, 1);
                    float *b = rand_buf(&r, (size_t)k * n, -1, 1);
                    float *c = rand_buf(&r, (size_t)m * n, -1, 1);
                    float *c0 = falloc((size_t)m * n);
                    memcpy(c0, c, (size_t)m * n * sizeof(float));
                    if (beta == 0.0f)
                        for (size_t i = 0; i < (size_t)m * n; i++)
                            c[i] = NAN;
                    /* a as stored: m×k row-major, or k×m (its transpose). */
                    float *at = falloc((size_t)m * k);
                    for (int i = 0; i < m; i++)
                        for (int kk = 0; kk < k; kk++)
                            at[(size_t)kk * m + i] = a[(size_t)i * k + kk];
                    float *lp = falloc64(ul_pk_l_size(pk, m, k));
                    float *rb = falloc64(ul_pk_r_size(pk, n, k));
                    if (trans)
                        ul_pk_pack_l(pk, lp, at, m, k, m, true);
                    else
                        ul_pk_pack_l(pk, lp, a, m, k, k, false);
                    dense_r dr = {b, n};
                    ul_pk_gemm(pk, m, n, k, lp, pack_dense, &dr, beta, c, n, rb);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double want = beta * (double)c0[(size_t)i * n + j], mag = 1.0;
                            for (int kk = 0; kk < k; kk++) {
                                double t = (double)a[(size_t)i * k + kk] * b[(size_t)kk * n + j];
                                want += t;
                                mag += fabs(t);
                            }
                            double got = c[(size_t)i * n + j];
                            ck_assert_msg(fabs(got - want) <= 1e-6 * mag,
                                          "%dx%dx%d (trans %d, beta %g, transposed tiles %d): "
                                          "C[%d][%d] = %.8g, expected %.8g",
                                          m, n, k, trans, beta, forced, i, j, got, want);
                        }
                    free(a), free(b), free(c), free(c0), free(at), free(lp), free(rb);
                }
    }
    ul_pk_force_cols(false);
}
END_TEST

/* Every shape class of the transpose: whole 8×8 blocks, 6-row L panels,
 * ragged rows and columns (a ragged end of 8 columns or more is done as
 * the last eight again), fewer than 8 columns (masked loads), single rows
 * and columns, inside strided buffers whose other values must stay as they
 * were. */
START_TEST(test_transpose_vs_naive)
{
    static const int dims[][2] = {{8, 8},  {6, 16}, {16, 784}, {6, 37}, {3, 9},  {1, 20},
                                  {20, 1}, {13, 27}, {7, 8},   {17, 300}, {8, 7}, {8, 2},
                                  {6, 4},  {13, 5}, {3, 6},   {16, 28}, {8, 14}};
    ul_rng r;
    ul_rng_seed(&r, 43, 0);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        const int rows = dims[d][0], cols = dims[d][1];
        const size_t ss = (size_t)cols + 5, ds = (size_t)rows + 3;
        float *src = rand_buf(&r, (size_t)rows * ss, -1, 1);
        float *dst = rand_buf(&r, (size_t)cols * ds, -1, 1);
        float *want = falloc((size_t)cols * ds);
        memcpy(want, dst, (size_t)cols * ds * sizeof(float));
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                want[(size_t)j * ds + i] = src[(size_t)i * ss + j];
        ul_transpose(src, ss, dst, ds, rows, cols);
        for (size_t i = 0; i < (size_t)cols * ds; i++)
            ck_assert_msg(dst[i] == want[i],
                          "transpose %dx%d: dst[%zu] (row %zu, column %zu) = %g, expected %g",
                          rows, cols, i, i / ds, i % ds, dst[i], want[i]);
        free(src), free(dst), free(want);
    }
}
END_TEST

/* A product's operands for op(A)·op(B) + beta·C (m×n, depth k, rows
 * padded to lda, ldb, ldc), random, and want, its double-precision result;
 * with beta 0, C starts as NaN, so that it must be overwritten. */
typedef struct {
    float *a, *b, *c, *want;
} gemm_case;

static gemm_case gemm_case_new(ul_rng *r, bool ta, bool tb, int m, int n, int k, int lda,
                               int ldb, int ldc, float beta)
{
    const int ar = ta ? k : m, br = tb ? n : k;
    gemm_case g;
    g.a = rand_buf(r, (size_t)ar * lda, -1, 1);
    g.b = rand_buf(r, (size_t)br * ldb, -1, 1);
    g.c = rand_buf(r, (size_t)m * ldc, -1, 1);
    g.want = falloc((size_t)m * ldc);
    memcpy(g.want, g.c, (size_t)m * ldc * sizeof(float));
    gemm_naive(ta, tb, m, n, k, 1.0f, g.a, lda, g.b, ldb, beta, g.want, ldc);
    if (beta == 0.0f)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                g.c[(size_t)i * ldc + j] = NAN;
    return g;
}

/* C against want, and the padding of C's rows untouched. */
static void gemm_case_check(const char *what, const gemm_case *g, int m, int n, int ldc)
{
    assert_close(what, g->c, g->want, (size_t)m * ldc, REF_RTOL);
    for (int i = 0; i < m; i++)
        for (int j = n; j < ldc; j++)
            ck_assert_msg(g->c[(size_t)i * ldc + j] == g->want[(size_t)i * ldc + j],
                          "%s wrote into the padding at (%d,%d)", what, i, j);
}

static void gemm_case_free(gemm_case *g) { free(g->a), free(g->b), free(g->c), free(g->want); }

/* One micro-tile through ul_pk_tile, C (m×n, row stride ldc) = a·b +
 * beta·C against a double-precision product, for every kernel geometry
 * there is: the main one (AVX-512's computes its tiles transposed), the
 * same driven through the transposed orientation, and the native one the
 * Winograd and shifted-copy paths use. Whole and partial tiles, beta 0
 * (C starts as NaN) and 0.5; the columns past n in each row stay as they
 * were. */
START_TEST(test_pk_tile_vs_naive)
{
    if (!ul_pk_get())
        return;
    ul_rng r;
    ul_rng_seed(&r, 45, 0);
    for (int variant = 0; variant < 3; variant++) {
        ul_pk_force_cols(variant == 1);
        const ul_pk *pk = variant == 2 ? ul_pk_get_native() : ul_pk_get();
        if (!pk)
            continue;
        const int sizes[][2] = {{pk->wl, pk->wr}, {pk->wl - 1, pk->wr - 3}, {1, 1}};
        for (int si = 0; si < 3; si++)
            for (int bi = 0; bi < 2; bi++) {
                const int m = sizes[si][0] > 0 ? sizes[si][0] : 1;
                const int n = sizes[si][1] > 0 ? sizes[si][1] : 1, k = 37, ldc = n + 5;
                const float beta = bi ? 0.5f : 0.0f;
                float *lp = falloc64((size_t)pk->wl * k), *rp = falloc64((size_t)pk->wr * k);
                float *a = rand_buf(&r, (size_t)m * k, -1, 1), *b = rand_buf(&r, (size_t)k * n, -1, 1);
                float *c = rand_buf(&r, (size_t)m * ldc, -1, 1), *c0 = falloc((size_t)m * ldc);
                memcpy(c0, c, (size_t)m * ldc * sizeof(float));
                for (int i = 0; i < m && beta == 0.0f; i++)
                    for (int j = 0; j < n; j++)
                        c[(size_t)i * ldc + j] = NAN;
                ul_pk_pack_l(pk, lp, a, m, k, k, false);
                ul_pk_pack_rr(pk, rp, b, n, k, n, false);
                ul_pk_tile(pk, m, n, k, lp, rp, beta, c, ldc);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < ldc; j++) {
                        const double got = c[(size_t)i * ldc + j];
                        if (j >= n) {
                            ck_assert_msg(got == c0[(size_t)i * ldc + j],
                                          "tile %dx%d (variant %d) wrote column %d", m, n,
                                          variant, j);
                            continue;
                        }
                        double want = beta * (double)c0[(size_t)i * ldc + j], mag = 1.0;
                        for (int kk = 0; kk < k; kk++) {
                            const double t = (double)a[(size_t)i * k + kk] * b[(size_t)kk * n + j];
                            want += t;
                            mag += fabs(t);
                        }
                        ck_assert_msg(fabs(got - want) <= 1e-6 * mag,
                                      "tile %dx%d (variant %d, beta %g): C[%d][%d] = %.8g, "
                                      "expected %.8g",
                                      m, n, variant, beta, i, j, got, want);
                    }
                free(lp), free(rp), free(a), free(b), free(c), free(c0);
            }
    }
    ul_pk_force_cols(false);
}
END_TEST

/* The Winograd forward products' kernel: the main one exactly when it is
 * AVX-512's (transposed tiles, 32-lane R panels) and UNLEARN_PACKED_ARCH
 * does not pin the packed paths (the ops-second-blis run pins them). */
START_TEST(test_wide_kernel_choice)
{
    const ul_pk *main_pk = ul_pk_get(), *wide = ul_pk_get_wide();
    const char *pin = getenv("UNLEARN_PACKED_ARCH");
    if (pin && *pin)
        ck_assert_msg(wide == NULL, "UNLEARN_PACKED_ARCH=%s left the wide kernel on", pin);
    else if (main_pk && !ul_pk_native(main_pk) && main_pk->wr == 32 && main_pk->wl <= 16)
        ck_assert_msg(wide == main_pk, "the AVX-512 kernel was not offered to Winograd");
    else
        ck_assert_msg(wide == NULL, "a %dx%d kernel was offered as the wide one",
                      main_pk ? main_pk->wl : 0, main_pk ? main_pk->wr : 0);
}
END_TEST

/* ul_sgemm_local against a double-precision triple loop for every
 * transposition, at sizes crossing the panel, depth-block (256) and
 * column-block (512) edges, on both tile orientations, with exactly the
 * scratch it asks for (a canary after it must survive) and with too
 * little (the bli_sgemm fallback). beta = 0 must not read C (NaN); C's
 * padding columns must stay untouched. */
START_TEST(test_sgemm_local_vs_naive)
{
    static const int dims[][3] = {{1, 1, 1},    {64, 26, 784}, {7, 530, 300},
                                  {13, 1030, 9}, {6, 16, 256}, {37, 33, 257}};
    ul_rng r;
    ul_rng_seed(&r, 44, 0);
    const ul_pk *pk = ul_pk_get();
    for (int forced = 0; forced < (pk ? 2 : 1); forced++) {
        ul_pk_force_cols(forced);
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (int combo = 0; combo < 8; combo++) {
                const bool ta = combo & 1, tb = combo & 2, short_scratch = combo & 4;
                const int m = dims[d][0], n = dims[d][1], k = dims[d][2];
                const float beta = (d + combo) % 2 ? 1.0f : 0.0f;
                const int ac = ta ? m : k, bc = tb ? k : n;
                const int lda = ac + 2, ldb = bc + 1, ldc = n + 3;
                gemm_case g = gemm_case_new(&r, ta, tb, m, n, k, lda, ldb, ldc, beta);
                const size_t need = ul_sgemm_local_scratch(m, n, k);
                ck_assert_msg(!pk || need > 0, "no scratch asked for with the packed GEMM on");
                ck_assert_msg(need % 16 == 0, "scratch of %zu floats is not a multiple of 16",
                              need);
                const size_t give = short_scratch && need ? need - 16 : need;
                float *scr = falloc64(give);
                for (int i = 0; i < 16; i++)
                    scr[give + i] = 12345.0f;
                ul_sgemm_local(ta, tb, m, n, k, g.a, lda, g.b, ldb, beta, g.c, ldc, scr, give);
                char what[96];
                snprintf(what, sizeof what, "sgemm_local(ta=%d,tb=%d,%dx%dx%d,%s,cols %d)", ta,
                         tb, m, n, k, short_scratch ? "short scratch" : "scratch", forced);
                gemm_case_check(what, &g, m, n, ldc);
                for (int i = 0; i < 16; i++)
                    ck_assert_msg(scr[give + i] == 12345.0f, "%s wrote past its scratch", what);
                gemm_case_free(&g);
                free(scr);
            }
    }
    ul_pk_force_cols(false);
}
END_TEST

/* The dot-product form of A·Bᵀ against a double-precision triple loop:
 * every edge block shape (3×4 groups and their remainders), depths with
 * and without a tail of k % 8 and across the 512-deep blocks, beta 0 on a
 * NaN C and beta 0.5, strided rows whose padding must stay untouched.
 * On a CPU without AVX2 and FMA it must decline without writing. */
START_TEST(test_sgemm_dot_vs_naive)
{
    static const int dims[][3] = {{1, 1, 1}, {3, 4, 8}, {5, 7, 13}, {64, 26, 784},
                                  {7, 10, 1030}, {2, 33, 3}, {11, 1, 512}};
    ul_rng r;
    ul_rng_seed(&r, 46, 0);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int bi = 0; bi < 2; bi++) {
            const int m = dims[d][0], n = dims[d][1], k = dims[d][2];
            const int lda = k + 3, ldb = k + 1, ldc = n + 2;
            const float beta = bi ? 0.5f : 0.0f;
            gemm_case g = gemm_case_new(&r, false, true, m, n, k, lda, ldb, ldc, beta);
            float *before = falloc((size_t)m * ldc);
            memcpy(before, g.c, (size_t)m * ldc * sizeof(float));
            char what[64];
            snprintf(what, sizeof what, "sgemm_dot(%dx%dx%d, beta %g)", m, n, k, beta);
            if (!ul_sgemm_dot(m, n, k, g.a, lda, g.b, ldb, beta, g.c, ldc))
                ck_assert_msg(!memcmp(g.c, before, (size_t)m * ldc * sizeof(float)),
                              "%s declined but wrote C", what);
            else
                gemm_case_check(what, &g, m, n, ldc);
            gemm_case_free(&g);
            free(before);
        }
}
END_TEST

/* The one-thread linear forward (bias added) against the public one's
 * formula, computed here in double precision. */
START_TEST(test_linear_forward_local)
{
    const int N = 13, I = 300, O = 21;
    ul_rng r;
    ul_rng_seed(&r, 45, 0);
    float *in = rand_buf(&r, (size_t)N * I, -1, 1), *w = rand_buf(&r, (size_t)O * I, -1, 1);
    float *b = rand_buf(&r, O, -1, 1), *out = falloc((size_t)N * O);
    float *want = falloc((size_t)N * O);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double acc = b[o];
            for (int i = 0; i < I; i++)
                acc += (double)in[(size_t)n * I + i] * w[(size_t)o * I + i];
            want[(size_t)n * O + o] = (float)acc;
            out[(size_t)n * O + o] = NAN;
        }
    const size_t need = ul_sgemm_local_scratch(N, O, I);
    float *scr = falloc64(need);
    ul_linear_forward_local(out, in, w, b, N, I, O, scr, need);
    assert_close("linear_forward_local", out, want, (size_t)N * O, REF_RTOL);
    free(in), free(w), free(b), free(out), free(want), free(scr);
}
END_TEST

START_TEST(test_conv_shape_init)
{
    ul_conv_shape s;
    ck_assert(ul_conv_shape_init(&s, 2, 3, 32, 30, 8, 3, 5, 2, 1));
    /* PyTorch: floor((H + 2·pad − R)/stride) + 1. */
    ck_assert_msg(s.P == 16 && s.Q == 14, "expected P=16 Q=14, got P=%d Q=%d", s.P, s.Q);
    ck_assert(!ul_conv_shape_init(&s, 2, 3, 2, 2, 8, 5, 5, 1, 1));
    ck_assert(!ul_conv_shape_init(&s, 2, 3, 8, 8, 8, 3, 3, 0, 1));
    ck_assert(!ul_conv_shape_init(&s, 0, 3, 8, 8, 8, 3, 3, 1, 1));
}
END_TEST

static void conv_vs_ref(int _i);

START_TEST(test_conv_vs_ref)
{
    conv_vs_ref(_i);
}
END_TEST

/* The shape of conv case i. */
static ul_conv_shape conv_case_shape(int i)
{
    ul_conv_shape s;
    const conv_case *k = &conv_cases[i];
    ck_assert(ul_conv_shape_init(&s, k->N, k->C, k->H, k->W, k->K, k->R, k->S, k->stride,
                                 k->pad));
    return s;
}

/* The cases the direct path for few channels takes, through its baseline
 * build (the one a CPU without AVX2+FMA runs; the AVX-512 path off). */
START_TEST(test_conv_small_baseline)
{
    const ul_conv_shape s = conv_case_shape(_i);
    if (!ul_conv_small_fwd_ok(&s))
        return;
    ul_conv_small_force_baseline(true);
    ul_conv_kvec_force_off(true);
    conv_vs_ref(_i);
    ul_conv_kvec_force_off(false);
    ul_conv_small_force_baseline(false);
}
END_TEST

/* The cases the AVX-512 direct path takes, with it turned off: the paths
 * those layers take on other CPUs (and took before it). */
START_TEST(test_conv_kvec_off)
{
    const ul_conv_shape s = conv_case_shape(_i);
    if (!ul_conv_kvec_ok(&s))
        return;
    ul_conv_kvec_force_off(true);
    conv_vs_ref(_i);
    ul_conv_kvec_force_off(false);
}
END_TEST

/* The cases the AVX-512 Winograd path takes, with it turned off: the
 * direct path with output channels in registers or the general Winograd
 * path, as before it (and the direct one off as well: the paths of CPUs
 * without AVX-512). */
START_TEST(test_conv_kwino_off)
{
    const ul_conv_shape s = conv_case_shape(_i);
    if (!ul_conv_kwino_ok(&s))
        return;
    ul_conv_kwino_force_off(true);
    conv_vs_ref(_i);
    ul_conv_kvec_force_off(true);
    conv_vs_ref(_i);
    ul_conv_kvec_force_off(false);
    ul_conv_kwino_force_off(false);
}
END_TEST

/* The same with the micro-kernel driven through the transposed-tile path
 * that column-preferring kernels (e.g. BLIS's skx) take. */
START_TEST(test_conv_vs_ref_transposed_tiles)
{
    ul_pk_force_cols(true);
    conv_vs_ref(_i);
    ul_pk_force_cols(false);
}
END_TEST

static void conv_vs_ref(int _i)
{
    const conv_case *k = &conv_cases[_i];
    conv_ctx c;
    /* Before the scratch is sized: the path's scratch counts only when
     * the path is taken. */
    ul_wino_force(_i >= FIRST_WINO_CASE && _i != DEFAULT_WINO_CASE ? 1 : 0);
    conv_ctx_init(&c, k, 200 + (uint64_t)_i);
    char what[96];
    snprintf(what, sizeof what, "conv case %d (%dx%d k%dx%d s%d p%d)", _i, k->H, k->W, k->R,
             k->S, k->stride, k->pad);
    /* The Winograd cases must take that path whenever a micro-kernel is
     * there in its own orientation (not in ops-blis): the main BLIS
     * instance's, or the second one's where the main kernel is skx's. */
    const ul_pk *pk = ul_pk_get_native();
    if (_i >= FIRST_WINO_CASE && pk &&
        (_i != DEFAULT_WINO_CASE || !getenv("UNLEARN_WINOGRAD")))
        ck_assert_msg(ul_wino_ok(&c.s, false) && ul_wino_ok(&c.s, true),
                      "%s: expected the Winograd path", what);

    float *want = falloc(c.nout);
    ul_conv2d_forward_ref(want, c.in, c.w, c.b, &c.s);
    conv_loss(&c);
    conv_ctx_check_canary(&c);
    assert_close(what, c.out, want, c.nout, REF_RTOL);

    /* Gradients start non-zero: backward must add, not overwrite. */
    size_t K = (size_t)k->K;
    conv_grads gr = conv_grads_new(&c, K, 300 + (uint64_t)_i);
    float *din = gr.din, *dw = gr.dw, *db = gr.db;
    float *din_ref = gr.din_ref, *dw_ref = gr.dw_ref, *db_ref = gr.db_ref;
    ul_conv2d_backward(din, dw, db, c.G, c.in, c.w, &c.s, c.scratch);
    ul_conv2d_backward_ref(din_ref, dw_ref, db_ref, c.G, c.in, c.w, &c.s);
    conv_ctx_check_canary(&c);
    assert_close("conv din vs ref", din, din_ref, c.nin, REF_RTOL);
    assert_close("conv dw vs ref", dw, dw_ref, c.nw, REF_RTOL);
    assert_close("conv db vs ref", db, db_ref, K, REF_RTOL);

    /* Each gradient alone, the others NULL. */
    size_t nmax = c.nin > c.nw ? c.nin : c.nw;
    float *alone = falloc(nmax), *alone_ref = falloc(nmax);
    ul_conv2d_backward(alone, NULL, NULL, c.G, c.in, c.w, &c.s, c.scratch);
    ul_conv2d_backward_ref(alone_ref, NULL, NULL, c.G, c.in, c.w, &c.s);
    assert_close("conv din alone", alone, alone_ref, c.nin, REF_RTOL);
    memset(alone, 0, nmax * sizeof(float));
    memset(alone_ref, 0, nmax * sizeof(float));
    ul_conv2d_backward(NULL, alone, NULL, c.G, c.in, c.w, &c.s, c.scratch);
    ul_conv2d_backward_ref(NULL, alone_ref, NULL, c.G, c.in, c.w, &c.s);
    assert_close("conv dw alone", alone, alone_ref, c.nw, REF_RTOL);
    conv_ctx_check_canary(&c);

    /* The one-thread entry points the batch-parallel passes call, with
     * their own (64-byte aligned) scratch size; gradients add again. */
    float *local = NULL;
    const size_t nlocal = ul_conv2d_local_scratch(&c.s);
    ck_assert_int_eq(posix_memalign((void **)&local, 64, (nlocal + CANARY) * sizeof(float)), 0);
    fill_nan(local, nlocal);
    for (int i = 0; i < CANARY; i++)
        local[nlocal + i] = 12345.0f;
    float *out_local = falloc(c.nout);
    ul_conv2d_forward_local(out_local, c.in, c.w, c.b, &c.s, local);
    assert_close("conv forward local", out_local, want, c.nout, REF_RTOL);
    memcpy(din_ref, din, c.nin * sizeof(float));
    memcpy(dw_ref, dw, c.nw * sizeof(float));
    memcpy(db_ref, db, K * sizeof(float));
    ul_conv2d_backward_local(din, dw, db, c.G, c.in, c.w, &c.s, local, false);
    ul_conv2d_backward_ref(din_ref, dw_ref, db_ref, c.G, c.in, c.w, &c.s);
    assert_close("conv din local", din, din_ref, c.nin, REF_RTOL);
    assert_close("conv dw local", dw, dw_ref, c.nw, REF_RTOL);
    assert_close("conv db local", db, db_ref, K, REF_RTOL);
    /* With din_overwrite, din's old contents (garbage here) do not count. */
    for (size_t i = 0; i < c.nin; i++)
        din[i] = 12345.0f;
    memset(din_ref, 0, c.nin * sizeof(float));
    ul_conv2d_backward_local(din, NULL, NULL, c.G, c.in, c.w, &c.s, local, true);
    ul_conv2d_backward_ref(din_ref, NULL, NULL, c.G, c.in, c.w, &c.s);
    assert_close("conv din local overwrite", din, din_ref, c.nin, REF_RTOL);
    for (int i = 0; i < CANARY; i++)
        ck_assert_msg(local[nlocal + i] == 12345.0f,
                      "conv wrote past ul_conv2d_local_scratch() = %zu floats", nlocal);
    free(local), free(out_local);

    free(want);
    conv_grads_free(&gr);
    free(alone), free(alone_ref);
    conv_ctx_free(&c);
    ul_wino_force(0);
}

START_TEST(test_conv_grad)
{
    const conv_case *k = &conv_cases[_i];
    conv_ctx c;
    ul_wino_force(_i >= FIRST_WINO_CASE && _i != DEFAULT_WINO_CASE ? 1 : 0);
    conv_ctx_init(&c, k, 400 + (uint64_t)_i);
    float *din = falloc(c.nin), *dw = falloc(c.nw), *db = falloc((size_t)k->K);
    conv_loss(&c);
    ul_conv2d_backward(din, dw, k->bias ? db : NULL, c.G, c.in, c.w, &c.s, c.scratch);
    check_fd("conv din", conv_loss, &c, c.in, din, c.nin, 1e-2f);
    check_fd("conv dw", conv_loss, &c, c.w, dw, c.nw, 1e-2f);
    if (k->bias)
        check_fd("conv db", conv_loss, &c, c.b, db, (size_t)k->K, 1e-2f);
    free(din), free(dw), free(db);
    conv_ctx_free(&c);
    ul_wino_force(0);
}
END_TEST

/* The F(4×4, 3×3) path (ul_wino_force(2)) on the Winograd cases: edge
 * tiles clipped to 1, 2 and 3 columns or rows (widths 9, 6 and 7, heights
 * 5 and 7), whole tiles (20×20, 4×4), blocks spanning images; forward and
 * backward against the double-precision reference, through the public and
 * the one-thread entry points, each with a canary after its scratch. */
/* The default thresholds (no UNLEARN_WINOGRAD* in the environment, a
 * micro-kernel of at most 8 rows): 4×4 tiles forward from 12 input and
 * output channels, backward (dX and dW) from 16, whatever the image size;
 * none below, and none where the direct path for few channels applies (at
 * most UL_SMALL_CONV_BOTH = 15 channels both ways). Where the forward
 * products have the wide (AVX-512) kernel, both ways from 12, the direct
 * path's shapes included. */
START_TEST(test_wino_thresholds)
{
    const ul_pk *pk = ul_pk_get_native();
    if (!pk || pk->wr != 16 || pk->wl > 8 || getenv("UNLEARN_WINOGRAD") ||
        getenv("UNLEARN_WINOGRAD_F4") || getenv("UNLEARN_WINOGRAD_MIN_FWD") ||
        getenv("UNLEARN_WINOGRAD_MIN_BWD"))
        return;
    ul_wino_force(0);
    const bool wide = ul_pk_get_wide() != NULL;
    static const int sizes[] = {4, 7, 14, 32}, chans[] = {6, 11, 12, 15, 16, 32};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (size_t j = 0; j < sizeof chans / sizeof chans[0]; j++) {
            const int ch = chans[j];
            ul_conv_shape s;
            /* ch each way, then ch into 20. */
            for (int k = 0; k < 2; k++) {
                const int K = k ? 20 : ch;
                ck_assert(ul_conv_shape_init(&s, 2, ch, sizes[i], sizes[i], K, 3, 3, 1, 1));
                const int lo = ch < K ? ch : K, hi = ch < K ? K : ch;
                const bool small = (lo <= 8 && hi <= 32) || hi <= 15;
                const bool fwd = ch >= 12 && (!small || (wide && lo >= 12)),
                           bwd = wide ? fwd : ch >= 16;
                ck_assert_msg(ul_conv_small_ok(&s) == small && ul_wino_ok(&s, false) == fwd &&
                                  ul_wino_tile(&s) == (fwd ? 4 : 0) &&
                                  ul_wino_ok(&s, true) == bwd && ul_wino_dx_ok(&s) == bwd &&
                                  ul_wino_dw_tile(&s) == (bwd ? 4 : 0),
                              "%d channels into %d on %dx%d: %s, Winograd %s forward and %s "
                              "backward expected",
                              ch, K, sizes[i], sizes[i], small ? "direct" : "not direct",
                              fwd ? "with 4x4 tiles" : "not", bwd ? "with 4x4 tiles" : "not");
            }
            /* One side under the threshold is enough to stay direct. */
            ck_assert(ul_conv_shape_init(&s, 2, ch, sizes[i], sizes[i], 8, 3, 3, 1, 1));
            ck_assert(!ul_wino_ok(&s, false) && !ul_wino_ok(&s, true) && !ul_wino_dx_ok(&s));
        }
}
END_TEST

typedef bool (*conv_ok_fn)(const ul_conv_shape *s);
typedef size_t (*conv_scratch_fn)(const ul_conv_shape *s);
typedef void (*conv_fwd_fn)(float *out, const float *in, const float *w, const float *b,
                            const ul_conv_shape *s, float *scratch);

/* Which 3×3 shapes an AVX-512 path takes (cases: C, K, H = W, stride,
 * whether it takes them with pad 1; never with pad 0, never without
 * AVX-512 or with UNLEARN_KVEC=0), and on shape s, when it takes it, that
 * its results repeat bit for bit, the second time on NaN-filled scratch. */
static void check_avx512_path(const int (*cases)[5], size_t n, const char *what, conv_ok_fn ok,
                              conv_scratch_fn scratch, conv_fwd_fn fwd, const ul_conv_shape *s,
                              uint64_t seed)
{
    const char *e = getenv("UNLEARN_KVEC");
    const bool avx512 = __builtin_cpu_supports("avx512f") && !(e && strcmp(e, "0") == 0);
    for (size_t i = 0; i < n; i++) {
        ul_conv_shape c;
        ck_assert(ul_conv_shape_init(&c, 2, cases[i][0], cases[i][2], cases[i][2], cases[i][1],
                                     3, 3, cases[i][3], 1));
        ck_assert_msg(ok(&c) == (avx512 && cases[i][4]),
                      "%d into %d channels on %dx%d, stride %d: AVX-512 %s path %s expected",
                      cases[i][0], cases[i][1], cases[i][2], cases[i][2], cases[i][3], what,
                      avx512 && cases[i][4] ? "" : "not");
        ck_assert(ul_conv_shape_init(&c, 2, cases[i][0], cases[i][2], cases[i][2], cases[i][1],
                                     3, 3, cases[i][3], 0));
        ck_assert(!ok(&c));
    }
    if (!ok(s))
        return;
    const size_t nin = (size_t)s->N * s->C * s->H * s->W, nw = (size_t)s->K * s->C * 9;
    const size_t nout = (size_t)s->N * s->K * s->P * s->Q, ns = scratch(s);
    ul_rng r;
    ul_rng_seed(&r, seed, 1);
    float *in = rand_buf(&r, nin, -1, 1), *w = rand_buf(&r, nw, -1, 1),
          *b = rand_buf(&r, (size_t)s->K, -1, 1), *y1 = falloc(nout), *y2 = falloc(nout),
          *sc = NULL;
    ck_assert_int_eq(posix_memalign((void **)&sc, 64, ns * sizeof(float)), 0);
    fwd(y1, in, w, b, s, sc);
    fill_nan(sc, ns);
    fwd(y2, in, w, b, s, sc);
    ck_assert(memcmp(y1, y2, nout * sizeof(float)) == 0);
    free(in), free(w), free(b), free(y1), free(y2), free(sc);
}

/* The AVX-512 direct path takes 3×3, pad-1 forward passes with output
 * rows a multiple of 4, 7 or 8 long: stride 2 with up to 128 input
 * channels; stride 1 with at least 8 output channels, where the
 * few-channel path would, or from at most 3 input channels into at most
 * 64, or at most 16 each way; nowhere without AVX-512. Its results
 * repeat bit for bit. */
START_TEST(test_conv_kvec_choice)
{
    static const int cases[][5] = {
        /* C, K, H = W, stride, taken */
        {16, 32, 28, 2, 1},  {32, 64, 14, 2, 1},  {64, 128, 7, 2, 1},  {6, 13, 32, 2, 1},
        {64, 128, 16, 2, 1}, {65, 128, 14, 2, 1}, {128, 256, 16, 2, 1}, {128, 256, 8, 2, 1},
        {256, 512, 14, 2, 0}, {129, 256, 14, 2, 0}, {16, 32, 10, 2, 0},  {16, 32, 22, 2, 0},  {16, 32, 28, 1, 0},
        {16, 32, 28, 3, 0},  {1, 16, 28, 1, 1},   {3, 16, 32, 1, 1},   {13, 13, 14, 1, 1},
        {8, 32, 28, 1, 1},   {32, 8, 28, 1, 1},   {1, 32, 28, 1, 1},   {3, 32, 32, 1, 1},
        {6, 6, 28, 1, 0},    {3, 6, 32, 1, 0},    {16, 16, 28, 1, 1},  {13, 13, 15, 1, 0},
        {16, 16, 32, 1, 1},  {16, 32, 28, 1, 0},  {32, 32, 14, 1, 0},  {17, 16, 28, 1, 0},
        {1, 64, 28, 1, 1},   {3, 64, 32, 1, 1},   {4, 64, 32, 1, 0},   {3, 65, 32, 1, 0},
        {6, 32, 28, 1, 1}};
    ul_conv_shape s;
    ck_assert(ul_conv_shape_init(&s, 3, 16, 14, 14, 40, 3, 3, 2, 1));
    check_avx512_path(cases, sizeof cases / sizeof cases[0], "direct", ul_conv_kvec_ok,
                      ul_conv_kvec_scratch, ul_conv_kvec_forward, &s, 77);
}
END_TEST

/* The AVX-512 Winograd path takes 3×3, stride-1, pad-1 layers whose
 * channel counts are multiples of 16 up to 64, at any image size, and
 * nothing without AVX-512 (or with UNLEARN_KVEC=0). The one-thread
 * forward entry point picks it ahead of the direct path with output
 * channels in registers, which also takes 16 → 16. Results repeat bit for
 * bit, the second time on scratch full of NaN. */
START_TEST(test_conv_kwino_choice)
{
    static const int cases[][5] = {
        /* C, K, H = W, stride, taken */
        {16, 16, 28, 1, 1}, {32, 32, 14, 1, 1},  {64, 64, 7, 1, 1},  {16, 64, 3, 1, 1},
        {48, 16, 32, 1, 1}, {64, 64, 56, 1, 1},  {128, 128, 4, 1, 0}, {64, 128, 8, 1, 0},
        {24, 32, 14, 1, 0}, {16, 20, 14, 1, 0},  {8, 16, 28, 1, 0},  {16, 16, 28, 2, 0},
        {32, 64, 14, 2, 0}};
    ul_conv_shape s;
    ck_assert(ul_conv_shape_init(&s, 3, 32, 10, 10, 16, 3, 3, 1, 1));
    check_avx512_path(cases, sizeof cases / sizeof cases[0], "Winograd", ul_conv_kwino_ok,
                      ul_conv_kwino_scratch, ul_conv_kwino_forward, &s, 78);
}
END_TEST

/* The direct path for few channels takes 3×3, pad-1 layers with at most
 * 8 channels on one side and 32 on the other, or 15 both ways: stride 1
 * both ways, stride 2 in the forward pass only (its backward pass goes
 * the general way). */
START_TEST(test_conv_small_choice)
{
    static const int cases[][3] = {{6, 13, 1}, {3, 16, 1},  {13, 13, 1}, {8, 32, 1},
                                   {9, 17, 0}, {16, 32, 0}, {16, 16, 0}, {8, 33, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int st = 1; st <= 3; st++) {
            ul_conv_shape s;
            ck_assert(ul_conv_shape_init(&s, 2, cases[i][0], 16, 16, cases[i][1], 3, 3, st, 1));
            const bool small = cases[i][2];
            ck_assert_msg(ul_conv_small_fwd_ok(&s) == (small && st <= 2) &&
                              ul_conv_small_ok(&s) == (small && st == 1),
                          "%d into %d channels, stride %d: direct path %s expected", cases[i][0],
                          cases[i][1], st,
                          !small || st == 3 ? "not"
                          : st == 2         ? "forward only"
                                            : "both ways");
            ck_assert(ul_conv_shape_init(&s, 2, cases[i][0], 16, 16, cases[i][1], 3, 3, st, 0));
            ck_assert(!ul_conv_small_fwd_ok(&s) && !ul_conv_small_ok(&s));
        }
}
END_TEST

/* ul_conv2d_forward_team's statistics against the mean and the sum of squared
 * deviations of its own output, in double: the Winograd cases with 2×2 and
 * 4×4 tiles (forced; edge tiles clipped, blocks across images), with a
 * bias near 100 that puts each channel's mean far from zero (the sums run
 * around the channel's first value, or they would lose the spread to
 * cancellation), and a scratch filled with NaN beforehand. A layer off
 * the path returns false and leaves the sums alone. */
START_TEST(test_conv_forward_stats)
{
    for (int mode = 1; mode <= 2; mode++)
        for (int ci = FIRST_WINO_CASE; ci < N_CONV_CASES; ci++) {
            const conv_case *k = &conv_cases[ci];
            ul_wino_force(mode);
            conv_ctx c;
            conv_ctx_init(&c, k, 700 + (uint64_t)ci);
            float *bias = falloc((size_t)k->K), *local;
            for (int j = 0; j < k->K; j++)
                bias[j] = 100.0f + 0.25f * (float)j;
            const size_t nlocal = ul_conv2d_local_scratch(&c.s);
            local = falloc64(nlocal);
            /* The lanes of a panel past the last tile must not reach the
             * sums. */
            fill_nan(local, nlocal + 16);
            double *mean = calloc((size_t)k->K, sizeof(double));
            double *m2 = calloc((size_t)k->K, sizeof(double));
            /* Without the micro-kernel (UNLEARN_PACKED_GEMM=0) there is no
             * Winograd path, and only the second half applies. */
            const bool on = ul_wino_ok(&c.s, false);
            ck_assert(ul_conv2d_forward_team(c.out, c.in, c.w, bias, &c.s, local, NULL, mean,
                                             m2) == on);
            const size_t HW = (size_t)c.s.P * c.s.Q, M = (size_t)k->N * HW;
            for (int j = 0; j < k->K && on; j++) {
                double mu = 0.0, dev = 0.0;
                for (int n = 0; n < k->N; n++)
                    for (size_t i = 0; i < HW; i++)
                        mu += c.out[((size_t)n * k->K + j) * HW + i];
                mu /= (double)M;
                for (int n = 0; n < k->N; n++)
                    for (size_t i = 0; i < HW; i++) {
                        const double d = c.out[((size_t)n * k->K + j) * HW + i] - mu;
                        dev += d * d;
                    }
                ck_assert_msg(fabs(mean[j] - mu) <= 1e-6 * fabs(mu) &&
                                  fabs(m2[j] - dev) <= 1e-4 * dev + 1e-6 * (double)M,
                              "case %d (%dx%d, C %d, K %d), mode %d, channel %d: mean %.9g, "
                              "m2 %.9g; from the output %.9g and %.9g",
                              ci, k->H, k->W, k->C, k->K, mode, j, mean[j], m2[j], mu, dev);
                ck_assert(dev > 0.01 * (double)M); /* a spread to lose */
            }
            /* Off the path: no sums. */
            ul_wino_force(-1);
            mean[0] = m2[0] = -7.0;
            ck_assert(!ul_conv2d_forward_team(c.out, c.in, c.w, bias, &c.s, local, NULL, mean,
                                              m2));
            ck_assert(mean[0] == -7.0 && m2[0] == -7.0);
            ul_wino_force(0);
            free(mean), free(m2), free(bias), free(local);
            conv_ctx_free(&c);
        }
}
END_TEST

START_TEST(test_conv_wino4_vs_ref)
{
    /* Each case twice: dW by 2×2 tiles (mode 2), then by 4×4 tiles (4). */
    const int nw4 = N_CONV_CASES - FIRST_WINO_CASE, ci = FIRST_WINO_CASE + _i % nw4;
    const int mode = _i < nw4 ? 2 : 4;
    const conv_case *k = &conv_cases[ci];
    ul_wino_force(mode);
    conv_ctx c;
    conv_ctx_init(&c, k, 500 + (uint64_t)ci);
    char what[96];
    snprintf(what, sizeof what, "F(4x4) conv case %d (%dx%d, C %d, K %d), dW by %dx%d tiles", ci,
             k->H, k->W, k->C, k->K, mode, mode);
    if (ul_pk_get_native())
        ck_assert_msg(ul_wino_tile(&c.s) == 4, "%s: expected 4x4 tiles", what);
    float *want = falloc(c.nout);
    ul_conv2d_forward_ref(want, c.in, c.w, c.b, &c.s);
    ul_conv2d_forward(c.out, c.in, c.w, c.b, &c.s, c.scratch);
    conv_ctx_check_canary(&c);
    assert_close(what, c.out, want, c.nout, REF_RTOL);

    const size_t nlocal = ul_conv2d_local_scratch(&c.s);
    float *local = NULL;
    ck_assert_int_eq(posix_memalign((void **)&local, 64, (nlocal + CANARY) * sizeof(float)), 0);
    fill_nan(local, nlocal);
    for (int i = 0; i < CANARY; i++)
        local[nlocal + i] = 12345.0f;
    memset(c.out, 0, c.nout * sizeof(float));
    ul_conv2d_forward_local(c.out, c.in, c.w, c.b, &c.s, local);
    assert_close(what, c.out, want, c.nout, REF_RTOL);

    /* Backward: dX as the F(4×4) convolution of dY with the turned,
     * transposed kernels (ul_wino_dx), dW by 2×2 or 4×4 tiles; both add
     * onto non-zero gradients, and the one-thread dX may overwrite
     * instead. */
    if (ul_pk_get_native()) {
        ck_assert_msg(ul_wino_dx_ok(&c.s), "%s: expected dX by 4x4 tiles", what);
        ck_assert_int_eq(ul_wino_dw_tile(&c.s), mode);
    }
    const size_t K = (size_t)k->K;
    conv_grads gr = conv_grads_new(&c, K, 600 + (uint64_t)ci);
    float *din = gr.din, *dw = gr.dw, *db = gr.db;
    float *din_ref = gr.din_ref, *dw_ref = gr.dw_ref, *db_ref = gr.db_ref;
    ul_conv2d_backward_ref(din_ref, dw_ref, db_ref, c.G, c.in, c.w, &c.s);
    float *din2 = falloc(c.nin), *dw2 = falloc(c.nw), *db2 = falloc(K);
    memcpy(din2, din, c.nin * sizeof(float));
    memcpy(dw2, dw, c.nw * sizeof(float));
    memcpy(db2, db, K * sizeof(float));
    ul_conv2d_backward(din, dw, db, c.G, c.in, c.w, &c.s, c.scratch);
    conv_ctx_check_canary(&c);
    assert_close("F(4x4) din", din, din_ref, c.nin, REF_RTOL);
    assert_close("F(4x4) dw", dw, dw_ref, c.nw, REF_RTOL);
    assert_close("F(4x4) db", db, db_ref, K, REF_RTOL);
    ul_conv2d_backward_local(din2, dw2, db2, c.G, c.in, c.w, &c.s, local, false);
    assert_close("F(4x4) din local", din2, din_ref, c.nin, REF_RTOL);
    assert_close("F(4x4) dw local", dw2, dw_ref, c.nw, REF_RTOL);
    for (size_t i = 0; i < c.nin; i++)
        din2[i] = 12345.0f;
    memset(din_ref, 0, c.nin * sizeof(float));
    ul_conv2d_backward_ref(din_ref, NULL, NULL, c.G, c.in, c.w, &c.s);
    ul_conv2d_backward_local(din2, NULL, NULL, c.G, c.in, c.w, &c.s, local, true);
    assert_close("F(4x4) din local overwrite", din2, din_ref, c.nin, REF_RTOL);
    for (int i = 0; i < CANARY; i++)
        ck_assert_msg(local[nlocal + i] == 12345.0f,
                      "%s wrote past ul_conv2d_local_scratch() = %zu floats", what, nlocal);
    conv_grads_free(&gr);
    free(din2), free(dw2), free(db2);
    free(local), free(want);
    conv_ctx_free(&c);
    ul_wino_force(0);
}
END_TEST

START_TEST(test_conv_hand)
{
    /* 1×1×3×3 input 1..9, 2×2 kernel of ones, pad 1, stride 2: outputs are the
     * sums of the clipped windows at the corners: 1, 2+3, 4+7, 5+6+8+9. */
    float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 1, 1, 1}, out[4];
    ul_conv_shape s;
    ck_assert(ul_conv_shape_init(&s, 1, 1, 3, 3, 1, 2, 2, 2, 1));
    ck_assert_int_eq(s.P, 2);
    /* Scratch from calloc: no alignment beyond malloc's is required. */
    float *scratch = falloc(ul_conv2d_scratch(&s));
    ul_conv2d_forward(out, in, w, NULL, &s, scratch);
    free(scratch);
    const float want[4] = {1, 5, 11, 28};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(out[i] == want[i], "out[%d]: expected %g, got %g", i, want[i], out[i]);
}
END_TEST

/* ---- batch normalisation ----------------------------------------------------- */

START_TEST(test_bn_train_hand)
{
    /* N=2, C=1, HW=2: x = [1, 2 | 3, 6]. mean 3, biased var (4+1+0+9)/4 = 3.5,
     * unbiased var 14/3. Running stats from (0, 1) with momentum 0.1:
     * mean 0.1·3 = 0.3, var 0.9·1 + 0.1·14/3 = 1.3666667. */
    float x[4] = {1, 2, 3, 6}, out[4], mean, rstd, g = 2.0f, b = 0.5f, rm = 0.0f, rv = 1.0f;
    const float eps = 1e-5f;
    ul_batchnorm_forward_train(out, &mean, &rstd, x, &g, &b, &rm, &rv, 2, 1, 2, 0.1f, eps);
    ck_assert_msg(fabs(mean - 3.0) < 1e-6, "mean: expected 3, got %.8g", mean);
    double want_rstd = 1.0 / sqrt(3.5 + 1e-5);
    ck_assert_msg(fabs(rstd - want_rstd) < 1e-6, "rstd: expected %.8g, got %.8g", want_rstd,
                  rstd);
    ck_assert_msg(fabs(rm - 0.3) < 1e-6, "running_mean: expected 0.3, got %.8g", rm);
    ck_assert_msg(fabs(rv - 1.3666667) < 1e-6, "running_var: expected 1.3666667, got %.8g", rv);
    for (int i = 0; i < 4; i++) {
        double want = (x[i] - 3.0) * want_rstd * 2.0 + 0.5;
        ck_assert_msg(fabs(out[i] - want) < 1e-5, "out[%d]: expected %.8g, got %.8g", i, want,
                      out[i]);
    }
}
END_TEST

START_TEST(test_bn_eval_hand)
{
    /* Two channels, eval: y = (x − rm)/sqrt(rv + eps)·γ + β. */
    float x[4] = {1, 2, 3, 4}, out[4];
    float g[2] = {1, 2}, b[2] = {0, -1}, rm[2] = {1, 2}, rv[2] = {4, 0.25f};
    ul_batchnorm_forward_eval(out, x, g, b, rm, rv, 1, 2, 2, 0.0f);
    const float want[4] = {0.0f, 0.5f, 3.0f, 7.0f};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabs(out[i] - want[i]) < 1e-6, "out[%d]: expected %g, got %g", i,
                      want[i], out[i]);
}
END_TEST

typedef struct {
    int N, C, HW;
    float *in, *gamma, *beta, *out, *mean, *rstd, *G;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *c = p;
    ul_batchnorm_forward_train(c->out, c->mean, c->rstd, c->in, c->gamma, c->beta, NULL, NULL,
                               c->N, c->C, c->HW, 0.1f, 1e-5f);
    return sum_prod(c->out, c->G, (size_t)c->N * c->C * c->HW);
}

START_TEST(test_bn_grad)
{
    ul_rng r;
    ul_rng_seed(&r, 2, 0);
    bn_ctx c = {.N = 3, .C = 2, .HW = 5};
    size_t n = 30;
    /* A non-zero mean, so a backward that forgets the mean would fail. */
    c.in = rand_buf(&r, n, 0.5, 2.5);
    c.gamma = rand_buf(&r, 2, 0.5, 1.5);
    c.beta = rand_buf(&r, 2, -1, 1);
    c.out = falloc(n), c.mean = falloc(2), c.rstd = falloc(2);
    c.G = rand_buf(&r, n, -1, 1);
    float *din = falloc(n), *dg = falloc(2), *dbeta = falloc(2);
    bn_loss(&c);
    ul_batchnorm_backward(din, dg, dbeta, c.G, c.in, c.mean, c.rstd, c.gamma, c.N, c.C, c.HW);
    check_fd("bn din", bn_loss, &c, c.in, din, n, 1e-3f);
    check_fd("bn dgamma", bn_loss, &c, c.gamma, dg, 2, 1e-3f);
    check_fd("bn dbeta", bn_loss, &c, c.beta, dbeta, 2, 1e-3f);
    free(c.in), free(c.gamma), free(c.beta), free(c.out), free(c.mean), free(c.rstd), free(c.G);
    free(din), free(dg), free(dbeta);
}
END_TEST

/* ---- relu ---------------------------------------------------------------------- */

typedef struct {
    size_t n;
    float *in, *out, *G;
} elt_ctx;

static double relu_loss(void *p)
{
    elt_ctx *c = p;
    ul_relu_forward(c->out, c->in, c->n);
    return sum_prod(c->out, c->G, c->n);
}

START_TEST(test_relu)
{
    ul_rng r;
    ul_rng_seed(&r, 3, 0);
    elt_ctx c = {.n = 40};
    c.in = rand_buf(&r, c.n, -1, 1);
    /* Keep inputs away from the kink so ±eps does not cross it. */
    for (size_t i = 0; i < c.n; i++)
        c.in[i] += c.in[i] >= 0 ? 0.05f : -0.05f;
    c.out = falloc(c.n);
    c.G = rand_buf(&r, c.n, -1, 1);
    relu_loss(&c);
    for (size_t i = 0; i < c.n; i++)
        ck_assert_msg(c.out[i] == (c.in[i] > 0 ? c.in[i] : 0.0f), "relu(%g) = %g", c.in[i],
                      c.out[i]);
    float *din = falloc(c.n);
    ul_relu_backward(din, c.G, c.out, c.n);
    check_fd("relu din", relu_loss, &c, c.in, din, c.n, 1e-3f);
    float nan_in = NAN, nan_out;
    ul_relu_forward(&nan_out, &nan_in, 1);
    ck_assert_msg(isnan(nan_out), "relu(NaN) should stay NaN (as PyTorch), got %g", nan_out);
    free(c.in), free(c.out), free(c.G), free(din);
}
END_TEST

START_TEST(test_add)
{
    float a[3] = {1, 2, 3}, b[3] = {0.5f, -2, 10}, out[3];
    ul_add_forward(out, a, b, 3);
    ck_assert(out[0] == 1.5f && out[1] == 0.0f && out[2] == 13.0f);
}
END_TEST

/* ---- pooling --------------------------------------------------------------------- */

START_TEST(test_pool_out_size)
{
    int P, Q;
    ck_assert(ul_pool_out_size(32, 31, 3, 2, 1, &P, &Q));
    ck_assert_msg(P == 16 && Q == 16, "expected 16x16, got %dx%d", P, Q);
    ck_assert(ul_pool_out_size(7, 7, 2, 2, 0, &P, &Q));
    ck_assert_msg(P == 3 && Q == 3, "expected 3x3, got %dx%d", P, Q);
    ck_assert_msg(!ul_pool_out_size(8, 8, 2, 2, 2, &P, &Q), "pad > k/2 must be refused");
    ck_assert(!ul_pool_out_size(1, 1, 3, 1, 0, &P, &Q));
}
END_TEST

START_TEST(test_maxpool_pads_with_neg_inf)
{
    /* All inputs negative: zero padding would win every window. 2×2 input,
     * k=3, stride 1, pad 1: every window sees the whole input → max −2 at 1. */
    float in[4] = {-5, -2, -4, -3}, out[4];
    int32_t am[4];
    ul_maxpool2d_forward(out, am, in, 1, 1, 2, 2, 3, 1, 1);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(out[i] == -2.0f, "out[%d]: expected -2, got %g", i, out[i]);
        ck_assert_msg(am[i] == 1, "argmax[%d]: expected 1, got %d", i, am[i]);
    }
    float din[4] = {0}, dout[4] = {1, 2, 3, 4};
    ul_maxpool2d_backward(din, dout, am, 1, 1, 2, 2, 3, 1, 1);
    ck_assert_msg(din[1] == 10.0f && din[0] == 0.0f, "din: expected [0,10,0,0], got [%g,%g,..]",
                  din[0], din[1]);
}
END_TEST

START_TEST(test_maxpool_propagates_nan)
{
    /* A NaN in the window wins, as in PyTorch, so divergence stays visible. */
    float in[4] = {1, NAN, 3, 2}, out[1];
    int32_t am[1];
    ul_maxpool2d_forward(out, am, in, 1, 1, 2, 2, 2, 2, 0);
    ck_assert_msg(isnan(out[0]) && am[0] == 1, "expected NaN at 1, got %g at %d", out[0], am[0]);
}
END_TEST

/* The 2×2 stride-2 window (vectorised four windows at a time, with a scalar
 * tail) against a plain loop over each window in PyTorch's visiting order —
 * first maximum wins, a NaN wins — on rows wide enough for the vector path
 * and odd widths, with ties, NaNs and infinities in every lane position. */
START_TEST(test_maxpool2x2_vs_naive)
{
    static const int widths[] = {7, 8, 9, 14, 20, 23, 28}; /* Q = 3 (no vector), 4, 7, 10, 11, 14 */
    ul_rng r;
    ul_rng_seed(&r, 77, 0);
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        const int N = 2, C = 3, H = 6, W = widths[wi], P = H / 2, Q = W / 2;
        const size_t n = (size_t)N * C * H * W, m = (size_t)N * C * P * Q;
        float *in = falloc(n), *out = falloc(m);
        int32_t *am = malloc(m * sizeof *am);
        ck_assert_ptr_nonnull(am);
        for (size_t i = 0; i < n; i++) {
            /* Few distinct values, so windows often tie. */
            uint32_t u = ul_rng_below(&r, 20);
            in[i] = u == 0 ? NAN : u == 1 ? INFINITY : u == 2 ? -INFINITY
                                                             : (float)(u % 4) - 1.5f;
        }
        ul_maxpool2d_forward(out, am, in, N, C, H, W, 2, 2, 0);
        for (int pl = 0; pl < N * C; pl++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    const float *x = in + (size_t)pl * H * W;
                    int32_t bi = 2 * p * W + 2 * q;
                    float best = x[bi];
                    for (int dh = 0; dh < 2; dh++)
                        for (int dw = 0; dw < 2; dw++) {
                            int32_t idx = (2 * p + dh) * W + 2 * q + dw;
                            if (idx == 2 * p * W + 2 * q)
                                continue;
                            if (x[idx] > best || isnan(x[idx])) {
                                best = x[idx];
                                bi = idx;
                            }
                        }
                    const size_t o = ((size_t)pl * P + p) * Q + q;
                    ck_assert_msg(am[o] == bi && (isnan(best) ? isnan(out[o]) : out[o] == best),
                                  "W=%d plane %d window (%d,%d): got %g at %d, expected %g at %d",
                                  W, pl, p, q, out[o], am[o], best, bi);
                }
        free(in), free(out), free(am);
    }
}
END_TEST

typedef struct {
    int N, C, H, W, k, stride, pad, P, Q;
    float *in, *out, *G;
    int32_t *am;
} pool_ctx;

static double maxpool_loss(void *p)
{
    pool_ctx *c = p;
    ul_maxpool2d_forward(c->out, c->am, c->in, c->N, c->C, c->H, c->W, c->k, c->stride, c->pad);
    return sum_prod(c->out, c->G, (size_t)c->N * c->C * c->P * c->Q);
}

static double avgpool_loss(void *p)
{
    pool_ctx *c = p;
    ul_avgpool2d_forward(c->out, c->in, c->N, c->C, c->H, c->W, c->k, c->stride, c->pad);
    return sum_prod(c->out, c->G, (size_t)c->N * c->C * c->P * c->Q);
}

static const int pool_cases[][3] = {{3, 2, 1}, {2, 2, 0}, {3, 1, 0}};

static void pool_ctx_init(pool_ctx *c, int i)
{
    *c = (pool_ctx){.N = 2, .C = 2, .H = 7, .W = 6, .k = pool_cases[i][0],
                    .stride = pool_cases[i][1], .pad = pool_cases[i][2]};
    ck_assert(ul_pool_out_size(c->H, c->W, c->k, c->stride, c->pad, &c->P, &c->Q));
    size_t n = (size_t)c->N * c->C * c->H * c->W, m = (size_t)c->N * c->C * c->P * c->Q;
    ul_rng r;
    ul_rng_seed(&r, 500 + (uint64_t)i, 0);
    /* Distinct values 0.01 apart (a shuffled grid), so ±1e-3 never changes
     * which element is the maximum. */
    int64_t *perm = malloc(n * sizeof(int64_t));
    ck_assert_ptr_nonnull(perm);
    for (size_t j = 0; j < n; j++)
        perm[j] = (int64_t)j;
    ul_rng_shuffle_i64(&r, perm, (int64_t)n);
    c->in = falloc(n);
    for (size_t j = 0; j < n; j++)
        c->in[j] = 0.01f * (float)perm[j] - 0.8f;
    free(perm);
    c->out = falloc(m);
    c->G = rand_buf(&r, m, -1, 1);
    c->am = malloc(m * sizeof(int32_t));
    ck_assert_ptr_nonnull(c->am);
}

static void pool_ctx_free(pool_ctx *c)
{
    free(c->in), free(c->out), free(c->G), free(c->am);
}

START_TEST(test_maxpool_grad)
{
    pool_ctx c;
    pool_ctx_init(&c, _i);
    size_t n = (size_t)c.N * c.C * c.H * c.W;
    float *din = falloc(n);
    maxpool_loss(&c);
    ul_maxpool2d_backward(din, c.G, c.am, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad);
    check_fd("maxpool din", maxpool_loss, &c, c.in, din, n, 1e-3f);
    /* The one-thread form, adding onto 1s and writing over garbage. */
    float *add = falloc(n), *over = falloc(n);
    for (size_t i = 0; i < n; i++) {
        add[i] = 1.0f;
        over[i] = 12345.0f;
    }
    ul_maxpool2d_backward_local(add, c.G, c.am, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad, false);
    ul_maxpool2d_backward_local(over, c.G, c.am, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad, true);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(fabsf(add[i] - 1.0f - din[i]) <= 1e-6f * (1.0f + fabsf(din[i])),
                      "maxpool local din[%zu]: %g, want 1 + %g", i, add[i], din[i]);
        ck_assert_msg(over[i] == din[i], "maxpool local overwrite din[%zu]: %g, want %g", i,
                      over[i], din[i]);
    }
    free(din), free(add), free(over);
    pool_ctx_free(&c);
}
END_TEST

START_TEST(test_avgpool_hand)
{
    /* count_include_pad: 2×2 input, k=3, stride 1, pad 1 → every window holds
     * all four values and five padded zeros, so each output is 10/9. */
    float in[4] = {1, 2, 3, 4}, out[4];
    ul_avgpool2d_forward(out, in, 1, 1, 2, 2, 3, 1, 1);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabs(out[i] - 10.0 / 9.0) < 1e-6, "out[%d]: expected %.7g, got %.7g", i,
                      10.0 / 9.0, out[i]);
}
END_TEST

START_TEST(test_avgpool_grad)
{
    pool_ctx c;
    pool_ctx_init(&c, _i);
    size_t n = (size_t)c.N * c.C * c.H * c.W;
    float *din = falloc(n);
    avgpool_loss(&c);
    ul_avgpool2d_backward(din, c.G, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad);
    check_fd("avgpool din", avgpool_loss, &c, c.in, din, n, 1e-2f);
    free(din);
    pool_ctx_free(&c);
}
END_TEST

typedef struct {
    int N, C, HW;
    float *in, *out, *G;
} gap_ctx;

static double gap_loss(void *p)
{
    gap_ctx *c = p;
    ul_global_avgpool_forward(c->out, c->in, c->N, c->C, c->HW);
    return sum_prod(c->out, c->G, (size_t)c->N * c->C);
}

START_TEST(test_global_avgpool)
{
    float x[6] = {1, 2, 3, 10, 20, 30}, y[2];
    ul_global_avgpool_forward(y, x, 1, 2, 3);
    ck_assert_msg(y[0] == 2.0f && y[1] == 20.0f, "expected [2, 20], got [%g, %g]", y[0], y[1]);

    ul_rng r;
    ul_rng_seed(&r, 4, 0);
    gap_ctx c = {.N = 2, .C = 3, .HW = 5};
    c.in = rand_buf(&r, 30, -1, 1);
    c.out = falloc(6);
    c.G = rand_buf(&r, 6, -1, 1);
    float *din = falloc(30);
    gap_loss(&c);
    ul_global_avgpool_backward(din, c.G, c.N, c.C, c.HW);
    check_fd("global avgpool din", gap_loss, &c, c.in, din, 30, 1e-2f);
    free(c.in), free(c.out), free(c.G), free(din);
}
END_TEST

/* ---- losses ---------------------------------------------------------------------- */

START_TEST(test_xent_hand)
{
    /* Row 0: lse(1,2,3) = 3 + log(1 + e⁻¹ + e⁻²) = 3.4076059644, label 2 →
     * loss 0.4076059644. Row 1: logits ±1000 would overflow a naive exp;
     * lse = 1000 (to double precision), label 1 → loss 1000. */
    float logits[6] = {1, 2, 3, 1000, 0, -1000}, probs[6], losses[2];
    int32_t labels[2] = {2, 1};
    float mean = ul_softmax_xent_forward(probs, losses, logits, labels, 2, 3);
    ck_assert_msg(fabs(losses[0] - 0.4076059644) < 1e-6, "loss[0]: expected 0.4076059644, got %.10g",
                  losses[0]);
    ck_assert_msg(fabs(losses[1] - 1000.0) < 1e-3, "loss[1]: expected 1000, got %.10g",
                  losses[1]);
    ck_assert_msg(fabs(mean - 500.2038029822) < 1e-3, "mean: expected 500.2038, got %.10g",
                  mean);
    /* softmax(1,2,3) = (0.0900306, 0.2447285, 0.6652410). */
    ck_assert_msg(fabs(probs[0] - 0.0900306) < 1e-6 && fabs(probs[2] - 0.6652410) < 1e-6,
                  "probs row 0: got (%.7g, %.7g, %.7g)", probs[0], probs[1], probs[2]);
    ck_assert_msg(probs[3] == 1.0f && probs[4] == 0.0f, "probs row 1: got (%g, %g, %g)",
                  probs[3], probs[4], probs[5]);
}
END_TEST

typedef struct {
    int N, K;
    float *logits, *probs, *losses, *teacher;
    int32_t *labels;
    float T;
} loss_ctx;

static double xent_loss(void *p)
{
    loss_ctx *c = p;
    ul_softmax_xent_forward(c->probs, c->losses, c->logits, c->labels, c->N, c->K);
    double s = 0.0;
    for (int n = 0; n < c->N; n++)
        s += c->losses[n];
    return 0.5 * s / c->N;
}

START_TEST(test_xent_grad)
{
    ul_rng r;
    ul_rng_seed(&r, 5, 0);
    loss_ctx c = {.N = 4, .K = 5};
    c.logits = rand_buf(&r, 20, -3, 3);
    c.probs = falloc(20), c.losses = falloc(4);
    int32_t labels[4] = {0, 4, 2, 2};
    c.labels = labels;
    float *d = falloc(20);
    xent_loss(&c);
    /* scale 0.5 must match the 0.5 in xent_loss. */
    ul_softmax_xent_backward(d, c.probs, c.labels, c.N, c.K, 0.5f);
    check_fd("xent dlogits", xent_loss, &c, c.logits, d, 20, 1e-3f);
    free(c.logits), free(c.probs), free(c.losses), free(d);
}
END_TEST

START_TEST(test_kl_hand)
{
    /* KL(p‖p) = 0 for any logits and temperature. */
    float z[6] = {0.3f, -1.2f, 2.0f, 5.0f, 5.0f, -7.0f};
    float kl0 = ul_kl_div_forward(z, z, 2, 3, 4.0f);
    ck_assert_msg(fabs(kl0) < 1e-7, "KL(p||p): expected 0, got %.3g", kl0);

    /* T = 2, teacher (2·ln 3, 0) → p_T(t) = (3/4, 1/4); student (0, 0) →
     * (1/2, 1/2). KL = 3/4·ln(3/2) + 1/4·ln(1/2) = 0.1308120; times T² = 4
     * gives 0.5232481. Gradient: scale·T/N·(p_s − p_t) = 2·(−1/4, 1/4). */
    float t[2] = {(float)(2.0 * log(3.0)), 0.0f}, s[2] = {0.0f, 0.0f}, ds[2] = {0, 0};
    float kl = ul_kl_div_forward(s, t, 1, 2, 2.0f);
    ck_assert_msg(fabs(kl - 0.5232481) < 1e-6, "KL: expected 0.5232481, got %.8g", kl);
    ul_kl_div_backward(ds, s, t, 1, 2, 2.0f, 1.0f);
    ck_assert_msg(fabs(ds[0] + 0.5) < 1e-6 && fabs(ds[1] - 0.5) < 1e-6,
                  "dKL/ds: expected (-0.5, 0.5), got (%.8g, %.8g)", ds[0], ds[1]);
}
END_TEST

static double kl_loss(void *p)
{
    loss_ctx *c = p;
    return 0.5 * ul_kl_div_forward(c->logits, c->teacher, c->N, c->K, c->T);
}

START_TEST(test_kl_grad)
{
    const float temps[2] = {1.0f, 4.0f};
    ul_rng r;
    ul_rng_seed(&r, 6 + (uint64_t)_i, 0);
    loss_ctx c = {.N = 3, .K = 4, .T = temps[_i]};
    c.logits = rand_buf(&r, 12, -3, 3);
    c.teacher = rand_buf(&r, 12, -3, 3);
    float *d = falloc(12);
    ul_kl_div_backward(d, c.logits, c.teacher, c.N, c.K, c.T, 0.5f);
    check_fd(_i ? "KL dstudent (T=4)" : "KL dstudent (T=1)", kl_loss, &c, c.logits, d, 12,
             1e-2f);
    free(c.logits), free(c.teacher), free(d);
}
END_TEST

START_TEST(test_l1_hand)
{
    float w[3] = {-2, 0, 3}, g[3] = {1, 1, 1};
    double pen = ul_l1_penalty(g, w, 3, 0.5f);
    ck_assert_msg(fabs(pen - 2.5) < 1e-12, "penalty: expected 2.5, got %.10g", pen);
    ck_assert_msg(g[0] == 0.5f && g[1] == 1.0f && g[2] == 1.5f,
                  "grad: expected [0.5, 1, 1.5], got [%g, %g, %g]", g[0], g[1], g[2]);
    ck_assert(ul_l1_penalty(NULL, w, 3, 1.0f) == 5.0);
}
END_TEST

typedef struct {
    float *w;
    size_t n;
} l1_ctx;

static double l1_loss(void *p)
{
    l1_ctx *c = p;
    return ul_l1_penalty(NULL, c->w, c->n, 0.3f);
}

START_TEST(test_l1_grad)
{
    ul_rng r;
    ul_rng_seed(&r, 8, 0);
    l1_ctx c = {.n = 20};
    c.w = rand_buf(&r, c.n, -1, 1);
    for (size_t i = 0; i < c.n; i++)
        c.w[i] += c.w[i] >= 0 ? 0.05f : -0.05f;
    float *g = falloc(c.n);
    ul_l1_penalty(g, c.w, c.n, 0.3f);
    check_fd("l1 subgradient", l1_loss, &c, c.w, g, c.n, 1e-2f);
    free(c.w), free(g);
}
END_TEST

/* ---- determinism -------------------------------------------------------------- */

START_TEST(test_repeatable)
{
    /* Same inputs, same thread count → bit-identical results. Large enough
     * for the OpenMP paths to run in parallel. */
    conv_case k = {8, 16, 16, 16, 16, 3, 3, 1, 1, 1};
    conv_ctx c;
    conv_ctx_init(&c, &k, 77);
    float *d1 = falloc(c.nin), *d2 = falloc(c.nin), *w1 = falloc(c.nw), *w2 = falloc(c.nw);
    ul_conv2d_backward(d1, w1, NULL, c.G, c.in, c.w, &c.s, c.scratch);
    ul_conv2d_backward(d2, w2, NULL, c.G, c.in, c.w, &c.s, c.scratch);
    ck_assert(memcmp(d1, d2, c.nin * sizeof(float)) == 0);
    ck_assert(memcmp(w1, w2, c.nw * sizeof(float)) == 0);

    float *y1 = falloc(c.nout), *y2 = falloc(c.nout), m[16], rs[16];
    float gam[16], bet[16];
    for (int i = 0; i < 16; i++)
        gam[i] = 1.0f, bet[i] = 0.0f;
    int HW = c.s.P * c.s.Q;
    ul_batchnorm_forward_train(y1, m, rs, c.G, gam, bet, NULL, NULL, 8, 16, HW, 0.1f, 1e-5f);
    ul_batchnorm_forward_train(y2, m, rs, c.G, gam, bet, NULL, NULL, 8, 16, HW, 0.1f, 1e-5f);
    ck_assert(memcmp(y1, y2, c.nout * sizeof(float)) == 0);
    free(d1), free(d2), free(w1), free(w2), free(y1), free(y2);
    conv_ctx_free(&c);
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *t = tcase_create("gemm");
    tcase_add_test(t, test_sgemm_transposes);
    tcase_add_test(t, test_sgemm_beta_zero_ignores_nan);
    suite_add_tcase(s, t);

    t = tcase_create("linear");
    tcase_add_test(t, test_linear_forward_hand);
    tcase_add_test(t, test_linear_grad);
    suite_add_tcase(s, t);

    t = tcase_create("conv2d");
    tcase_add_test(t, test_conv_shape_init);
    tcase_add_test(t, test_conv_hand);
    tcase_add_loop_test(t, test_conv_vs_ref, 0, N_CONV_CASES);
    tcase_add_loop_test(t, test_conv_small_baseline, 0, N_CONV_CASES);
    tcase_add_loop_test(t, test_conv_kvec_off, 0, N_CONV_CASES);
    tcase_add_loop_test(t, test_conv_kwino_off, 0, N_CONV_CASES);
    tcase_add_loop_test(t, test_conv_vs_ref_transposed_tiles, 0, N_CONV_CASES);
    tcase_add_loop_test(t, test_conv_wino4_vs_ref, 0, 2 * (N_CONV_CASES - FIRST_WINO_CASE));
    tcase_add_test(t, test_conv_forward_stats);
    tcase_add_test(t, test_wino_thresholds);
    tcase_add_test(t, test_conv_small_choice);
    tcase_add_test(t, test_conv_kvec_choice);
    tcase_add_test(t, test_conv_kwino_choice);
    tcase_add_test(t, test_pk_gemm_vs_naive);
    tcase_add_test(t, test_pk_tile_vs_naive);
    tcase_add_test(t, test_wide_kernel_choice);
    tcase_add_test(t, test_transpose_vs_naive);
    tcase_add_test(t, test_sgemm_local_vs_naive);
    tcase_add_test(t, test_sgemm_dot_vs_naive);
    tcase_add_test(t, test_linear_forward_local);
    tcase_add_loop_test(t, test_conv_grad, 0, N_CONV_CASES);
    suite_add_tcase(s, t);

    t = tcase_create("batchnorm");
    tcase_add_test(t, test_bn_train_hand);
    tcase_add_test(t, test_bn_eval_hand);
    tcase_add_test(t, test_bn_grad);
    suite_add_tcase(s, t);

    t = tcase_create("elementwise");
    tcase_add_test(t, test_relu);
    tcase_add_test(t, test_add);
    suite_add_tcase(s, t);

    t = tcase_create("pooling");
    tcase_add_test(t, test_pool_out_size);
    tcase_add_test(t, test_maxpool_pads_with_neg_inf);
    tcase_add_test(t, test_maxpool_propagates_nan);
    tcase_add_test(t, test_maxpool2x2_vs_naive);
    tcase_add_loop_test(t, test_maxpool_grad, 0, 3);
    tcase_add_test(t, test_avgpool_hand);
    tcase_add_loop_test(t, test_avgpool_grad, 0, 3);
    tcase_add_test(t, test_global_avgpool);
    suite_add_tcase(s, t);

    t = tcase_create("losses");
    tcase_add_test(t, test_xent_hand);
    tcase_add_test(t, test_xent_grad);
    tcase_add_test(t, test_kl_hand);
    tcase_add_loop_test(t, test_kl_grad, 0, 2);
    tcase_add_test(t, test_l1_hand);
    tcase_add_test(t, test_l1_grad);
    suite_add_tcase(s, t);

    t = tcase_create("determinism");
    tcase_add_test(t, test_repeatable);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    ul_runtime_init();
    SRunner *sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
