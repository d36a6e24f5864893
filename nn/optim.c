/* Optimizers, gradient clipping, checkpoints, LR schedules (torch.optim
 * semantics; element-wise updates in float32 in torch's operation order,
 * scalar factors in double as torch's Python code computes them). GPU
 * parameters go to the kernels of nn/cuda/optim.cu with the same factors. */
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_optim.h"
#include "error.h"
#include "ops_internal.h"

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    NCMI_CHECK(p != NULL, "out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

static void optim_common_init(nn_optim *o, nn_params *P, nn_optim_kind kind, float lr)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->params = P;
    o->lr = lr;
    /* one slot per parameter of P: build the model before the optimizer */
    o->state1 = xcalloc((size_t)P->n, sizeof(float *));
    o->state2 = xcalloc((size_t)P->n, sizeof(float *));
    o->state_dev = xcalloc((size_t)P->n, sizeof(nn_device)); /* all NN_DEVICE_CPU (0) */
}

/* ---- state placement: state lives on its parameter's device ---- */

static float *state_alloc(nn_device dev, size_t n)
{
    if (dev == NN_DEVICE_CPU) return xcalloc(n, sizeof(float));
    float *p = nn_cuda_alloc(n * sizeof(float));
    nn_cuda_memset0(p, n * sizeof(float));
    return p;
}

static void state_free(nn_device dev, float *p)
{
    if (dev == NN_DEVICE_CPU)
        free(p);
    else
        nn_cuda_free(p);
}

/* Free both state tensors of parameter i. */
static void state_drop(nn_optim *o, int i)
{
    state_free(o->state_dev[i], o->state1[i]);
    state_free(o->state_dev[i], o->state2[i]);
    o->state1[i] = o->state2[i] = NULL;
    o->state_dev[i] = NN_DEVICE_CPU;
}

/* Move parameter i's state to the parameter's device (after nn_params_to_device). */
static void state_follow(nn_optim *o, int i)
{
    const nn_tensor *t = o->params->t[i];
    const nn_device from = o->state_dev[i], to = t->device;
    if (from == to) return;
    const size_t n = t->numel, b = n * sizeof(float);
    for (int w = 0; w < 2; w++) {
        float **slot = w == 0 ? &o->state1[i] : &o->state2[i];
        if (!*slot) continue;
        float *d = state_alloc(to, n);
        if (b) {
            if (to == NN_DEVICE_CPU)
                nn_cuda_d2h(d, *slot, b);
            else if (from == NN_DEVICE_CPU)
                nn_cuda_h2d(d, *slot, b);
            else
                nn_cuda_d2d(d, *slot, b);
        }
        state_free(from, *slot);
        *slot = d;
    }
    o->state_dev[i] = to;
}

void nn_optim_sgd_init(nn_optim *o, nn_params *P, float lr, float momentum, float weight_decay,
                       int nesterov)
{
    NCMI_CHECK(lr >= 0 && momentum >= 0 && weight_decay >= 0, "SGD: negative hyper-parameter");
    NCMI_CHECK(!nesterov || momentum > 0, "SGD: nesterov momentum requires a momentum");
    optim_common_init(o, P, NN_OPTIM_SGD, lr);
    o->momentum = momentum;
    o->dampening = 0.f;
    o->weight_decay = weight_decay;
    o->nesterov = nesterov != 0;
}

static void adam_common_init(nn_optim *o, nn_params *P, nn_optim_kind kind, float lr, float beta1,
                             float beta2, float eps, float weight_decay)
{
    const char *name = kind == NN_OPTIM_ADAM ? "Adam" : "AdamW";
    NCMI_CHECK(lr >= 0 && eps >= 0 && weight_decay >= 0, "%s: negative hyper-parameter", name);
    NCMI_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "%s: betas %g %g not in [0,1)",
               name, beta1, beta2);
    optim_common_init(o, P, kind, lr);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
}

