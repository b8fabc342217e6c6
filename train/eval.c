// eval.c: see eval.h.
#include "train/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/grounding.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/model_config.h"

double tr_eval_rate(const tr_eval_result *r, int task) {
    return r->n[task] ? (double)r->hits[task] / (double)r->n[task] : NAN;
}

static int eval_kind(int task) {
    switch (task) {
    case DS_TASK_REC:
        return TR_EVAL_REC;
    case DS_TASK_TVG:
        return TR_EVAL_TVG;
    case DS_TASK_SOUND:
        return TR_EVAL_SOUND;
    default:
        return -1;
    }
}

// IoU of the first box (REC) or span of the two texts; -1 when the reference has none (the
// sample is not gradable), 0 when the answer has none.
static double answer_iou(int kind, const char *answer, const char *reference) {
    if (kind == TR_EVAL_REC) {
        ds_box want, got;
        if (!ds_parse_box(reference, &want)) return -1;
        return ds_parse_box(answer, &got) ? ds_box_iou(got, want) : 0;
    }
    ds_span want, got;
    if (!ds_parse_span(reference, &want)) return -1;
    return ds_parse_span(answer, &got) ? ds_span_iou(got, want) : 0;
}

// Greedy continuation of prompt ids[0..T) of a one-sample batch; returns the generated ids
// (malloc'd, *n of them).
static int32_t *generate(ag_ctx *ctx, gm_groundinggpt *m, gm_groundinggpt_batch *gb,
                         const ds_tokenizer *tok, int64_t max_new, int64_t *n) {
    const int64_t T = gb->T, C = m->cfg.llm.dim, V0 = m->cfg.llm.vocab;
    int64_t room = m->cfg.llm.max_seq - T;
    if (max_new > room) max_new = room;
    int32_t *out = ag_xmalloc(sizeof(int32_t) * (size_t)(max_new > 0 ? max_new : 1), "generate");
    float *emb = ag_xmalloc(sizeof(float) * (size_t)((T + max_new) * C), "generate");
    *n = 0;
    ag_no_grad_begin(ctx);
    ag_copy_to_host(ag_cast(ctx, gm_groundinggpt_embed(ctx, m, gb, false, 0), AG_F32), emb);
    ag_step_reset(ctx);
    for (int64_t k = 0; k < max_new; k++) {
        int64_t L = T + k;
        ag_tensor *x =
            ag_cast(ctx, ag_from_host(ctx, AG_F32, AG_SHAPE(1, L, C), emb), m->cfg.dtype);
        ag_tensor *h = gm_llama_hidden(ctx, m->llm, x, gm_positions(ctx, L)); // (1, L, C)
        ag_tensor *logits = gm_groundinggpt_head(ctx, m, ag_slice(ctx, h, 1, L - 1, L));
        int64_t V = logits->shape[1];
        float *row = ag_step_alloc(ctx, sizeof(float) * (size_t)V);
        ag_copy_to_host(ag_cast(ctx, logits, AG_F32), row);
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        ag_step_reset(ctx);
        if (best >= V0) break; // an added (media) token ends the answer
        out[(*n)++] = best;
        char *text = ds_tokenizer_decode(tok, out, *n, NULL);
        bool stop = strstr(text, "###") != NULL;
        free(text);
        if (stop) break;
        ag_tensor *id = ag_from_host(ctx, AG_I32, AG_SHAPE(1, 1), &best);
        ag_copy_to_host(ag_cast(ctx, gm_llama_embed(ctx, m->llm, id), AG_F32), emb + L * C);
        ag_step_reset(ctx);
    }
    ag_no_grad_end(ctx);
    free(emb);
    return out;
}

