// trainer.c: see trainer.h.
#include "train/trainer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/optim.h"
#include "autograd/rng.h"
#include "train/batch.h"
#include "data/files.h"
#include "data/manifest.h"
#include "train/checked_output.h"
#include "train/checkpoint.h"
#include "train/eval.h"
#include "train/schedule.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
        ssize_t len = getline(&line, &cap, f);
        if (len < 0) { // the end, or a read error (ENOMEM sets errno, not the stream's flag)
            if (ferror(f) || errno) read_err = errno ? errno : EIO;
            break;
        }
        if (line[len - 1] != '\n') break; // a line cut by a kill: after the checkpoint's step
        // Lines of later steps go; a line without a step (not the trainer's) stays.
        const char *at = strstr(line, "\"step\":");
        if (at && strtoll(at + 7, NULL, 10) > step) continue;
        if (fputs(line, o) == EOF) {
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

// A polite stop: SIGTERM (a scheduler preempting the job, `kill`), SIGINT (Ctrl-C) or SIGUSR1
// (which mpirun forwards to every rank, where a SIGTERM or Ctrl-C to mpirun kills the ranks
// a second later) during the steps lets the step under way finish, writes a checkpoint and
// exits 128 + the signal, so that --resume auto loses no step. Every rank reports its flag in the
// step's loss sum, so all stop after the same step. A second signal of the kind does what it would
// without groundc (the handler hands it back to the default), for when waiting for the step is not
// wanted.
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) {
    if (!g_stop_signal) g_stop_signal = sig;
    signal(sig, SIG_DFL); // async-signal-safe
}

// Installs (on) or restores (off) the handlers of the stop signals; old keeps what was there.
enum { N_STOP_SIGNALS = 3 };
static void stop_signals(bool on, struct sigaction old[N_STOP_SIGNALS]) {
    static const int sigs[N_STOP_SIGNALS] = {SIGTERM, SIGINT, SIGUSR1};
    for (int i = 0; i < N_STOP_SIGNALS; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sa.sa_flags = SA_RESTART; // a read or write under way (any thread) goes on, no EINTR
        sigemptyset(&sa.sa_mask);
        if (sigaction(sigs[i], on ? &sa : &old[i], on ? &old[i] : NULL))
            ag_fail("train: sigaction(%s): %s", strsignal(sigs[i]), strerror(errno));
    }
}

// Test hooks, each N[:R]: right after step N's update this process (rank R only, when given)
// gets SIGTERM (GROUNDC_TEST_SIGNAL_AT_STEP), as a scheduler's preemption would send, or
// SIGSTOP (GROUNDC_TEST_STOP_AT_STEP): a rank that stops answering.
static void signal_hook(const char *var, int sig, const tr_dist *d, int64_t step) {
    const char *v = getenv(var);
    if (!v || atoll(v) != step) return;
    const char *r = strchr(v, ':');
    if (!r || atoi(r + 1) == d->rank) raise(sig);
}

