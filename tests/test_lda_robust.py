"""LDA and PLDA training on ill-conditioned data (scoring.lda, scoring.plda): floored or dropped directions with a
warning, the same EER as without the degenerate directions; refusals only for data that cannot be fitted."""

import logging

import numpy as np
import pytest
from scipy import linalg

from scoring.io import ScoringInputError
from scoring.lda import COV_FLOOR, ClassStats, lda_projection, whitening_projection
from scoring.metrics import eer
from scoring.plda import PLDA


def speakers(rng, n_spk, per_spk, dim, between=2.0, within=1.0):
    """Isotropic two-covariance data: X (n_spk * per_spk, dim), spk (n,)."""
    spk = np.repeat(np.arange(n_spk), per_spk)
    X = between * rng.normal(size=(n_spk, dim))[spk] + within * rng.normal(size=(len(spk), dim))
    return X, spk


def held_out_eer(plda, X, spk):
    """EER (%) of all pairs (first utterance of each speaker against the others) of held-out speakers."""
    first = np.r_[True, spk[1:] != spk[:-1]]
    S = plda.score_matrix(X[first], X[~first])
    assert np.all(np.isfinite(S))
    same = spk[first][:, None] == spk[~first][None, :]
    return 100 * eer(S[same], S[~same])


@pytest.fixture(scope="module")
def clean():
    """Training and held-out speakers in 12 dimensions, and the EER of a PLDA trained on them."""
    rng = np.random.default_rng(0)
    train, spk = speakers(rng, 60, 6, 12)
    test, spk_t = speakers(rng, 40, 4, 12)
    return train, spk, test, spk_t


def with_column(X, column):
    return np.hstack([X, column[:, None]])


def degenerate(kind, train, test, rng):
    """Append a degenerate dimension to the training and held-out vectors."""
    if kind == "constant":
        return with_column(train, np.full(len(train), 3.5)), with_column(test, np.full(len(test), 3.5))
    w = rng.normal(size=train.shape[1])  # a linear combination of the others + 1e-9 noise
    return (with_column(train, train @ w + 1e-9 * rng.normal(size=len(train))),
            with_column(test, test @ w + 1e-9 * rng.normal(size=len(test))))


@pytest.mark.parametrize("kind", ["constant", "near_null"])
@pytest.mark.parametrize("lda_dim", [None, 8])
def test_degenerate_direction_trains_scores_and_warns(clean, kind, lda_dim, caplog):
    train, spk, test, spk_t = clean
    reference = held_out_eer(PLDA(lda_dim=lda_dim).fit(train, spk), test, spk_t)
    train_d, test_d = degenerate(kind, train, test, np.random.default_rng(1))
    with caplog.at_level(logging.WARNING, logger="scoring"):
        plda = PLDA(lda_dim=lda_dim).fit(train_d, spk)
    assert any(r.levelno == logging.WARNING and ("dropped" in r.message or "floored" in r.message)
               for r in caplog.records), caplog.text
    got = held_out_eer(plda, test_d, spk_t)
    assert abs(got - reference) < 1.5, (got, reference)
    assert plda.dim == (12 if lda_dim is None else lda_dim)  # the null direction is dropped


def test_constant_dimension_without_whitening(clean, caplog):
    """No whitening: the PLDA within-speaker covariance itself is singular and is floored (also during EM)."""
    train, spk, test, spk_t = clean
    reference = held_out_eer(PLDA(whiten=False, length_norm=False).fit(train, spk), test, spk_t)
    train_d, test_d = degenerate("constant", train, test, None)
    with caplog.at_level(logging.WARNING, logger="scoring.plda"):
        plda = PLDA(whiten=False, length_norm=False).fit(train_d, spk)
    assert "floored them" in caplog.text
    assert np.all(np.diff(plda.loglik_) > -1e-6 * np.abs(plda.loglik_[1:]))
    assert abs(held_out_eer(plda, test_d, spk_t) - reference) < 1.5


def test_near_null_direction_of_real_scale(caplog):
    """The reported case, scaled down: a direction of variance ~1e-11 of the largest, LDA and no LDA."""
    rng = np.random.default_rng(2)
    dim = 40
    X, spk = speakers(rng, 80, 5, dim - 1, between=5.0, within=2.0)
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    X = np.hstack([X, 1e-5 * rng.normal(size=(len(X), 1))]) @ Q.T  # rotate the tiny direction into all dims
    T, spk_t = speakers(rng, 30, 4, dim - 1, between=5.0, within=2.0)
    T = np.hstack([T, 1e-5 * rng.normal(size=(len(T), 1))]) @ Q.T
    evals = linalg.eigvalsh(np.cov(X, rowvar=False))
    assert evals[0] / evals[-1] < 1e-10
    for lda_dim in (None, 20):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="scoring"):
            plda = PLDA(lda_dim=lda_dim).fit(X, spk)
        assert "dropped 1" in caplog.text
        assert held_out_eer(plda, T, spk_t) < 10


