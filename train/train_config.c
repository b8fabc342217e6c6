// train_config.c: see train_config.h.
// realpath(3) is XSI.
#define _XOPEN_SOURCE 700
#include "train/train_config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "data/files.h"
#include "train/dist.h"
#include "train/model_config.h"

bool tr_config_is_stage(tr_yaml *root) {
    return root->kind == TR_YAML_MAP && tr_yaml_get(root, "data") && tr_yaml_get(root, "model");
}

// The absolute form of a path-valued scalar, written back into the tree so that the resolved
// config stored with checkpoints means the same from any folder. A path that does not exist
// yet stays as joined.
char *tr_config_abs_path(tr_yaml *node) {
    char *joined = tr_config_path(node, node->value);
    char *abs = realpath(joined, NULL);
    if (abs) {
        free(joined);
        joined = abs;
    }
    free(node->value);
    node->value = ag_xstrdup(joined);
    return joined;
}

ag_device tr_config_device(tr_yaml *root) {
    static const char *const names[] = {"auto", "cpu", "cuda", NULL};
    const char *v = tr_yaml_str(root, "device", "auto", names);
    if (!strcmp(v, "cpu")) return AG_CPU;
    bool gpu = ag_cuda_available();
    if (!strcmp(v, "auto")) return gpu ? AG_CUDA : AG_CPU;
    if (!gpu)
        tr_yaml_fail(tr_yaml_at(root, "device"), "'cuda' asked for, but %s; use auto or cpu",
#ifdef GROUNDC_HAVE_CUDA
                     "no CUDA device is visible"
#else
                     "this groundc was built without CUDA (configure with -DGROUNDC_CUDA=ON)"
#endif
        );
    return AG_CUDA;
}

char *tr_config_where(const tr_yaml *node) {
    if (!node || node->defaulted) return NULL; // not written anywhere
    size_t n = strlen(node->file) + 48;
    char *at = ag_xmalloc(n, "config");
    snprintf(at, n, "%s:%d:%d", node->file, node->line, node->col);
    return at;
}

void tr_config_check_out_dir(const tr_train_config *c) {
    // the folder, else the nearest one above it that exists: where the run makes it
    char *dir = ag_xstrdup(c->out_dir);
    struct stat sb;
    while (stat(dir, &sb) && errno == ENOENT) {
        char *slash = strrchr(dir, '/');
        if (!slash) {
            free(dir);
            dir = ag_xstrdup(".");
        } else if (slash == dir) {
            slash[1] = 0;
        } else {
            *slash = 0;
        }
    }
    const char *why = NULL;
    if (stat(dir, &sb))
        why = strerror(errno);
    else if (!S_ISDIR(sb.st_mode))
        why = "not a folder";
    else if (access(dir, W_OK | X_OK))
        why = strerror(errno);
    if (why) {
        char msg[PATH_MAX + 64];
        snprintf(msg, sizeof msg, "%s", dir);
        free(dir);
        if (c->out_dir_at)
            ag_fail("%s: checkpoint.out: %s: cannot write there (%s: %s)", c->out_dir_at,
                    c->out_dir, msg, why);
        ag_fail("checkpoint.out: %s: cannot write there (%s: %s)", c->out_dir, msg, why);
    }
    free(dir);
    // A dataset folder (its manifest.json) would get checkpoints among its shards.
    if (ds_dir_has(c->out_dir, "manifest.json")) {
        if (c->out_dir_at)
            ag_fail("%s: checkpoint.out: %s: a dataset folder (it holds manifest.json); "
                    "checkpoints go to a folder of their own",
                    c->out_dir_at, c->out_dir);
        ag_fail("checkpoint.out: %s: a dataset folder (it holds manifest.json); checkpoints go "
                "to a folder of their own",
                c->out_dir);
    }
}

