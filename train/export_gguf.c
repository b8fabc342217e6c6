// export_gguf.c: model.gguf and mmproj.gguf for llama.cpp (see export.h), the layouts that
// llama.cpp's convert_hf_to_gguf.py makes for a LLaVA model:
//
//   model.gguf   architecture "llama": token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v,
//                attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output. The
//                vocabulary is V0 + 9: the added rows are appended to token_embd and output.
//                attn_q / attn_k rows are permuted per head (row 2i <- i, 2i+1 <- i + D/2): ggml's
//                RoPE rotates adjacent pairs, groundc's (HF) rotates the two halves.
//                Tokenizer "llama" (SentencePiece): pieces, scores, types, the 9 added tokens as
//                USER_DEFINED (llama.cpp always splits those out of text, as HF does with added
//                tokens), special ids, and the Vicuna v0 chat template of data/template.h.
//   mmproj.gguf  architecture "clip", projector "mlp" (Linear-GELU-Linear as mm.0 / mm.2): the
//                CLIP ViT blocks up to the feature layer, with clip.vision.feature_layer naming
//                that hidden state explicitly (llama.cpp's default is "second to last of the
//                blocks present", which differs between converters); no post_ln (LLaVA never
//                uses it and llama.cpp would apply it). The patch weight goes back to the conv
//                layout (out, in, kh, kw). Class and position embeddings keep CLIP's order
//                (position row 0 is the CLS token's), as llama.cpp's converters write them;
//                llama.cpp builds whose llava graph appends the CLS token after the patches
//                (issue 25814) compute other features from them, and no weight layout can
//                make such a build drop the right row (the README says so).
//
// 2-D weights take the chosen type (Q8_0 where rows split into blocks of 32, else F16); norms,
// biases, class and position embeddings stay F32; the patch conv is F16 for f16 and q8_0 and
// F32 otherwise (ggml's im2col has no bf16 or q8_0 kernel). The video and audio branches have
// no llama.cpp counterpart and are not exported (a log line and the README say so).
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/template.h"
#include "train/export.h"
#include "train/gguf.h"

// ggml's llama_ftype numbers for general.file_type.
enum { FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q8_0 = 7, FTYPE_BF16 = 32 };

// Vicuna v0 (data/template.h): "{system}\n\n### Human: {msg}\n### Assistant: {answer}\n### ..."
// as a Jinja chat template.
static const char chat_template[] =
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = \"" DS_SYSTEM_PROMPT "\" -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- system + '\\n\\n###' -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- ' Human: ' + message['content'] + '\\n###' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' Assistant: ' + message['content'] + '\\n###' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' Assistant:' -}}{%- endif -%}";

// Where a tensor's values come from ----------------------------------------------------------

typedef enum {
    SRC_PLAIN, // a parameter as it is
    SRC_CAT,   // rows of a, then rows of b
    SRC_ROPE,  // a (heads * D, C) with the rows of each head interleaved (see the top)
    SRC_CONV,  // a patch weight (C, kh, kw, cin) in the conv layout (C, cin, kh, kw)
} src_kind;

typedef struct src {
    src_kind kind;
    const ag_tensor *a, *b;
    int64_t heads;
    struct src *next; // all sources, freed after writing
} src;

// A host tensor of f32 or bf16 as f32 values.
static void read_f32(const ag_tensor *t, float *dst) {
    if (t->device != AG_CPU || !ag_is_contiguous(t))
        ag_fail("export: %s is not a contiguous host tensor", t->name ? t->name : "tensor");
    int64_t n = ag_numel(t);
    if (t->dtype == AG_F32) {
        memcpy(dst, t->data, sizeof(float) * (size_t)n);
    } else if (t->dtype == AG_BF16) {
        const uint16_t *s = t->data;
        for (int64_t i = 0; i < n; i++) dst[i] = ag_bf16_to_f32(s[i]);
    } else {
        ag_fail("export: %s has dtype %s (f32 or bf16 expected)", t->name ? t->name : "tensor",
                ag_dtype_name(t->dtype));
    }
}

