// error.h: one-line fatal errors for the whole project, and the checked wrappers (memory,
// paths, numbers, folder syncs) that fail with one instead of returning an error.
// ag_fail prints "groundc: error: <message>" on stderr and exits non-zero. Tests may
// install a handler (for example one that longjmps) to check that bad input is refused.
// cJSON allocates through ag_xmalloc in every program linking this module (a constructor
// installs the hooks), so its builders never return NULL for lack of memory: a JSON file can
// not be written with members silently missing.
#pragma once
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ag_error_handler)(const char *message);

// Sets the calling thread's handler, called with the formatted message; NULL restores
// print-and-exit. A handler that returns is followed by exit(1).
void ag_set_error_handler(ag_error_handler handler);
// The calling thread's handler (NULL: print-and-exit), for one that cleans up and then chains.
ag_error_handler ag_get_error_handler(void);

__attribute__((noreturn, format(printf, 1, 2))) void ag_fail(const char *fmt, ...);
__attribute__((noreturn)) void ag_vfail(const char *fmt, va_list ap);

// Fails with "<head><rest>: path too long" for a path that does not fit its buffer. Such a path
// is PATH_MAX long or more and a message holds 2047 characters, so head shows only its last 200
// characters ("..." before them): what is wrong stays on the line.
__attribute__((noreturn)) void ag_fail_path_too_long(const char *head, const char *rest);

// "SIGINT (Ctrl-C)", "SIGTERM", else strsignal's name: how a stop message names its signal.
const char *ag_signal_name(int sig);

// Allocation helpers that fail with a message instead of returning NULL.
void *ag_xmalloc(size_t bytes, const char *what);
void *ag_xcalloc(size_t n, size_t size, const char *what);
void *ag_xrealloc(void *p, size_t bytes, const char *what);
char *ag_xstrdup(const char *s);
// Array p of *cap elements of elem bytes, grown (doubling, from 8) to hold at least need;
// *cap is updated. n appends with one call each cost O(n) copying.
void *ag_xgrow(void *p, int64_t *cap, int64_t need, size_t elem, const char *what);
// "dir/name", allocated.
char *ag_xpath_join(const char *dir, const char *name);
// Puts the renames in folder dir on disk (fsync of the folder). A file system that cannot sync
// folders (EINVAL, ENOTSUP) or a folder that may not be opened for reading (EACCES) is passed
// over: the files themselves were synced before their renames. Any other failure (EIO) fails.
void ag_sync_dir(const char *dir);
// The folder holding path, allocated: "." for a bare name, "/" for a top-level entry.
char *ag_xparent_dir(const char *path);
// The last component of path (after its last '/'; path itself without one): its file name.
const char *ag_base_name(const char *path);
// ag_sync_dir of the folder holding path (after path was renamed into place).
void ag_sync_parent(const char *path);
// text as a whole number in [lo, hi]; otherwise (not a number, trailing text, out of range or
// past what long long holds) fails with "<what>: expected a whole number in [lo, hi], got
// '<text>'". For command-line options: what names the option.
long long ag_parse_int(const char *what, const char *text, long long lo, long long hi);

#ifdef __cplusplus
}
#endif
