/* CUDA twins of nn/ops_elementwise.c (binary ops with broadcasting, the
 * unary table) and of the elementwise parts of nn/ops_fused.c (the relu of
 * linear_relu, tanh_sigmoid_gate). Implemented in nn/cuda/elementwise.cu;
 * every pointer is a device pointer, every launch goes to the one stream.
 * Backward entry points ADD into the gradient they are given.
 *
 * The broadcast plan below is plain C (host and device) so that the CPU
 * tests can check its index math (tests/test_grad_elem.c). */
#ifndef NCMI_CUDA_K_ELEMENTWISE_H
#define NCMI_CUDA_K_ELEMENTWISE_H

#include <stddef.h>

#ifdef __CUDACC__
#define NN_HD __host__ __device__
#else
#define NN_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Binary op kinds (bin_kind in nn/ops_elementwise.c takes these values). */
enum { NN_CU_ADD = 0, NN_CU_SUB = 1, NN_CU_MUL = 2, NN_CU_DIV = 3 };

/* Unary op kinds, in the order of UNARY_OPS in nn/ops_elementwise.c (which
 * checks the order at compile time). */
enum {
    NN_CU_UN_scale,
    NN_CU_UN_add_scalar,
    NN_CU_UN_relu,
    NN_CU_UN_gelu,
    NN_CU_UN_tanh,
    NN_CU_UN_sigmoid,
    NN_CU_UN_softplus,
    NN_CU_UN_exp,
    NN_CU_UN_log,
    NN_CU_UN_sqrt,
    NN_CU_UN_pow,
    NN_CU_UN_clamp,
};

/* How one input ("self") of a binary op maps onto the output, all shapes
 * padded to 4-D: input element e is output element base(e) + step(r) for
 * r = 0 .. cnt-1, in increasing output order (the order in which the CPU
 * backward accumulates). `other` is the other input, whose offset follows
 * the same way (its strides in the output's index space, 0 where it
 * broadcasts). */
typedef struct nn_bcast_plan {
    int in4[4];      /* self's padded shape */
    size_t os[4];    /* output strides (contiguous) */
    size_t so[4];    /* other's strides in the output's index space */
    int nb;          /* broadcast axes of self (self 1, output > 1) */
    int bdim[4];     /* which axes, outer first */
    int bext[4];     /* their output extents */
    size_t cnt;      /* output elements per input element */
} nn_bcast_plan;

static inline void nn_bcast_plan_init(nn_bcast_plan *p, const int self4[4], const int out4[4],
                                      const size_t other_st[4])
{
    size_t s = 1;
    p->nb = 0;
    p->cnt = 1;
    for (int d = 3; d >= 0; d--) {
        p->os[d] = s;
        s *= (size_t)out4[d];
    }
    for (int d = 0; d < 4; d++) {
        p->in4[d] = self4[d];
        p->so[d] = other_st[d];
        if (self4[d] == 1 && out4[d] != 1) {
            p->bdim[p->nb] = d;
            p->bext[p->nb] = out4[d];
            p->nb++;
            p->cnt *= (size_t)out4[d];
        }
    }
}

/* Output and other offsets of input element e's first output element
 * (self's broadcast axes at 0, its other axes equal the output's). */
static inline NN_HD void nn_bcast_base(const nn_bcast_plan *p, size_t e, size_t *o, size_t *t)
{
    size_t oo = 0, ot = 0;
    for (int d = 3; d >= 0; d--) {
        size_t c = e % (size_t)p->in4[d];
        e /= (size_t)p->in4[d];
        oo += c * p->os[d];
        ot += c * p->so[d];
    }
    *o = oo;
    *t = ot;
}

/* Offsets to add to the base for the r-th output element of the set. */
static inline NN_HD void nn_bcast_step(const nn_bcast_plan *p, size_t r, size_t *o, size_t *t)
{
    size_t oo = 0, ot = 0;
    for (int j = p->nb - 1; j >= 0; j--) {
        size_t c = r % (size_t)p->bext[j];
        r /= (size_t)p->bext[j];
        oo += c * p->os[p->bdim[j]];
        ot += c * p->so[p->bdim[j]];
    }
    *o = oo;
    *t = ot;
}

/* out = a (kind) b over the padded output shape s, a and b read through
 * their strides sa, sb (0 along broadcast axes). */
void nn_cuda_binary_fwd(int kind, float *out, const float *a, const float *b, const int s[4],
                        const size_t sa[4], const size_t sb[4]);
/* g += d out / d self reduced over self's broadcast axes: side 0 is a
 * (self a, other b), side 1 is b. p from nn_bcast_plan_init(self's padded
 * shape, the output's, the other input's strides); n_in = self's numel. */
void nn_cuda_binary_bwd(int kind, int side, float *g, const float *gout, const float *a,
                        const float *b, const nn_bcast_plan *p, size_t n_in);

/* y = f(x) and gx += gy * f'(x, y) for a NN_CU_UN_* kind with parameters
 * p0, p1 (as the CPU table). The forward may run in place (y == x). */
void nn_cuda_unary_fwd(int kind, float *y, const float *x, size_t n, float p0, float p1);
void nn_cuda_unary_bwd(int kind, float *gx, const float *gy, const float *x, const float *y,
                       size_t n, float p0, float p1);

/* linear_relu's backward: dy = y > 0 ? dy : 0, in place. */
void nn_cuda_relu_mask(float *dy, const float *y, size_t n);

/* tanh_sigmoid_gate: y = tanh(a) * sigmoid(b) with the CPU's polynomial
 * tanh / exp; t, s (both or neither NULL) receive tanh(a), sigmoid(b). */
void nn_cuda_gate_fwd(float *y, float *t, float *s, const float *a, const float *b, size_t n);
/* da += (dy s)(1 - t^2);  db += (dy t)(s (1 - s)) */
void nn_cuda_gate_bwd_a(float *da, const float *dy, const float *t, const float *s, size_t n);
void nn_cuda_gate_bwd_b(float *db, const float *dy, const float *t, const float *s, size_t n);

#ifdef __cplusplus
}
#endif

#endif
