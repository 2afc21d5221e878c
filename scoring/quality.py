"""Quality-measure calibration (QMF): score calibration whose scale and offset depend on the quality of both sides.

A trial's reliability depends on how much speech each side holds and on how uncertain its embedding is: short
recordings give scores shrunk towards the non-target mean and noisier, so one global calibration is
over-confident on short trials and under-confident on long ones. Quality-measure functions (QMFs) add per-trial
quality terms to the logistic-regression calibration, as NIST SRE systems did (Brümmer et al., "ABC system
description for NIST SRE 2010"; the FoCal toolkit's quality fusion) and as WeSpeaker's QMF calibration does
(Wang et al., "WeSpeaker baselines for VoxSRC2023", 2023: score plus log durations of both sides).

Quality measures of one utterance (:data:`MEASURES`): ``"duration"``, its speech duration in seconds, and
``"spread"``, the mean over dimensions of the per-dimension Monte Carlo standard deviation of its embedding
(``spread`` of ``spkver extract --mc-samples K``). Both enter as logarithms, q = log(value). A model enrolled
from several utterances has their summed duration and their mean spread.

Features of a trial with scores s (k systems; k = 1: a calibration) and the log measures q_e (enrollment side)
and q_t (test side), for the measures of ``quality`` in :data:`MEASURES` order (exactly :func:`feature_names`)::

    [ s_1..s_k,                                      the scores
      min(q_e, q_t), max(q_e, q_t)   per measure,    quality of the weaker and of the stronger side
      s_j * min(q_e, q_t), s_j * max(q_e, q_t)   per measure and system ]   quality-dependent scale

Every feature is symmetric in enrollment and test. The products let the slope of the score depend on quality
(the shrinkage of short trials); the min / max terms move the offset. The LLR is a ``LinearFusion`` of these
features: the prior-weighted logistic regression of ``scoring.fusion`` (same objective, same solver).

>>> rng = np.random.default_rng(0)
>>> n = 400
>>> y = np.repeat([1, 0], n // 2)
>>> dur = rng.uniform(1.0, 30.0, size=(n, 2))
>>> s = (2 * y - 1) * np.minimum(dur[:, 0], dur[:, 1]) / 10 + rng.normal(size=n)
>>> qmf = QualityCalibration(("duration",)).fit(s, y, dur[:, :1], dur[:, 1:])
>>> qmf.feature_names
('score', 'min_log_duration', 'max_log_duration', 'score*min_log_duration', 'score*max_log_duration')
>>> qmf.predict(s, dur[:, :1], dur[:, 1:]).shape
(400,)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from scoring.fusion import Calibration, LinearFusion
from scoring.io import Embeddings, ScoringInputError, Trials, atomic_write, read_npz

_FORMAT = "spkver-quality-calibration-v1"


@dataclass(frozen=True)
class Measure:
    """A per-utterance quality measure: what it is (``unit``), how a multi-utterance model combines it."""

    unit: str
    combine: Callable[[np.ndarray], float]


MEASURES = {"duration": Measure("seconds of speech", np.sum),
            "spread": Measure("mean per-dimension standard deviation of the embedding", np.mean)}


def parse_quality(quality) -> tuple[str, ...]:
    """Measure names from ``"duration,spread"`` or a sequence, in :data:`MEASURES` order; raises on unknown,
    repeated or no names."""
    names = [q.strip() for q in quality.split(",")] if isinstance(quality, str) else [str(q) for q in quality]
    unknown = [q for q in names if q not in MEASURES]
    if unknown or not names or len(set(names)) != len(names):
        raise ScoringInputError(f"quality measures {quality!r}: give one or more distinct names of "
                                f"{', '.join(MEASURES)} (comma-separated)")
    return tuple(q for q in MEASURES if q in names)


def feature_names(quality, n_systems: int = 1) -> tuple[str, ...]:
    """Names of the QMF features (see the module docstring), in column order."""
    quality = parse_quality(quality)
    systems = ["score"] if n_systems == 1 else [f"score{j + 1}" for j in range(n_systems)]
    terms = [f"{side}_log_{q}" for q in quality for side in ("min", "max")]
    return tuple(systems + terms + [f"{s}*{t}" for s in systems for t in terms])


def _checked_values(q, name: str, quality: tuple[str, ...], n: int) -> np.ndarray:
    """Raw measures (n, m) of one side, each a positive finite number; errors name the trial and measure."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1 and len(quality) == 1:
        q = q[:, None]
    if q.shape != (n, len(quality)):
        raise ScoringInputError(f"{name}: expected raw quality measures of shape ({n}, {len(quality)}) "
                                f"(columns {', '.join(quality)}), got {q.shape}")
    bad = ~(np.isfinite(q) & (q > 0))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ScoringInputError(f"{name}: {quality[j]} of trial {i} is {q[i, j]}; expected a positive finite "
                                f"number ({MEASURES[quality[j]].unit})")
    return q


