/* Readers (CSV, manifest, predictions, features HDF5) and the `ncmi eval` /
 * `ncmi measure` entry points on generated files, the musk1 fixture, and
 * every bad input of issue 3 (exit code + a message naming file and row). */
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../eval/cmi.h"
#include "../cli/cli.h"
#include "../eval/json_io.h"
#include "../eval/csv.h"
#include "../eval/manifest.h"
#include "../eval/metrics.h"
#include "../eval/predictions.h"
#include "../features/features_h5.h"
#include "../nn/error.h"
#include "test.h"

#if NCMI_HAVE_HDF5
#include <hdf5.h>
#endif

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    return b;
}

/* Runs an entry point with stdout and stderr captured; returns its exit code. */
typedef struct {
    int rc;
    char *out, *err;
} cmd_result;

static cmd_result run_entry(int (*fn)(int, char **), const char *a0, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)a0;
    va_list ap;
    va_start(ap, a0);
    const char *a;
    while ((a = va_arg(ap, const char *)) && argc < 31) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char po[600], pe[600]; /* not from tmp_path's rotating buffers */
    snprintf(po, sizeof po, "%s/stdout.txt", test_tmpdir());
    snprintf(pe, sizeof pe, "%s/stderr.txt", test_tmpdir());
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    ncmi_error_clear();
    cmd_result r;
    r.rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    r.out = slurp(po);
    r.err = slurp(pe);
    return r;
}

static void free_result(cmd_result *r)
{
    free(r->out);
    free(r->err);
}

/* ---------------- CSV ---------------- */

TEST(csv_quoting_bom_crlf)
{
    char *p = test_tmp_path("q.csv");
    write_text(p, "\xEF\xBB\xBFslide_id,label,note\r\n"
                  "s1,\"a, b\",\"say \"\"hi\"\"\"\r\n"
                  "\r\n"
                  "s2,c,\"two\nlines\"\n"
                  "s3,,5\"x\n");
    eval_csv r;
    REQUIRE(eval_csv_open(&r, p) == 0, "%s", ncmi_error());
    REQUIRE(eval_csv_next(&r) == 1 && r.nfields == 3, "header");
    EXPECT(strcmp(r.fields[0], "slide_id") == 0, "BOM not skipped: '%s'", r.fields[0]);
    EXPECT(strcmp(r.fields[2], "note") == 0, "CR kept: '%s'", r.fields[2]);
    REQUIRE(eval_csv_next(&r) == 1 && r.nfields == 3, "row 1: %d fields", r.nfields);
    EXPECT(strcmp(r.fields[1], "a, b") == 0 && strcmp(r.fields[2], "say \"hi\"") == 0, "quoted: '%s' '%s'",
           r.fields[1], r.fields[2]);
    REQUIRE(eval_csv_next(&r) == 1 && r.nfields == 3, "row 2");
    EXPECT(strcmp(r.fields[2], "two\nlines") == 0 && r.line == 4, "embedded newline: '%s', line %d", r.fields[2],
           r.line);
    REQUIRE(eval_csv_next(&r) == 1 && r.nfields == 3, "row 3");
    EXPECT(r.line == 6 && r.fields[1][0] == 0 && strcmp(r.fields[2], "5\"x") == 0, "row 3: line %d '%s'", r.line,
           r.fields[2]);
    EXPECT(eval_csv_next(&r) == 0, "end of file");
    eval_csv_close(&r);

    write_text(p, "a,b\n1,\"open\n2,3\n");
    REQUIRE(eval_csv_open(&r, p) == 0, "%s", ncmi_error());
    EXPECT(eval_csv_next(&r) == 1, "header");
    EXPECT(eval_csv_next(&r) == -1 && strstr(ncmi_error(), p) && strstr(ncmi_error(), "unterminated"),
           "unterminated quote: %s", ncmi_error());
    eval_csv_close(&r);
    EXPECT(eval_csv_open(&r, test_tmp_path("nope.csv")) == -1 && strstr(ncmi_error(), "nope.csv"), "missing file");
}

/* ---------------- manifest ---------------- */

