// test_golden.c: groundc against the real reference implementations. scripts/make_fixtures.py
// builds tiny random LlamaForCausalLM, CLIPVisionModel and Blip2QFormerModel with transformers
// and writes them, with their outputs and gradients, to tests/fixtures/golden/. Here the
// weights go through the importer (train/import.h) into the f32 model of golden/model.yaml
// (the assembled model has no f64 mode; test_vit and test_qformer hold the modules to float64
// references), and:
//   - Llama: logits (B, T, V) of the fixture's ids, and the gradients of sum(logits * r)
//     for embed_tokens, q_proj, k_proj (grouped-query), down_proj, two norms and lm_head;
//   - CLIP: hidden_states[-2] without the CLS row (LLaVA's feature) of the fixture's images
//     after CLIP normalisation, and the gradients of sum(hidden * r) w.r.t. the pixels and a
//     few weights (the patch weight through the conv-layout permutation);
//   - the frame Q-Former: ln_vision then the Q-Former over the fixture's encoder states, and
//     the gradients w.r.t. the states and a few weights, HF names mapped to LAVIS ones here,
//     independently of the importer;
// outputs within 1e-4 and gradients within 1e-3, relative to the largest reference value.
// Skips (exit 77) where the fixtures have not been made (transformers is not in Debian).
// GROUNDC_GOLDEN_DIR=DIR reads them from DIR instead.
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "model/groundinggpt.h"
#include "testlib.h"
#include "train/import.h"
#include "train/model_config.h"

#define TOL_OUT  1e-4
#define TOL_GRAD 1e-3

static char dir[1024];
static ag_st_file *ref;

static const ag_st_entry *entry(const char *name) {
    const ag_st_entry *e = ag_st_find(ref, name);
    if (!e) ag_fail("%s lacks %s (rerun scripts/make_fixtures.py)", ref->path, name);
    return e;
}

// A tensor of the fixture, converted to dt (float entries) or in its own dtype.
static ag_tensor *load(ag_ctx *ctx, const char *name, ag_dtype dt) {
    return tl_st_tensor(ctx, ref, entry(name), dt);
}

static void expect(ag_ctx *ctx, const char *what, ag_dtype dt, ag_tensor *got, const char *name,
                   double tol) {
    double err = got ? tl_rel_err_entry(ctx, got, entry(name)) : INFINITY;
    TL_CHECK(err <= tol, "%s %s: %s relative error %.3g > %.3g", what, ag_dtype_name(dt), name, err,
             tol);
    printf("golden %-7s %-4s %-72s %.2e\n", what, ag_dtype_name(dt), name, err);
}

// sum(out * r) as a 0-dim tensor (mean_all times the count).
static ag_tensor *dot_loss(ag_ctx *ctx, ag_tensor *out, ag_tensor *r) {
    return ag_scale(ctx, ag_mean_all(ctx, ag_mul(ctx, out, r)), (double)ag_numel(out));
}

static void check_loss(const char *what, ag_dtype dt, ag_tensor *loss, const char *key) {
    const char *v = ag_st_meta(ref, key);
    double want = v ? atof(v) : NAN, got = ag_item(loss, 0);
    double err = fabs(got - want) / fmax(fabs(want), 1e-6);
    TL_CHECK(err <= TOL_OUT, "%s %s: loss %.9g, transformers %.9g", what, ag_dtype_name(dt), got,
             want);
}

static void trainable(ag_ctx *ctx, ag_tensor *const *ps, int n) {
    for (int i = 0; i < n; i++) ag_set_trainable(ctx, ps[i], true);
}

// The gradient of model parameter name (NULL if it has none).
static ag_tensor *grad_of(const gm_groundinggpt *m, const char *name) {
    ag_tensor *p = gm_params_find(m->params, name);
    TL_CHECK(p != NULL, "the model has no parameter %s", name);
    return p ? p->grad : NULL;
}

static void check_llama(ag_ctx *ctx, gm_groundinggpt *m, ag_dtype dt) {
    gm_llama *llm = m->llm;
    trainable(ctx, llm->params, llm->n_params);
    ag_tensor *ids = load(ctx, "llama.ids", AG_I32); // (B, T)
    int64_t B = ids->shape[0], T = ids->shape[1];
    ag_tensor *x = gm_llama_embed(ctx, llm, ids); // (B, T, C)
    ag_tensor *logits =
        gm_llama_logits(ctx, llm, gm_llama_hidden(ctx, llm, x, gm_positions(ctx, T)));
    expect(ctx, "llama", dt, logits, "llama.logits", TOL_OUT); // (B*T, V)
    ag_tensor *r = load(ctx, "llama.r", dt);
    r = ag_reshape(ctx, r, AG_SHAPE(B * T, r->shape[2]));
    ag_tensor *loss = dot_loss(ctx, logits, r);
    check_loss("llama", dt, loss, "llama.loss");
    ag_backward(ctx, loss);
    int n = 0;
    for (int i = 0; i < ref->n; i++) {
        const char *name = ref->entries[i].name;
        if (strncmp(name, "llama.grad.", 11)) continue;
        expect(ctx, "llama", dt, grad_of(m, name + 11), name, TOL_GRAD);
        n++;
    }
    TL_CHECK(n >= 5, "llama: %d gradients in the fixture", n);
}

