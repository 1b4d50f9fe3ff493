#include <dirent.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_loader.h"
#include "yaml_doc.h"
#include "ul_config.h"

#define MAX_LOADED 256

static ul_plugin loaded[MAX_LOADED];
static size_t n_loaded;

static const char *const kind_dirs[] = {"", "models", "datasets", "methods", "metrics", "goals"};

const char *ul_kind_name(uint32_t kind)
{
    switch (kind) {
    case UL_KIND_MODEL: return "model";
    case UL_KIND_DATASET: return "dataset";
    case UL_KIND_METHOD: return "method";
    case UL_KIND_METRIC: return "metric";
    case UL_KIND_GOAL: return "goal";
    default: return "unknown";
    }
}

/* Size of the part of a vtable the host needs for each kind in ABI 1.0. */
static size_t vtable_min_size(uint32_t kind)
{
    switch (kind) {
    case UL_KIND_MODEL: return offsetof(ul_model_vtable, build) + sizeof(void *);
    case UL_KIND_DATASET: return offsetof(ul_dataset_vtable, load) + sizeof(void *);
    case UL_KIND_METHOD: return offsetof(ul_method_vtable, unlearn) + sizeof(void *);
    case UL_KIND_METRIC: return offsetof(ul_metric_vtable, compute) + sizeof(void *);
    case UL_KIND_GOAL: return offsetof(ul_goal_vtable, objective) + sizeof(void *);
    default: return sizeof(uint32_t);
    }
}

static bool vtable_complete(uint32_t kind, const void *vt)
{
    switch (kind) {
    case UL_KIND_MODEL: return ((const ul_model_vtable *)vt)->build != NULL;
    case UL_KIND_DATASET: return ((const ul_dataset_vtable *)vt)->load != NULL;
    case UL_KIND_METHOD: return ((const ul_method_vtable *)vt)->unlearn != NULL;
    case UL_KIND_METRIC: return ((const ul_metric_vtable *)vt)->compute != NULL;
    case UL_KIND_GOAL: return ((const ul_goal_vtable *)vt)->objective != NULL &&
                              ((const ul_goal_vtable *)vt)->requires != NULL;
    default: return true;
    }
}

static void file_stem(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && strcmp(dot, ".so") == 0)
        *dot = '\0';
}

static int validate_schema(const char *path, const ul_plugin_desc *d, ul_error *err)
{
    if (d->n_params > 0 && !d->params)
        return ul_errorf(err, UL_EPLUGIN, "%s: plugin declares %u parameters but no schema",
                         path, d->n_params);
    for (uint32_t i = 0; i < d->n_params; i++) {
        const ul_param_def *p = &d->params[i];
        if (!p->name || !*p->name)
            return ul_errorf(err, UL_EPLUGIN, "%s: parameter %u of the schema has no name", path,
                             i);
        if (p->type < UL_PT_INT || p->type > UL_PT_DOUBLE_LIST)
            return ul_errorf(err, UL_EPLUGIN, "%s: parameter '%s' has an unknown type %d", path,
                             p->name, (int)p->type);
        if (p->type == UL_PT_ENUM && (!p->choices || !*p->choices))
            return ul_errorf(err, UL_EPLUGIN, "%s: enum parameter '%s' lists no choices", path,
                             p->name);
    }
    ul_error perr;
    ul_params *probe = ul_params_new(d->params, d->n_params, &perr);
    if (!probe)
        return ul_errorf(err, UL_EPLUGIN, "%s: invalid parameter schema: %s", path, perr.msg);
    ul_params_free(probe);
    return UL_OK;
}

