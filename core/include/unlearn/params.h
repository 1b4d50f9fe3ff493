/* unlearn — typed parameters described by static schemas.
 *
 * A plugin declares its parameters as a static array of ul_param_def. The
 * host fills a ul_params block from YAML with it (rejecting unknown keys,
 * wrong types and out-of-range values), prints it for `unlearn describe`
 * without running plugin code, and uses the names for grid searches. */
#ifndef UNLEARN_PARAMS_H
#define UNLEARN_PARAMS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ul_param_type {
    UL_PT_INT = 1,
    UL_PT_DOUBLE,
    UL_PT_BOOL,
    UL_PT_STRING,
    UL_PT_ENUM,        /* a string from `choices` */
    UL_PT_INT_LIST,
    UL_PT_DOUBLE_LIST
} ul_param_type;

typedef struct ul_param_def {
    const char *name;
    ul_param_type type;
    /* Default as YAML text ("0.1", "true", "[1, 2]", "sgd"); NULL means
     * the key is required. */
    const char *default_value;
    /* Inclusive bounds for numbers (and for each list element), used when
     * the matching has_* flag is set. */
    bool has_min, has_max;
    double min, max;
    /* UL_PT_ENUM: the allowed values separated by '|', e.g. "sgd|adam". */
    const char *choices;
    const char *doc;
} ul_param_def;

/* Convenience initialisers for static schemas. */
#define UL_PARAM_INT(nm, def, lo, hi, d) \
    { (nm), UL_PT_INT, (def), true, true, (lo), (hi), NULL, (d) }
#define UL_PARAM_DOUBLE(nm, def, lo, hi, d) \
    { (nm), UL_PT_DOUBLE, (def), true, true, (lo), (hi), NULL, (d) }
#define UL_PARAM_BOOL(nm, def, d) \
    { (nm), UL_PT_BOOL, (def), false, false, 0, 0, NULL, (d) }
#define UL_PARAM_STRING(nm, def, d) \
    { (nm), UL_PT_STRING, (def), false, false, 0, 0, NULL, (d) }
#define UL_PARAM_ENUM(nm, def, ch, d) \
    { (nm), UL_PT_ENUM, (def), false, false, 0, 0, (ch), (d) }
#define UL_PARAM_INT_LIST(nm, def, lo, hi, d) \
    { (nm), UL_PT_INT_LIST, (def), true, true, (lo), (hi), NULL, (d) }
#define UL_PARAM_DOUBLE_LIST(nm, def, lo, hi, d) \
    { (nm), UL_PT_DOUBLE_LIST, (def), true, true, (lo), (hi), NULL, (d) }

/* A filled parameter block: one value per schema entry. Owned by whoever
 * created it (ul_params_new / ul_params_free); plugins only read it, and
 * only during the call it was passed to. Strings returned by the getters
 * live as long as the block. */
typedef struct ul_params ul_params;

/* Getters. Asking for a name the schema does not declare, or with the wrong
 * type, is a programming error: the getter returns 0/false/NULL/empty. */
UL_API int64_t ul_params_int(const ul_params *p, const char *name);
UL_API double ul_params_double(const ul_params *p, const char *name);
UL_API bool ul_params_bool(const ul_params *p, const char *name);
UL_API const char *ul_params_string(const ul_params *p, const char *name); /* also ENUM */
/* Lists: returns the length and points *values at the elements. */
UL_API size_t ul_params_list(const ul_params *p, const char *name, const double **values);

/* ---- host side ---------------------------------------------------------- */
/* A block holding every default of the schema. Fails (UL_EINVAL) only when
 * a default does not parse, or when a required key has no default — the
 * latter is allowed, the value then stays unset until ul_params_set. */
UL_API ul_params *ul_params_new(const ul_param_def *schema, size_t n, ul_error *err);
UL_API void ul_params_free(ul_params *p);
UL_API ul_params *ul_params_clone(const ul_params *p);
/* Sets one value from its YAML scalar/flow text ("0.1", "[1, 2]", "true").
 * On failure the message says what was expected, without location: the
 * caller adds "file:line:col: ". */
UL_API int ul_params_set(ul_params *p, const char *name, const char *text, ul_error *err);
/* Name of the first required key that was never set, or NULL. */
UL_API const char *ul_params_missing(const ul_params *p);
UL_API const ul_param_def *ul_params_schema(const ul_params *p, size_t *n);
/* The value as canonical text (YAML flow / JSON compatible): numbers in
 * shortest round-trip form, strings double-quoted when `quote_strings`. */
UL_API int ul_params_format(const ul_params *p, const char *name, bool quote_strings,
                            char *buf, size_t cap);
/* {"k": v, ...} of every value, sorted as in the schema. */
UL_API int ul_params_to_json(const ul_params *p, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
