/* `ncmi eval --predictions` and `ncmi measure`: metrics of a predictions file, and
 * CMI / Gamma / NCMI of a feature set. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../eval/cmi.h"
#include "../eval/json_io.h"
#include "../eval/manifest.h"
#include "../eval/metrics.h"
#include "../eval/predictions.h"
#include "../features/features_h5.h"
#include "../nn/error.h"
#include "../train/trainer.h"
#include "train_config.h"
#include "train_job.h"

enum { EXIT_OK = NCMI_EXIT_OK, EXIT_USAGE = NCMI_EXIT_USAGE, EXIT_INPUT = NCMI_EXIT_INPUT, EXIT_PARTIAL = NCMI_EXIT_PARTIAL };

/* ---- small helpers ---- */

typedef struct {
    const char *name; /* "--json" */
    const char **val; /* where the value goes */
} cmd_opt;

/* --name VALUE or --name=VALUE; -h/--help sets *help. 0, or -1 (usage, message set). */
static int parse_opts(int argc, char **argv, cmd_opt *opts, int nopts, int *help)
{
    *help = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = 1;
            return 0;
        }
        int k;
        for (k = 0; k < nopts; k++) {
            size_t len = strlen(opts[k].name);
            if (strncmp(a, opts[k].name, len) != 0) continue;
            if (a[len] == '=') {
                *opts[k].val = a + len + 1;
                break;
            }
            if (a[len] == 0) {
                if (i + 1 >= argc) return ncmi_error_set("option %s needs a value", a);
                *opts[k].val = argv[++i];
                break;
            }
        }
        if (k == nopts) {
            if (a[0] == '-') return ncmi_error_set("unknown option '%s' (see --help)", a);
            return ncmi_error_set("unexpected argument '%s' (see --help)", a);
        }
    }
    return 0;
}

static int fail(const char *cmd, int code)
{
    fprintf(stderr, "ncmi: %s: %s\n", cmd, ncmi_error());
    return code;
}



static void print_value(const char *name, double v, const char *note)
{
    if (isfinite(v))
        printf("  %-20s %.6f%s%s\n", name, v, note ? "  " : "", note ? note : "");
    else
        printf("  %-20s undefined%s%s\n", name, note ? "  " : "", note ? note : "");
}

/* ---- ncmi eval ---- */

static const char eval_help[] =
    "usage: ncmi eval --predictions CSV [--json OUT] [--bootstrap B] [--seed S]\n"
    "       ncmi eval --run DIR [--split test|val|train] [--checkpoint best|last]\n"
    "                 [--method linear|cc|learned|lp]\n"
    "\n"
    "--run: rebuild the model and data of a run folder from its config.yaml (relative paths\n"
    "in it, such as data.root, are taken from the current folder), load best.safetensors\n"
    "(or last), predict the split (default: the config's eval.split) and write\n"
    "DIR/predictions_<split>[_<method>][_last].csv and metrics_<split>[_<method>][_last].json\n"
    "(the method suffix for NCMI runs; _last for --checkpoint last), then print the metrics.\n"
    "Methods: linear (a linear head); NCMI: cc (class-mean centroids of the training set,\n"
    "the default unless ncmi.eval says learned), learned (sigma(xi)), lp (linear probing,\n"
    "retrained with the config's lp.* and seed: the same result as at the end of training).\n"
    "cc and lp use the class-mean centroids and the probe stored in best.safetensors at the\n"
    "end of training; for a run trained before they were stored, eval computes them from the\n"
    "training set and stores them there (ncmi score needs them).\n"
    "\n"
    "Metrics of a predictions file (slide_id,label,pred,p_<class>...; the class list and\n"
    "order are those of the p_<class> columns; label and pred are class names or indices).\n"
    "\n"
    "  --predictions CSV  predictions file (e.g. runs/<name>/predictions_test.csv)\n"
    "  --json OUT         also write the metrics as JSON (keys as scikit-learn names them:\n"
    "                     accuracy, balanced_accuracy, f1_macro, f1_weighted, precision_macro,\n"
    "                     recall_macro, auc_macro, auc_weighted, confusion_matrix, per_class, ...)\n"
    "  --bootstrap B      95% bootstrap confidence intervals (percentile method, B resamples)\n"
    "  --seed S           seed of the bootstrap (default 0)\n"
    "\n"
    "Macro averages run over the classes present in the labels or the predictions\n"
    "(scikit-learn's default). AUC is one-vs-rest; a class absent from the labels has an\n"
    "undefined AUC and auc_macro / auc_weighted average over the classes where it is defined.\n"
    "Exit codes: 0 ok, 1 usage error, 2 input error.\n";


