// generate.c: see generate.h.
#include "train/generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/rng.h"
#include "data/audio.h"
#include "data/grounding.h"
#include "data/image.h"
#include "data/prompt.h"
#include "data/template.h"
#include "data/video.h"
#include "train/checked_output.h"
#include "train/checkpoint.h"
#include "train/ckpt_path.h"
#include "train/eval.h"

const char *tr_stop_name(tr_stop_reason r) {
    static const char *const names[] = {"###", "eos", "added token", "max new tokens",
                                        "context full"};
    return (unsigned)r < sizeof names / sizeof *names ? names[r] : "?";
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Logits (N, V0 + 9) of hidden rows (..., C). gm_groundinggpt_head concatenates the two
// lm_head tables (a V x C copy) per call, which would cost as much as the matmul itself for
// one decode row: here the two products are concatenated instead.
static ag_tensor *head_rows(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *h) {
    ag_tensor *parts[2] = {ag_linear(ctx, h, m->llm->lm_head, NULL),
                           ag_linear(ctx, h, m->lm_head_added, NULL)};
    ag_tensor *logits = ag_concat(ctx, 2, parts, h->ndim - 1);
    return ag_reshape(ctx, logits, AG_SHAPE(-1, gm_groundinggpt_vocab(&m->cfg)));
}

typedef struct {
    double p;
    int32_t id;
} cand;

static int by_prob(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id; // deterministic order for ties
}

// The next token from one row of logits: argmax at temperature 0, else a draw from the
// nucleus of softmax(row / temperature).
static int32_t pick(const float *row, int64_t V, const tr_decode_opts *o, uint64_t *rng,
                    cand *work) {
    int32_t best = 0;
    for (int64_t v = 1; v < V; v++)
        if (row[v] > row[best]) best = (int32_t)v;
    if (o->temperature <= 0) return best;
    double sum = 0;
    for (int64_t v = 0; v < V; v++) {
        work[v].p = exp(((double)row[v] - row[best]) / o->temperature);
        work[v].id = (int32_t)v;
        sum += work[v].p;
    }
    int64_t keep = V;
    if (o->top_p < 1) {
        qsort(work, (size_t)V, sizeof *work, by_prob);
        double cum = 0;
        for (keep = 0; keep < V && cum < o->top_p * sum;) cum += work[keep++].p;
        if (keep == 0) keep = 1, cum = work[0].p; // guard: cannot happen with finite logits
        sum = cum;
    }
    double u = (double)(ag_splitmix64(rng) >> 11) * 0x1.0p-53 * sum, acc = 0;
    for (int64_t i = 0; i < keep; i++) {
        acc += work[i].p;
        if (u < acc) return work[i].id;
    }
    return work[keep - 1].id; // rounding at the very end of the range
}

void tr_decode(ag_ctx *ctx, gm_groundinggpt *m, gm_llama_kv *kv, const gm_groundinggpt_batch *b,
               const ds_tokenizer *tok, const tr_decode_opts *o, tr_decode_result *r) {
    const int64_t T = b->T, V0 = m->cfg.llm.vocab, V = gm_groundinggpt_vocab(&m->cfg);
    if (b->B != 1 || kv->B != 1)
        ag_fail("decode: one prompt at a time (batch of %lld, cache for %lld)", (long long)b->B,
                (long long)kv->B);
    if (T < 1 || T > kv->max_len)
        ag_fail("decode: the prompt has %lld tokens, the context holds %lld (max_seq %lld)",
                (long long)T, (long long)kv->max_len, (long long)m->cfg.llm.max_seq);
    int64_t room = kv->max_len - T, max_new = o->max_new < room ? o->max_new : room;
    memset(r, 0, sizeof *r);
    r->ids = ag_xmalloc(sizeof(int32_t) * (size_t)(max_new > 0 ? max_new : 1), "decode");
    float *row = ag_xmalloc(sizeof(float) * (size_t)V, "decode");
    cand *work = o->temperature > 0 ? ag_xmalloc(sizeof *work * (size_t)V, "decode") : NULL;
    const int32_t eos = ds_tokenizer_eos_id(tok);
    uint64_t rng = o->seed;

    double t0 = now_s();
    gm_llama_kv_reset(kv);
    ag_no_grad_begin(ctx);
    ag_tensor *h =
        gm_llama_hidden_cached(ctx, m->llm, kv, gm_groundinggpt_embed(ctx, m, b, false, 0));
    if (o->prompt_logits) { // (T, V): every position
        ag_copy_to_host(ag_cast(ctx, gm_groundinggpt_head(ctx, m, h), AG_F32), o->prompt_logits);
        memcpy(row, o->prompt_logits + (T - 1) * V, sizeof(float) * (size_t)V);
    } else {
        ag_copy_to_host(ag_cast(ctx, head_rows(ctx, m, ag_slice(ctx, h, 1, T - 1, T)), AG_F32),
                        row);
    }
    ag_step_reset(ctx);
    double t1 = now_s();
    r->prefill_s = t1 - t0;
    r->stop = TR_STOP_LENGTH;
    for (;;) {
        if (r->n == max_new) {
            r->stop = max_new < o->max_new ? TR_STOP_CONTEXT : TR_STOP_LENGTH;
            break;
        }
        for (int64_t v = 0; v < V; v++)
            if (!isfinite(row[v]))
                ag_fail("decode: the logits for new token %lld hold %g (vocabulary id %lld): the "
                        "model's weights or activations are not finite (a diverged or damaged "
                        "checkpoint)",
                        (long long)r->n + 1, (double)row[v], (long long)v);
        int32_t id = pick(row, V, o, &rng, work);
        if (id >= V0) {
            r->stop = TR_STOP_ADDED;
            break;
        }
        if (id == eos) {
            r->stop = TR_STOP_EOS;
            break;
        }
        r->ids[r->n++] = id;
        char *text = ds_tokenizer_decode(tok, r->ids, r->n, NULL);
        bool stop = strstr(text, DS_STOP_MARKER) != NULL;
        free(text);
        if (stop) {
            r->stop = TR_STOP_MARKER;
            break;
        }
        if (r->n == max_new) continue; // no logits needed after the last token
        ag_tensor *x = gm_llama_embed(ctx, m->llm, ag_from_host(ctx, AG_I32, AG_SHAPE(1, 1), &id));
        h = gm_llama_hidden_cached(ctx, m->llm, kv, x); // (1, 1, C)
        ag_copy_to_host(ag_cast(ctx, head_rows(ctx, m, h), AG_F32), row);
        ag_step_reset(ctx);
    }
    ag_no_grad_end(ctx);
    r->decode_s = now_s() - t1;
    free(work);
    free(row);
}

// ---- the command ----

static const char *const media_opt[DS_MEDIA_KINDS] = {"--image", "--video", "--audio"};

typedef struct {
    const char *ckpt, *prompt, *tokenizer, *logits_out;
    const char *media[DS_MEDIA_KINDS];
    long long max_new;
    double temperature, top_p;
    unsigned long long seed;
    bool raw;
} gen_args;

enum { DEFAULT_MAX_NEW = 256 };
#define MAX_NEW_TOKENS (1LL << 30)

static const char *const usage_line =
    "generate: usage: groundc generate CKPT_DIR [--image F] [--video F] [--audio F] --prompt "
    "TEXT [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--tokenizer F] [--raw] "
    "[--logits-out F.npy]";

static void print_help(void) {
    printf(
        "%s\n\n"
        "  CKPT_DIR              checkpoint folder (OUT/step_N, OUT/latest), or a run folder\n"
        "                        OUT: its latest checkpoint\n"
        "  --image F, --video F, --audio F\n"
        "                        the media the prompt is about, one file of each kind at most;\n"
        "                        <image>, <video> or <sound> in the prompt marks its place\n"
        "                        (default: before the text)\n"
        "  --prompt TEXT         the question, as one human turn of the chat template\n"
        "                        (required)\n"
        "  --max-new-tokens N    most tokens generated, 1 to %lld (default %d); 0 only with\n"
        "                        --logits-out (the prompt's logits, no answer)\n"
        "  --temperature T       0: greedy (default); above 0: draws from softmax(logits / T)\n"
        "  --top-p P             draws only among the likeliest tokens that hold P of the\n"
        "                        probability, in (0, 1] (default 1: all)\n"
        "  --seed S              seed of the draws (default 0)\n"
        "  --tokenizer F         default: the checkpoint config's eval.tokenizer\n"
        "  --raw                 the prompt is the model's whole input (no chat template); each\n"
        "                        placeholder becomes the media's tokens\n"
        "  --logits-out F.npy    the prompt's logits (tokens, vocab) as float32 .npy\n\n"
        "The answer goes to stdout, then each box in pixels of --image and each span in\n"
        "seconds of --video / --audio; timings to stderr.\n",
        usage_line + strlen("generate: "), MAX_NEW_TOKENS, DEFAULT_MAX_NEW);
}

static double num_arg(const char *opt, const char *v, double lo, double hi) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi))
        ag_fail("generate: %s: expected a number in [%g, %g], got '%s'", opt, lo, hi, v);
    return x;
}

