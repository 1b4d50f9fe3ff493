/* The unlearning pipeline end to end through the CLI on synthetic data:
 * output files, caching of the original and retrained models, resuming,
 * diverged grid points, and the error message of every bad input. */
#include <check.h>

#include "cli_util.h"
#include <blis.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char *read_text(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s is missing", name);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static const char *base =
    "seed: 2\n"
    "dataset:\n"
    "  name: synthetic\n"
    "  val_fraction: 0.2\n"
    "  params: {n_train: 500, n_test: 300, classes: 3, width: 6}\n"
    "model: {name: mlp, width: [0.05, 0.25]}\n"
    "train: {epochs: 4, batch_size: 32, lr: 0.05}\n";

START_TEST(tiny_pipeline_end_to_end_and_cache)
{
    char y[8192], out[65536];
    snprintf(y, sizeof y,
             "%sforget: {size: 30, seed: 4}\n"
             "methods:\n"
             "  - name: finetune\n"
             "    params: {epochs: 1}\n"
             "    grid: {lr: [0.01, 0.05]}\n"
             "  - name: neggrad_plus\n"
             "    params: {epochs: 1}\n"
             "    grid: [{alpha: 0.9, lr: 0.01}, {alpha: 0.5, lr: 500}]\n"
             "goals: {privacy: [0.2, 0.6], bias: [0.5]}\n"
             "keep_checkpoints: all\n",
             base);
    write_text("p.yaml", y);
    int st = run_cli("run p.yaml -o run", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == 0, "run failed (%d): %s", st, out);
    ck_assert_ptr_nonnull(strstr(out, "MIA(test)"));
    ck_assert_ptr_nonnull(strstr(out, "diverged"));

    const char *files[] = {"run/config.resolved.yaml", "run/metrics.json",
                           "run/forget_indices.txt", "run/results.csv", "run/results.jsonl",
                           "run/selected.csv",
                           "run/checkpoints/original_w0.05_s2.safetensors",
                           "run/checkpoints/retrained_w0.25_s2.safetensors",
                           "run/checkpoints/unlearned/finetune_w0.25_s2_p1.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        ck_assert_msg(exists_in_tmp(files[i]), "%s missing", files[i]);

    /* 30 indices plus a comment line. */
    char *fi = read_text("run/forget_indices.txt");
    ck_assert_int_eq(count_lines(fi), 31);
    free(fi);
    /* results: per width 2 reference rows + 4 grid points = 12 rows. */
    char *jl = read_text("run/results.jsonl");
    ck_assert_int_eq(count_lines(jl), 12);
    ck_assert_ptr_nonnull(strstr(jl, "\"diverged\": true"));
    ck_assert_ptr_nonnull(strstr(jl, "\"mia_loss_val\""));
    ck_assert_ptr_nonnull(strstr(jl, "\"alpha\": 0.9"));
    free(jl);
    /* selected: 2 widths x 2 methods x 3 (goal, λ) = 12 rows + header; the
     * diverged point is never selected. */
    char *sel = read_text("run/selected.csv");
    ck_assert_int_eq(count_lines(sel), 13);
    ck_assert_ptr_null(strstr(sel, "\"\"lr\"\": 500"));
    free(sel);
    char *csv = read_text("run/results.csv");
    ck_assert_ptr_nonnull(strstr(csv, "width,seed,params,method,plugin,point,diverged"));
    free(csv);

    /* A second run reuses the reference models and every finished point. */
    st = run_cli("run p.yaml -o run", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "original model reused"));
    ck_assert_ptr_nonnull(strstr(out, "retrained model reused"));
    ck_assert_msg(!strstr(out, "training the"), "a reference model was trained again:\n%s", out);
    ck_assert_msg(!strstr(out, "point 1/2"), "a finished point ran again:\n%s", out);

    /* Adding a method trains nothing again and runs only the new points. */
    snprintf(y + strlen(y) - strlen("keep_checkpoints: all\n"), 512,
             "keep_checkpoints: all\n");
    char y2[8192];
    snprintf(y2, sizeof y2, "%s", y);
    char *m = strstr(y2, "goals:");
    char tail[1024];
    snprintf(tail, sizeof tail, "%s", m);
    snprintf(m, sizeof y2 - (size_t)(m - y2),
             "  - name: l1sparse\n    params: {epochs: 1}\n%s", tail);
    write_text("p2.yaml", y2);
    st = run_cli("run p2.yaml -o run", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == 0, "%s", out);
    ck_assert(!strstr(out, "training the"));
    ck_assert_ptr_nonnull(strstr(out, "l1sparse point 1/1"));
    ck_assert(!strstr(out, "finetune point"));
    jl = read_text("run/results.jsonl");
    ck_assert_int_eq(count_lines(jl), 14);
    free(jl);
}
END_TEST

