// yaml_tree.c: see yaml_tree.h. libyaml parses; this file only builds the tree and checks values.
#include "yaml_tree.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "autograd/error.h"
#include "data/files.h"

void tr_yaml_fail(const tr_yaml *node, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ag_fail("%s:%d:%d: %s: %s", node->file, node->line, node->col,
            node->path[0] ? node->path : "(top level)", msg);
}

static char *join_path(const char *parent, const char *key) {
    size_t n = strlen(parent) + strlen(key) + 2;
    char *p = ag_xmalloc(n, "yaml path");
    snprintf(p, n, "%s%s%s", parent, parent[0] ? "." : "", key);
    return p;
}

static tr_yaml *new_node(tr_yaml_kind kind, const char *file, int line, int col, char *path) {
    tr_yaml *n = ag_xcalloc(1, sizeof *n, "yaml node");
    n->kind = kind;
    n->file = file;
    n->line = line;
    n->col = col;
    n->path = path;
    return n;
}

// What a text is parsed as: a file (col0 0), or the value of a --set argument, whose columns
// count from the argument's start (col0: the value's offset in it).
typedef struct {
    yaml_document_t *doc;
    const char *file;
    int col0;
    bool cli;
} source;

static int mark_col(const source *s, const yaml_mark_t *m) {
    return (int)m->column + 1 + (m->line == 0 ? s->col0 : 0);
}

static int find_key(const tr_yaml *map, const char *key) {
    for (int i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i], key)) return i;
    return -1;
}

static void add_entry(tr_yaml *map, const char *key, tr_yaml *value, const char *file, int line,
                      int col) {
    int n = map->n + 1;
    map->keys = ag_xrealloc(map->keys, sizeof *map->keys * (size_t)n, "yaml");
    map->key_file = ag_xrealloc(map->key_file, sizeof *map->key_file * (size_t)n, "yaml");
    map->key_line = ag_xrealloc(map->key_line, sizeof *map->key_line * (size_t)n, "yaml");
    map->key_col = ag_xrealloc(map->key_col, sizeof *map->key_col * (size_t)n, "yaml");
    map->used = ag_xrealloc(map->used, sizeof *map->used * (size_t)n, "yaml");
    map->items = ag_xrealloc(map->items, sizeof *map->items * (size_t)n, "yaml");
    map->keys[map->n] = ag_xstrdup(key);
    map->key_file[map->n] = file;
    map->key_line[map->n] = line;
    map->key_col[map->n] = col;
    map->used[map->n] = false;
    map->items[map->n] = value;
    map->n = n;
}

static tr_yaml *convert(const source *s, yaml_node_t *yn, char *path, int depth);

// A plain "<<" key: YAML's merge key (<<: *base, or <<: [*a, *b]).
static bool is_merge_key(const yaml_node_t *k) {
    return k->type == YAML_SCALAR_NODE && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           !strcmp((const char *)k->data.scalar.value, "<<");
}

// One mapping merged into map: each of its keys that map lacks moves over (the map's own
// keys, and those of earlier merged mappings, win, as the merge-key spec says).
static void merge_one(const source *s, yaml_node_t *from, tr_yaml *map, int depth) {
    int line = (int)from->start_mark.line + 1, col = mark_col(s, &from->start_mark);
    if (from->type != YAML_MAPPING_NODE)
        ag_fail("%s:%d:%d: %s: '<<' merges a mapping (<<: *name) or a list of them", s->file, line,
                col, map->path[0] ? map->path : "(top level)");
    tr_yaml *src = convert(s, from, ag_xstrdup(map->path), depth + 1);
    for (int i = 0; i < src->n; i++) {
        if (find_key(map, src->keys[i]) >= 0) continue;
        add_entry(map, src->keys[i], src->items[i], src->key_file[i], src->key_line[i],
                  src->key_col[i]);
        src->items[i] = NULL;
    }
    tr_yaml_free(src);
}

