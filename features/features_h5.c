/* Features HDF5 reader/writer (see features_h5.h). */
#include "features_h5.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/tmpfile.h"

void features_h5_free(features_h5 *f)
{
    free(f->features);
    free(f->coords);
    memset(f, 0, sizeof *f);
}

#if NCMI_HAVE_HDF5

#include <hdf5.h>

int features_h5_available(void) { return 1; }

static void quiet(void)
{
    /* our messages replace HDF5's error-stack printout */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static hid_t open_file(const char *path)
{
    quiet();
    if (access(path, R_OK) != 0) {
        ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
#if H5_VERSION_GE(1, 12, 0)
    htri_t is_h5 = H5Fis_accessible(path, H5P_DEFAULT);
#else
    htri_t is_h5 = H5Fis_hdf5(path);
#endif
    if (is_h5 <= 0) {
        ncmi_error_set("%s: not an HDF5 file", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) ncmi_error_set("%s: cannot open as HDF5", path);
    return f;
}

/* Opens a dataset and gives its logical [rows, cols] shape:
 * [R, K] as is; [1, R, K] squeezed; [K] as one row when allow_1d. */
static hid_t open_2d(hid_t file, const char *path, const char *name, int allow_1d, int64_t *rows, int64_t *cols)
{
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        ncmi_error_set("%s: no dataset '%s'", path, name);
        return -1;
    }
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) {
        ncmi_error_set("%s: '%s' is not a dataset", path, name);
        return -1;
    }
    hid_t sp = H5Dget_space(ds);
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[H5S_MAX_RANK];
    if (rank >= 0) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (rank == 2) {
        *rows = (int64_t)dims[0];
        *cols = (int64_t)dims[1];
    } else if (rank == 3 && dims[0] == 1) {
        *rows = (int64_t)dims[1];
        *cols = (int64_t)dims[2];
    } else if (rank == 1 && allow_1d) {
        *rows = 1;
        *cols = (int64_t)dims[0];
    } else {
        char shape[128] = "";
        size_t len = 0;
        for (int i = 0; i < rank && len < 100; i++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%llu", i ? ", " : "",
                                    (unsigned long long)dims[i]);
        ncmi_error_set("%s: dataset '%s': shape [%s] is not [N, K]%s", path, name, shape,
                       allow_1d ? " (or [1, N, K] or [K])" : " (or [1, N, K])");
        H5Dclose(ds);
        return -1;
    }
    return ds;
}

static int read_features(hid_t file, const char *path, features_h5 *f)
{
    int64_t rows, cols;
    hid_t ds = open_2d(file, path, "features", 1, &rows, &cols);
    if (ds < 0) return -1;
    hid_t t = H5Dget_type(ds);
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    H5Tclose(t);
    if (cls != H5T_FLOAT) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'features': type is %s, expected float32 (or float16/float64)", path,
                              cls == H5T_INTEGER ? "integer" : "not a float");
    }
    if (cols < 1 || cols > 1 << 24) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'features': dimension %lld out of range", path, (long long)cols);
    }
    (void)size;
    if (rows < 0 || (uint64_t)rows > SIZE_MAX / sizeof(float) / (uint64_t)cols) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'features': %llu rows of %lld: too large", path,
                              (unsigned long long)rows, (long long)cols);
    }
    f->n = rows;
    f->d = (int)cols;
    f->features = malloc((size_t)(rows ? rows : 1) * (size_t)cols * sizeof(float));
    if (!f->features) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'features': out of memory (%lld x %lld)", path, (long long)rows,
                              (long long)cols);
    }
    herr_t st = rows ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, f->features) : 0;
    H5Dclose(ds);
    if (st < 0) return ncmi_error_set("%s: dataset 'features': read failed (corrupt file?)", path);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            if (!isfinite(f->features[i * cols + j]))
                return ncmi_error_set("%s: dataset 'features': row %lld column %lld is %g (not finite)", path,
                                      (long long)i, (long long)j, f->features[i * cols + j]);
    return 0;
}

static int read_coords(hid_t file, const char *path, features_h5 *f)
{
    if (H5Lexists(file, "coords", H5P_DEFAULT) <= 0) return 0; /* optional */
    int64_t rows, cols;
    hid_t ds = open_2d(file, path, "coords", 0, &rows, &cols);
    if (ds < 0) return -1;
    hid_t t = H5Dget_type(ds);
    H5T_class_t cls = H5Tget_class(t);
    H5Tclose(t);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'coords': type is not numeric", path);
    }
    if (cols != 2 || rows != f->n) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'coords': shape [%lld, %lld], expected [%lld, 2] (one (x, y) per row "
                              "of 'features')",
                              path, (long long)rows, (long long)cols, (long long)f->n);
    }
    f->coords = malloc((size_t)(rows ? rows : 1) * 2 * sizeof *f->coords);
    if (!f->coords) {
        H5Dclose(ds);
        return ncmi_error_set("%s: dataset 'coords': out of memory", path);
    }
    herr_t st = rows ? H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, f->coords) : 0;
    H5Dclose(ds);
    if (st < 0) return ncmi_error_set("%s: dataset 'coords': read failed (corrupt file?)", path);
    return 0;
}

