/* The training config schema (see train_config.h). */
#include "train_config.h"

#include <stddef.h>
#include <string.h>

#include "../nn/error.h"

#define OFF(f) offsetof(ncmi_train_config, f)

static const char *const data_kinds[] = {"synthetic", NULL};
static const char *const model_kinds[] = {"mlp", NULL};
static const char *const loss_kinds[] = {"ce", NULL};
static const char *const optim_names[] = {"sgd", "adamw", NULL};
static const char *const sched_kinds[] = {"constant", "multistep", "cosine", NULL};

/* key, type, default, help, offset, choices, bounds, lo, hi, list_len */
static const ncmi_cfg_key keys[] = {
    {"name", NCMI_CFG_STRING, "", "run name: the run folder is OUT/NAME/ (empty: the config file's base name)", OFF(name), NULL, 0, 0, 0, 0},
    {"seed", NCMI_CFG_INT, "0", "seed of every random draw (data, init, shuffling)", OFF(seed), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.kind", NCMI_CFG_ENUM, "synthetic", "dataset (synthetic: seeded Gaussian blobs)", OFF(data_kind), data_kinds, 0, 0, 0, 0},
    {"data.n_train", NCMI_CFG_INT, "600", "training samples (synthetic)", OFF(n_train), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.n_val", NCMI_CFG_INT, "300", "validation samples (synthetic)", OFF(n_val), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.n_classes", NCMI_CFG_INT, "3", "number of classes (synthetic)", OFF(n_classes), NULL, NCMI_CFG_MIN, 2, 0, 0},
    {"data.dim", NCMI_CFG_INT, "16", "input features per sample (synthetic)", OFF(dim), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.separation", NCMI_CFG_FLOAT, "3.0", "distance of the class means from the origin, in noise std (synthetic)", OFF(separation), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"model.kind", NCMI_CFG_ENUM, "mlp", "model (mlp: linear layers with ReLU between, tensors layers.I.weight and layers.I.bias)", OFF(model_kind), model_kinds, 0, 0, 0, 0},
    {"model.hidden", NCMI_CFG_INT_LIST, "[64, 64]", "hidden layer widths of the MLP ([] = a linear classifier)", OFF(hidden), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"loss.kind", NCMI_CFG_ENUM, "ce", "loss (ce: cross-entropy)", OFF(loss_kind), loss_kinds, 0, 0, 0, 0},
    {"loss.label_smoothing", NCMI_CFG_FLOAT, "0.0", "label smoothing of the cross-entropy (training only)", OFF(label_smoothing), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"optim.name", NCMI_CFG_ENUM, "sgd", "optimizer", OFF(optim_name), optim_names, 0, 0, 0, 0},
    {"optim.lr", NCMI_CFG_FLOAT, "0.1", "base learning rate", OFF(lr), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"optim.momentum", NCMI_CFG_FLOAT, "0.9", "SGD momentum", OFF(momentum), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"optim.nesterov", NCMI_CFG_BOOL, "false", "SGD Nesterov momentum", OFF(nesterov), NULL, 0, 0, 0, 0},
    {"optim.weight_decay", NCMI_CFG_FLOAT, "0.0005", "weight decay (SGD: L2 added to the gradient; AdamW: decoupled)", OFF(weight_decay), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"optim.betas", NCMI_CFG_FLOAT_LIST, "[0.9, 0.999]", "AdamW beta1, beta2", OFF(betas), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 2},
    {"optim.eps", NCMI_CFG_FLOAT, "1.0e-8", "AdamW epsilon", OFF(eps), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"schedule.kind", NCMI_CFG_ENUM, "constant", "learning-rate schedule, evaluated once per epoch", OFF(schedule_kind), sched_kinds, 0, 0, 0, 0},
    {"schedule.milestones", NCMI_CFG_INT_LIST, "[]", "multistep: epochs (counted after the warm-up) where the lr is multiplied by gamma (increasing, at most 16)", OFF(milestones), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"schedule.gamma", NCMI_CFG_FLOAT, "0.1", "multistep: factor at each milestone", OFF(gamma), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"schedule.min_lr", NCMI_CFG_FLOAT, "0.0", "cosine: the lr the half cycle ends at (after train.epochs)", OFF(min_lr), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"schedule.warmup_epochs", NCMI_CFG_FLOAT, "0.0", "linear warm-up: epoch e < w runs at lr*(e+1)/w; the schedule starts after it", OFF(warmup_epochs), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.epochs", NCMI_CFG_INT, "20", "epochs to train (with --resume: the total, counting those done)", OFF(epochs), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"train.batch_size", NCMI_CFG_INT, "32", "samples per step (the last batch of an epoch may be smaller)", OFF(batch_size), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"train.clip_grad_norm", NCMI_CFG_FLOAT, "0.0", "clip the global gradient norm to this (0 = off)", OFF(clip_grad_norm), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.threads", NCMI_CFG_INT, "0", "CPU threads (0 = OMP_NUM_THREADS or all cores); results are reproducible for a given count", OFF(threads), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"out", NCMI_CFG_STRING, "runs", "root folder of run folders (--out overrides it)", OFF(out), NULL, 0, 0, 0, 0},
};

const ncmi_cfg_schema ncmi_train_schema = {"ncmi training config", keys,
                                           (int)(sizeof keys / sizeof keys[0])};

int ncmi_train_config_check(const ncmi_train_config *c)
{
    if (c->name && (strchr(c->name, '/') || !strcmp(c->name, ".") || !strcmp(c->name, "..")))
        return ncmi_error_set("key 'name': '%s' is not a folder name (no '/', not '.' or '..')",
                              c->name);
    if (c->milestones.n > 16)
        return ncmi_error_set("key 'schedule.milestones': at most 16 milestones, got %d",
                              c->milestones.n);
    for (int i = 1; i < c->milestones.n; i++)
        if (c->milestones.v[i] <= c->milestones.v[i - 1])
            return ncmi_error_set("key 'schedule.milestones': must be increasing, got %d after %d",
                                  c->milestones.v[i], c->milestones.v[i - 1]);
    if (c->schedule_kind == NCMI_SCHED_COSINE && c->warmup_epochs >= c->epochs)
        return ncmi_error_set("key 'schedule.warmup_epochs': %g leaves no epoch for the cosine "
                              "decay (train.epochs = %d)", c->warmup_epochs, c->epochs);
    if (!c->out || !c->out[0]) return ncmi_error_set("key 'out': empty");
    return 0;
}
