#!/usr/bin/python3
# make_audio_container_fixtures.py: writes the compressed-container fixtures of
# tests/fixtures/audio/ that tests/test_audio.c decodes (through data/audio.c's FFmpeg path for
# the files libsndfile cannot open; Ogg Opus through libsndfile at 48 kHz), and
# containers.safetensors with the ffmpeg tool's own decode of each, the independent reference
# (torchaudio.load's ffmpeg backend reads them the same way; for Ogg Opus its sox backend, which
# decodes with libopusfile, i.e. libopus).
#
# Needs the ffmpeg and ffprobe commands (Debian package ffmpeg, built with libopus; made with
# 5.1), numpy and torch (Debian's python3; not torchaudio: its resampler is transcribed below);
# run from the repository root after tests/make_audio_fixtures.py (it encodes that script's
# lossless waveforms):
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
#   tone_16k.opus    Opus 24 kb/s in Ogg, from tone_16k.flac: its header states 16 kHz as the
#                    input rate (libsndfile's own choice of decoding rate) and a pre-skip of 312
#                    samples at 48 kHz; the encoder starts in SILK mode (packets 2 to 23), where
#                    decoding at 16 kHz rather than 48 kHz, or FFmpeg's native decoder rather
#                    than libopus, moves samples by up to 0.17
#   video_only.mp4   two 16x16 MPEG-4 frames and no audio at all (an error case)
#   containers.safetensors, per audio file <name> (tone_16k_m4a, stereo_44k_mp4, tone_16k_webm,
#   tone_16k_opus):
#     <name>.rate, .channels, .frames [1] I64: what `ffmpeg -i F -f f32le -acodec pcm_f32le -`
#         produces (rate and channels from ffprobe), frames = samples per channel; for the Ogg
#         Opus file with `-request_sample_fmt flt -c:a libopus` before -i: libopus's float
#         decode at 48 kHz, what libopusfile (torchaudio's sox backend) and libsndfile give.
#         FFmpeg's native Opus decoder puts SILK frames about 2 samples (at 48 kHz) later;
#         its decode of the WebM file is the reference there, as torchaudio's ffmpeg backend
#         would decode it.
#     <name>.head, .tail [H, channels] F32: the first and last H = 256 frames of that decode
#     <name>.stride [1] I64 (S = 48), <name>.every [ceil(frames / S), channels] F32: frames 0,
#         S, 2S, ... (the whole decode would be about 1 MB; this keeps the fixtures small while
#         every part of the file is still checked sample by sample)
#     <name>.mono_sum, .mono_sumsq [1] F64: sum and sum of squares, in float64, of the mean of
#         the channels (float32, summed in channel order then divided, as groundc mixes down)
#         over all frames
#   and for tone_16k_opus, the reference's next step: that mixdown through
#   torchaudio.functional.resample (torchaudio 0.13, transcribed in torchaudio_resample) to
#   16 kHz, ceil(frames / 3) samples:
#     <name>.r16_frames, .r16_stride [1] I64 (S16 = 16), <name>.r16_head, .r16_tail [H] F32,
#     <name>.r16_every [ceil(r16_frames / S16)] F32: as above, mono
import json
import math
import os
import subprocess

import numpy as np
import torch

import st_write  # tests/st_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "audio")
HEAD, STRIDE, STRIDE16 = 256, 48, 16

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
    # libopus is given the 16 kHz samples as they are (no -ar): the Ogg header records 16 kHz
    ffmpeg("-i", src("tone_16k.flac"), "-c:a", "libopus", "-b:a", "24k", *BITEXACT,
           src("tone_16k.opus"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=16x16:rate=5", "-frames:v", "2", "-c:v", "mpeg4",
           *BITEXACT, src("video_only.mp4"))


def probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=sample_rate,channels", "-of", "json", path], check=True,
                         capture_output=True).stdout
    st = json.loads(out)["streams"][0]
    return int(st["sample_rate"]), int(st["channels"])