static void merge_keys(const source *s, yaml_node_t *yn, tr_yaml *map, int depth) {
    for (yaml_node_pair_t *p = yn->data.mapping.pairs.start; p < yn->data.mapping.pairs.top; p++) {
        if (!is_merge_key(yaml_document_get_node(s->doc, p->key))) continue;
        yaml_node_t *v = yaml_document_get_node(s->doc, p->value);
        if (v->type != YAML_SEQUENCE_NODE) {
            merge_one(s, v, map, depth);
            continue;
        }
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++)
            merge_one(s, yaml_document_get_node(s->doc, *it), map, depth);
    }
}

static tr_yaml *convert(const source *s, yaml_node_t *yn, char *path, int depth) {
    int line = (int)yn->start_mark.line + 1, col = mark_col(s, &yn->start_mark);
    if (depth > TR_YAML_MAX_DEPTH) ag_fail("%s:%d:%d: nesting too deep", s->file, line, col);
    tr_yaml *n;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n = new_node(TR_YAML_SCALAR, s->file, line, col, path);
        n->value = ag_xstrdup((const char *)yn->data.scalar.value);
        break;
    case YAML_SEQUENCE_NODE: {
        n = new_node(TR_YAML_SEQ, s->file, line, col, path);
        int count = (int)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        n->items = ag_xcalloc((size_t)count, sizeof *n->items, "yaml");
        for (int i = 0; i < count; i++) {
            char idx[32];
            snprintf(idx, sizeof idx, "[%d]", i);
            char *p = ag_xmalloc(strlen(path) + sizeof idx, "yaml path");
            sprintf(p, "%s%s", path, idx);
            yaml_node_t *child = yaml_document_get_node(s->doc, yn->data.sequence.items.start[i]);
            n->items[n->n++] = convert(s, child, p, depth + 1);
        }
        break;
    }
    case YAML_MAPPING_NODE: {
        n = new_node(TR_YAML_MAP, s->file, line, col, path);
        int count = (int)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        n->keys = ag_xcalloc((size_t)count, sizeof *n->keys, "yaml");
        n->key_file = ag_xcalloc((size_t)count, sizeof *n->key_file, "yaml");
        n->key_line = ag_xcalloc((size_t)count, sizeof *n->key_line, "yaml");
        n->key_col = ag_xcalloc((size_t)count, sizeof *n->key_col, "yaml");
        n->used = ag_xcalloc((size_t)count, sizeof *n->used, "yaml");
        n->items = ag_xcalloc((size_t)count, sizeof *n->items, "yaml");
        bool merges = false;
        for (int i = 0; i < count; i++) {
            yaml_node_pair_t *pair = &yn->data.mapping.pairs.start[i];
            yaml_node_t *k = yaml_document_get_node(s->doc, pair->key);
            int kl = (int)k->start_mark.line + 1, kc = mark_col(s, &k->start_mark);
            if (k->type != YAML_SCALAR_NODE)
                ag_fail("%s:%d:%d: keys must be plain words", s->file, kl, kc);
            if (is_merge_key(k)) {
                merges = true;
                continue;
            }
            const char *key = (const char *)k->data.scalar.value;
            for (int j = 0; j < n->n; j++)
                if (!strcmp(n->keys[j], key))
                    ag_fail("%s:%d:%d: %s: key '%s' appears twice (first at line %d)", s->file, kl,
                            kc, path[0] ? path : "(top level)", key, n->key_line[j]);
            n->keys[n->n] = ag_xstrdup(key);
            n->key_file[n->n] = s->file;
            n->key_line[n->n] = kl;
            n->key_col[n->n] = kc;
            yaml_node_t *v = yaml_document_get_node(s->doc, pair->value);
            n->items[n->n] = convert(s, v, join_path(path, key), depth + 1);
            n->n++;
        }
        if (merges) merge_keys(s, yn, n, depth);
        break;
    }
    default:
        ag_fail("%s:%d:%d: empty or unsupported YAML node", s->file, line, col);
    }
    n->cli = s->cli;
    return n;
}

