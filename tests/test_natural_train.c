/* ResNets as `ncmi train` models (natural/resnet_model.h, model.kind
 * resnet18|34|50|101) and issue 8's MNIST acceptance:
 *  - configs/mnist_resnet18_{ce,ncmi}.yaml (a CIFAR-stem ResNet-18 at width
 *    16 on the fixture's 10,000 MNIST images, 7,000 train / 1,000 val /
 *    2,000 test) each reach >= 98% test accuracy on CPU in a few minutes, from
 *    the command line (the full recipes: ~1.5 and ~2 minutes on 2 cores);
 *  - the checkpoint of a ResNet-18 with a linear head is a torchvision
 *    state_dict: tests/reference/interop_load_resnet.py loads it into
 *    torchvision.models.resnet18 with strict=True and predicts the run's test
 *    images as ncmi did (skipped, visibly, without python3-torchvision);
 *  - batchnorm: running statistics and counters updated by training only;
 *  - --resume of a ResNet run is bit-identical;
 *  - the paper's recipes (configs/cifar100_*, configs/imagenet_*) are valid
 *    configs, and training them without the data names the missing folder;
 *  - the paper's CIFAR-100 recipe trains on a generated file in the real
 *    binary layout, and the ImageNet recipe on a generated folder of JPEGs
 *    (reduced width and sizes), and learns them;
 *  - config errors (a ResNet on non-image data, wrong in_channels, ...).
 * The MNIST tests skip (visibly) without the fixture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../natural/imagefolder.h"
#include "../natural/resnet_model.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/safetensors.h"
#include "test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mnist_dir(char *buf, size_t n)
{
    snprintf(buf, n, "%s/mnist", test_fixtures_dir());
    char p[1200];
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", buf);
    return test_file_nonempty(p);
}

#define NEED_BINARY()                                                                              \
    do {                                                                                           \
        struct stat st_;                                                                           \
        if (stat(test_ncmi_bin(), &st_) != 0) SKIP("%s not built", test_ncmi_bin());              \
    } while (0)

/* Train a config on MNIST into <tmp>/runs_natural/<name>; returns the exit code.
 * OpenMP threads sleep at barriers instead of spinning (OMP_WAIT_POLICY=passive
 * unless the environment says otherwise): on a 2-core machine shared with
 * other jobs, spinning made a 2-thread run 3-4x slower than with it (and than
 * 1 thread); on an idle machine both take the same time (docs/training.md). */
static int train_mnist(const char *config, const char *name, const char *extra, char *dir, size_t n,
                       double *seconds, char **out)
{
    char mn[1024], cmd[4096];
    mnist_dir(mn, sizeof mn);
    snprintf(dir, n, "%s/runs_natural/%s", test_tmpdir(), name);
    const char *wp = getenv("OMP_WAIT_POLICY");
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=%s '%s' train --config %s --out %s/runs_natural --set name=%s --set data.root=%s %s",
             wp && *wp ? wp : "passive", test_ncmi_bin(), config, test_tmpdir(), name, mn, extra ? extra : "");
    double t0 = now_s();
    int rc = test_run(cmd, out);
    if (seconds) *seconds = now_s() - t0;
    return rc;
}

/* 1 when /usr/bin/python3 has torch and torchvision */
static int have_torchvision(void)
{
    static int have = -1;
    if (have < 0) have = test_run("/usr/bin/python3 -c 'import torch, torchvision, numpy' 2>&1", NULL) == 0;
    return have;
}

/* tests/reference/interop_load_resnet.py on a run: 0 ok; its output in *out */
static int torchvision_check(const char *arch, const char *dir, char **out)
{
    char mn[1024];
    mnist_dir(mn, sizeof mn);
    char cmd[3200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/reference/interop_load_resnet.py %s %s %s 2>&1", arch,
             dir, mn);
    return test_run(cmd, out);
}

