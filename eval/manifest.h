/* Manifest CSV (design.md): one row per slide, header row, columns in any
 * order (RFC 4180 quoting, see csv.h).
 *
 *   slide_id, label      required, non-empty; slide_id unique
 *   path                 slide file, relative to the manifest's folder or absolute
 *   split                train | val | test
 *   case_id, center      free text
 *   mpp                  positive number (overrides the slide's resolution)
 *   fold                 non-negative integer
 *
 * Optional columns may be absent or empty in a row (then NULL / NAN / -1).
 * Other columns are kept and can be read with eval_manifest_get. Labels are
 * class names; the class list and order come from the config (or, where no
 * config is involved, eval_manifest_classes: the sorted distinct labels).
 * Errors name the file, the data row (1 = first row after the header) and
 * its line: "<path>: row 4 (line 5): split 'tset' is not train, val or test".
 */
#ifndef NCMI_EVAL_MANIFEST_H
#define NCMI_EVAL_MANIFEST_H

typedef struct eval_manifest_row {
    const char *slide_id, *label;                  /* never NULL */
    const char *path, *split, *case_id, *center;   /* NULL when absent or empty */
    double mpp;                                     /* NAN when absent or empty */
    int fold;                                       /* -1 when absent or empty */
    int line;                                       /* line of the row in the file */
} eval_manifest_row;

typedef struct eval_manifest {
    char *file;              /* the manifest's path as given */
    char *dir;               /* its folder ("." when none) */
    int n;
    eval_manifest_row *rows; /* [n] in file order */
    int ncols;
    char **columns;          /* [ncols] header */
    char **cells;            /* [n*ncols] raw fields */
} eval_manifest;

/* 0, or -1 with a message naming the file (and row). */
int eval_manifest_read(eval_manifest *m, const char *path);
void eval_manifest_free(eval_manifest *m);

/* Row index of a slide, or -1. */
int eval_manifest_find(const eval_manifest *m, const char *slide_id);
/* Raw field of any column (NULL when there is no such column). */
const char *eval_manifest_get(const eval_manifest *m, int row, const char *column);
/* Slide file path resolved against the manifest's folder (malloc'd), or
 * NULL with an error when the row has no path. */
char *eval_manifest_slide_path(const eval_manifest *m, int row);

/* Sorted (strcmp) distinct labels of the rows with keep[i] != 0 (keep may be
 * NULL = all rows). *names is malloc'd (free each and the array). 0 or -1. */
int eval_manifest_classes(const eval_manifest *m, const unsigned char *keep, char ***names, int *C);
/* y[i] = index of row i's label in classes[C], for the rows with keep[i]
 * (keep may be NULL); -1 with "<file>: row N (line L): label 'x' is not in the
 * class list (a, b)" for the first label outside the list. */
int eval_manifest_labels(const eval_manifest *m, const unsigned char *keep, char *const *classes, int C,
                         int *y);

#endif
