/* The training config schema (see train_config.h). */
#include "train_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../train/trainer.h"

#define OFF(f) offsetof(ncmi_train_config, f)

static const char *const data_kinds[] = {"synthetic", "mnist", "bags", "cifar10", "cifar100",
                                         "imagenet", NULL};
static const char *const augment_kinds[] = {"none", "cifar", "imagenet", NULL};
static const char *const model_kinds[] = {"mlp",      "abmil",    "transmil", "aem",       "asmil",
                                          "resnet18", "resnet34", "resnet50", "resnet101", NULL};
static const char *const anchor_kinds[] = {"ema", "frozen", NULL};
static const char *const head_kinds[] = {"linear", "ncmi", NULL};
static const char *const loss_kinds[] = {"ce", "label_smoothing", "focal", "poly1", "square",
                                         "squentropy", "anticlass", NULL};
static const char *const simplex_kinds[] = {"nsf", "softmax", NULL};
static const char *const gamma_kinds[] = {"classes", "prior", NULL};
static const char *const ratio_kinds[] = {"per_sample", "of_means", NULL};
static const char *const centroid_kinds[] = {"learned", "fixed", NULL};
static const char *const ncmi_eval_kinds[] = {"cc", "learned", NULL};
static const char *const split_kinds[] = {"test", "val", NULL};
static const char *const optim_names[] = {"sgd", "adamw", "adam", NULL};
static const char *const sched_kinds[] = {"constant", "multistep", "cosine", NULL};

