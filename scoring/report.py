"""Result rows, tables (Markdown / CSV / JSON) and DET plots for speaker-verification systems.

A row is a plain dict, the one format the CLI, recipes and README tables share::

    {"name": "xvector-plda", "eer": 2.31,      # EER in percent: the crossing EER (``metrics.eer``), as Kaldi's
                                               # compute-eer, SpeechBrain and WeSpeaker report it
     "eer_rocch": 2.18,                        # EER in percent on the ROC convex hull (``metrics.eer_rocch``)
     "min_dcf": {"0.01": 0.2514, "0.001": 0.4021},             # NIST-normalised, keyed by str(p_target)
     "n_target": 1200, "n_nontarget": 48000,
     "act_dcf": {...}, "cllr": 0.21, "min_cllr": 0.12,         # only for calibrated (LLR) scores
     "eer_ci": [1.9, 2.8], "min_dcf_ci": {"0.01": [0.22, 0.29]},  # optional bootstrap intervals
     "act_dcf_ci": {...}, "cllr_ci": [0.18, 0.25]}              # ... of calibrated scores

Rows of several runs of the same systems (training seeds) are combined by ``aggregate_runs``: each metric
becomes the mean over runs, its sample standard deviation goes under ``"sd"`` (same keys), ``"n_runs"`` counts
the runs; tables then show "mean ± sd". ``comparison_table`` renders the paper-style table (one line per
evaluation set and back-end, one column per system). Every table and JSON file of results in the project is
made by these functions from rows of ``evaluate_system``.

DET curves follow A. Martin et al., "The DET curve in assessment of detection task performance",
Eurospeech 1997: miss against false-alarm probability on normal-deviate (probit) axes.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from scoring import metrics
from scoring.io import ScoringInputError, atomic_write

__all__ = ["evaluate_system", "aggregate_runs", "results_table", "comparison_table", "write_json", "read_json",
           "det_plot"]

# row key -> (header, Markdown format); dict-valued keys expand to one column per sub-key: "minDCF(0.01)";
# a [low, high] value (bootstrap interval) is shown as "[low, high]" in the column's format
_COLUMNS = {
    "name": ("System", "{}"),
    "eer": ("EER(%)", "{:.2f}"),
    "eer_ci": ("EER CI(%)", "{:.2f}"),
    "eer_rocch": ("EER ROCCH(%)", "{:.2f}"),
    "min_dcf": ("minDCF", "{:.4f}"),
    "min_dcf_ci": ("minDCF CI", "{:.4f}"),
    "act_dcf": ("actDCF", "{:.4f}"),
    "act_dcf_ci": ("actDCF CI", "{:.4f}"),
    "cllr": ("Cllr", "{:.4f}"),
    "cllr_ci": ("Cllr CI", "{:.4f}"),
    "min_cllr": ("minCllr", "{:.4f}"),
    "n_target": ("#target", "{:d}"),
    "n_nontarget": ("#nontarget", "{:d}"),
    "n_runs": ("#runs", "{:d}"),
}
# metrics averaged over runs by ``aggregate_runs`` (trial counts and intervals are per run)
_RUN_METRICS = ("eer", "eer_rocch", "min_dcf", "act_dcf", "cllr", "min_cllr")
_DET_TICKS_PERCENT = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40)
_DET_LIMITS = (0.0005, 0.5)  # probability range shown on both DET axes


def evaluate_system(name: str, scores, labels, p_targets=(0.01, 0.001), calibrated: bool = False,
                    clusters=None, n_boot: int = 0, seed: int = 0) -> dict:
    """The result row of one system: EER (%, crossing and ROCCH), minDCF per prior, trial counts (+ actDCF, Cllr,
    minCllr; + bootstrap intervals).

    scores: (n,) trial scores, higher = more target-like; labels: (n,) 1 = target, 0 = non-target.
    p_targets: priors for minDCF (and actDCF), keyed in the row by ``str(p)``. calibrated: the scores are
    natural-log likelihood ratios, so actDCF (Bayes threshold), Cllr and minCllr are meaningful and added.
    n_boot > 0: 95% bootstrap intervals ``eer_ci`` (percent) and ``min_dcf_ci`` {p: [low, high]} (calibrated:
    also ``act_dcf_ci`` {p: [low, high]} and ``cllr_ci``) resampling ``clusters`` (n,) (the enrollment model or
    speaker of each trial: trials of one model are correlated, so resampling single trials would understate the
    spread).

    >>> row = evaluate_system("toy", [2.0, 3.0, 0.5, 0.0, 1.0, -1.0], [1, 1, 1, 0, 0, 0], p_targets=[0.5])
    >>> round(row["eer"], 2), round(row["eer_rocch"], 2), row["min_dcf"], row["n_target"]
    (33.33, 16.67, {'0.5': 0.3333333333333333}, 3)
    """
    if not isinstance(name, str) or not name:
        raise ScoringInputError(f"evaluate_system: name must be a non-empty string, got {name!r}")
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.shape != s.shape:
        raise ScoringInputError(f"evaluate_system({name!r}): scores {s.shape} and labels {lab.shape} must be 1-D "
                                "and of the same length")
    bad = (lab != 0) & (lab != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoringInputError(f"evaluate_system({name!r}): {int(bad.sum())} trial(s) without a 0/1 label, "
                                f"first at index {i} ({lab[i]!r}); evaluate labelled trials only")
    priors = [float(p) for p in np.atleast_1d(p_targets)]
    keys = [str(p) for p in priors]
    is_tar = lab.astype(bool)
    tar, non = s[is_tar], s[~is_tar]
    try:
        row = {"name": name, "eer": 100.0 * metrics.eer(tar, non), "eer_rocch": 100.0 * metrics.eer_rocch(tar, non),
               "min_dcf": dict(zip(keys, map(float, metrics.min_dcf(tar, non, priors)))),
               "n_target": int(tar.size), "n_nontarget": int(non.size)}
        if calibrated:
            row["act_dcf"] = dict(zip(keys, map(float, metrics.act_dcf(tar, non, priors))))
            row["cllr"] = metrics.cllr(tar, non)
            row["min_cllr"] = metrics.min_cllr(tar, non)
        if n_boot > 0:
            ci = metrics.bootstrap_ci(s, lab, clusters, metric=metrics.eer, n_boot=n_boot, seed=seed)
            row["eer_ci"] = [100.0 * ci.low, 100.0 * ci.high]
            row["min_dcf_ci"] = {}
            for p, key in zip(priors, keys):
                ci = metrics.bootstrap_ci(s, lab, clusters, metric=metrics.min_dcf, n_boot=n_boot, seed=seed,
                                          metric_kwargs={"p_target": p})
                row["min_dcf_ci"][key] = [ci.low, ci.high]
            if calibrated:
                row["act_dcf_ci"] = {}
                for p, key in zip(priors, keys):
                    ci = metrics.bootstrap_ci(s, lab, clusters, metric=metrics.act_dcf, n_boot=n_boot, seed=seed,
                                              metric_kwargs={"p_target": p})
                    row["act_dcf_ci"][key] = [ci.low, ci.high]
                ci = metrics.bootstrap_ci(s, lab, clusters, metric=metrics.cllr, n_boot=n_boot, seed=seed)
                row["cllr_ci"] = [ci.low, ci.high]
    except ValueError as e:
        raise ScoringInputError(f"evaluate_system({name!r}): {e}") from e
    return row


def aggregate_runs(runs) -> list[dict]:
    """Rows over several runs (e.g. training seeds) of the same systems: mean and sample standard deviation.

    runs: a list of row lists, one per run, each naming the same systems. Returns one row per system (in the
    first run's order) whose metrics (EER, EER ROCCH, minDCF, actDCF, Cllr, minCllr) are the means over runs,
    with ``"sd"`` holding the sample standard deviations (n - 1 in the denominator; 0 for a single run) under the
    same keys, ``"n_runs"`` the number of runs, and the trial counts of the first run.

    >>> a = [{"name": "x", "eer": 2.0, "min_dcf": {"0.01": 0.2}}]
    >>> b = [{"name": "x", "eer": 4.0, "min_dcf": {"0.01": 0.4}}]
    >>> row = aggregate_runs([a, b])[0]
    >>> row["eer"], round(row["sd"]["eer"], 4), round(row["min_dcf"]["0.01"], 2), row["n_runs"]
    (3.0, 1.4142, 0.3, 2)
    """
    if not isinstance(runs, (list, tuple)) or not runs:
        raise ScoringInputError("aggregate_runs: expected a non-empty list of runs (lists of result rows)")
    runs = [_check_rows(r) for r in runs]
    names = [r["name"] for r in runs[0]]
    for i, run in enumerate(runs[1:], 1):
        if sorted(r["name"] for r in run) != sorted(names):
            raise ScoringInputError(f"aggregate_runs: run {i} has systems {[r['name'] for r in run]}, "
                                    f"run 0 has {names}")
    out = []
    for name in names:
        rows = [next(r for r in run if r["name"] == name) for run in runs]
        agg = {"name": name, "n_runs": len(rows)}
        sd = {}
        for key in _RUN_METRICS:
            have = [key in r for r in rows]
            if not any(have):
                continue
            if not all(have):
                raise ScoringInputError(f"aggregate_runs: system {name!r} has {key!r} in some runs only")
            if isinstance(rows[0][key], dict):
                subs = list(rows[0][key])
                agg[key], sd[key] = {}, {}
                for sub in subs:
                    values = _values(rows, key, sub, name)
                    agg[key][sub], sd[key][sub] = _mean_sd(values)
            else:
                agg[key], sd[key] = _mean_sd(_values(rows, key, None, name))
        for key in ("n_target", "n_nontarget"):
            if key in rows[0]:
                agg[key] = rows[0][key]
        agg["sd"] = sd
        out.append(agg)
    return out


def _values(rows: list[dict], key: str, sub: str | None, name: str) -> list[float]:
    try:
        return [float(r[key][sub]) if sub is not None else float(r[key]) for r in rows]
    except (KeyError, TypeError, ValueError):
        what = f"{key}[{sub!r}]" if sub is not None else key
        raise ScoringInputError(f"aggregate_runs: system {name!r} has no numeric {what} in every run") from None


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _check_rows(rows) -> list[dict]:
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ScoringInputError("rows: expected a non-empty list of result dicts")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ScoringInputError(f"rows[{i}]: expected a dict with a string 'name', got {row!r:.80}")
    return list(rows)


def _expand(rows: list[dict], columns) -> list[tuple[str, str | None, str, str]]:
    """Columns as (key, sub_key or None, header, Markdown format)."""
    keys = list(columns) if columns is not None else (
        [k for k in _COLUMNS if any(k in r for r in rows)]
        + [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _COLUMNS and k != "sd"])
    out = []
    for key in keys:
        if not any(key in r for r in rows):
            present = sorted({k for r in rows for k in r})
            raise ScoringInputError(f"columns: no row has {key!r} (keys present: {present})")
        header, fmt = _COLUMNS.get(key, (key, None))
        subs = list(dict.fromkeys(s for r in rows if isinstance(r.get(key), dict) for s in r[key]))
        if subs:
            out += [(key, s, f"{header}({s})", fmt or "{:.4g}") for s in subs]
        else:
            out.append((key, None, header, fmt))
    return out


def _cell(row: dict, key: str, sub: str | None):
    value = row.get(key)
    return value.get(sub) if sub is not None and isinstance(value, dict) else value


def _sd(row: dict, key: str, sub: str | None):
    """The standard deviation over runs of a cell (rows of ``aggregate_runs``), or None."""
    sd = row.get("sd")
    return _cell(sd, key, sub) if isinstance(sd, dict) else None


def _md(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_md(v, fmt) for v in value) + "]"
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        integer = isinstance(value, (int, np.integer))
        if fmt in (None, "{}"):
            fmt = "{:d}" if integer else "{:.4g}"
        text = fmt.format(int(value)) if fmt == "{:d}" else fmt.format(value)
    else:
        text = str(value)
    return text.replace("|", "\\|")


def format_cell(row: dict, key: str, sub: str | None = None, ci: bool = False) -> str:
    """One metric of a row as the tables show it: EER 2 decimals, costs 4, "mean ± sd" for rows over runs,
    "-" where the row lacks it; with ``ci``, the bootstrap interval ``KEY_ci`` follows as "[low, high]" when the
    row has one."""
    fmt = _COLUMNS.get(key, (key, None))[1]
    text = _md(_cell(row, key, sub), fmt)
    sd = _sd(row, key, sub)
    if sd is not None and text != "-":
        text = f"{text} ± {_md(sd, fmt)}"
    interval = _cell(row, f"{key}_ci", sub) if ci else None
    if isinstance(interval, (list, tuple)) and text != "-":
        text = f"{text} {_md(interval, fmt)}"
    return text


def _markdown(headers: list[str], cells: list[list[str]], left: list[bool]) -> str:
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(headers)]
    pad = [(str.ljust if lf else str.rjust) for lf in left]
    rule = [(":" + "-" * (w + 1)) if lf else ("-" * (w + 1) + ":") for w, lf in zip(widths, left)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(p(c, w) for p, c, w in zip(pad, r, widths)) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def _csv(headers: list[str], cells: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if v is None else v for v in r] for r in cells])
    return buf.getvalue()


def results_table(rows: list[dict], columns=None, fmt: str = "md") -> str:
    """Render result rows as a Markdown table (EER 2 decimals, DCF / Cllr 4 decimals) or as CSV.

    rows: dicts as ``evaluate_system`` (or ``aggregate_runs``) returns. columns: row keys to show, in order
    (default: the known metrics present, then any other key); a dict-valued key (``min_dcf``) becomes one column
    per sub-key. fmt: ``"md"`` (aligned, numbers right-aligned, missing values "-", "mean ± sd" for rows over
    runs) or ``"csv"`` (full precision, missing values empty, standard deviations in "... sd" columns). Returns
    the table text, ending with a newline.
    """
    rows = _check_rows(rows)
    if fmt not in ("md", "csv"):
        raise ScoringInputError(f"fmt must be 'md' or 'csv', got {fmt!r}")
    cols = _expand(rows, columns)
    if fmt == "csv":
        headers, cells = [], [[] for _ in rows]
        for key, sub, header, _ in cols:
            with_sd = any(_sd(r, key, sub) is not None for r in rows)
            headers += [header] + ([f"{header} sd"] if with_sd else [])
            for row, line in zip(rows, cells):
                line.append(_cell(row, key, sub))
                if with_sd:
                    line.append(_sd(row, key, sub))
        return _csv(headers, cells)
    cells = [[format_cell(row, key, sub) for key, sub, _, _ in cols] for row in rows]
    return _markdown([c[2] for c in cols], cells, [key == "name" for key, *_ in cols])


_METRIC_NAMES = {"eer": "EER (%)", "eer_rocch": "EER ROCCH (%)", "min_dcf": "minDCF", "act_dcf": "actDCF",
                 "cllr": "Cllr", "min_cllr": "minCllr"}


def comparison_table(entries, p_target: float, systems=("baseline", "proposed", "fusion"),
                     metrics_shown=("eer", "min_dcf"), fmt: str = "md", ci: bool = False) -> str:
    """The paper-style table: one line per entry (evaluation set, back-end), one column per system, each cell
    the ``metrics_shown`` joined by " / " (minDCF and actDCF at ``p_target``), "mean ± sd" for rows over runs.

    entries: a list of ``(eval_set, backend, rows)`` with rows from ``evaluate_system`` / ``aggregate_runs``.
    A system missing from an entry's rows shows "-". fmt: "md" or "csv" (one column per system and metric, full
    precision). ci: Markdown cells add the rows' bootstrap 95% intervals (``evaluate_system(..., n_boot=N)``).
    """
    p_key = str(float(p_target))
    if fmt not in ("md", "csv"):
        raise ScoringInputError(f"fmt must be 'md' or 'csv', got {fmt!r}")
    unknown = [m for m in metrics_shown if m not in _METRIC_NAMES]
    if unknown or not metrics_shown:
        raise ScoringInputError(f"unknown metric {unknown[0] if unknown else None!r}; valid: "
                                f"{', '.join(_METRIC_NAMES)}")
    if not entries:
        raise ScoringInputError("comparison_table: no entries")
    subs = {m: (p_key if m in ("min_dcf", "act_dcf") else None) for m in metrics_shown}
    lines = []
    for eval_set, backend, rows in entries:
        by_name = {r["name"]: r for r in _check_rows(rows)}
        line = [eval_set, backend]
        for system in systems:
            row = by_name.get(system)
            if fmt == "md":
                line.append("-" if row is None else " / ".join(format_cell(row, m, subs[m], ci) for m in metrics_shown))
            else:
                line += [None if row is None else _cell(row, m, subs[m]) for m in metrics_shown]
        lines.append(line)
    if fmt == "csv":
        headers = ["eval set", "back-end"] + [f"{s} {_METRIC_NAMES[m]}" for s in systems for m in metrics_shown]
        return _csv(headers, lines)
    what = " / ".join(_METRIC_NAMES[m] for m in metrics_shown)
    headers = ["eval set", "back-end"] + [f"{s} {what}" for s in systems]
    return _markdown(headers, lines, [True, True] + [False] * len(systems))


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path, rows: list[dict], runs=None) -> Path:
    """Write ``{"systems": rows}`` to ``path`` atomically (numpy scalars converted; NaN rejected); with ``runs``
    (the per-run row lists that ``rows`` aggregate) also ``"runs": runs``."""
    rows = _check_rows(rows)
    data = {"systems": rows}
    if runs is not None:
        data["runs"] = [_check_rows(r) for r in runs]
    try:
        text = json.dumps(data, indent=2, default=_jsonable, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ScoringInputError(f"{path}: rows cannot be written as JSON: {e}") from e
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return Path(path)


def read_json(path, runs: bool = False):
    """Rows from a file written by ``write_json``; with ``runs``, ``(rows, per-run row lists or None)``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ScoringInputError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, dict) or not isinstance(data.get("systems"), list):
        raise ScoringInputError(f"{path}: expected an object with a 'systems' list")
    try:
        rows = _check_rows(data["systems"])
        per_run = [_check_rows(r) for r in data["runs"]] if "runs" in data else None
    except ScoringInputError as e:
        raise ScoringInputError(f"{path}: {e}") from None
    return (rows, per_run) if runs else rows


