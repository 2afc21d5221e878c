"""Back-end file formats: trial lists, score files, utt2spk / spk2utt, atomic writes; the back-end's error type.

Trial lists (`read_trials` detects the format from the lines):
- VoxCeleb:   ``1 enroll test`` / ``0 enroll test`` (1 = same speaker)
- Kaldi/NIST: ``enroll test target`` / ``enroll test nontarget``
- unlabelled: ``enroll test``
Score files: ``enroll test score`` lines.

Embeddings (``.npz`` with arrays ``ids`` and ``embeddings``, or Kaldi ``.ark``/``.scp``) are read and written
by `scoring.embio`; the error type, atomic writes and the table reader come from `scoring._base`. The public
names of both are re-exported here, so this module is the one place to import the back-end's file I/O from.

Every bad input raises `ScoringInputError` naming the file and line (or the id) at fault. Ids are
whitespace-free tokens, as in Kaldi tables.
"""

from __future__ import annotations

import os

import numpy as np

from scoring._base import (ScoringInputError, atomic_write, atomic_write_text, check_ids, read_fields,
                           read_npz, read_table, table_rows)
from scoring.embio import Embeddings, read_embeddings, write_embeddings

_VOX_LABELS = {"1": 1, "0": 0}
_KALDI_LABELS = {"target": 1, "nontarget": 0}
_FORMATS = ("voxceleb", "kaldi", "unlabelled")

__all__ = [
    "ScoringInputError", "atomic_write", "atomic_write_text", "read_fields", "read_npz", "read_table", "table_rows",
    "check_ids", "Trials", "check_labels", "read_trials", "write_trials", "read_scores", "write_scores",
    "align_scores", "read_utt2spk", "read_spk2utt", "read_utt2dur", "as_matrix", "Embeddings", "read_embeddings",
    "write_embeddings",
]