/* value of a 0-d/1-element tensor of a checkpoint (I64 counters or F32) */
static double st_scalar(const nn_safetensors *st, const char *name)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e) return NAN;
    if (e->dtype == NN_ST_I64) {
        int64_t v = 0;
        return nn_st_read_i64(st, name, &v, 1) == 0 ? (double)v : NAN;
    }
    float v = 0;
    return nn_st_read_f32(st, name, &v, 1, -1, NULL) == 0 ? v : NAN;
}

/* ---- the model ---- */

static tr_model *abort_m;
static void forward_flat(void *ctx)
{
    (void)ctx;
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new2(g, 2, 784);
    abort_m->forward(abort_m, g, &x, 1, 0, NULL, NULL);
}

TEST(natural_resnet_tr_model)
{
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    rn_config c = {.arch = RN_ARCH_18, .cifar_stem = 1, .n_stages = 4, .width = 8, .in_channels = 1};
    tr_model m;
    REQUIRE(rn_tr_model_init(&m, &c, &rng) == 0, "%s", ncmi_error());
    rn_model *r = rn_tr_model_resnet(&m);
    REQUIRE(r != NULL, "rn_tr_model_resnet");
    EXPECT(m.dim == 64 && !strcmp(m.classifier, "fc") && m.gpu_ok == 1 && m.params == &r->P,
           "dim %d classifier '%s' gpu_ok %d", m.dim, m.classifier, m.gpu_ok);
    EXPECT(!strcmp(m.desc, "resnet18 (CIFAR stem, width 8, 1 input channel), z 64"), "desc '%s'", m.desc);
    EXPECT(nn_params_get(m.params, "fc.weight") == NULL, "the model has its own fc");

    nn_tensor *x = nn_tensor_new4(NULL, 4, 1, 28, 28);
    nn_rng_fill_normal(&rng, x->data, x->numel, 1.f, 2.f);
    nn_tensor *rv = nn_params_get(m.params, "layer2.0.bn1.running_var");
    nn_tensor *nb = nn_params_get(m.params, "bn1.num_batches_tracked");
    REQUIRE(rv && nb, "batchnorm buffers missing");
    /* eval: running statistics used, not changed */
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    nn_tensor *aux = x; /* must be cleared */
    nn_tensor *z = m.forward(&m, g, &x, 1, 0, NULL, &aux);
    EXPECT(z->ndim == 2 && z->shape[0] == 4 && z->shape[1] == 64 && aux == NULL, "eval z / aux");
    EXPECT(rv->data[0] == 1.f && nb->data[0] == 0.f, "eval forward changed the running statistics");
    nn_graph_free(g);
    /* training: batch statistics, running statistics updated (momentum 0.1) */
    g = nn_graph_new();
    z = m.forward(&m, g, &x, 1, 1, &rng, NULL);
    EXPECT(z->shape[1] == 64 && rv->data[0] != 1.f && nb->data[0] == 1.f,
           "training forward: running_var %g, num_batches_tracked %g", rv->data[0], nb->data[0]);
    nn_graph_free(g);
    nn_tensor_free(x);

    char msg[2048];
    abort_m = &m;
    EXPECT(test_aborts(forward_flat, NULL, "expected images [N, 1, H, W]", msg, sizeof msg),
           "flat input did not abort with a clear message: %s", msg);
    tr_model_free(&m);

    c.num_classes = 10;
    EXPECT(rn_tr_model_init(&m, &c, &rng) == -1 && strstr(ncmi_error(), "fc"), "num_classes 10: %s",
           ncmi_error());
}

/* ---- MNIST acceptance ---- */

