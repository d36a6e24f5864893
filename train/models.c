/* The trainer's in-memory dataset (tr_dense_dataset_init) and the MLP model
 * (tr_mlp_init); see trainer.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "trainer.h"

/* ---- datasets ---- */

int tr_dataset_check(const tr_dataset *d, int C)
{
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] < 0 || d->labels[i] >= C) {
            const char *id = d->sample_id ? d->sample_id(d, i) : "";
            return ncmi_error_set("%s: row %d (sample %s): label %d is not one of the %d classes",
                                  d->source[0] ? d->source : d->name, i + 1, id, d->labels[i], C);
        }
    return 0;
}

void tr_dataset_free(tr_dataset *d)
{
    if (d && d->free) d->free(d);
    if (d) memset(d, 0, sizeof *d);
}

typedef struct dense {
    int ndim, shape[3];
    size_t numel;   /* per sample */
    float *X;
    char **ids;
    char idbuf[96];
    tr_dense_opts opts;
    int c, h, w;    /* image view for augmentation */
} dense;

static const char *dense_id(const tr_dataset *d, int i)
{
    dense *s = d->ctx;
    if (s->ids) return s->ids[i];
    snprintf(s->idbuf, sizeof s->idbuf, "%s_%d", d->name, i);
    return s->idbuf;
}

/* out [c,h,w] = in shifted by (dy, dx), zero fill. */
static void shift_image(const float *in, float *out, int c, int h, int w, int dy, int dx)
{
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++) {
            int sy = y - dy;
            float *o = out + ((size_t)k * h + y) * w;
            if (sy < 0 || sy >= h) {
                memset(o, 0, (size_t)w * sizeof *o);
                continue;
            }
            const float *r = in + ((size_t)k * h + sy) * w;
            for (int x = 0; x < w; x++) {
                int sx = x - dx;
                o[x] = sx >= 0 && sx < w ? r[sx] : 0.f;
            }
        }
}

static int dense_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training,
                        nn_rng *rng, nn_tensor **out)
{
    dense *s = d->ctx;
    int shape[4] = {n, s->shape[0], s->shape[1], s->shape[2]};
    nn_tensor *x = nn_tensor_new(g, s->ndim + 1, shape);
    const int aug = training && s->opts.shift > 0 && s->h > 0 && rng;
    for (int i = 0; i < n; i++) {
        const float *src = s->X + (size_t)idx[i] * s->numel;
        float *dst = x->data + (size_t)i * s->numel;
        if (aug) {
            int k = s->opts.shift;
            int dy = (int)nn_rng_below(rng, (uint64_t)(2 * k + 1)) - k;
            int dx = (int)nn_rng_below(rng, (uint64_t)(2 * k + 1)) - k;
            shift_image(src, dst, s->c, s->h, s->w, dy, dx);
        } else {
            memcpy(dst, src, s->numel * sizeof(float));
        }
    }
    out[0] = x;
    return 1;
}

static void dense_free(tr_dataset *d)
{
    dense *s = d->ctx;
    if (!s) return;
    free(s->X);
    if (s->ids) {
        for (int i = 0; i < d->n; i++) free(s->ids[i]);
        free(s->ids);
    }
    free(d->labels);
    free(s);
    d->ctx = NULL;
    d->labels = NULL;
}

int tr_dense_dataset_init(tr_dataset *d, const char *name, const char *source, int n, int ndim,
                          const int *sample_shape, float *X, int *y, char **ids,
                          const tr_dense_opts *opts)
{
    memset(d, 0, sizeof *d);
    NCMI_CHECK(ndim >= 1 && ndim <= 3 && n >= 0, "dense dataset: ndim %d, n %d", ndim, n);
    dense *s = calloc(1, sizeof *s);
    if (!s) return ncmi_error_set("out of memory");
    s->ndim = ndim;
    s->numel = 1;
    for (int i = 0; i < 3; i++) s->shape[i] = i < ndim ? sample_shape[i] : 1;
    for (int i = 0; i < ndim; i++) s->numel *= (size_t)sample_shape[i];
    s->X = X;
    s->ids = ids;
    if (opts) s->opts = *opts;
    if (ndim == 3) {
        s->c = sample_shape[0];
        s->h = sample_shape[1];
        s->w = sample_shape[2];
    } else if (s->opts.img_h > 0 && s->opts.img_w > 0 &&
               s->numel % ((size_t)s->opts.img_h * s->opts.img_w) == 0) {
        s->h = s->opts.img_h;
        s->w = s->opts.img_w;
        s->c = (int)(s->numel / ((size_t)s->h * s->w));
    }
    if (s->opts.shift > 0 && s->h == 0) {
        free(s);
        return ncmi_error_set("dataset %s: augmentation by shifting needs image samples", name);
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->source, sizeof d->source, "%s", source ? source : "");
    d->n = n;
    d->labels = y;
    d->bags = 0;
    d->sample_id = dense_id;
    d->inputs = dense_inputs;
    d->free = dense_free;
    d->ctx = s;
    return 0;
}

/* ---- the MLP ---- */

typedef struct mlp {
    nn_params P;
    int n_layers;
    nn_linear_m *layers;
} mlp;

static nn_tensor *mlp_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in,
                              int training, nn_rng *rng, nn_tensor **aux)
{
    (void)training;
    (void)rng;
    (void)aux;
    NCMI_CHECK(n_in == 1, "mlp: one input tensor expected, got %d", n_in);
    mlp *s = m->ctx;
    nn_tensor *h = in[0];
    if (h->ndim != 2) {
        int shape[2] = {h->shape[0], -1};
        h = nn_reshape(g, h, 2, shape);
    }
    for (int i = 0; i < s->n_layers; i++) h = nn_relu(g, nn_linear_m_forward(g, &s->layers[i], h));
    return h; /* [n, D] */
}

static void mlp_free(tr_model *m)
{
    mlp *s = m->ctx;
    if (!s) return;
    nn_params_free(&s->P);
    free(s->layers);
    free(s);
    m->ctx = NULL;
    m->params = NULL;
}

int tr_mlp_init(tr_model *m, int in, const int *hidden, int n_hidden, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    mlp *s = calloc(1, sizeof *s);
    if (!s) return ncmi_error_set("out of memory");
    nn_params_init(&s->P);
    s->n_layers = n_hidden;
    s->layers = calloc((size_t)(n_hidden > 0 ? n_hidden : 1), sizeof *s->layers);
    if (!s->layers) {
        free(s);
        return ncmi_error_set("out of memory");
    }
    int len = snprintf(m->desc, sizeof m->desc, "mlp %d", in);
    for (int i = 0; i < n_hidden; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        nn_linear_m_init(&s->layers[i], &s->P, prefix, in, hidden[i], 1, rng);
        if (len < (int)sizeof m->desc)
            len += snprintf(m->desc + len, sizeof m->desc - (size_t)len, "-%d", hidden[i]);
        in = hidden[i];
    }
    m->params = &s->P;
    m->dim = in;
    snprintf(m->classifier, sizeof m->classifier, "layers.%d", n_hidden);
    m->forward = mlp_forward;
    m->free = mlp_free;
    m->ctx = s;
    m->gpu_ok = 1;
    return 0;
}

void tr_model_free(tr_model *m)
{
    if (m && m->free) m->free(m);
    if (m) memset(m, 0, sizeof *m);
}
