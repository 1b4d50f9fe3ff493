/* A scratch directory per test suite: tmp_setup makes it (as an unchecked
 * fixture, once per suite), tmp_teardown removes it with its contents. */
#ifndef UL_TEST_TMPDIR_H
#define UL_TEST_TMPDIR_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char tmpdir[256];

static inline void tmp_setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ul-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static inline int tmp_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static inline void tmp_teardown(void)
{
    nftw(tmpdir, tmp_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void tmp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

#endif
