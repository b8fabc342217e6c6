// test_image.c: image decoding, padding, PIL-exact bicubic resizing, box mapping, PNG
// writing and the one-line errors of data/image.c. Without Python: errors and limits (cut,
// damaged, 12-bit, decompression-bomb, other formats), PNGs cut or damaged after their pixel
// data (which PIL loads), small GIF/WebP/BMP/TIFF files from a file and from memory (cut,
// oversized, unsupported), ds_image_load against pad + resize. The PIL comparison runs
// tests/image_reference.py with Debian's python3 over ~70 JPEG/PNG and ~110 GIF/WebP/BMP/TIFF
// variants (and the JPEGs PIL cannot write, written here with libjpeg first); without python3
// or PIL that part is skipped.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/wait.h>

#include <jpeglib.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/grounding.h"
#include "data/image.h"
#include "testlib.h"

static char g_dir[256];

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    *size = got;
    return buf;
}

static void spit(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

// Max |a - b| over n bytes, and whether all are equal.
static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

// A small JPEG written with libjpeg: plain baseline for the error tests, or a variant PIL
// cannot write (image_reference.py compares PIL's decoding of those too). In CMYK modes the
// samples are (x * 4, y * 5, (x ^ y) * 3, (x + y) * 2) unless one_colour gives all four.
static void write_jpeg_mode(const char *path, int w, int h, const char *mode,
                            const uint8_t *one_colour) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    int cmyk = !strncmp(mode, "cmyk", 4) || !strcmp(mode, "ycck");
    int nc = cmyk ? 4 : 3;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    TL_CHECK(f != NULL, "cannot create %s", path);
    if (!f) return;
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = nc;
    c.in_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, one_colour ? 100 : 90, TRUE);
    if (!strcmp(mode, "arith")) c.arith_code = TRUE;
    if (!strcmp(mode, "arith_progressive")) {
        c.arith_code = TRUE;
        jpeg_simple_progression(&c);
    }
    if (!strcmp(mode, "restart")) c.restart_interval = 3; // every 3 MCUs
    if (!strcmp(mode, "s411")) c.comp_info[0].h_samp_factor = 4, c.comp_info[0].v_samp_factor = 1;
    if (!strcmp(mode, "s440")) c.comp_info[0].h_samp_factor = 1, c.comp_info[0].v_samp_factor = 2;
    if (!strcmp(mode, "ycck")) jpeg_set_colorspace(&c, JCS_YCCK);
    if (!strcmp(mode, "cmyk_noadobe")) c.write_Adobe_marker = FALSE;
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * nc);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *p = row + (size_t)x * nc;
            p[0] = (uint8_t)(x * 4);
            p[1] = (uint8_t)(y * 5);
            p[2] = (uint8_t)((x ^ y) * 3);
            if (cmyk) p[3] = (uint8_t)((x + y) * 2);
            if (one_colour) memcpy(p, one_colour, (size_t)nc);
        }
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    free(row);
}

static void write_jpeg(const char *path, int w, int h) {
    write_jpeg_mode(path, w, h, "baseline", NULL);
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

// Decodes path and checks it equals want (w x h).
static void expect_pixels(const char *path, const uint8_t *want, int w, int h) {
    int gw = 0, gh = 0;
    uint8_t *got = ds_image_decode_file(path, &gw, &gh);
    TL_CHECK(gw == w && gh == h && max_diff(got, want, (size_t)w * h * 3) == 0,
             "%s: decodes as %dx%d, not the %dx%d written", path, gw, gh, w, h);
    free(got);
}

// Patches SOF0's height and width (JPEG has no checksum).
static void jpeg_set_size(uint8_t *jpg, size_t n, int w, int h) {
    for (size_t i = 2; i + 9 < n; i++)
        if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
            jpg[i + 5] = (uint8_t)(h >> 8), jpg[i + 6] = (uint8_t)h;
            jpg[i + 7] = (uint8_t)(w >> 8), jpg[i + 8] = (uint8_t)w;
            return;
        }
    TL_CHECK(0, "no SOF0 marker");
}

