"""Glue between the back-end pieces: build a scorer, normalise, fuse by cross-validation, compare systems.

This is where the CLI, the demo and the recipes get their results from, so every table in the project is made
the same way:

- ``build_scorer``: cosine (optionally centred on training embeddings) or LDA + PLDA trained on training
  embeddings (or loaded from ``.npz``).
- ``normalise_scores``: S-norm / adaptive S-norm with cohort scores from the same scorer.
- ``cross_validated_fusion``: logistic-regression fusion trained on folds of *enrollment speakers* and applied
  to the held-out fold, so no fused score comes from a fusion that saw its trial.
- ``evaluate_systems``: the result rows of several systems (and their fusion) on one trial list, with optional
  bootstrap confidence intervals (clusters = enrollment models).
- ``comparison_table``: the "baseline / proposed / fusion" table, EER(%) / minDCF per back-end and eval set.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from scoring import metrics
from scoring.backend import score_trials, trial_cohort_scores
from scoring.cosine import CosineScorer
from scoring.fusion import LinearFusion
from scoring.io import Embeddings, ScoringInputError, Trials, check_labels
from scoring.norm import s_norm
from scoring.plda import PLDA
from scoring.report import evaluate_system

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


def add_confidence_intervals(row: dict, scores, labels, clusters, p_targets: Sequence[float],
                             n_boot: int, seed: int = 0) -> dict:
    """Add bootstrap 95% intervals ``eer_ci`` (percent) and ``min_dcf_ci`` {p: [low, high]} to ``row``.

    Clusters (the enrollment model of each trial) are resampled with replacement: trials of one model are
    correlated, so resampling single trials would understate the spread.
    """
    ci = metrics.bootstrap_ci(scores, labels, clusters, metric=metrics.eer, n_boot=n_boot, seed=seed)
    row["eer_ci"] = [100.0 * ci.low, 100.0 * ci.high]
    row["min_dcf_ci"] = {}
    for p in p_targets:
        ci = metrics.bootstrap_ci(scores, labels, clusters, metric=metrics.min_dcf, n_boot=n_boot, seed=seed,
                                  metric_kwargs={"p_target": float(p)})
        row["min_dcf_ci"][str(float(p))] = [ci.low, ci.high]
    return row


def evaluate_systems(systems: Mapping[str, np.ndarray], trials: Trials, p_targets: Sequence[float] = (0.01,),
                     fuse: bool = True, fusion_groups=None, n_folds: int = 2, fusion_prior: float = 0.5,
                     n_boot: int = 0, seed: int = 0) -> list[dict]:
    """Result rows for each system's trial scores (n,) and, with ``fuse``, their cross-validated fusion.

    fusion_groups: the enrollment speaker of each trial (default: the enrollment id).
    """
    check_labels(trials)
    labels = trials.label.astype(np.int64)
    scores = {name: np.asarray(s, dtype=np.float64) for name, s in systems.items()}
    if fuse and len(scores) >= 2:
        groups = trials.enroll if fusion_groups is None else np.asarray(fusion_groups)
        scores["fusion"] = cross_validated_fusion(np.stack(list(scores.values()), axis=1), labels, groups,
                                                  n_folds=n_folds, p_target=fusion_prior, seed=seed)
    rows = []
    for name, s in scores.items():
        row = evaluate_system(name, s, labels, p_targets, calibrated=(name == "fusion"))
        if n_boot > 0:
            add_confidence_intervals(row, s, labels, trials.enroll, p_targets, n_boot, seed)
        rows.append(row)
    return rows


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


def _cell(row: dict | None, p_key: str) -> str:
    if row is None:
        return "-"
    return f"{row['eer']:.2f} / {row['min_dcf'][p_key]:.4f}"


def comparison_table(results: Mapping[tuple[str, str], Sequence[dict]], p_target: float,
                     systems: Sequence[str] = ("baseline", "proposed", "fusion"), fmt: str = "md") -> str:
    """The paper-style table: one line per (eval set, back-end), cells "EER(%) / minDCF(p_target)".

    results[(eval_set, backend)] = rows from ``evaluate_systems``.
    """
    p_key = str(float(p_target))
    header = ["eval set", "back-end"] + [f"{s} EER / minDCF" for s in systems]
    lines = []
    for (eval_set, backend), rows in results.items():
        by_name = {r["name"]: r for r in rows}
        lines.append([eval_set, backend] + [_cell(by_name.get(s), p_key) for s in systems])
    if fmt == "csv":
        return "\n".join(",".join(cells) for cells in [header] + lines) + "\n"
    if fmt != "md":
        raise ValueError(f"unknown table format {fmt!r}; valid: md, csv")
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"
