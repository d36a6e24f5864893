/* Weights move both ways between ncmi and PyTorch. The golden tests load
 * PyTorch's state_dicts into ncmi; this test goes the other way: an ABMIL
 * head + classifier built and saved by ncmi (nn_params_save) is loaded into
 * the official-named PyTorch module with load_state_dict(strict=True)
 * (tests/reference/interop_load_ncmi.py) and gives the same logits, z and
 * attention within 1e-4 relative. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mil/mil.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "test.h"

TEST(interop_ncmi_weights_load_in_pytorch_abmil)
{
    char *out = NULL;
    if (test_run("/usr/bin/python3 -c 'import torch, numpy'", &out) != 0) {
        free(out);
        SKIP("/usr/bin/python3 with torch and numpy not available");
    }
    free(out);
    const int d_feat = 12, d_inner = 8, hidden = 6, C = 3, N = 9;
    mil_opts o;
    mil_opts_default(&o, MIL_ABMIL);
    o.d_feat = d_feat;
    o.d_inner = d_inner;
    o.attn_hidden = hidden;
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    tr_model m;
    REQUIRE(mil_abmil_init(&m, &o, &rng) == 0, "%s", ncmi_error());
    nn_linear_m fc;
    nn_linear_m_init(&fc, m.params, m.classifier[0] ? m.classifier : "fc", d_inner, C, 1, &rng);

    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    nn_tensor *x = nn_tensor_new2(g, N, d_feat);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    nn_tensor *z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    nn_tensor *logits = nn_linear_m_forward(g, &fc, z);
    int an = 0, ak = 0;
    const float *alpha = mil_last_attention(&m, &an, &ak);
    REQUIRE(alpha && an == N && ak == 1, "attention %d x %d", an, ak);

    const char *wpath = test_tmp_path("abmil_ncmi.safetensors");
    const char *cpath = test_tmp_path("abmil_case.safetensors");
    REQUIRE(nn_params_save(m.params, wpath, NULL, NULL, 0) == 0, "%s", ncmi_error());
    nn_st_tensor ts[4] = {
        {"x", NN_ST_F32, 2, {N, d_feat}, x->data},
        {"z", NN_ST_F32, 2, {1, d_inner}, z->data},
        {"logits", NN_ST_F32, 2, {1, C}, logits->data},
        {"alpha", NN_ST_F32, 2, {1, N}, alpha},
    };
    char v0[16], v1[16], v2[16], v3[16];
    snprintf(v0, sizeof v0, "%d", d_feat);
    snprintf(v1, sizeof v1, "%d", d_inner);
    snprintf(v2, sizeof v2, "%d", C);
    snprintf(v3, sizeof v3, "%d", hidden);
    const char *mk[4] = {"d_feat", "d_inner", "n_class", "attn_hidden"};
    const char *mv[4] = {v0, v1, v2, v3};
    REQUIRE(nn_st_write(cpath, ts, 4, mk, mv, 4) == 0, "%s", ncmi_error());

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/reference/interop_load_ncmi.py abmil %s %s",
             wpath, cpath);
    int rc = test_run(cmd, &out);
    EXPECT(rc == 0, "PyTorch did not load ncmi's weights or disagrees (exit %d):\n%s", rc,
           out ? out : "");
    if (rc == 0) printf("    ncmi -> PyTorch ABMIL: %s", out ? out : "\n");
    free(out);
    nn_graph_free(g);
    tr_model_free(&m);
}
