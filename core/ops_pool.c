/* Max and average pooling with PyTorch's floor-mode output size. Each (n,c)
 * plane is one OpenMP iteration, so results do not depend on threads. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

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

/* Takes v (at index vi) as the maximum when v > m or v is NaN — the
 * comparison of the general loop — with masks instead of a branch: which
 * element of a window wins is data-dependent, and a mispredicted branch per
 * element costs more than the whole comparison. */
static inline void pool_take(float v, int32_t vi, float *m, int32_t *mi)
{
    const int32_t t = -(int32_t)((v > *m) | (v != v));
    int32_t vb, mb;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&mb, m, sizeof mb);
    mb = (vb & t) | (mb & ~t);
    memcpy(m, &mb, sizeof mb);
    *mi = (vi & t) | (*mi & ~t);
}

#if defined(__GNUC__)
/* Four 2×2 windows at a time with GCC/Clang vector extensions (portable:
 * SSE on x86-64, NEON on ARM): even and odd columns are split with a
 * shuffle, then pool_take's masks work lane-wise. Returns how many outputs
 * of the row it did. */
typedef float pool_v4f __attribute__((vector_size(16)));
typedef int32_t pool_v4i __attribute__((vector_size(16)));

static inline void pool_take4(pool_v4f v, pool_v4i vi, pool_v4f *m, pool_v4i *mi)
{
    const pool_v4i t = (v > *m) | (v != v);
    *m = (pool_v4f)(((pool_v4i)v & t) | ((pool_v4i)*m & ~t));
    *mi = (vi & t) | (*mi & ~t);
}

static int pool2x2_vec(const float *r0, const float *r1, float *yr, int32_t *ar, int32_t base,
                       int W, int Q)
{
    /* With Q ≥ 4 the last group starts at Q − 4 and overlaps the one
     * before it, which writes the same values: no output is left to the
     * scalar loop. The reads stay in the row: 2·Q ≤ W for this window. */
    for (int q = 0, next; q < Q && Q >= 4; q = next) {
        next = q + 4 < Q - 4 ? q + 4 : q == Q - 4 ? Q : Q - 4;
        pool_v4f t0, t1, u0, u1;
        memcpy(&t0, r0 + 2 * q, sizeof t0);
        memcpy(&t1, r0 + 2 * q + 4, sizeof t1);
        memcpy(&u0, r1 + 2 * q, sizeof u0);
        memcpy(&u1, r1 + 2 * q + 4, sizeof u1);
        const pool_v4i even = {0, 2, 4, 6}, odd = {1, 3, 5, 7};
        const pool_v4f a = __builtin_shuffle(t0, t1, even), b = __builtin_shuffle(t0, t1, odd);
        const pool_v4f c = __builtin_shuffle(u0, u1, even), d = __builtin_shuffle(u0, u1, odd);
        const pool_v4i i0 = base + 2 * q + even;
        pool_v4f m = a;
        pool_v4i mi = i0;
        pool_take4(b, i0 + 1, &m, &mi);
        pool_take4(c, i0 + W, &m, &mi);
        pool_take4(d, i0 + W + 1, &m, &mi);
        memcpy(yr + q, &m, sizeof m);
        memcpy(ar + q, &mi, sizeof mi);
    }
    return Q >= 4 ? Q : 0;
}
#else
static int pool2x2_vec(const float *r0, const float *r1, float *yr, int32_t *ar, int32_t base,
                       int W, int Q)
{
    (void)r0, (void)r1, (void)yr, (void)ar, (void)base, (void)W, (void)Q;
    return 0;
}
#endif

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
            /* The common 2x2 window, unrolled and branch-free; same
             * visiting order and comparisons as the general loop below
             * (v != v is isnan). */
            for (int p = 0; p < P; p++) {
                const float *r0 = x + (size_t)2 * p * W, *r1 = r0 + W;
                float *yr = y + (size_t)p * Q;
                int32_t *ar = am + (size_t)p * Q;
                const int32_t base = 2 * p * W;
                int q = pool2x2_vec(r0, r1, yr, ar, base, W, Q);
                for (; q < Q; q++) {
                    const float a = r0[2 * q], b = r0[2 * q + 1], c = r1[2 * q],
                                d = r1[2 * q + 1];
                    const int32_t i0 = base + 2 * q;
                    float m = a;
                    int32_t mi = i0;
                    pool_take(b, i0 + 1, &m, &mi);
                    pool_take(c, i0 + W, &m, &mi);
                    pool_take(d, i0 + W + 1, &m, &mi);
                    yr[q] = m;
                    ar[q] = mi;
                }
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

/* Max-pool backward of one (n, c) plane: dy to the positions argmax
 * names; with overwrite the plane is zeroed first, in cache, instead of
 * being added to. */
static void maxpool_backward_plane(float *dx, const float *dy, const int32_t *am, int PQ,
                                   size_t HW, bool overwrite)
{
    if (overwrite)
        memset(dx, 0, HW * sizeof(float));
    for (int j = 0; j < PQ; j++)
        dx[am[j]] += dy[j];
}

void ul_maxpool2d_backward_local(float *din, const float *dout, const int32_t *argmax, int N,
                                 int C, int H, int W, int k, int stride, int pad, bool overwrite)
{
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int PQ = P * Q;
    const size_t HW = (size_t)H * W;
    for (int i = 0; i < N * C; i++)
        maxpool_backward_plane(din + i * HW, dout + (size_t)i * PQ, argmax + (size_t)i * PQ, PQ,
                               HW, overwrite);
}

void ul_maxpool2d_backward(float *din, const float *dout, const int32_t *argmax, int N, int C,
                           int H, int W, int k, int stride, int pad)
{
    int P, Q;
    if (!ul_pool_out_size(H, W, k, stride, pad, &P, &Q))
        return;
    const int NC = N * C, PQ = P * Q;
    const size_t HW = (size_t)H * W;
#pragma omp parallel for schedule(static) if ((size_t)NC * HW >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++)
        maxpool_backward_plane(din + i * HW, dout + (size_t)i * PQ, argmax + (size_t)i * PQ, PQ,
                               HW, false);
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