static int eval_run(const char *run, const char *split, const char *ckpt, const char *method_s)
{
    const char *cmd = "eval";
    const ncmi_cfg_schema *S = &ncmi_train_schema;
    char path[4200], ckpt_path[4200];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    if (ckpt && strcmp(ckpt, "best") && strcmp(ckpt, "last")) {
        ncmi_error_set("--checkpoint '%s': expected best or last", ckpt);
        return fail(cmd, EXIT_USAGE);
    }
    const int last = ckpt && !strcmp(ckpt, "last");
    snprintf(ckpt_path, sizeof ckpt_path, "%s/%s.safetensors", run, last ? "last" : "best");
    if (split && strcmp(split, "test") && strcmp(split, "val") && strcmp(split, "train")) {
        ncmi_error_set("--split '%s': expected test, val or train", split);
        return fail(cmd, EXIT_USAGE);
    }
    int method = -1;
    if (method_s && (method = tr_method_from_name(method_s)) < 0) {
        ncmi_error_set("--method '%s': expected linear, cc, learned or lp", method_s);
        return fail(cmd, EXIT_USAGE);
    }
    ncmi_train_config c;
    ncmi_cfg_defaults(S, &c);
    int rc = EXIT_INPUT;
    cli_train_job job;
    tr_trainer tr;
    int have_job = 0, have_tr = 0;
    if (ncmi_cfg_load_file(S, &c, path)) goto out;
    ncmi_train_config_resolve(&c);
    if (ncmi_train_config_check(&c)) {
        ncmi_error_prefix("%s", path);
        goto out;
    }
    if (cli_train_job_init(&job, &c)) goto out;
    have_job = 1;
    tr_config tc;
    cli_train_job_tr_config(&c, &job, &tc);
    if (tr_init(&tr, &tc, &job.model, &job.train, &job.val, job.have_test ? &job.test : NULL,
                &job.init_rng))
        goto out;
    have_tr = 1;
    if (method < 0) method = tc.head == TR_HEAD_NCMI ? (int)tc.ncmi_eval : TR_METHOD_LINEAR;
    if ((tc.head == TR_HEAD_NCMI) != (method != TR_METHOD_LINEAR)) {
        ncmi_error_set("--method %s: the run has a%s head (methods: %s)", tr_method_name((tr_method)method),
                       tc.head == TR_HEAD_NCMI ? "n ncmi" : " linear",
                       tc.head == TR_HEAD_NCMI ? "cc, learned, lp" : "linear");
        rc = EXIT_USAGE;
        goto out;
    }
    if (tr_load_weights(&tr, ckpt_path)) goto out;
    if (tc.head == TR_HEAD_NCMI && !last && !tr_predictors_stored(&tr)) {
        /* a run from before the predictors were stored: compute them once from
         * the training set and store them, so ncmi score can use the run */
        if (tr_compute_predictors(&tr)) goto out;
        if (tr_save_predictors(&tr, ckpt_path))
            fprintf(stderr, "ncmi: eval: warning: cannot store the class-mean centroids and the linear probe in "
                            "%s (ncmi score needs them): %s\n", ckpt_path, ncmi_error());
        else
            fprintf(stderr, "ncmi: eval: stored the class-mean centroids and the linear probe in %s (for ncmi "
                            "score)\n", ckpt_path);
        ncmi_error_clear();
    }
    const char *sp = split ? split : c.eval_split == NCMI_EVAL_SPLIT_VAL ? "val" : "test";
    const tr_dataset *d = !strcmp(sp, "train") ? &job.train : !strcmp(sp, "val") ? &job.val : &job.test;
    if (!strcmp(sp, "test") && !job.have_test) {
        ncmi_error_set("%s: the run's data has no test set (data.n_test = 0); use --split val", path);
        goto out;
    }
    char *ep = tr_checkpoint_meta(ckpt_path, "epoch");
    int epoch = ep ? atoi(ep) : 0;
    free(ep);
    /* predictions_<split>[_<method>][_last] */
    char name[160];
    snprintf(name, sizeof name, "%.32s%s%s%s", d->name, tc.head == TR_HEAD_NCMI ? "_" : "",
             tc.head == TR_HEAD_NCMI ? tr_method_name((tr_method)method) : "", last ? "_last" : "");
    tr_dataset dn = *d;
    snprintf(dn.name, sizeof dn.name, "%.63s", name);
    double acc;
    if (tr_write_eval(&tr, &dn, (tr_method)method, run, 0, 0, epoch, &acc)) goto out;
    printf("%s: %s checkpoint (epoch %d), method %s, split %s\n", run, last ? "last" : "best", epoch,
           tr_method_name((tr_method)method), sp);
    printf("wrote %s/predictions_%s.csv and %s/metrics_%s.json\n", run, name, run, name);
    fflush(stdout);
    char pp[4300];
    snprintf(pp, sizeof pp, "%s/predictions_%s.csv", run, name);
    char *av[] = {"eval", "--predictions", pp, NULL};
    if (have_tr) tr_free(&tr);
    have_tr = 0;
    rc = ncmi_cmd_eval(3, av);
out:
    if ((rc == EXIT_INPUT && ncmi_error()[0]) || rc == EXIT_USAGE) fail(cmd, rc);
    if (have_tr) tr_free(&tr);
    if (have_job) cli_train_job_free(&job);
    ncmi_cfg_free(S, &c);
    return rc;
}