void nn_optim_adamw_init(nn_optim *o, nn_params *P, float lr, float beta1, float beta2, float eps,
                         float weight_decay)
{
    adam_common_init(o, P, NN_OPTIM_ADAMW, lr, beta1, beta2, eps, weight_decay);
}

void nn_optim_adam_init(nn_optim *o, nn_params *P, float lr, float beta1, float beta2, float eps,
                        float weight_decay)
{
    adam_common_init(o, P, NN_OPTIM_ADAM, lr, beta1, beta2, eps, weight_decay);
}

void nn_optim_free(nn_optim *o)
{
    if (!o) return;
    if (o->params && o->state1 && o->state2 && o->state_dev)
        for (int i = 0; i < o->params->n; i++) state_drop(o, i);
    free(o->state1);
    free(o->state2);
    free(o->state_dev);
    memset(o, 0, sizeof *o);
}

/* ---- CPU element-wise updates: contiguous ranges per OpenMP thread, each
   range one call of a vectorised function (NN_SIMD_CLONES: AVX-512 / AVX2 /
   baseline chosen at load; the same IEEE operations per element as the
   scalar loop, and -std=c11 contracts nothing, so every width gives the same
   bits) ---- */

/* fn(lo, hi, ctx) over [0, n) split in one range per thread (a multiple of 64
   elements each), on one thread below 65,537 elements. */
static void par_ranges(size_t n, void (*fn)(size_t lo, size_t hi, const void *ctx), const void *ctx)
{
#pragma omp parallel if (n > 65536)
    {
        const size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        const size_t chunk = ((n + nt - 1) / nt + 63) & ~(size_t)63;
        const size_t lo = chunk * id, hi = lo + chunk < n ? lo + chunk : n;
        if (lo < hi) fn(lo, hi, ctx);
    }
}

typedef struct {
    float *p;
    const float *g;
    float *buf; /* momentum buffer; NULL without momentum */
    float wd, mom, damp1, lr;
    int nesterov, first;
} sgd_args;

/* One element of torch's SGD step: d = g + wd*p; with momentum b = d on the
   first step, else b = mom*b + (1 - dampening)*d, d = nesterov ? d + mom*b : b;
   p -= lr*d. */
static inline void sgd_elem(float *restrict p, const float *restrict g, float *restrict buf, size_t k,
                            const sgd_args *a, int with_wd, int with_mom)
{
    float d = with_wd ? g[k] + a->wd * p[k] : g[k];
    if (with_mom) {
        float b = a->first ? d : buf[k] * a->mom + a->damp1 * d;
        buf[k] = b;
        d = a->nesterov ? d + a->mom * b : b;
    }
    p[k] = p[k] + -a->lr * d;
}

NN_SIMD_CLONES static void sgd_range(size_t lo, size_t hi, const void *ctx)
{
    const sgd_args A = *(const sgd_args *)ctx, *a = &A; /* a local copy: no store aliases it */
    float *restrict p = a->p, *restrict buf = a->buf;
    const float *restrict g = a->g;
    const int wd = a->wd != 0.f;
    if (!buf) {
        if (wd)
            for (size_t k = lo; k < hi; k++) sgd_elem(p, g, buf, k, a, 1, 0);
        else
            for (size_t k = lo; k < hi; k++) sgd_elem(p, g, buf, k, a, 0, 0);
    } else if (wd) {
        for (size_t k = lo; k < hi; k++) sgd_elem(p, g, buf, k, a, 1, 1);
    } else {
        for (size_t k = lo; k < hi; k++) sgd_elem(p, g, buf, k, a, 0, 1);
    }
}

