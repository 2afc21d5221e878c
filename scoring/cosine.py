"""Cosine scoring: the one cosine scorer of the back-end, range [-1, 1] (1 = same direction).

cos(e, t) = e.t / (|e| |t|). With `subtract_mean=True` both sides are first centred on the mean of the
training embeddings given to `fit` (the mean-subtraction of Kaldi's x-vector cosine / PLDA recipes), which
removes the direction shared by all embeddings and spreads the scores. A zero vector has no direction: its
cosine with anything is defined as 0.
"""

from __future__ import annotations

import os

import numpy as np

from scoring.io import ScoringInputError, as_matrix, atomic_write, read_npz

_FORMAT = "spkver-cosine-v1"


def _unit(X: np.ndarray) -> np.ndarray:
    """Rows of X (n, d) scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)


def cosine_score(enroll, test) -> np.ndarray:
    """Paired cosine similarity: enroll (n, d), test (n, d) -> (n,) in [-1, 1].

    >>> cosine_score([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [-1.0, -1.0]])
    array([ 1., -1.])
    """
    E = as_matrix(enroll, "enroll", keep_float32=True)
    T = as_matrix(test, "test", E.shape[1], keep_float32=True)
    if E.shape[0] != T.shape[0]:
        raise ScoringInputError(f"enroll has {E.shape[0]} rows but test has {T.shape[0]}; rows are paired")
    return np.clip(np.einsum("ij,ij->i", _unit(E), _unit(T)), -1.0, 1.0)


class CosineScorer:
    """Cosine scorer with optional mean subtraction, following the back-end scorer protocol.

    `transform(X)` maps embeddings (n, d) to centred unit-length rows; `score` / `score_matrix` take raw
    embeddings, or the output of `transform` with `transformed=True` (then a score is a dot product).
    Without mean subtraction `fit` is optional.

    >>> s = CosineScorer(subtract_mean=True).fit([[1.0, 1.0], [3.0, 1.0]])
    >>> s.score_matrix([[3.0, 2.0]], [[4.0, 3.0], [3.0, 0.0]]).round(6)
    array([[1., 0.]])
    """

    def __init__(self, subtract_mean: bool = False):
        self.subtract_mean = bool(subtract_mean)
        self.mean_: np.ndarray | None = None

    def fit(self, X) -> "CosineScorer":
        """Store the mean (d,) of training embeddings X (n, d); used when subtract_mean=True."""
        X = as_matrix(X, "X", keep_float32=True)
        if X.shape[0] == 0:
            raise ScoringInputError("X: no training embeddings")
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        return self

    def transform(self, X, name: str = "X") -> np.ndarray:
        """(n, d) embeddings -> (n, d) centred (if subtract_mean) and length-normalised rows."""
        X = as_matrix(X, name, None if self.mean_ is None else self.mean_.shape[0], keep_float32=True)
        if self.subtract_mean:
            if self.mean_ is None:
                raise RuntimeError("CosineScorer(subtract_mean=True) is not fitted: call fit(X) first")
            X = X - self.mean_.astype(X.dtype)
        return _unit(X)

    def _prepare(self, X, name: str, transformed: bool) -> np.ndarray:
        return as_matrix(X, name, keep_float32=True) if transformed else self.transform(X, name)

    def score(self, enroll, test, transformed: bool = False) -> np.ndarray:
        """Paired scores: enroll (n, d), test (n, d) -> (n,) in [-1, 1]."""
        E = self._prepare(enroll, "enroll", transformed)
        T = self._prepare(test, "test", transformed)
        if E.shape != T.shape:
            raise ScoringInputError(f"enroll {E.shape} and test {T.shape} must have the same shape (paired rows)")
        return np.clip(np.einsum("ij,ij->i", E, T), -1.0, 1.0)

    def score_matrix(self, enroll, test, transformed: bool = False) -> np.ndarray:
        """All pairs: enroll (m, d), test (k, d) -> (m, k) in [-1, 1]."""
        E = self._prepare(enroll, "enroll", transformed)
        T = self._prepare(test, "test", transformed)
        if E.shape[1] != T.shape[1]:
            raise ScoringInputError(f"enroll has dimension {E.shape[1]} but test has {T.shape[1]}")
        S = E @ T.T
        return np.clip(S, -1.0, 1.0, out=S)

    def save(self, path) -> None:
        """Write `subtract_mean` and the mean (d,) (empty when not fitted) to `path` (.npz, no pickle), atomically."""
        if self.subtract_mean and self.mean_ is None:
            raise RuntimeError("CosineScorer(subtract_mean=True) is not fitted: nothing to save")
        mean = np.zeros(0) if self.mean_ is None else self.mean_
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), subtract_mean=np.array(self.subtract_mean), mean=mean)

    @classmethod
    def load(cls, path) -> "CosineScorer":
        """Read a scorer written by `save`; raises ScoringInputError naming the file when it is not one."""
        path = os.fspath(path)
        content = read_npz(path, "a cosine scorer")
        if str(content.get("format")) != _FORMAT or "subtract_mean" not in content or "mean" not in content:
            raise ScoringInputError(f"{path}: not a {_FORMAT} file")
        scorer = cls(subtract_mean=bool(content["subtract_mean"]))
        mean = np.asarray(content["mean"], dtype=np.float64)
        if mean.ndim != 1 or (scorer.subtract_mean and mean.size == 0) or not np.isfinite(mean).all():
            raise ScoringInputError(f"{path}: mean must be a finite 1-D array, got shape {mean.shape}")
        scorer.mean_ = mean if mean.size else None
        return scorer
