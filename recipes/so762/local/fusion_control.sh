#!/usr/bin/env bash
# Control for the fusion gain: is fusing the Bayesian x-vector with the baseline better than fusing two
# baselines (or two Bayesian models) trained with different seeds? Uses the scores of a finished main run;
# fusion and evaluation exactly as stage 6 (conf/eval.conf without the bootstrap, 2-fold cross-validation over
# enrollment speakers).
#
#   local/fusion_control.sh [--exp exp] [--seeds "0 1 2"]
#
# Writes EXP/control/<set>_<backend>_<pair>.json and prints a Markdown table of mean EER / minDCF over the seed
# pairs (a, b) = (0, 1), (1, 2), (2, 0): baseline a + baseline b, proposed a + proposed b, and the main run's
# baseline a + proposed a. Run from recipes/so762.
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
(( ${#seed_list[@]} >= 2 )) || { echo "fusion_control.sh: needs at least two seeds" >&2; exit 2; }
utt2spk=data/dev/utt2spk
[[ -f $utt2spk && -f data/dev/trials ]] || { echo "fusion_control.sh: no data/dev (run stage 1 first)" >&2; exit 2; }
out=$exp/control
mkdir -p "$out"
pairs=()
n=${#seed_list[@]}
for ((i = 0; i < n; i++)); do
  a=${seed_list[$i]} b=${seed_list[$(((i + 1) % n))]}
  (( n == 2 && i == 1 )) && break
  pairs+=("$a:$b")
done
for set in dev dev_tel; do
  for backend in cosine plda; do
    for pair in "${pairs[@]}"; do
      a=${pair%:*} b=${pair#*:}
      for kind in baseline proposed; do
        json=$out/${set}_${backend}_${kind}${a}_${kind}${b}.json
        [[ -f $json ]] && continue
        for s in "$a" "$b"; do
          [[ -f $exp/seed$s/scores/$set/${backend}_$kind.txt ]] || {
            echo "fusion_control.sh: $exp/seed$s/scores/$set/${backend}_$kind.txt missing (run stage 5)" >&2; exit 2; }
        done
        spkver eval --trials data/dev/trials --names "${kind}_a" "${kind}_b" \
          --scores "$exp/seed$a/scores/$set/${backend}_$kind.txt" "$exp/seed$b/scores/$set/${backend}_$kind.txt" \
          --fuse --fuse-cv 2 --fuse-utt2spk "$utt2spk" --json "$json" >/dev/null
      done
    done
  done
done
python - "$exp" "$out" "${pairs[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path
exp, out, pairs = Path(sys.argv[1]), Path(sys.argv[2]), [p.split(":") for p in sys.argv[3:]]
def fusion(path):
    row = next(r for r in json.loads(path.read_text())["systems"] if r["name"] == "fusion")
    return row["eer"], row["min_dcf"]["0.01"]
print("| eval set | back-end | baseline + baseline | proposed + proposed | baseline + proposed (same seed) |")
print("|---|---|---|---|---|")
for s, label in (("dev", "in-domain"), ("dev_tel", "telephone")):
    for backend in ("cosine", "plda"):
        cells = []
        for kind in ("baseline", "proposed"):
            vals = [fusion(out / f"{s}_{backend}_{kind}{a}_{kind}{b}.json") for a, b in pairs]
            cells.append(f"{statistics.fmean(v[0] for v in vals):.2f} / {statistics.fmean(v[1] for v in vals):.4f}")
        seeds = sorted({x for p in pairs for x in p})
        vals = [fusion(exp / f"seed{a}" / "results" / f"{s}_{backend}.json") for a in seeds]
        cells.append(f"{statistics.fmean(v[0] for v in vals):.2f} / {statistics.fmean(v[1] for v in vals):.4f}")
        print(f"| {label} | {backend} | " + " | ".join(cells) + " |")
PY
