// tokenizer.h: SentencePiece BPE tokenizer (Llama / Vicuna tokenizer.model) in plain C.
// Loads a SentencePiece model file, adds HF-style added tokens (the GroundingGPT <im_patch>
// ... <so_end>), encodes UTF-8 text to ids and decodes ids to UTF-8. Encoding agrees token for
// token with sentencepiece 0.1.97's EncodeAsIds and decoding with its DecodeIds (checked by
// tests/test_tokenizer.c against python3-sentencepiece on thousands of strings).
//
// Supported models: model_type BPE with the "identity" normalizer as Llama ships it (no
// precompiled character map), whitespace escaped as U+2581, dummy prefix on or off, extra
// whitespace removal on or off, byte fallback on or off, user-defined and unused pieces.
// Anything else (unigram/word/char models, nmt_nfkc or custom normalizers, whitespace as
// suffix) is refused at load with a one-line error naming the file, rather than tokenized
// differently from SentencePiece.
//
// Text in, exactly as SentencePiece does it:
// - Bytes that are not well-formed UTF-8 (overlong forms, surrogates, code points past
//   U+10FFFF, stray continuation bytes, truncated sequences) become U+FFFD, one U+FFFD per
//   offending byte, and a U+FFFD is then encoded like any other character (with byte
//   fallback: <0xEF> <0xBF> <0xBD>). The _n functions take a length and may contain NUL bytes.
// - The dummy prefix is one U+2581 put before the (non-empty) text; empty text gives no ids.
//
// Added tokens (ds_tokenizer_add_special): the text is first split on exact occurrences of
// added tokens (leftmost first; at one position the longest added token wins). Each occurrence
// becomes its id; each non-empty stretch of text between them is encoded by SentencePiece as an
// independent text, so it gets its own dummy prefix, as HF's LlamaTokenizer does with
// legacy=True (the behaviour of the transformers versions GroundingGPT and LLaVA were trained
// with): "<im_end>Hello" -> [<im_end>, "▁Hello"]. Unlike those transformers versions, groundc
// does not strip whitespace next to added tokens: "<im_end>\nHi" keeps its "\n", so
// decode(encode(s)) == s holds for any valid UTF-8 s.
//
// Decoding: each run of SentencePiece ids between added tokens is decoded as SentencePiece
// decodes a sequence (leading dummy space of the run removed, <0xNN> byte pieces reassembled
// into UTF-8 with U+FFFD for bytes that do not form a character, control ids such as <s>
// invisible, <unk> shown as the model's unk_surface " ⁇ "); added ids decode to their text,
// with no space inserted around them (HF inserts one).
//
// A loaded tokenizer is read-only during encode/decode, so threads may share it; add all
// added tokens before sharing it.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ds_tokenizer ds_tokenizer;

// Kinds of ids, numbered as SentencePiece numbers its piece types; added tokens come last.
typedef enum {
    DS_TOK_NORMAL = 1,
    DS_TOK_UNKNOWN = 2,
    DS_TOK_CONTROL = 3,
    DS_TOK_USER_DEFINED = 4,
    DS_TOK_UNUSED = 5,
    DS_TOK_BYTE = 6,
    DS_TOK_ADDED = 7,
} ds_tok_type;

// Encode flags.
enum {
    DS_TOK_ADD_BOS = 1u << 0,         // put the model's <s> first (fails if it has none)
    DS_TOK_ADD_EOS = 1u << 1,         // put the model's </s> last (fails if it has none)
    DS_TOK_NO_DUMMY_PREFIX = 1u << 2, // no segment of this call gets the dummy prefix
};

// Reads a SentencePiece model file. Any problem (missing or unreadable file, not a ModelProto,
// truncated, unsupported model type or normalizer, inconsistent pieces) is a one-line ag_fail
// naming the file.
ds_tokenizer *ds_tokenizer_load(const char *path);
// The same from the bytes of a model file held in memory (for example one embedded in another
// file); name stands for the file in messages and in ds_tokenizer_path.
ds_tokenizer *ds_tokenizer_load_mem(const void *data, size_t size, const char *name);
void ds_tokenizer_free(ds_tokenizer *tok);

// Appends an added token and returns its id: the model's piece count, then +1, +2, ... in call
// order (HF added tokens). Fails when text is empty or already a piece or an added token.
int32_t ds_tokenizer_add_special(ds_tokenizer *tok, const char *text);

// Encodes NUL-terminated UTF-8 text. Writes at most cap ids to ids (which may be NULL when cap
// is 0) and returns how many the text has, which may be more than cap (as snprintf does): call
// again with a larger buffer then.
int64_t ds_tokenizer_encode(const ds_tokenizer *tok, const char *utf8, bool add_bos, int32_t *ids,
                            int64_t cap);
// Same with an explicit length (text may contain NUL bytes) and DS_TOK_* flags.
int64_t ds_tokenizer_encode_n(const ds_tokenizer *tok, const char *text, size_t len, unsigned flags,
                              int32_t *ids, int64_t cap);
// Same into a malloc'd array the caller frees; *n gets the count. Never returns NULL.
int32_t *ds_tokenizer_encode_alloc(const ds_tokenizer *tok, const char *text, size_t len,
                                   unsigned flags, int64_t *n);

// Decodes ids to a malloc'd NUL-terminated UTF-8 string the caller frees; *len (may be NULL)
// gets its length, which counts any NUL bytes that <0x00> pieces put inside. An id outside
// [0, vocab size) is an ag_fail.
char *ds_tokenizer_decode(const ds_tokenizer *tok, const int32_t *ids, int64_t n, size_t *len);

// Vocabulary: the model's pieces plus added tokens.
int32_t ds_tokenizer_vocab_size(const ds_tokenizer *tok);
int32_t ds_tokenizer_model_vocab_size(const ds_tokenizer *tok); // the model's pieces only
// The piece (or added token) of an id, NUL-terminated and owned by tok; NULL if out of range.
const char *ds_tokenizer_id_to_piece(const ds_tokenizer *tok, int32_t id);
// The id of a piece or added token written exactly (e.g. "▁the", "<0x0A>", "<im_start>");
// -1 if there is none (SentencePiece would answer unk_id).
int32_t ds_tokenizer_piece_to_id(const ds_tokenizer *tok, const char *piece);
// The kind of an id; 0 if out of range.
ds_tok_type ds_tokenizer_type(const ds_tokenizer *tok, int32_t id);
// The SentencePiece score of a model piece; 0 for added tokens and ids out of range.
float ds_tokenizer_score(const ds_tokenizer *tok, int32_t id);
// The model's options: dummy prefix, extra whitespace removal, byte fallback.
bool ds_tokenizer_dummy_prefix(const ds_tokenizer *tok);
bool ds_tokenizer_removes_extra_whitespace(const ds_tokenizer *tok);
bool ds_tokenizer_byte_fallback(const ds_tokenizer *tok);
// Special ids, -1 when the model has none (as SentencePiece: bos/eos/pad must be control pieces).
int32_t ds_tokenizer_bos_id(const ds_tokenizer *tok);
int32_t ds_tokenizer_eos_id(const ds_tokenizer *tok);
int32_t ds_tokenizer_unk_id(const ds_tokenizer *tok);
int32_t ds_tokenizer_pad_id(const ds_tokenizer *tok);

// SHA-256 of the model file's bytes as 64 lowercase hex digits and a NUL (added tokens are not
// part of it: checkpoints and shards record them separately).
void ds_tokenizer_digest(const ds_tokenizer *tok, char hex[65]);
// The path the tokenizer was loaded from.
const char *ds_tokenizer_path(const ds_tokenizer *tok);
