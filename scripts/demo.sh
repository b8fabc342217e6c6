#!/usr/bin/env bash
# The main job end to end on the CPU: build, then train a tiny Llama decoder on a synthetic
# task and evaluate it on held-out samples. (The multimodal three-stage curriculum replaces
# this as the model, data and training milestones land.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/groundc train configs/demo/lm.yaml "$@"
