/* 2-D convolution, NCHW, as torch.nn.functional.conv2d.
 *
 *   x [N,C,H,W], w [Co, C/groups, kh, kw], b [Co] or NULL
 *   out [N,Co,Ho,Wo], Ho = (H + 2p - d(kh-1) - 1)/s + 1 (likewise Wo)
 *
 * General path: per (image, group) im2col into col [K = Cg*kh*kw, P = Ho*Wo]
 * and one sgemm out_g [Mo,P] = W_g [Mo,K] @ col. A 1x1 stride-1 unpadded conv
 * uses the image itself as col. Depthwise (groups == C == Co) is a direct
 * loop. Images are spread over OpenMP threads, each calling a single-threaded
 * sgemm (faster on 2 cores than one multi-threaded sgemm per image, see
 * bench/ops.sh); weight gradients go to per-thread buffers that are summed at
 * the end, so the result does not depend on scheduling for a fixed thread
 * count.
 *
 * On the GPU (nn/cuda/conv.cu) cuDNN computes all of it in fp32; a no_grad
 * graph at NN_PREC_BF16/FP16 runs ungrouped convolutions channels-last in
 * that type with fp32 accumulation (grouped ones stay fp32). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/k_conv.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

typedef struct {
    int N, C, H, W;      /* input */
    int Co, kh, kw;      /* weight */
    int Ho, Wo;          /* output */
    int s, p, d, groups;
    int Cg, Mo, K, P;    /* per group: in channels, out channels, col rows, col cols */
} conv_dims;

static void dims_from(conv_dims *c, const nn_tensor *out)
{
    const int *ip = out->iparam;
    c->N = ip[0], c->C = ip[1], c->H = ip[2], c->W = ip[3];
    c->Co = ip[4], c->kh = ip[5], c->kw = ip[6];
    c->Ho = ip[7], c->Wo = ip[8];
    c->s = ip[9], c->p = ip[10], c->d = ip[11];
    c->groups = (int)out->fparam[0];
    c->Cg = c->C / c->groups;
    c->Mo = c->Co / c->groups;
    c->K = c->Cg * c->kh * c->kw;
    c->P = c->Ho * c->Wo;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    NCMI_CHECK(p != NULL, "conv2d: out of memory (%zu bytes)", n);
    return p;
}

/* Range of output positions o in [0, n_out) whose input index o*s - p + k*d
 * lies in [0, n_in): [*lo, *hi). */
