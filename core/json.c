/* A strict RFC 8259 JSON reader (recursive descent) and string escaping.
 * Strict because it reads files other tools wrote (safetensors headers):
 * a malformed or ambiguous file is refused with the byte offset of the
 * problem rather than guessed at. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define UL_JSON_MAX_DEPTH 64

typedef struct json_parser {
    const char *s;
    size_t len, pos;
    ul_error *err;
} json_parser;

static int json_fail(json_parser *p, size_t at, const char *what)
{
    char found[32];
    if (at >= p->len)
        snprintf(found, sizeof found, "end of input");
    else if (p->s[at] >= 0x20 && p->s[at] < 0x7f)
        snprintf(found, sizeof found, "'%c'", p->s[at]);
    else
        snprintf(found, sizeof found, "byte 0x%02x", (unsigned char)p->s[at]);
    return ul_errorf(p->err, UL_EINVAL, "invalid JSON at byte %zu: %s, found %s", at, what,
                     found);
}

static int json_oom(json_parser *p)
{
    return ul_errorf(p->err, UL_ENOMEM, "out of memory while parsing JSON");
}

static void json_skip_ws(json_parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static bool json_literal(json_parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return false;
    p->pos += n;
    return true;
}

static int json_hex4(json_parser *p, size_t at, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = at + i < p->len ? p->s[at + i] : '\0';
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return json_fail(p, at + i, "expected 4 hex digits after \\u");
        v = v << 4 | d;
    }
    *out = v;
    return UL_OK;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* At an opening quote; decodes into a malloc'ed NUL-terminated string.
 * The decoded text is never longer than the source, whose length bounds
 * the allocation. */
static int json_string(json_parser *p, char **out)
{
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len)
        return json_fail(p, p->len, "unterminated string");
    char *buf = malloc(end - start + 1), *o = buf;
    if (!buf)
        return json_oom(p);
    int rc = UL_OK;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            rc = json_fail(p, p->pos, "control characters must be escaped in strings");
            goto fail;
        }
        if (c != '\\') {
            *o++ = (char)c;
            p->pos++;
            continue;
        }
        size_t esc = p->pos;
        char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = 0;
            if ((rc = json_hex4(p, p->pos, &cp)))
                goto fail;
            p->pos += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                rc = json_fail(p, esc, "low surrogate without a preceding high surrogate");
                goto fail;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo = 0;
                if (p->pos + 1 >= end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    rc = json_fail(p, p->pos, "expected \\u low surrogate after high surrogate");
                    goto fail;
                }
                if ((rc = json_hex4(p, p->pos + 2, &lo)))
                    goto fail;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    rc = json_fail(p, p->pos, "expected \\u low surrogate after high surrogate");
                    goto fail;
                }
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            /* A NUL would silently cut the C string short. */
            if (cp == 0) {
                rc = json_fail(p, esc, "\\u0000 is not supported in strings");
                goto fail;
            }
            o += utf8_put(o, cp);
            break;
        }
        default:
            rc = json_fail(p, esc + 1, "invalid escape sequence");
            goto fail;
        }
    }
    *o = '\0';
    p->pos = end + 1;
    *out = buf;
    return UL_OK;

fail:
    free(buf);
    return rc;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Validates the token against the JSON number grammar first, because
 * strtod alone would also accept hex, "inf", "nan" and leading '+'. */
static int json_number(json_parser *p, double *out)
{
    size_t i = p->pos;
    const char *s = p->s;
    if (i < p->len && s[i] == '-')
        i++;
    if (i < p->len && s[i] == '0') {
        i++;
    } else if (i < p->len && is_digit(s[i])) {
        while (i < p->len && is_digit(s[i]))
            i++;
    } else {
        return json_fail(p, i, "expected a digit");
    }
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || !is_digit(s[i]))
            return json_fail(p, i, "expected a digit after the decimal point");
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || !is_digit(s[i]))
            return json_fail(p, i, "expected a digit in the exponent");
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    /* The input need not be NUL-terminated: strtod reads a copy. The
     * library never calls setlocale, so the decimal point is '.'. */
    size_t n = i - p->pos;
    char small[64], *tok = n < sizeof small ? small : malloc(n + 1);
    if (!tok)
        return json_oom(p);
    memcpy(tok, s + p->pos, n);
    tok[n] = '\0';
    *out = strtod(tok, NULL);
    if (tok != small)
        free(tok);
    p->pos = i;
    return UL_OK;
}

static int json_value(json_parser *p, int depth, ul_json **out);

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys make a document ambiguous (which value wins differs
 * between readers), so they are refused. Sorting keeps this O(n log n)
 * even for a hostile file. */
static int json_check_duplicates(json_parser *p, const ul_json *obj, size_t at)
{
    if (obj->n < 2)
        return UL_OK;
    char **sorted = malloc(obj->n * sizeof *sorted);
    if (!sorted)
        return json_oom(p);
    memcpy(sorted, obj->keys, obj->n * sizeof *sorted);
    qsort(sorted, obj->n, sizeof *sorted, key_cmp);
    int rc = UL_OK;
    for (size_t i = 1; i < obj->n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            rc = ul_errorf(p->err, UL_EINVAL,
                           "invalid JSON: duplicate key \"%.200s\" in the object at byte %zu",
                           sorted[i], at);
            break;
        }
    }
    free(sorted);
    return rc;
}

