// torch_file.c: see torch_file.h.
#include "torch_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unzip.h>

#include "error.h"

#define PT_MAX_MEMBERS (1 << 20)
#define PT_MAX_DEPTH   (1 << 20) // stack entries and memo slots

// Pickle values ---------------------------------------------------------------------------------

typedef enum {
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_FLOAT,
    PV_STR,
    PV_BYTES,
    PV_TUPLE,
    PV_LIST,
    PV_DICT, // items: key, value, key, value, ...
    PV_GLOBAL,
    PV_STORAGE,
    PV_TENSOR,
    PV_OBJECT, // anything else: kept, never looked into
    PV_MARK,
} pv_kind;

typedef struct pv pv;
struct pv {
    pv_kind kind;
    int64_t i;  // INT, BOOL; STORAGE: element count; TENSOR: storage offset (elements)
    char *s;    // STR, BYTES, GLOBAL ("module.name"); STORAGE: the member's key
    size_t len; // STR, BYTES
    pv **items; // TUPLE, LIST, DICT; TENSOR: items[0] is the storage
    int n, cap; // items
    int dtype;  // STORAGE: index into pt_dtypes
    int ndim;   // TENSOR
    int64_t shape[8], stride[8];
};

// Storage classes and the safetensors dtype names of their elements.
static const struct {
    const char *cls, *dtype;
    int size;
} pt_dtypes[] = {
    {"torch.FloatStorage", "F32", 4},     {"torch.HalfStorage", "F16", 2},
    {"torch.BFloat16Storage", "BF16", 2}, {"torch.DoubleStorage", "F64", 8},
    {"torch.LongStorage", "I64", 8},      {"torch.IntStorage", "I32", 4},
    {"torch.ShortStorage", "I16", 2},     {"torch.CharStorage", "I8", 1},
    {"torch.ByteStorage", "U8", 1},       {"torch.BoolStorage", "BOOL", 1},
};
#define PT_NDTYPES ((int)(sizeof pt_dtypes / sizeof *pt_dtypes))

// A zip member: where its (stored, uncompressed) bytes lie in the file.
typedef struct {
    char *name;
    uint64_t offset, size;
    bool stored;
} pt_member;

// Everything ag_pt_open holds while reading, so that a failure releases it before ag_fail
// (tests and fuzzers catch failures and run on).
typedef struct {
    ag_st_file *f;
    int fd;
    pt_member *members;
    int n_members;
    const char *prefix; // "archive/": the folder of data.pkl
    size_t prefix_len;
    pv **values; // every value made, for freeing
    int n_values, cap_values;
    pv **stack;
    int n_stack, cap_stack;
    pv **memo;
    int64_t cap_memo, n_memo; // n_memo: slots filled (MEMOIZE's index)
    pv mark;
    size_t pos; // in the pickle, for messages
} pt_read;

static void pt_free(pt_read *r) {
    for (int i = 0; i < r->n_values; i++) {
        free(r->values[i]->s);
        free(r->values[i]->items);
        free(r->values[i]);
    }
    free(r->values);
    free(r->stack);
    free(r->memo);
    for (int i = 0; i < r->n_members; i++) free(r->members[i].name);
    free(r->members);
    if (r->fd >= 0) close(r->fd); // failing or done; a close error would add nothing
    r->fd = -1;
}

