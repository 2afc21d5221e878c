"""Tests of scoring.metrics against brute-force references over all thresholds and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from scoring import metrics as M


# ---------------------------------------------------------------------------- brute-force references
def brute_points(tar, non):
    """(threshold, pmiss, pfa) for every distinct score and +inf; accept iff score >= threshold."""
    out = []
    for t in sorted(set(np.concatenate([tar, non]).tolist())) + [math.inf]:
        out.append((t, sum(x < t for x in tar) / len(tar), sum(x >= t for x in non) / len(non)))
    return out


def brute_eer_crossing(tar, non):
    pts = brute_points(tar, non)
    for (_, m0, f0), (_, m1, f1) in zip(pts, pts[1:]):
        d0, d1 = m0 - f0, m1 - f1
        if d0 < 0 <= d1:
            return f0 + (f1 - f0) * d0 / (d0 - d1)
    raise AssertionError("no crossing")


def brute_min_dcf(tar, non, p, c_miss=1.0, c_fa=1.0):
    norm = min(c_miss * p, c_fa * (1 - p))
    return min((c_miss * p * m + c_fa * (1 - p) * f) / norm for _, m, f in brute_points(tar, non))


def brute_rocch_eer(tar, non):
    """Lowest point of the diagonal inside the convex hull of all ROC points: min over all point pairs."""
    pts = [(f, m) for _, m, f in brute_points(tar, non)]
    best = math.inf
    for i, (x1, y1) in enumerate(pts):
        for x2, y2 in pts[i:]:
            d1, d2 = y1 - x1, y2 - x2
            if d1 == 0:
                best = min(best, x1)
            if d2 == 0:
                best = min(best, x2)
            if d1 * d2 < 0:
                best = min(best, x1 + (x2 - x1) * d1 / (d1 - d2))
    return best


def brute_min_cllr(tar, non):
    """Pure-Python PAV on tie blocks, then Cllr of the optimal LLRs with the data's prior offset."""
    by_score = {}
    for s, y in [(s, 1) for s in tar] + [(s, 0) for s in non]:
        by_score.setdefault(s, []).append(y)
    blocks = [[sum(v), len(v)] for _, v in sorted(by_score.items())]  # [targets, trials]
    merged = []  # [targets, trials, n_blocks]
    for b in blocks:
        merged.append(b + [1])
        while len(merged) > 1 and merged[-2][0] / merged[-2][1] > merged[-1][0] / merged[-1][1]:
            t, n, k = merged.pop()
            merged[-1] = [merged[-1][0] + t, merged[-1][1] + n, merged[-1][2] + k]
    cost_t = cost_n = 0.0
    offset = math.log(len(tar) / len(non))
    for t, n, _ in merged:
        p = t / n
        if t:
            cost_t += t * math.log1p(math.exp(-(math.log(p / (1 - p)) - offset))) if p < 1 else 0.0
        if n - t:
            cost_n += (n - t) * math.log1p(math.exp(math.log(p / (1 - p)) - offset)) if p > 0 else 0.0
    return (cost_t / len(tar) + cost_n / len(non)) / (2 * math.log(2))


def random_sets(seed, tied):
    rng = np.random.default_rng(seed)
    n_t, n_n = rng.integers(1, 12), rng.integers(1, 25)
    tar, non = rng.normal(1.0, 1.0, n_t), rng.normal(0.0, 1.0, n_n)
    if tied:  # coarse grid: many ties within and across classes
        tar, non = np.round(tar * 2) / 2, np.round(non * 2) / 2
    return tar, non


CASES = [(seed, tied) for seed in range(12) for tied in (False, True)]


# ------------------------------------------------------------------------------------ brute force
@pytest.mark.parametrize("seed,tied", CASES)
def test_eer_crossing_matches_brute_force(seed, tied):
    tar, non = random_sets(seed, tied)
    assert M.eer(tar, non) == pytest.approx(brute_eer_crossing(tar, non), abs=1e-12)


@pytest.mark.parametrize("seed,tied", CASES)
def test_rocch_eer_matches_brute_force_hull(seed, tied):
    tar, non = random_sets(seed, tied)
    value = M.eer_rocch(tar, non)
    assert value == pytest.approx(brute_rocch_eer(tar, non), abs=1e-12)
    assert value <= M.eer(tar, non) + 1e-12 and value <= 0.5


@pytest.mark.parametrize("seed,tied", CASES)
def test_min_dcf_matches_brute_force(seed, tied):
    tar, non = random_sets(seed, tied)
    for p, c_miss, c_fa in [(0.01, 1, 1), (0.3, 1, 1), (0.5, 10, 1), (0.7, 1, 3)]:
        value, thr = M.min_dcf(tar, non, p, c_miss, c_fa, return_threshold=True)
        assert value == pytest.approx(brute_min_dcf(tar, non, p, c_miss, c_fa), abs=1e-12)
        norm = min(c_miss * p, c_fa * (1 - p))  # the returned threshold attains the minimum
        at = (c_miss * p * np.mean(tar < thr) + c_fa * (1 - p) * np.mean(non >= thr)) / norm
        assert at == pytest.approx(value, abs=1e-12)


