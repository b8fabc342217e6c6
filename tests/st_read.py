"""st_read.py: safetensors files read with numpy alone, independently of groundc (a module for
the Python checks: st_compare.py, export_hf_forward.py, gguf_reference.py, ...)."""
import json
import struct

import numpy as np

TYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
         "U8": np.uint8}


def read_raw(path):
    """name -> numpy array in the file's own dtype (F32, F16, F64, I32, I64, U8; BF16 widened to
    f32 exactly)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        if e["dtype"] == "BF16":
            arr = (np.frombuffer(data[a:b], np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] in TYPES:
            arr = np.frombuffer(data[a:b], TYPES[e["dtype"]])
        else:
            raise SystemExit(f"{path}: {name}: dtype {e['dtype']} not handled")
        out[name] = arr.reshape(e["shape"])
    return out


def read(path):
    """name -> float64 array."""
    return {k: v.astype(np.float64) for k, v in read_raw(path).items()}
