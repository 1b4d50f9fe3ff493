/* Batch-parallel forward and backward passes.
 *
 * One OpenMP region covers a whole pass: thread t of T takes the examples
 * [t·N/T, (t+1)·N/T) and runs every node on them, with its own convolution
 * scratch and single-threaded GEMMs. With T = 1 it is the serial pass too:
 * it fuses more than the op-by-op path (net.c), which only runs when a net
 * is called from inside a parallel region. T is the number of threads the
 * region actually got, which can be fewer than asked for (OMP_THREAD_LIMIT,
 * OMP_DYNAMIC, nesting). Most ops treat examples
 * independently, so threads only meet where the batch is reduced:
 *  - BatchNorm in training mode needs the batch mean and variance (one
 *    barrier forward) and, backward, Σdy and Σdy·x̂ (one barrier);
 *  - convolution weight gradients are summed per thread and then added to
 *    the net's gradients in thread order (a barrier and a shared loop);
 *  - linear layers split their weight gradient by output rows instead,
 *    each thread summing every thread's examples (two barriers).
 * Compared with threading each op on its own, a ResNet-18 step has a few
 * dozen barriers instead of several hundred fork-joins, every elementwise
 * op runs on all threads, and each thread's activations stay in its own
 * core's cache between ops. A BatchNorm followed by its in-place ReLU runs
 * as one op (bn_relu_fused).
 *
 * Sums run in a fixed order for a given T (partials per thread, combined in
 * thread order), so results are identical run to run; they differ from the
 * one-thread path (net.c) only by floating-point rounding.
 *
 * BatchNorm partial sums alternate between two buffers ("parities") from
 * one BatchNorm node to the next: a thread can only start writing the
 * buffer of node k+2 after every thread has passed a barrier of node k+1,
 * and so has finished reading node k's. */
#include <math.h>
#include <omp.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "net_internal.h"
#include "ops_local.h"
#include "ops_wino.h"

typedef struct team {
    ul_net *net;
    int N, T, t, n0, n;  /* batch, threads, this thread and its examples */
    int bn_k;            /* BatchNorm nodes visited in this pass (parity) */
    bool bn_stats;       /* the convolution before the next BatchNorm summed its output */
    ul_wino_team wt;     /* the convolutions' shared kernel transforms */
} team;

int net_team_size(const ul_net *net, int N)
{
    if (omp_in_parallel())
        return 0;
    int T = omp_get_max_threads();
    if (T > net->team_cap)
        T = net->team_cap;
    if (T > N)
        T = N;
    return T < 1 ? 1 : T;
}

/* This thread's rows of a node's (N, C·H·W) activation, out_ld floats
 * per example apart (C·H·W, or in a folded pass the per-example size of
 * the places its activations share, so that a thread only ever touches
 * its own part of a place, whichever activation holds it). */
static float *rows(const team *tm, float *base, const net_node *nd)
{
    return base + (size_t)tm->n0 * nd->out_ld;
}

/* This thread's rows of node nd's gradient. Gradient slots are shared by
 * nodes of different sizes over a backward pass, so a thread's rows start
 * at n0 times the slot's per-example size: each thread then only ever
 * touches its own part of a slot, whichever node holds it, and no barrier
 * is needed when a slot changes hands. */
static float *grad_rows(const team *tm, const net_node *nd)
{
    return nd->dout + (size_t)tm->n0 * nd->dout_ld;
}

static double *red_buf(const team *tm, int parity, int t)
{
    const ul_net *net = tm->net;
    return net->red + ((size_t)parity * net->team_cap + t) * 2 * net->red_c;
}

static float *part_buf(const team *tm, int t)
{
    return tm->net->part + (size_t)t * tm->net->part_per;
}

/* With part_whole: thread t's (t ≥ 1) partials of convolution nd. */
static float *part_whole_buf(const team *tm, const net_node *nd, int t)
{
    return tm->net->part + (size_t)(t - 1) * tm->net->part_per + nd->part_off;
}

/* The team a convolution's Winograd kernel transforms are shared with,
 * or NULL: one thread, a shape whose kernels are not worth sharing, or
 * one the shared buffers were not sized for (thresholds moved by
 * ul_wino_force after ul_net_reserve). The answer is the same on every
 * thread. */
static ul_wino_team *team_wino(team *tm, const ul_conv_shape *s)
{
    const size_t need = ul_wino_shared_floats(s);
    if (tm->T < 2 || !tm->net->wino_shared || need == 0 || need > tm->net->wino_per)
        return NULL;
    return &tm->wt;
}

/* This thread's part of the scratch (NULL when the net has none). */
static float *team_scratch(const team *tm)
{
    ul_net *net = tm->net;
    return net->scratch ? net->scratch + (size_t)tm->t * net->scratch_per : NULL;
}

/* The calling thread's part of a pass over N examples, split among the
 * threads the region really has: equally, or at cut (T_cut + 1
 * boundaries, for the T_cut threads the caller expected; the equal split
 * when the region got fewer). */
static team team_member(ul_net *net, int N, const int *cut, int T_cut)
{
    team tm = {net, N, omp_get_num_threads(), omp_get_thread_num(), 0, 0, 0, false, {{0}, 0, 0, 0}};
    tm.wt = (ul_wino_team){{net->wino_shared, net->wino_shared + net->wino_per}, tm.t, tm.T, 0};
    if (cut && T_cut == tm.T) {
        tm.n0 = cut[tm.t];
        tm.n = cut[tm.t + 1] - cut[tm.t];
    } else {
        tm.n0 = (int)((long)tm.t * N / tm.T);
        tm.n = (int)((long)(tm.t + 1) * N / tm.T) - tm.n0;
    }
    return tm;
}

