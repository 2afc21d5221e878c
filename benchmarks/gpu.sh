#!/usr/bin/env bash
# Every GPU figure in one run (a few minutes on one GPU): training frames/s of the x-vector and ECAPA-TDNN,
# deterministic and Bayesian (bbb, lrt, flipout; ECAPA bbb), under bfloat16 autocast, next to SpeechBrain's
# models on the same batch; extraction frames/s (network only) and end-to-end real-time factor of both models.
#
#   benchmarks/gpu.sh            # on the GPU machine, from the repository root; prints every figure
#   DEVICE=cpu benchmarks/gpu.sh --quick    # a smoke run of the same commands on a CPU
#
# Reference (an H200, plain PyTorch, bf16): a TDNN x-vector trains at about 6.0M frames/s eager, inference
# about 22-25M frames/s. Features are precomputed here: the figures are the network's, not the loader's.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
quick=()
train_sizes=(--batch 128 --frames 300 --repeats 10 --warmup 3 --extract-batches 64 256 --extract-frames 300)
extract_sizes=(--speakers 40)
if [[ ${1:-} == --quick ]]; then
  quick=(--quick) train_sizes=() extract_sizes=()
elif [[ $# -gt 0 ]]; then
  echo "gpu.sh: unknown option $1 (only --quick)" >&2
  exit 2
fi
python - "$device" <<'PY'
import sys, torch
device = torch.device(sys.argv[1])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
print(f"device {name}; torch {torch.__version__}; bf16 autocast")
PY
echo "===== training step (x-vector and ECAPA-TDNN, bf16)"
python benchmarks/bench_train_step.py --device "$device" --bf16 "${quick[@]}" "${train_sizes[@]}"
for model in xvector ecapa; do
  echo "===== extraction, $model"
  python benchmarks/bench_extract.py --device "$device" --model "$model" --amp bf16 "${quick[@]}" "${extract_sizes[@]}"
done
