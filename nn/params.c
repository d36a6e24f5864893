/* Named parameter sets, PyTorch init schemes, modules, safetensors I/O. */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"

/* ---- parameter sets ---- */

void nn_params_init(nn_params *P) { memset(P, 0, sizeof *P); }

void nn_params_free(nn_params *P)
{
    if (!P) return;
    for (int i = 0; i < P->n; i++) nn_tensor_free(P->t[i]);
    free(P->t);
    free(P->kind);
    free(P->save_dtype);
    free(P->host_only);
    memset(P, 0, sizeof *P);
}

nn_tensor *nn_params_get(const nn_params *P, const char *name)
{
    for (int i = 0; i < P->n; i++)
        if (strcmp(P->t[i]->name, name) == 0) return P->t[i];
    return NULL;
}

nn_tensor *nn_params_add(nn_params *P, const char *name, nn_param_kind kind, int ndim,
                         const int *shape)
{
    NCMI_CHECK(name && name[0], "parameter without a name");
    NCMI_CHECK(strlen(name) < NN_NAME_MAX, "parameter name too long: %s", name);
    NCMI_CHECK(nn_params_get(P, name) == NULL, "parameter '%s' added twice", name);
    NCMI_CHECK(kind == NN_PARAM_WEIGHT || kind == NN_PARAM_BUFFER, "bad parameter kind %d", (int)kind);
    if (P->n == P->cap) {
        int cap = P->cap ? P->cap * 2 : 32;
        nn_tensor **t = realloc(P->t, (size_t)cap * sizeof *t);
        nn_param_kind *k = realloc(P->kind, (size_t)cap * sizeof *k);
        nn_st_dtype *d = realloc(P->save_dtype, (size_t)cap * sizeof *d);
        unsigned char *h = realloc(P->host_only, (size_t)cap * sizeof *h);
        NCMI_CHECK(t && k && d && h, "out of memory growing the parameter set");
        P->t = t;
        P->kind = k;
        P->save_dtype = d;
        P->host_only = h;
        P->cap = cap;
    }
    nn_tensor *x = nn_tensor_new(NULL, ndim, shape);
    nn_tensor_set_name(x, name);
    x->requires_grad = kind == NN_PARAM_WEIGHT;
    P->t[P->n] = x;
    P->kind[P->n] = kind;
    P->save_dtype[P->n] = NN_ST_F32;
    P->host_only[P->n] = 0;
    P->n++;
    return x;
}

nn_tensor *nn_params_addf(nn_params *P, const char *prefix, const char *name, nn_param_kind kind,
                          int ndim, const int *shape)
{
    char full[NN_NAME_MAX];
    int len = prefix && prefix[0] ? snprintf(full, sizeof full, "%s.%s", prefix, name)
                                  : snprintf(full, sizeof full, "%s", name);
    NCMI_CHECK(len >= 0 && len < (int)sizeof full, "parameter name too long: %s.%s", prefix, name);
    return nn_params_add(P, full, kind, ndim, shape);
}

void nn_params_zero_grad(nn_params *P)
{
    for (int i = 0; i < P->n; i++) nn_tensor_zero_grad(P->t[i]);
}

void nn_params_to_device(nn_params *P, nn_device dev)
{
    for (int i = 0; i < P->n; i++)
        if (!P->host_only[i]) nn_tensor_move(P->t[i], dev);
}

size_t nn_params_numel(const nn_params *P, int trainable_only)
{
    size_t n = 0;
    for (int i = 0; i < P->n; i++)
        if (!trainable_only || P->kind[i] == NN_PARAM_WEIGHT) n += P->t[i]->numel;
    return n;
}

/* ---- safetensors I/O ---- */

