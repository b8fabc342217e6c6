// model_config.c: see model_config.h.
#include "model_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/error.h"

static const int64_t BIG = (int64_t)1 << 40;

// A key that must be present (every size is); fails at the mapping's position.
static tr_yaml *need(tr_yaml *map, const char *key) {
    tr_yaml *v = tr_yaml_get(map, key);
    if (!v) tr_yaml_fail(map, "missing key '%s'", key);
    return v;
}

static int64_t req_int(tr_yaml *map, const char *key, int64_t lo, int64_t hi) {
    need(map, key);
    return tr_yaml_int(map, key, 0, lo, hi);
}

static tr_yaml *req_map(tr_yaml *map, const char *key) {
    need(map, key);
    return tr_yaml_map(map, key);
}

// Dividing sizes: width % heads, at the heads entry.
static void check_heads(tr_yaml *map, const char *width_key, int64_t width, int64_t heads) {
    if (width % heads)
        tr_yaml_fail(tr_yaml_at(map, "heads"), "%s %lld is not a multiple of heads %lld", width_key,
                     (long long)width, (long long)heads);
}

static void read_llm(tr_yaml *root, gm_groundinggpt_config *c) {
    tr_yaml *m = req_map(root, "llm");
    gm_llama_config *l = &c->llm;
    l->vocab = req_int(m, "vocab", 3, INT32_MAX - GM_N_ADDED);
    l->dim = req_int(m, "dim", 2, BIG);
    l->n_layers = req_int(m, "layers", 1, 4096);
    l->n_heads = req_int(m, "heads", 1, 4096);
    l->n_kv_heads = req_int(m, "kv_heads", 1, 4096);
    l->ffn = req_int(m, "ffn", 1, BIG);
    l->max_seq = req_int(m, "max_seq", 1, INT32_MAX);
    l->rope_theta = tr_yaml_num(m, "rope_theta", 1e4, 1e-6, 1e12);
    l->norm_eps = tr_yaml_num(m, "norm_eps", 1e-5, 1e-12, 1);
    check_heads(m, "dim", l->dim, l->n_heads);
    if ((l->dim / l->n_heads) % 2)
        tr_yaml_fail(tr_yaml_at(m, "heads"), "head dim %lld must be even for RoPE",
                     (long long)(l->dim / l->n_heads));
    if (l->n_heads % l->n_kv_heads)
        tr_yaml_fail(tr_yaml_at(m, "kv_heads"), "heads %lld is not a multiple of kv_heads %lld",
                     (long long)l->n_heads, (long long)l->n_kv_heads);
}

// tokens: the ids of the 9 added tokens; by default V0 + 0..8 in GroundingGPT's order.
static void read_tokens(tr_yaml *root, gm_groundinggpt_config *c) {
    static const char *const keys[3][GM_NMOD] = {{"im_patch", "vi_patch", "so_patch"},
                                                 {"im_start", "vi_start", "so_start"},
                                                 {"im_end", "vi_end", "so_end"}};
    int32_t *ids[3] = {c->tokens.patch, c->tokens.start, c->tokens.end};
    const int32_t V0 = (int32_t)c->llm.vocab;
    tr_yaml *t = tr_yaml_map(root, "tokens");
    bool seen[GM_N_ADDED] = {false};
    for (int m = 0; m < GM_NMOD; m++)
        for (int k = 0; k < 3; k++) {
            ids[k][m] = V0 + 3 * m + k; // patch, start, end of image, video, audio
            if (!t) continue;
            ids[k][m] = (int32_t)req_int(t, keys[k][m], V0, V0 + GM_N_ADDED - 1);
            tr_yaml *v = tr_yaml_get(t, keys[k][m]);
            if (seen[ids[k][m] - V0])
                tr_yaml_fail(v, "id %d is given to two added tokens", (int)ids[k][m]);
            seen[ids[k][m] - V0] = true;
        }
}