int ncmi_cmd_eval(int argc, char **argv)
{
    const char *cmd = "eval";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--run") || !strncmp(argv[i], "--run=", 6)) {
            const char *run = NULL, *split = NULL, *ckpt = NULL, *method = NULL;
            cmd_opt ro[] = {{"--run", &run}, {"--split", &split}, {"--checkpoint", &ckpt},
                            {"--method", &method}};
            int help;
            if (parse_opts(argc, argv, ro, 4, &help) != 0) return fail(cmd, EXIT_USAGE);
            if (help) {
                fputs(eval_help, stdout);
                return EXIT_OK;
            }
            return eval_run(run, split, ckpt, method);
        }
    const char *pred_path = NULL, *json_path = NULL, *boot_s = NULL, *seed_s = NULL;
    cmd_opt opts[] = {{"--predictions", &pred_path}, {"--json", &json_path}, {"--bootstrap", &boot_s},
                      {"--seed", &seed_s}};
    int help;
    if (parse_opts(argc, argv, opts, 4, &help) != 0) return fail(cmd, EXIT_USAGE);
    if (help) {
        fputs(eval_help, stdout);
        return EXIT_OK;
    }
    if (!pred_path) {
        ncmi_error_set("--predictions CSV is required (or --run DIR; see --help)");
        return fail(cmd, EXIT_USAGE);
    }
    long B = 0;
    unsigned long long seed = 0;
    if (boot_s) {
        char *end;
        B = strtol(boot_s, &end, 10);
        if (*end || B < 1 || B > 1000000) {
            ncmi_error_set("--bootstrap '%s': expected a number of resamples in [1, 1000000]", boot_s);
            return fail(cmd, EXIT_USAGE);
        }
    }
    if (seed_s) {
        char *end;
        seed = strtoull(seed_s, &end, 10);
        if (*end || !*seed_s) {
            ncmi_error_set("--seed '%s': expected a non-negative integer", seed_s);
            return fail(cmd, EXIT_USAGE);
        }
    }

    eval_predictions P;
    if (eval_predictions_read(&P, pred_path) != 0) return fail(cmd, EXIT_INPUT);
    eval_report R;
    if (eval_report_compute(&R, P.label, P.pred, P.prob, P.n, P.C) != 0) {
        eval_predictions_free(&P);
        return fail(cmd, EXIT_INPUT);
    }
    const int C = P.C;

    /* bootstrap */
    static const eval_metric ci_metrics[] = {EVAL_M_ACCURACY, EVAL_M_BALANCED_ACCURACY, EVAL_M_F1_MACRO,
                                             EVAL_M_F1_WEIGHTED, EVAL_M_AUC_MACRO, EVAL_M_AUC_WEIGHTED};
    enum { NCI = sizeof ci_metrics / sizeof ci_metrics[0] };
    eval_ci ci[NCI];
    if (B > 0)
        for (int k = 0; k < NCI; k++)
            if (eval_bootstrap_ci(ci_metrics[k], P.label, P.pred, P.prob, P.n, C, (int)B, seed, 0.95, &ci[k]) !=
                0) {
                eval_report_free(&R);
                eval_predictions_free(&P);
                return fail(cmd, EXIT_INPUT);
            }

    /* ---- print ---- */
    printf("%s: %d samples, %d classes:", pred_path, P.n, C);
    for (int c = 0; c < C; c++) printf(" %s", P.classes[c]);
    printf("\n");
    print_value("accuracy", R.accuracy, NULL);
    print_value("balanced_accuracy", R.balanced_accuracy, NULL);
    print_value("precision_macro", R.macro.precision, NULL);
    print_value("recall_macro", R.macro.recall, NULL);
    print_value("f1_macro", R.macro.f1, NULL);
    print_value("f1_micro", R.micro.f1, NULL);
    print_value("precision_weighted", R.weighted.precision, NULL);
    print_value("recall_weighted", R.weighted.recall, NULL);
    print_value("f1_weighted", R.weighted.f1, NULL);
    print_value("auc_macro", R.auc_macro, "(one-vs-rest)");
    print_value("auc_weighted", R.auc_weighted, "(one-vs-rest, weighted by support)");
    char note[300];
    if (C == 2) {
        snprintf(note, sizeof note, "(binary: p_%s scores class %s)", P.classes[1], P.classes[1]);
        print_value("auc", R.auc_binary, note);
    }
    for (int i = 0; i < 3; i++)
        if (R.top_k_k[i] < C) {
            char name[32];
            snprintf(name, sizeof name, "top_%d_accuracy", R.top_k_k[i]);
            print_value(name, R.top_k[i], NULL);
        }
    printf("Macro averages run over the %d classes present in the labels or the predictions "
           "(scikit-learn's default)",
           R.n_present);
    if (R.n_present < C) {
        printf("; left out (in neither):");
        for (int c = 0; c < C; c++)
            if (!R.present[c]) printf(" %s", P.classes[c]);
    }
    printf(".\n");
    if (R.n_auc_defined < C) {
        printf("AUC undefined (class absent from the labels, or the only one present):");
        for (int c = 0; c < C; c++)
            if (isnan(R.auc[c])) printf(" %s", P.classes[c]);
        printf("; auc_macro and auc_weighted average over the other %d classes.\n", R.n_auc_defined);
    }
    if (R.warnings & (EVAL_WARN_PRECISION | EVAL_WARN_RECALL | EVAL_WARN_BALANCED))
        printf("Ill-defined values were set to 0 as scikit-learn does:%s%s%s\n",
               R.warnings & EVAL_WARN_PRECISION ? " precision of a class never predicted;" : "",
               R.warnings & EVAL_WARN_RECALL ? " recall of a class absent from the labels;" : "",
               R.warnings & EVAL_WARN_BALANCED ? " balanced accuracy ignores predicted classes absent from "
                                                 "the labels;"
                                               : "");
    if (B > 0) {
        printf("95%% bootstrap confidence intervals (%ld resamples, seed %llu, percentile):\n", B, seed);
        for (int k = 0; k < NCI; k++) {
            printf("  %-20s %.6f [%.6f, %.6f]", eval_metric_name(ci_metrics[k]), ci[k].point, ci[k].lo, ci[k].hi);
            if (ci[k].n_valid < ci[k].B) printf("  (%d of %d resamples defined)", ci[k].n_valid, ci[k].B);
            printf("\n");
        }
    }
    printf("per class:\n  %-16s %9s %9s %9s %9s %9s\n", "class", "precision", "recall", "f1", "support", "auc");
    for (int c = 0; c < C; c++) {
        printf("  %-16s %9.4f %9.4f %9.4f %9lld ", P.classes[c], R.precision[c], R.recall[c], R.f1[c],
               (long long)R.support[c]);
        if (isnan(R.auc[c]))
            printf("%9s\n", "undef");
        else
            printf("%9.4f\n", R.auc[c]);
    }
    printf("confusion matrix (rows = label, columns = pred):\n  %-16s", "");
    for (int c = 0; c < C; c++) printf(" %8.8s", P.classes[c]);
    printf("\n");
    for (int i = 0; i < C; i++) {
        printf("  %-16s", P.classes[i]);
        for (int j = 0; j < C; j++) printf(" %8lld", (long long)R.confusion[(size_t)i * C + j]);
        printf("\n");
    }

    /* ---- JSON ---- */
    int rc = EXIT_OK;
    if (json_path) {
        json_t *j = json_object();
        json_object_set_new(j, "predictions", json_string(pred_path));
        json_object_set_new(j, "n", json_integer(P.n));
        eval_report_json(j, &R, (const char *const *)P.classes, C);
        if (B > 0) {
            json_t *cio = json_object();
            for (int k = 0; k < NCI; k++) {
                json_t *o = json_object();
                json_object_set_new(o, "point", eval_json_num(ci[k].point));
                json_object_set_new(o, "lo", eval_json_num(ci[k].lo));
                json_object_set_new(o, "hi", eval_json_num(ci[k].hi));
                json_object_set_new(o, "n_valid", json_integer(ci[k].n_valid));
                json_object_set_new(cio, eval_metric_name(ci_metrics[k]), o);
            }
            json_object_set_new(cio, "resamples", json_integer(B));
            json_object_set_new(cio, "seed", json_integer((json_int_t)seed));
            json_object_set_new(cio, "level", json_real(0.95));
            json_object_set_new(j, "ci", cio);
        }
        if (eval_json_write_atomic(json_path, j) != 0) rc = fail(cmd, EXIT_INPUT);
        json_decref(j);
    }
    eval_report_free(&R);
    eval_predictions_free(&P);
    return rc;
}

