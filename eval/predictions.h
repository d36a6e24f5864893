/* Predictions CSV (design.md, run folder): one row per slide/sample
 *
 *   slide_id,label,pred,p_<class 0>,p_<class 1>,...
 *
 * - Header row required; columns in any order; other columns are ignored.
 * - The class list and order are those of the p_<class> columns, left to
 *   right (class names = the column names without "p_"; duplicates or an
 *   empty name are errors).
 * - label and pred are class names, or class indices 0..C-1 in that order.
 *   A field equal to a class name is that class (so a class literally named
 *   "1" wins over index 1); otherwise a field of decimal digits is an index.
 *   Anything else is an error ("unknown label").
 * - p_<class> values are finite numbers (probabilities or any scores: they
 *   are not required to sum to 1); NaN, inf or text are errors.
 * - Errors name the file, the data row (1 = first row after the header) and
 *   its line in the file: "<path>: row 3 (line 4): label 'x' is not one of
 *   the classes a, b, c".
 */
#ifndef NCMI_EVAL_PREDICTIONS_H
#define NCMI_EVAL_PREDICTIONS_H

typedef struct eval_predictions {
    int n, C;
    char **classes;   /* [C] */
    char **slide_id;  /* [n] */
    int *label;       /* [n] in [0, C) */
    int *pred;        /* [n] in [0, C) */
    double *prob;     /* [n*C] row-major */
} eval_predictions;

/* 0, or -1 with a message naming the file (and the row). */
int eval_predictions_read(eval_predictions *p, const char *path);
void eval_predictions_free(eval_predictions *p);

/* Index of a label field (name or index, rules above), or -1. */
int eval_class_index(const char *field, char *const *classes, int C);

/* Writes a predictions CSV atomically (tmp + rename), labels and predictions
 * as class names, probabilities with %.9g. 0 or -1. */
int eval_predictions_write(const char *path, char *const *classes, int C, char *const *slide_id,
                           const int *label, const int *pred, const double *prob, int n);

#endif
