/* Statistics shared by the metric plugins (see unlearn/stats.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unlearn/stats.h"

enum { UL_STATS_STREAM_SUBSAMPLE = 1, UL_STATS_STREAM_SPLIT = 2 };

/* ---- logistic regression ---------------------------------------------------- */

#define LR_MAX_ITER 200

/* log(1 + e^z) without overflow or loss of small values. */
static double log1pexp(double z)
{
    return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z));
}

static double sigmoid(double z)
{
    if (z >= 0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

typedef struct lr_problem {
    const double *x;
    const uint8_t *y;
    int64_t n;
    int d;
    double C;
    double s[2]; /* per-class sample weights */
} lr_problem;

/* theta = (w[0..d-1], b). */
static double lr_decision(const double *theta, const double *x, int d)
{
    double z = theta[d];
    for (int j = 0; j < d; j++)
        z += theta[j] * x[j];
    return z;
}

static double lr_objective(const lr_problem *p, const double *theta)
{
    double reg = 0, data = 0;
    for (int j = 0; j < p->d; j++)
        reg += theta[j] * theta[j];
    for (int64_t i = 0; i < p->n; i++) {
        double z = lr_decision(theta, p->x + i * p->d, p->d);
        /* logloss = log(1 + e^z) − y z, written so neither branch cancels. */
        data += p->s[p->y[i]] * (p->y[i] ? log1pexp(-z) : log1pexp(z));
    }
    return 0.5 * reg + p->C * data;
}

/* Gradient g and Hessian H (D×D, D = d + 1) of the objective at theta. */
static void lr_derivatives(const lr_problem *p, const double *theta, double *g, double *H)
{
    const int d = p->d, D = d + 1;
    double xe[UL_LOGREG_MAX_D + 1];
    memset(g, 0, (size_t)D * sizeof *g);
    memset(H, 0, (size_t)(D * D) * sizeof *H);
    for (int64_t i = 0; i < p->n; i++) {
        const double *x = p->x + i * d;
        double pr = sigmoid(lr_decision(theta, x, d));
        double s = p->C * p->s[p->y[i]];
        double r = s * (pr - p->y[i]), c = s * pr * (1.0 - pr);
        memcpy(xe, x, (size_t)d * sizeof *xe);
        xe[d] = 1.0;
        for (int a = 0; a < D; a++) {
            g[a] += r * xe[a];
            for (int b = 0; b <= a; b++)
                H[a * D + b] += c * xe[a] * xe[b];
        }
    }
    for (int a = 0; a < D; a++)
        for (int b = 0; b < a; b++)
            H[b * D + a] = H[a * D + b];
    for (int j = 0; j < d; j++) {
        g[j] += theta[j];
        H[j * D + j] += 1.0;
    }
}

/* Solves H step = g by Cholesky (H symmetric positive definite, D small).
 * A tiny ridge keeps the factorisation defined when every example sits
 * where σ' underflows; it changes only the search direction, not the
 * optimum the iteration converges to. */
static bool lr_solve(double *H, const double *g, double *step, int D)
{
    double ridge = 0;
    for (int a = 0; a < D; a++)
        ridge = fmax(ridge, H[a * D + a]);
    ridge = 1e-12 * (1.0 + ridge);
    for (int a = 0; a < D; a++)
        H[a * D + a] += ridge;
    for (int a = 0; a < D; a++) {
        for (int b = 0; b <= a; b++) {
            double sum = H[a * D + b];
            for (int k = 0; k < b; k++)
                sum -= H[a * D + k] * H[b * D + k];
            if (a == b) {
                if (!(sum > 0))
                    return false;
                H[a * D + a] = sqrt(sum);
            } else {
                H[a * D + b] = sum / H[b * D + b];
            }
        }
    }
    for (int a = 0; a < D; a++) { /* L u = g */
        double sum = g[a];
        for (int k = 0; k < a; k++)
            sum -= H[a * D + k] * step[k];
        step[a] = sum / H[a * D + a];
    }
    for (int a = D - 1; a >= 0; a--) { /* Lᵀ step = u */
        double sum = step[a];
        for (int k = a + 1; k < D; k++)
            sum -= H[k * D + a] * step[k];
        step[a] = sum / H[a * D + a];
    }
    return true;
}

int ul_logreg_fit(ul_logreg *m, const double *x, const uint8_t *y, int64_t n, int d, double C,
                  bool balanced, ul_error *err)
{
    if (d < 1 || d > UL_LOGREG_MAX_D)
        return ul_errorf(err, UL_EINVAL, "logistic regression: %d features; supported are 1 to %d",
                         d, UL_LOGREG_MAX_D);
    if (!(C > 0))
        return ul_errorf(err, UL_EINVAL, "logistic regression: C must be > 0, got %g", C);
    int64_t count[2] = {0, 0};
    for (int64_t i = 0; i < n; i++) {
        if (y[i] > 1)
            return ul_errorf(err, UL_EINVAL,
                             "logistic regression: label %d of example %lld is not 0 or 1",
                             y[i], (long long)i);
        count[y[i]]++;
        for (int j = 0; j < d; j++)
            if (!isfinite(x[i * d + j]))
                return ul_errorf(err, UL_EINVAL,
                                 "logistic regression: feature %d of example %lld is not finite",
                                 j, (long long)i);
    }
    if (!count[0] || !count[1])
        return ul_errorf(err, UL_EINVAL,
                         "logistic regression needs both classes; got %lld of class 0 and %lld "
                         "of class 1",
                         (long long)count[0], (long long)count[1]);

    lr_problem p = {x, y, n, d, C, {1.0, 1.0}};
    if (balanced) {
        p.s[0] = (double)n / (2.0 * (double)count[0]);
        p.s[1] = (double)n / (2.0 * (double)count[1]);
    }
    const int D = d + 1;
    double theta[UL_LOGREG_MAX_D + 1] = {0}, trial[UL_LOGREG_MAX_D + 1];
    double g[UL_LOGREG_MAX_D + 1], step[UL_LOGREG_MAX_D + 1];
    double H[(UL_LOGREG_MAX_D + 1) * (UL_LOGREG_MAX_D + 1)];
    /* Start at the optimum over the intercept alone (w = 0): the weighted
     * log-odds of the classes. */
    theta[d] = log(p.s[1] * (double)count[1] / (p.s[0] * (double)count[0]));
    double f = lr_objective(&p, theta);
    int it = 0;
    while (it < LR_MAX_ITER) {
        it++;
        lr_derivatives(&p, theta, g, H);
        if (!lr_solve(H, g, step, D))
            break;
        double decrement = 0, size = 0, scale = 0;
        for (int a = 0; a < D; a++) {
            decrement += g[a] * step[a];
            size = fmax(size, fabs(step[a]));
            scale = fmax(scale, fabs(theta[a]));
        }
        /* Armijo backtracking: Newton's full step can overshoot when the
         * data are (nearly) separable and σ' is tiny. */
        double t = 1.0, ft = f;
        for (; t > 1e-12; t *= 0.5) {
            for (int a = 0; a < D; a++)
                trial[a] = theta[a] - t * step[a];
            ft = lr_objective(&p, trial);
            if (ft <= f - 1e-4 * t * decrement)
                break;
        }
        if (!(ft < f)) /* at the optimum to machine precision */
            break;
        memcpy(theta, trial, (size_t)D * sizeof *theta);
        f = ft;
        if (t * size <= 1e-12 * (1.0 + scale))
            break;
    }
    memset(m, 0, sizeof *m);
    m->d = d;
    memcpy(m->w, theta, (size_t)d * sizeof *theta);
    m->b = theta[d];
    m->iterations = it;
    return UL_OK;
}

double ul_logreg_decision(const ul_logreg *m, const double *x)
{
    double z = m->b;
    for (int j = 0; j < m->d; j++)
        z += m->w[j] * x[j];
    return z;
}

int ul_logreg_predict(const ul_logreg *m, const double *x)
{
    return ul_logreg_decision(m, x) > 0;
}

/* ---- stratified shuffle split ------------------------------------------------- */

/* sklearn's _approximate_mode: draws·count[k]/total rounded down, the
 * remaining draws to the largest remainders (ties: lower k first). Integer
 * arithmetic keeps the remainders exact. */
static void approximate_mode(const int64_t *count, int K, int64_t total, int64_t draws,
                             int64_t *out)
{
    int64_t left = draws;
    for (int k = 0; k < K; k++) {
        out[k] = count[k] * draws / total;
        left -= out[k];
    }
    /* The fractional parts sum to `left`, so that many classes have one. */
    while (left > 0) {
        int best = -1;
        int64_t best_rem = 0;
        for (int k = 0; k < K; k++) {
            int64_t rem = count[k] * draws % total;
            if (rem > best_rem && out[k] * total < count[k] * draws) {
                best = k;
                best_rem = rem;
            }
        }
        out[best]++;
        left--;
    }
}

int ul_shuffle_split_init(ul_shuffle_split *s, const int32_t *labels, int64_t n, int n_classes,
                          double test_size, uint64_t seed, ul_error *err)
{
    memset(s, 0, sizeof *s);
    if (n_classes < 1 || n < 1)
        return ul_errorf(err, UL_EINVAL, "stratified split: no examples or classes");
    if (!(test_size > 0 && test_size < 1))
        return ul_errorf(err, UL_EINVAL, "stratified split: test_size must be in (0, 1), got %g",
                         test_size);
    s->n = n;
    s->n_classes = n_classes;
    s->group = malloc((size_t)n * sizeof *s->group);
    s->start = calloc((size_t)n_classes + 1, sizeof *s->start);
    s->train_k = calloc((size_t)n_classes, sizeof *s->train_k);
    s->test_k = calloc((size_t)n_classes, sizeof *s->test_k);
    int64_t *count = calloc((size_t)n_classes, sizeof *count);
    int rc = UL_OK;
    if (!s->group || !s->start || !s->train_k || !s->test_k || !count) {
        rc = ul_errorf(err, UL_ENOMEM, "stratified split: out of memory for %lld examples",
                       (long long)n);
        goto cleanup;
    }
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= n_classes) {
            rc = ul_errorf(err, UL_EINVAL,
                           "stratified split: label %d of example %lld is outside [0, %d)",
                           labels[i], (long long)i, n_classes);
            goto cleanup;
        }
        count[labels[i]]++;
    }
    int present = 0;
    for (int k = 0; k < n_classes; k++) {
        if (count[k] == 1) {
            rc = ul_errorf(err, UL_EINVAL,
                           "stratified split: class %d has only 1 example; every class needs "
                           "at least 2",
                           k);
            goto cleanup;
        }
        present += count[k] > 0;
        s->start[k + 1] = s->start[k] + count[k];
    }
    s->n_test = (int64_t)ceil(test_size * (double)n);
    s->n_train = n - s->n_test;
    if (s->n_test < present || s->n_train < present) {
        rc = ul_errorf(err, UL_EINVAL,
                       "stratified split: %lld examples with test_size %g give %lld train and "
                       "%lld test examples; both need at least one per class (%d classes)",
                       (long long)n, test_size, (long long)s->n_train, (long long)s->n_test,
                       present);
        goto cleanup;
    }
    for (int64_t i = n - 1; i >= 0; i--) /* counting sort, stable */
        s->group[--count[labels[i]] + s->start[labels[i]]] = i;
    for (int k = 0; k < n_classes; k++)
        count[k] = s->start[k + 1] - s->start[k];
    approximate_mode(count, n_classes, n, s->n_train, s->train_k);
    for (int k = 0; k < n_classes; k++)
        count[k] -= s->train_k[k];
    approximate_mode(count, n_classes, n - s->n_train, s->n_test, s->test_k);
    ul_rng_seed(&s->rng, seed, UL_STATS_STREAM_SPLIT);

cleanup:
    free(count);
    if (rc)
        ul_shuffle_split_free(s);
    return rc;
}

