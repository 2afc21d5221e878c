"""Benchmark: scoring.metrics EER + minDCF against SpeechBrain's (speechbrain.utils.metric_stats), and at scale.

(a) 22k trials (2k targets ~ N(2, 1), 20k non-targets ~ N(0, 1)): our ``eer`` (the crossing of the empirical
    miss and false-alarm rates, linearly interpolated) + ``eer_rocch`` (ROC convex hull) + ``min_dcf`` at
    p = 0.01 against SpeechBrain ``EER`` + ``minDCF`` (same arrays as float64 torch tensors, same run).
    SpeechBrain loops over 2N thresholds for EER and builds (2N, n) comparison matrices for minDCF (several GB
    here); its minDCF is not normalised, so it is divided by min(c_miss p, c_fa (1 - p)) before the values are
    printed side by side. Printed: both timings, the ratio SpeechBrain / ours, all values, and the differences
    of the crossing EERs and of the minDCFs. SpeechBrain's EER is (P_miss + P_fa) / 2 at the threshold where
    the two are closest, so it may differ from the interpolated crossing by up to one rate step (1 / n_tar).
(b) 10M trials (1M targets, 9M non-targets): ``eer`` + ``min_dcf`` at p = 0.01 and 0.001, seconds (goal < 5).
(c) 50k trials in 500 enrollment-model clusters: ``bootstrap_ci`` of EER with 200 replicates, seconds.

``--quick``: 2.2k trials in (a), 20k in (b), 5k trials in 50 clusters with 20 replicates in (c); seconds.

Run: python benchmarks/bench_metrics.py [--n-large 10000000] [--no-speechbrain] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from scoring.metrics import bootstrap_ci, eer, eer_rocch, min_dcf


def gaussian_trials(n_tar: int, n_non: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)


def ours(tar, non, p_target):
    return eer(tar, non), eer_rocch(tar, non), min_dcf(tar, non, p_target)


def bench_peer(n_tar: int, p_target: float, repeats: int, use_speechbrain: bool) -> None:
    tar, non = gaussian_trials(n_tar, 10 * n_tar, seed=0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        e_cross, e_hull, dcf = ours(tar, non, p_target)
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)
    print(f"(a) {11 * n_tar:,} trials ({n_tar:,} targets), p_target={p_target}")
    print(f"    spkver      eer+eer_rocch+min_dcf:  {t_ours * 1e3:9.2f} ms (median of {repeats})  "
          f"EER {100 * e_cross:.4f}%  EER(ROCCH) {100 * e_hull:.4f}%  minDCF {dcf:.5f}")
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
    print(f"    |EER spkver - EER speechbrain| = {100 * abs(e_cross - sb_eer):.4f} points "
          f"(one miss-rate step: {100 / n_tar:.4f})  |minDCF difference| = {abs(dcf - sb_norm):.2e}")
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


def bench_bootstrap(n_trials: int, n_clusters: int, n_boot: int) -> None:
    rng = np.random.default_rng(2)
    cluster = rng.integers(0, n_clusters, n_trials)
    labels = (rng.random(cluster.size) < 0.1).astype(int)
    scores = labels * (2.0 + rng.normal(0, 0.5, n_clusters)[cluster]) + rng.normal(0, 1, cluster.size)
    t0 = time.perf_counter()
    ci = bootstrap_ci(scores, labels, cluster, eer, n_boot=n_boot, seed=0)
    elapsed = time.perf_counter() - t0
    print(f"(c) bootstrap_ci(eer), {n_trials:,} trials, {n_clusters} clusters, {n_boot} replicates: {elapsed:.2f} s  "
          f"EER {100 * ci.estimate:.3f}% [{100 * ci.low:.3f}, {100 * ci.high:.3f}]")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-large", type=int, default=None,
                        help="trials in the scale test (b) (default 10,000,000; 20,000 with --quick)")
    parser.add_argument("--no-speechbrain", action="store_true", help="skip the SpeechBrain peer in (a)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke run)")
    args = parser.parse_args(argv)
    if args.n_large is None:
        args.n_large = 20_000 if args.quick else 10_000_000
    if args.n_large < 20:
        parser.error("--n-large must be at least 20")
    if args.quick:
        bench_peer(200, 0.01, 3, not args.no_speechbrain)
        bench_large(args.n_large)
        bench_bootstrap(5_000, 50, 20)
    else:
        bench_peer(2_000, 0.01, 20, not args.no_speechbrain)
        bench_large(args.n_large)
        bench_bootstrap(50_000, 500, 200)


if __name__ == "__main__":
    main()
