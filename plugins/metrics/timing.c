/* timing — wall time of the unlearning method, and the speed-up over
 * retraining from scratch:
 *   unlearn_seconds: the method's wall time (NAN for the original model);
 *   rte:             retrain_seconds / unlearn_seconds, NAN unless both are
 *                    finite and unlearn_seconds > 0.
 * No parameters; no std (NAN). */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"

static int timing_compute(const ul_metric_ctx *ctx, const ul_params *params, ul_metric_value *out,
                          size_t cap, size_t *n_out, ul_error *err)
{
    if (cap < 2)
        return ul_errorf(err, UL_EINVAL, "timing: writes 2 values but got room for %zu", cap);
    const double u = ctx->unlearn_seconds, r = ctx->retrain_seconds;
    snprintf(out[0].name, sizeof out[0].name, "unlearn_seconds");
    out[0].value = u;
    out[0].std = NAN;
    snprintf(out[1].name, sizeof out[1].name, "rte");
    out[1].value = isfinite(u) && isfinite(r) && u > 0 ? r / u : NAN;
    out[1].std = NAN;
    *n_out = 2;
    return UL_OK;
}

static const ul_metric_vtable timing_vtable = {sizeof(ul_metric_vtable), timing_compute};

/* Written out rather than with UL_PLUGIN, which cannot take an empty schema. */
UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;
const ul_plugin_desc ul_plugin = {
    UL_ABI_MAJOR, UL_ABI_MINOR, (uint32_t)sizeof(ul_plugin_desc), UL_KIND_METRIC,
    "timing", "1.0.0",
    "unlearning wall time and RTE = retrain time / unlearning time",
    NULL, 0, &timing_vtable};