static void maybe_signal_at(const tr_dist *d, int64_t step) {
    signal_hook("GROUNDC_TEST_SIGNAL_AT_STEP", SIGTERM, d, step);
    signal_hook("GROUNDC_TEST_STOP_AT_STEP", SIGSTOP, d, step);
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
            t->mine_decay[t->n_mine] = tr_param_decays(p->name, p->ndim, c->decay_all);
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

// What a refusal over a complete stage's checkpoint adds.
static const char complete_again[] = "; the stage is complete: to train it again, set "
                                     "checkpoint.out to another folder";

// Refuses a checkpoint that this run cannot continue. A complete stage is only skipped, so
// its rank count and ZeRO-1 setting do not matter; its model, batch and length do.
static void check_resume(const char *dir, const tr_ckpt_state *st, const char *model_digest,
                         const tr_dist *d, int64_t global_batch, int64_t total_steps, bool zero1) {
    if (strcmp(st->model_digest, model_digest))
        ag_fail("%s: written for another model (parameter names, shapes or dtypes differ from "
                "this config's)",
                dir);
    const char *done = st->complete ? complete_again : "";
    // Another rank count continues the run when the global batch stays: the loader re-splits
    // the stream and, without ZeRO-1, every rank holds the whole optimizer state. With ZeRO-1
    // each rank's file holds its own share.
    if (!st->complete && st->world != d->world && st->zero1)
        ag_fail("%s: written by %d rank%s with ZeRO-1 (the optimizer state is sharded per rank), "
                "this run has %d (launch with mpirun -np %d)",
                dir, st->world, st->world > 1 ? "s" : "", d->world, st->world);
    if (st->global_batch != global_batch)
        ag_fail("%s: global batch %" PRId64 ", this config makes %" PRId64 "%s", dir,
                st->global_batch, global_batch,
                *done                   ? done
                : st->world != d->world ? " (on another number of ranks, set data.global_batch to "
                                          "the checkpoint's)"
                                        : "");
    if (st->total_steps != total_steps)
        ag_fail("%s: a run of %" PRId64 " steps, this config makes %" PRId64
                " (the schedule would change)%s",
                dir, st->total_steps, total_steps, done);
    if (!st->complete && st->zero1 != zero1)
        ag_fail("%s: written %s ZeRO-1, this config has train.zero1: %s (set it to %s to "
                "continue this run)",
                dir, st->zero1 ? "with" : "without", zero1 ? "true" : "false",
                st->zero1 ? "true" : "false");
}

// Samples in the stage's datasets, from their manifests (the loader counts the same).
static int64_t dataset_samples(const tr_train_config *c) {
    tr_batch_check_dataset_dirs(c);
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
    r->final_loss = r->rec_acc = r->tvg_r1 = r->sound_r1 = NAN;
    r->rec_constant = r->tvg_constant = r->sound_constant = NAN;
}

// Telemetry of the steps since the last logged line (the window).
typedef struct {
    bool tty;           // a live progress line on a terminal
    double t0, t_win;   // start of the run and of the window (now_s)
    double loss;        // summed mean loss of the window's finite steps
    double tokens;      // supervised tokens of the window's finite steps
    double rate_tokens; // of them, those this process trained since t_win (tokens_per_s)
    double elapsed0;    // training time before this process (the checkpoint's elapsed_s)
    int64_t steps;      // finite steps in the window
    int64_t empty;      // steps in the window without a supervised token (no update)
    int64_t start_step; // the step this run started from (the ETA counts from it)
    double last_loss;   // mean loss of the last logged window (NAN: none logged yet)
} window;

// One training stage as it runs: what tr_train_stage's phases share.
typedef struct {
    const tr_train_config *c;
    const tr_yaml *resolved;
    const tr_dist *d;
    bool lead; // rank 0: prints and writes metrics.jsonl
    FILE *log; // stdout on rank 0, NULL elsewhere
    // Where the stage starts.
    char *from;       // the checkpoint continued from (NULL: a fresh start)
    tr_ckpt_state st; // its state.json (zero on a fresh start)
    int64_t newest;   // the newest step_N in checkpoint.out (-1: none)
    int64_t G;        // global batch: micro-batch x accumulation x ranks
    int64_t samples;  // in the stage's datasets
    int64_t total;    // optimizer steps of the stage
    int64_t warmup;   // of them, warmup steps
    // The model.
    char device[320];
    ag_ctx *ctx;
    gm_groundinggpt *m;
    char model_digest[65], cfg_digest[65];
    char run_id[33], init_from[48]; // lineage (tr_ckpt_state), for the checkpoints
    // Training.
    trainables tp;
    ag_adamw *opt; // NULL when this rank updates nothing (ZeRO-1)
    ds_loader *loader;
    ag_tensor *loss_acc;  // the step's loss sum on a GPU (NULL on the CPU)
    tr_grad_reducer *red; // NULL without train.overlap_allreduce
    char metrics[PATH_MAX];
    FILE *mf; // metrics.jsonl (rank 0)
    int64_t step;
    double tokens_seen;
    int bad;       // non-finite steps in a row
    int64_t empty; // steps of this run without a supervised token
    int stop;      // a rank was asked to stop (the signal: its own, else SIGTERM)
    struct sigaction old_signals[N_STOP_SIGNALS];
    window win;
    int lock; // OUT/.lock held by rank 0 (lock_out_dir), -1 when not held
} stage_run;

// One optimizer step, as reported.
typedef struct {
    double loss;   // mean over the global batch's supervised tokens
    double tokens; // supervised tokens of the global batch
    double gnorm;  // before clipping
    double lr;
    bool finite; // loss and gradient norm finite: the update was applied
    bool empty;  // no supervised token in the global batch: no loss, no update
} step_stats;

char *tr_checkpoint_to_resume(const tr_train_config *c, const char *resume) {
    if (resume && !strcmp(resume, "auto")) return tr_ckpt_latest(c->out_dir);
    if (!resume) {
        char *existing = tr_ckpt_latest(c->out_dir);
        if (existing)
            ag_fail("%s: holds checkpoints already (%s); continue with --resume auto, or set "
                    "checkpoint.out to another folder",
                    c->out_dir, existing);
        return NULL;
    }
    char *from = ag_xstrdup(resume);
    char sj[PATH_MAX];
    struct stat sb;
    if (snprintf(sj, sizeof sj, "%s/state.json", from) >= (int)sizeof sj)
        ag_fail_path_too_long(from, "/state.json");
    if (stat(from, &sb)) // "no state.json" would hide that the folder itself is missing
        ag_fail("%s: %s (--resume)", from, errno == ENOENT ? "does not exist" : strerror(errno));
    if (!S_ISDIR(sb.st_mode)) ag_fail("%s: not a checkpoint (a file, not a folder)", from);
    if (stat(sj, &sb)) {
        char *inner = tr_ckpt_latest(from);
        if (inner)
            ag_fail("%s: a run folder, not a checkpoint; resume from %s (or run with "
                    "--resume auto and checkpoint.out: %s)",
                    from, inner, from);
        ag_fail("%s: not a checkpoint (no state.json)", from);
    }
    return from;
}

// Reads s->from's state and the newest step_N of checkpoint.out.
static void read_resume_state(stage_run *s, bool resume_auto) {
    const tr_train_config *c = s->c;
    if (s->from) tr_ckpt_read_state(s->from, &s->st);
    s->newest = tr_ckpt_newest_step(c->out_dir);
    if (s->from && s->newest > s->st.step && resume_auto) {
        // A run killed after renaming a checkpoint into place and before moving `latest`:
        // that checkpoint is complete, and the newest.
        free(s->from);
        s->from = ag_xmalloc(strlen(c->out_dir) + 32, "path");
        sprintf(s->from, "%s/step_%08" PRId64, c->out_dir, s->newest);
        tr_ckpt_read_state(s->from, &s->st);
    }
}

// The global batch and the stage's length, as the data loader will see them.
static void plan_length(stage_run *s) {
    const tr_train_config *c = s->c;
    s->G = c->micro_batch * c->accumulation * s->d->world;
    s->samples = dataset_samples(c);
    s->total = c->steps ? c->steps : (int64_t)ceil(c->epochs * (double)s->samples / (double)s->G);
    if (s->total < 1) s->total = 1;
    s->warmup = (int64_t)ceil(c->warmup_ratio * (double)s->total);
    if (s->lead && s->G > s->samples) // (the stream cycles: legal, but rarely meant)
        fprintf(stderr,
                "train: warning: the global batch of %" PRId64 " is more than the %" PRId64
                " samples of the datasets: every step holds some samples more than once\n",
                s->G, s->samples);
}

// Every rank starts from the same place: the same checkpoint (or none) and the same number of
// samples in the datasets, which fixes the stage's length. Ranks that read checkpoint.out or
// the datasets from their own disks could differ, and would train apart or wait for ever in
// a collective the others never join. The ranks that differ say how; all exit 1.
static void check_ranks_start(const stage_run *s) {
    if (s->d->world == 1) return;
    char mine[PATH_MAX + 200];
    if (s->from)
        snprintf(mine, sizeof mine, "%s (step %" PRId64 "%s, run %.8s), %" PRId64 " samples",
                 s->from, s->st.step, s->st.complete ? ", complete" : "", s->st.run_id, s->samples);
    else
        snprintf(mine, sizeof mine, "a fresh start, %" PRId64 " samples", s->samples);
    char *zero;
    bool same = tr_dist_agree(s->d, mine, &zero);
    if (zero)
        fprintf(stderr,
                "groundc: error: [rank %d] %s: this rank starts from %s, rank 0 from %s: every "
                "rank must see the same checkpoint.out and datasets\n",
                s->d->rank, s->c->out_dir, mine, zero);
    free(zero);
    if (!same) tr_dist_exit(s->d, 1);
}

// The context and the model (not yet initialised), and their digests for the checkpoints.
static void build_model(stage_run *s) {
    const tr_train_config *c = s->c;
    tr_dist_set_timeout(c->collective_timeout_s);
    // The device first: on a GPU every allocation must land on this rank's one.
    tr_dist_use_device(s->d, c->device, s->device, sizeof s->device);
    s->ctx = ag_ctx_new(c->device);
    s->m = gm_groundinggpt_new(s->ctx, &c->model);
    tr_ckpt_model_digest(s->m->params, s->model_digest);
    tr_ckpt_config_digest(s->resolved, s->cfg_digest);
}

// Keys of the resolved config that do not change what a run computes: where it writes, how
// often it logs, how the loader works, the after-stage eval.
static bool run_neutral_key(const char *path) {
    static const char *const neutral[] = {
        "checkpoint",   "eval",          "train.log_every", "train.collective_timeout_s",
        "data.threads", "data.prefetch", "data.checksums"};
    for (size_t i = 0; i < sizeof neutral / sizeof *neutral; i++) {
        size_t n = strlen(neutral[i]);
        if (!strncmp(path, neutral[i], n) && (path[n] == 0 || path[n] == '.')) return true;
    }
    // dropout changes the training, not what the weights mean
    const char *last = strrchr(path, '.');
    return last && !strcmp(last, ".dropout");
}

// Whether path is "model" or "lora" or lies under one: what the weights mean (LoRA's alpha
// scales its adapters; the root "" counts as neither side).
static bool model_key(const char *path) {
    static const char *const model[] = {"model", "lora"};
    for (size_t i = 0; i < sizeof model / sizeof *model; i++) {
        size_t n = strlen(model[i]);
        if (!strncmp(path, model[i], n) && (path[n] == 0 || path[n] == '.')) return true;
    }
    return false;
}
// tr_yaml_diff's skips: the model's keys only, or everything but them.
static bool skip_but_model(const char *path) {
    return run_neutral_key(path) || (*path && !model_key(path));
}
static bool skip_model(const char *path) {
    return run_neutral_key(path) || model_key(path);
}

// The run s->from belongs to started from init.checkpoint's weights as they were then: a
// checkpoint retrained in place since (a curriculum's earlier stage trained again) holds
// another run's, and this stage's weights descend from the old ones.
static void check_lineage(const stage_run *s, const char *again) {
    const char *init = s->c->init.path[TR_INIT_CHECKPOINT];
    if (!s->st.init_from[0] || !init) return;
    char now[48];
    tr_ckpt_identity(init, now);
    if (!now[0] || !strcmp(now, s->st.init_from)) return;
    ag_fail("%s: trained from init.checkpoint %s when it held run %.8s (step %s), which has "
            "been replaced by run %.8s (step %s): these weights descend from the old ones; "
            "set checkpoint.out to another folder, or remove this one, to train from the new%s",
            s->from, init, s->st.init_from, strchr(s->st.init_from, '@') + 1, now,
            strchr(now, '@') + 1, again);
}

// The checkpoint's data stream is this config's: its data.seed, and the datasets, their order,
// weights and shard contents (the stream digest of its cursor, from the manifests: a folder
// repacked in place has the config's path and other contents).
static void check_stream(const stage_run *s, const char *again) {
    const tr_train_config *c = s->c;
    const ds_cursor *cur = &s->st.cursor;
    const char *resume = ": a resume continues the stream where it stopped; set checkpoint.out "
                         "to another folder to start afresh";
    if (*again) resume = again;
    if (cur->seed != c->data_seed)
        ag_fail("%s: its data stream was drawn with data.seed %llu, this config has %llu%s",
                s->from, (unsigned long long)cur->seed, (unsigned long long)c->data_seed, resume);
    if (!ds_stream_matches(c->datasets, c->n_datasets, cur->digest))
        ag_fail("%s: trained on other data (data.datasets: the folders, their order, weights or "
                "shards' contents changed since)%s",
                s->from, resume);
}

// Whether this run can continue s->from or take it as its complete stage: check_resume, then
// whether it was written by this stage (its number), from the same init checkpoint, on this
// data stream, with these trainable parameters (a resume; the selection made) and by this
// config (the checkpoint's config.yaml against the resolved config, where this run has it):
// another stage, or a model whose shape-neutral settings (RoPE base, norm eps, activation,
// LoRA alpha, ...) differ, is refused; other changes are refused for a complete stage (it is
// not this config's run) and noted on resume.
static void check_fits(const stage_run *s) {
    const tr_train_config *c = s->c;
    const char *again = s->st.complete ? complete_again : "";
    if (s->st.stage != c->stage) // first: the stage explains any other difference
        ag_fail("%s: a checkpoint of stage %d, this config trains stage %d: give each stage a "
                "checkpoint.out of its own (in a curriculum, --set checkpoint.out applies to "
                "every stage)",
                s->from, s->st.stage, c->stage);
    check_resume(s->from, &s->st, s->model_digest, s->d, s->G, s->total, c->zero1);
    check_lineage(s, again);
    check_stream(s, again);
    if (!s->st.complete) tr_ckpt_check_trainables(s->from, &s->st, s->m->params);
    if (!s->resolved) return;
    if (!ds_dir_has(s->from, "config.yaml")) return; // (checked elsewhere: a checkpoint has one)
    char *path = ag_xpath_join(s->from, "config.yaml");
    tr_yaml *theirs = tr_yaml_load(path);
    char diff[1500];
    if (tr_yaml_diff(theirs, s->resolved, skip_but_model, diff, sizeof diff))
        ag_fail("%s: written for another model config (%s)%s", s->from, diff, again);
    int n = tr_yaml_diff(theirs, s->resolved, skip_model, diff, sizeof diff);
    tr_yaml_free(theirs);
    free(path);
    if (n && s->st.complete)
        ag_fail("%s: a complete run of another config (%s): set checkpoint.out to another "
                "folder to train this one",
                s->from, diff);
    if (n && s->lead)
        fprintf(stderr,
                "train: note: %s was written with another config; continuing with this "
                "one: %s\n",
                s->from, diff);
}

// The stage's data loader; at the checkpoint's cursor when resume (its seed and dataset
// digest checked against this config's).
static ds_loader *open_loader(const stage_run *s, bool resume) {
    const tr_train_config *c = s->c;
    ds_loader_config lc = {.datasets = c->datasets,
                           .num_datasets = c->n_datasets,
                           .seed = c->data_seed,
                           .micro = c->micro_batch,
                           .accumulation = c->accumulation,
                           .rank = s->d->rank,
                           .world = s->d->world,
                           .max_len = c->max_len,
                           .pad_id = 0,
                           .prefetch = c->prefetch,
                           .threads = c->loader_threads,
                           .checksums = c->checksums,
                           .resume = resume ? &s->st.cursor : NULL};
    char *state = resume ? ag_xpath_join(s->from, "state.json") : NULL;
    lc.resume_from = state;
    ds_loader *l = tr_batch_open_loader(&lc, &c->model);
    free(state);
    return l;
}

// The after-stage eval's scores are kept beside the weights they measured, in the checkpoint's
// eval.json, under a key of what they depend on beyond the weights: the eval data's manifest
// (its shards' checksums), the tokenizer file and the limits. A curriculum run again takes a
// complete stage's scores from there instead of evaluating it again (the weights of a stage
// done are not even loaded).
static void eval_key(const tr_train_config *c, char out[65]) {
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    bool ok = x && EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1;
    char *manifest = ag_xpath_join(c->eval_data, DS_MANIFEST_NAME);
    const char *files[2] = {manifest, c->eval_tokenizer};
    for (int i = 0; i < 2 && ok; i++) {
        size_t n = 0;
        char *text = files[i] ? ds_read_file(files[i], &n) : NULL;
        ok = EVP_DigestUpdate(x, &n, sizeof n) == 1 && (!n || EVP_DigestUpdate(x, text, n) == 1);
        free(text);
    }
    free(manifest);
    char line[96];
    int k = snprintf(line, sizeof line, "eval v1 limit %" PRId64 " max_new %" PRId64, c->eval_limit,
                     c->eval_max_new);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    ok = ok && EVP_DigestUpdate(x, line, (size_t)k) == 1 && EVP_DigestFinal_ex(x, md, &len) == 1;
    EVP_MD_CTX_free(x);
    if (!ok || len != 32) ag_fail("train: SHA-256 of the eval inputs failed");
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

// The result's fields eval.json holds: its scores (null for NAN) and sample counts.
static const struct {
    const char *name;
    size_t offset;
    bool count; // an int64_t, else a double
} eval_fields[] = {
    {"rec_acc", offsetof(tr_stage_result, rec_acc), false},
    {"tvg_r1", offsetof(tr_stage_result, tvg_r1), false},
    {"sound_r1", offsetof(tr_stage_result, sound_r1), false},
    {"rec_constant", offsetof(tr_stage_result, rec_constant), false},
    {"tvg_constant", offsetof(tr_stage_result, tvg_constant), false},
    {"sound_constant", offsetof(tr_stage_result, sound_constant), false},
    {"rec_n", offsetof(tr_stage_result, rec_n), true},
    {"tvg_n", offsetof(tr_stage_result, tvg_n), true},
    {"sound_n", offsetof(tr_stage_result, sound_n), true},
};
enum { N_EVAL_FIELDS = sizeof eval_fields / sizeof *eval_fields };

// Fills res from CKPT/eval.json when it holds scores under key; false otherwise (no file, a
// damaged one, other inputs: the eval runs again).
static bool read_eval_cache(const char *ckpt, const char *key, tr_stage_result *res) {
    char *path = ag_xpath_join(ckpt, "eval.json");
    struct stat sb;
    bool hit = false;
    if (!stat(path, &sb) && S_ISREG(sb.st_mode) && sb.st_size < (1 << 20)) {
        char *text = ds_read_file(path, NULL);
        cJSON *j = cJSON_Parse(text);
        free(text);
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key");
        hit = cJSON_IsString(k) && !strcmp(k->valuestring, key);
        tr_stage_result got = *res;
        for (int i = 0; i < N_EVAL_FIELDS && hit; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, eval_fields[i].name);
            char *at = (char *)&got + eval_fields[i].offset;
            hit = cJSON_IsNumber(f) || (!eval_fields[i].count && cJSON_IsNull(f));
            if (hit && eval_fields[i].count)
                *(int64_t *)at = (int64_t)f->valuedouble;
            else if (hit)
                *(double *)at = cJSON_IsNull(f) ? NAN : f->valuedouble;
        }
        if (hit) *res = got;
        cJSON_Delete(j);
    }
    free(path);
    return hit;
}

static void write_eval_cache(const char *ckpt, const char *key, const tr_stage_result *res) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "key", key);
    for (int i = 0; i < N_EVAL_FIELDS; i++) {
        const char *at = (const char *)res + eval_fields[i].offset;
        double x = eval_fields[i].count ? (double)*(const int64_t *)at : *(const double *)at;
        if (isfinite(x))
            cJSON_AddNumberToObject(j, eval_fields[i].name, x);
        else
            cJSON_AddNullToObject(j, eval_fields[i].name);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) ag_fail("train: out of memory writing eval.json");
    char *path = ag_xpath_join(ckpt, "eval.json");
    ds_write_file_atomic(path, &(ds_file_part){text, strlen(text)}, 1);
    free(path);
    free(text);
}