// libyaml's loader keeps an alias as a second reference to its anchor's node, and convert
// copies it once per reference: nine nested levels of ten aliases are a few hundred bytes that
// would expand to 10^9 nodes. This pass counts the nodes of the expanded document on libyaml's
// events (which, unlike the loaded document, still say where each alias is) and fails at the
// alias that takes it past TR_YAML_MAX_NODES, or that sits inside the node it names (a cycle).
// A syntax error is left to the loader to report.
typedef struct {
    char *name;
    int64_t size; // nodes once expanded; -1 while the anchored node is still open
    int line;
} anchor;

static void check_expansion(const source *s, const unsigned char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) ag_fail("%s: cannot initialise the YAML parser", s->file);
    yaml_parser_set_input_string(&parser, text, len);
    int64_t total = 0;
    int64_t *open = NULL; // nodes so far of each open collection, outermost first
    int *open_anchor = NULL;
    int n_open = 0, n_anchors = 0;
    int64_t open_cap = 0, anchors_cap = 0;
    anchor *anchors = NULL;
    char msg[1024] = "";
    for (bool done = false; !done && !msg[0];) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) break;
        int line = (int)ev.start_mark.line + 1, col = mark_col(s, &ev.start_mark);
        const char *name = NULL; // the anchor this event defines
        int64_t size = 0;        // nodes this event completes in the enclosing collection
        int64_t grow = 0;        // nodes it adds to the document
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
            name = (const char *)ev.data.scalar.anchor;
            size = grow = 1;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            name =
                (const char *)(ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                    : ev.data.mapping_start.anchor);
            if (n_open == open_cap) { // open picks the capacity; open_anchor follows
                open = ag_xgrow(open, &open_cap, n_open + 1, sizeof *open, "yaml");
                open_anchor =
                    ag_xrealloc(open_anchor, sizeof *open_anchor * (size_t)open_cap, "yaml");
            }
            // (convert's limit, said here: libyaml loads a deep flow collection in time
            // quadratic in its depth, a minute for 99,000 brackets)
            if (n_open > TR_YAML_MAX_DEPTH)
                snprintf(msg, sizeof msg, "%s:%d:%d: nesting too deep", s->file, line, col);
            open[n_open] = 1;
            open_anchor[n_open] = name ? n_anchors : -1;
            n_open++;
            grow = 1;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            n_open--;
            size = open[n_open];
            if (open_anchor[n_open] >= 0) anchors[open_anchor[n_open]].size = size;
            break;
        case YAML_ALIAS_EVENT: {
            const char *a = (const char *)ev.data.alias.anchor;
            int i = n_anchors - 1; // the latest anchor of that name
            while (i >= 0 && strcmp(anchors[i].name, a)) i--;
            if (i < 0) break; // undefined: the loader says so
            if (anchors[i].size < 0)
                snprintf(msg, sizeof msg,
                         "%s:%d:%d: alias *%s is inside the node it names (&%s at line %d)",
                         s->file, line, col, a, a, anchors[i].line);
            else if (total + anchors[i].size > TR_YAML_MAX_NODES)
                snprintf(msg, sizeof msg,
                         "%s:%d:%d: alias *%s takes the document past %d nodes once aliases are "
                         "expanded",
                         s->file, line, col, a, TR_YAML_MAX_NODES);
            else
                size = grow = anchors[i].size;
            break;
        }
        case YAML_DOCUMENT_END_EVENT: // the loader reads the first document only
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        if (name) {
            anchors = ag_xgrow(anchors, &anchors_cap, n_anchors + 1, sizeof *anchors, "yaml");
            // a collection's size is known at its end
            anchors[n_anchors++] = (anchor){ag_xstrdup(name), size ? size : -1, line};
        }
        total += grow;
        if (n_open && size) open[n_open - 1] += size;
        if (!msg[0] && total > TR_YAML_MAX_NODES)
            snprintf(msg, sizeof msg, "%s:%d:%d: the document has more than %d nodes", s->file,
                     line, col, TR_YAML_MAX_NODES);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    for (int i = 0; i < n_anchors; i++) free(anchors[i].name);
    free(anchors);
    free(open);
    free(open_anchor);
    if (msg[0]) ag_fail("%s", msg);
}

