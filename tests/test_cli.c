/* The ncmi binary end to end: help, version, exit codes, config errors, and
 * `ncmi train` writing a run folder and resuming bit-identically. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "test.h"

static int have_binary(void)
{
    struct stat st;
    return stat(test_ncmi_bin(), &st) == 0;
}

TEST(cli_help_lists_commands)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "--help");
    EXPECT(rc == 0, "exit %d", rc);
    const char *cmds[] = {"tile", "features", "train", "eval", "score", "measure", "cohort", "report", "version"};
    for (int i = 0; i < 9; i++) {
        char want[64];
        snprintf(want, sizeof want, "\n  %s ", cmds[i]);
        EXPECT(out && strstr(out, want), "--help does not list %s", cmds[i]);
    }
    EXPECT(out && strstr(out, "--version") && strstr(out, "docs/"), "global options / docs missing:\n%s", out);
    free(out);

    rc = test_ncmi(&out, "%s", "");
    EXPECT(rc == 1 && out && strstr(out, "usage: ncmi"), "no command: exit %d\n%s", rc, out);
    free(out);
    rc = test_ncmi(&out, "help train");
    EXPECT(rc == 0 && out && strstr(out, "usage: ncmi train"), "help train: exit %d", rc);
    free(out);
}

TEST(cli_every_command_has_help)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    const char *cmds[] = {"tile", "features", "train", "eval", "score", "measure", "cohort", "report", "version"};
    for (int i = 0; i < 9; i++) {
        char *out = NULL;
        int rc = test_ncmi(&out, "%s --help", cmds[i]);
        char want[64];
        snprintf(want, sizeof want, "usage: ncmi %s", cmds[i]);
        EXPECT(rc == 0, "%s --help: exit %d", cmds[i], rc);
        EXPECT(out && strstr(out, want), "%s --help:\n%s", cmds[i], out ? out : "");
        free(out);
    }
}

TEST(cli_version)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "version");
    EXPECT(rc == 0, "exit %d", rc);
    EXPECT(out && !strncmp(out, "ncmi ", 5) && !strstr(out, "ncmi unknown"), "version line:\n%s", out);
    EXPECT(out && strstr(out, "CUDA ") && strstr(out, "cuDNN ") && strstr(out, "NCCL ") &&
               strstr(out, "MPI ") && strstr(out, "OpenSlide ") && strstr(out, "libvips ") &&
               strstr(out, "HDF5 "),
           "features missing:\n%s", out);
    EXPECT(out && strstr(out, "OpenBLAS: OpenBLAS"), "OpenBLAS config missing:\n%s", out);
    char *out2 = NULL;
    EXPECT(test_ncmi(&out2, "--version") == 0 && out && out2 && !strcmp(out, out2), "--version differs");
    free(out);
    free(out2);
}

TEST(cli_unknown_command_and_option)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "frobnicate");
    EXPECT(rc == 1, "exit %d", rc);
    EXPECT(out && strstr(out, "ncmi: unknown command 'frobnicate'"), "message:\n%s", out);
    free(out);
    rc = test_ncmi(&out, "train --bogus");
    EXPECT(rc == 1 && out && strstr(out, "ncmi: train: unknown option '--bogus'"), "exit %d\n%s", rc, out);
    free(out);
    rc = test_ncmi(&out, "train --config");
    EXPECT(rc == 1 && out && strstr(out, "ncmi: train: option --config needs a value"), "exit %d\n%s", rc, out);
    free(out);
}

TEST(cli_report_is_built)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "report");
    EXPECT(rc == 1 && out && strstr(out, "ncmi: report: which table? (table3)") && !strstr(out, "not built"),
           "report: exit %d\n%s", rc, out ? out : "");
    free(out);
}

TEST(cli_features_usage)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "features --device cpu");
    EXPECT(rc == 1 && out && strstr(out, "ncmi: features: --out DIR is required"), "exit %d\n%s", rc, out);
    free(out);
    rc = test_ncmi(&out, "features --help");
    EXPECT(rc == 0 && out && strstr(out, "usage: ncmi features --coords DIR") && strstr(out, "--weights"), "exit %d\n%s",
           rc, out);
    free(out);
}

TEST(cli_eval_measure_dispatch)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "eval");
    EXPECT(rc == 1 && out && strstr(out, "ncmi: eval: --predictions CSV is required"), "exit %d\n%s", rc, out);
    free(out);
    rc = test_ncmi(&out, "measure --help");
    EXPECT(rc == 0 && out && strstr(out, "usage: ncmi measure --features"), "exit %d\n%s", rc, out);
    free(out);
    rc = test_ncmi(&out, "eval --predictions /nonexistent/p.csv");
    EXPECT(rc == 2 && out && strstr(out, "/nonexistent/p.csv"), "exit %d\n%s", rc, out);
    free(out);
}

static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", test_tmpdir(), name);
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

TEST(cli_train_config_errors)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char cfg[512], want[800], *out = NULL;
    tmp_path(cfg, sizeof cfg, "cli_bad.yaml");
    write_text(cfg, "name: bad\noptim:\n  name: sgd\n  lrr: 0.1\n");
    int rc = test_ncmi(&out, "train --config %s --out %s/runs", cfg, test_tmpdir());
    snprintf(want, sizeof want, "ncmi: train: %s:4: unknown key 'optim.lrr' (did you mean 'optim.lr'?)", cfg);
    EXPECT(rc == 2, "unknown key: exit %d", rc);
    EXPECT(out && strstr(out, want), "unknown key:\n%s", out ? out : "");
    free(out);

    write_text(cfg, "train:\n  epochs: many\n");
    rc = test_ncmi(&out, "train --config %s", cfg);
    snprintf(want, sizeof want, "ncmi: train: %s:2: key 'train.epochs': expected an integer, got 'many'", cfg);
    EXPECT(rc == 2 && out && strstr(out, want), "wrong type: exit %d\n%s", rc, out ? out : "");
    free(out);

    rc = test_ncmi(&out, "train --set optim.name=rmsprop");
    EXPECT(rc == 2 && out &&
               strstr(out, "ncmi: train: --set: key 'optim.name': expected one of sgd, adamw, adam; got 'rmsprop'"),
           "--set enum: exit %d\n%s", rc, out ? out : "");
    free(out);

    rc = test_ncmi(&out, "train --config %s/nope.yaml", test_tmpdir());
    EXPECT(rc == 2 && out && strstr(out, "nope.yaml") && strstr(out, "No such file"),
           "missing file: exit %d\n%s", rc, out ? out : "");
    free(out);

    rc = test_ncmi(&out, "train --set schedule.kind=multistep --set schedule.milestones=[5,3]");
    EXPECT(rc == 2 && out && strstr(out, "increasing"), "milestones: exit %d\n%s", rc, out ? out : "");
    free(out);
}

TEST(cli_train_help_config_matches_docs)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char *out = NULL;
    int rc = test_ncmi(&out, "train --help-config=md");
    REQUIRE(rc == 0 && out, "exit %d", rc);
    EXPECT(strstr(out, "| `optim.lr` | float, > 0 | `0.1` |") != NULL, "table:\n%s", out);
    FILE *f = fopen("docs/config.md", "r");
    if (!f) {
        free(out);
        SKIP("docs/config.md not found (run from the repository root)");
    }
    char *doc = calloc(1, 1 << 20);
    size_t n = doc ? fread(doc, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    EXPECT(n > 0 && strstr(doc, out) != NULL,
           "docs/config.md is out of date: paste 'ncmi train --help-config=md' into it");
    free(doc);
    free(out);
}

/* Last value of column `col` of a CSV (header row names the columns); number of data rows in *rows. */
static double csv_last(const char *path, const char *col, int *rows)
{
    FILE *f = fopen(path, "r");
    *rows = 0;
    if (!f) return NAN;
    char line[1024];
    int idx = -1;
    double v = NAN;
    if (fgets(line, sizeof line, f)) {
        int i = 0;
        for (char *t = strtok(line, ",\n"); t; t = strtok(NULL, ",\n"), i++)
            if (!strcmp(t, col)) idx = i;
    }
    while (idx >= 0 && fgets(line, sizeof line, f)) {
        int i = 0;
        (*rows)++;
        for (char *t = strtok(line, ",\n"); t; t = strtok(NULL, ",\n"), i++)
            if (i == idx) v = atof(t);
    }
    fclose(f);
    return v;
}

