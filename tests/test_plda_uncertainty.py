"""Uncertainty-aware PLDA (scoring.uncertainty via scoring.plda.PLDA, scoring.backend, embeddings I/O, CLI)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from scoring.backend import score_trials
from scoring.cosine import CosineScorer
from scoring.io import Embeddings, ScoringInputError, Trials, read_embeddings, read_scores, write_embeddings
from scoring.metrics import cllr
from scoring.plda import PLDA
from spkver.cli import main


def random_spd(rng, dim, scales):
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (Q * np.asarray(scales, dtype=float)) @ Q.T


def sample(rng, n_spk, per_spk, mu, between, within):
    y = mu + rng.normal(size=(n_spk, len(mu))) @ np.linalg.cholesky(between).T
    spk = np.repeat(np.arange(n_spk), per_spk)
    return y[spk] + rng.normal(size=(len(spk), len(mu))) @ np.linalg.cholesky(within).T, spk


def joint_llr(enroll, test, mu, between, within, covs):
    """Brute force: log N([e_1..e_k, t]) - log N([e_1..e_k]) - log N(t), utterance j with within + covs[j]."""
    def logpdf(vectors, extra):
        n = len(vectors)
        cov = np.kron(np.ones((n, n)), between) + np.kron(np.eye(n), within)
        for j, c in enumerate(extra):
            cov[j * len(mu):(j + 1) * len(mu), j * len(mu):(j + 1) * len(mu)] += c
        return multivariate_normal(np.tile(mu, n), cov).logpdf(np.ravel(vectors))
    k = len(enroll)
    return (logpdf(np.vstack([enroll, test[None]]), covs) - logpdf(enroll, covs[:k])
            - logpdf(test[None], covs[k:]))


@pytest.fixture(scope="module")
def model():
    """A PLDA (LDA 6 of 8 dims, length norm) and held-out vectors with spreads and durations."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=8)
    X, spk = sample(rng, 60, 5, mu, random_spd(rng, 8, [4, 3, 2, 2, 1, 1, .5, .5]),
                    random_spd(rng, 8, [1, .8, .6, .5, .4, .3, .2, .1]))
    held, _ = sample(rng, 6, 3, mu, np.eye(8), 0.3 * np.eye(8))
    return PLDA(lda_dim=6, n_iter=4).fit(X, spk), held, 0.3 * rng.random(held.shape), rng.uniform(1, 8, len(held))


def test_zero_uncertainty_is_plain_plda_exactly(model):
    plda, held, _, _ = model
    E, T = held[:6], held[6:12]
    zero_e, zero_t = plda.prepare_variance(E, spread=np.zeros_like(E)), np.zeros((6, plda.dim))
    assert not zero_e.any()
    sets = [held[:2], held[2:3], held[3:6]]
    zero_sets = [np.zeros((len(s), plda.dim)) for s in sets]
    np.testing.assert_array_equal(plda.score(E, T, enroll_var=zero_e, test_var=zero_t), plda.score(E, T))
    np.testing.assert_array_equal(plda.score_matrix(E, T, enroll_var=zero_e), plda.score_matrix(E, T))
    np.testing.assert_array_equal(plda.score_multi(sets, T[:3], enroll_var=zero_sets, test_var=zero_t[:3]),
                                  plda.score_multi(sets, T[:3]))
    np.testing.assert_array_equal(plda.score_multi_matrix(sets, T, enroll_var=zero_sets),
                                  plda.score_multi_matrix(sets, T))
    # the uncertainty formula itself, forced with zero variances, is the same LLR
    mean, var = plda.posterior(sets)
    np.testing.assert_allclose(plda.score_posterior(mean, var, T[:3]), plda.score_multi(sets, T[:3]),
                               rtol=1e-12, atol=1e-12)
    # through the back-end: zero spreads take the plain path, bit for bit
    enroll = Embeddings([f"e{i}" for i in range(6)], E, spread=np.zeros_like(E))
    test = Embeddings([f"t{i}" for i in range(6)], T, spread=np.zeros_like(T))
    trials = Trials(np.repeat(enroll.ids, 6), np.tile(test.ids, 6))
    np.testing.assert_array_equal(score_trials(plda, trials, enroll, test, uncertainty="spread"),
                                  score_trials(plda, trials, enroll, test))