// The parser's error as "FILE:LINE:COL: YAML syntax: ..." (the message points into the parser:
// format it before freeing the parser).
static void syntax_message(const source *s, const yaml_parser_t *parser, char *msg, size_t n) {
    const yaml_mark_t *m = parser->problem ? &parser->problem_mark : &parser->context_mark;
    snprintf(msg, n, "%s:%zu:%d: YAML syntax: %s%s%s", s->file, m->line + 1, mark_col(s, m),
             parser->problem ? parser->problem : "error", parser->context ? " " : "",
             parser->context ? parser->context : "");
}

// Parses text into a tree named file (NULL when the text holds no document). path0: the key
// path of the root, owned by the tree.
static tr_yaml *parse(const source *src, const unsigned char *text, size_t len, char *path0) {
    source s = *src;
    check_expansion(&s, text, len);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) ag_fail("%s: cannot initialise the YAML parser", s.file);
    yaml_parser_set_input_string(&parser, text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        char msg[1024];
        syntax_message(&s, &parser, msg, sizeof msg);
        yaml_parser_delete(&parser);
        ag_fail("%s", msg);
    }
    // a second document ("---" then more keys) would be dropped without a word: a config is
    // one document (a syntax error after the first is reported too)
    yaml_document_t next;
    char msg[1024] = "";
    if (!yaml_parser_load(&parser, &next)) {
        syntax_message(&s, &parser, msg, sizeof msg);
    } else {
        const yaml_node_t *r2 = yaml_document_get_root_node(&next);
        if (r2)
            snprintf(msg, sizeof msg,
                     "%s:%zu:%d: a second YAML document; a config is one document (remove the "
                     "'---' and merge the keys)",
                     s.file, r2->start_mark.line + 1, mark_col(&s, &r2->start_mark));
        yaml_document_delete(&next);
    }
    if (msg[0]) {
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        free(path0);
        ag_fail("%s", msg);
    }
    yaml_parser_delete(&parser);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    tr_yaml *t = NULL;
    s.doc = &doc;
    if (root)
        t = convert(&s, root, path0, 0);
    else
        free(path0);
    yaml_document_delete(&doc);
    return t;
}

tr_yaml *tr_yaml_load(const char *path) {
    size_t len;
    unsigned char *text = (unsigned char *)ds_read_file_max(path, (size_t)64 << 20, &len);
    char *file = ag_xstrdup(path);
    tr_yaml *t = parse(&(source){.file = file}, text, len, ag_xstrdup(""));
    free(text);
    if (!t) {
        free(file);
        ag_fail("%s: empty config", path);
    }
    t->owned_file = file;
    if (t->kind != TR_YAML_MAP) tr_yaml_fail(t, "a config must be a mapping of keys");
    return t;
}

tr_yaml *tr_yaml_parse_text(const char *name, const char *text) {
    char *file = ag_xstrdup(name);
    tr_yaml *t =
        parse(&(source){.file = file}, (const unsigned char *)text, strlen(text), ag_xstrdup(""));
    if (!t) {
        free(file);
        ag_fail("%s: empty config", name);
    }
    t->owned_file = file;
    return t;
}

