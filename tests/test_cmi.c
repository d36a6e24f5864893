/* eval/cmi.c against a brute-force O(N^2) float64 numpy evaluation of paper
 * Eq. 5-8 (tests/reference/cmi_reference.py -> tests/golden/cmi.json). */
#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../eval/cmi.h"
#include "../nn/error.h"
#include "test.h"

#define GOLDEN "tests/golden/cmi.json"

static int rel_close(double a, double b, double rtol)
{
    return fabs(a - b) <= rtol * fabs(b) + 1e-12;
}

TEST(cmi_golden_bruteforce)
{
    json_error_t err;
    json_t *root = json_load_file(GOLDEN, 0, &err);
    REQUIRE(root, "%s: %s (regenerate with tests/reference/cmi_reference.py)", GOLDEN, err.text);
    json_t *cases = json_object_get(root, "cases");
    REQUIRE(json_array_size(cases) >= 8, "golden file has %zu cases", json_array_size(cases));
    size_t ci;
    json_t *c;
    int n = 0, nvals = 0;
    json_array_foreach(cases, ci, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        int N = (int)json_integer_value(json_object_get(c, "N"));
        int D = (int)json_integer_value(json_object_get(c, "D"));
        int C = (int)json_integer_value(json_object_get(c, "C"));
        int s = eval_simplex_from_name(json_string_value(json_object_get(c, "simplex")));
        json_t *jx = json_object_get(c, "x"), *jy = json_object_get(c, "y"), *e = json_object_get(c, "expected");
        REQUIRE(name && s >= 0 && (int)json_array_size(jx) == N * D && (int)json_array_size(jy) == N,
                "case %zu malformed", ci);
        float *x = malloc((size_t)N * D * sizeof *x);
        int *y = malloc((size_t)N * sizeof *y);
        for (int i = 0; i < N * D; i++) x[i] = (float)json_number_value(json_array_get(jx, i));
        for (int i = 0; i < N; i++) y[i] = (int)json_integer_value(json_array_get(jy, i));

        eval_cmi_result r;
        REQUIRE(eval_cmi_measure(x, y, N, D, C, (eval_simplex)s, &r) == 0, "%s: %s", name, ncmi_error());
        EXPECT(r.n == N && r.C == C, "%s: n %lld C %d", name, (long long)r.n, r.C);
        EXPECT(r.n_classes_present == (int)json_integer_value(json_object_get(e, "n_classes_present")),
               "%s: %d classes present", name, r.n_classes_present);
        const char *keys[4] = {"cmi", "gamma", "ncmi", "cc_accuracy"};
        double ours[4] = {r.cmi, r.gamma, r.ncmi, r.cc_accuracy};
        for (int k = 0; k < 4; k++) {
            json_t *v = json_object_get(e, keys[k]);
            nvals++;
            if (json_is_null(v)) {
                EXPECT(isnan(ours[k]), "%s: %s = %g, expected undefined", name, keys[k], ours[k]);
                continue;
            }
            double want = json_number_value(v);
            EXPECT(rel_close(ours[k], want, 1e-6), "%s: %s ours %.12g, brute force %.12g", name, keys[k], ours[k],
                   want);
        }

        /* streaming in uneven chunks gives the same values */
        eval_cmi m;
        REQUIRE(eval_cmi_init(&m, C, D, (eval_simplex)s) == 0, "%s", ncmi_error());
        int cuts[4] = {0, N / 3, N / 3 + 1, N};
        for (int k = 0; k < 3; k++)
            eval_cmi_add_centroids(&m, x + (size_t)cuts[k] * D, y + cuts[k], cuts[k + 1] - cuts[k]);
        REQUIRE(eval_cmi_finish_centroids(&m) == 0, "%s", ncmi_error());
        for (int k = 2; k >= 0; k--) /* any order */
            eval_cmi_add_terms(&m, x + (size_t)cuts[k] * D, y + cuts[k], cuts[k + 1] - cuts[k]);
        eval_cmi_result r2;
        REQUIRE(eval_cmi_get(&m, &r2) == 0, "%s", ncmi_error());
        EXPECT(rel_close(r2.cmi, r.cmi, 1e-12) && rel_close(r2.gamma, r.gamma, 1e-12) &&
                   r2.cc_accuracy == r.cc_accuracy,
               "%s: chunked %.15g %.15g vs %.15g %.15g", name, r2.cmi, r2.gamma, r.cmi, r.gamma);
        eval_cmi_free(&m);
        free(x);
        free(y);
        n++;
    }
    json_decref(root);
    printf("    cmi vs brute force: %d cases, %d values within 1e-6 relative\n", n, nvals);
}

