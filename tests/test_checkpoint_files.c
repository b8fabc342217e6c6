// test_checkpoint_files.c: the file-level rules of train/checkpoint.h that need no training
// run. tr_remove_tree removes a folder as rm -r does: a symbolic link (the folder itself or an
// entry inside it) goes itself and the folder it names is left whole. tr_ckpt_latest follows
// OUT/latest, and without that link falls back to the newest step_N folder (a run killed
// between renaming its checkpoint into place and moving the link), never to a .tmp one.
// Also the checked helpers every writer relies on (autograd/error.h): folder syncs fail on a
// folder that is not there, and cJSON running out of memory is a one-line failure.
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "testlib.h"
#include "train/checkpoint.h"

static char root[64];

static void touch(const char *path) {
    FILE *f = fopen(path, "w");
    TL_CHECK(f && fputs("x", f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static const char *at(const char *rel) {
    static char buf[4][256];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", root, rel);
    return b;
}

static void remove_tree(void) {
    // a folder the links point at, which must survive
    TL_CHECK(mkdir(at("precious"), 0777) == 0, "mkdir precious");
    touch(at("precious/notes.txt"));
    // a tree holding a file, a subfolder and a link to the precious folder
    TL_CHECK(mkdir(at("tree"), 0777) == 0 && mkdir(at("tree/sub"), 0777) == 0, "mkdir tree");
    touch(at("tree/a"));
    touch(at("tree/sub/b"));
    TL_CHECK(symlink("../precious", at("tree/link")) == 0, "symlink in tree");
    tr_remove_tree(at("tree"));
    TL_CHECK(!exists(at("tree")), "tree still there");
    TL_CHECK(exists(at("precious/notes.txt")), "a link inside the tree was followed");
    // the folder to remove is itself a link: the link goes, its target stays
    TL_CHECK(symlink("precious", at("out")) == 0, "symlink out");
    tr_remove_tree(at("out"));
    TL_CHECK(!exists(at("out")), "the link was not removed");
    TL_CHECK(exists(at("precious/notes.txt")), "the folder behind the link was emptied");
    // a plain file, and nothing at all
    touch(at("file"));
    tr_remove_tree(at("file"));
    TL_CHECK(!exists(at("file")), "a file was not removed");
    tr_remove_tree(at("absent"));
    TL_CHECK(true, "absent");
}

static void latest(void) {
    TL_CHECK(mkdir(at("run"), 0777) == 0, "mkdir run");
    TL_CHECK(tr_ckpt_latest(at("run")) == NULL, "an empty folder has a latest");
    // step folders but no link: the newest complete one, not the half-written .tmp one
    TL_CHECK(mkdir(at("run/step_00000002"), 0777) == 0 &&
                 mkdir(at("run/step_00000010"), 0777) == 0 &&
                 mkdir(at("run/.tmp.step_00000012"), 0777) == 0,
             "mkdir steps");
    char *got = tr_ckpt_latest(at("run"));
    TL_CHECK(got && !strcmp(got, at("run/step_00000010")), "fallback: got %s", got ? got : "NULL");
    free(got);
    // the link wins when it is there
    TL_CHECK(symlink("step_00000002", at("run/latest")) == 0, "symlink latest");
    got = tr_ckpt_latest(at("run"));
    TL_CHECK(got && !strcmp(got, at("run/step_00000002")), "link: got %s", got ? got : "NULL");
    free(got);
    // a link to a folder that is gone is an error naming the link
    TL_CHECK(unlink(at("run/latest")) == 0 && symlink("step_00000099", at("run/latest")) == 0,
             "relink");
    TL_EXPECT_FAIL(free(tr_ckpt_latest(at("run"))), "latest", "step_00000099", "not there");
}

// Let ASan's malloc return NULL for an impossible size, as glibc's does.
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1";
}

static void checked_helpers(void) {
    ag_sync_dir(root);
    touch(at("synced"));
    ag_sync_parent(at("synced"));
    TL_EXPECT_FAIL(ag_sync_dir(at("no_such_folder")), "no_such_folder",
                   "cannot open the folder to sync it");
    TL_EXPECT_FAIL(ag_sync_dir(at("synced")), "synced", "cannot open the folder to sync it");
    // cJSON allocates through ag_xmalloc: a builder never hands on NULL for lack of memory
    TL_EXPECT_FAIL(cJSON_malloc((size_t)1 << 62), "out of memory", "for JSON");
}

int main(void) {
    tl_temp_dir(root, sizeof root, "checkpoint_files");
    remove_tree();
    latest();
    checked_helpers();
    tr_remove_tree(root);
    TL_CHECK(!exists(root), "cleanup");
    return tl_summary("test_checkpoint_files");
}
