// trainer.c: see trainer.h.
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/optim.h"
#include "autograd/rng.h"
#include "train/batch.h"
#include "data/files.h"
#include "data/manifest.h"
#include "train/atomic_file.h"
#include "train/checkpoint.h"
#include "train/eval.h"
#include "train/schedule.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// No decay on norms, biases, embeddings, positions, query tokens and added rows (vectors
// or lookup tables), as is usual for transformers, unless the config asks for it.
static bool decays(const ag_tensor *p, bool decay_all) {
    if (decay_all) return true;
    if (p->ndim < 2) return false;
    static const char *const no[] = {"embed",        "added_rows", "position", "pos_embed",
                                     "query_tokens", "cls_token",  NULL};
    for (int i = 0; no[i]; i++)
        if (strstr(p->name, no[i])) return false;
    return true;
}

// Keeps the lines of metrics.jsonl up to step (a resumed run rewrites what came after): the
// kept lines go to a temporary file that is synced and renamed over the log.
static void truncate_metrics(const char *path, int64_t step) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return; // nothing logged yet
        ag_fail("%s: cannot read: %s", path, strerror(errno));
    }
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        fclose(f);
        ag_fail_path_too_long(path, ".tmp");
    }
    FILE *o = fopen(tmp, "wb");
    if (!o) {
        int e = errno;
        fclose(f);
        ag_fail("%s: cannot write: %s", tmp, strerror(e));
    }
    char *line = NULL;
    size_t cap = 0;
    int read_err = 0, write_err = 0;
    for (;;) {
        errno = 0;
        if (getline(&line, &cap, f) < 0) { // the end, or a read error
            if (ferror(f)) read_err = errno ? errno : EIO;
            break;
        }
        long long s = -1;
        const char *at = strstr(line, "\"step\":");
        if (at) s = strtoll(at + 7, NULL, 10);
        if (s >= 0 && s <= step && fputs(line, o) == EOF) {
            write_err = errno ? errno : EIO;
            break;
        }
    }
    free(line);
    fclose(f); // read only: nothing to lose
    errno = 0;
    if (!read_err && !write_err && (fflush(o) || ferror(o) || fsync(fileno(o))))
        write_err = errno ? errno : EIO;
    if (fclose(o) && !write_err) write_err = errno ? errno : EIO;
    if (read_err || write_err) {
        unlink(tmp);
        if (read_err) ag_fail("%s: cannot read: %s", path, strerror(read_err));
        ag_fail("%s: write failed (%s): %s", path, tmp, strerror(write_err));
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        ag_fail("%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    ag_sync_parent(path);
}

bool tr_test_nan_step(int64_t step) {
    const char *v = getenv("GROUNDC_TEST_NAN_STEPS");
    if (!v) return false;
    for (const char *p = v; *p;) {
        char *end;
        long long s = strtoll(p, &end, 10);
        if (end == p) break;
        if (s == step) return true;
        p = *end ? end + 1 : end;
    }
    return false;
}

// Test hook: GROUNDC_TEST_KILL_AT_STEP=N sends this process SIGKILL right after step N's
// update, before anything of it is saved: a crash in the middle of training.
static void maybe_die_at(int64_t step) {
    const char *v = getenv("GROUNDC_TEST_KILL_AT_STEP");
    if (v && atoll(v) == step) {
        fflush(NULL);
        kill(getpid(), SIGKILL);
    }
}

// Test hook: GROUNDC_TEST_SKIP_LAST_MICRO=R makes rank R treat the last micro-batch of every
// even step (1-based) as one without a supervised token, so that a rank that runs no watched
// backward pass meets ranks that did in the overlapped gradient all-reduce.
static bool skip_last_micro(const tr_dist *d, int64_t step, int64_t a, int64_t accumulation) {
    const char *v = getenv("GROUNDC_TEST_SKIP_LAST_MICRO");
    return v && *v && atoi(v) == d->rank && a == accumulation - 1 && (step + 1) % 2 == 0;
}

// On a GPU the micro-batches' summed losses add up in a device scalar (f32) that is read
// once per step, instead of one synchronising read per micro-batch: acc += n * loss.
static void add_loss(ag_ctx *ctx, ag_tensor *acc, ag_tensor *loss, double n) {
    ag_no_grad_begin(ctx);
    ag_tensor *l = loss->dtype == AG_F32 ? loss : ag_cast(ctx, loss, AG_F32);
    const ag_backend *be = ag_backend_for(ctx->device);
    const ag_kernels *k = be->kernels[AG_F32];
    if (!k || !k->axpy) ag_fail("train: no %s f32 axpy kernel (the step's loss sum)", be->name);
    k->axpy(acc->data, l->data, 1, n);
    ag_no_grad_end(ctx);
}

typedef struct {
    ag_tensor **params; // trainable, registry order
    int n;
    int *owner;       // ZeRO-1: the rank that updates each (all 0 without)
    ag_tensor **mine; // the ones this rank updates
    bool *mine_decay;
    int n_mine;
} trainables;

static void pick_trainables(gm_groundinggpt *m, const tr_train_config *c, const tr_dist *d,
                            trainables *t) {
    const gm_params *reg = m->params;
    t->params = ag_xcalloc((size_t)reg->n, sizeof *t->params, "trainable");
    t->owner = ag_xcalloc((size_t)reg->n, sizeof *t->owner, "trainable");
    t->mine = ag_xcalloc((size_t)reg->n, sizeof *t->mine, "trainable");
    t->mine_decay = ag_xcalloc((size_t)reg->n, sizeof *t->mine_decay, "trainable");
    int64_t *load = ag_xcalloc((size_t)d->world, sizeof *load, "trainable");
    for (int i = 0; i < reg->n; i++) {
        ag_tensor *p = reg->tensors[i];
        if (!p->requires_grad) continue;
        int k = t->n++, owner = 0;
        t->params[k] = p;
        if (c->zero1) // greedy: the least loaded rank, ties to the lowest
            for (int r = 1; r < d->world; r++)
                if (load[r] < load[owner]) owner = r;
        load[owner] += ag_numel(p);
        t->owner[k] = owner;
        if (!c->zero1 || owner == d->rank) { // without ZeRO-1 every rank updates all
            t->mine_decay[t->n_mine] = decays(p, c->decay_all);
            t->mine[t->n_mine++] = p;
        }
    }
    free(load);
}

static void free_trainables(trainables *t) {
    free(t->params);
    free(t->owner);
    free(t->mine);
    free(t->mine_decay);
}

// Refuses a checkpoint that this run cannot continue. A complete stage is only skipped, so
// its rank count and ZeRO-1 setting do not matter; its model, batch and length do.
static void check_resume(const char *dir, const tr_ckpt_state *st, const char *model_digest,
                         const tr_dist *d, int64_t global_batch, int64_t total_steps, bool zero1) {
    if (strcmp(st->model_digest, model_digest))
        ag_fail("%s: written for another model (parameter names, shapes or dtypes differ from "
                "this config's)",
                dir);
    const char *done = st->complete ? "; the stage is complete: to train it again, set "
                                      "checkpoint.out to another folder"
                                    : "";
    if (!st->complete && st->world != d->world)
        ag_fail("%s: written by %d ranks, this run has %d (launch with mpirun -np %d)", dir,
                st->world, d->world, st->world);
    if (st->global_batch != global_batch)
        ag_fail("%s: global batch %" PRId64 ", this config makes %" PRId64 "%s", dir,
                st->global_batch, global_batch, done);
    if (st->total_steps != total_steps)
        ag_fail("%s: a run of %" PRId64 " steps, this config makes %" PRId64
                " (the schedule would change)%s",
                dir, st->total_steps, total_steps, done);
    if (!st->complete && st->zero1 != zero1)
        ag_fail("%s: written %s ZeRO-1, this config has train.zero1: %s", dir,
                st->zero1 ? "with" : "without", zero1 ? "true" : "false");
}

// Samples in the stage's datasets, from their manifests (the loader counts the same).
static int64_t dataset_samples(const tr_train_config *c) {
    int64_t n = 0;
    for (int i = 0; i < c->n_datasets; i++) {
        ds_manifest m;
        ds_manifest_read(&m, c->datasets[i].dir);
        n += m.num_samples;
        ds_manifest_free(&m);
    }
    return n;
}

void tr_stage_result_clear(tr_stage_result *r) {
    memset(r, 0, sizeof *r);
    r->final_loss = r->rec_acc = r->tvg_r1 = r->rec_constant = r->tvg_constant = NAN;
}

void tr_train_stage(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                    const char *resume, tr_stage_result *res) {
    tr_stage_result_clear(res);
    const bool lead = d->rank == 0;
    FILE *log = lead ? stdout : NULL;

    // Which checkpoint, if any, to continue from.
    char *from = NULL;
    if (resume && !strcmp(resume, "auto")) {
        from = tr_ckpt_latest(c->out_dir);
    } else if (resume) {
        from = ag_xstrdup(resume);
        char sj[PATH_MAX];
        struct stat sb;
        if (snprintf(sj, sizeof sj, "%s/state.json", from) >= (int)sizeof sj)
            ag_fail_path_too_long(from, "/state.json");
        if (stat(sj, &sb)) {
            char *inner = tr_ckpt_latest(from);
            if (inner)
                ag_fail("%s: a run folder, not a checkpoint; resume from %s (or run with "
                        "--resume auto and checkpoint.out: %s)",
                        from, inner, from);
            ag_fail("%s: not a checkpoint (no state.json)", from);
        }
    } else {
        char *existing = tr_ckpt_latest(c->out_dir);
        if (existing)
            ag_fail("%s: holds checkpoints already (%s); continue with --resume auto, or set "
                    "checkpoint.out to another folder",
                    c->out_dir, existing);
    }
    // The after-stage eval's inputs, now rather than after the whole run.
    if (c->eval_data) tr_eval_check_inputs(c->eval_data, c->eval_tokenizer);
    tr_ckpt_state st = {0};
    if (from) tr_ckpt_read_state(from, &st);
    const int64_t newest = tr_ckpt_newest_step(c->out_dir);
    if (from && newest > st.step && resume && !strcmp(resume, "auto")) {
        // A run killed after renaming a checkpoint into place and before moving `latest`:
        // that checkpoint is complete, and the newest.
        free(from);
        from = ag_xmalloc(strlen(c->out_dir) + 32, "path");
        sprintf(from, "%s/step_%08" PRId64, c->out_dir, newest);
        tr_ckpt_read_state(from, &st);
    }
    // The global batch and the stage's length, as the data loader will see them.
    const int64_t G = c->micro_batch * c->accumulation * d->world;
    const int64_t samples = dataset_samples(c);
    int64_t total = c->steps ? c->steps : (int64_t)ceil(c->epochs * (double)samples / (double)G);
    if (total < 1) total = 1;

    // The device first: on a GPU every allocation must land on this rank's one.
    char device[320];
    tr_dist_use_device(d, c->device, device, sizeof device);
    ag_ctx *ctx = ag_ctx_new(c->device);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c->model);
    char model_digest[65], cfg_digest[65];
    tr_ckpt_model_digest(m->params, model_digest);
    tr_ckpt_config_digest(resolved, cfg_digest);
    if (from && st.complete) {
        check_resume(from, &st, model_digest, d, G, total, c->zero1);
        if (log) fprintf(log, "stage already complete: %s (step %" PRId64 ")\n", from, st.step);
        res->skipped = true;
        res->steps = st.total_steps;
        res->final_loss = st.loss;
        if (snprintf(res->final_ckpt, sizeof res->final_ckpt, "%s", from) >=
            (int)sizeof res->final_ckpt)
            ag_fail_path_too_long(from, "");
        if (c->eval_data) { // still report the grounding scores
            tr_ckpt_load_model(from, m->params);
            goto evaluate;
        }
        goto done;
    }
    if (!from) {
        gm_groundinggpt_init(m, c->seed, c->init_std);
        tr_import(m, &c->init, log);
    }
    tr_train_select(ctx, m, c);
    trainables tp = {0};
    pick_trainables(m, c, d, &tp);
    ag_adamw *opt = NULL;
    if (tp.n_mine)
        opt = ag_adamw_new(ctx, tp.mine, tp.n_mine, tp.mine_decay,
                           (ag_adamw_config){c->beta1, c->beta2, c->eps, c->weight_decay});

    // Data.
    ds_loader_config lc = {.datasets = c->datasets,
                           .num_datasets = c->n_datasets,
                           .seed = c->data_seed,
                           .micro = c->micro_batch,
                           .accumulation = c->accumulation,
                           .rank = d->rank,
                           .world = d->world,
                           .max_len = c->max_len,
                           .pad_id = 0,
                           .prefetch = c->prefetch,
                           .threads = c->loader_threads,
                           .checksums = c->checksums,
                           .resume = from ? &st.cursor : NULL};
    ds_loader *loader = ds_loader_open(&lc);
    tr_batch_check_geometry(loader, &c->model);
    int64_t step = 0;
    double tokens_seen = 0;
    int bad = 0;
    if (from) {
        check_resume(from, &st, model_digest, d, G, total, c->zero1);
        // Checkpoints past the one resumed are another branch: this run's would replace some
        // of them and leave the rest beside its own under `latest`.
        if (newest > st.step)
            ag_fail("%s: holds step_%08" PRId64 ", past the step %" PRId64 " resumed from %s; "
                    "set checkpoint.out to another folder (or remove the later checkpoints)",
                    c->out_dir, newest, st.step, from);
        tr_ckpt_load_model(from, m->params);
        tr_ckpt_load_optim(from, &st, opt, d);
        step = st.step;
        tokens_seen = st.tokens;
        bad = st.bad_steps;
    }
    const int64_t warmup = (int64_t)ceil(c->warmup_ratio * (double)total);

    char metrics[PATH_MAX];
    FILE *mf = NULL;
    if (lead) {
        ds_make_dirs(c->out_dir);
        if (snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", c->out_dir) >=
            (int)sizeof metrics)
            ag_fail_path_too_long(c->out_dir, "/metrics.jsonl");
        if (from) truncate_metrics(metrics, step);
        mf = fopen(metrics, from ? "ab" : "wb");
        if (!mf) ag_fail("%s: cannot write: %s", metrics, strerror(errno));
        int64_t n_train = 0;
        for (int i = 0; i < tp.n; i++) n_train += ag_numel(tp.params[i]);
        fprintf(log,
                "stage %d: model %s, %" PRId64 " parameters, %" PRId64 " trainable in %d tensors; "
                "%d rank%s x micro %" PRId64 " x accumulation %" PRId64 " = global batch %" PRId64
                "; %" PRId64 " samples, %" PRId64 " steps (warmup %" PRId64
                "); %s parameters%s on %s%s%s\n",
                c->stage, c->model.name, gm_params_total(m->params), n_train, tp.n, d->world,
                d->world > 1 ? "s" : "", c->micro_batch, c->accumulation, G, samples, total, warmup,
                ag_dtype_name(c->model.dtype),
                c->model.dtype == AG_BF16 ? " (f32 master weights and moments)" : "", device,
                from ? "; resumed from " : "", from ? from : "");
        fflush(log);
    }
    // A live line on a terminal; not under mpirun, which hands every rank a pseudo-terminal
    // even when the output goes to a file.
    const bool tty = lead && d->world == 1 && isatty(fileno(stdout));
    double t0 = now_s(), t_win = t0, win_loss = 0, win_tokens = 0, last_loss = NAN;
    int64_t win_steps = 0, start_step = step;
    tr_ckpt_state out = {.total_steps = total,
                         .stage = c->stage,
                         .seed = c->seed,
                         .world = d->world,
                         .zero1 = c->zero1,
                         .global_batch = G};
    memcpy(out.config_digest, cfg_digest, 65);
    memcpy(out.model_digest, model_digest, 65);
    ag_tensor *loss_acc =
        c->device == AG_CPU ? NULL : ag_param(ctx, "trainer.loss_sum", AG_F32, AG_SHAPE(1));
    // Gradients are summed across ranks while the last micro-batch's backward pass runs
    // (train.overlap_allreduce; train/dist.h says what overlaps on which path), else after it.
    tr_grad_reducer *red =
        c->overlap_allreduce ? tr_grad_reducer_new(d, tp.params, tp.n, c->bucket_elems) : NULL;
    while (step < total) {
        // Forward and backward over this rank's micro-batches; gradients add up.
        double sums[2] = {0, 0}; // summed loss, supervised tokens
        for (int64_t a = 0; a < c->accumulation; a++) {
            const ds_batch *b = ds_loader_next(loader);
            int64_t n = tr_batch_supervised(b);
            if (skip_last_micro(d, step, a, c->accumulation)) n = 0;
            if (n == 0) continue;
            gm_groundinggpt_batch gb;
            tr_batch_to_model(ctx, b, &gb);
            uint64_t seed = ag_mix64(c->seed ^ ag_mix64((uint64_t)step * 0x10000u + (uint64_t)a) ^
                                     ag_mix64((uint64_t)d->rank + 0x51ed));
            ag_tensor *loss = gm_groundinggpt_loss(ctx, m, &gb, true, seed);
            ag_tensor *scaled = ag_scale(ctx, loss, (double)n);
            if (red && a == c->accumulation - 1) { // earlier passes still add into the gradients
                tr_grad_reducer_begin(red);
                ag_backward_watch(ctx, scaled, tp.params, tp.n, tr_grad_reducer_ready, red);
            } else {
                ag_backward(ctx, scaled);
            }
            if (loss_acc)
                add_loss(ctx, loss_acc, loss, (double)n);
            else
                sums[0] += ag_item(loss, 0) * (double)n;
            sums[1] += (double)n;
            ag_step_reset(ctx);
        }
        if (loss_acc) { // the step's one read of the loss; the next step starts from 0
            sums[0] = ag_item(loss_acc, 0);
            ag_backend_for(ctx->device)->memset0(loss_acc->data, sizeof(float));
        }
        tr_dist_sum_f64(d, sums, 2);
        double loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
        if (tr_test_nan_step(step + 1)) loss = NAN;
        // Summed unscaled (the scale needs every rank's token count); scaled here.
        const double inv_tokens = sums[1] > 0 ? 1.0 / sums[1] : 0;
        if (red)
            tr_grad_reducer_finish(red, inv_tokens);
        else
            tr_dist_allreduce_grads(d, tp.params, tp.n, inv_tokens, c->bucket_elems);
        // One device-to-host copy on a GPU (the backend's sum_squares_many).
        double gnorm = ag_clip_grad_norm(tp.params, tp.n, c->grad_clip);
        double lr = tr_lr_cosine(step, total, warmup, c->lr, c->min_lr_ratio);
        bool finite = isfinite(loss) && isfinite(gnorm);
        step++;
        if (finite) {
            bad = 0;
            if (opt) ag_adamw_step(opt, lr);
            if (c->zero1)
                for (int i = 0; i < tp.n; i++) tr_dist_broadcast(d, tp.params[i], tp.owner[i]);
            tokens_seen += sums[1];
            win_loss += loss;
            win_steps++;
            win_tokens += sums[1];
        } else {
            bad++;
            if (lead) {
                fprintf(stderr,
                        "step %" PRId64 ": non-finite %s (%g), update skipped (%d in a row)\n",
                        step, isfinite(loss) ? "gradient norm" : "loss",
                        isfinite(loss) ? gnorm : loss, bad);
                fprintf(mf, "{\"step\": %" PRId64 ", \"skipped\": true, \"reason\": \"%s\"}\n",
                        step, isfinite(loss) ? "gradient" : "loss");
            }
            if (bad >= c->max_bad_steps)
                ag_fail("train: %d non-finite steps in a row (train.max_bad_steps); stopping at "
                        "step %" PRId64 " (the last checkpoint is intact)",
                        bad, step);
        }
        ag_zero_grad(ctx, tp.params, tp.n);
        maybe_die_at(step);

        double t = now_s();
        bool log_now = step % c->log_every == 0 || step == total;
        if (lead && (log_now || tty)) {
            double rate = (t - t_win) > 0 ? win_tokens / (t - t_win) : 0;
            double eta = (t - t0) / (double)(step - start_step) * (double)(total - step);
            double shown = win_steps ? win_loss / (double)win_steps : loss;
            fprintf(log,
                    "%sstage %d | step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.2e | grad norm "
                    "%.3f | %.0f tok/s | eta %dm%02ds%s",
                    tty ? "\r" : "", c->stage, step, total, shown, lr, gnorm, rate, (int)eta / 60,
                    (int)eta % 60, log_now || !tty ? "\n" : "");
            fflush(log);
        }
        if (log_now && win_steps) {
            last_loss = win_loss / (double)win_steps;
            if (lead)
                fprintf(mf,
                        "{\"step\": %" PRId64 ", \"stage\": %d, \"loss\": %.17g, \"lr\": %.6e, "
                        "\"grad_norm\": %.17g, \"tokens\": %.0f, \"tokens_per_s\": %.1f, "
                        "\"elapsed_s\": %.3f}\n",
                        step, c->stage, last_loss, lr, gnorm, tokens_seen,
                        (t - t_win) > 0 ? win_tokens / (t - t_win) : 0, t - t0);
            // Live for tail -f and plots mid-run; a resume drops lines past its checkpoint.
            if (lead) tr_flush_checked(mf, metrics);
            win_loss = win_tokens = 0;
            win_steps = 0;
            t_win = t;
        }
        if ((c->save_every && step % c->save_every == 0) || step == total) {
            if (lead) tr_flush_checked(mf, metrics);
            out.step = step;
            out.complete = step == total;
            out.cursor = ds_loader_cursor(loader);
            out.bad_steps = bad;
            out.tokens = tokens_seen;
            out.loss = last_loss;
            tr_ckpt_save(c->out_dir, &out, m->params, opt, resolved, d, c->keep);
        }
    }
    if (lead) tr_close_checked(mf, metrics);
    ds_loader_close(loader);
    tr_grad_reducer_free(red);
    if (opt) ag_adamw_free(opt);
    free_trainables(&tp);
    res->steps = total;
    res->final_loss = isfinite(last_loss) ? last_loss : st.loss;
    char step_name[40];
    snprintf(step_name, sizeof step_name, "/step_%08" PRId64, total);
    if (snprintf(res->final_ckpt, sizeof res->final_ckpt, "%s%s", c->out_dir, step_name) >=
        (int)sizeof res->final_ckpt)
        ag_fail_path_too_long(c->out_dir, step_name);

evaluate:
    if (c->eval_data) {
        tr_eval_result er;
        tr_eval_grounding(ctx, m, c->eval_data, c->eval_tokenizer, c->eval_limit, c->eval_max_new,
                          d, &er, log, false);
        res->rec_acc = tr_eval_rate(&er, TR_EVAL_REC);
        res->tvg_r1 = tr_eval_rate(&er, TR_EVAL_TVG);
        res->rec_constant = er.constant[TR_EVAL_REC];
        res->tvg_constant = er.constant[TR_EVAL_TVG];
        res->rec_n = er.n[TR_EVAL_REC];
        res->tvg_n = er.n[TR_EVAL_TVG];
        if (log)
            fprintf(log,
                    "eval %s: REC Acc@0.5 %.3f (%" PRId64
                    " samples), temporal R@1@0.5 %.3f (%" PRId64
                    " samples), sound R@1@0.5 %.3f (%" PRId64 " samples)\n",
                    c->eval_data, res->rec_acc, er.n[0], res->tvg_r1, er.n[1],
                    tr_eval_rate(&er, TR_EVAL_SOUND), er.n[2]);
    }
done:
    free(from);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}
