// test_vit.c: model/vit.c against the PyTorch reference of tests/vit_reference.py.
//
// tests/fixtures/vit/{clip,eva,audio}.safetensors hold tiny random versions of the three
// encoders (weights under the original checkpoint names, F16, conv weights in PyTorch's
// layout), their inputs, hidden states, pooled outputs, and the gradients of a scalar loss
// L = sum(hidden * r_hidden) [+ sum(pooled * r_pooled)] with respect to the input and a few
// weights, all computed in float64 from the stored weights. For each model:
//   - f32: outputs within 1e-4 and gradients within 1e-3 of the reference;
//   - f64: outputs within 1e-10 and gradients within 1e-5 (the reference gradients are
//     stored rounded to f32);
//   - bf16: outputs within 5e-2 (a smoke test of the bf16 kernels on a whole model);
// the error of a tensor being max|got - want| / max(max|want|, 1e-6), as in
// test_ops_reference.c. Also: the layers a config runs and allocates (hidden_states[0],
// LLaVA's -2 without a head, EVA's "one block fewer than the checkpoint"), the preset
// shapes of the full-size encoders, init_std, patchify + linear against a naive strided
// convolution, the conv-weight permutations, and bad input (mis-shaped images, bad configs)
// failing with one-line errors. Missing and mis-shaped weights are the importer's errors
// (test_import.c).
#include <math.h>
#include <stdlib.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "model/vit.h"
#include "testlib.h"

#define TOL_OUT_F32  1e-4
#define TOL_GRAD_F32 1e-3
#define TOL_OUT_F64  1e-10
#define TOL_GRAD_F64 1e-5
#define TOL_OUT_BF16 5e-2

// Fixture access ------------------------------------------------------------------------------

// The conv weight e (out, cin, kh, kw) into w (out, kh, kw, cin), any file dtype.
static void load_conv(const ag_st_file *f, const ag_st_entry *e, ag_tensor *w) {
    const int64_t out = w->shape[0], kh = w->shape[1], kw = w->shape[2], cin = w->shape[3];
    const int64_t want[4] = {out, cin, kh, kw};
    bool ok = e->ndim == 4;
    for (int i = 0; ok && i < 4; i++) ok = e->shape[i] == want[i];
    if (!ok) {
        char have[96], exp[96];
        ag_fail("%s: tensor '%s': file has shape %s, the model expects the conv weight %s "
                "(out, in, kh, kw)",
                f->path, e->name, ag_format_dims(have, sizeof have, e->ndim, e->shape),
                ag_format_dims(exp, sizeof exp, 4, want));
    }
    const int64_t n = out * cin * kh * kw;
    if (n == 0) return;
    void *buf = ag_xmalloc(e->nbytes, "vit conv weight");
    gm_vit_conv_to_patch(buf, e->data, e->nbytes / (size_t)n, out, cin, kh, kw);
    ag_st_entry pe = *e; // the same tensor, permuted
    pe.shape[0] = out, pe.shape[1] = kh, pe.shape[2] = kw, pe.shape[3] = cin;
    pe.data = buf;
    ag_st_load_into(f, &pe, w);
    free(buf);
}

// The fixture's weights into m by name (extra tensors ignored), the patch weight through the
// conv permutation, as train/import.c does for a whole model.
static void load_vit(gm_vit *m, const ag_st_file *f) {
    for (int i = 0; i < m->n_params; i++) {
        ag_tensor *p = m->params[i];
        const ag_st_entry *e = ag_st_find(f, p->name);
        if (!e) ag_fail("%s: tensor '%s' is missing (vit)", f->path, p->name);
        if (p == m->patch_w)
            load_conv(f, e, p);
        else
            ag_st_load_into(f, e, p);
    }
}

static ag_st_file *open_fixture(const char *name) {
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/vit/%s.safetensors", name);
    tl_source_path(path, sizeof path, rel);
    return ag_st_open(path);
}

static const ag_st_entry *entry(const ag_st_file *f, const char *name) {
    const ag_st_entry *e = ag_st_find(f, name);
    if (!e) ag_fail("%s lacks %s (rerun tests/vit_reference.py)", f->path, name);
    return e;
}

