/* Statistics (unlearn/stats.h), metric plugins and goal plugins.
 *
 * Expected values are derived independently of the code under test: the
 * logistic regression against a symmetric case solved by bisection and a
 * brute-force golden-section minimisation; split counts, thresholds,
 * errors, confidences and objectives by hand. Metric plugins run through
 * the real loader on a 2-input linear net whose weights are the identity,
 * so logits equal inputs and every loss and confidence is known. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_loader.h"
#include "runtime.h"
#include "unlearn/stats.h"

/* ---- helpers --------------------------------------------------------------------- */

#define ASSERT_NEAR(got, want, tol, what)                                                    \
    do {                                                                                      \
        double g_ = (got), w_ = (want);                                                       \
        ck_assert_msg(fabs(g_ - w_) <= (tol), "%s: expected %.12g (±%g), got %.12g", (what), \
                      w_, (double)(tol), g_);                                                 \
    } while (0)

/* The objective ul_logreg_fit minimises, written out again for 1-D data. */
static double brute_objective(const double *x, const uint8_t *y, int n, double C,
                              const double s[2], double w, double b)
{
    double f = 0.5 * w * w;
    for (int i = 0; i < n; i++) {
        double z = w * x[i] + b;
        double p = 1.0 / (1.0 + exp(-z));
        f -= C * s[y[i]] * (y[i] ? log(p) : log(1.0 - p));
    }
    return f;
}

typedef struct brute_ctx {
    const double *x;
    const uint8_t *y;
    int n;
    double C, s[2];
    double w; /* fixed while minimising over b */
} brute_ctx;

/* Golden-section search of a convex function of one variable on [lo, hi]. */
static double golden_min(double (*f)(brute_ctx *, double), brute_ctx *c, double lo, double hi,
                         double *fmin_out)
{
    const double r = (sqrt(5.0) - 1.0) / 2.0;
    double a = lo, b = hi, x1 = b - r * (b - a), x2 = a + r * (b - a);
    double f1 = f(c, x1), f2 = f(c, x2);
    while (b - a > 1e-10) {
        if (f1 < f2) {
            b = x2, x2 = x1, f2 = f1;
            x1 = b - r * (b - a), f1 = f(c, x1);
        } else {
            a = x1, x1 = x2, f1 = f2;
            x2 = a + r * (b - a), f2 = f(c, x2);
        }
    }
    double x = 0.5 * (a + b);
    if (fmin_out)
        *fmin_out = f(c, x);
    return x;
}

static double brute_of_b(brute_ctx *c, double b)
{
    return brute_objective(c->x, c->y, c->n, c->C, c->s, c->w, b);
}

/* min over b of the objective at w: convex in w (partial minimisation of a
 * jointly convex function). */
static double brute_of_w(brute_ctx *c, double w)
{
    c->w = w;
    double f;
    golden_min(brute_of_b, c, -30, 30, &f);
    return f;
}

/* A linear net (1,1,2) → flatten → fc(2 → 2) with weight I and bias 0:
 * logits equal inputs. */
static ul_net *identity_net(void)
{
    ul_net *net = ul_net_new(1, 1, 2, 2);
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_input(net)), 2, true);
    ul_rng rng;
    ul_rng_seed(&rng, 1, 0);
    ul_error err = {0};
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    float *w = ul_net_find_tensor(net, "fc.weight")->data;
    float *b = ul_net_find_tensor(net, "fc.bias")->data;
    const float eye[4] = {1, 0, 0, 1};
    memcpy(w, eye, sizeof eye);
    b[0] = b[1] = 0;
    return net;
}

/* Examples for the identity net, each (x0, x1) with a label. */
typedef struct examples {
    float x[4096 * 2];
    int32_t y[4096];
    int64_t n;
} examples;

static void add(examples *e, double x0, double x1, int32_t y)
{
    ck_assert(e->n < 4096);
    e->x[2 * e->n] = (float)x0;
    e->x[2 * e->n + 1] = (float)x1;
    e->y[e->n++] = y;
}

/* An example of class y whose true-class logit margin is a: loss
 * log(1 + e^-a), confidence σ(a). */
static void add_margin(examples *e, double a, int32_t y)
{
    add(e, y == 0 ? a : 0, y == 0 ? 0 : a, y);
}

static ul_data_view view_of(const examples *e)
{
    return (ul_data_view){e->x, e->y, NULL, e->n, 1, 1, 2, 2};
}

static ul_metric_ctx ctx_of(ul_net *net, const examples *r, const examples *f,
                            const examples *v, const examples *t)
{
    ul_metric_ctx c = {0};
    c.struct_size = sizeof c;
    c.model = c.original = net;
    c.retain = view_of(r);
    c.forget = view_of(f);
    c.val = view_of(v);
    c.test = view_of(t);
    c.unlearn_seconds = NAN;
    c.retrain_seconds = NAN;
    c.seed = 7;
    return c;
}

/* Runs a metric plugin found through the loader with its default
 * parameters, except key = value when key is not NULL; returns the number
 * of values. */
static size_t run_metric_with(const char *name, const ul_metric_ctx *ctx, ul_metric_value *out,
                              size_t cap, const char *key, const char *value)
{
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_METRIC, name, &p, &err) == UL_OK, "%s", err.msg);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_msg(params != NULL, "%s: %s", name, err.msg);
    if (key)
        ck_assert_msg(ul_params_set(params, key, value, &err) == UL_OK, "%s", err.msg);
    const ul_metric_vtable *vt = p->desc->vtable;
    size_t n = 0;
    int rc = vt->compute(ctx, params, out, cap, &n, &err);
    ul_params_free(params);
    ck_assert_msg(rc == UL_OK, "%s failed: %s", name, err.msg);
    return n;
}