// The ViT sizes of an encoder section; family switches come from the preset.
static void read_vit(tr_yaml *e, gm_vit_config *v, bool audio) {
    v->patch = req_int(e, "patch", 1, 4096);
    v->stride = audio ? req_int(e, "stride", 1, 4096) : v->patch;
    v->width = req_int(e, "width", 1, BIG);
    v->n_layers = req_int(e, "layers", 1, 4096);
    v->n_heads = req_int(e, "heads", 1, 4096);
    v->mlp = req_int(e, "mlp", 1, BIG);
    v->norm_eps = tr_yaml_num(e, "norm_eps", v->norm_eps, 1e-12, 1);
    v->init_std = tr_yaml_num(e, "init_std", v->init_std, 0, 10);
    check_heads(e, "width", v->width, v->n_heads);
    if (!audio) {
        v->out_layer = (int)req_int(e, "select_layer", -(v->n_layers + 1), v->n_layers);
    } else {
        v->head_dim = req_int(e, "embed_dim", 1, BIG);
        v->head_scale = tr_yaml_num(e, "logit_scale", v->head_scale, 0, 1e6);
        v->patch_norm_eps = tr_yaml_num(e, "patch_norm_eps", v->patch_norm_eps, 1e-12, 1);
    }
}

// A Q-Former section; what is not a size keeps the default's value unless given. The frozen
// frame Q-Former runs in eval mode, so its section has no dropout.
static void read_qformer(tr_yaml *q, gm_qformer_config *c, int64_t encoder_width, bool dropout) {
    c->hidden = req_int(q, "hidden", 1, BIG);
    c->n_layers = req_int(q, "layers", 1, 4096);
    c->n_heads = req_int(q, "heads", 1, 4096);
    c->intermediate = req_int(q, "intermediate", 1, BIG);
    c->cross_attention_frequency = req_int(q, "cross_attention_every", 1, 4096);
    c->eps = tr_yaml_num(q, "eps", c->eps, 1e-15, 1);
    if (dropout) c->dropout = tr_yaml_num(q, "dropout", c->dropout, 0, 0.99);
    c->init_std = tr_yaml_num(q, "init_std", c->init_std, 0, 10);
    c->encoder_width = encoder_width;
    check_heads(q, "hidden", c->hidden, c->n_heads);
}

static void read_image(tr_yaml *root, gm_groundinggpt_config *c) {
    tr_yaml *s = tr_yaml_map(root, "image");
    c->has[GM_MOD_IMAGE] = s != NULL;
    if (!s) return;
    c->image_size = req_int(s, "size", 1, 65536);
    c->image_tokens = req_int(s, "tokens", 1, BIG);
    tr_yaml *e = req_map(s, "encoder");
    gm_vit_config *v = &c->image_vit;
    *v = gm_vit_clip_l14_336_config();
    v->image_h = v->image_w = c->image_size;
    read_vit(e, v, false);
    if (v->patch > c->image_size)
        tr_yaml_fail(tr_yaml_at(e, "patch"), "patch %lld is larger than the image size %lld",
                     (long long)v->patch, (long long)c->image_size);
    if (gm_vit_out_tokens(v) != c->image_tokens)
        tr_yaml_fail(tr_yaml_at(s, "tokens"),
                     "%lld tokens, but a %lld-pixel image in %lld-pixel patches makes %lld",
                     (long long)c->image_tokens, (long long)c->image_size, (long long)v->patch,
                     (long long)gm_vit_out_tokens(v));
    c->projector = (gm_projector_config){.vision_dim = v->width, .llm_dim = c->llm.dim};
}