// Reference runs ----------------------------------------------------------------------------

typedef struct {
    double hidden, pooled, loss, grads; // largest errors seen (grads over every tensor)
    int n_grads;
} vit_errs;

// Compares got (B, T, C) with test.hidden.K, whose rows include the CLS row.
static double hidden_err(ag_ctx *ctx, const ag_st_file *f, int k, bool drop_cls, ag_tensor *got) {
    char name[64];
    snprintf(name, sizeof name, "test.hidden.%d", k);
    const ag_st_entry *e = entry(f, name);
    double *want = tl_entry_f64(e), *g = tl_tensor_f64(ctx, got);
    int64_t B = e->shape[0], T = e->shape[1], C = e->shape[2], skip = drop_cls ? 1 : 0;
    double err = INFINITY;
    if (got->ndim == 3 && got->shape[0] == B && got->shape[1] == T - skip && got->shape[2] == C) {
        double *w = malloc(sizeof(double) * (size_t)(B * (T - skip) * C));
        for (int64_t b = 0; b < B; b++)
            memcpy(w + b * (T - skip) * C, want + (b * T + skip) * C,
                   sizeof(double) * (size_t)((T - skip) * C));
        err = tl_max_rel_err(g, w, B * (T - skip) * C);
        free(w);
    }
    free(want), free(g);
    return err;
}

// The model input of a fixture: CLIP-normalised u8 images, or the fbank.
static ag_tensor *fixture_input(ag_ctx *ctx, const ag_st_file *f, ag_dtype dt) {
    const ag_st_entry *img = ag_st_find(f, "test.images");
    if (img) return gm_vit_clip_pixels(ctx, tl_st_tensor(ctx, f, img, AG_U8), dt);
    return tl_st_tensor(ctx, f, entry(f, "test.fbank"), dt);
}

// Forward (and with grads, backward) of cfg on fixture f in dtype dt.
static vit_errs run_reference(const ag_st_file *f, const gm_vit_config *cfg, ag_dtype dt,
                              bool grads) {
    vit_errs r = {0};
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_vit *m = gm_vit_new(ctx, cfg, "", dt);
    load_vit(m, f);
    if (grads)
        for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    ag_tensor *x = fixture_input(ctx, f, dt);
    if (grads) ag_set_requires_grad(x, true);
    bool head = gm_vit_has_head(cfg);
    ag_tensor *hidden = NULL, *pooled = NULL;
    gm_vit_forward(ctx, m, x, &hidden, head ? &pooled : NULL);
    r.hidden = hidden_err(ctx, f, gm_vit_out_index(cfg), cfg->drop_cls, hidden);
    if (head) r.pooled = tl_rel_err_entry(ctx, pooled, entry(f, "test.pooled"));
    if (grads) {
        // L = sum(hidden * r_h) [+ sum(pooled * r_p)], sums as mean_all * count
        ag_tensor *rh = tl_st_tensor(ctx, f, entry(f, "test.r_hidden"), dt);
        ag_tensor *loss =
            ag_scale(ctx, ag_mean_all(ctx, ag_mul(ctx, hidden, rh)), (double)ag_numel(hidden));
        if (head) {
            ag_tensor *rp = tl_st_tensor(ctx, f, entry(f, "test.r_pooled"), dt);
            loss = ag_add(
                ctx, loss,
                ag_scale(ctx, ag_mean_all(ctx, ag_mul(ctx, pooled, rp)), (double)ag_numel(pooled)));
        }
        const char *lv = ag_st_meta(f, "test.loss");
        double want = lv ? atof(lv) : NAN;
        r.loss = fabs(ag_item(loss, 0) - want) / fmax(fabs(want), 1e-6);
        ag_backward(ctx, loss);
        r.grads = tl_rel_err_entry(ctx, x->grad, entry(f, "test.grad.input"));
        r.n_grads = 1;
        for (int i = 0; i < f->n; i++) {
            const char *n = f->entries[i].name;
            if (strncmp(n, "test.grad.", 10) || !strcmp(n, "test.grad.input")) continue;
            const ag_st_entry *e = &f->entries[i];
            ag_tensor *p = NULL;
            for (int j = 0; j < m->n_params && !p; j++)
                if (!strcmp(m->params[j]->name, n + 10)) p = m->params[j];
            TL_CHECK(p != NULL, "%s: no parameter %s", f->path, n + 10);
            if (!p) continue;
            double err;
            if (p == m->patch_w) { // the reference is in PyTorch's conv layout
                int64_t o = p->shape[0], kh = p->shape[1], kw = p->shape[2], ci = p->shape[3];
                double *want = tl_entry_f64(e),
                       *perm = malloc(sizeof(double) * (size_t)ag_numel(p));
                double *g = tl_tensor_f64(ctx, p->grad);
                gm_vit_conv_to_patch(perm, want, sizeof(double), o, ci, kh, kw);
                err = tl_max_rel_err(g, perm, ag_numel(p));
                free(want), free(perm), free(g);
            } else {
                err = tl_rel_err_entry(ctx, p->grad, e);
            }
            if (!(err <= r.grads)) r.grads = err;
            r.n_grads++;
        }
    }
    gm_vit_free(m);
    ag_ctx_free(ctx);
    return r;
}

