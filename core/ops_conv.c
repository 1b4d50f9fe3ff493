/* 2-D convolution as im2col + GEMM, with direct-loop references.
 *
 * The work is cut into column blocks of about UL_CONV_COLS output positions:
 * a few output rows of one image when P·Q is large, or nb whole images when
 * P·Q is small. Small blocks keep the im2col buffer and the GEMM operands in
 * cache (on a 2-core Zen 3 VM, 256 columns took about half the CPU time of
 * 1024 or more on ResNet-18's 32×32, 16×16 and 8×8 layers); whole images
 * per block keep the GEMMs of late stages (4×4) from shrinking to a handful
 * of columns.
 * A block of several images lays its columns out image after image, so its
 * GEMM result (K, nb·P·Q) is scattered into NCHW through tmp; a block inside
 * one image is written in place with row stride P·Q.
 *
 * Scratch (floats), per thread, with cols = the largest block's column count:
 *   col   (C·R·S, cols)   im2col of the block, reused for dcol in backward
 *   tmp   (K, cols)       only when blocks hold several images
 *   dW    (K, C·R·S)      the thread's share of the weight gradient
 * where cols = nb·P·Q with nb = min(N, ceil(UL_CONV_COLS / (P·Q))) if
 * P·Q < UL_CONV_COLS, else cols = Q·min(P, max(1, UL_CONV_COLS / Q)); the
 * total is that times the number of processors (the most threads a
 * convolution uses). A 1×1 stride-1 unpadded conv within one image needs
 * no col: the image already is its own (C, H·W) column matrix. */
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "ops_local.h"

#define UL_CONV_COLS 256
#define UL_OMP_MIN 32768

bool ul_conv_shape_init(ul_conv_shape *s, int N, int C, int H, int W, int K, int R, int S,
                        int stride, int pad)
{
    *s = (ul_conv_shape){.N = N, .C = C, .H = H, .W = W, .K = K, .R = R, .S = S,
                         .stride = stride, .pad = pad};
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || K <= 0 || R <= 0 || S <= 0 || stride <= 0 ||
        pad < 0 || H + 2 * pad < R || W + 2 * pad < S)
        return false;
    s->P = (H + 2 * pad - R) / stride + 1;
    s->Q = (W + 2 * pad - S) / stride + 1;
    return true;
}

/* Images per block (nb) and output rows per block (pb); one of them is 1
 * or whole. */
static void conv_blocking(const ul_conv_shape *s, int *nb, int *pb)
{
    int pq = s->P * s->Q;
    if (pq >= UL_CONV_COLS) {
        int rows = UL_CONV_COLS / s->Q;
        *nb = 1;
        *pb = rows < 1 ? 1 : rows > s->P ? s->P : rows;
    } else {
        int n = (UL_CONV_COLS + pq - 1) / pq;
        *nb = n < s->N ? n : s->N;
        *pb = s->P;
    }
}

static bool conv_is_pointwise(const ul_conv_shape *s)
{
    return s->R == 1 && s->S == 1 && s->stride == 1 && s->pad == 0;
}

/* Output positions q in [*lo, *hi) read input column q·stride + off inside
 * [0, W); the rest fall on padding. */
static void conv_valid_range(int off, int stride, int W, int Q, int *lo, int *hi)
{
    int a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int b = W - 1 - off < 0 ? 0 : (W - 1 - off) / stride + 1;
    if (a > Q)
        a = Q;
    if (b > Q)
        b = Q;
    *lo = a;
    *hi = b < a ? a : b;
}

/* A block: images [n0, n0+nbc) and, when nbc = 1, output rows [p0, p1). */
typedef struct {
    int n0, nbc, p0, p1;
} conv_block;

static int conv_block_cols(const ul_conv_shape *s, const conv_block *b)
{
    return b->nbc * (b->p1 - b->p0) * s->Q;
}

