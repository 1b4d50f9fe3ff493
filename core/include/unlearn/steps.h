/* unlearn — building blocks of the unlearning methods.
 *
 * The method plugins (plugins/methods/) are short loops over these pieces:
 *  - ul_batcher: shuffled batches of a data view, gathered into buffers the
 *    batcher owns; for the forget set it can cycle forever;
 *  - ul_loss_buf + ul_step_xent / ul_step_distill: one forward of a net and
 *    the gradient of a SCALED loss ADDED to the net's parameter gradients,
 *    so a method composes its loss (α·CE(R) − (1−α)·CE(F), γ·CE + α·KL, …)
 *    by calling several steps between ul_net_zero_grad and ul_optim_step;
 *  - ul_check_loss: the UL_EDIVERGED error every method reports the same way;
 *  - ul_meter: progress reports through ctx->progress;
 *  - the pieces several methods share: fine-tuning on R (finetune,
 *    l1sparse), the random-label fine-tune (random_label, salun) and the
 *    top-fraction mask of SalUn.
 *
 * Allocation happens only in the *_init functions, once per unlearn() call;
 * the step functions never allocate. Nets, views and contexts passed in stay
 * owned by the caller. */
#ifndef UNLEARN_STEPS_H
#define UNLEARN_STEPS_H