def test_prepare_variance_follows_the_preprocessing(model):
    """spread -> diag(M^T diag(spread^2) M) * dim / ||y||^2 with M = projection_ @ basis; duration -> scale / d."""
    plda, held, spread, duration = model
    M = plda.projection_ @ plda._basis
    Y = (held - plda.mean_) @ plda.projection_
    scale = plda.dim / np.sum(Y * Y, axis=1)
    expected = np.array([np.diag(M.T @ np.diag(s ** 2) @ M) * c for s, c in zip(spread, scale)])
    got = plda.prepare_variance(held, spread=spread, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    np.testing.assert_allclose(plda.prepare_variance(held, duration=duration, duration_scale=3.0, dtype=np.float64),
                               np.repeat(3.0 / duration[:, None], plda.dim, axis=1))
    both = plda.prepare_variance(held, spread=spread, duration=duration, dtype=np.float64)
    np.testing.assert_allclose(both, expected + 2.0 / duration[:, None], rtol=1e-10)
    plain = PLDA(length_norm=False).fit(held[:12], np.repeat(np.arange(4), 3))  # linear: no length-norm scale
    M = plain.projection_ @ plain._basis
    np.testing.assert_allclose(plain.prepare_variance(held[:2], spread=spread[:2], dtype=np.float64),
                               [np.diag(M.T @ np.diag(s ** 2) @ M) for s in spread[:2]], rtol=1e-10)


def test_pairwise_and_multi_enrollment_against_full_covariance_bruteforce(model):
    """Variances given in the scoring basis are exactly diagonal there, so the closed form must equal the joint
    Gaussian with each utterance's covariance S_w + G diag(s) G^T (G = S_w U maps the basis back)."""
    plda, held, _, _ = model
    rng = np.random.default_rng(1)
    Y = plda.transform(held)
    S = rng.uniform(0, 2, size=(len(Y), plda.dim)) * (rng.random((len(Y), 1)) < 0.8)  # some utterances exact
    G = plda.within_ @ plda._basis
    cov = [G @ np.diag(s) @ G.T for s in S]
    args = (plda.plda_mean_, plda.between_, plda.within_)
    pairs = plda.score(Y[:5], Y[5:10], transformed=True, enroll_var=S[:5], test_var=S[5:10])
    brute = [joint_llr(Y[i:i + 1], Y[5 + i], *args, [cov[i], cov[5 + i]]) for i in range(5)]
    np.testing.assert_allclose(pairs, brute, rtol=1e-9, atol=1e-9)

    bounds = [(0, 3), (3, 4), (4, 8), (8, 10)]
    sets, set_var = [Y[a:b] for a, b in bounds], [S[a:b] for a, b in bounds]
    test, test_var = Y[10:14], S[10:14]
    got = plda.score_multi_matrix(sets, test, transformed=True, enroll_var=set_var, test_var=test_var)
    brute = [[joint_llr(Y[a:b], Y[10 + j], *args, cov[a:b] + [cov[10 + j]]) for j in range(4)] for a, b in bounds]
    np.testing.assert_allclose(got, brute, rtol=1e-9, atol=1e-9)
    paired = plda.score_multi(sets, test, transformed=True, enroll_var=set_var, test_var=test_var)
    np.testing.assert_allclose(paired, np.diag(got), rtol=1e-12, atol=1e-12)
    mean, var = plda.posterior(sets, set_var, transformed=True)
    np.testing.assert_allclose(plda.score_posterior(mean, var, test, test_var, transformed=True,
                                                    pairs=(np.array([3, 0]), np.array([1, 2]))),
                               [got[3, 1], got[0, 2]], rtol=1e-12)
    # float32 prepared coordinates: within float32 rounding of the scores
    P = plda.prepare(held)
    S32 = S.astype(np.float32)
    got32 = plda.score_multi_matrix([P[a:b] for a, b in bounds], P[10:14], prepared=True,
                                    enroll_var=[S32[a:b] for a, b in bounds], test_var=S32[10:14])
    np.testing.assert_allclose(got32, got, rtol=1e-4, atol=1e-4)


def oracle_llr(E, T, cov_e, cov_t, mu, between, within):
    """Batched two-utterance LLR under the true model with per-utterance covariances: (n,)."""
    n, d = E.shape
    tot_e, tot_t = between + within + cov_e, between + within + cov_t  # (n, d, d)
    joint = np.zeros((n, 2 * d, 2 * d))
    joint[:, :d, :d], joint[:, d:, d:], joint[:, :d, d:], joint[:, d:, :d] = tot_e, tot_t, between, between
    x = np.concatenate([E - mu, T - mu], axis=1)

    def logpdf(C, v):
        sign, logdet = np.linalg.slogdet(C)
        return -0.5 * (logdet + np.einsum("ni,ni->n", v, np.linalg.solve(C, v[..., None])[..., 0])
                       + v.shape[1] * np.log(2 * np.pi))

    return logpdf(joint, x) - logpdf(tot_e, E - mu) - logpdf(tot_t, T - mu)


def test_generative_model_with_known_per_utterance_noise():
    """Clean training data; held-out utterances each with their own extra noise (diagonal in the raw space, std
    given to the scorer as spread). The uncertainty-aware LLR tracks the oracle more closely and is better
    calibrated than plain PLDA, which takes every utterance as clean."""
    rng = np.random.default_rng(2)
    dim = 8
    mu = rng.normal(size=dim)
    between = random_spd(rng, dim, [4, 3, 2, 1.5, 1, .8, .5, .3])
    within = random_spd(rng, dim, [.8, .6, .5, .4, .3, .25, .2, .1])
    X, spk = sample(rng, 400, 6, mu, between, within)
    plda = PLDA(length_norm=False).fit(X, spk)

    n = 3000
    Y = mu + rng.normal(size=(n, dim)) @ np.linalg.cholesky(between).T
    other = np.roll(np.arange(n), 1)
    same = rng.random(n) < 0.5
    profile = rng.uniform(0.3, 1.0, size=(2, n, dim))
    level = np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=(2, n, 1)))
    spread = profile * level  # (2, n, dim) known per-utterance standard deviations
    noise = rng.normal(size=(2, n, dim)) @ np.linalg.cholesky(within).T + spread * rng.normal(size=(2, n, dim))
    E = Y + noise[0]
    T = np.where(same[:, None], Y, Y[other]) + noise[1]
    oracle = oracle_llr(E, T, spread[0, :, :, None] ** 2 * np.eye(dim), spread[1, :, :, None] ** 2 * np.eye(dim),
                        mu, between, within)
    plain = plda.score(E, T)
    aware = plda.score(E, T, enroll_var=plda.prepare_variance(E, spread=spread[0], dtype=np.float64),
                       test_var=plda.prepare_variance(T, spread=spread[1], dtype=np.float64))
    mse_plain, mse_aware = np.mean((plain - oracle) ** 2), np.mean((aware - oracle) ** 2)
    assert mse_aware < 0.5 * mse_plain, (mse_aware, mse_plain)
    c_oracle, c_plain, c_aware = (cllr(s[same], s[~same]) for s in (oracle, plain, aware))
    assert c_oracle <= c_aware + 0.02 and c_aware < c_plain - 0.02, (c_oracle, c_aware, c_plain)


