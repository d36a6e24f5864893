/* Optimizers, gradient clipping, checkpoints, parameter moves and the NCMI
 * loss on the GPU against the CPU reference: the same parameters and
 * gradients on both devices must give the same parameters, optimizer state,
 * norms, checkpoints and losses (scaled error <= 1e-6; the optimizer
 * kernels round as the CPU code does, so they normally agree bit for bit,
 * which is printed). */
#include <stdlib.h>
#include <string.h>

#include "../../nn/error.h"
#include "../../nn/ncmi.h"
#include "../../nn/optim.h"
#include "../../nn/params.h"
#include "../golden_io.h"
#include "gpu_check.h"

#define TOL 1e-6

/* ---- a small model: linear, a large vector, batch norm, a frozen weight ---- */

static void build(nn_params *P, uint64_t seed)
{
    nn_params_init(P);
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    nn_linear_m fc;
    nn_linear_m_init(&fc, P, "fc", 37, 11, 1, &rng);
    /* more than one block of the norm's partial sums, several grid strides of the steps */
    nn_tensor *big = nn_params_add(P, "big", NN_PARAM_WEIGHT, 1, (int[]){300001});
    nn_init_normal(big, 0.f, 1.f, &rng);
    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, P, "bn", 5);
    nn_init_uniform(bn.running_mean, -1.f, 1.f, &rng);
    bn.num_batches_tracked->data[0] = 7.f;
    nn_params_add(P, "frozen", NN_PARAM_WEIGHT, 1, (int[]){4}); /* never gets a gradient */
}

/* Gradients of step s (the same on every device): every weight but
 * "frozen", and the buffer bn.running_mean (buffers are never stepped). */
static void set_grads(nn_params *P, int s)
{
    for (int i = 0; i < P->n; i++) {
        nn_tensor *t = P->t[i];
        if (strcmp(t->name, "frozen") == 0) continue;
        if (P->kind[i] != NN_PARAM_WEIGHT && strcmp(t->name, "bn.running_mean") != 0) continue;
        nn_rng rng;
        nn_rng_seed(&rng, 1000u * (uint64_t)s + (uint64_t)i);
        float *h = malloc((t->numel ? t->numel : 1) * sizeof(float));
        nn_rng_fill_normal(&rng, h, t->numel, 0.f, 0.5f);
        float *gr = nn_tensor_grad(t);
        if (t->device == NN_DEVICE_CPU)
            memcpy(gr, h, t->numel * sizeof(float));
        else
            nn_cuda_h2d(gr, h, t->numel * sizeof(float));
        free(h);
    }
}

typedef struct optim_cfg {
    const char *name;
    int adam; /* 0 SGD, 1 AdamW, 2 Adam */
    float lr, momentum, dampening, wd;
    int nesterov;
} optim_cfg;

static const optim_cfg CFGS[] = {
    {"sgd momentum nesterov wd", 0, 0.1f, 0.9f, 0.f, 5e-4f, 1},
    {"sgd momentum dampening", 0, 0.05f, 0.8f, 0.1f, 1e-3f, 0},
    {"sgd plain wd", 0, 0.1f, 0.f, 0.f, 1e-2f, 0},
    {"adamw", 1, 1e-3f, 0.f, 0.f, 1e-2f, 0},
    {"adam l2", 2, 1e-3f, 0.f, 0.f, 5e-2f, 0},
};

static void make_opt(nn_optim *o, nn_params *P, const optim_cfg *c)
{
    if (c->adam == 2) {
        nn_optim_adam_init(o, P, c->lr, 0.9f, 0.999f, 1e-8f, c->wd); /* L2 weight decay */
    } else if (c->adam) {
        nn_optim_adamw_init(o, P, c->lr, 0.9f, 0.999f, 1e-8f, c->wd);
    } else {
        nn_optim_sgd_init(o, P, c->lr, c->momentum, c->wd, c->nesterov);
        o->dampening = c->dampening;
    }
}

/* Steps s0..s1-1 with a varying lr (the host factors change every step). */
static void run_steps(nn_optim *o, const optim_cfg *c, int s0, int s1)
{
    for (int s = s0; s < s1; s++) {
        set_grads(o->params, s);
        o->lr = c->lr * (1.f - 0.1f * (float)s);
        nn_optim_step(o);
    }
}