// The after-stage eval's line (rank 0): its scores, and the checkpoint whose eval.json they
// came from (NULL: evaluated now).
static void print_eval(const stage_run *s, const tr_stage_result *res, const char *kept_in) {
    if (!s->log) return;
    fprintf(s->log,
            "eval %s: REC Acc@0.5 %.3f (%" PRId64 " samples), temporal R@1@0.5 %.3f (%" PRId64
            " samples), sound R@1@0.5 %.3f (%" PRId64 " samples)",
            s->c->eval_data, res->rec_acc, res->rec_n, res->tvg_r1, res->tvg_n, res->sound_r1,
            res->sound_n);
    if (kept_in) fprintf(s->log, " (from %s/eval.json)", kept_in);
    fputc('\n', s->log);
}

// The stage's final checkpoint holds it already: nothing to train. Its weights are loaded
// when the after-stage eval still has to report the grounding scores.
static void skip_complete_stage(stage_run *s, tr_stage_result *res) {
    const tr_train_config *c = s->c;
    check_fits(s);
    if (s->log)
        fprintf(s->log, "stage already complete: %s (step %" PRId64 ")\n", s->from, s->st.step);
    res->skipped = true;
    res->steps = s->st.total_steps;
    res->final_loss = s->st.loss;
    if (snprintf(res->final_ckpt, sizeof res->final_ckpt, "%s", s->from) >=
        (int)sizeof res->final_ckpt)
        ag_fail_path_too_long(s->from, "");
    if (!c->eval_data) return;
    char key[65];
    eval_key(c, key);
    tr_stage_result cached = *res;
    bool hit = tr_dist_all(s->d, read_eval_cache(s->from, key, &cached)); // (every rank, or none)
    if (hit) {
        *res = cached;
        res->eval_cached = true;
        print_eval(s, res, s->from);
    } else {
        tr_ckpt_load_model(s->from, s->m->params);
    }
}