__attribute__((noreturn, format(printf, 2, 3))) static void pt_bad(pt_read *r, const char *fmt,
                                                                   ...) {
    char msg[1800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pt_free(r);
    ag_st_close(r->f);
    ag_fail("%s", msg);
}

// A pickle error: file, byte offset in data.pkl, what.
#define PK_BAD(r, ...)                                                                             \
    do {                                                                                           \
        char what_[512];                                                                           \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                                \
        pt_bad(r, "%s: data.pkl byte %zu: %s", (r)->f->path, (r)->pos, what_);                     \
    } while (0)

static pv *pv_new(pt_read *r, pv_kind kind) {
    if (r->n_values == r->cap_values) {
        int cap = r->cap_values ? 2 * r->cap_values : 256;
        pv **v = realloc(r->values, sizeof *v * (size_t)cap);
        if (!v) pt_bad(r, "%s: out of memory reading the pickle", r->f->path);
        r->values = v, r->cap_values = cap;
    }
    pv *v = calloc(1, sizeof *v);
    if (!v) pt_bad(r, "%s: out of memory reading the pickle", r->f->path);
    v->kind = kind;
    r->values[r->n_values++] = v;
    return v;
}

static void pv_append(pt_read *r, pv *list, pv *item) {
    if (list->n == list->cap) {
        int cap = list->cap ? 2 * list->cap : 4;
        pv **items = realloc(list->items, sizeof *items * (size_t)cap);
        if (!items) pt_bad(r, "%s: out of memory reading the pickle", r->f->path);
        list->items = items, list->cap = cap;
    }
    list->items[list->n++] = item;
}

static void push(pt_read *r, pv *v) {
    if (r->n_stack == r->cap_stack) {
        if (r->cap_stack >= PT_MAX_DEPTH)
            PK_BAD(r, "the pickle stack exceeds %d entries", PT_MAX_DEPTH);
        int cap = r->cap_stack ? 2 * r->cap_stack : 64;
        pv **s = realloc(r->stack, sizeof *s * (size_t)cap);
        if (!s) pt_bad(r, "%s: out of memory reading the pickle", r->f->path);
        r->stack = s, r->cap_stack = cap;
    }
    r->stack[r->n_stack++] = v;
}

static pv *pop(pt_read *r) {
    if (r->n_stack == 0 || r->stack[r->n_stack - 1] == &r->mark)
        PK_BAD(r, "pop from an empty stack");
    return r->stack[--r->n_stack];
}

static pv *top(pt_read *r) {
    if (r->n_stack == 0 || r->stack[r->n_stack - 1] == &r->mark) PK_BAD(r, "the stack is empty");
    return r->stack[r->n_stack - 1];
}

// Index of the topmost mark.
static int mark_at(pt_read *r) {
    for (int i = r->n_stack - 1; i >= 0; i--)
        if (r->stack[i] == &r->mark) return i;
    PK_BAD(r, "no mark on the stack");
}

// The values above the topmost mark as a new container of kind; the mark is popped.
static pv *pop_to_mark(pt_read *r, pv_kind kind) {
    int m = mark_at(r);
    pv *c = pv_new(r, kind);
    for (int i = m + 1; i < r->n_stack; i++) pv_append(r, c, r->stack[i]);
    r->n_stack = m;
    return c;
}

static void memo_put(pt_read *r, int64_t idx, pv *v) {
    if (idx < 0 || idx >= PT_MAX_DEPTH) PK_BAD(r, "memo index %lld out of range", (long long)idx);
    if (idx >= r->cap_memo) {
        int64_t cap = r->cap_memo ? r->cap_memo : 64;
        while (cap <= idx) cap *= 2;
        pv **m = realloc(r->memo, sizeof *m * (size_t)cap);
        if (!m) pt_bad(r, "%s: out of memory reading the pickle", r->f->path);
        memset(m + r->cap_memo, 0, sizeof *m * (size_t)(cap - r->cap_memo));
        r->memo = m, r->cap_memo = cap;
    }
    if (!r->memo[idx]) r->n_memo++;
    r->memo[idx] = v;
}

static pv *memo_get(pt_read *r, int64_t idx) {
    if (idx < 0 || idx >= r->cap_memo || !r->memo[idx])
        PK_BAD(r, "memo index %lld was never stored", (long long)idx);
    return r->memo[idx];
}

static void dict_set(pt_read *r, pv *d, pv *k, pv *v) {
    if (d->kind != PV_DICT) return; // state of an opaque object: not needed
    pv_append(r, d, k);
    pv_append(r, d, v);
}

static bool is_global(const pv *v, const char *name) {
    return v->kind == PV_GLOBAL && !strcmp(v->s, name);
}

// Building values ------------------------------------------------------------------------------

static const pt_member *find_member(const pt_read *r, const char *name) {
    for (int i = 0; i < r->n_members; i++)
        if (!strcmp(r->members[i].name, name)) return &r->members[i];
    return NULL;
}

// BINPERSID: ('storage', storage class, key, location, element count).
static pv *persistent_load(pt_read *r, pv *pid) {
    if (pid->kind != PV_TUPLE || pid->n < 5 || pid->items[0]->kind != PV_STR ||
        strcmp(pid->items[0]->s, "storage"))
        PK_BAD(r, "a persistent id that is not ('storage', type, key, location, size)");
    pv *cls = pid->items[1], *key = pid->items[2], *numel = pid->items[4];
    if (cls->kind != PV_GLOBAL || key->kind != PV_STR || numel->kind != PV_INT || numel->i < 0)
        PK_BAD(r, "a malformed storage id");
    int dt = -1;
    for (int k = 0; k < PT_NDTYPES; k++)
        if (!strcmp(cls->s, pt_dtypes[k].cls)) dt = k;
    if (dt < 0) PK_BAD(r, "storage of type %s: not supported", cls->s);
    pv *s = pv_new(r, PV_STORAGE);
    s->dtype = dt;
    s->i = numel->i;
    s->s = strdup(key->s);
    if (!s->s) pt_bad(r, "%s: out of memory", r->f->path);
    return s;
}

static bool int_tuple(const pv *t, int64_t *out, int *n) {
    if (t->kind != PV_TUPLE || t->n > 8) return false;
    for (int i = 0; i < t->n; i++) {
        if (t->items[i]->kind != PV_INT) return false;
        out[i] = t->items[i]->i;
    }
    *n = t->n;
    return true;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta]).
