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

static tr_yaml *convert(yaml_document_t *doc, yaml_node_t *yn, const char *file, char *path,
                        int depth) {
    int line = (int)yn->start_mark.line + 1, col = (int)yn->start_mark.column + 1;
    if (depth > 64) ag_fail("%s:%d:%d: nesting too deep", file, line, col);
    switch (yn->type) {
    case YAML_SCALAR_NODE: {
        tr_yaml *n = new_node(TR_YAML_SCALAR, file, line, col, path);
        n->value = ag_xstrdup((const char *)yn->data.scalar.value);
        return n;
    }
    case YAML_SEQUENCE_NODE: {
        tr_yaml *n = new_node(TR_YAML_SEQ, file, line, col, path);
        int count = (int)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        n->items = ag_xcalloc((size_t)count, sizeof *n->items, "yaml");
        for (int i = 0; i < count; i++) {
            char idx[32];
            snprintf(idx, sizeof idx, "[%d]", i);
            char *p = ag_xmalloc(strlen(path) + sizeof idx, "yaml path");
            sprintf(p, "%s%s", path, idx);
            yaml_node_t *child = yaml_document_get_node(doc, yn->data.sequence.items.start[i]);
            n->items[n->n++] = convert(doc, child, file, p, depth + 1);
        }
        return n;
    }
    case YAML_MAPPING_NODE: {
        tr_yaml *n = new_node(TR_YAML_MAP, file, line, col, path);
        int count = (int)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        n->keys = ag_xcalloc((size_t)count, sizeof *n->keys, "yaml");
        n->key_line = ag_xcalloc((size_t)count, sizeof *n->key_line, "yaml");
        n->key_col = ag_xcalloc((size_t)count, sizeof *n->key_col, "yaml");
        n->used = ag_xcalloc((size_t)count, sizeof *n->used, "yaml");
        n->items = ag_xcalloc((size_t)count, sizeof *n->items, "yaml");
        for (int i = 0; i < count; i++) {
            yaml_node_pair_t *pair = &yn->data.mapping.pairs.start[i];
            yaml_node_t *k = yaml_document_get_node(doc, pair->key);
            int kl = (int)k->start_mark.line + 1, kc = (int)k->start_mark.column + 1;
            if (k->type != YAML_SCALAR_NODE)
                ag_fail("%s:%d:%d: keys must be plain words", file, kl, kc);
            const char *key = (const char *)k->data.scalar.value;
            for (int j = 0; j < n->n; j++)
                if (!strcmp(n->keys[j], key))
                    ag_fail("%s:%d:%d: %s: key '%s' appears twice (first at line %d)", file, kl, kc,
                            path[0] ? path : "(top level)", key, n->key_line[j]);
            n->keys[n->n] = ag_xstrdup(key);
            n->key_line[n->n] = kl;
            n->key_col[n->n] = kc;
            yaml_node_t *v = yaml_document_get_node(doc, pair->value);
            n->items[n->n] = convert(doc, v, file, join_path(path, key), depth + 1);
            n->n++;
        }
        return n;
    }
    default:
        ag_fail("%s:%d:%d: empty or unsupported YAML node", file, line, col);
    }
}

tr_yaml *tr_yaml_load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) ag_fail("%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        ag_fail("%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        // the message points into the parser: format it, then free parser and file
        const yaml_mark_t *m = parser.problem ? &parser.problem_mark : &parser.context_mark;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s:%zu:%zu: YAML syntax: %s%s%s", path, m->line + 1,
                 m->column + 1, parser.problem ? parser.problem : "error",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(f);
        ag_fail("%s", msg);
    }
    fclose(f);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) ag_fail("%s: empty config", path);
    char *file = ag_xstrdup(path);
    tr_yaml *t = convert(&doc, root, file, ag_xstrdup(""), 0);
    t->owned_file = file;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (t->kind != TR_YAML_MAP) tr_yaml_fail(t, "a config must be a mapping of keys");
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
    free(n->key_line);
    free(n->key_col);
    free(n->used);
    free(n->value);
    free(n->path);
    free(n->owned_file);
    free(n);
}

static int find_key(const tr_yaml *map, const char *key) {
    for (int i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i], key)) return i;
    return -1;
}

