// testlib.h: small helpers shared by the test programs.
#pragma once
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/safetensors.h"

// Counts checks; tl_summary prints "N passed, M failed" and returns the exit code.
extern int tl_passed, tl_failed;
#define TL_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (cond)                                                                                  \
            tl_passed++;                                                                           \
        else {                                                                                     \
            tl_failed++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)
int tl_summary(const char *suite);

// Deterministic random numbers (splitmix64).
typedef struct {
    uint64_t s;
} tl_rng;
uint64_t tl_next(tl_rng *r);
double tl_uniform(tl_rng *r);             // [0, 1)
double tl_normal(tl_rng *r);              // N(0, 1)
int64_t tl_randint(tl_rng *r, int64_t n); // [0, n)

// Expecting a failure: TL_EXPECT_FAIL(block, "substring") runs block with an error handler
// that jumps back; passes when ag_fail was called and its message contains every substring.
extern jmp_buf tl_jmp;
extern char tl_msg[2048];
void tl_catch_begin(void);
void tl_catch_end(void);
#define TL_EXPECT_FAIL(block, ...)                                                                 \
    do {                                                                                           \
        tl_catch_begin();                                                                          \
        if (setjmp(tl_jmp) == 0) {                                                                 \
            block;                                                                                 \
            tl_catch_end();                                                                        \
            TL_CHECK(0, "expected an error from: %s", #block);                                     \
        } else {                                                                                   \
            tl_catch_end();                                                                        \
            const char *subs_[] = {__VA_ARGS__};                                                   \
            bool all_ = true;                                                                      \
            for (size_t i_ = 0; i_ < sizeof subs_ / sizeof *subs_; i_++)                           \
                if (!strstr(tl_msg, subs_[i_])) all_ = false;                                      \
            TL_CHECK(all_ && !strchr(tl_msg, '\n'), "error message \"%s\" lacks an expected part", \
                     tl_msg);                                                                      \
        }                                                                                          \
    } while (0)

// A whole file as a NUL-terminated string (malloc'd), or NULL when it cannot be opened; its
// length in *len when len is not NULL.
char *tl_slurp(const char *path, size_t *len);

// TL_EXPECT_FAIL that also prints the message (for messages worth reading in the log).
#define TL_EXPECT_FAIL_SHOWN(block, ...)                                                           \
    do {                                                                                           \
        TL_EXPECT_FAIL(block, __VA_ARGS__);                                                        \
        printf("  refused: %s\n", tl_msg);                                                         \
    } while (0)

// Path of a file under the source tree (static buffer per call site is the caller's).
void tl_source_path(char *buf, size_t n, const char *rel);
// A new empty folder /tmp/groundc_<name>_XXXXXX (mkdtemp) in buf; fails the test run when it
// cannot be made.
void tl_temp_dir(char *buf, size_t n, const char *name);

// Reference comparisons (malloc'd arrays; the caller frees them).
// A fixture tensor (F64 or F32) as doubles; fails on another dtype.
double *tl_entry_f64(const ag_st_entry *e);
int64_t tl_entry_numel(const ag_st_entry *e);
// Fixture tensor e of f as a step tensor: float entries converted to dt, others (u8, i32) in
// the file's dtype.
ag_tensor *tl_st_tensor(ag_ctx *ctx, const ag_st_file *f, const ag_st_entry *e, ag_dtype dt);
// A step tensor (any float dtype) as doubles, through a cast on ctx.
double *tl_tensor_f64(ag_ctx *ctx, ag_tensor *t);
// The standard deviation of t's values (population, over every element).
double tl_sample_std(ag_ctx *ctx, ag_tensor *t);
// max |got - want| / max(max |want|, 1e-6); NaN anywhere gives NaN.
double tl_max_rel_err(const double *got, const double *want, int64_t n);
// tl_max_rel_err of t against fixture tensor e; INFINITY when their element counts differ.
double tl_rel_err_entry(ag_ctx *ctx, ag_tensor *t, const ag_st_entry *e);
