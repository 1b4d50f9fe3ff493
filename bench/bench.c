/* unlearn-bench: training-step and inference throughput of the model
 * plugins, one SCRUB epoch, peak memory, and BLIS's sgemm rate measured in
 * the same run. Each measurement runs in its own child process, so its
 * peak RSS is its own. Results are printed as a table and, with --json,
 * written as JSON lines (bench/compare_pytorch.py reads them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "runtime.h"
#include "unlearn/plugin.h"

typedef struct result {
    double train_ips, infer_ips, seconds, gflops, macs;
    int64_t params;
    int ok;
    char err[256];
} result;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double min_time = 2.0;
static int batch = 128;
static const char *only_pass; /* "train", "infer" or NULL for both */

static int make_net(const char *model, double width, int C, int H, int W, ul_net **net,
                    ul_error *err)
{
    const ul_plugin *p;
    int rc = ul_plugin_find(UL_KIND_MODEL, model, &p, err);
    if (rc)
        return rc;
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, err);
    if (!pp)
        return UL_EPLUGIN;
    ul_rng rng;
    ul_rng_seed(&rng, 1, 2);
    rc = ul_model_create(model, width, pp, C, H, W, 10, &rng, net, err);
    ul_params_free(pp);
    return rc;
}

/* Times fn until min_time has passed (after one warm-up call); returns
 * calls per second. */
static double rate(void (*fn)(void *), void *arg)
{
    fn(arg);
    int n = 0;
    double t0 = now_s(), t;
    do {
        fn(arg);
        n++;
        t = now_s() - t0;
    } while (t < min_time || n < 3);
    return n / t;
}

typedef struct step_ctx {
    ul_net *net;
    ul_optim opt;
    float *x, *probs, *dlogits, *params, *grads;
    int32_t *y;
} step_ctx;

static void train_step(void *arg)
{
    step_ctx *s = arg;
    const float *logits = ul_net_forward(s->net, s->x, batch, true);
    ul_softmax_xent_forward(s->probs, NULL, logits, s->y, batch, 10);
    ul_net_zero_grad(s->net);
    memset(s->dlogits, 0, (size_t)batch * 10 * sizeof(float));
    ul_softmax_xent_backward(s->dlogits, s->probs, s->y, batch, 10, 1.0f);
    ul_net_backward(s->net, s->dlogits);
    ul_optim_step(&s->opt, s->params, s->grads, NULL, 0.01);
}

static void infer_step(void *arg)
{
    step_ctx *s = arg;
    ul_net_infer(s->net, s->x, batch);
}

static void bench_model(const char *model, double width, int C, int H, int W, result *r)
{
    ul_error err = {0};
    step_ctx s = {0};
    if (make_net(model, width, C, H, W, &s.net, &err) || ul_net_reserve(s.net, batch, &err)) {
        snprintf(r->err, sizeof r->err, "%.255s", err.msg);
        return;
    }
    size_t n;
    s.params = ul_net_params(s.net, &n);
    s.grads = ul_net_grads(s.net, &n);
    ul_optim_cfg oc = {.kind = UL_OPT_SGD, .lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4};
    ul_optim_init(&s.opt, &oc, n, NULL);
    s.x = malloc((size_t)batch * C * H * W * sizeof(float));
    s.y = malloc((size_t)batch * sizeof(int32_t));
    s.probs = malloc((size_t)batch * 10 * sizeof(float));
    s.dlogits = malloc((size_t)batch * 10 * sizeof(float));
    ul_rng rng;
    ul_rng_seed(&rng, 3, 4);
    for (size_t i = 0; i < (size_t)batch * C * H * W; i++)
        s.x[i] = (float)ul_rng_normal(&rng);
    for (int i = 0; i < batch; i++)
        s.y[i] = (int32_t)ul_rng_below(&rng, 10);
    r->params = ul_net_param_count(s.net);
    r->macs = ul_net_forward_macs(s.net);
    if (!only_pass || strcmp(only_pass, "train") == 0)
        r->train_ips = rate(train_step, &s) * batch;
    if (!only_pass || strcmp(only_pass, "infer") == 0)
        r->infer_ips = rate(infer_step, &s) * batch;
    r->ok = 1;
    ul_net_free(s.net);
    free(s.x);
    free(s.y);
    free(s.probs);
    free(s.dlogits);
    ul_optim_free(&s.opt);
}

static void bench_sgemm(result *r)
{
    const int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    ul_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        double t0 = now_s();
        ul_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    r->gflops = 2.0 * n * n * (double)n / best / 1e9;
    r->ok = 1;
    free(a);
    free(b);
    free(c);
}

/* One SCRUB epoch (one max-step pass over F, one min-step pass over R) on
 * a fixed split of synthetic 3x32x32 images, resnet18 at width 0.25. */
