/* Tests of the net (unlearn/net.h) and the model plugins, loaded through the
 * real plugin loader (ul_model_create).
 *
 * Gradients: end-to-end central finite differences of L = Σ logits·G (G fixed
 * and random, accumulated in double) at a random sample of parameter
 * coordinates — FD_SAMPLES per net, each drawn by picking a trainable tensor
 * uniformly and then an element, so BatchNorm γ/β and biases are covered, not
 * only the largest weight. BatchNorm in train mode makes L a function of the
 * whole batch, which finite differences handle; the running stats each
 * forward updates do not affect train-mode outputs. Tolerance per coordinate:
 *   |analytic − numeric| ≤ FD_RTOL · (max(|analytic|, |numeric|) + 0.1·max_j |analytic_j|)
 * — relative, with a floor at the gradient's own scale for coordinates near
 * zero where float32 rounding in the forward dominates. Narrow nets are far
 * from smooth: a ReLU or max-pool switch within ±eps bends the loss, and
 * the central difference then averages two slopes. So the one-sided
 * differences on both sides are compared too: on a smooth stretch they agree
 * to O(eps·L''), and a coordinate where they do not sits on a kink and is
 * skipped and counted (at most FD_MAX_KINKS per net; FD_SAMPLES coordinates
 * must pass). A wrong backward shows as smooth differences that disagree
 * with it, and fails.
 *
 * Expected tensor names and parameter counts are derived by hand from the
 * PyTorch modules the plugins document (see each test). Seeds are fixed. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "net_internal.h"
#include "ops_wino.h"
#include "plugin_loader.h"
#include "runtime.h"
#include "unlearn/net.h"
#include "unlearn/rng.h"

#define FD_SAMPLES 30
#define FD_RTOL 2e-2
#define FD_EPS 1e-4f
#define FD_MAX_KINKS 15 /* 41 seeds: at most 10, about 1 on average */

/* ---- helpers ------------------------------------------------------------ */

/* One "key=value" per string, NULL-terminated; values are YAML text. */
static ul_net *make_model(const char *name, double width, const char *const *kv, int C, int H,
                          int W, int classes, uint64_t seed)
{
    ul_error err = {0};
    const ul_plugin *p;
    ck_assert_msg(ul_plugin_find(UL_KIND_MODEL, name, &p, &err) == UL_OK, "%s", err.msg);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_msg(params != NULL, "%s", err.msg);
    for (; kv && *kv; kv++) {
        char key[64];
        const char *eq = strchr(*kv, '=');
        ck_assert(eq && (size_t)(eq - *kv) < sizeof key);
        memcpy(key, *kv, (size_t)(eq - *kv));
        key[eq - *kv] = '\0';
        ck_assert_msg(ul_params_set(params, key, eq + 1, &err) == UL_OK, "%s", err.msg);
    }
    ul_rng rng;
    ul_rng_seed(&rng, seed, 7);
    ul_net *net = NULL;
    int rc = ul_model_create(name, width, params, C, H, W, classes, &rng, &net, &err);
    ul_params_free(params);
    ck_assert_msg(rc == UL_OK, "%s at width %g: %s", name, width, err.msg);
    return net;
}

static float *rand_floats(ul_rng *r, size_t n, double lo, double hi)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * ul_rng_uniform(r));
    return x;
}

static double loss_of(ul_net *net, const float *x, const float *G, int N, bool train)
{
    const float *z = ul_net_forward(net, x, N, train);
    ck_assert_ptr_nonnull(z);
    double s = 0.0;
    for (size_t i = 0; i < (size_t)N * ul_net_classes(net); i++)
        s += (double)z[i] * G[i];
    return s;
}

/* The finite-difference check described at the top of the file. */
static void check_net_grad(const char *what, ul_net *net, int N, bool train, uint64_t seed)
{
    int C, H, W;
    ul_net_input_shape(net, &C, &H, &W);
    int K = ul_net_classes(net);
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, N, &err) == UL_OK, "%s", err.msg);
    ul_rng r;
    ul_rng_seed(&r, seed, 3);
    float *x = rand_floats(&r, (size_t)N * C * H * W, -1, 1);
    float *G = rand_floats(&r, (size_t)N * K, -1, 1);

    size_t n;
    float *theta = ul_net_params(net, &n);
    float *grad = ul_net_grads(net, &n);
    ul_net_zero_grad(net);
    loss_of(net, x, G, N, train);
    ul_net_backward(net, G);
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(grad[i]));
    ck_assert_msg(gmax > 0.0, "%s: the gradient is all zero, the check proves nothing", what);

    size_t n_trainable = 0, n_tensors = ul_net_tensor_count(net);
    const ul_tensor_info **trainable = malloc(n_tensors * sizeof *trainable);
    ck_assert_ptr_nonnull(trainable);
    for (size_t t = 0; t < n_tensors; t++)
        if (ul_net_tensor(net, t)->trainable)
            trainable[n_trainable++] = ul_net_tensor(net, t);

    double l0 = loss_of(net, x, G, N, train);
    int checked = 0, kinks = 0;
    while (checked < FD_SAMPLES) {
        const ul_tensor_info *t = trainable[ul_rng_below(&r, (uint32_t)n_trainable)];
        size_t e = ul_rng_below(&r, (uint32_t)t->numel);
        float *p = (float *)t->data + e;
        double an = grad[(size_t)(p - theta)];
        float old = *p, xp = old + FD_EPS, xm = old - FD_EPS;
        *p = xp;
        double lp = loss_of(net, x, G, N, train);
        *p = xm;
        double lm = loss_of(net, x, G, N, train);
        *p = old;
        double num = (lp - lm) / ((double)xp - xm);
        double right = (lp - l0) / ((double)xp - old), left = (l0 - lm) / ((double)old - xm);
        double scale = fmax(fabs(an), fabs(num)) + 0.1 * gmax;
        if (fabs(right - left) > FD_RTOL * scale) {
            kinks++;
            ck_assert_msg(kinks <= FD_MAX_KINKS,
                          "%s: the loss has a kink within ±%g of %d sampled coordinates "
                          "(last: %s[%zu], one-sided differences %.7g and %.7g)",
                          what, FD_EPS, kinks, t->name, e, left, right);
            continue;
        }
        ck_assert_msg(fabs(an - num) <= FD_RTOL * scale,
                      "%s: d/d %s[%zu]: finite difference %.7g (one-sided %.7g, %.7g), "
                      "backward %.7g (|diff| %.3g > %.3g)",
                      what, t->name, e, num, left, right, an, fabs(an - num), FD_RTOL * scale);
        checked++;
    }
    free(trainable);
    free(x);
    free(G);
}

/* Runs a few train-mode forwards so BN running stats move away from 0/1,
 * then one more to check gradients of the eval-mode net. */
static void warm_running_stats(ul_net *net, int N, uint64_t seed)
{
    int C, H, W;
    ul_net_input_shape(net, &C, &H, &W);
    ul_rng r;
    ul_rng_seed(&r, seed, 5);
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, N, &err) == UL_OK, "%s", err.msg);
    for (int k = 0; k < 3; k++) {
        float *x = rand_floats(&r, (size_t)N * C * H * W, -1, 2);
        ck_assert_ptr_nonnull(ul_net_forward(net, x, N, true));
        free(x);
    }
}

static void assert_shape(const ul_net *net, const char *name, int ndim, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3)
{
    const ul_tensor_info *t = ul_net_find_tensor(net, name);
    ck_assert_msg(t != NULL, "tensor '%s' is missing", name);
    int64_t want[4] = {d0, d1, d2, d3};
    ck_assert_msg(t->ndim == ndim, "%s: expected %d dims, got %d", name, ndim, t->ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(t->shape[d] == want[d], "%s: dim %d is %lld, expected %lld", name, d,
                      (long long)t->shape[d], (long long)want[d]);
}

/* ---- gradients of the model plugins ------------------------------------------------ */

START_TEST(test_grad_mlp)
{
    /* width 0.05 and 0.1 of base 256: 13 and 26 hidden units. */
    static const double widths[] = {0.05, 0.1};
    static const char *const kv[] = {"depth=2", NULL};
    for (int k = 0; k < 2; k++) {
        ul_net *net = make_model("mlp", widths[k], kv, 1, 5, 5, 3, 11 + k);
        char what[64];
        snprintf(what, sizeof what, "mlp width %g", widths[k]);
        check_net_grad(what, net, 4, true, 100 + k);
        ul_net_free(net);
    }
}
END_TEST

START_TEST(test_grad_cnn)
{
    /* width 1/32 and 1/16 of base 32: channels 1/2/4 and 2/4/8; 8x8 → 1x1. */
    static const double widths[] = {0.03125, 0.0625};
    for (int k = 0; k < 2; k++) {
        ul_net *net = make_model("cnn", widths[k], NULL, 1, 8, 8, 3, 21 + k);
        char what[64];
        snprintf(what, sizeof what, "cnn width %g", widths[k]);
        check_net_grad(what, net, 4, true, 200 + k);
        ul_net_free(net);
    }
}
END_TEST

START_TEST(test_grad_resnet18)
{
    /* width 0.02: channels 1/3/5/10; 0.04: 3/5/10/20; 8x8 reaches 1x1 in
     * layer4, so BN there normalises over the batch alone. */
    static const double widths[] = {0.02, 0.04};
    for (int k = 0; k < 2; k++) {
        ul_net *net = make_model("resnet18", widths[k], NULL, 3, 8, 8, 4, 31 + k);
        char what[64];
        snprintf(what, sizeof what, "resnet18 width %g", widths[k]);
        check_net_grad(what, net, 4, true, 300 + k);
        ul_net_free(net);
    }
}
END_TEST

START_TEST(test_grad_resnet18_keep_stem)
{
    /* A 64-channel stem before 1-channel stages gives layer1.0 a downsample. */
    static const char *const kv[] = {"keep_stem=true", NULL};
    ul_net *net = make_model("resnet18", 0.02, kv, 1, 8, 8, 3, 41);
    ck_assert_ptr_nonnull(ul_net_find_tensor(net, "layer1.0.downsample.0.weight"));
    check_net_grad("resnet18 keep_stem width 0.02", net, 3, true, 400);
    ul_net_free(net);
}
END_TEST

START_TEST(test_grad_eval_mode)
{
    /* Backward after an eval-mode forward differentiates BN as the affine
     * map of its running stats (e.g. NegGrad+ run in eval mode). */
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 51);
    warm_running_stats(net, 4, 52);
    check_net_grad("resnet18 width 0.04 eval mode", net, 4, false, 500);
    ul_net_free(net);

    net = make_model("cnn", 0.0625, NULL, 1, 8, 8, 3, 53);
    warm_running_stats(net, 4, 54);
    check_net_grad("cnn width 0.0625 eval mode", net, 4, false, 501);
    ul_net_free(net);
}
END_TEST