static void fill(const void *arg, float *dst) {
    const src *s = arg;
    switch (s->kind) {
    case SRC_PLAIN:
        read_f32(s->a, dst);
        break;
    case SRC_CAT:
        read_f32(s->a, dst);
        read_f32(s->b, dst + ag_numel(s->a));
        break;
    case SRC_ROPE: {
        const int64_t rows = s->a->shape[0], C = s->a->shape[1], D = rows / s->heads;
        float *w = ag_xmalloc(sizeof(float) * (size_t)(rows * C), "export rope permute");
        read_f32(s->a, w);
        for (int64_t h = 0; h < s->heads; h++)
            for (int64_t i = 0; i < D / 2; i++)
                for (int64_t j = 0; j < 2; j++)
                    memcpy(dst + (h * D + 2 * i + j) * C, w + (h * D + j * D / 2 + i) * C,
                           sizeof(float) * (size_t)C);
        free(w);
        break;
    }
    case SRC_CONV: {
        const int64_t *sh = s->a->shape; // (C, kh, kw, cin)
        float *w = ag_xmalloc(sizeof(float) * (size_t)ag_numel(s->a), "export conv weight");
        read_f32(s->a, w);
        gm_vit_patch_to_conv(dst, w, sizeof(float), sh[0], sh[3], sh[1], sh[2]);
        free(w);
        break;
    }
    }
}

// File assembly -----------------------------------------------------------------------------

typedef enum { ROLE_WEIGHT, ROLE_F32, ROLE_CONV } role;

typedef struct {
    tr_gguf *g;
    src *srcs;
    tr_gguf_type wtype; // for 2-D weights
    tr_gguf_type conv;  // for the patch conv
    int n_f16_fallback; // q8_0 weights whose rows do not split into blocks of 32
} builder;

static void add(builder *b, const char *name, role r, src_kind kind, const ag_tensor *a,
                const ag_tensor *a2, int64_t heads) {
    if (!a) ag_fail("export: %s: the model has no tensor for it", name);
    src *s = ag_xcalloc(1, sizeof *s, "export tensor source");
    *s = (src){kind, a, a2, heads, b->srcs};
    b->srcs = s;
    int64_t ne[4];
    int nd = a->ndim;
    for (int d = 0; d < nd; d++) ne[d] = a->shape[nd - 1 - d]; // ggml order: contiguous first
    if (kind == SRC_CAT) {
        if (a2->ndim != 2 || a2->shape[1] != a->shape[1])
            ag_fail("export: %s: %s and %s do not stack", name, a->name, a2->name);
        ne[1] += a2->shape[0];
    } else if (kind == SRC_ROPE && (a->ndim != 2 || a->shape[0] % (2 * heads)))
        ag_fail("export: %s: %lld rows do not split into %lld heads of even size", name,
                (long long)a->shape[0], (long long)heads);
    if (kind == SRC_CONV) { // (C, kh, kw, cin) -> conv (C, cin, kh, kw): ne {kw, kh, cin, C}
        ne[0] = a->shape[2], ne[1] = a->shape[1], ne[2] = a->shape[3], ne[3] = a->shape[0];
    }
    tr_gguf_type t = TR_GGUF_F32;
    if (r == ROLE_CONV) t = b->conv;
    if (r == ROLE_WEIGHT) {
        t = b->wtype;
        if (t == TR_GGUF_Q8_0 && ne[0] % TR_GGUF_QK8_0) t = TR_GGUF_F16, b->n_f16_fallback++;
    }
    tr_gguf_add_tensor(b->g, name, nd, ne, t, fill, s);
}

// One tensor of a transformer block: its name after "PREFIX.N.", the layer struct's field
// that holds it, and for SRC_ROPE which head count splits it.
typedef enum { NO_HEADS, Q_HEADS, KV_HEADS } heads_of;
typedef struct {
    const char *suffix;
    role r;
    src_kind kind;
    size_t field;   // offsetof the ag_tensor * in the layer struct
    heads_of heads; // SRC_ROPE: the head count it is split into
    bool optional;  // left out where the model has none
} block_tensor;
#define NB(t) ((int)(sizeof t / sizeof *t))

// The tensors of block l (layer points at its gm_*_layer).
static void add_block(builder *b, const char *prefix, int64_t l, const void *layer,
                      const block_tensor *t, int n, int64_t q_heads, int64_t kv_heads) {
    const int64_t heads[] = {[NO_HEADS] = 0, [Q_HEADS] = q_heads, [KV_HEADS] = kv_heads};
    for (int i = 0; i < n; i++) {
        const ag_tensor *a = *(ag_tensor *const *)((const char *)layer + t[i].field);
        if (!a && t[i].optional) continue;
        char name[64];
        snprintf(name, sizeof name, "%s.%lld.%s", prefix, (long long)l, t[i].suffix);
        add(b, name, t[i].r, t[i].kind, a, NULL, heads[t[i].heads]);
    }
}