void ul_shuffle_split_next(ul_shuffle_split *s, int64_t *train, int64_t *test)
{
    int64_t *tr = train, *te = test;
    for (int k = 0; k < s->n_classes; k++) {
        int64_t *g = s->group + s->start[k];
        ul_rng_shuffle_i64(&s->rng, g, s->start[k + 1] - s->start[k]);
        memcpy(tr, g, (size_t)s->train_k[k] * sizeof *tr);
        memcpy(te, g + s->train_k[k], (size_t)s->test_k[k] * sizeof *te);
        tr += s->train_k[k];
        te += s->test_k[k];
    }
}

void ul_shuffle_split_free(ul_shuffle_split *s)
{
    free(s->group);
    free(s->start);
    free(s->train_k);
    free(s->test_k);
    memset(s, 0, sizeof *s);
}

/* ---- membership inference --------------------------------------------------------- */

void ul_mia_cfg_from_params(ul_mia_cfg *cfg, const ul_params *params, uint64_t run_seed)
{
    cfg->n_splits = (int)ul_params_int(params, "n_splits");
    cfg->test_size = ul_params_double(params, "test_size");
    cfg->clip = ul_params_double(params, "clip");
    cfg->seed = run_seed + (uint64_t)ul_params_int(params, "seed");
}