void tr_yaml_free(tr_yaml *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        tr_yaml_free(n->items[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->key_file);
    free(n->key_line);
    free(n->key_col);
    free(n->used);
    free(n->value);
    free(n->path);
    free(n->owned_file);
    free(n);
}

void tr_yaml_remove(tr_yaml *map, const char *key) {
    int i = find_key(map, key);
    if (i < 0) return;
    tr_yaml_free(map->items[i]);
    free(map->keys[i]);
    for (int j = i; j + 1 < map->n; j++) {
        map->keys[j] = map->keys[j + 1];
        map->key_file[j] = map->key_file[j + 1];
        map->key_line[j] = map->key_line[j + 1];
        map->key_col[j] = map->key_col[j + 1];
        map->used[j] = map->used[j + 1];
        map->items[j] = map->items[j + 1];
    }
    map->n--;
}

void tr_yaml_set(tr_yaml *root, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) ag_fail("--set %s: expected key.path=value", assignment);
    // the "file" of each node an override makes is the override itself, for messages; each
    // node owns its copy, as a later --set may replace it
    size_t where_len = strlen(assignment) + 7;
    char *keypath = ag_xmalloc((size_t)(eq - assignment) + 1, "--set");
    memcpy(keypath, assignment, (size_t)(eq - assignment));
    keypath[eq - assignment] = 0;
    // strtok_r would skip an empty part ("train..lr", ".lr", "lr.") without a word
    size_t kl = strlen(keypath);
    const char *dots = strstr(keypath, "..");
    if (keypath[0] == '.' || keypath[kl - 1] == '.' || dots) {
        int col = keypath[0] == '.' ? 1 : dots ? (int)(dots - keypath) + 2 : (int)kl;
        free(keypath);
        ag_fail("--set %s:1:%d: empty key in the key path", assignment, col);
    }
    tr_yaml *map = root;
    char *save = NULL;
    for (char *key = strtok_r(keypath, ".", &save); key; key = strtok_r(NULL, ".", &save)) {
        bool last = save == NULL || *save == 0;
        int key_col = (int)(key - keypath) + 1;
        if (map->kind != TR_YAML_MAP)
            ag_fail("--set %s:1:%d: %s: not a mapping, so it has no key '%s'", assignment, key_col,
                    map->path, key);
        int i = find_key(map, key);
        char *where = ag_xmalloc(where_len, "--set");
        snprintf(where, where_len, "--set %s", assignment);
        tr_yaml *v;
        if (last) {
            const char *text = eq + 1;
            v = parse(&(source){.file = where, .col0 = (int)(eq - assignment) + 1, .cli = true},
                      (const unsigned char *)text, strlen(text), join_path(map->path, key));
            if (!v) { // an empty value (no YAML document): the empty string
                v = new_node(TR_YAML_SCALAR, where, 1, (int)(eq - assignment) + 2,
                             join_path(map->path, key));
                v->value = ag_xstrdup("");
                v->cli = true;
            }
        } else if (i < 0) {
            v = new_node(TR_YAML_MAP, where, 1, key_col, join_path(map->path, key));
            v->cli = true;
        } else {
            free(where);
            map = map->items[i];
            continue;
        }
        v->owned_file = where;
        if (i >= 0) {
            // a key an earlier --set added names that argument: it now names this one
            if (map->items[i]->owned_file && map->key_file[i] == map->items[i]->owned_file) {
                map->key_file[i] = where;
                map->key_line[i] = 1;
                map->key_col[i] = key_col;
            }
            tr_yaml_free(map->items[i]);
            map->items[i] = v;
        } else {
            add_entry(map, key, v, where, 1, key_col);
        }
        map = v;
    }
    free(keypath);
}

tr_yaml *tr_yaml_get(tr_yaml *map, const char *key) {
    if (!map) return NULL;
    if (map->kind != TR_YAML_MAP) tr_yaml_fail(map, "expected a mapping");
    int i = find_key(map, key);
    if (i < 0) return NULL;
    map->used[i] = true;
    return map->items[i];
}

