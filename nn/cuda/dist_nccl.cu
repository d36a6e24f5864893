// NCCL for nn/dist.c: communicator, communication stream, bucket
// pack/all-reduce/unpack, broadcast, and the watchdog (nn/dist_nccl.h).
#if NCMI_HAVE_NCCL

#include <cuda_runtime.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cuda.h"
#include "check.cuh"

extern "C" {
#include "../dist_nccl.h"
#include "../error.h"
}

struct nn_nccl {
    ncclComm_t comm = nullptr;
    cudaStream_t stream = nullptr; // the communication stream
    cudaEvent_t ev_ready = nullptr; // compute stream -> communication stream
    cudaEvent_t ev_done = nullptr;  // communication stream -> compute stream, and the watchdog's probe
    int device = -1, rank = 0, world = 1;
    double timeout = 300;
    char who[400] = "";
    // watchdog
    pthread_t wd;
    int wd_on = 0, stop = 0;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int pending = 0; // a launch whose completion ev_done has not shown yet
    double t0 = 0;   // when the oldest such launch was made
};

static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The communicator is non-blocking (its init can be bounded in time), so
// an NCCL call may answer ncclInProgress: poll until it settles, then check
// as NN_GPU_CHECK does (file:line, NCCL's message, the call), naming the rank.
static void nccl_settle(nn_nccl *c, ncclResult_t r, const char *call, const char *file, int line)
{
    const double t0 = now_s();
    while (r == ncclInProgress) {
        if (now_s() - t0 > c->timeout) {
            fprintf(stderr, "ncmi: dist %s: NCCL call did not settle within %g s (NCMI_DIST_TIMEOUT) at %s:%d (%s)\n",
                    c->who, c->timeout, file, line, call);
            ncclCommAbort(c->comm);
            _exit(4);
        }
        usleep(100);
        ncclCommGetAsyncError(c->comm, &r);
    }
    if (r != ncclSuccess) {
        fprintf(stderr, "ncmi: NCCL error at %s:%d: %s (%s) on %s\n", file, line, ncclGetErrorString(r), call, c->who);
        abort();
    }
}
#define NN_NCCL_CHECK(c, call) nccl_settle((c), (call), #call, __FILE__, __LINE__)

static void *watchdog(void *arg)
{
    nn_nccl *c = (nn_nccl *)arg;
    NN_GPU_CHECK(cudaSetDevice(c->device));
    for (;;) {
        usleep(100 * 1000);
        pthread_mutex_lock(&c->mu);
        if (c->stop) {
            pthread_mutex_unlock(&c->mu);
            return nullptr;
        }
        const char *why = nullptr;
        ncclResult_t ae = ncclSuccess;
        if (c->pending) {
            cudaError_t q = cudaEventQuery(c->ev_done);
            if (q == cudaSuccess) c->pending = 0;
            else if (q != cudaErrorNotReady) why = cudaGetErrorString(q);
            else if (now_s() - c->t0 > c->timeout) why = "no progress";
        }
        if (ncclCommGetAsyncError(c->comm, &ae) == ncclSuccess && ae != ncclSuccess && ae != ncclInProgress)
            why = ncclGetErrorString(ae);
        if (why) {
            fprintf(stderr,
                    "ncmi: dist %s: an NCCL collective did not complete within %g s or failed (%s): a peer "
                    "died, stalls or left the job (NCMI_DIST_TIMEOUT); aborting the communicator\n",
                    c->who, c->timeout, why);
            fflush(stderr);
            ncclCommAbort(c->comm);
            _exit(4);
        }
        pthread_mutex_unlock(&c->mu);
    }
}

// After each launch: mark it for the watchdog.
static void launched(nn_nccl *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->pending) c->t0 = now_s();
    c->pending = 1;
    NN_GPU_CHECK(cudaEventRecord(c->ev_done, c->stream));
    pthread_mutex_unlock(&c->mu);
}

// The communication stream waits for what the compute stream has queued.
static void after_compute(nn_nccl *c)
{
    NN_GPU_CHECK(cudaEventRecord(c->ev_ready, NN_STREAM));
    NN_GPU_CHECK(cudaStreamWaitEvent(c->stream, c->ev_ready, 0));
}

extern "C" int nn_nccl_unique_id(unsigned char id[NN_NCCL_ID_BYTES])
{
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return ncmi_error_set("NCCL: ncclGetUniqueId: %s", ncclGetErrorString(r));
    static_assert(sizeof u == NN_NCCL_ID_BYTES, "ncclUniqueId size");
    memcpy(id, &u, sizeof u);
    return 0;
}

