/* ncmi tensors and the reverse-mode autograd tape.
 *
 * A tensor is a contiguous float32 array of up to 4 dimensions (row-major,
 * NCHW for images, [N,D] for bags). Tensors are either
 *   - persistent (graph == NULL): parameters, buffers, inputs that the caller
 *     owns and frees with nn_tensor_free();
 *   - graph-owned: created by ops (or nn_tensor_new(g, ...)) during one
 *     forward pass and freed together by nn_graph_reset()/nn_graph_free().
 *
 * Autograd: every op appends its output to the graph, in creation order,
 * and, when one of its inputs requires a gradient and the graph is not in
 * no_grad mode, stores a backward function plus its inputs and whatever it
 * saved (aux). nn_backward() walks the graph in reverse creation order and
 * calls each node's backward, which ADDS into its inputs' gradients
 * (allocated lazily, zeroed). Parameter gradients therefore accumulate over
 * several backward passes until nn_tensor_zero_grad()/nn_params_zero_grad().
 *
 * Model code is written forward only:
 *     nn_tensor *h = nn_relu(g, nn_linear(g, x, W1, b1));
 *     nn_tensor *loss = nn_cross_entropy(g, nn_linear(g, h, W2, b2), y, 0.f);
 *     nn_backward(g, loss);
 *     ... optimizer step ...
 *     nn_graph_reset(g);
 */
#ifndef NCMI_TENSOR_H
#define NCMI_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define NN_MAX_DIMS 4
#define NN_MAX_SRC 4
#define NN_NAME_MAX 128

typedef struct nn_tensor nn_tensor;
typedef struct nn_graph nn_graph;

/* Backward of one node: read out->grad (never NULL when called), add into
 * out->src[i]->grad for each input that requires a gradient (use
 * nn_tensor_grad() to get a zero-initialised buffer). */
typedef void (*nn_backward_fn)(nn_tensor *out);

/* Where a tensor's data and grad live. CUDA tensors hold device pointers
 * from the caching allocator (nn/cuda.h); ops run their CUDA twin when
 * their inputs are on the GPU (all inputs of an op must share a device). */
typedef enum nn_device {
    NN_DEVICE_CPU = 0,
    NN_DEVICE_CUDA = 1,
} nn_device;

/* Arithmetic of no_grad convolutions on the GPU (feature extraction):
 * FP32, or channels-last BF16/FP16 with fp32 accumulation. Training graphs
 * are always FP32 (TF32 tensor cores only with nn_cuda_set_tf32). */
typedef enum nn_precision {
    NN_PREC_FP32 = 0,
    NN_PREC_BF16 = 1,
    NN_PREC_FP16 = 2,
} nn_precision;

struct nn_tensor {
    int ndim;
    int shape[NN_MAX_DIMS];
    size_t numel;
    float *data;
    float *grad;          /* NULL until a gradient flows into it */
    int requires_grad;    /* parameters: 1; op outputs: any input's flag */
    int owns_data;        /* 0 for views (reshape) that borrow src data */
    nn_device device;

    /* autograd record (NULL backward: a leaf, or recorded under no_grad) */
    nn_backward_fn backward;
    const char *op;       /* op name, for messages ("linear", "conv2d") */
    nn_tensor *src[NN_MAX_SRC];
    int nsrc;
    float fparam[8];      /* small op parameters (eps, scale, p, ...) */
    int iparam[12];       /* small integer parameters (axis, stride, ...) */
    void *aux;            /* saved buffers, free()d with the tensor */
    void *aux2;           /* a second saved buffer, free()d with the tensor */
    int aux_cuda;         /* aux/aux2 are device buffers (nn_cuda_free, not free) */
    int keep;             /* nn_tensor_keep: data survives nn_backward under free_dead */
    unsigned bwd_reads;   /* whose data its backward reads: NN_BWD_SRC(i) | NN_BWD_OUT
                             (nn_op_output: NN_BWD_ALL; ops that read less say so) */
    int need;             /* scratch of nn_backward (free_dead) */

    nn_graph *graph;      /* owner, NULL for persistent tensors */
    char name[NN_NAME_MAX]; /* parameter/buffer name ("" if none) */
};

/* What an op's backward reads besides out->grad and its saved buffers
 * (aux, aux2), for nn_backward's free_dead: the data of input i
 * (NN_BWD_SRC(i)) and of its own output (NN_BWD_OUT). An op that leaves
 * bwd_reads at NN_BWD_ALL keeps everything it touched alive. */
