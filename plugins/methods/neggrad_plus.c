/* neggrad_plus — NegGrad+: each retain batch is paired with the next batch
 * of a forget loader that is reshuffled and restarted whenever it runs out;
 * loss = α·CE(R batch) − (1−α)·CE(F batch); an epoch is one pass over R
 * (REFERENCE.md, Methods; the zip(retain, cycle(forget)) loop of
 * meghdadk/SCRUB). Defaults: SGD lr 0.01, momentum 0.9, weight decay 5e-4,
 * 5 epochs; α = 0.99 is our choice inside the reference's range
 * [0.9, 0.9999]; batches of 128 for both sets.
 *
 * The reference runs the model in eval mode here (BatchNorm uses and keeps
 * its running statistics) — a quirk; we train in train mode by default and
 * offer eval_mode to reproduce it. */
#include "unlearn/steps.h"

/* Shuffling streams of ctx->seed ("ret", "fgt"). */
#define NGP_STREAM_RETAIN 0x726574u
#define NGP_STREAM_FORGET 0x666774u

static const ul_param_def ngp_params[] = {
    UL_PARAM_INT("epochs", "5", 1, 100000, "passes over the retain set"),
    UL_PARAM_DOUBLE("lr", "0.01", 0, 1000, "SGD learning rate (constant)"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT("batch_size", "128", 1, 1 << 20, "retain batch size"),
    UL_PARAM_INT("forget_batch_size", "128", 1, 1 << 20, "forget batch size"),
    UL_PARAM_DOUBLE("alpha", "0.99", 0, 1,
                    "weight of the retain loss; the forget loss is weighted -(1 - alpha)"),
    UL_PARAM_BOOL("eval_mode", "false",
                  "run the model in eval mode (BatchNorm running statistics), as the "
                  "reference code does"),
};

static int ngp_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_net *net = ctx->model;
    const int epochs = (int)ul_params_int(params, "epochs");
    const float alpha = (float)ul_params_double(params, "alpha");
    const bool train = !ul_params_bool(params, "eval_mode");
    if (ctx->retain.n < 1 || ctx->forget.n < 1)
        return ul_errorf(err, UL_EINVAL, "neggrad_plus: needs non-empty retain and forget sets "
                                         "(got %lld and %lld examples)",
                         (long long)ctx->retain.n, (long long)ctx->forget.n);
    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    size_t np;
    float *w = ul_net_params(net, &np);
    float *g = ul_net_grads(net, &np);
    ul_batcher rb = {0}, fb = {0};
    ul_loss_buf lb = {0};
    ul_optim opt = {0};
    int rc;
    if ((rc = ul_batcher_init(&rb, &ctx->retain, (int)ul_params_int(params, "batch_size"),
                              ctx->seed, NGP_STREAM_RETAIN, err)) ||
        (rc = ul_batcher_init(&fb, &ctx->forget, (int)ul_params_int(params, "forget_batch_size"),
                              ctx->seed, NGP_STREAM_FORGET, err)))
        goto done;
    const int Bmax = rb.batch_size > fb.batch_size ? rb.batch_size : fb.batch_size;
    if ((rc = ul_loss_buf_init(&lb, Bmax, ctx->retain.n_classes, err)) ||
        (rc = ul_net_reserve(net, Bmax, err)) || (rc = ul_optim_init(&opt, &o, np, err)))
        goto done;

    ul_meter m;
    ul_meter_init(&m, ctx, epochs, rb.steps * epochs);
    for (int e = 0; e < epochs; e++) {
        ul_meter_epoch(&m);
        int Br;
        for (int64_t s = 0; (Br = ul_batcher_next(&rb)); s++) {
            int64_t correct = 0;
            ul_net_zero_grad(net);
            /* Two forwards, each followed by its backward: the gradients add
             * up to that of the combined loss, as one backward through both
             * forwards does in the reference. */
            float ce_r = ul_step_xent(net, &lb, rb.x, rb.y, Br, train, alpha, &correct);
            int Bf = ul_batcher_next_cycled(&fb);
            float ce_f = ul_step_xent(net, &lb, fb.x, fb.y, Bf, train, -(1.0f - alpha), NULL);
            double loss = (double)alpha * ce_r - (1.0 - alpha) * ce_f;
            if ((rc = ul_check_loss(loss, "neggrad_plus", e + 1, s + 1, o.lr, err)))
                goto done;
            ul_optim_step(&opt, w, g, NULL, o.lr);
            ul_meter_step(&m, e, s, rb.steps, loss, Br, correct, o.lr);
        }
    }
done:
    ul_optim_free(&opt);
    ul_loss_buf_free(&lb);
    ul_batcher_free(&rb);
    ul_batcher_free(&fb);
    return rc;
}

static const ul_method_vtable ngp_vtable = {sizeof(ul_method_vtable), ngp_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "neggrad_plus", "1.0.0",
          "NegGrad+: descend on retain batches while ascending on cycled forget batches",
          ngp_params, &ngp_vtable);
