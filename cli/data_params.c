/* runs/<name>/data_params.json (data_params.h). */
#include "data_params.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../features/features_h5.h"
#include "../nn/error.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void problem(cli_data_params *p, const char *path, const char *what, const char *a, const char *b)
{
    if (p->problems[0]) return; /* the first one says enough */
    snprintf(p->problems, sizeof p->problems, "%.600s: %s '%.120s', the first training file has '%.120s'", path,
             what, a, b);
}

int cli_data_params_collect(const char *features_dir, const tr_dataset *train, cli_data_params *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->features_dir, sizeof p->features_dir, "%s", features_dir);
    const int n = train->n;
    int64_t *rows = malloc((size_t)(n > 0 ? n : 1) * sizeof *rows);
    if (!rows) return ncmi_error_set("out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s.h5", features_dir, train->sample_id(train, i));
        features_h5_info f;
        if (features_h5_info_read(path, &f)) {
            rc = -1;
            break;
        }
        rows[i] = f.n;
        if (i == 0) {
            snprintf(p->source, sizeof p->source, "%s", path);
            p->dim = f.d;
            snprintf(p->encoder, sizeof p->encoder, "%s", f.encoder);
            snprintf(p->weights_sha256, sizeof p->weights_sha256, "%s", f.weights_sha256);
            snprintf(p->weights_source, sizeof p->weights_source, "%s", f.weights_source);
            snprintf(p->precision, sizeof p->precision, "%s", f.precision);
            snprintf(p->tiling, sizeof p->tiling, "%s", f.tiling);
            p->input_size = f.input_size;
            p->patch_size = f.patch_size;
            p->target_mpp = f.target_mpp;
            p->mpp_min = p->mpp_max = f.level0_mpp;
        } else {
            char a[32], b[32];
            if (strcmp(f.encoder, p->encoder)) problem(p, path, "encoder", f.encoder, p->encoder);
            if (strcmp(f.weights_sha256, p->weights_sha256))
                problem(p, path, "encoder weights (sha256)", f.weights_sha256, p->weights_sha256);
            if (strcmp(f.precision, p->precision)) problem(p, path, "precision", f.precision, p->precision);
            if (strcmp(f.tiling, p->tiling)) problem(p, path, "tiling parameters", f.tiling, p->tiling);
            if (f.input_size != p->input_size) {
                snprintf(a, sizeof a, "%d", f.input_size);
                snprintf(b, sizeof b, "%d", p->input_size);
                problem(p, path, "encoder input size", a, b);
            }
            if (f.level0_mpp > 0 && (p->mpp_min <= 0 || f.level0_mpp < p->mpp_min)) p->mpp_min = f.level0_mpp;
            if (f.level0_mpp > p->mpp_max) p->mpp_max = f.level0_mpp;
        }
        p->n_files++;
    }
    if (!rc && n > 0) {
        qsort(rows, (size_t)n, sizeof *rows, cmp_i64);
        p->bag_min = rows[0];
        p->bag_max = rows[n - 1];
        p->bag_median = rows[n / 2];
    }
    free(rows);
    return rc;
}

int cli_data_params_write(const char *run_dir, const cli_data_params *p)
{
    json_t *j = json_object();
    json_object_set_new(j, "format", json_string("ncmi-data-params/1"));
    json_object_set_new(j, "features_dir", json_string(p->features_dir));
    json_object_set_new(j, "n_files", json_integer(p->n_files));
    json_object_set_new(j, "source", json_string(p->source));
    json_object_set_new(j, "dim", json_integer(p->dim));
    json_object_set_new(j, "encoder", json_string(p->encoder));
    json_object_set_new(j, "weights_sha256", json_string(p->weights_sha256));
    json_object_set_new(j, "weights_source", json_string(p->weights_source));
    json_object_set_new(j, "precision", json_string(p->precision));
    json_object_set_new(j, "input_size", json_integer(p->input_size));
    json_object_set_new(j, "patch_size", json_integer(p->patch_size));
    json_object_set_new(j, "target_mpp", json_real(p->target_mpp));
    json_t *t = p->tiling[0] ? json_loads(p->tiling, 0, NULL) : NULL;
    json_object_set_new(j, "tiling", t ? t : json_null());
    json_t *b = json_object();
    json_object_set_new(b, "min", json_integer(p->bag_min));
    json_object_set_new(b, "median", json_integer(p->bag_median));
    json_object_set_new(b, "max", json_integer(p->bag_max));
    json_object_set_new(j, "patches_per_slide", b);
    json_t *m = json_object();
    json_object_set_new(m, "min", json_real(p->mpp_min));
    json_object_set_new(m, "max", json_real(p->mpp_max));
    json_object_set_new(j, "level0_mpp", m);
    json_object_set_new(j, "problems", json_string(p->problems));
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/%s", run_dir, CLI_DATA_PARAMS_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int rc = json_dump_file(j, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (rc != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int cli_data_params_missing(const char *run_dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", run_dir, CLI_DATA_PARAMS_FILE);
    return access(path, F_OK) != 0;
}

static void get_str(json_t *j, const char *key, char *buf, size_t n)
{
    const char *s = json_string_value(json_object_get(j, key));
    snprintf(buf, n, "%s", s ? s : "");
}

int cli_data_params_read(const char *run_dir, cli_data_params *p)
{
    memset(p, 0, sizeof *p);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", run_dir, CLI_DATA_PARAMS_FILE);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!json_is_object(j)) {
        json_decref(j);
        return ncmi_error_set("%s: cannot read: %s", path, err.text);
    }
    get_str(j, "features_dir", p->features_dir, sizeof p->features_dir);
    get_str(j, "source", p->source, sizeof p->source);
    get_str(j, "encoder", p->encoder, sizeof p->encoder);
    get_str(j, "weights_sha256", p->weights_sha256, sizeof p->weights_sha256);
    get_str(j, "weights_source", p->weights_source, sizeof p->weights_source);
    get_str(j, "precision", p->precision, sizeof p->precision);
    get_str(j, "problems", p->problems, sizeof p->problems);
    p->n_files = (int)json_integer_value(json_object_get(j, "n_files"));
    p->dim = (int)json_integer_value(json_object_get(j, "dim"));
    p->input_size = (int)json_integer_value(json_object_get(j, "input_size"));
    p->patch_size = (int)json_integer_value(json_object_get(j, "patch_size"));
    p->target_mpp = json_number_value(json_object_get(j, "target_mpp"));
    json_t *t = json_object_get(j, "tiling");
    if (json_is_object(t)) {
        char *s = json_dumps(t, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (s) snprintf(p->tiling, sizeof p->tiling, "%s", s);
        free(s);
    }
    json_t *b = json_object_get(j, "patches_per_slide");
    p->bag_min = json_integer_value(json_object_get(b, "min"));
    p->bag_median = json_integer_value(json_object_get(b, "median"));
    p->bag_max = json_integer_value(json_object_get(b, "max"));
    json_t *m = json_object_get(j, "level0_mpp");
    p->mpp_min = json_number_value(json_object_get(m, "min"));
    p->mpp_max = json_number_value(json_object_get(m, "max"));
    json_decref(j);
    if (p->dim <= 0) return ncmi_error_set("%s: no feature dimension ('dim')", path);
    return 0;
}
