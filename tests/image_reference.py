#!/usr/bin/python3
"""image_reference.py OUTDIR: reference images and PIL's preprocessing of them, for test_image.

Writes deterministic test images (JPEG: RGB in several subsamplings, progressive, optimised,
grey, CMYK, EXIF-rotated, with ICC profiles, 1-pixel wide, damaged; PNG: RGB, RGBA, grey+alpha,
palette with transparency, 1/2/4-bit, 16-bit RGB, RGBA, grey+alpha and grey, Adam7-interlaced,
gAMA/sRGB/iCCP chunks, undefined palette entries, cut or damaged after the pixel data; each
format under the other's name; GIF: interlaced or not, transparent, grey, animated, frames
placed off the origin or overhanging the screen, short or missing colour tables; WebP: lossless,
lossy in several sizes, with alpha, animated; BMP: 1/4/8/16/24/32 bits, top-down, bit fields,
OS/2 and v4/v5 headers, short palettes, RLE8/RLE4; TIFF: uncompressed, LZW, deflate (with the
predictor), PackBits, CCITT, grey of 1-16 bits, palette, RGB(A) of 8 and 16 bits, associated
alpha, planar, big-endian, CMYK, multi-page; damaged or cut files of each) and, for each, what
the reference pipeline makes of it:
  NAME.rgb      Image.open(NAME).convert("RGB") as raw uint8 [h][w][3]
  NAME.S.rgb    LLaVA's expand2square(img, (122, 116, 104)).resize((S, S), Image.BICUBIC)
and cases.txt with one line per case: "image NAME W H NOTE [TOL RTOL]" (the largest |diff|
allowed in the decoded and in the resized pixels, 1 when absent; a decode within 1 of PIL's can
resize to within 3), "refuse NAME" where PIL raises (groundc must refuse it too), or
"exif NAME O" for each JPEG read (O: its EXIF orientation tag as PIL's getexif() reads it, 0
when none), "unsupported NAME PHRASE" where PIL reads a file that groundc refuses with PHRASE in its
message (animated WebP, JPEG-in-TIFF, ...: see data/image.h). The JPEGs test_image wrote
with libjpeg beforehand (lj_*.jpg: arithmetic coding, restart markers, 4:1:1, 4:4:0, YCCK,
CMYK without the Adobe marker; PIL cannot write those) are cases as well. Plain resizes of
random pixels to non-square sizes are listed as "resize NAME IW IH OW OH" with NAME.in /
NAME.out.
Exits 77 when PIL or numpy is missing (the C test then skips this part).
"""
import os
import struct
import sys
import zlib

import warnings

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    print(f"image_reference.py: {e}; skipping the PIL comparison")
    sys.exit(77)

SIZES = (336, 224)
MEAN = tuple(int(x * 255) for x in (0.48145466, 0.4578275, 0.40821073))
assert MEAN == (122, 116, 104)


