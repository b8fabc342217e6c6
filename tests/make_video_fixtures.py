#!/usr/bin/python3
# make_video_fixtures.py: writes the real-format video fixtures of tests/fixtures/video/ that
# tests/test_video.c decodes through data/video.c (formats groundc's own writer cannot make).
#
# Needs the ffmpeg and ffprobe commands (Debian package ffmpeg, with libx264, libvpx and
# libopus; made with 5.1) and nothing else (no numpy); run from anywhere:
#   /usr/bin/python3 tests/make_video_fixtures.py
# CI has no ffmpeg command: the committed files are what the test uses. The test derives its
# expectations from the generator below (frame numbers drawn into the pictures, timestamps,
# counts), never from a decode.
#
# Every frame k is the pattern of tests/test_video.c without the side bars: four horizontal
# stripes of H/4 rows, the first three grey at level 16 + 36 d for the base-7 digits d of k
# (least significant on top), the last red (200, 40, 40).
#
# Files:
#   phone_rot90.mp4  a phone-style portrait recording: H.264 High with B-frames, full-range
#                    yuvj420p, BT.709 matrix (tagged and used for the conversion), coded
#                    80x48 landscape with a display matrix that turns it 90 degrees clockwise
#                    (written into the track header, as phones do); 30 frames at 30 fps
#   cut_editlist.mp4 a stream-copy cut: H.264 (GOP 10, B-frames) 64x48, 40 frames at 25 fps,
#                    cut with `-ss 0.5 -c copy`, so the file starts at the key frame of 0.4 s
#                    and an edit list hides frames 10-12 (before 0.5 s): frames 13-39 remain
#   vfr_audio.webm   VP9 64x48, 40 frames with variable frame rate: frame k at
#                    (k + 2 floor(k / 10)) / 25 s, so the frames span 1.84 s, not 40 / 25; and
#                    a 3 s Opus track, so the Matroska duration (3 s) is the audio's
#   vfr_steps.mkv    a phone-like variable rate: MPEG-4 part 2 64x48, 30 frames, frames
#                    0-9 at 2 fps (k / 2 s), frames 10-29 at 16 fps (5 + (k - 10) / 16 s):
#                    the frames span 6.25 s, and by index most picks would fall after 5 s
#   late_video.mkv   a recording whose picture starts after its sound: MPEG-4 part 2 64x48,
#                    20 frames at 25 fps delayed by 0.6 s, and a 2 s FLAC track from 0 s, so
#                    the first frame is 0.6 s into the file (and the last ends at 1.4 s)
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "video")
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-map_metadata", "-1", "-threads", "1"]


def level(d):
    return 16 + 36 * d


def frame(k, w, h):
    digits = [k % 7, k // 7 % 7, k // 49 % 7]
    rows = []
    for y in range(h):
        s = y // (h // 4)
        px = bytes([level(digits[s])] * 3) if s < 3 else bytes([200, 40, 40])
        rows.append(px * w)
    return b"".join(rows)


def encode(path, w, h, n, rate, args, extra_inputs=()):
    raw = b"".join(frame(k, w, h) for k in range(n))
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(rate), "-i", "-", *extra_inputs, *args, *BITEXACT, path]
    subprocess.run(cmd, input=raw, check=True)


def ffprobe(path, entries):
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        entries, "-of", "default=nw=1", path], capture_output=True, text=True,
                       check=True)
    return r.stdout


def set_display_matrix(path, a, b, c, d):
    # The mp4 track header (tkhd, version 0) holds the 3x3 display matrix {a b u, c d v, x y w}
    # as big-endian 16.16 (u, v, w 2.30) numbers, 44 bytes after the "tkhd" tag.
    data = bytearray(open(path, "rb").read())
    pos = data.find(b"tkhd")
    if pos < 0 or data[pos + 4] != 0:
        sys.exit(f"{path}: no version-0 tkhd box")
    identity = struct.pack(">9i", 1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    if data[pos + 44:pos + 80] != identity:
        sys.exit(f"{path}: unexpected display matrix")
    data[pos + 44:pos + 80] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    open(path, "wb").write(bytes(data))


def main():
    os.makedirs(OUT, exist_ok=True)
    x264 = ["-c:v", "libx264", "-preset", "medium", "-bf", "2"]

    phone = os.path.join(OUT, "phone_rot90.mp4")
    encode(phone, 80, 48, 30, 30,
           ["-vf", "scale=out_color_matrix=bt709:out_range=pc", *x264, "-crf", "14",
            "-pix_fmt", "yuvj420p", "-color_range", "pc", "-colorspace", "bt709",
            "-color_primaries", "bt709", "-color_trc", "bt709"])
    # Rotation -90 (counter-clockwise), i.e. 90 degrees clockwise, as an iPhone writes it.
    set_display_matrix(phone, 0, 1 << 16, -(1 << 16), 0)
    info = ffprobe(phone, "stream=pix_fmt,color_space:stream_side_data=rotation")
    if "rotation=-90" not in info or "yuvj420p" not in info or "bt709" not in info:
        sys.exit(f"{phone}: unexpected stream: {info}")

    full = os.path.join(OUT, "cut_source.mp4")
    cut = os.path.join(OUT, "cut_editlist.mp4")
    encode(full, 64, 48, 40, 25, [*x264, "-crf", "20", "-g", "10", "-pix_fmt", "yuv420p"])
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", "0.5", "-i", full, "-c",
                    "copy", *BITEXACT, cut], check=True)
    os.remove(full)

    vfr = os.path.join(OUT, "vfr_audio.webm")
    encode(vfr, 64, 48, 40, 25,
           ["-map", "0:v", "-map", "1:a", "-vf", "setpts='(N+2*floor(N/10))/(25*TB)'",
            "-fps_mode", "passthrough", "-c:v", "libvpx-vp9", "-crf", "30", "-b:v", "0",
            "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "8k"],
           extra_inputs=["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3"])

    steps = os.path.join(OUT, "vfr_steps.mkv")
    encode(steps, 64, 48, 30, 16,
           ["-vf", "setpts='if(lt(N,10),8*N,70+N)/(16*TB)'", "-fps_mode", "passthrough",
            "-c:v", "mpeg4", "-q:v", "2"])

    late = os.path.join(OUT, "late_video.mkv")
    encode(late, 64, 48, 20, 25,
           ["-map", "0:v", "-map", "1:a", "-vf", "setpts=PTS+0.6/TB", "-fps_mode", "passthrough",
            "-c:v", "mpeg4", "-q:v", "2", "-c:a", "flac"],
           extra_inputs=["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=2"])
    info = ffprobe(late, "stream=start_time")
    if "start_time=0.600000" not in info:
        sys.exit(f"{late}: the video does not start at 0.6 s: {info}")

    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
