// synth.c: see synth.h. Every random choice comes from a counter-based generator keyed by
// (seed, media kind, index), so a file's content does not depend on how many others exist.
#include "synth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/rng.h"
#include "data/audio.h"
#include "data/files.h"
#include "data/grounding.h"
#include "data/image.h"
#include "data/video.h"

typedef struct {
    uint64_t s;
} rng;

static uint64_t next(rng *r) {
    return ag_splitmix64(&r->s);
}
static double uniform(rng *r) {
    return (double)(next(r) >> 11) * 0x1.0p-53;
}
static int below(rng *r, int n) {
    return (int)(next(r) % (uint64_t)n);
}
static rng rng_for(uint64_t seed, uint64_t kind, uint64_t index) {
    rng r = {seed * 0x2545f4914f6cdd1dull + kind * 0x9e3779b97f4a7c15ull + index};
    next(&r);
    return r;
}

typedef struct {
    const char *name;
    uint8_t rgb[3];
} colour;
static const colour colours[] = {{"red", {220, 40, 40}},     {"green", {40, 190, 60}},
                                 {"blue", {50, 80, 230}},    {"yellow", {235, 220, 50}},
                                 {"purple", {150, 60, 200}}, {"orange", {245, 140, 30}}};
enum { N_COLOURS = sizeof colours / sizeof *colours };
typedef enum { SQUARE, CIRCLE, TRIANGLE, N_SHAPES } shape_kind;
static const char *const shape_names[N_SHAPES] = {"square", "circle", "triangle"};

typedef struct {
    shape_kind kind;
    int colour;
    double x1, y1, x2, y2; // pixels
} shape;

ds_synth_config ds_synth_defaults(void) {
    return (ds_synth_config){.out_dir = NULL,
                             .images = 600,
                             .videos = 200,
                             .audios = 200,
                             .eval_fraction = 0.15,
                             .seed = 1,
                             .max_shapes = 2,
                             .video_frames = 32,
                             .video_width = 64,
                             .video_height = 48,
                             .video_fps = 8,
                             .audio_seconds = 6};
}

static bool inside(const shape *s, double x, double y) {
    double cx = (s->x1 + s->x2) / 2, cy = (s->y1 + s->y2) / 2, r = (s->x2 - s->x1) / 2;
    switch (s->kind) {
    case SQUARE:
        return x >= s->x1 && x < s->x2 && y >= s->y1 && y < s->y2;
    case CIRCLE:
        return (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r;
    case TRIANGLE: { // apex up
        if (y < s->y1 || y >= s->y2) return false;
        double half = r * (y - s->y1) / (s->y2 - s->y1);
        return x >= cx - half && x <= cx + half;
    }
    default:
        return false;
    }
}

static void draw(uint8_t *rgb, int w, int h, const shape *s) {
    for (int y = (int)s->y1; y < (int)ceil(s->y2) && y < h; y++)
        for (int x = (int)s->x1; x < (int)ceil(s->x2) && x < w; x++)
            if (y >= 0 && x >= 0 && inside(s, x + 0.5, y + 0.5))
                memcpy(rgb + 3 * ((size_t)y * w + x), colours[s->colour].rgb, 3);
}

static void fill(uint8_t *rgb, int w, int h, rng *r) {
    uint8_t g = (uint8_t)(20 + below(r, 50));
    for (int i = 0; i < w * h; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g;
}

static bool overlaps(const shape *a, const shape *b) {
    return a->x1 < b->x2 && b->x1 < a->x2 && a->y1 < b->y2 && b->y1 < a->y2;
}

// snprintf into a path buffer; fails with "<path>: path too long" when it does not fit (the
// path by its last 200 characters: ag_fail's one line holds 2047, and such a path is longer).
__attribute__((format(printf, 3, 4))) static void path_printf(char *buf, size_t n, const char *fmt,
                                                              ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0) ag_fail("synth: cannot format a path from '%s'", fmt);
    if ((size_t)k < n) return;
    char *full = ag_xmalloc((size_t)k + 1, "path");
    va_start(ap, fmt);
    vsnprintf(full, (size_t)k + 1, fmt, ap);
    va_end(ap);
    ag_fail_path_too_long(full, "");
}

static cJSON *turn(const char *from, const char *value) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "from", from);
    cJSON_AddStringToObject(t, "value", value);
    return t;
}

