// train_lm.c: see train_lm.h.
#include "train_lm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "autograd/error.h"
#include "autograd/optim.h"
#include "data/copy_task.h"
#include "data/files.h"
#include "train/checked_output.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/schedule.h"
#include "train/train_config.h"
#include "train/trainer.h"

// Every model size has a default: no section is the same as an empty one (NULL; lookups on
// NULL give the defaults).
static tr_yaml *model_section(tr_yaml *root) {
    tr_yaml *m = tr_yaml_get(root, "model");
    if (!m || m->kind == TR_YAML_MAP) return m;
    tr_yaml_fail(m, "expected a mapping of model sizes");
}

void tr_lm_config_read(tr_yaml *root, tr_lm_config *c) {
    memset(c, 0, sizeof *c);
    c->device = tr_config_device(root);
    tr_yaml *m = model_section(root);
    const int64_t big = (int64_t)1 << 40;
    c->model.vocab = tr_yaml_int(m, "vocab", 32, 3, big);
    c->model.dim = tr_yaml_int(m, "dim", 64, 2, big);
    c->model.n_layers = tr_yaml_int(m, "layers", 2, 1, 1024);
    c->model.n_heads = tr_yaml_int(m, "heads", 4, 1, 1024);
    c->model.n_kv_heads = tr_yaml_int(m, "kv_heads", c->model.n_heads, 1, 1024);
    c->model.ffn = tr_yaml_int(m, "ffn", 4 * c->model.dim, 1, big);
    c->model.max_seq = tr_yaml_int(m, "max_seq", 64, 1, big);
    c->model.rope_theta = tr_yaml_num(m, "rope_theta", 1e4, 1e-6, 1e12);
    c->model.norm_eps = tr_yaml_num(m, "norm_eps", 1e-5, 1e-12, 1);
    tr_yaml *m_at = m ? m : root; // where a size mismatch is reported
    if (c->model.dim % c->model.n_heads)
        tr_yaml_fail(m_at, "dim %lld is not a multiple of heads %lld", (long long)c->model.dim,
                     (long long)c->model.n_heads);
    if (c->model.n_heads % c->model.n_kv_heads)
        tr_yaml_fail(m_at, "heads %lld is not a multiple of kv_heads %lld",
                     (long long)c->model.n_heads, (long long)c->model.n_kv_heads);
    gm_llama_check_config(&c->model);

    tr_yaml *task = tr_yaml_map(root, "task");
    if (!task) tr_yaml_fail(root, "missing 'task' section");
    static const char *const tasks[] = {"copy", NULL};
    tr_yaml_str(task, "name", "copy", tasks);
    c->payload = tr_yaml_int(task, "payload", 8, 1, big);
    c->data_seed = (uint64_t)tr_yaml_int(task, "seed", 1, 0, INT64_MAX);
    if (ds_copy_seq_len(c->payload) > c->model.max_seq)
        tr_yaml_fail(tr_yaml_at(task, "payload"), "sequences of %lld tokens exceed max_seq %lld",
                     (long long)ds_copy_seq_len(c->payload), (long long)c->model.max_seq);

    tr_yaml *t = tr_yaml_section(root, "train"); // all defaults: absent is the same as {}
    c->steps = tr_yaml_int(t, "steps", 100, 1, big);
    c->batch = tr_yaml_int(t, "batch", 8, 1, big);
    c->lr = tr_yaml_num(t, "lr", 1e-3, 0, 10);
    c->warmup_ratio = tr_yaml_num(t, "warmup_ratio", 0.03, 0, 1);
    c->min_lr_ratio = tr_yaml_num(t, "min_lr_ratio", 0.0, 0, 1);
    c->weight_decay = tr_yaml_num(t, "weight_decay", 0.0, 0, 10);
    c->grad_clip = tr_yaml_num(t, "grad_clip", 1.0, 0, 1e9);
    c->beta1 = tr_yaml_num(t, "beta1", 0.9, 0, 0.999999);
    c->beta2 = tr_yaml_num(t, "beta2", 0.999, 0, 0.999999999);
    c->eps = tr_yaml_num(t, "eps", 1e-8, 0, 1);
    c->seed = (uint64_t)tr_yaml_int(t, "seed", 1, 0, INT64_MAX);
    c->log_every = tr_yaml_int(t, "log_every", 10, 1, big);
    c->out_dir = tr_yaml_str(t, "out", "checkpoints/run", NULL);

    tr_yaml *e = tr_yaml_map(root, "eval");
    c->eval_samples = tr_yaml_int(e, "samples", 256, 1, big);
    tr_yaml_check_used(root);
}

