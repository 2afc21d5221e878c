"""Speaker-verification metrics: EER, minDCF, actDCF, Cllr / minCllr, DET points and bootstrap intervals.

Conventions shared by every function here:

- ``tar`` and ``non`` are 1-D arrays of target and non-target trial scores, higher = more target-like.
- A trial is accepted iff ``score >= threshold``. Tied scores share one threshold: an operating point never
  splits a tie. For the K distinct scores ``u_0 < ... < u_{K-1}`` the operating points are the thresholds
  ``u_0`` (accept all), ..., ``u_{K-1}`` and ``+inf`` (reject all), so K + 1 points with P_miss
  non-decreasing and P_fa non-increasing.
- Bad input raises ``scoring.io.ScoringInputError`` (a ``ValueError``) naming the argument and index at fault.
- Cost: one sort, O(N log N) (sort + cumulative sums as in WeSpeaker's ``score_metrics.py``), then O(N) on
  the sorted scores compressed into runs of one class (no per-threshold loop).

References: N. Brümmer and E. de Villiers, "The BOSARIS Toolkit: Theory, Algorithms and Code for Surviving the
New DCF", arXiv:1304.2865, 2013 (ROCCH, PAV, Cllr, minCllr); NIST SRE evaluation plans (normalised DCF);
A. Martin et al., "The DET curve in assessment of detection task performance", Eurospeech 1997.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from scipy.special import ndtri
from sklearn.isotonic import isotonic_regression

from scoring.io import ScoringInputError

__all__ = ["eer", "eer_rocch", "min_dcf", "act_dcf", "cllr", "min_cllr", "det_curve", "bootstrap_ci",
           "BootstrapCI"]


class _Counts(NamedTuple):
    """Score histogram compressed into runs: consecutive distinct scores with the same target fraction.

    Every operating point inside a run lies on the straight line joining the run's end points in
    (P_fa, P_miss) space, so EER (both kinds), minDCF, PAV and minCllr computed on the runs equal their values
    on all points, at a fraction of the memory: a run of only non-targets (or only targets) is one entry.
    """

    values: np.ndarray  # (R,) lowest score of each run, ascending: the run's threshold
    n_tar: np.ndarray  # (R,) target count (or bootstrap weight) in each run
    n_non: np.ndarray  # (R,) non-target count (or weight)


# ---------------------------------------------------------------------------------------------- validation
def _as_scores(x, name: str) -> np.ndarray:
    """``x`` as a (n,) float64 array; ValueError naming ``name`` if empty, not 1-D or not finite."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ScoringInputError(f"{name}: expected a 1-D array of scores, got shape {a.shape}")
    if a.size == 0:
        raise ScoringInputError(f"{name}: empty, at least one score is needed")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoringInputError(f"{name}: {int(bad.sum())} non-finite score(s), first at index {i} ({a[i]})")
    return a


def _as_priors(p_target, c_miss: float, c_fa: float) -> np.ndarray:
    p = np.atleast_1d(np.asarray(p_target, dtype=np.float64))
    if p.ndim != 1 or p.size == 0 or not np.all((p > 0) & (p < 1)):
        raise ScoringInputError(f"p_target must be a probability in (0, 1) or a 1-D list of them, got {p_target!r}")
    if not (c_miss > 0 and c_fa > 0 and math.isfinite(c_miss) and math.isfinite(c_fa)):
        raise ScoringInputError(f"c_miss and c_fa must be positive and finite, got c_miss={c_miss}, c_fa={c_fa}")
    return p


