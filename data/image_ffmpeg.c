// image_ffmpeg.c: see image_internal.h. GIF, WebP, BMP and TIFF for data/image.c.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavutil/pixdesc.h>

#include "data/ffmpeg.h"
#include "data/image.h"
#include "data/image_internal.h"

// GIF, WebP, BMP and TIFF: FFmpeg's decoders (data/ffmpeg.h), each file handed over whole as
// one packet. A walk over the file's headers comes first, for what FFmpeg does not do as PIL
// does: PIL's size, checked against the limits before any pixel memory; PIL's first GIF frame
// (a rewritten GIF, see gif_rewrite); refusing what PIL refuses, what FFmpeg decodes to other
// pixels than PIL (each case measured) and files cut short. The decoded frame is then turned
// into RGB8 the way PIL's unpackers and convert("RGB") do it (ff_frame_to_rgb).

typedef struct {
    const char *name;     // "GIF", "WebP", "BMP", "TIFF"
    enum AVCodecID codec; // FFmpeg's decoder
    uint64_t w, h;        // PIL's image size, from the header
    int webp_lossy;       // VP8 data: YUV 4:2:0 converted as libwebp converts it
    int bmp;              // palette entries FFmpeg leaves undefined (alpha 0): PIL's grey ramp
    int premultiplied;    // TIFF associated alpha: un-premultiplied as PIL's "RGBa" unpacker
    int bmp_as_rgb;       // 32-bit BMP with all-zero bit fields: read as uncompressed (PIL does)
} ff_image;

static uint32_t le16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static uint32_t le24(const uint8_t *p) {
    return le16(p) | (uint32_t)p[2] << 16;
}
static uint32_t le32(const uint8_t *p) {
    return le24(p) | (uint32_t)p[3] << 24;
}
static void put_le16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

// GIF. FFmpeg's decoder paints the first frame over the background colour of the global
// table, leaves transparent pixels unpainted (transparent white), crops a frame that overhangs
// the logical screen and reads indices past a short colour table from stale entries. PIL's
// first frame is the frame's indices looked up in its colour table, transparent ones included
// (convert("RGB") ignores transparency), on a canvas enlarged to hold the frame and filled
// with the transparent index (index 0 without one); indices past the table read as PIL's grey
// ramp (i, i, i), and a GIF without any table is a grey image of its indices. So FFmpeg gets a
// GIF rewritten to say just that: a 256-entry global table (the frame's table, the ramp after
// it), the background index = the fill index, the first image descriptor with its LZW data byte
// for byte (interlacing kept), no extensions (hence no transparency) and the trailer. The LZW
// data must be whole, up to its block terminator (PIL refuses a file cut inside it too).
// The colour table at *pos when flags (the screen's or the image's packed byte) says there is
// one: *pal and *count take it and *pos moves past it. False when the file ends inside it.
static bool gif_table(const uint8_t *d, size_t n, size_t *pos, uint8_t flags, const uint8_t **pal,
                      size_t *count) {
    if (!(flags & 0x80)) return true;
    size_t k = (size_t)2 << (flags & 7);
    if (n - *pos < 3 * k) return false;
    *pal = d + *pos, *count = k;
    *pos += 3 * k;
    return true;
}