// After the init: frozen parameters that no init entry loaded keep their random values for
// the whole stage (e.g. a GroundingGPT checkpoint, which does not hold its CLIP tower, without
// init.image_encoder): one warning naming the modules. Said only when some init entry is
// given (a run from scratch means it).
static void warn_random_frozen(const gm_groundinggpt *m, const tr_init_config *init,
                               const bool *loaded) {
    bool any_init = false;
    for (int p = 0; p < TR_INIT_NPART; p++) any_init = any_init || init->path[p];
    if (!any_init) return;
    char list[1024] = "";
    size_t len = 0;
    int64_t tensors = 0, elements = 0;
    char last[96] = "";
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *t = m->params->tensors[i];
        if (loaded[i] || t->requires_grad) continue;
        tensors++, elements += ag_numel(t);
        char g[96];
        gm_params_group_of(t->name, g, sizeof g);
        if (!strcmp(g, last)) continue; // (parameters of a module lie together)
        snprintf(last, sizeof last, "%s", g);
        if (len < sizeof list - 1)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", g);
    }
    // GroundingGPT's own checkpoints keep CLIP out of their state dict (a list attribute)
    bool clip = strstr(list, "model.vision_tower") && init->path[TR_INIT_CHECKPOINT] &&
                !init->path[TR_INIT_IMAGE_ENCODER];
    if (tensors)
        fprintf(stderr,
                "train: warning: %" PRId64 " frozen parameter tensors (%" PRId64 " values) were "
                "loaded by no init entry and stay at their random initialisation for the whole "
                "stage: %s%s\n",
                tensors, elements, list,
                clip ? " (GroundingGPT's checkpoints do not hold the CLIP tower: give "
                       "init.image_encoder too)"
                     : "");
}

