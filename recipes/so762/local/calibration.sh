#!/usr/bin/env bash
# Calibration under mismatch, and whether the Bayesian model's posterior (its embedding spread) makes it better.
# Uses a finished main run (EXP/.done: models, and the train / dev / dev_tel embeddings of stage 4); run from
# recipes/so762:
#
#   local/calibration.sh [--exp exp] [--out exp_calib] [--seeds "0 1 2"] [--mc-samples 10] [--nj 1]
#                        [--conf ""] [--data data] [--device DEV] [--rir-count 20] [--bootstrap 200]
#
# Steps (each leaves a marker in OUT/.done/; a rerun skips finished steps):
#   1 DATA/dev_mixed: dev with one degradation per utterance, never the telephone channel (spkver prepare
#     channel --channel mixed: coloured noise at 0-15 dB SNR, a simulated room, or a 2 s excerpt; seeded)
#   2 per seed, embeddings -> OUT/seedN/emb/SYSTEM/SET.npz: baseline and proposed (posterior mean) of dev_mixed;
#     proposed_mc (--mc-samples K: the mean of K posterior samples, with the per-dimension spread) of dev,
#     dev_tel and dev_mixed. The main run's train / dev / dev_tel embeddings are reused.
#   3 per seed, PLDA (LDA dimension of conf/[CONF_]score_plda.conf) trained on the training embeddings of the
#     baseline and of the proposed model (posterior mean; the uncertainty-aware scoring needs no training-set
#     spread) -> OUT/seedN/plda/; trial scores of dev, dev_tel, dev_mixed -> OUT/seedN/scores/SET/NAME.txt:
#     baseline, baseline_dur (--uncertainty duration), proposed, proposed_mc, proposed_mc_unc (--uncertainty
#     spread, the proposed PLDA)
#   4 per seed, calibration to log-likelihood ratios (spkver calibrate) trained on one condition and applied to
#     another, never the condition it is tested on -> OUT/seedN/llr/COND/ROW.txt; conditions
#       tel    trained on dev_mixed, tested on dev_tel (mismatched: a degradation calibration never saw)
#       mixed  trained on dev_tel, tested on dev_mixed (mismatched)
#       dev    trained on dev_mixed, tested on dev (in-domain test)
#   5 EER, minDCF, actDCF, Cllr at P_tgt 0.01, mean ± sd over the seeds (spkver eval --calibrated --system)
#     -> OUT/summary/COND.{json,csv,md}; per seed, the same with bootstrap 95% intervals (--bootstrap N,
#     resampling enrollment utterances) -> OUT/seedN/results/COND.{json,md}; both in OUT/results.md
#   6 the spread of the proposed models' MC embeddings by condition -> OUT/spread.png (local/spread_plot.py),
#     its table at the end of OUT/results.md
# The proposed model's main-run embeddings are its posterior means unless the main run used --mc-samples. Markers
# do not record settings: to redo the protocol with another --mc-samples, use another --out (DATA/dev_mixed
# made with another --rir-count is refused by spkver prepare channel: remove it first).
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
common_dir=$(cd "$recipe_dir/../common" && pwd)
conf_dir=$recipe_dir/conf

exp=exp
out=exp_calib
data=data
seeds="0 1 2"
mc_samples=10
nj=1
conf=
device=
rir_count=20
bootstrap=200
options=(exp out data seeds mc_samples nj conf device rir_count bootstrap)
usage="usage: $0 [--name value ...]
  --exp DIR          a finished main run (default exp)
  --out DIR          this protocol's outputs (default exp_calib)
  --data DIR         the main run's data dirs; dev_mixed is written here (default data)
  --seeds \"N ...\"    seeds of the main run to use (default \"0 1 2\")
  --mc-samples K     posterior samples per MC embedding (default 10)
  --nj N             parallel jobs (default 1)
  --conf PREFIX      the main run's configuration prefix, for conf/[PREFIX_]score_plda.conf (e.g. debug)
  --device DEV       cpu, cuda, ... for extraction
  --rir-count N      simulated rooms of dev_mixed's reverberation (default 20)
  --bootstrap N      bootstrap replicates of the per-seed 95% intervals (default 200)"