#define NN_BWD_SRC(i) (1u << (i))
#define NN_BWD_OUT (1u << NN_MAX_SRC)
#define NN_BWD_NONE 0u
#define NN_BWD_ALL ((1u << (NN_MAX_SRC + 1)) - 1u)

/* ---- graph (tape + arena) ---- */
nn_graph *nn_graph_new(void);
/* Free every tensor the graph owns; the graph can be reused. */
void nn_graph_reset(nn_graph *g);
void nn_graph_free(nn_graph *g);
/* In no_grad mode ops record no backward and outputs never require grad.
 * Returns the previous mode so callers can restore it. */
int nn_graph_set_no_grad(nn_graph *g, int no_grad);
int nn_graph_no_grad(const nn_graph *g);
size_t nn_graph_size(const nn_graph *g);
/* no_grad graphs only (inference): free every tensor created after the
 * first `mark` ones (mark: an earlier nn_graph_size) except `keep` (NULL, or
 * a tensor of g created after mark that owns its data), which stays in the
 * graph as node `mark` with its inputs forgotten. A long inference forward
 * (a ResNet encoder) calls it at block boundaries so that its peak memory is
 * what is live, not every intermediate of the pass. */
void nn_graph_truncate(nn_graph *g, size_t mark, nn_tensor *keep);
/* Precision of GPU convolutions recorded under no_grad (default FP32;
 * ignored on the CPU and when the graph records gradients). */
void nn_graph_set_precision(nn_graph *g, nn_precision p);
nn_precision nn_graph_precision(const nn_graph *g);
/* By default nn_backward frees each op output's gradient once its backward
 * has run (an intermediate gradient is dead then), which bounds the peak
 * memory of a backward pass as PyTorch's does. keep = 1 keeps them all
 * (tests that inspect intermediate gradients). Leaves keep theirs always. */
void nn_graph_set_keep_grads(nn_graph *g, int keep);
/* free_dead = 1: nn_backward frees activations as PyTorch's autograd does,
 * so that a training step's peak is what is live, not every activation plus
 * the gradients: before the walk, the data of every node that no backward
 * reads (bwd_reads of the nodes; a view counts as its owner), and during
 * the walk each node's data and saved buffers (aux, aux2) once the walk has
 * passed it. The loss node stays, and so does every tensor marked with
 * nn_tensor_keep (what the caller reads after the backward, e.g. logits for
 * the training accuracy); a freed node's data is NULL. One backward per
 * graph between resets. Default 0. */
void nn_graph_set_free_dead(nn_graph *g, int on);
/* Keep t's data (and, for a view, the data it borrows) through a free_dead
 * backward. */
void nn_tensor_keep(nn_tensor *t);
/* The caller passes t (a node of g) to no further op: free its data now
 * unless something still reads it (its own recorded backward with
 * NN_BWD_OUT, a recorded backward of an op that took it with NN_BWD_SRC, a
 * view of it, nn_tensor_keep) or it is a view. PyTorch frees such a tensor
 * when its last Python reference goes; a forward calls this after a
 * tensor's last use to bound the step's peak memory (mil/transmil.c). The
 * data pointer is NULL afterwards. */
void nn_release(nn_graph *g, nn_tensor *t);

/* ---- tensors ---- */
/* New zero-filled tensor. g == NULL: persistent (caller frees). */
nn_tensor *nn_tensor_new(nn_graph *g, int ndim, const int *shape);
nn_tensor *nn_tensor_new1(nn_graph *g, int d0);
nn_tensor *nn_tensor_new2(nn_graph *g, int d0, int d1);
nn_tensor *nn_tensor_new3(nn_graph *g, int d0, int d1, int d2);
nn_tensor *nn_tensor_new4(nn_graph *g, int d0, int d1, int d2, int d3);
/* New zero-filled tensor on a device (NN_DEVICE_CUDA needs nn_cuda_init). */
nn_tensor *nn_tensor_new_on(nn_graph *g, nn_device dev, int ndim, const int *shape);
/* New tensor holding a copy of data (numel floats). */
nn_tensor *nn_tensor_from(nn_graph *g, int ndim, const int *shape, const float *data);
/* Persistent deep copy of data (and of grad if copy_grad). */
nn_tensor *nn_tensor_clone(const nn_tensor *t, int copy_grad);
void nn_tensor_free(nn_tensor *t); /* persistent tensors only; NULL ok */