int features_h5_read(features_h5 *f, const char *path, int want_coords)
{
    memset(f, 0, sizeof *f);
    hid_t file = open_file(path);
    if (file < 0) return -1;
    int rc = read_features(file, path, f);
    if (rc == 0 && want_coords) rc = read_coords(file, path, f);
    H5Fclose(file);
    if (rc != 0) features_h5_free(f);
    return rc;
}

int features_h5_shape(const char *path, int64_t *n, int *d)
{
    hid_t file = open_file(path);
    if (file < 0) return -1;
    int64_t rows, cols;
    hid_t ds = open_2d(file, path, "features", 1, &rows, &cols);
    H5Fclose(file);
    if (ds < 0) return -1;
    H5Dclose(ds);
    *n = rows;
    *d = (int)cols;
    return 0;
}

static int write_dataset(hid_t file, const char *name, hid_t filetype, hid_t memtype, hsize_t rows, hsize_t cols,
                         const void *data)
{
    hsize_t dims[2] = {rows, cols};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    /* no object timestamps: the same features give the same bytes (a rerun after an
       interruption writes files identical to an uninterrupted run's) */
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(pl, 0);
    hid_t ds = sp >= 0 ? H5Dcreate2(file, name, filetype, sp, H5P_DEFAULT, pl, H5P_DEFAULT) : -1;
    herr_t st = ds >= 0 && rows ? H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    H5Pclose(pl);
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return ds < 0 || st < 0 ? -1 : 0;
}

static int attr_string(hid_t file, const char *name, const char *v)
{
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, st, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, st, &v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(st);
    return bad ? -1 : 0;
}

static int attr_num(hid_t file, const char *name, hid_t filetype, hid_t memtype, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, filetype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, memtype, v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return bad ? -1 : 0;
}

int features_h5_write_attrs(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                            const features_h5_attrs *at)
{
    quiet();
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) return ncmi_error_set("%s: out of memory", path);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0); /* the root group's too */
    errno = 0; /* HDF5 reports no errno: the one its failing write() left is the problem */
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (file < 0) {
        ncmi_error_set("%s: cannot create %s: %s", path, tmp, errno ? strerror(errno) : "HDF5 error");
        unlink(tmp); /* H5Fcreate may have created it before failing (disk full) */
        free(tmp);
        return -1;
    }
    int bad = write_dataset(file, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, (hsize_t)n, (hsize_t)d, features);
    const char *what = "features";
    if (!bad && coords) {
        bad = write_dataset(file, "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)n, 2, coords);
        what = "coords";
    }
    if (!bad && at) {
        what = "attributes";
        const char *sk[] = {"encoder", "weights_sha256", "precision", "name", "weights_source", "tiling"};
        const char *sv[] = {at->encoder, at->weights_sha256, at->precision, at->slide_id, at->weights_source,
                            at->tiling && at->tiling[0] ? at->tiling : NULL};
        for (int i = 0; i < 6 && !bad; i++)
            if (sv[i]) bad = attr_string(file, sk[i], sv[i]);
        const char *ik[] = {"patch_size", "input_size", "patch_level"};
        const int64_t iv[] = {at->patch_size, at->input_size, at->patch_level};
        for (int i = 0; i < 3 && !bad; i++)
            if (iv[i] > 0 || (i == 2 && at->patch_size > 0))
                bad = attr_num(file, ik[i], H5T_STD_I64LE, H5T_NATIVE_INT64, &iv[i]);
        if (!bad && at->patch_size_level0 > 0)
            bad = attr_num(file, "patch_size_level0", H5T_STD_I64LE, H5T_NATIVE_INT64, &at->patch_size_level0);
        if (!bad && at->target_mpp > 0)
            bad = attr_num(file, "target_mpp", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &at->target_mpp);
        if (!bad && at->level0_mpp > 0)
            bad = attr_num(file, "level0_mpp", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &at->level0_mpp);
    }
    int e = bad ? errno : 0;
    if (H5Fclose(file) < 0 && !bad) {
        bad = 1;
        what = "the file (flush at close)";
        e = errno;
    }
    if (bad) {
        ncmi_error_set("%s: cannot write %s (to %s): %s", path, what, tmp, e ? strerror(e) : "HDF5 error");
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        ncmi_error_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    ncmi_tmp_sweep(path);
    return 0;
}

int features_h5_write(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                      const char *encoder)
{
    features_h5_attrs a;
    memset(&a, 0, sizeof a);
    a.encoder = encoder;
    return features_h5_write_attrs(path, features, n, d, coords, &a);
}

/* string attribute of the root group: 0, or -1 (absent, not a string) */
static int root_string(hid_t file, const char *name, char *buf, size_t n)
{
    int rc = -1;
    if (H5Aexists(file, name) > 0) {
        hid_t a = H5Aopen(file, name, H5P_DEFAULT);
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        /* one string (scalar or [1]): H5Aread writes every element of the attribute */
        hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
        hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0 && np == 1 && H5Tget_class(t) == H5T_STRING) {
            if (H5Tis_variable_str(t) > 0) {
                char *v = NULL;
                hid_t mt = H5Tcopy(H5T_C_S1);
                H5Tset_size(mt, H5T_VARIABLE);
                H5Tset_cset(mt, H5Tget_cset(t)); /* ncmi writes UTF-8: an ASCII memory type does not convert */
                if (H5Aread(a, mt, &v) >= 0 && v) {
                    snprintf(buf, n, "%s", v);
                    H5free_memory(v);
                    rc = 0;
                }
                H5Tclose(mt);
            } else {
                size_t sz = H5Tget_size(t);
                char *v = calloc(sz + 1, 1);
                if (v && H5Aread(a, t, v) >= 0) {
                    snprintf(buf, n, "%s", v);
                    rc = 0;
                }
                free(v);
            }
        }
        if (t >= 0) H5Tclose(t);
        if (a >= 0) H5Aclose(a);
    }
    return rc;
}