void nn_params_st_tensors(const nn_params *P, nn_st_tensor *ts, void **hold)
{
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        ts[i].name = t->name;
        ts[i].dtype = P->save_dtype[i];
        ts[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) ts[i].shape[d] = t->shape[d];
        /* hold[i]: a malloc'd host copy (device tensor) or NULL (t->data is host memory) */
        const float *h = nn_host_view(t);
        hold[i] = h != t->data ? (void *)h : NULL;
        ts[i].data = h;
        if (P->save_dtype[i] == NN_ST_I64 || P->save_dtype[i] == NN_ST_I32) {
            ts[i].dtype = NN_ST_I64;
            int64_t *ib = malloc((t->numel ? t->numel : 1) * sizeof(int64_t));
            NCMI_CHECK(ib != NULL, "out of memory (%zu counters of %s)", t->numel, t->name);
            for (size_t k = 0; k < t->numel; k++) ib[k] = (int64_t)llrintf(h[k]);
            free(hold[i]);
            hold[i] = ib;
            ts[i].data = ib;
        }
    }
}

void nn_params_st_release(const nn_params *P, void **hold)
{
    for (int i = 0; i < P->n; i++) {
        free(hold[i]);
        hold[i] = NULL;
    }
}

int nn_params_save(const nn_params *P, const char *path, const char *const *meta_keys,
                   const char *const *meta_vals, int n_meta)
{
    nn_st_tensor *ts = calloc((size_t)P->n + 1, sizeof *ts);
    void **hold = calloc((size_t)P->n + 1, sizeof *hold);
    if (!ts || !hold) {
        free(ts);
        free(hold);
        return ncmi_error_set("%s: out of memory", path);
    }
    nn_params_st_tensors(P, ts, hold);
    int rc = nn_st_write(path, ts, P->n, meta_keys, meta_vals, n_meta);
    nn_params_st_release(P, hold);
    free(hold);
    free(ts);
    return rc;
}

/* Entries whose names start with this prefix are optimizer state of a
 * checkpoint: never "unexpected" when loading the weights alone. */
#define OPTIM_PREFIX "optim."

int nn_params_load_st(nn_params *P, const nn_safetensors *st, int strict)
{
    /* 1. validate everything */
    int missing = 0;
    const char *first_missing = NULL;
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        const nn_st_entry *e = nn_st_find(st, t->name);
        if (!e) {
            if (!missing) first_missing = t->name;
            missing++;
            continue;
        }
        if (nn_st_check_shape(st, e, t->ndim, t->shape) != 0) return -1;
    }
    if (missing)
        return missing == 1
                   ? ncmi_error_set("%s: tensor '%s' missing from the file", st->path, first_missing)
                   : ncmi_error_set("%s: tensor '%s' missing from the file (and %d more)", st->path,
                                    first_missing, missing - 1);
    if (strict) {
        int unexpected = 0;
        const char *first = NULL;
        for (int i = 0; i < st->n; i++) {
            const char *name = st->entries[i].name;
            if (strncmp(name, OPTIM_PREFIX, strlen(OPTIM_PREFIX)) == 0) continue;
            if (!nn_params_get(P, name)) {
                if (!unexpected) first = name;
                unexpected++;
            }
        }
        if (unexpected)
            return unexpected == 1
                       ? ncmi_error_set("%s: unexpected tensor '%s' in the file", st->path, first)
                       : ncmi_error_set("%s: unexpected tensor '%s' in the file (and %d more)",
                                        st->path, first, unexpected - 1);
    }
    /* 2. copy (cannot fail any more: names, shapes and byte ranges are checked);
     * a device tensor is read into a host buffer, then copied up */
    for (int i = 0; i < P->n; i++) {
        nn_tensor *t = P->t[i];
        float *h = t->device == NN_DEVICE_CPU ? t->data : malloc((t->numel ? t->numel : 1) * sizeof(float));
        NCMI_CHECK(h != NULL, "out of memory (%zu floats of %s)", t->numel, t->name);
        int rc = nn_st_read_f32(st, t->name, h, t->numel, t->ndim, t->shape);
        NCMI_CHECK(rc == 0, "reading a validated tensor failed: %s", ncmi_error());
        if (h != t->data) {
            nn_tensor_from_host(t, h);
            free(h);
        }
    }
    return 0;
}

