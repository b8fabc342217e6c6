// dist.h: data parallelism across processes. One process per device (GPU, or a CPU rank);
// launched with mpirun, ranks talk through MPI. Without mpirun (no launcher environment) the
// process is rank 0 of 1 and MPI is never initialised, so a plain `groundc train` needs no MPI
// runtime at all.
//
// Gradients are summed across ranks in buckets of contiguous gradients (a few calls per step
// rather than one per tensor). Host f32 gradients go through MPI_Allreduce; the sum is
// deterministic for a given world size, so CPU runs repeat bitwise. GPU gradients (f32 or
// bf16) go through NCCL when groundc was built with it (GROUNDC_HAVE_NCCL): one communicator
// per process, its id broadcast over MPI; without NCCL (and for bf16 host gradients) each
// bucket is staged through host f32 and MPI: slow but correct. The all-reduce runs after the
// backward pass: the tape has no per-gradient hook to start buckets early. Every MPI, NCCL
// and CUDA call is checked and a failure is one line naming the call.
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
// world of one.
tr_dist tr_dist_init(int *argc, char ***argv);
// Finalises MPI if it was initialised.
void tr_dist_finalize(tr_dist *d);
// Aborts every rank (after a one-line error on this one): an error on one rank must not leave
// the others waiting in a collective.
_Noreturn void tr_dist_abort(const tr_dist *d, int code);

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
// Copies tensor t (contiguous; host or GPU) from rank root to every rank.
void tr_dist_broadcast(const tr_dist *d, ag_tensor *t, int root);
// Rank root's string (at most cap bytes with the NUL) to every rank.
void tr_dist_broadcast_str(const tr_dist *d, char *s, int cap, int root);
// True on every rank when ok is true on every rank (a collective "all good?").
bool tr_dist_all(const tr_dist *d, bool ok);