def test_min_dcf_several_priors_in_one_pass():
    tar, non = random_sets(3, False)
    both, thr = M.min_dcf(tar, non, [0.01, 0.2], return_threshold=True)
    assert both.shape == thr.shape == (2,)
    assert both[0] == M.min_dcf(tar, non, 0.01) and both[1] == M.min_dcf(tar, non, 0.2)


@pytest.mark.parametrize("seed,tied", CASES[:8])
def test_act_dcf_matches_brute_force(seed, tied):
    tar, non = random_sets(seed, tied)
    tar, non = tar * 3, non * 3 - 1  # spread over the Bayes thresholds below
    for p, c_miss, c_fa in [(0.01, 1, 1), (0.5, 1, 1), (0.2, 2, 1)]:
        thr = math.log(c_fa * (1 - p) / (c_miss * p))
        pts = {t: (m, f) for t, m, f in brute_points(tar, non)}
        t_eff = min(t for t in pts if t >= thr)  # first empirical threshold at or above the Bayes one
        m, f = pts[t_eff]
        expected = (c_miss * p * m + c_fa * (1 - p) * f) / min(c_miss * p, c_fa * (1 - p))
        assert M.act_dcf(tar, non, p, c_miss, c_fa) == pytest.approx(expected, abs=1e-12)
        assert M.act_dcf(tar, non, p, c_miss, c_fa) >= M.min_dcf(tar, non, p, c_miss, c_fa) - 1e-12


def test_act_dcf_hand_computed():
    # p = 0.5 -> threshold 0: no target below 0, non-targets 0 and 2.5 accepted -> (0.5 * 2/3) / 0.5
    assert M.act_dcf([1.0, 2.0, 3.0], [-1.0, 0.0, 2.5], 0.5) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed,tied", CASES)
def test_min_cllr_matches_pure_python_pav(seed, tied):
    tar, non = random_sets(seed, tied)
    assert M.min_cllr(tar, non) == pytest.approx(brute_min_cllr(tar, non), abs=1e-12)


# ------------------------------------------------------------------------------------ hand-made cases
def test_perfect_separation():
    tar, non = [2.0, 3.0, 5.0], [-1.0, 0.0, 1.0, 1.5]
    assert M.eer_rocch(tar, non) == 0 and M.eer(tar, non) == 0
    assert M.min_dcf(tar, non, 0.01) == 0 and M.min_cllr(tar, non) == 0


def test_inverted_scores():
    tar, non = [-1.0, 0.0, 1.0], [2.0, 3.0]
    assert M.eer(tar, non) == 1.0  # empirical curve passes through (P_fa, P_miss) = (1, 1)
    assert M.eer_rocch(tar, non) == 0.5  # the hull never does worse than chance
    assert M.min_dcf(tar, non, 0.01) == 1.0 and M.min_dcf(tar, non, 0.5) == 1.0
    assert M.min_cllr(tar, non) == pytest.approx(1.0)


def test_all_scores_tied_are_one_threshold():
    tar, non = [0.3] * 4, [0.3] * 7
    assert M.eer_rocch(tar, non) == 0.5 and M.eer(tar, non) == 0.5
    assert M.min_dcf(tar, non, 0.01) == 1.0 and M.min_cllr(tar, non) == pytest.approx(1.0)
    pmiss, pfa, thr = M.det_curve(tar, non)
    np.testing.assert_array_equal(pmiss, [0, 1])
    np.testing.assert_array_equal(pfa, [1, 0])


def test_single_target_hand_computed():
    tar, non = [0.5], [0.0, 1.0, 2.0]
    # empirical points (P_fa, P_miss): (1,0) (2/3,0) (2/3,1) (1/3,1) (0,1): vertical crossing at 2/3
    assert M.eer(tar, non) == pytest.approx(2 / 3)
    # PAV pools {target 0.5, non-targets 1, 2}: hull (1,0) -> (2/3,0) -> (0,1), crossing at 0.4
    assert M.eer_rocch(tar, non) == pytest.approx(0.4)
    value, thr = M.min_dcf(tar, non, 0.5, return_threshold=True)  # P_miss + P_fa, best at threshold 0.5
    assert value == pytest.approx(2 / 3) and thr == 0.5


def test_min_dcf_bounded_by_trivial_systems():
    rng = np.random.default_rng(5)
    tar, non = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    assert 0 <= M.min_dcf(tar, non, 0.01) <= 1