// One LLaVA-style sample: {"id", media key: path, "conversations": [human, gpt], "task"}.
static void add_sample(cJSON *list, const char *id, const char *media_key, const char *path,
                       const char *task, const char *question, const char *answer) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "id", id);
    cJSON_AddStringToObject(s, media_key, path);
    cJSON *conv = cJSON_AddArrayToObject(s, "conversations");
    cJSON_AddItemToArray(conv, turn("human", question));
    cJSON_AddItemToArray(conv, turn("gpt", answer));
    cJSON_AddStringToObject(s, "task", task);
    cJSON_AddItemToArray(list, s);
}

static void synth_image(const ds_synth_config *c, int64_t i, cJSON *list) {
    rng r = rng_for(c->seed, 1, (uint64_t)i);
    int w = 48 + below(&r, 81), h = 48 + below(&r, 81);
    uint8_t *rgb = ag_xmalloc((size_t)w * h * 3, "synthetic image");
    fill(rgb, w, h, &r);
    shape shapes[8];
    int n = 1 + below(&r, c->max_shapes < 8 ? c->max_shapes : 8);
    int placed = 0;
    for (int tries = 0; placed < n && tries < 100; tries++) {
        shape s = {.kind = (shape_kind)below(&r, N_SHAPES), .colour = below(&r, N_COLOURS)};
        double side = (0.3 + 0.25 * uniform(&r)) * (w < h ? w : h);
        s.x1 = uniform(&r) * (w - side);
        s.y1 = uniform(&r) * (h - side);
        s.x2 = s.x1 + side;
        s.y2 = s.y1 + side;
        bool ok = true;
        for (int k = 0; k < placed; k++) // distinct colours keep expressions unambiguous
            if (overlaps(&s, &shapes[k]) || s.colour == shapes[k].colour) ok = false;
        if (ok) shapes[placed++] = s;
    }
    for (int k = 0; k < placed; k++) draw(rgb, w, h, &shapes[k]);
    char rel[128], path[4096], id[64], q[512], a[512], box[64];
    path_printf(rel, sizeof rel, "media/images/img_%06lld.png", (long long)i);
    path_printf(path, sizeof path, "%s/%s", c->out_dir, rel);
    ds_image_write_png(path, rgb, w, h);
    free(rgb);

    // caption (coarse)
    int k = 0;
    k += snprintf(a + k, sizeof a - (size_t)k, "There %s %d shape%s: ", placed > 1 ? "are" : "is",
                  placed, placed > 1 ? "s" : "");
    for (int j = 0; j < placed; j++)
        k += snprintf(a + k, sizeof a - (size_t)k, "%sa %s %s",
                      j ? (j + 1 == placed ? " and " : ", ") : "", colours[shapes[j].colour].name,
                      shape_names[shapes[j].kind]);
    snprintf(a + k, sizeof a - (size_t)k, ".");
    snprintf(id, sizeof id, "synth-img-%06lld-caption", (long long)i);
    add_sample(list, id, "image", rel, "caption", "<image>\nDescribe the image briefly.", a);
    // referring expression -> box, and box -> description (fine), on one shape
    const shape *s = &shapes[below(&r, placed)];
    ds_format_box(ds_box_to_square((ds_box){s->x1, s->y1, s->x2, s->y2}, w, h), box, sizeof box);
    snprintf(q, sizeof q,
             "<image>\nCan you describe the region that corresponds to the %s %s in this image?",
             colours[s->colour].name, shape_names[s->kind]);
    snprintf(id, sizeof id, "synth-img-%06lld-rec", (long long)i);
    add_sample(list, id, "image", rel, "rec", q, box);
    snprintf(q, sizeof q, "<image>\nWhat is in the region %s?", box);
    snprintf(a, sizeof a, "A %s %s.", colours[s->colour].name, shape_names[s->kind]);
    snprintf(id, sizeof id, "synth-img-%06lld-region", (long long)i);
    add_sample(list, id, "image", rel, "reg", q, a);
}

