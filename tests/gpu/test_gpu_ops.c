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
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../nn/error.h"
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

/* Dropout draws its mask on the device (nn_dropout_keep, nn/cuda/k_norm.h):
 * on 3,000,017 elements the GPU's output and input gradient equal the CPU
 * reference's bit for bit, for two rates and two successive draws of one
 * stream, and the CPU reference keeps 1 - p of the elements. */
TEST(gpu_dropout_mask_on_device_equals_cpu)
{
    GPU_REQUIRE();
    const int n = 3000017;
    nn_tensor *hx = nn_tensor_new1(NULL, n);
    for (int i = 0; i < n; i++) hx->data[i] = (float)((i % 97) - 48) * 0.03125f;
    hx->requires_grad = 1;
    nn_tensor *dx = nn_tensor_to(hx, NN_DEVICE_CUDA);
    dx->requires_grad = 1;
    float *up = malloc((size_t)n * sizeof *up), *gy = malloc((size_t)n * sizeof *gy),
          *gg = malloc((size_t)n * sizeof *gg);
    REQUIRE(up && gy && gg, "out of memory");
    for (int i = 0; i < n; i++) up[i] = (float)((i % 13) - 6);
    static const float rates[2] = {0.1f, 0.5f};
    for (int r = 0; r < 2; r++) {
        nn_rng rc, rg;
        nn_rng_seed(&rc, 77 + (uint64_t)r);
        nn_rng_seed(&rg, 77 + (uint64_t)r);
        for (int draw = 0; draw < 2; draw++) {
            nn_graph *g = nn_graph_new(), *g2 = nn_graph_new();
            nn_tensor *yc = nn_dropout(g, hx, rates[r], 1, &rc);
            nn_tensor *yg = nn_dropout(g2, dx, rates[r], 1, &rg);
            REQUIRE(nn_backward_from(g, yc, up) == 0 && nn_backward_from(g2, yg, up) == 0, "%s", ncmi_error());
            nn_tensor_to_host(yg, gy);
            long differ = 0, kept = 0, nonzero = 0;
            for (int i = 0; i < n; i++) {
                differ += memcmp(&gy[i], &yc->data[i], sizeof(float)) != 0;
                if (hx->data[i] != 0.f) {
                    nonzero++;
                    kept += yc->data[i] != 0.f;
                }
            }
            const double frac = (double)kept / (double)nonzero;
            printf("    p %.1f draw %d: %ld of %d outputs differ, kept %.4f\n", (double)rates[r], draw, differ, n,
                   frac);
            EXPECT(differ == 0, "p %.1f draw %d: %ld outputs differ between CPU and GPU", (double)rates[r], draw,
                   differ);
            EXPECT(fabs(frac - (1.0 - rates[r])) < 0.003, "p %.1f: kept %.4f", (double)rates[r], frac);
            nn_graph_free(g);
            nn_graph_free(g2);
        }
    }
    /* the input gradients accumulated over the four draws */
    REQUIRE(dx->grad != NULL && hx->grad != NULL, "no input gradient");
    nn_tensor_grad_to_host(dx, gg);
    long gdiff = 0;
    for (int i = 0; i < n; i++) gdiff += memcmp(&gg[i], &hx->grad[i], sizeof(float)) != 0;
    EXPECT(gdiff == 0, "%ld input gradients differ between CPU and GPU", gdiff);
    free(up);
    free(gy);
    free(gg);
    nn_tensor_free(hx);
    nn_tensor_free(dx);
}
