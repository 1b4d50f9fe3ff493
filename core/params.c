/* Typed parameter blocks filled from YAML text under a static schema. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unlearn/params.h"
#include "yaml_doc.h"

typedef struct ul_param_value {
    bool set;
    int64_t i;    /* INT */
    double d;     /* DOUBLE */
    bool b;       /* BOOL */
    char *s;      /* STRING, ENUM (owned) */
    double *list; /* INT_LIST, DOUBLE_LIST (owned) */
    size_t n;     /* list length */
} ul_param_value;

struct ul_params {
    const ul_param_def *schema; /* static, not owned */
    size_t n;
    ul_param_value *v; /* one per schema entry */
};

/* Integers in int lists are stored as doubles (the list getter is shared);
 * beyond 2^53 they would silently change value. */
#define UL_MAX_EXACT_INT (INT64_C(1) << 53)

static void value_clear(ul_param_value *v)
{
    free(v->s);
    free(v->list);
    memset(v, 0, sizeof *v);
}

static int find_index(const ul_params *p, const char *name)
{
    if (!p || !name)
        return -1;
    for (size_t k = 0; k < p->n; k++)
        if (strcmp(p->schema[k].name, name) == 0)
            return (int)k;
    return -1;
}

/* Shortest of %.15g/%.16g/%.17g that reads back as the same double, so
 * 0.1 prints as "0.1" and not "0.10000000000000001". */
static void format_double(double x, char out[32])
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, x);
        if (strtod(out, NULL) == x)
            return;
    }
}

/* ---- parsing ------------------------------------------------------------ */

static bool is_blank(const char *s, const char *end)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    return s == end;
}

/* Copy of text without surrounding whitespace; NULL on ENOMEM. */
static char *trimmed_copy(const char *text, size_t len)
{
    while (len > 0 && isspace((unsigned char)*text)) {
        text++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, text, len);
        s[len] = '\0';
    }
    return s;
}

/* "got 'x'" reads badly for an empty value (`lr:` in YAML). */
static const char *got_quote(const char *text)
{
    return *text ? "'" : "";
}

static const char *got_text(const char *text)
{
    return *text ? text : "an empty value";
}

static int expected_error(ul_error *err, const char *what, const char *subject, const char *text)
{
    return ul_errorf(err, UL_EINVAL, "expected %s for %s, got %s%s%s", what, subject,
                     got_quote(text), got_text(text), got_quote(text));
}

static bool is_digits(const char **s)
{
    const char *start = *s;
    while (isdigit((unsigned char)**s))
        (*s)++;
    return *s > start;
}

/* Plain integer: optional sign and decimal digits, nothing else. */
static int parse_int(const char *text, const char *subject, int64_t *out, ul_error *err)
{
    const char *s = text;
    if (*s == '+' || *s == '-')
        s++;
    if (!is_digits(&s) || *s != '\0')
        return expected_error(err, "an integer", subject, text);
    errno = 0;
    long long v = strtoll(text, NULL, 10);
    if (errno == ERANGE)
        return ul_errorf(err, UL_EINVAL, "value %s does not fit in a 64-bit integer for %s", text,
                         subject);
    *out = v;
    return UL_OK;
}

/* A finite decimal number ("1", "-0.5", ".5", "5e-4"). The grammar is
 * checked by hand because strtod also accepts "inf", "nan" and hex. */
static int parse_double(const char *text, const char *subject, double *out, ul_error *err)
{
    const char *s = text;
    if (*s == '+' || *s == '-')
        s++;
    bool mantissa = is_digits(&s);
    if (*s == '.') {
        s++;
        mantissa = is_digits(&s) || mantissa;
    }
    bool ok = mantissa;
    if (ok && (*s == 'e' || *s == 'E')) {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        ok = is_digits(&s);
    }
    if (!ok || *s != '\0')
        return expected_error(err, "a number", subject, text);
    errno = 0;
    double v = strtod(text, NULL);
    if (errno == ERANGE && isinf(v))
        return ul_errorf(err, UL_EINVAL, "value %s is too large to represent for %s", text,
                         subject);
    *out = v;
    return UL_OK;
}

