/* Replays every input of tests/fuzz/corpus/<h>/ and tests/fuzz/regress/<h>/
 * (the crash inputs of bugs the fuzzers found, docs/fuzzing.md) through the
 * same entry function as the libFuzzer harness tests/fuzz/fuzz_<h>.c. Each
 * input runs in a child process: a crash, an abort of the target's own
 * checks (an error without a message, an inconsistent result), a time-out,
 * or under make test SANITIZE=1 a sanitizer report or a leak fails the test
 * and names the file. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz/fuzz_targets.h"
#include "test.h"

/* LeakSanitizer's check, when linked with it (make test SANITIZE=1); the
 * name is the sanitizer runtime's API, declared weak so that it is NULL in
 * the optimised build */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp): the sanitizer's own name
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static int read_all(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    uint8_t *b = malloc(cap);
    size_t k;
    while (b && (k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (!b) return -1;
    *data = b;
    *size = n;
    return 0;
}

/* the child of replay_one: the target on the input, its temporaries removed,
 * then (sanitized build) the leak check; exit 0, 2 (the target's own checks
 * failed) or 3 (a leak) */
static __attribute__((noreturn)) void replay_child(fuzz_target_fn fn, uint8_t *data, size_t size)
{
    alarm(120);
    int rc = fn(data, size);
    free(data);
    fuzz_tmp_cleanup();
    int code = rc == 0 || rc == -1 ? 0 : 2;
    if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check()) code = 3;
    _exit(code);
}

/* 0 ok; else the wait status (or -1: could not run) */
static int replay_one(fuzz_target_fn fn, const char *path)
{
    uint8_t *data;
    size_t size;
    if (read_all(path, &data, &size) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        free(data);
        return -1;
    }
    if (pid == 0) replay_child(fn, data, size); /* does not return */
    free(data);
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : (st ? st : -1);
}

static void replay(const char *name)
{
    fuzz_target_fn fn = NULL;
    for (int i = 0; i < fuzz_n_targets; i++)
        if (!strcmp(fuzz_targets[i].name, name)) fn = fuzz_targets[i].fn;
    REQUIRE(fn, "no fuzz target '%s'", name);
    const char *kinds[2] = {"corpus", "regress"};
    int n_files = 0;
    for (int k = 0; k < 2; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/%s/%s", kinds[k], name);
        DIR *d = opendir(dir);
        if (!d) {
            EXPECT(k == 1, "%s: cannot open (run the tests from the repository root)", dir);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            int st = replay_one(fn, path);
            n_files++;
            if (st == -1) EXPECT(0, "%s: could not replay", path);
            else if (st && WIFSIGNALED(st))
                EXPECT(0, "%s: fuzz_%s crashed (signal %d)", path, name, WTERMSIG(st));
            else if (st)
                EXPECT(0, "%s: fuzz_%s failed (exit %d: 1 sanitizer report, 2 bad rc, 3 leak)", path, name,
                       WEXITSTATUS(st));
        }
        closedir(d);
    }
    EXPECT(n_files > 0, "no inputs for fuzz target '%s'", name);
}

TEST(fuzz_regress_manifest) { replay("manifest"); }
TEST(fuzz_regress_config) { replay("config"); }
TEST(fuzz_regress_set) { replay("set"); }
TEST(fuzz_regress_safetensors) { replay("safetensors"); }
TEST(fuzz_regress_h5) { replay("h5"); }
TEST(fuzz_regress_natural) { replay("natural"); }
TEST(fuzz_regress_json) { replay("json"); }