static void synth_video(const ds_synth_config *c, int64_t i, cJSON *list) {
    rng r = rng_for(c->seed, 2, (uint64_t)i);
    int w = c->video_width, h = c->video_height, n = c->video_frames;
    size_t frame = (size_t)w * h * 3;
    uint8_t *frames = ag_xmalloc(frame * (size_t)n, "synthetic video");
    uint8_t bg[3];
    shape s = {.kind = (shape_kind)below(&r, N_SHAPES), .colour = below(&r, N_COLOURS)};
    // Half to three quarters of the height: packed at 16 pixels a frame (the demo), a shape
    // of a third covers a tenth of it, and a video tower trained from scratch often lost it.
    double side = (0.5 + 0.25 * uniform(&r)) * h;
    // Visible for n/8 to n/3 frames placed anywhere: short enough that no constant span
    // scores (the best one hits about a fifth at IoU 0.5), long enough that frames sampled every
    // n/8 always see the shape at least once.
    int len = n / 8 + below(&r, n / 3 - n / 8 + 1), first = below(&r, n - len + 1),
        last = first + len; // [first, last)
    bool right = below(&r, 2);
    double y = uniform(&r) * (h - side);
    fill(frames, 1, 1, &r);
    memcpy(bg, frames, 3);
    for (int f = 0; f < n; f++) {
        uint8_t *px = frames + frame * (size_t)f;
        for (size_t p = 0; p < (size_t)w * h; p++) memcpy(px + 3 * p, bg, 3);
        if (f >= first && f < last) {
            double t = (double)(f - first) / (double)(last - first);
            double x = (right ? t : 1 - t) * (w - side);
            shape at = s;
            at.x1 = x;
            at.x2 = x + side;
            at.y1 = y;
            at.y2 = y + side;
            draw(px, w, h, &at);
        }
    }
    char rel[128], path[4096], id[64], q[512], a[512], span[64];
    path_printf(rel, sizeof rel, "media/videos/vid_%06lld.mp4", (long long)i);
    path_printf(path, sizeof path, "%s/%s", c->out_dir, rel);
    ds_video_write(path, frames, n, w, h, c->video_fps);
    free(frames);
    snprintf(a, sizeof a, "A %s %s appears and moves to the %s.", colours[s.colour].name,
             shape_names[s.kind], right ? "right" : "left");
    snprintf(id, sizeof id, "synth-vid-%06lld-caption", (long long)i);
    add_sample(list, id, "video", rel, "caption", "<video>\nDescribe what happens in the video.",
               a);
    ds_format_span((ds_span){(double)first / n, (double)last / n}, span, sizeof span);
    snprintf(q, sizeof q, "<video>\nWhen is the %s %s visible in the video?",
             colours[s.colour].name, shape_names[s.kind]);
    snprintf(id, sizeof id, "synth-vid-%06lld-tvg", (long long)i);
    add_sample(list, id, "video", rel, "tvg", q, span);
}

static const char *const sound_names[] = {"a low beep", "a high beep", "a burst of noise"};

