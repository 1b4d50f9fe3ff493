/* GEMM around BLIS's micro-kernel with caller-supplied packing
 * (pack_gemm.h).
 *
 * The micro-kernel computes one MR×NR tile of C from an MR-row panel of A
 * and an NR-column panel of B, both packed k-major ([kk·MR + i] and
 * [kk·NR + j]). BLIS 0.9 kernels handle partial tiles (m < MR, n < NR) and
 * any C strides themselves, through a small stack tile, so the loops here
 * only cut the matrices into panels. A kernel that prefers column-stored C
 * gets the transposed product, Cᵀ = Rᵀ·Lᵀ, so that C is still written along
 * its rows: then L's panels are NR wide and R's MR wide. */
#include <blis.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pack_gemm.h"
#include "runtime.h"
#include "transpose.h"

typedef void (*ukr_fn)(dim_t m, dim_t n, dim_t k, float *alpha, float *a, float *b, float *beta,
                       float *c, inc_t rs_c, inc_t cs_c, auxinfo_t *data, cntx_t *cntx);

/* Two kernels: [0] the main BLIS instance's, for the general products
 * (ul_pk_get), and [1] one in its native orientation with 16-lane R
 * panels for the callers that lay R panels out themselves
 * (ul_pk_get_native): the main one's where it is such a kernel, else a
 * second BLIS instance's (runtime.c, load_packed). */
typedef struct {
    ul_pk pk;
    ukr_fn f;
    cntx_t *cntx;
    int mr, nr;      /* the kernel's tile */
    bool rows;       /* the kernel prefers row-stored C */
    bool usable;
} kernel;
static kernel kern[2];
static bool pinned; /* UNLEARN_PACKED_ARCH names the packed paths' kernels */
static pthread_once_t kern_once = PTHREAD_ONCE_INIT;
static bool forced_cols;
static ul_pk forced_pk;

static bool kernel_from(kernel *kn, cntx_t *cntx, int kid)
{
    if (!cntx)
        return false;
    ukr_fn f = (ukr_fn)bli_cntx_get_l3_nat_ukr_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cntx);
    int mr = (int)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MR, cntx);
    int nr = (int)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, cntx);
    if (!f || mr < 1 || nr < 1 || mr > 64 || nr > 64)
        return false;
    kn->f = f;
    kn->cntx = cntx;
    kn->mr = mr;
    kn->nr = nr;
    kn->rows = bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cntx);
    kn->pk.wl = kn->rows ? mr : nr;
    kn->pk.wr = kn->rows ? nr : mr;
    kn->pk.kid = kid;
    kn->usable = true;
    return true;
}

static void kern_init(void)
{
    /* UNLEARN_PACKED_GEMM=0 turns the packed path off (for comparison, or
     * if a BLIS build misbehaves); the callers then use bli_sgemm. */
    const char *e = getenv("UNLEARN_PACKED_GEMM");
    if (e && strcmp(e, "0") == 0)
        return;
    ul_runtime_init();
    const char *pin = getenv("UNLEARN_PACKED_ARCH");
    pinned = pin && *pin;
    if (!kernel_from(&kern[0], bli_gks_query_cntx(), 0))
        return;
    cntx_t *second = ul_runtime_packed_cntx();
    if (second)
        kernel_from(&kern[1], second, 1);
    else if (kern[0].rows && kern[0].nr == 16)
        kern[1] = kern[0];
}

const ul_pk *ul_pk_get(void)
{
    pthread_once(&kern_once, kern_init);
    if (!kern[0].usable)
        return NULL;
    return forced_cols ? &forced_pk : &kern[0].pk;
}

const ul_pk *ul_pk_get_native(void)
{
    pthread_once(&kern_once, kern_init);
    return kern[1].usable ? &kern[1].pk : NULL;
}

const ul_pk *ul_pk_get_wide(void)
{
    pthread_once(&kern_once, kern_init);
    const kernel *k0 = &kern[0];
    if (!k0->usable || k0->rows || k0->pk.wr != 32 || k0->pk.wl > 16 || pinned)
        return NULL;
    return &k0->pk;
}

void ul_pk_force_cols(bool on)
{
    pthread_once(&kern_once, kern_init);
    forced_cols = on && kern[0].usable;
    forced_pk = (ul_pk){kern[0].nr, kern[0].mr, 0};
}

