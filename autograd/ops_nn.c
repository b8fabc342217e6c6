// ops_nn.c: transformer pieces (RoPE, attention), row indexing (embedding, index-select,
// scatter for the multimodal splice) and the cross-entropy loss.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_internal.h"

// Index checks read the indices on the host: they are small, and a bad id must be an error
// naming its position, never an out-of-bounds read in a kernel.
static const int32_t *host_ids(ag_ctx *ctx, const ag_tensor *ids) {
    if (ids->device == AG_CPU) return ids->data;
    int32_t *h = ag_step_alloc(ctx, ag_nbytes(ids));
    ag_copy_to_host(ids, h);
    return h;
}

static void check_ids(ag_ctx *ctx, const char *op, const ag_tensor *ids, int64_t limit,
                      const ag_tensor *table, const char *table_name) {
    ag_need_same_device(op, table, table_name, ids, "idx");
    const int32_t *h = host_ids(ctx, ids);
    int64_t n = ag_numel(ids);
    for (int64_t i = 0; i < n; i++)
        if (h[i] < 0 || h[i] >= limit) {
            char what[128];
            snprintf(what, sizeof what, "index %d at position %lld outside [0, %lld)", (int)h[i],
                     (long long)i, (long long)limit);
            ag_op_fail1(op, what, table, table_name);
        }
}

// RoPE ----------------------------------------------------------------------------------------

static void rope_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL("rope", ag_kernels_of("rope", x), rope_bwd)
    (n->extra, n->out->grad->data, ag_grad_ptr(ctx, x));
}

ag_tensor *ag_rope(ag_ctx *ctx, ag_tensor *x, ag_tensor *pos, double theta) {
    const char *op = "rope";
    ag_need_float(op, x, "x");
    ag_need_ndim(op, x, "x", 4, 4);
    ag_need_dtype(op, pos, "pos", AG_I32);
    ag_need_contiguous(op, pos, "pos");
    ag_need_same_device(op, x, "x", pos, "pos");
    if (x->stride[3] != 1) ag_op_fail1(op, "the head dim must be contiguous", x, "x");
    int64_t B = x->shape[0], T = x->shape[1], D = x->shape[3];
    if (D % 2) ag_op_fail1(op, "head dim must be even", x, "x");
    bool per_batch = pos->ndim == 2;
    if (!((pos->ndim == 1 && pos->shape[0] == T) ||
          (per_batch && pos->shape[0] == B && pos->shape[1] == T)))
        ag_op_fail2(op, "pos must be (T) or (B, T)", x, "x", pos, "pos");
    ag_rope_args *a = ag_step_alloc(ctx, sizeof *a);
    *a = (ag_rope_args){.B = B,
                        .T = T,
                        .H = x->shape[2],
                        .D = D,
                        .s_b = x->stride[0],
                        .s_t = x->stride[1],
                        .s_h = x->stride[2],
                        .pos = pos->data,
                        .pos_per_batch = per_batch,
                        .theta = theta};
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    AG_KERNEL(op, ag_kernels_of(op, x), rope_fwd)(a, x->data, out->data);
    ag_node *node = ag_record(ctx, op, rope_backward, out, 1, &x);
    if (node) node->extra = a;
    return out;
}

// Attention ----------------------------------------------------------------------------------

static void attention_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    AG_KERNEL("attention", ag_kernels_of("attention", q), attention_bwd)
    (n->extra, q->data, k->data, v->data, n->out->data, n->saved[0]->data, n->out->grad->data,
     ag_grad_ptr(ctx, q), ag_grad_ptr(ctx, k), ag_grad_ptr(ctx, v));
}