static void check_clip(gm_groundinggpt *m, ag_dtype dt) {
    ag_ctx *ctx = m->enc_ctx; // the encoders' parameters live there
    gm_vit *vit = m->image_vit;
    trainable(ctx, vit->params, vit->n_params);
    ag_tensor *x = gm_vit_clip_pixels(ctx, load(ctx, "clip.images", AG_U8), dt); // (B, H, W, 3)
    ag_set_requires_grad(x, true);
    ag_tensor *hidden = NULL;
    gm_vit_forward(ctx, vit, x, &hidden, NULL); // (B, N, C)
    expect(ctx, "clip", dt, hidden, "clip.hidden", TOL_OUT);
    ag_tensor *loss = dot_loss(ctx, hidden, load(ctx, "clip.r", dt));
    check_loss("clip", dt, loss, "clip.loss");
    ag_backward(ctx, loss);
    expect(ctx, "clip", dt, x->grad, "clip.grad.input", TOL_GRAD);
    int n = 0;
    for (int i = 0; i < ref->n; i++) {
        const ag_st_entry *e = &ref->entries[i];
        if (strncmp(e->name, "clip.grad.vision_model.", 23)) continue;
        char name[256];
        snprintf(name, sizeof name, "model.vision_tower.%s", e->name + 10);
        ag_tensor *p = gm_params_find(m->params, name);
        TL_CHECK(p && p->grad, "clip: no gradient for %s", name);
        if (!p || !p->grad) continue;
        double err;
        if (p == vit->patch_w) { // the reference is in PyTorch's (out, in, kh, kw) layout
            double *want = tl_entry_f64(e), *perm = malloc(sizeof(double) * (size_t)ag_numel(p));
            double *got = tl_tensor_f64(ctx, p->grad);
            gm_vit_conv_to_patch(perm, want, sizeof(double), p->shape[0], p->shape[3], p->shape[1],
                                 p->shape[2]);
            err = tl_max_rel_err(got, perm, ag_numel(p));
            free(want), free(perm), free(got);
        } else {
            err = tl_rel_err_entry(ctx, p->grad, e);
        }
        TL_CHECK(err <= TOL_GRAD, "clip %s: %s relative error %.3g", ag_dtype_name(dt), e->name,
                 err);
        printf("golden %-7s %-4s %-72s %.2e\n", "clip", ag_dtype_name(dt), e->name, err);
        n++;
    }
    TL_CHECK(n >= 5, "clip: %d weight gradients in the fixture", n);
}

// BLIP-2 checkpoint names (transformers) -> groundc's LAVIS names, written out here rather
// than taken from the importer.
static const char *const qformer_names[][2] = {
    {"query_tokens", "model.query_tokens"},
    {"vision_model.post_layernorm.weight", "model.ln_vision.weight"},
    {"qformer.layernorm.bias", "model.Qformer.bert.embeddings.LayerNorm.bias"},
    {"qformer.encoder.layer.0.crossattention.attention.key.weight",
     "model.Qformer.bert.encoder.layer.0.crossattention.self.key.weight"},
    {"qformer.encoder.layer.1.attention.attention.value.bias",
     "model.Qformer.bert.encoder.layer.1.attention.self.value.bias"},
    {"qformer.encoder.layer.2.output_query.dense.weight",
     "model.Qformer.bert.encoder.layer.2.output_query.dense.weight"},
};

static void check_qformer(gm_groundinggpt *m, ag_dtype dt) {
    ag_ctx *ctx = m->enc_ctx;
    gm_frame_qformer *q = m->frame_qformer;
    trainable(ctx, q->params, q->n_params);
    ag_tensor *enc = load(ctx, "qformer.enc", dt); // (B, P, Cvit)
    ag_set_requires_grad(enc, true);
    ag_tensor *out = gm_frame_qformer_forward(ctx, q, enc); // (B, Q, C)
    expect(ctx, "qformer", dt, out, "qformer.out", TOL_OUT);
    ag_tensor *loss = dot_loss(ctx, out, load(ctx, "qformer.r", dt));
    check_loss("qformer", dt, loss, "qformer.loss");
    ag_backward(ctx, loss);
    expect(ctx, "qformer", dt, enc->grad, "qformer.grad.enc", TOL_GRAD);
    for (size_t i = 0; i < sizeof qformer_names / sizeof *qformer_names; i++) {
        char name[256];
        snprintf(name, sizeof name, "qformer.grad.%s", qformer_names[i][0]);
        expect(ctx, "qformer", dt, grad_of(m, qformer_names[i][1]), name, TOL_GRAD);
    }
}

static void run(ag_dtype dt) { // f32; bf16 would need its own tolerances
    char path[1100];
    snprintf(path, sizeof path, "%s/model.yaml", dir);
    gm_groundinggpt_config c;
    tr_model_config_load(path, &c);
    c.dtype = dt;
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    const struct {
        tr_init_part part;
        const char *file;
    } parts[] = {{TR_INIT_LLM, "llama"},
                 {TR_INIT_IMAGE_ENCODER, "clip"},
                 {TR_INIT_FRAME_QFORMER, "blip2.safetensors"}};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, parts[i].file);
        int n = tr_import_part(m, parts[i].part, path, NULL);
        TL_CHECK(n > 0, "%s: %d tensors imported", path, n);
    }
    check_llama(ctx, m, dt);
    check_clip(m, dt);
    check_qformer(m, dt);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    const char *env = getenv("GROUNDC_GOLDEN_DIR"); // fixtures made elsewhere, to try them
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else
        tl_source_path(dir, sizeof dir, "tests/fixtures/golden");
    char path[1100];
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (access(path, R_OK) != 0) {
        printf("skip: no %s; make it with scripts/make_fixtures.py where transformers is "
               "installed\n",
               path);
        return 77;
    }
    ref = ag_st_open(path);
    const char *tv = ag_st_meta(ref, "transformers"), *pv = ag_st_meta(ref, "torch");
    printf("golden fixtures: transformers %s, torch %s\n", tv ? tv : "?", pv ? pv : "?");
    run(AG_F32);
    ag_st_close(ref);
    return tl_summary("golden");
}