static pv *rebuild_tensor(pt_read *r, pv *args) {
    if (args->kind != PV_TUPLE || args->n < 4 || args->items[0]->kind != PV_STORAGE ||
        args->items[1]->kind != PV_INT)
        PK_BAD(r, "_rebuild_tensor_v2 with unexpected arguments");
    pv *t = pv_new(r, PV_TENSOR);
    int ns = 0, nt = 0;
    if (!int_tuple(args->items[2], t->shape, &ns) || !int_tuple(args->items[3], t->stride, &nt) ||
        ns != nt)
        PK_BAD(r,
               "_rebuild_tensor_v2: size and stride are not integer tuples of one length (<= 8)");
    t->ndim = ns;
    t->i = args->items[1]->i;
    pv_append(r, t, args->items[0]);
    return t;
}

// REDUCE / NEWOBJ: the few torch and Python callables a state dict uses; anything else is an
// opaque object.
static pv *call(pt_read *r, pv *fn, pv *args) {
    // _rebuild_from_type_v2(func, type, args, state): func(*args) (a tensor subclass)
    for (int depth = 0; is_global(fn, "torch._tensor._rebuild_from_type_v2"); depth++) {
        if (args->kind != PV_TUPLE || args->n < 3 || args->items[2]->kind != PV_TUPLE || depth > 8)
            PK_BAD(r, "_rebuild_from_type_v2 with unexpected arguments");
        fn = args->items[0];
        args = args->items[2];
    }
    if (is_global(fn, "torch._utils._rebuild_tensor_v2")) return rebuild_tensor(r, args);
    if (is_global(fn, "torch._utils._rebuild_parameter") ||
        is_global(fn, "torch._utils._rebuild_parameter_with_state")) {
        if (args->kind != PV_TUPLE || args->n < 1 || args->items[0]->kind != PV_TENSOR)
            PK_BAD(r, "%s without a tensor", fn->s);
        return args->items[0];
    }
    if (is_global(fn, "collections.OrderedDict")) return pv_new(r, PV_DICT);
    return pv_new(r, PV_OBJECT);
}

// The unpickler ------------------------------------------------------------------------------

typedef struct {
    const uint8_t *p;
    size_t n, at;
} pk_in;

static const uint8_t *take(pt_read *r, pk_in *in, size_t k) {
    if (k > in->n - in->at) PK_BAD(r, "truncated (an opcode needs %zu more bytes)", k);
    const uint8_t *q = in->p + in->at;
    in->at += k;
    return q;
}

static uint64_t le(const uint8_t *q, int k) {
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; i--) v = v << 8 | q[i];
    return v;
}

static pv *make_str(pt_read *r, pv_kind kind, const uint8_t *q, size_t k) {
    pv *v = pv_new(r, kind);
    v->s = malloc(k + 1);
    if (!v->s) pt_bad(r, "%s: out of memory", r->f->path);
    memcpy(v->s, q, k);
    v->s[k] = 0;
    v->len = k;
    return v;
}

// "module\nname\n" of GLOBAL.
static pv *read_global(pt_read *r, pk_in *in) {
    size_t start = in->at, lines = 0;
    while (lines < 2) {
        if (in->at >= in->n) PK_BAD(r, "truncated GLOBAL");
        if (in->p[in->at++] == '\n') lines++;
    }
    pv *g = make_str(r, PV_GLOBAL, in->p + start, in->at - start - 1);
    char *nl = strchr(g->s, '\n');
    if (!nl) PK_BAD(r, "malformed GLOBAL");
    *nl = '.';
    return g;
}