ag_tensor *ag_attention(ag_ctx *ctx, ag_tensor *q, ag_tensor *k, ag_tensor *v, ag_tensor *key_mask,
                        bool causal, double scale) {
    const char *op = "attention";
    ag_need_float(op, q, "q");
    ag_need_float(op, k, "k");
    ag_need_float(op, v, "v");
    ag_need_same_kind(op, q, "q", k, "k");
    ag_need_same_kind(op, q, "q", v, "v");
    ag_need_ndim(op, q, "q", 4, 4);
    ag_need_ndim(op, k, "k", 4, 4);
    ag_need_ndim(op, v, "v", 4, 4);
    if (q->stride[3] != 1) ag_op_fail1(op, "the head dim must be contiguous", q, "q");
    if (k->stride[3] != 1) ag_op_fail1(op, "the head dim must be contiguous", k, "k");
    if (v->stride[3] != 1) ag_op_fail1(op, "the head dim must be contiguous", v, "v");
    int64_t B = q->shape[0], Tq = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t Tk = k->shape[1], Hkv = k->shape[2];
    if (!ag_same_shape(k, v)) ag_op_fail2(op, "k and v shapes differ", k, "k", v, "v");
    if (k->shape[0] != B || k->shape[3] != D)
        ag_op_fail2(op, "batch or head dim differs", q, "q", k, "k");
    if (Hkv < 1 || H % Hkv)
        ag_op_fail2(op, "query heads must be a multiple of kv heads", q, "q", k, "k");
    if (key_mask) {
        ag_need_dtype(op, key_mask, "key_mask", AG_U8);
        ag_need_contiguous(op, key_mask, "key_mask");
        if (key_mask->ndim != 2 || key_mask->shape[0] != B || key_mask->shape[1] != Tk)
            ag_op_fail2(op, "key_mask must be (B, Tk)", key_mask, "key_mask", k, "k");
        if (key_mask->device != q->device)
            ag_op_fail2(op, "devices differ", q, "q", key_mask, "key_mask");
    }
    ag_attn_args *a = ag_step_alloc(ctx, sizeof *a);
    *a = (ag_attn_args){.B = B,
                        .Tq = Tq,
                        .Tk = Tk,
                        .H = H,
                        .Hkv = Hkv,
                        .D = D,
                        .q_sb = q->stride[0],
                        .q_st = q->stride[1],
                        .q_sh = q->stride[2],
                        .k_sb = k->stride[0],
                        .k_st = k->stride[1],
                        .k_sh = k->stride[2],
                        .v_sb = v->stride[0],
                        .v_st = v->stride[1],
                        .v_sh = v->stride[2],
                        .scale = scale,
                        .causal = causal,
                        .mask = key_mask ? key_mask->data : NULL};
    ag_tensor *out = ag_new_like(ctx, q, ag_shape_of(q));
    ag_tensor *lse = ag_new_stats(ctx, q, AG_SHAPE(B, H, Tq)); // backward recomputes P from it
    AG_KERNEL(op, ag_kernels_of(op, q), attention_fwd)
    (a, q->data, k->data, v->data, out->data, lse->data);
    ag_tensor *in[3] = {q, k, v};
    ag_node *node = ag_record(ctx, op, attention_backward, out, 3, in);
    if (node) {
        node->extra = a;
        node->saved[0] = lse;
    }
    return out;
}

// Row indexing ---------------------------------------------------------------------------------

static void gather_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0], *idx = n->in[1];
    int64_t c = x->shape[1];
    AG_KERNEL("gather", ag_kernels_of("gather", x), rows_scatter_add)
    (n->out->grad->data, idx->data, ag_grad_ptr(ctx, x), ag_numel(idx), c);
}

static ag_tensor *gather(ag_ctx *ctx, const char *op, ag_tensor *x, const char *x_name,
                         ag_tensor *idx, ag_shape s) {
    check_ids(ctx, op, idx, x->shape[0], x, x_name);
    ag_tensor *out = ag_new_like(ctx, x, s);
    AG_KERNEL(op, ag_kernels_of(op, x), rows_gather)
    (x->data, idx->data, out->data, ag_numel(idx), x->shape[1]);
    ag_tensor *in[2] = {x, idx};
    ag_record(ctx, op, gather_backward, out, 2, in);
    return out;
}

ag_tensor *ag_embedding(ag_ctx *ctx, ag_tensor *table, ag_tensor *ids) {
    const char *op = "embedding";
    ag_need_float(op, table, "table");
    ag_need_ndim(op, table, "table", 2, 2);
    ag_need_contiguous(op, table, "table");
    ag_need_dtype(op, ids, "ids", AG_I32);
    ag_need_contiguous(op, ids, "ids");
    ag_need_ndim(op, ids, "ids", 0, 3);
    ag_shape s = ag_shape_of(ids);
    s.d[s.ndim++] = table->shape[1];
    return gather(ctx, op, table, "table", ids, s);
}

ag_tensor *ag_index_select_rows(ag_ctx *ctx, ag_tensor *x, ag_tensor *idx) {
    const char *op = "index_select_rows";
    ag_need_float(op, x, "x");
    ag_need_ndim(op, x, "x", 2, 2);
    ag_need_contiguous(op, x, "x");
    ag_need_dtype(op, idx, "idx", AG_I32);
    ag_need_ndim(op, idx, "idx", 1, 1);
    ag_need_contiguous(op, idx, "idx");
    return gather(ctx, op, x, "x", idx, AG_SHAPE(idx->shape[0], x->shape[1]));
}

static void scatter_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *base = n->in[0], *idx = n->in[1], *src = n->in[2];
    const ag_tensor *g = n->out->grad;
    const ag_kernels *k = ag_kernels_of("scatter_rows", g);
    int64_t m = ag_numel(idx), c = g->shape[1];
    if (base->requires_grad) { // rows that were overwritten get nothing
        ag_tensor *tmp = ag_new_like(ctx, g, ag_shape_of(g));
        ag_backend_of(g)->copy_strided(
            tmp->data, g->data, &(ag_layout){.ndim = 1, .shape = {ag_numel(g)}, .stride = {1}},
            ag_dtype_size(g->dtype));
        AG_KERNEL("scatter_rows", k, rows_set)(tmp->data, idx->data, NULL, m, c);
        ag_accumulate(ctx, base, tmp);
    }
    if (src->requires_grad) { // rows are distinct, so gathering is the adjoint
        ag_tensor *tmp = ag_new_like(ctx, src, ag_shape_of(src));
        AG_KERNEL("scatter_rows", k, rows_gather)(g->data, idx->data, tmp->data, m, c);
        ag_accumulate(ctx, src, tmp);
    }
}

