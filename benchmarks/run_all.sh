#!/usr/bin/env bash
# Run every benchmark once, in sequence, on a quiet machine; prints the figures recorded in README.md.
# Arguments go to every script: `benchmarks/run_all.sh --quick` is a smoke run of all of them (tiny sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
for bench in bench_metrics bench_scoring bench_plda bench_estimators bench_gradvar bench_train_step \
             bench_features bench_extract bench_loader bench_synthetic bench_verify; do
  echo "===== $bench ($(date -u +%H:%M:%S))"
  python "benchmarks/$bench.py" "$@"
done
