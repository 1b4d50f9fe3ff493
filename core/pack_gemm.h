/* Private: GEMM around BLIS's own micro-kernel, with caller-supplied
 * packing.
 *
 * bli_sgemm copies (packs) both operands into micro-panels and then runs
 * the micro-kernel over them. A convolution's right operand is an im2col
 * matrix that would otherwise be written out first and then packed again;
 * here the caller packs it straight from the image, and the weights are
 * packed once per call instead of once per GEMM. It also skips bli_sgemm's
 * per-call set-up, which costs about as much as a small convolution block's
 * arithmetic (10 µs against 18 µs for 16×256×144 on one Zen 3 core).
 *
 * Terms: C (m×n) = L (m×k) · R (k×n) + beta·C, C row-major with row
 * stride ldc. L and R are packed into panels of wl rows / wr columns:
 * panel element [kk·w + lane], zero beyond the matrix edge. */
#ifndef UL_PACK_GEMM_H
#define UL_PACK_GEMM_H

#include <stdbool.h>
#include <stddef.h>

/* k is cut into blocks of UL_PK_KC; R is packed UL_PK_NC columns at a time. */
#define UL_PK_KC 256
#define UL_PK_NC 512

typedef struct ul_pk {
    int wl, wr;  /* panel widths of L and R */
    int kid;     /* whose kernel: 0 the main BLIS instance's, 1 the second one's */
} ul_pk;

/* The micro-kernel's geometry, or NULL when BLIS offers none usable (the
 * callers then use ul_sgemm). force_cols (tests only) drives a
 * row-preferring kernel through the column-preferring code path. */
const ul_pk *ul_pk_get(void);

/* A kernel in its native orientation with 16-lane R panels, for the
 * callers that lay R panels out themselves and call ul_pk_tile (the
 * Winograd and shifted-copy convolutions): the main BLIS instance's where
 * it is one (AVX2's 6×16), else a second instance's (runtime.c), else
 * NULL. Every ul_pk_* function takes either geometry. */
const ul_pk *ul_pk_get_native(void);

/* The main kernel when it is AVX-512's (skx: tiles computed transposed,
 * R panels of 32 lanes, L panels of 12) and UNLEARN_PACKED_ARCH does not
 * pin the packed paths to one configuration; else NULL. The forward
 * Winograd products with 4×4 tiles take it (ops_wino.c). */
const ul_pk *ul_pk_get_wide(void);
void ul_pk_force_cols(bool on);

/* Floats of a whole packed L (m×k). */
size_t ul_pk_l_size(const ul_pk *pk, int m, int k);
/* Floats of the R buffer ul_pk_gemm needs for n columns and depth k; it
 * must start on a 64-byte boundary (the kernels load R's panels aligned). */
size_t ul_pk_r_size(const ul_pk *pk, int n, int k);

/* Packs L (m×k) from a row-major matrix a: L[i][kk] = a[i·lda + kk], or with
 * trans L[i][kk] = a[kk·lda + i]. */
void ul_pk_pack_l(const ul_pk *pk, float *dst, const float *a, int m, int k, int lda, bool trans);

/* A whole R (k×n) packed up front, k-blocked like L: block k0 at
 * round_up(n, wr)·k0, its panel j0 at j0·kc. ul_pk_pack_rr packs it from
 * a row-major matrix b: R[kk][j] = b[kk·ldb + j], or with trans
 * R[kk][j] = b[j·ldb + kk]. */
size_t ul_pk_rr_size(const ul_pk *pk, int n, int k);
void ul_pk_pack_rr(const ul_pk *pk, float *dst, const float *b, int n, int k, int ldb,
                   bool trans);

/* C = Lp·Rp + beta·C for one depth block (kc ≤ UL_PK_KC) with both
 * operands packed (64-byte aligned). */
void ul_pk_gemm_pp(const ul_pk *pk, int m, int n, int kc, const float *lp, const float *rp,
                   float beta, float *c, int ldc);

/* Packs R's columns [j0, j0+nj) over k range [k0, k0+kc): panel p at
 * dst + p·kc·w, element [kk·w + lane]; a last partial panel is zero-filled. */
typedef void (*ul_pk_pack_r_fn)(float *dst, int w, int j0, int nj, int k0, int kc,
                                const void *ctx);

/* C = Lp·R + beta·C (beta 0: C is not read). rbuf holds ul_pk_r_size(n, k).
 * lp and rbuf start on 64-byte boundaries: either may be the operand the
 * micro-kernel loads with aligned vector loads. */
void ul_pk_gemm(const ul_pk *pk, int m, int n, int k, const float *lp, ul_pk_pack_r_fn pack_r,
                const void *rctx, float beta, float *c, int ldc, float *rbuf);

/* Whether tiles run in the kernel's own orientation (row-stored C, L as the
 * kernel's A). Callers that lay out R panels themselves need this. */
bool ul_pk_native(const ul_pk *pk);

/* One micro-tile: C (m×n, m ≤ wl, n ≤ wr, row stride ldc) = a·b + beta·C
 * for a single packed L panel a and R panel b of depth k (b 64-byte
 * aligned), in either orientation. */
void ul_pk_tile(const ul_pk *pk, int m, int n, int k, const float *a, const float *b, float beta,
                float *c, int ldc);

/* An R packer for a matrix stored by rows in NCHW blocks: the columns run
 * over nimg images of seg values each, row kk of image i starting at
 * base + i·img_stride + kk·row_stride. Covers dY blocks and 1×1 inputs. */
typedef struct ul_pk_rows {
    const float *base;
    size_t img_stride, row_stride;
    int seg;
} ul_pk_rows;
void ul_pk_pack_rows(float *dst, int w, int j0, int nj, int k0, int kc, const void *ctx);

#endif
