"""Embedding pre-processing for the PLDA back-end: class statistics, LDA, whitening, length normalisation.

All functions take numpy arrays and return new arrays; nothing here keeps state. The PLDA model
(`scoring.plda.PLDA`) chains them as: centre -> LDA -> whiten -> length-normalise.

References
----------
- LDA: Fukunaga, "Introduction to Statistical Pattern Recognition", 2nd ed., 1990, ch. 10 (maximise
  between-class over within-class scatter via the generalised symmetric eigenproblem).
- Length normalisation: Garcia-Romero & Espy-Wilson, "Analysis of i-vector length normalization in speaker
  recognition systems", Interspeech 2011.

Ill-conditioned training data (a near-constant direction, as an over-trained network gives; more dimensions
than utterances) is handled as Kaldi's ``ivector-compute-lda`` does (``--covariance-floor``, relative to the
largest eigenvalue): eigenvalues of a covariance below ``COV_FLOOR`` times its largest are floored to that
value (within-speaker covariances), or their directions dropped (whitening: directions with no variance carry
no information), each time with a logged warning. On well-conditioned data (every eigenvalue above the floor)
the computations are exactly those without this handling. Only data that cannot be fitted at all (all
vectors identical, or every speaker's vectors identical) raise.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import linalg, sparse

log = logging.getLogger(__name__)

# Covariance eigenvalues below this fraction of the largest are floored (or their directions dropped):
# Kaldi's `ivector-compute-lda --covariance-floor` default.
COV_FLOOR = 1e-6


class ClassStats:
    """Sufficient statistics of labelled vectors, the only data LDA and PLDA training need.

    Attributes
    ----------
    counts : (n_classes,) int64, vectors per class.
    sums : (n_classes, dim) float64, per-class sums of the vectors.
    second : (dim, dim) float64, sum over all vectors of x x^T.
    n_total : int, number of vectors.

    Build with `ClassStats.from_data(X, labels)`; `labels` are integer class indices in [0, n_classes).
    """

    def __init__(self, counts: np.ndarray, sums: np.ndarray, second: np.ndarray):
        self.counts = counts
        self.sums = sums
        self.second = second
        self.n_total = int(counts.sum())

    @classmethod
    def from_data(cls, X: np.ndarray, labels: np.ndarray, n_classes: int) -> "ClassStats":
        """X (n, dim) float, labels (n,) int in [0, n_classes). Cost: one (dim, n) x (n, dim) GEMM."""
        X = np.asarray(X, dtype=np.float64)
        counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
        if np.any(counts == 0):
            raise ValueError("every class index in [0, n_classes) must occur at least once")
        indicator = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                                      shape=(n_classes, len(labels)))
        return cls(counts, np.asarray(indicator @ X), X.T @ X)

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    def within_scatter(self) -> np.ndarray:
        """sum_k sum_{j in k} (x_j - m_k)(x_j - m_k)^T, shape (dim, dim)."""
        means_outer = (self.sums / self.counts[:, None]).T @ self.sums
        return _sym(self.second - means_outer)

    def between_scatter(self) -> np.ndarray:
        """sum_k n_k (m_k - m)(m_k - m)^T with m the global mean, shape (dim, dim)."""
        mean = self.sums.sum(axis=0) / self.n_total
        means_outer = (self.sums / self.counts[:, None]).T @ self.sums
        return _sym(means_outer - self.n_total * np.outer(mean, mean))


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def floor_covariance(cov: np.ndarray, what: str, floor: float = COV_FLOOR) -> tuple[np.ndarray, int]:
    """Floor the eigenvalues of the symmetric (dim, dim) `cov` at `floor` times the largest.

    Returns (covariance, number of eigenvalues floored); the covariance is `cov` itself when none is below
    the floor (well-conditioned input passes through unchanged). Raises ValueError naming `what` when
    `cov` is zero (no scale to floor against). The caller logs the flooring.
    """
    evals = linalg.eigvalsh(cov)
    top = float(evals[-1])
    if not top > 0:
        raise ValueError(f"{what} is zero")
    if evals[0] > floor * top:
        return cov, 0
    evals, evecs = linalg.eigh(cov)
    low = evals <= floor * top
    return _sym((evecs * np.maximum(evals, floor * top)) @ evecs.T), int(low.sum())


def _range_basis(cov: np.ndarray, floor: float = COV_FLOOR) -> np.ndarray:
    """Whitening basis (dim, r) of the symmetric PSD `cov`, without the directions whose eigenvalue is at most
    `floor` times the largest (their count is dim - r). Raises ValueError when `cov` is zero."""
    evals, evecs = linalg.eigh(cov)
    top = float(evals[-1])
    if not top > 0:
        raise ValueError("all training vectors are identical (zero covariance): there is nothing to fit")
    keep = evals > floor * top
    if keep.all():
        return evecs / np.sqrt(evals)
    return evecs[:, keep] / np.sqrt(evals[keep])


def lda_projection(stats: ClassStats, lda_dim: int) -> np.ndarray:
    """LDA projection (dim, lda_dim) from class statistics of centred vectors.

    Solves S_b v = lambda S_w v (scipy.linalg.eigh, generalised symmetric problem) with S_b, S_w the
    between- and within-class covariances, and keeps the `lda_dim` eigenvectors of largest lambda, most
    discriminant first. The columns are S_w-orthonormal (V^T S_w V = I), so projected vectors have an
    identity within-class covariance. Requires lda_dim < n_classes (S_b has rank n_classes - 1).

    Ill-conditioned S_w (an eigenvalue at most `COV_FLOOR` times the largest): the problem is solved in the
    span of the total covariance S_t = S_b + S_w without its null directions (eigenvalue <= COV_FLOOR times
    the largest; they carry no variance), with the eigenvalues of S_w floored there at COV_FLOOR times the
    largest (Kaldi's `ivector-compute-lda`); the columns are then orthonormal for the floored S_w. When that
    span has fewer than `lda_dim` dimensions, all of them are kept. A warning says what was done.
    """
    if not 1 <= lda_dim < stats.n_classes:
        raise ValueError(f"lda_dim={lda_dim} must be in [1, n_speakers - 1 = {stats.n_classes - 1}]")
    if lda_dim > stats.dim:
        raise ValueError(f"lda_dim={lda_dim} exceeds the embedding dimension {stats.dim}")
    within = stats.within_scatter() / stats.n_total
    between = stats.between_scatter() / stats.n_total
    evals = linalg.eigvalsh(within)
    if evals[-1] > 0 and evals[0] > COV_FLOOR * evals[-1]:
        _, vecs = linalg.eigh(between, within, subset_by_index=[stats.dim - lda_dim, stats.dim - 1])
        return np.ascontiguousarray(vecs[:, ::-1])
    basis = _range_basis(within + between)  # (dim, r): S_t = I in these coordinates
    rank = basis.shape[1]
    try:
        within_r, n_floored = floor_covariance(_sym(basis.T @ within @ basis), "the within-speaker covariance")
    except ValueError:
        raise ValueError("the within-speaker covariance is zero: every speaker's training vectors are "
                         "identical") from None
    out_dim = min(lda_dim, rank)
    done = []
    if rank < stats.dim:
        done.append(f"dropped {stats.dim - rank} direction(s) of total variance <= {COV_FLOOR:g} of the largest")
    if n_floored:
        done.append(f"floored {n_floored} within-speaker eigenvalue(s) at {COV_FLOOR:g} of the largest")
    if out_dim < lda_dim:
        done.append(f"output dimension {out_dim} < lda_dim={lda_dim} (the rank of the data)")
    log.warning("LDA: the within-speaker covariance is ill-conditioned (eigenvalues %.3g .. %.3g): %s",
                max(float(evals[0]), 0.0), float(evals[-1]), "; ".join(done) or "solved in the span of the data")
    _, vecs = linalg.eigh(_sym(basis.T @ between @ basis), within_r, subset_by_index=[rank - out_dim, rank - 1])
    return np.ascontiguousarray(basis @ vecs[:, ::-1])


def whitening_projection(second: np.ndarray, n: int) -> np.ndarray:
    """PCA whitening matrix (dim, r) for centred vectors with sum of outer products `second` over `n` rows.

    With C = second / n = U diag(s) U^T, returns U diag(s^-1/2): rows x (1, dim) map to x @ W with identity
    covariance (r = dim). Directions of eigenvalue at most `COV_FLOOR` times the largest carry no variance and
    are dropped (r < dim), with a warning. Raises ValueError when C is zero (all vectors identical).
    """
    cov = _sym(np.asarray(second, dtype=np.float64) / n)
    proj = _range_basis(cov)
    if proj.shape[1] < cov.shape[0]:
        log.warning("whitening: dropped %d of %d direction(s) whose variance is <= %g of the largest (the "
                    "training vectors do not span their space)", cov.shape[0] - proj.shape[1], cov.shape[0],
                    COV_FLOOR)
    return proj


def length_normalize(X: np.ndarray) -> np.ndarray:
    """Scale each row of X (n, dim) to Euclidean norm sqrt(dim).

    Garcia-Romero & Espy-Wilson (2011) project onto the unit sphere; the radius sqrt(dim), as in Kaldi's
    `ivector-normalize-length`, keeps whitened vectors (whose expected squared norm is dim) at their scale,
    so the PLDA variances stay of order one. All-zero rows are left at zero.
    """
    X = np.asarray(X, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    return X * (np.sqrt(X.shape[1]) / np.where(norms > 0, norms, 1.0))
