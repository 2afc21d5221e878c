#!/usr/bin/env bash
# Control for the fusion gain: is fusing the Bayesian x-vector with the baseline better than fusing two
# baselines (or two Bayesian models) trained with different seeds? Uses the scores of a finished main run;
# fusion and evaluation exactly as stage 7 (conf/eval.conf without the bootstrap: 2-fold cross-validation over
# enrollment speakers, each seed pair fused on its own, mean ± sd over the pairs).
#
#   local/fusion_control.sh [--exp exp] [--seeds "0 1 2"]
#
# Seed pairs (a, b) = (0, 1), (1, 2), (2, 0): "baseline + baseline" fuses baseline a with baseline b,
# "proposed + proposed" proposed a with proposed b, "baseline + proposed" the main run's baseline a with proposed a.
# Writes EXP/control/<set>_<backend>_<pair kind>.json (spkver eval) and prints the table of the fusion rows
# (spkver table). Run from recipes/so762.
set -euo pipefail

exp=exp
seeds="0 1 2"
while [[ $# -gt 0 ]]; do
  case $1 in
    --exp) exp=$2 ;;
    --seeds) seeds=$2 ;;
    *) echo "fusion_control.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
read -ra seed_list <<<"$seeds"
((${#seed_list[@]} >= 2)) || { echo "fusion_control.sh: needs at least two seeds" >&2; exit 2; }
utt2spk=data/dev/utt2spk
[[ -f $utt2spk && -f data/dev/trials ]] || { echo "fusion_control.sh: no data/dev (run stage 1 first)" >&2; exit 2; }
first=() second=()
n=${#seed_list[@]}
for ((i = 0; i < n; i++)); do
  ((n == 2 && i == 1)) && break
  first+=("${seed_list[$i]}")
  second+=("${seed_list[$(((i + 1) % n))]}")
done
# scores ARRAY SET BACKEND SYSTEM SEED...: the score files of SYSTEM for those seeds into ARRAY
scores() {
  local -n files=$1
  local set=$2 backend=$3 system=$4 seed file
  shift 4
  files=()
  for seed in "$@"; do
    file=$exp/seed$seed/scores/$set/${backend}_$system.txt
    [[ -f $file ]] || { echo "fusion_control.sh: $file missing (run stage 5)" >&2; exit 2; }
    files+=("$file")
  done
}
out=$exp/control
mkdir -p "$out"
entries=()
for set in dev dev_tel; do
  label=$([[ $set == dev ]] && echo in-domain || echo telephone)
  for backend in cosine plda; do
    for kind in baseline+baseline proposed+proposed baseline+proposed; do
      a=${kind%+*} b=${kind#*+}
      if [[ $a == "$b" ]]; then
        scores files_a "$set" "$backend" "$a" "${first[@]}"
        scores files_b "$set" "$backend" "$b" "${second[@]}"
      else
        scores files_a "$set" "$backend" "$a" "${seed_list[@]}"
        scores files_b "$set" "$backend" "$b" "${seed_list[@]}"
      fi
      json=$out/${set}_${backend}_$kind.json
      spkver -q eval --trials data/dev/trials --system "${a}_a" "${files_a[@]}" --system "${b}_b" "${files_b[@]}" \
        --fuse --fuse-cv 2 --fuse-utt2spk "$utt2spk" --p-target 0.01 --json "$json" >/dev/null
      entries+=(--entry "$label, $kind" "$backend" "$json")
    done
  done
done
echo "Fusion of two systems, EER (%) / minDCF (P_tgt = 0.01), mean ± sd over seed pairs"
echo
spkver table "${entries[@]}" --systems fusion --p-target 0.01
