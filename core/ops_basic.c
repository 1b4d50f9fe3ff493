/* Linear layer, elementwise ops and global average pooling. */
#include <string.h>

#include "gemm.h"
#include "ops_local.h"

/* Below this many elements an OpenMP region costs more than it saves. */
#define UL_OMP_MIN 32768

/* Fills out (N,O) with the bias rows; returns the beta the product then
 * takes (1 with a bias, 0 without: out is not read). */
static float linear_bias_rows(float *out, const float *b, int N, int O)
{
    if (!b)
        return 0.0f;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            out[(size_t)n * O + o] = b[o];
    return 1.0f;
}

void ul_linear_forward(float *out, const float *in, const float *w, const float *b, int N,
                       int I, int O)
{
    // out is (N,O), in is (N,I), w is (O,I), b is (O)
    const float beta = linear_bias_rows(out, b, N, O);
    ul_sgemm(false, true, N, O, I, 1.0f, in, I, w, I, beta, out, O);
}

void ul_linear_forward_local(float *out, const float *in, const float *w, const float *b, int N,
                             int I, int O, float *scratch, size_t scratch_floats)
{
    const float beta = linear_bias_rows(out, b, N, O);
    ul_sgemm_local(false, true, N, O, I, in, I, w, I, beta, out, O, scratch, scratch_floats);
}

void ul_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int N, int I, int O)
{
    // din is (N,I), dw is (O,I), db is (O), dout is (N,O)
    if (din)
        ul_sgemm(false, false, N, I, O, 1.0f, dout, O, w, I, 1.0f, din, I);
    if (dw)
        ul_sgemm(true, false, O, I, N, 1.0f, dout, O, in, I, 1.0f, dw, I);
    if (db) {
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * O;
            for (int o = 0; o < O; o++)
                db[o] += d[o];
        }
    }
}

void ul_relu_forward(float *out, const float *in, size_t n)
{
    /* `x < 0` rather than `x > 0` so that NaN propagates, as in PyTorch,
     * and divergence stays visible. */
#pragma omp parallel for schedule(static) if (n >= UL_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] < 0.0f ? 0.0f : in[i];
}

void ul_relu_backward(float *din, const float *dout, const float *out, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= UL_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        din[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void ul_add_forward(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= UL_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void ul_global_avgpool_forward(float *out, const float *in, int N, int C, int HW)
{
    // out is (N,C), in is (N,C,HW)
    int NC = N * C;
#pragma omp parallel for schedule(static) if ((size_t)NC * HW >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        const float *x = in + (size_t)i * HW;
        float s = 0.0f;
        for (int j = 0; j < HW; j++)
            s += x[j];
        out[i] = s / (float)HW;
    }
}

void ul_global_avgpool_backward(float *din, const float *dout, int N, int C, int HW)
{
    int NC = N * C;
#pragma omp parallel for schedule(static) if ((size_t)NC * HW >= UL_OMP_MIN)
    for (int i = 0; i < NC; i++) {
        float g = dout[i] / (float)HW;
        float *d = din + (size_t)i * HW;
        for (int j = 0; j < HW; j++)
            d[j] += g;
    }
}
