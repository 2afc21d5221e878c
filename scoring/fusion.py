"""Linear score fusion and calibration by prior-weighted logistic regression (outputs log-likelihood ratios).

Given scores S (n, k) of k systems, the fused log-likelihood ratio is llr = S w + b. (w, b) minimise the
prior-weighted cross-entropy of BOSARIS / FoCal (Brümmer & du Preez, "Application-independent evaluation
of speaker detection", Computer Speech and Language 2006; Brümmer & de Villiers, "The BOSARIS Toolkit",
arXiv:1304.2865, 2013), i.e. Cllr at the training prior p = p_target:

    C(w, b) = [ p / N_tar * sum_tar log(1 + exp(-(llr + logit p)))
              + (1 - p) / N_non * sum_non log(1 + exp(llr + logit p)) ] / log 2  +  reg * |w'|^2

where w' are the weights on scores standardised per system (so `reg` does not depend on score scales).
The convex problem is solved by L-BFGS (scipy.optimize.minimize) with its analytic gradient. Train on
trials disjoint from those you evaluate on.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from scoring.io import ScoringInputError, atomic_write, read_npz

_FORMAT = "spkver-linear-fusion-v1"


def _objective(params: np.ndarray, X: np.ndarray, y: np.ndarray, weight: np.ndarray, offset: float,
               reg: float) -> tuple[float, np.ndarray]:
    """Loss and gradient of the prior-weighted logistic loss; params = (w' (k,), b'), X standardised (n, k)."""
    w, b = params[:-1], params[-1]
    z = X @ w + b + offset  # posterior log-odds of "target"
    sign = np.where(y == 1, -1.0, 1.0)  # loss log(1 + exp(sign * z))
    loss = float(weight @ np.logaddexp(0.0, sign * z)) / np.log(2.0) + reg * float(w @ w)
    g = weight * sign * expit(sign * z) / np.log(2.0)  # d loss / d z
    return loss, np.concatenate((X.T @ g + 2.0 * reg * w, [g.sum()]))


class LinearFusion:
    """Weighted sum of k system scores plus an offset, trained to output calibrated LLRs.

    Parameters: p_target in (0, 1), the prior the training cost is evaluated at; reg >= 0, an L2 penalty
    on the standardised weights. After `fit`: `weights` (k,), `offset` (float); `predict(S)` = S w + b.

    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([1, 0], 200)
    >>> S = np.stack([2 * y + rng.normal(size=400), y + rng.normal(size=400)], axis=1)
    >>> fusion = LinearFusion().fit(S, y)
    >>> fusion.weights.round(1).tolist(), round(fusion.offset, 1)  # exact LLR here: 2 s1 + s2 - 2.5
    ([1.9, 0.7], -2.2)
    >>> fusion.predict(S).shape
    (400,)
    """

    def __init__(self, p_target: float = 0.5, reg: float = 1e-6):
        if not 0.0 < p_target < 1.0:
            raise ScoringInputError(f"p_target={p_target!r} must be in (0, 1)")
        if not reg >= 0.0 or not np.isfinite(reg):
            raise ScoringInputError(f"reg={reg!r} must be a finite number >= 0")
        self.p_target = float(p_target)
        self.reg = float(reg)
        self.weights: np.ndarray | None = None
        self.offset: float | None = None

    # Calibration overrides this to accept (n,) score vectors.
    def _as_scores(self, S, name: str = "S") -> np.ndarray:
        S = np.asarray(S, dtype=np.float64)
        if S.ndim != 2 or S.shape[1] == 0:
            raise ScoringInputError(f"{name}: expected scores of shape (n_trials, n_systems), got {S.shape}")
        if self.weights is not None and S.shape[1] != self.weights.shape[0]:
            raise ScoringInputError(f"{name}: {S.shape[1]} systems, but the fusion was trained on "
                                    f"{self.weights.shape[0]}")
        bad = ~np.isfinite(S).all(axis=1)
        if bad.any():
            raise ScoringInputError(f"{name}: trial {int(np.argmax(bad))} has a NaN or inf score")
        return S

    def fit(self, S, labels) -> "LinearFusion":
        """Train on scores S (n, k) and labels (n,) in {0, 1} (1 = target); both classes must occur."""
        self.weights = self.offset = None
        S = self._as_scores(S)
        y = np.asarray(labels)
        if y.shape != (S.shape[0],):
            raise ScoringInputError(f"labels: expected shape ({S.shape[0]},) (one per trial), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            i = int(np.argmax(~np.isin(y, (0, 1))))
            raise ScoringInputError(f"labels: trial {i} has label {y[i].item()!r}; expected 0 or 1")
        n_tar, n_non = int(np.sum(y == 1)), int(np.sum(y == 0))
        if n_tar == 0 or n_non == 0:
            raise ScoringInputError(f"labels: need target and non-target trials, got {n_tar} target and "
                                    f"{n_non} non-target")
        mean, std = S.mean(axis=0), S.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        X = (S - mean) / std
        weight = np.where(y == 1, self.p_target / n_tar, (1.0 - self.p_target) / n_non)
        result = minimize(_objective, np.zeros(S.shape[1] + 1), jac=True, method="L-BFGS-B",
                          args=(X, y, weight, float(logit(self.p_target)), self.reg),
                          options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-12})
        if not np.all(np.isfinite(result.x)):
            raise RuntimeError(f"fusion training diverged: {result.message}")
        w_std = result.x[:-1]
        self.weights = w_std / std
        self.offset = float(result.x[-1] - np.sum(w_std * mean / std))
        return self

    def predict(self, S) -> np.ndarray:
        """Fused log-likelihood ratios (n,) for scores S (n, k)."""
        if self.weights is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        return self._as_scores(S) @ self.weights + self.offset

    def save(self, path) -> None:
        """Write the trained parameters to `path` (.npz, no pickle), atomically."""
        if self.weights is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: nothing to save")
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), p_target=np.array(self.p_target), reg=np.array(self.reg),
                     weights=self.weights, offset=np.array(self.offset))

    @classmethod
    def load(cls, path):
        """Read parameters written by `save`; raises ScoringInputError naming the file when it is not one."""
        path = os.fspath(path)
        content = read_npz(path, "a fusion model")
        missing = [k for k in ("format", "p_target", "reg", "weights", "offset") if k not in content]
        if missing or str(content.get("format")) != _FORMAT:
            raise ScoringInputError(f"{path}: not a {_FORMAT} file (missing {missing or 'format tag'})")
        weights = np.asarray(content["weights"], dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or not np.isfinite(weights).all():
            raise ScoringInputError(f"{path}: weights must be a finite 1-D array, got shape {weights.shape}")
        model = cls(p_target=float(content["p_target"]), reg=float(content["reg"]))
        model._check_loaded(weights, path)
        model.weights, model.offset = weights, float(content["offset"])
        return model

    def _check_loaded(self, weights: np.ndarray, path: str) -> None:
        """Hook for subclasses that restrict the number of systems."""


class Calibration(LinearFusion):
    """One-system fusion: llr = scale * score + offset. `fit(scores (n,), labels)`, `predict(scores (n,))`."""

    def _as_scores(self, S, name: str = "scores") -> np.ndarray:
        S = np.asarray(S, dtype=np.float64)
        if S.ndim != 1:
            raise ScoringInputError(f"{name}: expected a 1-D array (n_trials,), got shape {S.shape}")
        return super()._as_scores(S[:, None], name)

    @property
    def scale(self) -> float:
        if self.weights is None:
            raise RuntimeError("Calibration is not fitted")
        return float(self.weights[0])

    def _check_loaded(self, weights: np.ndarray, path: str) -> None:
        if weights.shape != (1,):
            raise ScoringInputError(f"{path}: a calibration has one weight, this file has {weights.shape[0]}")
