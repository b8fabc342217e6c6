// image.c: see image.h.
#include "image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <libexif/exif-data.h>
#include <png.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/image_internal.h"

bool ds_image_size_ok(uint64_t w, uint64_t h) {
    return w > 0 && h > 0 && w <= DS_IMAGE_MAX_SIDE && h <= DS_IMAGE_MAX_SIDE &&
           w * h <= DS_IMAGE_MAX_PIXELS;
}

void ds_image_size_why(char *why, size_t why_len, uint64_t w, uint64_t h) {
    if (w == 0 || h == 0)
        snprintf(why, why_len, "empty image (%llux%llu)", (unsigned long long)w,
                 (unsigned long long)h);
    else if (w > DS_IMAGE_MAX_SIDE || h > DS_IMAGE_MAX_SIDE)
        snprintf(why, why_len, "image too large (%llux%llu, limit %d per side)",
                 (unsigned long long)w, (unsigned long long)h, DS_IMAGE_MAX_SIDE);
    else
        snprintf(why, why_len,
                 "image too large (%llux%llu = %llu pixels, limit %d as PIL's decompression "
                 "bomb check)",
                 (unsigned long long)w, (unsigned long long)h, (unsigned long long)(w * h),
                 DS_IMAGE_MAX_PIXELS);
}

// ---------------------------------------------------------------------------------------
// JPEG. libjpeg reports errors through error_exit, which must not return: ours formats the
// message and longjmps back to the decoder, which cleans up and calls ag_fail.

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    int rows_done; // every scanline is out: only jpeg_finish_decompress is left
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

// Warnings are ignored as PIL ignores them (real-world files often carry harmless ones such
// as extraneous bytes before a marker), except running out of data: libjpeg would pad the
// rest of the image with grey, where PIL raises "image file is truncated". Once every row
// is out, PIL accepts a file that ends early (its jpeg_finish_decompress may suspend), e.g.
// one whose end marker is damaged; libjpeg's memory source then supplies the marker.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF && !e->rows_done) jpeg_on_error(cinfo);
}

// Valid JPEGs that libjpeg-turbo's 8-bit decoder (PIL's too) does not read, as opposed to
// damaged ones.
static int jpeg_unsupported(int code) {
    return code == JERR_BAD_PRECISION || code == JERR_SOF_UNSUPPORTED ||
           code == JERR_ARITH_NOTIMPL || code == JERR_NOT_COMPILED ||
           code == JERR_CONVERSION_NOTIMPL || code == JERR_COMPONENT_COUNT ||
           code == JERR_BAD_J_COLORSPACE;
}

// PIL's rounding of a * b / 255 for 8-bit a, b.
static inline int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

