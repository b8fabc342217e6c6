// import.c: see import.h.
#include "import.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/torch_file.h"
#include "data/files.h"
#include "train/checkpoint.h"
#include "train/model_config.h"
#include "train/train_config.h"

// Weight sources ------------------------------------------------------------------------------

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const tr_weight *)a)->entry->name, ((const tr_weight *)b)->entry->name);
}

static void add_file(tr_weights *w, const char *path) {
    w->files = ag_xgrow(w->files, &w->files_cap, w->n_files + 1, sizeof *w->files, "weights");
    w->files[w->n_files++] = ag_pt_is_torch_file(path) ? ag_pt_open(path) : ag_st_open(path);
}

// Opens every shard the index names and checks that index and shards agree.
static void open_index(tr_weights *w, const char *dir, const char *index_path) {
    char *text = ds_read_file(index_path, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) ag_fail("%s: not valid JSON", index_path);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) ag_fail("%s: no \"weight_map\" object", index_path);
    char **names = NULL; // distinct shard files, in order of first appearance
    int n_names = 0;
    int64_t names_cap = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, map) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/'))
            ag_fail("%s: weight_map entry '%s' is not a file name in this folder", index_path,
                    it->string);
        int k = 0;
        while (k < n_names && strcmp(names[k], it->valuestring)) k++;
        if (k == n_names) {
            names = ag_xgrow(names, &names_cap, n_names + 1, sizeof *names, "index");
            names[n_names++] = it->valuestring;
        }
    }
    if (!n_names) ag_fail("%s: the weight_map is empty", index_path);
    for (int k = 0; k < n_names; k++) {
        char *p = ag_xpath_join(dir, names[k]);
        add_file(w, p);
        free(p);
    }
    cJSON_ArrayForEach(it, map) {
        int k = 0;
        while (strcmp(names[k], it->valuestring)) k++;
        if (!ag_st_find(w->files[k], it->string))
            ag_fail("%s: the index puts tensor '%s' in %s, which does not hold it", index_path,
                    it->string, names[k]);
    }
    for (int k = 0; k < n_names; k++)
        for (int i = 0; i < w->files[k]->n; i++) {
            const char *name = w->files[k]->entries[i].name;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(map, name);
            if (!cJSON_IsString(v) || strcmp(v->valuestring, names[k]))
                ag_fail("%s: tensor '%s' of %s is not listed there in the index", index_path, name,
                        names[k]);
        }
    free(names);
    cJSON_Delete(root);
}

tr_weights *tr_weights_open(const char *path) {
    struct stat st;
    if (stat(path, &st)) ag_fail("%s: cannot open: %s", path, strerror(errno));
    tr_weights *w = ag_xcalloc(1, sizeof *w, "weights");
    w->path = ag_xstrdup(path);
    if (S_ISDIR(st.st_mode)) {
        // what save_pretrained writes: safetensors, or torch.save shards for older models
        static const char *const layouts[][2] = {
            {"model.safetensors.index.json", "model.safetensors"},
            {"pytorch_model.bin.index.json", "pytorch_model.bin"}};
        bool found = false;
        for (int k = 0; k < 2 && !found; k++) {
            char *index = ag_xpath_join(path, layouts[k][0]);
            char *single = ag_xpath_join(path, layouts[k][1]);
            if (exists(index))
                open_index(w, path, index);
            else if (exists(single))
                add_file(w, single);
            found = exists(index) || exists(single);
            free(index);
            free(single);
        }
        if (!found) {
            if (tr_ckpt_is_run(path)) // checkpoint.out of a run: its checkpoints are inside
                ag_fail("%s: a run folder, not a checkpoint; name one of its checkpoints, e.g. "
                        "%s/latest",
                        path, path);
            ag_fail("%s: holds none of model.safetensors, model.safetensors.index.json, "
                    "pytorch_model.bin, pytorch_model.bin.index.json",
                    path);
        }
    } else {
        add_file(w, path);
    }
    for (int k = 0; k < w->n_files; k++) w->n += w->files[k]->n;
    w->items = ag_xcalloc((size_t)(w->n ? w->n : 1), sizeof *w->items, "weights");
    int j = 0;
    for (int k = 0; k < w->n_files; k++)
        for (int i = 0; i < w->files[k]->n; i++)
            w->items[j++] = (tr_weight){&w->files[k]->entries[i], w->files[k]};
    qsort(w->items, (size_t)w->n, sizeof *w->items, by_name);
    for (int i = 1; i < w->n; i++)
        if (!strcmp(w->items[i].entry->name, w->items[i - 1].entry->name))
            ag_fail("%s: tensor '%s' is in %s and in %s", path, w->items[i].entry->name,
                    w->items[i - 1].file->path, w->items[i].file->path);
    return w;
}

void tr_weights_close(tr_weights *w) {
    if (!w) return;
    for (int k = 0; k < w->n_files; k++) ag_st_close(w->files[k]);
    free(w->files);
    free(w->items);
    free(w->path);
    free(w);
}

int tr_weights_find(const tr_weights *w, const char *name) {
    int lo = 0, hi = w->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, w->items[mid].entry->name);
        if (!c) return mid;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

// Parts ----------------------------------------------------------------------------------------

static const char *const part_keys[TR_INIT_NPART] = {
    "llm", "image_encoder", "video_encoder", "frame_qformer", "audio_encoder", "checkpoint"};

const char *tr_init_part_name(tr_init_part p) {
    return (unsigned)p < TR_INIT_NPART ? part_keys[p] : "?";
}

typedef enum {
    MAP_PLAIN, // same shape
    MAP_CONV,  // file (out, cin, kh, kw) -> model (out, kh, kw, cin)
    MAP_SPLIT, // file (V0 or V0 + 9, C) -> base table (V0, C) [+ added rows (9, C)]
} map_kind;

typedef struct {
    ag_tensor *dst;
    ag_tensor *added; // MAP_SPLIT: the added rows
    char src[512];
    map_kind kind;
    bool optional;       // checkpoint: the file may lack it
    const char *missing; // said after "is missing" (why no fallback applied), or NULL
    int idx;             // the file tensor, or -1
} mapping;

// A checkpoint's LoRA adapter that the model lacks: folded into its base weight after loading.
typedef struct {
    ag_tensor *w;
    int a, b; // the file's lora_A (r, in) and lora_B (out, r)
} lora_fold;

