// test_import.c: weight import (train/import.h) from the HF-named files of
// tests/fixtures/import/ (tests/make_import_fixtures.py) into the model of
// tests/fixtures/import/model.yaml.
//   - Llama, CLIP vision tower and BLIP-2 Q-Former, each as one file and as two shards with an
//     index, in f32, f16 and bf16, into f32 and bf16 models: every parameter equals the f32
//     reference rounded to the file's dtype and then to the model's, to nearest even (exact
//     comparisons; f32 into f32 is bit-exact). Names are mapped independently here (CLIP under
//     model.vision_tower., the Q-Former's HF names to LAVIS ones, conv weights permuted back);
//   - EVA (LAVIS names) and ImageBind audio, bit-exact; known leftovers (RoPE buffers, CLIP's
//     last block, post_layernorm, position_ids and text tower, the Q-Former's text FFN, EVA's
//     unused block, ImageBind's logit scale) are skipped;
//   - the 9 added rows: the mean of a V0-row table, or rows V0.. of a (V0 + 9)-row table;
//   - groundc checkpoints (our names, any subset, combined embedding tables), file prefixes;
//   - PyTorch checkpoints (tests/fixtures/torch/, tests/make_torch_fixtures.py): .pth and
//     pytorch_model*.bin of the same tensors, byte-equal and imported alike; their errors;
//   - one-line errors: missing, unexpected and mis-shaped tensors (name and both shapes), a
//     wrong dtype, a truncated file, a broken index, a part without its branch; the init:
//     block of a config (relative paths, unknown parts);
//   - config.json beside the weights (the fixtures' match model.yaml): shape-neutral
//     mismatches (heads, kv heads, RoPE base and scaling, eps, activation, cross-attention
//     frequency) of Llama, LLaVA's text_config, CLIP and BLIP-2 in one line naming each key and
//     both values, transformers' defaults for absent keys, other families' configs ignored;
//   - tied Llama embeddings (no lm_head.weight): lm_head = embed_tokens, the added rows too
//     (mean or rows V0..); untied or without config.json the error says why;
//   - the frame Q-Former from LAVIS' blip2_pretrained.pth naming (blip2-lavis.pth, the same
//     values): the same parameters as the HF-named import, the forward equal to LAVIS' computed
//     in torch (blip2-lavis-forward.safetensors); the same names after "model." as in
//     GroundingGPT's checkpoints; LAVIS leftovers of its Q-Formers in init.checkpoint.
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "autograd/torch_file.h"
#include "model/groundinggpt.h"
#include "testlib.h"
#include "train/import.h"
#include "train/model_config.h"

static char fixtures[1024], tmp[256];

static gm_groundinggpt_config fixture_config(ag_dtype dt) {
    char path[1100];
    snprintf(path, sizeof path, "%s/model.yaml", fixtures);
    gm_groundinggpt_config c;
    tr_model_config_load(path, &c);
    c.dtype = dt;
    return c;
}

static gm_groundinggpt *new_model(ag_ctx *ctx, ag_dtype dt, uint64_t seed) {
    gm_groundinggpt_config c = fixture_config(dt);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    gm_groundinggpt_init(m, seed, 0.3); // values an import must overwrite
    return m;
}

// x rounded to `bits` significant bits, to nearest even; subnormals below 2^min_exp steps.
static float round_bits(float x, int bits, int min_exp) {
    if (x == 0 || !isfinite(x)) return x;
    int e;
    frexp(x, &e);
    int ulp = e - bits;
    if (ulp < min_exp) ulp = min_exp;
    return (float)ldexp(nearbyint(ldexp((double)x, -ulp)), ulp);
}
static float to_dtype(float x, const char *dt) {
    if (!strcmp(dt, "f16")) return round_bits(x, 11, -24);
    if (!strcmp(dt, "bf16")) return round_bits(x, 8, -133);
    return x;
}

// The values of t as floats (f32 or bf16 tensors).
static float *host_values(const ag_tensor *t) {
    int64_t n = ag_numel(t);
    float *h = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (t->dtype == AG_F32) {
        ag_copy_to_host(t, h);
    } else {
        uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
        ag_copy_to_host(t, b);
        for (int64_t i = 0; i < n; i++) h[i] = ag_bf16_to_f32(b[i]);
        free(b);
    }
    return h;
}

// The file name of model parameter `name` in the fixture of `part`, or NULL if not its.
// Written apart from train/import.c (plain string rules) so that both must agree.
static bool file_name(tr_init_part part, const char *name, char *out, size_t n) {
    const char *roots[] = {"", "model.vision_tower.", "model.visual_encoder.", "",
                           "model.audio_encoder."};
    if (part == TR_INIT_LLM) {
        if (strstr(name, "added_rows") ||
            (strncmp(name, "model.embed_tokens", 18) && strncmp(name, "model.layers.", 13) &&
             strncmp(name, "model.norm", 10) && strncmp(name, "lm_head", 7)))
            return false;
        snprintf(out, n, "%s", name);
        return true;
    }
    if (part == TR_INIT_FRAME_QFORMER) {
        if (!strcmp(name, "model.query_tokens")) return snprintf(out, n, "query_tokens") > 0;
        if (!strncmp(name, "model.ln_vision.", 16))
            return snprintf(out, n, "vision_model.post_layernorm.%s", name + 16) > 0;
        if (strncmp(name, "model.Qformer.bert.", 19)) return false;
        char buf[512];
        snprintf(buf, sizeof buf, "qformer.%s", name + 19);
        const char *from[2] = {"embeddings.LayerNorm.", "attention.self."};
        const char *to[2] = {"layernorm.", "attention.attention."};
        for (int r = 0; r < 2; r++) {
            char *at = strstr(buf, from[r]);
            if (!at) continue;
            char rest[512];
            snprintf(rest, sizeof rest, "%s", at + strlen(from[r]));
            snprintf(at, sizeof buf - (size_t)(at - buf), "%s%s", to[r], rest);
        }
        snprintf(out, n, "%s", buf);
        return true;
    }
    size_t k = strlen(roots[part]);
    if (strncmp(name, roots[part], k)) return false;
    snprintf(out, n, "%s", name + k);
    return true;
}

