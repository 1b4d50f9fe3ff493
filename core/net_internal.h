/* Private: the network's internal representation, shared by net.c (build,
 * plan, memory, serial passes) and net_team.c (batch-parallel passes). */
#ifndef UL_NET_INTERNAL_H
#define UL_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops_local.h"
#include "unlearn/net.h"
#include "unlearn/ops.h"

/* PyTorch's BatchNorm2d defaults. */
#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f

/* Activation regions are aligned to cache lines for the GEMM kernels. */
#define NET_ALIGN_FLOATS 16

typedef enum net_op {
    NET_INPUT,
    NET_CONV,
    NET_BN,
    NET_RELU,
    NET_MAXPOOL,
    NET_AVGPOOL,
    NET_GAP,
    NET_ADD,
    NET_FLATTEN,
    NET_LINEAR,
    NET_OP_COUNT
} net_op;

typedef struct net_node {
    net_op op;
    double prof[2];      /* UNLEARN_PROFILE: seconds forward, backward */
    char *name;          /* parameter prefix ("layer1.0.conv1"); NULL without parameters */
    int in[2];           /* input nodes, -1 when unused */
    int C, H, W;         /* output shape per example */
    int kernel, stride, pad;
    bool bias;
    ul_conv_shape conv;  /* conv geometry for N = 1; N is set per call */

    /* Decided when the net is compiled (net_plan). */
    int n_consumers;
    int inplace;         /* which input (0/1) this node overwrites, -1 for none */
    int store;           /* node owning the output storage: itself, or an input's store */
    bool needs_grad;     /* dL/d(output) is needed: some parameter lies upstream */
    /* Only for store nodes whose gradient is needed: */
    int grad_first;      /* node whose backward writes the gradient first (n_nodes: dlogits) */
    int grad_last;       /* node whose backward reads it last */
    int grad_slot;
    /* Eval-mode folding (ul_net_infer): a convolution whose only consumer is
     * a BatchNorm (fold_bn, else -1) runs with the BatchNorm's scale and
     * shift folded into fold_w and fold_b (views into the net's fold block)
     * and writes the BatchNorm's output; that BatchNorm (fold_conv, else -1)
     * then only applies its fused ReLU. */
    int fold_bn, fold_conv;
    float *fold_w, *fold_b;
    /* fold_w and fold_b's version: raised by net_fold_conv whenever they
     * change (fold_set: written at least once). The folded passes keep
     * the convolution's transformed kernels in kc (net_kcache_plan; kc.buf
     * NULL: not kept), valid while they were made from this version and
     * no unfolded pass has written activations since (kc_epoch). */
    uint32_t fold_gen;
    bool fold_set;
    ul_conv_kcache kc;

    /* Parameter views into the net's blocks (NULL when absent). */
    float *w, *b, *dw, *db;
    float *running_mean, *running_var;
    int64_t *nbt;

    /* Activations, set by ul_net_reserve. */
    float *out, *dout;
    size_t out_ld;       /* floats per example in out: C·H·W, or in a folded pass
                          * whose activations infer_plan placed, the places' */
    size_t dout_ld;      /* floats per example in dout's gradient slot (≥ C·H·W) */
    float *mean, *rstd;  /* BN batch statistics saved for backward */
    /* BN: the per-channel map y = x·scale + shift the last batch-parallel
     * training forward applied, so that backward can tell where its fused
     * ReLU passed from x alone (net_team.c). */
    float *bn_scale, *bn_shift;
    int32_t *argmax;     /* maxpool */
    size_t part_off;     /* conv, with ul_net.part_whole: its partials' place in a thread's */
} net_node;

struct ul_net {
    int C, H, W, n_classes;
    net_node *nodes;
    int n_nodes, cap_nodes;
    int input;               /* the input node, -1 until ul_net_input */
    bool failed;             /* a builder call failed; build_err says why */
    ul_error build_err;
    bool finalized;

    float *params, *grads;
    size_t n_params;
    float *stats;            /* BN running mean and var */
    size_t n_stats;
    int64_t *counts;         /* BN num_batches_tracked */
    size_t n_counts;
    ul_tensor_info *tensors;
    size_t n_tensors;

    /* Gradient slots: per-example size, and store nodes ordered by the step
     * at which backward first writes them (descending). */
    size_t *slot_numel;
    int n_slots;
    int *grad_order;
    int n_grad_order;