static void valid_range(int n_out, int n_in, int s, int p, int kd, int *lo, int *hi)
{
    int off = kd - p; /* input index = o*s + off */
    int l = 0;
    if (off < 0) l = (-off + s - 1) / s;
    int h = 0;
    if (n_in - off > 0) h = (n_in - off - 1) / s + 1; /* largest o with o*s+off <= n_in-1, plus 1 */
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col [Cg*kh*kw, Ho*Wo] from one group of one image xg [Cg,H,W]. */
static void im2col(const conv_dims *c, const float *xg, float *col)
{
    for (int ch = 0; ch < c->Cg; ch++) {
        const float *xc = xg + (size_t)ch * c->H * c->W;
        for (int ki = 0; ki < c->kh; ki++) {
            int hlo, hhi;
            valid_range(c->Ho, c->H, c->s, c->p, ki * c->d, &hlo, &hhi);
            for (int kj = 0; kj < c->kw; kj++) {
                float *row = col + ((size_t)(ch * c->kh + ki) * c->kw + kj) * c->P;
                int wlo, whi;
                valid_range(c->Wo, c->W, c->s, c->p, kj * c->d, &wlo, &whi);
                int woff = kj * c->d - c->p;
                memset(row, 0, (size_t)hlo * c->Wo * sizeof(float));
                for (int oh = hlo; oh < hhi; oh++) {
                    float *r = row + (size_t)oh * c->Wo;
                    const float *xr = xc + (size_t)(oh * c->s - c->p + ki * c->d) * c->W;
                    for (int ow = 0; ow < wlo; ow++) r[ow] = 0.f;
                    if (c->s == 1) {
                        if (whi > wlo) memcpy(r + wlo, xr + wlo + woff, (size_t)(whi - wlo) * sizeof(float));
                    } else {
                        for (int ow = wlo; ow < whi; ow++) r[ow] = xr[ow * c->s + woff];
                    }
                    for (int ow = whi; ow < c->Wo; ow++) r[ow] = 0.f;
                }
                memset(row + (size_t)hhi * c->Wo, 0, (size_t)(c->Ho - hhi) * c->Wo * sizeof(float));
            }
        }
    }
}

/* dxg [Cg,H,W] += col2im(dcol [Cg*kh*kw, Ho*Wo]). */
static void col2im_add(const conv_dims *c, const float *dcol, float *dxg)
{
    for (int ch = 0; ch < c->Cg; ch++) {
        float *xc = dxg + (size_t)ch * c->H * c->W;
        for (int ki = 0; ki < c->kh; ki++) {
            int hlo, hhi;
            valid_range(c->Ho, c->H, c->s, c->p, ki * c->d, &hlo, &hhi);
            for (int kj = 0; kj < c->kw; kj++) {
                const float *row = dcol + ((size_t)(ch * c->kh + ki) * c->kw + kj) * c->P;
                int wlo, whi;
                valid_range(c->Wo, c->W, c->s, c->p, kj * c->d, &wlo, &whi);
                int woff = kj * c->d - c->p;
                for (int oh = hlo; oh < hhi; oh++) {
                    const float *r = row + (size_t)oh * c->Wo;
                    float *xr = xc + (size_t)(oh * c->s - c->p + ki * c->d) * c->W;
                    if (c->s == 1) {
                        float *xo = xr + woff;
                        for (int ow = wlo; ow < whi; ow++) xo[ow] += r[ow];
                    } else {
                        for (int ow = wlo; ow < whi; ow++) xr[ow * c->s + woff] += r[ow];
                    }
                }
            }
        }
    }
}

static int is_pointwise(const conv_dims *c)
{
    return c->kh == 1 && c->kw == 1 && c->s == 1 && c->p == 0;
}

static int is_depthwise(const conv_dims *c)
{
    return c->groups == c->C && c->Co == c->C && c->groups > 1;
}

/* Run single-threaded BLAS inside our OpenMP regions; returns the previous
 * BLAS thread count for blas_threads_restore. */
static int blas_threads_single(void)
{
    int n = openblas_get_num_threads();
    if (n != 1) openblas_set_num_threads(1);
    return n;
}

static void blas_threads_restore(int n)
{
    if (n != 1) openblas_set_num_threads(n);
}

/* ---- depthwise direct loops ---- */

/* out[n,c] = sum_{ki,kj} w[c,ki,kj] * x[n,c, oh*s-p+ki*d, ow*s-p+kj*d] */
static void depthwise_forward(const conv_dims *c, const float *x, const float *w, float *out)
{
    int NC = c->N * c->C;
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < NC; nc++) {
        int ch = nc % c->C;
        const float *xc = x + (size_t)nc * c->H * c->W;
        const float *wc = w + (size_t)ch * c->kh * c->kw;
        float *oc = out + (size_t)nc * c->P;
        for (int ki = 0; ki < c->kh; ki++) {
            int hlo, hhi;
            valid_range(c->Ho, c->H, c->s, c->p, ki * c->d, &hlo, &hhi);
            for (int kj = 0; kj < c->kw; kj++) {
                int wlo, whi;
                valid_range(c->Wo, c->W, c->s, c->p, kj * c->d, &wlo, &whi);
                int woff = kj * c->d - c->p;
                float wv = wc[ki * c->kw + kj];
                for (int oh = hlo; oh < hhi; oh++) {
                    const float *xr = xc + (size_t)(oh * c->s - c->p + ki * c->d) * c->W;
                    float *o = oc + (size_t)oh * c->Wo;
                    for (int ow = wlo; ow < whi; ow++) o[ow] += wv * xr[ow * c->s + woff];
                }
            }
        }
    }
}

