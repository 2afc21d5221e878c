"""Benchmark: scoring.metrics EER + minDCF against SpeechBrain's (speechbrain.utils.metric_stats), and at scale.

(a) 22k trials (2k targets ~ N(2, 1), 20k non-targets ~ N(0, 1)): our ``eer`` (ROCCH) + ``eer_interp`` +
    ``min_dcf`` at p = 0.01 against SpeechBrain ``EER`` + ``minDCF`` (same arrays as float64 torch tensors,
    same run). SpeechBrain loops over 2N thresholds for EER and builds (2N, n) comparison matrices for minDCF
    (several GB here); its minDCF is not normalised, so it is divided by min(c_miss p, c_fa (1 - p)) before
    the values are printed side by side. Printed: both timings, the ratio SpeechBrain / ours, both values.
(b) 10M trials (1M targets, 9M non-targets): ``eer`` + ``min_dcf`` at p = 0.01 and 0.001, seconds (goal < 5).
(c) 50k trials in 500 enrollment-model clusters: ``bootstrap_ci`` of EER with 200 replicates, seconds.

Run: python benchmarks/bench_metrics.py [--n-large 10000000] [--no-speechbrain]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scoring.metrics import bootstrap_ci, eer, eer_interp, min_dcf


def gaussian_trials(n_tar: int, n_non: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)


def ours(tar, non, p_target):
    return eer(tar, non), eer_interp(tar, non), min_dcf(tar, non, p_target)


def bench_peer(p_target: float, use_speechbrain: bool) -> None:
    tar, non = gaussian_trials(2_000, 20_000, seed=0)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        e_hull, e_interp, dcf = ours(tar, non, p_target)
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)
    print(f"(a) 22k trials, p_target={p_target}")
    print(f"    spkver      eer+eer_interp+min_dcf: {t_ours * 1e3:9.2f} ms (median of 20)  "
          f"EER(ROCCH) {100 * e_hull:.4f}%  EER(interp) {100 * e_interp:.4f}%  minDCF {dcf:.5f}")
    if not use_speechbrain:
        return
    try:
        import torch
        from speechbrain.utils.metric_stats import EER, minDCF
    except ImportError as e:
        print(f"    speechbrain unavailable ({e}); no peer figures")
        return
    t, n = torch.from_numpy(tar), torch.from_numpy(non)
    t0 = time.perf_counter()
    sb_eer, _ = EER(t, n)
    sb_dcf, _ = minDCF(t, n, p_target=p_target)
    t_sb = time.perf_counter() - t0
    sb_norm = sb_dcf / min(p_target, 1 - p_target)
    print(f"    speechbrain EER+minDCF:             {t_sb * 1e3:9.2f} ms (one run)       "
          f"EER {100 * sb_eer:.4f}%  minDCF {sb_norm:.5f} (normalised; raw {sb_dcf:.6f})")
    print(f"    ratio speechbrain / spkver: {t_sb / t_ours:,.0f}x (goal >= 1000x)")


def bench_large(n: int) -> None:
    n_tar = n // 10
    tar, non = gaussian_trials(n_tar, n - n_tar, seed=1)
    t0 = time.perf_counter()
    e = eer(tar, non)
    dcf = min_dcf(tar, non, [0.01, 0.001])
    elapsed = time.perf_counter() - t0
    print(f"(b) {n:,} trials ({n_tar:,} targets): eer + min_dcf(p=0.01, 0.001) in {elapsed:.2f} s (goal < 5 s)  "
          f"EER {100 * e:.4f}%  minDCF {dcf[0]:.5f} / {dcf[1]:.5f}")


def bench_bootstrap() -> None:
    rng = np.random.default_rng(2)
    cluster = rng.integers(0, 500, 50_000)
    labels = (rng.random(cluster.size) < 0.1).astype(int)
    scores = labels * (2.0 + rng.normal(0, 0.5, 500)[cluster]) + rng.normal(0, 1, cluster.size)
    t0 = time.perf_counter()
    ci = bootstrap_ci(scores, labels, cluster, eer, n_boot=200, seed=0)
    elapsed = time.perf_counter() - t0
    print(f"(c) bootstrap_ci(eer), 50k trials, 500 clusters, 200 replicates: {elapsed:.2f} s  "
          f"EER {100 * ci.estimate:.3f}% [{100 * ci.low:.3f}, {100 * ci.high:.3f}]")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-large", type=int, default=10_000_000, help="trials in the scale test (b)")
    parser.add_argument("--no-speechbrain", action="store_true", help="skip the SpeechBrain peer in (a)")
    args = parser.parse_args(argv)
    if args.n_large < 20:
        parser.error("--n-large must be at least 20")
    bench_peer(0.01, not args.no_speechbrain)
    bench_large(args.n_large)
    bench_bootstrap()


if __name__ == "__main__":
    main()
