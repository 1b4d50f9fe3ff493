/* bias — bias removal: the model should stop predicting the forgotten
 * examples as trained, i.e. a high forget error, at a small cost in
 * validation error.  J = (1 − λ)·E_V + λ·(1 − E_F). */
#include "unlearn/plugin.h"

static const char *const bias_requires[] = {"val_error", "forget_error", NULL};

static double bias_objective(const double *values, double lambda)
{
    const double e_v = values[0], e_f = values[1];
    return (1.0 - lambda) * e_v + lambda * (1.0 - e_f);
}

static const ul_goal_vtable bias_vtable = {sizeof(ul_goal_vtable), bias_requires,
                                           bias_objective};

/* Written out rather than with UL_PLUGIN, which cannot take an empty schema. */
UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;
const ul_plugin_desc ul_plugin = {
    UL_ABI_MAJOR, UL_ABI_MINOR, (uint32_t)sizeof(ul_plugin_desc), UL_KIND_GOAL, "bias", "1.0.0",
    "bias removal: J = (1 - lambda) E_V + lambda (1 - E_F)", NULL, 0, &bias_vtable};