START_TEST(mislabeled_forget_set_plants_labels)
{
    char y[8192], out[65536];
    snprintf(y, sizeof y,
             "%sforget: {size: 20, selection: mislabeled, target: 1, retrain: false}\n"
             "metrics: [errors]\n",
             base);
    write_text("m.yaml", y);
    int st = run_cli("run m.yaml -o mis", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == 0, "%s", out);
    /* The original memorises the planted labels: forget error is measured
     * against them, so it is low for the original. */
    char *jl = read_text("mis/results.jsonl");
    ck_assert_ptr_nonnull(strstr(jl, "\"method\": \"original\""));
    ck_assert_ptr_null(strstr(jl, "\"method\": \"retrained\""));
    free(jl);
    ck_assert(!exists_in_tmp("mis/checkpoints/retrained_w0.05_s2.safetensors"));
}
END_TEST

static void expect_error(const char *yaml_tail, int status, const char *needle)
{
    char y[8192], out[16384];
    snprintf(y, sizeof y, "%s%s", base, yaml_tail);
    write_text("bad.yaml", y);
    int st = run_cli("run bad.yaml -o bad_run", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == status, "exit %d (want %d) for:\n%s\n%s", st, status, yaml_tail, out);
    ck_assert_msg(strstr(out, needle), "expected '%s' in: %s", needle, out);
    ck_assert_msg(!exists_in_tmp("bad_run"), "a run directory was written despite the error");
}

START_TEST(bad_unlearning_inputs)
{
    /* Line numbers: base has 7 lines, so the tail starts at line 8. */
    expect_error("forget: {size: 10}\nmethods: [{name: unscrub}]\n", 2,
                 "bad.yaml:9:18: no method plugin named 'unscrub'");
    expect_error("forget: {size: 10}\nmetrics: [errors, mia_lost]\n", 2,
                 "bad.yaml:9:19: no metric plugin named 'mia_lost' (did you mean 'mia_loss'?)");
    expect_error("forget: {size: 10}\ngoals: {privcy: [0.2]}\n", 2,
                 "bad.yaml:9:9: no goal plugin named 'privcy' (did you mean 'privacy'?)");
    expect_error("forget: {size: 10}\nmethods:\n  - name: scrub\n    grid: {lrr: [0.1]}\n", 2,
                 "bad.yaml:11:12: methods[0]: method 'scrub' declares no parameter 'lrr' (did "
                 "you mean 'lr'?)");
    expect_error("forget: {size: 10}\nmethods:\n  - name: scrub\n    grid: {lr: [0.1, -1]}\n", 2,
                 "bad.yaml:11:22: methods[0].lr:");
    expect_error("forget: {size: 0}\n", 2,
                 "bad.yaml:8:16: forget.size must be at least 1: an empty forget set");
    expect_error("forget: {size: 100000}\n", 2,
                 "forget.size is 100000 but only 401 eligible training examples exist");
    expect_error("forget: {size: 10}\ngoals: {bias: [0.3, 1.5]}\n", 2,
                 "bad.yaml:9:21: goal 'bias': lambda must be in [0, 1], got '1.5'");
    expect_error("forget: {size: 10}\ngoals: {bias: [-0.1]}\n", 2,
                 "goal 'bias': lambda must be in [0, 1], got '-0.1'");
    expect_error("methods: [{name: scrub}]\n", 2, "methods and goals need a `forget` section");
    expect_error("forget: {size: 10, selection: classes}\n", 2,
                 "selection 'classes' needs a list of classes");
    expect_error("forget: {size: 10, indices_file: nowhere.txt}\n", 1,
                 "nowhere.txt: cannot open");
}
END_TEST