def quality_features(scores, q_enroll, q_test, quality) -> np.ndarray:
    """QMF features (n, n_features) of scores (n,) or (n, k) and the raw measures (n, m) of each side
    (m = len(quality), columns in :data:`MEASURES` order; (n,) for one measure)."""
    quality = parse_quality(quality)
    S = np.asarray(scores, dtype=np.float64)
    S = S[:, None] if S.ndim == 1 else S
    if S.ndim != 2 or S.shape[1] == 0:
        raise ScoringInputError(f"scores: expected shape (n_trials,) or (n_trials, n_systems), got {S.shape}")
    qe = np.log(_checked_values(q_enroll, "q_enroll", quality, S.shape[0]))
    qt = np.log(_checked_values(q_test, "q_test", quality, S.shape[0]))
    lo, hi = np.minimum(qe, qt), np.maximum(qe, qt)
    terms = np.stack([lo, hi], axis=2).reshape(S.shape[0], -1)  # min_q1, max_q1, min_q2, max_q2, ...
    products = (S[:, :, None] * terms[:, None, :]).reshape(S.shape[0], -1)
    return np.concatenate([S, terms, products], axis=1)


class QualityCalibration:
    """Calibration (k = 1) or fusion (k > 1) of scores with quality-measure functions of both sides.

    ``quality``: measure names (``("duration",)``, ``("spread",)``, ``("duration", "spread")`` or
    ``"duration,spread"``); ``p_target``, ``reg``: as in ``LinearFusion``, which does the fitting on
    :func:`quality_features`. ``fit(scores, labels, q_enroll, q_test)``, ``predict(scores, q_enroll, q_test) ->
    llr (n,)``; scores (n,) or (n, k), raw measures (n, m) per side (seconds, mean spread; not logarithms).
    """

    def __init__(self, quality=("duration",), p_target: float = 0.5, reg: float = 1e-6):
        self.quality = parse_quality(quality)
        self.fusion = LinearFusion(p_target=p_target, reg=reg)
        self.n_systems: int | None = None

    @property
    def p_target(self) -> float:
        return self.fusion.p_target

    @property
    def weights(self) -> np.ndarray | None:
        """Weights (n_features,) of :attr:`feature_names`, None before fitting."""
        return self.fusion.weights

    @property
    def offset(self) -> float | None:
        return self.fusion.offset

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.n_systems is None:
            raise RuntimeError("QualityCalibration is not fitted: call fit() or load() first")
        return feature_names(self.quality, self.n_systems)

    def _features(self, scores, q_enroll, q_test) -> np.ndarray:
        shape = np.shape(scores)
        k = 1 if len(shape) == 1 else shape[-1]
        if self.n_systems is not None and k != self.n_systems:
            raise ScoringInputError(f"scores: {k} system(s), but the quality calibration was trained on "
                                    f"{self.n_systems}")
        return quality_features(scores, q_enroll, q_test, self.quality)

    def fit(self, scores, labels, q_enroll, q_test) -> "QualityCalibration":
        """Train on scores (n,) or (n, k), labels (n,) in {0, 1} and the raw measures of each side."""
        self.n_systems = None
        X = self._features(scores, q_enroll, q_test)
        self.fusion.fit(X, labels)
        self.n_systems = 1 if np.ndim(scores) == 1 else int(np.shape(scores)[-1])
        return self

    def predict(self, scores, q_enroll, q_test) -> np.ndarray:
        """Calibrated natural-log likelihood ratios (n,)."""
        if self.n_systems is None:
            raise RuntimeError("QualityCalibration is not fitted: call fit() or load() first")
        return self.fusion.predict(self._features(scores, q_enroll, q_test))

    def save(self, path) -> None:
        """Write the model to ``path`` (.npz, no pickle), atomically, with its measures and feature names."""
        if self.n_systems is None:
            raise RuntimeError("QualityCalibration is not fitted: nothing to save")
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), quality=np.array(self.quality),
                     feature_names=np.array(self.feature_names), n_systems=np.array(self.n_systems),
                     p_target=np.array(self.p_target), reg=np.array(self.fusion.reg), weights=self.weights,
                     offset=np.array(self.offset))

    @classmethod
    def load(cls, path) -> "QualityCalibration":
        """Read a model written by :meth:`save`; raises ScoringInputError naming the file when it is not one or
        its feature names are not the ones this code computes for its measures."""
        path = os.fspath(path)
        content = read_npz(path, "a quality calibration")
        keys = ("format", "quality", "feature_names", "n_systems", "p_target", "reg", "weights", "offset")
        missing = [k for k in keys if k not in content]
        if missing or str(content.get("format")) != _FORMAT:
            raise ScoringInputError(f"{path}: not a {_FORMAT} file (missing {missing or 'format tag'})")
        try:
            model = cls(content["quality"].tolist(), p_target=float(content["p_target"]), reg=float(content["reg"]))
        except ScoringInputError as err:
            raise ScoringInputError(f"{path}: {err}") from None
        model.n_systems = int(content["n_systems"])
        names = tuple(str(n) for n in content["feature_names"].tolist())
        weights = np.asarray(content["weights"], dtype=np.float64)
        if model.n_systems < 1 or names != model.feature_names or weights.shape != (len(names),) \
                or not np.isfinite(weights).all():
            raise ScoringInputError(f"{path}: features {list(names)} with weights of shape {weights.shape}; this "
                                    f"spkver computes {list(model.feature_names) if model.n_systems >= 1 else '?'}")
        model.fusion.weights, model.fusion.offset = weights, float(content["offset"])
        return model


