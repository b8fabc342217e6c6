// context.c: see context.h.
#include "context.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "ops_internal.h"

ag_ctx *ag_ctx_new(ag_device device) {
    if (device == AG_CUDA && !ag_cuda_available())
        ag_fail("no usable CUDA device (built %s CUDA)",
#ifdef GROUNDC_HAVE_CUDA
                "with"
#else
                "without"
#endif
        );
    ag_ctx *ctx = ag_xcalloc(1, sizeof *ctx, "autograd context");
    ctx->device = device;
    ag_arena_init(&ctx->pool_meta, AG_CPU, "parameter metadata", (size_t)1 << 16);
    ag_arena_init(&ctx->pool_data, device, "parameter pool", (size_t)1 << 24);
    ag_arena_init(&ctx->step_meta, AG_CPU, "step metadata", (size_t)1 << 20);
    ag_arena_init(&ctx->step_data, device, "step arena", (size_t)1 << 24);
    return ctx;
}

ag_ctx *ag_ctx_new_meta(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ctx->meta = true;
    return ctx;
}

ag_ctx *ag_ctx_new_sibling(const ag_ctx *ctx) {
    return ctx->meta ? ag_ctx_new_meta() : ag_ctx_new(ctx->device);
}

void ag_ctx_free(ag_ctx *ctx) {
    if (!ctx) return;
    ag_arena_free(&ctx->pool_meta);
    ag_arena_free(&ctx->pool_data);
    ag_arena_free(&ctx->step_meta);
    ag_arena_free(&ctx->step_data);
    free(ctx);
}

struct ag_free_block {
    size_t bytes;
    void *data;
    ag_free_block *next;
};

void ag_step_reset(ag_ctx *ctx) {
    ctx->tape = NULL;
    ctx->free_grads = NULL;
    ag_arena_reset(&ctx->step_meta);
    ag_arena_reset(&ctx->step_data);
}

size_t ag_step_peak_bytes(const ag_ctx *ctx) {
    return ctx->step_data.peak;
}
size_t ag_pool_bytes(const ag_ctx *ctx) {
    return ctx->pool_data.used;
}

static const ag_backend *backend(const ag_ctx *ctx) {
    return ag_backend_for(ctx->device);
}

static ag_tensor *make(ag_ctx *ctx, ag_dtype dtype, ag_shape shape, bool persistent) {
    if ((unsigned)dtype >= AG_NDTYPES) ag_fail("new tensor: unknown dtype %d", (int)dtype);
    if (shape.ndim < 0 || shape.ndim > AG_MAX_DIMS)
        ag_fail("new tensor: %d dims (at most %d)", shape.ndim, AG_MAX_DIMS);
    for (int i = 0; i < shape.ndim; i++)
        if (shape.d[i] < 0)
            ag_fail("new tensor: dim %d is negative (%lld)", i, (long long)shape.d[i]);
    if (ctx->meta && !persistent) ag_fail("new tensor: a meta context holds no step tensors");
    ag_arena *meta = persistent ? &ctx->pool_meta : &ctx->step_meta;
    ag_arena *data = persistent ? &ctx->pool_data : &ctx->step_data;
    ag_tensor *t = ag_arena_alloc(meta, sizeof *t);
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->device = ctx->device;
    t->ndim = shape.ndim;
    for (int i = 0; i < shape.ndim; i++) t->shape[i] = shape.d[i];
    ag_set_contiguous_strides(t);
    t->data = ctx->meta ? NULL : ag_arena_alloc(data, ag_nbytes(t));
    t->is_param = persistent;
    return t;
}

ag_tensor *ag_new(ag_ctx *ctx, ag_dtype dtype, ag_shape shape) {
    return make(ctx, dtype, shape, false);
}

ag_tensor *ag_zeros(ag_ctx *ctx, ag_dtype dtype, ag_shape shape) {
    ag_tensor *t = make(ctx, dtype, shape, false);
    backend(ctx)->memset0(t->data, ag_nbytes(t));
    return t;
}

ag_tensor *ag_param(ag_ctx *ctx, const char *name, ag_dtype dtype, ag_shape shape) {
    ag_tensor *t = make(ctx, dtype, shape, true);
    if (!ctx->meta) backend(ctx)->memset0(t->data, ag_nbytes(t));
    if (name) {
        size_t n = strlen(name) + 1;
        char *copy = ag_arena_alloc(&ctx->pool_meta, n);
        memcpy(copy, name, n);
        t->name = copy;
    }
    return t;
}

