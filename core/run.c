/* Running a pipeline: original and retrained models per width and seed
 * (cached in the run directory by a hash of everything that determines
 * them), every method at every grid point, metrics, validation-based
 * selection per goal and λ, and the result files. Every file is written
 * atomically and rewritten after each finished unit of work, so a run that
 * stops can be resumed by running it again. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "progress.h"
#include "safetensors.h"
#include "ul_config.h"

#define MAX_VALUES 64

typedef struct row {
    double width;
    uint64_t seed;
    int64_t params;
    char method[128];    /* label; "original" and "retrained" for the reference models */
    char plugin[128];
    int point;           /* grid point index, -1 for reference rows */
    char *hparams;       /* JSON object of every resolved hyperparameter */
    char key[17];        /* hash of everything that determines the row */
    bool diverged;
    char note[512];
    double unlearn_seconds;
    ul_metric_value vals[MAX_VALUES];
    size_t n_vals;
    char checkpoint[512];
    bool current;        /* part of this configuration (not a leftover of an earlier one) */
} row;

typedef struct run_state {
    ul_pipeline *p;
    const char *dir;
    ul_progress prog;
    ul_dataset ds;
    ul_splits sp;
    int32_t *labels;       /* training labels as trained on (mislabeled F relabelled) */
    int64_t *forget, *retain, *all_train;
    int64_t n_forget, n_retain, n_all;
    ul_train_cfg cfg;
    int eval_batch;
    row *rows;
    size_t n_rows, cap_rows;
    char model_json[8192], data_json[8192], train_json[8192], split_json[1024];
    uint64_t forget_hash;
    /* progress accounting */
    double t0, train_time, point_time;
    size_t trains_done, points_done, trains_total, points_total;
} run_state;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

static uint64_t width_stream(double w)
{
    uint64_t bits;
    memcpy(&bits, &w, sizeof bits);
    return bits ^ 0x6d6f64656cULL;
}

/* ---- forget set ---------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int read_indices(run_state *st, const char *path, ul_error *err)
{
    char *text;
    size_t len;
    int rc = ul_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    int64_t cap = 1024, n = 0;
    int64_t *v = malloc((size_t)cap * sizeof *v);
    char *save = NULL;
    int line = 0;
    char *is_train = calloc((size_t)st->ds.n_train, 1);
    for (int64_t i = 0; i < st->sp.n_train; i++)
        is_train[st->sp.train[i]] = 1;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        line++;
        while (*l == ' ' || *l == '\t' || *l == '\r')
            l++;
        if (!*l || *l == '#')
            continue;
        char *end;
        errno = 0;
        long long x = strtoll(l, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r')
            end++;
        if (errno || *end || end == l || x < 0 || x >= st->ds.n_train) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s:%d: '%s' is not a training-set index (0 to %lld)", path, line, l,
                           (long long)st->ds.n_train - 1);
            goto done;
        }
        if (is_train[x] != 1) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s:%d: index %lld is %s; forget indices must come from the training "
                           "split (same seed, val_fraction and subset as the run that wrote them)",
                           path, line, x, is_train[x] == 2 ? "listed twice" : "not in the training split");
            goto done;
        }
        is_train[x] = 2;
        if (n == cap) {
            cap *= 2;
            int64_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = ul_errorf(err, UL_ENOMEM, "out of memory");
                goto done;
            }
            v = nv;
        }
        v[n++] = x;
    }
    if (n == 0) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: the file lists no indices: an empty forget set leaves nothing to "
                       "unlearn",
                       path);
        goto done;
    }
    st->forget = v;
    st->n_forget = n;
    v = NULL;
done:
    free(v);
    free(is_train);
    free(text);
    return rc;
}

static int select_forget(run_state *st, ul_error *err)
{
    const ul_forget_spec *f = &st->p->forget;
    const ul_dataset *d = &st->ds;
    int rc;
    if (*f->indices_file) {
        if ((rc = read_indices(st, f->indices_file, err)))
            return rc;
    } else {
        int64_t *cand = malloc((size_t)(st->sp.n_train ? st->sp.n_train : 1) * sizeof *cand);
        if (!cand)
            return ul_errorf(err, UL_ENOMEM, "out of memory");
        int64_t nc = 0;
        for (int64_t i = 0; i < st->sp.n_train; i++) {
            int64_t ix = st->sp.train[i];
            int32_t y = d->train_y[ix];
            bool ok = true;
            if (f->selection == UL_FORGET_CLASSES) {
                ok = false;
                for (int k = 0; k < f->n_classes; k++)
                    ok = ok || f->classes[k] == y;
            } else if (f->selection == UL_FORGET_MISLABELED) {
                ok = y != f->target;
            }
            if (ok)
                cand[nc++] = ix;
        }
        qsort(cand, (size_t)nc, sizeof *cand, cmp_i64);
        int64_t want = f->selection == UL_FORGET_CLASSES && f->size == 0 ? nc : f->size;
        if (want > nc || want > st->sp.n_train - 2) {
            free(cand);
            return ul_errorf(err, UL_EINVAL,
                             "forget.size is %lld but only %lld eligible training examples exist "
                             "(%lld in the training split after validation); lower forget.size",
                             (long long)want, (long long)nc, (long long)st->sp.n_train);
        }
        ul_rng rng;
        ul_rng_seed(&rng, f->seed, 0x666f72676574ULL);
        ul_rng_shuffle_i64(&rng, cand, nc);
        st->forget = cand;
        st->n_forget = want;
    }
    qsort(st->forget, (size_t)st->n_forget, sizeof *st->forget, cmp_i64);
    if (st->n_forget > st->sp.n_train - 2)
        return ul_errorf(err, UL_EINVAL,
                         "the forget set (%lld examples) must be smaller than the training set "
                         "(%lld examples)",
                         (long long)st->n_forget, (long long)st->sp.n_train);
    for (int k = 0; k < f->n_classes; k++)
        if (f->classes[k] >= d->n_classes)
            return ul_errorf(err, UL_EINVAL, "forget.classes: class %d does not exist (%d classes)",
                             f->classes[k], d->n_classes);
    if (f->selection == UL_FORGET_MISLABELED && f->target >= d->n_classes)
        return ul_errorf(err, UL_EINVAL, "forget.target: class %d does not exist (%d classes)",
                         f->target, d->n_classes);

    /* R = training split minus F; D = R ∪ F. */
    st->retain = malloc((size_t)st->sp.n_train * sizeof *st->retain);
    st->all_train = malloc((size_t)st->sp.n_train * sizeof *st->all_train);
    st->labels = malloc((size_t)d->n_train * sizeof *st->labels);
    if (!st->retain || !st->all_train || !st->labels)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    memcpy(st->labels, d->train_y, (size_t)d->n_train * sizeof *st->labels);
    memcpy(st->all_train, st->sp.train, (size_t)st->sp.n_train * sizeof *st->all_train);
    st->n_all = st->sp.n_train;
    for (int64_t i = 0; i < st->sp.n_train; i++) {
        int64_t ix = st->sp.train[i];
        if (!bsearch(&ix, st->forget, (size_t)st->n_forget, sizeof ix, cmp_i64))
            st->retain[st->n_retain++] = ix;
    }
    if (f->selection == UL_FORGET_MISLABELED)
        for (int64_t i = 0; i < st->n_forget; i++)
            st->labels[st->forget[i]] = f->target;
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv1a(h, st->forget, (size_t)st->n_forget * sizeof *st->forget);
    int32_t t = f->selection == UL_FORGET_MISLABELED ? f->target : -1;
    st->forget_hash = fnv1a(h, &t, sizeof t);
    return UL_OK;
}