def test_backend_passes_uncertainty_through(model):
    plda, held, spread, duration = model
    enroll = Embeddings([f"e{i}" for i in range(9)], held[:9], spread=spread[:9], duration=duration[:9])
    test = Embeddings([f"t{i}" for i in range(9)], held[9:], spread=spread[9:], duration=duration[9:])
    rng = np.random.default_rng(3)
    trials = Trials(enroll.ids[rng.integers(0, 9, 40)], test.ids[rng.integers(0, 9, 40)])
    e, t = enroll.index(trials.enroll), test.index(trials.test)
    for kind, extra in (("spread", {"spread": spread}), ("duration", {"duration": duration})):
        S = plda.prepare_variance(held, **{k: v for k, v in extra.items()}, dtype=np.float64)
        want = plda.score(held[e], held[9 + t], enroll_var=S[e], test_var=S[9 + t])
        got = score_trials(plda, trials, enroll, test, uncertainty=kind)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.max(np.abs(got - score_trials(plda, trials, enroll, test))) > 1e-2  # it does change the scores

    enroll_map = {"m0": ["e0", "e1", "e2"], "m1": ["e3"], "m2": ["e4", "e5"], "m3": ["e6", "e7", "e8", "e0"]}
    models = Trials(np.array(["m0", "m1", "m2", "m3"] * 3), test.ids[rng.integers(0, 9, 12)])
    got = score_trials(plda, models, enroll, test, enroll_map=enroll_map, multi="plda", uncertainty="spread")
    S = plda.prepare_variance(held, spread=spread, dtype=np.float64)
    sets = [enroll.index(enroll_map[m]) for m in models.enroll]
    t = test.index(models.test)
    want = plda.score_multi([held[r] for r in sets], held[9 + t], enroll_var=[S[r] for r in sets], test_var=S[9 + t])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # multi="mean": the average embedding with the variance of a mean of independent errors
    got = score_trials(plda, models, enroll, test, enroll_map=enroll_map, uncertainty="spread")
    mean_x = np.array([held[r].mean(axis=0) for r in sets])
    mean_s = np.array([np.sqrt(np.sum(spread[r] ** 2, axis=0)) / len(r) for r in sets])
    want = plda.score(mean_x, held[9 + t], enroll_var=plda.prepare_variance(mean_x, spread=mean_s),
                      test_var=S[9 + t])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bad_uncertainty_inputs(model, tmp_path):
    plda, held, spread, duration = model
    ids = [f"u{i}" for i in range(len(held))]
    with pytest.raises(ScoringInputError, match=r"emb.npz: spread has shape \(18, 7\); expected \(18, 8\)"):
        Embeddings(ids, held, source="emb.npz", spread=spread[:, :7])
    bad = spread.copy()
    bad[4, 2] = -0.1
    with pytest.raises(ScoringInputError, match="emb.npz: spread of id 'u4' is negative"):
        Embeddings(ids, held, source="emb.npz", spread=bad)
    bad[4, 2], bad[7, 0] = 0.1, np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, ids=np.array(ids), embeddings=held.astype(np.float32), spread=bad)
    with pytest.raises(ScoringInputError, match=r"nan.npz: spread of id 'u7' contains NaN"):
        read_embeddings(path)
    assert read_embeddings(path, spread=False).spread is None
    plain = tmp_path / "plain.npz"
    write_embeddings(plain, ids, held)
    with pytest.raises(ScoringInputError, match=r"plain.npz: no 'spread' array"):
        read_embeddings(plain, spread=True)
    # Kaldi: a spread table beside the archive, one id missing
    ark = tmp_path / "emb.ark"
    write_embeddings(ark, ids, held, spread=spread)
    got = read_embeddings(tmp_path / "emb.scp")
    np.testing.assert_allclose(got.spread, spread.astype(np.float32))
    write_embeddings(tmp_path / "emb.spread.ark", ids[:-1], spread[:-1])
    with pytest.raises(ScoringInputError, match=r"emb.spread.ark: no spread for id 'u17'"):
        read_embeddings(ark)
    # durations: an id without one is named, with the file it should have come from
    emb = Embeddings(ids, held).with_duration({u: 2.0 for u in ids[1:]}, "data/utt2dur")
    trials = Trials(["u0", "u1"], ["u2", "u3"])
    with pytest.raises(ScoringInputError, match=r"data/utt2dur: no duration for id 'u0'"):
        score_trials(plda, trials, emb, emb, uncertainty="duration")
    with pytest.raises(ScoringInputError, match="duration of id 'u1' is -1.0"):
        Embeddings(ids, held, duration=np.r_[1.0, -1.0, np.ones(16)])
    with pytest.raises(ScoringInputError, match=r"plain.npz: no spread"):
        score_trials(plda, trials, read_embeddings(plain), read_embeddings(plain), uncertainty="spread")
    with pytest.raises(ScoringInputError, match="needs a PLDA scorer"):
        score_trials(CosineScorer(), trials, emb, emb, uncertainty="duration")
    with pytest.raises(ScoringInputError, match="uncertainty='mc'"):
        score_trials(plda, trials, emb, emb, uncertainty="mc")
    # PLDA-level arrays
    S = plda.prepare_variance(held, spread=spread)
    with pytest.raises(ScoringInputError, match=r"enroll_var: expected variances of shape \(4, 6\)"):
        plda.score(held[:4], held[4:8], enroll_var=S[:3])
    neg = S[:4].copy()
    neg[1, 3] = -1e-3
    with pytest.raises(ScoringInputError, match="test_var: row 1 is negative"):
        plda.score(held[:4], held[4:8], test_var=neg)
    with pytest.raises(ScoringInputError, match=r"enroll_var\[1\]: expected variances of shape \(1, 6\)"):
        plda.score_multi([held[:2], held[2:3]], held[3:5], enroll_var=[S[:2], S[2:4]])
    with pytest.raises(ScoringInputError, match="enroll_var: expected a list of 2 arrays"):
        plda.score_multi_matrix([held[:2], held[2:3]], held, enroll_var=[S[:2]])
    with pytest.raises(ScoringInputError, match=r"spread: expected variances of shape \(18, 8\)"):
        plda.prepare_variance(held, spread=spread[:, :3])
    with pytest.raises(ScoringInputError, match="duration: row 2 is 0.0"):
        plda.prepare_variance(held[:3], duration=[1.0, 2.0, 0.0])


