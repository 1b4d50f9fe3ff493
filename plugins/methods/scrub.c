/* scrub — SCRUB (Kurmanji et al., NeurIPS 2023; meghdadk/SCRUB), as in
 * REFERENCE.md, Methods. The student θ starts at θ₀ (ctx->model) and trains
 * in train mode; the teacher is a frozen copy of θ₀ in eval mode. With
 * KL = T² · mean_n Σ_c p_T(t)·log(p_T(t)/p_T(s)), for epochs e = 1..E:
 *   if e <= msteps: one pass over F minimising −KL        (max-step)
 *   then            one pass over R minimising γ·CE + α·KL (min-step)
 * with ONE SGD optimizer for both, its lr = lr·rate^k where k counts the
 * entries d of lr_decay_epochs with e > d (the reference's
 * adjust_learning_rate, i.e. the lr drops after each listed epoch).
 *
 * Defaults: the reference's large-scale setting — T 4, γ 0.99, α 0.001,
 * msteps 2, E 3, lr 5e-4, momentum 0.9, weight decay 5e-4, lr_decay_epochs
 * [3, 5, 9] with rate 0.1, retain batches of 128 and forget batches of 512.
 * (Its MIA setting: γ 1, α 0.5, msteps 3, E 5.)
 *
 * rewind (SCRUB+R): after each epoch the forget error E_F and validation
 * error E_V are measured (eval mode); the weights of the epoch with the
 * smallest |E_F − E_V| are kept (the earliest on a tie). */
#include <math.h>

#include "unlearn/steps.h"

/* Shuffling streams of ctx->seed ("ret", "fgt"). */
#define SCRUB_STREAM_RETAIN 0x726574u
#define SCRUB_STREAM_FORGET 0x666774u
/* Batch for measuring errors when rewinding. */
#define SCRUB_EVAL_BATCH 256

