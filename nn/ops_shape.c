/* Shape ops: transpose (copy), reshape (view), concat, slice, index_select,
 * pad_rows, repeat_rows. CPU reference forward and backward; the GPU twins
 * (nn/cuda/shape.cu) do the same index arithmetic, the concat / slice / pad
 * block moves as one strided block copy each.
 *
 * Most of them view x as [outer, n, inner] around one axis and move blocks of
 * `inner` contiguous floats; the backward moves the same blocks the other way
 * and adds. */
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_shape.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

static int norm_axis(const nn_tensor *x, int axis, const char *op)
{
    int a = axis < 0 ? axis + x->ndim : axis;
    NCMI_CHECK(a >= 0 && a < x->ndim, "%s: axis %d of a %d-D tensor", op, axis, x->ndim);
    return a;
}

static void split3(const nn_tensor *x, int a, size_t *outer, size_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < a; i++) *outer *= (size_t)x->shape[i];
    for (int i = a + 1; i < x->ndim; i++) *inner *= (size_t)x->shape[i];
}

/* ---- transpose (iparam: d0, d1) ---- */

/* The output's shape padded to 4-D and, for each output axis, the stride of
 * the matching axis of x (d0 and d1 swapped). */
static void transpose_map(const nn_tensor *x, int d0, int d1, int os[4], size_t ost[4])
{
    const int nd = x->ndim;
    size_t xst[NN_MAX_DIMS], s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        xst[i] = s;
        s *= (size_t)x->shape[i];
    }
    for (int i = 0; i < 4; i++) {
        os[i] = 1;
        ost[i] = 0;
    }
    for (int i = 0; i < nd; i++) {
        int from = i == d0 ? d1 : (i == d1 ? d0 : i);
        os[4 - nd + i] = x->shape[from];
        // cppcheck-suppress uninitvar ; false positive: xst[0..nd) is set above for every from < nd
        ost[4 - nd + i] = xst[from];
    }
}

/* Walks the output in order: forward y[o] = x[off], backward gx[off] += gy[o]. */
#define TRANSPOSE_LOOP(BODY)                                                          \
    do {                                                                              \
        size_t o = 0;                                                                 \
        for (int i0 = 0; i0 < os[0]; i0++)                                            \
            for (int i1 = 0; i1 < os[1]; i1++)                                        \
                for (int i2 = 0; i2 < os[2]; i2++) {                                  \
                    size_t base = i0 * ost[0] + i1 * ost[1] + i2 * ost[2];            \
                    for (int i3 = 0; i3 < os[3]; i3++, o++) {                         \
                        size_t off = base + i3 * ost[3];                              \
                        BODY;                                                         \
                    }                                                                 \
                }                                                                     \
    } while (0)

static void transpose_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    int os[4];
    size_t ost[4];
    transpose_map(x, out->iparam[0], out->iparam[1], os, ost);
    float *gx = nn_tensor_grad(x);
    const float *gy = out->grad;
    if (NN_ON_GPU(out)) {
        nn_cuda_transpose_bwd(gy, gx, os, ost, out->numel);
        return;
    }
    TRANSPOSE_LOOP(gx[off] += gy[o]);
}

nn_tensor *nn_transpose(nn_graph *g, nn_tensor *x, int d0, int d1)
{
    NCMI_CHECK(x != NULL, "transpose: NULL input");
    int a = norm_axis(x, d0, "transpose"), b = norm_axis(x, d1, "transpose");
    int shape[NN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[a] = x->shape[b];
    shape[b] = x->shape[a];
    nn_tensor *out = nn_op_output(g, "transpose", x->ndim, shape, transpose_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE;
    out->iparam[0] = a;
    out->iparam[1] = b;
    int os[4];
    size_t ost[4];
    transpose_map(x, a, b, os, ost);
    if (NN_ON_GPU(out)) {
        nn_cuda_transpose_fwd(x->data, out->data, os, ost, out->numel);
        return out;
    }
    float *y = out->data;
    const float *xd = x->data;
    TRANSPOSE_LOOP(y[o] = xd[off]);
    return out;
}

/* ---- reshape: a view sharing x's data ---- */

static void reshape_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_axpy(gx, out->grad, 1.f, x->numel); /* 1 * g is exact: the same sum */
        return;
    }
    for (size_t i = 0; i < x->numel; i++) gx[i] += out->grad[i];
}

