"""scoring.backend: score_trials and cohort scores against naive per-trial scoring, for cosine and PLDA.

Every strategy (one score matrix, many row blocks, pairwise chunks) must give the per-trial reference; PLDA
multi-enrollment scores are checked against a brute-force Gaussian computation per trial.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from scoring.backend import cohort_scores, factorize, score_trials, trial_cohort_scores
from scoring.cosine import CosineScorer
from scoring.io import Embeddings, ScoringInputError, Trials
from scoring.plda import PLDA

STRATEGIES = [(10**9, 1 << 24), (10**9, 12), (0, 1)]  # (max_pairs, block_pairs): whole, row blocks, pairwise


def _naive_cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _brute_multi_llr(plda, enroll, test):
    """LLR of raw test (d,) given raw enrollment vectors enroll (k, d): log N(t; predictive given the k vectors)
    - log N(t; marginal), with full covariances in PLDA's transformed space (no diagonal basis)."""
    E, t = plda.transform(enroll), plda.transform(test[None])[0]
    mu, Sb, Sw = plda.plda_mean_, plda.between_, plda.within_
    B, W = np.linalg.inv(Sb), np.linalg.inv(Sw)
    post_cov = np.linalg.inv(B + len(E) * W)
    post_mean = post_cov @ (B @ mu + W @ E.sum(axis=0))
    return multivariate_normal(post_mean, post_cov + Sw).logpdf(t) - multivariate_normal(mu, Sb + Sw).logpdf(t)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def data(rng):
    """8 enroll utterances of 3 models, 6 test utterances, 30 distinct trials, dim 5."""
    enroll = Embeddings([f"e{i}" for i in range(8)], rng.normal(size=(8, 5)))
    test = Embeddings([f"t{i}" for i in range(6)], rng.normal(size=(6, 5)))
    pairs = rng.permutation(48)[:30]
    trials = Trials(enroll.ids[pairs // 6], test.ids[pairs % 6], rng.integers(0, 2, 30))
    enroll_map = {"m0": ["e0", "e1", "e2"], "m1": ["e3"], "m2": ["e4", "e5", "e6", "e7", "e4"]}
    models = np.array(["m0", "m1", "m2"])[rng.integers(0, 3, 20)]
    multi = Trials(models, test.ids[rng.integers(0, 6, 20)])
    return trials, enroll, test, enroll_map, multi


@pytest.fixture
def plda(rng):
    spk = np.repeat(np.arange(10), 4)
    X = 2.0 * rng.normal(size=(10, 5))[spk] + rng.normal(size=(40, 5))
    return PLDA(n_iter=2).fit(X, spk)


class PairedOnlyPLDA:
    """A scorer with `score_multi` but no `score_multi_matrix`: the back-end must fall back to pairwise chunks."""

    def __init__(self, plda):
        self.plda = plda
        self.transform, self.score, self.score_matrix = plda.transform, plda.score, plda.score_matrix
        self.score_multi = plda.score_multi


@pytest.mark.parametrize("max_pairs, block_pairs", STRATEGIES)
def test_score_trials_matches_naive(data, max_pairs, block_pairs):
    """Whole matrix, many small row blocks, and paired scoring give the per-trial cosine."""
    trials, enroll, test, _, _ = data
    expected = [_naive_cos(enroll.get([e])[0], test.get([t])[0]) for e, t in zip(trials.enroll, trials.test)]
    got = score_trials(CosineScorer(), trials, enroll, test, max_pairs=max_pairs, block_pairs=block_pairs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # embeddings are stored as float32


def test_score_trials_multi_mean(data):
    _, enroll, test, enroll_map, trials = data
    scorer = CosineScorer(subtract_mean=True).fit(enroll.vectors)
    expected = [
        scorer.score(enroll.get(enroll_map[m]).mean(axis=0, keepdims=True), test.get([t]))[0]
        for m, t in zip(trials.enroll, trials.test)
    ]
    got = score_trials(scorer, trials, enroll, test, enroll_map=enroll_map, multi="mean")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_pairs, block_pairs", STRATEGIES)
def test_score_trials_plda(data, plda, max_pairs, block_pairs):
    """With PLDA: paired LLRs per trial, and proper multi-enrollment LLRs through score_multi."""
    trials, enroll, test, enroll_map, multi = data
    kw = {"max_pairs": max_pairs, "block_pairs": block_pairs}
    expected = [plda.score(enroll.get([e]), test.get([t]))[0] for e, t in zip(trials.enroll, trials.test)]
    np.testing.assert_allclose(score_trials(plda, trials, enroll, test, **kw), expected, rtol=1e-6, atol=1e-6)
    expected = [plda.score_multi([enroll.get(enroll_map[m])], test.get([t]))[0]
                for m, t in zip(multi.enroll, multi.test)]
    got = score_trials(plda, multi, enroll, test, enroll_map=enroll_map, multi="plda", **kw)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # float32 GEMM on prepared coordinates


@pytest.mark.parametrize("max_pairs, block_pairs", STRATEGIES)
def test_multi_plda_matches_brute_force(data, plda, max_pairs, block_pairs):
    """multi="plda" (dense via score_multi_matrix, blocks, or pairwise) equals a full-covariance brute force."""
    _, enroll, test, enroll_map, trials = data
    expected = [_brute_multi_llr(plda, enroll.get(enroll_map[m]), test.get([t])[0])
                for m, t in zip(trials.enroll, trials.test)]
    for scorer in (plda, PairedOnlyPLDA(plda)):
        got = score_trials(scorer, trials, enroll, test, enroll_map=enroll_map, multi="plda",
                           max_pairs=max_pairs, block_pairs=block_pairs)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_trial_cohort_scores_multi_plda(data, plda, rng):
    """Cohort rows of each model are its multi-enrollment LLRs against every cohort vector."""
    _, enroll, test, enroll_map, trials = data
    cohort = rng.normal(size=(7, 5))
    for scorer in (plda, PairedOnlyPLDA(plda)):
        e_coh, e_idx, t_coh, t_idx = trial_cohort_scores(scorer, trials, enroll, test, cohort,
                                                         enroll_map=enroll_map, multi="plda")
        for i, (m, t) in enumerate(zip(trials.enroll, trials.test)):
            expected = [_brute_multi_llr(plda, enroll.get(enroll_map[m]), c) for c in cohort]
            np.testing.assert_allclose(e_coh[e_idx[i]], expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(t_coh[t_idx[i]], plda.score_matrix(test.get([t]), cohort)[0],
                                       rtol=1e-5, atol=1e-5)


def test_score_trials_errors(data):
    trials, enroll, test, enroll_map, multi = data
    scorer = CosineScorer()
    bad = Trials(["e0", "e1"], ["t0", "t9"], source="eval.trials")
    with pytest.raises(ScoringInputError, match="no embedding for id 't9'"):
        score_trials(scorer, bad, enroll, test)
    with pytest.raises(ScoringInputError, match="eval.trials: the trial list is empty"):
        score_trials(scorer, Trials([], [], source="eval.trials"), enroll, test)
    with pytest.raises(ScoringInputError, match="model 'm1'"):
        score_trials(scorer, multi, enroll, test, enroll_map={"m0": ["e0"], "m1": ["ghost"], "m2": ["e1"]})
    with pytest.raises(ScoringInputError, match="no enrollment utterances for model 'm2'"):
        score_trials(scorer, multi, enroll, test, enroll_map={"m0": ["e0"], "m1": ["e1"]})
    with pytest.raises(ScoringInputError, match="dimension 5 .* have 3"):
        score_trials(scorer, trials, enroll, Embeddings(["t0"], np.ones((1, 3))))
    with pytest.raises(ScoringInputError, match="multi='max'"):
        score_trials(scorer, trials, enroll, test, multi="max")
    with pytest.raises(TypeError, match=r"lacks \['score_multi'\]"):
        score_trials(scorer, multi, enroll, test, enroll_map=enroll_map, multi="plda")


def test_cohort_scores_and_factorize(data):
    _, enroll, test, _, _ = data
    scorer = CosineScorer()
    got = cohort_scores(scorer, enroll, test.vectors, block_pairs=7)
    np.testing.assert_allclose(got, scorer.score_matrix(enroll.vectors, test.vectors), atol=1e-6)
    uniq, codes = factorize(["b", "a", "b", "c", "a"])
    assert uniq.tolist() == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2, 1]


def test_cohort_scores_plda_blocks(data, plda):
    """PLDA cohort scores in row blocks of prepared float32 coordinates equal the float64 score matrix."""
    _, enroll, test, _, _ = data
    got = cohort_scores(plda, enroll, test, block_pairs=7)
    np.testing.assert_allclose(got, plda.score_matrix(enroll.vectors, test.vectors), rtol=1e-5, atol=1e-5)
