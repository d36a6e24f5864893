/* Faults on the output side: a full disk and a read-only output folder, for
 * tile, features, train, eval, score and report.
 *
 * Full disk: the outputs go to a small tmpfs mounted in the test's temporary
 * folder, filled beforehand (a filler file) so that only a given share of
 * what the command writes fits: the disk fills mid-write. Each command must
 * exit non-zero (no crash, not 0) with a message naming a file on that disk
 * and the problem (ENOSPC), leave no temporary file and no final file that
 * differs from a run that never failed (no truncated output); once the filler
 * is removed, a rerun must complete and give the same files as a run that
 * never failed.
 *
 * Read-only: the same commands with the output folder on a tmpfs remounted
 * read-only (root ignores permission bits): non-zero exit, a message naming
 * the folder and the problem, and the inputs unchanged.
 *
 * Mounting needs root (or a user namespace: without root the test reruns
 * itself under `unshare -rm`); where neither works the tests skip with the
 * reason. Every mount is unmounted at the end of the test and at exit. */
/* paths here are short; snprintf truncation is checked where it matters */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fault_util.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* mounts                                                              */

static char mounted[8][1024];
static int n_mounted;

static void unmount_all(void)
{
    while (n_mounted > 0) {
        n_mounted--;
        if (umount2(mounted[n_mounted], 0) != 0) umount2(mounted[n_mounted], MNT_DETACH);
    }
}

static void unmount_one(const char *dir)
{
    for (int i = n_mounted - 1; i >= 0; i--)
        if (!strcmp(mounted[i], dir)) {
            if (umount2(dir, 0) != 0) umount2(dir, MNT_DETACH);
            memmove(mounted[i], mounted[i + 1], (size_t)(n_mounted - i - 1) * sizeof mounted[0]);
            n_mounted--;
            return;
        }
}

/* a tmpfs of `bytes` at dir (created; must lie in the test's temporary
 * folder): 0, or -1 with the reason in why */
static int mount_tmpfs(const char *dir, long long bytes, char *why, size_t n)
{
    static int registered;
    if (strncmp(dir, test_tmpdir(), strlen(test_tmpdir())) != 0) {
        snprintf(why, n, "%s: not in the test's temporary folder", dir);
        return -1;
    }
    if (n_mounted == 8) {
        snprintf(why, n, "too many mounts");
        return -1;
    }
    if (!registered) {
        atexit(unmount_all); /* runs before the temporary folder is removed */
        registered = 1;
    }
    mkdir(dir, 0777);
    char opt[64];
    snprintf(opt, sizeof opt, "size=%lld,mode=0777", bytes);
    if (mount("tmpfs", dir, "tmpfs", 0, opt) != 0) {
        snprintf(why, n, "mount -t tmpfs -o %s tmpfs %s: %s", opt, dir, strerror(errno));
        return -1;
    }
    snprintf(mounted[n_mounted++], sizeof mounted[0], "%s", dir);
    return 0;
}

