// test_export_hf_forward.c: the HF export computes what groundc computes. A random tiny model
// (configs/model/tiny.yaml, weights larger than the default init so that the logits spread)
// runs one prompt with an image; its logits, the ids and the image go to a dump file; the
// model goes through tr_export_hf; tests/export_hf_forward.py then runs
// LlavaForConditionalGeneration's forward in numpy from the exported folder alone and must
// agree within 1e-3 (the GPU check's tolerance; f32 agrees to ~1e-5). Also the refusals of
// tr_export_hf: a dtype it does not write, a tokenizer of another vocabulary, a model without
// the image branch, a value that f16 cannot hold. Set GROUNDC_EXPORT_HF_KEEP=DIR to keep the
// export and the dump (DIR/export, DIR/dump.safetensors) for tests/hf_logits_check.py.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/tokenizer.h"
#include "model/groundinggpt.h"
#include "testlib.h"
#include "data/files.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/model_config.h"

static char g_tok_path[1024];

static gm_groundinggpt_config tiny_config(void) {
    char path[1024];
    tl_source_path(path, sizeof path, "configs/model/tiny.yaml");
    gm_groundinggpt_config c;
    tr_model_config_load(path, &c);
    return c;
}

static void export_to(const gm_groundinggpt *m, const ds_tokenizer *tok, const char *dtype,
                      const char *dir) {
    tr_remove_tree(dir);
    ds_make_dirs(dir);
    tr_export_job job = {.ckpt_dir = "(test model)",
                         .model = m,
                         .tok = tok,
                         .tokenizer_path = g_tok_path,
                         .dtype = dtype};
    tr_export_hf(&job, dir);
}

int main(void) {
    if (system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
        printf("test_export_hf_forward: skipped (no /usr/bin/python3 with numpy)\n");
        return 77;
    }
    tl_source_path(g_tok_path, sizeof g_tok_path, "tests/fixtures/tokenizer/test_bpe.model");
    const char *keep = getenv("GROUNDC_EXPORT_HF_KEEP");
    char root[1024];
    if (keep && keep[0]) {
        snprintf(root, sizeof root, "%s", keep);
        ds_make_dirs(root);
    } else {
        snprintf(root, sizeof root, "/tmp/groundc-export-hf-XXXXXX");
        if (!mkdtemp(root)) ag_fail("cannot make a temporary folder");
    }
    char out[1100], dump[1100], py[1024], cmd[4200];
    snprintf(out, sizeof out, "%s/export", root);
    snprintf(dump, sizeof dump, "%s/dump.safetensors", root);

    gm_groundinggpt_config cfg = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &cfg);
    gm_groundinggpt_init(m, 11, 0.2);
    ds_tokenizer *tok = ds_tokenizer_load(g_tok_path);

    // BOS, text, <im_start> <im_patch> x P <im_end>, text.
    int64_t n1, n2;
    int32_t *a = ds_tokenizer_encode_alloc(tok, "Where is the red square in", 26, 0, &n1);
    int32_t *b = ds_tokenizer_encode_alloc(tok, "\nAnswer: [0.25, 0.5", 19, 0, &n2);
    const int64_t P = cfg.image_tokens, T = 1 + n1 + P + 2 + n2;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    int64_t t = 0;
    ids[t++] = ds_tokenizer_bos_id(tok);
    for (int64_t i = 0; i < n1; i++) ids[t++] = a[i];
    ids[t++] = cfg.tokens.start[GM_MOD_IMAGE];
    for (int64_t i = 0; i < P; i++) ids[t++] = cfg.tokens.patch[GM_MOD_IMAGE];
    ids[t++] = cfg.tokens.end[GM_MOD_IMAGE];
    for (int64_t i = 0; i < n2; i++) ids[t++] = b[i];
    const int64_t S = cfg.image_size;
    uint8_t *img = malloc((size_t)(S * S * 3));
    tl_rng r = {5};
    for (int64_t i = 0; i < S * S * 3; i++) img[i] = (uint8_t)tl_randint(&r, 256);

    int32_t of[1] = {0};
    gm_groundinggpt_batch batch = {.B = 1, .T = T, .ids = ids};
    batch.media[GM_MOD_IMAGE] = ag_from_host(ctx, AG_U8, AG_SHAPE(1, S, S, 3), img);
    batch.media_of[GM_MOD_IMAGE] = of;
    ag_tensor *logits = gm_groundinggpt_logits(ctx, m, &batch); // (T, V)
    const int64_t V = gm_groundinggpt_vocab(&cfg);
    TL_CHECK(logits->shape[0] == T && logits->shape[1] == V, "logits (T, V)");
    float *lg = malloc(sizeof(float) * (size_t)(T * V));
    ag_copy_to_host(logits, lg);

    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_raw(w, "ids", "I32", 1, &T, ids, sizeof(int32_t) * (size_t)T);
    ag_st_add_raw(w, "image", "U8", 3, (int64_t[]){S, S, 3}, img, (size_t)(S * S * 3));
    ag_st_add_raw(w, "logits", "F32", 2, (int64_t[]){T, V}, lg, sizeof(float) * (size_t)(T * V));
    ag_st_write(w, dump);

    export_to(m, tok, "f32", out);
    tl_source_path(py, sizeof py, "tests/export_hf_forward.py");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s --dump %s --tol 1e-3", py, out, dump);
    TL_CHECK(system(cmd) == 0, "numpy LLaVA forward of the f32 export differs from groundc");
    // Refusals.
    char bad[1200];
    snprintf(bad, sizeof bad, "%s/bad", root);
    TL_EXPECT_FAIL(export_to(m, tok, "q8_0", bad), "q8_0", "f32, f16 or bf16");

    gm_groundinggpt_config c2 = cfg; // one piece fewer than the tokenizer has
    c2.llm.vocab--;
    for (int k = 0; k < GM_NMOD; k++) {
        c2.tokens.patch[k]--;
        c2.tokens.start[k]--;
        c2.tokens.end[k]--;
    }
    gm_groundinggpt *m2 = gm_groundinggpt_new(ctx, &c2);
    TL_EXPECT_FAIL(export_to(m2, tok, "f32", bad), "test_bpe.model", "2000 pieces", "1999");
    gm_groundinggpt_free(m2);

    gm_groundinggpt_config c3 = cfg;
    c3.has[GM_MOD_IMAGE] = false;
    gm_groundinggpt *m3 = gm_groundinggpt_new(ctx, &c3);
    TL_EXPECT_FAIL(export_to(m3, tok, "bf16", bad), "needs the image branch");
    gm_groundinggpt_free(m3);

    float *b1 = malloc(sizeof(float) * (size_t)ag_numel(m->projector->b1));
    ag_copy_to_host(m->projector->b1, b1);
    float keep0 = b1[0];
    b1[0] = 1e6f;
    ag_copy_from_host(m->projector->b1, b1);
    TL_EXPECT_FAIL(export_to(m, tok, "f16", bad), "linear_1.bias", "does not fit F16");
    export_to(m, tok, "bf16", bad); // bf16 holds it
    TL_CHECK(access(bad, F_OK) == 0, "bf16 export of a large value");
    b1[0] = keep0;
    ag_copy_from_host(m->projector->b1, b1);

    free(b1);
    free(img);
    free(ids);
    free(a);
    free(b);
    free(lg);
    ds_tokenizer_free(tok);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    if (!(keep && keep[0])) tr_remove_tree(root);
    return tl_summary("export_hf_forward");
}
