/* Helpers shared by the suites that drive the `unlearn` CLI: each works in
 * the directory cli_tmpdir (made once per suite by cli_make_tmpdir). */
#ifndef UL_TEST_CLI_UTIL_H
#define UL_TEST_CLI_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char cli_tmpdir[256];

static void cli_make_tmpdir(void)
{
    snprintf(cli_tmpdir, sizeof cli_tmpdir, "/tmp/ul_cli_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(cli_tmpdir));
}

/* Runs `unlearn ARGS` in cli_tmpdir with the environment assignments in env
 * (may be NULL); its stdout and stderr go to out; returns the exit status. */
static int run_cli(const char *args, char *out, size_t cap, const char *env)
{
    char cmd[4096], log[512];
    snprintf(log, sizeof log, "%s/cli.log", cli_tmpdir);
    snprintf(cmd, sizeof cmd, "cd %s && %s %s %s > %s 2>&1", cli_tmpdir, env ? env : "",
             getenv("UL_TEST_CLI"), args, log);
    int st = system(cmd);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, cap - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", cli_tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static bool exists_in_tmp(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", cli_tmpdir, name);
    return stat(path, &st) == 0;
}

#endif
