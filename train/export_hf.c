// export_hf.c: the LLaVA folder for transformers (see export.h). Not written yet.
#include "autograd/error.h"
#include "train/export.h"

void tr_export_hf(const tr_export_job *job, const char *dir) {
    (void)job;
    (void)dir;
    ag_fail("export: --format hf is not implemented yet");
}
