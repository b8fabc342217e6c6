#!/usr/bin/env python3
"""hf_logits_check.py EXPORT_DIR --dump DUMP.safetensors [--tol 1e-3] [--device cuda|cpu]
hf_logits_check.py EXPORT_DIR --image IMG --prompt TEXT --logits F.npy [--tol 1e-3] [...]

For a machine with transformers (5.x) and torch; not run by ctest. Loads a `groundc export
--format hf` folder with LlavaForConditionalGeneration (every tensor must load: no missing,
unexpected or mis-shaped key), runs one image + prompt, and compares the logits with groundc's
within --tol (default 1e-3), in float32 (TF32 off, eager attention).

  --dump    from tests/test_export_hf_forward.c run with GROUNDC_EXPORT_HF_KEEP=DIR: the
            export is DIR/export, the dump DIR/dump.safetensors holds groundc's ids, the
            S x S image it saw and its logits.
  --image/--prompt/--logits
            from `groundc generate CKPT --raw --image IMG --prompt TEXT --logits-out F.npy
            --max-new-tokens 0`: TEXT verbatim after BOS, "<image>" standing for
            <im_start> <im_patch> x P <im_end>. The ids come from the export's tokenizer
            through LlavaProcessor (which expands <im_patch>); the pixels from PIL (pad to a
            square of the CLIP mean colour, bicubic resize: what groundc does, bit for bit),
            and the processor's own pixels are reported beside them.

Also renders the chat template for a one-image question and a two-turn chat and compares
with the Vicuna v0 text groundc trains on. Prints "skip: ..." and exits 77 when transformers
or torch is missing."""
import json, os, struct, sys

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The "
          "assistant gives helpful, detailed, and polite answers to the human's questions.")
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def read_st(path):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    types = {"F32": np.float32, "I32": np.int32, "U8": np.uint8}
    return {k: np.frombuffer(data[e["data_offsets"][0]:e["data_offsets"][1]],
                             types[e["dtype"]]).reshape(e["shape"])
            for k, e in header.items() if k != "__metadata__"}


