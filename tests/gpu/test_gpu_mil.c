/* The MIL heads on the GPU (make test-gpu):
 *   - every op of mil/mil_ops.c (the GRAD_TEST cases of tests/test_mil_ops.c,
 *     named mil_*) on the GPU against the CPU reference: output and
 *     gradients, shapes with N = 1 and odd sizes (tolerance: the case's
 *     gpu_tol, 1e-4 where sums run in another order or through cuBLAS);
 *   - ASMIL's sigmax (1e-5) and EMA update (1e-6; the same rounded products);
 *   - each head (abmil, aem with top-k, transmil, asmil with token dropping
 *     and the EMA anchor) trained 6 steps with SGD (momentum 0.9) on the CPU
 *     and on the GPU from the same initial weights, bags (N = 1, 7, 50, 23,
 *     130: not squares, one instance) and dropout draws: the losses step by
 *     step and every parameter and buffer at the end within 1e-3 relative
 *     (TransMIL 5e-3: the Moore-Penrose iterations amplify rounding), and the
 *     stored attention of an eval forward (read back from the device by
 *     mil_last_attention) within the same bound; inside the GPU steps no
 *     host synchronisation but AEM's top-k read-back (one per bag with N > k);
 *   - the trainer (tr_init / tr_fit, --device cuda's path) on an in-memory
 *     bag set for each head: validation probabilities within 1e-3 of the CPU
 *     run's after 3 epochs of SGD;
 *   - `ncmi train --device cuda` against --device cpu on a synthetic bag
 *     cohort (tests/mil_synth.h; needs HDF5 to write it, else skipped): the
 *     test macro-F1 within 0.05.
 * Every test runs in its own process (GPU_WORKER_TEST): a fault in a new
 * kernel fails that test only. SGD rather than Adam for the step-by-step
 * comparisons: Adam's normalised step turns a rounding-level gradient into
 * a full-size step of either sign. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../features/features_h5.h"
#include "../../mil/mil.h"
#include "../../mil/mil_ops.h"
#include "../../nn/error.h"
#include "../../nn/loss.h"
#include "../../nn/optim.h"
#include "../../nn/params.h"
#include "../mil_synth.h"
#include "gpu_check.h"

/* ---- the ops ---- */

GPU_WORKER_TEST(gpu_mil_ops_vs_cpu)
{
    const gc_case *const *cases;
    const int n = gc_cases(&cases);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(cases[i]->name, "mil_", 4) != 0) continue;
        const double tol = cases[i]->gpu_tol > 0 ? cases[i]->gpu_tol : 1e-5;
        const double e = gpu_check_case(cases[i], tol);
        printf("    %-28s worst %.2e (tol %.0e)\n", cases[i]->name, e, tol);
        k++;
    }
    EXPECT(k >= 15, "only %d mil_* op cases registered", k);
}

/* Larger shapes than the gradcheck cases (no finite differences here, only
 * GPU vs CPU): several row chunks of the seq conv's weight gradient (128 rows
 * per chunk at dh 64, a partial last chunk, odd dh, K not a multiple of the
 * 8-tap group), several cell chunks of PPEG's (256 cells), channel counts
 * that are not multiples of 32, each kernel size of the templated PPEG
 * kernels, acc == x as TransMIL calls it. Then the same case twice on the
 * GPU: the gradients must be bit-identical (fixed-order partial sums). */
static nn_tensor *gl_seq_conv(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return mil_seq_conv(g, in[0], in[1]);
}

static nn_tensor *gl_ppeg(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_ppeg_conv_add(g, in[0], in[1], in[2], in[3], c->iparam[0]);
}

static nn_tensor *gl_ppeg_same(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_ppeg_conv_add(g, in[0], in[0], in[1], in[2], c->iparam[0]);
}

static nn_tensor *gl_softmax_abt(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_softmax_abt(g, in[0], in[1], c->fparam[0]);
}

