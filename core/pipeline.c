#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsutil.h"
#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "progress.h"
#include "runtime.h"
#include "safetensors.h"
#include "ul_config.h"

/* ---- schemas of the core's own sections ---------------------------------- */

static const ul_param_def split_schema[] = {
    UL_PARAM_DOUBLE("val_fraction", "0.1", 0.0, 0.9,
                    "fraction of the training data held out for validation (stratified)"),
    UL_PARAM_INT("subset", "0", 0, 1e9,
                 "use a stratified subset of this many training examples (0 = all)"),
    UL_PARAM_INT("test_subset", "0", 0, 1e9,
                 "use a stratified subset of this many test examples (0 = all)"),
};

static const ul_param_def train_schema[] = {
    UL_PARAM_INT("epochs", "10", 1, 100000, "passes over the training data"),
    UL_PARAM_INT("batch_size", "128", 2, 65536, "examples per step"),
    UL_PARAM_ENUM("optimizer", "sgd", "sgd|adam", "optimizer (PyTorch's update rules)"),
    UL_PARAM_DOUBLE("lr", "0.1", 1e-12, 100.0, "initial learning rate"),
    UL_PARAM_DOUBLE("momentum", "0.9", 0.0, 0.999999, "SGD momentum"),
    UL_PARAM_BOOL("nesterov", "false", "SGD Nesterov momentum"),
    UL_PARAM_DOUBLE("weight_decay", "5e-4", 0.0, 1.0, "L2 penalty added to the gradient"),
    UL_PARAM_ENUM("schedule", "cosine", "constant|step|cosine",
                  "learning-rate schedule, stepped once per epoch"),
    UL_PARAM_INT("step_size", "30", 1, 100000, "step schedule: epochs between decays"),
    UL_PARAM_DOUBLE("gamma", "0.1", 1e-9, 1.0, "step schedule: decay factor"),
    UL_PARAM_DOUBLE("lr_min", "0", 0.0, 100.0, "cosine schedule: final learning rate"),
    UL_PARAM_DOUBLE("beta1", "0.9", 0.0, 0.999999, "Adam beta1"),
    UL_PARAM_DOUBLE("beta2", "0.999", 0.0, 0.999999999, "Adam beta2"),
    UL_PARAM_DOUBLE("eps", "1e-8", 1e-30, 1.0, "Adam epsilon"),
    UL_PARAM_INT("eval_batch_size", "512", 1, 65536, "examples per evaluation batch"),
};