#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- batches ----------------------------------------------------------------
 * Batches of min(batch_size, n) examples in a random order drawn afresh for
 * each epoch. As in ul_train, a trailing batch of ONE example is dropped
 * when the view has more than one (BatchNorm's unbiased variance needs two);
 * a view of exactly one example gives one batch of one. */
typedef struct ul_batcher {
    ul_data_view view;  /* a copy of the caller's view; its arrays are not owned */
    int batch_size;     /* largest batch: min(requested, n) */
    int64_t steps;      /* batches per epoch (0 when the view is empty) */
    int64_t step;       /* batches handed out in the current epoch */
    int64_t *order;     /* owned: the current epoch's permutation of 0..n-1 */
    float *x;           /* owned: the current batch, (batch_size, c, h, w) */
    int32_t *y;         /* owned: its labels, (batch_size) */
    ul_rng rng;
} ul_batcher;

/* The shuffling stream is (seed, stream): methods pass ctx->seed and a
 * constant of their own so that R and F orders are independent. */
UL_API int ul_batcher_init(ul_batcher *b, const ul_data_view *v, int batch_size, uint64_t seed,
                           uint64_t stream, ul_error *err);
UL_API void ul_batcher_free(ul_batcher *b);
/* Gathers the next batch of the epoch into b->x / b->y and returns its size.
 * At the end of an epoch it returns 0 and reshuffles, so
 * `while ((B = ul_batcher_next(&b)))` is one epoch and the next loop the
 * next epoch. */
UL_API int ul_batcher_next(ul_batcher *b);
/* As ul_batcher_next, but an exhausted epoch is followed at once by a new
 * shuffled one: a loader cycled to pair with another (NegGrad+). Returns 0
 * only for an empty view. */
UL_API int ul_batcher_next_cycled(ul_batcher *b);

/* ---- loss steps ---------------------------------------------------------------
 * Scratch for the loss of one batch of up to max_batch examples of K classes. */
typedef struct ul_loss_buf {
    int max_batch, K;
    float *probs;    /* owned: (max_batch, K) */
    float *dlogits;  /* owned: (max_batch, K) */
} ul_loss_buf;

UL_API int ul_loss_buf_init(ul_loss_buf *lb, int max_batch, int K, ul_error *err);
UL_API void ul_loss_buf_free(ul_loss_buf *lb);

/* Runs net on x (B examples; train selects train-mode BatchNorm) and ADDS
 * scale · ∂CE/∂θ to the net's parameter gradients (nothing is zeroed).
 * Returns the mean cross-entropy (unscaled); *correct, when not NULL, is
 * increased by the number of examples whose argmax equals y. The net must
 * be reserved for B examples and B <= lb->max_batch. */
UL_API float ul_step_xent(ul_net *net, ul_loss_buf *lb, const float *x, const int32_t *y, int B,
                          bool train, float scale, int64_t *correct);

/* SCRUB's distillation step: the teacher runs on x in eval mode, the student
 * in train mode, and scale_ce · ∂CE(student)/∂θ + scale_kl · ∂KL/∂θ is ADDED
 * to the student's gradients, KL = T² · mean_n Σ_c p_T(t)·log(p_T(t)/p_T(s))
 * (ul_kl_div_forward). y may be NULL when scale_ce is 0 (then *correct is
 * not touched). Returns scale_ce·CE + scale_kl·KL; *ce, *kl and *correct
 * (each may be NULL) get the parts and the student's hits, as in
 * ul_step_xent. Both nets must be reserved for B examples. */
UL_API float ul_step_distill(ul_net *student, ul_net *teacher, ul_loss_buf *lb, const float *x,
                             const int32_t *y, int B, float T, float scale_ce, float scale_kl,
                             float *ce, float *kl, int64_t *correct);

/* UL_OK when loss is finite; otherwise UL_EDIVERGED with
 * "<method>: loss became NaN at epoch e step s; lower lr (now <lr>)".
 * epoch and step are 1-based. */
UL_API int ul_check_loss(double loss, const char *method, int epoch, int64_t step, double lr,
                         ul_error *err);

/* ---- progress ----------------------------------------------------------------
 * Running means of one epoch and the ETA, reported through ctx->progress
 * (nothing happens when it is NULL). total_steps is for the whole call. */
typedef struct ul_meter {
    ul_train_progress_fn fn;
    void *user;
    int epochs;
    int64_t total_steps, done_steps, images;
    double t0;
    double sum_loss;        /* this epoch */
    int64_t seen, correct;  /* this epoch */
} ul_meter;

UL_API void ul_meter_init(ul_meter *m, const ul_method_ctx *ctx, int epochs, int64_t total_steps);
/* Resets the epoch's running means. */
UL_API void ul_meter_epoch(ul_meter *m);
/* One step of B examples with mean loss `loss` and `correct` hits; epoch and
 * step are 0-based, steps is this epoch's number of steps. */
UL_API void ul_meter_step(ul_meter *m, int epoch, int64_t step, int64_t steps, double loss, int B,
                          int64_t correct, double lr);

/* ---- shared by several methods ----------------------------------------------- */

/* SGD (PyTorch's rule, no Nesterov) from a method's "lr", "momentum" and
 * "weight_decay" parameters. */
UL_API void ul_sgd_from_params(const ul_params *p, ul_optim_cfg *o);

/* Fine-tunes ctx->model on the retain set for `epochs` passes of batch_size
 * with SGD and a constant lr, minimising CE + a_e·‖θ‖₁ where
 * a_e = l1_alpha · (1 − e/l1_epochs) for 0-based epochs e < l1_epochs and 0
 * afterwards (l1sparse; l1_alpha = 0 is plain fine-tuning). */
UL_API int ul_finetune_retain(const ul_method_ctx *ctx, const char *method, int epochs,
                              int batch_size, const ul_optim_cfg *optim, double l1_alpha,
                              int l1_epochs, ul_error *err);

/* A label drawn uniformly from the K−1 classes other than y. */
UL_API int32_t ul_random_wrong_label(ul_rng *rng, int32_t y, int K);

/* Random-label fine-tuning (random_label, salun): every epoch each forget
 * example gets a fresh uniformly random WRONG label, and R ∪ F′ is shuffled
 * jointly into batches of batch_size — the single shuffled loader over
 * ConcatDataset([forget relabelled, retain]) of the reference code
 * (OPTML-Group/Unlearn-Sparse, unlearn/RL.py), except that a relabelled
 * example never keeps its own class. mask (may be NULL) is passed to
 * ul_optim_step: coordinates with mask[i] == 0 and their optimizer state
 * never change. */
UL_API int ul_random_label_run(const ul_method_ctx *ctx, const char *method, int epochs,
                               int batch_size, const ul_optim_cfg *optim, const uint8_t *mask,
                               ul_error *err);

/* mask[i] = 1 for the k = floor(ratio·n) coordinates of largest |g[i]|
 * (ties at the threshold go to the lower indices), 0 elsewhere. O(n): a
 * three-way quickselect on scratch (n floats, caller-owned). Returns k. */
UL_API size_t ul_top_fraction_mask(const float *g, size_t n, double ratio, uint8_t *mask,
                                   float *scratch);

#ifdef __cplusplus
}
#endif
#endif
