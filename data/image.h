// image.h: image preprocessing as the reference (LLaVA / GroundingGPT) does it with PIL.
//   - decode JPEG (libjpeg-turbo), PNG (libpng), GIF, WebP, BMP and TIFF (FFmpeg's decoders,
//     data/ffmpeg.h) to RGB8, format detected from the bytes;
//   - pad to a square of the CLIP mean colour, as LLaVA's expand2square;
//   - resize with PIL's bicubic resample (antialiased, a = -0.5, 8-bit fixed point), bit-exact;
//   - write PNG files (for the synthetic data generator).
// Decoding follows PIL's Image.open(path).convert("RGB"):
//   - the format is taken from the leading bytes (PIL's signatures), not the file's name; other
//     formats PIL reads (BigTIFF, HEIF, JPEG 2000, PNM, ICO, PSD, ...) are refused, naming it;
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
// GIF, WebP, BMP and TIFF (the first frame or page, as PIL): a walk over the file's headers
// (PIL's size against the limits, the refusals below, files cut short), then FFmpeg's decoder
// gets the whole file as one packet, and its frame becomes RGB8 as PIL's unpackers make it
// (palette lookup; 16-bit samples keep the high byte; 5/6-bit samples v * 255 / max; alpha
// dropped). Measured against PIL 9.4 (tests/image_reference.py, ~110 files): every variant
// below bit-exact, but CMYK TIFF.
//   - GIF (interlaced, GIF87a, animated): PIL's first frame is the frame's indices through its
//     colour table, transparent ones included (convert("RGB") ignores transparency), on a canvas
//     enlarged to hold a frame that overhangs the logical screen and filled with the transparent
//     index (index 0 without one); indices past a short table read as PIL's grey ramp, a GIF
//     without a table as grey. FFmpeg leaves transparent pixels transparent white, fills with
//     the background colour and crops an overhanging frame, so it decodes a GIF rewritten to
//     say what PIL reads (image.c, gif_rewrite). A file cut inside the first image's data is
//     refused (PIL too; PIL would load one cut after the last pixel's code, groundc does not);
//   - WebP: lossless (VP8L) as decoded; lossy (VP8) converted from FFmpeg's YUV 4:2:0 with
//     libwebp's own arithmetic (its "fancy" chroma upsampling and fixed-point BT.601), which
//     PIL's pixels come from: bit-exact (swscale's YUV -> RGB, with any of the flags tried,
//     differs from PIL by up to 17-98, mean 3-12, on the test images). Refused: animated WebP
//     (FFmpeg 5.1 decodes still images only; PIL gives the first frame), chunks running past the
//     end of the file (libwebp too);
//   - BMP: 1/4/8-bit palettes, 16 (5-5-5, 5-6-5), 24 and 32 bits, top-down, the bit fields PIL
//     knows, OS/2 1.x and Windows 3/4/5 headers, RLE8 and RLE4; palette entries the file lacks
//     read as PIL's grey ramp. Refused: other depths, bit fields, headers and compressions (PIL
//     refuses them too), RLE delta escapes (PIL 9.4 reads four bytes for their two) and odd
//     RLE4 literal runs (read a pixel short), pixel data cut short;
//   - TIFF: the layouts PIL reads (its OPEN_INFO table) that FFmpeg decodes to PIL's pixels:
//     uncompressed, LZW, deflate (with the horizontal predictor), PackBits, CCITT (bilevel);
//     grey of 1, 2, 4, 8 bits (either photometric), 16-bit grey (the high byte, as for PNG: PIL
//     clips its "I;16" image), palettes of 1-8 bits, grey+alpha, RGB and RGBA of 8 and 16 bits
//     (associated alpha un-premultiplied as PIL's "RGBa" unpacker does), 8-bit planar RGB(A),
//     big-endian, multi-page. CMYK (with or without an extra sample): FFmpeg converts it to RGB
//     itself, rounding down where PIL rounds: within 1 of PIL (3 after resizing). Refused, with
//     the reason: JPEG compression (FFmpeg 5.1 decodes it to other pixels), tiles (misread by
//     FFmpeg 5.1 outside DNG), 16-bit planar (misread), fill order 2 but for 1- and 8-bit grey,
//     palette+alpha, YCbCr, CIELab, signed or float samples, 16-bit min-is-white, other
//     compressions, what PIL refuses, strips past the end of the file.
// Memory: the file's bytes and the decoded image are held at once (for FFmpeg's formats also
// FFmpeg's padded copy of the file and its decoded frame); ds_image_load pads and resizes
// without making the padded square. Images of more than DS_IMAGE_MAX_PIXELS pixels
// (PIL's decompression bomb limit) or DS_IMAGE_MAX_SIDE per side are refused before any
// pixel memory is allocated; files larger than DS_IMAGE_MAX_FILE_BYTES are not read.
// Every failure (missing file, empty, truncated or corrupt data, unsupported format, too
// large) is a one-line ag_fail naming the file; libjpeg and libpng errors are caught
// (setjmp/longjmp) and turned into such messages, FFmpeg's are returned and so reported (its
// logging is silenced, ds_ff_quiet).
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

// Decodes a JPEG, PNG, GIF, WebP, BMP or TIFF file to RGB8, rows top to bottom, [h][w][3];
// returns a malloc'd buffer (free() it) and the size in *w, *h.
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

// The EXIF orientation tag of a JPEG (read with libexif): 1 (as stored) to 8; 0 when there is
// none, it is not a JPEG or the EXIF data does not parse. Decoding ignores it (see above);
// `pack` counts the images whose viewers show them turned.
int ds_image_exif_orientation(const void *data, size_t size);

typedef struct {
    int width, height;    // of the image as stored (before padding and resizing)
    int exif_orientation; // ds_image_exif_orientation of the file
} ds_image_info;

// The whole reference path: decode, pad to square, resize to S x S. out holds S*S*3 bytes;
// info (may be NULL) gets the original size and the EXIF orientation.
void ds_image_load(const char *path, int S, uint8_t *out, ds_image_info *info);

// Boxes between original pixels and the normalised padded square: see data/grounding.h
// (ds_box_to_square / ds_box_from_square), which use the same paste offsets as
// ds_image_pad_square; tests/test_image.c checks that the two agree.

// Writes rgb [h][w][3] as an 8-bit RGB PNG: to "<path>.tmp", then renamed to path.
void ds_image_write_png(const char *path, const uint8_t *rgb, int w, int h);

#ifdef __cplusplus
}
#endif
