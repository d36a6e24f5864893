/* Internal: the NCCL side of nn/dist.c (nn/cuda/dist_nccl.cu, built when
 * nvcc and nccl.h are found: NCMI_HAVE_NCCL). Not for other callers.
 *
 * One communicator, one communication stream. Every launch first makes the
 * communication stream wait for an event recorded on the compute stream
 * (nn_cuda_stream), so it sees what the compute stream has queued so far;
 * nn_nccl_join makes the compute stream wait for what the communication
 * stream has queued (no host wait). A watchdog thread checks the last
 * launch: when it has not completed within the timeout, or NCCL reports an
 * asynchronous error, it prints a message naming the rank and the
 * rendezvous, aborts the communicator and ends the process (exit code 4):
 * the host would otherwise wait forever inside a CUDA synchronisation. */
#ifndef NCMI_DIST_NCCL_H
#define NCMI_DIST_NCCL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_NCCL_ID_BYTES 128

typedef struct nn_nccl nn_nccl;

/* ncclGetUniqueId (rank 0). 0 or -1 with ncmi_error(). */
int nn_nccl_unique_id(unsigned char id[NN_NCCL_ID_BYTES]);
/* ncclCommInitRankConfig (non-blocking, polled up to timeout seconds) on
 * the current GPU. who: "rank 1 of 2 (rendezvous 10.0.0.1:29500)" for
 * messages. 0 or -1 with ncmi_error() (NCCL's message, e.g. two ranks on
 * one GPU). */
int nn_nccl_new(nn_nccl **out, const unsigned char id[NN_NCCL_ID_BYTES], int world, int rank,
                double timeout, const char *who);
void nn_nccl_free(nn_nccl *c); /* NULL ok */

/* One tensor of a bucket: its gradient (device, numel floats) goes to
 * buf[off..off+numel) scaled by the weight; buf[flag_off] = flag. */
typedef struct nn_nccl_item {
    float *grad;
    size_t numel, off, flag_off;
    float flag;
} nn_nccl_item;
/* On the communication stream: pack the k items into buf (device, total
 * floats), all-reduce buf (sum), copy each item's part back into its
 * gradient. Returns at once. */
void nn_nccl_bucket(nn_nccl *c, float *buf, size_t total, const nn_nccl_item *items, int k,
                    float weight);
/* The compute stream waits for everything queued on the communication stream. */
void nn_nccl_join(nn_nccl *c);
/* n floats of dev (written by the communication stream) into host; waits. */
void nn_nccl_read(nn_nccl *c, float *host, const float *dev, size_t n);
/* dev (n floats) of root on every rank, in compute-stream order (joined). */
void nn_nccl_broadcast(nn_nccl *c, float *dev, size_t n, int root);
/* dev summed over the ranks in place, in compute-stream order (joined). */
void nn_nccl_allreduce(nn_nccl *c, float *dev, size_t n);

#ifdef __cplusplus
}
#endif

#endif
