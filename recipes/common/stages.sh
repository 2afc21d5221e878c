# Stages 2-7 of the spkver recipes (train, extract, score, evaluate, system folders), the same for every corpus:
# a recipe's run.sh prepares its data (stage 1), registers its sets here, and calls these functions. Source after lib.sh.
#
# The recipe sets: common_dir, conf_dir, conf (configuration prefix: "" or e.g. "debug"), exp, nj, device,
# mc_samples, init_from_baseline, lda_dim (optional: overrides conf/*score_plda.conf's), train_dir (data dir of
# the training speakers: extractors and back-ends)
# and conf_overrides (extra `section.key=value` settings for both systems: `spkver train --set`), then calls
#
#   add_embed_set NAME DATA_DIR        a data dir to extract embeddings of ("train" must be one of them)
#   add_eval_set NAME LABEL GROUP P_TARGET TRIALS ENROLL_SET TEST_SET [ENROLL_MAP]
#                                      an evaluation: TRIALS over the embeddings of ENROLL_SET and TEST_SET
#                                      (ENROLL_MAP: model -> enrollment utterances); rows of one GROUP form one
#                                      table of the results, at GROUP's P_TARGET
#
# and then `run_stages SEED...` for stages 2-7 (those within [stage, stop_stage]): one run per SEED, in $exp
# for the seed "" (the configuration's own) and in $exp/seedN for seed N. Its pieces, each on OUT, the folder
# of one run:
#
#   train_system SYSTEM OUT [SEED]     2 / 3: spkver train of conf/[PREFIX_]SYSTEM.yaml with the run's overrides
#                                      -> OUT/SYSTEM (its resolved configuration: OUT/SYSTEM/config.yaml)
#   extract_embeddings OUT             4: OUT/emb/SYSTEM/SET.npz for every registered set
#   score_eval_sets OUT                5: OUT/scores/EVAL/{cosine,plda}_SYSTEM.txt (options in conf/score_*.conf)
#   evaluate_eval_sets OUT             6: OUT/results/EVAL_BACKEND.{json,png} (spkver eval, options in
#                                      conf/eval.conf)
#   write_results_table OUT            6: the tables of OUT/results/*.json -> OUT/results.md (spkver table)
#   build_systems OUT                  7: OUT/systems/{baseline,proposed,fusion} (spkver system build)
#
# and, after the runs, `aggregate_seeds SEED...` (stage 8 of a recipe with several seeds): mean ± sd over the
# seeds -> $exp/summary/NAME_BACKEND.{json,csv} and $exp/results.md (spkver eval --system, spkver table).
# The first four submit jobs to the pool of lib.sh; run_stages waits for them at the end of each stage.

systems=(baseline proposed)
backends=(cosine plda)
embed_sets=()
eval_sets=()
groups=()
declare -A set_dir=() eval_label=() eval_group=() eval_trials=() eval_enroll=() eval_test=() eval_map=() group_p=()

add_embed_set() {
  [[ -d $2 ]] || die "data dir of set $1: no such directory: $2"
  embed_sets+=("$1")
  set_dir[$1]=$2
}

add_eval_set() {
  local name=$1 label=$2 group=$3 p=$4 trials=$5 enroll=$6 test=$7 map=${8:-}
  [[ -f $trials ]] || die "trials of $label: no such file: $trials"
  [[ -z $map || -f $map ]] || die "enrollment map of $label: no such file: $map"
  [[ -n ${set_dir[$enroll]:-} && -n ${set_dir[$test]:-} ]] || die "eval set $name uses unregistered sets $enroll, $test"
  if [[ -z ${group_p[$group]:-} ]]; then
    groups+=("$group")
    group_p[$group]=$p
  elif [[ ${group_p[$group]} != "$p" ]]; then
    die "eval set $name: group '$group' is at P_tgt ${group_p[$group]}, not $p"
  fi
  eval_sets+=("$name")
  eval_label[$name]=$label
  eval_group[$name]=$group
  eval_trials[$name]=$trials
  eval_enroll[$name]=$enroll
  eval_test[$name]=$test
  eval_map[$name]=$map
}