TEST(natural_train_mnist_resnet18_ce_98)
{
    NEED_BINARY();
    char mn[1024], dir[1024], p[1200], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    double sec;
    /* make test SANITIZE=1: 1 epoch of the 6, the accuracy floor left to the optimised suite */
    const int san = test_sanitized(), epochs = san ? 1 : 6;
    int rc = train_mnist("configs/mnist_resnet18_ce.yaml", "mnist_resnet18_ce", san ? "--set train.epochs=1" : NULL, dir,
                         sizeof dir, &sec, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "resnet18 (CIFAR stem, width 16, 1 input channel), z 128") &&
               strstr(out, "7000 train / 1000 val / test 2000"),
           "banner:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/metrics_test.json", dir);
    double acc = test_json_number(p, "accuracy"), ep = test_json_number(p, "epoch");
    printf("    MNIST ResNet-18 (width 16) + linear/CE: test accuracy %.4f (epoch %.0f of %d); %.1f s\n", acc, ep,
           epochs, sec);
    if (san)
        printf("    sanitizer build: 1 epoch, accuracy >= 0.98 not asserted (make test asserts it)\n");
    else
        EXPECT(acc >= 0.98, "CE test accuracy %.4f < 0.98", acc);
    /* the recipe's goal (under 5 minutes on 2 cores) is printed, not asserted:
     * speed is claimed by benchmarks, and a shared CI machine is no stopwatch */
    if (!san) printf("    goal < 300 s on 2 free cores: %s (%.1f s)\n", sec < 300 ? "met" : "NOT met", sec);

    /* the checkpoint: torchvision names and shapes; batchnorm buffers trained */
    snprintf(p, sizeof p, "%s/last.safetensors", dir);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *fc = nn_st_find(&st, "fc.weight"), *c1 = nn_st_find(&st, "conv1.weight");
    EXPECT(fc && fc->ndim == 2 && fc->shape[0] == 10 && fc->shape[1] == 128, "fc.weight");
    EXPECT(c1 && c1->ndim == 4 && c1->shape[0] == 16 && c1->shape[1] == 1 && c1->shape[2] == 3, "conv1.weight");
    /* 6 (sanitizer build: 1) epochs of ceil(7000 / 64) = 110 steps */
    double nbt = st_scalar(&st, "layer4.1.bn2.num_batches_tracked");
    EXPECT(nbt == 110 * epochs, "layer4.1.bn2.num_batches_tracked %g, want %d", nbt, 110 * epochs);
    EXPECT(st_scalar(&st, "bn1.running_var") != 1.0, "bn1.running_var never updated");
    nn_st_close(&st);

    /* ncmi eval --run rebuilds the ResNet and predicts the same */
    rc = test_ncmi(&out, "eval --run %s", dir);
    EXPECT(rc == 0 && out && strstr(out, "2000 samples"), "eval --run: exit %d\n%s", rc, out ? out : "");
    free(out);
    snprintf(p, sizeof p, "%s/metrics_test.json", dir);
    EXPECT(test_json_number(p, "accuracy") == acc, "eval --run accuracy %.4f vs %.4f at training", test_json_number(p, "accuracy"),
           acc);

    /* into torchvision (conv1 3x3 from 1 channel, no maxpool, stages at width 16) */
    if (!have_torchvision()) {
        SKIP("/usr/bin/python3 with torch and torchvision not available: the torchvision load (strict) "
             "was not run");
    }
    rc = torchvision_check("resnet18", dir, &out);
    EXPECT(rc == 0, "interop_load_resnet.py: exit %d\n%s", rc, out ? out : "");
    if (out) printf("    %s", out);
    free(out);
}