ag_tensor *ag_scatter_rows(ag_ctx *ctx, ag_tensor *base, ag_tensor *idx, ag_tensor *src) {
    const char *op = "scatter_rows";
    ag_need_float(op, base, "base");
    ag_need_float(op, src, "src");
    ag_need_same_kind(op, base, "base", src, "src");
    ag_need_ndim(op, base, "base", 2, 2);
    ag_need_ndim(op, src, "src", 2, 2);
    ag_need_contiguous(op, base, "base");
    ag_need_contiguous(op, src, "src");
    ag_need_dtype(op, idx, "idx", AG_I32);
    ag_need_ndim(op, idx, "idx", 1, 1);
    ag_need_contiguous(op, idx, "idx");
    if (src->shape[0] != idx->shape[0] || src->shape[1] != base->shape[1]) {
        char what[96], di[64];
        snprintf(what, sizeof what, "src must be (len(idx), base columns) with idx %s",
                 ag_describe(idx, di, sizeof di));
        ag_op_fail2(op, what, base, "base", src, "src");
    }
    check_ids(ctx, op, idx, base->shape[0], base, "base");
    // distinct rows: otherwise which source wins is undefined
    const int32_t *h = host_ids(ctx, idx);
    int64_t m = ag_numel(idx);
    uint8_t *seen = ag_step_alloc(ctx, (size_t)base->shape[0]);
    memset(seen, 0, (size_t)base->shape[0]);
    for (int64_t i = 0; i < m; i++) {
        if (seen[h[i]]) {
            char what[96];
            snprintf(what, sizeof what, "row %d appears twice in idx (position %lld)", (int)h[i],
                     (long long)i);
            ag_op_fail1(op, what, base, "base");
        }
        seen[h[i]] = 1;
    }
    ag_tensor *out = ag_new_like(ctx, base, ag_shape_of(base));
    ag_backend_of(base)->copy_strided(
        out->data, base->data, &(ag_layout){.ndim = 1, .shape = {ag_numel(base)}, .stride = {1}},
        ag_dtype_size(base->dtype));
    AG_KERNEL(op, ag_kernels_of(op, base), rows_set)
    (out->data, idx->data, src->data, m, base->shape[1]);
    ag_tensor *in[3] = {base, idx, src};
    ag_record(ctx, op, scatter_backward, out, 3, in);
    return out;
}

// Cross-entropy ----------------------------------------------------------------------------------

static void cross_entropy_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *logits = n->in[0], *targets = n->in[1];
    int64_t count = n->i[0];
    if (!count) return;
    double g = ag_item(n->out->grad, 0);
    AG_KERNEL("cross_entropy", ag_kernels_of("cross_entropy", logits), cross_entropy_bwd)
    (logits->data, targets->data, n->saved[0]->data, g / (double)count, ag_grad_ptr(ctx, logits),
     logits->shape[0], logits->shape[1], (int32_t)n->i[1]);
}

ag_tensor *ag_cross_entropy(ag_ctx *ctx, ag_tensor *logits, ag_tensor *targets,
                            int32_t ignore_index) {
    const char *op = "cross_entropy";
    ag_need_float(op, logits, "logits");
    ag_need_ndim(op, logits, "logits", 2, 2);
    ag_need_contiguous(op, logits, "logits");
    ag_need_dtype(op, targets, "targets", AG_I32);
    ag_need_ndim(op, targets, "targets", 1, 1);
    ag_need_contiguous(op, targets, "targets");
    ag_need_same_device(op, logits, "logits", targets, "targets");
    if (targets->shape[0] != logits->shape[0])
        ag_op_fail2(op, "one target per row", logits, "logits", targets, "targets");
    int64_t rows = logits->shape[0], V = logits->shape[1];
    const int32_t *h = host_ids(ctx, targets);
    for (int64_t i = 0; i < rows; i++)
        if (h[i] != ignore_index && (h[i] < 0 || h[i] >= V)) {
            char what[128];
            snprintf(what, sizeof what, "target %d at row %lld outside vocabulary of %lld",
                     (int)h[i], (long long)i, (long long)V);
            ag_op_fail1(op, what, logits, "logits");
        }
    ag_tensor *loss = ag_new_stats(ctx, logits, (ag_shape){.ndim = 0});
    ag_tensor *lse = ag_new_stats(ctx, logits, AG_SHAPE(rows));
    int64_t count = 0;
    AG_KERNEL(op, ag_kernels_of(op, logits), cross_entropy_fwd)
    (logits->data, targets->data, lse->data, loss->data, &count, rows, V, ignore_index);
    ag_tensor *in[2] = {logits, targets};
    ag_node *node = ag_record(ctx, op, cross_entropy_backward, loss, 2, in);
    if (node) {
        node->saved[0] = lse;
        node->i[0] = count;
        node->i[1] = ignore_index;
    }
    return loss;
}
