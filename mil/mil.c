/* Shared pieces of the MIL heads: options, names, dispatch, attention buffer. */
#include "mil.h"

#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

const float *mil_last_attention(const tr_model *m, int *n, int *k)
{
    const mil_head_base *b = m->ctx;
    if (!b || !b->attn || b->attn_n <= 0) {
        if (n) *n = 0;
        if (k) *k = 0;
        return NULL;
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
    if (need > b->attn_cap) {
        float *p = realloc(b->attn, (need ? need : 1) * sizeof *p);
        NCMI_CHECK(p != NULL, "out of memory (%zu attention weights)", need);
        b->attn = p;
        b->attn_cap = need;
    }
    if (need) memcpy(b->attn, a, need * sizeof *a);
    b->attn_n = n;
    b->attn_k = k;
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