static nn_tensor *gl_qkv_heads(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_qkv_heads(g, in[0], c->iparam[0], c->iparam[1], c->iparam[2]);
}

static nn_tensor *gl_add_merge(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return mil_add_merge_heads(g, in[0], in[1]);
}

static const gc_case gl_cases[] = {
    {.name = "seq_conv_np3000_dh64", .nin = 2, .ndim = {3, 4}, .shape = {{3, 3000, 64}, {3, 1, 33, 1}},
     .fn = gl_seq_conv},
    {.name = "seq_conv_np1001_dh33_k17", .nin = 2, .ndim = {3, 4}, .shape = {{4, 1001, 33}, {4, 1, 17, 1}},
     .fn = gl_seq_conv},
    {.name = "seq_conv_np257_dh1_k9", .nin = 2, .ndim = {3, 4}, .shape = {{2, 257, 1}, {2, 1, 9, 1}},
     .fn = gl_seq_conv},
    {.name = "seq_conv_np9000_dh128", .nin = 2, .ndim = {3, 4}, .shape = {{1, 9000, 128}, {1, 1, 33, 1}},
     .fn = gl_seq_conv},
    {.name = "ppeg_s40_d70_k7", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{1601, 70}, {1601, 70}, {70, 1, 7, 7}, {70}},
     .fn = gl_ppeg, .iparam = {40}},
    {.name = "ppeg_s40_d70_k5", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{1601, 70}, {1601, 70}, {70, 1, 5, 5}, {70}},
     .fn = gl_ppeg, .iparam = {40}},
    {.name = "ppeg_s41_d33_k3", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{1682, 33}, {1682, 33}, {33, 1, 3, 3}, {33}},
     .fn = gl_ppeg, .iparam = {41}},
    {.name = "ppeg_s23_d5_k1", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{530, 5}, {530, 5}, {5, 1, 1, 1}, {5}},
     .fn = gl_ppeg, .iparam = {23}},
    {.name = "ppeg_same_s57_d64_k7", .nin = 3, .ndim = {2, 4, 1}, .shape = {{3250, 64}, {64, 1, 7, 7}, {64}},
     .fn = gl_ppeg_same, .iparam = {57}},
    {.name = "ppeg_w_only_s17_d40_k5", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{290, 40}, {290, 40}, {40, 1, 5, 5}, {40}},
     .fn = gl_ppeg, .iparam = {17}, .no_grad_mask = 8u},
    {.name = "ppeg_b_only_s17_d40_k3", .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{290, 40}, {290, 40}, {40, 1, 3, 3}, {40}},
     .fn = gl_ppeg, .iparam = {17}, .no_grad_mask = 4u},
    {.name = "qkv_heads_k_np1000_h8", .nin = 1, .ndim = {2}, .shape = {{1000, 3 * 8 * 16 + 5}}, .fn = gl_qkv_heads,
     .iparam = {1, 8, 16}},
    {.name = "qkv_heads_v_np777_h3", .nin = 1, .ndim = {2}, .shape = {{777, 3 * 3 * 7}}, .fn = gl_qkv_heads,
     .iparam = {2, 3, 7}},
    {.name = "add_merge_h8_np1000", .nin = 2, .ndim = {3, 3}, .shape = {{8, 1000, 16}, {8, 1000, 16}},
     .fn = gl_add_merge},
    {.name = "add_merge_a_only_h3_np77", .nin = 2, .ndim = {3, 3}, .shape = {{3, 77, 5}, {3, 77, 5}},
     .fn = gl_add_merge, .no_grad_mask = 2u},
    {.name = "softmax_abt_h4_n300_m33", .nin = 2, .ndim = {3, 3}, .shape = {{4, 300, 16}, {4, 33, 16}},
     .fn = gl_softmax_abt, .fparam = {0.25f}},
};

/* Forward and backward of c on the GPU from gc_inputs; the gradients of the
 * inputs, concatenated, into a malloc'd host array (*n floats). */
