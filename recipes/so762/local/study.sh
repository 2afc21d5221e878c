#!/usr/bin/env bash
# What makes the Bayesian x-vector help on so762: variants of the proposed system, each scored and fused against
# the *same* baseline model of a finished main run (reused, not retrained), for one or more seeds.
#
#   local/study.sh [--exp exp] [--study exp_study] [--seeds "0"] [--variants "kl1 kl1e-2 frame12 init mc10"]
#
# Variants: any NAME with a conf/study/NAME_proposed.yaml (kl1, kl1e-2: KL weight 1 or 0.01; frame12: only
# frame_1..2 Bayesian; seg1: seg_1 Bayesian too; lrt: local reparameterization; sigma3, sigma4: init_rho -3, -4;
# rholr10: 10x learning rate for rho; kl1_rholr10: both KL weight 1 and 10x rho rate);
# init = the default proposed configuration initialised from the baseline (--init-from-baseline); init_NAME =
# conf/study/NAME_proposed.yaml initialised from the baseline (init_none: the baseline trained on for as many
# epochs again with no Bayesian layer, the control for init);
# mc10 = the main run's proposed model with embeddings averaged over 10 posterior samples (--mc-samples 10).
# Each variant's tables land in STUDY/<variant>/seedN/results.md and, over the seeds, STUDY/<variant>/results.md;
# local/study_table.sh puts all variants side by side. Run from recipes/so762.
set -euo pipefail

exp=exp
study=exp_study
seeds="0"
variants="kl1 kl1e-2 frame12 init mc10"
while [[ $# -gt 0 ]]; do
  case $1 in
    --exp) exp=$2 ;;
    --study) study=$2 ;;
    --seeds) seeds=$2 ;;
    --variants) variants=$2 ;;
    *) echo "study.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
for variant in $variants; do
  [[ $variant == init || $variant == mc10 || -f conf/study/${variant#init_}_proposed.yaml ]] || {
    echo "study.sh: unknown variant $variant (no conf/study/${variant#init_}_proposed.yaml; nor init or mc10)" >&2
    exit 2; }
done
[[ -d $exp/.done ]] || { echo "study.sh: $exp is not a finished main run (no $exp/.done)" >&2; exit 2; }

# reuse: the prepared data, the feature cache, and per seed the baseline (model, embeddings) and, for MC
# extraction, the proposed model
seed_markers() {  # seed_markers EXP SEED SYSTEM STAGE...: the main run's markers of SYSTEM in those stages
  local seed=$2 system=$3 stage
  shift 3
  for stage in "$@"; do
    ls "$exp/.done" | grep -E "^seed$seed\.${stage}_${system}(_|$)" || true
  done
}

for variant in $variants; do
  out=$study/$variant
  mkdir -p "$out/.done"
  for marker in "$exp"/.done/prepare_*; do [[ -e $marker ]] && cp -n "$marker" "$out/.done/"; done
  [[ -e $out/feats ]] || ln -s "$(realpath "$exp/feats")" "$out/feats"
  args=(--exp "$out" --stage 3)
  reuse=(baseline)
  case $variant in
    init) args+=(--init-from-baseline true) ;;
    init_*) args+=(--conf "study/${variant#init_}" --init-from-baseline true) ;;
    mc10) args+=(--stage 4 --mc-samples 10); reuse+=(proposed) ;;
    *) args+=(--conf "study/$variant") ;;
  esac
  for seed in $seeds; do
    mkdir -p "$out/seed$seed/emb"
    for system in "${reuse[@]}"; do
      [[ -e $out/seed$seed/$system ]] || cp -r "$exp/seed$seed/$system" "$out/seed$seed/$system"
      for marker in $(seed_markers "$exp" "$seed" "$system" train); do touch "$out/.done/$marker"; done
    done
    [[ -e $out/seed$seed/emb/baseline ]] || cp -r "$exp/seed$seed/emb/baseline" "$out/seed$seed/emb/baseline"
    for marker in $(seed_markers "$exp" "$seed" baseline extract); do touch "$out/.done/$marker"; done
  done
  echo "=== variant $variant: ./run.sh ${args[*]} --seeds \"$seeds\""
  ./run.sh "${args[@]}" --seeds "$seeds" --stop-stage 7
done
