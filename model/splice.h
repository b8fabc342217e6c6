// splice.h: the multimodal splice. Token ids (B, T) carry spans
//   <im_start> <im_patch> x P <im_end>     (and <vi_*>, <so_*> likewise)
// The LLM embeds every id (placeholders included), then the rows of the patch tokens are
// overwritten by the modality features, in order of appearance (sample by sample, left to
// right), with one ag_scatter_rows on the (B·T, C) view. Positions are found on the host from
// the ids. Gradients reach the features and the embedding rows of every other token; the
// overwritten rows (the <*_patch> embeddings) get none.
//
// A sample may carry any subset of modalities, and several items of one (each span is one
// item). A modality absent from the whole batch costs nothing: its encoder callback is never
// called. Before any encoder runs, each sample's patch-token count must equal the feature
// rows the caller says it supplies; a mismatch is a one-line error naming the sample and the
// modality. Each run of patch tokens must sit between its start and end token (when those ids
// are set), as the reference checks.
#pragma once
#include <stdint.h>

#include "autograd/ops.h"
#include "model/llama.h"

typedef enum { GM_MOD_IMAGE, GM_MOD_VIDEO, GM_MOD_AUDIO, GM_NMOD } gm_modality;

// "image", "video", "audio".
const char *gm_modality_name(gm_modality m);

// Token ids of each modality's placeholders; -1 turns a start/end check off.
typedef struct {
    int32_t patch[GM_NMOD], start[GM_NMOD], end[GM_NMOD];
} gm_splice_tokens;

// GroundingGPT's: <im_patch> 32000, <im_start> 32001, <im_end> 32002, <vi_patch> 32003,
// <vi_start> 32004, <vi_end> 32005, <so_patch> 32006, <so_start> 32007, <so_end> 32008.
gm_splice_tokens gm_splice_tokens_default(void);

// Where the patch tokens of a batch are: for each modality the flat positions b*T + t of its
// patch tokens in order of appearance, and per-sample counts. Host memory in ctx's step arena
// (valid until ag_step_reset; nothing to free).
typedef struct {
    int64_t B, T;
    int64_t n[GM_NMOD];           // patch tokens of each modality in the batch
    int32_t *pos[GM_NMOD];        // (n[m]) flat positions
    int64_t *per_sample[GM_NMOD]; // (B) patch tokens per sample
} gm_splice_plan;

// Scans ids (B*T, host, row-major). Fails (one line: sample, position) on a patch run that is
// not enclosed by its start/end tokens.
void gm_splice_scan(ag_ctx *ctx, gm_splice_plan *plan, const gm_splice_tokens *tok,
                    const int32_t *ids, int64_t B, int64_t T);
// Checks that sample b supplies exactly plan->per_sample[m][b] feature rows (rows: (B), NULL
// meaning none); fails "splice: sample 3 has 576 image patch tokens but 0 image feature
// rows". Called by gm_splice_embed before any encoder runs.
void gm_splice_check(const gm_splice_plan *plan, gm_modality m, const int64_t *rows);

// Overwrites the patch rows of embeds (B, T, C) with feats[m] (n[m], C) or (items, P, C) with
// items·P == n[m], for every modality with n[m] > 0 (feats[m] ignored otherwise; may be NULL).
// Features of another dtype are cast to the embeddings'. Returns (B, T, C).
ag_tensor *gm_splice_apply(ag_ctx *ctx, const gm_splice_plan *plan, ag_tensor *embeds,
                           ag_tensor *const feats[GM_NMOD]);

// Runs one modality's encoder + adapter for the whole batch: returns its features as (R, C)
// or (items, P, C), R = the sum of the rows the source declares, samples in order.
typedef ag_tensor *(*gm_encode_fn)(ag_ctx *ctx, void *user);

typedef struct {
    const int64_t *rows; // (B) feature rows sample b supplies (items x tokens); NULL: none
    gm_encode_fn encode; // called only when the batch holds patch tokens of this modality
    void *user;
} gm_splice_source;

// The whole splice: embeds ids (host, B*T) with llm's table, scans, checks every modality's
// counts, runs the encoders of the modalities present (src[m].encode, in image, video, audio
// order) and splices. src may be NULL (text only). Returns (B, T, C).
ag_tensor *gm_splice_embed(ag_ctx *ctx, const gm_llama *llm, const gm_splice_tokens *tok,
                           const int32_t *ids, int64_t B, int64_t T,
                           const gm_splice_source src[GM_NMOD]);
