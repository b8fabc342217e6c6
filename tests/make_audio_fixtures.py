#!/usr/bin/python3
# make_audio_fixtures.py: writes tests/fixtures/audio/, the reference that tests/test_audio.c
# checks data/audio.c against: a few deterministic waveforms (WAV and FLAC) and
# reference.safetensors with torchaudio's Kaldi fbank and the ImageBind audio pipeline that
# GroundingGPT uses (video_llama/models/ImageBind/data.py: load_and_transform_audio_data).
#
# Generated with (Debian's python3, torch 1.13, torchaudio 0.13 with its sox_io backend,
# numpy, and the flac command from Debian's flac package; from the repository root):
#   /usr/bin/python3 tests/make_audio_fixtures.py
#
# Files (all 16-bit PCM):
#   tone_16k.flac    2.3 s, 16 kHz mono: DC offset, tones, noise, a silent lead-in; its
#                    three clips overlap, which exercises ImageBind's in-place mean
#                    subtraction (see waveform2melspec below)
#   short_16k.wav    1.1 s, 16 kHz mono WAV: shorter than one 2 s clip
#   long_16k.flac    10 s, 16 kHz mono: tone bursts and silence, clips far apart,
#                    fractional clip starts
#   stereo_44k.flac  1.0 s, 44.1 kHz stereo, different content per channel
#   stereo_dc_22k.flac  2.6 s, 22.05 kHz stereo, different content and DC offset per
#                    channel; its clips overlap, so the means subtracted in place (taken over
#                    both channels) show in the frames that straddle an earlier clip's end
#   reference.safetensors:
#     fbank.wave [6400] F32, fbank.out [frames, 128] F32: torchaudio.compliance.kaldi.fbank
#         with ImageBind's arguments on a fixed float waveform (no file, no resampling)
#     <file>.n [1] I64 (samples at 16 kHz), <file>.clips [3, 2] I64 (sample bounds of the
#         clips), <file>.frames [K] I32, <file>.out [3, K, 128] F32: the normalised pipeline
#         output for frames `frames` of each clip, in groundc's layout (clip, frame, mel;
#         ImageBind's tensor is [3, 1, 128, 204]). Only a subset of the 204 frames is kept
#         (the first two, one in the middle, the frames that straddle the end of an earlier
#         overlapping clip, the last real frame and the padding) so the fixtures stay small
#         (under 300 KB in all); the fbank itself is checked on every frame by fbank.out.
#     <file>.out_r64 [3, K, 128] F32, for files not at 16 kHz: the same with the resampling
#         done in float64 (as groundc does it), the rest in float32 as before
#     clips.n [N] I64, clips.bounds [N, 3, 2] I64: clip sample bounds for awkward lengths
# The stereo files' references are ImageBind's own: every channel resampled with torchaudio's
# default resampler (groundc computes it in double: the test allows for float32 rounding in
# the quietest bins), the clip mean taken over all channels, kaldi.fbank on channel 0.
# The safetensors file is written with tests/st_write.py (numpy): the pip package is not
# available.
import math
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction

import numpy as np
import torch
import torchaudio

import st_write  # tests/st_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "audio")
RATE = 16000
TMP = tempfile.mkdtemp(prefix="groundc-audio-fixtures-")

# ImageBind's arguments (load_and_transform_audio_data defaults)
NUM_MEL_BINS, TARGET_LENGTH, CLIP_DURATION, CLIPS_PER_VIDEO = 128, 204, 2, 3
MEAN, STD = -4.268, 9.138


# --- the reference, transcribed from ImageBind data.py and pytorchvideo clip_sampling.py ---


class ConstantClipsPerVideoSampler:
    """pytorchvideo.data.clip_sampling.ConstantClipsPerVideoSampler (augs_per_clip=1)."""

    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration = Fraction(clip_duration)
        self.clips_per_video = clips_per_video
        self.index = 0

    def __call__(self, last_clip_time, video_duration, annotation):
        # float - Fraction is computed in float, then made an exact Fraction
        max_start = Fraction(max(video_duration - self.clip_duration, 0))
        uniform_clip = Fraction(max_start, self.clips_per_video)
        start = uniform_clip * self.index
        clip_index = self.index
        self.index += 1
        last = False
        if self.index >= self.clips_per_video or uniform_clip * self.index > max_start:
            self.index = 0
            last = True
        return start, start + self.clip_duration, clip_index, 0, last


def get_clip_timepoints(clip_sampler, duration):
    points, last, end = [], False, 0.0
    while not last:
        start, end, _, _, last = clip_sampler(end, duration, annotation=None)
        points.append((start, end))
    return points


def waveform2melspec(waveform, sample_rate, num_mel_bins, target_length):
    # In place on a view of the whole waveform, as in ImageBind: later, overlapping clips
    # see the earlier clips' means already subtracted.
    waveform -= waveform.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        waveform,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_length=25,
        frame_shift=10,
    )
    fbank = fbank.transpose(0, 1)
    p = target_length - fbank.size(1)
    if p > 0:
        fbank = torch.nn.functional.pad(fbank, (0, p), mode="constant", value=0)
    elif p < 0:
        fbank = fbank[:, 0:target_length]
    return fbank.unsqueeze(0)


