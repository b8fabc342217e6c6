// jsonl.h: the packer's input readers. A reference-format JSON list (LLaVA / GroundingGPT:
// [{"id"?, "image"|"video"|"sound", "conversations": [...], "task"?}, ...]) or a custom
// grounding JSONL file (one object per line) becomes a list of records, each a JSON object
// with its position in the file. Custom grounding records (boxes in pixels, spans in seconds)
// turn into reference-style conversations once their media's size or duration is known.
//
// Custom grounding JSONL, one object per line (blank lines are ignored):
//   {"image": PATH, "expression": TEXT, "bbox": [x, y, w, h]}        pixels of the original image
//   {"video": PATH, "query": TEXT, "span": [start, end]}             seconds
//   {"sound": PATH, "query": TEXT, "span": [start, end]}             seconds ("audio" works too)
// and optionally "id". The conversation written for each (DS_PROMPT_*):
//   image: "<image>\nCan you describe the region that corresponds to TEXT in this image?"
//          -> "[x1, y1, x2, y2]" normalised to the padded square, 3 decimals (the reference's
//          REC prompt, word for word)
//   video: "<video>\nWhen does \"TEXT\" happen in the video?" -> "{t1, t2}", 2 decimals
//   sound: "<sound>\nWhen do you hear \"TEXT\" in the audio?" -> "{t1, t2}", 2 decimals
// TEXT is the expression or query with surrounding white space and one final '.' removed
// (the quotes keep a sentence-like query such as "person opens the door." readable).
// Tolerances, because real annotations are a little sloppy at the edges: a box may poke out of
// the image by up to DS_BOX_TOLERANCE_PX pixels and a span may end up to
// DS_SPAN_TOLERANCE_S seconds after the last decoded frame; both are clamped to the media (a
// span may also start before the first frame, when the video starts after the file does). A
// box or span beyond that, empty, or reversed is an error.
#pragma once
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/grounding.h"
#include "data/template.h"

#define DS_PROMPT_REC   "Can you describe the region that corresponds to %s in this image?"
#define DS_PROMPT_TVG   "When does \"%s\" happen in the video?"
#define DS_PROMPT_SOUND "When do you hear \"%s\" in the audio?"

#define DS_BOX_TOLERANCE_PX 1.0
#define DS_SPAN_TOLERANCE_S 0.5

typedef struct {
    cJSON *item;   // the sample object (NULL when the line is not valid JSON)
    int64_t index; // position in the list (JSON, from 0) or line number (JSONL, from 1)
    char *error;   // why the record is bad before any field is looked at (a JSONL line that
                   // is not valid JSON; a string holding a NUL character), malloc'd, else NULL
} ds_record;

typedef struct {
    char *path; // as given
    bool jsonl;
    cJSON *root; // JSON: the whole list (records point into it)
    int64_t n;
    ds_record *records;
} ds_record_file;

// Reads a whole reference-format JSON file. A missing or unreadable file, invalid JSON
// (reported with line:column) or anything but a list at the top is an ag_fail naming the file;
// what each element holds is checked later, per sample. An element with a NUL character in
// some string ("\u0000", which would silently cut the text short) gets an error.
void ds_records_read_json(const char *path, ds_record_file *out);
// Reads a JSONL file: one record per non-blank line. A line that is not valid JSON becomes a
// record with item NULL and an error (a bad sample, not a bad file), a line with a NUL
// character in some string one with an error; an unreadable file fails.
void ds_records_read_jsonl(const char *path, ds_record_file *out);
void ds_record_file_free(ds_record_file *f);

// The fields of one reference-format sample (what `groundc pack` reads before any media):
// the media file names by ds_media_kind ("image", "video", "sound"; NULL where absent).
// Returns NULL, or a static one-line reason when the sample is not an object or a name is not
// a non-empty string.
const char *ds_json_sample_media(const cJSON *obj, const char *files[DS_MEDIA_KINDS]);
// The "task" (-1 when absent: ds_infer_task decides) and the "conversations" as turns, in a
// malloc'd array (free it) whose texts point into obj. False with a one-line reason when the
// task is unknown or a turn is not {"from": "human"|"gpt", "value": STRING}.
bool ds_json_sample_turns(const cJSON *obj, int *task, ds_turn **turns, int *n, char *err,
                          size_t err_size);
// What grounding references the turns hold: a box in a question, a box or a span in an answer.
typedef struct {
    bool box_question, box_answer, span_answer;
} ds_turn_refs;
ds_turn_refs ds_find_turn_refs(const ds_turn *turns, int n);
// The task of a sample without a "task" field (the rules of pack.h: the grounding tasks only
// for one exchange, more exchanges are a conversation).
int ds_infer_task(const ds_turn *turns, int n, bool has_video, bool has_audio);

// One custom grounding record, checked for shape (types, counts, finite numbers).
typedef struct {
    ds_media_kind kind; // DS_MEDIA_IMAGE: box; DS_MEDIA_VIDEO / DS_MEDIA_AUDIO: span
    const char *media;  // the file name as written (points into the record)
    const char *text;   // expression or query (points into the record)
    double v[4];        // bbox x, y, w, h (pixels) or span start, end (seconds) in v[0], v[1]
} ds_grounding_record;

// Checks a JSONL object's fields; false with a one-line reason in err when they are wrong.
bool ds_grounding_record_parse(const cJSON *obj, ds_grounding_record *out, char *err,
                               size_t err_size);
// Whether pack reads `key` in a custom record of this kind ("id" is kept in the metadata).
bool ds_grounding_key_known(ds_media_kind kind, const char *key);
// Reports on stderr, one line per key, the keys of a JSONL file's well-formed records that
// pack does not read: a typo or a "bbox_format" would otherwise go unnoticed. Each line names
// the first record with the key and how many have it; the records are packed all the same.
// Returns the number of such keys.
int ds_grounding_report_unread_keys(const ds_record_file *f);
// The human question (with its placeholder) and the assistant answer for a record whose
// image is width x height pixels or whose video / audio frames lie at tl on the file's
// timeline (a span in seconds counts from the file's start). Both strings are malloc'd.
// False with a reason when the box or span does not fit the media.
bool ds_grounding_conversation(const ds_grounding_record *r, int width, int height, ds_timeline tl,
                               char **question, char **answer, char *err, size_t err_size);
