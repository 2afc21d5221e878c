"""Mean and spread over training seeds of the `spkver eval --json` results of the so762 recipe (stage 7).

Reads ``EXP/seedN/RESULT.json`` for each seed N and each ``--entry LABEL BACKEND RESULT.json`` and prints
Markdown: a table of mean +- sample standard deviation (n - 1 in the denominator) of EER (%) and minDCF at
``--p-target`` over the seeds, then the per-seed figures with their bootstrap 95% confidence intervals (when
the JSON has them, i.e. `spkver eval --bootstrap N`). It only reads JSON and prints.

usage: python aggregate_seeds.py --exp EXP --seeds 0 1 2 --p-target 0.01
                                 --entry "dev (in-domain)" plda results/dev_plda.json [--entry ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

SYSTEMS = ("baseline", "proposed", "fusion")


def load_rows(path: Path) -> dict[str, dict]:
    """``{system name: row}`` of one `spkver eval --json` file; raises ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (did stage 6 run for this seed?)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    rows = data.get("systems") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ValueError(f"{path}: expected an object with a 'systems' list of named rows")
    return {r["name"]: r for r in rows}


def metric(row: dict, what: str, p_key: str, path: Path) -> float:
    """EER (%) or minDCF at ``p_key`` of one row."""
    try:
        return float(row["eer"]) if what == "eer" else float(row["min_dcf"][p_key])
    except KeyError:
        raise ValueError(f"{path}: system {row.get('name')!r} has no {what} at P_tgt {p_key}") from None


def mean_sd(values: list[float], digits: int) -> str:
    """``"m ± s"`` (sample standard deviation), or ``"m"`` for a single value."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def with_ci(value: float, ci, digits: int) -> str:
    if not ci or len(ci) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def aggregate(exp: Path, seeds: list[str], entries: list[tuple[str, str, str]], p_target: float,
              systems=SYSTEMS) -> str:
    """The Markdown report (see the module docstring)."""
    p_key = str(float(p_target))
    header = ["eval set", "back-end"] + [f"{s} EER (%)" for s in systems] + [f"{s} minDCF" for s in systems]
    summary = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    per_seed = ["| eval set | back-end | seed | " + " | ".join(f"{s} EER [95% CI] / minDCF [95% CI]"
                                                            for s in systems) + " |",
                "|" + "---|" * (3 + len(systems))]
    for label, backend, rel in entries:
        eer = {s: [] for s in systems}
        dcf = {s: [] for s in systems}
        for seed in seeds:
            path = exp / f"seed{seed}" / rel
            rows = load_rows(path)
            cells = []
            for s in systems:
                if s not in rows:
                    raise ValueError(f"{path}: no system {s!r} (has {sorted(rows)})")
                e, d = metric(rows[s], "eer", p_key, path), metric(rows[s], "min_dcf", p_key, path)
                eer[s].append(e)
                dcf[s].append(d)
                cells.append(f"{with_ci(e, rows[s].get('eer_ci'), 2)} / "
                             f"{with_ci(d, rows[s].get('min_dcf_ci', {}).get(p_key), 4)}")
            per_seed.append(f"| {label} | {backend} | {seed} | " + " | ".join(cells) + " |")
        summary.append(f"| {label} | {backend} | " + " | ".join([mean_sd(eer[s], 2) for s in systems]
                                                                 + [mean_sd(dcf[s], 4) for s in systems]) + " |")
    spread = "mean ± sample standard deviation" if len(seeds) > 1 else "a single seed"
    return "\n".join([
        f"# Results over {len(seeds)} seed(s): {' '.join(seeds)}", "",
        f"EER (%) and minDCF (P_tgt = {p_target:g}), {spread}.", "", *summary, "",
        "## Per seed, with bootstrap 95% confidence intervals (resampling enrollment utterances)", "",
        *per_seed, ""])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", type=Path, required=True, help="experiment folder holding seedN/ folders")
    parser.add_argument("--seeds", nargs="+", required=True)
    parser.add_argument("--p-target", type=float, required=True)
    parser.add_argument("--entry", nargs=3, action="append", required=True,
                        metavar=("LABEL", "BACKEND", "JSON"), help="JSON relative to EXP/seedN")
    args = parser.parse_args(argv)
    try:
        print(aggregate(args.exp, args.seeds, [tuple(e) for e in args.entry], args.p_target), end="")
    except ValueError as err:
        print(f"aggregate_seeds.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
