/* Helpers shared by the suites that drive the `unlearn` CLI: each works in
 * the suite's scratch directory from tmpdir.h. */
#ifndef UL_TEST_CLI_UTIL_H
#define UL_TEST_CLI_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tmpdir.h"


/* Runs `unlearn ARGS` in tmpdir with the environment assignments in env
 * (may be NULL); its stdout and stderr go to out; returns the exit status. */
static inline int run_cli(const char *args, char *out, size_t cap, const char *env)
{
    char cmd[4096], log[512];
    snprintf(log, sizeof log, "%s/cli.log", tmpdir);
    snprintf(cmd, sizeof cmd, "cd %s && %s %s %s > %s 2>&1", tmpdir, env ? env : "",
             getenv("UL_TEST_CLI"), args, log);
    int st = system(cmd);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, cap - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static inline bool exists_in_tmp(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return stat(path, &st) == 0;
}

#endif
