// The fused NCMI loss on the GPU: nn/ncmi.c's nn_ncmi_loss (formulas and
// notation in its header comment) with the same double arithmetic. A block
// works on one row (a sample i or a class c), its threads on the row's
// coordinates j = threadIdx.x, threadIdx.x + NT, ...: every per-coordinate
// value is written and read back by the same thread, and the row sums go
// through block_sum (a fixed tree: deterministic). Per-class accumulations
// over samples (dL/dxi) run one thread per coordinate j, over i in order,
// as the CPU loop does: no atomics.
#include <math.h>

#include "check.cuh"
#include "k_ncmi.h"

namespace {

constexpr int NT = 256; // threads per row block (a power of two)
constexpr double NSF_EPS = 1e-8;  // as nn/ncmi.c
constexpr double CMI_EPS = 1e-10; // as nn/ncmi.c

__device__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads(); // sh is reused by the next reduction
    return r;
}

__device__ double block_max(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && sh[threadIdx.x + s] > sh[threadIdx.x]) sh[threadIdx.x] = sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

// nn/ncmi.c's log_simplex for one row, by the whole block: lp[D] holds v on
// entry and ln S(v) on return; p = S(v); NSF also sm = s(-v). Returns the
// NSF denominator (0 for softmax).
__device__ double row_log_simplex(int softmax, int D, double *lp, double *p, double *sm, double *sh)
{
    if (softmax) {
        double mx = -INFINITY;
        for (int j = threadIdx.x; j < D; j += NT)
            if (lp[j] > mx) mx = lp[j];
        mx = block_max(mx, sh);
        double s = 0;
        for (int j = threadIdx.x; j < D; j += NT) {
            const double e = exp(lp[j] - mx);
            p[j] = e;
            s += e;
        }
        s = block_sum(s, sh);
        const double lse = mx + log(s), inv = 1.0 / s;
        for (int j = threadIdx.x; j < D; j += NT) {
            lp[j] = lp[j] - lse;
            p[j] *= inv;
        }
        return 0;
    }
    double S = 0;
    for (int j = threadIdx.x; j < D; j += NT) {
        const double x = lp[j];
        const double e = exp(-fabs(x)), l1 = log1p(e), r = 1.0 / (1.0 + e);
        const double s = x >= 0 ? r : e * r;
        lp[j] = x >= 0 ? -l1 : x - l1;
        p[j] = s;
        sm[j] = x >= 0 ? e * r : r;
        S += s;
    }
    S = block_sum(S, sh);
    const double den = S + NSF_EPS;
    const double lden = log(den), inv = 1.0 / den;
    for (int j = threadIdx.x; j < D; j += NT) {
        lp[j] -= lden;
        p[j] *= inv;
    }
    return den;
}

// d/dv of a row given g = d/d lnS (nn/ncmi.c's log_simplex_back), one element
__device__ double simplex_back(int softmax, double g, double p, double sm, double den, double tot)
{
    if (softmax) return g - p * tot;
    const double s = 1.0 - sm;
    return g * sm - tot * s * sm / den;
}

// The CPU rounds each product and sum to double separately; the explicit
// intrinsics keep nvcc from fusing them, so the centre matches bit for bit.
__global__ void k_center_update(const float *z, int N, int D, float *center, int first, double mom)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < D; j += gridDim.x * blockDim.x) {
        double s = 0;
        for (int i = 0; i < N; i++) s = __dadd_rn(s, (double)z[(size_t)i * D + j]);
        const double mean = s / N;
        center[j] = first ? (float)mean
                          : (float)__dadd_rn(__dmul_rn(mom, (double)center[j]), __dmul_rn(1.0 - mom, mean));
    }
}

// block c: lq, pq, smq rows of class c, denq[c], h[c] = sum_j q_cj lq_cj
__global__ void k_centroids(const float *xi, int D, int softmax, double *lq, double *pq, double *smq,
                            double *denq, double *h)
{
    __shared__ double sh[NT];
    const int c = blockIdx.x;
    double *l = lq + (size_t)c * D, *q = pq + (size_t)c * D, *sm = smq + (size_t)c * D;
    for (int j = threadIdx.x; j < D; j += NT) l[j] = (double)xi[(size_t)c * D + j];
    const double den = row_log_simplex(softmax, D, l, q, sm, sh);
    double hc = 0;
    for (int j = threadIdx.x; j < D; j += NT) hc += q[j] * l[j];
    hc = block_sum(hc, sh);
    if (threadIdx.x == 0) {
        denq[c] = den;
        h[c] = hc;
    }
}