static void check_reference(const char *label, const char *file, const gm_vit_config *cfg,
                            bool grads) {
    ag_st_file *f = open_fixture(file);
    const struct {
        ag_dtype dt;
        double tol_out, tol_grad;
    } runs[3] = {{AG_F32, TOL_OUT_F32, TOL_GRAD_F32},
                 {AG_F64, TOL_OUT_F64, TOL_GRAD_F64},
                 {AG_BF16, TOL_OUT_BF16, 0}};
    for (int k = 0; k < 3; k++) {
        bool g = grads && runs[k].dt != AG_BF16;
        vit_errs e = run_reference(f, cfg, runs[k].dt, g);
        const char *dn = ag_dtype_name(runs[k].dt);
        char pooled[32] = "   none ";
        if (gm_vit_has_head(cfg)) snprintf(pooled, sizeof pooled, "%.2e", e.pooled);
        TL_CHECK(e.hidden <= runs[k].tol_out, "%s %s: hidden state error %.3g", label, dn,
                 e.hidden);
        TL_CHECK(e.pooled <= runs[k].tol_out, "%s %s: pooled output error %.3g", label, dn,
                 e.pooled);
        if (g) {
            TL_CHECK(e.loss <= runs[k].tol_out, "%s %s: loss error %.3g", label, dn, e.loss);
            TL_CHECK(e.grads <= runs[k].tol_grad, "%s %s: gradient error %.3g", label, dn, e.grads);
            printf("vit %-22s %-4s hidden %.2e pooled %s loss %.2e grads %.2e (%d tensors)\n",
                   label, dn, e.hidden, pooled, e.loss, e.grads, e.n_grads);
        } else {
            printf("vit %-22s %-4s hidden %.2e pooled %s\n", label, dn, e.hidden, pooled);
        }
    }
    ag_st_close(f);
}

// The tiny configs of tests/vit_reference.py ----------------------------------------------------

static gm_vit_config tiny_clip(void) {
    gm_vit_config c = gm_vit_clip_l14_336_config();
    c.image_h = c.image_w = 28;
    c.width = 32, c.n_layers = 3, c.n_heads = 4, c.mlp = 64;
    c.head_norm = true; // post_layernorm: HF's pooler_output
    return c;
}

static gm_vit_config tiny_eva(void) {
    gm_vit_config c = gm_vit_eva_g14_config();
    c.image_h = c.image_w = 28;
    c.width = 24, c.n_layers = 3, c.n_heads = 4, c.mlp = (int64_t)(24 * 4.3637);
    c.out_layer = 2; // the checkpoint has one block more than runs, as eva_vit_g.pth
    return c;
}

static gm_vit_config tiny_audio(void) {
    gm_vit_config c = gm_vit_imagebind_audio_config();
    c.image_h = 38, c.image_w = 47; // 3 x 4 patches of 16 at stride 10, remainders dropped
    c.width = 32, c.n_layers = 2, c.n_heads = 4, c.mlp = 128;
    c.head_dim = 24;
    return c;
}

