/* Core: RNG, optimisers and schedules against hand-computed values of
 * PyTorch's rules, data splits, augmentation, the plugin loader with broken
 * fixtures, a short training, and the CLI end to end (errors included). */
#include <check.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "model.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "runtime.h"
#include "unlearn/train.h"


/* ---- RNG ---------------------------------------------------------------- */

START_TEST(rng_matches_pcg32_reference)
{
    /* First outputs of the PCG32 reference demo for pcg32_srandom(42, 54). */
    const uint32_t expect[6] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                0x83d2f293, 0xbfa4784b, 0xcbed606e};
    ul_rng r;
    ul_rng_seed(&r, 42, 54);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(ul_rng_u32(&r), expect[i]);
}
END_TEST

START_TEST(rng_uniform_and_below)
{
    ul_rng r;
    ul_rng_seed(&r, 7, 1);
    int counts[5] = {0};
    double sum = 0;
    for (int i = 0; i < 50000; i++) {
        double u = ul_rng_uniform(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        sum += u;
        counts[ul_rng_below(&r, 5)]++;
    }
    /* Mean of U(0,1) over 50000 draws: sd 0.0013, so 0.01 is > 7 sd. */
    ck_assert_double_eq_tol(sum / 50000, 0.5, 0.01);
    for (int k = 0; k < 5; k++)
        ck_assert_int_gt(counts[k], 9500); /* expected 10000, sd ~ 89 */
}
END_TEST

/* ---- optimisers ------------------------------------------------------------ */

START_TEST(sgd_momentum_weight_decay_by_hand)
{
    /* θ=1, g=0.5, lr=0.1, μ=0.9, wd=0.1:
     * step 1: d = 0.5 + 0.1·1 = 0.6; buf = 0.6; θ = 1 − 0.06 = 0.94
     * step 2 (g=0.5): d = 0.5 + 0.094 = 0.594; buf = 0.9·0.6 + 0.594 = 1.134;
     *         θ = 0.94 − 0.1134 = 0.8266 */
    ul_optim_cfg c = {.kind = UL_OPT_SGD, .lr = 0.1, .momentum = 0.9, .weight_decay = 0.1};
    ul_optim o;
    ck_assert_int_eq(ul_optim_init(&o, &c, 1, NULL), 0);
    float th = 1.0f, g = 0.5f;
    ul_optim_step(&o, &th, &g, NULL, 0.1);
    ck_assert_float_eq_tol(th, 0.94f, 1e-6f);
    ul_optim_step(&o, &th, &g, NULL, 0.1);
    ck_assert_float_eq_tol(th, 0.8266f, 1e-6f);
    ul_optim_free(&o);
}
END_TEST

START_TEST(sgd_nesterov_by_hand)
{
    /* θ=1, g=1, lr=0.1, μ=0.5, no wd:
     * step 1: buf = 1; step = g + μ·buf = 1.5; θ = 0.85
     * step 2: buf = 0.5·1 + 1 = 1.5; step = 1 + 0.75 = 1.75; θ = 0.675 */
    ul_optim_cfg c = {.kind = UL_OPT_SGD, .lr = 0.1, .momentum = 0.5, .nesterov = true};
    ul_optim o;
    ul_optim_init(&o, &c, 1, NULL);
    float th = 1.0f, g = 1.0f;
    ul_optim_step(&o, &th, &g, NULL, 0.1);
    ck_assert_float_eq_tol(th, 0.85f, 1e-6f);
    ul_optim_step(&o, &th, &g, NULL, 0.1);
    ck_assert_float_eq_tol(th, 0.675f, 1e-6f);
    ul_optim_free(&o);
}
END_TEST

/* The unmasked SGD step (a vectorised loop per variant, split over the
 * threads in 16-float pieces) against a double-precision step written out
 * here, over 1001 parameters (no whole number of vectors or pieces), for
 * plain SGD, momentum and Nesterov momentum, three steps each; and bit for
 * bit against the masked loop with every parameter unmasked. */
START_TEST(sgd_vector_paths_by_hand)
{
    enum { N = 1001, STEPS = 3 };
    const struct {
        double mu, wd;
        bool nesterov;
    } v[] = {{0.0, 0.01, false}, {0.9, 5e-4, false}, {0.5, 0.1, true}};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        ul_optim_cfg c = {.kind = UL_OPT_SGD, .lr = 0.1, .momentum = v[k].mu,
                          .weight_decay = v[k].wd, .nesterov = v[k].nesterov};
        ul_optim a, b;
        ck_assert_int_eq(ul_optim_init(&a, &c, N, NULL), 0);
        ck_assert_int_eq(ul_optim_init(&b, &c, N, NULL), 0);
        static float ta[N], tb[N], g[N];
        static double tw[N], bw[N];
        static uint8_t all[N];
        for (int i = 0; i < N; i++) {
            ta[i] = tb[i] = (float)(((i * 37) % 101) - 50) / 25.0f;
            tw[i] = ta[i];
            bw[i] = 0.0;
            all[i] = 1;
        }
        for (int s = 0; s < STEPS; s++) {
            for (int i = 0; i < N; i++)
                g[i] = (float)(((i * 53 + s * 11) % 97) - 48) / 32.0f;
            ul_optim_step(&a, ta, g, NULL, 0.1);
            ul_optim_step(&b, tb, g, all, 0.1);
            for (int i = 0; i < N; i++) {
                double d = g[i] + v[k].wd * tw[i];
                if (v[k].mu != 0.0) {
                    bw[i] = s == 0 ? d : v[k].mu * bw[i] + d;
                    d = v[k].nesterov ? d + v[k].mu * bw[i] : bw[i];
                }
                tw[i] -= 0.1 * d;
            }
        }
        for (int i = 0; i < N; i++) {
            ck_assert_msg(fabs(ta[i] - tw[i]) <= 1e-5 * (1.0 + fabs(tw[i])),
                          "variant %zu, parameter %d: %.9g, by hand %.9g", k, i, ta[i], tw[i]);
            ck_assert_msg(ta[i] == tb[i] && a.buf[i] == b.buf[i],
                          "variant %zu, parameter %d: unmasked %.9g, masked %.9g", k, i, ta[i],
                          tb[i]);
        }
        ul_optim_free(&a);
        ul_optim_free(&b);
    }
}
END_TEST

