/* Patch encoders (see encoder.h). */
#include "encoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/cuda.h"
#if NCMI_HAVE_CUDA
#include "../nn/cuda/k_conv.h"
#endif
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/rng.h"

const char *fx_precision_name(nn_precision p)
{
    return p == NN_PREC_BF16 ? "bf16" : p == NN_PREC_FP16 ? "fp16" : "fp32";
}

int fx_precision_parse(const char *s, nn_precision *p)
{
    if (!strcmp(s, "fp32")) *p = NN_PREC_FP32;
    else if (!strcmp(s, "bf16")) *p = NN_PREC_BF16;
    else if (!strcmp(s, "fp16")) *p = NN_PREC_FP16;
    else return -1;
    return 0;
}

int fx_encoder_open(fx_encoder *e, const char *name, const char *weights, nn_device dev, nn_precision prec,
                    int input_size)
{
    memset(e, 0, sizeof *e);
    if (prec != NN_PREC_FP32 && dev != NN_DEVICE_CUDA)
        return ncmi_error_set("precision %s runs on the GPU only (the CPU encoder computes in fp32)",
                              fx_precision_name(prec));
    if (input_size < 32 || input_size > 4096)
        return ncmi_error_set("encoder input size %d: 32 to 4096 pixels", input_size);
    rn_config c;
    if (rn_config_from_name(&c, name) != 0) return -1;
    nn_rng rng;
    nn_rng_seed(&rng, 0);
    if (rn_init(&e->m, &c, &rng) != 0) return -1;
    if (rn_load(&e->m, weights) != 0) {
        rn_free(&e->m);
        return ncmi_error_prefix("encoder %s", name);
    }
    rn_fold_bn(&e->m);
    snprintf(e->name, sizeof e->name, "%s", name);
    char *abs = realpath(weights, NULL);
    snprintf(e->weights_source, sizeof e->weights_source, "%s", abs ? abs : weights);
    free(abs);
    e->dev = dev;
    e->prec = prec;
    e->input_size = input_size;
    e->dim = e->m.out_dim;
    if (dev == NN_DEVICE_CUDA) nn_params_to_device(&e->m.P, NN_DEVICE_CUDA);
    for (int k = 0; k < 2; k++) {
        e->zn[k] = -1;
        e->g[k] = nn_graph_new();
        if (!e->g[k]) {
            fx_encoder_close(e);
            return ncmi_error_set("out of memory");
        }
        nn_graph_set_no_grad(e->g[k], 1);
        nn_graph_set_precision(e->g[k], prec);
        if (dev == NN_DEVICE_CUDA) e->ev[k] = nn_cuda_event_new();
    }
    return 0;
}

float *fx_encoder_host_alloc(const fx_encoder *e, size_t n_floats, int *pinned)
{
    *pinned = 0;
    if (e->dev == NN_DEVICE_CUDA) {
        float *p = nn_cuda_host_alloc(n_floats * sizeof(float));
        if (p) {
            *pinned = 1;
            return p;
        }
    }
    return malloc((n_floats ? n_floats : 1) * sizeof(float));
}

void fx_encoder_host_free(float *p, int pinned)
{
    if (pinned)
        nn_cuda_host_free(p);
    else
        free(p);
}

void fx_encoder_close(fx_encoder *e)
{
    for (int k = 0; k < 2; k++) {
        if (e->zn[k] >= 0 && e->dev == NN_DEVICE_CUDA && e->ev[k]) nn_cuda_event_wait(e->ev[k]);
        if (e->g[k]) nn_graph_free(e->g[k]);
        if (e->zhost[k]) fx_encoder_host_free(e->zhost[k], e->zpinned[k]);
        if (e->ev[k]) nn_cuda_event_free(e->ev[k]);
    }
#if NCMI_HAVE_CUDA
    if (e->dev == NN_DEVICE_CUDA) nn_cuda_conv_half_cache_clear(); /* keyed by weight pointer */
#endif
    rn_free(&e->m);
    memset(e, 0, sizeof *e);
}

