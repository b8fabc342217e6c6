// inspect.c: see inspect.h.
#include "inspect.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/torch_file.h"
#include "data/files.h"
#include "data/manifest.h"
#include "train/checkpoint.h"
#include "train/import.h"
#include "train/inspect_files.h"
#include "train/model_config.h"
#include "train/train_config.h"
#include "train/yaml_tree.h"

static int64_t pick_seq(const gm_groundinggpt_config *cfg, int64_t seq) {
    if (seq <= 0) seq = cfg->llm.max_seq < 2048 ? cfg->llm.max_seq : 2048;
    if (seq > cfg->llm.max_seq)
        ag_fail("inspect: --seq %lld exceeds max_seq %lld", (long long)seq,
                (long long)cfg->llm.max_seq);
    return seq;
}

// Activations: the decoder on B x T tokens (logits over V0 + 9), plus the (V, C)
// concatenation of lm_head and its gradient that the head makes.
static int64_t activation_bytes(const gm_groundinggpt_config *cfg, int64_t batch, int64_t seq) {
    gm_llama_config full = cfg->llm;
    full.vocab = gm_groundinggpt_vocab(cfg);
    const int64_t e = (int64_t)ag_dtype_size(cfg->dtype);
    return gm_llama_activation_bytes(&full, cfg->dtype, batch, seq) + 2 * full.vocab * full.dim * e;
}

static const char *const memory_head = "| %-11s | %14s | %11s | %11s | %11s | %11s | %11s |\n";

// shards: the ranks the AdamW state is split over (ZeRO-1), 1 when each holds all of it.
static void memory_row(FILE *out, const char *label, int64_t total, int64_t trainable, ag_dtype dt,
                       int64_t act, int shards) {
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    gm_memory mem = gm_memory_estimate(total, trainable, dt, act);
    mem.optimizer = (mem.optimizer + shards - 1) / shards;
    mem.total = mem.weights + mem.grads + mem.optimizer + mem.activations;
    fprintf(out, "| %-11s | %14lld | %11s | %11s | %11s | %11s | %11s |\n", label,
            (long long)trainable, tr_human_bytes(b1, sizeof b1, mem.weights),
            tr_human_bytes(b2, sizeof b2, mem.grads), tr_human_bytes(b3, sizeof b3, mem.optimizer),
            tr_human_bytes(b4, sizeof b4, mem.activations),
            tr_human_bytes(b5, sizeof b5, mem.total));
}

