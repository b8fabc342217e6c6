// loader.c: see loader.h.
//
// Slots instead of a queue: batches live in nslots = prefetch + 1 slots and batch b (counted
// from open) always uses slot b % nslots, so the reader, the workers and the consumer find a
// batch without handing pointers around. A slot goes FREE -> READING (reader) -> READ ->
// COLLATING (a worker) -> READY -> HELD (the consumer, until its next call) -> FREE. The
// extra slot is the one the consumer holds, so `prefetch` batches are prepared while it
// works on one. One mutex guards the states; three condition variables wake the reader (a
// slot freed), the workers (a slot read) and the consumer (a slot ready, or a failure).
//
// Work split: zstd decompression of media rows is most of the CPU time (a 336x336 image is
// 330 KiB), and HDF5 would run it in the reader, the one thread that may call HDF5. So the
// reader only locates each media row's chunk in its mapped shard file (or, unmapped, reads it
// as stored with H5Dread_chunk into the slot's stage) and the collating thread decompresses
// it straight into the batch array (no copy in between),
// widening float16 audio by table; it also turns the raw token runs into the padded (B, T)
// ids and shifted targets. Tokens and masks come through the shard layer (its chunk cache
// holds a shard's token stream, so they are cheap).
//
// Failures: the reader installs its own error handler while it does HDF5 work. A failing
// shard call ends up there, the handler jumps back to the reader's top, which closes its
// shards, releases the process-wide HDF5 lock, records the message and the batch it was
// reading, and stops. A damaged chunk found while decompressing is recorded the same way by
// the thread that found it. The smallest failed batch wins, and the consumer fails with its
// message when it asks for that batch (so the batches before it arrive whatever the timing).
#include "data/loader.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <hdf5.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "autograd/error.h"
#include "autograd/rng.h"
#include "data/h5zstd.h"
#include "data/manifest.h"
#include "data/shard.h"

#define DS_MAX_PERIOD   65536 // schedule period when weights have no small integer ratio
#define DS_MAX_OPEN     64    // shard handles the reader keeps open (least recently used go)
#define DS_MAX_PREFETCH 64
#define DS_MAX_THREADS  64

// HDF5 (serial build) must never run in two threads at once: every loader's reader holds
// this around its HDF5 work.
static pthread_mutex_t ds_hdf5_lock = PTHREAD_MUTEX_INITIALIZER;

// float16 -> float32 for every bit pattern (256 KiB): widening audio rows by table is several
// times faster than the bit-fiddling conversion, which fills it (so the results are the same).
static float ds_f16_table[65536];
static pthread_once_t ds_f16_once = PTHREAD_ONCE_INIT;
static void ds_f16_table_init(void) {
    for (uint32_t h = 0; h < 65536; h++) ds_f16_table[h] = ds_f32_from_f16((uint16_t)h);
}

// Where a media row's stored chunk lies in the mapped file.
typedef struct {
    uint64_t offset;
    uint32_t size;    // 0: not located yet
    uint32_t filters; // bit 0 set: the zstd filter was skipped for this chunk
} ds_chunk_loc;

enum { DS_FREE, DS_READING, DS_READ, DS_COLLATING, DS_READY, DS_HELD };

static const char *const ds_media_name[3] = {"images", "videos", "audios"};

typedef struct {
    char *path;
    int64_t first, count; // dataset samples [first, first + count)
    int32_t *source_map;  // shard's source index -> loader source id
    ds_shard *handle;     // reader thread only; NULL when closed
    int64_t last_use;
    // Direct chunk reads of media rows (see ds_raw_setup), opened with the handle.
    bool raw_tried;
    hid_t raw_file, raw_dset[3]; // H5I_INVALID_HID where the shard layer reads instead
    bool raw_zstd[3];            // chunks are zstd frames (else stored as they are)
    // The file mapped read-only (ds_map_shard): workers decompress media chunks straight from
    // it, so the reader neither copies them nor calls HDF5 for a row it has located before.
    // Kept until the loader closes, even while the handle is closed: prepared slots may still
    // point into it. NULL: chunks go through H5Dread_chunk and the slot's stage.
    const uint8_t *map;
    size_t map_len;
    struct stat map_stat; // the file as mapped; a reopened shard must still be that file
    int64_t adjust;       // file offset = chunk address + adjust (see ds_map_shard)
    ds_chunk_loc *loc[3]; // per media row, once located (size 0: not yet)
    int64_t nloc[3];
} ds_lshard;

typedef struct {
    char *dir;
    double weight;
    int64_t q; // integer weight of the schedule
    int64_t n; // samples
    ds_manifest manifest;
    int nshards;
    ds_lshard *shards;
} ds_ldataset;

// One dataset permutation per dataset, for the epoch last asked for.
typedef struct {
    int64_t *epoch; // -1: none yet
    int32_t **perm;
} ds_perms;

// One media row to decompress: from stage[src, src + size), or from mapped[0, size) when the
// shard is mapped, into dst.
typedef struct {
    int kind; // 0 image, 1 video, 2 audio
    int32_t row;
    void *dst; // uint8 rows; float32 for audio
    size_t src, size;
    const uint8_t *mapped;
    bool zstd; // false: the chunk is stored uncompressed
    int64_t position, sample, local;
    int dataset;
    const char *path;
} ds_job;

typedef struct {
    int state;
    int64_t index; // batch number since open
    ds_batch batch;
    int32_t *raw_tok; // tokens of sample b at raw_off[b], untruncated
    uint8_t *raw_mask;
    int64_t raw_cap;
    int64_t *raw_off; // (B + 1)
    // Media rows read as compressed chunks, decompressed by whoever collates the slot.
    ds_job *jobs; // up to 3 per sample
    int njobs;
    uint8_t *stage; // the compressed chunks of unmapped shards, one after another
    size_t stage_cap, stage_used;
    ZSTD_DCtx *dctx;
    uint16_t *half; // one audio row as float16
} ds_slot;

struct ds_loader {
    ds_loader_config cfg;   // cfg.datasets, cfg.resume and cfg.resume_from are not kept
    char resume_from[1024]; // cfg.resume_from, or "resume cursor"
    int nd;
    ds_ldataset *ds;
    int64_t period;       // M
    uint16_t *sched;      // (M) dataset of each position of a period
    uint32_t *sched_rank; // (M) how many earlier positions of the period have that dataset
    int nsources;
    char **sources;
    int32_t image_size, video_frames, video_size, audio_clips, audio_frames, audio_mels;
    const char *geom_file[3]; // the shard that set each media geometry (for messages)
    int64_t media_tokens[3];  // patch tokens per item of each kind (-1: not counted)
    const char *tokens_file[3];
    ds_token_rules rules; // per-sample checks (cfg.vocab, cfg.check_media), set at startup
    bool check_tokens;
    char digest[65];
    ds_cursor resume; // valid when has_resume
    bool has_resume;
    int64_t start;  // first stream position of this loader
    int64_t stride; // micro * world: positions per micro-step
    int64_t m0;     // micro-step index of start
    int nslots;
    ds_slot *slots;
    ds_perms reader_perms, user_perms;
    int open_shards;
    int64_t use_clock;

    pthread_mutex_t mu;
    pthread_cond_t cv_reader, cv_worker, cv_consumer;
    bool sync_init;
    pthread_t reader;
    bool reader_running;
    pthread_t *workers;
    int nworkers; // started
    bool started, stop, failed;
    int64_t fail_batch; // first batch that cannot be delivered (-1: startup)
    char fail_msg[2048];
    int64_t next_batch; // consumer side
    int held;           // slot the consumer holds, -1 for none

    // Reader-only state for failures: what it was doing when the shard layer failed.
    int64_t reading_batch; // -1 during startup
    bool ctx_valid;
    int64_t ctx_position, ctx_sample, ctx_local;
    int ctx_dataset, ctx_shard;
};

// ---------------------------------------------------------------------------------------
// small helpers

// pthread calls return an error number instead of setting errno.
static void ds_pt(int rc, const char *what) {
    if (rc != 0) ag_fail("loader: %s failed: %s", what, strerror(rc));
}

static int64_t ds_min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

// ---------------------------------------------------------------------------------------
// the stream (loader.h)

#define DS_GOLDEN 0x9e3779b97f4a7c15ull

// Uniform in [0, n): draws key's counter stream (c + 1 per draw) and rejects the top partial
// block of 2^64 so that every value is equally likely.
static uint64_t ds_uniform(uint64_t key, uint64_t *counter, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t r = ag_mix64(key + (++*counter) * DS_GOLDEN);
        if (r < limit) return r % n;
    }
}

