/* Private: out-of-place float transposes for the packing code. */
#ifndef UL_TRANSPOSE_H
#define UL_TRANSPOSE_H

#include <stddef.h>

/* dst[j·ds + i] = src[i·ss + j] for i < rows, j < cols: 8×8 blocks with
 * AVX2 shuffles where the CPU has them. Reads only the rows and columns
 * named. */
void ul_transpose(const float *src, size_t ss, float *dst, size_t ds, int rows, int cols);

#endif