// Returns false when --help was asked for (the usage is printed; nothing else to do).
static bool parse_args(int argc, char **argv, gen_args *a) {
    memset(a, 0, sizeof *a);
    a->max_new = -1; // not given: DEFAULT_MAX_NEW
    a->top_p = 1;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--raw")) {
            a->raw = true;
            continue;
        }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            print_help();
            return false;
        }
        if (strncmp(o, "--", 2)) {
            if (a->ckpt)
                ag_fail("generate: more than one checkpoint given ('%s' and '%s')", a->ckpt, o);
            a->ckpt = o;
            continue;
        }
        static const char *const known[] = {
            "--image",       "--video", "--audio", "--prompt",    "--max-new-tokens",
            "--temperature", "--top-p", "--seed",  "--tokenizer", "--logits-out"};
        bool ok = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++) ok = ok || !strcmp(o, known[k]);
        if (!ok) ag_fail("generate: unknown option '%s'", o);
        if (i + 1 >= argc) ag_fail("generate: option %s needs a value", o);
        const char *v = argv[++i];
        char what[64];
        snprintf(what, sizeof what, "generate: %s", o);
        int media = -1;
        for (int k = 0; k < DS_MEDIA_KINDS; k++)
            if (!strcmp(o, media_opt[k])) media = k;
        if (media >= 0) {
            // one file per kind: a second one would silently replace the first
            if (a->media[media]) ag_fail("generate: option %s given twice", o);
            a->media[media] = v;
        } else if (!strcmp(o, "--prompt"))
            a->prompt = v;
        else if (!strcmp(o, "--tokenizer"))
            a->tokenizer = v;
        else if (!strcmp(o, "--logits-out"))
            a->logits_out = v;
        else if (!strcmp(o, "--max-new-tokens"))
            a->max_new = ag_parse_int(what, v, 0, MAX_NEW_TOKENS);
        else if (!strcmp(o, "--seed"))
            a->seed = (unsigned long long)ag_parse_int(what, v, 0, INT64_MAX);
        else if (!strcmp(o, "--temperature"))
            a->temperature = num_arg(o, v, 0, 1e6);
        else
            a->top_p = num_arg(o, v, 1e-9, 1);
    }
    if (!a->ckpt) ag_fail("%s", usage_line);
    if (!a->prompt)
        ag_fail("generate: missing --prompt TEXT (groundc generate --help shows the usage)");
    // 0 new tokens only makes sense for the prompt's logits
    if (a->max_new == 0 && !a->logits_out)
        ag_fail("generate: --max-new-tokens 0 generates nothing: give 1 to %lld (default %d), or "
                "0 with --logits-out for the prompt's logits alone",
                MAX_NEW_TOKENS, DEFAULT_MAX_NEW);
    if (a->max_new < 0) a->max_new = DEFAULT_MAX_NEW;
    // written after the whole generation: a path that cannot take it fails now
    if (a->logits_out) tr_check_output_file("generate", "--logits-out", a->logits_out);
    for (int k = 0; k < DS_MEDIA_KINDS; k++)
        if (a->media[k] && access(a->media[k], R_OK))
            ag_fail("generate: %s %s: cannot read the file: %s", media_opt[k], a->media[k],
                    strerror(errno));
    return true;
}