void tr_inspect_model(const gm_groundinggpt_config *cfg, const char *source, int64_t batch,
                      int64_t seq, FILE *out) {
    gm_groundinggpt_check_config(cfg);
    seq = pick_seq(cfg, seq);
    char h[32], b1[32], b2[32], b3[32];
    fprintf(out, "model %s (%s): %s parameters, vocabulary %lld + %d added, branches:%s%s%s\n",
            cfg->name, source, ag_dtype_name(cfg->dtype), (long long)cfg->llm.vocab, GM_N_ADDED,
            cfg->has[GM_MOD_IMAGE] ? " image" : "", cfg->has[GM_MOD_VIDEO] ? " video" : "",
            cfg->has[GM_MOD_AUDIO] ? " audio" : "");
    fprintf(out, "tokens per item: image %lld, video %lld, audio %lld\n\n",
            (long long)(cfg->has[GM_MOD_IMAGE] ? cfg->image_tokens : 0),
            (long long)(cfg->has[GM_MOD_VIDEO] ? cfg->video_tokens : 0),
            (long long)(cfg->has[GM_MOD_AUDIO] ? cfg->audio_tokens : 0));

    gm_census_row rows[64];
    int n = gm_groundinggpt_census(cfg, rows, 64);
    if (n > 64) ag_fail("inspect: %d modules exceed the table", n);
    int64_t total = 0, stage[3] = {0}, part[GM_NPART] = {0};
    fprintf(out, "parameters per module\n");
    fprintf(out, "| %-38s | %-13s | %14s | %14s | %15s |\n", "module", "part", "parameters",
            "stage 1 trains", "stage 2/3 train");
    tr_md_rule(out, (const int[]){38, 13, 14, 14, 15}, 5, 2);
    for (int i = 0; i < n; i++) {
        const gm_census_row *r = &rows[i];
        fprintf(out, "| %-38s | %-13s | %14lld | %14lld | %15lld |\n", r->group,
                gm_part_name(r->part), (long long)r->total, (long long)r->stage[0],
                (long long)r->stage[1]);
        total += r->total;
        part[r->part] += r->total;
        for (int s = 0; s < 3; s++) stage[s] += r->stage[s];
    }
    fprintf(out, "| %-38s | %-13s | %14lld | %14lld | %15lld |\n\n", "total", "", (long long)total,
            (long long)stage[0], (long long)stage[1]);

    fprintf(out, "parameters per part\n| %-13s | %14s | %9s |\n", "part", "parameters", "");
    tr_md_rule(out, (const int[]){13, 14, 9}, 3, 1);
    for (int p = 0; p < GM_NPART; p++)
        if (part[p])
            fprintf(out, "| %-13s | %14lld | %9s |\n", gm_part_name((gm_part)p), (long long)part[p],
                    tr_human_count(h, sizeof h, part[p]));
    fprintf(out, "| %-13s | %14lld | %9s |\n\n", "total", (long long)total,
            tr_human_count(h, sizeof h, total));

    const int64_t act = activation_bytes(cfg, batch, seq);
    fprintf(out,
            "memory per stage: micro-batch %lld x %lld tokens; %s weights and gradients, AdamW "
            "f32 moments%s\n",
            (long long)batch, (long long)seq, ag_dtype_name(cfg->dtype),
            cfg->dtype == AG_BF16 ? " + f32 master weights" : "");
    fprintf(out, memory_head, "stage", "trainable", "weights", "gradients", "optimizer",
            "activations", "total");
    tr_md_rule(out, (const int[]){11, 14, 11, 11, 11, 11, 11}, 7, 1);
    for (int s = 0; s < 3; s++) {
        char label[16];
        snprintf(label, sizeof label, "%d", s + 1);
        memory_row(out, label, total, stage[s], cfg->dtype, act, 1);
    }
    const int64_t chunk = GM_ENC_BATCH_DEFAULT;
    fprintf(
        out,
        "\nfrozen encoders (own context, no tape), step memory per chunk of %lld rows (enc_batch): "
        "image %s, video frames %s, audio clips %s\n",
        (long long)chunk,
        tr_human_bytes(b1, sizeof b1, gm_groundinggpt_encoder_bytes(cfg, GM_MOD_IMAGE, chunk)),
        tr_human_bytes(b2, sizeof b2, gm_groundinggpt_encoder_bytes(cfg, GM_MOD_VIDEO, chunk)),
        tr_human_bytes(b3, sizeof b3, gm_groundinggpt_encoder_bytes(cfg, GM_MOD_AUDIO, chunk)));
}

// The part a parameter belongs to: that of the census row whose group prefixes its name.
static gm_part part_of(const gm_census_row *rows, int n, const char *name) {
    for (int i = 0; i < n; i++) {
        size_t k = strlen(rows[i].group);
        if (!strncmp(name, rows[i].group, k) && (name[k] == '.' || !name[k])) return rows[i].part;
    }
    ag_fail("inspect: parameter '%s' is in no module of the census", name);
}

// What this stage config trains, exactly as groundc train selects it (stage defaults,
// trainable/frozen patterns, LoRA), counted on a model built without storage.
// --names: every parameter, one per line, "name (shape)" and " trains" when selection says so
// (a stage config's selection applied to m), for writing trainable / frozen patterns.
static void print_names(const gm_groundinggpt *m, bool selection, FILE *out) {
    fprintf(out, "\nparameters (%d)%s\n", m->params->n,
            selection ? ", those this config trains marked 'trains'" : "");
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *p = m->params->tensors[i];
        fprintf(out, "%s (", p->name);
        for (int d = 0; d < p->ndim; d++)
            fprintf(out, "%s%lld", d ? ", " : "", (long long)p->shape[d]);
        fprintf(out, ")%s\n", selection && p->requires_grad ? " trains" : "");
    }
}

