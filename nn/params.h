/* Named parameters and buffers, grouped per module, with PyTorch's init
 * schemes. Names are the state_dict keys of the reference PyTorch module
 * ("layer1.0.conv1.weight") and become the safetensors keys.
 *
 *   nn_params P; nn_params_init(&P);
 *   nn_linear_m fc; nn_linear_m_init(&fc, &P, "fc", 512, 10, 1, &rng);
 *   y = nn_linear_m_forward(g, &fc, x);
 *   ... nn_params_save(&P, "model.safetensors", meta, n_meta);
 *   nn_params_free(&P);  // frees every tensor it holds
 */
#ifndef NCMI_PARAMS_H
#define NCMI_PARAMS_H

#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

typedef enum nn_param_kind {
    NN_PARAM_WEIGHT = 0, /* trainable: requires_grad = 1 */
    NN_PARAM_BUFFER = 1, /* state saved with the model, not trained (running stats, EMA centre) */
} nn_param_kind;

typedef struct nn_params {
    nn_tensor **t;        /* persistent tensors, each with t->name set */
    nn_param_kind *kind;
    nn_st_dtype *save_dtype; /* dtype written to safetensors (F32; I64 for num_batches_tracked) */
    /* 1: host bookkeeping that only host code reads and writes (batch norm's
     * num_batches_tracked, NCMI's center_initialized flag): it stays on the
     * CPU when the set moves to a GPU, so updating or testing it needs no
     * kernel and no host synchronisation. */
    unsigned char *host_only;
    int n, cap;
} nn_params;

void nn_params_init(nn_params *P);
void nn_params_free(nn_params *P); /* frees the tensors too */
/* Add a zero-filled tensor named `name` (NCMI_CHECK: the name is new). */
nn_tensor *nn_params_add(nn_params *P, const char *name, nn_param_kind kind, int ndim,
                         const int *shape);
/* "prefix.name" (or "name" when prefix is NULL/empty). */
nn_tensor *nn_params_addf(nn_params *P, const char *prefix, const char *name, nn_param_kind kind,
                          int ndim, const int *shape);
nn_tensor *nn_params_get(const nn_params *P, const char *name); /* NULL if absent */
void nn_params_zero_grad(nn_params *P);
size_t nn_params_numel(const nn_params *P, int trainable_only);
/* Move every tensor of P (weights, their gradients, buffers such as
 * running statistics and the NCMI centre) to dev in place (nn_tensor_move),
 * except the host_only ones. Models are built and initialised on the CPU,
 * then moved; optimizer state follows its parameter at the next step. */
void nn_params_to_device(nn_params *P, nn_device dev);

/* safetensors I/O of a whole parameter set. Save is atomic (temporary name +
 * rename). meta: n_meta key/value pairs for __metadata__ (may be NULL/0).
 * Load checks every tensor: a missing name, an unexpected name (strict), a
 * shape mismatch or an unreadable file is an error naming the file, the
 * tensor and the problem (-1, ncmi_error()); nothing is modified then.
 * Tensors may live on any device: saving copies device tensors to the host
 * (waits), loading copies into them. */
int nn_params_save(const nn_params *P, const char *path, const char *const *meta_keys,
                   const char *const *meta_vals, int n_meta);
int nn_params_load(nn_params *P, const char *path, int strict);
/* Same, from an already opened file (e.g. a checkpoint holding more). */
int nn_params_load_st(nn_params *P, const nn_safetensors *st, int strict);
/* For writers that add entries of their own (checkpoints): ts[0..P->n) =
 * P's tensors with host data (device tensors copied to the host, counters
 * converted to I64). hold[0..P->n) keeps the host copies until
 * nn_params_st_release(P, hold). */
void nn_params_st_tensors(const nn_params *P, nn_st_tensor *ts, void **hold);
void nn_params_st_release(const nn_params *P, void **hold);

/* ---- PyTorch init schemes (in place) ----
 * They draw on the host: a tensor on the GPU is filled through a host
 * buffer with the same draws, so it gets the values it would get on the CPU
 * (models are normally initialised on the CPU and then moved). */
void nn_init_uniform(nn_tensor *t, float lo, float hi, nn_rng *rng);
void nn_init_normal(nn_tensor *t, float mean, float std, nn_rng *rng);
void nn_init_constant(nn_tensor *t, float v);
/* fan_in / fan_out as torch.nn.init._calculate_fan_in_and_fan_out. */
void nn_init_fans(const nn_tensor *t, int *fan_in, int *fan_out);
/* kaiming_uniform_(a, mode='fan_in', nonlinearity='leaky_relu'): bound =
 * sqrt(6 / ((1 + a^2) fan_in)); nn.Linear/nn.Conv2d use a = sqrt(5). */
void nn_init_kaiming_uniform(nn_tensor *t, float a, nn_rng *rng);
/* kaiming_normal_(mode='fan_out', nonlinearity='relu') as torchvision ResNets. */
void nn_init_kaiming_normal_fan_out(nn_tensor *t, nn_rng *rng);
void nn_init_xavier_uniform(nn_tensor *t, float gain, nn_rng *rng);
void nn_init_xavier_normal(nn_tensor *t, float gain, nn_rng *rng);

/* ---- modules: parameter groups with PyTorch's default init ---- */
typedef struct nn_linear_m { nn_tensor *weight, *bias; int in, out; } nn_linear_m;
/* weight [out,in] kaiming_uniform(a=sqrt 5); bias U(-1/sqrt(in), 1/sqrt(in)). */
void nn_linear_m_init(nn_linear_m *m, nn_params *P, const char *prefix, int in, int out,
                      int bias, nn_rng *rng);
nn_tensor *nn_linear_m_forward(nn_graph *g, const nn_linear_m *m, nn_tensor *x);

typedef struct nn_conv2d_m {
    nn_tensor *weight, *bias;
    int cin, cout, k, stride, padding, dilation, groups;
} nn_conv2d_m;
/* weight [cout, cin/groups, k, k] kaiming_uniform(a=sqrt 5); bias U(+-1/sqrt(fan_in)). */
void nn_conv2d_m_init(nn_conv2d_m *m, nn_params *P, const char *prefix, int cin, int cout, int k,
                      int stride, int padding, int dilation, int groups, int bias, nn_rng *rng);
nn_tensor *nn_conv2d_m_forward(nn_graph *g, const nn_conv2d_m *m, nn_tensor *x);

typedef struct nn_batchnorm2d_m {
    nn_tensor *weight, *bias, *running_mean, *running_var, *num_batches_tracked;
    int c;
    float momentum, eps;
} nn_batchnorm2d_m;
/* weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0
 * (saved as I64 as PyTorch does); momentum 0.1, eps 1e-5. */
void nn_batchnorm2d_m_init(nn_batchnorm2d_m *m, nn_params *P, const char *prefix, int c);
nn_tensor *nn_batchnorm2d_m_forward(nn_graph *g, nn_batchnorm2d_m *m, nn_tensor *x, int training);

typedef struct nn_layernorm_m { nn_tensor *weight, *bias; int d; float eps; } nn_layernorm_m;
void nn_layernorm_m_init(nn_layernorm_m *m, nn_params *P, const char *prefix, int d, float eps);
nn_tensor *nn_layernorm_m_forward(nn_graph *g, const nn_layernorm_m *m, nn_tensor *x);

#endif
