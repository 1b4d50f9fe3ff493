/* unlearn-bench-conv: the 3×3, stride-1, padded convolution layers of
 * ResNet-18 (widths 0.25, 0.5 and 1; 3×32×32 and 1×28×28 inputs), timed on
 * one thread for a thread's share of a batch of 128 (64 images), through
 * the direct paths and through the Winograd path, forward and backward
 * (input and weight gradients). It is the measurement behind the Winograd
 * path's thresholds (ops_wino.c) and prints, per layer, which path the
 * thresholds pick.
 *
 *   build/bench/unlearn-bench-conv [--images N] [--reps R] [--layer C,HxW]
 *                                  [--strided C,K,HxW] [--conv C,K,HxW,S]
 *
 * --strided times one 3×3, stride-2, pad-1 layer (C → K channels, HxW
 * inputs) instead, forward and backward, through the paths the library
 * picks, and where the AVX-512 path with output channels in registers
 * takes its forward pass, that pass again with the path off; --conv the
 * same for stride S. In the table of stride-1 layers, "dir" is whatever
 * the one-thread forward pass takes without Winograd's path (that AVX-512
 * path for up to 16 channels). Times are the best of R repetitions
 * (default 5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_local.h"
#include "ops_wino.h"
#include "pack_gemm.h"
#include "runtime.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *buffer(size_t n, unsigned seed)
{
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, (n + 16) * sizeof(float)) != 0) {
        fprintf(stderr, "error: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

typedef struct {
    int C, HW; /* channels in and out, image side */
} layer;

/* Best-of-reps seconds of one pass: 0 forward, 1 backward (dX and dW). */
static double time_pass(const ul_conv_shape *s, int pass, int reps, float *out, float *in,
                        float *w, float *dout, float *din, float *dw, float *scratch)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now_s();
        if (pass == 0)
            ul_conv2d_forward_local(out, in, w, NULL, s, scratch);
        else
            ul_conv2d_backward_local(din, dw, NULL, dout, in, w, s, scratch, false);
        t = now_s() - t;
        best = t < best ? t : best;
    }
    return best;
}

/* Turns the AVX-512 Winograd path and the direct one off (or on again). */
static void avx512_paths_off(bool kwino, bool kvec)
{
    ul_conv_kwino_force_off(kwino);
    ul_conv_kvec_force_off(kvec);
}

/* --strided and --conv: one 3×3, pad-1 layer, forward and backward (dX and
 * dW), and the forward pass again without the AVX-512 paths with channels
 * in registers. */
static int time_strided(int N, int reps, int C, int K, int HW, int stride)
{
    ul_conv_shape s;
    if (!ul_conv_shape_init(&s, N, C, HW, HW, K, 3, 3, stride, 1)) {
        fprintf(stderr, "error: bad layer %d,%d,%dx%d,%d\n", C, K, HW, HW, stride);
        return 2;
    }
    const size_t nin = (size_t)N * C * HW * HW, nout = (size_t)N * K * s.P * s.Q;
    const size_t nw = (size_t)C * K * 9;
    float *in = buffer(nin, 1), *out = buffer(nout, 2), *w = buffer(nw, 3);
    float *dout = buffer(nout, 4), *din = buffer(nin, 5), *dw = buffer(nw, 6);
    const size_t s_on = ul_conv2d_local_scratch(&s);
    avx512_paths_off(true, true);
    const size_t s_off = ul_conv2d_local_scratch(&s);
    avx512_paths_off(false, false);
    float *scratch = buffer(s_on > s_off ? s_on : s_off, 7);
    const bool kwino = ul_conv_kwino_ok(&s), kvec = ul_conv_kvec_ok(&s);
    const double f = time_pass(&s, 0, reps, out, in, w, dout, din, dw, scratch);
    const double b = time_pass(&s, 1, reps, out, in, w, dout, din, dw, scratch);
    const double macs = (double)N * K * C * 9 * s.P * s.Q;
    printf("one thread, %d images, best of %d: %d -> %d channels, 3x3 stride %d, %dx%d -> "
           "%dx%d: forward %.3f ms (%.0f GFLOP/s; %s), backward %.3f ms (%.0f GFLOP/s)\n",
           N, reps, C, K, stride, HW, HW, s.P, s.Q, f * 1e3, 2 * macs / f * 1e-9,
           kwino  ? "Winograd with channels in registers"
           : kvec ? "output channels in registers"
                  : "not an AVX-512 path",
           b * 1e3, 4 * macs / b * 1e-9);
    /* The forward pass again without the path taken: with only the
     * Winograd one off, the direct one where it takes the layer; with
     * both off, the paths of other CPUs. */
    if (kwino && kvec) {
        avx512_paths_off(true, false);
        const double f1 = time_pass(&s, 0, reps, out, in, w, dout, din, dw, scratch);
        printf("  forward with output channels in registers instead: %.3f ms (%.0f GFLOP/s)\n",
               f1 * 1e3, 2 * macs / f1 * 1e-9);
    }
    if (kwino || kvec) {
        avx512_paths_off(true, true);
        const double f0 = time_pass(&s, 0, reps, out, in, w, dout, din, dw, scratch);
        printf("  forward with the AVX-512 paths off: %.3f ms (%.0f GFLOP/s)\n", f0 * 1e3,
               2 * macs / f0 * 1e-9);
    }
    avx512_paths_off(false, false);
    free(in), free(out), free(w), free(dout), free(din), free(dw), free(scratch);
    return 0;
}