/* A graph exercising what the model plugins do not: a BN output with two
 * consumers (so its ReLU cannot run in place), add(x, x), max pool with
 * padding, average pool, a flatten read twice, in-place add → ReLU over a
 * linear, global average pool, and a dead-end branch (zero gradient). */
/* Finalises a net built by hand, its parameters drawn from seed. */
static ul_net *finalized(ul_net *net, uint64_t seed)
{
    ul_rng rng;
    ul_rng_seed(&rng, seed, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    return net;
}

static ul_net *make_tricky_net(uint64_t seed)
{
    ul_net *net = ul_net_new(2, 6, 6, 3);
    ck_assert_ptr_nonnull(net);
    ul_node x = ul_net_input(net);
    ul_node c1 = ul_net_conv2d(net, "c1", x, 3, 3, 1, 1, true);
    ul_net_conv2d(net, "dead", c1, 2, 1, 1, 0, false);
    ul_node b1 = ul_net_batchnorm(net, "b1", c1);
    ul_node r1 = ul_net_relu(net, b1);
    ul_node s = ul_net_add(net, b1, r1);
    ul_node ss = ul_net_add(net, s, s);
    ul_node mp = ul_net_maxpool(net, ss, 3, 2, 1);   /* 3x3x3 */
    ul_node ap = ul_net_avgpool(net, mp, 2, 1, 0);   /* 3x2x2 */
    ul_node f = ul_net_flatten(net, ap);             /* 12 */
    ul_node l1 = ul_net_linear(net, "l1", f, 5, true);
    ul_node l2 = ul_net_linear(net, "l2", f, 5, false);
    ul_node l3 = ul_net_linear(net, "l3", ul_net_global_avgpool(net, mp), 5, true);
    ul_node h = ul_net_relu(net, ul_net_add(net, ul_net_add(net, l1, l2), l3));
    ul_net_linear(net, "head", h, 3, true);
    return finalized(net, seed);
}

START_TEST(test_grad_tricky_graph)
{
    ul_net *net = make_tricky_net(61);
    check_net_grad("tricky graph", net, 3, true, 600);
    warm_running_stats(net, 3, 62);
    check_net_grad("tricky graph eval mode", net, 3, false, 601);
    /* The dead-end branch gets exactly zero gradient. */
    ul_net_zero_grad(net);
    ul_rng r;
    ul_rng_seed(&r, 63, 0);
    float *x = rand_floats(&r, 3 * 2 * 6 * 6, -1, 1), *G = rand_floats(&r, 3 * 3, -1, 1);
    loss_of(net, x, G, 3, true);
    ul_net_backward(net, G);
    const ul_tensor_info *dead = ul_net_find_tensor(net, "dead.weight");
    for (int64_t i = 0; i < dead->numel; i++)
        ck_assert_float_eq(dead->grad[i], 0.0f);
    free(x);
    free(G);
    ul_net_free(net);
}
END_TEST

/* _i = 1: with the weight-gradient partials summed after every
 * convolution (net_part_whole_limit) instead of once after the pass. */
START_TEST(test_backward_accumulates)
{
    net_part_whole_limit(_i ? 0 : (size_t)64 << 20);
    ul_net *net = make_model("cnn", 0.0625, NULL, 1, 8, 8, 3, 71);
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, 3, &err) == UL_OK, "%s", err.msg);
    net_part_whole_limit((size_t)64 << 20);
    ck_assert(net->team_cap < 2 || net->part_whole == !_i);
    ul_rng r;
    ul_rng_seed(&r, 72, 0);
    float *x = rand_floats(&r, 3 * 64, -1, 1), *G = rand_floats(&r, 9, -1, 1);
    size_t n;
    float *g = ul_net_grads(net, &n);
    ul_net_zero_grad(net);
    ul_net_forward(net, x, 3, true);
    ul_net_backward(net, G);
    float *once = malloc(n * sizeof *once);
    memcpy(once, g, n * sizeof *once);
    ul_net_forward(net, x, 3, true);
    ul_net_backward(net, G);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(g[i] - 2.0f * once[i]) <= 1e-5f * (1.0f + fabsf(once[i])),
                      "grad[%zu]: expected %.8g after two backward passes, got %.8g", i,
                      2.0 * once[i], g[i]);
    ul_net_zero_grad(net);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(g[i], 0.0f);
    free(once);
    free(x);
    free(G);
    ul_net_free(net);
}
END_TEST

/* ---- threads: the batch-parallel passes against the one-thread path ------------------ */

/* Logits, gradients and BN running stats of one train-mode (or eval-mode)
 * forward + backward with `threads` threads, from the net's current state;
 * the running stats are restored afterwards so the next call starts equal. */
typedef struct pass_result {
    float *logits, *grads, *stats;
    size_t n_logits, n_grads, n_stats;
} pass_result;

static pass_result run_pass(ul_net *net, int threads, int N, bool train, uint64_t seed)
{
    int C, H, W;
    ul_net_input_shape(net, &C, &H, &W);
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, N, &err) == UL_OK, "%s", err.msg);
    ul_rng r;
    ul_rng_seed(&r, seed, 9);
    float *x = rand_floats(&r, (size_t)N * C * H * W, -1, 2);
    float *G = rand_floats(&r, (size_t)N * ul_net_classes(net), -1, 1);
    /* BN running mean/var: every tensor that is neither trainable nor int64. */
    size_t n_stats = 0;
    for (size_t t = 0; t < ul_net_tensor_count(net); t++) {
        const ul_tensor_info *ti = ul_net_tensor(net, t);
        if (!ti->trainable && ti->dtype == UL_F32)
            n_stats += (size_t)ti->numel;
    }
    float *saved = malloc((n_stats + 1) * sizeof *saved);
    pass_result pr = {0};
    pr.stats = malloc((n_stats + 1) * sizeof *pr.stats);
    pr.n_stats = n_stats;
    size_t o = 0;
    for (size_t t = 0; t < ul_net_tensor_count(net); t++) {
        const ul_tensor_info *ti = ul_net_tensor(net, t);
        if (!ti->trainable && ti->dtype == UL_F32) {
            memcpy(saved + o, ti->data, (size_t)ti->numel * sizeof(float));
            o += (size_t)ti->numel;
        }
    }
    const int prev = ul_runtime_threads();
    ul_runtime_set_threads(threads);
    ul_net_zero_grad(net);
    const float *z = ul_net_forward(net, x, N, train);
    ck_assert_ptr_nonnull(z);
    pr.n_logits = (size_t)N * ul_net_classes(net);
    pr.logits = malloc(pr.n_logits * sizeof(float));
    memcpy(pr.logits, z, pr.n_logits * sizeof(float));
    ul_net_backward(net, G);
    const float *g = ul_net_grads(net, &pr.n_grads);
    pr.grads = malloc(pr.n_grads * sizeof(float));
    memcpy(pr.grads, g, pr.n_grads * sizeof(float));
    ul_runtime_set_threads(prev);
    o = 0;
    for (size_t t = 0; t < ul_net_tensor_count(net); t++) {
        const ul_tensor_info *ti = ul_net_tensor(net, t);
        if (!ti->trainable && ti->dtype == UL_F32) {
            memcpy(pr.stats + o, ti->data, (size_t)ti->numel * sizeof(float));
            memcpy(ti->data, saved + o, (size_t)ti->numel * sizeof(float));
            o += (size_t)ti->numel;
        }
    }
    free(saved);
    free(x);
    free(G);
    return pr;
}

static void free_pass(pass_result *p)
{
    free(p->logits);
    free(p->grads);
    free(p->stats);
}

/* |a − b| ≤ rtol · (|a| + max_j |a_j|·0.01) elementwise. */
static void assert_close(const char *what, const float *a, const float *b, size_t n, double rtol)
{
    double amax = 0.0;
    for (size_t i = 0; i < n; i++)
        amax = fmax(amax, fabs(a[i]));
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs((double)a[i] - b[i]) <= rtol * (fabs(a[i]) + 0.01 * amax),
                      "%s[%zu]: one thread %.8g, two threads %.8g", what, i, a[i], b[i]);
}