typedef struct {
    gm_groundinggpt *m;
    tr_init_part part;
    tr_weights *w;
    const char *prefix;
    mapping *maps;
    int n;
    int64_t cap;
    const gm_vit *vit; // encoder parts
    lora_fold *folds;
    int n_folds;
    int64_t folds_cap;
    bool tied;               // llm: config.json ties lm_head to the input embeddings
    bool lm_head_from_embed; // ... and the file has no lm_head.weight: it is initialised so
    bool lavis;              // frame_qformer: the file uses LAVIS names (Qformer.bert.*)
    char prefix_buf[512];    // the prefix when the importer extends the given one
} job;

static mapping *add_map(job *j, ag_tensor *dst, map_kind kind, const char *src) {
    j->maps = ag_xgrow(j->maps, &j->cap, j->n + 1, sizeof *j->maps, "import");
    mapping *mp = &j->maps[j->n++];
    memset(mp, 0, sizeof *mp);
    mp->dst = dst;
    mp->kind = kind;
    mp->idx = -1;
    snprintf(mp->src, sizeof mp->src, "%s%s", j->prefix, src);
    return mp;
}

// config.json -----------------------------------------------------------------------------------
//
// An HF folder's config.json says how its weights compute, and some of that (heads, eps, RoPE
// base, activation) leaves every tensor shape unchanged: a model YAML that differs there would
// load without a word and compute something else. So each field that the groundc config also
// has is compared. transformers writes nested configs (LLaVA's text_config, ...) as the
// difference to the class defaults, so an absent field means its class default, which is
// compared too. Fields groundc does not model are ignored.

typedef struct {
    char text[1600]; // "; "-separated mismatches (a message holds 2047 characters)
    size_t len;
} cfg_diff;

__attribute__((format(printf, 2, 3))) static void diff_add(cfg_diff *d, const char *fmt, ...) {
    if (d->len >= sizeof d->text - 1) return;
    if (d->len) d->len += (size_t)snprintf(d->text + d->len, sizeof d->text - d->len, "; ");
    if (d->len >= sizeof d->text - 1) return;
    va_list ap;
    va_start(ap, fmt);
    d->len += (size_t)vsnprintf(d->text + d->len, sizeof d->text - d->len, fmt, ap);
    va_end(ap);
}

