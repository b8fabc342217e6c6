// generate.c: the generate command (see generate.h). Not written yet.
#include "train/generate.h"

#include "autograd/error.h"

int tr_generate_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    ag_fail("generate: not implemented yet");
}
