/* Tests of the unlearning methods (plugins/methods/) and their building
 * blocks (unlearn/steps.h). Every method is loaded through the real plugin
 * loader and its parameters filled from its own schema.
 *
 * One-step tests use a tiny net: 2 inputs, 2 classes, one linear layer
 * z = W·x + b, so that ∂CE/∂z = p − onehot(y), ∂/∂W = (p − e_y) ⊗ x and
 * ∂/∂b = p − e_y can be written down by hand. Most cases start from W = 0
 * and b = (ln 3, 0), where p = softmax(b) = (3/4, 1/4) exactly. Every step
 * is plain SGD (momentum 0, weight decay 0) unless the test says otherwise,
 * so θ' = θ − lr·g. Tolerance for these: 1e-5 absolute (float32 rounding of
 * values of order 1).
 *
 * Multi-step cases compare against a naive double-precision reference of
 * the same formulas for this 2-class linear model (ref_* below), written
 * independently of the library.
 *
 * The test set: a method's context has no test view at all (ul_method_ctx
 * only carries retain, forget and validation), so "never reads the test
 * set" holds by construction and needs no test. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "plugin_loader.h"
#include "runtime.h"
#include "unlearn/steps.h"

#define TOL 1e-5

/* ---- helpers ---------------------------------------------------------------- */

static ul_net *tiny_net(const float W[4], const float b[2])
{
    ul_rng rng;
    ul_rng_seed(&rng, 1, 1);
    ul_error err = {0};
    ul_net *net = ul_net_new(1, 1, 2, 2);
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_input(net)), 2, true);
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    memcpy(ul_net_find_tensor(net, "fc.weight")->data, W, 4 * sizeof(float));
    memcpy(ul_net_find_tensor(net, "fc.bias")->data, b, 2 * sizeof(float));
    return net;
}

static const float *tiny_W(const ul_net *net)
{
    return ul_net_find_tensor(net, "fc.weight")->data;
}

static const float *tiny_b(const ul_net *net)
{
    return ul_net_find_tensor(net, "fc.bias")->data;
}

static void assert_tiny(const ul_net *net, const double W[4], const double b[2])
{
    const float *w = tiny_W(net), *bb = tiny_b(net);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabs(w[i] - W[i]) <= TOL, "W[%d]: expected %.7f, got %.7f", i, W[i], w[i]);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(fabs(bb[i] - b[i]) <= TOL, "b[%d]: expected %.7f, got %.7f", i, b[i], bb[i]);
}

static ul_data_view tiny_view(const float *x, const int32_t *y, int64_t n)
{
    ul_data_view v = {x, y, NULL, n, 1, 1, 2, 2};
    return v;
}

static ul_method_ctx make_ctx(ul_net *model, const ul_net *original, ul_data_view r,
                              ul_data_view f, ul_data_view v)
{
    ul_method_ctx c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.model = model;
    c.original = original;
    c.retain = r;
    c.forget = f;
    c.val = v;
    c.seed = 11;
    return c;
}

/* Runs method `name` loaded through the plugin loader with its defaults
 * overridden by kv = {"key", "value", ..., NULL}. */
static int run_method(const char *name, const ul_method_ctx *ctx, const char *const *kv,
                      ul_error *err)
{
    const ul_plugin *p;
    ck_assert_msg(ul_plugin_find(UL_KIND_METHOD, name, &p, err) == UL_OK, "%s", err->msg);
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, err);
    ck_assert_msg(pp != NULL, "%s", err->msg);
    for (size_t i = 0; kv && kv[i]; i += 2)
        ck_assert_msg(ul_params_set(pp, kv[i], kv[i + 1], err) == UL_OK, "%s: %s=%s: %s", name,
                      kv[i], kv[i + 1], err->msg);
    const ul_method_vtable *vt = p->desc->vtable;
    int rc = vt->unlearn(ctx, pp, err);
    ul_params_free(pp);
    return rc;
}

/* Plain SGD with one example per step and nothing else. */
#define PLAIN_SGD "momentum", "0", "weight_decay", "0"

/* ---- naive reference for the 2-class linear model ---------------------------- */

static void ref_softmax2(const double z[2], double T, double p[2])
{
    double m = fmax(z[0], z[1]) / T;
    double e0 = exp(z[0] / T - m), e1 = exp(z[1] / T - m);
    p[0] = e0 / (e0 + e1);
    p[1] = e1 / (e0 + e1);
}

static void ref_logits(const double W[4], const double b[2], const float x[2], double z[2])
{
    z[0] = W[0] * x[0] + W[1] * x[1] + b[0];
    z[1] = W[2] * x[0] + W[3] * x[1] + b[1];
}

/* Adds dz ⊗ x to gW and dz to gb. */
static void ref_accum(const double dz[2], const float x[2], double gW[4], double gb[2])
{
    for (int o = 0; o < 2; o++) {
        gW[2 * o] += dz[o] * x[0];
        gW[2 * o + 1] += dz[o] * x[1];
        gb[o] += dz[o];
    }
}

/* ∂CE/∂z for one example: p − e_y. */
static void ref_ce_dz(const double z[2], int y, double dz[2])
{
    ref_softmax2(z, 1.0, dz);
    dz[y] -= 1.0;
}

static double sgn(double v)
{
    return v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0;
}

/* ---- building blocks ---------------------------------------------------------- */