/* Whether the tiles are computed transposed (column-preferring path). */
static bool kern_transposed(const ul_pk *pk)
{
    return pk == &forced_pk || !kern[pk->kid].rows;
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

size_t ul_pk_l_size(const ul_pk *pk, int m, int k)
{
    return round_up((size_t)m, (size_t)pk->wl) * (size_t)k;
}

size_t ul_pk_r_size(const ul_pk *pk, int n, int k)
{
    size_t cols = (size_t)(n < UL_PK_NC ? n : UL_PK_NC);
    size_t depth = (size_t)(k < UL_PK_KC ? k : UL_PK_KC);
    return depth * round_up(cols, (size_t)pk->wr);
}

/* Packs the rows [0, m) of a matrix into panels of w rows, k-blocked by
 * UL_PK_KC: block b (k0 = b·KC, kc deep) starts at round_up(m, w)·k0, its
 * panel i0 at i0·kc within that, element [kk·w + lane] = row i0+lane at
 * depth k0+kk, zero past row m. by_rows: row i, depth kk is a[i·lda + kk];
 * otherwise a[kk·lda + i]. */
static void pack_panels(float *dst, int w, const float *a, int m, int k, int lda, bool by_rows)
{
    const size_t mr = round_up((size_t)m, (size_t)w);
    for (int k0 = 0; k0 < k; k0 += UL_PK_KC) {
        const int kc = k - k0 < UL_PK_KC ? k - k0 : UL_PK_KC;
        float *blk = dst + mr * (size_t)k0;
        for (int i0 = 0; i0 < m; i0 += w) {
            float *p = blk + (size_t)i0 * kc;
            const int rows = m - i0 < w ? m - i0 : w;
            if (!by_rows && rows == w && (w == 16 || w == 6)) {
                /* Whole panels of the usual widths, with copies the
                 * compiler unrolls and vectorizes. */
                const float *src = a + (size_t)k0 * lda + i0;
                if (w == 16)
                    for (int kk = 0; kk < kc; kk++)
                        memcpy(p + (size_t)kk * 16, src + (size_t)kk * lda, 16 * sizeof(float));
                else
                    for (int kk = 0; kk < kc; kk++)
                        memcpy(p + (size_t)kk * 6, src + (size_t)kk * lda, 6 * sizeof(float));
            } else if (!by_rows) {
                /* Row kk of the panel is a[(k0+kk)·lda + i0 .. +rows]. */
                for (int kk = 0; kk < kc; kk++) {
                    const float *src = a + (size_t)(k0 + kk) * lda + i0;
                    float *d = p + (size_t)kk * w;
                    for (int r = 0; r < rows; r++)
                        d[r] = src[r];
                    for (int r = rows; r < w; r++)
                        d[r] = 0.0f;
                }
            } else {
                if (rows < w)
                    memset(p, 0, (size_t)kc * w * sizeof(float));
                ul_transpose(a + (size_t)i0 * lda + k0, (size_t)lda, p, (size_t)w, rows, kc);
            }
        }
    }
}

void ul_pk_pack_l(const ul_pk *pk, float *dst, const float *a, int m, int k, int lda, bool trans)
{
    pack_panels(dst, pk->wl, a, m, k, lda, !trans);
}

size_t ul_pk_rr_size(const ul_pk *pk, int n, int k)
{
    return round_up((size_t)n, (size_t)pk->wr) * (size_t)k;
}

void ul_pk_pack_rr(const ul_pk *pk, float *dst, const float *b, int n, int k, int ldb,
                   bool trans)
{
    /* Column j of R is row j of Rᵀ: with trans, b holds Rᵀ by rows. */
    pack_panels(dst, pk->wr, b, n, k, ldb, trans);
}

/* One k-block of C = Lp·Rp: every panel pair, tiles in the kernel's
 * orientation (see the file comment). */
static void gemm_block(const kernel *kn, bool tr, int wl, int wr, int m, int n, int kc,
                       const float *lb, const float *rb, float beta, float *c, int ldc)
{
    float one = 1.0f;
    auxinfo_t aux;
    memset(&aux, 0, sizeof aux);
    for (int jp = 0; jp < n; jp += wr) {
        float *rpan = (float *)rb + (size_t)jp * kc;
        const int nn = n - jp < wr ? n - jp : wr;
        for (int ip = 0; ip < m; ip += wl) {
            float *lpan = (float *)lb + (size_t)ip * kc;
            const int mm = m - ip < wl ? m - ip : wl;
            float *ct = c + (size_t)ip * ldc + jp;
            bli_auxinfo_set_next_a(lpan, &aux);
            bli_auxinfo_set_next_b(rpan, &aux);
            if (!tr)
                kn->f(mm, nn, kc, &one, lpan, rpan, &beta, ct, ldc, 1, &aux, kn->cntx);
            else
                kn->f(nn, mm, kc, &one, rpan, lpan, &beta, ct, 1, ldc, &aux, kn->cntx);
        }
    }
}

/* The cases with nothing to multiply (an empty C, or depth 0: C = beta·C);
 * true when it handled the call. */
static bool gemm_trivial(int m, int n, int k, float beta, float *c, int ldc)
{
    if (m > 0 && n > 0 && k > 0)
        return false;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
    return true;
}

void ul_pk_gemm_pp(const ul_pk *pk, int m, int n, int kc, const float *lp, const float *rp,
                   float beta, float *c, int ldc)
{
    if (!gemm_trivial(m, n, kc, beta, c, ldc))
        gemm_block(&kern[pk->kid], kern_transposed(pk), pk->wl, pk->wr, m, n, kc, lp, rp, beta,
                   c, ldc);
}

void ul_pk_gemm(const ul_pk *pk, int m, int n, int k, const float *lp, ul_pk_pack_r_fn pack_r,
                const void *rctx, float beta, float *c, int ldc, float *rbuf)
{
    if (gemm_trivial(m, n, k, beta, c, ldc))
        return;
    const bool tr = kern_transposed(pk);
    const size_t mr = round_up((size_t)m, (size_t)pk->wl);
    for (int j0 = 0; j0 < n; j0 += UL_PK_NC) {
        const int nj = n - j0 < UL_PK_NC ? n - j0 : UL_PK_NC;
        for (int k0 = 0; k0 < k; k0 += UL_PK_KC) {
            const int kc = k - k0 < UL_PK_KC ? k - k0 : UL_PK_KC;
            pack_r(rbuf, pk->wr, j0, nj, k0, kc, rctx);
            gemm_block(&kern[pk->kid], tr, pk->wl, pk->wr, m, nj, kc, lp + mr * (size_t)k0, rbuf,
                       k0 == 0 ? beta : 1.0f, c + j0, ldc);
        }
    }
}

bool ul_pk_native(const ul_pk *pk) { return !kern_transposed(pk); }

void ul_pk_tile(const ul_pk *pk, int m, int n, int k, const float *a, const float *b, float beta,
                float *c, int ldc)
{
    const kernel *kn = &kern[pk->kid];
    float one = 1.0f;
    auxinfo_t aux;
    memset(&aux, 0, sizeof aux);
    if (!kern_transposed(pk)) {
        bli_auxinfo_set_next_a((void *)a, &aux);
        bli_auxinfo_set_next_b((void *)b, &aux);
        kn->f(m, n, k, &one, (float *)a, (float *)b, &beta, c, ldc, 1, &aux, kn->cntx);
    } else {
        bli_auxinfo_set_next_a((void *)b, &aux);
        bli_auxinfo_set_next_b((void *)a, &aux);
        kn->f(n, m, k, &one, (float *)b, (float *)a, &beta, c, 1, ldc, &aux, kn->cntx);
    }
}

/* Copies len values of src (stride 1) into R columns [col, col+len) of row
 * kk, panel by panel. */
static void put_run(float *dst, int w, int kc, int kk, int col, const float *src, int len)
{
    while (len > 0) {
        const int lane = col % w, chunk = len < w - lane ? len : w - lane;
        float *d = dst + (size_t)(col / w) * kc * w + (size_t)kk * w + lane;
        for (int t = 0; t < chunk; t++)
            d[t] = src[t];
        col += chunk;
        src += chunk;
        len -= chunk;
    }
}

/* Zeroes lanes from nj to the end of the last panel. */
static void zero_tail(float *dst, int w, int kc, int nj)
{
    const int lane = nj % w;
    if (lane == 0)
        return;
    float *p = dst + (size_t)(nj / w) * kc * w;
    for (int kk = 0; kk < kc; kk++)
        for (int t = lane; t < w; t++)
            p[(size_t)kk * w + t] = 0.0f;
}

void ul_pk_pack_rows(float *dst, int w, int j0, int nj, int k0, int kc, const void *ctx)
{
    const ul_pk_rows *r = ctx;
    for (int kk = 0; kk < kc; kk++) {
        int col = 0;
        while (col < nj) {
            const int j = j0 + col, img = j / r->seg, off = j % r->seg;
            const int len = r->seg - off < nj - col ? r->seg - off : nj - col;
            const float *src =
                r->base + (size_t)img * r->img_stride + (size_t)(k0 + kk) * r->row_stride + off;
            put_run(dst, w, kc, kk, col, src, len);
            col += len;
        }
    }
    zero_tail(dst, w, kc, nj);
}