// Counts parameters of the part whose values differ from the f32 reference file's, rounded
// to file_dt and then to the model's dtype. Returns the number of parameters compared.
static int compare_part(const gm_groundinggpt *m, tr_init_part part, const ag_st_file *ref,
                        const char *file_dt, int *bad) {
    int compared = 0;
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *p = m->params->tensors[i];
        char fname[512];
        if (!file_name(part, p->name, fname, sizeof fname)) continue;
        const ag_st_entry *e = ag_st_find(ref, fname);
        if (!e) {
            fprintf(stderr, "%s: no reference %s\n", p->name, fname);
            (*bad)++;
            continue;
        }
        int64_t n = ag_numel(p);
        float *got = host_values(p), *want = malloc(sizeof(float) * (size_t)n);
        const float *src = e->data;
        bool conv = p->ndim == 4 && e->ndim == 4 && p->shape[3] != e->shape[3];
        if (conv) { // back to PyTorch's (out, cin, kh, kw)
            float *g2 = malloc(sizeof(float) * (size_t)n);
            gm_vit_patch_to_conv(g2, got, sizeof(float), p->shape[0], p->shape[3], p->shape[1],
                                 p->shape[2]);
            free(got);
            got = g2;
        }
        // The base table is the file's first V0 rows.
        for (int64_t k = 0; k < n; k++) {
            float v = to_dtype(src[k], file_dt);
            want[k] = p->dtype == AG_BF16 ? round_bits(v, 8, -133) : v;
        }
        if (memcmp(got, want, sizeof(float) * (size_t)n)) {
            fprintf(stderr, "%s (%s, file %s, model %s): values differ\n", p->name, fname, file_dt,
                    ag_dtype_name(p->dtype));
            (*bad)++;
        }
        compared++;
        free(got);
        free(want);
    }
    return compared;
}

static void test_matrix(void) {
    const char *parts[3] = {"llama", "clip", "blip2"};
    const tr_init_part ids[3] = {TR_INIT_LLM, TR_INIT_IMAGE_ENCODER, TR_INIT_FRAME_QFORMER};
    const int expect[3] = {2 + 9 * 2 + 1, 5 + 2 * 16, 3 + 2 + 2 * 16 + 10}; // parameters
    const char *dts[3] = {"f32", "f16", "bf16"}, *layouts[2] = {"single", "sharded"};
    const ag_dtype mdts[2] = {AG_F32, AG_BF16};
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    for (int p = 0; p < 3; p++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s-f32-single/model.safetensors", fixtures, parts[p]);
        ag_st_file *ref = ag_st_open(path);
        for (int d = 0; d < 3; d++)
            for (int l = 0; l < 2; l++)
                for (int md = 0; md < 2; md++) {
                    gm_groundinggpt *m = new_model(ctx, mdts[md], 100 + (uint64_t)d);
                    snprintf(path, sizeof path, "%s/%s-%s-%s", fixtures, parts[p], dts[d],
                             layouts[l]);
                    int loaded = tr_import_part(m, ids[p], path, NULL);
                    int bad = 0, compared = compare_part(m, ids[p], ref, dts[d], &bad);
                    TL_CHECK(bad == 0 && compared == expect[p] && loaded == expect[p],
                             "%s %s %s into %s: %d loaded, %d compared, %d wrong", parts[p], dts[d],
                             layouts[l], ag_dtype_name(mdts[md]), loaded, compared, bad);
                    if (p == 0 && md == 0) { // the added rows: the mean of the base rows
                        const int64_t V = 40, C = 16;
                        float *base = host_values(m->llm->embed),
                              *add = host_values(m->embed_added);
                        double worst = 0;
                        for (int64_t c = 0; c < C; c++) {
                            double s = 0;
                            for (int64_t v = 0; v < V; v++) s += base[v * C + c];
                            for (int r = 0; r < 9; r++)
                                worst = fmax(worst, fabs(add[r * C + c] - (float)(s / V)));
                        }
                        TL_CHECK(worst == 0, "added rows = mean of the base rows (%g)", worst);
                        free(base);
                        free(add);
                    }
                    gm_groundinggpt_free(m);
                }
        ag_st_close(ref);
    }
    // EVA and ImageBind (single f32 files).
    const char *single[2] = {"eva-f32.safetensors", "imagebind-f32.safetensors"};
    const tr_init_part sp[2] = {TR_INIT_VIDEO_ENCODER, TR_INIT_AUDIO_ENCODER};
    for (int k = 0; k < 2; k++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", fixtures, single[k]);
        gm_groundinggpt *m = new_model(ctx, AG_F32, 5);
        int loaded = tr_import_part(m, sp[k], path, NULL);
        ag_st_file *ref = ag_st_open(path);
        int bad = 0, compared = compare_part(m, sp[k], ref, "f32", &bad);
        TL_CHECK(bad == 0 && compared == loaded && loaded > 20, "%s: %d loaded, %d wrong",
                 single[k], loaded, bad);
        ag_st_close(ref);
        gm_groundinggpt_free(m);
    }
    ag_ctx_free(ctx);
}

// Writes dst from the tensors of src: drop one, reshape one (same bytes), retype one, and add
// a copy of another under a new name (each NULL for none).
typedef struct {
    const char *drop;
    const char *reshape;
    int ndim;
    int64_t shape[4];
    const char *retype, *dtype;
    const char *add, *add_from;
    const char *poison; // a NaN written into its element 5
} edit;

static void rewrite(const char *src, const char *dst, const edit *ed) {
    ag_st_file *f = ag_st_open(src);
    ag_st_writer *w = ag_st_writer_new();
    for (int i = 0; i < f->n; i++) {
        const ag_st_entry *e = &f->entries[i];
        if (ed->drop && !strcmp(e->name, ed->drop)) continue;
        const int64_t *shape = e->shape;
        int ndim = e->ndim;
        const char *dt = e->dtype;
        if (ed->reshape && !strcmp(e->name, ed->reshape)) shape = ed->shape, ndim = ed->ndim;
        if (ed->retype && !strcmp(e->name, ed->retype)) dt = ed->dtype;
        if (ed->poison && !strcmp(e->name, ed->poison)) {
            unsigned char *copy = malloc(e->nbytes);
            if (!copy) abort();
            memcpy(copy, e->data, e->nbytes);
            if (!strcmp(dt, "F32"))
                memcpy(copy + 5 * 4, &(float){NAN}, 4);
            else // F16 and BF16 NaNs
                memcpy(copy + 5 * 2, &(uint16_t){!strcmp(dt, "F16") ? 0x7e00 : 0x7fc0}, 2);
            ag_st_add_raw(w, e->name, dt, ndim, shape, copy, e->nbytes);
            free(copy);
        } else {
            ag_st_add_raw(w, e->name, dt, ndim, shape, e->data, e->nbytes);
        }
        if (ed->add_from && !strcmp(e->name, ed->add_from))
            ag_st_add_raw(w, ed->add, e->dtype, e->ndim, e->shape, e->data, e->nbytes);
    }
    ag_st_write(w, dst);
    ag_st_close(f);
}