// s with every occurrence of from replaced by to (malloc'd).
static char *replace_all(const char *s, const char *from, const char *to) {
    size_t lf = strlen(from), lt = strlen(to), n = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + lf, from)) n++;
    char *out = ag_xmalloc(strlen(s) + n * lt + 1, "generate"), *o = out;
    for (const char *p; (p = strstr(s, from)); s = p + lf) {
        memcpy(o, s, (size_t)(p - s));
        o += p - s;
        memcpy(o, to, lt);
        o += lt;
    }
    strcpy(o, s);
    return out;
}

static int count_of(const char *s, const char *what) {
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + strlen(what), what)) n++;
    return n;
}

// One placeholder per given media file, none for the others.
static void check_placeholders(const gen_args *a, const char *text) {
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        const char *ph = ds_media_placeholder((ds_media_kind)k);
        int c = count_of(text, ph);
        if (a->media[k] && c > 1)
            ag_fail("generate: the prompt has %d %s placeholders (one %s file)", c, ph,
                    media_opt[k]);
        if (!a->media[k] && c > 0)
            ag_fail("generate: the prompt has %s but no %s file is given", ph, media_opt[k]);
        if (a->raw && a->media[k] && c == 0)
            ag_fail("generate: %s is given but the --raw prompt has no %s", media_opt[k], ph);
    }
}

