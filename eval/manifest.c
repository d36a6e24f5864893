/* Manifest CSV reader (see manifest.h). */
#include "manifest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "csv.h"

void eval_manifest_free(eval_manifest *m)
{
    if (m->cells)
        for (size_t i = 0; i < (size_t)m->n * m->ncols; i++) free(m->cells[i]);
    if (m->columns)
        for (int j = 0; j < m->ncols; j++) free(m->columns[j]);
    free(m->cells);
    free(m->columns);
    free(m->rows);
    free(m->file);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

int eval_manifest_read(eval_manifest *m, const char *path)
{
    memset(m, 0, sizeof *m);
    eval_csv r;
    if (eval_csv_open(&r, path) != 0) return -1;
    m->file = strdup(path);
    const char *slash = strrchr(path, '/');
    m->dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    if (!m->file || !m->dir) goto oom;
    int rc = eval_csv_next(&r);
    if (rc <= 0) {
        if (rc == 0) ncmi_error_set("%s: empty file (expected a header row with slide_id,label)", path);
        goto fail;
    }
    m->ncols = r.nfields;
    m->columns = calloc((size_t)m->ncols, sizeof *m->columns);
    if (!m->columns) goto oom;
    for (int j = 0; j < m->ncols; j++) {
        if (!(m->columns[j] = strdup(r.fields[j]))) goto oom;
        for (int k = 0; k < j; k++)
            if (*r.fields[j] && strcmp(m->columns[k], r.fields[j]) == 0) {
                ncmi_error_set("%s: duplicate column '%s' in the header", path, r.fields[j]);
                goto fail;
            }
    }
    int c_id = eval_csv_column(m->columns, m->ncols, "slide_id");
    int c_label = eval_csv_column(m->columns, m->ncols, "label");
    if (c_id < 0 || c_label < 0) {
        ncmi_error_set("%s: missing column '%s' (a manifest needs slide_id and label)", path,
                       c_id < 0 ? "slide_id" : "label");
        goto fail;
    }
    int c_path = eval_csv_column(m->columns, m->ncols, "path");
    int c_split = eval_csv_column(m->columns, m->ncols, "split");
    int c_case = eval_csv_column(m->columns, m->ncols, "case_id");
    int c_center = eval_csv_column(m->columns, m->ncols, "center");
    int c_mpp = eval_csv_column(m->columns, m->ncols, "mpp");
    int c_fold = eval_csv_column(m->columns, m->ncols, "fold");
    int cap = 0;
    int *lines = NULL;
    while ((rc = eval_csv_next(&r)) == 1) {
        int row = r.row - 1;
        if (r.nfields != m->ncols) {
            ncmi_error_set("%s: row %d (line %d): expected %d fields as in the header, got %d", path, row, r.line,
                           m->ncols, r.nfields);
            free(lines);
            goto fail;
        }
        if (m->n == cap) {
            cap = cap ? 2 * cap : 64;
            char **cells = realloc(m->cells, (size_t)cap * m->ncols * sizeof *cells);
            if (cells) m->cells = cells;
            int *l = realloc(lines, (size_t)cap * sizeof *l);
            if (l) lines = l;
            if (!cells || !l) {
                free(lines);
                goto oom;
            }
        }
        char **cells = m->cells + (size_t)m->n * m->ncols;
        for (int j = 0; j < m->ncols; j++) cells[j] = NULL;
        m->n++;
        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): false positive, lines is grown when m->n == cap, which holds on the first row
        lines[m->n - 1] = r.line;
        for (int j = 0; j < m->ncols; j++)
            if (!(cells[j] = strdup(r.fields[j]))) {
                free(lines);
                goto oom;
            }
    }
    if (rc < 0) {
        free(lines);
        goto fail;
    }
    m->rows = calloc((size_t)(m->n ? m->n : 1), sizeof *m->rows);
    if (!m->rows) {
        free(lines);
        goto oom;
    }
    for (int i = 0; i < m->n; i++) {
        char **cells = m->cells + (size_t)i * m->ncols;
        eval_manifest_row *w = &m->rows[i];
        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): false positive, lines has m->n entries (set while reading)
        int row = i + 1, line = lines[i];
        w->line = line;
        w->slide_id = cells[c_id];
        w->label = cells[c_label];
        w->path = c_path >= 0 ? nonempty(cells[c_path]) : NULL;
        w->split = c_split >= 0 ? nonempty(cells[c_split]) : NULL;
        w->case_id = c_case >= 0 ? nonempty(cells[c_case]) : NULL;
        w->center = c_center >= 0 ? nonempty(cells[c_center]) : NULL;
        w->mpp = NAN;
        w->fold = -1;
        char what[300] = "";
        if (!*w->slide_id)
            snprintf(what, sizeof what, "empty slide_id");
        else if (!*w->label)
            snprintf(what, sizeof what, "empty label");
        else if (w->split && strcmp(w->split, "train") && strcmp(w->split, "val") && strcmp(w->split, "test"))
            snprintf(what, sizeof what, "split '%.200s' is not train, val or test", w->split);
        if (!what[0] && c_mpp >= 0 && *cells[c_mpp]) {
            char *end;
            double v = strtod(cells[c_mpp], &end);
            if (end == cells[c_mpp] || *end || !isfinite(v) || v <= 0)
                snprintf(what, sizeof what, "mpp '%.200s' is not a positive number", cells[c_mpp]);
            else
                w->mpp = v;
        }
        if (!what[0] && c_fold >= 0 && *cells[c_fold]) {
            char *end;
            long v = strtol(cells[c_fold], &end, 10);
            if (end == cells[c_fold] || *end || v < 0 || v > 1000000)
                snprintf(what, sizeof what, "fold '%.200s' is not a non-negative integer", cells[c_fold]);
            else
                w->fold = (int)v;
        }
        if (what[0]) {
            ncmi_error_set("%s: row %d (line %d): %s", path, row, line, what);
            free(lines);
            goto fail;
        }
        for (int k = 0; k < i; k++)
            if (strcmp(m->rows[k].slide_id, w->slide_id) == 0) {
                ncmi_error_set("%s: row %d (line %d): slide_id '%s' already on row %d (line %d)", path, row, line,
                               w->slide_id, k + 1, m->rows[k].line);
                free(lines);
                goto fail;
            }
    }
    free(lines);
    eval_csv_close(&r);
    return 0;
