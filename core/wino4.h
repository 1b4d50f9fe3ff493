/* Private: the arithmetic of Winograd's F(4×4, 3×3) shared by its two
 * paths. */
#ifndef UL_WINO4_H
#define UL_WINO4_H

/* The forward F(4×4, 3×3): 4×4 output tiles from 6×6 input patches whose
 * top-left corner is (4·ty − 1, 4·tx − 1), with (Lavin & Gray's points
 * 0, ±1, ±2)
 *     Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0;
 *           0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
 *     G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1],
 *     Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]:
 * 36 products of K·C per 16 outputs against the direct convolution's
 * 9·16, 4× fewer multiply-adds (2.25× for F(2×2, 3×3)). Its larger
 * coefficients round worse: on a 64-channel 14×14 layer the largest error
 * against the double-precision reference was 7e-6 of the largest output,
 * against 3e-7 with 2×2 tiles and 6e-7 for the direct paths.
 *
 * The macros take floats or vectors of them (ops_wino.c, ops_conv_kwino.c). */

/* Bᵀ applied to six values (a row or a column of a patch): its first
 * three outputs (from d0 .. d4), its last three (from d1 .. d5), and all
 * six. */
#define WINO4_BT_LO(d0, d1, d2, d3, d4, o0, o1, o2)                                              \
    do {                                                                                       \
        const __typeof__(d0) t1_ = (d4) - 4.0f * (d2), t2_ = (d3) - 4.0f * (d1);               \
        (o0) = 4.0f * (d0) - 5.0f * (d2) + (d4);                                               \
        (o1) = t1_ + t2_;                                                                      \
        (o2) = t1_ - t2_;                                                                      \
    } while (0)
#define WINO4_BT_HI(d1, d2, d3, d4, d5, o3, o4, o5)                                              \
    do {                                                                                       \
        const __typeof__(d1) t3_ = (d4) - (d2), t4_ = 2.0f * ((d3) - (d1));                    \
        (o3) = t3_ + t4_;                                                                      \
        (o4) = t3_ - t4_;                                                                      \
        (o5) = 4.0f * (d1) - 5.0f * (d3) + (d5);                                               \
    } while (0)
#define WINO4_BT(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)                                  \
    do {                                                                                       \
        WINO4_BT_LO(d0, d1, d2, d3, d4, o0, o1, o2);                                           \
        WINO4_BT_HI(d1, d2, d3, d4, d5, o3, o4, o5);                                           \
    } while (0)

/* Aᵀ applied to six values. */
#define WINO4_AT(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                                          \
    do {                                                                                       \
        const __typeof__(m0) a_ = (m1) + (m2), b_ = (m1) - (m2), c_ = (m3) + (m4), d_ = (m3) - (m4);    \
        (o0) = (m0) + a_ + c_;                                                                 \
        (o1) = b_ + 2.0f * d_;                                                                 \
        (o2) = a_ + 4.0f * c_;                                                                 \
        (o3) = b_ + 8.0f * d_ + (m5);                                                          \
    } while (0)

#endif
