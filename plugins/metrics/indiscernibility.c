/* indiscernibility — 1 − |MIA − 0.5| / 0.5 of the loss-based membership
 * inference score (1: the attack is at chance, forgotten examples look
 * unseen; 0: it always tells them apart, or always errs).
 *   indiscernibility:     from the MIA of F against the test set;
 *   indiscernibility_val: from the MIA of F against the validation set.
 * The MIA is recomputed with the same protocol and parameters as mia_loss
 * (ul_mia_loss in unlearn/stats.h); the same parameters and run seed give
 * the same MIA value. std is the MIA's std over the splits times 2, the
 * slope of the map. A missing set (n = 0) gives NAN. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"
#include "unlearn/stats.h"

static const ul_param_def indisc_params[] = {UL_MIA_PARAM_DEFS};

static int indisc_compute(const ul_metric_ctx *ctx, const ul_params *params, ul_metric_value *out,
                          size_t cap, size_t *n_out, ul_error *err)
{
    const struct {
        const char *name;
        const ul_data_view *heldout;
    } against[] = {{"indiscernibility", &ctx->test}, {"indiscernibility_val", &ctx->val}};
    const size_t n_values = sizeof against / sizeof against[0];
    if (cap < n_values)
        return ul_errorf(err, UL_EINVAL,
                         "indiscernibility: writes %zu values but got room for %zu", n_values,
                         cap);
    ul_mia_cfg cfg;
    ul_mia_cfg_from_params(&cfg, params, ctx->seed);
    for (size_t i = 0; i < n_values; i++) {
        ul_metric_value *v = &out[i];
        snprintf(v->name, sizeof v->name, "%s", against[i].name);
        v->value = v->std = NAN;
        if (ctx->forget.n == 0 || against[i].heldout->n == 0)
            continue;
        double mia, mia_std;
        int rc = ul_mia_loss(ctx->model, &ctx->forget, against[i].heldout, ctx->forget_classes,
                             ctx->n_forget_classes, &cfg, &mia, &mia_std, err);
        if (rc) {
            ul_error_prefix(err, "%s", against[i].name);
            return rc;
        }
        v->value = 1.0 - fabs(mia - 0.5) / 0.5;
        v->std = 2.0 * mia_std;
    }
    *n_out = n_values;
    return UL_OK;
}

static const ul_metric_vtable indisc_vtable = {sizeof(ul_metric_vtable), indisc_compute};

UL_PLUGIN(UL_KIND_METRIC, "indiscernibility", "1.0.0",
          "1 - |MIA - 0.5| / 0.5 of the loss-based membership inference (test and validation)",
          indisc_params, &indisc_vtable);