/* Host copy of optimizer state w (0/1) of parameter i, or NULL. */
static float *state_host(const nn_optim *o, int i, int w)
{
    const float *s = w == 0 ? o->state1[i] : o->state2[i];
    if (!s) return NULL;
    size_t n = o->params->t[i]->numel;
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (o->state_dev[i] == NN_DEVICE_CPU)
        memcpy(h, s, n * sizeof(float));
    else
        nn_cuda_d2h(h, s, n * sizeof(float));
    return h;
}

/* Worst scaled error of B's parameters and state against the CPU run A;
 * *exact is cleared when any element differs at all. */
static double compare_runs(const nn_optim *A, const nn_optim *B, int *exact, const char *what)
{
    const nn_params *PA = A->params, *PB = B->params;
    double worst = 0;
    for (int i = 0; i < PA->n; i++) {
        const size_t n = PA->t[i]->numel;
        float *b = nn_host_view(PB->t[i]);
        double e = gpu_rel_err(b, PA->t[i]->data, n);
        if (memcmp(b, PA->t[i]->data, n * sizeof(float)) != 0) *exact = 0;
        nn_host_release(PB->t[i], b);
        if (e > TOL) test_fail_at(__FILE__, __LINE__, "%s: %s differs (%.3g)", what, PA->t[i]->name, e);
        if (e > worst) worst = e;
        for (int w = 0; w < 2; w++) {
            float *sa = state_host(A, i, w), *sb = state_host(B, i, w);
            if (!sa != !sb) {
                test_fail_at(__FILE__, __LINE__, "%s: state%d of %s exists on one device only", what,
                             w + 1, PA->t[i]->name);
                worst = INFINITY;
            } else if (sa) {
                e = gpu_rel_err(sb, sa, n);
                if (memcmp(sa, sb, n * sizeof(float)) != 0) *exact = 0;
                if (e > TOL)
                    test_fail_at(__FILE__, __LINE__, "%s: state%d of %s differs (%.3g)", what, w + 1,
                                 PA->t[i]->name, e);
                if (e > worst) worst = e;
            }
            free(sa);
            free(sb);
        }
    }
    return worst;
}

TEST(gpu_optim_steps_match_cpu)
{
    GPU_REQUIRE();
    for (size_t k = 0; k < sizeof CFGS / sizeof CFGS[0]; k++) {
        const optim_cfg *c = &CFGS[k];
        nn_params A, B;
        build(&A, 3);
        build(&B, 3);
        nn_params_to_device(&B, NN_DEVICE_CUDA);
        nn_optim oa, ob;
        make_opt(&oa, &A, c);
        make_opt(&ob, &B, c);
        run_steps(&oa, c, 0, 1);
        run_steps(&ob, c, 0, 1);
        /* a step with existing state never waits for the device */
        long syncs = nn_cuda_host_syncs();
        run_steps(&oa, c, 1, 5);
        run_steps(&ob, c, 1, 5);
        EXPECT(nn_cuda_host_syncs() == syncs, "%s: the GPU steps synchronised %ld times", c->name,
               nn_cuda_host_syncs() - syncs);
        for (int i = 0; i < B.n; i++)
            if (ob.state1[i])
                EXPECT(ob.state_dev[i] == NN_DEVICE_CUDA, "%s: state of %s not on the GPU", c->name,
                       B.t[i]->name);
        int exact = 1;
        double e = compare_runs(&oa, &ob, &exact, c->name);
        printf("    %-26s 5 steps: worst scaled error %.2e%s\n", c->name, e, exact ? " (bit-identical)" : "");
        float fr[4];
        nn_tensor_to_host(nn_params_get(&B, "frozen"), fr);
        EXPECT(fr[0] == 0.f && fr[3] == 0.f && ob.state1[B.n - 1] == NULL, "%s: a weight without gradient was stepped", c->name);
        nn_optim_free(&oa);
        nn_optim_free(&ob);
        nn_params_free(&A);
        nn_params_free(&B);
    }
}