static void inspect_stage(const tr_train_config *c, int64_t batch, int64_t seq, int ranks,
                          bool names, FILE *out) {
    const gm_groundinggpt_config *cfg = &c->model;
    ag_ctx *meta = ag_ctx_new_meta();
    gm_groundinggpt *m = gm_groundinggpt_new(meta, cfg);
    tr_train_select(meta, m, c); // the trainer's own selection, on shapes only
    gm_census_row rows[64];
    int nr = gm_groundinggpt_census(cfg, rows, 64);
    int64_t total[GM_NPART] = {0}, train[GM_NPART] = {0}, all = 0, trainable = 0;
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *p = m->params->tensors[i];
        gm_part part = part_of(rows, nr, p->name);
        total[part] += ag_numel(p);
        all += ag_numel(p);
        if (p->requires_grad) {
            train[part] += ag_numel(p);
            trainable += ag_numel(p);
        }
    }
    fprintf(out, "\nthis config trains: ");
    if (c->stage) fprintf(out, "stage %d's defaults", c->stage);
    for (int i = 0; i < c->n_trainable; i++)
        fprintf(out, "%s%s", i || c->stage ? ", " : "", c->trainable[i]);
    for (int i = 0; i < c->n_frozen; i++)
        fprintf(out, "%s%s", i ? ", " : "; frozen ", c->frozen[i]);
    const gm_lora_config *lc = &cfg->llm.lora;
    if (lc->rank > 0) {
        fprintf(out, "; LoRA rank %lld, alpha %g on", (long long)lc->rank, lc->alpha);
        for (int t = 0; t < GM_LORA_NTARGETS; t++)
            if (lc->targets >> t & 1) fprintf(out, " %s", gm_lora_target_name((gm_lora_target)t));
        fprintf(out, " (the base decoder frozen)");
    }
    fprintf(out, "\n| %-13s | %14s | %14s |\n", "part", "parameters", "trainable");
    tr_md_rule(out, (const int[]){13, 14, 14}, 3, 1);
    for (int p = 0; p < GM_NPART; p++)
        if (total[p])
            fprintf(out, "| %-13s | %14lld | %14lld |\n", gm_part_name((gm_part)p),
                    (long long)total[p], (long long)train[p]);
    fprintf(out, "| %-13s | %14lld | %14lld |\n", "total", (long long)all, (long long)trainable);
    const int shards = c->zero1 && ranks > 1 ? ranks : 1;
    fprintf(out, "memory of this config (micro-batch %lld x %lld tokens", (long long)batch,
            (long long)seq);
    if (c->zero1)
        fprintf(out,
                shards > 1 ? "; AdamW state over %d ranks, train.zero1)\n"
                           : "; train.zero1: AdamW state over the ranks, --ranks N)\n",
                shards);
    else
        fprintf(out, ")\n");
    fprintf(out, memory_head, "config", "trainable", "weights", "gradients", "optimizer",
            "activations", "total");
    tr_md_rule(out, (const int[]){11, 14, 11, 11, 11, 11, 11}, 7, 1);
    memory_row(out, "this config", all, trainable, cfg->dtype, activation_bytes(cfg, batch, seq),
               shards);
    if (names) print_names(m, true, out);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

// The names in dir (sorted; hidden ones left out) that start with prefix; *n of them.
static char **list_dir(const char *dir, const char *prefix, int *n) {
    DIR *d = opendir(dir);
    if (!d) ag_fail("%s: cannot list: %s", dir, strerror(errno));
    char **names = NULL;
    int64_t cap = 0;
    *n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if ((e->d_name[0] != '.' || prefix[0] == '.') &&
            !strncmp(e->d_name, prefix, strlen(prefix))) {
            names = ag_xgrow(names, &cap, *n + 1, sizeof *names, "inspect");
            names[(*n)++] = ag_xstrdup(e->d_name);
        }
    closedir(d);
    if (*n) qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
}

// Does dir hold weights in one of the layouts tr_weights_open reads?
static bool has_hf_weights(const char *dir) {
    static const char *const weights[] = {"model.safetensors", "model.safetensors.index.json",
                                          "pytorch_model.bin", "pytorch_model.bin.index.json"};
    for (int k = 0; k < 4; k++)
        if (ds_dir_has(dir, weights[k])) return true;
    return false;
}

