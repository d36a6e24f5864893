/* Data-parallel process groups: ranks from the environment, a TCP rendezvous,
 * host collectives over a TCP ring, NCCL for GPU tensors, and the bucketed
 * gradient all-reduce that overlaps the backward pass (docs/distributed.md).
 *
 * Environment (the first complete set wins; none: world size 1):
 *   torchrun   RANK, WORLD_SIZE, LOCAL_RANK
 *   Open MPI   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
 *   MPICH/PMI  PMI_RANK, PMI_SIZE (MPI_LOCALRANKID)
 *   Slurm      SLURM_PROCID, SLURM_STEP_NUM_TASKS or SLURM_NTASKS, SLURM_LOCALID
 * and MASTER_ADDR / MASTER_PORT (default 127.0.0.1:29500) for the
 * rendezvous: rank 0 listens there, the others connect to it. Under
 * torchrun with TORCHELASTIC_USE_AGENT_STORE=True (PyTorch 2: torchrun's
 * agent serves MASTER_PORT itself) the rendezvous takes MASTER_PORT + 1;
 * NCMI_DIST_PORT overrides the port in every case. MPI is never linked:
 * mpirun only starts the processes. NCMI_DIST_TIMEOUT (seconds,
 * default 300) bounds every wait for a peer; NCMI_DIST_BUCKET_MB (default 25)
 * sizes the gradient buckets.
 *
 * Transport: after the rendezvous the ranks form a ring of TCP connections
 * (rank r sends to r+1 and receives from r-1). Host all-reduces run on it as
 * reduce-scatter + all-gather: each element is summed once, along the ring,
 * in an order fixed by the world size and the length, and that one result
 * is copied to every rank: all ranks get the same bits. With the NCCL
 * backend the ring still carries the rendezvous (the ncclUniqueId), the
 * host collectives and barriers; GPU gradients and tensors go through NCCL
 * on a communication stream of its own.
 *
 * Failures (a peer that dies, a port in use, a peer that does not answer
 * within the timeout) set ncmi_error() to a message that names this rank,
 * the peer's rank and address and the cause, and the group stays failed:
 * every later call returns -1 at once. Nothing waits forever, except
 * nn_dist_barrier(d, -1), which still fails as soon as a peer's connection
 * closes (a process that dies) or TCP keep-alive gives up (a machine that
 * vanishes, about two minutes).
 *
 * Every rank must make the same collective calls in the same order. The
 * functions are not meant to be called from several threads at once (the
 * reducer's own thread is serialised with the caller internally). */
#ifndef NCMI_DIST_H
#define NCMI_DIST_H

#include <stddef.h>

#include "params.h"
#include "tensor.h"

typedef enum nn_dist_backend {
    NN_DIST_TCP = 0,  /* host collectives over the TCP ring (GPU tensors staged through the host) */
    NN_DIST_NCCL = 1, /* GPU tensors through NCCL; host collectives over the ring */
} nn_dist_backend;
const char *nn_dist_backend_name(nn_dist_backend b); /* "tcp", "nccl" */
/* 1 when this build has the NCCL backend. */
int nn_dist_nccl_built(void);

/* ---- the environment ---- */
typedef struct nn_dist_env {
    int rank, world;
    int local_rank;      /* -1 when the launcher does not say */
    char addr[256];      /* MASTER_ADDR (default 127.0.0.1) */
    int port;            /* rendezvous port: MASTER_PORT (default 29500; see above) */
    char source[64];     /* "torchrun", "openmpi", "pmi", "slurm" or "none" */
    double timeout;      /* NCMI_DIST_TIMEOUT seconds (default 300) */
} nn_dist_env;
/* Reads the variables above. 0, or -1 with ncmi_error() naming the variable
 * and its value (not an integer, rank outside [0, world), port outside
 * 1..65535, timeout not > 0). */
int nn_dist_env_read(nn_dist_env *e);
/* The GPU this process should use when the user asked for "cuda" or "auto":
 * local rank (or rank) modulo n_devices, 0 for a single process. */
int nn_dist_env_device(int n_devices);

/* ---- process groups ---- */
typedef struct nn_dist nn_dist;
/* Rendezvous of e->world processes and, for NCCL, the communicator (the
 * GPU must be initialised: nn_cuda_init). World size 1 makes a group that
 * opens no socket (collectives copy nothing; NCCL with one rank is real).
 * 0, or -1 with ncmi_error() set and *out NULL. */
