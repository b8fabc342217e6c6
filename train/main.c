// main.c: the groundc command: `groundc <command> [arguments]`.
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/error.h"
#include "data/pack.h"
#include "data/synth.h"
#include "train/checked_output.h"
#include "train/curriculum.h"
#include "train/dist.h"
#include "train/eval.h"
#include "train/export.h"
#include "train/generate.h"
#include "train/inspect.h"

#define GROUNDC_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "groundc %s: train multimodal grounding models\n\n"
            "usage:\n"
            "  groundc synth --out DIR [--images N --videos N --audios N --seed S\n"
            "                [--eval-fraction F --max-shapes K]]\n"
            "  groundc pack --json FILE[,FILE] --media-root DIR --tokenizer FILE --out DIR\n"
            "               [--shard-samples N --threads N --on-error skip|fail ...]\n"
            "  groundc pack --grounding-jsonl FILE[,FILE] ... (groundc pack --help: all options)\n"
            "  groundc train CONFIG.yaml [--resume auto|CKPT_DIR] [--set key.path=value ...] "
            "[--dry-run | --config-only]\n"
            "        (stage, curriculum or copy-task config; mpirun -np N for N ranks)\n"
            "  groundc eval CKPT_DIR --data DIR [--task rec|tvg|sound|caption --report F.json\n"
            "               --tokenizer FILE --limit N (per task) --max-new-tokens N --verbose]\n"
            "  groundc generate CKPT_DIR [--image F --video F --audio F] --prompt TEXT\n"
            "               [--max-new-tokens N --temperature T --top-p P --seed S --raw\n"
            "                --tokenizer F --logits-out F.npy]\n"
            "  groundc export CKPT_DIR --format hf|gguf --out DIR [--dtype f32|f16|bf16|q8_0]\n"
            "               [--tokenizer FILE --force]\n"
            "  groundc inspect PATH [--batch B --seq T --ranks N --checksums]\n"
            "               (model or training config, checkpoint or run folder, dataset folder\n"
            "                or shard, weights .safetensors / .pth / .bin or HF folder, GGUF)\n"
            "  groundc --version | --help\n",
            GROUNDC_VERSION);
}

static void synth_usage(void) {
    printf("usage: groundc synth --out DIR [--images N --videos N --audios N --seed S\n"
           "                     --eval-fraction F --max-shapes K]\n\n"
           "  --out DIR             folder for the synthetic dataset (train.json, eval.json,\n"
           "                        media/)\n"
           "  --images N, --videos N, --audios N\n"
           "                        samples of each kind (default 600, 200, 200)\n"
           "  --seed S              random seed (default 1)\n"
           "  --eval-fraction F     share of each kind held out for eval.json, in [0, 1)\n"
           "                        (default 0.15)\n"
           "  --max-shapes K        most shapes per image, 1 to 8 (default 2)\n");
}

static void inspect_usage(void) {
    printf("usage: groundc inspect PATH [--batch B --seq T --ranks N --names --checksums]\n\n"
           "  PATH                  model or training config, checkpoint or run folder, dataset\n"
           "                        folder or shard, weights .safetensors / .pth / .bin or HF\n"
           "                        folder, GGUF\n"
           "  --batch B, --seq T    micro-batch and sequence length of the memory estimate\n"
           "                        (default: a stage config's micro_batch and max_len; 1 and\n"
           "                        min(2048, max_seq) for a model)\n"
           "  --ranks N             ranks sharing the AdamW state of a train.zero1 config\n"
           "                        (default: a checkpoint's world, else 1)\n"
           "  --names               also list every parameter of a model or training config\n"
           "                        with its shape (and, for a stage config, whether it trains):\n"
           "                        the names trainable / frozen patterns match\n"
           "  --checksums           also check a dataset's shards against their SHA-256\n");
}

static int cmd_synth(int argc, char **argv) {
    ds_synth_config c = ds_synth_defaults();
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            synth_usage();
            return 0;
        }
        if (i + 1 >= argc) ag_fail("synth: option %s needs a value", opt);
        const char *v = argv[++i];
        if (!strcmp(opt, "--out"))
            c.out_dir = v;
        else if (!strcmp(opt, "--images"))
            c.images = ag_parse_int(opt, v, 0, 100000000);
        else if (!strcmp(opt, "--videos"))
            c.videos = ag_parse_int(opt, v, 0, 100000000);
        else if (!strcmp(opt, "--audios"))
            c.audios = ag_parse_int(opt, v, 0, 100000000);
        else if (!strcmp(opt, "--seed"))
            c.seed = (uint64_t)ag_parse_int(opt, v, 0, INT64_MAX);
        else if (!strcmp(opt, "--max-shapes"))
            c.max_shapes = (int)ag_parse_int(opt, v, 1, 8);
        else if (!strcmp(opt, "--eval-fraction")) {
            char *end;
            c.eval_fraction = strtod(v, &end);
            if (end == v || *end || !(c.eval_fraction >= 0 && c.eval_fraction < 1))
                ag_fail("%s: expected a number in [0, 1), got '%s'", opt, v);
        } else
            ag_fail("synth: unknown option '%s'", opt);
    }
    if (!c.out_dir) ag_fail("synth: --out DIR is required");
    ds_synth(&c);
    return 0;
}