// The prompt's ids (malloc'd, *T of them).
static int32_t *prompt_ids(const gen_args *a, const gm_groundinggpt_config *cfg, ds_tokenizer *tok,
                           const ds_media_tokens *mt, int64_t *T) {
    char *text = replace_all(a->prompt, "<audio>", "<sound>");
    check_placeholders(a, text);
    const int64_t patches[DS_MEDIA_KINDS] = {cfg->image_tokens, cfg->video_tokens,
                                             cfg->audio_tokens};
    int32_t *ids;
    if (a->raw) {
        for (int k = 0; k < DS_MEDIA_KINDS; k++) {
            if (!a->media[k]) continue;
            size_t lp = strlen(ds_media_token_text((ds_media_kind)k, 0));
            size_t n = strlen(ds_media_token_text((ds_media_kind)k, 1)) + (size_t)patches[k] * lp +
                       strlen(ds_media_token_text((ds_media_kind)k, 2)) + 1;
            char *span = ag_xmalloc(n, "generate");
            strcpy(span, ds_media_token_text((ds_media_kind)k, 1));
            char *e = span + strlen(span);
            for (int64_t j = 0; j < patches[k]; j++, e += lp)
                memcpy(e, ds_media_token_text((ds_media_kind)k, 0), lp);
            strcpy(e, ds_media_token_text((ds_media_kind)k, 2));
            char *t = replace_all(text, ds_media_placeholder((ds_media_kind)k), span);
            free(span);
            free(text);
            text = t;
        }
        ids = ds_tokenizer_encode_alloc(tok, text, strlen(text), DS_TOK_ADD_BOS, T);
    } else {
        // one human turn: the media placeholders first (the template moves them there anyway)
        if (strstr(text, "###"))
            ag_fail("generate: the prompt holds '###', the template's turn separator: the model "
                    "would read what follows as turns of its own (--raw takes a whole "
                    "conversation as it is)");
        size_t n = strlen(text) + 32;
        char *turn = ag_xmalloc(n, "generate");
        turn[0] = 0;
        for (int k = 0; k < DS_MEDIA_KINDS; k++) {
            const char *ph = ds_media_placeholder((ds_media_kind)k);
            if (a->media[k] && !strstr(text, ph)) strcat(strcat(turn, ph), "\n");
        }
        strcat(turn, text);
        ds_turn t = {.from_human = true, .text = turn};
        ds_rendered rd;
        char err[512];
        if (!ds_render(&t, 1, &rd, err, (int)sizeof err)) ag_fail("generate: the prompt: %s", err);
        bool ok = ds_prompt_tokenize(&rd, tok, mt, patches, &ids, NULL, T, err, sizeof err);
        ds_rendered_free(&rd);
        free(turn);
        if (!ok) ag_fail("generate: the prompt: %s", err);
    }
    free(text);
    return ids;
}

