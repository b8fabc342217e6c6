// export_hf.c: `groundc export --format hf`: a folder that transformers loads as
// LlavaForConditionalGeneration, plus GroundingGPT's video and audio branches beside it.
//
//   model.safetensors   the LLaVA part under the names transformers (>= 4.52, 5.x) writes (past
//                       5 GB: model-0000k-of-0000n.safetensors + model.safetensors.index.json):
//                         model.language_model.*            LlamaModel, embed_tokens (V0 + 9, C)
//                         lm_head.weight                    (V0 + 9, C)
//                         model.vision_tower.vision_model.* CLIPVisionModel (see below)
//                         model.multi_modal_projector.linear_{1,2}.*   mlp2x_gelu
//   config.json         LlavaConfig: text_config (llama), vision_config (clip_vision_model)
//   generation_config.json, preprocessor_config.json (LlavaImageProcessor: pad to square with
//   the CLIP mean colour, bicubic resize, CLIP mean/std), processor_config.json,
//   chat_template.json, tokenizer.model, tokenizer.json (the same tokenizer for HF's tokenizers
//   library), tokenizer_config.json (LlamaTokenizer, the 9 added tokens, the Vicuna v0 chat
//   template), special_tokens_map.json
//   video_branch.{safetensors,json}, audio_branch.{safetensors,json}: every parameter of the
//   branch under groundc's (GroundingGPT's) names, conv weights in PyTorch's layout, and its
//   shapes; only for the branches the model has
//   README.md           what is where, and what transformers does not run
//
// Row r of groundc's added-token tables belongs to id V0 + r (model/groundinggpt.h), so the HF
// tables are the plain concatenation. The CLIP tower holds only the blocks up to the selected
// layer (the checkpoint has no others), so vision_config counts those blocks and
// vision_feature_layer is -1: the same hidden state. post_layernorm, which LLaVA never uses, is
// written as the identity (weight 1, bias 0) so that transformers initialises nothing at random.
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/audio.h"
#include "data/files.h"
#include "data/template.h"
#include "train/export.h"

#define VT "model.vision_tower.vision_model."
#define MP "model.multi_modal_projector."

typedef enum { OUT_F32, OUT_F16, OUT_BF16 } out_type;

typedef struct {
    const gm_groundinggpt *m;
    const ds_tokenizer *tok;
    const char *dir;
    out_type type;
    const char *st_dtype;         // "F32", "F16", "BF16"
    const char *torch_dtype;      // "float32", "float16", "bfloat16"
    const char *text[GM_N_ADDED]; // added token text by id - V0
    int n_done;                   // parameters written, to check that none is left out
} hf_export;

static const char *const tok_text[3][GM_NMOD] = {{"<im_patch>", "<vi_patch>", "<so_patch>"},
                                                 {"<im_start>", "<vi_start>", "<so_start>"},
                                                 {"<im_end>", "<vi_end>", "<so_end>"}};

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

// Files ----------------------------------------------------------------------------------------

// JSON -------------------------------------------------------------------------------------------

// cJSON returns NULL (or false) only when out of memory.
static cJSON *jok(cJSON *p) {
    if (!p) ag_fail("export: out of memory building JSON");
    return p;
}
static cJSON *jobj(cJSON *o, const char *key) {
    return jok(cJSON_AddObjectToObject(o, key));
}
static void jnum(cJSON *o, const char *key, double v) {
    jok(cJSON_AddNumberToObject(o, key, v));
}
// A float-typed config field: always with a decimal point or exponent. transformers 5 checks
// config types strictly, and cJSON would print 1.0 as the int 1.
static void jfloat(cJSON *o, const char *key, double v) {
    if (!isfinite(v)) ag_fail("export: config field %s is %g (not JSON)", key, v);
    char text[40];
    snprintf(text, sizeof text, "%.15g", v);
    if (strtod(text, NULL) != v) snprintf(text, sizeof text, "%.17g", v);
    if (!strpbrk(text, ".e")) strcat(text, ".0");
    jok(cJSON_AddRawToObject(o, key, text));
}
static void jstr(cJSON *o, const char *key, const char *v) {
    jok(cJSON_AddStringToObject(o, key, v));
}
static void jbool(cJSON *o, const char *key, bool v) {
    jok(cJSON_AddBoolToObject(o, key, v));
}
static void jnull(cJSON *o, const char *key) {
    jok(cJSON_AddNullToObject(o, key));
}
static void jpush(cJSON *array, cJSON *item) {
    if (!cJSON_AddItemToArray(array, jok(item))) ag_fail("export: out of memory building JSON");
}
static void jadd(cJSON *o, const char *key, cJSON *item) {
    if (!cJSON_AddItemToObject(o, key, jok(item))) ag_fail("export: out of memory building JSON");
}
static void jnums(cJSON *o, const char *key, const double *v, int n) {
    cJSON *a = jok(cJSON_AddArrayToObject(o, key));
    for (int i = 0; i < n; i++) jpush(a, cJSON_CreateNumber(v[i]));
}
static void jstrn(cJSON *o, const char *key, const char *v) {
    if (v)
        jstr(o, key, v);
    else
        jnull(o, key);
}
// An id that may be absent (-1): null then.
static void jid(cJSON *o, const char *key, int32_t id) {
    if (id >= 0)
        jnum(o, key, id);
    else
        jnull(o, key);
}

// Writes root to dir/name and frees it.
static void write_json(const char *dir, const char *name, cJSON *root) {
    char *text = cJSON_Print(root);
    if (!text) ag_fail("export: out of memory printing %s", name);
    size_t n = strlen(text);
    char *line = ag_xmalloc(n + 2, "json");
    memcpy(line, text, n);
    line[n] = '\n';
    free(text);
    cJSON_Delete(root);
    tr_export_write_file(dir, name, line, n + 1);
    free(line);
}

// Tensors ----------------------------------------------------------------------------------------

// IEEE half of f, rounding to nearest even; *overflow when a finite f becomes infinite.
static uint16_t f32_to_f16(float f, bool *overflow) {
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000u);
    uint32_t exp = (v.u >> 23) & 0xffu, mant = v.u & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) {
        *overflow = true;
        return (uint16_t)(sign | 0x7c00u);
    }
    if (e <= 0) { // subnormal half (or zero): the implicit bit shifts in
        if (e < -10) return sign;
        uint32_t m = mant | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; // may carry into the exponent
    if (h >= 0x7c00u) *overflow = true;
    return (uint16_t)(sign | h);
}

// A parameter's values as f32 on the host (bf16 widens exactly). (numel) floats.
static float *param_f32(const ag_tensor *t) {
    const int64_t n = ag_numel(t);
    float *v = ag_xmalloc(sizeof(float) * (size_t)(n ? n : 1), "export tensor");
    if (t->dtype == AG_F32) {
        if (n) ag_copy_to_host(t, v);
    } else if (t->dtype == AG_BF16) {
        uint16_t *h = ag_xmalloc(sizeof(uint16_t) * (size_t)(n ? n : 1), "export tensor");
        if (n) ag_copy_to_host(t, h);
        for (int64_t i = 0; i < n; i++) v[i] = ag_bf16_to_f32(h[i]);
        free(h);
    } else {
        ag_fail("export: parameter '%s' is %s (f32 or bf16 expected)", ag_label(t, "?"),
                ag_dtype_name(t->dtype));
    }
    return v;
}

