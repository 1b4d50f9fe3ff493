/* Private: building a model from its plugin. */
#ifndef UL_MODEL_H
#define UL_MODEL_H

#include "unlearn/plugin.h"

/* Builds, finalises (PyTorch default initialisation from rng) and returns
 * a net for the model plugin `name` at `width` for inputs (C,H,W) and
 * n_classes. params must have been created from the plugin's schema. */
int ul_model_create(const char *name, double width, const ul_params *params, int C, int H,
                    int W, int n_classes, ul_rng *rng, ul_net **out, ul_error *err);

#endif
