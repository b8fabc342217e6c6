"""st_write.py: safetensors files written with numpy alone (the one writer of the fixture
scripts: make_op_fixtures.py, qformer_reference.py, vit_reference.py, the audio fixtures)."""
import json
import os
import struct

import numpy as np

# bytes per element: the widest tensors go first, so that every tensor stays aligned
SIZES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "U8": 1}


def write(path, tensors, meta):
    """tensors: name -> (safetensors dtype, numpy array whose bytes are that dtype's); meta: the
    __metadata__ (values written as strings). Tensors in order of element size, widest first,
    then of name; the header padded with spaces to 8 bytes, as HF's writer pads it; written to
    path.tmp, then renamed over path."""
    names = sorted(tensors, key=lambda n: (-SIZES[tensors[n][0]], n))
    header, blobs, offset = {}, [], 0
    for n in names:
        dtype, arr = tensors[n]
        blob = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[n] = {"dtype": dtype, "shape": list(arr.shape),
                     "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
