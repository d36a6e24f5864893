/* Golden tests: the same computation in ncmi and in PyTorch.
 *
 * tests/reference/golden_<name>.py (run by `make golden`, torch 1.13) write
 * tests/golden/<name>.safetensors: inputs, labels, every parameter (state_dict
 * names), intermediate outputs, the loss, every parameter gradient, the input
 * gradient and (convnet) the running statistics after the step. The files are
 * committed: a missing or unreadable file is a failure, not a skip.
 *
 * Here the parameters are loaded into nn/params.h modules by name
 * (nn_params_load_st), the forward is built with nn/ops.h, one backward is
 * run, and every stored tensor is compared element by element with
 *
 *     |ours - ref| <= 1e-4 * max(|ref|, scale),  scale = 1e-2 * max_j |ref_j|
 *
 * where max_j runs over the whole tensor being compared. The absolute floor
 * (1e-6 of the tensor's largest magnitude) is for elements that are near zero
 * only by cancellation: their float32 rounding error is proportional to the
 * size of the terms that cancelled, not to the tiny result. The golden values
 * are computed in float64 from the float32 inputs, so they carry no rounding
 * of their own; float32 PyTorch itself meets this bound with a margin of ~5
 * (the generators check that).
 *
 * $NCMI_GOLDEN overrides the golden directory (default tests/golden, relative
 * to the repository root where the tests run). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "golden_io.h"
#include "test.h"

#define GOLDEN_RTOL 1e-4
#define GOLDEN_FLOOR 1e-2 /* scale = GOLDEN_FLOOR * max |ref| of the tensor */

static const char *golden_dir(void)
{
    const char *d = getenv("NCMI_GOLDEN");
    return d && *d ? d : "tests/golden";
}

static int golden_open(nn_safetensors *st, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", golden_dir(), file);
    if (nn_st_open(st, path) != 0) {
        test_fail_at(__FILE__, __LINE__,
                     "cannot open golden file (committed; regenerate with `make golden`): %s",
                     ncmi_error());
        return -1;
    }
    return 0;
}

typedef struct {
    const char *file;
    double worst;        /* max |a-b| / max(|b|, scale) over everything compared */
    char worst_name[96];
    int ncompared;
} golden_stats;

/* The elementwise check (pure): returns how many elements fail; *worst gets
 * the largest |a-b| / max(|b|, scale) (INFINITY for NaN), *wi its index. */
static int golden_check(const float *ours, const float *ref, size_t n, double *worst,
                        size_t *wi)
{
    double maxref = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)ref[i]));
    double scale = GOLDEN_FLOOR * maxref;
    int bad = 0;
    *worst = 0;
    *wi = 0;
    for (size_t i = 0; i < n; i++) {
        double a = ours[i], b = ref[i];
        double den = fmax(fabs(b), scale);
        double err = fabs(a - b) / (den > 0 ? den : 1.0);
        if (isnan(err)) err = INFINITY;
        if (err > *worst) {
            *worst = err;
            *wi = i;
        }
        if (!(fabs(a - b) <= GOLDEN_RTOL * den)) bad++;
    }
    return bad;
}

/* Compare n floats `ours` with tensor `name` of st (shape checked when
 * ndim >= 0); a mismatch is a test failure. */
static void golden_cmp(golden_stats *gs, const nn_safetensors *st, const char *name,
                       const float *ours, int ndim, const int *shape, size_t n)
{
    if (!ours) {
        test_fail_at(__FILE__, __LINE__, "%s: %s: no values (gradient never computed?)",
                     gs->file, name);
        return;
    }
    float *ref = malloc(n * sizeof(float));
    NCMI_CHECK(ref, "out of memory");
    if (nn_st_read_f32(st, name, ref, n, ndim, shape) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        free(ref);
        return;
    }
    double worst;
    size_t wi;
    int bad = golden_check(ours, ref, n, &worst, &wi);
    if (bad)
        test_fail_at(__FILE__, __LINE__,
                     "%s: %s: %d of %zu elements off; worst [%zu] ours %.9g ref %.9g (rel %.3g)",
                     gs->file, name, bad, n, wi, ours[wi], ref[wi], worst);
    if (worst > gs->worst || gs->ncompared == 0) {
        gs->worst = worst;
        snprintf(gs->worst_name, sizeof gs->worst_name, "%s", name);
    }
    gs->ncompared++;
    free(ref);
}