static uint8_t *gif_rewrite(const uint8_t *d, size_t n, ff_image *im, size_t *out_n, char *why,
                            size_t why_len) {
    const char *cut = NULL;
    size_t pos = 13;
    const uint8_t *pal = NULL; // the global table, then the frame's own if it has one
    size_t pal_count = 0;
    int trans = -1;
    if (n < 13) {
        cut = "header";
        goto truncated;
    }
    if (!gif_table(d, n, &pos, d[10], &pal, &pal_count)) {
        cut = "global colour table";
        goto truncated;
    }
    for (;;) { // blocks up to the first image, as PIL walks them
        if (pos >= n) {
            cut = "blocks before the first image";
            goto truncated;
        }
        uint8_t b = d[pos++];
        if (b == 0x3b) {
            snprintf(why, why_len, "GIF without an image (trailer before the first image)");
            return NULL;
        }
        if (b == 0x2c) break;
        if (b != 0x21) continue; // PIL skips a stray byte
        if (pos >= n) {
            cut = "extension";
            goto truncated;
        }
        uint8_t label = d[pos++];
        for (int first = 1;; first = 0) { // the extension's sub-blocks
            if (pos >= n) {
                cut = "extension";
                goto truncated;
            }
            size_t len = d[pos++];
            if (n - pos < len) {
                cut = "extension";
                goto truncated;
            }
            if (first && label == 0xf9) { // graphic control: PIL reads 4 bytes
                if (len < 4) {
                    snprintf(why, why_len,
                             "corrupt GIF: graphic control extension of %zu bytes (PIL "
                             "refuses it too)",
                             len);
                    return NULL;
                }
                if (d[pos] & 1) trans = d[pos + 3]; // a later one without the flag keeps it
            }
            if (len == 0) break;
            pos += len;
        }
    }
    if (n - pos < 9) {
        cut = "image descriptor";
        goto truncated;
    }
    const uint8_t *desc = d + pos;
    uint32_t x0 = le16(desc), y0 = le16(desc + 2), fw = le16(desc + 4), fh = le16(desc + 6);
    pos += 9;
    if (!gif_table(d, n, &pos, desc[8], &pal, &pal_count)) {
        cut = "local colour table";
        goto truncated;
    }
    if (pos >= n) {
        cut = "image data";
        goto truncated;
    }
    uint8_t code_size = d[pos++];
    size_t data_start = pos;
    for (;;) {
        if (pos >= n) {
            cut = "first image's data";
            goto truncated;
        }
        size_t len = d[pos++];
        if (len == 0) break;
        if (n - pos < len) {
            cut = "first image's data";
            goto truncated;
        }
        pos += len;
    }
    uint64_t cw = le16(d + 6), ch = le16(d + 8);
    if (x0 + fw > cw) cw = x0 + fw; // PIL enlarges the image to hold the frame
    if (y0 + fh > ch) ch = y0 + fh;
    if (!ds_image_size_ok(cw, ch)) {
        ds_image_size_why(why, why_len, cw, ch);
        return NULL;
    }
    if (fw == 0 || fh == 0) {
        snprintf(why, why_len, "GIF whose first image is empty (%ux%u)", (unsigned)fw,
                 (unsigned)fh);
        return NULL;
    }
    if (code_size < 1 || code_size > 8) {
        snprintf(why, why_len, "corrupt GIF: LZW code size %u", code_size);
        return NULL;
    }
    im->w = cw, im->h = ch;
    size_t data_len = pos - data_start;
    *out_n = 13 + 768 + 10 + 1 + data_len + 1;
    uint8_t *o = malloc(*out_n);
    if (!o) {
        snprintf(why, why_len, "out of memory for a %zu-byte GIF", *out_n);
        return NULL;
    }
    memcpy(o, "GIF89a", 6);
    put_le16(o + 6, (uint32_t)cw);
    put_le16(o + 8, (uint32_t)ch);
    o[10] = 0xf7; // a global table of 256 entries
    o[11] = (uint8_t)(trans >= 0 ? trans : 0);
    o[12] = 0;
    for (int i = 0; i < 256; i++) {
        uint8_t *e = o + 13 + 3 * i;
        if ((size_t)i < pal_count)
            memcpy(e, pal + 3 * i, 3);
        else
            e[0] = e[1] = e[2] = (uint8_t)i;
    }
    uint8_t *p = o + 13 + 768;
    p[0] = 0x2c;
    memcpy(p + 1, desc, 8);
    p[9] = desc[8] & 0x40; // interlaced or not; no local table
    p[10] = code_size;
    memcpy(p + 11, d + data_start, data_len);
    p[11 + data_len] = 0x3b;
    return o;
truncated:
    snprintf(why, why_len, "truncated GIF (the file ends inside the %s)", cut);
    return NULL;
}

// WebP: RIFF chunks. The image's size comes from VP8X (the canvas) or the bitstream header;
// libwebp (PIL) refuses a file whose chunks run past its end, and so do we.
static bool webp_check(const uint8_t *d, size_t n, ff_image *im, char *why, size_t why_len) {
    uint64_t end = (uint64_t)le32(d + 4) + 8;
    if (end > n) {
        snprintf(why, why_len, "truncated WebP (the RIFF header says %llu bytes, the file has %zu)",
                 (unsigned long long)end, n);
        return false;
    }
    uint64_t cw = 0, ch = 0, iw = 0, ih = 0;
    int vp8x = 0, animated = 0, image = 0;
    for (uint64_t pos = 12; pos + 8 <= end;) { // (a last odd chunk's pad may pass end)
        const uint8_t *c = d + pos;
        uint64_t len = le32(c + 4);
        if (len > end - pos - 8) {
            snprintf(why, why_len, "truncated WebP (chunk %.4s of %llu bytes cut)", (const char *)c,
                     (unsigned long long)len);
            return false;
        }
        const uint8_t *p = c + 8;
        if (!memcmp(c, "VP8X", 4) && pos == 12 && len >= 10) {
            vp8x = 1;
            animated |= (p[0] & 0x02) != 0;
            cw = (uint64_t)le24(p + 4) + 1, ch = (uint64_t)le24(p + 7) + 1;
        } else if (!memcmp(c, "ANIM", 4) || !memcmp(c, "ANMF", 4)) {
            animated = 1;
        } else if (!image && !memcmp(c, "VP8 ", 4)) {
            // frame tag (key frame: bit 0 clear), start code, 14-bit sizes (scale bits ignored
            // by libwebp too)
            if (len < 10 || (p[0] & 1) || p[3] != 0x9d || p[4] != 0x01 || p[5] != 0x2a) {
                snprintf(why, why_len, "corrupt WebP: bad VP8 frame header");
                return false;
            }
            iw = le16(p + 6) & 0x3fff, ih = le16(p + 8) & 0x3fff;
            image = 1, im->webp_lossy = 1;
        } else if (!image && !memcmp(c, "VP8L", 4)) {
            if (len < 5 || p[0] != 0x2f) {
                snprintf(why, why_len, "corrupt WebP: bad VP8L header");
                return false;
            }
            uint32_t bits = le32(p + 1);
            iw = (bits & 0x3fff) + 1, ih = ((bits >> 14) & 0x3fff) + 1;
            image = 1;
        }
        pos += 8 + len + (len & 1);
    }
    if (animated) {
        snprintf(why, why_len,
                 "unsupported image: animated WebP (FFmpeg 5.1's WebP decoder reads still images "
                 "only; PIL would give the first frame)");
        return false;
    }
    if (!image) {
        snprintf(why, why_len, "corrupt WebP: no VP8 or VP8L image data");
        return false;
    }
    if (vp8x && (cw != iw || ch != ih)) { // libwebp refuses it too
        snprintf(why, why_len, "corrupt WebP: canvas %llux%llu, image %llux%llu",
                 (unsigned long long)cw, (unsigned long long)ch, (unsigned long long)iw,
                 (unsigned long long)ih);
        return false;
    }
    if (!ds_image_size_ok(iw, ih)) {
        ds_image_size_why(why, why_len, iw, ih);
        return false;
    }
    im->w = iw, im->h = ih;
    return true;
}