static float *gl_gpu_grads(const gc_case *c, size_t *n)
{
    nn_rng rng;
    nn_tensor *in[GC_MAX_IN], *din[GC_MAX_IN] = {0};
    gc_inputs(c, in, &rng);
    for (int i = 0; i < c->nin; i++) din[i] = nn_tensor_to(in[i], NN_DEVICE_CUDA);
    nn_graph *dg = nn_graph_new();
    nn_tensor *dy = c->fn(dg, din, c);
    float *R = malloc((dy->numel ? dy->numel : 1) * sizeof(float));
    nn_rng_fill_uniform(&rng, R, dy->numel, -1.f, 1.f);
    NCMI_CHECK(nn_backward_from(dg, dy, R) == 0, "%s", ncmi_error());
    size_t tot = 0;
    for (int i = 0; i < c->nin; i++)
        if (in[i]->requires_grad) tot += din[i]->numel;
    float *h = calloc(tot ? tot : 1, sizeof *h);
    size_t o = 0;
    for (int i = 0; i < c->nin; i++)
        if (in[i]->requires_grad) {
            nn_tensor_grad_to_host(din[i], h + o);
            o += din[i]->numel;
        }
    *n = tot;
    nn_graph_free(dg);
    free(R);
    for (int i = 0; i < c->nin; i++) {
        nn_tensor_free(in[i]);
        nn_tensor_free(din[i]);
    }
    return h;
}

/* sums over hundreds to thousands of terms in another order than the CPU's
 * (cuBLAS, fixed-order partials): 3e-4, the tolerance of the *_large cases of
 * gpu_ops_vs_cpu (measured on an H200: worst 2.1e-4, softmax_abt's b gradient
 * summed over n = 300 rows) */
#define GL_TOL 3e-4
GPU_WORKER_TEST(gpu_mil_ops_large)
{
    for (size_t i = 0; i < sizeof gl_cases / sizeof gl_cases[0]; i++) {
        const gc_case *c = &gl_cases[i];
        const double e = gpu_check_case(c, GL_TOL);
        size_t n1, n2;
        float *g1 = gl_gpu_grads(c, &n1), *g2 = gl_gpu_grads(c, &n2);
        const int same = n1 == n2 && memcmp(g1, g2, n1 * sizeof *g1) == 0;
        printf("    %-28s worst %.2e (tol %.0e)%s\n", c->name, e, GL_TOL, same ? ", repeat bit-identical" : "");
        EXPECT(same, "%s: two GPU runs give different gradients", c->name);
        free(g1);
        free(g2);
    }
    static const int diag_m[] = {1, 2, 5, 256};
    for (size_t i = 0; i < sizeof diag_m / sizeof diag_m[0]; i++) {
        nn_graph *g = nn_graph_new();
        nn_tensor *c = mil_diag_const(g, NN_DEVICE_CPU, diag_m[i], 7.f);
        nn_tensor *d = mil_diag_const(g, NN_DEVICE_CUDA, diag_m[i], 7.f);
        float *h = malloc(d->numel * sizeof *h);
        nn_tensor_to_host(d, h);
        EXPECT(d->device == NN_DEVICE_CUDA && memcmp(h, c->data, c->numel * sizeof *h) == 0,
               "mil_diag_const m %d: GPU differs from the CPU", diag_m[i]);
        free(h);
        nn_graph_free(g);
    }
}