// Adds n values as the export's dtype under name.
static void add_values(hf_export *x, ag_st_writer *w, const char *name, int ndim,
                       const int64_t *shape, const float *v, int64_t n) {
    const size_t es = x->type == OUT_F32 ? 4 : 2, bytes = es * (size_t)n;
    void *buf = ag_xmalloc(bytes ? bytes : 1, "export tensor");
    if (x->type == OUT_F32) {
        memcpy(buf, v, bytes);
    } else {
        uint16_t *h = buf;
        for (int64_t i = 0; i < n; i++) {
            bool overflow = false;
            if (x->type == OUT_F16)
                h[i] = f32_to_f16(v[i], &overflow);
            else
                overflow = isinf(ag_bf16_to_f32(h[i] = ag_f32_to_bf16(v[i]))) && !isinf(v[i]);
            if (overflow)
                ag_fail("export: tensor '%s': value %g at element %lld does not fit %s; export "
                        "with --dtype f32%s",
                        name, (double)v[i], (long long)i, x->st_dtype,
                        x->type == OUT_F16 ? " or bf16" : "");
        }
    }
    ag_st_add_raw(w, name, x->st_dtype, ndim, shape, buf, bytes);
    free(buf);
}

// What goes into a weights file, planned before anything is converted so that the file can
// be split into shards by size.
typedef enum { ITEM_PARAM, ITEM_CONV, ITEM_TABLE, ITEM_FILL } item_kind;

typedef struct {
    char name[256];
    item_kind kind;
    const ag_tensor *t;     // PARAM, CONV; TABLE: the base rows (V0, C)
    const ag_tensor *added; // TABLE: the added rows (9, C)
    int64_t numel;
    float fill; // FILL: a vector of numel copies
} hf_item;

typedef struct {
    int n;
    int64_t cap;
    hf_item *v;
} hf_items;

static hf_item *push_item(hf_items *it, item_kind kind, const char *name, const ag_tensor *t) {
    it->v = ag_xgrow(it->v, &it->cap, it->n + 1, sizeof *it->v, "export plan");
    hf_item *e = &it->v[it->n++];
    memset(e, 0, sizeof *e);
    if ((size_t)snprintf(e->name, sizeof e->name, "%s", name) >= sizeof e->name)
        ag_fail("export: tensor name '%s' is too long", name);
    e->kind = kind;
    e->t = t;
    e->numel = t ? ag_numel(t) : 0;
    return e;
}

// A parameter; the ViT patch weight goes to the conv layout.
static void push_param(hf_items *it, const char *name, const ag_tensor *t, const gm_vit *vit) {
    push_item(it, vit && t == vit->patch_w ? ITEM_CONV : ITEM_PARAM, name, t);
}

static void add_item(hf_export *x, ag_st_writer *w, const hf_item *e) {
    const ag_tensor *t = e->t;
    float *v;
    if (e->kind == ITEM_FILL) {
        v = ag_xmalloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1), "export tensor");
        for (int64_t i = 0; i < e->numel; i++) v[i] = e->fill;
        add_values(x, w, e->name, 1, &e->numel, v, e->numel);
    } else if (e->kind == ITEM_PARAM) {
        v = param_f32(t);
        add_values(x, w, e->name, t->ndim, t->shape, v, e->numel);
        x->n_done++;
    } else if (e->kind == ITEM_CONV) {
        // groundc's (out, kh, kw, cin) back to PyTorch's (out, cin, kh, kw)
        if (t->ndim != 4) ag_fail("export: patch weight '%s' is not 4-D", ag_label(t, "?"));
        const int64_t out = t->shape[0], kh = t->shape[1], kw = t->shape[2], cin = t->shape[3];
        float *p = param_f32(t);
        v = ag_xmalloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1), "export tensor");
        gm_vit_patch_to_conv(v, p, sizeof(float), out, cin, kh, kw);
        free(p);
        add_values(x, w, e->name, 4, (int64_t[]){out, cin, kh, kw}, v, e->numel);
        x->n_done++;
    } else { // (V0, C) and (9, C) as one (V0 + 9, C) table
        const ag_tensor *a = e->added;
        const int64_t V0 = t->shape[0], C = t->shape[1];
        if (a->ndim != 2 || a->shape[0] != GM_N_ADDED || a->shape[1] != C)
            ag_fail("export: '%s' does not fit '%s'", ag_label(a, "?"), ag_label(t, "?"));
        float *b = param_f32(t), *r = param_f32(a);
        v = ag_xmalloc(sizeof(float) * (size_t)((V0 + GM_N_ADDED) * C), "export table");
        memcpy(v, b, sizeof(float) * (size_t)(V0 * C));
        memcpy(v + V0 * C, r, sizeof(float) * (size_t)(GM_N_ADDED * C));
        free(b);
        free(r);
        add_values(x, w, e->name, 2, (int64_t[]){V0 + GM_N_ADDED, C}, v, (V0 + GM_N_ADDED) * C);
        x->n_done += 2;
    }
    free(v);
}

// Writes items [a, b) to dir/file.
static void write_items(hf_export *x, const hf_items *it, int a, int b, const char *file,
                        bool groundc_names) {
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_meta(w, "format", "pt");
    if (groundc_names) ag_st_add_meta(w, "names", "groundinggpt");
    for (int i = a; i < b; i++) add_item(x, w, &it->v[i]);
    char path[PATH_MAX];
    tr_export_path(path, sizeof path, x->dir, file);
    ag_st_write(w, path);
}

static bool starts(const char *s, const char *prefix) {
    return !strncmp(s, prefix, strlen(prefix));
}

// Shards of model.safetensors: at most this many bytes each (HF's default 5 GB), so that the
// export never holds more than one shard's converted tensors. GROUNDC_EXPORT_HF_SHARD_BYTES
// overrides it (tests).
static int64_t shard_bytes(void) {
    const char *s = getenv("GROUNDC_EXPORT_HF_SHARD_BYTES");
    if (!s || !*s) return 5000000000LL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 1) ag_fail("export: GROUNDC_EXPORT_HF_SHARD_BYTES=%s: not a size", s);
    return v;
}