static void im2col(float *col, const float *in, const ul_conv_shape *s, const conv_block *b)
{
    // col is (C*R*S, nbc*(p1-p0)*Q), in is (N,C,H,W)
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int st = s->stride, pad = s->pad, nbc = b->nbc, p0 = b->p0, p1 = b->p1;
    const size_t img_cols = (size_t)(p1 - p0) * Q, ld = (size_t)nbc * img_cols;
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel() && (size_t)C * R * S * ld >= UL_OMP_MIN)
    for (int c = 0; c < C; c++) {
        for (int n = 0; n < nbc; n++) {
            const float *x = in + ((size_t)(b->n0 + n) * C + c) * H * W;
            for (int r = 0; r < R; r++) {
                for (int sx = 0; sx < S; sx++) {
                    float *dst = col + ((size_t)(c * R + r) * S + sx) * ld + n * img_cols;
                    int q0, q1;
                    conv_valid_range(sx - pad, st, W, Q, &q0, &q1);
                    for (int p = p0; p < p1; p++) {
                        float *d = dst + (size_t)(p - p0) * Q;
                        int h = p * st - pad + r;
                        if (h < 0 || h >= H) {
                            memset(d, 0, (size_t)Q * sizeof(float));
                            continue;
                        }
                        const float *xr = x + (size_t)h * W + (q0 * st - pad + sx);
                        for (int q = 0; q < q0; q++)
                            d[q] = 0.0f;
                        if (st == 1)
                            memcpy(d + q0, xr, (size_t)(q1 - q0) * sizeof(float));
                        else
                            for (int q = q0; q < q1; q++)
                                d[q] = xr[(q - q0) * st];
                        for (int q = q1; q < Q; q++)
                            d[q] = 0.0f;
                    }
                }
            }
        }
    }
}

/* Adds the columns back onto the image; each (n,c) plane is owned by one
 * thread and summed in a fixed order, so the result is deterministic. */
static void col2im_add(float *din, const float *col, const ul_conv_shape *s,
                       const conv_block *b)
{
    // din is (N,C,H,W), col is (C*R*S, nbc*(p1-p0)*Q)
    const int C = s->C, H = s->H, W = s->W, R = s->R, S = s->S, Q = s->Q;
    const int st = s->stride, pad = s->pad, nbc = b->nbc, p0 = b->p0, p1 = b->p1;
    const size_t img_cols = (size_t)(p1 - p0) * Q, ld = (size_t)nbc * img_cols;
#pragma omp parallel for collapse(2) schedule(static) if (!omp_in_parallel() && (size_t)C * R * S * ld >= UL_OMP_MIN)
    for (int n = 0; n < nbc; n++) {
        for (int c = 0; c < C; c++) {
            float *x = din + ((size_t)(b->n0 + n) * C + c) * H * W;
            for (int r = 0; r < R; r++) {
                for (int sx = 0; sx < S; sx++) {
                    const float *src = col + ((size_t)(c * R + r) * S + sx) * ld + n * img_cols;
                    int q0, q1;
                    conv_valid_range(sx - pad, st, W, Q, &q0, &q1);
                    for (int p = p0; p < p1; p++) {
                        int h = p * st - pad + r;
                        if (h < 0 || h >= H)
                            continue;
                        float *xr = x + (size_t)h * W + (q0 * st - pad + sx);
                        const float *sr = src + (size_t)(p - p0) * Q;
                        if (st == 1)
                            for (int q = q0; q < q1; q++)
                                xr[q - q0] += sr[q];
                        else
                            for (int q = q0; q < q1; q++)
                                xr[(q - q0) * st] += sr[q];
                    }
                }
            }
        }
    }
}