/* Copies n of the m values (all when n == m, else a seeded random subset)
 * into out[0..n-1] as the attack features, clipped. */
static void mia_take(const double *v, int64_t m, int64_t n, double clip, ul_rng *rng,
                     int64_t *scratch, double *out)
{
    for (int64_t i = 0; i < m; i++)
        scratch[i] = i;
    if (n < m) /* partial Fisher–Yates: the first n are a uniform sample */
        for (int64_t i = 0; i < n; i++) {
            int64_t j = i + (int64_t)ul_rng_below(rng, (uint32_t)(m - i));
            int64_t t = scratch[i];
            scratch[i] = scratch[j];
            scratch[j] = t;
        }
    for (int64_t i = 0; i < n; i++)
        out[i] = fmin(fmax(v[scratch[i]], -clip), clip);
}

int ul_mia_score(const double *member, int64_t n_member, const double *nonmember,
                 int64_t n_nonmember, const ul_mia_cfg *cfg, double *mean, double *std,
                 ul_error *err)
{
    if (cfg->n_splits < 1)
        return ul_errorf(err, UL_EINVAL, "membership inference: n_splits must be >= 1, got %d",
                         cfg->n_splits);
    if (n_member > UINT32_MAX || n_nonmember > UINT32_MAX)
        return ul_errorf(err, UL_EINVAL, "membership inference: more than 2^32 examples");
    for (int64_t i = 0; i < n_member; i++)
        if (isnan(member[i]))
            return ul_errorf(err, UL_EINVAL, "membership inference: member %lld has value NaN",
                             (long long)i);
    for (int64_t i = 0; i < n_nonmember; i++)
        if (isnan(nonmember[i]))
            return ul_errorf(err, UL_EINVAL,
                             "membership inference: non-member %lld has value NaN", (long long)i);
    const int64_t n = n_member < n_nonmember ? n_member : n_nonmember, N = 2 * n;
    const int64_t big = n_member > n_nonmember ? n_member : n_nonmember;
    if (n < 1)
        return ul_errorf(err, UL_EINVAL,
                         "membership inference needs members and non-members; got %lld and %lld",
                         (long long)n_member, (long long)n_nonmember);

    ul_shuffle_split split = {0};
    double *x = malloc((size_t)N * sizeof *x);
    double *xtr = malloc((size_t)N * sizeof *xtr);
    uint8_t *y = malloc((size_t)N * sizeof *y);
    uint8_t *ytr = malloc((size_t)N * sizeof *ytr);
    int32_t *labels = malloc((size_t)N * sizeof *labels);
    int64_t *idx = malloc((size_t)(big > N ? big : N) * sizeof *idx);
    int64_t *test = malloc((size_t)N * sizeof *test);
    double *acc = malloc((size_t)cfg->n_splits * sizeof *acc);
    int rc = UL_OK;
    if (!x || !xtr || !y || !ytr || !labels || !idx || !test || !acc) {
        rc = ul_errorf(err, UL_ENOMEM, "membership inference: out of memory");
        goto cleanup;
    }
    ul_rng rng;
    ul_rng_seed(&rng, cfg->seed, UL_STATS_STREAM_SUBSAMPLE);
    /* Non-members first, then members, as SCRUB concatenates them. */
    mia_take(nonmember, n_nonmember, n, cfg->clip, &rng, idx, x);
    mia_take(member, n_member, n, cfg->clip, &rng, idx, x + n);
    for (int64_t i = 0; i < N; i++) {
        y[i] = i >= n;
        labels[i] = y[i];
    }
    rc = ul_shuffle_split_init(&split, labels, N, 2, cfg->test_size, cfg->seed, err);
    if (rc) {
        ul_error_prefix(err, "membership inference on %lld members and %lld non-members "
                             "(%lld each after balancing)",
                        (long long)n_member, (long long)n_nonmember, (long long)n);
        goto cleanup;
    }
    double sum = 0;
    for (int s = 0; s < cfg->n_splits; s++) {
        ul_shuffle_split_next(&split, idx, test);
        for (int64_t i = 0; i < split.n_train; i++) {
            xtr[i] = x[idx[i]];
            ytr[i] = y[idx[i]];
        }
        ul_logreg lr;
        if ((rc = ul_logreg_fit(&lr, xtr, ytr, split.n_train, 1, 1.0, false, err)))
            goto cleanup;
        int64_t correct = 0;
        for (int64_t i = 0; i < split.n_test; i++)
            correct += ul_logreg_predict(&lr, &x[test[i]]) == y[test[i]];
        acc[s] = (double)correct / (double)split.n_test;
        sum += acc[s];
    }
    double m = sum / cfg->n_splits, ss = 0;
    for (int s = 0; s < cfg->n_splits; s++)
        ss += (acc[s] - m) * (acc[s] - m);
    *mean = m;
    *std = sqrt(ss / cfg->n_splits);

cleanup:
    ul_shuffle_split_free(&split);
    free(x);
    free(xtr);
    free(y);
    free(ytr);
    free(labels);
    free(idx);
    free(test);
    free(acc);
    return rc;
}