TEST(cmi_threads_simplex_and_errors)
{
    enum { N = 300, D = 9, C = 3 };
    static float x[N * D];
    static int y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % C;
        for (int j = 0; j < D; j++) x[i * D + j] = (float)(sin(i * 0.37 + j * 1.3) + (j == y[i]) * 4.0);
    }
    eval_cmi_result a, b;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    REQUIRE(eval_cmi_measure(x, y, N, D, C, EVAL_SIMPLEX_NSF, &a) == 0, "%s", ncmi_error());
    omp_set_num_threads(3);
    REQUIRE(eval_cmi_measure(x, y, N, D, C, EVAL_SIMPLEX_NSF, &b) == 0, "%s", ncmi_error());
    omp_set_num_threads(saved);
    EXPECT(a.cmi == b.cmi && a.gamma == b.gamma && a.cc_accuracy == b.cc_accuracy,
           "results depend on the thread count");
    EXPECT(a.cc_accuracy > 0.9, "separable classes: cc accuracy %g", a.cc_accuracy);

    /* simplex: NSF sums to 1 - O(1e-8), softmax to 1 */
    double lp[D], sum = 0;
    eval_simplex_log(EVAL_SIMPLEX_NSF, x, D, lp);
    for (int j = 0; j < D; j++) sum += exp(lp[j]);
    EXPECT(sum < 1 && sum > 1 - 1e-7, "nsf sum %.12g", sum);
    eval_simplex_log(EVAL_SIMPLEX_SOFTMAX, x, D, lp);
    sum = 0;
    for (int j = 0; j < D; j++) sum += exp(lp[j]);
    EXPECT_NEAR(sum, 1.0, 1e-12);
    /* huge inputs stay finite in log space */
    float big[3] = {-1e30f, 0.f, 1e30f};
    double lb[3];
    eval_simplex_log(EVAL_SIMPLEX_NSF, big, 3, lb);
    EXPECT(isfinite(lb[0]) && isfinite(lb[1]) && isfinite(lb[2]), "nsf log not finite");
    EXPECT(eval_simplex_from_name("nsf") == EVAL_SIMPLEX_NSF && eval_simplex_from_name("softmax") ==
               EVAL_SIMPLEX_SOFTMAX && eval_simplex_from_name("relu") == -1, "simplex names");

    /* pass 2 over different data is detected; no samples is an error */
    eval_cmi m;
    REQUIRE(eval_cmi_init(&m, C, D, EVAL_SIMPLEX_SOFTMAX) == 0, "%s", ncmi_error());
    eval_cmi_add_centroids(&m, x, y, N);
    REQUIRE(eval_cmi_finish_centroids(&m) == 0, "%s", ncmi_error());
    eval_cmi_add_terms(&m, x, y, N - 1);
    EXPECT(eval_cmi_get(&m, &a) == -1 && strstr(ncmi_error(), "pass 2"), "count mismatch not caught: %s",
           ncmi_error());
    eval_cmi_free(&m);
    REQUIRE(eval_cmi_init(&m, C, D, EVAL_SIMPLEX_SOFTMAX) == 0, "%s", ncmi_error());
    EXPECT(eval_cmi_finish_centroids(&m) == -1, "no samples accepted");
    eval_cmi_free(&m);
    EXPECT(eval_cmi_init(&m, 0, D, EVAL_SIMPLEX_SOFTMAX) == -1, "C = 0 accepted");
}
