"""Two-covariance PLDA back-end: pre-processing, EM training, closed-form LLR scoring, `.npz` persistence.

Model (Ioffe, "Probabilistic linear discriminant analysis", ECCV 2006; the "two-covariance" variant of
Sizov, Lee & Kinnunen, "Unifying probabilistic linear discriminant analysis variants in biometric
authentication", S+SSPR 2014), for a pre-processed embedding x of speaker s:

    x = y_s + e,    y_s ~ N(mu, S_b),    e ~ N(0, S_w)       (S_b = B^-1, S_w = W^-1)

Pre-processing (`PLDA.transform`): centre on the training mean, LDA to `lda_dim`, whiten with the training
covariance, length-normalise to radius sqrt(dim) (Garcia-Romero & Espy-Wilson 2011; see `scoring.lda`).

Scoring works, as Kaldi's `ivector-plda-scoring` does, in the basis that diagonalises both covariances
(z = (x - mu) U with U^T S_w U = I, U^T S_b U = diag(psi)), where the two-covariance pairwise
log-likelihood ratio (Garcia-Romero & Espy-Wilson 2011) has diagonal quadratic terms:

    llr(e, t) = 0.5 e'Qe + 0.5 t'Qt + e'Pt + c,
    Q = 1/(1+psi) - (1+psi)/(1+2 psi),  P = psi/(1+2 psi),  c = sum log(1+psi) - 0.5 log(1+2 psi),

so a (m, k) score matrix costs one GEMM plus row terms. `PLDA.Q` / `PLDA.P` give the same matrices in the
transformed space. A model of k vectors with mean ebar in that basis has (a_k = k psi / (1 + k psi) the
posterior-mean factor, v_k = 1 + psi / (1 + k psi) the predictive variance; k = 1 gives the pairwise llr)

    llr_k(ebar, t) = (a_k/v_k) ebar't - 0.5 (a_k^2/v_k) ebar'ebar + 0.5 (1/(1+psi) - 1/v_k) t't
                     + 0.5 sum log((1+psi)/v_k),

so the models with k vectors cost one GEMM (`PLDA.score_multi_matrix`). All scores are natural-log LRs.

Precision: raw or transformed inputs are scored in float64. `PLDA.prepare` gives the scoring coordinates once,
by default float32 (as `scoring.backend` uses them): the GEMM then runs in float32 (twice as fast, half the
memory), the quadratic terms in float64. With 512-dim embeddings the scores stay within a few 1e-7 of the
score range of float64 ones (measured: at most 4.4e-5 for scores spanning -152..-8), far below what moves an EER.

Uncertainty (`scoring.uncertainty`): every scoring method takes optional per-utterance variances in the scoring
basis (`enroll_var`, `test_var`, from `PLDA.prepare_variance`: a Monte Carlo spread carried through the
pre-processing, or a duration), added to each side's within-speaker covariance; the diagonal approximation in
this basis keeps the LLR closed form, with the speaker posterior `PLDA.posterior` and `PLDA.score_posterior`.
Zero (or no) variances give exactly the scores above.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
from scipy import linalg

from scoring.io import ScoringInputError, as_matrix, atomic_write, read_npz
from scoring.lda import COV_FLOOR, ClassStats, floor_covariance, lda_projection, length_normalize, whitening_projection
from scoring.uncertainty import DURATION_SCALE, check_duration, check_variance, posterior, score_pairs

log = logging.getLogger(__name__)

_FORMAT = "spkver-plda-v1"
_ARRAYS = ("mean_", "projection_", "plda_mean_", "between_", "within_", "loglik_")
_LOG2PI = np.log(2.0 * np.pi)


def em_step(stats: ClassStats, mu: np.ndarray, between: np.ndarray, within: np.ndarray):
    """One exact EM iteration for the two-covariance model; returns (mu, between, within, loglik).

    `stats` hold the pre-processed training vectors grouped by speaker; `mu` (dim,), `between` and
    `within` (dim, dim) are the current parameters and `loglik` is the marginal log-likelihood of the
    training data under them (non-decreasing across iterations).

    E-step (Sizov et al. 2014, sec. 3.2): speaker s with n_s vectors summing to f_s has the posterior
    y_s ~ N(L_s^-1 (B mu + W f_s), L_s^-1), L_s = B + n_s W. In the basis where W = I and B = diag(1/psi)
    every L_s is diagonal, so the posteriors of all speakers come from one generalised eigendecomposition
    and elementwise operations; the posterior covariances are accumulated once per distinct count n_s.
    M-step: mu = mean E[y], S_b = mean E[y y'] - mu mu', S_w = (1/N) sum_s sum_j E[(x_j - y_s)(x_j - y_s)'].
    """
    counts = stats.counts.astype(np.float64)
    psi, U = linalg.eigh(between, within)  # U^T S_w U = I, U^T S_b U = diag(psi)
    psi = np.maximum(psi, 0.0)
    G = within @ U  # maps z back to x: x = z G^T (G = U^-T)
    fz = stats.sums @ U  # (n_spk, dim)
    muz = mu @ U
    denom = 1.0 + counts[:, None] * psi  # (n_spk, dim)
    ez = (muz + psi * fz) / denom  # posterior means in z
    uniq, n_with = np.unique(counts, return_counts=True)
    post_var = psi / (1.0 + uniq[:, None] * psi)  # (n_counts, dim): one row per distinct count
    var_sum = n_with @ post_var
    var_nsum = (n_with * uniq) @ post_var

    # Marginal log-likelihood in z (per dimension independent), plus the Jacobian of x -> z.
    zbar = fz / counts[:, None]
    within_ss = float(np.sum((stats.within_scatter() @ U) * U))
    tot_var = psi + 1.0 / counts[:, None]
    loglik = (
        -0.5 * stats.dim * np.sum((counts - 1.0) * _LOG2PI + np.log(counts))
        - 0.5 * within_ss
        - 0.5 * np.sum(_LOG2PI + np.log(tot_var) + (zbar - muz) ** 2 / tot_var)
        - 0.5 * stats.n_total * np.linalg.slogdet(within)[1]
    )

    ey = ez @ G.T  # (n_spk, dim) posterior means in x
    eyy_sum = (G * var_sum) @ G.T + ey.T @ ey
    n_eyy_sum = (G * var_nsum) @ G.T + ey.T @ (counts[:, None] * ey)
    f_ey = stats.sums.T @ ey
    mu_new = ey.mean(axis=0)
    between_new = eyy_sum / stats.n_classes - np.outer(mu_new, mu_new)
    within_new = (stats.second - f_ey - f_ey.T + n_eyy_sum) / stats.n_total
    return mu_new, 0.5 * (between_new + between_new.T), 0.5 * (within_new + within_new.T), float(loglik)


class PLDA:
    """Two-covariance PLDA with LDA / whitening / length-norm pre-processing.

    Parameters
    ----------
    lda_dim : output dimension of LDA (None: no LDA); must be < the number of training speakers.
    n_iter : EM iterations (0 keeps the moment-based initialisation).
    length_norm : project pre-processed vectors onto the sphere of radius sqrt(dim).
    whiten : whiten (after LDA) with the covariance of the training vectors.

    Fitted attributes: `mean_` (d_in,), `projection_` (d_in, dim) (LDA then whitening), `plda_mean_` (dim,),
    `between_` / `within_` (dim, dim) covariances in the transformed space, `loglik_` (n_iter,) EM
    log-likelihood before each iteration.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> spk = np.repeat(np.arange(20), 5)
    >>> X = rng.normal(size=(20, 8))[spk] + 0.5 * rng.normal(size=(100, 8))
    >>> plda = PLDA(lda_dim=6).fit(X, spk)
    >>> S = plda.score_matrix(X[0:15:5], X[1:20:5])  # utterance 1 of speakers 0-2 against utterance 2 of 0-3
    >>> S.shape, S.argmax(axis=1).tolist()  # each enrollment scores highest against its own speaker
    ((3, 4), [0, 1, 2])
    """

    def __init__(self, lda_dim: int | None = None, n_iter: int = 10, length_norm: bool = True,
                 whiten: bool = True):
        if lda_dim is not None and (not isinstance(lda_dim, (int, np.integer)) or lda_dim < 1):
            raise ScoringInputError(f"lda_dim must be a positive integer or None, got {lda_dim!r}")
        if not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
            raise ScoringInputError(f"n_iter must be a non-negative integer, got {n_iter!r}")
        self.lda_dim = None if lda_dim is None else int(lda_dim)
        self.n_iter = int(n_iter)
        self.length_norm = bool(length_norm)
        self.whiten = bool(whiten)
        self.mean_: np.ndarray | None = None

    # ------------------------------------------------------------------ training
    def fit(self, X, spk) -> "PLDA":
        """Train on X (n, d) embeddings with speaker labels spk (n,) (any hashable labels).

        Ill-conditioned X (near-constant directions, more dimensions than utterances) trains with a logged warning:
        null directions are dropped (whitening; then `dim` < d) and tiny within-speaker eigenvalues floored
        (`scoring.lda`, `_train`). Raises ScoringInputError naming the reason for data that cannot be fitted:
        fewer than 2 speakers, no speaker with 2 utterances, NaN / inf, all vectors (or each speaker's) identical.
        """
        X = as_matrix(X, "X")
        spk = np.asarray(spk)
        if spk.ndim != 1 or spk.shape[0] != X.shape[0]:
            raise ScoringInputError(f"spk: expected {X.shape[0]} labels (one per row of X), got shape {spk.shape}")
        names, labels = np.unique(spk, return_inverse=True)
        counts = np.bincount(labels)
        if len(names) < 2:
            raise ScoringInputError(f"PLDA needs at least 2 speakers, got {len(names)}")
        if counts.max() < 2:
            raise ScoringInputError("PLDA needs some speaker with at least 2 utterances; every speaker has 1")
        if self.lda_dim is not None and self.lda_dim >= len(names):
            raise ScoringInputError(f"lda_dim={self.lda_dim} must be < the number of speakers ({len(names)})")
        if self.lda_dim is not None and self.lda_dim > X.shape[1]:
            raise ScoringInputError(f"lda_dim={self.lda_dim} exceeds the embedding dimension {X.shape[1]}")

        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        try:
            stats = ClassStats.from_data(Xc, labels, len(names))
            proj = np.eye(X.shape[1])
            if self.lda_dim is not None:
                proj = lda_projection(stats, self.lda_dim)
            if self.whiten:
                proj = proj @ whitening_projection(proj.T @ stats.second @ proj, stats.n_total)
        except ValueError as err:
            raise ScoringInputError(f"PLDA.fit: {err}") from None
        self.projection_ = np.ascontiguousarray(proj)
        Y = Xc @ proj
        if self.length_norm:
            Y = length_normalize(Y)
        stats = ClassStats.from_data(Y, labels, len(names))
        self._train(stats)
        return self

    def _train(self, stats: ClassStats) -> None:
        """Initialise from class moments, then run `n_iter` EM steps on pre-processed statistics.

        An ill-conditioned within-speaker covariance (eigenvalues at most `scoring.lda.COV_FLOOR` times the
        largest: more dimensions than the data span, a near-constant direction) has those eigenvalues floored at
        that fraction, at the start and after every EM step (Kaldi's covariance floor), with a warning; on
        well-conditioned data nothing changes (EM keeps the within-speaker covariance above the data's).
        """
        what = "the within-speaker covariance of the transformed vectors"
        try:
            within, n_floored = floor_covariance(stats.within_scatter() / stats.n_total, what)
        except ValueError:
            raise ScoringInputError(f"PLDA.fit: {what} is zero: every speaker's training vectors are "
                                    "identical") from None
        means = stats.sums / stats.counts[:, None]
        mu = means.mean(axis=0)
        between = np.cov(means, rowvar=False, bias=True).reshape(stats.dim, stats.dim)
        between = between + 1e-6 * np.trace(within) / stats.dim * np.eye(stats.dim)
        loglik = []
        for _ in range(self.n_iter):
            mu, between, within, ll = em_step(stats, mu, between, within)
            loglik.append(ll)
            if n_floored:
                within, _ = floor_covariance(within, what)
        if n_floored:
            log.warning("PLDA: %s is singular or ill-conditioned (%d of %d eigenvalues <= %g of the largest, e.g. "
                        "fewer within-speaker degrees of freedom than dimensions): floored them at that fraction",
                        what, n_floored, stats.dim, COV_FLOOR)
        self.loglik_ = np.asarray(loglik, dtype=np.float64)
        self._set_model(mu, between, within)

    def _set_model(self, mu: np.ndarray, between: np.ndarray, within: np.ndarray) -> None:
        """Store the model and its diagonalising basis: U^T S_w U = I, U^T S_b U = diag(psi)."""
        self.plda_mean_, self.between_, self.within_ = mu, between, within
        psi, U = linalg.eigh(between, within)
        self._psi = np.maximum(psi, 0.0)
        self._basis = U
        self._q = 1.0 / (1.0 + self._psi) - (1.0 + self._psi) / (1.0 + 2.0 * self._psi)
        self._p = self._psi / (1.0 + 2.0 * self._psi)
        self._const = float(np.sum(np.log1p(self._psi) - 0.5 * np.log1p(2.0 * self._psi)))
        self._spread_map = None  # (projection_ @ basis)^2, built on first use by prepare_variance

    # ------------------------------------------------------------------ transform
    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("PLDA is not fitted: call fit() or PLDA.load() first")

    @property
    def dim(self) -> int:
        """Dimension of the transformed space the PLDA model lives in."""
        self._check_fitted()
        return int(self.projection_.shape[1])

    def transform(self, X, name: str = "X") -> np.ndarray:
        """Pre-process X (n, d_in) -> (n, dim): centre, LDA, whiten, length-normalise (as configured)."""
        self._check_fitted()
        X = as_matrix(X, name, self.mean_.shape[0])
        Y = (X - self.mean_) @ self.projection_
        return length_normalize(Y) if self.length_norm else Y

    def prepare(self, X, transformed: bool = False, dtype=np.float32) -> np.ndarray:
        """Scoring coordinates (n, dim) of X (n, d_in) (or of `transform` output (n, dim), `transformed=True`).

        The coordinates z = (x - plda_mean_) U in the basis diagonalising both covariances, cast to `dtype`;
        the scoring methods take them with `prepared=True` and run their GEMM in that dtype. Preparing each
        embedding once saves the (n, dim) x (dim, dim) projection per call (what `scoring.backend` does).
        """
        return self._coords(X, "X", transformed, False).astype(dtype, copy=False)

    def _coords(self, X, name: str, transformed: bool, prepared: bool) -> np.ndarray:
        """Raw (n, d_in), transformed (n, dim) or prepared (n, dim) vectors -> (n, dim) coordinates z."""
        if prepared:
            return as_matrix(X, name, self.dim, keep_float32=True)
        Y = as_matrix(X, name, self.dim) if transformed else self.transform(X, name)
        return (Y - self.plda_mean_) @ self._basis

    # ------------------------------------------------------------------ scoring
    @property
    def Q(self) -> np.ndarray:
        """(dim, dim) quadratic-term matrix of the pairwise LLR in the transformed space (around plda_mean_)."""
        self._check_fitted()
        return (self._basis * self._q) @ self._basis.T

    @property
    def P(self) -> np.ndarray:
        """(dim, dim) cross-term matrix of the pairwise LLR in the transformed space (around plda_mean_)."""
        self._check_fitted()
        return (self._basis * self._p) @ self._basis.T

    @property
    def const(self) -> float:
        """Constant term c of the pairwise LLR."""
        self._check_fitted()
        return self._const

    def _row_terms(self, Z: np.ndarray) -> np.ndarray:
        return 0.5 * (Z * Z) @ self._q

    def score(self, enroll, test, transformed: bool = False, prepared: bool = False, enroll_var=None,
              test_var=None) -> np.ndarray:
        """Paired LLRs: enroll (n, d), test (n, d) -> (n,). Inputs are raw embeddings, `transform` output
        (`transformed=True`) or `prepare` output (`prepared=True`). `enroll_var` / `test_var` (n, dim):
        per-utterance variances in the scoring basis (`prepare_variance`), or None."""
        E = self._coords(enroll, "enroll", transformed, prepared)
        T = self._coords(test, "test", transformed, prepared)
        if E.shape[0] != T.shape[0]:
            raise ScoringInputError(f"enroll has {E.shape[0]} rows but test has {T.shape[0]}; score() pairs rows")
        enroll_var, test_var = self._variances(enroll_var, E.shape, "enroll_var"), self._variances(test_var, T.shape)
        if enroll_var is not None or test_var is not None:
            mean, var = self._posterior(E, enroll_var, np.ones(len(E), dtype=np.int64))
            index = np.arange(len(E))
            return score_pairs(self._psi, mean, var, T, test_var, index, index, np.result_type(E.dtype, T.dtype))
        cross = np.einsum("ij,ij->i", E * self._p.astype(E.dtype), T)
        return cross + self._row_terms(E) + self._row_terms(T) + self._const

    def score_matrix(self, enroll, test, transformed: bool = False, prepared: bool = False, enroll_var=None,
                     test_var=None) -> np.ndarray:
        """All-pairs LLRs: enroll (m, d), test (k, d) -> (m, k), one GEMM in the inputs' precision (with
        variances (m, dim) / (k, dim), as in `score`: elementwise per pair)."""
        E = self._coords(enroll, "enroll", transformed, prepared)
        T = self._coords(test, "test", transformed, prepared)
        dtype = np.result_type(E.dtype, T.dtype)
        enroll_var, test_var = self._variances(enroll_var, E.shape, "enroll_var"), self._variances(test_var, T.shape)
        if enroll_var is not None or test_var is not None:
            mean, var = self._posterior(E, enroll_var, np.ones(len(E), dtype=np.int64))
            return self._all_pairs(mean, var, T, test_var, dtype)
        S = (E * self._p.astype(dtype)) @ T.T.astype(dtype, copy=False)
        S += self._row_terms(E)[:, None]
        S += self._row_terms(T)[None, :] + self._const
        return S

    def _count_terms(self, counts: np.ndarray):
        """Terms of llr_k (module docstring) per count k in counts (g,): cross, enroll_q, test_q (g, dim), const (g,)
        with llr_k = sum(cross ebar t) + 0.5 sum(enroll_q ebar^2) + 0.5 sum(test_q t^2) + const (per dimension)."""
        kpsi = np.asarray(counts, dtype=np.float64)[:, None] * self._psi
        shrink = kpsi / (1.0 + kpsi)  # a_k: E[y | k vectors of mean ebar] = a_k ebar
        pred_var = 1.0 + self._psi / (1.0 + kpsi)  # v_k: variance of t given the k vectors
        null_var = 1.0 + self._psi  # variance of t alone
        cross = shrink / pred_var
        const = 0.5 * np.sum(np.log(null_var) - np.log(pred_var), axis=1)
        return cross, -shrink * cross, 1.0 / null_var - 1.0 / pred_var, const

    def _set_coords(self, enroll_sets: Sequence, transformed: bool, prepared: bool):
        """enroll_sets[i] (k_i, d) -> (coordinates (sum k_i, dim) in the diagonal basis, counts (m,))."""
        d_in = self.dim if transformed or prepared else self.mean_.shape[0]
        arrays = [np.asarray(v) for v in enroll_sets]
        for i, v in enumerate(arrays):
            if v.ndim != 2 or v.shape[1] != d_in or not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
                raise ScoringInputError(f"enroll_sets[{i}]: expected a numeric 2-D array (k, {d_in}), got "
                                        f"{v.dtype} of shape {v.shape}")
            if v.shape[0] == 0:
                raise ScoringInputError(f"enroll_sets[{i}] is empty")
        counts = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        if not arrays:
            return np.empty((0, self.dim)), counts
        X = np.concatenate(arrays)
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            i = int(np.searchsorted(np.cumsum(counts), row, side="right"))
            raise ScoringInputError(f"enroll_sets[{i}]: row {row - int(counts[:i].sum())} contains NaN or inf")
        return self._coords(X, "enroll_sets", transformed, prepared), counts  # all vectors projected in one go

    def _set_means(self, enroll_sets: Sequence, transformed: bool, prepared: bool):
        """enroll_sets[i] (k_i, d) -> (means (m, dim) float64 in the diagonal basis, counts (m,), coordinate dtype)."""
        Z, counts = self._set_coords(enroll_sets, transformed, prepared)
        if not len(counts):
            return Z, counts, np.dtype(np.float64)
        means = np.add.reduceat(Z, np.cumsum(counts) - counts, axis=0, dtype=np.float64) / counts[:, None]
        return means, counts, Z.dtype

    def score_multi_matrix(self, enroll_sets: Sequence, test, transformed: bool = False,
                           prepared: bool = False, enroll_var=None, test_var=None) -> np.ndarray:
        """Multi-enrollment LLRs of all models against all tests: enroll_sets[i] (k_i, d), test (n, d) -> (m, n).

        Exact for the model (Kaldi's `Plda::LogLikelihoodRatio` with num_utts): a model enters only through its
        count k and mean ebar in the diagonal basis, so models are grouped by k, one GEMM per group (llr_k).
        With variances (`enroll_var[i]` (k_i, dim) per utterance, `test_var` (n, dim)): `posterior` then
        `score_posterior` over all pairs.
        """
        T = self._coords(test, "test", transformed, prepared)
        if enroll_var is not None or test_var is not None:
            Z, counts = self._set_coords(enroll_sets, transformed, prepared)
            S, B = self._set_variances(enroll_var, counts), self._variances(test_var, T.shape)
            if S is not None or B is not None:
                mean, var = self._posterior(Z, S, counts)
                return self._all_pairs(mean, var, T, B, np.result_type(Z.dtype, T.dtype))
        means, counts, dtype = self._set_means(enroll_sets, transformed, prepared)
        dtype = np.result_type(dtype, T.dtype)
        uniq, group = np.unique(counts, return_inverse=True)
        cross, enroll_q, test_q, const = self._count_terms(uniq)
        test_terms = 0.5 * (T * T) @ test_q.T  # (n, g)
        Tt = T.T.astype(dtype, copy=False)
        out = np.empty((len(counts), T.shape[0]), dtype=dtype)
        for g in range(len(uniq)):
            rows = np.flatnonzero(group == g) if len(uniq) > 1 else slice(None)
            M = means[rows]
            block = (M * cross[g]).astype(dtype) @ Tt
            block += (0.5 * (M * M) @ enroll_q[g] + const[g])[:, None]
            block += test_terms[:, g]
            if len(uniq) == 1:
                return block
            out[rows] = block
        return out

    def score_multi(self, enroll_sets: Sequence, test, transformed: bool = False,
                    prepared: bool = False, enroll_var=None, test_var=None) -> np.ndarray:
        """Multi-enrollment LLRs: enroll_sets[i] (k_i, d) against test row i; test (n, d) -> (n,).

        llr_i = log p(t_i | e_1..e_k same speaker) - log p(t_i), `score_multi_matrix` paired: rows grouped by
        count k_i, each group scored with elementwise products. Equals `score` when every k_i = 1. Variances
        (`enroll_var[i]` (k_i, dim), `test_var` (n, dim)) as in `score_multi_matrix`.
        """
        T = self._coords(test, "test", transformed, prepared)
        if len(enroll_sets) != T.shape[0]:
            raise ScoringInputError(f"got {len(enroll_sets)} enrollment sets for {T.shape[0]} test rows")
        if enroll_var is not None or test_var is not None:
            Z, counts = self._set_coords(enroll_sets, transformed, prepared)
            S, B = self._set_variances(enroll_var, counts), self._variances(test_var, T.shape)
            if S is not None or B is not None:
                mean, var = self._posterior(Z, S, counts)
                index = np.arange(len(T))
                return score_pairs(self._psi, mean, var, T, B, index, index, np.result_type(Z.dtype, T.dtype))
        means, counts, _ = self._set_means(enroll_sets, transformed, prepared)
        uniq, group = np.unique(counts, return_inverse=True)
        cross, enroll_q, test_q, const = self._count_terms(uniq)
        out = np.empty(len(counts))
        for g in range(len(uniq)):
            rows = np.flatnonzero(group == g)
            M, Tg = means[rows], T[rows].astype(np.float64)
            out[rows] = (np.einsum("ij,ij->i", M * cross[g], Tg) + 0.5 * (M * M) @ enroll_q[g]
                         + 0.5 * (Tg * Tg) @ test_q[g] + const[g])
        return out

    # ------------------------------------------------------------------ uncertainty
    def prepare_variance(self, X, spread=None, duration=None, duration_scale: float = DURATION_SCALE,
                         dtype=np.float32) -> np.ndarray:
        """Per-utterance extra variances (n, dim) in the scoring basis, the diagonal approximation of the
        utterances' uncertainty (`scoring.uncertainty` gives the maps and the approximation).

        X (n, d_in) raw embeddings (their length sets the length-normalisation scale); `spread` (n, d_in)
        per-dimension standard deviations of X (e.g. the Monte Carlo spread), carried through centring, LDA,
        whitening (covariance A^T Sigma A), length normalisation (scaled by dim / ||y||^2) and the basis, then
        reduced to its diagonal; `duration` (n,) seconds, giving `duration_scale / duration` in every dimension.
        Both given: the sum. Neither: zeros.
        """
        self._check_fitted()
        X = as_matrix(X, "X", self.mean_.shape[0])
        var = np.zeros((X.shape[0], self.dim))
        if spread is not None:
            spread = check_variance(spread, X.shape, "spread").astype(np.float64, copy=False)
            if self._spread_map is None:
                self._spread_map = np.square(self.projection_ @ self._basis)  # (d_in, dim)
            var += (spread * spread) @ self._spread_map
            if self.length_norm:
                Y = (X - self.mean_) @ self.projection_
                sq = np.einsum("ij,ij->i", Y, Y)
                var *= np.where(sq > 0, self.dim / np.where(sq > 0, sq, 1.0), 1.0)[:, None]
        if duration is not None:
            if not (np.isfinite(duration_scale) and duration_scale > 0):
                raise ScoringInputError(f"duration_scale must be a positive number of seconds, got {duration_scale}")
            var += duration_scale / check_duration(duration, X.shape[0])[:, None]
        return var.astype(dtype, copy=False)

    def _variances(self, S, shape: tuple[int, int], name: str = "test_var") -> np.ndarray | None:
        """Validated variances (n, dim) for coordinates of `shape`, or None when absent or all zero."""
        if S is None:
            return None
        S = check_variance(S, shape, name)
        return S if S.any() else None

    def _posterior(self, Z: np.ndarray, S: np.ndarray | None, counts: np.ndarray):
        if not len(counts):
            return np.empty((0, self.dim), Z.dtype), np.empty((0, self.dim), Z.dtype)
        mean, var = posterior(self._psi, Z, S, counts)
        return mean.astype(Z.dtype, copy=False), var.astype(Z.dtype, copy=False)

    def _set_variances(self, enroll_var, counts: np.ndarray) -> np.ndarray | None:
        """enroll_var: a list of (k_i, dim) variances, one per enrollment set -> (sum k_i, dim), or None when
        absent or all zero."""
        if enroll_var is None:
            return None
        if isinstance(enroll_var, np.ndarray) or len(enroll_var) != len(counts):
            raise ScoringInputError(f"enroll_var: expected a list of {len(counts)} arrays (k_i, {self.dim}), one "
                                    "per enrollment set")
        for i, (v, k) in enumerate(zip(enroll_var, counts.tolist())):
            check_variance(v, (k, self.dim), f"enroll_var[{i}]")
        if not len(counts):
            return None
        return self._variances(np.concatenate(enroll_var), (int(counts.sum()), self.dim), "enroll_var")

    def posterior(self, enroll_sets, enroll_var=None, transformed: bool = False, prepared: bool = False):
        """Speaker posterior of each model in the scoring basis: (mean (m, dim), var (m, dim)).

        enroll_sets: a list of m arrays (k_i, d) (one model each), or one array (m, d) of single-utterance
        models; inputs as in `score`. enroll_var: their variances (`prepare_variance`), a list of (k_i, dim) or
        an array (m, dim) to match, or None (zero). Per dimension: var = psi / (1 + psi sum_j w_j),
        mean = var sum_j w_j z_j, w_j = 1 / (1 + s_j) (`scoring.uncertainty`); the arrays have the
        coordinates' dtype. `score_posterior` scores them.
        """
        self._check_fitted()
        if isinstance(enroll_sets, np.ndarray) and enroll_sets.ndim == 2:
            Z = self._coords(enroll_sets, "enroll", transformed, prepared)
            counts = np.ones(len(Z), dtype=np.int64)
            S = self._variances(enroll_var, Z.shape, "enroll_var")
        else:
            Z, counts = self._set_coords(enroll_sets, transformed, prepared)
            S = self._set_variances(enroll_var, counts)
        return self._posterior(Z, S, counts)

    def score_posterior(self, mean, var, test, test_var=None, pairs=None, transformed: bool = False,
                        prepared: bool = False) -> np.ndarray:
        """LLRs of speaker posteriors (`posterior`: mean, var (m, dim)) against test vectors (k, d) with variances
        `test_var` (k, dim) or None: row i against row i (m = k), or the trials `pairs` = (model index (n,),
        test index (n,)). Returns (n,) float64; elementwise per trial, in chunks (`scoring.uncertainty`)."""
        self._check_fitted()
        T = self._coords(test, "test", transformed, prepared)
        mean = as_matrix(mean, "mean", self.dim, keep_float32=True)
        var = check_variance(var, mean.shape, "var")
        test_var = self._variances(test_var, T.shape)
        if pairs is None:
            if len(mean) != len(T):
                raise ScoringInputError(f"{len(mean)} posteriors but {len(T)} test rows; without pairs rows are paired")
            e_idx = t_idx = np.arange(len(T))
        else:
            e_idx, t_idx = (np.asarray(p) for p in pairs)
            if e_idx.shape != t_idx.shape or e_idx.ndim != 1 or not (np.issubdtype(e_idx.dtype, np.integer)
                                                                     and np.issubdtype(t_idx.dtype, np.integer)):
                raise ScoringInputError("pairs: expected two 1-D integer arrays of the same length")
            for idx, n, name in ((e_idx, len(mean), "model"), (t_idx, len(T), "test")):
                if idx.size and (idx.min() < 0 or idx.max() >= n):
                    raise ScoringInputError(f"pairs: {name} index out of range [0, {n})")
        return score_pairs(self._psi, mean, var, T, test_var, e_idx, t_idx, np.result_type(mean.dtype, T.dtype))

    def _all_pairs(self, mean, var, T, test_var, dtype) -> np.ndarray:
        """(m, k) LLRs of m posteriors against k test rows, elementwise per pair."""
        m, k = len(mean), len(T)
        e_idx, t_idx = np.repeat(np.arange(m), k), np.tile(np.arange(k), m)
        return score_pairs(self._psi, mean, var, T, test_var, e_idx, t_idx, dtype).reshape(m, k).astype(dtype)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write all arrays and hyper-parameters to `path` (.npz, no pickle), atomically."""
        self._check_fitted()
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh, format=np.array(_FORMAT), lda_dim=np.array(-1 if self.lda_dim is None else self.lda_dim),
                    n_iter=np.array(self.n_iter), length_norm=np.array(self.length_norm),
                    whiten=np.array(self.whiten), **arrays,
                )

    @classmethod
    def load(cls, path) -> "PLDA":
        """Read a model written by `save`; raises ScoringInputError naming the file when it is not one."""
        path = os.fspath(path)
        content = read_npz(path, "a PLDA model")
        missing = [key for key in ("format", "lda_dim", "n_iter", "length_norm", "whiten", *_ARRAYS)
                   if key not in content]
        if missing:
            raise ScoringInputError(f"{path}: not a PLDA model file, missing arrays {missing}")
        if str(content["format"]) != _FORMAT:
            raise ScoringInputError(f"{path}: unsupported PLDA format {str(content['format'])!r}")
        lda_dim = int(content["lda_dim"])
        model = cls(lda_dim=None if lda_dim < 0 else lda_dim, n_iter=int(content["n_iter"]),
                    length_norm=bool(content["length_norm"]), whiten=bool(content["whiten"]))
        d_in, dim = content["projection_"].shape
        shapes = {"mean_": (d_in,), "plda_mean_": (dim,), "between_": (dim, dim), "within_": (dim, dim)}
        for key, shape in shapes.items():
            if content[key].shape != shape:
                raise ScoringInputError(f"{path}: array {key} has shape {content[key].shape}, expected {shape}")
        model.mean_, model.projection_, model.loglik_ = content["mean_"], content["projection_"], content["loglik_"]
        model._set_model(content["plda_mean_"], content["between_"], content["within_"])
        return model
