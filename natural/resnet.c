/* torchvision ResNets on nn/ (see resnet.h).
 *
 *   stem     conv1 7x7/2 p3 (CIFAR: 3x3/1 p1), bn1, relu, maxpool 3/2 p1 (CIFAR: none)
 *   layerL   blocks[L] of BasicBlock (18, 34) or Bottleneck (50, 101), planes
 *            64/128/256/512 (w/2w/4w/8w at width w), stride 1/2/2/2 on the first
 *            block of the layer (Bottleneck: on its 3x3 conv2, torchvision's v1.5); downsample
 *            (1x1 conv with the block's stride + bn) where the shape changes
 *   head     global average pool [N, planes * expansion], fc when num_classes > 0
 */
#include "resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rn_weights_sha256 hashes the float32 bytes in memory: little-endian hosts only"
#endif

static const int BLOCKS[4][4] = {
    {2, 2, 2, 2},  /* 18 */
    {3, 4, 6, 3},  /* 34 */
    {3, 4, 6, 3},  /* 50 */
    {3, 4, 23, 3}, /* 101 */
};

static int arch_bottleneck(rn_arch a) { return a == RN_ARCH_50 || a == RN_ARCH_101; }

const char *rn_arch_name(rn_arch a)
{
    switch (a) {
    case RN_ARCH_18: return "resnet18";
    case RN_ARCH_34: return "resnet34";
    case RN_ARCH_50: return "resnet50";
    case RN_ARCH_101: return "resnet101";
    }
    return "resnet?";
}

int rn_config_check(const rn_config *c)
{
    if ((int)c->arch < RN_ARCH_18 || (int)c->arch > RN_ARCH_101)
        return ncmi_error_set("resnet: unknown architecture %d", (int)c->arch);
    if (c->n_stages < 1 || c->n_stages > 4)
        return ncmi_error_set("resnet: n_stages %d (1..4; 3 stops after layer3)", c->n_stages);
    if (c->num_classes < 0)
        return ncmi_error_set("resnet: num_classes %d (0: no fc)", c->num_classes);
    if (c->width < 0 || c->width > 4096)
        return ncmi_error_set("resnet: width %d (1..4096; 0: torchvision's 64)", c->width);
    if (c->in_channels < 0 || c->in_channels > 64)
        return ncmi_error_set("resnet: in_channels %d (1..64; 0: 3)", c->in_channels);
    return 0;
}

char *rn_config_describe(const rn_config *c, char *buf, size_t n)
{
    char fc[48], extra[64] = "";
    if (c->num_classes > 0)
        snprintf(fc, sizeof fc, "fc with %d classes", c->num_classes);
    else
        snprintf(fc, sizeof fc, "no fc");
    const int w = c->width > 0 ? c->width : 64, ic = c->in_channels > 0 ? c->in_channels : 3;
    size_t k = 0;
    if (w != 64) k += (size_t)snprintf(extra + k, sizeof extra - k, ", width %d", w);
    if (ic != 3)
        snprintf(extra + k, sizeof extra - k, ", %d input channel%s", ic, ic == 1 ? "" : "s");
    snprintf(buf, n, "%s (%s stem, %d stage%s%s, %s)", rn_arch_name(c->arch),
             c->cifar_stem ? "CIFAR" : "ImageNet", c->n_stages, c->n_stages == 1 ? "" : "s", extra,
             fc);
    return buf;
}

const char *const rn_encoder_names[] = {"resnet50_trunc", "resnet50", "resnet18", "resnet34",
                                        "resnet101", NULL};

int rn_config_from_name(rn_config *c, const char *name)
{
    static const struct { const char *name; rn_arch arch; int stages; } presets[] = {
        {"resnet50_trunc", RN_ARCH_50, 3}, {"resnet50", RN_ARCH_50, 4},
        {"resnet18", RN_ARCH_18, 4},       {"resnet34", RN_ARCH_34, 4},
        {"resnet101", RN_ARCH_101, 4},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (name && strcmp(name, presets[i].name) == 0) {
            memset(c, 0, sizeof *c);
            c->arch = presets[i].arch;
            c->cifar_stem = 0;
            c->n_stages = presets[i].stages;
            c->num_classes = 0;
            c->width = 64;
            c->in_channels = 3;
            return 0;
        }
    }
    char known[256] = "";
    for (int i = 0; rn_encoder_names[i]; i++) {
        if (i) strncat(known, ", ", sizeof known - strlen(known) - 1);
        strncat(known, rn_encoder_names[i], sizeof known - strlen(known) - 1);
    }
    return ncmi_error_set("unknown encoder '%s' (known: %s)", name ? name : "(null)", known);
}

