// test_grad_ready.c: ag_backward_watch, the per-gradient hook that lets data-parallel
// training start all-reducing gradients while the backward pass runs. Every watched tensor is
// reported exactly once; when it is, its gradient already equals the final one (bitwise, as
// from a plain ag_backward), so no tape node still to run adds into it. The graph has a
// parameter used at two depths, one used twice by one node with more than AG_NODE_MAX_IN
// inputs (concat), slices and a transpose of a parameter, a parameter read only by a node the
// pass skips and one read by nothing; then a small Llama. Gradients that finish early are
// reported early (not all at the end), duplicates are refused, and the bookkeeping reaches a
// steady state without system allocations.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/copy_task.h"
#include "model/init.h"
#include "model/llama.h"
#include "llama_util.h"
#include "testlib.h"

#define MAX_WATCH 64

typedef struct {
    ag_tensor *const *watch;
    int n;
    int fired[MAX_WATCH];
    int order[MAX_WATCH]; // order[k]: the k-th report's watch index
    int n_fired;
    float *at_fire[MAX_WATCH]; // the gradient when it was reported
    // the gradient of probe when each tensor was reported (NULL: no probe)
    ag_tensor *probe;
    double probe_sum_at_fire[MAX_WATCH];
} recorder;

static double abs_sum(const ag_tensor *g) {
    int64_t m = ag_numel(g);
    float *h = malloc(sizeof(float) * (size_t)m);
    ag_copy_to_host(g, h);
    double s = 0;
    for (int64_t i = 0; i < m; i++) s += fabs(h[i]);
    free(h);
    return s;
}

static void on_ready(ag_tensor *t, int k, void *user) {
    recorder *r = user;
    TL_CHECK(k >= 0 && k < r->n && r->watch[k] == t,
             "ready called for '%s' as watch[%d], which it is not", ag_label(t, "?"), k);
    if (k < 0 || k >= r->n || r->watch[k] != t) return;
    r->order[r->n_fired++] = k;
    if (r->fired[k]++) return; // counted; the snapshot is the first report's
    int64_t m = ag_numel(t->grad);
    r->at_fire[k] = malloc(sizeof(float) * (size_t)m);
    ag_copy_to_host(t->grad, r->at_fire[k]);
    if (r->probe) r->probe_sum_at_fire[k] = abs_sum(r->probe->grad);
}

static void recorder_free(recorder *r) {
    for (int i = 0; i < r->n; i++) free(r->at_fire[i]);
}

// Host copies of the gradients of ts (after a plain backward).
static float **grads_of(ag_tensor *const *ts, int n) {
    float **g = calloc((size_t)n, sizeof *g);
    for (int i = 0; i < n; i++) {
        g[i] = malloc(sizeof(float) * (size_t)ag_numel(ts[i]->grad));
        ag_copy_to_host(ts[i]->grad, g[i]);
    }
    return g;
}

static void free_grads(float **g, int n) {
    for (int i = 0; i < n; i++) free(g[i]);
    free(g);
}

// Every watched tensor reported once, with its final gradient at that moment.
static void check_reports(const char *what, const recorder *r, float **want) {
    TL_CHECK(r->n_fired == r->n, "%s: %d reports for %d watched tensors", what, r->n_fired, r->n);
    for (int i = 0; i < r->n; i++) {
        const char *name = ag_label(r->watch[i], "?");
        TL_CHECK(r->fired[i] == 1, "%s: '%s' reported %d times", what, name, r->fired[i]);
        if (!r->at_fire[i]) continue;
        int64_t m = ag_numel(r->watch[i]->grad);
        int64_t diff = 0;
        for (int64_t j = 0; j < m; j++)
            if (memcmp(&r->at_fire[i][j], &want[i][j], sizeof(float))) diff++;
        TL_CHECK(diff == 0,
                 "%s: '%s' reported with %lld of %lld gradient elements not yet final "
                 "(reported too early)",
                 what, name, (long long)diff, (long long)m);
        // and the pass itself still computes what ag_backward does
        float *now = malloc(sizeof(float) * (size_t)m);
        ag_copy_to_host(r->watch[i]->grad, now);
        TL_CHECK(!memcmp(now, want[i], sizeof(float) * (size_t)m),
                 "%s: '%s' final gradient differs from ag_backward's", what, name);
        free(now);
    }
}

