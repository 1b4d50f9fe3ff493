/* YAML documents as position-annotated trees (built from libyaml events),
 * and the key/type validation every pipeline section goes through. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "fsutil.h"
#include "yaml_doc.h"

/* Deeper nesting than any pipeline needs; the limit keeps the recursive
 * builder's stack bounded on hostile input. */
#define UL_YAML_MAX_DEPTH 64

typedef struct ul_loader {
    yaml_parser_t parser;
    const ul_yaml_doc *doc; /* for messages */
    ul_error *err;
} ul_loader;

int ul_yaml_errorf(ul_error *err, const ul_yaml_doc *doc, int line, int col, const char *fmt, ...)
{
    char msg[UL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *path = doc && doc->path ? doc->path : "<yaml>";
    if (line > 0)
        return ul_errorf(err, UL_EINVAL, "%s:%d:%d: %s", path, line, col, msg);
    return ul_errorf(err, UL_EINVAL, "%s: %s", path, msg);
}

/* ---- tree --------------------------------------------------------------- */

static void node_free(ul_yaml_node *n)
{
    if (!n)
        return;
    free(n->scalar);
    for (size_t k = 0; k < n->n; k++) {
        node_free(n->items[k]);
        if (n->keys)
            free(n->keys[k]);
    }
    free(n->items);
    free(n->keys);
    free(n->key_line);
    free(n->key_col);
    free(n);
}

void ul_yaml_free(ul_yaml_doc *doc)
{
    if (!doc)
        return;
    node_free(doc->root);
    free(doc->path);
    free(doc);
}

static int oom(ul_loader *ld)
{
    return ul_errorf(ld->err, UL_ENOMEM, "%s: out of memory", ld->doc->path);
}

/* libyaml marks are 0-based. */
static int syntax_error(ul_loader *ld, const char *text)
{
    const yaml_parser_t *ps = &ld->parser;
    if (ps->error == YAML_MEMORY_ERROR)
        return oom(ld);
    const char *problem = ps->problem ? ps->problem : "unknown error";
    int line = (int)ps->problem_mark.line + 1, col = (int)ps->problem_mark.column + 1;
    if (ps->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset, not a mark. */
        line = col = 1;
        for (size_t k = 0; k < ps->problem_offset && text[k]; k++) {
            if (text[k] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
    }
    if (ps->context)
        return ul_yaml_errorf(ld->err, ld->doc, line, col, "YAML syntax error: %s (%s)", problem,
                              ps->context);
    return ul_yaml_errorf(ld->err, ld->doc, line, col, "YAML syntax error: %s", problem);
}

static int next_event(ul_loader *ld, yaml_event_t *ev, const char *text)
{
    if (!yaml_parser_parse(&ld->parser, ev))
        return syntax_error(ld, text);
    return UL_OK;
}

static int mark_line(const yaml_event_t *ev)
{
    return (int)ev->start_mark.line + 1;
}

static int mark_col(const yaml_event_t *ev)
{
    return (int)ev->start_mark.column + 1;
}

static const yaml_char_t *event_anchor(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT: return ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT: return ev->data.mapping_start.anchor;
    default: return NULL;
    }
}

/* Appends to a SEQ/MAP node, growing its arrays by doubling. */
static int node_push(ul_yaml_node *n, size_t *cap, ul_yaml_node *item, char *key, int kl, int kc)
{
    if (n->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        ul_yaml_node **items = realloc(n->items, nc * sizeof *items);
        if (!items)
            return UL_ENOMEM;
        n->items = items;
        if (n->kind == UL_YAML_MAP) {
            char **keys = realloc(n->keys, nc * sizeof *keys);
            if (keys)
                n->keys = keys;
            int *kls = keys ? realloc(n->key_line, nc * sizeof *kls) : NULL;
            if (kls)
                n->key_line = kls;
            int *kcs = kls ? realloc(n->key_col, nc * sizeof *kcs) : NULL;
            if (!kcs)
                return UL_ENOMEM;
            n->key_col = kcs;
        }
        *cap = nc;
    }
    n->items[n->n] = item;
    if (n->kind == UL_YAML_MAP) {
        n->keys[n->n] = key;
        n->key_line[n->n] = kl;
        n->key_col[n->n] = kc;
    }
    n->n++;
    return UL_OK;
}

static int build_node(ul_loader *ld, yaml_event_t *start, int depth, const char *text,
                      ul_yaml_node **out);

/* Keys are looked up by text, so only plain scalar keys can be honoured;
 * anchors and aliases are refused everywhere (no sharing of subtrees). */
static int bad_key(ul_loader *ld, const yaml_event_t *ev)
{
    const char *what = ev->type == YAML_ALIAS_EVENT            ? "an alias (*name)"
                       : ev->type == YAML_SCALAR_EVENT         ? "an anchor (&name)"
                       : ev->type == YAML_MAPPING_START_EVENT ? "a mapping"
                                                               : "a sequence";
    return ul_yaml_errorf(ld->err, ld->doc, mark_line(ev), mark_col(ev),
                          "a mapping key must be a plain scalar, not %s", what);
}

/* Reads the children of a sequence or mapping up to its end event. */
static int build_children(ul_loader *ld, ul_yaml_node *n, int depth, const char *text)
{
    size_t cap = 0;
    yaml_event_t ev;
    yaml_event_type_t end =
        n->kind == UL_YAML_MAP ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
    for (;;) {
        int rc = next_event(ld, &ev, text);
        if (rc < 0)
            return rc;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return UL_OK;
        }
        char *key = NULL;
        int kl = 0, kc = 0;
        if (n->kind == UL_YAML_MAP) {
            kl = mark_line(&ev);
            kc = mark_col(&ev);
            if (ev.type != YAML_SCALAR_EVENT || event_anchor(&ev)) {
                rc = bad_key(ld, &ev);
                yaml_event_delete(&ev);
                return rc;
            }
            key = strdup((const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
            if (!key)
                return oom(ld);
            for (size_t k = 0; k < n->n; k++) {
                if (strcmp(n->keys[k], key) == 0) {
                    rc = ul_yaml_errorf(ld->err, ld->doc, kl, kc,
                                        "duplicate key '%s' (first defined at line %d, column %d)",
                                        key, n->key_line[k], n->key_col[k]);
                    free(key);
                    return rc;
                }
            }
            if ((rc = next_event(ld, &ev, text)) < 0) {
                free(key);
                return rc;
            }
        }
        ul_yaml_node *child = NULL;
        rc = build_node(ld, &ev, depth + 1, text, &child);
        if (rc == UL_OK && node_push(n, &cap, child, key, kl, kc) < 0)
            rc = oom(ld);
        if (rc < 0) {
            node_free(child);
            free(key);
            return rc;
        }
    }
}

/* Builds the node that starts with *start; consumes (deletes) the event. */
static int build_node(ul_loader *ld, yaml_event_t *start, int depth, const char *text,
                      ul_yaml_node **out)
{
    int line = mark_line(start), col = mark_col(start), rc;
    *out = NULL;
    if (start->type == YAML_ALIAS_EVENT || event_anchor(start)) {
        bool alias = start->type == YAML_ALIAS_EVENT;
        yaml_event_delete(start);
        return ul_yaml_errorf(ld->err, ld->doc, line, col, "%s are not supported",
                              alias ? "aliases (*name)" : "anchors (&name)");
    }
    if (depth > UL_YAML_MAX_DEPTH) {
        yaml_event_delete(start);
        return ul_yaml_errorf(ld->err, ld->doc, line, col,
                              "nesting deeper than %d levels is not supported",
                              UL_YAML_MAX_DEPTH);
    }
    ul_yaml_node *n = calloc(1, sizeof *n);
    if (!n) {
        yaml_event_delete(start);
        return oom(ld);
    }
    n->line = line;
    n->col = col;
    switch (start->type) {
    case YAML_SCALAR_EVENT:
        n->kind = UL_YAML_SCALAR;
        n->quoted = start->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    start->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        n->scalar = strdup((const char *)start->data.scalar.value);
        yaml_event_delete(start);
        rc = n->scalar ? UL_OK : oom(ld);
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        n->kind = start->type == YAML_MAPPING_START_EVENT ? UL_YAML_MAP : UL_YAML_SEQ;
        yaml_event_delete(start);
        rc = build_children(ld, n, depth, text);
        break;
    default:
        /* The parser only yields node events here. */
        yaml_event_delete(start);
        rc = ul_yaml_errorf(ld->err, ld->doc, line, col, "unexpected YAML event");
        break;
    }
    if (rc < 0) {
        node_free(n);
        return rc;
    }
    *out = n;
    return UL_OK;
}

/* Consumes the event stream of one document into doc->root. */
static int build_doc(ul_loader *ld, ul_yaml_doc *doc, const char *text)
{
    yaml_event_t ev;
    int rc;
    if ((rc = next_event(ld, &ev, text)) < 0) /* STREAM-START */
        return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(ld, &ev, text)) < 0)
        return rc;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return UL_OK;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */
    if ((rc = next_event(ld, &ev, text)) < 0)
        return rc;
    if ((rc = build_node(ld, &ev, 0, text, &doc->root)) < 0)
        return rc;
    /* A document of only "---" parses as an empty plain scalar. */
    if (doc->root->kind == UL_YAML_SCALAR && !doc->root->quoted && !doc->root->scalar[0]) {
        node_free(doc->root);
        doc->root = NULL;
    }
    if ((rc = next_event(ld, &ev, text)) < 0) /* DOCUMENT-END */
        return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(ld, &ev, text)) < 0)
        return rc;
    int line = mark_line(&ev), col = mark_col(&ev);
    bool more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more)
        return ul_yaml_errorf(ld->err, doc, line, col,
                              "only one YAML document per file is supported");
    return UL_OK;
}

