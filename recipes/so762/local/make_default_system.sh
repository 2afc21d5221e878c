#!/usr/bin/env bash
# Rebuild the system that ships with spkver (spkver/default_system: what `spkver verify` and `spkver.load()` use
# without --system): the so762 recipe's baseline of one seed (the network its configuration names: x-vector or
# ECAPA-TDNN), trained on so762/train (125 speakers), with the LDA + PLDA back-end trained on the training
# embeddings (conf/[PREFIX_]score_plda.conf) and a logistic-regression calibration trained on the so762/dev
# trials. Needs a finished main run (stages 1-5: models and embeddings); extracts nothing. Run from recipes/so762:
#
#   local/make_default_system.sh [--exp exp] [--seed 0] [--data data] [--conf ""] [--out ../../spkver/default_system]
#   local/make_default_system.sh --exp exp_augment_ecapa_long   # the shipped system: augmented ECAPA-TDNN, seed 0
#
# system.json records the metrics on the dev trials and a speaker-disjoint cross-validated check of the
# calibration (actual vs minimum DCF); `spkver system info` prints them.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
common_dir=$(cd "$recipe_dir/../common" && pwd)
conf_dir=$recipe_dir/conf

exp=exp
seed=0
data=data
conf=
out=../../spkver/default_system
options=(exp seed data conf out)
usage="usage: $0 [--name value ...]
  --exp DIR       a main run with stages 1-5 done (default exp)
  --seed N        the seed whose baseline is shipped (default 0)
  --data DIR      the main run's data dirs (default data)
  --conf PREFIX   the main run's configuration prefix, for conf/[PREFIX_]score_plda.conf (e.g. debug)
  --out DIR       the system folder, replaced (default ../../spkver/default_system)"

. "$common_dir/lib.sh"
parse_options "$@"
. "$common_dir/stages.sh"  # conf_file, read_opts
[[ $seed =~ ^[0-9]+$ ]] || die "--seed must be an integer >= 0, got '$seed'"
run=$exp/seed$seed
for f in "$run/baseline/final.pt" "$run/baseline/config.yaml" "$run/emb/baseline/train.npz" \
         "$run/emb/baseline/dev.npz" "$data/train/utt2spk" "$data/dev/trials"; do
  [[ -e $f ]] || die "$f: no such file (run ./run.sh --stop-stage 5 first)"
done
read_opts plda_opts "$(conf_file score_plda.conf)"
# the extractor's name in the system: its network (model.name of the trained configuration)
network=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["model"]["name"])' \
  "$run/baseline/config.yaml")
case $network in
  xvector) name=xvector ;;
  ecapa_tdnn) name=ecapa ;;
  *) die "$run/baseline is a $network, not an x-vector or an ECAPA-TDNN" ;;
esac
spkver system build --model "$run/baseline" --name "$name" --system-name "so762-$name-plda" \
  --train-emb "$run/emb/baseline/train.npz" --utt2spk "$data/train/utt2spk" --backend plda "${plda_opts[@]}" \
  --calibrate-data "$data/dev" --calibrate-trials "$data/dev/trials" --calibrate-emb "$run/emb/baseline/dev.npz" \
  --overwrite --out "$out"
du -sh "$out" >&2
spkver system info --system "$out"