static void check_threads_agree(const char *what, ul_net *net, int N, bool train)
{
    pass_result one = run_pass(net, 1, N, train, 5), one_again = run_pass(net, 1, N, train, 5);
    pass_result two = run_pass(net, 2, N, train, 5), two_again = run_pass(net, 2, N, train, 5);
    /* Bit-identical run to run at a fixed thread count. */
    ck_assert_msg(!memcmp(one.grads, one_again.grads, one.n_grads * sizeof(float)) &&
                      !memcmp(one.logits, one_again.logits, one.n_logits * sizeof(float)),
                  "%s: two one-thread runs differ", what);
    ck_assert_msg(!memcmp(two.grads, two_again.grads, two.n_grads * sizeof(float)) &&
                      !memcmp(two.logits, two_again.logits, two.n_logits * sizeof(float)) &&
                      !memcmp(two.stats, two_again.stats, two.n_stats * sizeof(float)),
                  "%s: two two-thread runs differ", what);
    /* One thread against two: the same sums in another order, so float
     * rounding only (observed ≤ 1e-5 relative; 1e-3 leaves room). */
    char name[96];
    snprintf(name, sizeof name, "%s logits", what);
    assert_close(name, one.logits, two.logits, one.n_logits, 1e-3);
    snprintf(name, sizeof name, "%s gradient", what);
    assert_close(name, one.grads, two.grads, one.n_grads, 1e-3);
    snprintf(name, sizeof name, "%s running stats", what);
    assert_close(name, one.stats, two.stats, one.n_stats, 1e-3);
    free_pass(&one);
    free_pass(&one_again);
    free_pass(&two);
    free_pass(&two_again);
}

/* BatchNorms wider than the block of channels the batch-parallel passes
 * normalise at a time (64, net_team.c): 150 = 64 + 64 + 22 channels with
 * a fused ReLU, 70 = 64 + 6 without one, on 5 × 5 planes (25 values, not a
 * whole number of 8-lane vectors). Training and eval mode against finite
 * differences (two threads, an uneven 3 + 2 split of the batch), and one
 * thread against two. */
static ul_net *make_wide_bn_net(uint64_t seed)
{
    ul_net *net = ul_net_new(2, 5, 5, 3);
    ck_assert_ptr_nonnull(net);
    ul_node c1 = ul_net_conv2d(net, "c1", ul_net_input(net), 150, 3, 1, 1, false);
    ul_node r1 = ul_net_relu(net, ul_net_batchnorm(net, "b1", c1));
    ul_node b2 = ul_net_batchnorm(net, "b2", ul_net_conv2d(net, "c2", r1, 70, 1, 1, 0, false));
    ul_net_linear(net, "head", ul_net_global_avgpool(net, b2), 3, true);
    return finalized(net, seed);
}

START_TEST(test_grad_wide_batchnorm)
{
    ul_net *net = make_wide_bn_net(64);
    check_net_grad("wide batchnorm", net, 5, true, 602);
    check_threads_agree("wide batchnorm train", net, 5, true);
    warm_running_stats(net, 5, 65);
    check_net_grad("wide batchnorm eval mode", net, 5, false, 603);
    check_threads_agree("wide batchnorm eval", net, 5, false);
    ul_net_free(net);
}
END_TEST

START_TEST(test_threads_agree)
{
    /* Batches of 5 and 7 split unevenly over two threads. */
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 81);
    check_threads_agree("resnet18 train", net, 5, true);
    check_threads_agree("resnet18 eval", net, 7, false);
    ul_net_free(net);
    static const char *const kv[] = {"depth=2", NULL};
    net = make_model("mlp", 0.1, kv, 1, 5, 5, 3, 82);
    check_threads_agree("mlp", net, 7, true);
    ul_net_free(net);
    /* Wide enough for whole 8×8 transposes and 6-row panels in the packed
     * linear products (144 inputs, 51 hidden units, 6 + 7 examples). */
    net = make_model("mlp", 0.2, kv, 1, 12, 12, 10, 85);
    check_threads_agree("mlp wide", net, 13, true);
    ul_net_free(net);
    net = make_model("cnn", 0.0625, NULL, 1, 8, 8, 3, 83);
    check_threads_agree("cnn train", net, 5, true);
    check_threads_agree("cnn eval", net, 5, false);
    ul_net_free(net);
    net = make_tricky_net(84);
    check_threads_agree("tricky graph", net, 5, true);
    ck_assert(net->team_cap < 2 || net->part_whole);
    ul_net_free(net);
    /* The weight-gradient partials summed after every convolution, as in
     * nets too large for whole-pass buffers (net_part_whole_limit). */
    net_part_whole_limit(0);
    net = make_model("cnn", 0.0625, NULL, 1, 8, 8, 3, 83);
    check_threads_agree("cnn train, partials per convolution", net, 5, true);
    ck_assert(net->team_cap < 2 || !net->part_whole);
    ul_net_free(net);
    net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 81);
    check_threads_agree("resnet18 train, partials per convolution", net, 5, true);
    ul_net_free(net);
    net_part_whole_limit((size_t)64 << 20);
}
END_TEST

/* ---- ul_net_infer: eval-mode BatchNorm folded into the convolutions ---------------- */

/* A convolution with a bias feeding a BatchNorm alone (folded with its
 * bias), and one whose output also goes to a second consumer (not folded). */
static ul_net *make_fold_net(uint64_t seed)
{
    ul_net *net = ul_net_new(2, 6, 6, 3);
    ck_assert_ptr_nonnull(net);
    ul_node x = ul_net_input(net);
    ul_node b1 = ul_net_batchnorm(net, "b1", ul_net_conv2d(net, "c1", x, 4, 3, 1, 1, true));
    ul_node r1 = ul_net_relu(net, b1);
    ul_node c2 = ul_net_conv2d(net, "c2", r1, 4, 3, 1, 1, false);
    ul_node s = ul_net_add(net, ul_net_batchnorm(net, "b2", c2), c2);
    ul_net_linear(net, "head", ul_net_flatten(net, s), 3, true);
    return finalized(net, seed);
}

/* ul_net_infer against ul_net_forward in eval mode (BatchNorm as its own
 * pass) at one and two threads, after the running statistics and every
 * parameter (BatchNorm scales and shifts included) have moved away from
 * their initial values. Folding changes only the rounding: the logits
 * agree to 1e-4 relative (observed ≤ 2e-6), and not bit for bit (the folded
 * path did run) — or, with differ unset (nothing to fold), bit for bit. Backward after infer does
 * nothing, and a training pass after it is bit-identical to one before. */
static void check_infer(const char *what, ul_net *net, int N, bool differ)
{
    warm_running_stats(net, N, 71);
    size_t np;
    float *p = ul_net_params(net, &np);
    ul_rng r;
    ul_rng_seed(&r, 72, 0);
    for (size_t i = 0; i < np; i++)
        p[i] += (float)(0.2 * ul_rng_uniform(&r) - 0.1);
    int C, H, W;
    ul_net_input_shape(net, &C, &H, &W);
    const int K = ul_net_classes(net);
    float *x = rand_floats(&r, (size_t)N * C * H * W, -1, 2);
    float *G = rand_floats(&r, (size_t)N * K, -1, 1);
    const int prev = ul_runtime_threads();
    for (int threads = 1; threads <= 2; threads++) {
        pass_result before = run_pass(net, threads, N, true, 73);
        ul_runtime_set_threads(threads);
        float *ref = malloc((size_t)N * K * sizeof *ref);
        memcpy(ref, ul_net_forward(net, x, N, false), (size_t)N * K * sizeof *ref);
        float *x0 = malloc((size_t)N * C * H * W * sizeof *x0);
        memcpy(x0, x, (size_t)N * C * H * W * sizeof *x0);
        const float *z = ul_net_infer(net, x, N);
        ck_assert_ptr_nonnull(z);
        /* It may read x in place, but never write it. */
        ck_assert_msg(!memcmp(x, x0, (size_t)N * C * H * W * sizeof *x0),
                      "%s, %d thread(s): infer changed its input", what, threads);
        free(x0);
        double amax = 0.0;
        bool same = true;
        for (int i = 0; i < N * K; i++) {
            amax = fmax(amax, fabs(ref[i]));
            same &= z[i] == ref[i];
        }
        for (int i = 0; i < N * K; i++)
            ck_assert_msg(fabs((double)z[i] - ref[i]) <= 1e-4 * (fabs(ref[i]) + 0.01 * amax),
                          "%s, %d thread(s), logit %d: infer %.8g, forward %.8g", what, threads,
                          i, z[i], ref[i]);
        ck_assert_msg(differ ? !same : same,
                      differ ? "%s, %d thread(s): infer gave forward's logits bit for bit; "
                               "nothing was folded"
                             : "%s, %d thread(s): infer differs from forward with nothing to fold",
                      what, threads);
        ul_net_zero_grad(net);
        ul_net_backward(net, G);
        size_t ng;
        const float *g = ul_net_grads(net, &ng);
        for (size_t i = 0; i < ng; i++)
            ck_assert_msg(g[i] == 0.0f, "%s: backward after infer wrote gradient %zu", what, i);
        ul_runtime_set_threads(prev);
        pass_result after = run_pass(net, threads, N, true, 73);
        ck_assert_msg(!memcmp(before.logits, after.logits, before.n_logits * sizeof(float)) &&
                          !memcmp(before.grads, after.grads, before.n_grads * sizeof(float)),
                      "%s, %d thread(s): a training pass after infer differs", what, threads);
        free_pass(&before);
        free_pass(&after);
        free(ref);
    }
    ul_runtime_set_threads(prev);
    free(x);
    free(G);
}

/* Where a folded pass keeps its activations (infer_plan, net.c) changes
 * no result: ResNet-18's logits with the activations in a few shared
 * places equal, bit for bit, those with every activation in its own
 * buffer, at one and two threads (two threads run the layers without
 * waiting for each other, and the first thread's images are fewer, 3 of
 * 7, so a thread's rows of one activation overlap the other thread's
 * rows of the next unless they are apart as the plan sets them; the
 * first thread is also held back before each layer, twice as long as the
 * second, which then writes places ahead of it). The plan uses fewer
 * places than there are activations. */