// model.safetensors (or its shards and model.safetensors.index.json): the LLaVA part.
static void write_llava_weights(hf_export *x) {
    const gm_groundinggpt *m = x->m;
    const gm_llama *l = m->llm;
    const gm_vit *v = m->image_vit;
    const gm_projector *p = m->projector;
    hf_items it = {0};
    char name[512];
    for (int i = 0; i < l->n_params; i++) {
        const ag_tensor *t = l->params[i];
        if (t == l->embed || t == l->lm_head) {
            bool in = t == l->embed;
            hf_item *e =
                push_item(&it, ITEM_TABLE,
                          in ? "model.language_model.embed_tokens.weight" : "lm_head.weight", t);
            e->added = in ? m->embed_added : m->lm_head_added;
            e->numel += ag_numel(e->added);
        } else {
            if (!starts(t->name, "model."))
                ag_fail("export: LLM parameter '%s' is not under model.", t->name);
            snprintf(name, sizeof name, "model.language_model.%s", t->name + strlen("model."));
            push_param(&it, name, t, NULL);
        }
    }
    for (int i = 0; i < v->n_params; i++) {
        const ag_tensor *t = v->params[i];
        if (!starts(t->name, VT))
            ag_fail("export: image encoder parameter '%s' is not under %s", t->name, VT);
        push_param(&it, t->name, t, v);
    }
    // The identity post_layernorm (see the header comment).
    for (int k = 0; k < 2; k++) {
        hf_item *e = push_item(&it, ITEM_FILL,
                               k ? VT "post_layernorm.bias" : VT "post_layernorm.weight", NULL);
        e->numel = v->cfg.width;
        e->fill = k ? 0.0f : 1.0f;
    }
    push_param(&it, MP "linear_1.weight", p->w1, NULL);
    push_param(&it, MP "linear_1.bias", p->b1, NULL);
    push_param(&it, MP "linear_2.weight", p->w2, NULL);
    push_param(&it, MP "linear_2.bias", p->b2, NULL);

    // Shards in order: a new one when the next tensor would overflow a non-empty shard.
    const int64_t limit = shard_bytes(), es = x->type == OUT_F32 ? 4 : 2;
    int *first = ag_xmalloc(sizeof(int) * (size_t)(it.n + 1), "export shards"), n_shards = 0;
    int64_t used = 0, total = 0;
    for (int i = 0; i < it.n; i++) {
        int64_t bytes = it.v[i].numel * es;
        if (i == 0 || (used > 0 && used + bytes > limit)) {
            first[n_shards++] = i;
            used = 0;
        }
        used += bytes;
        total += bytes;
    }
    first[n_shards] = it.n;
    if (n_shards == 1) {
        write_items(x, &it, 0, it.n, "model.safetensors", false);
    } else {
        cJSON *index = jok(cJSON_CreateObject());
        jnum(jobj(index, "metadata"), "total_size", (double)total);
        cJSON *map = jobj(index, "weight_map");
        char file[64];
        for (int s = 0; s < n_shards; s++) {
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            write_items(x, &it, first[s], first[s + 1], file, false);
            for (int i = first[s]; i < first[s + 1]; i++) jstr(map, it.v[i].name, file);
        }
        write_json(x->dir, "model.safetensors.index.json", index);
    }
    free(first);
    free(it.v);
}

// A branch's weights under groundc's names; the encoder's patch weight in the conv layout.
static void write_branch_weights(hf_export *x, const char *file, const gm_vit *vit,
                                 ag_tensor *const *const groups[], const int *counts,
                                 int n_groups) {
    hf_items it = {0};
    for (int g = 0; g < n_groups; g++)
        for (int i = 0; i < counts[g]; i++) push_param(&it, groups[g][i]->name, groups[g][i], vit);
    write_items(x, &it, 0, it.n, file, true);
    free(it.v);
}

// Configs ----------------------------------------------------------------------------------------

static const char *act_name(gm_vit_act a) {
    return a == GM_VIT_QUICK_GELU ? "quick_gelu" : "gelu";
}

static cJSON *text_config(const hf_export *x, cJSON *root) {
    const gm_llama_config *c = &x->m->cfg.llm;
    cJSON *t = jobj(root, "text_config");
    jstr(t, "model_type", "llama");
    jnum(t, "vocab_size", (double)(c->vocab + GM_N_ADDED));
    jnum(t, "hidden_size", (double)c->dim);
    jnum(t, "intermediate_size", (double)c->ffn);
    jnum(t, "num_hidden_layers", (double)c->n_layers);
    jnum(t, "num_attention_heads", (double)c->n_heads);
    jnum(t, "num_key_value_heads", (double)c->n_kv_heads);
    jnum(t, "head_dim", (double)(c->dim / c->n_heads));
    jstr(t, "hidden_act", "silu");
    jnum(t, "max_position_embeddings", (double)c->max_seq);
    jfloat(t, "rms_norm_eps", c->norm_eps);
    jfloat(t, "rope_theta", c->rope_theta);   // transformers 4.x
    cJSON *rope = jobj(t, "rope_parameters"); // 5.x
    jstr(rope, "rope_type", "default");
    jfloat(rope, "rope_theta", c->rope_theta);
    jbool(t, "attention_bias", false);
    jfloat(t, "attention_dropout", 0);
    jbool(t, "mlp_bias", false);
    jbool(t, "tie_word_embeddings", false);
    jfloat(t, "initializer_range", 0.02);
    jid(t, "bos_token_id", ds_tokenizer_bos_id(x->tok));
    jid(t, "eos_token_id", ds_tokenizer_eos_id(x->tok));
    jid(t, "pad_token_id", ds_tokenizer_unk_id(x->tok));
    jstr(t, "dtype", x->torch_dtype);
    return t;
}

static void vision_config(const hf_export *x, cJSON *root) {
    const gm_vit_config *c = &x->m->image_vit->cfg;
    cJSON *v = jobj(root, "vision_config");
    jstr(v, "model_type", "clip_vision_model");
    jnum(v, "hidden_size", (double)c->width);
    jnum(v, "intermediate_size", (double)c->mlp);
    jnum(v, "num_hidden_layers", (double)x->m->image_vit->n_layers_used);
    jnum(v, "num_attention_heads", (double)c->n_heads);
    jnum(v, "num_channels", (double)c->channels);
    jnum(v, "image_size", (double)c->image_h);
    jnum(v, "patch_size", (double)c->patch);
    jstr(v, "hidden_act", act_name(c->act));
    jfloat(v, "layer_norm_eps", c->norm_eps);
    jfloat(v, "attention_dropout", 0);
    jnum(v, "projection_dim", (double)c->width); // CLIPVisionModel has no projection
    jfloat(v, "initializer_range", 0.02);
    jfloat(v, "initializer_factor", 1.0);
    jstr(v, "dtype", x->torch_dtype);
}

