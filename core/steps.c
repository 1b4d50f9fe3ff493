/* Building blocks of the unlearning methods (unlearn/steps.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unlearn/steps.h"

/* Shuffling streams of ctx->seed, distinct from each other and from those
 * of the plugins ("retn", "rlbl" in ASCII). */
#define STREAM_FINETUNE 0x7265746eu
#define STREAM_RANDOM_LABEL 0x726c626cu

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int argmax_row(const float *z, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > z[best])
            best = k;
    return best;
}

/* Batches per epoch of n examples in batches of B (B <= n): a trailing
 * batch of one is dropped unless it is the only one (see steps.h). */
static int64_t steps_per_epoch(int64_t n, int B)
{
    if (n <= 0)
        return 0;
    if (n == 1)
        return 1;
    return n / B + ((n % B) >= 2 ? 1 : 0);
}

/* ---- batches ---------------------------------------------------------------- */

static void batcher_shuffle(ul_batcher *b)
{
    for (int64_t i = 0; i < b->view.n; i++)
        b->order[i] = i;
    ul_rng_shuffle_i64(&b->rng, b->order, b->view.n);
    b->step = 0;
}

int ul_batcher_init(ul_batcher *b, const ul_data_view *v, int batch_size, uint64_t seed,
                    uint64_t stream, ul_error *err)
{
    memset(b, 0, sizeof *b);
    if (batch_size < 1)
        return ul_errorf(err, UL_EINVAL, "batch size must be positive, got %d", batch_size);
    b->view = *v;
    b->batch_size = v->n < batch_size ? (int)(v->n > 0 ? v->n : 1) : batch_size;
    b->steps = steps_per_epoch(v->n, b->batch_size);
    const size_t d = (size_t)v->c * v->h * v->w;
    b->order = malloc((size_t)(v->n > 0 ? v->n : 1) * sizeof *b->order);
    b->x = malloc((size_t)b->batch_size * d * sizeof *b->x);
    b->y = malloc((size_t)b->batch_size * sizeof *b->y);
    if (!b->order || !b->x || !b->y) {
        ul_batcher_free(b);
        return ul_errorf(err, UL_ENOMEM, "out of memory for batches of %d examples", batch_size);
    }
    ul_rng_seed(&b->rng, seed, stream);
    batcher_shuffle(b);
    return UL_OK;
}

void ul_batcher_free(ul_batcher *b)
{
    free(b->order);
    free(b->x);
    free(b->y);
    b->order = NULL;
    b->x = NULL;
    b->y = NULL;
}

int ul_batcher_next(ul_batcher *b)
{
    if (b->step >= b->steps) {
        batcher_shuffle(b);
        return 0;
    }
    const int64_t from = b->step * b->batch_size;
    const int B = (int)(b->view.n - from < b->batch_size ? b->view.n - from : b->batch_size);
    ul_view_gather(&b->view, b->order, from, B, b->x, b->y);
    b->step++;
    return B;
}

int ul_batcher_next_cycled(ul_batcher *b)
{
    int B = ul_batcher_next(b);
    return B ? B : ul_batcher_next(b);
}

/* ---- loss steps -------------------------------------------------------------- */

int ul_loss_buf_init(ul_loss_buf *lb, int max_batch, int K, ul_error *err)
{
    lb->max_batch = max_batch;
    lb->K = K;
    lb->probs = malloc((size_t)max_batch * K * sizeof(float));
    lb->dlogits = malloc((size_t)max_batch * K * sizeof(float));
    if (!lb->probs || !lb->dlogits) {
        ul_loss_buf_free(lb);
        return ul_errorf(err, UL_ENOMEM, "out of memory for loss buffers");
    }
    return UL_OK;
}

void ul_loss_buf_free(ul_loss_buf *lb)
{
    free(lb->probs);
    free(lb->dlogits);
    lb->probs = lb->dlogits = NULL;
}