// The fixture's metadata must describe the configs above.
static void check_meta(const char *file, const char *key, double want) {
    ag_st_file *f = open_fixture(file);
    char k[64];
    snprintf(k, sizeof k, "config.%s", key);
    const char *v = ag_st_meta(f, k);
    TL_CHECK(v && atof(v) == want, "%s: metadata %s is %s, the test expects %g", file, k,
             v ? v : "missing", want);
    ag_st_close(f);
}

static void check_fixture_configs(void) {
    gm_vit_config c = tiny_clip(), e = tiny_eva(), a = tiny_audio();
    check_meta("clip", "width", (double)c.width);
    check_meta("clip", "layers", (double)c.n_layers);
    check_meta("clip", "mlp", (double)c.mlp);
    check_meta("clip", "out_layer", c.out_layer);
    check_meta("eva", "width", (double)e.width);
    check_meta("eva", "mlp", (double)e.mlp);
    check_meta("eva", "used", e.out_layer);
    check_meta("audio", "width", (double)a.width);
    check_meta("audio", "mel", (double)a.image_h);
    check_meta("audio", "frames", (double)a.image_w);
    check_meta("audio", "out_dim", (double)a.head_dim);
    check_meta("audio", "layers", (double)a.n_layers);
}

// Layer selection -----------------------------------------------------------------------------

static bool has_param(const gm_vit *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i]->name, name)) return true;
    return false;
}

static void check_layer_selection(void) {
    // LLaVA: hidden_states[-2] without the CLS row and no head: 2 of 3 blocks made and run
    gm_vit_config c = tiny_clip();
    c.head_norm = false;
    TL_CHECK(gm_vit_layers_used(&c) == 2, "clip -2: %d layers used", gm_vit_layers_used(&c));
    ag_st_file *f = open_fixture("clip");
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_vit *m = gm_vit_new(ctx, &c, "", AG_F32);
    TL_CHECK(has_param(m, "vision_model.encoder.layers.1.self_attn.q_proj.weight") &&
                 !has_param(m, "vision_model.encoder.layers.2.self_attn.q_proj.weight") &&
                 !has_param(m, "vision_model.post_layernorm.weight"),
             "clip -2: wrong blocks allocated");
    load_vit(m, f);
    ag_tensor *h = gm_vit_hidden(ctx, m, fixture_input(ctx, f, AG_F32));
    double err = hidden_err(ctx, f, 2, true, h);
    TL_CHECK(err <= TOL_OUT_F32, "clip hidden_states[-2] without head: error %.3g", err);
    TL_CHECK(h->shape[1] == gm_vit_out_tokens(&c) && h->shape[1] == 4, "clip -2: %lld tokens",
             (long long)h->shape[1]);
    gm_vit_free(m);

    // hidden_states[0]: the embeddings after pre_layrnorm, no block at all
    c.out_layer = 0, c.drop_cls = false;
    m = gm_vit_new(ctx, &c, "", AG_F32);
    TL_CHECK(m->n_layers_used == 0, "clip 0: %d blocks", m->n_layers_used);
    load_vit(m, f);
    h = gm_vit_hidden(ctx, m, fixture_input(ctx, f, AG_F32));
    err = hidden_err(ctx, f, 0, false, h);
    TL_CHECK(err <= TOL_OUT_F32, "clip hidden_states[0]: error %.3g", err);
    gm_vit_free(m);

    // the last block, by negative and positive index
    for (int k = 0; k < 2; k++) {
        c.out_layer = k ? 3 : -1;
        m = gm_vit_new(ctx, &c, "", AG_F32);
        load_vit(m, f);
        h = gm_vit_hidden(ctx, m, fixture_input(ctx, f, AG_F32));
        err = hidden_err(ctx, f, 3, false, h);
        TL_CHECK(err <= TOL_OUT_F32, "clip hidden_states[%d]: error %.3g", c.out_layer, err);
        gm_vit_free(m);
    }
    printf("vit layer selection: clip hidden_states[-2] / [0] / [-1] / [3] checked\n");
    ag_ctx_free(ctx);
    ag_st_close(f);

    // a prefix goes in front of every name
    ctx = ag_ctx_new(AG_CPU);
    gm_vit_config e = tiny_eva();
    m = gm_vit_new(ctx, &e, "visual_encoder.", AG_F32);
    TL_CHECK(has_param(m, "visual_encoder.blocks.1.attn.q_bias") &&
                 !has_param(m, "visual_encoder.blocks.2.attn.q_bias") &&
                 !has_param(m, "visual_encoder.blocks.0.attn.k_bias"),
             "eva: prefixed names or blocks wrong");
    gm_vit_init(m, 7, 0.02);
    TL_CHECK(ag_item(m->layers[0].ln1_w, 0) == 1.0 && ag_item(m->layers[0].q_b, 0) == 0.0 &&
                 ag_item(m->patch_w, 0) != 0.0,
             "eva: init");
    double plain = tl_sample_std(ctx, m->patch_w);
    gm_vit_free(m);
    // init_std replaces the caller's std for every normal draw (the sin-cos table stays)
    e.init_std = 0.1;
    m = gm_vit_new(ctx, &e, "visual_encoder.", AG_F32);
    gm_vit_init(m, 7, 0.02);
    double patch = tl_sample_std(ctx, m->patch_w), fc1 = tl_sample_std(ctx, m->layers[1].fc1_w);
    TL_CHECK(fabs(plain / 0.02 - 1) < 0.1 && fabs(patch / 0.1 - 1) < 0.1 &&
                 fabs(fc1 / 0.1 - 1) < 0.1,
             "eva: init_std 0.1: patch std %.4f, fc1 std %.4f (without it %.4f, want 0.02)", patch,
             fc1, plain);
    gm_vit_free(m);
    ag_ctx_free(ctx);
}