// The decoders return NULL and a message instead of failing themselves, so that the caller
// can free the file's bytes before ag_fail (which may longjmp away in tests).
static uint8_t *decode_jpeg(const uint8_t *data, size_t size, int *w, int *h, char *why,
                            size_t why_len) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    // Written after setjmp and read after longjmp, hence volatile.
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile cmyk = NULL;
    volatile int kind = 0; // what failed: 0 libjpeg, 1 the size check, 2 memory
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    err.msg[0] = 0;
    err.rows_done = 0;
    if (setjmp(err.jump)) {
        int code = err.mgr.msg_code;
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(cmyk);
        if (kind == 1)
            ds_image_size_why(why, why_len, cinfo.image_width, cinfo.image_height);
        else if (kind == 2)
            snprintf(why, why_len, "%s", err.msg);
        else if (jpeg_unsupported(code))
            snprintf(why, why_len, "unsupported JPEG (PIL cannot read it either): %s", err.msg);
        else
            snprintf(why, why_len, "corrupt or truncated JPEG: %s", err.msg);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (!ds_image_size_ok(cinfo.image_width, cinfo.image_height)) {
        kind = 1;
        longjmp(err.jump, 1);
    }
    int four = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    // libjpeg-turbo converts grey and YCbCr to RGB itself, with the same defaults (islow
    // DCT, fancy upsampling) as PIL, so the pixels agree exactly. CMYK we convert below.
    cinfo.out_color_space = four ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int W = (int)cinfo.output_width, H = (int)cinfo.output_height;
    rgb = malloc((size_t)W * H * 3);
    if (four) cmyk = malloc((size_t)W * 4);
    if (!rgb || (four && !cmyk)) {
        snprintf(err.msg, sizeof err.msg, "out of memory for %dx%d pixels", W, H);
        kind = 2;
        longjmp(err.jump, 1);
    }
    int inverted = four && cinfo.saw_Adobe_marker;
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *row = rgb + (size_t)cinfo.output_scanline * W * 3;
        JSAMPROW dst = four ? cmyk : row;
        if (jpeg_read_scanlines(&cinfo, &dst, 1) != 1) {
            snprintf(err.msg, sizeof err.msg, "no scanline decoded");
            longjmp(err.jump, 1);
        }
        if (four) {
            for (int x = 0; x < W; x++) {
                const uint8_t *p = cmyk + 4 * x;
                int c = p[0], m = p[1], y = p[2], k = p[3];
                if (inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
                int nk = 255 - k;
                row[3 * x + 0] = (uint8_t)(nk - muldiv255(c, nk));
                row[3 * x + 1] = (uint8_t)(nk - muldiv255(m, nk));
                row[3 * x + 2] = (uint8_t)(nk - muldiv255(y, nk));
            }
        }
    }
    err.rows_done = 1;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(cmyk);
    *w = W;
    *h = H;
    return rgb;
}

// ---------------------------------------------------------------------------------------
// PNG. libpng's error callback must not return either: it records the message and longjmps
// to png_jmpbuf; warnings (unknown sRGB profiles and the like) are ignored, as PIL does.
//
// PIL stops reading a PNG once it has the last row: what follows (the end of the zlib
// stream with its checksum, the last IDAT's CRC, later chunks, IEND) may be missing or
// damaged, as in files cut short by a download, and the image still loads. It does not check
// IDAT CRCs at all. groundc accepts the same files: IDAT CRCs are not checked, png_read_end
// is never called, and an error raised after the last row is ignored.

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    char msg[256];
} png_src;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {}

static void png_on_read(png_structp png, png_bytep out, size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "unexpected end of data (file truncated)");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// libpng reads an IDAT chunk whole, so a file cut inside one would fail before its first row
// where PIL decodes every row whose data is there. Returns a copy with that chunk's length
// cut to the bytes present and a dummy CRC after them (IDAT CRCs are not checked), or NULL
// when the file is not cut inside an IDAT (or there is no memory for the copy).
static uint8_t *png_mend_cut_idat(const uint8_t *d, size_t size, size_t *mended_size) {
    size_t pos = 8;
    while (size - pos >= 8) {
        uint32_t len = be32(d + pos);
        if (len > 0x7fffffffu) return NULL; // libpng refuses it anyway
        if (!memcmp(d + pos + 4, "IEND", 4)) return NULL;
        if ((uint64_t)len + 12 <= size - pos) {
            pos += 12 + (size_t)len;
            continue;
        }
        if (memcmp(d + pos + 4, "IDAT", 4)) return NULL;
        size_t have = size - pos - 8 < len ? size - pos - 8 : len;
        uint8_t *m = malloc(pos + 8 + have + 4);
        if (!m) return NULL;
        memcpy(m, d, pos + 8 + have);
        m[pos] = (uint8_t)(have >> 24), m[pos + 1] = (uint8_t)(have >> 16);
        m[pos + 2] = (uint8_t)(have >> 8), m[pos + 3] = (uint8_t)have;
        memset(m + pos + 8 + have, 0, 4);
        *mended_size = pos + 8 + have + 4;
        return m;
    }
    return NULL;
}

