#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unlearn/ops.h"
#include "unlearn/train.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void ul_view_gather(const ul_data_view *v, const int64_t *order, int64_t from, int B, float *x,
                    int32_t *y)
{
    const int64_t d = (int64_t)v->c * v->h * v->w;
    for (int b = 0; b < B; b++) {
        int64_t i = ul_view_index(v, order ? order[from + b] : from + b);
        memcpy(x + (int64_t)b * d, v->x + i * d, (size_t)d * sizeof(float));
        if (y)
            y[b] = v->y[i];
    }
}

void ul_augment_batch(const ul_augment *a, float *x, int B, int c, int h, int w,
                      const float *pad_value, float *scratch, ul_rng *rng)
{
    const int pad = a->crop_padding;
    const size_t plane = (size_t)h * w;
    for (int b = 0; b < B; b++) {
        float *img = x + (size_t)b * c * plane;
        int dy = pad > 0 ? (int)ul_rng_below(rng, (uint32_t)(2 * pad + 1)) - pad : 0;
        int dx = pad > 0 ? (int)ul_rng_below(rng, (uint32_t)(2 * pad + 1)) - pad : 0;
        bool flip = a->hflip && (ul_rng_u32(rng) & 1u);
        if (dy == 0 && dx == 0 && !flip)
            continue;
        memcpy(scratch, img, (size_t)c * plane * sizeof(float));
        for (int ch = 0; ch < c; ch++) {
            const float *src = scratch + ch * plane;
            float *dst = img + ch * plane;
            for (int i = 0; i < h; i++)
                for (int j = 0; j < w; j++) {
                    int si = i + dy, sj = j + dx;
                    float val = (si < 0 || si >= h || sj < 0 || sj >= w) ? pad_value[ch]
                                                                         : src[si * w + sj];
                    dst[i * w + (flip ? w - 1 - j : j)] = val;
                }
        }
    }
}

static int argmax_row(const float *z, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > z[best])
            best = k;
    return best;
}