static void ds_permutation(uint64_t seed, int d, int64_t epoch, int64_t n, int32_t *perm) {
    uint64_t key = ag_mix64(ag_mix64(ag_mix64(seed) ^ (uint64_t)d) ^ (uint64_t)epoch);
    uint64_t counter = 0;
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ds_uniform(key, &counter, (uint64_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

// Integer weights and one period of smooth weighted round-robin over them.
// The integer weights q_d and their period M (loader.h).
static void ds_integer_weights(ds_loader *l) {
    double sum = 0;
    for (int d = 0; d < l->nd; d++) sum += l->ds[d].weight;
    int64_t M = 0;
    for (int64_t m = 1; m <= DS_MAX_PERIOD && !M; m++) {
        bool ok = true;
        for (int d = 0; d < l->nd && ok; d++) {
            double x = l->ds[d].weight / sum * (double)m, r = nearbyint(x);
            ok = r >= 1 && fabs(x - r) <= 1e-6;
        }
        if (!ok) continue;
        M = m;
        for (int d = 0; d < l->nd; d++)
            l->ds[d].q = (int64_t)nearbyint(l->ds[d].weight / sum * (double)m);
    }
    if (!M) { // largest remainder, each dataset at least once per period
        M = DS_MAX_PERIOD;
        int64_t total = 0;
        for (int d = 0; d < l->nd; d++) {
            double x = l->ds[d].weight / sum * (double)M;
            l->ds[d].q = x < 1 ? 1 : (int64_t)floor(x);
            total += l->ds[d].q;
        }
        while (total != M) {
            int best = -1;
            double best_gap = 0;
            for (int d = 0; d < l->nd; d++) {
                double x = l->ds[d].weight / sum * (double)M;
                double gap = total < M ? x - (double)l->ds[d].q : (double)l->ds[d].q - x;
                if ((total < M || l->ds[d].q > 1) && (best < 0 || gap > best_gap))
                    best = d, best_gap = gap;
            }
            l->ds[best].q += total < M ? 1 : -1;
            total += total < M ? 1 : -1;
        }
    }
    l->period = M;
}

static void ds_build_schedule(ds_loader *l) {
    ds_integer_weights(l);
    int64_t M = l->period;
    l->sched = ag_xmalloc((size_t)M * sizeof *l->sched, "loader schedule");
    l->sched_rank = ag_xmalloc((size_t)M * sizeof *l->sched_rank, "loader schedule");
    int64_t *credit = ag_xcalloc((size_t)l->nd, sizeof *credit, "loader schedule");
    int64_t *count = ag_xcalloc((size_t)l->nd, sizeof *count, "loader schedule");
    for (int64_t p = 0; p < M; p++) {
        int best = 0;
        for (int d = 0; d < l->nd; d++) {
            credit[d] += l->ds[d].q;
            if (credit[d] > credit[best]) best = d;
        }
        credit[best] -= M;
        l->sched[p] = (uint16_t)best;
        l->sched_rank[p] = (uint32_t)count[best]++;
    }
    for (int d = 0; d < l->nd; d++)
        if (count[d] != l->ds[d].q || credit[d] != 0)
            ag_fail("loader: internal error: schedule period does not close");
    free(credit);
    free(count);
}

static void ds_locate_with(ds_loader *l, ds_perms *p, int64_t position, int32_t *dataset,
                           int64_t *sample) {
    int64_t period = position / l->period, o = position % l->period;
    int d = l->sched[o];
    ds_ldataset *ds = &l->ds[d];
    int64_t k = period * ds->q + (int64_t)l->sched_rank[o];
    int64_t epoch = k / ds->n, i = k % ds->n;
    if (!p->perm[d]) p->perm[d] = ag_xmalloc((size_t)ds->n * sizeof(int32_t), "permutation");
    if (p->epoch[d] != epoch) {
        ds_permutation(l->cfg.seed, d, epoch, ds->n, p->perm[d]);
        p->epoch[d] = epoch;
    }
    *dataset = d;
    *sample = p->perm[d][i];
}

static void ds_perms_init(ds_loader *l, ds_perms *p) {
    p->epoch = ag_xmalloc((size_t)l->nd * sizeof *p->epoch, "permutations");
    p->perm = ag_xcalloc((size_t)l->nd, sizeof *p->perm, "permutations");
    for (int d = 0; d < l->nd; d++) p->epoch[d] = -1;
}

static void ds_perms_free(ds_loader *l, ds_perms *p) {
    if (p->perm)
        for (int d = 0; d < l->nd; d++) free(p->perm[d]);
    free(p->perm);
    free(p->epoch);
}

// ---------------------------------------------------------------------------------------
// reader thread: startup

// The thread-local error handler of the reader: only while `ds_tl_catch` is set (HDF5 work,
// the loader's mutex not held) does a failure jump back; anywhere else it ends the process.
static _Thread_local jmp_buf *ds_tl_jmp;
static _Thread_local bool ds_tl_catch;
static _Thread_local char ds_tl_msg[2048];

static void ds_reader_handler(const char *msg) {
    if (!ds_tl_catch || !ds_tl_jmp) return; // ag_vfail prints and exits
    snprintf(ds_tl_msg, sizeof ds_tl_msg, "%s", msg);
    ds_tl_catch = false;
    longjmp(*ds_tl_jmp, 1);
}

static _Thread_local bool ds_tl_holds_hdf5; // this thread holds ds_hdf5_lock

static void ds_hdf5_enter(void) {
    ds_pt(pthread_mutex_lock(&ds_hdf5_lock), "pthread_mutex_lock (HDF5 lock)");
    ds_tl_holds_hdf5 = true;
    ds_tl_catch = true;
}

static void ds_hdf5_leave(void) {
    ds_tl_catch = false;
    ds_tl_holds_hdf5 = false;
    ds_pt(pthread_mutex_unlock(&ds_hdf5_lock), "pthread_mutex_unlock (HDF5 lock)");
}

// The process may exit (ag_fail anywhere, exit from main) while a reader is inside HDF5; HDF5
// shuts itself down from its own atexit handler, and doing that under a running read crashes.
// This handler, registered after HDF5's and so run before it, takes the HDF5 lock and keeps
// it: a reader finishes its current batch first, and no reader enters HDF5 again.
static pthread_once_t ds_exit_once = PTHREAD_ONCE_INIT;
static void ds_exit_guard(void) {
    if (!ds_tl_holds_hdf5) (void)pthread_mutex_lock(&ds_hdf5_lock); // released by process end
}
static void ds_register_exit_guard(void) {
    if (atexit(ds_exit_guard) != 0) ag_fail("loader: atexit failed");
}

static void ds_close_raw(ds_lshard *s) {
    for (int k = 0; k < 3; k++)
        if (s->raw_dset[k] >= 0) (void)H5Dclose(s->raw_dset[k]); // closing ids cannot fail
    if (s->raw_file >= 0) (void)H5Fclose(s->raw_file);
    for (int k = 0; k < 3; k++) s->raw_dset[k] = H5I_INVALID_HID;
    s->raw_file = H5I_INVALID_HID;
    s->raw_tried = false;
}

static void ds_close_shard(ds_loader *l, ds_lshard *s) {
    if (!s->handle) return;
    ds_close_raw(s);
    ds_shard_close(s->handle);
    s->handle = NULL;
    l->open_shards--;
}

// A mapped shard truncated in place under a running loader makes reads of the lost pages raise
// SIGBUS. While a thread reads a mapping it points ds_tl_bus at a jump buffer and the handler
// jumps back there, so the loader fails with a message instead of the process dying. Any other
// SIGBUS goes to the disposition that was there before.
static _Thread_local sigjmp_buf *volatile ds_tl_bus;
static struct sigaction ds_prev_bus;
static pthread_once_t ds_bus_once = PTHREAD_ONCE_INIT;
static bool ds_bus_ok;

static void ds_on_sigbus(int sig, siginfo_t *si, void *uc) {
    if (ds_tl_bus) siglongjmp(*ds_tl_bus, 1);
    if (ds_prev_bus.sa_flags & SA_SIGINFO) {
        ds_prev_bus.sa_sigaction(sig, si, uc);
    } else if (ds_prev_bus.sa_handler != SIG_DFL && ds_prev_bus.sa_handler != SIG_IGN) {
        ds_prev_bus.sa_handler(sig);
    } else { // the default: returning re-runs the faulting access, which now kills
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        (void)sigemptyset(&dfl.sa_mask);
        (void)sigaction(SIGBUS, &dfl, NULL);
    }
}

static void ds_install_sigbus(void) {
    struct sigaction sa = {.sa_sigaction = ds_on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER};
    ds_bus_ok = sigemptyset(&sa.sa_mask) == 0 && sigaction(SIGBUS, &sa, &ds_prev_bus) == 0;
}

static bool ds_same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

// Where chunk `offset` of d lies in the mapping, or -1. HDF5 reports chunk addresses relative
// to the file's base address (the user block) before 1.14.4 and absolute from then on, so the
// caller finds the adjustment once by comparing with H5Dread_chunk.
static int64_t ds_chunk_offset(const ds_lshard *s, hid_t d, const hsize_t *offset, int64_t adjust,
                               unsigned *filters, uint32_t *size) {
    haddr_t addr = HADDR_UNDEF;
    hsize_t n = 0;
    if (H5Dget_chunk_info_by_coord(d, offset, filters, &addr, &n) < 0 || addr == HADDR_UNDEF ||
        n == 0 || n > UINT32_MAX || addr > (haddr_t)s->map_len ||
        (uint64_t)adjust > s->map_len - addr || n > s->map_len - addr - (uint64_t)adjust)
        return -1;
    *size = (uint32_t)n;
    return (int64_t)addr + adjust;
}

// Which of the offsets 0 and ub puts chunk bytes buf[0, n), whose address says off, in the
// mapping: 0, ub, or -1 for neither. A SIGBUS while comparing (the file shrank) is neither.
static int64_t ds_match_adjust(const ds_lshard *s, int64_t off, const uint8_t *buf, uint32_t n,
                               int64_t ub) {
    volatile int64_t adjust = -1; // set after sigsetjmp, read after a jump back
    sigjmp_buf jb;
    if (!sigsetjmp(jb, 0)) {
        ds_tl_bus = &jb;
        const int64_t cand[2] = {0, ub};
        for (int c = 0; c < 2 && adjust < 0; c++)
            if ((uint64_t)(off + cand[c]) <= s->map_len - n &&
                !memcmp(s->map + off + cand[c], buf, n))
                adjust = cand[c];
    }
    ds_tl_bus = NULL;
    return adjust;
}

static void ds_unmap_shard(ds_lshard *s) {
    if (s->map) (void)munmap((void *)s->map, s->map_len);
    for (int k = 0; k < 3; k++) free(s->loc[k]), s->loc[k] = NULL, s->nloc[k] = 0;
    s->map = NULL, s->map_len = 0;
}

// Maps the shard file once ds_raw_setup has chosen its datasets (see ds_lshard.map). Any
// failure here only leaves the shard unmapped; a reopened shard that is no longer the file
// mapped is an error (its tokens and its media would come from different files).
static void ds_map_shard(ds_lshard *s, const int64_t rows[3]) {
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    bool ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
    if (s->map) {
        if (fd >= 0) (void)close(fd);
        if (!ok || !ds_same_file(&st, &s->map_stat))
            ag_fail("%s: the shard changed on disk while the loader was reading it", s->path);
        return;
    }
    // Without the SIGBUS guard a shard cut short while mapped would kill the process.
    if (pthread_once(&ds_bus_once, ds_install_sigbus) != 0 || !ds_bus_ok) ok = false;
    void *p = ok ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0) (void)close(fd); // the mapping keeps the file
    if (p == MAP_FAILED) return;
    s->map = p, s->map_len = (size_t)st.st_size, s->map_stat = st;
    // The adjustment, from the first row of the first mapped dataset.
    hsize_t ub = 0;
    hid_t fcpl = H5Fget_create_plist(s->raw_file);
    if (fcpl < 0 || H5Pget_userblock(fcpl, &ub) < 0) ub = 0;
    if (fcpl >= 0) (void)H5Pclose(fcpl);
    int k = 0;
    while (k < 3 && (s->raw_dset[k] < 0 || rows[k] == 0)) k++;
    int64_t adjust = -1;
    if (k < 3) {
        hsize_t offset[5] = {0, 0, 0, 0, 0};
        unsigned fm;
        uint32_t n = 0, filters = 0;
        int64_t off = ds_chunk_offset(s, s->raw_dset[k], offset, 0, &fm, &n);
        uint8_t *buf = off >= 0 ? malloc(n) : NULL;
        if (buf && H5Dread_chunk(s->raw_dset[k], H5P_DEFAULT, offset, &filters, buf) >= 0)
            adjust = ds_match_adjust(s, off, buf, n, (int64_t)ub);
        free(buf);
    }
    for (k = 0; k < 3 && adjust >= 0; k++)
        if (s->raw_dset[k] >= 0 && rows[k] > 0) {
            s->loc[k] = calloc((size_t)rows[k], sizeof *s->loc[k]);
            if (!s->loc[k]) adjust = -1;
            s->nloc[k] = rows[k];
        }
    if (adjust < 0)
        ds_unmap_shard(s);
    else
        s->adjust = adjust;
}

// Direct chunk reads: a second HDF5 handle on the (already validated) shard, and for each
// media kind the dataset when its chunks are single rows, zstd-compressed (filter 32015) or
// unfiltered: then H5Dread_chunk hands back a row's stored bytes and a worker decompresses
// them, instead of the reader decompressing (HDF5 runs filters in the calling thread). A
// dataset laid out any other way (h5py-written, other filters) stays with the shard layer.
static void ds_raw_setup(ds_loader *l, ds_lshard *s, ds_shard *sh) {
    s->raw_tried = true;
    if (l->cfg.no_direct_chunks) return;
    const ds_shard_header *h = ds_shard_get_header(sh);
    const int64_t rows[3] = {h->num_images, h->num_videos, h->num_audios};
    if (rows[0] + rows[1] + rows[2] == 0) return;
    // The shard layer opened the file with the strong close degree: a second open of the
    // same file must ask for the same.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0)
        s->raw_file = H5Fopen(s->path, H5F_ACC_RDONLY, fapl);
    if (fapl >= 0) (void)H5Pclose(fapl);
    if (s->raw_file < 0) {
        s->raw_file = H5I_INVALID_HID;
        return;
    }
    const uint16_t probe = 1; // float16 rows are widened by hand: little-endian hosts only
    bool little = *(const uint8_t *)&probe == 1;
    for (int k = 0; k < 3; k++) {
        if (rows[k] == 0 || (k == 2 && !little)) continue;
        hsize_t want[5], chunk[5];
        int rank;
        if (k == 0)
            want[1] = want[2] = (hsize_t)h->image_size, want[3] = 3, rank = 4;
        else if (k == 1)
            want[1] = (hsize_t)h->video_frames, want[2] = want[3] = (hsize_t)h->video_size,
            want[4] = 3, rank = 5;
        else
            want[1] = (hsize_t)h->audio_clips, want[2] = (hsize_t)h->audio_frames,
            want[3] = (hsize_t)h->audio_mels, rank = 4;
        want[0] = 1;
        hid_t d = H5Dopen2(s->raw_file, ds_media_name[k], H5P_DEFAULT);
        hid_t dcpl = d >= 0 ? H5Dget_create_plist(d) : H5I_INVALID_HID;
        bool ok =
            dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 5, chunk) == rank;
        for (int i = 0; ok && i < rank; i++) ok = chunk[i] == want[i];
        int nfilters = ok ? H5Pget_nfilters(dcpl) : -1;
        bool zstd = false;
        if (nfilters == 1) {
            unsigned flags, cd[8];
            size_t ncd = 8;
            char name[64];
            zstd =
                H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof name, name, NULL) == DS_H5ZSTD_ID;
        }
        ok = ok && (nfilters == 0 || zstd);
        if (dcpl >= 0) (void)H5Pclose(dcpl);
        if (ok) {
            s->raw_dset[k] = d;
            s->raw_zstd[k] = zstd;
        } else if (d >= 0) {
            (void)H5Dclose(d);
        }
    }
    if (!l->cfg.no_map && (s->raw_dset[0] >= 0 || s->raw_dset[1] >= 0 || s->raw_dset[2] >= 0))
        ds_map_shard(s, rows);
}