def train_calibration(scores, labels, p_target: float = 0.5, quality: Sequence[str] = (), q_enroll=None,
                      q_test=None) -> Calibration | LinearFusion | QualityCalibration:
    """The calibration of labelled trial scores: what every "trained on another trial set" result applies.

    scores: (n,) or (n, 1) for one system -> a ``Calibration`` (llr = a s + b); (n, k > 1) -> a ``LinearFusion``;
    with ``quality`` measures (:data:`MEASURES`) -> a ``QualityCalibration`` of the k systems on the raw
    measures ``q_enroll`` / ``q_test`` (n, m) of the two sides. Fitted at prior ``p_target``; the model's
    ``predict`` (see :func:`apply_calibration`) gives natural-log likelihood ratios. Raises ``ScoringInputError``
    on shapes that disagree, labels that are not 0 / 1 of both classes, or missing quality measures.
    """
    S = np.asarray(scores, dtype=np.float64)
    S = S[:, None] if S.ndim == 1 else S
    labels = np.asarray(labels)
    if S.ndim != 2 or S.shape[1] == 0 or S.shape[0] != labels.shape[0]:
        raise ScoringInputError(f"calibration: scores {np.shape(scores)} and labels {labels.shape} do not match")
    if quality:
        if q_enroll is None or q_test is None:
            raise ScoringInputError(f"calibration on {', '.join(quality)} needs the quality measures of both "
                                    "sides of the training trials")
        return QualityCalibration(quality, p_target=p_target).fit(S, labels, q_enroll, q_test)
    if S.shape[1] == 1:
        return Calibration(p_target=p_target).fit(S[:, 0], labels)
    return LinearFusion(p_target=p_target).fit(S, labels)


