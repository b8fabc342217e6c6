"""gguf_read.py: an independent numpy reader of GGUF files, and the checks of a groundc GGUF
export against the checkpoint it came from (tests/test_export_gguf.sh).

  gguf_read.py CKPT_DIR EXPORT_DIR DTYPE TOKENIZER

Checks, for model.gguf and mmproj.gguf: the container (magic, version 3, 32-byte alignment of
the data and of every tensor, tensors inside the file and not overlapping); the metadata
(llama / clip hyperparameters from the checkpoint's config.yaml, the vocabulary, scores and
token types against python3-sentencepiece, the 9 added tokens as USER_DEFINED, special ids,
the feature layer); tensor names, shapes and types; and every value against the checkpoint's
model.safetensors, transformed here in numpy: token_embd / output = base rows + added rows,
attn_q / attn_k permuted as convert_hf_to_gguf.py's LlamaModel.permute does (reshape to
(heads, 2, D/2, C), swap the middle axes), the patch weight from groundc's (C, kh, kw, cin)
layout to the conv's (C, cin, kh, kw). F32 values must be equal, F16 and BF16 values equal to
the round-to-nearest-even rounding of the f32 value, Q8_0 blocks equal to ggml's reference
quantizer (scale f16(max|x| / 127), q = roundf(x / scale)), their error at most 0.57 scale.
Also a module: read, tensor, to_checkpoint (the exported weights under checkpoint names, for
tests/gguf_reference.py's forward).
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

F32, F16, Q8_0, BF16 = 0, 1, 8, 30
TYPE_NAME = {F32: "F32", F16: "F16", Q8_0: "Q8_0", BF16: "BF16"}
FTYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
WTYPE = {"f32": F32, "f16": F16, "bf16": BF16, "q8_0": Q8_0}
CONV = {"f32": F32, "f16": F16, "bf16": F32, "q8_0": F16}


class Bad(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Bad(msg)


class Gguf:
    """A parsed GGUF file: kv (key -> value), tensors (name -> (type, ne, offset))."""

    def __init__(self, path):
        self.path = path
        self.raw = open(path, "rb").read()
        self.pos = 0
        need(self._take(4) == b"GGUF", f"{path}: not a GGUF file")
        self.version = self._u("<I")
        need(self.version == 3, f"{path}: version {self.version}, expected 3")
        n_t, n_kv = self._u("<Q"), self._u("<Q")
        self.kv = {}
        for _ in range(n_kv):
            k = self._str()
            need(k not in self.kv, f"{path}: key {k} twice")
            self.kv[k] = self._value(self._u("<I"))
        self.alignment = self.kv.get("general.alignment", 32)
        self.tensors = {}
        for _ in range(n_t):
            name = self._str()
            need(name not in self.tensors, f"{path}: tensor {name} twice")
            nd = self._u("<I")
            ne = [self._u("<Q") for _ in range(nd)]
            t, off = self._u("<I"), self._u("<Q")
            need(t in TYPE_NAME, f"{path}: {name}: ggml type {t}")
            self.tensors[name] = (t, ne, off)
        self.data = -(-self.pos // self.alignment) * self.alignment
        need(not any(self.raw[self.pos:self.data]), f"{path}: padding before the data is not zero")
        spans = []
        for name, (t, ne, off) in self.tensors.items():
            need(off % self.alignment == 0, f"{path}: {name}: offset {off} not aligned")
            spans.append((off, off + nbytes(t, ne), name))
        spans.sort()
        for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
            need(a1 <= b0, f"{path}: {an} and {bn} overlap")
        end = self.data + (spans[-1][1] if spans else 0)
        need(end <= len(self.raw) < end + self.alignment,
             f"{path}: {len(self.raw)} bytes, the tensors end at {end}")

    def _take(self, n):
        b = self.raw[self.pos:self.pos + n]
        need(len(b) == n, f"{self.path}: truncated at byte {self.pos}")
        self.pos += n
        return b

    def _u(self, fmt):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _str(self):
        return self._take(self._u("<Q")).decode("utf-8")

    def _value(self, t):
        scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 10: "<Q",
                  11: "<q", 12: "<d"}
        if t in scalar:
            return (t, self._u(scalar[t]))
        if t == 7:
            return (t, self._u("<B") != 0)
        if t == 8:
            return (t, self._str())
        need(t == 9, f"{self.path}: metadata type {t}")
        et, n = self._u("<I"), self._u("<Q")
        return (9, et, [self._value(et)[1] for _ in range(n)])

    def val(self, key):
        need(key in self.kv, f"{self.path}: no {key}")
        return self.kv[key][-1]


def nbytes(t, ne):
    n = int(np.prod(ne))
    return n * 4 if t == F32 else n * 2 if t in (F16, BF16) else n // 32 * 34


def tensor(g, name):
    """A tensor's values as float64, numpy shape = reversed ne; Q8_0 also returns (d, q)."""
    t, ne, off = g.tensors[name]
    a = g.data + off
    raw = g.raw[a:a + nbytes(t, ne)]
    shape = list(reversed(ne))
    if t == F32:
        return np.frombuffer(raw, "<f4").astype(np.float64).reshape(shape)
    if t == F16:
        return np.frombuffer(raw, "<f2").astype(np.float64).reshape(shape)
    if t == BF16:
        u = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64).reshape(shape)
    blocks = np.frombuffer(raw, np.dtype([("d", "<f2"), ("q", "i1", 32)]))
    d = blocks["d"].astype(np.float64)
    q = blocks["q"].astype(np.float64)
    return (q * d[:, None]).reshape(shape), (blocks["d"], blocks["q"])


