/* CPU-only build: the CUDA entry points report that there is no GPU. */
#include "cuda.h"

#include <stdio.h>

#if !NCMI_HAVE_CUDA
int nn_cuda_built(void) { return 0; }
int nn_cuda_device_count(void) { return 0; }
char *nn_cuda_describe(int device, char *buf, size_t n)
{
    snprintf(buf, n, "no CUDA device %d (built without CUDA)", device);
    return buf;
}
#else
/* the definitions live in nn/cuda/runtime.cu */
typedef int nn_cuda_stub_unused;
#endif