// PIL's palette: entries the PLTE chunk does not define stay a grey ramp (index i is
// (i, i, i)), where libpng's expansion would give black.
static void png_palette_to_rgb(png_structp png, png_infop info, uint8_t *rgb, png_uint_32 W,
                               png_uint_32 H) {
    uint8_t lut[256][3];
    for (int i = 0; i < 256; i++) lut[i][0] = lut[i][1] = lut[i][2] = (uint8_t)i;
    png_colorp pal = NULL;
    int n = 0;
    if (png_get_PLTE(png, info, &pal, &n) & PNG_INFO_PLTE)
        for (int i = 0; i < n && i < 256; i++)
            lut[i][0] = pal[i].red, lut[i][1] = pal[i].green, lut[i][2] = pal[i].blue;
    // Each row holds W indices at its start; expanded in place from the right.
    for (png_uint_32 y = 0; y < H; y++) {
        uint8_t *row = rgb + (size_t)y * W * 3;
        for (size_t x = W; x-- > 0;) {
            const uint8_t *c = lut[row[x]];
            row[3 * x + 0] = c[0], row[3 * x + 1] = c[1], row[3 * x + 2] = c[2];
        }
    }
}

static uint8_t *decode_png_bytes(const uint8_t *data, size_t size, int *w, int *h, char *why,
                                 size_t why_len) {
    png_src src = {data, size, 0, {0}};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(why, why_len, "cannot create a PNG reader (out of memory)");
        return NULL;
    }
    uint8_t *volatile rgb = NULL;
    volatile int ours = 0;       // the message is groundc's, not libpng's
    volatile int interlaced = 0; // read from the header (png_read_update_info changes info)
    volatile int palette = 0;
    if (setjmp(png_jmpbuf(png))) {
        // Whole once the last row of the last pass is in (see above).
        png_uint_32 H = png_get_image_height(png, info);
        int whole = rgb && (interlaced ? png_get_current_pass_number(png) >= 7
                                       : png_get_current_row_number(png) >= H);
        if (!whole) {
            png_destroy_read_struct(&png, &info, NULL);
            free(rgb);
            snprintf(why, why_len, "%s%s", ours ? "" : "corrupt or truncated PNG: ", src.msg);
            return NULL;
        }
    } else {
        png_set_read_fn(png, &src, png_on_read);
        // PIL has no width limit of its own (libpng's default is a million pixels); ours
        // is checked below.
        png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
        png_read_info(png, info);
        // PIL checks the CRCs of the chunks before the image data (read above), not after.
        png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
        png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
        if (!ds_image_size_ok(W, H)) {
            ds_image_size_why(src.msg, sizeof src.msg, W, H);
            ours = 1;
            png_longjmp(png, 1);
        }
        int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
        interlaced = png_get_interlace_type(png, info) != PNG_INTERLACE_NONE;
        palette = type == PNG_COLOR_TYPE_PALETTE;
        // Everything to 8 bits the way PIL's convert("RGB") sees it: palette indices one
        // per byte (looked up below), low grey bit depths scaled to 0..255, 16 bits
        // truncated to the high byte, grey replicated, alpha and tRNS dropped.
        if (type == PNG_COLOR_TYPE_PALETTE) png_set_packing(png);
        if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (depth == 16) png_set_strip_16(png);
        if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
        if ((type & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(png);
        int passes = png_set_interlace_handling(png);
        png_read_update_info(png, info);
        int want = palette ? 1 : 3;
        int channels = png_get_channels(png, info);
        if (png_get_bit_depth(png, info) != 8 || channels != want ||
            png_get_rowbytes(png, info) != (size_t)W * channels) {
            snprintf(src.msg, sizeof src.msg,
                     "PNG: unexpected layout after conversion (%d channels of %d bits)", channels,
                     png_get_bit_depth(png, info));
            ours = 1;
            png_longjmp(png, 1);
        }
        rgb = malloc((size_t)W * H * 3);
        if (!rgb) {
            snprintf(src.msg, sizeof src.msg, "out of memory for %ux%u pixels", (unsigned)W,
                     (unsigned)H);
            ours = 1;
            png_longjmp(png, 1);
        }
        // Row by row: no array of H row pointers (a 1 x 10^8 image would need 800 MB).
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < H; y++) png_read_row(png, rgb + (size_t)y * W * 3, NULL);
    }
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    if (palette) png_palette_to_rgb(png, info, rgb, W, H);
    png_destroy_read_struct(&png, &info, NULL);
    *w = (int)W;
    *h = (int)H;
    return rgb;
}