TEST(natural_train_mnist_resnet18_ncmi_98)
{
    NEED_BINARY();
    char mn[1024], dir[1024], p[1200], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    double sec;
    /* make test SANITIZE=1: 1 epoch of the 6 and 2 of the probe's 20, the accuracy floors left to the
       optimised suite */
    const int san = test_sanitized();
    int rc = train_mnist("configs/mnist_resnet18_ncmi.yaml", "mnist_resnet18_ncmi",
                         san ? "--set train.epochs=1 --set lp.epochs=2" : NULL, dir, sizeof dir, &sec, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "head ncmi"), "banner:\n%s", out);
    free(out);
    double a[3];
    const char *methods[3] = {"cc", "learned", "lp"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/metrics_test_%s.json", dir, methods[k]);
        a[k] = test_json_number(p, "accuracy");
    }
    snprintf(p, sizeof p, "%s/metrics_test.json", dir);
    double ep = test_json_number(p, "epoch");
    printf("    MNIST ResNet-18 (width 16) + NCMI: test accuracy CC %.4f, learned centroids %.4f, LP %.4f "
           "(epoch %.0f of %d); %.1f s\n",
           a[0], a[1], a[2], ep, san ? 1 : 6, sec);
    if (san) {
        printf("    sanitizer build: 1 epoch, accuracy >= 0.98 not asserted (make test asserts it)\n");
    } else {
        EXPECT(a[0] >= 0.98, "NCMI-CC test accuracy %.4f < 0.98", a[0]);
        EXPECT(a[2] >= 0.98, "NCMI-LP test accuracy %.4f < 0.98", a[2]);
    }
    /* the recipe's goal (under 5 minutes on 2 cores) is printed, not asserted:
     * speed is claimed by benchmarks, and a shared CI machine is no stopwatch */
    if (!san) printf("    goal < 300 s on 2 free cores: %s (%.1f s)\n", sec < 300 ? "met" : "NOT met", sec);
    snprintf(p, sizeof p, "%s/best.safetensors", dir);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *xi = nn_st_find(&st, "ncmi.xi");
    EXPECT(xi && xi->shape[0] == 10 && xi->shape[1] == 128, "ncmi.xi");
    EXPECT(!nn_st_find(&st, "fc.weight") && nn_st_find(&st, "layer4.1.conv2.weight"), "tensors");
    nn_st_close(&st);
}

/* torchvision's resnet18 at width 64 (ImageNet stem; only conv1 takes 1
 * channel): a short run on a few MNIST images, loaded strictly */
TEST(natural_train_resnet18_torchvision_strict)
{
    NEED_BINARY();
    char mn[1024], dir[1024], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    if (!have_torchvision())
        SKIP("/usr/bin/python3 with torch and torchvision not available: the torchvision load (strict) was not run");
    int rc = train_mnist("configs/mnist_resnet18_ce.yaml", "tv_resnet18",
                         "--set model.width=64 --set model.cifar_stem=false --set train.epochs=2 "
                         "--set train.batch_size=32 --set optim.lr=0.02 --set data.n_train=256 "
                         "--set data.n_val=64 --set data.n_test=128 --set train.threads=1",
                         dir, sizeof dir, NULL, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "resnet18 (ImageNet stem, 1 input channel), z 512"), "banner:\n%s", out);
    free(out);
    rc = torchvision_check("resnet18", dir, &out);
    EXPECT(rc == 0 && out && strstr(out, "loaded strictly"), "interop_load_resnet.py: exit %d\n%s", rc,
           out ? out : "");
    if (out) printf("    %s", out);
    free(out);
}

/* --resume of a ResNet run: weights, batchnorm buffers and counters, the
 * optimizer and the RNG as an uninterrupted run */
