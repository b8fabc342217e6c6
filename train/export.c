// export.c: the export command: arguments, checkpoint, tokenizer, and the temporary folder
// that becomes OUT only when the format's writer has finished; file helpers the writers share.
#include "train/export.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/files.h"
#include "train/checkpoint.h"
#include "train/ckpt_path.h"

static const char *const usage_line =
    "export: usage: groundc export CKPT_DIR --format hf|gguf --out DIR [--dtype "
    "f32|f16|bf16|q8_0] [--tokenizer FILE] [--force]";

static void print_help(void) {
    printf("%s\n\n"
           "  CKPT_DIR              checkpoint folder (OUT/step_N, OUT/latest), or a run folder\n"
           "                        OUT: its latest checkpoint\n"
           "  --format hf|gguf      hf: a folder for transformers (LlavaForConditionalGeneration,\n"
           "                        AutoProcessor); gguf: model.gguf and mmproj.gguf for\n"
           "                        llama.cpp (required)\n"
           "  --out DIR             the folder to write (required); written beside it and renamed\n"
           "                        into place when complete\n"
           "  --dtype D             the weights' type: f32, f16 or bf16 for hf (default f32);\n"
           "                        f32, f16, bf16 or q8_0 for gguf (default f16)\n"
           "  --tokenizer FILE      default: the checkpoint config's eval.tokenizer\n"
           "  --force               replace DIR when it holds an earlier export (files only) or\n"
           "                        nothing (default: an existing DIR is an error)\n",
           usage_line + strlen("export: "));
}

// A writer that fails leaves no temporary folder behind either.
static char g_tmp[PATH_MAX];
static void remove_tmp_on_error(const char *msg) {
    (void)msg;
    ag_set_error_handler(NULL); // a failure while cleaning up just exits
    if (g_tmp[0]) tr_remove_tree(g_tmp);
}

// --force replaces an earlier export (or an empty folder) and nothing else: a link, a file or
// a folder with folders in it (a home, a project, a training run; an export is flat) at OUT is
// more likely a typo than something the user means to lose.
static void check_replaceable(const char *out, const struct stat *sb, const char *ckpt) {
    if (S_ISLNK(sb->st_mode))
        ag_fail("export: %s: is a symbolic link; --force replaces only a folder", out);
    if (S_ISREG(sb->st_mode))
        ag_fail("export: %s: is a file, not a folder; --force replaces only a folder", out);
    if (!S_ISDIR(sb->st_mode))
        ag_fail("export: %s: is not a folder; --force replaces only a folder", out);
    struct stat cb;
    if (!stat(ckpt, &cb) && cb.st_dev == sb->st_dev && cb.st_ino == sb->st_ino)
        ag_fail("export: %s: is the checkpoint exported; choose another --out", out);
    DIR *d = opendir(out);
    if (!d) ag_fail("export: %s: cannot open: %s", out, strerror(errno));
    char p[PATH_MAX];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        tr_export_path(p, sizeof p, out, e->d_name);
        struct stat eb;
        if (lstat(p, &eb) || !S_ISREG(eb.st_mode)) {
            closedir(d);
            ag_fail("export: %s: holds %s, not a file; --force replaces only an earlier export "
                    "(files only)",
                    out, p);
        }
    }
    closedir(d);
}

// Whether OUT stands; when it does, fails unless --force was given and OUT is replaceable.
// Asked before anything is written and again just before OUT is moved aside.
static bool out_exists(const char *out, const char *ckpt, bool force) {
    struct stat sb;
    if (lstat(out, &sb)) {
        if (errno != ENOENT) ag_fail("export: %s: cannot stat: %s", out, strerror(errno));
        return false;
    }
    if (!force)
        ag_fail("export: %s already exists (remove it, choose another --out, or give --force)",
                out);
    check_replaceable(out, &sb, ckpt);
    return true;
}