extern "C" int nn_nccl_new(nn_nccl **out, const unsigned char id[NN_NCCL_ID_BYTES], int world, int rank,
                           double timeout, const char *who)
{
    *out = nullptr;
    nn_nccl *c = new nn_nccl();
    c->device = nn_cuda_current();
    c->rank = rank;
    c->world = world;
    c->timeout = timeout;
    snprintf(c->who, sizeof c->who, "%s", who);
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, world, u, rank, &cfg);
    const double t0 = now_s();
    while (r == ncclInProgress) {
        if (now_s() - t0 > timeout) {
            ncclCommAbort(c->comm);
            delete c;
            return ncmi_error_set("NCCL: the communicator of %s was not ready within %g s: a rank did not "
                                  "join (NCMI_DIST_TIMEOUT)",
                                  who, timeout);
        }
        usleep(1000);
        ncclCommGetAsyncError(c->comm, &r);
    }
    if (r != ncclSuccess) {
        // e.g. ncclInvalidUsage when two ranks share one GPU ("Duplicate GPU detected")
        const char *last = ncclGetLastError(c->comm);
        if (c->comm) ncclCommAbort(c->comm);
        delete c;
        return ncmi_error_set("NCCL: ncclCommInitRankConfig on %s (cuda:%d) failed at %s:%d: %s%s%s", who,
                              nn_cuda_current(), __FILE__, __LINE__, ncclGetErrorString(r),
                              last && *last ? ": " : "", last && *last ? last : "");
    }
    NN_GPU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    NN_GPU_CHECK(cudaEventCreateWithFlags(&c->ev_ready, cudaEventDisableTiming));
    NN_GPU_CHECK(cudaEventCreateWithFlags(&c->ev_done, cudaEventDisableTiming));
    if (pthread_create(&c->wd, nullptr, watchdog, c) == 0) c->wd_on = 1;
    *out = c;
    return 0;
}

extern "C" void nn_nccl_free(nn_nccl *c)
{
    if (!c) return;
    if (c->wd_on) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->wd, nullptr);
    }
    if (c->stream) NN_GPU_CHECK(cudaStreamSynchronize(c->stream));
    if (c->comm) {
        ncclResult_t r = ncclCommFinalize(c->comm);
        nccl_settle(c, r, "ncclCommFinalize", __FILE__, __LINE__);
        NN_NCCL_CHECK(c, ncclCommDestroy(c->comm));
    }
    if (c->ev_ready) NN_GPU_CHECK(cudaEventDestroy(c->ev_ready));
    if (c->ev_done) NN_GPU_CHECK(cudaEventDestroy(c->ev_done));
    if (c->stream) NN_GPU_CHECK(cudaStreamDestroy(c->stream));
    delete c;
}

// dst[i] = w * src[i]; one thread also writes the item's flag.
__global__ void k_pack(float *dst, const float *src, size_t n, float w, float *flag_dst, float flag)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __fmul_rn(w, src[i]);
    if (blockIdx.x == 0 && threadIdx.x == 0) *flag_dst = flag;
}

extern "C" void nn_nccl_bucket(nn_nccl *c, float *buf, size_t total, const nn_nccl_item *items, int k,
                               float weight)
{
    after_compute(c);
    for (int i = 0; i < k; i++) {
        const nn_nccl_item *it = &items[i];
        k_pack<<<nn_grid(it->numel), 256, 0, c->stream>>>(buf + it->off, it->grad, it->numel, weight,
                                                           buf + it->flag_off, it->flag);
        NN_CUDA_LAUNCHED();
    }
    NN_NCCL_CHECK(c, ncclAllReduce(buf, buf, total, ncclFloat, ncclSum, c->comm, c->stream));
    for (int i = 0; i < k; i++) {
        const nn_nccl_item *it = &items[i];
        if (it->numel)
            NN_GPU_CHECK(cudaMemcpyAsync(it->grad, buf + it->off, it->numel * sizeof(float),
                                         cudaMemcpyDeviceToDevice, c->stream));
    }
    launched(c);
}

extern "C" void nn_nccl_join(nn_nccl *c)
{
    launched(c);
    NN_GPU_CHECK(cudaStreamWaitEvent(NN_STREAM, c->ev_done, 0));
}

extern "C" void nn_nccl_read(nn_nccl *c, float *host, const float *dev, size_t n)
{
    if (!n) return;
    NN_GPU_CHECK(cudaMemcpyAsync(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    launched(c);
    NN_GPU_CHECK(cudaStreamSynchronize(c->stream));
}

extern "C" void nn_nccl_broadcast(nn_nccl *c, float *dev, size_t n, int root)
{
    after_compute(c);
    NN_NCCL_CHECK(c, ncclBroadcast(dev, dev, n, ncclFloat, root, c->comm, c->stream));
    nn_nccl_join(c);
}

extern "C" void nn_nccl_allreduce(nn_nccl *c, float *dev, size_t n)
{
    after_compute(c);
    NN_NCCL_CHECK(c, ncclAllReduce(dev, dev, n, ncclFloat, ncclSum, c->comm, c->stream));
    nn_nccl_join(c);
}

#else
// built without NCCL: nn/dist.c uses the TCP backend only
typedef int nn_dist_nccl_unused;
#endif