static tr_dist g_dist;

// Under MPI an error on one rank must bring the job down, not leave the others waiting in a
// collective: print the one line (naming the rank), then abort every rank. A rank other than
// 0 waits two seconds first: an error every rank meets (a bad config value) is then said once,
// by rank 0, whose abort ends the others before they speak.
static void dist_error(const char *msg) {
    if (g_dist.rank != 0) nanosleep(&(struct timespec){.tv_sec = 2}, NULL);
    fprintf(stderr, "groundc: error: [rank %d] %s\n", g_dist.rank, msg);
    tr_dist_abort(&g_dist, 1);
}

static int cmd_train(int argc, char **argv) {
    g_dist = tr_dist_init(&argc, &argv);
    if (g_dist.world > 1) ag_set_error_handler(dist_error);
    int rc = tr_train_main(argc - 2, argv + 2, &g_dist);
    tr_dist_finalize(&g_dist);
    return rc;
}

static int cmd_eval(int argc, char **argv) {
    g_dist = tr_dist_init(&argc, &argv);
    if (g_dist.world > 1) ag_set_error_handler(dist_error);
    int rc = tr_eval_main(argc - 2, argv + 2, &g_dist);
    tr_dist_finalize(&g_dist);
    return rc;
}

static int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    tr_inspect_opts o = {0};
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            inspect_usage();
            return 0;
        }
        if (!strcmp(opt, "--checksums")) {
            o.checksums = true;
        } else if (!strcmp(opt, "--names")) {
            o.names = true;
        } else if (!strcmp(opt, "--batch") || !strcmp(opt, "--seq")) {
            if (i + 1 >= argc) ag_fail("inspect: option %s needs a value", opt);
            long long v = ag_parse_int(opt, argv[++i], 1, 1LL << 40);
            *(opt[2] == 'b' ? &o.batch : &o.seq) = v;
        } else if (!strcmp(opt, "--ranks")) {
            if (i + 1 >= argc) ag_fail("inspect: option %s needs a value", opt);
            o.ranks = (int)ag_parse_int(opt, argv[++i], 1, 1 << 20);
        } else if (!strncmp(opt, "--", 2)) {
            ag_fail("inspect: unknown option '%s'", opt);
        } else if (!path) {
            path = opt;
        } else {
            ag_fail("inspect: more than one path given ('%s' and '%s')", path, opt);
        }
    }
    if (!path) ag_fail("inspect: nothing to inspect given (groundc inspect PATH)");
    return tr_inspect(path, &o, stdout);
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("groundc %s\n", GROUNDC_VERSION);
        return 0;
    }
    // Under mpirun the one-process commands run on rank 0 alone (N copies of an export would
    // race for its folder, and a generate would print its answer N times).
    static const char *const single[] = {"synth", "pack", "generate", "export", "inspect"};
    bool one_process = false;
    for (size_t i = 0; i < sizeof single / sizeof *single; i++)
        one_process = one_process || !strcmp(cmd, single[i]);
    int world, rank = tr_dist_launch_rank(&world);
    if (one_process && world > 1) {
        if (rank != 0) return 0;
        fprintf(stderr,
                "groundc %s: note: runs as one process; the other %d of this mpirun do nothing\n",
                cmd, world - 1);
    }
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 2, argv + 2);
    if (!strcmp(cmd, "pack")) return ds_pack_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "generate")) return tr_generate_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return tr_export_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    ag_fail("unknown command '%s' (groundc --help lists the commands)", cmd);
}

int main(int argc, char **argv) {
    int rc = run(argc, argv);
    ag_set_error_handler(NULL); // MPI, if it ran, is finalized: each rank reports for itself
    // What went to stdout (a report, `> file` on a full disk) must have arrived: a write that
    // failed, now or in an earlier automatic flush, fails the command.
    tr_flush_checked(stdout, "stdout");
    return rc;
}
