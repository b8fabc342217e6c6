// audio.h: sound for the audio branch, prepared exactly as GroundingGPT prepares it (ImageBind's
// load_and_transform_audio_data, reached through video_llama/models/ImageBind/data.py):
// decoding (libsndfile, else FFmpeg), 16 kHz, three 2 s clips, a Kaldi-compatible log
// mel filterbank per clip (torchaudio.compliance.kaldi.fbank with ImageBind's arguments),
// padded to 204 frames and normalised. Also a WAV/FLAC writer for the synthetic data.
//
// Which library decodes what. libsndfile is tried first; FFmpeg only when sf_open refuses the
// file (see ds_audio_load), so files libsndfile reads keep libsndfile's decode (Ogg Opus at
// 48 kHz: below).
//  - libsndfile (Debian 12's 1.2.0 is built with FLAC, Ogg Vorbis/Opus, mpg123 and LAME): WAV
//    (PCM, float, A/u-law, ADPCM), RF64, W64, AIFF, AU, CAF, FLAC, Ogg Vorbis, Ogg Opus
//    (.opus, decoded at 48 kHz: below), MP3 (read with libmpg123 since libsndfile 1.1).
//    Measured on 2.3 s mono and 1 s stereo files, its MP3 and Ogg Vorbis decodes match the
//    ffmpeg tool's in length and within 1.2e-6 per sample. A libsndfile built without one of
//    these codecs hands those files to FFmpeg.
//  - FFmpeg (libavformat, libavcodec, libswresample for the sample format only): everything
//    else it reads, from the best audio stream (av_find_best_stream) of the file: MP4 / M4A /
//    MOV (AAC, ALAC; VGGSound and AudioSet clips with their video track), ADTS .aac, WebM /
//    Matroska (Opus, Vorbis), AC-3, WMA, ... decoded whole at the decoder's own rate and
//    channel count, as torchaudio.load's ffmpeg backend and the ffmpeg tool do: the encoder
//    delay is trimmed; AAC keeps its padding to whole 1024-sample frames at the end (the
//    ffmpeg tool keeps it too); Opus decodes at 48 kHz. Packets the decoder rejects are
//    skipped (as in video.c). No audio stream, or no decodable sample, is an error.
//  Opus always decodes at 48 kHz, as the reference decodes it, then resamples (2.) like any
//  other rate. Left alone, libsndfile would decode Ogg Opus at the rate its header states as
//  the encoder's input (16 kHz for a 16 kHz source), whose samples differ from the
//  reference's by up to 0.16 (on the fixture, in its SILK frames); so ds_audio_load switches
//  it to 48 kHz before reading (SFC_SET_ORIGINAL_SAMPLERATE). It then decodes with libopus in
//  float, pre-skip dropped and the end trimmed to the last granule position, exactly as the
//  ffmpeg tool with -c:a libopus does (measured: identical, at 8, 12, 16 and 44.1 kHz header
//  rates, mono and stereo). torchaudio reads Ogg Opus with its sox backend, whose libopusfile
//  decodes with libopus too but hands over 16-bit samples (op_read, dithered): a few 16-bit
//  steps off.
//  Opus in other containers (WebM, Matroska, MP4) goes to FFmpeg's native decoder, as
//  torchaudio's ffmpeg backend reads it; that decoder puts SILK frames about 2 samples (at
//  48 kHz) later than libopus. A libsndfile that refuses the switch hands the file to FFmpeg.
//
// The reference, step by step, and what groundc does:
//  1. torchaudio.load: float in [-1, 1] (16-bit PCM divided by 32768, no 32768 scaling
//     anywhere later); libsndfile's float reads give the same values, FFmpeg's float
//     decoders (AAC, Opus, ...) the same values as torchaudio's ffmpeg backend.
//     Channels: ImageBind keeps them all, subtracts the mean over all channels (4.) and
//     kaldi.fbank then reads channel 0 only. groundc does the same: it keeps channel 0 and
//     the mean of the channels (ds_sound), whose per-clip means it subtracts from both.
//  2. torchaudio.functional.resample (Hann-windowed sinc, 6 zero crossings, rolloff 0.99) to
//     16 kHz when the file's rate differs; output length ceil(n * 16000 / rate), the input
//     taken as zero outside [0, n). groundc computes the same filter (no library offers it:
//     libsamplerate's passband ends at 90 % of Nyquist, so the top mel bin came out empty),
//     keeping only the taps inside its window, in double: measured against torchaudio's own
//     float32 output, samples within 1.5e-7 (the Ogg Opus fixture, 48 kHz) and log mel
//     within 3e-4 in every bin within 14 nats of its frame's top (a 44.1 kHz stereo file,
//     all frequencies up to 8 kHz). 16 kHz files are never resampled and match exactly.
//  3. Clips: pytorchvideo's ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3)
//     over duration = n / 16000 (a double). Always three clips: with
//     max_start = max(duration - 2.0, 0.0) computed in double and then taken exactly as a
//     fraction, clip i (0, 1, 2) covers samples [floor(i * max_start / 3 * 16000),
//     that + 32000), clamped to n like a Python slice. The floor is of the exact rational
//     value (the sampler works in fractions.Fraction), which differs from a naive double or
//     integer formula for about a third of all lengths; ds_audio_clip_bounds reproduces it.
//     Consequences: clips overlap when the audio is shorter than 8 s; the last clip starts at
//     two thirds of max_start, so the final (duration - 2) / 3 seconds are never seen; audio
//     of 2 s or less gives three clips over the same samples [0, n).
//  4. Per clip, waveform -= waveform.mean() (over every channel) runs in place on a view of
//     the whole waveform, so a later clip that overlaps an earlier one sees the earlier
//     clip's mean already subtracted from the shared samples (a step inside the frames that
//     straddle the end of the earlier clip). groundc reproduces this: ds_audio_features
//     modifies its input.
//  5. kaldi.fbank: 25 ms Hann window (400 samples, symmetric), 10 ms shift (160), frames that
//     fit entirely (snip_edges: 1 + (n - 400) / 160, and fewer than 400 samples is an error
//     as in torchaudio), per-frame DC removal, pre-emphasis 0.97 (first sample against
//     itself), zero padding to a 512-point FFT (FFTW, single precision), power spectrum,
//     128 triangular filters equally spaced on Kaldi's mel scale 1127 ln(1 + f / 700)
//     between 20 Hz and 8 kHz (the Nyquist bin gets no weight; filter 3 covers no FFT bin
//     at all and is always log(eps)), log(max(energy, FLT_EPSILON)). No dither, no energy
//     column. The filter bank and window are computed in float exactly as torchaudio does.
//  6. Pad with zeros (before normalising) or crop to 204 frames, then (x + 4.268) / 9.138.
//     ImageBind's tensor is [3, 1, 128, 204]; groundc stores [3][204][128] (frames-major,
//     data/FORMAT.md).
// Errors (missing, unreadable, corrupt or empty files, no audio stream, audio shorter than one
// window) are one-line ag_fail messages that name the file. Thread-safe: the FFT plans and
// tables are made once under a lock; everything else works on the caller's buffers.
#pragma once
#include <stdint.h>

