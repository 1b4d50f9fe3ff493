/* unlearn — networks as small graphs of ops.
 *
 * A model plugin only describes its architecture with the builder calls
 * below; the core owns the net: it allocates parameters (one contiguous
 * block, gradients mirror it), initialises them as PyTorch does, runs
 * forward/backward, and reads/writes checkpoints with PyTorch state_dict
 * names. Builder calls return a node id (>= 0); on a shape error they
 * return -1 and record the error, which ul_net_finalize reports. */
#ifndef UNLEARN_NET_H
#define UNLEARN_NET_H

#include "common.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ul_net ul_net;
typedef int ul_node;

/* ---- builder (used by model plugins) ------------------------------------ */
/* The input node, shape (N, C, H, W) as given to ul_net_new. */
UL_API ul_node ul_net_input(ul_net *net);
UL_API void ul_net_input_shape(const ul_net *net, int *C, int *H, int *W);
UL_API int ul_net_classes(const ul_net *net);
/* Parameter tensors are named "<name>.weight", "<name>.bias"; BatchNorm adds
 * running_mean, running_var and num_batches_tracked (int64). */
UL_API ul_node ul_net_conv2d(ul_net *net, const char *name, ul_node x, int out_channels,
                             int kernel, int stride, int pad, bool bias);
UL_API ul_node ul_net_batchnorm(ul_net *net, const char *name, ul_node x);
UL_API ul_node ul_net_relu(ul_net *net, ul_node x);
UL_API ul_node ul_net_maxpool(ul_net *net, ul_node x, int kernel, int stride, int pad);
UL_API ul_node ul_net_avgpool(ul_net *net, ul_node x, int kernel, int stride, int pad);
UL_API ul_node ul_net_global_avgpool(ul_net *net, ul_node x); /* -> (N, C) */
UL_API ul_node ul_net_add(ul_net *net, ul_node a, ul_node b);
UL_API ul_node ul_net_flatten(ul_net *net, ul_node x);        /* -> (N, C·H·W) */
UL_API ul_node ul_net_linear(ul_net *net, const char *name, ul_node x, int out_features,
                             bool bias);
/* Shape of a node's output per example: C, H, W (H = W = 1 for flat). */
UL_API void ul_net_node_shape(const ul_net *net, ul_node x, int *C, int *H, int *W);

/* ---- host side ----------------------------------------------------------- */
UL_API ul_net *ul_net_new(int C, int H, int W, int n_classes);
/* Checks that the last node built has shape (n_classes), allocates
 * parameters and buffers, and initialises them from rng. */
UL_API int ul_net_finalize(ul_net *net, ul_rng *rng, ul_error *err);
/* Allocates activations for batches of up to max_batch examples (grows,
 * never shrinks). Must be called before forward. */
UL_API int ul_net_reserve(ul_net *net, int max_batch, ul_error *err);
/* Runs the net on x (N, C, H, W), N <= reserved batch. train selects batch
 * statistics (and updates running stats) for BatchNorm. Returns the logits
 * (N, n_classes), owned by the net, valid until the next forward; NULL when
 * the net is not finalized or N exceeds the reserved batch. */
UL_API const float *ul_net_forward(ul_net *net, const float *x, int N, bool train);
/* The eval-mode forward for predictions only: as ul_net_forward(net, x,
 * N, false), with each BatchNorm that alone consumes a convolution folded
 * into that convolution's weights and bias (one pass over the activations
 * fewer; the logits differ from ul_net_forward's by rounding, about 1e-6
 * relative). It keeps nothing for backward: ul_net_backward after it does
 * nothing until the next ul_net_forward. It may read x in place during the
 * call instead of copying it, and never writes it. */
UL_API const float *ul_net_infer(ul_net *net, const float *x, int N);
/* Backpropagates dlogits (N, n_classes) of the last forward; ADDS into the
 * parameter gradients. After an eval-mode forward, BatchNorm is treated as
 * the fixed affine map of its running statistics. */
UL_API void ul_net_backward(ul_net *net, const float *dlogits);
UL_API void ul_net_zero_grad(ul_net *net);
UL_API void ul_net_free(ul_net *net);
/* A deep copy of parameters and buffers (not activations or gradients). */
UL_API ul_net *ul_net_clone(const ul_net *net, ul_error *err);
/* Copies parameters and buffers from src (same architecture). */
UL_API int ul_net_copy_weights(ul_net *dst, const ul_net *src, ul_error *err);
/* Re-initialises parameters and buffers as ul_net_finalize does (PyTorch's
 * defaults, drawn from rng) — a fresh model of the same architecture. */
UL_API void ul_net_reinit(ul_net *net, ul_rng *rng);

/* All trainable parameters as one flat vector, gradients alike. */
UL_API float *ul_net_params(ul_net *net, size_t *n);
UL_API float *ul_net_grads(ul_net *net, size_t *n);
UL_API int64_t ul_net_param_count(const ul_net *net);
/* Multiply-adds of one example's forward pass in the convolutions and
 * linear layers (a training step costs about three times as many). */
UL_API double ul_net_forward_macs(const ul_net *net);

/* Tensors in state_dict order (parameters and buffers). */
typedef enum ul_dtype { UL_F32 = 1, UL_I64 = 2 } ul_dtype;
typedef struct ul_tensor_info {
    const char *name;   /* e.g. "layer1.0.bn1.running_mean" */
    ul_dtype dtype;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    void *data;         /* float* or int64_t*; owned by the net */
    float *grad;        /* NULL for buffers */
    bool trainable;
} ul_tensor_info;
UL_API size_t ul_net_tensor_count(const ul_net *net);
UL_API const ul_tensor_info *ul_net_tensor(const ul_net *net, size_t i);
UL_API const ul_tensor_info *ul_net_find_tensor(const ul_net *net, const char *name);

#ifdef __cplusplus
}
#endif
#endif
