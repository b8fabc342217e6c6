// files.c: see files.h.
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"

void ds_line_col(const char *text, size_t at, int64_t *line, int64_t *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < at && text[i]; i++) {
        if (text[i] == '\n')
            ++*line, *col = 1;
        else
            ++*col;
    }
}

bool ds_utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra;
        if (*p < 0x80)
            extra = 0;
        else if (*p >= 0xc2 && *p <= 0xdf)
            extra = 1;
        else if (*p >= 0xe0 && *p <= 0xef)
            extra = 2;
        else if (*p >= 0xf0 && *p <= 0xf4)
            extra = 3;
        else
            return false;
        p++;
        for (int i = 0; i < extra; i++, p++) // stops at the terminator: 0 is no continuation
            if ((*p & 0xc0) != 0x80) return false;
    }
    return true;
}

void ds_require_file(const char *path) {
    struct stat st;
    if (stat(path, &st)) ag_fail("%s: cannot open: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) return;
    const char *kind = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "of another kind";
    ag_fail("%s: is %s, not a regular file", path, kind);
}

char *ds_read_file_max(const char *path, size_t max, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) ag_fail("%s: cannot open: %s", path, strerror(errno));
    if (max > SIZE_MAX - 2) max = SIZE_MAX - 2;
    // cap: bytes the buffer holds, the NUL included; reading stops once a read returns none,
    // so a regular file of known size takes one allocation: its bytes, the byte the read
    // that sees the end has room for, the NUL
    size_t cap = 1 << 16, len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        ag_fail("%s: is a directory, not a file", path);
    }
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size > max) {
            fclose(f);
            ag_fail("%s: file too large (%lld bytes, limit %zu)", path, (long long)st.st_size, max);
        }
        cap = (size_t)st.st_size + 2;
    }
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        ag_fail("%s: out of memory reading the file (%zu bytes)", path, cap);
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (len > max) {
                free(buf);
                fclose(f);
                ag_fail("%s: file too large (more than %zu bytes)", path, max);
            }
            // grown to one byte past the limit at most: reading that byte fails above
            size_t want = cap - 1 > max / 2 ? max + 2 : cap * 2;
            char *b = realloc(buf, want);
            if (!b) {
                free(buf);
                fclose(f);
                ag_fail("%s: out of memory reading the file (%zu bytes so far)", path, len);
            }
            buf = b;
            cap = want;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) {
        free(buf);
        ag_fail("%s: read error: %s", path, strerror(err));
    }
    buf[len] = 0;
    if (n) *n = len;
    return buf;
}

char *ds_read_file(const char *path, size_t *n) {
    return ds_read_file_max(path, SIZE_MAX, n);
}

bool ds_dir_has(const char *dir, const char *name) {
    char *p = ag_xpath_join(dir, name);
    struct stat st;
    bool found = !lstat(p, &st);
    free(p);
    return found;
}

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

void ds_atomic_tmp_path(const char *path, char *tmp, size_t n) {
    if ((size_t)snprintf(tmp, n, "%s.tmp.%d", path, (int)getpid()) >= n)
        ag_fail_path_too_long(path, "");
}

void ds_write_file_atomic(const char *path, const ds_file_part *parts, int n) {
    char tmp[PATH_MAX];
    ds_atomic_tmp_path(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) ag_fail("%s: cannot write (temporary file %s): %s", path, tmp, strerror(errno));
    errno = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok = parts[i].size == 0 || fwrite(parts[i].data, 1, parts[i].size, f) == parts[i].size;
    ok = ok && !fflush(f);
    int e = errno;
    if (fclose(f) && ok) ok = false, e = errno;
    if (!ok) {
        unlink(tmp);
        ag_fail("%s: write failed: %s", path, strerror(e ? e : EIO));
    }
    ds_commit_tmp(tmp, path);
}

void ds_commit_tmp(const char *tmp, const char *path) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) || close(fd)) {
        int e = errno;
        if (fd >= 0) close(fd);
        unlink(tmp);
        ag_fail("%s: cannot sync %s: %s", path, tmp, strerror(e));
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        ag_fail("%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    ag_sync_parent(path); // the new name reaches the disk only with its folder
}

const char *ds_quote(const char *s, char *buf, size_t n) {
    size_t k = 0;
    for (; s[k] && k + 1 < n; k++) buf[k] = (unsigned char)s[k] < 0x20 || s[k] == 0x7f ? '?' : s[k];
    if (s[k] && ((unsigned char)s[k] & 0xc0) == 0x80) { // cut inside a sequence: back to its start
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xc0) == 0x80) k--;
        if (k > 0 && (unsigned char)buf[k - 1] >= 0xc0) k--;
    }
    buf[k] = 0;
    return buf;
}
