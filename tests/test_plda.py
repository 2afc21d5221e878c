"""Tests for the two-covariance PLDA back-end (scoring.plda, scoring.lda). Small seeded synthetic data only."""

import numpy as np
import pytest
from scipy import linalg
from scipy.stats import multivariate_normal
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from scoring.io import ScoringInputError
from scoring.lda import ClassStats
from scoring.metrics import eer
from scoring.plda import PLDA, em_step


def random_spd(rng, dim, scales):
    """SPD matrix with eigenvalues `scales` (dim,) in a random orthonormal basis."""
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (Q * np.asarray(scales, dtype=float)) @ Q.T


def sample(rng, n_spk, per_spk, mu, between, within):
    """Draw from x = y_s + e, y_s ~ N(mu, between), e ~ N(0, within): X (n_spk * per_spk, dim), spk (n,)."""
    dim = mu.shape[0]
    y = mu + rng.normal(size=(n_spk, dim)) @ np.linalg.cholesky(between).T
    spk = np.repeat(np.arange(n_spk), per_spk)
    X = y[spk] + rng.normal(size=(spk.shape[0], dim)) @ np.linalg.cholesky(within).T
    return X, spk


def joint_llr(enroll, test, mu, between, within):
    """Brute-force LLR: log N([e_1..e_k, t]) - log N([e_1..e_k]) - log N(t) under the same-speaker joint Gaussian."""
    k, dim = enroll.shape

    def logpdf(vectors):
        n = vectors.shape[0]
        cov = np.kron(np.ones((n, n)), between) + np.kron(np.eye(n), within)
        return multivariate_normal(np.tile(mu, n), cov).logpdf(vectors.ravel())

    return logpdf(np.vstack([enroll, test[None]])) - logpdf(enroll) - logpdf(test[None])


def trial_scores(S, spk_e, spk_t):
    """Split an all-pairs score matrix (m, k) into target and non-target scores."""
    same = spk_e[:, None] == spk_t[None, :]
    return S[same], S[~same]


@pytest.fixture
def small_model():
    """A fitted 3-dim PLDA (no LDA) and held-out vectors, shared by the exactness tests."""
    rng = np.random.default_rng(3)
    mu = np.array([1.0, -2.0, 0.5])
    X, spk = sample(rng, 40, 5, mu, random_spd(rng, 3, [4.0, 2.0, 1.0]), random_spd(rng, 3, [1.0, 0.5, 0.2]))
    plda = PLDA(n_iter=5).fit(X, spk)
    held, _ = sample(rng, 6, 2, mu, np.eye(3), 0.3 * np.eye(3))
    return plda, held


def test_llr_matches_oracle_from_true_model():
    rng = np.random.default_rng(0)
    dim = 5
    mu = rng.normal(size=dim)
    between = random_spd(rng, dim, [5.0, 3.0, 2.0, 1.0, 0.5])
    within = random_spd(rng, dim, [2.0, 1.0, 0.5, 0.3, 0.1])
    X, spk = sample(rng, 400, 6, mu, between, within)
    plda = PLDA(length_norm=False).fit(X, spk)
    E, _ = sample(rng, 100, 2, mu, between, within)
    enroll, test = E[0::2], E[1::2]  # target pairs
    test = np.vstack([test[:50], test[50:][::-1]])  # second half: non-target pairs
    oracle = np.array([joint_llr(e[None], t, mu, between, within) for e, t in zip(enroll, test)])
    learned = plda.score(enroll, test)
    assert np.corrcoef(oracle, learned)[0, 1] > 0.99
    assert np.all(np.diff(plda.loglik_) >= -1e-6 * np.abs(plda.loglik_[1:]))  # EM never decreases it


