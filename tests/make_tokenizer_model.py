#!/usr/bin/python3
"""make_tokenizer_model.py: trains the small SentencePiece BPE test tokenizer.

Writes tests/fixtures/tokenizer/test_bpe.model (committed) with Llama's tokenizer options
(BPE, byte fallback, split digits, identity normalizer, dummy prefix, no extra-whitespace
removal, whitespace-only pieces, unk/bos/eos = 0/1/2, no pad) on a deterministic generated
corpus, so that groundc's C tokenizer can be checked token for token against
python3-sentencepiece (Debian, 0.1.97) without shipping Llama's 500 KB model.

    /usr/bin/python3 tests/make_tokenizer_model.py            # writes the committed fixtures
    /usr/bin/python3 tests/make_tokenizer_model.py --out DIR  # writes them into DIR

It also writes test_unigram.model, a tiny unigram model (identity normalizer, also
committed), which the tests use to check that non-BPE models are refused. Running the script
twice gives the same bytes: the corpus comes from a seeded generator, training is
single-threaded and unshuffled, and the trainer runs in a temporary folder with relative paths
(the model records its input path and prefix). tests/tokenizer_agreement.py imports the corpus
generator and the options from here.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile

try:
    import sentencepiece as spm
except ImportError:
    sys.exit("make_tokenizer_model.py: python3-sentencepiece is missing (apt-get install "
             "python3-sentencepiece)")

WORDS = ("a an the man woman child dog cat bird horse car bus train bicycle table chair cup "
         "plate bowl street road field beach mountain river lake sky tree flower grass house "
         "building window door kitchen room bed sofa picture video sound music voice noise "
         "is are was were has have holds holding sits sitting stands standing runs running "
         "walks walking rides riding plays playing eats eating looks looking talks talking "
         "red blue green yellow black white small large young old happy brown wooden metal "
         "in on at with near under behind next to of and while during before after then "
         "left right top bottom middle front back corner side center region object person "
         "describe what where when who which how many there this that these those it its "
         "can you please tell me about image frame clip moment event scene happens shown "
         "first second third last begins ends starts finishes loud quiet bright dark").split()
CAPTION_SUBJECTS = ["A man", "A woman", "Two children", "A dog", "A group of people",
                    "An old car", "A small cat", "The person on the left", "A red bus"]
CAPTION_VERBS = ["is riding", "is holding", "stands next to", "is sitting on", "walks along",
                 "plays with", "looks at", "is eating", "runs across"]
CAPTION_OBJECTS = ["a bicycle.", "a wooden table.", "the street.", "a cup of coffee.",
                   "the beach at sunset.", "a large tree.", "a blue umbrella.", "the river."]
UNICODE_WORDS = ["café", "naïve", "résumé", "Zürich", "São Paulo", "façade", "jalapeño",
                 "crème brûlée", "Ångström", "piñata", "Dvořák", "Łódź", "smörgåsbord",
                 "Ελληνικά", "Москва", "привет мир", "東京", "一只猫坐在桌子上", "图片中的人",
                 "こんにちは", "ありがとう", "안녕하세요", "😀", "🐱", "🚲", "👍🏽", "🎵",
                 "→", "…", "“quoted”", "‘single’", "€5", "£3", "¥100", "°C", "×", "—"]
# Characters seen once or twice: below the character coverage, so byte fallback encodes them.
RARE = ["ʬ", "ꙮ", "𓀀", "𝄞", "ᚠ", "ⴰ", "ꯀ", "𐍈", "ᓀ", "ꕥ", "ꡀ", "ᜀ"]


def box(rng):
    v = sorted(rng.random() for _ in range(4))
    x1, x2 = sorted((v[0], v[2]))
    y1, y2 = sorted((v[1], v[3]))
    return "[%.3f, %.3f, %.3f, %.3f]" % (x1, y1, x2, y2)


def span(rng):
    a, b = sorted((rng.random(), rng.random()))
    return "{%.2f, %.2f}" % (a, b)


def sentence(rng, n_min=4, n_max=14):
    words = [rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ","])


def caption(rng):
    return "%s %s %s" % (rng.choice(CAPTION_SUBJECTS), rng.choice(CAPTION_VERBS),
                         rng.choice(CAPTION_OBJECTS))


def number(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10))
    if kind == 1:
        return str(rng.randrange(100000))
    if kind == 2:
        return "%.2f" % (rng.random() * 100)
    if kind == 3:
        return str(rng.randrange(1900, 2030))
    return "%d%%" % rng.randrange(101)


def line(rng):
    kind = rng.randrange(10)
    if kind == 0:
        return sentence(rng)
    if kind == 1:
        return caption(rng)
    if kind == 2:
        return "The %s is at %s." % (rng.choice(WORDS), box(rng))
    if kind == 3:
        return "It happens during %s in the video." % span(rng)
    if kind == 4:
        return "### Human: %s\n### Assistant: %s" % (sentence(rng), caption(rng))
    if kind == 5:
        return " ".join(number(rng) for _ in range(rng.randint(1, 6)))
    if kind == 6:
        return "%s %s %s" % (sentence(rng, 2, 5), rng.choice(UNICODE_WORDS), sentence(rng, 2, 5))
    if kind == 7:
        return "Can you describe the region %s in this image? %s" % (box(rng), caption(rng))
    if kind == 8:
        ws = rng.choice(["  ", "   ", "\t", " \t ", "    "])
        return ws.join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    return "%s %s" % (rng.choice(UNICODE_WORDS), rng.choice(UNICODE_WORDS))


def corpus(n_lines=20000, seed=20240501):
    rng = random.Random(seed)
    lines = [line(rng) for _ in range(n_lines)]
    # The template's system prompt, as the reference writes it.
    system = ("A chat between a curious human and an artificial intelligence assistant. The "
              "assistant gives helpful, detailed, and polite answers to the human's questions.")
    lines += [system] * 50
    for i, ch in enumerate(RARE):
        lines[(i * 7919) % n_lines] += " " + ch
    return "\n".join(l.replace("\n", " ") for l in lines) + "\n"


LLAMA_OPTIONS = dict(
    model_type="bpe",
    vocab_size=2000,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    character_coverage=0.9995,
    max_sentencepiece_length=16,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    split_by_number=True,
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    minloglevel=2,
)


def train(out_path, **options):
    """Trains in a temporary folder with relative paths and copies the model to out_path."""
    work = tempfile.mkdtemp(prefix="groundc-spm-")
    cwd = os.getcwd()
    out_path = os.path.abspath(out_path)
    try:
        os.chdir(work)
        with open("corpus.txt", "w", encoding="utf-8") as f:
            f.write(corpus())
        spm.SentencePieceTrainer.train(input="corpus.txt", model_prefix="model", **options)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        shutil.copyfile("model.model", out_path)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "fixtures", "tokenizer"),
                    help="folder for test_bpe.model and test_unigram.model")
    args = ap.parse_args()
    train(os.path.join(args.out, "test_bpe.model"), **LLAMA_OPTIONS)
    train(os.path.join(args.out, "test_unigram.model"),
          **dict(LLAMA_OPTIONS, model_type="unigram", vocab_size=300, byte_fallback=False))


if __name__ == "__main__":
    main()