/* torch.optim.SGD (_single_tensor_sgd), dampening as set (0 by default). */
static void sgd_param(nn_optim *o, int i)
{
    nn_tensor *t = o->params->t[i];
    float *p = t->data;
    const float *g = t->grad;
    size_t n = t->numel;
    const float wd = o->weight_decay, mom = o->momentum, lr = o->lr;
    const float damp1 = 1.f - o->dampening;
    if (NN_ON_GPU(t)) {
        /* the buffer needs no zeroing: the first step writes it whole */
        const int first = mom != 0.f && o->state1[i] == NULL;
        if (first) {
            o->state1[i] = nn_cuda_alloc((n ? n : 1) * sizeof(float));
            o->state_dev[i] = NN_DEVICE_CUDA;
        }
        nn_cuda_sgd_step(p, g, mom != 0.f ? o->state1[i] : NULL, n, lr, mom, damp1, wd, o->nesterov,
                         first);
        return;
    }
    int first = mom != 0.f && o->state1[i] == NULL;
    if (first) o->state1[i] = xcalloc(n, sizeof(float));
    const sgd_args a = {p, g, mom != 0.f ? o->state1[i] : NULL, wd, mom, damp1, lr, o->nesterov, first};
    par_ranges(n, sgd_range, &a);
}

/* torch.optim.AdamW (_single_tensor_adamw, amsgrad=False); with kind
 * NN_OPTIM_ADAM torch.optim.Adam (_single_tensor_adam): the weight decay is
 * L2 added to the gradient (d = g + wd*p) instead of the decoupled p *= 1 - lr*wd. */
typedef struct {
    float *p, *m, *v;
    const float *g;
    float decay, l2, b1, c1, b2, c2, step_size, bc2_sqrt, eps;
} adamw_args;

/* One element of the update, in torch's operation order (Adam's L2 added to
   g when with_l2; AdamW's decoupled decay is a->decay). */
static inline void adamw_elem(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                              size_t k, const adamw_args *a, int with_l2)
{
    const float gk = with_l2 ? g[k] + a->l2 * p[k] : g[k];
    float pk = p[k] * a->decay;
    float mk = m[k] * a->b1 + a->c1 * gk;
    float vk = v[k] * a->b2 + a->c2 * gk * gk;
    m[k] = mk;
    v[k] = vk;
    float denom = sqrtf(vk) / a->bc2_sqrt + a->eps;
    p[k] = pk + -a->step_size * (mk / denom);
}

NN_SIMD_CLONES static void adamw_range(size_t lo, size_t hi, const void *ctx)
{
    const adamw_args A = *(const adamw_args *)ctx, *a = &A; /* a local copy: no store aliases it */
    float *restrict p = a->p, *restrict m = a->m, *restrict v = a->v;
    const float *restrict g = a->g;
    if (a->l2 != 0.f)
        for (size_t k = lo; k < hi; k++) adamw_elem(p, g, m, v, k, a, 1);
    else
        for (size_t k = lo; k < hi; k++) adamw_elem(p, g, m, v, k, a, 0);
}

static void adamw_param(nn_optim *o, int i)
{
    nn_tensor *t = o->params->t[i];
    float *p = t->data;
    const float *g = t->grad;
    size_t n = t->numel;
    if (!o->state1[i]) {
        o->state1[i] = state_alloc(t->device, n);
        o->state2[i] = state_alloc(t->device, n);
        o->state_dev[i] = t->device;
    }
    float *m = o->state1[i], *v = o->state2[i];
    const double lr = o->lr, b1 = o->beta1, b2 = o->beta2;
    const double step = (double)o->step; /* already incremented */
    const int coupled = o->kind == NN_OPTIM_ADAM;
    const float decay = coupled ? 1.f : (float)(1.0 - lr * (double)o->weight_decay);
    const float l2 = coupled ? o->weight_decay : 0.f;
    const double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float fb1 = o->beta1, fb2 = o->beta2, c1 = (float)(1.0 - b1), c2 = (float)(1.0 - b2);
    const float eps = o->eps;
    if (NN_ON_GPU(t)) {
        nn_cuda_adamw_step(p, g, m, v, n, decay, l2, fb1, c1, fb2, c2, step_size, bc2_sqrt, eps);
        return;
    }
    const adamw_args a = {p, m, v, g, decay, l2, fb1, c1, fb2, c2, step_size, bc2_sqrt, eps};
    par_ranges(n, adamw_range, &a);
}