void fx_encoder_submit(fx_encoder *e, int k, const float *x, int n)
{
    NCMI_CHECK(k == 0 || k == 1, "fx_encoder_submit: batch slot %d", k);
    NCMI_CHECK(e->zn[k] < 0, "fx_encoder_submit: batch %d was not collected", k);
    const int S = e->input_size;
    const size_t nz = (size_t)n * (size_t)e->dim;
    if (nz > e->zcap[k]) {
        if (e->zhost[k]) fx_encoder_host_free(e->zhost[k], e->zpinned[k]);
        e->zhost[k] = fx_encoder_host_alloc(e, nz, &e->zpinned[k]);
        NCMI_CHECK(e->zhost[k] != NULL, "out of memory for %zu features", nz);
        e->zcap[k] = nz;
    }
    nn_graph *g = e->g[k];
    nn_graph_reset(g); /* batch k's previous activations: their work finished at its collect */
    int shape[4] = {n, 3, S, S};
    const size_t bytes = (size_t)n * 3 * (size_t)S * S * sizeof(float);
    if (e->dev == NN_DEVICE_CUDA) {
        nn_tensor *t = nn_tensor_new_on(g, NN_DEVICE_CUDA, 4, shape);
        nn_cuda_h2d_async(t->data, x, bytes);
        nn_tensor *z = rn_forward(&e->m, g, t, 0);
        nn_cuda_d2h_async(e->zhost[k], z->data, nz * sizeof(float));
        nn_cuda_event_record(e->ev[k]);
    } else {
        nn_tensor *t = nn_tensor_from(g, 4, shape, x);
        nn_tensor *z = rn_forward(&e->m, g, t, 0);
        memcpy(e->zhost[k], z->data, nz * sizeof(float));
        nn_graph_reset(g); /* activations back to the allocator now */
    }
    e->zn[k] = n;
}

void fx_encoder_collect(fx_encoder *e, int k, float *out)
{
    NCMI_CHECK((k == 0 || k == 1) && e->zn[k] >= 0, "fx_encoder_collect: no batch %d in flight", k);
    if (e->dev == NN_DEVICE_CUDA) nn_cuda_event_wait(e->ev[k]);
    memcpy(out, e->zhost[k], (size_t)e->zn[k] * (size_t)e->dim * sizeof(float));
    e->zn[k] = -1;
}

void fx_encoder_run(fx_encoder *e, const float *x, int n, float *out)
{
    fx_encoder_submit(e, 0, x, n);
    fx_encoder_collect(e, 0, out);
}

/* BatchNorm parameters and statistics away from their identity init, so that
 * folding them into the convolutions is exercised by whoever uses the file. */
static void perturb_bn(nn_params *P, nn_rng *rng)
{
    for (int i = 0; i < P->n; i++) {
        nn_tensor *t = P->t[i];
        const char *nm = t->name;
        size_t L = strlen(nm);
        if (t->ndim != 1 || P->host_only[i]) continue;
#define ENDS(s) (L >= strlen(s) && !strcmp(nm + L - strlen(s), s))
        if (ENDS(".running_mean")) nn_rng_fill_uniform(rng, t->data, t->numel, -0.1f, 0.1f);
        else if (ENDS(".running_var")) nn_rng_fill_uniform(rng, t->data, t->numel, 0.5f, 1.5f);
        else if (ENDS(".weight") && strncmp(nm, "fc.", 3)) nn_rng_fill_uniform(rng, t->data, t->numel, 0.5f, 1.2f);
        else if (ENDS(".bias") && strncmp(nm, "fc.", 3)) nn_rng_fill_uniform(rng, t->data, t->numel, -0.1f, 0.1f);
#undef ENDS
    }
}

int fx_encoder_open_random(fx_encoder *e, const char *name, unsigned long long seed, const char *save_path,
                           nn_device dev, nn_precision prec, int input_size)
{
    rn_config c;
    if (rn_config_from_name(&c, name) != 0) return -1;
    rn_model m;
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    if (rn_init(&m, &c, &rng) != 0) return -1;
    perturb_bn(&m.P, &rng);
    char seedv[32];
    snprintf(seedv, sizeof seedv, "%llu", seed);
    const char *keys[] = {"encoder", "seed", "note"};
    const char *vals[] = {name, seedv, "random weights (torchvision init + perturbed batchnorm), not trained"};
    int rc = nn_params_save(&m.P, save_path, keys, vals, 3);
    rn_free(&m);
    if (rc != 0) return -1;
    if (fx_encoder_open(e, name, save_path, dev, prec, input_size) != 0) return -1;
    snprintf(e->weights_source, sizeof e->weights_source, "random:%llu", seed);
    return 0;
}
