#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "ops_local.h"
#include "unlearn/train.h"

int ul_optim_init(ul_optim *o, const ul_optim_cfg *cfg, size_t n, ul_error *err)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    bool second = cfg->kind == UL_OPT_ADAM;
    o->buf = calloc(n ? n : 1, sizeof(float));
    o->buf2 = second ? calloc(n ? n : 1, sizeof(float)) : NULL;
    if (!o->buf || (second && !o->buf2)) {
        ul_optim_free(o);
        return ul_errorf(err, UL_ENOMEM, "optimizer: out of memory for %zu parameters", n);
    }
    return UL_OK;
}

void ul_optim_free(ul_optim *o)
{
    free(o->buf);
    free(o->buf2);
    o->buf = o->buf2 = NULL;
}

/* SGD over n unmasked parameters, one loop per variant so that none
 * carries a branch and each vectorises: per parameter d = g + wd·p, with
 * momentum the buffer b = d on the first step, else mu·b + d, the step
 * d + mu·b (Nesterov) or b, and p −= lr·step — the operations of the
 * masked loop in sgd_step, in its order (no FMA in either build). */
UL_VEC_CLONES static void sgd_span(float *restrict p, const float *restrict g,
                                   float *restrict buf, size_t n, float lr, float wd, float mu,
                                   bool first, bool nesterov)
{
    if (mu == 0.0f) {
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * (g[i] + wd * p[i]);
    } else if (first) {
        for (size_t i = 0; i < n; i++) {
            const float d = g[i] + wd * p[i];
            buf[i] = d;
            p[i] -= lr * (nesterov ? d + mu * d : d);
        }
    } else if (nesterov) {
        for (size_t i = 0; i < n; i++) {
            const float d = g[i] + wd * p[i], b = mu * buf[i] + d;
            buf[i] = b;
            p[i] -= lr * (d + mu * b);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const float b = mu * buf[i] + (g[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

static void sgd_step(ul_optim *o, float *p, const float *g, const uint8_t *mask, float lr)
{
    const float wd = (float)o->cfg.weight_decay, mu = (float)o->cfg.momentum;
    const bool first = o->steps == 0, nesterov = o->cfg.nesterov;
    float *buf = o->buf;
    const size_t n = o->n;
    if (!mask) {
        /* Each thread a run of whole 16-float pieces. */
#pragma omp parallel
        {
            const size_t T = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
            const size_t per = (n + T - 1) / T, i0 = (t * per + 15) & ~(size_t)15;
            const size_t i1 = ((t + 1) * per + 15) & ~(size_t)15;
            if (i0 < n)
                sgd_span(p + i0, g + i0, buf + i0, (i1 < n ? i1 : n) - i0, lr, wd, mu, first,
                         nesterov);
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        if (!mask[i])
            continue;
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            buf[i] = first ? d : mu * buf[i] + d;
            d = nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

static void adam_step(ul_optim *o, float *p, const float *g, const uint8_t *mask, float lr)
{
    const double t = (double)(o->steps + 1);
    const float b1 = (float)o->cfg.beta1, b2 = (float)o->cfg.beta2, eps = (float)o->cfg.eps;
    const float wd = (float)o->cfg.weight_decay;
    const float step = (float)(lr / (1.0 - pow(o->cfg.beta1, t)));
    const float bc2 = (float)sqrt(1.0 - pow(o->cfg.beta2, t));
    float *m = o->buf, *v = o->buf2;
    const size_t n = o->n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i])
            continue;
        float d = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * d;
        v[i] = b2 * v[i] + (1.0f - b2) * d * d;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2 + eps);
    }
}

void ul_optim_step(ul_optim *o, float *params, const float *grads, const uint8_t *mask,
                   double lr)
{
    if (o->cfg.kind == UL_OPT_ADAM)
        adam_step(o, params, grads, mask, (float)lr);
    else
        sgd_step(o, params, grads, mask, (float)lr);
    o->steps++;
}

double ul_sched_lr(const ul_sched_cfg *s, double lr0, int epoch, int epochs)
{
    switch (s->kind) {
    case UL_SCHED_STEP:
        return s->step_size > 0 ? lr0 * pow(s->gamma, epoch / s->step_size) : lr0;
    case UL_SCHED_COSINE:
        if (epochs <= 0)
            return lr0;
        return s->lr_min + (lr0 - s->lr_min) * (1.0 + cos(M_PI * epoch / epochs)) / 2.0;
    default:
        return lr0;
    }
}