// A well-formed PNG of the given size with no pixel data.
static void write_png_header_only(const char *path, uint32_t w, uint32_t h) {
    uint8_t ihdr[8 + 25 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put32(ihdr + 8, 13);
    memcpy(ihdr + 12, "IHDR", 4);
    put32(ihdr + 16, w);
    put32(ihdr + 20, h);
    ihdr[24] = 8, ihdr[25] = 2;
    put32(ihdr + 29, crc32_png(ihdr + 12, 17));
    put32(ihdr + 33, 0);
    memcpy(ihdr + 37, "IEND", 4);
    put32(ihdr + 41, crc32_png(ihdr + 37, 4));
    spit(path, ihdr, sizeof ihdr);
}

// A file of these bytes, named .png, is refused as the given format (a function of its own:
// no loop variable lives across TL_EXPECT_FAIL's setjmp).
static void expect_other_format(const char *bytes, size_t n, const char *format) {
    char p[512];
    int w, h;
    path_in(p, sizeof p, "other_format.png");
    spit(p, bytes, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "unsupported image format", format);
}

static void test_errors(void) {
    char p[512];
    int w, h;
    uint8_t buf[64];

    path_in(p, sizeof p, "does_not_exist.jpg");
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "cannot open");
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(g_dir, &w, &h), g_dir, "is a directory");

    path_in(p, sizeof p, "empty.png");
    spit(p, "", 0);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "empty");

    tl_rng rng = {42};
    for (int i = 0; i < 64; i++) buf[i] = (uint8_t)tl_next(&rng);
    buf[0] = 0x12, buf[1] = 0xab; // not a known signature by construction
    path_in(p, sizeof p, "random.jpg");
    spit(p, buf, sizeof buf);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "not an image groundc reads", "12 ab");

    // Formats PIL reads and groundc does not: named, whatever the file is called.
    static const struct {
        const char *bytes;
        size_t n;
        const char *format;
    } others[] = {
        {"II+\0\x08\0\0\0", 8, "BigTIFF"},
        {"\0\0\0\x18"
         "ftypheic\0\0\0\0",
         16, "HEIF"},
        {"P6\n2 2\n255\n", 11, "PNM"},
        {"\0\0\1\0\1\0\x10\x10", 8, "ICO"},
        {"\n<!DOCTYPE html><html>404 Not Found", 35, "HTML"},
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        expect_other_format(others[i].bytes, others[i].n, others[i].format);

    // Truncated JPEG: half the file, and only the end-of-image marker missing (PIL raises
    // "image file is truncated" for both).
    char good[512];
    path_in(good, sizeof good, "good.jpg");
    write_jpeg(good, 64, 48);
    size_t n;
    uint8_t *volatile jpg = slurp(good, &n);
    uint8_t *rgb = ds_image_decode_file(good, &w, &h);
    TL_CHECK(w == 64 && h == 48, "good.jpg decodes as %dx%d", w, h);
    free(rgb);
    path_in(p, sizeof p, "truncated.jpg");
    spit(p, jpg, n / 2);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "truncated");
    path_in(p, sizeof p, "no_eoi.jpg");
    spit(p, jpg, n - 2);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "truncated");
    // All rows there, the end marker overwritten by 8 zeros (enough for libjpeg's look-ahead
    // in the last row): PIL loads it, and so do we.
    uint8_t *volatile want = ds_image_decode_file(good, &w, &h);
    uint8_t *volatile eoi = calloc(n + 6, 1);
    memcpy(eoi, jpg, n - 2);
    path_in(p, sizeof p, "bad_eoi.jpg");
    spit(p, eoi, n + 6);
    expect_pixels(p, want, 64, 48);
    free(eoi);
    free(want);
    // Only the first marker: the header is cut short.
    path_in(p, sizeof p, "header_only.jpg");
    spit(p, jpg, 20);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "JPEG");
    // Garbage in the middle of the header (the quantisation/Huffman tables).
    uint8_t *volatile bad = malloc(n);
    memcpy(bad, jpg, n);
    for (size_t i = 4; i < 200 && i < n; i++) bad[i] = 0xff ^ (uint8_t)i;
    path_in(p, sizeof p, "corrupt.jpg");
    spit(p, bad, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "JPEG");
    // A 12-bit JPEG (SOF0's precision byte): valid, but neither libjpeg-turbo's 8-bit decoder
    // nor PIL reads it.
    memcpy(bad, jpg, n);
    for (size_t i = 2; i + 9 < n; i++)
        if (bad[i] == 0xff && bad[i + 1] == 0xc0) {
            bad[i + 4] = 12;
            break;
        }
    path_in(p, sizeof p, "twelve_bit.jpg");
    spit(p, bad, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "unsupported JPEG", "precision 12");
    // A decompression bomb: 20000 x 20000 declared over a few kB of data. libjpeg would
    // decode it (the data runs into the end marker: a warning), 1.2 GB of pixels; PIL
    // refuses more than 178956970 pixels, and so do we, before allocating any.
    memcpy(bad, jpg, n);
    jpeg_set_size(bad, n, 20000, 20000);
    path_in(p, sizeof p, "bomb.jpg");
    spit(p, bad, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "too large", "20000x20000",
                         "decompression bomb");
    // Under the limit, a wrong size is decoded as libjpeg (and PIL) decode it.
    memcpy(bad, jpg, n);
    jpeg_set_size(bad, n, 40000, 48);
    path_in(p, sizeof p, "wide.jpg");
    spit(p, bad, n);
    rgb = ds_image_decode_file(p, &w, &h);
    TL_CHECK(w == 40000 && h == 48, "wide.jpg decodes as %dx%d", w, h);
    free(rgb);
    free(bad);
    free(jpg);

    // CMYK without the Adobe marker is not inverted (image.h): C = 0, M = Y = 255, K = 0
    // stored as is reads as red.
    path_in(p, sizeof p, "cmyk_plain.jpg");
    write_jpeg_mode(p, 16, 16, "cmyk_noadobe", (const uint8_t[]){0, 255, 255, 0});
    rgb = ds_image_decode_file(p, &w, &h);
    TL_CHECK(rgb[0] >= 250 && rgb[1] <= 5 && rgb[2] <= 5, "CMYK without Adobe marker: %d %d %d",
             rgb[0], rgb[1], rgb[2]);
    free(rgb);

    // PNG: round trip through the writer, then cut or damaged.
    uint8_t img[30 * 20 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)tl_next(&rng);
    path_in(good, sizeof good, "written.png");
    ds_image_write_png(good, img, 30, 20);
    expect_pixels(good, img, 30, 20);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", good);
    FILE *f = fopen(tmp, "rb");
    TL_CHECK(f == NULL, "temporary file %s left behind", tmp);
    if (f) fclose(f);
    uint8_t *volatile png = slurp(good, &n); // IHDR, one IDAT, IEND
    path_in(p, sizeof p, "truncated.png");
    spit(p, png, n / 2);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "truncated");
    // Cut after the pixel data: PIL loads these, and so do we (image.h). 12 bytes of IEND,
    // then 4 of IDAT CRC, then 2 of zlib's checksum.
    static const int cuts[] = {6, 12, 14, 18};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        path_in(p, sizeof p, "cut_tail.png");
        spit(p, png, n - (size_t)cuts[i]);
        expect_pixels(p, img, 30, 20);
    }
    // A wrong IDAT CRC (PIL does not check it).
    png[n - 16] ^= 0x55;
    path_in(p, sizeof p, "idat_crc.png");
    spit(p, png, n);
    expect_pixels(p, img, 30, 20);
    png[n - 16] ^= 0x55;
    // Corrupt pixel data: flip bytes inside IDAT (caught by zlib).
    png[n / 2] ^= 0x55;
    path_in(p, sizeof p, "bad_data.png");
    spit(p, png, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "PNG");
    free(png);
    // Absurd dimensions in a well-formed IHDR: a side over the limit, too many pixels.
    path_in(p, sizeof p, "huge.png");
    write_png_header_only(p, 70000, 10);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "too large", "70000", "per side");
    path_in(p, sizeof p, "bomb.png");
    write_png_header_only(p, 20000, 20000);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, "too large", "decompression bomb");

    // The writer refuses a path it cannot create.
    path_in(p, sizeof p, "no_such_dir/x.png");
    TL_EXPECT_FAIL_SHOWN(ds_image_write_png(p, img, 30, 20), p, "cannot create");
    // And decode_memory names what it was given.
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_memory(buf, sizeof buf, "blob#7", &w, &h), "blob#7");
}