static void push_int(pt_read *r, pv_kind kind, int64_t value) {
    pv *v = pv_new(r, kind);
    v->i = value;
    push(r, v);
}

static pv *unpickle(pt_read *r, const uint8_t *data, size_t size) {
    pk_in in = {data, size, 0};
    for (;;) {
        r->pos = in.at;
        uint8_t op = *take(r, &in, 1);
        const uint8_t *q;
        pv *v, *a, *b;
        uint64_t k;
        switch (op) {
        case 0x80: // PROTO
            take(r, &in, 1);
            break;
        case 0x95: // FRAME
            take(r, &in, 8);
            break;
        case '.': // STOP
            return pop(r);
        case '(': // MARK
            push(r, &r->mark);
            break;
        case '}': // EMPTY_DICT
            push(r, pv_new(r, PV_DICT));
            break;
        case ']': // EMPTY_LIST
            push(r, pv_new(r, PV_LIST));
            break;
        case ')': // EMPTY_TUPLE
            push(r, pv_new(r, PV_TUPLE));
            break;
        case 'N': // NONE
            push(r, pv_new(r, PV_NONE));
            break;
        case 0x88:
        case 0x89: // NEWTRUE, NEWFALSE
            push_int(r, PV_BOOL, op == 0x88);
            break;
        case 'J': // BININT
            push_int(r, PV_INT, (int32_t)le(take(r, &in, 4), 4));
            break;
        case 'K': // BININT1
            push_int(r, PV_INT, *take(r, &in, 1));
            break;
        case 'M': // BININT2
            push_int(r, PV_INT, (int64_t)le(take(r, &in, 2), 2));
            break;
        case 0x8a: // LONG1: little-endian two's complement of n bytes
            k = *take(r, &in, 1);
            if (k > 8) PK_BAD(r, "an integer of %llu bytes", (unsigned long long)k);
            q = take(r, &in, k);
            push_int(r, PV_INT, k ? (int64_t)(le(q, (int)k) << (64 - 8 * k)) >> (64 - 8 * k) : 0);
            break;
        case 'G': // BINFLOAT (big-endian double); the value is not needed
            take(r, &in, 8);
            push(r, pv_new(r, PV_FLOAT));
            break;
        case 'X':    // BINUNICODE
        case 0x8c:   // SHORT_BINUNICODE
        case 0x8d:   // BINUNICODE8
        case 'B':    // BINBYTES
        case 'C':    // SHORT_BINBYTES
        case 0x8e:   // BINBYTES8
        case 0x96: { // BYTEARRAY8
            int w = op == 'X' || op == 'B' ? 4 : op == 0x8c || op == 'C' ? 1 : 8;
            k = le(take(r, &in, (size_t)w), w);
            if (k > size) PK_BAD(r, "a string of %llu bytes", (unsigned long long)k);
            q = take(r, &in, k);
            push(r, make_str(r, op == 'X' || op == 0x8c || op == 0x8d ? PV_STR : PV_BYTES, q, k));
            break;
        }
        case 't': // TUPLE
            push(r, pop_to_mark(r, PV_TUPLE));
            break;
        case 0x85:
        case 0x86:
        case 0x87: { // TUPLE1..3
            int n = op - 0x84;
            if (r->n_stack < n) PK_BAD(r, "TUPLE%d on a stack of %d", n, r->n_stack);
            v = pv_new(r, PV_TUPLE);
            for (int i = r->n_stack - n; i < r->n_stack; i++) {
                if (r->stack[i] == &r->mark) PK_BAD(r, "a mark inside TUPLE%d", n);
                pv_append(r, v, r->stack[i]);
            }
            r->n_stack -= n;
            push(r, v);
            break;
        }
        case 'l': // LIST
            push(r, pop_to_mark(r, PV_LIST));
            break;
        case 'd': // DICT (pairs in order)
            push(r, pop_to_mark(r, PV_DICT));
            break;
        case 'a': // APPEND
            v = pop(r);
            a = top(r);
            if (a->kind == PV_LIST) pv_append(r, a, v);
            break;
        case 'e': { // APPENDS
            int m = mark_at(r);
            if (m == 0) PK_BAD(r, "APPENDS without a list");
            a = r->stack[m - 1];
            for (int i = m + 1; i < r->n_stack; i++)
                if (a->kind == PV_LIST) pv_append(r, a, r->stack[i]);
            r->n_stack = m;
            break;
        }
        case 's': // SETITEM
            b = pop(r);
            a = pop(r);
            dict_set(r, top(r), a, b);
            break;
        case 'u': { // SETITEMS
            int m = mark_at(r);
            if (m == 0 || (r->n_stack - m - 1) % 2) PK_BAD(r, "SETITEMS without a dict or pairs");
            pv *d = r->stack[m - 1];
            for (int i = m + 1; i < r->n_stack; i += 2)
                dict_set(r, d, r->stack[i], r->stack[i + 1]);
            r->n_stack = m;
            break;
        }
        case 0x8f: // EMPTY_SET
            push(r, pv_new(r, PV_OBJECT));
            break;
        case 0x90: // ADDITEMS (sets: not needed)
            r->n_stack = mark_at(r);
            break;
        case 0x91: // FROZENSET
            r->n_stack = mark_at(r);
            push(r, pv_new(r, PV_OBJECT));
            break;
        case 'q': // BINPUT
            memo_put(r, *take(r, &in, 1), top(r));
            break;
        case 'r': // LONG_BINPUT
            memo_put(r, (int64_t)le(take(r, &in, 4), 4), top(r));
            break;
        case 0x94: // MEMOIZE: the next index
            memo_put(r, r->n_memo, top(r));
            break;
        case 'h': // BINGET
            push(r, memo_get(r, *take(r, &in, 1)));
            break;
        case 'j': // LONG_BINGET
            push(r, memo_get(r, (int64_t)le(take(r, &in, 4), 4)));
            break;
        case 'c': // GLOBAL
            push(r, read_global(r, &in));
            break;
        case 0x93: // STACK_GLOBAL
            b = pop(r);
            a = pop(r);
            if (a->kind != PV_STR || b->kind != PV_STR) PK_BAD(r, "STACK_GLOBAL of non-strings");
            v = pv_new(r, PV_GLOBAL);
            v->s = malloc(a->len + b->len + 2);
            if (!v->s) pt_bad(r, "%s: out of memory", r->f->path);
            snprintf(v->s, a->len + b->len + 2, "%s.%s", a->s, b->s);
            push(r, v);
            break;
        case 'R':  // REDUCE
        case 0x81: // NEWOBJ
            b = pop(r);
            a = pop(r);
            push(r, call(r, a, b));
            break;
        case 0x92: // NEWOBJ_EX
            pop(r);
            b = pop(r);
            a = pop(r);
            push(r, call(r, a, b));
            break;
        case 'b': // BUILD: the state of an object, not needed
            pop(r);
            break;
        case 'Q': // BINPERSID
            push(r, persistent_load(r, pop(r)));
            break;
        case '0': // POP
            pop(r);
            break;
        case '1': // POP_MARK
            r->n_stack = mark_at(r);
            break;
        case '2': // DUP
            push(r, top(r));
            break;
        default:
            PK_BAD(r, "unsupported pickle opcode 0x%02x", op);
        }
    }
}