static int check_range(const ul_param_def *def, double v, const char *shown, const char *subject,
                       ul_error *err)
{
    bool low = def->has_min && v < def->min;
    bool high = def->has_max && v > def->max;
    if (!low && !high)
        return UL_OK;
    char lo[32] = "-inf", hi[32] = "inf";
    if (def->has_min)
        format_double(def->min, lo);
    if (def->has_max)
        format_double(def->max, hi);
    return ul_errorf(err, UL_EINVAL, "value %s is out of range %s%s, %s%s for %s", shown,
                     def->has_min ? "[" : "(", lo, hi, def->has_max ? "]" : ")", subject);
}

static int parse_bool(const char *text, const char *subject, bool *out, ul_error *err)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t k = 0; k < 3; k++) {
        if (strcasecmp(text, yes[k]) == 0) {
            *out = true;
            return UL_OK;
        }
        if (strcasecmp(text, no[k]) == 0) {
            *out = false;
            return UL_OK;
        }
    }
    return expected_error(err, "true or false", subject, text);
}

static int parse_enum(const ul_param_def *def, const char *text, const char *subject, char **out,
                      ul_error *err)
{
    size_t n = 1;
    for (const char *c = def->choices; *c; c++)
        n += *c == '|';
    char *buf = strdup(def->choices);
    const char **cands = malloc(n * sizeof *cands);
    char *listed = malloc(strlen(def->choices) + 2 * n + 1);
    int rc = UL_ENOMEM;
    if (!buf || !cands || !listed) {
        ul_errorf(err, UL_ENOMEM, "out of memory");
        goto cleanup;
    }
    n = 0;
    listed[0] = '\0';
    for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok;
         tok = strtok_r(NULL, "|", &save)) {
        if (strcmp(tok, text) == 0) {
            *out = strdup(tok);
            rc = *out ? UL_OK : ul_errorf(err, UL_ENOMEM, "out of memory");
            goto cleanup;
        }
        if (n)
            strcat(listed, ", ");
        strcat(listed, tok);
        cands[n++] = tok;
    }
    const char *near = ul_did_you_mean(text, cands, n);
    rc = ul_errorf(err, UL_EINVAL, "expected one of %s for %s, got %s%s%s%s%s%s", listed, subject,
                   got_quote(text), got_text(text), got_quote(text),
                   near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
cleanup:
    free(listed);
    free(cands);
    free(buf);
    return rc;
}

static int parse_list_item(const ul_param_def *def, const char *text, const char *subject,
                           double *out, ul_error *err)
{
    int rc;
    if (def->type == UL_PT_INT_LIST) {
        int64_t v;
        if ((rc = parse_int(text, subject, &v, err)) < 0)
            return rc;
        if (v > UL_MAX_EXACT_INT || v < -UL_MAX_EXACT_INT)
            return ul_errorf(err, UL_EINVAL,
                             "value %s is too large for %s (list integers are limited to "
                             "+/-2^53)",
                             text, subject);
        *out = (double)v;
    } else if ((rc = parse_double(text, subject, out, err)) < 0) {
        return rc;
    }
    return check_range(def, *out, text, subject, err);
}

/* "[1, 2.5]" (flow text, as ul_yaml_to_text writes it) or one scalar. */
static int parse_list(const ul_param_def *def, const char *text, ul_param_value *out,
                      ul_error *err)
{
    char subject[320];
    size_t len = strlen(text);
    if (text[0] != '[') {
        out->list = malloc(sizeof *out->list);
        if (!out->list)
            return ul_errorf(err, UL_ENOMEM, "out of memory");
        out->n = 1;
        snprintf(subject, sizeof subject, "'%s'", def->name);
        return parse_list_item(def, text, subject, &out->list[0], err);
    }
    if (len < 2 || text[len - 1] != ']')
        return ul_errorf(err, UL_EINVAL, "expected a list like [1, 2] for '%s', got '%s'",
                         def->name, text);
    const char *inner = text + 1, *end = text + len - 1;
    size_t cap = 1;
    for (const char *c = inner; c < end; c++)
        cap += *c == ',';
    out->list = malloc(cap * sizeof *out->list);
    if (!out->list)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    out->n = 0;
    /* "[]" and "[ ]" are the empty list. */
    if (is_blank(inner, end))
        return UL_OK;
    int depth = 0;
    const char *start = inner;
    for (const char *c = inner;; c++) {
        if (c < end && *c == '[')
            depth++;
        else if (c < end && *c == ']')
            depth--;
        if (c < end && !(*c == ',' && depth == 0))
            continue;
        /* Nested brackets stay inside one item, which then fails to parse
         * as a number with the whole item shown. */
        char *item = trimmed_copy(start, (size_t)(c - start));
        if (!item)
            return ul_errorf(err, UL_ENOMEM, "out of memory");
        snprintf(subject, sizeof subject, "item %zu of '%s'", out->n + 1, def->name);
        int rc = parse_list_item(def, item, subject, &out->list[out->n], err);
        free(item);
        if (rc < 0)
            return rc;
        out->n++;
        if (c == end)
            return UL_OK;
        start = c + 1;
    }
}

