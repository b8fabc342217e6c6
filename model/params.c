// params.c: see params.h.
#include "params.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"

gm_params *gm_params_new(void) {
    return ag_xcalloc(1, sizeof(gm_params), "parameter registry");
}

void gm_params_free(gm_params *reg) {
    if (!reg) return;
    free(reg->tensors);
    free(reg);
}

ag_tensor *gm_params_find(const gm_params *reg, const char *name) {
    for (int i = 0; i < reg->n; i++)
        if (!strcmp(reg->tensors[i]->name, name)) return reg->tensors[i];
    return NULL;
}

void gm_params_add(gm_params *reg, ag_tensor *p) {
    if (!p->is_param) ag_fail("params: '%s' is not a persistent tensor", ag_label(p, "?"));
    if (!p->name || !p->name[0]) ag_fail("params: a parameter without a name cannot be added");
    // Linear scan: registries hold a few thousand names and are built once.
    if (gm_params_find(reg, p->name)) ag_fail("params: '%s' is registered twice", p->name);
    reg->tensors =
        ag_xgrow(reg->tensors, &reg->cap, reg->n + 1, sizeof *reg->tensors, "parameter registry");
    reg->tensors[reg->n++] = p;
}

void gm_params_add_many(gm_params *reg, ag_tensor *const *ps, int n) {
    for (int i = 0; i < n; i++) gm_params_add(reg, ps[i]);
}

bool gm_glob_match(const char *pattern, const char *name) {
    return fnmatch(pattern, name, 0) == 0;
}

static bool any_match(const char *const *pats, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (gm_glob_match(pats[i], name)) return true;
    return false;
}

bool gm_params_selected(const gm_param_selection *sel, const char *name) {
    return any_match(sel->trainable, sel->n_trainable, name) &&
           !any_match(sel->frozen, sel->n_frozen, name);
}

static void check_patterns(const gm_params *reg, const char *const *pats, int n, const char *kind) {
    for (int i = 0; i < n; i++) {
        bool hit = false;
        for (int j = 0; j < reg->n && !hit; j++)
            hit = gm_glob_match(pats[i], reg->tensors[j]->name);
        if (!hit) ag_fail("params: %s pattern '%s' matches no parameter", kind, pats[i]);
    }
}

static void check_selection(const gm_params *reg, const gm_param_selection *sel) {
    check_patterns(reg, sel->trainable, sel->n_trainable, "trainable");
    check_patterns(reg, sel->frozen, sel->n_frozen, "frozen");
}

int gm_params_apply(ag_ctx *ctx, gm_params *reg, const gm_param_selection *sel) {
    check_selection(reg, sel);
    int n = 0;
    for (int i = 0; i < reg->n; i++) {
        bool on = gm_params_selected(sel, reg->tensors[i]->name);
        ag_set_trainable(ctx, reg->tensors[i], on);
        n += on;
    }
    return n;
}

int64_t gm_params_count_selected(const gm_params *reg, const gm_param_selection *sel) {
    check_selection(reg, sel);
    int64_t n = 0;
    for (int i = 0; i < reg->n; i++)
        if (gm_params_selected(sel, reg->tensors[i]->name)) n += ag_numel(reg->tensors[i]);
    return n;
}

// The top-level module of name into buf (see params.h).
void gm_params_group_of(const char *name, char *buf, size_t n) {
    const char *dot = strchr(name, '.');
    size_t len = dot ? (size_t)(dot - name) : strlen(name);
    if (dot && len == 5 && !strncmp(name, "model", 5)) {
        const char *dot2 = strchr(dot + 1, '.');
        len = dot2 ? (size_t)(dot2 - name) : strlen(name);
    }
    if (len >= n) len = n - 1;
    memcpy(buf, name, len);
    buf[len] = 0;
}