// The archive ---------------------------------------------------------------------------------

static void read_members(pt_read *r) {
    const char *path = r->f->path;
    unzFile z = unzOpen64(path);
    if (!z) pt_bad(r, "%s: not a zip archive (what torch.save writes since torch 1.6)", path);
    int rc = unzGoToFirstFile(z);
    while (rc == UNZ_OK) {
        unz_file_info64 fi;
        char name[1024];
        bool ok = unzGetCurrentFileInfo64(z, &fi, name, sizeof name, NULL, 0, NULL, 0) == UNZ_OK &&
                  r->n_members < PT_MAX_MEMBERS;
        pt_member m = {0};
        if (ok) ok = unzOpenCurrentFile(z) == UNZ_OK;
        if (ok) {
            m.offset = (uint64_t)unzGetCurrentFileZStreamPos64(z);
            ok = unzCloseCurrentFile(z) == UNZ_OK;
        }
        m.stored = fi.compression_method == 0 && fi.compressed_size == fi.uncompressed_size;
        m.size = fi.uncompressed_size;
        if (ok && (m.offset > r->f->map_size || fi.compressed_size > r->f->map_size - m.offset))
            ok = false;
        if (ok) {
            pt_member *mm = realloc(r->members, sizeof *mm * (size_t)(r->n_members + 1));
            m.name = strdup(name);
            if (!mm || !m.name) {
                free(m.name);
                if (mm) r->members = mm;
                unzClose(z);
                pt_bad(r, "%s: out of memory", path);
            }
            r->members = mm;
            r->members[r->n_members++] = m;
        }
        if (!ok) {
            unzClose(z);
            pt_bad(r, "%s: damaged zip directory (member %d)", path, r->n_members);
        }
        rc = unzGoToNextFile(z);
    }
    unzClose(z);
    if (rc != UNZ_END_OF_LIST_OF_FILE) pt_bad(r, "%s: damaged zip directory", path);
}

