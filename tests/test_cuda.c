/* The CUDA backend as seen from a machine without a GPU: the GPU tests live
 * in tests/gpu/ (make test-gpu); here one visible line says whether they can
 * run, and --device gives clear errors. */
#include <stdlib.h>
#include <string.h>

#include "../nn/cuda.h"
#include "../nn/error.h"
#include "test.h"

TEST(cuda_gpu_tests_here)
{
    char d[256];
    if (!nn_cuda_built())
        SKIP("GPU tests not run: this build has no CUDA backend (no nvcc); they run with make test-gpu on a GPU machine");
    if (nn_cuda_device_count() <= 0)
        SKIP("GPU tests not run: no CUDA GPU on this machine (%s); they run with make test-gpu on a GPU machine",
             nn_cuda_describe(0, d, sizeof d));
    SKIP("GPU tests not run by make test: a GPU is present (%s), run make test-gpu", nn_cuda_describe(0, d, sizeof d));
}

TEST(cuda_device_select_errors)
{
    int is_cuda = 1;
    EXPECT(nn_device_select("cpu", &is_cuda) == 0 && is_cuda == 0, "cpu: %s", ncmi_error());
    EXPECT(nn_device_select("gpu", &is_cuda) != 0 && strstr(ncmi_error(), "expected cpu, cuda"),
           "gpu accepted or bad message: %s", ncmi_error());
    EXPECT(nn_device_select("cuda:x", &is_cuda) != 0 && strstr(ncmi_error(), "cuda:K"),
           "cuda:x: %s", ncmi_error());
    if (nn_cuda_device_count() > 0) return; /* the rest is about machines without a GPU */
    EXPECT(nn_device_select("auto", &is_cuda) == 0 && is_cuda == 0, "auto without a GPU: %s", ncmi_error());
    EXPECT(nn_device_select("cuda", &is_cuda) != 0, "cuda accepted without a GPU");
    EXPECT(strstr(ncmi_error(), "--device cuda") != NULL &&
               (strstr(ncmi_error(), "without CUDA") || strstr(ncmi_error(), "no CUDA GPU")),
           "message does not say why: %s", ncmi_error());
    EXPECT(nn_device_select("cuda:1", &is_cuda) != 0, "cuda:1 accepted without a GPU");
}

/* every command takes --device; without a GPU, cuda fails before any work
 * with exit code 1 and a message naming the option, and cpu/auto run */
TEST(cuda_cli_device_option)
{
    if (nn_cuda_device_count() > 0) SKIP("a GPU is present: the no-GPU messages cannot be checked here");
    char *out = NULL;
    int rc = test_ncmi(&out, "train --device cuda --config configs/demo_mlp.yaml --out %s --force",
                       test_tmp_path("dev"));
    EXPECT(rc == 1, "exit %d", rc);
    EXPECT(out && strstr(out, "ncmi: train: --device cuda:"), "message: %s", out ? out : "");
    free(out);
    rc = test_ncmi(&out, "tile --device=cuda:0 --help");
    EXPECT(rc == 0, "--help with --device: exit %d", rc);
    free(out);
    rc = test_ncmi(&out, "version --device auto");
    EXPECT(rc == 0 && out && strstr(out, "GPU: none"), "version --device auto: exit %d: %s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "eval --device tpu --predictions x.csv");
    EXPECT(rc == 1 && out && strstr(out, "expected cpu, cuda"), "bad value: exit %d: %s", rc, out ? out : "");
    free(out);
}