static int write_forget_indices(run_state *st, ul_error *err)
{
    size_t cap = (size_t)st->n_forget * 24 + 256, pos = 0;
    char *buf = malloc(cap);
    if (!buf)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    pos += (size_t)snprintf(buf, cap, "# forget set: %lld training-set indices (%s)\n",
                            (long long)st->n_forget, st->ds.source);
    for (int64_t i = 0; i < st->n_forget; i++)
        pos += (size_t)snprintf(buf + pos, cap - pos, "%lld\n", (long long)st->forget[i]);
    char path[4200];
    snprintf(path, sizeof path, "%s/forget_indices.txt", st->dir);
    int rc = ul_write_file_atomic(path, buf, pos, err);
    free(buf);
    return rc;
}

/* ---- views ----------------------------------------------------------------------- */

static ul_data_view view_train(const run_state *st, const int64_t *idx, int64_t n)
{
    const ul_dataset *d = &st->ds;
    return (ul_data_view){d->train_x, st->labels, idx, n, d->c, d->h, d->w, d->n_classes};
}

static ul_data_view view_test(const run_state *st)
{
    const ul_dataset *d = &st->ds;
    return (ul_data_view){d->test_x, d->test_y, st->sp.test, st->sp.n_test,
                          d->c, d->h, d->w, d->n_classes};
}

/* ---- results ----------------------------------------------------------------------- */

static row *row_add(run_state *st)
{
    if (st->n_rows == st->cap_rows) {
        size_t cap = st->cap_rows ? 2 * st->cap_rows : 64;
        row *nr = realloc(st->rows, cap * sizeof *nr);
        if (!nr)
            return NULL;
        st->rows = nr;
        st->cap_rows = cap;
    }
    row *r = &st->rows[st->n_rows++];
    memset(r, 0, sizeof *r);
    r->unlearn_seconds = NAN;
    return r;
}

static const row *row_find(const run_state *st, const char *key)
{
    for (size_t i = 0; i < st->n_rows; i++)
        if (strcmp(st->rows[i].key, key) == 0)
            return &st->rows[i];
    return NULL;
}

static double row_value(const row *r, const char *name, double *std)
{
    for (size_t i = 0; i < r->n_vals; i++)
        if (strcmp(r->vals[i].name, name) == 0) {
            if (std)
                *std = r->vals[i].std;
            return r->vals[i].value;
        }
    if (std)
        *std = NAN;
    return NAN;
}

static void fput_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

static void fput_json_str(FILE *f, const char *s)
{
    char buf[2048];
    size_t pos = 0;
    ul_json_escape(buf, sizeof buf, &pos, s);
    fputs(buf, f);
}