static int remount_ro(const char *dir, char *why, size_t n)
{
    if (mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0) {
        snprintf(why, n, "mount -o remount,ro %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* 1: mounting works here, go on; 0: the test was skipped, or ran in a user
 * namespace (unshare -rm) as a child and its result was recorded */
static int need_mount(const char *test_name)
{
    char why[1024], probe[1024];
    snprintf(probe, sizeof probe, "%s/mount_probe", test_tmpdir());
    if (mount_tmpfs(probe, 1 << 20, why, sizeof why) == 0) {
        unmount_one(probe);
        return 1;
    }
    if (getenv("NCMI_FAULTS_IN_USERNS") || system("unshare -rm true >/dev/null 2>&1") != 0) {
        test_skip("cannot mount a tmpfs (%s) and no user namespace (unshare -rm)", why);
        return 0;
    }
    char cmd[8192], exe[4096], *out = NULL;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1); /* /proc/<pid>/exe is not readable from the namespace */
    exe[len > 0 ? len : 0] = 0;
    snprintf(cmd, sizeof cmd, "NCMI_FAULTS_IN_USERNS=1 unshare -rm '%s' %s", exe, test_name);
    int rc = test_run(cmd, &out);
    printf("    (in a user namespace: %s)\n%s", why, out ? out : "");
    EXPECT(rc == 0 && out && strstr(out, "1 passed"), "under unshare -rm: exit %d", rc);
    free(out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the cohort every fault test starts from (built once per process)    */

typedef struct {
    char dir[1024];
    char man[1100], two[1100];      /* 8 slides; 2 of them */
    char tile[1100], feat[1100];    /* ncmi tile / features outputs (8 slides) */
    char weights[1200];             /* the encoder features used */
    char config[1100], runs[1100];  /* training config; runs/<name> */
    char run[1200];
    int ready;
} faults_cohort;
static faults_cohort FC;

#define NCMI_ENV "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive "

static int faults_prepare(void)
{
    if (FC.ready) return FC.ready > 0 ? 0 : -1;
    FC.ready = -1;
    const char *ms = fu_make_slides_bin();
    if (!ms) {
        test_skip("build/tools/make_slides not built (make test builds it)");
        return -1;
    }
    snprintf(FC.dir, sizeof FC.dir, "%s", test_tmp_path("faults"));
    mkdir(FC.dir, 0777);
    const char *d = FC.dir;
    snprintf(FC.man, sizeof FC.man, "%s/slides/manifest.csv", d);
    snprintf(FC.two, sizeof FC.two, "%s/slides/two.csv", d);
    snprintf(FC.tile, sizeof FC.tile, "%s/tile", d);
    snprintf(FC.feat, sizeof FC.feat, "%s/feat", d);
    snprintf(FC.weights, sizeof FC.weights, "%s/encoder_random_1.safetensors", FC.feat);
    snprintf(FC.config, sizeof FC.config, "%s/abmil.yaml", d);
    snprintf(FC.runs, sizeof FC.runs, "%s/runs", d);
    snprintf(FC.run, sizeof FC.run, "%s/faults_abmil_ce", FC.runs);
    char cmd[16384], *out = NULL;
    double t0 = fu_now_s();
    snprintf(cmd, sizeof cmd,
             "%s --cohort --n 8 --width 1600 --height 1200 --seed 7 --quiet --out %s/slides && "
             "head -3 %s > %s && " NCMI_ENV "%s tile --manifest %s --out %s --target-mpp 2.0 --patch-size 64 && " NCMI_ENV
             "%s features --coords %s --manifest %s --out %s --encoder resnet18 --weights random:1 --input-size 32 "
             "--batch 16 --device cpu",
             ms, d, FC.man, FC.two, test_ncmi_bin(), FC.man, FC.tile, test_ncmi_bin(), FC.tile, FC.man, FC.feat);
    int rc = test_run(cmd, &out);
    if (rc != 0) {
        test_fail_at(__FILE__, __LINE__, "preparing the cohort: exit %d: %s", rc, out ? out : "");
        free(out);
        return -1;
    }
    free(out);
    char yaml[8192], cwd[1024];
    if (!getcwd(cwd, sizeof cwd) || !fu_exists("configs/synthetic_abmil_ce.yaml")) {
        test_skip("run from the repository root (configs/ needed)");
        return -1;
    }
    snprintf(yaml, sizeof yaml,
             "name: faults_abmil_ce\nseed: 0\ndata:\n  kind: bags\n  features: %s/features\n  manifest: %s\n"
             "  split_column: split\n  classes: [negative, itc, micro, macro]\n  standardize: true\n"
             "model:\n  kind: abmil\nmil:\n  d_inner: 32\n  attn_hidden: 16\nhead:\n  kind: linear\nloss:\n  kind: ce\n"
             "optim:\n  name: adamw\n  lr: 2.0e-3\ntrain:\n  epochs: 4\n  batch_size: 1\n  threads: 1\n"
             "eval:\n  split: test\nout: runs\n",
             FC.feat, FC.man);
    fu_write_text(FC.config, yaml);
    rc = test_ncmi(&out, "train --config %s --out %s", FC.config, FC.runs);
    if (rc != 0) {
        test_fail_at(__FILE__, __LINE__, "training the reference run: exit %d: %s", rc, out ? out : "");
        free(out);
        return -1;
    }
    free(out);
    printf("    cohort of 8 slides generated, tiled, encoded, trained in %.1f s\n", fu_now_s() - t0);
    FC.ready = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* the commands under test                                             */

/* One command writing into OUT (a folder that does not exist yet, except
 * for eval, whose run folder is copied there first). */
typedef struct {
    const char *name;
    char cmd[8192];      /* printf format with one %s: OUT */
    char prepare[4096];  /* shell command run with OUT as $1 before the command (or empty) */
    const char *skip[4]; /* files whose bytes legitimately vary from run to run (times) */
    const char *partial_skip[6]; /* and those a failed run legitimately leaves different */
    int ref_rc;          /* exit status of the run that never failed */
} fcmd;

static void fcmd_init(fcmd *c, const char *name)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    const char *b = test_ncmi_bin();
    if (!strcmp(name, "tile")) {
        snprintf(c->cmd, sizeof c->cmd, NCMI_ENV "%s tile --manifest %s --out %%s --target-mpp 2.0 --patch-size 64",
                 b, FC.two);
    } else if (!strcmp(name, "features")) {
        snprintf(c->cmd, sizeof c->cmd,
                 NCMI_ENV "%s features --coords %s --manifest %s --out %%s --encoder resnet18 --weights %s "
                          "--input-size 32 --batch 16 --device cpu",
                 b, FC.tile, FC.two, FC.weights);
    } else if (!strcmp(name, "train")) {
        /* a run folder with a checkpoint is continued (--resume), as the design says */
        snprintf(c->cmd, sizeof c->cmd,
                 "R=; [ -f %%s/faults_abmil_ce/last.safetensors ] && R=--resume; " NCMI_ENV
                 "%s train --config %s --out %%s $R",
                 b, FC.config);
        /* the run folder's state, rewritten every epoch (each file whole): compared after the rerun */
        c->partial_skip[0] = "last.safetensors";
        c->partial_skip[1] = "best.safetensors";
        c->partial_skip[2] = "log.csv";
    } else if (!strcmp(name, "eval")) {
        snprintf(c->cmd, sizeof c->cmd, NCMI_ENV "%s eval --run %%s/run --split val", b);
        snprintf(c->prepare, sizeof c->prepare, "mkdir -p \"$1\" && cp -a %s \"$1/run\"", FC.run);
    } else if (!strcmp(name, "score")) {
        snprintf(c->cmd, sizeof c->cmd, NCMI_ENV "%s score --manifest %s --run %s --out %%s --device cpu --top-k 4",
                 b, FC.two, FC.run);
        c->skip[0] = ".score.json"; /* times */
        c->skip[1] = ".html";
        c->partial_skip[0] = ".score.json";
        c->partial_skip[1] = ".html";
        c->partial_skip[2] = "score_predictions.csv"; /* lists the slides that failed, by design */
    } else if (!strcmp(name, "report")) {
        snprintf(c->cmd, sizeof c->cmd, NCMI_ENV "mkdir -p %%s && %s report table3 --runs %s --out %%s/table3", b,
                 FC.runs);
    }
}

static int fcmd_run(const fcmd *c, const char *out_dir, char **out)
{
    char cmd[20000];
    int rc;
    if (c->prepare[0]) {
        snprintf(cmd, sizeof cmd, "set -- '%s'; %s", out_dir, c->prepare);
        rc = test_run(cmd, NULL);
        if (rc != 0) {
            *out = strdup("prepare failed");
            return -2;
        }
    }
    /* the format holds one or two %s, both OUT */
    char body[16384];
    snprintf(body, sizeof body, c->cmd, out_dir, out_dir);
    return test_run(body, out);
}

/* the run that never failed, in <faults>/ref_<name> (once per process) */
static int fcmd_reference(fcmd *c, char *ref, size_t n)
{
    snprintf(ref, n, "%s/ref_%s", FC.dir, c->name);
    char *out = NULL;
    char stamp[1200];
    snprintf(stamp, sizeof stamp, "%s/ref_%s.rc", FC.dir, c->name);
    char *prev = fu_slurp(stamp, NULL);
    if (prev) {
        c->ref_rc = atoi(prev);
        free(prev);
        return 0;
    }
    int rc = fcmd_run(c, ref, &out);
    if (rc != 0 && !(rc == 3 && !strcmp(c->name, "report"))) {
        test_fail_at(__FILE__, __LINE__, "%s (reference run): exit %d: %s", c->name, rc, out ? out : "");
        free(out);
        return -1;
    }
    free(out);
    c->ref_rc = rc;
    char num[16];
    snprintf(num, sizeof num, "%d", rc);
    fu_write_text(stamp, num);
    return 0;
}

/* every .json file under a tree parses (a truncated one does not) */
static int json_bad;
static char json_first[1200];
static int json_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t l = strlen(path);
    if (flag != FTW_F || l < 5 || strcmp(path + l - 5, ".json")) return 0;
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) {
        if (!json_bad) snprintf(json_first, sizeof json_first, "%s: %s", path, e.text);
        json_bad++;
    }
    json_decref(j);
    return 0;
}

/* files of a failed run's output folder that are neither the finished
 * run's nor (eval: the run folder copied in beforehand) what was there
 * before: torn or truncated outputs */
static const char *pw_out, *pw_ref, *pw_before; /* pw_before: the folder copied to <out>/run */
static const char *const *pw_skip;
static int pw_n, pw_bad;
static char pw_first[1400];

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = fu_slurp(a, &na), *y = fu_slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int partial_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag != FTW_F) return 0;
    const char *rel = path + strlen(pw_out);
    if (strstr(rel, "_status")) return 0;
    for (int i = 0; pw_skip && pw_skip[i]; i++)
        if (strstr(rel, pw_skip[i])) return 0;
    char other[4096];
    snprintf(other, sizeof other, "%s%s", pw_ref, rel);
    pw_n++;
    if (same_file(path, other)) return 0;
    if (pw_before && !strncmp(rel, "/run/", 5)) {
        snprintf(other, sizeof other, "%s%s", pw_before, rel + 4);
        if (same_file(path, other)) return 0;
    }
    if (!pw_bad) snprintf(pw_first, sizeof pw_first, "%s", rel);
    pw_bad++;
    return 0;
}