static void synth_audio(const ds_synth_config *c, int64_t i, cJSON *list) {
    rng r = rng_for(c->seed, 3, (uint64_t)i);
    const int rate = 16000;
    int64_t n = (int64_t)(c->audio_seconds * rate);
    float *x = ag_xmalloc(sizeof(float) * (size_t)n, "synthetic audio");
    int kind = below(&r, 3);
    // An event of 10 % to 35 % of the clip placed anywhere, so that no constant span scores.
    double len = 0.1 + 0.25 * uniform(&r), t1 = 0.02 + uniform(&r) * (0.96 - len), t2 = t1 + len;
    for (int64_t k = 0; k < n; k++) {
        double t = (double)k / rate, u = (double)k / (double)n;
        double v = 0.01 * (uniform(&r) * 2 - 1); // faint background
        if (u >= t1 && u < t2) {
            if (kind == 2)
                v += 0.3 * (uniform(&r) * 2 - 1);
            else
                v += 0.4 * sin(2 * 3.141592653589793 * (kind ? 1800.0 : 400.0) * t);
        }
        x[k] = (float)v;
    }
    char rel[128], path[4096], id[64], q[512], a[512], span[64];
    path_printf(rel, sizeof rel, "media/audio/aud_%06lld.wav", (long long)i);
    path_printf(path, sizeof path, "%s/%s", c->out_dir, rel);
    ds_audio_write_wav(path, x, n, rate);
    free(x);
    snprintf(a, sizeof a, "The sound of %s.", sound_names[kind]);
    snprintf(id, sizeof id, "synth-aud-%06lld-caption", (long long)i);
    add_sample(list, id, "sound", rel, "caption", "<sound>\nWhat do you hear?", a);
    ds_format_span((ds_span){t1, t2}, span, sizeof span);
    snprintf(q, sizeof q, "<sound>\nWhen do you hear %s?", sound_names[kind]);
    snprintf(id, sizeof id, "synth-aud-%06lld-sound", (long long)i);
    add_sample(list, id, "sound", rel, "sound", q, span);
}

// dir/name, written atomically.
static void write_json(const char *dir, const char *name, cJSON *list) {
    char path[4096];
    path_printf(path, sizeof path, "%s/%s", dir, name);
    char *text = cJSON_PrintUnformatted(list);
    if (!text) ag_fail("%s: out of memory printing JSON", path);
    ds_write_file_atomic(path, &(ds_file_part){text, strlen(text)}, 1);
    free(text);
}

void ds_synth(const ds_synth_config *c) {
    if (!c->out_dir) ag_fail("synth: no output folder");
    if (c->max_shapes < 1) ag_fail("synth: max_shapes must be >= 1");
    if (c->video_frames < 8) ag_fail("synth: video_frames must be >= 8");
    if (!(c->eval_fraction >= 0 && c->eval_fraction < 1))
        ag_fail("synth: eval_fraction outside [0, 1)");
    char dir[4096];
    const char *sub[] = {"images", "videos", "audio"}; // mkdir -p makes OUT and OUT/media too
    for (int k = 0; k < 3; k++) {
        path_printf(dir, sizeof dir, "%s/media/%s", c->out_dir, sub[k]);
        ds_make_dirs(dir);
    }
    cJSON *train = cJSON_CreateArray(), *eval = cJSON_CreateArray();
    int64_t counts[3] = {c->images, c->videos, c->audios};
    void (*make[3])(const ds_synth_config *, int64_t, cJSON *) = {synth_image, synth_video,
                                                                  synth_audio};
    for (int k = 0; k < 3; k++) {
        // the last eval_fraction of each kind is held out
        int64_t n_eval = (int64_t)llround(c->eval_fraction * (double)counts[k]);
        for (int64_t i = 0; i < counts[k]; i++)
            make[k](c, i, i >= counts[k] - n_eval ? eval : train);
        printf("synth: %lld %s (%lld held out)\n", (long long)counts[k], sub[k], (long long)n_eval);
    }
    write_json(c->out_dir, "train.json", train);
    write_json(c->out_dir, "eval.json", eval);
    printf("synth: %d training and %d evaluation conversations in %s\n", cJSON_GetArraySize(train),
           cJSON_GetArraySize(eval), c->out_dir);
    cJSON_Delete(train);
    cJSON_Delete(eval);
}