START_TEST(batcher_covers_each_example_once_per_epoch)
{
    float x[7 * 2];
    int32_t y[7];
    for (int i = 0; i < 7; i++) {
        x[2 * i] = (float)i;
        x[2 * i + 1] = 0;
        y[i] = i % 2;
    }
    ul_data_view v = tiny_view(x, y, 7);
    ul_batcher b;
    ul_error err = {0};
    ck_assert_int_eq(ul_batcher_init(&b, &v, 3, 5, 1, &err), UL_OK);
    /* 7 = 3 + 3 + 1: the trailing batch of one is dropped, so 6 examples. */
    ck_assert_int_eq(b.steps, 2);
    for (int epoch = 0; epoch < 2; epoch++) {
        int seen[7] = {0}, B, total = 0;
        while ((B = ul_batcher_next(&b))) {
            ck_assert_int_eq(B, 3);
            for (int i = 0; i < B; i++) {
                int id = (int)b.x[2 * i];
                ck_assert_int_eq(b.y[i], id % 2);
                seen[id]++;
                total++;
            }
        }
        ck_assert_int_eq(total, 6);
        for (int i = 0; i < 7; i++)
            ck_assert_int_le(seen[i], 1);
    }
    /* Cycling never ends an epoch visibly. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ul_batcher_next_cycled(&b), 3);
    ul_batcher_free(&b);

    /* Fewer examples than the batch size: one batch of all of them. */
    ck_assert_int_eq(ul_batcher_init(&b, &v, 64, 5, 1, &err), UL_OK);
    ck_assert_int_eq(b.batch_size, 7);
    ck_assert_int_eq(b.steps, 1);
    ck_assert_int_eq(ul_batcher_next(&b), 7);
    ck_assert_int_eq(ul_batcher_next(&b), 0);
    ul_batcher_free(&b);
}
END_TEST

START_TEST(wrong_labels_are_wrong_and_uniform)
{
    ul_rng rng;
    ul_rng_seed(&rng, 3, 4);
    int counts[5] = {0};
    for (int i = 0; i < 40000; i++) {
        int32_t l = ul_random_wrong_label(&rng, 2, 5);
        ck_assert_int_ne(l, 2);
        ck_assert(l >= 0 && l < 5);
        counts[l]++;
    }
    /* 10000 expected for each of the 4 other classes; sd ~ 87. */
    for (int k = 0; k < 5; k++)
        if (k != 2)
            ck_assert_msg(abs(counts[k] - 10000) < 600, "class %d drawn %d times", k, counts[k]);
}
END_TEST

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

START_TEST(top_fraction_mask_matches_sorting)
{
    /* A naive reference: sort |g| descending; the mask must hold exactly k
     * coordinates, all >= the k-th largest and every coordinate strictly
     * above it. Many exact ties (zeros, repeated values) are included. */
    enum { N = 5003 };
    float *g = malloc(N * sizeof *g), *sorted = malloc(N * sizeof *sorted);
    float *scratch = malloc(N * sizeof *scratch);
    uint8_t *mask = malloc(N);
    ul_rng rng;
    ul_rng_seed(&rng, 8, 9);
    for (int i = 0; i < N; i++) {
        uint32_t r = ul_rng_below(&rng, 4);
        g[i] = r == 0 ? 0.0f : r == 1 ? 0.5f * (ul_rng_u32(&rng) & 1 ? 1 : -1)
                                      : (float)ul_rng_normal(&rng);
        sorted[i] = fabsf(g[i]);
    }
    qsort(sorted, N, sizeof *sorted, cmp_desc);
    const double ratios[] = {0.0, 0.1, 0.25, 0.5, 0.77, 1.0};
    for (size_t r = 0; r < sizeof ratios / sizeof ratios[0]; r++) {
        size_t k = ul_top_fraction_mask(g, N, ratios[r], mask, scratch);
        ck_assert_uint_eq(k, (size_t)floor(ratios[r] * N));
        size_t count = 0;
        int64_t last_tie = -1;
        for (int i = 0; i < N; i++) {
            count += mask[i];
            if (k == 0 || k == N)
                continue;
            float t = sorted[k - 1];
            if (fabsf(g[i]) > t)
                ck_assert_msg(mask[i], "ratio %g: |g[%d]| = %g above the threshold %g unmasked",
                              ratios[r], i, fabsf(g[i]), t);
            if (fabsf(g[i]) < t)
                ck_assert_msg(!mask[i], "ratio %g: |g[%d]| = %g below the threshold %g masked",
                              ratios[r], i, fabsf(g[i]), t);
            /* Ties go to the lower indices: no masked tie after an unmasked one. */
            if (fabsf(g[i]) == t && !mask[i] && last_tie < 0)
                last_tie = i;
            if (fabsf(g[i]) == t && mask[i])
                ck_assert_msg(last_tie < 0, "ratio %g: tie at %d masked after %lld unmasked",
                              ratios[r], i, (long long)last_tie);
        }
        ck_assert_uint_eq(count, k);
    }
    free(g);
    free(sorted);
    free(scratch);
    free(mask);
}
END_TEST

/* ---- one step of each method, by hand ------------------------------------------- */

static const float W0[4] = {0, 0, 0, 0};
static const float B_LN3[2] = {1.0986123f, 0}; /* ln 3: p = (3/4, 1/4) when W·x = 0 */