/* ---- devices ---- */
/* Persistent copy of t (data, name, requires_grad; not grad) on dev. */
nn_tensor *nn_tensor_to(const nn_tensor *t, nn_device dev);
/* Move a persistent tensor's data (and grad) to dev in place: parameters
 * keep their identity, so nn_params and optimizers see the moved tensor. */
void nn_tensor_move(nn_tensor *t, nn_device dev);
/* Copy numel floats of data (or grad: zeros when it has none) to host dst,
 * and host src into data, whatever the device (device reads wait). */
void nn_tensor_to_host(const nn_tensor *t, float *dst);
void nn_tensor_grad_to_host(const nn_tensor *t, float *dst);
void nn_tensor_from_host(nn_tensor *t, const float *src);
/* Host-readable data of t: t->data on the CPU; on the GPU a malloc'd copy
 * that the caller frees with nn_host_release(t, p). */
float *nn_host_view(const nn_tensor *t);
void nn_host_release(const nn_tensor *t, float *p);

/* Gradient buffer of t, allocated (zeroed) on first use. */
float *nn_tensor_grad(nn_tensor *t);
/* For a GPU backward that writes a whole gradient through a BLAS-style beta
 * (cuBLAS, cuDNN): the gradient buffer and the beta to use. When t has no
 * gradient yet the buffer is allocated without zeroing and *beta = 0: the
 * caller MUST then overwrite every element. Otherwise (and on the CPU, where
 * the buffer is zeroed) *beta = 1: add into it. */
float *nn_tensor_grad_beta(nn_tensor *t, float *beta);
void nn_tensor_zero_grad(nn_tensor *t);
void nn_tensor_fill(nn_tensor *t, float v);
void nn_tensor_set_name(nn_tensor *t, const char *name);

/* Shapes. */
size_t nn_shape_numel(int ndim, const int *shape);
int nn_tensor_same_shape(const nn_tensor *a, const nn_tensor *b);
/* Writes "[2,3,4]" into buf; returns buf. */
char *nn_shape_str(int ndim, const int *shape, char *buf, size_t n);
/* Dimension d (negative counts from the end). */
int nn_tensor_dim(const nn_tensor *t, int d);

/* ---- autograd ---- */
/* Backward from a scalar (numel 1) tensor, seeding d loss/d loss = 1.
 * Returns 0, or -1 with ncmi_error() set when loss is not a scalar or does
 * not belong to g. */
int nn_backward(nn_graph *g, nn_tensor *loss);
/* Backward from any tensor of g with an explicit upstream gradient
 * (numel host floats, added into t->grad on t's device). */
int nn_backward_from(nn_graph *g, nn_tensor *t, const float *upstream);

/* Gradient-ready hook (data-parallel training, nn/dist.h): while
 * nn_backward / nn_backward_from walk the graph, fn(leaf, ctx) is called for
 * each leaf (a tensor that requires a gradient and has no backward of its
 * own: parameters) that is an input of a recorded node of the pass, right
 * after the last node that adds into its gradient has run, i.e. when its
 * gradient for this pass is final (leaf->grad may still be NULL when no
 * gradient reached it). Leaves are reported in reverse order of their first
 * use in the forward pass. fn == NULL removes the hook. Costs one extra
 * pass over the graph per backward while set; nothing otherwise. */
typedef void (*nn_grad_ready_fn)(nn_tensor *leaf, void *ctx);
void nn_graph_set_grad_hook(nn_graph *g, nn_grad_ready_fn fn, void *ctx);
/* Free t's gradient buffer (t->grad = NULL), whatever its device: the
 * optimizers then leave t alone, as one that never had a gradient. */
void nn_tensor_drop_grad(nn_tensor *t);

/* For op implementers: a new output of g with the given shape whose
 * autograd record is set up when any of the nsrc inputs requires a grad
 * and g is not in no_grad mode. `backward` may be NULL for ops without a
 * gradient. */
nn_tensor *nn_op_output(nn_graph *g, const char *op, int ndim, const int *shape,
                        nn_backward_fn backward, int nsrc, nn_tensor *const *src);
/* The same for an output that is a view of x's data (same element count,
 * another shape): no buffer is allocated; x is its one input. */
nn_tensor *nn_op_view(nn_graph *g, const char *op, int ndim, const int *shape, nn_backward_fn backward,
                      nn_tensor *x);
/* True when src i of a node needs a gradient. */
int nn_op_needs_grad(const nn_tensor *out, int i);

#endif