. "$common_dir/lib.sh"
parse_options "$@"
. "$common_dir/stages.sh"  # conf_file, read_opts
check_int nj
check_int mc_samples
check_int rir_count
check_int bootstrap
read -ra seed_list <<<"$seeds"
((${#seed_list[@]})) || die "--seeds lists no seed"
for seed in "${seed_list[@]}"; do
  [[ $seed =~ ^[0-9]+$ ]] || die "--seeds must list integers >= 0, got '$seed'"
done
[[ -d $exp/.done ]] || die "$exp is not a finished main run (no $exp/.done; run ./run.sh first)"
for f in "$data/dev/trials" "$data/dev/utt2dur" "$data/dev_tel/utt2dur" "$data/train/utt2spk"; do
  [[ -f $f ]] || die "$f: no such file (run stage 1 of ./run.sh)"
done
for seed in "${seed_list[@]}"; do
  for system in baseline proposed; do
    [[ -d $exp/seed$seed/$system ]] || die "$exp/seed$seed/$system: no such model (run stages 2-3 with --seeds $seed)"
    for set in train dev dev_tel; do
      f=$exp/seed$seed/emb/$system/$set.npz
      [[ -f $f ]] || die "$f: no such file (run stage 4)"
    done
  done
done
main=$(cd "$exp" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
exp=$out  # lib.sh keeps the step markers in $exp/.done: this protocol's live in OUT
read_opts plda_opts "$(conf_file score_plda.conf)"
trials=$data/dev/trials

# emb SEED SYSTEM SET: an embedding file (the main run's where it has it)
emb() {
  if [[ $2 != proposed_mc && $3 != dev_mixed ]]; then echo "$main/seed$1/emb/$2/$3.npz"
  else echo "$out/seed$1/emb/$2/$3.npz"; fi
}

log "step 1: $data/dev_mixed (dev with one degradation per utterance)"
submit prepare_dev_mixed "$out/log/prepare_dev_mixed.log" \
  spkver prepare channel --data "$data/dev" --out "$data/dev_mixed" --channel mixed --seed 0 --rir-count "$rir_count"
wait_jobs

log "step 2: embeddings of dev_mixed; Monte Carlo embeddings with their spread ($mc_samples samples)"
for seed in "${seed_list[@]}"; do
  for system in baseline proposed; do
    submit "seed$seed.extract_${system}_dev_mixed" "$out/seed$seed/log/extract_${system}_dev_mixed.log" \
      spkver extract --model "$main/seed$seed/$system" --data "$data/dev_mixed" \
      --out "$(emb "$seed" "$system" dev_mixed)" ${device:+--device "$device"}
  done
  for set in dev dev_tel dev_mixed; do
    submit "seed$seed.extract_proposed_mc_$set" "$out/seed$seed/log/extract_proposed_mc_$set.log" \
      spkver extract --model "$main/seed$seed/proposed" --data "$data/$set" --mc-samples "$mc_samples" \
      --out "$(emb "$seed" proposed_mc "$set")" ${device:+--device "$device"}
  done
done
wait_jobs

log "step 3: PLDA scores (plain, duration and spread uncertainty)"
# score SEED SET NAME: the trial scores NAME of SET (PLDA of OUT/seedN/plda/, trained on the first call)
declare -A score_system=([baseline]=baseline [baseline_dur]=baseline [proposed]=proposed [proposed_mc]=proposed_mc
                         [proposed_mc_unc]=proposed_mc)
declare -A score_plda=([baseline]=baseline [baseline_dur]=baseline [proposed]=proposed [proposed_mc]=proposed
                       [proposed_mc_unc]=proposed)
score() {
  local seed=$1 set=$2 name=$3 system plda args=()
  system=${score_system[$name]}
  plda=$out/seed$seed/plda/${score_plda[$name]}.npz
  case $name in
    baseline_dur) args=(--uncertainty duration --utt2dur "$data/$set/utt2dur") ;;
    proposed_mc_unc) args=(--uncertainty spread) ;;
  esac
  if [[ $set == dev && $name == "${score_plda[$name]}" ]]; then  # trains and saves the PLDA
    args+=(--train "$(emb "$seed" "$name" train)" --utt2spk "$data/train/utt2spk" "${plda_opts[@]}"
           --save-plda "$plda")
  else
    args+=(--plda "$plda")
  fi
  submit "seed$seed.score_${set}_$name" "$out/seed$seed/log/score_${set}_$name.log" \
    spkver score --trials "$trials" --enroll "$(emb "$seed" "$system" "$set")" \
    --test "$(emb "$seed" "$system" "$set")" --backend plda "${args[@]}" --out "$out/seed$seed/scores/$set/$name.txt"
}
for seed in "${seed_list[@]}"; do
  mkdir -p "$out/seed$seed/plda"
  for name in baseline proposed; do score "$seed" dev "$name"; done
done
wait_jobs
for seed in "${seed_list[@]}"; do
  for set in dev dev_tel dev_mixed; do
    for name in baseline baseline_dur proposed proposed_mc proposed_mc_unc; do
      [[ $set == dev && ( $name == baseline || $name == proposed ) ]] || score "$seed" "$set" "$name"
    done
  done
done
wait_jobs

log "step 4: calibration trained on one condition, applied to another"
conditions=(tel mixed dev)
declare -A cond_train=([tel]=dev_mixed [mixed]=dev_tel [dev]=dev_mixed)
declare -A cond_test=([tel]=dev_tel [mixed]=dev_mixed [dev]=dev)
declare -A cond_label=([tel]="dev, telephone channel: calibrated on dev_mixed (mismatched)"
                       [mixed]="dev_mixed: calibrated on dev, telephone channel (mismatched)"
                       [dev]="dev (in-domain): calibrated on dev_mixed")
# rows: ROW -> scores, quality measures ("" = plain calibration), table name
rows=(baseline_cal baseline_dur_cal proposed_cal proposed_mc_cal proposed_mc_unc_cal baseline_qmf_dur
      proposed_mc_qmf_spread proposed_mc_qmf_dur_spread)
declare -A row_scores=([baseline_cal]=baseline [baseline_dur_cal]=baseline_dur [proposed_cal]=proposed
                       [proposed_mc_cal]=proposed_mc [proposed_mc_unc_cal]=proposed_mc_unc [baseline_qmf_dur]=baseline
                       [proposed_mc_qmf_spread]=proposed_mc [proposed_mc_qmf_dur_spread]=proposed_mc)
declare -A row_qmf=([baseline_qmf_dur]=duration [proposed_mc_qmf_spread]=spread
                    [proposed_mc_qmf_dur_spread]=duration,spread)
declare -A row_name=([baseline_cal]="baseline + calibration"
                     [baseline_dur_cal]="baseline, duration-uncertainty PLDA + calibration"
                     [proposed_cal]="proposed (posterior mean) + calibration"
                     [proposed_mc_cal]="proposed MC + calibration"
                     [proposed_mc_unc_cal]="proposed MC, spread-uncertainty PLDA + calibration"
                     [baseline_qmf_dur]="baseline + QMF (duration)"
                     [proposed_mc_qmf_spread]="proposed MC + QMF (spread)"
                     [proposed_mc_qmf_dur_spread]="proposed MC + QMF (duration, spread)")
for seed in "${seed_list[@]}"; do
  for cond in "${conditions[@]}"; do
    train=${cond_train[$cond]} test=${cond_test[$cond]}
    for row in "${rows[@]}"; do
      name=${row_scores[$row]} qmf=${row_qmf[$row]:-} quality=()
      case $qmf in
        duration) quality=(--train-utt2dur "$data/$train/utt2dur" --utt2dur "$data/$test/utt2dur") ;;
        spread) quality=(--train-quality-emb "$(emb "$seed" proposed_mc "$train")"
                         --quality-emb "$(emb "$seed" proposed_mc "$test")") ;;
        duration,spread) quality=(--train-utt2dur "$data/$train/utt2dur" --utt2dur "$data/$test/utt2dur"
                                  --train-quality-emb "$(emb "$seed" proposed_mc "$train")"
                                  --quality-emb "$(emb "$seed" proposed_mc "$test")") ;;
      esac
      submit "seed$seed.calibrate_${cond}_$row" "$out/seed$seed/log/calibrate_${cond}_$row.log" \
        spkver calibrate --train-trials "$trials" --train-scores "$out/seed$seed/scores/$train/$name.txt" \
        --trials "$trials" --scores "$out/seed$seed/scores/$test/$name.txt" ${qmf:+--qmf "$qmf"} "${quality[@]}" \
        --out "$out/seed$seed/llr/$cond/$row.txt"
    done
  done