// GIF, WebP, BMP and TIFF without Python: small files written here (a lossless WebP made by
// PIL), decoded from a file and from memory, then cut, oversized or unsupported.

static void put_le(uint8_t *p, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// A 24-bit BMP: 40-byte header, rows bottom-up padded to 4 bytes.
static size_t make_bmp(uint8_t *b, const uint8_t *rgb, int w, int h) {
    size_t stride = ((size_t)w * 3 + 3) & ~(size_t)3, n = 54 + stride * h;
    memset(b, 0, n);
    b[0] = 'B', b[1] = 'M';
    put_le(b + 2, (uint32_t)n, 4);
    put_le(b + 10, 54, 4);
    put_le(b + 14, 40, 4);
    put_le(b + 18, (uint32_t)w, 4);
    put_le(b + 22, (uint32_t)h, 4);
    put_le(b + 26, 1, 2);
    put_le(b + 28, 24, 2);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                b[54 + (size_t)(h - 1 - y) * stride + 3 * x + c] = rgb[(y * w + x) * 3 + 2 - c];
    return n;
}

// An uncompressed 8-bit RGB TIFF, little-endian, one strip after the IFD.
static size_t make_tiff(uint8_t *b, const uint8_t *rgb, int w, int h, int compression) {
    static const uint16_t tags[] = {256, 257, 258, 259, 262, 273, 277, 278, 279};
    uint32_t vals[] = {(uint32_t)w, (uint32_t)h, 8,           (uint32_t)compression, 2,
                       0,           3,           (uint32_t)h, (uint32_t)(w * h * 3)};
    int nt = 9;
    size_t data = 8 + 2 + 12 * nt + 4;
    vals[5] = (uint32_t)data;
    memcpy(b, "II*\0", 4);
    put_le(b + 4, 8, 4);
    put_le(b + 8, (uint32_t)nt, 2);
    for (int i = 0; i < nt; i++) {
        uint8_t *e = b + 10 + 12 * i;
        put_le(e, tags[i], 2);
        put_le(e + 2, 4, 2); // LONG (a BitsPerSample of one value holds for all samples)
        put_le(e + 4, 1, 4);
        put_le(e + 8, vals[i], 4);
    }
    put_le(b + 10 + 12 * nt, 0, 4);
    memcpy(b + data, rgb, (size_t)w * h * 3);
    return data + (size_t)w * h * 3;
}

// A GIF89a: screen sw x sh, global table of 4 colours, a graphic control extension with
// transparent index trans, one w x h frame at (x0, y0) of indices idx, LZW with code size 2
// (a clear code every 2 literals keeps the codes 3 bits wide).
static size_t make_gif(uint8_t *b, int sw, int sh, const uint8_t pal[4][3], int trans, int x0,
                       int y0, int w, int h, const uint8_t *idx) {
    size_t n = 0;
    memcpy(b, "GIF89a", 6), n = 6;
    put_le(b + n, (uint32_t)sw, 2), put_le(b + n + 2, (uint32_t)sh, 2), n += 4;
    b[n++] = 0x81, b[n++] = 0, b[n++] = 0; // global table of 2^2 entries
    memcpy(b + n, pal, 12), n += 12;
    const uint8_t gce[] = {0x21, 0xf9, 4, 1, 0, 0, (uint8_t)trans, 0};
    memcpy(b + n, gce, sizeof gce), n += sizeof gce;
    b[n++] = 0x2c;
    put_le(b + n, (uint32_t)x0, 2), put_le(b + n + 2, (uint32_t)y0, 2);
    put_le(b + n + 4, (uint32_t)w, 2), put_le(b + n + 6, (uint32_t)h, 2), n += 8;
    b[n++] = 0;
    b[n++] = 2; // LZW code size
    uint8_t data[255];
    size_t nd = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (int i = 0; i <= w * h; i++) {
        int codes[2] = {4, i < w * h ? idx[i] : 5}; // clear (every other literal), literal, end
        for (int k = (i % 2 == 0 || i == w * h) ? 0 : 1; k < 2; k++) {
            acc |= (uint32_t)codes[k] << bits, bits += 3;
            while (bits >= 8) data[nd++] = (uint8_t)acc, acc >>= 8, bits -= 8;
        }
    }
    if (bits) data[nd++] = (uint8_t)acc;
    b[n++] = (uint8_t)nd;
    memcpy(b + n, data, nd), n += nd;
    b[n++] = 0;
    b[n++] = ';';
    return n;
}

// Decodes bytes from a file named name and from memory; both must give want (w x h).
static void expect_decodes(const char *name, const uint8_t *bytes, size_t n, const uint8_t *want,
                           int w, int h) {
    char p[512];
    path_in(p, sizeof p, name);
    spit(p, bytes, n);
    expect_pixels(p, want, w, h);
    int gw = 0, gh = 0;
    uint8_t *got = ds_image_decode_memory(bytes, n, name, &gw, &gh);
    TL_CHECK(gw == w && gh == h && !memcmp(got, want, (size_t)w * h * 3),
             "%s from memory: %dx%d, not the %dx%d written", name, gw, gh, w, h);
    free(got);
}

// A file of these bytes is refused with messages containing what and what2.
static void expect_refused(const char *name, const uint8_t *bytes, size_t n, const char *what,
                           const char *what2) {
    char p[512];
    int w, h;
    path_in(p, sizeof p, name);
    spit(p, bytes, n);
    TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(p, &w, &h), p, what, what2);
    TL_EXPECT_FAIL(ds_image_decode_memory(bytes, n, name, &w, &h), name, what, what2);
}

