"""Result rows, tables (Markdown / CSV / JSON) and DET plots for speaker-verification systems.

A row is a plain dict, the one format the CLI, recipes and README tables share::

    {"name": "xvector-plda", "eer": 2.31,                      # EER in percent (ROCCH, ``metrics.eer``)
     "min_dcf": {"0.01": 0.2514, "0.001": 0.4021},             # NIST-normalised, keyed by str(p_target)
     "n_target": 1200, "n_nontarget": 48000,
     "act_dcf": {...}, "cllr": 0.21, "min_cllr": 0.12,         # only for calibrated (LLR) scores
     "eer_ci": [1.9, 2.8], "min_dcf_ci": {"0.01": [0.22, 0.29]}}  # optional bootstrap intervals

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

__all__ = ["evaluate_system", "results_table", "write_json", "read_json", "det_plot"]

# row key -> (header, Markdown format); dict-valued keys expand to one column per sub-key: "minDCF(0.01)";
# a [low, high] value (bootstrap interval) is shown as "[low, high]" in the column's format
_COLUMNS = {
    "name": ("System", "{}"),
    "eer": ("EER(%)", "{:.2f}"),
    "eer_ci": ("EER CI(%)", "{:.2f}"),
    "min_dcf": ("minDCF", "{:.4f}"),
    "min_dcf_ci": ("minDCF CI", "{:.4f}"),
    "act_dcf": ("actDCF", "{:.4f}"),
    "cllr": ("Cllr", "{:.4f}"),
    "min_cllr": ("minCllr", "{:.4f}"),
    "n_target": ("#target", "{:d}"),
    "n_nontarget": ("#nontarget", "{:d}"),
}
_DET_TICKS_PERCENT = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40)
_DET_LIMITS = (0.0005, 0.5)  # probability range shown on both DET axes


def evaluate_system(name: str, scores, labels, p_targets=(0.01, 0.001), calibrated: bool = False) -> dict:
    """The result row of one system: EER (%), minDCF per prior, trial counts (+ actDCF, Cllr, minCllr).

    scores: (n,) trial scores, higher = more target-like; labels: (n,) 1 = target, 0 = non-target.
    p_targets: priors for minDCF (and actDCF), keyed in the row by ``str(p)``. calibrated: the scores are
    natural-log likelihood ratios, so actDCF (Bayes threshold), Cllr and minCllr are meaningful and added.
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
    is_tar = lab.astype(bool)
    tar, non = s[is_tar], s[~is_tar]
    try:
        row = {"name": name, "eer": 100.0 * metrics.eer(tar, non),
               "min_dcf": dict(zip(map(str, priors), map(float, metrics.min_dcf(tar, non, priors)))),
               "n_target": int(tar.size), "n_nontarget": int(non.size)}
        if calibrated:
            row["act_dcf"] = dict(zip(map(str, priors), map(float, metrics.act_dcf(tar, non, priors))))
            row["cllr"] = metrics.cllr(tar, non)
            row["min_cllr"] = metrics.min_cllr(tar, non)
    except ValueError as e:
        raise ScoringInputError(f"evaluate_system({name!r}): {e}") from e
    return row


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
        + [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _COLUMNS])
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


def results_table(rows: list[dict], columns=None, fmt: str = "md") -> str:
    """Render result rows as a Markdown table (EER 2 decimals, DCF / Cllr 4 decimals) or as CSV.

    rows: dicts as ``evaluate_system`` returns. columns: row keys to show, in order (default: the known
    metrics present, then any other key); a dict-valued key (``min_dcf``) becomes one column per sub-key.
    fmt: ``"md"`` (aligned, numbers right-aligned, missing values "-") or ``"csv"`` (full precision, missing
    values empty). Returns the table text, ending with a newline.
    """
    rows = _check_rows(rows)
    if fmt not in ("md", "csv"):
        raise ScoringInputError(f"fmt must be 'md' or 'csv', got {fmt!r}")
    cols = _expand(rows, columns)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c[2] for c in cols])
        for row in rows:
            values = [_cell(row, key, sub) for key, sub, _, _ in cols]
            writer.writerow(["" if v is None else v for v in values])
        return buf.getvalue()
    cells = [[_md(_cell(row, key, sub), f) for key, sub, _, f in cols] for row in rows]
    headers = [c[2] for c in cols]
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(headers)]
    left = [key == "name" for key, *_ in cols]
    pad = [(str.ljust if lf else str.rjust) for lf in left]
    rule = [(":" + "-" * (w + 1)) if lf else ("-" * (w + 1) + ":") for w, lf in zip(widths, left)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(p(c, w) for p, c, w in zip(pad, r, widths)) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path, rows: list[dict]) -> Path:
    """Write ``{"systems": rows}`` to ``path`` atomically (numpy scalars converted; NaN rejected)."""
    rows = _check_rows(rows)
    try:
        text = json.dumps({"systems": rows}, indent=2, default=_jsonable, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ScoringInputError(f"{path}: rows cannot be written as JSON: {e}") from e
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return Path(path)


def read_json(path) -> list[dict]:
    """Rows from a file written by ``write_json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ScoringInputError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, dict) or not isinstance(data.get("systems"), list):
        raise ScoringInputError(f"{path}: expected an object with a 'systems' list")
    return _check_rows(data["systems"])


def det_plot(systems: dict, path, title: str | None = None) -> Path:
    """Plot DET curves of several systems to a PNG (written atomically) and return its path.

    systems: ``{name: (tar (n_tar,), non (n_non,))}`` scores per system, in legend order. Axes are
    probit-scaled, ticks labelled in percent (0.1 ... 40), both from 0.05 % to 50 %; each curve's EER
    (ROCCH, as in the tables) is marked on the diagonal and quoted in the legend.
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
