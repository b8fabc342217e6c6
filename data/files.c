// files.c: see files.h.
#include "files.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"

void ds_make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        ag_fail("%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST)
            ag_fail("%s: cannot create the folder: %s", buf, strerror(errno));
        *p = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) ag_fail("%s: not a folder", path);
}

void ds_write_file_atomic(const char *path, const ds_file_part *parts, int n) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        ag_fail_path_too_long(path, "");
    FILE *f = fopen(tmp, "wb");
    if (!f) ag_fail("%s: cannot write (temporary file %s): %s", path, tmp, strerror(errno));
    errno = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok = parts[i].size == 0 || fwrite(parts[i].data, 1, parts[i].size, f) == parts[i].size;
    ok = ok && !fflush(f) && !fsync(fileno(f));
    int e = errno;
    if (fclose(f) && ok) ok = false, e = errno;
    if (!ok) {
        unlink(tmp);
        ag_fail("%s: write failed: %s", path, strerror(e ? e : EIO));
    }
    if (rename(tmp, path)) {
        e = errno;
        unlink(tmp);
        ag_fail("%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    ag_sync_parent(path); // the new name reaches the disk only with its folder
}