# ------------------------------------------------------------------------------------ Cllr
def test_cllr_of_calibrated_gaussian_llrs_matches_theory():
    # target LLR ~ N(mu, 2 mu), non-target ~ N(-mu, 2 mu) are calibrated; by symmetry Cllr = E_tar log2(1+e^-l)
    mu = 2.0
    sd = math.sqrt(2 * mu)
    theory = integrate.quad(lambda x: stats.norm.pdf(x, mu, sd) * np.logaddexp(0, -x) / math.log(2),
                            mu - 12 * sd, mu + 12 * sd)[0]
    rng = np.random.default_rng(0)
    tar, non = rng.normal(mu, sd, 100_000), rng.normal(-mu, sd, 100_000)
    assert M.cllr(tar, non) == pytest.approx(theory, abs=0.01)
    assert M.min_cllr(tar, non) <= M.cllr(tar, non)
    assert M.cllr(tar, non) - M.min_cllr(tar, non) < 0.01  # already calibrated: little to gain


def test_cllr_hand_computed_and_uninformative():
    assert M.cllr([0.0], [0.0]) == pytest.approx(1.0)
    assert M.cllr([math.log(3)], [-math.log(3)]) == pytest.approx(math.log2(4 / 3))


@pytest.mark.parametrize("scale,shift", [(1, 0), (0.2, 0), (4, 0), (1, 3), (2, -2)])
def test_min_cllr_never_exceeds_cllr(scale, shift):
    rng = np.random.default_rng(int(10 * scale + shift + 10))
    tar, non = rng.normal(1, 1, 300) * scale + shift, rng.normal(-1, 1, 900) * scale + shift
    assert M.min_cllr(tar, non) <= M.cllr(tar, non) + 1e-12
    assert M.min_cllr(tar, non) == pytest.approx(M.min_cllr(tar * 7 + 1, non * 7 + 1))  # rank-only


# ------------------------------------------------------------------------------------ DET points
def test_det_curve_points_are_exact_operating_points():
    tar, non = random_sets(4, True)
    pmiss, pfa, thr = M.det_curve(tar, non, max_points=None)
    assert (pmiss[0], pfa[0], pmiss[-1], pfa[-1], thr[-1]) == (0, 1, 1, 0, math.inf)
    assert np.all(np.diff(pmiss) >= 0) and np.all(np.diff(pfa) <= 0)
    pts = {t: (m, f) for t, m, f in brute_points(tar, non)}
    for m, f, t in zip(pmiss, pfa, thr):
        assert pts[t] == pytest.approx((m, f))


def test_det_curve_decimation_keeps_ends_and_limit():
    rng = np.random.default_rng(1)
    tar, non = rng.normal(2, 1, 3000), rng.normal(0, 1, 20000)
    pmiss, pfa, thr = M.det_curve(tar, non, max_points=200)
    assert 10 < pmiss.size <= 201
    assert (pmiss[0], pfa[0], pmiss[-1], pfa[-1]) == (0, 1, 1, 0)
    assert np.all(np.diff(thr) > 0)
    np.testing.assert_allclose(pmiss, [np.mean(tar < t) for t in thr])
    np.testing.assert_allclose(pfa, [np.mean(non >= t) for t in thr])


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("tar,non,match", [
    ([], [1.0], "tar: empty"),
    ([1.0], [], "non: empty"),
    ([1.0, np.nan], [0.0], "tar: 1 non-finite score.*index 1"),
    ([1.0], [0.0, np.inf, 2.0], "non: 1 non-finite score.*index 1"),
    ([[1.0, 2.0]], [0.0], "1-D"),
])
def test_bad_scores_are_rejected(tar, non, match):
    for fn in (M.eer_rocch, M.eer, M.min_cllr, M.det_curve, M.cllr):
        with pytest.raises(ValueError, match=match.replace("tar:", "tar.*:").replace("non:", "non.*:")):
            fn(tar, non)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, [0.01, 1.5]])
def test_bad_prior_is_rejected(p):
    with pytest.raises(ValueError, match="p_target"):
        M.min_dcf([1.0], [0.0], p)
    with pytest.raises(ValueError, match="p_target"):
        M.act_dcf([1.0], [0.0], p)