START_TEST(adam_by_hand)
{
    /* θ=1, g=0.2, lr=0.01, β=(0.9, 0.999), eps=1e-8, no wd.
     * t=1: m=0.02, v=4e-5; m̂=0.2, v̂=4e-5 → step = 0.01·0.2/(0.0063246+1e-8)
     *      = 0.01·(0.2/0.00632456) ≈ 0.01·31.6227 → hmm: m̂/sqrt(v̂) = 0.2/0.2 = 1,
     *      so θ = 1 − 0.01 = 0.99 (the first Adam step moves by lr·sign(g)).
     * t=2 with g=0.2 again: m=0.038, v=7.996e-5; m̂=0.038/0.19=0.2,
     *      v̂=7.996e-5/0.001999=0.04 → step 0.01·0.2/0.2 = 0.01 → θ = 0.98. */
    ul_optim_cfg c = {.kind = UL_OPT_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    ul_optim o;
    ul_optim_init(&o, &c, 1, NULL);
    float th = 1.0f, g = 0.2f;
    ul_optim_step(&o, &th, &g, NULL, 0.01);
    ck_assert_float_eq_tol(th, 0.99f, 1e-6f);
    ul_optim_step(&o, &th, &g, NULL, 0.01);
    ck_assert_float_eq_tol(th, 0.98f, 1e-6f);
    ul_optim_free(&o);
}
END_TEST

START_TEST(optim_mask_freezes)
{
    ul_optim_cfg c = {.kind = UL_OPT_SGD, .lr = 0.1, .momentum = 0.9};
    ul_optim o;
    ul_optim_init(&o, &c, 2, NULL);
    float th[2] = {1, 1}, g[2] = {1, 1};
    uint8_t mask[2] = {1, 0};
    ul_optim_step(&o, th, g, mask, 0.1);
    ck_assert_float_eq_tol(th[0], 0.9f, 1e-6f);
    ck_assert_float_eq(th[1], 1.0f);
    ck_assert_float_eq(o.buf[1], 0.0f);
    ul_optim_free(&o);
}
END_TEST

START_TEST(schedules)
{
    ul_sched_cfg cos_ = {.kind = UL_SCHED_COSINE, .lr_min = 0.0};
    ck_assert_double_eq_tol(ul_sched_lr(&cos_, 0.1, 0, 10), 0.1, 1e-12);
    ck_assert_double_eq_tol(ul_sched_lr(&cos_, 0.1, 5, 10), 0.05, 1e-12);
    /* e=2 of 10: (1 + cos(0.2π))/2 · 0.1 = 0.0904508... */
    ck_assert_double_eq_tol(ul_sched_lr(&cos_, 0.1, 2, 10), 0.09045084971874737, 1e-12);
    ul_sched_cfg step = {.kind = UL_SCHED_STEP, .step_size = 3, .gamma = 0.1};
    ck_assert_double_eq_tol(ul_sched_lr(&step, 1.0, 2, 10), 1.0, 1e-12);
    ck_assert_double_eq_tol(ul_sched_lr(&step, 1.0, 3, 10), 0.1, 1e-12);
    ck_assert_double_eq_tol(ul_sched_lr(&step, 1.0, 7, 10), 0.01, 1e-12);
    ul_sched_cfg k = {.kind = UL_SCHED_CONSTANT};
    ck_assert_double_eq(ul_sched_lr(&k, 0.3, 9, 10), 0.3);
}
END_TEST

/* ---- data plumbing --------------------------------------------------------- */

START_TEST(stratified_splits)
{
    /* 3 classes of 100, 200, 300 examples. */
    ul_dataset d = {0};
    d.c = d.h = d.w = 1;
    d.n_classes = 3;
    d.n_train = 600;
    d.n_test = 60;
    d.train_x = calloc(600, sizeof(float));
    d.train_y = malloc(600 * sizeof(int32_t));
    d.test_x = calloc(60, sizeof(float));
    d.test_y = malloc(60 * sizeof(int32_t));
    for (int i = 0; i < 600; i++)
        d.train_y[i] = i < 100 ? 0 : i < 300 ? 1 : 2;
    for (int i = 0; i < 60; i++)
        d.test_y[i] = i % 3;
    ul_splits s;
    ck_assert_int_eq(ul_splits_make(&d, 0.1, 0, 0, 5, &s, NULL), 0);
    ck_assert_int_eq(s.n_val, 10 + 20 + 30);
    ck_assert_int_eq(s.n_train, 540);
    int per[3] = {0};
    for (int64_t i = 0; i < s.n_val; i++)
        per[d.train_y[s.val[i]]]++;
    ck_assert_int_eq(per[0], 10);
    ck_assert_int_eq(per[1], 20);
    ck_assert_int_eq(per[2], 30);
    /* Disjoint and covering. */
    char *seen = calloc(600, 1);
    for (int64_t i = 0; i < s.n_val; i++)
        seen[s.val[i]]++;
    for (int64_t i = 0; i < s.n_train; i++)
        seen[s.train[i]]++;
    for (int i = 0; i < 600; i++)
        ck_assert_int_eq(seen[i], 1);
    free(seen);
    ul_splits_free(&s);
    /* Subset of 300 keeps class proportions: 50/100/150, then 10% val. */
    ck_assert_int_eq(ul_splits_make(&d, 0.1, 300, 30, 5, &s, NULL), 0);
    ck_assert_int_eq(s.n_val + s.n_train, 300);
    ck_assert_int_eq(s.n_val, 5 + 10 + 15);
    ck_assert_int_eq(s.n_test, 30);
    ul_splits_free(&s);
    ul_dataset_clear(&d);
}
END_TEST

START_TEST(augment_flip_and_crop)
{
    /* One 1x2x3 image 0..5; flip only. */
    float x[6] = {0, 1, 2, 3, 4, 5}, scratch[6], pad[3] = {-9, 0, 0};
    ul_augment a = {.crop_padding = 0, .hflip = true};
    ul_rng r;
    /* Find a seed whose first draw flips, then check the result. */
    int flipped = 0;
    for (uint64_t seed = 0; seed < 16 && !flipped; seed++) {
        float y[6];
        memcpy(y, x, sizeof y);
        ul_rng_seed(&r, seed, 3);
        ul_augment_batch(&a, y, 1, 1, 2, 3, pad, scratch, &r);
        if (y[0] != 0) {
            const float e[6] = {2, 1, 0, 5, 4, 3};
            for (int i = 0; i < 6; i++)
                ck_assert_float_eq(y[i], e[i]);
            flipped = 1;
        }
    }
    ck_assert(flipped);
    /* Crop with padding 1: every output pixel is an input pixel or the pad
     * value, and the input is shifted as a whole. */
    ul_augment c = {.crop_padding = 1, .hflip = false};
    int shifted = 0;
    for (uint64_t seed = 0; seed < 32; seed++) {
        float y[6];
        memcpy(y, x, sizeof y);
        ul_rng_seed(&r, seed, 3);
        ul_augment_batch(&c, y, 1, 1, 2, 3, pad, scratch, &r);
        for (int i = 0; i < 6; i++)
            ck_assert(y[i] == -9 || (y[i] >= 0 && y[i] <= 5));
        for (int i = 0; i < 2; i++)
            for (int j = 0; j + 1 < 3; j++)
                if (y[i * 3 + j] >= 0 && y[i * 3 + j + 1] >= 0)
                    ck_assert_float_eq(y[i * 3 + j + 1] - y[i * 3 + j], 1);
        shifted += y[0] != 0;
    }
    ck_assert_int_gt(shifted, 10); /* 8 of 9 offsets move pixel 0 */
}
END_TEST

/* ---- plugin loader ---------------------------------------------------------- */

static void expect_open_error(const char *file, const char *needle)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.so", getenv("UL_TEST_FIXTURES"), file);
    ul_plugin p;
    ul_error err = {0};
    int rc = ul_plugin_open(path, &p, &err);
    ck_assert_int_eq(rc, UL_EPLUGIN);
    ck_assert_msg(strstr(err.msg, needle), "expected '%s' in: %s", needle, err.msg);
    ck_assert_msg(strstr(err.msg, path), "message must name the file: %s", err.msg);
}

