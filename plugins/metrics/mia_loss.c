/* mia_loss — the loss-based membership inference attack (SCRUB, NeurIPS
 * 2023 starting kit): can a 1-D logistic regression on the per-example
 * cross-entropy tell the forget set F (members) from held-out examples?
 *   mia_loss_test: F against the test set — for reporting;
 *   mia_loss_val:  F against the validation set — for tuning (goal
 *                  privacy_mia).
 * Held-out examples are restricted to F's classes when the forget set is a
 * set of whole classes. The protocol (balancing, clipping, splits) is
 * ul_mia_score's in unlearn/stats.h; std is over the splits. 0.5 means the
 * attack cannot tell F from unseen data. A missing set (n = 0) gives NAN. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"
#include "unlearn/stats.h"

static const ul_param_def mia_loss_params[] = {UL_MIA_PARAM_DEFS};

static int mia_loss_compute(const ul_metric_ctx *ctx, const ul_params *params,
                            ul_metric_value *out, size_t cap, size_t *n_out, ul_error *err)
{
    const struct {
        const char *name;
        const ul_data_view *heldout;
    } against[] = {{"mia_loss_test", &ctx->test}, {"mia_loss_val", &ctx->val}};
    const size_t n_values = sizeof against / sizeof against[0];
    if (cap < n_values)
        return ul_errorf(err, UL_EINVAL, "mia_loss: writes %zu values but got room for %zu",
                         n_values, cap);
    ul_mia_cfg cfg;
    ul_mia_cfg_from_params(&cfg, params, ctx->seed);
    for (size_t i = 0; i < n_values; i++) {
        ul_metric_value *v = &out[i];
        snprintf(v->name, sizeof v->name, "%s", against[i].name);
        v->value = v->std = NAN;
        if (ctx->forget.n == 0 || against[i].heldout->n == 0)
            continue;
        int rc = ul_mia_loss(ctx->model, &ctx->forget, against[i].heldout, ctx->forget_classes,
                             ctx->n_forget_classes, &cfg, &v->value, &v->std, err);
        if (rc) {
            ul_error_prefix(err, "%s", against[i].name);
            return rc;
        }
    }
    *n_out = n_values;
    return UL_OK;
}

static const ul_metric_vtable mia_loss_vtable = {sizeof(ul_metric_vtable), mia_loss_compute};

UL_PLUGIN(UL_KIND_METRIC, "mia_loss", "1.0.0",
          "loss-based membership inference of the forget set against test and validation data",
          mia_loss_params, &mia_loss_vtable);
