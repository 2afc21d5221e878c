#!/usr/bin/env bash
# VoxCeleb recipe: baseline x-vector vs Bayesian x-vector (and their fusion) on VoxCeleb1-O, cosine and PLDA
# back-ends, plus a cross-corpus (out-of-domain) evaluation on NIST SRE10 when --sre-root is given.
#
# Expected data layout (--root; any of the layouts spkver/data/corpora/voxceleb.py accepts), audio as WAV:
#   ROOT/vox1_dev_wav/wav/idXXXXX/<video>/NNNNN.wav     VoxCeleb1 dev: training speakers
#   ROOT/vox1_test_wav/wav/idXXXXX/<video>/NNNNN.wav    VoxCeleb1 test: evaluation speakers
#     (or one tree ROOT/wav/idXXXXX/...: the test speakers id10270-id10309 are split off)
#   ROOT/veri_test2.txt (or ROOT/meta/veri_test2.txt)   VoxCeleb1-O cleaned trials "1|0 idA/vid/N.wav idB/vid/N.wav"
#   ROOT/vox2_dev_wav/wav/idXXXXX/...                   VoxCeleb2 dev as WAV (optional, with --vox2 true)
# Optional: --musan DIR (MUSAN: noise/ music/ speech/) and --rir DIR (room impulse responses) turn on
# augmentation; --sre-root DIR --sre-key FILE add SRE10 (layout: spkver/data/corpora/sre.py) as a cross-corpus set.
#
# Stages (each step leaves a marker in EXP/.done/; a rerun skips finished steps):
#   1 prepare data dirs (DATA/vox1_dev, DATA/vox1_test, DATA/trials/, DATA/train; DATA/sre10 with --sre-root)
#   2 train the baseline x-vector          conf/[PREFIX_]baseline.yaml -> EXP/baseline
#   3 train the proposed Bayesian x-vector conf/[PREFIX_]proposed.yaml -> EXP/proposed
#   4 extract embeddings (training set for the back-ends, evaluation sets) -> EXP/emb/SYSTEM/SET.npz
#   5 score: cosine (training mean subtracted) and LDA + PLDA trained on the training embeddings
#   6 evaluate, fuse (cross-validated over enrollment models), tables -> EXP/results.md
#   7 system folders for spkver verify (baseline, proposed, fusion; PLDA, calibrated on the in-domain trials)
#     -> EXP/systems/
#
# Example: ./run.sh --root /corpora/voxceleb --device cuda
#          ./run.sh --root /corpora/voxceleb --conf debug --exp exp_debug      (tiny models, minutes on a CPU)
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
common_dir=$(cd "$recipe_dir/../common" && pwd)
conf_dir=$recipe_dir/conf
recipe_name="VoxCeleb"

stage=1
stop_stage=7
root=
conf=
data=data
exp=exp
nj=1
device=
vox2=false
musan=
rir=
sre_root=
sre_key=
init_from_baseline=false
mc_samples=
options=(stage stop_stage root conf data exp nj device vox2 musan rir sre_root sre_key init_from_baseline
         mc_samples)
usage="usage: $0 [--name value ...]
  --stage N / --stop-stage M   run stages N..M (default 1..7)
  --root DIR                   VoxCeleb folder (stage 1; layout at the top of this script)
  --conf PREFIX                configuration prefix: '' uses conf/baseline.yaml and conf/proposed.yaml,
                               'debug' conf/debug_*.yaml (tiny models), 'ecapa' conf/ecapa_*.yaml
                               (ECAPA-TDNN); score/eval options: conf/*.conf
  --data DIR / --exp DIR       prepared data dirs (default data) / models, embeddings, scores (default exp)
  --nj N                       parallel jobs in stages 4-6 (default 1)
  --device DEV                 cpu, cuda, cuda:1 ... for training and extraction
  --vox2 true                  add VoxCeleb2 dev (converted to WAV) to the training data
  --musan DIR / --rir DIR      augment training examples with MUSAN noise/music/babble / reverberation
  --sre-root DIR --sre-key F   also evaluate on SRE10 trials (cross-corpus, out-of-domain)
  --init-from-baseline true    initialise the Bayesian model's means from the trained baseline
  --mc-samples K               Bayesian embeddings: average K sampled embeddings (default: posterior mean)"

. "$common_dir/lib.sh"
parse_options "$@"
. "$common_dir/stages.sh"
check_int nj
[[ $vox2 == true || $vox2 == false ]] || die "--vox2 must be true or false"
[[ $init_from_baseline == true || $init_from_baseline == false ]] || die "--init-from-baseline must be true or false"
[[ -z $sre_root || -n $sre_key ]] || die "--sre-root needs --sre-key"
mkdir -p "$data" "$exp"
data=$(cd "$data" && pwd)
exp=$(cd "$exp" && pwd)

conf_overrides=()
[[ -z $musan ]] || conf_overrides+=("data.augment.musan=$(cd "$musan" && pwd)")
[[ -z $rir ]] || conf_overrides+=("data.augment.rir=$(cd "$rir" && pwd)")

if stage_on 1; then
  log "stage 1: data preparation"
  [[ -n $root ]] || die "stage 1 needs --root (the VoxCeleb folder)"
  submit prepare_voxceleb "$exp/log/prepare_voxceleb.log" spkver prepare voxceleb --root "$root" --out "$data"
  if [[ $vox2 == true ]]; then
    submit prepare_vox2 "$exp/log/prepare_vox2.log" spkver prepare voxceleb --root "$root" --out "$data" --subsets vox2_dev
  fi
  if [[ -n $sre_root ]]; then
    submit prepare_sre10 "$exp/log/prepare_sre10.log" \
      spkver prepare sre --root "$sre_root" --key "$sre_key" --out "$data/sre10"
  fi
  wait_jobs
  train_sources=("$data/vox1_dev")
  [[ $vox2 == false ]] || train_sources+=("$data/vox2_dev")
  submit prepare_train "$exp/log/prepare_train.log" spkver prepare combine --out "$data/train" "${train_sources[@]}"
  wait_jobs
  [[ -f $data/trials/veri_test2 ]] || die "$root has no veri_test2.txt (VoxCeleb1-O cleaned): see the layout above"
fi

if ((stop_stage >= 2)); then
  train_dir=$data/train
  add_embed_set train "$train_dir"
  add_embed_set vox1_test "$data/vox1_test"
  add_eval_set vox1_o "VoxCeleb1-O (cleaned)" "in-domain" 0.01 "$data/trials/veri_test2" vox1_test vox1_test
  if [[ -d $data/sre10 ]]; then
    add_embed_set sre10_enroll "$data/sre10/enroll"
    add_embed_set sre10_test "$data/sre10/test"
    add_eval_set sre10 "SRE10 core (cross-corpus)" "out-of-domain" 0.001 "$data/sre10/trials" \
      sre10_enroll sre10_test "$data/sre10/enroll_map"
  fi
fi

run_stages ""
log "finished stages $stage to $stop_stage"
