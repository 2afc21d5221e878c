"""Turn trials + embeddings into scores for any scorer: the one place that does id lookup, dedup and chunking.

Scorer protocol (met by `scoring.cosine.CosineScorer` and `scoring.plda.PLDA`):

- required: `score_matrix(E (m, d), T (k, d)) -> (m, k)` and paired `score(E (n, d), T (n, d)) -> (n,)`;
- optional per-embedding pre-processing, applied once to each unique id: `prepare(X (n, d)) -> (n, d')` (the
  representation the scorer scores fastest; the scoring methods then get `prepared=True`), else
  `transform(X (n, d)) -> (n, d')` (scoring methods then get `transformed=True`). PLDA's `prepare` gives
  float32 coordinates in its diagonal basis, so each score-matrix block is one float32 GEMM (see
  `scoring.plda` for the precision);
- for `multi="plda"`: paired `score_multi(enroll_sets: list[(k_i, d)], T (n, d)) -> (n,)`, and optionally
  `score_multi_matrix(enroll_sets, T (k, d)) -> (n_models, k)` (used for the dense strategy below).

Uncertainty (`uncertainty="spread"|"duration"`, PLDA only: `prepare_variance`, `posterior`, `score_posterior`):
each utterance's variance (from `Embeddings.spread` or `Embeddings.duration`) is mapped into the scoring basis,
each model's speaker posterior computed once, and the trials scored pairwise from those (`scoring.uncertainty`).

Strategy: trial ids are reduced to unique enroll models and unique test ids. When the score matrix between
them is moderate (at most `max_pairs` entries, and at most `DENSE_FACTOR` times the number of trials), it is
computed in row blocks of at most `block_pairs` entries, one scorer call each, and the trial scores are
gathered from it; otherwise (few trials over many ids) the trials are scored pairwise in chunks.
"""

from __future__ import annotations

import numpy as np

from scoring.io import Embeddings, ScoringInputError, Trials
from scoring.uncertainty import DURATION_SCALE

MULTI = ("mean", "plda")
UNCERTAINTY = ("none", "spread", "duration")
# A paired score costs about as much as this many entries of a GEMM-computed score matrix (measured with
# 512-dim float32 embeddings: paired scoring gathers two rows per trial, a GEMM streams them).
DENSE_FACTOR = 50
MAX_PAIRS = 50_000_000
BLOCK_PAIRS = 1 << 24
CHUNK_TRIALS = 1 << 16


def factorize(ids) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) str -> (unique ids (u,) in order of first occurrence, codes (n,) int64 with ids = uniq[codes])."""
    values = np.asarray(ids, dtype=str).tolist()
    uniques = list(dict.fromkeys(values))  # hashing, O(n); np.unique would sort the strings
    position = {value: i for i, value in enumerate(uniques)}
    codes = np.array(list(map(position.__getitem__, values)), dtype=np.int64)
    return np.asarray(uniques, dtype=str), codes


def _check_scorer(scorer, multi: str) -> None:
    if multi not in MULTI:
        raise ScoringInputError(f"multi={multi!r}; expected one of {MULTI}")
    needed = ["score_matrix", "score"] + (["score_multi"] if multi == "plda" else [])
    missing = [name for name in needed if not callable(getattr(scorer, name, None))]
    if missing:
        raise TypeError(f"{type(scorer).__name__} lacks {missing}, required by the scorer protocol "
                        f"(multi={multi!r})")


def _prepare(scorer, X: np.ndarray) -> np.ndarray:
    """Per-embedding pre-processing of X (n, d) by the scorer's `prepare`, else `transform`, else none."""
    if callable(getattr(scorer, "prepare", None)):
        return scorer.prepare(X)
    return scorer.transform(X) if callable(getattr(scorer, "transform", None)) else X


def _kwargs(scorer) -> dict:
    """Keyword telling the scoring methods that their inputs come from `_prepare`."""
    if callable(getattr(scorer, "prepare", None)):
        return {"prepared": True}
    return {"transformed": True} if callable(getattr(scorer, "transform", None)) else {}


def _as_embeddings(X, name: str) -> Embeddings:
    if isinstance(X, Embeddings):
        return X
    X = np.asarray(X)
    return Embeddings(np.arange(len(X)).astype(str), X, source=name)


