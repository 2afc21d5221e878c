"""Benchmark: spkver two-covariance PLDA against SpeechBrain's PLDA (speechbrain.processing.PLDA_LDA).

Data are drawn from a known PLDA model (x = y_s + e, y_s ~ N(mu, S_b), e ~ N(0, S_w), S_b with a decaying
spectrum, S_w anisotropic), by default 100k training vectors of dimension 512 from 5k speakers (10 to 30
utterances each). Held-out speakers give an all-pairs trial matrix (one enrollment vector per speaker against
every test vector). Both systems train on the same vectors and score the same trials; printed: training and
scoring time, EER (scoring.metrics.eer, the crossing EER) and the ratios SpeechBrain / spkver.

SpeechBrain is used as in its VoxCeleb PLDA recipe: raw vectors in a StatObject_SB, PLDA(rank_f, nb_iter)
trained by `.plda()`, trials scored by `fast_PLDA_scoring`. Its E-step keeps a (n_speakers, rank_f, rank_f)
array, so rank_f defaults to 100 (its own default); `--sb-utts` runs it on a smaller common subset when
the full size is too slow or too large, in which case both systems are rerun on that subset.

``--quick`` (a smoke run of a few seconds): 3k vectors of dimension 32 from 300 speakers, 300 held-out
speakers, 3 EM iterations, SpeechBrain rank 16.

Run: python benchmarks/bench_plda.py [--n-utts 100000 --n-spk 5000 --dim 512 --sb-utts N --no-speechbrain --quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scoring.metrics import eer
from scoring.plda import PLDA


def make_model(rng: np.random.Generator, dim: int):
    """Random PLDA model: mu (dim,), between and within covariances (dim, dim)."""
    def rotated(scales):
        Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        return (Q * scales) @ Q.T

    idx = np.arange(dim)
    between = rotated(0.15 * np.exp(-idx / 30.0) + 0.01)
    within = rotated(np.exp(-idx / 150.0) * rng.uniform(0.5, 1.5, size=dim))
    return rng.normal(size=dim), between, within


def draw(rng, counts, mu, between, within):
    """Vectors (sum(counts), dim) float32 and speaker indices for speakers with `counts` utterances each."""
    dim = mu.shape[0]
    spk = np.repeat(np.arange(len(counts)), counts)
    y = mu + rng.standard_normal((len(counts), dim)) @ np.linalg.cholesky(between).T
    X = y[spk] + rng.standard_normal((len(spk), dim)) @ np.linalg.cholesky(within).T
    return X.astype(np.float32), spk


def make_data(n_utts: int, n_spk: int, dim: int, seed: int, n_held: int = 1000):
    rng = np.random.default_rng(seed)
    mu, between, within = make_model(rng, dim)
    base = n_utts // n_spk
    half = rng.integers(-min(10, base - 1), min(10, base - 1) + 1, size=n_spk // 2)
    counts = np.full(n_spk, base) + np.concatenate([half, -half, np.zeros(n_spk % 2, dtype=int)])
    counts[: n_utts - counts.sum()] += 1
    X, spk = draw(rng, rng.permutation(counts), mu, between, within)
    held, held_spk = draw(rng, np.full(n_held, 4), mu, between, within)
    first = np.arange(0, len(held), 4)
    enroll, enroll_spk = held[first], held_spk[first]
    rest = np.setdiff1d(np.arange(len(held)), first)
    return X, spk, enroll, enroll_spk, held[rest], held_spk[rest]


def split_eer(S: np.ndarray, enroll_spk, test_spk) -> float:
    same = enroll_spk[:, None] == test_spk[None, :]
    return eer(S[same], S[~same])


def run_spkver(X, spk, enroll, test, n_iter: int):
    t0 = time.perf_counter()
    plda = PLDA(n_iter=n_iter).fit(X, spk)
    t1 = time.perf_counter()
    S = plda.score_matrix(enroll, test)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, S


def run_speechbrain(X, spk, enroll, test, n_iter: int, rank: int):
    from speechbrain.processing.PLDA_LDA import PLDA as SBPLDA
    from speechbrain.processing.PLDA_LDA import Ndx, StatObject_SB, fast_PLDA_scoring

    def stat(vectors, models, prefix):
        segs = np.array([f"{prefix}{i}" for i in range(len(vectors))], dtype="|O")
        none = np.array([None] * len(vectors))
        return StatObject_SB(modelset=np.asarray(models, dtype="|O"), segset=segs, start=none, stop=none,
                             stat0=np.ones((len(vectors), 1)), stat1=vectors.astype(np.float64))

    train = stat(X, [f"spk{s}" for s in spk], "tr")
    t0 = time.perf_counter()
    plda = SBPLDA(rank_f=rank, nb_iter=n_iter)
    plda.plda(train)
    t1 = time.perf_counter()
    en_ids = [f"en{i}" for i in range(len(enroll))]
    en, te = stat(enroll, en_ids, "en"), stat(test, [f"te{i}" for i in range(len(test))], "te")
    ndx = Ndx(models=np.array(en_ids), testsegs=np.array(te.segset, dtype=str))
    t2 = time.perf_counter()
    scores = fast_PLDA_scoring(en, te, ndx, plda.mean, plda.F, plda.Sigma, check_missing=False)
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2, scores.scoremat


def report(name, fit_s, score_s, S, enroll_spk, test_spk):
    value = split_eer(S, enroll_spk, test_spk)
    print(f"{name:<28s} train {fit_s:8.3f} s   score {S.shape[0]}x{S.shape[1]} {score_s:8.4f} s   "
          f"EER {100 * value:6.3f} %")
    return fit_s, score_s, value


QUICK = {"n_utts": 3_000, "n_spk": 300, "dim": 32, "n_iter": 3, "sb_rank": 16, "n_held": 300}
FULL = {"n_utts": 100_000, "n_spk": 5_000, "dim": 512, "n_iter": 10, "sb_rank": 100, "n_held": 1000}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-utts", type=int, default=None, help=f"default {FULL['n_utts']}")
    parser.add_argument("--n-spk", type=int, default=None, help=f"default {FULL['n_spk']}")
    parser.add_argument("--dim", type=int, default=None, help=f"default {FULL['dim']}")
    parser.add_argument("--n-iter", type=int, default=None, help=f"default {FULL['n_iter']}")
    parser.add_argument("--sb-rank", type=int, default=None, help="SpeechBrain rank_f (default: its own, 100)")
    parser.add_argument("--sb-utts", type=int, default=None,
                        help="train SpeechBrain (and spkver again) on this many vectors of the first speakers")
    parser.add_argument("--no-speechbrain", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name in ("n_utts", "n_spk", "dim", "n_iter", "sb_rank"):
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
    if args.n_spk < 2 or args.n_utts < 2 * args.n_spk or args.dim < 2:
        parser.error("need --n-spk >= 2, --n-utts >= 2 * --n-spk and --dim >= 2")

    X, spk, enroll, enroll_spk, test, test_spk = make_data(args.n_utts, args.n_spk, args.dim, args.seed,
                                                            sizes["n_held"])
    print(f"train {X.shape[0]} x {X.shape[1]} from {args.n_spk} speakers; trials {len(enroll)} x {len(test)} "
          f"({len(test)} target); {args.n_iter} EM iterations")
    ours = report("spkver PLDA", *run_spkver(X, spk, enroll, test, args.n_iter), enroll_spk, test_spk)
    if args.no_speechbrain:
        return
    if args.sb_utts is not None and args.sb_utts < len(X):
        n_spk = int(spk[args.sb_utts - 1])  # whole speakers only
        keep = spk < n_spk
        X, spk = X[keep], spk[keep]
        print(f"common subset for the comparison: {X.shape[0]} x {X.shape[1]} from {n_spk} speakers")
        ours = report("spkver PLDA", *run_spkver(X, spk, enroll, test, args.n_iter), enroll_spk, test_spk)
    sb = report(f"SpeechBrain PLDA (rank {args.sb_rank})",
                *run_speechbrain(X, spk, enroll, test, args.n_iter, args.sb_rank), enroll_spk, test_spk)
    print(f"ratio SpeechBrain / spkver: train time {sb[0] / ours[0]:.2f}x, score time {sb[1] / ours[1]:.2f}x, "
          f"EER {sb[2] / max(ours[2], 1e-12):.3f}x")


if __name__ == "__main__":
    main()
