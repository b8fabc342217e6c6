#!/usr/bin/env bash
# test_train_data_checks.sh GROUNDC BUILD_DIR: user-made or damaged shards (written with h5py by
# tests/shard_damage.py from a synthetic dataset packed for configs/demo/model.yaml) fail with
# one line naming the shard and the sample or row, at start-up where that is cheap, else when
# the loader reads the sample; they used to pass `inspect` and `--dry-run` and die mid-run in
# the model naming only the micro-batch row, or train on silently:
#   * a data.max_len that cuts through a media placeholder block: refused at start-up and in
#     --dry-run at data.max_len's file:line:column, with the smallest data.max_len that works
#     (which is then accepted, and one less is not);
#   * token ids outside the model's vocabulary, placeholder tokens without a media row, a row
#     without its block, a missing start token, a split patch run, a second block;
#   * NaN in an audio fbank; zero, negative or NaN durations; an original image size of 0 x 0;
#   * loss_mask values other than 0 / 1, a bool loss_mask, an lzf-compressed dataset;
#   * uppercase digests (the shard's tokenizer_digest, the manifest's tokenizer_digest and sha256)
#     are read (not refused).
set -u
. "$(dirname "$0")/lib.sh" "$@"
need_python h5py numpy
export HDF5_PLUGIN_PATH=$build/hdf5-plugins # the zstd filter, for h5py

# DESCRIPTION PATTERN COMMAND...: non-zero exit, one error line, the last on stderr, matching
fails_with() {
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ "$(grep -c '^groundc: error' "$tmp/err")" = 1 ] &&
     tail -1 "$tmp/err" | grep -qE -e "^groundc: error: $pattern"; then ok
  else bad "$what: rc=$rc, stderr: $(grep -v '^  ' "$tmp/err" | tail -3)"; fi
}

cd "$tmp" || exit 1
"$groundc" synth --out raw --images 40 --videos 20 --audios 10 --max-shapes 1 >/dev/null || bad synth
"$groundc" pack --json raw/train.json --media-root raw --out base \
  --tokenizer "$here/fixtures/tokenizer/test_bpe.model" --image-size 64 --image-tokens 64 \
  --video-frames 8 --video-size 16 --video-tokens 8 --audio-tokens 4 --threads 1 >/dev/null ||
  bad pack
cat >base.yaml <<YAML
model: $src/configs/demo/model.yaml
stage: 2
data:
  datasets: [{path: base, weight: 1}]
  micro_batch: 2
  max_len: 100
train: {steps: 3, lr: 1.0e-3, log_every: 1}
checkpoint: {out: ck/base}
YAML

# --- data.max_len through the image blocks (64 patch tokens after a prompt of ~36)
split="base.yaml:6:12: data.max_len 100 cuts through the media placeholder block of [0-9]+ of [0-9]+ samples of $tmp/base \(e\.g\. $tmp/base/shard_00000\.h5 sample [0-9]+: image block at tokens [0-9]+\.\.[0-9]+\): the model needs every block whole; "
fails_with "max_len through blocks (dry run)" "$split" "$groundc" train base.yaml --dry-run
fails_with "max_len through blocks (a run)" "$split" "$groundc" train base.yaml
[ ! -e ck/base ] && ok || bad "a run refused for data.max_len made checkpoint.out"
n=$(sed -nE 's/.*(set data\.max_len to|keeps every block whole is) ([0-9]+).*/\2/p' "$tmp/err")
if [ -n "$n" ]; then
  "$groundc" train base.yaml --dry-run --set data.max_len="$n" >"$tmp/log" 2>&1 &&
    grep -q "config valid" "$tmp/log" && ok || bad "the suggested data.max_len $n: $(grep -v '^  ' "$tmp/log" | tail -2)"
  fails_with "one less than the suggested max_len" "--set data.max_len=$((n - 1)):1:14: data.max_len $((n - 1)) cuts through" \
    "$groundc" train base.yaml --dry-run --set data.max_len=$((n - 1))
else
  bad "no data.max_len suggested: $(cat "$tmp/err")"
fi

# --- damaged shards: at start-up (shard open, the first sample of each media kind) or when the
# loader reads the sample (stream position named); 80 steps of 2 cover all 152 samples
sed -e 's/path: base/path: dmg/' -e '/max_len/d' -e 's/steps: 3/steps: 80/' -e 's#ck/base#ck/dmg#' \
  base.yaml >dmg.yaml
shard="$tmp/dmg/shard_00000\.h5"
damaged() { # MODE PATTERN [inspect]: damage a copy of base, train on it
  local mode=$1 pattern=$2
  "$py" "$here/shard_damage.py" base dmg "$mode" >"$tmp/damage" || { bad "shard_damage.py $mode"; return; }
  rm -rf ck/dmg
  fails_with "$mode ($(cat "$tmp/damage"))" "$shard: $pattern" "$groundc" train dmg.yaml
  if [ "${3:-}" = inspect ]; then fails_with "$mode (inspect)" "$shard: $pattern" "$groundc" inspect "$tmp/dmg"; fi
}
damaged token_oov "sample 0: token id 5000 at position 5 is outside the vocabulary 0\.\.2008$"
damaged no_image_ref "sample 0: 1 image start tokens \(id 2001, the first at position [0-9]+\) but no image \(sample_image is -1\) \(stream position [0-9]+: dataset 0 sample 0 = sample 0 of shard_00000\.h5\)$"
damaged no_start "sample 0: 0 image start tokens \(id 2001\) and 1 end tokens \(id 2002\): one block per image expected$"
damaged split_run "sample 0: the 63 image patch tokens are not one run \(positions [0-9]+\.\.[0-9]+\)$"
damaged extra_block "sample 0: 2 image start tokens \(id 2001\) and 2 end tokens \(id 2002\): one block per image expected$"
damaged audio_nan "dataset 'audios': row 0: element 27017 \(clip 1, frame 7, mel 9\) is NaN \(fbank values must be finite\) \(stream position [0-9]+: dataset 0 sample [0-9]+ = sample [0-9]+ of shard_00000\.h5\)$"
damaged video_dur_zero "dataset 'video_duration': row 1: duration 0 is not a positive number of seconds$" inspect
damaged video_dur_neg "dataset 'video_duration': row 1: duration -2 is not a positive number of seconds$"
damaged audio_dur_nan "dataset 'audio_duration': row 1: duration nan is not a positive number of seconds$"
damaged orig_zero "dataset 'image_orig_size': row 2: 0 x 0 is not a positive size$" inspect
damaged mask2 "dataset 'loss_mask': sample 3: value 2 at position [0-9]+ \(expected 0 or 1\) \(stream position [0-9]+: dataset 0 sample 3 = sample 3 of shard_00000\.h5\)$"
damaged mask_bool "dataset 'loss_mask': element type enum \(h5py bool\), expected uint8$" inspect
damaged lzf "dataset 'tokens': compressed with filter 'lzf' \(id 32000\), which groundc does not read \(zstd, gzip or none\)$" inspect

# --- uppercase digests (shard and manifest) are digests all the same
"$py" "$here/shard_damage.py" base dmg upper_digest >/dev/null || bad "shard_damage.py upper_digest"
"$groundc" train dmg.yaml --dry-run >"$tmp/log" 2>&1 && grep -q "config valid" "$tmp/log" && ok ||
  bad "uppercase tokenizer_digest: $(grep -v '^  ' "$tmp/log" | tail -2)"
"$groundc" inspect dmg --checksums >"$tmp/log" 2>&1 && ok || bad "inspect --checksums, uppercase digests: $(tail -2 "$tmp/log")"

summary