enum { W1, B1, W2, E, G, U, P, Q, V, N_PARAMS };

typedef struct {
    ag_tensor *p[N_PARAMS];
    ag_tensor *x;
} net;

static ag_tensor *param(ag_ctx *ctx, const char *name, ag_shape s, uint64_t seed) {
    ag_tensor *t = ag_param(ctx, name, AG_F32, s);
    gm_init_normal(t, seed, 0, 0.5);
    ag_set_trainable(ctx, t, true);
    return t;
}

static void net_init(ag_ctx *ctx, net *n) {
    n->p[W1] = param(ctx, "w1", AG_SHAPE(4, 4), 1);
    n->p[B1] = param(ctx, "b1", AG_SHAPE(4), 2);
    n->p[W2] = param(ctx, "w2", AG_SHAPE(4, 4), 3);
    n->p[E] = param(ctx, "e", AG_SHAPE(6, 4), 4);
    n->p[G] = param(ctx, "g", AG_SHAPE(4), 5);
    n->p[U] = param(ctx, "unused", AG_SHAPE(5), 6);
    n->p[P] = param(ctx, "p", AG_SHAPE(1, 4), 7);
    n->p[Q] = param(ctx, "q", AG_SHAPE(1, 4), 8);
    n->p[V] = param(ctx, "skipped", AG_SHAPE(4), 9);
    n->x = ag_param(ctx, "x", AG_F32, AG_SHAPE(3, 4)); // an input: no gradient
    gm_init_normal(n->x, 10, 0, 1.0);
}

// loss = mean(rmsnorm(concat(p, h3[0], q, h3[1:3], p), g)^2), with
//   h1 = silu(x w1^T + b1), h2 = h1 w2^T + h1 e[1:5],  h3 = silu(h2) w1^T  (w1 again, deeper)
// and a node reading `skipped` that the loss does not depend on (its backward never runs).
static ag_tensor *net_loss(ag_ctx *ctx, net *n) {
    ag_tensor **p = n->p;
    ag_tensor *h1 = ag_silu(ctx, ag_linear(ctx, n->x, p[W1], p[B1]));
    ag_tensor *ev = ag_contiguous(ctx, ag_transpose(ctx, ag_slice(ctx, p[E], 0, 1, 5), 0, 1));
    ag_tensor *h2 = ag_add(ctx, ag_linear(ctx, h1, p[W2], NULL), ag_linear(ctx, h1, ev, NULL));
    (void)ag_scale(ctx, p[V], 2.0); // recorded, never reaches the loss
    ag_tensor *h3 = ag_linear(ctx, ag_silu(ctx, h2), p[W1], NULL);
    ag_tensor *pieces[5] = {p[P], ag_slice(ctx, h3, 0, 0, 1), p[Q], ag_slice(ctx, h3, 0, 1, 3),
                            p[P]};
    ag_tensor *c = ag_concat(ctx, 5, pieces, 0);
    ag_tensor *r = ag_rmsnorm(ctx, c, p[G], 1e-5);
    return ag_mean_all(ctx, ag_mul(ctx, r, r));
}

