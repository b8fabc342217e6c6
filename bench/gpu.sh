#!/usr/bin/env bash
# bench/gpu.sh: on the GPU machine, build groundc with CUDA (build-gpu, sm_90), run the
# CUDA-vs-CPU parity test, then time a full bf16 training step (forward, backward, AdamW)
# of a Llama in groundc (bench_gpu_step) and in PyTorch (torch_reference.py, eager and
# torch.compile) in the same run on the same card; prints tokens/s, MFU and peak memory of
# both, the ratio, and a short table last. Logs go under $OUT (./gpu-out when unset).
#
# Before a device run, here (once per checkout): bench/gpu.sh prepare
#   - fetches the Debian packages the GPU machine lacks into .devdeps (git-ignored), with
#     ../shared/device/fetch-debs.sh (EXTRA_DEBS adds more);
#   - copies ../shared/bench/torch_reference.py into .gpu/ref/ (git-ignored).
# Then `run` with carry [".devdeps", ".gpu/ref"] and command e.g.
#   bash bench/gpu.sh all            everything (longer than one 10-minute run at full size:
#                                    split it as below; build-gpu stays on a warm machine)
#   bash bench/gpu.sh build          configure and build build-gpu
#   bash bench/gpu.sh parity         tests/test_cuda_parity (and test_ops_reference) on CUDA
#   bash bench/gpu.sh golden         scripts/make_fixtures.py with the machine's transformers
#                                    into $OUT/golden, then tests/test_golden on them
#   bash bench/gpu.sh hf             an HF export checked with transformers (hf_logits_check.py)
#   bash bench/gpu.sh bench 124m     one shape or more: 124m 1b 7b (default all three)
#   bash bench/gpu.sh table          the table again from the logs under $OUT... of this run
# Settings: QUICK=1 small shapes (same code paths, a couple of minutes in all);
#   TORCH_COMPILE=0 skips torch.compile; DRY=1 a dry run on a machine without a GPU: the
#   groundc bench binary of BUILD (default build-cuD) on the CPU at tiny shapes, the parity
#   test (which skips), no PyTorch.
# Shapes (/work/shared/device/README.md): llama-124m d768 L12 H12 ffn 2048 vocab 32000 B16
# T1024; llama-1b d2048 L22 H16 ffn 5632 B8 T2048; stage1-7b Vicuna-7B dims (d4096 L32 H32
# ffn 11008) frozen in bf16, 576 image tokens (width 1024) through a trained MLP projector,
# B4 T2048.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
quick=${QUICK:-0}
dry=${DRY:-0}
build=${BUILD:-build-gpu}
[ "$dry" = 1 ] && build=${BUILD:-build-cuD}
ref=$root/.gpu/ref/torch_reference.py
cmd=${1:-all}
shift || true
shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=(124m 1b 7b)

say() { echo "== $*" | tee -a "$out/gpu.log"; }

prepare() {
    [ -d ../shared ] || { echo "prepare: ../shared not found (run this on the dev machine)"; exit 1; }
    grep -qs '^/.devdeps/' .gitignore .git/info/exclude || echo /.devdeps/ >>.git/info/exclude
    # minizip (torch.save archives) and libexif (JPEG orientation) besides the recipe's libyaml
    EXTRA_DEBS="libminizip1 libminizip-dev libexif12 libexif-dev ${EXTRA_DEBS:-}" \
        ../shared/device/fetch-debs.sh .devdeps
    mkdir -p .gpu/ref
    cp ../shared/bench/torch_reference.py .gpu/ref/
    git check-ignore -q .gpu/ref/torch_reference.py || echo "prepare: .gpu/ is not git-ignored"
    echo "carry: [\".devdeps\", \".gpu/ref\"]"
}

