#!/usr/bin/python3
"""image_reference.py OUTDIR: reference images and PIL's preprocessing of them, for test_image.

Writes deterministic test images (JPEG: RGB in several subsamplings, progressive, grey, CMYK,
EXIF-rotated; PNG: RGB, RGBA, grey+alpha, palette with transparency, 1-bit, 4-bit palette,
16-bit RGB and RGBA, 16-bit grey, Adam7-interlaced) and, for each, what the reference pipeline makes of it:
  NAME.rgb      Image.open(NAME).convert("RGB") as raw uint8 [h][w][3]
  NAME.S.rgb    LLaVA's expand2square(img, (122, 116, 104)).resize((S, S), Image.BICUBIC)
and cases.txt with one line per case: "image NAME W H NOTE". Plain resizes of random
pixels to non-square sizes are listed as "resize NAME IW IH OW OH" with NAME.in / NAME.out.
Exits 77 when PIL or numpy is missing (the C test then skips this part).
"""
import os
import struct
import sys
import zlib

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


def write_png_raw(path, arr, depth, color_type, interlace=False):
    """Minimal PNG writer (PIL writes neither 16-bit RGB nor interlaced files)."""
    h, w = arr.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8

    def scanlines(a):  # filter type 0 before every row
        if a.size == 0:
            return b""
        return b"".join(b"\0" + row.astype(dtype).tobytes() for row in a)

    if interlace:
        raw = b"".join(scanlines(arr[y0::dy, x0::dx]) for x0, y0, dx, dy in ADAM7)
    else:
        raw = scanlines(arr)

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def main():
    out = sys.argv[1]
    cases = []

    def add(name, note="-", expected=None):
        path = os.path.join(out, name)
        img = Image.open(path).convert("RGB")
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
