#include "tensor.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "error.h"

struct nn_graph {
    nn_tensor **nodes;
    size_t n, cap;
    int no_grad;
    int keep_grads;
    int free_dead;
    nn_precision precision;
    nn_grad_ready_fn grad_hook;
    void *grad_hook_ctx;
};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    NCMI_CHECK(p != NULL, "out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

/* glibc hands blocks above its mmap threshold (128 KiB at first, raised
 * only by frees, at most 32 MiB) to mmap, and trims a free heap top above
 * twice that back to the OS: a training step that frees its graph and makes
 * the same buffers again then page-faults and zeroes every page of them at
 * every step (TransMIL at N = 500: a third of the step in the kernel's page
 * fault handler, perf). The largest threshold glibc allows (32 MiB) and no
 * trimming keep those buffers in the heap for the next step (the peak RSS
 * stays the same for TransMIL and grows 14 % for ABMIL at N = 16,000 by heap
 * fragmentation, docs/training.md). Left alone when the
 * user tunes malloc (GLIBC_TUNABLES, MALLOC_*_ variables) or sets
 * NCMI_MALLOC_TUNE=0. */
static void malloc_tune(void)
{
    const char *t = getenv("GLIBC_TUNABLES"), *own = getenv("NCMI_MALLOC_TUNE");
    if ((own && !strcmp(own, "0")) || (t && strstr(t, "malloc")) || getenv("MALLOC_MMAP_THRESHOLD_") ||
        getenv("MALLOC_TRIM_THRESHOLD_"))
        return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

/* Zeroed float buffer, 64-byte aligned, whose pages are written now.
 * calloc hands out untouched zero pages for large sizes: an op that then
 * reads and adds into them (backward accumulation) faults every page twice,
 * which cost ~60 ms on a 16 MB gradient here. posix_memalign + memset is not
 * folded back into calloc by the compiler. */
static float *alloc_floats_zeroed(size_t n)
{
    static pthread_once_t tuned = PTHREAD_ONCE_INIT;
    pthread_once(&tuned, malloc_tune);
    void *p = NULL;
    size_t bytes = (n ? n : 1) * sizeof(float);
    NCMI_CHECK(posix_memalign(&p, 64, bytes) == 0 && p != NULL,
               "out of memory (%zu floats)", n);
    if (bytes >= ((size_t)4 << 20)) {
        /* large buffers: the page faults of the first touch dominate; fault
         * them on every OpenMP thread (MIL bags: [N, 512] per op) */
        const size_t chunk = (size_t)1 << 20, nch = (bytes + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
        for (size_t c = 0; c < nch; c++) {
            const size_t b0 = c * chunk, b1 = b0 + chunk < bytes ? b0 + chunk : bytes;
            memset((char *)p + b0, 0, b1 - b0);
        }
    } else {
        memset(p, 0, bytes);
    }
    return p;
}

nn_graph *nn_graph_new(void) { return xcalloc(1, sizeof(nn_graph)); }

static float *alloc_on(nn_device dev, size_t n)
{
    if (dev == NN_DEVICE_CPU) return alloc_floats_zeroed(n);
    float *p = nn_cuda_alloc(n * sizeof(float));
    nn_cuda_memset0(p, n * sizeof(float));
    return p;
}

static void free_on(nn_device dev, void *p)
{
    if (dev == NN_DEVICE_CPU)
        free(p);
    else
        nn_cuda_free(p);
}

static void tensor_release(nn_tensor *t)
{
    if (t->owns_data) free_on(t->device, t->data);
    free_on(t->device, t->grad);
    free_on(t->aux_cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU, t->aux);
    free_on(t->aux_cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU, t->aux2);
    free(t);
}

void nn_graph_reset(nn_graph *g)
{
    if (!g) return;
    for (size_t i = g->n; i-- > 0;) tensor_release(g->nodes[i]);
    g->n = 0;
}

void nn_graph_free(nn_graph *g)
{
    if (!g) return;
    nn_graph_reset(g);
    free(g->nodes);
    free(g);
}

int nn_graph_set_no_grad(nn_graph *g, int no_grad)
{
    int old = g->no_grad;
    g->no_grad = no_grad != 0;
    return old;
}

int nn_graph_no_grad(const nn_graph *g) { return g->no_grad; }
void nn_graph_set_precision(nn_graph *g, nn_precision p) { g->precision = p; }
nn_precision nn_graph_precision(const nn_graph *g) { return g->precision; }
void nn_graph_set_keep_grads(nn_graph *g, int keep) { g->keep_grads = keep != 0; }
void nn_graph_set_free_dead(nn_graph *g, int on) { g->free_dead = on != 0; }

void nn_tensor_keep(nn_tensor *t)
{
    for (; t; t = t->owns_data ? NULL : t->src[0]) t->keep = 1;
}

void nn_release(nn_graph *g, nn_tensor *t)
{
    if (!g || !t || t->graph != g || t->keep || !t->owns_data || !t->data) return;
    if (t->backward && (t->bwd_reads & NN_BWD_OUT)) return;
    size_t i = g->n;
    while (i > 0 && g->nodes[i - 1] != t) i--;
    if (i == 0) return;
    for (size_t j = i; j < g->n; j++) {
        const nn_tensor *n = g->nodes[j];
        for (int k = 0; k < n->nsrc; k++) {
            if (n->src[k] != t) continue;
            if (!n->owns_data) return; /* a view of t */
            if (n->backward && (n->bwd_reads & NN_BWD_SRC(k))) return;
        }
    }
    free_on(t->device, t->data);
    t->data = NULL;
}

/* x's data is read after this point: mark it and, for a view, its owner. */
static void mark_need(nn_tensor *x)
{
    for (; x; x = x->owns_data ? NULL : x->src[0]) x->need = 1;
}

/* free_dead, before the walk from node idx: free the data of nodes 0..idx
 * (not the loss, not kept) that no backward reads. */
static void free_unread(nn_graph *g, size_t idx, const nn_tensor *loss)
{
    for (size_t i = 0; i <= idx; i++) g->nodes[i]->need = 0;
    for (size_t i = 0; i <= idx; i++) {
        nn_tensor *n = g->nodes[i];
        if (!n->backward) continue;
        if (n->bwd_reads & NN_BWD_OUT) mark_need(n);
        for (int k = 0; k < n->nsrc; k++)
            if (n->bwd_reads & NN_BWD_SRC(k)) mark_need(n->src[k]);
    }
    for (size_t i = 0; i <= idx; i++) {
        nn_tensor *n = g->nodes[i];
        if (n->need || n->keep || n == loss || !n->owns_data || !n->data) continue;
        free_on(n->device, n->data);
        n->data = NULL;
    }
}

/* A node the backward walk has passed: its data and saved buffers are dead
 * (free_dead). */
static void release_dead(nn_tensor *n)
{
    if (n->keep) return;
    if (n->owns_data && n->data) {
        free_on(n->device, n->data);
        n->data = NULL;
    }
    free_on(n->aux_cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU, n->aux);
    free_on(n->aux_cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU, n->aux2);
    n->aux = n->aux2 = NULL;
}

void nn_graph_set_grad_hook(nn_graph *g, nn_grad_ready_fn fn, void *ctx)
{
    g->grad_hook = fn;
    g->grad_hook_ctx = fn ? ctx : NULL;
}
size_t nn_graph_size(const nn_graph *g) { return g->n; }

void nn_graph_truncate(nn_graph *g, size_t mark, nn_tensor *keep)
{
    NCMI_CHECK(g->no_grad, "nn_graph_truncate: the graph records gradients (no_grad only)");
    NCMI_CHECK(mark <= g->n, "nn_graph_truncate: mark %zu beyond the graph's %zu nodes", mark, g->n);
    int found = keep == NULL;
    for (size_t i = mark; i < g->n && !found; i++) found = g->nodes[i] == keep;
    NCMI_CHECK(found, "nn_graph_truncate: the tensor to keep is not a node after the mark");
    NCMI_CHECK(!keep || keep->owns_data,
               "nn_graph_truncate: the tensor to keep is a view of another tensor");
    for (size_t i = g->n; i-- > mark;)
        if (g->nodes[i] != keep) tensor_release(g->nodes[i]);
    g->n = mark;
    if (keep) {
        for (int i = 0; i < NN_MAX_SRC; i++) keep->src[i] = NULL;
        keep->nsrc = 0;
        g->nodes[g->n++] = keep;
    }
}

static void graph_push(nn_graph *g, nn_tensor *t)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 256;
        nn_tensor **nodes = realloc(g->nodes, cap * sizeof *nodes);
        NCMI_CHECK(nodes != NULL, "out of memory growing the graph");
        g->nodes = nodes;
        g->cap = cap;
    }
    g->nodes[g->n++] = t;
    t->graph = g;
}

size_t nn_shape_numel(int ndim, const int *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

static nn_tensor *tensor_header(nn_graph *g, int ndim, const int *shape)
{
    NCMI_CHECK(ndim >= 0 && ndim <= NN_MAX_DIMS, "tensor with %d dimensions (at most %d)",
               ndim, NN_MAX_DIMS);
    nn_tensor *t = xcalloc(1, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        NCMI_CHECK(shape[i] >= 0, "negative dimension %d", shape[i]);
        t->shape[i] = shape[i];
    }
    t->numel = nn_shape_numel(ndim, shape);
    t->device = NN_DEVICE_CPU;
    if (g) graph_push(g, t);
    return t;
}

nn_tensor *nn_tensor_new_on(nn_graph *g, nn_device dev, int ndim, const int *shape)
{
    nn_tensor *t = tensor_header(g, ndim, shape);
    t->device = dev;
    t->data = alloc_on(dev, t->numel);
    t->owns_data = 1;
    return t;
}

nn_tensor *nn_tensor_new(nn_graph *g, int ndim, const int *shape)
{
    return nn_tensor_new_on(g, NN_DEVICE_CPU, ndim, shape);
}

nn_tensor *nn_tensor_new1(nn_graph *g, int d0) { return nn_tensor_new(g, 1, (int[]){d0}); }
nn_tensor *nn_tensor_new2(nn_graph *g, int d0, int d1)
{
    return nn_tensor_new(g, 2, (int[]){d0, d1});
}
nn_tensor *nn_tensor_new3(nn_graph *g, int d0, int d1, int d2)
{
    return nn_tensor_new(g, 3, (int[]){d0, d1, d2});
}
nn_tensor *nn_tensor_new4(nn_graph *g, int d0, int d1, int d2, int d3)
{
    return nn_tensor_new(g, 4, (int[]){d0, d1, d2, d3});
}

nn_tensor *nn_tensor_from(nn_graph *g, int ndim, const int *shape, const float *data)
{
    nn_tensor *t = nn_tensor_new(g, ndim, shape);
    if (t->numel) memcpy(t->data, data, t->numel * sizeof(float));
    return t;
}

nn_tensor *nn_tensor_clone(const nn_tensor *src, int copy_grad)
{
    nn_tensor *t = nn_tensor_to(src, src->device);
    if (copy_grad && src->grad) {
        nn_tensor_grad(t);
        if (t->device == NN_DEVICE_CPU)
            memcpy(t->grad, src->grad, t->numel * sizeof(float));
        else
            nn_cuda_d2d(t->grad, src->grad, t->numel * sizeof(float));
    }
    return t;
}

/* copy n floats between any two devices */
static void copy_floats(float *dst, nn_device ddev, const float *src, nn_device sdev, size_t n)
{
    size_t b = n * sizeof(float);
    if (!n) return;
    if (ddev == NN_DEVICE_CPU && sdev == NN_DEVICE_CPU)
        memcpy(dst, src, b);
    else if (ddev == NN_DEVICE_CUDA && sdev == NN_DEVICE_CPU)
        nn_cuda_h2d(dst, src, b);
    else if (ddev == NN_DEVICE_CPU)
        nn_cuda_d2h(dst, src, b);
    else
        nn_cuda_d2d(dst, src, b);
}

nn_tensor *nn_tensor_to(const nn_tensor *src, nn_device dev)
{
    nn_tensor *t = tensor_header(NULL, src->ndim, src->shape);
    t->device = dev;
    t->data = dev == NN_DEVICE_CPU ? alloc_floats_zeroed(t->numel)
                                   : nn_cuda_alloc(t->numel * sizeof(float));
    t->owns_data = 1;
    copy_floats(t->data, dev, src->data, src->device, t->numel);
    t->requires_grad = src->requires_grad;
    memcpy(t->name, src->name, sizeof t->name);
    return t;
}

void nn_tensor_move(nn_tensor *t, nn_device dev)
{
    NCMI_CHECK(t->graph == NULL, "nn_tensor_move on a graph-owned tensor (%s)", t->op ? t->op : "input");
    NCMI_CHECK(t->owns_data, "nn_tensor_move on a view");
    if (t->device == dev) return;
    float *d = dev == NN_DEVICE_CPU ? alloc_floats_zeroed(t->numel)
                                    : nn_cuda_alloc(t->numel * sizeof(float));
    copy_floats(d, dev, t->data, t->device, t->numel);
    free_on(t->device, t->data);
    t->data = d;
    if (t->grad) {
        float *gd = dev == NN_DEVICE_CPU ? alloc_floats_zeroed(t->numel)
                                         : nn_cuda_alloc(t->numel * sizeof(float));
        copy_floats(gd, dev, t->grad, t->device, t->numel);
        free_on(t->device, t->grad);
        t->grad = gd;
    }
    t->device = dev;
}

void nn_tensor_to_host(const nn_tensor *t, float *dst)
{
    copy_floats(dst, NN_DEVICE_CPU, t->data, t->device, t->numel);
}

void nn_tensor_grad_to_host(const nn_tensor *t, float *dst)
{
    if (!t->grad)
        memset(dst, 0, t->numel * sizeof(float));
    else
        copy_floats(dst, NN_DEVICE_CPU, t->grad, t->device, t->numel);
}

void nn_tensor_from_host(nn_tensor *t, const float *src)
{
    copy_floats(t->data, t->device, src, NN_DEVICE_CPU, t->numel);
}

float *nn_host_view(const nn_tensor *t)
{
    if (t->device == NN_DEVICE_CPU) return t->data;
    float *p = malloc((t->numel ? t->numel : 1) * sizeof(float));
    NCMI_CHECK(p != NULL, "out of memory (%zu floats)", t->numel);
    nn_tensor_to_host(t, p);
    return p;
}

void nn_host_release(const nn_tensor *t, float *p)
{
    if (t->device != NN_DEVICE_CPU) free(p);
}

void nn_tensor_free(nn_tensor *t)
{
    if (!t) return;
    NCMI_CHECK(t->graph == NULL, "nn_tensor_free on a graph-owned tensor (%s)",
               t->op ? t->op : "input");
    tensor_release(t);
}

float *nn_tensor_grad(nn_tensor *t)
{
    if (!t->grad) t->grad = alloc_on(t->device, t->numel);
    return t->grad;
}

float *nn_tensor_grad_beta(nn_tensor *t, float *beta)
{
    if (t->grad || t->device != NN_DEVICE_CUDA || t->numel == 0) {
        *beta = 1.f;
        return nn_tensor_grad(t);
    }
    t->grad = nn_cuda_alloc(t->numel * sizeof(float)); /* no memset: the caller overwrites */
    *beta = 0.f;
    return t->grad;
}

void nn_tensor_zero_grad(nn_tensor *t)
{
    if (!t->grad) return;
    if (t->device == NN_DEVICE_CPU)
        memset(t->grad, 0, t->numel * sizeof(float));
    else
        nn_cuda_memset0(t->grad, t->numel * sizeof(float));
}

void nn_tensor_fill(nn_tensor *t, float v)
{
    if (t->device == NN_DEVICE_CUDA) {
        nn_cuda_fill(t->data, v, t->numel);
        return;
    }
    for (size_t i = 0; i < t->numel; i++) t->data[i] = v;
}

void nn_tensor_set_name(nn_tensor *t, const char *name)
{
    snprintf(t->name, sizeof t->name, "%s", name);
}

int nn_tensor_same_shape(const nn_tensor *a, const nn_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *nn_shape_str(int ndim, const int *shape, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%d" : "%d", shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

int nn_tensor_dim(const nn_tensor *t, int d)
{
    if (d < 0) d += t->ndim;
    NCMI_CHECK(d >= 0 && d < t->ndim, "dimension %d of a %d-D tensor", d, t->ndim);
    return t->shape[d];
}

/* nn_op_output, or with view_of an output that borrows view_of's data (no
 * buffer of its own). */
static nn_tensor *op_output(nn_graph *g, const char *op, int ndim, const int *shape, nn_backward_fn backward,
                            int nsrc, nn_tensor *const *src, const nn_tensor *view_of)
{
    NCMI_CHECK(g != NULL, "op %s called without a graph", op);
    NCMI_CHECK(nsrc <= NN_MAX_SRC, "op %s with %d inputs", op, nsrc);
    nn_device dev = NN_DEVICE_CPU;
    int have_dev = 0;
    for (int i = 0; i < nsrc; i++) {
        if (!src[i]) continue;
        if (!have_dev) {
            dev = src[i]->device;
            have_dev = 1;
        }
        NCMI_CHECK(src[i]->device == dev, "op %s: inputs on different devices (input 0 on %s, input %d on %s)",
                   op, dev == NN_DEVICE_CPU ? "cpu" : "cuda", i,
                   src[i]->device == NN_DEVICE_CPU ? "cpu" : "cuda");
    }
    nn_tensor *t;
    if (view_of) {
        t = tensor_header(g, ndim, shape);
        NCMI_CHECK(t->numel == view_of->numel, "op %s: a view of %zu elements as %zu", op, view_of->numel,
                   t->numel);
        t->device = view_of->device;
        t->data = view_of->data;
        t->owns_data = 0;
    } else {
        t = nn_tensor_new_on(g, dev, ndim, shape);
    }
    t->op = op;
    t->bwd_reads = NN_BWD_ALL;
    int rg = 0;
    for (int i = 0; i < nsrc; i++) {
        t->src[i] = src[i];
        if (src[i] && src[i]->requires_grad) rg = 1;
    }
    t->nsrc = nsrc;
    if (rg && !g->no_grad && backward) {
        t->requires_grad = 1;
        t->backward = backward;
    }
    return t;
}

nn_tensor *nn_op_output(nn_graph *g, const char *op, int ndim, const int *shape,
                        nn_backward_fn backward, int nsrc, nn_tensor *const *src)
{
    return op_output(g, op, ndim, shape, backward, nsrc, src, NULL);
}

nn_tensor *nn_op_view(nn_graph *g, const char *op, int ndim, const int *shape, nn_backward_fn backward,
                      nn_tensor *x)
{
    return op_output(g, op, ndim, shape, backward, 1, &x, x);
}

int nn_op_needs_grad(const nn_tensor *out, int i)
{
    return i < out->nsrc && out->src[i] && out->src[i]->requires_grad;
}

static int graph_index(nn_graph *g, const nn_tensor *t, size_t *idx)
{
    if (t->graph != g) return -1;
    for (size_t i = g->n; i-- > 0;)
        if (g->nodes[i] == t) {
            *idx = i;
            return 0;
        }
    return -1;
}

/* The gradient-ready plan of a backward pass from node idx: every leaf
 * input of a recorded node 0..idx with the index of the FIRST node that uses
 * it, in increasing index order. The reverse walk passes that node last, so
 * the leaf's gradient is final right after it (nn_graph_set_grad_hook). */
typedef struct hook_plan {
    nn_tensor **leaf;
    size_t *first;
    size_t n;
} hook_plan;

static size_t ptr_hash(const void *p, size_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static void hook_plan_build(const nn_graph *g, size_t idx, hook_plan *hp)
{
    size_t cand = 0;
    for (size_t i = 0; i <= idx; i++)
        if (g->nodes[i]->backward) cand += (size_t)g->nodes[i]->nsrc;
    size_t cap = 16;
    while (cap < 2 * cand) cap <<= 1;
    const nn_tensor **set = xcalloc(cap, sizeof *set);
    hp->leaf = xcalloc(cand, sizeof *hp->leaf);
    hp->first = xcalloc(cand, sizeof *hp->first);
    hp->n = 0;
    for (size_t i = 0; i <= idx; i++) {
        const nn_tensor *n = g->nodes[i];
        if (!n->backward) continue; /* recorded under no_grad: adds to no gradient */
        for (int k = 0; k < n->nsrc; k++) {
            nn_tensor *s = n->src[k];
            if (!s || !s->requires_grad || s->backward) continue;
            size_t h = ptr_hash(s, cap - 1);
            while (set[h] && set[h] != s) h = (h + 1) & (cap - 1);
            if (set[h]) continue;
            set[h] = s;
            hp->leaf[hp->n] = s;
            hp->first[hp->n] = i;
            hp->n++;
        }
    }
    free(set);
}

int nn_backward_from(nn_graph *g, nn_tensor *t, const float *upstream)
{
    size_t idx;
    if (graph_index(g, t, &idx) != 0)
        return ncmi_error_set("backward: the tensor does not belong to this graph");
    if (!t->requires_grad) return 0; /* nothing to differentiate */
    if (t->device == NN_DEVICE_CPU) {
        float *gr = nn_tensor_grad(t);
        for (size_t i = 0; i < t->numel; i++) gr[i] += upstream[i];
    } else if (!t->grad && t->numel == 1) {
        /* the common seed d loss / d loss: a fill, no host copy */
        nn_cuda_fill(nn_tensor_grad(t), upstream[0], 1);
    } else {
        float *gr = nn_tensor_grad(t);
        float *tmp = nn_cuda_alloc(t->numel * sizeof(float));
        nn_cuda_h2d(tmp, upstream, t->numel * sizeof(float));
        nn_cuda_axpy(gr, tmp, 1.0f, t->numel);
        nn_cuda_free(tmp);
    }
    if (g->free_dead) free_unread(g, idx, t);
    hook_plan hp = {0};
    if (g->grad_hook) hook_plan_build(g, idx, &hp);
    for (size_t i = idx + 1; i-- > 0;) {
        nn_tensor *n = g->nodes[i];
        if (n->backward && n->grad) {
            n->backward(n);
            /* its gradient has been passed on to its inputs and nothing
             * reads it again: free it now (peak memory) */
            if (!g->keep_grads && n != t) {
                free_on(n->device, n->grad);
                n->grad = NULL;
            }
        }
        if (g->free_dead && n != t) release_dead(n);
        /* leaves first used by node i: no node left in the walk adds to them */
        while (hp.n > 0 && hp.first[hp.n - 1] == i) g->grad_hook(hp.leaf[--hp.n], g->grad_hook_ctx);
    }
    free(hp.leaf);
    free(hp.first);
    return 0;
}

void nn_tensor_drop_grad(nn_tensor *t)
{
    if (!t->grad) return;
    free_on(t->device, t->grad);
    t->grad = NULL;
}

int nn_backward(nn_graph *g, nn_tensor *loss)
{
    if (loss->numel != 1) {
        char b[64];
        return ncmi_error_set("backward: loss must be a scalar, got shape %s",
                              nn_shape_str(loss->ndim, loss->shape, b, sizeof b));
    }
    const float one = 1.0f;
    return nn_backward_from(g, loss, &one);
}
