/* A torchvision ResNet (natural/resnet.h) as a trainer model (train/trainer.h
 * tr_model), for `ncmi train` with model.kind resnet18|34|50|101.
 *
 *   rn_config c = {.arch = RN_ARCH_18, .cifar_stem = 1, .n_stages = 4,
 *                  .width = 16, .in_channels = 1};      // num_classes must be 0
 *   tr_model m; rn_tr_model_init(&m, &c, &init_rng);
 *   tr_init(&t, &cfg, &m, &train, &val, &test, &init_rng);  // the head: "fc"
 *
 * The embedding z is the pooled feature [N, out_dim] (512 / 2048 at width 64);
 * the ResNet has no fc of its own: the trainer's linear head is named "fc"
 * (tr_model.classifier), so a checkpoint with a linear head holds exactly the
 * tensors of torchvision's state_dict (resnetXX(num_classes = C) at width 64
 * and 3 input channels; conv1 of another in_channels, and the channels of
 * another width, differ in shape only). The trainer initialises fc as
 * nn.Linear does, from the init stream after the ResNet: torchvision's init.
 *
 * Inputs: one tensor [N, in_channels, H, W] per batch. Training forwards use
 * batch statistics and update the running statistics (torch .train()); eval
 * forwards use the running statistics. Only nn/ ops: gpu_ok = 1. */
#ifndef NCMI_RESNET_MODEL_H
#define NCMI_RESNET_MODEL_H

#include "../train/trainer.h"
#include "resnet.h"

/* Build the model (rn_init with c; c->num_classes must be 0, c->n_stages
 * 1..4). The tr_model owns the ResNet; desc: "resnet18 (CIFAR stem, width 16,
 * 1 input channel), z 128".
 * 0 / -1 with ncmi_error(). */
int rn_tr_model_init(tr_model *m, const rn_config *c, nn_rng *rng);

/* The ResNet inside a model made by rn_tr_model_init (NULL for another model). */
rn_model *rn_tr_model_resnet(tr_model *m);

#endif