START_TEST(test_infer_places)
{
    const int N = 7;
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 88);
    warm_running_stats(net, N, 74);
    ck_assert_ptr_nonnull(net->out_infer);
    int placed = 0, places = 0;
    for (int i = 0; i < net->n_nodes; i++)
        if (net->out_infer[i] && net->nodes[i].store == i) {
            placed++;
            bool seen = false;
            for (int j = 0; j < i; j++)
                seen |= net->nodes[j].store == j && net->out_infer[j] == net->out_infer[i];
            places += !seen;
        }
    ck_assert_msg(placed > 10 && places < placed / 3,
                  "%d activations in %d places: expected them to share a few", placed, places);
    const int K = ul_net_classes(net);
    ul_rng r;
    ul_rng_seed(&r, 75, 0);
    float *x = rand_floats(&r, (size_t)N * 3 * 64, -1, 2);
    float *z1 = malloc((size_t)N * K * sizeof *z1), *z2 = malloc((size_t)N * K * sizeof *z2);
    const int prev = ul_runtime_threads();
    for (int threads = 1; threads <= 2; threads++) {
        ul_runtime_set_threads(threads);
        memcpy(z1, ul_net_infer(net, x, N), (size_t)N * K * sizeof *z1);
        float **plan = net->out_infer;
        net->out_infer = NULL;
        memcpy(z2, ul_net_infer(net, x, N), (size_t)N * K * sizeof *z2);
        net->out_infer = plan;
        ck_assert_msg(!memcmp(z1, z2, (size_t)N * K * sizeof *z1),
                      "%d thread(s): the placed activations changed the logits", threads);
        /* Again with the second thread ever more layers ahead of the
         * first (half its wait before each node). */
        net_team_lag(2e-3);
        memcpy(z1, ul_net_infer(net, x, N), (size_t)N * K * sizeof *z1);
        net_team_lag(0.0);
        ck_assert_msg(!memcmp(z1, z2, (size_t)N * K * sizeof *z1),
                      "%d thread(s): the placed activations changed the logits", threads);
    }
    ul_runtime_set_threads(prev);
    free(x), free(z1), free(z2);
    ul_net_free(net);
}
END_TEST

/* ul_net_infer's logits with the kernels taken from the convolutions'
 * caches equal those with every kernel transformed again: after the
 * first pass (which fills the caches) and the second (which reads them),
 * after a weight changed (the caches are made again), and after an
 * unfolded pass (which writes the buffers the caches live in); at one and
 * two threads. ResNet-18 width 0.25 on 16×16: 16 to 64 channels (the
 * AVX-512 Winograd path, where the CPU has it) and 128 (the general
 * one). */
static void infer_no_cache(ul_net *net, const float *x, int N, float *z)
{
    float *bufs[256];
    ck_assert(net->n_nodes <= 256);
    for (int i = 0; i < net->n_nodes; i++) {
        bufs[i] = net->nodes[i].kc.buf;
        net->nodes[i].kc.buf = NULL;
    }
    memcpy(z, ul_net_infer(net, x, N), (size_t)N * ul_net_classes(net) * sizeof *z);
    for (int i = 0; i < net->n_nodes; i++)
        net->nodes[i].kc.buf = bufs[i];
}

START_TEST(test_infer_kernel_cache)
{
    const int N = 5;
    ul_net *net = make_model("resnet18", 0.25, NULL, 3, 16, 16, 4, 89);
    /* Buffers for 48 images: room for the 128-channel kernels too. */
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, 48, &err) == UL_OK, "%s", err.msg);
    warm_running_stats(net, N, 76);
    int cached = 0;
    for (int i = 0; i < net->n_nodes; i++)
        cached += net->nodes[i].kc.buf != NULL;
    ck_assert_msg(cached >= 10, "only %d convolutions keep their kernels", cached);
    const int K = ul_net_classes(net);
    const size_t nz = (size_t)N * K * sizeof(float);
    ul_rng r;
    ul_rng_seed(&r, 77, 0);
    float *x = rand_floats(&r, (size_t)N * 3 * 256, -1, 2);
    float *z1 = malloc(nz), *z2 = malloc(nz), *ref = malloc(nz);
    size_t np;
    float *p = ul_net_params(net, &np);
    const int prev = ul_runtime_threads();
    for (int threads = 1; threads <= 2; threads++) {
        ul_runtime_set_threads(threads);
        memcpy(z1, ul_net_infer(net, x, N), nz);
        int filled = 0;
        for (int i = 0; i < net->n_nodes; i++)
            filled += net->nodes[i].kc.have != 0;
        ck_assert_msg(filled == cached, "%d thread(s): %d of %d caches filled", threads, filled,
                      cached);
        memcpy(z2, ul_net_infer(net, x, N), nz);
        infer_no_cache(net, x, N, ref);
        ck_assert_msg(!memcmp(z1, ref, nz) && !memcmp(z2, ref, nz),
                      "%d thread(s): the cached kernels changed the logits", threads);
        /* A weight of every convolution moves. */
        for (size_t i = 0; i < np; i += 97)
            p[i] += 0.25f;
        memcpy(z2, ul_net_infer(net, x, N), nz);
        infer_no_cache(net, x, N, ref);
        ck_assert_msg(memcmp(z1, ref, nz), "%d thread(s): the weights did not matter", threads);
        ck_assert_msg(!memcmp(z2, ref, nz),
                      "%d thread(s): after the weights changed, stale kernels", threads);
        ck_assert_ptr_nonnull(ul_net_forward(net, x, N, false));
        memcpy(z2, ul_net_infer(net, x, N), nz);
        ck_assert_msg(!memcmp(z2, ref, nz),
                      "%d thread(s): after an unfolded pass, overwritten kernels", threads);
    }
    ul_runtime_set_threads(prev);
    free(x), free(z1), free(z2), free(ref);
    ul_net_free(net);
}
END_TEST

/* An image's logits from ul_net_infer do not depend on the batch it comes
 * in: the first images of a batch of 12 give the same logits, bit for bit,
 * in batches of 1, 2 and 5 (one thread), for ResNet-18 width 0.25 (every
 * convolution path at its default), the CNN and the MLP. The folded
 * convolutions have a bias, which the packed GEMM's path once added
 * before the products with one image per block and after them with
 * several. */
START_TEST(test_infer_batch)
{
    static const char *const models[] = {"resnet18", "cnn", "mlp"};
    const int prev = ul_runtime_threads();
    ul_runtime_set_threads(1);
    for (int mi = 0; mi < 3; mi++) {
        const int N = 12;
        ul_net *net = make_model(models[mi], 0.25, NULL, 3, 16, 16, 4, 93 + (uint64_t)mi);
        warm_running_stats(net, N, 80);
        const int K = ul_net_classes(net);
        ul_rng r;
        ul_rng_seed(&r, 81, 0);
        float *x = rand_floats(&r, (size_t)N * 3 * 256, -1, 2);
        float *all = malloc((size_t)N * K * sizeof *all);
        memcpy(all, ul_net_infer(net, x, N), (size_t)N * K * sizeof *all);
        static const int sizes[] = {1, 2, 5};
        for (int k = 0; k < 3; k++) {
            const float *z = ul_net_infer(net, x, sizes[k]);
            ck_assert_msg(!memcmp(z, all, (size_t)sizes[k] * K * sizeof *z),
                          "%s: the first %d images' logits differ from those in a batch of %d",
                          models[mi], sizes[k], N);
        }
        free(all);
        free(x);
        ul_net_free(net);
    }
    ul_runtime_set_threads(prev);
}
END_TEST

/* How a folded pass splits the batch between two threads (by their
 * measured speeds, team_cuts in net_team.c) changes no logit: ResNet-18
 * width 0.25 gives the same logits bit for bit with the first thread
 * taking 1, 6 or 10 of 12 images. */
START_TEST(test_infer_split)
{
    const int N = 12;
    ul_net *net = make_model("resnet18", 0.25, NULL, 3, 16, 16, 4, 90);
    warm_running_stats(net, N, 78);
    const int K = ul_net_classes(net);
    const size_t nz = (size_t)N * K * sizeof(float);
    ul_rng r;
    ul_rng_seed(&r, 79, 0);
    float *x = rand_floats(&r, (size_t)N * 3 * 256, -1, 2);
    float *z[3];
    if (net->team_cap < 2) { /* one processor: no split to make */
        free(x);
        ul_net_free(net);
        return;
    }
    /* Speeds (relative to their mean) and the first thread's share. */
    static const double first[3] = {1.0 / 6.0, 1.0, 5.0 / 3.0};
    static const int want[3] = {1, 6, 10};
    const int prev = ul_runtime_threads();
    ul_runtime_set_threads(2);
    for (int k = 0; k < 3; k++) {
        net->team_speed_T = 2;
        net->team_speed[0] = first[k];
        net->team_speed[1] = 2.0 - first[k];
        z[k] = malloc(nz);
        memcpy(z[k], ul_net_infer(net, x, N), nz);
        ck_assert_msg(net->team_cut[1] == want[k], "speeds %g : %g: the first thread took %d images",
                      first[k], 2.0 - first[k], net->team_cut[1]);
    }
    ul_runtime_set_threads(prev);
    ck_assert_msg(!memcmp(z[0], z[1], nz) && !memcmp(z[1], z[2], nz),
                  "the split of the batch changed the logits");
    for (int k = 0; k < 3; k++)
        free(z[k]);
    free(x);
    ul_net_free(net);
}
END_TEST

