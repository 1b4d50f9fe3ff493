/* l1sparse — fine-tune on the retain set with CE + a_e·‖θ‖₁ over all
 * trainable parameters (subgradient sign(θ)), where
 * a_e = α·(1 − e/(E − no_l1_epochs)) for 0-based epochs e < E − no_l1_epochs
 * and 0 afterwards (REFERENCE.md; FT_l1 in OPTML-Group/Unlearn-Sparse).
 * Defaults: SGD lr 0.01, momentum 0.9, wd 5e-4, E = 10, batch 256, constant
 * lr, no_l1_epochs 0, as in that repository. It never pins α; 1e-4 is our
 * choice inside the useful range 1e-5…5e-4 that REFERENCE.md gives. */
#include "unlearn/steps.h"

static const ul_param_def l1sparse_params[] = {
    UL_PARAM_INT("epochs", "10", 1, 100000, "passes over the retain set (E)"),
    UL_PARAM_DOUBLE("lr", "0.01", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT("batch_size", "256", 1, 1 << 20, "retain batch size"),
    UL_PARAM_DOUBLE("alpha", "1e-4", 0, 1,
                    "L1 strength at epoch 0; decays linearly to 0 at epoch E - no_l1_epochs"),
    UL_PARAM_INT("no_l1_epochs", "0", 0, 100000, "final epochs trained without the L1 term"),
};

static int l1sparse_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    const int epochs = (int)ul_params_int(params, "epochs");
    const int no_l1 = (int)ul_params_int(params, "no_l1_epochs");
    return ul_finetune_retain(ctx, "l1sparse", epochs, (int)ul_params_int(params, "batch_size"),
                              &o, ul_params_double(params, "alpha"), epochs - no_l1, err);
}

static const ul_method_vtable l1sparse_vtable = {sizeof(ul_method_vtable), l1sparse_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "l1sparse", "1.0.0",
          "fine-tune on the retain set with a decaying L1 penalty on all weights",
          l1sparse_params, &l1sparse_vtable);
