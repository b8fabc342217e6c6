// test_synth.c: `groundc synth` data is what its annotations say. Each referring expression's
// box covers the named shape in the padded image and nothing of its colour lies outside;
// each temporal span covers exactly the frames in which the shape is visible, and the shape
// is half the frame's height or more; each sound span holds the event's energy; held-out
// media never appear in train.json; the same seed gives identical files.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/audio.h"
#include "data/grounding.h"
#include "data/image.h"
#include "data/synth.h"
#include "data/video.h"
#include "testlib.h"

static const char *answer(const cJSON *s) {
    const cJSON *conv = cJSON_GetObjectItem(s, "conversations");
    return cJSON_GetArrayItem(conv, 1)->child->next->valuestring;
}
static const char *question(const cJSON *s) {
    const cJSON *conv = cJSON_GetObjectItem(s, "conversations");
    return cJSON_GetArrayItem(conv, 0)->child->next->valuestring;
}

static const struct {
    const char *name;
    uint8_t rgb[3];
} named[] = {{"red", {220, 40, 40}},     {"green", {40, 190, 60}},   {"blue", {50, 80, 230}},
             {"yellow", {235, 220, 50}}, {"purple", {150, 60, 200}}, {"orange", {245, 140, 30}}};

static const uint8_t *colour_in(const char *text) {
    for (size_t i = 0; i < sizeof named / sizeof *named; i++)
        if (strstr(text, named[i].name)) return named[i].rgb;
    return NULL;
}

static bool is(const uint8_t *px, const uint8_t *rgb) {
    return !memcmp(px, rgb, 3);
}

static void check_rec(const char *dir, const cJSON *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, cJSON_GetObjectItem(s, "image")->valuestring);
    int w, h;
    uint8_t *rgb = ds_image_decode_file(path, &w, &h);
    ds_box nb;
    TL_CHECK(ds_parse_box(answer(s), &nb), "no box in %s", answer(s));
    const uint8_t *want = colour_in(question(s));
    TL_CHECK(want != NULL, "no colour in %s", question(s));
    ds_box px = ds_box_from_square(nb, w, h);
    int inside = 0, outside = 0, box_px = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bool in = x + 0.5 >= px.x1 - 1 && x + 0.5 <= px.x2 + 1 && y + 0.5 >= px.y1 - 1 &&
                      y + 0.5 <= px.y2 + 1;
            bool hit = want && is(rgb + 3 * ((size_t)y * w + x), want);
            inside += in && hit;
            outside += !in && hit;
            box_px += in;
        }
    // a square fills its box, a circle ~79 %, a triangle ~50 %; 3-decimal rounding and the
    // 1-pixel margin cost a little
    TL_CHECK(outside == 0 && inside > 0.35 * box_px,
             "%s: %d pixels of the colour inside a box of %d, %d outside",
             cJSON_GetObjectItem(s, "id")->valuestring, inside, box_px, outside);
    free(rgb);
}

static void check_tvg(const char *dir, const cJSON *s, const ds_synth_config *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, cJSON_GetObjectItem(s, "video")->valuestring);
    enum { S = 48 }; // every frame, at the synthetic height (rows map 1:1)
    int F = c->video_frames;
    uint8_t *frames = malloc((size_t)F * S * S * 3);
    ds_video_info info;
    ds_video_load(path, F, S, frames, &info);
    TL_CHECK(info.n_decoded == F, "%s: %d frames, wrote %d", path, (int)info.n_decoded, F);
    ds_span sp;
    TL_CHECK(ds_parse_span(answer(s), &sp), "no span in %s", answer(s));
    int wrong = 0, tallest = 0;
    for (int f = 0; f < F; f++) {
        // visible: some pixel far from the (grey) background; rows: how many rows hold one
        bool row_hit[S] = {false};
        for (int p = 0; p < S * S; p++) {
            const uint8_t *q = frames + ((size_t)f * S * S + p) * 3;
            int mx = q[0] > q[1] ? (q[0] > q[2] ? q[0] : q[2]) : (q[1] > q[2] ? q[1] : q[2]);
            int mn = q[0] < q[1] ? (q[0] < q[2] ? q[0] : q[2]) : (q[1] < q[2] ? q[1] : q[2]);
            if (mx - mn > 60) row_hit[p / S] = true;
        }
        int rows = 0;
        for (int y = 0; y < S; y++) rows += row_hit[y];
        if (rows > tallest) tallest = rows;
        double t = (f + 0.5) / F;
        bool in_span = t > sp.t1 && t < sp.t2;
        wrong += in_span != (rows > 0);
    }
    TL_CHECK(wrong == 0, "%s: %d frames disagree with the span %s", path, wrong, answer(s));
    // half the height or more (synth.c says why)
    TL_CHECK(tallest >= S / 2, "%s: the shape spans %d of %d rows", path, tallest, S);
    free(frames);
}