float ul_step_xent(ul_net *net, ul_loss_buf *lb, const float *x, const int32_t *y, int B,
                   bool train, float scale, int64_t *correct)
{
    const int K = lb->K;
    const float *logits = ul_net_forward(net, x, B, train);
    float loss = ul_softmax_xent_forward(lb->probs, NULL, logits, y, B, K);
    if (correct)
        for (int b = 0; b < B; b++)
            *correct += argmax_row(logits + (size_t)b * K, K) == y[b];
    if (scale != 0.0f) {
        memset(lb->dlogits, 0, (size_t)B * K * sizeof(float));
        ul_softmax_xent_backward(lb->dlogits, lb->probs, y, B, K, scale);
        ul_net_backward(net, lb->dlogits);
    }
    return loss;
}

float ul_step_distill(ul_net *student, ul_net *teacher, ul_loss_buf *lb, const float *x,
                      const int32_t *y, int B, float T, float scale_ce, float scale_kl,
                      float *ce, float *kl, int64_t *correct)
{
    const int K = lb->K;
    /* The teacher's logits stay valid until its next forward, which comes
     * after the student's backward. */
    const float *t = ul_net_infer(teacher, x, B);
    const float *s = ul_net_forward(student, x, B, true);
    float l_kl = ul_kl_div_forward(s, t, B, K, T);
    float l_ce = (y && scale_ce != 0.0f) ? ul_softmax_xent_forward(lb->probs, NULL, s, y, B, K)
                                         : 0.0f;
    memset(lb->dlogits, 0, (size_t)B * K * sizeof(float));
    if (y && scale_ce != 0.0f)
        ul_softmax_xent_backward(lb->dlogits, lb->probs, y, B, K, scale_ce);
    if (y && correct)
        for (int b = 0; b < B; b++)
            *correct += argmax_row(s + (size_t)b * K, K) == y[b];
    if (scale_kl != 0.0f)
        ul_kl_div_backward(lb->dlogits, s, t, B, K, T, scale_kl);
    ul_net_backward(student, lb->dlogits);
    if (ce)
        *ce = l_ce;
    if (kl)
        *kl = l_kl;
    return scale_ce * l_ce + scale_kl * l_kl;
}

int ul_check_loss(double loss, const char *method, int epoch, int64_t step, double lr,
                  ul_error *err)
{
    if (isfinite(loss))
        return UL_OK;
    return ul_errorf(err, UL_EDIVERGED, "%s: loss became %s at epoch %d step %lld; lower lr (now %g)",
                     method, isnan(loss) ? "NaN" : "Inf", epoch, (long long)step, lr);
}

/* ---- progress ------------------------------------------------------------------ */

void ul_meter_init(ul_meter *m, const ul_method_ctx *ctx, int epochs, int64_t total_steps)
{
    memset(m, 0, sizeof *m);
    m->fn = ctx->progress;
    m->user = ctx->progress_user;
    m->epochs = epochs;
    m->total_steps = total_steps;
    m->t0 = now_s();
}

void ul_meter_epoch(ul_meter *m)
{
    m->sum_loss = 0;
    m->seen = m->correct = 0;
}

void ul_meter_step(ul_meter *m, int epoch, int64_t step, int64_t steps, double loss, int B,
                   int64_t correct, double lr)
{
    m->sum_loss += loss * B;
    m->seen += B;
    m->correct += correct;
    m->images += B;
    m->done_steps++;
    if (!m->fn)
        return;
    const double el = now_s() - m->t0;
    const int64_t left = m->total_steps > m->done_steps ? m->total_steps - m->done_steps : 0;
    ul_train_report r = {epoch + 1,
                         m->epochs,
                         step + 1,
                         steps,
                         m->sum_loss / (double)m->seen,
                         (double)m->correct / (double)m->seen,
                         el > 0 ? (double)m->images / el : 0,
                         el / (double)m->done_steps * (double)left,
                         lr,
                         step + 1 == steps};
    m->fn(&r, m->user);
}

