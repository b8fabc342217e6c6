// files.h: folder helpers shared by the data tools (pack, synth) and training (checkpoints,
// exports).
#pragma once

// mkdir -p: creates path and its missing parents. Fails naming the folder that cannot be made,
// or path when it exists but is not a folder.
void ds_make_dirs(const char *path);
