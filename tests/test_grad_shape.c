/* Shape ops: finite-difference gradients for transpose, reshape (followed by
 * other ops), concat (incl. more inputs than NN_MAX_SRC), slice,
 * index_select with repeats, pad_rows and repeat_rows, plus forward layout
 * checks against hand-computed values. */
#include <math.h>
#include <string.h>

#include "../nn/cuda/k_shape.h"
#include "../nn/ops.h"
#include "gradcheck.h"
#include "test.h"

/* iparam[0], iparam[1]: the two axes */
static nn_tensor *f_transpose(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_transpose(g, in[0], c->iparam[0], c->iparam[1]);
}
/* [2,3,4] -> [6,-1] view, times w [6,4] */
static nn_tensor *f_reshape_mul(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_mul(g, nn_reshape(g, in[0], 2, (int[]){6, -1}), in[1]);
}
/* [2,3,4] -> [-1,2,2,3] view -> transpose(1,3) -> sum over axis 2;
 * plus the original x used again (two consumers of the shared data) */
static nn_tensor *f_reshape_chain(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    nn_tensor *v = nn_reshape(g, in[0], 4, (int[]){-1, 2, 2, 3});
    nn_tensor *t = nn_sum(g, nn_transpose(g, v, 1, 3), 2, 0); /* [2,3,2] */
    nn_tensor *r = nn_reshape(g, t, 1, (int[]){12});
    return nn_add(g, nn_scale(g, nn_reshape(g, in[0], 2, (int[]){2, 12}), 0.5f), nn_exp(g, r));
}
/* concat of all inputs along iparam[0] */
static nn_tensor *f_concat(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_concat(g, in, c->nin, c->iparam[0]);
}
/* 6 pieces (more than NN_MAX_SRC = 4), the last two requiring grad only
 * through pieces beyond the 4th: x[:,0:1], x[:,1:3], x*2, x[:,3:4], y, y */
static nn_tensor *f_concat_many(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    nn_tensor *x = in[0], *y = in[1];
    nn_tensor *p[6] = {nn_slice(g, x, 1, 0, 1), nn_slice(g, x, 1, 1, 3), nn_scale(g, x, 2.f),
                       nn_slice(g, x, -1, 3, 4), y, nn_exp(g, y)};
    return nn_concat(g, p, 6, 1);
}
/* only the 5th piece requires grad: the record must be completed past src[] */
static nn_tensor *f_concat_fifth(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    nn_tensor *k = in[1];
    nn_tensor *p[5] = {k, k, k, k, in[0]};
    return nn_concat(g, p, 5, 0);
}
/* iparam[0] axis, iparam[1] start, iparam[2] end */
static nn_tensor *f_slice(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_slice(g, in[0], c->iparam[0], c->iparam[1], c->iparam[2]);
}
/* indices in iparam[1..iparam[0]] */
static nn_tensor *f_index_select(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_index_select(g, in[0], c->iparam + 1, c->iparam[0]);
}
static nn_tensor *f_pad_rows(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_pad_rows(g, in[0], c->iparam[0], c->iparam[1], c->fparam[0]);
}
static nn_tensor *f_repeat_rows(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_repeat_rows(g, in[0], c->iparam[0]);
}

GRAD_TEST(transpose_2d, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_transpose,
          .iparam = {-1, -2})
GRAD_TEST(transpose_3d_0_2, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_transpose,
          .iparam = {0, 2})
GRAD_TEST(transpose_4d_1_3, .nin = 1, .ndim = {4}, .shape = {{2, 3, 2, 4}}, .fn = f_transpose,
          .iparam = {1, 3})
GRAD_TEST(transpose_4d_0_3, .nin = 1, .ndim = {4}, .shape = {{3, 2, 4, 5}}, .fn = f_transpose,
          .iparam = {0, 3})
GRAD_TEST(transpose_3d_0_1, .nin = 1, .ndim = {3}, .shape = {{5, 7, 3}}, .fn = f_transpose,
          .iparam = {0, 1})
GRAD_TEST(reshape_then_mul, .nin = 2, .ndim = {3, 2}, .shape = {{2, 3, 4}, {6, 4}},
          .fn = f_reshape_mul)
GRAD_TEST(reshape_chain, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_reshape_chain)
GRAD_TEST(concat_axis0, .nin = 3, .ndim = {2, 2, 2}, .shape = {{2, 3}, {1, 3}, {3, 3}},
          .fn = f_concat, .iparam = {0})