START_TEST(loader_refuses_broken_plugins)
{
    expect_open_error("future_abi", "ABI 2.0, but this unlearn supports ABI 1.0");
    expect_open_error("newer_minor", "ABI 1.1, but this unlearn supports ABI 1.0");
    expect_open_error("no_entry", "does not export the entry symbol 'ul_plugin'");
    expect_open_error("misnamed", "plugin name 'something_else' does not match its file name");
    expect_open_error("no_build", "missing or incomplete vtable");
    expect_open_error("bad_default", "invalid parameter schema");
    ul_plugin p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_open("/nonexistent/x.so", &p, &err), UL_EPLUGIN);
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot load plugin"));
}
END_TEST

START_TEST(loader_finds_real_plugins)
{
    const char *models[] = {"mlp", "cnn", "resnet18"};
    const char *datasets[] = {"fashion_mnist", "mnist", "cifar10", "synthetic"};
    for (int i = 0; i < 3; i++) {
        const ul_plugin *p;
        ul_error err = {0};
        ck_assert_msg(ul_plugin_find(UL_KIND_MODEL, models[i], &p, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(p->desc->name, models[i]);
    }
    for (int i = 0; i < 4; i++) {
        const ul_plugin *p;
        ul_error err = {0};
        ck_assert_msg(ul_plugin_find(UL_KIND_DATASET, datasets[i], &p, &err) == 0, "%s", err.msg);
    }
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "synthetic", &p, &err), UL_EPLUGIN);
    ck_assert_ptr_nonnull(strstr(err.msg, "is a dataset plugin, not a model plugin"));
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "resnet81", &p, &err), UL_EPLUGIN);
    ck_assert_msg(strstr(err.msg, "no model plugin named 'resnet81'") &&
                      strstr(err.msg, "did you mean 'resnet18'"),
                  "%s", err.msg);
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "../etc/x", &p, &err), UL_EPLUGIN);
}
END_TEST