static void write_config(const hf_export *x) {
    const gm_groundinggpt_config *c = &x->m->cfg;
    cJSON *root = jok(cJSON_CreateObject());
    const char *arch[] = {"LlavaForConditionalGeneration"};
    cJSON *a = jok(cJSON_AddArrayToObject(root, "architectures"));
    jpush(a, cJSON_CreateString(arch[0]));
    jstr(root, "model_type", "llava");
    jnum(root, "image_token_index", c->tokens.patch[GM_MOD_IMAGE]);
    jnum(root, "image_seq_length", (double)c->image_tokens);
    jstr(root, "projector_hidden_act", "gelu"); // erf GELU, as groundc's projector
    jbool(root, "multimodal_projector_bias", true);
    jnum(root, "vision_feature_layer", -1);
    jstr(root, "vision_feature_select_strategy",
         x->m->image_vit->cfg.drop_cls ? "default" : "full");
    jbool(root, "tie_word_embeddings", false);
    jstr(root, "dtype", x->torch_dtype);
    jstr(root, "torch_dtype", x->torch_dtype);
    text_config(x, root);
    vision_config(x, root);
    // What transformers ignores but a reader of the folder may want.
    cJSON *g = jobj(root, "groundc");
    jstr(g, "model", c->name);
    jnum(g, "vision_select_layer", x->m->image_vit->cfg.out_layer);
    jnum(g, "vision_layers_in_checkpoint_config", (double)x->m->image_vit->cfg.n_layers);
    jstr(g, "image_input",
         "pad to square with the CLIP mean colour (122, 116, 104), bicubic "
         "resize, CLIP mean/std; <im_start> <im_patch> x N <im_end>");
    cJSON *br = jok(cJSON_AddArrayToObject(g, "branches"));
    if (c->has[GM_MOD_VIDEO]) jpush(br, cJSON_CreateString("video_branch.json"));
    if (c->has[GM_MOD_AUDIO]) jpush(br, cJSON_CreateString("audio_branch.json"));
    write_json(x->dir, "config.json", root);

    cJSON *gen = jok(cJSON_CreateObject());
    jid(gen, "bos_token_id", ds_tokenizer_bos_id(x->tok));
    jid(gen, "eos_token_id", ds_tokenizer_eos_id(x->tok));
    jid(gen, "pad_token_id", ds_tokenizer_unk_id(x->tok));
    write_json(x->dir, "generation_config.json", gen);
}

static void write_processor(const hf_export *x) {
    const int64_t S = x->m->cfg.image_size;
    cJSON *pp = jok(cJSON_CreateObject());
    jstr(pp, "image_processor_type", "LlavaImageProcessor");
    jstr(pp, "processor_class", "LlavaProcessor");
    jbool(pp, "do_convert_rgb", true);
    jbool(pp, "do_pad", true); // expand2square with tuple(int(255 * mean))
    jbool(pp, "do_resize", true);
    cJSON *size = jobj(pp, "size");
    jnum(size, "height", (double)S);
    jnum(size, "width", (double)S);
    jnum(pp, "resample", 3); // PIL bicubic
    jbool(pp, "do_center_crop", false);
    cJSON *crop = jobj(pp, "crop_size");
    jnum(crop, "height", (double)S);
    jnum(crop, "width", (double)S);
    jbool(pp, "do_rescale", true);
    jnum(pp, "rescale_factor", 1.0 / 255.0);
    jbool(pp, "do_normalize", true);
    jnums(pp, "image_mean", clip_mean, 3);
    jnums(pp, "image_std", clip_std, 3);
    write_json(x->dir, "preprocessor_config.json", pp);

    cJSON *pc = jok(cJSON_CreateObject());
    jstr(pc, "processor_class", "LlavaProcessor");
    jstr(pc, "image_token", tok_text[0][GM_MOD_IMAGE]);
    jnum(pc, "patch_size", (double)x->m->image_vit->cfg.patch);
    jnum(pc, "num_additional_image_tokens", 1); // the CLS
    jstr(pc, "vision_feature_select_strategy", x->m->image_vit->cfg.drop_cls ? "default" : "full");
    write_json(x->dir, "processor_config.json", pc);
}

// Tokenizer --------------------------------------------------------------------------------------

// The Vicuna v0 template of data/template.h: "{system}\n\n### Human: <media>\n{msg}\n###
// Assistant: {answer}\n### Human: ...". A user turn's media go first (the placeholder moves to
// the start of its turn); the processor expands the one <im_patch> of an image to the image's
// patch tokens, video and audio spans are written out in full. No BOS, as llava-hf's templates:
// the processor adds it when it tokenizes (add_bos_token), both for a prompt rendered first and
// for apply_chat_template(tokenize=True), and a "<s>" in the text would make two.
static char *chat_template(const hf_export *x) {
    const gm_groundinggpt_config *c = &x->m->cfg;
    char media[3][256];
    for (int k = 0; k < GM_NMOD; k++) {
        media[k][0] = 0;
        if (!c->has[k]) continue;
        if (k == GM_MOD_IMAGE)
            snprintf(media[k], sizeof media[k], "'%s%s%s'", tok_text[1][k], tok_text[0][k],
                     tok_text[2][k]);
        else
            snprintf(media[k], sizeof media[k], "'%s' + '%s' * %lld + '%s'", tok_text[1][k],
                     tok_text[0][k],
                     (long long)(k == GM_MOD_VIDEO ? c->video_tokens : c->audio_tokens),
                     tok_text[2][k]);
    }
    static const char *const types[GM_NMOD] = {"image", "video", "audio"};
    char items[1024] = "";
    size_t n = 0;
    for (int k = 0; k < GM_NMOD; k++)
        if (media[k][0])
            n += (size_t)snprintf(items + n, sizeof items - n,
                                  "{%% if item['type'] == '%s' %%}{{ %s }}{%% endif %%}", types[k],
                                  media[k]);
    const char *fmt =
        "{%% set ns = namespace(system=\"%s\") %%}"
        "{%% set loop_messages = messages %%}"
        "{%% if messages and messages[0]['role'] == 'system' %%}"
        "{%% if messages[0]['content'] is string %%}{%% set ns.system = messages[0]['content'] "
        "%%}"
        "{%% else %%}{%% set ns.system = messages[0]['content'] | selectattr('type', 'equalto', "
        "'text') | map(attribute='text') | join(' ') %%}{%% endif %%}"
        "{%% set loop_messages = messages[1:] %%}{%% endif %%}"
        "{{ ns.system + '\\n\\n###' }}"
        "{%% for message in loop_messages %%}"
        "{%% if message['content'] is string %%}{%% set text = message['content'] %%}"
        "{%% set media = [] %%}"
        "{%% else %%}{%% set text = message['content'] | selectattr('type', 'equalto', 'text') | "
        "map(attribute='text') | join(' ') %%}"
        "{%% set media = message['content'] | rejectattr('type', 'equalto', 'text') | list %%}"
        "{%% endif %%}"
        "{%% if message['role'] == 'user' %%}{{ ' Human: ' }}"
        "{%% for item in media %%}%s{%% endfor %%}"
        "{%% if media %%}{{ '\\n' }}{%% endif %%}"
        "{{ (text | trim) + '\\n### Assistant:' }}"
        "{%% elif message['role'] == 'assistant' %%}{{ ' ' + (text | trim) + '\\n###' }}"
        "{%% endif %%}{%% endfor %%}";
    size_t len = strlen(fmt) + strlen(items) + strlen(DS_SYSTEM_PROMPT) + 1;
    char *s = ag_xmalloc(len, "chat template");
    snprintf(s, len, fmt, DS_SYSTEM_PROMPT, items);
    return s;
}

