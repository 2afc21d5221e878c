"""Time `scoring.backend.score_trials`: 1M trials between 5k enroll and 5k test unique 512-dim embeddings.

Prints seconds for cosine and PLDA scoring (PLDA fitted first on 20k x 512 random data, not timed) against
a 2 s target each, plus, as a peer figure from the same run, the naive per-trial way (the pattern of
SpeechBrain's / WeSpeaker's scoring scripts: look each trial's two embeddings up and score the pair; numpy
row-wise cosine, measured on 100k trials and extrapolated to 1M) and the ratio.

    python benchmarks/bench_scoring.py [--trials 1000000] [--ids 5000] [--dim 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scoring.backend import score_trials
from scoring.cosine import CosineScorer
from scoring.io import Embeddings, Trials

TARGET_S = 2.0


def make_data(n_trials: int, n_ids: int, dim: int, seed: int = 0):
    """Random ids (VoxCeleb-like strings), embeddings and trials; returns (trials, enroll, test)."""
    rng = np.random.default_rng(seed)
    def ids(prefix):
        return np.array([f"{prefix}{rng.integers(10**5):05d}/{rng.integers(10**6):06d}/{i:05d}.wav"
                         for i in range(n_ids)])
    e_ids, t_ids = ids("id"), ids("id")
    enroll = Embeddings(e_ids, rng.standard_normal((n_ids, dim), dtype=np.float32))
    test = Embeddings(t_ids, rng.standard_normal((n_ids, dim), dtype=np.float32))
    pairs = rng.choice(n_ids * n_ids, size=n_trials, replace=False)
    label = rng.integers(0, 2, n_trials)
    return Trials(e_ids[pairs // n_ids], t_ids[pairs % n_ids], label), enroll, test


def naive_cosine(trials: Trials, enroll: Embeddings, test: Embeddings) -> np.ndarray:
    """Per-trial lookup and scoring, the peer pattern."""
    e_map = dict(zip(enroll.ids.tolist(), enroll.vectors))
    t_map = dict(zip(test.ids.tolist(), test.vectors))
    out = np.empty(len(trials))
    for i, (e, t) in enumerate(zip(trials.enroll.tolist(), trials.test.tolist())):
        a, b = e_map[e], t_map[t]
        out[i] = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    if args.trials > args.ids * args.ids:
        parser.error("--trials must not exceed ids^2 (trials are distinct pairs)")
    trials, enroll, test = make_data(args.trials, args.ids, args.dim)
    print(f"{args.trials} trials, {args.ids} x {args.ids} unique ids, dim {args.dim}")

    cosine = CosineScorer()
    secs, scores = timed(score_trials, cosine, trials, enroll, test)
    print(f"cosine score_trials: {secs:.3f} s (target < {TARGET_S} s)")
    n_peer = min(len(trials), 100_000)
    sub = Trials(trials.enroll[:n_peer], trials.test[:n_peer])
    peer_secs, peer = timed(naive_cosine, sub, enroll, test)
    peer_secs *= len(trials) / n_peer
    print(f"peer: naive per-trial cosine loop: {peer_secs:.3f} s (extrapolated from {n_peer} trials); "
          f"ratio peer/ours = {peer_secs / secs:.1f}x; max |diff| = {np.max(np.abs(peer - scores[:n_peer])):.2e}")

    try:
        from scoring.plda import PLDA
    except ImportError as err:
        print(f"PLDA: skipped ({err})")
        return
    rng = np.random.default_rng(1)
    n_spk, per_spk = 2000, 10
    spk = np.repeat(np.arange(n_spk), per_spk)
    X = rng.standard_normal((n_spk, args.dim))[spk] + rng.standard_normal((n_spk * per_spk, args.dim))
    fit_secs, plda = timed(PLDA(n_iter=3).fit, X, spk)
    print(f"PLDA fit on {len(X)} x {args.dim} (not part of the target): {fit_secs:.3f} s")
    secs, _ = timed(score_trials, plda, trials, enroll, test)
    print(f"PLDA score_trials: {secs:.3f} s (target < {TARGET_S} s)")


if __name__ == "__main__":
    main()
