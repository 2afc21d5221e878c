#!/usr/bin/env bash
# The so762 study side by side: the main run and each variant of local/study.sh over the same seeds, each
# evaluated exactly as stage 7 (spkver eval over the seeds' score files, each seed fused on its own, mean ± sd),
# one table (spkver table): a line per run, evaluation set and back-end, columns baseline / proposed / fusion.
#
#   local/study_table.sh [--exp exp] [--study exp_study] [--seeds "0 1 2"] [--p-target 0.01]
#
# Variants that have not scored every requested seed (stage 5) are listed below the table; folders of STUDY with
# no seed folder (e.g. local/regime.sh's data dirs) are not runs. Writes STUDY/table/RUN_SET_BACKEND.json. Run
# from recipes/so762. Also the table of local/regime.sh's points: --study exp_regime --seeds "0 1".
set -euo pipefail

exp=exp
study=exp_study
seeds="0 1 2"
p_target=0.01
while [[ $# -gt 0 ]]; do
  case $1 in
    --exp) exp=$2 ;;
    --study) study=$2 ;;
    --seeds) seeds=$2 ;;
    --p-target) p_target=$2 ;;
    *) echo "study_table.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
read -ra seed_list <<<"$seeds"
((${#seed_list[@]})) || { echo "study_table.sh: --seeds lists no seed" >&2; exit 2; }
[[ -f data/dev/trials && -f data/dev/utt2spk ]] || { echo "study_table.sh: no data/dev (run stage 1 first)" >&2; exit 2; }

# finished RUN: every requested seed has the scores of both systems on both sets under both back-ends
finished() {
  local seed set backend system
  for seed in "${seed_list[@]}"; do
    for set in dev dev_tel; do
      for backend in cosine plda; do
        for system in baseline proposed; do
          [[ -f $1/seed$seed/scores/$set/${backend}_$system.txt ]] || return 1
        done
      done
    done
  done
}

finished "$exp" || { echo "study_table.sh: $exp has not scored seeds ${seeds} (run.sh stage 5)" >&2; exit 2; }
runs=("$exp")
skipped=()
if [[ -d $study ]]; then
  for dir in "$study"/*/; do
    dir=${dir%/}
    [[ $(basename "$dir") != table ]] && compgen -G "$dir/seed*" >/dev/null || continue  # runs only, not data
    if finished "$dir"; then runs+=("$dir"); else skipped+=("$(basename "$dir")"); fi
  done
fi
mkdir -p "$study/table"
entries=()
for run in "${runs[@]}"; do
  name=$([[ $run == "$exp" ]] && echo "main run" || basename "$run")
  for set in dev dev_tel; do
    label=$([[ $set == dev ]] && echo in-domain || echo telephone)
    for backend in cosine plda; do
      args=()
      for system in baseline proposed; do
        args+=(--system "$system")
        for seed in "${seed_list[@]}"; do args+=("$run/seed$seed/scores/$set/${backend}_$system.txt"); done
      done
      json=$study/table/${name// /_}_${set}_$backend.json
      spkver -q eval --trials data/dev/trials "${args[@]}" --fuse --fuse-cv 2 --fuse-utt2spk data/dev/utt2spk \
        --p-target "$p_target" --json "$json" >/dev/null
      entries+=(--entry "$name: $label" "$backend" "$json")
    done
  done
done
echo "EER (%) / minDCF (P_tgt = $p_target), mean ± sd over seeds ${seeds}; the runs of $study beside the main run ($exp)"
echo
spkver table "${entries[@]}" --p-target "$p_target"
if ((${#skipped[@]})); then
  echo
  echo "not scored for every seed (${seeds}): ${skipped[*]}"
fi