/* dx[n,c] += w (x) dy ; dw[c] += sum_n dy (x) x. Parallel over channels. */
static void depthwise_backward(const conv_dims *c, const float *x, const float *w,
                               const float *dy, float *dx, float *dw)
{
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c->C; ch++) {
        const float *wc = w + (size_t)ch * c->kh * c->kw;
        for (int n = 0; n < c->N; n++) {
            size_t nc = (size_t)n * c->C + ch;
            const float *xc = x + nc * c->H * c->W;
            const float *dc = dy + nc * c->P;
            float *dxc = dx ? dx + nc * c->H * c->W : NULL;
            for (int ki = 0; ki < c->kh; ki++) {
                int hlo, hhi;
                valid_range(c->Ho, c->H, c->s, c->p, ki * c->d, &hlo, &hhi);
                for (int kj = 0; kj < c->kw; kj++) {
                    int wlo, whi;
                    valid_range(c->Wo, c->W, c->s, c->p, kj * c->d, &wlo, &whi);
                    int woff = kj * c->d - c->p;
                    float wv = wc[ki * c->kw + kj];
                    double acc = 0;
                    for (int oh = hlo; oh < hhi; oh++) {
                        size_t xoff = (size_t)(oh * c->s - c->p + ki * c->d) * c->W;
                        const float *dr = dc + (size_t)oh * c->Wo;
                        if (dw) {
                            const float *xr = xc + xoff;
                            float a = 0.f;
                            for (int ow = wlo; ow < whi; ow++) a += dr[ow] * xr[ow * c->s + woff];
                            acc += a;
                        }
                        if (dxc) {
                            float *xr = dxc + xoff;
                            for (int ow = wlo; ow < whi; ow++) xr[ow * c->s + woff] += wv * dr[ow];
                        }
                    }
                    if (dw) dw[(size_t)ch * c->kh * c->kw + ki * c->kw + kj] += (float)acc;
                }
            }
        }
    }
}

/* ---- general (im2col + sgemm) ---- */