typedef struct {
    int width, height;     // image
    ds_timeline tl[3];     // video, audio
    ag_tensor *t[GM_NMOD]; // preprocessed, on ctx's step arena
} media_in;

static void load_media(ag_ctx *ctx, const gen_args *a, const gm_groundinggpt_config *cfg,
                       media_in *mi) {
    memset(mi, 0, sizeof *mi);
    for (int k = 0; k < DS_MEDIA_KINDS; k++)
        if (a->media[k] && !cfg->has[k])
            ag_fail("generate: %s %s: the model (%s) has no %s branch", media_opt[k], a->media[k],
                    cfg->name, gm_modality_name((gm_modality)k));
    if (a->media[DS_MEDIA_IMAGE]) {
        int64_t S = cfg->image_size;
        uint8_t *buf = ag_xmalloc((size_t)(S * S * 3), "image");
        ds_image_info info;
        ds_image_load(a->media[DS_MEDIA_IMAGE], (int)S, buf, &info);
        mi->width = info.width, mi->height = info.height;
        if (info.exif_orientation > 1) // boxes are on the stored pixels: say which picture
            fprintf(stderr,
                    "generate: warning: %s has EXIF orientation %d: the model sees the pixels as "
                    "stored (%dx%d), as the reference does, and boxes are in those pixels, not "
                    "in the picture a photo viewer shows turned\n",
                    a->media[DS_MEDIA_IMAGE], info.exif_orientation, info.width, info.height);
        mi->t[GM_MOD_IMAGE] = ag_from_host(ctx, AG_U8, AG_SHAPE(1, S, S, 3), buf);
        free(buf);
    }
    if (a->media[DS_MEDIA_VIDEO]) {
        int64_t F = cfg->video_frames, S = cfg->video_size;
        uint8_t *buf = ag_xmalloc((size_t)(F * S * S * 3), "video");
        ds_video_info info;
        ds_video_load(a->media[DS_MEDIA_VIDEO], (int)F, (int)S, buf, &info);
        mi->tl[DS_MEDIA_VIDEO] = (ds_timeline){info.start, info.duration};
        mi->t[GM_MOD_VIDEO] = ag_from_host(ctx, AG_U8, AG_SHAPE(F, S, S, 3), buf);
        free(buf);
    }
    if (a->media[DS_MEDIA_AUDIO]) {
        if (cfg->audio_clips != DS_AUDIO_CLIPS || cfg->audio_frames != DS_AUDIO_FRAMES ||
            cfg->audio_mels != DS_AUDIO_MELS)
            ag_fail("generate: the model's audio input is %lld x %lld x %lld, the preprocessing "
                    "makes %d x %d x %d",
                    (long long)cfg->audio_clips, (long long)cfg->audio_frames,
                    (long long)cfg->audio_mels, DS_AUDIO_CLIPS, DS_AUDIO_FRAMES, DS_AUDIO_MELS);
        float *buf =
            ag_xmalloc(sizeof(float) * DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS, "audio");
        ds_audio_file_features(a->media[DS_MEDIA_AUDIO], buf, &mi->tl[DS_MEDIA_AUDIO].duration);
        mi->t[GM_MOD_AUDIO] = ag_from_host(
            ctx, AG_F32, AG_SHAPE(1, DS_AUDIO_CLIPS, DS_AUDIO_FRAMES, DS_AUDIO_MELS), buf);
        free(buf);
    }
}

