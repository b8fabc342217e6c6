// curriculum.c: see curriculum.h.
// realpath(3) is XSI.
#define _XOPEN_SOURCE 700
#include "train/curriculum.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/manifest.h"
#include "train/checkpoint.h"
#include "train/eval.h"
#include "train/import.h"
#include "train/model_config.h"
#include "train/train_lm.h"
#include "train/trainer.h"

typedef struct {
    const char *config;
    const char **sets;
    int n_sets;
    const char *resume; // NULL, "auto" or a folder
    bool dry_run;       // read and check the configs, train nothing
    bool config_only;   // --config-only: a dry run that does not look for the inputs
    bool help;          // --help: the usage printed, nothing else done
} train_args;

static void print_help(void) {
    printf("usage: groundc train CONFIG.yaml [--resume auto|CKPT_DIR] [--set key.path=value ...] "
           "[--dry-run | --config-only]\n\n"
           "  CONFIG.yaml           a stage, curriculum (stages: [...]) or copy-task config\n"
           "                        (mpirun -np N for N ranks)\n"
           "  --resume auto|DIR     continue from the run's latest checkpoint (auto) or from DIR\n"
           "  --set key.path=value  override one config value (YAML); may be repeated\n"
           "  --dry-run             read and check the configs and their inputs (datasets and\n"
           "                        their shards against the model, trainable/frozen patterns,\n"
           "                        init weights, eval data, checkpoint.out, --resume folder),\n"
           "                        train nothing\n"
           "  --config-only         as --dry-run, without looking for the inputs (before the\n"
           "                        data is packed); given with --dry-run, --config-only wins\n"
           "  -h, --help            this text\n");
}

static void parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->sets = ag_xcalloc((size_t)argc + 1, sizeof *a->sets, "arguments");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            a->help = true;
            return;
        }
        if (!strcmp(argv[i], "--dry-run")) {
            a->dry_run = true;
        } else if (!strcmp(argv[i], "--config-only")) {
            a->dry_run = a->config_only = true;
        } else if (!strcmp(argv[i], "--set") || !strcmp(argv[i], "--resume")) {
            if (i + 1 >= argc)
                ag_fail("train: %s needs a value (%s)", argv[i],
                        argv[i][2] == 's' ? "key.path=value" : "auto or a checkpoint folder");
            if (argv[i][2] == 's')
                a->sets[a->n_sets++] = argv[++i];
            else
                a->resume = argv[++i];
        } else if (!strncmp(argv[i], "--", 2)) {
            ag_fail("train: unknown option '%s'", argv[i]);
        } else if (!a->config) {
            a->config = argv[i];
        } else {
            ag_fail("train: more than one config given ('%s' and '%s')", a->config, argv[i]);
        }
    }
    if (!a->config) ag_fail("train: no config given (groundc train CONFIG.yaml)");
}

static void apply_sets(tr_yaml *root, const train_args *a) {
    for (int i = 0; i < a->n_sets; i++) tr_yaml_set(root, a->sets[i]);
    if (root->kind == TR_YAML_MAP && tr_yaml_get(root, "data")) tr_model_config_inline(root);
}

static tr_yaml *load_with_sets(const char *path, const train_args *a) {
    tr_yaml *root = tr_yaml_load(path);
    apply_sets(root, a);
    return root;
}

static void print_resolved(const char *path, const tr_yaml *root, const tr_dist *d) {
    if (d->rank) return;
    printf("config %s resolved:\n", path);
    tr_yaml_print(root, stdout, 2);
    fflush(stdout);
}