do_build() {
    if [ -f .devdeps/unpack-debs.sh ]; then
        # shellcheck disable=SC1091
        source .devdeps/unpack-debs.sh .devdeps
    fi
    # what CMakeLists.txt asks pkg-config for, and the Debian package with its .pc file: name
    # what is missing before cmake does (the -dev package and its runtime libraries go into
    # .devdeps: EXTRA_DEBS="..." bench/gpu.sh prepare)
    local missing=() m
    for m in openblas:libopenblas-pthread-dev yaml-0.1:libyaml-dev libzstd:libzstd-dev \
        libcjson:libcjson-dev libjpeg:libjpeg62-turbo-dev libpng:libpng-dev \
        libavformat:libavformat-dev libavcodec:libavcodec-dev libswscale:libswscale-dev \
        libavutil:libavutil-dev sndfile:libsndfile1-dev \
        fftw3f:libfftw3-dev libcrypto:libssl-dev libprotobuf-c:libprotobuf-c-dev \
        minizip:libminizip-dev libexif:libexif-dev; do
        pkg-config --exists "${m%%:*}" 2>/dev/null || missing+=("${m%%:*} (${m#*:})")
    done
    command -v protoc-c >/dev/null || missing+=("protoc-c (protobuf-c-compiler)")
    [ ${#missing[@]} -eq 0 ] || say "build: missing: ${missing[*]}"
    say "build: $build (CUDA, sm_90)"
    cmake -B "$build" -DGROUNDC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
        >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; say "build: cmake failed"; exit 1; }
    cmake --build "$build" -j "$(nproc)" --target test_cuda_parity test_ops_reference \
        test_golden test_export_hf_forward bench_gpu_step >"$out/build.log" 2>&1 || {
        grep -E "error|Error" "$out/build.log" | head -40
        say "build: failed (log: build.log)"
        exit 1
    }
    say "build: ok"
}

do_parity() {
    say "parity: $build/tests/test_cuda_parity"
    "$build/tests/test_cuda_parity" >"$out/parity.log" 2>&1
    local rc=$?
    cat "$out/parity.log"
    say "parity: exit $rc"
    echo "$rc" >"$out/parity.rc"
    if [ "$dry" != 1 ]; then
        (cd "$build/tests" && ./test_ops_reference) >"$out/ops_reference.log" 2>&1
        say "test_ops_reference (cpu and cuda against torch fixtures): exit $? ($(tail -1 "$out/ops_reference.log"))"
    fi
}

# groundc arguments and torch's run() arguments per shape; QUICK trims layers, batch, T.
gc_args() {
    local s=$1
    local steps="--steps 20 --warmup 5"
    [ "$s" = 7b ] && steps="--steps 10 --warmup 3"
    if [ "$dry" = 1 ]; then
        case $s in
            7b) echo "--preset tiny --stage1 1 --name dry-stage1 --steps 3 --warmup 1" ;;
            *) echo "--preset tiny --name dry-$s --steps 3 --warmup 1" ;;
        esac
        return
    fi
    if [ "$quick" = 1 ]; then
        case $s in
            124m) echo "--preset 124m --layers 4 --batch 4 --seq 512 --name quick-124m --steps 5 --warmup 2" ;;
            1b) echo "--preset 1b --layers 2 --batch 2 --seq 1024 --name quick-1b --steps 5 --warmup 2" ;;
            7b) echo "--preset 7b --layers 2 --batch 1 --seq 1024 --name quick-stage1 --steps 5 --warmup 2" ;;
        esac
        return
    fi
    echo "--preset $s $steps"
}

torch_py() { # python source running torch_reference.run for shape $1, compiled or not ($2)
    local s=$1 c=$2
    if [ "$quick" = 1 ]; then
        case $s in
            124m) echo "r.run('quick-124m', (32000, 768, 4, 12, 2048), 4, 512, compile_=$c, steps=5, warm=2)" ;;
            1b) echo "r.run('quick-1b', (32000, 2048, 2, 16, 5632), 2, 1024, compile_=$c, steps=5, warm=2)" ;;
            7b) echo "r.run('quick-stage1', (32000, 4096, 2, 32, 11008), 1, 1024, stage1=True, compile_=$c, steps=5, warm=2)" ;;
        esac
        return
    fi
    case $s in # the calls of torch_reference.py's __main__
        124m) echo "r.run('llama-124m', (32000, 768, 12, 12, 2048), 16, 1024, compile_=$c)" ;;
        1b) echo "r.run('llama-1b', (32000, 2048, 22, 16, 5632), 8, 2048, compile_=$c)" ;;
        7b) echo "r.run('stage1-7b', (32000, 4096, 32, 32, 11008), 4, 2048, stage1=True, compile_=$c, steps=10, warm=3)" ;;
    esac
}

do_bench() {
    local dev=cuda
    [ "$dry" = 1 ] && dev=cpu
    for s in "${shapes[@]}"; do
        case $s in 124m | 1b | 7b) ;; *) say "bench: unknown shape $s (124m 1b 7b)"; continue ;; esac
        # shellcheck disable=SC2046
        say "groundc $s: $build/bench/bench_gpu_step --device $dev $(gc_args "$s")"
        # shellcheck disable=SC2046
        "$build/bench/bench_gpu_step" --device "$dev" $(gc_args "$s") >"$out/groundc_$s.json" \
            2>"$out/groundc_$s.err"
        local rc=$?
        cat "$out/groundc_$s.json"
        [ $rc -eq 0 ] || { say "groundc $s: exit $rc"; tail -5 "$out/groundc_$s.err"; }
        [ "$dry" = 1 ] && continue
        if [ ! -f "$ref" ]; then
            say "torch $s: $ref missing (bench/gpu.sh prepare, carry .gpu/ref)"
            continue
        fi
        local modes=(False)
        [ "${TORCH_COMPILE:-1}" = 1 ] && modes=(False True)
        : >"$out/torch_$s.json"
        for c in "${modes[@]}"; do
            say "torch $s compile=$c"
            python3 -c "import sys; sys.path.insert(0, '$(dirname "$ref")'); import torch_reference as r; $(torch_py "$s" "$c")" \
                >>"$out/torch_$s.json" 2>"$out/torch_${s}_$c.err" ||
                { say "torch $s compile=$c failed"; tail -5 "$out/torch_${s}_$c.err"; }
        done
        cat "$out/torch_$s.json"
    done
}

