/* Harness bodies (see fuzz_targets.h). Built twice: with clang and
 * -fsanitize=fuzzer-no-link,address,undefined into build-fuzz/ (make fuzz)
 * and with the default compiler into the test binary (make test). */
#include "fuzz_targets.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../../cli/cli.h"
#include "../../cli/config.h"
#include "../../cli/data_params.h"
#include "../../cli/train_config.h"
#include "../../eval/manifest.h"
#include "../../eval/predictions.h"
#include "../../features/features_h5.h"
#include "../../mil/bags.h"
#include "../../natural/cifar.h"
#include "../../natural/imgdata.h"
#include "../../natural/mnist.h"
#include "../../nn/error.h"
#include "../../nn/safetensors.h"
#include "../../tiler/coords_h5.h"
#include "../../tiler/tile.h"

#if NCMI_HAVE_HDF5
#include <hdf5.h>
#endif

/* ------------------------------------------------------------------ */
/* scratch files                                                       */

static char tmp_root[256];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void tmp_cleanup(void)
{
    if (tmp_root[0]) nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void fuzz_tmp_cleanup(void)
{
    tmp_cleanup();
    tmp_root[0] = 0;
}

const char *fuzz_tmpdir(void)
{
    if (!tmp_root[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root, "%s/ncmi_fuzz.XXXXXX", t && t[0] ? t : "/tmp");
        if (!mkdtemp(tmp_root)) {
            fprintf(stderr, "fuzz: cannot create %s: %s\n", tmp_root, strerror(errno));
            abort();
        }
        static int registered;
        if (!registered++) atexit(tmp_cleanup);
    }
    return tmp_root;
}

/* "<tmpdir>/<name>" (static buffer per call site: callers copy) */
static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", fuzz_tmpdir(), name);
}

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

static char *cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

void fuzz_check(const char *target, int rc)
{
    if (rc == 0) return;
    if (rc != -1) {
        fprintf(stderr, "fuzz %s: reader returned %d (not 0 or -1)\n", target, rc);
        abort();
    }
    if (!ncmi_error()[0]) {
        fprintf(stderr, "fuzz %s: reader failed without an error message\n", target);
        abort();
    }
}

/* every target: errors must carry a message; the target's result is the
 * first reader's rc (the others are checked on the way) */
#define CHECK(rc) fuzz_check(__func__, (rc))

/* ------------------------------------------------------------------ */
/* manifest and predictions CSV (eval/manifest.c, eval/predictions.c,  */
/* eval/csv.c; mil/bags.c and the CLI read manifests through these)    */