int main(int argc, char **argv)
{
    int N = 64, reps = 5, one_c = 0, one_hw = 0, s2[4] = {0, 0, 0, 2};
    bool strided = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--images") == 0 && i + 1 < argc)
            N = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--layer") == 0 && i + 1 < argc &&
                 sscanf(argv[i + 1], "%d,%dx%*d", &one_c, &one_hw) == 2)
            i++;
        else if (strcmp(argv[i], "--strided") == 0 && i + 1 < argc &&
                 sscanf(argv[i + 1], "%d,%d,%dx%*d", &s2[0], &s2[1], &s2[2]) == 3) {
            strided = true;
            i++;
        } else if (strcmp(argv[i], "--conv") == 0 && i + 1 < argc &&
                   sscanf(argv[i + 1], "%d,%d,%dx%*d,%d", &s2[0], &s2[1], &s2[2], &s2[3]) == 4) {
            strided = true;
            i++;
        } else {
            fprintf(stderr,
                    "usage: unlearn-bench-conv [--images N] [--reps R] [--layer C,HxW] "
                    "[--strided C,K,HxW] [--conv C,K,HxW,S]\n"
                    "  (unknown or incomplete argument '%s')\n",
                    argv[i]);
            return 2;
        }
    }
    if (N < 1 || reps < 1 || (one_c && (one_c < 1 || one_hw < 1)) ||
        (strided && (s2[0] < 1 || s2[1] < 1 || s2[2] < 1 || s2[3] < 1))) {
        fprintf(stderr, "error: --images, --reps, --layer, --strided and --conv take positive "
                        "numbers\n");
        return 2;
    }
    ul_runtime_init();
    /* One thread throughout: the helpers that thread themselves outside a
     * parallel region (im2col of the strided layers, say) would otherwise
     * take both cores in a measurement of one thread's share. */
    ul_runtime_set_threads(1);
    if (strided)
        return time_strided(N, reps, s2[0], s2[1], s2[2], s2[3]);
    if (!ul_pk_get()) {
        fprintf(stderr, "error: BLIS offers no micro-kernel the packed paths can use "
                        "(or UNLEARN_PACKED_GEMM=0): there is no Winograd path to time\n");
        return 1;
    }
    /* ResNet-18 at widths 0.25, 0.5 and 1, on 3×32×32 and 1×28×28. */
    static const layer all[] = {
        {16, 32}, {32, 16}, {64, 8},  {128, 4}, {32, 32}, {64, 16}, {128, 8},
        {256, 4}, {64, 32}, {128, 16}, {256, 8}, {512, 4}, {16, 28}, {32, 14},
        {64, 7},  {32, 28}, {64, 14}, {128, 7}, {64, 28}, {128, 14}, {256, 7},
    };
    layer mine = {one_c, one_hw};
    const layer *list = one_c ? &mine : all;
    const int count = one_c ? 1 : (int)(sizeof all / sizeof all[0]);
    printf("one thread, %d images, best of %d; ms per pass, direct / Winograd (speed-up); "
           "* = the path the thresholds pick\n",
           N, reps);
    printf("%5s %7s | %9s %9s %9s %6s | %9s %9s %9s %9s %9s %6s\n", "C=K", "image", "fwd dir",
           "fwd F2", "fwd F4", "x", "bwd dir", "bwd F2", "F4+F2", "F4+dir", "F4+F4", "x");
    for (int li = 0; li < count; li++) {
        ul_conv_shape s;
        const int C = list[li].C, HW = list[li].HW;
        if (!ul_conv_shape_init(&s, N, C, HW, HW, C, 3, 3, 1, 1)) {
            fprintf(stderr, "error: bad layer %d,%dx%d\n", C, HW, HW);
            return 2;
        }
        const size_t nin = (size_t)N * C * HW * HW, nw = (size_t)C * C * 9;
        float *in = buffer(nin, 1), *out = buffer(nin, 2), *w = buffer(nw, 3);
        float *dout = buffer(nin, 4), *din = buffer(nin, 5), *dw = buffer(nw, 6);
        ul_wino_force(1);
        const size_t sw = ul_conv2d_local_scratch(&s);
        ul_wino_force(2);
        size_t sw4 = ul_conv2d_local_scratch(&s);
        for (int mode = 3; mode <= 4; mode++) {
            ul_wino_force(mode);
            const size_t sm = ul_conv2d_local_scratch(&s);
            sw4 = sm > sw4 ? sm : sw4;
        }
        ul_wino_force(0);
        const int pick_f = ul_wino_tile(&s);
        /* Backward: 0 direct, 1 F(2×2) for both, 2 dX by F(4×4) and dW by
         * F(2×2), 3 dX by F(4×4) and dW direct, 4 both by F(4×4). */
        const bool dx4 = ul_wino_dx_ok(&s), dw_wino = ul_wino_ok(&s, true);
        const int dwt = ul_wino_dw_tile(&s);
        const int pick_b = dx4 ? (!dw_wino ? 3 : dwt == 4 ? 4 : 2) : dw_wino ? 1 : 0;
        float *scratch = buffer(sw > sw4 ? sw : sw4, 7);
        /* Forward: direct, 2×2 tiles, 4×4 tiles. */
        double t[2][5];
        for (int pass = 0; pass < 2; pass++)
            for (int path = 0; path < (pass ? 5 : 3); path++) {
                ul_wino_force(path ? path : -1);
                t[pass][path] = time_pass(&s, pass, reps, out, in, w, dout, din, dw, scratch);
            }
        ul_wino_force(0);
        double best_f = t[0][1] < t[0][2] ? t[0][1] : t[0][2], best_b = t[1][1];
        for (int p = 2; p < 5; p++)
            best_b = t[1][p] < best_b ? t[1][p] : best_b;
        printf("%5d %3dx%-3d | %8.2f%s %8.2f%s %8.2f%s %5.2fx |", C, HW, HW, t[0][0] * 1e3,
               pick_f ? " " : "*", t[0][1] * 1e3, pick_f == 2 ? "*" : " ", t[0][2] * 1e3,
               pick_f == 4 ? "*" : " ", t[0][0] / best_f);
        for (int p = 0; p < 5; p++)
            printf(" %8.2f%s", t[1][p] * 1e3, pick_b == p ? "*" : " ");
        printf(" %5.2fx\n", t[1][0] / best_b);
        fflush(stdout);
        free(in), free(out), free(w), free(dout), free(din), free(dw), free(scratch);
    }
    return 0;
}