def test_more_dimensions_than_utterances(caplog):
    """Vectors spanning a 15-dim subspace of a 300-dim space, 150 training utterances: the EER is that of the
    same data in 15 dims; full-rank random vectors with dim > n train too and give finite scores."""
    rng = np.random.default_rng(3)
    low, spk = speakers(rng, 30, 5, 15)
    low_t, spk_t = speakers(rng, 40, 4, 15)
    embed = rng.normal(size=(15, 300))
    reference = held_out_eer(PLDA().fit(low, spk), low_t, spk_t)
    with caplog.at_level(logging.WARNING, logger="scoring"):
        plda = PLDA().fit(low @ embed, spk)
    assert "dropped 285 of 300" in caplog.text
    assert plda.dim == 15
    assert abs(held_out_eer(plda, low_t @ embed, spk_t) - reference) < 1.0

    caplog.clear()
    X, spk = speakers(rng, 30, 5, 300)
    with caplog.at_level(logging.WARNING, logger="scoring"):
        plda = PLDA().fit(X, spk)  # rank 149 total, 120 within: directions dropped and eigenvalues floored
        lda = PLDA(lda_dim=20).fit(X, spk)
    assert "dropped" in caplog.text and "floored" in caplog.text
    T, spk_t = speakers(rng, 10, 3, 300)
    for model in (plda, lda):
        assert np.all(np.isfinite(model.score_matrix(T, T)))
        assert np.all(np.isfinite(model.score_multi_matrix([T[:3], T[3:5]], T)))
        assert np.all(np.isfinite(model.loglik_))


def test_lda_on_singular_within_covariance(caplog):
    """lda_projection itself: a constant dimension is never picked, the columns are orthonormal for the floored
    within-speaker covariance; lda_dim above the data's rank keeps what there is."""
    rng = np.random.default_rng(4)
    X, spk = speakers(rng, 20, 4, 5)
    X = with_column(X, np.zeros(len(X)))
    X -= X.mean(axis=0)
    stats = ClassStats.from_data(X, spk, 20)
    with caplog.at_level(logging.WARNING, logger="scoring.lda"):
        V = lda_projection(stats, 4)
        W = lda_projection(stats, 6)
    assert V.shape == (6, 4) and np.allclose(V[5], 0.0)
    assert W.shape == (6, 5) and "output dimension 5 < lda_dim=6" in caplog.text
    within = stats.within_scatter() / stats.n_total
    np.testing.assert_allclose(V.T @ within @ V, np.eye(4), atol=1e-8)
    assert whitening_projection(stats.second, stats.n_total).shape == (6, 5)


def test_well_conditioned_data_is_untouched(clean, caplog):
    """No warning, and LDA is the plain generalised eigenproblem (the floor never applies)."""
    train, spk, _, _ = clean
    X = train - train.mean(axis=0)
    stats = ClassStats.from_data(X, spk, 60)
    within, between = stats.within_scatter() / stats.n_total, stats.between_scatter() / stats.n_total
    with caplog.at_level(logging.WARNING, logger="scoring"):
        V = lda_projection(stats, 8)
        PLDA(lda_dim=8).fit(train, spk)
        PLDA().fit(train, spk)
    assert caplog.records == []
    _, ref = linalg.eigh(between, within, subset_by_index=[4, 11])
    np.testing.assert_array_equal(V, ref[:, ::-1])
    assert linalg.eigvalsh(within)[0] > 100 * COV_FLOOR * linalg.eigvalsh(within)[-1]


@pytest.mark.parametrize("X, spk, match", [
    (np.ones((4, 3)), [0, 0, 0, 0], "at least 2 speakers"),
    (np.arange(12.0).reshape(4, 3), [0, 1, 2, 3], "at least 2 utterances"),
    (np.array([[0.0, 1], [1, np.nan], [2, 0], [3, 1]]), [0, 0, 1, 1], "row 1 contains NaN or inf"),
    (np.array([[0.0, 1], [1, 2], [2, np.inf], [3, 1]]), [0, 0, 1, 1], "row 2 contains NaN or inf"),
    (np.tile([1.0, 2.0, 3.0], (6, 1)), [0, 0, 0, 1, 1, 1], "all training vectors are identical"),
    (np.repeat([[0.0, 1, 2], [2, 5, 1]], 3, axis=0), [0, 0, 0, 1, 1, 1], "every speaker's training vectors "
                                                                         "are identical"),
])
@pytest.mark.parametrize("lda_dim", [None, 1])
def test_refusals_name_the_reason(X, spk, match, lda_dim):
    with pytest.raises(ScoringInputError, match=match):
        PLDA(lda_dim=lda_dim).fit(X, spk)