/* A folded pass's split of N examples among T threads, in proportion to
 * the threads' speeds in the passes before (team_speed), each thread at
 * least one example. The threads of a folded pass do not wait for each
 * other until its end, so a thread that runs slower for a while would
 * leave the others waiting that long at the end of every pass: on this
 * machine one of the two vCPUs ran ResNet-18 inference 6–11% slower than
 * the other for whole runs, whichever half of the batch it took, and the
 * other thread spun at the end (5–11% of both threads' perf samples).
 * Which thread takes an example does not change its result
 * (test_infer_batch, test_infer_split). */
static void team_cuts(ul_net *net, int N, int T)
{
    if (net->team_speed_T != T) {
        for (int t = 0; t < T; t++)
            net->team_speed[t] = 1.0;
        net->team_speed_T = T;
    }
    double sum = 0.0, acc = 0.0;
    for (int t = 0; t < T; t++)
        sum += net->team_speed[t];
    net->team_cut[0] = 0;
    for (int t = 1; t < T; t++) {
        acc += net->team_speed[t - 1];
        const int c = (int)(N * acc / sum + 0.5);
        const int lo = net->team_cut[t - 1] + 1, hi = N - (T - t);
        net->team_cut[t] = c < lo ? lo : c > hi ? hi : c;
    }
    net->team_cut[T] = N;
    for (int t = 0; t < T; t++)
        net->team_busy[t] = 0.0;
}

/* The speeds after a pass: three quarters the old ones, one quarter the
 * rates (examples per busy second) of this pass relative to their mean,
 * kept within 0.5–2. A pass's rates scatter by a few per cent from one
 * pass to the next; the average follows what persists. */
static void team_speeds_update(ul_net *net, int T)
{
    double rate[64], mean = 0.0;
    if (T > 64)
        return;
    for (int t = 0; t < T; t++) {
        const double busy = net->team_busy[t];
        if (!(busy > 0.0))
            return;
        rate[t] = (net->team_cut[t + 1] - net->team_cut[t]) / busy;
        mean += rate[t] / T;
    }
    for (int t = 0; t < T; t++) {
        const double v = 0.75 * net->team_speed[t] + 0.25 * rate[t] / mean;
        net->team_speed[t] = v < 0.5 ? 0.5 : v > 2.0 ? 2.0 : v;
    }
}

/* How many examples thread t takes. */
static int team_count(const team *tm, int t)
{
    return (int)((long)(t + 1) * tm->N / tm->T) - (int)((long)t * tm->N / tm->T);
}

/* Adds the threads' partials [0, n) to dst (when not NULL) in thread order,
 * each thread taking a share of the elements. Every thread must call it. */
static void reduce_parts(const team *tm, float *dst, size_t off, size_t n)
{
#pragma omp barrier
#pragma omp for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float sum = 0.0f;
        for (int j = 0; j < tm->T; j++)
            sum += part_buf(tm, j)[off + i];
        if (dst)
            dst[i] += sum;
    }
}

/* ---- BatchNorm ----------------------------------------------------------------- */

/* The elementwise loops below run over a block of cn channels (at most
 * BN_CHUNK) in all of a thread's examples, image by image: an image's cn
 * planes (HW values each, img apart from the next image's) are one
 * contiguous run. A channel at a time would start n short runs instead,
 * and on 28 × 28 and 14 × 14 images each crosses a page, where the
 * hardware prefetcher stops; that order ran the training forward's
 * normalising passes of ResNet-18 width 0.25 on 1×28×28 at half this
 * speed. They are built for AVX2 and for the baseline (UL_VEC_CLONES):
 * the baseline's 4-lane SSE did every pass of a training step at half the
 * width.
 *
 * Per-channel sums run in 8 float lanes (one double accumulator is
 * latency-bound) that are added into double sums after at most
 * BN_FLUSH terms per lane — once per plane from 32×32 up — and the
 * plane's last HW mod 8 values go into the double sums directly. Each
 * channel's terms are added in the order a channel-at-a-time loop adds
 * them (image by image), so the sums do not depend on the block size. */
#define LANES 8
#define BN_FLUSH 128
#define BN_CHUNK 64

typedef float bn_v8 __attribute__((vector_size(32), aligned(4)));
typedef int bn_m8 __attribute__((vector_size(32), aligned(4)));

/* Adds the lanes of a and b to t1 and t2, in lane order, and clears them. */
static inline void bn_flush(bn_v8 *a, bn_v8 *b, double *t1, double *t2)
{
    for (int l = 0; l < LANES; l++) {
        *t1 += (*a)[l];
        *t2 += (*b)[l];
    }
    *a = (bn_v8){0};
    *b = (bn_v8){0};
}

/* Per channel c < cn: s1[c] = Σ(x − k[c]), s2[c] = Σ(x − k[c])² over its
 * planes. */
UL_VEC_CLONES static void sum_dev(const float *x, int n, size_t img, int HW, int cn,
                                  const float *k, double *s1, double *s2)
{
    const bn_v8 zero = {0};
    const int hv = HW - HW % LANES;
    bn_v8 a[BN_CHUNK], b[BN_CHUNK];
    for (int c = 0; c < cn; c++) {
        a[c] = b[c] = zero;
        s1[c] = s2[c] = 0.0;
    }
    for (int i = 0, terms = 0; i < n; i++) {
        terms += hv / LANES;
        const bool flush = terms >= BN_FLUSH || i == n - 1;
        for (int c = 0; c < cn; c++) {
            const float *p = x + i * img + (size_t)c * HW;
            const bn_v8 vk = zero + k[c];
            bn_v8 va = a[c], vb = b[c];
            for (int j = 0; j < hv; j += LANES) {
                const bn_v8 d = *(const bn_v8 *)(p + j) - vk;
                va += d;
                vb += d * d;
            }
            for (int j = hv; j < HW; j++) {
                const double d = p[j] - k[c];
                s1[c] += d;
                s2[c] += d * d;
            }
            a[c] = va;
            b[c] = vb;
            if (flush)
                bn_flush(&a[c], &b[c], &s1[c], &s2[c]);
        }
        terms = flush ? 0 : terms;
    }
}

