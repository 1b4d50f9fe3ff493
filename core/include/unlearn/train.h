/* unlearn — optimisers, learning-rate schedules, data views and the
 * training loop, with PyTorch's update rules so hyperparameters carry over
 * from the PyTorch literature. Method plugins use these too. */
#ifndef UNLEARN_TRAIN_H
#define UNLEARN_TRAIN_H

#include "common.h"
#include "net.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ul_opt_kind { UL_OPT_SGD = 1, UL_OPT_ADAM } ul_opt_kind;

typedef struct ul_optim_cfg {
    ul_opt_kind kind;
    double lr;
    double momentum;      /* SGD */
    bool nesterov;        /* SGD */
    double weight_decay;  /* L2 added to the gradient (PyTorch, not AdamW) */
    double beta1, beta2, eps; /* Adam */
} ul_optim_cfg;

/* Optimiser state over a flat parameter vector of n floats; owns its
 * buffers (ul_optim_free). */
typedef struct ul_optim {
    ul_optim_cfg cfg;
    size_t n;
    float *buf;     /* SGD momentum buffer / Adam first moment */
    float *buf2;    /* Adam second moment */
    int64_t steps;  /* updates done */
} ul_optim;

UL_API int ul_optim_init(ul_optim *o, const ul_optim_cfg *cfg, size_t n, ul_error *err);
UL_API void ul_optim_free(ul_optim *o);
/* One update with learning rate lr (from the schedule):
 * SGD: g = grad + wd·θ; buf = μ·buf + g (buf = g at the first step);
 *      step = nesterov ? g + μ·buf : buf; θ -= lr·step.
 * Adam: g = grad + wd·θ; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
 *      θ -= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps).
 * mask, when not NULL, freezes every coordinate where mask[i] == 0: its
 * parameter and optimiser state are left untouched. */
UL_API void ul_optim_step(ul_optim *o, float *params, const float *grads, const uint8_t *mask,
                          double lr);

typedef enum ul_sched_kind { UL_SCHED_CONSTANT = 1, UL_SCHED_STEP, UL_SCHED_COSINE } ul_sched_kind;
typedef struct ul_sched_cfg {
    ul_sched_kind kind;
    int step_size;    /* STEP: epochs between decays */
    double gamma;     /* STEP: decay factor */
    double lr_min;    /* COSINE: final learning rate */
} ul_sched_cfg;
/* Learning rate for epoch e (0-based) of E, stepped per epoch as
 * PyTorch's StepLR / CosineAnnealingLR(T_max=E):
 * cosine: lr_min + (lr0 − lr_min)(1 + cos(π e / E))/2. */
UL_API double ul_sched_lr(const ul_sched_cfg *s, double lr0, int epoch, int epochs);

/* A view of examples idx[0..n-1] of an array of examples (not owned). */
typedef struct ul_data_view {
    const float *x;      /* (N_all, c, h, w) */
    const int32_t *y;    /* (N_all) */
    const int64_t *idx;  /* NULL: examples 0..n-1 */
    int64_t n;
    int c, h, w;
    int n_classes;
} ul_data_view;

static inline int64_t ul_view_index(const ul_data_view *v, int64_t i)
{
    return v->idx ? v->idx[i] : i;
}

/* Copies examples order[from..from+B-1] (order indexes the view) into x/y. */
UL_API void ul_view_gather(const ul_data_view *v, const int64_t *order, int64_t from, int B,
                           float *x, int32_t *y);

typedef struct ul_augment {
    int crop_padding;  /* random crop of the original size after zero-padding (0 = off) */
    bool hflip;        /* random horizontal flip with probability 1/2 */
} ul_augment;

/* Applies the augmentation in place to a batch (B, c, h, w). Padding uses,
 * per channel, the value a raw 0 pixel has after normalisation (pad_value). */
UL_API void ul_augment_batch(const ul_augment *a, float *x, int B, int c, int h, int w,
                             const float *pad_value, float *scratch, ul_rng *rng);

typedef struct ul_train_cfg {
    int epochs;
    int batch_size;
    ul_optim_cfg optim;
    ul_sched_cfg sched;
    ul_augment augment;
    float pad_value[3];
    uint64_t seed;     /* shuffling and augmentation */
} ul_train_cfg;

typedef struct ul_train_report {
    int epoch, epochs;
    int64_t step, steps_per_epoch;
    double loss, accuracy;      /* running means over the epoch so far */
    double images_per_s;
    double eta_s;               /* for the whole training */
    double lr;
    bool epoch_done;
} ul_train_report;

typedef void (*ul_train_progress_fn)(const ul_train_report *r, void *user);

typedef struct ul_train_result {
    double loss, accuracy;   /* last epoch's running means */
    double seconds;
    int64_t images;
} ul_train_result;

/* Trains net on the view with the recipe. A loss that becomes NaN or Inf
 * stops training with UL_EDIVERGED and a message saying when. */
UL_API int ul_train(ul_net *net, const ul_data_view *data, const ul_train_cfg *cfg,
                    ul_train_progress_fn progress, void *user, ul_train_result *res,
                    ul_error *err);

/* Mean cross-entropy and accuracy in eval mode. per_example_loss, when not
 * NULL, receives the loss of each example of the view (length n). */
UL_API int ul_evaluate(ul_net *net, const ul_data_view *data, int batch_size, double *loss,
                       double *accuracy, float *per_example_loss, ul_error *err);

#ifdef __cplusplus
}
#endif
#endif