/* ---- ncmi measure ---- */

static const char measure_help[] =
    "usage: ncmi measure --features DIR_OR_H5 --manifest CSV [--simplex softmax|nsf]\n"
    "                    [--pool none|mean] [--split train|val|test] [--classes a,b,...]\n"
    "                    [--json OUT]\n"
    "\n"
    "Exact CMI, Gamma and NCMI (paper Eq. 5-8) of a feature set, and the accuracy of the\n"
    "nearest class centroid in KL (cc_accuracy).\n"
    "\n"
    "  --features P      a folder of <slide_id>.h5 features files (one per manifest row), or one\n"
    "                    features file (its slide id is the file name without .h5)\n"
    "  --manifest CSV    slide_id,label[,split,...]; labels are class names\n"
    "  --simplex S       softmax (default; as the paper's Fig. 2 on pretrained features) or nsf\n"
    "                    (normalized sigmoid, as the NCMI loss)\n"
    "  --pool none|mean  none (default): every row of every file is one sample labelled with its\n"
    "                    slide's label; mean: one mean vector per slide\n"
    "  --split S         only the manifest rows of this split\n"
    "  --classes LIST    class list and order (default: the sorted distinct labels)\n"
    "  --json OUT        also write cmi, gamma, ncmi, cc_accuracy, ... as JSON\n"
    "\n"
    "Exit codes: 0 ok, 1 usage error, 2 input error, 3 some slides had no features file\n"
    "(listed; measured without them).\n";