static ag_tensor *new_grad(ag_ctx *ctx, const ag_tensor *t) {
    if (t->is_param) {
        ag_tensor *g = make(ctx, t->dtype, ag_shape_of(t), true);
        g->is_param = false;
        if (!ctx->meta) backend(ctx)->memset0(g->data, ag_nbytes(g));
        return g;
    }
    // a step gradient: reuse a released buffer of the same size when there is one
    ag_tensor *g = ag_arena_alloc(&ctx->step_meta, sizeof *g);
    memset(g, 0, sizeof *g);
    g->dtype = t->dtype;
    g->device = ctx->device;
    g->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) g->shape[i] = t->shape[i];
    ag_set_contiguous_strides(g);
    size_t bytes = ag_nbytes(g);
    for (ag_free_block **b = &ctx->free_grads; *b; b = &(*b)->next)
        if ((*b)->bytes == bytes) {
            g->data = (*b)->data;
            *b = (*b)->next;
            break;
        }
    if (!g->data) g->data = ag_arena_alloc(&ctx->step_data, bytes);
    backend(ctx)->memset0(g->data, bytes);
    return g;
}

// The output of a node whose backward has run: nothing reads its gradient again.
static void release_grad(ag_ctx *ctx, ag_tensor *t) {
    if (t->is_param || !t->grad) return;
    ag_free_block *b = ag_arena_alloc(&ctx->step_meta, sizeof *b);
    b->bytes = ag_nbytes(t->grad);
    b->data = t->grad->data;
    b->next = ctx->free_grads;
    ctx->free_grads = b;
    t->grad = NULL;
}

void ag_set_trainable(ag_ctx *ctx, ag_tensor *p, bool trainable) {
    if (!p->is_param) ag_fail("set_trainable: '%s' is not a persistent tensor", ag_label(p, "?"));
    if (trainable && !ag_dtype_is_float(p->dtype))
        ag_fail("set_trainable: '%s' has dtype %s; only float tensors train", ag_label(p, "?"),
                ag_dtype_name(p->dtype));
    p->requires_grad = trainable;
    if (trainable && !p->grad) p->grad = new_grad(ctx, p);
}

void ag_set_requires_grad(ag_tensor *t, bool requires_grad) {
    if (requires_grad && !ag_dtype_is_float(t->dtype))
        ag_fail("set_requires_grad: %s tensor '%s' cannot require grad", ag_dtype_name(t->dtype),
                ag_label(t, "?"));
    t->requires_grad = requires_grad;
}

ag_tensor *ag_from_host(ag_ctx *ctx, ag_dtype dtype, ag_shape shape, const void *src) {
    ag_tensor *t = ag_new(ctx, dtype, shape);
    ag_copy_from_host(t, src);
    return t;
}

// A meta tensor (ag_ctx_new_meta) has no values to copy.
static void check_storage(const ag_tensor *t, const char *what) {
    if (!t->data && ag_numel(t) > 0)
        ag_fail("%s: '%s' has no storage (a meta context)", what, ag_label(t, "?"));
}

void ag_copy_from_host(ag_tensor *t, const void *src) {
    if (!ag_is_contiguous(t)) ag_fail("copy_from_host: '%s' is not contiguous", ag_label(t, "?"));
    check_storage(t, "copy_from_host");
    ag_backend_for(t->device)->copy_from_host(t->data, src, ag_nbytes(t));
}

void ag_copy_to_host(const ag_tensor *t, void *dst) {
    if (!ag_is_contiguous(t)) ag_fail("copy_to_host: '%s' is not contiguous", ag_label(t, "?"));
    check_storage(t, "copy_to_host");
    ag_backend_for(t->device)->copy_to_host(dst, t->data, ag_nbytes(t));
}

// A host buffer of t's dtype for n elements, failing unless t is a float tensor.
static void *host_buffer(const ag_tensor *t, const char *what) {
    if (!ag_dtype_is_float(t->dtype))
        ag_fail("%s: '%s' is %s, not a float tensor", what, ag_label(t, "?"),
                ag_dtype_name(t->dtype));
    return ag_xmalloc((size_t)ag_numel(t) * ag_dtype_size(t->dtype), what);
}

void ag_copy_from_host_f64(ag_tensor *t, const double *src) {
    void *host = host_buffer(t, "copy_from_host_f64");
    ag_cpu_backend.cast(host, t->dtype, src, AG_F64, ag_numel(t));
    ag_copy_from_host(t, host);
    free(host);
}

void ag_copy_to_host_f64(const ag_tensor *t, double *dst) {
    void *host = host_buffer(t, "copy_to_host_f64");
    ag_copy_to_host(t, host);
    ag_cpu_backend.cast(dst, AG_F64, host, t->dtype, ag_numel(t));
    free(host);
}