static const cJSON *jget(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static const char *jtype(const cJSON *o) {
    const cJSON *t = jget(o, "model_type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

static bool close_to(double a, double b) {
    return a == b || fabs(a - b) <= 1e-6 * fmax(fabs(a), fabs(b));
}

// sec.key (a number; dflt when absent, NAN: not compared then) against the model's want (or
// alt, unless NAN), yaml naming it in the model YAML.
// A config value as written: whole numbers in full (a size), others to 9 digits (an eps).
static const char *num_text(char buf[32], double v) {
    if (v == floor(v) && fabs(v) < 1e18)
        snprintf(buf, 32, "%.0f", v);
    else
        snprintf(buf, 32, "%.9g", v);
    return buf;
}

static void cmp_num(cfg_diff *d, const char *sec_name, const cJSON *sec, const char *key,
                    double dflt, double want, double alt, const char *yaml) {
    const cJSON *v = jget(sec, key);
    if (v && !cJSON_IsNumber(v)) {
        diff_add(d, "%s%s is not a number", sec_name, key);
        return;
    }
    // a null is no default: the config classes take it as None, which their models fail on
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(sec, key)) && !isnan(dflt)) {
        diff_add(d, "%s%s is null, not a number", sec_name, key);
        return;
    }
    if (!v && isnan(dflt)) return;
    double have = v ? v->valuedouble : dflt;
    if (close_to(have, want) || (!isnan(alt) && close_to(have, alt))) return;
    char h[32], w[32];
    diff_add(d, "%s%s is %s%s where the model YAML has %s %s", sec_name, key, num_text(h, have),
             v ? "" : " (absent: transformers' default)", yaml, num_text(w, want));
}

static void cmp_str(cfg_diff *d, const char *sec_name, const cJSON *sec, const char *key,
                    const char *dflt, const char *want, const char *yaml) {
    const cJSON *v = jget(sec, key);
    if (v && !cJSON_IsString(v)) {
        diff_add(d, "%s%s is not a string", sec_name, key);
        return;
    }
    const char *have = v ? v->valuestring : dflt;
    if (!strcmp(have, want)) return;
    diff_add(d, "%s%s is %s%s where the model YAML's %s uses %s", sec_name, key, have,
             v ? "" : " (absent: transformers' default)", yaml, want);
}

// RoPE variants (linear, dynamic, yarn, llama3, ...) change the rotation: groundc has only
// the plain one. transformers 4.x says "rope_scaling": null, 5.x "rope_parameters": {"rope_type":
// "default", "rope_theta": ...}.
static void cmp_rope(cfg_diff *d, const char *sec_name, const cJSON *sec, double theta) {
    const char *keys[2] = {"rope_scaling", "rope_parameters"};
    for (int k = 0; k < 2; k++) {
        const cJSON *r = jget(sec, keys[k]);
        if (!r) continue;
        const cJSON *type = jget(r, "rope_type");
        if (!type) type = jget(r, "type");
        if (!cJSON_IsObject(r) || !cJSON_IsString(type) || strcmp(type->valuestring, "default")) {
            char *text = cJSON_PrintUnformatted(r);
            diff_add(d, "%s%s is %.200s where the model YAML's llm has plain RoPE (null)", sec_name,
                     keys[k], text ? text : "?");
            free(text);
        }
        if (k == 1)
            cmp_num(d, "rope_parameters.", r, "rope_theta", NAN, theta, NAN, "llm.rope_theta");
    }
}

// Does s contain word, ignoring case?
static bool has_ci(const char *s, const char *word) {
    size_t n = strlen(word);
    for (; *s; s++) {
        size_t k = 0;
        while (k < n && s[k] && tolower((unsigned char)s[k]) == word[k]) k++;
        if (k == n) return true;
    }
    return false;
}

// Llama: LlamaForCausalLM's own config, or the text_config of a LLaVA-style one. Sets *tied.
static void check_llm_config(cfg_diff *d, const cJSON *root, const gm_llama_config *c, bool *tied) {
    const cJSON *text = jget(root, "text_config");
    const cJSON *sec = cJSON_IsObject(text) ? text : root;
    const char *name = sec == root ? "" : "text_config.", *type = jtype(sec);
    // Llama and the configs derived from LlamaConfig (LLaVA's, GroundingGPT's); a folder of
    // another family (a CLIP or BLIP-2 config beside the file) says nothing about the LLM.
    bool llama = sec == root ? !type[0] || has_ci(type, "llama") || has_ci(type, "llava") ||
                                   has_ci(type, "lego")
                             : !type[0] || !strcmp(type, "llama");
    if (!llama) return;
    const cJSON *tie = jget(sec, "tie_word_embeddings");
    if (!tie) tie = jget(root, "tie_word_embeddings");
    *tied = cJSON_IsTrue(tie);
    // Absent fields: LlamaConfig's defaults (Llama-7B's).
    const double V0 = (double)c->vocab, dim = (double)c->dim, heads = (double)c->n_heads;
    cmp_num(d, name, sec, "vocab_size", 32000, V0, V0 + GM_N_ADDED, "llm.vocab");
    cmp_num(d, name, sec, "hidden_size", 4096, dim, NAN, "llm.dim");
    cmp_num(d, name, sec, "intermediate_size", 11008, (double)c->ffn, NAN, "llm.ffn");
    cmp_num(d, name, sec, "num_hidden_layers", 32, (double)c->n_layers, NAN, "llm.layers");
    cmp_num(d, name, sec, "num_attention_heads", 32, heads, NAN, "llm.heads");
    // Absent: as many as the attention heads (no grouping).
    const cJSON *h = jget(sec, "num_attention_heads");
    cmp_num(d, name, sec, "num_key_value_heads", cJSON_IsNumber(h) ? h->valuedouble : 32,
            (double)c->n_kv_heads, NAN, "llm.kv_heads");
    cmp_num(d, name, sec, "head_dim", NAN, dim / heads, NAN, "llm.dim / llm.heads");
    cmp_num(d, name, sec, "rms_norm_eps", 1e-6, c->norm_eps, NAN, "llm.norm_eps");
    cmp_num(d, name, sec, "rope_theta", 1e4, c->rope_theta, NAN, "llm.rope_theta");
    cmp_rope(d, name, sec, c->rope_theta);
    cmp_str(d, name, sec, "hidden_act", "silu", "silu", "llm");
}

// CLIP vision: CLIPVisionModel's config, or the vision_config of CLIPModel's or LLaVA's.
static void check_clip_config(cfg_diff *d, const cJSON *root, const gm_vit *v) {
    const cJSON *vis = jget(root, "vision_config"), *sec = NULL;
    const char *top = jtype(root);
    if (!strcmp(top, "clip_vision_model"))
        sec = root;
    else if (cJSON_IsObject(vis) &&
             (!strcmp(jtype(vis), "clip_vision_model") ||
              (!jtype(vis)[0] && (!strcmp(top, "clip") || !strcmp(top, "llava")))))
        sec = vis;
    if (!sec) return; // not a CLIP config (EVA, BLIP-2's vision model, an LLM's)
    const char *name = sec == root ? "" : "vision_config.";
    const gm_vit_config *c = &v->cfg;
    // Absent fields: CLIPVisionConfig's defaults (ViT-B/32's).
    cmp_num(d, name, sec, "hidden_size", 768, (double)c->width, NAN, "image.encoder.width");
    cmp_num(d, name, sec, "intermediate_size", 3072, (double)c->mlp, NAN, "image.encoder.mlp");
    // groundc's own export states the blocks it kept (up to select_layer).
    cmp_num(d, name, sec, "num_hidden_layers", 12, (double)c->n_layers, (double)v->n_layers_used,
            "image.encoder.layers");
    cmp_num(d, name, sec, "num_attention_heads", 12, (double)c->n_heads, NAN,
            "image.encoder.heads");
    cmp_num(d, name, sec, "image_size", 224, (double)c->image_h, NAN, "image.size");
    cmp_num(d, name, sec, "patch_size", 32, (double)c->patch, NAN, "image.encoder.patch");
    cmp_num(d, name, sec, "num_channels", 3, (double)c->channels, NAN, "image channels");
    cmp_num(d, name, sec, "layer_norm_eps", 1e-5, c->norm_eps, NAN, "image.encoder.norm_eps");
    cmp_str(d, name, sec, "hidden_act", "quick_gelu",
            c->act == GM_VIT_QUICK_GELU ? "quick_gelu" : "gelu", "image.encoder (CLIP)");
}

// BLIP-2 Q-Former: Blip2Config's qformer_config (and num_query_tokens), or a Blip2QFormerModel
// config. Not vision_config.layer_norm_eps: HF's post_layernorm uses it (1e-6 by default), but
// the weights are LAVIS' ln_vision, trained with nn.LayerNorm's 1e-5 (video.frame_qformer.ln_eps).
static void check_qformer_config(cfg_diff *d, const cJSON *root, const gm_frame_qformer_config *f) {
    const cJSON *q = jget(root, "qformer_config"), *sec = NULL;
    if (!strcmp(jtype(root), "blip_2_qformer"))
        sec = root;
    else if (!strcmp(jtype(root), "blip-2") && cJSON_IsObject(q))
        sec = q;
    if (!sec) return;
    const char *name = sec == root ? "" : "qformer_config.";
    const gm_qformer_config *c = &f->qformer;
    // Absent fields: Blip2QFormerConfig's defaults (BERT-base over EVA ViT-g).
    cmp_num(d, name, sec, "hidden_size", 768, (double)c->hidden, NAN, "video.frame_qformer.hidden");
    cmp_num(d, name, sec, "num_hidden_layers", 12, (double)c->n_layers, NAN,
            "video.frame_qformer.layers");
    cmp_num(d, name, sec, "num_attention_heads", 12, (double)c->n_heads, NAN,
            "video.frame_qformer.heads");
    cmp_num(d, name, sec, "intermediate_size", 3072, (double)c->intermediate, NAN,
            "video.frame_qformer.intermediate");
    cmp_num(d, name, sec, "cross_attention_frequency", 2, (double)c->cross_attention_frequency, NAN,
            "video.frame_qformer.cross_attention_every");
    cmp_num(d, name, sec, "encoder_hidden_size", 1408, (double)c->encoder_width, NAN,
            "video.encoder.width");
    cmp_num(d, name, sec, "layer_norm_eps", 1e-12, c->eps, NAN, "video.frame_qformer.eps");
    cmp_str(d, name, sec, "hidden_act", "gelu", "gelu", "video.frame_qformer");
    if (sec != root)
        cmp_num(d, "", root, "num_query_tokens", 32, (double)f->n_queries, NAN,
                "video.frame_qformer.queries");
}

// The config.json of the HF folder the weights are (or are in), or NULL; allocated.
static char *config_json_of(const char *path) {
    struct stat st;
    if (stat(path, &st)) return NULL;
    char *dir = S_ISDIR(st.st_mode) ? ag_xstrdup(path) : ag_xparent_dir(path);
    char *cfg = ag_xpath_join(dir, "config.json");
    free(dir);
    if (!stat(cfg, &st) && S_ISREG(st.st_mode)) return cfg;
    free(cfg);
    return NULL;
}

// Compares the config.json beside the weights of part with the model's config (one line naming
// every mismatch) and reads what the import acts on (tie_word_embeddings).
static void check_hf_config(job *j, const char *path) {
    if (j->part != TR_INIT_LLM && j->part != TR_INIT_IMAGE_ENCODER &&
        j->part != TR_INIT_FRAME_QFORMER)
        return; // EVA and ImageBind ship no config.json; checkpoints carry config.yaml
    char *cfg = config_json_of(path);
    if (!cfg) return;
    char *text = ds_read_file(cfg, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) ag_fail("%s: not a JSON object", cfg);
    cfg_diff d = {.len = 0};
    if (j->part == TR_INIT_LLM)
        check_llm_config(&d, root, &j->m->cfg.llm, &j->tied);
    else if (j->part == TR_INIT_IMAGE_ENCODER)
        check_clip_config(&d, root, j->m->image_vit);
    else
        check_qformer_config(&d, root, &j->m->cfg.frame_qformer);
    cJSON_Delete(root);
    if (d.len)
        ag_fail("%s: describes another %s than the model YAML: %s", cfg, part_keys[j->part],
                d.text);
    free(cfg);
}

static void map_llm(job *j) {
    const gm_llama *l = j->m->llm;
    char head[600];
    snprintf(head, sizeof head, "%slm_head.weight", j->prefix);
    bool no_head = tr_weights_find(j->w, head) < 0;
    for (int i = 0; i < l->n_params; i++) {
        ag_tensor *p = l->params[i];
        bool split = p == l->embed || p == l->lm_head;
        const char *src = p->name;
        // Tied embeddings (save_pretrained writes no lm_head.weight then): lm_head starts as a
        // copy of the input table, base and added rows alike (load: the same rows V0.. or the
        // same mean), as resize_token_embeddings leaves a tied model. groundc keeps two
        // parameters, so training unties them.
        if (p == l->lm_head && no_head && j->tied) {
            src = l->embed->name;
            j->lm_head_from_embed = true;
        }
        mapping *mp = add_map(j, p, split ? MAP_SPLIT : MAP_PLAIN, src);
        if (split) mp->added = p == l->embed ? j->m->embed_added : j->m->lm_head_added;
        if (p == l->lm_head)
            mp->missing = "(no lm_head.weight; config.json does not say tie_word_embeddings)";
    }
}

// Encoders: the file's names are the model's after its prefix.
static void map_vit(job *j, const gm_vit *v, const char *ours) {
    j->vit = v;
    size_t k = strlen(ours);
    for (int i = 0; i < v->n_params; i++) {
        ag_tensor *p = v->params[i];
        add_map(j, p, p == v->patch_w ? MAP_CONV : MAP_PLAIN, p->name + k);
    }
}

// LAVIS Q-Former name (after "bert.") -> transformers' Blip2QFormerModel name.
static void qformer_hf_name(const char *lavis, char *out, size_t n) {
    static const char *const rules[][2] = {{"embeddings.LayerNorm.", "layernorm."},
                                           {".crossattention.self.", ".crossattention.attention."},
                                           {".attention.self.", ".attention.attention."}};
    for (size_t r = 0; r < sizeof rules / sizeof *rules; r++) {
        const char *at = strstr(lavis, rules[r][0]);
        if (!at) continue;
        snprintf(out, n, "%.*s%s%s", (int)(at - lavis), lavis, rules[r][1],
                 at + strlen(rules[r][0]));
        return;
    }
    snprintf(out, n, "%s", lavis);
}

// Does the file hold a tensor whose name starts with prefix + name?
static bool holds_under(const tr_weights *w, const char *prefix, const char *name) {
    char key[600];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    size_t n = strlen(key);
    int lo = 0, hi = w->n; // the first item >= key (items are sorted by strcmp)
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (strcmp(w->items[mid].entry->name, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->n && !strncmp(w->items[lo].entry->name, key, n);
}

// The frame Q-Former comes under one of two namings, told apart by their Q-Former names:
//   transformers' Blip2 (qformer.*, query_tokens, vision_model.post_layernorm.* as ln_vision);
//   LAVIS' (Qformer.bert.*, query_tokens, ln_vision.*): blip2_pretrained*.pth, which
//   GroundingGPT and Video-LLaMA load ({"model": state dict}, unwrapped by the .pth reader),
//   and GroundingGPT's own checkpoints, where the same names follow "model." (found without a
//   prefix too). groundc's names are LAVIS' after "model.", so LAVIS maps one to one.
static void map_frame_qformer(job *j) {
    const gm_frame_qformer *f = j->m->frame_qformer;
    if (!holds_under(j->w, j->prefix, "qformer.") &&
        !holds_under(j->w, j->prefix, "Qformer.bert.") &&
        holds_under(j->w, j->prefix, "model.Qformer.bert.")) {
        snprintf(j->prefix_buf, sizeof j->prefix_buf, "%smodel.", j->prefix);
        j->prefix = j->prefix_buf;
    }
    j->lavis = holds_under(j->w, j->prefix, "Qformer.bert.");
    add_map(j, f->ln_w, MAP_PLAIN,
            j->lavis ? "ln_vision.weight" : "vision_model.post_layernorm.weight");
    add_map(j, f->ln_b, MAP_PLAIN,
            j->lavis ? "ln_vision.bias" : "vision_model.post_layernorm.bias");
    add_map(j, f->query_tokens, MAP_PLAIN, "query_tokens");
    const char *base = "model.Qformer.bert.";
    for (int i = 0; i < f->qformer->n_params; i++) {
        ag_tensor *p = f->qformer->params[i];
        if (strncmp(p->name, base, strlen(base)))
            ag_fail("import: frame qformer parameter '%s' is not under %s", p->name, base);
        char hf[400], src[420];
        if (j->lavis) {
            snprintf(src, sizeof src, "Qformer.bert.%s", p->name + strlen(base));
        } else {
            qformer_hf_name(p->name + strlen(base), hf, sizeof hf);
            snprintf(src, sizeof src, "qformer.%s", hf);
        }
        add_map(j, p, MAP_PLAIN, src);
    }
}

static void map_checkpoint(job *j) {
    const gm_params *reg = j->m->params;
    const gm_llama *l = j->m->llm;
    for (int i = 0; i < reg->n; i++) {
        ag_tensor *p = reg->tensors[i];
        bool split = p == l->embed || p == l->lm_head;
        mapping *mp = add_map(j, p, split ? MAP_SPLIT : MAP_PLAIN, p->name);
        mp->optional = true;
        if (split) mp->added = p == l->embed ? j->m->embed_added : j->m->lm_head_added;
    }
}

static bool starts(const char *s, const char *prefix) {
    return !strncmp(s, prefix, strlen(prefix));
}

// Is rest (a file name after the prefix) in the namespace of this part?
static bool in_scope(const job *j, const char *rest) {
    // LAVIS' BLIP-2 also holds visual_encoder.*, vision_proj, text_proj, itm_head and temp.
    if (j->lavis)
        return starts(rest, "Qformer.") || starts(rest, "query_tokens") ||
               starts(rest, "ln_vision.");
    static const char *const scopes[TR_INIT_NPART][5] = {
        {"model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.", NULL},
        {"vision_model.", NULL},
        {"blocks.", "cls_token", "pos_embed", "patch_embed.", NULL},
        {"qformer.", "query_tokens", "vision_model.post_layernorm.", NULL},
        {"modality_preprocessors.audio.", "modality_trunks.audio.", "modality_heads.audio.",
         "modality_postprocessors.audio.", NULL},
        {"", NULL}};
    for (int k = 0; scopes[j->part][k]; k++)
        if (starts(rest, scopes[j->part][k])) return true;
    return false;
}

// rest = qf + a tensor of a LAVIS Q-Former (BertLMHeadModel) that query tokens never use: the
// text embeddings and their position_ids buffer, each layer's text FFN (intermediate / output;
// queries use intermediate_query / output_query) and the LM head (cls.*).
static bool lavis_text_path(const char *rest, const char *qf) {
    if (!starts(rest, qf)) return false;
    rest += strlen(qf);
    if (starts(rest, "cls.")) return true;
    if (!starts(rest, "bert.")) return false;
    rest += 5;
    int idx, at = -1;
    if (sscanf(rest, "encoder.layer.%d.%n", &idx, &at) == 1 && at > 0)
        return starts(rest + at, "intermediate.") || starts(rest + at, "output.");
    return starts(rest, "embeddings.word_embeddings.") ||
           starts(rest, "embeddings.position_embeddings.") ||
           !strcmp(rest, "embeddings.position_ids");
}

// Known leftovers of the originals that the model does not need.
static bool ignorable(const job *j, const char *rest) {
    int idx, at = -1;
    switch (j->part) {
    case TR_INIT_LLM:
        return gm_glob_match("model.layers.*.self_attn.rotary_emb.inv_freq", rest);
    case TR_INIT_IMAGE_ENCODER:
    case TR_INIT_VIDEO_ENCODER:
    case TR_INIT_AUDIO_ENCODER: {
        static const char *const blocks[] = {"vision_model.encoder.layers.%d.%n", "blocks.%d.%n",
                                             "modality_trunks.audio.blocks.%d.%n"};
        const char *fmt = blocks[j->part == TR_INIT_IMAGE_ENCODER   ? 0
                                 : j->part == TR_INIT_VIDEO_ENCODER ? 1
                                                                    : 2];
        // Blocks past the one whose output is used (CLIP's 24th, EVA's 40th).
        if (sscanf(rest, fmt, &idx, &at) == 1 && at > 0)
            return idx >= j->vit->n_layers_used && idx < j->vit->cfg.n_layers;
        if (j->part == TR_INIT_IMAGE_ENCODER)
            return !strcmp(rest, "vision_model.embeddings.position_ids") ||
                   (!j->vit->head_norm_w && starts(rest, "vision_model.post_layernorm."));
        return j->part == TR_INIT_AUDIO_ENCODER && starts(rest, "modality_postprocessors.audio.");
    }
    case TR_INIT_FRAME_QFORMER:
        if (j->lavis) return lavis_text_path(rest, "Qformer.");
        // The text FFN of each layer (queries use intermediate_query / output_query).
        if (sscanf(rest, "qformer.encoder.layer.%d.%n", &idx, &at) == 1 && at > 0)
            return starts(rest + at, "intermediate.") || starts(rest + at, "output.");
        return false;
    case TR_INIT_CHECKPOINT: {
        // GroundingGPT's own checkpoints: the same leftovers of its three LAVIS Q-Formers.
        static const char *const qf[3] = {"model.Qformer.", "model.video_Qformer.",
                                          "model.audio_Qformer."};
        for (int k = 0; k < 3; k++)
            if (lavis_text_path(rest, qf[k])) return true;
        return false;
    }
    default:
        return false;
    }
}

static bool shape_is(const ag_st_entry *e, int ndim, const int64_t *d) {
    if (e->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (e->shape[i] != d[i]) return false;
    return true;
}

static bool float_dtype(const char *dt) {
    return !strcmp(dt, "F32") || !strcmp(dt, "F16") || !strcmp(dt, "BF16") || !strcmp(dt, "F64");
}

// Finds and checks the file tensor of mp (missing, shape, dtype); marks it used.
static void resolve(job *j, mapping *mp, bool *used) {
    char have[96], want[200], a[96], b[96];
    const ag_tensor *t = mp->dst;
    mp->idx = tr_weights_find(j->w, mp->src);
    if (mp->idx < 0) {
        if (mp->optional) return;
        ag_fail("%s: tensor '%s' %s is missing (for the %s parameter '%s')%s%s", j->w->path,
                mp->src, ag_format_dims(want, sizeof want, t->ndim, t->shape), part_keys[j->part],
                t->name, mp->missing ? " " : "", mp->missing ? mp->missing : "");
    }
    const tr_weight *wt = &j->w->items[mp->idx];
    const ag_st_entry *e = wt->entry;
    int64_t d[4] = {t->shape[0], t->ndim > 1 ? t->shape[1] : 0, 0, 0};
    bool ok;
    if (mp->kind == MAP_CONV) {
        d[1] = t->shape[3], d[2] = t->shape[1], d[3] = t->shape[2]; // (out, cin, kh, kw)
        ok = shape_is(e, 4, d);
        ag_format_dims(want, sizeof want, 4, d);
    } else if (mp->kind == MAP_SPLIT) {
        int64_t d2[2] = {t->shape[0] + GM_N_ADDED, t->shape[1]};
        ok = shape_is(e, 2, d) || shape_is(e, 2, d2);
        snprintf(want, sizeof want, "%s or %s", ag_format_dims(a, sizeof a, 2, d),
                 ag_format_dims(b, sizeof b, 2, d2));
    } else {
        ok = shape_is(e, t->ndim, t->shape);
        ag_format_dims(want, sizeof want, t->ndim, t->shape);
    }
    // A checkpoint's LoRA adapter of another rank: the model keeps its fresh adapter and the
    // file's pair is folded into the base weight (plan_fold).
    if (!ok && j->part == TR_INIT_CHECKPOINT &&
        (strstr(t->name, ".lora_A.weight") || strstr(t->name, ".lora_B.weight"))) {
        mp->idx = -1;
        return;
    }
    if (!ok)
        ag_fail("%s: tensor '%s' has shape %s, the model's '%s' needs %s", wt->file->path, e->name,
                ag_format_dims(have, sizeof have, e->ndim, e->shape), t->name, want);
    if (!float_dtype(e->dtype))
        ag_fail("%s: tensor '%s' has dtype %s; '%s' needs F32, F16, BF16 or F64", wt->file->path,
                e->name, e->dtype, t->name);
    used[mp->idx] = true;
}

// Rows [r0, r0 + rows) of a 2-D entry as an entry of their own.
static ag_st_entry row_slice(const ag_st_entry *e, int64_t r0, int64_t rows) {
    ag_st_entry s = *e;
    size_t row_bytes = e->nbytes / (size_t)e->shape[0];
    s.shape[0] = rows;
    s.data = (const char *)e->data + (size_t)r0 * row_bytes;
    s.nbytes = (size_t)rows * row_bytes;
    return s;
}

// A weight loaded from a pretrained file: a NaN or an infinity in it (a damaged download, an
// f16 overflow) is named here, not found as a non-finite loss steps later.
static void load_checked(const ag_st_file *f, const ag_st_entry *e, ag_tensor *t) {
    ag_st_check_values(f, e, false);
    ag_st_load_into(f, e, t);
}

// added (9, C) = the mean of the rows of base (V0, C), as GroundingGPT initialises new tokens.
static void mean_rows(const ag_st_file *f, ag_tensor *base, ag_tensor *added) {
    const int64_t V = base->shape[0], C = base->shape[1];
    float *host = ag_xmalloc(sizeof(float) * (size_t)(V * C), "embedding mean");
    if (base->dtype == AG_F32) {
        ag_copy_to_host(base, host);
    } else { // bf16
        uint16_t *h16 = ag_xmalloc(sizeof(uint16_t) * (size_t)(V * C), "embedding mean");
        ag_copy_to_host(base, h16);
        for (int64_t i = 0; i < V * C; i++) host[i] = ag_bf16_to_f32(h16[i]);
        free(h16);
    }
    double *sum = ag_xcalloc((size_t)C, sizeof(double), "embedding mean");
    for (int64_t v = 0; v < V; v++)
        for (int64_t c = 0; c < C; c++) sum[c] += host[v * C + c];
    float *rows = ag_xmalloc(sizeof(float) * (size_t)(GM_N_ADDED * C), "embedding mean");
    for (int64_t r = 0; r < GM_N_ADDED; r++)
        for (int64_t c = 0; c < C; c++) rows[r * C + c] = (float)(sum[c] / (double)V);
    ag_st_entry e = {.name = (char *)added->name,
                     .dtype = "F32",
                     .ndim = 2,
                     .shape = {GM_N_ADDED, C},
                     .data = rows,
                     .nbytes = sizeof(float) * (size_t)(GM_N_ADDED * C)};
    load_checked(f, &e, added);
    free(rows);
    free(sum);
    free(host);
}

static void load(job *j, const mapping *mp) {
    const tr_weight *wt = &j->w->items[mp->idx];
    const ag_st_entry *e = wt->entry;
    ag_tensor *t = mp->dst;
    if (mp->kind == MAP_PLAIN) {
        load_checked(wt->file, e, t);
    } else if (mp->kind == MAP_CONV) {
        const int64_t out = t->shape[0], kh = t->shape[1], kw = t->shape[2], cin = t->shape[3];
        const int64_t n = out * kh * kw * cin;
        if (!n) return;
        void *buf = ag_xmalloc(e->nbytes, "conv weight");
        gm_vit_conv_to_patch(buf, e->data, e->nbytes / (size_t)n, out, cin, kh, kw);
        ag_st_entry pe = *e; // the same values in the patch layout
        pe.shape[0] = out, pe.shape[1] = kh, pe.shape[2] = kw, pe.shape[3] = cin;
        pe.data = buf;
        load_checked(wt->file, &pe, t);
        free(buf);
    } else {
        const int64_t V0 = t->shape[0];
        ag_st_entry base = row_slice(e, 0, V0);
        load_checked(wt->file, &base, t);
        if (e->shape[0] > V0) {
            ag_st_entry add = row_slice(e, V0, GM_N_ADDED);
            load_checked(wt->file, &add, mp->added);
        } else if (j->part == TR_INIT_LLM) {
            mean_rows(wt->file, t, mp->added);
        }
    }
}

// rest = "<base>.lora_A.weight" of a checkpoint whose base weight "<base>.weight" the model
// has, loaded from the file, but without that adapter (a model without LoRA, or with other
// targets): the pair is folded. Marks A and B used. False when rest is no such name.
static bool plan_fold(job *j, const char *rest, int a, bool *used) {
    static const char suffix[] = ".lora_A.weight";
    size_t n = strlen(rest), k = sizeof suffix - 1;
    if (j->part != TR_INIT_CHECKPOINT || n <= k || strcmp(rest + n - k, suffix)) return false;
    char base[512], bname[600];
    snprintf(base, sizeof base, "%.*s.weight", (int)(n - k), rest);
    ag_tensor *w = gm_params_find(j->m->params, base);
    if (!w) return false;
    bool loaded = false;
    for (int i = 0; i < j->n && !loaded; i++) loaded = j->maps[i].dst == w && j->maps[i].idx >= 0;
    if (!loaded) return false;
    snprintf(bname, sizeof bname, "%s%.*s.lora_B.weight", j->prefix, (int)(n - k), rest);
    int b = tr_weights_find(j->w, bname);
    if (b < 0) ag_fail("%s: '%s' has no '%s'", j->w->path, j->w->items[a].entry->name, bname);
    j->folds = ag_xgrow(j->folds, &j->folds_cap, j->n_folds + 1, sizeof *j->folds, "import");
    j->folds[j->n_folds++] = (lora_fold){w, a, b};
    used[a] = used[b] = true;
    return true;
}

// W += (alpha / r) B A for every planned fold; alpha and r come from the config.yaml of the
// checkpoint (beside its weights), which trained them.
static void fold_lora(job *j) {
    if (!j->n_folds) return;
    struct stat st;
    const char *w = j->w->path; // a weights file: its folder holds config.yaml
    char *dir = !stat(w, &st) && !S_ISDIR(st.st_mode) ? ag_xparent_dir(w) : ag_xstrdup(w);
    char *cfg_path = ag_xpath_join(dir, "config.yaml");
    if (!exists(cfg_path))
        ag_fail("%s: holds LoRA adapters ('%s') but no config.yaml beside it gives their alpha",
                j->w->path, j->w->items[j->folds[0].a].entry->name);
    tr_yaml *root = tr_yaml_load(cfg_path);
    gm_lora_config lc;
    tr_lora_config_read(root, &j->m->cfg.llm, &lc);
    if (lc.rank <= 0)
        ag_fail("%s: holds LoRA adapters ('%s') but has no lora: section", cfg_path,
                j->w->items[j->folds[0].a].entry->name);
    ag_ctx *tmp = ag_ctx_new(AG_CPU);
    for (int i = 0; i < j->n_folds; i++) {
        const tr_weight *a = &j->w->items[j->folds[i].a], *b = &j->w->items[j->folds[i].b];
        if (a->entry->ndim != 2 || b->entry->ndim != 2 || a->entry->shape[0] != lc.rank)
            ag_fail("%s: '%s' is not a rank-%lld LoRA A (r, in) as %s says", j->w->path,
                    a->entry->name, (long long)lc.rank, cfg_path);
        gm_lora_pair pair = {
            ag_param(tmp, a->entry->name, AG_F32, AG_SHAPE(a->entry->shape[0], a->entry->shape[1])),
            ag_param(tmp, b->entry->name, AG_F32,
                     AG_SHAPE(b->entry->shape[0], b->entry->shape[1]))};
        load_checked(a->file, a->entry, pair.A);
        load_checked(b->file, b->entry, pair.B);
        gm_lora_merge(j->folds[i].w, &pair, gm_lora_scale(&lc));
    }
    ag_ctx_free(tmp);
    tr_yaml_free(root);
    free(cfg_path);
    free(dir);
}

// tr_import_part; note (n bytes, may be NULL) gets what the log line adds: how a fallback
// applied or which naming the file used. plan_only: every check, nothing copied (m may be a
// meta model); returns the tensors that would load.
// Marks the parameter t of m as loaded (loaded: one flag per m->params entry).
static void mark_loaded(const gm_groundinggpt *m, const ag_tensor *t, bool *loaded) {
    for (int i = 0; i < m->params->n; i++)
        if (m->params->tensors[i] == t) loaded[i] = true;
}

static int import_part(gm_groundinggpt *m, tr_init_part part, const char *path, const char *prefix,
                       char *note, size_t note_n, bool plan_only, bool *loaded_params) {
    job j = {.m = m, .part = part, .prefix = prefix ? prefix : ""};
    static const gm_modality needs[TR_INIT_NPART] = {GM_NMOD,      GM_MOD_IMAGE, GM_MOD_VIDEO,
                                                     GM_MOD_VIDEO, GM_MOD_AUDIO, GM_NMOD};
    if ((unsigned)part >= TR_INIT_NPART) ag_fail("import: unknown part %d", (int)part);
    if (needs[part] != GM_NMOD && !m->cfg.has[needs[part]])
        ag_fail("init: %s is given, but the model has no %s branch", part_keys[part],
                gm_modality_name(needs[part]));
    j.w = tr_weights_open(path);
    check_hf_config(&j, path);
    switch (part) {
    case TR_INIT_LLM:
        map_llm(&j);
        break;
    case TR_INIT_IMAGE_ENCODER:
        map_vit(&j, m->image_vit, "model.vision_tower.");
        break;
    case TR_INIT_VIDEO_ENCODER:
        map_vit(&j, m->video_vit, "model.visual_encoder.");
        break;
    case TR_INIT_FRAME_QFORMER:
        map_frame_qformer(&j);
        break;
    case TR_INIT_AUDIO_ENCODER:
        map_vit(&j, m->audio_vit, "model.audio_encoder.");
        break;
    default:
        map_checkpoint(&j);
        break;
    }
    // 1. every parameter's tensor, shape and dtype; 2. nothing left over; 3. copy.
    bool *used = ag_xcalloc((size_t)(j.w->n ? j.w->n : 1), sizeof *used, "import");
    for (int i = 0; i < j.n; i++) resolve(&j, &j.maps[i], used);
    // A checkpoint holding the added rows both inside a (V0 + 9)-row table and on their own
    // would be ambiguous.
    for (int i = 0; i < j.n; i++) {
        const mapping *mp = &j.maps[i];
        if (mp->kind != MAP_SPLIT || mp->idx < 0) continue;
        if (j.w->items[mp->idx].entry->shape[0] == mp->dst->shape[0]) continue;
        for (int k = 0; k < j.n; k++)
            if (j.maps[k].dst == mp->added && j.maps[k].idx >= 0)
                ag_fail("%s: tensor '%s' holds the added rows and so does '%s'", j.w->path,
                        j.w->items[mp->idx].entry->name, j.maps[k].src);
    }
    size_t np = strlen(j.prefix);
    for (int i = 0; i < j.w->n; i++) {
        const ag_st_entry *e = j.w->items[i].entry;
        if (used[i] || strncmp(e->name, j.prefix, np)) continue;
        const char *rest = e->name + np;
        if (!in_scope(&j, rest) || ignorable(&j, rest) || plan_fold(&j, rest, i, used)) continue;
        char have[96];
        ag_fail("%s: unexpected tensor '%s' %s: no parameter of the %s takes it",
                j.w->items[i].file->path, e->name,
                ag_format_dims(have, sizeof have, e->ndim, e->shape), part_keys[part]);
    }
    int loaded = 0;
    for (int i = 0; i < j.n; i++)
        if (j.maps[i].idx >= 0) {
            if (!plan_only) load(&j, &j.maps[i]);
            loaded++;
            if (!loaded_params) continue;
            mark_loaded(m, j.maps[i].dst, loaded_params);
            // the added rows: from the file's (V0 + 9)-row table, or the mean of an LLM's
            if (j.maps[i].kind == MAP_SPLIT &&
                (j.w->items[j.maps[i].idx].entry->shape[0] > j.maps[i].dst->shape[0] ||
                 part == TR_INIT_LLM))
                mark_loaded(m, j.maps[i].added, loaded_params);
        }
    if (!plan_only) fold_lora(&j);
    loaded += 2 * j.n_folds;
    free(j.folds);
    if (part == TR_INIT_CHECKPOINT && !loaded)
        ag_fail("%s: no tensor of the model in this checkpoint (prefix '%s')", path, j.prefix);
    if (note && note_n) {
        note[0] = 0;
        if (j.lm_head_from_embed)
            snprintf(note, note_n,
                     " (lm_head from model.embed_tokens.weight: config.json says "
                     "tie_word_embeddings)");
        else if (j.lavis && j.prefix[0])
            snprintf(note, note_n, " (LAVIS names after '%s')", j.prefix);
        else if (j.lavis)
            snprintf(note, note_n, " (LAVIS names)");
    }
    free(used);
    free(j.maps);
    tr_weights_close(j.w);
    return loaded;
}

int tr_import_part(gm_groundinggpt *m, tr_init_part part, const char *path, const char *prefix) {
    return import_part(m, part, path, prefix, NULL, 0, false, NULL);
}

void tr_import_check(gm_groundinggpt *m, const tr_init_config *c) {
    for (int p = 0; p < TR_INIT_NPART; p++)
        if (c->path[p])
            import_part(m, (tr_init_part)p, c->path[p], c->prefix[p], NULL, 0, true, NULL);
}

void tr_import(gm_groundinggpt *m, const tr_init_config *c, FILE *log, bool *loaded) {
    for (int p = 0; p < TR_INIT_NPART; p++) {
        if (!c->path[p]) continue;
        char note[700];
        int n = import_part(m, (tr_init_part)p, c->path[p], c->prefix[p], note, sizeof note, false,
                            loaded);
        if (log) fprintf(log, "init %s: %d tensors from %s%s\n", part_keys[p], n, c->path[p], note);
    }
}

void tr_init_check_checkpoint(const tr_init_config *c, const gm_groundinggpt_config *model) {
    const char *dir = c->path[TR_INIT_CHECKPOINT];
    // A prefix takes part of another model's checkpoint; a plain weights file has no config.
    if (!dir || c->prefix[TR_INIT_CHECKPOINT]) return;
    char *path = ag_xpath_join(dir, "config.yaml");
    struct stat sb;
    if (stat(path, &sb) || !S_ISREG(sb.st_mode)) {
        free(path);
        return;
    }
    tr_yaml *root = tr_yaml_load(path);
    free(path);
    gm_groundinggpt_config have;
    tr_model_config_from_train(root, &have);
    tr_yaml_free(root);
    // The sizes that fix the parameter shapes, the LLM's first: a 7B config over a small
    // checkpoint would otherwise allocate the 7B before the first tensor's shape is compared.
    const gm_llama_config *a = &have.llm, *b = &model->llm;
    // A branch only one of the models has is left to the import (the file may hold a subset).
    bool im = have.has[GM_MOD_IMAGE] && model->has[GM_MOD_IMAGE];
    bool vi = have.has[GM_MOD_VIDEO] && model->has[GM_MOD_VIDEO];
    bool so = have.has[GM_MOD_AUDIO] && model->has[GM_MOD_AUDIO];
    const struct {
        const char *key;
        bool both;
        int64_t have, want;
    } sizes[] = {
        {"llm.vocab", true, a->vocab, b->vocab},
        {"llm.dim", true, a->dim, b->dim},
        {"llm.layers", true, a->n_layers, b->n_layers},
        {"llm.heads", true, a->n_heads, b->n_heads},
        {"llm.kv_heads", true, a->n_kv_heads, b->n_kv_heads},
        {"llm.ffn", true, a->ffn, b->ffn},
        {"image.size", im, have.image_size, model->image_size},
        {"image.tokens", im, have.image_tokens, model->image_tokens},
        {"video.frames", vi, have.video_frames, model->video_frames},
        {"video.tokens", vi, have.video_tokens, model->video_tokens},
        {"audio.tokens", so, have.audio_tokens, model->audio_tokens},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        if (sizes[i].both && sizes[i].have != sizes[i].want)
            ag_fail("%s: written for another model: its %s is %lld, this config's model has %lld "
                    "(init.checkpoint takes a checkpoint of the same model)",
                    dir, sizes[i].key, (long long)sizes[i].have, (long long)sizes[i].want);
}

// Config ---------------------------------------------------------------------------------------

void tr_init_config_read(tr_yaml *root, tr_init_config *c) {
    memset(c, 0, sizeof *c);
    tr_yaml *init = tr_yaml_map(root, "init");
    if (!init) return;
    for (int p = 0; p < TR_INIT_NPART; p++) {
        tr_yaml *v = tr_yaml_get(init, part_keys[p]);
        if (!v) continue;
        const char *path = NULL, *prefix = NULL;
        tr_yaml *at = v; // the scalar holding the path
        if (v->kind == TR_YAML_SCALAR) {
            path = v->value;
        } else if (v->kind == TR_YAML_MAP) {
            if (!tr_yaml_get(v, "path")) tr_yaml_fail(v, "missing key 'path'");
            path = tr_yaml_str(v, "path", NULL, NULL);
            prefix = tr_yaml_str(v, "prefix", NULL, NULL);
            at = tr_yaml_get(v, "path");
        } else {
            tr_yaml_fail(v, "expected a path or a mapping {path, prefix}");
        }
        if (!path[0]) tr_yaml_fail(v, "empty path");
        // absolute in the tree too: the config.yaml stored with checkpoints is read from
        // another folder (configs/README.md), like the dataset paths
        c->path[p] = tr_config_abs_path(at);
        c->prefix[p] = prefix ? ag_xstrdup(prefix) : NULL;
    }
    tr_yaml_check_used(init);
}

void tr_init_config_free(tr_init_config *c) {
    for (int p = 0; p < TR_INIT_NPART; p++) {
        free(c->path[p]);
        free(c->prefix[p]);
    }
    memset(c, 0, sizeof *c);
}