int ul_yaml_load_string(const char *text, const char *name, ul_yaml_doc **out, ul_error *err)
{
    *out = NULL;
    ul_yaml_doc *doc = calloc(1, sizeof *doc);
    if (!doc || !(doc->path = strdup(name ? name : "<string>"))) {
        free(doc);
        return ul_errorf(err, UL_ENOMEM, "%s: out of memory", name ? name : "<string>");
    }
    ul_loader ld = {.doc = doc, .err = err};
    if (!yaml_parser_initialize(&ld.parser)) {
        ul_yaml_free(doc);
        return ul_errorf(err, UL_ENOMEM, "%s: out of memory", name ? name : "<string>");
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)text, strlen(text));
    int rc = build_doc(&ld, doc, text);
    yaml_parser_delete(&ld.parser);
    if (rc < 0) {
        ul_yaml_free(doc);
        return rc;
    }
    *out = doc;
    return UL_OK;
}

int ul_yaml_load_file(const char *path, ul_yaml_doc **out, ul_error *err)
{
    char *text = NULL;
    *out = NULL;
    int rc = ul_read_file(path, &text, NULL, err);
    if (rc < 0)
        return rc;
    rc = ul_yaml_load_string(text, path, out, err);
    free(text);
    return rc;
}

/* ---- lookups ------------------------------------------------------------ */

