/* Helpers of the fault-injection tests: see fault_util.h. */
#include "fault_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

char *fu_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 65536, len = 0, r;
    char *b = malloc(cap + 1);
    while (b && (r = fread(b + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(b, cap + 1);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (b) b[len] = 0;
    if (n) *n = len;
    return b;
}

int fu_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

int fu_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

const char *fu_make_slides_bin(void)
{
    static char buf[4096];
    const char *b = test_ncmi_bin();
    const char *slash = strrchr(b, '/');
    snprintf(buf, sizeof buf, "%.*s/tools/make_slides", slash ? (int)(slash - b) : 1, slash ? b : ".");
    return access(buf, X_OK) == 0 ? buf : NULL;
}

double fu_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double fu_splitmix01(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

int fu_run_and_kill(const char *cmd, double delay, int *status)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    double t0 = fu_now_s();
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            return 0;
        }
        if (fu_now_s() - t0 >= delay) break;
        usleep(5000);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, &st, 0);
    /* the whole group gone, not only the shell: a process killed in the
     * middle of an fsync finishes dying later, and a rerun started before
     * that would find its temporaries owned by a live process */
    for (int i = 0; i < 2000 && kill(-pid, 0) == 0; i++) usleep(5000);
    *status = -1;
    return 1;
}

/* nftw has no user pointer: the walk's state lives here */
static const char *cmp_ref, *cmp_dir;
static const char *const *cmp_skip;
static int cmp_n, cmp_bad;
static char *cmp_first;
static size_t cmp_first_n;
static long long walk_bytes;

/* drop the last column (seconds) of every line, in place */
static void drop_last_column(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        char *eol = strchr(r, '\n');
        if (!eol) eol = r + strlen(r);
        char *comma = r;
        for (char *q = r; q < eol; q++)
            if (*q == ',') comma = q;
        size_t keep = (size_t)(comma - r);
        memmove(w, r, keep);
        w += keep;
        *w++ = '\n';
        r = *eol ? eol + 1 : eol;
    }
    *w = 0;
}

static int cmp_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag != FTW_F) return 0;
    const char *rel = path + strlen(cmp_ref);
    const char *base = strrchr(path, '/') + 1;
    if (strstr(base, "_status") || !strcmp(base, "missing_slides.csv")) return 0;
    for (int i = 0; cmp_skip && cmp_skip[i]; i++)
        if (strstr(rel, cmp_skip[i])) return 0;
    char other[8192];
    snprintf(other, sizeof other, "%s%s", cmp_dir, rel);
    size_t na, nb;
    char *a = fu_slurp(path, &na), *b = fu_slurp(other, &nb);
    int same = a && b;
    if (same && !strcmp(base, "log.csv")) {
        drop_last_column(a);
        drop_last_column(b);
        same = !strcmp(a, b);
    } else if (same) {
        same = na == nb && !memcmp(a, b, na);
    }
    cmp_n++;
    if (!same) {
        if (!cmp_bad && cmp_first)
            snprintf(cmp_first, cmp_first_n, "%s%s", rel, b ? " differs" : " missing");
        cmp_bad++;
    }
    free(a);
    free(b);
    return 0;
}

int fu_tree_compare(const char *ref, const char *dir, const char *const *skip, int *n_compared, char *first, size_t n)
{
    cmp_ref = ref;
    cmp_dir = dir;
    cmp_skip = skip;
    cmp_n = cmp_bad = 0;
    cmp_first = first;
    cmp_first_n = n;
    if (first && n) first[0] = 0;
    nftw(ref, cmp_one, 16, FTW_PHYS);
    if (n_compared) *n_compared = cmp_n;
    return cmp_bad;
}

static int count_tmp(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_F && strstr(path + ftw->base, ".tmp.")) {
        if (!cmp_bad && cmp_first) snprintf(cmp_first, cmp_first_n, "%s", path);
        cmp_bad++;
    }
    return 0;
}

int fu_tree_count_tmp(const char *dir, char *first, size_t n)
{
    cmp_bad = 0;
    cmp_first = first;
    cmp_first_n = n;
    if (first && n) first[0] = 0;
    nftw(dir, count_tmp, 16, FTW_PHYS);
    return cmp_bad;
}

static int add_bytes(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F) walk_bytes += (sb->st_size + 4095) / 4096 * 4096;
    return 0;
}

long long fu_tree_bytes(const char *dir)
{
    walk_bytes = 0;
    nftw(dir, add_bytes, 16, FTW_PHYS);
    return walk_bytes;
}

int fu_run_peak(const char *cmd, char **out, double *peak_mb, int *sig)
{
    char tmpl[] = "/tmp/ncmi-fu-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) return -1;
    unlink(tmpl);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0)
        ;
    if (peak_mb) *peak_mb = (double)ru.ru_maxrss / 1024.0;
    if (sig) *sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    if (out) {
        off_t len = lseek(fd, 0, SEEK_END);
        *out = malloc((size_t)len + 1);
        if (*out) {
            ssize_t r = pread(fd, *out, (size_t)len, 0);
            (*out)[r > 0 ? r : 0] = 0;
        }
    }
    close(fd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
