// error.h: one-line fatal errors for the whole project.
// ag_fail prints "groundc: error: <message>" on stderr and exits non-zero. Tests may
// install a handler (for example one that longjmps) to check that bad input is refused.
#pragma once
#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ag_error_handler)(const char *message);

// Sets the calling thread's handler, called with the formatted message; NULL restores
// print-and-exit. A handler that returns is followed by exit(1).
void ag_set_error_handler(ag_error_handler handler);

__attribute__((noreturn, format(printf, 1, 2))) void ag_fail(const char *fmt, ...);
__attribute__((noreturn)) void ag_vfail(const char *fmt, va_list ap);

// Allocation helpers that fail with a message instead of returning NULL.
void *ag_xmalloc(size_t bytes, const char *what);
void *ag_xcalloc(size_t n, size_t size, const char *what);
void *ag_xrealloc(void *p, size_t bytes, const char *what);
char *ag_xstrdup(const char *s);
// "dir/name", allocated.
char *ag_xpath_join(const char *dir, const char *name);
// text as a whole number in [lo, hi]; otherwise (not a number, trailing text, out of range or
// past what long long holds) fails with "<what>: expected a whole number in [lo, hi], got
// '<text>'". For command-line options: what names the option.
long long ag_parse_int(const char *what, const char *text, long long lo, long long hi);

#ifdef __cplusplus
}
#endif