START_TEST(indices_file_reuses_an_exact_set)
{
    char y[8192], out[65536];
    snprintf(y, sizeof y, "%sforget: {size: 12, seed: 9}\nmetrics: [errors]\n", base);
    write_text("a.yaml", y);
    ck_assert_int_eq(run_cli("run a.yaml -o ra", out, sizeof out, "UNLEARN_THREADS=1"), 0);
    snprintf(y, sizeof y,
             "%sforget: {indices_file: ra/forget_indices.txt, size: 1}\nmetrics: [errors]\n",
             base);
    write_text("b.yaml", y);
    int st = run_cli("run b.yaml -o rb", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_msg(st == 0, "%s", out);
    char *a = read_text("ra/forget_indices.txt"), *b = read_text("rb/forget_indices.txt");
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    /* An index outside the training split is refused with file:line. */
    write_text("bad_idx.txt", "# header\n3\n99999\n");
    snprintf(y, sizeof y, "%sforget: {indices_file: bad_idx.txt}\n", base);
    write_text("c.yaml", y);
    st = run_cli("run c.yaml -o rc", out, sizeof out, "UNLEARN_THREADS=1");
    ck_assert_int_ne(st, 0);
    ck_assert_msg(strstr(out, "bad_idx.txt:3: '99999' is not a training-set index"), "%s", out);
    ck_assert(!exists_in_tmp("rc"));
}
END_TEST

/* Which micro-kernel the packed convolution paths take (runtime.c,
 * load_packed), read off `unlearn --version` with BLIS's configuration
 * forced. No kernel runs, so the AVX-512 case is checked on any x86 CPU
 * with AVX2 and FMA: with the main instance on skx (32×12 tiles, C by
 * columns) a second instance must serve an AVX2 kernel, zen3 on AMD CPUs
 * and haswell elsewhere; with haswell's kernel the main one serves;
 * UNLEARN_PACKED_ARCH=main keeps skx's, a configuration's name forces the
 * second instance, and an unknown name is reported and ignored. */
START_TEST(packed_kernels_from_a_second_instance)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return;
    const char *avx2 = __builtin_cpu_is("amd") ? "zen3" : "haswell";
    char out[4096], env[160], want[160];
    snprintf(env, sizeof env, "BLIS_ARCH_TYPE=%d", (int)BLIS_ARCH_SKX);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    ck_assert_msg(strstr(out, "kernels 'skx' (set by BLIS_ARCH_TYPE)"), "%s", out);
    snprintf(want, sizeof want, "packed convolution kernels '%s' (from a second BLIS instance)\n",
             avx2);
    ck_assert_msg(strstr(out, want), "wanted \"%s\" in:\n%s", want, out);

    snprintf(env, sizeof env, "BLIS_ARCH_TYPE=%d UNLEARN_PACKED_ARCH=main", (int)BLIS_ARCH_SKX);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    ck_assert_msg(strstr(out, "packed convolution kernels 'skx' (the main instance's "
                              "(UNLEARN_PACKED_ARCH=main))"),
                  "%s", out);

    snprintf(env, sizeof env, "BLIS_ARCH_TYPE=%d", (int)BLIS_ARCH_HASWELL);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    ck_assert_msg(strstr(out, "packed convolution kernels 'haswell' (the main instance's)\n"),
                  "%s", out);

    snprintf(env, sizeof env, "BLIS_ARCH_TYPE=%d UNLEARN_PACKED_ARCH=zen2", (int)BLIS_ARCH_HASWELL);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    ck_assert_msg(strstr(out, "kernels 'haswell' (set by BLIS_ARCH_TYPE)"), "%s", out);
    ck_assert_msg(strstr(out, "packed convolution kernels 'zen2' (from a second BLIS instance "
                              "(UNLEARN_PACKED_ARCH))"),
                  "%s", out);

    snprintf(env, sizeof env, "BLIS_ARCH_TYPE=%d UNLEARN_PACKED_ARCH=zen9", (int)BLIS_ARCH_SKX);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    ck_assert_msg(strstr(out, "UNLEARN_PACKED_ARCH=zen9 names no BLIS configuration"), "%s", out);
    ck_assert_msg(strstr(out, "packed convolution kernels 'skx' (the main instance's)"), "%s",
                  out);
#endif
}
END_TEST