/* malloc(0) may return NULL; empty views still get a valid buffer. */
static size_t at_least_one(int64_t n)
{
    return n > 0 ? (size_t)n : 1;
}

int ul_mia_loss(ul_net *net, const ul_data_view *members, const ul_data_view *heldout,
                const int32_t *classes, int n_classes, const ul_mia_cfg *cfg, double *mean,
                double *std, ul_error *err)
{
    int64_t n_held = 0;
    int64_t *idx = malloc(at_least_one(heldout->n) * sizeof *idx);
    double *loss_m = malloc(at_least_one(members->n) * sizeof *loss_m);
    double *loss_h = malloc(at_least_one(heldout->n) * sizeof *loss_h);
    int rc = UL_OK;
    if (!idx || !loss_m || !loss_h) {
        rc = ul_errorf(err, UL_ENOMEM, "membership inference: out of memory");
        goto cleanup;
    }
    for (int64_t i = 0; i < heldout->n; i++) {
        int64_t j = ul_view_index(heldout, i);
        bool keep = n_classes == 0;
        for (int k = 0; k < n_classes && !keep; k++)
            keep = heldout->y[j] == classes[k];
        if (keep)
            idx[n_held++] = j;
    }
    ul_data_view held = *heldout;
    held.idx = idx;
    held.n = n_held;
    if ((rc = ul_net_scores(net, members, 0, loss_m, NULL, NULL, err)) ||
        (rc = ul_net_scores(net, &held, 0, loss_h, NULL, NULL, err)))
        goto cleanup;
    rc = ul_mia_score(loss_m, members->n, loss_h, n_held, cfg, mean, std, err);

cleanup:
    free(idx);
    free(loss_m);
    free(loss_h);
    return rc;
}