// Whether this run can continue s->from (model, ranks, batch, length) and, unless that stage
// is complete, whether checkpoint.out holds later checkpoints: another branch, whose files
// this run's would replace in part and leave beside its own under `latest`.
static void check_continues(const stage_run *s) {
    const tr_train_config *c = s->c;
    check_fits(s);
    if (!s->st.complete && s->newest > s->st.step)
        ag_fail("%s: holds step_%08" PRId64 ", past the step %" PRId64 " resumed from %s; "
                "set checkpoint.out to another folder (or remove the later checkpoints)",
                c->out_dir, s->newest, s->st.step, s->from);
}

// Fresh weights (init, then the config's imports) unless resuming, the stage's trainable
// parameters, this rank's optimizer and the data loader (at the checkpoint's cursor).
static void setup_training(stage_run *s) {
    const tr_train_config *c = s->c;
    bool *loaded = NULL;
    if (!s->from) {
        gm_groundinggpt_init(s->m, c->seed, c->init_std);
        loaded = ag_xcalloc((size_t)s->m->params->n + 1, sizeof *loaded, "init");
        tr_import(s->m, &c->init, s->log, loaded);
    }
    tr_train_select(s->ctx, s->m, c);
    if (loaded && s->lead) warn_random_frozen(s->m, &c->init, loaded);
    free(loaded);
    pick_trainables(s->m, c, s->d, &s->tp);
    if (s->from) check_continues(s); // before the loader opens at its cursor
    if (s->tp.n_mine)
        s->opt = ag_adamw_new(s->ctx, s->tp.mine, s->tp.n_mine, s->tp.mine_decay,
                              (ag_adamw_config){c->beta1, c->beta2, c->eps, c->weight_decay});
    s->loader = open_loader(s, s->from != NULL);
}

// Weights, optimizer state and counters from s->from (check_continues passed).
static void load_resume_checkpoint(stage_run *s) {
    if (s->log && s->st.world != s->d->world)
        fprintf(s->log,
                "note: %s was written by %d rank%s, this run has %d: the data stream continues "
                "where it stopped, but the losses are not bit for bit those of an uninterrupted "
                "%d-rank run (sums in another order)\n",
                s->from, s->st.world, s->st.world > 1 ? "s" : "", s->d->world, s->st.world);
    tr_ckpt_load_model(s->from, s->m->params);
    tr_ckpt_load_optim(s->from, &s->st, s->opt, s->d);
    s->step = s->st.step;
    s->tokens_seen = s->st.tokens;
    s->bad = s->st.bad_steps;
}

// Rank 0: opens metrics.jsonl (a resume keeps the lines up to its step) and prints the
// stage's one-line plan.
static void open_metrics(stage_run *s) {
    const tr_train_config *c = s->c;
    const tr_dist *d = s->d;
    ds_make_dirs(c->out_dir);
    if (snprintf(s->metrics, sizeof s->metrics, "%s/metrics.jsonl", c->out_dir) >=
        (int)sizeof s->metrics)
        ag_fail_path_too_long(c->out_dir, "/metrics.jsonl");
    if (s->from) truncate_metrics(s->metrics, s->step);
    s->mf = fopen(s->metrics, s->from ? "ab" : "wb");
    if (!s->mf) ag_fail("%s: cannot write: %s", s->metrics, strerror(errno));
    int64_t n_train = 0;
    for (int i = 0; i < s->tp.n; i++) n_train += ag_numel(s->tp.params[i]);
    fprintf(s->log,
            "stage %d: model %s, %" PRId64 " parameters, %" PRId64 " trainable in %d tensors; "
            "%d rank%s x micro %" PRId64 " x accumulation %" PRId64 " = global batch %" PRId64
            "; %" PRId64 " samples, %" PRId64 " steps (warmup %" PRId64
            "); %s parameters%s on %s%s%s\n",
            c->stage, c->model.name, gm_params_total(s->m->params), n_train, s->tp.n, d->world,
            d->world > 1 ? "s" : "", c->micro_batch, c->accumulation, s->G, s->samples, s->total,
            s->warmup, ag_dtype_name(c->model.dtype),
            c->model.dtype == AG_BF16 ? " (f32 master weights and moments)" : "", s->device,
            s->from ? "; resumed from " : "", s->from ? s->from : "");
    fflush(s->log);
}

// Takes OUT/.lock (flock, exclusive, held until the process ends or the fd is closed) and
// writes this process's id into it; fails, naming the holder, when another process has it.
static int lock_out_dir(const char *out) {
    char *path = ag_xpath_join(out, ".lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) ag_fail("%s: cannot open: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno != EWOULDBLOCK) ag_fail("%s: cannot lock: %s", path, strerror(errno));
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? strcspn(pid, "\n") : 0] = 0;
        ag_fail("%s: another training (process %s) is writing into this folder: let it finish or "
                "stop it first, or set checkpoint.out to another folder",
                out, pid[0] ? pid : "?");
    }
    char text[32];
    int len = snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, text, (size_t)len, 0) != len)
        ag_fail("%s: cannot write: %s", path, strerror(errno));
    free(path);
    return fd;
}

// The live progress line (a terminal, one rank) is rewritten in place without a newline: what
// else is said while it stands (a skipped step, the stop, an error) starts on a line of its own.
static bool g_live_open;             // stdout ends in a live line
static ag_error_handler g_live_prev; // the error handler before start_training's
static void end_live_line(void) {
    if (!g_live_open) return;
    g_live_open = false;
    fputc('\n', stdout);
    fflush(stdout);
}
static void end_live_line_on_error(const char *msg) {
    end_live_line();
    if (g_live_prev) g_live_prev(msg);
}