static int read_patterns(tr_yaml *map, const char *key, char **out, char **at) {
    tr_yaml *s = tr_yaml_get(map, key);
    if (!s) return 0;
    if (s->kind != TR_YAML_SEQ) tr_yaml_fail(s, "expected a list of name patterns");
    if (s->n > TR_MAX_PATTERNS) tr_yaml_fail(s, "at most %d patterns", TR_MAX_PATTERNS);
    for (int i = 0; i < s->n; i++) {
        if (s->items[i]->kind != TR_YAML_SCALAR || !*s->items[i]->value)
            tr_yaml_fail(s->items[i], "expected a name pattern");
        out[i] = ag_xstrdup(s->items[i]->value);
        at[i] = tr_config_where(s->items[i]);
    }
    return s->n;
}

static void read_datasets(tr_yaml *data, tr_train_config *c) {
    tr_yaml *list = tr_yaml_get(data, "datasets");
    if (!list) tr_yaml_fail(data, "missing 'datasets' (a list of {path, weight})");
    if (list->kind != TR_YAML_SEQ || list->n < 1)
        tr_yaml_fail(list, "expected a non-empty list of {path, weight}%s",
                     list->cli ? " (on the command line: --set 'data.datasets=[DIR, DIR2]')" : "");
    if (list->n > DS_LOADER_MAX_DATASETS)
        tr_yaml_fail(list, "at most %d datasets", DS_LOADER_MAX_DATASETS);
    c->n_datasets = list->n;
    c->datasets = ag_xcalloc((size_t)list->n, sizeof *c->datasets, "datasets");
    c->datasets_at = ag_xcalloc((size_t)list->n, sizeof *c->datasets_at, "datasets");
    for (int i = 0; i < list->n; i++) {
        tr_yaml *d = list->items[i];
        c->datasets_at[i] = tr_config_where(d);
        if (d->kind == TR_YAML_SCALAR) { // a bare path: weight 1
            c->datasets[i].dir = tr_config_abs_path(d);
            c->datasets[i].weight = 1;
            continue;
        }
        if (d->kind != TR_YAML_MAP) tr_yaml_fail(d, "expected a path or {path, weight}");
        if (!tr_yaml_str(d, "path", NULL, NULL)) tr_yaml_fail(d, "missing 'path'");
        c->datasets[i].dir = tr_config_abs_path(tr_yaml_get(d, "path"));
        c->datasets[i].weight = tr_yaml_num(d, "weight", 1, 1e-9, 1e9);
    }
}

// A config pattern that matches no parameter of reg fails where it was written (the model's
// own check, gm_params_apply, cannot say where).
static void check_patterns(const gm_params *reg, char *const *pats, char *const *at, int n,
                           const char *kind) {
    for (int i = 0; i < n; i++) {
        bool hit = false;
        for (int j = 0; j < reg->n && !hit; j++)
            hit = gm_glob_match(pats[i], reg->tensors[j]->name);
        if (!hit)
            ag_fail("%s: %s: pattern '%s' matches no parameter of the model (groundc inspect "
                    "--names CONFIG.yaml lists them)",
                    at[i] ? at[i] : "config", kind, pats[i]);
    }
}

bool tr_param_decays(const char *name, int ndim, bool decay_all) {
    if (decay_all) return true;
    size_t n = strlen(name);
    if (ndim < 2 || n < 6 || strcmp(name + n - 6, "weight")) return false;
    // lookup tables: the LLM's tokens, the ViTs' positions, the adapters' frame / clip positions
    return !strstr(name, "embed_tokens") && !strstr(name, "position_embedding");
}

void tr_train_select(ag_ctx *ctx, gm_groundinggpt *m, const tr_train_config *c) {
    check_patterns(m->params, c->trainable, c->trainable_at, c->n_trainable, "trainable");
    check_patterns(m->params, c->frozen, c->frozen_at, c->n_frozen, "frozen");
    const char *pats[TR_MAX_PATTERNS + 32];
    int n = c->stage ? gm_groundinggpt_stage_patterns(&m->cfg, c->stage, pats, 32) : 0;
    for (int i = 0; i < c->n_trainable; i++) pats[n++] = c->trainable[i];
    gm_param_selection sel = {.trainable = pats,
                              .n_trainable = n,
                              .frozen = (const char *const *)c->frozen,
                              .n_frozen = c->n_frozen};
    if (gm_params_apply(ctx, m->params, &sel) == 0)
        ag_fail("train: the stage selects no trainable parameter");
    // LoRA (config lora:): the base decoder freezes, its adapters train; the rest as selected.
    if (m->llm->n_lora) gm_llama_lora_select(ctx, m->llm);
}