GPU_WORKER_TEST(gpu_mil_sigmax_ema)
{
    static const int shapes[][2] = {{1, 1}, {3, 7}, {32, 1000}, {2, 16001}, {16, 1}};
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        nn_graph *g = nn_graph_new(), *dg = nn_graph_new();
        nn_tensor *x = nn_tensor_new2(NULL, shapes[s][0], shapes[s][1]);
        nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 3.f);
        nn_tensor *xd = nn_tensor_to(x, NN_DEVICE_CUDA);
        nn_tensor *y = mil_sigmax(g, x, 2.f, 1e-8f), *yd = mil_sigmax(dg, xd, 2.f, 1e-8f);
        EXPECT(yd->device == NN_DEVICE_CUDA, "sigmax output not on the GPU");
        const double e = gpu_tensor_err(yd, y);
        printf("    sigmax [%d, %d]: worst %.2e\n", shapes[s][0], shapes[s][1], e);
        EXPECT(e <= 1e-5, "sigmax [%d, %d]: GPU vs CPU %.3g > 1e-5", shapes[s][0], shapes[s][1], e);
        nn_tensor_free(x);
        nn_tensor_free(xd);
        nn_graph_free(g);
        nn_graph_free(dg);
    }
    static const size_t sizes[] = {1, 1000, 100003};
    for (size_t s = 0; s < 3; s++) {
        nn_tensor *a = nn_tensor_new1(NULL, (int)sizes[s]), *x = nn_tensor_new1(NULL, (int)sizes[s]);
        nn_rng_fill_normal(&rng, a->data, a->numel, 0.f, 1.f);
        nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
        nn_tensor *ad = nn_tensor_to(a, NN_DEVICE_CUDA), *xd = nn_tensor_to(x, NN_DEVICE_CUDA);
        const float decay[3] = {0.999f, 0.5f, 0.f};
        for (int r = 0; r < 3; r++) {
            mil_ema_update(a, x, decay[r]);
            mil_ema_update(ad, xd, decay[r]);
        }
        float *h = malloc(a->numel * sizeof *h);
        nn_tensor_to_host(ad, h);
        const double e = gpu_rel_err(h, a->data, a->numel);
        const int same = memcmp(h, a->data, a->numel * sizeof *h) == 0;
        printf("    ema n %zu: worst %.2e%s\n", sizes[s], e, same ? " (bit-identical)" : "");
        EXPECT(e <= 1e-6, "ema n %zu: GPU vs CPU %.3g > 1e-6", sizes[s], e);
        free(h);
        nn_tensor_free(a);
        nn_tensor_free(x);
        nn_tensor_free(ad);
        nn_tensor_free(xd);
    }
}

/* ---- a few training steps of each head ---- */

#define MG_STEPS 6
#define MG_NB 5
#define MG_DFEAT 24
static const int mg_bag_n[MG_NB] = {1, 7, 50, 23, 130};

static void mg_opts(mil_opts *o, mil_head_kind kind)
{
    mil_opts_default(o, kind);
    o->d_feat = MG_DFEAT;
    o->d_inner = 16;
    o->attn_hidden = 8;
    if (kind == MIL_AEM) o->aem_topk = 5; /* the host top-k read-back; N = 1: the k >= N form */
    if (kind == MIL_TRANSMIL) o->transmil_landmarks = 8;
    if (kind == MIL_ASMIL) {
        o->asmil_tokens = 4;
        o->asmil_heads = 4;
        o->asmil_drop = 1;
        o->asmil_anchor_frozen = 0; /* the EMA kernel runs */
        o->asmil_ema = 0.9f;
    }
}

/* host bags: class 1 bags have 1-3 instances moved along a fixed direction */
static void mg_bags(nn_tensor **bags)
{
    nn_rng rng;
    nn_rng_seed(&rng, 17);
    for (int b = 0; b < MG_NB; b++) {
        bags[b] = nn_tensor_new2(NULL, mg_bag_n[b], MG_DFEAT);
        nn_rng_fill_normal(&rng, bags[b]->data, bags[b]->numel, 0.f, 1.f);
        if (b % 2)
            for (int j = 0; j < MG_DFEAT; j++) bags[b]->data[j] += 1.5f;
    }
}

