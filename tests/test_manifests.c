/* data-manifests/: the CAMELYON-17 and BRACS manifests read through ncmi's
 * own manifest reader, with the counts per split and class of
 * ../shared/docs/data.md; and tools/build_manifests.py --check rebuilds them
 * byte for byte from ../shared/manifests-src (skipped when that folder or
 * python3 is absent). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../eval/manifest.h"
#include "../nn/error.h"
#include "test.h"

static int count(const eval_manifest *m, const char *split, const char *label)
{
    int n = 0;
    for (int i = 0; i < m->n; i++)
        if ((!split || (m->rows[i].split && !strcmp(m->rows[i].split, split))) && !strcmp(m->rows[i].label, label))
            n++;
    return n;
}

typedef struct {
    const char *split, *label;
    int n;
} expect;

static void check(const char *path, int n, const expect *e, int ne)
{
    eval_manifest m;
    REQUIRE(eval_manifest_read(&m, path) == 0, "%s", ncmi_error());
    EXPECT(m.n == n, "%s: %d slides, expected %d", path, m.n, n);
    for (int k = 0; k < ne; k++) {
        int got = count(&m, e[k].split, e[k].label);
        EXPECT(got == e[k].n, "%s: %s %s: %d slides, data.md says %d", path, e[k].split ? e[k].split : "all",
               e[k].label, got, e[k].n);
    }
    /* every slide has a case, a split and a relative path */
    for (int i = 0; i < m.n; i++) {
        const char *rp = eval_manifest_get(&m, i, "rel_path");
        EXPECT(m.rows[i].split && rp && *rp && rp[0] != '/', "%s: row %d: split or rel_path missing", path, i + 1);
        if (!strstr(path, "bracs")) EXPECT(m.rows[i].case_id && *m.rows[i].case_id, "%s: row %d: no case", path, i + 1);
    }
    eval_manifest_free(&m);
}

TEST(manifest_camelyon17_counts)
{
    static const expect e[] = {
        {NULL, "negative", 318}, {NULL, "itc", 36},     {NULL, "micro", 59},  {NULL, "macro", 87},
        {"test", "negative", 121}, {"test", "itc", 16}, {"test", "micro", 18}, {"test", "macro", 45},
        {"train", "negative", 180}, {"val", "negative", 17}, {"val", "itc", 1}, {"val", "micro", 5},
        {"val", "macro", 7},
    };
    check("data-manifests/camelyon17.csv", 500, e, (int)(sizeof e / sizeof *e));
    /* no patient on both sides of train/val; centres 3-4 are the test set */
    eval_manifest m;
    REQUIRE(eval_manifest_read(&m, "data-manifests/camelyon17.csv") == 0, "%s", ncmi_error());
    for (int i = 0; i < m.n; i++) {
        int center = atoi(m.rows[i].center ? m.rows[i].center : "-1");
        EXPECT((center >= 3) == !strcmp(m.rows[i].split, "test"), "row %d: centre %d in %s", i + 1, center,
               m.rows[i].split);
        for (int j = 0; j < i; j++)
            if (!strcmp(m.rows[i].case_id, m.rows[j].case_id))
                EXPECT(!strcmp(m.rows[i].split, m.rows[j].split), "%s is in %s and %s", m.rows[i].case_id,
                       m.rows[i].split, m.rows[j].split);
    }
    eval_manifest_free(&m);
}

TEST(manifest_bracs_counts)
{
    static const expect e[] = {
        {"train", "benign", 203}, {"train", "atypical", 52}, {"train", "malignant", 140},
        {"val", "benign", 30},    {"val", "atypical", 14},   {"val", "malignant", 21},
        {"test", "benign", 32},   {"test", "atypical", 23},  {"test", "malignant", 32},
    };
    check("data-manifests/bracs.csv", 547, e, (int)(sizeof e / sizeof *e));
}

TEST(manifest_build_script_reproduces)
{
    char src[1024], cmd[2300];
    const char *env = getenv("NCMI_MANIFESTS_SRC");
    snprintf(src, sizeof src, "%s", env ? env : "../shared/manifests-src");
    if (access(src, R_OK) != 0) SKIP("%s absent (set NCMI_MANIFESTS_SRC)", src);
    if (system("python3 -c pass >/dev/null 2>&1") != 0) SKIP("python3 absent");
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 tools/build_manifests.py --check --src '%s'", src);
    int rc = test_run(cmd, &out);
    EXPECT(rc == 0, "build_manifests.py --check: exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "camelyon17 patients: 100"), "output:\n%s", out ? out : "");
    free(out);
}