nn_tensor *nn_reshape(nn_graph *g, nn_tensor *x, int ndim, const int *shape)
{
    NCMI_CHECK(x != NULL, "reshape: NULL input");
    NCMI_CHECK(ndim >= 1 && ndim <= NN_MAX_DIMS, "reshape: %d dimensions", ndim);
    int s[NN_MAX_DIMS], infer = -1;
    size_t known = 1;
    char b1[64], b2[64];
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            NCMI_CHECK(infer < 0, "reshape: more than one -1 in %s",
                       nn_shape_str(ndim, shape, b1, sizeof b1));
            infer = i;
        } else {
            NCMI_CHECK(s[i] >= 0, "reshape: bad shape %s", nn_shape_str(ndim, shape, b1, sizeof b1));
            known *= (size_t)s[i];
        }
    }
    if (infer >= 0) {
        NCMI_CHECK(known > 0 && x->numel % known == 0, "reshape: %s cannot become %s",
                   nn_shape_str(x->ndim, x->shape, b1, sizeof b1),
                   nn_shape_str(ndim, shape, b2, sizeof b2));
        s[infer] = (int)(x->numel / known);
        known *= (size_t)s[infer];
    }
    NCMI_CHECK(known == x->numel, "reshape: %s cannot become %s",
               nn_shape_str(x->ndim, x->shape, b1, sizeof b1),
               nn_shape_str(ndim, shape, b2, sizeof b2));
    /* a view: x's buffer, no allocation (it allocated and zeroed a buffer of
       its own before, only to free it: 32 MB per TransMIL landmark reshape
       at N = 16,000) */
    nn_tensor *out = nn_op_view(g, "reshape", ndim, s, reshape_backward, x);
    out->bwd_reads = NN_BWD_NONE;
    return out;
}

/* ---- concat (iparam: axis, n; aux: the n input pointers) ----
 * More than NN_MAX_SRC inputs do not fit in src[], so all of them are kept in
 * aux and the autograd record is completed here when one beyond the first
 * NN_MAX_SRC requires a gradient. */

static void concat_backward(nn_tensor *out)
{
    nn_tensor *const *xs = out->aux;
    const int a = out->iparam[0], n = out->iparam[1];
    size_t outer, inner;
    split3(out, a, &outer, &inner);
    const size_t orow = (size_t)out->shape[a] * inner;
    size_t off = 0;
    for (int t = 0; t < n; t++) {
        nn_tensor *x = xs[t];
        const size_t blk = (size_t)x->shape[a] * inner;
        if (x->requires_grad && NN_ON_GPU(out)) {
            nn_cuda_block_copy(nn_tensor_grad(x), blk, 0, out->grad, orow, off, outer, blk, 1);
        } else if (x->requires_grad) {
            float *gx = nn_tensor_grad(x);
            for (size_t o = 0; o < outer; o++) {
                const float *pg = out->grad + o * orow + off;
                for (size_t i = 0; i < blk; i++) gx[o * blk + i] += pg[i];
            }
        }
        off += blk;
    }
}

nn_tensor *nn_concat(nn_graph *g, nn_tensor *const *xs, int n, int axis)
{
    NCMI_CHECK(xs != NULL && n >= 1, "concat: %d inputs", n);
    for (int t = 0; t < n; t++) NCMI_CHECK(xs[t] != NULL, "concat: input %d is NULL", t);
    const nn_tensor *x0 = xs[0];
    int a = norm_axis(x0, axis, "concat");
    int shape[NN_MAX_DIMS];
    for (int i = 0; i < x0->ndim; i++) shape[i] = x0->shape[i];
    shape[a] = 0;
    for (int t = 0; t < n; t++) {
        char b1[64], b2[64];
        /* nn_op_output sees the first NN_MAX_SRC inputs only */
        NCMI_CHECK(xs[t]->device == x0->device, "concat: inputs 0 and %d on different devices", t);
        int ok = xs[t]->ndim == x0->ndim;
        for (int i = 0; ok && i < x0->ndim; i++)
            if (i != a && xs[t]->shape[i] != x0->shape[i]) ok = 0;
        NCMI_CHECK(ok, "concat: input %d has shape %s, input 0 %s (axis %d)", t,
                   nn_shape_str(xs[t]->ndim, xs[t]->shape, b1, sizeof b1),
                   nn_shape_str(x0->ndim, x0->shape, b2, sizeof b2), axis);
        shape[a] += xs[t]->shape[a];
    }
    int nsrc = n < NN_MAX_SRC ? n : NN_MAX_SRC;
    nn_tensor *out = nn_op_output(g, "concat", x0->ndim, shape, concat_backward, nsrc, xs);
    out->bwd_reads = NN_BWD_NONE; /* aux: the input tensors, for their gradients */
    if (!out->backward && !nn_graph_no_grad(g))
        for (int t = nsrc; t < n; t++)
            if (xs[t]->requires_grad) {
                out->requires_grad = 1;
                out->backward = concat_backward;
                break;
            }
    out->iparam[0] = a;
    out->iparam[1] = n;
    nn_tensor **saved = malloc((size_t)n * sizeof *saved);
    NCMI_CHECK(saved != NULL, "concat: out of memory");
    memcpy(saved, xs, (size_t)n * sizeof *saved);
    out->aux = saved;

    size_t outer, inner;
    split3(out, a, &outer, &inner);
    const size_t orow = (size_t)shape[a] * inner;
    size_t off = 0;
    for (int t = 0; t < n; t++) {
        const nn_tensor *x = xs[t];
        const size_t blk = (size_t)x->shape[a] * inner;
        if (NN_ON_GPU(out))
            nn_cuda_block_copy(out->data, orow, off, x->data, blk, 0, outer, blk, 0);
        else
            for (size_t o = 0; o < outer; o++)
                if (blk) memcpy(out->data + o * orow + off, x->data + o * blk, blk * sizeof(float));
        off += blk;
    }
    return out;
}