def test_cli_uncertainty(tmp_path, capsys):
    rng = np.random.default_rng(4)
    spk = np.repeat(np.arange(12), 5)
    X = (2 * rng.normal(size=(12, 10))[spk] + rng.normal(size=(60, 10))).astype(np.float32)
    ids = [f"s{s:02d}-{i}" for i, s in enumerate(spk)]
    emb = tmp_path / "emb.npz"
    write_embeddings(emb, ids, X, spread=0.2 * rng.random((60, 10)))
    (tmp_path / "utt2spk").write_text("".join(f"{u} s{s:02d}\n" for u, s in zip(ids, spk)))
    (tmp_path / "utt2dur").write_text("".join(f"{u} {1 + i % 7}.5\n" for i, u in enumerate(ids)))
    (tmp_path / "trials").write_text("".join(f"{ids[i]} {ids[j]}\n" for i in range(0, 60, 4) for j in range(1, 60, 5)))
    base = ["score", "--trials", str(tmp_path / "trials"), "--enroll", str(emb), "--test", str(emb), "--backend",
            "plda", "--train", str(emb), "--utt2spk", str(tmp_path / "utt2spk")]
    out = {}
    for name, extra in (("none", []), ("spread", ["--uncertainty", "spread"]),
                        ("duration", ["--uncertainty", "duration", "--utt2dur", str(tmp_path / "utt2dur")])):
        out[name] = tmp_path / f"{name}.scores"
        assert main(base + extra + ["--out", str(out[name])]) == 0
    scores = {name: read_scores(path)[2] for name, path in out.items()}
    assert all(np.all(np.isfinite(s)) for s in scores.values())
    assert np.max(np.abs(scores["spread"] - scores["none"])) > 1e-3
    assert np.max(np.abs(scores["duration"] - scores["none"])) > 1e-3
    capsys.readouterr()
    (tmp_path / "short").write_text(f"{ids[0]} 2.0\n")
    for extra, message in ((["--uncertainty", "duration", "--utt2dur", str(tmp_path / "short")],
                            "short: no duration for id"),
                           (["--uncertainty", "duration"], "no durations"),
                           (["--utt2dur", str(tmp_path / "utt2dur")], "--utt2dur needs --uncertainty duration")):
        assert main(base + extra + ["--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert main(["score", "--trials", str(tmp_path / "trials"), "--enroll", str(emb), "--test", str(emb),
                 "--uncertainty", "spread", "--out", str(tmp_path / "x")]) == 2
    assert "--uncertainty needs --backend plda" in capsys.readouterr().err
