/* unlearn — numeric operations, float32, NCHW, contiguous.
 *
 * Conventions (as in llm.c): outputs first, then inputs, then sizes.
 * Every `*_backward` ADDS into its gradient outputs (callers zero them);
 * any gradient output may be NULL when it is not needed. Forward functions
 * overwrite their outputs. Scratch buffers are owned by the caller; their
 * required size (in floats) is given by the matching `*_scratch` function.
 * Every fast kernel has a naive `*_ref` twin used by the tests. */
#ifndef UNLEARN_OPS_H
#define UNLEARN_OPS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- GEMM (every dense product goes through BLIS) ----------------------
 * C(m,n) = alpha * op(A)(m,k) * op(B)(k,n) + beta * C, row-major,
 * lda/ldb/ldc are row strides. */
UL_API void ul_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta,
                     float *c, int ldc);

/* ---- linear: out (N,O) = in (N,I) · W^T + b;  W is (O,I) as PyTorch ---- */
UL_API void ul_linear_forward(float *out, const float *in, const float *w, const float *b,
                              int N, int I, int O);
UL_API void ul_linear_backward(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, int N, int I, int O);

/* ---- conv2d: weight (K,C,R,S) as PyTorch, square stride and padding ---- */
typedef struct ul_conv_shape {
    int N, C, H, W;  /* input */
    int K, R, S;     /* output channels, kernel height, kernel width */
    int stride, pad;
    int P, Q;        /* output height and width (filled by init) */
} ul_conv_shape;

/* Fills P and Q; returns false when the output would be empty. */
UL_API bool ul_conv_shape_init(ul_conv_shape *s, int N, int C, int H, int W, int K, int R,
                               int S, int stride, int pad);
UL_API size_t ul_conv2d_scratch(const ul_conv_shape *s);
/* out (N,K,P,Q); b may be NULL. */
UL_API void ul_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                              const ul_conv_shape *s, float *scratch);
UL_API void ul_conv2d_backward(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, const ul_conv_shape *s,
                               float *scratch);
UL_API void ul_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                                  const ul_conv_shape *s);
UL_API void ul_conv2d_backward_ref(float *din, float *dw, float *db, const float *dout,
                                   const float *in, const float *w, const ul_conv_shape *s);

/* ---- batch normalisation over (N, ·, HW) per channel C -----------------
 * Training: normalise with the biased batch variance; update
 * running = (1-momentum)·running + momentum·batch_stat with the UNBIASED
 * variance (PyTorch). mean and rstd (1/sqrt(var+eps)) of size C are saved
 * for backward. Running stats may be NULL (no update). */
UL_API void ul_batchnorm_forward_train(float *out, float *mean, float *rstd, const float *in,
                                       const float *gamma, const float *beta,
                                       float *running_mean, float *running_var, int N, int C,
                                       int HW, float momentum, float eps);
UL_API void ul_batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                                      const float *beta, const float *running_mean,
                                      const float *running_var, int N, int C, int HW, float eps);
/* Backward of the training-mode forward. */
UL_API void ul_batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                                  const float *in, const float *mean, const float *rstd,
                                  const float *gamma, int N, int C, int HW);

/* ---- elementwise -------------------------------------------------------- */
UL_API void ul_relu_forward(float *out, const float *in, size_t n);
/* din += dout where out > 0. */
UL_API void ul_relu_backward(float *din, const float *dout, const float *out, size_t n);
UL_API void ul_add_forward(float *out, const float *a, const float *b, size_t n);

/* ---- pooling: square window k, stride, zero... padding (max pool pads with -inf) */
UL_API bool ul_pool_out_size(int H, int W, int k, int stride, int pad, int *P, int *Q);
/* argmax (N,C,P,Q) receives the flat index into the (H,W) plane. */
UL_API void ul_maxpool2d_forward(float *out, int32_t *argmax, const float *in, int N, int C,
                                 int H, int W, int k, int stride, int pad);
UL_API void ul_maxpool2d_backward(float *din, const float *dout, const int32_t *argmax, int N,
                                  int C, int H, int W, int k, int stride, int pad);
/* Average pool counts padded zeros (PyTorch count_include_pad=True). */
UL_API void ul_avgpool2d_forward(float *out, const float *in, int N, int C, int H, int W, int k,
                                 int stride, int pad);
UL_API void ul_avgpool2d_backward(float *din, const float *dout, int N, int C, int H, int W,
                                  int k, int stride, int pad);
/* out (N,C) = mean over HW. */
UL_API void ul_global_avgpool_forward(float *out, const float *in, int N, int C, int HW);
UL_API void ul_global_avgpool_backward(float *din, const float *dout, int N, int C, int HW);

/* ---- losses ---------------------------------------------------------------
 * Softmax cross-entropy. probs (N,K) receives softmax(logits); losses (N),
 * when not NULL, the per-example losses; returns the mean loss. */
UL_API float ul_softmax_xent_forward(float *probs, float *losses, const float *logits,
                                     const int32_t *labels, int N, int K);
/* dlogits += scale · (probs − onehot(labels)) / N  — i.e. the gradient of
 * scale · mean loss. */
UL_API void ul_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                                     int N, int K, float scale);
/* Distillation KL with temperature T:
 *   T² · (1/N) · Σ_n Σ_c p_T(t)·(log p_T(t) − log p_T(s)),  p_T(z) = softmax(z/T).
 * Returns that value; the backward adds scale · ∂/∂student_logits. */
UL_API float ul_kl_div_forward(const float *student, const float *teacher, int N, int K,
                               float T);
UL_API void ul_kl_div_backward(float *dstudent, const float *student, const float *teacher,
                               int N, int K, float T, float scale);
/* L1 penalty alpha·Σ|w|: grad += alpha·sign(w) (sign(0) = 0); returns the penalty. */
UL_API double ul_l1_penalty(float *grad, const float *w, size_t n, float alpha);

#ifdef __cplusplus
}
#endif
#endif