/* Appends to an array or object, growing by doubling. */
static int json_push(json_parser *p, ul_json *j, size_t *cap, char *key, ul_json *item)
{
    if (j->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        ul_json **items = realloc(j->items, nc * sizeof *items);
        if (!items)
            return json_oom(p);
        j->items = items;
        if (j->type == UL_JSON_OBJECT) {
            char **keys = realloc(j->keys, nc * sizeof *keys);
            if (!keys)
                return json_oom(p);
            j->keys = keys;
        }
        *cap = nc;
    }
    j->items[j->n] = item;
    if (j->type == UL_JSON_OBJECT)
        j->keys[j->n] = key;
    j->n++;
    return UL_OK;
}

/* At '[' or '{'. */
static int json_container(json_parser *p, int depth, ul_json *j)
{
    const bool is_obj = j->type == UL_JSON_OBJECT;
    const char close = is_obj ? '}' : ']';
    const size_t open_at = p->pos;
    size_t cap = 0;
    int rc;

    p->pos++;
    json_skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return UL_OK;
    }
    for (;;) {
        char *key = NULL;
        ul_json *item = NULL;
        json_skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return json_fail(p, p->pos, "expected a string key");
            if ((rc = json_string(p, &key)))
                return rc;
            json_skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return json_fail(p, p->pos, "expected ':' after the object key");
            }
            p->pos++;
        }
        if ((rc = json_value(p, depth + 1, &item))) {
            free(key);
            return rc;
        }
        if ((rc = json_push(p, j, &cap, key, item))) {
            free(key);
            ul_json_free(item);
            return rc;
        }
        json_skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            break;
        }
        return json_fail(p, p->pos,
                         is_obj ? "expected ',' or '}' after an object member"
                                : "expected ',' or ']' after an array element");
    }
    return is_obj ? json_check_duplicates(p, j, open_at) : UL_OK;
}

static int json_value(json_parser *p, int depth, ul_json **out)
{
    json_skip_ws(p);
    if (p->pos >= p->len)
        return json_fail(p, p->pos, "expected a value");
    ul_json *j = calloc(1, sizeof *j);
    if (!j)
        return json_oom(p);
    int rc = UL_OK;
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (depth >= UL_JSON_MAX_DEPTH) {
            rc = ul_errorf(p->err, UL_EINVAL,
                           "invalid JSON at byte %zu: nesting deeper than %d levels", p->pos,
                           UL_JSON_MAX_DEPTH);
            goto fail;
        }
        j->type = c == '{' ? UL_JSON_OBJECT : UL_JSON_ARRAY;
        rc = json_container(p, depth, j);
    } else if (c == '"') {
        j->type = UL_JSON_STRING;
        rc = json_string(p, &j->string);
    } else if (c == '-' || is_digit(c)) {
        j->type = UL_JSON_NUMBER;
        rc = json_number(p, &j->number);
    } else if (json_literal(p, "true")) {
        j->type = UL_JSON_BOOL;
        j->boolean = true;
    } else if (json_literal(p, "false")) {
        j->type = UL_JSON_BOOL;
    } else if (json_literal(p, "null")) {
        j->type = UL_JSON_NULL;
    } else {
        rc = json_fail(p, p->pos, "expected a value");
    }
    if (rc)
        goto fail;
    *out = j;
    return UL_OK;

fail:
    ul_json_free(j);
    return rc;
}

int ul_json_parse(const char *text, size_t len, ul_json **out, ul_error *err)
{
    json_parser p = {text, len, 0, err};
    ul_json *root = NULL;
    *out = NULL;
    int rc = json_value(&p, 0, &root);
    if (rc)
        return rc;
    json_skip_ws(&p);
    if (p.pos < p.len) {
        ul_json_free(root);
        return json_fail(&p, p.pos, "expected end of input after the value");
    }
    *out = root;
    return UL_OK;
}

void ul_json_free(ul_json *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        ul_json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->string);
    free(j);
}

const ul_json *ul_json_get(const ul_json *obj, const char *key)
{
    if (!obj || obj->type != UL_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

/* Appends n bytes if they fit with room for the NUL; on overflow leaves
 * the buffer as it was and reports failure. */
static bool esc_put(char *buf, size_t cap, size_t *pos, const char *s, size_t n)
{
    if (*pos + n + 1 > cap)
        return false;
    memcpy(buf + *pos, s, n);
    *pos += n;
    buf[*pos] = '\0';
    return true;
}

int ul_json_escape(char *buf, size_t cap, size_t *pos, const char *s)
{
    if (*pos >= cap)
        return -1;
    size_t start = *pos;
    bool ok = esc_put(buf, cap, pos, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; ok && *c; c++) {
        char tmp[8];
        const char *out = tmp;
        size_t n = 2;
        tmp[0] = '\\';
        switch (*c) {
        case '"': tmp[1] = '"'; break;
        case '\\': tmp[1] = '\\'; break;
        case '\b': tmp[1] = 'b'; break;
        case '\f': tmp[1] = 'f'; break;
        case '\n': tmp[1] = 'n'; break;
        case '\r': tmp[1] = 'r'; break;
        case '\t': tmp[1] = 't'; break;
        default:
            if (*c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *c);
                n = 6;
            } else {
                out = (const char *)c;
                n = 1;
            }
        }
        ok = esc_put(buf, cap, pos, out, n);
    }
    if (ok)
        ok = esc_put(buf, cap, pos, "\"", 1);
    if (!ok) {
        /* Never leave half a literal behind: a caller that ignores the
         * error still holds well-formed output up to the last success. */
        *pos = start;
        buf[start] = '\0';
        return -1;
    }
    return 0;
}