/* values of t (any device) against tensor `name` */
static void golden_cmp_t(golden_stats *gs, const nn_safetensors *st, const char *name,
                         const nn_tensor *t)
{
    float *h = nn_host_view(t);
    golden_cmp(gs, st, name, h, t->ndim, t->shape, t->numel);
    nn_host_release(t, h);
}

/* the gradient of t (any device; none: a failure) against `name` */
static void golden_cmp_grad(golden_stats *gs, const nn_safetensors *st, const char *name,
                            const nn_tensor *t)
{
    float *h = NULL;
    if (t->grad) {
        h = malloc(t->numel * sizeof(float));
        NCMI_CHECK(h, "out of memory");
        nn_tensor_grad_to_host(t, h);
    }
    golden_cmp(gs, st, name, h, t->ndim, t->shape, t->numel);
    free(h);
}

/* grad.<param name> for every trainable parameter of P. */
static void golden_cmp_grads(golden_stats *gs, const nn_safetensors *st, const nn_params *P)
{
    for (int i = 0; i < P->n; i++) {
        if (P->kind[i] != NN_PARAM_WEIGHT) continue;
        char name[NN_NAME_MAX + 8];
        snprintf(name, sizeof name, "grad.%s", P->t[i]->name);
        golden_cmp_grad(gs, st, name, P->t[i]);
    }
}

/* the first value of t, read back from any device */
static float first_value(const nn_tensor *t)
{
    float v;
    float *h = nn_host_view(t);
    v = h[0];
    nn_host_release(t, h);
    return v;
}

/* Parameters and the input on dev (the golden tests also run on the GPU:
 * tests/gpu/test_gpu_golden.c). */
static void golden_to_device(nn_params *P, nn_tensor *x, nn_device dev)
{
    nn_params_to_device(P, dev);
    nn_tensor_move(x, dev);
}

static void golden_report(const golden_stats *gs)
{
    printf("    %s: %d tensors, max rel err %.3g (%s)\n", gs->file, gs->ncompared, gs->worst,
           gs->worst_name);
}

/* ---------------------------------------------------------------------- */
/* convnet: conv -> batchnorm (training) -> relu -> maxpool -> grouped dilated
 * conv -> relu -> grouped strided conv -> avgpool -> linear -> CE + CE(ls). */

typedef struct {
    nn_params P;
    nn_conv2d_m conv1, conv2, conv3;
    nn_batchnorm2d_m bn1;
    nn_linear_m fc;
} convnet;

static void convnet_init(convnet *m)
{
    nn_rng rng;
    nn_rng_seed(&rng, 1);
    nn_params_init(&m->P);
    nn_conv2d_m_init(&m->conv1, &m->P, "conv1", 3, 8, 3, 1, 1, 1, 1, 0, &rng);
    nn_batchnorm2d_m_init(&m->bn1, &m->P, "bn1", 8);
    nn_conv2d_m_init(&m->conv2, &m->P, "conv2", 8, 8, 3, 1, 2, 2, 4, 1, &rng);
    nn_conv2d_m_init(&m->conv3, &m->P, "conv3", 8, 8, 3, 2, 1, 1, 2, 1, &rng);
    nn_linear_m_init(&m->fc, &m->P, "fc", 32, 5, 1, &rng);
}

typedef struct {
    nn_tensor *conv1, *bn1, *pool1, *conv2, *conv3, *pool2, *logits;
} convnet_out;