// The full-size presets: sizes only (allocating them takes gigabytes).
static void check_presets(void) {
    gm_vit_config c = gm_vit_clip_l14_336_config(), e = gm_vit_eva_g14_config(),
                  a = gm_vit_imagebind_audio_config();
    gm_vit_check_config(&c);
    gm_vit_check_config(&e);
    gm_vit_check_config(&a);
    TL_CHECK(gm_vit_patches(&c) == 576 && gm_vit_out_tokens(&c) == 576 &&
                 gm_vit_layers_used(&c) == 23,
             "clip preset: %lld tokens, %d layers", (long long)gm_vit_out_tokens(&c),
             gm_vit_layers_used(&c));
    TL_CHECK(gm_vit_out_tokens(&e) == 257 && gm_vit_layers_used(&e) == 39 && e.mlp == 6144 &&
                 e.width / e.n_heads == 88,
             "eva preset: %lld tokens, %d layers", (long long)gm_vit_out_tokens(&e),
             gm_vit_layers_used(&e));
    TL_CHECK(gm_vit_patches(&a) == 228 && gm_vit_out_tokens(&a) == 229 &&
                 gm_vit_layers_used(&a) == 12,
             "imagebind audio preset: %lld patches, %d layers", (long long)gm_vit_patches(&a),
             gm_vit_layers_used(&a));
}

// patchify + linear == a strided convolution --------------------------------------------------