void nn_optim_step(nn_optim *o)
{
    nn_params *P = o->params;
    o->step++;
    for (int i = 0; i < P->n; i++) {
        if (P->kind[i] != NN_PARAM_WEIGHT || !P->t[i]->grad) continue;
        state_follow(o, i);
        if (o->kind == NN_OPTIM_SGD)
            sgd_param(o, i);
        else
            adamw_param(o, i);
    }
}

/* ---- gradient clipping ---- */

/* The first trainable tensor of P with a gradient (NULL: none); NCMI_CHECK
 * that all those gradients are on its device. */
static const nn_tensor *first_grad(const nn_params *P)
{
    const nn_tensor *f = NULL;
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        if (P->kind[i] != NN_PARAM_WEIGHT || !t->grad) continue;
        if (!f) f = t;
        NCMI_CHECK(t->device == f->device, "clip_grad_norm: gradients on the CPU and on the GPU (%s); "
                   "move the whole parameter set with nn_params_to_device", t->name);
    }
    return f;
}

/* GPU clipping; out: device {norm, coefficient}. */
static void clip_gpu(nn_params *P, float max_norm, double *out)
{
    float **gr = xcalloc((size_t)P->n, sizeof *gr);
    size_t *nel = xcalloc((size_t)P->n, sizeof *nel);
    int k = 0;
    for (int i = 0; i < P->n; i++) {
        nn_tensor *t = P->t[i];
        if (P->kind[i] != NN_PARAM_WEIGHT || !t->grad) continue;
        gr[k] = t->grad;
        nel[k] = t->numel;
        k++;
    }
    nn_cuda_clip_grad_norm(gr, nel, k, max_norm, out);
    free(gr);
    free(nel);
}

void nn_clip_grad_norm_async(nn_params *P, float max_norm)
{
    const nn_tensor *f = first_grad(P);
    if (!(f && NN_ON_GPU(f))) {
        (void)nn_clip_grad_norm(P, max_norm);
        return;
    }
    double *out = nn_cuda_alloc(2 * sizeof(double));
    clip_gpu(P, max_norm, out);
    nn_cuda_free(out); /* stream-ordered: safe once the kernels are queued */
}

float nn_clip_grad_norm(nn_params *P, float max_norm)
{
    const nn_tensor *f = first_grad(P);
    if (f && NN_ON_GPU(f)) {
        double *out = nn_cuda_alloc(2 * sizeof(double)), norm;
        clip_gpu(P, max_norm, out);
        nn_cuda_d2h(&norm, out, sizeof norm); /* the one host synchronisation */
        nn_cuda_free(out);
        return (float)norm;
    }
    double ss = 0.0;
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        if (P->kind[i] != NN_PARAM_WEIGHT || !t->grad) continue;
        /* fixed chunks summed in order: the same result for any thread count */
        enum { CHUNK = 65536 };
        size_t nch = (t->numel + CHUNK - 1) / CHUNK;
        double part_small[16], *part = nch <= 16 ? part_small : xcalloc(nch, sizeof(double));
#pragma omp parallel for if (nch > 1)
        for (size_t c = 0; c < nch; c++) {
            size_t k1 = (c + 1) * CHUNK < t->numel ? (c + 1) * CHUNK : t->numel;
            double s = 0.0;
            for (size_t k = c * CHUNK; k < k1; k++) s += (double)t->grad[k] * t->grad[k];
            part[c] = s;
        }
        for (size_t c = 0; c < nch; c++) ss += part[c];
        if (part != part_small) free(part);
    }
    double norm = sqrt(ss);
    double coef = (double)max_norm / (norm + 1e-6);
    if (!(coef >= 1.0)) { /* also scales by NaN when the norm is NaN, as torch does */
        float c = (float)coef;
        for (int i = 0; i < P->n; i++) {
            nn_tensor *t = P->t[i];
            if (P->kind[i] != NN_PARAM_WEIGHT || !t->grad) continue;
            float *gr = t->grad;
#pragma omp parallel for if (t->numel > 65536)
            for (size_t k = 0; k < t->numel; k++) gr[k] *= c;
        }
    }
    return (float)norm;
}