static cJSON *token_entry(const char *content, bool special) {
    cJSON *e = jok(cJSON_CreateObject());
    jstr(e, "content", content);
    jbool(e, "lstrip", false);
    jbool(e, "normalized", false);
    jbool(e, "rstrip", false);
    jbool(e, "single_word", false);
    if (special) jbool(e, "special", true);
    return e;
}

// "<s>" for an id of the model, NULL for -1.
static const char *piece_of(const hf_export *x, int32_t id) {
    return id >= 0 ? ds_tokenizer_id_to_piece(x->tok, id) : NULL;
}

static void add_token(cJSON *o, const char *key, const char *piece) {
    if (piece)
        jadd(o, key, token_entry(piece, false));
    else
        jnull(o, key);
}

// tokenizer.json ---------------------------------------------------------------------------------
// The same tokenizer for HF's tokenizers library (transformers' fast and v5 tokenizers,
// tokenizers.js), so that loading it needs neither sentencepiece nor protobuf. SentencePiece BPE
// as BPE over the pieces, with merges derived as transformers' SentencePiece converter does
// (every split of a piece into two pieces; ranked by the merged piece's score, then by ids),
// except that only merges SentencePiece itself makes are listed: into normal and user-defined
// pieces, from pieces it merges. The normalizer is the legacy Llama one (dummy prefix per stretch
// of text between added tokens, spaces as U+2581), plus SentencePiece's extra-whitespace removal
// where the model asks for it. Literal "<s>", "</s>" and "<unk>" in text are matched as special
// tokens by HF (SentencePiece reads them as characters); UNUSED pieces are never merged into.

typedef struct {
    int32_t left, right, merged;
    float score;
} hf_merge;

static int merge_order(const void *pa, const void *pb) {
    const hf_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->merged != b->merged) return a->merged < b->merged ? -1 : 1;
    if (a->left != b->left) return a->left < b->left ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

static bool mergeable(const ds_tokenizer *tok, int32_t id, bool as_result) {
    ds_tok_type t = ds_tokenizer_type(tok, id);
    return t == DS_TOK_NORMAL || t == DS_TOK_USER_DEFINED || (!as_result && t == DS_TOK_UNUSED);
}

static cJSON *bpe_merges(const ds_tokenizer *tok, int32_t V0) {
    size_t n = 0;
    int64_t cap = 0;
    hf_merge *m = NULL;
    char buf[1024];
    for (int32_t id = 0; id < V0; id++) {
        if (!mergeable(tok, id, true)) continue;
        const char *piece = ds_tokenizer_id_to_piece(tok, id);
        size_t len = strlen(piece);
        if (len >= sizeof buf) continue; // no piece this long is built by merging in practice
        for (size_t at = 1; at < len; at++) {
            if (((unsigned char)piece[at] & 0xC0) == 0x80) continue; // inside a character
            memcpy(buf, piece, at);
            buf[at] = 0;
            int32_t l = ds_tokenizer_piece_to_id(tok, buf);
            int32_t r = ds_tokenizer_piece_to_id(tok, piece + at);
            if (l < 0 || r < 0 || l >= V0 || r >= V0 || !mergeable(tok, l, false) ||
                !mergeable(tok, r, false))
                continue;
            m = ag_xgrow(m, &cap, (int64_t)n + 1, sizeof *m, "tokenizer.json merges");
            m[n++] = (hf_merge){l, r, id, ds_tokenizer_score(tok, id)};
        }
    }
    if (n) qsort(m, n, sizeof *m, merge_order); // m is NULL when there are none
    cJSON *list = jok(cJSON_CreateArray());
    for (size_t i = 0; i < n; i++) {
        const char *pair[2] = {ds_tokenizer_id_to_piece(tok, m[i].left),
                               ds_tokenizer_id_to_piece(tok, m[i].right)};
        jpush(list, cJSON_CreateStringArray(pair, 2));
    }
    free(m);
    return list;
}

static cJSON *json_type(const char *type) {
    cJSON *o = jok(cJSON_CreateObject());
    jstr(o, "type", type);
    return o;
}

// {"type": "Replace", "pattern": {"String"|"Regex": pattern}, "content": content}
static cJSON *replace_step(const char *kind, const char *pattern, const char *content) {
    cJSON *o = json_type("Replace");
    jstr(jobj(o, "pattern"), kind, pattern);
    jstr(o, "content", content);
    return o;
}

static cJSON *added_token_json(int32_t id, const char *content, bool special, bool normalized) {
    cJSON *e = jok(cJSON_CreateObject());
    jnum(e, "id", id);
    jstr(e, "content", content);
    jbool(e, "single_word", false);
    jbool(e, "lstrip", false);
    jbool(e, "rstrip", false);
    jbool(e, "normalized", normalized);
    jbool(e, "special", special);
    return e;
}

