// test_tokenizer.c: the SentencePiece BPE tokenizer (data/tokenizer.h).
// - agreement: tests/tokenizer_agreement.py (run with /usr/bin/python3) writes python3-
//   sentencepiece's ids and decodes for thousands of strings on the committed model and four
//   variants; every one must match token for token. Skipped, with a message, when python3 or
//   its sentencepiece module is missing.
// - without Python: special ids, lookups, round trips, flags, the count/capacity contract,
//   malformed UTF-8, added tokens (the GroundingGPT ones), the digest, refused model files
//   (missing, empty, directory, truncated, random bytes, unigram, nmt_nfkc), and encode speed.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/tokenizer.h"
#include "testlib.h"

static const char *const GROUNDING_TOKENS[9] = {"<im_patch>", "<im_start>", "<im_end>",
                                                "<vi_patch>", "<vi_start>", "<vi_end>",
                                                "<so_patch>", "<so_start>", "<so_end>"};

static char model_path[4096];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *n = len;
    return buf;
}

static bool write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

// Text for messages: printable ASCII as is, the rest escaped, at most max bytes shown.
static void show(FILE *out, const char *s, size_t n, size_t max) {
    fputc('"', out);
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '"' && c != '\\')
            fputc(c, out);
        else
            fprintf(out, "\\x%02x", c);
    }
    fprintf(out, "\"%s", n > max ? "..." : "");
}

static void show_ids(FILE *out, const ds_tokenizer *tok, const int32_t *ids, int64_t n,
                     int64_t from) {
    int64_t lo = from > 3 ? from - 3 : 0, hi = from + 12 < n ? from + 12 : n;
    fprintf(out, "[%s", lo > 0 ? "... " : "");
    for (int64_t i = lo; i < hi; i++) {
        const char *p = ds_tokenizer_id_to_piece(tok, ids[i]);
        fprintf(out, "%s%d", i > lo ? ", " : "", ids[i]);
        if (p) {
            fputc(':', out);
            show(out, p, strlen(p), 24);
        }
    }
    fprintf(out, "%s] (%lld ids)", hi < n ? " ..." : "", (long long)n);
}

// ---------------------------------------------------------------- agreement with Python

typedef struct {
    const uint8_t *p, *end;
    bool bad;
} reader;