START_TEST(test_infer_folds_bn)
{
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 86);
    check_infer("resnet18", net, 7, true);
    ul_net_free(net);
    /* The folded weights through the Winograd paths (which take the bias
     * in their output transform), with 4×4 tiles and with 2×2 tiles. */
    ul_wino_force(4);
    net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 87);
    check_infer("resnet18, Winograd", net, 5, true);
    ul_net_free(net);
    ul_wino_force(1);
    net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 91);
    check_infer("resnet18, Winograd 2x2 tiles", net, 5, true);
    ul_net_free(net);
    ul_wino_force(0);
    /* Width 0.25 on 16×16, at the default thresholds: 16 to 64 channels
     * through the AVX-512 Winograd path (where the CPU has it), the
     * downsampling layers through the direct one, both with the fused
     * ReLU applied as they store their outputs, and with their kernels
     * kept in the caches. */
    net = make_model("resnet18", 0.25, NULL, 3, 16, 16, 4, 92);
    check_infer("resnet18 width 0.25", net, 5, true);
    ul_net_free(net);
    net = make_model("cnn", 0.0625, NULL, 1, 8, 8, 3, 88);
    check_infer("cnn", net, 5, true);
    ul_net_free(net);
    net = make_fold_net(89);
    check_infer("conv with bias, conv with two consumers", net, 5, true);
    ul_net_free(net);
    /* Nothing to fold: infer is the eval-mode forward, bit for bit. */
    static const char *const kv[] = {"depth=2", NULL};
    net = make_model("mlp", 0.1, kv, 1, 5, 5, 3, 90);
    check_infer("mlp", net, 5, false);
    ul_net_free(net);
    /* A ReLU on the input runs in place, in the input's storage: infer must
     * copy x first rather than read it in place. */
    net = ul_net_new(2, 3, 3, 2);
    ck_assert_ptr_nonnull(net);
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_relu(net, ul_net_input(net))), 2, true);
    ul_rng rng;
    ul_rng_seed(&rng, 97, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(ul_net_reserve(net, 5, &err), UL_OK);
    check_infer("relu on the input", net, 5, false);
    ul_net_free(net);
}
END_TEST

/* The Winograd convolution paths (ops_wino.c), forced onto every 3×3
 * stride-1 layer of a narrow ResNet-18: 2×2 tiles both ways (_i = 0), then
 * 4×4 tiles forward and for dX with dW by 2×2 tiles (_i = 1), directly
 * (_i = 2) or by 4×4 tiles (_i = 3). End-to-end gradients against finite differences, one thread
 * against two, each bit-identical run to run. */
START_TEST(test_winograd_net)
{
    ul_wino_force(1 + _i);
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 91);
    char what[64], train[80], eval[80];
    snprintf(what, sizeof what, "resnet18 width 0.04, Winograd mode %d", 1 + _i);
    snprintf(train, sizeof train, "%s train", what);
    snprintf(eval, sizeof eval, "%s eval", what);
    check_net_grad(what, net, 4, true, 900);
    check_threads_agree(train, net, 5, true);
    check_threads_agree(eval, net, 7, false);
    ul_net_free(net);
    ul_wino_force(0);
}
END_TEST

START_TEST(test_grad_one_thread)
{
    /* The other gradient tests run with two threads (UNLEARN_THREADS=2);
     * this one checks the batch-parallel passes with a team of one, the
     * serial path of a top-level call, against finite differences. */
    const int prev = ul_runtime_threads();
    ul_runtime_set_threads(1);
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 91);
    check_net_grad("resnet18 one thread", net, 4, true, 900);
    ul_net_free(net);
    net = make_tricky_net(92);
    warm_running_stats(net, 3, 93);
    check_net_grad("tricky graph one thread eval mode", net, 3, false, 901);
    ul_net_free(net);
    ul_runtime_set_threads(prev);
}
END_TEST

START_TEST(test_grad_inside_parallel_region)
{
    /* Called from inside a parallel region (a plugin's own OpenMP loop, say)
     * a net runs op by op (net.c), each op on the calling thread alone:
     * gradients against finite differences there too, in training and in
     * eval mode. */
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 94);
    ul_net *tricky = make_tricky_net(95);
    warm_running_stats(tricky, 3, 96);
    int ran = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp master
        {
            ck_assert_msg(omp_in_parallel(), "the region did not get two threads");
            check_net_grad("resnet18 inside a parallel region", net, 4, true, 902);
            check_net_grad("tricky graph inside a parallel region, eval mode", tricky, 3, false,
                           903);
            ran = 1;
        }
    }
    ck_assert_int_eq(ran, 1);
    ul_net_free(net);
    ul_net_free(tricky);
}
END_TEST

/* ---- names and parameter counts --------------------------------------------------- */

/* torchvision's resnet18 state_dict order, written out from its module
 * registration order: conv1, bn1, layer1..4 (each BasicBlock registers
 * conv1, bn1, conv2, bn2, then downsample.0 conv and downsample.1 BN), fc.
 * BN entries: weight, bias, running_mean, running_var, num_batches_tracked.
 *   entries: stem 1+5 = 6; plain block 2·(1+5) = 12; downsampling block
 *   12 + 6 = 18; layer1 2·12, layer2..4 18+12 each; fc 2:
 *   6 + 24 + 3·30 + 2 = 122, of which trainable 3 + 12 + 3·15 + 2 = 62
 *   (20 BNs × 3 buffers = 60 more). */
static size_t torchvision_resnet18_names(char names[][64])
{
    static const char *const bn_fields[] = {"weight", "bias", "running_mean", "running_var",
                                            "num_batches_tracked"};
    size_t n = 0;
    snprintf(names[n++], 64, "conv1.weight");
    for (int f = 0; f < 5; f++)
        snprintf(names[n++], 64, "bn1.%s", bn_fields[f]);
    for (int layer = 1; layer <= 4; layer++)
        for (int block = 0; block < 2; block++) {
            for (int c = 1; c <= 2; c++) {
                snprintf(names[n++], 64, "layer%d.%d.conv%d.weight", layer, block, c);
                for (int f = 0; f < 5; f++)
                    snprintf(names[n++], 64, "layer%d.%d.bn%d.%s", layer, block, c,
                             bn_fields[f]);
            }
            if (layer > 1 && block == 0) {
                snprintf(names[n++], 64, "layer%d.0.downsample.0.weight", layer);
                for (int f = 0; f < 5; f++)
                    snprintf(names[n++], 64, "layer%d.0.downsample.1.%s", layer, bn_fields[f]);
            }
        }
    snprintf(names[n++], 64, "fc.weight");
    snprintf(names[n++], 64, "fc.bias");
    return n;
}

/* After a batch-parallel training pass, backward takes a fused ReLU's
 * mask from the BatchNorm's input and the map forward saved (net_team.c),
 * instead of from the output: the two must agree everywhere, bit for bit
 * — x·scale + shift > 0 exactly where the output is positive. */
