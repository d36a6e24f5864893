/* Shared pieces of the MIL heads: options, names, dispatch, attention buffer. */
#include "mil.h"

#include <stdlib.h>
#include <string.h>

#include "../nn/cuda.h"
#include "../nn/error.h"

/* grow a host buffer to n floats */
static float *host_cap(float **p, size_t *cap, size_t n)
{
    if (n > *cap) {
        float *q = realloc(*p, (n ? n : 1) * sizeof *q);
        NCMI_CHECK(q != NULL, "out of memory (%zu attention weights)", n);
        *p = q;
        *cap = n;
    }
    return *p;
}

const float *mil_last_attention(const tr_model *m, int *n, int *k)
{
    mil_head_base *b = m->ctx;
    if (!b || !b->attn || b->attn_n <= 0) {
        if (n) *n = 0;
        if (k) *k = 0;
        return NULL;
    }
    if (b->attn_pending) { /* the one read-back of a GPU forward's weights */
        const size_t need = (size_t)b->attn_n * (size_t)b->attn_k;
        if (b->attn_layout) {
            host_cap(&b->attn_tmp, &b->attn_tmp_cap, need);
            nn_cuda_d2h(b->attn_tmp, b->attn_dev, need * sizeof(float));
            b->attn_layout(b, b->attn_tmp, b->attn, b->attn_n, b->attn_k);
        } else {
            nn_cuda_d2h(b->attn, b->attn_dev, need * sizeof(float));
        }
        b->attn_pending = 0;
    }
    if (n) *n = b->attn_n;
    if (k) *k = b->attn_k;
    return b->attn;
}

void mil_store_attention(tr_model *m, const float *a, int n, int k)
{
    mil_head_base *b = m->ctx;
    NCMI_CHECK(b != NULL, "mil_store_attention: model without a MIL context");
    size_t need = (size_t)n * (size_t)k;
    host_cap(&b->attn, &b->attn_cap, need);
    if (need) memcpy(b->attn, a, need * sizeof *a);
    b->attn_n = n;
    b->attn_k = k;
    b->attn_pending = 0;
}

void mil_store_attention_tensor(tr_model *m, const nn_tensor *a, int n, int k,
                                mil_attn_layout_fn layout)
{
    mil_head_base *b = m->ctx;
    NCMI_CHECK(b != NULL, "mil_store_attention: model without a MIL context");
    const size_t need = (size_t)n * (size_t)k;
    NCMI_CHECK(a->numel == need, "mil_store_attention: %zu weights for n %d x k %d", a->numel, n, k);
    if (a->device == NN_DEVICE_CPU) {
        if (!layout) {
            mil_store_attention(m, a->data, n, k);
            return;
        }
        host_cap(&b->attn, &b->attn_cap, need);
        if (need) layout(b, a->data, b->attn, n, k);
        b->attn_n = n;
        b->attn_k = k;
        b->attn_pending = 0;
        return;
    }
    /* the host buffer exists (mil_last_attention's non-NULL test) and is big enough */
    host_cap(&b->attn, &b->attn_cap, need);
    if (need > b->attn_dev_cap) {
        nn_cuda_free(b->attn_dev);
        b->attn_dev = nn_cuda_alloc(need * sizeof(float));
        b->attn_dev_cap = need;
    }
    if (need) nn_cuda_d2d(b->attn_dev, a->data, need * sizeof(float)); /* stream-ordered, no wait */
    b->attn_n = n;
    b->attn_k = k;
    b->attn_layout = layout;
    b->attn_pending = need > 0;
}

void mil_head_base_release(mil_head_base *b)
{
    if (!b) return;
    free(b->attn);
    free(b->attn_tmp);
    if (b->attn_dev) nn_cuda_free(b->attn_dev);
    b->attn = b->attn_tmp = b->attn_dev = NULL;
    b->attn_cap = b->attn_tmp_cap = b->attn_dev_cap = 0;
    b->attn_pending = 0;
}

void mil_opts_default(mil_opts *o, mil_head_kind kind)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->d_feat = 1024;
    o->d_inner = 512;
    o->attn_hidden = 128;
    o->n_instance_layers = 0;
    o->instance_dropout = 0.f;
    o->gated = 1;
    o->dropout = 0.1f;
    o->aem_lambda = 0.1f;
    o->aem_topk = 0;
    o->aem_cosine = 0;
    o->transmil_landmarks = 0; /* 0: d_inner / 2, the official rule (256 for 512) */
    o->transmil_pinv_iters = 6;
    o->transmil_legacy_slice = 0;
    o->asmil_tokens = 8;
    o->asmil_heads = 8;
    o->asmil_drop = 0;
    o->asmil_kd_T = 0.5f;
    o->asmil_kd_weight = 1.0f;
    o->asmil_ema = 0.999f;
    o->asmil_anchor_frozen = 0;
}

static const char *const head_names[] = {"abmil", "transmil", "aem", "asmil"};

int mil_head_kind_parse(const char *name, mil_head_kind *kind)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, head_names[i]) == 0) {
            *kind = (mil_head_kind)i;
            return 0;
        }
    return ncmi_error_set("unknown MIL head '%s' (abmil, transmil, aem, asmil)", name);
}

const char *mil_head_kind_name(mil_head_kind kind)
{
    return (unsigned)kind < 4 ? head_names[kind] : "?";
}