// Writes dir/file; returns how many q8_0 weights fell back to f16.
static int finish(builder *b, const char *dir, const char *file) {
    char path[PATH_MAX];
    tr_export_path(path, sizeof path, dir, file);
    tr_gguf_write(b->g, path);
    tr_gguf_free(b->g);
    while (b->srcs) {
        src *n = b->srcs->next;
        free(b->srcs);
        b->srcs = n;
    }
    return b->n_f16_fallback;
}

static void note_fallback(const char *file, int fallback) {
    if (fallback)
        printf("export: %s: %d weights with rows not a multiple of 32 are f16\n", file, fallback);
}

// The types of a --dtype.
static void types_of(const char *dtype, tr_gguf_type *w, tr_gguf_type *conv, uint32_t *ftype) {
    if (!strcmp(dtype, "f32"))
        *w = TR_GGUF_F32, *conv = TR_GGUF_F32, *ftype = FTYPE_F32;
    else if (!strcmp(dtype, "f16"))
        *w = TR_GGUF_F16, *conv = TR_GGUF_F16, *ftype = FTYPE_F16;
    else if (!strcmp(dtype, "bf16"))
        *w = TR_GGUF_BF16, *conv = TR_GGUF_F32, *ftype = FTYPE_BF16;
    else if (!strcmp(dtype, "q8_0"))
        *w = TR_GGUF_Q8_0, *conv = TR_GGUF_F16, *ftype = FTYPE_Q8_0;
    else
        ag_fail("export: --dtype %s: expected f32, f16, bf16 or q8_0", dtype);
}

static void general(builder *b, const tr_export_job *job, const char *arch, uint32_t ftype,
                    const char *what) {
    char name[160];
    snprintf(name, sizeof name, "GroundingGPT %s%s", job->model->cfg.name, what);
    tr_gguf_kv_str(b->g, "general.architecture", arch);
    tr_gguf_kv_str(b->g, "general.name", name);
    tr_gguf_kv_str(b->g, "general.description", "exported by groundc from a training checkpoint");
    tr_gguf_kv_u32(b->g, "general.file_type", ftype);
    if (ftype == FTYPE_Q8_0) tr_gguf_kv_u32(b->g, "general.quantization_version", 2);
}

// model.gguf -------------------------------------------------------------------------------

// The text of each added id V0 .. V0 + 8, from the model's token ids.
static void added_names(const gm_groundinggpt_config *cfg, const char *names[GM_N_ADDED]) {
    static const char *const text[GM_NMOD][3] = {{"<im_patch>", "<im_start>", "<im_end>"},
                                                 {"<vi_patch>", "<vi_start>", "<vi_end>"},
                                                 {"<so_patch>", "<so_start>", "<so_end>"}};
    const int64_t V0 = cfg->llm.vocab;
    for (int k = 0; k < GM_N_ADDED; k++) names[k] = NULL;
    for (int m = 0; m < GM_NMOD; m++) {
        const int32_t ids[3] = {cfg->tokens.patch[m], cfg->tokens.start[m], cfg->tokens.end[m]};
        for (int r = 0; r < 3; r++) {
            int64_t k = ids[r] - V0;
            if (k < 0 || k >= GM_N_ADDED || names[k])
                ag_fail("export: the model's %s token id %d is not one of %lld..%lld", text[m][r],
                        ids[r], (long long)V0, (long long)V0 + GM_N_ADDED - 1);
            names[k] = text[m][r];
        }
    }
}

// blk.N.* of model.gguf.
#define LL(f) offsetof(gm_llama_layer, f)
static const block_tensor llama_block[] = {
    {"attn_norm.weight", ROLE_F32, SRC_PLAIN, LL(attn_norm), NO_HEADS, false},
    {"attn_q.weight", ROLE_WEIGHT, SRC_ROPE, LL(wq), Q_HEADS, false},
    {"attn_k.weight", ROLE_WEIGHT, SRC_ROPE, LL(wk), KV_HEADS, false},
    {"attn_v.weight", ROLE_WEIGHT, SRC_PLAIN, LL(wv), NO_HEADS, false},
    {"attn_output.weight", ROLE_WEIGHT, SRC_PLAIN, LL(wo), NO_HEADS, false},
    {"ffn_norm.weight", ROLE_F32, SRC_PLAIN, LL(ffn_norm), NO_HEADS, false},
    {"ffn_gate.weight", ROLE_WEIGHT, SRC_PLAIN, LL(w_gate), NO_HEADS, false},
    {"ffn_up.weight", ROLE_WEIGHT, SRC_PLAIN, LL(w_up), NO_HEADS, false},
    {"ffn_down.weight", ROLE_WEIGHT, SRC_PLAIN, LL(w_down), NO_HEADS, false},
};
#undef LL