void tr_eval_grounding(ag_ctx *ctx, gm_groundinggpt *m, const char *data_dir,
                       const char *tokenizer_path, int64_t limit, int64_t max_new, const tr_dist *d,
                       tr_eval_result *r, FILE *log, bool verbose) {
    memset(r, 0, sizeof *r);
    ds_tokenizer *tok = ds_tokenizer_load(tokenizer_path);
    ds_manifest man;
    ds_manifest_read(&man, data_dir);
    char digest[65];
    ds_tokenizer_digest(tok, digest);
    if (strcmp(digest, man.tokenizer_digest))
        ag_fail("%s: packed with another tokenizer than %s (digest %.12s..., the dataset's "
                "%.12s...)",
                data_dir, tokenizer_path, digest, man.tokenizer_digest);
    int64_t total = man.num_samples < limit ? man.num_samples : limit;
    ds_manifest_free(&man);

    ds_loader_dataset ds = {.dir = data_dir, .weight = 1};
    ds_loader_config lc = {.datasets = &ds,
                           .num_datasets = 1,
                           .seed = 0,
                           .micro = 1,
                           .accumulation = 1,
                           .rank = d->rank,
                           .world = d->world,
                           .max_len = m->cfg.llm.max_seq,
                           .pad_id = 0,
                           .prefetch = 4};
    ds_loader *l = ds_loader_open(&lc);
    int64_t steps = (total + d->world - 1) / d->world;
    for (int64_t s = 0; s < steps; s++) {
        const ds_batch *b = ds_loader_next(l);
        if (b->positions[0] >= total) continue;
        int kind = eval_kind(b->task[0]);
        if (kind < 0) continue;
        int64_t t0 = 0, T = b->lengths[0];
        while (t0 < T && b->targets[t0] == DS_LOADER_IGNORE) t0++;
        if (t0 == T) continue;
        int64_t t1 = t0;
        while (t1 < T && b->targets[t1] != DS_LOADER_IGNORE) t1++;
        char *reference = ds_tokenizer_decode(tok, b->targets + t0, t1 - t0, NULL);
        gm_groundinggpt_batch gb;
        tr_batch_to_model(ctx, b, &gb);
        gb.T = t0 + 1;
        gb.targets = NULL;
        int64_t n;
        int32_t *ids = generate(ctx, m, &gb, tok, max_new, &n);
        char *answer = ds_tokenizer_decode(tok, ids, n, NULL);
        double iou = answer_iou(kind, answer, reference);
        if (iou >= 0) {
            r->n[kind]++;
            r->hits[kind] += iou >= 0.5;
            r->iou_sum[kind] += iou;
        }
        if (verbose && log)
            fprintf(log, "eval sample %lld (%s): iou %.3f | answer \"%s\" | reference \"%s\"\n",
                    (long long)b->sample[0], ds_task_name(b->task[0]), iou, answer, reference);
        free(answer);
        free(reference);
        free(ids);
        ag_step_reset(ctx);
    }
    ds_loader_close(l);
    ds_tokenizer_free(tok);
    double sums[9];
    for (int k = 0; k < 3; k++) {
        sums[3 * k] = (double)r->n[k];
        sums[3 * k + 1] = (double)r->hits[k];
        sums[3 * k + 2] = r->iou_sum[k];
    }
    tr_dist_sum_f64(d, sums, 9);
    for (int k = 0; k < 3; k++) {
        r->n[k] = (int64_t)sums[3 * k];
        r->hits[k] = (int64_t)sums[3 * k + 1];
        r->iou_sum[k] = sums[3 * k + 2];
    }
}

int tr_eval_main(int argc, char **argv, const tr_dist *d) {
    const char *ckpt = NULL, *data = NULL, *tokenizer = NULL;
    long long limit = 1000000, max_new = 48;
    bool verbose = false;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--verbose")) {
            verbose = true;
        } else if (!strncmp(o, "--", 2)) {
            if (i + 1 >= argc) ag_fail("eval: option %s needs a value", o);
            const char *v = argv[++i];
            char *end;
            if (!strcmp(o, "--data")) {
                data = v;
            } else if (!strcmp(o, "--tokenizer")) {
                tokenizer = v;
            } else if (!strcmp(o, "--limit") || !strcmp(o, "--max-new-tokens")) {
                long long x = strtoll(v, &end, 10);
                if (end == v || *end || x < 1)
                    ag_fail("eval: %s: expected a positive whole number, got '%s'", o, v);
                *(o[2] == 'l' ? &limit : &max_new) = x;
            } else {
                ag_fail("eval: unknown option '%s'", o);
            }
        } else if (!ckpt) {
            ckpt = o;
        } else {
            ag_fail("eval: more than one checkpoint given ('%s' and '%s')", ckpt, o);
        }
    }
    if (!ckpt || !data)
        ag_fail("eval: usage: groundc eval CKPT_DIR --data DIR [--tokenizer FILE] [--limit N]");
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tr_yaml *root;
    gm_groundinggpt *m = tr_ckpt_open_model(ctx, ckpt, &root);
    char *tok = tr_ckpt_tokenizer_path(root, tokenizer, "eval");
    tr_eval_result r;
    tr_eval_grounding(ctx, m, data, tok, limit, max_new, d, &r, d->rank ? NULL : stdout, verbose);
    if (d->rank == 0) {
        static const char *const names[3] = {"rec (Acc@0.5)", "tvg (R@1@0.5)", "sound (R@1@0.5)"};
        printf("\n| task | samples | hits | score | mean IoU |\n| --- | --- | --- | --- | --- |\n");
        for (int k = 0; k < 3; k++)
            printf("| %s | %lld | %lld | %.3f | %.3f |\n", names[k], (long long)r.n[k],
                   (long long)r.hits[k], tr_eval_rate(&r, k),
                   r.n[k] ? r.iou_sum[k] / (double)r.n[k] : NAN);
    }
    free(tok);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    tr_yaml_free(root);
    return 0;
}