static void conv_forward(const conv_dims *c, const float *x, const float *w, const float *b,
                         float *out)
{
    if (b) {
        for (int n = 0; n < c->N; n++)
            for (int co = 0; co < c->Co; co++) {
                float *o = out + ((size_t)n * c->Co + co) * c->P;
                for (int q = 0; q < c->P; q++) o[q] = b[co];
            }
    }
    if (is_depthwise(c)) {
        depthwise_forward(c, x, w, out);
        return;
    }
    float beta = b ? 1.f : 0.f;
    int pw = is_pointwise(c);
    /* images over threads; a single image: one multi-threaded sgemm */
    int par = c->N >= 2 && omp_get_max_threads() > 1;
    int nb = par ? blas_threads_single() : 1;
#pragma omp parallel if (par)
    {
        float *col = pw ? NULL : xmalloc((size_t)c->K * c->P * sizeof(float));
#pragma omp for schedule(static)
        for (int n = 0; n < c->N; n++) {
            for (int g = 0; g < c->groups; g++) {
                const float *xg = x + ((size_t)n * c->C + (size_t)g * c->Cg) * c->H * c->W;
                const float *cg = xg;
                if (!pw) {
                    im2col(c, xg, col);
                    cg = col;
                }
                /* out_g [Mo,P] = W_g [Mo,K] @ col [K,P] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->Mo, c->P, c->K, 1.f,
                            w + (size_t)g * c->Mo * c->K, c->K, cg, c->P, beta,
                            out + ((size_t)n * c->Co + (size_t)g * c->Mo) * c->P, c->P);
            }
        }
        free(col);
    }
    blas_threads_restore(nb);
}

static void conv_backward(const conv_dims *c, const float *x, const float *w, const float *dy,
                          float *dx, float *dw, float *db)
{
    if (db) {
        for (int co = 0; co < c->Co; co++) {
            double acc = 0;
            for (int n = 0; n < c->N; n++) {
                const float *d = dy + ((size_t)n * c->Co + co) * c->P;
                float a = 0.f;
                for (int q = 0; q < c->P; q++) a += d[q];
                acc += a;
            }
            db[co] += (float)acc;
        }
    }
    if (!dx && !dw) return;
    if (is_depthwise(c)) {
        depthwise_backward(c, x, w, dy, dx, dw);
        return;
    }
    int pw = is_pointwise(c);
    size_t wsize = (size_t)c->Co * c->K;
    int nt = omp_get_max_threads();
    if (nt > c->N) nt = c->N > 0 ? c->N : 1;
    int par = nt > 1;
    /* per-thread weight-gradient buffers, summed below in thread order */
    float *dwbuf = dw ? calloc((size_t)nt * wsize, sizeof(float)) : NULL;
    NCMI_CHECK(!dw || dwbuf, "conv2d: out of memory");
    int nb = par ? blas_threads_single() : 1;
#pragma omp parallel num_threads(nt) if (par)
    {
        int t = omp_get_thread_num();
        float *col = pw ? NULL : xmalloc((size_t)c->K * c->P * sizeof(float) * (dx ? 2 : 1));
        float *dcol = pw ? NULL : (dx ? col + (size_t)c->K * c->P : NULL);
        float *dwt = dw ? dwbuf + (size_t)t * wsize : NULL;
#pragma omp for schedule(static)
        for (int n = 0; n < c->N; n++) {
            for (int g = 0; g < c->groups; g++) {
                size_t xo = ((size_t)n * c->C + (size_t)g * c->Cg) * c->H * c->W;
                const float *dyg = dy + ((size_t)n * c->Co + (size_t)g * c->Mo) * c->P;
                const float *wg = w + (size_t)g * c->Mo * c->K;
                if (dw) {
                    const float *cg = x + xo;
                    if (!pw) {
                        im2col(c, x + xo, col);
                        cg = col;
                    }
                    /* dW_g [Mo,K] += dy_g [Mo,P] @ col^T [P,K] */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->Mo, c->K, c->P, 1.f,
                                dyg, c->P, cg, c->P, 1.f, dwt + (size_t)g * c->Mo * c->K, c->K);
                }
                if (dx) {
                    /* dcol [K,P] = W_g^T [K,Mo] @ dy_g [Mo,P]; pointwise: straight into dx */
                    if (pw) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->K, c->P, c->Mo,
                                    1.f, wg, c->K, dyg, c->P, 1.f, dx + xo, c->P);
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->K, c->P, c->Mo,
                                    1.f, wg, c->K, dyg, c->P, 0.f, dcol, c->P);
                        col2im_add(c, dcol, dx + xo);
                    }
                }
            }
        }
        free(col);
    }
    blas_threads_restore(nb);
    if (dw) {
        for (int t = 0; t < nt; t++) {
            const float *src = dwbuf + (size_t)t * wsize;
            for (size_t i = 0; i < wsize; i++) dw[i] += src[i];
        }
        free(dwbuf);
    }
}

static nn_cuda_conv_shape cuda_shape(const conv_dims *c)
{
    nn_cuda_conv_shape s = {c->N, c->C, c->H, c->W, c->Co, c->kh, c->kw, c->Ho, c->Wo,
                            c->s, c->p, c->d, c->groups};
    return s;
}

