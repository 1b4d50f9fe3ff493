/* Private: single-threaded kernels over a slice of the batch, for callers
 * that spread the batch over threads themselves (net_team.c). */
#ifndef UL_OPS_LOCAL_H
#define UL_OPS_LOCAL_H

#include <stdint.h>

#include "unlearn/ops.h"

struct ul_wino_team;

/* Loops built twice, with AVX2 and for the baseline, the one the CPU can
 * run picked when the library loads. Neither build uses FMA, so both
 * round alike. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define UL_VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define UL_VEC_CLONES
#endif

/* Copies n floats between buffers that do not overlap, inline: 8-lane
 * moves, the last one overlapping the one before, then 4-lane ones, then
 * single floats. For the rows of 4 to 32 floats that the convolution
 * paths copy by the hundred thousand per pass, where a memcpy call cost
 * more than the copy (6% of a ResNet-18 width 0.25 inference pass on
 * 1×28×28 was spent in memmove). The empty asm statements hide the index
 * from GCC, which would otherwise turn the loops back into memmove calls. */
static inline __attribute__((always_inline)) void ul_copy_floats(float *restrict d,
                                                                 const float *restrict s, int n)
{
    typedef float cp_v8 __attribute__((vector_size(32), aligned(4)));
    typedef float cp_v4 __attribute__((vector_size(16), aligned(4)));
    if (n >= 8) {
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            *(cp_v8 *)(d + i) = *(const cp_v8 *)(s + i);
            __asm__("" : "+r"(i));
        }
        if (i < n)
            *(cp_v8 *)(d + n - 8) = *(const cp_v8 *)(s + n - 8);
    } else if (n >= 4) {
        *(cp_v4 *)d = *(const cp_v4 *)s;
        *(cp_v4 *)(d + n - 4) = *(const cp_v4 *)(s + n - 4);
    } else {
        for (int i = 0; i < n; i++) {
            d[i] = s[i];
            __asm__("" : "+r"(i));
        }
    }
}

/* Scratch floats one thread needs for shape s (ul_conv2d_scratch is this
 * times the number of processors, plus alignment slack). The local
 * functions take scratch that starts on a 64-byte boundary; this size is a
 * multiple of 16 floats, so consecutive threads' parts stay aligned. */
size_t ul_conv2d_local_scratch(const ul_conv_shape *s);

/* ul_conv2d_forward on one thread, with one thread's scratch. */
void ul_conv2d_forward_local(float *out, const float *in, const float *w, const float *b,
                             const ul_conv_shape *s, float *scratch);

/* ul_conv2d_forward_local for one thread of a team that runs the layer in
 * step (ul_wino_team, ops_wino.h; NULL: alone). With mean and m2, where
 * the layer takes the Winograd path, also each output channel's mean and
 * sum of squared deviations over the s->N images, summed as the values
 * are stored (ul_wino_forward_stats), and true; elsewhere false, mean and
 * m2 untouched. */
bool ul_conv2d_forward_team(float *out, const float *in, const float *w, const float *b,
                            const ul_conv_shape *s, float *scratch, struct ul_wino_team *team,
                            double *mean, double *m2);

/* Transformed kernels kept from one call to the next by a caller whose
 * weights seldom change (the net's folded inference passes): buf holds
 * cap floats (64-byte aligned); have is the key of the weights it was
 * filled from (0: none) and kind the path and layout that filled it. */
typedef struct ul_conv_kcache {
    float *buf;
    size_t cap;
    uint64_t have;
    int kind;
} ul_conv_kcache;

/* One call's use of a cache: key identifies this call's weights (never 0;
 * the caller gives another whenever they or the cache's memory may have
 * changed), and the calling thread is t of the T that call with the same
 * cache and key at once (the threads of a team, each on its images). */
typedef struct ul_conv_kc_use {
    ul_conv_kcache *c;
    uint64_t key;
    int t, T;
} ul_conv_kc_use;

/* Floats of the kernels the forward path for shape s would keep (the
 * Winograd paths' transforms), 0 when it keeps none. */
size_t ul_conv2d_kcache_floats(const ul_conv_shape *s);

/* ul_conv2d_forward_team without statistics, taking the transformed
 * kernels from use's cache when it holds those of use->key, else
 * transforming them into it (each of the T threads a share, then a
 * barrier) when it is large enough, else as ul_conv2d_forward_team. With
 * relu, the path also applies max(0, ·) to the outputs where it can do so
 * as it stores them (the AVX-512 paths, Winograd's with 4×4 tiles), and
 * then returns true; false: the outputs are the convolution's alone. */
bool ul_conv2d_forward_kc(float *out, const float *in, const float *w, const float *b,
                          const ul_conv_shape *s, float *scratch, struct ul_wino_team *team,
                          const ul_conv_kc_use *use, bool relu);
/* Whether ul_conv2d_forward_kc applies the ReLU it is asked for, for
 * shape s (any batch size). */
bool ul_conv2d_kc_relu(const ul_conv_shape *s);

/* For the paths: the cache's kernels when use holds those of its key made
 * by path kind, else NULL. */
static inline const float *ul_kc_hit(const ul_conv_kc_use *use, int kind)
{
    return use && use->c->have == use->key && use->c->kind == kind ? use->c->buf : NULL;
}
/* After this thread's share of the kernels went into use's cache: waits
 * for the other threads' shares (T > 1), then marks the cache as holding
 * use->key's kernels of path kind. Every thread of the T calls it. */
void ul_kc_filled(const ul_conv_kc_use *use, int kind);