/* Per channel c < cn: sdy[c] = Σ g, sdyx[c] = Σ g·(x − mu[c])·rs[c] over
 * its planes, where g is dy, or with relu the gradient behind a fused ReLU
 * whose input was x·scale[c] + shift[c]: dy where that was positive (the
 * same float operations as bn_affine's), so neither the ReLU's output is
 * read nor the masked gradient written. */
UL_VEC_CLONES static void sum_dy(const float *dy, const float *x, int n, size_t img, int HW,
                                 int cn, const float *mu, const float *rs, bool relu,
                                 const float *scale, const float *shift, double *sdy,
                                 double *sdyx)
{
    const bn_v8 zero = {0};
    const int hv = HW - HW % LANES;
    bn_v8 a[BN_CHUNK], b[BN_CHUNK];
    for (int c = 0; c < cn; c++) {
        a[c] = b[c] = zero;
        sdy[c] = sdyx[c] = 0.0;
    }
    for (int i = 0, terms = 0; i < n; i++) {
        terms += hv / LANES;
        const bool flush = terms >= BN_FLUSH || i == n - 1;
        for (int c = 0; c < cn; c++) {
            const size_t off = i * img + (size_t)c * HW;
            const float *xp = x + off, *dp = dy + off;
            const float sc = relu ? scale[c] : 0.0f, sh = relu ? shift[c] : 0.0f;
            const bn_v8 vs = zero + sc, vh = zero + sh, vm = zero + mu[c], vr = zero + rs[c];
            bn_v8 va = a[c], vb = b[c];
            for (int j = 0; j < hv; j += LANES) {
                const bn_v8 xv = *(const bn_v8 *)(xp + j);
                bn_v8 g = *(const bn_v8 *)(dp + j);
                if (relu) /* a select: GCC leaves that of a plain loop as a branch */
                    g = (bn_v8)((bn_m8)g & (xv * vs + vh > zero));
                va += g;
                vb += g * ((xv - vm) * vr);
            }
            for (int j = hv; j < HW; j++) {
                const float g = !relu || xp[j] * sc + sh > 0.0f ? dp[j] : 0.0f;
                sdy[c] += g;
                sdyx[c] += (double)g * ((xp[j] - mu[c]) * rs[c]);
            }
            a[c] = va;
            b[c] = vb;
            if (flush)
                bn_flush(&a[c], &b[c], &sdy[c], &sdyx[c]);
        }
        terms = flush ? 0 : terms;
    }
}

/* The per-channel values of a block of channels that its passes use. */
typedef struct {
    float mu[BN_CHUNK], rs[BN_CHUNK], g[BN_CHUNK], m_dy[BN_CHUNK], m_dyx[BN_CHUNK];
    float scale[BN_CHUNK], shift[BN_CHUNK];
} bn_block;

/* A block's input gradient in training mode, channel c < cn taking its
 * values from p's arrays at c: dx = g·(dy' − m_dy − (x − mu)·rs·m_dyx),
 * where dy' is dy, or with relu dy under sum_dy's ReLU mask; written
 * (overwrite) or added. */
UL_VEC_CLONES static void bn_dx(float *dx, const float *x, const float *dy, int n, size_t img,
                                int HW, int cn, const bn_block *p, bool relu, bool overwrite)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < cn; c++) {
            const size_t off = i * img + (size_t)c * HW;
            float *d = dx + off;
            const float *yi = dy + off, *xi = x + off;
            const float mu = p->mu[c], rs = p->rs[c], g = p->g[c], m_dy = p->m_dy[c],
                        m_dyx = p->m_dyx[c], sc = p->scale[c], sh = p->shift[c];
            /* Every load unconditional, so that the select vectorises. */
            if (relu && overwrite)
                for (int j = 0; j < HW; j++) {
                    const float xj = xi[j], yj = yi[j], gj = xj * sc + sh > 0.0f ? yj : 0.0f;
                    d[j] = g * (gj - m_dy - (xj - mu) * rs * m_dyx);
                }
            else if (relu)
                for (int j = 0; j < HW; j++) {
                    const float xj = xi[j], yj = yi[j], gj = xj * sc + sh > 0.0f ? yj : 0.0f;
                    d[j] += g * (gj - m_dy - (xj - mu) * rs * m_dyx);
                }
            else if (overwrite)
                for (int j = 0; j < HW; j++)
                    d[j] = g * (yi[j] - m_dy - (xi[j] - mu) * rs * m_dyx);
            else
                for (int j = 0; j < HW; j++)
                    d[j] += g * (yi[j] - m_dy - (xi[j] - mu) * rs * m_dyx);
        }
}

/* dx = dy·g[c] (written or added): the eval-mode map, affine per channel. */
UL_VEC_CLONES static void bn_dx_eval(float *dx, const float *dy, int n, size_t img, int HW,
                                     int cn, const float *g, bool overwrite)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < cn; c++) {
            const size_t off = i * img + (size_t)c * HW;
            float *d = dx + off;
            const float *yi = dy + off, gc = g[c];
            if (overwrite)
                for (int j = 0; j < HW; j++)
                    d[j] = yi[j] * gc;
            else
                for (int j = 0; j < HW; j++)
                    d[j] += yi[j] * gc;
        }
}