def test_plda_beats_cosine_with_anisotropic_within_speaker_noise():
    rng = np.random.default_rng(1)
    dim = 10
    mu = 3.0 * rng.normal(size=dim)
    between = random_spd(rng, dim, np.ones(dim))
    within = random_spd(rng, dim, [30.0, 20.0, 10.0] + [0.2] * (dim - 3))
    X, spk = sample(rng, 150, 6, mu, between, within)
    plda = PLDA().fit(X, spk)
    E, spk_e = sample(rng, 60, 2, mu, between, within)
    enroll, test = E[0::2], E[1::2]
    ids = spk_e[0::2]
    plda_eer = eer(*trial_scores(plda.score_matrix(enroll, test), ids, ids))
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)
    cosine_eer = eer(*trial_scores(unit[0::2] @ unit[1::2].T, ids, ids))
    assert plda_eer < 0.5 * cosine_eer


def test_score_matrix_pairs_and_bruteforce_agree(small_model):
    plda, held = small_model
    E, T = held[:4], held[4:9]
    S = plda.score_matrix(E, T)
    assert S.shape == (4, 5)
    ii, jj = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    np.testing.assert_allclose(plda.score(E[ii.ravel()], T[jj.ravel()]), S.ravel(), rtol=1e-10, atol=1e-10)
    Et, Tt = plda.transform(E), plda.transform(T)
    np.testing.assert_allclose(plda.score_matrix(Et, Tt, transformed=True), S, rtol=1e-10, atol=1e-10)
    brute = np.array([[joint_llr(e[None], t, plda.plda_mean_, plda.between_, plda.within_) for t in Tt] for e in Et])
    np.testing.assert_allclose(S, brute, rtol=1e-8, atol=1e-8)


def test_q_p_closed_form_in_transformed_space(small_model):
    """Q = St^-1 - (St - Sb St^-1 Sb)^-1, P = St^-1 Sb (St - Sb St^-1 Sb)^-1 with St = Sb + Sw."""
    plda, held = small_model
    Sb, St = plda.between_, plda.between_ + plda.within_
    St_inv = np.linalg.inv(St)
    M = np.linalg.inv(St - Sb @ St_inv @ Sb)
    np.testing.assert_allclose(plda.Q, St_inv - M, atol=1e-10)
    np.testing.assert_allclose(plda.P, St_inv @ Sb @ M, atol=1e-10)
    e, t = plda.transform(held[:2]) - plda.plda_mean_
    manual = 0.5 * e @ plda.Q @ e + 0.5 * t @ plda.Q @ t + e @ plda.P @ t + plda.const
    assert plda.score(held[:1], held[1:2])[0] == pytest.approx(manual, rel=1e-10)


def test_score_multi_single_vector_equals_score_and_bruteforce(small_model):
    plda, held = small_model
    sets = [held[i:i + 1] for i in range(4)]
    np.testing.assert_allclose(plda.score_multi(sets, held[4:8]), plda.score(held[:4], held[4:8]), rtol=1e-10)
    Y = plda.transform(held)
    sets = [Y[0:3], Y[3:5], Y[5:9]]
    test = Y[9:12]
    got = plda.score_multi(sets, test, transformed=True)
    brute = [joint_llr(s, t, plda.plda_mean_, plda.between_, plda.within_) for s, t in zip(sets, test)]
    np.testing.assert_allclose(got, brute, rtol=1e-8, atol=1e-8)