static uint8_t *decode_png(const uint8_t *data, size_t size, int *w, int *h, char *why,
                           size_t why_len) {
    // IHDR is always the first chunk: refuse absurd sizes before libpng reads further (it
    // would otherwise complain about later chunks first).
    if (size >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        uint32_t W = be32(data + 16), H = be32(data + 20);
        if (W && H && !ds_image_size_ok(W, H)) {
            ds_image_size_why(why, why_len, W, H);
            return NULL;
        }
    }
    size_t mended_size = 0;
    uint8_t *mended = png_mend_cut_idat(data, size, &mended_size);
    uint8_t *rgb = mended ? decode_png_bytes(mended, mended_size, w, h, why, why_len)
                          : decode_png_bytes(data, size, w, h, why, why_len);
    free(mended);
    return rgb;
}

// ---------------------------------------------------------------------------------------

static const char *sniff_other(const uint8_t *d, size_t n) {
    if (n >= 4 && (!memcmp(d, "II+\0", 4) || !memcmp(d, "MM\0+", 4))) return "BigTIFF";
    if (n >= 12 && !memcmp(d + 4, "ftyp", 4)) return "ISO media (HEIF/AVIF/MP4)";
    if (n >= 12 && !memcmp(d, "\0\0\0\x0cjP  \r\n\x87\n", 12)) return "JPEG 2000";
    if (n >= 4 && !memcmp(d, "\xff\x4f\xff\x51", 4)) return "JPEG 2000 codestream";
    if (n >= 4 && !memcmp(d, "\xff\x0a", 2)) return "JPEG XL";
    if (n >= 4 && !memcmp(d, "8BPS", 4)) return "Photoshop PSD";
    if (n >= 4 && !memcmp(d, "\0\0\1\0", 4)) return "ICO";
    if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7' &&
        (d[2] == '\n' || d[2] == ' ' || d[2] == '\r' || d[2] == '\t'))
        return "PNM (PBM/PGM/PPM)";
    // A web server's error page saved under an image's name is common in scraped data sets.
    size_t i = 0;
    while (i < n && i < 64 && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n')) i++;
    if (i < n && d[i] == '<') return "text (HTML/XML/SVG)";
    return NULL;
}

// Decodes or explains why not (message without the file name).
static uint8_t *decode_any(const uint8_t *d, size_t size, int *w, int *h, char *why,
                           size_t why_len) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size == 0) {
        snprintf(why, why_len, "empty image file");
        return NULL;
    }
    // The same signatures PIL accepts; the file's name plays no part.
    if (size >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff)
        return decode_jpeg(d, size, w, h, why, why_len);
    if (size >= 8 && !memcmp(d, png_sig, 8)) return decode_png(d, size, w, h, why, why_len);
    if (size >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6)))
        return ds_image_decode_ffmpeg(DS_IMAGE_GIF, d, size, w, h, why, why_len);
    if (size >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4))
        return ds_image_decode_ffmpeg(DS_IMAGE_WEBP, d, size, w, h, why, why_len);
    if (size >= 2 && !memcmp(d, "BM", 2))
        return ds_image_decode_ffmpeg(DS_IMAGE_BMP, d, size, w, h, why, why_len);
    if (size >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4)))
        return ds_image_decode_ffmpeg(DS_IMAGE_TIFF, d, size, w, h, why, why_len);
    const char *other = sniff_other(d, size);
    if (other) {
        snprintf(why, why_len,
                 "unsupported image format %s (groundc reads JPEG, PNG, GIF, WebP, BMP and TIFF)",
                 other);
    } else {
        char hex[3 * 8 + 1] = "";
        for (size_t i = 0, at = 0; i < size && i < 8; i++, at = strlen(hex))
            snprintf(hex + at, sizeof hex - at, "%s%02x", i ? " " : "", d[i]);
        snprintf(why, why_len,
                 "not an image groundc reads (JPEG, PNG, GIF, WebP, BMP, TIFF): unrecognised "
                 "leading bytes %s",
                 hex);
    }
    return NULL;
}