GRAD_TEST(concat_axis1_3d, .nin = 2, .ndim = {3, 3}, .shape = {{2, 1, 3}, {2, 4, 3}},
          .fn = f_concat, .iparam = {1})
GRAD_TEST(concat_last, .nin = 4, .ndim = {2, 2, 2, 2}, .shape = {{3, 1}, {3, 2}, {3, 1}, {3, 3}},
          .fn = f_concat, .iparam = {-1})
GRAD_TEST(concat_many, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 2}}, .fn = f_concat_many)
GRAD_TEST(concat_fifth_only, .nin = 2, .ndim = {2, 2}, .shape = {{2, 3}, {1, 3}},
          .fn = f_concat_fifth, .no_grad_mask = 2u)
GRAD_TEST(slice_axis1_3d, .nin = 1, .ndim = {3}, .shape = {{2, 5, 3}}, .fn = f_slice,
          .iparam = {1, 1, 4})
GRAD_TEST(slice_last_neg, .nin = 1, .ndim = {2}, .shape = {{3, 6}}, .fn = f_slice,
          .iparam = {-1, -4, -1})
GRAD_TEST(slice_axis0, .nin = 1, .ndim = {2}, .shape = {{5, 2}}, .fn = f_slice, .iparam = {0, 2, 5})
/* idx = [2, 0, 2, 1, 2]: row 2 picked three times, its gradient adds up */
GRAD_TEST(index_select_repeats, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_index_select,
          .iparam = {5, 2, 0, 2, 1, 2})
GRAD_TEST(index_select_3d, .nin = 1, .ndim = {3}, .shape = {{4, 2, 3}}, .fn = f_index_select,
          .iparam = {3, 3, 3, 0})
GRAD_TEST(pad_rows_2d, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_pad_rows,
          .iparam = {2, 1}, .fparam = {0.f})
GRAD_TEST(pad_rows_3d_value, .nin = 1, .ndim = {3}, .shape = {{2, 3, 2}}, .fn = f_pad_rows,
          .iparam = {1, 2}, .fparam = {0.5f})
/* 3 rows -> 8: rows 0,1,2,0,1,2,0,1 (cyclic beyond twice the length) */
GRAD_TEST(repeat_rows_2d, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_repeat_rows,
          .iparam = {8})
GRAD_TEST(repeat_rows_3d, .nin = 1, .ndim = {3}, .shape = {{2, 3, 2}}, .fn = f_repeat_rows,
          .iparam = {5})

static void expect_values(const nn_tensor *t, const float *e, size_t n, const char *what)
{
    REQUIRE(t->numel == n, "%s: numel %zu, expected %zu", what, t->numel, n);
    for (size_t i = 0; i < n; i++)
        EXPECT(t->data[i] == e[i], "%s[%zu] = %g, expected %g", what, i, (double)t->data[i],
               (double)e[i]);
}