/* ---- slice (iparam: axis, start) ---- */

static void slice_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int a = out->iparam[0], start = out->iparam[1];
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const size_t xrow = (size_t)x->shape[a] * inner, blk = (size_t)out->shape[a] * inner;
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_block_copy(gx, xrow, (size_t)start * inner, out->grad, blk, 0, outer, blk, 1);
        return;
    }
    for (size_t o = 0; o < outer; o++) {
        float *px = gx + o * xrow + (size_t)start * inner;
        const float *pg = out->grad + o * blk;
        for (size_t i = 0; i < blk; i++) px[i] += pg[i];
    }
}

nn_tensor *nn_slice(nn_graph *g, nn_tensor *x, int axis, int start, int end)
{
    NCMI_CHECK(x != NULL, "slice: NULL input");
    int a = norm_axis(x, axis, "slice");
    const int d = x->shape[a];
    int s = start < 0 ? start + d : start, e = end < 0 ? end + d : end;
    NCMI_CHECK(s >= 0 && s <= e && e <= d, "slice: [%d:%d] of axis %d with size %d", start,
               end, axis, d);
    int shape[NN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[a] = e - s;
    nn_tensor *out = nn_op_output(g, "slice", x->ndim, shape, slice_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE;
    out->iparam[0] = a;
    out->iparam[1] = s;
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const size_t xrow = (size_t)d * inner, blk = (size_t)(e - s) * inner;
    if (NN_ON_GPU(out)) {
        nn_cuda_block_copy(out->data, blk, 0, x->data, xrow, (size_t)s * inner, outer, blk, 0);
        return out;
    }
    for (size_t o = 0; o < outer; o++)
        if (blk)
            memcpy(out->data + o * blk, x->data + o * xrow + (size_t)s * inner,
                   blk * sizeof(float));
    return out;
}

/* ---- row gathers: index_select (axis 0) and repeat_rows (axis ndim-2) ----
 * Both are out[o, i, :] = x[o, src_row(i), :] with a saved int row map
 * (aux); the backward scatters with accumulation, so repeats add. */

static void gather_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int *map = out->aux;
    const int a = out->iparam[0];
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const int nin = x->shape[a], nout = out->shape[a];
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_gather_rows_bwd(out->grad, gx, out->aux, outer, nin, nout, inner);
        return;
    }
    for (size_t o = 0; o < outer; o++)
        for (int i = 0; i < nout; i++) {
            float *px = gx + (o * (size_t)nin + (size_t)map[i]) * inner;
            const float *pg = out->grad + (o * (size_t)nout + (size_t)i) * inner;
            for (size_t k = 0; k < inner; k++) px[k] += pg[k];
        }
}

/* The row map on the device in nn_cuda_gather_rows' layout: map[nout], then
 * its inverse as CSR, start[nin + 1] and list[nout] (a counting sort by input
 * row, stable: each row's output rows ascend). */
static int *gather_map_to_device(const int *map, int nout, int nin)
{
    const size_t n = 2 * (size_t)nout + (size_t)nin + 1;
    int *h = malloc(n * sizeof(int));
    NCMI_CHECK(h != NULL, "out of memory (%zu ints)", n);
    int *start = h + nout, *list = start + nin + 1;
    if (nout) memcpy(h, map, (size_t)nout * sizeof(int));
    for (int r = 0; r <= nin; r++) start[r] = 0;
    for (int i = 0; i < nout; i++) start[map[i] + 1]++;
    for (int r = 0; r < nin; r++) start[r + 1] += start[r];
    /* fill, advancing start[r] to the end of row r's run, then shift back */
    for (int i = 0; i < nout; i++) list[start[map[i]]++] = i;
    for (int r = nin; r > 0; r--) start[r] = start[r - 1];
    start[0] = 0;
    int *d = nn_cuda_alloc(n * sizeof(int));
    nn_cuda_h2d(d, h, n * sizeof(int));
    free(h);
    return d;
}

