// error.c: see error.h.
#include "error.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Per thread: a worker (e.g. one packing samples) can catch its own errors and go on.
static _Thread_local ag_error_handler g_handler;

void ag_set_error_handler(ag_error_handler handler) {
    g_handler = handler;
}

ag_error_handler ag_get_error_handler(void) {
    return g_handler;
}

void ag_vfail(const char *fmt, va_list ap) {
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    // one line: fold any newline the caller let through
    for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';
    if (g_handler) g_handler(msg);
    fflush(stdout);
    fprintf(stderr, "groundc: error: %s\n", msg);
    // _exit, not exit: other threads (loader readers) may be inside HDF5, whose atexit shutdown
    // would race them, and the buffers a dying process still holds are not leaks (LeakSanitizer
    // would report them whenever the last pointer sat only in a register). Logs are flushed.
    fflush(NULL);
    _exit(1);
}

void ag_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ag_vfail(fmt, ap);
}

void ag_fail_path_too_long(const char *head, const char *rest) {
    size_t n = strlen(head);
    ag_fail("%s%s%s: path too long", n > 200 ? "..." : "", head + (n > 200 ? n - 200 : 0), rest);
}

const char *ag_signal_name(int sig) {
    return sig == SIGINT    ? "SIGINT (Ctrl-C)"
           : sig == SIGTERM ? "SIGTERM"
           : sig == SIGUSR1 ? "SIGUSR1"
                            : strsignal(sig);
}

void *ag_xmalloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ag_fail("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *ag_xcalloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ag_fail("out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

void *ag_xrealloc(void *p, size_t bytes, const char *what) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) ag_fail("out of memory growing %s to %zu bytes", what, bytes);
    return q;
}

void *ag_xgrow(void *p, int64_t *cap, int64_t need, size_t elem, const char *what) {
    if (need <= *cap) return p;
    int64_t grown = *cap > 0 ? *cap : 8;
    while (grown < need) grown = grown > INT64_MAX / 2 ? need : 2 * grown;
    if ((uint64_t)grown > SIZE_MAX / (elem ? elem : 1))
        ag_fail("out of memory growing %s to %lld elements", what, (long long)grown);
    p = ag_xrealloc(p, (size_t)grown * elem, what);
    *cap = grown;
    return p;
}

static void *json_alloc(size_t bytes) {
    return ag_xmalloc(bytes, "JSON");
}

__attribute__((constructor)) static void json_hooks(void) {
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = json_alloc, .free_fn = free});
}

char *ag_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = ag_xmalloc(n, "string");
    memcpy(p, s, n);
    return p;
}

char *ag_xpath_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ag_xmalloc(n, "path");
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void ag_sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EACCES) return;
        ag_fail("%s: cannot open the folder to sync it: %s", dir, strerror(errno));
    }
    int rc = fsync(fd), err = errno;
    if (close(fd) && !rc) rc = -1, err = errno;
    if (rc && err != EINVAL && err != ENOTSUP)
        ag_fail("%s: cannot sync the folder: %s", dir, strerror(err));
}

const char *ag_base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

char *ag_xparent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return ag_xstrdup(".");
    size_t len = slash == path ? 1 : (size_t)(slash - path); // "/x": "/"
    char *dir = ag_xmalloc(len + 1, "folder name");
    memcpy(dir, path, len);
    dir[len] = 0;
    return dir;
}

void ag_sync_parent(const char *path) {
    char *dir = ag_xparent_dir(path);
    ag_sync_dir(dir);
    free(dir);
}

long long ag_parse_int(const char *what, const char *text, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (end == text || *end || errno || x < lo || x > hi)
        ag_fail("%s: expected a whole number in [%lld, %lld], got '%s'", what, lo, hi, text);
    return x;
}