done
wait_jobs

log "step 5: EER, minDCF, actDCF, Cllr at P_tgt 0.01 over seeds ${seed_list[*]}"
# evaluate COND: spkver eval over the seeds' calibrated scores -> OUT/summary/COND.{json,csv,md}
evaluate() {
  local cond=$1 row seed systems=()
  for row in "${rows[@]}"; do
    systems+=(--system "${row_name[$row]}")
    for seed in "${seed_list[@]}"; do systems+=("$out/seed$seed/llr/$cond/$row.txt"); done
  done
  mkdir -p "$out/summary"
  spkver -q eval --trials "$trials" "${systems[@]}" --calibrated --p-target 0.01 \
    --json "$out/summary/$cond.json" --csv "$out/summary/$cond.csv" >"$out/summary/.$cond.md"
  mv "$out/summary/.$cond.md" "$out/summary/$cond.md"
}
# evaluate_seed SEED COND: one seed's calibrated scores with bootstrap intervals -> OUT/seedN/results/COND.*
evaluate_seed() {
  local seed=$1 cond=$2 row files=() names=() dir=$out/seed$1/results
  for row in "${rows[@]}"; do
    files+=("$out/seed$seed/llr/$cond/$row.txt")
    names+=("${row_name[$row]}")
  done
  mkdir -p "$dir"
  spkver -q eval --trials "$trials" --scores "${files[@]}" --names "${names[@]}" --calibrated --p-target 0.01 \
    --bootstrap "$bootstrap" --json "$dir/$cond.json" >"$dir/.$cond.md"
  mv "$dir/.$cond.md" "$dir/$cond.md"
}
seed_tag=seeds_${seeds// /_}
for cond in "${conditions[@]}"; do
  submit "evaluate_${cond}.$seed_tag" "$out/log/evaluate_$cond.log" evaluate "$cond"
  for seed in "${seed_list[@]}"; do
    submit "seed$seed.evaluate_${cond}.bootstrap_$bootstrap" "$out/seed$seed/log/evaluate_$cond.log" \
      evaluate_seed "$seed" "$cond"
  done
done
wait_jobs

log "step 6: spread of the MC embeddings by condition"
spread_args=()
for set in dev dev_tel dev_mixed; do
  spread_args+=(--set "$set")
  for seed in "${seed_list[@]}"; do spread_args+=("$(emb "$seed" proposed_mc "$set")"); done
done
python "$recipe_dir/local/spread_plot.py" "${spread_args[@]}" \
  --degradation dev_mixed "$data/dev_mixed/utt2degradation" --out "$out/spread.png" >"$out/.spread.md"
mv "$out/.spread.md" "$out/spread.md"

tmp=$(mktemp -d "$out/.results.XXXXXX")
{
  echo "# Calibration under mismatch, and the posterior's uncertainty: seeds ${seed_list[*]}"
  echo
  echo "PLDA scores of the main run's models ($main), calibrated to log-likelihood ratios by logistic regression"
  echo "(spkver calibrate) trained on the dev trials of one condition and applied to those of another. Cells:"
  echo "mean ± sample standard deviation over the seeds (spkver eval --calibrated --p-target 0.01). MC: the mean"
  echo "of $mc_samples posterior samples; QMF: calibration with the min / max of both sides' log quality measures"
  echo "(duration: utt2dur seconds; spread: mean per-dimension std. dev. of the MC embedding). Per seed, the"
  echo "figures with bootstrap 95% intervals ($bootstrap replicates resampling enrollment utterances)."
  for cond in "${conditions[@]}"; do
    printf '\n## %s\n\n' "${cond_label[$cond]}"
    cat "$out/summary/$cond.md"
    for seed in "${seed_list[@]}"; do
      printf '\n### Seed %s, with bootstrap 95%% confidence intervals\n\n' "$seed"
      cat "$out/seed$seed/results/$cond.md"
    done
  done
  printf '\n## Spread of the proposed model'"'"'s MC embeddings by condition (%s)\n\n' "$out/spread.png"
  cat "$out/spread.md"
} >"$tmp/results.md"
mv "$tmp/results.md" "$out/results.md"
rm -rf "$tmp"
log "results: $out/results.md"
cat "$out/results.md" >&2