// RLE-compressed BMP data from d[0..n): whether it ends (end-of-bitmap marker, or every pixel
// given) before the file does, and has neither delta escapes nor odd RLE4 literal runs, which
// PIL 9.4's RLE reader misreads (it takes four bytes for a delta's two, and n / 2 bytes for n
// 4-bit pixels), so that its pixels would not be FFmpeg's. Only counts, as PIL's reader does.
static const char *bmp_rle_problem(const uint8_t *d, size_t n, uint64_t w, uint64_t h, int rle4,
                                   int odd_offset) {
    uint64_t have = 0, x = 0, pos = 0;
    while (have < w * h) {
        if (n - pos < 2) return "truncated BMP (the RLE data is cut)";
        uint8_t count = d[pos], value = d[pos + 1];
        pos += 2;
        if (count) { // a run, clipped to the row
            uint64_t k = x + count > w ? (x < w ? w - x : 0) : count;
            have += k, x += k;
        } else if (value == 0) { // end of line: the rest of the row is index 0
            have += (w - have % w) % w, x = 0;
        } else if (value == 1) {
            return NULL;
        } else if (value == 2) {
            return "unsupported BMP: RLE delta escapes (PIL 9.4 misreads them)";
        } else { // literal pixels, padded to 16 bits
            if (rle4 && (value & 1))
                return "unsupported BMP: an RLE4 literal run of odd length (PIL 9.4 reads it a "
                       "pixel short)";
            // PIL pads to an even position in the file, FFmpeg in the RLE data
            if (odd_offset)
                return "unsupported BMP: RLE literal runs at an odd file offset (PIL 9.4 "
                       "misaligns them)";
            uint64_t bytes = rle4 ? value / 2 : value;
            if (n - pos < bytes + (bytes & 1)) return "truncated BMP (the RLE data is cut)";
            pos += bytes + (bytes & 1);
            have += rle4 ? 2 * bytes : bytes, x += value;
        }
    }
    return NULL;
}

