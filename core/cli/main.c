/* unlearn — command-line interface. A thin layer over libunlearn: it parses
 * arguments, decides what is printed where, and maps errors to exit codes
 * (2: bad usage or configuration, nothing written; 1: failure while running). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "runtime.h"
#include "safetensors.h"
#include "ul_config.h"

static void usage(FILE *f)
{
    fputs("usage: unlearn <command> [options]\n"
          "\n"
          "commands:\n"
          "  run CONFIG.yaml [-o RUN_DIR] [--check]\n"
          "                                   run a YAML pipeline (--check: validate only)\n"
          "  plugins                          list every plugin found\n"
          "  describe NAME                    show a plugin's parameters\n"
          "  eval CHECKPOINT --dataset NAME [--split train|val|test] [--json]\n"
          "       [--param KEY=VALUE]...      loss and accuracy of a saved model\n"
          "  --version                        versions, BLIS kernels and threads\n"
          "  --help                           this text\n"
          "\n"
          "environment: UNLEARN_THREADS (default: the CPUs the process may use), UNLEARN_PLUGIN_PATH\n"
          "(extra plugin directories, ':'-separated), BLIS_ARCH_TYPE (force BLIS kernels).\n",
          f);
}

static int cmd_version(void)
{
    printf("unlearn %s\n", UL_VERSION);
    printf("plugin ABI %u.%u\n", UL_ABI_MAJOR, UL_ABI_MINOR);
    printf("BLIS %s, kernels '%s' (%s)\n", ul_runtime_blis_version(), ul_runtime_blis_arch(),
           ul_runtime_blis_arch_source());
    printf("packed convolution kernels '%s' (%s)\n", ul_runtime_packed_arch(),
           ul_runtime_packed_source());
    printf("threads %d (%s)\n", ul_runtime_threads(), ul_runtime_threads_source());
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *out_dir = NULL, *config = NULL;
    bool check_only = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "unlearn run: -o needs a directory\n");
                return 2;
            }
            out_dir = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "unlearn run: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!config) {
            config = argv[i];
        } else {
            fprintf(stderr, "unlearn run: only one CONFIG.yaml may be given\n");
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "usage: unlearn run CONFIG.yaml [-o RUN_DIR] [--check]\n");
        return 2;
    }
    ul_error err = {0};
    ul_pipeline *p;
    if (ul_pipeline_load(config, &p, &err) != UL_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 2;
    }
    if (check_only) {
        size_t points = 0;
        for (size_t i = 0; i < p->n_methods; i++)
            points += p->methods[i].n_points;
        size_t units = p->n_widths * p->n_seeds;
        printf("%s: valid; %zu width(s) x %zu seed(s): %zu model trainings, %zu method runs "
               "(%zu methods), %zu goal(s)\n",
               config, p->n_widths, p->n_seeds,
               units * (p->forget.enabled && p->forget.retrain ? 2 : 1), units * points,
               p->n_methods, p->n_goals);
        ul_pipeline_free(p);
        return 0;
    }
    int rc = ul_pipeline_run(p, out_dir, stdout, &err);
    ul_pipeline_free(p);
    if (rc != UL_OK) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", err.msg);
        return rc == UL_EINVAL ? 2 : 1;
    }
    return 0;
}

static void print_plugin(const ul_plugin *p, void *user)
{
    (void)user;
    printf("%-8s %-16s %-8s %s\n         %s\n", ul_kind_name(p->desc->kind), p->desc->name,
           p->desc->version, p->desc->description, p->path);
}

static void print_broken(const char *path, const ul_error *err, void *user)
{
    int *n = user;
    fprintf(stderr, "warning: skipped %s: %s\n", path, err->msg);
    (*n)++;
}

static int cmd_plugins(void)
{
    int broken = 0;
    printf("%-8s %-16s %-8s %s\n", "KIND", "NAME", "VERSION", "DESCRIPTION / PATH");
    ul_plugin_scan(print_plugin, print_broken, &broken);
    return 0;
}

static const char *type_name(ul_param_type t)
{
    switch (t) {
    case UL_PT_INT: return "int";
    case UL_PT_DOUBLE: return "float";
    case UL_PT_BOOL: return "bool";
    case UL_PT_STRING: return "string";
    case UL_PT_ENUM: return "enum";
    case UL_PT_INT_LIST: return "int list";
    case UL_PT_DOUBLE_LIST: return "float list";
    }
    return "?";
}

static int cmd_describe(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: unlearn describe NAME\n");
        return 2;
    }
    ul_error err = {0};
    const ul_plugin *p;
    if (ul_plugin_find(0, argv[0], &p, &err) != UL_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 2;
    }
    const ul_plugin_desc *d = p->desc;
    printf("%s (%s plugin, version %s, ABI %u.%u)\n%s\n%s\n\n", d->name, ul_kind_name(d->kind),
           d->version, d->abi_major, d->abi_minor, d->description, p->path);
    if (d->n_params == 0) {
        printf("no parameters\n");
        return 0;
    }
    printf("%-18s %-10s %-22s %-20s %s\n", "PARAMETER", "TYPE", "DEFAULT", "RANGE", "DOC");
    for (uint32_t i = 0; i < d->n_params; i++) {
        const ul_param_def *s = &d->params[i];
        char range[64] = "-";
        if (s->type == UL_PT_ENUM)
            snprintf(range, sizeof range, "%s", s->choices);
        else if (s->has_min && s->has_max)
            snprintf(range, sizeof range, "[%g, %g]", s->min, s->max);
        else if (s->has_min)
            snprintf(range, sizeof range, ">= %g", s->min);
        else if (s->has_max)
            snprintf(range, sizeof range, "<= %g", s->max);
        printf("%-18s %-10s %-22s %-20s %s\n", s->name, type_name(s->type),
               s->default_value ? s->default_value : "(required)", range, s->doc ? s->doc : "");
    }
    return 0;
}

/* Sets each member of a JSON object into params (values as YAML text). */
static int params_from_json(ul_params *p, const char *json, const char *what, ul_error *err)
{
    ul_json *j;
    int rc = ul_json_parse(json, strlen(json), &j, err);
    if (rc)
        return rc;
    if (j->type != UL_JSON_OBJECT) {
        ul_json_free(j);
        return ul_errorf(err, UL_EINVAL, "%s is not a JSON object", what);
    }
    for (size_t i = 0; i < j->n && rc == UL_OK; i++) {
        const ul_json *v = j->items[i];
        char text[4096];
        size_t pos = 0;
        switch (v->type) {
        case UL_JSON_NULL: continue;
        case UL_JSON_BOOL: snprintf(text, sizeof text, "%s", v->boolean ? "true" : "false"); break;
        case UL_JSON_NUMBER: snprintf(text, sizeof text, "%.17g", v->number); break;
        case UL_JSON_STRING: snprintf(text, sizeof text, "%s", v->string); break;
        case UL_JSON_ARRAY:
            text[pos++] = '[';
            for (size_t k = 0; k < v->n && pos < sizeof text - 32; k++)
                pos += (size_t)snprintf(text + pos, sizeof text - pos, "%s%.17g", k ? ", " : "",
                                        v->items[k]->number);
            snprintf(text + pos, sizeof text - pos, "]");
            break;
        default:
            rc = ul_errorf(err, UL_EINVAL, "%s: unsupported value for '%s'", what, j->keys[i]);
            continue;
        }
        rc = ul_params_set(p, j->keys[i], text, err);
        if (rc)
            ul_error_prefix(err, "%s: '%s'", what, j->keys[i]);
    }
    ul_json_free(j);
    return rc;
}

