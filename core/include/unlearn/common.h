/* unlearn — common definitions shared by the library and its plugins.
 *
 * Errors: every fallible library call takes a `ul_error *` (may be NULL) and
 * returns 0 on success or a negative UL_E* code. On failure the message in
 * err->msg is a complete sentence a user can act on. The library never prints
 * to stdout and never exits the process. */
#ifndef UNLEARN_COMMON_H
#define UNLEARN_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define UL_API __attribute__((visibility("default")))
#define UL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define UL_API
#define UL_PRINTF(a, b)
#endif

enum {
    UL_OK = 0,
    UL_EINVAL = -1,  /* bad input: configuration, arguments, file contents */
    UL_EIO = -2,     /* a file could not be read or written */
    UL_ENOMEM = -3,  /* an allocation failed */
    UL_EPLUGIN = -4, /* a plugin is missing, broken or incompatible */
    UL_EDIVERGED = -5 /* a loss became NaN or Inf */
};

#define UL_ERROR_MAX 2048

typedef struct ul_error {
    int code;
    char msg[UL_ERROR_MAX];
} ul_error;

/* Fills err (when not NULL) and returns code, so callers can write
 * `return ul_errorf(err, UL_EINVAL, "...", ...);`. */
UL_API int ul_errorf(ul_error *err, int code, const char *fmt, ...) UL_PRINTF(3, 4);
UL_API int ul_verrorf(ul_error *err, int code, const char *fmt, va_list ap);
/* Prepends "prefix: " to an error already set (for adding file names). */
UL_API void ul_error_prefix(ul_error *err, const char *fmt, ...) UL_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif
#endif
