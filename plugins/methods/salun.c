/* salun — SalUn (Fan et al., ICLR 2024; OPTML-Group/Unlearn-Saliency), as in
 * REFERENCE.md, Methods.
 *
 * Saliency: g = ∂CE(F)/∂θ at θ₀, CE the mean over all of F, computed in
 * eval mode as the reference's generate_mask.py does (which sums per-batch
 * means — the same up to the weight of a smaller last batch — and also
 * steps an optimizer between batches, a quirk we do not copy: the mask is
 * computed at θ₀). The floor(ratio·n) coordinates of largest |g| may
 * change; then random_label (random wrong labels on F, shuffled together
 * with R) updates only them. Masked-out coordinates and their momentum are
 * left untouched by ul_optim_step, so weight decay cannot move them — the
 * upstream bug REFERENCE.md mentions.
 *
 * Defaults: ratio 0.5, lr 0.013 and 10 epochs (the reference's CIFAR-10
 * example), momentum 0.9, weight decay 5e-4, batch 256. */
#include <math.h>
#include <stdlib.h>

#include "unlearn/steps.h"

/* Stream of ctx->seed for the order of the saliency pass ("sal"). */
#define SALUN_STREAM_SALIENCY 0x73616cu

static const ul_param_def salun_params[] = {
    UL_PARAM_INT("epochs", "10", 1, 100000, "passes over the retain and relabelled forget sets"),
    UL_PARAM_DOUBLE("lr", "0.013", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1,
                    "L2 weight decay added to the gradient (of salient weights only)"),
    UL_PARAM_INT("batch_size", "256", 1, 1 << 20,
                 "batch size over the joint set and for the saliency pass"),
    UL_PARAM_DOUBLE("ratio", "0.5", 0, 1,
                    "fraction of weights, by largest |dCE(F)/dtheta| at theta0, that may change"),
};

/* Leaves Σ_{i∈F} ∂CE_i/∂θ (eval mode) in the net's gradients: |·| ranks
 * the coordinates as |∂CE(F)/∂θ| of the mean does. */
static int salun_forget_gradient(const ul_method_ctx *ctx, int batch_size, ul_error *err)
{
    ul_net *net = ctx->model;
    ul_batcher fb = {0};
    ul_loss_buf lb = {0};
    int rc;
    if ((rc = ul_batcher_init(&fb, &ctx->forget, batch_size, ctx->seed, SALUN_STREAM_SALIENCY,
                              err)) ||
        (rc = ul_loss_buf_init(&lb, fb.batch_size, ctx->forget.n_classes, err)) ||
        (rc = ul_net_reserve(net, fb.batch_size, err)))
        goto done;
    ul_net_zero_grad(net);
    int B;
    for (int64_t s = 0; (B = ul_batcher_next(&fb)); s++) {
        float ce = ul_step_xent(net, &lb, fb.x, fb.y, B, false, (float)B, NULL);
        if (!isfinite(ce)) {
            rc = ul_errorf(err, UL_EDIVERGED,
                           "salun: the forget loss of the original model is %s (batch %lld); "
                           "the original model is broken",
                           isnan(ce) ? "NaN" : "Inf", (long long)s + 1);
            goto done;
        }
    }
done:
    ul_loss_buf_free(&lb);
    ul_batcher_free(&fb);
    return rc;
}

static int salun_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    const int batch_size = (int)ul_params_int(params, "batch_size");
    if (ctx->forget.n < 1)
        return ul_errorf(err, UL_EINVAL, "salun: the forget set is empty");
    size_t np;
    const float *g = ul_net_grads(ctx->model, &np);
    uint8_t *mask = malloc(np ? np : 1);
    float *scratch = malloc((np ? np : 1) * sizeof *scratch);
    int rc;
    if (!mask || !scratch) {
        rc = ul_errorf(err, UL_ENOMEM, "salun: out of memory for the mask of %zu weights", np);
        goto done;
    }
    if ((rc = salun_forget_gradient(ctx, batch_size, err)))
        goto done;
    ul_top_fraction_mask(g, np, ul_params_double(params, "ratio"), mask, scratch);
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    rc = ul_random_label_run(ctx, "salun", (int)ul_params_int(params, "epochs"), batch_size, &o,
                             mask, err);
done:
    free(mask);
    free(scratch);
    return rc;
}

static const ul_method_vtable salun_vtable = {sizeof(ul_method_vtable), salun_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "salun", "1.0.0",
          "SalUn: random-label fine-tuning of only the weights most salient for the forget set",
          salun_params, &salun_vtable);