// Q[j] = sum_c w_c q_cj (thread per j, classes in order); Hw = sum_c w_c h_c
__global__ void k_mix(const double *pq, const double *w, const double *h, int C, int D, double *Q,
                      double *Hw)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    for (int j = t; j < D; j += gridDim.x * blockDim.x) {
        double s = 0;
        for (int c = 0; c < C; c++) s += w[c] * pq[(size_t)c * D + j];
        Q[j] = s;
    }
    if (t == 0) {
        double s = 0;
        for (int c = 0; c < C; c++) s += w[c] * h[c];
        *Hw = s;
    }
}

// u_j = z_ij - c_j (or z_ij without centring)
__device__ double centred(const float *zi, const float *center, int j)
{
    return (double)zi[j] - (center ? (double)center[j] : 0.0);
}

// block i: ||u_i||, lp, p, s(-v) rows, NSF denominator, CMI_i, Gamma_i
__global__ void k_samples(const float *z, const float *center, int D, int softmax, double tau, double eps,
                          const int *labels, const double *w, const double *lq, const double *pq,
                          const double *h, const double *Q, const double *Hw, double *lp, double *pz,
                          double *smz, double *rn, double *denz, double *cmi, double *gam)
{
    __shared__ double sh[NT];
    const int i = blockIdx.x;
    const float *zi = z + (size_t)i * D;
    double r2 = 0;
    for (int j = threadIdx.x; j < D; j += NT) {
        const double u = centred(zi, center, j);
        r2 += u * u;
    }
    const double r = sqrt(block_sum(r2, sh));
    const double sc = 1.0 / ((r > eps ? r : eps) * tau);
    double *lpi = lp + (size_t)i * D, *pi = pz + (size_t)i * D, *smi = smz + (size_t)i * D;
    for (int j = threadIdx.x; j < D; j += NT) lpi[j] = centred(zi, center, j) * sc;
    const double den = row_log_simplex(softmax, D, lpi, pi, smi, sh);
    const int y = labels[i];
    const double *lqy = lq + (size_t)y * D, *qy = pq + (size_t)y * D;
    double ci = 0, cross = 0;
    for (int j = threadIdx.x; j < D; j += NT) {
        ci += pi[j] * (lpi[j] - lqy[j]);
        cross += lpi[j] * (Q[j] - w[y] * qy[j]);
    }
    ci = block_sum(ci, sh);
    cross = block_sum(cross, sh);
    if (threadIdx.x == 0) {
        rn[i] = r;
        denz[i] = den;
        cmi[i] = ci + CMI_EPS;
        gam[i] = (*Hw - w[y] * h[y]) - cross;
    }
}

// one block: the loss, a_i = dL/dCMI_i, b_i = dL/dGamma_i and the stats
__global__ void k_reduce(int N, int of_means, double floor_, double eps, const double *cmi,
                         const double *gam, const double *rn, double *alpha, double *beta, double *stats)
{
    __shared__ double sh[NT];
    double sc = 0, sg = 0, live = 0;
    for (int i = threadIdx.x; i < N; i += NT) {
        sc += cmi[i];
        sg += gam[i];
        live += rn[i] > eps ? 1.0 : 0.0;
    }
    sc = block_sum(sc, sh);
    sg = block_sum(sg, sh);
    live = block_sum(live, sh);
    double loss;
    if (!of_means) {
        double part = 0;
        for (int i = threadIdx.x; i < N; i += NT) {
            const double G = gam[i] >= floor_ ? gam[i] : floor_;
            part += cmi[i] / G;
            alpha[i] = 1.0 / (N * G);
            beta[i] = gam[i] >= floor_ ? -cmi[i] / (N * G * G) : 0.0;
        }
        loss = block_sum(part, sh) / N;
    } else {
        const double A = sc / N, Gm = sg / N;
        const double B = Gm >= floor_ ? Gm : floor_;
        loss = A / B;
        for (int i = threadIdx.x; i < N; i += NT) {
            alpha[i] = 1.0 / (N * B);
            beta[i] = Gm >= floor_ ? -A / (N * B * B) : 0.0;
        }
    }
    if (threadIdx.x == 0) {
        stats[0] = loss;
        stats[1] = sc;
        stats[2] = sg;
        stats[3] = live == 0 ? 1.0 : 0.0;
    }
}

// dL/dlp_ij (before the simplex and the normalisation)
__device__ double glp_sample(double a, double b, double p, double lp, double lqy, double Qj, double wy,
                             double qy)
{
    return a * p * (lp - lqy + 1.0) - b * (Qj - wy * qy);
}

