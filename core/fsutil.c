#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

int ul_atomic_open(ul_atomic_file *f, const char *path, ul_error *err)
{
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path)
        return ul_errorf(err, UL_EINVAL, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp)
        return ul_errorf(err, UL_EIO, "%s: cannot create: %s", f->tmp, strerror(errno));
    return UL_OK;
}

int ul_atomic_commit(ul_atomic_file *f, ul_error *err)
{
    FILE *fp = f->fp;
    f->fp = NULL;
    int bad = ferror(fp);
    if (fflush(fp) != 0)
        bad = 1;
    if (!bad && fsync(fileno(fp)) != 0)
        bad = 1;
    if (fclose(fp) != 0)
        bad = 1;
    if (bad) {
        int e = errno;
        remove(f->tmp);
        return ul_errorf(err, UL_EIO, "%s: write failed: %s", f->path, strerror(e));
    }
    if (rename(f->tmp, f->path) != 0) {
        int e = errno;
        remove(f->tmp);
        return ul_errorf(err, UL_EIO, "%s: cannot rename into place: %s", f->path, strerror(e));
    }
    return UL_OK;
}

void ul_atomic_abort(ul_atomic_file *f)
{
    if (f->fp) {
        fclose(f->fp);
        f->fp = NULL;
        remove(f->tmp);
    }
}

int ul_write_file_atomic(const char *path, const void *data, size_t len, ul_error *err)
{
    ul_atomic_file f;
    int rc = ul_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if (len && fwrite(data, 1, len, f.fp) != len) {
        int e = errno;
        ul_atomic_abort(&f);
        return ul_errorf(err, UL_EIO, "%s: write failed: %s", path, strerror(e));
    }
    return ul_atomic_commit(&f, err);
}

int ul_mkdirs(const char *path, ul_error *err)
{
    char buf[4096];
    if (strlen(path) >= sizeof buf)
        return ul_errorf(err, UL_EINVAL, "%s: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ul_errorf(err, UL_EIO, "%s: cannot create directory: %s", buf,
                                 strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ul_errorf(err, UL_EIO, "%s: not a directory", path);
    return UL_OK;
}

bool ul_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int ul_read_file(const char *path, char **data, size_t *len, ul_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ul_errorf(err, UL_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(fp);
        return ul_errorf(err, UL_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(fp);
                return ul_errorf(err, UL_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return ul_errorf(err, UL_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    if (len)
        *len = n;
    return UL_OK;
}
