/* Optimizers (SGD with momentum/nesterov/weight decay, Adam, AdamW), gradient
 * clipping by global norm, LR schedules. Semantics follow torch.optim so a
 * run matches PyTorch step for step.
 *
 * Devices: a parameter on the GPU is stepped by one fused kernel launch
 * (nn/cuda/optim.cu) with its state on the GPU; the scalar factors (bias
 * corrections from the step count) are computed on the host, so a step
 * never waits for the device. The kernels round every operation as the CPU
 * code does (no fused multiply-adds): both devices give the same bits.
 * Optimizer state lives where its parameter lives at step time: state made
 * or loaded on the CPU moves with the parameter at the next step after
 * nn_params_to_device (and back). */
#ifndef NCMI_OPTIM_H
#define NCMI_OPTIM_H

#include "params.h"
#include "safetensors.h"

typedef enum nn_optim_kind { NN_OPTIM_SGD = 0, NN_OPTIM_ADAMW = 1, NN_OPTIM_ADAM = 2 } nn_optim_kind;

typedef struct nn_optim {
    nn_optim_kind kind;
    nn_params *params;      /* steps the trainable tensors (NN_PARAM_WEIGHT) */
    float lr;               /* current lr: set it (e.g. from a schedule) before step */
    float momentum, dampening, weight_decay;
    int nesterov;
    float beta1, beta2, eps;
    long step;              /* steps taken */
    float **state1;         /* per param: SGD momentum buffer / Adam exp_avg (NULL until used) */
    float **state2;         /* per param: Adam exp_avg_sq */
    nn_device *state_dev;   /* per param: device of state1/state2 (CPU while both are NULL) */
    const char *prefix;     /* state tensor names: "<prefix><param>.<state>", "<prefix>step";
                             * NULL means "optim." (set another for a second optimizer in
                             * the same checkpoint, e.g. "optim_xi.") */
} nn_optim;

/* torch.optim.SGD: d = g + wd*p; buf = momentum*buf + (1-dampening)*d (buf = d
 * on the first step); d = nesterov ? d + momentum*buf : buf; p -= lr*d. */
void nn_optim_sgd_init(nn_optim *o, nn_params *P, float lr, float momentum, float weight_decay,
                       int nesterov);
/* torch.optim.AdamW: p -= lr*wd*p; m,v moments; bias corrections; p -= lr*mhat/(sqrt(vhat)+eps). */
void nn_optim_adamw_init(nn_optim *o, nn_params *P, float lr, float beta1, float beta2, float eps,
                         float weight_decay);
/* torch.optim.Adam (amsgrad=False): weight decay as L2 added to the gradient,
 * d = g + wd*p, then AdamW's moments and update without the decoupled decay.
 * The same state tensors as AdamW (exp_avg, exp_avg_sq). */
void nn_optim_adam_init(nn_optim *o, nn_params *P, float lr, float beta1, float beta2, float eps,
                        float weight_decay);
/* One step over every trainable parameter that has a gradient. */
void nn_optim_step(nn_optim *o);
void nn_optim_free(nn_optim *o);

/* Optimizer state as named tensors for checkpoints: "optim.<param>.momentum_buffer",
 * "optim.<param>.exp_avg", "optim.<param>.exp_avg_sq", and "optim.step" (I64)
 * ("optim." is o->prefix when set; loading reads and checks only that prefix).
 * nn_optim_state_tensors fills *ts (malloc'd array; caller frees the array
 * and, via nn_optim_state_tensors_free, the names) and returns the count.
 * The data is host memory: state on the GPU is copied into the array's
 * allocation (waits), so freeing the array frees the copies. Loading puts
 * each state tensor on its parameter's device. */
int nn_optim_state_tensors(const nn_optim *o, nn_st_tensor **ts);
void nn_optim_state_tensors_free(nn_st_tensor *ts, int n);
int nn_optim_state_load(nn_optim *o, const nn_safetensors *st);

/* Checkpoint = parameters + optimizer state (+ metadata) in one safetensors
 * file, written atomically. o may be NULL (weights only). */
int nn_checkpoint_save(const char *path, const nn_params *P, const nn_optim *o,
                       const char *const *meta_keys, const char *const *meta_vals, int n_meta);
int nn_checkpoint_load(const char *path, nn_params *P, nn_optim *o);

/* torch.nn.utils.clip_grad_norm_: scales all grads by max_norm/(norm+1e-6)
 * when the global L2 norm exceeds max_norm; returns the norm before clipping.
 * The trainable gradients must all be on one device. On the GPU the norm
 * and the scaling are computed on the device, and returning the norm reads
 * one value back: clipping with nn_clip_grad_norm costs one host
 * synchronisation per step; nn_clip_grad_norm_async does the same clipping
 * without reading anything back (no synchronisation). */
float nn_clip_grad_norm(nn_params *P, float max_norm);
void nn_clip_grad_norm_async(nn_params *P, float max_norm);

/* LR schedules. t is in the unit the schedule was built in (epochs or steps,
 * fractional allowed). Warm-up (linear from 0 to base over warmup units)
 * applies first when warmup > 0. */
typedef enum nn_lr_kind { NN_LR_CONSTANT = 0, NN_LR_MULTISTEP, NN_LR_COSINE } nn_lr_kind;
typedef struct nn_lr_schedule {
    nn_lr_kind kind;
    float base_lr;
    float min_lr;        /* cosine: lr at t = total */
    double total;        /* cosine: length of the half cycle (after warm-up) */
    double warmup;
    double milestones[16];
    int n_milestones;
    float gamma;         /* multistep: factor at each milestone */
} nn_lr_schedule;
float nn_lr_at(const nn_lr_schedule *s, double t);

#endif