/* ---- threading --------------------------------------------------------------
 * With T > 1 threads the blocks are spread over the threads, each with its
 * own scratch and single-threaded GEMMs: one fork-join per convolution
 * instead of several per block, which is what small blocks need. Blocks go
 * to threads in whole "units" — the blocks of one image, or one block of
 * several images — so no two threads ever add into the same input image in
 * backward. Weight gradients are summed per thread and then added in thread
 * order, so results are identical run to run for a given thread count.
 * With one thread, or fewer units than threads, blocks run one after the
 * other and BLIS threads each GEMM. */

static int conv_max_threads(void)
{
    int t = omp_get_num_procs();
    return t < 1 ? 1 : t;
}

static int conv_threads(int units)
{
    int t = omp_get_max_threads(), tm = conv_max_threads();
    if (t > tm)
        t = tm;
    return units >= t ? t : 1;
}

/* Per-thread scratch: the im2col block, the multi-image GEMM result, and a
 * weight-gradient accumulator. */
static size_t conv_thread_scratch(const ul_conv_shape *s, size_t *col_part)
{
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    size_t crs = (size_t)s->C * s->R * s->S, cols = (size_t)nb * pb * s->Q;
    size_t col = (nb == 1 && conv_is_pointwise(s)) ? 0 : crs * cols;
    size_t part = col + (nb > 1 ? (size_t)s->K * cols : 0);
    if (col_part)
        *col_part = part;
    return part + (size_t)s->K * crs;
}

size_t ul_conv2d_scratch(const ul_conv_shape *s)
{
    return conv_thread_scratch(s, NULL) * (size_t)conv_max_threads();
}

size_t ul_conv2d_local_scratch(const ul_conv_shape *s) { return conv_thread_scratch(s, NULL); }

static int conv_units(const ul_conv_shape *s, int nb)
{
    return (s->N + nb - 1) / nb;
}

static void conv_forward_unit(float *out, const float *in, const float *w, const float *b,
                              const ul_conv_shape *s, int unit, float *scratch, int threads)
{
    const int N = s->N, K = s->K, CRS = s->C * s->R * s->S, P = s->P, Q = s->Q, PQ = P * Q;
    const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)K * PQ;
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int n0 = unit * nb;
    float *tmp = scratch + (size_t)CRS * nb * PQ;
    for (int p0 = 0; p0 < P; p0 += pb) {
        conv_block blk = {n0, N - n0 < nb ? N - n0 : nb, p0, P - p0 < pb ? P : p0 + pb};
        const int cols = conv_block_cols(s, &blk);
        const float *col = scratch;
        int ldcol = cols;
        if (conv_is_pointwise(s) && blk.nbc == 1) {
            col = in + n0 * in_img + (size_t)p0 * Q;
            ldcol = PQ;
        } else {
            im2col(scratch, in, s, &blk);
        }
        if (blk.nbc == 1) {
            // y is (K, cols) with row stride PQ, inside image n0
            float *y = out + n0 * out_img + (size_t)p0 * Q;
            float beta = 0.0f;
            if (b) {
                for (int k = 0; k < K; k++)
                    for (int j = 0; j < cols; j++)
                        y[(size_t)k * PQ + j] = b[k];
                beta = 1.0f;
            }
            ul_sgemm_threads(threads, false, false, K, cols, CRS, 1.0f, w, CRS, col, ldcol,
                             beta, y, PQ);
            continue;
        }
        // tmp is (K, nbc*PQ); scatter it into out (nbc,K,P,Q)
        ul_sgemm_threads(threads, false, false, K, cols, CRS, 1.0f, w, CRS, col, cols, 0.0f,
                         tmp, cols);
        float *y = out + n0 * out_img;
        for (int n = 0; n < blk.nbc; n++)
            for (int k = 0; k < K; k++) {
                const float *t = tmp + (size_t)k * cols + (size_t)n * PQ;
                float *yy = y + ((size_t)n * K + k) * PQ;
                float bk = b ? b[k] : 0.0f;
                for (int j = 0; j < PQ; j++)
                    yy[j] = t[j] + bk;
            }
    }
}