static void test_other_formats(void) {
    static uint8_t b[4096];
    uint8_t img[5 * 3 * 3];
    for (int i = 0; i < 5 * 3 * 3; i++) img[i] = (uint8_t)(i * 37 + 11);

    size_t n = make_bmp(b, img, 5, 3);
    expect_decodes("small.bmp", b, n, img, 5, 3);
    expect_refused("cut.bmp", b, n - 5, "truncated BMP", "");
    put_le(b + 18, 20000, 4), put_le(b + 22, 20000, 4);
    expect_refused("bomb.bmp", b, n, "too large", "decompression bomb");
    put_le(b + 18, 70000, 4), put_le(b + 22, 1, 4);
    expect_refused("wide.bmp", b, n, "too large", "per side");
    n = make_bmp(b, img, 5, 3);
    put_le(b + 30, 4, 4); // BI_JPEG
    expect_refused("jpeg.bmp", b, n, "unsupported BMP compression", "JPEG");

    n = make_tiff(b, img, 5, 3, 1);
    expect_decodes("small.tif", b, n, img, 5, 3);
    expect_refused("cut.tif", b, n - 5, "truncated TIFF", "strip 0");
    expect_refused("cut_ifd.tif", b, 40, "truncated TIFF", "IFD");
    n = make_tiff(b, img, 5, 3, 7);
    expect_refused("jpeg.tif", b, n, "unsupported TIFF compression 7", "JPEG");
    n = make_tiff(b, img, 5, 3, 1);
    put_le(b + 10 + 8, 20000, 4), put_le(b + 22 + 8, 20000, 4); // ImageWidth, ImageLength
    expect_refused("bomb.tif", b, n, "too large", "decompression bomb");

    // GIF: the frame sits at (1, 1) on a 6 x 4 screen; index 1 is transparent. PIL (and
    // groundc) fill the screen with the transparent index and paint every index, the
    // transparent one included, with its colour.
    static const uint8_t pal[4][3] = {{200, 0, 0}, {0, 150, 0}, {0, 0, 100}, {90, 80, 70}};
    static const uint8_t idx[4 * 2] = {0, 1, 2, 3, 3, 2, 1, 0};
    uint8_t want[6 * 4 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) {
            int inside = x >= 1 && x < 5 && y >= 1 && y < 3;
            memcpy(want + (y * 6 + x) * 3, pal[inside ? idx[(y - 1) * 4 + x - 1] : 1], 3);
        }
    n = make_gif(b, 6, 4, pal, 1, 1, 1, 4, 2, idx);
    expect_decodes("small.gif", b, n, want, 6, 4);
    expect_refused("cut.gif", b, n - 4, "truncated GIF", "first image's data");
    expect_refused("header.gif", b, 20, "truncated GIF", "");
    n = make_gif(b, 20000, 20000, pal, 1, 1, 1, 4, 2, idx);
    expect_refused("bomb.gif", b, n, "too large", "decompression bomb");

    // WebP: lossless 3 x 2 made by PIL (Image.save(..., "WEBP", lossless=True)).
    static const uint8_t webp[] =
        "RIFF\x42\x00\x00\x00WEBPVP8L\x36\x00\x00\x00\x2f\x02\x40\x00\x00\x2f\x40\x90\x6d\xb3"
        "\x41\xdc\xeb\xfe\x32\xd3\x20\x93\xb6\xc9\x5f\xff\x76\x66\x6d\x64\xd2\x36\xad\x87\xfd"
        "\xf3\xaf\xb2\xf3\x1f\x68\xe4\x91\xac\xfb\x06\x04\x02\x94\xb1\xe2\x81\x6d\x22\xfa\x1f"
        "\xe3\x05";
    static const uint8_t webp_rgb[] = {255, 0,  0,  0,   255, 0,  0,   0,   255,
                                       10,  20, 30, 200, 100, 50, 255, 255, 255};
    n = sizeof webp - 1;
    expect_decodes("small.webp", webp, n, webp_rgb, 3, 2);
    expect_refused("cut.webp", webp, n - 10, "truncated WebP", "");
    memcpy(b, webp, n);
    put_le(b + 21, 16383 | 16383u << 14, 4); // VP8L size fields: 16384 x 16384
    expect_refused("bomb.webp", b, n, "too large", "decompression bomb");
    // An animated WebP's header (VP8X with the animation flag, ANIM): refused, named.
    static const uint8_t anim[] = "RIFF\x24\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\x02\0\0\x01\0\0"
                                  "ANIM\x06\0\0\0\0\0\0\0\0\0";
    expect_refused("anim.webp", anim, sizeof anim - 1, "unsupported", "animated WebP");
    // A RIFF size of 0 (less than its own header), and a last chunk of odd length without its
    // pad byte at the very end of the data: the chunk walk stays inside the bytes (ASan).
    expect_refused("riff0.webp", (const uint8_t *)"RIFF\0\0\0\0WEBP", 12, "corrupt WebP", "");
    static const uint8_t odd[] = "RIFF\x11\0\0\0WEBPVP8L\x05\0\0\0\x2f\0\0\0\0";
    expect_refused("odd_chunk.webp", odd, sizeof odd - 1, "WebP", "");
}

