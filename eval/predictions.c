/* Predictions CSV reader and writer (see predictions.h). */
#include "predictions.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "csv.h"
#include "../nn/tmpfile.h"

void eval_predictions_free(eval_predictions *p)
{
    if (p->classes)
        for (int c = 0; c < p->C; c++) free(p->classes[c]);
    if (p->slide_id)
        for (int i = 0; i < p->n; i++) free(p->slide_id[i]);
    free(p->classes);
    free(p->slide_id);
    free(p->label);
    free(p->pred);
    free(p->prob);
    memset(p, 0, sizeof *p);
}

int eval_class_index(const char *field, char *const *classes, int C)
{
    for (int c = 0; c < C; c++)
        if (strcmp(field, classes[c]) == 0) return c;
    if (!*field || strlen(field) > 9) return -1;
    for (const char *s = field; *s; s++)
        if (*s < '0' || *s > '9') return -1;
    long k = strtol(field, NULL, 10);
    return k < C ? (int)k : -1;
}

/* "a, b, c" (truncated) for messages */
static void class_list(char *buf, size_t n, char *const *classes, int C)
{
    size_t len = 0;
    buf[0] = 0;
    for (int c = 0; c < C && len + 8 < n; c++) {
        int w = snprintf(buf + len, n - len, "%s%s", c ? ", " : "", classes[c]);
        if (w < 0 || (size_t)w >= n - len) {
            snprintf(buf + (n > 5 ? n - 5 : 0), 5, "...");
            return;
        }
        len += (size_t)w;
    }
}