static void ds_close_all_shards(ds_loader *l) {
    for (int d = 0; d < l->nd; d++)
        for (int j = 0; j < l->ds[d].nshards; j++) ds_close_shard(l, &l->ds[d].shards[j]);
}

static ds_shard *ds_get_shard(ds_loader *l, ds_lshard *s) {
    if (!s->handle) {
        if (l->open_shards >= DS_MAX_OPEN) {
            ds_lshard *lru = NULL;
            for (int d = 0; d < l->nd; d++)
                for (int j = 0; j < l->ds[d].nshards; j++) {
                    ds_lshard *c = &l->ds[d].shards[j];
                    if (c->handle && (!lru || c->last_use < lru->last_use)) lru = c;
                }
            ds_close_shard(l, lru);
        }
        s->handle = ds_shard_open(s->path);
        l->open_shards++;
        if (ds_shard_num_samples(s->handle) != s->count)
            ag_fail("%s: %lld samples, the manifest says %lld (replaced while training?)", s->path,
                    (long long)ds_shard_num_samples(s->handle), (long long)s->count);
    }
    s->last_use = ++l->use_clock;
    return s->handle;
}

// One media kind's geometry must be the same in every shard that holds that kind: a batch is
// one (n, ...) array per kind.
static void ds_merge_geometry(ds_loader *l, int kind, const char *path, int64_t rows,
                              const int32_t *dims, int ndims, int32_t *have) {
    static const char *const names[3] = {"images", "videos", "audios"};
    if (rows == 0) return;
    if (have[0] == 0) {
        memcpy(have, dims, (size_t)ndims * sizeof *dims);
        l->geom_file[kind] = path;
        return;
    }
    if (memcmp(have, dims, (size_t)ndims * sizeof *dims) != 0) {
        char a[64], b[64];
        int ka = 0, kb = 0;
        for (int i = 0; i < ndims; i++) {
            ka += snprintf(a + ka, sizeof a - (size_t)ka, "%s%d", i ? "x" : "", dims[i]);
            kb += snprintf(b + kb, sizeof b - (size_t)kb, "%s%d", i ? "x" : "", have[i]);
        }
        ag_fail("%s: %s are %s, but %s has %s (one loader needs one geometry per media kind)", path,
                names[kind], a, l->geom_file[kind], b);
    }
}