// ds_image_load pads and resizes without making the padded square: the bytes must be those of
// ds_image_pad_square then ds_image_resize_bicubic (checked against PIL in test_against_pil).
// The whole-file read images go through (data/files.h): a regular file in one piece with a
// NUL after it, refused past the limit by its size; a device read in growing steps until the
// limit is passed.
static void test_read_limit(void) {
    char p[512];
    path_in(p, sizeof p, "hundred.bin");
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 100; i++) fputc('a' + i % 26, f);
    fclose(f);
    size_t n = 0;
    char *text = ds_read_file_max(p, 100, &n);
    TL_CHECK(n == 100 && text[0] == 'a' && text[99] == 'a' + 99 % 26 && text[100] == 0,
             "a 100-byte file under a 100-byte limit: %zu bytes", n);
    free(text);
    TL_EXPECT_FAIL_SHOWN(ds_read_file_max(p, 99, &n), p, "too large", "100 bytes");
    TL_EXPECT_FAIL_SHOWN(ds_read_file_max("/dev/zero", 100000, &n), "/dev/zero", "too large",
                         "more than 100000 bytes");
}

static void test_load_equals_pad_then_resize(void) {
    static const int cases[][3] = {{37, 19, 24},    {19, 37, 24},    {50, 50, 24}, {8, 100, 336},
                                   {100, 8, 336},   {1, 1, 5},       {1, 40, 16},  {40, 1, 16},
                                   {336, 200, 336}, {200, 336, 336}, {5, 3, 7},    {300, 299, 224}};
    tl_rng rng = {11};
    char p[512];
    path_in(p, sizeof p, "shape.png");
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int w = cases[c][0], h = cases[c][1], S = cases[c][2], side = ds_image_square_side(w, h);
        uint8_t *img = malloc((size_t)w * h * 3), *sq = malloc((size_t)side * side * 3);
        uint8_t *want = malloc((size_t)S * S * 3), *got = malloc((size_t)S * S * 3);
        for (size_t i = 0; i < (size_t)w * h * 3; i++) img[i] = (uint8_t)tl_next(&rng);
        ds_image_write_png(p, img, w, h);
        ds_image_pad_square(img, w, h, sq);
        ds_image_resize_bicubic(sq, side, side, want, S, S);
        ds_image_info info;
        ds_image_load(p, S, got, &info);
        int ow = info.width, oh = info.height;
        TL_CHECK(ow == w && oh == h && !memcmp(got, want, (size_t)S * S * 3),
                 "%dx%d to %d: ds_image_load differs from pad + resize (max diff %d)", w, h, S,
                 max_diff(got, want, (size_t)S * S * 3));
        free(img), free(sq), free(want), free(got);
    }
}