def _model_sets(models: np.ndarray, enroll: Embeddings, enroll_map) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `enroll` for each model: (utterance rows (sum k_i,) int64, offsets (n_models + 1,))."""
    rows, offsets = [], [0]
    for model in models.tolist():
        utts = enroll_map.get(model)
        if utts is None or len(utts) == 0:
            raise ScoringInputError(f"enroll_map: no enrollment utterances for model {model!r}")
        try:
            rows.append(enroll.index(utts))
        except ScoringInputError as err:
            raise ScoringInputError(f"model {model!r}: {err}") from None
        offsets.append(offsets[-1] + len(utts))
    return np.concatenate(rows), np.asarray(offsets)


class _Enrollment:
    """Prepared enrollment side, one entry per model: `models` is an array (m, d') of one vector per model, or,
    for multi="plda", a list of m prepared utterance sets (k_i, d'). `matrix` / `paired` are the scorer
    methods that score them (`matrix` is None when the scorer has no matrix form for sets)."""

    def __init__(self, scorer, models: np.ndarray, enroll: Embeddings, enroll_map, multi: str):
        self.matrix, self.paired = scorer.score_matrix, scorer.score
        if enroll_map is None:
            self.models = _prepare(scorer, enroll.get(models))
            return
        rows, offsets = _model_sets(models, enroll, enroll_map)
        if multi == "mean":
            # Average the raw embeddings of each model, then pre-process the average like one embedding.
            means = np.add.reduceat(enroll.vectors[rows].astype(np.float64), offsets[:-1], axis=0)
            self.models = _prepare(scorer, means / np.diff(offsets)[:, None])
            return
        utts, inverse = np.unique(rows, return_inverse=True)  # each utterance prepared once
        prepared = _prepare(scorer, enroll.vectors[utts])
        self.models = [prepared[inverse[a:b]] for a, b in zip(offsets[:-1], offsets[1:])]
        matrix = getattr(scorer, "score_multi_matrix", None)
        self.matrix = matrix if callable(matrix) else None
        self.paired = scorer.score_multi

    def __len__(self) -> int:
        return len(self.models)

    def take(self, codes: np.ndarray):
        """The models (array rows or list of sets) at positions codes (n,)."""
        if isinstance(self.models, list):
            return [self.models[i] for i in codes.tolist()]
        return self.models[codes]


def _block_rows(n_cols: int, block_pairs: int) -> int:
    """Rows per block so that a block of the score matrix has at most `block_pairs` entries (at least 1 row)."""
    return max(1, block_pairs // max(1, n_cols))


def _matrix_blocks(matrix, models, T: np.ndarray, kw: dict, block_pairs: int):
    """Yield (first row, rows (r, k) of the score matrix) of `models` (m entries) against T (k, d'), block by
    block; `matrix` is the scorer's matrix method for them."""
    rows = _block_rows(T.shape[0], block_pairs)
    for start in range(0, len(models), rows):
        yield start, np.asarray(matrix(models[start:start + rows], T, **kw))


def _full_matrix(matrix, models, T: np.ndarray, kw: dict, block_pairs: int) -> np.ndarray:
    """The whole score matrix (m, k) float64 of `models` against T (k, d'), computed in row blocks."""
    out = np.empty((len(models), T.shape[0]), dtype=np.float64)
    for start, block in _matrix_blocks(matrix, models, T, kw, block_pairs):
        out[start:start + block.shape[0]] = block
    return out


def _gathered(enr: _Enrollment, T, e_code, t_code, kw, block_pairs) -> np.ndarray:
    """Scores (n,) float64 of the pairs (model e_code, T[t_code]) gathered from row blocks of the score matrix."""
    rows = _block_rows(T.shape[0], block_pairs)
    n_blocks = -(-len(enr) // rows)
    if n_blocks == 1:
        return np.asarray(enr.matrix(enr.models, T, **kw))[e_code, t_code].astype(np.float64)
    block_of = e_code // rows
    # Stable sort of small integers is a radix sort in numpy: O(n) grouping of the trials by block.
    order = np.argsort(block_of.astype(np.int16 if n_blocks < 2**15 else np.int64), kind="stable")
    bounds = np.searchsorted(block_of[order], np.arange(n_blocks + 1))
    out = np.empty(e_code.shape[0], dtype=np.float64)
    for b, (start, block) in enumerate(_matrix_blocks(enr.matrix, enr.models, T, kw, block_pairs)):
        sel = order[bounds[b]:bounds[b + 1]]
        out[sel] = block[e_code[sel] - start, t_code[sel]]
    return out


def _paired(enr: _Enrollment, T, e_code, t_code, kw, chunk) -> np.ndarray:
    """Scores (n,) of the pairs (model e_code, T[t_code]) computed pairwise, `chunk` trials at a time."""
    out = np.empty(e_code.shape[0], dtype=np.float64)
    for a in range(0, e_code.shape[0], chunk):
        out[a:a + chunk] = enr.paired(enr.take(e_code[a:a + chunk]), T[t_code[a:a + chunk]], **kw)
    return out


def _score_pairs(scorer, enr: _Enrollment, T, e_code, t_code, max_pairs, block_pairs) -> np.ndarray:
    kw = _kwargs(scorer)
    n_pairs = len(enr) * T.shape[0]
    if enr.matrix is not None and n_pairs <= min(max_pairs, DENSE_FACTOR * e_code.shape[0]):
        return _gathered(enr, T, e_code, t_code, kw, block_pairs)
    return _paired(enr, T, e_code, t_code, kw, CHUNK_TRIALS)


def _check_inputs(trials, enroll, test) -> None:
    if not isinstance(trials, Trials):
        raise TypeError(f"trials must be a scoring.io.Trials, got {type(trials).__name__}")
    if len(trials) == 0:
        raise ScoringInputError(f"{trials.source or 'trials'}: the trial list is empty")
    for name, emb in (("enroll", enroll), ("test", test)):
        if not isinstance(emb, Embeddings):
            raise TypeError(f"{name} must be a scoring.io.Embeddings, got {type(emb).__name__}")
    if enroll.dim != test.dim:
        raise ScoringInputError(f"enroll embeddings ({enroll.source or 'enroll'}) have dimension {enroll.dim} "
                                f"but test embeddings ({test.source or 'test'}) have {test.dim}")


def _uncertainty_source(emb: Embeddings, rows: np.ndarray, uncertainty: str) -> dict:
    """Keyword arguments of `prepare_variance` for `emb`'s rows: {"spread": (k, dim)} or {"duration": (k,)}."""
    where = emb.source or "embeddings"
    if uncertainty == "spread":
        if emb.spread is None:
            raise ScoringInputError(f"{where}: no spread (per-dimension standard deviations, written by "
                                    "`spkver extract --mc-samples K`) for uncertainty='spread'")
        return {"spread": emb.spread[rows]}
    if emb.duration is None:
        raise ScoringInputError(f"{where}: no durations for uncertainty='duration' (an .npz array 'duration', "
                                "or a utt2dur file)")
    duration = emb.duration[rows]
    missing = np.isnan(duration)
    if missing.any():
        raise ScoringInputError(f"{emb.duration_source or where}: no duration for id "
                                f"{str(emb.ids[rows[np.argmax(missing)]])!r} ({int(missing.sum())} of "
                                f"{len(rows)} needed ids missing)")
    return {"duration": duration}


def _mean_uncertainty(source: dict, offsets: np.ndarray) -> dict:
    """Uncertainty of the average of each model's utterances (rows offsets[i]:offsets[i+1] of `source`):
    independent errors, so the variance of a mean of k is the sum of the variances over k^2."""
    k = np.diff(offsets)
    if "spread" in source:
        s = source["spread"].astype(np.float64)
        return {"spread": np.sqrt(np.add.reduceat(s * s, offsets[:-1], axis=0)) / k[:, None]}
    return {"duration": k * k / np.add.reduceat(1.0 / source["duration"], offsets[:-1])}


def _score_uncertain(scorer, models, e_code, tests, t_code, enroll, test, enroll_map, multi, uncertainty,
                     duration_scale, max_pairs, block_pairs) -> np.ndarray:
    missing = [name for name in ("prepare", "prepare_variance", "posterior", "score_posterior")
               if not callable(getattr(scorer, name, None))]
    if missing:
        raise ScoringInputError(f"uncertainty={uncertainty!r} needs a PLDA scorer; {type(scorer).__name__} lacks "
                                f"{missing}")
    if enroll_map is None:
        rows = enroll.index(models)
        X, source, sets = enroll.vectors[rows], _uncertainty_source(enroll, rows, uncertainty), None
    else:
        rows, offsets = _model_sets(models, enroll, enroll_map)
        source = _uncertainty_source(enroll, rows, uncertainty)
        if multi == "mean":
            X = np.add.reduceat(enroll.vectors[rows].astype(np.float64), offsets[:-1], axis=0)
            X, source, sets = X / np.diff(offsets)[:, None], _mean_uncertainty(source, offsets), None
        else:
            X, sets = enroll.vectors[rows], offsets
    Z = scorer.prepare(X)
    S = scorer.prepare_variance(X, duration_scale=duration_scale, **source)
    t_rows = test.index(tests)
    T = scorer.prepare(test.vectors[t_rows])
    B = scorer.prepare_variance(test.vectors[t_rows], duration_scale=duration_scale,
                                **_uncertainty_source(test, t_rows, uncertainty))
    if not S.any() and not B.any():  # no uncertainty at all: exactly the plain scores
        enr = _Enrollment(scorer, models, enroll, enroll_map, multi)
        return _score_pairs(scorer, enr, T, e_code, t_code, max_pairs, block_pairs)
    if sets is None:
        mean, var = scorer.posterior(Z, S, prepared=True)
    else:
        bounds = list(zip(sets[:-1].tolist(), sets[1:].tolist()))
        mean, var = scorer.posterior([Z[a:b] for a, b in bounds], [S[a:b] for a, b in bounds], prepared=True)
    return scorer.score_posterior(mean, var, T, B, pairs=(e_code, t_code), prepared=True)


def score_trials(scorer, trials: Trials, enroll: Embeddings, test: Embeddings, enroll_map=None,
                 multi: str = "mean", max_pairs: int = MAX_PAIRS, block_pairs: int = BLOCK_PAIRS,
                 uncertainty: str = "none", duration_scale: float = DURATION_SCALE) -> np.ndarray:
    """Score every trial: returns (n_trials,) float64 in trial order.

    trials.enroll ids are looked up in `enroll` (or, with `enroll_map` {model: [utt, ...]}, are model ids
    whose utterances are looked up in `enroll`); trials.test ids in `test`. Multi-enrollment:
    multi="mean" averages the raw embeddings of a model (before `prepare` / `transform`) and scores the
    average as one embedding; multi="plda" scores each model's prepared utterances as a set
    (`scorer.score_multi_matrix` on blocks of models, or `scorer.score_multi` on chunks of trials).
    `multi` only matters with `enroll_map`.
    `uncertainty` ("none", "spread", "duration"; PLDA only): each utterance's own variance, from `spread`
    (per-dimension standard deviations) or `duration` (seconds; variance `duration_scale / duration`) of the
    Embeddings, is added to its within-speaker covariance (`scoring.uncertainty`); multi="mean" gives the
    average the variance of a mean, multi="plda" keeps each enrollment utterance's own. Zero variances give
    exactly the scores without.
    Raises ScoringInputError naming a missing id (or model), or mismatched dimensions; with uncertainty, the
    file lacking spreads or durations (and the id without a duration).
    """
    _check_scorer(scorer, multi)
    _check_inputs(trials, enroll, test)
    if uncertainty not in UNCERTAINTY:
        raise ScoringInputError(f"uncertainty={uncertainty!r}; expected one of {UNCERTAINTY}")
    models, e_code = factorize(trials.enroll)
    tests, t_code = factorize(trials.test)
    if uncertainty != "none":
        return _score_uncertain(scorer, models, e_code, tests, t_code, enroll, test, enroll_map, multi,
                                uncertainty, duration_scale, max_pairs, block_pairs)
    enr = _Enrollment(scorer, models, enroll, enroll_map, multi)
    T = _prepare(scorer, test.get(tests))
    return _score_pairs(scorer, enr, T, e_code, t_code, max_pairs, block_pairs)


def cohort_scores(scorer, X, cohort, block_pairs: int = BLOCK_PAIRS) -> np.ndarray:
    """Scores (n, c) of embeddings X (n, d) against a cohort (c, d) (arrays or Embeddings), in row blocks."""
    X, cohort = _as_embeddings(X, "X"), _as_embeddings(cohort, "cohort")
    if X.dim != cohort.dim:
        raise ScoringInputError(f"X has dimension {X.dim} but the cohort has {cohort.dim}")
    E, C = _prepare(scorer, X.vectors), _prepare(scorer, cohort.vectors)
    return _full_matrix(scorer.score_matrix, E, C, _kwargs(scorer), block_pairs)


def trial_cohort_scores(scorer, trials: Trials, enroll: Embeddings, test: Embeddings, cohort, enroll_map=None,
                        multi: str = "mean"):
    """Cohort scores of each unique enroll model and test id, for `scoring.norm.s_norm`.

    Returns (enroll_cohort (n_models, c), enroll_index (n_trials,), test_cohort (n_tests, c),
    test_index (n_trials,)): trial i uses rows enroll_index[i] and test_index[i]. Models are prepared as in
    `score_trials` (same `enroll_map` / `multi`), so their cohort scores match their trial scores.
    """
    _check_scorer(scorer, multi)
    _check_inputs(trials, enroll, test)
    cohort = _as_embeddings(cohort, "cohort")
    if cohort.dim != enroll.dim:
        raise ScoringInputError(f"the cohort has dimension {cohort.dim} but the embeddings have {enroll.dim}")
    models, e_code = factorize(trials.enroll)
    tests, t_code = factorize(trials.test)
    enr = _Enrollment(scorer, models, enroll, enroll_map, multi)
    C = _prepare(scorer, cohort.vectors)
    kw = _kwargs(scorer)
    if enr.matrix is not None:
        enroll_cohort = _full_matrix(enr.matrix, enr.models, C, kw, BLOCK_PAIRS)
    else:
        n_models, c = len(models), len(cohort)
        m_code, c_code = np.repeat(np.arange(n_models), c), np.tile(np.arange(c), n_models)
        enroll_cohort = _paired(enr, C, m_code, c_code, kw, CHUNK_TRIALS).reshape(n_models, c)
    test_cohort = _full_matrix(scorer.score_matrix, _prepare(scorer, test.get(tests)), C, kw, BLOCK_PAIRS)
    return enroll_cohort, e_code, test_cohort, t_code