static void test_errors(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = new_model(ctx, AG_F32, 9);
    char llama[1200], clip[1200], bad[512];
    snprintf(llama, sizeof llama, "%s/llama-f32-single/model.safetensors", fixtures);
    snprintf(clip, sizeof clip, "%s/clip-f32-single/model.safetensors", fixtures);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmp);

    rewrite(llama, bad, &(edit){.drop = "model.layers.1.mlp.up_proj.weight"});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL), "bad.safetensors",
                   "'model.layers.1.mlp.up_proj.weight'", "[24,16]", "missing");
    rewrite(llama, bad,
            &(edit){.add = "model.layers.2.mlp.up_proj.weight",
                    .add_from = "model.layers.1.mlp.up_proj.weight"});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL), "unexpected tensor",
                   "'model.layers.2.mlp.up_proj.weight'", "[24,16]");
    rewrite(
        llama, bad,
        &(edit){.reshape = "model.layers.0.self_attn.k_proj.weight", .ndim = 2, .shape = {16, 8}});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL),
                   "'model.layers.0.self_attn.k_proj.weight' has shape [16,8]", "needs [8,16]");
    // a NaN in a pretrained weight (f32, f16, bf16) is named at import with its index, not found
    // as a non-finite loss steps later
    for (volatile int k = 0; k < 3; k++) { // (volatile: TL_EXPECT_FAIL longjmps)
        static const char *const dt[3] = {"f32", "f16", "bf16"};
        char src[1200];
        snprintf(src, sizeof src, "%s/llama-%s-single/model.safetensors", fixtures, dt[k]);
        rewrite(src, bad, &(edit){.poison = "model.layers.1.self_attn.v_proj.weight"});
        TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL), "bad.safetensors",
                       "tensor 'model.layers.1.self_attn.v_proj.weight': non-finite value nan at "
                       "[0,5]");
    }
    rewrite(llama, bad, &(edit){.retype = "model.norm.weight", .dtype = "I32"});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL), "'model.norm.weight'", "dtype I32");
    rewrite(clip, bad,
            &(edit){.reshape = "vision_model.embeddings.patch_embedding.weight",
                    .ndim = 4,
                    .shape = {16, 4, 4, 3}});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_IMAGE_ENCODER, bad, NULL),
                   "'vision_model.embeddings.patch_embedding.weight' has shape [16,4,4,3]",
                   "needs [16,3,4,4]");
    rewrite(clip, bad, &(edit){.drop = "vision_model.encoder.layers.1.mlp.fc2.bias"});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_IMAGE_ENCODER, bad, NULL),
                   "'vision_model.encoder.layers.1.mlp.fc2.bias'", "missing");
    // CLIP's 4th block would be unexpected: the config has 3 layers.
    rewrite(clip, bad,
            &(edit){.add = "vision_model.encoder.layers.3.mlp.fc2.bias",
                    .add_from = "vision_model.encoder.layers.1.mlp.fc2.bias"});
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_IMAGE_ENCODER, bad, NULL), "unexpected tensor",
                   "layers.3.mlp.fc2.bias");

    // Truncated file.
    size_t n = 0;
    char *buf = tl_slurp(llama, &n);
    FILE *out = fopen(bad, "wb");
    TL_CHECK(buf && out && fwrite(buf, 1, n - 100, out) == n - 100 && !fclose(out), "write %s",
             bad);
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, bad, NULL), "bad.safetensors");
    free(buf);
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, "/nonexistent/weights", NULL),
                   "/nonexistent/weights", "cannot open");
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, tmp, NULL), "holds none of model.safetensors",
                   "pytorch_model.bin");

    // A broken index: one tensor in the wrong shard; a shard tensor the index does not list.
    char dir[600], p[700], src[1300];
    snprintf(dir, sizeof dir, "%s/sharded", tmp);
    mkdir(dir, 0777);
    for (int s = 1; s <= 2; s++) {
        snprintf(src, sizeof src, "%s/llama-f32-sharded/model-0000%d-of-00002.safetensors",
                 fixtures, s);
        snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, s);
        rewrite(src, p, &(edit){0});
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    out = fopen(p, "w");
    fprintf(out, "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\", "
                 "\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}");
    fclose(out);
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, dir, NULL), "model.safetensors.index.json",
                   "tensor '");
    out = fopen(p, "w");
    fprintf(out, "{\"weight_map\": 7}");
    fclose(out);
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, dir, NULL), "no \"weight_map\"");

    // Parts whose branch the model lacks.
    gm_groundinggpt_config c = fixture_config(AG_F32);
    c.has[GM_MOD_VIDEO] = false;
    gm_groundinggpt *nv = gm_groundinggpt_new(ctx, &c);
    TL_EXPECT_FAIL(tr_import_part(nv, TR_INIT_FRAME_QFORMER, llama, NULL), "frame_qformer",
                   "no video branch");
    gm_groundinggpt_free(nv);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

static bool same_values(const ag_tensor *a, const ag_tensor *b) {
    size_t n = ag_nbytes(a);
    void *x = malloc(n), *y = malloc(n);
    ag_copy_to_host(a, x);
    ag_copy_to_host(b, y);
    bool same = ag_nbytes(b) == n && !memcmp(x, y, n);
    free(x);
    free(y);
    return same;
}