static uint32_t rd_u32(reader *r) {
    if (r->end - r->p < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static const char *rd_bytes(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n;
    return s;
}

static const char *rd_blob(reader *r, size_t *n) {
    *n = rd_u32(r);
    return rd_bytes(r, *n);
}

static int agree_cases, agree_mismatch;

static void mismatch_header(const char *model, uint32_t k, char kind) {
    if (++agree_mismatch > 12) return;
    fprintf(stderr, "MISMATCH %s case %u (%c): ", model, k, kind);
}

// One model of the agreement file; false when the file is malformed.
static bool agree_model(reader *r) {
    size_t plen;
    const char *p = rd_blob(r, &plen);
    char path[4096];
    snprintf(path, sizeof path, "%.*s", (int)plen, p);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    const char *sha = rd_bytes(r, 64);
    int32_t want[5];
    for (int k = 0; k < 5; k++) want[k] = (int32_t)rd_u32(r);
    if (r->bad) return false;

    ds_tokenizer *tok = ds_tokenizer_load(path);
    char hex[65];
    ds_tokenizer_digest(tok, hex);
    TL_CHECK(memcmp(hex, sha, 64) == 0, "%s: digest %s differs from Python's hashlib", name, hex);
    TL_CHECK(ds_tokenizer_bos_id(tok) == want[0] && ds_tokenizer_eos_id(tok) == want[1] &&
                 ds_tokenizer_unk_id(tok) == want[2] && ds_tokenizer_pad_id(tok) == want[3],
             "%s: special ids %d %d %d %d, sentencepiece %d %d %d %d", name,
             ds_tokenizer_bos_id(tok), ds_tokenizer_eos_id(tok), ds_tokenizer_unk_id(tok),
             ds_tokenizer_pad_id(tok), want[0], want[1], want[2], want[3]);
    TL_CHECK(ds_tokenizer_vocab_size(tok) == want[4], "%s: %d pieces, sentencepiece %d", name,
             ds_tokenizer_vocab_size(tok), want[4]);
    int bad_pieces = 0;
    for (int32_t i = 0; i < want[4]; i++) {
        size_t n;
        const char *s = rd_blob(r, &n);
        int kind = *rd_bytes(r, 1);
        const char *mine = ds_tokenizer_id_to_piece(tok, i);
        int t = (int)ds_tokenizer_type(tok, i);
        if (t == DS_TOK_USER_DEFINED) t = DS_TOK_NORMAL; // Python cannot tell them apart
        if (!mine || strlen(mine) != n || memcmp(mine, s, n) != 0 || t != kind ||
            ds_tokenizer_piece_to_id(tok, mine) != i)
            bad_pieces++;
    }
    TL_CHECK(bad_pieces == 0, "%s: %d pieces differ from sentencepiece's", name, bad_pieces);

    // The added tokens go into a second instance, so that plain cases see the model alone.
    ds_tokenizer *tok2 = ds_tokenizer_load(path);
    uint32_t n_added = rd_u32(r);
    for (uint32_t k = 0; k < n_added && !r->bad; k++) {
        size_t n;
        const char *s = rd_blob(r, &n);
        char text[256];
        snprintf(text, sizeof text, "%.*s", (int)n, s);
        ds_tokenizer_add_special(tok2, text);
    }

    uint32_t n_cases = rd_u32(r);
    int32_t *got = NULL;
    int64_t got_cap = 0;
    for (uint32_t k = 0; k < n_cases && !r->bad; k++) {
        char kind = *rd_bytes(r, 1);
        uint8_t flags = (uint8_t)*rd_bytes(r, 1);
        size_t tlen = 0, dlen;
        const char *text = kind == 'E' ? rd_blob(r, &tlen) : NULL;
        uint32_t n_ids = rd_u32(r);
        const char *raw_ids = rd_bytes(r, 4 * (size_t)n_ids);
        const char *dec = rd_blob(r, &dlen);
        if (r->bad) break;
        int32_t *ids = malloc(4 * (size_t)n_ids + 4);
        memcpy(ids, raw_ids, 4 * (size_t)n_ids); // little-endian like the writer
        const ds_tokenizer *t = flags & 2 ? tok2 : tok;
        agree_cases++;

        if (kind == 'E') {
            unsigned fl = flags & 1 ? DS_TOK_ADD_BOS : 0;
            int64_t n = ds_tokenizer_encode_n(t, text, tlen, fl, got, got_cap);
            if (n > got_cap) {
                got_cap = 2 * n;
                got = realloc(got, (size_t)got_cap * sizeof *got);
                n = ds_tokenizer_encode_n(t, text, tlen, fl, got, got_cap);
            }
            int64_t d = 0;
            while (d < n && d < n_ids && got[d] == ids[d]) d++;
            if (d != n || d != n_ids) {
                mismatch_header(name, k, kind);
                if (agree_mismatch <= 12) {
                    show(stderr, text, tlen, 160);
                    fprintf(stderr, "%s\n  first difference at id %lld\n  sentencepiece: ",
                            flags & 1 ? " with BOS" : "", (long long)d);
                    show_ids(stderr, t, ids, n_ids, d);
                    fprintf(stderr, "\n  groundc:       ");
                    show_ids(stderr, t, got, n, d);
                    fputc('\n', stderr);
                }
                free(ids);
                continue;
            }
        }
        size_t glen;
        char *mine = ds_tokenizer_decode(t, ids, n_ids, &glen);
        if (glen != dlen || memcmp(mine, dec, dlen) != 0) {
            mismatch_header(name, k, kind);
            if (agree_mismatch <= 12) {
                fprintf(stderr, "decode of ");
                show_ids(stderr, t, ids, n_ids, 0);
                fprintf(stderr, "\n  sentencepiece: ");
                show(stderr, dec, dlen, 160);
                fprintf(stderr, "\n  groundc:       ");
                show(stderr, mine, glen, 160);
                fputc('\n', stderr);
            }
        }
        free(mine);
        free(ids);
    }
    free(got);
    ds_tokenizer_free(tok);
    ds_tokenizer_free(tok2);
    return !r->bad;
}

static void test_agreement(void) {
    char dir[] = "/tmp/groundc-tokenizer-XXXXXX";
    if (!mkdtemp(dir)) {
        TL_CHECK(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    char script[4096], out[4200], cmd[16384];
    tl_source_path(script, sizeof script, "tests/tokenizer_agreement.py");
    snprintf(out, sizeof out, "%s/agreement.bin", dir);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --model '%s' --workdir '%s' --out '%s'",
             script, model_path, dir, out);
    double t0 = now_s();
    int rc = access("/usr/bin/python3", X_OK) == 0 ? system(cmd) : -1;
    double t_py = now_s() - t0;
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) == 3 || WEXITSTATUS(rc) == 127) {
        printf("test_tokenizer: SKIPPING the agreement check with sentencepiece: /usr/bin/python3 "
               "or its sentencepiece module is missing (apt-get install python3-sentencepiece)\n");
    } else if (WEXITSTATUS(rc) != 0) {
        TL_CHECK(0, "%s failed with exit status %d", cmd, WEXITSTATUS(rc));
    } else {
        size_t n = 0;
        uint8_t *data = read_all(out, &n);
        reader r = {data, data + n, false};
        TL_CHECK(data && n > 12 && memcmp(data, "DSTOKAG1", 8) == 0, "bad agreement file %s", out);
        if (data && n > 12) {
            r.p += 8;
            uint32_t models = rd_u32(&r);
            t0 = now_s();
            for (uint32_t m = 0; m < models && !r.bad; m++) agree_model(&r);
            TL_CHECK(!r.bad && r.p == r.end, "agreement file %s is truncated or malformed", out);
            printf("test_tokenizer: agreement with sentencepiece %s: %d cases over %u models, %d "
                   "mismatches (Python %.1f s, C %.2f s)\n",
                   agree_mismatch ? "FAILED" : "ok", agree_cases, models, agree_mismatch, t_py,
                   now_s() - t0);
            TL_CHECK(agree_cases >= 3000, "only %d agreement cases", agree_cases);
            TL_CHECK(agree_mismatch == 0, "%d of %d cases differ from sentencepiece",
                     agree_mismatch, agree_cases);
        }
        free(data);
    }
    // Clean up whatever the script wrote (a flat folder of our own).
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_tokenizer: could not remove %s\n", dir);
}

// ---------------------------------------------------------------- without Python

// Encodes into a fresh array (checked against the other entry points) and returns it.
static int32_t *enc(const ds_tokenizer *tok, const char *s, size_t len, unsigned flags,
                    int64_t *n) {
    int32_t *ids = ds_tokenizer_encode_alloc(tok, s, len, flags, n);
    int32_t small[4];
    int64_t m = ds_tokenizer_encode_n(tok, s, len, flags, small, 4);
    TL_CHECK(m == *n, "encode_n counts %lld, encode_alloc %lld", (long long)m, (long long)*n);
    TL_CHECK(memcmp(small, ids, sizeof(int32_t) * (size_t)(m < 4 ? m : 4)) == 0,
             "encode_n into a short buffer wrote different ids");
    return ids;
}

static char *pieces_of(const ds_tokenizer *tok, const int32_t *ids, int64_t n) {
    size_t cap = 16, len = 0;
    char *s = malloc(cap);
    s[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *p = ds_tokenizer_id_to_piece(tok, ids[i]);
        size_t l = strlen(p);
        while (len + l + 1 > cap) s = realloc(s, cap *= 2);
        memcpy(s + len, p, l + 1);
        len += l;
    }
    return s;
}

static void expect_roundtrip(const ds_tokenizer *tok, const char *s) {
    int64_t n;
    int32_t *ids = enc(tok, s, strlen(s), 0, &n);
    size_t len;
    char *back = ds_tokenizer_decode(tok, ids, n, &len);
    TL_CHECK(len == strlen(s) && strcmp(back, s) == 0, "decode(encode(\"%s\")) = \"%s\"", s, back);
    free(back);
    free(ids);
}

static void test_basics(void) {
    ds_tokenizer *tok = ds_tokenizer_load(model_path);
    TL_CHECK(ds_tokenizer_vocab_size(tok) == 2000 && ds_tokenizer_model_vocab_size(tok) == 2000,
             "vocab size %d", ds_tokenizer_vocab_size(tok));
    TL_CHECK(ds_tokenizer_unk_id(tok) == 0 && ds_tokenizer_bos_id(tok) == 1 &&
                 ds_tokenizer_eos_id(tok) == 2 && ds_tokenizer_pad_id(tok) == -1,
             "special ids %d %d %d %d", ds_tokenizer_unk_id(tok), ds_tokenizer_bos_id(tok),
             ds_tokenizer_eos_id(tok), ds_tokenizer_pad_id(tok));
    // Llama's layout: <unk> <s> </s>, then the 256 byte pieces.
    TL_CHECK(strcmp(ds_tokenizer_id_to_piece(tok, 0), "<unk>") == 0 &&
                 strcmp(ds_tokenizer_id_to_piece(tok, 1), "<s>") == 0 &&
                 strcmp(ds_tokenizer_id_to_piece(tok, 2), "</s>") == 0,
             "first pieces");
    TL_CHECK(ds_tokenizer_piece_to_id(tok, "<0x0A>") == 3 + 0x0A &&
                 ds_tokenizer_type(tok, 3 + 0x0A) == DS_TOK_BYTE &&
                 ds_tokenizer_type(tok, 1) == DS_TOK_CONTROL &&
                 ds_tokenizer_type(tok, 0) == DS_TOK_UNKNOWN &&
                 ds_tokenizer_type(tok, 1000) == DS_TOK_NORMAL,
             "piece types");
    TL_CHECK(ds_tokenizer_piece_to_id(tok, "no such piece") == -1 &&
                 ds_tokenizer_id_to_piece(tok, 2000) == NULL &&
                 ds_tokenizer_id_to_piece(tok, -1) == NULL && ds_tokenizer_type(tok, 2000) == 0,
             "lookups out of range");
    for (int32_t i = 0; i < 2000; i++)
        if (ds_tokenizer_piece_to_id(tok, ds_tokenizer_id_to_piece(tok, i)) != i) {
            TL_CHECK(0, "piece_to_id(id_to_piece(%d)) differs", i);
            break;
        }

    int64_t n;
    int32_t *ids = enc(tok, "Hello world", 11, 0, &n);
    char *p = pieces_of(tok, ids, n);
    TL_CHECK(strcmp(p, "\xe2\x96\x81Hello\xe2\x96\x81world") == 0, "pieces of Hello world: %s", p);
    free(p);
    free(ids);
    ids = enc(tok, "Hello world", 11, DS_TOK_NO_DUMMY_PREFIX | DS_TOK_ADD_BOS | DS_TOK_ADD_EOS, &n);
    p = pieces_of(tok, ids, n);
    TL_CHECK(ids[0] == 1 && ids[n - 1] == 2 && strcmp(p, "<s>Hello\xe2\x96\x81world</s>") == 0,
             "flags: %s", p);
    char *d = ds_tokenizer_decode(tok, ids, n, NULL);
    TL_CHECK(strcmp(d, "Hello world") == 0, "decode with BOS/EOS: \"%s\"", d);
    free(d);
    free(p);
    free(ids);

    // The count/capacity contract, and the NUL-terminated entry point.
    int32_t buf[3] = {-7, -7, -7};
    int64_t full = ds_tokenizer_encode(tok, "a fairly long sentence to encode", true, buf, 2);
    TL_CHECK(full > 2 && buf[0] == 1 && buf[2] == -7, "encode with cap 2 returned %lld",
             (long long)full);
    TL_CHECK(ds_tokenizer_encode(tok, "", false, NULL, 0) == 0 &&
                 ds_tokenizer_encode(tok, "", true, buf, 3) == 1 && buf[0] == 1,
             "empty text");

    const char *texts[] = {"Hello world",
                           "  two leading spaces and two trailing  ",
                           " ",
                           "tabs\tand\nnewlines\r\n",
                           "[0.123, 0.456, 0.789, 0.912]",
                           "{0.09, 0.15}",
                           "### Human: <image>\nWhat is this?\n### Assistant: A cat.\n### ",
                           "caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x98\x80 \xf0\x93\x80\x80",
                           "1234567890 3.14159 99%",
                           "\xef\xbf\xbd replacement character"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) expect_roundtrip(tok, texts[i]);

    // Malformed UTF-8: one U+FFFD per offending byte, deterministic.
    ids = enc(tok, "a\xff\xe3\x81z", 5, 0, &n);
    d = ds_tokenizer_decode(tok, ids, n, NULL);
    TL_CHECK(strcmp(d, "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz") == 0, "malformed UTF-8 gave %s",
             d);
    free(d);
    free(ids);
    // NUL bytes go through the length-taking entry point as <0x00>.
    ids = enc(tok, "a\0b", 3, 0, &n);
    size_t len;
    d = ds_tokenizer_decode(tok, ids, n, &len);
    TL_CHECK(len == 3 && memcmp(d, "a\0b", 3) == 0, "NUL round trip");
    free(d);
    free(ids);
    // Byte pieces that do not form a character decode to U+FFFD each.
    int32_t bytes[3] = {3 + 0xE3, 3 + 0x81, 3 + 'A'};
    d = ds_tokenizer_decode(tok, bytes, 3, NULL);
    TL_CHECK(strcmp(d, "\xef\xbf\xbd\xef\xbf\xbd"
                       "A") == 0,
             "dangling byte pieces: %s", d);
    free(d);
    int32_t bad_id = 2000;
    TL_EXPECT_FAIL(free(ds_tokenizer_decode(tok, &bad_id, 1, NULL)), "2000", "test_bpe.model");

    char hex[65], hex2[65];
    ds_tokenizer_digest(tok, hex);
    ds_tokenizer *again = ds_tokenizer_load(model_path);
    ds_tokenizer_digest(again, hex2);
    bool lower_hex = strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64;
    TL_CHECK(lower_hex && strcmp(hex, hex2) == 0, "digest %s", hex);
    TL_CHECK(strcmp(ds_tokenizer_path(tok), model_path) == 0, "path");
    ds_tokenizer_free(again);

    // The same model from memory.
    size_t size = 0;
    uint8_t *bytes_of_file = read_all(model_path, &size);
    again = ds_tokenizer_load_mem(bytes_of_file, size, "in-memory model");
    ds_tokenizer_digest(again, hex2);
    int32_t a[32], b[32];
    int64_t na = ds_tokenizer_encode(tok, "The man is at [0.1, 0.2, 0.3, 0.4].", true, a, 32);
    int64_t nb = ds_tokenizer_encode(again, "The man is at [0.1, 0.2, 0.3, 0.4].", true, b, 32);
    TL_CHECK(strcmp(hex, hex2) == 0 && na == nb && na <= 32 &&
                 memcmp(a, b, (size_t)na * sizeof *a) == 0 &&
                 strcmp(ds_tokenizer_path(again), "in-memory model") == 0,
             "model loaded from memory differs");
    ds_tokenizer_free(again);
    TL_EXPECT_FAIL(ds_tokenizer_load_mem(bytes_of_file, size / 3, "in-memory model"),
                   "in-memory model", "truncated");
    free(bytes_of_file);
    ds_tokenizer_free(tok);
}

static void test_added_tokens(void) {
    ds_tokenizer *tok = ds_tokenizer_load(model_path);
    ds_tokenizer *plain = ds_tokenizer_load(model_path);
    for (int k = 0; k < 9; k++) {
        int32_t id = ds_tokenizer_add_special(tok, GROUNDING_TOKENS[k]);
        TL_CHECK(id == 2000 + k, "added %s as %d", GROUNDING_TOKENS[k], id);
    }
    TL_CHECK(ds_tokenizer_vocab_size(tok) == 2009 && ds_tokenizer_model_vocab_size(tok) == 2000,
             "vocab with added tokens %d", ds_tokenizer_vocab_size(tok));
    TL_CHECK(ds_tokenizer_piece_to_id(tok, "<im_end>") == 2002 &&
                 strcmp(ds_tokenizer_id_to_piece(tok, 2008), "<so_end>") == 0 &&
                 ds_tokenizer_type(tok, 2004) == DS_TOK_ADDED,
             "added token lookups");
    TL_EXPECT_FAIL(ds_tokenizer_add_special(tok, "<im_end>"), "<im_end>", "already");
    TL_EXPECT_FAIL(ds_tokenizer_add_special(tok, "<s>"), "<s>", "already");
    TL_EXPECT_FAIL(ds_tokenizer_add_special(tok, ""), "empty");

    // Each stretch between added tokens is encoded on its own, with its own dummy prefix.
    const char *text = "<im_start><im_patch><im_patch><im_end>\nWhat is<im_end>Hello <so_end>";
    int64_t n, m;
    int32_t *ids = enc(tok, text, strlen(text), DS_TOK_ADD_BOS, &n);
    int32_t want[64];
    int64_t w = 0;
    want[w++] = 1;
    want[w++] = 2001;
    want[w++] = 2000;
    want[w++] = 2000;
    want[w++] = 2002;
    int32_t *seg = enc(plain, "\nWhat is", 8, 0, &m);
    for (int64_t i = 0; i < m; i++) want[w++] = seg[i];
    free(seg);
    want[w++] = 2002;
    seg = enc(plain, "Hello ", 6, 0, &m);
    const char *first = ds_tokenizer_id_to_piece(plain, seg[0]);
    TL_CHECK(strncmp(first, "\xe2\x96\x81", 3) == 0, "dummy prefix after an added token: %s",
             first);
    for (int64_t i = 0; i < m; i++) want[w++] = seg[i];
    free(seg);
    want[w++] = 2008;
    TL_CHECK(n == w && memcmp(ids, want, (size_t)w * sizeof *ids) == 0,
             "added tokens: %lld ids, expected %lld", (long long)n, (long long)w);
    char *d = ds_tokenizer_decode(tok, ids, n, NULL);
    TL_CHECK(strcmp(d, text) == 0, "decode with added tokens: \"%s\"", d);
    free(d);
    free(ids);
    // Without the dummy prefix flag no stretch gets one.
    ids = enc(tok, "<im_end>Hello", 13, DS_TOK_NO_DUMMY_PREFIX, &n);
    TL_CHECK(n >= 2 && ids[0] == 2002 &&
                 strncmp(ds_tokenizer_id_to_piece(tok, ids[1]), "H", 1) == 0,
             "no dummy prefix after the added token");
    free(ids);
    // Near misses stay text.
    ids = enc(tok, "<im_end <im_>", 13, 0, &n);
    bool none = true;
    for (int64_t i = 0; i < n; i++) none = none && ids[i] < 2000;
    TL_CHECK(none, "partial added tokens must not match");
    free(ids);

    // Longest match first at one position; leftmost position first.
    ds_tokenizer *t3 = ds_tokenizer_load(model_path);
    int32_t x = ds_tokenizer_add_special(t3, "<x>");
    int32_t xy = ds_tokenizer_add_special(t3, "<x><y>");
    int32_t y = ds_tokenizer_add_special(t3, "<y>");
    ids = enc(t3, "<x><y><x><z><y>", 15, 0, &n);
    TL_CHECK(n >= 4 && ids[0] == xy && ids[1] == x && ids[n - 1] == y,
             "longest added token first: %lld ids", (long long)n);
    free(ids);
    ds_tokenizer_free(t3);
    ds_tokenizer_free(plain);
    ds_tokenizer_free(tok);
}

// Whether path loads (then, if use, it also encodes something); on failure the message is in
// tl_msg. The jump target lives here so that callers' loop variables stay out of its way.
static bool try_load(const char *path, bool use) {
    tl_catch_begin();
    if (setjmp(tl_jmp) != 0) {
        tl_catch_end();
        return false;
    }
    ds_tokenizer *t = ds_tokenizer_load(path);
    if (use) {
        int32_t ids[64];
        ds_tokenizer_encode(t, "still works, \xe6\x9d\xb1 ok", false, ids, 64);
    }
    ds_tokenizer_free(t);
    tl_catch_end();
    return true;
}

static void expect_load_fails(const char *path) {
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path);
}