// Non-finite steps in a row that stop the run. The copy-task config has no
// train.max_bad_steps (stage configs do): a fixed 10, that config key's usual order of size.
enum { MAX_BAD_STEPS = 10 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// A batch of copy-task samples [first, first + B) into ids/targets tensors (B, T).
static void load_batch(ag_ctx *ctx, const tr_lm_config *c, uint64_t seed, int64_t first,
                       ag_tensor **ids, ag_tensor **targets) {
    int64_t B = c->batch, T = ds_copy_seq_len(c->payload);
    int32_t *hi = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)(B * T));
    int32_t *ht = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)(B * T));
    for (int64_t b = 0; b < B; b++)
        ds_copy_sample(seed, first + b, c->payload, c->model.vocab, hi + b * T, ht + b * T);
    *ids = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), hi);
    *targets = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ht);
}

// Held-out evaluation: greedy next-token accuracy on the copied half, per token and per
// whole sequence; samples come from a seed the training data never uses.
static void evaluate(ag_ctx *ctx, const gm_llama *m, const tr_lm_config *c, double *tok_acc,
                     double *seq_acc) {
    int64_t T = ds_copy_seq_len(c->payload), V = c->model.vocab, right = 0, total = 0,
            seq_right = 0, seqs = 0;
    uint64_t eval_seed = c->data_seed ^ 0x5eed0fe7a1u;
    ag_no_grad_begin(ctx);
    for (int64_t first = 0; first < c->eval_samples; first += c->batch) {
        ag_tensor *ids, *targets;
        load_batch(ctx, c, eval_seed, first, &ids, &targets);
        ag_tensor *pos = gm_positions(ctx, T);
        ag_tensor *logits =
            gm_llama_logits(ctx, m, gm_llama_hidden(ctx, m, gm_llama_embed(ctx, m, ids), pos));
        float *hl = ag_step_alloc(ctx, sizeof(float) * (size_t)ag_numel(logits));
        ag_copy_to_host(ag_cast(ctx, logits, AG_F32), hl);
        int32_t *ht = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)ag_numel(targets));
        ag_copy_to_host(targets, ht);
        for (int64_t b = 0; b < c->batch && first + b < c->eval_samples; b++) {
            bool all = true;
            for (int64_t t = 0; t < T; t++) {
                int32_t want = ht[b * T + t];
                if (want == DS_IGNORE_TARGET) continue;
                const float *row = hl + (b * T + t) * V;
                int64_t best = 0;
                for (int64_t v = 1; v < V; v++)
                    if (row[v] > row[best]) best = v;
                right += best == want;
                all &= best == want;
                total++;
            }
            seq_right += all;
            seqs++;
        }
        ag_step_reset(ctx);
    }
    ag_no_grad_end(ctx);
    *tok_acc = total ? (double)right / (double)total : 0;
    *seq_acc = seqs ? (double)seq_right / (double)seqs : 0;
}

