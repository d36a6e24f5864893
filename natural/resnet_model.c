/* A torchvision ResNet as a trainer model (resnet_model.h). */
#include "resnet_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

static nn_tensor *rn_tr_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in,
                                int training, nn_rng *rng, nn_tensor **aux)
{
    (void)rng; /* no dropout */
    if (aux) *aux = NULL;
    rn_model *r = m->ctx;
    NCMI_CHECK(n_in == 1, "%s: one input tensor (the images) expected, got %d",
               rn_arch_name(r->cfg.arch), n_in);
    const nn_tensor *x = in[0];
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim == 4 && x->shape[1] == r->in_channels,
               "%s: input %s, expected images [N, %d, H, W] (model.in_channels = %d)",
               rn_arch_name(r->cfg.arch), sx, r->in_channels, r->in_channels);
    return rn_forward(r, g, in[0], training); /* [N, out_dim] */
}

static void rn_tr_free(tr_model *m)
{
    rn_model *r = m->ctx;
    if (!r) return;
    rn_free(r);
    free(r);
    m->ctx = NULL;
    m->params = NULL;
}

int rn_tr_model_init(tr_model *m, const rn_config *c, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    if (c->num_classes != 0)
        return ncmi_error_set("rn_tr_model_init: num_classes %d: the trainer's head is the fc "
                              "layer (pass 0)", c->num_classes);
    rn_model *r = calloc(1, sizeof *r);
    if (!r) return ncmi_error_set("out of memory");
    if (rn_init(r, c, rng) != 0) {
        free(r);
        return -1;
    }
    m->params = &r->P;
    m->dim = r->out_dim;
    snprintf(m->classifier, sizeof m->classifier, "fc");
    /* "resnet18 (CIFAR stem, width 16, 1 input channel), z 128" */
    int k = snprintf(m->desc, sizeof m->desc, "%s (%s stem", rn_arch_name(c->arch),
                     c->cifar_stem ? "CIFAR" : "ImageNet");
    if (c->n_stages != 4)
        k += snprintf(m->desc + k, sizeof m->desc - (size_t)k, ", %d stages", c->n_stages);
    if (r->width != 64) k += snprintf(m->desc + k, sizeof m->desc - (size_t)k, ", width %d", r->width);
    if (r->in_channels != 3)
        k += snprintf(m->desc + k, sizeof m->desc - (size_t)k, ", %d input channel%s", r->in_channels,
                      r->in_channels == 1 ? "" : "s");
    snprintf(m->desc + k, sizeof m->desc - (size_t)k, "), z %d", r->out_dim);
    m->forward = rn_tr_forward;
    m->free = rn_tr_free;
    m->ctx = r;
    m->gpu_ok = 1;
    return 0;
}

rn_model *rn_tr_model_resnet(tr_model *m)
{
    return m && m->forward == rn_tr_forward ? m->ctx : NULL;
}