static void bench_scrub(result *r)
{
    ul_error err = {0};
    const ul_plugin *dp, *mp;
    ul_dataset ds;
    ul_params *dpar = NULL, *mpar = NULL;
    ul_net *net = NULL, *orig = NULL;
    if (ul_plugin_find(UL_KIND_DATASET, "synthetic", &dp, &err) ||
        !(dpar = ul_params_new(dp->desc->params, dp->desc->n_params, &err)) ||
        ul_params_set(dpar, "channels", "3", &err) || ul_params_set(dpar, "height", "32", &err) ||
        ul_params_set(dpar, "width", "32", &err) || ul_params_set(dpar, "classes", "10", &err) ||
        ul_params_set(dpar, "n_train", "2304", &err) ||
        ul_params_set(dpar, "n_test", "10", &err) ||
        ul_dataset_load_plugin("synthetic", dpar, &ds, &err))
        goto fail;
    if (make_net("resnet18", 0.25, 3, 32, 32, &net, &err) || !(orig = ul_net_clone(net, &err)))
        goto fail;
    if (ul_plugin_find(UL_KIND_METHOD, "scrub", &mp, &err) ||
        !(mpar = ul_params_new(mp->desc->params, mp->desc->n_params, &err)) ||
        ul_params_set(mpar, "epochs", "1", &err) || ul_params_set(mpar, "msteps", "1", &err))
        goto fail;
    static int64_t f_idx[256], r_idx[2048];
    for (int i = 0; i < 256; i++)
        f_idx[i] = i;
    for (int i = 0; i < 2048; i++)
        r_idx[i] = 256 + i;
    ul_data_view F = {ds.train_x, ds.train_y, f_idx, 256, 3, 32, 32, 10};
    ul_data_view R = {ds.train_x, ds.train_y, r_idx, 2048, 3, 32, 32, 10};
    ul_data_view V = {ds.train_x, ds.train_y, f_idx, 0, 3, 32, 32, 10};
    ul_train_cfg recipe = {.epochs = 1, .batch_size = 128};
    ul_method_ctx ctx = {sizeof ctx, net, orig, R, F, V, &recipe, 7, NULL, NULL};
    const ul_method_vtable *vt = mp->desc->vtable;
    double t0 = now_s();
    if (vt->unlearn(&ctx, mpar, &err))
        goto fail;
    r->seconds = now_s() - t0;
    r->train_ips = (256 + 2048) / r->seconds;
    r->ok = 1;
fail:
    if (!r->ok)
        snprintf(r->err, sizeof r->err, "%.255s", err.msg);
    ul_net_free(net);
    ul_net_free(orig);
    ul_params_free(dpar);
    ul_params_free(mpar);
}

typedef enum { JOB_MODEL, JOB_SGEMM, JOB_SCRUB } job_kind;

/* Runs one job in a child; returns its result and peak RSS in MiB. The
 * parent never starts threads, so forking is safe. */
