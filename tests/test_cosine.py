"""scoring.cosine against naive loops, and scoring.backend.score_trials against naive per-trial scoring."""

import numpy as np
import pytest

from scoring.backend import cohort_scores, factorize, score_trials
from scoring.cosine import CosineScorer, cosine_score
from scoring.io import Embeddings, ScoringInputError, Trials


def _naive_cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------- cosine
def test_cosine_score_matches_loop(rng):
    E, T = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    expected = [_naive_cos(e, t) for e, t in zip(E, T)]
    np.testing.assert_allclose(cosine_score(E, T), expected, rtol=1e-12)
    got = cosine_score([[1, 0], [2, 2], [1, 1]], [[3, 0], [-1, -1], [0, 0]])
    np.testing.assert_allclose(got, [1.0, -1.0, 0.0], atol=1e-15)  # a zero vector scores 0


def test_scorer_matches_loop(rng):
    train = rng.normal(loc=2.0, size=(50, 6))
    E, T = rng.normal(loc=2.0, size=(4, 6)), rng.normal(loc=2.0, size=(3, 6))
    for subtract_mean in (False, True):
        scorer = CosineScorer(subtract_mean=subtract_mean).fit(train)
        mean = train.mean(axis=0) if subtract_mean else 0.0
        expected = np.array([[_naive_cos(e - mean, t - mean) for t in T] for e in E])
        S = scorer.score_matrix(E, T)
        np.testing.assert_allclose(S, expected, rtol=1e-10)
        np.testing.assert_allclose(scorer.score(E[:3], T), np.diag(S[:3]), rtol=1e-12)
        np.testing.assert_allclose(
            scorer.score_matrix(scorer.transform(E), scorer.transform(T), transformed=True), S, rtol=1e-12)
        assert np.all(np.abs(S) <= 1.0)
    np.testing.assert_allclose(np.linalg.norm(scorer.transform(E), axis=1), 1.0)
    np.testing.assert_allclose(scorer.mean_, train.mean(axis=0))


def test_cosine_errors(rng):
    with pytest.raises(RuntimeError, match="not fitted"):
        CosineScorer(subtract_mean=True).transform(rng.normal(size=(2, 3)))
    with pytest.raises(ScoringInputError, match="enroll has dimension 3 but test has 4"):
        CosineScorer().score_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ScoringInputError, match="rows are paired"):
        cosine_score(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ScoringInputError, match="test: row 1 contains NaN"):
        cosine_score(np.ones((2, 3)), [[1, 1, 1], [np.nan, 1, 1]])
    with pytest.raises(ScoringInputError, match="expected 3 columns"):
        CosineScorer(subtract_mean=True).fit(np.ones((2, 3))).transform(np.ones((1, 4)))


# ---------------------------------------------------------------------------------------------- backend
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


@pytest.mark.parametrize("max_pairs, block_pairs", [(10**9, 1 << 24), (10**9, 12), (0, 1)])
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


def test_score_trials_plda(data, rng):
    """With PLDA: paired LLRs per trial, and proper multi-enrollment LLRs through score_multi."""
    plda_module = pytest.importorskip("scoring.plda")
    trials, enroll, test, enroll_map, multi = data
    spk = np.repeat(np.arange(10), 4)
    X = 2.0 * rng.normal(size=(10, 5))[spk] + rng.normal(size=(40, 5))
    plda = plda_module.PLDA(n_iter=2).fit(X, spk)
    expected = [plda.score(enroll.get([e]), test.get([t]))[0] for e, t in zip(trials.enroll, trials.test)]
    np.testing.assert_allclose(score_trials(plda, trials, enroll, test), expected, rtol=1e-6, atol=1e-6)
    expected = [plda.score_multi([enroll.get(enroll_map[m])], test.get([t]))[0]
                for m, t in zip(multi.enroll, multi.test)]
    got = score_trials(plda, multi, enroll, test, enroll_map=enroll_map, multi="plda")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


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


def test_cohort_scores_and_factorize(data, rng):
    _, enroll, test, _, _ = data
    scorer = CosineScorer()
    got = cohort_scores(scorer, enroll, test.vectors, block_pairs=7)
    np.testing.assert_allclose(got, scorer.score_matrix(enroll.vectors, test.vectors), atol=1e-6)
    uniq, codes = factorize(["b", "a", "b", "c", "a"])
    assert uniq.tolist() == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2, 1]