uint8_t *ds_image_decode_memory(const void *data, size_t size, const char *name, int *w, int *h) {
    char why[512];
    uint8_t *rgb = decode_any(data, size, w, h, why, sizeof why);
    if (!rgb) ag_fail("%s: %s", name, why);
    return rgb;
}

uint8_t *ds_image_decode_file(const char *path, int *w, int *h) {
    size_t size;
    // the whole file: both decoders work from memory, and the format is decided by the
    // first bytes, never by the extension
    ds_require_file(path);
    uint8_t *data = (uint8_t *)ds_read_file_max(path, (size_t)DS_IMAGE_MAX_FILE_BYTES, &size);
    char why[512];
    uint8_t *rgb = decode_any(data, size, w, h, why, sizeof why);
    free(data);
    if (!rgb) ag_fail("%s: %s", path, why);
    return rgb;
}

// ---------------------------------------------------------------------------------------
// Padding (LLaVA's expand2square).

void ds_image_pad_square(const uint8_t *rgb, int w, int h, uint8_t *out) {
    int side = ds_image_square_side(w, h);
    int x0 = (side - w) / 2, y0 = (side - h) / 2;
    for (size_t i = 0; i < (size_t)side * side; i++) {
        out[3 * i + 0] = DS_CLIP_MEAN_R;
        out[3 * i + 1] = DS_CLIP_MEAN_G;
        out[3 * i + 2] = DS_CLIP_MEAN_B;
    }
    for (int y = 0; y < h; y++)
        memcpy(out + ((size_t)(y + y0) * side + x0) * 3, rgb + (size_t)y * w * 3, (size_t)w * 3);
}

// ---------------------------------------------------------------------------------------
// PIL's bicubic resample, reproduced from its documented behaviour: for each output pixel a
// filter centred on (xx + 0.5) * scale in input coordinates, stretched by the downscale
// factor (so downscaling averages, i.e. antialiases), taps normalised to sum 1, then turned
// into 22-bit fixed point; sums start at half an LSB and are clipped to 0..255. The
// arithmetic order below matches PIL's so that the doubles, hence the integers, agree.

#define PIL_PRECISION_BITS 22 // 32 - 8 bits of pixel - 2 bits of headroom for negative lobes

static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct {
    int ksize;      // taps reserved per output pixel
    int *bounds;    // [out][2]: first input index, number of taps
    int32_t *coeff; // [out][ksize] fixed point
} pil_coeffs;

static void pil_coeffs_make(int in_size, int out_size, pil_coeffs *c) {
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale; // bicubic support is 2
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = ag_xmalloc((size_t)out_size * 2 * sizeof(int), "resize bounds");
    c->coeff = ag_xmalloc((size_t)out_size * ksize * sizeof(int32_t), "resize coefficients");
    double *k = ag_xmalloc((size_t)ksize * sizeof(double), "resize taps");
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        double ss = 1.0 / filterscale, ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            k[x] = bicubic((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int32_t *q = c->coeff + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            q[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PIL_PRECISION_BITS)
                                   : 0.5 + v * (1 << PIL_PRECISION_BITS));
        }
        c->bounds[2 * xx + 0] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(k);
}

static void pil_coeffs_free(pil_coeffs *c) {
    free(c->bounds);
    free(c->coeff);
}