void ag_write_slice(ag_tensor *dst, int dim, int64_t start, const ag_tensor *src) {
    char a[96], b[96];
    bool fits = dst->ndim == src->ndim && dim >= 0 && dim < dst->ndim && dst->dtype == src->dtype &&
                dst->device == src->device && start >= 0 &&
                start + src->shape[dim] <= dst->shape[dim];
    for (int i = 0; fits && i < dst->ndim; i++) fits = i == dim || dst->shape[i] == src->shape[i];
    if (!fits || !ag_is_contiguous(dst) || !ag_is_contiguous(src))
        ag_fail("write_slice: %s does not fit %s at %lld along dim %d (both contiguous)",
                ag_describe(src, a, sizeof a), ag_describe(dst, b, sizeof b), (long long)start,
                dim);
    check_storage(dst, "write_slice");
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++) outer *= dst->shape[i];
    for (int i = dim + 1; i < dst->ndim; i++) inner *= dst->shape[i];
    const size_t es = ag_dtype_size(dst->dtype);
    const int64_t n = src->shape[dim] * inner; // elements of src per outer index
    ag_layout l = {.ndim = 1, .shape = {n}, .stride = {1}};
    const ag_backend *be = ag_backend_for(dst->device);
    for (int64_t o = 0; o < outer && n > 0; o++)
        be->copy_strided((char *)dst->data + (size_t)((o * dst->shape[dim] + start) * inner) * es,
                         (const char *)src->data + (size_t)(o * n) * es, &l, es);
}

double ag_item(const ag_tensor *t, int64_t index) {
    if (index < 0 || index >= ag_numel(t))
        ag_fail("item: index %lld outside %lld elements of '%s'", (long long)index,
                (long long)ag_numel(t), ag_label(t, "?"));
    size_t es = ag_dtype_size(t->dtype);
    unsigned char buf[8];
    ag_backend_for(t->device)->copy_to_host(buf, (const char *)t->data + (size_t)index * es, es);
    switch (t->dtype) {
    case AG_F32: {
        float v;
        memcpy(&v, buf, 4);
        return v;
    }
    case AG_F64: {
        double v;
        memcpy(&v, buf, 8);
        return v;
    }
    case AG_BF16: {
        uint16_t v;
        memcpy(&v, buf, 2);
        return ag_bf16_to_f32(v);
    }
    case AG_I32: {
        int32_t v;
        memcpy(&v, buf, 4);
        return v;
    }
    case AG_U8:
        return buf[0];
    default:
        ag_fail("item: unknown dtype");
    }
}

void ag_no_grad_begin(ag_ctx *ctx) {
    ctx->no_grad_depth++;
}
void ag_no_grad_end(ag_ctx *ctx) {
    if (ctx->no_grad_depth <= 0) ag_fail("no_grad_end without no_grad_begin");
    ctx->no_grad_depth--;
}
bool ag_grad_enabled(const ag_ctx *ctx) {
    return ctx->no_grad_depth == 0;
}

void *ag_step_alloc(ag_ctx *ctx, size_t bytes) {
    return ag_arena_alloc(&ctx->step_meta, bytes);
}

ag_node *ag_record(ag_ctx *ctx, const char *op, ag_backward_fn backward, ag_tensor *out, int n_in,
                   ag_tensor *const *in) {
    out->requires_grad = false;
    if (!ag_grad_enabled(ctx)) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) any = true;
    if (!any) return NULL; // frozen or constant inputs: no backward work at all
    ag_node *node = ag_step_alloc(ctx, sizeof *node);
    memset(node, 0, sizeof *node);
    node->op = op;
    node->backward = backward;
    node->out = out;
    node->n_in = n_in;
    if (n_in <= AG_NODE_MAX_IN) {
        for (int i = 0; i < n_in; i++) node->in[i] = in[i];
    } else {
        node->in_many = ag_step_alloc(ctx, sizeof(ag_tensor *) * (size_t)n_in);
        memcpy(node->in_many, in, sizeof(ag_tensor *) * (size_t)n_in);
    }
    node->prev = ctx->tape;
    ctx->tape = node;
    out->requires_grad = true;
    return node;
}

ag_tensor *ag_grad_of(ag_ctx *ctx, ag_tensor *t) {
    if (!t->grad) t->grad = new_grad(ctx, t);
    return t->grad;
}

// Watched tensors (ag_backward_watch): for each, the tape nodes still to run that read it.
typedef struct {
    uintptr_t key; // the tensor's address, for sorting
    int index;     // into watch[]
} watch_key;

typedef struct {
    ag_tensor *const *watch;
    int n;
    watch_key *sorted; // by key, for the lookup of a node's inputs
    int *left;         // per watch index: readers not yet run
    ag_grad_ready_fn ready;
    void *user;
} watcher;

static int cmp_watch_key(const void *a, const void *b) {
    uintptr_t x = ((const watch_key *)a)->key, y = ((const watch_key *)b)->key;
    return (x > y) - (x < y);
}