// block i: dL/dz_i (0 for a sample with ||u_i|| <= eps: no direction)
__global__ void k_grad_z(const float *z, const float *center, int D, int softmax, double tau, double eps,
                         const int *labels, const double *w, const double *lq, const double *pq,
                         const double *Q, const double *lp, const double *pz, const double *smz,
                         const double *rn, const double *denz, const double *alpha, const double *beta,
                         float *gz)
{
    __shared__ double sh[NT];
    const int i = blockIdx.x;
    float *gzi = gz + (size_t)i * D;
    const double r = rn[i];
    if (!(r > eps)) { // uniform over the block: r is the row's value
        for (int j = threadIdx.x; j < D; j += NT) gzi[j] = 0.f;
        return;
    }
    const int y = labels[i];
    const double a = alpha[i], b = beta[i], wy = w[y], den = denz[i];
    const double *lpi = lp + (size_t)i * D, *pi = pz + (size_t)i * D, *smi = smz + (size_t)i * D;
    const double *lqy = lq + (size_t)y * D, *qy = pq + (size_t)y * D;
    const float *zi = z + (size_t)i * D;
    double tot = 0;
    for (int j = threadIdx.x; j < D; j += NT) tot += glp_sample(a, b, pi[j], lpi[j], lqy[j], Q[j], wy, qy[j]);
    tot = block_sum(tot, sh);
    double dot = 0;
    for (int j = threadIdx.x; j < D; j += NT) {
        const double gl = glp_sample(a, b, pi[j], lpi[j], lqy[j], Q[j], wy, qy[j]);
        dot += simplex_back(softmax, gl, pi[j], smi[j], den, tot) * centred(zi, center, j);
    }
    dot = block_sum(dot, sh) / r;
    for (int j = threadIdx.x; j < D; j += NT) {
        const double gl = glp_sample(a, b, pi[j], lpi[j], lqy[j], Q[j], wy, qy[j]);
        const double gv = simplex_back(softmax, gl, pi[j], smi[j], den, tot);
        gzi[j] = (float)((gv - dot * centred(zi, center, j) / r) / (r * tau));
    }
}

// Per-class sums over samples, thread per coordinate j, samples in order:
// Pa[c][j] = sum_{y_i=c} a_i p_ij, Tb[c][j] = sum_{y_i=c} b_i lp_ij,
// T[j] = sum_i b_i lp_ij; thread 0 also Bc[c] = sum_{y_i=c} b_i, Bsum.
// Pa and Tb arrive zeroed.
__global__ void k_class_sums(int N, int C, int D, const int *labels, const double *alpha,
                             const double *beta, const double *pz, const double *lp, double *Pa,
                             double *Tb, double *T, double *Bc, double *Bsum)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    for (int j = t; j < D; j += gridDim.x * blockDim.x) {
        double tj = 0;
        for (int i = 0; i < N; i++) {
            const size_t yj = (size_t)labels[i] * D + j, ij = (size_t)i * D + j;
            Pa[yj] += alpha[i] * pz[ij];
            Tb[yj] += beta[i] * lp[ij];
            tj += beta[i] * lp[ij];
        }
        T[j] = tj;
    }
    if (t == 0) {
        for (int c = 0; c < C; c++) Bc[c] = 0;
        double s = 0;
        for (int i = 0; i < N; i++) {
            Bc[labels[i]] += beta[i];
            s += beta[i];
        }
        *Bsum = s;
    }
}

// dL/dlq_cj (nn/ncmi.c's header comment)
__device__ double glq_class(double Pa, double wc, double q, double lq, double Bnot, double Tj, double Tb)
{
    return -Pa + wc * q * ((lq + 1.0) * Bnot - (Tj - Tb));
}

// block c: dL/dxi_c
__global__ void k_grad_xi(int D, int softmax, const double *w, const double *lq, const double *pq,
                          const double *smq, const double *denq, const double *Pa, const double *Tb,
                          const double *T, const double *Bc, const double *Bsum, float *gxi)
{
    __shared__ double sh[NT];
    const int c = blockIdx.x;
    const size_t o = (size_t)c * D;
    const double Bnot = *Bsum - Bc[c], wc = w[c], den = denq[c];
    double tot = 0;
    for (int j = threadIdx.x; j < D; j += NT) tot += glq_class(Pa[o + j], wc, pq[o + j], lq[o + j], Bnot, T[j], Tb[o + j]);
    tot = block_sum(tot, sh);
    for (int j = threadIdx.x; j < D; j += NT) {
        const double g = glq_class(Pa[o + j], wc, pq[o + j], lq[o + j], Bnot, T[j], Tb[o + j]);
        gxi[o + j] = (float)simplex_back(softmax, g, pq[o + j], smq[o + j], den, tot);
    }
}

__global__ void k_accum(float *g, const float *s, const float *gs, size_t n)
{
    const float a = gs[0];
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        g[k] = __fadd_rn(g[k], __fmul_rn(a, s[k])); // the CPU's g += gs * s, unfused
}

} // namespace

