#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

static double loss_of(const gc_case *c, nn_tensor **in, const float *R, size_t nR)
{
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    nn_tensor *y = c->fn(g, in, c);
    NCMI_CHECK(y->numel == nR, "gradcheck %s: output size changed", c->name);
    double L = 0;
    for (size_t k = 0; k < nR; k++) L += (double)R[k] * (double)y->data[k];
    nn_graph_free(g);
    return L;
}

void gc_inputs(const gc_case *c, nn_tensor **in, nn_rng *rng)
{
    float lo = c->lo, hi = c->hi;
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    uint64_t seed = 1469598103934665603ull;
    for (const char *p = c->name; *p; p++) seed = (seed ^ (uint64_t)(unsigned char)*p) * 1099511628211ull;
    nn_rng_seed(rng, seed);
    for (int i = 0; i < GC_MAX_IN; i++) in[i] = NULL;
    for (int i = 0; i < c->nin; i++) {
        in[i] = nn_tensor_new(NULL, c->ndim[i], c->shape[i]);
        nn_rng_fill_uniform(rng, in[i]->data, in[i]->numel, lo, hi);
        in[i]->requires_grad = !(c->no_grad_mask & (1u << i));
    }
    if (c->init) c->init(in, rng, c);
}

static const gc_case **all_cases;
static int n_cases, cap_cases;

void gc_register(const gc_case *c)
{
    if (n_cases == cap_cases) {
        cap_cases = cap_cases ? 2 * cap_cases : 128;
        all_cases = realloc(all_cases, (size_t)cap_cases * sizeof *all_cases);
        if (!all_cases) abort();
    }
    all_cases[n_cases++] = c;
}

int gc_cases(const gc_case *const **cases)
{
    *cases = all_cases;
    return n_cases;
}

void gradcheck(const gc_case *c)
{
    float eps = c->eps > 0 ? c->eps : 1e-2f;
    float atol = c->atol > 0 ? c->atol : 1e-3f;
    float rtol = c->rtol > 0 ? c->rtol : 1e-2f;
    nn_rng rng;
    nn_tensor *in[GC_MAX_IN];
    gc_inputs(c, in, &rng);

    /* analytic */
    nn_graph *g = nn_graph_new();
    nn_tensor *y = c->fn(g, in, c);
    size_t nR = y->numel;
    float *R = malloc((nR ? nR : 1) * sizeof(float));
    nn_rng_fill_uniform(&rng, R, nR, -1.f, 1.f);
    if (!y->requires_grad) {
        test_fail_at(__FILE__, __LINE__, "%s: output does not require grad", c->name);
    } else if (nn_backward_from(g, y, R) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s: backward failed: %s", c->name, ncmi_error());
    }
    nn_graph_free(g);

    int reported = 0;
    double worst = 0;
    for (int i = 0; i < c->nin; i++) {
        if (!in[i]->requires_grad) continue;
        for (size_t j = 0; j < in[i]->numel; j++) {
            float orig = in[i]->data[j];
            in[i]->data[j] = orig + eps;
            double Lp = loss_of(c, in, R, nR);
            in[i]->data[j] = orig - eps;
            double Lm = loss_of(c, in, R, nR);
            in[i]->data[j] = orig;
            double num = (Lp - Lm) / (2.0 * (double)eps);
            double ana = in[i]->grad ? (double)in[i]->grad[j] : 0.0;
            double err = fabs(ana - num);
            double lim = (double)atol + (double)rtol * fabs(num);
            if (err / lim > worst) worst = err / lim;
            if (!(err <= lim) && reported < 5) {
                test_fail_at(__FILE__, __LINE__,
                             "%s: input %d element %zu: analytic %.7g vs numeric %.7g "
                             "(|diff| %.3g > %.3g)",
                             c->name, i, j, ana, num, err, lim);
                reported++;
            }
        }
    }
    (void)worst;
    free(R);
    for (int i = 0; i < c->nin; i++) nn_tensor_free(in[i]);
}
