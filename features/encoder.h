/* Patch encoders for feature extraction: a torchvision ResNet (natural/resnet.h)
 * by name, loaded from a safetensors file with torchvision's names, batchnorm
 * folded into the convolutions, run without gradients on the CPU or the GPU.
 * Prefix fx_. */
#ifndef NCMI_FEATURES_ENCODER_H
#define NCMI_FEATURES_ENCODER_H

#include "../natural/resnet.h"
#include "../nn/tensor.h"

typedef struct fx_encoder {
    rn_model m;
    char name[64];      /* "resnet50_trunc" | "resnet50" | "resnet18" */
    char weights_source[1024]; /* where the weights came from: the file's absolute path, or
                                  "random:SEED" (recorded in the features files) */
    nn_device dev;
    nn_precision prec;  /* GPU convolution arithmetic (FP32 on the CPU) */
    int input_size;     /* side of the square input (224) */
    int dim;            /* feature dimension */
    nn_graph *g[2];     /* one per batch in flight, reused */
    /* pipelined batches (fx_encoder_submit / fx_encoder_collect) */
    float *zhost[2];    /* features of batch k on the host (pinned on the GPU when possible) */
    int zpinned[2];
    size_t zcap[2];     /* floats */
    int zn[2];          /* rows of the batch in flight, -1 when none */
    void *ev[2];        /* GPU: end of batch k's copy back */
} fx_encoder;

/* Build the encoder `name`, load `weights` (rn_load: names and shapes are
 * checked, a file of another architecture is an error naming the file and
 * the tensor), fold batchnorm, move it to dev. prec BF16/FP16 needs the GPU.
 * 0, or -1 with ncmi_error(). */
int fx_encoder_open(fx_encoder *e, const char *name, const char *weights, nn_device dev, nn_precision prec,
                    int input_size);
void fx_encoder_close(fx_encoder *e);

/* x: n normalised images, NCHW floats [n,3,S,S] on the host; out: [n,dim]
 * host floats. Synchronous (the result is on the host on return). */
void fx_encoder_run(fx_encoder *e, const float *x, int n, float *out);

/* Pipelined form, two batches in flight (k = 0 or 1). fx_encoder_submit
 * queues batch k and, on the GPU, returns at once: the copy of x to the
 * device, the forward and the copy of the features back are queued on the
 * stream, so the host prepares the next batch (and queues it) while this one
 * runs; x must stay untouched until fx_encoder_collect(k) returns. On the CPU
 * submit computes. fx_encoder_collect waits for batch k and copies its
 * features [n,dim] to out. Each submit(k) is followed by one collect(k)
 * before the next submit(k). */
void fx_encoder_submit(fx_encoder *e, int k, const float *x, int n);
void fx_encoder_collect(fx_encoder *e, int k, float *out);

/* Host buffers for batches of images: page-locked on the GPU when it can be
 * had (asynchronous DMA copies), else malloc. *pinned tells which (pass it
 * back to free). NULL when out of memory. */
float *fx_encoder_host_alloc(const fx_encoder *e, size_t n_floats, int *pinned);
void fx_encoder_host_free(float *p, int pinned);

/* Same encoder on randomly initialised weights (torchvision's init from
 * seed), for tests and for `ncmi features --weights random:SEED`, which
 * writes the weights it drew to save_path when not NULL (so a PyTorch
 * reference can load the same ones). */
int fx_encoder_open_random(fx_encoder *e, const char *name, unsigned long long seed, const char *save_path,
                           nn_device dev, nn_precision prec, int input_size);

const char *fx_precision_name(nn_precision p);
/* "fp32" | "bf16" | "fp16" -> *p; -1 otherwise. */
int fx_precision_parse(const char *s, nn_precision *p);

#endif
