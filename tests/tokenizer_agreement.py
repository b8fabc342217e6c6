#!/usr/bin/python3
"""tokenizer_agreement.py: reference answers of python3-sentencepiece for tests/test_tokenizer.c.

    /usr/bin/python3 tests/tokenizer_agreement.py --model tests/fixtures/tokenizer/test_bpe.model \\
        --workdir DIR --out DIR/agreement.bin

Generates thousands of deterministic strings (captions, boxes, time spans, the Vicuna template,
digits, accents, CJK, emoji, characters outside the vocabulary, whitespace runs, tabs,
newlines, NUL, malformed UTF-8, long texts), encodes each with sentencepiece (ids) and decodes
the ids back, decodes random id sequences, and writes it all to --out for the C test to
compare token for token. Besides the model given, it checks variants written into --workdir:
the model with add_dummy_prefix off, with remove_extra_whitespaces on, with some merged pieces
marked UNUSED (edited protobuf bytes), and a small BPE model trained here without byte
fallback but with user-defined symbols. Exit status 3 when python3-sentencepiece is missing.

Output (little-endian): "DSTOKAG1", u32 model count, then per model:
  u32+bytes path, 64 bytes SHA-256 hex of the file, i32 bos, eos, unk, pad, piece count,
  per piece: u32+bytes text, u8 kind (1 normal, 2 unknown, 3 control, 5 unused, 6 byte),
  u32 added-token count, per token u32+bytes text (register these in order for flag 2),
  u32 case count, per case: u8 kind ('E' encode text, 'D' decode ids), u8 flags (1: add BOS,
  2: with the added tokens), for 'E' u32+bytes text; then u32 id count, i32 ids,
  u32+bytes expected decode of those ids.
"""
import argparse
import hashlib
import os
import random
import re
import struct
import sys

try:
    import sentencepiece as spm
except ImportError:
    print("tokenizer_agreement.py: python3-sentencepiece is missing", file=sys.stderr)
    sys.exit(3)

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_model as mk  # noqa: E402  (the corpus generator of the fixture)

GROUNDING_TOKENS = ["<im_patch>", "<im_start>", "<im_end>", "<vi_patch>", "<vi_start>",
                    "<vi_end>", "<so_patch>", "<so_start>", "<so_end>"]

ASCII = [chr(c) for c in range(32, 127)]
ACCENTED = list("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÉÎÕÜßœŒłŁřŘšŠžŽ")
CJK = list("一二三四五六七八九十人大小中上下日月山水火木金土天地猫狗鸟图片视频声音东京北京上海")
EMOJI = ["😀", "🐱", "🚲", "👍", "👍🏽", "🎵", "❤️", "🇯🇵", "👨‍👩‍👧", "🤖", "🔥", "✨"]
OTHER = list("ΑΒΓαβγЖжЩщ→←…—–“”‘’€£¥°×÷±≤≥∞√∑∏") + ["\u0301", "\u200d", "\ufeff", "\u00a0",
                                                    "\u2581", "\ufffd", "\u3000", "\u2028"]
WS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "   ", " \t", "\u2581"]


def rare_char(rng):
    """A code point most likely outside the 2000-piece vocabulary (byte fallback)."""
    ranges = [(0x0100, 0x024F), (0x0370, 0x03FF), (0x0590, 0x06FF), (0x0900, 0x097F),
              (0x0E00, 0x0E7F), (0x1100, 0x11FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0x1F300, 0x1FAFF), (0x10000, 0x1007F),
              (0x20000, 0x2A6DF), (0xF0000, 0xF00FF)]
    lo, hi = rng.choice(ranges)
    return chr(rng.randint(lo, hi))


def soup(rng, n):
    pools = [ASCII, ASCII, ASCII, ACCENTED, CJK, EMOJI, OTHER, WS]
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            out.append(rare_char(rng))
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def whitespace_case(rng):
    words = [rng.choice(mk.WORDS) for _ in range(rng.randint(0, 5))]
    parts = [rng.choice(WS) * rng.randint(0, 3)]
    for w in words:
        parts.append(w)
        parts.append(rng.choice(WS) * rng.randint(1, 4))
    s = "".join(parts)
    if rng.random() < 0.3:
        s = s.strip(" ")
    return s


def structured(rng):
    k = rng.randrange(6)
    if k == 0:
        return ", ".join(mk.box(rng) for _ in range(rng.randint(1, 3)))
    if k == 1:
        return "The event happens at %s and %s." % (mk.span(rng), mk.span(rng))
    if k == 2:
        return ("A chat between a curious human and an artificial intelligence assistant.\n\n"
                "### Human: %s\n### Assistant: %s\n### " % (mk.sentence(rng), mk.caption(rng)))
    if k == 3:
        return "".join(rng.choice("0123456789., -%") for _ in range(rng.randint(1, 40)))
    if k == 4:
        return str(rng.randrange(10 ** rng.randint(1, 30)))
    return "%s %s %s" % (mk.number(rng), rng.choice(mk.WORDS), mk.number(rng))