// The pattern match of ds_parse_box / ds_parse_span that starts exactly at text (whose first
// byte is the opening bracket): parses text up to the first closing bracket on its own.
static bool parse_at(const char *text, char close, bool box, ds_box *b, ds_span *s) {
    const char *e = strchr(text, close);
    if (!e || memchr(text + 1, text[0], (size_t)(e - text - 1)) || e - text > 200) return false;
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)(e - text + 1), text);
    return box ? ds_parse_box(buf, b) : ds_parse_span(buf, s);
}

// What is odd about a box or span the model gave (normalised), or "": corners in the wrong
// order, values outside 0..1, and for a box one that lies in the padding only (nothing left of
// it in the image after clamping).
static const char *box_note(ds_box b, ds_box px) {
    if (b.x1 > b.x2 || b.y1 > b.y2) return " (reversed corners: not a box)";
    if (px.x1 >= px.x2 || px.y1 >= px.y2) return " (in the padding only: empty in the image)";
    if (b.x1 < 0 || b.y1 < 0 || b.x2 > 1 || b.y2 > 1) return " (outside 0..1: clamped)";
    return "";
}

static const char *span_note(ds_span s) {
    if (s.t1 > s.t2) return " (reversed: not a span)";
    if (s.t1 < 0 || s.t2 > 1) return " (outside 0..1: past the medium's ends)";
    return "";
}

void tr_print_grounding(FILE *out, const char *answer, const tr_answer_media *am) {
    for (const char *p = answer; (p = strpbrk(p, "[{")); p++) {
        ds_box b;
        ds_span s;
        char norm[128];
        if (*p == '[' && parse_at(p, ']', true, &b, NULL)) {
            ds_format_box(b, norm, sizeof norm);
            if (am->file[DS_MEDIA_IMAGE]) {
                ds_box px = ds_box_from_square(b, am->width, am->height);
                fprintf(out, "box %s -> [%.1f, %.1f, %.1f, %.1f] px of %s (%dx%d)%s\n", norm, px.x1,
                        px.y1, px.x2, px.y2, am->file[DS_MEDIA_IMAGE], am->width, am->height,
                        box_note(b, px));
            } else {
                fprintf(out, "box %s (normalised; no --image)\n", norm);
            }
        } else if (*p == '{' && parse_at(p, '}', false, NULL, &s)) {
            ds_format_span(s, norm, sizeof norm);
            bool any = false;
            for (int k = DS_MEDIA_VIDEO; k <= DS_MEDIA_AUDIO; k++) {
                if (!am->file[k]) continue;
                any = true;
                ds_timeline tl = am->tl[k];
                ds_span sec = ds_span_from_timeline(s, tl);
                if (tl.start > 0)
                    fprintf(out, "span %s -> {%.2f, %.2f} s of %s (frames from %.2f to %.2f s)%s\n",
                            norm, sec.t1, sec.t2, am->file[k], tl.start, tl.start + tl.duration,
                            span_note(s));
                else
                    fprintf(out, "span %s -> {%.2f, %.2f} s of %s (%.2f s)%s\n", norm, sec.t1,
                            sec.t2, am->file[k], tl.duration, span_note(s));
            }
            if (!any) fprintf(out, "span %s (normalised; no --video or --audio)\n", norm);
        }
    }
}

