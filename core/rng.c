/* PCG32 (O'Neill, "PCG: A Family of Simple Fast Space-Efficient Statistically
 * Good Algorithms for Random Number Generation", 2014): 64-bit LCG state,
 * XSH-RR output. Chosen for a tiny state and a reproducible stream. */
#include <math.h>

#include "unlearn/rng.h"

void ul_rng_seed(ul_rng *r, uint64_t seed, uint64_t stream)
{
    r->state = 0;
    r->inc = (stream << 1u) | 1u;
    ul_rng_u32(r);
    r->state += seed;
    ul_rng_u32(r);
}

uint32_t ul_rng_u32(ul_rng *r)
{
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

double ul_rng_uniform(ul_rng *r)
{
    /* 53 random bits from two draws. */
    uint64_t hi = ul_rng_u32(r) >> 5, lo = ul_rng_u32(r) >> 6;
    return (double)(hi * 67108864.0 + lo) / 9007199254740992.0;
}

uint32_t ul_rng_below(ul_rng *r, uint32_t n)
{
    uint32_t threshold = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t x = ul_rng_u32(r);
        if (x >= threshold)
            return x % n;
    }
}

double ul_rng_normal(ul_rng *r)
{
    double u1;
    do {
        u1 = ul_rng_uniform(r);
    } while (u1 <= 0.0);
    double u2 = ul_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void ul_rng_shuffle_i64(ul_rng *r, int64_t *a, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ul_rng_below(r, (uint32_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
