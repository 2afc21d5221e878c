"""The back-end of a verification system: scores from one or more extractors turned into one calibrated LLR.

Each extractor has a :class:`Branch`: a fitted scorer (``CosineScorer`` or ``PLDA``, with their own embedding
post-processing: the cosine mean; PLDA's centring, LDA, whitening and length norm), optionally followed by
S-norm or adaptive S-norm against stored cohort embeddings (``scoring.norm`` through
``scoring.pipeline.normalise_scores``). A :class:`CalibratedBackend` stacks the branch scores (n, k) and maps
them to natural-log likelihood ratios with a ``Calibration`` (k = 1) or a ``LinearFusion`` (k > 1), trained by
prior-weighted logistic regression on labelled trials (``scoring.fusion``), or with a ``QualityCalibration``
(``scoring.quality``), which also takes quality measures of each trial's two sides (speech duration, embedding
spread) from a ``QualityTable``.

Multi-utterance enrollment: PLDA branches score a model's utterances as a set (``multi="plda"``, the proper
multi-enrollment LLR), cosine branches score the mean embedding (``multi="mean"``).

>>> from scoring.cosine import CosineScorer
>>> from scoring.io import Embeddings, Trials
>>> emb = Embeddings(["a", "b", "c"], [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
>>> trials = Trials(["a", "a"], ["b", "c"], [1, 0])
>>> back = CalibratedBackend([Branch("x", CosineScorer())])
>>> raw = back.raw_scores(trials, [(emb, emb)])
>>> raw.shape, bool(raw[0, 0] > raw[1, 0])
((2, 1), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scoring.backend import score_trials
from scoring.cosine import CosineScorer
from scoring.fusion import Calibration, LinearFusion
from scoring.io import Embeddings, ScoringInputError, Trials
from scoring.pipeline import normalise_scores
from scoring.plda import PLDA
from scoring.quality import QualityCalibration, QualityTable

NORMS = ("none", "snorm", "asnorm")
SCORERS = {"cosine": CosineScorer, "plda": PLDA}


def scorer_kind(scorer) -> str:
    """``"cosine"`` or ``"plda"``: the key of ``SCORERS`` for a fitted scorer."""
    for kind, cls in SCORERS.items():
        if isinstance(scorer, cls):
            return kind
    raise TypeError(f"unsupported scorer {type(scorer).__name__}; valid: {', '.join(SCORERS)}")


def load_scorer(kind: str, path):
    """A scorer saved with its ``save`` method (``.npz``, no pickle)."""
    if kind not in SCORERS:
        raise ScoringInputError(f"{path}: unknown scorer kind {kind!r}; valid: {', '.join(SCORERS)}")
    return SCORERS[kind].load(path)


def input_dim(scorer) -> int | None:
    """Embedding dimension a fitted scorer expects (None: any, a cosine scorer without a mean)."""
    mean = getattr(scorer, "mean_", None)
    return None if mean is None else int(mean.shape[0])


@dataclass
class Branch:
    """One extractor's scoring: ``scorer`` (fitted), ``norm`` in ``NORMS`` against ``cohort`` embeddings
    (``top_k``: the adaptive S-norm cohort size, ``asnorm`` only)."""

    name: str
    scorer: object
    norm: str = "none"
    cohort: Embeddings | None = None
    top_k: int | None = None

    def __post_init__(self):
        scorer_kind(self.scorer)
        if self.norm not in NORMS:
            raise ScoringInputError(f"branch {self.name!r}: norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if (self.norm == "none") != (self.cohort is None):
            raise ScoringInputError(f"branch {self.name!r}: a cohort goes with norm 'snorm' or 'asnorm' only")
        if (self.norm == "asnorm") != (self.top_k is not None):
            raise ScoringInputError(f"branch {self.name!r}: top_k goes with norm 'asnorm' only (and it needs one)")
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) != self.top_k
                                       or self.top_k < 1):
            raise ScoringInputError(f"branch {self.name!r}: top_k must be a positive integer, got {self.top_k!r}")
        dim = input_dim(self.scorer)
        if self.cohort is not None and dim is not None and self.cohort.dim != dim:
            raise ScoringInputError(f"branch {self.name!r}: cohort embeddings ({self.cohort.source or 'cohort'}) "
                                    f"have dimension {self.cohort.dim}, the scorer expects {dim}")

    @property
    def kind(self) -> str:
        return scorer_kind(self.scorer)

    @property
    def multi(self) -> str:
        """Multi-utterance enrollment rule of ``scoring.backend.score_trials``."""
        return "plda" if self.kind == "plda" else "mean"

    def scores(self, trials: Trials, enroll: Embeddings, test: Embeddings, enroll_map=None) -> np.ndarray:
        """Trial scores (n,): back-end score, then the cohort normalisation when there is one."""
        s = score_trials(self.scorer, trials, enroll, test, enroll_map=enroll_map, multi=self.multi)
        if self.norm == "none":
            return s
        return normalise_scores(self.scorer, s, trials, enroll, test, self.cohort, enroll_map=enroll_map,
                                top_k=self.top_k, multi=self.multi)


class CalibratedBackend:
    """Branches (one per extractor, in order) and the calibration / fusion of their scores to LLRs."""

    def __init__(self, branches: Sequence[Branch], calibration: LinearFusion | None = None):
        if not branches:
            raise ScoringInputError("a back-end needs at least one branch")
        self.branches = list(branches)
        self.calibration = None
        if calibration is not None:
            self.set_calibration(calibration)

    def set_calibration(self, calibration: LinearFusion | QualityCalibration) -> None:
        """Use a fitted ``Calibration`` (one branch), ``LinearFusion`` with one weight per branch, or
        ``QualityCalibration`` of as many systems as branches."""
        if calibration.weights is None:
            raise ScoringInputError("the calibration is not fitted")
        k = len(self.branches)
        if isinstance(calibration, QualityCalibration):
            if calibration.n_systems != k:
                raise ScoringInputError(f"the quality calibration takes {calibration.n_systems} score(s) for {k} "
                                        "extractor(s)")
        elif calibration.weights.shape != (k,) or (k > 1 and isinstance(calibration, Calibration)):
            raise ScoringInputError(f"the calibration has {calibration.weights.shape[0]} weight(s) for {k} "
                                    "extractor(s)")
        self.calibration = calibration

    def raw_scores(self, trials: Trials, embeddings: Sequence[tuple[Embeddings, Embeddings]],
                   enroll_map=None) -> np.ndarray:
        """Scores (n_trials, n_branches) before calibration; ``embeddings[i] = (enroll, test)`` of branch i."""
        if len(embeddings) != len(self.branches):
            raise ScoringInputError(f"{len(embeddings)} embedding sets for {len(self.branches)} extractor(s)")
        return np.stack([b.scores(trials, e, t, enroll_map) for b, (e, t) in zip(self.branches, embeddings)],
                        axis=1)

    @property
    def quality(self) -> tuple[str, ...]:
        """The quality measures the calibration takes (``()``: none)."""
        return self.calibration.quality if isinstance(self.calibration, QualityCalibration) else ()

    def fit_calibration(self, raw, labels, p_target: float, quality=(), q_enroll=None, q_test=None
                        ) -> LinearFusion | QualityCalibration:
        """Train the calibration (k = 1) or fusion (k > 1) on raw scores (n, k) and labels (n,) at prior
        ``p_target``; returns it (also used from now on). With ``quality`` measures, a ``QualityCalibration``
        on the raw measures (n, m) of each side."""
        raw = np.asarray(raw, dtype=np.float64)
        if quality:
            model = QualityCalibration(quality, p_target=p_target).fit(raw, labels, q_enroll, q_test)
        elif len(self.branches) == 1:
            model = Calibration(p_target=p_target).fit(raw[:, 0], labels)
        else:
            model = LinearFusion(p_target=p_target).fit(raw, labels)
        self.set_calibration(model)
        return model

    def llr(self, raw, q_enroll=None, q_test=None) -> np.ndarray:
        """Calibrated natural-log likelihood ratios (n,) of raw scores (n, k) (and, for a quality calibration,
        the raw measures (n, m) of each side)."""
        if self.calibration is None:
            raise RuntimeError("the back-end has no calibration: call fit_calibration() first")
        raw = np.asarray(raw, dtype=np.float64)
        if self.quality:
            if q_enroll is None or q_test is None:
                raise ScoringInputError(f"the calibration needs the quality measures {', '.join(self.quality)} "
                                        "of both sides of each trial")
            return self.calibration.predict(raw, q_enroll, q_test)
        return self.calibration.predict(raw[:, 0] if isinstance(self.calibration, Calibration) else raw)

    def score(self, trials: Trials, embeddings: Sequence[tuple[Embeddings, Embeddings]],
              enroll_map=None, quality: QualityTable | None = None) -> np.ndarray:
        """Calibrated LLRs (n_trials,); ``quality``: the utterances' measures, for a quality calibration (a
        model of ``enroll_map`` combines its utterances' values)."""
        raw = self.raw_scores(trials, embeddings, enroll_map)
        if not self.quality:
            return self.llr(raw)
        if quality is None:
            raise ScoringInputError(f"the calibration needs the quality measures {', '.join(self.quality)} of the "
                                    "trials' utterances")
        return self.llr(raw, *quality.trial_sides(trials, self.quality, enroll_map))
