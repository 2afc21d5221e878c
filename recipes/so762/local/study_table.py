"""The so762 study side by side: each variant's proposed system and its fusion with the baseline, mean over
the requested seeds, next to the main run's baseline and proposed on the same seeds.

usage: python local/study_table.py [--exp exp] [--study exp_study] [--seeds 0 1 2] [--p-target 0.01]

Reads ``DIR/seedN/results/{dev,dev_tel}_{cosine,plda}.json`` (stage 6 of run.sh / study.sh) and prints two
Markdown tables (EER %, then minDCF), cells "proposed / fusion", every row over the same seeds; variants that
have not finished all of them are listed below the tables. It only reads JSON and prints.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from aggregate_seeds import load_rows, metric

SETS = (("dev", "cosine", "in-domain cosine"), ("dev", "plda", "in-domain PLDA"),
        ("dev_tel", "cosine", "telephone cosine"), ("dev_tel", "plda", "telephone PLDA"))


def finished(run: Path, seeds: list[str]) -> list[str]:
    return [s for s in seeds if all((run / f"seed{s}" / "results" / f"{n}_{b}.json").is_file() for n, b, _ in SETS)]


def means(run: Path, seeds: list[str], systems: tuple, what: str, p_key: str) -> list[str]:
    """One cell per evaluation set: the systems' means over ``seeds`` joined by " / "."""
    digits = 2 if what == "eer" else 4
    cells = []
    for name, backend, _ in SETS:
        values = {s: [] for s in systems}
        for seed in seeds:
            path = run / f"seed{seed}" / "results" / f"{name}_{backend}.json"
            rows = load_rows(path)
            for s in systems:
                values[s].append(metric(rows[s], what, p_key, path))
        cells.append(" / ".join(f"{statistics.fmean(values[s]):.{digits}f}" for s in systems))
    return cells


def table(exp: Path, study: Path, seeds: list[str], what: str, p_key: str) -> tuple[str, list[str]]:
    """The Markdown table and the names of the variants left out (not finished for every seed)."""
    head = ["system"] + [label for _, _, label in SETS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if finished(exp, seeds) != seeds:
        raise ValueError(f"{exp}: seeds {seeds} are not all finished (run.sh stage 6)")
    lines.append("| " + " | ".join(["baseline (main run)"] + means(exp, seeds, ("baseline",), what, p_key)) + " |")
    lines.append("| " + " | ".join(["main run: proposed / fusion"]
                                   + means(exp, seeds, ("proposed", "fusion"), what, p_key)) + " |")
    skipped = []
    for variant in sorted(p for p in study.iterdir() if p.is_dir()) if study.is_dir() else []:
        if finished(variant, seeds) != seeds:
            skipped.append(variant.name)
            continue
        lines.append("| " + " | ".join([f"{variant.name}: proposed / fusion"]
                                       + means(variant, seeds, ("proposed", "fusion"), what, p_key)) + " |")
    return "\n".join(lines) + "\n", skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", type=Path, default=Path("exp"))
    parser.add_argument("--study", type=Path, default=Path("exp_study"))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--p-target", type=float, default=0.01)
    args = parser.parse_args(argv)
    p_key = str(float(args.p_target))
    seeds = " ".join(args.seeds)
    try:
        eer, skipped = table(args.exp, args.study, args.seeds, "eer", p_key)
        dcf, _ = table(args.exp, args.study, args.seeds, "min_dcf", p_key)
        print(f"### EER (%), mean over seeds {seeds}; cells: proposed / fusion with the main run's baseline\n")
        print(eer)
        print(f"### minDCF (P_tgt = {args.p_target}), mean over seeds {seeds}\n")
        print(dcf, end="")
        if skipped:
            print(f"\nnot finished for every seed ({seeds}): {', '.join(skipped)}")
    except ValueError as err:
        print(f"study_table.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