int ul_plugin_open(const char *path, ul_plugin *out, ul_error *err)
{
    memset(out, 0, sizeof *out);
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return ul_errorf(err, UL_EPLUGIN, "%s: cannot load plugin: %s", path, dlerror());
    const ul_plugin_desc *d = dlsym(h, UL_PLUGIN_SYMBOL);
    int rc = UL_EPLUGIN;
    if (!d) {
        ul_errorf(err, rc,
                  "%s: not an unlearn plugin: it does not export the entry symbol '%s' "
                  "(define it with UL_PLUGIN(...) from <unlearn/plugin.h>)",
                  path, UL_PLUGIN_SYMBOL);
        goto fail;
    }
    /* The version fields come first in every ABI; nothing else is read
     * until they are known to be compatible. */
    if (d->abi_major != UL_ABI_MAJOR || d->abi_minor > UL_ABI_MINOR) {
        ul_errorf(err, rc,
                  "%s: plugin built for unlearn plugin ABI %u.%u, but this unlearn supports ABI "
                  "%u.%u (same major, minor <= %u); rebuild the plugin against this version's "
                  "headers (pkg-config --cflags unlearn)",
                  path, d->abi_major, d->abi_minor, UL_ABI_MAJOR, UL_ABI_MINOR, UL_ABI_MINOR);
        goto fail;
    }
    if (d->struct_size < offsetof(ul_plugin_desc, vtable) + sizeof(void *)) {
        ul_errorf(err, rc, "%s: plugin descriptor is %u bytes, smaller than ABI %u.%u requires",
                  path, d->struct_size, d->abi_major, d->abi_minor);
        goto fail;
    }
    if (d->kind < UL_KIND_MODEL || d->kind > UL_KIND_GOAL) {
        ul_errorf(err, rc, "%s: plugin has an unknown kind %u", path, d->kind);
        goto fail;
    }
    char stem[256];
    file_stem(path, stem, sizeof stem);
    if (!d->name || strcmp(d->name, stem) != 0) {
        ul_errorf(err, rc, "%s: plugin name '%s' does not match its file name '%s.so'", path,
                  d->name ? d->name : "(null)", stem);
        goto fail;
    }
    if (!d->version || !d->description) {
        ul_errorf(err, rc, "%s: plugin descriptor lacks a version or a description", path);
        goto fail;
    }
    if (!d->vtable || *(const uint32_t *)d->vtable < vtable_min_size(d->kind) ||
        !vtable_complete(d->kind, d->vtable)) {
        ul_errorf(err, rc, "%s: %s plugin '%s' has a missing or incomplete vtable", path,
                  ul_kind_name(d->kind), d->name);
        goto fail;
    }
    if ((rc = validate_schema(path, d, err)) != UL_OK)
        goto fail;
    out->desc = d;
    out->handle = h;
    out->path = strdup(path);
    return UL_OK;
fail:
    dlclose(h);
    return rc;
}

void ul_plugin_close(ul_plugin *p)
{
    if (p->handle)
        dlclose(p->handle);
    free(p->path);
    memset(p, 0, sizeof *p);
}

/* The build tree is searched only when this library itself was loaded from
 * it, so an installed unlearn never picks up a stale build. */
static bool running_from_build_tree(void)
{
    Dl_info info;
    if (!dladdr((void *)&ul_plugin_open, &info) || !info.dli_fname)
        return false;
    const char *root = UL_BUILD_PLUGIN_DIR;
    size_t n = strlen(root) - strlen("/plugins");
    return strncmp(info.dli_fname, root, n) == 0;
}

size_t ul_plugin_search_dirs(char ***dirs)
{
    size_t cap = 8, n = 0;
    char **v = malloc(cap * sizeof *v);
    if (!v) {
        *dirs = NULL;
        return 0;
    }
    if (running_from_build_tree())
        v[n++] = strdup(UL_BUILD_PLUGIN_DIR);
    v[n++] = strdup(UL_INSTALL_PLUGIN_DIR);
    const char *env = getenv("UNLEARN_PLUGIN_PATH");
    if (env) {
        char *copy = strdup(env), *save = NULL;
        for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
            if (!*tok)
                continue;
            if (n == cap) {
                char **nv = realloc(v, 2 * cap * sizeof *v);
                if (!nv)
                    break;
                v = nv;
                cap *= 2;
            }
            v[n++] = strdup(tok);
        }
        free(copy);
    }
    *dirs = v;
    return n;
}

static void free_dirs(char **dirs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(dirs[i]);
    free(dirs);
}

static const ul_plugin *cached(const char *name)
{
    for (size_t i = 0; i < n_loaded; i++)
        if (strcmp(loaded[i].desc->name, name) == 0)
            return &loaded[i];
    return NULL;
}

static int load_cached(const char *path, const ul_plugin **out, ul_error *err)
{
    char stem[256];
    file_stem(path, stem, sizeof stem);
    const ul_plugin *c = cached(stem);
    if (c) {
        *out = c;
        return UL_OK;
    }
    if (n_loaded == MAX_LOADED)
        return ul_errorf(err, UL_EPLUGIN, "%s: too many plugins loaded (limit %d)", path,
                         MAX_LOADED);
    int rc = ul_plugin_open(path, &loaded[n_loaded], err);
    if (rc)
        return rc;
    *out = &loaded[n_loaded++];
    return UL_OK;
}

static bool valid_name(const char *name)
{
    if (!*name || strlen(name) > 200)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return false;
    return true;
}

struct name_list {
    uint32_t kind;
    char buf[1024];
};

static void collect_name(const ul_plugin *p, void *user)
{
    struct name_list *l = user;
    if (p->desc->kind != l->kind)
        return;
    size_t len = strlen(l->buf);
    snprintf(l->buf + len, sizeof l->buf - len, "%s%s", len ? ", " : "", p->desc->name);
}