int ul_yaml_key_index(const ul_yaml_node *map, const char *key)
{
    if (!map || map->kind != UL_YAML_MAP || !key)
        return -1;
    for (size_t k = 0; k < map->n; k++)
        if (strcmp(map->keys[k], key) == 0)
            return (int)k;
    return -1;
}

const ul_yaml_node *ul_yaml_get(const ul_yaml_node *map, const char *key)
{
    int k = ul_yaml_key_index(map, key);
    return k < 0 ? NULL : map->items[k];
}

/* Growable text for flow output of arbitrarily long sequences. */
typedef struct ul_strbuf {
    char *s;
    size_t len, cap;
} ul_strbuf;

static int sb_put(ul_strbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (b->len + n + 1 > nc)
            nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns)
            return UL_ENOMEM;
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
    return UL_OK;
}

static int flow_text(const ul_yaml_node *n, ul_strbuf *b)
{
    if (n->kind == UL_YAML_MAP)
        return UL_EINVAL;
    if (n->kind == UL_YAML_SCALAR)
        return sb_put(b, n->scalar);
    int rc = sb_put(b, "[");
    for (size_t k = 0; rc == UL_OK && k < n->n; k++) {
        if (k)
            rc = sb_put(b, ", ");
        if (rc == UL_OK)
            rc = flow_text(n->items[k], b);
    }
    return rc < 0 ? rc : sb_put(b, "]");
}

