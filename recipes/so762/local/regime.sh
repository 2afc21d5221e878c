#!/usr/bin/env bash
# Where should the Bayesian x-vector help? The baseline, the proposed model, their fusion and the fusion of two
# baselines (the ensemble control) at points of scarcer data or harder tests than the main run's, each point a run
# of ./run.sh in its own folder (the main run's configuration unless said), scored and evaluated the same way:
#
#   short  the main run's models (reused, not retrained) on dev and dev_tel cut to --short-seconds excerpts
#          (spkver prepare channel --channel short; the same excerpt of an utterance in both sets)
#   long   trained --long-epochs epochs (default 6, twice the main run's 3; the baseline's training accuracy is
#          near 1 after 3 epochs already)
#   spkN   trained on N of the 125 training speakers (drawn with a fixed seed); the back-ends too see only them,
#          the PLDA's LDA keeping N - 1 dimensions (the most N speakers give)
#
#   local/regime.sh [--exp exp] [--out exp_regime] [--data data] [--points "short long spk40"] [--seeds "0 1"]
#                   [--short-seconds 1] [--long-epochs 6] [--conf ""] [--nj 1]
#
# --conf is the main run's configuration prefix (./run.sh --conf; e.g. debug).
#
# Per point: OUT/POINT/results.md (./run.sh's tables: mean ± sd over the seeds) and OUT/POINT/control.md
# (local/fusion_control.sh: the fusion of two baselines of different seeds, of two proposed models, and of the
# baseline with the proposed model); `local/study_table.sh --study OUT --seeds SEEDS` puts the points beside the
# main run. Resumable: each point's ./run.sh keeps its markers. Run from the folder of the main run's data and
# exp (recipes/so762) after its stages 1-4.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exp=exp
out=exp_regime
data=data
points="short long spk40"
seeds="0 1"
short_seconds=1
long_epochs=6
conf=
nj=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --exp) exp=$2 ;;
    --out) out=$2 ;;
    --data) data=$2 ;;
    --points) points=$2 ;;
    --seeds) seeds=$2 ;;
    --short-seconds) short_seconds=$2 ;;
    --long-epochs) long_epochs=$2 ;;
    --conf) conf=$2 ;;
    --nj) nj=$2 ;;
    *) echo "regime.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
die() { echo "regime.sh: $*" >&2; exit 2; }
[[ -f $data/train/spk2utt && -f $data/dev/trials && -d $data/dev_tel ]] || die "$data: run stage 1 of ./run.sh first"
read -ra seed_list <<<"$seeds"
((${#seed_list[@]} >= 2)) || die "--seeds must list at least two seeds (the control fuses two baselines)"
n_train=$(wc -l <"$data/train/spk2utt")
for point in $points; do
  [[ $point == short || $point == long || $point =~ ^spk[0-9]+$ ]] || die "unknown point $point (short, long, spkN)"
  [[ $point != spk* ]] || ((${point#spk} >= 2 && ${point#spk} < n_train)) ||
    die "$point: needs 2 <= N < the $n_train speakers of $data/train"
done
[[ $long_epochs =~ ^[1-9][0-9]*$ ]] || die "--long-epochs must be a positive integer, got '$long_epochs'"
[[ $short_seconds =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--short-seconds must be a positive number, got '$short_seconds'"
mkdir -p "$out"

# reuse_models RUN: the main run's models and training-set embeddings of every seed, with their markers
reuse_models() {
  local run=$1 seed system marker
  [[ -d $exp/.done ]] || die "$exp is not a finished main run (no $exp/.done)"
  mkdir -p "$run/.done"
  for seed in "${seed_list[@]}"; do
    for system in baseline proposed; do
      [[ -f $exp/seed$seed/$system/final.pt && -f $exp/seed$seed/emb/$system/train.npz ]] ||
        die "$exp/seed$seed: no trained $system with training embeddings (run stages 2-4 with --seeds $seed)"
      mkdir -p "$run/seed$seed/emb/$system"
      [[ -e $run/seed$seed/$system ]] || cp -r "$exp/seed$seed/$system" "$run/seed$seed/$system"
      [[ -e $run/seed$seed/emb/$system/train.npz ]] ||
        cp "$exp/seed$seed/emb/$system/train.npz" "$run/seed$seed/emb/$system/train.npz"
      for marker in "seed$seed.train_$system" "seed$seed.extract_${system}_train"; do
        touch "$run/.done/$marker"
      done
    done
  done
}

# keep KEYS COLUMN FILE: the lines of FILE whose field COLUMN is the first field of a line of KEYS
keep() { awk -v col="$2" 'NR == FNR { keys[$1]; next } $col in keys' "$1" "$3"; }

# subset_speakers SRC DST N: the data dir SRC restricted to N of its speakers (a fixed draw)
subset_speakers() {
  local src=$1 dst=$2 n=$3 f
  mkdir -p "$dst"
  cut -d' ' -f1 "$src/spk2utt" | sort | shuf -n "$n" --random-source=<(yes) | sort >"$dst/.speakers"
  keep "$dst/.speakers" 1 "$src/spk2utt" >"$dst/spk2utt"
  keep "$dst/.speakers" 2 "$src/utt2spk" >"$dst/utt2spk"
  [[ ! -f $src/spk2gender ]] || keep "$dst/.speakers" 1 "$src/spk2gender" >"$dst/spk2gender"
  for f in wav.scp utt2dur; do
    [[ ! -f $src/$f ]] || keep "$dst/utt2spk" 1 "$src/$f" >"$dst/$f"
  done
}

for point in $points; do
  run=$out/$point
  mkdir -p "$run"
  [[ -e $run/feats ]] || ln -s "$(realpath "$exp/feats")" "$run/feats"  # the main run's feature cache
  point_data=$(realpath "$data")
  args=(--stage 2) common=(--conf "$conf" --seeds "$seeds" --nj "$nj")
  case $point in
    short)
      point_data=$(realpath "$out")/data_short
      mkdir -p "$point_data"
      ln -sfn "$(realpath "$data/train")" "$point_data/train"
      for set in dev dev_tel; do
        spkver prepare channel --data "$data/$set" --out "$point_data/$set" --channel short \
          --max-seconds "$short_seconds" --seed 0
      done
      cp "$data/dev/trials" "$point_data/dev/trials"
      reuse_models "$run"
      args=(--stage 4) ;;
    long)
      args+=(--overrides "epochs=$long_epochs") ;;
    spk*)
      point_data=$(realpath "$out")/data_$point
      subset_speakers "$data/train" "$point_data/train" "${point#spk}"
      for set in dev dev_tel; do ln -sfn "$(realpath "$data/$set")" "$point_data/$set"; done
      common+=(--lda-dim "$((${point#spk} - 1))") ;;
  esac
  echo "=== point $point: ./run.sh ${args[*]} --data $point_data --exp $run ${common[*]}"
  "$recipe_dir/run.sh" "${args[@]}" --data "$point_data" --exp "$run" "${common[@]}" --stop-stage 6
  "$recipe_dir/run.sh" --stage 8 --data "$point_data" --exp "$run" "${common[@]}"
  "$recipe_dir/local/fusion_control.sh" --exp "$run" --seeds "$seeds" >"$run/control.md.tmp"
  mv "$run/control.md.tmp" "$run/control.md"
done
