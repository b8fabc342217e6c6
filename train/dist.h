// dist.h: data parallelism across processes. One process per device (GPU, or a CPU rank);
// launched with mpirun, ranks talk through MPI. Without mpirun (no launcher environment) the
// process is rank 0 of 1 and MPI is never initialised, so a plain `groundc train` needs no MPI
// runtime at all.
//
// Gradients are summed across ranks in buckets of contiguous gradients (a few calls per step
// rather than one per tensor). Host f32 gradients go through MPI; the sum is deterministic for
// a given world size (fixed buckets, fixed order), so CPU runs repeat bitwise. GPU gradients
// (f32 or bf16) go through NCCL when groundc was built with it (GROUNDC_HAVE_NCCL): one
// communicator per process, its id broadcast over MPI; without NCCL (and for bf16 host
// gradients) each bucket is staged through host f32 and MPI: slow but correct.
//
// Overlap with the backward pass (tr_grad_reducer, fed by ag_backward_watch, which reports
// each parameter once no tape node still to run can add into its gradient): a bucket is
// issued once all its gradients are final and every earlier bucket has been issued, so every
// rank issues the same collectives in the same order although ranks' tapes differ (a rank
// with no video in its micro-batch has its video gradients final from the start). What
// overlaps: host f32 gradients (MPI_Iallreduce on a communicator of their own, advanced by
// MPI_Testall at each report), and GPU gradients with NCCL (packing and ncclAllReduce on a
// non-blocking stream of their own that waits for the backward kernels through an event;
// written and compiled, never run on a GPU). What does not: the host-staged path (GPU without
// NCCL, bf16 host gradients) and a world of one, which run as tr_dist_allreduce_grads after
// the backward pass. Every MPI, NCCL and CUDA call is checked and a failure is one line naming
// the call; the host waits for the gradient all-reduces polling NCCL's asynchronous error, so
// a collective that fails inside NCCL stops the run instead of hanging it.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/tensor.h"

typedef struct {
    int rank, world;
    int local_rank;  // rank on this node (which GPU), from the launcher's environment
    int local_size;  // ranks on this node (they share its CPU cores)
    int cpu_threads; // threads of this rank's CPU kernels
    bool mpi;        // MPI initialised by tr_dist_init
} tr_dist;

// Initialises MPI when launched by mpirun (OpenMPI, MPICH/PMI or PMIx environment), else a
// world of one. With more than one rank it starts the collective watchdog: a rank that waits
// longer than the timeout in one collective (another rank stopped, hung or died) fails with
// one line naming it instead of waiting for ever.
tr_dist tr_dist_init(int *argc, char ***argv);
// The watchdog's timeout in seconds (train.collective_timeout_s; 0: none). The default is
// PyTorch's for NCCL process groups: long enough for a rank that writes a 7B checkpoint alone.
#define TR_DIST_TIMEOUT_S 1800.0
void tr_dist_set_timeout(double seconds);
// This process's rank and (in *world) the number of processes started with it, from the
// launcher's environment alone (MPI untouched): 0 and 1 without a launcher. For the commands
// that run as one process.
int tr_dist_launch_rank(int *world);
// Finalises MPI if it was initialised.
void tr_dist_finalize(tr_dist *d);
// Aborts every rank (after a one-line error on this one): an error on one rank must not leave
// the others waiting in a collective.
_Noreturn void tr_dist_abort(const tr_dist *d, int code);
// Ends the process with code after tr_dist_finalize: every rank calls it at the same point
// (a stop all ranks agreed on), unlike tr_dist_abort.
_Noreturn void tr_dist_exit(const tr_dist *d, int code);

// Makes dev the device of this process's tensors: for AG_CUDA, selects GPU local_rank % (GPUs
// visible) and, with more than one rank and NCCL, creates the NCCL communicator (once;
// collective). name (cap bytes) gets a description such as "cuda:1 (NVIDIA H100)" or "cpu".
// Call before anything is allocated on the device.
void tr_dist_use_device(const tr_dist *d, ag_device dev, char *name, size_t cap);