int nn_params_load(nn_params *P, const char *path, int strict)
{
    nn_safetensors st;
    if (nn_st_open(&st, path) != 0) return -1;
    int rc = nn_params_load_st(P, &st, strict);
    nn_st_close(&st);
    return rc;
}

/* ---- init schemes (torch.nn.init) ---- */

/* Host memory to draw t's values into: t->data on the CPU, a buffer for a
 * device tensor that init_commit copies up and frees. */
static float *init_buf(nn_tensor *t)
{
    if (t->device == NN_DEVICE_CPU) return t->data;
    float *h = malloc((t->numel ? t->numel : 1) * sizeof(float));
    NCMI_CHECK(h != NULL, "out of memory (%zu floats)", t->numel);
    return h;
}

static void init_commit(nn_tensor *t, float *h)
{
    if (h == t->data) return;
    nn_tensor_from_host(t, h);
    free(h);
}

void nn_init_uniform(nn_tensor *t, float lo, float hi, nn_rng *rng)
{
    float *h = init_buf(t);
    nn_rng_fill_uniform(rng, h, t->numel, lo, hi);
    init_commit(t, h);
}

void nn_init_normal(nn_tensor *t, float mean, float std, nn_rng *rng)
{
    float *h = init_buf(t);
    nn_rng_fill_normal(rng, h, t->numel, mean, std);
    init_commit(t, h);
}

void nn_init_constant(nn_tensor *t, float v) { nn_tensor_fill(t, v); }

void nn_init_fans(const nn_tensor *t, int *fan_in, int *fan_out)
{
    NCMI_CHECK(t->ndim >= 2,
               "fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions");
    int rf = 1;
    for (int d = 2; d < t->ndim; d++) rf *= t->shape[d];
    *fan_in = t->shape[1] * rf;
    *fan_out = t->shape[0] * rf;
}

void nn_init_kaiming_uniform(nn_tensor *t, float a, nn_rng *rng)
{
    int fi, fo;
    nn_init_fans(t, &fi, &fo);
    if (t->numel == 0) return;
    /* gain = sqrt(2 / (1 + a^2)); std = gain / sqrt(fan_in); bound = sqrt(3) std */
    double gain = sqrt(2.0 / (1.0 + (double)a * a));
    double bound = sqrt(3.0) * gain / sqrt((double)fi);
    nn_init_uniform(t, (float)-bound, (float)bound, rng);
}

void nn_init_kaiming_normal_fan_out(nn_tensor *t, nn_rng *rng)
{
    int fi, fo;
    nn_init_fans(t, &fi, &fo);
    if (t->numel == 0) return;
    double std = sqrt(2.0) / sqrt((double)fo);
    nn_init_normal(t, 0.f, (float)std, rng);
}

void nn_init_xavier_uniform(nn_tensor *t, float gain, nn_rng *rng)
{
    int fi, fo;
    nn_init_fans(t, &fi, &fo);
    double std = gain * sqrt(2.0 / (double)(fi + fo));
    double a = sqrt(3.0) * std;
    nn_init_uniform(t, (float)-a, (float)a, rng);
}

void nn_init_xavier_normal(nn_tensor *t, float gain, nn_rng *rng)
{
    int fi, fo;
    nn_init_fans(t, &fi, &fo);
    double std = gain * sqrt(2.0 / (double)(fi + fo));
    nn_init_normal(t, 0.f, (float)std, rng);
}

/* bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (0 when fan_in is 0), as nn.Linear/nn.Conv2d */
static void init_bias(nn_tensor *b, int fan_in, nn_rng *rng)
{
    double bound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0.0;
    nn_init_uniform(b, (float)-bound, (float)bound, rng);
}

/* ---- modules ---- */

void nn_linear_m_init(nn_linear_m *m, nn_params *P, const char *prefix, int in, int out, int bias,
                      nn_rng *rng)
{
    NCMI_CHECK(in >= 0 && out >= 0, "linear %s: in %d, out %d", prefix ? prefix : "", in, out);
    m->in = in;
    m->out = out;
    m->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_WEIGHT, 2, (int[]){out, in});
    nn_init_kaiming_uniform(m->weight, sqrtf(5.f), rng);
    m->bias = NULL;
    if (bias) {
        m->bias = nn_params_addf(P, prefix, "bias", NN_PARAM_WEIGHT, 1, (int[]){out});
        init_bias(m->bias, in, rng);
    }
}

