/* Bag datasets (mil/bags.h): splits, labels, bad input, the cache bound,
 * read-ahead giving the same results as none. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../features/features_h5.h"
#include "../mil/bags.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "mil_synth.h"
#include "test.h"

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* A small cohort in a fresh folder: 12 bags, D 8, 3 classes, 6/3/3. */
static const char *small_cohort(const char *name)
{
    const char *dir = test_tmp_path("%s", name);
    mil_synth s = {3, 8, 3, 12, 6, 3, 3, 3.f, 7};
    if (mil_synth_write(dir, &s)) return NULL;
    return dir;
}

static int open_dir(const char *dir, const char *manifest, mil_bags_opts *o, tr_dataset *tr, tr_dataset *va,
                    tr_dataset *te, mil_bags_info *info)
{
    static char fdir[4200], man[4200];
    snprintf(fdir, sizeof fdir, "%s/features", dir);
    snprintf(man, sizeof man, "%s/%s", dir, manifest ? manifest : "manifest.csv");
    o->features_dir = fdir;
    o->manifest = man;
    return mil_bags_open(o, tr, va, te, info);
}

static void free3(tr_dataset *a, tr_dataset *b, tr_dataset *c)
{
    tr_dataset_free(a);
    tr_dataset_free(b);
    tr_dataset_free(c);
}