void tr_dist_barrier(const tr_dist *d);
// In-place sum over ranks of n doubles (losses, token counts).
void tr_dist_sum_f64(const tr_dist *d, double *x, int n);
// In-place sum over ranks of the gradients of params (contiguous f32 or bf16 gradients, on
// the host or the GPU), packed into buckets of at most bucket_elems elements (larger
// gradients go alone, in place). scale multiplies the result.
void tr_dist_allreduce_grads(const tr_dist *d, ag_tensor **params, int n, double scale,
                             int64_t bucket_elems);

// The gradient all-reduce of training, overlapped with the last micro-batch's backward pass:
//   r = tr_grad_reducer_new(d, params, n, bucket_elems)            once (collective)
//   per step: backward passes of the micro-batches but the last (ag_backward), then
//     tr_grad_reducer_begin(r);
//     ag_backward_watch(ctx, loss, params, n, tr_grad_reducer_ready, r);
//     tr_grad_reducer_issue_rest(r);
//     ... (other collectives, such as tr_dist_sum_f64, may come here) ...
//     tr_grad_reducer_finish(r, scale);
// A rank that skips its last backward pass (no supervised token) calls issue_rest alone: it
// issues every bucket. It must do so before any blocking collective: with NCCL the other
// ranks' all-reduces, already queued, wait on the GPU for its part, and a device-wide wait
// on their side (a cudaFree) would wait for it while it waits for them in MPI. The buckets are
// fixed at creation and the same on every rank: params in reverse (the last parameters' gradients
// tend to be final first), runs of small gradients of one dtype packed up to bucket_elems, a
// gradient of bucket_elems or more alone, in place. Sums are unscaled until finish (the scale, 1 /
// tokens of all ranks, is known only after the backward pass). params must outlive the reducer.
typedef struct tr_grad_reducer tr_grad_reducer;
tr_grad_reducer *tr_grad_reducer_new(const tr_dist *d, ag_tensor **params, int n,
                                     int64_t bucket_elems);
void tr_grad_reducer_free(tr_grad_reducer *r);
void tr_grad_reducer_begin(tr_grad_reducer *r);
// An ag_grad_ready_fn (user: the reducer): param = params[index] of tr_grad_reducer_new has
// its final gradient for this step (watch the same params array).
void tr_grad_reducer_ready(ag_tensor *param, int index, void *user);
// Issues every bucket not yet issued (after the watched pass nothing is left; a rank that ran
// none issues them all), in bucket order.
void tr_grad_reducer_issue_rest(tr_grad_reducer *r);
// Issues what is left, waits for every bucket (on a GPU: makes stream 0 wait), writes the
// sums times scale into the gradients.
void tr_grad_reducer_finish(tr_grad_reducer *r, double scale);

// Copies tensor t (contiguous; host or GPU) from rank root to every rank.
void tr_dist_broadcast(const tr_dist *d, ag_tensor *t, int root);
// Copies each t[i] from rank root[i] to every rank, as one batch: a single NCCL group on the
// GPU, non-blocking MPI broadcasts completed together on the host (ZeRO-1's parameter
// exchange, hundreds of tensors, pays one latency instead of one per tensor).
void tr_dist_broadcast_all(const tr_dist *d, ag_tensor **t, const int *root, int n);
// Rank root's string (at most cap bytes with the NUL) to every rank.
void tr_dist_broadcast_str(const tr_dist *d, char *s, int cap, int root);
// True on every rank when ok is true on every rank (a collective "all good?").
bool tr_dist_all(const tr_dist *d, bool ok);
// Whether every rank's text is rank 0's (collective; rank 0 broadcasts its own). On a rank whose
// text differs, *root_text gets rank 0's (allocated, for the message); NULL elsewhere.
bool tr_dist_agree(const tr_dist *d, const char *mine, char **root_text);