static void add_entry(tr_yaml *map, const char *key, tr_yaml *value) {
    int n = map->n + 1;
    map->keys = ag_xrealloc(map->keys, sizeof *map->keys * (size_t)n, "yaml");
    map->key_line = ag_xrealloc(map->key_line, sizeof *map->key_line * (size_t)n, "yaml");
    map->key_col = ag_xrealloc(map->key_col, sizeof *map->key_col * (size_t)n, "yaml");
    map->used = ag_xrealloc(map->used, sizeof *map->used * (size_t)n, "yaml");
    map->items = ag_xrealloc(map->items, sizeof *map->items * (size_t)n, "yaml");
    map->keys[map->n] = ag_xstrdup(key);
    map->key_line[map->n] = value->line;
    map->key_col[map->n] = value->col;
    map->used[map->n] = false;
    map->items[map->n] = value;
    map->n = n;
}

void tr_yaml_set(tr_yaml *root, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) ag_fail("--set %s: expected key.path=value", assignment);
    char *keypath = ag_xmalloc((size_t)(eq - assignment) + 1, "--set");
    memcpy(keypath, assignment, (size_t)(eq - assignment));
    keypath[eq - assignment] = 0;
    tr_yaml *map = root;
    char *save = NULL;
    for (char *key = strtok_r(keypath, ".", &save); key; key = strtok_r(NULL, ".", &save)) {
        bool last = save == NULL || *save == 0;
        if (map->kind != TR_YAML_MAP)
            ag_fail("--set %s: '%s' is not a mapping", assignment, map->path);
        int i = find_key(map, key);
        if (last) {
            // the "file" of an override is the override itself, for messages
            char *where = ag_xmalloc(strlen(assignment) + 7, "--set");
            sprintf(where, "--set %s", assignment);
            tr_yaml *v = new_node(TR_YAML_SCALAR, where, 1, (int)(eq - assignment) + 2,
                                  join_path(map->path, key));
            v->owned_file = where;
            v->value = ag_xstrdup(eq + 1);
            if (i >= 0) {
                tr_yaml_free(map->items[i]);
                map->items[i] = v;
            } else {
                add_entry(map, key, v);
            }
        } else {
            if (i < 0) {
                tr_yaml *m = new_node(TR_YAML_MAP, "--set", 1, 1, join_path(map->path, key));
                add_entry(map, key, m);
                i = map->n - 1;
            }
            map = map->items[i];
        }
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

int64_t tr_yaml_int(tr_yaml *map, const char *key, int64_t def, int64_t lo, int64_t hi) {
    const tr_yaml *v = scalar(map, key);
    if (!v) return def;
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
    if (!v) return def;
    char *end;
    errno = 0;
    double x = strtod(v->value, &end);
    if (errno || end == v->value || *end || !isfinite(x))
        tr_yaml_fail(v, "expected a number, got '%s'", v->value);
    if (x < lo || x > hi) tr_yaml_fail(v, "%g is outside [%g, %g]", x, lo, hi);
    return x;
}

bool tr_yaml_bool(tr_yaml *map, const char *key, bool def) {
    const tr_yaml *v = scalar(map, key);
    if (!v) return def;
    if (!strcmp(v->value, "true") || !strcmp(v->value, "yes")) return true;
    if (!strcmp(v->value, "false") || !strcmp(v->value, "no")) return false;
    tr_yaml_fail(v, "expected true or false, got '%s'", v->value);
}

const char *tr_yaml_str(tr_yaml *map, const char *key, const char *def,
                        const char *const *allowed) {
    const tr_yaml *v = scalar(map, key);
    if (!v) return def;
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
    if (!map || map->kind != TR_YAML_MAP) return;
    for (int i = 0; i < map->n; i++) {
        if (!map->used[i])
            ag_fail("%s:%d:%d: unknown key '%s'%s%s", map->file, map->key_line[i], map->key_col[i],
                    map->keys[i], map->path[0] ? " in " : "", map->path);
        tr_yaml_check_used(map->items[i]);
    }
}

void tr_yaml_print(const tr_yaml *n, FILE *out, int indent) {
    for (int i = 0; i < n->n; i++) {
        const tr_yaml *v = n->items[i];
        if (n->kind == TR_YAML_MAP)
            fprintf(out, "%*s%s:", indent, "", n->keys[i]);
        else
            fprintf(out, "%*s-", indent, "");
        if (v->kind == TR_YAML_SCALAR)
            fprintf(out, " %s\n", v->value);
        else {
            fputc('\n', out);
            tr_yaml_print(v, out, indent + 2);
        }
    }
}

char *tr_yaml_dump(const tr_yaml *node, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&text, &n);
    if (!mem) ag_fail("config: open_memstream failed: %s", strerror(errno));
    tr_yaml_print(node, mem, 0);
    if (fclose(mem)) ag_fail("config: formatting the resolved config failed");
    if (len) *len = n;
    return text;
}
