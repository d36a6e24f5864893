/* eval/metrics.c against scikit-learn 1.2 (golden file written by
 * tests/reference/metrics_reference.py), plus hand-checked values. */
#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../eval/metrics.h"
#include "../nn/error.h"
#include "test.h"

#define GOLDEN "tests/golden/metrics.json"
#define TOL 1e-9

static int n_checked;

/* expected null <=> ours NaN; else |ours - expected| <= TOL */
static int check_val(double ours, json_t *e, const char *cname, const char *what, int idx)
{
    n_checked++;
    if (!e) {
        test_fail_at(__FILE__, __LINE__, "%s: %s: missing from the golden file", cname, what);
        return 0;
    }
    if (json_is_null(e)) {
        if (isnan(ours)) return 1;
        test_fail_at(__FILE__, __LINE__, "%s: %s[%d]: ours %.17g, sklearn undefined", cname, what, idx, ours);
        return 0;
    }
    double x = json_number_value(e);
    if (fabs(ours - x) <= TOL) return 1;
    test_fail_at(__FILE__, __LINE__, "%s: %s[%d]: ours %.17g, sklearn %.17g", cname, what, idx, ours, x);
    return 0;
}

static void check_bool(int ours, json_t *e, const char *cname, const char *what)
{
    n_checked++;
    if (!json_is_boolean(e))
        test_fail_at(__FILE__, __LINE__, "%s: %s missing", cname, what);
    else if (!!ours != json_is_true(e))
        test_fail_at(__FILE__, __LINE__, "%s: warning %s: ours %d, sklearn %d", cname, what, !!ours, json_is_true(e));
}

typedef struct {
    const char *name;
    int C, n;
    int *y, *p;
    double *s;
} gcase;

static int load_case(json_t *c, gcase *g)
{
    g->name = json_string_value(json_object_get(c, "name"));
    g->C = (int)json_integer_value(json_object_get(c, "C"));
    json_t *yt = json_object_get(c, "y_true"), *yp = json_object_get(c, "y_pred"),
           *k = json_object_get(c, "scores_int");
    g->n = (int)json_array_size(yt);
    if (!g->name || g->C < 2 || g->n < 1 || (int)json_array_size(yp) != g->n || (int)json_array_size(k) != g->n)
        return -1;
    int normalize = json_is_true(json_object_get(c, "normalize"));
    g->y = malloc(g->n * sizeof *g->y);
    g->p = malloc(g->n * sizeof *g->p);
    g->s = malloc((size_t)g->n * g->C * sizeof *g->s);
    for (int i = 0; i < g->n; i++) {
        g->y[i] = (int)json_integer_value(json_array_get(yt, i));
        g->p[i] = (int)json_integer_value(json_array_get(yp, i));
        json_t *row = json_array_get(k, i);
        if ((int)json_array_size(row) != g->C) return -1;
        double sum = 0;
        for (int j = 0; j < g->C; j++) sum += (double)json_integer_value(json_array_get(row, j));
        for (int j = 0; j < g->C; j++) {
            double v = (double)json_integer_value(json_array_get(row, j));
            g->s[(size_t)i * g->C + j] = normalize ? v / sum : v;
        }
    }
    return 0;
}

static void free_case(gcase *g)
{
    free(g->y);
    free(g->p);
    free(g->s);
}

