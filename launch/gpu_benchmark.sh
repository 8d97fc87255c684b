#!/usr/bin/env bash
# The whole first GPU measurement in one call (under 10 minutes on one H100/H200):
# 3D ResNet-18 at 3x224x224, bfloat16, both conv implementations ("conv3d",
# "depth_taps") against PyTorch AMP (channels_last_3d) in the same process, plus
# MFU, compile time, memory, gradient parity and the host input pipeline.
#
#   bash launch/gpu_benchmark.sh                  # from the checkout; results under $OUT or workdirs/gpu_benchmark
#   OUT=/tmp/results bash launch/gpu_benchmark.sh -- --rounds=30
#   bash launch/gpu_benchmark.sh --dry-run        # print the commands, run nothing
#
# Needs only JAX with CUDA, flax, optax and absl (PyTorch with CUDA for the
# ratio, PIL or OpenCV for the pipeline figures); no grain, TFDS, ml_collections
# or package index: the checkout runs with PYTHONPATH set to it. Writes
# r3d18_224_bf16.json (+ .txt), then float32 figures if time is left
# (r3d18_224_fp32.*), and environment.txt (GPU, driver, versions).
#
# Variables:
#   OUT         results directory (default: workdirs/gpu_benchmark in the checkout)
#   BATCH       global batch of the bfloat16 run (default 256; 128 is tried if it fails)
#   TIME_LIMIT  seconds for all runs together (default 540)
# Arguments after -- go to every `python -m vdt_jax.benchmark` call.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"
parse_common_args "$@"

results_dir="${OUT:-$REPO_ROOT/workdirs/gpu_benchmark}"
batch="${BATCH:-256}"
deadline=$((SECONDS + ${TIME_LIMIT:-540}))
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
run mkdir -p "$results_dir"

environment() {
  nvidia-smi || true
  python -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
  python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' || true
}

benchmark() {
  # benchmark NAME SECONDS ARGS...: one run, text to NAME.txt and the terminal, JSON to NAME.json.
  local name="$1" seconds="$2"
  shift 2
  local command=(timeout "$seconds" python -m vdt_jax.benchmark --depth=18 "--widths=64,128,256,512" --image_size=224
                 --json_file="$results_dir/$name.json" "$@" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${command[@]}"
  else
    run "${command[@]}" 2>&1 | tee "$results_dir/$name.txt"
  fi
}

left() { echo $((deadline - SECONDS)); }

if [[ "$DRY_RUN" != 1 ]]; then
  environment > "$results_dir/environment.txt" 2>&1
fi
# bfloat16 first: the figure that matters. If the batch does not fit, halve it once.
if ! benchmark r3d18_224_bf16 "$(($(left) - 60))" --dtype=bfloat16 --batch="$batch" --rounds=20; then
  benchmark r3d18_224_bf16 "$(($(left) - 30))" --dtype=bfloat16 --batch="$((batch / 2))" --rounds=20
fi
# float32 (TF32) only if enough time is left; no pipeline or VDT timing the second time.
if (($(left) > 200)) || [[ "$DRY_RUN" == 1 ]]; then
  benchmark r3d18_224_fp32 "$(($(left) - 10))" --dtype=float32 --batch="$((batch / 2))" --rounds=10 --nopipeline --novdt || true
fi
echo "results in $results_dir"
