#!/usr/bin/python3
# safetensors_crosscheck.py: an independent safetensors reader and writer (json + numpy,
# written from the format description, not from groundc's C code) for test_safetensors.c.
#
#   safetensors_crosscheck.py check FILE   reads the file groundc wrote and checks the layout
#                                          and every value; exit 0 when all agree
#   safetensors_crosscheck.py write FILE   writes a file with metadata and F32, F16, BF16,
#                                          F64, I32, U8, I64 and BOOL tensors for groundc to read
#
# Format: 8-byte little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
# "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data; offsets count
# from the first byte after the header. The values here must match the formulas in
# test_safetensors.c (crosscheck section).
import json
import struct
import sys

import numpy as np

NP_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_,
}


def bf16_bits(values, use_torch):
    """float32 -> bf16 bit patterns, round to nearest even: by torch when asked for and
    present, else by integer arithmetic here (finite values only)."""
    x = np.asarray(values, dtype=np.float32)
    if use_torch:
        try:
            import torch
            t = torch.from_numpy(x.copy()).to(torch.bfloat16)
            return t.view(torch.int16).numpy().view(np.uint16), "torch"
        except ImportError:
            pass
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16), "numpy"


def read_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header_bytes = raw[8:8 + n]
    header = json.loads(header_bytes.decode("utf-8"))  # dicts keep the order as written
    return raw, n, header_bytes, header, list(header.keys()), raw[8 + n:]


def tensor(header, data, name):
    info = header[name]
    begin, end = info["data_offsets"]
    buf = data[begin:end]
    dt = info["dtype"]
    if dt == "BF16":
        arr = np.frombuffer(buf, dtype="<u2")
    else:
        arr = np.frombuffer(buf, dtype=np.dtype(NP_DTYPES[dt]).newbyteorder("<"))
    return dt, info["shape"], arr.reshape(info["shape"])


def check(path):
    errors = []

    def expect(cond, what):
        if not cond:
            errors.append(what)

    raw, n, header_bytes, header, order, data = read_file(path)
    # The Rust library's layout: header padded with spaces to a multiple of 8, metadata
    # first, data offsets contiguous in header order and covering all the data.
    expect(n % 8 == 0, f"header length {n} is not a multiple of 8")
    text = header_bytes.decode("utf-8")
    expect(text.rstrip(" ").endswith("}") and len(text) - len(text.rstrip(" ")) < 8,
           "header padding is not up to 7 spaces")
    names = ["f32.a", "bf16.b", "f64.c", "i32.d", "u8.e", "empty", "scalar", "f16.raw"]
    expect(order == ["__metadata__"] + names, f"header keys in order {order}")
    meta = header.get("__metadata__", {})
    expect(meta == {"producer": "groundc", "note": "caf\u00e9 \u2713", "quote": 'a"b\\c'},
           f"metadata {meta}")
    pos = 0
    for name in names:
        begin, end = header[name]["data_offsets"]
        expect(begin == pos, f"{name}: begins at {begin}, expected {pos}")
        pos = end
    expect(pos == len(data), f"data holds {len(data)} bytes, offsets cover {pos}")

    i6 = np.arange(6, dtype=np.float64)
    dt, shape, a = tensor(header, data, "f32.a")
    expect(dt == "F32" and shape == [2, 3], f"f32.a is {dt}{shape}")
    expect(np.array_equal(a.ravel(), (i6 * 0.37 - 1).astype(np.float32)), f"f32.a = {a}")

    dt, shape, b = tensor(header, data, "bf16.b")
    want, how = bf16_bits((np.arange(4) * 0.37 - 1).astype(np.float32), False)
    expect(dt == "BF16" and shape == [4], f"bf16.b is {dt}{shape}")
    expect(np.array_equal(b, want), f"bf16.b bits {b} differ from {how} rounding {want}")

    dt, shape, c = tensor(header, data, "f64.c")
    expect(dt == "F64" and shape == [2, 2, 2], f"f64.c is {dt}{shape}")
    expect(np.array_equal(c.ravel(), np.arange(8) * 0.1 - 0.35), f"f64.c = {c}")

    dt, shape, d = tensor(header, data, "i32.d")
    expect(dt == "I32" and shape == [5], f"i32.d is {dt}{shape}")
    expect(np.array_equal(d, np.arange(5) * 100003 - 250000), f"i32.d = {d}")

    dt, shape, e = tensor(header, data, "u8.e")
    expect(dt == "U8" and shape == [3, 4], f"u8.e is {dt}{shape}")
    expect(np.array_equal(e.ravel(), (np.arange(12) * 37) % 256), f"u8.e = {e}")

    dt, shape, z = tensor(header, data, "empty")
    expect(dt == "F32" and shape == [0, 3] and z.size == 0, f"empty is {dt}{shape}")

    dt, shape, s = tensor(header, data, "scalar")
    expect(dt == "F32" and shape == [] and float(s) == 42.5, f"scalar is {dt}{shape} = {s}")

    dt, shape, h = tensor(header, data, "f16.raw")
    expect(dt == "F16" and shape == [5], f"f16.raw is {dt}{shape}")
    expect(np.array_equal(h.astype(np.float64), [1.0, -2.0, 65504.0, 2.0 ** -24, np.inf]),
           f"f16.raw = {h}")

    for msg in errors:
        print(f"safetensors_crosscheck: {path}: {msg}", file=sys.stderr)
    print(f"safetensors_crosscheck: checked {len(names)} tensors of {path} "
          f"({'ok' if not errors else f'{len(errors)} problems'})")
    return 0 if not errors else 1