typedef struct mg_result {
    float loss[MG_STEPS];
    int n_params;
    float **params; /* host copies, [n_params] */
    size_t *numel;
    char (*names)[NN_NAME_MAX];
    float *z;       /* eval embedding of the last bag */
    int dim;
    float *attn;
    int an, ak;
    long syncs; /* host synchronisations inside the steps (forward .. after_step) */
} mg_result;

static void mg_result_free(mg_result *r)
{
    for (int i = 0; i < r->n_params; i++) free(r->params[i]);
    free(r->params);
    free(r->numel);
    free(r->names);
    free(r->z);
    free(r->attn);
}

static void mg_run(mil_head_kind kind, nn_device dev, nn_tensor **bags, mg_result *r)
{
    memset(r, 0, sizeof *r);
    mil_opts o;
    mg_opts(&o, kind);
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    tr_model m;
    NCMI_CHECK(mil_head_init(&m, &o, &rng) == 0, "%s", ncmi_error());
    NCMI_CHECK(m.gpu_ok, "%s: gpu_ok = 0", m.desc);
    nn_params Ph;
    nn_params_init(&Ph);
    nn_linear_m fc;
    nn_linear_m_init(&fc, &Ph, "fc", m.dim, 2, 1, &rng);
    nn_params_to_device(m.params, dev);
    nn_params_to_device(&Ph, dev);
    nn_optim op, oh;
    nn_optim_sgd_init(&op, m.params, 0.05f, 0.9f, 1e-4f, 0);
    nn_optim_sgd_init(&oh, &Ph, 0.05f, 0.9f, 1e-4f, 0);
    nn_graph *g = nn_graph_new();
    nn_rng drop;
    nn_rng_seed(&drop, 9);
    for (int s = 0; s < MG_STEPS; s++) {
        nn_tensor *bag = bags[s % MG_NB];
        nn_tensor *x = dev == NN_DEVICE_CUDA ? nn_tensor_to(bag, dev) : bag;
        nn_tensor *aux = NULL;
        const long sync0 = nn_cuda_host_syncs();
        nn_tensor *z = m.forward(&m, g, &x, 1, 1, &drop, &aux);
        const int y = (s % MG_NB) % 2;
        nn_tensor *loss = nn_cross_entropy(g, nn_linear_m_forward(g, &fc, z), &y, 0.f);
        if (aux) loss = nn_loss_add_aux(g, loss, aux, 1.f);
        NCMI_CHECK(nn_backward(g, loss) == 0, "%s", ncmi_error());
        nn_optim_step(&op);
        nn_optim_step(&oh);
        if (m.after_step) m.after_step(&m);
        if (dev == NN_DEVICE_CUDA) r->syncs += nn_cuda_host_syncs() - sync0;
        nn_tensor_to_host(loss, &r->loss[s]);
        nn_params_zero_grad(m.params);
        nn_params_zero_grad(&Ph);
        nn_graph_reset(g);
        if (x != bag) nn_tensor_free(x);
    }
    /* eval forward of the last bag: embedding and stored attention */
    nn_tensor *bag = bags[MG_NB - 1];
    nn_tensor *x = dev == NN_DEVICE_CUDA ? nn_tensor_to(bag, dev) : bag;
    nn_tensor *z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    r->dim = (int)z->numel;
    r->z = malloc(z->numel * sizeof *r->z);
    nn_tensor_to_host(z, r->z);
    nn_graph_reset(g);
    if (x != bag) nn_tensor_free(x);
    const float *a = mil_last_attention(&m, &r->an, &r->ak);
    const size_t na = (size_t)r->an * r->ak;
    r->attn = malloc((na ? na : 1) * sizeof *r->attn);
    if (a && na) memcpy(r->attn, a, na * sizeof *a);
    /* every parameter and buffer of the head and the classifier */
    const int n = m.params->n + Ph.n;
    r->n_params = n;
    r->params = calloc((size_t)n, sizeof *r->params);
    r->numel = calloc((size_t)n, sizeof *r->numel);
    r->names = calloc((size_t)n, sizeof *r->names);
    for (int i = 0; i < n; i++) {
        const nn_tensor *t = i < m.params->n ? m.params->t[i] : Ph.t[i - m.params->n];
        r->numel[i] = t->numel;
        r->params[i] = malloc((t->numel ? t->numel : 1) * sizeof(float));
        nn_tensor_to_host(t, r->params[i]);
        snprintf(r->names[i], NN_NAME_MAX, "%s", t->name);
    }
    nn_graph_free(g);
    nn_optim_free(&op);
    nn_optim_free(&oh);
    nn_params_free(&Ph);
    tr_model_free(&m);
}