/* ---- optimizer state as named tensors ---- */

static const char *state_suffix(nn_optim_kind kind, int which)
{
    if (kind == NN_OPTIM_SGD) return which == 0 ? "momentum_buffer" : NULL;
    return which == 0 ? "exp_avg" : "exp_avg_sq";
}

static const char *state_prefix(const nn_optim *o) { return o->prefix ? o->prefix : "optim."; }

static char *state_name(const nn_optim *o, const char *param, const char *suffix)
{
    char *s = NULL;
    NCMI_CHECK(asprintf(&s, "%s%s.%s", state_prefix(o), param, suffix) >= 0, "out of memory");
    return s;
}

int nn_optim_state_tensors(const nn_optim *o, nn_st_tensor **ts)
{
    const nn_params *P = o->params;
    int n = 1;
    size_t ndev = 0; /* floats of state on the GPU */
    for (int i = 0; i < P->n; i++) {
        for (int w = 0; w < 2; w++) {
            if (!(w == 0 ? o->state1[i] : o->state2[i])) continue;
            n++;
            if (o->state_dev[i] != NN_DEVICE_CPU) ndev += P->t[i]->numel;
        }
    }
    /* the array, then room for the int64 step value it points at, then host
     * copies of the state on the GPU */
    nn_st_tensor *a = xcalloc(1, (size_t)n * sizeof *a + sizeof(int64_t) + ndev * sizeof(float));
    int64_t *stepv = (int64_t *)(void *)((char *)a + (size_t)n * sizeof *a);
    *stepv = o->step;
    float *hcopy = (float *)(void *)(stepv + 1);
    int k = 0;
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        for (int w = 0; w < 2; w++) {
            float *s = w == 0 ? o->state1[i] : o->state2[i];
            if (!s) continue;
            const char *suf = state_suffix(o->kind, w);
            NCMI_CHECK(suf != NULL, "SGD with a second state buffer");
            a[k].name = state_name(o, t->name, suf);
            a[k].dtype = NN_ST_F32;
            a[k].ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++) a[k].shape[d] = t->shape[d];
            a[k].data = s;
            if (o->state_dev[i] != NN_DEVICE_CPU) {
                nn_cuda_d2h(hcopy, s, t->numel * sizeof(float));
                a[k].data = hcopy;
                hcopy += t->numel;
            }
            k++;
        }
    }
    char *sn = NULL;
    NCMI_CHECK(asprintf(&sn, "%sstep", state_prefix(o)) >= 0, "out of memory");
    a[k].name = sn;
    a[k].dtype = NN_ST_I64;
    a[k].ndim = 0;
    a[k].data = stepv;
    k++;
    *ts = a;
    return k;
}