static int parse_value(const ul_param_def *def, const char *text, ul_param_value *out,
                       ul_error *err)
{
    char subject[300];
    snprintf(subject, sizeof subject, "'%s'", def->name);
    memset(out, 0, sizeof *out);
    if (def->type == UL_PT_STRING) {
        out->s = strdup(text);
        if (!out->s)
            return ul_errorf(err, UL_ENOMEM, "out of memory");
        out->set = true;
        return UL_OK;
    }
    /* Surrounding blanks carry no meaning in numbers, booleans or names. */
    char *t = trimmed_copy(text, strlen(text));
    if (!t)
        return ul_errorf(err, UL_ENOMEM, "out of memory");
    int rc = UL_EINVAL;
    switch (def->type) {
    case UL_PT_INT:
        if ((rc = parse_int(t, subject, &out->i, err)) == UL_OK)
            rc = check_range(def, (double)out->i, t, subject, err);
        break;
    case UL_PT_DOUBLE:
        if ((rc = parse_double(t, subject, &out->d, err)) == UL_OK)
            rc = check_range(def, out->d, t, subject, err);
        break;
    case UL_PT_BOOL:
        rc = parse_bool(t, subject, &out->b, err);
        break;
    case UL_PT_ENUM:
        rc = parse_enum(def, t, subject, &out->s, err);
        break;
    case UL_PT_INT_LIST:
    case UL_PT_DOUBLE_LIST:
        rc = parse_list(def, t, out, err);
        break;
    default:
        rc = ul_errorf(err, UL_EINVAL, "parameter '%s' has an unknown type %d", def->name,
                       (int)def->type);
        break;
    }
    free(t);
    if (rc < 0)
        value_clear(out);
    else
        out->set = true;
    return rc;
}

/* ---- lifetime ----------------------------------------------------------- */

static int check_def(const ul_param_def *schema, size_t k, ul_error *err)
{
    const ul_param_def *def = &schema[k];
    if (!def->name || !def->name[0])
        return ul_errorf(err, UL_EINVAL, "parameter #%zu of the schema has no name", k + 1);
    for (size_t j = 0; j < k; j++)
        if (strcmp(schema[j].name, def->name) == 0)
            return ul_errorf(err, UL_EINVAL, "parameter '%s' is declared twice in the schema",
                             def->name);
    if (def->type < UL_PT_INT || def->type > UL_PT_DOUBLE_LIST)
        return ul_errorf(err, UL_EINVAL, "parameter '%s' has an unknown type %d", def->name,
                         (int)def->type);
    if (def->type == UL_PT_ENUM && (!def->choices || !def->choices[0]))
        return ul_errorf(err, UL_EINVAL, "enum parameter '%s' declares no choices", def->name);
    if (def->has_min && def->has_max && def->min > def->max)
        return ul_errorf(err, UL_EINVAL, "parameter '%s' has min %g greater than max %g",
                         def->name, def->min, def->max);
    return UL_OK;
}