static int write_results(run_state *st, ul_error *err)
{
    char path[4200];
    ul_atomic_file af;
    snprintf(path, sizeof path, "%s/results.jsonl", st->dir);
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    for (size_t i = 0; i < st->n_rows; i++) {
        const row *r = &st->rows[i];
        fprintf(f, "{\"key\": \"%s\", \"width\": %.17g, \"seed\": %llu, \"params\": %lld, "
                   "\"method\": ",
                r->key, r->width, (unsigned long long)r->seed, (long long)r->params);
        fput_json_str(f, r->method);
        fprintf(f, ", \"plugin\": ");
        fput_json_str(f, r->plugin);
        fprintf(f, ", \"point\": %d, \"hparams\": %s, \"diverged\": %s, \"note\": ", r->point,
                r->hparams ? r->hparams : "{}", r->diverged ? "true" : "false");
        fput_json_str(f, r->note);
        fprintf(f, ", \"checkpoint\": ");
        fput_json_str(f, r->checkpoint);
        fprintf(f, ", \"metrics\": {");
        for (size_t k = 0; k < r->n_vals; k++) {
            fprintf(f, "%s\"%s\": ", k ? ", " : "", r->vals[k].name);
            fput_num(f, r->vals[k].value);
            if (isfinite(r->vals[k].std)) {
                fprintf(f, ", \"%s_std\": ", r->vals[k].name);
                fput_num(f, r->vals[k].std);
            }
        }
        fprintf(f, "}}\n");
    }
    if ((rc = ul_atomic_commit(&af, err)))
        return rc;

    /* CSV: fixed columns, then every metric value seen, in order of first appearance. */
    const char *cols[256];
    bool has_std[256];
    size_t nc = 0;
    for (size_t i = 0; i < st->n_rows; i++)
        for (size_t k = 0; k < st->rows[i].n_vals; k++) {
            const ul_metric_value *v = &st->rows[i].vals[k];
            size_t c = 0;
            while (c < nc && strcmp(cols[c], v->name) != 0)
                c++;
            if (c == nc && nc < 256) {
                cols[nc] = v->name;
                has_std[nc++] = false;
            }
            if (c < nc && isfinite(v->std))
                has_std[c] = true;
        }
    snprintf(path, sizeof path, "%s/results.csv", st->dir);
    if ((rc = ul_atomic_open(&af, path, err)))
        return rc;
    f = af.fp;
    fprintf(f, "width,seed,params,method,plugin,point,diverged");
    for (size_t c = 0; c < nc; c++) {
        fprintf(f, ",%s", cols[c]);
        if (has_std[c])
            fprintf(f, ",%s_std", cols[c]);
    }
    fprintf(f, ",hparams\n");
    for (size_t i = 0; i < st->n_rows; i++) {
        const row *r = &st->rows[i];
        fprintf(f, "%.10g,%llu,%lld,%s,%s,%d,%s", r->width, (unsigned long long)r->seed,
                (long long)r->params, r->method, r->plugin, r->point,
                r->diverged ? "true" : "false");
        for (size_t c = 0; c < nc; c++) {
            double sd, v = row_value(r, cols[c], &sd);
            fputc(',', f);
            if (isfinite(v))
                fprintf(f, "%.10g", v);
            if (has_std[c]) {
                fputc(',', f);
                if (isfinite(sd))
                    fprintf(f, "%.10g", sd);
            }
        }
        /* hparams JSON as one quoted CSV field (quotes doubled). */
        fputs(",\"", f);
        for (const char *s = r->hparams ? r->hparams : "{}"; *s; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputs("\"\n", f);
    }
    return ul_atomic_commit(&af, err);
}

/* Rows of an earlier run of the same directory, so finished work is skipped. */
static int load_results(run_state *st, ul_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/results.jsonl", st->dir);
    if (!ul_file_exists(path))
        return UL_OK;
    char *text;
    size_t len;
    int rc = ul_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        ul_json *j;
        if (ul_json_parse(l, strlen(l), &j, NULL) != UL_OK)
            continue; /* a damaged line is simply recomputed */
        const ul_json *key = ul_json_get(j, "key"), *m = ul_json_get(j, "metrics");
        const ul_json *hp = ul_json_get(j, "hparams");
        row *r = key && key->type == UL_JSON_STRING && m && m->type == UL_JSON_OBJECT
                     ? row_add(st)
                     : NULL;
        if (r) {
            snprintf(r->key, sizeof r->key, "%s", key->string);
            const ul_json *v;
            if ((v = ul_json_get(j, "width")) && v->type == UL_JSON_NUMBER)
                r->width = v->number;
            if ((v = ul_json_get(j, "seed")) && v->type == UL_JSON_NUMBER)
                r->seed = (uint64_t)v->number;
            if ((v = ul_json_get(j, "params")) && v->type == UL_JSON_NUMBER)
                r->params = (int64_t)v->number;
            if ((v = ul_json_get(j, "point")) && v->type == UL_JSON_NUMBER)
                r->point = (int)v->number;
            if ((v = ul_json_get(j, "method")) && v->type == UL_JSON_STRING)
                snprintf(r->method, sizeof r->method, "%s", v->string);
            if ((v = ul_json_get(j, "plugin")) && v->type == UL_JSON_STRING)
                snprintf(r->plugin, sizeof r->plugin, "%s", v->string);
            if ((v = ul_json_get(j, "note")) && v->type == UL_JSON_STRING)
                snprintf(r->note, sizeof r->note, "%s", v->string);
            if ((v = ul_json_get(j, "checkpoint")) && v->type == UL_JSON_STRING)
                snprintf(r->checkpoint, sizeof r->checkpoint, "%s", v->string);
            r->diverged = (v = ul_json_get(j, "diverged")) && v->type == UL_JSON_BOOL && v->boolean;
            /* The hparams object is kept as text by re-reading its span. */
            const char *h = strstr(l, "\"hparams\": ");
            if (h && hp) {
                h += strlen("\"hparams\": ");
                int depth = 0;
                const char *e = h;
                bool in_str = false;
                for (; *e; e++) {
                    if (in_str) {
                        if (*e == '\\' && e[1])
                            e++;
                        else if (*e == '"')
                            in_str = false;
                    } else if (*e == '"') {
                        in_str = true;
                    } else if (*e == '{') {
                        depth++;
                    } else if (*e == '}' && --depth == 0) {
                        e++;
                        break;
                    }
                }
                r->hparams = strndup(h, (size_t)(e - h));
            }
            for (size_t k = 0; k < m->n && r->n_vals < MAX_VALUES; k++) {
                const char *name = m->keys[k];
                size_t nl = strlen(name);
                if (nl > 4 && strcmp(name + nl - 4, "_std") == 0)
                    continue;
                ul_metric_value *mv = &r->vals[r->n_vals++];
                snprintf(mv->name, sizeof mv->name, "%s", name);
                mv->value = m->items[k]->type == UL_JSON_NUMBER ? m->items[k]->number : NAN;
                char sname[64];
                snprintf(sname, sizeof sname, "%s_std", name);
                const ul_json *sd = ul_json_get(m, sname);
                mv->std = sd && sd->type == UL_JSON_NUMBER ? sd->number : NAN;
            }
            r->unlearn_seconds = row_value(r, "unlearn_seconds", NULL);
        }
        ul_json_free(j);
    }
    free(text);
    return UL_OK;
}

/* ---- metrics ------------------------------------------------------------------------ */

static int compute_metrics(run_state *st, ul_net *model, ul_net *original, ul_net *retrained,
                           double unlearn_s, double retrain_s, uint64_t seed, row *r,
                           ul_error *err)
{
    const ul_pipeline *p = st->p;
    const ul_forget_spec *f = &p->forget;
    ul_metric_ctx ctx = {
        .struct_size = sizeof ctx,
        .model = model,
        .original = original,
        .retrained = retrained,
        .retain = view_train(st, st->retain, st->n_retain),
        .forget = view_train(st, st->forget, st->n_forget),
        .val = view_train(st, st->sp.val, st->sp.n_val),
        .test = view_test(st),
        .forget_classes = f->selection == UL_FORGET_CLASSES ? f->classes : NULL,
        .n_forget_classes = f->selection == UL_FORGET_CLASSES ? f->n_classes : 0,
        .unlearn_seconds = unlearn_s,
        .retrain_seconds = retrain_s,
        .seed = seed,
    };
    r->n_vals = 0;
    for (size_t i = 0; i < p->n_metrics; i++) {
        const ul_plugin *pl;
        int rc = ul_plugin_find(UL_KIND_METRIC, p->metrics[i].name, &pl, err);
        if (rc)
            return rc;
        const ul_metric_vtable *vt = pl->desc->vtable;
        size_t n = 0;
        rc = vt->compute(&ctx, p->metrics[i].params, r->vals + r->n_vals,
                         MAX_VALUES - r->n_vals, &n, err);
        if (rc) {
            ul_error_prefix(err, "metric '%s'", p->metrics[i].name);
            return rc;
        }
        r->n_vals += n;
    }
    return UL_OK;
}

/* ---- progress ------------------------------------------------------------------------ */

