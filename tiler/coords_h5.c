/* Coords HDF5 file (see coords_h5.h). Attribute types as CLAM writes them
 * through h5py: Python ints as int64 scalars, floats as float64 scalars,
 * tuples as 1-D arrays ([2] int64 for dims, [2] float64 for downsample),
 * strings as variable-length UTF-8 (h5py reads them as str). */
#include "coords_h5.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/tmpfile.h"

#if NCMI_HAVE_HDF5

#include <hdf5.h>

static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static int put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n, const void *v)
{
    hsize_t d = (hsize_t)n;
    hid_t sp = n ? H5Screate_simple(1, &d, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = sp >= 0 ? H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int bad = a < 0 || H5Awrite(a, mtype, v) < 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return bad ? -1 : 0;
}

static int put_i64(hid_t o, const char *name, int64_t v) { return put_attr(o, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v); }
static int put_f64(hid_t o, const char *name, double v) { return put_attr(o, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v); }

static int put_str(hid_t o, const char *name, const char *v)
{
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    const char *s = v ? v : "";
    int rc = put_attr(o, name, st, st, 0, &s);
    H5Tclose(st);
    return rc;
}

int tl_coords_h5_write(const char *path, const int64_t *coords, size_t n, const tl_coords_attrs *a)
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
    /* coords int64 [N, 2], chunked and extendible like CLAM's (maxshape (None, 2)) */
    hsize_t dims[2] = {(hsize_t)n, 2}, maxd[2] = {H5S_UNLIMITED, 2}, chunk[2] = {n ? (n < 4096 ? n : 4096) : 1, 2};
    hid_t sp = H5Screate_simple(2, dims, maxd);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 2, chunk);
    H5Pset_obj_track_times(pl, 0); /* no timestamps: the same coords give the same bytes */
    hid_t ds = sp >= 0 ? H5Dcreate2(file, "coords", H5T_STD_I64LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT) : -1;
    int bad = ds < 0;
    if (!bad && n) bad = H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, coords) < 0;
    const char *what = "coords";
    if (!bad) {
        what = "attributes";
        bad |= put_i64(ds, "patch_size", a->patch_size);
        bad |= put_i64(ds, "patch_level", a->patch_level);
        bad |= put_attr(ds, "downsample", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, a->downsample);
        bad |= put_attr(ds, "level_dim", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, a->level_dim);
        bad |= put_attr(ds, "downsampled_level_dim", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, a->downsampled_level_dim);
        bad |= put_str(ds, "name", a->name);
        bad |= put_str(ds, "save_path", a->save_path);
        bad |= put_i64(ds, "patch_size_level0", a->patch_size_level0);
        bad |= put_f64(ds, "target_mpp", a->target_mpp);
        bad |= put_f64(ds, "target_magnification", a->target_magnification);
        bad |= put_f64(ds, "level0_mpp", a->level0_mpp);
        bad |= put_f64(ds, "level0_magnification", a->level0_magnification);
        bad |= put_i64(ds, "overlap", a->overlap);
        bad |= put_i64(ds, "level0_width", a->level0_width);
        bad |= put_i64(ds, "level0_height", a->level0_height);
        if (a->tiling[0]) bad |= put_str(ds, "tiling", a->tiling);
    }
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(pl);
    if (sp >= 0) H5Sclose(sp);
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

/* ---- reading ---- */

/* attribute `name` of obj, else of the file root (TRIDENT/CLAM variants put
 * some on the file); returns an open attribute id or -1 */
static hid_t find_attr(hid_t ds, hid_t file, const char *name)
{
    if (H5Aexists(ds, name) > 0) return H5Aopen(ds, name, H5P_DEFAULT);
    if (H5Aexists(file, name) > 0) return H5Aopen(file, name, H5P_DEFAULT);
    return -1;
}