static void test_checkpoint_and_prefix(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *a = new_model(ctx, AG_F32, 1), *b = new_model(ctx, AG_F32, 2);
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/ckpt", tmp);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    // Our names, every parameter: a round trip.
    ag_st_writer *w = ag_st_writer_new();
    for (int i = 0; i < a->params->n; i++)
        ag_st_add(w, a->params->tensors[i]->name, a->params->tensors[i]);
    ag_st_write(w, path);
    int loaded = tr_import_part(b, TR_INIT_CHECKPOINT, dir, NULL);
    bool all = loaded == a->params->n;
    for (int i = 0; i < a->params->n; i++)
        all &= same_values(a->params->tensors[i], b->params->tensors[i]);
    TL_CHECK(all, "checkpoint round trip: %d of %d tensors, all equal", loaded, a->params->n);

    // GroundingGPT's layout: (V0 + 9, C) tables, no added_rows tensors; only the LLM.
    gm_groundinggpt *c = new_model(ctx, AG_F32, 3);
    w = ag_st_writer_new();
    ag_tensor *e2[2] = {a->llm->embed, a->embed_added},
              *h2[2] = {a->llm->lm_head, a->lm_head_added};
    ag_st_add(w, "model.embed_tokens.weight", ag_concat(ctx, 2, e2, 0));
    ag_st_add(w, "lm_head.weight", ag_concat(ctx, 2, h2, 0));
    ag_st_add(w, "model.norm.weight", a->llm->norm);
    ag_st_write(w, path);
    loaded = tr_import_part(c, TR_INIT_CHECKPOINT, path, NULL);
    TL_CHECK(loaded == 3 && same_values(c->embed_added, a->embed_added) &&
                 same_values(c->lm_head_added, a->lm_head_added) &&
                 same_values(c->llm->embed, a->llm->embed) &&
                 !same_values(c->llm->layers[0].wq, a->llm->layers[0].wq),
             "a (V0 + 9)-row checkpoint splits into base and added rows (%d tensors)", loaded);
    // Added rows both inside the table and on their own: ambiguous.
    w = ag_st_writer_new();
    ag_st_add(w, "model.embed_tokens.weight", ag_concat(ctx, 2, e2, 0));
    ag_st_add(w, "model.embed_tokens.added_rows", a->embed_added);
    ag_st_write(w, path);
    TL_EXPECT_FAIL(tr_import_part(c, TR_INIT_CHECKPOINT, path, NULL), "holds the added rows",
                   "model.embed_tokens.added_rows");
    w = ag_st_writer_new();
    ag_st_add(w, "model.not_a_parameter", a->llm->norm);
    ag_st_write(w, path);
    TL_EXPECT_FAIL(tr_import_part(c, TR_INIT_CHECKPOINT, path, NULL), "unexpected tensor",
                   "'model.not_a_parameter'", "[16]");
    ag_step_reset(ctx);

    // A CLIP tower saved inside a bigger model, LLaVA-1.5 style: prefix mapping.
    char clip[1200], big[700];
    snprintf(clip, sizeof clip, "%s/clip-f32-single/model.safetensors", fixtures);
    snprintf(big, sizeof big, "%s/llava.safetensors", tmp);
    ag_st_file *f = ag_st_open(clip);
    w = ag_st_writer_new();
    for (int i = 0; i < f->n; i++) {
        char name[512];
        snprintf(name, sizeof name, "model.vision_tower.vision_tower.%s", f->entries[i].name);
        ag_st_add_raw(w, name, f->entries[i].dtype, f->entries[i].ndim, f->entries[i].shape,
                      f->entries[i].data, f->entries[i].nbytes);
    }
    ag_st_add(w, "model.layers.0.mlp.up_proj.weight", a->llm->layers[0].w_up); // not the tower's
    ag_st_write(w, big);
    int bad = 0;
    loaded = tr_import_part(c, TR_INIT_IMAGE_ENCODER, big, "model.vision_tower.vision_tower.");
    int compared = compare_part(c, TR_INIT_IMAGE_ENCODER, f, "f32", &bad);
    TL_CHECK(bad == 0 && loaded == compared && loaded > 0, "prefix mapping: %d loaded, %d wrong",
             loaded, bad);
    ag_st_close(f);
    gm_groundinggpt_free(a);
    gm_groundinggpt_free(b);
    gm_groundinggpt_free(c);
    ag_ctx_free(ctx);
}

// Counts the entries of a torch file (or of the union of two shards) that differ from the
// safetensors file's of the same name in dtype, shape or bytes, or that one of them lacks.
static int differing_entries(ag_st_file *const *pt, int n_pt, const ag_st_file *st) {
    int bad = 0, seen = 0;
    for (int k = 0; k < n_pt; k++)
        for (int i = 0; i < pt[k]->n; i++, seen++) {
            const ag_st_entry *a = &pt[k]->entries[i], *b = ag_st_find(st, a->name);
            bool same = b && !strcmp(a->dtype, b->dtype) && a->ndim == b->ndim &&
                        !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) &&
                        a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes);
            if (!same) fprintf(stderr, "%s: %s differs from %s\n", pt[k]->path, a->name, st->path);
            bad += !same;
        }
    return bad + abs(st->n - seen);
}

// PyTorch checkpoints (autograd/torch_file.h) of the same tensors as the safetensors fixtures
// (tests/make_torch_fixtures.py): every entry byte-equal, including views into shared
// storages, transposed and strided tensors, pickle protocols 2 and 4, a training checkpoint's
// "model" entry, and int64 buffers; then the same imports as from safetensors.
static void test_torch_files(void) {
    char torch_dir[1200], path[1300], ref[1300];
    snprintf(torch_dir, sizeof torch_dir, "%.1000s/../torch", fixtures);
    const struct {
        const char *files[2], *ref, *import, *file_dt;
        const char *ref_f32; // the f32 values the file's were rounded from
        tr_init_part part;
        int expect; // parameters
    } cases[] = {
        {{"eva.pth"},
         "eva-f32.safetensors",
         "eva.pth",
         "f32",
         "eva-f32.safetensors",
         TR_INIT_VIDEO_ENCODER,
         0},
        {{"imagebind.pth"},
         "imagebind-f32.safetensors",
         "imagebind.pth",
         "f32",
         "imagebind-f32.safetensors",
         TR_INIT_AUDIO_ENCODER,
         0},
        {{"llama-bf16-bin/pytorch_model-00001-of-00002.bin",
          "llama-bf16-bin/pytorch_model-00002-of-00002.bin"},
         "llama-bf16-single/model.safetensors",
         "llama-bf16-bin",
         "bf16",
         "llama-f32-single/model.safetensors",
         TR_INIT_LLM,
         2 + 9 * 2 + 1},
        {{"clip-f16-bin/pytorch_model.bin"},
         "clip-f16-single/model.safetensors",
         "clip-f16-bin",
         "f16",
         "clip-f32-single/model.safetensors",
         TR_INIT_IMAGE_ENCODER,
         5 + 2 * 16},
    };
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        ag_st_file *pt[2] = {NULL, NULL};
        int n_pt = 0;
        for (; n_pt < 2 && cases[c].files[n_pt]; n_pt++) {
            snprintf(path, sizeof path, "%s/%s", torch_dir, cases[c].files[n_pt]);
            TL_CHECK(ag_pt_is_torch_file(path), "%s is recognised as a torch file", path);
            pt[n_pt] = ag_pt_open(path);
        }
        snprintf(ref, sizeof ref, "%s/%s", fixtures, cases[c].ref);
        ag_st_file *st = ag_st_open(ref);
        TL_CHECK(!ag_pt_is_torch_file(ref), "%s is not a torch file", cases[c].ref);
        int diff = differing_entries(pt, n_pt, st);
        TL_CHECK(diff == 0, "%s: %d tensors, %d differ from %s", cases[c].files[0], st->n, diff,
                 cases[c].ref);
        for (int k = 0; k < n_pt; k++) ag_st_close(pt[k]);
        ag_st_close(st);

        // Imported as from the f32 safetensors reference, rounded to the file's dtype.
        gm_groundinggpt *m = new_model(ctx, AG_F32, 11);
        snprintf(path, sizeof path, "%s/%s", torch_dir, cases[c].import);
        int loaded = tr_import_part(m, cases[c].part, path, NULL);
        snprintf(ref, sizeof ref, "%s/%s", fixtures, cases[c].ref_f32);
        st = ag_st_open(ref);
        int bad = 0, compared = compare_part(m, cases[c].part, st, cases[c].file_dt, &bad);
        TL_CHECK(bad == 0 && compared == loaded && loaded > 20 &&
                     (!cases[c].expect || loaded == cases[c].expect),
                 "import of %s: %d loaded, %d compared, %d wrong", cases[c].import, loaded,
                 compared, bad);
        ag_st_close(st);
        gm_groundinggpt_free(m);
    }
    ag_ctx_free(ctx);

    // A small file read directly, and the same tensor inside a DeepSpeed checkpoint: names,
    // shape, values.
    const char *smalls[2] = {"small.pth", "deepspeed.pt"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", torch_dir, smalls[k]);
        ag_st_file *f = ag_pt_open(path);
        const ag_st_entry *w = f->n == 1 ? ag_st_find(f, "w") : NULL;
        bool ok = w && !strcmp(w->dtype, "F32") && w->ndim == 2 && w->shape[0] == 2 &&
                  w->shape[1] == 3 && w->nbytes == 24;
        for (int i = 0; ok && i < 6; i++) ok = ((const float *)w->data)[i] == (float)i;
        TL_CHECK(ok, "%s: w = arange(6).reshape(2, 3)", smalls[k]);
        ag_st_close(f);
    }

    // One-line errors naming the file.
    const struct {
        const char *file, *want;
    } broken[] = {
        {"legacy.pth", "the legacy torch format"},
        {"deflated.pth", "data.pkl is compressed"},
        {"no_storage.pth", "tensor 'w': its storage"},
        {"no_pickle.zip", "without <name>/data.pkl"},
    };
    for (size_t k = 0; k < sizeof broken / sizeof *broken; k++) {
        snprintf(path, sizeof path, "%s/%s", torch_dir, broken[k].file);
        TL_CHECK(ag_pt_is_torch_file(path), "%s starts like a torch file", broken[k].file);
        TL_EXPECT_FAIL_SHOWN(ag_pt_open(path), broken[k].file, broken[k].want);
    }
    // Truncated: the zip directory is at the end.
    size_t n = 0;
    snprintf(path, sizeof path, "%s/eva.pth", torch_dir);
    char *bytes = tl_slurp(path, &n), cut[600];
    snprintf(cut, sizeof cut, "%s/cut.pth", tmp);
    FILE *out = fopen(cut, "wb");
    TL_CHECK(bytes && out && fwrite(bytes, 1, n - 200, out) == n - 200 && !fclose(out), "write %s",
             cut);
    free(bytes);
    ag_ctx *ctx2 = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = new_model(ctx2, AG_F32, 12);
    TL_EXPECT_FAIL_SHOWN(tr_import_part(m, TR_INIT_VIDEO_ENCODER, cut, NULL), "cut.pth", "zip");
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx2);
}