START_TEST(finetune_one_step)
{
    /* R = {x = (1, 2), y = 1}; p = (3/4, 1/4), dz = p − e_1 = (3/4, −3/4);
     * gW = dz ⊗ x = [[3/4, 3/2], [−3/4, −3/2]], gb = (3/4, −3/4);
     * lr 0.1: W' = [[−0.075, −0.15], [0.075, 0.15]], b' = (ln3 − 0.075, 0.075). */
    const float x[2] = {1, 2};
    const int32_t y[1] = {1};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 1), tiny_view(x, y, 0),
                                 tiny_view(x, y, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "lr", "0.1", "batch_size", "1", PLAIN_SGD, NULL};
    ck_assert_msg(run_method("finetune", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    const double W[4] = {-0.075, -0.15, 0.075, 0.15}, b[2] = {log(3.0) - 0.075, 0.075};
    assert_tiny(net, W, b);
    ul_net_free(net);
}
END_TEST

START_TEST(neggrad_one_step_ascends_the_mean_gradient)
{
    /* F = {x1 = (1, 2), y = 0; x2 = (2, 0), y = 1}, W = 0, b = 0: p = (1/2, 1/2)
     * for both. dz1 = (−1/2, 1/2), dz2 = (1/2, −1/2).
     * Mean CE gradient: gW = ½([[−½, −1], [½, 1]] + [[1, 0], [−1, 0]])
     *                      = [[1/4, −1/2], [−1/4, 1/2]], gb = 0.
     * NegGrad minimises −CE: θ' = θ + lr·g; lr 0.1:
     * W' = [[0.025, −0.05], [−0.025, 0.05]], b' = 0. */
    const float x[4] = {1, 2, 2, 0}, b0[2] = {0, 0};
    const int32_t y[2] = {0, 1};
    ul_net *net = tiny_net(W0, b0);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 0), tiny_view(x, y, 2),
                                 tiny_view(x, y, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "lr", "0.1", "batch_size", "2", PLAIN_SGD, NULL};
    ck_assert_msg(run_method("neggrad", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    const double W[4] = {0.025, -0.05, -0.025, 0.05}, b[2] = {0, 0};
    assert_tiny(net, W, b);
    ul_net_free(net);
}
END_TEST

START_TEST(neggrad_plus_one_step_weights_alpha)
{
    /* R = {xr = (1, 2), y = 1}, F = {xf = (2, 0), y = 0}; W = 0, b = (ln 3, 0)
     * so p = (3/4, 1/4) for both.
     * ∇CE(R): dz = (3/4, −3/4): gW_R = [[3/4, 3/2], [−3/4, −3/2]], gb_R = (3/4, −3/4).
     * ∇CE(F): dz = (−1/4, 1/4): gW_F = [[−1/2, 0], [1/2, 0]],      gb_F = (−1/4, 1/4).
     * α = 0.75: g = 0.75·∇R − 0.25·∇F
     *   gW = [[0.5625 + 0.125, 1.125], [−0.6875, −1.125]] = [[0.6875, 1.125], [−0.6875, −1.125]]
     *   gb = (0.5625 + 0.0625, −0.625) = (0.625, −0.625).
     * lr 0.1: W' = [[−0.06875, −0.1125], [0.06875, 0.1125]], b' = (ln3 − 0.0625, 0.0625).
     * No BatchNorm here, so eval_mode gives the same step. */
    const float xr[2] = {1, 2}, xf[2] = {2, 0};
    const int32_t yr[1] = {1}, yf[1] = {0};
    const double W[4] = {-0.06875, -0.1125, 0.06875, 0.1125}, b[2] = {log(3.0) - 0.0625, 0.0625};
    for (int eval = 0; eval < 2; eval++) {
        ul_net *net = tiny_net(W0, B_LN3);
        ul_method_ctx ctx = make_ctx(net, net, tiny_view(xr, yr, 1), tiny_view(xf, yf, 1),
                                     tiny_view(xr, yr, 0));
        ul_error err = {0};
        const char *kv[] = {"epochs", "1", "lr", "0.1", "alpha", "0.75", "batch_size", "1",
                            "forget_batch_size", "1", "eval_mode", eval ? "true" : "false",
                            PLAIN_SGD, NULL};
        ck_assert_msg(run_method("neggrad_plus", &ctx, kv, &err) == UL_OK, "%s", err.msg);
        assert_tiny(net, W, b);
        ul_net_free(net);
    }
}
END_TEST

START_TEST(neggrad_plus_cycles_the_forget_set)
{
    /* R has 3 examples (batches of 1), F one: the forget batch is reused for
     * every retain batch. With α = 0 only the forget term remains, so each
     * of the 3 steps ascends CE(F): the result equals 3 NegGrad steps on F,
     * computed with the naive reference. */
    const float xr[6] = {1, 0, 0, 1, 1, 1}, xf[2] = {2, 1};
    const int32_t yr[3] = {0, 1, 0}, yf[1] = {1};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(xr, yr, 3), tiny_view(xf, yf, 1),
                                 tiny_view(xr, yr, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "lr", "0.1", "alpha", "0", "batch_size", "1",
                        "forget_batch_size", "1", PLAIN_SGD, NULL};
    ck_assert_msg(run_method("neggrad_plus", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    double W[4] = {0, 0, 0, 0}, b[2] = {log(3.0), 0};
    for (int s = 0; s < 3; s++) {
        double z[2], dz[2], gW[4] = {0}, gb[2] = {0};
        ref_logits(W, b, xf, z);
        ref_ce_dz(z, yf[0], dz);
        ref_accum(dz, xf, gW, gb);
        for (int i = 0; i < 4; i++)
            W[i] += 0.1 * gW[i];
        for (int i = 0; i < 2; i++)
            b[i] += 0.1 * gb[i];
    }
    assert_tiny(net, W, b);
    ul_net_free(net);
}
END_TEST

START_TEST(scrub_max_then_min_step)
{
    /* Teacher (ctx->original): W = 0, b_t = (2 ln 3, 0). Student (ctx->model):
     * W = 0, b = 0. T = 2, one epoch with msteps = 1, lr 0.1, γ = 0.5, α = 0.5.
     *
     * Max-step on F = {xf = (1, 2)}: teacher logits (2 ln 3, 0), so
     * p_T(t) = softmax((ln 3, 0)) = (3/4, 1/4); student p_T(s) = (1/2, 1/2).
     * ∂KL/∂z_s = T/N·(p_T(s) − p_T(t)) = 2·(−1/4, 1/4) = (−1/2, 1/2); the
     * max-step minimises −KL: dz = (1/2, −1/2), gW = [[1/2, 1], [−1/2, −1]],
     * gb = (1/2, −1/2), so θ₁: W = [[−0.05, −0.1], [0.05, 0.1]], b = (−0.05, 0.05)
     * — the student moves away from the teacher.
     *
     * Min-step on R = {xr = (2, 0), y = 0} at θ₁: z = W xr + b = (−0.15, 0.15);
     * dz = γ·(softmax(z) − e_0) + α·T·(softmax(z/T) − (3/4, 1/4)); computed
     * below with the naive reference. */
    const float xf[2] = {1, 2}, xr[2] = {2, 0}, bt[2] = {2.1972246f, 0}, b0[2] = {0, 0};
    const int32_t yf[1] = {1}, yr[1] = {0};
    ul_net *teacher = tiny_net(W0, bt), *net = tiny_net(W0, b0);
    ul_method_ctx ctx = make_ctx(net, teacher, tiny_view(xr, yr, 1), tiny_view(xf, yf, 1),
                                 tiny_view(xr, yr, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "msteps", "1", "lr", "0.1", "T", "2", "gamma", "0.5",
                        "alpha", "0.5", "batch_size", "1", "forget_batch_size", "1",
                        PLAIN_SGD, NULL};
    ck_assert_msg(run_method("scrub", &ctx, kv, &err) == UL_OK, "%s", err.msg);

    double W[4] = {-0.05, -0.1, 0.05, 0.1}, b[2] = {-0.05, 0.05};
    double z[2], dz[2], ps[2], gW[4] = {0}, gb[2] = {0};
    ref_logits(W, b, xr, z);
    ck_assert_double_eq_tol(z[0], -0.15, 1e-12);
    ref_ce_dz(z, 0, dz);
    ref_softmax2(z, 2.0, ps);
    dz[0] = 0.5 * dz[0] + 0.5 * 2.0 * (ps[0] - 0.75);
    dz[1] = 0.5 * dz[1] + 0.5 * 2.0 * (ps[1] - 0.25);
    ref_accum(dz, xr, gW, gb);
    for (int i = 0; i < 4; i++)
        W[i] -= 0.1 * gW[i];
    for (int i = 0; i < 2; i++)
        b[i] -= 0.1 * gb[i];
    assert_tiny(net, W, b);
    /* The teacher is a clone: θ₀ itself is untouched. */
    const double Wt[4] = {0, 0, 0, 0}, btd[2] = {2 * log(3.0), 0};
    assert_tiny(teacher, Wt, btd);
    ul_net_free(net);
    ul_net_free(teacher);
}
END_TEST

START_TEST(scrub_lr_decays_after_listed_epochs)
{
    /* Two epochs of min-steps only (msteps 0), α = 0 and γ = 1 (so plain CE),
     * lr_decay_epochs [1]: epoch 1 uses lr 0.1, epoch 2 lr 0.1·0.1 = 0.01
     * (the reference decays once e > 1). Compared with the naive reference. */
    const float xr[2] = {1, 2};
    const int32_t yr[1] = {1};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(xr, yr, 1), tiny_view(xr, yr, 1),
                                 tiny_view(xr, yr, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "2", "msteps", "0", "lr", "0.1", "gamma", "1", "alpha", "0",
                        "lr_decay_epochs", "[1]", "batch_size", "1", PLAIN_SGD, NULL};
    ck_assert_msg(run_method("scrub", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    double W[4] = {0, 0, 0, 0}, b[2] = {log(3.0), 0};
    const double lrs[2] = {0.1, 0.01};
    for (int s = 0; s < 2; s++) {
        double z[2], dz[2], gW[4] = {0}, gb[2] = {0};
        ref_logits(W, b, xr, z);
        ref_ce_dz(z, 1, dz);
        ref_accum(dz, xr, gW, gb);
        for (int i = 0; i < 4; i++)
            W[i] -= lrs[s] * gW[i];
        for (int i = 0; i < 2; i++)
            b[i] -= lrs[s] * gb[i];
    }
    assert_tiny(net, W, b);
    ul_net_free(net);
}
END_TEST

START_TEST(l1sparse_adds_the_scheduled_sign)
{
    /* W = [[1, −1/2], [−1, 1/2]], b = (ln 3, 0), R = {x = (1, 2), y = 1}:
     * W·x = (0, 0), so p = (3/4, 1/4) and the CE gradient is that of
     * finetune_one_step: gW = [[3/4, 3/2], [−3/4, −3/2]], gb = (3/4, −3/4).
     * One epoch, α = 0.01, no_l1_epochs 0: a_0 = α(1 − 0/1) = α, and
     * sign(θ) = W: [[1, −1], [−1, 1]], b: (1, 0) — sign(0) = 0.
     * g = gCE + α·sign: gW = [[0.76, 1.49], [−0.76, −1.49]], gb = (0.76, −0.75);
     * lr 0.1: W' = [[0.924, −0.649], [−0.924, 0.649]], b' = (ln3 − 0.076, 0.075). */
    const float Wi[4] = {1, -0.5f, -1, 0.5f}, x[2] = {1, 2};
    const int32_t y[1] = {1};
    ul_error err = {0};
    {
        ul_net *net = tiny_net(Wi, B_LN3);
        ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 1), tiny_view(x, y, 0),
                                     tiny_view(x, y, 0));
        const char *kv[] = {"epochs", "1", "lr", "0.1", "alpha", "0.01", "batch_size", "1",
                            PLAIN_SGD, NULL};
        ck_assert_msg(run_method("l1sparse", &ctx, kv, &err) == UL_OK, "%s", err.msg);
        const double W[4] = {0.924, -0.649, -0.924, 0.649}, b[2] = {log(3.0) - 0.076, 0.075};
        assert_tiny(net, W, b);
        ul_net_free(net);
    }
    {
        /* E = 3, no_l1_epochs = 1: a_0 = α, a_1 = α(1 − 1/2) = α/2, a_2 = 0. */
        ul_net *net = tiny_net(Wi, B_LN3);
        ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 1), tiny_view(x, y, 0),
                                     tiny_view(x, y, 0));
        const char *kv[] = {"epochs", "3", "no_l1_epochs", "1", "lr", "0.1", "alpha", "0.01",
                            "batch_size", "1", PLAIN_SGD, NULL};
        ck_assert_msg(run_method("l1sparse", &ctx, kv, &err) == UL_OK, "%s", err.msg);
        double W[4] = {1, -0.5, -1, 0.5}, b[2] = {log(3.0), 0};
        const double a[3] = {0.01, 0.005, 0};
        for (int e = 0; e < 3; e++) {
            double z[2], dz[2], gW[4] = {0}, gb[2] = {0};
            ref_logits(W, b, x, z);
            ref_ce_dz(z, 1, dz);
            ref_accum(dz, x, gW, gb);
            for (int i = 0; i < 4; i++)
                W[i] -= 0.1 * (gW[i] + a[e] * sgn(W[i]));
            for (int i = 0; i < 2; i++)
                b[i] -= 0.1 * (gb[i] + a[e] * sgn(b[i]));
        }
        assert_tiny(net, W, b);
        ul_net_free(net);
    }
}
END_TEST

START_TEST(random_label_relabels_to_the_wrong_class)
{
    /* Two classes, so the only wrong label of y = 0 is 1. F = {x = (1, 2), y = 0},
     * R empty: one step is finetune_one_step's step on label 1:
     * W' = [[−0.075, −0.15], [0.075, 0.15]], b' = (ln3 − 0.075, 0.075). */
    const float x[2] = {1, 2};
    const int32_t y[1] = {0};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 0), tiny_view(x, y, 1),
                                 tiny_view(x, y, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "lr", "0.1", "batch_size", "1", PLAIN_SGD, NULL};
    ck_assert_msg(run_method("random_label", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    const double W[4] = {-0.075, -0.15, 0.075, 0.15}, b[2] = {log(3.0) - 0.075, 0.075};
    assert_tiny(net, W, b);
    ul_net_free(net);
}
END_TEST

START_TEST(salun_updates_only_salient_weights)
{
    /* Saliency at θ₀ (W = 0, b = (ln 3, 0)) on F = {x = (1, 3), y = 0}:
     * dz = (3/4 − 1, 1/4) = (−1/4, 1/4): |gW| = [[1/4, 3/4], [1/4, 3/4]],
     * |gb| = (1/4, 1/4). ratio 1/3 of 6 coordinates → k = 2: W[0][1] and
     * W[1][1] (the two 3/4). Then random_label with the mask, momentum 0.9
     * and weight decay 0.5 (first step: buf = g, so the step is g + wd·θ):
     * label 1, dz = (3/4, −3/4), gW = [[3/4, 9/4], [−3/4, −9/4]]; the masked-in
     * weights are 0 so wd adds nothing: W[0][1]' = −0.225, W[1][1]' = 0.225.
     * Everything else stays bit-identical — in particular b0 = ln 3, which
     * weight decay alone would move by lr·wd·ln 3 ≈ 0.055. Two epochs, to
     * catch momentum leaking into frozen coordinates too. */
    const float x[2] = {1, 3};
    const int32_t y[1] = {0};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 0), tiny_view(x, y, 1),
                                 tiny_view(x, y, 0));
    ul_error err = {0};
    const char *kv[] = {"epochs", "1", "lr", "0.1", "batch_size", "1", "ratio", "0.3334",
                        "momentum", "0.9", "weight_decay", "0.5", NULL};
    ck_assert_msg(run_method("salun", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    const double W[4] = {0, -0.225, 0, 0.225}, b[2] = {log(3.0), 0};
    assert_tiny(net, W, b);
    ck_assert(tiny_b(net)[0] == B_LN3[0]);
    ck_assert(tiny_W(net)[0] == 0.0f && tiny_W(net)[2] == 0.0f && tiny_b(net)[1] == 0.0f);

    const char *kv2[] = {"epochs", "2", "lr", "0.1", "batch_size", "1", "ratio", "0.3334",
                         "momentum", "0.9", "weight_decay", "0.5", NULL};
    ul_net_free(net);
    net = tiny_net(W0, B_LN3);
    ctx.model = net;
    ctx.original = net;
    ck_assert_msg(run_method("salun", &ctx, kv2, &err) == UL_OK, "%s", err.msg);
    ck_assert(tiny_b(net)[0] == B_LN3[0]);
    ck_assert(tiny_W(net)[0] == 0.0f && tiny_W(net)[2] == 0.0f && tiny_b(net)[1] == 0.0f);
    ck_assert(tiny_W(net)[1] < -0.225f && tiny_W(net)[3] > 0.225f);
    ul_net_free(net);
}
END_TEST

typedef struct progress_log {
    int calls, epochs_done, last_epoch;
    int64_t last_step, last_steps;
} progress_log;

static void log_progress(const ul_train_report *r, void *user)
{
    progress_log *l = user;
    l->calls++;
    l->epochs_done += r->epoch_done;
    l->last_epoch = r->epoch;
    l->last_step = r->step;
    l->last_steps = r->steps_per_epoch;
    ck_assert_int_eq(r->epochs, 2);
    ck_assert(r->accuracy >= 0 && r->accuracy <= 1 && isfinite(r->loss));
}

START_TEST(progress_is_reported_per_step)
{
    /* finetune, 2 epochs over 3 examples in batches of 1: 6 reports, each
     * epoch ending with epoch_done at step 3 of 3. */
    const float x[6] = {1, 0, 0, 1, 1, 1};
    const int32_t y[3] = {0, 1, 0};
    ul_net *net = tiny_net(W0, B_LN3);
    ul_method_ctx ctx = make_ctx(net, net, tiny_view(x, y, 3), tiny_view(x, y, 0),
                                 tiny_view(x, y, 0));
    progress_log l = {0};
    ctx.progress = log_progress;
    ctx.progress_user = &l;
    ul_error err = {0};
    const char *kv[] = {"epochs", "2", "batch_size", "1", NULL};
    ck_assert_msg(run_method("finetune", &ctx, kv, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(l.calls, 6);
    ck_assert_int_eq(l.epochs_done, 2);
    ck_assert_int_eq(l.last_epoch, 2);
    ck_assert_int_eq(l.last_step, 3);
    ck_assert_int_eq(l.last_steps, 3);
    ul_net_free(net);
}
END_TEST

START_TEST(diverging_lr_is_reported)
{
    /* Inputs of 1e20 and lr 1000: the first step moves W by ~1e22, the next
     * forward's logits overflow float32 and the loss becomes NaN or Inf. */
    const float x[4] = {1e20f, 1e20f, -1e20f, 1e20f}, b0[2] = {0, 0};
    const int32_t y[2] = {0, 1};
    const char *methods[] = {"finetune", "neggrad", "neggrad_plus", "scrub",
                             "l1sparse", "random_label", "salun"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        const float Wi[4] = {0.5f, -0.5f, 0.25f, 0.5f};
        ul_net *orig = tiny_net(Wi, b0), *net = tiny_net(Wi, b0);
        ul_method_ctx ctx = make_ctx(net, orig, tiny_view(x, y, 2), tiny_view(x, y, 2),
                                     tiny_view(x, y, 2));
        ul_error err = {0};
        const char *kv[] = {"epochs", "3", "lr", "1000", "batch_size", "1", NULL};
        int rc = run_method(methods[i], &ctx, kv, &err);
        ck_assert_msg(rc == UL_EDIVERGED, "%s: expected UL_EDIVERGED, got %d (%s)", methods[i], rc,
                      err.msg);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: loss became ", methods[i]);
        ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0 &&
                          strstr(err.msg, "; lower lr"),
                      "%s: unexpected message '%s'", methods[i], err.msg);
        ul_net_free(net);
        ul_net_free(orig);
    }
}
END_TEST

/* ---- end to end on the synthetic dataset with the mlp model ------------------------- */

#define E2E_N 1200
#define E2E_F 30   /* forget: train positions 0..29 */
#define E2E_V 200  /* validation: the last 200 examples, never trained on */

typedef struct e2e {
    ul_dataset d;
    int64_t forget_idx[E2E_F], retain_idx[E2E_N - E2E_F - E2E_V], val_idx[E2E_V];
    int64_t train_idx[E2E_N - E2E_V];
    ul_net *original;
    ul_train_cfg recipe;
} e2e;

static ul_data_view e2e_view(const e2e *s, const int64_t *idx, int64_t n)
{
    ul_data_view v = {s->d.train_x, s->d.train_y, idx, n, s->d.c, s->d.h, s->d.w,
                      s->d.n_classes};
    return v;
}

static double error_on(ul_net *net, const ul_data_view *v)
{
    double acc;
    ul_error err = {0};
    ck_assert_msg(ul_evaluate(net, v, 256, NULL, &acc, NULL, &err) == UL_OK, "%s", err.msg);
    return 1.0 - acc;
}

/* Overlapping Gaussian classes (separation 1, noise 1 in 8-D; validation
 * error ~0.12) and an MLP wide enough to memorise its training set. F is
 * made of MISLABELLED examples (label y+1 mod 4) that the original fits by
 * memorisation — the bias-removal setting of the paper: a method that
 * really forgets F makes the model predict their true class, so the error
 * on F (against the labels it was trained with) rises far above the
 * original's, while fine-tuning on R alone should keep R fitted. */
static e2e E2E;

static void e2e_setup(void)
{
    e2e *s = &E2E;
    memset(s, 0, sizeof *s);
    /* One thread for all end-to-end tests: this fixture runs in Check's
     * parent process before each test forks, and an OpenMP thread pool
     * started here would not exist in the children, which would then hang
     * in their first parallel region. It also makes every run bit-identical
     * (the rewind test needs that), and these GEMMs are too small to gain
     * from threads: BLIS's spinning barriers make them slower on a busy
     * machine. */
    ul_runtime_set_threads(1);
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_DATASET, "synthetic", &p, &err) == UL_OK, "%s", err.msg);
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, &err);
    const char *kv[] = {"n_train", "1200", "n_test", "10", "width", "8", "separation", "1.0",
                        "seed", "5", NULL};
    for (int i = 0; kv[i]; i += 2)
        ck_assert_int_eq(ul_params_set(pp, kv[i], kv[i + 1], &err), UL_OK);
    const ul_dataset_vtable *dv = p->desc->vtable;
    ck_assert_msg(dv->load(pp, &s->d, &err) == UL_OK, "%s", err.msg);
    ul_params_free(pp);
    ck_assert_int_eq(s->d.n_train, E2E_N);
    for (int64_t i = 0; i < E2E_F; i++)
        s->d.train_y[i] = (s->d.train_y[i] + 1) % s->d.n_classes;
    for (int64_t i = 0; i < E2E_N - E2E_V; i++)
        s->train_idx[i] = i;
    for (int64_t i = 0; i < E2E_F; i++)
        s->forget_idx[i] = i;
    for (int64_t i = 0; i < E2E_N - E2E_F - E2E_V; i++)
        s->retain_idx[i] = E2E_F + i;
    for (int64_t i = 0; i < E2E_V; i++)
        s->val_idx[i] = E2E_N - E2E_V + i;

    ck_assert_msg(ul_plugin_find(UL_KIND_MODEL, "mlp", &p, &err) == UL_OK, "%s", err.msg);
    pp = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ul_rng rng;
    ul_rng_seed(&rng, 21, 1);
    ck_assert_msg(ul_model_create("mlp", 0.5, pp, s->d.c, s->d.h, s->d.w, s->d.n_classes, &rng,
                                  &s->original, &err) == UL_OK,
                  "%s", err.msg);
    ul_params_free(pp);
    s->recipe = (ul_train_cfg){.epochs = 100, .batch_size = 32,
                               .optim = {.kind = UL_OPT_SGD, .lr = 0.05, .momentum = 0.9},
                               .sched = {.kind = UL_SCHED_COSINE}, .seed = 3};
    ul_data_view tv = e2e_view(s, s->train_idx, E2E_N - E2E_V);
    ck_assert_msg(ul_train(s->original, &tv, &s->recipe, NULL, NULL, NULL, &err) == UL_OK, "%s",
                  err.msg);
}

static void e2e_teardown(void)
{
    e2e *s = &E2E;
    ul_net_free(s->original);
    ul_dataset_clear(&s->d);
    ul_runtime_set_threads(2);
}

/* Runs a method on a copy of the original; returns the unlearned net. */
static ul_net *e2e_run(e2e *s, const char *method, const char *const *kv)
{
    ul_error err = {0};
    ul_net *net = ul_net_clone(s->original, &err);
    ck_assert_msg(net != NULL, "%s", err.msg);
    ul_method_ctx ctx = make_ctx(net, s->original, e2e_view(s, s->retain_idx, E2E_N - E2E_F - E2E_V),
                                 e2e_view(s, s->forget_idx, E2E_F), e2e_view(s, s->val_idx, E2E_V));
    ctx.recipe = &s->recipe;
    int rc = run_method(method, &ctx, kv, &err);
    ck_assert_msg(rc == UL_OK, "%s: %s", method, err.msg);
    return net;
}

START_TEST(e2e_methods_behave)
{
    e2e *s = &E2E;
    ul_data_view R = e2e_view(s, s->retain_idx, E2E_N - E2E_F - E2E_V);
    ul_data_view F = e2e_view(s, s->forget_idx, E2E_F);
    ul_data_view V = e2e_view(s, s->val_idx, E2E_V);
    const double r0 = error_on(s->original, &R), f0 = error_on(s->original, &F),
                 v0 = error_on(s->original, &V);
    fprintf(stderr, "original: retain %.3f forget %.3f val %.3f\n", r0, f0, v0);
    ck_assert_msg(f0 < 0.1 && r0 < 0.1, "the original should fit its training data: retain "
                  "error %.3f, forget error %.3f", r0, f0);

    /* Aggressive settings for the methods that use F (larger lr and α
     * weights than the defaults, small forget batches): they must forget F
     * (its error up by at least 0.5) without wrecking R (retain error at
     * most 0.15). finetune and l1sparse only see R: R must stay fitted
     * (retain error at most 0.05). Measured with seed 5: neggrad_plus
     * retain 0.06 / forget 0.93, scrub 0.07 / 1.00, finetune and l1sparse
     * retain 0.00. */
    struct {
        const char *name;
        const char *kv[24];
        bool forget_up;
        double retain_max;
    } cases[] = {
        {"neggrad_plus", {"epochs", "3", "lr", "0.01", "alpha", "0.9", "batch_size", "64",
                          "forget_batch_size", "32", NULL}, true, 0.15},
        {"scrub", {"epochs", "5", "msteps", "5", "lr", "0.02", "alpha", "0.5", "gamma", "1",
                   "forget_batch_size", "8", "batch_size", "64", NULL}, true, 0.15},
        {"finetune", {"epochs", "3", "batch_size", "64", NULL}, false, 0.05},
        {"l1sparse", {"epochs", "3", "alpha", "1e-4", "batch_size", "64", NULL}, false, 0.05},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ul_net *u = e2e_run(s, cases[i].name, cases[i].kv);
        double r = error_on(u, &R), f = error_on(u, &F), v = error_on(u, &V);
        fprintf(stderr, "%s: retain %.3f forget %.3f val %.3f\n", cases[i].name, r, f, v);
        if (cases[i].forget_up)
            ck_assert_msg(f >= f0 + 0.5, "%s: forget error %.3f did not rise above the "
                          "original's %.3f by 0.5", cases[i].name, f, f0);
        ck_assert_msg(r <= cases[i].retain_max, "%s: retain error %.3f above %.2f (original: "
                      "%.3f)", cases[i].name, r, cases[i].retain_max, r0);
        ul_net_free(u);
    }
}
END_TEST

#define REWIND_E 5

START_TEST(e2e_scrub_rewind_keeps_the_closest_epoch)
{
    /* SCRUB is deterministic for a seed (one thread here), so a run of E
     * epochs passes through the weights of the runs of 1..E−1 epochs (the lr
     * schedule does not depend on E). Run E = 1..5 without rewind, measure
     * |E_F − E_V| of each, and check that E = 5 with rewind ends at the
     * weights of the best one (the earliest on a tie). The settings are
     * aggressive enough that the forget error overtakes the validation
     * error before the last epoch, so rewinding has to go back. */
    e2e *s = &E2E;
    ul_data_view F = e2e_view(s, s->forget_idx, E2E_F);
    ul_data_view V = e2e_view(s, s->val_idx, E2E_V);
    const char *base[] = {"msteps", "5", "lr", "0.01", "alpha", "0.5", "gamma", "1",
                          "forget_batch_size", "8", "batch_size", "64"};
    ul_net *runs[REWIND_E];
    double best_gap = INFINITY;
    int best = -1;
    for (int e = 0; e < REWIND_E; e++) {
        char epochs[8];
        snprintf(epochs, sizeof epochs, "%d", e + 1);
        const char *kv[20] = {"epochs", epochs}; /* + base + NULL */
        memcpy(kv + 2, base, sizeof base);
        runs[e] = e2e_run(s, "scrub", kv);
        double gap = fabs(error_on(runs[e], &F) - error_on(runs[e], &V));
        fprintf(stderr, "scrub after epoch %d: forget %.3f val %.3f\n", e + 1,
                error_on(runs[e], &F), error_on(runs[e], &V));
        if (gap < best_gap) {
            best_gap = gap;
            best = e;
        }
    }
    ck_assert_msg(best < REWIND_E - 1, "the constructed case should be closest before the last "
                  "epoch (best: epoch %d)", best + 1);
    const char *kv[20] = {"epochs", "5", "rewind", "true"}; /* + base + NULL */
    memcpy(kv + 4, base, sizeof base);
    ul_net *rw = e2e_run(s, "scrub", kv);
    size_t n;
    const float *a = ul_net_params(rw, &n), *b = ul_net_params(runs[best], &n);
    ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "rewind did not end at epoch %d's weights",
                  best + 1);
    fprintf(stderr, "rewind picked epoch %d\n", best + 1);
    for (int e = 0; e < REWIND_E; e++)
        ul_net_free(runs[e]);
    ul_net_free(rw);
}
END_TEST

START_TEST(e2e_retrain_learns_from_scratch)
{
    e2e *s = &E2E;
    ul_data_view R = e2e_view(s, s->retain_idx, E2E_N - E2E_F - E2E_V);
    ul_data_view V = e2e_view(s, s->val_idx, E2E_V);
    const char *kv[] = {"epochs", "20", NULL};
    ul_net *u = e2e_run(s, "retrain", kv);
    double r = error_on(u, &R), v = error_on(u, &V), v0 = error_on(s->original, &V);
    fprintf(stderr, "retrain: retain %.3f val %.3f\n", r, v);
    /* The original has val error ~0.12 (overlapping classes); a fresh model
     * trained on R for 20 epochs reaches about the same. */
    ck_assert_msg(r < 0.1 && v < v0 + 0.05, "retrain: retain error %.3f, val error %.3f "
                  "(original's %.3f)", r, v, v0);
    ul_net_free(u);
}
END_TEST

START_TEST(e2e_random_label_and_salun_forget)
{
    /* Random labels other than the (flipped) ones F was trained with make
     * the model stop predicting those: F's error rises by at least 0.5;
     * with R mixed in, the retain error stays within 0.05 of the original's.
     * Measured with seed 5: forget 0.93 (random_label), 0.90 (salun),
     * retain 0.01. */
    e2e *s = &E2E;
    ul_data_view R = e2e_view(s, s->retain_idx, E2E_N - E2E_F - E2E_V);
    ul_data_view F = e2e_view(s, s->forget_idx, E2E_F);
    const double f0 = error_on(s->original, &F), r0 = error_on(s->original, &R);
    const char *methods[] = {"random_label", "salun"};
    for (int i = 0; i < 2; i++) {
        const char *kv[] = {"epochs", "10", "lr", "0.05", "batch_size", "32", NULL};
        ul_net *u = e2e_run(s, methods[i], kv);
        double f = error_on(u, &F), r = error_on(u, &R);
        fprintf(stderr, "%s: retain %.3f forget %.3f\n", methods[i], r, f);
        ck_assert_msg(f >= f0 + 0.5, "%s: forget error %.3f vs original %.3f", methods[i], f, f0);
        ck_assert_msg(r <= r0 + 0.05, "%s: retain error %.3f vs original %.3f", methods[i], r, r0);
        ul_net_free(u);
    }
}
END_TEST

static Suite *methods_suite(void)
{
    Suite *s = suite_create("methods");
    TCase *blocks = tcase_create("blocks");
    tcase_add_test(blocks, batcher_covers_each_example_once_per_epoch);
    tcase_add_test(blocks, wrong_labels_are_wrong_and_uniform);
    tcase_add_test(blocks, top_fraction_mask_matches_sorting);
    suite_add_tcase(s, blocks);

    TCase *steps = tcase_create("one_step");
    tcase_add_test(steps, finetune_one_step);
    tcase_add_test(steps, neggrad_one_step_ascends_the_mean_gradient);
    tcase_add_test(steps, neggrad_plus_one_step_weights_alpha);
    tcase_add_test(steps, neggrad_plus_cycles_the_forget_set);
    tcase_add_test(steps, scrub_max_then_min_step);
    tcase_add_test(steps, scrub_lr_decays_after_listed_epochs);
    tcase_add_test(steps, l1sparse_adds_the_scheduled_sign);
    tcase_add_test(steps, random_label_relabels_to_the_wrong_class);
    tcase_add_test(steps, salun_updates_only_salient_weights);
    tcase_add_test(steps, progress_is_reported_per_step);
    tcase_add_test(steps, diverging_lr_is_reported);
    suite_add_tcase(s, steps);

    TCase *e2e = tcase_create("end_to_end");
    tcase_set_timeout(e2e, 300);
    /* Unchecked: the original is trained once, in the parent process. */
    tcase_add_unchecked_fixture(e2e, e2e_setup, e2e_teardown);
    tcase_add_test(e2e, e2e_methods_behave);
    tcase_add_test(e2e, e2e_scrub_rewind_keeps_the_closest_epoch);
    tcase_add_test(e2e, e2e_retrain_learns_from_scratch);
    tcase_add_test(e2e, e2e_random_label_and_salun_forget);
    suite_add_tcase(s, e2e);
    return s;
}

int main(void)
{
    ul_runtime_init();
    SRunner *sr = srunner_create(methods_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