// An export or weights folder: its weights (HF) and GGUF files, and its other files.
static void inspect_export(const char *dir, FILE *out) {
    bool hf = has_hf_weights(dir);
    if (hf) tr_inspect_weights(dir, out);
    int n;
    char **names = list_dir(dir, "", &n);
    for (int i = 0; i < n; i++) {
        char *p = ag_xpath_join(dir, names[i]);
        if (tr_is_gguf_file(p)) {
            if (hf || i) fputc('\n', out);
            tr_inspect_gguf(p, out);
        } else if (has_suffix(names[i], ".safetensors") && strncmp(names[i], "model", 5)) {
            // the video / audio branches of an HF export
            fputc('\n', out);
            tr_inspect_weights(p, out);
        }
        free(p);
    }
    fprintf(out, "\nfiles:");
    for (int i = 0; i < n; i++) {
        char *p = ag_xpath_join(dir, names[i]);
        struct stat st;
        char b[32];
        if (!stat(p, &st))
            fprintf(out, " %s (%s)", names[i], tr_human_bytes(b, sizeof b, st.st_size));
        free(p);
        free(names[i]);
    }
    fputc('\n', out);
    free(names);
}

static void print_init(const tr_init_config *init, FILE *out) {
    bool any = false;
    for (int p = 0; p < TR_INIT_NPART; p++) {
        if (!init->path[p]) continue;
        if (!any) fprintf(out, "\ninit (weights loaded before training)\n");
        any = true;
        fprintf(out, "  %-14s %s%s%s%s\n", tr_init_part_name((tr_init_part)p), init->path[p],
                init->prefix[p] ? " (prefix '" : "", init->prefix[p] ? init->prefix[p] : "",
                init->prefix[p] ? "')" : "");
    }
    if (!any) fprintf(out, "\ninit: none (random initialisation)\n");
}

static void inspect_yaml(tr_yaml *root, const char *path, const tr_inspect_opts *o, FILE *out);

// A curriculum (stages: a list of stage config paths, read as groundc train reads it): each
// stage's report in turn. A stage's init.checkpoint that the curriculum fills in (the previous
// stage's final checkpoint) is not there yet and not shown.
static void inspect_curriculum(tr_yaml *root, const char *path, const tr_inspect_opts *o,
                               FILE *out) {
    tr_yaml *list = tr_yaml_get(root, "stages");
    if (list->kind != TR_YAML_SEQ || list->n < 1)
        tr_yaml_fail(list, "expected a non-empty list of stage config paths");
    for (int i = 0; i < list->n; i++)
        if (list->items[i]->kind != TR_YAML_SCALAR) tr_yaml_fail(list->items[i], "expected a path");
    tr_yaml_check_used(root);
    fprintf(out, "curriculum %s: %d stages\n", path, list->n);
    for (int i = 0; i < list->n; i++) {
        char *stage = tr_config_path(list->items[i], list->items[i]->value);
        tr_yaml *st = tr_yaml_load(stage);
        if (!tr_config_is_stage(st))
            tr_yaml_fail(st, "not a stage config (needs model: and data:)");
        fprintf(out, "\n== stage %d of %d: %s\n\n", i + 1, list->n, stage);
        inspect_yaml(st, stage, o, out);
        tr_yaml_free(st);
        free(stage);
    }
}

// A model file or a training config, loaded.
// --names of a model config (no selection): its parameters on a meta model.
static void names_of(const gm_groundinggpt_config *cfg, FILE *out) {
    ag_ctx *meta = ag_ctx_new_meta();
    gm_groundinggpt *m = gm_groundinggpt_new(meta, cfg);
    print_names(m, false, out);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
}

static void inspect_yaml(tr_yaml *root, const char *path, const tr_inspect_opts *o, FILE *out) {
    gm_groundinggpt_config cfg;
    if (root->kind == TR_YAML_MAP && tr_yaml_get(root, "stages")) {
        inspect_curriculum(root, path, o, out);
    } else if (root->kind == TR_YAML_MAP && tr_yaml_get(root, "task")) {
        ag_fail("%s: a copy-task config (task:), which has no GroundingGPT model to inspect; "
                "groundc train runs it",
                path);
    } else if (tr_config_is_model_file(root)) {
        tr_model_config_read(root, &cfg);
        tr_yaml_check_used(root);
        tr_inspect_model(&cfg, path, o->batch > 0 ? o->batch : 1, o->seq, out);
        if (o->names) names_of(&cfg, out);
    } else if (tr_config_is_stage(root)) {
        // A stage config, read (and checked) as groundc train reads it. Counting needs no
        // device, so one that asks for cuda is inspected where none is.
        tr_yaml *dev = tr_yaml_get(root, "device");
        if (dev && dev->kind == TR_YAML_SCALAR && !strcmp(dev->value, "cuda")) {
            free(dev->value);
            dev->value = ag_xstrdup("cpu");
        }
        tr_train_config c;
        tr_train_config_read(root, &c);
        // the run's own micro-batch and length unless asked for others
        const int64_t batch = o->batch > 0 ? o->batch : c.micro_batch,
                      seq = pick_seq(&c.model, o->seq > 0 ? o->seq : c.max_len);
        tr_inspect_model(&c.model, path, batch, seq, out);
        print_init(&c.init, out);
        inspect_stage(&c, batch, seq, o->ranks > 0 ? o->ranks : 1, o->names, out);
        tr_train_config_free(&c);
    } else {
        // Another training config: its model and its init block; the other sections belong
        // to groundc train, which checks them.
        tr_model_config_from_train(root, &cfg);
        tr_yaml *m = tr_yaml_get(root, "model");
        if (m->kind == TR_YAML_MAP) tr_yaml_check_used(m);
        tr_init_config init;
        tr_init_config_read(root, &init);
        tr_inspect_model(&cfg, path, o->batch > 0 ? o->batch : 1, o->seq, out);
        print_init(&init, out);
        if (o->names) names_of(&cfg, out);
        tr_init_config_free(&init);
    }
}