// BMP: the headers PIL reads (OS/2 1.x, Windows 3 to 5); bit depths, compressions and bit
// fields as PIL accepts them.
static bool bmp_check(const uint8_t *d, size_t n, ff_image *im, char *why, size_t why_len) {
    if (n < 18) {
        snprintf(why, why_len, "truncated BMP (%zu bytes)", n);
        return false;
    }
    uint32_t off = le32(d + 10), hs = le32(d + 14), bits, comp = 0, colors = 0;
    if (hs != 12 && hs != 40 && hs != 64 && hs != 108 && hs != 124) {
        snprintf(why, why_len,
                 "unsupported BMP header size %u (PIL reads 12, 40, 64, 108 and 124 bytes)", hs);
        return false;
    }
    if (n < 14 + (size_t)hs || (hs == 40 && le32(d + 30) == 3 && n < 66)) { // + bit fields
        snprintf(why, why_len, "truncated BMP (header)");
        return false;
    }
    uint64_t w, h;
    if (hs == 12) {
        w = le16(d + 18), h = le16(d + 20), bits = le16(d + 24);
    } else {
        w = le32(d + 18), h = le32(d + 22), bits = le16(d + 28);
        if (d[25] == 0xff) h = ((uint64_t)1 << 32) - h; // top-down, as PIL tells it
        comp = le32(d + 30), colors = le32(d + 46);
    }
    if (!ds_image_size_ok(w, h)) {
        ds_image_size_why(why, why_len, w, h);
        return false;
    }
    if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32) {
        snprintf(why, why_len, "unsupported BMP bit depth %u (PIL refuses it too)", bits);
        return false;
    }
    if (comp == 3) { // bit fields: the layouts PIL knows
        static const uint32_t ok[][5] = {{32, 0xff0000, 0xff00, 0xff, 0},
                                         {32, 0xff000000, 0xff0000, 0xff00, 0},
                                         {32, 0xff000000, 0xff0000, 0xff00, 0xff},
                                         {32, 0xff, 0xff00, 0xff0000, 0xff000000},
                                         {32, 0xff0000, 0xff00, 0xff, 0xff000000},
                                         {32, 0, 0, 0, 0},
                                         {24, 0xff0000, 0xff00, 0xff, 0},
                                         {16, 0xf800, 0x7e0, 0x1f, 0},
                                         {16, 0x7c00, 0x3e0, 0x1f, 0}};
        const uint8_t *m = d + 54; // after a 40-byte header, or inside a longer one
        uint32_t mask[4] = {le32(m), le32(m + 4), le32(m + 8), hs > 40 ? le32(m + 12) : 0};
        int found = 0;
        for (size_t i = 0; i < sizeof ok / sizeof *ok && !found; i++)
            found = ok[i][0] == bits && ok[i][1] == mask[0] && ok[i][2] == mask[1] &&
                    ok[i][3] == mask[2] && (bits != 32 || ok[i][4] == mask[3]);
        if (!found) {
            snprintf(why, why_len,
                     "unsupported BMP bit fields %08x %08x %08x %08x at %u bits (PIL refuses "
                     "them too)",
                     mask[0], mask[1], mask[2], mask[3], bits);
            return false;
        }
        // PIL reads all-zero masks as BGRA, i.e. as an uncompressed 32-bit BMP; FFmpeg
        // refuses them, so it is told the file is uncompressed
        im->bmp_as_rgb = bits == 32 && !(mask[0] | mask[1] | mask[2] | mask[3]);
    } else if (comp != 0 && !(comp == 1 && bits == 8) && !(comp == 2 && bits == 4)) {
        snprintf(why, why_len, "unsupported BMP compression %u at %u bits%s", comp, bits,
                 comp == 4   ? " (JPEG)"
                 : comp == 5 ? " (PNG)"
                             : "");
        return false;
    }
    if (bits <= 8) {
        uint64_t entries = colors ? colors : (uint64_t)1 << bits;
        if (entries > 65536) {
            snprintf(why, why_len, "corrupt BMP: a palette of %llu entries",
                     (unsigned long long)entries);
            return false;
        }
        if (off == 14 + hs) { // PIL then skips the palette, FFmpeg would read it as pixels
            snprintf(why, why_len, "corrupt BMP: the pixel data offset points at the palette");
            return false;
        }
    }
    if (off > n) {
        snprintf(why, why_len, "truncated BMP (pixel data at offset %u, the file has %zu bytes)",
                 off, n);
        return false;
    }
    if (comp == 1 || comp == 2) {
        const char *problem = bmp_rle_problem(d + off, n - off, w, h, comp == 2, off & 1);
        if (problem) {
            snprintf(why, why_len, "%s", problem);
            return false;
        }
    } else {
        uint64_t stride = ((w * bits + 31) >> 3) & ~(uint64_t)3;
        if (stride * h > n - off) {
            snprintf(why, why_len,
                     "truncated BMP (%llu bytes of pixel data expected, the file has %zu)",
                     (unsigned long long)(stride * h), n - off);
            return false;
        }
    }
    im->w = w, im->h = h, im->bmp = 1;
    return true;
}

// TIFF: the first IFD (PIL and FFmpeg read the first page of a multi-page file).
typedef struct {
    const uint8_t *d;
    size_t n;
    int be; // big-endian ("MM")
} tiff_file;

static uint32_t tiff16(const tiff_file *t, const uint8_t *p) {
    return t->be ? (uint32_t)p[0] << 8 | p[1] : le16(p);
}
static uint32_t tiff32(const tiff_file *t, const uint8_t *p) {
    return t->be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                 : le32(p);
}

// Value i of a BYTE, SHORT or LONG entry; false when the entry has another type, fewer values
// or points outside the file.
static bool tiff_value(const tiff_file *t, const uint8_t *e, uint32_t i, uint32_t *v) {
    uint32_t type = tiff16(t, e + 2), count = tiff32(t, e + 4);
    size_t size = type == 1 ? 1 : type == 3 ? 2 : type == 4 ? 4 : 0;
    if (!size || i >= count) return false;
    const uint8_t *p = e + 8;
    if ((uint64_t)count * size > 4) {
        uint64_t at = tiff32(t, e + 8);
        if (at + (uint64_t)count * size > t->n) return false;
        p = t->d + at;
    }
    p += (size_t)i * size;
    *v = size == 1 ? p[0] : size == 2 ? tiff16(t, p) : tiff32(t, p);
    return true;
}