#define DS_AUDIO_RATE         16000
#define DS_AUDIO_CLIPS        3
#define DS_AUDIO_CLIP_SAMPLES 32000 // 2 s
#define DS_AUDIO_FRAMES       204   // target_length
#define DS_AUDIO_MELS         128
#define DS_AUDIO_MEAN         (-4.268f)
#define DS_AUDIO_STD          9.138f
#define DS_FBANK_WINDOW       400 // 25 ms
#define DS_FBANK_SHIFT        160 // 10 ms
#define DS_FBANK_FFT          512

// A decoded sound at one rate, the two signals the reference's pipeline depends on: channel
// 0, the only one kaldi.fbank reads, and the mean of all channels, whose per-clip means are
// subtracted from every channel (see 1. and 4. above).
typedef struct {
    float *first;  // [n] channel 0 (malloc'd)
    float *mix;    // [n] the mean of the channels (malloc'd); NULL for mono, where it is first
    int64_t n;     // samples per signal
    int file_rate; // the decoded rate (the decoder's: 48 kHz for Opus in any container)
} ds_sound;

// Decodes path (libsndfile, or FFmpeg's best audio stream when libsndfile cannot open it; see
// the top of this file) into *out and resamples it to `rate` Hz when the decoded rate differs.
// Free with ds_sound_free. Thread-safe.
void ds_audio_load(const char *path, int rate, ds_sound *out);
void ds_sound_free(ds_sound *s);

// Resamples mono x[n] from rate `from` to `to` as torchaudio.functional.resample does with
// its defaults (see 2. above); the result has ceil(n * to / from) samples (malloc'd, count in
// *n_out). `what` names the source in error messages.
float *ds_audio_resample(const float *x, int64_t n, int from, int to, int64_t *n_out,
                         const char *what);

// Sample bounds [*start, *end) of clip `clip` (0 .. DS_AUDIO_CLIPS-1) of n samples at
// 16 kHz, exactly as ImageBind slices them (see 3. above).
void ds_audio_clip_bounds(int64_t n, int clip, int64_t *start, int64_t *end);

// Frames kaldi.fbank makes from n samples: 0 below one window, else 1 + (n - 400) / 160.
int64_t ds_fbank_frames(int64_t n);

// Log mel filterbank of 16 kHz samples x[n] (n >= 400) into out[frames][128], frames =
// ds_fbank_frames(n): torchaudio.compliance.kaldi.fbank with ImageBind's arguments, not
// normalised. x is not modified.
void ds_fbank(const float *x, int64_t n, float *out);

// The three normalised clips of a 16 kHz sound into out[3][204][128], from its channel 0.
// Subtracts each clip's mean over all channels from the sound in place, as ImageBind does
// (see 4. above). `what` names the source in error messages (the only error: a clip shorter
// than 400 samples, i.e. n < 400).
void ds_audio_features(ds_sound *sound, float *out, const char *what);

// The whole path: file -> out[3][204][128] normalised; *duration (may be NULL) gets the
// duration in seconds that the clip sampler sees (samples at 16 kHz / 16000).
void ds_audio_file_features(const char *path, float *out, double *duration);

typedef enum {
    DS_AUDIO_WAV_PCM16, // WAV, 16-bit PCM (samples clipped to [-1, 1))
    DS_AUDIO_WAV_FLOAT, // WAV, 32-bit float
    DS_AUDIO_FLAC_PCM16 // FLAC, 16-bit
} ds_audio_encoding;

// Writes frames x channels interleaved samples at `rate` to path: a temporary file in the
// same folder, fsynced, then renamed over path, so readers never see a partial file.
void ds_audio_write(const char *path, const float *samples, int64_t frames, int channels, int rate,
                    ds_audio_encoding enc);
// Mono 16-bit PCM WAV, the synthetic data generator's format.
void ds_audio_write_wav(const char *path, const float *samples, int64_t n, int rate);
