/* privacy — forgotten examples should look like unseen ones: the forget
 * error should match the validation error, at a small cost in validation
 * error.  J = (1 − λ)·E_V + λ·|E_F − E_V|. */
#include <math.h>

#include "unlearn/plugin.h"

static const char *const privacy_requires[] = {"val_error", "forget_error", NULL};

static double privacy_objective(const double *values, double lambda)
{
    const double e_v = values[0], e_f = values[1];
    return (1.0 - lambda) * e_v + lambda * fabs(e_f - e_v);
}

static const ul_goal_vtable privacy_vtable = {sizeof(ul_goal_vtable), privacy_requires,
                                              privacy_objective};

/* Written out rather than with UL_PLUGIN, which cannot take an empty schema. */
UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;
const ul_plugin_desc ul_plugin = {
    UL_ABI_MAJOR, UL_ABI_MINOR, (uint32_t)sizeof(ul_plugin_desc), UL_KIND_GOAL, "privacy",
    "1.0.0", "privacy: J = (1 - lambda) E_V + lambda |E_F - E_V|", NULL, 0, &privacy_vtable};
