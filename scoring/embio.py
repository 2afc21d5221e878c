"""Embedding files of the back-end: `Embeddings` (ids + vectors) and their `.npz` / Kaldi `.ark` / `.scp` I/O.

Formats:
- ``.npz``: arrays ``ids`` (n,) str and ``embeddings`` (n, dim) (float32 when written here), optionally
  ``spread`` (n, dim) (per-dimension standard deviations, the Monte Carlo spread written by ``spkver extract
  --mc-samples K``) and ``duration`` (n,) (seconds; NaN = unknown);
- Kaldi ``.ark`` / ``.scp``: a table of vectors (a ``(1, dim)`` matrix per entry is accepted too), read and
  written with kaldiio; writing either suffix writes both files, the scp pointing at the archive by absolute
  path. A spread is a second table beside it, ``NAME.spread.ark`` / ``NAME.spread.scp``.

Every bad input raises `scoring.io.ScoringInputError` naming the file and the entry (or id) at fault. The
names here are re-exported by `scoring.io` (``from scoring.io import Embeddings, read_embeddings`` works).
"""

from __future__ import annotations

import os
import warnings

import kaldiio
import numpy as np

from scoring._base import ScoringInputError, atomic_write, check_ids

__all__ = ["Embeddings", "read_embeddings", "write_embeddings"]