def det_plot(systems: dict, path, title: str | None = None) -> Path:
    """Plot DET curves of several systems to a PNG (written atomically) and return its path.

    systems: ``{name: (tar (n_tar,), non (n_non,))}`` scores per system, in legend order. Axes are
    probit-scaled, ticks labelled in percent (0.1 ... 40), both from 0.05 % to 50 %; each curve's EER
    (the crossing EER, as in the tables) is marked on the diagonal and quoted in the legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg only: never a GUI backend
    from matplotlib.figure import Figure

    if not isinstance(systems, dict) or not systems:
        raise ScoringInputError("det_plot: systems must be a non-empty dict {name: (tar, non)}")
    fig = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo, hi = ndtri(np.asarray(_DET_LIMITS))
    clip = (1e-9, 1 - 1e-9)  # keep 0 and 1 finite: those points fall outside the axes
    for name, pair in systems.items():
        try:
            tar, non = pair
            pmiss, pfa, _ = metrics.det_curve(tar, non, max_points=2000)
            e = metrics.eer(tar, non)
        except (TypeError, ValueError) as err:
            raise ScoringInputError(f"det_plot: system {name!r}: {err}") from err
        (line,) = ax.plot(ndtri(np.clip(pfa, *clip)), ndtri(np.clip(pmiss, *clip)), lw=1.5,
                          label=f"{name} (EER {100 * e:.2f}%)")
        d = ndtri(np.clip(e, *clip))
        ax.plot([d], [d], marker="o", ms=5, color=line.get_color())
    ax.plot([lo, hi], [lo, hi], ls=":", lw=0.8, color="0.5")
    ticks = ndtri(np.asarray(_DET_TICKS_PERCENT) / 100)
    labels = [f"{t:g}" for t in _DET_TICKS_PERCENT]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.grid(True, lw=0.4, color="0.85")
    ax.set_xlabel("False alarm probability (%)")
    ax.set_ylabel("Miss probability (%)")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