static inline uint8_t clip8(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= PIL_PRECISION_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

static void resize_row(const uint8_t *src, const pil_coeffs *hc, int ow, uint8_t *dst) {
    const int32_t half = 1 << (PIL_PRECISION_BITS - 1);
    for (int xx = 0; xx < ow; xx++) {
        int xmin = hc->bounds[2 * xx], n = hc->bounds[2 * xx + 1];
        const int32_t *k = hc->coeff + (size_t)xx * hc->ksize;
        const uint8_t *p = src + (size_t)xmin * 3;
        int32_t s0 = half, s1 = half, s2 = half;
        for (int x = 0; x < n; x++) {
            s0 += p[3 * x + 0] * k[x];
            s1 += p[3 * x + 1] * k[x];
            s2 += p[3 * x + 2] * k[x];
        }
        dst[3 * xx + 0] = clip8(s0);
        dst[3 * xx + 1] = clip8(s1);
        dst[3 * xx + 2] = clip8(s2);
    }
}

// Resizes the vw x vh image that has in (w x h) pasted at (x0, y0) on the CLIP mean colour,
// without making it: a plain resize is w = vw, h = vh. Only the input rows that the vertical
// pass reads go through the horizontal pass (as in PIL), and rows of padding all give the
// same result, computed once. Integer sums do not depend on their order, so the bytes are
// those of resizing the padded image itself.
static void resize_pasted(const uint8_t *in, int w, int h, int vw, int vh, int x0, int y0,
                          uint8_t *out, int ow, int oh) {
    pil_coeffs hc, vc;
    pil_coeffs_make(vw, ow, &hc);
    pil_coeffs_make(vh, oh, &vc);
    int y_first = vc.bounds[0];
    int y_last = vc.bounds[2 * (oh - 1)] + vc.bounds[2 * (oh - 1) + 1];
    int th = y_last - y_first;
    // Image rows among those read: [r0, r1) in input coordinates.
    int r0 = y0 > y_first ? y0 : y_first, r1 = y0 + h < y_last ? y0 + h : y_last;
    if (r1 < r0) r1 = r0;
    size_t stride = (size_t)ow * 3;
    uint8_t *tmp = ag_xmalloc(stride * ((size_t)(r1 - r0) + 1), "resize intermediate");
    const uint8_t **rows = ag_xmalloc((size_t)th * sizeof *rows, "resize rows");
    uint8_t *pad_row = vw != w || r1 - r0 < th ? ag_xmalloc((size_t)vw * 3, "resize padding") : 0;
    uint8_t *bg = tmp + stride * (size_t)(r1 - r0); // the horizontal pass of a padding row
    if (pad_row) {
        for (int x = 0; x < vw; x++) {
            pad_row[3 * x + 0] = DS_CLIP_MEAN_R;
            pad_row[3 * x + 1] = DS_CLIP_MEAN_G;
            pad_row[3 * x + 2] = DS_CLIP_MEAN_B;
        }
        resize_row(pad_row, &hc, ow, bg);
    }
    for (int y = y_first; y < y_last; y++) {
        if (y < r0 || y >= r1) {
            rows[y - y_first] = bg;
            continue;
        }
        const uint8_t *src = in + (size_t)(y - y0) * w * 3;
        if (vw != w) { // the image row between its padding (pad_row's ends stay padding)
            memcpy(pad_row + (size_t)x0 * 3, src, (size_t)w * 3);
            src = pad_row;
        }
        uint8_t *dst = tmp + (size_t)(y - r0) * stride;
        resize_row(src, &hc, ow, dst);
        rows[y - y_first] = dst;
    }
    const int32_t half = 1 << (PIL_PRECISION_BITS - 1);
    int32_t *acc = ag_xmalloc(stride * sizeof *acc, "resize sums");
    for (int yy = 0; yy < oh; yy++) {
        int ymin = vc.bounds[2 * yy] - y_first, n = vc.bounds[2 * yy + 1];
        const int32_t *k = vc.coeff + (size_t)yy * vc.ksize;
        for (size_t x = 0; x < stride; x++) acc[x] = half;
        for (int y = 0; y < n; y++) {
            const uint8_t *p = rows[ymin + y];
            int32_t ky = k[y];
            for (size_t x = 0; x < stride; x++) acc[x] += p[x] * ky;
        }
        uint8_t *dst = out + (size_t)yy * stride;
        for (size_t x = 0; x < stride; x++) dst[x] = clip8(acc[x]);
    }
    free(acc);
    free(pad_row);
    free(rows);
    free(tmp);
    pil_coeffs_free(&hc);
    pil_coeffs_free(&vc);
}

void ds_image_resize_bicubic(const uint8_t *in, int iw, int ih, uint8_t *out, int ow, int oh) {
    if (iw <= 0 || ih <= 0 || ow <= 0 || oh <= 0)
        ag_fail("image resize: bad sizes %dx%d -> %dx%d", iw, ih, ow, oh);
    if (iw == ow && ih == oh) { // PIL returns a copy
        memcpy(out, in, (size_t)iw * ih * 3);
        return;
    }
    resize_pasted(in, iw, ih, iw, ih, 0, 0, out, ow, oh);
}

int ds_image_exif_orientation(const void *data, size_t size) {
    const uint8_t *d = data;
    if (size < 4 || d[0] != 0xFF || d[1] != 0xD8 || size > UINT_MAX) return 0; // JPEG only
    ExifData *ed = exif_data_new_from_data(data, (unsigned int)size);
    if (!ed) return 0;
    int v = 0;
    ExifEntry *e = exif_data_get_entry(ed, EXIF_TAG_ORIENTATION);
    if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->size >= 2)
        v = exif_get_short(e->data, exif_data_get_byte_order(ed));
    exif_data_unref(ed);
    return v >= 1 && v <= 8 ? v : 0;
}

