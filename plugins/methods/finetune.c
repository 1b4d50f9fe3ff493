/* finetune — continue training θ₀ on the retain set with cross-entropy
 * (REFERENCE.md, Methods). Defaults are those of FT in
 * OPTML-Group/Unlearn-Sparse: SGD lr 0.01, momentum 0.9, weight decay
 * 5e-4, batch 256, 10 epochs, constant lr. */
#include "unlearn/steps.h"

static const ul_param_def finetune_params[] = {
    UL_PARAM_INT("epochs", "10", 1, 100000, "passes over the retain set"),
    UL_PARAM_DOUBLE("lr", "0.01", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT("batch_size", "256", 1, 1 << 20, "retain batch size"),
};

static int finetune_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    return ul_finetune_retain(ctx, "finetune", (int)ul_params_int(params, "epochs"),
                              (int)ul_params_int(params, "batch_size"), &o, 0.0, 0, err);
}

static const ul_method_vtable finetune_vtable = {sizeof(ul_method_vtable), finetune_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "finetune", "1.0.0",
          "fine-tune the original model on the retain set (cross-entropy, SGD)",
          finetune_params, &finetune_vtable);