START_TEST(test_bn_relu_mask_from_x)
{
    ul_net *net = make_model("resnet18", 0.25, NULL, 3, 16, 16, 4, 97);
    size_t np;
    float *p = ul_net_params(net, &np);
    ul_rng r;
    ul_rng_seed(&r, 98, 0);
    for (size_t i = 0; i < np; i++) /* BatchNorm shifts away from 0 too */
        p[i] += (float)(0.4 * ul_rng_uniform(&r) - 0.2);
    const int N = 8;
    float *x = rand_floats(&r, (size_t)N * 3 * 16 * 16, -1, 2);
    ul_error err = {0};
    ck_assert_msg(ul_net_reserve(net, N, &err) == UL_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(ul_net_forward(net, x, N, true));
    ck_assert(net->last_team && net->last_train);
    int fused = 0;
    long pos = 0, nonpos = 0;
    for (int i = 0; i + 1 < net->n_nodes; i++) {
        const net_node *bn = &net->nodes[i], *relu = &net->nodes[i + 1];
        if (bn->op != NET_BN || relu->op != NET_RELU || relu->in[0] != i || relu->inplace != 0 ||
            bn->n_consumers != 1)
            continue;
        fused++;
        const net_node *a = &net->nodes[bn->in[0]];
        const size_t HW = (size_t)bn->H * bn->W;
        for (int n = 0; n < N; n++)
            for (int c = 0; c < bn->C; c++)
                for (size_t j = 0; j < HW; j++) {
                    const size_t o = ((size_t)n * bn->C + c) * HW + j;
                    const bool from_x = a->out[o] * bn->bn_scale[c] + bn->bn_shift[c] > 0.0f;
                    ck_assert_msg(from_x == (bn->out[o] > 0.0f),
                                  "node %d, example %d, channel %d, position %zu: mask from x "
                                  "%d, output %g",
                                  i, n, c, j, (int)from_x, (double)bn->out[o]);
                    if (from_x)
                        pos++;
                    else
                        nonpos++;
                }
    }
    /* ResNet-18: the stem's and each block's first BatchNorm. */
    ck_assert_int_eq(fused, 9);
    ck_assert(pos > 30000 && nonpos > 30000);
    free(x);
    ul_net_free(net);
}
END_TEST

START_TEST(test_resnet18_torchvision_names)
{
    ul_net *net = make_model("resnet18", 1.0, NULL, 3, 32, 32, 10, 81);
    static char expected[160][64];
    size_t n_expected = torchvision_resnet18_names(expected);
    ck_assert_uint_eq(n_expected, 122);
    ck_assert_uint_eq(ul_net_tensor_count(net), 122);
    size_t trainable = 0;
    for (size_t i = 0; i < n_expected; i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        ck_assert_msg(!strcmp(t->name, expected[i]), "tensor %zu: expected '%s', got '%s'", i,
                      expected[i], t->name);
        bool is_nbt = strstr(t->name, "num_batches_tracked") != NULL;
        bool is_stat = is_nbt || strstr(t->name, "running_") != NULL;
        ck_assert_int_eq(t->trainable, !is_stat);
        ck_assert_int_eq(t->dtype, is_nbt ? UL_I64 : UL_F32);
        trainable += t->trainable;
    }
    ck_assert_uint_eq(trainable, 62);
    /* The first block, spelled out. */
    static const char *const first[] = {
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
        "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
        "layer1.0.bn1.num_batches_tracked", "layer1.0.conv2.weight", "layer1.0.bn2.weight",
        "layer1.0.bn2.bias", "layer1.0.bn2.running_mean", "layer1.0.bn2.running_var",
        "layer1.0.bn2.num_batches_tracked", "layer1.1.conv1.weight"};
    for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
        ck_assert_str_eq(ul_net_tensor(net, i)->name, first[i]);
    ck_assert_str_eq(ul_net_tensor(net, 121)->name, "fc.bias");

    assert_shape(net, "conv1.weight", 4, 64, 3, 3, 3);
    assert_shape(net, "bn1.num_batches_tracked", 0, 0, 0, 0, 0);
    assert_shape(net, "layer2.0.conv1.weight", 4, 128, 64, 3, 3);
    assert_shape(net, "layer2.0.downsample.0.weight", 4, 128, 64, 1, 1);
    assert_shape(net, "layer4.1.bn2.running_var", 1, 512, 0, 0, 0);
    assert_shape(net, "fc.weight", 2, 10, 512, 0, 0);
    ck_assert_ptr_null(ul_net_find_tensor(net, "layer1.0.downsample.0.weight"));
    ul_net_free(net);
}
END_TEST

START_TEST(test_resnet18_param_count)
{
    /* The CIFAR ResNet-18 (3x3 stem) at width 1 on 3x32x32, 10 classes:
     * PyTorch reports 11,173,962 trainable parameters. */
    ul_net *net = make_model("resnet18", 1.0, NULL, 3, 32, 32, 10, 91);
    ck_assert_int_eq(ul_net_param_count(net), 11173962);
    ul_net_free(net);

    /* keep_stem at width 0.5: stem 64, stages 32/64/128/256, so layer1.0
     * gets a 64→32 downsample. */
    static const char *const kv[] = {"keep_stem=true", NULL};
    net = make_model("resnet18", 0.5, kv, 3, 32, 32, 10, 92);
    assert_shape(net, "conv1.weight", 4, 64, 3, 3, 3);
    assert_shape(net, "layer1.0.conv1.weight", 4, 32, 64, 3, 3);
    assert_shape(net, "layer1.0.downsample.0.weight", 4, 32, 64, 1, 1);
    assert_shape(net, "fc.weight", 2, 10, 256, 0, 0);
    ck_assert_uint_eq(ul_net_tensor_count(net), 128);
    ul_net_free(net);
}
END_TEST

START_TEST(test_mlp_names_and_count)
{
    /* 1x28x28, 10 classes, depth 2, 256 hidden:
     * 784·256+256 + 256·256+256 + 256·10+10 = 200960 + 65792 + 2570 = 269322. */
    ul_net *net = make_model("mlp", 1.0, NULL, 1, 28, 28, 10, 101);
    ck_assert_int_eq(ul_net_param_count(net), 269322);
    static const char *const names[] = {"hidden.0.weight", "hidden.0.bias", "hidden.1.weight",
                                        "hidden.1.bias", "fc.weight", "fc.bias"};
    ck_assert_uint_eq(ul_net_tensor_count(net), 6);
    for (size_t i = 0; i < 6; i++)
        ck_assert_str_eq(ul_net_tensor(net, i)->name, names[i]);
    assert_shape(net, "hidden.0.weight", 2, 256, 784, 0, 0);
    ul_net_free(net);

    /* width 0.05: round(12.8) = 13 hidden; depth 3 adds hidden.2:
     * 784·13+13 + 2·(13·13+13) + 13·10+10 = 10205 + 364 + 140 = 10709. */
    static const char *const kv[] = {"depth=3", NULL};
    net = make_model("mlp", 0.05, kv, 1, 28, 28, 10, 102);
    ck_assert_int_eq(ul_net_param_count(net), 10709);
    assert_shape(net, "hidden.2.weight", 2, 13, 13, 0, 0);
    ul_net_free(net);

    /* Python's round() halves to even: base 5 at width 0.5 is 2 units, not 3. */
    static const char *const kv5[] = {"base=5", "depth=1", NULL};
    net = make_model("mlp", 0.5, kv5, 1, 2, 2, 2, 103);
    assert_shape(net, "hidden.0.weight", 2, 2, 4, 0, 0);
    ul_net_free(net);
}
END_TEST

START_TEST(test_cnn_names_and_count)
{
    /* 1x28x28, 10 classes, 3 stages of 32/64/128 channels; 28→14→7→3:
     * conv 1·32·9 = 288, bn 64; conv 32·64·9 = 18432, bn 128;
     * conv 64·128·9 = 73728, bn 256; fc 128·3·3·10 + 10 = 11530:
     * total 104426. */
    ul_net *net = make_model("cnn", 1.0, NULL, 1, 28, 28, 10, 111);
    ck_assert_int_eq(ul_net_param_count(net), 104426);
    ck_assert_uint_eq(ul_net_tensor_count(net), 3 * 6 + 2);
    static const char *const names[] = {
        "features.0.conv.weight", "features.0.bn.weight", "features.0.bn.bias",
        "features.0.bn.running_mean", "features.0.bn.running_var",
        "features.0.bn.num_batches_tracked", "features.1.conv.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_str_eq(ul_net_tensor(net, i)->name, names[i]);
    assert_shape(net, "features.2.conv.weight", 4, 128, 64, 3, 3);
    assert_shape(net, "fc.weight", 2, 10, 1152, 0, 0);
    ul_net_free(net);

    /* 3x32x32 at width 0.5: 16/32/64 channels, 32→4: fc 64·16 = 1024 in. */
    net = make_model("cnn", 0.5, NULL, 3, 32, 32, 10, 112);
    assert_shape(net, "features.0.conv.weight", 4, 16, 3, 3, 3);
    assert_shape(net, "fc.weight", 2, 10, 1024, 0, 0);
    ul_net_free(net);

    /* Too many stages for the input is a build error naming the limit. */
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "cnn", &p, &err), UL_OK);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_int_eq(ul_params_set(params, "stages", "5", &err), UL_OK);
    ul_rng rng;
    ul_rng_seed(&rng, 1, 0);
    ck_assert_int_eq(ul_model_create("cnn", 1.0, params, 1, 28, 28, 10, &rng, &net, &err),
                     UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "at most 4") != NULL, "unexpected message: %s", err.msg);
    ul_params_free(params);
}
END_TEST

START_TEST(test_init_bounds)
{
    /* PyTorch's default: conv/linear weights and biases in ±1/√fan_in,
     * BN γ=1 β=0, running stats 0/1, num_batches_tracked 0. */
    ul_net *net = make_model("cnn", 0.5, NULL, 1, 28, 28, 10, 121);
    struct { const char *name; double fan_in; } cases[] = {
        {"features.0.conv.weight", 1 * 9}, {"features.1.conv.weight", 16 * 9},
        {"fc.weight", 64 * 9}, {"fc.bias", 64 * 9}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const ul_tensor_info *t = ul_net_find_tensor(net, cases[c].name);
        double bound = 1.0 / sqrt(cases[c].fan_in), mx = 0.0;
        for (int64_t i = 0; i < t->numel; i++)
            mx = fmax(mx, fabs(((float *)t->data)[i]));
        ck_assert_msg(mx <= bound && mx > 0.5 * bound, "%s: max |w| %.5g, bound %.5g",
                      cases[c].name, mx, bound);
    }
    const ul_tensor_info *g = ul_net_find_tensor(net, "features.1.bn.weight");
    const ul_tensor_info *v = ul_net_find_tensor(net, "features.1.bn.running_var");
    for (int64_t i = 0; i < g->numel; i++) {
        ck_assert_float_eq(((float *)g->data)[i], 1.0f);
        ck_assert_float_eq(((float *)v->data)[i], 1.0f);
    }
    ck_assert_int_eq(*(int64_t *)ul_net_find_tensor(net, "features.1.bn.num_batches_tracked")->data, 0);
    ul_net_free(net);
}
END_TEST

/* ---- BatchNorm modes, clone, misuse ------------------------------------------------ */

/* Batch statistics of a channel far from zero (mean 1000, std 0.01) and of
 * one near it, at one and at two threads: the two-thread pass combines
 * shifted one-pass sums, which must stay as accurate as the two-pass
 * reference in double. Running stats after one step from (0, 0) with
 * momentum 0.1: 0.1·mean and 0.1·unbiased var. */
START_TEST(test_bn_large_mean)
{
    const int N = 7, HW = 16;
    ul_net *net = ul_net_new(2, 4, 4, 2);
    ul_net_linear(net, "fc",
                  ul_net_flatten(net, ul_net_global_avgpool(
                                          net, ul_net_batchnorm(net, "bn", ul_net_input(net)))),
                  2, true);
    ul_rng rng;
    ul_rng_seed(&rng, 3, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(ul_net_reserve(net, N, &err), UL_OK);
    float x[7 * 2 * 16];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < HW; j++) {
            x[(n * 2 + 0) * HW + j] = (float)(1000.0 + 0.01 * ul_rng_normal(&rng));
            x[(n * 2 + 1) * HW + j] = (float)ul_rng_normal(&rng);
        }
    double want_m[2], want_v[2];
    for (int c = 0; c < 2; c++) {
        double sum = 0.0, ss = 0.0;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < HW; j++)
                sum += x[(n * 2 + c) * HW + j];
        const double mu = sum / (N * HW);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < HW; j++) {
                double d = x[(n * 2 + c) * HW + j] - mu;
                ss += d * d;
            }
        want_m[c] = 0.1 * mu;
        want_v[c] = 0.1 * ss / (N * HW - 1);
    }
    float *rm = ul_net_find_tensor(net, "bn.running_mean")->data;
    float *rv = ul_net_find_tensor(net, "bn.running_var")->data;
    const int prev = ul_runtime_threads();
    for (int threads = 1; threads <= 2; threads++) {
        rm[0] = rm[1] = rv[0] = rv[1] = 0.0f;
        ul_runtime_set_threads(threads);
        ck_assert_ptr_nonnull(ul_net_forward(net, x, N, true));
        for (int c = 0; c < 2; c++) {
            /* float32 storage of the results: relative 1e-6 of the value. */
            ck_assert_msg(fabs(rm[c] - want_m[c]) <= 1e-6 * fabs(want_m[c]) + 1e-7,
                          "%d thread(s), channel %d: running mean %.9g, expected %.9g", threads,
                          c, rm[c], want_m[c]);
            ck_assert_msg(fabs(rv[c] - want_v[c]) <= 1e-4 * want_v[c],
                          "%d thread(s), channel %d: running var %.9g, expected %.9g", threads, c,
                          rv[c], want_v[c]);
        }
    }
    ul_runtime_set_threads(prev);
    ul_net_free(net);
}
END_TEST

