// adapters.h: GroundingGPT's modality adapters, each a small module with its own parameters,
// mapping encoder features to LLM-width tokens:
//
//   image projector   (N, P, Cv) -> Linear(Cv, L) -> GELU (erf) -> Linear(L, L) -> (N, P, L)
//   frame Q-Former    frozen BLIP-2 stage of the video path: ViT hidden states of every frame
//                     (N·F, P, Cvit) -> ln_vision (LayerNorm, eps 1e-5) -> Q-Former (BERT-base,
//                     cross-attention every 2nd layer) with 32 learned queries -> (N·F, 32, Cf)
//   video adapter     (N·F, Qf, Cf) + frame position embedding (row f for every query of frame
//                     f) -> (N, F·Qf, Cf) -> video Q-Former (2 layers, cross-attention every
//                     layer, 64 queries) -> Linear(C, L) -> (N, 64, L)
//   audio adapter     per-clip embeddings (N, K, Ca) (ImageBind audio head output, already
//                     L2-normalised x20) + audio position embedding rows 0..K-1 -> audio
//                     Q-Former (2 layers, 8 queries, encoder width Ca) -> Linear(C, L) -> (N, 8, L)
//
// The ViT itself is not here: gm_frame_qformer_forward takes the ViT's output, so the caller
// runs whichever frame encoder it has (model/vit.h) on the N·F frames first.
//
// Parameter names (prefix is "model." in GroundingGPT checkpoints, whose Q-Formers use LAVIS
// BERT names, gm_qformer names scheme GM_QFORMER_NAMES_LAVIS):
//   image projector  <prefix>mm_vision_projector.{0,2}.{weight,bias}
//   frame Q-Former   <prefix>ln_vision.{weight,bias}, <prefix>query_tokens (1, 32, Cf),
//                    <prefix>Qformer.bert.<Q-Former names>
//   video adapter    <prefix>video_query_tokens (1, 64, C),
//                    <prefix>video_frame_position_embedding.weight (max_frames, Cf),
//                    <prefix>video_Qformer.bert.<Q-Former names>, <prefix>llama_proj.{weight,bias}
//   audio adapter    <prefix>audio_query_tokens (1, 8, C),
//                    <prefix>audio_position_embedding.weight (max_clips, Ca),
//                    <prefix>audio_Qformer.bert.<Q-Former names>,
//                    <prefix>audio_llama_proj.{weight,bias}
// With GM_QFORMER_NAMES_HF the Q-Formers sit under <prefix>qformer., <prefix>video_qformer.
// and <prefix>audio_qformer. instead (transformers' Blip2 layout); the other names stay.
//
// Initialisation (gm_*_init): matrices, query tokens and position embeddings normal(0, std)
// (0.02, BERT's initializer_range, or the Q-Former config's init_std), biases 0, LayerNorm
// weights 1; the video adapter's aligned_init changes its start as its config says. The reference
// inits its projections with torch's default (Kaiming-uniform) and its position embeddings N(0, 1);
// both are trained from there, and pretrained weights replace them anyway.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "model/qformer.h"

// Image projector ------------------------------------------------------------------------------

typedef struct {
    int64_t vision_dim; // Cv: 1024 (CLIP ViT-L/14)
    int64_t llm_dim;    // L: 4096; also the hidden width of the MLP, as in the reference
} gm_projector_config;

typedef struct {
    gm_projector_config cfg;
    ag_tensor *w1, *b1; // (L, Cv), (L)
    ag_tensor *w2, *b2; // (L, L), (L)
    int n_params;
    ag_tensor *params[4];
} gm_projector;

gm_projector *gm_projector_new(ag_ctx *ctx, const gm_projector_config *cfg, const char *prefix,
                               ag_dtype dtype);
void gm_projector_free(gm_projector *m);
void gm_projector_init(gm_projector *m, uint64_t seed, double std);
// x (..., Cv) -> (..., L).
ag_tensor *gm_projector_forward(ag_ctx *ctx, const gm_projector *m, ag_tensor *x);

// Frame Q-Former (frozen BLIP-2 stage of the video path) ------------------------------------------

typedef struct {
    gm_qformer_config qformer; // encoder_width = the ViT width (1408 for EVA ViT-g)
    int64_t n_queries;         // 32
    double ln_eps;             // ln_vision eps: 1e-5
} gm_frame_qformer_config;

typedef struct {
    gm_frame_qformer_config cfg;
    ag_tensor *ln_w, *ln_b;  // ln_vision (Cvit)
    ag_tensor *query_tokens; // (1, Q, C)
    gm_qformer *qformer;
    int n_params;
    ag_tensor **params;
} gm_frame_qformer;

