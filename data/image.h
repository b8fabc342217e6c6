// image.h: image preprocessing as the reference (LLaVA / GroundingGPT) does it with PIL.
//   - decode JPEG (libjpeg-turbo) and PNG (libpng) to RGB8, format detected from the bytes;
//   - pad to a square of the CLIP mean colour, as LLaVA's expand2square;
//   - resize with PIL's bicubic resample (antialiased, a = -0.5, 8-bit fixed point), bit-exact;
//   - write PNG files (for the synthetic data generator).
// Decoding follows PIL's Image.open(path).convert("RGB"):
//   - the format is taken from the leading bytes (PIL's signatures), not the file's name; other
//     formats PIL reads (GIF, WebP, BMP, TIFF, ...) are refused, naming the format;
//   - EXIF orientation is ignored (PIL does not apply it unless asked to, and the reference
//     does not ask); so are ICC profiles, gAMA, sRGB and cHRM (no colour management);
//   - alpha is dropped without compositing (grey+alpha, RGBA, tRNS);
//   - palette indices that the PLTE chunk does not define read as PIL's grey ramp (i, i, i);
//   - 16-bit samples keep their high byte (PIL's "RGB;16B" unpacking). For 16-bit *grey* PNGs
//     PIL opens an "I" image and convert("RGB") clips it to 0..255 (nearly all white); groundc
//     keeps the high byte instead, deliberately;
//   - CMYK/YCCK JPEGs: decoded to CMYK by libjpeg, inverted when an Adobe marker says the
//     samples are stored inverted (the Photoshop convention, i.e. nearly every CMYK JPEG),
//     then R = (255 - C)(255 - K)/255 etc. with PIL's rounding (no colour management). PIL
//     inverts every CMYK JPEG, marker or not, so the rare one without the marker differs;
//   - damage: a JPEG that ends early is refused, as by PIL (which needs LOAD_TRUNCATED_IMAGES
//     to accept it); damaged JPEG entropy data decodes as libjpeg (hence PIL) decodes it. A
//     PNG is accepted once its last row is decoded, whatever follows (PIL reads no further):
//     a file cut after its pixel data, a bad IDAT CRC or no IEND loads; a PNG cut before its
//     last row is refused. A bad CRC in an ancillary chunk before the pixel data (PIL
//     refuses the file) is only a libpng warning: the file loads.
// Memory: the file's bytes and the decoded image are held at once; ds_image_load pads and
// resizes without making the padded square. Images of more than DS_IMAGE_MAX_PIXELS pixels
// (PIL's decompression bomb limit) or DS_IMAGE_MAX_SIDE per side are refused before any
// pixel memory is allocated; files larger than DS_IMAGE_MAX_FILE_BYTES are not read.
// Every failure (missing file, empty, truncated or corrupt data, unsupported format, too
// large) is a one-line ag_fail naming the file; libjpeg and libpng errors are caught
// (setjmp/longjmp) and turned into such messages.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// PIL raises DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS = 2 * 89478485 pixels.
#define DS_IMAGE_MAX_PIXELS 178956970
// Any JPEG side (at most 65500) fits; a longer side would make the reference pad to a square
// of more than 12 GB.
#define DS_IMAGE_MAX_SIDE       65535
#define DS_IMAGE_MAX_FILE_BYTES ((int64_t)2 << 30)

// CLIP mean colour as LLaVA pads with it: tuple(int(x * 255) for x in image_mean).
#define DS_CLIP_MEAN_R 122
#define DS_CLIP_MEAN_G 116
#define DS_CLIP_MEAN_B 104

// Decodes a JPEG or PNG file to RGB8, rows top to bottom, [h][w][3]; returns a malloc'd
// buffer (free() it) and the size in *w, *h.
uint8_t *ds_image_decode_file(const char *path, int *w, int *h);
// Same for bytes in memory; name is only used in error messages.
uint8_t *ds_image_decode_memory(const void *data, size_t size, const char *name, int *w, int *h);

// Side of the padded square: max(w, h).
static inline int ds_image_square_side(int w, int h) {
    return w > h ? w : h;
}
// Pads rgb [h][w][3] to out [side][side][3] (side = max(w, h)) filled with the CLIP mean
// colour, the image pasted at ((side - w) / 2, (side - h) / 2), as LLaVA's expand2square.
void ds_image_pad_square(const uint8_t *rgb, int w, int h, uint8_t *out);

// Resizes in [ih][iw][3] to out [oh][ow][3] exactly as PIL's Image.resize((ow, oh),
// Image.BICUBIC) does for an RGB image (separable: horizontal pass then vertical, each
// rounded to 8 bits; the filter widens by the downscale factor). Same size copies.
void ds_image_resize_bicubic(const uint8_t *in, int iw, int ih, uint8_t *out, int ow, int oh);

// The whole reference path: decode, pad to square, resize to S x S. out holds S*S*3 bytes;
// the original width and height go to *orig_w, *orig_h (either may be NULL).
void ds_image_load(const char *path, int S, uint8_t *out, int *orig_w, int *orig_h);

// Boxes between original pixels and the normalised padded square: see data/grounding.h
// (ds_box_to_square / ds_box_from_square), which use the same paste offsets as
// ds_image_pad_square; tests/test_image.c checks that the two agree.

// Writes rgb [h][w][3] as an 8-bit RGB PNG: to "<path>.tmp", then renamed to path.
void ds_image_write_png(const char *path, const uint8_t *rgb, int w, int h);

#ifdef __cplusplus
}
#endif