# ------------------------------------------------------------------------------------ bootstrap
def clustered_trials(n_clusters=40, per_cluster=30, seed=0):
    """Trials grouped by enrollment model; each model shifts its target scores (shared-model correlation)."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), per_cluster)
    labels = (rng.random(cluster.size) < 0.3).astype(int)
    scores = labels * (2.0 + rng.normal(0, 1.5, n_clusters)[cluster]) + rng.normal(0, 1, cluster.size)
    return scores, labels, cluster


@pytest.mark.parametrize("metric,kwargs", [(M.eer_rocch, None), (M.eer, None),
                                           (M.min_dcf, {"p_target": 0.05}), (M.min_cllr, None)])
def test_bootstrap_histogram_path_equals_generic_path(metric, kwargs):
    scores, labels, cluster = clustered_trials()
    fast = M.bootstrap_ci(scores, labels, cluster, metric, n_boot=30, seed=3, metric_kwargs=kwargs)
    slow = M.bootstrap_ci(scores, labels, cluster, lambda t, n, **kw: metric(t, n, **kw), n_boot=30, seed=3,
                          metric_kwargs=kwargs)
    np.testing.assert_allclose(fast.replicates, slow.replicates, rtol=0, atol=1e-12)
    assert fast.estimate == slow.estimate
    assert fast.low <= fast.estimate <= fast.high


def test_bootstrap_is_seeded_and_clusters_widen_the_interval():
    scores, labels, cluster = clustered_trials()
    a = M.bootstrap_ci(scores, labels, cluster, n_boot=200, seed=1)
    b = M.bootstrap_ci(scores, labels, cluster, n_boot=200, seed=1)
    assert (a.low, a.high) == (b.low, b.high) and a.replicates.size == 200
    assert a.estimate == M.eer(scores[labels == 1], scores[labels == 0])
    trials = M.bootstrap_ci(scores, labels, None, n_boot=200, seed=1)
    # shared model offsets correlate trials: resampling single trials understates the spread
    assert a.high - a.low > 1.3 * (trials.high - trials.low)


def test_bootstrap_validates_labels_and_shapes():
    with pytest.raises(ValueError, match="index 2"):
        M.bootstrap_ci([0.1, 0.2, 0.3], [1, 0, -1])
    with pytest.raises(ValueError, match="clusters"):
        M.bootstrap_ci([0.1, 0.2, 0.3], [1, 0, 0], clusters=[1, 2])
    with pytest.raises(ValueError, match="both target and non-target"):
        M.bootstrap_ci([0.1, 0.2], [1, 1])


# ------------------------------------------------------------------------------------ SpeechBrain
def test_against_speechbrain():
    """SpeechBrain's EER picks the threshold where |P_fa - P_miss| is smallest and returns their mean (no
    interpolation), over thresholds that include reject-all but not accept-all; its minDCF is the same minimum
    but not normalised. So: minDCF equal after dividing by min(c_miss p, c_fa (1 - p)) (accept-all costs
    (1 - p) / p > 1 for p < 0.5, never the minimum), EER within half a step of ``eer`` (the crossing EER)."""
    metric_stats = pytest.importorskip("speechbrain.utils.metric_stats")
    import torch

    for seed in range(3):
        rng = np.random.default_rng(seed)
        tar, non = rng.normal(1.5, 1, 60), rng.normal(0, 1, 200)
        t, n = torch.from_numpy(tar), torch.from_numpy(non)
        sb_eer, _ = metric_stats.EER(t, n)
        assert abs(sb_eer - M.eer(tar, non)) <= 0.5 * max(1 / tar.size, 1 / non.size) + 1e-6
        for p in (0.01, 0.05, 0.3):
            sb_dcf, _ = metric_stats.minDCF(t, n, p_target=p)
            assert sb_dcf / min(p, 1 - p) == pytest.approx(M.min_dcf(tar, non, p), rel=1e-5)


def test_crossing_eer_agrees_with_scikit_learn_roc_curve():
    """The usual recipe on ``sklearn.metrics.roc_curve`` (the point where |FNR - FPR| is smallest) picks one of
    the two ROC points around the crossing: within one step of the interpolated ``eer``."""
    from sklearn.metrics import roc_curve

    for seed in range(4):
        rng = np.random.default_rng(seed)
        tar, non = rng.normal(2.0, 1, 300), rng.normal(0, 1, 2000)
        y = np.r_[np.ones(tar.size), np.zeros(non.size)]
        fpr, tpr, _ = roc_curve(y, np.r_[tar, non])
        k = int(np.nanargmin(np.abs((1 - tpr) - fpr)))
        sk_eer = 0.5 * (fpr[k] + 1 - tpr[k])
        assert abs(sk_eer - M.eer(tar, non)) <= max(1 / tar.size, 1 / non.size)


def test_hard_target_cluster_separates_the_two_eers():
    """A cluster of hard targets below most non-targets bends the empirical ROC: the convex hull bridges the
    dent, so the ROCCH EER is several points below the crossing EER that other toolkits print."""
    rng = np.random.default_rng(0)
    tar = np.r_[rng.normal(3.0, 0.5, 800), rng.normal(-0.5, 0.2, 200)]  # 20% hard targets
    non = rng.normal(0.0, 1.0, 5000)
    crossing, hull = M.eer(tar, non), M.eer_rocch(tar, non)
    # the crossing lies where the hard targets are all missed and P_fa has come down to 20%
    assert crossing == pytest.approx(0.2, abs=0.005)
    assert crossing - hull > 0.025
