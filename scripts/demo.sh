#!/usr/bin/env bash
# The main job end to end on the CPU, in minutes on 2 cores: build; make a synthetic
# multi-granularity dataset (images with boxes, videos and sounds with time spans); pack it
# into HDF5 + zstd shards for the tiny model; run the three-stage curriculum on 2 MPI ranks,
# evaluating grounding (REC Acc@0.5, temporal R@1 at IoU 0.5) after each stage; plot the
# curves; export the final model for transformers (LLaVA) and llama.cpp (GGUF). Everything
# lands in demo-out/. Rerunning resumes: complete stages are skipped.
#   scripts/demo.sh            RANKS=1 scripts/demo.sh (no MPI)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ranks=${RANKS:-2}
out=demo-out
start=$(date +%s)
pack=(--tokenizer tests/fixtures/tokenizer/test_bpe.model --image-size 64 --image-tokens 64
      --video-frames 8 --video-size 16 --video-tokens 8 --audio-tokens 4)
if [ ! -f "$out/eval/manifest.json" ] || [ ! -f "$out/tvg/manifest.json" ]; then
  # new data: the checkpoints of the old would be refused (trained on other data)
  rm -rf "$out/raw" "$out/coarse" "$out/rec" "$out/fine" "$out/tvg" "$out/eval" "$out/checkpoints"
  mkdir -p "$out"
  build/groundc synth --out "$out/raw" --images 3000 --videos 3000 --audios 200 --max-shapes 1
  # one dataset per granularity, mixed per stage by the stage configs (tvg/ again on its
  # own, so that stage 2 can weight it)
  build/groundc pack --json "$out/raw/train.json" --media-root "$out/raw" --out "$out/coarse" \
    --tasks caption "${pack[@]}"
  build/groundc pack --json "$out/raw/train.json" --media-root "$out/raw" --out "$out/rec" \
    --tasks rec "${pack[@]}"
  build/groundc pack --json "$out/raw/train.json" --media-root "$out/raw" --out "$out/fine" \
    --tasks reg,tvg,sound "${pack[@]}"
  build/groundc pack --json "$out/raw/train.json" --media-root "$out/raw" --out "$out/tvg" \
    --tasks tvg "${pack[@]}"
  build/groundc pack --json "$out/raw/eval.json" --media-root "$out/raw" --out "$out/eval" "${pack[@]}"
fi
if [ "$ranks" -gt 1 ]; then
  launch=(mpirun --oversubscribe --allow-run-as-root -np "$ranks")
  micro=$((8 / ranks))
else
  launch=()
  micro=8
fi
"${launch[@]}" build/groundc train configs/demo/curriculum.yaml --resume auto \
  --set data.micro_batch=$micro "$@" | tee "$out/curriculum.log"
# The final model in the formats users run: transformers (LLaVA) and llama.cpp (GGUF).
final="$out/checkpoints/stage3/latest"
build/groundc export "$final" --format hf --out "$out/export/hf" --force
build/groundc export "$final" --format gguf --dtype f16 --out "$out/export/gguf" --force
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 scripts/plot_metrics.py "$out"/checkpoints/stage{1,2,3} --out "$out/metrics.png"
fi
echo "demo: done in $(( $(date +%s) - start )) s; checkpoints, metrics and plot under $out/"