static void write_model(const tr_export_job *job, const char *dir, tr_gguf_type wtype,
                        uint32_t ftype) {
    const gm_groundinggpt *m = job->model;
    const gm_llama *llm = m->llm;
    const gm_llama_config *c = &llm->cfg;
    const ds_tokenizer *tok = job->tok;
    const int64_t V0 = c->vocab, V = V0 + GM_N_ADDED, D = c->dim / c->n_heads;
    const int32_t n_model = ds_tokenizer_model_vocab_size(tok);
    if (n_model != V0)
        ag_fail("export: %s has %d pieces but the checkpoint's vocabulary is %lld (another "
                "tokenizer?)",
                job->tokenizer_path, n_model, (long long)V0);

    const char *names[GM_N_ADDED];
    added_names(&m->cfg, names);
    const char **tokens = ag_xmalloc(sizeof *tokens * (size_t)V, "export vocabulary");
    float *scores = ag_xmalloc(sizeof *scores * (size_t)V, "export vocabulary");
    int32_t *types = ag_xmalloc(sizeof *types * (size_t)V, "export vocabulary");
    for (int32_t id = 0; id < V; id++) {
        if (id < V0) {
            tokens[id] = ds_tokenizer_id_to_piece(tok, id);
            scores[id] = ds_tokenizer_score(tok, id);
            types[id] = (int32_t)ds_tokenizer_type(tok, id); // SentencePiece's numbering = GGUF's
            if (types[id] < DS_TOK_NORMAL || types[id] > DS_TOK_BYTE)
                ag_fail("export: %s: piece %d has type %d", job->tokenizer_path, id, types[id]);
        } else {
            tokens[id] = names[id - V0];
            scores[id] = -1000.0f; // as convert_hf_to_gguf.py scores added tokens
            types[id] = DS_TOK_USER_DEFINED;
            // a tokenizer that already holds added tokens must hold these, at these ids
            const char *have = ds_tokenizer_id_to_piece(tok, id);
            if (have && strcmp(have, tokens[id]))
                ag_fail("export: %s: id %d is %s, the model's is %s", job->tokenizer_path, id, have,
                        tokens[id]);
        }
    }

    builder b = {.g = tr_gguf_new(), .wtype = wtype, .conv = wtype};
    general(&b, job, "llama", ftype, "");
    tr_gguf_kv_u32(b.g, "llama.vocab_size", (uint32_t)V);
    tr_gguf_kv_u32(b.g, "llama.context_length", (uint32_t)c->max_seq);
    tr_gguf_kv_u32(b.g, "llama.embedding_length", (uint32_t)c->dim);
    tr_gguf_kv_u32(b.g, "llama.block_count", (uint32_t)c->n_layers);
    tr_gguf_kv_u32(b.g, "llama.feed_forward_length", (uint32_t)c->ffn);
    tr_gguf_kv_u32(b.g, "llama.rope.dimension_count", (uint32_t)D);
    tr_gguf_kv_u32(b.g, "llama.attention.head_count", (uint32_t)c->n_heads);
    tr_gguf_kv_u32(b.g, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    tr_gguf_kv_f32(b.g, "llama.attention.layer_norm_rms_epsilon", (float)c->norm_eps);
    tr_gguf_kv_f32(b.g, "llama.rope.freq_base", (float)c->rope_theta);

    tr_gguf_kv_str(b.g, "tokenizer.ggml.model", "llama");
    tr_gguf_kv_arr_str(b.g, "tokenizer.ggml.tokens", V, tokens);
    tr_gguf_kv_arr_f32(b.g, "tokenizer.ggml.scores", V, scores);
    tr_gguf_kv_arr_i32(b.g, "tokenizer.ggml.token_type", V, types);
    const int32_t special[4] = {ds_tokenizer_bos_id(tok), ds_tokenizer_eos_id(tok),
                                ds_tokenizer_unk_id(tok), ds_tokenizer_pad_id(tok)};
    static const char *const special_key[4] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    for (int k = 0; k < 4; k++)
        if (special[k] >= 0) tr_gguf_kv_u32(b.g, special_key[k], (uint32_t)special[k]);
    if (special[0] < 0)
        ag_fail("export: %s has no <s>: groundc starts every sequence with it",
                job->tokenizer_path);
    tr_gguf_kv_bool(b.g, "tokenizer.ggml.add_bos_token", true);
    tr_gguf_kv_bool(b.g, "tokenizer.ggml.add_eos_token", false);
    tr_gguf_kv_bool(b.g, "tokenizer.ggml.add_space_prefix", ds_tokenizer_dummy_prefix(tok));
    tr_gguf_kv_str(b.g, "tokenizer.chat_template", chat_template);
    if (ds_tokenizer_removes_extra_whitespace(tok))
        printf("export: note: %s removes extra whitespace, llama.cpp's tokenizer does not: "
               "text with runs of spaces tokenizes differently there\n",
               job->tokenizer_path);

    add(&b, "token_embd.weight", ROLE_WEIGHT, SRC_CAT, llm->embed, m->embed_added, 0);
    for (int64_t l = 0; l < c->n_layers; l++)
        add_block(&b, "blk", l, &llm->layers[l], llama_block, NB(llama_block), c->n_heads,
                  c->n_kv_heads);
    add(&b, "output_norm.weight", ROLE_F32, SRC_PLAIN, llm->norm, NULL, 0);
    add(&b, "output.weight", ROLE_WEIGHT, SRC_CAT, llm->lm_head, m->lm_head_added, 0);
    int fallback = finish(&b, dir, "model.gguf");
    free(tokens);
    free(scores);
    free(types);
    printf("export: model.gguf: llama, %lld layers, vocabulary %lld (%lld + %d added), %s\n",
           (long long)c->n_layers, (long long)V, (long long)V0, GM_N_ADDED,
           tr_gguf_type_name(wtype));
    note_fallback("model.gguf", fallback);
}

// mmproj.gguf ------------------------------------------------------------------------------

// CLIP's normalisation (gm_vit_clip_pixels).
static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

// v.blk.N.* of mmproj.gguf (q, k, v biases where the model has them).
#define VL(f) offsetof(gm_vit_layer, f)
static const block_tensor clip_block[] = {
    {"ln1.weight", ROLE_F32, SRC_PLAIN, VL(ln1_w), NO_HEADS, false},
    {"ln1.bias", ROLE_F32, SRC_PLAIN, VL(ln1_b), NO_HEADS, false},
    {"attn_q.weight", ROLE_WEIGHT, SRC_PLAIN, VL(q_w), NO_HEADS, false},
    {"attn_q.bias", ROLE_F32, SRC_PLAIN, VL(q_b), NO_HEADS, true},
    {"attn_k.weight", ROLE_WEIGHT, SRC_PLAIN, VL(k_w), NO_HEADS, false},
    {"attn_k.bias", ROLE_F32, SRC_PLAIN, VL(k_b), NO_HEADS, true},
    {"attn_v.weight", ROLE_WEIGHT, SRC_PLAIN, VL(v_w), NO_HEADS, false},
    {"attn_v.bias", ROLE_F32, SRC_PLAIN, VL(v_b), NO_HEADS, true},
    {"attn_out.weight", ROLE_WEIGHT, SRC_PLAIN, VL(out_w), NO_HEADS, false},
    {"attn_out.bias", ROLE_F32, SRC_PLAIN, VL(out_b), NO_HEADS, false},
    {"ln2.weight", ROLE_F32, SRC_PLAIN, VL(ln2_w), NO_HEADS, false},
    {"ln2.bias", ROLE_F32, SRC_PLAIN, VL(ln2_b), NO_HEADS, false},
    {"ffn_up.weight", ROLE_WEIGHT, SRC_PLAIN, VL(fc1_w), NO_HEADS, false},
    {"ffn_up.bias", ROLE_F32, SRC_PLAIN, VL(fc1_b), NO_HEADS, false},
    {"ffn_down.weight", ROLE_WEIGHT, SRC_PLAIN, VL(fc2_w), NO_HEADS, false},
    {"ffn_down.bias", ROLE_F32, SRC_PLAIN, VL(fc2_b), NO_HEADS, false},
};
#undef VL

static void write_mmproj(const tr_export_job *job, const char *dir, tr_gguf_type wtype,
                         tr_gguf_type conv, uint32_t ftype) {
    const gm_groundinggpt *m = job->model;
    const gm_vit *vit = m->image_vit;
    const gm_vit_config *v = &vit->cfg;
    const gm_projector *pj = m->projector;
    const int k = gm_vit_out_index(v); // features = hidden_states[k] without CLS
    // What llama.cpp's llava graph computes: a CLIP ViT on square images, non-overlapping
    // patches, CLS dropped from the features, an MLP on top.
    if (v->family != GM_VIT_CLIP || v->bias_kv || v->patch_norm || v->patch != v->stride ||
        v->image_h != v->image_w || v->image_h % v->patch || v->channels != 3)
        ag_fail("export: the image encoder is not a CLIP ViT on square images with "
                "non-overlapping patches: llama.cpp's clip model cannot run it");
    if (!v->drop_cls)
        ag_fail("export: the image features keep the CLS row; llama.cpp's mlp projector drops it");
    if (k < 1 || vit->n_layers_used < k)
        ag_fail("export: image feature layer %d: llama.cpp needs at least one block", k);

    builder b = {.g = tr_gguf_new(), .wtype = wtype, .conv = conv};
    general(&b, job, "clip", ftype, " image encoder and projector");
    tr_gguf_kv_bool(b.g, "clip.has_text_encoder", false);
    tr_gguf_kv_bool(b.g, "clip.has_vision_encoder", true);
    tr_gguf_kv_bool(b.g, "clip.has_llava_projector", true);
    tr_gguf_kv_str(b.g, "clip.projector_type", "mlp");
    tr_gguf_kv_bool(b.g, "clip.use_gelu", v->act == GM_VIT_GELU); // else QuickGELU
    tr_gguf_kv_u32(b.g, "clip.vision.image_size", (uint32_t)v->image_h);
    tr_gguf_kv_u32(b.g, "clip.vision.patch_size", (uint32_t)v->patch);
    tr_gguf_kv_u32(b.g, "clip.vision.embedding_length", (uint32_t)v->width);
    tr_gguf_kv_u32(b.g, "clip.vision.feed_forward_length", (uint32_t)v->mlp);
    tr_gguf_kv_u32(b.g, "clip.vision.projection_dim", (uint32_t)pj->cfg.llm_dim);
    tr_gguf_kv_u32(b.g, "clip.vision.block_count", (uint32_t)k);
    tr_gguf_kv_u32(b.g, "clip.vision.attention.head_count", (uint32_t)v->n_heads);
    tr_gguf_kv_f32(b.g, "clip.vision.attention.layer_norm_epsilon", (float)v->norm_eps);
    tr_gguf_kv_arr_f32(b.g, "clip.vision.image_mean", 3, clip_mean);
    tr_gguf_kv_arr_f32(b.g, "clip.vision.image_std", 3, clip_std);
    const int32_t feature_layer = k;
    tr_gguf_kv_arr_i32(b.g, "clip.vision.feature_layer", 1, &feature_layer);

    add(&b, "v.patch_embd.weight", ROLE_CONV, SRC_CONV, vit->patch_w, NULL, 0);
    if (v->patch_bias) add(&b, "v.patch_embd.bias", ROLE_F32, SRC_PLAIN, vit->patch_b, NULL, 0);
    add(&b, "v.class_embd", ROLE_F32, SRC_PLAIN, vit->cls, NULL, 0);
    add(&b, "v.position_embd.weight", ROLE_F32, SRC_PLAIN, vit->pos, NULL, 0);
    if (v->pre_norm) {
        add(&b, "v.pre_ln.weight", ROLE_F32, SRC_PLAIN, vit->pre_norm_w, NULL, 0);
        add(&b, "v.pre_ln.bias", ROLE_F32, SRC_PLAIN, vit->pre_norm_b, NULL, 0);
    }
    for (int l = 0; l < k; l++)
        add_block(&b, "v.blk", l, &vit->layers[l], clip_block, NB(clip_block), 0, 0);
    add(&b, "mm.0.weight", ROLE_WEIGHT, SRC_PLAIN, pj->w1, NULL, 0);
    add(&b, "mm.0.bias", ROLE_F32, SRC_PLAIN, pj->b1, NULL, 0);
    add(&b, "mm.2.weight", ROLE_WEIGHT, SRC_PLAIN, pj->w2, NULL, 0);
    add(&b, "mm.2.bias", ROLE_F32, SRC_PLAIN, pj->b2, NULL, 0);
    int fallback = finish(&b, dir, "mmproj.gguf");
    printf("export: mmproj.gguf: clip, %lld-pixel images, %lld tokens, features of block %d of "
           "%lld, mlp projector %lld -> %lld, %s\n",
           (long long)v->image_h, (long long)gm_vit_patches(v), k, (long long)v->n_layers,
           (long long)pj->cfg.vision_dim, (long long)pj->cfg.llm_dim, tr_gguf_type_name(wtype));
    note_fallback("mmproj.gguf", fallback);
    printf("export: note: llama.cpp builds since its mtmd refactor put CLIP's CLS token after the "
           "patches (llama.cpp issue 25814): their image features, and so boxes, differ from "
           "groundc's (about one patch to the left); text-only prompts are unaffected (README.md "
           "in the export)\n");
}

// README ---------------------------------------------------------------------------------------

static void write_readme(const tr_export_job *job, const char *dir, bool image, bool dropped) {
    const gm_groundinggpt_config *c = &job->model->cfg;
    char text[4096];
    int n = snprintf(
        text, sizeof text,
        "# GroundingGPT %s for llama.cpp\n\n"
        "Exported by `groundc export %s --format gguf --dtype %s`.\n\n"
        "- `model.gguf`: the language model (llama architecture, %lld + %d tokens; the added\n"
        "  tokens `<im_patch>` ... `<so_end>` are user-defined, so llama.cpp reads them from\n"
        "  text), with the Vicuna v0 chat template as Jinja (pass `--jinja` to llama.cpp's\n"
        "  tools, whose built-in templates may not know its `### Human:` turns). Generation\n"
        "  stops at `###`: give it as a stop string.\n",
        c->name, job->ckpt_dir, job->dtype, (long long)c->llm.vocab, GM_N_ADDED);
    if (image)
        n += snprintf(
            text + n, sizeof text - (size_t)n,
            "- `mmproj.gguf`: the image encoder and projector (clip, projector type mlp) for\n"
            "  llama.cpp's multimodal tools (`llama-mtmd-cli -m model.gguf --mmproj "
            "mmproj.gguf --jinja`).\n"
            "  Images are square %lld-pixel RGB (pad to square with the CLIP mean colour first, "
            "as\n"
            "  groundc does). Put the media marker between the image tokens, as GroundingGPT\n"
            "  expands `<image>`: `### Human: <im_start><__media__><im_end>\\nWhere is ...`\n"
            "  Note: llama.cpp's llava graph has put CLIP's CLS token after the patches since\n"
            "  its mtmd refactor (llama.cpp issue 25814, still so in build 10257): such builds\n"
            "  compute other image features than GroundingGPT's CLIP from these weights; a\n"
            "  llama.cpp with the CLS token first reproduces groundc's.\n",
            (long long)c->image_size);
    if (dropped)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "\nThe video and audio branches (Q-Formers over EVA and ImageBind features)\n"
                      "have no llama.cpp counterpart and are not in these files; export with\n"
                      "`--format hf` to keep them.\n");
    if (n >= (int)sizeof text) ag_fail("export: README text too long");
    tr_export_write_file(dir, "README.md", text, strlen(text));
}

void tr_export_gguf(const tr_export_job *job, const char *dir) {
    tr_gguf_type wtype, conv;
    uint32_t ftype;
    types_of(job->dtype, &wtype, &conv, &ftype);
    const gm_groundinggpt *m = job->model;
    bool image = m->cfg.has[GM_MOD_IMAGE];
    bool dropped = m->cfg.has[GM_MOD_VIDEO] || m->cfg.has[GM_MOD_AUDIO];
    write_model(job, dir, wtype, ftype);
    if (image)
        write_mmproj(job, dir, wtype, conv, ftype);
    else
        printf("export: the model has no image branch: no mmproj.gguf\n");
    if (dropped)
        printf("export: video and audio branches are not exported: llama.cpp has no "
               "counterpart (use --format hf)\n");
    write_readme(job, dir, image, dropped);
}
