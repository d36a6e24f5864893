#include "gpu_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../nn/error.h"

static int ready = -1;
static char why[512];

int gpu_ready(void)
{
    if (ready >= 0) return ready;
    ready = 0;
    if (!nn_cuda_built()) {
        snprintf(why, sizeof why, "this build has no CUDA backend (no nvcc at build time)");
    } else if (nn_cuda_device_count() <= 0) {
        snprintf(why, sizeof why, "no CUDA device visible (no GPU or no driver)");
    } else if (nn_cuda_init(0) != 0) {
        snprintf(why, sizeof why, "%s", ncmi_error());
    } else {
        ready = 1;
        static int printed;
        if (!printed) {
            char d[256];
            printf("  GPU: %s\n", nn_cuda_describe(0, d, sizeof d));
            printed = 1;
        }
    }
    return ready;
}

const char *gpu_why(void) { return why; }

double gpu_rel_err(const float *got, const float *ref, size_t n)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    double floor = 1e-3 * mx, worst = 0;
    if (floor == 0) floor = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!isfinite(got[i]) && isfinite(ref[i])) return INFINITY;
        if (isnan(ref[i]) != isnan(got[i])) return INFINITY;
        if (isnan(ref[i])) continue;
        double s = fabs(ref[i]) > floor ? fabs(ref[i]) : floor;
        if (d / s > worst) worst = d / s;
    }
    return worst;
}

double gpu_tensor_err(const nn_tensor *got, const nn_tensor *ref)
{
    if (got->numel != ref->numel) return INFINITY;
    float *a = nn_host_view(got), *b = nn_host_view(ref);
    double e = gpu_rel_err(a, b, got->numel);
    nn_host_release(got, a);
    nn_host_release(ref, b);
    return e;
}

static void grad_host(const nn_tensor *t, float *dst) { nn_tensor_grad_to_host(t, dst); }

double gpu_check_case(const gc_case *c, double tol)
{
    nn_rng rng;
    nn_tensor *in[GC_MAX_IN], *din[GC_MAX_IN] = {0};
    gc_inputs(c, in, &rng);
    for (int i = 0; i < c->nin; i++) din[i] = nn_tensor_to(in[i], NN_DEVICE_CUDA);

    nn_graph *g = nn_graph_new(), *dg = nn_graph_new();
    nn_tensor *y = c->fn(g, in, c);
    size_t nR = y->numel;
    float *R = malloc((nR ? nR : 1) * sizeof(float));
    nn_rng_fill_uniform(&rng, R, nR, -1.f, 1.f);
    nn_tensor *dy = c->fn(dg, din, c);
    double worst = 0;
    char what[160] = "";
    if (dy->device != NN_DEVICE_CUDA) {
        test_fail_at(__FILE__, __LINE__, "%s: the output is on the CPU for GPU inputs", c->name);
        worst = INFINITY;
    } else if (dy->numel != nR) {
        test_fail_at(__FILE__, __LINE__, "%s: GPU output has %zu elements, CPU %zu", c->name,
                     dy->numel, nR);
        worst = INFINITY;
    } else {
        double e = gpu_tensor_err(dy, y);
        if (e > worst) {
            worst = e;
            snprintf(what, sizeof what, "output");
        }
        if (y->requires_grad) {
            NCMI_CHECK(nn_backward_from(g, y, R) == 0, "%s", ncmi_error());
            NCMI_CHECK(nn_backward_from(dg, dy, R) == 0, "%s", ncmi_error());
            for (int i = 0; i < c->nin; i++) {
                if (!in[i]->requires_grad) continue;
                size_t n = in[i]->numel;
                float *a = calloc(n ? n : 1, sizeof(float)), *b = calloc(n ? n : 1, sizeof(float));
                grad_host(din[i], a);
                grad_host(in[i], b);
                double ge = gpu_rel_err(a, b, n);
                if (ge > worst) {
                    worst = ge;
                    snprintf(what, sizeof what, "gradient of input %d", i);
                }
                free(a);
                free(b);
            }
        }
    }
    if (!(worst <= tol))
        test_fail_at(__FILE__, __LINE__, "%s: GPU vs CPU %s differs: worst scaled error %.3g > %.3g",
                     c->name, what, worst, tol);
    nn_graph_free(g);
    nn_graph_free(dg);
    free(R);
    for (int i = 0; i < c->nin; i++) {
        nn_tensor_free(in[i]);
        nn_tensor_free(din[i]);
    }
    return worst;
}

void gpu_run_worker(const char *name)
{
    char cmd[256], *out = NULL;
    snprintf(cmd, sizeof cmd, "NCMI_TEST_WORKER=%s /proc/%d/exe", name, (int)getpid());
    int rc = test_run(cmd, &out);
    if (out) fputs(out, stdout);
    EXPECT(rc == 0, "%s exited with status %d", name, rc);
    /* the worker skipped (e.g. no HDF5 in a lean build): so does this test */
    const char *sk = out && rc == 0 ? strstr(out, "NCMI_WORKER_SKIP: ") : NULL;
    if (sk) {
        sk += strlen("NCMI_WORKER_SKIP: ");
        test_skip("%.*s", (int)strcspn(sk, "\n"), sk);
    }
    free(out);
}

double gpu_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