TEST(natural_train_resnet_resume_bit_identical)
{
    NEED_BINARY();
    char mn[1024], d1[1024], d2[1024], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    const char *small = "--set model.width=4 --set data.n_train=192 --set data.n_val=64 --set data.n_test=64 "
                        "--set train.threads=1";
    char ex[512];
    snprintf(ex, sizeof ex, "%s --set train.epochs=2", small);
    int rc = train_mnist("configs/mnist_resnet18_ce.yaml", "resume_full", ex, d1, sizeof d1, NULL, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    free(out);
    snprintf(ex, sizeof ex, "%s --set train.epochs=1", small);
    rc = train_mnist("configs/mnist_resnet18_ce.yaml", "resume_half", ex, d2, sizeof d2, NULL, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    free(out);
    snprintf(ex, sizeof ex, "%s --set train.epochs=2 --resume", small);
    rc = train_mnist("configs/mnist_resnet18_ce.yaml", "resume_half", ex, d2, sizeof d2, NULL, &out);
    REQUIRE(rc == 0 && out && strstr(out, "resum"), "resume: exit %d\n%s", rc, out ? out : "");
    free(out);
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/last.safetensors", d1);
    snprintf(pb, sizeof pb, "%s/last.safetensors", d2);
    nn_safetensors a, b;
    REQUIRE(nn_st_open(&a, pa) == 0, "%s", ncmi_error());
    if (nn_st_open(&b, pb) != 0) {
        nn_st_close(&a);
        REQUIRE(0, "%s", ncmi_error());
    }
    EXPECT(a.n == b.n, "%d vs %d tensors", a.n, b.n);
    int differ = 0, counters = 0;
    for (int i = 0; i < a.n; i++) {
        const nn_st_entry *ea = &a.entries[i], *eb = nn_st_find(&b, ea->name);
        if (strstr(ea->name, "num_batches_tracked")) counters++;
        if (!eb || ea->nbytes != eb->nbytes || memcmp(a.data + ea->offset, b.data + eb->offset, ea->nbytes)) {
            if (differ++ < 5) test_fail_at(__FILE__, __LINE__, "tensor %s differs after --resume", ea->name);
        }
    }
    EXPECT(counters == 20, "%d batchnorm counters in the checkpoint, resnet18 has 20", counters);
    nn_st_close(&a);
    nn_st_close(&b);
}

/* ---- the paper's recipes and config checks ---- */

TEST(natural_train_paper_configs)
{
    NEED_BINARY();
    static const char *const archs[] = {"resnet18", "resnet34", "resnet50", "resnet101"};
    int n = 0;
    for (int set = 0; set < 2; set++)
        for (int a = set; a < 4; a++)
            for (int h = 0; h < 2; h++) {
                if (set == 1 && a < 2) continue; /* ImageNet: resnet50, resnet101 */
                char cfg[256], *out = NULL;
                snprintf(cfg, sizeof cfg, "configs/%s_%s_%s.yaml", set ? "imagenet" : "cifar100", archs[a],
                         h ? "ncmi" : "ce");
                int rc = test_ncmi(&out, "train --config %s --print-config", cfg);
                EXPECT(rc == 0, "%s: exit %d\n%s", cfg, rc, out ? out : "");
                if (rc == 0 && out) {
                    char want[64];
                    snprintf(want, sizeof want, "  kind: %s\n", archs[a]);
                    EXPECT(strstr(out, want), "%s: model.kind", cfg);
                    EXPECT(strstr(out, h ? "  kind: ncmi\n" : "  kind: linear\n"), "%s: head", cfg);
                    if (set == 0)
                        EXPECT(strstr(out, "  kind: cifar100\n") && strstr(out, "  cifar_stem: true\n") &&
                                   strstr(out, "  milestones: [60, 120, 160]\n") && strstr(out, "  gamma: 0.2\n") &&
                                   strstr(out, "  epochs: 200\n") && strstr(out, "  weight_decay: 0.0005\n") &&
                                   strstr(out, "  augment: cifar\n"),
                               "%s: CIFAR-100 recipe:\n%s", cfg, out);
                    else
                        EXPECT(strstr(out, "  kind: imagenet\n") && strstr(out, "  cifar_stem: false\n") &&
                                   strstr(out, "  lr: 0.5\n") && strstr(out, "  batch_size: 1024\n") &&
                                   strstr(out, "  kind: cosine\n") && strstr(out, "  eval_size: 280\n") &&
                                   strstr(out, "  weight_decay: 5.0e-05\n"),
                               "%s: ImageNet recipe:\n%s", cfg, out);
                }
                free(out);
                n++;
            }
    EXPECT(n == 12, "%d recipes", n);
    /* without the data: a clear message naming the folder, exit 2, no run folder */
    char *out = NULL;
    int rc = test_ncmi(&out, "train --config configs/cifar100_resnet18_ce.yaml --out %s/runs_paper", test_tmpdir());
    EXPECT(rc == 2 && out && strstr(out, "data/cifar-100-binary: no CIFAR-100 binary files here"),
           "cifar100: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config configs/imagenet_resnet50_ncmi.yaml --out %s/runs_paper", test_tmpdir());
    EXPECT(rc == 2 && out && strstr(out, "imagenet/train"),
           "imagenet: exit %d\n%s", rc, out ? out : "");
    free(out);
    char p[1024];
    snprintf(p, sizeof p, "%s/runs_paper", test_tmpdir());
    struct stat sb;
    EXPECT(stat(p, &sb) != 0, "%s created by a run that could not start", p);
}

/* class k: a bright channel k % 3 (and brighter for k >= 3), noise elsewhere */
static void fake_image(uint8_t *px, int h, int w, int k, unsigned *seed)
{
    for (int i = 0; i < h * w; i++)
        for (int c = 0; c < 3; c++) {
            int v = (int)(rand_r(seed) % 60);
            if (c == k % 3) v += 120 + 40 * (k / 3);
            px[(size_t)i * 3 + c] = (uint8_t)(v > 255 ? 255 : v);
        }
}

TEST(natural_train_cifar100_file_and_imagenet_folder)
{
    /* CIFAR-100 binary layout: coarse label, fine label, 3072 bytes R, G, B planes */
    char root[1024], cmd[4096];
    snprintf(root, sizeof root, "%s/c100", test_tmpdir());
    mkdir(root, 0777);
    unsigned seed = 7;
    const char *files[2] = {"train.bin", "test.bin"};
    const int counts[2] = {1000, 200};
    for (int f = 0; f < 2; f++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", root, files[f]);
        FILE *fp = fopen(path, "wb");
        REQUIRE(fp, "cannot write %s", path);
        for (int i = 0; i < counts[f]; i++) {
            uint8_t rec[3074], px[32 * 32 * 3];
            int k = (int)(rand_r(&seed) % 4);
            fake_image(px, 32, 32, k, &seed);
            rec[0] = (uint8_t)(k / 2);
            rec[1] = (uint8_t)k;
            for (int c = 0; c < 3; c++)
                for (int q = 0; q < 1024; q++) rec[2 + c * 1024 + q] = px[q * 3 + c];
            fwrite(rec, 1, sizeof rec, fp);
        }
        fclose(fp);
    }
    char *out = NULL;
    /* make test SANITIZE=1: 1 epoch of each recipe, the accuracy floors left to the optimised suite */
    const int san = test_sanitized();
    int rc = test_ncmi(&out, "train --config configs/cifar100_resnet18_ce.yaml --set data.root=%s --set model.width=8 "
                             "--set train.epochs=%d --set train.batch_size=50 --set schedule.milestones=[4] "
                             "--out %s/runs_c100 --force 2>&1",
                       root, san ? 1 : 5, test_tmpdir());
    REQUIRE(rc == 0, "cifar100 recipe on a generated file: exit %d\n%s", rc, out ? out : "");
    EXPECT(strstr(out, "900 train / 100 val / test 200"), "split:\n%s", out);
    free(out);
    char mj[1200];
    snprintf(mj, sizeof mj, "%s/runs_c100/cifar100_resnet18_ce/metrics_test.json", test_tmpdir());
    double acc = test_json_number(mj, "accuracy");
    printf("    CIFAR-100 layout, 4 colour classes, ResNet-18 width 8, %d epochs: test accuracy %.3f%s\n", san ? 1 : 5,
           acc, san ? " (sanitizer build: accuracy not asserted)" : "");
    if (!san) EXPECT(acc >= 0.8, "generated CIFAR-100 file not learnt: test accuracy %.3f", acc);

    /* ImageNet layout: train/CLASS/NAME.JPEG and val/CLASS/NAME.JPEG, several sizes */
    char in[1024];
    snprintf(in, sizeof in, "%s/inet", test_tmpdir());
    const char *cls[3] = {"n01", "n02", "n03"};
    for (int sp = 0; sp < 2; sp++)
        for (int k = 0; k < 3; k++) {
            char d[1200];
            snprintf(d, sizeof d, "%s/%s/%s", in, sp ? "val" : "train", cls[k]);
            snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
            REQUIRE(system(cmd) == 0, "mkdir %s", d);
            for (int i = 0; i < (sp ? 6 : 30); i++) {
                int w = 40 + (i % 3) * 8, h = 36 + (i % 2) * 10;
                uint8_t *px = malloc((size_t)w * h * 3);
                fake_image(px, h, w, k, &seed);
                char p[1400];
                snprintf(p, sizeof p, "%s/img_%02d.JPEG", d, i);
                REQUIRE(nat_image_write(p, px, w, h, 3, 90) == 0, "%s", ncmi_error());
                free(px);
            }
        }
    rc = test_ncmi(&out, "train --config configs/imagenet_resnet50_ce.yaml --set data.root=%s --set model.kind=resnet18 "
                         "--set model.width=8 --set data.train_size=32 --set data.eval_size=32 --set data.eval_resize=36 "
                         "--set train.epochs=%d --set train.batch_size=15 --set optim.lr=0.02 --set schedule.warmup_epochs=0 "
                         "--set data.val_fraction=0 "
                         "--out %s/runs_in --force 2>&1",
                   in, san ? 1 : 8, test_tmpdir());
    REQUIRE(rc == 0, "imagenet recipe on a generated folder: exit %d\n%s", rc, out ? out : "");
    char *imagenet_log = out;
    snprintf(mj, sizeof mj, "%s/runs_in/imagenet_resnet50_ce/metrics_test.json", test_tmpdir());
    acc = test_json_number(mj, "accuracy");
    printf("    ImageNet layout, 3 classes of JPEGs, ResNet-18 width 8 at 32 px, %d epochs: test accuracy %.3f%s\n",
           san ? 1 : 8, acc, san ? " (sanitizer build: accuracy not asserted)" : "");
    if (!san) EXPECT(acc >= 0.8, "generated ImageNet folder not learnt (chance 1/3): test accuracy %.3f\n%s", acc, imagenet_log);
    free(imagenet_log);
}

TEST(natural_train_config_errors)
{
    NEED_BINARY();
    static const struct { const char *sets, *want; } cases[] = {
        {"--set model.kind=resnet18", "resnet18 needs images"},
        {"--set model.kind=resnet50 --set data.kind=mnist", "'model.in_channels': 3, but mnist images have 1 channel"},
        {"--set model.kind=resnet18 --set data.kind=cifar10 --set model.in_channels=1",
         "'model.in_channels': 1, but cifar10 images have 3 channels"},
        {"--set data.kind=mnist --set data.augment=cifar", "'data.augment': cifar is for cifar10, cifar100 and imagenet"},
        {"--set model.kind=resnet18 --set data.kind=bags", "resnet18 needs images"},
        {"--set model.kind=resnet152", "resnet101"},
        {"--set data.kind=cifar1000", "cifar100"},
        {"--set model.width=0", "model.width"},
        {"--set data.val_fraction=1", "data.val_fraction"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc = test_ncmi(&out, "train %s --print-config", cases[i].sets);
        EXPECT(rc == 2 && out && strstr(out, cases[i].want), "%s: exit %d, want '%s' in\n%s", cases[i].sets, rc,
               cases[i].want, out ? out : "");
        free(out);
    }
}