int gm_params_groups(const gm_params *reg, gm_param_group *out, int max) {
    // Groups are few; each name is looked up among those seen so far. Counting needs the
    // groups beyond max too, so they go to a private list first.
    int n = 0;
    int64_t cap = 0;
    gm_param_group *all = NULL;
    for (int i = 0; i < reg->n; i++) {
        const ag_tensor *p = reg->tensors[i];
        char g[96];
        gm_params_group_of(p->name, g, sizeof g);
        int k = 0;
        while (k < n && strcmp(all[k].name, g)) k++;
        if (k == n) {
            all = ag_xgrow(all, &cap, n + 1, sizeof *all, "parameter groups");
            memset(&all[n], 0, sizeof all[n]);
            snprintf(all[n].name, sizeof all[n].name, "%s", g);
            n++;
        }
        all[k].total += ag_numel(p);
        if (p->requires_grad) all[k].trainable += ag_numel(p);
    }
    for (int k = 0; k < n && k < max; k++) out[k] = all[k];
    free(all);
    return n;
}

int64_t gm_params_total(const gm_params *reg) {
    int64_t n = 0;
    for (int i = 0; i < reg->n; i++) n += ag_numel(reg->tensors[i]);
    return n;
}

int64_t gm_params_trainable(const gm_params *reg) {
    int64_t n = 0;
    for (int i = 0; i < reg->n; i++)
        if (reg->tensors[i]->requires_grad) n += ag_numel(reg->tensors[i]);
    return n;
}

int64_t gm_llama_config_param_count(const gm_llama_config *c) {
    int64_t C = c->dim, D = C / c->n_heads, Ckv = c->n_kv_heads * D, F = c->ffn, V = c->vocab;
    int64_t layer = 2 * C + 2 * C * C + 2 * Ckv * C + 3 * F * C;
    return 2 * V * C + C + c->n_layers * layer;
}

int64_t gm_llama_activation_bytes(const gm_llama_config *c, ag_dtype dt, int64_t B, int64_t T) {
    int64_t C = c->dim, H = c->n_heads, D = C / H, Ckv = c->n_kv_heads * D, F = c->ffn;
    int64_t V = c->vocab, N = B * T, e = (int64_t)ag_dtype_size(dt);
    int64_t f32 = 4;
    // Forward, per layer: op outputs in dt, two norms' rstd in f32, the attention's
    // log-sum-exp (B, H, T) in f32. Everything stays in the step arena until the reset.
    int64_t per_layer = N * (9 * C + 3 * Ckv + 3 * F) * e + 2 * N * f32 + B * H * T * f32;
    // Embedding + splice outputs, final norm, its rstd, logits, cross-entropy statistics.
    int64_t head = N * 3 * C * e + N * f32 + N * V * e + N * f32;
    // Backward on top: the logits' gradient (and that of their (B, T, V) view), then the
    // working set of one layer's activation gradients (released and reused layer to layer).
    int64_t backward = 2 * N * V * e + N * (2 * C + 2 * F + 3 * Ckv) * e;
    return c->n_layers * per_layer + head + backward;
}

gm_memory gm_memory_estimate(int64_t weights, int64_t trainable, ag_dtype wdt,
                             int64_t activation_bytes) {
    int64_t e = (int64_t)ag_dtype_size(wdt);
    gm_memory m = {.weights = weights * e,
                   .grads = trainable * e,
                   .optimizer = trainable * (8 + (wdt == AG_BF16 ? 4 : 0)),
                   .activations = activation_bytes};
    m.total = m.weights + m.grads + m.optimizer + m.activations;
    return m;
}

gm_memory gm_params_memory(const gm_params *reg, const gm_llama_config *llm, int64_t B, int64_t T) {
    gm_memory m = {0};
    // Activations take the dtype of the LLM's embeddings (the splice output the stack runs on).
    const ag_tensor *embed = gm_params_find(reg, "model.embed_tokens.weight");
    ag_dtype act_dt = embed ? embed->dtype : AG_F32;
    for (int i = 0; i < reg->n; i++) {
        const ag_tensor *p = reg->tensors[i];
        int64_t n = ag_numel(p), e = (int64_t)ag_dtype_size(p->dtype);
        m.weights += n * e;
        if (p->requires_grad) {
            m.grads += n * e;
            m.optimizer += n * (8 + (p->dtype == AG_BF16 ? 4 : 0));
        }
    }
    if (llm) m.activations = gm_llama_activation_bytes(llm, act_dt, B, T);
    m.total = m.weights + m.grads + m.optimizer + m.activations;
    return m;
}