static int partial_check(const char *out, const char *ref, const char *before, const char *const *skip, int *n)
{
    pw_out = out;
    pw_ref = ref;
    pw_before = before;
    pw_skip = skip;
    pw_n = pw_bad = 0;
    pw_first[0] = 0;
    nftw(out, partial_one, 16, FTW_PHYS);
    *n = pw_n;
    return pw_bad;
}

/* the error message: names a path under `where`, and `problem`; not a crash */
static void check_message(const char *what, int rc, int ref_rc, const char *out, const char *where,
                          const char *problem)
{
    EXPECT(rc != 0 && rc != ref_rc && rc < 128 && rc != -1, "%s: exit %d (want a failure, not %d, not a signal)", what,
           rc, ref_rc);
    EXPECT(out && strstr(out, "ncmi: "), "%s: no 'ncmi: ' message: %s", what, out ? out : "");
    EXPECT(out && strstr(out, where), "%s: the message does not name %s: %s", what, where, out ? out : "");
    EXPECT(out && strstr(out, problem), "%s: the message does not say '%s': %s", what, problem, out ? out : "");
}

/* ------------------------------------------------------------------ */
/* full disk                                                           */

/* leave `leave` bytes free on the tmpfs at mnt (a filler file takes the rest) */
static int fill_to(const char *mnt, long long leave)
{
    struct statvfs v;
    if (statvfs(mnt, &v) != 0) return -1;
    long long avail = (long long)v.f_bavail * (long long)v.f_frsize;
    long long fill = avail - leave;
    if (fill <= 0) return 0;
    char p[1200];
    snprintf(p, sizeof p, "%s/filler", mnt);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    int rc = posix_fallocate(fd, 0, (off_t)fill);
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* One command on a full disk, for each share of its output that fits. */
static void disk_full_case(const char *test_name, const char *name, const double *shares, int n_shares)
{
    if (!need_mount(test_name)) return;
    if (faults_prepare() != 0) return;
    fcmd c;
    fcmd_init(&c, name);
    char ref[1200];
    if (fcmd_reference(&c, ref, sizeof ref) != 0) return;
    long long bytes = fu_tree_bytes(ref);
    char mnt[1200], why[1400], outd[1300], first[1200];
    snprintf(mnt, sizeof mnt, "%s/full_%s", FC.dir, name);
    /* room for the output twice over, and the eval run copied in first */
    REQUIRE(mount_tmpfs(mnt, 2 * bytes + (4 << 20), why, sizeof why) == 0, "%s", why);
    snprintf(outd, sizeof outd, "%s/out", mnt);
    /* the run that never failed, at the same path (files record their own path) */
    char *out = NULL;
    int rc = fcmd_run(&c, outd, &out);
    REQUIRE(rc == c.ref_rc, "%s on an empty disk: exit %d: %s", name, rc, out ? out : "");
    free(out);
    char cmd0[4096];
    snprintf(ref, sizeof ref, "%s/ref_%s_same_path", FC.dir, name);
    snprintf(cmd0, sizeof cmd0, "rm -rf %s && cp -a %s %s && rm -rf %s", ref, outd, ref, outd);
    REQUIRE(test_run(cmd0, NULL) == 0, "%s", cmd0);
    char prepare[4096];
    snprintf(prepare, sizeof prepare, "%s", c.prepare);
    c.prepare[0] = 0; /* done below, before the disk fills */
    for (int k = 0; k < n_shares; k++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "rm -rf %s/out %s/filler", mnt, mnt);
        test_run(cmd, NULL);
        long long pre = 0;
        if (prepare[0]) {
            /* eval: the run folder is there before the disk fills */
            snprintf(cmd, sizeof cmd, "set -- '%s'; %s", outd, prepare);
            EXPECT(test_run(cmd, NULL) == 0, "%s", cmd);
            pre = fu_tree_bytes(outd);
        }
        long long leave = (long long)(shares[k] * (double)(bytes - pre)) / 4096 * 4096;
        EXPECT(fill_to(mnt, leave) == 0, "cannot fill %s", mnt);
        rc = fcmd_run(&c, outd, &out);
        char what[256];
        snprintf(what, sizeof what, "%s, %.0f %% of %lld bytes free", name, 100 * shares[k], bytes - pre);
        check_message(what, rc, c.ref_rc, out, mnt, "No space left on device");
        if (test_failed()) printf("    %s output:\n%s\n", what, out ? out : "");
        free(out);
        /* no temporary left, no final file that differs from the reference */
        int tmp = fu_tree_count_tmp(outd, first, sizeof first);
        EXPECT(tmp == 0, "%s: %d temporary files left (first: %s)", what, tmp, first);
        int n = 0, bad = partial_check(outd, ref, prepare[0] ? FC.run : NULL, c.partial_skip, &n);
        EXPECT(bad == 0, "%s: %d of the %d files there are neither the finished run's nor the earlier ones (first: %s)",
               what, bad, n, pw_first);
        json_bad = 0;
        nftw(outd, json_one, 16, FTW_PHYS);
        EXPECT(json_bad == 0, "%s: %d truncated JSON files (first: %s)", what, json_bad, json_first);
        if (!strcmp(name, "train")) {
            /* the epochs logged so far are those of the run that never failed */
            char a[1400], b2[1400];
            snprintf(a, sizeof a, "%s/faults_abmil_ce/log.csv", outd);
            snprintf(b2, sizeof b2, "%s/faults_abmil_ce/log.csv", ref);
            char *la = fu_slurp(a, NULL), *lb = fu_slurp(b2, NULL);
            if (la && lb) {
                int lines = 0, same = 1;
                for (char *pa = la, *pb = lb; *pa && same; lines++) {
                    /* up to the last comma (the seconds column differs) */
                    char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
                    if (!ea || !eb) break;
                    char *ca = ea, *cb = eb;
                    while (ca > pa && *ca != ',') ca--;
                    while (cb > pb && *cb != ',') cb--;
                    same = ca - pa == cb - pb && !memcmp(pa, pb, (size_t)(ca - pa));
                    pa = ea + 1;
                    pb = eb + 1;
                }
                EXPECT(same, "%s: log.csv of the failed run is not a prefix of the uninterrupted one's", what);
            }
            free(la);
            free(lb);
        }
        /* space freed: the rerun completes as if nothing had happened */
        snprintf(cmd, sizeof cmd, "%s/filler", mnt);
        unlink(cmd);
        rc = fcmd_run(&c, outd, &out);
        EXPECT(rc == c.ref_rc, "%s: rerun after freeing space: exit %d: %s", what, rc, out ? out : "");
        free(out);
        bad = fu_tree_compare(ref, outd, c.skip, &n, first, sizeof first);
        EXPECT(n > 0 && bad == 0, "%s: rerun: %d of %d files differ from the run that never failed (first: %s)", what,
               bad, n, first);
        tmp = fu_tree_count_tmp(outd, first, sizeof first);
        EXPECT(tmp == 0, "%s: rerun: %d temporary files left (first: %s)", what, tmp, first);
        printf("    %-8s %3.0f %% of %7lld bytes free: failed as it should; rerun: %d files identical\n", name,
               100 * shares[k], bytes - pre, n);
    }
    unmount_one(mnt);
}