/* Backward of an in-place ReLU: the gradient shares the input's buffer. */
UL_VEC_CLONES static void relu_mask(float *g, const float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = out[i] > 0.0f ? g[i] : 0.0f;
}

/* Whether node i is a `op` whose only consumer is an in-place ReLU right
 * after it. */
static bool relu_follows(const ul_net *net, int i, net_op op)
{
    if (i < 0 || i + 1 >= net->n_nodes)
        return false;
    const net_node *nd = &net->nodes[i], *r = &net->nodes[i + 1];
    return nd->op == op && r->op == NET_RELU && r->in[0] == i && r->inplace == 0 &&
           nd->n_consumers == 1;
}

/* A BatchNorm and its ReLU run as one op: forward writes max(0, BN(x)) in
 * the normalising pass, and backward takes the ReLU's mask from x through
 * the map forward saved (after a training pass; else it masks dy in place,
 * a channel at a time just before summing it, while it is in cache). */
static bool bn_relu_fused(const ul_net *net, int i) { return relu_follows(net, i, NET_BN); }

/* At a residual block's end, forward writes max(0, a + b) in one pass.
 * Backward is unchanged, the ReLU's mask read from the shared output. */
static bool add_relu_fused(const ul_net *net, int i) { return relu_follows(net, i, NET_ADD); }

/* y = max(0, a + b) (y may be a or b). */
UL_VEC_CLONES static void add_relu(float *y, const float *a, const float *b, size_t n)
{
    for (size_t j = 0; j < n; j++)
        y[j] = net_relu1(a[j] + b[j]);
}

/* y = x·scale[c] + shift[c] over channel c < cn's planes, then the fused
 * ReLU. */
UL_VEC_CLONES static void bn_affine(float *y, const float *x, int n, size_t img, int HW, int cn,
                                    const float *scale, const float *shift, bool relu)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < cn; c++) {
            float *yi = y + i * img + (size_t)c * HW;
            const float *xi = x + i * img + (size_t)c * HW;
            const float k = scale[c], b = shift[c];
            if (relu)
                for (int j = 0; j < HW; j++)
                    yi[j] = net_relu1(xi[j] * k + b);
            else
                for (int j = 0; j < HW; j++)
                    yi[j] = xi[j] * k + b;
        }
}

/* dst += src (the residual's gradient on its second path). */
UL_VEC_CLONES static void add_to(float *dst, const float *src, size_t n)
{
    for (size_t j = 0; j < n; j++)
        dst[j] += src[j];
}

/* An in-place ReLU. */
UL_VEC_CLONES static void relu_inplace(float *y, size_t n)
{
    for (size_t j = 0; j < n; j++)
        y[j] = net_relu1(y[j]);
}

/* Training-mode forward. Each thread sums its examples around a shift k
 * (its first value of the channel): with s1 = Σ(x − k), s2 = Σ(x − k)²
 * over its m values, its mean is k + s1/m and its sum of squared
 * deviations s2 − s1²/m, which stays accurate while k is a typical value of
 * the channel. The threads' parts are then combined exactly (Chan et al.):
 * M2 = Σ_t [M2_t + m_t·(mean_t − mean)²]. One pass and one barrier. */
static void bn_forward_train(team *tm, net_node *nd, const net_node *a, bool relu)
{
    const int C = nd->C, HW = nd->H * nd->W, n = tm->n, rc = tm->net->red_c;
    const size_t img = (size_t)C * HW;
    const double M = (double)tm->N * HW;
    const int parity = tm->bn_k++ & 1;
    const float *x0 = rows(tm, a->out, a);
    float *y0 = rows(tm, nd->out, nd);
    double *mine = red_buf(tm, parity, tm->t);
    const double m = (double)n * HW;
    /* The convolution before may have left this thread's mean and sum of
     * squared deviations in mine already (team_node_forward). */
    for (int c0 = 0; c0 < C && !tm->bn_stats; c0 += BN_CHUNK) {
        const int cn = C - c0 < BN_CHUNK ? C - c0 : BN_CHUNK;
        float k[BN_CHUNK];
        double s1[BN_CHUNK], s2[BN_CHUNK];
        for (int c = 0; c < cn; c++)
            k[c] = n > 0 ? x0[(size_t)(c0 + c) * HW] : 0.0f;
        sum_dev(x0 + (size_t)c0 * HW, n, img, HW, cn, k, s1, s2);
        for (int c = 0; c < cn; c++) {
            mine[c0 + c] = m > 0 ? k[c] + s1[c] / m : 0.0;
            mine[rc + c0 + c] = m > 0 ? s2[c] - s1[c] * s1[c] / m : 0.0;
        }
    }
    tm->bn_stats = false;
    float sc[BN_CHUNK], sh[BN_CHUNK];
#pragma omp barrier
    for (int c = 0; c < C; c++) {
        double mu = 0.0, m2 = 0.0;
        for (int j = 0; j < tm->T; j++) {
            const double mj = (double)team_count(tm, j) * HW;
            mu += mj * red_buf(tm, parity, j)[c];
        }
        mu /= M;
        for (int j = 0; j < tm->T; j++) {
            const double mj = (double)team_count(tm, j) * HW, dm = red_buf(tm, parity, j)[c] - mu;
            m2 += red_buf(tm, parity, j)[rc + c] + mj * dm * dm;
        }
        const double var = m2 > 0.0 ? m2 / M : 0.0, rs = 1.0 / sqrt(var + BN_EPS);
        const float scale = (float)(nd->w[c] * rs), shift = (float)(nd->b[c] - mu * nd->w[c] * rs);
        sc[c % BN_CHUNK] = scale;
        sh[c % BN_CHUNK] = shift;
        if (c % BN_CHUNK == BN_CHUNK - 1 || c == C - 1) {
            const int c0 = c - c % BN_CHUNK;
            bn_affine(y0 + (size_t)c0 * HW, x0 + (size_t)c0 * HW, n, img, HW, c - c0 + 1, sc, sh,
                      relu);
        }
        if (tm->t == 0) {
            nd->mean[c] = (float)mu;
            nd->rstd[c] = (float)rs;
            nd->bn_scale[c] = scale;
            nd->bn_shift[c] = shift;
            double unbiased = M > 1 ? var * M / (M - 1) : var;
            nd->running_mean[c] =
                (1.0f - BN_MOMENTUM) * nd->running_mean[c] + BN_MOMENTUM * (float)mu;
            nd->running_var[c] =
                (1.0f - BN_MOMENTUM) * nd->running_var[c] + BN_MOMENTUM * (float)unbiased;
        }
    }
    if (tm->t == 0)
        (*nd->nbt)++;
}

