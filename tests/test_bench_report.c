/* bench/report.py (the parser behind make bench / bench/RESULTS.md) on canned
 * logs in tests/bench_report/: the summary table holds the ratios computed
 * from the canned RESULT lines (times and memory: peer / ncmi; rates: ncmi /
 * peer), the goals the docs state and whether they are met, and the
 * benchmarks that did not run with their reasons. No timing is done. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

TEST(bench_report_canned_logs)
{
    char *out = NULL;
    if (test_run("/usr/bin/python3 -c 'import sys'", &out) != 0) {
        free(out);
        SKIP("/usr/bin/python3 not available");
    }
    free(out);
    const char *md = test_tmp_path("RESULTS.md");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 bench/report.py --logs tests/bench_report --out %s", md);
    int rc = test_run(cmd, &out);
    REQUIRE(rc == 0, "report.py failed (%d): %s", rc, out ? out : "");
    free(out);
    char *s = slurp(md);
    REQUIRE(s, "no %s", md);
    static const char *want[] = {
        /* times: peer / ncmi; the sum line of ops.sh */
        "| ops | total_fwdbwd | 150.0 | 175.0 | 1.17 | ms |  |  |",
        /* the tile goal of docs/tiling.md, met and not met */
        "| tile | per_slide_total | 0.100 | 1.20 | 12.00 | s | ≥ 10× (docs/tiling.md) | yes |",
        "| tile | cohort_jobs1 | 0.300 | 0.900 | 3.00 | s | ≥ 10× (docs/tiling.md) | no |",
        /* memory: peer / ncmi */
        "| tile | cohort_jobs1_peak_rss | 50.00 | 150.0 | 3.00 | MiB |  |  |",
        /* rates: ncmi / peer; the summary keeps each MIL head at its largest bag */
        "| mil | abmil_N4000 | 4.00 | 5.00 | 0.80 | bags/s |  |  |",
        "| mil | abmil_N4000_peak_rss | 60.00 | - | - | MB |  |  |",
        "| mil | aem | - | - | - |  |  | skipped: bench_mil_step: aem is not built in (no mil_aem_init) |",
        /* the detail table has every case */
        "| abmil_N500 | 20.00 | 10.00 | 2.00 | bags/s |  |  |",
        "| conv_fwdbwd | 50.00 | 25.00 | 0.50 | ms |  |  |",
        "| abmil_N500_peak_above_start | 20.00 | 40.00 | 2.00 | MB |  |  |",
        "Geometric mean of the ratios: speed 1.26 (2 cases); memory 2.83 (2 cases).",
        "Geometric mean of the ratios: speed 1.04 (3 cases).",
        /* no peer */
        "| preprocess | resize+normalize_256_224 | 3594 | - | - | patches/s |  |  |",
        /* benchmarks that did not run, with the reason */
        "| features | - | - | - | - | - |  | skipped: peer missing: python3 torch/torchvision/openslide-python/h5py |",
        "| ncmi_overhead | - | - | - | - | - |  | failed (exit 1): bench_ncmi_overhead: out of memory in the canned log |",
        /* the machine, the load and the versions */
        "**Machine**: Test CPU, 2 cores, 8.0 GiB memory. Load average (1, 5, 15 min) at the start 3.10 2.00 1.00",
        "means other processes were running",
        "Total run time: 754 s (12.6 min).",
        "git abc1234 (2026-01-02); gcc 12.2.0; OpenBLAS 0.3.21;",
        "HDF5 1.10.8 (h5py 3.7.0).",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        EXPECT(strstr(s, want[i]), "RESULTS.md lacks \"%s\"", want[i]);
    /* the RESULT lines are not repeated in the human output shown */
    EXPECT(!strstr(s, "RESULT ops"), "RESULT lines copied into the report");
    /* the summary leaves the smaller bags and the memory above the start to the details */
    EXPECT(!strstr(s, "| mil | abmil_N500 |"), "summary has abmil at N = 500");
    EXPECT(!strstr(s, "| mil | abmil_N4000_peak_above_start"), "summary has the memory above the start");
    free(s);
}