tr_yaml *tr_yaml_at(tr_yaml *map, const char *key) {
    tr_yaml *n = tr_yaml_get(map, key);
    return n ? n : map;
}

tr_yaml *tr_yaml_map(tr_yaml *map, const char *key) {
    tr_yaml *v = tr_yaml_get(map, key);
    if (v && v->kind != TR_YAML_MAP) tr_yaml_fail(v, "expected a mapping of keys");
    return v;
}

static const tr_yaml *scalar(tr_yaml *map, const char *key) {
    tr_yaml *v = tr_yaml_get(map, key);
    if (v && v->kind != TR_YAML_SCALAR) tr_yaml_fail(v, "expected a single value");
    return v;
}

// A key the config left out gets its default written into the tree, marked `defaulted` and at
// the mapping's position, so that the resolved config printed and stored with checkpoints
// shows every value the run used: a node of kind added to map under key.
static tr_yaml *add_default(tr_yaml *map, const char *key, tr_yaml_kind kind) {
    tr_yaml *v = new_node(kind, map->file, map->line, map->col, join_path(map->path, key));
    v->cli = map->cli;
    v->defaulted = true;
    add_entry(map, key, v, map->file, map->line, map->col);
    map->used[map->n - 1] = true;
    return v;
}

// A scalar default (no map: the section is absent and means "off").
static void put_default(tr_yaml *map, const char *key, const char *text) {
    if (!map || map->kind != TR_YAML_MAP || find_key(map, key) >= 0) return;
    add_default(map, key, TR_YAML_SCALAR)->value = ag_xstrdup(text);
}

// The shortest text that reads back as x.
static void format_num(char *buf, size_t n, double x) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) return;
    }
}

tr_yaml *tr_yaml_section(tr_yaml *map, const char *key) {
    tr_yaml *v = tr_yaml_map(map, key);
    return v || !map ? v : add_default(map, key, TR_YAML_MAP);
}

int64_t tr_yaml_int(tr_yaml *map, const char *key, int64_t def, int64_t lo, int64_t hi) {
    const tr_yaml *v = scalar(map, key);
    if (!v) {
        // a default outside the range is a "not given" mark for the caller, not a value
        if (def >= lo && def <= hi) {
            char text[32];
            snprintf(text, sizeof text, "%lld", (long long)def);
            put_default(map, key, text);
        }
        return def;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v->value, &end, 10);
    if (errno || end == v->value || *end) {
        // accept integral floats written as 1e3
        double d = strtod(v->value, &end);
        if (end == v->value || *end || d != floor(d) || fabs(d) > 9e15)
            tr_yaml_fail(v, "expected an integer, got '%s'", v->value);
        x = (long long)d;
    }
    if (x < lo || x > hi)
        tr_yaml_fail(v, "%lld is outside [%lld, %lld]", x, (long long)lo, (long long)hi);
    return x;
}

double tr_yaml_num(tr_yaml *map, const char *key, double def, double lo, double hi) {
    const tr_yaml *v = scalar(map, key);
    if (!v) {
        if (isfinite(def) && def >= lo && def <= hi) {
            char text[40];
            format_num(text, sizeof text, def);
            put_default(map, key, text);
        }
        return def;
    }
    char *end;
    errno = 0;
    double x = strtod(v->value, &end);
    if (errno || end == v->value || *end || !isfinite(x))
        tr_yaml_fail(v, "expected a number, got '%s'", v->value);
    if (x < lo || x > hi) tr_yaml_fail(v, "%.10g is outside [%.10g, %.10g]", x, lo, hi);
    return x;
}

bool tr_yaml_bool(tr_yaml *map, const char *key, bool def) {
    const tr_yaml *v = scalar(map, key);
    if (!v) {
        put_default(map, key, def ? "true" : "false");
        return def;
    }
    // YAML 1.2's core schema (true, True, TRUE) and YAML 1.1's words (yes, on, ...), each in
    // its three spellings; y / n and the like stay errors
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcmp(v->value, yes[i])) return true;
        if (!strcmp(v->value, no[i])) return false;
    }
    tr_yaml_fail(v, "expected true or false, got '%s'", v->value);
}