ul_params *ul_params_new(const ul_param_def *schema, size_t n, ul_error *err)
{
    ul_params *p = calloc(1, sizeof *p);
    if (!p || (n && !(p->v = calloc(n, sizeof *p->v)))) {
        free(p);
        ul_errorf(err, UL_ENOMEM, "out of memory");
        return NULL;
    }
    p->schema = schema;
    p->n = n;
    for (size_t k = 0; k < n; k++) {
        if (check_def(schema, k, err) < 0)
            goto fail;
        if (!schema[k].default_value)
            continue;
        ul_error sub;
        int rc = parse_value(&schema[k], schema[k].default_value, &p->v[k], &sub);
        if (rc < 0) {
            ul_errorf(err, rc, "parameter '%s': invalid default '%s': %s", schema[k].name,
                      schema[k].default_value, sub.msg);
            goto fail;
        }
    }
    return p;
fail:
    ul_params_free(p);
    return NULL;
}

void ul_params_free(ul_params *p)
{
    if (!p)
        return;
    for (size_t k = 0; k < p->n; k++)
        value_clear(&p->v[k]);
    free(p->v);
    free(p);
}

ul_params *ul_params_clone(const ul_params *p)
{
    if (!p)
        return NULL;
    ul_params *c = calloc(1, sizeof *c);
    if (!c || (p->n && !(c->v = calloc(p->n, sizeof *c->v)))) {
        free(c);
        return NULL;
    }
    c->schema = p->schema;
    c->n = p->n;
    for (size_t k = 0; k < p->n; k++) {
        const ul_param_value *src = &p->v[k];
        ul_param_value *dst = &c->v[k];
        *dst = *src;
        dst->s = NULL;
        dst->list = NULL;
        if (src->s && !(dst->s = strdup(src->s)))
            goto fail;
        if (src->list) {
            if (!(dst->list = malloc((src->n ? src->n : 1) * sizeof *dst->list)))
                goto fail;
            memcpy(dst->list, src->list, src->n * sizeof *dst->list);
        }
    }
    return c;
fail:
    ul_params_free(c);
    return NULL;
}

int ul_params_set(ul_params *p, const char *name, const char *text, ul_error *err)
{
    int k = find_index(p, name);
    if (k < 0) {
        const char **names = p ? malloc((p->n ? p->n : 1) * sizeof *names) : NULL;
        const char *near = NULL;
        if (names) {
            for (size_t j = 0; j < p->n; j++)
                names[j] = p->schema[j].name;
            near = ul_did_you_mean(name ? name : "", names, p->n);
        }
        int rc = ul_errorf(err, UL_EINVAL, "unknown parameter '%s'%s%s%s", name ? name : "(null)",
                           near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
        free(names);
        return rc;
    }
    if (!text)
        return ul_errorf(err, UL_EINVAL, "no value given for '%s'", name);
    ul_param_value v;
    int rc = parse_value(&p->schema[k], text, &v, err);
    if (rc < 0)
        return rc;
    /* Replace only on success: a failed set leaves the old value intact. */
    value_clear(&p->v[k]);
    p->v[k] = v;
    return UL_OK;
}

const char *ul_params_missing(const ul_params *p)
{
    if (!p)
        return NULL;
    for (size_t k = 0; k < p->n; k++)
        if (!p->schema[k].default_value && !p->v[k].set)
            return p->schema[k].name;
    return NULL;
}

const ul_param_def *ul_params_schema(const ul_params *p, size_t *n)
{
    if (n)
        *n = p ? p->n : 0;
    return p ? p->schema : NULL;
}

/* ---- getters ------------------------------------------------------------ */

static const ul_param_value *typed(const ul_params *p, const char *name, ul_param_type a,
                                   ul_param_type b)
{
    int k = find_index(p, name);
    if (k < 0 || (p->schema[k].type != a && p->schema[k].type != b) || !p->v[k].set)
        return NULL;
    return &p->v[k];
}

int64_t ul_params_int(const ul_params *p, const char *name)
{
    const ul_param_value *v = typed(p, name, UL_PT_INT, UL_PT_INT);
    return v ? v->i : 0;
}

double ul_params_double(const ul_params *p, const char *name)
{
    const ul_param_value *v = typed(p, name, UL_PT_DOUBLE, UL_PT_DOUBLE);
    return v ? v->d : 0.0;
}

bool ul_params_bool(const ul_params *p, const char *name)
{
    const ul_param_value *v = typed(p, name, UL_PT_BOOL, UL_PT_BOOL);
    return v ? v->b : false;
}

const char *ul_params_string(const ul_params *p, const char *name)
{
    const ul_param_value *v = typed(p, name, UL_PT_STRING, UL_PT_ENUM);
    return v ? v->s : NULL;
}

size_t ul_params_list(const ul_params *p, const char *name, const double **values)
{
    const ul_param_value *v = typed(p, name, UL_PT_INT_LIST, UL_PT_DOUBLE_LIST);
    if (values)
        *values = v ? v->list : NULL;
    return v ? v->n : 0;
}

/* ---- text output -------------------------------------------------------- */

/* Bounded writer: keeps buf NUL-terminated and remembers overflow, so the
 * formatting code needs no per-call checks. */
typedef struct ul_sink {
    char *buf;
    size_t cap, pos;
    bool overflow;
} ul_sink;

static void sink_put(ul_sink *o, const char *s, size_t len)
{
    if (o->cap == 0) {
        o->overflow = true;
        return;
    }
    size_t room = o->cap - 1 - o->pos;
    if (len > room) {
        len = room;
        o->overflow = true;
    }
    memcpy(o->buf + o->pos, s, len);
    o->pos += len;
    o->buf[o->pos] = '\0';
}

static void sink_str(ul_sink *o, const char *s)
{
    sink_put(o, s, strlen(s));
}

static void sink_json_string(ul_sink *o, const char *s)
{
    sink_str(o, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        switch (*c) {
        case '"': sink_str(o, "\\\""); break;
        case '\\': sink_str(o, "\\\\"); break;
        case '\n': sink_str(o, "\\n"); break;
        case '\r': sink_str(o, "\\r"); break;
        case '\t': sink_str(o, "\\t"); break;
        case '\b': sink_str(o, "\\b"); break;
        case '\f': sink_str(o, "\\f"); break;
        default:
            if (*c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *c);
                sink_str(o, esc);
            } else {
                sink_put(o, (const char *)c, 1);
            }
        }
    }
    sink_str(o, "\"");
}