// Patch tokens of kind in the shard's first sample that has an item of that kind (a sample has
// at most one), the same in every shard: shards do not record the pack's token counts, so the
// model's are checked against what a sample carries before the first batch splices them.
static void ds_merge_media_tokens(ds_loader *l, int kind, ds_shard *sh, const char *path) {
    static const char *const names[3] = {"image", "video", "audio"};
    // With the checks on, that sample is checked first (any block size: the count is asked).
    int64_t count = ds_shard_first_media_tokens(sh, kind, l->cfg.media_patch_id[kind],
                                                l->check_tokens ? &l->rules : NULL);
    if (count < 0) return;
    if (!l->tokens_file[kind]) {
        l->media_tokens[kind] = count;
        l->tokens_file[kind] = path;
    } else if (count != l->media_tokens[kind]) {
        ag_fail("%s: %s samples carry %lld patch tokens, but %s's carry %lld (one loader needs one "
                "token count per media kind)",
                path, names[kind], (long long)count, l->tokens_file[kind],
                (long long)l->media_tokens[kind]);
    }
}

static int32_t ds_intern_source(ds_loader *l, const char *name) {
    for (int i = 0; i < l->nsources; i++)
        if (strcmp(l->sources[i], name) == 0) return i;
    l->sources =
        ag_xrealloc(l->sources, (size_t)(l->nsources + 1) * sizeof *l->sources, "loader sources");
    l->sources[l->nsources] = ag_xstrdup(name);
    return l->nsources++;
}

