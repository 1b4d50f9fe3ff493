/* retrain — the gold standard: a fresh model trained from scratch on the
 * retain set with the recipe the original model was trained with
 * (REFERENCE.md, Methods). */
#include "unlearn/plugin.h"

/* RNG stream of ctx->seed for the fresh initialisation ("init"). */
#define RETRAIN_STREAM_INIT 0x696e6974u

static const ul_param_def retrain_params[] = {
    UL_PARAM_INT("epochs", "0", 0, 100000,
                 "training epochs; 0 = the recipe's, i.e. as many as the original model had"),
};

static int retrain_unlearn(const ul_method_ctx *ctx, const ul_params *params, ul_error *err)
{
    if (!ctx->recipe)
        return ul_errorf(err, UL_EINVAL, "retrain: no training recipe was given");
    ul_train_cfg cfg = *ctx->recipe;
    const int epochs = (int)ul_params_int(params, "epochs");
    if (epochs > 0)
        cfg.epochs = epochs;
    /* Shuffling follows the method's seed, so repeats with other seeds vary
     * the order as well as the initialisation. */
    cfg.seed = ctx->seed;
    ul_rng rng;
    ul_rng_seed(&rng, ctx->seed, RETRAIN_STREAM_INIT);
    ul_net_reinit(ctx->model, &rng);
    int rc = ul_train(ctx->model, &ctx->retain, &cfg, ctx->progress, ctx->progress_user, NULL,
                      err);
    if (rc)
        ul_error_prefix(err, "retrain");
    return rc;
}

static const ul_method_vtable retrain_vtable = {sizeof(ul_method_vtable), retrain_unlearn};

UL_PLUGIN(UL_KIND_METHOD, "retrain", "1.0.0",
          "retrain from scratch on the retain set with the original recipe (gold standard)",
          retrain_params, &retrain_vtable);
