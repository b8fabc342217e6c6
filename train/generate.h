// generate.h: `groundc generate CKPT_DIR [--image F] [--video F] [--audio F] --prompt TEXT
// [...]`: answers a prompt about media with the trained model.
#pragma once

// The command; returns the exit code.
int tr_generate_main(int argc, char **argv);