/* State made on the CPU follows its parameter to the GPU and back. */
TEST(gpu_optim_state_follows_params)
{
    GPU_REQUIRE();
    for (size_t k = 0; k < sizeof CFGS / sizeof CFGS[0]; k++) {
        const optim_cfg *c = &CFGS[k];
        nn_params A, B;
        build(&A, 5);
        build(&B, 5);
        nn_optim oa, ob;
        make_opt(&oa, &A, c);
        make_opt(&ob, &B, c);
        run_steps(&oa, c, 0, 6);
        run_steps(&ob, c, 0, 2);
        nn_params_to_device(&B, NN_DEVICE_CUDA);
        run_steps(&ob, c, 2, 5);
        nn_params_to_device(&B, NN_DEVICE_CPU);
        run_steps(&ob, c, 5, 6);
        for (int i = 0; i < B.n; i++)
            EXPECT(ob.state_dev[i] == NN_DEVICE_CPU, "%s: state of %s not back on the CPU", c->name,
                   B.t[i]->name);
        int exact = 1;
        compare_runs(&oa, &ob, &exact, c->name);
        nn_optim_free(&oa);
        nn_optim_free(&ob);
        nn_params_free(&A);
        nn_params_free(&B);
    }
}

TEST(gpu_clip_grad_norm_matches_cpu)
{
    GPU_REQUIRE();
    const float max_norms[] = {1.f, 1e6f};
    for (int k = 0; k < 2; k++)
        for (int async = 0; async < 2; async++) {
            nn_params A, B;
            build(&A, 9);
            nn_params_add(&A, "empty", NN_PARAM_WEIGHT, 1, (int[]){0});
            build(&B, 9);
            nn_params_add(&B, "empty", NN_PARAM_WEIGHT, 1, (int[]){0});
            nn_params_to_device(&B, NN_DEVICE_CUDA);
            set_grads(&A, 1);
            set_grads(&B, 1);
            const float na = nn_clip_grad_norm(&A, max_norms[k]);
            long syncs = nn_cuda_host_syncs();
            float nb = NAN;
            if (async)
                nn_clip_grad_norm_async(&B, max_norms[k]);
            else
                nb = nn_clip_grad_norm(&B, max_norms[k]);
            const long used = nn_cuda_host_syncs() - syncs;
            EXPECT(used == (async ? 0 : 1), "max_norm %g async %d: %ld host synchronisations",
                   (double)max_norms[k], async, used);
            if (!async) EXPECT(fabs((double)nb - na) <= TOL * na, "norm %.9g, CPU %.9g", (double)nb, (double)na);
            for (int i = 0; i < A.n; i++) {
                const nn_tensor *ta = A.t[i], *tb = B.t[i];
                if (!ta->grad) continue;
                float *ga = malloc((ta->numel ? ta->numel : 1) * sizeof(float));
                float *gb = malloc((ta->numel ? ta->numel : 1) * sizeof(float));
                nn_tensor_grad_to_host(ta, ga);
                nn_tensor_grad_to_host(tb, gb);
                const double e = gpu_rel_err(gb, ga, ta->numel);
                EXPECT(e <= TOL, "max_norm %g async %d: gradient of %s differs (%.3g)",
                       (double)max_norms[k], async, ta->name, e);
                free(ga);
                free(gb);
            }
            printf("    max_norm %-6g %s: norm %.6g\n", (double)max_norms[k], async ? "async" : "sync ",
                   (double)na);
            nn_params_free(&A);
            nn_params_free(&B);
        }
}

/* Every tensor of two safetensors files within TOL (and the same names). */
static void compare_files(const char *pa, const char *pb, const char *what)
{
    nn_safetensors a, b;
    REQUIRE(nn_st_open(&a, pa) == 0, "%s", ncmi_error());
    if (nn_st_open(&b, pb) != 0) {
        nn_st_close(&a);
        REQUIRE(0, "%s", ncmi_error());
    }
    EXPECT(a.n == b.n, "%s: %d tensors vs %d", what, a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        const char *name = a.entries[i].name;
        size_t na = 0, nb = 0;
        float *x = test_st_read_all(&a, name, &na), *y = test_st_read_all(&b, name, &nb);
        if (!x || !y || na != nb) {
            test_fail_at(__FILE__, __LINE__, "%s: tensor %s missing or of another size", what, name);
        } else {
            const double e = gpu_rel_err(y, x, na);
            EXPECT(e <= TOL, "%s: tensor %s differs (%.3g)", what, name, e);
        }
        free(x);
        free(y);
    }
    nn_st_close(&a);
    nn_st_close(&b);
}