TEST(manifest_read_and_errors)
{
    char *p = test_tmp_path("man.csv");
    write_text(p, "label,path,slide_id,mpp,split,fold,extra\n"
                  "tumor,slides/a.svs,A,0.25,train,0,x\n"
                  "\"normal, benign\",/abs/b.svs,B,,test,,\"q,r\"\n"
                  "tumor,,C,0.5,,3,\n");
    eval_manifest m;
    REQUIRE(eval_manifest_read(&m, p) == 0, "%s", ncmi_error());
    REQUIRE(m.n == 3, "%d rows", m.n);
    EXPECT(strcmp(m.rows[1].label, "normal, benign") == 0 && strcmp(m.rows[1].slide_id, "B") == 0, "row B");
    EXPECT(m.rows[0].mpp == 0.25 && isnan(m.rows[1].mpp) && m.rows[2].fold == 3 && m.rows[1].fold == -1, "mpp/fold");
    EXPECT(m.rows[2].split == NULL && strcmp(m.rows[0].split, "train") == 0 && m.rows[1].case_id == NULL, "split");
    EXPECT(strcmp(eval_manifest_get(&m, 1, "extra"), "q,r") == 0 && eval_manifest_get(&m, 0, "nope") == NULL, "get");
    EXPECT(eval_manifest_find(&m, "C") == 2 && eval_manifest_find(&m, "Z") == -1, "find");
    char *sp = eval_manifest_slide_path(&m, 0), *sp2 = eval_manifest_slide_path(&m, 1);
    char want[700];
    snprintf(want, sizeof want, "%s/slides/a.svs", test_tmpdir());
    EXPECT(sp && strcmp(sp, want) == 0, "relative path resolved to %s", sp ? sp : "(null)");
    EXPECT(sp2 && strcmp(sp2, "/abs/b.svs") == 0, "absolute path %s", sp2 ? sp2 : "(null)");
    EXPECT(eval_manifest_slide_path(&m, 2) == NULL && strstr(ncmi_error(), "row 3"), "no path: %s", ncmi_error());
    free(sp);
    free(sp2);
    char **cl;
    int C;
    REQUIRE(eval_manifest_classes(&m, NULL, &cl, &C) == 0, "%s", ncmi_error());
    EXPECT(C == 2 && strcmp(cl[0], "normal, benign") == 0 && strcmp(cl[1], "tumor") == 0, "classes");
    int y[3];
    EXPECT(eval_manifest_labels(&m, NULL, cl, C, y) == 0 && y[0] == 1 && y[1] == 0 && y[2] == 1, "labels");
    /* a label outside the class list: file and row named */
    char *only[1] = {"tumor"};
    EXPECT(eval_manifest_labels(&m, NULL, only, 1, y) == -1 && strstr(ncmi_error(), p) &&
               strstr(ncmi_error(), "row 2 (line 3)") && strstr(ncmi_error(), "normal, benign"),
           "label outside the class list: %s", ncmi_error());
    for (int c = 0; c < C; c++) free(cl[c]);
    free(cl);
    eval_manifest_free(&m);

    struct {
        const char *text, *needle;
    } bad[] = {
        {"slide_id,path\nA,a.svs\n", "missing column 'label'"},
        {"label,slide_id\nx,A\ny,B,extra\n", "row 2 (line 3): expected 2 fields"},
        {"slide_id,label\nA,x\nB,y\nA,z\n", "row 3 (line 4): slide_id 'A' already on row 1"},
        {"slide_id,label,split\nA,x,tset\n", "row 1 (line 2): split 'tset'"},
        {"slide_id,label,mpp\nA,x,0.25\nB,y,-1\n", "row 2 (line 3): mpp '-1'"},
        {"slide_id,label,fold\nA,x,1.5\n", "row 1 (line 2): fold '1.5'"},
        {"slide_id,label\nA,\n", "row 1 (line 2): empty label"},
        {"", "empty file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *bp = test_tmp_path("bad_manifest_%zu.csv", i);
        write_text(bp, bad[i].text);
        EXPECT(eval_manifest_read(&m, bp) == -1 && strstr(ncmi_error(), bp) && strstr(ncmi_error(), bad[i].needle),
               "bad manifest %zu: '%s' (wanted '%s')", i, ncmi_error(), bad[i].needle);
    }
}

/* ---------------- predictions ---------------- */

TEST(predictions_read_write_and_errors)
{
    char *p = test_tmp_path("pred.csv");
    write_text(p, "pred,slide_id,p_benign,label,p_tumor,p_other,extra\n"
                  "tumor,s1,0.1,tumor,0.8,0.1,z\n"
                  "0,s2,0.7,2,0.2,0.1,\n"
                  "other,\"s,3\",1e-3,benign,0.5,0.499,\n");
    eval_predictions P;
    REQUIRE(eval_predictions_read(&P, p) == 0, "%s", ncmi_error());
    EXPECT(P.n == 3 && P.C == 3, "n %d C %d", P.n, P.C);
    EXPECT(strcmp(P.classes[0], "benign") == 0 && strcmp(P.classes[1], "tumor") == 0 &&
               strcmp(P.classes[2], "other") == 0,
           "class order from the p_ columns");
    EXPECT(P.label[0] == 1 && P.pred[0] == 1 && P.label[1] == 2 && P.pred[1] == 0 && P.label[2] == 0 && P.pred[2] == 2,
           "labels by name and by index");
    EXPECT(P.prob[2 * 3 + 0] == 1e-3 && P.prob[1 * 3 + 1] == 0.2 && strcmp(P.slide_id[2], "s,3") == 0, "values");
    /* write + read back */
    char *p2 = test_tmp_path("pred2.csv");
    REQUIRE(eval_predictions_write(p2, P.classes, P.C, P.slide_id, P.label, P.pred, P.prob, P.n) == 0, "%s",
            ncmi_error());
    eval_predictions Q;
    REQUIRE(eval_predictions_read(&Q, p2) == 0, "%s", ncmi_error());
    EXPECT(Q.n == 3 && Q.C == 3 && Q.label[1] == 2 && Q.pred[2] == 2 && Q.prob[7] == P.prob[7] &&
               strcmp(Q.slide_id[2], "s,3") == 0,
           "round trip");
    eval_predictions_free(&Q);
    eval_predictions_free(&P);
    EXPECT(eval_class_index("7", (char *[]){"a", "b"}, 2) == -1 && eval_class_index("1", (char *[]){"a", "b"}, 2) == 1 &&
               eval_class_index("1", (char *[]){"a", "1"}, 2) == 1 && eval_class_index("0", (char *[]){"0", "x"}, 2) == 0,
           "class index rules");

    struct {
        const char *text, *needle;
    } bad[] = {
        {"slide_id,label,p_a,p_b\ns1,a,0.5,0.5\n", "missing column 'pred'"},
        {"slide_id,pred,p_a,p_b\ns1,a,0.5,0.5\n", "missing column 'label'"},
        {"slide_id,label,pred\ns1,a,a\n", "no probability column"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.5,0.5\ns2,c,a,0.5,0.5\n", "row 2 (line 3): unknown label 'c'"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,5,0.5,0.5\n", "row 1 (line 2): unknown pred '5'"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.5,0.5\ns2,b,b,nan,0.5\n", "row 2 (line 3): column p_a: probability 'nan'"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.5,high\n", "row 1 (line 2): column p_b: probability 'high'"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.5,\n", "row 1 (line 2): column p_b: probability ''"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.5,0.5\ns2,b,b,0.5\n", "row 2 (line 3): expected 5 fields"},
        {"slide_id,label,pred,p_a,p_a\ns1,a,a,0.5,0.5\n", "duplicate column 'p_a'"},
        {"slide_id,label,pred,p_a\n", "no rows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *bp = test_tmp_path("bad_pred_%zu.csv", i);
        write_text(bp, bad[i].text);
        EXPECT(eval_predictions_read(&P, bp) == -1 && strstr(ncmi_error(), bp) && strstr(ncmi_error(), bad[i].needle),
               "bad predictions %zu: '%s' (wanted '%s')", i, ncmi_error(), bad[i].needle);
    }
}

/* ---------------- features HDF5 ---------------- */

#if NCMI_HAVE_HDF5
/* a dataset of any file type / shape, data given in memtype */
static void h5_put(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims, const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    H5Sclose(sp);
}

static hid_t half_type(void)
{
    /* IEEE binary16, as h5py writes float16 */
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    H5Tset_precision(t, 16);
    return t;
}
#endif

TEST(features_h5_layouts_and_errors)
{
#if !NCMI_HAVE_HDF5
    SKIP("built without HDF5");
#else
    enum { N = 5, D = 3 };
    float x[N * D];
    int64_t xy[N * 2];
    for (int i = 0; i < N * D; i++) x[i] = (float)(i % 7) * 0.5f - 1.f; /* exact in float16 */
    for (int i = 0; i < N * 2; i++) xy[i] = 1000 * i + 7;
    /* ncmi's own layout */
    char *p = test_tmp_path("own.h5");
    REQUIRE(features_h5_write(p, x, N, D, xy, "resnet50_trunc") == 0, "%s", ncmi_error());
    features_h5 f;
    REQUIRE(features_h5_read(&f, p, 1) == 0, "%s", ncmi_error());
    EXPECT(f.n == N && f.d == D && f.coords && memcmp(f.features, x, sizeof x) == 0 && memcmp(f.coords, xy, sizeof xy) == 0,
           "own layout round trip");
    features_h5_free(&f);
    int64_t n;
    int d;
    EXPECT(features_h5_shape(p, &n, &d) == 0 && n == N && d == D, "shape");
    EXPECT(access(test_tmp_path("own.h5.tmp.%ld", (long)getpid()), F_OK) != 0, "temporary file left behind");

    /* CLAM: int32 coords, no attributes; float16 and float64 features; TRIDENT [1,N,D] */
    int32_t xy32[N * 2];
    double x64[N * D];
    for (int i = 0; i < N * 2; i++) xy32[i] = (int32_t)xy[i];
    for (int i = 0; i < N * D; i++) x64[i] = x[i];
    struct {
        const char *name;
        int kind;
    } variants[] = {{"clam.h5", 0}, {"half.h5", 1}, {"f64.h5", 2}, {"trident.h5", 3}, {"slide_emb.h5", 4}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        char *vp = test_tmp_path("%s", variants[v].name);
        hid_t h = H5Fcreate(vp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t d2[2] = {N, D}, c2[2] = {N, 2}, d3[3] = {1, N, D}, c3[3] = {1, N, 2}, d1[1] = {D};
        switch (variants[v].kind) {
        case 0:
            h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d2, x);
            h5_put(h, "coords", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, c2, xy32);
            break;
        case 1: {
            hid_t ht = half_type();
            h5_put(h, "features", ht, H5T_NATIVE_DOUBLE, 2, d2, x64);
            H5Tclose(ht);
            break;
        }
        case 2: h5_put(h, "features", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d2, x64); break;
        case 3:
            h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, d3, x);
            h5_put(h, "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, c3, xy);
            break;
        case 4: h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, d1, x); break;
        }
        H5Fclose(h);
        REQUIRE(features_h5_read(&f, vp, 1) == 0, "%s: %s", variants[v].name, ncmi_error());
        int rows = variants[v].kind == 4 ? 1 : N;
        EXPECT(f.n == rows && f.d == D && memcmp(f.features, x, (size_t)rows * D * sizeof(float)) == 0,
               "%s: features differ", variants[v].name);
        if (variants[v].kind == 0 || variants[v].kind == 3)
            EXPECT(f.coords && memcmp(f.coords, xy, sizeof xy) == 0, "%s: coords differ", variants[v].name);
        else
            EXPECT(!f.coords, "%s: coords from nowhere", variants[v].name);
        features_h5_free(&f);
    }

    /* errors name the file and the dataset */
    struct {
        const char *name, *needle;
        int kind;
    } bad[] = {{"nofeat.h5", "no dataset 'features'", 0},
               {"intfeat.h5", "dataset 'features': type is integer", 1},
               {"badcoords.h5", "dataset 'coords': shape [4, 2], expected [5, 2]", 2},
               {"nanfeat.h5", "dataset 'features': row 2 column 1 is nan", 3},
               {"rank4.h5", "dataset 'features': shape [2, 2, 2, 2]", 4},
               {"text.h5", "not an HDF5 file", 5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *bp = test_tmp_path("%s", bad[i].name);
        if (bad[i].kind == 5) {
            write_text(bp, "slide_id,label\n");
        } else {
            hid_t h = H5Fcreate(bp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
            hsize_t d2[2] = {N, D}, c2[2] = {N - 1, 2}, d4[4] = {2, 2, 2, 2};
            int32_t ints[N * D] = {0};
            float xn[N * D];
            memcpy(xn, x, sizeof x);
            xn[2 * D + 1] = NAN;
            if (bad[i].kind == 0) h5_put(h, "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, c2, xy);
            if (bad[i].kind == 1) h5_put(h, "features", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, d2, ints);
            if (bad[i].kind == 2) {
                h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d2, x);
                h5_put(h, "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, c2, xy);
            }
            if (bad[i].kind == 3) h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d2, xn);
            float x16[16] = {0};
            if (bad[i].kind == 4) h5_put(h, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, x16);
            H5Fclose(h);
        }
        EXPECT(features_h5_read(&f, bp, 1) == -1 && strstr(ncmi_error(), bp) && strstr(ncmi_error(), bad[i].needle),
               "%s: '%s' (wanted '%s')", bad[i].name, ncmi_error(), bad[i].needle);
    }
    EXPECT(features_h5_read(&f, test_tmp_path("absent.h5"), 0) == -1 && strstr(ncmi_error(), "absent.h5"), "absent file");
#endif
}

/* ---------------- ncmi eval ---------------- */

static double jget(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

TEST(eval_cmd_matches_sklearn_golden)
{
    /* a golden sklearn case written as a predictions CSV (class names, %.17g scores) */
    json_error_t err;
    json_t *root = json_load_file("tests/golden/metrics.json", 0, &err);
    REQUIRE(root, "tests/golden/metrics.json: %s", err.text);
    json_t *cases = json_object_get(root, "cases");
    int used = 0;
    for (size_t ci = 0; ci < json_array_size(cases) && used < 4; ci++) {
        json_t *c = json_array_get(cases, ci), *e = json_object_get(c, "expected");
        int C = (int)json_integer_value(json_object_get(c, "C"));
        /* cases where the report's numbers are all defined, some binary */
        if (json_is_null(json_object_get(e, "auc_macro")) || (used < 2 && C != 2) || (used >= 2 && C < 4)) continue;
        json_t *yt = json_object_get(c, "y_true"), *yp = json_object_get(c, "y_pred"), *k = json_object_get(c, "scores_int");
        int n = (int)json_array_size(yt), normalize = json_is_true(json_object_get(c, "normalize"));
        char *p = test_tmp_path("golden_pred_%zu.csv", ci), *jp = test_tmp_path("golden_pred_%zu.json", ci);
        FILE *f = fopen(p, "w");
        REQUIRE(f, "cannot write %s", p);
        fprintf(f, "slide_id,label,pred");
        for (int j = 0; j < C; j++) fprintf(f, ",p_class%c", 'A' + j);
        fprintf(f, "\n");
        for (int i = 0; i < n; i++) {
            json_t *row = json_array_get(k, i);
            double sum = 0;
            for (int j = 0; j < C; j++) sum += (double)json_integer_value(json_array_get(row, j));
            fprintf(f, "s%d,class%c,%lld", i, 'A' + (int)json_integer_value(json_array_get(yt, i)),
                    (long long)json_integer_value(json_array_get(yp, i))); /* pred as an index */
            for (int j = 0; j < C; j++) {
                double v = (double)json_integer_value(json_array_get(row, j));
                fprintf(f, ",%.17g", normalize ? v / sum : v);
            }
            fprintf(f, "\n");
        }
        fclose(f);
        cmd_result r = run_entry(ncmi_cmd_eval, "eval", "--predictions", p, "--json", jp, NULL);
        EXPECT(r.rc == 0, "eval exit %d: %s", r.rc, r.err);
        EXPECT(strstr(r.out, "Macro averages run over the") && strstr(r.out, "present in the labels or the predictions"),
               "output does not say what macro averages run over:\n%s", r.out);
        json_t *j = json_load_file(jp, 0, &err);
        REQUIRE(j, "%s: %s", jp, err.text);
        const char *keys[] = {"accuracy",        "balanced_accuracy", "f1_macro",     "f1_weighted", "precision_macro",
                              "recall_macro",    "auc_macro",         "auc_weighted", "f1_micro",    "precision_weighted",
                              "recall_weighted", "auc_binary"};
        for (size_t q = 0; q < sizeof keys / sizeof keys[0]; q++) {
            const char *jk = strcmp(keys[q], "auc_binary") == 0 ? "auc" : keys[q];
            json_t *ev = json_object_get(e, keys[q]);
            if (!ev) continue;
            EXPECT(fabs(jget(j, jk) - json_number_value(ev)) <= 1e-9, "case %zu: %s = %.17g, sklearn %.17g", ci, jk,
                   jget(j, jk), json_number_value(ev));
        }
        json_t *cm = json_object_get(j, "confusion_matrix"), *ecm = json_object_get(e, "confusion_matrix");
        EXPECT(json_equal(cm, ecm), "case %zu: confusion matrix differs", ci);
        json_t *pc = json_object_get(json_object_get(j, "per_class"), "classB");
        EXPECT(pc && fabs(jget(pc, "f1") - json_number_value(json_array_get(json_object_get(e, "f1"), 1))) <= 1e-9 &&
                   jget(pc, "support") == json_number_value(json_array_get(json_object_get(e, "support"), 1)),
               "case %zu: per-class entry of classB", ci);
        json_decref(j);
        free_result(&r);
        used++;
    }
    json_decref(root);
    EXPECT(used == 4, "only %d golden cases used", used);
}

TEST(eval_cmd_undefined_auc_bootstrap_usage)
{
    /* class "c" never in the labels: its AUC undefined, reported as null; macro over a and b */
    char *p = test_tmp_path("undef.csv"), *jp = test_tmp_path("undef.json");
    write_text(p, "slide_id,label,pred,p_a,p_b,p_c\n"
                  "1,a,a,0.7,0.2,0.1\n2,a,c,0.3,0.3,0.4\n3,b,b,0.1,0.8,0.1\n4,b,a,0.5,0.4,0.1\n5,a,a,0.6,0.3,0.1\n");
    cmd_result r = run_entry(ncmi_cmd_eval, "eval", "--predictions", p, "--json", jp, "--bootstrap", "50", NULL);
    EXPECT(r.rc == 0, "exit %d: %s", r.rc, r.err);
    EXPECT(strstr(r.out, "AUC undefined") && strstr(r.out, "95% bootstrap"), "output:\n%s", r.out);
    json_error_t err;
    json_t *j = json_load_file(jp, 0, &err);
    REQUIRE(j, "%s: %s", jp, err.text);
    json_t *pc = json_object_get(json_object_get(j, "per_class"), "c");
    EXPECT(pc && json_is_null(json_object_get(pc, "auc")), "AUC of an absent class must be null");
    double auc_a = jget(json_object_get(json_object_get(j, "per_class"), "a"), "auc");
    double auc_b = jget(json_object_get(json_object_get(j, "per_class"), "b"), "auc");
    EXPECT(fabs(jget(j, "auc_macro") - (auc_a + auc_b) / 2) < 1e-15, "auc_macro over the defined classes");
    json_t *ci = json_object_get(json_object_get(j, "ci"), "accuracy");
    EXPECT(ci && jget(ci, "lo") <= jget(ci, "point") && jget(ci, "point") <= jget(ci, "hi"), "bootstrap CI in JSON");
    EXPECT(json_array_size(json_object_get(j, "macro_classes")) == 3, "macro classes: a, b and c (predicted)");
    json_decref(j);
    free_result(&r);

    r = run_entry(ncmi_cmd_eval, "eval", NULL);
    EXPECT(r.rc == 1 && strstr(r.err, "ncmi: eval: --predictions"), "no arguments: exit %d, %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_eval, "eval", "--predictions", p, "--bogus", NULL);
    EXPECT(r.rc == 1 && strstr(r.err, "--bogus"), "unknown option: exit %d, %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_eval, "eval", "--predictions=", "--bootstrap", "0", NULL);
    EXPECT(r.rc == 1 && strstr(r.err, "--bootstrap"), "--bootstrap 0: exit %d, %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_eval, "eval", "--help", NULL);
    EXPECT(r.rc == 0 && strstr(r.out, "usage: ncmi eval"), "--help: exit %d", r.rc);
    free_result(&r);
    r = run_entry(ncmi_cmd_eval, "eval", "--predictions", test_tmp_path("missing.csv"), NULL);
    EXPECT(r.rc == 2 && strstr(r.err, "missing.csv"), "missing file: exit %d, %s", r.rc, r.err);
    free_result(&r);
}

TEST(eval_cmd_bad_inputs)
{
    struct {
        const char *text, *needle;
    } bad[] = {
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.9,0.1\ns2,tumour,a,0.5,0.5\n", "row 2 (line 3): unknown label 'tumour'"},
        {"slide_id,label,p_a,p_b\ns1,a,0.9,0.1\n", "missing column 'pred'"},
        {"slide_id,label,pred\ns1,a,a\n", "no probability column"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.9,0.1\ns2,b,b,0.2,NaN\n", "row 2 (line 3): column p_b: probability 'NaN'"},
        {"slide_id,label,pred,p_a,p_b\ns1,a,a,0.9\n", "row 1 (line 2): expected 5 fields"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = test_tmp_path("eval_bad_%zu.csv", i), *jp = test_tmp_path("eval_bad_%zu.json", i);
        write_text(p, bad[i].text);
        cmd_result r = run_entry(ncmi_cmd_eval, "eval", "--predictions", p, "--json", jp, NULL);
        EXPECT(r.rc == 2, "bad predictions %zu: exit %d", i, r.rc);
        EXPECT(strstr(r.err, "ncmi: eval: ") && strstr(r.err, p) && strstr(r.err, bad[i].needle),
               "bad predictions %zu: message '%s' (wanted the file and '%s')", i, r.err, bad[i].needle);
        EXPECT(access(jp, F_OK) != 0, "bad predictions %zu: JSON written anyway", i);
        free_result(&r);
    }
}

/* ---------------- ncmi measure ---------------- */

TEST(measure_cmd_generated)
{
#if !NCMI_HAVE_HDF5
    SKIP("built without HDF5");
#else
    /* 6 slides of 2..7 vectors, 2 classes, D = 4 */
    /* tmp_path's buffers rotate: keep our own copies */
    char dir[600], man[600], jp[600], odd[600];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("feats"));
    snprintf(man, sizeof man, "%s", test_tmp_path("measure_manifest.csv"));
    snprintf(jp, sizeof jp, "%s", test_tmp_path("measure.json"));
    snprintf(odd, sizeof odd, "%s", test_tmp_path("feats/slide4.h5"));
    mkdir(dir, 0755);
    FILE *mf = fopen(man, "w");
    REQUIRE(mf, "cannot write %s", man);
    fprintf(mf, "slide_id,label,split\n");
    enum { S = 6, D = 4 };
    float all[64 * D], pooled[S * D];
    int ally[64], pooledy[S], total = 0;
    for (int s = 0; s < S; s++) {
        int n = 2 + s, y = s % 2;
        float x[8 * D];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < D; j++) x[i * D + j] = (float)(sin(s * 3.1 + i * 0.7 + j) + (j == y) * 1.2);
        char *fp = test_tmp_path("feats/slide%d.h5", s);
        REQUIRE(features_h5_write(fp, x, n, D, NULL, NULL) == 0, "%s", ncmi_error());
        fprintf(mf, "slide%d,%s,%s\n", s, y ? "tumor" : "normal", s < 4 ? "train" : "test");
        for (int j = 0; j < D; j++) {
            double m = 0;
            for (int i = 0; i < n; i++) m += x[i * D + j];
            pooled[s * D + j] = (float)(m / n);
        }
        pooledy[s] = y; /* classes sorted: normal = 0, tumor = 1 */
        memcpy(all + total * D, x, (size_t)n * D * sizeof(float));
        for (int i = 0; i < n; i++) ally[total + i] = y;
        total += n;
    }
    fclose(mf);
    eval_cmi_result want_none, want_mean;
    REQUIRE(eval_cmi_measure(all, ally, total, D, 2, EVAL_SIMPLEX_NSF, &want_none) == 0, "%s", ncmi_error());
    REQUIRE(eval_cmi_measure(pooled, pooledy, S, D, 2, EVAL_SIMPLEX_SOFTMAX, &want_mean) == 0, "%s", ncmi_error());

    json_error_t err;
    cmd_result r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--simplex", "nsf",
                             "--json", jp, NULL);
    EXPECT(r.rc == 0, "exit %d: %s", r.rc, r.err);
    EXPECT(strstr(r.out, "CMI") && strstr(r.out, "Gamma") && strstr(r.out, "NCMI") && strstr(r.out, "cc_accuracy"),
           "output:\n%s", r.out);
    json_t *j = json_load_file(jp, 0, &err);
    REQUIRE(j, "%s: %s", jp, err.text);
    EXPECT(fabs(jget(j, "cmi") - want_none.cmi) <= 1e-12 * want_none.cmi &&
               fabs(jget(j, "gamma") - want_none.gamma) <= 1e-12 * want_none.gamma &&
               fabs(jget(j, "ncmi") - want_none.ncmi) <= 1e-12 * want_none.ncmi &&
               jget(j, "cc_accuracy") == want_none.cc_accuracy && jget(j, "n_samples") == total,
           "pool none: cmi %.15g vs %.15g", jget(j, "cmi"), want_none.cmi);
    json_decref(j);
    free_result(&r);

    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--pool=mean", "--json", jp, NULL);
    EXPECT(r.rc == 0, "exit %d: %s", r.rc, r.err);
    j = json_load_file(jp, 0, &err);
    REQUIRE(j, "%s: %s", jp, err.text);
    EXPECT(fabs(jget(j, "cmi") - want_mean.cmi) <= 1e-12 * want_mean.cmi &&
               fabs(jget(j, "gamma") - want_mean.gamma) <= 1e-12 * want_mean.gamma && jget(j, "n_samples") == S &&
               strcmp(json_string_value(json_object_get(j, "simplex")), "softmax") == 0,
           "pool mean (default softmax): cmi %.15g vs %.15g", jget(j, "cmi"), want_mean.cmi);
    json_decref(j);
    free_result(&r);

    /* --split and a single file */
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--split", "train", "--json", jp,
                  NULL);
    j = json_load_file(jp, 0, &err);
    EXPECT(r.rc == 0 && j && jget(j, "n_slides") == 4 && jget(j, "n_samples") == 2 + 3 + 4 + 5, "--split train");
    json_decref(j);
    free_result(&r);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", test_tmp_path("feats/slide3.h5"), "--manifest", man, "--json",
                  jp, NULL);
    j = json_load_file(jp, 0, &err);
    EXPECT(r.rc == 0 && j && jget(j, "n_slides") == 1 && jget(j, "n_samples") == 5 && isnan(jget(j, "ncmi")),
           "single file (one class: NCMI undefined): exit %d %s", r.rc, r.err);
    json_decref(j);
    free_result(&r);

    /* bad inputs */
    /* a label outside the class list */
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--classes", "normal,benign", NULL);
    EXPECT(r.rc == 2 && strstr(r.err, man) && strstr(r.err, "row 2 (line 3)") && strstr(r.err, "'tumor'"),
           "label outside the class list: exit %d, %s", r.rc, r.err);
    free_result(&r);
    /* a features file whose dimension differs */
    float x5[2 * 5] = {0};
    REQUIRE(features_h5_write(odd, x5, 2, 5, NULL, NULL) == 0, "%s", ncmi_error());
    unlink(jp);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--json", jp, NULL);
    EXPECT(r.rc == 2 && strstr(r.err, odd) && strstr(r.err, "dimension 5 differs from the dimension 4"),
           "different dimension: exit %d, %s", r.rc, r.err);
    EXPECT(access(jp, F_OK) != 0, "JSON written after an input error");
    free_result(&r);
    /* a missing features file: partial success, listed */
    unlink(odd);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--json", jp, NULL);
    EXPECT(r.rc == 3 && strstr(r.err, "slide4.h5") && strstr(r.err, "1 of 6"), "missing file: exit %d, %s", r.rc, r.err);
    j = json_load_file(jp, 0, &err);
    EXPECT(j && jget(j, "n_slides") == 5 && json_array_size(json_object_get(j, "missing")) == 1, "missing in JSON");
    json_decref(j);
    free_result(&r);
    /* usage */
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--simplex", "relu", NULL);
    EXPECT(r.rc == 1 && strstr(r.err, "--simplex 'relu'"), "bad simplex: exit %d %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--pool", "max", NULL);
    EXPECT(r.rc == 1, "missing --manifest: exit %d %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--pool", "max", NULL);
    EXPECT(r.rc == 1 && strstr(r.err, "--pool 'max'"), "bad pool: exit %d %s", r.rc, r.err);
    free_result(&r);
    r = run_entry(ncmi_cmd_measure, "measure", "-h", NULL);
    EXPECT(r.rc == 0 && strstr(r.out, "usage: ncmi measure"), "help");
    free_result(&r);
    r = run_entry(ncmi_cmd_measure, "measure", "--features", test_tmp_path("feats/slide0.h5"), "--manifest",
                  test_tmp_path("nope.csv"), NULL);
    EXPECT(r.rc == 2 && strstr(r.err, "nope.csv"), "missing manifest: exit %d %s", r.rc, r.err);
    free_result(&r);
#endif
}

TEST(measure_cmd_musk1)
{
#if !NCMI_HAVE_HDF5
    SKIP("built without HDF5");
#else
    char dir[600], man[600];
    snprintf(dir, sizeof dir, "%s/mil/musk1/features", test_fixtures_dir());
    snprintf(man, sizeof man, "%s/mil/musk1/folds/fold0.csv", test_fixtures_dir());
    if (access(dir, F_OK) != 0 || access(man, F_OK) != 0)
        SKIP("musk1 fixture not found under %s (set NCMI_FIXTURES)", test_fixtures_dir());
    json_error_t err;
    json_t *golden = json_load_file("tests/golden/cmi.json", 0, &err);
    REQUIRE(golden, "tests/golden/cmi.json: %s", err.text);
    json_t *g = json_object_get(golden, "musk1");
    REQUIRE(json_is_object(g), "no musk1 section in tests/golden/cmi.json (regenerate with NCMI_FIXTURES set)");
    const char *variants[4][2] = {{"softmax", "none"}, {"softmax", "mean"}, {"nsf", "none"}, {"nsf", "mean"}};
    char jp[600];
    snprintf(jp, sizeof jp, "%s", test_tmp_path("musk1.json"));
    for (int v = 0; v < 4; v++) {
        cmd_result r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--simplex",
                                 variants[v][0], "--pool", variants[v][1], "--json", jp, NULL);
        EXPECT(r.rc == 0, "musk1 %s/%s: exit %d %s", variants[v][0], variants[v][1], r.rc, r.err);
        json_t *j = json_load_file(jp, 0, &err);
        REQUIRE(j, "%s: %s", jp, err.text);
        char key[32];
        snprintf(key, sizeof key, "%s_%s", variants[v][0], variants[v][1]);
        json_t *want = json_object_get(json_object_get(g, "results"), key);
        REQUIRE(want, "golden musk1 %s missing", key);
        const char *ks[4] = {"cmi", "gamma", "ncmi", "cc_accuracy"};
        for (int k = 0; k < 4; k++) {
            double a = jget(j, ks[k]), b = jget(want, ks[k]);
            EXPECT(fabs(a - b) <= 1e-6 * fabs(b), "musk1 %s: %s = %.12g, numpy %.12g", key, ks[k], a, b);
        }
        EXPECT(jget(j, "n_slides") == jget(g, "n_slides") && jget(j, "dim") == jget(g, "dim") &&
                   (v % 2 || jget(j, "n_samples") == jget(g, "n_samples")),
               "musk1 %s: counts", key);
        if (v == 0) printf("    musk1 fold0 softmax: CMI %.4f  Gamma %.4f  NCMI %.4f  cc_accuracy %.4f\n",
                           jget(j, "cmi"), jget(j, "gamma"), jget(j, "ncmi"), jget(j, "cc_accuracy"));
        json_decref(j);
        free_result(&r);
    }
    /* the fold's test split alone */
    cmd_result r = run_entry(ncmi_cmd_measure, "measure", "--features", dir, "--manifest", man, "--split", "test",
                             "--json", jp, NULL);
    json_t *j = json_load_file(jp, 0, &err);
    EXPECT(r.rc == 0 && j && jget(j, "n_slides") == 10, "musk1 test split: exit %d %s", r.rc, r.err);
    json_decref(j);
    free_result(&r);
    json_decref(golden);
#endif
}
