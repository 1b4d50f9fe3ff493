/* Private: file-system helpers. */
#ifndef UL_FSUTIL_H
#define UL_FSUTIL_H

#include "unlearn/common.h"

/* Writes len bytes to path atomically: path.tmp.<pid>, fsync, rename. */
int ul_write_file_atomic(const char *path, const void *data, size_t len, ul_error *err);
/* Opens a temp file beside path for writing; commit renames it into place,
 * abort removes it. */
typedef struct ul_atomic_file {
    void *fp; /* FILE* */
    char path[4096];
    char tmp[4200];
} ul_atomic_file;
int ul_atomic_open(ul_atomic_file *f, const char *path, ul_error *err);
int ul_atomic_commit(ul_atomic_file *f, ul_error *err);
void ul_atomic_abort(ul_atomic_file *f);
/* mkdir -p */
int ul_mkdirs(const char *path, ul_error *err);
bool ul_file_exists(const char *path);
/* Reads a whole file (malloc'ed, NUL-terminated). */
int ul_read_file(const char *path, char **data, size_t *len, ul_error *err);

#endif