/* Eval-mode forward: the running statistics, per example. */
static void bn_forward_eval(team *tm, net_node *nd, const net_node *a, bool relu)
{
    const int C = nd->C, HW = nd->H * nd->W;
    const size_t img = (size_t)C * HW;
    const float *x0 = rows(tm, a->out, a);
    float *y0 = rows(tm, nd->out, nd);
    float sc[BN_CHUNK], sh[BN_CHUNK];
    for (int c0 = 0; c0 < C; c0 += BN_CHUNK) {
        const int cn = C - c0 < BN_CHUNK ? C - c0 : BN_CHUNK;
        for (int c = 0; c < cn; c++) {
            sc[c] = nd->w[c0 + c] / sqrtf(nd->running_var[c0 + c] + BN_EPS);
            sh[c] = nd->b[c0 + c] - nd->running_mean[c0 + c] * sc[c];
        }
        bn_affine(y0 + (size_t)c0 * HW, x0 + (size_t)c0 * HW, tm->n, img, HW, cn, sc, sh, relu);
    }
}

/* Backward of BatchNorm; train selects batch statistics (saved by forward)
 * or, in eval mode, the running ones, where the map is affine per channel.
 * With relu the incoming gradient is first masked, in place, where the
 * fused ReLU's output (the node's own) was not positive. With overwrite
 * (writes_first) din is written, not added to. */
static void bn_backward(team *tm, net_node *nd, const net_node *a, float *din, bool train,
                        bool relu, bool overwrite)
{
    const int C = nd->C, HW = nd->H * nd->W, n = tm->n, rc = tm->net->red_c;
    const size_t img = (size_t)C * HW;
    const double M = (double)tm->N * HW;
    const int parity = tm->bn_k++ & 1;
    const float *x0 = rows(tm, a->out, a), *o0 = rows(tm, nd->out, nd);
    float *dy0 = grad_rows(tm, nd);
    float *dx0 = din;
    double *mine = red_buf(tm, parity, tm->t);
    /* After a batch-parallel training forward the ReLU's mask comes from x
     * and the map that forward saved: two passes over x and dy, against
     * the ReLU's output read and dy masked in place besides. */
    const bool mask_x = relu && train && tm->net->last_team;
    bn_block p;
    for (int c0 = 0; c0 < C; c0 += BN_CHUNK) {
        const int cn = C - c0 < BN_CHUNK ? C - c0 : BN_CHUNK;
        const size_t cc = (size_t)c0 * HW;
        for (int c = 0; c < cn; c++) {
            const int ch = c0 + c;
            p.mu[c] = train ? nd->mean[ch] : nd->running_mean[ch];
            p.rs[c] = train ? nd->rstd[ch] : 1.0f / sqrtf(nd->running_var[ch] + BN_EPS);
            p.g[c] = nd->w[ch] * p.rs[c];
            p.scale[c] = mask_x ? nd->bn_scale[ch] : 0.0f;
            p.shift[c] = mask_x ? nd->bn_shift[ch] : 0.0f;
        }
        /* Else the fused ReLU's mask is applied in place, an image's block
         * at a time, just before the sums read it. */
        for (int i = 0; relu && !mask_x && i < n; i++)
            relu_mask(dy0 + i * img + cc, o0 + i * img + cc, (size_t)cn * HW);
        sum_dy(dy0 + cc, x0 + cc, n, img, HW, cn, p.mu, p.rs, mask_x, p.scale, p.shift,
               mine + c0, mine + rc + c0);
        if (!train && dx0)
            bn_dx_eval(dx0 + cc, dy0 + cc, n, img, HW, cn, p.g, overwrite);
    }
#pragma omp barrier
    for (int c0 = 0; c0 < C; c0 += BN_CHUNK) {
        const int cn = C - c0 < BN_CHUNK ? C - c0 : BN_CHUNK;
        for (int c = 0; c < cn; c++) {
            const int ch = c0 + c;
            double sdy = 0.0, sdyx = 0.0;
            for (int j = 0; j < tm->T; j++) {
                sdy += red_buf(tm, parity, j)[ch];
                sdyx += red_buf(tm, parity, j)[rc + ch];
            }
            if (tm->t == 0) {
                if (nd->db)
                    nd->db[ch] += (float)sdy;
                if (nd->dw)
                    nd->dw[ch] += (float)sdyx;
            }
            p.mu[c] = nd->mean[ch];
            p.rs[c] = nd->rstd[ch];
            p.g[c] = nd->w[ch] * p.rs[c];
            p.m_dy[c] = (float)(sdy / M);
            p.m_dyx[c] = (float)(sdyx / M);
            p.scale[c] = mask_x ? nd->bn_scale[ch] : 0.0f;
            p.shift[c] = mask_x ? nd->bn_shift[ch] : 0.0f;
        }
        if (train && dx0) {
            const size_t cc = (size_t)c0 * HW;
            bn_dx(dx0 + cc, x0 + cc, dy0 + cc, n, img, HW, cn, &p, mask_x, overwrite);
        }
    }
}