/* map: nout row indices into axis a of x (copied). */
static nn_tensor *gather_rows(nn_graph *g, const char *op, nn_tensor *x, int a, const int *map,
                              int nout)
{
    int shape[NN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[a] = nout;
    nn_tensor *out = nn_op_output(g, op, x->ndim, shape, gather_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE; /* aux: the row map */
    out->iparam[0] = a;
    if (NN_ON_GPU(out)) {
        size_t outer, inner;
        split3(x, a, &outer, &inner);
        int *d = gather_map_to_device(map, nout, x->shape[a]);
        nn_cuda_gather_rows_fwd(x->data, out->data, d, outer, x->shape[a], nout, inner);
        if (out->backward) {
            out->aux = d;
            out->aux_cuda = 1;
        } else {
            nn_cuda_free(d); /* after the queued kernel: stream-ordered reuse */
        }
        return out;
    }
    int *m = malloc((size_t)(nout ? nout : 1) * sizeof(int));
    NCMI_CHECK(m != NULL, "%s: out of memory", op);
    if (nout) memcpy(m, map, (size_t)nout * sizeof(int));
    out->aux = m;
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const int nin = x->shape[a];
    for (size_t o = 0; o < outer; o++)
        for (int i = 0; i < nout; i++)
            memcpy(out->data + (o * (size_t)nout + (size_t)i) * inner,
                   x->data + (o * (size_t)nin + (size_t)m[i]) * inner, inner * sizeof(float));
    return out;
}

nn_tensor *nn_index_select(nn_graph *g, nn_tensor *x, const int *idx, int n)
{
    NCMI_CHECK(x != NULL && x->ndim >= 1, "index_select: bad input");
    NCMI_CHECK(n >= 0 && (n == 0 || idx != NULL), "index_select: %d indices", n);
    for (int i = 0; i < n; i++)
        NCMI_CHECK(idx[i] >= 0 && idx[i] < x->shape[0],
                   "index_select: index %d at position %d out of range [0,%d)", idx[i], i,
                   x->shape[0]);
    return gather_rows(g, "index_select", x, 0, idx, n);
}

nn_tensor *nn_repeat_rows(nn_graph *g, nn_tensor *x, int n_total)
{
    NCMI_CHECK(x != NULL && x->ndim >= 2, "repeat_rows: input must be at least 2-D");
    const int a = x->ndim - 2, R = x->shape[a];
    NCMI_CHECK(n_total >= R && (R > 0 || n_total == 0),
               "repeat_rows: %d rows cannot be extended to %d", R, n_total);
    int *map = malloc((size_t)(n_total ? n_total : 1) * sizeof(int));
    NCMI_CHECK(map != NULL, "repeat_rows: out of memory");
    for (int i = 0; i < n_total; i++) map[i] = i % R;
    nn_tensor *out = gather_rows(g, "repeat_rows", x, a, map, n_total);
    free(map);
    return out;
}

/* ---- pad_rows (iparam: before) ---- */

static void pad_rows_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int a = x->ndim - 2, before = out->iparam[0];
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const size_t blk = (size_t)x->shape[a] * inner, orow = (size_t)out->shape[a] * inner;
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_block_copy(gx, blk, 0, out->grad, orow, (size_t)before * inner, outer, blk, 1);
        return;
    }
    for (size_t o = 0; o < outer; o++) {
        const float *pg = out->grad + o * orow + (size_t)before * inner;
        for (size_t i = 0; i < blk; i++) gx[o * blk + i] += pg[i];
    }
}

nn_tensor *nn_pad_rows(nn_graph *g, nn_tensor *x, int before, int after, float value)
{
    NCMI_CHECK(x != NULL && x->ndim >= 2, "pad_rows: input must be at least 2-D");
    NCMI_CHECK(before >= 0 && after >= 0, "pad_rows: negative padding %d, %d", before, after);
    const int a = x->ndim - 2;
    int shape[NN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[a] += before + after;
    nn_tensor *out = nn_op_output(g, "pad_rows", x->ndim, shape, pad_rows_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE;
    out->iparam[0] = before;
    out->fparam[0] = value;
    size_t outer, inner;
    split3(x, a, &outer, &inner);
    const size_t blk = (size_t)x->shape[a] * inner, orow = (size_t)shape[a] * inner;
    const size_t pre = (size_t)before * inner;
    if (NN_ON_GPU(out)) {
        nn_cuda_fill(out->data, value, out->numel);
        nn_cuda_block_copy(out->data, orow, pre, x->data, blk, 0, outer, blk, 0);
        return out;
    }
    for (size_t o = 0; o < outer; o++) {
        float *po = out->data + o * orow;
        for (size_t i = 0; i < orow; i++) po[i] = value;
        if (blk) memcpy(po + pre, x->data + o * blk, blk * sizeof(float));
    }
    return out;
}