/* A training step through conv 1×1 → BatchNorm → ReLU → global average →
 * linear, against the same step worked out in double from the
 * definitions: the BatchNorm's γ and β gradients and, through its input
 * gradient, the convolution's. 150 examples of 4×4 and 7×7 planes, so that
 * the per-channel sums run over many short planes (and, for 7×7, a
 * ragged end in each), with one thread and split over two. */
START_TEST(test_bn_grads_by_hand)
{
    static const int hw[2] = {4, 7};
    const int H = hw[_i], W = hw[_i], HW = H * W, C = 3, K = 4, O = 2, N = 150;
    ul_net *net = ul_net_new(C, H, W, O);
    ul_node h = ul_net_batchnorm(net, "bn", ul_net_conv2d(net, "c", ul_net_input(net), K, 1, 1, 0,
                                                          false));
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_global_avgpool(net, ul_net_relu(net, h))),
                  O, true);
    ul_rng rng;
    ul_rng_seed(&rng, 40 + _i, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(ul_net_reserve(net, N, &err), UL_OK);
    size_t np, ng;
    float *params = ul_net_params(net, &np);
    float *wc = ul_net_find_tensor(net, "c.weight")->data;
    float *gamma = ul_net_find_tensor(net, "bn.weight")->data;
    float *beta = ul_net_find_tensor(net, "bn.bias")->data;
    float *wl = ul_net_find_tensor(net, "fc.weight")->data;
    for (int k = 0; k < K; k++) { /* shifts that leave some channels mostly cut */
        gamma[k] = (float)(0.5 + ul_rng_uniform(&rng));
        beta[k] = (float)(ul_rng_uniform(&rng) - 0.5);
    }
    float *x = rand_floats(&rng, (size_t)N * C * HW, -1, 2);
    float *G = rand_floats(&rng, (size_t)N * O, -1, 1);

    /* The step in double. */
    const size_t M = (size_t)N * HW;
    double *hd = calloc((size_t)N * K * HW, sizeof(double));
    double *dh = calloc((size_t)N * K * HW, sizeof(double));
    double want_dg[4], want_db[4], want_dwc[4 * 3] = {0};
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j < HW; j++)
                for (int c = 0; c < C; c++)
                    hd[((size_t)n * K + k) * HW + j] +=
                        (double)wc[k * C + c] * x[((size_t)n * C + c) * HW + j];
    for (int k = 0; k < K; k++) {
        double mu = 0.0, var = 0.0, sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < HW; j++)
                mu += hd[((size_t)n * K + k) * HW + j];
        mu /= (double)M;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < HW; j++) {
                const double d = hd[((size_t)n * K + k) * HW + j] - mu;
                var += d * d;
            }
        const double rs = 1.0 / sqrt(var / (double)M + 1e-5);
        /* dy at the BatchNorm's output: the linear layer's gradient spread
         * over the plane by the average, where the ReLU passed it. */
        for (int n = 0; n < N; n++) {
            double dg = 0.0;
            for (int o = 0; o < O; o++)
                dg += (double)wl[o * K + k] * G[n * O + o];
            for (int j = 0; j < HW; j++) {
                const size_t at = ((size_t)n * K + k) * HW + j;
                const double xh = (hd[at] - mu) * rs;
                const double dy = xh * gamma[k] + beta[k] > 0.0 ? dg / HW : 0.0;
                dh[at] = dy;
                sdy += dy;
                sdyx += dy * xh;
            }
        }
        want_db[k] = sdy;
        want_dg[k] = sdyx;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < HW; j++) {
                const size_t at = ((size_t)n * K + k) * HW + j;
                const double xh = (hd[at] - mu) * rs;
                dh[at] = gamma[k] * rs * (dh[at] - sdy / (double)M - xh * sdyx / (double)M);
                for (int c = 0; c < C; c++)
                    want_dwc[k * C + c] += dh[at] * x[((size_t)n * C + c) * HW + j];
            }
    }

    const int prev = ul_runtime_threads();
    for (int threads = 1; threads <= 2; threads++) {
        ul_runtime_set_threads(threads);
        ul_net_zero_grad(net);
        ck_assert_ptr_nonnull(ul_net_forward(net, x, N, true));
        ul_net_backward(net, G);
        const float *g = ul_net_grads(net, &ng);
        ck_assert_uint_eq(ng, np);
        const float *gg = g + (gamma - params), *gb = g + (beta - params), *gw = g + (wc - params);
        /* float sums of 150·HW terms of either sign: 1e-4 of the largest
         * term's scale, far below a wrong mask or a lost plane. */
        for (int k = 0; k < K; k++) {
            ck_assert_msg(fabs(gb[k] - want_db[k]) <= 1e-4 * (1 + fabs(want_db[k])),
                          "%dx%d, %d thread(s): dβ[%d] %.7g, expected %.7g", H, W, threads, k,
                          gb[k], want_db[k]);
            ck_assert_msg(fabs(gg[k] - want_dg[k]) <= 1e-4 * (1 + fabs(want_dg[k])),
                          "%dx%d, %d thread(s): dγ[%d] %.7g, expected %.7g", H, W, threads, k,
                          gg[k], want_dg[k]);
            for (int c = 0; c < C; c++)
                ck_assert_msg(fabs(gw[k * C + c] - want_dwc[k * C + c]) <=
                                  1e-4 * (1 + fabs(want_dwc[k * C + c])),
                              "%dx%d, %d thread(s): dW[%d,%d] %.7g, expected %.7g", H, W,
                              threads, k, c, gw[k * C + c], want_dwc[k * C + c]);
        }
    }
    ul_runtime_set_threads(prev);
    free(hd);
    free(dh);
    free(x);
    free(G);
    ul_net_free(net);
}
END_TEST

