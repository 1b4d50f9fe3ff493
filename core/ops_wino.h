/* Private: 3×3, stride-1, pad-1 convolutions by Winograd's minimal
 * filtering F(4×4, 3×3) and F(2×2, 3×3), on BLIS's micro-kernel
 * (ops_wino.c). */
#ifndef UL_OPS_WINO_H
#define UL_OPS_WINO_H

#include <stdbool.h>
#include <stddef.h>

#include "unlearn/ops.h"

/* Whether shape s takes the Winograd path forward (or backward): a 3×3,
 * stride-1, pad-1 layer with at least 32 input and output channels
 * (backward: 32 on images of 32×32 and more, 64 from 12×12, 128 below),
 * a BLIS micro-kernel in its native orientation with 16-lane R panels
 * (ul_pk_get_native; the forward pass with 4×4 tiles then runs its
 * products on ul_pk_get_wide's kernel where there is one), and
 * UNLEARN_WINOGRAD not "0". UNLEARN_WINOGRAD=all takes every such layer;
 * UNLEARN_WINOGRAD_MIN_FWD / _MIN_BWD move the thresholds (the backward
 * ones scale with _MIN_BWD). Backward, this is the 2×2 tiles' path, which
 * computes dW, and dX too unless ul_wino_dx_ok. */
bool ul_wino_ok(const ul_conv_shape *s, bool backward);

/* The output tile side of the forward path for s: 4 for F(4×4, 3×3)
 * (unless UNLEARN_WINOGRAD_F4=0), 2 for F(2×2, 3×3), 0 when the forward
 * pass takes no Winograd path. */
int ul_wino_tile(const ul_conv_shape *s);

/* Tests and benchmarks only: mode 1 sends every layer the path can take
 * through it, both ways, with 2×2 tiles; mode 2 likewise, but 4×4 tiles
 * forward and for dX (ul_wino_dx); mode 3 as mode 2, with dW by the direct
 * paths; mode 4 as mode 2, with dW by 4×4 tiles; −1 sends none; 0
 * restores the thresholds. */
void ul_wino_force(int mode);
/* Whether a mode above 0 is set (the other paths then give way wherever
 * the Winograd path can take a layer). */
bool ul_wino_forced(void);

/* Floats of one thread's scratch for shape s (forward or backward; the
 * batch size does not matter). The scratch starts on a 64-byte boundary. */
size_t ul_wino_scratch(const ul_conv_shape *s);

/* The F(4×4, 3×3) kernel transforms U[ξ] = G·g·Gᵀ of the (K, C, 3, 3)
 * weights w, 16 output channels per row: dst[ξ·Kp·C + (k/16)·C·16 + c·16
 * + k%16], Kp = K rounded up to 16 (zero past K); 36·Kp·C floats. */
void ul_wino4_pack_k16(float *dst, const float *w, int K, int C);
/* ... only output channels [k0, k1) (multiples of 16, or k1 = K). */
void ul_wino4_pack_k16_rows(float *dst, const float *w, int K, int C, int k0, int k1);

/* Threads of one parallel region that run the same layers in step, each
 * on its own images (net_team.c): every thread calls the same function
 * with the same shape and weights at the same time. The kernels are then
 * transformed once, a share of them on each thread, into one of two
 * shared buffers taken in turn, with one barrier per call (a thread only
 * overwrites a buffer after every thread has passed the barrier of the
 * call in between). turn counts those calls and stays the same on every
 * thread; each buffer holds ul_wino_shared_floats() floats for every shape
 * the team runs. A NULL team: one thread alone. */
typedef struct ul_wino_team {
    float *buf[2];
    int t, T;
    unsigned turn;
} ul_wino_team;

/* Floats of one shared buffer for shape s: the transformed kernels of its
 * forward pass or of its input gradient, whichever is larger; 0 when
 * neither takes the path, or when the kernels are too few for sharing to
 * pay (a team then transforms them on every thread; the forced modes of
 * ul_wino_force share every shape). */
size_t ul_wino_shared_floats(const ul_conv_shape *s);

/* out (N,K,H,W) = conv(in, w) + b, for the s->N images, on this thread
 * (with team, the team's threads share the kernel transforms). */
void ul_wino_forward(float *out, const float *in, const float *w, const float *b,
                     const ul_conv_shape *s, float *scratch, ul_wino_team *team);

/* ul_wino_forward with the kernel transforms kept in a cache
 * (ul_conv2d_forward_kc; NULL use: as ul_wino_forward), of
 * ul_wino_kernel_floats floats; with relu, max(0, ·) of the outputs where
 * the path can (4×4 tiles), and then true. */
struct ul_conv_kc_use;
size_t ul_wino_kernel_floats(const ul_conv_shape *s);
bool ul_wino_forward_kc(float *out, const float *in, const float *w, const float *b,
                        const ul_conv_shape *s, float *scratch, ul_wino_team *team,
                        const struct ul_conv_kc_use *use, bool relu);

/* ul_wino_forward, and per output channel k the mean of its N·H·W output
 * values (mean[k]) and the sum of their squared deviations from it
 * (m2[k]), summed as the values are stored (around the channel's first
 * value, so that the sums stay accurate when the mean is large): what a
 * BatchNorm after the layer would otherwise read the output again for.
 * Both 0 when s->N is 0. */
void ul_wino_forward_stats(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch, double *mean, double *m2,
                           ul_wino_team *team);

/* The tile side of the 2×2 tiles' backward path (ul_wino_ok(s, true))
 * when it computes dW alone (dX by ul_wino_dx): 4 for F(4×4, 3×3) (unless
 * UNLEARN_WINOGRAD_F4=0), else 2; 0 when that path is not taken. */
int ul_wino_dw_tile(const ul_conv_shape *s);

/* Whether the input gradient of s is taken as a forward F(4×4, 3×3)
 * convolution of the output gradient with the kernels transposed and
 * turned by 180° (ul_wino_dx): when that convolution would take the
 * forward path with 4×4 tiles. */
bool ul_wino_dx_ok(const ul_conv_shape *s);

/* din (N,C,H,W) = (or with add, +=) the input gradient of layer s from
 * dout (N,K,H,W) and the layer's weights w (K,C,3,3), on this thread. */
void ul_wino_dx(float *din, const float *dout, const float *w, const ul_conv_shape *s,
                float *scratch, bool add, ul_wino_team *team);

/* Adds dX into din and dW into dw_acc (either may be NULL), on this
 * thread, with 2×2 tiles; dW alone (din NULL) with ul_wino_dw_tile(s)'s. */
void ul_wino_backward(float *din, float *dw_acc, const float *dout, const float *in,
                      const float *w, const ul_conv_shape *s, float *scratch);

#endif