// train.steps or train.epochs (default epochs 1), never both: which one would count is not
// obvious. One given with --set over the other in the file replaces it (the command line
// overrides the file), and the file's key leaves the tree, so the resolved config has one.
static void read_length(tr_yaml *t, tr_train_config *c) {
    tr_yaml *s = tr_yaml_get(t, "steps"), *e = tr_yaml_get(t, "epochs");
    if (s && e && s->cli != e->cli) {
        bool keep_steps = s->cli;
        tr_yaml_remove(t, keep_steps ? "epochs" : "steps"); // frees that node
        if (keep_steps)
            e = NULL;
        else
            s = NULL;
    }
    if (s && e)
        tr_yaml_fail(e, "give train.steps or train.epochs, not both (train.steps is at %s:%d:%d)",
                     s->file, s->line, s->col);
    c->steps = tr_yaml_int(t, "steps", 0, 1, (int64_t)1 << 40);
    // (with steps given, an epochs default written into the tree would read back as both)
    c->epochs = c->steps ? 0 : tr_yaml_num(t, "epochs", 1, 0, 1e6);
    if (e && !(c->epochs > 0)) tr_yaml_fail(e, "epochs must be > 0");
}

void tr_train_config_read(tr_yaml *root, tr_train_config *c) {
    memset(c, 0, sizeof *c);
    const int64_t big = (int64_t)1 << 40;
    c->device = tr_config_device(root);
    tr_model_config_from_train(root, &c->model);
    tr_init_config_read(root, &c->init);

    c->stage = (int)tr_yaml_int(root, "stage", 0, 0, 3);
    c->n_trainable = read_patterns(root, "trainable", c->trainable, c->trainable_at);
    c->n_frozen = read_patterns(root, "frozen", c->frozen, c->frozen_at);
    if (!c->stage && !c->n_trainable)
        tr_yaml_fail(root, "say what trains: 'stage: 1|2|3' and/or a 'trainable:' pattern list");

    tr_yaml *data = tr_yaml_map(root, "data");
    read_datasets(data, c);
    c->micro_batch = tr_yaml_int(data, "micro_batch", 1, 1, 1 << 20);
    c->accumulation = tr_yaml_int(data, "accumulation", 0, 1, 1 << 20);
    c->global_batch = tr_yaml_int(data, "global_batch", 0, 1, (int64_t)1 << 30);
    if (c->global_batch) { // where it was set, for tr_train_config_fit_world's message
        c->global_batch_at = tr_config_where(tr_yaml_get(data, "global_batch"));
    }
    if (c->accumulation && c->global_batch)
        tr_yaml_fail(data, "give 'accumulation' or 'global_batch', not both");
    if (!c->accumulation) c->accumulation = 1;
    c->max_len = tr_yaml_int(data, "max_len", c->model.llm.max_seq, 1, c->model.llm.max_seq);
    c->max_len_at = tr_config_where(tr_yaml_get(data, "max_len"));
    c->data_seed = (uint64_t)tr_yaml_int(data, "seed", 1, 0, INT64_MAX);
    c->loader_threads = (int)tr_yaml_int(data, "threads", 1, 0, 64);
    c->prefetch = (int)tr_yaml_int(data, "prefetch", 4, 1, 64);
    c->checksums = tr_yaml_bool(data, "checksums", false);

    // Every train.* key has a default: no section is the same as an empty one.
    tr_yaml *t = tr_yaml_section(root, "train");
    read_length(t, c);
    c->lr = tr_yaml_num(t, "lr", 2e-5, 0, 10);
    c->warmup_ratio = tr_yaml_num(t, "warmup_ratio", 0.03, 0, 1);
    c->min_lr_ratio = tr_yaml_num(t, "min_lr_ratio", 0, 0, 1);
    c->weight_decay = tr_yaml_num(t, "weight_decay", 0, 0, 10);
    c->decay_all = tr_yaml_bool(t, "decay_norms_biases_embeddings", false);
    static const char *const averages[] = {"tokens", "micro_batch", NULL};
    c->loss_per_micro_batch =
        !strcmp(tr_yaml_str(t, "loss_average", "tokens", averages), "micro_batch");
    c->grad_clip = tr_yaml_num(t, "grad_clip", 1.0, 0, 1e9);
    c->beta1 = tr_yaml_num(t, "beta1", 0.9, 0, 0.999999);
    c->beta2 = tr_yaml_num(t, "beta2", 0.999, 0, 0.999999999);
    c->eps = tr_yaml_num(t, "eps", 1e-8, 0, 1);
    c->seed = (uint64_t)tr_yaml_int(t, "seed", 1, 0, INT64_MAX);
    c->init_std = tr_yaml_num(t, "init_std", 0.02, 0, 10);
    c->zero1 = tr_yaml_bool(t, "zero1", false);
    c->bucket_elems = tr_yaml_int(t, "bucket_elems", 1 << 22, 1, big);
    c->overlap_allreduce = tr_yaml_bool(t, "overlap_allreduce", true);
    c->collective_timeout_s = tr_yaml_num(t, "collective_timeout_s", TR_DIST_TIMEOUT_S, 0, 1e7);
    c->max_bad_steps = (int)tr_yaml_int(t, "max_bad_steps", 5, 1, 1 << 20);
    c->log_every = tr_yaml_int(t, "log_every", 10, 1, big);

    tr_yaml *ck = tr_yaml_section(root, "checkpoint");
    c->out_dir = ag_xstrdup(tr_yaml_str(ck, "out", "checkpoints/run", NULL));
    c->out_dir_at = tr_config_where(tr_yaml_get(ck, "out"));
    if (!c->out_dir[0]) tr_yaml_fail(tr_yaml_get(ck, "out"), "an empty path");
    c->save_every = tr_yaml_int(ck, "every", 0, 0, big);
    c->keep = (int)tr_yaml_int(ck, "keep", 3, 0, 1 << 20);

    tr_yaml *ev = tr_yaml_map(root, "eval");
    if (ev) {
        bool p = tr_yaml_str(ev, "data", NULL, NULL) != NULL;
        bool tk = tr_yaml_str(ev, "tokenizer", NULL, NULL) != NULL;
        if (p) c->eval_data = tr_config_abs_path(tr_yaml_get(ev, "data"));
        if (tk) c->eval_tokenizer = tr_config_abs_path(tr_yaml_get(ev, "tokenizer"));
        if (p != tk) tr_yaml_fail(ev, "give both 'data' and 'tokenizer' (or neither)");
        c->eval_limit = tr_yaml_int(ev, "limit", 200, 1, big);
        c->eval_max_new = tr_yaml_int(ev, "max_new_tokens", 48, 1, 4096);
    }
    tr_yaml_check_used(root);
}

void tr_train_config_free(tr_train_config *c) {
    tr_init_config_free(&c->init);
    for (int i = 0; i < c->n_trainable; i++) free(c->trainable[i]), free(c->trainable_at[i]);
    for (int i = 0; i < c->n_frozen; i++) free(c->frozen[i]), free(c->frozen_at[i]);
    for (int i = 0; i < c->n_datasets; i++) {
        free((char *)c->datasets[i].dir);
        if (c->datasets_at) free(c->datasets_at[i]);
    }
    free(c->datasets);
    free(c->datasets_at);
    free(c->max_len_at);
    free(c->out_dir_at);
    free(c->out_dir);
    free(c->eval_data);
    free(c->eval_tokenizer);
    free(c->global_batch_at);
    memset(c, 0, sizeof *c);
}

void tr_train_config_fit_world(tr_train_config *c, int world) {
    if (!c->global_batch) return;
    int64_t per_step = c->micro_batch * world;
    if (c->global_batch % per_step)
        ag_fail("%s: data.global_batch: %lld is not a multiple of micro_batch %lld x %d ranks",
                c->global_batch_at ? c->global_batch_at : "config", (long long)c->global_batch,
                (long long)c->micro_batch, world);
    c->accumulation = c->global_batch / per_step;
}