// BLIP-2's: BERT-base Q-Former over a vit_width-wide ViT, 32 queries, LAVIS names.
gm_frame_qformer_config gm_frame_qformer_default(int64_t vit_width);
gm_frame_qformer *gm_frame_qformer_new(ag_ctx *ctx, const gm_frame_qformer_config *cfg,
                                       const char *prefix, ag_dtype dtype);
void gm_frame_qformer_free(gm_frame_qformer *m);
void gm_frame_qformer_init(gm_frame_qformer *m, uint64_t seed, double std);
// vit_hidden (N·F, P, Cvit): the frame ViT's last hidden states -> (N·F, Q, C). Eval mode:
// this stage is frozen in every GroundingGPT stage, so no dropout.
ag_tensor *gm_frame_qformer_forward(ag_ctx *ctx, const gm_frame_qformer *m, ag_tensor *vit_hidden);

// Video adapter ------------------------------------------------------------------------------

typedef struct {
    gm_qformer_config qformer; // encoder_width = Cf, the frame Q-Former's hidden width
    int64_t n_queries;         // 64
    int64_t max_frames;        // rows of the frame position embedding: 64
    int64_t llm_dim;           // L
    // From-scratch init in which query j starts out attending to frame j·max_frames/Q: the
    // frame position rows are N(0, 1) (nn.Embedding's init, the reference's), query token j
    // is a copy of row j·max_frames/Q, and every cross-attention's key projection starts as
    // a copy of its query projection (needs hidden = encoder width). A video Q-Former drawn
    // at random instead averages all frames alike and never learns to tell them apart.
    bool aligned_init;
} gm_video_adapter_config;

typedef struct {
    gm_video_adapter_config cfg;
    ag_tensor *query_tokens; // (1, Q, C)
    ag_tensor *frame_pos;    // (max_frames, Cf)
    gm_qformer *qformer;
    ag_tensor *proj_w, *proj_b; // (L, C), (L)
    int n_params;
    ag_tensor **params;
} gm_video_adapter;

// GroundingGPT's: BERT-base layers, 2 of them, cross-attention every layer, 64 queries, 64
// frames, encoder width 768, LAVIS names.
gm_video_adapter_config gm_video_adapter_default(int64_t llm_dim);
gm_video_adapter *gm_video_adapter_new(ag_ctx *ctx, const gm_video_adapter_config *cfg,
                                       const char *prefix, ag_dtype dtype);
void gm_video_adapter_free(gm_video_adapter *m);
void gm_video_adapter_init(gm_video_adapter *m, uint64_t seed, double std);
// frames (N·F, Qf, Cf): the frame Q-Former outputs of n_videos videos of F frames each,
// video-major. Returns (N, Q, L). train enables the Q-Former's dropout.
ag_tensor *gm_video_adapter_forward(ag_ctx *ctx, const gm_video_adapter *m, ag_tensor *frames,
                                    int64_t n_videos, bool train, uint64_t seed);

// Audio adapter ------------------------------------------------------------------------------

typedef struct {
    gm_qformer_config qformer; // encoder_width = Ca (1024)
    int64_t n_queries;         // 8
    int64_t max_clips;         // rows of the audio position embedding: 8
    int64_t llm_dim;           // L
} gm_audio_adapter_config;

typedef struct {
    gm_audio_adapter_config cfg;
    ag_tensor *query_tokens; // (1, Q, C)
    ag_tensor *clip_pos;     // (max_clips, Ca)
    gm_qformer *qformer;
    ag_tensor *proj_w, *proj_b; // (L, C), (L)
    int n_params;
    ag_tensor **params;
} gm_audio_adapter;

// GroundingGPT's: BERT-base layers, 2 of them, cross-attention every layer, 8 queries, 8
// position rows, encoder width 1024, LAVIS names.
gm_audio_adapter_config gm_audio_adapter_default(int64_t llm_dim);
gm_audio_adapter *gm_audio_adapter_new(ag_ctx *ctx, const gm_audio_adapter_config *cfg,
                                       const char *prefix, ag_dtype dtype);
void gm_audio_adapter_free(gm_audio_adapter *m);
void gm_audio_adapter_init(gm_audio_adapter *m, uint64_t seed, double std);
// clips (N, K, Ca), K <= max_clips -> (N, Q, L).
ag_tensor *gm_audio_adapter_forward(ag_ctx *ctx, const gm_audio_adapter *m, ag_tensor *clips,
                                    bool train, uint64_t seed);

// Elements of each module of this shape (for memory planning before allocation).
int64_t gm_projector_config_param_count(const gm_projector_config *cfg);
int64_t gm_frame_qformer_config_param_count(const gm_frame_qformer_config *cfg);
int64_t gm_video_adapter_config_param_count(const gm_video_adapter_config *cfg);
int64_t gm_audio_adapter_config_param_count(const gm_audio_adapter_config *cfg);
