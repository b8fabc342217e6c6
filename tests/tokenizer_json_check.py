#!/usr/bin/python3
"""tokenizer_json_check.py: the tokenizer.json of groundc's HF export against sentencepiece.

    /usr/bin/python3 tests/tokenizer_json_check.py --groundc BIN --ckpt CKPT \\
        --model tests/fixtures/tokenizer/test_bpe.model --node NODE_DIR --work DIR

Exports CKPT (`groundc export --format hf`) with the model and with two variants of it written
into DIR (dummy prefix off; extra-whitespace removal on: same pieces, edited options), loads each
export's tokenizer.json + tokenizer_config.json with tokenizers.js (NODE_DIR holds
tests/hf_tokenizer installed; run.mjs runs there) and requires, token for token:
  * encode(text) == [<s>] + python3-sentencepiece's ids, the text split on the 9 added tokens
    and each stretch encoded on its own (groundc's and legacy HF Llama's rule), for thousands of
    strings from tests/tokenizer_agreement.py's generator (captions, boxes, spans, whitespace
    runs, tabs, newlines, NUL, accents, CJK, emoji, byte-fallback characters, long texts) and
    texts mixing the added tokens;
  * decode(ids) == sentencepiece's decode for the texts without added tokens.
Left out, as HF differs from SentencePiece there by design: texts holding "<s>", "</s>" or
"<unk>" (HF matches them as special tokens) and malformed UTF-8 (a JS string cannot hold it).
Left out of the decode check only: U+FEFF (tokenizers.js's TextDecoder drops it at the start of
a run of byte pieces; Rust's tokenizers keeps it) and, for extra-whitespace removal, texts that
start with a literal U+2581 (SentencePiece then drops one U+2581 from each leading piece; HF's
Strip decoder drops one space from the joined text).
"""
import argparse
import json
import os
import random
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_agreement as ta  # noqa: E402  (exits 3 without python3-sentencepiece)

SPECIAL_TEXT = ("<s>", "</s>", "<unk>")


def cases_for(sp, texts, strips_all=False):
    cases = []
    for t in texts:
        if not isinstance(t, str) or any(s in t for s in SPECIAL_TEXT):
            continue
        ids, _ = ta.added_expected(sp, t, sp.get_piece_size())
        plain = not any(g in t for g in ta.GROUNDING_TOKENS) and "\ufeff" not in t and not (
            strips_all and t.lstrip(" ").startswith("\u2581"))
        cases.append({"text": t, "want": [sp.bos_id()] + ids,
                      "decode_ids": ids if plain and ids else None,
                      "want_decoded": sp.decode(ids) if plain and ids else None})
    return cases


def check(name, args, sp, model_path, cases):
    out = os.path.join(args.work, "hf_" + name)
    r = subprocess.run([args.groundc, "export", args.ckpt, "--format", "hf", "--out", out,
                        "--tokenizer", model_path, "--force"], capture_output=True, text=True)
    if r.returncode:
        print(f"{name}: export failed: {r.stderr.strip()}")
        return 1
    case_path = os.path.join(args.work, name + "_cases.json")
    res_path = os.path.join(args.work, name + "_out.json")
    with open(case_path, "w") as f:
        json.dump([{"text": c["text"], "decode_ids": c["decode_ids"]} for c in cases], f)
    r = subprocess.run(["node", os.path.join(args.node, "run.mjs"), out, case_path, res_path],
                       capture_output=True, text=True, cwd=args.node)
    if r.returncode:
        print(f"{name}: tokenizers.js failed: {r.stderr.strip()[-2000:]}")
        return 1
    got = json.load(open(res_path))
    bad_enc = [(c, g) for c, g in zip(cases, got) if g["ids"] != c["want"]]
    bad_dec = [(c, g) for c, g in zip(cases, got)
               if c["decode_ids"] is not None and g["decoded"] != c["want_decoded"]]
    n_dec = sum(c["decode_ids"] is not None for c in cases)
    print(f"{name}: encode {len(cases) - len(bad_enc)}/{len(cases)} agree, "
          f"decode {n_dec - len(bad_dec)}/{n_dec} agree")
    for c, g in bad_enc[:5]:
        print(f"  encode {c['text'][:80]!r}: tokenizers.js "
              f"{[sp.id_to_piece(i) if i < sp.get_piece_size() else i for i in g['ids']][:30]} "
              f"sentencepiece {[sp.id_to_piece(i) if i < sp.get_piece_size() else i for i in c['want']][:30]}")
    for c, g in bad_dec[:5]:
        a, b = g["decoded"], c["want_decoded"]
        k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        print(f"  decode of {c['text'][:60]!r}: from char {k}: {a[k:k + 20]!r}, want {b[k:k + 20]!r}")
    return int(bool(bad_enc or bad_dec))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for a in ("--groundc", "--ckpt", "--model", "--node", "--work"):
        ap.add_argument(a, required=True)
    ap.add_argument("--count", type=int, default=3000)
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)  # node runs in --node
    os.makedirs(args.work, exist_ok=True)
    texts = ta.gen_texts(1234, args.count)
    rng = random.Random(5)
    texts += [ta.added_text(rng) for _ in range(400)]
    failed = 0
    sp = ta.spm.SentencePieceProcessor(model_file=args.model)
    failed += check("model", args, sp, args.model, cases_for(sp, texts))
    model = open(args.model, "rb").read()
    for name, extra in (("no_dummy_prefix", b"\x18\x00"), ("remove_extra_ws", b"\x20\x01")):
        path = os.path.join(args.work, name + ".model")
        with open(path, "wb") as f:
            f.write(ta.edit(model, normalizer_extra=extra))
        vsp = ta.spm.SentencePieceProcessor(model_file=path)
        failed += check(name, args, vsp, path,
                        cases_for(vsp, texts[:800] + texts[-100:], name == "remove_extra_ws"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