static size_t run_metric(const char *name, const ul_metric_ctx *ctx, ul_metric_value *out,
                         size_t cap)
{
    return run_metric_with(name, ctx, out, cap, NULL, NULL);
}

static const ul_metric_value *find_value(const ul_metric_value *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    ck_abort_msg("value '%s' missing", name);
    return NULL;
}

/* ---- logistic regression ------------------------------------------------------------ */

START_TEST(test_logreg_symmetric)
{
    /* x = −1 (label 0), x = +1 (label 1), C = 1. By symmetry b = 0, and
     * d/dw [½w² + 2·log(1 + e^−w)] = w − 2/(1 + e^w) = 0, solved by bisection. */
    const double x[2] = {-1, 1};
    const uint8_t y[2] = {0, 1};
    double lo = 0, hi = 2;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (mid - 2.0 / (1.0 + exp(mid)) > 0)
            hi = mid;
        else
            lo = mid;
    }
    ul_logreg m;
    ul_error err = {0};
    ck_assert_msg(ul_logreg_fit(&m, x, y, 2, 1, 1.0, false, &err) == UL_OK, "%s", err.msg);
    ASSERT_NEAR(m.w[0], lo, 1e-10, "w");
    ASSERT_NEAR(m.b, 0.0, 1e-10, "b");
    ck_assert_int_eq(ul_logreg_predict(&m, &x[0]), 0);
    ck_assert_int_eq(ul_logreg_predict(&m, &x[1]), 1);
}
END_TEST

/* Overlapping 1-D classes, 30 of class 0 and 10 of class 1, against the
 * brute-force minimum; with and without balanced weights. */
static void check_brute(bool balanced, double C)
{
    enum { N = 40 };
    double x[N];
    uint8_t y[N];
    ul_rng rng;
    ul_rng_seed(&rng, 11, 0);
    for (int i = 0; i < N; i++) {
        y[i] = i < 10;
        x[i] = (y[i] ? 1.0 : -0.5) + 1.5 * ul_rng_normal(&rng);
    }
    brute_ctx c = {x, y, N, C, {1, 1}, 0};
    if (balanced) {
        c.s[0] = N / (2.0 * 30);
        c.s[1] = N / (2.0 * 10);
    }
    double fw;
    double w = golden_min(brute_of_w, &c, -20, 20, &fw);
    c.w = w;
    double b = golden_min(brute_of_b, &c, -30, 30, NULL);

    ul_logreg m;
    ul_error err = {0};
    ck_assert_msg(ul_logreg_fit(&m, x, y, N, 1, C, balanced, &err) == UL_OK, "%s", err.msg);
    ASSERT_NEAR(m.w[0], w, 1e-6, balanced ? "balanced w" : "w");
    ASSERT_NEAR(m.b, b, 1e-6, balanced ? "balanced b" : "b");
    /* The fit is the minimum: not above the brute-force one. */
    ck_assert_msg(brute_objective(x, y, N, C, c.s, m.w[0], m.b) <= fw + 1e-12,
                  "objective at the fit above the brute-force minimum");
}

START_TEST(test_logreg_brute_force)
{
    check_brute(false, 1.0);
    check_brute(true, 1.0);
    check_brute(false, 0.05);
}
END_TEST

START_TEST(test_logreg_2d_stationary)
{
    /* Two features: the gradient, written out here, vanishes at the fit and
     * every nearby point has a larger objective. */
    enum { N = 60 };
    double x[N * 2];
    uint8_t y[N];
    ul_rng rng;
    ul_rng_seed(&rng, 5, 0);
    for (int i = 0; i < N; i++) {
        y[i] = i % 3 == 0;
        x[2 * i] = (y[i] ? 1.0 : 0.0) + ul_rng_normal(&rng);
        x[2 * i + 1] = (y[i] ? -0.5 : 0.5) + 2.0 * ul_rng_normal(&rng);
    }
    ul_logreg m;
    ul_error err = {0};
    ck_assert_msg(ul_logreg_fit(&m, x, y, N, 2, 1.0, true, &err) == UL_OK, "%s", err.msg);
    const double s[2] = {N / (2.0 * 40), N / (2.0 * 20)};
    double g[3] = {m.w[0], m.w[1], 0};
    for (int i = 0; i < N; i++) {
        double p = 1.0 / (1.0 + exp(-(m.w[0] * x[2 * i] + m.w[1] * x[2 * i + 1] + m.b)));
        double r = s[y[i]] * (p - y[i]);
        g[0] += r * x[2 * i];
        g[1] += r * x[2 * i + 1];
        g[2] += r;
    }
    for (int a = 0; a < 3; a++)
        ASSERT_NEAR(g[a], 0.0, 1e-9, "gradient component");
}
END_TEST