/* ---- construction ---- */

static void conv_init(rn_conv *cv, nn_params *P, const char *prefix, int cin, int cout, int k,
                      int stride, int padding, nn_rng *rng)
{
    cv->cin = cin;
    cv->cout = cout;
    cv->k = k;
    cv->stride = stride;
    cv->padding = padding;
    cv->bias = NULL;
    cv->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_WEIGHT, 4, (int[]){cout, cin, k, k});
    nn_init_kaiming_normal_fan_out(cv->weight, rng);
}

int rn_init(rn_model *m, const rn_config *c, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    if (rn_config_check(c) != 0) return -1;
    m->cfg = *c;
    nn_params_init(&m->P);
    nn_params *P = &m->P;
    const int bott = arch_bottleneck(c->arch), exp = bott ? 4 : 1;
    const int W = c->width > 0 ? c->width : 64, IC = c->in_channels > 0 ? c->in_channels : 3;
    m->width = W;
    m->in_channels = IC;

    if (c->cifar_stem)
        conv_init(&m->conv1, P, "conv1", IC, W, 3, 1, 1, rng);
    else
        conv_init(&m->conv1, P, "conv1", IC, W, 7, 2, 3, rng);
    nn_batchnorm2d_m_init(&m->bn1, P, "bn1", W);

    int nb = 0;
    for (int L = 0; L < c->n_stages; L++) nb += BLOCKS[c->arch][L];
    m->blocks = calloc((size_t)nb, sizeof *m->blocks);
    NCMI_CHECK(m->blocks != NULL, "out of memory");
    m->n_blocks = nb;

    int inplanes = W, bi = 0;
    for (int L = 0; L < c->n_stages; L++) {
        const int planes = W << L, stride0 = L == 0 ? 1 : 2;
        for (int j = 0; j < BLOCKS[c->arch][L]; j++, bi++) {
            rn_block *b = &m->blocks[bi];
            const int stride = j == 0 ? stride0 : 1;
            char pre[64], name[80];
            snprintf(pre, sizeof pre, "layer%d.%d", L + 1, j);
            b->bottleneck = bott;
            if (bott) {
                const int width = planes;
                snprintf(name, sizeof name, "%s.conv1", pre);
                conv_init(&b->conv[0], P, name, inplanes, width, 1, 1, 0, rng);
                snprintf(name, sizeof name, "%s.bn1", pre);
                nn_batchnorm2d_m_init(&b->bn[0], P, name, width);
                snprintf(name, sizeof name, "%s.conv2", pre);
                conv_init(&b->conv[1], P, name, width, width, 3, stride, 1, rng);
                snprintf(name, sizeof name, "%s.bn2", pre);
                nn_batchnorm2d_m_init(&b->bn[1], P, name, width);
                snprintf(name, sizeof name, "%s.conv3", pre);
                conv_init(&b->conv[2], P, name, width, planes * exp, 1, 1, 0, rng);
                snprintf(name, sizeof name, "%s.bn3", pre);
                nn_batchnorm2d_m_init(&b->bn[2], P, name, planes * exp);
            } else {
                snprintf(name, sizeof name, "%s.conv1", pre);
                conv_init(&b->conv[0], P, name, inplanes, planes, 3, stride, 1, rng);
                snprintf(name, sizeof name, "%s.bn1", pre);
                nn_batchnorm2d_m_init(&b->bn[0], P, name, planes);
                snprintf(name, sizeof name, "%s.conv2", pre);
                conv_init(&b->conv[1], P, name, planes, planes, 3, 1, 1, rng);
                snprintf(name, sizeof name, "%s.bn2", pre);
                nn_batchnorm2d_m_init(&b->bn[1], P, name, planes);
            }
            if (stride != 1 || inplanes != planes * exp) {
                b->has_down = 1;
                snprintf(name, sizeof name, "%s.downsample.0", pre);
                conv_init(&b->down, P, name, inplanes, planes * exp, 1, stride, 0, rng);
                snprintf(name, sizeof name, "%s.downsample.1", pre);
                nn_batchnorm2d_m_init(&b->down_bn, P, name, planes * exp);
            }
            inplanes = planes * exp;
        }
    }
    m->out_dim = inplanes;
    if (c->num_classes > 0) nn_linear_m_init(&m->fc, P, "fc", inplanes, c->num_classes, 1, rng);
    m->sha256[0] = '\0';
    return 0;
}

