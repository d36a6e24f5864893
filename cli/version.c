/* ncmi version: the Makefile passes NCMI_GIT_DESCRIBE (git describe of the
 * tree) when it compiles this file, at every build. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <yaml.h>
#include <jansson.h>

#include "cli.h"
#include "../nn/cuda.h"

#ifndef NCMI_GIT_DESCRIBE
#define NCMI_GIT_DESCRIBE "unknown"
#endif
#ifndef NCMI_HAVE_CUDA
#define NCMI_HAVE_CUDA 0
#endif
#ifndef NCMI_HAVE_CUDNN
#define NCMI_HAVE_CUDNN 0
#endif
#ifndef NCMI_HAVE_NCCL
#define NCMI_HAVE_NCCL 0
#endif
#ifndef NCMI_HAVE_MPI
#define NCMI_HAVE_MPI 0
#endif
#ifndef NCMI_HAVE_OPENSLIDE
#define NCMI_HAVE_OPENSLIDE 0
#endif
#ifndef NCMI_HAVE_VIPS
#define NCMI_HAVE_VIPS 0
#endif
#ifndef NCMI_HAVE_HDF5
#define NCMI_HAVE_HDF5 0
#endif

const char *ncmi_version_string(void) { return NCMI_GIT_DESCRIBE; }

static const char *yn(int b) { return b ? "yes" : "no"; }

void ncmi_version_print(FILE *f)
{
    fprintf(f, "ncmi %s\n", ncmi_version_string());
    fprintf(f, "features: CPU yes, OpenMP yes (max %d threads), CUDA %s, cuDNN %s, NCCL %s, MPI %s,\n"
               "          OpenSlide %s, libvips %s, HDF5 %s\n",
            omp_get_max_threads(), yn(NCMI_HAVE_CUDA), yn(NCMI_HAVE_CUDNN), yn(NCMI_HAVE_NCCL),
            yn(NCMI_HAVE_MPI), yn(NCMI_HAVE_OPENSLIDE), yn(NCMI_HAVE_VIPS), yn(NCMI_HAVE_HDF5));
    int ngpu = nn_cuda_device_count();
    if (!nn_cuda_built()) {
        fprintf(f, "GPU: none (built without CUDA)\n");
    } else if (ngpu == 0) {
        fprintf(f, "GPU: none found (CUDA built in; no device or driver)\n");
    } else {
        for (int i = 0; i < ngpu; i++) {
            char d[256];
            fprintf(f, "GPU %d: %s\n", i, nn_cuda_describe(i, d, sizeof d));
        }
    }
    fprintf(f, "OpenBLAS: %s\n", openblas_get_config());
    fprintf(f, "libyaml %s, jansson %s\n", yaml_get_version_string(), JANSSON_VERSION);
#if defined(__clang__)
    fprintf(f, "compiler: %s\n", __VERSION__);
#elif defined(__GNUC__)
    fprintf(f, "compiler: gcc %s\n", __VERSION__);
#endif
}
