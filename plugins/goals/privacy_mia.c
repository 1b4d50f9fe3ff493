/* privacy_mia — privacy measured by the loss-based membership inference of
 * the forget set against validation data (mia_loss_val, 0.5 = at chance):
 * J = (1 − λ)·E_V + λ·2·|MIA_V − 0.5|. */
#include <math.h>

#include "unlearn/plugin.h"

static const char *const privacy_mia_requires[] = {"val_error", "mia_loss_val", NULL};

static double privacy_mia_objective(const double *values, double lambda)
{
    const double e_v = values[0], mia_v = values[1];
    return (1.0 - lambda) * e_v + lambda * 2.0 * fabs(mia_v - 0.5);
}

static const ul_goal_vtable privacy_mia_vtable = {sizeof(ul_goal_vtable), privacy_mia_requires,
                                                  privacy_mia_objective};

/* Written out rather than with UL_PLUGIN, which cannot take an empty schema. */
UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;
const ul_plugin_desc ul_plugin = {
    UL_ABI_MAJOR, UL_ABI_MINOR, (uint32_t)sizeof(ul_plugin_desc), UL_KIND_GOAL, "privacy_mia",
    "1.0.0", "privacy by membership inference: J = (1 - lambda) E_V + lambda 2 |MIA_V - 0.5|",
    NULL, 0, &privacy_mia_vtable};