static void write_tokenizer_json(const hf_export *x) {
    const ds_tokenizer *tok = x->tok;
    const int32_t V0 = (int32_t)x->m->cfg.llm.vocab;
    const bool dummy = ds_tokenizer_dummy_prefix(tok);
    cJSON *root = jok(cJSON_CreateObject());
    jstr(root, "version", "1.0");
    jnull(root, "truncation");
    jnull(root, "padding");

    // Control pieces and the added tokens are matched in the raw text; user-defined pieces in
    // the normalized text, so that the text after one gets no second dummy prefix.
    cJSON *added = jok(cJSON_AddArrayToObject(root, "added_tokens"));
    for (int32_t id = 0; id < V0; id++) {
        ds_tok_type t = ds_tokenizer_type(tok, id);
        if (t == DS_TOK_CONTROL || t == DS_TOK_UNKNOWN || t == DS_TOK_USER_DEFINED)
            jpush(added, added_token_json(id, ds_tokenizer_id_to_piece(tok, id),
                                          t != DS_TOK_USER_DEFINED, t == DS_TOK_USER_DEFINED));
    }
    for (int r = 0; r < GM_N_ADDED; r++)
        jpush(added, added_token_json(V0 + r, x->text[r], true, false));

    cJSON *norm = json_type("Sequence");
    cJSON *steps = jok(cJSON_AddArrayToObject(norm, "normalizers"));
    if (ds_tokenizer_removes_extra_whitespace(tok)) {
        jpush(steps, replace_step("Regex", "\\A +", ""));
        jpush(steps, replace_step("Regex", " {2,}", " "));
    }
    if (dummy) {
        cJSON *pre = json_type("Prepend");
        jstr(pre, "prepend", "\u2581");
        jpush(steps, pre);
    }
    jpush(steps, replace_step("String", " ", "\u2581"));
    if (ds_tokenizer_removes_extra_whitespace(tok))
        jpush(steps, replace_step("Regex", "\u2581+\\z", ""));
    jadd(root, "normalizer", norm);
    jnull(root, "pre_tokenizer");

    int32_t bos = ds_tokenizer_bos_id(tok);
    if (bos >= 0) { // "<s> $A" as add_bos_token says; pairs "<s> $A <s> $B" as Llama's
        const char *b = ds_tokenizer_id_to_piece(tok, bos);
        cJSON *post = json_type("TemplateProcessing");
        const char *forms[2] = {"single", "pair"};
        for (int f = 0; f < 2; f++) {
            cJSON *seq = jok(cJSON_AddArrayToObject(post, forms[f]));
            for (int part = 0; part <= f; part++) {
                cJSON *sp = jok(cJSON_CreateObject()), *sq = jok(cJSON_CreateObject());
                cJSON *spi = jobj(sp, "SpecialToken"), *sqi = jobj(sq, "Sequence");
                jstr(spi, "id", b);
                jnum(spi, "type_id", part);
                jstr(sqi, "id", part ? "B" : "A");
                jnum(sqi, "type_id", part);
                jpush(seq, sp);
                jpush(seq, sq);
            }
        }
        cJSON *st = jobj(jobj(post, "special_tokens"), b);
        jstr(st, "id", b);
        cJSON *ids = jok(cJSON_AddArrayToObject(st, "ids"));
        jpush(ids, cJSON_CreateNumber(bos));
        cJSON *toks = jok(cJSON_AddArrayToObject(st, "tokens"));
        jpush(toks, cJSON_CreateString(b));
        jadd(root, "post_processor", post);
    } else {
        jnull(root, "post_processor");
    }

    cJSON *dec = json_type("Sequence");
    cJSON *dsteps = jok(cJSON_AddArrayToObject(dec, "decoders"));
    jpush(dsteps, replace_step("String", "\u2581", " "));
    jpush(dsteps, json_type("ByteFallback"));
    jpush(dsteps, json_type("Fuse"));
    if (dummy) {
        cJSON *strip = json_type("Strip");
        jstr(strip, "content", " ");
        jnum(strip, "start", 1);
        jnum(strip, "stop", 0);
        jpush(dsteps, strip);
    }
    jadd(root, "decoder", dec);

    cJSON *model = json_type("BPE");
    jnull(model, "dropout");
    int32_t unk = ds_tokenizer_unk_id(tok);
    jstrn(model, "unk_token", unk >= 0 ? ds_tokenizer_id_to_piece(tok, unk) : NULL);
    jnull(model, "continuing_subword_prefix");
    jnull(model, "end_of_word_suffix");
    jbool(model, "fuse_unk", true); // SentencePiece merges runs of unknown pieces too
    jbool(model, "byte_fallback", ds_tokenizer_byte_fallback(tok));
    jbool(model, "ignore_merges", false);
    cJSON *vocab = jobj(model, "vocab");
    for (int32_t id = 0; id < V0; id++) jnum(vocab, ds_tokenizer_id_to_piece(tok, id), id);
    jadd(model, "merges", bpe_merges(tok, V0));
    jadd(root, "model", model);
    write_json(x->dir, "tokenizer.json", root);
}

static void write_tokenizer(const hf_export *x, const char *model_path) {
    const ds_tokenizer *tok = x->tok;
    const int32_t V0 = (int32_t)x->m->cfg.llm.vocab;
    size_t n;
    char *bytes = ds_read_file(model_path, &n);
    tr_export_write_file(x->dir, "tokenizer.model", bytes, n);
    free(bytes);

    const char *bos = piece_of(x, ds_tokenizer_bos_id(tok)),
               *eos = piece_of(x, ds_tokenizer_eos_id(tok)),
               *unk = piece_of(x, ds_tokenizer_unk_id(tok));
    char *tmpl = chat_template(x);
    cJSON *tc = jok(cJSON_CreateObject());
    jbool(tc, "add_bos_token", bos != NULL);
    jbool(tc, "add_eos_token", false);
    cJSON *dec = jobj(tc, "added_tokens_decoder");
    char key[32];
    for (int32_t id = 0; id < V0; id++) {
        ds_tok_type ty = ds_tokenizer_type(tok, id);
        if (ty != DS_TOK_CONTROL && ty != DS_TOK_UNKNOWN) continue;
        snprintf(key, sizeof key, "%d", (int)id);
        jadd(dec, key, token_entry(ds_tokenizer_id_to_piece(tok, id), true));
    }
    for (int r = 0; r < GM_N_ADDED; r++) {
        snprintf(key, sizeof key, "%d", (int)(V0 + r));
        jadd(dec, key, token_entry(x->text[r], true));
    }
    cJSON *extra = jok(cJSON_AddArrayToObject(tc, "additional_special_tokens"));
    for (int r = 0; r < GM_N_ADDED; r++) jpush(extra, cJSON_CreateString(x->text[r]));
    jstrn(tc, "bos_token", bos);
    jstrn(tc, "eos_token", eos);
    jstrn(tc, "unk_token", unk);
    jstrn(tc, "pad_token", unk); // GroundingGPT pads with <unk>
    jstr(tc, "chat_template", tmpl);
    jbool(tc, "clean_up_tokenization_spaces", false);
    // Every stretch of text between added tokens gets its own dummy prefix, as groundc's
    // tokenizer (data/tokenizer.h) and the transformers versions GroundingGPT used.
    jbool(tc, "legacy", true);
    jnum(tc, "model_max_length", (double)x->m->cfg.llm.max_seq);
    jstr(tc, "padding_side", "left");
    jstr(tc, "processor_class", "LlavaProcessor");
    jobj(tc, "sp_model_kwargs");
    jbool(tc, "spaces_between_special_tokens", false);
    jstr(tc, "tokenizer_class", "LlamaTokenizer");
    jbool(tc, "use_default_system_prompt", false);
    write_json(x->dir, "tokenizer_config.json", tc);

    cJSON *sm = jok(cJSON_CreateObject());
    cJSON *sx = jok(cJSON_AddArrayToObject(sm, "additional_special_tokens"));
    for (int r = 0; r < GM_N_ADDED; r++) jpush(sx, token_entry(x->text[r], false));
    add_token(sm, "bos_token", bos);
    add_token(sm, "eos_token", eos);
    add_token(sm, "unk_token", unk);
    add_token(sm, "pad_token", unk);
    write_json(x->dir, "special_tokens_map.json", sm);

    cJSON *ct = jok(cJSON_CreateObject());
    jstr(ct, "chat_template", tmpl);
    write_json(x->dir, "chat_template.json", ct);
    free(tmpl);
    write_tokenizer_json(x);
}

// Branches ---------------------------------------------------------------------------------------

static void vit_json(cJSON *o, const gm_vit *v, const char *type) {
    const gm_vit_config *c = &v->cfg;
    jstr(o, "type", type);
    jnum(o, "image_height", (double)c->image_h);
    jnum(o, "image_width", (double)c->image_w);
    jnum(o, "num_channels", (double)c->channels);
    jnum(o, "patch_size", (double)c->patch);
    jnum(o, "patch_stride", (double)c->stride);
    jnum(o, "hidden_size", (double)c->width);
    jnum(o, "num_hidden_layers", (double)v->n_layers_used);
    jnum(o, "num_attention_heads", (double)c->n_heads);
    jnum(o, "intermediate_size", (double)c->mlp);
    jnum(o, "layer_norm_eps", c->norm_eps);
    jstr(o, "hidden_act", act_name(c->act));
    jbool(o, "patch_bias", c->patch_bias);
    if (c->patch_norm) jnum(o, "patch_norm_eps", c->patch_norm_eps);
    jbool(o, "pre_norm", c->pre_norm);
    jbool(o, "bias_kv", c->bias_kv);
    if (gm_vit_has_head(c)) {
        jbool(o, "head_norm", c->head_norm);
        jnum(o, "head_dim", (double)c->head_dim);
        jnum(o, "head_scale", c->head_scale);
        jstr(o, "output", "pooled CLS: LayerNorm, Linear, L2-normalised, times head_scale");
    } else {
        jnum(o, "output_hidden_state", gm_vit_out_index(c));
        jbool(o, "output_drops_cls", c->drop_cls);
    }
}

