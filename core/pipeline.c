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

static const ul_param_def forget_schema[] = {
    UL_PARAM_INT("size", "200", 0, 1e9, "number of training examples to forget"),
    UL_PARAM_ENUM("selection", "random", "random|classes|mislabeled",
                  "random examples; examples of `classes`; or examples relabelled to `target` "
                  "before training (a planted bias)"),
    UL_PARAM_INT_LIST("classes", "[]", 0, 100000,
                      "classes: forget examples of these classes (size 0 = all of them)"),
    UL_PARAM_INT("target", "0", 0, 100000, "mislabeled: the wrong label planted in F"),
    UL_PARAM_INT("seed", "0", 0, 4294967295.0, "seed of the selection (independent of `seed`)"),
    UL_PARAM_STRING("indices_file", "",
                    "reuse an exact forget set: a file of training-set indices, one per line "
                    "(e.g. a previous run's forget_indices.txt)"),
    UL_PARAM_BOOL("retrain", "true", "train the gold-standard model on R"),
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

/* ---- unlearning sections ----------------------------------------------------- */

static int scalar_u64(const ul_yaml_doc *doc, const ul_yaml_node *n, const char *what,
                      uint64_t *out, ul_error *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = n->kind == UL_YAML_SCALAR ? strtoull(n->scalar, &end, 10) : 0;
    if (!end || *end || end == n->scalar || errno || n->scalar[0] == '-')
        return ul_yaml_errorf(err, doc, n->line, n->col,
                              "%s must be a non-negative integer, got '%s'", what,
                              n->kind == UL_YAML_SCALAR ? n->scalar : "a collection");
    *out = v;
    return UL_OK;
}

static int parse_seeds(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    if (!n) {
        p->seeds[0] = p->seed;
        p->n_seeds = 1;
        return UL_OK;
    }
    if (n->kind != UL_YAML_SEQ || n->n == 0 || n->n > UL_MAX_SEEDS)
        return ul_yaml_errorf(err, p->doc, n->line, n->col,
                              "seeds must be a list of 1 to %d integers, e.g. [0, 1, 2]",
                              UL_MAX_SEEDS);
    for (size_t i = 0; i < n->n; i++) {
        int rc = scalar_u64(p->doc, n->items[i], "each seed", &p->seeds[i], err);
        if (rc)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (p->seeds[j] == p->seeds[i])
                return ul_yaml_errorf(err, p->doc, n->items[i]->line, n->items[i]->col,
                                      "seed %llu is listed twice",
                                      (unsigned long long)p->seeds[i]);
    }
    p->n_seeds = n->n;
    return UL_OK;
}

static int parse_forget(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    ul_forget_spec *f = &p->forget;
    if (!n)
        return UL_OK;
    ul_params *fp = ul_params_new(forget_schema, COUNT(forget_schema), err);
    if (!fp)
        return UL_EINVAL;
    int rc = section_fill(p->doc, n, "forget", fp, NULL, 0, err);
    if (rc)
        goto done;
    f->enabled = true;
    f->size = ul_params_int(fp, "size");
    const char *sel = ul_params_string(fp, "selection");
    f->selection = strcmp(sel, "classes") == 0      ? UL_FORGET_CLASSES
                   : strcmp(sel, "mislabeled") == 0 ? UL_FORGET_MISLABELED
                                                    : UL_FORGET_RANDOM;
    const double *cls;
    size_t nc = ul_params_list(fp, "classes", &cls);
    const ul_yaml_node *at = ul_yaml_get(n, "classes");
    if (nc > UL_MAX_FORGET_CLASSES) {
        rc = ul_yaml_errorf(err, p->doc, at->line, at->col, "forget.classes: at most %d classes",
                            UL_MAX_FORGET_CLASSES);
        goto done;
    }
    for (size_t i = 0; i < nc; i++)
        f->classes[i] = (int32_t)cls[i];
    f->n_classes = (int)nc;
    f->target = (int32_t)ul_params_int(fp, "target");
    f->seed = (uint64_t)ul_params_int(fp, "seed");
    f->retrain = ul_params_bool(fp, "retrain");
    snprintf(f->indices_file, sizeof f->indices_file, "%s", ul_params_string(fp, "indices_file"));
    if (f->selection == UL_FORGET_CLASSES && nc == 0) {
        rc = ul_yaml_errorf(err, p->doc, n->line, n->col,
                            "forget: selection 'classes' needs a list of classes, e.g. "
                            "classes: [3]");
        goto done;
    }
    if (f->size == 0 && f->selection != UL_FORGET_CLASSES && !*f->indices_file) {
        const ul_yaml_node *sz = ul_yaml_get(n, "size");
        rc = ul_yaml_errorf(err, p->doc, (sz ? sz : n)->line, (sz ? sz : n)->col,
                            "forget.size must be at least 1: an empty forget set leaves nothing "
                            "to unlearn");
        goto done;
    }
done:
    ul_params_free(fp);
    return rc;
}

/* One grid point: a copy of the fixed params with `n` (a map of key → value)
 * applied, each checked against the plugin's schema. */
static int grid_set(const ul_yaml_doc *doc, ul_params *pt, const char *key,
                    const ul_yaml_node *v, const char *where, ul_error *err)
{
    char text[4096];
    if (ul_yaml_to_text(v, text, sizeof text) != UL_OK)
        return ul_yaml_errorf(err, doc, v->line, v->col, "%s.%s: a value cannot be a mapping",
                              where, key);
    ul_error e2;
    if (ul_params_set(pt, key, text, &e2) != UL_OK)
        return ul_yaml_errorf(err, doc, v->line, v->col, "%s.%s: %s", where, key, e2.msg);
    return UL_OK;
}

static int grid_check_key(const ul_yaml_doc *doc, const ul_params *base, const char *key,
                          int line, int col, const char *where, const char *plugin,
                          ul_error *err)
{
    size_t ns;
    const ul_param_def *schema = ul_params_schema(base, &ns);
    const char *names[128];
    size_t nn = 0;
    for (size_t i = 0; i < ns; i++) {
        if (strcmp(schema[i].name, key) == 0)
            return UL_OK;
        if (nn < 128)
            names[nn++] = schema[i].name;
    }
    const char *near = ul_did_you_mean(key, names, nn);
    return ul_yaml_errorf(err, doc, line, col,
                          "%s: method '%s' declares no parameter '%s'%s%s%s (see `unlearn "
                          "describe %s`)",
                          where, plugin, key, near ? " (did you mean '" : "", near ? near : "",
                          near ? "'?)" : "", plugin);
}

static int add_point(ul_method_spec *m, ul_params *pt, ul_error *err)
{
    if (m->n_points == UL_MAX_GRID) {
        ul_params_free(pt);
        return ul_errorf(err, UL_EINVAL, "method '%s': more than %d grid points", m->label,
                         UL_MAX_GRID);
    }
    ul_params **np = realloc(m->points, (m->n_points + 1) * sizeof *np);
    if (!np) {
        ul_params_free(pt);
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    }
    m->points = np;
    m->points[m->n_points++] = pt;
    return UL_OK;
}

static int parse_grid(const ul_yaml_doc *doc, ul_method_spec *m, const ul_params *base,
                      const ul_yaml_node *g, const char *where, ul_error *err)
{
    int rc = UL_OK;
    if (!g)
        return add_point(m, ul_params_clone(base), err);
    if (g->kind == UL_YAML_SEQ) { /* explicit points */
        if (g->n == 0)
            return ul_yaml_errorf(err, doc, g->line, g->col, "%s.grid: the list is empty", where);
        for (size_t i = 0; i < g->n; i++) {
            const ul_yaml_node *pm = g->items[i];
            if (pm->kind != UL_YAML_MAP)
                return ul_yaml_errorf(err, doc, pm->line, pm->col,
                                      "%s.grid: each point must be a mapping of parameter: value",
                                      where);
            ul_params *pt = ul_params_clone(base);
            for (size_t k = 0; k < pm->n && !rc; k++) {
                rc = grid_check_key(doc, base, pm->keys[k], pm->key_line[k], pm->key_col[k],
                                    where, m->name, err);
                if (!rc)
                    rc = grid_set(doc, pt, pm->keys[k], pm->items[k], where, err);
            }
            if (rc) {
                ul_params_free(pt);
                return rc;
            }
            if ((rc = add_point(m, pt, err)))
                return rc;
        }
        return UL_OK;
    }
    if (g->kind != UL_YAML_MAP)
        return ul_yaml_errorf(err, doc, g->line, g->col,
                              "%s.grid must map parameters to lists of values (cartesian "
                              "product) or be a list of points",
                              where);
    size_t total = 1;
    for (size_t k = 0; k < g->n; k++) {
        if ((rc = grid_check_key(doc, base, g->keys[k], g->key_line[k], g->key_col[k], where,
                                 m->name, err)))
            return rc;
        const ul_yaml_node *vals = g->items[k];
        size_t nv = vals->kind == UL_YAML_SEQ ? vals->n : 1;
        if (nv == 0)
            return ul_yaml_errorf(err, doc, vals->line, vals->col, "%s.grid.%s: the list is empty",
                                  where, g->keys[k]);
        total *= nv;
        if (total > UL_MAX_GRID)
            return ul_yaml_errorf(err, doc, g->line, g->col,
                                  "%s.grid has more than %d points", where, UL_MAX_GRID);
    }
    for (size_t idx = 0; idx < total; idx++) {
        ul_params *pt = ul_params_clone(base);
        size_t rem = idx;
        /* The last key varies fastest, as in itertools.product. */
        for (size_t kk = g->n; kk-- > 0 && !rc;) {
            const ul_yaml_node *vals = g->items[kk];
            size_t nv = vals->kind == UL_YAML_SEQ ? vals->n : 1;
            const ul_yaml_node *v = vals->kind == UL_YAML_SEQ ? vals->items[rem % nv] : vals;
            rem /= nv;
            rc = grid_set(doc, pt, g->keys[kk], v, where, err);
        }
        if (rc) {
            ul_params_free(pt);
            return rc;
        }
        if ((rc = add_point(m, pt, err)))
            return rc;
    }
    return UL_OK;
}

static int parse_methods(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    const ul_yaml_doc *doc = p->doc;
    if (!n)
        return UL_OK;
    if (n->kind != UL_YAML_SEQ || n->n > UL_MAX_METHODS)
        return ul_yaml_errorf(err, doc, n->line, n->col,
                              "methods must be a list (at most %d) of {name, params, grid}",
                              UL_MAX_METHODS);
    static const char *const keys[] = {"name", "label", "params", "grid"};
    for (size_t i = 0; i < n->n; i++) {
        const ul_yaml_node *mn = n->items[i];
        ul_method_spec *m = &p->methods[p->n_methods++];
        char where[64];
        snprintf(where, sizeof where, "methods[%zu]", i);
        int rc = ul_yaml_check_keys(doc, mn, where, keys, COUNT(keys), err);
        if (!rc)
            rc = required_name(doc, mn, where, m->name, sizeof m->name, err);
        ul_params *base = NULL;
        if (!rc)
            rc = plugin_params(doc, mn, UL_KIND_METHOD, m->name, where, &base, err);
        if (rc)
            return rc;
        const ul_yaml_node *lb = ul_yaml_get(mn, "label");
        snprintf(m->label, sizeof m->label, "%s",
                 lb && lb->kind == UL_YAML_SCALAR ? lb->scalar : m->name);
        for (size_t j = 0; j + 1 < p->n_methods; j++)
            if (strcmp(p->methods[j].label, m->label) == 0) {
                ul_params_free(base);
                return ul_yaml_errorf(err, doc, mn->line, mn->col,
                                      "%s: method label '%s' is used twice; give one a "
                                      "distinct `label`",
                                      where, m->label);
            }
        rc = parse_grid(doc, m, base, ul_yaml_get(mn, "grid"), where, err);
        ul_params_free(base);
        if (rc)
            return rc;
    }
    return UL_OK;
}

static int parse_lambdas(const ul_yaml_doc *doc, const ul_yaml_node *v, ul_goal_spec *g,
                         ul_error *err)
{
    size_t nv = v->kind == UL_YAML_SEQ ? v->n : 1;
    if (v->kind == UL_YAML_MAP || nv == 0 || nv > UL_MAX_LAMBDAS)
        return ul_yaml_errorf(err, doc, v->line, v->col,
                              "goal '%s': lambda must be a number or a list of 1 to %d numbers "
                              "in [0, 1]",
                              g->name, UL_MAX_LAMBDAS);
    for (size_t i = 0; i < nv; i++) {
        const ul_yaml_node *it = v->kind == UL_YAML_SEQ ? v->items[i] : v;
        char *end = NULL;
        double l = it->kind == UL_YAML_SCALAR ? strtod(it->scalar, &end) : NAN;
        if (!end || *end || end == it->scalar || !(l >= 0.0 && l <= 1.0))
            return ul_yaml_errorf(err, doc, it->line, it->col,
                                  "goal '%s': lambda must be in [0, 1], got '%s'", g->name,
                                  it->kind == UL_YAML_SCALAR ? it->scalar : "a collection");
        g->lambdas[i] = l;
    }
    g->n_lambdas = nv;
    return UL_OK;
}

static int parse_goals(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    const ul_yaml_doc *doc = p->doc;
    if (!n)
        return UL_OK;
    /* Either {privacy: [0.2, 0.4], bias: 0.3} or [{name: privacy, lambda: [..]}, ...]. */
    bool as_map = n->kind == UL_YAML_MAP;
    if ((!as_map && n->kind != UL_YAML_SEQ) || n->n > UL_MAX_GOALS)
        return ul_yaml_errorf(err, doc, n->line, n->col,
                              "goals must map goal names to lambdas, e.g. {privacy: [0.2, 0.4], "
                              "bias: [0.3]}");
    for (size_t i = 0; i < n->n; i++) {
        ul_goal_spec *g = &p->goals[p->n_goals++];
        const ul_yaml_node *lam, *at;
        int rc;
        if (as_map) {
            snprintf(g->name, sizeof g->name, "%s", n->keys[i]);
            lam = n->items[i];
            at = n;
            const ul_plugin *pl;
            rc = ul_plugin_find(UL_KIND_GOAL, g->name, &pl, err);
            if (rc) {
                char msg[UL_ERROR_MAX];
                snprintf(msg, sizeof msg, "%s", err->msg);
                return ul_yaml_errorf(err, doc, n->key_line[i], n->key_col[i], "%s", msg);
            }
        } else {
            static const char *const keys[] = {"name", "lambda"};
            at = n->items[i];
            char where[64];
            snprintf(where, sizeof where, "goals[%zu]", i);
            if ((rc = ul_yaml_check_keys(doc, at, where, keys, 2, err)) ||
                (rc = required_name(doc, at, where, g->name, sizeof g->name, err)))
                return rc;
            const ul_plugin *pl;
            if ((rc = ul_plugin_find(UL_KIND_GOAL, g->name, &pl, err))) {
                const ul_yaml_node *nm = ul_yaml_get(at, "name");
                char msg[UL_ERROR_MAX];
                snprintf(msg, sizeof msg, "%s", err->msg);
                return ul_yaml_errorf(err, doc, nm->line, nm->col, "%s", msg);
            }
            lam = ul_yaml_get(at, "lambda");
            if (!lam)
                return ul_yaml_errorf(err, doc, at->line, at->col,
                                      "%s: missing required key 'lambda'", where);
        }
        (void)at;
        if ((rc = parse_lambdas(doc, lam, g, err)))
            return rc;
    }
    return UL_OK;
}

static int add_metric(ul_pipeline *p, const char *name, const ul_yaml_node *params,
                      const ul_yaml_node *at, ul_error *err)
{
    if (p->n_metrics == UL_MAX_METRICS)
        return ul_yaml_errorf(err, p->doc, at->line, at->col, "at most %d metrics",
                              UL_MAX_METRICS);
    for (size_t i = 0; i < p->n_metrics; i++)
        if (strcmp(p->metrics[i].name, name) == 0)
            return ul_yaml_errorf(err, p->doc, at->line, at->col, "metric '%s' is listed twice",
                                  name);
    ul_metric_spec *m = &p->metrics[p->n_metrics];
    snprintf(m->name, sizeof m->name, "%s", name);
    const ul_plugin *pl;
    int rc = ul_plugin_find(UL_KIND_METRIC, name, &pl, err);
    if (rc) {
        char msg[UL_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return ul_yaml_errorf(err, p->doc, at->line, at->col, "%s", msg);
    }
    m->params = ul_params_new(pl->desc->params, pl->desc->n_params, err);
    if (!m->params)
        return UL_EPLUGIN;
    p->n_metrics++;
    if (params) {
        char where[192];
        snprintf(where, sizeof where, "metric '%s' params", name);
        if ((rc = ul_yaml_fill_params(p->doc, params, where, m->params, err)))
            return rc;
    }
    return UL_OK;
}

static int parse_metrics(ul_pipeline *p, const ul_yaml_node *n, ul_error *err)
{
    int rc;
    if (!n) {
        static const char *const defaults[] = {"errors", "mia_loss", "timing"};
        ul_yaml_node at = {.line = 1, .col = 1};
        for (size_t i = 0; i < COUNT(defaults); i++)
            if ((rc = add_metric(p, defaults[i], NULL, &at, err)))
                return rc;
        return UL_OK;
    }
    if (n->kind != UL_YAML_SEQ)
        return ul_yaml_errorf(err, p->doc, n->line, n->col,
                              "metrics must be a list of metric names or {name, params}");
    for (size_t i = 0; i < n->n; i++) {
        const ul_yaml_node *it = n->items[i];
        if (it->kind == UL_YAML_SCALAR) {
            rc = add_metric(p, it->scalar, NULL, it, err);
        } else {
            static const char *const keys[] = {"name", "params"};
            char where[64], name[128];
            snprintf(where, sizeof where, "metrics[%zu]", i);
            if ((rc = ul_yaml_check_keys(p->doc, it, where, keys, 2, err)) ||
                (rc = required_name(p->doc, it, where, name, sizeof name, err)))
                return rc;
            rc = add_metric(p, name, ul_yaml_get(it, "params"), ul_yaml_get(it, "name"), err);
        }
        if (rc)
            return rc;
    }
    /* Goals read values of the errors and mia_loss metrics. */
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
    static const char *const top[] = {"seed",    "seeds",   "dataset", "model",
                                      "train",   "forget",  "methods", "goals",
                                      "metrics", "output",  "keep_checkpoints"};
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
    if ((rc = parse_seeds(p, ul_yaml_get(root, "seeds"), err)) ||
        (rc = parse_forget(p, ul_yaml_get(root, "forget"), err)) ||
        (rc = parse_methods(p, ul_yaml_get(root, "methods"), err)) ||
        (rc = parse_goals(p, ul_yaml_get(root, "goals"), err)) ||
        ((p->forget.enabled || ul_yaml_get(root, "metrics")) &&
         (rc = parse_metrics(p, ul_yaml_get(root, "metrics"), err))))
        goto fail;
    if ((p->n_methods || p->n_goals) && !p->forget.enabled) {
        rc = ul_yaml_errorf(err, doc, root->line, root->col,
                            "methods and goals need a `forget` section (e.g. forget: {size: 200})");
        goto fail;
    }
    snprintf(p->keep_checkpoints, sizeof p->keep_checkpoints, "selected");
    n = ul_yaml_get(root, "keep_checkpoints");
    if (n) {
        if (n->kind != UL_YAML_SCALAR || (strcmp(n->scalar, "selected") &&
                                          strcmp(n->scalar, "all") && strcmp(n->scalar, "none"))) {
            rc = ul_yaml_errorf(err, doc, n->line, n->col,
                                "keep_checkpoints must be selected, all or none");
            goto fail;
        }
        snprintf(p->keep_checkpoints, sizeof p->keep_checkpoints, "%s", n->scalar);
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
    for (size_t i = 0; i < p->n_methods; i++) {
        for (size_t k = 0; k < p->methods[i].n_points; k++)
            ul_params_free(p->methods[i].points[k]);
        free(p->methods[i].points);
    }
    for (size_t i = 0; i < p->n_metrics; i++)
        ul_params_free(p->metrics[i].params);
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

int ul_pipeline_write_resolved(const ul_pipeline *p, const char *path, ul_error *err)
{
    ul_atomic_file af;
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    fprintf(f, "# Resolved from %s by unlearn %s: every default filled in.\n", p->config_path,
            UL_VERSION);
    fprintf(f, "# BLIS %s, kernels %s (%s), packed convolution kernels %s (%s), %d threads (%s).\n",
            ul_runtime_blis_version(), ul_runtime_blis_arch(), ul_runtime_blis_arch_source(),
            ul_runtime_packed_arch(), ul_runtime_packed_source(), ul_runtime_threads(),
            ul_runtime_threads_source());
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
    fprintf(f, "seeds: [");
    for (size_t i = 0; i < p->n_seeds; i++)
        fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)p->seeds[i]);
    fprintf(f, "]\n");
    if (p->forget.enabled) {
        const ul_forget_spec *fs = &p->forget;
        static const char *const sel[] = {"", "random", "classes", "mislabeled"};
        fprintf(f, "forget:\n  size: %lld\n  selection: %s\n  classes: [",
                (long long)fs->size, sel[fs->selection]);
        for (int i = 0; i < fs->n_classes; i++)
            fprintf(f, "%s%d", i ? ", " : "", fs->classes[i]);
        pos = 0;
        ul_json_escape(q, sizeof q, &pos, fs->indices_file);
        fprintf(f, "]\n  target: %d\n  seed: %llu\n  indices_file: %s\n  retrain: %s\n",
                fs->target, (unsigned long long)fs->seed, q, fs->retrain ? "true" : "false");
    }
    if (p->n_methods) {
        fprintf(f, "methods:\n");
        for (size_t i = 0; i < p->n_methods; i++) {
            const ul_method_spec *m = &p->methods[i];
            fprintf(f, "  - name: %s\n    label: %s\n    grid:  # %zu points\n", m->name,
                    m->label, m->n_points);
            for (size_t k = 0; k < m->n_points; k++) {
                fprintf(f, "      -\n");
                emit_params(f, m->points[k], 8);
            }
        }
    }
    if (p->n_goals) {
        fprintf(f, "goals:\n");
        for (size_t i = 0; i < p->n_goals; i++) {
            fprintf(f, "  %s: [", p->goals[i].name);
            for (size_t k = 0; k < p->goals[i].n_lambdas; k++)
                fprintf(f, "%s%.17g", k ? ", " : "", p->goals[i].lambdas[k]);
            fprintf(f, "]\n");
        }
    }
    if (p->forget.enabled) {
        fprintf(f, "metrics:\n");
        for (size_t i = 0; i < p->n_metrics; i++) {
            fprintf(f, "  - name: %s\n    params:", p->metrics[i].name);
            size_t np;
            ul_params_schema(p->metrics[i].params, &np);
            fprintf(f, np ? "\n" : " {}\n");
            emit_params(f, p->metrics[i].params, 6);
        }
        fprintf(f, "keep_checkpoints: %s\n", p->keep_checkpoints);
    }
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
