// dist.c: see dist.h.
#include "train/dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"

static void mpi_check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
    ag_fail("mpi: %s failed: %s", call, msg);
}

static int env_int(const char *const *names, int def) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v);
    }
    return def;
}

tr_dist tr_dist_init(int *argc, char ***argv) {
    static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", NULL};
    static const char *const locals[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                         "PMI_LOCAL_RANK", NULL};
    tr_dist d = {.rank = 0, .world = 1, .local_rank = 0, .mpi = false};
    if (env_int(sizes, 0) < 1 && !getenv("PMIX_RANK")) return d;
    mpi_check(MPI_Init(argc, argv), "MPI_Init");
    // Errors come back as codes, so that each is reported as one line.
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
              "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &d.rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &d.world), "MPI_Comm_size");
    d.local_rank = env_int(locals, d.rank);
    d.mpi = true;
    return d;
}

void tr_dist_finalize(tr_dist *d) {
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

static void check_f32(const ag_tensor *t, const char *what) {
    if (t->dtype != AG_F32 || t->device != AG_CPU || !ag_is_contiguous(t))
        ag_fail("dist: %s '%s' must be a contiguous host f32 tensor (bf16/GPU gradients go "
                "through NCCL)",
                what, ag_label(t, "?"));
}

void tr_dist_allreduce_grads(const tr_dist *d, ag_tensor **params, int n, double scale,
                             int64_t bucket_elems) {
    if (bucket_elems < 1) bucket_elems = 1;
    for (int i = 0; i < n; i++) {
        if (!params[i]->grad)
            ag_fail("dist: parameter '%s' has no gradient", ag_label(params[i], "?"));
        check_f32(params[i]->grad, "gradient of");
    }
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

void tr_dist_broadcast(const tr_dist *d, ag_tensor *t, int root) {
    if (d->world == 1) return;
    check_f32(t, "tensor");
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