int fuzz_manifest(const uint8_t *data, size_t size)
{
    char path[512];
    tmp_path(path, sizeof path, "manifest.csv");
    write_file(path, data, size);
    ncmi_error_clear();
    eval_manifest m;
    int rc = eval_manifest_read(&m, path);
    CHECK(rc);
    if (rc == 0) {
        for (int i = 0; i < m.n; i++) {
            if (!m.rows[i].slide_id || !m.rows[i].label) abort();
            if (eval_manifest_find(&m, m.rows[i].slide_id) < 0) abort();
            eval_manifest_get(&m, i, "split");
            eval_manifest_get(&m, i, "nonexistent");
            ncmi_error_clear();
            char *p = eval_manifest_slide_path(&m, i);
            if (!p) CHECK(-1);
            free(p);
        }
        char **names = NULL;
        int C = 0;
        ncmi_error_clear();
        int r = eval_manifest_classes(&m, NULL, &names, &C);
        CHECK(r);
        if (r == 0) {
            int *y = malloc(((size_t)m.n + 1) * sizeof *y);
            if (!y) abort();
            ncmi_error_clear();
            int rl = eval_manifest_labels(&m, NULL, names, C, y);
            if (rl != 0) abort(); /* the class list of the rows themselves */
            for (int i = 0; i < m.n; i++)
                if (y[i] < 0 || y[i] >= C) abort();
            /* a shorter class list: labels outside it are errors with a message */
            if (C > 1) {
                ncmi_error_clear();
                CHECK(eval_manifest_labels(&m, NULL, names, C - 1, y));
            }
            free(y);
            for (int k = 0; k < C; k++) free(names[k]);
            free(names);
        }
        eval_manifest_free(&m);
    }
    /* the same bytes as the manifest of a bag dataset (mil/bags.c: splits,
       classes, files): a features folder holding a.h5 (3 x 4) and b.h5 (0 rows);
       a build without HDF5 (the lean GPU build) cannot write them */
    if (!features_h5_available()) return rc;
    char feat[600];
    snprintf(feat, sizeof feat, "%s/features", fuzz_tmpdir());
    struct stat sb;
    if (stat(feat, &sb) != 0) {
        if (mkdir(feat, 0700) != 0) abort();
        float x[12] = {0};
        int64_t xy[6] = {0};
        char fp[700];
        snprintf(fp, sizeof fp, "%s/a.h5", feat);
        if (features_h5_write(fp, x, 3, 4, xy, "fuzz")) abort();
        snprintf(fp, sizeof fp, "%s/b.h5", feat);
        if (features_h5_write(fp, x, 0, 4, xy, "fuzz")) abort();
    }
    FILE *devnull = fopen("/dev/null", "w");
    for (int skip = 0; skip < 2; skip++) {
        mil_bags_opts o;
        mil_bags_opts_default(&o);
        o.features_dir = feat;
        o.manifest = path;
        o.prefetch = 0;
        o.cache_mb = 1;
        o.skip_missing = skip;
        o.warn = devnull;
        tr_dataset tr, va, te;
        mil_bags_info info;
        ncmi_error_clear();
        int rb = mil_bags_open(&o, &tr, &va, &te, &info);
        CHECK(rb);
        if (rb == 0) {
            if (info.C < 2 || info.d_feat != 4) abort();
            tr_dataset_free(&tr);
            tr_dataset_free(&va);
            tr_dataset_free(&te);
            mil_bags_info_free(&info);
        }
    }
    if (devnull) fclose(devnull);
    /* the same bytes as a predictions CSV */
    ncmi_error_clear();
    eval_predictions p;
    int rp = eval_predictions_read(&p, path);
    CHECK(rp);
    if (rp == 0) {
        for (int i = 0; i < p.n; i++)
            if (p.label[i] < 0 || p.label[i] >= p.C || p.pred[i] < 0 || p.pred[i] >= p.C) abort();
        for (int i = 0; i < p.n * p.C; i++)
            if (!isfinite(p.prob[i])) abort();
        eval_predictions_free(&p);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* YAML configs (cli/config.c with the training and the dataset schema) */

/* the bytes as a training config and as a dataset config (configs/datasets/) */
static int config_one(const ncmi_cfg_schema *S, size_t cfg_size, int train, const uint8_t *data, size_t size)
{
    void *cfg = calloc(1, cfg_size), *copy = calloc(1, cfg_size);
    if (!cfg || !copy) abort();
    ncmi_cfg_defaults(S, cfg);
    ncmi_error_clear();
    int rc = ncmi_cfg_load_string(S, cfg, (const char *)data, size, "fuzz.yaml");
    CHECK(rc);
    if (rc == 0) {
        if (train) {
            ncmi_error_clear();
            CHECK(ncmi_train_config_check(cfg));
            ncmi_train_config_resolve(cfg);
        }
        /* the resolved config written and read back gives the same values */
        ncmi_error_clear();
        char *y = ncmi_cfg_to_yaml(S, cfg);
        if (!y) CHECK(-1);
        else {
            ncmi_cfg_defaults(S, copy);
            ncmi_error_clear();
            int r2 = ncmi_cfg_load_string(S, copy, y, strlen(y), "fuzz.yaml (written back)");
            if (r2 != 0) {
                fprintf(stderr, "fuzz_config: the written config does not load: %s\n%s\n", ncmi_error(), y);
                abort();
            }
            char diff[1024];
            if (ncmi_cfg_diff(S, cfg, copy, NULL, diff, sizeof diff) != 0) {
                fprintf(stderr, "fuzz_config: written and read back differ in %s\n%s\n", diff, y);
                abort();
            }
            ncmi_cfg_free(S, copy);
            free(y);
        }
    }
    ncmi_cfg_free(S, cfg);
    free(cfg);
    free(copy);
    return rc;
}

/* one(schema, config size, is the training schema, data, size) on the
 * training config and on the dataset (cohort) config; the first non-zero
 * result */
typedef int (*schema_fn)(const ncmi_cfg_schema *S, size_t cfg_size, int train, const uint8_t *data,
                         size_t size);
static int on_both_schemas(schema_fn one, const uint8_t *data, size_t size)
{
    size_t cohort_size = 0;
    const ncmi_cfg_schema *C = ncmi_cohort_schema(&cohort_size);
    int rc = one(&ncmi_train_schema, sizeof(ncmi_train_config), 1, data, size);
    int rc2 = one(C, cohort_size, 0, data, size);
    return rc == 0 ? rc2 : rc;
}

int fuzz_config(const uint8_t *data, size_t size) { return on_both_schemas(config_one, data, size); }

/* ------------------------------------------------------------------ */
/* --set key=value (one assignment a line, applied in order)           */

static int set_one(const ncmi_cfg_schema *S, size_t cfg_size, int train, const uint8_t *data, size_t size)
{
    void *cfg = calloc(1, cfg_size);
    if (!cfg) abort();
    ncmi_cfg_defaults(S, cfg);
    char *text = cstr(data, size);
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        ncmi_error_clear();
        int r = ncmi_cfg_set(S, cfg, line);
        CHECK(r);
        if (r) rc = r;
    }
    if (train) {
        ncmi_error_clear();
        CHECK(ncmi_train_config_check(cfg));
    }
    ncmi_cfg_free(S, cfg);
    free(cfg);
    free(text);
    return rc;
}

/* every line is a --set assignment, applied to a training config and to a dataset config */
int fuzz_set(const uint8_t *data, size_t size) { return on_both_schemas(set_one, data, size); }

/* ------------------------------------------------------------------ */
/* safetensors (nn/safetensors.c)                                      */

int fuzz_safetensors(const uint8_t *data, size_t size)
{
    char path[512];
    tmp_path(path, sizeof path, "model.safetensors");
    write_file(path, data, size);
    ncmi_error_clear();
    nn_safetensors st;
    int rc = nn_st_open(&st, path);
    CHECK(rc);
    if (rc != 0) return rc;
    nn_st_meta(&st, "format");
    nn_st_meta(&st, "config");
    for (int i = 0; i < st.n; i++) {
        const nn_st_entry *e = &st.entries[i];
        if (nn_st_find(&st, e->name) != e) abort();
        if (e->offset > st.data_len || e->nbytes > st.data_len - e->offset) abort();
        if (e->numel * nn_st_dtype_size(e->dtype) != e->nbytes) abort();
        if (e->numel > (1u << 20)) continue;
        size_t n = e->numel ? e->numel : 1;
        float *f = malloc(n * sizeof *f);
        double *d = malloc(n * sizeof *d);
        int64_t *l = malloc(n * sizeof *l);
        if (!f || !d || !l) abort();
        ncmi_error_clear();
        CHECK(nn_st_read_f32(&st, e->name, f, e->numel, -1, NULL));
        int shape[NN_ST_MAX_DIMS];
        for (int k = 0; k < e->ndim; k++) shape[k] = (int)e->shape[k];
        ncmi_error_clear();
        CHECK(nn_st_read_f32(&st, e->name, f, e->numel, e->ndim, shape));
        ncmi_error_clear();
        CHECK(nn_st_read_f64(&st, e->name, d, e->numel, -1, NULL));
        ncmi_error_clear();
        CHECK(nn_st_read_i64(&st, e->name, l, e->numel));
        ncmi_error_clear();
        CHECK(nn_st_read_f32(&st, e->name, f, e->numel + 1, -1, NULL) == 0 ? -2 : -1); /* wrong size */
        free(f);
        free(d);
        free(l);
    }
    nn_st_close(&st);
    return rc;
}

/* ------------------------------------------------------------------ */
/* CIFAR binary and MNIST IDX (natural/)                               */

static void mkdir_p(const char *p)
{
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s\n", p);
        abort();
    }
}