// JPEG variants PIL cannot write, for image_reference.py to compare (lj_*.jpg).
static void write_libjpeg_variants(void) {
    static const char *modes[] = {"arith", "arith_progressive", "restart", "s411", "s440", "ycck",
                                  "cmyk",  "cmyk_noadobe"};
    char p[512], name[64];
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        snprintf(name, sizeof name, "lj_%s_45x29.jpg", modes[i]);
        path_in(p, sizeof p, name);
        write_jpeg_mode(p, 45, 29, modes[i], NULL);
    }
}

static void test_pad_and_boxes(void) {
    // 3x1 image: padded to 3x3, pasted at row (3 - 1) / 2 = 1.
    const uint8_t px[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    uint8_t sq[27];
    ds_image_pad_square(px, 3, 1, sq);
    int ok = !memcmp(sq + 9, px, 9);
    for (int i = 0; i < 3; i++)
        for (int r = 0; r < 3; r += 2)
            ok &= sq[r * 9 + 3 * i] == 122 && sq[r * 9 + 3 * i + 1] == 116 &&
                  sq[r * 9 + 3 * i + 2] == 104;
    TL_CHECK(ok, "pad 3x1");
    // 2x5: offset (5 - 2) / 2 = 1 column.
    uint8_t px2[30], sq2[75];
    for (int i = 0; i < 30; i++) px2[i] = (uint8_t)(200 + i);
    ds_image_pad_square(px2, 2, 5, sq2);
    ok = 1;
    for (int y = 0; y < 5; y++) {
        ok &= !memcmp(sq2 + (y * 5 + 1) * 3, px2 + y * 6, 6);
        ok &= sq2[(y * 5) * 3] == 122 && sq2[(y * 5 + 3) * 3] == 122;
        ok &= sq2[(y * 5 + 4) * 3 + 2] == 104;
    }
    TL_CHECK(ok, "pad 2x5");

    // Boxes (data/grounding.h) must use the offsets the padding used: paint a box in an
    // image, pad it, and find the painted pixels where the normalised box says.
    int sizes[][2] = {{500, 333}, {19, 37}, {37, 19}, {8, 8}, {7, 300}, {301, 2}};
    tl_rng rng = {7};
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        int w = sizes[c][0], h = sizes[c][1], side = ds_image_square_side(w, h);
        int x1 = (int)tl_randint(&rng, w), y1 = (int)tl_randint(&rng, h);
        int x2 = x1 + 1 + (int)tl_randint(&rng, w - x1),
            y2 = y1 + 1 + (int)tl_randint(&rng, h - y1);
        uint8_t *img = calloc((size_t)w * h * 3, 1), *pad = malloc((size_t)side * side * 3);
        for (int y = y1; y < y2; y++)
            for (int x = x1; x < x2; x++) img[((size_t)y * w + x) * 3] = 255;
        ds_image_pad_square(img, w, h, pad);
        ds_box nb = ds_box_to_square((ds_box){x1, y1, x2, y2}, w, h);
        // the painted pixels of the padded square are exactly [nb * side)
        int X1 = (int)lround(nb.x1 * side), Y1 = (int)lround(nb.y1 * side);
        int X2 = (int)lround(nb.x2 * side), Y2 = (int)lround(nb.y2 * side);
        int painted = 0, inside = 0;
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++) {
                int on = pad[((size_t)y * side + x) * 3] == 255;
                painted += on;
                inside += on && x >= X1 && x < X2 && y >= Y1 && y < Y2;
            }
        TL_CHECK(painted == (x2 - x1) * (y2 - y1) && inside == painted,
                 "%dx%d: box lands on %d of %d painted pixels", w, h, inside, painted);
        ds_box back = ds_box_from_square(nb, w, h);
        TL_CHECK(fabs(back.x1 - x1) < 1e-9 && fabs(back.y1 - y1) < 1e-9 &&
                     fabs(back.x2 - x2) < 1e-9 && fabs(back.y2 - y2) < 1e-9,
                 "%dx%d: box round trip", w, h);
        free(img);
        free(pad);
    }
}

