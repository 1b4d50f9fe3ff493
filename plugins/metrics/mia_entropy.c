/* mia_entropy — the entropy attack of SCRUB's get_membership_attack_prob:
 * a logistic regression on the softmax entropy of each example, trained on
 * the retain set R (members, label 1) against the test set T (non-members,
 * label 0) with balanced class weights (R is usually much larger than T);
 * the value is the fraction of the forget set F it predicts "member".
 * After good unlearning F looks like T, so the value should approach the
 * retrained model's. C = 1 as sklearn's default; no std (NAN). NAN when R,
 * T or F is empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "unlearn/plugin.h"
#include "unlearn/stats.h"

static const ul_param_def mia_entropy_params[] = {
    UL_PARAM_BOOL("balanced", "true",
                  "weigh R and T equally (sklearn's class_weight=\"balanced\", as SCRUB)"),
};

static int mia_entropy_compute(const ul_metric_ctx *ctx, const ul_params *params,
                               ul_metric_value *out, size_t cap, size_t *n_out, ul_error *err)
{
    if (cap < 1)
        return ul_errorf(err, UL_EINVAL, "mia_entropy: writes 1 value but got room for 0");
    ul_metric_value *v = &out[0];
    snprintf(v->name, sizeof v->name, "mia_entropy");
    v->value = v->std = NAN;
    *n_out = 1;
    const int64_t n_r = ctx->retain.n, n_t = ctx->test.n, n_f = ctx->forget.n;
    if (!n_r || !n_t || !n_f)
        return UL_OK;

    /* Shadow features: R then T; F after them, scored only. */
    double *h = malloc((size_t)(n_r + n_t + n_f) * sizeof *h);
    uint8_t *member = malloc((size_t)(n_r + n_t) * sizeof *member);
    int rc = UL_OK;
    if (!h || !member) {
        rc = ul_errorf(err, UL_ENOMEM, "mia_entropy: out of memory for %lld examples",
                       (long long)(n_r + n_t + n_f));
        goto cleanup;
    }
    if ((rc = ul_net_scores(ctx->model, &ctx->retain, 0, NULL, h, NULL, err)) ||
        (rc = ul_net_scores(ctx->model, &ctx->test, 0, NULL, h + n_r, NULL, err)) ||
        (rc = ul_net_scores(ctx->model, &ctx->forget, 0, NULL, h + n_r + n_t, NULL, err)))
        goto cleanup;
    for (int64_t i = 0; i < n_r + n_t; i++)
        member[i] = i < n_r;
    ul_logreg lr;
    if ((rc = ul_logreg_fit(&lr, h, member, n_r + n_t, 1, 1.0, ul_params_bool(params, "balanced"),
                            err)))
        goto cleanup;
    int64_t predicted = 0;
    for (int64_t i = 0; i < n_f; i++)
        predicted += ul_logreg_predict(&lr, &h[n_r + n_t + i]);
    v->value = (double)predicted / (double)n_f;

cleanup:
    if (rc)
        ul_error_prefix(err, "mia_entropy");
    free(h);
    free(member);
    return rc;
}

static const ul_metric_vtable mia_entropy_vtable = {sizeof(ul_metric_vtable),
                                                    mia_entropy_compute};

UL_PLUGIN(UL_KIND_METRIC, "mia_entropy", "1.0.0",
          "entropy attack fitted on retain vs test: fraction of the forget set called member",
          mia_entropy_params, &mia_entropy_vtable);