typedef struct {
    int row;     /* manifest row */
    char *file;  /* features file */
    int y;       /* class */
    int64_t n;   /* vectors (after pass 1) */
    features_h5 cache;
    int cached;
} measure_item;

/* splits "a,b,c" into a malloc'd array of strdup'd names */
static int split_list(const char *s, char ***out, int *n)
{
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    char **v = calloc((size_t)cap, sizeof *v);
    if (!v) return ncmi_error_set("out of memory");
    int k = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) {
            for (int i = 0; i < k; i++) free(v[i]);
            free(v);
            return ncmi_error_set("--classes '%s': empty class name", s);
        }
        v[k++] = strndup(p, len);
        if (!e) break;
        p = e + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

static void free_list(char **v, int n)
{
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

int ncmi_cmd_measure(int argc, char **argv)
{
    const char *cmd = "measure";
    const char *feat_path = NULL, *man_path = NULL, *simplex_s = NULL, *pool_s = NULL, *split_s = NULL,
               *classes_s = NULL, *json_path = NULL;
    cmd_opt opts[] = {{"--features", &feat_path}, {"--manifest", &man_path}, {"--simplex", &simplex_s},
                      {"--pool", &pool_s},         {"--split", &split_s},     {"--classes", &classes_s},
                      {"--json", &json_path}};
    int help;
    if (parse_opts(argc, argv, opts, 7, &help) != 0) return fail(cmd, EXIT_USAGE);
    if (help) {
        fputs(measure_help, stdout);
        return EXIT_OK;
    }
    if (!feat_path || !man_path) {
        ncmi_error_set("--features and --manifest are required (see --help)");
        return fail(cmd, EXIT_USAGE);
    }
    int simplex = simplex_s ? eval_simplex_from_name(simplex_s) : EVAL_SIMPLEX_SOFTMAX;
    if (simplex < 0) {
        ncmi_error_set("--simplex '%s': expected softmax or nsf", simplex_s);
        return fail(cmd, EXIT_USAGE);
    }
    int pool_mean = 0;
    if (pool_s) {
        if (strcmp(pool_s, "mean") == 0)
            pool_mean = 1;
        else if (strcmp(pool_s, "none") != 0) {
            ncmi_error_set("--pool '%s': expected none or mean", pool_s);
            return fail(cmd, EXIT_USAGE);
        }
    }
    if (split_s && strcmp(split_s, "train") && strcmp(split_s, "val") && strcmp(split_s, "test")) {
        ncmi_error_set("--split '%s': expected train, val or test", split_s);
        return fail(cmd, EXIT_USAGE);
    }
    char **classes = NULL;
    int C = 0;
    if (classes_s && split_list(classes_s, &classes, &C) != 0) return fail(cmd, EXIT_USAGE);

    int rc = EXIT_INPUT;
    eval_manifest M;
    memset(&M, 0, sizeof M);
    unsigned char *keep = NULL;
    int *y = NULL;
    measure_item *items = NULL;
    int nitems = 0, nmissing = 0;
    char **missing = NULL;
    float *pooled = NULL;
    int *pooled_y = NULL;
    eval_cmi acc;
    memset(&acc, 0, sizeof acc);
    int64_t *class_vectors = NULL, *class_slides = NULL;
    eval_cmi_result res;
    int D = 0;
    const char *first_file = NULL;
    int64_t total_vectors = 0;

    if (eval_manifest_read(&M, man_path) != 0) goto out;
    keep = calloc((size_t)(M.n ? M.n : 1), 1);
    y = calloc((size_t)(M.n ? M.n : 1), sizeof *y);
    items = calloc((size_t)(M.n ? M.n : 1), sizeof *items);
    missing = calloc((size_t)(M.n ? M.n : 1), sizeof *missing);
    if (!keep || !y || !items || !missing) {
        ncmi_error_set("out of memory");
        goto out;
    }
    int nkeep = 0;
    for (int i = 0; i < M.n; i++) {
        keep[i] = !split_s || (M.rows[i].split && strcmp(M.rows[i].split, split_s) == 0);
        nkeep += keep[i];
    }
    if (!nkeep) {
        ncmi_error_set("%s: no rows%s%s", man_path, split_s ? " with split " : "", split_s ? split_s : "");
        goto out;
    }
    if (!classes && eval_manifest_classes(&M, keep, &classes, &C) != 0) goto out;
    if (eval_manifest_labels(&M, keep, classes, C, y) != 0) goto out;

    /* which files */
    struct stat st;
    if (stat(feat_path, &st) != 0) {
        ncmi_error_set("%s: %s", feat_path, strerror(errno));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        for (int i = 0; i < M.n; i++) {
            if (!keep[i]) continue;
            char *f = NULL;
            if (asprintf(&f, "%s/%s.h5", feat_path, M.rows[i].slide_id) < 0) {
                ncmi_error_set("out of memory");
                goto out;
            }
            if (access(f, F_OK) != 0) {
                missing[nmissing++] = f;
                continue;
            }
            items[nitems++] = (measure_item){.row = i, .file = f, .y = y[i]};
        }
        if (!nitems) {
            ncmi_error_set("%s: none of the %d slides of %s has a features file <slide_id>.h5 here", feat_path,
                           nkeep, man_path);
            goto out;
        }
    } else {
        const char *base = strrchr(feat_path, '/');
        base = base ? base + 1 : feat_path;
        size_t len = strlen(base);
        if (len > 3 && strcmp(base + len - 3, ".h5") == 0) len -= 3;
        char *id = strndup(base, len);
        int row = id ? eval_manifest_find(&M, id) : -1;
        if (row < 0 || !keep[row]) {
            ncmi_error_set("%s: slide '%s' (the file name without .h5) is not in %s%s%s", feat_path, id ? id : "?",
                           man_path, split_s ? " with split " : "", split_s ? split_s : "");
            free(id);
            goto out;
        }
        free(id);
        items[nitems++] = (measure_item){.row = row, .file = strdup(feat_path), .y = y[row]};
    }

    /* pass 1: centroids (pool none) or pooled vectors (pool mean); keep files in memory up to a budget */
    const size_t budget = (size_t)1 << 30;
    size_t cached_bytes = 0;
    for (int k = 0; k < nitems; k++) {
        measure_item *it = &items[k];
        features_h5 f;
        if (features_h5_read(&f, it->file, 0) != 0) goto out;
        if (k == 0) {
            D = f.d;
            first_file = it->file;
            if (pool_mean) {
                pooled = calloc((size_t)nitems * D, sizeof *pooled);
                pooled_y = calloc((size_t)nitems, sizeof *pooled_y);
                if (!pooled || !pooled_y) {
                    features_h5_free(&f);
                    ncmi_error_set("out of memory");
                    goto out;
                }
            } else if (eval_cmi_init(&acc, C, D, (eval_simplex)simplex) != 0) {
                features_h5_free(&f);
                goto out;
            }
        } else if (f.d != D) {
            ncmi_error_set("%s: dataset 'features': dimension %d differs from the dimension %d of %s", it->file,
                           f.d, D, first_file);
            features_h5_free(&f);
            goto out;
        }
        if (f.n == 0) {
            ncmi_error_set("%s: dataset 'features' has no rows (slide %s)", it->file, M.rows[it->row].slide_id);
            features_h5_free(&f);
            goto out;
        }
        it->n = f.n;
        total_vectors += f.n;
        if (pool_mean) {
            /* mean in double, in row order */
            for (int j = 0; j < D; j++) {
                double s = 0;
                for (int64_t r = 0; r < f.n; r++) s += f.features[r * D + j];
                pooled[(size_t)k * D + j] = (float)(s / (double)f.n);
            }
            pooled_y[k] = it->y;
            features_h5_free(&f);
        } else {
            int *ys = malloc((size_t)f.n * sizeof *ys);
            if (!ys) {
                features_h5_free(&f);
                ncmi_error_set("out of memory");
                goto out;
            }
            for (int64_t r = 0; r < f.n; r++) ys[r] = it->y;
            eval_cmi_add_centroids(&acc, f.features, ys, f.n);
            free(ys);
            size_t bytes = (size_t)f.n * D * sizeof(float);
            if (cached_bytes + bytes <= budget) {
                it->cache = f;
                it->cached = 1;
                cached_bytes += bytes;
            } else {
                features_h5_free(&f);
            }
        }
    }

    /* pass 2 */
    if (pool_mean) {
        if (eval_cmi_measure(pooled, pooled_y, nitems, D, C, (eval_simplex)simplex, &res) != 0) goto out;
    } else {
        if (eval_cmi_finish_centroids(&acc) != 0) goto out;
        for (int k = 0; k < nitems; k++) {
            measure_item *it = &items[k];
            features_h5 f;
            if (it->cached) {
                f = it->cache;
            } else {
                if (features_h5_read(&f, it->file, 0) != 0) goto out;
                if (f.d != D || f.n != it->n) {
                    ncmi_error_set("%s: changed while being read (%lld x %d, was %lld x %d)", it->file,
                                   (long long)f.n, f.d, (long long)it->n, D);
                    features_h5_free(&f);
                    goto out;
                }
            }
            int *ys = malloc((size_t)f.n * sizeof *ys);
            if (!ys) {
                if (!it->cached) features_h5_free(&f);
                ncmi_error_set("out of memory");
                goto out;
            }
            for (int64_t r = 0; r < f.n; r++) ys[r] = it->y;
            eval_cmi_add_terms(&acc, f.features, ys, f.n);
            free(ys);
            if (it->cached) {
                features_h5_free(&it->cache);
                it->cached = 0;
            } else {
                features_h5_free(&f);
            }
        }
        if (eval_cmi_get(&acc, &res) != 0) goto out;
    }

    /* ---- print ---- */
    class_vectors = calloc((size_t)C, sizeof *class_vectors);
    class_slides = calloc((size_t)C, sizeof *class_slides);
    if (!class_vectors || !class_slides) {
        ncmi_error_set("out of memory");
        goto out;
    }
    for (int k = 0; k < nitems; k++) {
        class_vectors[items[k].y] += pool_mean ? 1 : items[k].n;
        class_slides[items[k].y]++;
    }
    printf("%s: %d slides, %lld vectors of dimension %d (simplex %s, pool %s%s%s)\n", feat_path, nitems,
           (long long)total_vectors, D, eval_simplex_name((eval_simplex)simplex), pool_mean ? "mean" : "none",
           split_s ? ", split " : "", split_s ? split_s : "");
    printf("  classes:");
    for (int c = 0; c < C; c++)
        printf(" %s (%lld slides, %lld samples)%s", classes[c], (long long)class_slides[c],
               (long long)class_vectors[c], c + 1 < C ? "," : "\n");
    print_value("CMI", res.cmi, NULL);
    print_value("Gamma", res.gamma, NULL);
    print_value("NCMI", res.ncmi, res.n_classes_present < 2 ? "(fewer than two classes)" : NULL);
    print_value("cc_accuracy", res.cc_accuracy, "(nearest class centroid in KL)");
    if (nmissing) {
        fprintf(stderr, "ncmi: measure: %d of %d slides have no features file and were left out:", nmissing, nkeep);
        for (int i = 0; i < nmissing; i++) fprintf(stderr, " %s", missing[i]);
        fprintf(stderr, "\n");
    }
    rc = nmissing ? EXIT_PARTIAL : EXIT_OK;

    if (json_path) {
        json_t *j = json_object();
        json_object_set_new(j, "cmi", eval_json_num(res.cmi));
        json_object_set_new(j, "gamma", eval_json_num(res.gamma));
        json_object_set_new(j, "ncmi", eval_json_num(res.ncmi));
        json_object_set_new(j, "cc_accuracy", eval_json_num(res.cc_accuracy));
        json_object_set_new(j, "n_samples", json_integer(res.n));
        json_object_set_new(j, "n_slides", json_integer(nitems));
        json_object_set_new(j, "dim", json_integer(D));
        json_object_set_new(j, "simplex", json_string(eval_simplex_name((eval_simplex)simplex)));
        json_object_set_new(j, "pool", json_string(pool_mean ? "mean" : "none"));
        if (split_s) json_object_set_new(j, "split", json_string(split_s));
        json_t *cl = json_array(), *cn = json_array();
        for (int c = 0; c < C; c++) {
            json_array_append_new(cl, json_string(classes[c]));
            json_array_append_new(cn, json_integer(class_vectors[c]));
        }
        json_object_set_new(j, "classes", cl);
        json_object_set_new(j, "class_counts", cn);
        json_t *mi = json_array();
        for (int i = 0; i < nmissing; i++) json_array_append_new(mi, json_string(missing[i]));
        json_object_set_new(j, "missing", mi);
        if (eval_json_write_atomic(json_path, j) != 0) rc = fail(cmd, EXIT_INPUT);
        json_decref(j);
    }
    goto done;
out:
    fail(cmd, rc);
done:
    if (acc.C) eval_cmi_free(&acc);
    for (int k = 0; k < nitems; k++) {
        free(items[k].file);
        if (items[k].cached) features_h5_free(&items[k].cache);
    }
    free(items);
    for (int i = 0; i < nmissing; i++) free(missing[i]);
    free(missing);
    free(keep);
    free(y);
    free(pooled);
    free(pooled_y);
    free(class_vectors);
    free(class_slides);
    free_list(classes, C);
    eval_manifest_free(&M);
    return rc;
}

void ncmi_help_eval(FILE *f) { fputs(eval_help, f); }
void ncmi_help_measure(FILE *f) { fputs(measure_help, f); }