/* key, type, default, help, offset, choices, bounds, lo, hi, list_len */
static const ncmi_cfg_key keys[] = {
    {"name", NCMI_CFG_STRING, "", "run name: the run folder is OUT/NAME/ (empty: the config file's base name)", OFF(name), NULL, 0, 0, 0, 0},
    {"seed", NCMI_CFG_INT, "0", "seed of every random draw (data, init, shuffling)", OFF(seed), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.kind", NCMI_CFG_ENUM, "synthetic", "dataset: synthetic (seeded Gaussian blobs), mnist (the 10,000 images of the MNIST test set in data.root, split into train/val/test with data.split_seed; samples are [1, 28, 28] images), bags (MIL: one bag of patch features per slide, data.features + data.manifest), or natural images in data.root (natural/ loaders, docs/natural.md): cifar10, cifar100 (the binary format: data_batch_*/test_batch, train/test files) or imagenet (train/<wnid>/*.JPEG and val/<wnid>/*.JPEG)", OFF(data_kind), data_kinds, 0, 0, 0, 0},
    {"data.root", NCMI_CFG_STRING, "../shared/fixtures/mnist", "mnist: folder holding t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]; cifar10 / cifar100: folder of the binary version (cifar-10-batches-bin, cifar-100-binary); imagenet: folder holding train/ and val/", OFF(data_root), NULL, 0, 0, 0, 0},
    {"data.n_train", NCMI_CFG_INT, "0", "training samples (0: synthetic 600, mnist 7000; cifar10/cifar100/imagenet: the whole training split)", OFF(n_train), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.n_val", NCMI_CFG_INT, "0", "validation samples, for model selection (0: synthetic 300, mnist 1000: carved out of the 8,000 training images; cifar10/cifar100/imagenet: data.val_fraction)", OFF(n_val), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.n_test", NCMI_CFG_INT, "0", "test samples (0: synthetic none, mnist 2000; cifar10/cifar100/imagenet: the whole test / val split)", OFF(n_test), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.split_seed", NCMI_CFG_INT, "0", "mnist: seed of the split (fixed, independent of 'seed': the first n_test images of the permutation are the test set, then n_train, then n_val)", OFF(split_seed), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.classes", NCMI_CFG_STRING_LIST, "[]", "class names in order ([]: the dataset's own: digits 0-9, or 0..n_classes-1); a label outside the list is an error", OFF(classes), NULL, 0, 0, 0, 0},
    {"data.augment_shift", NCMI_CFG_INT, "0", "mnist: translate training images by a random offset of up to this many pixels (0 = no augmentation)", OFF(augment_shift), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.augment", NCMI_CFG_ENUM, "none", "cifar10/cifar100/imagenet: training augmentation: none, cifar (random crop with 4-pixel padding, horizontal flip, rotation: the NCMI code's CIFAR recipe) or imagenet (RandomResizedCrop to data.train_size + horizontal flip); evaluation images are never augmented", OFF(augment), augment_kinds, 0, 0, 0, 0},
    {"data.workers", NCMI_CFG_INT, "2", "cifar10/cifar100/imagenet: loader threads decoding and augmenting the next batches while the model trains (0: on the training thread); results do not depend on it", OFF(workers), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.train_size", NCMI_CFG_INT, "224", "imagenet: side of the training crop (RandomResizedCrop)", OFF(train_size), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.eval_size", NCMI_CFG_INT, "224", "imagenet: side of the evaluation centre crop (the paper evaluates at 280)", OFF(eval_size), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.eval_resize", NCMI_CFG_INT, "0", "imagenet: the shorter side is resized to this before the evaluation centre crop (0: data.eval_size * 256 / 224, torchvision's 256 for 224)", OFF(eval_resize), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.val_fraction", NCMI_CFG_FLOAT, "0.1", "cifar10/cifar100/imagenet: share of the training set held out (a seeded random subset) for validation and model selection when data.n_val is 0; CIFAR has no validation set of its own, ImageNet's val/ is the test split (0: nothing held out)", OFF(val_fraction), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"data.n_classes", NCMI_CFG_INT, "3", "number of classes (synthetic)", OFF(n_classes), NULL, NCMI_CFG_MIN, 2, 0, 0},
    {"data.dim", NCMI_CFG_INT, "16", "input features per sample (synthetic)", OFF(dim), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"data.separation", NCMI_CFG_FLOAT, "3.0", "distance of the class means from the origin, in noise std (synthetic)", OFF(separation), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.features", NCMI_CFG_STRING, "", "bags: folder of <slide_id>.h5 feature files (features [N, D] + coords: ncmi features, CLAM h5_files, TRIDENT); D is taken from the files", OFF(features), NULL, 0, 0, 0, 0},
    {"data.manifest", NCMI_CFG_STRING, "", "bags: manifest CSV with slide_id, label and the split column (train/val/test; rows with an empty split are left out); '{fold}' is replaced by data.fold", OFF(manifest), NULL, 0, 0, 0, 0},
    {"data.split_column", NCMI_CFG_STRING, "split", "bags: manifest column holding train/val/test ('{fold}' is replaced by data.fold, e.g. split_{fold})", OFF(split_column), NULL, 0, 0, 0, 0},
    {"data.fold", NCMI_CFG_INT, "-1", "bags: cross-validation fold k substituted for '{fold}' in data.manifest and data.split_column (-1: no folds)", OFF(fold), NULL, NCMI_CFG_MIN, -1, 0, 0},
    {"data.cache_mb", NCMI_CFG_FLOAT, "2048", "bags: bound of the bag cache in MiB (least recently used bags are evicted; 0: read every bag at each use)", OFF(cache_mb), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.prefetch", NCMI_CFG_INT, "2", "bags: bags read ahead on a thread in the trainer's order (0: none); results do not depend on it", OFF(prefetch), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"data.skip_missing", NCMI_CFG_BOOL, "false", "bags: leave out the slides whose feature file is missing or unreadable, with a warning (false: an error listing them); --skip-missing sets it", OFF(skip_missing), NULL, 0, 0, 0, 0},
    {"data.standardize", NCMI_CFG_BOOL, "false", "bags: z-score every feature with the mean and std over the instances of the training bags (read once at the start; for raw benchmark features such as Musk, not for encoder features)", OFF(standardize), NULL, 0, 0, 0, 0},
    {"model.kind", NCMI_CFG_ENUM, "mlp", "model: mlp (linear layers with ReLU, tensors layers.I.weight and layers.I.bias; the embedding z is the last hidden layer's output), a MIL head on bags (data.kind bags): abmil, transmil, aem, asmil (keys mil.*; z is the bag embedding), or a torchvision ResNet on images (mnist, cifar10, cifar100, imagenet): resnet18, resnet34, resnet50, resnet101 (keys model.cifar_stem, model.width, model.in_channels; torchvision's tensor names and initialisation; z is the pooled feature, 8 x model.width (512) for resnet18/34, 32 x model.width (2048) for resnet50/101; the linear head is fc)", OFF(model_kind), model_kinds, 0, 0, 0, 0},
    {"model.hidden", NCMI_CFG_INT_LIST, "[64, 64]", "hidden layer widths of the MLP ([]: z is the input); the linear head is layers.<len(hidden)>", OFF(hidden), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"model.cifar_stem", NCMI_CFG_BOOL, "false", "ResNets: the CIFAR stem (conv1 3x3 stride 1, no max-pool) instead of the ImageNet stem (conv1 7x7 stride 2 + 3x3 max-pool); for 28-32 pixel images", OFF(cifar_stem), NULL, 0, 0, 0, 0},
    {"model.width", NCMI_CFG_INT, "64", "ResNets: base channels; the four stages have width, 2, 4, 8 x width channels (x4 at the output of a bottleneck); 64 is torchvision's network exactly, smaller widths make small fast nets (MNIST: 16)", OFF(width), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX, 1, 4096, 0},
    {"model.in_channels", NCMI_CFG_INT, "3", "ResNets: channels of the input images, conv1's input (3: RGB; mnist: 1)", OFF(in_channels), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX, 1, 64, 0},
    {"mil.d_inner", NCMI_CFG_INT, "512", "MIL heads: size of the bag embedding z (the first Linear(D_feat, d_inner)): 512 for 1024-d features, 256 for 512-d, 128 for 384-d", OFF(mil_d_inner), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.attn_hidden", NCMI_CFG_INT, "128", "abmil/aem: hidden size of the gated attention (V, U: Linear(d_inner, attn_hidden))", OFF(mil_attn_hidden), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.instance_layers", NCMI_CFG_INT_LIST, "[]", "abmil/aem: Ilse et al.'s instance network for the MIL benchmarks instead of the WSI variant's Linear(D_feat, d_inner, no bias) + ReLU: Linear (with bias) + ReLU + Dropout(mil.instance_dropout) layers of these widths (Musk: [256, 128, 64]); the last width is the size of z (mil.d_inner is not used); tensors feature_extractor.<3 i> (at most 8 layers)", OFF(mil_instance_layers), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.instance_dropout", NCMI_CFG_FLOAT, "0.0", "abmil/aem with mil.instance_layers: dropout after each instance layer's ReLU (training only)", OFF(mil_instance_dropout), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"mil.gated", NCMI_CFG_BOOL, "true", "abmil/aem: gated attention w^T (tanh(V h) * sigmoid(U h)); false: w^T tanh(V h) (Ilse et al.'s attention without the gate; no attention.attention_U.0)", OFF(mil_gated), NULL, 0, 0, 0, 0},
    {"mil.dropout", NCMI_CFG_FLOAT, "0.1", "transmil/asmil: attention dropout (training only); transmil needs mil.d_inner divisible by its 8 heads", OFF(mil_dropout), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"mil.aem.lambda", NCMI_CFG_FLOAT, "0.1", "aem: weight lambda of the attention-entropy term (loss += lambda * sum_i a_i ln a_i)", OFF(aem_lambda), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"mil.aem.topk", NCMI_CFG_INT, "0", "aem: entropy of the renormalised k largest attention weights (0: all instances)", OFF(aem_topk), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"mil.aem.cosine", NCMI_CFG_BOOL, "false", "aem: anneal lambda with a half cosine over train.epochs (lambda * 0.5 (1 + cos(pi e / epochs)) at epoch e)", OFF(aem_cosine), NULL, 0, 0, 0, 0},
    {"mil.transmil.landmarks", NCMI_CFG_INT, "0", "transmil: Nystrom landmarks (0: mil.d_inner / 2, the official 256 for 512; every token is its own landmark below this many)", OFF(transmil_landmarks), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"mil.transmil.pinv_iters", NCMI_CFG_INT, "6", "transmil: iterations of the Moore-Penrose iterative pseudo-inverse", OFF(transmil_pinv_iters), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.transmil.legacy_slice", NCMI_CFG_BOOL, "false", "transmil: nystrom-attention 0.0.9's output slice (the first n rows after front padding, as the official repository pins) instead of the correct last n", OFF(transmil_legacy_slice), NULL, 0, 0, 0, 0},
    {"mil.asmil.tokens", NCMI_CFG_INT, "8", "asmil: learnable query tokens (8 to 16)", OFF(asmil_tokens), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.asmil.heads", NCMI_CFG_INT, "8", "asmil: attention heads of each token (must divide mil.d_inner)", OFF(asmil_heads), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"mil.asmil.drop", NCMI_CFG_INT, "0", "asmil: token features dropped at random per training step (fewer than mil.asmil.tokens)", OFF(asmil_drop), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"mil.asmil.kd_T", NCMI_CFG_FLOAT, "0.5", "asmil: temperature T of the anchor's normalized-sigmoid targets in the KD term", OFF(asmil_kd_T), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"mil.asmil.kd_weight", NCMI_CFG_FLOAT, "1.0", "asmil: weight of the KD term", OFF(asmil_kd_weight), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"mil.asmil.ema", NCMI_CFG_FLOAT, "0.999", "asmil: EMA decay of the anchor (anchor = ema * anchor + (1 - ema) * student after each step)", OFF(asmil_ema), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX, 0, 1, 0},
    {"mil.asmil.anchor", NCMI_CFG_ENUM, "ema", "asmil: ema (the paper: the anchor is an EMA of the student) or frozen (the released code: the anchor keeps its initialisation)", OFF(asmil_anchor), anchor_kinds, 0, 0, 0, 0},
    {"head.kind", NCMI_CFG_ENUM, "linear", "head on the embedding: linear (a Linear(D, C) + loss.kind) or ncmi (the NCMI loss, keys ncmi.*; no classifier layer)", OFF(head_kind), head_kinds, 0, 0, 0, 0},
    {"loss.kind", NCMI_CFG_ENUM, "ce", "loss of the linear head: ce, label_smoothing, focal, poly1, square, squentropy, anticlass (nn/loss.h)", OFF(loss_kind), loss_kinds, 0, 0, 0, 0},
    {"loss.label_smoothing", NCMI_CFG_FLOAT, "0.0", "label smoothing eps of ce (training only); kind label_smoothing uses it, or 0.1 when it is 0", OFF(label_smoothing), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"loss.focal_gamma", NCMI_CFG_FLOAT, "2.0", "focal: gamma", OFF(focal_gamma), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"loss.poly_eps", NCMI_CFG_FLOAT, "1.0", "poly1: epsilon", OFF(poly_eps), NULL, 0, 0, 0, 0},
    {"loss.square_k", NCMI_CFG_FLOAT, "1.0", "square: k (weight of the true class)", OFF(square_k), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"loss.square_M", NCMI_CFG_FLOAT, "1.0", "square: M (target of the true class's logit)", OFF(square_M), NULL, 0, 0, 0, 0},
    {"loss.anticlass_weight", NCMI_CFG_FLOAT, "1.0", "anticlass: lambda (weight of the one-cold term)", OFF(anticlass_weight), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"ncmi.tau", NCMI_CFG_FLOAT, "0.2", "NCMI temperature: z' = normalize(z - c) / tau", OFF(ncmi_tau), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"ncmi.momentum", NCMI_CFG_FLOAT, "0.99999", "EMA momentum m of the centre c (the paper: 0.99999 at 391 steps per epoch; the same per-epoch rate is 1 - 0.004 / steps per epoch: MIL, 0.99999 for ~400 bags per epoch; docs/training.md)", OFF(ncmi_momentum), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX, 0, 1, 0},
    {"ncmi.simplex", NCMI_CFG_ENUM, "nsf", "map onto the simplex: nsf (normalized sigmoid) or softmax (ablation)", OFF(ncmi_simplex), simplex_kinds, 0, 0, 0, 0},
    {"ncmi.centering", NCMI_CFG_BOOL, "true", "subtract the EMA centre c (false: ablation)", OFF(ncmi_centering), NULL, 0, 0, 0, 0},
    {"ncmi.gamma", NCMI_CFG_ENUM, "classes", "separation weights: classes (1/C, the authors' code) or prior (training-set class frequencies, paper Eq. 7)", OFF(ncmi_gamma), gamma_kinds, 0, 0, 0, 0},
    {"ncmi.ratio", NCMI_CFG_ENUM, "per_sample", "loss: per_sample (mean of CMI_i / Gamma_i, the code) or of_means (mean CMI / mean Gamma, paper Eq. 9)", OFF(ncmi_ratio), ratio_kinds, 0, 0, 0, 0},
    {"ncmi.centroids", NCMI_CFG_ENUM, "learned", "centroids xi: learned (own SGD) or fixed (the public code, where xi never changes)", OFF(ncmi_centroids), centroid_kinds, 0, 0, 0, 0},
    {"ncmi.gamma_floor", NCMI_CFG_FLOAT, "1.0e-4", "floor on Gamma (no 0/0 when the centroids coincide)", OFF(ncmi_gamma_floor), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"ncmi.centroid_lr", NCMI_CFG_FLOAT, "0.1", "SGD learning rate of the centroids xi (scaled by the lr schedule like optim.lr)", OFF(centroid_lr), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"ncmi.centroid_momentum", NCMI_CFG_FLOAT, "0.9", "SGD momentum of the centroids", OFF(centroid_momentum), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"ncmi.centroid_weight_decay", NCMI_CFG_FLOAT, "0.0", "weight decay of the centroids", OFF(centroid_weight_decay), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"ncmi.center_init_samples", NCMI_CFG_INT, "0", "the centre starts as the mean eval-mode embedding of the first N training samples, before the first step (0 = all)", OFF(center_init_samples), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"ncmi.eval", NCMI_CFG_ENUM, "cc", "method for validation, model selection and the primary predictions: cc (class-mean centroids of the training set) or learned (sigma(xi))", OFF(ncmi_eval), ncmi_eval_kinds, 0, 0, 0, 0},
    {"lp.epochs", NCMI_CFG_INT, "20", "NCMI linear probing: epochs of SGD on the frozen z' of the training set", OFF(lp_epochs), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"lp.lr", NCMI_CFG_FLOAT, "0.1", "linear probing: learning rate (cosine to 0 over lp.epochs)", OFF(lp_lr), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"lp.grid_epochs", NCMI_CFG_INT_LIST, "[]", "linear probing: epoch counts to try, each with every lp.grid_lr (or lp.lr); the probe with the best validation train.select is kept (at most 8; []: lp.epochs alone)", OFF(lp_grid_epochs), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"lp.grid_lr", NCMI_CFG_FLOAT_LIST, "[]", "linear probing: learning rates to try, each with every lp.grid_epochs (or lp.epochs); chosen on the validation set as lp.grid_epochs (at most 8; []: lp.lr alone)", OFF(lp_grid_lr), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"lp.batch_size", NCMI_CFG_INT, "128", "linear probing: batch size", OFF(lp_batch_size), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"lp.momentum", NCMI_CFG_FLOAT, "0.9", "linear probing: SGD momentum", OFF(lp_momentum), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"lp.weight_decay", NCMI_CFG_FLOAT, "0.0", "linear probing: weight decay", OFF(lp_weight_decay), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"optim.name", NCMI_CFG_ENUM, "sgd", "optimizer: sgd, adamw (decoupled weight decay, torch.optim.AdamW) or adam (torch.optim.Adam: weight decay as L2 added to the gradient)", OFF(optim_name), optim_names, 0, 0, 0, 0},
    {"optim.lr", NCMI_CFG_FLOAT, "0.1", "base learning rate", OFF(lr), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"optim.momentum", NCMI_CFG_FLOAT, "0.9", "SGD momentum", OFF(momentum), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 0},
    {"optim.nesterov", NCMI_CFG_BOOL, "false", "SGD Nesterov momentum", OFF(nesterov), NULL, 0, 0, 0, 0},
    {"optim.weight_decay", NCMI_CFG_FLOAT, "0.0005", "weight decay (SGD and Adam: L2 added to the gradient; AdamW: decoupled)", OFF(weight_decay), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"optim.betas", NCMI_CFG_FLOAT_LIST, "[0.9, 0.999]", "Adam/AdamW beta1, beta2", OFF(betas), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX_EXCL, 0, 1, 2},
    {"optim.eps", NCMI_CFG_FLOAT, "1.0e-8", "Adam/AdamW epsilon", OFF(eps), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"schedule.kind", NCMI_CFG_ENUM, "constant", "learning-rate schedule, evaluated once per epoch", OFF(schedule_kind), sched_kinds, 0, 0, 0, 0},
    {"schedule.milestones", NCMI_CFG_INT_LIST, "[]", "multistep: epochs (counted after the warm-up) where the lr is multiplied by gamma (increasing, at most 16)", OFF(milestones), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"schedule.gamma", NCMI_CFG_FLOAT, "0.1", "multistep: factor at each milestone", OFF(gamma), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"schedule.min_lr", NCMI_CFG_FLOAT, "0.0", "cosine: the lr the half cycle ends at (after train.epochs)", OFF(min_lr), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"schedule.warmup_epochs", NCMI_CFG_FLOAT, "0.0", "linear warm-up: epoch e < w runs at lr*(e+1)/w; the schedule starts after it", OFF(warmup_epochs), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.epochs", NCMI_CFG_INT, "20", "epochs to train (with --resume: the total, counting those done)", OFF(epochs), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"train.batch_size", NCMI_CFG_INT, "0", "samples per step, bags per step for MIL (0: 32, bags 1); the last batch of an epoch may be smaller", OFF(batch_size), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.clip_grad_norm", NCMI_CFG_FLOAT, "0.0", "clip the global gradient norm to this (0 = off)", OFF(clip_grad_norm), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.eval_every", NCMI_CFG_INT, "1", "evaluate on the validation set every k epochs (and after the last)", OFF(eval_every), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"train.select", NCMI_CFG_STRING, "accuracy", "validation metric that selects best.safetensors: accuracy, f1_auc (macro-F1 + macro-AUC), loss (lowest), or any metric name of ncmi eval (auc_macro, balanced_accuracy, ...)", OFF(select), NULL, 0, 0, 0, 0},
    {"train.patience", NCMI_CFG_INT, "0", "early stopping: stop after this many evaluations without a better train.select (0 = off)", OFF(patience), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.threads", NCMI_CFG_INT, "0", "CPU threads (0 = OMP_NUM_THREADS or all cores); results are reproducible for a given count", OFF(threads), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"eval.split", NCMI_CFG_ENUM, "test", "split of the final predictions and metrics at the selected epoch (test; val when the data has no test set)", OFF(eval_split), split_kinds, 0, 0, 0, 0},
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
    if (c->lp_grid_epochs.n > TR_LP_GRID_MAX || c->lp_grid_lr.n > TR_LP_GRID_MAX)
        return ncmi_error_set("key 'lp.grid_%s': at most %d values, got %d",
                              c->lp_grid_epochs.n > TR_LP_GRID_MAX ? "epochs" : "lr", TR_LP_GRID_MAX,
                              c->lp_grid_epochs.n > TR_LP_GRID_MAX ? c->lp_grid_epochs.n : c->lp_grid_lr.n);
    if (c->optim_name == NCMI_OPTIM_NAME_SGD && c->nesterov && c->momentum <= 0)
        return ncmi_error_set("key 'optim.nesterov': Nesterov momentum needs optim.momentum > 0 (got %g), "
                              "as torch.optim.SGD", c->momentum);
    if (c->schedule_kind == NCMI_SCHED_COSINE && c->warmup_epochs >= c->epochs)
        return ncmi_error_set("key 'schedule.warmup_epochs': %g leaves no epoch for the cosine "
                              "decay (train.epochs = %d)", c->warmup_epochs, c->epochs);
    if (!c->out || !c->out[0]) return ncmi_error_set("key 'out': empty");
    if (tr_select_check(c->select))
        return ncmi_error_set("key 'train.select': '%s' is not accuracy, f1_auc, loss or a metric name "
                              "(accuracy, balanced_accuracy, f1_macro, auc_macro, ...)",
                              c->select ? c->select : "");
    if (c->classes.n == 1) return ncmi_error_set("key 'data.classes': at least 2 classes");
    for (int i = 0; i < c->classes.n; i++)
        for (int k = 0; k < i; k++)
            if (!strcmp(c->classes.v[i], c->classes.v[k]))
                return ncmi_error_set("key 'data.classes': '%s' twice", c->classes.v[i]);
    if (c->data_kind == NCMI_DATA_SYNTHETIC && c->classes.n && c->classes.n != c->n_classes)
        return ncmi_error_set("key 'data.classes': %d names for data.n_classes = %d", c->classes.n,
                              c->n_classes);
    if (c->data_kind == NCMI_DATA_MNIST &&
        (long)c->n_train + c->n_val + c->n_test > 10000)
        return ncmi_error_set("keys 'data.n_train' + 'data.n_val' + 'data.n_test' = %ld: more than "
                              "the 10000 MNIST test images", (long)c->n_train + c->n_val + c->n_test);
    if (c->augment_shift > 0 && c->data_kind != NCMI_DATA_MNIST)
        return ncmi_error_set("key 'data.augment_shift': only for image data (mnist)");
    const int natural = c->data_kind == NCMI_DATA_CIFAR10 || c->data_kind == NCMI_DATA_CIFAR100 ||
                        c->data_kind == NCMI_DATA_IMAGENET;
    if (c->augment != NCMI_AUGMENT_NONE && !natural)
        return ncmi_error_set("key 'data.augment': %s is for cifar10, cifar100 and imagenet (mnist: "
                              "data.augment_shift)", augment_kinds[c->augment]);
    if (NCMI_MODEL_IS_RESNET(c->model_kind)) {
        if (c->data_kind != NCMI_DATA_MNIST && !natural)
            return ncmi_error_set("key 'model.kind': %s needs images (data.kind mnist, cifar10, cifar100 or "
                                  "imagenet), not %s", model_kinds[c->model_kind], data_kinds[c->data_kind]);
        const int ch = c->data_kind == NCMI_DATA_MNIST ? 1 : 3;
        if (c->in_channels != ch)
            return ncmi_error_set("key 'model.in_channels': %d, but %s images have %d channel%s", c->in_channels,
                                  data_kinds[c->data_kind], ch, ch == 1 ? "" : "s");
    }
    const int bags = c->data_kind == NCMI_DATA_BAGS, mil = NCMI_MODEL_IS_MIL(c->model_kind);
    if (!mil && bags)
        return ncmi_error_set("key 'model.kind': data.kind bags needs a MIL head (abmil, transmil, aem, asmil)");
    if (mil && !bags)
        return ncmi_error_set("key 'model.kind': %s is a MIL head: it needs data.kind bags",
                              model_kinds[c->model_kind]);
    if (bags) {
        if (!c->features || !c->features[0]) return ncmi_error_set("key 'data.features': empty (data.kind bags)");
        if (!c->manifest || !c->manifest[0]) return ncmi_error_set("key 'data.manifest': empty (data.kind bags)");
        int has = strstr(c->manifest, "{fold}") || (c->split_column && strstr(c->split_column, "{fold}"));
        if (c->fold >= 0 && !has)
            return ncmi_error_set("key 'data.fold': %d, but neither data.manifest nor data.split_column "
                                  "holds '{fold}'", c->fold);
        if (c->fold < 0 && has)
            return ncmi_error_set("key 'data.fold': '{fold}' in data.manifest or data.split_column needs "
                                  "data.fold >= 0");
    }
    if (c->mil_instance_layers.n > 8)
        return ncmi_error_set("key 'mil.instance_layers': %d layers (at most 8)", c->mil_instance_layers.n);
    if (c->mil_instance_layers.n > 0 && c->model_kind != NCMI_MODEL_ABMIL && c->model_kind != NCMI_MODEL_AEM)
        return ncmi_error_set("key 'mil.instance_layers': only abmil and aem have an instance network (model.kind %s)",
                              model_kinds[c->model_kind]);
    if (c->model_kind == NCMI_MODEL_TRANSMIL && c->mil_d_inner % 8)
        return ncmi_error_set("key 'mil.d_inner': %d is not divisible by TransMIL's 8 heads", c->mil_d_inner);
    if (c->model_kind == NCMI_MODEL_ASMIL) {
        if (c->asmil_drop >= c->asmil_tokens)
            return ncmi_error_set("key 'mil.asmil.drop': %d of %d tokens leaves none", c->asmil_drop,
                                  c->asmil_tokens);
        if (c->mil_d_inner % c->asmil_heads)
            return ncmi_error_set("key 'mil.asmil.heads': %d does not divide mil.d_inner = %d", c->asmil_heads,
                                  c->mil_d_inner);
    }
    if (c->head_kind == NCMI_HEAD_NCMI && c->model_kind == NCMI_MODEL_MLP && c->hidden.n == 0 &&
        c->data_kind == NCMI_DATA_SYNTHETIC && c->dim < 2)
        return ncmi_error_set("head ncmi needs an embedding of at least 2 dimensions");
    return 0;
}

void ncmi_train_config_resolve(ncmi_train_config *c)
{
    int mnist = c->data_kind == NCMI_DATA_MNIST;
    int natural = c->data_kind == NCMI_DATA_CIFAR10 || c->data_kind == NCMI_DATA_CIFAR100 ||
                  c->data_kind == NCMI_DATA_IMAGENET;
    if (c->batch_size == 0) c->batch_size = c->data_kind == NCMI_DATA_BAGS ? 1 : 32;
    if (natural) return; /* 0: the whole split (the loaders decide) */
    if (c->n_train == 0) c->n_train = mnist ? 7000 : 600;
    if (c->n_val == 0) c->n_val = mnist ? 1000 : 300;
    if (c->n_test == 0 && mnist) c->n_test = 2000;
}

char *ncmi_train_config_fold_path(const char *s, int fold)
{
    if (!s) return NULL;
    const char *p = strstr(s, "{fold}");
    if (!p) return strdup(s);
    size_t n = strlen(s) + 16;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%.*s%d%s", (int)(p - s), s, fold, p + 6);
    return r;
}