void rn_free(rn_model *m)
{
    if (!m) return;
    nn_params_free(&m->P);
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

typedef struct {
    nn_graph *g;
    int free_dead; /* no_grad graph: free intermediates as they die */
} fwd_ctx;

/* Keep only t among the nodes made since mark (no_grad graphs). */
static nn_tensor *settle(fwd_ctx *f, size_t mark, nn_tensor *t)
{
    if (f->free_dead) nn_graph_truncate(f->g, mark, t);
    return t;
}

/* conv (+ bias when folded) -> batchnorm (unless folded) -> relu (if relu) */
static nn_tensor *conv_bn(fwd_ctx *f, const rn_model *m, const rn_conv *cv, nn_batchnorm2d_m *bn,
                          nn_tensor *x, int training, int relu)
{
    nn_graph *g = f->g;
    size_t mark = nn_graph_size(g);
    nn_tensor *t = nn_conv2d(g, x, cv->weight, cv->bias, cv->stride, cv->padding, 1, 1);
    if (!m->folded) t = settle(f, mark, nn_batchnorm2d_m_forward(g, bn, t, training));
    if (relu) {
        nn_tensor *r = nn_relu(g, t);
        /* the batch norm's output: its backward reads its input and ReLU's
           its output, so it is dead once ReLU has read it (nn_release;
           before settle, which under no_grad frees it with the node) */
        nn_release(g, t);
        t = settle(f, mark, r);
    }
    return t;
}

static nn_tensor *block_forward(fwd_ctx *f, const rn_model *m, rn_block *b, nn_tensor *x,
                                int training)
{
    nn_graph *g = f->g;
    size_t mark = nn_graph_size(g);
    nn_tensor *t = conv_bn(f, m, &b->conv[0], &b->bn[0], x, training, 1);
    t = settle(f, mark, t);
    if (b->bottleneck) {
        t = settle(f, mark, conv_bn(f, m, &b->conv[1], &b->bn[1], t, training, 1));
        t = settle(f, mark, conv_bn(f, m, &b->conv[2], &b->bn[2], t, training, 0));
    } else {
        t = settle(f, mark, conv_bn(f, m, &b->conv[1], &b->bn[1], t, training, 0));
    }
    nn_tensor *id = x;
    if (b->has_down) {
        size_t m2 = nn_graph_size(g);
        id = settle(f, m2, conv_bn(f, m, &b->down, &b->down_bn, x, training, 0));
    }
    nn_tensor *s = nn_add(g, t, id);
    nn_tensor *r = nn_relu(g, s);
    nn_release(g, s); /* read backward by neither the add nor the ReLU */
    return settle(f, mark, r);
}

nn_tensor *rn_forward(rn_model *m, nn_graph *g, nn_tensor *x, int training)
{
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim == 4 && x->shape[1] == m->in_channels, "rn_forward: x %s: need [N,%d,H,W]",
               sx, m->in_channels);
    NCMI_CHECK(!(training && m->folded),
               "rn_forward: training forward of a model whose batchnorm was folded (inference only)");
    fwd_ctx f = {.g = g, .free_dead = nn_graph_no_grad(g)};
    size_t mark = nn_graph_size(g);
    nn_tensor *h = conv_bn(&f, m, &m->conv1, &m->bn1, x, training, 1);
    if (!m->cfg.cifar_stem) h = settle(&f, mark, nn_maxpool2d(g, h, 3, 2, 1));
    for (int i = 0; i < m->n_blocks; i++)
        h = settle(&f, mark, block_forward(&f, m, &m->blocks[i], h, training));
    return settle(&f, mark, nn_global_avgpool(g, h));
}

nn_tensor *rn_logits(rn_model *m, nn_graph *g, nn_tensor *z)
{
    NCMI_CHECK(m->cfg.num_classes > 0 && m->fc.weight, "rn_logits: the model has no fc (num_classes 0)");
    return nn_linear(g, z, m->fc.weight, m->fc.bias);
}

/* ---- batchnorm folding ---- */