// Index into watch[] of t, -1 when t is not watched.
static int watch_index(const watcher *w, const ag_tensor *t) {
    if (!t) return -1;
    watch_key k = {.key = (uintptr_t)t}, *hit;
    hit = bsearch(&k, w->sorted, (size_t)w->n, sizeof k, cmp_watch_key);
    return hit ? hit->index : -1;
}

static ag_tensor *node_input(const ag_node *n, int i) {
    return n->n_in > AG_NODE_MAX_IN ? n->in_many[i] : n->in[i];
}

// Counts each watched tensor's readers on the tape and fires those with none.
static void watch_begin(ag_ctx *ctx, watcher *w) {
    w->sorted = ag_step_alloc(ctx, sizeof *w->sorted * (size_t)w->n);
    w->left = ag_step_alloc(ctx, sizeof *w->left * (size_t)w->n);
    for (int i = 0; i < w->n; i++) {
        if (!w->watch[i]) ag_fail("backward_watch: watch[%d] is NULL", i);
        w->sorted[i] = (watch_key){.key = (uintptr_t)w->watch[i], .index = i};
        w->left[i] = 0;
    }
    qsort(w->sorted, (size_t)w->n, sizeof *w->sorted, cmp_watch_key);
    for (int i = 1; i < w->n; i++)
        if (w->sorted[i].key == w->sorted[i - 1].key)
            ag_fail("backward_watch: '%s' is watched twice",
                    ag_label(w->watch[w->sorted[i].index], "?"));
    for (ag_node *n = ctx->tape; n; n = n->prev)
        for (int i = 0; i < n->n_in; i++) {
            int k = watch_index(w, node_input(n, i));
            if (k >= 0) w->left[k]++;
        }
    for (int i = 0; i < w->n; i++)
        if (w->left[i] == 0) w->ready(w->watch[i], i, w->user);
}

// Node n has run (or was skipped): its watched inputs have one reader fewer.
static void watch_done(watcher *w, const ag_node *n) {
    for (int i = 0; i < n->n_in; i++) {
        int k = watch_index(w, node_input(n, i));
        if (k >= 0 && --w->left[k] == 0) w->ready(w->watch[k], k, w->user);
    }
}

// The one walk of the tape, newest node first; w is NULL when nothing is watched.
static void run_tape(ag_ctx *ctx, watcher *w) {
    if (w) watch_begin(ctx, w);
    for (ag_node *n = ctx->tape; n; n = n->prev) {
        if (n->out->grad) {
            n->backward(ctx, n);
            release_grad(ctx, n->out);
        }
        if (w) watch_done(w, n);
    }
}

void ag_backward_watch(ag_ctx *ctx, ag_tensor *loss, ag_tensor *const *watch, int n_watch,
                       ag_grad_ready_fn ready, void *user) {
    if (ag_numel(loss) != 1)
        ag_fail("backward: loss must have one element, got %lld", (long long)ag_numel(loss));
    if (!loss->requires_grad)
        ag_fail("backward: the loss does not depend on any tensor that requires grad");
    if (n_watch < 0 || (n_watch > 0 && (!watch || !ready)))
        ag_fail("backward_watch: %d watched tensors need a list and a ready callback", n_watch);
    ag_tensor *g = ag_grad_of(ctx, loss);
    const ag_kernels *k = ag_kernels_of("backward", g);
    AG_KERNEL("backward", k, fill)(g->data, 1, 1.0);
    watcher w = {.watch = watch, .n = n_watch, .ready = ready, .user = user};
    run_tape(ctx, n_watch > 0 ? &w : NULL);
}

void ag_backward(ag_ctx *ctx, ag_tensor *loss) {
    ag_backward_watch(ctx, loss, NULL, 0, NULL, NULL);
}

void ag_backward_from(ag_ctx *ctx, ag_tensor *out, const ag_tensor *seed) {
    if (!ag_same_shape(out, seed) || out->dtype != seed->dtype) {
        char a[96], b[96];
        ag_fail("backward: seed %s does not match output %s", ag_describe(seed, b, sizeof b),
                ag_describe(out, a, sizeof a));
    }
    if (!out->requires_grad) ag_fail("backward: the output does not require grad");
    ag_tensor *g = ag_grad_of(ctx, out);
    AG_KERNEL("backward", ag_kernels_of("backward", g), axpy)
    (g->data, seed->data, ag_numel(g), 1.0);
    run_tape(ctx, NULL);
}

void ag_zero_grad(ag_ctx *ctx, ag_tensor **params, int n) {
    for (int i = 0; i < n; i++)
        if (params[i]->grad)
            backend(ctx)->memset0(params[i]->grad->data, ag_nbytes(params[i]->grad));
}
