"""Glue between the back-end pieces: build a scorer, normalise, fuse by cross-validation, compare systems.

This is where the CLI, the demo and the recipes get their results from, so every table in the project is made
the same way:

- ``build_scorer``: cosine (optionally centred on training embeddings) or LDA + PLDA trained on training
  embeddings (or loaded from ``.npz``).
- ``normalise_scores``: S-norm / adaptive S-norm with cohort scores from the same scorer.
- ``cross_validated_fusion``: logistic-regression fusion trained on folds of *enrollment speakers* and applied
  to the held-out fold, so no fused score comes from a fusion that saw its trial.
- ``train_calibration`` / ``apply_calibration`` (from ``scoring.quality``): a calibration (one system), fusion
  (several) or quality-measure calibration trained on one labelled trial set and applied to the scores of
  another (``spkver calibrate``, and ``evaluate_systems`` with ``fusion_train`` / ``qmf_train``).
- ``evaluate_systems``: the result rows of several systems (and their fusion, and their quality-measure
  calibration) on one trial list, with optional bootstrap confidence intervals (clusters = enrollment models);
  ``evaluate_runs`` does it for several runs (training seeds) of the same systems and aggregates them.

Rows and tables are made in ``scoring.report`` (``evaluate_system``, ``aggregate_runs``, ``comparison_table``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from scoring.backend import score_trials, trial_cohort_scores
from scoring.cosine import CosineScorer
from scoring.fusion import LinearFusion
from scoring.io import Embeddings, ScoringInputError, Trials, check_labels
from scoring.norm import s_norm
from scoring.plda import PLDA
from scoring.quality import apply_calibration, quality_features, train_calibration
from scoring.report import aggregate_runs, evaluate_system

BACKENDS = ("cosine", "plda")


def speaker_labels(train: Embeddings, utt2spk: Mapping[str, str]) -> np.ndarray:
    """Speaker of each training embedding, (n,) str; raises naming an embedding id missing from utt2spk."""
    missing = [u for u in train.ids if u not in utt2spk]
    if missing:
        raise ScoringInputError(f"utt2spk has no speaker for {len(missing)} training embedding(s), "
                                f"first {missing[0]!r}")
    return np.asarray([utt2spk[u] for u in train.ids])


def build_scorer(backend: str, plda_path=None, train: Embeddings | None = None,
                 utt2spk: Mapping[str, str] | None = None, lda_dim: int | None = None,
                 subtract_mean: bool = False, plda_iter: int = 10):
    """A fitted scorer for ``backend`` in {"cosine", "plda"}.

    cosine: ``subtract_mean`` centres on the mean of ``train``. plda: loaded from ``plda_path`` or trained on
    ``train`` with speakers from ``utt2spk`` (centring, LDA to ``lda_dim``, whitening, length norm, PLDA).
    """
    if backend == "cosine":
        scorer = CosineScorer(subtract_mean=subtract_mean)
        if subtract_mean:
            if train is None:
                raise ValueError("cosine with subtract_mean needs training embeddings")
            scorer.fit(train.vectors)
        return scorer
    if backend == "plda":
        if plda_path is not None:
            return PLDA.load(plda_path)
        if train is None or utt2spk is None:
            raise ValueError("PLDA needs a trained model or training embeddings with their speakers")
        return PLDA(lda_dim=lda_dim, n_iter=plda_iter).fit(train.vectors, speaker_labels(train, utt2spk))
    raise ValueError(f"unknown back-end {backend!r}; valid: {', '.join(BACKENDS)}")


def normalise_scores(scorer, scores, trials: Trials, enroll: Embeddings, test: Embeddings, cohort: Embeddings,
                     enroll_map=None, top_k: int | None = None, multi: str = "mean") -> np.ndarray:
    """S-norm (``top_k=None``) or adaptive S-norm (top-k cohort) of trial ``scores`` (n,)."""
    e_coh, e_idx, t_coh, t_idx = trial_cohort_scores(scorer, trials, enroll, test, cohort,
                                                     enroll_map=enroll_map, multi=multi)
    if top_k is not None:
        top_k = min(int(top_k), len(cohort))
    return s_norm(scores, e_coh, t_coh, top_k=top_k, enroll_index=e_idx, test_index=t_idx)


def speaker_folds(groups: Sequence, n_folds: int = 2, seed: int = 0) -> np.ndarray:
    """Fold index (n,) per trial: the unique ``groups`` (enrollment speakers or models) are shuffled with ``seed``
    and dealt round-robin into ``n_folds`` folds, so every trial of a group lands in the same fold."""
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if uniq.size < n_folds:
        raise ValueError(f"{uniq.size} groups cannot fill {n_folds} folds")
    order = np.random.default_rng(seed).permutation(uniq.size)
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    fold_of_group[order] = np.arange(uniq.size) % n_folds
    return fold_of_group[inverse.reshape(-1)]


def cross_validated_fusion(S, labels, groups, n_folds: int = 2, p_target: float = 0.5,
                           seed: int = 0) -> np.ndarray:
    """Fused log-likelihood ratios (n,) of the systems' scores S (n, n_systems).

    Each fold's trials are fused by a ``LinearFusion`` trained on the other folds' trials only; folds are made
    over ``groups`` (the enrollment speaker of each trial) so the fusion never sees the speakers it scores.
    """
    S = np.asarray(S, dtype=np.float64)
    labels = np.asarray(labels)
    if S.ndim != 2 or S.shape[0] != labels.shape[0]:
        raise ValueError(f"scores {S.shape} and labels {labels.shape} do not match")
    folds = speaker_folds(groups, n_folds, seed)
    fused = np.empty(S.shape[0])
    for k in range(n_folds):
        held = folds == k
        model = LinearFusion(p_target=p_target).fit(S[~held], labels[~held])
        fused[held] = model.predict(S[held])
    return fused


def _stacked(scores: Mapping[str, np.ndarray], names: Sequence[str], what: str) -> np.ndarray:
    """Scores (n, k) of systems ``names`` in that order; raises naming a system ``scores`` lacks."""
    missing = [n for n in names if n not in scores]
    if missing:
        raise ScoringInputError(f"{what}: no system {missing[0]!r}")
    return np.stack([np.asarray(scores[n], dtype=np.float64) for n in names], axis=1)


def evaluate_systems(systems: Mapping[str, np.ndarray], trials: Trials, p_targets: Sequence[float] = (0.01,),
                     fuse: bool = True, fusion_groups=None, n_folds: int = 2, fusion_prior: float = 0.5,
                     fusion_train: tuple[Mapping[str, np.ndarray], np.ndarray] | None = None,
                     calibrated: Sequence[str] = (), n_boot: int = 0, seed: int = 0, qmf: Sequence[str] = (),
                     qmf_quality: tuple[np.ndarray, np.ndarray] | None = None,
                     qmf_train: tuple[Mapping[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray] | None = None
                     ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Result rows for each system's trial scores (n,) and, with ``fuse``, their fusion; returns ``(rows,
    scores)`` where ``scores`` adds the fused log-likelihood ratios under ``"fusion"``.

    The fusion is cross-validated over ``fusion_groups`` (the enrollment speaker of each trial; default: the
    enrollment id) in ``n_folds`` folds, or, with ``fusion_train = ({name: scores (m,)}, labels (m,))``, trained
    on another labelled trial set and applied here. ``calibrated``: names of systems whose scores are LLRs
    (the fusion always is): actDCF, Cllr and minCllr are added to their rows. ``n_boot``: bootstrap intervals
    resampling enrollment models.

    ``qmf``: quality measures (``scoring.quality``) of a quality-measure calibration of all systems (a
    calibration of one, a quality fusion of several), row and scores ``"qmf"``; ``qmf_quality = (q_enroll (n, m),
    q_test (n, m))`` are the raw measures of the trials' sides. Cross-validated like the fusion (same folds), or
    trained on ``qmf_train = ({name: scores (m,)}, labels (m,), q_enroll (m, q), q_test (m, q))``.
    """
    check_labels(trials)
    labels = trials.label.astype(np.int64)
    scores = {name: np.asarray(s, dtype=np.float64) for name, s in systems.items()}
    for reserved in ("fusion", "qmf"):
        if reserved in scores:
            raise ScoringInputError(f"a system may not be named {reserved!r}: the name is kept for the "
                                    f"{'fused' if reserved == 'fusion' else 'quality-calibrated'} scores")
    names = list(scores)
    stacked = np.stack(list(scores.values()), axis=1)
    groups = trials.enroll if fusion_groups is None else np.asarray(fusion_groups)
    if fuse and len(scores) >= 2:
        if fusion_train is not None:
            train_scores, train_labels = fusion_train
            model = train_calibration(_stacked(train_scores, names, "fusion training scores"), train_labels,
                                      p_target=fusion_prior)
            scores["fusion"] = apply_calibration(model, stacked)
        else:
            scores["fusion"] = cross_validated_fusion(stacked, labels, groups, n_folds=n_folds,
                                                      p_target=fusion_prior, seed=seed)
    if qmf:
        if qmf_quality is None:
            raise ScoringInputError("qmf needs the quality measures of the evaluated trials (qmf_quality)")
        if qmf_train is not None:
            train_scores, train_labels, train_qe, train_qt = qmf_train
            model = train_calibration(_stacked(train_scores, names, "quality calibration training scores"),
                                      train_labels, p_target=fusion_prior, quality=qmf, q_enroll=train_qe,
                                      q_test=train_qt)
            scores["qmf"] = apply_calibration(model, stacked, *qmf_quality)
        else:  # a QualityCalibration is a LinearFusion of its features: the same folds and fits as the fusion
            scores["qmf"] = cross_validated_fusion(quality_features(stacked, *qmf_quality, qmf), labels, groups,
                                                   n_folds=n_folds, p_target=fusion_prior, seed=seed)
    rows = [evaluate_system(name, s, labels, p_targets,
                            calibrated=(name in ("fusion", "qmf") or name in calibrated),
                            clusters=trials.enroll, n_boot=n_boot, seed=seed)
            for name, s in scores.items()]
    return rows, scores