static void check_sound(const char *dir, const cJSON *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, cJSON_GetObjectItem(s, "sound")->valuestring);
    int64_t n;
    ds_sound snd;
    ds_audio_load(path, 16000, &snd);
    float *x = snd.first;
    n = snd.n;
    ds_span sp;
    TL_CHECK(ds_parse_span(answer(s), &sp), "no span in %s", answer(s));
    double in = 0, out = 0;
    int64_t n_in = 0, n_out = 0;
    for (int64_t k = 0; k < n; k++) {
        double u = (double)k / (double)n;
        if (u > sp.t1 + 0.01 && u < sp.t2 - 0.01)
            in += x[k] * x[k], n_in++;
        else if (u < sp.t1 - 0.01 || u > sp.t2 + 0.01)
            out += x[k] * x[k], n_out++;
    }
    double rms_in = sqrt(in / fmax(n_in, 1)), rms_out = sqrt(out / fmax(n_out, 1));
    TL_CHECK(rms_in > 10 * rms_out, "%s: energy inside the span %.4f, outside %.4f", path, rms_in,
             rms_out);
    ds_sound_free(&snd);
}

int main(void) {
    char dir[] = "/tmp/groundc_synth_XXXXXX", dir2[] = "/tmp/groundc_synth_XXXXXX";
    if (!mkdtemp(dir) || !mkdtemp(dir2)) return 1;
    ds_synth_config c = ds_synth_defaults();
    c.images = 30;
    c.videos = 6;
    c.audios = 6;
    c.eval_fraction = 0.2;
    c.max_shapes = 3;
    c.out_dir = dir;
    ds_synth(&c);
    // The second run into a folder whose parents do not exist yet (mkdir -p).
    char nested[512];
    snprintf(nested, sizeof nested, "%s/a/b", dir2);
    c.out_dir = nested;
    ds_synth(&c);

    char path[4096];
    snprintf(path, sizeof path, "%s/train.json", dir);
    char *train_text = tl_slurp(path, NULL);
    snprintf(path, sizeof path, "%s/eval.json", dir);
    char *eval_text = tl_slurp(path, NULL);
    cJSON *train = cJSON_Parse(train_text), *eval = cJSON_Parse(eval_text);
    TL_CHECK(train && eval, "JSON does not parse");
    // 3 conversations per image, 2 per video and per audio; 20 % of the media held out
    TL_CHECK(cJSON_GetArraySize(train) == 24 * 3 + 5 * 2 + 5 * 2, "%d training conversations",
             cJSON_GetArraySize(train));
    TL_CHECK(cJSON_GetArraySize(eval) == 6 * 3 + 1 * 2 + 1 * 2, "%d eval conversations",
             cJSON_GetArraySize(eval));
    int checked[3] = {0};
    cJSON *s;
    cJSON_ArrayForEach(s, eval) {
        const char *media = NULL;
        for (const char *const *k = (const char *const[]){"image", "video", "sound", NULL}; *k; k++)
            if (cJSON_GetObjectItem(s, *k)) media = cJSON_GetObjectItem(s, *k)->valuestring;
        TL_CHECK(media && !strstr(train_text, media), "held-out %s appears in train.json", media);
    }
    cJSON *lists[2] = {train, eval};
    for (int l = 0; l < 2; l++) cJSON_ArrayForEach(s, lists[l]) {
            const char *task = cJSON_GetObjectItem(s, "task")->valuestring;
            if (!strcmp(task, "rec"))
                check_rec(dir, s), checked[0]++;
            else if (!strcmp(task, "tvg"))
                check_tvg(dir, s, &c), checked[1]++;
            else if (!strcmp(task, "sound"))
                check_sound(dir, s), checked[2]++;
        }
    TL_CHECK(checked[0] == 30 && checked[1] == 6 && checked[2] == 6,
             "checked %d rec, %d tvg, %d sound", checked[0], checked[1], checked[2]);
    // determinism: same seed, same bytes (JSON and a media file of each kind)
    const char *same[] = {"train.json", "eval.json", "media/images/img_000007.png",
                          "media/videos/vid_000002.mp4", "media/audio/aud_000003.wav"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        char a[4096], b[4096];
        snprintf(a, sizeof a, "cmp -s %s/%s %s/%s", dir, same[i], nested, same[i]);
        TL_CHECK(system(a) == 0, "%s differs between two runs with the same seed", same[i]);
        (void)b;
    }
    cJSON_Delete(train);
    cJSON_Delete(eval);
    free(train_text);
    free(eval_text);
    snprintf(path, sizeof path, "rm -rf %s %s", dir, dir2);
    if (system(path) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tl_summary("test_synth");
}