void ds_image_load(const char *path, int S, uint8_t *out, ds_image_info *info) {
    if (S <= 0) ag_fail("%s: bad target image size %d", path, S);
    size_t size;
    ds_require_file(path);
    uint8_t *data = (uint8_t *)ds_read_file_max(path, (size_t)DS_IMAGE_MAX_FILE_BYTES, &size);
    int w, h;
    char why[512];
    uint8_t *rgb = decode_any(data, size, &w, &h, why, sizeof why);
    int orientation = rgb ? ds_image_exif_orientation(data, size) : 0;
    free(data);
    if (!rgb) ag_fail("%s: %s", path, why);
    int side = ds_image_square_side(w, h);
    if (side == S) // PIL's resize to the same size is a copy
        ds_image_pad_square(rgb, w, h, out);
    else
        resize_pasted(rgb, w, h, side, side, (side - w) / 2, (side - h) / 2, out, S, S);
    free(rgb);
    if (info) *info = (ds_image_info){w, h, orientation};
}

// ---------------------------------------------------------------------------------------
// PNG writer.

typedef struct {
    char msg[256];
} png_wstate;

static void png_w_error(png_structp png, png_const_charp msg) {
    png_wstate *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

void ds_image_write_png(const char *path, const uint8_t *rgb, int w, int h) {
    if (!ds_image_size_ok((uint64_t)(w > 0 ? w : 0), (uint64_t)(h > 0 ? h : 0)))
        ag_fail("%s: cannot write a %dx%d PNG", path, w, h);
    char *tmp = ag_xmalloc(PATH_MAX, "png temp path");
    ds_atomic_tmp_path(path, tmp, PATH_MAX);
    FILE *volatile f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        ag_fail("%s: cannot create: %s", path, strerror(e));
    }
    png_wstate st = {{0}};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_w_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        remove(tmp);
        free(tmp);
        ag_fail("%s: cannot create a PNG writer (out of memory)", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        free(tmp);
        ag_fail("%s: PNG write failed: %s", path, st.msg);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, rgb + (size_t)y * w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    int bad = ferror(f) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (bad) {
        remove(tmp);
        free(tmp);
        ag_fail("%s: cannot write PNG: %s", path, strerror(e));
    }
    ds_commit_tmp(tmp, path);
    free(tmp);
}