static const ul_param_def augment_schema[] = {
    UL_PARAM_INT("crop_padding", "0", 0, 64,
                 "random crop of the original size after padding by this many pixels (0 = off)"),
    UL_PARAM_BOOL("hflip", "false", "random horizontal flip"),
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- parsing --------------------------------------------------------------- */

static int section_fill(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                        ul_params *p, const char *const *extra, size_t n_extra, ul_error *err)
{
    size_t ns;
    const ul_param_def *schema = ul_params_schema(p, &ns);
    const char *allowed[64];
    size_t na = 0;
    for (size_t i = 0; i < n_extra; i++)
        allowed[na++] = extra[i];
    for (size_t i = 0; i < ns && na < COUNT(allowed); i++)
        allowed[na++] = schema[i].name;
    int rc = ul_yaml_check_keys(doc, map, where, allowed, na, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < map->n; i++) {
        bool skip = false;
        for (size_t k = 0; k < n_extra; k++)
            skip = skip || strcmp(map->keys[i], extra[k]) == 0;
        if (skip)
            continue;
        const ul_yaml_node *v = map->items[i];
        char text[4096];
        if (ul_yaml_to_text(v, text, sizeof text) != UL_OK)
            return ul_yaml_errorf(err, doc, v->line, v->col, "%s.%s must be a value, not a mapping",
                                  where, map->keys[i]);
        ul_error e2;
        if (ul_params_set(p, map->keys[i], text, &e2) != UL_OK)
            return ul_yaml_errorf(err, doc, v->line, v->col, "%s.%s: %s", where, map->keys[i],
                                  e2.msg);
    }
    return UL_OK;
}

static int plugin_params(const ul_yaml_doc *doc, const ul_yaml_node *section, uint32_t kind,
                         const char *name, const char *where, ul_params **out, ul_error *err)
{
    const ul_plugin *pl;
    int rc = ul_plugin_find(kind, name, &pl, err);
    if (rc) {
        int idx = ul_yaml_key_index(section, "name");
        char msg[UL_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return ul_yaml_errorf(err, doc, section->items[idx]->line, section->items[idx]->col,
                              "%s", msg);
    }
    ul_params *p = ul_params_new(pl->desc->params, pl->desc->n_params, err);
    if (!p)
        return UL_EPLUGIN;
    const ul_yaml_node *pm = ul_yaml_get(section, "params");
    char sub[256];
    snprintf(sub, sizeof sub, "%s.params (plugin '%s')", where, name);
    if (pm)
        rc = ul_yaml_fill_params(doc, pm, sub, p, err);
    const char *missing = ul_params_missing(p);
    if (!rc && missing)
        rc = ul_yaml_errorf(err, doc, (pm ? pm : section)->line, (pm ? pm : section)->col,
                            "%s: missing required key '%s' (see `unlearn describe %s`)", sub,
                            missing, name);
    if (rc) {
        ul_params_free(p);
        return rc;
    }
    *out = p;
    return UL_OK;
}

static int required_name(const ul_yaml_doc *doc, const ul_yaml_node *section, const char *where,
                         char *out, size_t cap, ul_error *err)
{
    const ul_yaml_node *n = ul_yaml_get(section, "name");
    if (!n)
        return ul_yaml_errorf(err, doc, section->line, section->col,
                              "%s: missing required key 'name' (the plugin to use)", where);
    if (n->kind != UL_YAML_SCALAR)
        return ul_yaml_errorf(err, doc, n->line, n->col, "%s.name must be a plugin name", where);
    snprintf(out, cap, "%s", n->scalar);
    return UL_OK;
}

static int parse_widths(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    const ul_yaml_doc *doc = p->doc;
    if (!n) {
        p->widths[0] = 1.0;
        p->n_widths = 1;
        return UL_OK;
    }
    const ul_yaml_node *items[UL_MAX_WIDTHS];
    size_t count = 0;
    if (n->kind == UL_YAML_SCALAR) {
        items[count++] = n;
    } else if (n->kind == UL_YAML_SEQ) {
        if (n->n == 0 || n->n > UL_MAX_WIDTHS)
            return ul_yaml_errorf(err, doc, n->line, n->col,
                                  "model.width must list 1 to %d widths", UL_MAX_WIDTHS);
        for (size_t i = 0; i < n->n; i++)
            items[count++] = n->items[i];
    } else {
        return ul_yaml_errorf(err, doc, n->line, n->col,
                              "model.width must be a number or a list of numbers");
    }
    for (size_t i = 0; i < count; i++) {
        const ul_yaml_node *it = items[i];
        char *end = NULL;
        double w = it->kind == UL_YAML_SCALAR ? strtod(it->scalar, &end) : NAN;
        if (!end || *end || end == it->scalar || !(w > 0) || !isfinite(w) || w > 1000)
            return ul_yaml_errorf(err, doc, it->line, it->col,
                                  "model.width: expected a positive number (e.g. 0.25), got '%s'",
                                  it->kind == UL_YAML_SCALAR ? it->scalar : "a collection");
        for (size_t j = 0; j < i; j++)
            if (p->widths[j] == w)
                return ul_yaml_errorf(err, doc, it->line, it->col,
                                      "model.width: %g is listed twice", w);
        p->widths[i] = w;
    }
    p->n_widths = count;
    return UL_OK;
}

int ul_pipeline_load(const char *path, ul_pipeline **out, ul_error *err)
{
    *out = NULL;
    ul_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    snprintf(p->config_path, sizeof p->config_path, "%s", path);
    int rc = ul_yaml_load_file(path, &p->doc, err);
    if (rc)
        goto fail;
    const ul_yaml_doc *doc = p->doc;
    const ul_yaml_node *root = doc->root;
    if (!root || root->kind != UL_YAML_MAP) {
        rc = ul_yaml_errorf(err, doc, root ? root->line : 1, root ? root->col : 1,
                            "a pipeline must be a mapping with the sections seed, dataset, "
                            "model, train, output");
        goto fail;
    }
    static const char *const top[] = {"seed", "dataset", "model", "train", "output"};
    if ((rc = ul_yaml_check_keys(doc, root, "the pipeline", top, COUNT(top), err)))
        goto fail;

    const ul_yaml_node *n = ul_yaml_get(root, "seed");
    p->seed = 0;
    if (n) {
        char *end = NULL;
        errno = 0;
        unsigned long long v =
            n->kind == UL_YAML_SCALAR ? strtoull(n->scalar, &end, 10) : 0;
        if (!end || *end || end == n->scalar || errno || n->scalar[0] == '-') {
            rc = ul_yaml_errorf(err, doc, n->line, n->col,
                                "seed must be a non-negative integer, got '%s'",
                                n->kind == UL_YAML_SCALAR ? n->scalar : "a collection");
            goto fail;
        }
        p->seed = v;
    }

    const ul_yaml_node *ds = ul_yaml_get(root, "dataset");
    if (!ds) {
        rc = ul_yaml_errorf(err, doc, root->line, root->col,
                            "missing required section 'dataset' (e.g. dataset: {name: "
                            "fashion_mnist})");
        goto fail;
    }
    static const char *const ds_extra[] = {"name", "params"};
    p->split = ul_params_new(split_schema, COUNT(split_schema), err);
    if (!p->split) {
        rc = UL_EINVAL;
        goto fail;
    }
    if ((rc = section_fill(doc, ds, "dataset", p->split, ds_extra, 2, err)) ||
        (rc = required_name(doc, ds, "dataset", p->dataset, sizeof p->dataset, err)) ||
        (rc = plugin_params(doc, ds, UL_KIND_DATASET, p->dataset, "dataset", &p->dataset_params,
                            err)))
        goto fail;

    const ul_yaml_node *md = ul_yaml_get(root, "model");
    if (!md) {
        rc = ul_yaml_errorf(err, doc, root->line, root->col,
                            "missing required section 'model' (e.g. model: {name: mlp, width: 1})");
        goto fail;
    }
    static const char *const md_keys[] = {"name", "params", "width"};
    if ((rc = ul_yaml_check_keys(doc, md, "model", md_keys, 3, err)) ||
        (rc = required_name(doc, md, "model", p->model, sizeof p->model, err)) ||
        (rc = plugin_params(doc, md, UL_KIND_MODEL, p->model, "model", &p->model_params, err)) ||
        (rc = parse_widths(p, ul_yaml_get(md, "width"), err)))
        goto fail;

    p->train = ul_params_new(train_schema, COUNT(train_schema), err);
    p->augment = ul_params_new(augment_schema, COUNT(augment_schema), err);
    if (!p->train || !p->augment) {
        rc = UL_EINVAL;
        goto fail;
    }
    const ul_yaml_node *tr = ul_yaml_get(root, "train");
    if (tr) {
        static const char *const tr_extra[] = {"augment"};
        if ((rc = section_fill(doc, tr, "train", p->train, tr_extra, 1, err)))
            goto fail;
        const ul_yaml_node *au = ul_yaml_get(tr, "augment");
        if (au && (rc = ul_yaml_fill_params(doc, au, "train.augment", p->augment, err)))
            goto fail;
    }

    n = ul_yaml_get(root, "output");
    if (n) {
        if (n->kind != UL_YAML_SCALAR || !*n->scalar) {
            rc = ul_yaml_errorf(err, doc, n->line, n->col,
                                "output must be a directory path (e.g. runs/quickstart)");
            goto fail;
        }
        snprintf(p->output, sizeof p->output, "%s", n->scalar);
    } else {
        /* runs/<config file stem> */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        snprintf(p->output, sizeof p->output, "runs/%s", base);
        char *dot = strrchr(p->output, '.');
        if (dot && dot > p->output + 5)
            *dot = '\0';
    }
    *out = p;
    return UL_OK;
fail:
    ul_pipeline_free(p);
    return rc ? rc : UL_EINVAL;
}

void ul_pipeline_free(ul_pipeline *p)
{
    if (!p)
        return;
    ul_yaml_free(p->doc);
    ul_params_free(p->dataset_params);
    ul_params_free(p->split);
    ul_params_free(p->model_params);
    ul_params_free(p->train);
    ul_params_free(p->augment);
    free(p);
}

/* ---- data ------------------------------------------------------------------ */

int ul_dataset_load_plugin(const char *name, const ul_params *params, ul_dataset *out,
                           ul_error *err)
{
    memset(out, 0, sizeof *out);
    const ul_plugin *pl;
    int rc = ul_plugin_find(UL_KIND_DATASET, name, &pl, err);
    if (rc)
        return rc;
    const ul_dataset_vtable *vt = pl->desc->vtable;
    rc = vt->load(params, out, err);
    if (rc)
        return rc;
    if (out->n_train < 1 || out->n_classes < 2 || out->c < 1 || out->h < 1 || out->w < 1 ||
        !out->train_x || !out->train_y || (out->n_test > 0 && (!out->test_x || !out->test_y))) {
        ul_dataset_clear(out);
        return ul_errorf(err, UL_EPLUGIN, "dataset plugin '%s' returned an inconsistent dataset",
                         name);
    }
    return UL_OK;
}

/* Picks round(fraction·n_c) (or the stratified share of `take`) examples of
 * each class from idx[0..n-1]; the picked ones go to *picked, the rest to
 * *rest (either may be NULL). Classes are processed in label order and each
 * class's members shuffled with rng, so the split depends only on the
 * seed and the labels. */
static int stratified_pick(const int32_t *labels, const int64_t *idx, int64_t n, int K,
                           double fraction, ul_rng *rng, int64_t **picked, int64_t *n_picked,
                           int64_t **rest, int64_t *n_rest, ul_error *err)
{
    int64_t *count = calloc((size_t)K, sizeof *count);
    int64_t *members = malloc((size_t)(n ? n : 1) * sizeof *members);
    int64_t *pk = malloc((size_t)(n ? n : 1) * sizeof *pk);
    int64_t *rs = malloc((size_t)(n ? n : 1) * sizeof *rs);
    if (!count || !members || !pk || !rs) {
        free(count), free(members), free(pk), free(rs);
        return ul_errorf(err, UL_ENOMEM, "out of memory while splitting the data");
    }
    for (int64_t i = 0; i < n; i++)
        count[labels[idx[i]]]++;
    int64_t np = 0, nr = 0;
    for (int k = 0; k < K; k++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (labels[idx[i]] == k)
                members[m++] = idx[i];
        ul_rng_shuffle_i64(rng, members, m);
        int64_t take = (int64_t)llround(fraction * (double)m);
        for (int64_t i = 0; i < m; i++) {
            if (i < take)
                pk[np++] = members[i];
            else
                rs[nr++] = members[i];
        }
    }
    free(count);
    free(members);
    if (picked) {
        *picked = pk;
        *n_picked = np;
    } else {
        free(pk);
    }
    if (rest) {
        *rest = rs;
        *n_rest = nr;
    } else {
        free(rs);
    }
    return UL_OK;
}

static int64_t *iota(int64_t n)
{
    int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (v)
        for (int64_t i = 0; i < n; i++)
            v[i] = i;
    return v;
}

int ul_splits_make(const ul_dataset *d, double val_fraction, int64_t subset, int64_t test_subset,
                   uint64_t seed, ul_splits *out, ul_error *err)
{
    memset(out, 0, sizeof *out);
    ul_rng rng;
    ul_rng_seed(&rng, seed, 0x73706c6974u);
    int rc;
    int64_t *pool = iota(d->n_train), n_pool = d->n_train;
    if (!pool)
        return ul_errorf(err, UL_ENOMEM, "out of memory while splitting the data");
    if (subset > 0 && subset < d->n_train) {
        int64_t *sub, n_sub;
        rc = stratified_pick(d->train_y, pool, n_pool, d->n_classes,
                             (double)subset / (double)d->n_train, &rng, &sub, &n_sub, NULL, NULL,
                             err);
        free(pool);
        if (rc)
            return rc;
        pool = sub;
        n_pool = n_sub;
    }
    rc = stratified_pick(d->train_y, pool, n_pool, d->n_classes, val_fraction, &rng, &out->val,
                         &out->n_val, &out->train, &out->n_train, err);
    free(pool);
    if (rc)
        return rc;
    int64_t *tpool = iota(d->n_test);
    if (!tpool) {
        ul_splits_free(out);
        return ul_errorf(err, UL_ENOMEM, "out of memory while splitting the data");
    }
    if (test_subset > 0 && test_subset < d->n_test) {
        rc = stratified_pick(d->test_y, tpool, d->n_test, d->n_classes,
                             (double)test_subset / (double)d->n_test, &rng, &out->test,
                             &out->n_test, NULL, NULL, err);
        free(tpool);
        if (rc) {
            ul_splits_free(out);
            return rc;
        }
    } else {
        out->test = tpool;
        out->n_test = d->n_test;
    }
    if (out->n_train < 2) {
        ul_splits_free(out);
        return ul_errorf(err, UL_EINVAL,
                         "only %lld training examples remain after the validation split; "
                         "lower dataset.val_fraction or raise dataset.subset",
                         (long long)out->n_train);
    }
    return UL_OK;
}

void ul_splits_free(ul_splits *s)
{
    free(s->train);
    free(s->val);
    free(s->test);
    memset(s, 0, sizeof *s);
}

void ul_dataset_pad_values(const ul_dataset *d, float pad[3])
{
    const int64_t plane = (int64_t)d->h * d->w;
    for (int c = 0; c < 3; c++)
        pad[c] = 0.0f;
    for (int c = 0; c < d->c && c < 3; c++) {
        float m = INFINITY;
        for (int64_t i = 0; i < d->n_train; i++) {
            const float *p = d->train_x + (i * d->c + c) * plane;
            for (int64_t j = 0; j < plane; j++)
                m = p[j] < m ? p[j] : m;
        }
        pad[c] = m;
    }
}

/* ---- run ------------------------------------------------------------------- */

static void emit_params(FILE *f, const ul_params *p, int indent)
{
    size_t n;
    const ul_param_def *s = ul_params_schema(p, &n);
    for (size_t i = 0; i < n; i++) {
        char v[4096];
        if (ul_params_format(p, s[i].name, true, v, sizeof v) == UL_OK)
            fprintf(f, "%*s%s: %s\n", indent, "", s[i].name, v);
    }
}

static int write_resolved(const ul_pipeline *p, const char *path, ul_error *err)
{
    ul_atomic_file af;
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    fprintf(f, "# Resolved from %s by unlearn %s: every default filled in.\n", p->config_path,
            UL_VERSION);
    fprintf(f, "# BLIS %s, kernels %s (%s), %d threads.\n", ul_runtime_blis_version(),
            ul_runtime_blis_arch(), ul_runtime_blis_arch_source(), ul_runtime_threads());
    fprintf(f, "seed: %llu\n", (unsigned long long)p->seed);
    fprintf(f, "dataset:\n  name: %s\n", p->dataset);
    emit_params(f, p->split, 2);
    fprintf(f, "  params:\n");
    emit_params(f, p->dataset_params, 4);
    fprintf(f, "model:\n  name: %s\n  width: [", p->model);
    for (size_t i = 0; i < p->n_widths; i++)
        fprintf(f, "%s%.17g", i ? ", " : "", p->widths[i]);
    fprintf(f, "]\n  params:\n");
    emit_params(f, p->model_params, 4);
    fprintf(f, "train:\n");
    emit_params(f, p->train, 2);
    fprintf(f, "  augment:\n");
    emit_params(f, p->augment, 4);
    char q[8192];
    size_t pos = 0;
    ul_json_escape(q, sizeof q, &pos, p->output);
    fprintf(f, "output: %s\n", q);
    return ul_atomic_commit(&af, err);
}

void ul_train_cfg_from_params(const ul_params *t, const ul_params *a, uint64_t seed,
                              ul_train_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = (int)ul_params_int(t, "epochs");
    cfg->batch_size = (int)ul_params_int(t, "batch_size");
    cfg->optim.kind = strcmp(ul_params_string(t, "optimizer"), "adam") == 0 ? UL_OPT_ADAM
                                                                             : UL_OPT_SGD;
    cfg->optim.lr = ul_params_double(t, "lr");
    cfg->optim.momentum = ul_params_double(t, "momentum");
    cfg->optim.nesterov = ul_params_bool(t, "nesterov");
    cfg->optim.weight_decay = ul_params_double(t, "weight_decay");
    cfg->optim.beta1 = ul_params_double(t, "beta1");
    cfg->optim.beta2 = ul_params_double(t, "beta2");
    cfg->optim.eps = ul_params_double(t, "eps");
    const char *s = ul_params_string(t, "schedule");
    cfg->sched.kind = strcmp(s, "cosine") == 0 ? UL_SCHED_COSINE
                      : strcmp(s, "step") == 0 ? UL_SCHED_STEP
                                               : UL_SCHED_CONSTANT;
    cfg->sched.step_size = (int)ul_params_int(t, "step_size");
    cfg->sched.gamma = ul_params_double(t, "gamma");
    cfg->sched.lr_min = ul_params_double(t, "lr_min");
    cfg->augment.crop_padding = (int)ul_params_int(a, "crop_padding");
    cfg->augment.hflip = ul_params_bool(a, "hflip");
    cfg->seed = seed;
}

typedef struct split_metrics {
    double loss, accuracy;
    int64_t n;
} split_metrics;

typedef struct width_result {
    double width;
    int64_t params;
    split_metrics train, val, test;
    double train_seconds;
    char checkpoint[512];
} width_result;

static int eval_split(ul_net *net, const ul_dataset *d, bool test, const int64_t *idx, int64_t n,
                      int batch, split_metrics *m, ul_error *err)
{
    ul_data_view v = {test ? d->test_x : d->train_x, test ? d->test_y : d->train_y, idx, n,
                      d->c, d->h, d->w, d->n_classes};
    m->n = n;
    if (n == 0) {
        m->loss = m->accuracy = NAN;
        return UL_OK;
    }
    return ul_evaluate(net, &v, batch, &m->loss, &m->accuracy, NULL, err);
}

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

static void write_split_json(FILE *f, const char *name, const split_metrics *m, bool comma)
{
    fprintf(f, "\"%s\": {\"loss\": ", name);
    json_num(f, m->loss);
    fprintf(f, ", \"accuracy\": ");
    json_num(f, m->accuracy);
    fprintf(f, ", \"n\": %lld}%s", (long long)m->n, comma ? ", " : "");
}

static void write_width_json(FILE *f, const width_result *r)
{
    fprintf(f, "{\"width\": %.17g, \"params\": %lld, ", r->width, (long long)r->params);
    write_split_json(f, "train", &r->train, true);
    write_split_json(f, "val", &r->val, true);
    write_split_json(f, "test", &r->test, true);
    fprintf(f, "\"train_seconds\": %.3f, \"checkpoint\": \"%s\"}", r->train_seconds,
            r->checkpoint);
}

static int write_metrics(const char *path, const ul_pipeline *p, const width_result *res,
                         size_t n, ul_error *err)
{
    ul_atomic_file af;
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    fprintf(f, "{\n  \"unlearn_version\": \"%s\",\n  \"dataset\": \"%s\",\n  \"model\": \"%s\",\n"
               "  \"seed\": %llu,\n  \"original\": [\n",
            UL_VERSION, p->dataset, p->model, (unsigned long long)p->seed);
    for (size_t i = 0; i < n; i++) {
        fputs("    ", f);
        write_width_json(f, &res[i]);
        fputs(i + 1 < n ? ",\n" : "\n", f);
    }
    fputs("  ]\n}\n", f);
    return ul_atomic_commit(&af, err);
}

static uint64_t width_stream(double w)
{
    uint64_t bits;
    memcpy(&bits, &w, sizeof bits);
    return bits ^ 0x6d6f64656cULL;
}

int ul_pipeline_run(ul_pipeline *p, const char *run_dir, FILE *log, ul_error *err)
{
    const char *dir = run_dir ? run_dir : p->output;
    ul_dataset ds;
    ul_splits sp = {0};
    width_result *res = calloc(p->n_widths, sizeof *res);
    ul_net *net = NULL;
    ul_progress prog;
    ul_progress_init(&prog, log);
    if (!res)
        return ul_errorf(err, UL_ENOMEM, "out of memory");

    ul_progress_log(&prog, "loading dataset %s", p->dataset);
    int rc = ul_dataset_load_plugin(p->dataset, p->dataset_params, &ds, err);
    if (rc) {
        free(res);
        return rc;
    }
    rc = ul_splits_make(&ds, ul_params_double(p->split, "val_fraction"),
                        ul_params_int(p->split, "subset"), ul_params_int(p->split, "test_subset"),
                        p->seed, &sp, err);
    if (rc)
        goto done;
    ul_progress_log(&prog, "%s: %lld train / %lld validation / %lld test examples, %dx%dx%d, %d "
                           "classes",
                    ds.source, (long long)sp.n_train, (long long)sp.n_val, (long long)sp.n_test,
                    ds.c, ds.h, ds.w, ds.n_classes);

    char path[4600];
    snprintf(path, sizeof path, "%s/checkpoints", dir);
    if ((rc = ul_mkdirs(path, err)))
        goto done;
    snprintf(path, sizeof path, "%s/config.resolved.yaml", dir);
    if ((rc = write_resolved(p, path, err)))
        goto done;

    ul_train_cfg cfg;
    ul_train_cfg_from_params(p->train, p->augment, p->seed, &cfg);
    ul_dataset_pad_values(&ds, cfg.pad_value);
    const int eval_batch = (int)ul_params_int(p->train, "eval_batch_size");
    ul_data_view train_view = {ds.train_x, ds.train_y, sp.train, sp.n_train,
                               ds.c, ds.h, ds.w, ds.n_classes};

    char model_json[8192], data_json[8192];
    ul_params_to_json(p->model_params, model_json, sizeof model_json);
    ul_params_to_json(p->dataset_params, data_json, sizeof data_json);

    for (size_t wi = 0; wi < p->n_widths; wi++) {
        const double w = p->widths[wi];
        width_result *r = &res[wi];
        r->width = w;
        ul_rng init_rng;
        ul_rng_seed(&init_rng, p->seed, width_stream(w));
        if ((rc = ul_model_create(p->model, w, p->model_params, ds.c, ds.h, ds.w, ds.n_classes,
                                  &init_rng, &net, err)))
            goto done;
        r->params = ul_net_param_count(net);
        snprintf(r->checkpoint, sizeof r->checkpoint, "checkpoints/original_w%g.safetensors", w);
        snprintf(path, sizeof path, "%s/%s", dir, r->checkpoint);
        ul_progress_log(&prog, "[width %g] %s, %lld parameters", w, p->model,
                        (long long)r->params);

        ul_progress_set_label(&prog, "[width %g]", w);
        ul_train_result tres;
        if ((rc = ul_train(net, &train_view, &cfg, ul_progress_train, &prog, &tres, err))) {
            ul_error_prefix(err, "model %s at width %g", p->model, w);
            goto done;
        }
        r->train_seconds = tres.seconds;
        if ((rc = eval_split(net, &ds, false, sp.train, sp.n_train, eval_batch, &r->train, err)) ||
            (rc = eval_split(net, &ds, false, sp.val, sp.n_val, eval_batch, &r->val, err)) ||
            (rc = eval_split(net, &ds, true, sp.test, sp.n_test, eval_batch, &r->test, err)))
            goto done;

        char wbuf[64], shape[64], classes[16], seed[32], vf[64], sub[32], tsub[32];
        snprintf(wbuf, sizeof wbuf, "%.17g", w);
        snprintf(shape, sizeof shape, "[%d, %d, %d]", ds.c, ds.h, ds.w);
        snprintf(classes, sizeof classes, "%d", ds.n_classes);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->seed);
        ul_params_format(p->split, "val_fraction", false, vf, sizeof vf);
        ul_params_format(p->split, "subset", false, sub, sizeof sub);
        ul_params_format(p->split, "test_subset", false, tsub, sizeof tsub);
        const ul_kv meta[] = {
            {"format", "unlearn-checkpoint-1"}, {"unlearn_version", UL_VERSION},
            {"model", p->model}, {"model_params", model_json}, {"width", wbuf},
            {"input_shape", shape}, {"classes", classes}, {"dataset", p->dataset},
            {"dataset_params", data_json}, {"seed", seed}, {"val_fraction", vf},
            {"subset", sub}, {"test_subset", tsub}, {"role", "original"},
        };
        if ((rc = ul_checkpoint_save(path, net, meta, COUNT(meta), err)))
            goto done;
        ul_progress_log(&prog,
                        "[width %g] train acc %.4f, validation acc %.4f, test acc %.4f (%.1f s)",
                        w, r->train.accuracy, r->val.accuracy, r->test.accuracy,
                        r->train_seconds);
        ul_net_free(net);
        net = NULL;
        snprintf(path, sizeof path, "%s/metrics.json", dir);
        if ((rc = write_metrics(path, p, res, wi + 1, err)))
            goto done;
    }

    ul_progress_log(&prog, "\n%-8s %10s %10s %10s %10s %9s", "width", "params", "train acc",
                    "val acc", "test acc", "time");
    for (size_t i = 0; i < p->n_widths; i++) {
        char t[32];
        ul_format_duration(res[i].train_seconds, t, sizeof t);
        ul_progress_log(&prog, "%-8g %10lld %10.4f %10.4f %10.4f %9s", res[i].width,
                        (long long)res[i].params, res[i].train.accuracy, res[i].val.accuracy,
                        res[i].test.accuracy, t);
    }
    ul_progress_log(&prog, "\nresults in %s/ (metrics.json, config.resolved.yaml, checkpoints/)",
                    dir);
done:
    ul_net_free(net);
    ul_splits_free(&sp);
    ul_dataset_clear(&ds);
    free(res);
    return rc;
}