extern "C" void nn_cuda_ncmi_center_update(const float *z, int N, int D, float *center, int first,
                                           double momentum)
{
    k_center_update<<<nn_grid((size_t)D), 256, 0, NN_STREAM>>>(z, N, D, center, first, momentum);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_ncmi_loss(const nn_cuda_ncmi_args *a, const float *z, const float *center,
                                  const float *xi, const int *labels, const double *w, float *gz,
                                  float *gxi, double *stats)
{
    const int N = a->N, C = a->C, D = a->D;
    const size_t nd = (size_t)N * D, cd = (size_t)C * D;
    // one buffer of doubles, carved in this order
    const size_t n_w = C, n_lq = cd, n_pq = cd, n_smq = cd, n_denq = C, n_h = C, n_Q = D, n_Hw = 1;
    const size_t n_lp = nd, n_pz = nd, n_smz = nd, n_row = N; // rn, denz, cmi, gam, alpha, beta
    const size_t n_stats = 4;
    const size_t n_xi = gxi ? 2 * cd + C + D + 1 : 0; // Pa, Tb, Bc, T, Bsum
    const size_t total = n_w + n_lq + n_pq + n_smq + n_denq + n_h + n_Q + n_Hw + n_lp + n_pz + n_smz +
                         6 * n_row + n_stats + n_xi;
    double *buf = (double *)nn_cuda_alloc(total * sizeof(double));
    double *p = buf;
    double *dw = p; p += n_w;
    double *lq = p; p += n_lq;
    double *pq = p; p += n_pq;
    double *smq = p; p += n_smq;
    double *denq = p; p += n_denq;
    double *h = p; p += n_h;
    double *Q = p; p += n_Q;
    double *Hw = p; p += n_Hw;
    double *lp = p; p += n_lp;
    double *pz = p; p += n_pz;
    double *smz = p; p += n_smz;
    double *rn = p; p += n_row;
    double *denz = p; p += n_row;
    double *cmi = p; p += n_row;
    double *gam = p; p += n_row;
    double *alpha = p; p += n_row;
    double *beta = p; p += n_row;
    double *dstats = p; p += n_stats;
    int *dlab = (int *)nn_cuda_alloc((size_t)N * sizeof(int));
    nn_cuda_h2d(dlab, labels, (size_t)N * sizeof(int));
    nn_cuda_h2d(dw, w, (size_t)C * sizeof(double));

    k_centroids<<<C, NT, 0, NN_STREAM>>>(xi, D, a->softmax, lq, pq, smq, denq, h);
    NN_CUDA_LAUNCHED();
    k_mix<<<nn_grid((size_t)D), 256, 0, NN_STREAM>>>(pq, dw, h, C, D, Q, Hw);
    NN_CUDA_LAUNCHED();
    k_samples<<<N, NT, 0, NN_STREAM>>>(z, center, D, a->softmax, a->tau, a->norm_eps, dlab, dw, lq, pq,
                                       h, Q, Hw, lp, pz, smz, rn, denz, cmi, gam);
    NN_CUDA_LAUNCHED();
    k_reduce<<<1, NT, 0, NN_STREAM>>>(N, a->of_means, a->gamma_floor, a->norm_eps, cmi, gam, rn, alpha,
                                      beta, dstats);
    NN_CUDA_LAUNCHED();
    if (gz) {
        k_grad_z<<<N, NT, 0, NN_STREAM>>>(z, center, D, a->softmax, a->tau, a->norm_eps, dlab, dw, lq, pq,
                                          Q, lp, pz, smz, rn, denz, alpha, beta, gz);
        NN_CUDA_LAUNCHED();
    }
    if (gxi) {
        double *Pa = p; p += cd;
        double *Tb = p; p += cd;
        double *Bc = p; p += C;
        double *T = p; p += D;
        double *Bsum = p;
        nn_cuda_memset0(Pa, 2 * cd * sizeof(double)); // Pa and Tb
        k_class_sums<<<nn_grid((size_t)D), 256, 0, NN_STREAM>>>(N, C, D, dlab, alpha, beta, pz, lp, Pa, Tb,
                                                                T, Bc, Bsum);
        NN_CUDA_LAUNCHED();
        k_grad_xi<<<C, NT, 0, NN_STREAM>>>(D, a->softmax, dw, lq, pq, smq, denq, Pa, Tb, T, Bc, Bsum, gxi);
        NN_CUDA_LAUNCHED();
    }
    nn_cuda_d2h(stats, dstats, n_stats * sizeof(double)); // the one host synchronisation
    nn_cuda_free(dlab);
    nn_cuda_free(buf);
}

extern "C" void nn_cuda_ncmi_accum(float *g, const float *s, const float *gs, size_t n)
{
    if (!n) return;
    k_accum<<<nn_grid(n), 256, 0, NN_STREAM>>>(g, s, gs, n);
    NN_CUDA_LAUNCHED();
}