static void read_video(tr_yaml *root, gm_groundinggpt_config *c) {
    tr_yaml *s = tr_yaml_map(root, "video");
    c->has[GM_MOD_VIDEO] = s != NULL;
    if (!s) return;
    c->video_frames = req_int(s, "frames", 1, 4096);
    c->video_size = req_int(s, "size", 1, 65536);
    c->video_tokens = req_int(s, "tokens", 1, BIG);
    gm_vit_config *v = &c->video_vit;
    *v = gm_vit_eva_g14_config();
    v->image_h = v->image_w = c->video_size;
    tr_yaml *e = req_map(s, "encoder");
    read_vit(e, v, false);
    if (v->patch > c->video_size)
        tr_yaml_fail(tr_yaml_at(e, "patch"), "patch %lld is larger than the frame size %lld",
                     (long long)v->patch, (long long)c->video_size);

    gm_frame_qformer_config *f = &c->frame_qformer;
    *f = gm_frame_qformer_default(v->width);
    tr_yaml *fq = req_map(s, "frame_qformer");
    read_qformer(fq, &f->qformer, v->width, false);
    f->n_queries = req_int(fq, "queries", 1, BIG);
    f->ln_eps = tr_yaml_num(fq, "ln_eps", f->ln_eps, 1e-15, 1);

    gm_video_adapter_config *a = &c->video_adapter;
    *a = gm_video_adapter_default(c->llm.dim);
    tr_yaml *ad = req_map(s, "adapter");
    read_qformer(ad, &a->qformer, f->qformer.hidden, true);
    a->max_frames = req_int(ad, "max_frames", 1, BIG);
    a->n_queries = c->video_tokens;
    static const char *const inits[] = {"normal", "aligned", NULL};
    a->aligned_init = !strcmp(tr_yaml_str(ad, "init", "normal", inits), "aligned");
    if (a->aligned_init && a->qformer.hidden != f->qformer.hidden)
        tr_yaml_fail(tr_yaml_at(ad, "init"),
                     "aligned init needs hidden %lld equal to the frame Q-Former's %lld",
                     (long long)a->qformer.hidden, (long long)f->qformer.hidden);
    if (a->max_frames < c->video_frames)
        tr_yaml_fail(tr_yaml_at(ad, "max_frames"), "%lld frame positions for %lld frames",
                     (long long)a->max_frames, (long long)c->video_frames);
}

static void read_audio(tr_yaml *root, gm_groundinggpt_config *c) {
    tr_yaml *s = tr_yaml_map(root, "audio");
    c->has[GM_MOD_AUDIO] = s != NULL;
    if (!s) return;
    c->audio_clips = req_int(s, "clips", 1, 4096);
    c->audio_frames = req_int(s, "frames", 1, 65536);
    c->audio_mels = req_int(s, "mels", 1, 65536);
    c->audio_tokens = req_int(s, "tokens", 1, BIG);
    gm_vit_config *v = &c->audio_vit;
    *v = gm_vit_imagebind_audio_config();
    v->image_h = c->audio_mels;
    v->image_w = c->audio_frames;
    tr_yaml *e = req_map(s, "encoder");
    read_vit(e, v, true);
    if (v->patch > c->audio_mels || v->patch > c->audio_frames)
        tr_yaml_fail(tr_yaml_at(e, "patch"), "patch %lld is larger than the %lld x %lld fbank",
                     (long long)v->patch, (long long)c->audio_mels, (long long)c->audio_frames);

    gm_audio_adapter_config *a = &c->audio_adapter;
    *a = gm_audio_adapter_default(c->llm.dim);
    tr_yaml *ad = req_map(s, "adapter");
    read_qformer(ad, &a->qformer, v->head_dim, true);
    a->max_clips = req_int(ad, "max_clips", 1, BIG);
    a->n_queries = c->audio_tokens;
    if (a->max_clips < c->audio_clips)
        tr_yaml_fail(tr_yaml_at(ad, "max_clips"), "%lld clip positions for %lld clips",
                     (long long)a->max_clips, (long long)c->audio_clips);
}

void tr_model_config_read(tr_yaml *map, gm_groundinggpt_config *c) {
    if (map->kind != TR_YAML_MAP) tr_yaml_fail(map, "expected a mapping of model sizes");
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", tr_yaml_str(map, "name", "unnamed", NULL));
    static const char *const dtypes[] = {"f32", "bf16", NULL};
    c->dtype = strcmp(tr_yaml_str(map, "dtype", "f32", dtypes), "bf16") ? AG_F32 : AG_BF16;
    read_llm(map, c);
    read_tokens(map, c);
    read_image(map, c);
    read_video(map, c);
    read_audio(map, c);
    // Everything above was checked where it was read; this catches what slipped through.
    gm_groundinggpt_check_config(c);
}

void tr_model_config_load(const char *path, gm_groundinggpt_config *cfg) {
    tr_yaml *root = tr_yaml_load(path);
    tr_model_config_read(root, cfg);
    tr_yaml_check_used(root);
    tr_yaml_free(root);
}