def evaluate_runs(runs: Sequence[Mapping[str, np.ndarray]], trials: Trials, **kwargs
                  ) -> tuple[list[dict], list[list[dict]], list[dict[str, np.ndarray]]]:
    """``evaluate_systems`` for each run (e.g. training seed) of the same systems, fused within each run, then
    ``aggregate_runs``: returns ``(aggregated rows, rows per run, scores per run)``."""
    if not runs:
        raise ScoringInputError("evaluate_runs: no runs")
    per_run, scores = [], []
    for run in runs:
        rows, s = evaluate_systems(run, trials, **kwargs)
        per_run.append(rows)
        scores.append(s)
    return aggregate_runs(per_run), per_run, scores


def score_systems(backend: str, systems: Mapping[str, tuple[Embeddings, Embeddings]], trials: Trials,
                  utt2spk: Mapping[str, str], lda_dim: int | None = None) -> dict[str, np.ndarray]:
    """Trial scores per system under one back-end; ``systems[name] = (train, eval)`` embeddings.

    The back-end is trained on each system's own training embeddings (cosine: the mean; PLDA: LDA + PLDA).
    """
    out = {}
    for name, (train, evaluation) in systems.items():
        scorer = build_scorer(backend, train=train, utt2spk=utt2spk, lda_dim=lda_dim,
                              subtract_mean=(backend == "cosine"))
        out[name] = score_trials(scorer, trials, evaluation, evaluation)
    return out