// The one-line reason a TIFF's layout is not read, or NULL: what PIL reads (its OPEN_INFO
// table) and FFmpeg decodes to the same pixels, as measured; everything else is named.
static const char *tiff_layout_problem(uint32_t photo, uint32_t spp, uint32_t bits, int fill2,
                                       const uint32_t *extra, uint32_t nextra, int *premultiplied) {
    uint32_t base = photo == 2 ? 3 : photo == 5 ? 4 : 1;
    if (photo > 5 || photo == 4) return "photometric interpretation";
    // RGB + one sample without ExtraSamples: PIL reads RGBA
    if (spp != base + nextra && !(photo == 2 && spp == 4 && nextra == 0))
        return "samples per pixel do not match the extra samples";
    if (photo == 0 || photo == 1 || photo == 3) {
        if (spp == 1) {
            if (bits == 16 && photo == 1 && !fill2) return NULL; // high byte, as PNG (image.h)
            if (bits != 1 && bits != 2 && bits != 4 && bits != 8) return "bit depth";
            if (fill2 && (photo == 3 || bits == 2 || bits == 4)) return "fill order 2";
            return NULL;
        }
        if (photo == 1 && spp == 2 && bits == 8 && extra[0] == 2 && !fill2) return NULL; // LA
        return "extra samples";
    }
    if (fill2) return "fill order 2";
    if (photo == 5) {
        if (bits != 8 || (nextra && extra[0] != 0) || nextra > 1) return "CMYK layout";
        return NULL;
    }
    // RGB
    if (bits != 8 && bits != 16) return "bit depth";
    if (nextra > 1) return "extra samples";
    if (nextra && extra[0] > 2 && !(bits == 8 && extra[0] == 999)) return "extra samples";
    *premultiplied = nextra && extra[0] == 1;
    return NULL;
}

// NULL for the compressions FFmpeg decodes as libtiff (PIL) does, else what the other one is.
static const char *tiff_compression_problem(uint32_t comp) {
    switch (comp) {
    case 1:     // none
    case 2:     // CCITT modified Huffman
    case 3:     // CCITT T.4 (group 3)
    case 4:     // CCITT T.6 (group 4)
    case 5:     // LZW
    case 8:     // deflate
    case 32773: // PackBits
    case 32946: // deflate (old code)
        return NULL;
    case 6:
        return "old-style JPEG";
    case 7:
        return "JPEG, which FFmpeg 5.1 decodes to other pixels than libtiff";
    case 34712:
        return "JPEG 2000";
    case 34925:
        return "LZMA";
    case 50000:
        return "Zstandard";
    case 50001:
        return "WebP";
    default:
        return "unknown";
    }
}

static bool tiff_check(const uint8_t *d, size_t n, ff_image *im, char *why, size_t why_len) {
    tiff_file t = {d, n, d[0] == 'M'};
    uint64_t ifd = n >= 8 ? tiff32(&t, d + 4) : n;
    if (ifd + 2 > n || ifd + 2 + 12 * (uint64_t)tiff16(&t, d + ifd) > n) {
        snprintf(why, why_len, "truncated TIFF (first IFD at offset %llu, the file has %zu bytes)",
                 (unsigned long long)ifd, n);
        return false;
    }
    uint32_t entries = tiff16(&t, d + ifd);
    const uint8_t *e = d + ifd + 2;
    const uint8_t *strip_off = NULL, *strip_len = NULL, *bps = NULL, *extras = NULL, *fmt = NULL;
    uint32_t w = 0, h = 0, comp = 1, photo = UINT32_MAX, fill = 1, spp = 1, planar = 1;
    uint32_t predictor = 1, inkset = 1, v;
    int tiled = 0, colormap = 0;
    for (uint32_t i = 0; i < entries; i++, e += 12) {
        uint32_t tag = tiff16(&t, e);
        uint32_t *dst = tag == 256   ? &w
                        : tag == 257 ? &h
                        : tag == 259 ? &comp
                        : tag == 262 ? &photo
                        : tag == 266 ? &fill
                        : tag == 277 ? &spp
                        : tag == 284 ? &planar
                        : tag == 317 ? &predictor
                        : tag == 332 ? &inkset
                                     : NULL;
        if (dst && !tiff_value(&t, e, 0, dst)) {
            snprintf(why, why_len, "corrupt TIFF: unreadable tag %u", tag);
            return false;
        }
        if (tag == 258) bps = e;
        if (tag == 273) strip_off = e;
        if (tag == 279) strip_len = e;
        if (tag == 320) colormap = 1;
        if (tag == 322 || tag == 323 || tag == 324 || tag == 325) tiled = 1;
        if (tag == 338) extras = e;
        if (tag == 339) fmt = e;
    }
    if (!ds_image_size_ok(w, h)) {
        ds_image_size_why(why, why_len, w, h);
        return false;
    }
    const char *comp_name = tiff_compression_problem(comp);
    if (comp_name) {
        snprintf(why, why_len, "unsupported TIFF compression %u (%s)", comp, comp_name);
        return false;
    }
    if (tiled) {
        snprintf(why, why_len,
                 "unsupported TIFF: tiled (FFmpeg 5.1 decodes tiles wrongly "
                 "outside DNG files)");
        return false;
    }
    if (photo == UINT32_MAX) {
        snprintf(why, why_len, "unsupported TIFF: no photometric interpretation tag");
        return false;
    }
    // bits per sample: one value for all samples or one each, all equal; sample format
    // unsigned; the extra samples' kinds
    uint32_t bits = 1, extra[8], nextra = 0;
    if (bps && !tiff_value(&t, bps, 0, &bits)) {
        snprintf(why, why_len, "corrupt TIFF: unreadable bits per sample");
        return false;
    }
    for (uint32_t i = 1; bps && i < spp && tiff_value(&t, bps, i, &v); i++)
        if (v != bits) {
            snprintf(why, why_len, "unsupported TIFF: samples of %u and %u bits", bits, v);
            return false;
        }
    for (uint32_t i = 0; fmt && tiff_value(&t, fmt, i, &v); i++)
        if (v != 1) {
            snprintf(why, why_len, "unsupported TIFF: sample format %u (not unsigned integers)", v);
            return false;
        }
    while (extras && nextra < 8 && tiff_value(&t, extras, nextra, &extra[nextra])) nextra++;
    int premultiplied = 0;
    const char *layout =
        tiff_layout_problem(photo, spp, bits, fill == 2, extra, nextra, &premultiplied);
    if (!layout && photo == 3 && !colormap) layout = "palette without a colour map";
    if (!layout && photo == 5 && inkset != 1) layout = "ink set other than CMYK";
    if (!layout && comp >= 2 && comp <= 4 && bits != 1) layout = "CCITT compression of grey";
    if (!layout && predictor != 1 &&
        !(predictor == 2 && (comp == 5 || comp == 8 || comp == 32946) && bits >= 8))
        layout = "predictor";
    // FFmpeg 5.1 misreads planar 16-bit RGB (measured)
    if (!layout && planar != 1 && !(planar == 2 && (spp == 1 || (photo == 2 && bits == 8))))
        layout = "planar configuration";
    if (layout) {
        snprintf(why, why_len,
                 "unsupported TIFF: %s (photometric %u, %u samples of %u bits, %u extra, "
                 "compression %u, predictor %u, planar %u, fill order %u)",
                 layout, photo, spp, bits, nextra, comp, predictor, planar, fill);
        return false;
    }
    // every strip inside the file
    uint32_t o, l;
    for (uint32_t i = 0; strip_off && tiff_value(&t, strip_off, i, &o); i++) {
        if (!strip_len || !tiff_value(&t, strip_len, i, &l)) {
            snprintf(why, why_len, "corrupt TIFF: strip %u has no byte count", i);
            return false;
        }
        if ((uint64_t)o + l > n) {
            snprintf(why, why_len, "truncated TIFF (strip %u ends at byte %llu, the file has %zu)",
                     i, (unsigned long long)o + l, n);
            return false;
        }
    }
    if (!strip_off) {
        snprintf(why, why_len, "corrupt TIFF: no strip offsets");
        return false;
    }
    im->w = w, im->h = h, im->premultiplied = premultiplied;
    return true;
}