const char *tr_yaml_str(tr_yaml *map, const char *key, const char *def,
                        const char *const *allowed) {
    const tr_yaml *v = scalar(map, key);
    if (!v) {
        if (def) put_default(map, key, def);
        return def;
    }
    if (!allowed) return v->value;
    char list[512] = "";
    for (const char *const *a = allowed; *a; a++) {
        if (!strcmp(*a, v->value)) return v->value;
        strncat(list, a == allowed ? "" : ", ", sizeof list - strlen(list) - 1);
        strncat(list, *a, sizeof list - strlen(list) - 1);
    }
    tr_yaml_fail(v, "'%s' is not one of: %s", v->value, list);
}

void tr_yaml_check_used(const tr_yaml *map) {
    if (!map || map->kind == TR_YAML_SCALAR) return;
    if (map->kind == TR_YAML_SEQ) { // list items: {path, weight} entries have keys too
        for (int i = 0; i < map->n; i++) tr_yaml_check_used(map->items[i]);
        return;
    }
    for (int i = 0; i < map->n; i++) {
        if (!map->used[i])
            ag_fail("%s:%d:%d: unknown key '%s'%s%s", map->key_file[i], map->key_line[i],
                    map->key_col[i], map->keys[i], map->path[0] ? " in " : "", map->path);
        tr_yaml_check_used(map->items[i]);
    }
}

// libyaml's emitter writes the text, so that any value (a path with ': ' or ' #' in it, a
// multi-line string) is quoted as it must be and reads back the same.
static int emit_to_string(void *data, unsigned char *buf, size_t size) {
    FILE *mem = data;
    return fwrite(buf, 1, size, mem) == size;
}

static void emit(yaml_emitter_t *e, yaml_event_t *ev) {
    if (!yaml_emitter_emit(e, ev))
        ag_fail("config: writing the resolved config: %s",
                e->problem ? e->problem : "libyaml's emitter failed");
}

static void emit_scalar(yaml_emitter_t *e, const char *text) {
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1,
                                      YAML_ANY_SCALAR_STYLE))
        ag_fail("config: writing the resolved config: out of memory");
    emit(e, &ev);
}

static void emit_node(yaml_emitter_t *e, const tr_yaml *n) {
    yaml_event_t ev;
    if (n->kind == TR_YAML_SCALAR) {
        emit_scalar(e, n->value);
        return;
    }
    int ok =
        n->kind == TR_YAML_MAP
            ? yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)
            : yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
    if (!ok) ag_fail("config: writing the resolved config: out of memory");
    emit(e, &ev);
    for (int i = 0; i < n->n; i++) {
        if (n->kind == TR_YAML_MAP) emit_scalar(e, n->keys[i]);
        emit_node(e, n->items[i]);
    }
    if (n->kind == TR_YAML_MAP)
        yaml_mapping_end_event_initialize(&ev);
    else
        yaml_sequence_end_event_initialize(&ev);
    emit(e, &ev);
}

char *tr_yaml_dump(const tr_yaml *node, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    if (!mem) ag_fail("config: open_memstream failed: %s", strerror(errno));
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) ag_fail("config: cannot initialise the YAML emitter");
    yaml_emitter_set_output(&e, emit_to_string, mem);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1); // long paths stay on their line
    yaml_event_t ev;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    emit(&e, &ev);
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    emit(&e, &ev);
    emit_node(&e, node);
    yaml_document_end_event_initialize(&ev, 1);
    emit(&e, &ev);
    yaml_stream_end_event_initialize(&ev);
    emit(&e, &ev);
    yaml_emitter_delete(&e);
    if (fclose(mem)) ag_fail("config: formatting the resolved config failed");
    if (len) *len = n;
    return text;
}

