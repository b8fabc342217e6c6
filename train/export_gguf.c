// export_gguf.c: model.gguf and mmproj.gguf for llama.cpp (see export.h). Not written yet.
#include "autograd/error.h"
#include "train/export.h"

void tr_export_gguf(const tr_export_job *job, const char *dir) {
    (void)job;
    (void)dir;
    ag_fail("export: --format gguf is not implemented yet");
}