static void eta_text(const run_state *st, char *buf, size_t cap)
{
    size_t trains_left = st->trains_total - st->trains_done;
    size_t points_left = st->points_total - st->points_done;
    if (st->trains_done == 0 && st->points_done == 0) {
        snprintf(buf, cap, "pipeline ETA: after the first task");
        return;
    }
    /* Until a method has been timed, only the trainings are counted. */
    double per_train = st->trains_done ? st->train_time / (double)st->trains_done : 0;
    double per_point = st->points_done ? st->point_time / (double)st->points_done : 0;
    double eta = (double)trains_left * per_train + (double)points_left * per_point;
    char d[32];
    ul_format_duration(eta, d, sizeof d);
    snprintf(buf, cap, "pipeline ETA %s%s", (st->points_done || !points_left) ? "" : "> ", d);
}

/* ---- original and retrained models ------------------------------------------------------ */

static uint64_t model_key(const run_state *st, double width, uint64_t seed, const char *role)
{
    const ul_pipeline *p = st->p;
    uint64_t h = 0xcbf29ce484222325ULL;
    char buf[128];
    h = fnv_str(h, role);
    h = fnv_str(h, p->dataset);
    h = fnv_str(h, st->data_json);
    h = fnv_str(h, st->split_json);
    snprintf(buf, sizeof buf, "%llu %.17g %llu", (unsigned long long)p->seed, width,
             (unsigned long long)seed);
    h = fnv_str(h, buf);
    h = fnv_str(h, p->model);
    h = fnv_str(h, st->model_json);
    h = fnv_str(h, st->train_json);
    /* The forget set determines R (and, when mislabeled, D's labels). */
    return fnv1a(h, &st->forget_hash, sizeof st->forget_hash);
}

static void checkpoint_meta(const run_state *st, double width, uint64_t seed, const char *role,
                            const char *key, const char *seconds, ul_kv *meta, size_t *n,
                            char bufs[][64])
{
    const ul_pipeline *p = st->p;
    snprintf(bufs[0], 64, "%.17g", width);
    snprintf(bufs[1], 64, "[%d, %d, %d]", st->ds.c, st->ds.h, st->ds.w);
    snprintf(bufs[2], 64, "%d", st->ds.n_classes);
    snprintf(bufs[3], 64, "%llu", (unsigned long long)p->seed);
    snprintf(bufs[4], 64, "%llu", (unsigned long long)seed);
    ul_params_format(p->split, "val_fraction", false, bufs[5], 64);
    ul_params_format(p->split, "subset", false, bufs[6], 64);
    ul_params_format(p->split, "test_subset", false, bufs[7], 64);
    const ul_kv m[] = {
        {"format", "unlearn-checkpoint-1"}, {"unlearn_version", UL_VERSION},
        {"model", (char *)p->model}, {"model_params", (char *)st->model_json},
        {"width", bufs[0]}, {"input_shape", bufs[1]}, {"classes", bufs[2]},
        {"dataset", (char *)p->dataset}, {"dataset_params", (char *)st->data_json},
        {"seed", bufs[3]}, {"train_seed", bufs[4]}, {"val_fraction", bufs[5]},
        {"subset", bufs[6]}, {"test_subset", bufs[7]}, {"role", (char *)role},
        {"cache_key", (char *)key}, {"train_seconds", (char *)seconds},
    };
    *n = sizeof m / sizeof m[0];
    memcpy(meta, m, sizeof m);
}

/* Trains (or reuses from the run directory) one reference model. */
static int reference_model(run_state *st, double width, uint64_t seed, const char *role,
                           const int64_t *idx, int64_t n, ul_net **out, double *seconds,
                           char *ckpt_rel, size_t ckpt_cap, ul_error *err)
{
    const ul_pipeline *p = st->p;
    char key[17], path[4800];
    snprintf(key, sizeof key, "%016llx",
             (unsigned long long)model_key(st, width, seed, role));
    snprintf(ckpt_rel, ckpt_cap, "checkpoints/%s_w%g_s%llu.safetensors", role, width,
             (unsigned long long)seed);
    snprintf(path, sizeof path, "%s/%s", st->dir, ckpt_rel);
    ul_rng init_rng;
    ul_rng_seed(&init_rng, seed, width_stream(width));
    ul_net *net;
    int rc = ul_model_create(p->model, width, p->model_params, st->ds.c, st->ds.h, st->ds.w,
                             st->ds.n_classes, &init_rng, &net, err);
    if (rc)
        return rc;
    if (ul_file_exists(path)) {
        ul_kv *meta = NULL;
        size_t nm = 0;
        ul_error e2;
        if (ul_checkpoint_read_metadata(path, &meta, &nm, &e2) == UL_OK) {
            const char *k = ul_kv_get(meta, nm, "cache_key");
            const char *s = ul_kv_get(meta, nm, "train_seconds");
            bool hit = k && strcmp(k, key) == 0 && s && ul_checkpoint_load(path, net, &e2) == 0;
            if (hit)
                *seconds = strtod(s, NULL);
            ul_kv_free(meta, nm);
            if (hit) {
                ul_progress_log(&st->prog, "[width %g seed %llu] %s model reused from %s", width,
                                (unsigned long long)seed, role, ckpt_rel);
                *out = net;
                st->trains_total--;
                return UL_OK;
            }
        }
    }
    char eta[64];
    eta_text(st, eta, sizeof eta);
    ul_progress_log(&st->prog, "[width %g seed %llu] training the %s model on %lld examples (%s)",
                    width, (unsigned long long)seed, role, (long long)n, eta);
    ul_progress_set_label(&st->prog, "[w %g s %llu %s]", width, (unsigned long long)seed, role);
    ul_data_view v = view_train(st, idx, n);
    ul_train_cfg cfg = st->cfg;
    cfg.seed = seed;
    ul_train_result tr;
    double t0 = now_s();
    rc = ul_train(net, &v, &cfg, ul_progress_train, &st->prog, &tr, err);
    if (rc) {
        ul_error_prefix(err, "%s model %s at width %g (seed %llu)", role, p->model, width,
                        (unsigned long long)seed);
        ul_net_free(net);
        return rc;
    }
    *seconds = now_s() - t0;
    st->train_time += *seconds;
    st->trains_done++;
    char secs[64], bufs[8][64];
    snprintf(secs, sizeof secs, "%.6f", *seconds);
    ul_kv meta[32];
    size_t nm;
    checkpoint_meta(st, width, seed, role, key, secs, meta, &nm, bufs);
    if ((rc = ul_checkpoint_save(path, net, meta, nm, err))) {
        ul_net_free(net);
        return rc;
    }
    *out = net;
    return UL_OK;
}

