// yaml_tree.h: YAML config files read through libyaml into a small tree with positions, and
// typed, range-checked lookups. Every error is one line "file:line:column: key.path: what".
// Each mapping remembers which keys were read, so unknown keys can be reported.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { TR_YAML_SCALAR, TR_YAML_MAP, TR_YAML_SEQ } tr_yaml_kind;

typedef struct tr_yaml {
    tr_yaml_kind kind;
    const char *file;
    char *owned_file; // the node that allocated file frees it
    int line, col;    // 1-based
    char *path;       // dotted key path from the root, for messages
    char *value;      // scalars
    int n;            // map entries or sequence items
    char **keys;      // maps
    int *key_line, *key_col;
    bool *used; // maps: key looked up
    struct tr_yaml **items;
} tr_yaml;

// Parses path; a syntax error names file:line:column.
tr_yaml *tr_yaml_load(const char *path);
void tr_yaml_free(tr_yaml *node);

// Applies "a.b.c=value": replaces or adds the scalar at that key path (maps are created).
void tr_yaml_set(tr_yaml *root, const char *assignment);

// Lookups in a mapping. A missing key returns NULL / the default. Type or range errors fail.
tr_yaml *tr_yaml_get(tr_yaml *map, const char *key);
// Where to point an error about key: its node, or the map itself when the key is absent
// (its default value was used).
tr_yaml *tr_yaml_at(tr_yaml *map, const char *key);
tr_yaml *tr_yaml_map(tr_yaml *map, const char *key); // must be a mapping if present
int64_t tr_yaml_int(tr_yaml *map, const char *key, int64_t def, int64_t lo, int64_t hi);
double tr_yaml_num(tr_yaml *map, const char *key, double def, double lo, double hi);
bool tr_yaml_bool(tr_yaml *map, const char *key, bool def);
// The string value, or def; allowed (NULL-terminated) restricts the values if non-NULL.
const char *tr_yaml_str(tr_yaml *map, const char *key, const char *def, const char *const *allowed);
// Fails on the first key of map (recursively) that no lookup asked for.
void tr_yaml_check_used(const tr_yaml *map);
// Fails with the node's position: "file:line:col: path: message".
__attribute__((noreturn, format(printf, 2, 3))) void tr_yaml_fail(const tr_yaml *node,
                                                                  const char *fmt, ...);
// Writes the tree as YAML (the resolved config stored with runs and checkpoints).
void tr_yaml_print(const tr_yaml *node, FILE *out, int indent);
// The same text in a malloc'd string (*len, may be NULL, gets its length).
char *tr_yaml_dump(const tr_yaml *node, size_t *len);