static void mg_compare(mil_head_kind kind, double tol)
{
    nn_tensor *bags[MG_NB];
    mg_bags(bags);
    mg_result c, d;
    mg_run(kind, NN_DEVICE_CPU, bags, &c);
    mg_run(kind, NN_DEVICE_CUDA, bags, &d);
    double wl = 0;
    for (int s = 0; s < MG_STEPS; s++) {
        const double e = fabs((double)d.loss[s] - c.loss[s]) / fmax(1.0, fabs((double)c.loss[s]));
        if (e > wl) wl = e;
        printf("    step %d (N %3d)  loss cpu %.6f  gpu %.6f\n", s, mg_bag_n[s % MG_NB], c.loss[s], d.loss[s]);
    }
    EXPECT(wl <= tol, "%s: losses differ by %.3g > %.0e", mil_head_kind_name(kind), wl, tol);
    double wp = 0;
    int wi = 0;
    REQUIRE(c.n_params == d.n_params, "parameter counts %d / %d", c.n_params, d.n_params);
    for (int i = 0; i < c.n_params; i++) {
        const double e = gpu_rel_l2(d.params[i], c.params[i], c.numel[i]);
        if (e > wp || e != e) {
            wp = e;
            wi = i;
        }
    }
    EXPECT(wp <= tol, "%s: parameter %s differs by %.3g (relative L2) > %.0e", mil_head_kind_name(kind),
           c.names[wi], wp, tol);
    const double ez = gpu_rel_l2(d.z, c.z, (size_t)c.dim);
    EXPECT(ez <= tol, "%s: eval embedding differs by %.3g > %.0e", mil_head_kind_name(kind), ez, tol);
    EXPECT(c.an == d.an && c.ak == d.ak && c.an > 0, "attention shapes cpu [%d, %d] gpu [%d, %d]", c.an, c.ak,
           d.an, d.ak);
    double ea = 0;
    if (c.an == d.an && c.ak == d.ak) {
        ea = gpu_rel_l2(d.attn, c.attn, (size_t)c.an * c.ak);
        EXPECT(ea <= tol, "%s: stored attention differs by %.3g > %.0e", mil_head_kind_name(kind), ea, tol);
    }
    /* the only read-back inside a step: AEM's top-k selection when N > k */
    long want = 0;
    if (kind == MIL_AEM)
        for (int s = 0; s < MG_STEPS; s++) want += mg_bag_n[s % MG_NB] > 5;
    EXPECT(d.syncs == want, "%s: %ld host synchronisations inside %d GPU steps, expected %ld",
           mil_head_kind_name(kind), d.syncs, MG_STEPS, want);
    printf("    %s: %ld host syncs in %d GPU steps (expected %ld)\n", mil_head_kind_name(kind), d.syncs, MG_STEPS,
           want);
    printf("    %s: worst loss %.2e, worst parameter %.2e (%s), embedding %.2e, attention [%d, %d] %.2e (tol %.0e)\n",
           mil_head_kind_name(kind), wl, wp, c.names[wi], ez, d.an, d.ak, ea, tol);
    mg_result_free(&c);
    mg_result_free(&d);
    for (int b = 0; b < MG_NB; b++) nn_tensor_free(bags[b]);
}