void tr_yaml_print(const tr_yaml *node, FILE *out, int indent) {
    char *text = tr_yaml_dump(node, NULL);
    for (char *line = text, *next; *line; line = next) {
        next = strchr(line, '\n');
        next = next ? next + 1 : line + strlen(line);
        fprintf(out, "%*s%.*s", indent, "", (int)(next - line), line);
    }
    free(text);
}

// A node in a few words for tr_yaml_diff: its scalar, or what kind of node it is.
static const char *diff_text(const tr_yaml *v) {
    return !v                          ? "(absent)"
           : v->kind == TR_YAML_SCALAR ? v->value
           : v->kind == TR_YAML_MAP    ? "(a mapping)"
                                       : "(a list)";
}

typedef struct {
    bool (*skip)(const char *path);
    char *out;
    size_t n, len;
    int count;
} yaml_diff;

static void diff_add(yaml_diff *d, const char *path, const tr_yaml *a, const tr_yaml *b) {
    if (d->skip && d->skip(path)) return;
    d->count++;
    if (d->len + 4 >= d->n) return;
    int k = snprintf(d->out + d->len, d->n - d->len, "%s%s %s -> %s", d->len ? "; " : "", path,
                     diff_text(a), diff_text(b));
    d->len = k < 0 || (size_t)k >= d->n - d->len ? d->n - 1 : d->len + (size_t)k;
}

// Two scalars mean the same: the same text, or the same number written two ways (1e-5 and
// 0.00001).
static bool same_scalar(const char *a, const char *b) {
    if (!strcmp(a, b)) return true;
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    return ea != a && eb != b && !*ea && !*eb && x == y;
}

static void diff_nodes(yaml_diff *d, const char *path, const tr_yaml *a, const tr_yaml *b) {
    if (d->skip && d->skip(path)) return;
    // a default this run filled in is what the other tree meant by leaving the key out
    if ((!a && b && b->defaulted) || (!b && a && a->defaulted)) return;
    if (!a || !b || a->kind != b->kind) {
        diff_add(d, path, a, b);
        return;
    }
    char sub[512];
    if (a->kind == TR_YAML_SCALAR) {
        if (!same_scalar(a->value, b->value)) diff_add(d, path, a, b);
    } else if (a->kind == TR_YAML_SEQ) {
        if (a->n != b->n) {
            char na[32], nb[32];
            snprintf(na, sizeof na, "(%d items)", a->n);
            snprintf(nb, sizeof nb, "(%d items)", b->n);
            tr_yaml ta = {.kind = TR_YAML_SCALAR, .value = na}, tb = ta;
            tb.value = nb;
            diff_add(d, path, &ta, &tb);
            return;
        }
        for (int i = 0; i < a->n; i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            diff_nodes(d, sub, a->items[i], b->items[i]);
        }
    } else {
        for (int i = 0; i < a->n; i++) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", a->keys[i]);
            const tr_yaml *other = NULL;
            for (int j = 0; j < b->n && !other; j++)
                if (!strcmp(a->keys[i], b->keys[j])) other = b->items[j];
            diff_nodes(d, sub, a->items[i], other);
        }
        for (int j = 0; j < b->n; j++) {
            bool in_a = false;
            for (int i = 0; i < a->n && !in_a; i++) in_a = !strcmp(a->keys[i], b->keys[j]);
            if (in_a) continue;
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", b->keys[j]);
            diff_nodes(d, sub, NULL, b->items[j]); // (a filled-in default is no difference)
        }
    }
}

int tr_yaml_diff(const tr_yaml *a, const tr_yaml *b, bool (*skip)(const char *path), char *out,
                 size_t n) {
    yaml_diff d = {.skip = skip, .out = out, .n = n};
    if (n) out[0] = 0;
    diff_nodes(&d, "", a, b);
    return d.count;
}