static const char *tiny_config =
    "name: tiny\n"
    "seed: 7\n"
    "data: {kind: synthetic, n_train: 300, n_val: 150, n_classes: 3, dim: 8, separation: 4.0}\n"
    "model: {kind: mlp, hidden: [32]}\n"
    "optim: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}\n"
    "schedule: {kind: multistep, milestones: [4], gamma: 0.5}\n"
    "train: {epochs: 5, batch_size: 16}\n";

TEST(cli_train_writes_run_folder)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char cfg[512], runs[512], p[700], *out = NULL;
    tmp_path(cfg, sizeof cfg, "tiny.yaml");
    tmp_path(runs, sizeof runs, "runs_tiny");
    write_text(cfg, tiny_config);
    int rc = test_ncmi(&out, "train --config %s --out %s", cfg, runs);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "run folder: ") && strstr(out, "runs_tiny/tiny"), "output:\n%s", out);
    free(out);
    const char *files[] = {"config.yaml", "log.csv", "last.safetensors", "best.safetensors"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/tiny/%s", runs, files[i]);
        EXPECT(test_file_nonempty(p), "%s missing", p);
    }
    snprintf(p, sizeof p, "%s/tiny/log.csv", runs);
    int rows;
    double acc = csv_last(p, "val_acc", &rows);
    EXPECT(rows == 5, "log.csv has %d rows, expected 5", rows);
    EXPECT(acc >= 0.9, "final val_acc %.3f < 0.9", acc);
    double lr = csv_last(p, "lr", &rows);
    EXPECT_NEAR(lr, 0.025, 1e-9); /* multistep at epoch 4 (0-based) with gamma 0.5 */

    /* the resolved config reproduces the run's settings */
    snprintf(p, sizeof p, "%s/tiny/config.yaml", runs);
    rc = test_ncmi(&out, "train --config %s --print-config", p);
    EXPECT(rc == 0 && out && strstr(out, "name: tiny\n") && strstr(out, "  milestones: [4]\n") &&
               strstr(out, "  nesterov: true\n"),
           "config.yaml:\n%s", out ? out : "");
    free(out);

    /* the weights are named as the PyTorch module's state_dict */
    snprintf(p, sizeof p, "%s/tiny/best.safetensors", runs);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *w0 = nn_st_find(&st, "layers.0.weight");
    const nn_st_entry *b1 = nn_st_find(&st, "layers.1.bias");
    EXPECT(w0 && w0->ndim == 2 && w0->shape[0] == 32 && w0->shape[1] == 8, "layers.0.weight");
    EXPECT(b1 && b1->ndim == 1 && b1->shape[0] == 3, "layers.1.bias");
    EXPECT(nn_st_meta(&st, "val_acc") != NULL, "best.safetensors lacks val_acc");
    nn_st_close(&st);

    /* a second run into the same folder is refused; --resume with nothing left is a no-op */
    rc = test_ncmi(&out, "train --config %s --out %s", cfg, runs);
    EXPECT(rc == 2 && out && strstr(out, "already holds a run"), "rerun: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --resume", cfg, runs);
    EXPECT(rc == 0 && out && strstr(out, "nothing to do"), "resume finished: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --resume --set train.epochs=6 --set optim.lr=0.01", cfg, runs);
    EXPECT(rc == 0 && out && strstr(out, "differs from the checkpoint's in: optim.lr "),
           "resume with another lr: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s/elsewhere --resume", cfg, runs);
    EXPECT(rc == 2 && out && strstr(out, "no checkpoint to resume"), "resume nothing: exit %d\n%s", rc,
           out ? out : "");
    free(out);
}