/* ---- training ------------------------------------------------------------------ */

static int load_synthetic(ul_dataset *d, const char *extra_key, const char *extra_val)
{
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_find(UL_KIND_DATASET, "synthetic", &p, &err), 0);
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_ptr_nonnull(pp);
    if (extra_key)
        ck_assert_int_eq(ul_params_set(pp, extra_key, extra_val, &err), 0);
    int rc = ul_dataset_load_plugin("synthetic", pp, d, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ul_params_free(pp);
    return rc;
}

static ul_net *make_mlp(const ul_dataset *d, uint64_t seed)
{
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "mlp", &p, &err), 0);
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ul_rng rng;
    ul_rng_seed(&rng, seed, 1);
    ul_net *net = NULL;
    int rc = ul_model_create("mlp", 0.25, pp, d->c, d->h, d->w, d->n_classes, &rng, &net, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ul_params_free(pp);
    return net;
}

START_TEST(short_training_learns_synthetic)
{
    ul_dataset d;
    load_synthetic(&d, "width", "8");
    ul_net *net = make_mlp(&d, 1);
    ul_train_cfg cfg = {.epochs = 5, .batch_size = 32,
                        .optim = {.kind = UL_OPT_SGD, .lr = 0.05, .momentum = 0.9},
                        .sched = {.kind = UL_SCHED_COSINE}, .seed = 3};
    ul_data_view tv = {d.train_x, d.train_y, NULL, d.n_train, d.c, d.h, d.w, d.n_classes};
    ul_data_view te = {d.test_x, d.test_y, NULL, d.n_test, d.c, d.h, d.w, d.n_classes};
    ul_error err = {0};
    double loss0, acc0, loss, acc;
    ul_evaluate(net, &te, 128, &loss0, &acc0, NULL, &err);
    ul_train_result res;
    ck_assert_msg(ul_train(net, &tv, &cfg, NULL, NULL, &res, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ul_evaluate(net, &te, 128, &loss, &acc, NULL, &err), 0);
    /* Four Gaussian classes in 8-D with means drawn at std 3: mean pairs are
     * typically ~12 noise deviations apart, so the Bayes accuracy is near 1;
     * chance is 0.25. */
    ck_assert_msg(acc >= 0.9, "test accuracy %.3f after training (before: %.3f)", acc, acc0);
    ck_assert_msg(loss < loss0, "loss %.4f did not fall below %.4f", loss, loss0);
    ul_net_free(net);
    ul_dataset_clear(&d);
}
END_TEST

START_TEST(training_is_deterministic_with_one_thread)
{
    ul_runtime_set_threads(1);
    ul_dataset d;
    load_synthetic(&d, NULL, NULL);
    float *w[2];
    size_t n = 0;
    for (int run = 0; run < 2; run++) {
        ul_net *net = make_mlp(&d, 9);
        ul_train_cfg cfg = {.epochs = 2, .batch_size = 16,
                            .optim = {.kind = UL_OPT_SGD, .lr = 0.05, .momentum = 0.9},
                            .sched = {.kind = UL_SCHED_CONSTANT}, .seed = 4};
        ul_data_view tv = {d.train_x, d.train_y, NULL, d.n_train, d.c, d.h, d.w, d.n_classes};
        ck_assert_int_eq(ul_train(net, &tv, &cfg, NULL, NULL, NULL, NULL), 0);
        const float *p = ul_net_params(net, &n);
        w[run] = malloc(n * sizeof(float));
        memcpy(w[run], p, n * sizeof(float));
        ul_net_free(net);
    }
    ck_assert_int_eq(memcmp(w[0], w[1], n * sizeof(float)), 0);
    free(w[0]);
    free(w[1]);
    ul_dataset_clear(&d);
    ul_runtime_set_threads(2);
}
END_TEST

START_TEST(diverging_training_is_reported)
{
    ul_dataset d;
    load_synthetic(&d, NULL, NULL);
    ul_net *net = make_mlp(&d, 2);
    ul_train_cfg cfg = {.epochs = 3, .batch_size = 32,
                        .optim = {.kind = UL_OPT_SGD, .lr = 1e6, .momentum = 0.9},
                        .sched = {.kind = UL_SCHED_CONSTANT}, .seed = 3};
    ul_data_view tv = {d.train_x, d.train_y, NULL, d.n_train, d.c, d.h, d.w, d.n_classes};
    ul_error err = {0};
    ck_assert_int_eq(ul_train(net, &tv, &cfg, NULL, NULL, NULL, &err), UL_EDIVERGED);
    ck_assert_msg(strstr(err.msg, "training diverged") && strstr(err.msg, "train.lr"), "%s",
                  err.msg);
    ul_net_free(net);
    ul_dataset_clear(&d);
}
END_TEST

START_TEST(resnet18_forward_macs)
{
    /* By hand for width 1 on 3x32x32: stem 64·3·9·32² = 1,769,472; layer1
     * 4 · 64·64·9·32² = 150,994,944; layers 2–4 each 134,217,728 (first conv
     * + three convs + the 1x1 downsample); fc 512·10 = 5,120. */
    const ul_plugin *p;
    ul_error err = {0};
    ck_assert_int_eq(ul_plugin_find(UL_KIND_MODEL, "resnet18", &p, &err), 0);
    ul_params *pp = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ul_rng rng;
    ul_rng_seed(&rng, 1, 1);
    ul_net *net = NULL;
    ck_assert_int_eq(ul_model_create("resnet18", 1.0, pp, 3, 32, 32, 10, &rng, &net, &err), 0);
    ck_assert_double_eq(ul_net_forward_macs(net), 555422720.0);
    ul_net_free(net);
    ul_params_free(pp);
}
END_TEST

/* ---- CLI -------------------------------------------------------------------- */

static const char *good_head = "seed: 1\n"
                               "dataset:\n"
                               "  name: synthetic\n"
                               "  val_fraction: 0.2\n"
                               "  params: {n_train: 400, n_test: 200}\n";

static void expect_config_error(const char *yaml, const char *needle)
{
    write_text("bad.yaml", yaml);
    char out[8192];
    int st = run_cli("run bad.yaml -o out_bad", out, sizeof out, NULL);
    ck_assert_msg(st == 2, "exit status %d (want 2) for:\n%s\noutput: %s", st, yaml, out);
    ck_assert_msg(strstr(out, needle), "expected '%s' in: %s", needle, out);
    ck_assert_msg(!exists_in_tmp("out_bad"), "a run directory was written despite the error");
}

START_TEST(cli_config_errors)
{
    char y[4096];
    snprintf(y, sizeof y, "%smodel: {name: mlp}\ntrain:\n  epochs: 2\n  lamda: 3\n", good_head);
    expect_config_error(y, "bad.yaml:9:3: unknown key 'lamda' in train");
    snprintf(y, sizeof y, "%smodel: {name: mlp}\ntrain:\n  epoch: 2\n", good_head);
    expect_config_error(y, "did you mean 'epochs'?");
    snprintf(y, sizeof y, "%smodel: {name: mlp}\ntrain:\n  epochs: many\n", good_head);
    expect_config_error(y, "bad.yaml:8:11: train.epochs:");
    snprintf(y, sizeof y, "%smodel: {name: mlp}\ntrain:\n  momentum: 1.5\n", good_head);
    expect_config_error(y, "bad.yaml:8:13: train.momentum:");
    snprintf(y, sizeof y, "%smodel: {name: mlp, width: [0.5, -1]}\n", good_head);
    expect_config_error(y, "bad.yaml:6:33: model.width: expected a positive number");
    snprintf(y, sizeof y, "%smodel: {name: mlpp}\n", good_head);
    expect_config_error(y, "no model plugin named 'mlpp' (did you mean 'mlp'?)");
    snprintf(y, sizeof y, "%smodel: {name: synthetic}\n", good_head);
    expect_config_error(y, "is a dataset plugin, not a model plugin");
    snprintf(y, sizeof y, "%smodel: {name: mlp, params: {depht: 2}}\n", good_head);
    expect_config_error(y, "unknown key 'depht'");
    expect_config_error("seed: 1\nmodel: {name: mlp}\n", "missing required section 'dataset'");
    expect_config_error("seed: 1\ndataset: {name: mnist}\nmodel: {name: mlp}\n",
                        "missing required key 'path'");
    expect_config_error("seed: [1\n", "bad.yaml:");
    char out[4096];
    ck_assert_int_eq(run_cli("run missing.yaml", out, sizeof out, NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "missing.yaml"));
}
END_TEST

START_TEST(cli_plugin_abi_mismatch)
{
    char y[4096], env[1024], out[8192];
    snprintf(y, sizeof y, "%smodel: {name: future_abi}\n", good_head);
    write_text("abi.yaml", y);
    snprintf(env, sizeof env, "UNLEARN_PLUGIN_PATH=%s", getenv("UL_TEST_FIXTURES"));
    int st = run_cli("run abi.yaml -o out_abi", out, sizeof out, env);
    ck_assert_int_eq(st, 2);
    ck_assert_msg(strstr(out, "plugin built for unlearn plugin ABI 2.0") &&
                      strstr(out, "future_abi.so"),
                  "%s", out);
    ck_assert(!exists_in_tmp("out_abi"));
    /* `unlearn plugins` lists good plugins and warns about broken ones. */
    st = run_cli("plugins", out, sizeof out, env);
    ck_assert_int_eq(st, 0);
    ck_assert_ptr_nonnull(strstr(out, "resnet18"));
    ck_assert_ptr_nonnull(strstr(out, "warning: skipped"));
}
END_TEST

START_TEST(cli_missing_dataset_file)
{
    char y[4096], out[8192];
    snprintf(y, sizeof y, "dataset: {name: mnist, params: {path: %s/nowhere}}\nmodel: {name: "
                          "mlp}\n",
             tmpdir);
    write_text("nodata.yaml", y);
    int st = run_cli("run nodata.yaml -o out_nodata", out, sizeof out, NULL);
    ck_assert_int_ne(st, 0);
    ck_assert_msg(strstr(out, "nowhere: neither train-images-idx3-ubyte.gz"), "%s", out);
    ck_assert(!exists_in_tmp("out_nodata"));
}
END_TEST

static double json_number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    ck_assert_msg(p != NULL, "'%s' not in %s", key, text);
    p = strchr(p, ':');
    return strtod(p + 1, NULL);
}

