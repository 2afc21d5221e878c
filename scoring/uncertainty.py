"""Uncertainty-aware two-covariance PLDA: every utterance brings its own extra covariance (numpy only).

Model, in the scoring basis of `scoring.plda.PLDA` (z = (x - mu) U, within-speaker covariance I,
between-speaker covariance diag(psi)): utterance j of speaker s is

    z_j = y_s + e_j + u_j,    y_s ~ N(0, diag(psi)),    e_j ~ N(0, I),    u_j ~ N(0, diag(s_j)),

with s_j (dim,) the utterance's own extra variance (how uncertain its embedding is), so each utterance's
within-speaker covariance is I + diag(s_j). Everything stays diagonal, hence closed form per dimension
(Kenny et al., "PLDA for speaker verification with utterances of arbitrary duration", ICASSP 2013, propagate
the uncertainty the same way, with full covariances). Enrollment utterances z_1..z_k with variances
s_1..s_k give the speaker posterior, with w_j = 1 / (1 + s_j):

    y | z_1..z_k ~ N(m, diag(v)),    v = psi / (1 + psi sum_j w_j),    m = v sum_j w_j z_j,

and a test vector t with variance b has the log-likelihood ratio (posterior predictive over prior predictive)

    llr = sum_d [ -0.5 log(v + 1 + b) - 0.5 (t - m)^2 / (v + 1 + b)
                  + 0.5 log(psi + 1 + b) + 0.5 t^2 / (psi + 1 + b) ].

With every s_j = b = 0 this is the LLR of `scoring.plda` (k = 1: the pairwise one; k > 1: the
multi-enrollment one). The uncertainty adds each side's variance to the within-speaker covariance of that
side. The (v + 1 + b) term mixes both sides, so trials are not a GEMM: each costs O(dim) elementwise work,
done in chunks of trials over gathered rows (`score_pairs`).

Where the variances s_j come from (`PLDA.prepare_variance`):

- a per-dimension standard deviation `spread` (n, d_in) of the raw embedding (Monte Carlo sampling of a
  Bayesian network): its covariance diag(spread^2) follows the pre-processing. Centring leaves it alone; the
  linear maps (LDA + whitening `A = projection_`, then the basis U) transform it as M^T Sigma M with
  M = A U. Length normalisation y -> sqrt(dim) y / ||y|| is approximated by the scaling y -> (sqrt(dim)/||y||) y
  at the utterance's own y, so the covariance scales by dim / ||y||^2 (the true Jacobian,
  sqrt(dim)/||y|| (I - y y^T/||y||^2), also removes the radial component of the noise; keeping it overstates
  the variance by that component, about 1/dim of it for isotropic noise). In the scoring basis only the
  DIAGONAL of the resulting covariance is kept (the approximation that keeps the LLR closed form):
  s_j = dim / ||y_j||^2 * (spread_j^2 @ M^2) (elementwise square of M).
- a duration d_j (seconds): s_j = duration_scale / d_j in every dimension, i.e. an extra covariance
  proportional to the within-speaker covariance (exactly diagonal in the scoring basis); an utterance of
  `duration_scale` seconds doubles its within-speaker variance.
"""

from __future__ import annotations

import numpy as np

from scoring.io import ScoringInputError

# Seconds of speech whose extra variance equals the within-speaker variance (duration-based uncertainty).
DURATION_SCALE = 2.0
# Trials per chunk of the elementwise scoring: a (chunk, dim) float32 block stays in cache.
CHUNK_TRIALS = 1024


def check_variance(S, shape: tuple[int, int], name: str) -> np.ndarray:
    """Validate variances S against `shape` (n, dim): finite, >= 0; float32 kept, else float64."""
    try:
        S = np.asarray(S)
        S = S if S.dtype == np.float32 else S.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ScoringInputError(f"{name}: not a numeric array ({err})") from None
    if S.shape != tuple(shape):
        raise ScoringInputError(f"{name}: expected variances of shape {tuple(shape)}, got {S.shape}")
    for bad, what in ((~np.isfinite(S).all(axis=1), "contains NaN or inf"), ((S < 0).any(axis=1), "is negative")):
        if bad.any():
            raise ScoringInputError(f"{name}: row {int(np.argmax(bad))} {what}")
    return S


def check_duration(duration, n: int, name: str = "duration") -> np.ndarray:
    """Validate durations (n,) in seconds: finite and > 0; returns float64."""
    try:
        duration = np.asarray(duration, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ScoringInputError(f"{name}: not numbers ({err})") from None
    if duration.shape != (n,):
        raise ScoringInputError(f"{name}: expected {n} durations, got shape {duration.shape}")
    bad = ~(np.isfinite(duration) & (duration > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ScoringInputError(f"{name}: row {i} is {duration[i]}; expected a positive number of seconds")
    return duration


def posterior(psi: np.ndarray, Z: np.ndarray, S: np.ndarray | None, counts: np.ndarray):
    """Speaker posteriors of m models in the scoring basis.

    psi (dim,); Z (sum k_i, dim) the models' utterances, model i owning the next counts[i] rows; S like Z (their
    variances) or None (zero). Returns (mean (m, dim), var (m, dim)) float64 (module docstring).
    """
    starts = np.cumsum(counts) - counts
    Z = Z.astype(np.float64, copy=False)
    if S is None:
        precision = counts.astype(np.float64)[:, None]
        weighted = np.add.reduceat(Z, starts, axis=0)
    else:
        w = 1.0 / (1.0 + S.astype(np.float64, copy=False))
        precision = np.add.reduceat(w, starts, axis=0)
        weighted = np.add.reduceat(w * Z, starts, axis=0)
    var = psi / (1.0 + psi * precision)
    return var * weighted, var


def score_pairs(psi: np.ndarray, mean: np.ndarray, var: np.ndarray, T: np.ndarray, B: np.ndarray | None,
                e_idx: np.ndarray, t_idx: np.ndarray, dtype) -> np.ndarray:
    """LLRs (n,) float64 of the trials (model e_idx[i], test t_idx[i]).

    mean, var (m, dim): model posteriors (`posterior`); T (k, dim) test coordinates, B (k, dim) their variances or
    None (zero). The per-trial work runs in `dtype` (float32 for prepared coordinates: sums of dim terms in
    float32, about 1e-7 of the score scale off float64); the test-only terms are computed once per test row.
    """
    dim = T.shape[1]
    if B is not None and not B.any():
        B = None
    null = 1.0 + psi + (0.0 if B is None else B)
    T64 = T.astype(np.float64, copy=False)
    test_terms = 0.5 * np.sum(np.log(null) + T64 * T64 / null, axis=1)
    model = np.concatenate([mean, var + 1.0], axis=1).astype(dtype)  # (m, 2 dim): [m | v + 1]
    test = (T if B is None else np.concatenate([T, B], axis=1)).astype(dtype, copy=False)  # [t | b]
    out = np.empty(len(e_idx), dtype=np.float64)
    for a in range(0, len(e_idx), CHUNK_TRIALS):
        e, t = e_idx[a:a + CHUNK_TRIALS], t_idx[a:a + CHUNK_TRIALS]
        G, H = model.take(e, axis=0), test.take(t, axis=0)
        pred = G[:, dim:] if B is None else np.add(G[:, dim:], H[:, dim:])  # v + 1 + b
        diff = np.subtract(H[:, :dim], G[:, :dim])
        diff *= diff
        diff /= pred
        np.log(pred, out=pred)
        pred += diff
        out[a:a + CHUNK_TRIALS] = test_terms[t] - 0.5 * pred.sum(axis=1)
    return out
