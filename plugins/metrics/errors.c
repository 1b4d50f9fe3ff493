/* errors — error (1 − accuracy) and mean cross-entropy of the model on the
 * retain, forget, validation and test sets, in eval mode. A set the run does
 * not have (n = 0) gets NAN. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"

static const ul_param_def errors_params[] = {
    UL_PARAM_INT("batch_size", "256", 1, 65536, "examples per forward pass"),
};

static int errors_compute(const ul_metric_ctx *ctx, const ul_params *params, ul_metric_value *out,
                          size_t cap, size_t *n_out, ul_error *err)
{
    const struct {
        const char *name;
        const ul_data_view *view;
    } sets[] = {{"retain", &ctx->retain}, {"forget", &ctx->forget}, {"val", &ctx->val},
                {"test", &ctx->test}};
    const size_t n_sets = sizeof sets / sizeof sets[0];
    if (cap < 2 * n_sets)
        return ul_errorf(err, UL_EINVAL, "errors: writes %zu values but got room for %zu",
                         2 * n_sets, cap);
    const int batch = (int)ul_params_int(params, "batch_size");
    for (size_t s = 0; s < n_sets; s++) {
        double loss = NAN, acc = NAN;
        if (sets[s].view->n > 0) {
            int rc = ul_evaluate(ctx->model, sets[s].view, batch, &loss, &acc, NULL, err);
            if (rc) {
                ul_error_prefix(err, "errors: %s set", sets[s].name);
                return rc;
            }
        }
        ul_metric_value *e = &out[2 * s], *l = &out[2 * s + 1];
        snprintf(e->name, sizeof e->name, "%s_error", sets[s].name);
        e->value = 1.0 - acc;
        e->std = NAN;
        snprintf(l->name, sizeof l->name, "%s_loss", sets[s].name);
        l->value = loss;
        l->std = NAN;
    }
    *n_out = 2 * n_sets;
    return UL_OK;
}

static const ul_metric_vtable errors_vtable = {sizeof(ul_metric_vtable), errors_compute};

UL_PLUGIN(UL_KIND_METRIC, "errors", "1.0.0",
          "error (1 - accuracy) and mean cross-entropy on retain, forget, validation and test",
          errors_params, &errors_vtable);