void nn_optim_state_tensors_free(nn_st_tensor *ts, int n)
{
    if (!ts) return;
    for (int i = 0; i < n; i++) {
        free((char *)ts[i].name);
        ts[i].name = NULL;
    }
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Validate the optimizer state in st against o; on success *step is the
 * stored step. Modifies nothing. */
static int optim_state_validate(const nn_optim *o, const nn_safetensors *st, int64_t *step)
{
    const nn_params *P = o->params;
    const char *kname = o->kind == NN_OPTIM_SGD ? "SGD" : o->kind == NN_OPTIM_ADAM ? "Adam" : "AdamW";
    const char *pre = state_prefix(o);
    char stepname[NN_NAME_MAX + 16];
    snprintf(stepname, sizeof stepname, "%sstep", pre);
    if (!nn_st_find(st, stepname))
        return ncmi_error_set("%s: no optimizer state (tensor '%s' missing)", st->path, stepname);
    const nn_st_entry *se = nn_st_find(st, stepname);
    if (se->numel != 1 || (se->dtype != NN_ST_I64 && se->dtype != NN_ST_I32))
        return ncmi_error_set("%s: tensor '%s': one I64 value expected", st->path, stepname);
    int64_t sv;
    if (nn_st_read_i64(st, stepname, &sv, 1) != 0) return -1;
    if (sv < 0) return ncmi_error_set("%s: tensor '%s': negative step %lld", st->path, stepname, (long long)sv);
    /* every <prefix>* entry must belong to a trainable parameter with a known suffix */
    for (int e = 0; e < st->n; e++) {
        const nn_st_entry *en = &st->entries[e];
        if (!has_prefix(en->name, pre) || strcmp(en->name, stepname) == 0) continue;
        const char *rest = en->name + strlen(pre);
        const char *dot = strrchr(rest, '.');
        if (!dot) return ncmi_error_set("%s: unexpected optimizer tensor '%s'", st->path, en->name);
        const char *suf = dot + 1;
        int which = -1;
        for (int w = 0; w < 2; w++) {
            const char *s = state_suffix(o->kind, w);
            if (s && strcmp(s, suf) == 0) which = w;
        }
        if (which < 0) {
            int other = strcmp(suf, "momentum_buffer") == 0 || strcmp(suf, "exp_avg") == 0 ||
                        strcmp(suf, "exp_avg_sq") == 0;
            return other ? ncmi_error_set("%s: optimizer tensor '%s' does not belong to %s "
                                          "(state of a different optimizer)", st->path, en->name, kname)
                         : ncmi_error_set("%s: unexpected optimizer tensor '%s'", st->path, en->name);
        }
        char pname[NN_NAME_MAX];
        size_t plen = (size_t)(dot - rest);
        if (plen >= sizeof pname)
            return ncmi_error_set("%s: unexpected optimizer tensor '%s'", st->path, en->name);
        memcpy(pname, rest, plen);
        pname[plen] = 0;
        int pi = -1;
        for (int i = 0; i < P->n; i++)
            if (strcmp(P->t[i]->name, pname) == 0) pi = i;
        if (pi < 0 || P->kind[pi] != NN_PARAM_WEIGHT)
            return ncmi_error_set("%s: optimizer tensor '%s' for a parameter the model %s", st->path,
                                  en->name, pi < 0 ? "does not have" : "does not train");
        const nn_tensor *t = P->t[pi];
        if (nn_st_check_shape(st, en, t->ndim, t->shape) != 0) return -1;
        if (en->dtype != NN_ST_F32 && en->dtype != NN_ST_F16 && en->dtype != NN_ST_BF16)
            return ncmi_error_set("%s: tensor '%s': dtype %s, a float tensor expected", st->path,
                                  en->name, nn_st_dtype_name(en->dtype));
    }
    /* Adam/AdamW: the two moments come together */
    if (o->kind == NN_OPTIM_ADAMW || o->kind == NN_OPTIM_ADAM)
        for (int i = 0; i < P->n; i++) {
            char *a = state_name(o, P->t[i]->name, "exp_avg"), *b = state_name(o, P->t[i]->name, "exp_avg_sq");
            int ha = nn_st_find(st, a) != NULL, hb = nn_st_find(st, b) != NULL;
            int bad = ha != hb;
            if (bad) ncmi_error_set("%s: tensor '%s' missing (its pair is present)", st->path, ha ? b : a);
            free(a);
            free(b);
            if (bad) return -1;
        }
    *step = sv;
    return 0;
}

/* Copy the validated state (cannot fail), onto each parameter's device. */
static void optim_state_copy(nn_optim *o, const nn_safetensors *st, int64_t step)
{
    const nn_params *P = o->params;
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        /* state on another device is replaced or dropped below: free it now */
        if (o->state_dev[i] != t->device) state_drop(o, i);
        for (int w = 0; w < 2; w++) {
            float **slot = w == 0 ? &o->state1[i] : &o->state2[i];
            const char *suf = state_suffix(o->kind, w);
            char *name = suf ? state_name(o, t->name, suf) : NULL;
            if (name && nn_st_find(st, name)) {
                if (!*slot) *slot = state_alloc(t->device, t->numel);
                o->state_dev[i] = t->device;
                float *h = t->device == NN_DEVICE_CPU ? *slot : xcalloc(t->numel, sizeof(float));
                int rc = nn_st_read_f32(st, name, h, t->numel, t->ndim, t->shape);
                NCMI_CHECK(rc == 0, "reading validated optimizer state failed: %s", ncmi_error());
                if (h != *slot) {
                    nn_cuda_h2d(*slot, h, t->numel * sizeof(float));
                    free(h);
                }
            } else {
                /* absent from the file: as torch, no state until the next step */
                state_free(o->state_dev[i], *slot);
                *slot = NULL;
            }
            free(name);
        }
        if (!o->state1[i] && !o->state2[i]) o->state_dev[i] = NN_DEVICE_CPU;
    }
    o->step = (long)step;
}

