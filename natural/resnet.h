/* torchvision ResNets (ResNet-18/34/50/101, v1.5: the stride of a bottleneck
 * is on its 3x3 convolution) on the nn/ engine, for feature extraction
 * (features/: resnet50_trunc, resnet50, resnet18 encoders) and for training
 * on natural images (natural/, CIFAR and ImageNet stems).
 *
 * Parameters and buffers carry torchvision's state_dict names (conv1.weight,
 * bn1.running_mean, layer1.0.downsample.1.weight, fc.bias, ...) in
 * torchvision's order, so weights move both ways between ncmi and PyTorch.
 *
 *   rn_config c; rn_config_from_name(&c, "resnet50_trunc");
 *   rn_model m; rn_init(&m, &c, &rng);
 *   if (rn_load(&m, "resnet50.safetensors") != 0) ... ncmi_error()
 *   rn_fold_bn(&m);                        // inference only, optional
 *   nn_params_to_device(&m.P, NN_DEVICE_CUDA);  // optional
 *   nn_graph *g = nn_graph_new(); nn_graph_set_no_grad(g, 1);
 *   nn_tensor *z = rn_forward(&m, g, x, 0);  // [N, 1024]
 *   ... nn_graph_reset(g);
 *   rn_free(&m);
 *
 * On a no_grad graph the forward frees each intermediate as soon as it is
 * dead (nn_graph_truncate), so its peak memory is about one residual block's
 * activations, not the whole pass; tensors made on g before rn_forward are
 * untouched. See docs/models.md. */
#ifndef NCMI_RESNET_H
#define NCMI_RESNET_H

#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/rng.h"
#include "../nn/sha256.h"
#include "../nn/tensor.h"

typedef enum rn_arch { RN_ARCH_18, RN_ARCH_34, RN_ARCH_50, RN_ARCH_101 } rn_arch;

typedef struct rn_config {
    rn_arch arch;
    int cifar_stem;  /* 1: 3x3 stride-1 conv1, no maxpool (CIFAR); 0: ImageNet 7x7/2 + maxpool */
    int n_stages;    /* 4: full network; 3: stop after layer3 (resnet50_trunc); 1..4 accepted */
    int num_classes; /* >0: fc layer (torchvision names fc.weight/fc.bias); 0: no fc */
    int width;       /* base channels: stages of width, 2, 4, 8 x width (x4 out for the
                        bottleneck); 0 or 64: torchvision's 64/128/256/512 exactly */
    int in_channels; /* channels of the input image (conv1's in); 0 or 3: RGB, 1: MNIST */
} rn_config;

/* One convolution (no bias in torchvision; `bias` appears when folded). */
typedef struct rn_conv {
    nn_tensor *weight, *bias;
    int cin, cout, k, stride, padding;
} rn_conv;

/* A BasicBlock (conv1, conv2) or a Bottleneck (conv1, conv2, conv3). */
typedef struct rn_block {
    int bottleneck, has_down;
    rn_conv conv[3];
    nn_batchnorm2d_m bn[3];
    rn_conv down;              /* layerL.B.downsample.0 */
    nn_batchnorm2d_m down_bn;  /* layerL.B.downsample.1 */
} rn_block;

typedef struct rn_model {
    rn_config cfg;
    nn_params P;
    int out_dim; /* pooled embedding dim: 512/2048 (4 stages), 256/1024 (3 stages) at
                    width 64; scales with the width */
    int width, in_channels; /* cfg.width / cfg.in_channels with 0 resolved (64, 3) */
    int folded;  /* rn_fold_bn has run */
    /* internal */
    rn_conv conv1;
    nn_batchnorm2d_m bn1;
    rn_block *blocks;
    int n_blocks;
    nn_linear_m fc; /* weight NULL when num_classes == 0 */
    char sha256[NN_SHA256_HEX]; /* "" until rn_load */
} rn_model;

/* "resnet18", "resnet34", "resnet50", "resnet101". */
const char *rn_arch_name(rn_arch a);
/* 0 when c is a configuration rn_init accepts, else -1 with the reason. */
int rn_config_check(const rn_config *c);
/* "resnet50 (ImageNet stem, 3 stages, no fc)" into buf; returns buf. A width
 * other than 64 and in_channels other than 3 are named ("width 16, 1 input
 * channel"). */
