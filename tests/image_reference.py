#!/usr/bin/python3
"""image_reference.py OUTDIR: reference images and PIL's preprocessing of them, for test_image.

Writes deterministic test images (JPEG: RGB in several subsamplings, progressive, optimised,
grey, CMYK, EXIF-rotated, with ICC profiles, 1-pixel wide, damaged; PNG: RGB, RGBA, grey+alpha,
palette with transparency, 1/2/4-bit, 16-bit RGB, RGBA, grey+alpha and grey, Adam7-interlaced,
gAMA/sRGB/iCCP chunks, undefined palette entries, cut or damaged after the pixel data; each
format under the other's name) and, for each, what the reference pipeline makes of it:
  NAME.rgb      Image.open(NAME).convert("RGB") as raw uint8 [h][w][3]
  NAME.S.rgb    LLaVA's expand2square(img, (122, 116, 104)).resize((S, S), Image.BICUBIC)
and cases.txt with one line per case: "image NAME W H NOTE", or "refuse NAME" where PIL
raises (groundc must refuse it too). The JPEGs test_image wrote with libjpeg beforehand
(lj_*.jpg: arithmetic coding, restart markers, 4:1:1, 4:4:0, YCCK, CMYK without the Adobe
marker; PIL cannot write those) are cases as well. Plain resizes of random pixels to
non-square sizes are listed as "resize NAME IW IH OW OH" with NAME.in / NAME.out.
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


def main():
    out = sys.argv[1]
    warnings.simplefilter("ignore")  # palette transparency as bytes, large EXIF: not our case
    cases = []

    def add(name, note="-", expected=None):
        path = os.path.join(out, name)
        try:
            img = Image.open(path).convert("RGB")
        except Exception as e:  # what PIL refuses, groundc must refuse too
            print(f"image_reference.py: PIL refuses {name}: {type(e).__name__}: {e}")
            cases.append(f"refuse {name}")
            return
        if expected is not None:  # where groundc deliberately differs from PIL's decode
            img = Image.fromarray(expected, "RGB")
        np.asarray(img, dtype=np.uint8).tofile(path + ".rgb")
        sq = expand2square(img, MEAN)
        for s in SIZES:
            r = sq.resize((s, s), Image.BICUBIC)
            np.asarray(r, dtype=np.uint8).tofile(f"{path}.{s}.rgb")
        cases.append(f"image {name} {img.size[0]} {img.size[1]} {note}")

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