# --------------------------------------------------------------------------------------------- core passes
def _distinct(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an ascending array and their multiplicities, both (K,)."""
    new = np.empty(sorted_values.size, dtype=bool)
    new[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return sorted_values[starts], np.diff(np.append(starts, sorted_values.size))


def _runs(values: np.ndarray, n_tar: np.ndarray, n_non: np.ndarray) -> _Counts:
    """Drop empty entries of a histogram (K,) and merge neighbours with equal target fraction into runs."""
    keep = (n_tar + n_non) > 0
    if not keep.all():
        values, n_tar, n_non = values[keep], n_tar[keep], n_non[keep]
    total = n_tar + n_non
    # equal fractions compared by cross-multiplication: counts and weights are whole numbers, so exact
    change = n_tar[1:] * total[:-1] != n_tar[:-1] * total[1:]
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    return _Counts(values[starts], np.add.reduceat(n_tar, starts), np.add.reduceat(n_non, starts))


def _counts(tar: np.ndarray, non: np.ndarray) -> _Counts:
    """Run-compressed histogram of validated scores, sorting without argsort (large N is memory-bound)."""
    scores = np.concatenate([tar, non])
    scores.sort()
    small_is_tar = tar.size <= non.size
    small = np.sort(tar if small_is_tar else non)
    if not np.any(scores[1:] == scores[:-1]):  # no ties: label each sorted position, then cut label runs
        mark = np.zeros(scores.size, dtype=np.int8)
        mark[np.searchsorted(scores, small)] = 1
        starts = np.concatenate([[0], np.flatnonzero(np.diff(mark)) + 1])
        length = np.diff(np.append(starts, scores.size))
        n_small = length * mark[starts]
        n_tar, n_non = (n_small, length - n_small) if small_is_tar else (length - n_small, n_small)
        return _Counts(scores[starts], n_tar, n_non)
    values, total = _distinct(scores)
    small_values, small_counts = _distinct(small)
    n_small = np.zeros(values.size, dtype=np.int64)
    n_small[np.searchsorted(values, small_values)] = small_counts
    n_big = total - n_small
    return _runs(values, n_small, n_big) if small_is_tar else _runs(values, n_big, n_small)


def _rates(c: _Counts) -> tuple[np.ndarray, np.ndarray]:
    """P_miss and P_fa at the R + 1 run boundaries (threshold ``values[k]``, then ``+inf``), each (R + 1,)."""
    n_t, n_n = float(c.n_tar.sum()), float(c.n_non.sum())
    pmiss = np.zeros(c.values.size + 1)
    np.cumsum(c.n_tar, out=pmiss[1:])
    pmiss /= n_t
    pfa = np.zeros(c.values.size + 1)
    np.cumsum(c.n_non, out=pfa[1:])
    pfa = (n_n - pfa) / n_n
    return pmiss, pfa


def _crossing(pmiss: np.ndarray, pfa: np.ndarray) -> float:
    """Where the piecewise-linear curve through (pfa, pmiss) meets P_miss = P_fa (it runs from (1, 0) to (0, 1))."""
    d = pmiss - pfa  # non-decreasing from -1 to 1
    i = int(np.searchsorted(d, 0.0, side="left"))  # first point with d >= 0; i >= 1 because d[0] = -1
    t = -d[i - 1] / (d[i] - d[i - 1])
    return float(pfa[i - 1] + t * (pfa[i] - pfa[i - 1]))


def _pav(c: _Counts) -> np.ndarray:
    """PAV (isotonic regression) of P(target | score) over the runs, (R,); tied scores are one block."""
    w = (c.n_tar + c.n_non).astype(np.float64)
    return isotonic_regression(c.n_tar / w, sample_weight=w, increasing=True)


def _eer_rocch_counts(c: _Counts) -> float:
    posterior = _pav(c)
    boundaries = np.flatnonzero(np.diff(posterior) != 0) + 1  # run boundaries between PAV blocks
    idx = np.concatenate([[0], boundaries, [c.values.size]])
    pmiss, pfa = _rates(c)
    return _crossing(pmiss[idx], pfa[idx])


def _eer_counts(c: _Counts) -> float:
    return _crossing(*_rates(c))


def _min_dcf_counts(c: _Counts, p_target, c_miss: float = 1.0, c_fa: float = 1.0):
    """(min normalised DCF (P,), threshold (P,)) for each prior in ``p_target``."""
    p = _as_priors(p_target, c_miss, c_fa)
    pmiss, pfa = _rates(c)
    thresholds = np.append(c.values, np.inf)
    best, at = np.empty(p.size), np.empty(p.size)
    for j, pj in enumerate(p):
        dcf = (c_miss * pj * pmiss + c_fa * (1 - pj) * pfa) / min(c_miss * pj, c_fa * (1 - pj))
        k = int(np.argmin(dcf))
        best[j], at[j] = dcf[k], thresholds[k]
    return best, at


def _min_cllr_counts(c: _Counts) -> float:
    n_t, n_n = float(c.n_tar.sum()), float(c.n_non.sum())
    posterior = _pav(c)
    with np.errstate(divide="ignore"):  # posterior 0 or 1 -> infinite LLR, handled by the masks below
        llr = np.log(posterior) - np.log1p(-posterior) - math.log(n_t / n_n)
    t, n = c.n_tar > 0, c.n_non > 0  # a block with a target has posterior > 0, with a non-target < 1
    cost_t = np.sum(c.n_tar[t] * np.logaddexp(0.0, -llr[t])) / n_t
    cost_n = np.sum(c.n_non[n] * np.logaddexp(0.0, llr[n])) / n_n
    return float((cost_t + cost_n) / (2 * math.log(2)))


# ------------------------------------------------------------------------------------------ public metrics
def eer(tar, non) -> float:
    """Equal error rate (fraction) where the empirical miss and false-alarm rates cross: the EER of the field.

    The empirical operating points (one per distinct score, plus accept-all and reject-all) are joined by
    straight lines in (P_fa, P_miss) space and EER is the crossing with P_miss = P_fa, i.e. linear
    interpolation between the two operating points around the crossing. Kaldi (``compute-eer``), SpeechBrain
    (``EER``), WeSpeaker and scikit-learn's ``roc_curve`` pick one of those two points instead of interpolating,
    so on continuous scores they differ from this value by at most one step (``max(1/n_tar, 1/n_non)``; half a
    step for untied scores). Perfectly inverted scores give 1. Tied scores share one threshold.

    tar: (n_tar,) target scores; non: (n_non,) non-target scores.

    >>> eer([2.0, 3.0, 0.5], [0.0, 1.0, -1.0])   # one target below one non-target: 1/3 of each kind in error
    0.3333333333333333
    """
    return _eer_counts(_counts(_as_scores(tar, "tar"), _as_scores(non, "non")))


def eer_rocch(tar, non) -> float:
    """Equal error rate (fraction) on the ROC convex hull (ROCCH), as BOSARIS ``rocch2eer`` defines it.

    The ROCCH is obtained by PAV (pool adjacent violators) on the scores sorted ascending with ideal posteriors
    1 (target) / 0 (non-target), tied scores pooled into one block; its vertices are the operating points between
    PAV blocks. EER is where the hull (straight lines between vertices) crosses P_miss = P_fa. Any point of
    the hull is attainable by randomising between two thresholds, so this EER is at most 0.5 (a system with
    inverted scores gets 0.5, not 1) and is <= ``eer``. Brümmer & de Villiers, arXiv:1304.2865. Reported beside
    ``eer`` as ``eer_rocch`` in every result row; it is not the number other toolkits print.

    tar: (n_tar,) target scores; non: (n_non,) non-target scores.
    """
    return _eer_rocch_counts(_counts(_as_scores(tar, "tar"), _as_scores(non, "non")))


def min_dcf(tar, non, p_target, c_miss: float = 1.0, c_fa: float = 1.0, return_threshold: bool = False):
    """Minimum NIST-normalised detection cost over all thresholds (accept-all and reject-all included).

    DCF_norm = (c_miss P_miss p + c_fa P_fa (1 - p)) / min(c_miss p, c_fa (1 - p)); accept-all or reject-all
    costs exactly 1, so the result is in [0, 1]. Kaldi ``sid/compute_min_dcf.py``, NIST SRE10 plan.

    tar: (n_tar,) target scores; non: (n_non,) non-target scores.
    p_target: a prior in (0, 1), or a sequence of P priors evaluated in the same sorted pass.
    return_threshold: also return the threshold attaining the minimum (accept iff score >= threshold;
    ``inf`` means reject all).
    Returns a float (or (P,) array for a sequence of priors), plus the threshold(s) when asked.
    """
    c = _counts(_as_scores(tar, "tar"), _as_scores(non, "non"))
    best, at = _min_dcf_counts(c, p_target, c_miss, c_fa)
    if np.ndim(p_target) == 0:
        best, at = float(best[0]), float(at[0])
    return (best, at) if return_threshold else best


def act_dcf(tar_llr, non_llr, p_target, c_miss: float = 1.0, c_fa: float = 1.0):
    """Actual NIST-normalised DCF of calibrated log-likelihood-ratio scores at the Bayes threshold.

    The threshold is -logit(p_eff) = log(c_fa (1 - p) / (c_miss p)), p_eff = c_miss p / (c_miss p + c_fa (1 - p));
    a trial is accepted iff llr >= threshold. Normalised by min(c_miss p, c_fa (1 - p)) like ``min_dcf``, so
    act_dcf >= min_dcf and the gap measures miscalibration (BOSARIS ``fast_actDCF``).

    tar_llr: (n_tar,), non_llr: (n_non,) natural-log LLRs. p_target: a prior or a sequence of P priors.
    Returns a float, or a (P,) array for a sequence of priors.
    """
    tar, non = _as_scores(tar_llr, "tar_llr"), _as_scores(non_llr, "non_llr")
    p = _as_priors(p_target, c_miss, c_fa)
    out = np.empty(p.size)
    for j, pj in enumerate(p):
        thr = math.log(c_fa * (1 - pj) / (c_miss * pj))
        pmiss, pfa = np.mean(tar < thr), np.mean(non >= thr)
        out[j] = (c_miss * pj * pmiss + c_fa * (1 - pj) * pfa) / min(c_miss * pj, c_fa * (1 - pj))
    return float(out[0]) if np.ndim(p_target) == 0 else out


def cllr(tar_llr, non_llr) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer & du Preez, Computer Speech and Language 20, 2006).

    Cllr = (mean log2(1 + exp(-tar_llr)) + mean log2(1 + exp(non_llr))) / 2; 0 is perfect, 1 is an
    uninformative system answering LLR = 0. tar_llr: (n_tar,), non_llr: (n_non,) natural-log LLRs.
    """
    tar, non = _as_scores(tar_llr, "tar_llr"), _as_scores(non_llr, "non_llr")
    return float((np.mean(np.logaddexp(0.0, -tar)) + np.mean(np.logaddexp(0.0, non))) / (2 * math.log(2)))


def min_cllr(tar, non) -> float:
    """Cllr after the optimal monotone calibration of the scores (BOSARIS ``min_cllr`` / ``optimal_llr``).

    PAV gives the posterior of each tie block; LLR = logit(posterior) - log(n_tar / n_non) (the prior offset
    of the evaluation data). The extreme blocks get posterior 0 or 1, i.e. LLR -inf / +inf; such a block holds
    no trial of the class it would penalise, so its cost is exactly 0 (taken as that limit, never inf * 0).
    Tied scores are pooled first (BOSARIS breaks ties by input order instead). min_cllr <= cllr on any LLRs.

    tar: (n_tar,) target scores; non: (n_non,) non-target scores (any scale).
    """
    return _min_cllr_counts(_counts(_as_scores(tar, "tar"), _as_scores(non, "non")))


def det_curve(tar, non, max_points: int | None = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical DET points (pmiss (M,), pfa (M,), thresholds (M,)) from accept-all to reject-all.

    Point k accepts scores >= thresholds[k] (the last threshold is ``inf``); pmiss rises, pfa falls. The points
    are the corners of the empirical curve: points lying on a straight segment between two corners (a run of
    scores of one class) are left out. With more
    than ``max_points`` operating points the curve is decimated to about ``max_points`` points evenly spaced
    along its length on probit (normal deviate) axes, the scale DET plots use (Martin et al. 1997); the end
    points are always kept. ``max_points=None`` keeps every point.
    """
    c = _counts(_as_scores(tar, "tar"), _as_scores(non, "non"))
    pmiss, pfa = _rates(c)
    thresholds = np.append(c.values, np.inf)
    if max_points is not None:
        if max_points < 2:
            raise ScoringInputError(f"max_points must be >= 2 or None, got {max_points}")
        if pmiss.size > max_points:
            eps = 0.5 / max(c.n_tar.sum(), c.n_non.sum())
            x, y = ndtri(np.clip(pfa, eps, 1 - eps)), ndtri(np.clip(pmiss, eps, 1 - eps))
            arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
            keep = np.searchsorted(arc, np.linspace(0.0, arc[-1], max_points))
            keep = np.unique(np.append(keep, pmiss.size - 1))
            pmiss, pfa, thresholds = pmiss[keep], pfa[keep], thresholds[keep]
    return pmiss, pfa, thresholds


# --------------------------------------------------------------------------------------------- bootstrap
class BootstrapCI(NamedTuple):
    """Point estimate on all trials, percentile interval and the replicate values (n_valid,)."""

    estimate: float
    low: float
    high: float
    replicates: np.ndarray


# Metrics that accept a weighted score histogram: bootstrap replicates reuse one sort of the full data.
_HISTOGRAM_METRICS: dict[Callable, Callable] = {
    eer: _eer_counts,
    eer_rocch: _eer_rocch_counts,
    min_dcf: lambda c, **kw: float(_min_dcf_counts(c, **kw)[0][0]),
    min_cllr: _min_cllr_counts,
}


def bootstrap_ci(scores, labels, clusters=None, metric: Callable = eer, n_boot: int = 1000,
                 confidence: float = 0.95, seed: int = 0, metric_kwargs: dict | None = None) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric`` resampling clusters of trials with replacement.

    Trials sharing an enrollment model (or speaker) are correlated: resampling single trials treats them as
    independent and understates the variance. Each replicate therefore draws whole clusters with
    replacement and keeps every trial of a drawn cluster ("subsets bootstrap", Bolle, Ratha & Pankanti,
    Computer Vision and Image Understanding 93, 2004). ``clusters=None`` resamples single trials.

    scores: (n,) trial scores; labels: (n,) 1 = target, 0 = non-target; clusters: (n,) cluster id per trial
    (any hashable numpy-compatible values: model id, speaker). metric: ``metric(tar, non, **metric_kwargs)
    -> float``; for ``eer``, ``eer_rocch``, ``min_dcf`` (scalar ``p_target``) and ``min_cllr`` replicates are
    computed from a weighted histogram of one sort (same values, much faster). Replicates that draw no target
    or no non-target are skipped; fewer than half valid raises. ``seed`` makes the result reproducible.
    """
    s = _as_scores(scores, "scores")
    lab = np.asarray(labels)
    if lab.shape != s.shape:
        raise ScoringInputError(f"labels: shape {lab.shape} does not match scores {s.shape}")
    bad = (lab != 0) & (lab != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoringInputError(f"labels: must be 1 (target) or 0 (non-target), index {i} is {lab[i]!r}")
    is_tar = lab.astype(bool)
    if is_tar.all() or not is_tar.any():
        raise ScoringInputError("labels: both target and non-target trials are needed")
    if clusters is None:
        cluster_of = np.arange(s.size)
    else:
        cl = np.asarray(clusters)
        if cl.shape != s.shape:
            raise ScoringInputError(f"clusters: shape {cl.shape} does not match scores {s.shape}")
        cluster_of = np.unique(cl, return_inverse=True)[1].reshape(-1)
    if int(n_boot) < 1 or not 0 < confidence < 1:
        raise ScoringInputError(f"need n_boot >= 1 and 0 < confidence < 1, got n_boot={n_boot}, "
                                f"confidence={confidence}")
    kw = dict(metric_kwargs or {})
    if metric is min_dcf and np.ndim(kw.get("p_target", 0.0)) != 0:
        raise ScoringInputError("bootstrap_ci: min_dcf needs a single p_target in metric_kwargs")
    estimate = float(metric(s[is_tar], s[~is_tar], **kw))
    fast = _HISTOGRAM_METRICS.get(metric)
    if fast is not None:
        values, group = np.unique(s, return_inverse=True)
        w_tar, w_non = is_tar.astype(np.float64), (~is_tar).astype(np.float64)
    n_clusters = int(cluster_of.max()) + 1
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(int(n_boot)):
        weight = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)[cluster_of]
        if fast is not None:
            n_tar = np.bincount(group, weights=weight * w_tar, minlength=values.size)
            n_non = np.bincount(group, weights=weight * w_non, minlength=values.size)
            if n_tar.sum() == 0 or n_non.sum() == 0:
                continue
            reps.append(fast(_runs(values, n_tar, n_non), **kw))
        else:
            tar = np.repeat(s[is_tar], weight[is_tar])
            non = np.repeat(s[~is_tar], weight[~is_tar])
            if tar.size == 0 or non.size == 0:
                continue
            reps.append(float(metric(tar, non, **kw)))
    if len(reps) < max(1, int(n_boot) // 2):
        raise ScoringInputError(f"bootstrap_ci: only {len(reps)} of {n_boot} replicates drew both target and "
                         "non-target trials; use more clusters")
    replicates = np.asarray(reps, dtype=np.float64)
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high), replicates)