TEST(shape_forward_layouts)
{
    nn_graph *g = nn_graph_new();
    float a[24];
    for (int i = 0; i < 24; i++) a[i] = (float)i;
    nn_tensor *x = nn_tensor_from(g, 3, (int[]){2, 3, 4}, a); /* arange(24).reshape(2,3,4) */

    /* x.transpose(0, 2): [4,3,2], out[k,j,i] = x[i,j,k] */
    nn_tensor *t = nn_transpose(g, x, 0, 2);
    REQUIRE(t->shape[0] == 4 && t->shape[1] == 3 && t->shape[2] == 2, "transpose shape");
    int bad = 0;
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++)
                if (t->data[(k * 3 + j) * 2 + i] != a[(i * 3 + j) * 4 + k]) bad++;
    EXPECT(bad == 0, "transpose: %d wrong elements", bad);

    /* reshape is a view */
    nn_tensor *r = nn_reshape(g, x, 2, (int[]){-1, 8});
    EXPECT(r->ndim == 2 && r->shape[0] == 3 && r->shape[1] == 8, "reshape -1 inference");
    EXPECT(r->data == x->data && r->owns_data == 0, "reshape must share data");

    /* x[:, 1:3, :] */
    nn_tensor *s = nn_slice(g, x, 1, 1, 3);
    const float es[16] = {4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23};
    expect_values(s, es, 16, "slice");

    /* cat([x[:, :1, :2], x[:, 2:, :2]], 1) via slices of a [2,3,4] -> along rows */
    nn_tensor *m = nn_tensor_from(g, 2, (int[]){2, 2}, (float[]){0, 1, 2, 3});
    nn_tensor *n3 = nn_tensor_from(g, 2, (int[]){2, 1}, (float[]){9, 8});
    nn_tensor *cat = nn_concat(g, (nn_tensor *[]){m, n3}, 2, 1);
    const float ec[6] = {0, 1, 9, 2, 3, 8};
    expect_values(cat, ec, 6, "concat axis 1");

    /* index_select(m, 0, [1,1,0]) */
    nn_tensor *is = nn_index_select(g, m, (int[]){1, 1, 0}, 3);
    const float ei[6] = {2, 3, 2, 3, 0, 1};
    expect_values(is, ei, 6, "index_select");

    /* F.pad(m, (0,0,1,2), value=-1) */
    nn_tensor *p = nn_pad_rows(g, m, 1, 2, -1.f);
    const float ep[10] = {-1, -1, 0, 1, 2, 3, -1, -1, -1, -1};
    expect_values(p, ep, 10, "pad_rows");

    /* cat([h, h[:, :add]]) with h = [[0,1],[2,3],[4,5]] rows, n_total 5 */
    nn_tensor *h = nn_tensor_from(g, 3, (int[]){1, 3, 2}, (float[]){0, 1, 2, 3, 4, 5});
    nn_tensor *rr = nn_repeat_rows(g, h, 5);
    REQUIRE(rr->ndim == 3 && rr->shape[1] == 5, "repeat_rows shape");
    const float er[10] = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3};
    expect_values(rr, er, 10, "repeat_rows");
    nn_graph_free(g);
}

TEST(reshape_view_backward)
{
    /* gradients through a view reach the base tensor exactly once */
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_from(NULL, 2, (int[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    x->requires_grad = 1;
    nn_tensor *v = nn_reshape(g, x, 1, (int[]){6});
    nn_tensor *loss = nn_sum_all(g, nn_mul(g, v, v)); /* sum x^2 */
    REQUIRE(nn_backward(g, loss) == 0, "backward failed");
    for (int i = 0; i < 6; i++) EXPECT_NEAR(x->grad[i], 2 * x->data[i], 0);
    nn_graph_free(g);
    EXPECT_NEAR(x->data[5], 6, 0); /* the base survives the view's release */
    nn_tensor_free(x);
}

/* The GPU transpose kernels find each output element's source with
 * nn_transpose_src (nn/cuda/k_shape.h); on the host it must reproduce the
 * CPU transpose for every rank and pair of axes. The map is built as
 * ops_shape.c's transpose_map builds it. */
TEST(transpose_src_matches_cpu)
{
    const int full[4] = {2, 3, 4, 5};
    float a[120];
    for (int i = 0; i < 120; i++) a[i] = (float)i;
    int bad = 0, checked = 0;
    for (int nd = 1; nd <= 4; nd++)
        for (int d0 = 0; d0 < nd; d0++)
            for (int d1 = 0; d1 < nd; d1++) {
                nn_graph *g = nn_graph_new();
                nn_tensor *x = nn_tensor_from(g, nd, full + 4 - nd, a);
                nn_tensor *y = nn_transpose(g, x, d0, d1);
                size_t xst[4], s = 1, ost[4];
                int os[4];
                for (int i = nd - 1; i >= 0; i--) {
                    xst[i] = s;
                    s *= (size_t)x->shape[i];
                }
                for (int i = 0; i < 4; i++) {
                    os[i] = 1;
                    ost[i] = 0;
                }
                for (int i = 0; i < nd; i++) {
                    int from = i == d0 ? d1 : (i == d1 ? d0 : i);
                    os[4 - nd + i] = x->shape[from];
                    // cppcheck-suppress uninitvar ; false positive: xst[0..nd) is set above for every from < nd
                    ost[4 - nd + i] = xst[from];
                }
                for (size_t o = 0; o < y->numel; o++, checked++)
                    if (y->data[o] != a[nn_transpose_src(o, os, ost)]) bad++;
                nn_graph_free(g);
            }
    EXPECT(bad == 0, "%d of %d elements differ", bad, checked);
}