/* ---- shared by several methods -------------------------------------------------- */

void ul_sgd_from_params(const ul_params *p, ul_optim_cfg *o)
{
    memset(o, 0, sizeof *o);
    o->kind = UL_OPT_SGD;
    o->lr = ul_params_double(p, "lr");
    o->momentum = ul_params_double(p, "momentum");
    o->weight_decay = ul_params_double(p, "weight_decay");
}

int ul_finetune_retain(const ul_method_ctx *ctx, const char *method, int epochs,
                       int batch_size, const ul_optim_cfg *optim, double l1_alpha,
                       int l1_epochs, ul_error *err)
{
    ul_net *net = ctx->model;
    if (ctx->retain.n < 1)
        return ul_errorf(err, UL_EINVAL, "%s: the retain set is empty", method);
    size_t np;
    float *params = ul_net_params(net, &np);
    float *grads = ul_net_grads(net, &np);
    ul_batcher rb = {0};
    ul_loss_buf lb = {0};
    ul_optim opt = {0};
    int rc;
    if ((rc = ul_batcher_init(&rb, &ctx->retain, batch_size, ctx->seed, STREAM_FINETUNE, err)) ||
        (rc = ul_loss_buf_init(&lb, rb.batch_size, ctx->retain.n_classes, err)) ||
        (rc = ul_net_reserve(net, rb.batch_size, err)) ||
        (rc = ul_optim_init(&opt, optim, np, err)))
        goto done;

    ul_meter m;
    ul_meter_init(&m, ctx, epochs, rb.steps * epochs);
    for (int e = 0; e < epochs; e++) {
        const float a_e = e < l1_epochs ? (float)(l1_alpha * (1.0 - (double)e / l1_epochs)) : 0.0f;
        ul_meter_epoch(&m);
        int B;
        for (int64_t s = 0; (B = ul_batcher_next(&rb)); s++) {
            int64_t correct = 0;
            ul_net_zero_grad(net);
            double loss = ul_step_xent(net, &lb, rb.x, rb.y, B, true, 1.0f, &correct);
            if (a_e > 0.0f)
                loss += ul_l1_penalty(grads, params, np, a_e);
            if ((rc = ul_check_loss(loss, method, e + 1, s + 1, optim->lr, err)))
                goto done;
            ul_optim_step(&opt, params, grads, NULL, optim->lr);
            ul_meter_step(&m, e, s, rb.steps, loss, B, correct, optim->lr);
        }
    }
done:
    ul_optim_free(&opt);
    ul_loss_buf_free(&lb);
    ul_batcher_free(&rb);
    return rc;
}

int32_t ul_random_wrong_label(ul_rng *rng, int32_t y, int K)
{
    return (int32_t)((y + 1 + (int32_t)ul_rng_below(rng, (uint32_t)(K - 1))) % K);
}