/* ul_conv2d_backward on one thread: adds dX into din and the weight and bias
 * gradients into dw_acc and db_acc (any of the three may be NULL). With
 * din_overwrite, din is written instead of added to (its old contents are
 * never read). */
void ul_conv2d_backward_local(float *din, float *dw_acc, float *db_acc, const float *dout,
                              const float *in, const float *w, const ul_conv_shape *s,
                              float *scratch, bool din_overwrite);

/* ul_conv2d_backward_local for one thread of a team (as
 * ul_conv2d_forward_team). */
void ul_conv2d_backward_team(float *din, float *dw_acc, float *db_acc, const float *dout,
                             const float *in, const float *w, const ul_conv_shape *s,
                             float *scratch, bool din_overwrite, struct ul_wino_team *team);

/* 3×3, stride-1, pad-1 convolutions with at most UL_SMALL_CONV_CH channels
 * on one side and UL_SMALL_CONV_MAX on the other, or at most
 * UL_SMALL_CONV_BOTH both ways, computed directly on one thread
 * (ops_conv_small.c); the local entry points above take them, ahead of
 * the Winograd path (unless ul_wino_ok says otherwise); their forward
 * pass takes stride 2 too (ul_conv_small_fwd_ok). Scratch: ul_conv_small_scratch floats, 64-byte
 * aligned. Backward adds dX (or with din_overwrite writes it) and adds dW;
 * either may be NULL. */
#define UL_SMALL_CONV_CH 8
#define UL_SMALL_CONV_MAX 32
#define UL_SMALL_CONV_BOTH 15
bool ul_conv_small_ok(const ul_conv_shape *s);
/* The forward pass takes stride 2 as well (ResNet-18's first downsampling
 * layer at width 0.1): ul_conv_small_ok's channels, stride 1 or 2. */
bool ul_conv_small_fwd_ok(const ul_conv_shape *s);
size_t ul_conv_small_scratch(const ul_conv_shape *s);
void ul_conv_small_forward(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch);
void ul_conv_small_backward(float *din, float *dw_acc, const float *dout, const float *in,
                            const float *w, const ul_conv_shape *s, float *scratch,
                            bool din_overwrite);
/* For the tests: run the baseline build of the direct path even where the
 * AVX2+FMA one would be picked. */
void ul_conv_small_force_baseline(bool on);

/* Whether the AVX-512 paths with output channels in registers
 * (ops_conv_kvec.c, ops_conv_kwino.c) may run: the CPU has AVX-512 and
 * UNLEARN_KVEC is not 0. */
bool ul_conv_avx512_ok(void);

/* 3×3, pad-1 forward passes computed directly with AVX-512, 16 output
 * channels to a register (ops_conv_kvec.c): stride 2 with up to 128
 * input channels; stride 1 with at least 8 output channels where the
 * few-channel path would take the layer, from at most 3 input channels
 * (stems) or with at most 16 each way; only where the CPU has AVX-512 and
 * the output rows are a multiple of 4, 7 or 8 long (ul_conv_kvec_ok). The
 * one-thread forward entry point takes them ahead of the other paths.
 * Scratch: ul_conv_kvec_scratch floats, 64-byte aligned. */
bool ul_conv_kvec_ok(const ul_conv_shape *s);
size_t ul_conv_kvec_scratch(const ul_conv_shape *s);
void ul_conv_kvec_forward(float *out, const float *in, const float *w, const float *b,
                          const ul_conv_shape *s, float *scratch);
/* ... then with relu max(0, ·) of the outputs. */
void ul_conv_kvec_forward_relu(float *out, const float *in, const float *w, const float *b,
                               const ul_conv_shape *s, float *scratch, bool relu);
/* For the tests: with on, ul_conv_kvec_ok says no (the layers go the other
 * paths' way). */
void ul_conv_kvec_force_off(bool on);

/* 3×3, stride-1, pad-1 forward passes by Winograd's F(4×4, 3×3) with 16
 * channels in the lanes of AVX-512 registers (ops_conv_kwino.c): channel
 * counts multiples of 16 each way, C·K ≤ 64·64, only where the CPU has
 * AVX-512 (ul_conv_kwino_ok). The one-thread forward entry point takes
 * them ahead of the other paths. Scratch: ul_conv_kwino_scratch floats,
 * 64-byte aligned. */
bool ul_conv_kwino_ok(const ul_conv_shape *s);
size_t ul_conv_kwino_scratch(const ul_conv_shape *s);
void ul_conv_kwino_forward(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s, float *scratch);
/* ... with its kernels kept in a cache (ul_conv2d_forward_kc), of
 * ul_conv_kwino_kernel_floats floats. */
size_t ul_conv_kwino_kernel_floats(const ul_conv_shape *s);
void ul_conv_kwino_forward_kc(float *out, const float *in, const float *w, const float *b,
                              const ul_conv_shape *s, float *scratch, const ul_conv_kc_use *use,
                              bool relu);
/* For the tests: with on, ul_conv_kwino_ok says no. */
void ul_conv_kwino_force_off(bool on);

/* ul_maxpool2d_backward on one thread; with overwrite, din is written
 * (zero where no window took its maximum) instead of added to. */
void ul_maxpool2d_backward_local(float *din, const float *dout, const int32_t *argmax, int N,
                                 int C, int H, int W, int k, int stride, int pad, bool overwrite);

/* ul_linear_forward on one thread: out (N,O) = in (N,I)·Wᵀ + b, through
 * ul_sgemm_local with its scratch (gemm.h). */
void ul_linear_forward_local(float *out, const float *in, const float *w, const float *b, int N,
                             int I, int O, float *scratch, size_t scratch_floats);

#endif