void ul_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const ul_conv_shape *s, float *scratch)
{
    // out is (N,K,P,Q), in is (N,C,H,W), w is (K,C,R,S), b is (K) or NULL
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb), T = conv_threads(units);
    const size_t per = conv_thread_scratch(s, NULL);
    if (T == 1) {
        for (int u = 0; u < units; u++)
            conv_forward_unit(out, in, w, b, s, u, scratch, 0);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(T)
    for (int u = 0; u < units; u++)
        conv_forward_unit(out, in, w, b, s, u, scratch + per * (size_t)omp_get_thread_num(), 1);
}

/* Backward of one unit: adds dW into dw_acc (K, CRS) and dX into din. */
static void conv_backward_unit(float *din, float *dw_acc, const float *dout, const float *in,
                               const float *w, const ul_conv_shape *s, int unit,
                               float *scratch, int threads)
{
    const int N = s->N, C = s->C, K = s->K, CRS = C * s->R * s->S, P = s->P, Q = s->Q;
    const int PQ = P * Q;
    const size_t in_img = (size_t)C * s->H * s->W, out_img = (size_t)K * PQ;
    const bool pointwise = conv_is_pointwise(s);
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int n0 = unit * nb;
    float *tmp = scratch + (size_t)CRS * nb * PQ;
    for (int p0 = 0; p0 < P; p0 += pb) {
        conv_block blk = {n0, N - n0 < nb ? N - n0 : nb, p0, P - p0 < pb ? P : p0 + pb};
        const int cols = conv_block_cols(s, &blk);
        // dy is (K, cols) with row stride lddy
        const float *dy = dout + n0 * out_img + (size_t)p0 * Q;
        int lddy = PQ;
        if (blk.nbc > 1) {
            for (int n = 0; n < blk.nbc; n++)
                for (int k = 0; k < K; k++)
                    memcpy(tmp + (size_t)k * cols + (size_t)n * PQ,
                           dy + n * out_img + (size_t)k * PQ, (size_t)PQ * sizeof(float));
            dy = tmp;
            lddy = cols;
        }
        const bool direct = pointwise && blk.nbc == 1;
        if (dw_acc) {
            const float *col = scratch;
            int ldcol = cols;
            if (direct) {
                col = in + n0 * in_img + (size_t)p0 * Q;
                ldcol = PQ;
            } else {
                im2col(scratch, in, s, &blk);
            }
            ul_sgemm_threads(threads, false, true, K, CRS, cols, 1.0f, dy, lddy, col, ldcol,
                             1.0f, dw_acc, CRS);
        }
        if (din) {
            if (direct) {
                float *dx = din + n0 * in_img + (size_t)p0 * Q;
                ul_sgemm_threads(threads, true, false, C, cols, K, 1.0f, w, CRS, dy, lddy, 1.0f,
                                 dx, PQ);
            } else {
                ul_sgemm_threads(threads, true, false, CRS, cols, K, 1.0f, w, CRS, dy, lddy,
                                 0.0f, scratch, cols);
                col2im_add(din, scratch, s, &blk);
            }
        }
    }
}

/* Σ over images and positions of dout's channel k. */
static float conv_bias_grad(const float *dout, const ul_conv_shape *s, int k)
{
    const int PQ = s->P * s->Q;
    const size_t out_img = (size_t)s->K * PQ;
    double acc = 0.0;
    for (int n = 0; n < s->N; n++) {
        const float *d = dout + n * out_img + (size_t)k * PQ;
        float part = 0.0f;
        for (int j = 0; j < PQ; j++)
            part += d[j];
        acc += part;
    }
    return (float)acc;
}

void ul_conv2d_forward_local(float *out, const float *in, const float *w, const float *b,
                             const ul_conv_shape *s, float *scratch)
{
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb);
    for (int u = 0; u < units; u++)
        conv_forward_unit(out, in, w, b, s, u, scratch, 1);
}

