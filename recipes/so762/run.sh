#!/usr/bin/env bash
# speechocean762 recipe (real 16 kHz read English by Mandarin L1 speakers, children and adults): baseline
# network vs its Bayesian version (and their fusion; x-vector by default, ECAPA-TDNN with --conf ecapa or
# augment_ecapa) trained on so762/train, evaluated on so762/dev trials
# (in-domain) and on the same dev audio through a simulated telephone channel (out-of-domain), over several
# seeds, with bootstrap 95% confidence intervals. Small enough for a CPU (see README.md).
#
# Expected data layout (--root; Kaldi data dirs whose wav.scp paths are relative to ROOT):
#   ROOT/train/{wav.scp,utt2spk,spk2utt,utt2dur,spk2gender}   training speakers
#   ROOT/dev/{wav.scp,utt2spk,...,trials}                      evaluation speakers; trials "utt1 utt2 target|nontarget"
#   ROOT/audio/...                                             the audio wav.scp points at
#
# Stages (each step leaves a marker in EXP/.done/; a rerun skips finished steps):
#   1 prepare data dirs: DATA/train, DATA/dev (+ trials), DATA/dev_tel (dev through the telephone channel)
#   2 train the baseline, one per seed                 conf/[PREFIX_]baseline.yaml -> EXP/seedN/baseline
#   3 train the proposed Bayesian model, one per seed  conf/[PREFIX_]proposed.yaml -> EXP/seedN/proposed
#   4 extract embeddings (train for the back-ends, dev, dev_tel) -> EXP/seedN/emb/SYSTEM/SET.npz
#   5 score: cosine (training mean subtracted) and LDA + PLDA trained on the training embeddings
#   6 evaluate with bootstrap CIs, fuse (cross-validated over enrollment utterances), per-seed tables
#     -> EXP/seedN/results.md
#   7 per seed: system folders for spkver verify (baseline, proposed, fusion; PLDA, calibrated on the dev
#     trials) -> EXP/seedN/systems/
#   8 mean ± sd over the seeds (spkver eval --system NAME SCORES_SEED0 SCORES_SEED1 ...) -> EXP/summary/*.json,
#     EXP/results.md
#
# Example: ./run.sh --root ../../../shared/data/so762 --nj 2
#          ./run.sh --root ../../../shared/data/so762 --device cuda --seeds "0 1 2 3 4"
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
common_dir=$(cd "$recipe_dir/../common" && pwd)
conf_dir=$recipe_dir/conf
recipe_name="speechocean762"

stage=1
stop_stage=8
root=
conf=
data=data
exp=exp
nj=1
device=
seeds="0 1 2"
init_from_baseline=false
mc_samples=
overrides=
lda_dim=
options=(stage stop_stage root conf data exp nj device seeds init_from_baseline mc_samples overrides lda_dim)
usage="usage: $0 [--name value ...]
  --stage N / --stop-stage M   run stages N..M (default 1..8)
  --root DIR                   the so762 folder (stage 1; layout at the top of this script)
  --conf PREFIX                configuration prefix: '' uses conf/baseline.yaml and conf/proposed.yaml,
                               'debug' conf/debug_*.yaml (tiny models), 'ecapa' conf/ecapa_*.yaml
                               (ECAPA-TDNN), 'augment' conf/augment_*.yaml (augmentation from the
                               training set), 'augment_ecapa' (both); score/eval options: conf/*.conf
  --data DIR / --exp DIR       prepared data dirs (default data) / models, embeddings, scores (default exp)
  --nj N                       parallel jobs (default 1)
  --device DEV                 cpu, cuda, cuda:1 ... for training and extraction
  --seeds \"N ...\"              training seeds (default \"0 1 2\"): one baseline and one proposed model each
  --init-from-baseline true    initialise the Bayesian model's means from the trained baseline
  --mc-samples K               Bayesian embeddings: average K sampled embeddings (default: posterior mean)
  --overrides \"KEY=VALUE ...\"  settings for both systems over their configurations (spkver train --set),
                               e.g. \"epochs=6\"
  --lda-dim N                  LDA dimension of the PLDA back-end (default: conf/[PREFIX_]score_plda.conf's)"

. "$common_dir/lib.sh"
parse_options "$@"
. "$common_dir/stages.sh"
check_int nj
[[ -z $lda_dim ]] || check_int lda_dim
[[ $init_from_baseline == true || $init_from_baseline == false ]] || die "--init-from-baseline must be true or false"
read -ra seed_list <<<"$seeds"
((${#seed_list[@]})) || die "--seeds lists no seed"
for seed in "${seed_list[@]}"; do
  [[ $seed =~ ^[0-9]+$ ]] || die "--seeds must list integers >= 0, got '$seed'"
done
read -ra conf_overrides <<<"$overrides"
for override in "${conf_overrides[@]}"; do
  [[ $override == ?*=* ]] || die "--overrides: '$override' is not KEY=VALUE"
done
mkdir -p "$data" "$exp"
data=$(cd "$data" && pwd)
exp=$(cd "$exp" && pwd)

if stage_on 1; then
  log "stage 1: data preparation"
  [[ -n $root ]] || die "stage 1 needs --root (the so762 folder)"
  [[ -f $root/dev/trials ]] || die "$root/dev/trials: no such file (see the layout at the top of $0)"
  submit prepare_train "$exp/log/prepare_train.log" spkver prepare combine --out "$data/train" "$root/train"
  submit prepare_dev "$exp/log/prepare_dev.log" \
    bash -c 'spkver prepare combine --out "$1" "$2" && cp "$2/trials" "$1/.trials.tmp" && mv "$1/.trials.tmp" "$1/trials"' \
    _ "$data/dev" "$root/dev"
  wait_jobs
  submit prepare_dev_tel "$exp/log/prepare_dev_tel.log" \
    spkver prepare channel --data "$data/dev" --out "$data/dev_tel" --channel telephone
  wait_jobs
fi

if ((stop_stage >= 2)); then
  train_dir=$data/train
  add_embed_set train "$train_dir"
  add_embed_set dev "$data/dev"
  add_embed_set dev_tel "$data/dev_tel"
  group="speechocean762 dev trials"
  add_eval_set dev "dev (in-domain)" "$group" 0.01 "$data/dev/trials" dev dev
  add_eval_set dev_tel "dev, telephone channel (out-of-domain)" "$group" 0.01 "$data/dev/trials" dev_tel dev_tel
fi

run_stages "${seed_list[@]}"

if stage_on 8; then
  log "stage 8: mean and spread over seeds ${seed_list[*]}"
  aggregate_seeds "${seed_list[@]}"
fi
log "finished stages $stage to $stop_stage"
