/* Patch encoders (see encoder.h). */
#include "encoder.h"

#include <stdio.h>
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
    e->dev = dev;
    e->prec = prec;
    e->input_size = input_size;
    e->dim = e->m.out_dim;
    if (dev == NN_DEVICE_CUDA) nn_params_to_device(&e->m.P, NN_DEVICE_CUDA);
    e->g = nn_graph_new();
    if (!e->g) {
        rn_free(&e->m);
        return ncmi_error_set("out of memory");
    }
    nn_graph_set_no_grad(e->g, 1);
    nn_graph_set_precision(e->g, prec);
    return 0;
}

void fx_encoder_close(fx_encoder *e)
{
    if (e->g) nn_graph_free(e->g);
#if NCMI_HAVE_CUDA
    if (e->dev == NN_DEVICE_CUDA) nn_cuda_conv_half_cache_clear(); /* keyed by weight pointer */
#endif
    rn_free(&e->m);
    memset(e, 0, sizeof *e);
}

void fx_encoder_run(fx_encoder *e, const float *x, int n, float *out)
{
    const int S = e->input_size;
    nn_graph_reset(e->g);
    int shape[4] = {n, 3, S, S};
    nn_tensor *t = nn_tensor_new_on(e->g, e->dev, 4, shape);
    nn_tensor_from_host(t, x);
    nn_tensor *z = rn_forward(&e->m, e->g, t, 0);
    nn_tensor_to_host(z, out);
    nn_graph_reset(e->g); /* activations go back to the allocator now */
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
    return fx_encoder_open(e, name, save_path, dev, prec, input_size);
}
