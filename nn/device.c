/* `--device` parsing shared by every command (nn/cuda.h). */
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "dist.h"
#include "error.h"

int nn_device_select(const char *spec, int *is_cuda)
{
    *is_cuda = 0;
    if (!spec || !*spec || strcmp(spec, "cpu") == 0) return 0;
    if (strcmp(spec, "auto") == 0) {
        int n = nn_cuda_device_count();
        if (n <= 0) return 0;
        /* data-parallel ranks on one machine: one GPU each (nn/dist.h) */
        if (nn_cuda_init(nn_dist_env_device(n)) != 0) return ncmi_error_prefix("--device auto");
        *is_cuda = 1;
        return 0;
    }
    int k = 0;
    if (strncmp(spec, "cuda", 4) == 0 && (spec[4] == 0 || spec[4] == ':')) {
        if (spec[4] == ':') {
            char *end;
            long v = strtol(spec + 5, &end, 10);
            if (end == spec + 5 || *end || v < 0 || v > 1024)
                return ncmi_error_set("--device %s: expected cuda:K with K a device number", spec);
            k = (int)v;
        }
        if (!nn_cuda_built())
            return ncmi_error_set("--device %s: this ncmi was built without CUDA (no nvcc at build "
                                  "time); use --device cpu or rebuild with the CUDA toolkit",
                                  spec);
        int n = nn_cuda_device_count();
        if (n <= 0)
            return ncmi_error_set("--device %s: no CUDA GPU is visible on this machine (driver "
                                  "missing or no device); use --device cpu or auto",
                                  spec);
        if (spec[4] == 0) k = nn_dist_env_device(n); /* "cuda": the local rank's GPU */
        if (nn_cuda_init(k) != 0) return ncmi_error_prefix("--device %s", spec);
        *is_cuda = 1;
        return 0;
    }
    return ncmi_error_set("--device %s: expected cpu, cuda, cuda:K or auto", spec);
}
