/* Atomic JSON output (temporary name + rename). */
#include "json_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/tmpfile.h"

int eval_json_write_atomic(const char *path, json_t *j)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) return ncmi_error_set("%s: out of memory", path);
    if (json_dump_file(j, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16)) != 0) {
        ncmi_error_set("%s: cannot write %s: %s", path, tmp, strerror(errno));
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

json_t *eval_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static const char *const warning_names[] = {"precision", "recall", "fscore", "balanced_accuracy",
                                            "auc"};

void eval_report_json(json_t *j, const eval_report *r, const char *const *classes, int C)
{
    json_t *cl = json_array();
    for (int c = 0; c < C; c++) json_array_append_new(cl, json_string(classes[c]));
    json_object_set_new(j, "classes", cl);
    json_object_set_new(j, "accuracy", eval_json_num(r->accuracy));
    json_object_set_new(j, "balanced_accuracy", eval_json_num(r->balanced_accuracy));
    json_object_set_new(j, "precision_macro", eval_json_num(r->macro.precision));
    json_object_set_new(j, "recall_macro", eval_json_num(r->macro.recall));
    json_object_set_new(j, "f1_macro", eval_json_num(r->macro.f1));
    json_object_set_new(j, "precision_micro", eval_json_num(r->micro.precision));
    json_object_set_new(j, "recall_micro", eval_json_num(r->micro.recall));
    json_object_set_new(j, "f1_micro", eval_json_num(r->micro.f1));
    json_object_set_new(j, "precision_weighted", eval_json_num(r->weighted.precision));
    json_object_set_new(j, "recall_weighted", eval_json_num(r->weighted.recall));
    json_object_set_new(j, "f1_weighted", eval_json_num(r->weighted.f1));
    json_object_set_new(j, "auc_macro", eval_json_num(r->auc_macro));
    json_object_set_new(j, "auc_weighted", eval_json_num(r->auc_weighted));
    if (C == 2) json_object_set_new(j, "auc", eval_json_num(r->auc_binary));
    for (int i = 0; i < 3; i++)
        if (r->top_k_k[i] < C) {
            char name[32];
            snprintf(name, sizeof name, "top_%d_accuracy", r->top_k_k[i]);
            json_object_set_new(j, name, eval_json_num(r->top_k[i]));
        }
    json_t *cm = json_array();
    for (int i = 0; i < C; i++) {
        json_t *row = json_array();
        for (int k = 0; k < C; k++) json_array_append_new(row, json_integer(r->confusion[(size_t)i * C + k]));
        json_array_append_new(cm, row);
    }
    json_object_set_new(j, "confusion_matrix", cm);
    json_t *pc = json_object();
    for (int c = 0; c < C; c++) {
        json_t *o = json_object();
        json_object_set_new(o, "precision", eval_json_num(r->precision[c]));
        json_object_set_new(o, "recall", eval_json_num(r->recall[c]));
        json_object_set_new(o, "f1", eval_json_num(r->f1[c]));
        json_object_set_new(o, "support", json_integer(r->support[c]));
        json_object_set_new(o, "predicted", json_integer(r->predicted[c]));
        json_object_set_new(o, "auc", eval_json_num(r->auc[c]));
        json_object_set_new(o, "in_macro", json_boolean(r->present[c]));
        json_object_set_new(pc, classes[c], o);
    }
    json_object_set_new(j, "per_class", pc);
    json_t *mc = json_array();
    for (int c = 0; c < C; c++)
        if (r->present[c]) json_array_append_new(mc, json_string(classes[c]));
    json_object_set_new(j, "macro_classes", mc);
    json_object_set_new(j, "macro_note",
                        json_string("macro averages run over the classes present in the labels or the "
                                    "predictions (scikit-learn's default); auc_macro over the classes "
                                    "whose one-vs-rest AUC is defined"));
    json_t *w = json_array();
    for (int b = 0; b < 5; b++)
        if (r->warnings & (1u << b)) json_array_append_new(w, json_string(warning_names[b]));
    json_object_set_new(j, "warnings", w);
}