int tr_train_lm(const tr_lm_config *c, const tr_yaml *resolved) {
    ds_make_dirs(c->out_dir);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.yaml", c->out_dir) >= (int)sizeof path)
        ag_fail_path_too_long(c->out_dir, "/config.yaml");
    size_t yaml_len;
    char *yaml = tr_yaml_dump(resolved, &yaml_len);
    ds_write_file_atomic(path, &(ds_file_part){yaml, yaml_len}, 1);
    ag_sync_parent(path);
    free(yaml);
    if (snprintf(path, sizeof path, "%s/metrics.jsonl", c->out_dir) >= (int)sizeof path)
        ag_fail_path_too_long(c->out_dir, "/metrics.jsonl");
    FILE *mf = fopen(path, "w");
    if (!mf) ag_fail("%s: cannot write: %s", path, strerror(errno));

    // One process: the first visible GPU, or the CPU.
    char device[320];
    tr_dist one = {.rank = 0, .world = 1};
    tr_dist_use_device(&one, c->device, device, sizeof device);
    ag_ctx *ctx = ag_ctx_new(c->device);
    gm_llama *m = gm_llama_new(ctx, &c->model, AG_F32);
    gm_llama_init(m, c->seed, 0.02);
    bool *decay = ag_xcalloc((size_t)m->n_params, sizeof *decay, "decay flags");
    for (int i = 0; i < m->n_params; i++) {
        ag_set_trainable(ctx, m->params[i], true);
        // no decay on norms (vectors) and embeddings, as is usual for Llama training
        decay[i] = m->params[i]->ndim >= 2 && !strstr(m->params[i]->name, "embed_tokens");
    }
    ag_adamw *opt = ag_adamw_new(ctx, m->params, m->n_params, decay,
                                 (ag_adamw_config){c->beta1, c->beta2, c->eps, c->weight_decay});
    int64_t T = ds_copy_seq_len(c->payload),
            warmup = (int64_t)ceil(c->warmup_ratio * (double)c->steps);
    printf("model: llama %lld params (dim %lld, %lld layers, %lld heads, %lld kv heads, ffn %lld, "
           "vocab %lld); task: copy %lld tokens (T %lld); batch %lld; %lld steps; on %s\n",
           (long long)gm_llama_param_count(m), (long long)c->model.dim,
           (long long)c->model.n_layers, (long long)c->model.n_heads,
           (long long)c->model.n_kv_heads, (long long)c->model.ffn, (long long)c->model.vocab,
           (long long)c->payload, (long long)T, (long long)c->batch, (long long)c->steps, device);
    double t0 = now_s(), t_log = t0, loss_sum = 0, last_loss = NAN;
    int64_t loss_n = 0, window = 0; // finite losses summed, steps since the last log line
    int bad = 0;                    // non-finite steps in a row
    for (int64_t step = 0; step < c->steps; step++) {
        ag_tensor *ids, *targets;
        load_batch(ctx, c, c->data_seed, step * c->batch, &ids, &targets);
        ag_tensor *loss = gm_llama_loss(ctx, m, ids, targets);
        ag_backward(ctx, loss);
        double l = ag_item(loss, 0);
        if (tr_test_nan_step(step + 1)) l = NAN;
        double gnorm = ag_clip_grad_norm(m->params, m->n_params, c->grad_clip);
        double lr = tr_lr_cosine(step, c->steps, warmup, c->lr, c->min_lr_ratio);
        if (isfinite(l) && isfinite(gnorm)) {
            bad = 0;
            ag_adamw_step(opt, lr);
            loss_sum += l;
            loss_n++;
        } else {
            bad++;
            fprintf(stderr,
                    "step %lld: non-finite loss or gradient, update skipped (%d in a row)\n",
                    (long long)step + 1, bad);
            if (bad >= MAX_BAD_STEPS)
                ag_fail("train: %d non-finite steps in a row; stopping at step %lld (the "
                        "copy-task run diverged; lower train.lr)",
                        bad, (long long)step + 1);
        }
        ag_zero_grad(ctx, m->params, m->n_params);
        ag_step_reset(ctx);
        window++;
        if ((step + 1) % c->log_every == 0 || step + 1 == c->steps) {
            double t = now_s(), tps = (double)(window * c->batch * T) / (t - t_log);
            // the mean over the window's updates (skipped steps do not count, as in trainer.c)
            double shown = loss_n ? loss_sum / (double)loss_n : NAN;
            double eta = (t - t0) / (double)(step + 1) * (double)(c->steps - step - 1);
            printf("step %5lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | "
                   "eta %dm%02ds\n",
                   (long long)step + 1, (long long)c->steps, shown, lr, gnorm, tps, (int)eta / 60,
                   (int)eta % 60);
            if (loss_n) { // no line (JSON has no NaN) for a window of skipped steps only
                last_loss = shown;
                fprintf(mf,
                        "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                        "\"tokens_per_s\": %.1f}\n",
                        (long long)step + 1, last_loss, lr, gnorm, tps);
                tr_flush_checked(mf, path); // live for tail -f, like the stage trainer's
            }
            fflush(stdout);
            t_log = t;
            loss_sum = 0;
            loss_n = 0;
            window = 0;
        }
    }
    tr_close_checked(mf, path);
    double tok_acc, seq_acc;
    evaluate(ctx, m, c, &tok_acc, &seq_acc);
    printf("\n| steps | final loss | held-out token acc | held-out sequence acc | time |\n");
    printf("| %5lld | %10.4f | %18.3f | %21.3f | %5.1fs |\n", (long long)c->steps, last_loss,
           tok_acc, seq_acc, now_s() - t0);
    printf("peak step memory %.1f MiB, parameters + optimizer %.1f MiB\n",
           (double)ag_step_peak_bytes(ctx) / 1048576.0, (double)ag_pool_bytes(ctx) / 1048576.0);
    free(decay);
    ag_adamw_free(opt);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    return 0;
}