START_TEST(test_bn_modes_by_hand)
{
    /* input (2,1,1) → bn → flatten: logits are the BN output itself. */
    ul_net *net = ul_net_new(2, 1, 1, 2);
    ul_net_flatten(net, ul_net_batchnorm(net, "bn", ul_net_input(net)));
    ul_rng rng;
    ul_rng_seed(&rng, 1, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(ul_net_reserve(net, 3, &err), UL_OK);
    float *gamma = ul_net_find_tensor(net, "bn.weight")->data;
    float *beta = ul_net_find_tensor(net, "bn.bias")->data;
    float *rm = ul_net_find_tensor(net, "bn.running_mean")->data;
    float *rv = ul_net_find_tensor(net, "bn.running_var")->data;
    int64_t *nbt = ul_net_find_tensor(net, "bn.num_batches_tracked")->data;
    const float g0[2] = {1.5f, -0.5f}, b0[2] = {0.25f, 2.0f}, m0[2] = {0.5f, -1.0f},
                v0[2] = {4.0f, 0.25f};
    memcpy(gamma, g0, sizeof g0);
    memcpy(beta, b0, sizeof b0);
    memcpy(rm, m0, sizeof m0);
    memcpy(rv, v0, sizeof v0);
    const float x[3 * 2] = {1.0f, 2.0f, -2.0f, 0.5f, 4.0f, -3.0f}; /* (n, c) */

    /* Eval: (x − running_mean)/√(running_var + 1e-5)·γ + β. */
    const float *z = ul_net_forward(net, x, 3, false);
    for (int n = 0; n < 3; n++)
        for (int c = 0; c < 2; c++) {
            double want = (x[n * 2 + c] - m0[c]) / sqrt(v0[c] + 1e-5) * g0[c] + b0[c];
            ck_assert_msg(fabs(z[n * 2 + c] - want) <= 1e-5 * (1 + fabs(want)),
                          "eval out[%d,%d]: expected %.7g, got %.7g", n, c, want, z[n * 2 + c]);
        }
    ck_assert_int_eq(*nbt, 0);
    ck_assert_float_eq(rm[0], m0[0]);

    /* Train: batch mean and biased variance; running stats move by 0.1
     * towards the mean and the unbiased variance. */
    z = ul_net_forward(net, x, 3, true);
    for (int c = 0; c < 2; c++) {
        double mean = (x[c] + x[2 + c] + x[4 + c]) / 3.0, ss = 0.0;
        for (int n = 0; n < 3; n++)
            ss += (x[n * 2 + c] - mean) * (x[n * 2 + c] - mean);
        double var_b = ss / 3.0, var_u = ss / 2.0;
        for (int n = 0; n < 3; n++) {
            double want = (x[n * 2 + c] - mean) / sqrt(var_b + 1e-5) * g0[c] + b0[c];
            ck_assert_msg(fabs(z[n * 2 + c] - want) <= 1e-5 * (1 + fabs(want)),
                          "train out[%d,%d]: expected %.7g, got %.7g", n, c, want,
                          z[n * 2 + c]);
        }
        double want_m = 0.9 * m0[c] + 0.1 * mean, want_v = 0.9 * v0[c] + 0.1 * var_u;
        ck_assert_msg(fabs(rm[c] - want_m) <= 1e-6 && fabs(rv[c] - want_v) <= 1e-5,
                      "running stats[%d]: expected %.7g/%.7g, got %.7g/%.7g", c, want_m,
                      want_v, rm[c], rv[c]);
    }
    ck_assert_int_eq(*nbt, 1);
    ul_net_free(net);
}
END_TEST

START_TEST(test_clone_identical)
{
    ul_net *net = make_model("resnet18", 0.04, NULL, 3, 8, 8, 4, 131);
    warm_running_stats(net, 5, 132);
    ul_error err = {0};
    ul_net *copy = ul_net_clone(net, &err);
    ck_assert_msg(copy != NULL, "%s", err.msg);
    ck_assert_uint_eq(ul_net_tensor_count(copy), ul_net_tensor_count(net));
    for (size_t i = 0; i < ul_net_tensor_count(net); i++) {
        const ul_tensor_info *a = ul_net_tensor(net, i), *b = ul_net_tensor(copy, i);
        ck_assert_str_eq(a->name, b->name);
        ck_assert_ptr_ne(a->data, b->data);
        size_t bytes = (size_t)a->numel * (a->dtype == UL_I64 ? 8 : 4);
        ck_assert_msg(!memcmp(a->data, b->data, bytes), "%s differs in the clone", a->name);
    }
    ul_rng r;
    ul_rng_seed(&r, 133, 0);
    float *x = rand_floats(&r, 5 * 3 * 64, -1, 1);
    size_t K = 5 * 4;
    float za[20], zb[20];
    /* The clone is reserved like its source: no reserve call needed. */
    for (int train = 0; train < 2; train++) {
        memcpy(za, ul_net_forward(net, x, 5, train), K * sizeof(float));
        const float *z = ul_net_forward(copy, x, 5, train);
        ck_assert_ptr_nonnull(z);
        memcpy(zb, z, K * sizeof(float));
        ck_assert_msg(!memcmp(za, zb, K * sizeof(float)), "clone logits differ (train=%d)",
                      train);
    }
    /* Changing the clone leaves the source alone. */
    size_t n;
    float *pc = ul_net_params(copy, &n);
    float before = ul_net_params(net, &n)[0];
    pc[0] += 1.0f;
    ck_assert_float_eq(ul_net_params(net, &n)[0], before);
    ck_assert_int_eq(ul_net_copy_weights(copy, net, &err), UL_OK);
    ck_assert_float_eq(pc[0], before);

    ul_net *other = make_model("cnn", 1.0, NULL, 3, 8, 8, 4, 134);
    ck_assert_int_eq(ul_net_copy_weights(other, net, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "tensors") != NULL, "unexpected message: %s", err.msg);
    ul_net_free(other);
    free(x);
    ul_net_free(copy);
    ul_net_free(net);
}
END_TEST

START_TEST(test_reinit)
{
    /* Re-initialising from the seed the model was created with reproduces
     * its initial weights and resets the BN buffers. */
    ul_net *net = make_model("cnn", 0.25, NULL, 1, 8, 8, 3, 151);
    size_t n;
    float *w = ul_net_params(net, &n);
    float *init = malloc(n * sizeof *init);
    memcpy(init, w, n * sizeof *init);
    warm_running_stats(net, 2, 152);
    for (size_t i = 0; i < n; i++)
        w[i] *= 0.5f;
    int64_t *nbt = ul_net_find_tensor(net, "features.0.bn.num_batches_tracked")->data;
    float *rv = ul_net_find_tensor(net, "features.0.bn.running_var")->data;
    ck_assert_int_eq(*nbt, 3);
    ul_rng rng;
    ul_rng_seed(&rng, 151, 7);
    ul_net_reinit(net, &rng);
    ck_assert(!memcmp(w, init, n * sizeof *init));
    ck_assert_int_eq(*nbt, 0);
    ck_assert_float_eq(rv[0], 1.0f);
    free(init);
    ul_net_free(net);
}
END_TEST

START_TEST(test_reserve_and_batch_size)
{
    ul_net *net = make_model("mlp", 0.1, NULL, 1, 5, 5, 3, 141);
    ul_rng r;
    ul_rng_seed(&r, 142, 0);
    float *x = rand_floats(&r, 8 * 25, -1, 1);
    ck_assert_ptr_null(ul_net_forward(net, x, 2, false)); /* not reserved */
    ul_error err = {0};
    ck_assert_int_eq(ul_net_reserve(net, 2, &err), UL_OK);
    float z2[6];
    memcpy(z2, ul_net_forward(net, x, 2, false), sizeof z2);
    ck_assert_ptr_null(ul_net_forward(net, x, 3, false)); /* over the reserve */
    ck_assert_int_eq(ul_net_reserve(net, 8, &err), UL_OK);
    const float *z8 = ul_net_forward(net, x, 8, false);
    ck_assert_ptr_nonnull(z8);
    /* Examples are independent in eval mode: the first two match. */
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq_tol(z8[i], z2[i], 1e-6f * (1 + fabsf(z2[i])));
    ck_assert_int_eq(ul_net_reserve(net, 0, &err), UL_EINVAL);
    free(x);
    ul_net_free(net);
}
END_TEST

START_TEST(test_build_errors)
{
    ul_rng rng;
    ul_rng_seed(&rng, 1, 0);
    ul_error err = {0};

    /* A kernel larger than the padded input; the error names the layer and
     * survives later builder calls fed with the failed node. */
    ul_net *net = ul_net_new(1, 4, 4, 2);
    ul_node c = ul_net_conv2d(net, "big", ul_net_input(net), 2, 7, 1, 0, false);
    ck_assert_int_eq(c, -1);
    ul_net_linear(net, "fc", ul_net_flatten(net, c), 2, true);
    ck_assert_int_eq(ul_net_finalize(net, &rng, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "'big'") && strstr(err.msg, "4x4"), "message: %s", err.msg);
    ul_net_free(net);

    /* The last node must give one logit per class. */
    net = ul_net_new(1, 4, 4, 3);
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_input(net)), 2, true);
    ck_assert_int_eq(ul_net_finalize(net, &rng, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "(3) logits") != NULL, "message: %s", err.msg);
    ul_net_free(net);

    /* state_dict names must be unique. */
    net = ul_net_new(1, 4, 4, 2);
    ul_node f = ul_net_flatten(net, ul_net_input(net));
    ul_net_linear(net, "fc", ul_net_linear(net, "fc", f, 3, true), 2, true);
    ck_assert_int_eq(ul_net_finalize(net, &rng, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "'fc'") != NULL, "message: %s", err.msg);
    ul_net_free(net);

    /* Linear wants a flat input; add wants equal shapes. */
    net = ul_net_new(2, 3, 3, 2);
    ck_assert_int_eq(ul_net_linear(net, "fc", ul_net_input(net), 2, true), -1);
    ck_assert_int_eq(ul_net_finalize(net, &rng, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "flatten") != NULL, "message: %s", err.msg);
    ul_net_free(net);
    net = ul_net_new(2, 4, 4, 2);
    ul_node in = ul_net_input(net);
    ck_assert_int_eq(ul_net_add(net, in, ul_net_maxpool(net, in, 2, 2, 0)), -1);
    ck_assert_int_eq(ul_net_finalize(net, &rng, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "shapes differ") != NULL, "message: %s", err.msg);
    ul_net_free(net);
}
END_TEST

static Suite *net_suite(void)
{
    Suite *s = suite_create("net");
    TCase *t = tcase_create("gradients");
    tcase_add_test(t, test_grad_mlp);
    tcase_add_test(t, test_grad_cnn);
    tcase_add_test(t, test_grad_resnet18);
    tcase_add_test(t, test_grad_resnet18_keep_stem);
    tcase_add_test(t, test_grad_eval_mode);
    tcase_add_test(t, test_grad_tricky_graph);
    tcase_add_test(t, test_grad_wide_batchnorm);
    tcase_add_loop_test(t, test_backward_accumulates, 0, 2);
    suite_add_tcase(s, t);

    t = tcase_create("threads");
    tcase_add_test(t, test_threads_agree);
    tcase_add_test(t, test_infer_folds_bn);
    tcase_add_test(t, test_infer_places);
    tcase_add_test(t, test_infer_batch);
    tcase_add_test(t, test_infer_split);
    tcase_add_test(t, test_infer_kernel_cache);
    tcase_add_test(t, test_grad_one_thread);
    tcase_add_test(t, test_grad_inside_parallel_region);
    tcase_add_test(t, test_bn_relu_mask_from_x);
    tcase_add_loop_test(t, test_winograd_net, 0, 4);
    suite_add_tcase(s, t);

    t = tcase_create("models");
    tcase_add_test(t, test_resnet18_torchvision_names);
    tcase_add_test(t, test_resnet18_param_count);
    tcase_add_test(t, test_mlp_names_and_count);
    tcase_add_test(t, test_cnn_names_and_count);
    tcase_add_test(t, test_init_bounds);
    suite_add_tcase(s, t);

    t = tcase_create("net");
    tcase_add_test(t, test_bn_modes_by_hand);
    tcase_add_loop_test(t, test_bn_grads_by_hand, 0, 2);
    tcase_add_test(t, test_bn_large_mean);
    tcase_add_test(t, test_clone_identical);
    tcase_add_test(t, test_reinit);
    tcase_add_test(t, test_reserve_and_batch_size);
    tcase_add_test(t, test_build_errors);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    ul_runtime_init();
    SRunner *sr = srunner_create(net_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