/* ---- thresholds ------------------------------------------------------------------- */

static int scored_cmp(const void *a, const void *b)
{
    double x = ((const ul_scored *)a)->value, y = ((const ul_scored *)b)->value;
    return (x > y) - (x < y);
}

bool ul_threshold_fit(ul_scored *items, int64_t n, double *threshold, double *balanced_accuracy)
{
    int64_t n_m = 0;
    for (int64_t i = 0; i < n; i++)
        n_m += items[i].member;
    const int64_t n_nm = n - n_m;
    if (!n_m || !n_nm)
        return false;
    qsort(items, (size_t)n, sizeof *items, scored_cmp);
    /* Sweep t over the distinct values ascending; below_m/below_nm count
     * the items strictly below t. */
    int64_t below_m = 0, below_nm = 0;
    double best = -1, best_t = items[0].value;
    for (int64_t i = 0; i < n;) {
        double t = items[i].value;
        double acc = 0.5 * (double)(n_m - below_m) / (double)n_m +
                     0.5 * (double)below_nm / (double)n_nm;
        if (acc > best) {
            best = acc;
            best_t = t;
        }
        do {
            below_m += items[i].member;
            below_nm += !items[i].member;
            i++;
        } while (i < n && items[i].value == t);
    }
    *threshold = best_t;
    *balanced_accuracy = best;
    return true;
}