TEST(metrics_golden_sklearn)
{
    json_error_t err;
    json_t *root = json_load_file(GOLDEN, 0, &err);
    REQUIRE(root, "%s: %s (regenerate with tests/reference/metrics_reference.py)", GOLDEN, err.text);
    json_t *cases = json_object_get(root, "cases");
    REQUIRE(json_array_size(cases) >= 50, "golden file has %zu cases", json_array_size(cases));
    n_checked = 0;
    int ncases = 0, nboot = 0, n_ovr = 0, n_undef_auc = 0;
    size_t ci;
    json_t *c;
    json_array_foreach(cases, ci, c)
    {
        gcase g;
        REQUIRE(load_case(c, &g) == 0, "case %zu malformed", ci);
        const int C = g.C, n = g.n;
        const char *nm = g.name;
        json_t *e = json_object_get(c, "expected");
        int *y = g.y, *p = g.p;
        double *s = g.s;

        check_val(eval_accuracy(y, p, n), json_object_get(e, "accuracy"), nm, "accuracy", 0);
        unsigned wb = 0;
        check_val(eval_balanced_accuracy(y, p, n, C, &wb), json_object_get(e, "balanced_accuracy"), nm,
                  "balanced_accuracy", 0);
        check_bool(wb & EVAL_WARN_BALANCED, json_object_get(e, "warn_balanced"), nm, "balanced");

        static const char *avg_names[3] = {"macro", "micro", "weighted"};
        for (int a = 0; a < 3; a++) {
            unsigned w = 0;
            eval_prf r = eval_prf_average(y, p, n, C, (eval_average)a, &w);
            char key[64];
            snprintf(key, sizeof key, "precision_%s", avg_names[a]);
            check_val(r.precision, json_object_get(e, key), nm, key, 0);
            snprintf(key, sizeof key, "recall_%s", avg_names[a]);
            check_val(r.recall, json_object_get(e, key), nm, key, 0);
            snprintf(key, sizeof key, "f1_%s", avg_names[a]);
            check_val(r.f1, json_object_get(e, key), nm, key, 0);
            if (a == 0) {
                check_bool(w & EVAL_WARN_PRECISION, json_object_get(e, "warn_precision"), nm, "precision");
                check_bool(w & EVAL_WARN_RECALL, json_object_get(e, "warn_recall"), nm, "recall");
            }
        }

        double prec[8], rec[8], f1[8], auc[8];
        int64_t sup[8], cm[64];
        eval_prf_per_class(y, p, n, C, prec, rec, f1, sup, NULL);
        for (int k = 0; k < C; k++) {
            check_val(prec[k], json_array_get(json_object_get(e, "precision"), k), nm, "precision", k);
            check_val(rec[k], json_array_get(json_object_get(e, "recall"), k), nm, "recall", k);
            check_val(f1[k], json_array_get(json_object_get(e, "f1"), k), nm, "f1", k);
            check_val((double)sup[k], json_array_get(json_object_get(e, "support"), k), nm, "support", k);
        }
        eval_confusion_matrix(y, p, n, C, cm);
        json_t *ecm = json_object_get(e, "confusion_matrix");
        for (int i = 0; i < C; i++)
            for (int k = 0; k < C; k++)
                check_val((double)cm[i * C + k], json_array_get(json_array_get(ecm, i), k), nm, "confusion", i * C + k);

        if (C >= 3)
            for (int k = 1; k < C; k++)
                check_val(eval_top_k_accuracy(y, s, n, C, k), json_array_get(json_object_get(e, "top_k"), k - 1), nm,
                          "top_k", k);

        double macro, weighted;
        unsigned wa = 0;
        int defined = eval_auc_ovr(y, s, n, C, auc, &macro, &weighted, &wa);
        int exp_defined = 0;
        for (int k = 0; k < C; k++) {
            json_t *ea = json_array_get(json_object_get(e, "auc"), k);
            check_val(auc[k], ea, nm, "auc", k);
            exp_defined += !json_is_null(ea);
        }
        EXPECT(defined == exp_defined, "%s: %d classes with an AUC, sklearn %d", nm, defined, exp_defined);
        EXPECT(!!(wa & EVAL_WARN_AUC) == (defined < C), "%s: AUC warning flag", nm);
        n_undef_auc += defined < C;
        check_val(macro, json_object_get(e, "auc_macro"), nm, "auc_macro", 0);
        check_val(weighted, json_object_get(e, "auc_weighted"), nm, "auc_weighted", 0);
        if (json_object_get(e, "ovr_macro")) {
            check_val(macro, json_object_get(e, "ovr_macro"), nm, "roc_auc_score ovr macro", 0);
            check_val(weighted, json_object_get(e, "ovr_weighted"), nm, "roc_auc_score ovr weighted", 0);
            n_ovr++;
        }
        if (C == 2) {
            check_val(eval_metric_compute(EVAL_M_AUC_BINARY, y, p, s, n, C), json_object_get(e, "auc_binary"), nm,
                      "auc_binary", 0);
        }

        /* the report gives the same numbers */
        eval_report R;
        REQUIRE(eval_report_compute(&R, y, p, s, n, C) == 0, "%s", ncmi_error());
        check_val(R.macro.f1, json_object_get(e, "f1_macro"), nm, "report f1_macro", 0);
        check_val(R.weighted.f1, json_object_get(e, "f1_weighted"), nm, "report f1_weighted", 0);
        check_val(R.balanced_accuracy, json_object_get(e, "balanced_accuracy"), nm, "report balanced_accuracy", 0);
        check_val(R.auc_macro, json_object_get(e, "auc_macro"), nm, "report auc_macro", 0);
        if (C == 2) check_val(R.auc_binary, json_object_get(e, "auc_binary"), nm, "report auc", 0);
        eval_report_free(&R);

        json_t *bo = json_object_get(c, "bootstrap");
        if (bo) {
            int B = (int)json_integer_value(json_object_get(bo, "B"));
            uint64_t seed = (uint64_t)json_integer_value(json_object_get(bo, "seed"));
            double level = json_number_value(json_object_get(bo, "level"));
            const char *key;
            json_t *v;
            json_object_foreach(json_object_get(bo, "values"), key, v)
            {
                int m = eval_metric_from_name(key);
                REQUIRE(m >= 0, "unknown metric %s", key);
                eval_ci r;
                REQUIRE(eval_bootstrap_ci((eval_metric)m, y, p, s, n, C, B, seed, level, &r) == 0, "%s", ncmi_error());
                char what[64];
                snprintf(what, sizeof what, "bootstrap %s point", key);
                check_val(r.point, json_object_get(v, "point"), nm, what, 0);
                snprintf(what, sizeof what, "bootstrap %s lo", key);
                check_val(r.lo, json_object_get(v, "lo"), nm, what, 0);
                snprintf(what, sizeof what, "bootstrap %s hi", key);
                check_val(r.hi, json_object_get(v, "hi"), nm, what, 0);
                snprintf(what, sizeof what, "bootstrap %s n_valid", key);
                check_val(r.n_valid, json_object_get(v, "n_valid"), nm, what, 0);
                EXPECT(r.B == B, "%s: B", nm);
            }
            nboot++;
        }
        free_case(&g);
        ncases++;
    }
    json_decref(root);
    printf("    metrics vs sklearn: %d cases (%d with undefined AUCs, %d checked against roc_auc_score ovr, "
           "%d bootstrapped), %d values checked within %g\n",
           ncases, n_undef_auc, n_ovr, nboot, n_checked, TOL);
    EXPECT(ncases >= 50 && n_undef_auc >= 5 && n_ovr >= 5 && nboot >= 5 && n_checked > 3000,
           "too few golden checks: %d cases, %d values", ncases, n_checked);
}