/* BLIS_ARCH_TYPE as unlearn hands it to BLIS (runtime.c, blis_arch_env):
 * BLIS itself reads a name as 0 (skx) and aborts on a number past its list
 * or a configuration its build lacks; unlearn takes a name, and reports
 * and drops anything it cannot use, choosing the kernels itself. */
START_TEST(blis_arch_type_checked)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    char out[4096];
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        ck_assert_int_eq(run_cli("--version", out, sizeof out, "BLIS_ARCH_TYPE=haswell"), 0);
        ck_assert_msg(strstr(out, "kernels 'haswell' (set by BLIS_ARCH_TYPE=haswell)"), "%s",
                      out);
        ck_assert_msg(!strstr(out, "unlearn: BLIS_ARCH_TYPE"), "%s", out);
    }
    static const char *bad[] = {"BLIS_ARCH_TYPE=99", "BLIS_ARCH_TYPE=3x", "BLIS_ARCH_TYPE=zen9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(run_cli("--version", out, sizeof out, bad[i]), 0);
        ck_assert_msg(strstr(out, "is neither a BLIS configuration's number (0 to ") &&
                          strstr(out, "ignoring it") && !strstr(out, "set by BLIS_ARCH_TYPE"),
                      "%s: %s", bad[i], out);
    }
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "BLIS_ARCH_TYPE=knc"), 0);
    ck_assert_msg(strstr(out, "names 'knc', which this BLIS build lacks (it would abort); "
                              "ignoring it") &&
                      !strstr(out, "set by BLIS_ARCH_TYPE"),
                  "%s", out);
    /* The second instance refuses such a configuration as well. */
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "UNLEARN_PACKED_ARCH=knc"), 0);
    ck_assert_msg(strstr(out, "UNLEARN_PACKED_ARCH=knc names a configuration this BLIS build "
                              "lacks; the packed paths keep the main instance's kernel"),
                  "%s", out);
    /* A set the CPU cannot run is kept for --version, with a warning. */
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "BLIS_ARCH_TYPE=skx"), 0);
    ck_assert_msg(strstr(out, "kernels 'skx' (set by BLIS_ARCH_TYPE=skx)"), "%s", out);
    const bool warned = strstr(out, "which need AVX-512; this CPU lacks it") != NULL;
    ck_assert_msg(warned == !__builtin_cpu_supports("avx512f"), "%s", out);
#endif
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pipeline");
    TCase *t = tcase_create("cli");
    tcase_set_timeout(t, 600);
    tcase_add_unchecked_fixture(t, tmp_setup, tmp_teardown);
    tcase_add_test(t, tiny_pipeline_end_to_end_and_cache);
    tcase_add_test(t, mislabeled_forget_set_plants_labels);
    tcase_add_test(t, bad_unlearning_inputs);
    tcase_add_test(t, indices_file_reuses_an_exact_set);
    tcase_add_test(t, packed_kernels_from_a_second_instance);
    tcase_add_test(t, blis_arch_type_checked);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