class Embeddings:
    """Embeddings keyed by id: ids (n,) str, vectors (n, dim) float32 (finite, ids unique).

    `source` (the file they were read from, if any) is used in error messages. Optional per-utterance
    uncertainty (None when absent): `spread` (n, dim) float32, per-dimension standard deviations (finite,
    >= 0); `duration` (n,) float64 seconds (> 0, NaN = unknown), with `duration_source` the file they came from.
    """

    def __init__(self, ids, vectors, source: str | None = None, spread=None, duration=None,
                 duration_source: str | None = None):
        where = source or "embeddings"
        self.ids = np.asarray(ids, dtype=str)
        try:
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ScoringInputError(f"{where}: vectors are not a numeric (n, dim) array ({err})") from None
        self.source = source
        if self.ids.ndim != 1:
            raise ScoringInputError(f"{where}: ids must be 1-D, got shape {self.ids.shape}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != self.ids.shape[0]:
            raise ScoringInputError(f"{where}: vectors of shape {self.vectors.shape} for {len(self.ids)} ids; "
                                    "expected (n_ids, dim)")
        self._pos = {value: i for i, value in enumerate(self.ids.tolist())}
        if len(self._pos) != len(self.ids):
            uniq, counts = np.unique(self.ids, return_counts=True)
            raise ScoringInputError(f"{where}: duplicate id {str(uniq[np.argmax(counts > 1)])!r}")
        bad = ~np.isfinite(self.vectors).all(axis=1)
        if bad.any():
            raise ScoringInputError(f"{where}: embedding of id {str(self.ids[np.argmax(bad)])!r} contains NaN or inf")
        self.spread = None if spread is None else self._checked_spread(spread, where)
        self.duration = None if duration is None else self._checked_duration(duration, duration_source or where)
        self.duration_source = None if duration is None else duration_source or source

    def _checked_spread(self, spread, where: str) -> np.ndarray:
        try:
            spread = np.ascontiguousarray(spread, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ScoringInputError(f"{where}: spread is not a numeric (n, dim) array ({err})") from None
        if spread.shape != self.vectors.shape:
            raise ScoringInputError(f"{where}: spread has shape {spread.shape}; expected {self.vectors.shape} "
                                    "(one row of standard deviations per embedding)")
        for bad, what in ((~np.isfinite(spread).all(axis=1), "contains NaN or inf"),
                          ((spread < 0).any(axis=1), "is negative (a standard deviation must be >= 0)")):
            if bad.any():
                raise ScoringInputError(f"{where}: spread of id {str(self.ids[np.argmax(bad)])!r} {what}")
        return spread

    def _checked_duration(self, duration, where: str) -> np.ndarray:
        try:
            duration = np.asarray(duration, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ScoringInputError(f"{where}: durations are not numbers ({err})") from None
        if duration.shape != self.ids.shape:
            raise ScoringInputError(f"{where}: {duration.shape} durations for {len(self.ids)} ids")
        bad = ~(np.isnan(duration) | (np.isfinite(duration) & (duration > 0)))
        if bad.any():
            i = int(np.argmax(bad))
            raise ScoringInputError(f"{where}: duration of id {str(self.ids[i])!r} is {duration[i]}; expected a "
                                    "positive number of seconds")
        return duration

    def with_duration(self, durations, source: str | None = None) -> "Embeddings":
        """The same embeddings with `duration` from {id: seconds} (e.g. `scoring.io.read_utt2dur`); ids it lacks
        get NaN (unknown: an error only where a duration is needed)."""
        values = np.array([durations.get(key, np.nan) for key in self.ids.tolist()], dtype=np.float64)
        return Embeddings(self.ids, self.vectors, self.source, self.spread, values, os.fspath(source) if source
                          else None)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __contains__(self, key) -> bool:
        return key in self._pos

    def __repr__(self) -> str:
        return f"Embeddings(n={len(self)}, dim={self.dim})"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, ids) -> np.ndarray:
        """Row numbers (k,) int64 of `ids` (k,); raises ScoringInputError naming the first missing id."""
        ids = np.asarray(ids, dtype=str).tolist()
        pos = self._pos
        try:
            return np.array(list(map(pos.__getitem__, ids)), dtype=np.int64)
        except KeyError as err:
            missing = sum(key not in pos for key in ids)
            raise ScoringInputError(f"{self.source or 'embeddings'}: no embedding for id {err.args[0]!r} "
                                    f"({missing} of {len(ids)} requested ids missing)") from None

    def get(self, ids) -> np.ndarray:
        """Vectors (k, dim) of `ids` (k,)."""
        return self.vectors[self.index(ids)]


def _vectors_from_table(items, path: str) -> Embeddings:
    """Build Embeddings from (key, array) pairs of a Kaldi table, checking each entry."""
    ids, rows = [], []
    try:
        for key, value in items:
            value = np.asarray(value)
            if value.ndim == 2 and value.shape[0] == 1:
                value = value[0]
            if value.ndim != 1:
                raise ScoringInputError(f"{path}: entry {key!r} has shape {value.shape}; expected a vector")
            if rows and value.shape[0] != rows[0].shape[0]:
                raise ScoringInputError(f"{path}: entry {key!r} has dimension {value.shape[0]}, but entry "
                                        f"{ids[0]!r} has {rows[0].shape[0]}")
            ids.append(key)
            rows.append(value)
    except ScoringInputError:
        raise
    except Exception as err:  # kaldiio raises assorted errors on malformed tables
        where = f"after entry {ids[-1]!r}" if ids else "at the first entry"
        raise ScoringInputError(f"{path}: cannot read Kaldi table {where} ({type(err).__name__}: {err})") from None
    if not rows:
        raise ScoringInputError(f"{path}: no embeddings in file")
    return Embeddings(ids, np.stack(rows), source=path)


def _scp_items(path: str):
    """(key, vector) pairs of a Kaldi script file; errors name the entry whose archive cannot be read."""
    try:
        table = kaldiio.load_scp(path)
        keys = list(table)
    except Exception as err:  # kaldiio raises assorted errors on malformed files
        raise ScoringInputError(f"{path}: not a Kaldi script file ({type(err).__name__}: {err})") from None
    for key in keys:
        try:
            with warnings.catch_warnings():  # kaldiio warns before raising; the error below says it all
                warnings.simplefilter("ignore")
                value = table[key]
        except Exception as err:
            raise ScoringInputError(f"{path}: cannot read entry {key!r} ({type(err).__name__}: {err})") from None
        yield key, value


def _spread_table(path: str, suffix: str, emb: Embeddings) -> np.ndarray:
    """Rows (n, dim) of the spread table beside a Kaldi table, aligned to `emb.ids`."""
    table = _vectors_from_table(_scp_items(path) if suffix == ".scp" else kaldiio.load_ark(path), path)
    missing = [key for key in emb.ids.tolist() if key not in table]
    if missing:
        raise ScoringInputError(f"{path}: no spread for id {missing[0]!r} ({len(missing)} of {len(emb)} ids of "
                                f"{emb.source} missing)")
    return table.get(emb.ids)


def read_embeddings(path, spread: bool | None = None) -> Embeddings:
    """Read embeddings from `.npz` (arrays `ids`, `embeddings`), Kaldi `.scp` or `.ark` (via kaldiio).

    `spread`: None reads the per-dimension spread when the file has one (`.npz` array `spread`, or a Kaldi
    table `NAME.spread.scp` / `.ark` beside `NAME.scp` / `.ark`); True requires it; False skips it. An `.npz`
    array `duration` (n,) is read too. Spread problems (shape, NaN, negative, missing ids) raise naming the
    file and the id.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise ScoringInputError(f"{path}: no such file")
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("ids", "embeddings") if k not in data.files]
                if missing:
                    raise ScoringInputError(f"{path}: missing array(s) {missing} (found {data.files})")
                ids, vectors = data["ids"], data["embeddings"]
                if spread is True and "spread" not in data.files:
                    raise ScoringInputError(f"{path}: no 'spread' array (per-dimension standard deviations: "
                                            "extract with --mc-samples K)")
                spreads = data["spread"] if spread is not False and "spread" in data.files else None
                duration = data["duration"] if "duration" in data.files else None
        except (OSError, ValueError) as err:
            if isinstance(err, ScoringInputError):
                raise
            raise ScoringInputError(f"{path}: not a readable .npz file ({err})") from None
        if ids.size == 0:
            raise ScoringInputError(f"{path}: no embeddings in file")
        return Embeddings(ids, vectors, source=path, spread=spreads, duration=duration)
    if suffix == ".scp":
        emb = _vectors_from_table(_scp_items(path), path)
    elif suffix == ".ark":
        emb = _vectors_from_table(kaldiio.load_ark(path), path)
    else:
        raise ScoringInputError(f"{path}: unknown embedding format {suffix!r}; expected .npz, .scp or .ark")
    spread_path = os.path.splitext(path)[0] + ".spread" + os.path.splitext(path)[1]
    if spread is False or (spread is None and not os.path.exists(spread_path)):
        return emb
    if not os.path.exists(spread_path):
        raise ScoringInputError(f"{path}: no spread table {spread_path} beside it (per-dimension standard "
                                "deviations: extract with --mc-samples K)")
    return Embeddings(emb.ids, emb.vectors, source=path, spread=_spread_table(spread_path, suffix, emb))


def write_embeddings(path, ids, vectors, spread=None, duration=None) -> None:
    """Write embeddings atomically; the suffix picks the format.

    `.npz`: arrays `ids` and `embeddings` (float32), and `spread` / `duration` when given. `.ark` or `.scp`:
    a Kaldi archive and its index, both written (x.ark + x.scp), the scp pointing to the archive by absolute
    path; a spread goes to x.spread.ark + x.spread.scp (durations are not stored in Kaldi tables: utt2dur).
    """
    path = os.fspath(path)
    emb = Embeddings(ids, vectors, source=path, spread=spread, duration=duration)
    base, suffix = os.path.splitext(path)
    if suffix.lower() == ".npz":
        extra = {k: v for k, v in (("spread", emb.spread), ("duration", emb.duration)) if v is not None}
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, ids=emb.ids, embeddings=emb.vectors, **extra)
        return
    if suffix.lower() not in (".ark", ".scp"):
        raise ScoringInputError(f"{path}: unknown embedding format {suffix!r}; expected .npz, .scp or .ark")
    if emb.spread is not None:
        write_embeddings(base + ".spread" + suffix, emb.ids, emb.spread)
    check_ids(emb.ids, path)
    ark, scp = os.path.abspath(base + ".ark"), base + ".scp"
    with atomic_write(scp) as tmp_scp, atomic_write(ark) as tmp_ark:  # the archive is replaced first
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
            for key, vector in zip(emb.ids.tolist(), emb.vectors):
                writer(key, vector)
        with open(tmp_scp, encoding="utf-8") as fh:  # point the index at the final archive name
            lines = [line.replace(f" {tmp_ark}:", f" {ark}:", 1) for line in fh]
        with open(tmp_scp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
