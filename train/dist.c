// dist.c: see dist.h.
#include "train/dist.h"

#include <mpi.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#ifdef GROUNDC_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

static void mpi_check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
    ag_fail("mpi: %s failed: %s", call, msg);
}

// The collective watchdog. A rank that waits in a collective (MPI, or the NCCL all-reduce it
// polls) for another that has stopped (SIGSTOP, a debugger, a hung file system) or died
// without its launcher noticing would wait for ever: MPI has no timeout. The thread started by
// tr_dist_init checks twice a second how long this rank has been waiting and, past the
// timeout, fails with one line naming the collective; the launcher then ends the job.
static _Atomic int64_t g_wait_since; // CLOCK_MONOTONIC ns when the wait began, 0: not waiting
static const char *_Atomic g_wait_what;
static _Atomic double g_timeout_s = TR_DIST_TIMEOUT_S;
static int g_watch_rank;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void wait_begin(const char *what) {
    atomic_store(&g_wait_what, what);
    atomic_store(&g_wait_since, now_ns());
}

static void wait_end(void) {
    atomic_store(&g_wait_since, 0);
}

// A blocking MPI call, watched and checked.
#define mpi_wait(call, what)                                                                       \
    do {                                                                                           \
        wait_begin(what);                                                                          \
        int rc_ = (call);                                                                          \
        wait_end();                                                                                \
        mpi_check(rc_, what);                                                                      \
    } while (0)

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        const struct timespec pause = {0, 500 * 1000 * 1000};
        nanosleep(&pause, NULL);
        int64_t since = atomic_load(&g_wait_since);
        double limit = atomic_load(&g_timeout_s);
        if (!since || limit <= 0) continue;
        double waited = (double)(now_ns() - since) * 1e-9;
        if (waited > limit)
            ag_fail("[rank %d] waited %.0f s in %s for the other ranks: one of them has stopped, "
                    "hung or died (train.collective_timeout_s is %.10g; 0 waits for ever)",
                    g_watch_rank, waited, atomic_load(&g_wait_what), limit);
    }
    return NULL;
}

void tr_dist_set_timeout(double seconds) {
    atomic_store(&g_timeout_s, seconds);
}

#ifdef GROUNDC_HAVE_NCCL
// One communicator per process (one process per GPU); NULL until tr_dist_use_device makes it.
static ncclComm_t g_nccl;
// The device bucket small gradients are packed into, kept from step to step.
static void *g_bucket;
static size_t g_bucket_bytes;

static void nccl_check(ncclResult_t rc, const char *call) {
    if (rc == ncclSuccess) return;
    const char *last = "";
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    last = ncclGetLastError(g_nccl);
    if (!last) last = "";
#endif
    ag_fail("nccl: %s failed: %s%s%s%s", call, ncclGetErrorString(rc), *last ? " (" : "", last,
            *last ? ")" : "");
}

static void cuda_check(cudaError_t rc, const char *call) {
    if (rc != cudaSuccess) ag_fail("cuda: %s failed: %s", call, cudaGetErrorString(rc));
}
#endif

static int env_int(const char *const *names, int def) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v);
    }
    return def;
}

// The launchers' world sizes (OpenMPI, MPICH/PMI, PMIx).
static const char *const launch_sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", NULL};