static void convnet_forward(nn_graph *g, convnet *m, nn_tensor *x, int training, convnet_out *o)
{
    o->conv1 = nn_conv2d_m_forward(g, &m->conv1, x);                    /* [4,8,12,12] */
    o->bn1 = nn_batchnorm2d_m_forward(g, &m->bn1, o->conv1, training);  /* [4,8,12,12] */
    o->pool1 = nn_maxpool2d(g, nn_relu(g, o->bn1), 2, 2, 0);            /* [4,8,6,6] */
    o->conv2 = nn_conv2d_m_forward(g, &m->conv2, o->pool1);             /* [4,8,6,6] */
    o->conv3 = nn_conv2d_m_forward(g, &m->conv3, nn_relu(g, o->conv2)); /* [4,8,3,3] */
    o->pool2 = nn_avgpool2d(g, o->conv3, 2, 1, 0);                      /* [4,8,2,2] */
    int flat[2] = {o->pool2->shape[0], -1};
    o->logits = nn_linear_m_forward(g, &m->fc, nn_reshape(g, o->pool2, 2, flat)); /* [4,5] */
}

void golden_convnet_on(nn_device dev);
void golden_convnet_on(nn_device dev)
{
    golden_stats gs = {.file = "convnet.safetensors"};
    nn_safetensors st;
    if (golden_open(&st, gs.file) != 0) return;
    convnet m;
    convnet_init(&m);
    nn_graph *g = nn_graph_new();
    nn_tensor *x = test_st_tensor(&st, "x");
    int y[4];
    if (nn_params_load_st(&m.P, &st, 0) != 0) {
        test_fail_at(__FILE__, __LINE__, "loading parameters: %s", ncmi_error());
        goto done;
    }
    if (!x || x->ndim != 4 || x->shape[0] != 4 || test_st_labels(&st, "y", y, 4) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s: x [4,3,12,12] / y [4] missing or malformed",
                     gs.file);
        goto done;
    }
    x->requires_grad = 1;
    golden_to_device(&m.P, x, dev);

    convnet_out o;
    convnet_forward(g, &m, x, 1, &o);
    nn_tensor *ce = nn_cross_entropy(g, o.logits, y, 0.f);
    nn_tensor *ces = nn_cross_entropy(g, o.logits, y, 0.1f);
    nn_tensor *loss = nn_add(g, ce, ces);
    if (nn_backward(g, loss) != 0) {
        test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
        goto done;
    }

    golden_cmp_t(&gs, &st, "out.conv1", o.conv1);
    golden_cmp_t(&gs, &st, "out.bn1", o.bn1);
    golden_cmp_t(&gs, &st, "out.pool1", o.pool1);
    golden_cmp_t(&gs, &st, "out.conv2", o.conv2);
    golden_cmp_t(&gs, &st, "out.conv3", o.conv3);
    golden_cmp_t(&gs, &st, "out.pool2", o.pool2);
    golden_cmp_t(&gs, &st, "out.logits", o.logits);
    golden_cmp_t(&gs, &st, "loss.ce", ce);
    golden_cmp_t(&gs, &st, "loss.ce_smooth", ces);
    golden_cmp_t(&gs, &st, "loss", loss);
    golden_cmp_grads(&gs, &st, &m.P);
    golden_cmp_grad(&gs, &st, "grad.x", x);
    golden_cmp_t(&gs, &st, "after.bn1.running_mean", m.bn1.running_mean);
    golden_cmp_t(&gs, &st, "after.bn1.running_var", m.bn1.running_var);
    int64_t nbt = -1;
    EXPECT(nn_st_read_i64(&st, "after.bn1.num_batches_tracked", &nbt, 1) == 0, "%s",
           ncmi_error());
    EXPECT(first_value(m.bn1.num_batches_tracked) == (float)nbt,
           "bn1.num_batches_tracked %g after one training step, PyTorch %lld",
           first_value(m.bn1.num_batches_tracked), (long long)nbt);

    /* eval mode with the updated running statistics, no further update */
    nn_graph_reset(g);
    float rm0 = first_value(m.bn1.running_mean), rv0 = first_value(m.bn1.running_var);
    int prev = nn_graph_set_no_grad(g, 1);
    convnet_forward(g, &m, x, 0, &o);
    nn_graph_set_no_grad(g, prev);
    golden_cmp_t(&gs, &st, "out.eval_logits", o.logits);
    EXPECT(first_value(m.bn1.running_mean) == rm0 && first_value(m.bn1.running_var) == rv0,
           "eval-mode batchnorm changed the running statistics");
    golden_report(&gs);