int tr_generate_main(int argc, char **argv) {
    gen_args a;
    if (!parse_args(argc, argv, &a)) return 0;
    char *ckpt_dir = tr_ckpt_resolve(a.ckpt, "generate", stderr);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tr_yaml *root;
    gm_groundinggpt *m = tr_ckpt_open_model(ctx, ckpt_dir, &root);
    const gm_groundinggpt_config *cfg = &m->cfg;
    char *tok_path = tr_ckpt_tokenizer_path(root, a.tokenizer, "generate");
    ds_tokenizer *tok = ds_tokenizer_load(tok_path);
    if (ds_tokenizer_model_vocab_size(tok) != cfg->llm.vocab)
        ag_fail("generate: %s has %d pieces, the model's vocabulary is %lld", tok_path,
                ds_tokenizer_model_vocab_size(tok), (long long)cfg->llm.vocab);
    ds_media_tokens mt = ds_prompt_add_tokens(tok);
    for (int k = 0; k < DS_MEDIA_KINDS; k++)
        if (mt.patch[k] != cfg->tokens.patch[k] || mt.start[k] != cfg->tokens.start[k] ||
            mt.end[k] != cfg->tokens.end[k])
            ag_fail("generate: the model's %s token ids differ from the tokenizer's (%d %d %d)",
                    gm_modality_name((gm_modality)k), mt.patch[k], mt.start[k], mt.end[k]);

    int64_t T;
    int32_t *ids = prompt_ids(&a, cfg, tok, &mt, &T);
    const int64_t max_seq = cfg->llm.max_seq;
    if (T > max_seq)
        ag_fail("generate: the prompt has %lld tokens (media expanded), more than the model's "
                "max_seq %lld",
                (long long)T, (long long)max_seq);
    media_in mi;
    load_media(ctx, &a, cfg, &mi);
    static const int32_t row0 = 0;
    gm_groundinggpt_batch b = {.B = 1, .T = T, .ids = ids};
    for (int k = 0; k < GM_NMOD; k++)
        if (mi.t[k]) b.media[k] = mi.t[k], b.media_of[k] = &row0;

    int64_t V = gm_groundinggpt_vocab(cfg);
    float *logits = a.logits_out ? ag_xmalloc(sizeof(float) * (size_t)(T * V), "logits") : NULL;
    int64_t len = T + a.max_new < max_seq ? T + a.max_new : max_seq;
    gm_llama_kv *kv = gm_llama_kv_new(m->llm, 1, len);
    tr_decode_opts o = {.max_new = a.max_new,
                        .temperature = a.temperature,
                        .top_p = a.top_p,
                        .seed = a.seed,
                        .prompt_logits = logits};
    tr_decode_result r;
    tr_decode(ctx, m, kv, &b, tok, &o, &r);
    if (a.logits_out) tr_write_npy_f32(a.logits_out, logits, (long long)T, (long long)V);

    char *text = ds_tokenizer_decode(tok, r.ids, r.n, NULL);
    char *answer = tr_eval_trim_answer(text);
    if (a.max_new > 0) {
        printf("%s\n", answer);
        tr_answer_media am = {.width = mi.width, .height = mi.height};
        for (int k = 0; k < DS_MEDIA_KINDS; k++) am.file[k] = a.media[k], am.tl[k] = mi.tl[k];
        tr_print_grounding(stdout, answer, &am);
    }
    fprintf(stderr,
            "generate: %lld prompt tokens (prefill %.3f s), %lld new tokens (%.2f ms/token), "
            "stopped: %s\n",
            (long long)T, r.prefill_s, (long long)r.n, r.n ? 1e3 * r.decode_s / (double)r.n : 0.0,
            tr_stop_name(r.stop));
    free(text);
    free(r.ids);
    free(logits);
    free(ids);
    gm_llama_kv_free(kv);
    ds_tokenizer_free(tok);
    free(tok_path);
    free(ckpt_dir);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    tr_yaml_free(root);
    return 0;
}