def test_score_multi_matrix_matches_bruteforce_and_pairs(small_model):
    """Models of 1 to 4 vectors (grouped by count inside) against every test vector, and the paired form."""
    plda, held = small_model
    rng = np.random.default_rng(7)
    pool = np.vstack([held, held[::-1] + 0.3 * rng.normal(size=held.shape)])
    sets = [pool[0:2], pool[2:3], pool[3:6], pool[6:8], pool[8:12], pool[12:13]]
    test = pool[13:17]
    S = plda.score_multi_matrix(sets, test)
    assert S.shape == (6, 4)
    Y, Yt = [plda.transform(v) for v in sets], plda.transform(test)
    brute = [[joint_llr(s, t, plda.plda_mean_, plda.between_, plda.within_) for t in Yt] for s in Y]
    np.testing.assert_allclose(S, brute, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(plda.score_multi_matrix(Y, Yt, transformed=True), S, rtol=1e-10, atol=1e-10)
    ii, jj = np.meshgrid(np.arange(6), np.arange(4), indexing="ij")
    paired = plda.score_multi([sets[i] for i in ii.ravel()], test[jj.ravel()])
    np.testing.assert_allclose(paired, S.ravel(), rtol=1e-10, atol=1e-10)
    singles = plda.score_multi_matrix([v[None] for v in pool[:5]], test)
    np.testing.assert_allclose(singles, plda.score_matrix(pool[:5], test), rtol=1e-10, atol=1e-10)
    assert plda.score_multi_matrix([], test).shape == (0, 4)


def test_prepared_coordinates(small_model):
    """prepare() once, then score with prepared=True: float64 is exact, float32 (the default) is close."""
    plda, held = small_model
    E, T = held[:5], held[5:]
    S = plda.score_matrix(E, T)
    sets = [held[:2], held[2:5]]
    M = plda.score_multi_matrix(sets, T)
    np.testing.assert_allclose(plda.prepare(plda.transform(E), transformed=True), plda.prepare(E), rtol=1e-6)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-5)):
        Pe, Pt = plda.prepare(E, dtype=dtype), plda.prepare(T, dtype=dtype)
        assert Pe.dtype == dtype and Pe.shape == (5, plda.dim)
        np.testing.assert_allclose(plda.score_matrix(Pe, Pt, prepared=True), S, rtol=tol, atol=tol)
        np.testing.assert_allclose(plda.score(Pe, Pt[:5], prepared=True), np.diag(S), rtol=tol, atol=tol)
        prepared_sets = [Pe[:2], Pe[2:5]]
        np.testing.assert_allclose(plda.score_multi_matrix(prepared_sets, Pt, prepared=True), M, rtol=tol, atol=tol)
        np.testing.assert_allclose(plda.score_multi(prepared_sets, Pt[:2], prepared=True), M[[0, 1], [0, 1]],
                                   rtol=tol, atol=tol)


def test_em_step_matches_per_speaker_posteriors():
    """The diagonalised, count-grouped E-step equals the textbook one with a matrix inverse per speaker."""
    rng = np.random.default_rng(4)
    dim = 3
    counts = [1, 2, 2, 3, 5, 5, 5]
    spk = np.repeat(np.arange(len(counts)), counts)
    X = rng.normal(size=(len(spk), dim)) + 2.0 * rng.normal(size=(len(counts), dim))[spk]
    stats = ClassStats.from_data(X, spk, len(counts))
    mu, Sb, Sw = rng.normal(size=dim), random_spd(rng, dim, [3.0, 2.0, 1.0]), random_spd(rng, dim, [1.0, 0.7, 0.4])
    B, W = np.linalg.inv(Sb), np.linalg.inv(Sw)
    ey, eyy, resid, loglik = [], np.zeros((dim, dim)), np.zeros((dim, dim)), 0.0
    for s, n in enumerate(counts):
        x = X[spk == s]
        L_inv = np.linalg.inv(B + n * W)
        m = L_inv @ (B @ mu + W @ x.sum(axis=0))
        ey.append(m)
        eyy += L_inv + np.outer(m, m)
        resid += (x - m).T @ (x - m) + n * L_inv
        loglik += multivariate_normal(np.tile(mu, n), np.kron(np.ones((n, n)), Sb) + np.kron(np.eye(n), Sw)).logpdf(
            x.ravel())
    mu_ref = np.mean(ey, axis=0)
    got_mu, got_Sb, got_Sw, got_ll = em_step(stats, mu, Sb, Sw)
    np.testing.assert_allclose(got_mu, mu_ref, atol=1e-10)
    np.testing.assert_allclose(got_Sb, eyy / len(counts) - np.outer(mu_ref, mu_ref), atol=1e-10)
    np.testing.assert_allclose(got_Sw, resid / len(spk), atol=1e-10)
    assert got_ll == pytest.approx(loglik, rel=1e-10)