static void test_small_graph(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    net n;
    net_init(ctx, &n);
    ag_backward(ctx, net_loss(ctx, &n));
    float **want = grads_of(n.p, N_PARAMS);
    ag_step_reset(ctx);
    ag_zero_grad(ctx, n.p, N_PARAMS);
    // the case the check must catch: w1's gradient has two parts, each non-zero
    TL_CHECK(abs_sum(n.p[W1]->grad) == 0, "gradients not zeroed");

    recorder r = {.watch = n.p, .n = N_PARAMS, .probe = n.p[W1]};
    ag_backward_watch(ctx, net_loss(ctx, &n), n.p, N_PARAMS, on_ready, &r);
    check_reports("small graph", &r, want);
    // the unused parameter before any node runs; g (read only by the last op) while w1's
    // gradient is still zero: reports come as the pass goes, not all at its end
    TL_CHECK(r.n_fired > 0 && r.order[0] == U, "the unused parameter was not reported first");
    TL_CHECK(r.fired[G] && r.probe_sum_at_fire[G] == 0,
             "g was reported only after w1's gradient had started (|grad w1| = %g)",
             r.probe_sum_at_fire[G]);
    TL_CHECK(r.fired[W1] && r.probe_sum_at_fire[W1] > 0, "w1 reported with a zero gradient");
    double v = abs_sum(n.p[V]->grad), u = abs_sum(n.p[U]->grad);
    TL_CHECK(v == 0 && u == 0, "unreached parameters got gradients (%g, %g)", v, u);
    recorder_free(&r);
    ag_step_reset(ctx);

    // the same tensor twice, and a NULL entry, are refused with one line
    ag_tensor *twice[3] = {n.p[W1], n.p[G], n.p[W1]};
    recorder r2 = {.watch = twice, .n = 3};
    TL_EXPECT_FAIL(ag_backward_watch(ctx, net_loss(ctx, &n), twice, 3, on_ready, &r2),
                   "backward_watch", "'w1' is watched twice");
    recorder_free(&r2);
    ag_step_reset(ctx);
    ag_tensor *with_null[2] = {n.p[W1], NULL};
    TL_EXPECT_FAIL(ag_backward_watch(ctx, net_loss(ctx, &n), with_null, 2, on_ready, &r2),
                   "backward_watch", "NULL");
    ag_step_reset(ctx);
    TL_EXPECT_FAIL(ag_backward_watch(ctx, net_loss(ctx, &n), n.p, 2, NULL, NULL), "backward_watch",
                   "ready callback");
    ag_step_reset(ctx);
    free_grads(want, N_PARAMS);
    ag_ctx_free(ctx);
}

// A small Llama (embedding, RoPE attention, SwiGLU, norms, tied nothing): every parameter
// reported once with its final gradient, then no system allocation in later steps.
static void test_llama(void) {
    gm_llama_config c = lu_tiny_llama_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 1, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    if (m->n_params > MAX_WATCH) {
        TL_CHECK(0, "the test Llama has %d parameters (at most %d)", m->n_params, MAX_WATCH);
        return;
    }
    int64_t n = 4, T = ds_copy_seq_len(n);
    int32_t ids[2 * 9], tg[2 * 9];
    for (int b = 0; b < 2; b++) ds_copy_sample(5, b, n, c.vocab, ids + b * T, tg + b * T);
    ag_backward(ctx, gm_llama_loss(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), ids),
                                   ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), tg)));
    float **want = grads_of(m->params, m->n_params);
    ag_step_reset(ctx);
    size_t allocs[4];
    for (int step = 0; step < 4; step++) {
        ag_zero_grad(ctx, m->params, m->n_params);
        recorder r = {.watch = m->params, .n = m->n_params};
        ag_tensor *loss = gm_llama_loss(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), ids),
                                        ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), tg));
        ag_backward_watch(ctx, loss, m->params, m->n_params, on_ready, &r);
        if (step == 0) check_reports("llama", &r, want);
        recorder_free(&r);
        ag_step_reset(ctx);
        allocs[step] = ctx->step_data.n_system_allocs + ctx->step_meta.n_system_allocs;
    }
    TL_CHECK(allocs[2] == allocs[1] && allocs[3] == allocs[1],
             "watched steps after the second allocated from the system (%zu, %zu, %zu)", allocs[1],
             allocs[2], allocs[3]);
    free_grads(want, m->n_params);
    gm_llama_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    test_small_graph();
    test_llama();
    return tl_summary("test_grad_ready");
}
