/* The cross-entropy family of classification losses on logits [N,C] with
 * int32 labels in [0,C), each selectable by name, each the mean over the
 * batch (shape [1]). Used by the trainer's `linear + <loss>` head; NCMI, which
 * works on embeddings instead of logits, lives in nn/ncmi.h.
 *
 * Per row (f = logits[n], y = labels[n], lp = log_softmax(f), p_t = exp(lp_y)):
 *   ce               -lp_y
 *   label_smoothing  (1-eps)(-lp_y) + eps/C sum_c (-lp_c)        eps = 0.1
 *                    (PyTorch's label_smoothing; target (1-eps) onehot + eps/C)
 *   focal            -(1-p_t)^gamma lp_y                          gamma = 2
 *                    (Lin et al. 2017, multi-class, no alpha weighting)
 *   poly1            -lp_y + eps (1-p_t)                          eps = 1
 *                    (Leng et al. 2022, PolyLoss Poly-1)
 *   square           (1/C)[k (f_y - M)^2 + sum_{j!=y} f_j^2]      k = 1, M = 1
 *                    (Hui & Belkin 2021, square loss on the logits with their
 *                    rescaling parameters k and M)
 *   squentropy       -lp_y + 1/(C-1) sum_{j!=y} f_j^2
 *                    (Hui, Belkin & Wright 2023)
 *   anticlass        -lp_y + lambda * OCCE                        lambda = 1
 *                    (one-cold cross-entropy, Katsikas, Passalis & Tefas,
 *                    TNNLS 2025). As the authors' OCCELoss (losses.py of their
 *                    repository, cidl-auth/anticlasses, a.k.a.
 *                    katdimitris/Anticlasses):
 *                      r    = softmax(-f)             (over all C classes)
 *                      OCCE = -1/(C-1) sum_{j!=y} ln((C-1) r_j + 1e-7)
 *                    i.e. the cross-entropy between the uniform one-cold target
 *                    (1/(C-1) on every class but y, 0 on y) and the softmax of
 *                    the negated logits; the factor (C-1) and the 1e-7 are the
 *                    authors' (the factor only shifts the value by ln(C-1)).
 *                    Their README trains with w_ce = 1, w_occe = 1, hence lambda = 1.
 * and loss = mean_n row_n.
 *
 * ce and label_smoothing are nn_cross_entropy (nn/ops_loss.c). The other
 * losses are fused ops: the forward computes each row's value and its
 * gradient w.r.t. the logits in double (log-softmax with max shift), the
 * backward scales the saved gradient by the upstream gradient / N.
 *
 * Auxiliary terms: nn_loss_add_aux adds weight * term (a scalar tensor of the
 * same graph) to any loss; autograd carries both. This is where the MIL heads
 * add AEM's attention-entropy term and ASMIL's distillation term:
 *     loss = nn_loss_forward(g, &cfg, logits, y);
 *     loss = nn_loss_add_aux(g, loss, entropy_term, aem_weight);
 */
#ifndef NCMI_LOSS_H
#define NCMI_LOSS_H

#include "tensor.h"

typedef enum nn_loss_kind {
    NN_LOSS_CE = 0,
    NN_LOSS_LABEL_SMOOTHING,
    NN_LOSS_FOCAL,
    NN_LOSS_POLY1,
    NN_LOSS_SQUARE,
    NN_LOSS_SQUENTROPY,
    NN_LOSS_ANTICLASS,
    NN_LOSS_COUNT
} nn_loss_kind;

/* Names as written in configs: "ce", "label_smoothing", "focal", "poly1",
 * "square", "squentropy", "anticlass". Parse also accepts "cross_entropy",
 * "poly", "occe", "one_cold". Returns 0, or -1 with ncmi_error() listing the
 * valid names. */
int nn_loss_kind_parse(const char *name, nn_loss_kind *kind);
const char *nn_loss_kind_name(nn_loss_kind kind);

typedef struct nn_loss_cfg {
    nn_loss_kind kind;
    float smoothing;        /* label_smoothing: eps in [0,1], default 0.1 */
    float focal_gamma;      /* focal: gamma >= 0, default 2 */
    float poly_eps;         /* poly1: epsilon, default 1 */
    float square_k;         /* square: k > 0, default 1 */
    float square_M;         /* square: M, default 1 */
    float anticlass_weight; /* anticlass: lambda >= 0, default 1 */
} nn_loss_cfg;

/* Every hyper-parameter at its default, kind set. */
nn_loss_cfg nn_loss_cfg_default(nn_loss_kind kind);
/* 0, or -1 with ncmi_error() naming the bad hyper-parameter. */
int nn_loss_cfg_check(const nn_loss_cfg *cfg);

/* Mean loss over the batch, shape [1]. logits [N,C] (C >= 2), labels[N] in
 * [0,C). Programming errors (NCMI_CHECK, abort): a config that fails
 * nn_loss_cfg_check (check configs when they are read), labels out of range
 * (validated where they are loaded). */
nn_tensor *nn_loss_forward(nn_graph *g, const nn_loss_cfg *cfg, nn_tensor *logits,
                           const int *labels);

/* The individual losses (same contract). */
nn_tensor *nn_loss_focal(nn_graph *g, nn_tensor *logits, const int *labels, float gamma);
nn_tensor *nn_loss_poly1(nn_graph *g, nn_tensor *logits, const int *labels, float eps);
nn_tensor *nn_loss_square(nn_graph *g, nn_tensor *logits, const int *labels, float k, float M);
nn_tensor *nn_loss_squentropy(nn_graph *g, nn_tensor *logits, const int *labels);
nn_tensor *nn_loss_anticlass(nn_graph *g, nn_tensor *logits, const int *labels, float weight);

/* loss + weight * term (both scalars, numel 1, of graph g); returns a new
 * scalar [1]. Either may or may not require a gradient. */
nn_tensor *nn_loss_add_aux(nn_graph *g, nn_tensor *loss, nn_tensor *term, float weight);

#endif