def permute(w, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half rows -> ggml's pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def bf16_round(x32):
    u = x32.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def roundf(x):
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def check_values(g, name, expect, t):
    """The stored tensor against the f32 values expect (numpy layout). Returns the Q8_0 error
    in units of the block scale (0 otherwise)."""
    have_t, ne, _ = g.tensors[name]
    need(have_t == t, f"{g.path}: {name} is {TYPE_NAME[have_t]}, expected {TYPE_NAME[t]}")
    need(list(reversed(ne)) == list(expect.shape),
         f"{g.path}: {name} has ne {ne}, expected {list(reversed(expect.shape))}")
    x = expect.astype(np.float32)
    if t == F32:
        ok = np.array_equal(tensor(g, name), x.astype(np.float64))
    elif t == F16:
        ok = np.array_equal(tensor(g, name), x.astype(np.float16).astype(np.float64))
    elif t == BF16:
        ok = np.array_equal(tensor(g, name), bf16_round(x).astype(np.float64))
    else:
        deq, (d, q) = tensor(g, name)
        xb = x.reshape(-1, 32)
        d32 = np.abs(xb).max(1) / np.float32(127)
        with np.errstate(divide="ignore"):
            inv = np.where(d32 != 0, np.float32(1) / d32, np.float32(0)).astype(np.float32)
        need(np.array_equal(d, d32.astype(np.float16)), f"{g.path}: {name}: q8_0 scales differ")
        need(np.array_equal(q, roundf(xb * inv[:, None]).astype(np.int8)),
             f"{g.path}: {name}: q8_0 values differ from ggml's quantizer")
        scale = d.astype(np.float64)[:, None]
        err = np.abs(deq.reshape(-1, 32) - xb)
        ratio = np.where(scale > 0, err / np.where(scale > 0, scale, 1), 0).max()
        need(ratio <= 0.57, f"{g.path}: {name}: q8_0 error {ratio:.3f} of the scale")
        return ratio
    need(ok, f"{g.path}: {name}: values differ from the checkpoint's {TYPE_NAME[t]} rounding")
    return 0.0


def expected_model(w, cfg):
    """model.gguf tensors from the checkpoint: name -> (values, is a 2-D weight)."""
    c = cfg["llm"]
    e = {"token_embd.weight": (np.concatenate([w["model.embed_tokens.weight"],
                                               w["model.embed_tokens.added_rows"]]), True),
         "output_norm.weight": (w["model.norm.weight"], False),
         "output.weight": (np.concatenate([w["lm_head.weight"], w["lm_head.added_rows"]]), True)}
    for l in range(c["layers"]):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        e[b + "attn_norm.weight"] = (w[p + "input_layernorm.weight"], False)
        e[b + "attn_q.weight"] = (permute(w[p + "self_attn.q_proj.weight"], c["heads"]), True)
        e[b + "attn_k.weight"] = (permute(w[p + "self_attn.k_proj.weight"], c["kv_heads"]), True)
        e[b + "attn_v.weight"] = (w[p + "self_attn.v_proj.weight"], True)
        e[b + "attn_output.weight"] = (w[p + "self_attn.o_proj.weight"], True)
        e[b + "ffn_norm.weight"] = (w[p + "post_attention_layernorm.weight"], False)
        e[b + "ffn_gate.weight"] = (w[p + "mlp.gate_proj.weight"], True)
        e[b + "ffn_up.weight"] = (w[p + "mlp.up_proj.weight"], True)
        e[b + "ffn_down.weight"] = (w[p + "mlp.down_proj.weight"], True)
    return e


def feature_layer(cfg):
    enc = cfg["image"]["encoder"]
    sel = enc.get("select_layer", -2)
    return sel + enc["layers"] + 1 if sel < 0 else sel


def expected_mmproj(w, cfg):
    """mmproj.gguf tensors: name -> (values, role) with role 'w' (2-D weight), 'f' or 'conv'."""
    v = "model.vision_tower.vision_model."
    conv = w[v + "embeddings.patch_embedding.weight"].transpose(0, 3, 1, 2)  # -> (C, cin, kh, kw)
    e = {"v.patch_embd.weight": (conv, "conv"),
         "v.class_embd": (w[v + "embeddings.class_embedding"], "f"),
         "v.position_embd.weight": (w[v + "embeddings.position_embedding.weight"], "f"),
         "v.pre_ln.weight": (w[v + "pre_layrnorm.weight"], "f"),
         "v.pre_ln.bias": (w[v + "pre_layrnorm.bias"], "f")}
    names = {"ln1": "layer_norm1", "ln2": "layer_norm2", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_out": "self_attn.out_proj", "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"}
    for l in range(feature_layer(cfg)):
        for g, h in names.items():
            for s in ["weight", "bias"]:
                role = "w" if s == "weight" and not g.startswith("ln") else "f"
                e[f"v.blk.{l}.{g}.{s}"] = (w[f"{v}encoder.layers.{l}.{h}.{s}"], role)
    for i in (0, 2):
        e[f"mm.{i}.weight"] = (w[f"model.mm_vision_projector.{i}.weight"], "w")
        e[f"mm.{i}.bias"] = (w[f"model.mm_vision_projector.{i}.bias"], "f")
    return e


def weight_type(dtype, values):
    t = WTYPE[dtype]
    return F16 if t == Q8_0 and values.shape[-1] % 32 else t


def check_tokenizer(g, sp, V0, cfg):
    tokens, scores, types = (g.val("tokenizer.ggml." + k) for k in ("tokens", "scores", "token_type"))
    need(len(tokens) == len(scores) == len(types) == V0 + 9,
         f"{g.path}: vocabulary arrays of {len(tokens)}, {len(scores)}, {len(types)}")
    need(g.val("tokenizer.ggml.model") == "llama", f"{g.path}: tokenizer model not llama")
    for i in range(V0):
        need(tokens[i] == sp.id_to_piece(i), f"{g.path}: token {i} {tokens[i]!r}")
        need(np.float32(scores[i]) == np.float32(sp.get_score(i)), f"{g.path}: score of {i}")
        kind = (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                else 5 if sp.is_unused(i) else None)
        need(types[i] == kind if kind else types[i] in (1, 4), f"{g.path}: type {types[i]} of {i}")
    added = [f"<{k}>" for k, _ in sorted(cfg["tokens"].items(), key=lambda kv: kv[1])]
    need(tokens[V0:] == added and types[V0:] == [4] * 9, f"{g.path}: added tokens {tokens[V0:]}")
    for k, want in [("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unknown", sp.unk_id()),
                    ("padding", sp.pad_id())]:
        key = f"tokenizer.ggml.{k}_token_id"
        need(g.val(key) == want if want >= 0 else key not in g.kv, f"{g.path}: {key}")
    need(g.val("tokenizer.ggml.add_bos_token") is True, f"{g.path}: add_bos_token")
    need(g.val("tokenizer.ggml.add_eos_token") is False, f"{g.path}: add_eos_token")
    prefix = sp.encode_as_pieces("a")[0].startswith("\u2581")
    need(g.val("tokenizer.ggml.add_space_prefix") == prefix, f"{g.path}: add_space_prefix")
    need("' Human: '" in g.val("tokenizer.chat_template"), f"{g.path}: no Vicuna v0 template")


def check(ckpt, export, dtype, tokenizer):
    import sentencepiece as spm
    import yaml

    import gguf_reference as ref
    cfg = yaml.safe_load(open(f"{ckpt}/config.yaml"))["model"]
    w = ref.load_safetensors(f"{ckpt}/model.safetensors")
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    c = cfg["llm"]
    worst = 0.0

    g = Gguf(f"{export}/model.gguf")
    V0 = c["vocab"]
    for k, want in [("general.architecture", "llama"), ("general.file_type", FTYPE[dtype]),
                    ("llama.vocab_size", V0 + 9), ("llama.context_length", c["max_seq"]),
                    ("llama.embedding_length", c["dim"]), ("llama.block_count", c["layers"]),
                    ("llama.feed_forward_length", c["ffn"]),
                    ("llama.rope.dimension_count", c["dim"] // c["heads"]),
                    ("llama.attention.head_count", c["heads"]),
                    ("llama.attention.head_count_kv", c["kv_heads"]),
                    ("llama.attention.layer_norm_rms_epsilon", np.float32(c.get("norm_eps", 1e-5))),
                    ("llama.rope.freq_base", np.float32(c.get("rope_theta", 10000)))]:
        need(g.val(k) == want, f"{g.path}: {k} = {g.val(k)}, expected {want}")
    check_tokenizer(g, sp, V0, cfg)
    e = expected_model(w, cfg)
    need(set(g.tensors) == set(e), f"{g.path}: tensors {sorted(set(g.tensors) ^ set(e))} differ")
    for name, (values, matrix) in e.items():
        worst = max(worst, check_values(g, name, values, weight_type(dtype, values) if matrix else F32))
    n_model = len(g.tensors)

    g = Gguf(f"{export}/mmproj.gguf")
    enc, k = cfg["image"]["encoder"], feature_layer(cfg)
    for key, want in [("general.architecture", "clip"), ("general.file_type", FTYPE[dtype]),
                      ("clip.projector_type", "mlp"), ("clip.has_vision_encoder", True),
                      ("clip.use_gelu", False), ("clip.vision.image_size", cfg["image"]["size"]),
                      ("clip.vision.patch_size", enc["patch"]),
                      ("clip.vision.embedding_length", enc["width"]),
                      ("clip.vision.feed_forward_length", enc["mlp"]),
                      ("clip.vision.projection_dim", c["dim"]), ("clip.vision.block_count", k),
                      ("clip.vision.attention.head_count", enc["heads"]),
                      ("clip.vision.attention.layer_norm_epsilon",
                       np.float32(enc.get("norm_eps", 1e-5))),
                      ("clip.vision.feature_layer", [k])]:
        need(g.val(key) == want, f"{g.path}: {key} = {g.val(key)}, expected {want}")
    need(np.allclose(g.val("clip.vision.image_mean"), ref.CLIP_MEAN, atol=1e-7) and
         np.allclose(g.val("clip.vision.image_std"), ref.CLIP_STD, atol=1e-7),
         f"{g.path}: image mean / std")
    e = expected_mmproj(w, cfg)
    need(set(g.tensors) == set(e), f"{g.path}: tensors {sorted(set(g.tensors) ^ set(e))} differ")
    for name, (values, role) in e.items():
        t = weight_type(dtype, values) if role == "w" else CONV[dtype] if role == "conv" else F32
        worst = max(worst, check_values(g, name, values, t))
    print(f"gguf_read {dtype}: model.gguf {n_model} tensors, mmproj.gguf {len(g.tensors)} "
          f"tensors (feature layer {k}): metadata and values match the checkpoint"
          + (f"; q8_0 error at most {worst:.3f} of the block scale" if dtype == "q8_0" else ""))


def to_checkpoint(export, cfg):
    """The exported weights as float64 under checkpoint names (the inverse transforms), for
    gguf_reference.py's forward: what the checkpoint becomes after the dtype's rounding."""
    w = {}
    g = Gguf(f"{export}/model.gguf")
    V0, c = cfg["llm"]["vocab"], cfg["llm"]

    def get(gg, n):
        t = tensor(gg, n)
        return t[0] if isinstance(t, tuple) else t

    emb, out = get(g, "token_embd.weight"), get(g, "output.weight")
    w["model.embed_tokens.weight"], w["model.embed_tokens.added_rows"] = emb[:V0], emb[V0:]
    w["lm_head.weight"], w["lm_head.added_rows"] = out[:V0], out[V0:]
    w["model.norm.weight"] = get(g, "output_norm.weight")
    for l in range(c["layers"]):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        w[p + "input_layernorm.weight"] = get(g, b + "attn_norm.weight")
        w[p + "self_attn.q_proj.weight"] = unpermute(get(g, b + "attn_q.weight"), c["heads"])
        w[p + "self_attn.k_proj.weight"] = unpermute(get(g, b + "attn_k.weight"), c["kv_heads"])
        for a, n in [("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                     ("ffn_norm", "post_attention_layernorm"), ("ffn_gate", "mlp.gate_proj"),
                     ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]:
            w[p + n + ".weight"] = get(g, b + a + ".weight")
    g = Gguf(f"{export}/mmproj.gguf")
    v = "model.vision_tower.vision_model."
    w[v + "embeddings.patch_embedding.weight"] = get(g, "v.patch_embd.weight").transpose(0, 2, 3, 1)
    w[v + "embeddings.class_embedding"] = get(g, "v.class_embd")
    w[v + "embeddings.position_embedding.weight"] = get(g, "v.position_embd.weight")
    w[v + "pre_layrnorm.weight"], w[v + "pre_layrnorm.bias"] = get(g, "v.pre_ln.weight"), get(g, "v.pre_ln.bias")
    names = {"ln1": "layer_norm1", "ln2": "layer_norm2", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_out": "self_attn.out_proj", "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"}
    for l in range(feature_layer(cfg)):
        for a, n in names.items():
            for s in ["weight", "bias"]:
                w[f"{v}encoder.layers.{l}.{n}.{s}"] = get(g, f"v.blk.{l}.{a}.{s}")
    for i in (0, 2):
        for s in ["weight", "bias"]:
            w[f"model.mm_vision_projector.{i}.{s}"] = get(g, f"mm.{i}.{s}")
    return w


def main():
    if len(sys.argv) != 5:
        raise SystemExit("usage: gguf_read.py CKPT_DIR EXPORT_DIR DTYPE TOKENIZER")
    try:
        check(*sys.argv[1:])
    except Bad as e:
        print(f"gguf_read: FAIL: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