static int reference_row(run_state *st, double width, uint64_t seed, const char *role,
                         ul_net *model, ul_net *original, ul_net *retrained, double retrain_s,
                         const char *ckpt, ul_error *err)
{
    char key[17];
    snprintf(key, sizeof key, "%016llx",
             (unsigned long long)(model_key(st, width, seed, role) ^ 0x726f77ULL));
    row *old = (row *)row_find(st, key);
    if (old) {
        old->current = true;
        return UL_OK;
    }
    row *r = row_add(st);
    if (!r)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    r->width = width;
    r->seed = seed;
    r->params = ul_net_param_count(model);
    snprintf(r->method, sizeof r->method, "%s", role);
    snprintf(r->plugin, sizeof r->plugin, "-");
    r->point = -1;
    r->current = true;
    r->hparams = strdup("{}");
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->checkpoint, sizeof r->checkpoint, "%s", ckpt);
    int rc = compute_metrics(st, model, original, retrained, NAN, retrain_s, seed, r, err);
    if (rc) {
        st->n_rows--;
        free(r->hparams);
        return rc;
    }
    return write_results(st, err);
}

/* ---- methods ---------------------------------------------------------------------------- */

static bool all_finite(ul_net *net)
{
    size_t n;
    const float *w = ul_net_params(net, &n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i]))
            return false;
    return true;
}

static int method_point(run_state *st, double width, uint64_t seed, const ul_method_spec *m,
                        size_t pi, ul_net *original, ul_net *retrained, double retrain_s,
                        uint64_t orig_key, ul_error *err)
{
    const ul_pipeline *p = st->p;
    char hp[8192];
    ul_params_to_json(m->points[pi], hp, sizeof hp);
    uint64_t h = fnv_str(orig_key ^ 0x6d6574686f64ULL, m->label);
    h = fnv_str(h, m->name);
    h = fnv_str(h, hp);
    for (size_t i = 0; i < p->n_metrics; i++) {
        char mj[4096];
        ul_params_to_json(p->metrics[i].params, mj, sizeof mj);
        h = fnv_str(fnv_str(h, p->metrics[i].name), mj);
    }
    char key[17];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)h);
    row *old = (row *)row_find(st, key);
    if (old) {
        old->current = true;
        st->points_total--;
        return UL_OK;
    }
    const ul_plugin *pl;
    int rc = ul_plugin_find(UL_KIND_METHOD, m->name, &pl, err);
    if (rc)
        return rc;
    char eta[64];
    eta_text(st, eta, sizeof eta);
    ul_progress_log(&st->prog, "[width %g seed %llu] %s point %zu/%zu %s (%s)", width,
                    (unsigned long long)seed, m->label, pi + 1, m->n_points, hp, eta);
    ul_progress_set_label(&st->prog, "[w %g s %llu %s %zu/%zu]", width, (unsigned long long)seed,
                          m->label, pi + 1, m->n_points);
    ul_net *u = ul_net_clone(original, err);
    if (!u)
        return err->code ? err->code : UL_ENOMEM;
    row *r = row_add(st);
    if (!r) {
        ul_net_free(u);
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    }
    r->width = width;
    r->seed = seed;
    r->params = ul_net_param_count(original);
    snprintf(r->method, sizeof r->method, "%s", m->label);
    snprintf(r->plugin, sizeof r->plugin, "%s", m->name);
    r->point = (int)pi;
    r->current = true;
    r->hparams = strdup(hp);
    snprintf(r->key, sizeof r->key, "%s", key);

    ul_method_ctx ctx = {
        .struct_size = sizeof ctx,
        .model = u,
        .original = original,
        .retain = view_train(st, st->retain, st->n_retain),
        .forget = view_train(st, st->forget, st->n_forget),
        .val = view_train(st, st->sp.val, st->sp.n_val),
        .recipe = &st->cfg,
        .seed = h,
        .progress = ul_progress_train,
        .progress_user = &st->prog,
    };
    ul_train_cfg recipe = st->cfg;
    recipe.seed = seed;
    ctx.recipe = &recipe;
    const ul_method_vtable *vt = pl->desc->vtable;
    ul_error merr = {0};
    double t0 = now_s();
    rc = vt->unlearn(&ctx, m->points[pi], &merr);
    double secs = now_s() - t0;
    st->point_time += secs;
    st->points_done++;
    if (rc == UL_OK && !all_finite(u)) {
        rc = UL_EDIVERGED;
        snprintf(merr.msg, sizeof merr.msg, "%s: the weights became NaN or Inf", m->label);
    }
    if (rc == UL_OK) {
        /* Finite weights can still overflow the logits: check the outputs on
         * the sets the method saw before any metric reads them. */
        ul_data_view seen[2] = {ctx.forget, ctx.val};
        for (int k = 0; k < 2 && rc == UL_OK; k++) {
            double loss = 0;
            if (seen[k].n > 0 &&
                (rc = ul_evaluate(u, &seen[k], st->eval_batch, &loss, NULL, NULL, err)))
                break;
            if (!isfinite(loss)) {
                rc = UL_EDIVERGED;
                snprintf(merr.msg, sizeof merr.msg, "%s: the model's outputs became NaN or Inf",
                         m->label);
            }
        }
        if (rc != UL_OK && rc != UL_EDIVERGED) {
            ul_net_free(u);
            st->n_rows--;
            free(r->hparams);
            return rc;
        }
    }
    if (rc == UL_EDIVERGED) {
        r->diverged = true;
        snprintf(r->note, sizeof r->note, "%.500s", merr.msg);
        ul_metric_value *t = &r->vals[r->n_vals++];
        snprintf(t->name, sizeof t->name, "unlearn_seconds");
        t->value = secs;
        t->std = NAN;
        ul_progress_log(&st->prog, "  diverged: %s (recorded; the run goes on)", merr.msg);
        ul_net_free(u);
        return write_results(st, err);
    }
    if (rc) {
        st->n_rows--;
        free(r->hparams);
        ul_net_free(u);
        *err = merr;
        ul_error_prefix(err, "method '%s' (grid point %zu)", m->label, pi + 1);
        return rc;
    }
    r->unlearn_seconds = secs;
    rc = compute_metrics(st, u, original, retrained, secs, retrain_s, seed, r, err);
    if (!rc && strcmp(p->keep_checkpoints, "none") != 0) {
        snprintf(r->checkpoint, sizeof r->checkpoint,
                 "checkpoints/unlearned/%s_w%g_s%llu_p%zu.safetensors", m->label, width,
                 (unsigned long long)seed, pi);
        char path[4800], secbuf[64], bufs[8][64];
        snprintf(path, sizeof path, "%s/%s", st->dir, r->checkpoint);
        snprintf(secbuf, sizeof secbuf, "%.6f", secs);
        ul_kv meta[32];
        size_t nm;
        checkpoint_meta(st, width, seed, m->label, key, secbuf, meta, &nm, bufs);
        rc = ul_checkpoint_save(path, u, meta, nm, err);
    }
    ul_net_free(u);
    if (rc) {
        st->n_rows--;
        free(r->hparams);
        return rc;
    }
    ul_progress_log(&st->prog, "  forget error %.4f, validation error %.4f, test error %.4f, "
                               "%.1f s",
                    row_value(r, "forget_error", NULL), row_value(r, "val_error", NULL),
                    row_value(r, "test_error", NULL), secs);
    return write_results(st, err);
}