nn_tensor *nn_linear_m_forward(nn_graph *g, const nn_linear_m *m, nn_tensor *x)
{
    return nn_linear(g, x, m->weight, m->bias);
}

void nn_conv2d_m_init(nn_conv2d_m *m, nn_params *P, const char *prefix, int cin, int cout, int k,
                      int stride, int padding, int dilation, int groups, int bias, nn_rng *rng)
{
    NCMI_CHECK(groups >= 1 && cin % groups == 0 && cout % groups == 0,
               "conv2d %s: cin %d and cout %d must be divisible by groups %d", prefix ? prefix : "",
               cin, cout, groups);
    NCMI_CHECK(k >= 1 && stride >= 1 && padding >= 0 && dilation >= 1,
               "conv2d %s: kernel %d stride %d padding %d dilation %d", prefix ? prefix : "", k,
               stride, padding, dilation);
    m->cin = cin;
    m->cout = cout;
    m->k = k;
    m->stride = stride;
    m->padding = padding;
    m->dilation = dilation;
    m->groups = groups;
    m->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_WEIGHT, 4,
                               (int[]){cout, cin / groups, k, k});
    nn_init_kaiming_uniform(m->weight, sqrtf(5.f), rng);
    m->bias = NULL;
    if (bias) {
        m->bias = nn_params_addf(P, prefix, "bias", NN_PARAM_WEIGHT, 1, (int[]){cout});
        init_bias(m->bias, cin / groups * k * k, rng);
    }
}

nn_tensor *nn_conv2d_m_forward(nn_graph *g, const nn_conv2d_m *m, nn_tensor *x)
{
    return nn_conv2d(g, x, m->weight, m->bias, m->stride, m->padding, m->dilation, m->groups);
}

void nn_batchnorm2d_m_init(nn_batchnorm2d_m *m, nn_params *P, const char *prefix, int c)
{
    m->c = c;
    m->momentum = 0.1f;
    m->eps = 1e-5f;
    m->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_WEIGHT, 1, (int[]){c});
    m->bias = nn_params_addf(P, prefix, "bias", NN_PARAM_WEIGHT, 1, (int[]){c});
    m->running_mean = nn_params_addf(P, prefix, "running_mean", NN_PARAM_BUFFER, 1, (int[]){c});
    m->running_var = nn_params_addf(P, prefix, "running_var", NN_PARAM_BUFFER, 1, (int[]){c});
    m->num_batches_tracked = nn_params_addf(P, prefix, "num_batches_tracked", NN_PARAM_BUFFER, 0, NULL);
    P->save_dtype[P->n - 1] = NN_ST_I64;
    P->host_only[P->n - 1] = 1; /* counted on the host by the forward below */
    nn_tensor_fill(m->weight, 1.f);
    nn_tensor_fill(m->running_var, 1.f);
}

nn_tensor *nn_batchnorm2d_m_forward(nn_graph *g, nn_batchnorm2d_m *m, nn_tensor *x, int training)
{
    if (training) m->num_batches_tracked->data[0] += 1.f;
    return nn_batchnorm2d(g, x, m->weight, m->bias, m->running_mean, m->running_var, training,
                          m->momentum, m->eps);
}

void nn_layernorm_m_init(nn_layernorm_m *m, nn_params *P, const char *prefix, int d, float eps)
{
    m->d = d;
    m->eps = eps;
    m->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_WEIGHT, 1, (int[]){d});
    m->bias = nn_params_addf(P, prefix, "bias", NN_PARAM_WEIGHT, 1, (int[]){d});
    nn_tensor_fill(m->weight, 1.f);
}

nn_tensor *nn_layernorm_m_forward(nn_graph *g, const nn_layernorm_m *m, nn_tensor *x)
{
    return nn_layernorm(g, x, m->weight, m->bias, m->eps);
}