// Everything the step loop needs: model, optimizer, data, metrics.jsonl, the clock.
static void start_training(stage_run *s) {
    const tr_train_config *c = s->c;
    g_stop_signal = 0;
    stop_signals(true, s->old_signals);
    setup_training(s);
    if (s->lead && s->lock < 0) { // the folder is made once the run is known to go ahead
        ds_make_dirs(c->out_dir);
        s->lock = lock_out_dir(c->out_dir);
    }
    if (s->from) load_resume_checkpoint(s);
    if (s->lead) open_metrics(s);
    // A live line on a terminal; not under mpirun, which hands every rank a pseudo-terminal
    // even when the output goes to a file.
    s->win = (window){.tty = s->lead && s->d->world == 1 && isatty(fileno(stdout)),
                      .start_step = s->step,
                      .last_loss = NAN};
    if (s->from) { // the window open at the save: the next metrics line averages all of it
        s->win.loss = s->st.win_loss;
        s->win.tokens = s->st.win_tokens;
        s->win.elapsed0 = s->st.elapsed;
        s->win.steps = s->st.win_steps;
        s->win.empty = s->st.win_empty;
    }
    s->win.t0 = s->win.t_win = now_s();
    if (s->win.tty) {
        g_live_prev = ag_get_error_handler();
        ag_set_error_handler(end_live_line_on_error);
    }
    s->loss_acc =
        c->device == AG_CPU ? NULL : ag_param(s->ctx, "trainer.loss_sum", AG_F32, AG_SHAPE(1));
    // Gradients are summed across ranks while the last micro-batch's backward pass runs
    // (train.overlap_allreduce; train/dist.h says what overlaps on which path), else after it.
    s->red = c->overlap_allreduce
                 ? tr_grad_reducer_new(s->d, s->tp.params, s->tp.n, c->bucket_elems)
                 : NULL;
}

// The dropout stream of one micro-batch: (seed, step, micro-step, rank).
static uint64_t micro_seed(uint64_t seed, int64_t step, int64_t a, int rank) {
    return ag_mix64(seed ^ ag_mix64((uint64_t)step * 0x10000u + (uint64_t)a) ^
                    ag_mix64((uint64_t)rank + 0x51ed));
}

// What the step's sums hold, over all ranks (forward_backward).
enum { SUM_LOSS, SUM_TOKENS, SUM_STOP, SUM_WEIGHT, N_SUMS };

// Forward and backward over this rank's micro-batches of the step; gradients add up. Each
// micro-batch's mean loss counts with a weight: its supervised tokens (train.loss_average
// tokens), or 1 (micro_batch: the reference's mean of micro-batch means). sums gets, over all
// ranks, the weighted loss, the supervised tokens, how many ranks were asked to stop, and the
// weights.
static void forward_backward(stage_run *s, double sums[N_SUMS]) {
    const tr_train_config *c = s->c;
    ag_ctx *ctx = s->ctx;
    for (int i = 0; i < N_SUMS; i++) sums[i] = 0;
    for (int64_t a = 0; a < c->accumulation; a++) {
        const ds_batch *b = ds_loader_next(s->loader);
        int64_t n = tr_batch_supervised(b);
        if (skip_last_micro(s->d, s->step, a, c->accumulation)) n = 0;
        if (n == 0) continue;
        gm_groundinggpt_batch gb;
        tr_batch_to_model(ctx, b, &gb);
        uint64_t seed = micro_seed(c->seed, s->step, a, s->d->rank);
        ag_tensor *loss = gm_groundinggpt_loss(ctx, s->m, &gb, true, seed);
        const double w = c->loss_per_micro_batch ? 1.0 : (double)n;
        ag_tensor *scaled = ag_scale(ctx, loss, w);
        if (s->red && a == c->accumulation - 1) { // earlier passes still add into the gradients
            tr_grad_reducer_begin(s->red);
            ag_backward_watch(ctx, scaled, s->tp.params, s->tp.n, tr_grad_reducer_ready, s->red);
        } else {
            ag_backward(ctx, scaled);
        }
        if (s->loss_acc)
            add_loss(ctx, s->loss_acc, loss, w);
        else
            sums[SUM_LOSS] += ag_item(loss, 0) * w;
        sums[SUM_TOKENS] += (double)n;
        sums[SUM_WEIGHT] += w;
        ag_step_reset(ctx);
    }
    // Before anything that blocks on the other ranks (train/dist.h says why): a rank that
    // skipped its last micro-batch issues its buckets here.
    if (s->red) tr_grad_reducer_issue_rest(s->red);
    if (s->loss_acc) { // the step's one read of the loss; the next step starts from 0
        sums[SUM_LOSS] = ag_item(s->loss_acc, 0);
        ag_backend_for(ctx->device)->memset0(s->loss_acc->data, sizeof(float));
    }
    sums[SUM_STOP] = g_stop_signal != 0;
    tr_dist_sum_f64(s->d, sums, N_SUMS);
}

// A non-finite step: reported and skipped, until train.max_bad_steps in a row stop the run.
static void skip_bad_step(stage_run *s, const step_stats *st) {
    s->bad++;
    if (s->lead) {
        bool bad_loss = !isfinite(st->loss);
        end_live_line();
        fprintf(stderr, "step %" PRId64 ": non-finite %s (%g), update skipped (%d in a row)\n",
                s->step, bad_loss ? "loss" : "gradient norm", bad_loss ? st->loss : st->gnorm,
                s->bad);
        fprintf(s->mf, "{\"step\": %" PRId64 ", \"skipped\": true, \"reason\": \"%s\"}\n", s->step,
                bad_loss ? "loss" : "gradient");
    }
    if (s->bad >= s->c->max_bad_steps)
        ag_fail("train: %d non-finite steps in a row (train.max_bad_steps); stopping at "
                "step %" PRId64 " (the last checkpoint is intact)",
                s->bad, s->step);
}

// A step whose global batch has no supervised token (every answer cut off by data.max_len, or
// samples without one): its loss is no number and its gradient zero, so no update is made
// (AdamW's momentum would still move the weights) and it stays out of the window's mean loss.
// Said on stderr for the first few, counted in the progress lines and metrics.jsonl.
static void skip_empty_step(stage_run *s) {
    enum { SAID = 5 };
    s->empty++;
    if (!s->lead) return;
    if (s->empty <= SAID) {
        end_live_line();
        fprintf(stderr,
                "step %" PRId64 ": no supervised token in the global batch (answers cut off by "
                "data.max_len?), update skipped%s\n",
                s->step,
                s->empty == SAID ? "; further ones are counted in the progress lines" : "");
    }
    fprintf(s->mf,
            "{\"step\": %" PRId64 ", \"skipped\": true, \"reason\": \"no supervised token\"}\n",
            s->step);
}