def write(path):
    w = (np.arange(12) * 0.37 - 1).astype(np.float32).reshape(3, 4)
    h = np.array([1.0, -2.0, 65504.0, 2.0 ** -24, np.inf, 0.333], dtype=np.float16)
    b, how = bf16_bits([1.0 / 3.0, -2.7, 1e-3, 3e38], True)
    tensors = [  # name, dtype, shape, little-endian bytes
        ("w", "F32", [3, 4], w.astype("<f4").tobytes()),
        ("h", "F16", [6], h.astype("<f2").tobytes()),
        ("b", "BF16", [2, 2], b.astype("<u2").tobytes()),
        ("d", "F64", [2], np.array([np.pi, -1e300]).astype("<f8").tobytes()),
        ("i", "I32", [4], np.array([-2 ** 31, -1, 0, 2 ** 31 - 1]).astype("<i4").tobytes()),
        ("u", "U8", [3], np.array([0, 128, 255], dtype=np.uint8).tobytes()),
        ("l", "I64", [2], np.array([-(2 ** 40), 7]).astype("<i8").tobytes()),
        ("m", "BOOL", [3], np.array([True, False, True]).tobytes()),
        ("tie", "F64", [1], np.array([1 + 2.0 ** -8 + 2.0 ** -30]).astype("<f8").tobytes()),
    ]
    # A layout groundc does not produce: data stored in reverse header order, an
    # indented (multi-line) header of odd length, so no tensor is aligned.
    header = {"__metadata__": {"format": "pt", "source": "python", "bf16_by": how}}
    blobs, pos = [], 0
    for name, dtype, shape, blob in reversed(tensors):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    ordered = {"__metadata__": header["__metadata__"]}
    for name, _, _, _ in tensors:
        ordered[name] = header[name]
    text = json.dumps(ordered, indent=1).encode("utf-8")
    if len(text) % 2 == 0:
        text += b" "
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    print(f"safetensors_crosscheck: wrote {len(tensors)} tensors to {path} (bf16 by {how})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "write"):
        sys.exit("usage: safetensors_crosscheck.py check|write FILE")
    try:
        sys.exit(check(sys.argv[2]) if sys.argv[1] == "check" else write(sys.argv[2]))
    except (OSError, ValueError, KeyError, TypeError) as err:  # a malformed file
        sys.exit(f"safetensors_crosscheck: {sys.argv[2]}: {type(err).__name__}: {err}")