static void conv2d_backward(nn_tensor *out)
{
    conv_dims c;
    dims_from(&c, out);
    nn_tensor *x = out->src[0], *w = out->src[1], *b = out->src[2];
    if (NN_ON_GPU(out) && out->numel > 0) {
        /* cuDNN overwrites (beta 0) a gradient this backward is the first to write */
        float bx = 1.f, bw = 1.f;
        float *dx = nn_op_needs_grad(out, 0) ? nn_tensor_grad_beta(x, &bx) : NULL;
        float *dw = nn_op_needs_grad(out, 1) ? nn_tensor_grad_beta(w, &bw) : NULL;
        float *db = (b && nn_op_needs_grad(out, 2)) ? nn_tensor_grad(b) : NULL;
        nn_cuda_conv_shape s = cuda_shape(&c);
        nn_cuda_conv2d_bwd(&s, x->data, w->data, out->grad, dx, bx, dw, bw, db);
        return;
    }
    float *dx = nn_op_needs_grad(out, 0) ? nn_tensor_grad(x) : NULL;
    float *dw = nn_op_needs_grad(out, 1) ? nn_tensor_grad(w) : NULL;
    float *db = (b && nn_op_needs_grad(out, 2)) ? nn_tensor_grad(b) : NULL;
    if (NN_ON_GPU(out)) return; /* an empty output: nothing to add */
    conv_backward(&c, x->data, w->data, out->grad, dx, dw, db);
}

nn_tensor *nn_conv2d(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b, int stride,
                     int padding, int dilation, int groups)
{
    char sx[64], sw[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    nn_shape_str(w->ndim, w->shape, sw, sizeof sw);
    NCMI_CHECK(x->ndim == 4 && w->ndim == 4, "conv2d: x %s, w %s: need 4-D", sx, sw);
    NCMI_CHECK(stride >= 1 && padding >= 0 && dilation >= 1 && groups >= 1,
               "conv2d: stride %d, padding %d, dilation %d, groups %d", stride, padding,
               dilation, groups);
    conv_dims c;
    c.N = x->shape[0], c.C = x->shape[1], c.H = x->shape[2], c.W = x->shape[3];
    c.Co = w->shape[0], c.kh = w->shape[2], c.kw = w->shape[3];
    c.s = stride, c.p = padding, c.d = dilation, c.groups = groups;
    NCMI_CHECK(c.C % groups == 0 && c.Co % groups == 0 && w->shape[1] == c.C / groups,
               "conv2d: x %s, w %s, groups %d: channels do not match", sx, sw, groups);
    NCMI_CHECK(b == NULL || (b->ndim == 1 && b->shape[0] == c.Co),
               "conv2d: w %s, bias of %zu elements", sw, b ? b->numel : 0);
    c.Ho = (c.H + 2 * padding - dilation * (c.kh - 1) - 1) / stride + 1;
    c.Wo = (c.W + 2 * padding - dilation * (c.kw - 1) - 1) / stride + 1;
    NCMI_CHECK(c.H + 2 * padding - dilation * (c.kh - 1) - 1 >= 0 &&
                   c.W + 2 * padding - dilation * (c.kw - 1) - 1 >= 0,
               "conv2d: x %s, w %s, padding %d, dilation %d: kernel larger than input", sx, sw,
               padding, dilation);
    c.Cg = c.C / groups, c.Mo = c.Co / groups, c.K = c.Cg * c.kh * c.kw, c.P = c.Ho * c.Wo;

    nn_tensor *src[3] = {x, w, b};
    int shape[4] = {c.N, c.Co, c.Ho, c.Wo};
    nn_tensor *out = nn_op_output(g, "conv2d", 4, shape, conv2d_backward, b ? 3 : 2, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1); /* x, W */
    int ip[12] = {c.N, c.C, c.H, c.W, c.Co, c.kh, c.kw, c.Ho, c.Wo, c.s, c.p, c.d};
    memcpy(out->iparam, ip, sizeof ip);
    out->fparam[0] = (float)groups;
    if (out->numel == 0) return out;
    if (NN_ON_GPU(out)) {
        nn_cuda_conv_shape s = cuda_shape(&c);
        nn_precision prec = nn_graph_precision(g);
        if (nn_graph_no_grad(g) && prec != NN_PREC_FP32 && groups == 1)
            nn_cuda_conv2d_fwd_half(&s, prec == NN_PREC_BF16, x->data, w->data, b ? b->data : NULL,
                                    out->data);
        else
            nn_cuda_conv2d_fwd(&s, x->data, w->data, b ? b->data : NULL, out->data);
        return out;
    }
    conv_forward(&c, x->data, w->data, b ? b->data : NULL, out->data);
    return out;
}