int nn_optim_state_load(nn_optim *o, const nn_safetensors *st)
{
    int64_t step;
    if (optim_state_validate(o, st, &step) != 0) return -1;
    optim_state_copy(o, st, step);
    return 0;
}

/* ---- checkpoints ---- */

int nn_checkpoint_save(const char *path, const nn_params *P, const nn_optim *o,
                       const char *const *meta_keys, const char *const *meta_vals, int n_meta)
{
    nn_st_tensor *os = NULL;
    int no = o ? nn_optim_state_tensors(o, &os) : 0;
    int n = P->n + no;
    nn_st_tensor *ts = xcalloc((size_t)n, sizeof *ts);
    void **hold = xcalloc((size_t)P->n, sizeof *hold);
    nn_params_st_tensors(P, ts, hold);
    for (int i = 0; i < no; i++) ts[P->n + i] = os[i];
    int rc = nn_st_write(path, ts, n, meta_keys, meta_vals, n_meta);
    nn_params_st_release(P, hold);
    free(hold);
    free(ts);
    nn_optim_state_tensors_free(os, no);
    free(os);
    return rc;
}

int nn_checkpoint_load(const char *path, nn_params *P, nn_optim *o)
{
    NCMI_CHECK(!o || o->params == P, "checkpoint load: the optimizer steps another parameter set");
    nn_safetensors st;
    if (nn_st_open(&st, path) != 0) return -1;
    int64_t step = 0;
    int rc = -1;
    /* validate the optimizer state first; nn_params_load_st validates the
     * weights before copying; then copying the state cannot fail */
    if (o && optim_state_validate(o, &st, &step) != 0) goto out;
    if (nn_params_load_st(P, &st, 1) != 0) goto out;
    if (o) optim_state_copy(o, &st, step);
    rc = 0;
out:
    nn_st_close(&st);
    return rc;
}

/* ---- LR schedules ---- */

float nn_lr_at(const nn_lr_schedule *s, double t)
{
    double base = s->base_lr;
    if (s->warmup > 0) {
        if (t < s->warmup) return (float)(base * (t > 0 ? t : 0) / s->warmup);
        t -= s->warmup;
    }
    if (t < 0) t = 0;
    switch (s->kind) {
    case NN_LR_CONSTANT: return (float)base;
    case NN_LR_MULTISTEP: {
        /* MultiStepLR: gamma^(number of milestones <= t) */
        int k = 0;
        for (int i = 0; i < s->n_milestones && i < 16; i++)
            if (s->milestones[i] <= t) k++;
        return (float)(base * pow((double)s->gamma, k));
    }
    case NN_LR_COSINE: {
        /* CosineAnnealingLR closed form; stays at min_lr after total */
        if (s->total <= 0 || t >= s->total) return s->min_lr;
        double mn = s->min_lr;
        return (float)(mn + (base - mn) * (1.0 + cos(M_PI * t / s->total)) / 2.0);
    }
    }
    return (float)base;
}
