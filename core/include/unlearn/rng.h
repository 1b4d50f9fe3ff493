/* unlearn — seeded random numbers. The same seed gives the same stream on
 * every machine (PCG32; normals by Box–Muller in double precision). */
#ifndef UNLEARN_RNG_H
#define UNLEARN_RNG_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ul_rng {
    uint64_t state;
    uint64_t inc;
} ul_rng;

UL_API void ul_rng_seed(ul_rng *r, uint64_t seed, uint64_t stream);
UL_API uint32_t ul_rng_u32(ul_rng *r);
/* Uniform in [0, 1). */
UL_API double ul_rng_uniform(ul_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
UL_API uint32_t ul_rng_below(ul_rng *r, uint32_t n);
UL_API double ul_rng_normal(ul_rng *r);
/* Fisher–Yates shuffle of an index array. */
UL_API void ul_rng_shuffle_i64(ul_rng *r, int64_t *a, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