static const ul_param_def scrub_params[] = {
    UL_PARAM_INT("epochs", "3", 1, 100000, "epochs E, each a min-step pass over R"),
    UL_PARAM_INT("msteps", "2", 0, 100000,
                 "the first msteps epochs also do a max-step pass over F first"),
    UL_PARAM_DOUBLE("lr", "5e-4", 0, 1000, "SGD learning rate at epoch 1"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0, 0.999999, "SGD momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0, 1, "L2 weight decay added to the gradient"),
    UL_PARAM_INT_LIST("lr_decay_epochs", "[3, 5, 9]", 0, 100000,
                      "the lr is multiplied by lr_decay_rate after each of these epochs"),
    UL_PARAM_DOUBLE("lr_decay_rate", "0.1", 0, 1, "factor of each lr decay"),
    UL_PARAM_DOUBLE("T", "4", 1e-3, 1000, "distillation temperature"),
    UL_PARAM_DOUBLE("gamma", "0.99", 0, 1000, "weight of the cross-entropy in the min-step"),
    UL_PARAM_DOUBLE("alpha", "0.001", 0, 1000, "weight of the KL term in the min-step"),
    UL_PARAM_INT("batch_size", "128", 1, 1 << 20, "retain batch size (min-steps)"),
    UL_PARAM_INT("forget_batch_size", "512", 1, 1 << 20, "forget batch size (max-steps)"),
    UL_PARAM_BOOL("rewind", "false",
                  "SCRUB+R: keep the epoch whose forget error is closest to the validation "
                  "error"),
};

static double scrub_lr(double lr0, double rate, int epoch1, const double *decay, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += epoch1 > decay[i];
    return lr0 * pow(rate, k);
}

/* |E_F − E_V| of the net now. */
static int scrub_gap(ul_net *net, const ul_method_ctx *ctx, double *gap, ul_error *err)
{
    double acc_f, acc_v;
    int rc = ul_evaluate(net, &ctx->forget, SCRUB_EVAL_BATCH, NULL, &acc_f, NULL, err);
    if (!rc)
        rc = ul_evaluate(net, &ctx->val, SCRUB_EVAL_BATCH, NULL, &acc_v, NULL, err);
    *gap = fabs((1.0 - acc_f) - (1.0 - acc_v));
    return rc;
}

static int scrub_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    ul_net *net = ctx->model;
    const int epochs = (int)ul_params_int(params, "epochs");
    const int msteps = (int)ul_params_int(params, "msteps");
    const double lr0 = ul_params_double(params, "lr");
    const double rate = ul_params_double(params, "lr_decay_rate");
    const float T = (float)ul_params_double(params, "T");
    const float gamma = (float)ul_params_double(params, "gamma");
    const float alpha = (float)ul_params_double(params, "alpha");
    const bool rewind = ul_params_bool(params, "rewind");
    const double *decay;
    const size_t n_decay = ul_params_list(params, "lr_decay_epochs", &decay);
    if (ctx->retain.n < 1 || ctx->forget.n < 1)
        return ul_errorf(err, UL_EINVAL,
                         "scrub: needs non-empty retain and forget sets (got %lld and %lld "
                         "examples)",
                         (long long)ctx->retain.n, (long long)ctx->forget.n);
    if (rewind && ctx->val.n < 1)
        return ul_errorf(err, UL_EINVAL, "scrub: rewind needs a validation set, which is empty");

    ul_optim_cfg o;
    ul_sgd_from_params(params, &o);
    size_t np;
    float *w = ul_net_params(net, &np);
    float *g = ul_net_grads(net, &np);
    ul_net *teacher = NULL, *best = NULL;
    ul_batcher rb = {0}, fb = {0};
    ul_loss_buf lb = {0};
    ul_optim opt = {0};
    int rc = UL_OK;
    if (!(teacher = ul_net_clone(ctx->original, err)) ||
        (rewind && !(best = ul_net_clone(net, err)))) {
        rc = err ? err->code : UL_ENOMEM;
        goto done;
    }
    if ((rc = ul_batcher_init(&rb, &ctx->retain, (int)ul_params_int(params, "batch_size"),
                              ctx->seed, SCRUB_STREAM_RETAIN, err)) ||
        (rc = ul_batcher_init(&fb, &ctx->forget, (int)ul_params_int(params, "forget_batch_size"),
                              ctx->seed, SCRUB_STREAM_FORGET, err)))
        goto done;
    const int Bmax = rb.batch_size > fb.batch_size ? rb.batch_size : fb.batch_size;
    if ((rc = ul_loss_buf_init(&lb, Bmax, ctx->retain.n_classes, err)) ||
        (rc = ul_net_reserve(net, Bmax, err)) || (rc = ul_net_reserve(teacher, Bmax, err)) ||
        (rc = ul_optim_init(&opt, &o, np, err)))
        goto done;

    const int max_epochs = msteps < epochs ? msteps : epochs;
    ul_meter m;
    ul_meter_init(&m, ctx, epochs, rb.steps * epochs + fb.steps * max_epochs);
    double best_gap = INFINITY;
    for (int e = 0; e < epochs; e++) {
        const double lr = scrub_lr(lr0, rate, e + 1, decay, n_decay);
        const bool max_step = e < msteps;
        const int64_t steps = rb.steps + (max_step ? fb.steps : 0);
        int64_t s = 0;
        int B;
        ul_meter_epoch(&m);
        while (max_step && (B = ul_batcher_next(&fb))) {
            ul_net_zero_grad(net);
            float loss = ul_step_distill(net, teacher, &lb, fb.x, NULL, B, T, 0.0f, -1.0f, NULL,
                                         NULL, NULL);
            if ((rc = ul_check_loss(loss, "scrub", e + 1, s + 1, lr, err)))
                goto done;
            ul_optim_step(&opt, w, g, NULL, lr);
            ul_meter_step(&m, e, s++, steps, loss, B, 0, lr);
        }
        while ((B = ul_batcher_next(&rb))) {
            int64_t correct = 0;
            ul_net_zero_grad(net);
            float loss = ul_step_distill(net, teacher, &lb, rb.x, rb.y, B, T, gamma, alpha, NULL,
                                         NULL, &correct);
            if ((rc = ul_check_loss(loss, "scrub", e + 1, s + 1, lr, err)))
                goto done;
            ul_optim_step(&opt, w, g, NULL, lr);
            ul_meter_step(&m, e, s++, steps, loss, B, correct, lr);
        }
        if (rewind) {
            double gap;
            if ((rc = scrub_gap(net, ctx, &gap, err)))
                goto done;
            if (gap < best_gap) {
                best_gap = gap;
                if ((rc = ul_net_copy_weights(best, net, err)))
                    goto done;
            }
        }
    }
    if (rewind)
        rc = ul_net_copy_weights(net, best, err);
done:
    ul_optim_free(&opt);
    ul_loss_buf_free(&lb);
    ul_batcher_free(&rb);
    ul_batcher_free(&fb);
    ul_net_free(teacher);
    ul_net_free(best);
    return rc;
}

static const ul_method_vtable scrub_vtable = {sizeof(ul_method_vtable), scrub_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "scrub", "1.0.0",
          "SCRUB: teacher-student distillation, max-steps on the forget set and min-steps on "
          "the retain set (optional rewind)",
          scrub_params, &scrub_vtable);