/* ---- per-example scores -------------------------------------------------------------- */

void ul_logit_scores(const float *logits, int K, int32_t y, double *loss, double *entropy,
                     double *confidence)
{
    double mx = logits[0];
    for (int k = 1; k < K; k++)
        mx = fmax(mx, logits[k]);
    double se = 0, pz = 0;
    for (int k = 0; k < K; k++) {
        double e = exp(logits[k] - mx);
        se += e;
        pz += e * (logits[k] - mx);
    }
    double lse = log(se); /* log Σ e^{z − max} */
    double zy = logits[y] - mx;
    if (loss)
        *loss = lse - zy;
    /* −Σ p log p with log p_k = (z_k − max) − lse: no log of an underflowed p. */
    if (entropy)
        *entropy = lse - pz / se;
    if (confidence)
        *confidence = exp(zy - lse);
}

int ul_net_scores(ul_net *net, const ul_data_view *v, int batch_size, double *loss,
                  double *entropy, double *confidence, ul_error *err)
{
    const int K = v->n_classes;
    const int64_t d = (int64_t)v->c * v->h * v->w;
    if (batch_size < 1)
        batch_size = 256;
    if (v->n < batch_size)
        batch_size = v->n > 0 ? (int)v->n : 1;
    int rc = ul_net_reserve(net, batch_size, err);
    if (rc)
        return rc;
    float *x = malloc((size_t)(batch_size * d) * sizeof *x);
    int32_t *y = malloc((size_t)batch_size * sizeof *y);
    if (!x || !y) {
        rc = ul_errorf(err, UL_ENOMEM, "per-example scores: out of memory for a batch of %d",
                       batch_size);
        goto cleanup;
    }
    for (int64_t from = 0; from < v->n; from += batch_size) {
        int B = (int)(v->n - from < batch_size ? v->n - from : batch_size);
        ul_view_gather(v, NULL, from, B, x, y);
        const float *z = ul_net_infer(net, x, B);
        for (int b = 0; b < B; b++)
            ul_logit_scores(z + (int64_t)b * K, K, y[b], loss ? loss + from + b : NULL,
                            entropy ? entropy + from + b : NULL,
                            confidence ? confidence + from + b : NULL);
    }

cleanup:
    free(x);
    free(y);
    return rc;
}
