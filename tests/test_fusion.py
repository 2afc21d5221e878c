"""scoring.fusion: fusion of two correlated synthetic systems on disjoint trial sets, calibration quality,
gradient, invariances, persistence and input checks."""

import numpy as np
import pytest
from scipy.optimize import check_grad

from scoring.fusion import Calibration, LinearFusion, _objective
from scoring.io import ScoringInputError
from scoring.metrics import act_dcf, cllr, eer, min_cllr, min_dcf


def make_systems(rng, n_tar, n_non):
    """Two systems sharing one noise term (correlated errors) plus independent noise, on different scales."""
    y = np.r_[np.ones(n_tar, dtype=int), np.zeros(n_non, dtype=int)]
    shared = rng.normal(size=y.size)
    s1 = 3.0 * (4.0 * y + shared + rng.normal(size=y.size)) + 5.0
    s2 = 0.5 * (3.5 * y + shared + rng.normal(size=y.size)) - 1.0
    return np.stack([s1, s2], axis=1), y


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    return make_systems(rng, 2000, 20000), make_systems(rng, 2000, 20000)


def _split(llr, y):
    return llr[y == 1], llr[y == 0]


def test_fusion_beats_both_systems(sets):
    (S_train, y_train), (S_eval, y_eval) = sets
    fused = LinearFusion().fit(S_train, y_train).predict(S_eval)
    for k in range(2):
        single = Calibration().fit(S_train[:, k], y_train).predict(S_eval[:, k])
        assert cllr(*_split(fused, y_eval)) < cllr(*_split(single, y_eval))
        assert eer(*_split(fused, y_eval)) < eer(*_split(single, y_eval))


def test_calibration_reaches_min_costs(sets):
    """Scores whose classes are equal-variance Gaussians have linear LLRs: after affine calibration on one
    set, the other set's actual costs come close to their minimum (the PAV / threshold-optimal ones)."""
    (S_train, y_train), (S_eval, y_eval) = sets
    for k in range(2):
        cal = Calibration(p_target=0.5).fit(S_train[:, k], y_train)
        tar, non = _split(cal.predict(S_eval[:, k]), y_eval)
        assert act_dcf(tar, non, 0.01) <= 1.1 * min_dcf(tar, non, 0.01)
        assert cllr(tar, non) <= 1.05 * min_cllr(tar, non)
        raw_tar, raw_non = _split(S_eval[:, k], y_eval)  # uncalibrated scores are far from it
        assert cllr(raw_tar, raw_non) > 1.5 * cllr(tar, non)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    weight = np.where(y == 1, 0.3 / max(1, y.sum()), 0.7 / max(1, (1 - y).sum()))
    args = (X, y, weight, -0.8, 0.01)
    for _ in range(3):
        params = rng.normal(size=4)
        err = check_grad(lambda p: _objective(p, *args)[0], lambda p: _objective(p, *args)[1], params)
        assert err < 1e-6


def test_invariant_to_affine_score_changes(sets):
    (S_train, y_train), (S_eval, _) = sets
    ref = LinearFusion(reg=0.0).fit(S_train, y_train).predict(S_eval)
    scale, shift = np.array([10.0, 0.01]), np.array([-3.0, 100.0])
    got = LinearFusion(reg=0.0).fit(S_train * scale + shift, y_train).predict(S_eval * scale + shift)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_offset_follows_prior():
    """Perfectly calibrated LLR inputs: the trained map is the identity, whatever the training prior."""
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(20000, dtype=int), np.zeros(20000, dtype=int)]
    llr = 2.0 * np.where(y == 1, 1.0, -1.0) + 2.0 * rng.normal(size=y.size)  # N(+-2, 2^2): LLR = score
    for p in (0.1, 0.5, 0.9):
        cal = Calibration(p_target=p, reg=0.0).fit(llr, y)
        assert abs(cal.scale - 1.0) < 0.05 and abs(cal.offset) < 0.1


def test_save_load(tmp_path, sets):
    (S_train, y_train), (S_eval, _) = sets
    model = LinearFusion(p_target=0.2).fit(S_train, y_train)
    model.save(tmp_path / "fusion.npz")
    back = LinearFusion.load(tmp_path / "fusion.npz")
    np.testing.assert_array_equal(back.predict(S_eval), model.predict(S_eval))
    assert back.p_target == 0.2
    with pytest.raises(ScoringInputError, match="fusion.npz: a calibration has one weight, this file has 2"):
        Calibration.load(tmp_path / "fusion.npz")
    cal = Calibration().fit(S_train[:, 0], y_train)
    cal.save(tmp_path / "cal.npz")
    np.testing.assert_array_equal(Calibration.load(tmp_path / "cal.npz").predict(S_eval[:, 0]),
                                  cal.predict(S_eval[:, 0]))
    np.savez(tmp_path / "other.npz", weights=np.ones(2))
    with pytest.raises(ScoringInputError, match="other.npz: not a"):
        LinearFusion.load(tmp_path / "other.npz")


def test_input_checks():
    S, y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), np.array([1, 0, 1])
    with pytest.raises(ScoringInputError, match="need target and non-target trials, got 3 target and 0"):
        LinearFusion().fit(S, np.ones(3, dtype=int))
    with pytest.raises(ScoringInputError, match="trial 1 has label 2"):
        LinearFusion().fit(S, [1, 2, 0])
    with pytest.raises(ScoringInputError, match=r"labels: expected shape \(3,\)"):
        LinearFusion().fit(S, [1, 0])
    with pytest.raises(ScoringInputError, match="S: trial 2 has a NaN or inf"):
        LinearFusion().fit(np.where(np.arange(6).reshape(3, 2) == 4, np.inf, S), y)
    with pytest.raises(ScoringInputError, match=r"expected scores of shape \(n_trials, n_systems\)"):
        LinearFusion().fit(S[:, 0], y)
    with pytest.raises(ScoringInputError, match="expected a 1-D array"):
        Calibration().fit(S, y)
    with pytest.raises(ScoringInputError, match="p_target=1.0 must be in"):
        LinearFusion(p_target=1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearFusion().predict(S)
    with pytest.raises(ScoringInputError, match="3 systems, but the fusion was trained on 2"):
        LinearFusion().fit(S, y).predict(np.ones((2, 3)))
