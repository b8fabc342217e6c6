// tokenizer.c: see tokenizer.h. SentencePiece BPE as sentencepiece 0.1.97 does it:
//   normalize (identity rule: invalid UTF-8 bytes -> U+FFFD, ' ' -> U+2581, dummy prefix),
//   split into characters (user-defined pieces kept whole and frozen),
//   repeatedly merge the adjacent pair whose concatenation is the highest-scoring piece
//   (ties: leftmost), then map pieces to ids, unknown characters to <0xNN> bytes.
// The merge loop keeps candidate pairs in a binary heap and skips stale entries lazily, so a
// text of n characters costs O(n log n), never the O(n^2) of rescanning for the best pair; and
// when the vocabulary allows it (Llama's does) the text is merged word by word, which keeps the
// heaps small and in cache. Pieces are found through a hash map from piece bytes to ids.
#include "data/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "autograd/error.h"
#include "data/files.h"
#include "sentencepiece_model.pb-c.h"

#define DS_WS         "\xe2\x96\x81" // U+2581 LOWER ONE EIGHTH BLOCK: escaped whitespace
#define DS_WS_LEN     3
#define DS_FFFD       "\xef\xbf\xbd"    // U+FFFD REPLACEMENT CHARACTER
#define DS_MAX_TEXT   ((size_t)1 << 29) // keeps 3x-expanded offsets inside int32
#define DS_MAX_PIECES (1 << 28)

// Byte strings -> ids: open addressing with linear probing over a power-of-two table. The
// strings live in the tokenizer (piece[id], len[id]); slots keep the hash to skip most
// memcmp calls.
typedef struct {
    int32_t *id; // -1: empty slot
    uint32_t *hash;
    uint32_t mask;
} ds_tok_map;

struct ds_tokenizer {
    char *path;
    char digest[65];
    int32_t n_model;            // pieces of the model file: ids [0, n_model)
    int32_t n_added, cap_added; // added tokens: ids [n_model, n_model + n_added)
    char **piece;               // NUL-terminated piece text by id
    uint32_t *len;              // its length in bytes
    uint8_t *type;              // ds_tok_type by id
    float *score;               // model pieces only
    char *arena;                // storage of the model's piece strings
    ds_tok_map normal;          // NORMAL, USER_DEFINED, UNUSED: what merges may produce
    ds_tok_map reserved;        // CONTROL, UNKNOWN, BYTE: looked up first, as SentencePiece does
    bool overlap;               // some text is in both maps (then ids need the full lookup)
    int32_t byte_id[256];       // <0xNN> pieces, -1 when absent
    int32_t unk, bos, eos, pad;
    bool byte_fallback, dummy_prefix, remove_extra_ws, has_unused;
    bool ws_split;         // no piece has U+2581 after another character: words merge independently
    uint32_t max_user_len; // longest USER_DEFINED piece; 0: none
    char *unk_surface;     // how <unk> decodes
    bool added_first[256]; // bytes that start some added token
    int32_t *added_order;  // added token ids, longest text first
};

// ---------------------------------------------------------------- hashing and lookups

static uint32_t ds_tok_hash(const char *s, size_t n) {
    uint32_t h =
        2166136261u; // FNV-1a: keys are short pieces (measured no slower than wider hashes)
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static void ds_tok_map_init(ds_tok_map *m, int32_t count) {
    uint32_t size = 16;
    while (size < 2u * (uint32_t)count + 16u) size *= 2;
    m->id = ag_xmalloc(size * sizeof *m->id, "tokenizer hash map");
    m->hash = ag_xmalloc(size * sizeof *m->hash, "tokenizer hash map");
    for (uint32_t i = 0; i < size; i++) m->id[i] = -1;
    m->mask = size - 1;
}

static void ds_tok_map_free(ds_tok_map *m) {
    free(m->id);
    free(m->hash);
    m->id = NULL;
    m->hash = NULL;
}

static int32_t ds_tok_map_find_h(const ds_tokenizer *tok, const ds_tok_map *m, const char *s,
                                 size_t n, uint32_t h) {
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->id[i];
        if (id < 0) return -1;
        if (m->hash[i] == h && tok->len[id] == n && memcmp(tok->piece[id], s, n) == 0) return id;
    }
}

static int32_t ds_tok_map_find(const ds_tokenizer *tok, const ds_tok_map *m, const char *s,
                               size_t n) {
    return ds_tok_map_find_h(tok, m, s, n, ds_tok_hash(s, n));
}

// Inserts id (whose text is already in tok); false when that text is already there.
static bool ds_tok_map_insert(ds_tokenizer *tok, ds_tok_map *m, int32_t id) {
    const char *s = tok->piece[id];
    size_t n = tok->len[id];
    uint32_t h = ds_tok_hash(s, n);
    uint32_t i = h & m->mask;
    for (; m->id[i] >= 0; i = (i + 1) & m->mask) {
        int32_t o = m->id[i];
        if (m->hash[i] == h && tok->len[o] == n && memcmp(tok->piece[o], s, n) == 0) return false;
    }
    m->id[i] = id;
    m->hash[i] = h;
    return true;
}

// SentencePiece's PieceToId without the unk default: reserved pieces first, then the others.
static int32_t ds_tok_sp_lookup(const ds_tokenizer *tok, const char *s, size_t n) {
    int32_t id = ds_tok_map_find(tok, &tok->reserved, s, n);
    return id >= 0 ? id : ds_tok_map_find(tok, &tok->normal, s, n);
}