def pil_pixels(path, size):
    """groundc's data/image.h path: RGB, expand2square with tuple(int(255 * mean)), PIL
    bicubic to size x size. Returns u8 (size, size, 3)."""
    import numpy as np
    from PIL import Image
    im = Image.open(path).convert("RGB")
    w, h = im.size
    side = max(w, h)
    sq = Image.new("RGB", (side, side), tuple(int(255 * m) for m in MEAN))
    sq.paste(im, ((side - w) // 2, (side - h) // 2))
    return np.asarray(sq.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def normalise(img_u8):
    import numpy as np
    x = (img_u8.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, S, S)


def sp_ids(export, prompt, cfg):
    """groundc's --raw ids without transformers: BOS, each stretch between <image> encoded by
    SentencePiece on its own, <image> as <im_start> <im_patch> x P <im_end>."""
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(export, "tokenizer.model"))
    dec = json.load(open(os.path.join(export, "tokenizer_config.json")))["added_tokens_decoder"]
    tid = {e["content"]: int(k) for k, e in dec.items()}
    out = [sp.bos_id()]
    for i, part in enumerate(prompt.split("<image>")):
        if i:
            out += [tid["<im_start>"]] + [tid["<im_patch>"]] * cfg["image_seq_length"] + [tid["<im_end>"]]
        out += sp.encode(part) if part else []
    return out


def check_template(tok, fails):
    before = len(fails)
    try:
        got = tok.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the cat?"}]}],
            tokenize=False)
    except Exception as e:  # no jinja2, or a template transformers rejects
        fails.append(f"chat template does not render: {e}")
        return
    want = SYSTEM + "\n\n### Human: <im_start><im_patch><im_end>\n" \
        "Where is the cat?\n### Assistant:"
    if got != want:
        fails.append(f"chat template: {got!r}, expected {want!r}")
    got = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Box?"}], tokenize=False)
    want = SYSTEM + "\n\n### Human: Hi\n### Assistant: Hello.\n### Human: " \
        "Box?\n### Assistant:"
    if got != want:
        fails.append(f"chat template (two turns): {got!r}, expected {want!r}")
    # Rendered, then tokenized as the processor does: one BOS, from add_bos_token.
    ids = tok(got)["input_ids"]
    if tok.bos_token_id is None or ids[:1] != [tok.bos_token_id] or ids[1:2] == [tok.bos_token_id]:
        fails.append(f"rendered prompt tokenizes to {ids[:4]}..., not one BOS then text")
    print("hf_logits_check: chat template rendered", "ok" if len(fails) == before else "WRONG")


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        raise SystemExit(__doc__)
    export = args[0]
    opts = dict(zip(args[1::2], args[2::2]))
    try:
        import numpy as np
        import torch
        import transformers
        from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration
    except ImportError as e:
        print(f"skip: hf_logits_check needs torch and transformers ({e})")
        return 77
    tol = float(opts.get("--tol", "1e-3"))
    device = opts.get("--device", "cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fails = []
    cfg = json.load(open(os.path.join(export, "config.json")))
    S = cfg["vision_config"]["image_size"]

    try:
        model, info = LlavaForConditionalGeneration.from_pretrained(
            export, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    except TypeError:  # transformers 4.x spells it torch_dtype
        model, info = LlavaForConditionalGeneration.from_pretrained(
            export, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(k):
            fails.append(f"loading: {k} {list(info[k])[:6]}")
    model.to(device).eval()
    print(f"hf_logits_check: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{device}; loaded {type(model).__name__} from {export}")

    try:
        tok = AutoTokenizer.from_pretrained(export)
        check_template(tok, fails)
    except Exception as e:
        tok = None
        fails.append(f"the tokenizer does not load: {e}")

    if "--dump" in opts:
        d = read_st(opts["--dump"])
        ids = torch.tensor(d["ids"].astype(np.int64))[None]
        img = d["image"]
        ref = d["logits"].astype(np.float64)
    else:
        ref = np.load(opts["--logits"]).astype(np.float64)
        img = pil_pixels(opts["--image"], S)
        text = opts["--prompt"].replace("<image>", "<im_start><im_patch><im_end>")
        try:
            proc = AutoProcessor.from_pretrained(export)
            from PIL import Image
            enc = proc(images=[Image.open(opts["--image"]).convert("RGB")], text=text,
                       return_tensors="pt")
            ids = enc["input_ids"]
            pd = np.abs(enc["pixel_values"][0].numpy() - normalise(img)[0]).max()
            print(f"hf_logits_check: the processor's pixels differ from groundc's by {pd:.3g} at "
                  "most (PIL-exact resize: 0; torchvision's: small)")
        except Exception as e:
            fails.append(f"LlavaProcessor fails: {e}")
            ids = torch.tensor([sp_ids(export, opts["--prompt"], cfg)])
            print("hf_logits_check: ids from sentencepiece instead of the processor")
    pixel_values = torch.tensor(normalise(img)).to(device)
    if ids.shape[1] != ref.shape[0]:
        fails.append(f"{ids.shape[1]} tokens from the HF tokenizer, groundc's logits have "
                     f"{ref.shape[0]} positions")
    else:
        with torch.no_grad():
            out = model(input_ids=ids.to(device), pixel_values=pixel_values)
        got = out.logits[0].double().cpu().numpy()
        err = np.abs(got - ref)
        t, v = np.unravel_index(err.argmax(), err.shape)
        print(f"hf_logits_check: {ref.shape[0]} positions x {ref.shape[1]} logits: max |diff| "
              f"{err.max():.3g} at position {t} id {v} (logit scale {np.abs(ref).max():.3g}); "
              f"argmax agrees at {int((got.argmax(-1) == ref.argmax(-1)).sum())}/{ref.shape[0]}")
        if not err.max() <= tol:
            fails.append(f"logits differ by {err.max():.3g} > {tol}")
    for f in fails:
        print("FAIL:", f)
    print("hf_logits_check:", "ok" if not fails else f"{len(fails)} problems")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