// The entry of tensor t called name: into the mapping when contiguous, else a gathered copy.
static void add_entry(pt_read *r, const char *name, const pv *t) {
    ag_st_file *f = r->f;
    const char *path = f->path;
    const pv *st = t->items[0];
    const int es = pt_dtypes[st->dtype].size;
    if (ag_st_find(f, name)) pt_bad(r, "%s: tensor '%s' appears twice", path, name);
    char key[1200];
    snprintf(key, sizeof key, "%.*sdata/%s", (int)r->prefix_len, r->prefix, st->s);
    const pt_member *m = find_member(r, key);
    if (!m) pt_bad(r, "%s: tensor '%s': its storage %s is missing", path, name, key);
    if (!m->stored)
        pt_bad(r, "%s: tensor '%s': storage %s is compressed (torch.save stores them as they are)",
               path, name, key);
    if ((uint64_t)st->i > m->size / (uint64_t)es)
        pt_bad(r, "%s: tensor '%s': storage %s holds %llu bytes, not %lld elements of %d bytes",
               path, name, key, (unsigned long long)m->size, (long long)st->i, es);
    // extent (the last element's index must lie inside the storage) and row-major contiguity
    // (dims of size 1 may have any stride)
    int64_t numel = 1, last = t->i, want = 1;
    bool empty = false, contiguous = true;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] < 0 || t->stride[d] < 0 || t->shape[d] > ((int64_t)1 << 40) ||
            t->stride[d] > ((int64_t)1 << 40))
            pt_bad(r, "%s: tensor '%s': size or stride out of range", path, name);
        if (t->shape[d] == 0) empty = true;
        numel *= t->shape[d];
        if (numel > ((int64_t)1 << 40)) pt_bad(r, "%s: tensor '%s': too many elements", path, name);
        int64_t reach;
        if (t->shape[d] && (__builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &reach) ||
                            __builtin_add_overflow(last, reach, &last)))
            pt_bad(r, "%s: tensor '%s': strides out of range", path, name);
        if (t->shape[d] != 1 && t->stride[d] != want) contiguous = false;
        want *= t->shape[d];
    }
    if (!empty && (t->i < 0 || last >= st->i))
        pt_bad(r,
               "%s: tensor '%s': offset %lld and strides reach element %lld of a storage of %lld",
               path, name, (long long)t->i, (long long)last, (long long)st->i);
    ag_st_entry *e = &f->entries[f->n];
    e->name = strdup(name);
    if (!e->name) pt_bad(r, "%s: out of memory", path);
    f->n++;
    strcpy(e->dtype, pt_dtypes[st->dtype].dtype);
    e->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) e->shape[d] = t->shape[d];
    e->nbytes = (size_t)numel * (size_t)es;
    const uint8_t *base = (const uint8_t *)f->map + m->offset;
    if (empty || contiguous) {
        e->data = base + (empty ? 0 : (size_t)t->i * (size_t)es);
        return;
    }
    uint8_t *buf = malloc(e->nbytes);
    void **owned = realloc(f->owned, sizeof *owned * (size_t)(f->n_owned + 1));
    if (owned) f->owned = owned;
    if (!buf || !owned) {
        free(buf);
        pt_bad(r, "%s: tensor '%s': out of memory", path, name);
    }
    f->owned[f->n_owned++] = buf;
    int64_t idx[8] = {0};
    for (int64_t k = 0; k < numel; k++) {
        int64_t at = t->i;
        for (int d = 0; d < t->ndim; d++) at += idx[d] * t->stride[d];
        memcpy(buf + (size_t)k * (size_t)es, base + (size_t)at * (size_t)es, (size_t)es);
        for (int d = t->ndim - 1; d >= 0 && ++idx[d] == t->shape[d]; d--) idx[d] = 0;
    }
    e->data = buf;
}