int ul_yaml_to_text(const ul_yaml_node *n, char *buf, size_t cap)
{
    if (cap)
        buf[0] = '\0';
    if (!n)
        return UL_EINVAL;
    ul_strbuf b = {0};
    int rc = flow_text(n, &b);
    if (rc == UL_OK && b.len + 1 > cap)
        rc = UL_EINVAL;
    if (rc == UL_OK)
        memcpy(buf, b.s, b.len + 1);
    free(b.s);
    return rc;
}

/* ---- validation --------------------------------------------------------- */

static int lower(int c)
{
    return tolower((unsigned char)c);
}

/* Case-insensitive Levenshtein distance, two rows. */
static size_t edit_distance(const char *a, const char *b, size_t *row, size_t *prev)
{
    size_t la = strlen(a), lb = strlen(b);
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (lower(a[i - 1]) != lower(b[j - 1]));
            size_t del = prev[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, row, (lb + 1) * sizeof *row);
    }
    return prev[lb];
}

const char *ul_did_you_mean(const char *key, const char *const *cands, size_t n)
{
    if (!key)
        return NULL;
    size_t klen = strlen(key), limit = klen / 3 > 1 ? klen / 3 : 1;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t k = 0; k < n; k++) {
        if (!cands[k])
            continue;
        size_t clen = strlen(cands[k]);
        /* The length difference bounds the distance from below. */
        if ((clen > klen ? clen - klen : klen - clen) >= best_d)
            continue;
        size_t *rows = malloc(2 * (clen + 1) * sizeof *rows);
        if (!rows)
            return best;
        size_t d = edit_distance(key, cands[k], rows, rows + clen + 1);
        free(rows);
        if (d < best_d) {
            best_d = d;
            best = cands[k];
        }
    }
    return best;
}

/* An empty section (`params:` or `params: ~`) means "all defaults". */
static bool is_null(const ul_yaml_node *n)
{
    return !n || (n->kind == UL_YAML_SCALAR && !n->quoted &&
                  (!n->scalar[0] || strcmp(n->scalar, "~") == 0 ||
                   strcasecmp(n->scalar, "null") == 0));
}

static int require_map(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                       ul_error *err)
{
    if (map->kind == UL_YAML_MAP)
        return UL_OK;
    return ul_yaml_errorf(err, doc, map->line, map->col, "%s must be a mapping", where);
}

static int unknown_key(const ul_yaml_doc *doc, const ul_yaml_node *map, size_t k,
                       const char *where, const char *const *allowed, size_t n_allowed,
                       ul_error *err)
{
    const char *key = map->keys[k];
    const char *near = ul_did_you_mean(key, allowed, n_allowed);
    if (near)
        return ul_yaml_errorf(err, doc, map->key_line[k], map->key_col[k],
                              "unknown key '%s' in %s (did you mean '%s'?)", key, where, near);
    char list[UL_ERROR_MAX / 2];
    size_t pos = 0;
    list[0] = '\0';
    for (size_t j = 0; j < n_allowed && pos < sizeof list; j++)
        pos += (size_t)snprintf(list + pos, sizeof list - pos, "%s%s", j ? ", " : "", allowed[j]);
    if (n_allowed == 0)
        return ul_yaml_errorf(err, doc, map->key_line[k], map->key_col[k],
                              "unknown key '%s' in %s (it takes no keys)", key, where);
    return ul_yaml_errorf(err, doc, map->key_line[k], map->key_col[k],
                          "unknown key '%s' in %s (expected one of: %s)", key, where, list);
}