void ul_conv2d_backward_local(float *din, float *dw_acc, float *db_acc, const float *dout,
                              const float *in, const float *w, const ul_conv_shape *s,
                              float *scratch)
{
    if (db_acc)
        for (int k = 0; k < s->K; k++)
            db_acc[k] += conv_bias_grad(dout, s, k);
    if (!din && !dw_acc)
        return;
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb);
    for (int u = 0; u < units; u++)
        conv_backward_unit(din, dw_acc, dout, in, w, s, u, scratch, 1);
}

void ul_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const ul_conv_shape *s, float *scratch)
{
    // din is (N,C,H,W), dw is (K,C,R,S), db is (K), dout is (N,K,P,Q)
    const int N = s->N, K = s->K, CRS = s->C * s->R * s->S, PQ = s->P * s->Q;
    const size_t out_img = (size_t)K * PQ;
    if (db) {
#pragma omp parallel for schedule(static) if ((size_t)N * out_img >= UL_OMP_MIN)
        for (int k = 0; k < K; k++)
            db[k] += conv_bias_grad(dout, s, k);
    }
    if (!din && !dw)
        return;
    int nb, pb;
    conv_blocking(s, &nb, &pb);
    const int units = conv_units(s, nb), T = conv_threads(units);
    size_t col_part;
    const size_t per = conv_thread_scratch(s, &col_part), wsize = (size_t)K * CRS;
    if (T == 1) {
        for (int u = 0; u < units; u++)
            conv_backward_unit(din, dw, dout, in, w, s, u, scratch, 0);
        return;
    }
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *mine = scratch + per * (size_t)t;
        float *acc = dw ? mine + col_part : NULL;
        if (acc)
            memset(acc, 0, wsize * sizeof(float));
#pragma omp for schedule(static)
        for (int u = 0; u < units; u++)
            conv_backward_unit(din, acc, dout, in, w, s, u, mine, 1);
        if (dw) {
            /* Implicit barrier above; each thread then sums a slice of dW
             * over the partials in thread order. */
#pragma omp for schedule(static)
            for (size_t i = 0; i < wsize; i++) {
                float sum = 0.0f;
                for (int j = 0; j < T; j++)
                    sum += scratch[per * (size_t)j + col_part + i];
                dw[i] += sum;
            }
        }
    }
}

void ul_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const ul_conv_shape *s)
{
    const int N = s->N, C = s->C, H = s->H, W = s->W, K = s->K, R = s->R, S = s->S;
    const int P = s->P, Q = s->Q, st = s->stride, pad = s->pad;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double acc = b ? b[k] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int sx = 0; sx < S; sx++) {
                                int h = p * st - pad + r, ww = q * st - pad + sx;
                                if (h < 0 || h >= H || ww < 0 || ww >= W)
                                    continue;
                                acc += (double)in[(((size_t)n * C + c) * H + h) * W + ww] *
                                       w[(((size_t)k * C + c) * R + r) * S + sx];
                            }
                    out[(((size_t)n * K + k) * P + p) * Q + q] = (float)acc;
                }
}

void ul_conv2d_backward_ref(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, const ul_conv_shape *s)
{
    const int N = s->N, C = s->C, H = s->H, W = s->W, K = s->K, R = s->R, S = s->S;
    const int P = s->P, Q = s->Q, st = s->stride, pad = s->pad;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    float g = dout[(((size_t)n * K + k) * P + p) * Q + q];
                    if (db)
                        db[k] += g;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int sx = 0; sx < S; sx++) {
                                int h = p * st - pad + r, ww = q * st - pad + sx;
                                if (h < 0 || h >= H || ww < 0 || ww >= W)
                                    continue;
                                size_t xi = (((size_t)n * C + c) * H + h) * W + ww;
                                size_t wi = (((size_t)k * C + c) * R + r) * S + sx;
                                if (din)
                                    din[xi] += g * w[wi];
                                if (dw)
                                    dw[wi] += g * in[xi];
                            }
                }
}
