#!/usr/bin/python3
"""shard_h5py_check.py: h5py side of tests/test_shard.c (run with HDF5_PLUGIN_PATH pointing
at build/hdf5-plugins).

    shard_h5py_check.py SHARD EXPECTED_JSON OUT_H5 [TEXT_ONLY_SHARD]

1. Opens SHARD with h5py, decompresses every dataset through the libh5zstd.so plugin and
   compares it with EXPECTED_JSON (written by the C test): root attributes, dtypes (audios
   must come back as numpy float16), shapes, values, filter id 32015 at the shard
   writer's default levels (-1 for images and videos, 1 for the rest; cd_values[0] is a signed
   int stored as unsigned).
2. Writes OUT_H5 with datasets compressed by filter 32015 through the plugin; the C test
   reads them back with groundc's in-process filter and checks the same formulas as below.
3. Optionally opens a shard without media: every dataset reads, media datasets are empty.
Prints one line per failure and a summary; exits 1 on any failure.
"""
import json
import sys

import h5py
import numpy as np

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print("FAIL", what, file=sys.stderr)


def zstd_level(ds):
    """Filter id and cd_values of the dataset's first filter, from its creation list."""
    dcpl = ds.id.get_create_plist()
    if dcpl.get_nfilters() < 1:
        return None, None
    code, _flags, values, _name = dcpl.get_filter(0)
    return code, tuple(values)


def check_shard(path, expected_path):
    with open(expected_path, encoding="utf-8") as f:
        exp = json.load(f)
    check(h5py.h5z.filter_avail(32015), "filter 32015 available through the plugin")
    with h5py.File(path, "r") as f:
        for name, value in exp["attrs"].items():
            got = f.attrs[name]
            if isinstance(got, bytes):
                got = got.decode("utf-8")
            check(got == value, f"attribute {name}: {got!r} != {value!r}")
        sources = [s.decode("utf-8") if isinstance(s, bytes) else s for s in f.attrs["sources"]]
        check(sources == exp["sources"], f"sources {sources} != {exp['sources']}")

        dtypes = {
            "tokens": np.int32, "loss_mask": np.uint8, "offsets": np.int64,
            "sample_image": np.int32, "sample_video": np.int32, "sample_audio": np.int32,
            "sample_task": np.uint8, "sample_granularity": np.uint8, "sample_source": np.uint16,
            "images": np.uint8, "image_orig_size": np.int32, "videos": np.uint8,
            "video_duration": np.float32, "audios": np.float16, "audio_duration": np.float32,
        }
        for name, dtype in dtypes.items():
            ds = f[name]
            check(ds.dtype == np.dtype(dtype), f"{name}: dtype {ds.dtype}, expected {np.dtype(dtype)}")
            check(list(ds.shape) == exp["shapes"][name],
                  f"{name}: shape {ds.shape}, expected {exp['shapes'][name]}")
            data = ds[()]
            want = np.array(exp[name], dtype=np.float64 if dtype == np.float16 else dtype)
            if dtype == np.float16:
                ok = data.dtype == np.float16 and np.array_equal(data.reshape(-1).astype(np.float64), want)
            else:
                ok = np.array_equal(data.reshape(-1), want)
            check(ok, f"{name}: values differ")
            if ds.size > 0:
                code, values = zstd_level(ds)
                want = exp["zstd_pixel_level" if name in ("images", "videos") else "zstd_level"]
                level = values[0] - (1 << 32) if values and values[0] >= 1 << 31 else values[0]
                check(code == 32015 and level == want, f"{name}: filter {code} {values}, "
                      f"expected level {want}")

        meta = f["sample_meta"]
        check(h5py.check_string_dtype(meta.dtype) is not None, "sample_meta: not a string dtype")
        strings = [m.decode("utf-8") if isinstance(m, bytes) else m for m in meta.asstr()[()]]
        check(strings == exp["sample_meta"], "sample_meta: strings differ")
        for s in strings:
            check(isinstance(json.loads(s), dict), f"sample_meta: {s!r} is not a JSON object")


def check_text_only(path):
    with h5py.File(path, "r") as f:
        for name in f:
            data = f[name][()]  # every dataset decodes, empty ones included
            check(data is not None, f"{path}: {name} reads")
        for name in ("images", "videos", "audios", "image_orig_size", "video_duration",
                     "audio_duration"):
            check(f[name].shape[0] == 0, f"{path}: {name} is empty")
        check(f["audios"].dtype == np.float16, f"{path}: audios dtype {f['audios'].dtype}")
        check(f.attrs["image_size"] == 0 and f.attrs["audio_mels"] == 0, f"{path}: zero sizes")
        n = int(f.attrs["num_samples"])
        check(f["offsets"].shape == (n + 1,) and f["offsets"][-1] == f["tokens"].shape[0],
              f"{path}: offsets")


def write_file(out):
    """Datasets the C side recomputes: see check_h5py_written in tests/test_shard.c."""
    ints = (np.arange(100000, dtype=np.int64) * 7919 % 1000003).astype(np.int32)
    halves = (np.arange(4 * 256, dtype=np.float64).reshape(4, 256) - 512.0) / 64.0
    pixels = (np.arange(3 * 16 * 16 * 3, dtype=np.int64) * 31 % 251).astype(np.uint8)
    with h5py.File(out, "w") as f:
        f.create_dataset("ints", data=ints, chunks=(30000,), compression=32015,
                         compression_opts=(3,))
        f.create_dataset("halves", data=halves.astype(np.float16), chunks=(1, 256),
                         compression=32015, compression_opts=(3,))
        f.create_dataset("pixels", data=pixels.reshape(3, 16, 16, 3), chunks=(1, 16, 16, 3),
                         compression=32015, compression_opts=(9,))
    with h5py.File(out, "r") as f:  # the plugin decodes its own output too
        check(np.array_equal(f["ints"][()], ints), "written ints read back")
        check(zstd_level(f["pixels"]) == (32015, (9,)), "pixels: level 9 recorded")


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    check_shard(sys.argv[1], sys.argv[2])
    write_file(sys.argv[3])
    if len(sys.argv) == 5:
        check_text_only(sys.argv[4])
    print(f"shard_h5py_check: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
