#!/usr/bin/env bash
# NIST SRE10 recipe (8 kHz telephone speech): baseline x-vector vs Bayesian x-vector (and their fusion) on the
# core condition, cosine and PLDA back-ends, minDCF at P_tgt = 0.001; plus a cross-corpus (out-of-domain)
# evaluation on VoxCeleb1-O when --vox-root is given.
#
# Expected data layout (the SRE10-style layout of spkver/data/corpora/sre.py):
#   ROOT/**/<segment>.sph        SPHERE audio, 8 kHz, 1 or 2 channels (side a = channel 0, side b = channel 1);
#                                shorten-compressed files need sph2pipe on PATH
#   ROOT/train.trn               enrollment list "<model> [m|f] <segment>:<side>[,<segment>:<side> ...]"
#                                (another file: --trn FILE, e.g. the core condition's train list)
#   KEY (--key)                  trial key "<model>,<segment>,<side>,target|nontarget" (commas or spaces):
#                                the core-condition key
#   TRAIN_DATA (--train-data)    one or more Kaldi data dirs of 8 kHz training speakers (for instance SRE04-08
#                                and Switchboard as prepared by Kaldi's egs/sre16 scripts; wav.scp entries may
#                                be "sph2pipe ... |" commands, or .sph paths with a reco2channel file)
#   VOX_ROOT (--vox-root)        optional VoxCeleb folder (spkver/data/corpora/voxceleb.py) for the cross-corpus set:
#                                VoxCeleb1 test WAVs and veri_test2.txt
#
# Stages (each step leaves a marker in EXP/.done/; a rerun skips finished steps):
#   1 prepare data dirs (DATA/sre10/{enroll,test,trials,enroll_map}, DATA/train; DATA/voxceleb with --vox-root)
#   2 train the baseline x-vector          conf/[PREFIX_]baseline.yaml -> EXP/baseline
#   3 train the proposed Bayesian x-vector conf/[PREFIX_]proposed.yaml -> EXP/proposed
#   4 extract embeddings (training set for the back-ends, evaluation sets) -> EXP/emb/SYSTEM/SET.npz
#   5 score: cosine (training mean subtracted) and LDA + PLDA trained on the training embeddings; models
#     with several enrollment segments are scored with the PLDA multi-enrollment LLR (conf/score_plda.conf)
#     or the mean embedding (cosine)
#   6 evaluate, fuse (cross-validated over enrollment models), tables -> EXP/results.md
#   7 system folders for spkver verify: skipped here (SRE10 trials enroll models of several segments; a system
#     is calibrated on utterance trials)
#
# Example: ./run.sh --root /corpora/sre10/eval --trn CORE_TRAIN_LIST --key CORE_KEY \
#            --train-data "/path/to/sre04-08 /path/to/swbd" --device cuda
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
common_dir=$(cd "$recipe_dir/../common" && pwd)
conf_dir=$recipe_dir/conf
recipe_name="NIST SRE10"

stage=1
stop_stage=7
root=
trn=
key=
train_data=
vox_root=
conf=
data=data
exp=exp
nj=1
device=
init_from_baseline=false
mc_samples=
options=(stage stop_stage root trn key train_data vox_root conf data exp nj device init_from_baseline mc_samples)
usage="usage: $0 [--name value ...]
  --stage N / --stop-stage M   run stages N..M (default 1..7)
  --root DIR --key FILE        SRE10-style folder and its core-condition trial key (stage 1)
  --trn FILE                   enrollment list (default ROOT/train.trn)
  --train-data \"DIR ...\"       Kaldi data dir(s) of the training speakers (stage 1)
  --vox-root DIR               also evaluate on VoxCeleb1-O (cross-corpus, out-of-domain)
  --conf PREFIX                configuration prefix: '' uses conf/baseline.yaml and conf/proposed.yaml,
                               'debug' conf/debug_*.yaml (tiny models), 'ecapa' conf/ecapa_*.yaml
                               (ECAPA-TDNN); score/eval options: conf/*.conf
  --data DIR / --exp DIR       prepared data dirs (default data) / models, embeddings, scores (default exp)
  --nj N                       parallel jobs (default 1)
  --device DEV                 cpu, cuda, cuda:1 ... for training and extraction
  --init-from-baseline true    initialise the Bayesian model's means from the trained baseline
  --mc-samples K               Bayesian embeddings: average K sampled embeddings (default: posterior mean)"

. "$common_dir/lib.sh"
parse_options "$@"
. "$common_dir/stages.sh"
check_int nj
[[ $init_from_baseline == true || $init_from_baseline == false ]] || die "--init-from-baseline must be true or false"
mkdir -p "$data" "$exp"
data=$(cd "$data" && pwd)
exp=$(cd "$exp" && pwd)
conf_overrides=()

if stage_on 1; then
  log "stage 1: data preparation"
  [[ -n $root && -n $key && -n $train_data ]] || die "stage 1 needs --root, --key and --train-data"
  submit prepare_sre10 "$exp/log/prepare_sre10.log" \
    spkver prepare sre --root "$root" --key "$key" --out "$data/sre10" ${trn:+--train "$trn"}
  read -ra train_sources <<<"$train_data"
  submit prepare_train "$exp/log/prepare_train.log" spkver prepare combine --out "$data/train" "${train_sources[@]}"
  if [[ -n $vox_root ]]; then
    submit prepare_voxceleb "$exp/log/prepare_voxceleb.log" \
      spkver prepare voxceleb --root "$vox_root" --out "$data/voxceleb" --subsets test
  fi
  wait_jobs
  if [[ -n $vox_root && ! -f $data/voxceleb/trials/veri_test2 ]]; then
    die "$vox_root has no veri_test2.txt (VoxCeleb1-O cleaned)"
  fi
fi

if ((stop_stage >= 2)); then
  train_dir=$data/train
  add_embed_set train "$train_dir"
  add_embed_set sre10_enroll "$data/sre10/enroll"
  add_embed_set sre10_test "$data/sre10/test"
  add_eval_set sre10 "SRE10 core" "in-domain" 0.001 "$data/sre10/trials" sre10_enroll sre10_test \
    "$data/sre10/enroll_map"
  if [[ -d $data/voxceleb/vox1_test ]]; then
    add_embed_set vox1_test "$data/voxceleb/vox1_test"
    add_eval_set vox1_o "VoxCeleb1-O (cross-corpus)" "out-of-domain" 0.01 "$data/voxceleb/trials/veri_test2" \
      vox1_test vox1_test
  fi
fi

run_stages ""
log "finished stages $stage to $stop_stage"