// ---------------------------------------------------------------- UTF-8 as SentencePiece sees it

// One character at s (n > 0 bytes left): its length in *mblen and whether it is well formed
// (shortest form, no surrogates, at most U+10FFFF). A malformed lead byte counts as 1 byte.
static bool ds_tok_utf8_char(const unsigned char *s, size_t n, size_t *mblen) {
    unsigned c = s[0];
    *mblen = 1;
    if (c < 0x80) return true;
#define DS_TRAIL(b) (((b)&0xC0) == 0x80)
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        unsigned cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        if (DS_TRAIL(s[1]) && cp >= 0x80) {
            *mblen = 2;
            return true;
        }
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        unsigned cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        if (DS_TRAIL(s[1]) && DS_TRAIL(s[2]) && cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000)) {
            *mblen = 3;
            return true;
        }
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        unsigned cp =
            ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        if (DS_TRAIL(s[1]) && DS_TRAIL(s[2]) && DS_TRAIL(s[3]) && cp >= 0x10000 && cp <= 0x10FFFF) {
            *mblen = 4;
            return true;
        }
    }
#undef DS_TRAIL
    return false;
}

// Length of a character judged by its lead byte only (SentencePiece's OneCharLen), clipped to
// what is left. Used on normalized text, which is well formed.
static size_t ds_tok_one_char_len(unsigned char c, size_t left) {
    size_t n = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return n < left ? n : left;
}

// Longest USER_DEFINED piece that starts s, 0 if none.
static size_t ds_tok_user_prefix(const ds_tokenizer *tok, const char *s, size_t n) {
    size_t l = tok->max_user_len < n ? tok->max_user_len : n;
    for (; l > 0; l--) {
        int32_t id = ds_tok_map_find(tok, &tok->normal, s, l);
        if (id >= 0 && tok->type[id] == DS_TOK_USER_DEFINED) return l;
    }
    return 0;
}

// ---------------------------------------------------------------- loading

static const char *ds_tok_model_type_name(int t) {
    switch (t) {
    case SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM:
        return "UNIGRAM";
    case SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE:
        return "BPE";
    case SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__WORD:
        return "WORD";
    case SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__CHAR:
        return "CHAR";
    default:
        return "unknown";
    }
}