/* ---- selection ------------------------------------------------------------------------------ */

typedef struct selection {
    const row *r;
    char goal[128];
    double lambda, objective;
} selection;

static int select_points(run_state *st, selection **out, size_t *n_out, ul_error *err)
{
    const ul_pipeline *p = st->p;
    size_t cap = 16, n = 0;
    selection *sel = malloc(cap * sizeof *sel);
    if (!sel)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    for (size_t wi = 0; wi < p->n_widths; wi++)
        for (size_t si = 0; si < p->n_seeds; si++)
            for (size_t mi = 0; mi < p->n_methods; mi++)
                for (size_t gi = 0; gi < p->n_goals; gi++) {
                    const ul_goal_spec *g = &p->goals[gi];
                    const ul_plugin *pl;
                    int rc = ul_plugin_find(UL_KIND_GOAL, g->name, &pl, err);
                    if (rc) {
                        free(sel);
                        return rc;
                    }
                    const ul_goal_vtable *vt = pl->desc->vtable;
                    size_t nreq = 0;
                    while (vt->requires[nreq])
                        nreq++;
                    for (size_t li = 0; li < g->n_lambdas; li++) {
                        const row *best = NULL;
                        double best_j = INFINITY;
                        for (size_t ri = 0; ri < st->n_rows; ri++) {
                            const row *r = &st->rows[ri];
                            if (!r->current || r->point < 0 || r->diverged ||
                                r->width != p->widths[wi] || r->seed != p->seeds[si] ||
                                strcmp(r->method, p->methods[mi].label) != 0)
                                continue;
                            double vals[16];
                            for (size_t k = 0; k < nreq && k < 16; k++) {
                                vals[k] = row_value(r, vt->requires[k], NULL);
                                if (!isfinite(vals[k])) {
                                    free(sel);
                                    return ul_errorf(
                                        err, UL_EINVAL,
                                        "goal '%s' needs the value '%s', which no metric of this "
                                        "pipeline computed; add the metric that provides it "
                                        "(errors: *_error; mia_loss: mia_loss_val) to `metrics`",
                                        g->name, vt->requires[k]);
                                }
                            }
                            double j = vt->objective(vals, g->lambdas[li]);
                            if (j < best_j) {
                                best_j = j;
                                best = r;
                            }
                        }
                        if (!best)
                            continue; /* every point diverged */
                        if (n == cap) {
                            cap *= 2;
                            selection *ns = realloc(sel, cap * sizeof *ns);
                            if (!ns) {
                                free(sel);
                                return ul_errorf(err, UL_ENOMEM, "out of memory");
                            }
                            sel = ns;
                        }
                        selection *s = &sel[n++];
                        s->r = best;
                        snprintf(s->goal, sizeof s->goal, "%s", g->name);
                        s->lambda = g->lambdas[li];
                        s->objective = best_j;
                    }
                }
    *out = sel;
    *n_out = n;
    return UL_OK;
}

static void csv_num(FILE *f, double v)
{
    fputc(',', f);
    if (isfinite(v))
        fprintf(f, "%.10g", v);
}