// libwebp's YUV -> RGB (src/dsp/yuv.h: BT.601 limited range, 14-bit fixed point), which PIL's
// WebP pixels come from.
static inline int webp_mult_hi(int v, int coeff) {
    return (v * coeff) >> 8;
}
static inline uint8_t webp_clip8(int v) {
    return (v & ~16383) == 0 ? (uint8_t)(v >> 6) : v < 0 ? 0 : 255;
}
static inline void webp_yuv_to_rgb(int y, int u, int v, uint8_t *rgb) {
    int yy = webp_mult_hi(y, 19077);
    rgb[0] = webp_clip8(yy + webp_mult_hi(v, 26149) - 14234);
    rgb[1] = webp_clip8(yy - webp_mult_hi(u, 6419) - webp_mult_hi(v, 13320) + 8708);
    rgb[2] = webp_clip8(yy + webp_mult_hi(u, 33050) - 17685);
}

// libwebp's "fancy upsampling" of one pair of rows (src/dsp/upsampling.c, UPSAMPLE_FUNC): the
// chroma of output rows top (luma ty) and bottom (luma by, NULL for none) interpolated between
// chroma rows tu/tv (above) and cu/cv (below), 9-3-3-1 weights in libwebp's integer steps.
static void webp_upsample_pair(const uint8_t *ty, const uint8_t *by, const uint8_t *tu,
                               const uint8_t *tv, const uint8_t *cu, const uint8_t *cv,
                               uint8_t *top, uint8_t *bottom, int len) {
    int last_pair = (len - 1) >> 1;
    int tlu = tu[0], tlv = tv[0], lu = cu[0], lv = cv[0]; // top-left and left samples
    webp_yuv_to_rgb(ty[0], (3 * tlu + lu + 2) >> 2, (3 * tlv + lv + 2) >> 2, top);
    if (by) webp_yuv_to_rgb(by[0], (3 * lu + tlu + 2) >> 2, (3 * lv + tlv + 2) >> 2, bottom);
    for (int x = 1; x <= last_pair; x++) {
        int t_u = tu[x], t_v = tv[x], c_u = cu[x], c_v = cv[x];
        int avg_u = tlu + t_u + lu + c_u + 8, avg_v = tlv + t_v + lv + c_v + 8;
        int d12u = (avg_u + 2 * (t_u + lu)) >> 3, d12v = (avg_v + 2 * (t_v + lv)) >> 3;
        int d03u = (avg_u + 2 * (tlu + c_u)) >> 3, d03v = (avg_v + 2 * (tlv + c_v)) >> 3;
        webp_yuv_to_rgb(ty[2 * x - 1], (d12u + tlu) >> 1, (d12v + tlv) >> 1, top + 3 * (2 * x - 1));
        webp_yuv_to_rgb(ty[2 * x], (d03u + t_u) >> 1, (d03v + t_v) >> 1, top + 3 * (2 * x));
        if (by) {
            webp_yuv_to_rgb(by[2 * x - 1], (d03u + lu) >> 1, (d03v + lv) >> 1,
                            bottom + 3 * (2 * x - 1));
            webp_yuv_to_rgb(by[2 * x], (d12u + c_u) >> 1, (d12v + c_v) >> 1, bottom + 3 * (2 * x));
        }
        tlu = t_u, tlv = t_v, lu = c_u, lv = c_v;
    }
    if (!(len & 1)) {
        webp_yuv_to_rgb(ty[len - 1], (3 * tlu + lu + 2) >> 2, (3 * tlv + lv + 2) >> 2,
                        top + 3 * (len - 1));
        if (by)
            webp_yuv_to_rgb(by[len - 1], (3 * lu + tlu + 2) >> 2, (3 * lv + tlv + 2) >> 2,
                            bottom + 3 * (len - 1));
    }
}