/* Whether node i is the first to write the gradient of its input k and
 * writes all of it: a BatchNorm, convolution or max-pool (input 0), or an
 * addition (the input it does not share storage with), whose input's store
 * starts its gradient at node i. The pass then skips zeroing that
 * gradient, and the op writes it instead of adding to it — one pass over
 * the activation fewer, and one read (a max-pool zeroes plane by plane as
 * it scatters, in cache). */
static bool writes_first_in(const ul_net *net, int i, int k)
{
    const net_node *nd = &net->nodes[i];
    const int j = nd->in[k];
    if (j < 0 || !net->nodes[j].needs_grad)
        return false;
    if (nd->op == NET_ADD) {
        /* Both inputs in one store would both write to it. */
        if (k == nd->inplace || nd->in[1 - k] < 0 ||
            net->nodes[nd->in[1 - k]].store == net->nodes[j].store)
            return false;
    } else if ((nd->op != NET_BN && nd->op != NET_CONV && nd->op != NET_MAXPOOL) || k != 0) {
        return false;
    }
    return net->nodes[net->nodes[j].store].grad_first == i;
}

static bool writes_first(const ul_net *net, int i) { return writes_first_in(net, i, 0); }

/* ---- forward ------------------------------------------------------------------- */

static void team_node_forward(team *tm, net_node *nd, const float *x, bool train, bool fold)
{
    ul_net *net = tm->net;
    const net_node *a = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
    const net_node *b = nd->in[1] >= 0 ? &net->nodes[nd->in[1]] : NULL;
    const int n = tm->n;
    const size_t count = (size_t)n * node_numel(nd);
    float *y = rows(tm, nd->out, nd);
    switch (nd->op) {
    case NET_INPUT:
        if (nd->out != x) /* else ul_net_infer reads x in place */
            memcpy(y, x + (size_t)tm->n0 * node_numel(nd), count * sizeof(float));
        break;
    case NET_CONV: {
        ul_conv_shape s = nd->conv;
        s.N = n;
        const int i = (int)(nd - net->nodes);
        if (fold && nd->fold_bn >= 0) {
            const net_node *bn = &net->nodes[nd->fold_bn];
            /* The transformed kernels from the node's cache, made again
             * when the folded weights or the cache's memory changed. */
            const ul_conv_kc_use use = {&nd->kc, (uint64_t)net->kc_epoch << 32 | nd->fold_gen,
                                        tm->t, tm->T};
            ul_conv2d_forward_kc(rows(tm, bn->out, bn), rows(tm, a->out, a), nd->fold_w,
                                 nd->fold_b, &s, team_scratch(tm), team_wino(tm, &s),
                                 nd->kc.buf && net->kc_on ? &use : NULL,
                                 bn_relu_fused(net, nd->fold_bn));
        } else if (train && i + 1 < net->n_nodes && net->nodes[i + 1].op == NET_BN &&
                   net->nodes[i + 1].in[0] == i) {
            /* The training BatchNorm right after takes its statistics from
             * the output stage where the path can sum them (Winograd's):
             * one read of the output fewer. Its sums go where
             * bn_forward_train would put them, this thread's part of the
             * BatchNorm's reduction buffer. */
            double *mine = red_buf(tm, tm->bn_k & 1, tm->t);
            tm->bn_stats = ul_conv2d_forward_team(y, rows(tm, a->out, a), nd->w, nd->b, &s,
                                                  team_scratch(tm), team_wino(tm, &s), mine,
                                                  mine + net->red_c);
        } else {
            ul_conv2d_forward_team(y, rows(tm, a->out, a), nd->w, nd->b, &s, team_scratch(tm),
                                   team_wino(tm, &s), NULL, NULL);
        }
        break;
    }
    case NET_BN: {
        const bool relu = bn_relu_fused(net, (int)(nd - net->nodes));
        if (fold && nd->fold_conv >= 0) {
            /* The convolution wrote the normalised values, and where its
             * path could, applied the ReLU. */
            if (relu && !ul_conv2d_kc_relu(&net->nodes[nd->fold_conv].conv))
                relu_inplace(y, count);
        } else if (train)
            bn_forward_train(tm, nd, a, relu);
        else
            bn_forward_eval(tm, nd, a, relu);
        break;
    }
    case NET_RELU:
        if (nd->inplace >= 0)
            ul_relu_forward(y, y, count);
        else
            ul_relu_forward(y, rows(tm, a->out, a), count);
        break;
    case NET_MAXPOOL:
        ul_maxpool2d_forward(y, nd->argmax + (size_t)tm->n0 * node_numel(nd),
                             rows(tm, a->out, a), n, a->C, a->H, a->W, nd->kernel, nd->stride,
                             nd->pad);
        break;
    case NET_AVGPOOL:
        ul_avgpool2d_forward(y, rows(tm, a->out, a), n, a->C, a->H, a->W, nd->kernel,
                             nd->stride, nd->pad);
        break;
    case NET_GAP:
        ul_global_avgpool_forward(y, rows(tm, a->out, a), n, a->C, a->H * a->W);
        break;
    case NET_ADD: {
        const float *xa = y, *xb;
        if (nd->inplace >= 0) {
            const net_node *o = nd->inplace == 0 ? b : a;
            xb = rows(tm, o->out, o);
        } else {
            xa = rows(tm, a->out, a);
            xb = rows(tm, b->out, b);
        }
        if (add_relu_fused(net, (int)(nd - net->nodes)))
            add_relu(y, xa, xb, count);
        else
            ul_add_forward(y, xa, xb, count);
        break;
    }
    case NET_LINEAR:
        ul_linear_forward_local(y, rows(tm, a->out, a), nd->w, nd->b, n, a->C, nd->C,
                                team_scratch(tm), net->scratch_per);
        break;
    case NET_FLATTEN:
    case NET_OP_COUNT:
        break;
    }
}