static const double default_shares[] = {0.0, 0.5};
static const double long_shares[] = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};

TEST(faults_disk_full_tile) { disk_full_case("faults_disk_full_tile", "tile", default_shares, 2); }
TEST(faults_disk_full_features) { disk_full_case("faults_disk_full_features", "features", default_shares, 2); }
TEST(faults_disk_full_train) { disk_full_case("faults_disk_full_train", "train", default_shares, 2); }
TEST(faults_disk_full_eval) { disk_full_case("faults_disk_full_eval", "eval", default_shares, 2); }
TEST(faults_disk_full_score) { disk_full_case("faults_disk_full_score", "score", default_shares, 2); }
TEST(faults_disk_full_report) { disk_full_case("faults_disk_full_report", "report", default_shares, 2); }

/* every tenth of the output: the disk fills in every phase of each command */
TEST(long_faults_disk_full_every_tenth)
{
    const char *names[6] = {"tile", "features", "train", "eval", "score", "report"};
    for (int i = 0; i < 6; i++) disk_full_case("long_faults_disk_full_every_tenth", names[i], long_shares, 10);
}

/* ------------------------------------------------------------------ */
/* read-only output folder                                             */

TEST(faults_readonly_output)
{
    if (!need_mount("faults_readonly_output")) return;
    if (faults_prepare() != 0) return;
    const char *names[6] = {"tile", "features", "train", "eval", "score", "report"};
    char snap[1200], cmd[8192], why[1400], first[1200];
    /* the inputs as they were */
    snprintf(snap, sizeof snap, "%s/inputs_before", FC.dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp -a %s/slides %s %s %s %s/", snap, snap, FC.dir, FC.tile,
             FC.feat, FC.runs, snap);
    REQUIRE(test_run(cmd, NULL) == 0, "%s", cmd);
    for (int i = 0; i < 6; i++) {
        fcmd c;
        fcmd_init(&c, names[i]);
        char ref[1200];
        if (fcmd_reference(&c, ref, sizeof ref) != 0) continue;
        char mnt[1200], outd[1300];
        snprintf(mnt, sizeof mnt, "%s/ro_%s", FC.dir, names[i]);
        REQUIRE(mount_tmpfs(mnt, 64 << 20, why, sizeof why) == 0, "%s", why);
        snprintf(outd, sizeof outd, "%s/out", mnt);
        /* the output folder exists (eval: with the run in it), then the disk turns read-only */
        if (c.prepare[0]) {
            snprintf(cmd, sizeof cmd, "set -- '%s'; %s", outd, c.prepare);
            EXPECT(test_run(cmd, NULL) == 0, "%s", cmd);
            c.prepare[0] = 0;
        } else {
            mkdir(outd, 0777);
        }
        char run_copy[1300];
        snprintf(run_copy, sizeof run_copy, "%s/ro_eval_run_before", FC.dir);
        if (!strcmp(names[i], "eval")) {
            snprintf(cmd, sizeof cmd, "rm -rf %s && cp -a %s/run %s", run_copy, outd, run_copy);
            test_run(cmd, NULL);
        }
        REQUIRE(remount_ro(mnt, why, sizeof why) == 0, "%s", why);
        char *out = NULL;
        int rc = fcmd_run(&c, outd, &out);
        char what[256];
        snprintf(what, sizeof what, "%s, read-only output folder", names[i]);
        check_message(what, rc, c.ref_rc, out, outd, "Read-only file system");
        const char *line = out ? strstr(out, "Read-only") : NULL;
        while (line && line > out && line[-1] != '\n') line--;
        printf("    %-8s read-only: exit %d: %.*s\n", names[i], rc, line ? (int)strcspn(line, "\n") : 0,
               line ? line : "");
        free(out);
        if (!strcmp(names[i], "eval")) {
            int n = 0, bad;
            snprintf(cmd, sizeof cmd, "%s/run", outd);
            bad = fu_tree_compare(run_copy, cmd, NULL, &n, first, sizeof first);
            EXPECT(n > 3 && bad == 0, "eval: the run folder changed: %d of %d files (first: %s)", bad, n, first);
        }
        unmount_one(mnt);
    }
    /* nothing lost in the inputs */
    const char *subs[4] = {"slides", "tile", "feat", "runs"};
    for (int s = 0; s < 4; s++) {
        char a[1300], b[1300];
        snprintf(a, sizeof a, "%s/%s", snap, subs[s]);
        snprintf(b, sizeof b, "%s/%s", FC.dir, subs[s]);
        int n = 0, bad = fu_tree_compare(a, b, NULL, &n, first, sizeof first);
        EXPECT(n > 0 && bad == 0, "input %s changed: %d of %d files (first: %s)", subs[s], bad, n, first);
    }
}