static void fold_one(rn_model *m, rn_conv *cv, const nn_batchnorm2d_m *bn, const char *wname)
{
    const int C = cv->cout;
    size_t per = cv->weight->numel / (size_t)C;
    float *w = nn_host_view(cv->weight);
    float *gm = nn_host_view(bn->weight), *bt = nn_host_view(bn->bias);
    float *mu = nn_host_view(bn->running_mean), *var = nn_host_view(bn->running_var);
    float *bias = malloc((size_t)C * sizeof(float));
    NCMI_CHECK(bias != NULL, "out of memory");
    for (int c = 0; c < C; c++) {
        double k = (double)gm[c] / sqrt((double)var[c] + (double)bn->eps);
        for (size_t i = 0; i < per; i++) w[c * per + i] = (float)((double)w[c * per + i] * k);
        bias[c] = (float)((double)bt[c] - (double)mu[c] * k);
    }
    if (w != cv->weight->data) nn_tensor_from_host(cv->weight, w);
    nn_host_release(cv->weight, w);
    nn_host_release(bn->weight, gm);
    nn_host_release(bn->bias, bt);
    nn_host_release(bn->running_mean, mu);
    nn_host_release(bn->running_var, var);
    /* "<conv>.weight" -> "<conv>.bias" */
    char name[NN_NAME_MAX];
    size_t len = strlen(wname);
    NCMI_CHECK(len > 7 && strcmp(wname + len - 7, ".weight") == 0, "fold: bad name %s", wname);
    snprintf(name, sizeof name, "%.*s.bias", (int)(len - 7), wname);
    cv->bias = nn_params_add(&m->P, name, NN_PARAM_BUFFER, 1, (int[]){C});
    nn_tensor_from_host(cv->bias, bias);
    if (cv->weight->device != NN_DEVICE_CPU) nn_tensor_move(cv->bias, cv->weight->device);
    free(bias);
}

void rn_fold_bn(rn_model *m)
{
    if (m->folded) return;
    fold_one(m, &m->conv1, &m->bn1, m->conv1.weight->name);
    for (int i = 0; i < m->n_blocks; i++) {
        rn_block *b = &m->blocks[i];
        for (int j = 0; j < (b->bottleneck ? 3 : 2); j++)
            fold_one(m, &b->conv[j], &b->bn[j], b->conv[j].weight->name);
        if (b->has_down) fold_one(m, &b->down, &b->down_bn, b->down.weight->name);
    }
    m->folded = 1;
}

/* ---- weights hash ---- */

static int is_counter(const char *name)
{
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && strcmp(name + n - k, "num_batches_tracked") == 0;
}

typedef struct { const char *name; int i; } name_idx;
static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const name_idx *)a)->name, ((const name_idx *)b)->name);
}

void rn_weights_sha256_compute(const rn_model *m, char hex[NN_SHA256_HEX])
{
    const nn_params *P = &m->P;
    name_idx *idx = malloc((size_t)(P->n ? P->n : 1) * sizeof *idx);
    NCMI_CHECK(idx != NULL, "out of memory");
    int n = 0;
    for (int i = 0; i < P->n; i++)
        if (!is_counter(P->t[i]->name)) idx[n++] = (name_idx){P->t[i]->name, i};
    qsort(idx, (size_t)n, sizeof *idx, cmp_names);
    nn_sha256 s;
    nn_sha256_init(&s);
    for (int k = 0; k < n; k++) {
        const nn_tensor *t = P->t[idx[k].i];
        char shape[96] = "";
        for (int d = 0; d < t->ndim; d++) {
            size_t l = strlen(shape);
            snprintf(shape + l, sizeof shape - l, d ? ",%d" : "%d", t->shape[d]);
        }
        nn_sha256_update(&s, t->name, strlen(t->name) + 1);
        nn_sha256_update(&s, shape, strlen(shape) + 1);
        float *h = nn_host_view(t);
        nn_sha256_update(&s, h, t->numel * sizeof(float));
        nn_host_release(t, h);
    }
    uint8_t d[NN_SHA256_BYTES];
    nn_sha256_final(&s, d);
    nn_sha256_hex(d, hex);
    free(idx);
}

const char *rn_weights_sha256(const rn_model *m) { return m->sha256; }

/* ---- loading ---- */