static void sink_value(ul_sink *o, const ul_param_def *def, const ul_param_value *v, bool quote)
{
    char num[32];
    if (!v->set) {
        sink_str(o, "null");
        return;
    }
    switch (def->type) {
    case UL_PT_INT:
        snprintf(num, sizeof num, "%lld", (long long)v->i);
        sink_str(o, num);
        break;
    case UL_PT_DOUBLE:
        format_double(v->d, num);
        sink_str(o, num);
        break;
    case UL_PT_BOOL:
        sink_str(o, v->b ? "true" : "false");
        break;
    case UL_PT_STRING:
    case UL_PT_ENUM:
        if (quote)
            sink_json_string(o, v->s);
        else
            sink_str(o, v->s);
        break;
    case UL_PT_INT_LIST:
    case UL_PT_DOUBLE_LIST:
        sink_str(o, "[");
        for (size_t k = 0; k < v->n; k++) {
            if (k)
                sink_str(o, ", ");
            if (def->type == UL_PT_INT_LIST)
                snprintf(num, sizeof num, "%lld", (long long)v->list[k]);
            else
                format_double(v->list[k], num);
            sink_str(o, num);
        }
        sink_str(o, "]");
        break;
    }
}

int ul_params_format(const ul_params *p, const char *name, bool quote_strings, char *buf,
                     size_t cap)
{
    ul_sink o = {buf, cap, 0, false};
    if (cap)
        buf[0] = '\0';
    int k = find_index(p, name);
    if (k < 0)
        return UL_EINVAL;
    sink_value(&o, &p->schema[k], &p->v[k], quote_strings);
    return o.overflow ? UL_EINVAL : UL_OK;
}

int ul_params_to_json(const ul_params *p, char *buf, size_t cap)
{
    ul_sink o = {buf, cap, 0, false};
    if (cap)
        buf[0] = '\0';
    if (!p)
        return UL_EINVAL;
    sink_str(&o, "{");
    for (size_t k = 0; k < p->n; k++) {
        if (k)
            sink_str(&o, ", ");
        sink_json_string(&o, p->schema[k].name);
        sink_str(&o, ": ");
        sink_value(&o, &p->schema[k], &p->v[k], true);
    }
    sink_str(&o, "}");
    return o.overflow ? UL_EINVAL : UL_OK;
}