START_TEST(cli_pipeline_end_to_end)
{
    char y[4096], out[16384];
    snprintf(y, sizeof y,
             "%smodel:\n  name: mlp\n  width: [0.1, 0.25]\ntrain:\n  epochs: 3\n"
             "  batch_size: 32\n  lr: 0.05\noutput: ignored_dir\n",
             good_head);
    write_text("pipe.yaml", y);
    int st = run_cli("run pipe.yaml -o run0 --check", out, sizeof out, NULL);
    ck_assert_msg(st == 0 && strstr(out, "pipe.yaml: valid; 2 width(s) x 1 seed(s): 2 model "
                                         "trainings, 0 method runs"),
                  "%s", out);
    ck_assert(!exists_in_tmp("run0"));
    st = run_cli("run pipe.yaml -o run1", out, sizeof out, NULL);
    ck_assert_msg(st == 0, "run failed (%d): %s", st, out);
    ck_assert_ptr_nonnull(strstr(out, "test acc"));
    ck_assert(exists_in_tmp("run1/config.resolved.yaml"));
    ck_assert(exists_in_tmp("run1/metrics.json"));
    ck_assert(exists_in_tmp("run1/checkpoints/original_w0.1_s1.safetensors"));
    ck_assert(exists_in_tmp("run1/checkpoints/original_w0.25_s1.safetensors"));
    ck_assert(!exists_in_tmp("ignored_dir"));

    /* The resolved config is itself a valid pipeline with every default. */
    char path[512], *text;
    snprintf(path, sizeof path, "%s/run1/config.resolved.yaml", tmpdir);
    FILE *f = fopen(path, "r");
    text = calloc(1, 65536);
    fread(text, 1, 65535, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "weight_decay: 0.0005"));
    ck_assert_ptr_nonnull(strstr(text, "schedule: \"cosine\""));
    free(text);
    st = run_cli("run run1/config.resolved.yaml -o run2", out, sizeof out, NULL);
    ck_assert_msg(st == 0, "resolved config did not run: %s", out);

    /* `unlearn eval` reproduces the run's test accuracy from the checkpoint. */
    snprintf(path, sizeof path, "%s/run1/metrics.json", tmpdir);
    f = fopen(path, "r");
    char metrics[8192] = {0};
    fread(metrics, 1, sizeof metrics - 1, f);
    fclose(f);
    const char *w25 = strstr(metrics, "\"width\": 0.25");
    ck_assert_ptr_nonnull(w25);
    double test_acc = json_number_after(strstr(w25, "\"test\""), "\"accuracy\"");
    double val_acc = json_number_after(strstr(w25, "\"val\""), "\"accuracy\"");
    st = run_cli("eval run1/checkpoints/original_w0.25_s1.safetensors --dataset synthetic --json",
                 out, sizeof out, NULL);
    ck_assert_msg(st == 0, "%s", out);
    ck_assert_double_eq_tol(json_number_after(out, "\"accuracy\""), test_acc, 1e-6);
    ck_assert_int_eq((int)json_number_after(out, "\"n\""), 200);
    st = run_cli("eval run1/checkpoints/original_w0.25_s1.safetensors --dataset synthetic --split "
                 "val --json",
                 out, sizeof out, NULL);
    ck_assert_msg(st == 0, "%s", out);
    ck_assert_double_eq_tol(json_number_after(out, "\"accuracy\""), val_acc, 1e-6);
    ck_assert_int_eq((int)json_number_after(out, "\"n\""), 80);

    /* UNLEARN_PROFILE=2: the profile counts the passes it timed (eval runs
     * forward passes only) and lists the nodes. */
    st = run_cli("eval run1/checkpoints/original_w0.25_s1.safetensors --dataset synthetic --json",
                 out, sizeof out, "UNLEARN_PROFILE=2");
    ck_assert_msg(st == 0, "%s", out);
    const char *prof = strstr(out, "unlearn profile (UNLEARN_PROFILE): ");
    ck_assert_msg(prof != NULL, "no profile in: %s", out);
    long fwd = -1, bwd = -1;
    ck_assert_msg(sscanf(strstr(prof, "-node net, "), "-node net, %ld forward and %ld backward",
                         &fwd, &bwd) == 2,
                  "%s", prof);
    ck_assert_msg(fwd >= 1 && bwd == 0, "%ld forward, %ld backward passes: %s", fwd, bwd, prof);
    ck_assert_msg(strstr(prof, "node op") && strstr(prof, " linear "), "%s", prof);
}
END_TEST