static int same_bytes(const char *pa, const char *pb)
{
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

TEST(gpu_checkpoint_save_load_across_devices)
{
    GPU_REQUIRE();
    for (size_t k = 0; k < sizeof CFGS / sizeof CFGS[0]; k++) {
        const optim_cfg *c = &CFGS[k];
        const char *meta_k[] = {"k"}, *meta_v[] = {"v"};
        char *pa = test_tmp_path("ckpt_cpu_%zu.safetensors", k);
        char *pb = test_tmp_path("ckpt_gpu_%zu.safetensors", k);
        char *pc = test_tmp_path("ckpt_gpu_via_cpu_%zu.safetensors", k);
        nn_params A, B, C;
        build(&A, 11);
        build(&B, 11);
        build(&C, 99); /* other values: all overwritten by the load */
        nn_params_to_device(&B, NN_DEVICE_CUDA);
        nn_optim oa, ob, oc;
        make_opt(&oa, &A, c);
        make_opt(&ob, &B, c);
        make_opt(&oc, &C, c);
        run_steps(&oa, c, 0, 5);
        run_steps(&ob, c, 0, 5);
        REQUIRE(nn_checkpoint_save(pa, &A, &oa, meta_k, meta_v, 1) == 0, "%s", ncmi_error());
        REQUIRE(nn_checkpoint_save(pb, &B, &ob, meta_k, meta_v, 1) == 0, "%s", ncmi_error());
        /* the GPU checkpoint loads into CPU parameters and saves as the CPU run did */
        REQUIRE(nn_checkpoint_load(pb, &C, &oc) == 0, "%s", ncmi_error());
        REQUIRE(nn_checkpoint_save(pc, &C, &oc, meta_k, meta_v, 1) == 0, "%s", ncmi_error());
        compare_files(pa, pb, c->name);
        compare_files(pa, pc, c->name);
        printf("    %-26s GPU checkpoint %s the CPU one\n", c->name,
               same_bytes(pa, pb) ? "has the same bytes as" : "is within 1e-6 of");

        /* the CPU checkpoint resumes on the GPU (state loaded onto the device) */
        nn_params D;
        build(&D, 77);
        nn_params_to_device(&D, NN_DEVICE_CUDA);
        nn_optim od;
        make_opt(&od, &D, c);
        REQUIRE(nn_checkpoint_load(pa, &D, &od) == 0, "%s", ncmi_error());
        EXPECT(od.step == 5, "step %ld", od.step);
        for (int i = 0; i < D.n; i++)
            if (od.state1[i]) EXPECT(od.state_dev[i] == NN_DEVICE_CUDA, "state of %s loaded on the CPU", D.t[i]->name);
        EXPECT(nn_params_get(&D, "bn.num_batches_tracked")->data[0] == 7.f, "host_only counter not loaded");
        run_steps(&oa, c, 5, 7);
        run_steps(&od, c, 5, 7);
        int exact = 1;
        compare_runs(&oa, &od, &exact, c->name);

        nn_optim_free(&oa);
        nn_optim_free(&ob);
        nn_optim_free(&oc);
        nn_optim_free(&od);
        nn_params_free(&A);
        nn_params_free(&B);
        nn_params_free(&C);
        nn_params_free(&D);
    }
}

TEST(gpu_params_move_save_load_and_init)
{
    GPU_REQUIRE();
    nn_params A, B;
    build(&A, 21);
    build(&B, 21);
    nn_ncmi ma, mb;
    REQUIRE(nn_ncmi_init(&ma, &A, "ncmi", 3, 4, NULL, NULL, NULL) == 0, "%s", ncmi_error());
    REQUIRE(nn_ncmi_init(&mb, &B, "ncmi", 3, 4, NULL, NULL, NULL) == 0, "%s", ncmi_error());
    nn_params_to_device(&B, NN_DEVICE_CUDA);
    for (int i = 0; i < B.n; i++) {
        const int host = strcmp(B.t[i]->name, "bn.num_batches_tracked") == 0 ||
                         strcmp(B.t[i]->name, "ncmi.center_initialized") == 0;
        EXPECT(B.t[i]->device == (host ? NN_DEVICE_CPU : NN_DEVICE_CUDA), "%s on the %s", B.t[i]->name,
               B.t[i]->device == NN_DEVICE_CPU ? "CPU" : "GPU");
        EXPECT(B.host_only[i] == host, "%s: host_only %d", B.t[i]->name, B.host_only[i]);
    }
    /* saving from the GPU writes the same file */
    char *pa = test_tmp_path("params_cpu.safetensors"), *pb = test_tmp_path("params_gpu.safetensors");
    REQUIRE(nn_params_save(&A, pa, NULL, NULL, 0) == 0, "%s", ncmi_error());
    REQUIRE(nn_params_save(&B, pb, NULL, NULL, 0) == 0, "%s", ncmi_error());
    EXPECT(same_bytes(pa, pb), "params saved from the GPU differ from the CPU file");
    /* init schemes on a GPU tensor draw what they draw on the CPU */
    nn_tensor *wa = nn_params_get(&A, "fc.weight"), *wb = nn_params_get(&B, "fc.weight");
    nn_rng ra, rb;
    nn_rng_seed(&ra, 4);
    nn_rng_seed(&rb, 4);
    nn_init_kaiming_uniform(wa, 0.5f, &ra);
    nn_init_kaiming_uniform(wb, 0.5f, &rb);
    nn_init_xavier_normal(wa, 1.f, &ra);
    nn_init_xavier_normal(wb, 1.f, &rb);
    EXPECT(gpu_tensor_err(wb, wa) == 0, "init on the GPU differs");
    /* loading into GPU parameters */
    REQUIRE(nn_params_load(&B, pa, 1) == 0, "%s", ncmi_error());
    float *h = nn_host_view(wb);
    nn_params P0;
    build(&P0, 21);
    EXPECT(memcmp(h, nn_params_get(&P0, "fc.weight")->data, wb->numel * sizeof(float)) == 0,
           "load into a GPU tensor");
    nn_host_release(wb, h);
    nn_params_free(&P0);
    nn_ncmi_free(&ma);
    nn_ncmi_free(&mb);
    nn_params_free(&A);
    nn_params_free(&B);
}

/* ---- NCMI ---- */

/* One fused loss on the CPU (dev 0) or the GPU (dev 1) from the same state;
 * outputs on the host. */
typedef struct ncmi_run {
    float loss, last_cmi, last_gamma, flag;
    int skipped, has_gz, has_gx;
    float *gz, *gx, *center;
} ncmi_run;

static void ncmi_once(int gpu, const nn_ncmi_cfg *cfg, int N, int C, int D, const float *z0,
                      const int *y, int training, int initialised, ncmi_run *r)
{
    nn_params P;
    nn_params_init(&P);
    nn_ncmi m;
    float prior[64];
    for (int k = 0; k < C; k++) prior[k] = 1.f + (float)k;
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    NCMI_CHECK(nn_ncmi_init(&m, &P, "h", C, D, cfg, prior, &rng) == 0, "%s", ncmi_error());
    for (int j = 0; j < D; j++) m.center->data[j] = 0.1f * (float)j / D;
    m.center_init->data[0] = (float)initialised;
    for (size_t k = 0; k < m.xi->numel; k++) m.xi->data[k] += 0.3f * sinf((float)k);
    if (gpu) nn_params_to_device(&P, NN_DEVICE_CUDA);
    nn_tensor *zh = nn_tensor_from(NULL, 2, (int[]){N, D}, z0);
    nn_tensor *z = gpu ? nn_tensor_to(zh, NN_DEVICE_CUDA) : zh;
    z->requires_grad = 1;
    nn_graph *g = nn_graph_new();
    nn_tensor *L = nn_ncmi_loss(g, &m, z, y, training);
    NCMI_CHECK(L->device == z->device, "loss on another device");
    NCMI_CHECK(nn_backward(g, L) == 0, "%s", ncmi_error());
    nn_tensor_to_host(L, &r->loss);
    r->last_cmi = m.last_cmi;
    r->last_gamma = m.last_gamma;
    r->skipped = m.last_skipped;
    r->flag = m.center_init->data[0];
    r->has_gz = z->grad != NULL;
    r->has_gx = m.xi->grad != NULL;
    r->gz = calloc((size_t)N * D, sizeof(float));
    r->gx = calloc((size_t)C * D, sizeof(float));
    r->center = calloc((size_t)D, sizeof(float));
    nn_tensor_grad_to_host(z, r->gz);
    nn_tensor_grad_to_host(m.xi, r->gx);
    nn_tensor_to_host(m.center, r->center);
    nn_graph_free(g);
    if (z != zh) nn_tensor_free(z);
    nn_tensor_free(zh);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

static void ncmi_run_free(ncmi_run *r)
{
    free(r->gz);
    free(r->gx);
    free(r->center);
}

static double rel1(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30); }

TEST(gpu_ncmi_training_step_matches_cpu)
{
    GPU_REQUIRE();
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    /* small; rows wider than a block with many samples */
    const int shapes[][3] = {{16, 10, 32}, {300, 5, 300}, {1, 2, 3}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], C = shapes[s][1], D = shapes[s][2];
        int *y = malloc((size_t)N * sizeof *y);
        for (int i = 0; i < N; i++) y[i] = (int)nn_rng_below(&rng, (uint64_t)C);
        float *z0 = malloc((size_t)N * D * sizeof(float));
        nn_rng_fill_normal(&rng, z0, (size_t)N * D, 0.2f, 1.f);
        double worst = 0;
        for (int combo = 0; combo < 64; combo++) {
            nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
            cfg.simplex = (nn_ncmi_simplex)(combo & 1);
            cfg.gamma = (nn_ncmi_gamma)((combo >> 1) & 1);
            cfg.ratio = (nn_ncmi_ratio)((combo >> 2) & 1);
            cfg.centroids = (combo >> 3) & 1 ? NN_NCMI_CENTROIDS_FIXED : NN_NCMI_CENTROIDS_LEARNED;
            cfg.centering = !((combo >> 4) & 1);
            const int initialised = !((combo >> 5) & 1); /* 0: the first batch sets c */
            cfg.momentum = 0.9f;
            ncmi_run rc, rg;
            ncmi_once(0, &cfg, N, C, D, z0, y, 1, initialised, &rc);
            ncmi_once(1, &cfg, N, C, D, z0, y, 1, initialised, &rg);
            double e = rel1(rg.loss, rc.loss);
            e = fmax(e, rel1(rg.last_cmi, rc.last_cmi));
            e = fmax(e, rel1(rg.last_gamma, rc.last_gamma));
            e = fmax(e, gpu_rel_err(rg.gz, rc.gz, (size_t)N * D));
            e = fmax(e, gpu_rel_err(rg.gx, rc.gx, (size_t)C * D));
            EXPECT(e <= 1e-5, "shape %d combo %d: GPU vs CPU %.3g (loss %.9g vs %.9g)", s, combo, e,
                   (double)rg.loss, (double)rc.loss);
            EXPECT(memcmp(rg.center, rc.center, (size_t)D * sizeof(float)) == 0,
                   "shape %d combo %d: centre differs", s, combo);
            EXPECT(rg.flag == rc.flag && rg.skipped == rc.skipped && rg.has_gz == rc.has_gz &&
                       rg.has_gx == rc.has_gx,
                   "shape %d combo %d: flag %g/%g skipped %d/%d grads %d%d/%d%d", s, combo,
                   (double)rg.flag, (double)rc.flag, rg.skipped, rc.skipped, rg.has_gz, rg.has_gx,
                   rc.has_gz, rc.has_gx);
            if (e > worst) worst = e;
            ncmi_run_free(&rc);
            ncmi_run_free(&rg);
        }
        printf("    N %d C %d D %d: 64 combinations, worst scaled error %.2e\n", N, C, D, worst);
        free(y);
        free(z0);
    }
}