def invalid_utf8(rng):
    """Bytes mixing text with malformed UTF-8 (stray continuations, truncated, overlong,
    surrogates, beyond U+10FFFF, 0xFE/0xFF)."""
    bad = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\x81", b"\xe0\x80\xaf", b"\xed\xa0\x80",
           b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xe3\x81",
           b"\xf0\x9f\x98", b"\xc3", b"\xe2\x96", b"\xef\xbf\xbd"]
    parts = []
    for _ in range(rng.randint(1, 8)):
        if rng.random() < 0.5:
            parts.append(rng.choice(bad))
        else:
            parts.append(soup(rng, rng.randint(0, 6)).encode("utf-8"))
    return b"".join(parts)


def gen_texts(seed, n_main):
    """Deterministic list of texts (str, or bytes for malformed UTF-8)."""
    rng = random.Random(seed)
    texts = ["", " ", "  ", "\n", "\t", "a", " a", "a ", " a ", "Hello world", "hello  world",
             "<s>", "</s>", "<unk>", "<0x41>", "<im_start>", "\u2581", "\u2581\u2581a",
             "\ufffd", "a\x00b", "\x00", "   leading", "trailing   ", "\u6771\u4eac",
             "ʬꙮ𓀀", "😀😀😀", "[0.123, 0.456, 0.789, 0.912]", "{0.09, 0.15}",
             "### Human: What is in the image?\n### Assistant:"]
    texts += [chr(c) for c in range(1, 128)]
    while len(texts) < n_main:
        k = rng.randrange(100)
        if k < 25:
            texts.append(mk.line(rng))
        elif k < 45:
            texts.append(soup(rng, rng.randint(1, 60)))
        elif k < 58:
            texts.append(whitespace_case(rng))
        elif k < 70:
            texts.append(structured(rng))
        elif k < 80:
            texts.append("".join(rare_char(rng) for _ in range(rng.randint(1, 12))))
        elif k < 88:
            texts.append(invalid_utf8(rng))
        elif k < 98:
            texts.append(mk.sentence(rng) + rng.choice(WS) + soup(rng, rng.randint(1, 20)))
        else:
            parts = []
            target = rng.randint(2000, 20000)
            while sum(len(p) for p in parts) < target:
                parts.append(rng.choice([mk.line(rng), soup(rng, 50), whitespace_case(rng)]))
            texts.append(rng.choice(["\n", " ", ""]).join(parts))
    return texts


