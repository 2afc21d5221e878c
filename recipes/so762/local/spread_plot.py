#!/usr/bin/env python
"""The spread of Monte Carlo embeddings by condition: does the posterior know when the audio is degraded?

Reads the ``spread`` array (per-dimension standard deviation over posterior samples, ``spkver extract
--mc-samples K``) of embedding files, one or more per condition (e.g. one per training seed), takes each
utterance's mean spread over dimensions and averages it over the condition's files (the seeds' models), then

- writes a box plot of the per-utterance mean spread by condition (``--out``, PNG);
- prints a Markdown table: utterances, median and quartiles per condition, and against the first condition
  (the reference, e.g. clean dev) the Mann-Whitney probability that an utterance of the condition has the larger
  spread (0.5 = no difference; AUC = U / (n1 n2)) with its two-sided p-value, and, over the utterances both
  conditions share, the share whose spread is larger in the condition.

``--degradation NAME DATA/utt2degradation`` (written by ``spkver prepare channel`` for the mixed channel) adds
one row per degradation kind (noise, reverb, short) of condition NAME.

    python local/spread_plot.py --set dev exp_calib/seed0/emb/proposed_mc/dev.npz ... \\
        --set dev_tel ... --set dev_mixed ... --degradation dev_mixed data/dev_mixed/utt2degradation \\
        --out spread.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def mean_spread(paths: list[Path]) -> dict[str, float]:
    """Per utterance, the mean over dimensions of its spread, averaged over ``paths`` (utterances all share)."""
    from scoring.io import read_embeddings

    per_file = []
    for path in paths:
        emb = read_embeddings(path, spread=True)
        per_file.append(dict(zip(emb.ids.tolist(), emb.spread.mean(axis=1, dtype=np.float64).tolist())))
    common = set(per_file[0]).intersection(*per_file[1:])
    if not common:
        raise ValueError(f"{', '.join(map(str, paths))}: no utterance id common to all files")
    return {u: float(np.mean([values[u] for values in per_file])) for u in sorted(common)}


def read_degradation(path: Path) -> dict[str, str]:
    """``utt -> kind`` from an ``utt2degradation`` table (``utt kind key=value ...``); errors name the line."""
    kinds = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'utt kind key=value ...', got {line!r}")
        kinds[fields[0]] = fields[1]
    return kinds


def compare(reference: dict[str, float], other: dict[str, float]) -> tuple[float, float, float | None]:
    """(Mann-Whitney AUC of other > reference, its two-sided p-value, share of shared utterances whose spread is
    larger in ``other``; None without shared utterances)."""
    from scipy.stats import mannwhitneyu

    a, b = np.array(list(other.values())), np.array(list(reference.values()))
    u, p = mannwhitneyu(a, b, alternative="two-sided")
    shared = sorted(set(reference) & set(other))
    share = float(np.mean([other[k] > reference[k] for k in shared])) if shared else None
    return float(u) / (len(a) * len(b)), float(p), share


def table(groups: dict[str, dict[str, float]]) -> str:
    """The Markdown table of the module docstring; the first group is the reference."""
    names = list(groups)
    reference = groups[names[0]]
    lines = [f"| condition | utterances | median | quartiles | P(spread > {names[0]}) | p (Mann-Whitney) | "
             "share larger (same utterances) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        values = np.array(list(groups[name].values()))
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        if name == names[0]:
            rest = ["-", "-", "-"]
        else:
            auc, p, share = compare(reference, groups[name])
            rest = [f"{auc:.3f}", f"{p:.2g}", "-" if share is None else f"{share:.3f}"]
        lines.append(f"| {name} | {len(values)} | {med:.5f} | {q1:.5f} - {q3:.5f} | " + " | ".join(rest) + " |")
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, dict[str, float]], out: Path) -> None:
    """Box plot of the per-utterance mean spread by condition, written atomically to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoring.io import atomic_write

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(groups), 4.0))
    ax.boxplot([list(v.values()) for v in groups.values()], showfliers=True)
    ax.set_xticks(range(1, len(groups) + 1), [f"{k}\n(n={len(v)})" for k, v in groups.items()])
    ax.set_ylabel("mean spread of the MC embedding")
    ax.set_title("Posterior spread by condition")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs="+", action="append", required=True, metavar=("NAME", "EMB"),
                        help="a condition and its MC embedding files (.npz with 'spread'; one per seed); the first "
                             "--set is the reference")
    parser.add_argument("--degradation", nargs=2, metavar=("NAME", "UTT2DEGRADATION"),
                        help="condition NAME (a --set) is also split by the degradation kind of each utterance")
    parser.add_argument("--out", type=Path, required=True, help="the box plot (PNG)")
    args = parser.parse_args(argv)
    try:
        groups = {}
        for entry in args.set:
            if len(entry) < 2:
                raise ValueError(f"--set {entry[0]}: no embedding file")
            if entry[0] in groups:
                raise ValueError(f"--set {entry[0]} given twice")
            groups[entry[0]] = mean_spread([Path(p) for p in entry[1:]])
        if args.degradation is not None:
            name, path = args.degradation
            if name not in groups:
                raise ValueError(f"--degradation {name}: no --set of that name ({', '.join(groups)})")
            kinds = read_degradation(Path(path))
            missing = sorted(set(groups[name]) - set(kinds))
            if missing:
                raise ValueError(f"--degradation {name} {path}: no degradation of utterance {missing[0]!r}")
            for kind in sorted({kinds[u] for u in groups[name]}):
                groups[f"{name}: {kind}"] = {u: s for u, s in groups[name].items() if kinds[u] == kind}
    except (OSError, ValueError) as err:
        print(f"spread_plot.py: error: {err}", file=sys.stderr)
        return 2
    plot(groups, args.out)
    print(table(groups), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