/* the sweep of killed writers' temporaries: a dead pid's goes, a live one's stays */
#include "../nn/tmpfile.h"
TEST(faults_tmp_sweep_dead_writers_only)
{
    char d[1200], p[1300], a[1300], b[1300], c[1300], e[1300];
    snprintf(d, sizeof d, "%s/sweep", test_tmpdir());
    mkdir(d, 0777);
    snprintf(p, sizeof p, "%s/x.h5", d);
    /* a pid that cannot be running: above pid_max */
    snprintf(a, sizeof a, "%s/x.h5.tmp.%d", d, 99999999);
    snprintf(b, sizeof b, "%s/x.h5.tmp.%d.png", d, 99999998);
    snprintf(c, sizeof c, "%s/x.h5.tmp.%ld", d, (long)getppid());
    snprintf(e, sizeof e, "%s/y.h5.tmp.%d", d, 99999999);
    fu_write_text(p, "x");
    fu_write_text(a, "a");
    fu_write_text(b, "b");
    fu_write_text(c, "c");
    fu_write_text(e, "e");
    ncmi_tmp_sweep(p);
    EXPECT(!fu_exists(a) && !fu_exists(b), "a dead writer's temporaries left");
    EXPECT(fu_exists(c), "a live process's temporary removed");
    EXPECT(fu_exists(e) && fu_exists(p), "another file's temporary or the file itself removed");
}