# conf_file NAME: conf/PREFIX_NAME when the prefix is set and that file exists, else the same for the prefix
# without its last _part (debug_ecapa -> debug), else conf/NAME
conf_file() {
  local prefix=$conf
  while [[ -n $prefix ]]; do
    if [[ -f $conf_dir/${prefix}_$1 ]]; then
      echo "$conf_dir/${prefix}_$1"
      return
    fi
    [[ $prefix == *_* ]] && prefix=${prefix%_*} || prefix=
  done
  echo "$conf_dir/$1"
}

# read_opts ARRAY FILE: the options listed in FILE into ARRAY
read_opts() {
  [[ -f $2 ]] || die "no such options file: $2"
  read -ra "$1" <<<"$(sed -e 's/#.*//' "$2" | tr '\n' ' ')"
}

# plda_options ARRAY: the options of conf/[PREFIX_]score_plda.conf into ARRAY, with --lda-dim $lda_dim after them
# when the recipe sets lda_dim (the last --lda-dim is the one spkver uses)
plda_options() {
  read_opts "$1" "$(conf_file score_plda.conf)"
  if [[ -n ${lda_dim:-} ]]; then
    local -n _plda_opts=$1
    _plda_opts+=(--lda-dim "$lda_dim")
  fi
}

# marker prefix of run folder OUT: "" for $exp itself, "seed0." for $exp/seed0
_tag() {
  local rel=${1#"$exp"}
  rel=${rel#/}
  echo "${rel:+${rel//\//.}.}"
}

# _train_job BASE_YAML MODEL_DIR INIT_DIR|"" OVERRIDE...: spkver train of BASE_YAML with each OVERRIDE
# (section.key=value) as a --set; the resolved configuration is written to MODEL_DIR/config.yaml
_train_job() {
  local base=$1 model=$2 init=$3 override sets=()
  shift 3
  for override in "$@"; do sets+=(--set "$override"); done
  spkver train --config "$base" "${sets[@]}" --data "$train_dir" --exp "$model" --resume \
    ${device:+--device "$device"} ${init:+--init "$init"}
}

train_system() {
  local system=$1 out=$2 seed=${3:-}
  local base=$conf_dir/${conf:+${conf}_}$system.yaml
  [[ -f $base ]] || die "no such configuration: $base"
  local overrides=("data.cache_dir=$exp/feats" "${conf_overrides[@]}")
  [[ -z $seed ]] || overrides+=("seed=$seed")
  local init=""
  if [[ $system == proposed && $init_from_baseline == true ]]; then
    [[ -f $out/baseline/final.pt ]] || die "--init-from-baseline true needs the trained baseline $out/baseline"
    init=$out/baseline
  fi
  submit "$(_tag "$out")train_$system" "$out/log/train_$system.log" \
    _train_job "$base" "$out/$system" "$init" "${overrides[@]}"
}

extract_embeddings() {
  local out=$1 system set
  for system in "${systems[@]}"; do
    local mc=()
    [[ $system != proposed || -z $mc_samples ]] || mc=(--mc-samples "$mc_samples")
    for set in "${embed_sets[@]}"; do
      submit "$(_tag "$out")extract_${system}_$set" "$out/log/extract_${system}_$set.log" \
        spkver extract --model "$out/$system" --data "${set_dir[$set]}" --out "$out/emb/$system/$set.npz" \
        ${device:+--device "$device"} "${mc[@]}"
    done
  done
}

score_eval_sets() {
  local out=$1 system name cosine_opts plda_opts
  read_opts cosine_opts "$(conf_file score_cosine.conf)"
  plda_options plda_opts
  for system in "${systems[@]}"; do
    local emb=$out/emb/$system
    for name in "${eval_sets[@]}"; do
      local common=(--trials "${eval_trials[$name]}" --enroll "$emb/${eval_enroll[$name]}.npz"
                    --test "$emb/${eval_test[$name]}.npz" --train "$emb/train.npz")
      [[ -z ${eval_map[$name]} ]] || common+=(--enroll-map "${eval_map[$name]}")
      submit "$(_tag "$out")score_${name}_cosine_$system" "$out/log/score_${name}_cosine_$system.log" \
        spkver score "${common[@]}" --backend cosine "${cosine_opts[@]}" \
        --out "$out/scores/$name/cosine_$system.txt"
      submit "$(_tag "$out")score_${name}_plda_$system" "$out/log/score_${name}_plda_$system.log" \
        spkver score "${common[@]}" --backend plda --utt2spk "$train_dir/utt2spk" "${plda_opts[@]}" \
        --out "$out/scores/$name/plda_$system.txt"
    done
  done
}

evaluate_eval_sets() {
  local out=$1 name backend group eval_opts p_opts=()
  read_opts eval_opts "$(conf_file eval.conf)"
  for group in "${groups[@]}"; do p_opts+=(--p-target "${group_p[$group]}"); done
  for name in "${eval_sets[@]}"; do
    # fusion folds over enrollment speakers when enrollment ids are utterances of a data dir
    local fold_opts=()
    [[ -z ${eval_map[$name]} ]] && fold_opts=(--fuse-utt2spk "${set_dir[${eval_enroll[$name]}]}/utt2spk")
    for backend in "${backends[@]}"; do
      submit "$(_tag "$out")eval_${name}_$backend" "$out/log/eval_${name}_$backend.log" \
        spkver eval --trials "${eval_trials[$name]}" --names "${systems[@]}" \
        --scores "$out/scores/$name/${backend}_baseline.txt" "$out/scores/$name/${backend}_proposed.txt" \
        "${eval_opts[@]}" "${fold_opts[@]}" "${p_opts[@]}" \
        --json "$out/results/${name}_$backend.json" --det "$out/results/${name}_$backend.png"
    done
  done
}

# write_results_table OUT: one table per group (spkver table) -> OUT/results.md, written atomically
write_results_table() {
  local out=$1 group name backend tmp eval_opts
  read_opts eval_opts "$(conf_file eval.conf)"
  tmp=$(mktemp -d "$out/.results.XXXXXX")
  {
    echo "# Results: $recipe_name"
    echo
    echo "Systems: baseline, proposed (its Bayesian version) and their score fusion (spkver eval ${eval_opts[*]}),"
    echo "configurations $conf_dir/${conf:+${conf}_}{baseline,proposed}.yaml."
    echo "Cells: EER (%) / minDCF at the P_tgt of the table, with bootstrap 95% intervals where computed. EER is the"
    echo "crossing EER (as Kaldi's compute-eer, SpeechBrain and WeSpeaker report it); results/*.json also hold the"
    echo "ROC-convex-hull EER (eer_rocch). Back-ends: cosine (training mean subtracted) and LDA + PLDA, both trained"
    echo "on the training-set embeddings."
  } >"$tmp/results.md"
  for group in "${groups[@]}"; do
    printf '\n## %s: EER (%%) / minDCF (P_tgt = %s)\n\n' "$group" "${group_p[$group]}" >>"$tmp/results.md"
    _group_table "$group" "$out/results" --ci >>"$tmp/results.md"
  done
  mv "$tmp/results.md" "$out/results.md"
  rm -rf "$tmp"
  log "results: $out/results.md"
  cat "$out/results.md" >&2
}

# _group_entries GROUP DIR: the `spkver table` arguments (--entry LABEL BACKEND DIR/NAME_BACKEND.json for each
# eval set of GROUP and back-end), NUL-separated (labels hold spaces): read them with `mapfile -d ''`
_group_entries() {
  local group=$1 dir=$2 name backend
  for name in "${eval_sets[@]}"; do
    [[ ${eval_group[$name]} == "$group" ]] || continue
    for backend in "${backends[@]}"; do
      printf '%s\0%s\0%s\0%s\0' --entry "${eval_label[$name]}" "$backend" "$dir/${name}_$backend.json"
    done
  done
}

# _group_table GROUP DIR [OPTION...]: GROUP's table (spkver table, at its P_tgt) of the JSON files in DIR
_group_table() {
  local group=$1 dir=$2 entries=()
  shift 2
  mapfile -d '' entries < <(_group_entries "$group" "$dir")
  spkver table "${entries[@]}" --p-target "${group_p[$group]}" "$@"
}

# aggregate_seeds SEED...: stage 8, the mean ± sd over seeds of every eval set and back-end: spkver eval over
# the seeds' score files (each seed fused on its own, as in stage 6, without the bootstrap) ->
# $exp/summary/NAME_BACKEND.{json,csv}, then $exp/results.md: one table of means per group and the per-seed tables
# of stage 6 with their bootstrap intervals
aggregate_seeds() {
  local seed name backend group system eval_opts opts=() p_opts=() tmp
  read_opts eval_opts "$(conf_file eval.conf)"
  for ((i = 0; i < ${#eval_opts[@]}; i++)); do  # no bootstrap for the means: the per-seed tables have the CIs
    if [[ ${eval_opts[$i]} == --bootstrap ]]; then ((++i)); else opts+=("${eval_opts[$i]}"); fi
  done
  for group in "${groups[@]}"; do p_opts+=(--p-target "${group_p[$group]}"); done
  local seed_tag
  seed_tag=$(IFS=_; echo "$*")
  for name in "${eval_sets[@]}"; do
    local fold_opts=()
    [[ -z ${eval_map[$name]} ]] && fold_opts=(--fuse-utt2spk "${set_dir[${eval_enroll[$name]}]}/utt2spk")
    for backend in "${backends[@]}"; do
      local sys_opts=()
      for system in "${systems[@]}"; do
        sys_opts+=(--system "$system")
        for seed in "$@"; do sys_opts+=("$(run_dir "$seed")/scores/$name/${backend}_$system.txt"); done
      done
      # the marker names the seeds: a rerun over other seeds recomputes the summary
      submit "summary_${name}_${backend}.seeds_${seed_tag}" "$exp/log/summary_${name}_$backend.log" \
        spkver eval --trials "${eval_trials[$name]}" "${sys_opts[@]}" "${opts[@]}" "${fold_opts[@]}" \
        "${p_opts[@]}" --json "$exp/summary/${name}_$backend.json" --csv "$exp/summary/${name}_$backend.csv"
    done
  done
  wait_jobs
  tmp=$(mktemp -d "$exp/.results.XXXXXX")
  {
    echo "# Results over ${#@} seed(s): $*"
    echo
    echo "Cells: EER (%) / minDCF, mean ± sample standard deviation over the seeds (each seed's systems fused on"
    echo "their own, spkver eval ${opts[*]}). EER is the crossing EER (as Kaldi's compute-eer, SpeechBrain and"
    echo "WeSpeaker report it); summary/*.json and *.csv also hold the ROC-convex-hull EER (eer_rocch)."
  } >"$tmp/results.md"
  for group in "${groups[@]}"; do
    printf '\n## %s: EER (%%) / minDCF (P_tgt = %s)\n\n' "$group" "${group_p[$group]}" >>"$tmp/results.md"
    _group_table "$group" "$exp/summary" >>"$tmp/results.md"
    for seed in "$@"; do
      printf '\n### Seed %s, with bootstrap 95%% confidence intervals\n\n' "$seed" >>"$tmp/results.md"
      _group_table "$group" "$(run_dir "$seed")/results" --ci >>"$tmp/results.md"
    done
  done
  mv "$tmp/results.md" "$exp/results.md"
  rm -rf "$tmp"
  log "results: $exp/results.md"
  cat "$exp/results.md" >&2
}

# run_stages SEED...: stages 2-7 within [stage, stop_stage], one run per seed ("" = the configuration's seed)
run_stages() {
  local seed
  ((stop_stage >= 2)) || return 0
  ((${#embed_sets[@]} && ${#eval_sets[@]})) || die "no data sets registered (run stage 1 first)"
  if stage_on 2; then
    log "stage 2: training the baseline"
    for seed in "$@"; do train_system baseline "$(run_dir "$seed")" "$seed"; done
    wait_jobs
  fi
  if stage_on 3; then
    log "stage 3: training the proposed Bayesian model"
    for seed in "$@"; do train_system proposed "$(run_dir "$seed")" "$seed"; done
    wait_jobs
  fi
  if stage_on 4; then
    log "stage 4: embeddings"
    for seed in "$@"; do extract_embeddings "$(run_dir "$seed")"; done
    wait_jobs
  fi
  if stage_on 5; then
    log "stage 5: scoring"
    for seed in "$@"; do score_eval_sets "$(run_dir "$seed")"; done
    wait_jobs
  fi
  if stage_on 6; then
    log "stage 6: evaluation, fusion and tables"
    for seed in "$@"; do evaluate_eval_sets "$(run_dir "$seed")"; done
    wait_jobs
    for seed in "$@"; do write_results_table "$(run_dir "$seed")"; done
  fi
  if stage_on 7; then
    log "stage 7: system folders (baseline, proposed, fusion) for spkver verify"
    for seed in "$@"; do build_systems "$(run_dir "$seed")"; done
    wait_jobs
  fi
}

# build_systems OUT: 7: OUT/systems/{baseline,proposed,fusion}, self-contained folders for `spkver verify` and
# `spkver.load`: each extractor with the PLDA back-end trained on the training embeddings (LDA dimension from
# conf/score_plda.conf) and a calibration to log-likelihood ratios trained on the trials of the first eval set
# (the fusion system: both extractors and their fusion weights). Embeddings of stage 4 are reused.
build_systems() {
  local out=$1 cal=${eval_sets[0]} plda_opts lda=() i system
  [[ -z ${eval_map[$cal]} && ${eval_enroll[$cal]} == "${eval_test[$cal]}" ]] || {
    log "stage 7: eval set $cal has enrollment models, not utterances of one data dir: no system folders"
    return 0
  }
  plda_options plda_opts
  for ((i = 0; i < ${#plda_opts[@]}; i++)); do
    [[ ${plda_opts[$i]} == --lda-dim ]] && lda=(--lda-dim "${plda_opts[$((i + 1))]}")
  done
  local common=(--backend plda "${lda[@]}" --utt2spk "$train_dir/utt2spk" --calibrate-data "${set_dir[${eval_enroll[$cal]}]}"
                --calibrate-trials "${eval_trials[$cal]}" --overwrite)
  for system in "${systems[@]}"; do
    submit "$(_tag "$out")system_$system" "$out/log/system_$system.log" \
      spkver system build --model "$out/$system" --train-emb "$out/emb/$system/train.npz" \
      --calibrate-emb "$out/emb/$system/${eval_enroll[$cal]}.npz" "${common[@]}" --out "$out/systems/$system"
  done
  local models=() train=() calib=()
  for system in "${systems[@]}"; do
    models+=(--model "$out/$system")
    train+=("$out/emb/$system/train.npz")
    calib+=("$out/emb/$system/${eval_enroll[$cal]}.npz")
  done
  submit "$(_tag "$out")system_fusion" "$out/log/system_fusion.log" \
    spkver system build "${models[@]}" --name "${systems[@]}" --train-emb "${train[@]}" --calibrate-emb "${calib[@]}" \
    "${common[@]}" --out "$out/systems/fusion"
}

# run_dir SEED: the folder of one run
run_dir() {
  if [[ -z $1 ]]; then echo "$exp"; else echo "$exp/seed$1"; fi
}