# ---------------------------------------------------------------------------------------------- trials
class Trials:
    """A trial list: enroll (n,) str, test (n,) str, label (n,) int8 (1 target, 0 non-target, -1 unknown).

    `source` (the file it was read from, if any) is used in error messages.
    """

    def __init__(self, enroll, test, label=None, source: str | None = None):
        self.enroll = np.asarray(enroll, dtype=str)
        self.test = np.asarray(test, dtype=str)
        self.source = source
        where = source or "trials"
        if self.enroll.ndim != 1 or self.enroll.shape != self.test.shape:
            raise ScoringInputError(f"{where}: enroll {self.enroll.shape} and test {self.test.shape} must be "
                                    "1-D arrays of the same length")
        label = np.full(len(self.enroll), -1) if label is None else np.asarray(label)
        if label.shape != self.enroll.shape:
            raise ScoringInputError(f"{where}: {label.shape[0] if label.ndim else 0} labels for "
                                    f"{len(self.enroll)} trials")
        bad = ~np.isin(label, (-1, 0, 1))
        if bad.any():
            i = int(np.argmax(bad))
            raise ScoringInputError(f"{where}: trial {i} has label {label[i].item()!r}; expected 1, 0 or -1")
        self.label = label.astype(np.int8)

    def __len__(self) -> int:
        return int(self.enroll.shape[0])

    def __repr__(self) -> str:
        return f"Trials(n={len(self)}, n_target={self.n_target}, n_nontarget={self.n_nontarget})"

    @property
    def n_target(self) -> int:
        return int(np.count_nonzero(self.label == 1))

    @property
    def n_nontarget(self) -> int:
        return int(np.count_nonzero(self.label == 0))

    @property
    def is_labelled(self) -> bool:
        """True when every trial has a known label."""
        return bool(np.all(self.label >= 0))

    def split_scores(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n,) aligned to the trials -> (target scores, non-target scores); unknown labels dropped."""
        scores = np.asarray(scores)
        if scores.shape != (len(self),):
            raise ScoringInputError(f"{self.source or 'trials'}: {scores.shape} scores for {len(self)} trials")
        return scores[self.label == 1], scores[self.label == 0]


def check_labels(trials: Trials) -> None:
    """Raise ScoringInputError unless every trial is labelled and both classes occur (needed by metrics)."""
    where = trials.source or "trials"
    if len(trials) == 0:
        raise ScoringInputError(f"{where}: the trial list is empty")
    unknown = np.flatnonzero(trials.label < 0)
    if unknown.size:
        i = int(unknown[0])
        raise ScoringInputError(f"{where}: trial {i} ({trials.enroll[i]} {trials.test[i]}) has no label "
                                f"({unknown.size} unlabelled trials)")
    if trials.n_target == 0:
        raise ScoringInputError(f"{where}: no target trials (all {len(trials)} are non-target)")
    if trials.n_nontarget == 0:
        raise ScoringInputError(f"{where}: no non-target trials (all {len(trials)} are target)")


def _trial_line_format(fields: list[str]) -> set[str]:
    """Formats a trial line can belong to (two when ambiguous, e.g. ``1 a target``)."""
    if len(fields) == 2:
        return {"unlabelled"}
    if len(fields) == 3:
        return ({"voxceleb"} if fields[0] in _VOX_LABELS else set()) | (
            {"kaldi"} if fields[2] in _KALDI_LABELS else set())
    return set()


def read_trials(path) -> Trials:
    """Read a VoxCeleb, Kaldi/NIST or unlabelled trial list (format detected; see the module docstring).

    Raises ScoringInputError naming the file and line for: a wrong number of fields, an unknown label,
    lines of different formats, a repeated (enroll, test) pair, or a file without trials.
    """
    path = os.fspath(path)
    rows: list[list[str]] = []
    numbers: list[int] = []
    fmt: set[str] = set(_FORMATS)
    fmt_line = 0
    seen: dict[tuple[str, str], int] = {}
    for number, _, fields in read_fields(path):
        kinds = _trial_line_format(fields)
        if not kinds:
            if len(fields) not in (2, 3):
                raise ScoringInputError(f"{path}:{number}: expected 2 or 3 fields (VoxCeleb '1 a b', Kaldi "
                                        f"'a b target|nontarget' or 'a b'), got {len(fields)}")
            raise ScoringInputError(f"{path}:{number}: unknown label in {' '.join(fields)!r}; expected "
                                    "'1|0 enroll test' or 'enroll test target|nontarget'")
        if not kinds & fmt:
            raise ScoringInputError(f"{path}:{number}: {'/'.join(sorted(kinds))} line in a file whose line "
                                    f"{fmt_line} is {'/'.join(sorted(fmt))}: mixed trial formats")
        if not fmt_line or len(fmt) > 1:
            fmt_line = number
        fmt &= kinds
        rows.append(fields)
        numbers.append(number)
    if not rows:
        raise ScoringInputError(f"{path}: no trials (empty file)")
    # A file of only ambiguous lines ('1 a target') is read as Kaldi: ids are rarely the words target/nontarget.
    kind = "kaldi" if "kaldi" in fmt else fmt.pop()
    if kind == "voxceleb":
        label = [_VOX_LABELS[r[0]] for r in rows]
        enroll, test = [r[1] for r in rows], [r[2] for r in rows]
    else:
        label = [_KALDI_LABELS[r[2]] for r in rows] if kind == "kaldi" else None
        enroll, test = [r[0] for r in rows], [r[1] for r in rows]
    for i, pair in enumerate(zip(enroll, test)):
        first = seen.setdefault(pair, numbers[i])
        if first != numbers[i]:
            raise ScoringInputError(f"{path}:{numbers[i]}: duplicate trial {pair[0]} {pair[1]} "
                                    f"(first on line {first})")
    return Trials(enroll, test, label, source=path)


def write_trials(path, trials: Trials, fmt: str = "kaldi") -> None:
    """Write `trials` atomically as fmt = "kaldi" (a b target), "voxceleb" (1 a b) or "unlabelled" (a b)."""
    if fmt not in _FORMATS:
        raise ScoringInputError(f"unknown trial format {fmt!r}; expected one of {_FORMATS}")
    if fmt != "unlabelled" and not trials.is_labelled:
        raise ScoringInputError(f"{os.fspath(path)}: cannot write unlabelled trials as {fmt}; use fmt='unlabelled'")
    check_ids(trials.enroll, os.fspath(path))
    check_ids(trials.test, os.fspath(path))
    rows = zip(trials.enroll.tolist(), trials.test.tolist(), trials.label.tolist())
    if fmt == "kaldi":
        lines = (f"{e} {t} {'target' if y == 1 else 'nontarget'}\n" for e, t, y in rows)
    elif fmt == "voxceleb":
        lines = (f"{y} {e} {t}\n" for e, t, y in rows)
    else:
        lines = (f"{e} {t}\n" for e, t, _ in rows)
    atomic_write_text(path, lines)


# ---------------------------------------------------------------------------------------------- scores
def read_scores(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read `enroll test score` lines -> (enroll (n,) str, test (n,) str, scores (n,) float64).

    Raises ScoringInputError naming the line for a wrong field count, a non-numeric or NaN/inf score,
    or a repeated (enroll, test) pair.
    """
    path = os.fspath(path)
    enroll, test, scores = [], [], []
    seen: dict[tuple[str, str], int] = {}
    for number, _, fields in read_fields(path):
        if len(fields) != 3:
            raise ScoringInputError(f"{path}:{number}: expected 'enroll test score', got {len(fields)} fields")
        try:
            value = float(fields[2])
        except ValueError:
            raise ScoringInputError(f"{path}:{number}: score {fields[2]!r} is not a number") from None
        if not np.isfinite(value):
            raise ScoringInputError(f"{path}:{number}: score is {fields[2]} (NaN/inf not allowed)")
        first = seen.setdefault((fields[0], fields[1]), number)
        if first != number:
            raise ScoringInputError(f"{path}:{number}: duplicate score for {fields[0]} {fields[1]} "
                                    f"(first on line {first})")
        enroll.append(fields[0])
        test.append(fields[1])
        scores.append(value)
    return np.asarray(enroll, dtype=str), np.asarray(test, dtype=str), np.asarray(scores, dtype=np.float64)