int features_h5_attr_string(const char *path, const char *name, char *buf, size_t n)
{
    hid_t file = open_file(path);
    if (file < 0) return -1;
    int rc = root_string(file, name, buf, n);
    H5Fclose(file);
    if (rc) ncmi_error_set("%s: no string attribute '%s'", path, name);
    return rc;
}

/* numeric scalar attribute of the root group (0 when absent or not numeric) */
static double root_number(hid_t file, const char *name)
{
    double v = 0;
    if (H5Aexists(file, name) <= 0) return 0;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t c = H5Tget_class(t);
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && H5Sget_simple_extent_npoints(sp) == 1 &&
        H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0)
        v = 0;
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return v;
}

/* the same as an integer in [-max, max] (0 when out of range or not finite:
   converting such a double is undefined) */
static int64_t root_integer(hid_t file, const char *name, int64_t max)
{
    double v = root_number(file, name);
    return isfinite(v) && fabs(v) <= (double)max ? (int64_t)v : 0;
}

int features_h5_info_read(const char *path, features_h5_info *info)
{
    memset(info, 0, sizeof *info);
    hid_t file = open_file(path);
    if (file < 0) return -1;
    int64_t rows, cols;
    hid_t ds = open_2d(file, path, "features", 1, &rows, &cols);
    if (ds < 0) {
        H5Fclose(file);
        return -1;
    }
    H5Dclose(ds);
    info->n = rows;
    info->d = (int)cols;
    root_string(file, "encoder", info->encoder, sizeof info->encoder);
    root_string(file, "weights_sha256", info->weights_sha256, sizeof info->weights_sha256);
    root_string(file, "precision", info->precision, sizeof info->precision);
    root_string(file, "name", info->name, sizeof info->name);
    root_string(file, "weights_source", info->weights_source, sizeof info->weights_source);
    root_string(file, "tiling", info->tiling, sizeof info->tiling);
    info->patch_size = (int)root_integer(file, "patch_size", INT_MAX);
    info->input_size = (int)root_integer(file, "input_size", INT_MAX);
    info->patch_level = (int)root_integer(file, "patch_level", INT_MAX);
    info->patch_size_level0 = root_integer(file, "patch_size_level0", INT64_MAX / 2);
    info->target_mpp = root_number(file, "target_mpp");
    info->level0_mpp = root_number(file, "level0_mpp");
    H5Fclose(file);
    return 0;
}

#else /* no libhdf5 */

int features_h5_available(void) { return 0; }

int features_h5_read(features_h5 *f, const char *path, int want_coords)
{
    (void)want_coords;
    memset(f, 0, sizeof *f);
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

int features_h5_shape(const char *path, int64_t *n, int *d)
{
    (void)n;
    (void)d;
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

int features_h5_write(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                      const char *encoder)
{
    (void)features;
    (void)n;
    (void)d;
    (void)coords;
    (void)encoder;
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

int features_h5_write_attrs(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                            const features_h5_attrs *a)
{
    (void)a;
    return features_h5_write(path, features, n, d, coords, NULL);
}

int features_h5_attr_string(const char *path, const char *name, char *buf, size_t n)
{
    (void)name;
    (void)buf;
    (void)n;
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

int features_h5_info_read(const char *path, features_h5_info *info)
{
    memset(info, 0, sizeof *info);
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

#endif