static int write_selected(run_state *st, const selection *sel, size_t n, ul_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/selected.csv", st->dir);
    ul_atomic_file af;
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    static const char *const cols[] = {"test_error", "forget_error", "val_error", "retain_error",
                                       "mia_loss_test", "unlearn_seconds", "rte"};
    fprintf(f, "width,seed,params,method,goal,lambda,point,objective");
    for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
        fprintf(f, ",%s", cols[c]);
    fprintf(f, ",mia_loss_test_std,checkpoint,hparams\n");
    for (size_t i = 0; i < n; i++) {
        const row *r = sel[i].r;
        fprintf(f, "%.10g,%llu,%lld,%s,%s,%.10g,%d", r->width, (unsigned long long)r->seed,
                (long long)r->params, r->method, sel[i].goal, sel[i].lambda, r->point);
        csv_num(f, sel[i].objective);
        for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
            csv_num(f, row_value(r, cols[c], NULL));
        double sd;
        row_value(r, "mia_loss_test", &sd);
        csv_num(f, sd);
        fprintf(f, ",%s,\"", r->checkpoint);
        for (const char *s = r->hparams ? r->hparams : "{}"; *s; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputs("\"\n", f);
    }
    return ul_atomic_commit(&af, err);
}

static void fmt_cell(char *buf, size_t cap, double v, const char *fmt)
{
    if (isfinite(v))
        snprintf(buf, cap, fmt, v);
    else
        snprintf(buf, cap, "-");
}

static void print_row(run_state *st, const row *r, const char *goal, double lambda)
{
    char te[16], fe[16], mia[32], t[16], rte[16], lam[16];
    double sd, m = row_value(r, "mia_loss_test", &sd);
    fmt_cell(te, sizeof te, row_value(r, "test_error", NULL), "%.4f");
    fmt_cell(fe, sizeof fe, row_value(r, "forget_error", NULL), "%.4f");
    if (isfinite(m))
        snprintf(mia, sizeof mia, isfinite(sd) ? "%.3f±%.3f" : "%.3f", m, sd);
    else
        snprintf(mia, sizeof mia, "-");
    fmt_cell(t, sizeof t, row_value(r, "unlearn_seconds", NULL), "%.1fs");
    fmt_cell(rte, sizeof rte, row_value(r, "rte", NULL), "%.1f");
    fmt_cell(lam, sizeof lam, lambda, "%.2f");
    ul_progress_log(&st->prog, "%-6g %4llu %10lld  %-14s %-12s %6s %8s %8s %13s %8s %6s",
                    r->width, (unsigned long long)r->seed, (long long)r->params, r->method, goal,
                    lam, te, fe, mia, t, rte);
}

static void print_table(run_state *st, const selection *sel, size_t n)
{
    ul_progress_log(&st->prog, "\n%-6s %4s %10s  %-14s %-12s %5s %8s %8s %13s %8s %6s", "width",
                    "seed", "params", "method", "goal", "lambda", "test err", "fgt err", "MIA(test)",
                    "time", "RTE");
    const ul_pipeline *p = st->p;
    for (size_t wi = 0; wi < p->n_widths; wi++)
        for (size_t si = 0; si < p->n_seeds; si++) {
            for (size_t ri = 0; ri < st->n_rows; ri++) {
                const row *r = &st->rows[ri];
                if (r->current && r->point < 0 && r->width == p->widths[wi] &&
                    r->seed == p->seeds[si])
                    print_row(st, r, "-", NAN);
            }
            for (size_t i = 0; i < n; i++)
                if (sel[i].r->width == p->widths[wi] && sel[i].r->seed == p->seeds[si])
                    print_row(st, sel[i].r, sel[i].goal, sel[i].lambda);
        }
}

/* keep_checkpoints: selected removes the unlearned checkpoints no goal chose. */
static void prune_checkpoints(run_state *st, const selection *sel, size_t n)
{
    if (strcmp(st->p->keep_checkpoints, "selected") != 0)
        return;
    for (size_t ri = 0; ri < st->n_rows; ri++) {
        row *r = &st->rows[ri];
        if (r->point < 0 || !r->checkpoint[0] || !r->current)
            continue;
        bool chosen = false;
        for (size_t i = 0; i < n && !chosen; i++)
            chosen = sel[i].r == r;
        if (!chosen) {
            char path[4800];
            snprintf(path, sizeof path, "%s/%s", st->dir, r->checkpoint);
            remove(path);
            r->checkpoint[0] = '\0';
        }
    }
}

/* ---- metrics.json: the reference models' accuracies -------------------------------------------- */

typedef struct ref_summary {
    double width;
    uint64_t seed;
    const char *role;
    int64_t params;
    double loss[3], acc[3]; /* train (D or R), validation, test */
    int64_t n[3];
    double seconds;
    char checkpoint[512];
} ref_summary;

static int summarize(run_state *st, ul_net *net, const int64_t *idx, int64_t n_idx,
                     ref_summary *s, ul_error *err)
{
    ul_data_view views[3] = {view_train(st, idx, n_idx),
                             view_train(st, st->sp.val, st->sp.n_val), view_test(st)};
    for (int k = 0; k < 3; k++) {
        s->n[k] = views[k].n;
        s->loss[k] = s->acc[k] = NAN;
        if (views[k].n > 0) {
            int rc = ul_evaluate(net, &views[k], st->eval_batch, &s->loss[k], &s->acc[k], NULL,
                                 err);
            if (rc)
                return rc;
        }
    }
    s->params = ul_net_param_count(net);
    return UL_OK;
}

static int write_summary(run_state *st, const ref_summary *s, size_t n, ul_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.json", st->dir);
    ul_atomic_file af;
    int rc = ul_atomic_open(&af, path, err);
    if (rc)
        return rc;
    FILE *f = af.fp;
    static const char *const split[3] = {"train", "val", "test"};
    fprintf(f, "{\n  \"unlearn_version\": \"%s\",\n  \"dataset\": \"%s\",\n  \"model\": \"%s\",\n"
               "  \"seed\": %llu,\n  \"models\": [\n",
            UL_VERSION, st->p->dataset, st->p->model, (unsigned long long)st->p->seed);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "    {\"role\": \"%s\", \"width\": %.17g, \"seed\": %llu, \"params\": %lld",
                s[i].role, s[i].width, (unsigned long long)s[i].seed, (long long)s[i].params);
        for (int k = 0; k < 3; k++) {
            fprintf(f, ", \"%s\": {\"loss\": ", split[k]);
            fput_num(f, s[i].loss[k]);
            fprintf(f, ", \"accuracy\": ");
            fput_num(f, s[i].acc[k]);
            fprintf(f, ", \"n\": %lld}", (long long)s[i].n[k]);
        }
        fprintf(f, ", \"train_seconds\": %.3f, \"checkpoint\": \"%s\"}%s\n", s[i].seconds,
                s[i].checkpoint, i + 1 < n ? "," : "");
    }
    fputs("  ]\n}\n", f);
    return ul_atomic_commit(&af, err);
}

/* ---- the run ----------------------------------------------------------------------------------- */