// Sums the gradients over ranks, clips them and applies AdamW at the step's learning rate
// (or skips a non-finite step); advances s->step and clears the gradients.
static step_stats optimizer_step(stage_run *s, const double sums[N_SUMS]) {
    const tr_train_config *c = s->c;
    trainables *tp = &s->tp;
    const double tokens = sums[SUM_TOKENS], weight = sums[SUM_WEIGHT];
    step_stats st = {.tokens = tokens};
    st.loss = weight > 0 ? sums[SUM_LOSS] / weight : 0;
    if (tr_test_nan_step(s->step + 1)) st.loss = NAN;
    // Summed unscaled (the scale needs every rank's weights); scaled here.
    const double inv_weight = weight > 0 ? 1.0 / weight : 0;
    if (s->red)
        tr_grad_reducer_finish(s->red, inv_weight);
    else
        tr_dist_allreduce_grads(s->d, tp->params, tp->n, inv_weight, c->bucket_elems);
    // One device-to-host copy on a GPU (the backend's sum_squares_many).
    st.gnorm = ag_clip_grad_norm(tp->params, tp->n, c->grad_clip);
    st.lr = tr_lr_cosine(s->step, s->total, s->warmup, c->lr, c->min_lr_ratio);
    st.finite = isfinite(st.loss) && isfinite(st.gnorm);
    st.empty = tokens == 0 && st.finite;
    s->step++;
    if (st.empty) {
        st.finite = false;
        skip_empty_step(s);
    } else if (st.finite) {
        s->bad = 0;
        if (s->opt) ag_adamw_step(s->opt, st.lr);
        if (c->zero1) tr_dist_broadcast_all(s->d, tp->params, tp->owner, tp->n);
        s->tokens_seen += tokens;
    } else {
        skip_bad_step(s, &st);
    }
    ag_zero_grad(s->ctx, tp->params, tp->n);
    return st;
}

// Supervised tokens per second over the window, at time t (a resumed window's steps from
// before the checkpoint do not count: their time is not in t - t_win).
static double window_rate(const window *w, double t) {
    return (t - w->t_win) > 0 ? w->rate_tokens / (t - w->t_win) : 0;
}

// The progress line every log_every steps and at the end (on a terminal, after every step,
// rewriting itself), and the window's line of metrics.jsonl.
static void report_step(stage_run *s, const step_stats *st) {
    const tr_train_config *c = s->c;
    window *w = &s->win;
    if (st->finite) {
        w->loss += st->loss;
        w->steps++;
        w->tokens += st->tokens;
        w->rate_tokens += st->tokens;
    }
    if (st->empty) w->empty++;
    double t = now_s();
    bool log_now = s->step % c->log_every == 0 || s->step == s->total;
    if (s->lead && (log_now || w->tty)) {
        double eta = (t - w->t0) / (double)(s->step - w->start_step) * (double)(s->total - s->step);
        double shown = w->steps ? w->loss / (double)w->steps : st->loss;
        char empty[96] = "";
        if (w->empty)
            snprintf(empty, sizeof empty, " | %" PRId64 " step%s without supervised tokens",
                     w->empty, w->empty > 1 ? "s" : "");
        fprintf(s->log,
                "%sstage %d | step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.2e | grad norm "
                "%.3f | %.0f tok/s | eta %dm%02ds%s%s",
                w->tty ? "\r" : "", c->stage, s->step, s->total, shown, st->lr, st->gnorm,
                window_rate(w, t), (int)eta / 60, (int)eta % 60, empty,
                log_now || !w->tty ? "\n" : "");
        fflush(s->log);
        g_live_open = w->tty && !log_now;
    }
    if (log_now && w->steps) {
        w->last_loss = w->loss / (double)w->steps;
        if (s->lead) {
            char empty[64] = ""; // only when there were some: the usual line stays as it was
            if (w->empty) snprintf(empty, sizeof empty, ", \"empty_steps\": %" PRId64, w->empty);
            fprintf(s->mf,
                    "{\"step\": %" PRId64 ", \"stage\": %d, \"loss\": %.17g, \"lr\": %.6e, "
                    "\"grad_norm\": %.17g, \"tokens\": %.0f%s, \"tokens_per_s\": %.1f, "
                    "\"elapsed_s\": %.3f}\n",
                    s->step, c->stage, w->last_loss, st->lr, st->gnorm, s->tokens_seen, empty,
                    window_rate(w, t), w->elapsed0 + (t - w->t0));
            // Live for tail -f and plots mid-run; a resume drops lines past its checkpoint.
            tr_flush_checked(s->mf, s->metrics);
        }
        w->loss = w->tokens = w->rate_tokens = 0;
        w->steps = w->empty = 0;
        w->t_win = t;
    } else if (log_now) {
        w->empty = 0; // said in the progress line; the next window counts its own
    }
}

// A checkpoint every checkpoint.every steps and at the end of the stage.
static bool save_due(const stage_run *s) {
    const tr_train_config *c = s->c;
    return (c->save_every && s->step % c->save_every == 0) || s->step == s->total;
}

static void save_checkpoint(stage_run *s) {
    const tr_train_config *c = s->c;
    if (s->lead) tr_flush_checked(s->mf, s->metrics);
    tr_ckpt_state out = {.step = s->step,
                         .total_steps = s->total,
                         .stage = c->stage,
                         .complete = s->step == s->total,
                         .cursor = ds_loader_cursor(s->loader),
                         .seed = c->seed,
                         .world = s->d->world,
                         .zero1 = c->zero1,
                         .global_batch = s->G,
                         .bad_steps = s->bad,
                         .tokens = s->tokens_seen,
                         .loss = s->win.last_loss,
                         .win_loss = s->win.loss,
                         .win_tokens = s->win.tokens,
                         .win_steps = s->win.steps,
                         .win_empty = s->win.empty,
                         .elapsed = s->win.elapsed0 + (now_s() - s->win.t0)};
    memcpy(out.config_digest, s->cfg_digest, 65);
    memcpy(out.model_digest, s->model_digest, 65);
    memcpy(out.run_id, s->run_id, sizeof out.run_id);
    memcpy(out.init_from, s->init_from, sizeof out.init_from);
    tr_ckpt_save(c->out_dir, &out, s->m->params, s->opt, s->resolved, s->d, c->keep);
}

// One optimizer step: its micro-batches, the update, telemetry and the checkpoint cadence (and
// a checkpoint now when a rank was asked to stop).
static void train_step(stage_run *s) {
    double sums[N_SUMS];
    forward_backward(s, sums);
    step_stats st = optimizer_step(s, sums);
    maybe_die_at(s->step);
    maybe_signal_at(s->d, s->step);
    report_step(s, &st);
    if (sums[SUM_STOP] > 0) s->stop = g_stop_signal ? g_stop_signal : SIGTERM;
    if (save_due(s) || s->stop) save_checkpoint(s);
}