int tr_export_main(int argc, char **argv) {
    const char *ckpt = NULL, *format = NULL, *out = NULL, *dtype = NULL, *tokenizer = NULL;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            print_help();
            return 0;
        }
        if (!strcmp(o, "--force")) {
            force = true;
        } else if (!strncmp(o, "--", 2)) {
            static const char *const names[] = {"--format", "--out", "--dtype", "--tokenizer"};
            const char **values[] = {&format, &out, &dtype, &tokenizer};
            int k = 0;
            while (k < 4 && strcmp(o, names[k])) k++;
            // an unknown option is named as such, even as the last argument
            if (k == 4) ag_fail("export: unknown option '%s'", o);
            if (i + 1 >= argc) ag_fail("export: option %s needs a value", o);
            *values[k] = argv[++i];
        } else if (!ckpt) {
            ckpt = o;
        } else {
            ag_fail("export: more than one checkpoint given ('%s' and '%s')", ckpt, o);
        }
    }
    if (!ckpt) ag_fail("%s", usage_line);
    if (!format) ag_fail("export: missing --format hf|gguf");
    if (!out) ag_fail("export: missing --out DIR");
    bool hf = !strcmp(format, "hf"), gguf = !strcmp(format, "gguf");
    if (!hf && !gguf) ag_fail("export: unknown format '%s' (hf or gguf)", format);
    if (!dtype) dtype = hf ? "f32" : "f16";
    bool q8 = !strcmp(dtype, "q8_0");
    if (strcmp(dtype, "f32") && strcmp(dtype, "f16") && strcmp(dtype, "bf16") && !(q8 && gguf))
        ag_fail("export: --dtype %s: expected f32, f16%s", dtype,
                gguf ? ", bf16 or q8_0" : " or bf16");

    // "LINK/" would resolve through the link and put the temporary folder inside its target.
    char out_buf[PATH_MAX];
    if ((size_t)snprintf(out_buf, sizeof out_buf, "%s", out) >= sizeof out_buf)
        ag_fail("export: %s: path too long", out);
    for (size_t n = strlen(out_buf); n > 1 && out_buf[n - 1] == '/'; n--) out_buf[n - 1] = 0;
    out = out_buf;
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        ag_fail("export: --out %s: names no folder of its own", out);
    char *ckpt_dir = tr_ckpt_resolve(ckpt, "export", stderr);
    out_exists(out, ckpt_dir, force);
    char tmp[PATH_MAX], old[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid()) >= sizeof tmp ||
        (size_t)snprintf(old, sizeof old, "%s.old-%d", out, (int)getpid()) >= sizeof old)
        ag_fail("export: %s: path too long", out);
    // the export's folder is made only after the checkpoint is read: can it be made at all?
    tr_check_output_dir("export", "--out", out, tmp);

    // Everything that can fail on the input fails before anything is written.
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tr_yaml *config;
    gm_groundinggpt *m = tr_ckpt_open_model(ctx, ckpt_dir, &config);
    char *tok_path = tr_ckpt_tokenizer_path(config, tokenizer, "export");
    ds_tokenizer *tok = ds_tokenizer_load(tok_path);

    tr_remove_tree(tmp);
    ds_make_dirs(tmp);
    memcpy(g_tmp, tmp, sizeof g_tmp);
    ag_set_error_handler(remove_tmp_on_error);
    tr_export_job job = {
        .ckpt_dir = ckpt_dir, .model = m, .tok = tok, .tokenizer_path = tok_path, .dtype = dtype};
    if (hf)
        tr_export_hf(&job, tmp);
    else
        tr_export_gguf(&job, tmp);

    const bool replace = out_exists(out, ckpt_dir, force); // (made or changed meanwhile?)
    if (replace && rename(out, old))
        ag_fail("export: cannot move the old %s aside: %s", out, strerror(errno));
    if (rename(tmp, out)) {
        int e = errno;
        // Put the previous export back where it was; if even that fails, say where it is (the
        // error handler removes only the new export, in tmp).
        if (replace && rename(old, out))
            ag_fail("export: cannot rename %s to %s: %s; the previous export could not be moved "
                    "back either (%s) and is at %s",
                    tmp, out, strerror(e), strerror(errno), old);
        ag_fail("export: cannot rename %s to %s: %s%s", tmp, out, strerror(e),
                replace ? " (the previous export is back in place)" : "");
    }
    g_tmp[0] = 0;
    ag_sync_parent(out);
    ag_set_error_handler(NULL);
    if (replace) tr_remove_tree(old);
    printf("export: %s -> %s (%s, %s)\n", ckpt_dir, out, format, dtype);

    ds_tokenizer_free(tok);
    free(tok_path);
    free(ckpt_dir);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    tr_yaml_free(config);
    return 0;
}

void tr_export_path(char *buf, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, n, "%s/%s", dir, name) >= n)
        ag_fail("export: %s/%s: path too long", dir, name);
}

void tr_export_write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[PATH_MAX];
    tr_export_path(path, sizeof path, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) ag_fail("export: %s: cannot create: %s", path, strerror(errno));
    errno = 0;
    bool ok = (n == 0 || fwrite(data, 1, n, f) == n) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) ag_fail("export: %s: write failed: %s", path, strerror(err ? err : EIO));
}