def added_text(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        k = rng.randrange(5)
        if k == 0:
            parts.append(rng.choice(GROUNDING_TOKENS))
        elif k == 1:
            parts.append(rng.choice(GROUNDING_TOKENS[1::3]) +
                         rng.choice(GROUNDING_TOKENS[0::3]) * rng.randint(1, 4) +
                         rng.choice(GROUNDING_TOKENS[2::3]))
        elif k == 2:
            parts.append(rng.choice(["\n", " ", "  ", "<", ">", "<im_", "<im_end", "so_end>"]))
        elif k == 3:
            parts.append(mk.caption(rng))
        else:
            parts.append(soup(rng, rng.randint(0, 10)))
    return "".join(parts)


def added_expected(sp, text, base):
    """Split on the added tokens (leftmost, longest first) and encode each stretch on its own;
    decode each stretch of sentencepiece ids on its own."""
    alt = "|".join(re.escape(t) for t in sorted(GROUNDING_TOKENS, key=len, reverse=True))
    ids, dec, run = [], [], []
    pos = 0
    for m in re.finditer(alt, text):
        seg = sp.encode(text[pos:m.start()])
        ids += seg
        run += seg
        dec.append(sp.decode(run))
        run = []
        ids.append(base + GROUNDING_TOKENS.index(m.group(0)))
        dec.append(m.group(0))
        pos = m.end()
    seg = sp.encode(text[pos:])
    ids += seg
    dec.append(sp.decode(run + seg))
    return ids, "".join(dec)


def piece_kind(sp, i):
    if sp.is_unknown(i):
        return 2
    if sp.is_control(i):
        return 3
    if sp.is_unused(i):
        return 5
    if sp.is_byte(i):
        return 6
    return 1


def u32(n):
    return struct.pack("<I", n)


def blob(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    return u32(len(b)) + b


def write_model(out, path, sp, cases, added=()):
    data = open(path, "rb").read()
    out.append(blob(path))
    out.append(hashlib.sha256(data).hexdigest().encode("ascii"))
    n = sp.get_piece_size()
    out.append(struct.pack("<5i", sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id(), n))
    for i in range(n):
        out.append(blob(sp.id_to_piece(i)) + bytes([piece_kind(sp, i)]))
    out.append(u32(len(added)))
    for t in added:
        out.append(blob(t))
    out.append(u32(len(cases)))
    for kind, flags, text, ids, dec in cases:
        out.append(kind.encode("ascii") + bytes([flags]))
        if kind == "E":
            out.append(blob(text))
        out.append(u32(len(ids)) + struct.pack("<%di" % len(ids), *ids))
        out.append(blob(dec))


def encode_cases(sp, texts, rng, n_decode, bos_every=7):
    cases = []
    for i, t in enumerate(texts):
        flags = 1 if i % bos_every == 3 else 0
        ids = sp.encode(t, add_bos=bool(flags & 1))
        cases.append(("E", flags, t, ids, sp.decode(ids)))
    n = sp.get_piece_size()
    ws = [i for i in range(n) if sp.id_to_piece(i).startswith("\u2581")]
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    for _ in range(n_decode):
        ids = []
        for _ in range(rng.randint(0, 24)):
            k = rng.randrange(10)
            if k < 3 and byte_ids:
                ids.append(rng.choice(byte_ids))
            elif k < 5:
                ids.append(rng.choice(ws))
            elif k < 6:
                ids.append(rng.choice(special))
            else:
                ids.append(rng.randrange(n))
        cases.append(("D", 0, None, ids, sp.decode(ids)))
    return cases


# ---- protobuf editing for the variants (the wire format is simple enough to edit by hand)

def varint(b, i):
    shift = value = 0
    while True:
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return value, i


def enc_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def top_fields(b):
    """(field number, raw bytes of the whole field, payload of length-delimited fields)"""
    i = 0
    while i < len(b):
        start = i
        key, i = varint(b, i)
        wt = key & 7
        if wt == 0:
            _, i = varint(b, i)
            payload = None
        elif wt == 2:
            n, i = varint(b, i)
            payload = b[i:i + n]
            i += n
        elif wt == 5:
            i += 4
            payload = None
        elif wt == 1:
            i += 8
            payload = None
        else:
            raise ValueError("unexpected wire type %d" % wt)
        yield key >> 3, b[start:i], payload


def edit(model, piece_extra=None, normalizer_extra=b""):
    """Re-emits the model, appending bytes to chosen pieces (a later value of a field wins)
    and to the normalizer spec."""
    out = bytearray()
    idx = 0
    for num, raw, payload in top_fields(model):
        extra = b""
        if num == 1:
            extra = piece_extra(idx, payload) if piece_extra else b""
            idx += 1
        elif num == 3:
            extra = normalizer_extra
        if extra:
            body = payload + extra
            out += enc_varint((num << 3) | 2) + enc_varint(len(body)) + body
        else:
            out += raw
    return bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=3200, help="texts for the main model")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    main_sp = spm.SentencePieceProcessor(model_file=args.model)
    texts = gen_texts(1234, args.count)
    rng = random.Random(99)
    models = []

    cases = encode_cases(main_sp, texts, rng, 600)
    base = main_sp.get_piece_size()
    for i in range(400):
        t = added_text(rng)
        ids, dec = added_expected(main_sp, t, base)
        cases.append(("E", 2 | (1 if i % 5 == 0 else 0), t, ([main_sp.bos_id()] if i % 5 == 0
                                                              else []) + ids, dec))
    models.append((args.model, main_sp, cases, GROUNDING_TOKENS))

    model = open(args.model, "rb").read()
    small = texts[:400]

    def variant(name, data):
        path = os.path.join(args.workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        sp = spm.SentencePieceProcessor(model_file=path)
        models.append((path, sp, encode_cases(sp, small, rng, 100), ()))

    variant("no_dummy_prefix.model", edit(model, normalizer_extra=b"\x18\x00"))
    variant("remove_extra_ws.model", edit(model, normalizer_extra=b"\x20\x01"))
    # Every third multi-character piece UNUSED: merges still go through them, then
    # SentencePiece splits them back along the merge that made them.
    n_pieces = main_sp.get_piece_size()
    unused = {i for i in range(n_pieces)
              if not (main_sp.is_byte(i) or main_sp.is_control(i) or main_sp.is_unknown(i))
              and len(main_sp.id_to_piece(i)) > 1 and i % 3 == 0}
    variant("unused.model", edit(model, piece_extra=lambda i, p: b"\x18\x05" if i in unused
                                 else b""))
    # Without byte fallback (runs of unknown characters become one <unk>) and with
    # user-defined symbols (kept whole, never merged).
    udef = os.path.join(args.workdir, "no_byte_fallback.model")
    opts = dict(mk.LLAMA_OPTIONS, vocab_size=600, byte_fallback=False,
                user_defined_symbols=["<box>", "</box>", "@@", "\u2581\u2581x"],
                control_symbols=["<ctrl>"])
    mk.train(udef, **opts)
    sp = spm.SentencePieceProcessor(model_file=udef)
    extra = [t.replace("a", "<box>", 1).replace("e", "@@", 1) for t in small
             if isinstance(t, str)]
    extra += ["<box>0.1, 0.2</box>", "@@@", "  x", "<ctrl>", "\u2581\u2581x"]
    models.append((udef, sp, encode_cases(sp, small + extra, rng, 100), ()))

    out = [b"DSTOKAG1", u32(len(models))]
    total = 0
    for path, sp, cs, added in models:
        write_model(out, path, sp, cs, added)
        total += len(cs)
    with open(args.out, "wb") as f:
        f.write(b"".join(out))
    print("tokenizer_agreement.py: %d cases over %d models" % (total, len(models)))


if __name__ == "__main__":
    main()