// Closes what start_training opened and fills in the result.
static void finish_training(stage_run *s, tr_stage_result *res) {
    const tr_train_config *c = s->c;
    stop_signals(false, s->old_signals); // the eval and later stages: signals as usual
    end_live_line();
    if (s->win.tty) ag_set_error_handler(g_live_prev);
    if (s->lead) tr_close_checked(s->mf, s->metrics);
    ds_loader_close(s->loader);
    tr_grad_reducer_free(s->red);
    if (s->opt) ag_adamw_free(s->opt);
    free_trainables(&s->tp);
    if (s->log && s->empty)
        fprintf(s->log,
                "%" PRId64 " step%s of this run had no supervised token and made no update (see "
                "data.max_len)\n",
                s->empty, s->empty > 1 ? "s" : "");
    res->steps = s->total;
    res->final_loss = isfinite(s->win.last_loss) ? s->win.last_loss : s->st.loss;
    char step_name[40];
    snprintf(step_name, sizeof step_name, "/step_%08" PRId64, s->total);
    if (snprintf(res->final_ckpt, sizeof res->final_ckpt, "%s%s", c->out_dir, step_name) >=
        (int)sizeof res->final_ckpt)
        ag_fail_path_too_long(c->out_dir, step_name);
}

// The after-stage grounding eval (eval.data): its scores go into the result and the log.
static void evaluate(stage_run *s, tr_stage_result *res) {
    const tr_train_config *c = s->c;
    tr_eval_result er;
    tr_eval_grounding(s->ctx, s->m, c->eval_data, c->eval_tokenizer, c->eval_limit, c->eval_max_new,
                      s->d, &er, s->log, false);
    res->rec_acc = tr_eval_rate(&er, TR_EVAL_REC);
    res->tvg_r1 = tr_eval_rate(&er, TR_EVAL_TVG);
    res->sound_r1 = tr_eval_rate(&er, TR_EVAL_SOUND);
    res->rec_constant = er.constant[TR_EVAL_REC];
    res->tvg_constant = er.constant[TR_EVAL_TVG];
    res->sound_constant = er.constant[TR_EVAL_SOUND];
    res->rec_n = er.n[TR_EVAL_REC];
    res->tvg_n = er.n[TR_EVAL_TVG];
    res->sound_n = er.n[TR_EVAL_SOUND];
    print_eval(s, res, NULL);
    if (s->lead) {
        char key[65];
        eval_key(c, key);
        write_eval_cache(res->final_ckpt, key, res);
    }
}

// The init weights against the model's shapes (a meta model: nothing allocated), config.json
// included: a wrong file fails in seconds rather than after allocating the model.
static void check_init_weights(const tr_train_config *c) {
    ag_ctx *meta = ag_ctx_new_meta();
    gm_groundinggpt *m = gm_groundinggpt_new(meta, &c->model);
    tr_import_check(m, &c->init);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
}

void tr_train_stage(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                    const char *resume, tr_stage_result *res) {
    tr_stage_result_clear(res);
    stage_run s = {.c = c, .resolved = resolved, .d = d, .lead = d->rank == 0};
    s.log = s.lead ? stdout : NULL;
    // One training per folder: before its checkpoints are read (or, for a new folder, when it
    // is made), so that a second run neither resumes from a checkpoint still being written nor
    // prunes the first run's.
    struct stat sb;
    s.lock = s.lead && !stat(c->out_dir, &sb) ? lock_out_dir(c->out_dir) : -1;
    s.from = tr_checkpoint_to_resume(c, resume);
    // The after-stage eval's inputs, now rather than after the whole run.
    if (c->eval_data) tr_eval_check_inputs(c->eval_data, c->eval_tokenizer);
    read_resume_state(&s, resume && !strcmp(resume, "auto"));
    if (s.from) { // the run goes on under its id (one predating ids gets one now)
        memcpy(s.run_id, s.st.run_id, sizeof s.run_id);
        memcpy(s.init_from, s.st.init_from, sizeof s.init_from);
    }
    if (!s.run_id[0]) tr_ckpt_new_run_id(s.run_id);
    if (!s.from && c->init.path[TR_INIT_CHECKPOINT])
        tr_ckpt_identity(c->init.path[TR_INIT_CHECKPOINT], s.init_from);
    plan_length(&s);
    check_ranks_start(&s);
    if (!(s.from && s.st.complete)) { // what the dry run checks, before the model is made
        tr_config_check_out_dir(c);
        tr_batch_check_datasets(c, s.lead ? stderr : NULL);
    }
    tr_init_check_checkpoint(&c->init, &c->model);
    if (!s.from) check_init_weights(c);
    build_model(&s);
    if (s.from && s.st.complete) {
        skip_complete_stage(&s, res);
    } else {
        start_training(&s);
        while (s.step < s.total && !s.stop) train_step(&s);
        finish_training(&s, res);
        if (s.stop) {
            if (s.lead)
                fprintf(stderr,
                        "groundc: stopped by %s after step %" PRId64 " of %" PRId64
                        ": checkpoint %s/step_%08" PRId64 " written; continue with --resume auto\n",
                        ag_signal_name(s.stop), s.step, s.total, c->out_dir, s.step);
            free(s.from);
            gm_groundinggpt_free(s.m);
            ag_ctx_free(s.ctx);
            tr_dist_exit(d, 128 + s.stop);
        }
    }
    if (c->eval_data && !res->eval_cached) evaluate(&s, res);
    if (s.lock >= 0) close(s.lock); // (releases the flock)
    free(s.from);
    gm_groundinggpt_free(s.m);
    ag_ctx_free(s.ctx);
}

void tr_train_check_selection(const tr_train_config *c) {
    ag_ctx *meta = ag_ctx_new_meta(); // shapes and names only: the 7B allocates nothing
    gm_groundinggpt *m = gm_groundinggpt_new(meta, &c->model);
    tr_train_select(meta, m, c);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
}

void tr_train_check(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                    const char *resume) {
    // The model on shapes only (the 7B allocates nothing): its digest as build_model takes it,
    // before the selection adds any adapter, then the selection
    ag_ctx *meta = ag_ctx_new_meta();
    gm_groundinggpt *m = gm_groundinggpt_new(meta, &c->model);
    stage_run s = {.c = c, .resolved = resolved, .d = d, .lead = d->rank == 0};
    tr_ckpt_model_digest(m->params, s.model_digest);
    s.from = tr_checkpoint_to_resume(c, resume);
    if (!s.from) tr_import_check(m, &c->init); // before the selection adds adapters
    tr_train_select(meta, m, c);
    s.m = m;
    read_resume_state(&s, resume && !strcmp(resume, "auto"));
    plan_length(&s);
    check_ranks_start(&s);
    tr_config_check_out_dir(c);
    tr_batch_check_datasets(c, s.lead ? stderr : NULL);
    if (s.from) check_continues(&s);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
    free(s.from);
}