/* The single-bag first step is skipped on the GPU too: a constant loss on
 * the device, no gradient anywhere, c = the bag. A sample on the centre
 * gets no gradient. */
TEST(gpu_ncmi_skip_and_zero_norm)
{
    GPU_REQUIRE();
    const float zb[5] = {0.3f, -1.2f, 2.f, 0.7f, 0.1f};
    const int y1[1] = {1};
    ncmi_run rc, rg;
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    ncmi_once(0, &cfg, 1, 2, 5, zb, y1, 1, 0, &rc);
    ncmi_once(1, &cfg, 1, 2, 5, zb, y1, 1, 0, &rg);
    EXPECT(rg.skipped == 1 && rc.skipped == 1, "skipped GPU %d CPU %d", rg.skipped, rc.skipped);
    EXPECT(!rg.has_gz && !rg.has_gx, "the skipped step made gradients on the GPU");
    EXPECT(memcmp(rg.center, zb, sizeof zb) == 0, "c != the bag");
    EXPECT(rel1(rg.loss, rc.loss) <= 1e-5, "skipped loss %.9g vs %.9g", (double)rg.loss, (double)rc.loss);
    ncmi_run_free(&rc);
    ncmi_run_free(&rg);

    /* sample 0 on the centre (0.1 j / D, as ncmi_once sets it) */
    float z2[6] = {0.f, 0.1f / 3, 0.2f / 3, 2.f, 1.f, -1.f};
    const int y2[2] = {0, 1};
    ncmi_once(1, &cfg, 2, 2, 3, z2, y2, 0, 1, &rg);
    EXPECT(!rg.skipped && isfinite(rg.loss), "loss %g skipped %d", (double)rg.loss, rg.skipped);
    EXPECT(rg.gz[0] == 0.f && rg.gz[1] == 0.f && rg.gz[2] == 0.f, "sample on the centre got a gradient");
    EXPECT(fabs(rg.gz[3]) + fabs(rg.gz[4]) + fabs(rg.gz[5]) > 0, "the other sample got none");
    ncmi_run_free(&rg);
}