static result run_job(job_kind kind, const char *model, double width, int C, int H, int W,
                      double *rss_mib)
{
    result r = {0};
    int fd[2];
    if (pipe(fd) != 0)
        return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        ul_runtime_init();
        if (kind == JOB_MODEL)
            bench_model(model, width, C, H, W, &r);
        else if (kind == JOB_SGEMM)
            bench_sgemm(&r);
        else
            bench_scrub(&r);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], &r, sizeof r);
    close(fd[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    if (got != (ssize_t)sizeof r)
        snprintf(r.err, sizeof r.err, "benchmark child failed");
    *rss_mib = ru.ru_maxrss / 1024.0;
    return r;
}

int main(int argc, char **argv)
{
    const char *json = NULL;
    bool quick = false, sgemm = true;
    const char *only = NULL;
    double only_width = 0;
    int only_c = 0, only_h = 0, only_w = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--no-sgemm") == 0)
            sgemm = false;
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "train") == 0 || strcmp(argv[i + 1], "infer") == 0))
            only_pass = argv[++i];
        else if (strcmp(argv[i], "--width") == 0 && i + 1 < argc)
            only_width = atof(argv[++i]);
        else if (strcmp(argv[i], "--input") == 0 && i + 1 < argc &&
                 sscanf(argv[i + 1], "%dx%dx%d", &only_c, &only_h, &only_w) == 3)
            i++;
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            min_time = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: unlearn-bench [--quick] [--model NAME] [--width W] "
                            "[--input CxHxW] [--only train|infer] [--seconds S] "
                            "[--no-sgemm] [--json FILE]\n");
            return 2;
        }
    }
    if (quick)
        min_time = 0.5;
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        perror(json);
        return 1;
    }
    const char *threads = getenv("UNLEARN_THREADS");
    double rss;
    result g = {0};
    if (sgemm) {
        g = run_job(JOB_SGEMM, NULL, 0, 0, 0, 0, &rss);
        if (threads)
            printf("sgemm 2048^3: %.1f GFLOP/s (UNLEARN_THREADS=%s)\n\n", g.gflops, threads);
        else
            printf("sgemm 2048^3: %.1f GFLOP/s (%d threads, the CPUs this process may use)\n\n",
                   g.gflops, ul_runtime_cpus());
    }
    printf("%-9s %6s %-8s %10s %12s %12s %9s\n", "model", "width", "input", "params",
           "train img/s", "infer img/s", "peak MiB");
    static const char *const models[] = {"mlp", "cnn", "resnet18"};
    static const double widths[] = {0.1, 0.25, 0.5, 1.0};
    static const int shapes[2][3] = {{1, 28, 28}, {3, 32, 32}};
    double full_rate = NAN;
    for (int mi = 0; mi < 3; mi++) {
        if (only && strcmp(only, models[mi]) != 0)
            continue;
        for (int si = 0; si < 2; si++)
            for (int wi = 0; wi < 4; wi++) {
                const int *sh = shapes[si];
                if (only_width > 0 ? fabs(widths[wi] - only_width) > 1e-9 : quick && wi % 2 == 0)
                    continue;
                if (only_c && (sh[0] != only_c || sh[1] != only_h || sh[2] != only_w))
                    continue;
                result r = run_job(JOB_MODEL, models[mi], widths[wi], sh[0], sh[1], sh[2], &rss);
                char in[32];
                snprintf(in, sizeof in, "%dx%dx%d", sh[0], sh[1], sh[2]);
                if (!r.ok) {
                    printf("%-9s %6g %-8s failed: %s\n", models[mi], widths[wi], in, r.err);
                    continue;
                }
                printf("%-9s %6g %-8s %10lld %12.0f %12.0f %9.0f\n", models[mi], widths[wi], in,
                       (long long)r.params, r.train_ips, r.infer_ips, rss);
                fflush(stdout);
                if (strcmp(models[mi], "resnet18") == 0 && widths[wi] == 1.0 && si == 1)
                    full_rate = r.train_ips * 3.0 * r.macs * 2.0 / 1e9;
                if (jf)
                    fprintf(jf,
                            "{\"model\": \"%s\", \"width\": %g, \"input\": [%d, %d, %d], "
                            "\"params\": %lld, \"train_ips\": %.2f, \"infer_ips\": %.2f, "
                            "\"peak_rss_mib\": %.1f, \"forward_macs\": %.0f}\n",
                            models[mi], widths[wi], sh[0], sh[1], sh[2], (long long)r.params,
                            r.train_ips, r.infer_ips, rss, r.macs);
            }
    }
    if ((!only || strcmp(only, "scrub") == 0 || strcmp(only, "resnet18") == 0) && !only_width &&
        !only_c) {
        result s = run_job(JOB_SCRUB, NULL, 0, 0, 0, 0, &rss);
        if (s.ok)
            printf("\nscrub, one epoch (resnet18 w=0.25, 3x32x32, |F|=256, |R|=2048): %.2f s, "
                   "%.0f img/s, peak %.0f MiB\n",
                   s.seconds, s.train_ips, rss);
        else
            printf("\nscrub epoch failed: %s\n", s.err);
        if (jf && s.ok)
            fprintf(jf, "{\"scrub_epoch_seconds\": %.3f, \"scrub_ips\": %.1f, \"peak_rss_mib\": "
                        "%.1f}\n",
                    s.seconds, s.train_ips, rss);
    }
    /* The sgemm rate again at the end: one measurement at the start can
     * land on a busy moment of a shared machine; the better of the two is
     * the rate the hardware offers. */
    result g2 = {0};
    if (sgemm)
        g2 = run_job(JOB_SGEMM, NULL, 0, 0, 0, 0, &rss);
    if (g2.ok && g2.gflops > g.gflops) {
        printf("sgemm 2048^3 again at the end: %.1f GFLOP/s (used below)\n", g2.gflops);
        g.gflops = g2.gflops;
    }
    if (isfinite(full_rate) && sgemm)
        printf("resnet18 w=1 3x32x32 training step: %.1f GFLOP/s (3 x forward multiply-adds x 2), "
               "%.0f%% of the measured sgemm rate\n",
               full_rate, 100.0 * full_rate / g.gflops);
    if (jf) {
        if (sgemm)
            fprintf(jf, "{\"sgemm_gflops\": %.2f}\n", g.gflops);
        fclose(jf);
    }
    return 0;
}