done:
    nn_tensor_free(x);
    nn_graph_free(g);
    nn_params_free(&m.P);
    nn_st_close(&st);
}

TEST(golden_convnet) { golden_convnet_on(NN_DEVICE_CPU); }

/* ---------------------------------------------------------------------- */
/* ABMIL gated attention: layernorm -> linear -> gelu -> gated attention ->
 * softmax over instances -> attention pooling -> linear -> CE + CE(ls). */

typedef struct {
    nn_params P;
    nn_layernorm_m norm;
    nn_linear_m fc, att_a, att_b, att_c, classifier;
} gated_attn;

static void gated_attn_init(gated_attn *m)
{
    nn_rng rng;
    nn_rng_seed(&rng, 2);
    nn_params_init(&m->P);
    nn_layernorm_m_init(&m->norm, &m->P, "norm", 24, 1e-5f);
    nn_linear_m_init(&m->fc, &m->P, "fc", 24, 20, 1, &rng);
    nn_linear_m_init(&m->att_a, &m->P, "attention_a", 20, 12, 1, &rng);
    nn_linear_m_init(&m->att_b, &m->P, "attention_b", 20, 12, 1, &rng);
    nn_linear_m_init(&m->att_c, &m->P, "attention_c", 12, 1, 0, &rng);
    nn_linear_m_init(&m->classifier, &m->P, "classifier", 20, 3, 1, &rng);
}

typedef struct {
    nn_tensor *ln, *h, *a, *alpha, *z, *logits;
} gated_attn_out;

/* pooling 0: alpha = softmax(transpose(a)), z = alpha @ h.
 * pooling 1: alpha = softmax(reshape(a, [1,N])), z = sum_i (alpha^T ⊙ h)_i. */
static void gated_attn_forward(nn_graph *g, gated_attn *m, nn_tensor *x, int pooling,
                               gated_attn_out *o)
{
    int n = x->shape[0];
    o->ln = nn_layernorm_m_forward(g, &m->norm, x);                        /* [N,24] */
    o->h = nn_gelu(g, nn_linear_m_forward(g, &m->fc, o->ln));              /* [N,20] */
    nn_tensor *ta = nn_tanh(g, nn_linear_m_forward(g, &m->att_a, o->h));   /* [N,12] */
    nn_tensor *sb = nn_sigmoid(g, nn_linear_m_forward(g, &m->att_b, o->h)); /* [N,12] */
    o->a = nn_linear_m_forward(g, &m->att_c, nn_mul(g, ta, sb));          /* [N,1] */
    if (pooling == 0) {
        o->alpha = nn_softmax(g, nn_transpose(g, o->a, 0, 1)); /* [1,N] */
        o->z = nn_matmul(g, o->alpha, o->h);                   /* [1,20] */
    } else {
        int row[2] = {1, n}, col[2] = {n, 1};
        o->alpha = nn_softmax(g, nn_reshape(g, o->a, 2, row));             /* [1,N] */
        nn_tensor *w = nn_mul(g, o->h, nn_reshape(g, o->alpha, 2, col));  /* [N,20] */
        o->z = nn_sum(g, w, 0, 1);                                         /* [1,20] */
    }
    o->logits = nn_linear_m_forward(g, &m->classifier, o->z); /* [1,3] */
}

