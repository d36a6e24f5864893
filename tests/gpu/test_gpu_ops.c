/* Every op on the CPU and on the GPU: each GRAD_TEST case of the CPU suite
 * (tests/test_grad_*.c, registered through gradcheck.h) is run on both
 * devices from the same seeded inputs and upstream gradient; the output and
 * every input gradient must agree within the case's gpu_tol (scaled error,
 * tests/gpu/gpu_check.h), 1e-5 by default: the CUDA twins compute in fp32
 * like the CPU reference and differ only in summation order. Cases that set
 * a looser gpu_tol say why next to the case.
 *
 * The cases run in a worker process of this binary, so an op that crashes
 * on the GPU is reported by name and the remaining cases still run. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_check.h"

#define GPU_TOL_DEFAULT 1e-5

TEST(worker_gpu_ops)
{
    const gc_case *const *cases;
    int n = gc_cases(&cases);
    const char *from = getenv("NCMI_GPU_OPS_FROM");
    int k0 = from ? atoi(from) : 0;
    GPU_REQUIRE();
    for (int k = k0; k < n; k++) {
        double tol = cases[k]->gpu_tol > 0 ? cases[k]->gpu_tol : GPU_TOL_DEFAULT;
        printf("GPUCASE %d start %s\n", k, cases[k]->name);
        fflush(stdout);
        double w = gpu_check_case(cases[k], tol);
        printf("GPUCASE %d %s %.3g %.3g %s\n", k, cases[k]->name, w, tol, w <= tol ? "ok" : "FAIL");
        fflush(stdout);
    }
}

TEST(gpu_ops_vs_cpu)
{
    GPU_REQUIRE();
    const gc_case *const *cases;
    int n = gc_cases(&cases), k = 0, n_ok = 0;
    REQUIRE(n > 50, "only %d gradcheck cases registered", n);
    while (k < n) {
        char *out = NULL;
        char cmd[256];
        snprintf(cmd, sizeof cmd, "NCMI_TEST_WORKER=worker_gpu_ops NCMI_GPU_OPS_FROM=%d /proc/%d/exe",
                 k, (int)getpid());
        int rc = test_run(cmd, &out);
        int last_done = k - 1, last_started = -1;
        for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n")) {
            int idx;
            char name[128], st[16];
            double w, tol;
            if (sscanf(line, "GPUCASE %d start %127s", &idx, name) == 2) {
                last_started = idx;
            } else if (sscanf(line, "GPUCASE %d %127s %lf %lf %15s", &idx, name, &w, &tol, st) == 5) {
                printf("    %-40s %.2e (tol %.0e) %s\n", name, w, tol, st);
                if (strcmp(st, "ok") == 0) n_ok++;
                last_done = idx;
            } else if (strstr(line, "FAIL") || strstr(line, "ncmi:") || strstr(line, "error")) {
                printf("    | %s\n", line);
            }
        }
        free(out);
        if (last_done == n - 1) break;
        int bad = last_started > last_done ? last_started : last_done + 1;
        test_fail_at(__FILE__, __LINE__, "%s: the GPU worker died (exit %d) in this case",
                     bad < n ? cases[bad]->name : "?", rc);
        k = bad + 1;
    }
    printf("    %d of %d op cases agree on CPU and GPU\n", n_ok, n);
    EXPECT(n_ok == n, "%d op cases differ or crashed", n - n_ok);
}
