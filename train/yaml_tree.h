// yaml_tree.h: YAML config files read through libyaml into a small tree with positions, and
// typed, range-checked lookups. Every error is one line "file:line:column: key.path: what".
// Each mapping remembers which keys were read, so unknown keys can be reported.
// Aliases are expanded and merge keys (<<: *base) applied; a document of more than
// TR_YAML_MAX_NODES nodes once expanded (an alias bomb) fails at the alias that crosses the
// limit.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define TR_YAML_MAX_NODES 100000
// Collections nested deeper than this below the root fail ("nesting too deep").
#define TR_YAML_MAX_DEPTH 64

typedef enum { TR_YAML_SCALAR, TR_YAML_MAP, TR_YAML_SEQ } tr_yaml_kind;

typedef struct tr_yaml {
    tr_yaml_kind kind;
    const char *file; // the config file, or "--set a.b=v" for what the command line gave
    char *owned_file; // the node that allocated file frees it
    // Given on the command line (--set): a relative path in it is relative to the working
    // directory, not to a config file's folder (tr_config_path).
    bool cli;
    int line, col;         // 1-based
    char *path;            // dotted key path from the root, for messages
    char *value;           // scalars
    int n;                 // map entries or sequence items
    char **keys;           // maps
    const char **key_file; // where each key was written: file, or a --set argument
    int *key_line, *key_col;
    bool *used;     // maps: key looked up
    bool defaulted; // not in the config: a lookup's default, written in (see tr_yaml_int)
    struct tr_yaml **items;
} tr_yaml;

// Parses path; a syntax error names file:line:column; a folder or an unreadable file names
// the path and why.
tr_yaml *tr_yaml_load(const char *path);
// Parses text (a config held in memory), its errors naming name.
tr_yaml *tr_yaml_parse_text(const char *name, const char *text);
void tr_yaml_free(tr_yaml *node);

// Applies "a.b.c=value": replaces or adds the value at that key path (maps are created). The
// value is YAML, as it would be written in the file: a scalar, or a flow list or mapping such
// as 'data.datasets=[dir1, {path: dir2, weight: 2}]'. Its nodes are marked cli and name the
// argument ("--set a.b.c=value:1:COLUMN") in errors; a relative path in it is relative to the
// working directory.
void tr_yaml_set(tr_yaml *root, const char *assignment);
// Removes key from map (no-op when absent).
void tr_yaml_remove(tr_yaml *map, const char *key);

// Lookups in a mapping. A missing key returns NULL / the default. Type or range errors fail.
// The typed lookups below write a missing key's default into the map (marked defaulted), unless
// the default lies outside [lo, hi] (a caller's "not given" mark) or is NULL.
tr_yaml *tr_yaml_get(tr_yaml *map, const char *key);
// Where to point an error about key: its node, or the map itself when the key is absent
// (its default value was used).
tr_yaml *tr_yaml_at(tr_yaml *map, const char *key);
tr_yaml *tr_yaml_map(tr_yaml *map, const char *key); // must be a mapping if present
// A section whose keys all have defaults: the mapping, added empty when absent so that the
// defaults its lookups fill in show in the resolved config. NULL only when map is NULL.
tr_yaml *tr_yaml_section(tr_yaml *map, const char *key);
int64_t tr_yaml_int(tr_yaml *map, const char *key, int64_t def, int64_t lo, int64_t hi);
double tr_yaml_num(tr_yaml *map, const char *key, double def, double lo, double hi);
bool tr_yaml_bool(tr_yaml *map, const char *key, bool def);
// The string value, or def; allowed (NULL-terminated) restricts the values if non-NULL.
const char *tr_yaml_str(tr_yaml *map, const char *key, const char *def, const char *const *allowed);
// Fails on the first key of map (recursively, into the mappings inside lists too) that no
// lookup asked for.
void tr_yaml_check_used(const tr_yaml *map);
// Fails with the node's position: "file:line:col: path: message".
__attribute__((noreturn, format(printf, 2, 3))) void tr_yaml_fail(const tr_yaml *node,
                                                                  const char *fmt, ...);
// Writes the tree as YAML through libyaml's emitter (the resolved config stored with runs and
// checkpoints), each line indented by indent spaces.
void tr_yaml_print(const tr_yaml *node, FILE *out, int indent);
// The same text in a malloc'd string (*len, may be NULL, gets its length).
char *tr_yaml_dump(const tr_yaml *node, size_t *len);
// Where two trees differ, as "key.path A -> B" items joined by "; " into out (n bytes; cut
// short when full; a key one tree lacks is "(absent)"); skip (may be NULL) leaves a key path
// and everything under it out. A key one tree lacks and the other has as a filled-in default is
// no difference; numbers compare by value. Returns the number of differences.
int tr_yaml_diff(const tr_yaml *a, const tr_yaml *b, bool (*skip)(const char *path), char *out,
                 size_t n);
