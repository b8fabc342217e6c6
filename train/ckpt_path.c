// ckpt_path.c: see ckpt_path.h.
#include "train/ckpt_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/files.h"
#include "train/checkpoint.h"

char *tr_ckpt_resolve(const char *path, const char *cmd, FILE *log) {
    struct stat sb;
    if (stat(path, &sb)) ag_fail("%s: %s: cannot open: %s", cmd, path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        ag_fail("%s: %s: not a folder; a checkpoint is one (OUT/step_N, or a run folder OUT)", cmd,
                path);
    if (ds_dir_has(path, "config.yaml") || ds_dir_has(path, "state.json")) return ag_xstrdup(path);
    // checkpoint.out of a run (tr_ckpt_latest fails on a broken link)
    char *latest = tr_ckpt_is_run(path) ? tr_ckpt_latest(path) : NULL;
    if (!latest)
        ag_fail("%s: %s: neither a checkpoint (no config.yaml) nor a run folder (no 'latest' "
                "link, no step_N folder)",
                cmd, path);
    if (log)
        fprintf(log, "%s: %s is a run folder; using its latest checkpoint %s\n", cmd, path, latest);
    return latest;
}

void tr_check_output_file(const char *cmd, const char *opt, const char *path) {
    struct stat sb;
    if (!*path) ag_fail("%s: %s: empty path", cmd, opt);
    if (!stat(path, &sb) && S_ISDIR(sb.st_mode))
        ag_fail("%s: %s %s: is a folder; give a file name", cmd, opt, path);
    char *dir = ag_xparent_dir(path);
    if (stat(dir, &sb)) ag_fail("%s: %s %s: folder %s: %s", cmd, opt, path, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) ag_fail("%s: %s %s: %s is not a folder", cmd, opt, path, dir);
    // the name ds_write_file_atomic writes first (this process's own; removed right away)
    char tmp[PATH_MAX];
    ds_atomic_tmp_path(path, tmp, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        ag_fail("%s: %s %s: cannot write into %s: %s", cmd, opt, path, dir, strerror(errno));
    close(fd);
    if (unlink(tmp)) ag_fail("%s: %s: cannot remove: %s", cmd, tmp, strerror(errno));
    free(dir);
}

void tr_check_output_dir(const char *cmd, const char *opt, const char *shown, const char *path) {
    // the first folder mkdir -p would make: the one below the nearest existing ancestor
    char *missing = ag_xstrdup(path);
    for (;;) {
        char *up = ag_xparent_dir(missing);
        struct stat sb;
        if (!stat(up, &sb)) {
            if (!S_ISDIR(sb.st_mode)) ag_fail("%s: %s %s: %s is not a folder", cmd, opt, shown, up);
            free(up);
            break;
        }
        if (errno != ENOENT && errno != ENOTDIR)
            ag_fail("%s: %s %s: %s: %s", cmd, opt, shown, up, strerror(errno));
        free(missing);
        missing = up;
    }
    if (mkdir(missing, 0755)) {
        if (errno != EEXIST) { // (made meanwhile by someone else: not ours to remove)
            int e = errno;
            char *up = ag_xparent_dir(missing);
            ag_fail("%s: %s %s: cannot make a folder in %s: %s", cmd, opt, shown, up, strerror(e));
        }
    } else if (rmdir(missing)) {
        ag_fail("%s: %s %s: cannot remove the trial folder %s: %s", cmd, opt, shown, missing,
                strerror(errno));
    }
    free(missing);
}
