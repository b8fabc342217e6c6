// ckpt_path.h: the paths `groundc eval`, `generate` and `export` take, checked before any model
// work: the checkpoint (a run folder stands for its latest checkpoint, as `inspect` reads it)
// and the files written only at the end (a report, logits), so that a bad path fails at once
// and not after the whole evaluation.
#pragma once
#include <stdio.h>

// The checkpoint folder that path names, allocated: path itself when it holds config.yaml or
// state.json (a checkpoint; OUT/latest too); for a run folder (checkpoint.out: a `latest` link
// or step_N folders) the checkpoint `latest` names, else the newest step_N, said in one line
// on log (NULL: not said). Anything else fails in one line naming cmd and path.
char *tr_ckpt_resolve(const char *path, const char *cmd, FILE *log);

// Fails in one line naming cmd, opt and path unless ds_write_file_atomic can write path at the
// end: path is not a folder, its folder exists, and a file can be created there (tried with
// the temporary name the writer uses, then removed: write permission alone misses read-only
// mounts, /proc and the like).
void tr_check_output_file(const char *cmd, const char *opt, const char *path);

// Fails in one line naming cmd, opt and shown unless `mkdir -p path` can work (ds_make_dirs):
// the nearest existing folder above path takes a new folder (tried, then removed). path
// itself must not exist (a temporary name).
void tr_check_output_dir(const char *cmd, const char *opt, const char *shown, const char *path);