static void test_bad_models(void) {
    char dir[] = "/tmp/groundc-tokbad-XXXXXX";
    if (!mkdtemp(dir)) {
        TL_CHECK(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    char path[4200];
    size_t n = 0;
    uint8_t *model = read_all(model_path, &n);
    TL_CHECK(model && n > 1000, "cannot read %s", model_path);
    if (!model) return;

    snprintf(path, sizeof path, "%s/does-not-exist.model", dir);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "cannot open");
    TL_EXPECT_FAIL(ds_tokenizer_load(dir), dir, "is a directory");
    snprintf(path, sizeof path, "%s/empty.model", dir);
    write_all(path, "", 0);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "empty");

    // Every proper prefix fails (the last field, normalizer_spec, is required); try many.
    snprintf(path, sizeof path, "%s/truncated.model", dir);
    int accepted = 0, tried = 0;
    for (size_t cut = 1; cut < n; cut += (cut < 64 || cut > n - 64) ? 1 : 97) {
        write_all(path, model, cut);
        tried++;
        if (try_load(path, false) || !strstr(tl_msg, path) || strchr(tl_msg, '\n')) accepted++;
    }
    TL_CHECK(accepted == 0, "%d of %d truncated models were accepted or misreported", accepted,
             tried);
    write_all(path, model, n / 2);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "truncated");

    // Random bytes: never accepted, never a crash.
    tl_rng rng = {42};
    uint8_t junk[4096];
    snprintf(path, sizeof path, "%s/random.model", dir);
    for (int k = 0; k < 50; k++) {
        size_t len = 1 + (size_t)tl_randint(&rng, sizeof junk);
        for (size_t i = 0; i < len; i++) junk[i] = (uint8_t)tl_next(&rng);
        write_all(path, junk, len);
        expect_load_fails(path);
    }
    // Random corruption of the real model: refused or loaded, never a crash.
    uint8_t *copy = malloc(n);
    for (int k = 0; k < 50; k++) {
        memcpy(copy, model, n);
        for (int j = 0; j < 4; j++) copy[tl_randint(&rng, (int64_t)n)] = (uint8_t)tl_next(&rng);
        write_all(path, copy, n);
        try_load(path, true);
    }
    free(copy);

    char uni[4096];
    tl_source_path(uni, sizeof uni, "tests/fixtures/tokenizer/test_unigram.model");
    TL_EXPECT_FAIL(ds_tokenizer_load(uni), "test_unigram.model", "UNIGRAM", "BPE");

    // A normalizer with a precompiled character map (nmt_nfkc): appending a second
    // normalizer_spec merges into the first, as protobuf specifies.
    static const uint8_t nfkc[] = {0x1a, 0x10, 0x0a, 0x08, 'n',  'm', 't', '_', 'n',
                                   'f',  'k',  'c',  0x12, 0x04, 1,   2,   3,   4};
    uint8_t *big = malloc(n + sizeof nfkc);
    memcpy(big, model, n);
    memcpy(big + n, nfkc, sizeof nfkc);
    snprintf(path, sizeof path, "%s/nfkc.model", dir);
    write_all(path, big, n + sizeof nfkc);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "nmt_nfkc", "precompiled character map");
    // A unigram model type set the same way on the BPE pieces.
    static const uint8_t unigram[] = {0x12, 0x02, 0x18, 0x01};
    memcpy(big + n, unigram, sizeof unigram);
    write_all(path, big, n + sizeof unigram);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "UNIGRAM");
    // A duplicate piece: the first piece again at the end.
    size_t first_len = 2 + model[1]; // field 1, one-byte length
    memcpy(big + n, model, first_len);
    write_all(path, big, n + first_len);
    TL_EXPECT_FAIL(ds_tokenizer_load(path), path, "defined twice");
    free(big);
    free(model);

    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_tokenizer: could not remove %s\n", dir);
}

