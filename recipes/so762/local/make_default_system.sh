#!/usr/bin/env bash
# Rebuild the system that ships with spkver (spkver/default_system: what `spkver verify` and `spkver.load()` use
# without --system): the so762 recipe's baseline x-vector of one seed, trained on so762/train (125 speakers), with
# the LDA + PLDA back-end trained on the training embeddings and a logistic-regression calibration trained on
# the so762/dev trials. Needs a finished main run (stages 1-5: models and embeddings); extracts nothing.
#
#   local/make_default_system.sh [--exp exp] [--seed 0] [--out ../../spkver/default_system]
#
# Run from recipes/so762. system.json records the metrics on the dev trials and a speaker-disjoint
# cross-validated check of the calibration (actual vs minimum DCF); `spkver system info` prints them.
set -euo pipefail

exp=exp
seed=0
out=../../spkver/default_system
while [[ $# -gt 0 ]]; do
  case $1 in
    --exp) exp=$2 ;;
    --seed) seed=$2 ;;
    --out) out=$2 ;;
    *) echo "make_default_system.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
run=$exp/seed$seed
for f in "$run/baseline/final.pt" "$run/emb/baseline/train.npz" "$run/emb/baseline/dev.npz" data/train/utt2spk \
         data/dev/trials; do
  [[ -e $f ]] || { echo "make_default_system.sh: $f missing (run ./run.sh --stop-stage 5 first)" >&2; exit 2; }
done
lda=$(sed -e 's/#.*//' conf/score_plda.conf | tr '\n' ' ')
# shellcheck disable=SC2086  # the options of conf/score_plda.conf are words
spkver system build --model "$run/baseline" --name xvector --system-name so762-xvector-plda \
  --train-emb "$run/emb/baseline/train.npz" --utt2spk data/train/utt2spk --backend plda $lda \
  --calibrate-data data/dev --calibrate-trials data/dev/trials --calibrate-emb "$run/emb/baseline/dev.npz" \
  --overwrite --out "$out"
du -sh "$out" >&2
spkver system info --system "$out"