GPU_WORKER_TEST(gpu_mil_train_steps_abmil) { mg_compare(MIL_ABMIL, 1e-3); }
GPU_WORKER_TEST(gpu_mil_train_steps_aem) { mg_compare(MIL_AEM, 1e-3); }
GPU_WORKER_TEST(gpu_mil_train_steps_asmil) { mg_compare(MIL_ASMIL, 1e-3); }
GPU_WORKER_TEST(gpu_mil_train_steps_transmil) { mg_compare(MIL_TRANSMIL, 5e-3); }

/* ---- the trainer on an in-memory bag set ---- */

typedef struct mg_bagset {
    int n;
    nn_tensor **bags; /* host, borrowed */
    char ids[64][16];
} mg_bagset;

static const char *mg_id(const tr_dataset *d, int i)
{
    const mg_bagset *b = d->ctx;
    return b->ids[i];
}

static int mg_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training, nn_rng *rng,
                     nn_tensor **out)
{
    (void)training;
    (void)rng;
    const mg_bagset *b = d->ctx;
    if (n != 1) return ncmi_error_set("mg_inputs: one bag at a time (%d asked)", n);
    const nn_tensor *x = b->bags[idx[0]];
    out[0] = nn_tensor_from(g, 2, x->shape, x->data);
    return 1;
}