// A folder tmp/<name> holding config.json (text) and model.safetensors, a copy of src (a file
// of the fixtures) with ed applied (NULL: unchanged). Returns the folder.
static const char *hf_folder(const char *name, const char *src, const edit *ed, const char *json) {
    static char dir[700];
    char path[800];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rewrite(src, path, ed ? ed : &(edit){0});
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    if (json) {
        FILE *f = fopen(path, "w");
        TL_CHECK(f && fputs(json, f) >= 0 && !fclose(f), "write %s", path);
    }
    return dir;
}

// config.json beside the weights: every shape-neutral field that model.yaml also sets must
// agree (one line naming each key, its value and the YAML's), absent fields count as
// transformers' defaults, configs of other families are not compared.
static void test_hf_config(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = new_model(ctx, AG_F32, 21);
    char llama[1200], clip[1200], blip2[1200], file[800];
    snprintf(llama, sizeof llama, "%s/llama-f32-single/model.safetensors", fixtures);
    snprintf(clip, sizeof clip, "%s/clip-f32-single/model.safetensors", fixtures);
    snprintf(blip2, sizeof blip2, "%s/blip2-f32-single/model.safetensors", fixtures);
#define LLAMA_SIZES                                                                                \
    "\"vocab_size\": 40, \"hidden_size\": 16, \"intermediate_size\": 24, "                         \
    "\"num_hidden_layers\": 2"
    // Heads 4 / kv 2 give the same q/k/v shapes as the YAML's 2 / 1 over dim 16.
    const char *dir = hf_folder("cfg_llm", llama, NULL,
                                "{\"model_type\": \"llama\", " LLAMA_SIZES
                                ", \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                                "\"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-05}");
    TL_EXPECT_FAIL_SHOWN(tr_import_part(m, TR_INIT_LLM, dir, NULL), "cfg_llm/config.json",
                         "num_attention_heads is 4 where the model YAML has llm.heads 2",
                         "num_key_value_heads is 2 where the model YAML has llm.kv_heads 1",
                         "rope_theta is 500000 where the model YAML has llm.rope_theta 10000");
    snprintf(file, sizeof file, "%s/model.safetensors", dir); // a file in such a folder too
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, file, NULL), "cfg_llm/config.json",
                   "llm.heads 2");
    // Absent: LlamaConfig's rms_norm_eps 1e-6 and 32 heads; num_key_value_heads follows heads.
    dir = hf_folder("cfg_llm", llama, NULL,
                    "{\"model_type\": \"llama\", " LLAMA_SIZES ", \"num_key_value_heads\": 1, "
                    "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}");
    TL_EXPECT_FAIL_SHOWN(tr_import_part(m, TR_INIT_LLM, dir, NULL),
                         "num_attention_heads is 32 (absent: transformers' default) where the "
                         "model YAML has llm.heads 2",
                         "rms_norm_eps is 1e-06 (absent: transformers' default) where the model "
                         "YAML has llm.norm_eps 1e-05",
                         "rope_scaling is {\"type\":\"linear\",\"factor\":2}");
    // a null is no default (transformers takes it as None, which its model fails on)
    dir = hf_folder("cfg_llm", llama, NULL,
                    "{\"model_type\": \"llama\", " LLAMA_SIZES ", \"num_attention_heads\": 2, "
                    "\"num_key_value_heads\": 1, \"rms_norm_eps\": null}");
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, dir, NULL), "cfg_llm/config.json",
                   "rms_norm_eps is null, not a number");
    dir = hf_folder("cfg_llm", llama, NULL,
                    "{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"llama\", "
                    "\"vocab_size\": 49, \"hidden_size\": 16, \"intermediate_size\": 24, "
                    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"rms_norm_eps\": "
                    "1e-05, \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": "
                    "10000.0}}}");
    TL_EXPECT_FAIL_SHOWN(tr_import_part(m, TR_INIT_LLM, dir, NULL),
                         "text_config.num_key_value_heads is 2 (absent: transformers' default) "
                         "where the model YAML has llm.kv_heads 1",
                         "text_config.rope_parameters is {\"rope_type\":\"yarn\"");
    // LLaVA-style, matching: vocab V0 + 9 (the added tokens) is this model's too; transformers
    // 5.x's rope_parameters.
    dir = hf_folder("cfg_llm", llama, NULL,
                    "{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"llama\", "
                    "\"vocab_size\": 49, \"hidden_size\": 16, \"intermediate_size\": 24, "
                    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                    "\"num_key_value_heads\": 1, \"rms_norm_eps\": 1e-05, \"rope_parameters\": "
                    "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}, \"max_position_"
                    "embeddings\": 4096}, \"vision_config\": {\"hidden_size\": 1024}}");
    TL_CHECK(tr_import_part(m, TR_INIT_LLM, dir, NULL) == 21, "a matching LLaVA text_config");
    // Another family's config beside the file says nothing about the LLM.
    dir = hf_folder("cfg_llm", llama, NULL,
                    "{\"model_type\": \"clip\", \"text_config\": {\"model_type\": "
                    "\"clip_text_model\", \"num_attention_heads\": 8}}");
    TL_CHECK(tr_import_part(m, TR_INIT_LLM, dir, NULL) == 21, "a CLIP config.json beside Llama");
    dir = hf_folder("cfg_llm", llama, NULL, "{\"model_type\": ");
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_LLM, dir, NULL), "cfg_llm/config.json",
                   "not a JSON object");

    // CLIP: heads 4 over width 16 keep every shape; GELU and eps change the values.
    dir = hf_folder("cfg_clip", clip, NULL,
                    "{\"model_type\": \"clip\", \"vision_config\": {\"hidden_size\": 16, "
                    "\"intermediate_size\": 32, \"num_hidden_layers\": 3, "
                    "\"num_attention_heads\": 4, \"image_size\": 8, \"patch_size\": 4, "
                    "\"hidden_act\": \"gelu\", \"layer_norm_eps\": 1e-06}}");
    TL_EXPECT_FAIL_SHOWN(
        tr_import_part(m, TR_INIT_IMAGE_ENCODER, dir, NULL), "cfg_clip/config.json",
        "vision_config.num_attention_heads is 4 where the model YAML has image.encoder.heads 2",
        "vision_config.hidden_act is gelu where the model YAML's image.encoder (CLIP) uses "
        "quick_gelu",
        "vision_config.layer_norm_eps is 1e-06 where the model YAML has image.encoder.norm_eps "
        "1e-05");
    // CLIPVisionModel's own config; defaults quick_gelu and 1e-5 as the YAML's.
    dir = hf_folder("cfg_clip", clip, NULL,
                    "{\"model_type\": \"clip_vision_model\", \"hidden_size\": 16, "
                    "\"intermediate_size\": 32, \"num_hidden_layers\": 3, "
                    "\"num_attention_heads\": 2, \"image_size\": 8, \"patch_size\": 4}");
    TL_CHECK(tr_import_part(m, TR_INIT_IMAGE_ENCODER, dir, NULL) == 37,
             "a matching CLIPVisionModel config");

    // BLIP-2: heads, eps, cross-attention frequency and activation.
    dir = hf_folder("cfg_blip2", blip2, NULL,
                    "{\"model_type\": \"blip-2\", \"num_query_tokens\": 4, \"qformer_config\": "
                    "{\"hidden_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                    "\"intermediate_size\": 32, \"cross_attention_frequency\": 1, "
                    "\"encoder_hidden_size\": 24, \"hidden_act\": \"gelu_new\", "
                    "\"layer_norm_eps\": 1e-06}}");
    TL_EXPECT_FAIL_SHOWN(
        tr_import_part(m, TR_INIT_FRAME_QFORMER, dir, NULL), "cfg_blip2/config.json",
        "qformer_config.num_attention_heads is 4 where the model YAML has "
        "video.frame_qformer.heads 2",
        "qformer_config.cross_attention_frequency is 1 where the model YAML has "
        "video.frame_qformer.cross_attention_every 2",
        "qformer_config.layer_norm_eps is 1e-06 where the model YAML has video.frame_qformer.eps "
        "1e-12",
        "qformer_config.hidden_act is gelu_new where the model YAML's video.frame_qformer "
        "uses gelu");
    dir = hf_folder("cfg_blip2", blip2, NULL,
                    "{\"model_type\": \"blip-2\", \"qformer_config\": {\"hidden_size\": 16, "
                    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"intermediate_size\": "
                    "32, \"encoder_hidden_size\": 24}}");
    TL_EXPECT_FAIL(tr_import_part(m, TR_INIT_FRAME_QFORMER, dir, NULL),
                   "num_query_tokens is 32 (absent: transformers' default) where the model YAML "
                   "has video.frame_qformer.queries 4");
    dir = hf_folder("cfg_blip2", blip2, NULL,
                    "{\"model_type\": \"blip_2_qformer\", \"hidden_size\": 16, "
                    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"intermediate_size\": "
                    "32, \"encoder_hidden_size\": 24, \"layer_norm_eps\": 1e-12}");
    TL_CHECK(tr_import_part(m, TR_INIT_FRAME_QFORMER, dir, NULL) == 47,
             "a matching Blip2QFormerModel config");
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
#undef LLAMA_SIZES
}