static void check_conv_equivalence(void) {
    enum { B = 2, H = 13, W = 11, CI = 2, CO = 3, KH = 4, KW = 3, SH = 3, SW = 2 };
    const int64_t Nh = (H - KH) / SH + 1, Nw = (W - KW) / SW + 1;
    tl_rng rng = {.s = 31337};
    double x[B * H * W * CI], wc[CO * CI * KH * KW], wp[CO * CI * KH * KW], back[CO * CI * KH * KW];
    for (int i = 0; i < B * H * W * CI; i++) x[i] = tl_normal(&rng);
    for (int i = 0; i < CO * CI * KH * KW; i++) wc[i] = tl_normal(&rng);
    gm_vit_conv_to_patch(wp, wc, sizeof(double), CO, CI, KH, KW);
    gm_vit_patch_to_conv(back, wp, sizeof(double), CO, CI, KH, KW);
    TL_CHECK(!memcmp(back, wc, sizeof wc), "conv weight permutation does not round trip");
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *xt = ag_from_host(ctx, AG_F64, AG_SHAPE(B, H, W, CI), x);
    ag_tensor *wt = ag_from_host(ctx, AG_F64, AG_SHAPE(CO, KH * KW * CI), wp);
    ag_tensor *y = ag_linear(ctx, ag_patchify(ctx, xt, KH, KW, SH, SW), wt, NULL); // (B, N, CO)
    double *got = tl_tensor_f64(ctx, y), err = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Nh; i++)
            for (int64_t j = 0; j < Nw; j++)
                for (int64_t o = 0; o < CO; o++) { // PyTorch conv2d, weight (CO, CI, KH, KW)
                    double s = 0;
                    for (int64_t c = 0; c < CI; c++)
                        for (int64_t ky = 0; ky < KH; ky++)
                            for (int64_t kx = 0; kx < KW; kx++)
                                s += wc[((o * CI + c) * KH + ky) * KW + kx] *
                                     x[((b * H + i * SH + ky) * W + j * SW + kx) * CI + c];
                    err = fmax(err, fabs(got[((b * Nh + i) * Nw + j) * CO + o] - s));
                }
    TL_CHECK(err < 1e-12, "patchify + linear differs from conv2d by %.3g", err);
    printf("vit patchify + linear vs naive conv2d (stride 3x2, overlap): max |err| %.2e\n", err);
    free(got);
    ag_ctx_free(ctx);
}

// Bad input --------------------------------------------------------------------------------

static void check_errors(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_vit_config c = tiny_clip();
    gm_vit *m = gm_vit_new(ctx, &c, "", AG_F32);
    ag_tensor *wrong = ag_zeros(ctx, AG_F32, AG_SHAPE(2, 28, 30, 3));
    TL_EXPECT_FAIL(gm_vit_hidden(ctx, m, wrong), "vit: input", "f32[2,28,30,3]", "(B, 28, 28, 3)");
    ag_tensor *f64in = ag_zeros(ctx, AG_F64, AG_SHAPE(1, 28, 28, 3));
    TL_EXPECT_FAIL(gm_vit_hidden(ctx, m, f64in), "vit: input", "dtype", "f32");
    ag_tensor *gray = ag_zeros(ctx, AG_U8, AG_SHAPE(1, 28, 28, 1));
    TL_EXPECT_FAIL(gm_vit_clip_pixels(ctx, gray, AG_F32), "vit: images", "u8[1,28,28,1]");
    gm_vit_config e = tiny_eva(); // no head
    gm_vit *me = gm_vit_new(ctx, &e, "", AG_F32);
    TL_EXPECT_FAIL(gm_vit_pooled(ctx, me, ag_zeros(ctx, AG_F32, AG_SHAPE(1, 28, 28, 3))),
                   "vit: pooled", "no head");

    // configs
    gm_vit_config b = c;
    b.n_heads = 5;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "width 32", "heads 5");
    b = c, b.out_layer = -5;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "out_layer -5", "[-4, 3]");
    b = c, b.patch = 30;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "patch 30", "28x28");
    b = c, b.stride = 0;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "stride 0");
    b = e, b.pre_norm = true;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "pre_norm", "EVA");
    b = e, b.k_bias = true;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "k_bias", "EVA");
    b = c, b.bias_kv = true;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "bias_kv", "CLIP");
    b = tiny_audio(), b.k_bias = false;
    TL_EXPECT_FAIL(gm_vit_check_config(&b), "vit config", "fused", "ImageBind");

    gm_vit_free(me);
    gm_vit_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    check_fixture_configs();
    gm_vit_config c = tiny_clip(), e = tiny_eva(), a = tiny_audio();
    check_reference("clip", "clip", &c, true);
    check_reference("eva (2 of 3 blocks)", "eva", &e, true);
    check_reference("imagebind_audio", "audio", &a, true);
    check_layer_selection();
    check_presets();
    check_conv_equivalence();
    check_errors();
    return tl_summary("test_vit");
}
