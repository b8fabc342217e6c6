// image.c: see image.h.
#include "image.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "autograd/error.h"

// ---------------------------------------------------------------------------------------
// Reading a whole file: both decoders then work from memory, and the format is decided by
// the first bytes, never by the extension.

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) ag_fail("%s: cannot open image: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        ag_fail("%s: out of memory reading image", path);
    }
    for (;;) {
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                fclose(f);
                ag_fail("%s: out of memory reading image (%zu bytes so far)", path, n);
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        free(buf);
        ag_fail("%s: read error: %s", path, strerror(saved));
    }
    *size = n;
    return buf;
}

static int side_ok(long w, long h) {
    return w > 0 && h > 0 && w <= DS_IMAGE_MAX_SIDE && h <= DS_IMAGE_MAX_SIDE;
}

// ---------------------------------------------------------------------------------------
// JPEG. libjpeg reports errors through error_exit, which must not return: ours formats the
// message and longjmps back to the decoder, which cleans up and calls ag_fail.

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

// Warnings are ignored as PIL ignores them (real-world files often carry harmless ones such
// as extraneous bytes before a marker), except running out of data: libjpeg would pad the
// rest of the image with grey, where PIL raises "image file is truncated".
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
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
    volatile int too_big = 0;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    err.msg[0] = 0;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(cmyk);
        if (too_big)
            snprintf(why, why_len, "image too large (%ux%u, limit %d per side)",
                     (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, DS_IMAGE_MAX_SIDE);
        else
            snprintf(why, why_len, "corrupt or truncated JPEG: %s", err.msg);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (!side_ok(cinfo.image_width, cinfo.image_height)) {
        too_big = 1;
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

static uint8_t *decode_png(const uint8_t *data, size_t size, int *w, int *h, char *why,
                           size_t why_len) {
    // IHDR is always the first chunk: refuse absurd sizes before libpng reads further (it
    // would otherwise complain about later chunks first).
    if (size >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        uint32_t W = (uint32_t)data[16] << 24 | (uint32_t)data[17] << 16 | (uint32_t)data[18] << 8 |
                     data[19];
        uint32_t H = (uint32_t)data[20] << 24 | (uint32_t)data[21] << 16 | (uint32_t)data[22] << 8 |
                     data[23];
        if (W > DS_IMAGE_MAX_SIDE || H > DS_IMAGE_MAX_SIDE) {
            snprintf(why, why_len, "image too large (%ux%u, limit %d per side)", (unsigned)W,
                     (unsigned)H, DS_IMAGE_MAX_SIDE);
            return NULL;
        }
    }
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
    uint8_t *volatile rowbuf = NULL;
    png_bytep *volatile rows = NULL;
    volatile int ours = 0; // the message is groundc's, not libpng's
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rgb);
        free(rowbuf);
        free(rows);
        snprintf(why, why_len, "%s%s", ours ? "" : "corrupt or truncated PNG: ", src.msg);
        return NULL;
    }
    png_set_read_fn(png, &src, png_on_read);
    png_read_info(png, info);
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    if (!side_ok((long)W, (long)H)) {
        snprintf(src.msg, sizeof src.msg, "image too large (%ux%u, limit %d per side)", (unsigned)W,
                 (unsigned)H, DS_IMAGE_MAX_SIDE);
        ours = 1;
        png_longjmp(png, 1);
    }
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    // Everything to 8-bit RGB the way PIL's convert("RGB") sees it: palette looked up, low
    // bit depths scaled to 0..255, 16 bits truncated to the high byte, grey replicated,
    // alpha dropped (palette transparency may still come back as a 4th channel; see below).
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((type & PNG_COLOR_MASK_COLOR) == 0 && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if ((type & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    if (png_get_bit_depth(png, info) != 8 || (channels != 3 && channels != 4)) {
        snprintf(src.msg, sizeof src.msg, "PNG: unexpected layout after conversion (%d channels)",
                 channels);
        ours = 1;
        png_longjmp(png, 1);
    }
    size_t row_bytes = png_get_rowbytes(png, info);
    rgb = malloc((size_t)W * H * 3);
    rows = malloc(H * sizeof *rows);
    if (channels == 4) rowbuf = malloc(row_bytes * H);
    if (!rgb || !rows || (channels == 4 && !rowbuf)) {
        snprintf(src.msg, sizeof src.msg, "out of memory for %ux%u pixels", (unsigned)W,
                 (unsigned)H);
        ours = 1;
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < H; y++)
        rows[y] = channels == 4 ? rowbuf + y * row_bytes : rgb + (size_t)y * W * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    if (channels == 4) {
        // Alpha discarded, not composited (PIL's RGBA -> RGB).
        for (size_t i = 0; i < (size_t)W * H; i++) memcpy(rgb + 3 * i, rowbuf + 4 * i, 3);
        free(rowbuf);
    }
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *w = (int)W;
    *h = (int)H;
    return rgb;
}

// ---------------------------------------------------------------------------------------

static const char *sniff_other(const uint8_t *d, size_t n) {
    if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) return "GIF";
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return "WebP";
    if (n >= 2 && !memcmp(d, "BM", 2)) return "BMP";
    if (n >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4))) return "TIFF";
    if (n >= 12 && !memcmp(d + 4, "ftyp", 4)) return "ISO media (HEIF/AVIF/MP4)";
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
    if (size >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff)
        return decode_jpeg(d, size, w, h, why, why_len);
    if (size >= 8 && !memcmp(d, png_sig, 8)) return decode_png(d, size, w, h, why, why_len);
    const char *other = sniff_other(d, size);
    if (other)
        snprintf(why, why_len, "unsupported image format %s (groundc reads JPEG and PNG)", other);
    else
        snprintf(why, why_len, "not a JPEG or PNG image (unrecognised leading bytes)");
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
    uint8_t *data = read_file(path, &size);
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

void ds_image_resize_bicubic(const uint8_t *in, int iw, int ih, uint8_t *out, int ow, int oh) {
    if (iw <= 0 || ih <= 0 || ow <= 0 || oh <= 0)
        ag_fail("image resize: bad sizes %dx%d -> %dx%d", iw, ih, ow, oh);
    if (iw == ow && ih == oh) { // PIL returns a copy
        memcpy(out, in, (size_t)iw * ih * 3);
        return;
    }
    pil_coeffs hc, vc;
    pil_coeffs_make(iw, ow, &hc);
    pil_coeffs_make(ih, oh, &vc);
    // Only the input rows the vertical pass reads go through the horizontal pass.
    int y_first = vc.bounds[0];
    int y_last = vc.bounds[2 * (oh - 1)] + vc.bounds[2 * (oh - 1) + 1];
    int th = y_last - y_first;
    uint8_t *tmp = ag_xmalloc((size_t)ow * th * 3, "resize intermediate");
    const int32_t half = 1 << (PIL_PRECISION_BITS - 1);
    for (int y = 0; y < th; y++) {
        const uint8_t *src = in + (size_t)(y + y_first) * iw * 3;
        uint8_t *dst = tmp + (size_t)y * ow * 3;
        for (int xx = 0; xx < ow; xx++) {
            int xmin = hc.bounds[2 * xx], n = hc.bounds[2 * xx + 1];
            const int32_t *k = hc.coeff + (size_t)xx * hc.ksize;
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
    size_t stride = (size_t)ow * 3;
    for (int yy = 0; yy < oh; yy++) {
        int ymin = vc.bounds[2 * yy] - y_first, n = vc.bounds[2 * yy + 1];
        const int32_t *k = vc.coeff + (size_t)yy * vc.ksize;
        uint8_t *dst = out + (size_t)yy * stride;
        for (size_t x = 0; x < stride; x++) {
            const uint8_t *p = tmp + (size_t)ymin * stride + x;
            int32_t s = half;
            for (int y = 0; y < n; y++) s += p[(size_t)y * stride] * k[y];
            dst[x] = clip8(s);
        }
    }
    free(tmp);
    pil_coeffs_free(&hc);
    pil_coeffs_free(&vc);
}

void ds_image_load(const char *path, int S, uint8_t *out, int *orig_w, int *orig_h) {
    if (S <= 0) ag_fail("%s: bad target image size %d", path, S);
    int w, h;
    uint8_t *rgb = ds_image_decode_file(path, &w, &h);
    int side = ds_image_square_side(w, h);
    uint8_t *square = rgb;
    if (w != h) {
        square = malloc((size_t)side * side * 3);
        if (!square) {
            free(rgb);
            ag_fail("%s: out of memory padding a %dx%d image", path, w, h);
        }
        ds_image_pad_square(rgb, w, h, square);
        free(rgb);
    }
    ds_image_resize_bicubic(square, side, side, out, S, S);
    free(square);
    if (orig_w) *orig_w = w;
    if (orig_h) *orig_h = h;
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
    if (!side_ok(w, h)) ag_fail("%s: cannot write a %dx%d PNG", path, w, h);
    size_t n = strlen(path) + 5;
    char *tmp = ag_xmalloc(n, "png temp path");
    snprintf(tmp, n, "%s.tmp", path);
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
    if (bad || rename(tmp, path) != 0) {
        if (!bad) e = errno;
        remove(tmp);
        free(tmp);
        ag_fail("%s: cannot write PNG: %s", path, strerror(e));
    }
    free(tmp);
}