START_TEST(test_logreg_separable_and_errors)
{
    /* Separable data: the L2 penalty keeps the optimum finite; Newton with
     * line search must get there and classify every point. */
    const double x[6] = {-3, -2.5, -2, 2, 2.5, 3};
    const uint8_t y[6] = {0, 0, 0, 1, 1, 1};
    ul_logreg m;
    ul_error err = {0};
    ck_assert_msg(ul_logreg_fit(&m, x, y, 6, 1, 1.0, false, &err) == UL_OK, "%s", err.msg);
    ck_assert(isfinite(m.w[0]) && isfinite(m.b));
    ASSERT_NEAR(m.b, 0.0, 1e-10, "b of symmetric separable data");
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(ul_logreg_predict(&m, &x[i]), y[i]);
    /* Gradient of the symmetric objective: w − Σ x_i (y_i − σ(w x_i)) = 0. */
    double g = m.w[0];
    for (int i = 0; i < 6; i++)
        g -= x[i] * (y[i] - 1.0 / (1.0 + exp(-m.w[0] * x[i])));
    ASSERT_NEAR(g, 0.0, 1e-9, "gradient");

    const uint8_t one_class[3] = {1, 1, 1};
    ck_assert_int_eq(ul_logreg_fit(&m, x, one_class, 3, 1, 1.0, false, &err), UL_EINVAL);
    ck_assert_str_eq(err.msg, "logistic regression needs both classes; got 0 of class 0 and 3 "
                              "of class 1");
    const double inf[2] = {INFINITY, 1};
    ck_assert_int_eq(ul_logreg_fit(&m, inf, y + 2, 2, 1, 1.0, false, &err), UL_EINVAL);
}
END_TEST

/* ---- stratified shuffle split -------------------------------------------------------- */

static void check_split_counts(const int32_t *labels, int64_t n, int K, double test_size,
                               const int64_t *want_train, const int64_t *want_test)
{
    ul_shuffle_split s;
    ul_error err = {0};
    ck_assert_msg(ul_shuffle_split_init(&s, labels, n, K, test_size, 3, &err) == UL_OK, "%s",
                  err.msg);
    int64_t *train = malloc((size_t)n * sizeof *train), *test = malloc((size_t)n * sizeof *test);
    int *seen_test = calloc((size_t)n, sizeof *seen_test);
    int64_t first_test0 = -1;
    bool differs = false;
    for (int split = 0; split < 50; split++) {
        ul_shuffle_split_next(&s, train, test);
        int *mark = calloc((size_t)n, sizeof *mark);
        int64_t ctr[8] = {0}, cte[8] = {0};
        for (int64_t i = 0; i < s.n_train; i++) {
            ck_assert(train[i] >= 0 && train[i] < n);
            ck_assert_msg(!mark[train[i]]++, "index %lld twice", (long long)train[i]);
            ctr[labels[train[i]]]++;
        }
        for (int64_t i = 0; i < s.n_test; i++) {
            ck_assert(test[i] >= 0 && test[i] < n);
            ck_assert_msg(!mark[test[i]]++, "index %lld in train and test", (long long)test[i]);
            cte[labels[test[i]]]++;
            seen_test[test[i]]++;
        }
        for (int k = 0; k < K; k++) {
            ck_assert_msg(ctr[k] == want_train[k] && cte[k] == want_test[k],
                          "class %d: expected %lld train / %lld test, got %lld / %lld", k,
                          (long long)want_train[k], (long long)want_test[k], (long long)ctr[k],
                          (long long)cte[k]);
        }
        if (split == 0)
            first_test0 = test[0];
        differs |= test[0] != first_test0;
        free(mark);
    }
    ck_assert_msg(differs, "every split drew the same test set");
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(seen_test[i] > 0, "example %lld never in a test set in 50 splits",
                      (long long)i);
    free(train);
    free(test);
    free(seen_test);
    ul_shuffle_split_free(&s);
}

START_TEST(test_split_counts)
{
    /* 20 examples, classes of 10, 7, 3, test_size 0.25: n_test = 5,
     * n_train = 15. Train shares 7.5, 5.25, 2.25 → floors 7, 5, 2, the one
     * left to class 0 (largest remainder) → 8, 5, 2; the test counts are
     * then what remains: 2, 2, 1. Labels interleaved. */
    int32_t labels[20];
    int at = 0;
    for (int i = 0; i < 10; i++) {
        labels[at++] = 0;
        if (i < 7)
            labels[at++] = 1;
        if (i < 3)
            labels[at++] = 2;
    }
    check_split_counts(labels, 20, 3, 0.25, (int64_t[]){8, 5, 2}, (int64_t[]){2, 2, 1});

    /* A remainder tie: 5 + 5, test_size 0.3 → 3 test, 7 train: 3.5 and 3.5
     * → the tie goes to class 0: train 4, 3; test 1, 2. */
    int32_t tie[10] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
    check_split_counts(tie, 10, 2, 0.3, (int64_t[]){4, 3}, (int64_t[]){1, 2});
}
END_TEST