/* values worked out by hand (and with sklearn, snippets in comments) */
TEST(metrics_hand_values)
{
    /* roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.75 (sklearn docs) */
    int pos[4] = {0, 0, 1, 1};
    double sc[4] = {0.1, 0.4, 0.35, 0.8};
    EXPECT_NEAR(eval_auc_binary(pos, sc, 4), 0.75, 1e-15);
    /* ties count one half: roc_auc_score([0,1,0,1], [0.5,0.5,0.2,0.9]) = 0.875 */
    int pos2[4] = {0, 1, 0, 1};
    double sc2[4] = {0.5, 0.5, 0.2, 0.9};
    EXPECT_NEAR(eval_auc_binary(pos2, sc2, 4), 0.875, 1e-15);
    /* constant scores: 0.5; one class only: undefined */
    double flat[4] = {0.3, 0.3, 0.3, 0.3};
    EXPECT_NEAR(eval_auc_binary(pos2, flat, 4), 0.5, 1e-15);
    int allpos[4] = {1, 1, 1, 1};
    EXPECT(isnan(eval_auc_binary(allpos, sc, 4)), "AUC with one class must be NaN");

    /* 3 classes, class 2 absent from the labels: its AUC undefined, macro over the two others */
    int y[6] = {0, 0, 1, 1, 0, 1}, p[6] = {0, 2, 1, 0, 0, 1};
    double s[18] = {0.8, 0.1, 0.1, 0.3, 0.2, 0.5, 0.1, 0.7, 0.2, 0.5, 0.4, 0.1, 0.6, 0.3, 0.1, 0.2, 0.6, 0.2};
    double auc[3], macro, weighted;
    unsigned w = 0;
    EXPECT(eval_auc_ovr(y, s, 6, 3, auc, &macro, &weighted, &w) == 2, "two defined AUCs");
    EXPECT(isnan(auc[2]) && (w & EVAL_WARN_AUC), "class 2 AUC undefined and flagged");
    EXPECT_NEAR(macro, (auc[0] + auc[1]) / 2, 1e-15);
    EXPECT_NEAR(weighted, (3 * auc[0] + 3 * auc[1]) / 6, 1e-15);
    /* class 2 is predicted but never true: it is in the macro set (precision 0, recall 0 warned) */
    unsigned wp = 0;
    eval_prf r = eval_prf_average(y, p, 6, 3, EVAL_AVG_MACRO, &wp);
    /* class 0: tp 2, pred 3, true 3 -> P 2/3 R 2/3; class 1: tp 2, pred 2, true 3 -> P 1 R 2/3; class 2: 0, 0 */
    EXPECT_NEAR(r.precision, (2.0 / 3 + 1 + 0) / 3, 1e-15);
    EXPECT_NEAR(r.recall, (2.0 / 3 + 2.0 / 3 + 0) / 3, 1e-15);
    EXPECT(wp & EVAL_WARN_RECALL, "recall of a class absent from the labels is warned");
    EXPECT(!(wp & EVAL_WARN_PRECISION), "every class in the macro set was predicted");
    unsigned wbal = 0;
    EXPECT_NEAR(eval_balanced_accuracy(y, p, 6, 3, &wbal), (2.0 / 3 + 2.0 / 3) / 2, 1e-15);
    EXPECT(wbal & EVAL_WARN_BALANCED, "balanced accuracy warns about predicted classes absent from labels");
    /* top-k ties: scores equal for classes 0 and 2 of sample 0 -> class 2 ranks first (sklearn) */
    int yt[1] = {0};
    double st[3] = {0.4, 0.2, 0.4};
    EXPECT_NEAR(eval_top_k_accuracy(yt, st, 1, 3, 1), 0.0, 0);
    EXPECT_NEAR(eval_top_k_accuracy(yt, st, 1, 3, 2), 1.0, 0);
    int yt2[1] = {2};
    EXPECT_NEAR(eval_top_k_accuracy(yt2, st, 1, 3, 1), 1.0, 0);
    /* names round-trip */
    for (int m = 0; m < EVAL_M_COUNT; m++)
        EXPECT(eval_metric_from_name(eval_metric_name((eval_metric)m)) == m, "metric name %d", m);
    EXPECT(eval_metric_from_name("nope") == -1, "unknown metric name");
}

