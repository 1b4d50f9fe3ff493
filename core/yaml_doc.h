/* Private: a YAML document as a tree with source positions, and the
 * validation helpers every pipeline section uses. Messages have the form
 * "path:line:col: message" (1-based line and column). */
#ifndef UL_YAML_DOC_H
#define UL_YAML_DOC_H

#include "unlearn/params.h"

typedef enum ul_yaml_kind { UL_YAML_SCALAR = 1, UL_YAML_SEQ, UL_YAML_MAP } ul_yaml_kind;

typedef struct ul_yaml_node {
    ul_yaml_kind kind;
    int line, col;                /* 1-based position of the node */
    char *scalar;                 /* SCALAR: its text */
    bool quoted;                  /* SCALAR: written in quotes */
    size_t n;                     /* SEQ/MAP: number of items */
    struct ul_yaml_node **items;  /* SEQ: items; MAP: values */
    char **keys;                  /* MAP: keys (scalars) */
    int *key_line, *key_col;      /* MAP: position of each key */
} ul_yaml_node;

typedef struct ul_yaml_doc {
    char *path;          /* as given, used in messages */
    ul_yaml_node *root;  /* NULL for an empty document */
} ul_yaml_doc;

int ul_yaml_load_file(const char *path, ul_yaml_doc **out, ul_error *err);
int ul_yaml_load_string(const char *text, const char *name, ul_yaml_doc **out, ul_error *err);
void ul_yaml_free(ul_yaml_doc *doc);

/* Value of key in a MAP node, or NULL (also when map is not a MAP). */
const ul_yaml_node *ul_yaml_get(const ul_yaml_node *map, const char *key);
/* Index of key in map, or -1. */
int ul_yaml_key_index(const ul_yaml_node *map, const char *key);
/* Flow text of a scalar or a (nested) sequence of scalars, e.g. "[1, 2]";
 * what ul_params_set accepts. Returns UL_EINVAL for a map. */
int ul_yaml_to_text(const ul_yaml_node *n, char *buf, size_t cap);

/* Formats "path:line:col: " + message into err. */
int ul_yaml_errorf(ul_error *err, const ul_yaml_doc *doc, int line, int col, const char *fmt,
                   ...) UL_PRINTF(5, 6);

/* Every key of map must be one of allowed[]; otherwise
 * "path:L:C: unknown key 'lamda' in <where> (did you mean 'lambda'?)" or
 * "... (expected one of: a, b, c)". Also rejects a non-map with
 * "path:L:C: <where> must be a mapping". */
int ul_yaml_check_keys(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                       const char *const *allowed, size_t n_allowed, ul_error *err);

/* Sets every key of map into p (its schema decides type and range); unknown
 * keys, wrong types, out-of-range values and, afterwards, required keys
 * still missing are errors with position. `where` names the section. */
int ul_yaml_fill_params(const ul_yaml_doc *doc, const ul_yaml_node *map, const char *where,
                        ul_params *p, ul_error *err);

/* The candidate closest to key by edit distance when it is close enough to
 * be a likely typo (distance <= max(1, strlen(key)/3)), else NULL. */
const char *ul_did_you_mean(const char *key, const char *const *cands, size_t n);

#endif
