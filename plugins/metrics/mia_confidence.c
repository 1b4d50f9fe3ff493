/* mia_confidence — MIA-efficacy as l1-sparse and SalUn report it: a
 * per-class threshold attack on the softmax probability of the true class
 * (Song & Mittal's threshold attack), fitted on the retain set R (members)
 * against the test set T (non-members); the value is the fraction of the
 * forget set F predicted "non-member" (higher = more forgotten).
 * Per class c, the threshold t_c is the value of R∪T (of class c) that
 * maximises the balanced accuracy ½·P_R(conf >= t) + ½·P_T(conf < t),
 * the smallest one on ties (ul_threshold_fit in unlearn/stats.h); an
 * example of F of class c is a non-member when its confidence < t_c. A
 * class without examples in both R and T gets no threshold: its F examples
 * count as members (the attack cannot call them forgotten). No parameters;
 * no std (NAN); NAN when R, T or F is empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "unlearn/plugin.h"
#include "unlearn/stats.h"

/* Copies the view's labels (in view order) into y. */
static void view_labels(const ul_data_view *v, int32_t *y)
{
    for (int64_t i = 0; i < v->n; i++)
        y[i] = v->y[ul_view_index(v, i)];
}

static int mia_conf_compute(const ul_metric_ctx *ctx, const ul_params *params,
                            ul_metric_value *out, size_t cap, size_t *n_out, ul_error *err)
{
    if (cap < 1)
        return ul_errorf(err, UL_EINVAL, "mia_confidence: writes 1 value but got room for 0");
    ul_metric_value *v = &out[0];
    snprintf(v->name, sizeof v->name, "mia_confidence");
    v->value = v->std = NAN;
    *n_out = 1;
    const int64_t n_r = ctx->retain.n, n_t = ctx->test.n, n_f = ctx->forget.n;
    const int64_t n_s = n_r + n_t, n_all = n_s + n_f;
    const int K = ctx->retain.n_classes;
    if (!n_r || !n_t || !n_f)
        return UL_OK;

    /* Everything indexed as R, then T, then F. */
    double *conf = malloc((size_t)n_all * sizeof *conf);
    int32_t *y = malloc((size_t)n_all * sizeof *y);
    ul_scored *items = malloc((size_t)n_s * sizeof *items);
    int64_t *start = calloc((size_t)K + 1, sizeof *start);
    double *thr = malloc((size_t)K * sizeof *thr);
    bool *has_thr = calloc((size_t)K, sizeof *has_thr);
    int rc = UL_OK;
    if (!conf || !y || !items || !start || !thr || !has_thr) {
        rc = ul_errorf(err, UL_ENOMEM, "out of memory for %lld examples", (long long)n_all);
        goto cleanup;
    }
    if ((rc = ul_net_scores(ctx->model, &ctx->retain, 0, NULL, NULL, conf, err)) ||
        (rc = ul_net_scores(ctx->model, &ctx->test, 0, NULL, NULL, conf + n_r, err)) ||
        (rc = ul_net_scores(ctx->model, &ctx->forget, 0, NULL, NULL, conf + n_s, err)))
        goto cleanup;
    view_labels(&ctx->retain, y);
    view_labels(&ctx->test, y + n_r);
    view_labels(&ctx->forget, y + n_s);

    /* Group R∪T by class (counting sort) so each class's items are a slice. */
    for (int64_t i = 0; i < n_s; i++)
        start[y[i] + 1]++;
    for (int k = 0; k < K; k++)
        start[k + 1] += start[k];
    for (int64_t i = 0; i < n_s; i++) {
        int64_t at = start[y[i]]++;
        items[at].value = conf[i];
        items[at].member = i < n_r;
    }
    for (int k = K; k > 0; k--) /* the fill advanced start[k] to start[k + 1] */
        start[k] = start[k - 1];
    start[0] = 0;
    for (int k = 0; k < K; k++) {
        double bacc;
        has_thr[k] = ul_threshold_fit(items + start[k], start[k + 1] - start[k], &thr[k], &bacc);
    }
    int64_t nonmember = 0;
    for (int64_t i = n_s; i < n_all; i++)
        nonmember += has_thr[y[i]] && conf[i] < thr[y[i]];
    v->value = (double)nonmember / (double)n_f;

cleanup:
    if (rc)
        ul_error_prefix(err, "mia_confidence");
    free(conf);
    free(y);
    free(items);
    free(start);
    free(thr);
    free(has_thr);
    return rc;
}

static const ul_metric_vtable mia_conf_vtable = {sizeof(ul_metric_vtable), mia_conf_compute};

/* Written out rather than with UL_PLUGIN, which cannot take an empty schema. */
UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;
const ul_plugin_desc ul_plugin = {
    UL_ABI_MAJOR, UL_ABI_MINOR, (uint32_t)sizeof(ul_plugin_desc), UL_KIND_METRIC,
    "mia_confidence", "1.0.0",
    "per-class confidence threshold attack fitted on retain vs test (MIA-efficacy): fraction "
    "of the forget set called non-member",
    NULL, 0, &mia_conf_vtable};