static double team_clock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double team_lag_s;
void net_team_lag(double seconds) { team_lag_s = seconds; }

void net_forward_team(ul_net *net, const float *x, int N, bool train, bool fold, int T)
{
    const bool prof = net_profiling();
    const int pt = net_profile_thread() < T ? net_profile_thread() : T - 1;
    const int *cut = NULL;
    if (fold && T > 1 && net->team_speed && T <= net->team_cap) {
        team_cuts(net, N, T);
        cut = net->team_cut;
    }
#pragma omp parallel num_threads(T)
    {
        team tm = team_member(net, N, cut, T);
        if (fold) {
            /* The folded weights, shared; the loop's barrier publishes them. */
#pragma omp for schedule(dynamic)
            for (int i = 0; i < net->n_nodes; i++)
                if (net->nodes[i].fold_bn >= 0)
                    net_fold_conv(net, i);
        }
        const double busy0 = cut ? team_clock() : 0.0;
        for (int i = 0; i < net->n_nodes; i++) {
            net_node *nd = &net->nodes[i];
            if (nd->op == NET_RELU && (bn_relu_fused(net, i - 1) || add_relu_fused(net, i - 1)))
                continue; /* done by the BatchNorm or addition before it */
            if (team_lag_s > 0.0)
                for (const double until = team_clock() + team_lag_s * (T - tm.t) / T;
                     team_clock() < until;)
                    ;
            double t0 = prof && tm.t == pt ? team_clock() : 0.0;
            team_node_forward(&tm, nd, x, train, fold);
            if (prof && tm.t == pt)
                net_prof_add(net, i, 0, team_clock() - t0);
        }
        if (cut && tm.T == T)
            net->team_busy[tm.t] = team_clock() - busy0;
    }
    if (cut)
        team_speeds_update(net, T);
}

/* ---- backward ------------------------------------------------------------------ */

/* This thread's rows of the gradient of input k, or NULL when no gradient
 * flows there. */
static float *team_din(const team *tm, const net_node *nd, int k)
{
    int j = nd->in[k];
    const net_node *in = j >= 0 ? &tm->net->nodes[j] : NULL;
    return in && in->needs_grad ? grad_rows(tm, in) : NULL;
}