int ul_plugin_find(uint32_t kind, const char *name, const ul_plugin **out, ul_error *err)
{
    *out = NULL;
    if (!valid_name(name))
        return ul_errorf(err, UL_EPLUGIN,
                         "'%s' is not a valid plugin name (letters, digits, '_' and '-' only)",
                         name);
    const ul_plugin *p = cached(name);
    if (!p) {
        char **dirs;
        size_t nd = ul_plugin_search_dirs(&dirs);
        char path[4096];
        bool found = false;
        for (size_t i = 0; i < nd && !found; i++)
            for (size_t k = 0; k < sizeof kind_dirs / sizeof *kind_dirs && !found; k++) {
                snprintf(path, sizeof path, "%s%s%s/%s.so", dirs[i], *kind_dirs[k] ? "/" : "",
                         kind_dirs[k], name);
                FILE *fp = fopen(path, "rb");
                if (fp) {
                    fclose(fp);
                    found = true;
                }
            }
        if (!found) {
            struct name_list l = {kind, ""};
            ul_plugin_scan(collect_name, NULL, &l);
            char where[2048] = "";
            for (size_t i = 0; i < nd; i++) {
                size_t len = strlen(where);
                snprintf(where + len, sizeof where - len, "%s%s", i ? ", " : "", dirs[i]);
            }
            free_dirs(dirs, nd);
            const char *near = NULL;
            if (*l.buf) {
                const char *cands[64];
                size_t nc = 0;
                char copy[1024];
                snprintf(copy, sizeof copy, "%s", l.buf);
                char *save = NULL;
                for (char *t = strtok_r(copy, ", ", &save); t && nc < 64;
                     t = strtok_r(NULL, ", ", &save))
                    cands[nc++] = t;
                near = ul_did_you_mean(name, cands, nc);
                return ul_errorf(err, UL_EPLUGIN,
                                 "no %s plugin named '%s'%s%s%s; available: %s (searched: %s; "
                                 "add directories with UNLEARN_PLUGIN_PATH)",
                                 kind ? ul_kind_name(kind) : "", name, near ? " (did you mean '" : "",
                                 near ? near : "", near ? "'?)" : "", l.buf, where);
            }
            return ul_errorf(err, UL_EPLUGIN,
                             "no %s plugin named '%s' (searched: %s; add directories with "
                             "UNLEARN_PLUGIN_PATH)",
                             kind ? ul_kind_name(kind) : "", name, where);
        }
        free_dirs(dirs, nd);
        int rc = load_cached(path, &p, err);
        if (rc)
            return rc;
    }
    if (kind && p->desc->kind != kind)
        return ul_errorf(err, UL_EPLUGIN, "plugin '%s' (%s) is a %s plugin, not a %s plugin",
                         name, p->path, ul_kind_name(p->desc->kind), ul_kind_name(kind));
    *out = p;
    return UL_OK;
}

void ul_plugin_scan(ul_plugin_visit_fn visit, ul_plugin_error_fn on_error, void *user)
{
    char **dirs;
    size_t nd = ul_plugin_search_dirs(&dirs);
    char seen[MAX_LOADED][128];
    size_t n_seen = 0;
    for (size_t i = 0; i < nd; i++)
        for (size_t k = 0; k < sizeof kind_dirs / sizeof *kind_dirs; k++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s%s%s", dirs[i], *kind_dirs[k] ? "/" : "", kind_dirs[k]);
            DIR *dp = opendir(dir);
            if (!dp)
                continue;
            /* Sorted listing so `unlearn plugins` is stable. */
            struct dirent **ents;
            closedir(dp);
            int ne = scandir(dir, &ents, NULL, alphasort);
            for (int e = 0; e < ne; e++) {
                const char *fn = ents[e]->d_name;
                size_t len = strlen(fn);
                if (len > 3 && strcmp(fn + len - 3, ".so") == 0) {
                    char stem[128];
                    file_stem(fn, stem, sizeof stem);
                    bool dup = false;
                    for (size_t s = 0; s < n_seen; s++)
                        dup = dup || strcmp(seen[s], stem) == 0;
                    if (!dup && n_seen < MAX_LOADED) {
                        snprintf(seen[n_seen++], sizeof seen[0], "%s", stem);
                        char path[4400];
                        snprintf(path, sizeof path, "%s/%s", dir, fn);
                        const ul_plugin *p;
                        ul_error perr;
                        if (load_cached(path, &p, &perr) == UL_OK) {
                            if (visit)
                                visit(p, user);
                        } else if (on_error) {
                            on_error(path, &perr, user);
                        }
                    }
                }
                free(ents[e]);
            }
            if (ne >= 0)
                free(ents);
        }
    free_dirs(dirs, nd);
}

void ul_plugin_unload_all(void)
{
    for (size_t i = 0; i < n_loaded; i++)
        ul_plugin_close(&loaded[i]);
    n_loaded = 0;
}