// A VP8 frame (YUV 4:2:0) to RGB as libwebp's EmitFancyRGB does it for a whole picture: row 0
// from chroma row 0 alone, rows 2k-1 and 2k between chroma rows k-1 and k, and the last row
// of an even height from the last chroma row alone.
static void webp_fancy_rgb(const AVFrame *f, uint8_t *rgb) {
    int W = f->width, H = f->height;
    const uint8_t *Y = f->data[0], *U = f->data[1], *V = f->data[2];
    size_t ys = (size_t)f->linesize[0], us = (size_t)f->linesize[1], vs = (size_t)f->linesize[2];
    size_t row = (size_t)W * 3;
    webp_upsample_pair(Y, NULL, U, V, U, V, rgb, NULL, W);
    int y = 1;
    for (; y + 1 < H; y += 2) {
        size_t k = (size_t)(y + 1) / 2;
        webp_upsample_pair(Y + y * ys, Y + (y + 1) * ys, U + (k - 1) * us, V + (k - 1) * vs,
                           U + k * us, V + k * vs, rgb + y * row, rgb + (y + 1) * row, W);
    }
    if (y < H) { // the last row of an even height
        size_t k = (size_t)(H - 1) / 2;
        webp_upsample_pair(Y + y * ys, NULL, U + k * us, V + k * vs, U + k * us, V + k * vs,
                           rgb + y * row, NULL, W);
    }
}

// A sample of `depth` bits as PIL's unpackers make it 8 bits: 16-bit samples keep their high
// byte ("RGB;16B", "I;16" high byte as for PNG, see image.h), fewer than 8 bits are scaled as
// PIL's "BGR;15"/"BGR;16" unpackers scale them (v * 255 / max, rounded down).
static inline uint8_t sample8(uint32_t v, int depth) {
    if (depth == 8) return (uint8_t)v;
    if (depth > 8) return (uint8_t)(v >> (depth - 8));
    return (uint8_t)(v * 255 / ((1u << depth) - 1));
}

// PIL's un-premultiplying "RGBa" unpacker: CLIP8(v * 255 / a), black where a = 0.
static inline uint8_t unpremultiply(uint8_t v, uint8_t a) {
    if (a == 255) return v;
    if (a == 0) return 0;
    int u = v * 255 / a;
    return u > 255 ? 255 : (uint8_t)u;
}

