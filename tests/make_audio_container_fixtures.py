#!/usr/bin/python3
# make_audio_container_fixtures.py: writes the compressed-container fixtures of
# tests/fixtures/audio/ that tests/test_audio.c decodes through data/audio.c's FFmpeg path
# (files libsndfile cannot open), and containers.safetensors with the ffmpeg tool's own decode
# of each, the independent reference (torchaudio.load's ffmpeg backend reads them the same way).
#
# Needs the ffmpeg and ffprobe commands (Debian package ffmpeg; made with 5.1) and numpy, nothing
# else; run from the repository root after tests/make_audio_fixtures.py (it encodes that
# script's lossless waveforms):
#   /usr/bin/python3 tests/make_audio_container_fixtures.py
# CI has no ffmpeg command: the committed files are what the test uses. Encoding is bitexact
# (no version strings, no random Matroska UIDs), so a rerun with the same FFmpeg gives the
# same bytes.
#
# Files:
#   tone_16k.m4a     AAC-LC 32 kb/s in MP4 (.m4a), from tone_16k.flac (16 kHz mono, 2.3 s)
#   stereo_44k.mp4   a 32x32 MPEG-4 video stream (stream 0, 5 fps) and an AAC-LC 96 kb/s
#                    stereo track (stream 1) from stereo_44k.flac (44.1 kHz, 1 s)
#   tone_16k.webm    Opus 24 kb/s in WebM (Matroska), from tone_16k.flac; Opus decodes at
#                    48 kHz whatever the input rate was
#   video_only.mp4   two 16x16 MPEG-4 frames and no audio at all (an error case)
#   containers.safetensors, per audio file <name> (tone_16k_m4a, stereo_44k_mp4, tone_16k_webm):
#     <name>.rate, .channels, .frames [1] I64: what `ffmpeg -i F -f f32le -acodec pcm_f32le -`
#         produces (rate and channels from ffprobe), frames = samples per channel
#     <name>.head, .tail [H, channels] F32: the first and last H = 256 frames of that decode
#     <name>.stride [1] I64 (S = 48), <name>.every [ceil(frames / S), channels] F32: frames 0,
#         S, 2S, ... (the whole decode would be about 1 MB; this keeps the fixtures small while
#         every part of the file is still checked sample by sample)
#     <name>.mono_sum, .mono_sumsq [1] F64: sum and sum of squares, in float64, of the mean of
#         the channels (float32, summed in channel order then divided, as groundc mixes down)
#         over all frames
import json
import os
import struct
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "audio")
HEAD, STRIDE = 256, 48

BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-map_metadata", "-1"]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def src(name):
    return os.path.join(OUT, name)


def make_files():
    ffmpeg("-i", src("tone_16k.flac"), "-c:a", "aac", "-b:a", "32k", *BITEXACT,
           src("tone_16k.m4a"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=5:duration=1", "-i",
           src("stereo_44k.flac"), "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-q:v", "20",
           "-c:a", "aac", "-b:a", "96k", *BITEXACT, src("stereo_44k.mp4"))
    ffmpeg("-i", src("tone_16k.flac"), "-c:a", "libopus", "-b:a", "24k", *BITEXACT,
           src("tone_16k.webm"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=16x16:rate=5", "-frames:v", "2", "-c:v", "mpeg4",
           *BITEXACT, src("video_only.mp4"))


def probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=sample_rate,channels", "-of", "json", path], check=True,
                         capture_output=True).stdout
    st = json.loads(out)["streams"][0]
    return int(st["sample_rate"]), int(st["channels"])


def cli_decode(path):
    """The ffmpeg tool's decode, exactly as the brief of the reference says:
    ffmpeg -i F -f f32le -acodec pcm_f32le -  (native rate and channels, interleaved)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-f", "f32le",
                          "-acodec", "pcm_f32le", "-"], check=True, capture_output=True).stdout
    rate, ch = probe(path)
    x = np.frombuffer(raw, dtype="<f4")
    assert x.size % ch == 0, (path, x.size, ch)
    return x.reshape(-1, ch), rate, ch


def mono(x):
    # groundc's mixdown: float32 sum in channel order, then / channels (none for mono)
    s = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        s = (s + x[:, c]).astype(np.float32)
    return s if x.shape[1] == 1 else (s / np.float32(x.shape[1])).astype(np.float32)


def write_safetensors(path, tensors, meta):
    header, blobs, offset = {}, [], 0
    # 8-byte types first so every tensor stays aligned
    order = sorted(tensors, key=lambda k: (tensors[k][0] not in ("I64", "F64"), k))
    for name in order:
        dtype, arr = tensors[name]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    version = subprocess.run(["ffmpeg", "-version"], check=True,
                             capture_output=True).stdout.decode().split("\n")[0]
    make_files()
    tensors = {}
    for name, file in [("tone_16k_m4a", "tone_16k.m4a"), ("stereo_44k_mp4", "stereo_44k.mp4"),
                       ("tone_16k_webm", "tone_16k.webm")]:
        x, rate, ch = cli_decode(src(file))
        n = x.shape[0]
        assert n > 2 * HEAD
        m = mono(x).astype(np.float64)
        tensors[f"{name}.rate"] = ("I64", np.array([rate], np.int64))
        tensors[f"{name}.channels"] = ("I64", np.array([ch], np.int64))
        tensors[f"{name}.frames"] = ("I64", np.array([n], np.int64))
        tensors[f"{name}.stride"] = ("I64", np.array([STRIDE], np.int64))
        tensors[f"{name}.head"] = ("F32", x[:HEAD].astype("<f4"))
        tensors[f"{name}.tail"] = ("F32", x[n - HEAD:].astype("<f4"))
        tensors[f"{name}.every"] = ("F32", x[::STRIDE].astype("<f4"))
        tensors[f"{name}.mono_sum"] = ("F64", np.array([m.sum()], np.float64))
        tensors[f"{name}.mono_sumsq"] = ("F64", np.array([(m * m).sum()], np.float64))
        print(f"{file}: {rate} Hz, {ch} channels, {n} frames, {os.path.getsize(src(file))} bytes")
    meta = {"generator": "tests/make_audio_container_fixtures.py", "ffmpeg": version}
    write_safetensors(src("containers.safetensors"), tensors, meta)
    files = ["tone_16k.m4a", "stereo_44k.mp4", "tone_16k.webm", "video_only.mp4",
             "containers.safetensors"]
    total = sum(os.path.getsize(src(f)) for f in files)
    print(f"wrote {len(files)} files to {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
