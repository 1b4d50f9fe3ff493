/* Private: a small JSON reader (for safetensors headers and result files)
 * and writer helpers. */
#ifndef UL_JSON_H
#define UL_JSON_H

#include "unlearn/common.h"

typedef enum ul_json_type {
    UL_JSON_NULL = 1, UL_JSON_BOOL, UL_JSON_NUMBER, UL_JSON_STRING, UL_JSON_ARRAY, UL_JSON_OBJECT
} ul_json_type;

typedef struct ul_json {
    ul_json_type type;
    bool boolean;
    double number;
    char *string;            /* STRING (decoded, NUL-terminated) */
    size_t n;                /* ARRAY/OBJECT element count */
    struct ul_json **items;  /* ARRAY/OBJECT values */
    char **keys;             /* OBJECT keys */
} ul_json;

/* Parses len bytes; errors say at which byte offset and what was expected.
 * Nesting deeper than 64 levels is refused. */
int ul_json_parse(const char *text, size_t len, ul_json **out, ul_error *err);
void ul_json_free(ul_json *j);
const ul_json *ul_json_get(const ul_json *obj, const char *key);

/* Appends s as a JSON string literal (quoted, escaped) to buf at *pos;
 * returns UL_ENOMEM... never: truncates safely and returns -1 on overflow. */
int ul_json_escape(char *buf, size_t cap, size_t *pos, const char *s);

#endif
