// testlib.c: see testlib.h.
#include "testlib.h"

#include <math.h>
#include <string.h>

#include "autograd/error.h"
#include "autograd/rng.h"

// An expected failure unwinds with longjmp past the code that would free what it allocated
// (ag_fail's contract: after a failure the process exits). LeakSanitizer is told to ignore
// what this thread allocates inside such a block, and only there.
#if defined(__SANITIZE_ADDRESS__)
#define TL_HAS_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define TL_HAS_LSAN 1
#endif
#endif
#ifdef TL_HAS_LSAN
#include <sanitizer/lsan_interface.h>
#define TL_LSAN_DISABLE() __lsan_disable()
#define TL_LSAN_ENABLE()  __lsan_enable()
#else
#define TL_LSAN_DISABLE() ((void)0)
#define TL_LSAN_ENABLE()  ((void)0)
#endif

int tl_passed, tl_failed;
jmp_buf tl_jmp;
char tl_msg[2048];

int tl_summary(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, tl_passed, tl_failed);
    return tl_failed ? 1 : 0;
}

uint64_t tl_next(tl_rng *r) {
    return ag_splitmix64(&r->s);
}

double tl_uniform(tl_rng *r) {
    return (double)(tl_next(r) >> 11) * 0x1.0p-53;
}

double tl_normal(tl_rng *r) {
    double u1 = tl_uniform(r), u2 = tl_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int64_t tl_randint(tl_rng *r, int64_t n) {
    return (int64_t)(tl_next(r) % (uint64_t)n);
}

static void jump_handler(const char *msg) {
    snprintf(tl_msg, sizeof tl_msg, "%s", msg);
    longjmp(tl_jmp, 1);
}

void tl_catch_begin(void) {
    tl_msg[0] = 0;
    ag_set_error_handler(jump_handler);
    TL_LSAN_DISABLE();
}

void tl_catch_end(void) {
    TL_LSAN_ENABLE();
    ag_set_error_handler(NULL);
}

void tl_source_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", GROUNDC_SOURCE_DIR, rel);
}