// "score (samples; constant c)": c is the best constant answer's score (eval.h), what a
// model blind to the media reaches.
static void fmt_rate(char *buf, size_t n, double v, int64_t count, double constant) {
    if (isnan(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.3f (%lld; constant %.3f)", v, (long long)count, constant);
}

static void print_table(const char *const *names, const tr_stage_result *r, int n) {
    printf("\n| stage | steps | final loss | REC Acc@0.5 | temporal R@1@0.5 | sound R@1@0.5 |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n; i++) {
        char rec[64], tvg[64], sound[64];
        fmt_rate(rec, sizeof rec, r[i].rec_acc, r[i].rec_n, r[i].rec_constant);
        fmt_rate(tvg, sizeof tvg, r[i].tvg_r1, r[i].tvg_n, r[i].tvg_constant);
        fmt_rate(sound, sizeof sound, r[i].sound_r1, r[i].sound_n, r[i].sound_constant);
        printf("| %s | %lld | %.4f | %s | %s | %s |\n", names[i], (long long)r[i].steps,
               r[i].final_loss, rec, tvg, sound);
    }
    fflush(stdout);
}

// path made absolute by text alone (it may not exist yet): the working directory's when
// relative. Allocated.
static char *abs_text(const char *path) {
    char cwd[PATH_MAX];
    if (path[0] == '/' || !getcwd(cwd, sizeof cwd)) return ag_xstrdup(path);
    return ag_xpath_join(cwd, path);
}

// Whether path is dir or lies inside it (by text).
static bool is_under(const char *path, const char *dir) {
    char *p = abs_text(path), *q = abs_text(dir);
    size_t n = strlen(q);
    while (n > 1 && q[n - 1] == '/') n--;
    bool in = !strncmp(p, q, n) && (p[n] == 0 || p[n] == '/');
    free(p);
    free(q);
    return in;
}

// What the real run opens before it trains, checked by a dry run with the same functions and
// so the same one-line errors: the checkpoint to resume from (or checkpoints where a fresh run
// would start) and whether this config continues it, checkpoint.out, the eval inputs, the
// datasets (manifests, shards against the model and data.max_len), the trainable / frozen
// patterns and the init weights (names, shapes, config.json; on a meta model: no weights
// allocated, no values read). earlier: the checkpoint.out folders of the curriculum's earlier
// stages (n_earlier of them), which a dry run does not fill: an init inside one is checked only
// when it is there already.
static void check_inputs(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                         const char *resume, const char *const *earlier, int n_earlier) {
    if (c->eval_data) tr_eval_check_inputs(c->eval_data, c->eval_tokenizer);
    tr_train_config checked = *c; // (shallow: only its init paths change, and it is not freed)
    for (int p = 0; p < TR_INIT_NPART; p++) {
        const char *w = c->init.path[p];
        bool made_earlier = false;
        for (int k = 0; k < n_earlier && w; k++)
            made_earlier = made_earlier || is_under(w, earlier[k]);
        // (one there already, a stage done before, is checked: names, shapes, lineage)
        if (made_earlier && access(w, F_OK)) checked.init.path[p] = NULL;
    }
    // the run's own checks: checkpoint, datasets, patterns, the init weights against the model
    tr_train_check(&checked, resolved, d, resume);
}

// Every rank runs the same stage: its resolved config (after --set) and the command's options
// agree with rank 0's. A rank started otherwise (mpirun's "A : B" form, a node reading its own
// copy of the config) would train something else under the same collectives, or wait in one
// the others never join. The ranks that differ say how; all exit 1.
static void check_ranks_agree(const char *path, const tr_yaml *root, const train_args *a,
                              const tr_dist *d, const char *resume) {
    if (d->world == 1) return;
    char opts[PATH_MAX + 64];
    if (snprintf(opts, sizeof opts, "options:%s%s --resume %s", a->dry_run ? " --dry-run" : "",
                 a->config_only ? " --config-only" : "",
                 resume ? resume : "(none)") >= (int)sizeof opts)
        ag_fail_path_too_long(resume, "");
    char *cfg = tr_yaml_dump(root, NULL);
    char *zero, diff[1500] = "";
    bool same = tr_dist_agree(d, opts, &zero);
    if (zero) snprintf(diff, sizeof diff, "rank 0's %.700s, this rank's %.700s", zero, opts);
    if (same) { // (the options first: a dry-run rank's config would be no news)
        same = tr_dist_agree(d, cfg, &zero);
        if (zero) {
            tr_yaml *theirs = tr_yaml_parse_text("rank 0's config", zero);
            if (!tr_yaml_diff(theirs, root, NULL, diff, sizeof diff))
                snprintf(diff, sizeof diff, "the same keys and values written differently");
            tr_yaml_free(theirs);
        }
    }
    if (zero)
        fprintf(stderr,
                "groundc: error: [rank %d] %s: this rank's config or options differ from rank 0's "
                "(%s): start every rank with the same config, --set values and options\n",
                d->rank, path, diff);
    free(zero);
    free(cfg);
    if (!same) tr_dist_exit(d, 1);
}

static int run_stage(const char *path, tr_yaml *root, const train_args *a, const tr_dist *d,
                     const char *resume, tr_stage_result *res, const char *const *earlier,
                     int n_earlier) {
    tr_train_config c;
    tr_train_config_read(root, &c);
    tr_train_config_fit_world(&c, d->world);
    print_resolved(path, root, d);
    check_ranks_agree(path, root, a, d, resume);
    if (a->dry_run) {
        if (a->config_only)
            tr_train_check_selection(&c); // needs the model file only
        else
            check_inputs(&c, root, d, resume, earlier, n_earlier);
        if (d->rank == 0)
            printf("%s: config valid: stage %d, %d dataset%s, micro batch %lld x accumulation %lld "
                   "x %d rank%s; dry run, nothing trained\n",
                   path, c.stage, c.n_datasets, c.n_datasets > 1 ? "s" : "",
                   (long long)c.micro_batch, (long long)c.accumulation, d->world,
                   d->world > 1 ? "s" : "");
        tr_stage_result_clear(res);
        if (snprintf(res->final_ckpt, sizeof res->final_ckpt, "%s/latest", c.out_dir) >=
            (int)sizeof res->final_ckpt)
            ag_fail_path_too_long(c.out_dir, "/latest");
        tr_train_config_free(&c);
        return 0;
    }
    tr_train_stage(&c, root, d, resume, res);
    tr_train_config_free(&c);
    return 0;
}

static int run_curriculum(tr_yaml *root, const train_args *a, const tr_dist *d) {
    tr_yaml *list = tr_yaml_get(root, "stages");
    if (list->kind != TR_YAML_SEQ || list->n < 1)
        tr_yaml_fail(list, "expected a non-empty list of stage config paths");
    if (a->resume && strcmp(a->resume, "auto"))
        ag_fail("train: a curriculum resumes each stage from its own checkpoint folder; use "
                "--resume auto (or nothing)");
    int n = list->n;
    char **paths = ag_xcalloc((size_t)n, sizeof *paths, "curriculum");
    for (int i = 0; i < n; i++) {
        if (list->items[i]->kind != TR_YAML_SCALAR) tr_yaml_fail(list->items[i], "expected a path");
        paths[i] = tr_config_path(list->items[i], list->items[i]->value);
    }
    tr_yaml_check_used(root);
    tr_stage_result *res = ag_xcalloc((size_t)n, sizeof *res, "curriculum");
    char **outs = ag_xcalloc((size_t)n, sizeof *outs, "curriculum"); // checkpoint.out of each
    char prev[PATH_MAX] = "";
    for (int i = 0; i < n; i++) {
        tr_yaml *st = load_with_sets(paths[i], a);
        if (!tr_config_is_stage(st))
            tr_yaml_fail(st, "not a stage config (needs model: and data:)");
        tr_yaml *init = tr_yaml_get(st, "init");
        if (*prev && !(init && init->kind == TR_YAML_MAP && tr_yaml_get(init, "checkpoint"))) {
            char set[2 * PATH_MAX + 32];
            char *abs = a->dry_run ? ag_xstrdup(prev) : realpath(prev, NULL);
            if (!abs) ag_fail("%s: the previous stage's checkpoint is not there", prev);
            // a --set value is YAML: single-quoted, so that ": " or " #" in a path stay text
            size_t k = (size_t)snprintf(set, sizeof set, "init.checkpoint='");
            for (const char *c = abs; *c; c++) {
                if (k + 4 > sizeof set) // this character (maybe doubled), the quote, the NUL
                    ag_fail_path_too_long(abs, "");
                if (*c == '\'') set[k++] = '\'';
                set[k++] = *c;
            }
            set[k++] = '\'';
            set[k] = 0;
            free(abs);
            tr_yaml_set(st, set);
        }
        if (d->rank == 0) printf("\n== curriculum: stage %d of %d: %s\n", i + 1, n, paths[i]);
        run_stage(paths[i], st, a, d, "auto", &res[i], (const char *const *)outs, i);
        // the stage's checkpoint.out: its final checkpoint's folder (OUT/latest in a dry run)
        outs[i] = ag_xparent_dir(res[i].final_ckpt);
        for (int k = 0; k < i; k++) // (the real run refuses the earlier stage's checkpoint)
            if (is_under(outs[i], outs[k]) && is_under(outs[k], outs[i]))
                ag_fail("%s: stages %d (%s) and %d (%s) both write into checkpoint.out %s: give "
                        "each stage a folder of its own (--set checkpoint.out applies to every "
                        "stage of a curriculum)",
                        a->config, k + 1, paths[k], i + 1, paths[i], outs[i]);
        if (snprintf(prev, sizeof prev, "%s", res[i].final_ckpt) >= (int)sizeof prev)
            ag_fail_path_too_long(res[i].final_ckpt, "");
        tr_yaml_free(st);
    }
    if (d->rank == 0 && !a->dry_run) {
        const char **names = ag_xcalloc((size_t)n, sizeof *names, "curriculum");
        for (int i = 0; i < n; i++) {
            const char *slash = strrchr(paths[i], '/');
            names[i] = slash ? slash + 1 : paths[i];
        }
        print_table(names, res, n);
        free(names);
    }
    for (int i = 0; i < n; i++) free(paths[i]), free(outs[i]);
    free(paths);
    free(outs);
    free(res);
    return 0;
}

int tr_train_main(int argc, char **argv, const tr_dist *d) {
    train_args a;
    parse_args(argc, argv, &a);
    if (a.help) {
        if (d->rank == 0) print_help();
        free(a.sets);
        return 0;
    }
    // --set applies to the stages of a curriculum, not to its list.
    tr_yaml *root = tr_yaml_load(a.config);
    bool curriculum = root->kind == TR_YAML_MAP && tr_yaml_get(root, "stages");
    if (!curriculum) apply_sets(root, &a);
    int rc;
    if (curriculum) {
        rc = run_curriculum(root, &a, d);
    } else if (root->kind == TR_YAML_MAP && tr_yaml_get(root, "task")) {
        if (d->world > 1) ag_fail("%s: the copy-task trainer runs on one process", a.config);
        if (a.resume) ag_fail("%s: the copy-task trainer does not checkpoint", a.config);
        tr_lm_config cfg;
        tr_lm_config_read(root, &cfg);
        print_resolved(a.config, root, d);
        if (a.dry_run) { // it reads nothing but its config: a dry run has nothing more to check
            if (d->rank == 0)
                printf("%s: config valid: copy task; dry run, nothing trained\n", a.config);
            rc = 0;
        } else {
            rc = tr_train_lm(&cfg, root);
        }
    } else {
        tr_stage_result res;
        rc = run_stage(a.config, root, &a, d, a.resume, &res, NULL, 0);
        if (d->rank == 0 && !a.dry_run) {
            const char *name = a.config;
            print_table(&name, &res, 1);
        }
    }
    tr_yaml_free(root);
    free(a.sets);
    return rc;
}