static void qformer_json(cJSON *o, const gm_qformer_config *q, int64_t queries) {
    jnum(o, "hidden_size", (double)q->hidden);
    jnum(o, "num_hidden_layers", (double)q->n_layers);
    jnum(o, "num_attention_heads", (double)q->n_heads);
    jnum(o, "intermediate_size", (double)q->intermediate);
    jnum(o, "encoder_hidden_size", (double)q->encoder_width);
    jnum(o, "cross_attention_frequency", (double)q->cross_attention_frequency);
    jnum(o, "layer_norm_eps", q->eps);
    jnum(o, "num_query_tokens", (double)queries);
}

static void tokens_json(const hf_export *x, cJSON *o, gm_modality k) {
    const gm_splice_tokens *t = &x->m->cfg.tokens;
    const int32_t ids[3] = {t->patch[k], t->start[k], t->end[k]};
    static const char *const keys[3] = {"patch", "start", "end"};
    cJSON *tk = jobj(o, "tokens");
    for (int i = 0; i < 3; i++) {
        cJSON *e = jobj(tk, keys[i]);
        jstr(e, "content", tok_text[i][k]);
        jnum(e, "id", ids[i]);
    }
}

// The part of a branch's JSON that every branch has, after writing its weights
// (BRANCH_branch.safetensors): the weights' names and type, its tokens, and an empty "input"
// object returned in *in.
static cJSON *branch_begin(hf_export *x, const char *branch, const char *origin, gm_modality k,
                           int64_t tokens, const gm_vit *vit, ag_tensor *const *const groups[],
                           const int *counts, int n_groups, cJSON **in) {
    char weights[64], names[160];
    snprintf(weights, sizeof weights, "%s_branch.safetensors", branch);
    snprintf(names, sizeof names,
             "GroundingGPT checkpoint names (%s); conv weights in PyTorch's layout (out, in, kh, "
             "kw)",
             origin);
    write_branch_weights(x, weights, vit, groups, counts, n_groups);

    cJSON *r = jok(cJSON_CreateObject());
    jstr(r, "branch", branch);
    jstr(r, "weights", weights);
    jstr(r, "names", names);
    jstr(r, "dtype", x->torch_dtype);
    tokens_json(x, r, k);
    jnum(r, "tokens_per_item", (double)tokens);
    *in = jobj(r, "input");
    return r;
}

// A branch's last Q-Former (with its largest item count under max_key), the projection to the
// LLM, the pipeline; then BRANCH_branch.json.
static void branch_end(hf_export *x, cJSON *r, const char *branch, const char *qformer_key,
                       const gm_qformer_config *q, int64_t queries, const char *max_key,
                       int64_t max, int64_t llm_dim, const char *pipeline) {
    cJSON *qo = jobj(r, qformer_key);
    qformer_json(qo, q, queries);
    jnum(qo, max_key, (double)max);
    cJSON *pr = jobj(r, "projection");
    jnum(pr, "in_features", (double)q->hidden);
    jnum(pr, "out_features", (double)llm_dim);
    jstr(r, "pipeline", pipeline);
    char file[64];
    snprintf(file, sizeof file, "%s_branch.json", branch);
    write_json(x->dir, file, r);
}

static void write_video_branch(hf_export *x) {
    const gm_groundinggpt *m = x->m;
    const gm_groundinggpt_config *c = &m->cfg;
    ag_tensor *const *const groups[] = {m->video_vit->params, m->frame_qformer->params,
                                        m->video_adapter->params};
    const int counts[] = {m->video_vit->n_params, m->frame_qformer->n_params,
                          m->video_adapter->n_params};
    cJSON *in;
    cJSON *r = branch_begin(x, "video", "Video-LLaMA / LAVIS", GM_MOD_VIDEO, c->video_tokens,
                            m->video_vit, groups, counts, 3, &in);
    jnum(in, "frames", (double)c->video_frames);
    jnum(in, "frame_size", (double)c->video_size);
    jnums(in, "pixel_mean", clip_mean, 3);
    jnums(in, "pixel_std", clip_std, 3);
    vit_json(jobj(r, "encoder"), m->video_vit, "eva_vit");
    cJSON *fq = jobj(r, "frame_qformer");
    qformer_json(fq, &c->frame_qformer.qformer, c->frame_qformer.n_queries);
    jnum(fq, "ln_vision_eps", c->frame_qformer.ln_eps);
    branch_end(x, r, "video", "video_qformer", &c->video_adapter.qformer,
               c->video_adapter.n_queries, "max_frames", c->video_adapter.max_frames,
               c->video_adapter.llm_dim,
               "frames (F, S, S, 3) -> CLIP mean/std -> EVA ViT hidden states (CLS kept) -> "
               "ln_vision -> frame Q-Former with query_tokens -> + "
               "video_frame_position_embedding[f] -> video Q-Former with video_query_tokens over "
               "the F x Qf frame queries -> llama_proj -> the <vi_patch> embeddings");
}

static void write_audio_branch(hf_export *x) {
    const gm_groundinggpt *m = x->m;
    const gm_groundinggpt_config *c = &m->cfg;
    ag_tensor *const *const groups[] = {m->audio_vit->params, m->audio_adapter->params};
    const int counts[] = {m->audio_vit->n_params, m->audio_adapter->n_params};
    cJSON *in;
    cJSON *r = branch_begin(x, "audio", "ImageBind / LAVIS", GM_MOD_AUDIO, c->audio_tokens,
                            m->audio_vit, groups, counts, 2, &in);
    jnum(in, "clips", (double)c->audio_clips);
    jnum(in, "frames", (double)c->audio_frames);
    jnum(in, "mels", (double)c->audio_mels);
    jnum(in, "sample_rate", DS_AUDIO_RATE);
    jnum(in, "fbank_mean", DS_AUDIO_MEAN);
    jnum(in, "fbank_std", DS_AUDIO_STD);
    jstr(in, "fbank",
         "Kaldi fbank per 2 s clip (25 ms window, 10 ms shift), normalised "
         "(x - fbank_mean) / fbank_std; each clip enters the encoder as (1, mels, "
         "frames)");
    vit_json(jobj(r, "encoder"), m->audio_vit, "imagebind_audio");
    branch_end(x, r, "audio", "audio_qformer", &c->audio_adapter.qformer,
               c->audio_adapter.n_queries, "max_clips", c->audio_adapter.max_clips,
               c->audio_adapter.llm_dim,
               "clips -> ImageBind audio encoder (pooled, L2-normalised x head_scale) -> + "
               "audio_position_embedding[k] -> audio Q-Former with audio_query_tokens -> "
               "audio_llama_proj -> the <so_patch> embeddings");
}