def write_scores(path, trials: Trials, scores) -> None:
    """Write `enroll test score` lines (trial order, 10 significant digits) atomically."""
    path = os.fspath(path)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ScoringInputError(f"{path}: {scores.shape} scores for {len(trials)} trials")
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.argmax(bad))
        raise ScoringInputError(f"{path}: score of trial {i} ({trials.enroll[i]} {trials.test[i]}) is "
                                f"{scores[i]}")
    check_ids(trials.enroll, path)
    check_ids(trials.test, path)
    rows = zip(trials.enroll.tolist(), trials.test.tolist(), scores.tolist())
    atomic_write_text(path, (f"{e} {t} {s:.10g}\n" for e, t, s in rows))


def align_scores(trials: Trials, path) -> np.ndarray:
    """Scores (n_trials,) from the score file `path`, in trial order; extra score lines are ignored.

    Raises ScoringInputError naming the first trial without a score (and the file), or any error of
    `read_scores`.
    """
    path = os.fspath(path)
    enroll, test, scores = read_scores(path)
    lookup = dict(zip(zip(enroll.tolist(), test.tolist()), scores.tolist()))
    pairs = list(zip(trials.enroll.tolist(), trials.test.tolist()))
    try:
        return np.fromiter((lookup[p] for p in pairs), dtype=np.float64, count=len(pairs))
    except KeyError as err:
        e, t = err.args[0]
        missing = sum(p not in lookup for p in pairs)
        raise ScoringInputError(f"{path}: no score for trial {e} {t} of {trials.source or 'the trial list'} "
                                f"({missing} of {len(pairs)} trials have none)") from None


# ---------------------------------------------------------------------------------------------- speakers
def read_utt2spk(path) -> dict[str, str]:
    """Read `utt spk` lines -> {utt: spk}; errors name the line (field count, repeated utterance)."""
    return read_table(path)


def read_utt2dur(path) -> dict[str, float]:
    """Read Kaldi `utt seconds` lines -> {utt: seconds}; errors name the line (not a positive finite number)."""
    path = os.fspath(path)
    out: dict[str, float] = {}
    for number, utt, value in table_rows(path):
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not (np.isfinite(seconds) and seconds > 0):
            raise ScoringInputError(f"{path}:{number}: duration of {utt} is {value!r}; expected positive seconds")
        out[utt] = seconds
    return out


def read_spk2utt(path) -> dict[str, list[str]]:
    """Read `spk utt1 utt2 ...` lines -> {spk: [utt, ...]}; errors name the line (no utterances, a
    repeated speaker, an utterance listed twice)."""
    path = os.fspath(path)
    out: dict[str, list[str]] = {}
    owner: dict[str, int] = {}
    for number, spk, utts in table_rows(path, max_fields=None):
        for utt in utts:
            if utt in owner:
                raise ScoringInputError(f"{path}:{number}: utterance {utt} listed twice (also line {owner[utt]})")
            owner[utt] = number
        out[spk] = utts
    return out


def as_matrix(X, name: str, dim: int | None = None, keep_float32: bool = False) -> np.ndarray:
    """Validate a finite 2-D float array (n, dim) (float64, or float32 kept with `keep_float32`); errors name
    the argument and the first bad row."""
    try:
        X = np.asarray(X)
        X = X if keep_float32 and X.dtype == np.float32 else X.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise ScoringInputError(f"{name}: not a numeric array ({err})") from None
    if X.ndim != 2:
        raise ScoringInputError(f"{name}: expected a 2-D array (n, dim), got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise ScoringInputError(f"{name}: expected {dim} columns, got {X.shape[1]}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ScoringInputError(f"{name}: row {int(np.argmax(bad))} contains NaN or inf")
    return X
