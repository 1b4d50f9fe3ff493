/* random_label — fine-tune on the forget set with its labels replaced by
 * random WRONG classes, interleaved with the retain set (REFERENCE.md,
 * Methods; RL in OPTML-Group/Unlearn-Sparse).
 *
 * Interleaving: every epoch each forget example draws a fresh label uniform
 * over the other classes (seeded by ctx->seed), and R ∪ F′ is shuffled
 * jointly into batches — the reference's single shuffled loader over
 * ConcatDataset([relabelled forget, retain]); see ul_random_label_run.
 * Defaults: SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs,
 * batch 256, constant lr (that repository's defaults). */
#include "unlearn/steps.h"

static const ul_param_def rl_params[] = {
    UL_PARAM_INT("epochs", "10", 1, 100000, "passes over the retain and relabelled forget sets"),
    UL_PARAM_DOUBLE("lr", "0.01", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT("batch_size", "256", 1, 1 << 20, "batch size over the joint set"),
};

static int rl_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    return ul_random_label_run(ctx, "random_label", (int)ul_params_int(params, "epochs"),
                               (int)ul_params_int(params, "batch_size"), &o, NULL, err);
}

static const ul_method_vtable rl_vtable = {sizeof(ul_method_vtable), rl_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "random_label", "1.0.0",
          "fine-tune on the forget set with random wrong labels, mixed with the retain set",
          rl_params, &rl_vtable);