/* Every tensor of a is in b with the same dtype, shape and bytes. */
static void expect_same_tensors(const char *pa, const char *pb)
{
    nn_safetensors a, b;
    if (nn_st_open(&a, pa)) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        return;
    }
    if (nn_st_open(&b, pb)) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        nn_st_close(&a);
        return;
    }
    EXPECT(a.n == b.n, "%d vs %d tensors", a.n, b.n);
    int optim_tensors = 0;
    for (int i = 0; i < a.n; i++) {
        const nn_st_entry *ea = &a.entries[i], *eb = nn_st_find(&b, ea->name);
        if (!strncmp(ea->name, "optim.", 6)) optim_tensors++;
        if (!eb) {
            test_fail_at(__FILE__, __LINE__, "%s missing in %s", ea->name, pb);
            continue;
        }
        EXPECT(ea->dtype == eb->dtype && ea->nbytes == eb->nbytes &&
                   !memcmp(a.data + ea->offset, b.data + eb->offset, ea->nbytes),
               "tensor %s differs", ea->name);
    }
    EXPECT(optim_tensors > 0, "no optimizer state in %s", pa);
    const char *ra = nn_st_meta(&a, "rng"), *rb = nn_st_meta(&b, "rng");
    EXPECT(ra && rb && !strcmp(ra, rb), "rng state differs");
    nn_st_close(&a);
    nn_st_close(&b);
}