static int count_tensors(const pv *d) {
    int n = 0;
    if (d->kind != PV_DICT) return 0;
    for (int i = 0; i + 1 < d->n; i += 2)
        n += d->items[i]->kind == PV_STR && d->items[i + 1]->kind == PV_TENSOR;
    return n;
}

// The dict of tensors: the top level, or its "state_dict" (Lightning), "model" (LAVIS, most
// training scripts) or "module" (DeepSpeed's mp_rank_00_model_states.pt) entry.
static const pv *state_dict(const pv *root) {
    if (count_tensors(root)) return root;
    if (root->kind != PV_DICT) return NULL;
    const char *keys[] = {"state_dict", "model", "module"};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i + 1 < root->n; i += 2)
            if (root->items[i]->kind == PV_STR && !strcmp(root->items[i]->s, keys[k]) &&
                count_tensors(root->items[i + 1]))
                return root->items[i + 1];
    return NULL;
}

static const uint8_t pt_zip_magic[4] = {'P', 'K', 3, 4};
// torch < 1.6: a pickled magic number 0x1950a86a20f9469cfc6c (LONG1 of 10 bytes) first
static const uint8_t pt_legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                          0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

bool ag_pt_is_torch_file(const char *path) {
    uint8_t head[sizeof pt_legacy_magic] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    size_t n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    return (n >= 4 && !memcmp(head, pt_zip_magic, 4)) ||
           (n == sizeof head && !memcmp(head, pt_legacy_magic, sizeof head));
}

ag_st_file *ag_pt_open(const char *path) {
    pt_read r = {.fd = -1, .mark = {.kind = PV_MARK}};
    r.f = ag_xcalloc(1, sizeof *r.f, "torch file");
    r.f->path = ag_xstrdup(path);
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) pt_bad(&r, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(r.fd, &sb) != 0) pt_bad(&r, "%s: cannot stat: %s", path, strerror(errno));
    if (sb.st_size < (off_t)sizeof pt_legacy_magic)
        pt_bad(&r, "%s: too short for a torch file", path);
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, r.fd, 0);
    if (map == MAP_FAILED) pt_bad(&r, "%s: cannot map: %s", path, strerror(errno));
    r.f->map = map;
    r.f->map_size = (size_t)sb.st_size;
    close(r.fd); // mapped; a close error changes nothing
    r.fd = -1;
    if (!memcmp(map, pt_legacy_magic, sizeof pt_legacy_magic))
        pt_bad(&r,
               "%s: the legacy torch format (torch < 1.6, or _use_new_zipfile_serialization="
               "False); load and save it again with a current torch",
               path);
    read_members(&r);
    const pt_member *pkl = NULL;
    for (int i = 0; i < r.n_members; i++) {
        const char *n = r.members[i].name, *slash = strchr(n, '/');
        if (slash && !strcmp(slash, "/data.pkl")) {
            pkl = &r.members[i];
            r.prefix = n;
            r.prefix_len = (size_t)(slash - n) + 1;
            break;
        }
    }
    if (!pkl) pt_bad(&r, "%s: a zip without <name>/data.pkl: not a torch.save file", path);
    if (!pkl->stored) pt_bad(&r, "%s: data.pkl is compressed: not a torch.save file", path);
    char key[1200];
    snprintf(key, sizeof key, "%.*sbyteorder", (int)r.prefix_len, r.prefix);
    const pt_member *bo = find_member(&r, key);
    if (bo && bo->stored &&
        !(bo->size == 6 && !memcmp((const char *)map + bo->offset, "little", 6)))
        pt_bad(&r, "%s: a big-endian torch file: not supported", path);
    const pv *root = unpickle(&r, (const uint8_t *)map + pkl->offset, pkl->size);
    const pv *sd = state_dict(root);
    if (!sd)
        pt_bad(&r,
               "%s: no tensors (a dict of them, or one under 'state_dict', 'model' or 'module')",
               path);
    r.f->entries = calloc((size_t)count_tensors(sd), sizeof *r.f->entries);
    if (!r.f->entries) pt_bad(&r, "%s: out of memory", path);
    for (int i = 0; i + 1 < sd->n; i += 2)
        if (sd->items[i]->kind == PV_STR && sd->items[i + 1]->kind == PV_TENSOR)
            add_entry(&r, sd->items[i]->s, sd->items[i + 1]);
    pt_free(&r);
    return r.f;
}