int nn_dist_init(nn_dist **out, const nn_dist_env *e, nn_dist_backend backend);
void nn_dist_free(nn_dist *d); /* NULL ok; closes the sockets, destroys the communicator */
int nn_dist_rank(const nn_dist *d);  /* 0 for NULL */
int nn_dist_world(const nn_dist *d); /* 1 for NULL */
nn_dist_backend nn_dist_backend_of(const nn_dist *d);
double nn_dist_timeout(const nn_dist *d);
/* "tcp, world size 2, rank 0 (torchrun environment, rendezvous 127.0.0.1:29500)" */
const char *nn_dist_describe(const nn_dist *d);

/* ---- host collectives (every rank, same order) ----
 * Sums in place over all ranks; every rank gets the same bits. */
int nn_dist_allreduce_f32(nn_dist *d, float *x, size_t n);
int nn_dist_allreduce_f64(nn_dist *d, double *x, size_t n);
/* bytes of root's buf copied into every rank's buf. */
int nn_dist_broadcast(nn_dist *d, void *buf, size_t bytes, int root);
/* Returns when every rank has entered it. timeout_s > 0: that limit, 0: the
 * group's timeout, < 0: none (waiting for rank 0's evaluation, say); a
 * peer's death is still an error at once. */
int nn_dist_barrier(nn_dist *d, double timeout_s);

/* ---- tensors on any device ---- */
/* t's data from root on every rank (NCCL for GPU tensors with that backend;
 * otherwise staged through the host). */
int nn_dist_broadcast_tensor(nn_dist *d, nn_tensor *t, int root);

/* ---- the gradient reducer ----
 * Averages the gradients of every trainable tensor of P (NN_PARAM_WEIGHT
 * that requires a gradient) over the ranks. The tensors are laid out in
 * buckets of about bucket_bytes in REVERSE order of P (the order in which
 * the backward pass finishes them); with the hook of nn_graph_set_grad_hook
 * a bucket is reduced as soon as each of its tensors' gradients is final and
 * every earlier bucket has been launched, so communication overlaps the rest
 * of the backward pass:
 *   TCP:  a communication thread runs the ring all-reduce of each bucket
 *         (host tensors); GPU tensors with TCP are copied to the host and
 *         reduced in nn_dist_reducer_finish (no overlap: a fallback);
 *   NCCL: the bucket is packed, all-reduced and unpacked on the
 *         communication stream after an event of the compute stream; finish
 *         makes the compute stream wait for it (no host wait).
 * Per step:
 *   nn_dist_reducer_begin(r, g, weight);  // weight: this rank's share of the global batch
 *   nn_backward(g, loss);                 // buckets go out as they complete
 *   nn_dist_reducer_finish(r);            // grad = sum over ranks of weight_r * grad_r
 * A rank without samples calls begin and finish without a backward (its
 * gradients count as zero). A tensor without a gradient buffer on every
 * rank keeps none (the optimizers skip it, as in one process); one with a
 * buffer on some rank gets one on every rank. */
typedef struct nn_dist_reducer nn_dist_reducer;
/* bucket_bytes 0: NCMI_DIST_BUCKET_MB or 25 MB. 0 or -1 (ncmi_error). */
int nn_dist_reducer_new(nn_dist_reducer **out, nn_dist *d, const nn_params *P, size_t bucket_bytes);
void nn_dist_reducer_free(nn_dist_reducer *r); /* NULL ok */
/* g may be NULL (no overlap: everything is reduced in finish). */
int nn_dist_reducer_begin(nn_dist_reducer *r, nn_graph *g, double weight);
int nn_dist_reducer_finish(nn_dist_reducer *r);
typedef struct nn_dist_reducer_stats {
    int n_buckets;          /* buckets in the layout */
    int n_tensors;          /* tensors reduced */
    size_t bytes;           /* payload of one step (floats, flags included) */
    long steps;             /* finished steps */
    long buckets_in_backward; /* buckets launched by the hook, before finish */
    long buckets_at_finish;   /* buckets launched by finish */
} nn_dist_reducer_stats;
void nn_dist_reducer_stats_get(const nn_dist_reducer *r, nn_dist_reducer_stats *s);

#endif