def normalize(t, mean, std):
    # torchvision.transforms.Normalize on a float tensor: (t - mean) / std, in t's dtype
    mean = torch.as_tensor(mean, dtype=t.dtype)
    std = torch.as_tensor(std, dtype=t.dtype)
    return t.clone().sub_(mean).div_(std)


def imagebind_audio(path, resample_f64=False):
    """load_and_transform_audio_data for one path, returning [3, 1, 128, 204], the clip
    sample bounds and the length at 16 kHz. resample_f64: resample in float64 (then back to
    float32), as groundc does, instead of the reference's float32."""
    waveform, sr = torchaudio.load(path)
    if sr != RATE:
        w = waveform.double() if resample_f64 else waveform
        w = torchaudio.functional.resample(w, orig_freq=sr, new_freq=RATE)
        waveform = w.float()
    sampler = ConstantClipsPerVideoSampler(CLIP_DURATION, CLIPS_PER_VIDEO)
    points = get_clip_timepoints(sampler, waveform.size(1) / RATE)
    clips, bounds = [], []
    n = waveform.size(1)
    for start, end in points:
        a, b = int(start * RATE), int(end * RATE)
        bounds.append((min(a, n), min(b, n)))
        clips.append(waveform2melspec(waveform[:, a:b], RATE, NUM_MEL_BINS, TARGET_LENGTH))
    clips = [normalize(c, MEAN, STD) for c in clips]
    return torch.stack(clips, dim=0), bounds, n


def clip_bounds(n):
    sampler = ConstantClipsPerVideoSampler(CLIP_DURATION, CLIPS_PER_VIDEO)
    out = []
    for start, end in get_clip_timepoints(sampler, n / RATE):
        out.append((min(int(start * RATE), n), min(int(end * RATE), n)))
    return out


# --- deterministic waveforms ---

rng = np.random.default_rng(20240601)


def t_axis(n, sr):
    return np.arange(n, dtype=np.float64) / sr


def tone(n, sr, f, a, phase=0.0):
    return a * np.sin(2 * math.pi * f * t_axis(n, sr) + phase)


def chirp(n, sr, f0, f1, a):
    t = t_axis(n, sr)
    dur = n / sr
    return a * np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur)))


def pcm16(x):
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def save(name, x, sr):
    """x: float64 [channels, n] in [-1, 1], written as 16-bit PCM. Returns the path of a WAV
    file that torchaudio.load reads: the file itself, or for .flac (this sox has no FLAC) a
    WAV decoded back from the FLAC, which is lossless, so torchaudio.load sees the samples
    libsndfile decodes from the FLAC."""
    path = os.path.join(OUT, name)
    data = torch.from_numpy(pcm16(x))
    if name.endswith(".wav"):
        torchaudio.save(path, data, sr, format="wav", encoding="PCM_S", bits_per_sample=16)
        return path
    tmp = os.path.join(TMP, name + ".wav")
    back = os.path.join(TMP, name + ".decoded.wav")
    torchaudio.save(tmp, data, sr, format="wav", encoding="PCM_S", bits_per_sample=16)
    subprocess.run(["flac", "--silent", "--best", "--force", "-o", path, tmp], check=True)
    subprocess.run(["flac", "--silent", "--decode", "--force", "-o", back, path], check=True)
    return back


def make_tone_16k():
    n = int(2.3 * RATE)
    x = 0.05 + tone(n, RATE, 440, 0.25) + tone(n, RATE, 3000, 0.1, 0.3)
    x += tone(n, RATE, 1500, 0.15) * (0.6 + 0.4 * np.sin(2 * math.pi * 3 * t_axis(n, RATE)))
    x += rng.normal(0, 0.001, n)
    x[:480] = 0.0  # 30 ms of digital silence: frames whose spectrum is all zero
    return x[None, :]


def make_short_16k():
    n = int(1.1 * RATE)
    x = chirp(n, RATE, 200, 6000, 0.3) + tone(n, RATE, 700, 0.1) + rng.normal(0, 0.002, n)
    return x[None, :]


def make_long_16k():
    """A 0.5 s tone burst (a different pitch each second) then 0.5 s of silence."""
    n = 10 * RATE
    t = t_axis(n, RATE)
    x = np.zeros(n)
    for s in range(10):
        seg = (t >= s) & (t < s + 0.5)
        env = np.sin(2 * math.pi * (t[seg] - s)) ** 2  # no clicks
        x[seg] = 0.4 * env * np.sin(2 * math.pi * (300 + 550 * s) * t[seg])
    return x[None, :]