    int max_batch;           /* 0 until ul_net_reserve */
    float *act;              /* every float activation region, one allocation */
    float *slots;            /* the gradient slots' part of act, slots_floats long */
    size_t slots_floats;
    float **out_train;       /* n_nodes: each node's output buffer (ul_net_reserve's layout) */
    float **out_infer;       /* ... and in a folded pass (infer_plan), or NULL */
    size_t infer_ld;         /* floats per example in the folded pass's places */
    uint32_t kc_epoch;       /* raised by every pass that writes the activations'
                              * usual buffers, where the kernel caches live */
    bool kc_on;              /* this pass may use them (its activations are placed) */
    float *infer_act;        /* the places when the slots are too small, or NULL */
    int32_t *act_i32;        /* maxpool argmax regions */
    float *scratch;
    float *fold;             /* folded conv weights and biases, n_fold floats */
    size_t n_fold;

    int last_N;              /* batch of the last forward, 0 when none */
    bool last_train;
    bool last_team;          /* ... and whether it ran batch-parallel */

    /* UNLEARN_PROFILE: seconds and calls per op kind, forward [0] and
     * backward [1], printed to stderr when the net is freed. */
    double prof_s[NET_OP_COUNT][2];
    long prof_n[NET_OP_COUNT][2];
    long prof_passes[2];     /* forward and backward passes profiled */

    /* Batch-parallel passes (net_team.c), sized by ul_net_reserve for up
     * to team_cap threads. */
    int team_cap;
    size_t scratch_per;      /* conv scratch floats per thread */
    float *part;             /* per-thread conv weight-gradient partials */
    size_t part_per;         /* floats per thread: the largest conv's w + b, or
                              * with part_whole every conv's (threads 1, 2, …) */
    bool part_whole;         /* the partials are summed once, after the pass */
    double *red;             /* BatchNorm partial sums: [2 parities][team_cap][2·red_c] */
    int red_c;               /* the widest BatchNorm */
    float *wino_shared;      /* the team's two buffers of transformed kernels (ul_wino_team) */
    size_t wino_per;         /* floats of each */
    /* Folded passes split the batch by the threads' measured speeds
     * (net_team.c, team_cuts): team_speed[t] (mean 1 over the T of the
     * last such pass, team_speed_T), each thread's busy seconds in it, and
     * the split itself, team_cut[0 .. T]. */
    double *team_speed, *team_busy;
    int *team_cut;
    int team_speed_T;
};

static inline size_t node_numel(const net_node *n)
{
    return (size_t)n->C * n->H * n->W;
}

/* Writes conv node cv's folded weights and bias from its BatchNorm. */
void net_fold_conv(ul_net *net, int cv);
/* max(0, v), as ul_relu_forward computes it (NaN passes through). */
static inline float net_relu1(float v) { return v < 0.0f ? 0.0f : v; }

/* For the tests: the most bytes the threads' whole-pass weight-gradient
 * partials may take (net.c, net_team_alloc; default 64 MiB); a net
 * reserved under a smaller limit sums them after every convolution. */
void net_part_whole_limit(size_t bytes);

/* For the tests: thread t of T in a batch-parallel forward pass waits
 * seconds·(T − t)/T before each node (0: not at all), so that the later
 * threads run ever more layers ahead of the earlier ones. */
void net_team_lag(double seconds);
/* Batch-parallel forward and backward with up to T threads (net_team.c);
 * fold: the eval-mode forward of ul_net_infer. */
void net_forward_team(ul_net *net, const float *x, int N, bool train, bool fold, int T);
void net_backward_team(ul_net *net, const float *dlogits, int N, int T);
/* Whether UNLEARN_PROFILE asks for per-op timings. */
bool net_profiling(void);
/* The team thread whose clock the profile reads (UNLEARN_PROFILE_THREAD,
 * default 0). */
int net_profile_thread(void);
/* Adds dt seconds to node i's forward (dir 0) or backward (dir 1) time. */
void net_prof_add(ul_net *net, int i, int dir, double dt);
/* How many threads a pass over N examples asks for; 0 inside a parallel
 * region, where the op-by-op path (net.c) runs instead. */
int net_team_size(const ul_net *net, int N);



#endif