static int parse_finite(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s) return -1;
    while (*end == ' ' || *end == '\t') end++;
    if (*end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static void header_text(char *buf, size_t n, char *const *f, int nf)
{
    class_list(buf, n, f, nf);
}

int eval_predictions_read(eval_predictions *p, const char *path)
{
    memset(p, 0, sizeof *p);
    eval_csv r;
    if (eval_csv_open(&r, path) != 0) return -1;
    int rc = eval_csv_next(&r);
    if (rc <= 0) {
        eval_csv_close(&r);
        return rc < 0 ? -1 : ncmi_error_set("%s: empty file (expected a header row slide_id,label,pred,p_<class>...)", path);
    }
    int nh = r.nfields;
    int col_id = eval_csv_column(r.fields, nh, "slide_id");
    int col_label = eval_csv_column(r.fields, nh, "label");
    int col_pred = eval_csv_column(r.fields, nh, "pred");
    int *pcol = malloc((size_t)nh * sizeof *pcol);
    char msg[512];
    if (!pcol) goto oom;
    const char *missing = col_id < 0 ? "slide_id" : col_label < 0 ? "label" : col_pred < 0 ? "pred" : NULL;
    if (missing) {
        header_text(msg, sizeof msg, r.fields, nh);
        ncmi_error_set("%s: missing column '%s' (header: %s; expected slide_id,label,pred,p_<class>...)", path,
                       missing, msg);
        goto fail;
    }
    int C = 0;
    for (int i = 0; i < nh; i++)
        if (strncmp(r.fields[i], "p_", 2) == 0) pcol[C++] = i;
    if (C == 0) {
        header_text(msg, sizeof msg, r.fields, nh);
        ncmi_error_set("%s: missing columns: no probability column p_<class> (header: %s)", path, msg);
        goto fail;
    }
    p->classes = calloc((size_t)C, sizeof *p->classes);
    if (!p->classes) goto oom;
    p->C = C;
    for (int c = 0; c < C; c++) {
        const char *name = r.fields[pcol[c]] + 2;
        if (!*name) {
            ncmi_error_set("%s: column %d is named 'p_' (expected p_<class name>)", path, pcol[c] + 1);
            goto fail;
        }
        for (int k = 0; k < c; k++)
            if (strcmp(p->classes[k], name) == 0) {
                ncmi_error_set("%s: duplicate column 'p_%s'", path, name);
                goto fail;
            }
        if (!(p->classes[c] = strdup(name))) goto oom;
    }
    int cap = 0;
    while ((rc = eval_csv_next(&r)) == 1) {
        int row = r.row - 1;
        if (r.nfields != nh) {
            ncmi_error_set("%s: row %d (line %d): expected %d fields as in the header, got %d", path, row, r.line,
                           nh, r.nfields);
            goto fail;
        }
        if (p->n == cap) {
            cap = cap ? cap * 2 : 64;
            char **ids = realloc(p->slide_id, (size_t)cap * sizeof *ids);
            if (ids) p->slide_id = ids;
            int *l = realloc(p->label, (size_t)cap * sizeof *l);
            if (l) p->label = l;
            int *pr = realloc(p->pred, (size_t)cap * sizeof *pr);
            if (pr) p->pred = pr;
            double *pb = realloc(p->prob, (size_t)cap * C * sizeof *pb);
            if (pb) p->prob = pb;
            if (!ids || !l || !pr || !pb) goto oom;
        }
        int i = p->n;
        if (!(p->slide_id[i] = strdup(r.fields[col_id]))) goto oom;
        p->n++;
        const char *what[2] = {"label", "pred"};
        int cols[2] = {col_label, col_pred};
        int *dst[2] = {p->label, p->pred};
        for (int k = 0; k < 2; k++) {
            int c = eval_class_index(r.fields[cols[k]], p->classes, C);
            if (c < 0) {
                class_list(msg, sizeof msg, p->classes, C);
                ncmi_error_set("%s: row %d (line %d): unknown %s '%s': not one of the classes %s (from the p_ "
                               "columns) nor an index in [0, %d)",
                               path, row, r.line, what[k], r.fields[cols[k]], msg, C);
                goto fail;
            }
            dst[k][i] = c;
        }
        for (int c = 0; c < C; c++) {
            const char *f = r.fields[pcol[c]];
            if (parse_finite(f, &p->prob[(size_t)i * C + c]) != 0) {
                ncmi_error_set("%s: row %d (line %d): column p_%s: probability '%s' is not a finite number", path,
                               row, r.line, p->classes[c], f);
                goto fail;
            }
        }
    }
    if (rc < 0) goto fail;
    if (p->n == 0) {
        ncmi_error_set("%s: no rows after the header", path);
        goto fail;
    }
    free(pcol);
    eval_csv_close(&r);
    return 0;
oom:
    ncmi_error_set("%s: out of memory", path);
fail:
    free(pcol);
    eval_csv_close(&r);
    eval_predictions_free(p);
    return -1;
}

int eval_predictions_write(const char *path, char *const *classes, int C, char *const *slide_id,
                           const int *label, const int *pred, const double *prob, int n)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) return ncmi_error_set("%s: out of memory", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ncmi_error_set("%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    fputs("slide_id,label,pred", f);
    for (int c = 0; c < C; c++) {
        fputc(',', f);
        char *name = NULL;
        if (asprintf(&name, "p_%s", classes[c]) < 0) name = NULL;
        eval_csv_write_field(f, name ? name : "p_?");
        free(name);
    }
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        NCMI_CHECK(label[i] >= 0 && label[i] < C && pred[i] >= 0 && pred[i] < C,
                   "eval_predictions_write: row %d: label %d / pred %d outside [0, %d)", i, label[i], pred[i], C);
        eval_csv_write_field(f, slide_id[i]);
        fputc(',', f);
        eval_csv_write_field(f, classes[label[i]]);
        fputc(',', f);
        eval_csv_write_field(f, classes[pred[i]]);
        for (int c = 0; c < C; c++) fprintf(f, ",%.9g", prob[(size_t)i * C + c]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        ncmi_error_set("%s: cannot write (via %s): %s", path, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    ncmi_tmp_sweep(path);
    return 0;
}