TEST(cli_train_resume_is_bit_identical)
{
    if (!have_binary()) SKIP("%s not built", test_ncmi_bin());
    char cfg[512], runs[512], pa[700], pb[700], *out = NULL;
    tmp_path(cfg, sizeof cfg, "resume.yaml");
    tmp_path(runs, sizeof runs, "runs_resume");
    write_text(cfg, tiny_config);
    const char *common = "--set optim.name=adamw --set optim.lr=0.01 --set train.clip_grad_norm=1.0 "
                         "--set schedule.milestones=[3]";
    /* straight 4 epochs */
    int rc = test_ncmi(&out, "train --config %s --out %s --set name=straight --set train.epochs=4 %s", cfg,
                  runs, common);
    REQUIRE(rc == 0, "straight: exit %d\n%s", rc, out ? out : "");
    free(out);
    /* 2 epochs, then resume up to 4 */
    rc = test_ncmi(&out, "train --config %s --out %s --set name=split --set train.epochs=2 %s", cfg, runs,
              common);
    REQUIRE(rc == 0, "first half: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --set name=split --set train.epochs=4 %s --resume", cfg,
              runs, common);
    REQUIRE(rc == 0, "resume: exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "after epoch 2"), "resume message:\n%s", out ? out : "");
    EXPECT(out && !strstr(out, "warning"), "resume warned:\n%s", out ? out : "");
    free(out);

    snprintf(pa, sizeof pa, "%s/straight/last.safetensors", runs);
    snprintf(pb, sizeof pb, "%s/split/last.safetensors", runs);
    expect_same_tensors(pa, pb);
    snprintf(pa, sizeof pa, "%s/straight/log.csv", runs);
    snprintf(pb, sizeof pb, "%s/split/log.csv", runs);
    int ra, rb;
    double va = csv_last(pa, "val_loss", &ra), vb = csv_last(pb, "val_loss", &rb);
    EXPECT(ra == 4 && rb == 4, "log rows %d and %d", ra, rb);
    EXPECT(va == vb, "final val_loss %.9g vs %.9g", va, vb);
}