/* first byte: bit 0 CIFAR (0) or MNIST (1); CIFAR: bit 1 CIFAR-100, bit 2 a
 * class names file; the rest is split at the first "\n--\n": the data file,
 * then the names file (CIFAR) or the labels file (MNIST); bit 3 gzips the
 * MNIST files */
int fuzz_natural(const uint8_t *data, size_t size)
{
    unsigned mode = size ? data[0] : 0;
    if (size) data++, size--;
    const uint8_t *a = data, *b = NULL;
    size_t na = size, nb = 0;
    for (size_t i = 0; i + 4 <= size; i++)
        if (!memcmp(data + i, "\n--\n", 4)) {
            na = i;
            b = data + i + 4;
            nb = size - i - 4;
            break;
        }
    char root[512], dir[600], path[700];
    int rc;
    if (!(mode & 1)) {
        int c100 = (mode >> 1) & 1;
        snprintf(root, sizeof root, "%s/cifar%d", fuzz_tmpdir(), c100);
        mkdir_p(root);
        snprintf(dir, sizeof dir, "%s/%s", root, c100 ? "cifar-100-binary" : "cifar-10-batches-bin");
        mkdir_p(dir);
        snprintf(path, sizeof path, "%s/%s", dir, c100 ? "test.bin" : "test_batch.bin");
        write_file(path, a, na);
        snprintf(path, sizeof path, "%s/%s", dir, c100 ? "fine_label_names.txt" : "batches.meta.txt");
        if ((mode & 4) && b) write_file(path, b, nb);
        else remove(path);
        nat_images im;
        ncmi_error_clear();
        rc = nat_cifar_load(&im, root, c100, 0);
        CHECK(rc);
        if (rc == 0) {
            if (im.n < 1 || im.n_classes != (c100 ? 100 : 10)) abort();
            for (int i = 0; i < im.n; i++)
                if (im.labels[i] < 0 || im.labels[i] >= im.n_classes) abort();
            for (int k = 0; k < im.n_classes; k++)
                if (!im.class_names[k] || !im.class_names[k][0]) abort();
            nat_images_free(&im);
        }
    } else {
        snprintf(dir, sizeof dir, "%s/mnist", fuzz_tmpdir());
        mkdir_p(dir);
        const char *gz = (mode & 8) ? ".gz" : "";
        char ip[800], lp[800];
        snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte%s", dir, gz);
        snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte%s", dir, gz);
        /* the other spelling must not shadow the files written now */
        snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte%s", dir, (mode & 8) ? "" : ".gz");
        remove(path);
        snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte%s", dir, (mode & 8) ? "" : ".gz");
        remove(path);
        if (mode & 8) {
            gzFile g = gzopen(ip, "wb");
            if (!g) abort();
            if (na) gzwrite(g, a, (unsigned)na);
            gzclose(g);
            g = gzopen(lp, "wb");
            if (!g) abort();
            if (nb) gzwrite(g, b, (unsigned)nb);
            gzclose(g);
        } else {
            write_file(ip, a, na);
            write_file(lp, b ? b : (const uint8_t *)"", nb);
        }
        nat_mnist m;
        ncmi_error_clear();
        rc = nat_mnist_load_dir(&m, dir, "t10k");
        CHECK(rc);
        if (rc == 0) {
            for (int i = 0; i < m.n; i++)
                if (m.labels[i] < 0 || m.labels[i] > 9) abort();
            if (m.n > 0) {
                int idx[2] = {0, m.n - 1};
                float *x = malloc(2 * (size_t)m.rows * (size_t)m.cols * sizeof *x);
                if (!x) abort();
                nat_mnist_to_float(&m, idx, 2, 0.1307f, 0.3081f, x);
                free(x);
            }
            nat_mnist_free(&m);
        }
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* JSON: a run's data_params.json (cli/data_params.c) and the tiling    */
/* parameters (tiler/tile.c; the coords / features files' `tiling`)     */

int fuzz_json(const uint8_t *data, size_t size)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/run", fuzz_tmpdir());
    mkdir_p(dir);
    snprintf(path, sizeof path, "%s/%s", dir, CLI_DATA_PARAMS_FILE);
    write_file(path, data, size);
    cli_data_params *p = malloc(sizeof *p);
    if (!p) abort();
    ncmi_error_clear();
    int rc = cli_data_params_read(dir, p);
    CHECK(rc);
    if (rc == 0 && p->tiling[0]) {
        tl_tile_params tp;
        ncmi_error_clear();
        CHECK(tl_tile_params_from_json(p->tiling, &tp));
    }
    free(p);
    /* the bytes themselves as tiling parameters, and written back */
    char *s = cstr(data, size);
    tl_tile_params tp;
    ncmi_error_clear();
    int rt = tl_tile_params_from_json(s, &tp);
    CHECK(rt);
    if (rt == 0) {
        char buf[1024];
        if (tl_tile_params_json(&tp, buf, sizeof buf) == 0) {
            tl_tile_params back;
            ncmi_error_clear();
            if (tl_tile_params_from_json(buf, &back) != 0) {
                fprintf(stderr, "fuzz_json: written tiling parameters do not read back: %s\n%s\n", ncmi_error(),
                        buf);
                abort();
            }
        }
    }
    free(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* features / coords HDF5 (features/features_h5.c, tiler/coords_h5.c):  */
/* structure-aware: the bytes describe a file, written as a valid HDF5  */
/* file with the HDF5 API, then read by every reader of ours            */

#if NCMI_HAVE_HDF5

typedef struct fz {
    const uint8_t *p;
    size_t n, i;
} fz;

static unsigned fz_u8(fz *r) { return r->i < r->n ? r->p[r->i++] : 0; }

static void fz_bytes(fz *r, void *out, size_t k)
{
    uint8_t *o = out;
    for (size_t j = 0; j < k; j++) o[j] = (uint8_t)fz_u8(r);
}

static const char *const h5_attr_names[] = {
    "patch_size", "patch_level", "downsample", "level_dim", "downsampled_level_dim", "name", "save_path",
    "patch_size_level0", "target_mpp", "target_magnification", "level0_mpp", "level0_magnification",
    "overlap", "level0_width", "level0_height", "tiling", "encoder", "weights_sha256", "precision",
    "input_size", "weights_source", "slide_id", "other"};
#define H5_N_ATTR_NAMES ((unsigned)(sizeof h5_attr_names / sizeof *h5_attr_names))

/* sizes that fit, one past the feature dimension's limit (2^24), and sizes no
   allocation can hold (a described dataset between 2^26 and 2^36 elements
   becomes one of those: the replay in make test must not fill gigabytes) */
static const hsize_t h5_dims[] = {0, 1, 2, 3, 5, 17, 64, 300, ((hsize_t)1 << 24) + 1, (hsize_t)1 << 40, (hsize_t)1 << 62};
#define H5_N_DIMS ((unsigned)(sizeof h5_dims / sizeof *h5_dims))

/* a type of the file: 0 f32, 1 f64, 2 f16, 3 i32, 4 i64, 5 u8, 6 fixed string, 7 variable string,
   8 compound {double}, 9 big-endian f32, 10 i16 */
static hid_t h5_type(unsigned k, size_t str_len, int *owned, int *is_str, int *is_vstr)
{
    *owned = 0;
    *is_str = 0;
    *is_vstr = 0;
    switch (k % 11) {
    case 0: return H5T_IEEE_F32LE;
    case 1: return H5T_IEEE_F64LE;
    case 2: {
        hid_t t = H5Tcopy(H5T_IEEE_F32LE); /* IEEE half: 1 sign, 5 exponent, 10 mantissa bits */
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        *owned = 1;
        return t;
    }
    case 3: return H5T_STD_I32LE;
    case 4: return H5T_STD_I64LE;
    case 5: return H5T_STD_U8LE;
    case 6: {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, str_len ? str_len : 1);
        *owned = 1;
        *is_str = 1;
        return t;
    }
    case 7: {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        *owned = 1;
        *is_str = *is_vstr = 1;
        return t;
    }
    case 8: {
        hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(double));
        H5Tinsert(t, "v", 0, H5T_NATIVE_DOUBLE);
        *owned = 1;
        return t;
    }
    case 9: return H5T_IEEE_F32BE;
    default: return H5T_STD_I16LE;
    }
}

/* a dataspace: rank 0 scalar, 1..3 simple (dims from the table), 4 null */
static hid_t h5_space(fz *r, int *rank_out, hsize_t *dims, hsize_t *npoints)
{
    unsigned rank = fz_u8(r) % 5;
    *rank_out = (int)rank;
    *npoints = 1;
    if (rank == 4) {
        *npoints = 0;
        return H5Screate(H5S_NULL);
    }
    if (rank == 0) return H5Screate(H5S_SCALAR);
    for (unsigned k = 0; k < rank; k++) {
        dims[k] = h5_dims[fz_u8(r) % H5_N_DIMS];
        if (*npoints && dims[k] && *npoints > ((hsize_t)1 << 62) / dims[k]) *npoints = (hsize_t)1 << 62;
        else *npoints *= dims[k];
    }
    if (*npoints > ((hsize_t)1 << 26) && *npoints < ((hsize_t)1 << 36)) {
        unsigned big = 0;
        for (unsigned k = 1; k < rank; k++)
            if (dims[k] > dims[big]) big = k;
        dims[big] = (hsize_t)1 << 40;
        *npoints = (hsize_t)1 << 62;
    }
    hsize_t maxd[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
    return H5Screate_simple((int)rank, dims, maxd);
}

/* values for k elements of type t (numbers from the bytes; strings: text) */
static void *h5_values(fz *r, hid_t t, int is_str, int is_vstr, size_t k, char ***vstr)
{
    *vstr = NULL;
    if (is_vstr) {
        char **v = calloc(k ? k : 1, sizeof *v);
        if (!v) abort();
        for (size_t j = 0; j < k; j++) {
            size_t len = fz_u8(r);
            if (len > 200) len = len * 4; /* room for a tiling JSON */
            v[j] = calloc(len + 1, 1);
            if (!v[j]) abort();
            for (size_t c = 0; c < len && r->i < r->n; c++) v[j][c] = (char)fz_u8(r);
        }
        *vstr = v;
        return v;
    }
    size_t es = H5Tget_size(t);
    uint8_t *b = calloc(k ? k : 1, es);
    if (!b) abort();
    if (is_str) {
        for (size_t j = 0; j < k * es && r->i < r->n; j++) b[j] = (uint8_t)fz_u8(r);
    } else {
        fz_bytes(r, b, k * es);
    }
    return b;
}

static void h5_free_values(void *v, char **vstr, size_t k)
{
    if (vstr)
        for (size_t j = 0; j < k; j++) free(vstr[j]);
    free(v);
}

static void h5_attrs(fz *r, hid_t obj)
{
    unsigned na = fz_u8(r) % 6;
    for (unsigned a = 0; a < na; a++) {
        const char *name = h5_attr_names[fz_u8(r) % H5_N_ATTR_NAMES];
        size_t slen = fz_u8(r) % 64;
        int owned, is_str, is_vstr;
        hid_t t = h5_type(fz_u8(r), slen, &owned, &is_str, &is_vstr);
        int rank;
        hsize_t dims[3], np;
        hid_t sp = h5_space(r, &rank, dims, &np);
        if (np > 64) { /* attributes are small: a big one is a [3] */
            H5Sclose(sp);
            hsize_t d3 = 3;
            sp = H5Screate_simple(1, &d3, NULL);
            np = 3;
        }
        hid_t at = H5Aexists(obj, name) > 0 ? -1 : H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (at >= 0) {
            char **vs;
            void *v = h5_values(r, t, is_str, is_vstr, (size_t)np, &vs);
            if (np) H5Awrite(at, t, v);
            h5_free_values(v, vs, (size_t)np);
            H5Aclose(at);
        }
        H5Sclose(sp);
        if (owned) H5Tclose(t);
    }
}

/* one of the datasets "features" / "coords": absent, a group, or a dataset */
static void h5_dataset(fz *r, hid_t file, const char *name)
{
    unsigned kind = fz_u8(r) % 4;
    if (kind == 0) return;
    if (kind == 1) {
        hid_t g = H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
        return;
    }
    int owned, is_str, is_vstr;
    hid_t t = h5_type(fz_u8(r), 8, &owned, &is_str, &is_vstr);
    int rank;
    hsize_t dims[3], np;
    hid_t sp = h5_space(r, &rank, dims, &np);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    unsigned fill = fz_u8(r) % 4;
    if (!is_str) {
        double fv = fill == 1 ? NAN : fill == 2 ? INFINITY : fill == 3 ? -1.5 : 0;
        hid_t ft = H5Tget_class(t) == H5T_COMPOUND ? -1 : t;
        if (ft >= 0) {
            /* the fill value in the file's type (converted from double) */
            uint8_t buf[16] = {0};
            memcpy(buf, &fv, sizeof fv);
            hid_t mt = H5Tcopy(H5T_NATIVE_DOUBLE);
            H5Tconvert(mt, t, 1, buf, NULL, H5P_DEFAULT);
            H5Tclose(mt);
            H5Pset_fill_value(pl, t, buf);
        }
    }
    if (rank >= 1 && rank <= 3) {
        hsize_t chunk[3];
        for (int k = 0; k < rank; k++) chunk[k] = dims[k] >= 1 && dims[k] < 64 ? dims[k] : 64;
        H5Pset_chunk(pl, rank, chunk);
    }
    hid_t ds = H5Dcreate2(file, name, t, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    if (ds >= 0) {
        if (np >= 1 && np <= 4096 && (fz_u8(r) & 1)) {
            char **vs;
            void *v = h5_values(r, t, is_str, is_vstr, (size_t)np, &vs);
            H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
            h5_free_values(v, vs, (size_t)np);
        }
        h5_attrs(r, ds);
        H5Dclose(ds);
    }
    H5Pclose(pl);
    H5Sclose(sp);
    if (owned) H5Tclose(t);
}

int fuzz_h5(const uint8_t *data, size_t size)
{
    fz r = {data, size, 0};
    char path[512];
    tmp_path(path, sizeof path, "slide_patches.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_EARLIEST, H5F_LIBVER_LATEST);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        fprintf(stderr, "fuzz_h5: cannot create %s\n", path);
        abort();
    }
    /* the order of creation follows the bytes */
    if (fz_u8(&r) & 1) {
        h5_dataset(&r, file, "coords");
        h5_dataset(&r, file, "features");
    } else {
        h5_dataset(&r, file, "features");
        h5_dataset(&r, file, "coords");
    }
    h5_attrs(&r, file);
    H5Fclose(file);

    features_h5 f;
    ncmi_error_clear();
    int rc = features_h5_read(&f, path, 1);
    CHECK(rc);
    if (rc == 0) {
        if (f.n < 0 || f.d < 1 || !f.features) abort();
        features_h5_free(&f);
    }
    int64_t n;
    int d;
    ncmi_error_clear();
    CHECK(features_h5_shape(path, &n, &d));
    features_h5_info info;
    ncmi_error_clear();
    CHECK(features_h5_info_read(path, &info));
    char buf[64];
    ncmi_error_clear();
    CHECK(features_h5_attr_string(path, "encoder", buf, sizeof buf));
    ncmi_error_clear();
    CHECK(features_h5_attr_string(path, "tiling", buf, sizeof buf));

    int64_t *coords = NULL;
    size_t nc = 0;
    tl_coords_attrs a;
    char name[64];
    ncmi_error_clear();
    int rk = tl_coords_h5_read(path, &coords, &nc, &a, name, sizeof name);
    CHECK(rk);
    if (rk == 0) {
        if (!coords || !a.name || !name[0]) abort();
        if (a.tiling[0]) {
            tl_tile_params tp;
            ncmi_error_clear();
            CHECK(tl_tile_params_from_json(a.tiling, &tp));
        }
        free(coords);
    }
    return rc;
}

#else

int fuzz_h5(const uint8_t *data, size_t size)
{
    (void)data, (void)size;
    return ncmi_error_set("fuzz_h5: built without HDF5");
}

#endif

const fuzz_target fuzz_targets[] = {
    {"manifest", fuzz_manifest}, {"config", fuzz_config},   {"set", fuzz_set},   {"safetensors", fuzz_safetensors},
    {"h5", fuzz_h5},             {"natural", fuzz_natural}, {"json", fuzz_json},
};
const int fuzz_n_targets = (int)(sizeof fuzz_targets / sizeof *fuzz_targets);