static void team_node_backward(team *tm, net_node *nd)
{
    ul_net *net = tm->net;
    const net_node *a = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
    float *din = team_din(tm, nd, 0);
    const int n = tm->n;
    const size_t count = (size_t)n * node_numel(nd);
    float *dy = grad_rows(tm, nd);
    switch (nd->op) {
    case NET_CONV: {
        ul_conv_shape s = nd->conv;
        s.N = n;
        const size_t wsize = (size_t)s.K * s.C * s.R * s.S, bsize = nd->db ? (size_t)s.K : 0;
        const bool wf = writes_first(net, (int)(nd - net->nodes));
        if (tm->T == 1) { /* alone: straight into the net's gradients */
            ul_conv2d_backward_local(din, nd->dw, nd->db, dy, rows(tm, a->out, a), nd->w, &s,
                                     team_scratch(tm), wf);
            break;
        }
        if (net->part_whole) {
            /* Thread 0 adds into the net's gradients, the others into
             * this convolution's partials, summed after the pass
             * (team_sum_partials). */
            float *pw = tm->t == 0 ? nd->dw : nd->dw ? part_whole_buf(tm, nd, tm->t) : NULL;
            float *pb = tm->t == 0 ? nd->db : pw && nd->db ? pw + wsize : NULL;
            if (tm->t > 0 && pw)
                memset(pw, 0, (wsize + bsize) * sizeof(float));
            ul_conv2d_backward_team(din, pw, pb, dy, rows(tm, a->out, a), nd->w, &s,
                                    team_scratch(tm), wf, team_wino(tm, &s));
            break;
        }
        float *part = nd->dw ? part_buf(tm, tm->t) : NULL;
        if (part)
            memset(part, 0, (wsize + bsize) * sizeof(float));
        ul_conv2d_backward_team(din, part, part && nd->db ? part + wsize : NULL, dy,
                                rows(tm, a->out, a), nd->w, &s, team_scratch(tm), wf,
                                team_wino(tm, &s));
        if (part) {
            reduce_parts(tm, nd->dw, 0, wsize);
            if (nd->db)
                reduce_parts(tm, nd->db, wsize, bsize);
        }
        break;
    }
    case NET_BN: {
        const int i = (int)(nd - net->nodes);
        bn_backward(tm, nd, a, din, net->last_train, bn_relu_fused(net, i),
                    writes_first(net, i));
        break;
    }
    case NET_RELU:
        if (nd->inplace >= 0)
            relu_mask(dy, rows(tm, nd->out, nd), count);
        else if (din)
            ul_relu_backward(din, dy, rows(tm, nd->out, nd), count);
        break;
    case NET_MAXPOOL:
        if (din)
            ul_maxpool2d_backward_local(din, dy, nd->argmax + (size_t)tm->n0 * node_numel(nd),
                                        n, a->C, a->H, a->W, nd->kernel, nd->stride, nd->pad,
                                        writes_first(net, (int)(nd - net->nodes)));
        break;
    case NET_AVGPOOL:
        if (din)
            ul_avgpool2d_backward(din, dy, n, a->C, a->H, a->W, nd->kernel,
                                  nd->stride, nd->pad);
        break;
    case NET_GAP:
        if (din)
            ul_global_avgpool_backward(din, dy, n, a->C, a->H * a->W);
        break;
    case NET_ADD:
        for (int k = 0; k < 2; k++) {
            float *dk = team_din(tm, nd, k);
            if (k == nd->inplace || !dk)
                continue;
            if (writes_first_in(net, (int)(nd - net->nodes), k))
                memcpy(dk, dy, count * sizeof(float));
            else
                add_to(dk, dy, count);
        }
        break;
    case NET_LINEAR: {
        const int I = a->C, O = nd->C;
        float *scr = team_scratch(tm);
        const size_t scr_n = net->scratch_per;
        if (din)
            ul_sgemm_local(false, false, n, I, O, dy, O, nd->w, I, 1.0f, din, I, scr, scr_n);
        if (!nd->dw)
            break;
        /* dW and db split by output rows, not by examples: thread t owns
         * rows [o0, o1) and sums every thread's examples into them, in
         * thread order — no partial buffers and no reduction pass. It reads
         * the other threads' dY and X, hence a barrier before (their dY is
         * complete) and after (before anyone reuses its dY buffer). */
#pragma omp barrier
        const int o0 = (int)((long)tm->t * O / tm->T), o1 = (int)((long)(tm->t + 1) * O / tm->T);
        for (int u = 0; u < tm->T && o1 > o0; u++) {
            team tu = *tm;
            tu.t = u;
            tu.n0 = (int)((long)u * tm->N / tm->T);
            tu.n = team_count(tm, u);
            const float *dyu = grad_rows(&tu, nd), *xu = rows(&tu, a->out, a);
            ul_sgemm_local(true, false, o1 - o0, I, tu.n, dyu + o0, O, xu, I, 1.0f,
                           nd->dw + (size_t)o0 * I, I, scr, scr_n);
            if (nd->db)
                for (int o = o0; o < o1; o++) {
                    float sum = 0.0f;
                    for (int i = 0; i < tu.n; i++)
                        sum += dyu[(size_t)i * O + o];
                    nd->db[o] += sum;
                }
        }
#pragma omp barrier
        break;
    }
    case NET_INPUT:
    case NET_FLATTEN:
    case NET_OP_COUNT:
        break;
    }
}

/* With part_whole, after a backward pass: adds threads 1, 2, …'s partials
 * of every convolution that computed them into the net's gradients, in
 * thread order, each thread taking a share of every one. */
static void team_sum_partials(const team *tm)
{
    const ul_net *net = tm->net;
#pragma omp barrier
    for (int i = 0; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op != NET_CONV || !nd->needs_grad || !nd->dw)
            continue;
        const size_t wsize = (size_t)nd->conv.K * nd->conv.C * nd->conv.R * nd->conv.S;
        const size_t n = wsize + (nd->db ? (size_t)nd->conv.K : 0);
#pragma omp for schedule(static) nowait
        for (size_t j = 0; j < n; j++) {
            float sum = 0.0f;
            for (int t = 1; t < tm->T; t++)
                sum += part_whole_buf(tm, nd, t)[j];
            if (j < wsize)
                nd->dw[j] += sum;
            else
                nd->db[j - wsize] += sum;
        }
    }
}

void net_backward_team(ul_net *net, const float *dlogits, int N, int T)
{
    const bool prof = net_profiling();
    const int pt = net_profile_thread() < T ? net_profile_thread() : T - 1;
#pragma omp parallel num_threads(T)
    {
        team tm = team_member(net, N, NULL, 0);
        const int n = net->n_nodes;
        const net_node *last = &net->nodes[n - 1];
        memcpy(grad_rows(&tm, last), dlogits + (size_t)tm.n0 * node_numel(last),
               (size_t)tm.n * node_numel(last) * sizeof(float));
        int k = 1;
        for (int i = n - 1; i >= 0; i--) {
            for (; k < net->n_grad_order && net->nodes[net->grad_order[k]].grad_first == i;
                 k++) {
                const int g = net->grad_order[k];
                const net_node *st = &net->nodes[g], *ni = &net->nodes[i];
                bool written = false;
                for (int q = 0; q < 2; q++)
                    written |= writes_first_in(net, i, q) && net->nodes[ni->in[q]].store == g;
                if (written)
                    continue;
                memset(grad_rows(&tm, st), 0,
                       (size_t)tm.n * node_numel(st) * sizeof(float));
            }
            net_node *nd = &net->nodes[i];
            if (!nd->needs_grad || (nd->op == NET_RELU && bn_relu_fused(net, i - 1)))
                continue;
            double t0 = prof && tm.t == pt ? team_clock() : 0.0;
            team_node_backward(&tm, nd);
            if (prof && tm.t == pt)
                net_prof_add(net, i, 1, team_clock() - t0);
        }
        if (net->part_whole && tm.T > 1)
            team_sum_partials(&tm);
    }
}
