/* JSON output shared by ncmi eval, measure and the trainer's metrics files. */
#ifndef NCMI_EVAL_JSON_IO_H
#define NCMI_EVAL_JSON_IO_H

#include <jansson.h>

#include "metrics.h"

/* Writes j to path through a temporary file and rename (2-space indent,
 * keys in insertion order, reals with 16 significant digits). 0, or -1 with
 * ncmi_error() naming the path. */
int eval_json_write_atomic(const char *path, json_t *j);

/* A finite number, or null (JSON has no NaN/Inf: undefined metrics). */
json_t *eval_json_num(double v);

/* Adds the metrics of r to object j under scikit-learn's names: classes,
 * accuracy, balanced_accuracy, precision/recall/f1 _macro/_micro/_weighted,
 * auc_macro, auc_weighted (auc when C == 2), top_k_accuracy, confusion_matrix,
 * per_class {precision, recall, f1, support, predicted, auc, in_macro},
 * macro_classes, macro_note, warnings. Shared by ncmi eval and the trainer's
 * metrics_<split>.json so both files have one layout. */
void eval_report_json(json_t *j, const eval_report *r, const char *const *classes, int C);

#endif
