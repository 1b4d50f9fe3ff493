/* Max and average pooling with PyTorch's floor-mode output size. Each (n,c)
 * plane is one OpenMP iteration, so results do not depend on threads. */
#include <math.h>

#include "unlearn/ops.h"

#define UL_OMP_MIN 32768

bool ul_pool_out_size(int H, int W, int k, int stride, int pad, int *P, int *Q)
{
    /* PyTorch's own limit pad <= k/2 guarantees that every window covers at
     * least one real input value, which the max pool relies on. */
    if (H <= 0 || W <= 0 || k <= 0 || stride <= 0 || pad < 0 || pad > k / 2 ||
        H + 2 * pad < k || W + 2 * pad < k)
        return false;
    *P = (H + 2 * pad - k) / stride + 1;
    *Q = (W + 2 * pad - k) / stride + 1;
    return true;
}

/* Window [lo, hi) of output position p, clipped to the input. */
static void pool_window(int p, int k, int stride, int pad, int H, int *lo, int *hi)
{
    int a = p * stride - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > H ? H : b;
}

void ul_maxpool2d_forward(float *out, int32_t *argmax, const float *in, int N, int C, int H,
                          int W, int k, int stride, int pad)
{
    // out, argmax are (N,C,P,Q), in is (N,C,H,W)
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int NC = N * C;
#pragma omp parallel for schedule(static) if ((size_t)NC * H * W >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        const float *x = in + (size_t)i * H * W;
        float *y = out + (size_t)i * P * Q;
        int32_t *am = argmax + (size_t)i * P * Q;
        if (k == 2 && stride == 2 && pad == 0) {
            /* The common 2x2 window, unrolled; same visiting order and
             * comparisons as the general loop below. */
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    const int32_t i0 = 2 * p * W + 2 * q;
                    const int32_t idx[4] = {i0, i0 + 1, i0 + W, i0 + W + 1};
                    int32_t best_i = i0;
                    float best = x[i0];
                    for (int j = 1; j < 4; j++) {
                        float v = x[idx[j]];
                        if (v > best || isnan(v)) {
                            best = v;
                            best_i = idx[j];
                        }
                    }
                    y[p * Q + q] = best;
                    am[p * Q + q] = best_i;
                }
            continue;
        }
        for (int p = 0; p < P; p++) {
            int h0, h1;
            pool_window(p, k, stride, pad, H, &h0, &h1);
            for (int q = 0; q < Q; q++) {
                int w0, w1;
                pool_window(q, k, stride, pad, W, &w0, &w1);
                /* First maximum wins and NaN propagates, as in PyTorch. */
                int32_t best_i = h0 * W + w0;
                float best = x[best_i];
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) {
                        float v = x[h * W + w];
                        if (v > best || isnan(v)) {
                            best = v;
                            best_i = h * W + w;
                        }
                    }
                y[p * Q + q] = best;
                am[p * Q + q] = best_i;
            }
        }
    }
}

void ul_maxpool2d_backward(float *din, const float *dout, const int32_t *argmax, int N, int C,
                           int H, int W, int k, int stride, int pad)
{
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int NC = N * C, PQ = P * Q;
#pragma omp parallel for schedule(static) if ((size_t)NC * H * W >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        float *dx = din + (size_t)i * H * W;
        const float *dy = dout + (size_t)i * PQ;
        const int32_t *am = argmax + (size_t)i * PQ;
        for (int j = 0; j < PQ; j++)
            dx[am[j]] += dy[j];
    }
}

/* With count_include_pad and floor mode no window reaches past the padding,
 * so every divisor is k·k. */
void ul_avgpool2d_forward(float *out, const float *in, int N, int C, int H, int W, int k,
                          int stride, int pad)
{
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int NC = N * C;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if ((size_t)NC * H * W >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        const float *x = in + (size_t)i * H * W;
        float *y = out + (size_t)i * P * Q;
        for (int p = 0; p < P; p++) {
            int h0, h1;
            pool_window(p, k, stride, pad, H, &h0, &h1);
            for (int q = 0; q < Q; q++) {
                int w0, w1;
                pool_window(q, k, stride, pad, W, &w0, &w1);
                float s = 0.0f;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        s += x[h * W + w];
                y[p * Q + q] = s * inv;
            }
        }
    }
}

void ul_avgpool2d_backward(float *din, const float *dout, int N, int C, int H, int W, int k,
                           int stride, int pad)
{
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int NC = N * C;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if ((size_t)NC * H * W >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        float *dx = din + (size_t)i * H * W;
        const float *dy = dout + (size_t)i * P * Q;
        for (int p = 0; p < P; p++) {
            int h0, h1;
            pool_window(p, k, stride, pad, H, &h0, &h1);
            for (int q = 0; q < Q; q++) {
                int w0, w1;
                pool_window(q, k, stride, pad, W, &w0, &w1);
                float g = dy[p * Q + q] * inv;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        dx[h * W + w] += g;
            }
        }
    }
}