int ul_yaml_check_keys(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                       const char *const *allowed, size_t n_allowed, ul_error *err)
{
    if (is_null(map))
        return UL_OK;
    int rc = require_map(doc, map, where, err);
    for (size_t k = 0; rc == UL_OK && k < map->n; k++) {
        bool known = false;
        for (size_t j = 0; j < n_allowed && !known; j++)
            known = strcmp(map->keys[k], allowed[j]) == 0;
        if (!known)
            rc = unknown_key(doc, map, k, where, allowed, n_allowed, err);
    }
    return rc;
}

static const char *type_name(const ul_param_def *def)
{
    switch (def->type) {
    case UL_PT_INT: return "an integer";
    case UL_PT_DOUBLE: return "a number";
    case UL_PT_BOOL: return "a boolean";
    case UL_PT_STRING: return "a string";
    case UL_PT_ENUM: return "a string";
    case UL_PT_INT_LIST: return "a list of integers";
    case UL_PT_DOUBLE_LIST: return "a list of numbers";
    }
    return "a value";
}

static int fill_one(const ul_yaml_doc *doc, const ul_yaml_node *map, size_t k, const char *where,
                    const ul_param_def *def, ul_params *p, ul_error *err)
{
    const ul_yaml_node *v = map->items[k];
    bool is_list = def->type == UL_PT_INT_LIST || def->type == UL_PT_DOUBLE_LIST;
    if (v->kind == UL_YAML_MAP || (v->kind == UL_YAML_SEQ && !is_list))
        return ul_yaml_errorf(err, doc, v->line, v->col, "'%s' in %s must be %s, not a %s",
                              def->name, where, type_name(def),
                              v->kind == UL_YAML_MAP ? "mapping" : "list");
    ul_strbuf text = {0};
    int rc = flow_text(v, &text);
    if (rc < 0) {
        free(text.s);
        if (rc == UL_ENOMEM)
            return ul_errorf(err, UL_ENOMEM, "%s: out of memory", doc->path);
        return ul_yaml_errorf(err, doc, v->line, v->col,
                              "'%s' in %s must be %s, not a list containing a mapping",
                              def->name, where, type_name(def));
    }
    ul_error sub;
    rc = ul_params_set(p, def->name, text.s, &sub);
    free(text.s);
    if (rc == UL_ENOMEM)
        return ul_errorf(err, rc, "%s: out of memory", doc->path);
    if (rc < 0)
        return ul_yaml_errorf(err, doc, v->line, v->col, "%s.%s: %s", where, def->name, sub.msg);
    return UL_OK;
}

int ul_yaml_fill_params(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                        ul_params *p, ul_error *err)
{
    size_t n_defs = 0;
    const ul_param_def *defs = ul_params_schema(p, &n_defs);
    const char **names = malloc((n_defs ? n_defs : 1) * sizeof *names);
    int rc = UL_OK;
    if (!names)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    for (size_t j = 0; j < n_defs; j++)
        names[j] = defs[j].name;
    bool empty = is_null(map);
    if (!empty)
        rc = require_map(doc, map, where, err);
    for (size_t k = 0; !empty && rc == UL_OK && k < map->n; k++) {
        size_t j = 0;
        while (j < n_defs && strcmp(map->keys[k], names[j]) != 0)
            j++;
        if (j == n_defs)
            rc = unknown_key(doc, map, k, where, names, n_defs, err);
        else
            rc = fill_one(doc, map, k, where, &defs[j], p, err);
    }
    free(names);
    if (rc < 0)
        return rc;
    const char *missing = ul_params_missing(p);
    if (!missing)
        return UL_OK;
    /* An absent section has no position of its own. */
    return ul_yaml_errorf(err, doc, map ? map->line : 0, map ? map->col : 0,
                          "%s: missing required key '%s'", where, missing);
}