// SHA-256 (hex, into out) of what fixes the stream besides the seed: the integer weights, and
// per dataset its shards in order with their sample counts and checksums; not the folder paths
// (a moved dataset is the same dataset) nor, in v2, the shard file names (pack alternates
// shard_N / shard_g1_N on each re-pack of a folder: the same bytes under other names).
// v1 (with the names) is what checkpoints before v2 hold; a resume accepts either.
static void ds_compute_digest(const ds_loader *l, int version, char out[65]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    char line[512];
    int n = snprintf(line, sizeof line, "groundc loader stream v%d\nperiod %lld\n", version,
                     (long long)l->period);
    ok = ok && EVP_DigestUpdate(ctx, line, (size_t)n) == 1;
    for (int d = 0; d < l->nd && ok; d++) {
        const ds_manifest *m = &l->ds[d].manifest;
        n = snprintf(line, sizeof line, "dataset %d q %lld samples %lld shards %d\n", d,
                     (long long)l->ds[d].q, (long long)l->ds[d].n, m->num_shards);
        ok = EVP_DigestUpdate(ctx, line, (size_t)n) == 1;
        for (int j = 0; j < m->num_shards && ok; j++) {
            const ds_manifest_shard *s = &m->shards[j];
            n = snprintf(line, sizeof line, "%s%s%lld %lld %s\n", version == 1 ? s->file : "",
                         version == 1 ? " " : "", (long long)s->num_samples,
                         (long long)s->num_tokens, s->sha256);
            ok = EVP_DigestUpdate(ctx, line, (size_t)n) == 1;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok) ag_fail("loader: SHA-256 of the dataset list failed (out of memory?)");
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool ds_same_stream(const ds_loader *l, const char *digest) {
    if (!strcmp(digest, l->digest)) return true;
    char v1[65];
    ds_compute_digest(l, 1, v1);
    return !strcmp(digest, v1);
}

bool ds_stream_matches(const ds_loader_dataset *datasets, int num_datasets, const char *digest) {
    ds_loader *l = ag_xcalloc(1, sizeof *l, "loader");
    l->nd = num_datasets;
    l->ds = ag_xcalloc((size_t)num_datasets, sizeof *l->ds, "loader datasets");
    for (int d = 0; d < l->nd; d++) {
        ds_manifest_read(&l->ds[d].manifest, datasets[d].dir);
        l->ds[d].n = l->ds[d].manifest.num_samples;
        l->ds[d].weight = datasets[d].weight;
    }
    ds_integer_weights(l);
    ds_compute_digest(l, 2, l->digest);
    bool same = ds_same_stream(l, digest);
    for (int d = 0; d < l->nd; d++) ds_manifest_free(&l->ds[d].manifest);
    free(l->ds);
    free(l);
    return same;
}

static void ds_alloc_slots(ds_loader *l) {
    int64_t B = l->cfg.micro, BT = B * l->cfg.max_len;
    size_t img = (size_t)l->image_size * (size_t)l->image_size * 3;
    size_t vid = (size_t)l->video_frames * (size_t)l->video_size * (size_t)l->video_size * 3;
    size_t aud = (size_t)l->audio_clips * (size_t)l->audio_frames * (size_t)l->audio_mels;
    l->slots = ag_xcalloc((size_t)l->nslots, sizeof *l->slots, "loader slots");
    for (int i = 0; i < l->nslots; i++) {
        ds_slot *s = &l->slots[i];
        ds_batch *b = &s->batch;
        s->index = -1;
        s->raw_off = ag_xcalloc((size_t)B + 1, sizeof *s->raw_off, "loader batch");
        s->jobs = ag_xcalloc((size_t)B * 3, sizeof *s->jobs, "loader batch");
        if (aud) s->half = ag_xmalloc(aud * sizeof *s->half, "loader audio row");
        b->ids = ag_xmalloc((size_t)BT * sizeof *b->ids, "loader batch");
        b->targets = ag_xmalloc((size_t)BT * sizeof *b->targets, "loader batch");
        b->lengths = ag_xcalloc((size_t)B, sizeof *b->lengths, "loader batch");
        b->positions = ag_xcalloc((size_t)B, sizeof *b->positions, "loader batch");
        b->dataset = ag_xcalloc((size_t)B, sizeof *b->dataset, "loader batch");
        b->sample = ag_xcalloc((size_t)B, sizeof *b->sample, "loader batch");
        b->task = ag_xcalloc((size_t)B, 1, "loader batch");
        b->granularity = ag_xcalloc((size_t)B, 1, "loader batch");
        b->source = ag_xcalloc((size_t)B, sizeof *b->source, "loader batch");
        b->image_index = ag_xcalloc((size_t)B, sizeof(int32_t), "loader batch");
        b->video_index = ag_xcalloc((size_t)B, sizeof(int32_t), "loader batch");
        b->audio_index = ag_xcalloc((size_t)B, sizeof(int32_t), "loader batch");
        b->image_size = l->image_size;
        b->video_frames = l->video_frames, b->video_size = l->video_size;
        b->audio_clips = l->audio_clips, b->audio_frames = l->audio_frames;
        b->audio_mels = l->audio_mels;
        if (img) {
            b->images = ag_xmalloc((size_t)B * img, "loader images");
            b->image_orig_size = ag_xmalloc((size_t)B * 2 * sizeof(int32_t), "loader images");
        }
        if (vid) {
            b->videos = ag_xmalloc((size_t)B * vid, "loader videos");
            b->video_duration = ag_xmalloc((size_t)B * sizeof(float), "loader videos");
        }
        if (aud) {
            b->audios = ag_xmalloc((size_t)B * aud * sizeof(float), "loader audios");
            b->audio_duration = ag_xmalloc((size_t)B * sizeof(float), "loader audios");
        }
    }
}

static void ds_startup(ds_loader *l) {
    l->check_tokens = l->cfg.vocab > 0 || l->cfg.check_media;
    l->rules.vocab = l->cfg.vocab;
    l->rules.media = l->cfg.check_media;
    for (int k = 0; k < 3; k++) {
        l->rules.start[k] = l->cfg.media_start_id[k];
        l->rules.patch[k] = l->cfg.media_patch_id[k];
        l->rules.end[k] = l->cfg.media_end_id[k];
        l->rules.tokens[k] = -1; // counted below (count_media_tokens), then set
    }
    for (int d = 0; d < l->nd; d++) {
        ds_ldataset *ds = &l->ds[d];
        ds_manifest_read(&ds->manifest, ds->dir);
        ds_manifest_verify(&ds->manifest, ds->dir, l->cfg.checksums);
        const ds_manifest *m = &ds->manifest;
        if (m->num_samples <= 0) ag_fail("%s: the dataset holds no samples", ds->dir);
        if (m->num_samples > INT32_MAX)
            ag_fail("%s: %lld samples (the loader takes at most %d per dataset)", ds->dir,
                    (long long)m->num_samples, INT32_MAX);
        ds->n = m->num_samples;
        ds->shards = ag_xcalloc((size_t)m->num_shards, sizeof *ds->shards, "loader shards");
        int64_t first = 0;
        for (int j = 0; j < m->num_shards; j++) {
            ds_lshard *s = &ds->shards[j];
            size_t len = strlen(ds->dir) + strlen(m->shards[j].file) + 2;
            s->path = ag_xmalloc(len, "shard path");
            snprintf(s->path, len, "%s/%s", ds->dir, m->shards[j].file);
            s->first = first;
            s->count = m->shards[j].num_samples;
            s->raw_file = s->raw_dset[0] = s->raw_dset[1] = s->raw_dset[2] = H5I_INVALID_HID;
            first += s->count;
            ds->nshards = j + 1;
            // Opened now for geometry and source names; kept open while there is room.
            ds_shard *sh = ds_get_shard(l, s);
            const ds_shard_header *h = ds_shard_get_header(sh);
            int32_t img[1] = {h->image_size}, vid[2] = {h->video_frames, h->video_size};
            int32_t aud[3] = {h->audio_clips, h->audio_frames, h->audio_mels};
            int32_t have_img[1] = {l->image_size}, have_vid[2] = {l->video_frames, l->video_size};
            int32_t have_aud[3] = {l->audio_clips, l->audio_frames, l->audio_mels};
            ds_merge_geometry(l, 0, s->path, h->num_images, img, 1, have_img);
            ds_merge_geometry(l, 1, s->path, h->num_videos, vid, 2, have_vid);
            ds_merge_geometry(l, 2, s->path, h->num_audios, aud, 3, have_aud);
            if (l->cfg.count_media_tokens) {
                int64_t rows[3] = {h->num_images, h->num_videos, h->num_audios};
                for (int k = 0; k < 3; k++)
                    if (rows[k]) ds_merge_media_tokens(l, k, sh, s->path);
            }
            l->image_size = have_img[0];
            l->video_frames = have_vid[0], l->video_size = have_vid[1];
            l->audio_clips = have_aud[0], l->audio_frames = have_aud[1];
            l->audio_mels = have_aud[2];
            s->source_map = ag_xmalloc((size_t)(h->num_sources + 1) * sizeof(int32_t), "sources");
            for (int k = 0; k < h->num_sources; k++)
                s->source_map[k] = ds_intern_source(l, ds_shard_source_name(sh, k));
        }
    }
    for (int k = 0; k < 3; k++) l->rules.tokens[k] = l->tokens_file[k] ? l->media_tokens[k] : -1;
    ds_compute_digest(l, 2, l->digest);
    if (l->has_resume && !ds_same_stream(l, l->resume.digest)) {
        ag_fail("%s: dataset digest %.12s... differs from this configuration's "
                "%.12s... (datasets, their order, weights or shards' contents changed)",
                l->resume_from, l->resume.digest, l->digest);
    }
    ds_alloc_slots(l);
    ds_perms_init(l, &l->reader_perms);
    ds_perms_init(l, &l->user_perms);
}

// ---------------------------------------------------------------------------------------
// reader thread: batches

static int ds_find_shard(const ds_ldataset *ds, int64_t sample) {
    int lo = 0, hi = ds->nshards - 1;
    while (lo < hi) { // last shard whose first sample is <= sample
        int mid = (lo + hi + 1) / 2;
        if (ds->shards[mid].first <= sample)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Media row `row` of kind k into dst: its stored chunk goes to the slot's stage for the
// collating thread to decompress, or (no direct reads for this dataset) the shard layer
// reads and decompresses it here.
static void ds_fetch_media(ds_loader *l, ds_slot *slot, ds_lshard *ls, ds_shard *sh, int k,
                           int32_t row, void *dst) {
    if (!ls->raw_tried) ds_raw_setup(l, ls, sh);
    hid_t d = ls->raw_dset[k];
    if (d < 0) {
        if (k == 0) ds_shard_read_image(sh, row, dst);
        if (k == 1) ds_shard_read_video(sh, row, dst);
        if (k == 2) ds_shard_read_audio(sh, row, dst);
        return;
    }
    hsize_t offset[5] = {(hsize_t)row, 0, 0, 0, 0};
    ds_job *j = &slot->jobs[slot->njobs++];
    if (ls->map && row >= 0 && row < ls->nloc[k]) {
        ds_chunk_loc *c = &ls->loc[k][row];
        if (!c->size) {
            unsigned fm = 0;
            int64_t off = ds_chunk_offset(ls, d, offset, ls->adjust, &fm, &c->size);
            if (off < 0)
                ag_fail("%s: dataset '%s': row %d: its chunk is missing or lies past the end of "
                        "the file (truncated?)",
                        ls->path, ds_media_name[k], row);
            c->offset = (uint64_t)off, c->filters = fm;
        }
        j->mapped = ls->map + c->offset, j->src = 0, j->size = c->size;
        j->zstd = ls->raw_zstd[k] && !(c->filters & 1); // bit 0 set: the filter was skipped
    } else {
        hsize_t bytes = 0;
        if (H5Dget_chunk_storage_size(d, offset, &bytes) < 0 || bytes == 0 || bytes > UINT32_MAX)
            ag_fail("%s: dataset '%s': row %d: its chunk is missing or unreadable", ls->path,
                    ds_media_name[k], row);
        size_t used = slot->stage_used;
        if (used + bytes > slot->stage_cap) {
            size_t cap = slot->stage_cap ? slot->stage_cap : 1 << 20;
            while (cap < used + bytes) cap *= 2;
            slot->stage = ag_xrealloc(slot->stage, cap, "loader media chunks");
            slot->stage_cap = cap;
        }
        uint32_t filters = 0;
        if (H5Dread_chunk(d, H5P_DEFAULT, offset, &filters, slot->stage + used) < 0)
            ag_fail("%s: dataset '%s': row %d: read failed (truncated file?)", ls->path,
                    ds_media_name[k], row);
        slot->stage_used = used + bytes;
        j->mapped = NULL, j->src = used, j->size = (size_t)bytes;
        j->zstd = ls->raw_zstd[k] && !(filters & 1);
    }
    j->kind = k, j->row = row, j->dst = dst;
    j->position = l->ctx_position, j->sample = l->ctx_sample, j->local = l->ctx_local;
    j->dataset = l->ctx_dataset, j->path = ls->path;
}

static void ds_read_batch(ds_loader *l, ds_slot *slot, int64_t b) {
    ds_batch *bt = &slot->batch;
    int64_t B = l->cfg.micro;
    int64_t base = l->start + b * l->stride + (int64_t)l->cfg.rank * B;
    size_t img = (size_t)l->image_size * (size_t)l->image_size * 3;
    size_t vid = (size_t)l->video_frames * (size_t)l->video_size * (size_t)l->video_size * 3;
    size_t aud = (size_t)l->audio_clips * (size_t)l->audio_frames * (size_t)l->audio_mels;
    int64_t off = 0, ni = 0, nv = 0, na = 0;
    slot->njobs = 0, slot->stage_used = 0;
    for (int64_t i = 0; i < B; i++) {
        int64_t pos = base + i, sample;
        int32_t d;
        ds_locate_with(l, &l->reader_perms, pos, &d, &sample);
        ds_ldataset *ds = &l->ds[d];
        int j = ds_find_shard(ds, sample);
        ds_lshard *ls = &ds->shards[j];
        int64_t local = sample - ls->first;
        l->ctx_valid = true;
        l->ctx_position = pos, l->ctx_dataset = d, l->ctx_sample = sample;
        l->ctx_shard = j, l->ctx_local = local;

        ds_shard *sh = ds_get_shard(l, ls);
        ds_sample_ref r = ds_shard_sample(sh, local);
        if (!slot->raw_tok || off + r.length > slot->raw_cap) { // NULL + 0 is undefined too
            int64_t cap = slot->raw_cap ? slot->raw_cap : 4096;
            while (cap < off + r.length) cap *= 2;
            slot->raw_tok = ag_xrealloc(slot->raw_tok, (size_t)cap * sizeof(int32_t), "tokens");
            slot->raw_mask = ag_xrealloc(slot->raw_mask, (size_t)cap, "tokens");
            slot->raw_cap = cap;
        }
        ds_shard_read_tokens(sh, local, 1, slot->raw_tok + off, slot->raw_mask + off);
        int64_t keep = ds_min64(r.length, l->cfg.max_len);
        bool drop[3] = {false, false, false};
        if (l->check_tokens) {
            const int32_t media[3] = {r.image, r.video, r.audio};
            ds_sample_blocks blk;
            char why[512];
            if (!ds_sample_check(&l->rules, slot->raw_tok + off, r.length, media, &blk, why,
                                 sizeof why))
                ag_fail("%s: sample %lld: %s", ls->path, (long long)local, why);
            // A cut through a block moves to before its start token (blocks do not overlap, so
            // no other block is split then); a block cut off, whole or in part, drops its row.
            for (int k = 0; k < 3; k++)
                if (blk.begin[k] >= 0 && blk.begin[k] < keep && blk.end[k] > keep)
                    keep = blk.begin[k];
            for (int k = 0; k < 3; k++) drop[k] = blk.begin[k] >= 0 && blk.end[k] > keep;
        }
        slot->raw_off[i] = off;
        off += r.length;
        bt->lengths[i] = (int32_t)keep;
        bt->positions[i] = pos;
        bt->dataset[i] = d;
        bt->sample[i] = sample;
        bt->task[i] = r.task;
        bt->granularity[i] = r.granularity;
        bt->source[i] = l->sources[ls->source_map[r.source]];
        bt->image_index[i] = bt->video_index[i] = bt->audio_index[i] = -1;
        if (drop[0]) r.image = -1;
        if (drop[1]) r.video = -1;
        if (drop[2]) r.audio = -1;
        if (r.image >= 0) {
            ds_fetch_media(l, slot, ls, sh, 0, r.image, bt->images + (size_t)ni * img);
            ds_shard_image_orig_size(sh, r.image, bt->image_orig_size + 2 * ni);
            bt->image_index[i] = (int32_t)ni++;
        }
        if (r.video >= 0) {
            ds_fetch_media(l, slot, ls, sh, 1, r.video, bt->videos + (size_t)nv * vid);
            bt->video_duration[nv] = ds_shard_video_duration(sh, r.video);
            bt->video_index[i] = (int32_t)nv++;
        }
        if (r.audio >= 0) {
            ds_fetch_media(l, slot, ls, sh, 2, r.audio, bt->audios + (size_t)na * aud);
            bt->audio_duration[na] = ds_shard_audio_duration(sh, r.audio);
            bt->audio_index[i] = (int32_t)na++;
        }
    }
    l->ctx_valid = false;
    slot->raw_off[B] = off;
    bt->B = B;
    bt->n_images = ni, bt->n_videos = nv, bt->n_audios = na;
    int64_t m = l->m0 + b;
    bt->step = m / l->cfg.accumulation;
    bt->accum = m % l->cfg.accumulation;
}

// Decompresses the slot's media chunks into the batch. On a damaged chunk returns false with
// the shard layer's kind of message (file, dataset, row) and the sample it belongs to.
static bool ds_decode_media(ds_loader *l, ds_slot *slot, char *err, size_t n) {
    size_t aud = (size_t)l->audio_clips * (size_t)l->audio_frames * (size_t)l->audio_mels;
    size_t row_bytes[3] = {
        (size_t)l->image_size * (size_t)l->image_size * 3,
        (size_t)l->video_frames * (size_t)l->video_size * (size_t)l->video_size * 3, aud * 2};
    volatile int at = 0; // the job being read when a mapping faulted
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        ds_tl_bus = NULL;
        const ds_job *j = &slot->jobs[at];
        snprintf(err, n,
                 "%s: dataset '%s': row %d: read failed (the file shrank while being read: "
                 "truncated in place?) (stream position %lld: dataset %d sample %lld)",
                 j->path, ds_media_name[j->kind], j->row, (long long)j->position, j->dataset,
                 (long long)j->sample);
        return false;
    }
    ds_tl_bus = &jb;
    for (int i = 0; i < slot->njobs; i++) {
        at = i;
        const ds_job *j = &slot->jobs[i];
        void *out = j->kind == 2 ? (void *)slot->half : j->dst;
        size_t want = row_bytes[j->kind], got = j->size;
        const char *why = NULL;
        const uint8_t *src = j->mapped ? j->mapped : slot->stage + j->src;
        if (!j->zstd) {
            if (got == want) memcpy(out, src, want);
        } else {
            if (!slot->dctx && !(slot->dctx = ZSTD_createDCtx())) {
                ds_tl_bus = NULL;
                snprintf(err, n, "loader: out of memory creating a zstd context");
                return false;
            }
            got = ZSTD_decompressDCtx(slot->dctx, out, want, src, j->size);
            if (ZSTD_isError(got)) why = ZSTD_getErrorName(got);
        }
        if (why || got != want) {
            const char *slash = strrchr(j->path, '/');
            ds_tl_bus = NULL;
            snprintf(err, n,
                     "%s: dataset '%s': row %d: read failed (corrupt or truncated chunk: %s) "
                     "(stream position %lld: dataset %d sample %lld = sample %lld of %s)",
                     j->path, ds_media_name[j->kind], j->row, why ? why : "wrong decoded size",
                     (long long)j->position, j->dataset, (long long)j->sample, (long long)j->local,
                     slash ? slash + 1 : j->path);
            return false;
        }
        if (j->kind == 2) {
            // NaN in an fbank makes every loss NaN: training skips the steps and nobody blames
            // the data. Exponent bits all ones: an inf or a NaN.
            bool bad = false;
            for (size_t e = 0; e < aud; e++) {
                bad |= (slot->half[e] & 0x7c00u) == 0x7c00u;
                ((float *)j->dst)[e] = ds_f16_table[slot->half[e]];
            }
            if (bad) {
                size_t e = 0;
                while ((slot->half[e] & 0x7c00u) != 0x7c00u) e++;
                size_t tm = (size_t)l->audio_frames * (size_t)l->audio_mels;
                const char *slash = strrchr(j->path, '/');
                ds_tl_bus = NULL;
                snprintf(err, n,
                         "%s: dataset 'audios': row %d: element %zu (clip %zu, frame %zu, mel %zu) "
                         "is %s (fbank values must be finite) (stream position %lld: dataset %d "
                         "sample %lld = sample %lld of %s)",
                         j->path, j->row, e, e / tm, e % tm / (size_t)l->audio_mels,
                         e % (size_t)l->audio_mels,
                         (slot->half[e] & 0x3ffu)    ? "NaN"
                         : (slot->half[e] & 0x8000u) ? "-inf"
                                                     : "+inf",
                         (long long)j->position, j->dataset, (long long)j->sample,
                         (long long)j->local, slash ? slash + 1 : j->path);
                return false;
            }
        }
    }
    ds_tl_bus = NULL;
    return true;
}

// Media, then padded ids and shifted targets from the raw token runs (loader.h says why the
// shift is here). False (message in err) when a media chunk is damaged.
static bool ds_collate(ds_loader *l, ds_slot *slot, char *err, size_t n) {
    if (!ds_decode_media(l, slot, err, n)) return false;
    ds_batch *bt = &slot->batch;
    int64_t B = bt->B, T = 1;
    for (int64_t i = 0; i < B; i++) T = bt->lengths[i] > T ? bt->lengths[i] : T;
    bt->T = T;
    int32_t pad = l->cfg.pad_id;
    for (int64_t i = 0; i < B; i++) {
        const int32_t *tok = slot->raw_tok + slot->raw_off[i];
        const uint8_t *mask = slot->raw_mask + slot->raw_off[i];
        int64_t len = bt->lengths[i];
        int32_t *ids = bt->ids + i * T, *tgt = bt->targets + i * T;
        for (int64_t t = 0; t < len; t++) {
            ids[t] = tok[t];
            tgt[t] = t + 1 < len && mask[t + 1] ? tok[t + 1] : DS_IGNORE_TARGET;
        }
        for (int64_t t = len; t < T; t++) ids[t] = pad, tgt[t] = DS_IGNORE_TARGET;
    }
    return true;
}

// Records a failure at batch b (the smallest one wins) and wakes everyone.
static void ds_set_failed(ds_loader *l, int64_t b, const char *msg) {
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    if (!l->failed || b < l->fail_batch) {
        l->failed = true;
        l->fail_batch = b;
        snprintf(l->fail_msg, sizeof l->fail_msg, "%s", msg);
    }
    ds_pt(pthread_cond_broadcast(&l->cv_consumer), "pthread_cond_broadcast");
    ds_pt(pthread_cond_broadcast(&l->cv_worker), "pthread_cond_broadcast");
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
}

static void *ds_reader_main(void *arg) {
    ds_loader *l = arg;
    jmp_buf jb;
    ds_tl_jmp = &jb;
    ag_set_error_handler(ds_reader_handler);
    if (setjmp(jb) != 0) {
        // A shard (or allocation) failure: say which stream position it was reading.
        char msg[2048];
        if (l->ctx_valid) {
            const char *path = l->ds[l->ctx_dataset].shards[l->ctx_shard].path;
            const char *slash = strrchr(path, '/');
            snprintf(msg, sizeof msg,
                     "%.1600s (stream position %lld: dataset %d sample %lld = sample %lld of "
                     "%.200s)",
                     ds_tl_msg, (long long)l->ctx_position, l->ctx_dataset,
                     (long long)l->ctx_sample, (long long)l->ctx_local, slash ? slash + 1 : path);
        } else {
            snprintf(msg, sizeof msg, "%s", ds_tl_msg);
        }
        ag_set_error_handler(NULL); // a second failure while cleaning up ends the process
        if (!ds_tl_holds_hdf5) ds_pt(pthread_mutex_lock(&ds_hdf5_lock), "pthread_mutex_lock");
        ds_tl_holds_hdf5 = true;
        ds_close_all_shards(l);
        ds_hdf5_leave();
        ds_set_failed(l, l->reading_batch, msg);
        return NULL;
    }

    l->reading_batch = -1;
    ds_hdf5_enter();
    ds_startup(l);
    ds_hdf5_leave();
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    l->started = true;
    ds_pt(pthread_cond_broadcast(&l->cv_consumer), "pthread_cond_broadcast");
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");

    for (int64_t b = 0;; b++) {
        ds_slot *slot = &l->slots[b % l->nslots];
        ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
        while (!l->stop && !l->failed && slot->state != DS_FREE)
            ds_pt(pthread_cond_wait(&l->cv_reader, &l->mu), "pthread_cond_wait");
        bool stop = l->stop || l->failed; // after a worker's failure nothing more is needed
        if (!stop) slot->state = DS_READING, slot->index = b;
        ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
        if (stop) break;

        l->reading_batch = b;
        ds_hdf5_enter();
        ds_read_batch(l, slot, b);
        ds_hdf5_leave();
        bool inline_collate = l->cfg.threads == 0;
        char err[2048];
        if (inline_collate && !ds_collate(l, slot, err, sizeof err)) {
            ds_set_failed(l, b, err);
            break;
        }

        ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
        slot->state = inline_collate ? DS_READY : DS_READ;
        if (inline_collate)
            ds_pt(pthread_cond_signal(&l->cv_consumer), "pthread_cond_signal");
        else
            ds_pt(pthread_cond_signal(&l->cv_worker), "pthread_cond_signal");
        ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
    }
    ds_hdf5_enter();
    ds_close_all_shards(l);
    ds_hdf5_leave();
    return NULL;
}

// Collate workers: take the oldest read batch, pad it, hand it to the consumer.
static void *ds_worker_main(void *arg) {
    ds_loader *l = arg;
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    for (;;) {
        ds_slot *pick = NULL;
        for (int i = 0; i < l->nslots; i++) {
            ds_slot *s = &l->slots[i];
            if (s->state == DS_READ && (!pick || s->index < pick->index)) pick = s;
        }
        if (!pick) {
            if (l->stop) break;
            ds_pt(pthread_cond_wait(&l->cv_worker, &l->mu), "pthread_cond_wait");
            continue;
        }
        pick->state = DS_COLLATING;
        ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
        char err[2048];
        bool ok = ds_collate(l, pick, err, sizeof err);
        if (!ok) ds_set_failed(l, pick->index, err); // the slot stays COLLATING: never delivered
        ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
        if (ok) pick->state = DS_READY;
        ds_pt(pthread_cond_broadcast(&l->cv_consumer), "pthread_cond_broadcast");
    }
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
    return NULL;
}

// ---------------------------------------------------------------------------------------
// public API

// Frees everything; the threads must be gone (they closed their shards themselves).
static void ds_loader_free(ds_loader *l) {
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            ds_slot *s = &l->slots[i];
            ds_batch *b = &s->batch;
            free(s->raw_tok), free(s->raw_mask), free(s->raw_off), free(s->jobs);
            free(s->stage), free(s->half);
            ZSTD_freeDCtx(s->dctx); // NULL is fine
            free(b->ids), free(b->targets), free(b->lengths), free(b->positions);
            free(b->dataset), free(b->sample), free(b->task), free(b->granularity);
            free(b->source), free(b->image_index), free(b->video_index), free(b->audio_index);
            free(b->images), free(b->image_orig_size), free(b->videos), free(b->video_duration);
            free(b->audios), free(b->audio_duration);
        }
    free(l->slots);
    if (l->ds) {
        ds_perms_free(l, &l->reader_perms);
        ds_perms_free(l, &l->user_perms);
        for (int d = 0; d < l->nd; d++) {
            ds_ldataset *ds = &l->ds[d];
            for (int j = 0; j < ds->nshards; j++)
                ds_unmap_shard(&ds->shards[j]), free(ds->shards[j].path),
                    free(ds->shards[j].source_map);
            free(ds->shards);
            ds_manifest_free(&ds->manifest);
            free(ds->dir);
        }
    }
    free(l->ds);
    for (int i = 0; i < l->nsources; i++) free(l->sources[i]);
    free(l->sources), free(l->sched), free(l->sched_rank), free(l->workers);
    if (l->sync_init) {
        (void)pthread_cond_destroy(&l->cv_reader); // nothing waits any more: cannot fail
        (void)pthread_cond_destroy(&l->cv_worker);
        (void)pthread_cond_destroy(&l->cv_consumer);
        (void)pthread_mutex_destroy(&l->mu);
    }
    free(l);
}

// Stops and joins every thread of l.
static void ds_loader_stop(ds_loader *l) {
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    l->stop = true;
    ds_pt(pthread_cond_broadcast(&l->cv_reader), "pthread_cond_broadcast");
    ds_pt(pthread_cond_broadcast(&l->cv_worker), "pthread_cond_broadcast");
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
    if (l->reader_running) ds_pt(pthread_join(l->reader, NULL), "pthread_join");
    l->reader_running = false;
    for (int i = 0; i < l->nworkers; i++) ds_pt(pthread_join(l->workers[i], NULL), "pthread_join");
    l->nworkers = 0;
}

static void ds_check_config(const ds_loader_config *c) {
    if (!c) ag_fail("loader: NULL config");
    if (c->num_datasets < 1 || c->num_datasets > DS_LOADER_MAX_DATASETS || !c->datasets)
        ag_fail("loader: %d datasets (expected 1..%d)", c->num_datasets, DS_LOADER_MAX_DATASETS);
    for (int d = 0; d < c->num_datasets; d++) {
        const ds_loader_dataset *ds = &c->datasets[d];
        if (!ds->dir || !ds->dir[0]) ag_fail("loader: dataset %d: no folder given", d);
        if (!(ds->weight > 0) || !isfinite(ds->weight))
            ag_fail("loader: dataset %d (%s): weight %g is not a positive number", d, ds->dir,
                    ds->weight);
    }
    if (c->micro < 1 || c->accumulation < 1)
        ag_fail("loader: micro %lld and accumulation %lld must be >= 1", (long long)c->micro,
                (long long)c->accumulation);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        ag_fail("loader: rank %d of world %d is not a valid rank", c->rank, c->world);
    if (c->micro > INT32_MAX / c->world)
        ag_fail("loader: micro %lld x world %d is too large", (long long)c->micro, c->world);
    if (c->max_len < 1 || c->max_len > INT32_MAX / c->micro)
        ag_fail("loader: max_len %lld out of range", (long long)c->max_len);
    if (c->prefetch < 0 || c->prefetch > DS_MAX_PREFETCH)
        ag_fail("loader: prefetch %d out of range (0..%d)", c->prefetch, DS_MAX_PREFETCH);
    if (c->vocab < 0 || c->vocab > (int64_t)INT32_MAX + 1)
        ag_fail("loader: vocab %lld out of range", (long long)c->vocab);
    if (c->threads < 0 || c->threads > DS_MAX_THREADS)
        ag_fail("loader: threads %d out of range (0..%d)", c->threads, DS_MAX_THREADS);
    if (c->resume) {
        const ds_cursor *r = c->resume;
        const char *from = c->resume_from ? c->resume_from : "resume cursor";
        int64_t stride = c->micro * c->world;
        if (r->seed != c->seed)
            ag_fail("%s: seed %llu, but the config says %llu", from, (unsigned long long)r->seed,
                    (unsigned long long)c->seed);
        if (r->position < 0 || r->position % stride != 0)
            ag_fail("%s: position %lld is not a multiple of micro x world = %lld", from,
                    (long long)r->position, (long long)stride);
        if (!ds_is_sha256_hex(r->digest)) ag_fail("%s: digest is not a 64-digit hex SHA-256", from);
    }
}

ds_loader *ds_loader_open(const ds_loader_config *cfg) {
    ds_check_config(cfg);
    ds_pt(pthread_once(&ds_f16_once, ds_f16_table_init), "pthread_once");
    ds_loader *l = ag_xcalloc(1, sizeof *l, "loader");
    l->cfg = *cfg;
    l->cfg.datasets = NULL;
    l->cfg.resume = NULL;
    l->cfg.resume_from = NULL;
    snprintf(l->resume_from, sizeof l->resume_from, "%s",
             cfg->resume_from ? cfg->resume_from : "resume cursor");
    if (l->cfg.prefetch == 0) l->cfg.prefetch = 4;
    l->nd = cfg->num_datasets;
    l->ds = ag_xcalloc((size_t)l->nd, sizeof *l->ds, "loader datasets");
    for (int d = 0; d < l->nd; d++) {
        l->ds[d].dir = ag_xstrdup(cfg->datasets[d].dir);
        l->ds[d].weight = cfg->datasets[d].weight;
    }
    if (cfg->resume) l->resume = *cfg->resume, l->has_resume = true;
    l->stride = cfg->micro * cfg->world;
    l->start = l->has_resume ? l->resume.position : 0;
    l->m0 = l->start / l->stride;
    l->nslots = l->cfg.prefetch + 1;
    l->held = -1;
    ds_build_schedule(l);

    int rc = pthread_mutex_init(&l->mu, NULL);
    if (rc == 0 && (rc = pthread_cond_init(&l->cv_reader, NULL)) != 0)
        (void)pthread_mutex_destroy(&l->mu);
    if (rc == 0 && (rc = pthread_cond_init(&l->cv_worker, NULL)) != 0) {
        (void)pthread_cond_destroy(&l->cv_reader);
        (void)pthread_mutex_destroy(&l->mu);
    }
    if (rc == 0 && (rc = pthread_cond_init(&l->cv_consumer, NULL)) != 0) {
        (void)pthread_cond_destroy(&l->cv_worker);
        (void)pthread_cond_destroy(&l->cv_reader);
        (void)pthread_mutex_destroy(&l->mu);
    }
    if (rc != 0) {
        ds_loader_free(l);
        ag_fail("loader: cannot create its mutex / condition variables: %s", strerror(rc));
    }
    l->sync_init = true;

    if ((rc = pthread_create(&l->reader, NULL, ds_reader_main, l)) != 0) {
        ds_loader_free(l);
        ag_fail("loader: cannot start the reader thread: %s", strerror(rc));
    }
    l->reader_running = true;
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    while (!l->started && !l->failed)
        ds_pt(pthread_cond_wait(&l->cv_consumer, &l->mu), "pthread_cond_wait");
    bool failed = !l->started;
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
    char msg[2048];
    if (failed) {
        snprintf(msg, sizeof msg, "%s", l->fail_msg);
        ds_loader_stop(l);
        ds_loader_free(l);
        ag_fail("%s", msg);
    }

    // HDF5 is initialised by now (the reader opened shards): the guard runs before its exit.
    ds_pt(pthread_once(&ds_exit_once, ds_register_exit_guard), "pthread_once");
    l->workers = ag_xcalloc((size_t)cfg->threads + 1, sizeof *l->workers, "loader threads");
    // Batches the reader finishes before the workers start wait for them in state READ.
    for (int i = 0; i < cfg->threads; i++) {
        if ((rc = pthread_create(&l->workers[i], NULL, ds_worker_main, l)) == 0) l->nworkers++;
        if (rc != 0) {
            ds_loader_stop(l);
            ds_loader_free(l);
            ag_fail("loader: cannot start collate thread %d: %s", i, strerror(rc));
        }
    }
    return l;
}

const ds_batch *ds_loader_next(ds_loader *l) {
    ds_pt(pthread_mutex_lock(&l->mu), "pthread_mutex_lock");
    if (l->held >= 0) {
        l->slots[l->held].state = DS_FREE;
        l->held = -1;
        ds_pt(pthread_cond_signal(&l->cv_reader), "pthread_cond_signal");
    }
    int64_t b = l->next_batch;
    int i = (int)(b % l->nslots);
    ds_slot *slot = &l->slots[i];
    while (!(slot->state == DS_READY && slot->index == b) && !(l->failed && l->fail_batch <= b))
        ds_pt(pthread_cond_wait(&l->cv_consumer, &l->mu), "pthread_cond_wait");
    if (!(slot->state == DS_READY && slot->index == b)) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", l->fail_msg);
        ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
        ds_loader_stop(l); // nothing keeps running behind the failure (close still frees)
        ag_fail("%s", msg);
    }
    slot->state = DS_HELD;
    l->held = i;
    l->next_batch++;
    ds_pt(pthread_mutex_unlock(&l->mu), "pthread_mutex_unlock");
    return &slot->batch;
}

ds_cursor ds_loader_cursor(const ds_loader *l) {
    ds_cursor c;
    memset(&c, 0, sizeof c);
    c.seed = l->cfg.seed;
    c.position = l->start + l->next_batch * l->stride;
    memcpy(c.digest, l->digest, sizeof c.digest);
    return c;
}

void ds_loader_close(ds_loader *l) {
    if (!l) return;
    ds_loader_stop(l);
    ds_loader_free(l);
}

void ds_loader_locate(ds_loader *l, int64_t position, int32_t *dataset, int64_t *sample) {
    if (position < 0) ag_fail("loader: stream position %lld is negative", (long long)position);
    ds_locate_with(l, &l->user_perms, position, dataset, sample);
}

int64_t ds_loader_dataset_samples(const ds_loader *l, int d) {
    if (d < 0 || d >= l->nd) ag_fail("loader: dataset %d out of range (%d datasets)", d, l->nd);
    return l->ds[d].n;
}

void ds_loader_schedule(const ds_loader *l, int64_t *q, int64_t *period) {
    for (int d = 0; d < l->nd; d++) q[d] = l->ds[d].q;
    *period = l->period;
}

ds_media_geometry ds_loader_geometry(const ds_loader *l, ds_media_kind kind) {
    ds_media_geometry g = {{0, 0, 0}, NULL, -1};
    if (kind == DS_MEDIA_IMAGE && l->geom_file[0])
        g = (ds_media_geometry){{l->image_size, 0, 0}, l->geom_file[0], -1};
    else if (kind == DS_MEDIA_VIDEO && l->geom_file[1])
        g = (ds_media_geometry){{l->video_frames, l->video_size, 0}, l->geom_file[1], -1};
    else if (kind == DS_MEDIA_AUDIO && l->geom_file[2])
        g = (ds_media_geometry){
            {l->audio_clips, l->audio_frames, l->audio_mels}, l->geom_file[2], -1};
    if (g.file && l->tokens_file[kind]) g.tokens = l->media_tokens[kind];
    return g;
}
