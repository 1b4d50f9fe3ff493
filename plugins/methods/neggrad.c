/* neggrad — gradient ascent on the forget set: minimise −CE(F)
 * (REFERENCE.md, Methods). Defaults: lr 1e-4 and 5 epochs (REFERENCE.md);
 * momentum 0.9, weight decay 5e-4 and batch 256 as GA in
 * OPTML-Group/Unlearn-Sparse. */
#include "unlearn/steps.h"

/* Shuffling stream of ctx->seed for the forget set ("fgt"). */
#define NEGGRAD_STREAM_FORGET 0x666774u

static const ul_param_def neggrad_params[] = {
    UL_PARAM_INT("epochs", "5", 1, 100000, "passes over the forget set"),
    UL_PARAM_DOUBLE("lr", "1e-4", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT("batch_size", "256", 1, 1 << 20, "forget batch size"),
};

static int neggrad_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_net *net = ctx->model;
    const int epochs = (int)ul_params_int(params, "epochs");
    if (ctx->forget.n < 1)
        return ul_errorf(err, UL_EINVAL, "neggrad: the forget set is empty");
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    size_t np;
    float *w = ul_net_params(net, &np);
    float *g = ul_net_grads(net, &np);
    ul_batcher fb = {0};
    ul_loss_buf lb = {0};
    ul_optim opt = {0};
    int rc;
    if ((rc = ul_batcher_init(&fb, &ctx->forget, (int)ul_params_int(params, "batch_size"),
                              ctx->seed, NEGGRAD_STREAM_FORGET, err)) ||
        (rc = ul_loss_buf_init(&lb, fb.batch_size, ctx->forget.n_classes, err)) ||
        (rc = ul_net_reserve(net, fb.batch_size, err)) || (rc = ul_optim_init(&opt, &o, np, err)))
        goto done;

    ul_meter m;
    ul_meter_init(&m, ctx, epochs, fb.steps * epochs);
    for (int e = 0; e < epochs; e++) {
        ul_meter_epoch(&m);
        int B;
        for (int64_t s = 0; (B = ul_batcher_next(&fb)); s++) {
            int64_t correct = 0;
            ul_net_zero_grad(net);
            /* Reported loss is the objective minimised: −CE(F). */
            double loss = -ul_step_xent(net, &lb, fb.x, fb.y, B, true, -1.0f, &correct);
            if ((rc = ul_check_loss(loss, "neggrad", e + 1, s + 1, o.lr, err)))
                goto done;
            ul_optim_step(&opt, w, g, NULL, o.lr);
            ul_meter_step(&m, e, s, fb.steps, loss, B, correct, o.lr);
        }
    }
done:
    ul_optim_free(&opt);
    ul_loss_buf_free(&lb);
    ul_batcher_free(&fb);
    return rc;
}

static const ul_method_vtable neggrad_vtable = {sizeof(ul_method_vtable), neggrad_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "neggrad", "1.0.0",
          "gradient ascent on the forget set (minimise -CE on F)", neggrad_params,
          &neggrad_vtable);