static void test_against_pil(void) {
    char cmd[1024], script[512];
    tl_source_path(script, sizeof script, "tests/image_reference.py");
    if (system("test -x /usr/bin/python3") != 0) {
        printf("test_image: /usr/bin/python3 missing; skipping the PIL comparison\n");
        return;
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", script, g_dir);
    int rc = system(cmd);
    if (rc != 0) {
        if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
            printf("test_image: PIL or numpy missing; skipping the PIL comparison\n");
            return;
        }
        TL_CHECK(0, "%s failed (status %d)", cmd, rc);
        return;
    }
    char path[512], line[512];
    path_in(path, sizeof path, "cases.txt");
    FILE *f = fopen(path, "r");
    TL_CHECK(f != NULL, "no %s", path);
    if (!f) return;
    int cases = 0, exact = 0, unsupported = 0, exif_cases = 0, exif_turned = 0;
    while (fgets(line, sizeof line, f)) {
        char kind[16], name[128], note[128];
        int a, b, c, d;
        if (sscanf(line, "%15s", kind) != 1) continue;
        if (!strcmp(kind, "resize")) {
            if (sscanf(line, "%*s %127s %d %d %d %d", name, &a, &b, &c, &d) != 5) continue;
            size_t ni, no;
            char pi[512], po[512];
            snprintf(pi, sizeof pi, "%s/%s.in", g_dir, name);
            snprintf(po, sizeof po, "%s/%s.out", g_dir, name);
            uint8_t *in = slurp(pi, &ni), *want = slurp(po, &no);
            TL_CHECK(in && want && ni == (size_t)a * b * 3 && no == (size_t)c * d * 3, "%s", name);
            if (!in || !want) continue;
            uint8_t *got = malloc(no);
            ds_image_resize_bicubic(in, a, b, got, c, d);
            int m = max_diff(got, want, no);
            printf("  resize %dx%d -> %dx%d: max |diff| %d\n", a, b, c, d, m);
            TL_CHECK(m <= 1, "resize %s max diff %d", name, m);
            cases++, exact += m == 0;
            free(in), free(want), free(got);
            continue;
        }
        char file[512], ref[600];
        if (!strcmp(kind, "exif")) { // the orientation tag, as PIL's getexif() reads it
            if (sscanf(line, "%*s %127s %d", name, &a) != 2) continue;
            path_in(file, sizeof file, name);
            size_t n = 0;
            uint8_t *bytes = slurp(file, &n);
            int got = bytes ? ds_image_exif_orientation(bytes, n) : -1;
            TL_CHECK(got == a, "%s: EXIF orientation %d, PIL reads %d", name, got, a);
            exif_cases++, exif_turned += a > 1;
            free(bytes);
            continue;
        }
        if (!strcmp(kind, "refuse")) { // PIL raises: so must we
            if (sscanf(line, "%*s %127s", name) != 1) continue;
            path_in(file, sizeof file, name);
            int w, h;
            TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(file, &w, &h), file);
            cases++, exact++;
            continue;
        }
        if (!strcmp(kind, "unsupported")) { // PIL reads it, groundc says what it does not read
            if (sscanf(line, "%*s %127s %127[^\n]", name, note) != 2) continue;
            path_in(file, sizeof file, name);
            int w, h;
            TL_EXPECT_FAIL_SHOWN(ds_image_decode_file(file, &w, &h), file, "unsupported", note);
            cases++, exact++, unsupported++;
            continue;
        }
        // the largest |diff| allowed, decoded and resized: 1 unless the case says (GIF, WebP,
        // BMP, TIFF: 0 but for the deviations image.h lists)
        int tol = 1, rtol = 1;
        if (sscanf(line, "%*s %127s %d %d %127s %d %d", name, &a, &b, note, &tol, &rtol) < 4)
            continue;
        path_in(file, sizeof file, name);
        // decode
        int w, h;
        uint8_t *rgb = ds_image_decode_file(file, &w, &h);
        snprintf(ref, sizeof ref, "%s.rgb", file);
        size_t n;
        uint8_t *want = slurp(ref, &n);
        TL_CHECK(w == a && h == b && want && n == (size_t)w * h * 3, "%s size %dx%d vs %dx%d", name,
                 w, h, a, b);
        int md = (want && n == (size_t)w * h * 3) ? max_diff(rgb, want, n) : 999;
        free(want);
        free(rgb);
        TL_CHECK(md <= tol, "%s decode max diff %d (allowed %d)", name, md, tol);
        cases++, exact += md == 0;
        printf("  %-34s %4dx%-4d decode %d", name, a, b, md);
        // full path at two sizes
        for (int S = 336; S >= 224; S -= 112) {
            snprintf(ref, sizeof ref, "%s.%d.rgb", file, S);
            want = slurp(ref, &n);
            uint8_t *out = malloc((size_t)S * S * 3);
            ds_image_info info;
            ds_image_load(file, S, out, &info);
            int ow = info.width, oh = info.height;
            int m = (want && n == (size_t)S * S * 3) ? max_diff(out, want, n) : 999;
            TL_CHECK(ow == a && oh == b, "%s original size", name);
            TL_CHECK(m <= rtol, "%s at %d: max diff %d (allowed %d)", name, S, m, rtol);
            cases++, exact += m == 0;
            printf("  @%d %d", S, m);
            free(out);
            free(want);
        }
        printf("%s%s\n", strcmp(note, "-") ? "  " : "", strcmp(note, "-") ? note : "");
    }
    fclose(f);
    printf("test_image: PIL agreement: %d of %d comparisons exact (the rest within 1, or 3 "
           "resized from a CMYK TIFF), %d refusals "
           "of files PIL reads\n",
           exact, cases, unsupported);
    TL_CHECK(cases >= 480, "only %d PIL comparisons ran", cases);
    printf("test_image: EXIF orientation as PIL reads it in %d JPEGs (%d turned)\n", exif_cases,
           exif_turned);
    TL_CHECK(exif_cases >= 25 && exif_turned >= 3, "only %d EXIF checks (%d turned)", exif_cases,
             exif_turned);
}

int main(void) {
    tl_temp_dir(g_dir, sizeof g_dir, "image");
    test_errors();
    test_other_formats();
    test_read_limit();
    test_pad_and_boxes();
    test_load_equals_pad_then_resize();
    write_libjpeg_variants();
    test_against_pil();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return tl_summary("test_image");
}