def test_save_load_round_trip(small_model, tmp_path):
    plda, held = small_model
    path = tmp_path / "plda.npz"
    plda.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert int(data["n_iter"]) == 5
    loaded = PLDA.load(path)
    assert (loaded.lda_dim, loaded.n_iter, loaded.length_norm, loaded.whiten) == (None, 5, True, True)
    np.testing.assert_array_equal(loaded.score_matrix(held, held), plda.score_matrix(held, held))
    assert [p.name for p in tmp_path.iterdir()] == ["plda.npz"]  # no temp file left behind
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ScoringInputError, match="other.npz"):
        PLDA.load(tmp_path / "other.npz")
    with pytest.raises(ScoringInputError, match="missing.npz"):
        PLDA.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("X, spk, match", [
    (np.zeros((4, 2)), [0, 0, 0, 0], "at least 2 speakers"),
    (np.arange(8.0).reshape(4, 2), [0, 1, 2, 3], "at least 2 utterances"),
    (np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 0.0], [3.0, 1.0]]), [0, 0, 1, 1], "row 1"),
    (np.zeros((4, 2)), [0, 0, 1], "4 labels"),
    (np.zeros(4), [0, 0, 1, 1], "2-D"),
    (np.zeros((6, 2)), [0, 0, 0, 1, 1, 1], "all training vectors are identical"),
    (np.repeat([[0.0, 1.0], [2.0, 5.0]], 3, axis=0), [0, 0, 0, 1, 1, 1], "every speaker's training vectors"),
])
def test_fit_rejects_bad_input(X, spk, match):
    with pytest.raises(ScoringInputError, match=match):
        PLDA().fit(X, spk)


def test_scoring_rejects_bad_input(small_model):
    plda, held = small_model
    with pytest.raises(ScoringInputError, match="enroll: expected 3 columns"):
        plda.score_matrix(held[:, :2], held)
    with pytest.raises(ScoringInputError, match="test: row 1"):
        plda.score(held[:2], np.vstack([held[0], np.full(3, np.inf)]))
    with pytest.raises(ScoringInputError, match="pairs rows"):
        plda.score(held[:2], held[:3])
    with pytest.raises(ScoringInputError, match=r"enroll_sets\[1\] is empty"):
        plda.score_multi([held[:2], held[:0]], held[:2])
    with pytest.raises(ScoringInputError, match="2 enrollment sets for 3"):
        plda.score_multi([held[:2], held[:1]], held[:3])
    with pytest.raises(ScoringInputError, match=r"enroll_sets\[1\]: expected a numeric 2-D array \(k, 3\)"):
        plda.score_multi_matrix([held[:2], held[:2, :2]], held)
    with pytest.raises(ScoringInputError, match=r"enroll_sets\[0\]: expected a numeric 2-D array"):
        plda.score_multi_matrix([held[0]], held)
    with pytest.raises(ScoringInputError, match=r"enroll_sets\[2\]: row 1 contains NaN"):
        plda.score_multi_matrix([held[:2], held[2:3], np.vstack([held[3], np.full(3, np.nan)])], held)
    with pytest.raises(ScoringInputError, match="test: expected 3 columns"):
        plda.score_multi_matrix([held[:2]], held[:, :2])
    with pytest.raises(RuntimeError, match="not fitted"):
        PLDA().score(held, held)
    with pytest.raises(ScoringInputError, match="lda_dim"):
        PLDA(lda_dim=0)
    with pytest.raises(ScoringInputError, match="n_iter"):
        PLDA(n_iter=-1)


def test_lda_dimension_check_and_subspace():
    rng = np.random.default_rng(5)
    dim = 6
    mu = np.zeros(dim)
    X, spk = sample(rng, 8, 10, mu, random_spd(rng, dim, [4, 3, 2, 1, 1, 1]), random_spd(rng, dim, [2, 1, 1, 1, 1, .5]))
    with pytest.raises(ScoringInputError, match="lda_dim=8 must be < the number of speakers"):
        PLDA(lda_dim=8).fit(X, spk)
    plda = PLDA(lda_dim=3).fit(X, spk)
    assert plda.transform(X).shape == (80, 3)
    assert np.allclose(np.linalg.norm(plda.transform(X), axis=1), np.sqrt(3))
    assert plda.score_matrix(X[:2], X[:5]).shape == (2, 5)
    reference = LinearDiscriminantAnalysis(solver="eigen").fit(X, spk).scalings_[:, :3]
    assert np.max(linalg.subspace_angles(plda.projection_, reference)) < 1e-6