def apply_calibration(model, scores, q_enroll=None, q_test=None) -> np.ndarray:
    """Log-likelihood ratios (n,) of ``scores`` (n,) or (n, k) under a model of :func:`train_calibration`
    (a ``QualityCalibration`` also takes the raw measures (n, m) of each side)."""
    S = np.asarray(scores, dtype=np.float64)
    S = S[:, None] if S.ndim == 1 else S
    if isinstance(model, QualityCalibration):
        if q_enroll is None or q_test is None:
            raise ScoringInputError(f"the calibration needs the quality measures {', '.join(model.quality)} of "
                                    "both sides of each trial")
        return model.predict(S, q_enroll, q_test)
    return model.predict(S[:, 0] if isinstance(model, Calibration) else S)


class QualityTable:
    """Raw per-utterance quality measures: ``values[measure] = {id: value}``, with ``sources[measure]`` (the
    files they came from) for error messages. The first value given for an id is kept."""

    def __init__(self):
        self.values: dict[str, dict[str, float]] = {q: {} for q in MEASURES}
        self.sources: dict[str, list[str]] = {q: [] for q in MEASURES}

    def add(self, measure: str, values: Mapping[str, float], source: str) -> "QualityTable":
        """Add ``{id: value}`` of ``measure`` read from ``source``; a non-positive or non-finite value raises
        naming the source and the id."""
        if measure not in MEASURES:
            raise ScoringInputError(f"{source}: unknown quality measure {measure!r}; valid: {', '.join(MEASURES)}")
        table = self.values[measure]
        for key, value in values.items():
            value = float(value)
            if not (np.isfinite(value) and value > 0):
                raise ScoringInputError(f"{source}: {measure} of {key!r} is {value}; expected a positive finite "
                                        f"number ({MEASURES[measure].unit})")
            table.setdefault(str(key), value)
        if values:
            self.sources[measure].append(str(source))
        return self

    def add_embeddings(self, emb: Embeddings, source: str | None = None) -> "QualityTable":
        """The known durations (``emb.duration``, NaN = unknown) and mean spreads (``emb.spread``) of ``emb``."""
        source = source or emb.source or "embeddings"
        ids = emb.ids.tolist()
        if emb.duration is not None:
            known = ~np.isnan(emb.duration)
            self.add("duration", dict(zip(np.asarray(ids)[known].tolist(), emb.duration[known].tolist())),
                     emb.duration_source or source)
        if emb.spread is not None:
            self.add("spread", dict(zip(ids, emb.spread.mean(axis=1, dtype=np.float64).tolist())), source)
        return self

    def lookup(self, ids, quality, enroll_map: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """Raw measures (n, m) of ``ids`` (n,); a model of ``enroll_map`` combines its utterances' values
        (:data:`MEASURES`). Raises naming the measure's files and the first id without a value."""
        quality = parse_quality(quality)
        uniq, inverse = np.unique(np.asarray(ids, dtype=str), return_inverse=True)
        out = np.empty((uniq.size, len(quality)))
        for j, q in enumerate(quality):
            table = self.values[q]
            for i, key in enumerate(uniq.tolist()):
                members = enroll_map[key] if enroll_map is not None and key in enroll_map else [key]
                missing = [m for m in members if m not in table]
                if missing:
                    where = ", ".join(self.sources[q]) or f"no file with {q} values"
                    raise ScoringInputError(f"{where}: no {q} for utterance {missing[0]!r}"
                                            + (f" (of model {key!r})" if members != [key] else ""))
                out[i, j] = MEASURES[q].combine(np.array([table[m] for m in members]))
        return out[inverse.reshape(-1)]

    def trial_sides(self, trials: Trials, quality, enroll_map=None) -> tuple[np.ndarray, np.ndarray]:
        """``(q_enroll (n, m), q_test (n, m))`` raw measures of each trial's two sides."""
        return self.lookup(trials.enroll, quality, enroll_map), self.lookup(trials.test, quality)


def read_quality(utt2dur=None, embeddings: Sequence = ()) -> QualityTable:
    """A :class:`QualityTable` from a Kaldi ``utt2dur`` (durations; they come first) and embedding files
    (``.npz`` arrays ``duration`` and ``spread``; Kaldi tables with ``NAME.spread.*``)."""
    from scoring.io import read_embeddings, read_utt2dur

    table = QualityTable()
    if utt2dur is not None:
        table.add("duration", read_utt2dur(utt2dur), os.fspath(utt2dur))
    for path in embeddings:
        table.add_embeddings(read_embeddings(path))
    return table