// The decoded frame to rgb [h][w][3]. Returns false (with why) for a pixel format groundc does
// not convert as PIL would.
static bool ff_frame_to_rgb(const AVFrame *f, const ff_image *im, uint8_t *rgb, char *why,
                            size_t why_len) {
    int W = f->width, H = f->height;
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(f->format);
    const char *fmt_name = desc ? desc->name : "none";
    if (im->webp_lossy && (f->format == AV_PIX_FMT_YUV420P || f->format == AV_PIX_FMT_YUVA420P)) {
        webp_fancy_rgb(f, rgb); // alpha (YUVA) dropped
        return true;
    }
    if (f->format == AV_PIX_FMT_PAL8) {
        uint8_t lut[256][3];
        const uint8_t *pal = f->data[1]; // 256 x uint32 0xAARRGGBB, native order
        for (int i = 0; i < 256; i++) {
            uint32_t c;
            memcpy(&c, pal + 4 * i, 4);
            if (im->bmp && (c >> 24) == 0) c = (uint32_t)i * 0x010101u; // not in the file
            lut[i][0] = (uint8_t)(c >> 16), lut[i][1] = (uint8_t)(c >> 8), lut[i][2] = (uint8_t)c;
        }
        for (int y = 0; y < H; y++) {
            const uint8_t *src = f->data[0] + (size_t)y * f->linesize[0];
            uint8_t *dst = rgb + (size_t)y * W * 3;
            for (int x = 0; x < W; x++) memcpy(dst + 3 * x, lut[src[x]], 3);
        }
        return true;
    }
    // Packed or planar RGB(A) and grey(+alpha) of 1, 5, 6, 8 or 16 bits a component, read
    // with libavutil's generic line reader (component order R, G, B, A or Y, A).
    int rgb_fmt = desc && (desc->flags & AV_PIX_FMT_FLAG_RGB);
    int grey = desc && !rgb_fmt && desc->nb_components <= 2 && !desc->log2_chroma_w &&
               !desc->log2_chroma_h;
    int ok = desc && (rgb_fmt ? desc->nb_components >= 3 : grey) &&
             !(desc->flags & (AV_PIX_FMT_FLAG_FLOAT | AV_PIX_FMT_FLAG_BAYER |
                              AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_PAL));
    for (int c = 0; ok && c < desc->nb_components; c++) {
        int depth = desc->comp[c].depth;
        ok = depth == 1 || depth == 5 || depth == 6 || depth == 8 || depth == 16;
    }
    int alpha = ok && (desc->flags & AV_PIX_FMT_FLAG_ALPHA) ? desc->nb_components - 1 : -1;
    if (!ok || (im->premultiplied && alpha < 0)) {
        snprintf(why, why_len, "%s: FFmpeg decoded pixel format %s, which groundc does not convert",
                 im->name, fmt_name);
        return false;
    }
    uint16_t *line = malloc((size_t)W * 4 * sizeof *line);
    if (!line) {
        snprintf(why, why_len, "out of memory for a %d-pixel row", W);
        return false;
    }
    int nc = rgb_fmt ? 3 : 1;
    for (int y = 0; y < H; y++) {
        uint8_t *dst = rgb + (size_t)y * W * 3;
        for (int c = 0; c < nc; c++)
            av_read_image_line2(line + (size_t)c * W, (const uint8_t **)f->data, f->linesize, desc,
                                0, y, c, W, 0, 2);
        if (alpha >= 0 && im->premultiplied)
            av_read_image_line2(line + (size_t)3 * W, (const uint8_t **)f->data, f->linesize, desc,
                                0, y, alpha, W, 0, 2);
        for (int c = 0; c < nc; c++) {
            int depth = desc->comp[c].depth;
            const uint16_t *s = line + (size_t)c * W;
            for (int x = 0; x < W; x++) {
                uint32_t v = s[x];
                if (f->format == AV_PIX_FMT_MONOWHITE) v ^= 1; // 0 is white
                uint8_t b = sample8(v, depth);
                if (im->premultiplied)
                    b = unpremultiply(b, sample8(line[(size_t)3 * W + x], desc->comp[alpha].depth));
                if (rgb_fmt)
                    dst[3 * x + c] = b;
                else
                    dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = b;
            }
        }
    }
    free(line);
    return true;
}

uint8_t *ds_image_decode_ffmpeg(ds_image_format format, const uint8_t *data, size_t size, int *w,
                                int *h, char *why, size_t why_len) {
    static const char *const names[] = {"GIF", "WebP", "BMP", "TIFF"};
    static const enum AVCodecID codecs[] = {AV_CODEC_ID_GIF, AV_CODEC_ID_WEBP, AV_CODEC_ID_BMP,
                                            AV_CODEC_ID_TIFF};
    const char *name = names[format];
    const enum AVCodecID codec = codecs[format];
    ff_image im = {name, codec, 0, 0, 0, 0, 0, 0};
    uint8_t *rewritten = NULL; // what FFmpeg decodes instead of the file, if anything
    size_t rewritten_size = 0;
    bool ok = true;
    if (codec == AV_CODEC_ID_GIF) {
        ok = (rewritten = gif_rewrite(data, size, &im, &rewritten_size, why, why_len)) != NULL;
    } else if (codec == AV_CODEC_ID_WEBP) {
        ok = webp_check(data, size, &im, why, why_len);
    } else if (codec == AV_CODEC_ID_BMP) {
        ok = bmp_check(data, size, &im, why, why_len);
        if (ok && im.bmp_as_rgb) {
            if (!(rewritten = malloc(rewritten_size = size))) {
                snprintf(why, why_len, "out of memory for a copy of %zu bytes", size);
                return NULL;
            }
            memcpy(rewritten, data, size);
            memset(rewritten + 30, 0, 4); // compression: none
        }
    } else {
        ok = tiff_check(data, size, &im, why, why_len);
    }
    if (!ok) return NULL;
    if (rewritten) data = rewritten, size = rewritten_size;
    AVFrame *f = av_frame_alloc();
    uint8_t *rgb = NULL;
    char err[256];
    if (!f) {
        snprintf(why, why_len, "out of memory for a frame");
    } else if (!ds_ff_decode_picture(codec, data, size, DS_IMAGE_MAX_PIXELS, f, err, sizeof err)) {
        snprintf(why, why_len, "corrupt or unsupported %s: FFmpeg's %s", name, err);
    } else if ((uint64_t)f->width != im.w || (uint64_t)f->height != im.h) {
        snprintf(why, why_len, "%s: FFmpeg decoded %dx%d pixels where the header says %llux%llu",
                 name, f->width, f->height, (unsigned long long)im.w, (unsigned long long)im.h);
    } else if (!(rgb = malloc((size_t)f->width * f->height * 3))) {
        snprintf(why, why_len, "out of memory for %dx%d pixels", f->width, f->height);
    } else if (!ff_frame_to_rgb(f, &im, rgb, why, why_len)) {
        free(rgb);
        rgb = NULL;
    } else {
        *w = f->width, *h = f->height;
    }
    av_frame_free(&f);
    free(rewritten);
    return rgb;
}