char *rn_config_describe(const rn_config *c, char *buf, size_t n);

/* Build with torchvision's initialisation (kaiming_normal_ fan_out relu for
 * convs, BN weight 1 bias 0, fc default Linear init) drawn from rng; tensors
 * named exactly as torchvision's state_dict. At width 64 and 3 input
 * channels this is torchvision.models.resnetXX; another width scales every
 * stage's channels (w, 2w, 4w, 8w; the embedding is 8w, or 32w for the
 * bottleneck nets) and in_channels sets conv1's input, with the same names
 * (the shapes differ). 0 / -1 (bad configuration). */
int rn_init(rn_model *m, const rn_config *c, nn_rng *rng);
void rn_free(rn_model *m);

/* Encoder presets by name (ImageNet stem, no fc): "resnet50_trunc"
 * (RN_ARCH_50, 3 stages: 1024-d), "resnet50" (2048-d), "resnet18" (512-d),
 * and "resnet34" (512-d), "resnet101" (2048-d). -1 with a message listing
 * the known names otherwise. */
int rn_config_from_name(rn_config *c, const char *name);
/* The preset names, NULL-terminated. */
extern const char *const rn_encoder_names[];

/* Load weights from a safetensors file with torchvision names. Tensors the
 * configuration does not use (layer4.* when n_stages == 3, fc.* when
 * num_classes == 0) are ignored, so a full torchvision resnet50 file loads
 * into resnet50_trunc, as CLAM does. num_batches_tracked may be absent (set
 * to 0, as PyTorch's BatchNorm does). A missing tensor, a shape mismatch, a
 * non-float weight or a file of another architecture is an error naming the
 * file and the first offending tensor (torchvision order), the architecture
 * expected and what the file looks like. F32/F16/BF16 accepted. Loads into
 * parameters on any device. 0 / -1, model unchanged on error; a folded model
 * cannot be loaded into (-1). Sets the weights' SHA-256. */
int rn_load(rn_model *m, const char *path);

/* Pooled embedding [N, out_dim] of x [N,in_channels,H,W] (any H, W >= 32;
 * smaller work too: MNIST's 28x28). training: batchnorm batch statistics + running-statistic
 * updates (as torch .train()); else eval (running statistics). Works on the
 * device of the parameters (x must be there too). On a no_grad graph the
 * intermediates are freed as they die (see the top of this file). */
nn_tensor *rn_forward(rn_model *m, nn_graph *g, nn_tensor *x, int training);
/* fc(z) [N, num_classes] when num_classes > 0 (NCMI_CHECK otherwise). */
nn_tensor *rn_logits(rn_model *m, nn_graph *g, nn_tensor *z);

/* Inference only: fold every BatchNorm (running statistics, its eps 1e-5)
 * into the preceding convolution, w' = w * gamma / sqrt(var + eps),
 * b' = beta - mean * gamma / sqrt(var + eps) (computed in double). The
 * folded weights replace <conv>.weight in P and the biases are added to P as
 * buffers <conv>.bias (on the weights' device); the batchnorm tensors stay as
 * loaded but are no longer used. Afterwards rn_forward(training = 0) skips
 * batchnorm; rn_forward(training = 1) and rn_load abort / fail. A second
 * call does nothing. */
void rn_fold_bn(rn_model *m);

/* SHA-256 hex (64 chars + NUL) of the weights as loaded by rn_load; "" before.
 * Over every tensor the configuration uses except the num_batches_tracked
 * counters, in strcmp order of their names: the name, a NUL byte, the shape
 * as decimal text ("64,3,7,7"; "" for a 0-d tensor), a NUL byte, then the
 * float32 values (little-endian) as loaded, F16/BF16 converted to float32. */
const char *rn_weights_sha256(const rn_model *m);
/* The same hash of the model's current tensors (what rn_load stores). */
void rn_weights_sha256_compute(const rn_model *m, char hex[NN_SHA256_HEX]);

#endif