/* What a file's tensor names and shapes say about its architecture, into buf. */
static void describe_file(const nn_safetensors *st, char *buf, size_t n)
{
    const nn_st_entry *c1 = nn_st_find(st, "conv1.weight");
    if (!c1 || !nn_st_find(st, "layer1.0.conv1.weight")) {
        const char *first = st->n ? st->entries[0].name : "(none)";
        int prefixed = strncmp(first, "module.", 7) == 0 || strncmp(first, "model.", 6) == 0 ||
                       strncmp(first, "backbone.", 9) == 0;
        snprintf(buf, n, "the file is not a torchvision ResNet state_dict (no %s; first tensor '%s'%s)",
                 c1 ? "'layer1.0.conv1.weight'" : "'conv1.weight'", first,
                 prefixed ? ": names carry a prefix, strip it" : "");
        return;
    }
    int bott = nn_st_find(st, "layer1.0.conv3.weight") != NULL;
    int cnt[4];
    for (int L = 0; L < 4; L++) {
        int j = 0;
        char name[64];
        for (;; j++) {
            snprintf(name, sizeof name, "layer%d.%d.conv1.weight", L + 1, j);
            if (!nn_st_find(st, name)) break;
        }
        cnt[L] = j;
    }
    const char *arch = NULL;
    static const struct { int b, c[4]; const char *name; } known[] = {
        {0, {2, 2, 2, 2}, "resnet18"},  {0, {3, 4, 6, 3}, "resnet34"},
        {1, {3, 4, 6, 3}, "resnet50"},  {1, {3, 4, 23, 3}, "resnet101"},
        {1, {3, 8, 36, 3}, "resnet152"},
    };
    int stages = 0;
    while (stages < 4 && cnt[stages] > 0) stages++;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        int same = known[i].b == bott;
        for (int L = 0; L < stages; L++) same = same && known[i].c[L] == cnt[L];
        if (same && stages > 0) {
            arch = known[i].name;
            break;
        }
    }
    char blocks[64];
    snprintf(blocks, sizeof blocks, "%s blocks %d,%d,%d,%d", bott ? "bottleneck" : "basic", cnt[0],
             cnt[1], cnt[2], cnt[3]);
    const char *stem = c1->ndim == 4 && c1->shape[2] == 3 ? "CIFAR" : "ImageNet";
    const nn_st_entry *fc = nn_st_find(st, "fc.weight");
    char fcs[48];
    if (fc && fc->ndim == 2)
        snprintf(fcs, sizeof fcs, "fc with %lld classes", (long long)fc->shape[0]);
    else
        snprintf(fcs, sizeof fcs, "no fc");
    snprintf(buf, n, "the file looks like %s%s (%s, %s stem, %s)", arch ? arch : "a ResNet",
             arch && stages < 4 ? " truncated" : "", blocks, stem, fcs);
}

static int load_error(const rn_model *m, const nn_safetensors *st, const char *what)
{
    char exp[160], file[256];
    rn_config_describe(&m->cfg, exp, sizeof exp);
    describe_file(st, file, sizeof file);
    return ncmi_error_set("%s; expected torchvision %s weights, %s", what, exp, file);
}

int rn_load(rn_model *m, const char *path)
{
    if (m->folded)
        return ncmi_error_set("%s: cannot load weights into a model whose batchnorm was folded",
                              path);
    nn_safetensors st;
    if (nn_st_open(&st, path) != 0) return -1;
    nn_params *P = &m->P;
    /* 1. validate every tensor the configuration uses */
    for (int i = 0; i < P->n; i++) {
        const nn_tensor *t = P->t[i];
        const nn_st_entry *e = nn_st_find(&st, t->name);
        char what[512];
        if (!e) {
            if (is_counter(t->name)) continue;
            snprintf(what, sizeof what, "%s: tensor '%s' missing from the file", path, t->name);
            load_error(m, &st, what);
            nn_st_close(&st);
            return -1;
        }
        int isfloat = e->dtype == NN_ST_F32 || e->dtype == NN_ST_F16 || e->dtype == NN_ST_BF16;
        if (!isfloat && !is_counter(t->name)) {
            snprintf(what, sizeof what, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                     path, t->name, nn_st_dtype_name(e->dtype));
            load_error(m, &st, what);
            nn_st_close(&st);
            return -1;
        }
        if (nn_st_check_shape(&st, e, t->ndim, t->shape) != 0) {
            /* a counter may be stored as [1] or [] */
            if (is_counter(t->name) && e->numel == 1) continue;
            snprintf(what, sizeof what, "%s", ncmi_error());
            load_error(m, &st, what);
            nn_st_close(&st);
            return -1;
        }
    }
    /* 2. copy (cannot fail: names, dtypes, shapes and byte ranges are checked) */
    for (int i = 0; i < P->n; i++) {
        nn_tensor *t = P->t[i];
        const nn_st_entry *e = nn_st_find(&st, t->name);
        if (!e) {
            nn_tensor_fill(t, 0.f); /* a missing num_batches_tracked, as PyTorch */
            continue;
        }
        float *h = t->device == NN_DEVICE_CPU ? t->data : malloc((t->numel ? t->numel : 1) * sizeof(float));
        NCMI_CHECK(h != NULL, "out of memory (%zu floats of %s)", t->numel, t->name);
        int rc = nn_st_read_f32(&st, t->name, h, t->numel, -1, NULL);
        NCMI_CHECK(rc == 0, "reading a validated tensor failed: %s", ncmi_error());
        if (h != t->data) {
            nn_tensor_from_host(t, h);
            free(h);
        }
    }
    nn_st_close(&st);
    rn_weights_sha256_compute(m, m->sha256);
    return 0;
}
