"""Embedding pre-processing for the PLDA back-end: class statistics, LDA, whitening, length normalisation.

All functions take numpy arrays and return new arrays; nothing here keeps state. The PLDA model
(`scoring.plda.PLDA`) chains them as: centre -> LDA -> whiten -> length-normalise.

References
----------
- LDA: Fukunaga, "Introduction to Statistical Pattern Recognition", 2nd ed., 1990, ch. 10 (maximise
  between-class over within-class scatter via the generalised symmetric eigenproblem).
- Length normalisation: Garcia-Romero & Espy-Wilson, "Analysis of i-vector length normalization in speaker
  recognition systems", Interspeech 2011.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse

# Eigenvalues below this fraction of the largest one count as zero when checking a covariance's rank.
RANK_TOL = 1e-10


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


def check_full_rank(cov: np.ndarray, what: str) -> None:
    """Raise ValueError when the symmetric (dim, dim) matrix `cov` is numerically singular."""
    evals = linalg.eigvalsh(cov)
    top = max(float(evals[-1]), 0.0)
    rank = int(np.sum(evals > RANK_TOL * top)) if top > 0 else 0
    if rank < cov.shape[0]:
        raise ValueError(
            f"{what} is singular (rank {rank} < dim {cov.shape[0]}): the training vectors do not span their "
            f"space; use more utterances per speaker or reduce the dimension with lda_dim <= {max(rank, 1)}"
        )


def lda_projection(stats: ClassStats, lda_dim: int) -> np.ndarray:
    """LDA projection (dim, lda_dim) from class statistics of centred vectors.

    Solves S_b v = lambda S_w v (scipy.linalg.eigh, generalised symmetric problem) with S_b, S_w the
    between- and within-class covariances, and keeps the `lda_dim` eigenvectors of largest lambda, most
    discriminant first. The columns are S_w-orthonormal (V^T S_w V = I), so projected vectors have an
    identity within-class covariance. Requires lda_dim < n_classes (S_b has rank n_classes - 1).
    """
    if not 1 <= lda_dim < stats.n_classes:
        raise ValueError(f"lda_dim={lda_dim} must be in [1, n_speakers - 1 = {stats.n_classes - 1}]")
    if lda_dim > stats.dim:
        raise ValueError(f"lda_dim={lda_dim} exceeds the embedding dimension {stats.dim}")
    within = stats.within_scatter() / stats.n_total
    check_full_rank(within, "the within-speaker covariance")
    between = stats.between_scatter() / stats.n_total
    _, vecs = linalg.eigh(between, within, subset_by_index=[stats.dim - lda_dim, stats.dim - 1])
    return np.ascontiguousarray(vecs[:, ::-1])


def whitening_projection(second: np.ndarray, n: int) -> np.ndarray:
    """PCA whitening matrix (dim, dim) for centred vectors with sum of outer products `second` over `n` rows.

    With C = second / n = U diag(s) U^T, returns U diag(s^-1/2): rows x (1, dim) map to x @ W with identity
    covariance. Raises ValueError when C is singular.
    """
    cov = _sym(np.asarray(second, dtype=np.float64) / n)
    evals, evecs = linalg.eigh(cov)
    top = max(float(evals[-1]), 0.0)
    if top <= 0 or evals[0] <= RANK_TOL * top:
        check_full_rank(cov, "the total covariance of the (projected) training vectors")
    return evecs / np.sqrt(evals)


def length_normalize(X: np.ndarray) -> np.ndarray:
    """Scale each row of X (n, dim) to Euclidean norm sqrt(dim).

    Garcia-Romero & Espy-Wilson (2011) project onto the unit sphere; the radius sqrt(dim), as in Kaldi's
    `ivector-normalize-length`, keeps whitened vectors (whose expected squared norm is dim) at their scale,
    so the PLDA variances stay of order one. All-zero rows are left at zero.
    """
    X = np.asarray(X, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    return X * (np.sqrt(X.shape[1]) / np.where(norms > 0, norms, 1.0))