def cli_decode(path, decoder=()):
    """The ffmpeg tool's decode, exactly as the brief of the reference says:
    ffmpeg -i F -f f32le -acodec pcm_f32le -  (native rate and channels, interleaved).
    decoder: options before -i that choose the decoder (libopus for Ogg Opus)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", *decoder, "-i", path, "-f",
                          "f32le", "-acodec", "pcm_f32le", "-"], check=True,
                         capture_output=True).stdout
    rate, ch = probe(path)
    x = np.frombuffer(raw, dtype="<f4")
    assert x.size % ch == 0, (path, x.size, ch)
    return x.reshape(-1, ch), rate, ch


def mono(x):
    # the mean of the channels as groundc keeps it (ds_sound.mix): float32 sum in channel
    # order, then / channels (none for mono)
    s = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        s = (s + x[:, c]).astype(np.float32)
    return s if x.shape[1] == 1 else (s / np.float32(x.shape[1])).astype(np.float32)


def torchaudio_resample(waveform, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99):
    """torchaudio 0.13's functional.resample with its defaults (resampling_method
    "sinc_interpolation": a Hann-windowed sinc), transcribed operation by operation: the kernel
    in the waveform's dtype, zero padding, conv1d with stride orig_freq, ceil(n * new / orig)
    samples. Checked against torchaudio 0.13's own functional.resample on 1 s of Gaussian
    noise from 48, 44.1 and 22.05 kHz to 16 kHz: within 1.2e-7 (float32 rounding)."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=waveform.dtype)
    kernels = []
    for i in range(new):
        t = (-i / new + idx / orig) * base_freq
        t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t *= math.pi
        kernel = torch.where(t == 0, torch.tensor(1.0).to(t), torch.sin(t) / t)
        kernel.mul_(window)
        kernels.append(kernel)
    kernels = torch.stack(kernels).view(new, 1, -1).mul_(base_freq / orig)
    shape = waveform.size()
    waveform = waveform.view(-1, shape[-1])
    num_wavs, length = waveform.shape
    waveform = torch.nn.functional.pad(waveform, (width, width + orig))
    out = torch.nn.functional.conv1d(waveform[:, None], kernels, stride=orig)
    out = out.transpose(1, 2).reshape(num_wavs, -1)[..., :int(math.ceil(new * length / orig))]
    return out.view(shape[:-1] + out.shape[-1:])


def main():
    version = subprocess.run(["ffmpeg", "-version"], check=True,
                             capture_output=True).stdout.decode().split("\n")[0]
    make_files()
    torch.set_num_threads(1)
    tensors = {}
    libopus = ("-request_sample_fmt", "flt", "-c:a", "libopus")
    for name, file, dec in [("tone_16k_m4a", "tone_16k.m4a", ()),
                            ("stereo_44k_mp4", "stereo_44k.mp4", ()),
                            ("tone_16k_webm", "tone_16k.webm", ()),
                            ("tone_16k_opus", "tone_16k.opus", libopus)]:
        x, rate, ch = cli_decode(src(file), dec)
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
        if file.endswith(".opus"):
            r = torchaudio_resample(torch.from_numpy(mono(x))[None], rate, 16000)[0].numpy()
            assert r.size == -(-n * 16000 // rate), r.size
            tensors[f"{name}.r16_frames"] = ("I64", np.array([r.size], np.int64))
            tensors[f"{name}.r16_stride"] = ("I64", np.array([STRIDE16], np.int64))
            tensors[f"{name}.r16_head"] = ("F32", r[:HEAD].astype("<f4"))
            tensors[f"{name}.r16_tail"] = ("F32", r[r.size - HEAD:].astype("<f4"))
            tensors[f"{name}.r16_every"] = ("F32", r[::STRIDE16].astype("<f4"))
        print(f"{file}: {rate} Hz, {ch} channels, {n} frames, {os.path.getsize(src(file))} bytes")
    meta = {"generator": "tests/make_audio_container_fixtures.py", "ffmpeg": version,
            "torch": torch.__version__}
    st_write.write(src("containers.safetensors"), tensors, meta)
    files = ["tone_16k.m4a", "stereo_44k.mp4", "tone_16k.webm", "tone_16k.opus",
             "video_only.mp4", "containers.safetensors"]
    total = sum(os.path.getsize(src(f)) for f in files)
    print(f"wrote {len(files)} files to {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
