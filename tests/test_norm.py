"""scoring.norm: hand-computed S-norm / AS-norm, invariances, per-id statistics, and cohort scores from trials."""

import numpy as np
import pytest

from scoring.backend import trial_cohort_scores
from scoring.cosine import CosineScorer
from scoring.io import Embeddings, ScoringInputError, Trials
from scoring.norm import cohort_stats, s_norm, t_norm, z_norm


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_hand_computed():
    # enroll cohort [1, 3, 5]: mean 3, population std sqrt(8/3); test cohort [0, 4]: mean 2, std 2.
    scores = np.array([5.0, 1.0])
    e_coh = np.array([[1.0, 3.0, 5.0], [1.0, 3.0, 5.0]])
    t_coh = np.array([[0.0, 4.0], [0.0, 4.0]])
    sd_e = np.sqrt(8.0 / 3.0)
    z = np.array([2.0 / sd_e, -2.0 / sd_e])
    t = np.array([1.5, -0.5])
    np.testing.assert_allclose(z_norm(scores, e_coh), z)
    np.testing.assert_allclose(t_norm(scores, t_coh), t)
    np.testing.assert_allclose(s_norm(scores, e_coh, t_coh), 0.5 * (z + t))
    # Adaptive, top 2: enroll side keeps [3, 5] (mean 4, std 1); test side keeps both (top_k = its size).
    np.testing.assert_allclose(s_norm(scores, e_coh, t_coh, top_k=2), 0.5 * (np.array([1.0, -3.0]) + t))


def test_cohort_stats_top_k():
    mean, std = cohort_stats([[4.0, -1.0, 9.0, 2.0, 7.0]], top_k=3)  # top 3: 9, 7, 4
    np.testing.assert_allclose(mean, [20.0 / 3.0])
    np.testing.assert_allclose(std, [np.std([9.0, 7.0, 4.0])])


def test_affine_invariance(rng):
    scores, e_coh, t_coh = rng.normal(size=20), rng.normal(size=(20, 30)), rng.normal(size=(20, 25))
    for top_k in (None, 10):
        ref = s_norm(scores, e_coh, t_coh, top_k=top_k)
        got = s_norm(3.5 * scores - 2.0, 3.5 * e_coh - 2.0, 3.5 * t_coh - 2.0, top_k=top_k)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_asnorm_full_cohort_is_snorm(rng):
    scores, e_coh, t_coh = rng.normal(size=12), rng.normal(size=(12, 16)), rng.normal(size=(12, 16))
    np.testing.assert_allclose(s_norm(scores, e_coh, t_coh, top_k=16), s_norm(scores, e_coh, t_coh))
    assert not np.allclose(s_norm(scores, e_coh, t_coh, top_k=4), s_norm(scores, e_coh, t_coh))


def test_indexed_rows_equal_per_trial_rows(rng):
    e_rows, t_rows = rng.normal(size=(3, 10)), rng.normal(size=(4, 8))
    e_idx, t_idx = rng.integers(0, 3, 15), rng.integers(0, 4, 15)
    scores = rng.normal(size=15)
    per_trial = s_norm(scores, e_rows[e_idx], t_rows[t_idx], top_k=5)
    indexed = s_norm(scores, e_rows, t_rows, top_k=5, enroll_index=e_idx, test_index=t_idx)
    np.testing.assert_allclose(indexed, per_trial, rtol=1e-12)


def test_trial_cohort_scores_feed_snorm(rng):
    """Cohort rows per unique model/test id, gathered by index, equal a naive per-trial computation."""
    enroll = Embeddings([f"e{i}" for i in range(6)], rng.normal(size=(6, 4)))
    test = Embeddings([f"t{i}" for i in range(5)], rng.normal(size=(5, 4)))
    cohort = rng.normal(size=(9, 4))
    trials = Trials(["m0", "m1", "m0", "m1"], ["t0", "t1", "t4", "t0"])
    enroll_map = {"m0": ["e0", "e1"], "m1": ["e2", "e3", "e5"]}
    scorer = CosineScorer()
    e_coh, e_idx, t_coh, t_idx = trial_cohort_scores(scorer, trials, enroll, test, cohort, enroll_map=enroll_map)
    assert e_coh.shape == (2, 9) and t_coh.shape == (3, 9)
    model = {m: enroll.get(u).mean(axis=0, keepdims=True) for m, u in enroll_map.items()}
    for i, (m, t) in enumerate(zip(trials.enroll, trials.test)):
        np.testing.assert_allclose(e_coh[e_idx[i]], scorer.score_matrix(model[m], cohort)[0], atol=1e-6)
        np.testing.assert_allclose(t_coh[t_idx[i]], scorer.score_matrix(test.get([t]), cohort)[0], atol=1e-6)


def test_errors(rng):
    scores, coh = rng.normal(size=3), rng.normal(size=(3, 4))
    with pytest.raises(ScoringInputError, match=r"top_k=5 must be an integer in \[1, cohort size 4\]"):
        s_norm(scores, coh, coh, top_k=5)
    with pytest.raises(ScoringInputError, match="enroll_cohort: row 1 has constant"):
        s_norm(scores, [[0.0, 1.0], [2.0, 2.0], [0.0, 1.0]], coh)
    with pytest.raises(ScoringInputError, match="test_cohort: 2 rows for 3 scores"):
        s_norm(scores, coh, coh[:2])
    with pytest.raises(ScoringInputError, match=r"enroll_cohort index: values must lie in \[0, 3\)"):
        s_norm(scores, coh, coh, enroll_index=np.array([0, 1, 3]))
    with pytest.raises(ScoringInputError, match="scores: trial 2 has a NaN"):
        s_norm([0.0, 1.0, np.nan], coh, coh)
    with pytest.raises(ScoringInputError, match="test_cohort: row 0 contains NaN"):
        t_norm(scores, np.where(np.eye(3, 4) > 0, np.nan, coh))