// Tied embeddings: no lm_head.weight in the file; config.json's tie_word_embeddings makes
// lm_head a copy of the input table, its added rows included; without it, the error says why.
static void test_tied(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    char llama[1200];
    snprintf(llama, sizeof llama, "%s/llama-f32-single/model.safetensors", fixtures);
    const char *tied = "{\"model_type\": \"llama\", \"vocab_size\": 40, \"hidden_size\": 16, "
                       "\"intermediate_size\": 24, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                       "\"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true}";
    const char *dir = hf_folder("tied", llama, &(edit){.drop = "lm_head.weight"}, tied);
    tr_init_config ic = {0};
    ic.path[TR_INIT_LLM] = strdup(dir);
    gm_groundinggpt *m = new_model(ctx, AG_F32, 31);
    char logbuf[2048] = "";
    FILE *log = fmemopen(logbuf, sizeof logbuf, "w");
    tr_import(m, &ic, log, NULL);
    fclose(log);
    TL_CHECK(strstr(logbuf, "init llm: 21 tensors") &&
                 strstr(logbuf, "(lm_head from model.embed_tokens.weight: config.json says "
                                "tie_word_embeddings)"),
             "the log line says lm_head is tied: %s", logbuf);
    ag_st_file *ref = ag_st_open(llama);
    const ag_st_entry *e = ag_st_find(ref, "model.embed_tokens.weight");
    float *head = host_values(m->llm->lm_head), *add = host_values(m->lm_head_added);
    bool same = !memcmp(head, e->data, e->nbytes);
    double worst = 0;
    for (int64_t c = 0; c < 16; c++) { // the added rows: the mean of the embedding rows
        double s = 0;
        for (int64_t v = 0; v < 40; v++) s += ((const float *)e->data)[v * 16 + c];
        for (int r = 0; r < 9; r++) worst = fmax(worst, fabs(add[r * 16 + c] - (float)(s / 40)));
    }
    TL_CHECK(same && worst == 0 && same_values(m->lm_head_added, m->embed_added) &&
                 same_values(m->llm->lm_head, m->llm->embed),
             "tied: lm_head = model.embed_tokens.weight, added rows = their mean (%g)", worst);
    free(head);
    free(add);
    gm_groundinggpt_free(m);
    tr_init_config_free(&ic);

    // A (V0 + 9)-row tied table: lm_head's added rows are its rows V0.., as embed_tokens'.
    char path[800];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ag_st_writer *w = ag_st_writer_new();
    float big[49 * 16];
    memcpy(big, e->data, e->nbytes);
    for (int i = 40 * 16; i < 49 * 16; i++) big[i] = (float)i / 100;
    for (int i = 0; i < ref->n; i++) {
        const ag_st_entry *x = &ref->entries[i];
        if (!strcmp(x->name, "lm_head.weight")) continue;
        if (!strcmp(x->name, "model.embed_tokens.weight"))
            ag_st_add_raw(w, x->name, "F32", 2, (int64_t[]){49, 16}, big, sizeof big);
        else
            ag_st_add_raw(w, x->name, x->dtype, x->ndim, x->shape, x->data, x->nbytes);
    }
    ag_st_write(w, path);
    m = new_model(ctx, AG_F32, 32);
    tr_import_part(m, TR_INIT_LLM, dir, NULL);
    add = host_values(m->lm_head_added);
    TL_CHECK(!memcmp(add, big + 40 * 16, sizeof(float) * 9 * 16) &&
                 same_values(m->lm_head_added, m->embed_added) &&
                 same_values(m->llm->lm_head, m->llm->embed),
             "tied (V0 + 9)-row table: lm_head's added rows are its last 9 rows");
    free(add);
    ag_st_close(ref);

    // Not tied: config.json saying false, or no config.json.
    const char *untied = "{\"model_type\": \"llama\", \"vocab_size\": 40, \"hidden_size\": 16, "
                         "\"intermediate_size\": 24, \"num_hidden_layers\": 2, "
                         "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                         "\"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false}";
    const char *jsons[2] = {untied, NULL};
    for (int k = 0; k < 2; k++) {
        dir = hf_folder("untied", llama, &(edit){.drop = "lm_head.weight"}, jsons[k]);
        TL_EXPECT_FAIL_SHOWN(tr_import_part(m, TR_INIT_LLM, dir, NULL), "'lm_head.weight' [40,16]",
                             "is missing",
                             "(no lm_head.weight; config.json does not say tie_word_embeddings)");
    }
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

// The frame Q-Former from LAVIS' blip2_pretrained.pth naming ({"model": state dict}; ln_vision,
// Qformer.bert.*, the text path and other heads beside it), made from the same values as the
// transformers-named fixture (tests/make_import_fixtures.py renames them): the same parameters,
// and the output of LAVIS' forward computed independently in torch (float64).
static void test_lavis_qformer(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    char lavis[1200], hf[1200], fwd[1200];
    snprintf(lavis, sizeof lavis, "%s/blip2-lavis.pth", fixtures);
    snprintf(hf, sizeof hf, "%s/blip2-f32-single", fixtures);
    snprintf(fwd, sizeof fwd, "%s/blip2-lavis-forward.safetensors", fixtures);
    gm_groundinggpt *a = new_model(ctx, AG_F32, 41), *b = new_model(ctx, AG_F32, 42);
    tr_init_config ic = {0};
    ic.path[TR_INIT_FRAME_QFORMER] = strdup(lavis);
    char logbuf[2048] = "";
    FILE *log = fmemopen(logbuf, sizeof logbuf, "w");
    tr_import(a, &ic, log, NULL);
    fclose(log);
    tr_init_config_free(&ic);
    TL_CHECK(strstr(logbuf, "init frame_qformer: 47 tensors") && strstr(logbuf, "(LAVIS names)"),
             "LAVIS file: %s", logbuf);
    TL_CHECK(tr_import_part(b, TR_INIT_FRAME_QFORMER, hf, NULL) == 47, "HF-named import");
    const gm_frame_qformer *qa = a->frame_qformer, *qb = b->frame_qformer;
    int differ = 0;
    for (int i = 0; i < qa->n_params; i++) differ += !same_values(qa->params[i], qb->params[i]);
    TL_CHECK(differ == 0 && qa->n_params == 47,
             "LAVIS and transformers names give the same %d parameters (%d differ)", qa->n_params,
             differ);

    // Forward on 3 frames of ViT states against LAVIS' computation.
    ag_st_file *ref = ag_st_open(fwd);
    const ag_st_entry *vit = ag_st_find(ref, "vit"), *want = ag_st_find(ref, "out");
    float out[2][3 * 4 * 16];
    const gm_groundinggpt *ms[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        ag_ctx *ec = ms[k]->enc_ctx;
        ag_tensor *x = ag_from_host(ec, AG_F32, AG_SHAPE(3, 5, 24), vit->data);
        ag_tensor *y = gm_frame_qformer_forward(ec, ms[k]->frame_qformer, x);
        TL_CHECK(ag_numel(y) == 3 * 4 * 16, "frame qformer output (3, 4, 16)");
        ag_copy_to_host(y, out[k]);
        ag_step_reset(ec);
    }
    double worst = 0;
    for (int i = 0; i < 3 * 4 * 16; i++)
        worst = fmax(worst, fabs(out[0][i] - ((const float *)want->data)[i]));
    printf("  LAVIS forward: max |diff| %g\n", worst);
    TL_CHECK(worst < 2e-5 && !memcmp(out[0], out[1], sizeof out[0]),
             "LAVIS-named import: forward = LAVIS' reference (max |diff| %g) = the HF-named "
             "import's",
             worst);
    ag_st_close(ref);

    // GroundingGPT's checkpoints: the same names after "model." (found without a prefix), beside
    // other parts; and strictness under LAVIS names.
    ag_st_file *pt = ag_pt_open(lavis);
    char path[700];
    snprintf(path, sizeof path, "%s/grounding.safetensors", tmp);
    for (int pass = 0; pass < 3; pass++) {
        ag_st_writer *w = ag_st_writer_new();
        for (int i = 0; i < pt->n; i++) {
            const ag_st_entry *x = &pt->entries[i];
            char name[600];
            snprintf(name, sizeof name, "model.%s", x->name);
            if (pass == 1 && !strcmp(x->name, "Qformer.bert.encoder.layer.1.output_query.dense."
                                              "weight"))
                continue;
            ag_st_add_raw(w, name, x->dtype, x->ndim, x->shape, x->data, x->nbytes);
            if (pass == 2 && !strcmp(x->name, "Qformer.bert.encoder.layer.1.attention.self."
                                              "query.weight"))
                ag_st_add_raw(w, "model.Qformer.bert.encoder.layer.2.attention.self.query.weight",
                              x->dtype, x->ndim, x->shape, x->data, x->nbytes);
        }
        ag_st_add(w, "model.layers.0.mlp.up_proj.weight", a->llm->layers[0].w_up);
        ag_st_add(w, "model.video_Qformer.bert.encoder.layer.0.attention.self.query.weight",
                  a->video_adapter->qformer->params[0]);
        ag_st_write(w, path);
        if (pass == 0) {
            gm_groundinggpt *c = new_model(ctx, AG_F32, 43);
            ic.path[TR_INIT_FRAME_QFORMER] = strdup(path);
            log = fmemopen(logbuf, sizeof logbuf, "w");
            tr_import(c, &ic, log, NULL);
            fclose(log);
            tr_init_config_free(&ic);
            differ = 0;
            for (int i = 0; i < qa->n_params; i++)
                differ += !same_values(qa->params[i], c->frame_qformer->params[i]);
            TL_CHECK(strstr(logbuf, "47 tensors") &&
                         strstr(logbuf, "(LAVIS names after 'model.')") && differ == 0,
                     "model.-prefixed LAVIS names: %s, %d differ", logbuf, differ);
            gm_groundinggpt_free(c);
        } else if (pass == 1) {
            TL_EXPECT_FAIL_SHOWN(
                tr_import_part(b, TR_INIT_FRAME_QFORMER, path, NULL), "grounding.safetensors",
                "'model.Qformer.bert.encoder.layer.1.output_query.dense.weight' [16,32] is "
                "missing");
        } else {
            TL_EXPECT_FAIL(tr_import_part(b, TR_INIT_FRAME_QFORMER, path, NULL),
                           "unexpected tensor",
                           "'model.Qformer.bert.encoder.layer.2.attention.self.query.weight'");
        }
    }
    ag_st_close(pt);

    // init.checkpoint from GroundingGPT's names: its Q-Formers' unused LAVIS buffers and text
    // path are skipped; anything else unknown is still refused.
    ag_st_writer *w = ag_st_writer_new();
    ag_tensor *q0 = a->video_adapter->qformer->params[0];
    ag_st_add(w, q0->name, q0);
    int64_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = i;
    ag_st_add_raw(w, "model.video_Qformer.bert.embeddings.position_ids", "I64", 2,
                  (int64_t[]){1, 12}, ids, sizeof ids);
    ag_st_add(w, "model.audio_Qformer.bert.encoder.layer.0.intermediate.dense.bias", q0);
    ag_st_add(w, "model.Qformer.cls.predictions.bias", q0);
    ag_st_write(w, path);
    TL_CHECK(tr_import_part(b, TR_INIT_CHECKPOINT, path, NULL) == 1 &&
                 same_values(b->video_adapter->qformer->params[0], q0),
             "checkpoint: LAVIS leftovers of the Q-Formers skipped");
    w = ag_st_writer_new();
    ag_st_add(w, "model.video_Qformer.bert.encoder.layer.0.attention.self.query.bias2", q0);
    ag_st_write(w, path);
    TL_EXPECT_FAIL(tr_import_part(b, TR_INIT_CHECKPOINT, path, NULL), "unexpected tensor",
                   "query.bias2");
    gm_groundinggpt_free(a);
    gm_groundinggpt_free(b);
    ag_ctx_free(ctx);
}

static void test_init_config(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/train.yaml", tmp);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "model: %s/model.yaml\n"
            "init:\n"
            "  llm: llama-here\n"
            "  image_encoder: {path: %s/clip-f16-sharded, prefix: ''}\n"
            "  frame_qformer:\n"
            "    path: %s/blip2-bf16-single\n",
            fixtures, fixtures, fixtures);
    fclose(f);
    tr_yaml *root = tr_yaml_load(path);
    tr_init_config ic;
    tr_init_config_read(root, &ic);
    char want[700];
    snprintf(want, sizeof want, "%s/llama-here", tmp);
    TL_CHECK(ic.path[TR_INIT_LLM] && !strcmp(ic.path[TR_INIT_LLM], want),
             "relative init paths are relative to the config's folder (%s)",
             ic.path[TR_INIT_LLM] ? ic.path[TR_INIT_LLM] : "NULL");
    TL_CHECK(ic.prefix[TR_INIT_IMAGE_ENCODER] && !ic.prefix[TR_INIT_IMAGE_ENCODER][0] &&
                 !ic.path[TR_INIT_VIDEO_ENCODER],
             "init entries as mappings");
    // Import through the config (the llm path does not exist: point it at the fixture).
    free(ic.path[TR_INIT_LLM]);
    char llama[1200];
    snprintf(llama, sizeof llama, "%s/llama-f16-single", fixtures);
    ic.path[TR_INIT_LLM] = strdup(llama);
    gm_groundinggpt_config c;
    tr_model_config_from_train(root, &c);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    char logbuf[4096] = "";
    FILE *log = fmemopen(logbuf, sizeof logbuf, "w");
    tr_import(m, &ic, log, NULL);
    fclose(log);
    TL_CHECK(strstr(logbuf, "init llm: 21 tensors") && strstr(logbuf, "init image_encoder: 37") &&
                 strstr(logbuf, "init frame_qformer: 47"),
             "tr_import logs each part: %s", logbuf);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    tr_init_config_free(&ic);
    tr_yaml_free(root);

    f = fopen(path, "w");
    fprintf(f, "init:\n  llm: a\n  vision: b\n");
    fclose(f);
    root = tr_yaml_load(path);
    TL_EXPECT_FAIL(tr_init_config_read(root, &ic), "train.yaml:3:3", "unknown key 'vision'");
    tr_yaml_free(root);
    f = fopen(path, "w");
    fprintf(f, "init:\n  llm: {prefix: x}\n");
    fclose(f);
    root = tr_yaml_load(path);
    TL_EXPECT_FAIL(tr_init_config_read(root, &ic), "train.yaml:2:8", "missing key 'path'");
    tr_yaml_free(root);
}

int main(void) {
    tl_source_path(fixtures, sizeof fixtures, "tests/fixtures/import");
    tl_temp_dir(tmp, sizeof tmp, "import");
    test_matrix();
    test_errors();
    test_checkpoint_and_prefix();
    test_torch_files();
    test_hf_config();
    test_tied();
    test_lavis_qformer();
    test_init_config();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    return tl_summary("test_import");
}