/* up to n numeric values (converted by HDF5); count read, 0 when absent, -1 when not numeric */
static int get_num(hid_t ds, hid_t file, const char *name, hid_t mtype, void *out, int n)
{
    hid_t a = find_attr(ds, file, name);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a);
    H5T_class_t c = H5Tget_class(t);
    H5Tclose(t);
    hid_t sp = H5Aget_space(a);
    hssize_t k = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    int rc = -1;
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && k >= 1 && k <= 16) {
        double buf[16];
        int64_t ibuf[16];
        void *b = mtype == H5T_NATIVE_DOUBLE ? (void *)buf : (void *)ibuf;
        if (H5Aread(a, mtype, b) >= 0) {
            int m = (int)k < n ? (int)k : n;
            size_t es = mtype == H5T_NATIVE_DOUBLE ? sizeof(double) : sizeof(int64_t);
            memcpy(out, b, (size_t)m * es);
            /* a scalar given for a pair: repeat it (e.g. downsample stored as one number) */
            if (m == 1 && n == 2) memcpy((char *)out + es, out, es);
            rc = m;
        }
    }
    H5Aclose(a);
    return rc;
}

/* string attribute (variable or fixed length) into buf; 1 read, 0 absent, -1 not a string */
static int get_str(hid_t ds, hid_t file, const char *name, char *buf, size_t n)
{
    hid_t a = find_attr(ds, file, name);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a);
    int rc = -1;
    /* one string (scalar or [1]): H5Aread writes every element of the attribute */
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (np == 1 && H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t));
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(buf, n, "%s", s);
                H5free_memory(s);
                rc = 1;
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(t);
            char *s = calloc(sz + 1, 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            if (s && H5Aread(a, mt, s) >= 0) {
                snprintf(buf, n, "%s", s);
                rc = 1;
            }
            H5Tclose(mt);
            free(s);
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int tl_coords_h5_read(const char *path, int64_t **coords, size_t *n, tl_coords_attrs *a, char *name_buf,
                      size_t name_n)
{
    quiet();
    *coords = NULL;
    *n = 0;
    memset(a, 0, sizeof *a);
    if (name_buf && name_n) name_buf[0] = 0;
    if (access(path, R_OK) != 0) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
#if H5_VERSION_GE(1, 12, 0)
    htri_t is_h5 = H5Fis_accessible(path, H5P_DEFAULT);
#else
    htri_t is_h5 = H5Fis_hdf5(path);
#endif
    if (is_h5 <= 0) return ncmi_error_set("%s: not an HDF5 file", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return ncmi_error_set("%s: cannot open as HDF5", path);
    if (H5Lexists(file, "coords", H5P_DEFAULT) <= 0) {
        H5Fclose(file);
        return ncmi_error_set("%s: no dataset 'coords' (not a coords file)", path);
    }
    hid_t ds = H5Dopen2(file, "coords", H5P_DEFAULT);
    if (ds < 0) {
        H5Fclose(file);
        return ncmi_error_set("%s: 'coords' is not a dataset", path);
    }
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    hid_t t = H5Dget_type(ds);
    H5T_class_t cls = H5Tget_class(t);
    H5Tclose(t);
    int rc = 0;
    if (rank != 2 || dims[1] != 2) {
        rc = ncmi_error_set("%s: dataset 'coords' has rank %d%s, expected [N, 2]", path, rank,
                            rank == 2 ? " with a second dimension other than 2" : "");
    } else if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        rc = ncmi_error_set("%s: dataset 'coords' is not numeric", path);
    } else {
        size_t rows = (size_t)dims[0];
        *coords = rows <= SIZE_MAX / (2 * sizeof **coords) ? malloc((rows ? rows : 1) * 2 * sizeof **coords) : NULL;
        if (!*coords) rc = ncmi_error_set("%s: out of memory for %zu coords", path, rows);
        else if (rows && H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *coords) < 0)
            rc = ncmi_error_set("%s: dataset 'coords': read failed (corrupt file?)", path);
        else *n = rows;
    }
    if (rc == 0) {
        int64_t v;
        const char *bad = NULL;
        int r = get_num(ds, file, "patch_size", H5T_NATIVE_INT64, &v, 1);
        if (r > 0) a->patch_size = (int)v;
        else if (r < 0) bad = "patch_size";
        if (get_num(ds, file, "patch_level", H5T_NATIVE_INT64, &v, 1) > 0) a->patch_level = (int)v;
        if (get_num(ds, file, "overlap", H5T_NATIVE_INT64, &v, 1) > 0) a->overlap = (int)v;
        if (get_num(ds, file, "downsample", H5T_NATIVE_DOUBLE, a->downsample, 2) < 0) bad = "downsample";
        if (get_num(ds, file, "level_dim", H5T_NATIVE_INT64, a->level_dim, 2) < 0) bad = "level_dim";
        if (get_num(ds, file, "downsampled_level_dim", H5T_NATIVE_INT64, a->downsampled_level_dim, 2) < 0)
            bad = "downsampled_level_dim";
        if (get_num(ds, file, "patch_size_level0", H5T_NATIVE_INT64, &a->patch_size_level0, 1) < 0)
            bad = "patch_size_level0";
        get_num(ds, file, "target_mpp", H5T_NATIVE_DOUBLE, &a->target_mpp, 1);
        get_num(ds, file, "target_magnification", H5T_NATIVE_DOUBLE, &a->target_magnification, 1);
        get_num(ds, file, "level0_mpp", H5T_NATIVE_DOUBLE, &a->level0_mpp, 1);
        get_num(ds, file, "level0_magnification", H5T_NATIVE_DOUBLE, &a->level0_magnification, 1);
        get_num(ds, file, "level0_width", H5T_NATIVE_INT64, &a->level0_width, 1);
        get_num(ds, file, "level0_height", H5T_NATIVE_INT64, &a->level0_height, 1);
        /* CLAM: patch_size_level0 = patch_size * downsample (not stored) */
        double ps0 = a->patch_size * a->downsample[0] + 0.5;
        if (!a->patch_size_level0 && a->patch_size > 0 && a->downsample[0] > 0 && ps0 < 9e18) /* not inf, no overflow */
            a->patch_size_level0 = (int64_t)ps0;
        if (bad) rc = ncmi_error_set("%s: attribute '%s' of 'coords' is not numeric", path, bad);
        if (get_str(ds, file, "tiling", a->tiling, sizeof a->tiling) <= 0) a->tiling[0] = 0;
        if (rc == 0 && name_buf && name_n) {
            int r = get_str(ds, file, "name", name_buf, name_n);
            if (r <= 0 || !name_buf[0]) {
                /* no name (or an empty one): the file's base name without .h5 and TRIDENT's _patches */
                const char *b = strrchr(path, '/');
                snprintf(name_buf, name_n, "%s", b ? b + 1 : path);
                char *dot = strrchr(name_buf, '.');
                if (dot && !strcmp(dot, ".h5")) *dot = 0;
                size_t L = strlen(name_buf);
                if (L > 8 && !strcmp(name_buf + L - 8, "_patches")) name_buf[L - 8] = 0;
            }
            a->name = name_buf;
        }
    }
    H5Dclose(ds);
    H5Fclose(file);
    if (rc) {
        free(*coords);
        *coords = NULL;
        *n = 0;
    }
    return rc;
}

#else /* no libhdf5 */

int tl_coords_h5_write(const char *path, const int64_t *coords, size_t n, const tl_coords_attrs *a)
{
    (void)coords, (void)n, (void)a;
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

int tl_coords_h5_read(const char *path, int64_t **coords, size_t *n, tl_coords_attrs *a, char *name_buf,
                      size_t name_n)
{
    (void)a, (void)name_buf, (void)name_n;
    *coords = NULL;
    *n = 0;
    return ncmi_error_set("%s: ncmi was built without HDF5 (install libhdf5-dev and rebuild)", path);
}

#endif