/* init_center, project and centroids with the state on the GPU. */
TEST(gpu_ncmi_eval_helpers_device_state)
{
    GPU_REQUIRE();
    const int C = 3, D = 4, n = 2;
    for (int sm = 0; sm < 2; sm++) {
        nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
        cfg.simplex = (nn_ncmi_simplex)sm;
        nn_params PA, PB;
        nn_params_init(&PA);
        nn_params_init(&PB);
        nn_ncmi a, b;
        REQUIRE(nn_ncmi_init(&a, &PA, "ncmi", C, D, &cfg, NULL, NULL) == 0, "%s", ncmi_error());
        REQUIRE(nn_ncmi_init(&b, &PB, "ncmi", C, D, &cfg, NULL, NULL) == 0, "%s", ncmi_error());
        nn_params_to_device(&PB, NN_DEVICE_CUDA);
        const float Z[12] = {1, 2, 3, 4, 5, 6, -1, 0, 2, 1, 0.5f, 3};
        REQUIRE(nn_ncmi_init_center(&a, Z, 3) == 0 && nn_ncmi_init_center(&b, Z, 3) == 0, "%s", ncmi_error());
        EXPECT(b.center_init->data[0] == 1.f, "flag");
        EXPECT(gpu_tensor_err(b.center, a.center) == 0, "init_center on the GPU differs");
        float zp[2][8], p[2][8], q[2][12];
        nn_ncmi_project(&a, Z, n, zp[0], p[0]);
        nn_ncmi_project(&b, Z, n, zp[1], p[1]);
        nn_ncmi_centroids(&a, q[0]);
        nn_ncmi_centroids(&b, q[1]);
        EXPECT(memcmp(zp[0], zp[1], sizeof zp[0]) == 0 && memcmp(p[0], p[1], sizeof p[0]) == 0,
               "project with device state differs");
        EXPECT(memcmp(q[0], q[1], sizeof q[0]) == 0, "centroids with device state differ");
        nn_ncmi_free(&a);
        nn_ncmi_free(&b);
        nn_params_free(&PA);
        nn_params_free(&PB);
    }
}