def expand2square(img, background):  # as LLaVA's
    width, height = img.size
    if width == height:
        return img
    if width > height:
        result = Image.new(img.mode, (width, width), background)
        result.paste(img, (0, (width - height) // 2))
        return result
    result = Image.new(img.mode, (height, height), background)
    result.paste(img, ((height - width) // 2, 0))
    return result


def content(w, h, seed, channels=3):
    """Smooth colour gradients, a few edges and noise: JPEG has real work to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for c in range(channels):
        f = 0.5 + 0.5 * np.sin(x / (3.0 + 2 * c) + y / (5.0 + c) + seed)
        f = 255 * f * (0.6 + 0.4 * ((x + 2 * y + 7 * c) % 23 > 11))
        out.append(f + rng.normal(0, 12, (h, w)))
    return np.clip(np.stack(out, -1), 0, 255).round().astype(np.uint8)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))  # x0, y0, dx, dy of the seven interlace passes


def png_chunk(kind, data):
    c = kind + data
    return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


def write_png_raw(path, arr, depth, color_type, interlace=False, before=(), idat_size=None):
    """Minimal PNG writer (PIL writes neither 16-bit RGB nor interlaced files). before: extra
    (kind, data) chunks ahead of the pixel data (PLTE, gAMA, ...); idat_size: split the pixel
    data into IDAT chunks of that many bytes."""
    h, w = arr.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8

    def pack(row):  # samples of fewer than 8 bits, most significant first
        if depth >= 8:
            return row.astype(dtype).tobytes()
        per = 8 // depth
        v = np.zeros(-(-len(row) // per) * per, np.uint8)
        v[: len(row)] = row
        v = v.reshape(-1, per).astype(np.uint16)
        return bytes((v << (depth * np.arange(per - 1, -1, -1))).sum(1).astype(np.uint8))

    def scanlines(a):  # filter type 0 before every row
        if a.size == 0:
            return b""
        return b"".join(b"\0" + pack(row.reshape(-1)) for row in a)

    if interlace:
        raw = b"".join(scanlines(arr[y0::dy, x0::dx]) for x0, y0, dx, dy in ADAM7)
    else:
        raw = scanlines(arr)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    z = zlib.compress(raw)
    step = idat_size or len(z)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                + b"".join(png_chunk(k, d) for k, d in before)
                + b"".join(png_chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
                + png_chunk(b"IEND", b""))


def gif_lzw(indices, code_size):
    """LZW data of GIF sub-blocks for a flat list of indices, as an encoder that never lets
    the code table grow: a clear code every 2^code_size - 2 literals keeps every code
    code_size + 1 bits wide (valid LZW any decoder reads)."""
    clear, width, run = 1 << code_size, code_size + 1, (1 << code_size) - 2
    codes = []
    for i in range(0, len(indices), run):
        codes.append(clear)
        codes.extend(int(v) for v in indices[i:i + run])
    codes.append(clear + 1)
    acc = nbits = 0
    out = bytearray()
    for c in codes:
        acc |= c << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 255)
    return b"".join(bytes([len(out[i:i + 255])]) + out[i:i + 255]
                    for i in range(0, len(out), 255)) + b"\0"


def gif_table(colours):
    """(flag bits, bytes) of a GIF colour table: padded to a power of two with black."""
    bits = max(1, (len(colours) - 1).bit_length())
    data = bytes(np.asarray(colours, np.uint8).reshape(-1))
    return 0x80 | (bits - 1), data.ljust(3 << bits, b"\0")


def write_gif_raw(path, idx, screen=None, pos=(0, 0), global_pal=None, local_pal=None,
                  transparency=None, interlace=False, code_size=8, version=b"GIF89a"):
    """A GIF of one image (PIL writes neither frames placed off the screen's origin nor short
    colour tables with wide LZW codes). idx: [h][w] indices; screen: logical screen size."""
    h, w = idx.shape
    sw, sh = screen or (w, h)
    flags, gtab = gif_table(global_pal) if global_pal is not None else (0, b"")
    out = version + struct.pack("<HHBBB", sw, sh, flags | (0x70 if flags else 0), 0, 0) + gtab
    if transparency is not None:
        out += b"\x21\xf9\x04" + struct.pack("<BHB", 1, 0, transparency) + b"\0"
    lflags, ltab = gif_table(local_pal) if local_pal is not None else (0, b"")
    rows = idx
    if interlace:
        order = (list(range(0, h, 8)) + list(range(4, h, 8)) + list(range(2, h, 4))
                 + list(range(1, h, 2)))
        rows = idx[order]
    out += b"," + struct.pack("<HHHHB", pos[0], pos[1], w, h, lflags | (0x40 if interlace else 0))
    out += ltab + bytes([code_size]) + gif_lzw(rows.reshape(-1), code_size) + b";"
    with open(path, "wb") as f:
        f.write(out)


def packbits(data):
    """TIFF PackBits: runs of 2..128 equal bytes, literals of up to 128."""
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        j = i
        while j + 1 < n and data[j + 1] == data[i] and j - i < 127:
            j += 1
        if j > i:
            out += bytes([257 - (j - i + 1)]) + data[i:i + 1]
            i = j + 1
            continue
        j = i + 1
        while j < n and j - i < 128 and not (j + 1 < n and data[j + 1] == data[j]):
            j += 1
        out += bytes([j - i - 1]) + data[i:j]
        i = j
    return bytes(out)


def write_tiff_raw(path, arr, bits, photometric, extra=(), planar=1, compression=1, predictor=1,
                   colormap=None, big=False, fill_order=1, rows_per_strip=None, tile=None,
                   sample_format=None, pages=1):
    """Baseline TIFF writer for the layouts PIL cannot write: arr [h][w][samples] (uint16 for
    16 bits; values below 2^bits for 1, 2, 4 bits); compression 1 (none), 8 (deflate) or
    32773 (PackBits), horizontal predictor, planar, tiles, fill order 2, big-endian. The IFDs
    come first, so that cutting the file cuts pixel data."""
    e = ">" if big else "<"
    a = arr if arr.ndim == 3 else arr[..., None]
    h, w, spp = a.shape

    def packed_rows(block):
        rows = []
        for r in block:
            if bits >= 8:
                rows.append(r.astype(e + "u2" if bits == 16 else np.uint8).tobytes())
                continue
            v = r.reshape(-1).astype(np.uint8)
            per = 8 // bits
            pad = np.zeros(-(-len(v) // per) * per, np.uint16)
            pad[:len(v)] = v
            b = (pad.reshape(-1, per) << (bits * np.arange(per - 1, -1, -1))).sum(1)
            b = b.astype(np.uint8)
            if fill_order == 2:  # bits of each byte reversed
                b = np.unpackbits(b).reshape(-1, 8)[:, ::-1]
                b = np.packbits(b.reshape(-1))
            rows.append(b.tobytes())
        return rows

    def encode(block):
        if predictor == 2:  # horizontal differencing, sample by sample
            b = block.astype(np.int64)
            b[:, 1:] -= block[:, :-1].astype(np.int64)
            block = (b % (1 << bits)).astype(block.dtype)
        rows = packed_rows(block)
        if compression == 32773:
            return b"".join(packbits(r) for r in rows)
        raw = b"".join(rows)
        return zlib.compress(raw) if compression == 8 else raw

    planes = [a[..., c:c + 1] for c in range(spp)] if planar == 2 else [a]
    chunks = []
    for p in planes:
        if tile:
            tw, th = tile
            for ty in range(0, h, th):
                for tx in range(0, w, tw):
                    t = np.zeros((th, tw, p.shape[2]), p.dtype)
                    blk = p[ty:ty + th, tx:tx + tw]
                    t[:blk.shape[0], :blk.shape[1]] = blk
                    chunks.append(encode(t))
        else:
            rps = rows_per_strip or h
            chunks.extend(encode(p[y:y + rps]) for y in range(0, h, rps))

    def ifd(at, data_at, next_ifd):
        tags = [(256, 4, [w]), (257, 4, [h]), (258, 3, [bits] * spp), (259, 3, [compression]),
                (262, 3, [photometric]), (277, 3, [spp])]
        offsets = list(np.cumsum([0] + [len(c) for c in chunks[:-1]]) + data_at)
        if tile:
            tags += [(322, 4, [tile[0]]), (323, 4, [tile[1]]), (324, 4, offsets),
                     (325, 4, [len(c) for c in chunks])]
        else:
            tags += [(273, 4, offsets), (278, 4, [rows_per_strip or h]),
                     (279, 4, [len(c) for c in chunks])]
        if fill_order != 1:
            tags.append((266, 3, [fill_order]))
        if planar != 1:
            tags.append((284, 3, [planar]))
        if predictor != 1:
            tags.append((317, 3, [predictor]))
        if colormap is not None:
            tags.append((320, 3, list(colormap)))
        if extra:
            tags.append((338, 3, list(extra)))
        if sample_format:
            tags.append((339, 3, [sample_format] * spp))
        tags.sort()
        out = bytearray(struct.pack(e + "H", len(tags)))
        after = bytearray()
        after_at = at + 2 + 12 * len(tags) + 4
        for tag, typ, vals in tags:
            raw = b"".join(struct.pack(e + ("H" if typ == 3 else "I"), int(v)) for v in vals)
            if len(raw) <= 4:
                out += struct.pack(e + "HHI", tag, typ, len(vals)) + raw.ljust(4, b"\0")
            else:
                out += struct.pack(e + "HHII", tag, typ, len(vals), after_at + len(after))
                after += raw + b"\0" * (len(raw) & 1)
        return bytes(out + struct.pack(e + "I", next_ifd) + after)

    size = len(ifd(0, 0, 0))
    data_at = 8 + size * pages
    ifds = b"".join(ifd(8 + size * i, data_at, 8 + size * (i + 1) if i + 1 < pages else 0)
                    for i in range(pages))
    with open(path, "wb") as f:
        f.write((b"MM\0*" if big else b"II*\0") + struct.pack(e + "I", 8) + ifds
                + b"".join(chunks))


def bmp_rle(idx, rle4, delta=False, odd=False):
    """RLE8 / RLE4 data, bottom row first: runs of equal pixels, literal runs of 3 or more,
    end of line, end of bitmap (and a delta escape, or an RLE4 literal run of 3 pixels, when
    asked: PIL 9.4 misreads both)."""
    out = bytearray()
    for y, r in enumerate(idx[::-1]):
        x, w = 0, len(r)
        while x < w:
            j = x
            while j + 1 < w and r[j + 1] == r[x] and j - x < 200:
                j += 1
            n = j - x + 1
            if n >= 2 or w - x < 3:
                out += bytes([n, (r[x] << 4 | r[x]) if rle4 else r[x]])
                x += n
                continue
            k = x + 1
            while k < w and k - x < 200 and not (k + 1 < w and r[k + 1] == r[k]):
                k += 1
            n = max(3, k - x)
            if rle4:  # PIL 9.4 reads odd RLE4 literal runs one pixel short: keep them even
                n = 3 if odd and y == x == 0 else 4 if w - x >= 4 else 0
            if not n:
                out += bytes([1, r[x] << 4])
                x += 1
                continue
            lit = r[x:x + n]
            if rle4:
                data = bytes((lit[i] << 4) | (lit[i + 1] if i + 1 < n else 0)
                             for i in range(0, n, 2))
            else:
                data = bytes(lit)
            out += bytes([0, n]) + data + b"\0" * (len(data) & 1)
            x += n
        out += b"\0\0"
    if delta:
        out = b"\0\2\1\0" + out
    return bytes(out + b"\0\1")


def write_bmp_raw(path, arr, bits, palette=None, top_down=False, compression=0, masks=None,
                  header=40, colors_used=None, data=None):
    """BMP writer for what PIL does not write: arr [h][w][3 or 4] RGB(A) for 24/32 bits,
    [h][w] uint16 pixels for 16, [h][w] indices for up to 8; header 12 (OS/2), 40, 108, 124;
    bit fields (after a 40-byte header, inside a longer one); data: RLE bytes."""
    h, w = arr.shape[:2]
    if bits in (24, 32):
        px = arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
        if bits == 32 and px.shape[2] == 3:
            px = np.concatenate([px, np.zeros((h, w, 1), np.uint8)], -1)
        rows = [r.astype(np.uint8).tobytes() for r in px]
    elif bits == 16:
        rows = [r.astype("<u2").tobytes() for r in arr]
    else:
        per = 8 // bits
        rows = []
        for r in arr:
            v = np.zeros(-(-w // per) * per, np.uint16)
            v[:w] = r
            rows.append(bytes((v.reshape(-1, per) << (bits * np.arange(per - 1, -1, -1)))
                              .sum(1).astype(np.uint8)))
    stride = (len(rows[0]) + 3) & ~3
    if data is None:
        data = b"".join(r.ljust(stride, b"\0") for r in (rows if top_down else rows[::-1]))
    entry = 3 if header == 12 else 4
    pal = b"" if palette is None else b"".join(
        bytes([b, g, r] + [0] * (entry - 3)) for r, g, b in palette)
    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        ncol = colors_used if colors_used is not None else (0 if palette is None else len(palette))
        info = struct.pack("<IiiHHIIiiII", header, w, -h if top_down else h, 1, bits,
                           compression, len(data), 2835, 2835, ncol, 0)
        if header > 40:
            info += struct.pack("<4I", *(list(masks or ()) + [0] * 4)[:4])
            info += b"\0" * (header - len(info))
    fields = b"".join(struct.pack("<I", m) for m in masks[:3]) if masks and header == 40 else b""
    off = 14 + len(info) + len(fields) + len(pal)
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + info + fields + pal
                + data)

def other_formats(out, add, save, read, write):
    """GIF, WebP, BMP and TIFF cases (decoded by groundc with FFmpeg)."""
    p = lambda name: os.path.join(out, name)
    rgb = Image.fromarray(content(45, 33, 40))
    rng = np.random.default_rng(41)

    # GIF. PIL writes GIFs interlaced unless told otherwise (or the image is under 16 rows).
    pal = rgb.quantize(colors=50)
    save("gif_interlaced_45x33.gif", pal)
    add("gif_interlaced_45x33.gif", tol=0)
    save("gif_plain_45x33.gif", pal, interlace=0)
    add("gif_plain_45x33.gif", tol=0)
    # transparent pixels read as their palette colour
    save("gif_transparent_45x33.gif", pal, transparency=int(np.asarray(pal)[5, 5]))
    add("gif_transparent_45x33.gif", tol=0)
    save("gif_grey_31x22.gif", Image.fromarray(content(31, 22, 42, 1)[..., 0], "L"))
    add("gif_grey_31x22.gif", tol=0)
    save("gif_bw_31x22.gif", Image.fromarray(content(31, 22, 43, 1)[..., 0] > 128))
    add("gif_bw_31x22.gif", tol=0)
    frames = [Image.fromarray(content(45, 33, 44 + i)).quantize(colors=40) for i in range(3)]
    save("gif_animated_45x33.gif", frames[0], save_all=True, append_images=frames[1:],
         duration=100, disposal=2, transparency=0)
    add("gif_animated_45x33.gif", tol=0)
    # Hand-written: a frame placed inside the logical screen (the rest filled with the
    # transparent index, or index 0), with a local table; a frame overhanging the screen (PIL
    # enlarges the image); a 4-colour table read with 8-bit codes (indices past the table are
    # PIL's grey ramp); no table at all (grey); small interlaced images; GIF87a.
    idx = rng.integers(0, 16, (13, 17)).astype(np.uint8)
    gpal = rng.integers(0, 256, (16, 3))
    lpal = rng.integers(0, 256, (16, 3))
    write_gif_raw(p("gif_offset_trans_30x25.gif"), idx, (30, 25), (6, 9), gpal, lpal, 7)
    add("gif_offset_trans_30x25.gif", tol=0)
    write_gif_raw(p("gif_offset_30x25.gif"), idx, (30, 25), (6, 9), gpal)
    add("gif_offset_30x25.gif", tol=0)
    write_gif_raw(p("gif_overhang_10x10.gif"), idx, (10, 10), (4, 3), gpal, None, 2)
    add("gif_overhang_10x10.gif", tol=0)
    wide = rng.integers(0, 256, (9, 14)).astype(np.uint8)
    write_gif_raw(p("gif_short_table_14x9.gif"), wide, None, (0, 0), gpal[:4])
    add("gif_short_table_14x9.gif", tol=0)
    write_gif_raw(p("gif_no_table_14x9.gif"), wide)
    add("gif_no_table_14x9.gif", tol=0)
    for hh in (1, 2, 3, 5, 9, 17):
        write_gif_raw(p(f"gif_interlaced_7x{hh}.gif"), rng.integers(0, 16, (hh, 7)), None,
                      (0, 0), gpal, interlace=True, code_size=4)
        add(f"gif_interlaced_7x{hh}.gif", tol=0)
    write_gif_raw(p("gif87a_17x13.gif"), idx, None, (0, 0), gpal, code_size=4, version=b"GIF87a")
    add("gif87a_17x13.gif", tol=0)
    gif = read("gif_plain_45x33.gif")
    write("gif_cut_45x33.gif", gif[: len(gif) // 2])
    add("gif_cut_45x33.gif")  # PIL: image file is truncated
    write("gif_header_only.gif", gif[:13])
    add("gif_header_only.gif")

    # WebP: lossless (bit-exact), lossy (libwebp's YUV -> RGB, reproduced), with alpha;
    # odd and even sizes for the chroma upsampling's edges.
    save("webp_lossless_45x33.webp", rgb, lossless=True)
    add("webp_lossless_45x33.webp", tol=0)
    rgba = Image.fromarray(content(45, 33, 45, 4), "RGBA")
    save("webp_lossless_alpha_45x33.webp", rgba, lossless=True, exact=True)
    add("webp_lossless_alpha_45x33.webp", tol=0)
    for w, h in ((45, 33), (64, 48), (1, 1), (2, 2), (1, 17), (17, 1), (301, 203)):
        save(f"webp_lossy_{w}x{h}.webp", Image.fromarray(content(w, h, 46 + w)), quality=80)
        add(f"webp_lossy_{w}x{h}.webp", tol=0)
    save("webp_lossy_alpha_45x33.webp", rgba, quality=70)
    add("webp_lossy_alpha_45x33.webp", tol=0)
    save("webp_lossy_icc_45x33.webp", rgb, quality=90, icc_profile=bytes(range(256)) * 2)
    add("webp_lossy_icc_45x33.webp", tol=0)
    save("webp_animated_45x33.webp", frames[0].convert("RGB"), save_all=True,
         append_images=[f.convert("RGB") for f in frames[1:]], duration=100)
    add("webp_animated_45x33.webp", unsupported="animated WebP")
    web = read("webp_lossy_301x203.webp")
    write("webp_cut_301x203.webp", web[: len(web) * 2 // 3])
    add("webp_cut_301x203.webp")

    # BMP: as PIL writes it (1, 8-bit grey and palette, 24, 32 bits) and hand-written (4 bits,
    # top-down, 16 bits 5-5-5 and 5-6-5, 32-bit bit fields with v4/v5 headers, OS/2 1.x,
    # a short palette, RLE8 and RLE4).
    save("bmp_rgb_45x33.bmp", rgb)
    add("bmp_rgb_45x33.bmp", tol=0)
    save("bmp_rgba_45x33.bmp", rgba)
    add("bmp_rgba_45x33.bmp", tol=0)
    save("bmp_palette_45x33.bmp", pal)
    add("bmp_palette_45x33.bmp", tol=0)
    save("bmp_grey_45x33.bmp", rgb.convert("L"))
    add("bmp_grey_45x33.bmp", tol=0)
    save("bmp_1bit_45x33.bmp", rgb.convert("1"))
    add("bmp_1bit_45x33.bmp", tol=0)
    px = content(23, 17, 47)
    ix = rng.integers(0, 256, (17, 23))
    bpal = [tuple(c) for c in rng.integers(0, 256, (256, 3))]
    write_bmp_raw(p("bmp_4bit_23x17.bmp"), ix >> 4, 4, bpal[:16])
    add("bmp_4bit_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_1bit_colour_23x17.bmp"), ix >> 7, 1, bpal[:2])
    add("bmp_1bit_colour_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_topdown_23x17.bmp"), px, 24, top_down=True)
    add("bmp_topdown_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_topdown_8bit_23x17.bmp"), ix, 8, bpal, top_down=True)
    add("bmp_topdown_8bit_23x17.bmp", tol=0)
    p16 = rng.integers(0, 65536, (17, 23))
    write_bmp_raw(p("bmp_555_23x17.bmp"), p16 & 0x7FFF, 16)
    add("bmp_555_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_565_23x17.bmp"), p16, 16, compression=3, masks=(0xF800, 0x7E0, 0x1F))
    add("bmp_565_23x17.bmp", tol=0)
    px4 = np.concatenate([px, rng.integers(0, 256, (17, 23, 1), dtype=np.uint8)], -1)
    write_bmp_raw(p("bmp_bgrx_fields_23x17.bmp"), px4, 32, compression=3,
                  masks=(0xFF0000, 0xFF00, 0xFF))
    add("bmp_bgrx_fields_23x17.bmp", tol=0)
    for hdr in (108, 124):
        write_bmp_raw(p(f"bmp_v{4 if hdr == 108 else 5}_alpha_23x17.bmp"), px4, 32,
                      compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000), header=hdr)
        add(f"bmp_v{4 if hdr == 108 else 5}_alpha_23x17.bmp", tol=0)
    # the other 32-bit bit fields PIL knows, 24-bit bit fields, a 64-byte (OS/2 2.x) header
    for tag, masks in (("xbgr", (0xFF000000, 0xFF0000, 0xFF00, 0)),
                       ("abgr", (0xFF000000, 0xFF0000, 0xFF00, 0xFF)),
                       ("rgba", (0xFF, 0xFF00, 0xFF0000, 0xFF000000)),
                       ("zero", (0, 0, 0, 0))):
        write_bmp_raw(p(f"bmp_fields_{tag}_23x17.bmp"), px4, 32, compression=3, masks=masks,
                      header=108)
        add(f"bmp_fields_{tag}_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_fields24_23x17.bmp"), px, 24, compression=3,
                  masks=(0xFF0000, 0xFF00, 0xFF))
    add("bmp_fields24_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_os2v2_23x17.bmp"), ix, 8, bpal, header=64)
    add("bmp_os2v2_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_os2_23x17.bmp"), ix, 8, bpal, header=12)
    add("bmp_os2_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_short_palette_23x17.bmp"), ix, 8, bpal[:20])  # PIL: grey past 20
    add("bmp_short_palette_23x17.bmp", tol=0)
    runs = np.repeat(rng.integers(0, 256, (17, 6)), 4, axis=1)[:, :23]
    runs[3, 2:11] = rng.integers(0, 256, 9)  # a literal run
    write_bmp_raw(p("bmp_rle8_23x17.bmp"), runs, 8, bpal, compression=1,
                  data=bmp_rle(runs, False))
    add("bmp_rle8_23x17.bmp", tol=0)
    runs4 = runs >> 4
    write_bmp_raw(p("bmp_rle4_23x17.bmp"), runs4, 4, bpal[:16], compression=2,
                  data=bmp_rle(runs4, True))
    add("bmp_rle4_23x17.bmp", tol=0)
    write_bmp_raw(p("bmp_rle8_delta_23x17.bmp"), runs, 8, bpal, compression=1,
                  data=bmp_rle(runs, False, delta=True))
    add("bmp_rle8_delta_23x17.bmp", unsupported="delta")
    odd = runs4.copy()
    odd[-1, :4] = (1, 2, 3, 4)  # the bottom row starts with a literal run
    write_bmp_raw(p("bmp_rle4_odd_23x17.bmp"), odd, 4, bpal[:16], compression=2,
                  data=bmp_rle(odd, True, odd=True))
    add("bmp_rle4_odd_23x17.bmp", unsupported="odd length")
    write_bmp_raw(p("bmp_fields_odd_23x17.bmp"), px4, 32, compression=3,
                  masks=(0xFF00, 0xFF0000, 0xFF000000))
    add("bmp_fields_odd_23x17.bmp")  # PIL: unsupported bit fields layout
    bmp = read("bmp_rgb_45x33.bmp")
    write("bmp_cut_45x33.bmp", bmp[: len(bmp) - 100])
    add("bmp_cut_45x33.bmp")

    # TIFF: as PIL writes it (libtiff for LZW and deflate), and hand-written.
    for comp in (None, "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"):
        save(f"tiff_rgb_{comp or 'raw'}_45x33.tif", rgb, compression=comp)
        add(f"tiff_rgb_{comp or 'raw'}_45x33.tif", tol=0)
    save("tiff_grey_45x33.tif", rgb.convert("L"))
    add("tiff_grey_45x33.tif", tol=0)
    save("tiff_grey_lzw_45x33.tif", rgb.convert("L"), compression="tiff_lzw")
    add("tiff_grey_lzw_45x33.tif", tol=0)
    save("tiff_palette_45x33.tif", pal)
    add("tiff_palette_45x33.tif", tol=0)
    save("tiff_rgba_45x33.tif", rgba)
    add("tiff_rgba_45x33.tif", tol=0)
    save("tiff_rgba_lzw_45x33.tif", rgba, compression="tiff_lzw")
    add("tiff_rgba_lzw_45x33.tif", tol=0)
    save("tiff_la_45x33.tif", rgba.convert("LA"))
    add("tiff_la_45x33.tif", tol=0)
    save("tiff_bw_45x33.tif", rgb.convert("1"))
    add("tiff_bw_45x33.tif", tol=0)
    save("tiff_bw_g4_45x33.tif", rgb.convert("1"), compression="group4")
    add("tiff_bw_g4_45x33.tif", tol=0)
    save("tiff_bw_g3_45x33.tif", rgb.convert("1"), compression="group3")
    add("tiff_bw_g3_45x33.tif", tol=0)
    save("tiff_bw_ccitt_45x33.tif", rgb.convert("1"), compression="tiff_ccitt")
    add("tiff_bw_ccitt_45x33.tif", tol=0)
    # FFmpeg converts CMYK to RGB itself, rounding down where PIL rounds: within 1.
    save("tiff_cmyk_45x33.tif", Image.fromarray(content(45, 33, 48, 4), "CMYK"))
    add("tiff_cmyk_45x33.tif", "FFmpeg-CMYK-rounding", tol=(1, 3))
    save("tiff_multipage_45x33.tif", rgb, save_all=True,
         append_images=[rgb.convert("L").convert("RGB"), pal.convert("RGB")])
    add("tiff_multipage_45x33.tif", tol=0)
    save("tiff_jpeg_45x33.tif", rgb, compression="jpeg")
    add("tiff_jpeg_45x33.tif", unsupported="compression 7")
    # 16-bit grey: PIL clips its "I;16" image; groundc keeps the high byte, as for PNG.
    g16 = rng.integers(0, 65536, (17, 23), dtype=np.uint16)
    save("tiff_grey16_23x17.tif", Image.fromarray(g16, "I;16"))
    add("tiff_grey16_23x17.tif", "groundc-high-byte", tol=0,
        expected=np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, -1))
    g = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    for bits in (2, 4):
        for photo in (0, 1):
            write_tiff_raw(p(f"tiff_grey{bits}_ph{photo}_23x17.tif"), g >> (8 - bits), bits, photo)
            add(f"tiff_grey{bits}_ph{photo}_23x17.tif", tol=0)
        write_tiff_raw(p(f"tiff_palette{bits}_23x17.tif"), g >> (8 - bits), bits, 3,
                       colormap=rng.integers(0, 65536, 3 << bits))
        add(f"tiff_palette{bits}_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_grey8_white0_23x17.tif"), g, 8, 0)
    add("tiff_grey8_white0_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_bw_white0_23x17.tif"), g >> 7, 1, 0)
    add("tiff_bw_white0_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_bw_fill2_23x17.tif"), g >> 7, 1, 1, fill_order=2)
    add("tiff_bw_fill2_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_grey4_fill2_23x17.tif"), g >> 4, 4, 1, fill_order=2)
    add("tiff_grey4_fill2_23x17.tif", unsupported="fill order 2")
    c8 = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    c16 = rng.integers(0, 65536, (17, 23, 3), dtype=np.uint16)
    a8 = rng.integers(0, 256, (17, 23, 4), dtype=np.uint8)
    a8[0, :4, 3] = (0, 255, 1, 128)
    a16 = rng.integers(0, 65536, (17, 23, 4), dtype=np.uint16)
    write_tiff_raw(p("tiff_rgb_be_23x17.tif"), c8, 8, 2, big=True)
    add("tiff_rgb_be_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb_strips_23x17.tif"), c8, 8, 2, rows_per_strip=5)
    add("tiff_rgb_strips_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb_planar_23x17.tif"), c8, 8, 2, planar=2, rows_per_strip=6)
    add("tiff_rgb_planar_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb_packbits_strips_23x17.tif"), c8, 8, 2, compression=32773,
                   rows_per_strip=4)
    add("tiff_rgb_packbits_strips_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb_deflate_pred_23x17.tif"), c8, 8, 2, compression=8, predictor=2)
    add("tiff_rgb_deflate_pred_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb16_23x17.tif"), c16, 16, 2)
    add("tiff_rgb16_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb16_be_23x17.tif"), c16, 16, 2, big=True)
    add("tiff_rgb16_be_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb16_deflate_pred_23x17.tif"), c16, 16, 2, compression=8,
                   predictor=2)
    add("tiff_rgb16_deflate_pred_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgb16_planar_23x17.tif"), c16, 16, 2, planar=2)
    add("tiff_rgb16_planar_23x17.tif", unsupported="planar")  # FFmpeg 5.1 misreads it
    for ex in ((), (0,), (1,), (2,)):  # none (PIL: RGBA), unspecified, associated, unassociated
        name = f"tiff_rgba_extra{''.join(map(str, ex)) or '-'}_23x17.tif"
        write_tiff_raw(p(name), a8, 8, 2, extra=ex)
        add(name, tol=0)
    write_tiff_raw(p("tiff_rgba_planar_23x17.tif"), a8, 8, 2, extra=(2,), planar=2)
    add("tiff_rgba_planar_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgba16_assoc_23x17.tif"), a16, 16, 2, extra=(1,))
    add("tiff_rgba16_assoc_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_rgba16_23x17.tif"), a16, 16, 2, extra=(2,))
    add("tiff_rgba16_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_cmyk_extra_23x17.tif"), rng.integers(0, 256, (17, 23, 5)), 8, 5,
                   extra=(0,))
    add("tiff_cmyk_extra_23x17.tif", "FFmpeg-CMYK-rounding", tol=(1, 3))
    write_tiff_raw(p("tiff_multipage_raw_23x17.tif"), c8, 8, 2, pages=3)
    add("tiff_multipage_raw_23x17.tif", tol=0)
    write_tiff_raw(p("tiff_tiled_23x17.tif"), c8, 8, 2, tile=(16, 16))
    add("tiff_tiled_23x17.tif", unsupported="tiled")
    pa = np.stack([g, g], -1)
    write_tiff_raw(p("tiff_palette_alpha_23x17.tif"), pa, 8, 3, extra=(2,),
                   colormap=rng.integers(0, 65536, 768))
    add("tiff_palette_alpha_23x17.tif", unsupported="extra samples")
    write_tiff_raw(p("tiff_la_assoc_23x17.tif"), pa, 8, 1, extra=(1,))
    add("tiff_la_assoc_23x17.tif")  # PIL: unknown pixel mode
    write_tiff_raw(p("tiff_signed_23x17.tif"), c8, 8, 2, sample_format=2)
    add("tiff_signed_23x17.tif")
    tif = read("tiff_rgb_strips_23x17.tif")
    write("tiff_cut_23x17.tif", tif[: len(tif) - 100])
    add("tiff_cut_23x17.tif")


def main():
    out = sys.argv[1]
    warnings.simplefilter("ignore")  # palette transparency as bytes, large EXIF: not our case
    cases = []

    def add(name, note="-", expected=None, tol=None, unsupported=None):
        path = os.path.join(out, name)
        try:
            img = Image.open(path).convert("RGB")
        except Exception as e:  # what PIL refuses, groundc must refuse too
            print(f"image_reference.py: PIL refuses {name}: {type(e).__name__}: {e}")
            cases.append(f"refuse {name}")
            return
        if unsupported:  # PIL reads it; groundc refuses it, saying this
            cases.append(f"unsupported {name} {unsupported}")
            return
        if expected is not None:  # where groundc deliberately differs from PIL's decode
            img = Image.fromarray(expected, "RGB")
        np.asarray(img, dtype=np.uint8).tofile(path + ".rgb")
        sq = expand2square(img, MEAN)
        for s in SIZES:
            r = sq.resize((s, s), Image.BICUBIC)
            np.asarray(r, dtype=np.uint8).tofile(f"{path}.{s}.rgb")
        if isinstance(tol, int):
            tol = (tol, tol)
        cases.append(f"image {name} {img.size[0]} {img.size[1]} {note}"
                     + ("" if tol is None else f" {tol[0]} {tol[1]}"))
        with Image.open(path) as im:  # the EXIF orientation as PIL reads it (0: none)
            if im.format == "JPEG":
                cases.append(f"exif {name} {im.getexif().get(0x0112, 0)}")

    def save(name, img, **kw):
        img.save(os.path.join(out, name), **kw)

    def read(name):
        with open(os.path.join(out, name), "rb") as f:
            return f.read()

    def write(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    # JPEG
    save("rgb_37x19.jpg", Image.fromarray(content(37, 19, 1)), quality=90)
    add("rgb_37x19.jpg")
    save("rgb_19x37.jpg", Image.fromarray(content(19, 37, 2)), quality=85)
    add("rgb_19x37.jpg")
    save("rgb_500x333.jpg", Image.fromarray(content(500, 333, 3)), quality=90)
    add("rgb_500x333.jpg")
    save("rgb444_61x40.jpg", Image.fromarray(content(61, 40, 4)), quality=95, subsampling=0)
    add("rgb444_61x40.jpg")
    save("rgb422_45x31.jpg", Image.fromarray(content(45, 31, 5)), quality=75, subsampling=1)
    add("rgb422_45x31.jpg")
    save("progressive_120x80.jpg", Image.fromarray(content(120, 80, 6)), quality=80,
         progressive=True)
    add("progressive_120x80.jpg")
    save("big_1000x700.jpg", Image.fromarray(content(1000, 700, 7)), quality=90)
    add("big_1000x700.jpg")
    save("gray_64x48.jpg", Image.fromarray(content(64, 48, 8, 1)[..., 0], "L"), quality=90)
    add("gray_64x48.jpg")
    cmyk = Image.fromarray(content(40, 30, 9, 4), "CMYK")
    save("cmyk_40x30.jpg", cmyk, quality=90)  # libjpeg writes the Adobe marker for CMYK
    add("cmyk_40x30.jpg")
    save("upscale_10x7.jpg", Image.fromarray(content(10, 7, 10)), quality=90)
    add("upscale_10x7.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation "rotate 90": PIL ignores it unless asked, and so do we
    save("exif_rot_48x20.jpg", Image.fromarray(content(48, 20, 21)), quality=90, exif=exif)
    add("exif_rot_48x20.jpg")

    # PNG
    save("rgb_336x336.png", Image.fromarray(content(336, 336, 11)))
    add("rgb_336x336.png")
    save("rgb_7x300.png", Image.fromarray(content(7, 300, 12)))
    add("rgb_7x300.png")
    save("rgba_37x19.png", Image.fromarray(content(37, 19, 13, 4), "RGBA"))
    add("rgba_37x19.png")
    la = content(20, 30, 14, 2)
    save("la_20x30.png", Image.fromarray(la, "LA"))
    add("la_20x30.png")
    pal = Image.fromarray(content(50, 20, 15)).quantize(colors=200)
    pal.info["transparency"] = 3
    save("palette_50x20.png", pal, transparency=3)
    add("palette_50x20.png")
    pal4 = Image.fromarray(content(25, 15, 16)).quantize(colors=16)
    save("palette4_25x15.png", pal4, bits=4)
    add("palette4_25x15.png")
    bw = Image.fromarray(content(33, 17, 17, 1)[..., 0] > 128)
    save("bw1_33x17.png", bw)
    add("bw1_33x17.png")
    save("upscale_9x12.png", Image.fromarray(content(9, 12, 18)))
    add("upscale_9x12.png")
    rng = np.random.default_rng(19)
    rgb16 = rng.integers(0, 65536, (13, 21, 3), dtype=np.uint16)
    write_png_raw(os.path.join(out, "rgb16_21x13.png"), rgb16, 16, 2)
    add("rgb16_21x13.png")
    rgba16 = rng.integers(0, 65536, (11, 17, 4), dtype=np.uint16)
    write_png_raw(os.path.join(out, "rgba16_17x11.png"), rgba16, 16, 6)
    add("rgba16_17x11.png")
    write_png_raw(os.path.join(out, "interlaced_23x17.png"), content(23, 17, 22), 8, 2, True)
    add("interlaced_23x17.png")
    write_png_raw(os.path.join(out, "interlaced16_rgba_5x9.png"),
                  rng.integers(0, 65536, (9, 5, 4), dtype=np.uint16), 16, 6, True)
    add("interlaced16_rgba_5x9.png")
    # 16-bit grey: PIL opens mode "I" and convert("RGB") clips to 0..255; groundc keeps the
    # high byte, so the expectation is built from the high byte.
    g16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    write_png_raw(os.path.join(out, "gray16_30x20.png"), g16, 16, 0)
    hb = (g16 >> 8).astype(np.uint8)
    pil = np.asarray(Image.open(os.path.join(out, "gray16_30x20.png")).convert("RGB"))
    note = "groundc-high-byte" + ("(PIL-agrees)" if (pil[..., 0] == hb).all() else "(PIL-clips)")
    add("gray16_30x20.png", note, np.repeat(hb[..., None], 3, -1))

    # More JPEG variants real data sets bring.
    img = Image.fromarray(content(41, 27, 23))
    save("optimized_41x27.jpg", img, quality=85, optimize=True)
    add("optimized_41x27.jpg")
    save("gray_progressive_41x27.jpg", img.convert("L"), quality=85, progressive=True)
    add("gray_progressive_41x27.jpg")
    save("cmyk_progressive_27x19.jpg", Image.fromarray(content(27, 19, 24, 4), "CMYK"),
         quality=90, progressive=True)
    add("cmyk_progressive_27x19.jpg")
    # ICC profiles are not applied (PIL embeds the bytes as given; 70 kB spans two APP2s).
    save("icc_41x27.jpg", img, quality=85, icc_profile=bytes(range(256)) * 280)
    add("icc_41x27.jpg")
    for o in (3, 8):  # the other EXIF rotations, ignored as well
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"exif{o}_41x27.jpg", img, quality=85, exif=exif)
        add(f"exif{o}_41x27.jpg")
    save("one_1x1.jpg", Image.new("RGB", (1, 1), (200, 10, 30)), quality=90)
    add("one_1x1.jpg")
    save("column_1x9.jpg", Image.fromarray(content(1, 9, 25)), quality=90)
    add("column_1x9.jpg")
    save("side_is_S_336x200.jpg", Image.fromarray(content(336, 200, 26)), quality=90)
    add("side_is_S_336x200.jpg")  # padded square already 336: PIL's resize is a copy
    # A JPEG named .png and a PNG named .jpg: the leading bytes decide, as for PIL.
    save("jpeg_named.png", img, format="JPEG", quality=85)
    add("jpeg_named.png")
    save("png_named.jpg", img, format="PNG")
    add("png_named.jpg")
    # Damage: entropy data overwritten (libjpeg warns and goes on, PIL too), and truncation
    # (PIL raises "image file is truncated").
    jpg = bytearray(read("rgb_500x333.jpg"))
    sos = jpg.find(b"\xff\xda")
    for i in range(sos + 400, len(jpg) - 100, 997):
        if jpg[i] != 0xFF and jpg[i - 1] != 0xFF:  # no marker made or broken
            jpg[i] = (jpg[i] ^ 0x11) & 0xFE
    write("damaged_scan_500x333.jpg", bytes(jpg))
    add("damaged_scan_500x333.jpg")
    jpg[sos + 600:sos + 602] = b"\xff\x5a"  # not a marker: libjpeg gives up, and PIL
    write("bad_marker_500x333.jpg", bytes(jpg))
    add("bad_marker_500x333.jpg")
    write("no_eoi.jpg", read("rgb_37x19.jpg")[:-2])
    add("no_eoi.jpg")
    # The rows are all there, the end marker overwritten by zeros: PIL loads it (with two
    # zeros only, libjpeg's look-ahead would run out of data inside the last row).
    write("bad_eoi_37x19.jpg", read("rgb_37x19.jpg")[:-2] + b"\0" * 8)
    add("bad_eoi_37x19.jpg")
    write("cut_progressive.jpg", read("progressive_120x80.jpg")[:-300])
    add("cut_progressive.jpg")
    # JPEGs written by test_image with libjpeg (PIL cannot write these variants).
    for name in sorted(n for n in os.listdir(out) if n.startswith("lj_") and n.endswith(".jpg")):
        if "noadobe" in name:
            # PIL inverts every CMYK JPEG; groundc only those with the Adobe marker (see
            # image.h), so the expectation undoes PIL's inversion before converting.
            cmyk = 255 - np.asarray(Image.open(os.path.join(out, name)))
            want = np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB"))
            add(name, "groundc-no-inversion-without-Adobe-marker", want)
        else:
            add(name)

    # More PNG variants.
    pal = Image.fromarray(content(31, 22, 27)).quantize(colors=60)
    save("palette_trns_table_31x22.png", pal, transparency=bytes(range(0, 240, 4)))
    add("palette_trns_table_31x22.png")
    save("palette2_31x22.png", Image.fromarray(content(31, 22, 28)).quantize(colors=4), bits=2)
    add("palette2_31x22.png")
    save("gray_trns_31x22.png", Image.fromarray(content(31, 22, 29, 1)[..., 0], "L"),
         transparency=100)
    add("gray_trns_31x22.png")
    save("rgb_trns_31x22.png", Image.fromarray(content(31, 22, 30)), transparency=(10, 20, 30))
    add("rgb_trns_31x22.png")
    save("column_1x500.png", Image.fromarray(content(1, 500, 31)))
    add("column_1x500.png")
    save("row_500x1.png", Image.fromarray(content(500, 1, 32)))
    add("row_500x1.png")
    rng = np.random.default_rng(33)
    write_png_raw(os.path.join(out, "la16_17x11.png"),
                  rng.integers(0, 65536, (11, 17, 2), dtype=np.uint16), 16, 4)
    add("la16_17x11.png")
    g = content(23, 17, 34, 1)[..., 0]
    write_png_raw(os.path.join(out, "gray2_23x17.png"), g >> 6, 2, 0)
    add("gray2_23x17.png")
    write_png_raw(os.path.join(out, "gray4_interlaced_23x17.png"), g >> 4, 4, 0, True)
    add("gray4_interlaced_23x17.png")
    plte = (b"PLTE", bytes(content(16, 1, 35).reshape(-1)))
    write_png_raw(os.path.join(out, "palette4_interlaced_23x17.png"), g >> 4, 4, 3, True, [plte])
    add("palette4_interlaced_23x17.png")
    # Indices past the end of PLTE: PIL's palette is a grey ramp there.
    plte8 = (b"PLTE", bytes(content(8, 1, 36).reshape(-1)))
    write_png_raw(os.path.join(out, "palette_short_plte_23x17.png"), g >> 4, 8, 3, False, [plte8])
    add("palette_short_plte_23x17.png")
    # Colour chunks are not applied; a broken iCCP is only a libpng warning.
    rgb = content(23, 17, 37)
    colour = [(b"gAMA", struct.pack(">I", 100000)), (b"sRGB", b"\0"),
              (b"cHRM", struct.pack(">8I", *range(31270, 31278)))]
    write_png_raw(os.path.join(out, "gama_srgb_23x17.png"), rgb, 8, 2, False, colour)
    add("gama_srgb_23x17.png")
    iccp = (b"iCCP", b"junk\0\0" + zlib.compress(b"not a profile" * 20))
    write_png_raw(os.path.join(out, "bad_iccp_23x17.png"), rgb, 8, 2, False, [iccp])
    add("bad_iccp_23x17.png")
    write_png_raw(os.path.join(out, "split_idat_23x17.png"), rgb, 8, 2, False, (), 50)
    add("split_idat_23x17.png")
    # After the last row PIL reads nothing more: a missing IEND, a cut IDAT CRC or zlib
    # checksum, a bad IDAT CRC all load. Cut before the last row, the file is refused.
    png = read("split_idat_23x17.png")
    write("no_iend_23x17.png", png[:-12])
    add("no_iend_23x17.png")
    write("cut_idat_crc_23x17.png", png[:-14])
    add("cut_idat_crc_23x17.png")
    write("cut_adler_23x17.png", png[:-18])
    add("cut_adler_23x17.png")
    bad = bytearray(png)
    bad[-16:-12] = b"\0\0\0\0"  # the last IDAT's CRC
    write("bad_idat_crc_23x17.png", bytes(bad))
    add("bad_idat_crc_23x17.png")
    write("cut_rows_23x17.png", png[: len(png) // 2])
    add("cut_rows_23x17.png")
    ipng = read("interlaced_23x17.png")
    write("interlaced_no_iend_23x17.png", ipng[:-16])
    add("interlaced_no_iend_23x17.png")
    write("interlaced_cut_23x17.png", ipng[:-40])
    add("interlaced_cut_23x17.png")

    other_formats(out, add, save, read, write)

    # plain resizes to non-square sizes
    rng = np.random.default_rng(20)
    for i, (iw, ih, ow, oh) in enumerate([(37, 19, 50, 80), (500, 333, 123, 45), (64, 64, 7, 300),
                                          (3, 2, 17, 5)]):
        a = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        name = f"resize{i}"
        a.tofile(os.path.join(out, name + ".in"))
        r = Image.fromarray(a, "RGB").resize((ow, oh), Image.BICUBIC)
        np.asarray(r, dtype=np.uint8).tofile(os.path.join(out, name + ".out"))
        cases.append(f"resize {name} {iw} {ih} {ow} {oh}")

    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(cases) + "\n")


if __name__ == "__main__":
    main()
