"""Score normalisation with a cohort: Z-norm, T-norm, symmetric S-norm and adaptive S-norm (AS-norm).

For a trial (e, t) with raw score s, let mu_e, sd_e be the mean and standard deviation of the scores of
the enrollment side e against the cohort, and mu_t, sd_t those of the test side t. Then

    z-norm = (s - mu_e) / sd_e,     t-norm = (s - mu_t) / sd_t,     S-norm = (z-norm + t-norm) / 2.

Adaptive S-norm (Matejka et al., "Analysis of score normalization in multilingual speaker recognition",
Interspeech 2017; Cumani et al., "Comparison of speaker recognition approaches for real applications",
Interspeech 2011) takes mu and sd over the `top_k` highest cohort scores of each side only.

Cohort scores can be given per trial (rows (n_trials, c)) or, more efficiently, once per unique enroll /
test id (rows (n_ids, c)) with an index (n_trials,) mapping trials to rows (as returned by
`scoring.backend.trial_cohort_scores`): the statistics are then computed once per id and gathered.
Standard deviations are population ones (ddof=0).
"""

from __future__ import annotations

import numpy as np

from scoring.io import ScoringInputError


def _as_cohort(cohort, name: str) -> np.ndarray:
    C = np.asarray(cohort, dtype=np.float64)
    if C.ndim != 2 or C.shape[1] == 0:
        raise ScoringInputError(f"{name}: expected cohort scores of shape (rows, cohort_size), got {C.shape}")
    bad = ~np.isfinite(C).all(axis=1)
    if bad.any():
        raise ScoringInputError(f"{name}: row {int(np.argmax(bad))} contains NaN or inf")
    return C


def cohort_stats(cohort, top_k: int | None = None, name: str = "cohort") -> tuple[np.ndarray, np.ndarray]:
    """Per-row (mean (m,), std (m,)) of cohort scores (m, c), over the `top_k` largest of each row if given.

    Top-k selection uses np.partition (O(c) per row). Raises ScoringInputError for a row whose (top-k)
    scores are all equal (the normalisation would divide by zero).
    """
    C = _as_cohort(cohort, name)
    if top_k is not None:
        if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= C.shape[1]:
            raise ScoringInputError(f"top_k={top_k!r} must be an integer in [1, cohort size {C.shape[1]}]")
        if top_k < C.shape[1]:
            C = np.partition(C, C.shape[1] - top_k, axis=1)[:, C.shape[1] - top_k:]
    mean = C.mean(axis=1)
    std = C.std(axis=1)
    flat = ~(std > 1e-12 * np.maximum(1.0, np.abs(mean)))
    if flat.any():
        raise ScoringInputError(f"{name}: row {int(np.argmax(flat))} has constant (top-k) cohort scores, "
                                "its standard deviation is 0")
    return mean, std


def _gather_stats(cohort, index, top_k, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Stats (n,) per trial: from per-trial rows (index None) or per-id rows gathered through `index` (n,)."""
    mean, std = cohort_stats(cohort, top_k, name)
    if index is None:
        if mean.shape[0] != n:
            raise ScoringInputError(f"{name}: {mean.shape[0]} rows for {n} scores; give one row per trial "
                                    "or an index")
        return mean, std
    index = np.asarray(index)
    if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
        raise ScoringInputError(f"{name} index: expected (n_trials,) = ({n},) integers, got {index.shape} "
                                f"{index.dtype}")
    if n and (index.min() < 0 or index.max() >= mean.shape[0]):
        raise ScoringInputError(f"{name} index: values must lie in [0, {mean.shape[0]}) (rows of the cohort "
                                "scores)")
    return mean[index], std[index]


def _as_scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ScoringInputError(f"scores: expected shape (n_trials,), got {s.shape}")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ScoringInputError(f"scores: trial {int(np.argmax(bad))} has a NaN or inf score")
    return s


def z_norm(scores, enroll_cohort, top_k: int | None = None, enroll_index=None) -> np.ndarray:
    """(s - mu_e) / sd_e per trial: scores (n,), enroll_cohort (n, c) or (n_ids, c) with enroll_index (n,)."""
    s = _as_scores(scores)
    mean, std = _gather_stats(enroll_cohort, enroll_index, top_k, s.shape[0], "enroll_cohort")
    return (s - mean) / std


def t_norm(scores, test_cohort, top_k: int | None = None, test_index=None) -> np.ndarray:
    """(s - mu_t) / sd_t per trial: scores (n,), test_cohort (n, c) or (n_ids, c) with test_index (n,)."""
    s = _as_scores(scores)
    mean, std = _gather_stats(test_cohort, test_index, top_k, s.shape[0], "test_cohort")
    return (s - mean) / std


def s_norm(scores, enroll_cohort, test_cohort, top_k: int | None = None, enroll_index=None,
           test_index=None) -> np.ndarray:
    """Symmetric S-norm, or adaptive S-norm when `top_k` is given: returns normalised scores (n,).

    scores (n,); enroll_cohort and test_cohort: per-trial rows (n, c) or per-id rows (n_ids, c) with
    enroll_index / test_index (n,) selecting each trial's row. The two cohorts may differ in size.

    >>> s_norm([2.0], [[0.0, 2.0]], [[1.0, 3.0]]).tolist()   # z = (2-1)/1, t = (2-2)/1
    [0.5]
    """
    s = _as_scores(scores)
    e_mean, e_std = _gather_stats(enroll_cohort, enroll_index, top_k, s.shape[0], "enroll_cohort")
    t_mean, t_std = _gather_stats(test_cohort, test_index, top_k, s.shape[0], "test_cohort")
    return 0.5 * ((s - e_mean) / e_std + (s - t_mean) / t_std)