TEST(mil_bags_splits_and_inputs)
{
    if (!features_h5_available()) SKIP("built without libhdf5");
    const char *dir = small_cohort("bags_splits");
    REQUIRE(dir, "cannot write the cohort");
    /* a row without a split is left out */
    FILE *f = fopen(test_tmp_path("bags_splits/manifest.csv"), "a");
    REQUIRE(f, "manifest");
    fprintf(f, "s000x,negative,\n");
    fclose(f);
    mil_bags_opts o;
    mil_bags_opts_default(&o);
    tr_dataset tr, va, te;
    mil_bags_info info;
    REQUIRE(open_dir(dir, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
    EXPECT(tr.n == 6 && va.n == 3 && te.n == 3, "splits %d/%d/%d", tr.n, va.n, te.n);
    EXPECT(tr.bags == 1 && info.d_feat == 8 && info.C == 3 && info.n_unsplit == 1, "bags %d d %d C %d unsplit %d",
           tr.bags, info.d_feat, info.C, info.n_unsplit);
    /* sorted distinct labels: macro, micro, negative */
    EXPECT(!strcmp(info.classes[0], "macro") && !strcmp(info.classes[2], "negative"), "classes %s %s %s",
           info.classes[0], info.classes[1], info.classes[2]);
    EXPECT(!strcmp(tr.sample_id(&tr, 1), "s001") && !strcmp(te.sample_id(&te, 0), "s009"), "ids %s %s",
           tr.sample_id(&tr, 1), te.sample_id(&te, 0));
    EXPECT(tr.labels[0] == 2 && tr.labels[1] == 1 && tr.labels[2] == 0, "labels %d %d %d", tr.labels[0],
           tr.labels[1], tr.labels[2]);
    /* the input tensor is the bag as written */
    features_h5 h;
    REQUIRE(features_h5_read(&h, test_tmp_path("bags_splits/features/s010.h5"), 0) == 0, "%s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *x;
    int one = 1;
    REQUIRE(te.inputs(&te, g, &one, 1, 1, NULL, &x) == 1, "%s", ncmi_error());
    EXPECT(x->ndim == 2 && x->shape[0] == h.n && x->shape[1] == 8, "shape [%d, %d]", x->shape[0], x->shape[1]);
    EXPECT(memcmp(x->data, h.features, (size_t)h.n * 8 * sizeof(float)) == 0, "bag data differ");
    int two[2] = {0, 1};
    EXPECT(te.inputs(&te, g, two, 2, 1, NULL, &x) < 0, "two bags at once accepted");
    features_h5_free(&h);
    nn_graph_free(g);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    /* the class list of the config sets the order; a label outside it is an error naming the slide */
    char *cls[3] = {"negative", "micro", "macro"};
    o.classes = cls;
    o.n_classes = 3;
    REQUIRE(open_dir(dir, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
    EXPECT(tr.labels[0] == 0 && tr.labels[1] == 1 && tr.labels[2] == 2, "labels %d %d %d", tr.labels[0],
           tr.labels[1], tr.labels[2]);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    o.n_classes = 2;
    EXPECT(open_dir(dir, NULL, &o, &tr, &va, &te, &info) < 0, "label outside the class list accepted");
    EXPECT(strstr(ncmi_error(), "slide s002") && strstr(ncmi_error(), "label 'macro' is not in the class list"),
           "message: %s", ncmi_error());
    /* no such split column */
    o.n_classes = 0;
    o.split_column = "fold3";
    EXPECT(open_dir(dir, NULL, &o, &tr, &va, &te, &info) < 0 && strstr(ncmi_error(), "no column 'fold3'"),
           "message: %s", ncmi_error());
}

TEST(mil_bags_bad_input)
{
    if (!features_h5_available()) SKIP("built without libhdf5");
    const char *dir = small_cohort("bags_bad");
    REQUIRE(dir, "cannot write the cohort");
    mil_bags_opts o;
    mil_bags_opts_default(&o);
    tr_dataset tr, va, te;
    mil_bags_info info;
    char man[4200];
    /* missing (two) and unreadable (one) files: one error listing all three */
    remove(test_tmp_path("bags_bad/features/s003.h5"));
    remove(test_tmp_path("bags_bad/features/s007.h5"));
    REQUIRE(write_text(test_tmp_path("bags_bad/features/s005.h5"), "not hdf5\n") == 0, "write");
    EXPECT(open_dir(dir, NULL, &o, &tr, &va, &te, &info) < 0, "missing files accepted");
    const char *e = ncmi_error();
    EXPECT(strstr(e, "3 feature files missing or unreadable") && strstr(e, "s003 (") && strstr(e, "s007 (") &&
               strstr(e, "s005 (unreadable") && strstr(e, "--skip-missing"),
           "message: %s", e);
    /* skip_missing: a warning naming them, the rows left out */
    FILE *w = tmpfile();
    o.skip_missing = 1;
    o.warn = w;
    REQUIRE(open_dir(dir, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
    EXPECT(tr.n == 4 && va.n == 2 && te.n == 3 && info.n_skipped == 3, "splits %d/%d/%d skipped %d", tr.n, va.n,
           te.n, info.n_skipped);
    char wbuf[4096] = "";
    rewind(w);
    size_t got = fread(wbuf, 1, sizeof wbuf - 1, w);
    wbuf[got] = 0;
    fclose(w);
    EXPECT(strstr(wbuf, "warning: leaving out 3 slides") && strstr(wbuf, "s003") && strstr(wbuf, "s005"),
           "warning: %s", wbuf);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    o.skip_missing = 0;
    o.warn = NULL;

    /* an empty bag */
    const char *d2 = small_cohort("bags_bad2");
    float dummy[8] = {0};
    REQUIRE(features_h5_write(test_tmp_path("bags_bad2/features/s004.h5"), dummy, 0, 8, NULL, NULL) == 0, "%s",
            ncmi_error());
    EXPECT(open_dir(d2, NULL, &o, &tr, &va, &te, &info) < 0, "empty bag accepted");
    EXPECT(strstr(ncmi_error(), "slide s004") && strstr(ncmi_error(), "N = 0"), "message: %s", ncmi_error());
    /* a dimension mismatch */
    float x9[2 * 9] = {0};
    REQUIRE(features_h5_write(test_tmp_path("bags_bad2/features/s004.h5"), x9, 2, 9, NULL, NULL) == 0, "%s",
            ncmi_error());
    EXPECT(open_dir(d2, NULL, &o, &tr, &va, &te, &info) < 0, "dimension mismatch accepted");
    EXPECT(strstr(ncmi_error(), "slide s004") && strstr(ncmi_error(), "dimension 9") &&
               strstr(ncmi_error(), "slide s000 has 8"),
           "message: %s", ncmi_error());
    /* NaN features: an error naming the slide when the bag is read */
    float x8[3 * 8] = {0};
    x8[13] = NAN;
    REQUIRE(features_h5_write(test_tmp_path("bags_bad2/features/s004.h5"), x8, 3, 8, NULL, NULL) == 0, "%s",
            ncmi_error());
    REQUIRE(open_dir(d2, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *x;
    int i4 = 4;
    EXPECT(tr.inputs(&tr, g, &i4, 1, 1, NULL, &x) < 0, "NaN features accepted");
    EXPECT(strstr(ncmi_error(), "slide s004") && strstr(ncmi_error(), "not finite"), "message: %s", ncmi_error());
    /* also when the read-ahead thread met it first (bag 3 read ahead bag 4) */
    int i3 = 3;
    EXPECT(tr.inputs(&tr, g, &i3, 1, 1, NULL, &x) == 1, "%s", ncmi_error());
    EXPECT(tr.inputs(&tr, g, &i4, 1, 1, NULL, &x) < 0 && strstr(ncmi_error(), "slide s004"), "message: %s",
           ncmi_error());
    nn_graph_free(g);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    x8[13] = INFINITY;
    REQUIRE(features_h5_write(test_tmp_path("bags_bad2/features/s004.h5"), x8, 3, 8, NULL, NULL) == 0, "%s",
            ncmi_error());
    REQUIRE(open_dir(d2, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
    g = nn_graph_new();
    EXPECT(tr.inputs(&tr, g, &i4, 1, 1, NULL, &x) < 0 && strstr(ncmi_error(), "slide s004"), "inf: %s",
           ncmi_error());
    nn_graph_free(g);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    /* a split value that is not train/val/test in a custom split column */
    snprintf(man, sizeof man, "%s/m2.csv", d2);
    REQUIRE(write_text(man, "slide_id,label,fold0\ns000,negative,train\ns001,micro,tset\n") == 0, "write");
    o.split_column = "fold0";
    EXPECT(open_dir(d2, "m2.csv", &o, &tr, &va, &te, &info) < 0, "bad split accepted");
    EXPECT(strstr(ncmi_error(), "row 2 (line 3): slide s001: fold0 'tset' is not train, val or test"),
           "message: %s", ncmi_error());
    /* no training rows */
    REQUIRE(write_text(man, "slide_id,label,fold0\ns000,negative,val\ns001,micro,test\n") == 0, "write");
    EXPECT(open_dir(d2, "m2.csv", &o, &tr, &va, &te, &info) < 0 && strstr(ncmi_error(), "no training bags"),
           "message: %s", ncmi_error());
}

/* Reads every bag of d in natural order `rounds` times. */
static int sweep(tr_dataset *d, int rounds, int think_us)
{
    nn_graph *g = nn_graph_new();
    int rc = 0;
    for (int r = 0; r < rounds && !rc; r++) {
        if (d->order) d->order(d, NULL, 0);
        for (int i = 0; i < d->n && !rc; i++) {
            nn_tensor *x;
            if (d->inputs(d, g, &i, 1, 0, NULL, &x) != 1) rc = -1;
            nn_graph_reset(g);
            if (think_us) usleep((useconds_t)think_us); /* the trainer's compute: time to read ahead */
        }
    }
    nn_graph_free(g);
    return rc;
}

TEST(mil_bags_cache_bound)
{
    if (!features_h5_available()) SKIP("built without libhdf5");
    /* 10 bags of exactly 100 x 64 floats (25,600 bytes) */
    const char *dir = test_tmp_path("bags_cache");
    mkdir(dir, 0777);
    mkdir(test_tmp_path("bags_cache/features"), 0777);
    FILE *m = fopen(test_tmp_path("bags_cache/manifest.csv"), "w");
    REQUIRE(m, "manifest");
    fprintf(m, "slide_id,label,split\n");
    float *X = malloc(100 * 64 * sizeof *X);
    for (int i = 0; i < 10; i++) {
        for (int k = 0; k < 100 * 64; k++) X[k] = (float)(i * 1000 + k);
        REQUIRE(features_h5_write(test_tmp_path("bags_cache/features/b%d.h5", i), X, 100, 64, NULL, NULL) == 0,
                "%s", ncmi_error());
        fprintf(m, "b%d,%s,train\n", i, i % 2 ? "a" : "b");
    }
    free(X);
    fclose(m);
    const size_t bag = 100 * 64 * sizeof(float);
    struct {
        double mb;
        int prefetch;
        long loads; /* expected for two sweeps */
    } cases[] = {
        {0, 0, 20},                              /* no cache */
        {3.5 * bag / (1024.0 * 1024.0), 0, 20},  /* 3 bags fit: LRU on a cyclic sweep keeps none useful */
        {10.0 * bag / (1024.0 * 1024.0), 0, 10}, /* all fit */
        {100, 3, 10},                            /* read-ahead: the same loads */
        {3.5 * bag / (1024.0 * 1024.0), 2, -1},  /* read-ahead within a small bound */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mil_bags_opts o;
        mil_bags_opts_default(&o);
        o.cache_mb = cases[c].mb;
        o.prefetch = cases[c].prefetch;
        tr_dataset tr, va, te;
        mil_bags_info info;
        REQUIRE(open_dir(dir, NULL, &o, &tr, &va, &te, &info) == 0, "%s", ncmi_error());
        REQUIRE(sweep(&tr, 2, cases[c].prefetch ? 3000 : 0) == 0, "%s", ncmi_error());
        mil_bags_stats st;
        REQUIRE(mil_bags_get_stats(&tr, &st) == 0, "stats");
        printf("    cache %.3f MiB, prefetch %d: %ld loads (%ld read ahead, %ld waits), %ld hits, peak %zu of %zu "
               "bytes\n",
               cases[c].mb, cases[c].prefetch, st.loads, st.prefetched, st.waits, st.hits, st.peak_bytes,
               st.cap_bytes);
        EXPECT(st.peak_bytes <= st.cap_bytes, "case %zu: peak %zu > bound %zu", c, st.peak_bytes, st.cap_bytes);
        if (cases[c].loads >= 0)
            EXPECT(st.loads == cases[c].loads, "case %zu: %ld loads, expected %ld", c, st.loads, cases[c].loads);
        if (cases[c].prefetch > 0) EXPECT(st.prefetched > 0, "case %zu: nothing read ahead", c);
        if (cases[c].mb == 0) EXPECT(st.peak_bytes == 0, "no cache but %zu bytes held", st.peak_bytes);
        if (c == 2) EXPECT(st.hits == 10, "all cached: %ld hits", st.hits);
        mil_bags_info_free(&info);
        free3(&tr, &va, &te);
    }
}

/* ---- read-ahead gives the same training as none ---- */

typedef struct poolmodel {
    nn_params P;
    nn_linear_m fc;
} poolmodel;

/* Linear(D, 8) + ReLU on each instance, mean over the bag -> z [1, 8] */
static nn_tensor *pool_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in, int training,
                               nn_rng *rng, nn_tensor **aux)
{
    (void)n_in, (void)rng, (void)training, (void)aux;
    poolmodel *s = m->ctx;
    return nn_mean(g, nn_relu(g, nn_linear_m_forward(g, &s->fc, in[0])), 0, 1);
}

/* Trains 4 epochs, 2 bags per step; returns the final weights (malloc'd). */
static float *train_once(const char *dir, double cache_mb, int prefetch, mil_bags_stats *st)
{
    mil_bags_opts o;
    mil_bags_opts_default(&o);
    o.cache_mb = cache_mb;
    o.prefetch = prefetch;
    tr_dataset tr, va, te;
    mil_bags_info info;
    if (open_dir(dir, NULL, &o, &tr, &va, &te, &info)) return NULL;
    poolmodel pm;
    nn_params_init(&pm.P);
    nn_rng ir;
    nn_rng_seed(&ir, 3);
    nn_linear_m_init(&pm.fc, &pm.P, "enc", info.d_feat, 8, 1, &ir);
    tr_model m = {0};
    m.params = &pm.P;
    m.dim = 8;
    m.forward = pool_forward;
    m.ctx = &pm;
    tr_config c;
    tr_config_default(&c);
    c.epochs = 4;
    c.batch_size = 2;
    c.lr = 0.05f;
    c.schedule.base_lr = c.lr;
    c.n_classes = info.C;
    c.class_names = info.classes;
    c.progress = -1;
    tr_trainer t;
    float *w = NULL;
    if (tr_init(&t, &c, &m, &tr, &va, &te, NULL) == 0) {
        if (tr_fit(&t) == 0) {
            size_t n = 0;
            for (int i = 0; i < t.P_all.n; i++) n += (size_t)t.P_all.t[i]->numel;
            w = malloc(n * sizeof *w);
            size_t q = 0;
            for (int i = 0; i < t.P_all.n; i++) {
                nn_tensor *p = t.P_all.t[i];
                memcpy(w + q, p->data, (size_t)p->numel * sizeof *w);
                q += (size_t)p->numel;
            }
        }
        tr_free(&t);
    }
    mil_bags_get_stats(&tr, st);
    nn_params_free(&pm.P);
    mil_bags_info_free(&info);
    free3(&tr, &va, &te);
    return w;
}

TEST(mil_bags_prefetch_same_results)
{
    if (!features_h5_available()) SKIP("built without libhdf5");
    const char *dir = test_tmp_path("bags_pf");
    mil_synth s = {3, 16, 5, 40, 24, 6, 6, 3.f, 11};
    REQUIRE(mil_synth_write(dir, &s) == 0, "cannot write the cohort");
    mil_bags_stats a, b, c;
    float *w0 = train_once(dir, 0, 0, &a);
    REQUIRE(w0, "%s", ncmi_error());
    float *w1 = train_once(dir, 64, 3, &b);
    REQUIRE(w1, "%s", ncmi_error());
    float *w2 = train_once(dir, 0.01, 2, &c); /* a bound of a few bags */
    REQUIRE(w2, "%s", ncmi_error());
    size_t n = 16 * 8 + 8 + 3 * 8 + 3;
    EXPECT(memcmp(w0, w1, n * sizeof *w0) == 0, "weights differ with read-ahead");
    EXPECT(memcmp(w0, w2, n * sizeof *w0) == 0, "weights differ with read-ahead and a small cache");
    printf("    no cache: %ld loads; 64 MiB + read-ahead 3: %ld loads (%ld ahead, %ld hits); 0.01 MiB + read-ahead "
           "2: %ld loads (%ld ahead), peak %zu bytes\n",
           a.loads, b.loads, b.prefetched, b.hits, c.loads, c.prefetched, c.peak_bytes);
    /* how many the thread reads first is timing (the cache test checks that it reads ahead) */
    EXPECT(b.loads == 30 /* train + val, each once */, "read-ahead: %ld loads, %ld ahead", b.loads, b.prefetched);
    EXPECT(c.peak_bytes <= c.cap_bytes, "peak %zu > %zu", c.peak_bytes, c.cap_bytes);
    free(w0);
    free(w1);
    free(w2);
}