// A checkpoint folder: its state, its files, whether model.safetensors fits its config.yaml,
// and the report of that config.
static void inspect_checkpoint(const char *dir, const tr_inspect_opts *o, FILE *out) {
    tr_ckpt_state st;
    tr_ckpt_read_state(dir, &st);
    // a resume reads rank 0's optimizer file (each rank's own with ZeRO-1)
    char status[160] = "resumable";
    for (int r = 0; r < (st.zero1 ? st.world : 1) && !st.complete; r++) {
        char name[64];
        snprintf(name, sizeof name, "optim.rank%05d.safetensors", r);
        if (!ds_dir_has(dir, name)) {
            snprintf(status, sizeof status, "not resumable: %s is missing", name);
            break;
        }
    }
    fprintf(out, "checkpoint %s: step %lld of %lld (%s), stage %d, world %d%s, global batch %lld\n",
            dir, (long long)st.step, (long long)st.total_steps,
            st.complete ? "the stage is complete" : status, st.stage, st.world,
            st.zero1 ? " with ZeRO-1" : "", (long long)st.global_batch);
    fprintf(out,
            "data: seed %llu, %lld stream positions consumed; %.0f supervised tokens seen, "
            "last loss %.4f\n",
            (unsigned long long)st.cursor.seed, (long long)st.cursor.position, st.tokens, st.loss);
    char *cfg_path = ag_xpath_join(dir, "config.yaml");
    tr_yaml *root = tr_yaml_load(cfg_path);
    gm_groundinggpt_config mc;
    tr_model_config_from_train(root, &mc);
    ag_ctx *meta = ag_ctx_new_meta();
    gm_groundinggpt *m = gm_groundinggpt_new(meta, &mc);
    char digest[65];
    tr_ckpt_model_digest(m->params, digest);
    if (strcmp(digest, st.model_digest))
        ag_fail("%s: state.json's model digest %.12s... is not that of config.yaml's model "
                "(%.12s...): the folder mixes two models",
                dir, st.model_digest, digest);
    char *weights = ag_xpath_join(dir, "model.safetensors");
    ag_st_file *f = ag_st_open(weights);
    tr_ckpt_check_model(f, m->params);
    int64_t params = 0, bytes = 0;
    for (int i = 0; i < f->n; i++) {
        int64_t k = 1;
        for (int d = 0; d < f->entries[i].ndim; d++) k *= f->entries[i].shape[d];
        params += k;
        bytes += (int64_t)f->entries[i].nbytes;
    }
    char h[32], b[32];
    fprintf(out,
            "model.safetensors: %d tensors, %s parameters, %s; fits config.yaml's model (%d "
            "tensors, digest %.12s...)\n",
            f->n, tr_human_count(h, sizeof h, params), tr_human_bytes(b, sizeof b, bytes),
            m->params->n, digest);
    ag_st_close(f);
    free(weights);
    gm_groundinggpt_free(m);
    ag_ctx_free(meta);
    for (int r = 0; r < st.world; r++) {
        char name[64];
        snprintf(name, sizeof name, "optim.rank%05d.safetensors", r);
        if (!ds_dir_has(dir, name)) continue;
        char *p = ag_xpath_join(dir, name);
        f = ag_st_open(p);
        fprintf(out, "%s: %d tensors (AdamW moments and master weights)\n", name, f->n);
        ag_st_close(f);
        free(p);
    }
    fputc('\n', out);
    tr_inspect_opts at = *o; // the checkpoint's own rank count unless asked for another
    if (at.ranks <= 0) at.ranks = st.world;
    inspect_yaml(root, cfg_path, &at, out);
    tr_yaml_free(root);
    free(cfg_path);
}