TEST(metrics_bootstrap_threads_and_errors)
{
    enum { N = 200, C = 4 };
    static int y[N], p[N];
    static double s[N * C];
    for (int i = 0; i < N; i++) {
        y[i] = (i * 7) % C;
        p[i] = i % 3 ? y[i] : (i * 5) % C;
        for (int c = 0; c < C; c++) s[i * C + c] = ((i * 31 + c * 17) % 23) / 23.0 + (c == y[i]) * 0.3;
    }
    eval_ci a, b;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    REQUIRE(eval_bootstrap_ci(EVAL_M_AUC_MACRO, y, p, s, N, C, 64, 7, 0.95, &a) == 0, "%s", ncmi_error());
    omp_set_num_threads(3);
    REQUIRE(eval_bootstrap_ci(EVAL_M_AUC_MACRO, y, p, s, N, C, 64, 7, 0.95, &b) == 0, "%s", ncmi_error());
    omp_set_num_threads(saved);
    EXPECT(a.lo == b.lo && a.hi == b.hi && a.point == b.point && a.n_valid == 64,
           "bootstrap depends on the thread count: [%.17g, %.17g] vs [%.17g, %.17g]", a.lo, a.hi, b.lo, b.hi);
    EXPECT(a.lo < a.point && a.point < a.hi, "CI [%g, %g] around %g", a.lo, a.hi, a.point);
    /* another seed gives another interval */
    REQUIRE(eval_bootstrap_ci(EVAL_M_AUC_MACRO, y, p, s, N, C, 64, 8, 0.95, &b) == 0, "%s", ncmi_error());
    EXPECT(a.lo != b.lo || a.hi != b.hi, "seed has no effect");
    EXPECT(eval_bootstrap_ci(EVAL_M_ACCURACY, y, p, s, N, C, 0, 1, 0.95, &a) == -1, "B = 0 accepted");
    EXPECT(eval_bootstrap_ci(EVAL_M_ACCURACY, y, p, s, N, C, 10, 1, 1.5, &a) == -1, "level 1.5 accepted");
    EXPECT(eval_bootstrap_ci(EVAL_M_ACCURACY, y, p, s, 0, C, 10, 1, 0.95, &a) == -1, "n = 0 accepted");
    eval_report R;
    EXPECT(eval_report_compute(&R, y, p, s, 0, C) == -1, "empty report accepted");
}