def make_stereo_44k():
    sr = 44100
    n = int(1.0 * sr)
    left = tone(n, sr, 1000, 0.3) + chirp(n, sr, 100, 7000, 0.2)
    right = tone(n, sr, 2500, 0.25) + tone(n, sr, 6000, 0.1)
    return np.stack([left, right])


def make_stereo_dc_22k():
    sr = 22050
    n = int(2.6 * sr)
    left = 0.15 + tone(n, sr, 800, 0.3) + chirp(n, sr, 300, 9000, 0.15)
    right = -0.35 + tone(n, sr, 3000, 0.2) + tone(n, sr, 450, 0.1)
    return np.stack([left, right])


def make_fbank_wave():
    """0.4 s, float32, exact (not stored as PCM): silence, a chirp on a DC offset, loud noise,
    a very quiet tone."""
    n = int(0.4 * RATE)
    x = np.zeros(n)
    a, b, c = int(0.05 * RATE), int(0.2 * RATE), int(0.3 * RATE)
    x[a:b] = 0.2 + chirp(b - a, RATE, 50, 7900, 0.5)
    x[b:c] = np.clip(rng.normal(0, 0.45, c - b), -0.95, 0.95)
    x[c:] = tone(n - c, RATE, 5000, 1e-3) + rng.normal(0, 1e-4, n - c)
    return x.astype(np.float32)


def kaldi_fbank(wave):
    return torchaudio.compliance.kaldi.fbank(
        wave[None, :],
        htk_compat=True,
        sample_frequency=RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=NUM_MEL_BINS,
        dither=0.0,
        frame_length=25,
        frame_shift=10,
    )


def kept_frames(bounds):
    """Frames stored per clip: the first two, one in the middle, those straddling an earlier
    clip's end (where the in-place mean subtraction shows), the last real frame, the first
    padding frame and the last frame."""
    keep = {0, 1, TARGET_LENGTH - 1}
    for i, (a, b) in enumerate(bounds):
        m = 1 + (b - a - 400) // 160
        keep |= {m // 2, m - 1, m}
        for (_, pb) in bounds[:i]:
            keep |= {k for k in range(m) if a + 160 * k < pb < a + 160 * k + 400}
    return sorted(f for f in keep if 0 <= f < TARGET_LENGTH)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    tensors, meta = {}, {"generator": "tests/make_audio_fixtures.py",
                         "torch": torch.__version__, "torchaudio": torchaudio.__version__}

    wave = make_fbank_wave()
    fb = kaldi_fbank(torch.from_numpy(wave.copy()))
    tensors["fbank.wave"] = ("F32", wave)
    tensors["fbank.out"] = ("F32", fb.numpy().astype(np.float32))

    files = [
        ("tone_16k", save("tone_16k.flac", make_tone_16k(), RATE)),
        ("short_16k", save("short_16k.wav", make_short_16k(), RATE)),
        ("long_16k", save("long_16k.flac", make_long_16k(), RATE)),
        ("stereo_44k", save("stereo_44k.flac", make_stereo_44k(), 44100)),
        ("stereo_dc_22k", save("stereo_dc_22k.flac", make_stereo_dc_22k(), 22050)),
    ]
    for name, path in files:
        out, bounds, n = imagebind_audio(path)
        assert out.shape == (CLIPS_PER_VIDEO, 1, NUM_MEL_BINS, TARGET_LENGTH), out.shape
        frames = kept_frames(bounds)
        ours = out[:, 0].transpose(1, 2).contiguous()  # [3, 204, 128]
        tensors[f"{name}.n"] = ("I64", np.array([n], dtype=np.int64))
        tensors[f"{name}.clips"] = ("I64", np.array(bounds, dtype=np.int64))
        tensors[f"{name}.frames"] = ("I32", np.array(frames, dtype=np.int32))
        tensors[f"{name}.out"] = ("F32", ours[:, frames].numpy().astype(np.float32))
        if torchaudio.info(path).sample_rate != RATE:
            # the float32 resampler's rounding shows in the quiet bins: the same pipeline with
            # the resampling in float64 tells groundc's error from the reference's own
            out64 = imagebind_audio(path, resample_f64=True)[0][:, 0].transpose(1, 2)
            tensors[f"{name}.out_r64"] = ("F32", out64[:, frames].numpy().astype(np.float32))

    lengths = [1, 399, 400, 401, 559, 560, 20800, 31999, 32000, 32001, 32002, 32003, 32159,
               32160, 32161, 36800, 48000, 48001, 80000, 80001, 80002, 80003, 96000, 160000,
               160001, 1_000_003, 16000 * 3600 + 7]
    lengths += [int(v) for v in rng.integers(32000, 3_000_000, 120)]
    tensors["clips.n"] = ("I64", np.array(lengths, dtype=np.int64))
    tensors["clips.bounds"] = ("I64", np.array([clip_bounds(n) for n in lengths], np.int64))

    st_write.write(os.path.join(OUT, "reference.safetensors"), tensors, meta)
    shutil.rmtree(TMP)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