int ul_pipeline_run(ul_pipeline *p, const char *run_dir, FILE *log, ul_error *err)
{
    run_state st_ = {0}, *st = &st_;
    st->p = p;
    st->dir = run_dir ? run_dir : p->output;
    st->t0 = now_s();
    ul_progress_init(&st->prog, log);
    ref_summary *sums = NULL;
    size_t n_sums = 0;
    selection *sel = NULL;
    size_t n_sel = 0;
    ul_net *original = NULL, *retrained = NULL;

    ul_progress_log(&st->prog, "loading dataset %s", p->dataset);
    int rc = ul_dataset_load_plugin(p->dataset, p->dataset_params, &st->ds, err);
    if (rc)
        return rc;
    if ((rc = ul_splits_make(&st->ds, ul_params_double(p->split, "val_fraction"),
                             ul_params_int(p->split, "subset"),
                             ul_params_int(p->split, "test_subset"), p->seed, &st->sp, err)))
        goto done;
    ul_progress_log(&st->prog, "%s: %lld train / %lld validation / %lld test examples, %dx%dx%d, "
                               "%d classes",
                    st->ds.source, (long long)st->sp.n_train, (long long)st->sp.n_val,
                    (long long)st->sp.n_test, st->ds.c, st->ds.h, st->ds.w, st->ds.n_classes);
    if (p->forget.enabled) {
        if ((rc = select_forget(st, err)))
            goto done;
        ul_progress_log(&st->prog, "forget set: %lld examples (%s), retain set: %lld",
                        (long long)st->n_forget,
                        p->forget.selection == UL_FORGET_MISLABELED ? "relabelled"
                        : p->forget.selection == UL_FORGET_CLASSES  ? "by class"
                                                                    : "random",
                        (long long)st->n_retain);
    } else {
        st->labels = malloc((size_t)st->ds.n_train * sizeof *st->labels);
        st->all_train = malloc((size_t)st->sp.n_train * sizeof *st->all_train);
        if (!st->labels || !st->all_train) {
            rc = ul_errorf(err, UL_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(st->labels, st->ds.train_y, (size_t)st->ds.n_train * sizeof *st->labels);
        memcpy(st->all_train, st->sp.train, (size_t)st->sp.n_train * sizeof *st->all_train);
        st->n_all = st->sp.n_train;
    }

    /* Everything is known to be valid: from here on the run directory is written. */
    char path[4600];
    snprintf(path, sizeof path, "%s/checkpoints/unlearned", st->dir);
    if ((rc = ul_mkdirs(path, err)))
        goto done;
    snprintf(path, sizeof path, "%s/config.resolved.yaml", st->dir);
    if ((rc = ul_pipeline_write_resolved(p, path, err)))
        goto done;
    if (p->forget.enabled && (rc = write_forget_indices(st, err)))
        goto done;
    if ((rc = load_results(st, err)))
        goto done;

    ul_train_cfg_from_params(p->train, p->augment, p->seed, &st->cfg);
    ul_dataset_pad_values(&st->ds, st->cfg.pad_value);
    st->eval_batch = (int)ul_params_int(p->train, "eval_batch_size");
    ul_params_to_json(p->model_params, st->model_json, sizeof st->model_json);
    ul_params_to_json(p->dataset_params, st->data_json, sizeof st->data_json);
    ul_params_to_json(p->split, st->split_json, sizeof st->split_json);
    char tj[4096], aj[1024];
    ul_params_to_json(p->train, tj, sizeof tj);
    ul_params_to_json(p->augment, aj, sizeof aj);
    snprintf(st->train_json, sizeof st->train_json, "%s %s", tj, aj);

    const bool do_retrain = p->forget.enabled && p->forget.retrain;
    size_t points = 0;
    for (size_t mi = 0; mi < p->n_methods; mi++)
        points += p->methods[mi].n_points;
    const size_t units = p->n_widths * p->n_seeds;
    st->trains_total = units * (do_retrain ? 2 : 1);
    st->points_total = units * points;
    sums = calloc(units * 2, sizeof *sums);
    if (!sums) {
        rc = ul_errorf(err, UL_ENOMEM, "out of memory");
        goto done;
    }

    for (size_t wi = 0; wi < p->n_widths; wi++)
        for (size_t si = 0; si < p->n_seeds; si++) {
            const double w = p->widths[wi];
            const uint64_t seed = p->seeds[si];
            double orig_s = NAN, retrain_s = NAN;
            ref_summary *so = &sums[n_sums++];
            so->width = w;
            so->seed = seed;
            so->role = "original";
            if ((rc = reference_model(st, w, seed, "original", st->all_train, st->n_all,
                                      &original, &orig_s, so->checkpoint, sizeof so->checkpoint,
                                      err)) ||
                (rc = summarize(st, original, st->all_train, st->n_all, so, err)))
                goto done;
            so->seconds = orig_s;
            ul_progress_log(&st->prog,
                            "[width %g seed %llu] original: %lld parameters, train acc %.4f, "
                            "validation acc %.4f, test acc %.4f",
                            w, (unsigned long long)seed, (long long)so->params, so->acc[0],
                            so->acc[1], so->acc[2]);
            if (do_retrain) {
                ref_summary *sr = &sums[n_sums++];
                sr->width = w;
                sr->seed = seed;
                sr->role = "retrained";
                if ((rc = reference_model(st, w, seed, "retrained", st->retain, st->n_retain,
                                          &retrained, &retrain_s, sr->checkpoint,
                                          sizeof sr->checkpoint, err)) ||
                    (rc = summarize(st, retrained, st->retain, st->n_retain, sr, err)))
                    goto done;
                sr->seconds = retrain_s;
            }
            if ((rc = write_summary(st, sums, n_sums, err)))
                goto done;
            if (p->forget.enabled) {
                if ((rc = reference_row(st, w, seed, "original", original, original, retrained,
                                        retrain_s, so->checkpoint, err)))
                    goto done;
                if (retrained && (rc = reference_row(st, w, seed, "retrained", retrained,
                                                     original, NULL, retrain_s,
                                                     sums[n_sums - 1].checkpoint, err)))
                    goto done;
            }
            const uint64_t okey = model_key(st, w, seed, "original");
            for (size_t mi = 0; mi < p->n_methods; mi++)
                for (size_t pi = 0; pi < p->methods[mi].n_points; pi++)
                    if ((rc = method_point(st, w, seed, &p->methods[mi], pi, original, retrained,
                                           retrain_s, okey, err)))
                        goto done;
            ul_net_free(original);
            ul_net_free(retrained);
            original = retrained = NULL;
        }

    if (p->forget.enabled) {
        if ((rc = select_points(st, &sel, &n_sel, err)) ||
            (rc = write_selected(st, sel, n_sel, err)))
            goto done;
        prune_checkpoints(st, sel, n_sel);
        if ((rc = write_results(st, err)))
            goto done;
        print_table(st, sel, n_sel);
    } else {
        ul_progress_log(&st->prog, "\n%-8s %6s %10s %10s %10s %10s %9s", "width", "seed",
                        "params", "train acc", "val acc", "test acc", "time");
        for (size_t i = 0; i < n_sums; i++) {
            char t[32];
            ul_format_duration(sums[i].seconds, t, sizeof t);
            ul_progress_log(&st->prog, "%-8g %6llu %10lld %10.4f %10.4f %10.4f %9s",
                            sums[i].width, (unsigned long long)sums[i].seed,
                            (long long)sums[i].params, sums[i].acc[0], sums[i].acc[1],
                            sums[i].acc[2], t);
        }
    }
    char total[32];
    ul_format_duration(now_s() - st->t0, total, sizeof total);
    ul_progress_log(&st->prog, "\nresults in %s/ (%s) after %s", st->dir,
                    p->forget.enabled ? "results.csv, results.jsonl, selected.csv, metrics.json, "
                                        "forget_indices.txt, checkpoints/"
                                      : "metrics.json, config.resolved.yaml, checkpoints/",
                    total);
done:
    ul_net_free(original);
    ul_net_free(retrained);
    free(sel);
    free(sums);
    for (size_t i = 0; i < st->n_rows; i++)
        free(st->rows[i].hparams);
    free(st->rows);
    free(st->labels);
    free(st->forget);
    free(st->retain);
    free(st->all_train);
    ul_splits_free(&st->sp);
    ul_dataset_clear(&st->ds);
    return rc;
}