START_TEST(test_split_rejects)
{
    ul_shuffle_split s;
    ul_error err = {0};
    const int32_t single[5] = {0, 0, 0, 0, 1};
    ck_assert_int_eq(ul_shuffle_split_init(&s, single, 5, 2, 0.2, 0, &err), UL_EINVAL);
    ck_assert_str_eq(err.msg, "stratified split: class 1 has only 1 example; every class needs "
                              "at least 2");
    const int32_t ten[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
    /* ceil(0.1·10) = 1 test example cannot hold both classes. */
    ck_assert_int_eq(ul_shuffle_split_init(&s, ten, 10, 2, 0.1, 0, &err), UL_EINVAL);
    ck_assert_int_eq(ul_shuffle_split_init(&s, ten, 10, 2, 1.0, 0, &err), UL_EINVAL);
}
END_TEST

/* ---- MIA score ------------------------------------------------------------------------- */

START_TEST(test_mia_score)
{
    enum { NM = 3000, NN = 2000 };
    static double mem[NM], non[NN];
    ul_rng rng;
    ul_rng_seed(&rng, 21, 0);
    ul_mia_cfg cfg = {5, 0.1, 100, 4};
    double mean, std;
    ul_error err = {0};

    /* Same distribution: the attack is at chance. After balancing there are
     * 2000 per side and 400 test values per split, so one split's accuracy
     * has sd ≈ 0.025 around 0.5; tolerance 0.05 on the mean of five. */
    for (int i = 0; i < NM; i++)
        mem[i] = 1.0 + ul_rng_normal(&rng);
    for (int i = 0; i < NN; i++)
        non[i] = 1.0 + ul_rng_normal(&rng);
    ck_assert_msg(ul_mia_score(mem, NM, non, NN, &cfg, &mean, &std, &err) == UL_OK, "%s",
                  err.msg);
    ASSERT_NEAR(mean, 0.5, 0.05, "MIA of identical distributions");
    ck_assert(std >= 0 && std < 0.1);

    /* Uniform [0, 1] vs [0.5, 1.5]: the best attack (threshold 0.75) has
     * accuracy 0.75; tolerance 0.05. */
    for (int i = 0; i < NM; i++)
        mem[i] = ul_rng_uniform(&rng);
    for (int i = 0; i < NN; i++)
        non[i] = 0.5 + ul_rng_uniform(&rng);
    ck_assert_msg(ul_mia_score(mem, NM, non, NN, &cfg, &mean, &std, &err) == UL_OK, "%s",
                  err.msg);
    ASSERT_NEAR(mean, 0.75, 0.05, "MIA of half-overlapping uniforms");

    /* Well separated, non-members with infinite and huge losses (clipped
     * to 100): every split is perfect. */
    for (int i = 0; i < NM; i++)
        mem[i] = 0.01 * ul_rng_uniform(&rng);
    for (int i = 0; i < NN; i++)
        non[i] = i % 2 ? INFINITY : 5.0 + 1e6 * ul_rng_uniform(&rng);
    ck_assert_msg(ul_mia_score(mem, NM, non, NN, &cfg, &mean, &std, &err) == UL_OK, "%s",
                  err.msg);
    ASSERT_NEAR(mean, 1.0, 0.0, "MIA of separated values");
    ASSERT_NEAR(std, 0.0, 0.0, "std of separated values");

    /* Same seed, same result; a different seed draws other splits. */
    double again, std2;
    for (int i = 0; i < NM; i++)
        mem[i] = ul_rng_normal(&rng);
    ck_assert(ul_mia_score(mem, NM, non, NN, &cfg, &mean, &std, &err) == UL_OK);
    ck_assert(ul_mia_score(mem, NM, non, NN, &cfg, &again, &std2, &err) == UL_OK);
    ck_assert(mean == again && std == std2);

    non[0] = NAN;
    ck_assert_int_eq(ul_mia_score(mem, NM, non, NN, &cfg, &mean, &std, &err), UL_EINVAL);
    /* 3 per side: 6 values, 1 test value cannot hold both classes. */
    ck_assert_int_eq(ul_mia_score(mem, 3, non + 1, 3, &cfg, &mean, &std, &err), UL_EINVAL);
    ck_assert_int_eq(ul_mia_score(mem, 0, non + 1, 3, &cfg, &mean, &std, &err), UL_EINVAL);
}
END_TEST

/* ---- thresholds and per-example scores --------------------------------------------- */

START_TEST(test_threshold)
{
    /* Sorted: .2n .3n .5n .6m .7n .8m .9m .95m. Balanced accuracy at t:
     * .6 → ½·4/4 + ½·3/4 = .875; .7 → ½·3/4 + ½·3/4 = .75;
     * .8 → ½·3/4 + ½·4/4 = .875; others lower. Tie → the smaller, .6. */
    ul_scored it[8] = {{0.9, true}, {0.3, false}, {0.8, true}, {0.5, false},
                       {0.95, true}, {0.7, false}, {0.6, true}, {0.2, false}};
    double t = -1, bacc = -1;
    ck_assert(ul_threshold_fit(it, 8, &t, &bacc));
    ASSERT_NEAR(t, 0.6, 0, "threshold");
    ASSERT_NEAR(bacc, 0.875, 1e-15, "balanced accuracy");

    /* Ties in value: members {1, 1}, non-members {1, 0}: t = 1 gives
     * ½·1 + ½·½ = .75, t = 0 gives ½. */
    ul_scored tied[4] = {{1, true}, {1, false}, {0, false}, {1, true}};
    ck_assert(ul_threshold_fit(tied, 4, &t, &bacc));
    ASSERT_NEAR(t, 1.0, 0, "threshold with tied values");
    ASSERT_NEAR(bacc, 0.75, 1e-15, "balanced accuracy with tied values");

    ul_scored members_only[2] = {{1, true}, {2, true}};
    ck_assert(!ul_threshold_fit(members_only, 2, &t, &bacc));
}
END_TEST

START_TEST(test_logit_scores)
{
    const float z[3] = {1, 2, 3};
    double lse = log(exp(1.0) + exp(2.0) + exp(3.0)), h = 0;
    for (int k = 0; k < 3; k++) {
        double p = exp(z[k] - lse);
        h -= p * log(p);
    }
    double loss, ent, conf;
    ul_logit_scores(z, 3, 0, &loss, &ent, &conf);
    ASSERT_NEAR(loss, lse - 1.0, 1e-12, "loss");
    ASSERT_NEAR(ent, h, 1e-12, "entropy");
    ASSERT_NEAR(conf, exp(1.0 - lse), 1e-12, "confidence");

    /* Saturated logits: finite everywhere, loss exactly the margin. */
    const float big[2] = {1000, 0};
    ul_logit_scores(big, 2, 1, &loss, &ent, &conf);
    ASSERT_NEAR(loss, 1000.0, 1e-9, "saturated loss");
    ASSERT_NEAR(ent, 0.0, 1e-300, "saturated entropy");
    ASSERT_NEAR(conf, 0.0, 1e-300, "saturated confidence");
}
END_TEST

/* ---- metric plugins ------------------------------------------------------------------ */

START_TEST(test_errors_plugin)
{
    ul_net *net = identity_net();
    static examples r, f, v, t;
    memset(&r, 0, sizeof r), memset(&f, 0, sizeof f), memset(&v, 0, sizeof v),
        memset(&t, 0, sizeof t);
    /* Retain: 3 of 4 right; forget: 0 of 2; validation: none; test: 3 of 3. */
    add(&r, 2, 0, 0), add(&r, 0, 1, 1), add(&r, 3, 1, 0), add(&r, 1, 0, 1);
    add(&f, 0, 2, 0), add(&f, 1, -1, 1);
    add(&t, 1, 0, 0), add(&t, 0, 4, 1), add(&t, -1, -2, 0);
    ul_metric_ctx ctx = ctx_of(net, &r, &f, &v, &t);
    ul_metric_value out[16];
    size_t n = run_metric("errors", &ctx, out, 16);
    ck_assert_int_eq(n, 8);
    /* loss of (x0, x1) with label y: log(1 + e^(x_other − x_y)). */
    const examples *sets[3] = {&r, &f, &t};
    const char *err_names[3] = {"retain_error", "forget_error", "test_error"};
    const char *loss_names[3] = {"retain_loss", "forget_loss", "test_loss"};
    const double want_err[3] = {0.25, 1.0, 0.0};
    for (int s = 0; s < 3; s++) {
        double sum = 0;
        for (int64_t i = 0; i < sets[s]->n; i++) {
            const float *x = sets[s]->x + 2 * i;
            int y = sets[s]->y[i];
            sum += log1p(exp(x[1 - y] - x[y]));
        }
        ASSERT_NEAR(find_value(out, n, err_names[s])->value, want_err[s], 1e-12, err_names[s]);
        ASSERT_NEAR(find_value(out, n, loss_names[s])->value, sum / sets[s]->n, 1e-6,
                    loss_names[s]);
    }
    ck_assert(isnan(find_value(out, n, "val_error")->value));
    ck_assert(isnan(find_value(out, n, "val_loss")->value));

    /* Too little room for the values is an error, not a silent cut. */
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert(ul_plugin_find(UL_KIND_METRIC, "errors", &p, &err) == UL_OK);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_int_eq(((const ul_metric_vtable *)p->desc->vtable)
                         ->compute(&ctx, params, out, 4, &n, &err),
                     UL_EINVAL);
    ul_params_free(params);
    ul_net_free(net);
}
END_TEST

START_TEST(test_mia_loss_and_indiscernibility_plugins)
{
    ul_net *net = identity_net();
    static examples r, f, v, t;
    memset(&r, 0, sizeof r), memset(&f, 0, sizeof f), memset(&v, 0, sizeof v),
        memset(&t, 0, sizeof t);
    ul_rng rng;
    ul_rng_seed(&rng, 9, 0);
    /* F and V: class 0 with margins U[3, 5] (the same distribution); T:
     * class 0 with margins U[-1, 1] (losses 0.31 to 1.31, all above F's
     * 0.0067 to 0.049) and, to test the class restriction, 500 class-1
     * examples with the margins of F. */
    for (int i = 0; i < 500; i++) {
        add_margin(&f, 3 + 2 * ul_rng_uniform(&rng), 0);
        add_margin(&v, 3 + 2 * ul_rng_uniform(&rng), 0);
        add_margin(&t, -1 + 2 * ul_rng_uniform(&rng), 0);
        add_margin(&t, 3 + 2 * ul_rng_uniform(&rng), 1);
    }
    add_margin(&r, 1, 0), add_margin(&r, 1, 1);
    ul_metric_ctx ctx = ctx_of(net, &r, &f, &v, &t);
    const int32_t forget_classes[1] = {0};
    ctx.forget_classes = forget_classes;
    ctx.n_forget_classes = 1;

    ul_metric_value out[4], ind[4];
    size_t n = run_metric("mia_loss", &ctx, out, 4);
    ck_assert_int_eq(n, 2);
    const ul_metric_value *mt = find_value(out, n, "mia_loss_test");
    const ul_metric_value *mv = find_value(out, n, "mia_loss_val");
    /* Restricted to class 0, test losses are all above F's: perfect attack. */
    ASSERT_NEAR(mt->value, 1.0, 0, "mia_loss_test, class-restricted");
    ASSERT_NEAR(mt->std, 0.0, 0, "its std");
    /* V is F's distribution: 100 test values per split, sd ≈ 0.05 per
     * split; tolerance 0.1 on the mean. */
    ASSERT_NEAR(mv->value, 0.5, 0.1, "mia_loss_val");
    ck_assert_msg(mv->std > 0 && mv->std < 0.15, "std over 5 splits: %g", mv->std);
    const double mia_val = mv->value, mia_val_std = mv->std;

    size_t ni = run_metric("indiscernibility", &ctx, ind, 4);
    ck_assert_int_eq(ni, 2);
    /* Same parameters and seed: the same MIA, mapped by 1 − |m − .5|/.5. */
    ASSERT_NEAR(find_value(ind, ni, "indiscernibility")->value, 0.0, 1e-15, "indiscernibility");
    ASSERT_NEAR(find_value(ind, ni, "indiscernibility_val")->value,
                1.0 - fabs(mia_val - 0.5) / 0.5, 1e-15, "indiscernibility_val");
    ASSERT_NEAR(find_value(ind, ni, "indiscernibility_val")->std, 2 * mia_val_std, 1e-15,
                "indiscernibility_val std");

    /* Without the restriction half the sampled test examples look like F:
     * the attack can only separate the class-0 half, accuracy ≈ 0.75. */
    ctx.n_forget_classes = 0;
    n = run_metric("mia_loss", &ctx, out, 4);
    ASSERT_NEAR(find_value(out, n, "mia_loss_test")->value, 0.75, 0.07,
                "mia_loss_test, unrestricted");

    /* The parameters reach the protocol: one split has no spread, and a
     * different seed draws a different sample and splits. */
    ul_metric_value one[4];
    n = run_metric_with("mia_loss", &ctx, one, 4, "n_splits", "1");
    ASSERT_NEAR(find_value(one, n, "mia_loss_val")->std, 0.0, 0, "std of one split");
    n = run_metric_with("mia_loss", &ctx, one, 4, "seed", "1");
    ck_assert_msg(find_value(one, n, "mia_loss_val")->value != mia_val,
                  "seed offset 1 gave the same MIA %g", mia_val);

    /* A missing validation set gives NAN, not an error. */
    ul_data_view empty = ctx.val;
    empty.n = 0;
    ctx.val = empty;
    n = run_metric("mia_loss", &ctx, out, 4);
    ck_assert(isnan(find_value(out, n, "mia_loss_val")->value));
    ck_assert(isfinite(find_value(out, n, "mia_loss_test")->value));
    ul_net_free(net);
}
END_TEST

START_TEST(test_mia_confidence_plugin)
{
    ul_net *net = identity_net();
    static examples r, f, v, t;
    memset(&r, 0, sizeof r), memset(&f, 0, sizeof f), memset(&v, 0, sizeof v),
        memset(&t, 0, sizeof t);
    /* Confidence of margin a is σ(a), increasing in a, so thresholds can be
     * read off the margins. Class 0: R {2, 3, 4}, T {−1, 0, 1} → t₀ = σ(2)
     * (balanced accuracy 1, the smallest such value). Class 1: R {0.5, 1},
     * T {−2, −3} → t₁ = σ(0.5). */
    add_margin(&r, 2, 0), add_margin(&r, 3, 0), add_margin(&r, 4, 0);
    add_margin(&t, -1, 0), add_margin(&t, 0, 0), add_margin(&t, 1, 0);
    add_margin(&r, 0.5, 1), add_margin(&r, 1, 1);
    add_margin(&t, -2, 1), add_margin(&t, -3, 1);
    /* F: class 0 at 1.5 (< 2: non-member), 2.5 (member); class 1 at 0
     * (non-member), 0.7 (member), −1 (non-member) → 3 of 5. */
    add_margin(&f, 1.5, 0), add_margin(&f, 2.5, 0);
    add_margin(&f, 0, 1), add_margin(&f, 0.7, 1), add_margin(&f, -1, 1);
    ul_metric_ctx ctx = ctx_of(net, &r, &f, &v, &t);
    ul_metric_value out[2];
    size_t n = run_metric("mia_confidence", &ctx, out, 2);
    ck_assert_int_eq(n, 1);
    ASSERT_NEAR(find_value(out, n, "mia_confidence")->value, 0.6, 1e-15, "mia_confidence");

    /* An F example exactly at its class threshold is a member. */
    f.n = 0;
    add_margin(&f, 2, 0);
    ctx.forget = view_of(&f);
    n = run_metric("mia_confidence", &ctx, out, 2);
    ASSERT_NEAR(out[0].value, 0.0, 0, "at the threshold");

    /* Class 1 without shadow non-members: no threshold, its F examples
     * count as members even at a very low confidence. */
    t.n = 3; /* only the class-0 non-members */
    ctx.test = view_of(&t);
    f.n = 0;
    add_margin(&f, -5, 1), add_margin(&f, -5, 0);
    ctx.forget = view_of(&f);
    n = run_metric("mia_confidence", &ctx, out, 2);
    ASSERT_NEAR(out[0].value, 0.5, 0, "class without a threshold");
    ul_net_free(net);
}
END_TEST

START_TEST(test_mia_entropy_plugin)
{
    ul_net *net = identity_net();
    static examples r, f, v, t;
    memset(&r, 0, sizeof r), memset(&f, 0, sizeof f), memset(&v, 0, sizeof v),
        memset(&t, 0, sizeof t);
    /* Entropy of margin a is the binary entropy of σ(a): R with |a| in
     * [3, 6] has entropy ≤ 0.19, T with |a| ≤ 0.5 has ≥ 0.66 (ln 2 = 0.693
     * at 0), 200 vs 40 (balanced weights matter). F: 3 at a = 10
     * (entropy ≈ 5e-4, member) and 2 at a = 0 (ln 2, non-member) → 3/5. */
    ul_rng rng;
    ul_rng_seed(&rng, 13, 0);
    for (int i = 0; i < 200; i++)
        add_margin(&r, (i % 2 ? 1 : -1) * (3 + 3 * ul_rng_uniform(&rng)), i % 2);
    for (int i = 0; i < 40; i++)
        add_margin(&t, -0.5 + ul_rng_uniform(&rng), i % 2);
    add_margin(&f, 10, 0), add_margin(&f, 10, 1), add_margin(&f, 10, 1);
    add_margin(&f, 0, 0), add_margin(&f, 0, 1);
    ul_metric_ctx ctx = ctx_of(net, &r, &f, &v, &t);
    ul_metric_value out[2];
    size_t n = run_metric("mia_entropy", &ctx, out, 2);
    ck_assert_int_eq(n, 1);
    ASSERT_NEAR(find_value(out, n, "mia_entropy")->value, 0.6, 1e-15, "mia_entropy");

    ctx.test.n = 0;
    n = run_metric("mia_entropy", &ctx, out, 2);
    ck_assert(isnan(out[0].value));
    ul_net_free(net);
}
END_TEST

START_TEST(test_timing_plugin)
{
    ul_net *net = identity_net();
    static examples e;
    ul_metric_ctx ctx = ctx_of(net, &e, &e, &e, &e);
    ul_metric_value out[2];
    ctx.unlearn_seconds = 2.0;
    ctx.retrain_seconds = 10.0;
    ck_assert_int_eq(run_metric("timing", &ctx, out, 2), 2);
    ASSERT_NEAR(find_value(out, 2, "unlearn_seconds")->value, 2.0, 0, "unlearn_seconds");
    ASSERT_NEAR(find_value(out, 2, "rte")->value, 5.0, 0, "rte");
    ctx.unlearn_seconds = NAN;
    run_metric("timing", &ctx, out, 2);
    ck_assert(isnan(out[0].value) && isnan(out[1].value));
    ctx.unlearn_seconds = 0;
    run_metric("timing", &ctx, out, 2);
    ck_assert(isnan(find_value(out, 2, "rte")->value));
    ctx.unlearn_seconds = 1;
    ctx.retrain_seconds = NAN;
    run_metric("timing", &ctx, out, 2);
    ck_assert(isnan(find_value(out, 2, "rte")->value));
    ul_net_free(net);
}
END_TEST

/* Every metric on a linear model trained on the synthetic dataset plugin:
 * value names unique across plugins, values in range, and a model that
 * does not overfit shows a loss MIA near chance. */
START_TEST(test_all_metrics_synthetic)
{
    const ul_plugin *dp;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_DATASET, "synthetic", &dp, &err) == UL_OK, "%s",
                  err.msg);
    ul_params *dparams = ul_params_new(dp->desc->params, dp->desc->n_params, &err);
    ck_assert(dparams);
    ck_assert(ul_params_set(dparams, "n_train", "1200", &err) == UL_OK);
    ck_assert(ul_params_set(dparams, "n_test", "600", &err) == UL_OK);
    ck_assert(ul_params_set(dparams, "classes", "3", &err) == UL_OK);
    ck_assert(ul_params_set(dparams, "separation", "1.5", &err) == UL_OK);
    ul_dataset ds = {0};
    ck_assert_msg(((const ul_dataset_vtable *)dp->desc->vtable)->load(dparams, &ds, &err) ==
                      UL_OK,
                  "%s", err.msg);
    ul_params_free(dparams);

    /* Train 0..799 = R, 800..999 = F, 1000..1199 = V (the data are shuffled). */
    int64_t idx[1200];
    for (int i = 0; i < 1200; i++)
        idx[i] = i;
    ul_data_view all = {ds.train_x, ds.train_y, idx, 1000, ds.c, ds.h, ds.w, ds.n_classes};
    ul_data_view rv = all, fv = all, vv = all, tv = all;
    rv.n = 800;
    fv.idx = idx + 800, fv.n = 200;
    vv.idx = idx + 1000, vv.n = 200;
    tv.x = ds.test_x, tv.y = ds.test_y, tv.idx = NULL, tv.n = ds.n_test;

    ul_net *net = ul_net_new(ds.c, ds.h, ds.w, ds.n_classes);
    ul_net_linear(net, "fc", ul_net_flatten(net, ul_net_input(net)), ds.n_classes, true);
    ul_rng rng;
    ul_rng_seed(&rng, 3, 0);
    ck_assert_msg(ul_net_finalize(net, &rng, &err) == UL_OK, "%s", err.msg);
    ul_train_cfg cfg = {0};
    cfg.epochs = 5;
    cfg.batch_size = 32;
    cfg.optim = (ul_optim_cfg){.kind = UL_OPT_SGD, .lr = 0.05, .momentum = 0.9};
    cfg.sched = (ul_sched_cfg){.kind = UL_SCHED_CONSTANT};
    cfg.seed = 1;
    ul_train_result res;
    ck_assert_msg(ul_train(net, &all, &cfg, NULL, NULL, &res, &err) == UL_OK, "%s", err.msg);

    ul_metric_ctx ctx = {0};
    ctx.struct_size = sizeof ctx;
    ctx.model = ctx.original = net;
    ctx.retain = rv, ctx.forget = fv, ctx.val = vv, ctx.test = tv;
    ctx.unlearn_seconds = 1.5;
    ctx.retrain_seconds = 3.0;
    ctx.seed = 42;
    const char *metrics[] = {"errors", "mia_loss", "mia_entropy", "mia_confidence",
                             "indiscernibility", "timing"};
    ul_metric_value all_values[64];
    size_t total = 0;
    for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++)
        total += run_metric(metrics[m], &ctx, all_values + total, 64 - total);
    ck_assert_int_eq(total, 8 + 2 + 1 + 1 + 2 + 2);
    for (size_t i = 0; i < total; i++) {
        for (size_t j = 0; j < i; j++)
            ck_assert_msg(strcmp(all_values[i].name, all_values[j].name) != 0,
                          "value name '%s' twice", all_values[i].name);
        if (strstr(all_values[i].name, "error") || strstr(all_values[i].name, "mia") ||
            strstr(all_values[i].name, "indiscernibility"))
            ck_assert_msg(all_values[i].value >= 0 && all_values[i].value <= 1,
                          "%s = %g outside [0, 1]", all_values[i].name, all_values[i].value);
    }
    /* A linear model on 1000 examples barely overfits: 40 test values per
     * split (sd ≈ 0.08), tolerance 0.15. */
    ASSERT_NEAR(find_value(all_values, total, "mia_loss_test")->value, 0.5, 0.15,
                "mia_loss_test of a non-overfit model");
    ck_assert_msg(find_value(all_values, total, "test_error")->value < 0.5,
                  "the trained model is not better than chance: test error %g",
                  find_value(all_values, total, "test_error")->value);
    ASSERT_NEAR(find_value(all_values, total, "rte")->value, 2.0, 0, "rte");
    ul_net_free(net);
    ul_dataset_clear(&ds);
}
END_TEST