// "<0xNN>" with two uppercase hex digits, exactly as SentencePiece writes byte pieces; -1 if
// the text is not one.
static int ds_tok_byte_of_piece(const char *p, size_t n) {
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// The normalizer settings groundc implements; anything else is refused, with the reason.
static bool ds_tok_check_normalizer(const Sentencepiece__NormalizerSpec *ns, const char *what,
                                    char *err, size_t errn) {
    const char *name = ns->name ? ns->name : "";
    if (ns->precompiled_charsmap.len > 0 || (name[0] && strcmp(name, "identity") != 0)) {
        snprintf(err, errn,
                 "%s '%s' needs a precompiled character map (Unicode normalization), which "
                 "groundc does not implement; only the 'identity' normalizer (Llama's) is "
                 "supported",
                 what, name[0] ? name : "(unnamed)");
        return false;
    }
    return true;
}

// The model as a whole: complete, BPE, and with settings groundc implements; anything else
// is refused, with the reason.
static bool ds_tok_check_model(const Sentencepiece__ModelProto *mp, char *err, size_t errn) {
    if (mp->n_pieces == 0) {
        snprintf(err, errn, "not a SentencePiece model (no pieces; empty or truncated file?)");
        return false;
    }
    if (!mp->trainer_spec || !mp->normalizer_spec) {
        snprintf(err, errn, "not a complete SentencePiece model (no %s; truncated file?)",
                 !mp->trainer_spec ? "trainer_spec" : "normalizer_spec");
        return false;
    }
    const Sentencepiece__TrainerSpec *ts = mp->trainer_spec;
    const Sentencepiece__NormalizerSpec *ns = mp->normalizer_spec;
    if (ts->model_type != SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE) {
        snprintf(err, errn,
                 "SentencePiece model type %s (%d) is not supported: groundc implements BPE "
                 "models (Llama's) only",
                 ds_tok_model_type_name(ts->model_type), (int)ts->model_type);
        return false;
    }
    if (!ds_tok_check_normalizer(ns, "normalizer", err, errn)) return false;
    if (mp->denormalizer_spec &&
        !ds_tok_check_normalizer(mp->denormalizer_spec, "denormalizer", err, errn))
        return false;
    if (!ns->escape_whitespaces) {
        snprintf(err, errn, "normalizer without whitespace escaping is not supported");
        return false;
    }
    if (ts->treat_whitespace_as_suffix) {
        snprintf(err, errn, "treat_whitespace_as_suffix models are not supported");
        return false;
    }
    if (mp->n_pieces > DS_MAX_PIECES) {
        snprintf(err, errn, "%zu pieces is too many", mp->n_pieces);
        return false;
    }
    return true;
}

// Checks each piece on its own (non-empty, no NUL, a known type) before anything is
// allocated; *arena_bytes gets the storage their strings need.
static bool ds_tok_check_pieces(const Sentencepiece__ModelProto *mp, size_t *arena_bytes, char *err,
                                size_t errn) {
    size_t total = 0;
    for (int32_t i = 0; i < (int32_t)mp->n_pieces; i++) {
        const Sentencepiece__ModelProto__SentencePiece *sp = mp->pieces[i];
        if (sp->piece.len == 0) {
            snprintf(err, errn, "piece %d is empty", i);
            return false;
        }
        if (memchr(sp->piece.data, 0, sp->piece.len)) {
            snprintf(err, errn, "piece %d contains a NUL byte", i);
            return false;
        }
        if (sp->type < 1 || sp->type > 6) {
            snprintf(err, errn, "piece %d has unknown type %d", i, (int)sp->type);
            return false;
        }
        total += sp->piece.len + 1;
    }
    *arena_bytes = total;
    return true;
}

// The per-id tables for n model pieces and the first added tokens, all empty.
static void ds_tok_alloc_tables(ds_tokenizer *tok, int32_t n, size_t arena_bytes) {
    tok->n_model = n;
    tok->cap_added = 16;
    size_t cap = (size_t)n + (size_t)tok->cap_added;
    tok->piece = ag_xcalloc(cap, sizeof *tok->piece, "tokenizer pieces");
    tok->len = ag_xcalloc(cap, sizeof *tok->len, "tokenizer pieces");
    tok->type = ag_xcalloc(cap, sizeof *tok->type, "tokenizer pieces");
    tok->score = ag_xcalloc((size_t)n, sizeof *tok->score, "tokenizer pieces");
    tok->arena = ag_xmalloc(arena_bytes, "tokenizer pieces");
    ds_tok_map_init(&tok->normal, n);
    ds_tok_map_init(&tok->reserved, n);
    for (int b = 0; b < 256; b++) tok->byte_id[b] = -1;
    tok->unk = -1;
}

// Copies the pieces into the tables and lookup maps, noting the unknown piece, the byte
// pieces and the longest user-defined piece; false on a duplicate or a misplaced piece.
static bool ds_tok_add_pieces(ds_tokenizer *tok, const Sentencepiece__ModelProto *mp, char *err,
                              size_t errn) {
    char *at = tok->arena;
    for (int32_t i = 0; i < tok->n_model; i++) {
        const Sentencepiece__ModelProto__SentencePiece *sp = mp->pieces[i];
        memcpy(at, sp->piece.data, sp->piece.len);
        at[sp->piece.len] = 0;
        tok->piece[i] = at;
        tok->len[i] = (uint32_t)sp->piece.len;
        tok->type[i] = (uint8_t)sp->type;
        tok->score[i] = sp->score;
        at += sp->piece.len + 1;
        int t = sp->type;
        bool normal = t == DS_TOK_NORMAL || t == DS_TOK_USER_DEFINED || t == DS_TOK_UNUSED;
        if (!ds_tok_map_insert(tok, normal ? &tok->normal : &tok->reserved, i)) {
            snprintf(err, errn, "piece %d \"%.40s\" is defined twice", i, tok->piece[i]);
            return false;
        }
        if (t == DS_TOK_USER_DEFINED && tok->len[i] > tok->max_user_len)
            tok->max_user_len = tok->len[i];
        if (t == DS_TOK_UNUSED) tok->has_unused = true;
        if (t == DS_TOK_UNKNOWN) {
            if (tok->unk >= 0) {
                snprintf(err, errn, "pieces %d and %d are both the unknown piece", tok->unk, i);
                return false;
            }
            tok->unk = i;
        }
        if (t == DS_TOK_BYTE) {
            if (!tok->byte_fallback) {
                snprintf(err, errn, "byte piece %d \"%.40s\" although byte_fallback is off", i,
                         tok->piece[i]);
                return false;
            }
            int b = ds_tok_byte_of_piece(tok->piece[i], tok->len[i]);
            if (b < 0) {
                snprintf(err, errn, "byte piece %d \"%.40s\" is not of the form <0xNN>", i,
                         tok->piece[i]);
                return false;
            }
            tok->byte_id[b] = i;
        }
    }
    return true;
}

// The pieces encoding cannot do without: <unk>, and every <0xNN> when byte fallback is on.
static bool ds_tok_check_required(const ds_tokenizer *tok, char *err, size_t errn) {
    if (tok->unk < 0) {
        snprintf(err, errn, "no unknown piece (<unk>) is defined");
        return false;
    }
    if (tok->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (tok->byte_id[b] < 0) {
                snprintf(err, errn, "byte_fallback is on but piece <0x%02X> is missing", b);
                return false;
            }
    return true;
}

// Whether some text is in both maps: only then does an id need the full two-map lookup.
static bool ds_tok_maps_overlap(const ds_tokenizer *tok) {
    for (int32_t i = 0; i < tok->n_model; i++) {
        const ds_tok_map *other = tok->type[i] == DS_TOK_CONTROL ||
                                          tok->type[i] == DS_TOK_UNKNOWN ||
                                          tok->type[i] == DS_TOK_BYTE
                                      ? &tok->normal
                                      : &tok->reserved;
        if (ds_tok_map_find(tok, other, tok->piece[i], tok->len[i]) >= 0) return true;
    }
    return false;
}

// Speed: when no mergeable piece has U+2581 after another character (true of Llama's
// vocabulary, trained with split_by_whitespace), no merge can cross the start of a run of
// U+2581 that follows another character, so the merges of each such word are independent
// of the others and the text can be merged word by word with small heaps. Unused pieces
// keep the one-pass path: SentencePiece splits them back by a map shared by the whole
// text, whose last writer depends on the global merge order.
static bool ds_tok_words_merge_alone(const ds_tokenizer *tok) {
    if (tok->has_unused) return false;
    for (int32_t i = 0; i < tok->n_model; i++) {
        int t = tok->type[i];
        if (t != DS_TOK_NORMAL && t != DS_TOK_USER_DEFINED && t != DS_TOK_UNUSED) continue;
        bool seen_other = false;
        for (uint32_t j = 0; j < tok->len[i];) {
            if (tok->len[i] - j >= DS_WS_LEN && memcmp(tok->piece[i] + j, DS_WS, DS_WS_LEN) == 0) {
                if (seen_other) return false;
                j += DS_WS_LEN;
            } else {
                seen_other = true;
                j++;
            }
        }
    }
    return true;
}

// Special ids as SentencePiece defines them: the id of the named piece if it is a control
// piece (bos/eos/pad), -1 otherwise. An empty name means the default one.
static void ds_tok_set_special_ids(ds_tokenizer *tok, const Sentencepiece__TrainerSpec *ts) {
    const char *names[3] = {ts->bos_piece, ts->eos_piece, ts->pad_piece};
    const char *defaults[3] = {"<s>", "</s>", "<pad>"};
    int32_t *dst[3] = {&tok->bos, &tok->eos, &tok->pad};
    for (int k = 0; k < 3; k++) {
        const char *name = names[k] && names[k][0] ? names[k] : defaults[k];
        int32_t id = ds_tok_sp_lookup(tok, name, strlen(name));
        *dst[k] = id >= 0 && tok->type[id] == DS_TOK_CONTROL ? id : -1;
    }
    tok->unk_surface = ag_xstrdup(ts->unk_surface ? ts->unk_surface
                                                  : " "
                                                    "\xe2\x81\x87"
                                                    " ");
}

// Fills tok from the parsed model; false with a reason in err.
static bool ds_tok_build(ds_tokenizer *tok, const Sentencepiece__ModelProto *mp, char *err,
                         size_t errn) {
    size_t arena_bytes;
    if (!ds_tok_check_model(mp, err, errn) || !ds_tok_check_pieces(mp, &arena_bytes, err, errn))
        return false;
    tok->byte_fallback = mp->trainer_spec->byte_fallback;
    tok->dummy_prefix = mp->normalizer_spec->add_dummy_prefix;
    tok->remove_extra_ws = mp->normalizer_spec->remove_extra_whitespaces;

    ds_tok_alloc_tables(tok, (int32_t)mp->n_pieces, arena_bytes);
    if (!ds_tok_add_pieces(tok, mp, err, errn) || !ds_tok_check_required(tok, err, errn))
        return false;
    tok->overlap = ds_tok_maps_overlap(tok);
    tok->ws_split = ds_tok_words_merge_alone(tok);
    ds_tok_set_special_ids(tok, mp->trainer_spec);
    tok->added_order = ag_xmalloc((size_t)tok->cap_added * sizeof *tok->added_order, "tokenizer");
    return true;
}

void ds_tokenizer_free(ds_tokenizer *tok) {
    if (!tok) return;
    for (int32_t i = 0; i < tok->n_added; i++) free(tok->piece[tok->n_model + i]);
    ds_tok_map_free(&tok->normal);
    ds_tok_map_free(&tok->reserved);
    free(tok->piece);
    free(tok->len);
    free(tok->type);
    free(tok->score);
    free(tok->arena);
    free(tok->unk_surface);
    free(tok->added_order);
    free(tok->path);
    free(tok);
}

// Parses a model held in memory; on any problem everything is freed and err is set (the
// caller fails afterwards, so that an error handler that longjmps leaks nothing).
static ds_tokenizer *ds_tok_parse(const uint8_t *data, size_t size, const char *name, char *err,
                                  size_t errn) {
    ds_tokenizer *tok = ag_xcalloc(1, sizeof *tok, "tokenizer");
    tok->path = ag_xstrdup(name);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    bool ok = EVP_Digest(data, size, md, &md_len, EVP_sha256(), NULL) == 1 && md_len == 32;
    if (!ok) snprintf(err, errn, "SHA-256 of the file failed (OpenSSL)");
    for (unsigned i = 0; ok && i < md_len; i++) snprintf(tok->digest + 2 * i, 3, "%02x", md[i]);

    Sentencepiece__ModelProto *mp = NULL;
    if (ok && size == 0) {
        snprintf(err, errn, "not a SentencePiece model (empty file)");
        ok = false;
    }
    if (ok) {
        mp = sentencepiece__model_proto__unpack(NULL, size, data);
        if (!mp) {
            snprintf(err, errn,
                     "not a SentencePiece model (protobuf parse failed: corrupt or truncated)");
            ok = false;
        }
    }
    if (ok) ok = ds_tok_build(tok, mp, err, errn);
    if (mp) sentencepiece__model_proto__free_unpacked(mp, NULL);
    if (!ok) {
        ds_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

ds_tokenizer *ds_tokenizer_load(const char *path) {
    char err[512] = "";
    size_t size = 0;
    uint8_t *data = (uint8_t *)ds_read_file_max(path, (size_t)1 << 30, &size);
    ds_tokenizer *tok = ds_tok_parse(data, size, path, err, sizeof err);
    free(data);
    if (!tok) ag_fail("tokenizer model %s: %s", path, err);
    return tok;
}

ds_tokenizer *ds_tokenizer_load_mem(const void *data, size_t size, const char *name) {
    char err[512] = "";
    ds_tokenizer *tok = ds_tok_parse(data, size, name, err, sizeof err);
    if (!tok) ag_fail("tokenizer model %s: %s", name, err);
    return tok;
}

// ---------------------------------------------------------------- added tokens

int32_t ds_tokenizer_add_special(ds_tokenizer *tok, const char *text) {
    size_t n = strlen(text);
    if (n == 0) ag_fail("tokenizer %s: an added token must not be empty", tok->path);
    if (n > 4096) ag_fail("tokenizer %s: added token of %zu bytes is too long", tok->path, n);
    int32_t old = ds_tokenizer_piece_to_id(tok, text);
    if (old >= 0)
        ag_fail("tokenizer %s: cannot add token \"%s\": it is already %s id %d", tok->path, text,
                old >= tok->n_model ? "the added token with" : "the piece with", old);
    if (tok->n_added == tok->cap_added) {
        int32_t cap = tok->cap_added * 2;
        size_t total = (size_t)tok->n_model + (size_t)cap;
        tok->piece = ag_xrealloc(tok->piece, total * sizeof *tok->piece, "tokenizer");
        tok->len = ag_xrealloc(tok->len, total * sizeof *tok->len, "tokenizer");
        tok->type = ag_xrealloc(tok->type, total * sizeof *tok->type, "tokenizer");
        tok->added_order =
            ag_xrealloc(tok->added_order, (size_t)cap * sizeof *tok->added_order, "tokenizer");
        tok->cap_added = cap;
    }
    int32_t id = tok->n_model + tok->n_added;
    tok->piece[id] = ag_xstrdup(text);
    tok->len[id] = (uint32_t)n;
    tok->type[id] = DS_TOK_ADDED;
    // Insertion into the longest-first order (stable: earlier tokens first among equals).
    int32_t k = tok->n_added;
    while (k > 0 && tok->len[tok->added_order[k - 1]] < n) {
        tok->added_order[k] = tok->added_order[k - 1];
        k--;
    }
    tok->added_order[k] = id;
    tok->added_first[(uint8_t)text[0]] = true;
    tok->n_added++;
    return id;
}

// The added token (longest first) that starts s, -1 if none.
static int32_t ds_tok_match_added(const ds_tokenizer *tok, const char *s, size_t n) {
    for (int32_t k = 0; k < tok->n_added; k++) {
        int32_t id = tok->added_order[k];
        if (tok->len[id] <= n && memcmp(tok->piece[id], s, tok->len[id]) == 0) return id;
    }
    return -1;
}

// ---------------------------------------------------------------- encoding

typedef struct {
    int32_t *ids;
    int64_t cap, n;
    bool grow; // realloc ids when full (ds_tokenizer_encode_alloc)
} ds_tok_sink;

static inline void ds_tok_push(ds_tok_sink *s, int32_t id) {
    if (s->n == s->cap && s->grow)
        s->ids = ag_xgrow(s->ids, &s->cap, s->n + 1, sizeof *s->ids, "token ids");
    if (s->n < s->cap) s->ids[s->n] = id;
    s->n++;
}

typedef struct {
    int32_t prev, next;  // neighbours in the current segmentation, -1 at the ends
    uint32_t start, len; // bytes of the normalized text; len 0 once merged into its left
    int32_t id;          // id of the piece when a merge made it, -1 otherwise
    bool freeze;         // user-defined piece: never merged
} ds_tok_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; // bytes of left + right when pushed: stale if they changed since
    int32_t id;
} ds_tok_pair;

// A merge that produced an UNUSED piece: how to split it back (SentencePiece's rev_merge).
typedef struct {
    uint32_t start, size, left_size;
} ds_tok_rev;

typedef struct {
    char *norm;
    ds_tok_sym *sym;
    int64_t sym_cap;
    ds_tok_pair *heap;
    int64_t heap_n, heap_cap;
    ds_tok_rev *rev;
    int64_t rev_n, rev_cap;
} ds_tok_work;

// Heap order: higher score first, then the leftmost pair (SentencePiece's comparator).
static inline bool ds_tok_before(const ds_tok_pair *a, const ds_tok_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void ds_tok_sift_down(ds_tok_pair *h, size_t n, size_t i) {
    ds_tok_pair x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ds_tok_before(&h[c + 1], &h[c])) c++;
        if (!ds_tok_before(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void ds_tok_heap_push(ds_tok_work *w, ds_tok_pair p) {
    if (w->heap_n == w->heap_cap) // checked here: a push per candidate pair is hot
        w->heap = ag_xgrow(w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap, "tokenizer heap");
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ds_tok_before(&p, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
}

// The candidate merge of symbols l and r, if their concatenation is a mergeable piece; when
// heapify is set it is only appended (the caller builds the heap at once).
static void ds_tok_add_pair(const ds_tokenizer *tok, ds_tok_work *w, int32_t l, int32_t r,
                            bool heapify) {
    if (l < 0 || r < 0) return;
    const ds_tok_sym *a = &w->sym[l], *b = &w->sym[r];
    if (a->freeze || b->freeze) return;
    uint32_t size = a->len + b->len;
    const char *s = w->norm + a->start;
    int32_t id = ds_tok_map_find(tok, &tok->normal, s, size);
    if (id < 0) return;
    ds_tok_pair p = {tok->score[id], l, r, size, id};
    if (heapify)
        w->heap[w->heap_n++] = p;
    else
        ds_tok_heap_push(w, p);
    if (tok->type[id] == DS_TOK_UNUSED) {
        w->rev = ag_xgrow(w->rev, &w->rev_cap, w->rev_n + 1, sizeof *w->rev, "tokenizer");
        w->rev[w->rev_n++] = (ds_tok_rev){a->start, size, a->len};
    }
}

typedef struct {
    const ds_tokenizer *tok;
    ds_tok_sink *out;
    bool prev_unk;
} ds_tok_emit;

// One final piece (text s, n bytes; id if known, else -1) to ids, as SentencePiece's
// resegmentation of unused pieces and PopulateSentencePieceText do.
static void ds_tok_emit_piece(ds_tok_emit *e, const ds_tok_work *w, const char *s, uint32_t n,
                              int32_t id) {
    const ds_tokenizer *tok = e->tok;
    if (id < 0 || tok->overlap) id = ds_tok_sp_lookup(tok, s, n);
    if (id < 0) id = tok->unk;
    if (tok->type[id] == DS_TOK_UNUSED) {
        // The last recorded split of this text wins, as in SentencePiece's map.
        for (size_t k = w->rev_n; k-- > 0;) {
            const ds_tok_rev *r = &w->rev[k];
            if (r->size == n && memcmp(w->norm + r->start, s, n) == 0) {
                ds_tok_emit_piece(e, w, s, r->left_size, -1);
                ds_tok_emit_piece(e, w, s + r->left_size, n - r->left_size, -1);
                return;
            }
        }
    }
    bool unk = tok->type[id] == DS_TOK_UNKNOWN;
    if (tok->type[id] == DS_TOK_CONTROL) {
        ds_tok_push(e->out, id);
    } else if (unk && tok->byte_fallback) {
        for (uint32_t k = 0; k < n; k++) ds_tok_push(e->out, tok->byte_id[(uint8_t)s[k]]);
    } else if (!(unk && e->prev_unk)) { // a run of unknown pieces is one <unk>
        ds_tok_push(e->out, id);
    }
    e->prev_unk = unk;
}

// Normalizes text (n bytes) into out, which has room for 3 * n + 3 bytes; returns the length.
static size_t ds_tok_normalize(const ds_tokenizer *tok, const char *s, size_t n, bool dummy,
                               char *out) {
    size_t i = 0, o = 0;
    if (n == 0) return 0;
    if (tok->remove_extra_ws)
        while (i < n && s[i] == ' ') i++;
    if (i == n) return 0;
    if (dummy) {
        memcpy(out, DS_WS, DS_WS_LEN);
        o = DS_WS_LEN;
    }
    bool prev_space = tok->remove_extra_ws;
    while (i < n) {
        const char *p = s + i;
        size_t plen = tok->max_user_len ? ds_tok_user_prefix(tok, p, n - i) : 0, used = plen;
        if (plen == 0 && !ds_tok_utf8_char((const unsigned char *)p, n - i, &used)) {
            p = DS_FFFD; // one replacement character per malformed byte
            plen = 3;
        } else if (plen == 0) {
            plen = used;
        }
        if (prev_space)
            while (plen > 0 && *p == ' ') p++, plen--;
        if (plen > 0) {
            for (size_t k = 0; k < plen; k++) {
                if (p[k] == ' ') {
                    memcpy(out + o, DS_WS, DS_WS_LEN);
                    o += DS_WS_LEN;
                } else {
                    out[o++] = p[k];
                }
            }
            prev_space = p[plen - 1] == ' ';
        }
        i += used;
        if (!tok->remove_extra_ws) prev_space = false;
    }
    if (tok->remove_extra_ws)
        while (o >= DS_WS_LEN && memcmp(out + o - DS_WS_LEN, DS_WS, DS_WS_LEN) == 0) o -= DS_WS_LEN;
    return o;
}

// Merges the symbols of norm[from, to) (BPE proper) and emits their ids.
static void ds_tok_merge(const ds_tokenizer *tok, ds_tok_work *w, uint32_t from, uint32_t to,
                         ds_tok_emit *e) {
    // At most one symbol per byte, and at first at most one pair per symbol.
    w->sym = ag_xgrow(w->sym, &w->sym_cap, to - from, sizeof *w->sym, "tokenizer scratch");
    w->heap = ag_xgrow(w->heap, &w->heap_cap, to - from + 16, sizeof *w->heap, "tokenizer scratch");
    const char *norm = w->norm;
    int32_t ns = 0;
    for (uint32_t i = from; i < to;) {
        size_t l = tok->max_user_len ? ds_tok_user_prefix(tok, norm + i, to - i) : 0;
        bool freeze = l > 0;
        if (!freeze) l = ds_tok_one_char_len((unsigned char)norm[i], to - i);
        w->sym[ns] = (ds_tok_sym){ns - 1, ns + 1, i, (uint32_t)l, -1, freeze};
        ns++;
        i += (uint32_t)l;
    }
    w->sym[ns - 1].next = -1;

    w->heap_n = 0;
    for (int32_t i = 1; i < ns; i++) ds_tok_add_pair(tok, w, i - 1, i, true);
    for (size_t i = w->heap_n / 2; i-- > 0;) ds_tok_sift_down(w->heap, w->heap_n, i);

    while (w->heap_n > 0) {
        ds_tok_pair top = w->heap[0];
        w->heap[0] = w->heap[--w->heap_n];
        if (w->heap_n > 0) ds_tok_sift_down(w->heap, w->heap_n, 0);
        ds_tok_sym *l = &w->sym[top.left], *r = &w->sym[top.right];
        // Stale: one side was merged away or grew since this pair was pushed.
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len = top.size;
        l->id = top.id;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = top.left;
        r->len = 0;
        ds_tok_add_pair(tok, w, l->prev, top.left, false);
        ds_tok_add_pair(tok, w, top.left, l->next, false);
    }

    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        ds_tok_emit_piece(e, w, norm + w->sym[i].start, w->sym[i].len, w->sym[i].id);
}

// Encodes one stretch of text between added tokens.
static void ds_tok_encode_segment(const ds_tokenizer *tok, ds_tok_work *w, const char *s, size_t n,
                                  bool dummy, ds_tok_sink *out) {
    uint32_t nn = (uint32_t)ds_tok_normalize(tok, s, n, dummy, w->norm);
    if (nn == 0) return;
    ds_tok_emit e = {tok, out, false};
    w->rev_n = 0;
    if (!tok->ws_split) {
        ds_tok_merge(tok, w, 0, nn, &e);
        return;
    }
    // Word by word: a word ends where a U+2581 follows another character.
    const char *norm = w->norm;
    uint32_t from = 0;
    bool prev_ws = false;
    for (uint32_t i = 0; i < nn;) {
        bool ws = nn - i >= DS_WS_LEN && memcmp(norm + i, DS_WS, DS_WS_LEN) == 0;
        if (ws && i > 0 && !prev_ws) {
            ds_tok_merge(tok, w, from, i, &e);
            from = i;
        }
        prev_ws = ws;
        i += ws ? DS_WS_LEN : 1;
    }
    ds_tok_merge(tok, w, from, nn, &e);
}

static void ds_tok_encode(const ds_tokenizer *tok, const char *s, size_t n, unsigned flags,
                          ds_tok_sink *out) {
    if (n > DS_MAX_TEXT)
        ag_fail("tokenizer %s: text of %zu bytes is too long to encode at once (limit %zu)",
                tok->path, n, DS_MAX_TEXT);
    if ((flags & DS_TOK_ADD_BOS) && tok->bos < 0)
        ag_fail("tokenizer %s: BOS requested but the model has no BOS piece", tok->path);
    if ((flags & DS_TOK_ADD_EOS) && tok->eos < 0)
        ag_fail("tokenizer %s: EOS requested but the model has no EOS piece", tok->path);
    bool dummy = tok->dummy_prefix && !(flags & DS_TOK_NO_DUMMY_PREFIX);
    if (flags & DS_TOK_ADD_BOS) ds_tok_push(out, tok->bos);

    // Scratch: the normalized form of the longest segment (at most the whole text, each byte
    // at most 3 bytes after escaping); symbols and heap grow to the longest word merged.
    ds_tok_work w = {0};
    w.norm = ag_xmalloc(3 * n + 3, "tokenizer scratch");

    size_t seg = 0;
    if (tok->n_added > 0) {
        for (size_t i = 0; i < n;) {
            int32_t id =
                tok->added_first[(uint8_t)s[i]] ? ds_tok_match_added(tok, s + i, n - i) : -1;
            if (id < 0) {
                i++;
                continue;
            }
            ds_tok_encode_segment(tok, &w, s + seg, i - seg, dummy, out);
            ds_tok_push(out, id);
            i += tok->len[id];
            seg = i;
        }
    }
    ds_tok_encode_segment(tok, &w, s + seg, n - seg, dummy, out);
    if (flags & DS_TOK_ADD_EOS) ds_tok_push(out, tok->eos);
    free(w.norm);
    free(w.sym);
    free(w.heap);
    free(w.rev);
}

int64_t ds_tokenizer_encode_n(const ds_tokenizer *tok, const char *text, size_t len, unsigned flags,
                              int32_t *ids, int64_t cap) {
    ds_tok_sink out = {ids, ids ? (cap > 0 ? cap : 0) : 0, 0, false};
    ds_tok_encode(tok, text, len, flags, &out);
    return out.n;
}

int64_t ds_tokenizer_encode(const ds_tokenizer *tok, const char *utf8, bool add_bos, int32_t *ids,
                            int64_t cap) {
    return ds_tokenizer_encode_n(tok, utf8, strlen(utf8), add_bos ? DS_TOK_ADD_BOS : 0, ids, cap);
}

int32_t *ds_tokenizer_encode_alloc(const ds_tokenizer *tok, const char *text, size_t len,
                                   unsigned flags, int64_t *n) {
    ds_tok_sink out = {NULL, 0, 0, true};
    ds_tok_encode(tok, text, len, flags, &out);
    if (!out.ids) out.ids = ag_xmalloc(sizeof *out.ids, "token ids"); // never NULL
    *n = out.n;
    return out.ids;
}

// ---------------------------------------------------------------- decoding

typedef struct {
    char *s;
    size_t n;
    int64_t cap;
} ds_tok_buf;

static void ds_tok_append(ds_tok_buf *b, const char *s, size_t n) {
    b->s = ag_xgrow(b->s, &b->cap, (int64_t)(b->n + n + 1), 1, "decoded text");
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

// Bytes of a run of <0xNN> pieces: well-formed characters as they are, each byte that does not
// start one as U+FFFD (SentencePiece's ProcessBytePieces).
static void ds_tok_flush_bytes(const ds_tokenizer *tok, const int32_t *ids, int64_t from,
                               int64_t to, ds_tok_buf *b) {
    while (from < to) {
        unsigned char c[4];
        size_t avail = to - from < 4 ? (size_t)(to - from) : 4, used;
        for (size_t k = 0; k < avail; k++)
            c[k] = (unsigned char)ds_tok_byte_of_piece(tok->piece[ids[from + (int64_t)k]], 6);
        if (ds_tok_utf8_char(c, avail, &used))
            ds_tok_append(b, (const char *)c, used);
        else
            ds_tok_append(b, DS_FFFD, 3);
        from += (int64_t)used;
    }
}

char *ds_tokenizer_decode(const ds_tokenizer *tok, const int32_t *ids, int64_t n, size_t *len) {
    int32_t vocab = tok->n_model + tok->n_added;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            ag_fail("tokenizer %s: cannot decode token id %d at position %lld: the vocabulary "
                    "has ids 0..%d",
                    tok->path, (int)ids[i], (long long)i, vocab - 1);
    ds_tok_buf b = {0};
    ds_tok_append(&b, "", 0);
    // SentencePiece's rule: the first piece that starts with U+2581 before any visible text
    // loses it (the dummy prefix). Each run between added tokens is its own sequence.
    bool strip = tok->dummy_prefix || tok->remove_extra_ws;
    bool is_bos_ws = true, bos_ws_seen = false;
    size_t seg_start = 0;
    int64_t byte_start = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int t = tok->type[id];
        if (t == DS_TOK_BYTE) continue;
        ds_tok_flush_bytes(tok, ids, byte_start, i, &b);
        byte_start = i + 1;
        if (t == DS_TOK_ADDED) {
            ds_tok_append(&b, tok->piece[id], tok->len[id]);
            is_bos_ws = true;
            bos_ws_seen = false;
            seg_start = b.n;
            continue;
        }
        if (tok->overlap) { // SentencePiece maps the piece text back to an id
            id = ds_tok_sp_lookup(tok, tok->piece[id], tok->len[id]);
            t = tok->type[id];
        }
        if (bos_ws_seen || b.n > seg_start) is_bos_ws = false;
        bos_ws_seen = false;
        if (t == DS_TOK_CONTROL) continue; // invisible
        if (t == DS_TOK_UNKNOWN) {
            ds_tok_append(&b, tok->unk_surface, strlen(tok->unk_surface));
            continue;
        }
        const char *p = tok->piece[id], *end = p + tok->len[id];
        if (is_bos_ws && strip && end - p >= DS_WS_LEN && memcmp(p, DS_WS, DS_WS_LEN) == 0) {
            p += DS_WS_LEN;
            bos_ws_seen = !tok->remove_extra_ws; // with it, all leading whitespace goes
        }
        while (p < end) {
            const char *q = p;
            while (q < end && !(end - q >= DS_WS_LEN && memcmp(q, DS_WS, DS_WS_LEN) == 0)) q++;
            ds_tok_append(&b, p, (size_t)(q - p));
            if (q < end) {
                ds_tok_append(&b, " ", 1);
                q += DS_WS_LEN;
            }
            p = q;
        }
    }
    ds_tok_flush_bytes(tok, ids, byte_start, n, &b);
    if (len) *len = b.n;
    return b.s;
}

// ---------------------------------------------------------------- lookups

int32_t ds_tokenizer_vocab_size(const ds_tokenizer *tok) {
    return tok->n_model + tok->n_added;
}

int32_t ds_tokenizer_model_vocab_size(const ds_tokenizer *tok) {
    return tok->n_model;
}

const char *ds_tokenizer_id_to_piece(const ds_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_model + tok->n_added ? tok->piece[id] : NULL;
}

int32_t ds_tokenizer_piece_to_id(const ds_tokenizer *tok, const char *piece) {
    size_t n = strlen(piece);
    int32_t id = ds_tok_sp_lookup(tok, piece, n);
    if (id >= 0) return id;
    for (int32_t k = 0; k < tok->n_added; k++) {
        int32_t a = tok->n_model + k;
        if (tok->len[a] == n && memcmp(tok->piece[a], piece, n) == 0) return a;
    }
    return -1;
}

ds_tok_type ds_tokenizer_type(const ds_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_model + tok->n_added ? (ds_tok_type)tok->type[id]
                                                       : (ds_tok_type)0;
}

float ds_tokenizer_score(const ds_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_model ? tok->score[id] : 0.0f;
}
bool ds_tokenizer_dummy_prefix(const ds_tokenizer *tok) {
    return tok->dummy_prefix;
}
bool ds_tokenizer_removes_extra_whitespace(const ds_tokenizer *tok) {
    return tok->remove_extra_ws;
}
bool ds_tokenizer_byte_fallback(const ds_tokenizer *tok) {
    return tok->byte_fallback;
}

int32_t ds_tokenizer_bos_id(const ds_tokenizer *tok) {
    return tok->bos;
}
int32_t ds_tokenizer_eos_id(const ds_tokenizer *tok) {
    return tok->eos;
}
int32_t ds_tokenizer_unk_id(const ds_tokenizer *tok) {
    return tok->unk;
}
int32_t ds_tokenizer_pad_id(const ds_tokenizer *tok) {
    return tok->pad;
}

void ds_tokenizer_digest(const ds_tokenizer *tok, char hex[65]) {
    memcpy(hex, tok->digest, 65);
}

const char *ds_tokenizer_path(const ds_tokenizer *tok) {
    return tok->path;
}