int ul_random_label_run(const ul_method_ctx *ctx, const char *method, int epochs,
                        int batch_size, const ul_optim_cfg *optim, const uint8_t *mask,
                        ul_error *err)
{
    ul_net *net = ctx->model;
    const ul_data_view *F = &ctx->forget, *R = &ctx->retain;
    const int K = F->n_classes;
    const int64_t nf = F->n, n = F->n + R->n;
    if (nf < 1)
        return ul_errorf(err, UL_EINVAL, "%s: the forget set is empty", method);
    if (K < 2)
        return ul_errorf(err, UL_EINVAL, "%s: random wrong labels need at least 2 classes",
                         method);
    if (batch_size < 1)
        return ul_errorf(err, UL_EINVAL, "%s: batch size must be positive", method);
    const int Bmax = n < batch_size ? (int)n : batch_size;
    const int64_t steps = steps_per_epoch(n, Bmax);
    const size_t d = (size_t)F->c * F->h * F->w;
    size_t np;
    float *params = ul_net_params(net, &np);
    float *grads = ul_net_grads(net, &np);

    ul_loss_buf lb = {0};
    ul_optim opt = {0};
    int64_t *order = malloc((size_t)n * sizeof *order);
    int32_t *relabel = malloc((size_t)nf * sizeof *relabel);
    float *x = malloc((size_t)Bmax * d * sizeof *x);
    int32_t *y = malloc((size_t)Bmax * sizeof *y);
    int rc = UL_OK;
    if (!order || !relabel || !x || !y) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for batches", method);
        goto done;
    }
    if ((rc = ul_loss_buf_init(&lb, Bmax, K, err)) || (rc = ul_net_reserve(net, Bmax, err)) ||
        (rc = ul_optim_init(&opt, optim, np, err)))
        goto done;

    ul_rng rng;
    ul_rng_seed(&rng, ctx->seed, STREAM_RANDOM_LABEL);
    ul_meter m;
    ul_meter_init(&m, ctx, epochs, steps * epochs);
    for (int e = 0; e < epochs; e++) {
        /* Positions 0..nf-1 of the joint order are the forget examples. */
        for (int64_t i = 0; i < nf; i++)
            relabel[i] = ul_random_wrong_label(&rng, F->y[ul_view_index(F, i)], K);
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        ul_rng_shuffle_i64(&rng, order, n);
        ul_meter_epoch(&m);
        for (int64_t s = 0; s < steps; s++) {
            const int64_t from = s * Bmax;
            const int B = (int)(n - from < Bmax ? n - from : Bmax);
            for (int b = 0; b < B; b++) {
                const int64_t j = order[from + b];
                if (j < nf) {
                    ul_view_gather(F, NULL, j, 1, x + (size_t)b * d, NULL);
                    y[b] = relabel[j];
                } else {
                    ul_view_gather(R, NULL, j - nf, 1, x + (size_t)b * d, y + b);
                }
            }
            int64_t correct = 0;
            ul_net_zero_grad(net);
            double loss = ul_step_xent(net, &lb, x, y, B, true, 1.0f, &correct);
            if ((rc = ul_check_loss(loss, method, e + 1, s + 1, optim->lr, err)))
                goto done;
            ul_optim_step(&opt, params, grads, mask, optim->lr);
            ul_meter_step(&m, e, s, steps, loss, B, correct, optim->lr);
        }
    }
done:
    ul_optim_free(&opt);
    ul_loss_buf_free(&lb);
    free(order);
    free(relabel);
    free(x);
    free(y);
    return rc;
}

/* ---- SalUn's mask ------------------------------------------------------------------ */

static void swap_f(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

static float median3(float a, float b, float c)
{
    if (a > b)
        swap_f(&a, &b);
    if (b > c)
        swap_f(&b, &c);
    return a > b ? a : b;
}

/* The value of rank k (0-based, ascending) of a[0..n-1], which is permuted.
 * Three-way partitioning keeps it linear when many values are equal, as
 * the exact zeros of dead ReLU units' gradients are. */
static float select_rank(float *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        const float p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < p)
                swap_f(&a[lt++], &a[i++]);
            else if (a[i] > p)
                swap_f(&a[i], &a[--gt]);
            else
                i++;
        }
        if (k < lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return p;
    }
    return a[lo];
}

size_t ul_top_fraction_mask(const float *g, size_t n, double ratio, uint8_t *mask,
                            float *scratch)
{
    size_t k = ratio <= 0.0 ? 0 : ratio >= 1.0 ? n : (size_t)floor(ratio * (double)n);
    if (k == 0 || k == n) {
        memset(mask, k ? 1 : 0, n);
        return k;
    }
    for (size_t i = 0; i < n; i++)
        scratch[i] = fabsf(g[i]);
    const float t = select_rank(scratch, n, n - k);
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        mask[i] = fabsf(g[i]) > t;
        c += mask[i];
    }
    for (size_t i = 0; i < n && c < k; i++)
        if (!mask[i] && fabsf(g[i]) == t) {
            mask[i] = 1;
            c++;
        }
    return k;
}