char *tr_config_path(const tr_yaml *node, const char *path) {
    // a --set value's "file" is the argument, no folder: its paths are the working directory's
    if (path[0] == '/' || node->cli || !strchr(node->file, '/')) return ag_xstrdup(path);
    size_t dir = (size_t)(strrchr(node->file, '/') - node->file);
    size_t n = dir + 1 + strlen(path) + 1;
    char *out = ag_xmalloc(n, "config path");
    snprintf(out, n, "%.*s/%s", (int)dir, node->file, path);
    return out;
}

void tr_lora_config_read(tr_yaml *root, const gm_llama_config *llm, gm_lora_config *c) {
    memset(c, 0, sizeof *c);
    tr_yaml *s = tr_yaml_map(root, "lora");
    if (!s) return;
    c->rank = req_int(s, "rank", 1, llm->dim < llm->ffn ? llm->dim : llm->ffn);
    c->alpha = tr_yaml_num(s, "alpha", (double)c->rank, 0, 1e9);
    if (!(c->alpha > 0)) tr_yaml_fail(tr_yaml_at(s, "alpha"), "alpha must be > 0");
    c->dropout = tr_yaml_num(s, "dropout", 0, 0, 0.99);
    tr_yaml *t = tr_yaml_get(s, "targets");
    if (!t) {
        c->targets = GM_LORA_ALL_TARGETS;
        return;
    }
    if (t->kind != TR_YAML_SEQ || t->n == 0)
        tr_yaml_fail(t, "expected a non-empty list of q_proj, k_proj, v_proj, o_proj, "
                        "gate_proj, up_proj, down_proj");
    for (int i = 0; i < t->n; i++) {
        const tr_yaml *v = t->items[i];
        int k = v->kind == TR_YAML_SCALAR ? gm_lora_target_from_name(v->value) : -1;
        if (k < 0)
            tr_yaml_fail(v,
                         "'%s' is not a Llama linear (q_proj, k_proj, v_proj, o_proj, "
                         "gate_proj, up_proj, down_proj)",
                         v->kind == TR_YAML_SCALAR ? v->value : "(not a name)");
        if (c->targets >> k & 1) tr_yaml_fail(v, "'%s' is listed twice", v->value);
        c->targets |= 1u << k;
    }
}

// The model file a config's `model:` names (path, resolved): a missing one fails at the
// config's file:line:column, which the message of the load itself cannot say.
static void check_model_file(const tr_yaml *m, const char *path) {
    struct stat sb;
    if (stat(path, &sb)) tr_yaml_fail(m, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) tr_yaml_fail(m, "%s: is a folder, not a model config", path);
}

void tr_model_config_from_train(tr_yaml *root, gm_groundinggpt_config *cfg) {
    tr_yaml *m = tr_yaml_get(root, "model");
    if (!m) tr_yaml_fail(root, "missing 'model' (a model file or a mapping of model sizes)");
    if (m->kind == TR_YAML_MAP) {
        tr_model_config_read(m, cfg);
    } else {
        if (m->kind != TR_YAML_SCALAR) tr_yaml_fail(m, "expected a model file or a mapping");
        char *path = tr_config_path(m, m->value);
        check_model_file(m, path);
        tr_model_config_load(path, cfg);
        free(path);
    }
    tr_lora_config_read(root, &cfg->llm, &cfg->llm.lora);
}

bool tr_config_is_model_file(tr_yaml *root) {
    if (root->kind != TR_YAML_MAP) tr_yaml_fail(root, "expected a mapping");
    for (int i = 0; i < root->n; i++) {
        if (!strcmp(root->keys[i], "llm")) return true;
        if (!strcmp(root->keys[i], "model")) return false;
    }
    tr_yaml_fail(root, "neither a model config (no 'llm') nor a training config (no 'model')");
}

void tr_model_config_inline(tr_yaml *root) {
    tr_yaml *m = tr_yaml_get(root, "model");
    if (!m || m->kind != TR_YAML_SCALAR) return;
    char *path = tr_config_path(m, m->value);
    check_model_file(m, path);
    tr_yaml *file = tr_yaml_load(path);
    free(path);
    if (!tr_config_is_model_file(file)) tr_yaml_fail(file, "not a model config (no 'llm')");
    for (int i = 0; i < root->n; i++)
        if (root->items[i] == m) {
            root->items[i] = file;
            tr_yaml_free(m);
            return;
        }
}