static void test_speed(void) {
    ds_tokenizer *tok = ds_tokenizer_load(model_path);
    for (int k = 0; k < 9; k++) ds_tokenizer_add_special(tok, GROUNDING_TOKENS[k]);
    // ~4 MB of conversation-like text.
    static const char *words[] = {
        "a",      "man",      "riding", "bicycle",    "on",          "the",
        "street", "[0.123,",  "0.456,", "0.789,",     "0.912]",      "{0.09,",
        "0.15}",  "###",      "Human:", "Assistant:", "caf\xc3\xa9", "\xe6\x9d\xb1\xe4\xba\xac",
        "\n",     "describe", "region", "<im_end>"};
    size_t cap = 4u << 20, len = 0;
    char *text = malloc(cap + 64);
    tl_rng rng = {7};
    while (len < cap) {
        const char *w = words[tl_randint(&rng, sizeof words / sizeof *words)];
        size_t l = strlen(w);
        memcpy(text + len, w, l);
        len += l;
        text[len++] = ' ';
    }
    text[len] = 0;
    double t0 = now_s();
    int64_t n;
    int32_t *ids = ds_tokenizer_encode_alloc(tok, text, len, 0, &n);
    double dt = now_s() - t0;
    printf("test_tokenizer: encode speed: %.2f MB of text, %lld tokens in %.3f s: %.2f M tokens/s, "
           "%.1f MB/s\n",
           len / 1e6, (long long)n, dt, n / dt / 1e6, len / dt / 1e6);
    t0 = now_s();
    size_t dlen;
    char *back = ds_tokenizer_decode(tok, ids, n, &dlen);
    printf("test_tokenizer: decode speed: %.1f M tokens/s\n", n / (now_s() - t0) / 1e6);
    TL_CHECK(dlen == len && memcmp(back, text, len) == 0, "round trip of the long text");
    free(back);
    free(ids);

    // One 1 MB "word" with no spaces (a single long merge sequence) must stay fast.
    for (size_t i = 0; i < (1u << 20); i++) text[i] = "abcdefghij"[i % 7];
    t0 = now_s();
    ids = ds_tokenizer_encode_alloc(tok, text, 1u << 20, 0, &n);
    dt = now_s() - t0;
    printf("test_tokenizer: 1 MB without spaces: %lld tokens in %.3f s\n", (long long)n, dt);
    TL_CHECK(dt < 5.0, "a 1 MB word took %.1f s", dt);
    free(ids);
    free(text);
    ds_tokenizer_free(tok);
}

int main(void) {
    tl_source_path(model_path, sizeof model_path, "tests/fixtures/tokenizer/test_bpe.model");
    test_basics();
    test_added_tokens();
    test_bad_models();
    test_speed();
    test_agreement();
    return tl_summary("test_tokenizer");
}
