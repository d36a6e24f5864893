/* MIL heads on slide features (bags). Each head is a tr_model (train/trainer.h):
 * forward maps one bag H [N, D_feat] (the dataset's single input tensor) to the
 * bag embedding z [1, D_inner]; the trainer adds the head (linear + CE family,
 * or NCMI) on z. Parameter names are the state_dict keys of the official
 * PyTorch implementation of each head, so weights move both ways; the linear
 * classifier's prefix (tr_model.classifier) is the official one too.
 *
 * Every head keeps the attention weights of its last forward for heatmaps
 * (ncmi score) and tests: mil_last_attention(). */
#ifndef NCMI_MIL_H
#define NCMI_MIL_H

#include "../nn/rng.h"
#include "../train/trainer.h"

/* Every head's tr_model.ctx points to a struct whose FIRST member is a
 * mil_head_base: the options and the last attention weights live there. */
/* Host layout of stored attention weights: src is the tensor's data (on the
 * host: as stored, or its copy read back from the GPU), dst the [n, k]
 * buffer mil_last_attention returns, head the model's ctx (its
 * mil_head_base). NULL: src already is [n, k]. */
typedef void (*mil_attn_layout_fn)(const void *head, const float *src, float *dst, int n, int k);
typedef struct mil_head_base {
    float *attn;              /* free()d by the head's free (mil_head_base_release) */
    int attn_n, attn_k;
    size_t attn_cap;
    /* GPU forwards: the weights stay on the device (attn_dev, a device copy
     * of n*k floats) and are copied to the host by one nn_cuda_d2h when
     * mil_last_attention asks for them (attn_pending), then laid out by
     * attn_layout (a host scratch of the same size in attn_tmp). */
    float *attn_dev;
    size_t attn_dev_cap;
    int attn_pending;
    mil_attn_layout_fn attn_layout;
    float *attn_tmp;
    size_t attn_tmp_cap;
} mil_head_base;

/* The attention weights of the last forward of a MIL head: *n instances,
 * *k weights per instance (1 for ABMIL/AEM; heads x tokens for ASMIL; for
 * TransMIL the class token's attention averaged over heads of the last
 * layer). Row-major [n, k]; valid until the next forward. NULL if none. */
const float *mil_last_attention(const tr_model *m, int *n, int *k);

/* Shared by every head's forward: copies attention weights into the model's
 * buffer (implementation detail; heads call it). */
void mil_store_attention(tr_model *m, const float *a, int n, int k);
/* The same from a tensor of n*k floats on any device: on the CPU a copy of
 * its data as above (layout applied when given); on the GPU a device copy
 * (no wait), read back to the host only by the next mil_last_attention. */
void mil_store_attention_tensor(tr_model *m, const nn_tensor *a, int n, int k,
                                mil_attn_layout_fn layout);
/* Frees the attention buffers (host and device) of a head's base. */
void mil_head_base_release(mil_head_base *b);

typedef enum mil_head_kind {
    MIL_ABMIL = 0,
    MIL_TRANSMIL = 1,
    MIL_AEM = 2,
    MIL_ASMIL = 3,
} mil_head_kind;

#define MIL_MAX_INSTANCE_LAYERS 8

/* Options of every head (unused ones ignored); defaults from mil_opts_default. */
typedef struct mil_opts {
    mil_head_kind kind;
    int d_feat;          /* input feature size (1024 for resnet50_trunc) */
    int d_inner;         /* embedding size (512 / 256 / 128) */
    int attn_hidden;     /* ABMIL/AEM gated attention hidden size (128) */
    /* ABMIL/AEM instance network. n_instance_layers 0 (default): the WSI variant's
     * Linear(d_feat, d_inner, no bias) + ReLU. n > 0: Ilse et al.'s network for the
     * MIL benchmarks (Musk, Fox, Tiger, Elephant), n layers Linear (with bias) + ReLU
     * + Dropout(instance_dropout) of widths instance_layers[0..n), the last being the
     * embedding size (d_inner is then not used). */
    int n_instance_layers;
    int instance_layers[MIL_MAX_INSTANCE_LAYERS];
    float instance_dropout;
    int gated;           /* ABMIL/AEM: 1 gated attention (default), 0 tanh attention */
    float dropout;       /* TransMIL / ASMIL attention dropout (0.1) */
    /* AEM: loss += lambda * sum_i a_i ln a_i (minus lambda x attention entropy) */
    float aem_lambda;    /* 0.1 */
    int aem_topk;        /* 0 = all instances; k: entropy of the renormalised top-k */
    int aem_cosine;      /* 1: lambda annealed with a cosine over the epochs (set by the trainer) */
    /* TransMIL */
    int transmil_landmarks;   /* 0 = d_inner / 2 (official: 256 for 512) */
    int transmil_pinv_iters;  /* 6 */
    int transmil_legacy_slice;/* 1: nystrom-attention 0.0.9's misaligned output slice */
    /* ASMIL */
    int asmil_tokens;    /* 8..16 (default 8) */
    int asmil_heads;     /* 8 */
    int asmil_drop;      /* tokens dropped per training step */
    float asmil_kd_T;    /* 0.5 */
    float asmil_kd_weight; /* 1.0 */
    float asmil_ema;     /* 0.999 */
    int asmil_anchor_frozen; /* 1: the released code's behaviour (anchor never updated) */
} mil_opts;

void mil_opts_default(mil_opts *o, mil_head_kind kind);
int mil_head_kind_parse(const char *name, mil_head_kind *kind); /* abmil|transmil|aem|asmil */
const char *mil_head_kind_name(mil_head_kind kind);

/* Build the head (weights initialised as the official code does, from rng). */
int mil_abmil_init(tr_model *m, const mil_opts *o, nn_rng *rng);   /* also AEM (kind MIL_AEM) */
int mil_transmil_init(tr_model *m, const mil_opts *o, nn_rng *rng);
int mil_asmil_init(tr_model *m, const mil_opts *o, nn_rng *rng);
/* AEM: the entropy term's weight is aem_lambda * scale (scale 1 after init).
 * With aem_cosine the trainer anneals lambda by setting the factor before
 * each epoch, e.g. scale = 0.5 (1 + cos(pi * epoch / epochs)). Aborts
 * (NCMI_CHECK) when m is not an abmil/aem head; harmless on abmil (no term). */
void mil_aem_set_lambda_scale(tr_model *m, float scale);
/* Dispatch on o->kind (mil/heads.c: references every head, so only code
 * that wants all four heads links it). */
int mil_head_init(tr_model *m, const mil_opts *o, nn_rng *rng);

#endif