oom:
    ncmi_error_set("%s: out of memory", path);
fail:
    eval_csv_close(&r);
    eval_manifest_free(m);
    return -1;
}

int eval_manifest_find(const eval_manifest *m, const char *slide_id)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->rows[i].slide_id, slide_id) == 0) return i;
    return -1;
}

const char *eval_manifest_get(const eval_manifest *m, int row, const char *column)
{
    NCMI_CHECK(row >= 0 && row < m->n, "eval_manifest_get: row %d outside [0, %d)", row, m->n);
    int j = eval_csv_column(m->columns, m->ncols, column);
    return j < 0 ? NULL : m->cells[(size_t)row * m->ncols + j];
}

char *eval_manifest_slide_path(const eval_manifest *m, int row)
{
    NCMI_CHECK(row >= 0 && row < m->n, "eval_manifest_slide_path: row %d outside [0, %d)", row, m->n);
    const eval_manifest_row *w = &m->rows[row];
    if (!w->path) {
        ncmi_error_set("%s: row %d (line %d): slide '%s' has no path", m->file, row + 1, w->line, w->slide_id);
        return NULL;
    }
    char *out = NULL;
    int rc = w->path[0] == '/' ? asprintf(&out, "%s", w->path) : asprintf(&out, "%s/%s", m->dir, w->path);
    if (rc < 0) {
        ncmi_error_set("%s: out of memory", m->file);
        return NULL;
    }
    return out;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int eval_manifest_classes(const eval_manifest *m, const unsigned char *keep, char ***names, int *C)
{
    *names = NULL;
    *C = 0;
    const char **all = malloc((size_t)(m->n ? m->n : 1) * sizeof *all);
    if (!all) return ncmi_error_set("%s: out of memory", m->file);
    int k = 0;
    for (int i = 0; i < m->n; i++)
        if (!keep || keep[i]) all[k++] = m->rows[i].label;
    qsort(all, (size_t)k, sizeof *all, cmp_str);
    char **out = malloc((size_t)(k ? k : 1) * sizeof *out);
    if (!out) {
        free(all);
        return ncmi_error_set("%s: out of memory", m->file);
    }
    int c = 0;
    for (int i = 0; i < k; i++) {
        if (c && strcmp(out[c - 1], all[i]) == 0) continue;
        if (!(out[c] = strdup(all[i]))) {
            for (int j = 0; j < c; j++) free(out[j]);
            free(out);
            free(all);
            return ncmi_error_set("%s: out of memory", m->file);
        }
        c++;
    }
    free(all);
    *names = out;
    *C = c;
    return 0;
}

int eval_manifest_labels(const eval_manifest *m, const unsigned char *keep, char *const *classes, int C, int *y)
{
    for (int i = 0; i < m->n; i++) {
        if (keep && !keep[i]) continue;
        y[i] = -1;
        for (int c = 0; c < C; c++)
            if (strcmp(classes[c], m->rows[i].label) == 0) {
                y[i] = c;
                break;
            }
        if (y[i] < 0) {
            char list[512];
            size_t len = 0;
            list[0] = 0;
            for (int c = 0; c < C && len < sizeof list - 8; c++) {
                int w = snprintf(list + len, sizeof list - len, "%s%s", c ? ", " : "", classes[c]);
                if (w < 0) break;
                len += (size_t)w;
            }
            return ncmi_error_set("%s: row %d (line %d): label '%s' of slide '%s' is not in the class list (%s)",
                                  m->file, i + 1, m->rows[i].line, m->rows[i].label, m->rows[i].slide_id, list);
        }
    }
    return 0;
}
