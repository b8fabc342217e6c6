// export.c: the export command: arguments, checkpoint, tokenizer, and the temporary folder
// that becomes OUT only when the format's writer has finished; file helpers the writers share.
#include "train/export.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
static volatile sig_atomic_t g_stop_signal; // SIGINT / SIGTERM received (the first)
static void remove_tmp_on_error(const char *msg) {
    (void)msg;
    // The stop watcher took the folder away under the writer: it says why and exits.
    while (g_stop_signal) pause();
    ag_set_error_handler(NULL); // a failure while cleaning up just exits
    if (g_tmp[0]) tr_remove_tree(g_tmp);
}

// Ctrl-C (SIGINT) or SIGTERM while the export is written: the handler only wakes a thread of
// its own (sem_post is async-signal-safe, and any thread may take the signal), which cleans up
// in ordinary context: it renames the temporary folder out of the writer's way (files the
// writer opens later cannot land in it), removes it, says so and exits 128 + the signal, as the
// signal would have. g_finish keeps it from acting while OUT is being replaced: a signal then
// waits until OUT is whole (the new export, or the old one back).
static sem_t g_stop_sem;
static pthread_mutex_t g_finish = PTHREAD_MUTEX_INITIALIZER;

static void on_stop_signal(int sig) {
    if (!g_stop_signal) g_stop_signal = sig;
    sem_post(&g_stop_sem);
}

static void *stop_watcher(void *out) {
    while (sem_wait(&g_stop_sem) && errno == EINTR) continue;
    pthread_mutex_lock(&g_finish);
    int sig = g_stop_signal;
    const char *name = ag_signal_name(sig);
    if (g_tmp[0]) {
        char dying[PATH_MAX + 16];
        snprintf(dying, sizeof dying, "%s.stopped", g_tmp);
        if (!rename(g_tmp, dying)) {
            // a file the writer was creating as the folder moved may appear late: try again
            for (int i = 0; i < 50; i++) {
                struct stat st;
                tr_remove_tree(dying);
                nanosleep(&(struct timespec){0, 10000000}, NULL);
                if (lstat(dying, &st)) break;
            }
        }
        fprintf(stderr, "export: stopped by %s; nothing written to %s\n", name, (const char *)out);
    } else {
        fprintf(stderr, "export: stopped by %s after %s was complete\n", name, (const char *)out);
    }
    _exit(128 + sig);
}

static void watch_stop_signals(const char *out) {
    if (sem_init(&g_stop_sem, 0, 0)) ag_fail("export: sem_init: %s", strerror(errno));
    pthread_t t;
    int rc = pthread_create(&t, NULL, stop_watcher, (void *)out);
    if (rc) ag_fail("export: cannot start a thread: %s", strerror(rc));
    pthread_detach(t);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
        ag_fail("export: sigaction: %s", strerror(errno));
}

// Names OUT.tmp-PID and OUT.old-PID (PID: another process, no longer running) that an export
// killed without a chance to clean up (SIGKILL, a crash, power loss) left beside OUT: the
// temporary folder goes; an old export moved aside goes back when OUT is missing (it was
// killed between its two renames), else goes. One line on stderr for each.
static void clean_stale_exports(const char *out) {
    char *dir = ag_xparent_dir(out);
    const char *base = ag_base_name(out);
    size_t nb = strlen(base);
    DIR *d = opendir(dir);
    if (!d && errno == ENOENT) { // a folder the export makes: nothing can be left in it
        free(dir);
        return;
    }
    if (!d) ag_fail("export: %s: cannot list: %s", dir, strerror(errno));
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, nb) || (strncmp(n + nb, ".tmp-", 5) && strncmp(n + nb, ".old-", 5)))
            continue;
        char *end;
        long pid = strtol(n + nb + 5, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (!kill((pid_t)pid, 0) || errno != ESRCH) continue; // still running (or not ours)
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, n) >= sizeof path) continue;
        struct stat st;
        if (n[nb + 1] == 'o' && stat(out, &st) && errno == ENOENT) {
            if (rename(path, out))
                ag_fail("export: cannot move %s back to %s: %s", path, out, strerror(errno));
            fprintf(stderr, "export: %s: put back to %s (an export killed while replacing it)\n",
                    path, out);
            continue;
        }
        tr_remove_tree(path);
        fprintf(stderr, "export: removed %s (left by an export that was killed)\n", path);
    }
    closedir(d);
    free(dir);
}