static int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *dataset = NULL, *split = "test";
    bool json = false;
    const char *overrides[64];
    int n_over = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dataset") == 0 && i + 1 < argc)
            dataset = argv[++i];
        else if (strcmp(argv[i], "--split") == 0 && i + 1 < argc)
            split = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--param") == 0 && i + 1 < argc && n_over < 64)
            overrides[n_over++] = argv[++i];
        else if (argv[i][0] != '-' && !ckpt)
            ckpt = argv[i];
        else {
            fprintf(stderr, "unlearn eval: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!ckpt || !dataset) {
        fprintf(stderr, "usage: unlearn eval CHECKPOINT --dataset NAME [--split train|val|test] "
                        "[--json] [--param KEY=VALUE]...\n");
        return 2;
    }
    if (strcmp(split, "train") && strcmp(split, "val") && strcmp(split, "test")) {
        fprintf(stderr, "unlearn eval: --split must be train, val or test, not '%s'\n", split);
        return 2;
    }
    ul_error err = {0};
    int status = 1;
    ul_kv *meta = NULL;
    size_t n_meta = 0;
    ul_params *mp = NULL, *dp = NULL;
    ul_net *net = NULL;
    ul_dataset ds = {0};
    ul_splits sp = {0};
    const ul_plugin *mpl, *dpl;
    if (ul_checkpoint_read_metadata(ckpt, &meta, &n_meta, &err))
        goto fail;
    const char *model = ul_kv_get(meta, n_meta, "model");
    const char *mjson = ul_kv_get(meta, n_meta, "model_params");
    const char *width = ul_kv_get(meta, n_meta, "width");
    const char *shape = ul_kv_get(meta, n_meta, "input_shape");
    const char *classes = ul_kv_get(meta, n_meta, "classes");
    if (!model || !mjson || !width || !shape || !classes) {
        ul_errorf(&err, UL_EINVAL,
                  "%s: the checkpoint's metadata lacks model, model_params, width, input_shape or "
                  "classes; it was not written by unlearn",
                  ckpt);
        goto fail;
    }
    int C, H, W, K = atoi(classes);
    if (sscanf(shape, "[%d, %d, %d]", &C, &H, &W) != 3) {
        ul_errorf(&err, UL_EINVAL, "%s: malformed input_shape '%s' in metadata", ckpt, shape);
        goto fail;
    }
    if (ul_plugin_find(UL_KIND_MODEL, model, &mpl, &err) ||
        !(mp = ul_params_new(mpl->desc->params, mpl->desc->n_params, &err)) ||
        params_from_json(mp, mjson, "model_params", &err))
        goto fail;
    ul_rng rng;
    ul_rng_seed(&rng, 0, 0);
    if (ul_model_create(model, strtod(width, NULL), mp, C, H, W, K, &rng, &net, &err) ||
        ul_checkpoint_load(ckpt, net, &err))
        goto fail;

    if (ul_plugin_find(UL_KIND_DATASET, dataset, &dpl, &err) ||
        !(dp = ul_params_new(dpl->desc->params, dpl->desc->n_params, &err)))
        goto fail;
    const char *trained_on = ul_kv_get(meta, n_meta, "dataset");
    bool same = trained_on && strcmp(trained_on, dataset) == 0;
    const char *djson = ul_kv_get(meta, n_meta, "dataset_params");
    if (same && djson && params_from_json(dp, djson, "dataset_params", &err))
        goto fail;
    for (int i = 0; i < n_over; i++) {
        char key[256];
        const char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i] || (size_t)(eq - overrides[i]) >= sizeof key) {
            ul_errorf(&err, UL_EINVAL, "--param expects KEY=VALUE, got '%s'", overrides[i]);
            goto fail;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - overrides[i]), overrides[i]);
        if (ul_params_set(dp, key, eq + 1, &err)) {
            ul_error_prefix(&err, "--param %s", key);
            goto fail;
        }
    }
    if (ul_params_missing(dp)) {
        ul_errorf(&err, UL_EINVAL, "dataset '%s' needs --param %s=VALUE", dataset,
                  ul_params_missing(dp));
        goto fail;
    }
    if (ul_dataset_load_plugin(dataset, dp, &ds, &err))
        goto fail;
    if (ds.c != C || ds.h != H || ds.w != W || ds.n_classes != K) {
        ul_errorf(&err, UL_EINVAL,
                  "dataset '%s' has %dx%dx%d inputs and %d classes, but the model was trained on "
                  "%dx%dx%d and %d classes",
                  dataset, ds.c, ds.h, ds.w, ds.n_classes, C, H, W, K);
        goto fail;
    }
    /* The run's split is rebuilt from the seed stored in the checkpoint. */
    const char *vf = ul_kv_get(meta, n_meta, "val_fraction");
    const char *sub = ul_kv_get(meta, n_meta, "subset");
    const char *tsub = ul_kv_get(meta, n_meta, "test_subset");
    const char *seed = ul_kv_get(meta, n_meta, "seed");
    if (same && vf && sub && tsub && seed) {
        if (ul_splits_make(&ds, strtod(vf, NULL), atoll(sub), atoll(tsub),
                           strtoull(seed, NULL, 10), &sp, &err))
            goto fail;
    } else if (strcmp(split, "val") == 0) {
        ul_errorf(&err, UL_EINVAL,
                  "--split val needs the dataset the model was trained on ('%s'): the "
                  "validation split is rebuilt from the training run's seed",
                  trained_on ? trained_on : "unknown");
        goto fail;
    } else if (ul_splits_make(&ds, 0.0, 0, 0, 0, &sp, &err)) {
        goto fail;
    }
    bool test = strcmp(split, "test") == 0;
    const int64_t *idx = test ? sp.test : strcmp(split, "val") == 0 ? sp.val : sp.train;
    int64_t n = test ? sp.n_test : strcmp(split, "val") == 0 ? sp.n_val : sp.n_train;
    ul_data_view v = {test ? ds.test_x : ds.train_x, test ? ds.test_y : ds.train_y, idx, n,
                      ds.c, ds.h, ds.w, ds.n_classes};
    double loss = NAN, acc = NAN;
    if (n > 0 && ul_evaluate(net, &v, 512, &loss, &acc, NULL, &err))
        goto fail;
    if (json)
        printf("{\"loss\": %.8g, \"accuracy\": %.8g, \"n\": %lld}\n", loss, acc, (long long)n);
    else
        printf("%s on %s/%s: loss %.4f, accuracy %.4f, n %lld\n", ckpt, dataset, split, loss, acc,
               (long long)n);
    status = 0;
fail:
    if (status)
        fprintf(stderr, "error: %s\n", err.msg);
    ul_splits_free(&sp);
    ul_dataset_clear(&ds);
    ul_net_free(net);
    ul_params_free(mp);
    ul_params_free(dp);
    ul_kv_free(meta, n_meta);
    return status;
}

int main(int argc, char **argv)
{
    ul_runtime_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return cmd_version();
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "plugins") == 0)
        return cmd_plugins();
    if (strcmp(cmd, "describe") == 0)
        return cmd_describe(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 2, argv + 2);
    fprintf(stderr, "unlearn: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
