// groundinggpt.h: the assembled GroundingGPT model: a Llama decoder whose token stream carries
// image, video and audio spans, each filled by its encoder + adapter (../shared/GROUNDINGGPT.md):
//
//   image  u8 (n, S, S, 3) -> CLIP pixels -> CLIP ViT hidden_states[select] without CLS
//          (n, P, Cv) -> projector Linear-GELU-Linear -> (n, P, L)
//   video  u8 (n·F, S, S, 3) -> CLIP pixels -> EVA ViT (n·F, 1+N, Ce) -> ln_vision + frame
//          Q-Former (n·F, Qf, Cf) -> + frame position, video Q-Former, Linear -> (n, Qv, L)
//   audio  fbank (n, K, frames, mels) -> (n·K, mels, frames, 1) -> ImageBind audio ViT, CLS
//          head (LayerNorm, Linear, L2-normalise, x20) -> (n, K, Ca) -> + clip position,
//          audio Q-Former, Linear -> (n, Qa, L)
//   text   ids (B, T) -> embeddings; patch tokens overwritten by the features above
//          (model/splice.h) -> decoder -> logits (B·T, V0 + 9) -> cross-entropy
//
// Media layouts are the shard's (data/FORMAT.md) with one exception: a video batch is
// (n·F, S, S, 3), the shard's (n, F, S, S, 3) rows flattened, because tensors hold at most 4
// dims. The audio fbank is stored frames-major (clip, frame, mel); ImageBind's input is
// (1, mel, frame) per clip, so the model transposes each clip to the ViT's channels-last
// (mel, frame, 1) image: H = mel bins (128), W = frames (204).
//
// The 9 added tokens (<im_patch> <im_start> <im_end> <vi_*> <so_*>): GroundingGPT appends 9
// rows to the embedding table and to lm_head (vocab 32000 + 9). Stage 1 trains only those
// rows of the otherwise frozen LLM. groundc keeps them as separate parameters,
// "model.embed_tokens.added_rows" and "lm_head.added_rows" (9, C) next to the base tables
// "model.embed_tokens.weight" and "lm_head.weight" (V0, C), rather than masking the gradient
// of one (V0 + 9, C) table: a mask would still allocate the full table's gradient and AdamW
// state (3 GB for the 7B in stage 1) and make "trainable" a lie in every count. The input side
// gathers base rows for ordinary ids and scatters added rows where an added (non-patch) id
// sits; the output side multiplies by the concatenation of both tables, so logits have
// V0 + 9 columns. Import splits an HF (V0 + 9, C) table, and fills the added rows of an HF
// (V0, C) table with the mean of its rows, as GroundingGPT's smart_tokenizer_and_embedding_
// resize does; export concatenates them back.
//
// Parameters, one registry (m->params), GroundingGPT checkpoint names (Video-LLaMA / LLaVA):
//   model.embed_tokens.*, model.layers.N.*, model.norm.weight, lm_head.*       LLM
//   model.vision_tower.vision_model.*                                           CLIP ViT
//   model.mm_vision_projector.{0,2}.*                                           projector
//   model.visual_encoder.{cls_token, pos_embed, patch_embed.*, blocks.N.*}      EVA ViT
//   model.ln_vision.*, model.query_tokens, model.Qformer.bert.*                 frame Q-Former
//   model.video_query_tokens, model.video_frame_position_embedding.weight,
//   model.video_Qformer.bert.*, model.llama_proj.*                              video adapter
//   model.audio_encoder.modality_{preprocessors,trunks,heads}.audio.*           ImageBind
//   model.audio_query_tokens, model.audio_position_embedding.weight,
//   model.audio_Qformer.bert.*, model.audio_llama_proj.*                        audio adapter
//
// Frozen encoders (every parameter of the ViT, and for video of the frame Q-Former, frozen)
// run in a context of their own (m->enc_ctx, whose pool holds their parameters), without a
// tape, enc_batch input rows at a time; the step arena of that context is reset after each
// chunk and only the features are copied into the caller's step (a host round trip of a few
// MB). The caller's step arena keeps everything until ag_step_reset, so running EVA-g over
// 64 frames there would hold ~40 GB of intermediate outputs per video. An encoder with a
// trainable parameter runs in the caller's context with the tape instead.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "model/adapters.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/splice.h"
#include "model/vit.h"

