// splice.c: see splice.h. Host-side bookkeeping lives in the step arena (ag_step_alloc), so
// a training step that splices makes no heap allocation.
#include "splice.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "autograd/error.h"

static const char *const names[GM_NMOD] = {"image", "video", "audio"};

const char *gm_modality_name(gm_modality m) {
    return (unsigned)m < GM_NMOD ? names[m] : "?";
}

gm_splice_tokens gm_splice_tokens_default(void) {
    return (gm_splice_tokens){.patch = {32000, 32003, 32006},
                              .start = {32001, 32004, 32007},
                              .end = {32002, 32005, 32008}};
}

void gm_splice_scan(ag_ctx *ctx, gm_splice_plan *plan, const gm_splice_tokens *tok,
                    const int32_t *ids, int64_t B, int64_t T) {
    memset(plan, 0, sizeof *plan);
    plan->B = B;
    plan->T = T;
    for (int m = 0; m < GM_NMOD; m++) {
        for (int64_t i = 0; i < B * T; i++) plan->n[m] += ids[i] == tok->patch[m];
        plan->pos[m] = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)(plan->n[m] ? plan->n[m] : 1));
        plan->per_sample[m] = ag_step_alloc(ctx, sizeof(int64_t) * (size_t)B);
    }
    int64_t k[GM_NMOD] = {0};
    for (int64_t b = 0; b < B; b++) {
        const int32_t *row = ids + b * T;
        for (int m = 0; m < GM_NMOD; m++) {
            int64_t count = 0;
            for (int64_t t = 0; t < T; t++) {
                if (row[t] != tok->patch[m]) continue;
                if (b * T + t > INT32_MAX)
                    ag_fail("splice: batch of %lld x %lld tokens is too large for i32 row indices",
                            (long long)B, (long long)T);
                plan->pos[m][k[m]++] = (int32_t)(b * T + t);
                count++;
                // A run starts here: its neighbours must be the start and end tokens.
                if (t == 0 || row[t - 1] != tok->patch[m]) {
                    int64_t t1 = t;
                    while (t1 + 1 < T && row[t1 + 1] == tok->patch[m]) t1++;
                    bool ok_start = tok->start[m] < 0 || (t > 0 && row[t - 1] == tok->start[m]);
                    bool ok_end = tok->end[m] < 0 || (t1 + 1 < T && row[t1 + 1] == tok->end[m]);
                    if (!ok_start || !ok_end)
                        ag_fail("splice: sample %lld: %s patch tokens at %lld..%lld are not "
                                "enclosed by the start token %d and the end token %d",
                                (long long)b, names[m], (long long)t, (long long)t1,
                                (int)tok->start[m], (int)tok->end[m]);
                }
            }
            plan->per_sample[m][b] = count;
        }
    }
}

void gm_splice_check(const gm_splice_plan *plan, gm_modality m, const int64_t *rows) {
    for (int64_t b = 0; b < plan->B; b++) {
        int64_t want = plan->per_sample[m][b], have = rows ? rows[b] : 0;
        if (want != have)
            ag_fail("splice: sample %lld has %lld %s patch tokens but %lld %s feature rows",
                    (long long)b, (long long)want, names[m], (long long)have, names[m]);
    }
}

ag_tensor *gm_splice_apply(ag_ctx *ctx, const gm_splice_plan *plan, ag_tensor *embeds,
                           ag_tensor *const feats[GM_NMOD]) {
    char d1[64];
    if (embeds->ndim != 3 || embeds->shape[0] != plan->B || embeds->shape[1] != plan->T)
        ag_fail("splice: embeddings must be (%lld, %lld, C), got %s", (long long)plan->B,
                (long long)plan->T, ag_describe(embeds, d1, sizeof d1));
    int64_t C = embeds->shape[2], total = 0;
    ag_tensor *src[GM_NMOD];
    int n_src = 0;
    for (int m = 0; m < GM_NMOD; m++) {
        if (!plan->n[m]) continue;
        ag_tensor *f = feats ? feats[m] : NULL;
        if (!f)
            ag_fail("splice: the batch has %s patch tokens but no %s features", names[m], names[m]);
        if (f->ndim < 1 || f->shape[f->ndim - 1] != C || ag_numel(f) != plan->n[m] * C)
            ag_fail("splice: %s features %s do not fill %lld patch tokens of width %lld", names[m],
                    ag_describe(f, d1, sizeof d1), (long long)plan->n[m], (long long)C);
        if (!ag_is_contiguous(f)) f = ag_contiguous(ctx, f);
        f = ag_reshape(ctx, f, AG_SHAPE(plan->n[m], C));
        if (f->dtype != embeds->dtype) f = ag_cast(ctx, f, embeds->dtype);
        src[n_src++] = f;
        total += plan->n[m];
    }
    if (!total) return embeds;
    // One scatter for all modalities: the (B·T, C) copy it makes is the big cost.
    int32_t *idx = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)total);
    int64_t k = 0;
    for (int m = 0; m < GM_NMOD; m++) {
        memcpy(idx + k, plan->pos[m], sizeof(int32_t) * (size_t)plan->n[m]);
        k += plan->n[m];
    }
    ag_tensor *rows = n_src == 1 ? src[0] : ag_concat(ctx, n_src, src, 0); // (total, C)
    ag_tensor *flat = ag_reshape(ctx, embeds, AG_SHAPE(plan->B * plan->T, C));
    ag_tensor *ix = ag_from_host(ctx, AG_I32, AG_SHAPE(total), idx);
    ag_tensor *out = ag_scatter_rows(ctx, flat, ix, rows); // (B·T, C)
    return ag_reshape(ctx, out, AG_SHAPE(plan->B, plan->T, C));
}

ag_tensor *gm_splice_embed(ag_ctx *ctx, const gm_llama *llm, const gm_splice_tokens *tok,
                           const int32_t *ids, int64_t B, int64_t T,
                           const gm_splice_source src[GM_NMOD]) {
    gm_splice_plan plan;
    gm_splice_scan(ctx, &plan, tok, ids, B, T);
    // Every count is checked before any encoder spends time.
    for (int m = 0; m < GM_NMOD; m++)
        gm_splice_check(&plan, (gm_modality)m, src ? src[m].rows : NULL);
    ag_tensor *x = gm_llama_embed(ctx, llm, ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids));
    ag_tensor *feats[GM_NMOD] = {0};
    for (int m = 0; m < GM_NMOD; m++) {
        if (!plan.n[m]) continue; // absent from the batch: the encoder never runs
        if (!src[m].encode)
            ag_fail("splice: the batch has %s patch tokens but no %s encoder", names[m], names[m]);
        feats[m] = src[m].encode(ctx, src[m].user);
        if (!feats[m]) ag_fail("splice: the %s encoder returned no features", names[m]);
    }
    return gm_splice_apply(ctx, &plan, x, feats);
}
