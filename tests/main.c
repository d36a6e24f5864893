/* Test runner: runs every registered TEST (or those whose name or file
 * contains one of the arguments) and ends with "N passed, N failed, N skipped". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

typedef struct {
    const char *name, *file;
    test_fn fn;
} test_entry;

static test_entry *tests;
static int ntests, captests;
static int cur_failures, cur_skipped;
static char skip_msg[512];
static char tmpdir[256];

void test_register(const char *name, const char *file, test_fn fn)
{
    if (ntests == captests) {
        captests = captests ? captests * 2 : 64;
        tests = realloc(tests, (size_t)captests * sizeof *tests);
        if (!tests) abort();
    }
    tests[ntests++] = (test_entry){name, file, fn};
}

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stdout, "    FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    cur_failures++;
}

void test_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skip_msg, sizeof skip_msg, fmt, ap);
    va_end(ap);
    cur_skipped = 1;
}

int test_failed(void) { return cur_failures; }

const char *test_fixtures_dir(void)
{
    /* absolute, so that paths written into manifests in temporary folders
     * still point at the fixtures */
    static char abs_dir[4096];
    const char *d = getenv("NCMI_FIXTURES");
    if (!d || !*d) d = "../shared/fixtures";
    if (!abs_dir[0] && !realpath(d, abs_dir)) snprintf(abs_dir, sizeof abs_dir, "%s", d);
    return abs_dir;
}

const char *test_ncmi_bin(void)
{
    const char *b = getenv("NCMI_BIN");
    return b && *b ? b : "build/ncmi";
}

static void rm_tmpdir(void)
{
    if (tmpdir[0] && !getenv("NCMI_KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/ncmi-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(rm_tmpdir);
    }
    return tmpdir;
}

char *test_tmp_path(const char *fmt, ...)
{
    static char buf[16][1024];
    static int k;
    char *p = buf[k++ % 16], name[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return p;
}

/* A sanitizer report in a child's output fails the current test whatever
 * exit status the test expected (make test SANITIZE=1, docs/hardening.md). */
static void san_check(const char *cmd, const char *out)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:"};
    for (size_t i = 0; out && i < sizeof marks / sizeof *marks; i++) {
        const char *m = strstr(out, marks[i]);
        if (!m) continue;
        const char *from = m - out > 200 ? m - 200 : out;
        test_fail_at(__FILE__, __LINE__, "sanitizer report in `%.200s`:\n%.4000s", cmd, from);
        return;
    }
}

int test_run(const char *cmd, char **output)
{
    char *full = NULL;
    if (asprintf(&full, "( %s ) 2>&1", cmd) < 0) return -1;
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += r;
        if (cap - len < 2) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (buf) buf[len] = 0;
    int st = pclose(p);
    san_check(cmd, buf);
    if (output)
        *output = buf;
    else
        free(buf);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

int test_aborts(void (*fn)(void *ctx), void *ctx, const char *needle, char *msg, size_t n)
{
    int pfd[2];
    if (n) msg[0] = 0;
    if (pipe(pfd) != 0) return 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        fn(ctx);
        _exit(0); /* returned normally: did not abort */
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    char sink[256];
    // cppcheck-suppress legacyUninitvar ; false positive: sink is only written (by read)
    while ((r = read(pfd[0], n - len > 1 ? msg + len : sink,
                     n - len > 1 ? n - len - 1 : sizeof sink)) > 0)
        if (n - len > 1) len += (size_t)r;
    if (n) msg[len < n ? len : n - 1] = 0;
    close(pfd[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0) return 0;
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && (!needle || strstr(msg, needle));
}

int test_ncmi(char **output, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s", test_ncmi_bin(), args);
    return test_run(cmd, output);
}

int test_sanitized(void)
{
    const char *s = getenv("NCMI_SANITIZE");
    return s && *s && strcmp(s, "0") != 0;
}

double test_json_number(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *b = realloc(buf, cap * 2);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    fclose(f);
    if (!buf) return NAN;
    buf[n] = 0;
    char pat[160];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(buf, pat);
    double v = p ? strtod(p + strlen(pat), NULL) : NAN;
    free(buf);
    return v;
}

int test_file_nonempty(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_entry(const void *a, const void *b)
{
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    qsort(tests, (size_t)ntests, sizeof *tests, cmp_entry);
    int passed = 0, failed = 0, skipped = 0;
    double t_all = now();
    /* worker_* tests are helpers that a test runs in a fresh process of this
     * binary (NCMI_TEST_WORKER=<name>), never on their own */
    const char *worker = getenv("NCMI_TEST_WORKER");
    const char *lenv = getenv("NCMI_TEST_LONG");
    int long_on = lenv && *lenv && strcmp(lenv, "0") != 0;
    for (int i = 0; i < ntests; i++) {
        if (worker) {
            if (strcmp(tests[i].name, worker) != 0) continue;
            tests[i].fn();
            /* a skip inside a worker is passed up through this line
             * (gpu_run_worker turns it into a skip of the parent test) */
            if (!cur_failures && cur_skipped) printf("NCMI_WORKER_SKIP: %s\n", skip_msg);
            return cur_failures ? 1 : 0;
        }
        if (strncmp(tests[i].name, "worker_", 7) == 0) continue;
        /* long_* tests (scale, many fault-injection trials) run only under
         * make test-long (NCMI_TEST_LONG=1) */
        if (strncmp(tests[i].name, "long_", 5) == 0 && !long_on) continue;
        if (argc > 1) {
            int hit = 0;
            for (int a = 1; a < argc; a++)
                if (strstr(tests[i].name, argv[a]) || strstr(tests[i].file, argv[a])) hit = 1;
            if (!hit) continue;
        }
        cur_failures = 0;
        cur_skipped = 0;
        double t0 = now();
        tests[i].fn();
        double dt = now() - t0;
        if (cur_failures) {
            failed++;
            printf("FAIL %-40s (%s, %.2fs)\n", tests[i].name, tests[i].file, dt);
        } else if (cur_skipped) {
            skipped++;
            printf("SKIP %-40s %s\n", tests[i].name, skip_msg);
        } else {
            passed++;
            printf("ok   %-40s %.2fs\n", tests[i].name, dt);
        }
    }
    printf("(%.1fs)\n%d passed, %d failed, %d skipped\n", now() - t_all, passed, failed, skipped);
    return failed ? 1 : 0;
}