// Whether name is a file an export writes (export_hf.c, export_gguf.c).
static bool is_export_file(const char *name) {
    static const char *const names[] = {"README.md",
                                        "config.json",
                                        "generation_config.json",
                                        "model.safetensors",
                                        "model.safetensors.index.json",
                                        "preprocessor_config.json",
                                        "processor_config.json",
                                        "chat_template.json",
                                        "special_tokens_map.json",
                                        "tokenizer.json",
                                        "tokenizer.model",
                                        "tokenizer_config.json",
                                        "video_branch.json",
                                        "video_branch.safetensors",
                                        "audio_branch.json",
                                        "audio_branch.safetensors",
                                        "model.gguf",
                                        "mmproj.gguf"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        if (!strcmp(name, names[k])) return true;
    int a, b, len = 0;
    return sscanf(name, "model-%5d-of-%5d.safetensors%n", &a, &b, &len) == 2 &&
           len == (int)strlen(name);
}

// Whether OUT/README.md is the one an export writes ("exported by groundc" in the HF one's
// title, "Exported by `groundc export" in the GGUF one's first lines).
static bool has_export_readme(const char *out) {
    char p[PATH_MAX];
    tr_export_path(p, sizeof p, out, "README.md");
    FILE *f = fopen(p, "rb");
    if (!f) return false;
    char head[512];
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (head[i] >= 'A' && head[i] <= 'Z') head[i] = (char)(head[i] - 'A' + 'a');
    return strstr(head, "exported by groundc") || strstr(head, "exported by `groundc export");
}

// --force replaces an earlier export (or an empty folder) and nothing else: a link, a file,
// a folder with folders in it (a home, a project, a training run; an export is flat), a folder
// without an export's README.md (a dataset, a checkpoint) or with files an export does not
// write (the user's own) at OUT is more likely a typo than something the user means to lose.
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
    // the first (by name, for a message that does not depend on readdir's order) entry that
    // is not a file, else the first file an export does not write
    char not_file[NAME_MAX + 1] = "", unknown[NAME_MAX + 1] = "", p[PATH_MAX];
    bool empty = true;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        empty = false;
        tr_export_path(p, sizeof p, out, e->d_name);
        struct stat eb;
        char *first = lstat(p, &eb) || !S_ISREG(eb.st_mode) ? not_file
                      : !is_export_file(e->d_name)          ? unknown
                                                            : NULL;
        if (first && (!first[0] || strcmp(e->d_name, first) < 0))
            snprintf(first, NAME_MAX + 1, "%s", e->d_name);
    }
    closedir(d);
    if (not_file[0]) {
        tr_export_path(p, sizeof p, out, not_file);
        ag_fail("export: %s: holds %s, not a file; --force replaces only an earlier export "
                "(files only)",
                out, p);
    }
    if (unknown[0]) {
        tr_export_path(p, sizeof p, out, unknown);
        ag_fail("export: %s: holds %s, which no export writes; --force replaces only an earlier "
                "export",
                out, p);
    }
    if (!empty && !has_export_readme(out))
        ag_fail("export: %s: is not an earlier export (no README.md written by groundc export); "
                "--force replaces only an earlier export",
                out);
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
    const char *base = ag_base_name(out);
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

    clean_stale_exports(out);
    tr_remove_tree(tmp);
    ds_make_dirs(tmp);
    memcpy(g_tmp, tmp, sizeof g_tmp);
    ag_set_error_handler(remove_tmp_on_error);
    watch_stop_signals(out);
    tr_export_job job = {
        .ckpt_dir = ckpt_dir, .model = m, .tok = tok, .tokenizer_path = tok_path, .dtype = dtype};
    if (hf)
        tr_export_hf(&job, tmp);
    else
        tr_export_gguf(&job, tmp);
    // Tests: GROUNDC_TEST_EXPORT_SIGNAL=INT|TERM sends the signal once the files are written
    // and waits for it to end the process.
    const char *test_sig = getenv("GROUNDC_TEST_EXPORT_SIGNAL");
    if (test_sig && (!strcmp(test_sig, "INT") || !strcmp(test_sig, "TERM"))) {
        raise(!strcmp(test_sig, "INT") ? SIGINT : SIGTERM);
        for (;;) pause();
    }

    pthread_mutex_lock(&g_finish); // a stop signal now waits until OUT is whole
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
    pthread_mutex_unlock(&g_finish);
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
