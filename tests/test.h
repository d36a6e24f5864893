/* A minimal test framework. Each TEST(name) registers itself (constructor)
 * and the runner (tests/main.c) runs them all, or those whose name contains
 * argv[1], and ends with "N passed, N failed, N skipped".
 *
 * EXPECT_* record a failure and go on; REQUIRE_* record it and return from
 * the test. SKIP("why") marks the test skipped (printed, not hidden). */
#ifndef NCMI_TEST_H
#define NCMI_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*test_fn)(void);
void test_register(const char *name, const char *file, test_fn fn);
void test_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int test_failed(void); /* failures so far in the current test */

/* Directory of the shared fixtures: $NCMI_FIXTURES or ../shared/fixtures. */
const char *test_fixtures_dir(void);
/* A fresh temporary directory for this test run (removed at exit). */
const char *test_tmpdir(void);
/* "<tmpdir>/<name>" with name printf-formatted; rotating static buffers
 * (the last 16 results stay valid). */
char *test_tmp_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Path of the ncmi binary under test: $NCMI_BIN or build/ncmi. */
const char *test_ncmi_bin(void);
/* Run `<ncmi binary> <args>` (args printf-formatted) through test_run. */
int test_ncmi(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 under make test SANITIZE=1 (the Makefile sets NCMI_SANITIZE=1): the few
 * long training tests then run a shorter schedule (same code paths, fewer
 * epochs), print that they did, and leave out only their accuracy floors
 * and time bounds, which the optimised suite asserts (docs/hardening.md). */
int test_sanitized(void);
/* The number after "key": in a JSON file (the first occurrence, at any
 * depth; NAN when the file or the key is absent). For metrics files. */
double test_json_number(const char *path, const char *key);
/* 1 when path exists and is not empty. */
int test_file_nonempty(const char *path);
/* Run a shell command, capture stdout+stderr (malloc'd, caller frees) and
 * return the exit status (-1 if it could not run / was killed). */
int test_run(const char *cmd, char **output);

/* Runs fn(ctx) in a child process and returns 1 when it aborted (a
 * programming-error check fired) with `needle` in its stderr; the captured
 * stderr goes to msg (n bytes) for the failure message. */
int test_aborts(void (*fn)(void *ctx), void *ctx, const char *needle, char *msg, size_t n);

/* A TEST whose name starts with worker_ never runs in the suite: another
 * test runs it in a fresh process of the test binary with the environment
 * NCMI_TEST_WORKER=<name> (GPU tests isolate crashes that way). */
#define TEST(name)                                                              \
    static void test_##name(void);                                              \
    __attribute__((constructor)) static void test_reg_##name(void)              \
    {                                                                           \
        test_register(#name, __FILE__, test_##name);                            \
    }                                                                           \
    static void test_##name(void)

#define EXPECT(cond, ...)                                                       \
    do {                                                                        \
        if (!(cond)) test_fail_at(__FILE__, __LINE__, __VA_ARGS__);             \
    } while (0)
#define REQUIRE(cond, ...)                                                      \
    do {                                                                        \
        if (!(cond)) {                                                          \
            test_fail_at(__FILE__, __LINE__, __VA_ARGS__);                      \
            return;                                                             \
        }                                                                       \
    } while (0)
#define EXPECT_NEAR(a, b, tol)                                                  \
    do {                                                                        \
        double ea_ = (double)(a), eb_ = (double)(b), et_ = (double)(tol);       \
        if (!(fabs(ea_ - eb_) <= et_))                                          \
            test_fail_at(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", \
                         #a, ea_, #b, eb_, fabs(ea_ - eb_), et_);               \
    } while (0)
#define SKIP(...)                                                               \
    do {                                                                        \
        test_skip(__VA_ARGS__);                                                 \
        return;                                                                 \
    } while (0)

#endif