do_table() {
    python3 - "$out" <<'PY' | tee "$out/table.txt"
import glob, json, os, sys
out = sys.argv[1]
def lines(p):
    try:
        return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
    except OSError:
        return []
rows = []
for s in ("124m", "1b", "7b"):
    g = lines(os.path.join(out, f"groundc_{s}.json"))
    t = lines(os.path.join(out, f"torch_{s}.json"))
    if not g and not t:
        continue
    g = g[0] if g else {}
    eager = next((x for x in t if not x.get("compile")), {})
    comp = next((x for x in t if x.get("compile")), {})
    rows.append((g.get("name") or eager.get("name") or s, g, eager, comp))
def f(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "-"
def ratio(a, b):
    return f"{a / b:.3f}" if a and b else "-"
print("shape            | groundc tok/s    MFU  GiB | torch eager tok/s   MFU  GiB | "
      "torch compile tok/s   MFU  GiB | groundc/eager groundc/compile")
for name, g, e, c in rows:
    print(f"{name:<16} | {f(g.get('tok_s'), ',.0f'):>13} {f(g.get('mfu_vs_989'), '.3f'):>6} "
          f"{f(g.get('mem_gib'), '.1f'):>4} | {f(e.get('tok_s'), ',.0f'):>17} "
          f"{f(e.get('mfu_vs_989'), '.3f'):>5} {f(e.get('mem_gib'), '.1f'):>4} | "
          f"{f(c.get('tok_s'), ',.0f'):>19} {f(c.get('mfu_vs_989'), '.3f'):>5} "
          f"{f(c.get('mem_gib'), '.1f'):>4} | {ratio(g.get('tok_s'), e.get('tok_s')):>13} "
          f"{ratio(g.get('tok_s'), c.get('tok_s')):>15}")
print("tok/s: tokens per second (median step); MFU against 989 TFLOP/s (H100 SXM dense bf16),")
print("FLOPs counted as torch_reference.py counts them; GiB: groundc's arena peak, torch's")
print("max_memory_allocated. Ratios above 1: groundc faster.")
PY
}

# The golden fixtures (issue 4): transformers' tiny models, made with the machine's
# transformers into $out/golden (commit that folder as tests/fixtures/golden/), then checked.
do_golden() {
    say "golden: scripts/make_fixtures.py -> $out/golden"
    python3 scripts/make_fixtures.py --out "$out/golden" >"$out/golden.log" 2>&1 ||
        { tail -20 "$out/golden.log"; say "golden: make_fixtures.py failed"; return 1; }
    GROUNDC_GOLDEN_DIR="$out/golden" "$build/tests/test_golden" >>"$out/golden.log" 2>&1
    local rc=$?
    grep -E "FAIL|golden:" "$out/golden.log" | tail -30
    say "golden: test_golden exit $rc (log: golden.log)"
}

# The HF export against transformers (issue 7): test_export_hf_forward keeps its export and
# groundc's logits, and tests/hf_logits_check.py loads the export with
# LlavaForConditionalGeneration and compares (1e-3).
do_hf() {
    say "hf: test_export_hf_forward -> $out/hfcheck, then tests/hf_logits_check.py"
    rm -rf "$out/hfcheck"
    GROUNDC_EXPORT_HF_KEEP="$out/hfcheck" "$build/tests/test_export_hf_forward" \
        >"$out/hf.log" 2>&1 ||
        { tail -20 "$out/hf.log"; say "hf: test_export_hf_forward failed"; return 1; }
    python3 tests/hf_logits_check.py "$out/hfcheck/export" --dump "$out/hfcheck/dump.safetensors" \
        >>"$out/hf.log" 2>&1
    local rc=$?
    tail -15 "$out/hf.log"
    say "hf: hf_logits_check exit $rc (log: hf.log)"
}

case $cmd in
    prepare) prepare ;;
    golden) do_golden ;;
    hf) do_hf ;;
    build) do_build ;;
    parity) do_parity ;;
    bench) do_bench && do_table ;;
    table) do_table ;;
    all)
        if [ "$dry" = 1 ]; then
            [ -x "$build/bench/bench_gpu_step" ] ||
                cmake --build "$build" -j2 --target bench_gpu_step test_cuda_parity >/dev/null
        else
            nvidia-smi >"$out/nvidia-smi.txt" 2>&1
            do_build
        fi
        do_parity
        [ "$dry" = 1 ] || { do_golden; do_hf; }
        do_bench
        do_table
        ;;
    *)
        echo "usage: bench/gpu.sh [prepare|build|parity|golden|hf|bench [124m 1b 7b]|table|all]"
        exit 2
        ;;
esac