static void write_readme(const hf_export *x, const char *ckpt) {
    const gm_groundinggpt_config *c = &x->m->cfg;
    char text[4096];
    snprintf(
        text, sizeof text,
        "# GroundingGPT model exported by groundc\n\n"
        "From `%s` (model `%s`), tensors as %s.\n\n"
        "- `model.safetensors`, `config.json`: `LlavaForConditionalGeneration` (transformers "
        ">= 4.52): Llama decoder, CLIP vision tower, mlp2x_gelu projector. The vocabulary is "
        "%lld pieces + 9 added tokens (ids %lld..%lld).\n"
        "- The vision tower holds the blocks up to the selected layer only (select_layer %d), "
        "so `vision_feature_layer` is -1; `post_layernorm` is the identity (unused by LLaVA).\n"
        "- Images: pad to a square of the CLIP mean colour (122, 116, 104), resize bicubic to "
        "%lld, CLIP mean/std (`LlavaImageProcessor` with `do_pad`; PIL's bicubic resize gives "
        "groundc's pixels exactly, torchvision's differs slightly). An image is written "
        "`<im_start><im_patch><im_end>`; the processor expands `<im_patch>` to %lld tokens.\n"
        "- Prompt: the Vicuna v0 template (`chat_template`); generation stops at `###` "
        "(pass `stop_strings=[\"###\"]` and the tokenizer to `generate`). groundc tokenizes "
        "each template piece on its own, so later turns of a multi-turn chat may split "
        "differently from one pass of the tokenizer over the whole text.\n"
        "- Video and audio: transformers has no module for them; `video_branch.*` and "
        "`audio_branch.*` hold their weights (groundc names) and shapes.\n",
        ckpt, c->name, x->torch_dtype, (long long)c->llm.vocab, (long long)c->llm.vocab,
        (long long)(c->llm.vocab + GM_N_ADDED - 1), c->image_vit.out_layer,
        (long long)c->image_size, (long long)c->image_tokens);
    tr_export_write_file(x->dir, "README.md", text, strlen(text));
}

// Checks
// -------------------------------------------------------------------------------------------

// Everything that could make the export wrong fails here, before the first file is written.
static void check_exportable(hf_export *x) {
    const gm_groundinggpt *m = x->m;
    const gm_groundinggpt_config *c = &m->cfg;
    if (!c->has[GM_MOD_IMAGE] || !m->image_vit || !m->projector)
        ag_fail("export: --format hf writes a LLaVA model, which needs the image branch; model "
                "'%s' has none",
                c->name);
    const gm_vit_config *v = &m->image_vit->cfg;
    const char *why = v->family != GM_VIT_CLIP                 ? "it is not a CLIP tower"
                      : v->image_h != v->image_w               ? "its images are not square"
                      : v->channels != 3                       ? "it does not take RGB"
                      : v->stride != v->patch                  ? "its patches overlap"
                      : v->patch_bias || v->patch_norm         ? "its patch embedding has extras"
                      : !v->pre_norm                           ? "it has no pre-LN"
                      : !v->q_bias || !v->k_bias || !v->v_bias ? "it lacks q/k/v biases"
                      : v->bias_kv                             ? "it has bias_kv"
                      : gm_vit_has_head(v)                     ? "it has a pooled head"
                                                               : NULL;
    if (why)
        ag_fail("export: the image encoder of model '%s' cannot be a CLIPVisionModel: %s", c->name,
                why);
    const int32_t V0 = (int32_t)c->llm.vocab;
    const int32_t have = ds_tokenizer_model_vocab_size(x->tok);
    if (have != V0)
        ag_fail("export: tokenizer %s has %d pieces, but the model's vocabulary (llm.vocab) is "
                "%d: not the tokenizer this checkpoint was trained with",
                ds_tokenizer_path(x->tok), (int)have, (int)V0);
    // Added token text by id (cfg.tokens is a permutation of V0 .. V0 + 8).
    for (int r = 0; r < GM_N_ADDED; r++) x->text[r] = NULL;
    const int32_t *ids[3] = {c->tokens.patch, c->tokens.start, c->tokens.end};
    for (int k = 0; k < GM_NMOD; k++)
        for (int i = 0; i < 3; i++) {
            int32_t r = ids[i][k] - V0;
            if (r < 0 || r >= GM_N_ADDED || x->text[r])
                ag_fail("export: model '%s': added token %s has id %d, not a free id in %d..%d",
                        c->name, tok_text[i][k], (int)ids[i][k], (int)V0,
                        (int)(V0 + GM_N_ADDED - 1));
            x->text[r] = tok_text[i][k];
        }
    // A tokenizer that already carries added tokens must carry these, at these ids.
    const int32_t all = ds_tokenizer_vocab_size(x->tok);
    if (all != V0 && all != V0 + GM_N_ADDED)
        ag_fail("export: tokenizer %s has %d added tokens, expected 0 or %d",
                ds_tokenizer_path(x->tok), (int)(all - V0), GM_N_ADDED);
    for (int r = 0; r < GM_N_ADDED; r++) {
        if (ds_tokenizer_piece_to_id(x->tok, x->text[r]) == V0 + r) continue;
        if (all != V0 || ds_tokenizer_piece_to_id(x->tok, x->text[r]) >= 0)
            ag_fail("export: tokenizer %s: %s is not id %d as the model has it",
                    ds_tokenizer_path(x->tok), x->text[r], (int)(V0 + r));
    }
}

void tr_export_hf(const tr_export_job *job, const char *dir) {
    hf_export x = {.m = job->model, .tok = job->tok, .dir = dir};
    if (!strcmp(job->dtype, "f32"))
        x.type = OUT_F32, x.st_dtype = "F32", x.torch_dtype = "float32";
    else if (!strcmp(job->dtype, "f16"))
        x.type = OUT_F16, x.st_dtype = "F16", x.torch_dtype = "float16";
    else if (!strcmp(job->dtype, "bf16"))
        x.type = OUT_BF16, x.st_dtype = "BF16", x.torch_dtype = "bfloat16";
    else
        ag_fail("export: --dtype %s: hf takes f32, f16 or bf16", job->dtype);
    check_exportable(&x);

    write_llava_weights(&x);
    if (x.m->cfg.has[GM_MOD_VIDEO]) write_video_branch(&x);
    if (x.m->cfg.has[GM_MOD_AUDIO]) write_audio_branch(&x);
    if (x.n_done != x.m->params->n)
        ag_fail("export: wrote %d of the model's %d parameters", x.n_done, x.m->params->n);
    write_config(&x);
    write_processor(&x);
    write_tokenizer(&x, job->tokenizer_path);
    write_readme(&x, job->ckpt_dir);
}
