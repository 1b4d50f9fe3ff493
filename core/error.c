#include <stdio.h>
#include <string.h>

#include "unlearn/common.h"

int ul_verrorf(ul_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

int ul_errorf(ul_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ul_verrorf(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void ul_error_prefix(ul_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[UL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[UL_ERROR_MAX];
    memcpy(old, err->msg, sizeof old);
    int n = snprintf(err->msg, sizeof err->msg, "%s: ", prefix);
    if (n > 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", old);
}