// A run folder (checkpoint.out): its checkpoints, then the one `latest` names.
static void inspect_run(const char *dir, const tr_inspect_opts *o, FILE *out) {
    char *latest = tr_ckpt_latest(dir);
    if (!latest) ag_fail("%s: 'latest' names no complete checkpoint", dir);
    int n;
    char **names = list_dir(dir, "step_", &n);
    fprintf(out, "run %s: %d checkpoint%s:", dir, n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        fprintf(out, " %s", names[i]);
        free(names[i]);
    }
    free(names);
    // tr_ckpt_latest falls back to the newest step folder when the link is gone
    char *link = ag_xpath_join(dir, "latest");
    struct stat ls;
    bool linked = lstat(link, &ls) == 0;
    free(link);
    fprintf(out, linked ? "; latest -> %s\n" : "; no 'latest' link, newest: %s\n", latest);
    // a save under way, or one a kill interrupted (the next save removes it)
    char **tmp = list_dir(dir, ".tmp.step_", &n);
    for (int i = 0; i < n; i++) {
        fprintf(out,
                "%s: an unfinished checkpoint (being written, or left by a run killed while "
                "writing it; the next save removes it)\n",
                tmp[i]);
        free(tmp[i]);
    }
    free(tmp);
    fputc('\n', out);
    inspect_checkpoint(latest, o, out);
    free(latest);
}

// A NUL in the first 4 KiB: binary, so not a YAML config (an image, an archive, ...).
static bool looks_binary(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false; // the YAML reader says why
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f); // read only
    return memchr(buf, 0, n) != NULL;
}

int tr_inspect(const char *path, const tr_inspect_opts *o, FILE *out) {
    struct stat st;
    if (stat(path, &st)) ag_fail("%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (ds_dir_has(path, "state.json"))
            inspect_checkpoint(path, o, out);
        else if (tr_ckpt_is_run(path))
            inspect_run(path, o, out);
        else if (ds_dir_has(path, DS_MANIFEST_NAME))
            tr_inspect_dataset(path, o->checksums, out);
        else if (has_hf_weights(path) || ds_dir_has(path, "model.gguf") ||
                 ds_dir_has(path, "mmproj.gguf"))
            inspect_export(path, out);
        else
            ag_fail("%s: not a checkpoint, run, dataset, weights or export folder (none of "
                    "state.json, latest, manifest.json, model.safetensors, pytorch_model.bin, "
                    "model.gguf)",
                    path);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) ds_require_file(path);     // (a FIFO would block the sniffing reads)
    if (!strcmp(ag_base_name(path), DS_MANIFEST_NAME)) { // a dataset's manifest: the dataset
        char *dir = ag_xparent_dir(path);
        tr_inspect_dataset(dir, o->checksums, out);
        free(dir);
    } else if (tr_is_gguf_file(path)) {
        tr_inspect_gguf(path, out);
    } else if (tr_is_hdf5_file(path) || has_suffix(path, ".h5") || has_suffix(path, ".hdf5")) {
        tr_inspect_shard(path, out);
        if (o->checksums) tr_inspect_shard_checksum(path, out);
    } else if (ag_pt_is_torch_file(path) || tr_is_safetensors_file(path) ||
               has_suffix(path, ".safetensors")) {
        tr_inspect_weights(path, out);
    } else if (looks_binary(path) || has_suffix(path, ".json") || has_suffix(path, ".jsonl")) {
        // (JSON parses as YAML: a pack input would be called a config that is no mapping)
        ag_fail("%s: not a file inspect reads (a model or training config .yaml, a dataset shard "
                ".h5 or manifest.json, weights .safetensors / .pth / .bin, a .gguf; or a "
                "checkpoint, run, dataset or export folder)",
                path);
    } else {
        tr_yaml *root = tr_yaml_load(path);
        inspect_yaml(root, path, o, out);
        tr_yaml_free(root);
    }
    return 0;
}