void golden_attention_on(int pooling, nn_device dev);
void golden_attention_on(int pooling, nn_device dev)
{
    golden_stats gs = {.file = "attention.safetensors"};
    nn_safetensors st;
    if (golden_open(&st, gs.file) != 0) return;
    gated_attn m;
    gated_attn_init(&m);
    nn_graph *g = nn_graph_new();
    nn_tensor *x = test_st_tensor(&st, "x");
    int y[1];
    if (nn_params_load_st(&m.P, &st, 0) != 0) {
        test_fail_at(__FILE__, __LINE__, "loading parameters: %s", ncmi_error());
        goto done;
    }
    if (!x || x->ndim != 2 || x->shape[1] != 24 || test_st_labels(&st, "y", y, 1) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s: x [N,24] / y [1] missing or malformed", gs.file);
        goto done;
    }
    x->requires_grad = 1;
    golden_to_device(&m.P, x, dev);

    gated_attn_out o;
    gated_attn_forward(g, &m, x, pooling, &o);
    nn_tensor *ce = nn_cross_entropy(g, o.logits, y, 0.f);
    nn_tensor *ces = nn_cross_entropy(g, o.logits, y, 0.1f);
    nn_tensor *loss = nn_add(g, ce, ces);
    if (nn_backward(g, loss) != 0) {
        test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
        goto done;
    }
    golden_cmp_t(&gs, &st, "out.ln", o.ln);
    golden_cmp_t(&gs, &st, "out.h", o.h);
    golden_cmp_t(&gs, &st, "out.a", o.a);
    golden_cmp_t(&gs, &st, "out.alpha", o.alpha);
    golden_cmp_t(&gs, &st, "out.z", o.z);
    golden_cmp_t(&gs, &st, "out.logits", o.logits);
    golden_cmp_t(&gs, &st, "loss.ce", ce);
    golden_cmp_t(&gs, &st, "loss.ce_smooth", ces);
    golden_cmp_t(&gs, &st, "loss", loss);
    golden_cmp_grads(&gs, &st, &m.P);
    golden_cmp_grad(&gs, &st, "grad.x", x);
    printf("    (pooling: %s)\n", pooling == 0 ? "transpose + matmul" : "reshape + mul + sum");
    golden_report(&gs);
done:
    nn_tensor_free(x);
    nn_graph_free(g);
    nn_params_free(&m.P);
    nn_st_close(&st);
}

TEST(golden_attention_matmul) { golden_attention_on(0, NN_DEVICE_CPU); }

TEST(golden_attention_mul_sum) { golden_attention_on(1, NN_DEVICE_CPU); }

/* The comparison itself must be able to fail: an exact copy of a golden
 * tensor passes, a 1e-3 relative error on one element, a NaN, or a
 * near-zero element off by more than the floor do not. */
TEST(golden_compare_detects_errors)
{
    nn_safetensors st;
    if (golden_open(&st, "attention.safetensors") != 0) return;
    nn_tensor *ref = test_st_tensor(&st, "grad.fc.weight");
    nn_tensor *z = test_st_tensor(&st, "grad.fc.weight");
    REQUIRE(ref && z, "grad.fc.weight missing");
    double worst;
    size_t wi, j = 0, k = 0;
    EXPECT(golden_check(z->data, ref->data, z->numel, &worst, &wi) == 0 && worst == 0,
           "exact copy rejected");
    for (size_t i = 0; i < z->numel; i++) {
        if (fabsf(ref->data[i]) > fabsf(ref->data[j])) j = i;
        if (fabsf(ref->data[i]) < fabsf(ref->data[k])) k = i;
    }
    z->data[j] *= 1.0f + 1e-3f;
    EXPECT(golden_check(z->data, ref->data, z->numel, &worst, &wi) == 1 && wi == j,
           "a 1e-3 relative error was accepted (rel %.3g)", worst);
    z->data[j] = ref->data[j] * (1.0f + 5e-5f);
    EXPECT(golden_check(z->data, ref->data, z->numel, &worst, &wi) == 0,
           "a 5e-5 relative error was rejected (rel %.3g)", worst);
    z->data[j] = NAN;
    EXPECT(golden_check(z->data, ref->data, z->numel, &worst, &wi) == 1 && isinf(worst),
           "NaN accepted");
    z->data[j] = ref->data[j];
    /* the smallest element: allowed error 1e-4 * 1e-2 * max|ref| */
    z->data[k] = ref->data[k] + 2e-6f * fabsf(ref->data[j]);
    EXPECT(golden_check(z->data, ref->data, z->numel, &worst, &wi) == 1 && wi == k,
           "a near-zero element off by 2e-6*max was accepted");
    nn_tensor_free(ref);
    nn_tensor_free(z);
    nn_st_close(&st);
}
