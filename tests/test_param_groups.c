// test_param_groups.c: which parameters AdamW decays (tr_param_decays), over every parameter of
// the tiny GroundingGPT with LoRA adapters, against the policy configs/README.md states: the
// weights of linear and conv layers decay (as in transformers' Trainer, which decays all but
// biases and norms); norms, biases of every spelling, token and position tables, class and
// query tokens, position tensors and the added rows do not; decay_all decays everything.
// Each expectation is by the layer's kind, named here, not by the rule's own test.
#include <string.h>

#include "model/groundinggpt.h"
#include "testlib.h"
#include "train/model_config.h"
#include "train/train_config.h"

// Layers of the tiny model whose weight is a matrix or a conv kernel: suffixes of their names.
static const char *const linear_or_conv[] = {
    // Llama, LoRA, projector, lm_head
    "_proj.weight", "lora_A.weight", "lora_B.weight", "mm_vision_projector.0.weight",
    "mm_vision_projector.2.weight", "lm_head.weight",
    // CLIP and EVA ViTs (conv patch embeddings, attention, MLP), the ImageBind audio trunk
    "patch_embedding.weight", "patch_embed.proj.weight", "rgbt_stem.proj.weight", "qkv.weight",
    "attn.proj.weight", "in_proj_weight", "fc1.weight", "fc2.weight",
    "modality_heads.audio.2.weight",
    // BERT Q-Formers
    "query.weight", "key.weight", "value.weight", "dense.weight", "llama_proj.weight"};
// Lookup tables: a row per token or position.
static const char *const tables[] = {"embed_tokens.weight", "position_embedding.weight"};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool any_suffix(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ends_with(name, list[i])) return true;
    return false;
}

int main(void) {
    char path[1024];
    tl_source_path(path, sizeof path, "configs/model/tiny.yaml");
    gm_groundinggpt_config c;
    tr_model_config_load(path, &c);
    c.llm.lora = (gm_lora_config){.rank = 2, .alpha = 4, .targets = GM_LORA_ALL_TARGETS};
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);

    int n_decay = 0, n_linear = 0, n_other = 0;
    bool seen_kind[sizeof linear_or_conv / sizeof *linear_or_conv] = {false};
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *p = m->params->tensors[i];
        const char *name = p->name;
        bool decays = tr_param_decays(name, p->ndim, false);
        TL_CHECK(tr_param_decays(name, p->ndim, true), "%s: decay_all leaves it out", name);
        n_decay += decays;
        bool table = any_suffix(name, tables, sizeof tables / sizeof *tables);
        bool linear =
            !table && p->ndim >= 2 &&
            any_suffix(name, linear_or_conv, sizeof linear_or_conv / sizeof *linear_or_conv);
        for (size_t k = 0; k < sizeof linear_or_conv / sizeof *linear_or_conv; k++)
            if (linear && ends_with(name, linear_or_conv[k])) seen_kind[k] = true;
        if (linear) {
            n_linear++;
            TL_CHECK(decays, "%s: a linear or conv weight, not decayed", name);
        } else {
            n_other++;
            // norms (1-D weights), biases (bias, in_proj_bias, bias_k, q_bias), tables, tokens,
            // positions, added rows
            TL_CHECK(!decays, "%s (%d dims): not a linear or conv weight, decayed", name, p->ndim);
        }
    }
    for (size_t k = 0; k < sizeof linear_or_conv / sizeof *linear_or_conv; k++)
        TL_CHECK(seen_kind[k], "no parameter of the tiny model ends in %s (renamed?)",
                 linear_or_conv[k]);
    // the spellings that once went wrong: conv patch embeddings kept out for "embed", 3-D
    // attention biases decayed for having 2+ dimensions
    const char *named[][2] = {
        {"model.vision_tower.vision_model.embeddings.patch_embedding.weight", "1"},
        {"model.visual_encoder.patch_embed.proj.weight", "1"},
        {"model.audio_encoder.modality_trunks.audio.blocks.0.attn.bias_k", "0"},
        {"model.audio_encoder.modality_trunks.audio.blocks.0.attn.bias_v", "0"},
        {"model.embed_tokens.added_rows", "0"},
        {"lm_head.added_rows", "0"},
        {"model.video_frame_position_embedding.weight", "0"},
        {"lm_head.weight", "1"}};
    for (size_t k = 0; k < sizeof named / sizeof *named; k++) {
        const ag_tensor *p = gm_params_find(m->params, named[k][0]);
        TL_CHECK(p, "%s: not in the tiny model", named[k][0]);
        if (p)
            TL_CHECK(tr_param_decays(p->name, p->ndim, false) == (named[k][1][0] == '1'),
                     "%s: decay should be %s", named[k][0], named[k][1]);
    }
    printf("test_param_groups: %d parameters, %d linear/conv weights (decayed: %d), %d others\n",
           m->params->n, n_linear, n_decay, n_other);
    TL_CHECK(n_decay == n_linear, "%d decayed, %d linear/conv weights", n_decay, n_linear);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    return tl_summary("test_param_groups");
}
