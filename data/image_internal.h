// image_internal.h: what data/image.c and data/image_ffmpeg.c share, and nothing else uses:
// the size limits (image.h) as one check and one message, and the decoder of the formats
// read through FFmpeg.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Within DS_IMAGE_MAX_SIDE per side and DS_IMAGE_MAX_PIXELS (PIL's decompression-bomb
// rule), and not empty.
bool ds_image_size_ok(uint64_t w, uint64_t h);
// Why w x h is not (into why).
void ds_image_size_why(char *why, size_t why_len, uint64_t w, uint64_t h);

typedef enum { DS_IMAGE_GIF, DS_IMAGE_WEBP, DS_IMAGE_BMP, DS_IMAGE_TIFF } ds_image_format;

// Decodes a whole GIF, WebP, BMP or TIFF file in memory (its signature already matched) to
// RGB8 as PIL's Image.open(...).convert("RGB") does (image.h lists the deviations); returns a
// malloc'd [h][w][3] buffer, or NULL with the reason (without the file name) in why.
uint8_t *ds_image_decode_ffmpeg(ds_image_format format, const uint8_t *data, size_t size, int *w,
                                int *h, char *why, size_t why_len);
