#!/usr/bin/env python3
"""export_hf_check.py CKPT_DIR EXPORT_DIR --dtype f32|f16|bf16 --tokenizer FILE

Checks a `groundc export --format hf` folder against the checkpoint it came from, with numpy
only (the mapping is written out here again, independently of train/export_hf.c):
  * every safetensors file: 8-byte header length, JSON header, "__metadata__" {"format": "pt"},
    data offsets contiguous and in bounds;
  * model.safetensors holds exactly the names transformers' LlavaForConditionalGeneration
    has (model.language_model.*, lm_head.weight, model.vision_tower.vision_model.*,
    model.multi_modal_projector.linear_{1,2}.*), video_branch / audio_branch.safetensors
    exactly the checkpoint's tensors of those branches; right shapes and dtype;
  * values: the checkpoint's, (V0, C) + (9, C) tables concatenated, patch weights permuted
    from (out, kh, kw, cin) to (out, cin, kh, kw), rounded to the dtype to nearest even;
  * config.json, the branch configs, processor and tokenizer files agree with the
    checkpoint's config.yaml and the tokenizer (added token ids, special tokens)."""
import json, os, struct, sys
import numpy as np

fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
    return cond


def read_st(path):
    """(metadata, {name: (dtype, shape, raw bytes)}) with the header's layout checked."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    check(8 + n <= len(blob), f"{path}: header length {n} past the end")
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", None)
    spans, out = [], {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        spans.append((a, b))
        out[name] = (e["dtype"], tuple(e["shape"]), data[a:b])
    spans.sort()
    end = 0
    for a, b in spans:
        check(a == end, f"{path}: data not contiguous at offset {a}")
        end = b
    check(end == len(data), f"{path}: {len(data) - end} bytes past the last tensor")
    return meta, out


def decode(dtype, shape, raw):
    if dtype == "BF16":
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    t = {"F32": np.float32, "F16": np.float16}[dtype]
    return np.frombuffer(raw, t).reshape(shape).astype(np.float32)


def round_to(dtype, x):
    """x (float32) as the export must hold it, widened back to float32."""
    x = np.asarray(x, np.float32)
    if dtype == "F32":
        return x
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return u.view(np.float32)


def mini_yaml(path):
    """The block-style maps groundc writes (config.yaml): nested dicts of scalars; lists are
    skipped. Enough for the model section."""
    root, stack = {}, [(-1, None)]
    stack[0] = (-1, root)
    for line in open(path):
        s = line.split(" #")[0].rstrip()
        if not s.strip() or s.lstrip().startswith("#") or s.lstrip().startswith("-"):
            continue
        indent = len(s) - len(s.lstrip())
        key, _, val = s.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if parent is None:
            continue
        val = val.strip()
        if val == "":
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            try:
                parent[key] = int(val)
            except ValueError:
                try:
                    parent[key] = float(val)
                except ValueError:
                    parent[key] = val
            stack.append((indent, None))
    return root


def main():
    a = sys.argv[1:]
    ckpt, export = a[0], a[1]
    opts = dict(zip(a[2::2], a[3::2]))
    dt = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[opts["--dtype"]]
    torch_dt = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dt]
    cfg = mini_yaml(os.path.join(ckpt, "config.yaml"))["model"]
    llm, img = cfg["llm"], cfg["image"]
    V0 = llm["vocab"]

    _, ck = read_st(os.path.join(ckpt, "model.safetensors"))
    ckv = {k: decode(*v) for k, v in ck.items()}

    # The expected files: name -> float32 values, from the checkpoint.
    want = {"model.safetensors": {}, "video_branch.safetensors": {},
            "audio_branch.safetensors": {}}
    llava = want["model.safetensors"]
    video_pre = ("model.visual_encoder.", "model.ln_vision.", "model.query_tokens",
                 "model.Qformer.", "model.video_query_tokens", "model.video_frame_position_embedding.",
                 "model.video_Qformer.", "model.llama_proj.")
    audio_pre = ("model.audio_encoder.", "model.audio_query_tokens", "model.audio_position_embedding.",
                 "model.audio_Qformer.", "model.audio_llama_proj.")
    conv_names = ("embeddings.patch_embedding.weight", "patch_embed.proj.weight",
                  "rgbt_stem.proj.weight")
    for name, v in ckv.items():
        if name.endswith(conv_names):
            v = v.transpose(0, 3, 1, 2)  # (out, kh, kw, cin) -> (out, cin, kh, kw)
        if name in ("model.embed_tokens.added_rows", "lm_head.added_rows"):
            continue
        if name == "model.embed_tokens.weight":
            llava["model.language_model.embed_tokens.weight"] = np.concatenate(
                [v, ckv["model.embed_tokens.added_rows"]])
        elif name == "lm_head.weight":
            llava["lm_head.weight"] = np.concatenate([v, ckv["lm_head.added_rows"]])
        elif name.startswith(("model.layers.", "model.norm.")):
            llava["model.language_model." + name[len("model."):]] = v
        elif name.startswith("model.vision_tower.vision_model."):
            llava[name] = v
        elif name.startswith("model.mm_vision_projector."):
            i, rest = name[len("model.mm_vision_projector."):].split(".", 1)
            llava[f"model.multi_modal_projector.linear_{ {'0': 1, '2': 2}[i]}.{rest}"] = v
        elif name.startswith(video_pre):
            want["video_branch.safetensors"][name] = v
        elif name.startswith(audio_pre):
            want["audio_branch.safetensors"][name] = v
        else:
            check(False, f"checkpoint tensor {name}: this check does not know where it goes")
    C = ckv["model.vision_tower.vision_model.embeddings.class_embedding"].shape[0]
    llava["model.vision_tower.vision_model.post_layernorm.weight"] = np.ones(C, np.float32)
    llava["model.vision_tower.vision_model.post_layernorm.bias"] = np.zeros(C, np.float32)

    present = set(os.listdir(export))
    shards = sorted(f for f in present if f.startswith("model-") and f.endswith(".safetensors"))
    for file, tensors in want.items():
        if not tensors:
            check(file not in present, f"{file} written for a branch the model lacks")
            continue
        if file == "model.safetensors" and shards:
            # sharded: every shard named in the index, the index naming each tensor's shard
            check(file not in present, "both model.safetensors and shards")
            index = json.load(open(os.path.join(export, "model.safetensors.index.json")))
            got, size = {}, 0
            for k, sh in enumerate(shards):
                check(sh == f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors", f"shard name {sh}")
                meta, part = read_st(os.path.join(export, sh))
                check(meta is not None and meta.get("format") == "pt", f"{sh}: __metadata__ {meta}")
                for name, e in part.items():
                    check(index["weight_map"].get(name) == sh, f"index puts {name} elsewhere")
                    size += len(e[2])
                got.update(part)
            check(sorted(index["weight_map"]) == sorted(got), "index names other tensors")
            check(index["metadata"]["total_size"] == size, "index total_size")
            print(f"export_hf_check: {len(shards)} shards")
        else:
            if not check(file in present, f"{file} missing"):
                continue
            meta, got = read_st(os.path.join(export, file))
            check(meta is not None and meta.get("format") == "pt",
                  f"{file}: __metadata__ {meta}, expected format pt")
        extra, missing = sorted(set(got) - set(tensors)), sorted(set(tensors) - set(got))
        check(not extra, f"{file}: unexpected tensors {extra[:4]}")
        check(not missing, f"{file}: missing tensors {missing[:4]}")
        for name in sorted(set(got) & set(tensors)):
            dtype, shape, raw = got[name]
            exp = tensors[name]
            if not check(dtype == dt, f"{file}: {name} is {dtype}, expected {dt}"):
                continue
            if not check(shape == exp.shape, f"{file}: {name} shape {shape}, expected {exp.shape}"):
                continue
            g, e = decode(dtype, shape, raw), round_to(dt, exp)
            check(np.array_equal(g.view(np.uint32), e.view(np.uint32)) or np.array_equal(g, e),
                  f"{file}: {name} values differ (max |diff| {np.abs(g - e).max():g})")
        print(f"export_hf_check: {file}: {len(got)} tensors checked")

    # config.json
    c = json.load(open(os.path.join(export, "config.json")))
    tc, vc = c["text_config"], c["vision_config"]
    enc = img["encoder"]
    sel = enc["select_layer"]
    blocks = sel if sel >= 0 else enc["layers"] + 1 + sel
    n_blocks = len({n.split(".")[5] for n in llava if ".encoder.layers." in n})
    expect = {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": cfg["tokens"]["im_patch"], "image_seq_length": img["tokens"],
        "projector_hidden_act": "gelu", "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
        "text_config.model_type": "llama", "text_config.vocab_size": V0 + 9,
        "text_config.hidden_size": llm["dim"], "text_config.intermediate_size": llm["ffn"],
        "text_config.num_hidden_layers": llm["layers"],
        "text_config.num_attention_heads": llm["heads"],
        "text_config.num_key_value_heads": llm["kv_heads"],
        "text_config.max_position_embeddings": llm["max_seq"],
        "text_config.rms_norm_eps": llm["norm_eps"], "text_config.rope_theta": llm["rope_theta"],
        "text_config.hidden_act": "silu", "text_config.tie_word_embeddings": False,
        "text_config.dtype": torch_dt,
        "vision_config.model_type": "clip_vision_model", "vision_config.hidden_size": enc["width"],
        "vision_config.intermediate_size": enc["mlp"], "vision_config.num_hidden_layers": blocks,
        "vision_config.num_attention_heads": enc["heads"], "vision_config.image_size": img["size"],
        "vision_config.patch_size": enc["patch"], "vision_config.hidden_act": "quick_gelu",
        "vision_config.layer_norm_eps": enc["norm_eps"], "vision_config.num_channels": 3,
    }
    for key, v in expect.items():
        node = c
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        check(node == v, f"config.json {key} = {node!r}, expected {v!r}")
    # transformers 5 type-checks configs strictly: a float field written as 1 is an int there
    # (CLIPVisionConfig.initializer_factor once was)
    floats = {"text_config": ("rms_norm_eps", "rope_theta", "initializer_range", "attention_dropout"),
              "vision_config": ("layer_norm_eps", "initializer_range", "initializer_factor",
                                "attention_dropout")}
    for sub, keys in floats.items():
        for key in keys:
            check(isinstance(c[sub].get(key), float), f"config.json {sub}.{key} = {c[sub].get(key)!r} is not a float")
    check(isinstance(tc["rope_parameters"]["rope_theta"], float), "rope_parameters.rope_theta is not a float")
    check(blocks == n_blocks, f"vision_config counts {blocks} blocks, the weights hold {n_blocks}")
    check((img["size"] // enc["patch"]) ** 2 == img["tokens"], "image tokens = patches, CLS dropped")
    tok_llm = llava["model.language_model.embed_tokens.weight"]
    check(tok_llm.shape == (V0 + 9, llm["dim"]), "embed_tokens (V0 + 9, C)")

    # tokenizer files
    with open(opts["--tokenizer"], "rb") as f, open(os.path.join(export, "tokenizer.model"), "rb") as g:
        check(f.read() == g.read(), "tokenizer.model is not a copy of the tokenizer")
    tk = json.load(open(os.path.join(export, "tokenizer_config.json")))
    dec = tk["added_tokens_decoder"]
    texts = {"im_patch": "<im_patch>", "im_start": "<im_start>", "im_end": "<im_end>",
             "vi_patch": "<vi_patch>", "vi_start": "<vi_start>", "vi_end": "<vi_end>",
             "so_patch": "<so_patch>", "so_start": "<so_start>", "so_end": "<so_end>"}
    for key, text in texts.items():
        e = dec.get(str(cfg["tokens"][key]), {})
        check(e.get("content") == text and e.get("special") is True,
              f"tokenizer_config: id {cfg['tokens'][key]} is {e}, expected special {text}")
    for i, text in ((0, "<unk>"), (1, "<s>"), (2, "</s>")):
        check(dec.get(str(i), {}).get("content") == text, f"tokenizer_config: id {i} is not {text}")
    check(tk["bos_token"] == "<s>" and tk["eos_token"] == "</s>" and tk["unk_token"] == "<unk>",
          "tokenizer_config special tokens")
    check(tk["tokenizer_class"] == "LlamaTokenizer" and tk["legacy"] is True and
          tk["add_bos_token"] is True, "tokenizer_config class / legacy / add_bos_token")
    check(sorted(tk["additional_special_tokens"]) == sorted(texts.values()),
          "additional_special_tokens")
    tmpl = tk["chat_template"]
    for piece in ("A chat between a curious human", "\\n\\n###", "' Human: '",
                  "\\n### Assistant:", "<im_start><im_patch><im_end>"):
        check(piece in tmpl, f"chat_template lacks {piece!r}")
    # The processor adds BOS when it tokenizes the rendered text; one in the template doubles it.
    check("bos_token" not in tmpl and "<s>" not in tmpl, "chat_template writes a BOS of its own")
    check(json.load(open(os.path.join(export, "chat_template.json")))["chat_template"] == tmpl,
          "chat_template.json differs from tokenizer_config's")
    try:  # rendered as transformers renders it, when Jinja is there (Debian python3-jinja2)
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        print("export_hf_check: chat template not rendered (no jinja2)")
    else:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        render = lambda msgs: env.from_string(tmpl).render(messages=msgs, bos_token="<s>",
                                                           add_generation_prompt=True)
        system = ("A chat between a curious human and an artificial intelligence assistant. The "
                  "assistant gives helpful, detailed, and polite answers to the human's questions.")
        vi = "<vi_start>" + "<vi_patch>" * cfg["video"]["tokens"] + "<vi_end>" if "video" in cfg else ""
        cases = [
            ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Where is the cat? "}]}],
             system + "\n\n### Human: <im_start><im_patch><im_end>\nWhere is the cat?\n### Assistant:"),
            ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": [{"type": "text", "text": "When?"}, {"type": "video"}]}],
             system + "\n\n### Human: Hi\n### Assistant: Hello.\n### Human: " + vi +
             ("\n" if vi else "") + "When?\n### Assistant:"),
            ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             "Be brief.\n\n### Human: Hi\n### Assistant:"),
        ]
        for msgs, expect in cases:
            got = render(msgs)
            check(got == expect, f"chat template renders {got!r}, expected {expect!r}")
    sm = json.load(open(os.path.join(export, "special_tokens_map.json")))
    check(len(sm["additional_special_tokens"]) == 9 and sm["bos_token"]["content"] == "<s>",
          "special_tokens_map.json")
    gen = json.load(open(os.path.join(export, "generation_config.json")))
    check(gen.get("bos_token_id") == 1 and gen.get("eos_token_id") == 2, "generation_config ids")
    pc = json.load(open(os.path.join(export, "processor_config.json")))
    check(pc.get("image_token") == "<im_patch>" and pc.get("patch_size") == enc["patch"] and
          pc.get("vision_feature_select_strategy") == "default", "processor_config.json")
    pp = json.load(open(os.path.join(export, "preprocessor_config.json")))
    check(pp.get("size") == {"height": img["size"], "width": img["size"]} and pp.get("do_pad") is True
          and pp.get("resample") == 3 and
          np.allclose(pp["image_mean"], [0.48145466, 0.4578275, 0.40821073]) and
          np.allclose(pp["image_std"], [0.26862954, 0.26130258, 0.27577711]),
          "preprocessor_config.json")

    # branch configs
    for branch, key, n_tok in (("video", "vi", "video"), ("audio", "so", "audio")):
        path = os.path.join(export, f"{branch}_branch.json")
        if n_tok not in cfg:
            check(not os.path.exists(path), f"{branch}_branch.json for a missing branch")
            continue
        if not check(os.path.exists(path), f"{branch}_branch.json missing"):
            continue
        b = json.load(open(path))
        check(b["weights"] == f"{branch}_branch.safetensors" and b["dtype"] == torch_dt,
              f"{branch}_branch.json weights / dtype")
        check(b["tokens_per_item"] == cfg[n_tok]["tokens"], f"{branch}_branch.json tokens_per_item")
        for part in ("patch", "start", "end"):
            check(b["tokens"][part]["id"] == cfg["tokens"][f"{key}_{part}"] and
                  b["tokens"][part]["content"] == f"<{key}_{part}>", f"{branch} token {part}")
        check(b["encoder"]["hidden_size"] == cfg[n_tok]["encoder"]["width"],
              f"{branch}_branch.json encoder width")
    check("README.md" in present, "README.md missing")
    known = {"model.safetensors", "video_branch.safetensors", "audio_branch.safetensors",
             "config.json", "generation_config.json", "preprocessor_config.json",
             "processor_config.json", "chat_template.json", "tokenizer.model", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "video_branch.json",
             "audio_branch.json", "README.md"}
    if shards:
        known |= set(shards) | {"model.safetensors.index.json"}
    check(not (present - known), f"unexpected files {sorted(present - known)}")

    for f in fails:
        print("FAIL:", f)
    print(f"export_hf_check: {export} ({dt}): {'ok' if not fails else f'{len(fails)} problems'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