static void mg_set(tr_dataset *d, mg_bagset *b, const char *name, int n, int first, nn_rng *rng)
{
    memset(d, 0, sizeof *d);
    memset(b, 0, sizeof *b);
    b->n = n;
    b->bags = calloc((size_t)n, sizeof *b->bags);
    d->labels = calloc((size_t)n, sizeof *d->labels);
    for (int i = 0; i < n; i++) {
        const int N = 1 + (int)nn_rng_below(rng, 40), y = (first + i) % 2;
        b->bags[i] = nn_tensor_new2(NULL, N, MG_DFEAT);
        nn_rng_fill_normal(rng, b->bags[i]->data, b->bags[i]->numel, 0.f, 1.f);
        if (y)
            for (int j = 0; j < MG_DFEAT; j++) b->bags[i]->data[(size_t)(i % N) * MG_DFEAT + j] += 2.f;
        d->labels[i] = y;
        snprintf(b->ids[i], sizeof b->ids[i], "%s%02d", name, i);
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = n;
    d->bags = 1;
    d->sample_id = mg_id;
    d->inputs = mg_inputs;
    d->ctx = b;
}

static void mg_set_free(tr_dataset *d, mg_bagset *b)
{
    for (int i = 0; i < b->n; i++) nn_tensor_free(b->bags[i]);
    free(b->bags);
    free(d->labels);
}

/* 3 epochs of SGD through tr_fit; the validation probabilities into prob [nval * 2] */
static void mg_fit(mil_head_kind kind, int cuda, double *prob, int *pred)
{
    nn_rng data;
    nn_rng_seed(&data, 23);
    tr_dataset tr, va;
    mg_bagset btr, bva;
    mg_set(&tr, &btr, "train", 16, 0, &data);
    mg_set(&va, &bva, "val", 6, 1, &data);
    mil_opts o;
    mg_opts(&o, kind);
    nn_rng rng;
    nn_rng_seed(&rng, 31);
    tr_model m;
    NCMI_CHECK(mil_head_init(&m, &o, &rng) == 0, "%s", ncmi_error());
    tr_config c;
    tr_config_default(&c);
    c.epochs = 3;
    c.batch_size = 1;
    c.lr = 0.01f;
    c.schedule.base_lr = c.lr;
    c.n_classes = 2;
    char *names[2] = {"a", "b"};
    c.class_names = names;
    c.device_cuda = cuda;
    c.seed = 4;
    tr_trainer t;
    NCMI_CHECK(tr_init(&t, &c, &m, &tr, &va, NULL, &rng) == 0, "%s", ncmi_error());
    NCMI_CHECK(tr_fit(&t) == 0, "%s", ncmi_error());
    NCMI_CHECK(tr_predict(&t, &va, TR_METHOD_LINEAR, pred, prob) == 0, "%s", ncmi_error());
    tr_free(&t);
    tr_model_free(&m);
    mg_set_free(&tr, &btr);
    mg_set_free(&va, &bva);
}

GPU_WORKER_TEST(gpu_mil_trainer_bags)
{
    static const mil_head_kind kinds[4] = {MIL_ABMIL, MIL_AEM, MIL_ASMIL, MIL_TRANSMIL};
    for (int k = 0; k < 4; k++) {
        double pc[12], pg[12];
        int yc[6], yg[6];
        mg_fit(kinds[k], 0, pc, yc);
        mg_fit(kinds[k], 1, pg, yg);
        double worst = 0;
        int same = 0;
        for (int i = 0; i < 12; i++) worst = fmax(worst, fabs(pc[i] - pg[i]));
        for (int i = 0; i < 6; i++) same += yc[i] == yg[i];
        printf("    %-8s tr_fit cpu vs cuda: validation probabilities within %.2e, %d/6 predictions equal\n",
               mil_head_kind_name(kinds[k]), worst, same);
        const double tol = kinds[k] == MIL_TRANSMIL ? 5e-3 : 1e-3;
        EXPECT(worst <= tol, "%s: probabilities differ by %.3g > %.0e", mil_head_kind_name(kinds[k]), worst, tol);
    }
}

/* ---- ncmi train --device cuda on a synthetic cohort ---- */

GPU_WORKER_TEST(gpu_mil_cli_train)
{
    if (!features_h5_available()) SKIP("built without libhdf5: the bag cohort cannot be written");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("gpu_mil_cli"));
    mil_synth s = {3, 24, 24, 64, 45, 15, 15, 6.f, 21};
    REQUIRE(mil_synth_write(dir, &s) == 0, "cannot write the cohort");
    static const char *const heads[] = {"abmil", "asmil", "transmil"};
    for (int h = 0; h < 3; h++) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/%s.yaml", dir, heads[h]);
        /* the CE config of tests/test_mil_train.c, 6 epochs */
        REQUIRE(mil_synth_config(cfg, dir, heads[h], 0, 6) == 0, "cannot write %s", cfg);
        char *oc = NULL, *og = NULL;
        int rc_c = test_ncmi(&oc, "train --device cpu --config %s --out %s/runs --set name=%s_cpu --force", cfg, dir,
                             heads[h]);
        int rc_g = test_ncmi(&og, "train --device cuda --config %s --out %s/runs --set name=%s_gpu --force", cfg, dir,
                             heads[h]);
        EXPECT(rc_c == 0, "%s: cpu run failed (%d): %s", heads[h], rc_c, oc ? oc : "");
        EXPECT(rc_g == 0, "%s: gpu run failed (%d): %s", heads[h], rc_g, og ? og : "");
        EXPECT(og && strstr(og, "device cuda"), "%s: the GPU run does not say it ran on cuda: %.300s", heads[h],
               og ? og : "");
        char pc[4300], pg[4300];
        snprintf(pc, sizeof pc, "%s/runs/%s_cpu/metrics_test.json", dir, heads[h]);
        snprintf(pg, sizeof pg, "%s/runs/%s_gpu/metrics_test.json", dir, heads[h]);
        const double fc = test_json_number(pc, "f1_macro"), fg = test_json_number(pg, "f1_macro");
        const double ac = test_json_number(pc, "accuracy"), ag = test_json_number(pg, "accuracy");
        printf("    %-8s test macro-F1 cpu %.4f gpu %.4f, accuracy cpu %.4f gpu %.4f\n", heads[h], fc, fg, ac, ag);
        EXPECT(fabs(fc - fg) <= 0.05, "%s: macro-F1 cpu %.4f vs gpu %.4f differ by more than 0.05", heads[h], fc,
               fg);
        free(oc);
        free(og);
    }
}
