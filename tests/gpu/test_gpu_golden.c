/* The foundation's PyTorch golden tests (tests/test_golden.c) on the GPU:
 * the same files, the same bound (1e-4 relative with the 1e-2*max floor),
 * with the parameters and the input moved to the GPU after loading. */
#include "gpu_check.h"

void golden_convnet_on(nn_device dev);
void golden_attention_on(int pooling, nn_device dev);

TEST(gpu_golden_convnet)
{
    GPU_REQUIRE();
    golden_convnet_on(NN_DEVICE_CUDA);
}

TEST(gpu_golden_attention_matmul)
{
    GPU_REQUIRE();
    golden_attention_on(0, NN_DEVICE_CUDA);
}

TEST(gpu_golden_attention_mul_sum)
{
    GPU_REQUIRE();
    golden_attention_on(1, NN_DEVICE_CUDA);
}