int ul_train(ul_net *net, const ul_data_view *data, const ul_train_cfg *cfg,
             ul_train_progress_fn progress, void *user, ul_train_result *res, ul_error *err)
{
    const int K = data->n_classes, Bmax = cfg->batch_size;
    const int64_t n = data->n, d = (int64_t)data->c * data->h * data->w;
    if (n < 2)
        return ul_errorf(err, UL_EINVAL, "training needs at least 2 examples, got %lld",
                         (long long)n);
    if (Bmax < 2)
        return ul_errorf(err, UL_EINVAL, "batch size must be at least 2 (BatchNorm), got %d",
                         Bmax);
    int rc = ul_net_reserve(net, Bmax, err);
    if (rc)
        return rc;

    size_t np;
    float *params = ul_net_params(net, &np);
    float *grads = ul_net_grads(net, &np);
    ul_optim opt;
    if ((rc = ul_optim_init(&opt, &cfg->optim, np, err)))
        return rc;
    float *x = malloc((size_t)Bmax * d * sizeof(float));
    float *aug = malloc((size_t)d * sizeof(float));
    int32_t *y = malloc((size_t)Bmax * sizeof(int32_t));
    float *probs = malloc((size_t)Bmax * K * sizeof(float));
    float *dlogits = malloc((size_t)Bmax * K * sizeof(float));
    int64_t *order = malloc((size_t)n * sizeof(int64_t));
    if (!x || !aug || !y || !probs || !dlogits || !order) {
        rc = ul_errorf(err, UL_ENOMEM, "training: out of memory for batch buffers");
        goto done;
    }

    ul_rng rng;
    ul_rng_seed(&rng, cfg->seed, 0x7261696eu);
    /* A last batch of one example would make BatchNorm's unbiased variance
     * undefined; it is dropped (as with drop_last for that batch only). */
    const int64_t steps = n / Bmax + ((n % Bmax) >= 2 ? 1 : 0);
    const double t0 = now_s();
    const int64_t total_steps = steps * cfg->epochs;
    int64_t images = 0;
    double ep_loss = 0, ep_acc = 0;
    for (int e = 0; e < cfg->epochs; e++) {
        const double lr = ul_sched_lr(&cfg->sched, cfg->optim.lr, e, cfg->epochs);
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        ul_rng_shuffle_i64(&rng, order, n);
        double sum_loss = 0;
        int64_t seen = 0, correct = 0;
        for (int64_t s = 0; s < steps; s++) {
            int64_t from = s * Bmax;
            int B = (int)(n - from < Bmax ? n - from : Bmax);
            ul_view_gather(data, order, from, B, x, y);
            if (cfg->augment.crop_padding > 0 || cfg->augment.hflip)
                ul_augment_batch(&cfg->augment, x, B, data->c, data->h, data->w,
                                 cfg->pad_value, aug, &rng);
            const float *logits = ul_net_forward(net, x, B, true);
            float loss = ul_softmax_xent_forward(probs, NULL, logits, y, B, K);
            if (!isfinite(loss)) {
                rc = ul_errorf(err, UL_EDIVERGED,
                               "training diverged: the loss became %s at epoch %d, step %lld "
                               "(lr %g); lower the learning rate (train.lr)",
                               isnan(loss) ? "NaN" : "Inf", e + 1, (long long)s + 1, lr);
                goto done;
            }
            for (int b = 0; b < B; b++)
                correct += argmax_row(logits + (size_t)b * K, K) == y[b];
            ul_net_zero_grad(net);
            memset(dlogits, 0, (size_t)B * K * sizeof(float));
            ul_softmax_xent_backward(dlogits, probs, y, B, K, 1.0f);
            ul_net_backward(net, dlogits);
            ul_optim_step(&opt, params, grads, NULL, lr);
            sum_loss += (double)loss * B;
            seen += B;
            images += B;
            ep_loss = sum_loss / (double)seen;
            ep_acc = (double)correct / (double)seen;
            if (progress) {
                double el = now_s() - t0;
                int64_t done_steps = (int64_t)e * steps + s + 1;
                ul_train_report r = {e + 1, cfg->epochs, s + 1, steps, ep_loss, ep_acc,
                                     el > 0 ? (double)images / el : 0,
                                     el / (double)done_steps * (double)(total_steps - done_steps),
                                     lr, s + 1 == steps};
                progress(&r, user);
            }
        }
    }
    if (res) {
        res->loss = ep_loss;
        res->accuracy = ep_acc;
        res->seconds = now_s() - t0;
        res->images = images;
    }
done:
    ul_optim_free(&opt);
    free(x);
    free(aug);
    free(y);
    free(probs);
    free(dlogits);
    free(order);
    return rc;
}

int ul_evaluate(ul_net *net, const ul_data_view *data, int batch_size, double *loss,
                double *accuracy, float *per_example_loss, ul_error *err)
{
    const int K = data->n_classes;
    const int64_t n = data->n, d = (int64_t)data->c * data->h * data->w;
    if (batch_size < 1)
        batch_size = 256;
    int rc = ul_net_reserve(net, batch_size, err);
    if (rc)
        return rc;
    float *x = malloc((size_t)batch_size * d * sizeof(float));
    int32_t *y = malloc((size_t)batch_size * sizeof(int32_t));
    float *probs = malloc((size_t)batch_size * K * sizeof(float));
    float *losses = malloc((size_t)batch_size * sizeof(float));
    if (!x || !y || !probs || !losses) {
        rc = ul_errorf(err, UL_ENOMEM, "evaluation: out of memory");
        goto done;
    }
    double sum = 0;
    int64_t correct = 0;
    for (int64_t from = 0; from < n; from += batch_size) {
        int B = (int)(n - from < batch_size ? n - from : batch_size);
        ul_view_gather(data, NULL, from, B, x, y);
        const float *logits = ul_net_infer(net, x, B);
        ul_softmax_xent_forward(probs, losses, logits, y, B, K);
        for (int b = 0; b < B; b++) {
            sum += losses[b];
            correct += argmax_row(logits + (size_t)b * K, K) == y[b];
            if (per_example_loss)
                per_example_loss[from + b] = losses[b];
        }
    }
    if (loss)
        *loss = n ? sum / (double)n : 0;
    if (accuracy)
        *accuracy = n ? (double)correct / (double)n : 0;
done:
    free(x);
    free(y);
    free(probs);
    free(losses);
    return rc;
}
