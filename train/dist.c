// dist.c: see dist.h.
#include "train/dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

tr_dist tr_dist_init(int *argc, char ***argv) {
    static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", NULL};
    static const char *const locals[] = {"OMPI_COMM_WORLD_LOCAL_RANK",
                                         "MPI_LOCALRANKID",
                                         "PMI_LOCAL_RANK",
                                         "PMIX_LOCAL_RANK",
                                         "SLURM_LOCALID",
                                         NULL};
    tr_dist d = {.rank = 0, .world = 1, .local_rank = 0, .local_size = 1, .mpi = false};
    d.cpu_threads = ag_cpu_share_threads(1);
    if (env_int(sizes, 0) < 1 && !getenv("PMIX_RANK")) return d;
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
        mpi_check(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD),
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
    mpi_check(MPI_Finalize(), "MPI_Finalize");
    d->mpi = false;
}

_Noreturn void tr_dist_abort(const tr_dist *d, int code) {
    fflush(stdout);
    fflush(stderr);
    if (d && d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void tr_dist_barrier(const tr_dist *d) {
    if (d->world > 1) mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

void tr_dist_sum_f64(const tr_dist *d, double *x, int n) {
    if (d->world > 1)
        mpi_check(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
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
                mpi_check(MPI_Allreduce(MPI_IN_PLACE, g + off, (int)cnt, MPI_FLOAT, MPI_SUM,
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
        mpi_check(
            MPI_Allreduce(MPI_IN_PLACE, bucket, (int)fill, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
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
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, x, (int)cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
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
}
#endif

void tr_dist_allreduce_grads(const tr_dist *d, ag_tensor **params, int n, double scale,
                             int64_t bucket_elems) {
    if (bucket_elems < 1) bucket_elems = 1;
    bool host_f32 = true, cuda = n > 0;
    for (int i = 0; i < n; i++) {
        const ag_tensor *g = params[i]->grad;
        if (!g) ag_fail("dist: parameter '%s' has no gradient", ag_label(params[i], "?"));
        if (!ag_is_contiguous(g) || (g->dtype != AG_F32 && g->dtype != AG_BF16))
            ag_fail("dist: the gradient of '%s' must be a contiguous f32 or bf16 tensor",
                    ag_label(params[i], "?"));
        host_f32 &= g->dtype == AG_F32 && g->device == AG_CPU;
        cuda &= g->device == AG_CUDA;
    }
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
            mpi_check(MPI_Bcast(host + off, (int)cnt, MPI_BYTE, root, MPI_COMM_WORLD),
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
        mpi_check(MPI_Bcast(p + off, (int)cnt, MPI_FLOAT, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
}

void tr_dist_broadcast_str(const tr_dist *d, char *s, int cap, int root) {
    if (d->world == 1) return;
    mpi_check(MPI_Bcast(s, cap, MPI_CHAR, root, MPI_COMM_WORLD), "MPI_Bcast (string)");
    s[cap - 1] = 0;
}

bool tr_dist_all(const tr_dist *d, bool ok) {
    if (d->world == 1) return ok;
    int v = ok ? 1 : 0;
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD),
              "MPI_Allreduce (flag)");
    return v == 1;
}