START_TEST(cli_describe_and_version)
{
    char out[16384];
    ck_assert_int_eq(run_cli("describe resnet18", out, sizeof out, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "model plugin"));
    ck_assert_ptr_nonnull(strstr(out, "keep_stem"));
    ck_assert_int_eq(run_cli("describe nosuch", out, sizeof out, NULL), 2);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "UNLEARN_THREADS=2"), 0);
    ck_assert_ptr_nonnull(strstr(out, "BLIS"));
    ck_assert_ptr_nonnull(strstr(out, "kernels"));
    ck_assert_ptr_nonnull(strstr(out, "threads 2"));
}
END_TEST

/* The default thread count is the number of CPUs the process may run on,
 * not the machine's: a CLI started with its affinity narrowed to one CPU
 * (as by taskset) runs one thread; a malformed UNLEARN_THREADS is
 * reported, not silently replaced, and one above the CPU count is taken
 * with a warning. */
START_TEST(cli_threads_follow_affinity)
{
    /* The suites run with UNLEARN_THREADS=2; the CLI runs without it. */
    char out[4096], want[64];
    cpu_set_t all, one;
    ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
    const int n = CPU_COUNT(&all);
    ck_assert_int_eq(ul_runtime_cpus(), n);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "env -u UNLEARN_THREADS"), 0);
    snprintf(want, sizeof want, "threads %d (the CPUs this process may use)", n);
    ck_assert_msg(strstr(out, want), "expected '%s' in:\n%s", want, out);
    int first = 0;
    while (!CPU_ISSET(first, &all))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
    ck_assert_int_eq(ul_runtime_cpus(), 1);
    const int st = run_cli("--version", out, sizeof out, "env -u UNLEARN_THREADS");
    ck_assert_int_eq(sched_setaffinity(0, sizeof all, &all), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_msg(strstr(out, "threads 1 (the CPUs this process may use)"), "%s", out);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "UNLEARN_THREADS=two"), 0);
    ck_assert_msg(strstr(out, "UNLEARN_THREADS=two is not a whole number"), "%s", out);
    snprintf(want, sizeof want, "threads %d (the CPUs this process may use)", n);
    ck_assert_msg(strstr(out, want), "%s", out);
    /* More threads than CPUs: taken, with a warning. */
    char env[64];
    snprintf(env, sizeof env, "UNLEARN_THREADS=%d", n + 1);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, env), 0);
    snprintf(want, sizeof want, "threads %d (set by UNLEARN_THREADS)", n + 1);
    ck_assert_msg(strstr(out, want), "%s", out);
    snprintf(want, sizeof want, "more than the %d CPU(s)", n);
    ck_assert_msg(strstr(out, want), "%s", out);
    ck_assert_int_eq(run_cli("--version", out, sizeof out, "UNLEARN_THREADS=1"), 0);
    ck_assert_msg(!strstr(out, "more than the"), "%s", out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core");
    TCase *t = tcase_create("unit");
    tcase_add_test(t, rng_matches_pcg32_reference);
    tcase_add_test(t, rng_uniform_and_below);
    tcase_add_test(t, sgd_momentum_weight_decay_by_hand);
    tcase_add_test(t, sgd_nesterov_by_hand);
    tcase_add_test(t, sgd_vector_paths_by_hand);
    tcase_add_test(t, adam_by_hand);
    tcase_add_test(t, optim_mask_freezes);
    tcase_add_test(t, schedules);
    tcase_add_test(t, stratified_splits);
    tcase_add_test(t, augment_flip_and_crop);
    tcase_add_test(t, loader_refuses_broken_plugins);
    tcase_add_test(t, loader_finds_real_plugins);
    tcase_add_test(t, resnet18_forward_macs);
    suite_add_tcase(s, t);
    TCase *tr = tcase_create("training");
    tcase_set_timeout(tr, 600);
    tcase_add_test(tr, short_training_learns_synthetic);
    tcase_add_test(tr, training_is_deterministic_with_one_thread);
    tcase_add_test(tr, diverging_training_is_reported);
    suite_add_tcase(s, tr);
    TCase *cli = tcase_create("cli");
    tcase_set_timeout(cli, 600);
    tcase_add_unchecked_fixture(cli, tmp_setup, tmp_teardown);
    tcase_add_test(cli, cli_config_errors);
    tcase_add_test(cli, cli_plugin_abi_mismatch);
    tcase_add_test(cli, cli_missing_dataset_file);
    tcase_add_test(cli, cli_pipeline_end_to_end);
    tcase_add_test(cli, cli_describe_and_version);
    tcase_add_test(cli, cli_threads_follow_affinity);
    suite_add_tcase(s, cli);
    return s;
}

int main(void)
{
    ul_runtime_init();
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
