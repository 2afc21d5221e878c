"""scoring.cosine against naive loops (trial scoring through scoring.backend: tests/test_backend.py)."""

import numpy as np
import pytest

from scoring.cosine import CosineScorer, cosine_score
from scoring.io import ScoringInputError


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