#define GM_N_ADDED 9 // added tokens: <im_patch> <im_start> <im_end> <vi_*> <so_*>
// Input rows (images, frames, clips) per frozen-encoder chunk by default: bounds the step
// arena's peak for the frozen towers (`groundc inspect` prints what a chunk takes).
#define GM_ENC_BATCH_DEFAULT 8

typedef struct {
    char name[64];       // preset name, for reports
    ag_dtype dtype;      // every parameter: f32 or bf16
    gm_llama_config llm; // llm.vocab: the base vocabulary V0, without the added tokens
    // Ids of the added tokens: together a permutation of V0 .. V0 + 8 (row id - V0 of the
    // added tables). GroundingGPT's: patch/start/end 32000/32001/32002 (image), 32003..32005
    // (video), 32006..32008 (audio).
    gm_splice_tokens tokens;
    bool has[GM_NMOD]; // which branches exist
    // image branch
    int64_t image_size;   // S: square images (pack --image-size)
    int64_t image_tokens; // P: patch tokens per image (pack --image-tokens) = ViT patches
    gm_vit_config image_vit;
    gm_projector_config projector;
    // video branch
    int64_t video_frames; // F (pack --video-frames)
    int64_t video_size;   // S of the frames (pack --video-size)
    int64_t video_tokens; // tokens per video = the video Q-Former's queries (pack --video-tokens)
    gm_vit_config video_vit;
    gm_frame_qformer_config frame_qformer;
    gm_video_adapter_config video_adapter;
    // audio branch
    int64_t audio_clips, audio_frames, audio_mels; // fbank layout (3, 204, 128)
    int64_t audio_tokens; // tokens per audio = the audio Q-Former's queries (pack --audio-tokens)
    gm_vit_config audio_vit;
    gm_audio_adapter_config audio_adapter;
} gm_groundinggpt_config;

// The reference model (../shared/GROUNDINGGPT.md), bf16: Vicuna-7B v1.5, CLIP ViT-L/14-336,
// EVA ViT-g + BLIP-2 Q-Former, ImageBind audio, the adapters; 576 / 64 / 8 tokens.
gm_groundinggpt_config gm_groundinggpt_reference_config(void);
// Checks every size and the consistency between parts (projector input = CLIP width, token
// counts = what the encoders and adapters make, ...); fails with one line naming the field.
void gm_groundinggpt_check_config(const gm_groundinggpt_config *cfg);
// V0 + GM_N_ADDED: the logits' width.
int64_t gm_groundinggpt_vocab(const gm_groundinggpt_config *cfg);

// Parts of the model, for counts and memory (inspect) ---------------------------------------

typedef enum {
    GM_PART_LLM,           // embeddings (with added rows), layers, norm, lm_head
    GM_PART_IMAGE_ENCODER, // CLIP ViT (frozen)
    GM_PART_PROJECTOR,     // image projector (stage 1+)
    GM_PART_VIDEO_ENCODER, // EVA ViT (frozen)
    GM_PART_FRAME_QFORMER, // ln_vision + BLIP-2 Q-Former + its query tokens (frozen)
    GM_PART_VIDEO_ADAPTER, // video Q-Former + queries + frame positions + llama_proj (stage 1+)
    GM_PART_AUDIO_ENCODER, // ImageBind audio ViT (frozen)
    GM_PART_AUDIO_ADAPTER, // audio Q-Former + queries + clip positions + proj (stage 1+)
    GM_NPART
} gm_part;

const char *gm_part_name(gm_part p); // "llm", "image_encoder", ...

// One top-level module of the registry (params.h's grouping: "model.layers", "lm_head", ...)
// counted from the config alone, without allocating anything: how inspect sizes the 7B.
// stage[s] is the number of its elements that the default selection of stage s + 1 trains.
// tests/test_groundinggpt.c checks every row against a real registry.
typedef struct {
    char group[64];
    gm_part part;
    int64_t total;
    int64_t stage[3];
} gm_census_row;

// Fills up to max rows, in registry order; returns how many there are.
int gm_groundinggpt_census(const gm_groundinggpt_config *cfg, gm_census_row *rows, int max);

// Step-arena bytes of one frozen encoder pass (no tape) over `rows` input rows (images,
// frames or clips) of modality m: every op output stays in the arena until the reset, i.e.
// per block and token 9C + 2F elements, the attention's log-sum-exp (H f32) and the norm
// statistics; for video the frame Q-Former on top. An estimate, like params.h's.
int64_t gm_groundinggpt_encoder_bytes(const gm_groundinggpt_config *cfg, gm_modality m,
                                      int64_t rows);