int tr_dist_launch_rank(int *world) {
    static const char *const ranks[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", NULL};
    *world = env_int(launch_sizes, 1);
    if (*world < 1) *world = 1;
    return env_int(ranks, 0);
}

tr_dist tr_dist_init(int *argc, char ***argv) {
    static const char *const locals[] = {"OMPI_COMM_WORLD_LOCAL_RANK",
                                         "MPI_LOCALRANKID",
                                         "PMI_LOCAL_RANK",
                                         "PMIX_LOCAL_RANK",
                                         "SLURM_LOCALID",
                                         NULL};
    tr_dist d = {.rank = 0, .world = 1, .local_rank = 0, .local_size = 1, .mpi = false};
    d.cpu_threads = ag_cpu_share_threads(1);
    if (env_int(launch_sizes, 0) < 1 && !getenv("PMIX_RANK")) return d;
    mpi_check(MPI_Init(argc, argv), "MPI_Init");
    // Errors come back as codes, so that each is reported as one line.
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
              "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &d.rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &d.world), "MPI_Comm_size");
    d.local_rank = env_int(locals, d.rank);
    MPI_Comm node;
    mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    mpi_check(MPI_Comm_size(node, &d.local_size), "MPI_Comm_size (node)");
    mpi_check(MPI_Comm_free(&node), "MPI_Comm_free");
    // Ranks on one node split its cores between their CPU kernels (see ag_cpu_share_threads).
    d.cpu_threads = ag_cpu_share_threads(d.local_size);
    d.mpi = true;
    if (d.world > 1) {
        g_watch_rank = d.rank;
        pthread_t t;
        int e = pthread_create(&t, NULL, watchdog, NULL);
        if (e || (e = pthread_detach(t)))
            ag_fail("mpi: cannot start the collective watchdog thread: %s", strerror(e));
    }
    return d;
}

void tr_dist_use_device(const tr_dist *d, ag_device dev, char *name, size_t cap) {
    if (dev == AG_CPU) {
        int n = d->cpu_threads > 0 ? d->cpu_threads : ag_cpu_share_threads(1);
        snprintf(name, cap, "cpu (%d thread%s)", n, n == 1 ? "" : "s");
        return;
    }
#ifdef GROUNDC_HAVE_CUDA
    char model[256] = "";
    int gpu = ag_cuda_select(d->local_rank, model, sizeof model);
    snprintf(name, cap, "cuda:%d (%s)", gpu, model);
#ifdef GROUNDC_HAVE_NCCL
    // Test hook: GROUNDC_TEST_NO_NCCL=1 takes the host-staged path (which also lets two
    // ranks share one GPU, which NCCL refuses).
    const char *no = getenv("GROUNDC_TEST_NO_NCCL");
    if (d->world > 1 && !g_nccl && !(no && !strcmp(no, "1"))) {
        ncclUniqueId id;
        memset(&id, 0, sizeof id);
        if (d->rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        mpi_wait(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD),
                 "MPI_Bcast (NCCL id)");
        nccl_check(ncclCommInitRank(&g_nccl, d->world, id, d->rank), "ncclCommInitRank");
    }
#endif
    if (d->world > 1) {
        size_t k = strlen(name);
#ifdef GROUNDC_HAVE_NCCL
        bool nccl = g_nccl != NULL;
#else
        bool nccl = false;
#endif
        if (k < cap)
            snprintf(name + k, cap - k, "%s",
                     nccl ? ", gradients summed by NCCL" : ", gradients summed through the host");
    }
#else
    (void)d;
    (void)name;
    (void)cap;
    ag_fail("this groundc was built without CUDA");
#endif
}

void tr_dist_finalize(tr_dist *d) {
#ifdef GROUNDC_HAVE_NCCL
    if (g_bucket) {
        cuda_check(cudaFree(g_bucket), "cudaFree (gradient bucket)");
        g_bucket = NULL;
        g_bucket_bytes = 0;
    }
    if (g_nccl) {
        nccl_check(ncclCommDestroy(g_nccl), "ncclCommDestroy");
        g_nccl = NULL;
    }
#endif
    if (!d->mpi) return;
    mpi_wait(MPI_Finalize(), "MPI_Finalize");
    d->mpi = false;
}

_Noreturn void tr_dist_exit(const tr_dist *d, int code) {
    fflush(stdout);
    fflush(stderr);
    tr_dist d2 = *d; // finalize clears its flag in a copy: the caller's is const
    tr_dist_finalize(&d2);
    exit(code);
}

_Noreturn void tr_dist_abort(const tr_dist *d, int code) {
    fflush(stdout);
    fflush(stderr);
    if (d && d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void tr_dist_barrier(const tr_dist *d) {
    if (d->world > 1) mpi_wait(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

void tr_dist_sum_f64(const tr_dist *d, double *x, int n) {
    if (d->world > 1)
        mpi_wait(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
                 "MPI_Allreduce (f64)");
}

// Host f32 gradients: MPI on the gradients themselves (large ones) or a host bucket.
static void allreduce_host_f32(const tr_dist *d, ag_tensor **params, int n, double scale,
                               int64_t bucket_elems) {
    float s = (float)scale;
    if (d->world == 1) {
        if (scale != 1.0)
            for (int i = 0; i < n; i++) {
                float *g = params[i]->grad->data;
                for (int64_t k = 0, m = ag_numel(params[i]->grad); k < m; k++) g[k] *= s;
            }
        return;
    }
    // Large tensors go in place; small ones are packed into a bucket.
    float *bucket = ag_xmalloc(sizeof(float) * (size_t)bucket_elems, "gradient bucket");
    int first = 0;
    while (first < n) {
        int64_t m0 = ag_numel(params[first]->grad);
        if (m0 >= bucket_elems) {
            float *g = params[first]->grad->data;
            for (int64_t off = 0; off < m0; off += INT32_MAX / 2) {
                int64_t cnt = m0 - off < INT32_MAX / 2 ? m0 - off : INT32_MAX / 2;
                mpi_wait(MPI_Allreduce(MPI_IN_PLACE, g + off, (int)cnt, MPI_FLOAT, MPI_SUM,
                                       MPI_COMM_WORLD),
                         "MPI_Allreduce (gradients)");
            }
            if (scale != 1.0)
                for (int64_t k = 0; k < m0; k++) g[k] *= s;
            first++;
            continue;
        }
        int last = first;
        int64_t fill = 0;
        while (last < n && fill + ag_numel(params[last]->grad) <= bucket_elems) {
            int64_t m = ag_numel(params[last]->grad);
            memcpy(bucket + fill, params[last]->grad->data, sizeof(float) * (size_t)m);
            fill += m;
            last++;
        }
        mpi_wait(MPI_Allreduce(MPI_IN_PLACE, bucket, (int)fill, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                 "MPI_Allreduce (gradient bucket)");
        fill = 0;
        for (int i = first; i < last; i++) {
            float *g = params[i]->grad->data;
            int64_t m = ag_numel(params[i]->grad);
            for (int64_t k = 0; k < m; k++) g[k] = bucket[fill + k] * s;
            fill += m;
        }
        first = last;
    }
    free(bucket);
}

// x (n elements of dtype dt on device dev) *= scale, through the device's scale kernel.
static void scale_on(ag_device dev, ag_dtype dt, void *x, int64_t n, double scale) {
    if (scale == 1.0 || n == 0) return;
    const ag_backend *be = ag_backend_for(dev);
    const ag_kernels *k = be->kernels[dt];
    if (!k || !k->unary_fwd)
        ag_fail("dist: no %s %s scale kernel (unary_fwd) for the gradients", be->name,
                ag_dtype_name(dt));
    k->unary_fwd(AG_UN_SCALE, x, x, n, scale);
}

// The f32 value of element k of a host buffer of dtype dt (f32 or bf16), and back.
static float widen(const void *p, ag_dtype dt, int64_t k) {
    return dt == AG_F32 ? ((const float *)p)[k] : ag_bf16_to_f32(((const uint16_t *)p)[k]);
}
static void narrow(void *p, ag_dtype dt, int64_t k, float v) {
    if (dt == AG_F32)
        ((float *)p)[k] = v;
    else
        ((uint16_t *)p)[k] = ag_f32_to_bf16(v);
}

// Elements [off, off + cnt) of gradient g, widened to f32 into dst (stage: host scratch).
static void stage_in(const ag_tensor *g, int64_t off, int64_t cnt, float *dst, void *stage) {
    const size_t es = ag_dtype_size(g->dtype);
    ag_backend_for(g->device)->copy_to_host(stage, (const char *)g->data + (size_t)off * es,
                                            (size_t)cnt * es);
    for (int64_t k = 0; k < cnt; k++) dst[k] = widen(stage, g->dtype, k);
}
// And back: src * s rounded to g's dtype into elements [off, off + cnt).
static void stage_out(ag_tensor *g, int64_t off, int64_t cnt, const float *src, float s,
                      void *stage) {
    const size_t es = ag_dtype_size(g->dtype);
    for (int64_t k = 0; k < cnt; k++) narrow(stage, g->dtype, k, src[k] * s);
    ag_backend_for(g->device)->copy_from_host((char *)g->data + (size_t)off * es, stage,
                                              (size_t)cnt * es);
}

static void allreduce_f32(float *x, int64_t cnt) {
    mpi_wait(MPI_Allreduce(MPI_IN_PLACE, x, (int)cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
             "MPI_Allreduce (staged gradients)");
}

// Any other gradients (GPU ones without NCCL, bf16 ones on the host): buckets are copied to
// the host, widened to f32, summed with MPI, scaled, rounded back and copied back. Small
// gradients share a bucket; a large one goes through it a piece at a time.
static void allreduce_staged(ag_tensor **params, int n, double scale, int64_t bucket_elems) {
    if (bucket_elems > INT32_MAX / 2) bucket_elems = INT32_MAX / 2; // MPI counts are int
    int64_t total = 1;
    for (int i = 0; i < n; i++) total += ag_numel(params[i]->grad);
    if (bucket_elems > total) bucket_elems = total; // no larger than all of it
    float *bucket = ag_xmalloc(sizeof(float) * (size_t)bucket_elems, "gradient bucket");
    void *stage = ag_xmalloc(sizeof(float) * (size_t)bucket_elems, "gradient staging");
    const float s = (float)scale;
    int first = 0;
    while (first < n) {
        ag_tensor *g0 = params[first]->grad;
        int64_t m0 = ag_numel(g0);
        if (m0 >= bucket_elems) {
            for (int64_t off = 0; off < m0; off += bucket_elems) {
                int64_t cnt = m0 - off < bucket_elems ? m0 - off : bucket_elems;
                stage_in(g0, off, cnt, bucket, stage);
                allreduce_f32(bucket, cnt);
                stage_out(g0, off, cnt, bucket, s, stage);
            }
            first++;
            continue;
        }
        int last = first;
        int64_t fill = 0;
        while (last < n && fill + ag_numel(params[last]->grad) <= bucket_elems) {
            int64_t m = ag_numel(params[last]->grad);
            stage_in(params[last]->grad, 0, m, bucket + fill, stage);
            fill += m;
            last++;
        }
        allreduce_f32(bucket, fill);
        fill = 0;
        for (int i = first; i < last; i++) {
            int64_t m = ag_numel(params[i]->grad);
            stage_out(params[i]->grad, 0, m, bucket + fill, s, stage);
            fill += m;
        }
        first = last;
    }
    free(stage);
    free(bucket);
}

#ifdef GROUNDC_HAVE_NCCL
static ncclDataType_t nccl_type(ag_dtype dt) {
    return dt == AG_BF16 ? ncclBfloat16 : ncclFloat32;
}

// Waits on the host until everything queued on stream before now has run, polling NCCL's
// asynchronous error meanwhile: a collective that fails inside NCCL (a broken link, a peer
// gone) is one line naming it, where the next plain wait on the device would hang (NCCL's
// kernels do not return on such errors). Called once the step's work is queued, it costs
// nothing: the gradient norm's copy right after waits for the same work.
static void nccl_wait(cudaStream_t stream, const char *what) {
    static cudaEvent_t done;
    if (!done)
        cuda_check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming),
                   "cudaEventCreateWithFlags (collectives done)");
    cuda_check(cudaEventRecord(done, stream), "cudaEventRecord (collectives done)");
    wait_begin(what);
    for (;;) {
        cudaError_t q = cudaEventQuery(done);
        if (q == cudaSuccess) {
            wait_end();
            return;
        }
        if (q != cudaErrorNotReady) cuda_check(q, "cudaEventQuery (collectives done)");
        ncclResult_t async = ncclSuccess;
        nccl_check(ncclCommGetAsyncError(g_nccl, &async), "ncclCommGetAsyncError");
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
        if (async == ncclInProgress) async = ncclSuccess;
#endif
        nccl_check(async, what);
        const struct timespec pause = {0, 20 * 1000}; // 20 us
        nanosleep(&pause, NULL);
    }
}

// GPU gradients with NCCL: large ones reduced in place, runs of small ones of one dtype
// packed into a device bucket (one ncclAllReduce each), all on the stream the kernels use
// (the legacy default stream), so the reduction is ordered after the backward pass and
// before the gradient norm without a host synchronisation.
static void allreduce_nccl(ag_tensor **params, int n, double scale, int64_t bucket_elems) {
    const cudaStream_t stream = 0;
    int64_t total = 1;
    for (int i = 0; i < n; i++) total += ag_numel(params[i]->grad);
    size_t need = sizeof(float) * (size_t)(bucket_elems < total ? bucket_elems : total);
    if (g_bucket_bytes < need) {
        if (g_bucket) cuda_check(cudaFree(g_bucket), "cudaFree (gradient bucket)");
        g_bucket = NULL;
        cuda_check(cudaMalloc(&g_bucket, need), "cudaMalloc (gradient bucket)");
        g_bucket_bytes = need;
    }
    char *bucket = g_bucket;
    int first = 0;
    while (first < n) {
        ag_tensor *g0 = params[first]->grad;
        const ag_dtype dt = g0->dtype;
        const size_t es = ag_dtype_size(dt);
        int64_t m0 = ag_numel(g0);
        if (m0 >= bucket_elems) {
            nccl_check(ncclAllReduce(g0->data, g0->data, (size_t)m0, nccl_type(dt), ncclSum, g_nccl,
                                     stream),
                       "ncclAllReduce (gradients)");
            scale_on(AG_CUDA, dt, g0->data, m0, scale);
            first++;
            continue;
        }
        int last = first;
        int64_t fill = 0;
        while (last < n && params[last]->grad->dtype == dt &&
               fill + ag_numel(params[last]->grad) <= bucket_elems) {
            int64_t m = ag_numel(params[last]->grad);
            cuda_check(cudaMemcpyAsync(bucket + (size_t)fill * es, params[last]->grad->data,
                                       (size_t)m * es, cudaMemcpyDeviceToDevice, stream),
                       "cudaMemcpyAsync (gradient into bucket)");
            fill += m;
            last++;
        }
        nccl_check(
            ncclAllReduce(bucket, bucket, (size_t)fill, nccl_type(dt), ncclSum, g_nccl, stream),
            "ncclAllReduce (gradient bucket)");
        scale_on(AG_CUDA, dt, bucket, fill, scale);
        fill = 0;
        for (int i = first; i < last; i++) {
            int64_t m = ag_numel(params[i]->grad);
            cuda_check(cudaMemcpyAsync(params[i]->grad->data, bucket + (size_t)fill * es,
                                       (size_t)m * es, cudaMemcpyDeviceToDevice, stream),
                       "cudaMemcpyAsync (bucket into gradient)");
            fill += m;
        }
        first = last;
    }
    nccl_wait(stream, "ncclAllReduce (gradients)");
}
#endif

// Fails unless every parameter has a contiguous f32 or bf16 gradient; says whether all are
// f32 on the host and whether all are on the GPU.
static void check_grads(ag_tensor **params, int n, bool *host_f32, bool *cuda) {
    *host_f32 = true;
    *cuda = n > 0;
    for (int i = 0; i < n; i++) {
        const ag_tensor *g = params[i]->grad;
        if (!g) ag_fail("dist: parameter '%s' has no gradient", ag_label(params[i], "?"));
        if (!ag_is_contiguous(g) || (g->dtype != AG_F32 && g->dtype != AG_BF16))
            ag_fail("dist: the gradient of '%s' must be a contiguous f32 or bf16 tensor",
                    ag_label(params[i], "?"));
        *host_f32 &= g->dtype == AG_F32 && g->device == AG_CPU;
        *cuda &= g->device == AG_CUDA;
    }
}

void tr_dist_allreduce_grads(const tr_dist *d, ag_tensor **params, int n, double scale,
                             int64_t bucket_elems) {
    if (bucket_elems < 1) bucket_elems = 1;
    bool host_f32, cuda;
    check_grads(params, n, &host_f32, &cuda);
    if (host_f32) {
        allreduce_host_f32(d, params, n, scale, bucket_elems);
        return;
    }
    if (d->world == 1) {
        for (int i = 0; i < n; i++) {
            ag_tensor *g = params[i]->grad;
            scale_on(g->device, g->dtype, g->data, ag_numel(g), scale);
        }
        return;
    }
#ifdef GROUNDC_HAVE_NCCL
    if (cuda && g_nccl) {
        allreduce_nccl(params, n, scale, bucket_elems);
        return;
    }
#endif
    (void)cuda;
    allreduce_staged(params, n, scale, bucket_elems);
}

// The overlapped all-reduce ---------------------------------------------------------------

typedef enum {
    RED_AFTER, // nothing overlaps: tr_dist_allreduce_grads from finish (one rank, staged paths)
    RED_HOST,  // host f32 gradients: MPI_Iallreduce as buckets become ready
    RED_NCCL,  // GPU gradients with NCCL: ncclAllReduce on a stream of the reducer's own
} red_mode;

typedef struct {
    int first, last; // r->order[first .. last)
    int64_t elems;   // in all its gradients
    bool alone;      // one large gradient, reduced in place
    size_t offset;   // bytes into r->pack (a packed bucket)
    int ready;       // its gradients reported final this step
    int req0, n_req; // host: its requests, r->req[req0 .. req0 + n_req)
} red_bucket;

struct tr_grad_reducer {
    tr_dist d;
    red_mode mode;
    ag_tensor **params; // as given (RED_AFTER sums them in this order)
    int n;
    int64_t bucket_elems;
    ag_tensor **order; // params reversed: the buckets' order
    int *bucket_of;    // per params[] index: its bucket (ready reports come by that index)
    red_bucket *b;
    int nb;
    int next;    // the first bucket not issued this step
    bool active; // between begin and finish
    void *pack;  // the packed buckets, side by side (host floats, or device memory)
    MPI_Comm comm;
    MPI_Request *req;
    int n_req, n_live, n_done; // requests in all; issued this step; known complete
#ifdef GROUNDC_HAVE_NCCL
    cudaStream_t stream;           // the NCCL stream (does not wait for stream 0 by itself)
    cudaEvent_t computed, reduced; // on stream 0 at an issue; on the NCCL stream at finish
#endif
};

static int cmp_address(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return (x > y) - (x < y);
}

// MPI counts are int: a large in-place gradient goes in pieces of this many elements.
#define RED_MPI_PIECE ((int64_t)INT32_MAX / 2)

// Fixed buckets over r->order, the same on every rank: runs of small gradients of one dtype
// packed up to bucket_elems elements, any gradient of bucket_elems or more alone.
static size_t plan_buckets(tr_grad_reducer *r) {
    const int64_t be = r->bucket_elems;
    size_t pack_bytes = 0;
    int req = 0;
    r->b = ag_xcalloc((size_t)r->n, sizeof *r->b, "gradient buckets");
    for (int i = 0; i < r->n;) {
        const ag_tensor *g0 = r->order[i]->grad;
        red_bucket *b = &r->b[r->nb++];
        b->first = i;
        if (ag_numel(g0) >= be) {
            b->alone = true;
            b->last = i + 1;
            b->elems = ag_numel(g0);
            b->n_req =
                r->mode == RED_HOST ? (int)((b->elems + RED_MPI_PIECE - 1) / RED_MPI_PIECE) : 1;
        } else {
            int last = i;
            while (last < r->n && r->order[last]->grad->dtype == g0->dtype &&
                   b->elems + ag_numel(r->order[last]->grad) <= be)
                b->elems += ag_numel(r->order[last++]->grad);
            b->last = last;
            b->offset = pack_bytes;
            // 256-byte aligned, as NCCL and vector loads like it
            pack_bytes += ((size_t)b->elems * ag_dtype_size(g0->dtype) + 255) & ~(size_t)255;
            b->n_req = 1;
        }
        b->req0 = req;
        req += b->n_req;
        i = b->last;
    }
    r->n_req = req;
    return pack_bytes;
}

tr_grad_reducer *tr_grad_reducer_new(const tr_dist *d, ag_tensor **params, int n,
                                     int64_t bucket_elems) {
    tr_grad_reducer *r = ag_xcalloc(1, sizeof *r, "gradient reducer");
    r->d = *d;
    r->params = params;
    r->n = n;
    r->bucket_elems = bucket_elems < 1 ? 1 : bucket_elems;
    bool host_f32, cuda;
    check_grads(params, n, &host_f32, &cuda);
    r->mode = RED_AFTER;
    if (d->world > 1 && n > 0 && host_f32) r->mode = RED_HOST;
#ifdef GROUNDC_HAVE_NCCL
    if (d->world > 1 && cuda && g_nccl) r->mode = RED_NCCL;
#endif
    (void)cuda;
    if (r->mode == RED_AFTER) return r;
    // packed host buckets are one MPI call each: their count must be an int
    if (r->mode == RED_HOST && r->bucket_elems > RED_MPI_PIECE) r->bucket_elems = RED_MPI_PIECE;
    r->order = ag_xcalloc((size_t)n, sizeof *r->order, "gradient reducer");
    for (int i = 0; i < n; i++) r->order[i] = params[n - 1 - i];
    size_t pack_bytes = plan_buckets(r);
    r->bucket_of = ag_xcalloc((size_t)n, sizeof *r->bucket_of, "gradient reducer");
    for (int k = 0; k < r->nb; k++)
        for (int i = r->b[k].first; i < r->b[k].last; i++) r->bucket_of[n - 1 - i] = k;
    uintptr_t *addr = ag_xmalloc(sizeof *addr * (size_t)n, "gradient reducer");
    for (int i = 0; i < n; i++) addr[i] = (uintptr_t)params[i];
    qsort(addr, (size_t)n, sizeof *addr, cmp_address);
    for (int i = 1; i < n; i++)
        if (addr[i] == addr[i - 1])
            ag_fail("dist: parameter '%s' listed twice for the gradient all-reduce",
                    ag_label((const ag_tensor *)addr[i], "?"));
    free(addr);
    if (r->mode == RED_HOST) {
        r->pack = ag_xmalloc(pack_bytes ? pack_bytes : 1, "gradient buckets");
        r->req = ag_xmalloc(sizeof *r->req * (size_t)(r->n_req ? r->n_req : 1), "gradient buckets");
        for (int i = 0; i < r->n_req; i++) r->req[i] = MPI_REQUEST_NULL;
        // A communicator of the buckets' own: ranks issue the buckets at different points of
        // their backward passes, so the loss sums' blocking all-reduce on MPI_COMM_WORLD may
        // fall between buckets in a different place on each rank (collectives must come in the
        // same order on each communicator, not across communicators).
        mpi_wait(MPI_Comm_dup(MPI_COMM_WORLD, &r->comm), "MPI_Comm_dup (gradient buckets)");
    }
#ifdef GROUNDC_HAVE_NCCL
    if (r->mode == RED_NCCL) {
        if (pack_bytes)
            cuda_check(cudaMalloc(&r->pack, pack_bytes), "cudaMalloc (gradient buckets)");
        cuda_check(cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking),
                   "cudaStreamCreateWithFlags (gradient all-reduce)");
        cuda_check(cudaEventCreateWithFlags(&r->computed, cudaEventDisableTiming),
                   "cudaEventCreateWithFlags (gradients computed)");
        cuda_check(cudaEventCreateWithFlags(&r->reduced, cudaEventDisableTiming),
                   "cudaEventCreateWithFlags (gradients reduced)");
    }
#endif
    return r;
}

void tr_grad_reducer_free(tr_grad_reducer *r) {
    if (!r) return;
    if (r->mode == RED_HOST) {
        mpi_check(MPI_Comm_free(&r->comm), "MPI_Comm_free (gradient buckets)");
        free(r->pack);
    }
#ifdef GROUNDC_HAVE_NCCL
    if (r->mode == RED_NCCL) {
        cuda_check(cudaStreamSynchronize(r->stream), "cudaStreamSynchronize (gradient all-reduce)");
        if (r->pack) cuda_check(cudaFree(r->pack), "cudaFree (gradient buckets)");
        cuda_check(cudaEventDestroy(r->computed), "cudaEventDestroy");
        cuda_check(cudaEventDestroy(r->reduced), "cudaEventDestroy");
        cuda_check(cudaStreamDestroy(r->stream), "cudaStreamDestroy (gradient all-reduce)");
    }
#endif
    free(r->req);
    free(r->bucket_of);
    free(r->b);
    free(r->order);
    free(r);
}

// Starts the all-reduce of bucket b (its gradients are final).
static void issue_host(tr_grad_reducer *r, const red_bucket *b) {
    if (b->alone) {
        float *g = r->order[b->first]->grad->data;
        for (int c = 0; c < b->n_req; c++) {
            int64_t off = (int64_t)c * RED_MPI_PIECE;
            int64_t cnt = b->elems - off < RED_MPI_PIECE ? b->elems - off : RED_MPI_PIECE;
            mpi_check(MPI_Iallreduce(MPI_IN_PLACE, g + off, (int)cnt, MPI_FLOAT, MPI_SUM, r->comm,
                                     &r->req[b->req0 + c]),
                      "MPI_Iallreduce (gradients)");
        }
    } else {
        float *bucket = (float *)((char *)r->pack + b->offset);
        int64_t fill = 0;
        for (int i = b->first; i < b->last; i++) {
            const ag_tensor *g = r->order[i]->grad;
            memcpy(bucket + fill, g->data, sizeof(float) * (size_t)ag_numel(g));
            fill += ag_numel(g);
        }
        mpi_check(MPI_Iallreduce(MPI_IN_PLACE, bucket, (int)b->elems, MPI_FLOAT, MPI_SUM, r->comm,
                                 &r->req[b->req0]),
                  "MPI_Iallreduce (gradient bucket)");
    }
    r->n_live = b->req0 + b->n_req;
}

#ifdef GROUNDC_HAVE_NCCL
// Everything on r->stream, after r->computed (recorded on stream 0 by the caller once per
// round of issues): the backward kernels that wrote these gradients come first.
static void issue_nccl(tr_grad_reducer *r, const red_bucket *b) {
    const ag_tensor *g0 = r->order[b->first]->grad;
    const ag_dtype dt = g0->dtype;
    if (b->alone) {
        nccl_check(ncclAllReduce(g0->data, g0->data, (size_t)b->elems, nccl_type(dt), ncclSum,
                                 g_nccl, r->stream),
                   "ncclAllReduce (gradients)");
        return;
    }
    char *bucket = (char *)r->pack + b->offset;
    const size_t es = ag_dtype_size(dt);
    size_t fill = 0;
    for (int i = b->first; i < b->last; i++) {
        const ag_tensor *g = r->order[i]->grad;
        size_t bytes = (size_t)ag_numel(g) * es;
        cuda_check(
            cudaMemcpyAsync(bucket + fill, g->data, bytes, cudaMemcpyDeviceToDevice, r->stream),
            "cudaMemcpyAsync (gradient into bucket)");
        fill += bytes;
    }
    nccl_check(
        ncclAllReduce(bucket, bucket, (size_t)b->elems, nccl_type(dt), ncclSum, g_nccl, r->stream),
        "ncclAllReduce (gradient bucket)");
}
#endif

// Issues every bucket that is complete and whose predecessors have all gone: the same
// sequence of collectives on every rank, whatever order its gradients became final in.
static void issue_ready(tr_grad_reducer *r) {
    bool first = true;
    while (r->next < r->nb) {
        const red_bucket *b = &r->b[r->next];
        if (b->ready < b->last - b->first) break;
        r->next++;
        if (r->mode == RED_HOST) {
            issue_host(r, b);
            continue;
        }
#ifdef GROUNDC_HAVE_NCCL
        if (first) {
            cuda_check(cudaEventRecord(r->computed, 0), "cudaEventRecord (gradients computed)");
            cuda_check(cudaStreamWaitEvent(r->stream, r->computed, 0),
                       "cudaStreamWaitEvent (gradients computed)");
        }
        issue_nccl(r, b);
#endif
        first = false;
    }
    (void)first;
}

void tr_grad_reducer_begin(tr_grad_reducer *r) {
    if (r->active || r->next)
        ag_fail("dist: tr_grad_reducer_begin again before tr_grad_reducer_finish");
    r->active = true;
}

void tr_grad_reducer_ready(ag_tensor *param, int index, void *user) {
    tr_grad_reducer *r = user;
    if (r->mode == RED_AFTER) return;
    if (!r->active)
        ag_fail("dist: gradient of '%s' reported outside tr_grad_reducer_begin/finish",
                ag_label(param, "?"));
    if (index < 0 || index >= r->n || r->params[index] != param)
        ag_fail("dist: gradient of '%s' reported as parameter %d, which it is not (watch the "
                "reducer's own parameter list)",
                ag_label(param, "?"), index);
    red_bucket *b = &r->b[r->bucket_of[index]];
    if (++b->ready > b->last - b->first)
        ag_fail("dist: gradient of '%s' reported twice in one step", ag_label(param, "?"));
    issue_ready(r);
    if (r->mode == RED_HOST && r->n_live > r->n_done) {
        // Nonblocking collectives advance only inside MPI calls (OpenMPI has no progress
        // thread by default): each report gives the issued ones a turn.
        int flag = 0;
        mpi_check(
            MPI_Testall(r->n_live - r->n_done, r->req + r->n_done, &flag, MPI_STATUSES_IGNORE),
            "MPI_Testall (gradient buckets)");
        if (flag) r->n_done = r->n_live;
    }
}

// Host: waits for every bucket, then writes the sums times scale into the gradients (f32
// arithmetic as tr_dist_allreduce_grads, so the two agree bit for bit on two ranks).
static void finish_host(tr_grad_reducer *r, double scale) {
    mpi_wait(MPI_Waitall(r->n_live - r->n_done, r->req + r->n_done, MPI_STATUSES_IGNORE),
             "MPI_Waitall (gradient buckets)");
    const float s = (float)scale;
    for (int k = 0; k < r->nb; k++) {
        const red_bucket *b = &r->b[k];
        if (b->alone) {
            float *g = r->order[b->first]->grad->data;
            if (scale != 1.0)
                for (int64_t j = 0; j < b->elems; j++) g[j] *= s;
            continue;
        }
        const float *bucket = (const float *)((const char *)r->pack + b->offset);
        for (int i = b->first; i < b->last; i++) {
            float *g = r->order[i]->grad->data;
            int64_t m = ag_numel(r->order[i]->grad);
            for (int64_t j = 0; j < m; j++) g[j] = bucket[j] * s;
            bucket += m;
        }
    }
}

#ifdef GROUNDC_HAVE_NCCL
// GPU: stream 0 waits for the NCCL stream, then scales and unpacks in its own order, so the
// gradient norm and the optimizer (on stream 0) see the sums without a host synchronisation.
static void finish_nccl(tr_grad_reducer *r, double scale) {
    cuda_check(cudaEventRecord(r->reduced, r->stream), "cudaEventRecord (gradients reduced)");
    cuda_check(cudaStreamWaitEvent(0, r->reduced, 0), "cudaStreamWaitEvent (gradients reduced)");
    for (int k = 0; k < r->nb; k++) {
        const red_bucket *b = &r->b[k];
        ag_tensor *g0 = r->order[b->first]->grad;
        const ag_dtype dt = g0->dtype;
        if (b->alone) {
            scale_on(AG_CUDA, dt, g0->data, b->elems, scale);
            continue;
        }
        char *bucket = (char *)r->pack + b->offset;
        scale_on(AG_CUDA, dt, bucket, b->elems, scale);
        const size_t es = ag_dtype_size(dt);
        for (int i = b->first; i < b->last; i++) {
            ag_tensor *g = r->order[i]->grad;
            size_t bytes = (size_t)ag_numel(g) * es;
            cuda_check(cudaMemcpyAsync(g->data, bucket, bytes, cudaMemcpyDeviceToDevice, 0),
                       "cudaMemcpyAsync (bucket into gradient)");
            bucket += bytes;
        }
    }
    nccl_wait(r->stream, "ncclAllReduce (gradient buckets)");
}
#endif

void tr_grad_reducer_issue_rest(tr_grad_reducer *r) {
    if (r->mode == RED_AFTER) return;
    // Every gradient is final now, reported or not (a rank whose last micro-batch had no
    // supervised token ran no watched pass): what is left goes, in bucket order.
    for (int k = 0; k < r->nb; k++) r->b[k].ready = r->b[k].last - r->b[k].first;
    issue_ready(r);
}

void tr_grad_reducer_finish(tr_grad_reducer *r, double scale) {
    if (r->mode == RED_AFTER) {
        tr_dist_allreduce_grads(&r->d, r->params, r->n, scale, r->bucket_elems);
        r->active = false;
        return;
    }
    tr_grad_reducer_issue_rest(r);
    if (r->mode == RED_HOST) finish_host(r, scale);
#ifdef GROUNDC_HAVE_NCCL
    if (r->mode == RED_NCCL) finish_nccl(r, scale);
#endif
    for (int k = 0; k < r->nb; k++) r->b[k].ready = 0;
    r->next = r->n_live = r->n_done = 0;
    r->active = false;
}

void tr_dist_broadcast(const tr_dist *d, ag_tensor *t, int root) {
    if (d->world == 1) return;
    if (!ag_is_contiguous(t)) ag_fail("dist: broadcast of '%s': not contiguous", ag_label(t, "?"));
    if (t->device != AG_CPU || t->dtype != AG_F32) {
        size_t bytes = ag_nbytes(t);
#ifdef GROUNDC_HAVE_NCCL
        if (t->device == AG_CUDA && g_nccl) {
            nccl_check(ncclBroadcast(t->data, t->data, bytes, ncclUint8, root, g_nccl, 0),
                       "ncclBroadcast");
            return;
        }
#endif
        // Through the host, as bytes.
        char *host = ag_xmalloc(bytes ? bytes : 1, "broadcast staging");
        const ag_backend *be = ag_backend_for(t->device);
        if (d->rank == root) be->copy_to_host(host, t->data, bytes);
        for (size_t off = 0; off < bytes; off += INT32_MAX / 2) {
            size_t cnt = bytes - off < INT32_MAX / 2 ? bytes - off : INT32_MAX / 2;
            mpi_wait(MPI_Bcast(host + off, (int)cnt, MPI_BYTE, root, MPI_COMM_WORLD),
                     "MPI_Bcast (bytes)");
        }
        if (d->rank != root) be->copy_from_host(t->data, host, bytes);
        free(host);
        return;
    }
    float *p = t->data;
    int64_t m = ag_numel(t);
    for (int64_t off = 0; off < m; off += INT32_MAX / 2) {
        int64_t cnt = m - off < INT32_MAX / 2 ? m - off : INT32_MAX / 2;
        mpi_wait(MPI_Bcast(p + off, (int)cnt, MPI_FLOAT, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
}

void tr_dist_broadcast_all(const tr_dist *d, ag_tensor **t, const int *root, int n) {
    if (d->world == 1 || n == 0) return;
    bool host_f32 = true, cuda = true;
    for (int i = 0; i < n; i++) {
        if (!ag_is_contiguous(t[i]))
            ag_fail("dist: broadcast of '%s': not contiguous", ag_label(t[i], "?"));
        host_f32 &= t[i]->device == AG_CPU && t[i]->dtype == AG_F32;
        cuda &= t[i]->device == AG_CUDA;
    }
#ifdef GROUNDC_HAVE_NCCL
    if (cuda && g_nccl) {
        nccl_check(ncclGroupStart(), "ncclGroupStart (broadcasts)");
        for (int i = 0; i < n; i++)
            nccl_check(ncclBroadcast(t[i]->data, t[i]->data, ag_nbytes(t[i]), ncclUint8, root[i],
                                     g_nccl, 0),
                       "ncclBroadcast");
        nccl_check(ncclGroupEnd(), "ncclGroupEnd (broadcasts)");
        return;
    }
#endif
    (void)cuda;
    if (!host_f32) { // staged through the host, one at a time
        for (int i = 0; i < n; i++) tr_dist_broadcast(d, t[i], root[i]);
        return;
    }
    // Every rank posts the same broadcasts in the same order, as MPI requires.
    const int64_t chunk = INT32_MAX / 2;
    int64_t nreq = 0;
    for (int i = 0; i < n; i++) nreq += (ag_numel(t[i]) + chunk - 1) / chunk;
    MPI_Request *req = ag_xcalloc((size_t)(nreq ? nreq : 1), sizeof *req, "broadcast requests");
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        float *p = t[i]->data;
        int64_t m = ag_numel(t[i]);
        for (int64_t off = 0; off < m; off += chunk) {
            int64_t cnt = m - off < chunk ? m - off : chunk;
            mpi_check(MPI_Ibcast(p + off, (int)cnt, MPI_FLOAT, root[i], MPI_COMM_WORLD, &req[k++]),
                      "MPI_Ibcast");
        }
    }
    mpi_wait(MPI_Waitall((int)nreq, req, MPI_STATUSES_IGNORE), "MPI_Waitall (broadcasts)");
    free(req);
}

void tr_dist_broadcast_str(const tr_dist *d, char *s, int cap, int root) {
    if (d->world == 1) return;
    mpi_wait(MPI_Bcast(s, cap, MPI_CHAR, root, MPI_COMM_WORLD), "MPI_Bcast (string)");
    s[cap - 1] = 0;
}

bool tr_dist_agree(const tr_dist *d, const char *mine, char **root_text) {
    *root_text = NULL;
    if (d->world == 1) return true;
    long long len = (long long)strlen(mine);
    mpi_wait(MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD), "MPI_Bcast (length)");
    if (len < 0 || len > INT_MAX - 1) ag_fail("mpi: rank 0's text is %lld bytes", len);
    char *zero = ag_xmalloc((size_t)len + 1, "rank 0's text");
    if (d->rank == 0) memcpy(zero, mine, (size_t)len);
    mpi_wait(MPI_Bcast(zero, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast (text)");
    zero[len] = 0;
    bool same = !strcmp(zero, mine);
    if (same)
        free(zero);
    else
        *root_text = zero;
    return tr_dist_all(d, same);
}

bool tr_dist_all(const tr_dist *d, bool ok) {
    if (d->world == 1) return ok;
    int v = ok ? 1 : 0;
    mpi_wait(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD),
             "MPI_Allreduce (flag)");
    return v == 1;
}
