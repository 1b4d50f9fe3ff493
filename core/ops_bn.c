/* Batch normalisation with PyTorch's semantics (see REFERENCE.md).
 * Channels are independent, so each is one OpenMP iteration and its sums run
 * in a fixed order: results do not depend on the thread count. Sums are in
 * double because a channel can hold millions of values (N·H·W). */
#include <math.h>

#include "ops_local.h"
#include "unlearn/ops.h"

/* The training-mode BatchNorm input gradient of one channel once the batch
 * means are known: dx += g·(dy − m_dy − (x − mu)·rs·m_dyx) over n images
 * lying img floats apart, HW values each (x, dy, dx point at the channel
 * in the first image; g = γ·rs); with overwrite, dx = … instead (dx is
 * then not read). */
UL_VEC_CLONES static void bn_dx_channel(float *dx, const float *x, const float *dy, int n,
                                        size_t img, int HW, float mu, float rs, float g,
                                        float m_dy, float m_dyx, bool overwrite);

#define UL_OMP_MIN 32768

void ul_batchnorm_forward_train(float *out, float *mean, float *rstd, const float *in,
                                const float *gamma, const float *beta, float *running_mean,
                                float *running_var, int N, int C, int HW, float momentum,
                                float eps)
{
    // out, in are (N,C,HW); mean, rstd, gamma, beta, running_* are (C)
    const size_t M = (size_t)N * HW, img = (size_t)C * HW;
#pragma omp parallel for schedule(static) if (M * C >= UL_OMP_MIN)
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = in + n * img + (size_t)c * HW;
            for (int j = 0; j < HW; j++)
                sum += x[j];
        }
        double mu = sum / (double)M;
        /* Two passes: E[x²] − E[x]² cancels badly for large means. */
        double ss = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = in + n * img + (size_t)c * HW;
            for (int j = 0; j < HW; j++) {
                double d = x[j] - mu;
                ss += d * d;
            }
        }
        double var = ss / (double)M;
        double rs = 1.0 / sqrt(var + eps);
        mean[c] = (float)mu;
        rstd[c] = (float)rs;
        float scale = (float)(gamma[c] * rs), shift = (float)(beta[c] - mu * gamma[c] * rs);
        for (int n = 0; n < N; n++) {
            const float *x = in + n * img + (size_t)c * HW;
            float *y = out + n * img + (size_t)c * HW;
            for (int j = 0; j < HW; j++)
                y[j] = x[j] * scale + shift;
        }
        if (running_mean)
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * (float)mu;
        if (running_var) {
            /* PyTorch refuses training with one value per channel; we keep the
             * biased variance there rather than divide by zero. */
            double unbiased = M > 1 ? var * (double)M / (double)(M - 1) : var;
            running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
        }
    }
}

void ul_batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                               const float *beta, const float *running_mean,
                               const float *running_var, int N, int C, int HW, float eps)
{
    const size_t img = (size_t)C * HW;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * img >= UL_OMP_MIN)
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            float scale = gamma[c] / sqrtf(running_var[c] + eps);
            float shift = beta[c] - running_mean[c] * scale;
            const float *x = in + n * img + (size_t)c * HW;
            float *y = out + n * img + (size_t)c * HW;
            for (int j = 0; j < HW; j++)
                y[j] = x[j] * scale + shift;
        }
    }
}

void ul_batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                           const float *in, const float *mean, const float *rstd,
                           const float *gamma, int N, int C, int HW)
{
    // din, dout, in are (N,C,HW); dgamma, dbeta, mean, rstd, gamma are (C)
    const size_t M = (size_t)N * HW, img = (size_t)C * HW;
#pragma omp parallel for schedule(static) if (M * C >= UL_OMP_MIN)
    for (int c = 0; c < C; c++) {
        const float mu = mean[c], rs = rstd[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = in + n * img + (size_t)c * HW;
            const float *dy = dout + n * img + (size_t)c * HW;
            for (int j = 0; j < HW; j++) {
                sum_dy += dy[j];
                sum_dy_xhat += (double)dy[j] * ((x[j] - mu) * rs);
            }
        }
        if (dbeta)
            dbeta[c] += (float)sum_dy;
        if (dgamma)
            dgamma[c] += (float)sum_dy_xhat;
        if (!din)
            continue;
        /* din = γ·rstd·(dy − mean(dy) − x̂·mean(dy·x̂)): the batch statistics
         * depend on every input, hence the two mean terms. */
        const float g = gamma[c] * rs;
        const float m_dy = (float)(sum_dy / (double)M);
        const float m_dyx = (float)(sum_dy_xhat / (double)M);
        bn_dx_channel(din + (size_t)c * HW, in + (size_t)c * HW, dout + (size_t)c * HW, N,
                      img, HW, mu, rs, g, m_dy, m_dyx, false);
    }
}

UL_VEC_CLONES static void bn_dx_channel(float *dx, const float *x, const float *dy, int n,
                                        size_t img, int HW, float mu, float rs, float g,
                                        float m_dy, float m_dyx, bool overwrite)
{
    for (int i = 0; i < n; i++) {
        float *d = dx + i * img;
        const float *yi = dy + i * img, *xi = x + i * img;
        if (overwrite)
            for (int j = 0; j < HW; j++)
                d[j] = g * (yi[j] - m_dy - (xi[j] - mu) * rs * m_dyx);
        else
            for (int j = 0; j < HW; j++)
                d[j] += g * (yi[j] - m_dy - (xi[j] - mu) * rs * m_dyx);
    }
}