// Default stage selection ------------------------------------------------------------------

// Trainable patterns of stage 1, 2 or 3 (../shared/GROUNDINGGPT.md) for the branches cfg has:
// stage 1 the projector, the video and audio adapters and the input embedding's added rows
// (lm_head's stay frozen, as in the reference); stages 2 and 3 add the whole LLM. Writes up to
// max pattern pointers (static strings); returns the count.
int gm_groundinggpt_stage_patterns(const gm_groundinggpt_config *cfg, int stage, const char **out,
                                   int max);

// The model ---------------------------------------------------------------------------------

typedef struct {
    gm_groundinggpt_config cfg;
    gm_llama *llm;            // base tables (V0, C)
    ag_tensor *embed_added;   // (9, C) "model.embed_tokens.added_rows"
    ag_tensor *lm_head_added; // (9, C) "lm_head.added_rows"
    gm_vit *image_vit;        // NULL without the branch
    gm_projector *projector;
    gm_vit *video_vit;
    gm_frame_qformer *frame_qformer;
    gm_video_adapter *video_adapter;
    gm_vit *audio_vit;
    gm_audio_adapter *audio_adapter;
    gm_params *params; // every parameter above, by name
    ag_ctx *enc_ctx;   // the frozen encoders' context (see the header comment)
    int64_t enc_batch; // input rows per frozen-encoder chunk (GM_ENC_BATCH_DEFAULT)
    // Instrumentation: how many times each modality's encoder ran (one per forward that
    // needs it). Absent modalities never run (tests check).
    int64_t encoder_runs[GM_NMOD];
} gm_groundinggpt;

// Allocates every parameter (zero; call gm_groundinggpt_init or import weights). The LLM and
// the adapters live in ctx's pool, the encoders in the pool of m->enc_ctx (same device).
gm_groundinggpt *gm_groundinggpt_new(ag_ctx *ctx, const gm_groundinggpt_config *cfg);
void gm_groundinggpt_free(gm_groundinggpt *m);
// Random initialisation, deterministic from seed (each module's own scheme, std for the
// normal draws; the added rows too).
void gm_groundinggpt_init(gm_groundinggpt *m, uint64_t seed, double std);

// Marks the parameters of stage 1, 2 or 3 trainable (gm_groundinggpt_stage_patterns) and
// every other frozen. Returns the number of trainable tensors.
int gm_groundinggpt_set_stage(ag_ctx *ctx, gm_groundinggpt *m, int stage);

// A batch. ids, targets and media_of are host arrays; media tensors live on ctx's device.
typedef struct {
    int64_t B, T;
    const int32_t *ids;     // (B*T) row-major, placeholders expanded as the shards hold them
    const int32_t *targets; // (B*T) label of the logits at (b, t), i.e. already shifted;
                            // GM_IGNORE_TARGET is ignored. NULL for inference.
    // (B) tokens of each sample, the rest of its row padding (targets ignored there), or
    // NULL: every row is T tokens. The loss then runs the LLM on the real tokens only.
    const int32_t *lengths;
    // image: u8 (n, S, S, 3); video: u8 (n·F, S, S, 3); audio: float (n, K, frames, mels)
    ag_tensor *media[GM_NMOD];
    // (B): the media row of sample b, -1 for none (NULL: no sample has one). Several samples
    // may share a row; every row is encoded once, so pass only the rows the batch uses.
    const int32_t *media_of[GM_NMOD];
} gm_groundinggpt_batch;

// The spliced input embeddings (B, T, C): checks every sample's patch-token count against its
// media (one-line error naming sample and modality) before any encoder runs, then runs the
// encoders of the modalities present (only those). train enables the adapters' dropout,
// with streams derived from seed.
ag_tensor *gm_groundinggpt_embed(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                 bool train, uint64_t seed);
// Final-normed hidden states (B, T, C).
ag_tensor *gm_groundinggpt_hidden(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                  bool train, uint64_t seed);
// Logits (N, V0 + 9) of hidden states (..., C) (N = their rows).
ag_tensor *gm_groundinggpt_head(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *hidden);
// Training: the mean cross-entropy over targets != GM_IGNORE_TARGET (0-dim); logits are
// computed at those rows only, and with lengths the decoder runs on the real tokens only.
ag_tensor *gm_groundinggpt_loss(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                bool train, uint64_t seed);
// Inference (eval, generate): logits (B·T, V0 + 9) in eval mode, without a tape.
ag_tensor *gm_groundinggpt_logits(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b);