/* ---- goals --------------------------------------------------------------------------- */

static const ul_goal_vtable *find_goal(const char *name, const char *r0, const char *r1)
{
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_GOAL, name, &p, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(p->desc->n_params, 0);
    ck_assert_ptr_null(p->desc->params);
    const ul_goal_vtable *vt = p->desc->vtable;
    ck_assert_str_eq(vt->requires[0], r0);
    ck_assert_str_eq(vt->requires[1], r1);
    ck_assert_ptr_null(vt->requires[2]);
    return vt;
}

START_TEST(test_goals)
{
    /* privacy: (1 − .4)·.1 + .4·|.3 − .1| = .06 + .08 = .14 */
    const ul_goal_vtable *g = find_goal("privacy", "val_error", "forget_error");
    ASSERT_NEAR(g->objective((double[]){0.1, 0.3}, 0.4), 0.14, 1e-15, "privacy");
    /* |E_F − E_V| is symmetric: E_F below E_V costs the same. */
    ASSERT_NEAR(g->objective((double[]){0.3, 0.1}, 0.4), 0.6 * 0.3 + 0.4 * 0.2, 1e-15,
                "privacy, E_F < E_V");
    ASSERT_NEAR(g->objective((double[]){0.2, 0.9}, 0.0), 0.2, 0, "privacy, lambda 0");

    /* privacy_mia: .75·.1 + .25·2·|.8 − .5| = .075 + .15 = .225 */
    g = find_goal("privacy_mia", "val_error", "mia_loss_val");
    ASSERT_NEAR(g->objective((double[]){0.1, 0.8}, 0.25), 0.225, 1e-15, "privacy_mia");
    ASSERT_NEAR(g->objective((double[]){0.1, 0.2}, 0.25), 0.075 + 0.15, 1e-15,
                "privacy_mia below chance");

    /* bias: .5·.2 + .5·(1 − .9) = .15 */
    g = find_goal("bias", "val_error", "forget_error");
    ASSERT_NEAR(g->objective((double[]){0.2, 0.9}, 0.5), 0.15, 1e-15, "bias");
    ASSERT_NEAR(g->objective((double[]){0.2, 0.9}, 1.0), 0.1, 1e-15, "bias, lambda 1");
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *stats = tcase_create("stats");
    tcase_add_test(stats, test_logreg_symmetric);
    tcase_add_test(stats, test_logreg_brute_force);
    tcase_add_test(stats, test_logreg_2d_stationary);
    tcase_add_test(stats, test_logreg_separable_and_errors);
    tcase_add_test(stats, test_split_counts);
    tcase_add_test(stats, test_split_rejects);
    tcase_add_test(stats, test_mia_score);
    tcase_add_test(stats, test_threshold);
    tcase_add_test(stats, test_logit_scores);
    suite_add_tcase(s, stats);
    TCase *plugins = tcase_create("plugins");
    tcase_add_test(plugins, test_errors_plugin);
    tcase_add_test(plugins, test_mia_loss_and_indiscernibility_plugins);
    tcase_add_test(plugins, test_mia_confidence_plugin);
    tcase_add_test(plugins, test_mia_entropy_plugin);
    tcase_add_test(plugins, test_timing_plugin);
    tcase_add_test(plugins, test_all_metrics_synthetic);
    tcase_add_test(plugins, test_goals);
    suite_add_tcase(s, plugins);
    return s;
}

int main(void)
{
    ul_runtime_init();
    SRunner *sr = srunner_create(metrics_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
