"""Time `scoring.backend.score_trials`: 1M trials between 5k enroll and 5k test unique 512-dim embeddings.

Prints seconds for cosine and PLDA scoring against a 2 s target each, and for PLDA multi-enrollment scoring
(multi="plda": 100k trials of 1k models with 3 utterances each against 5k test ids). PLDA is fitted first on
20k x 512 random data (not timed). Peer figures from the same run, with the ratio peer / ours:

- cosine: the naive per-trial way (the pattern of SpeechBrain's / WeSpeaker's scoring scripts: look each
  trial's two embeddings up and score the pair; numpy row-wise cosine), measured on 100k trials and
  extrapolated to 1M;
- PLDA: the same per-trial pattern with `PLDA.score` on one pair at a time (measured on 10k trials,
  extrapolated), and the float64 score matrix of the raw embeddings, whose largest difference from the
  back-end's float32 GEMM scores is printed;
- multi-enrollment: a per-trial `PLDA.score_multi` call for one model and one test vector (measured on 1k
  trials, extrapolated).

Uncertainty-aware PLDA: a second PLDA with LDA to 200 dimensions (`UNCERTAIN_LDA_DIM`) scores the same 1M trials
plainly and with `uncertainty="spread"` (random per-dimension spreads), printed side by side against a 3 s
target. The uncertainty is the diagonal approximation in the PLDA basis (`scoring.uncertainty`): each trial
is O(dim) elementwise work instead of a share of a GEMM; its largest deviation from per-trial
`PLDA.score(enroll_var=..., test_var=...)` in float64 is printed.

``--quick``: 2k trials between 100 x 100 ids of dimension 32, PLDA fitted on 1k vectors of 200 speakers,
multi-enrollment 2k trials of 30 models, per-trial peers on 500 / 200 trials, LDA to 16 dimensions for the
uncertainty case (a smoke run: a few seconds).

    python benchmarks/bench_scoring.py [--trials 1000000] [--ids 5000] [--dim 512] [--no-plda] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scoring.backend import score_trials
from scoring.cosine import CosineScorer
from scoring.io import Embeddings, Trials

TARGET_S = 2.0
UNCERTAIN_TARGET_S = 3.0
UNCERTAIN_LDA_DIM = 200


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


def make_multi(enroll: Embeddings, test: Embeddings, n_models: int, per_model: int, n_trials: int, seed: int = 0):
    """`n_models` models of `per_model` distinct enroll utterances and `n_trials` distinct (model, test) trials."""
    rng = np.random.default_rng(seed)
    utts = rng.permutation(len(enroll))[:n_models * per_model].reshape(n_models, per_model)
    models = np.array([f"model{i:05d}" for i in range(n_models)])
    enroll_map = {m: enroll.ids[row].tolist() for m, row in zip(models.tolist(), utts)}
    pairs = rng.choice(n_models * len(test), size=n_trials, replace=False)
    return Trials(models[pairs // len(test)], test.ids[pairs % len(test)]), enroll_map


def naive_cosine(trials: Trials, enroll: Embeddings, test: Embeddings) -> np.ndarray:
    """Per-trial lookup and scoring, the peer pattern."""
    e_map = dict(zip(enroll.ids.tolist(), enroll.vectors))
    t_map = dict(zip(test.ids.tolist(), test.vectors))
    out = np.empty(len(trials))
    for i, (e, t) in enumerate(zip(trials.enroll.tolist(), trials.test.tolist())):
        a, b = e_map[e], t_map[t]
        out[i] = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def naive_plda(plda, trials: Trials, enroll: Embeddings, test: Embeddings, enroll_map=None) -> np.ndarray:
    """Per-trial lookup and one `score` (or, with enroll_map, `score_multi`) call per trial, the peer pattern."""
    out = np.empty(len(trials))
    for i, (e, t) in enumerate(zip(trials.enroll.tolist(), trials.test.tolist())):
        if enroll_map is None:
            out[i] = plda.score(enroll.get([e]), test.get([t]))[0]
        else:
            out[i] = plda.score_multi([enroll.get(enroll_map[e])], test.get([t]))[0]
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def report_peer(name: str, peer_secs: float, n_peer: int, n_total: int, secs: float, diff: float) -> None:
    peer_secs *= n_total / n_peer
    print(f"  peer: {name}: {peer_secs:.3f} s (extrapolated from {n_peer} trials); ratio peer/ours = "
          f"{peer_secs / secs:.1f}x; max |diff| = {diff:.2e}")


FULL = {"fit_spk": 2000, "fit_per_spk": 10, "peer_cosine": 100_000, "peer_plda": 10_000, "models": 1000,
        "multi_trials": 100_000, "peer_multi": 1_000, "uncertain_lda": UNCERTAIN_LDA_DIM}
QUICK = {"fit_spk": 200, "fit_per_spk": 5, "peer_cosine": 500, "peer_plda": 500, "models": 30,
         "multi_trials": 2_000, "peer_multi": 200, "uncertain_lda": 16}


def bench_plda(trials: Trials, enroll: Embeddings, test: Embeddings, dim: int, sizes: dict) -> None:
    from scoring.plda import PLDA

    rng = np.random.default_rng(1)
    n_spk, per_spk = sizes["fit_spk"], sizes["fit_per_spk"]
    spk = np.repeat(np.arange(n_spk), per_spk)
    X = rng.standard_normal((n_spk, dim))[spk] + rng.standard_normal((n_spk * per_spk, dim))
    fit_secs, plda = timed(PLDA(n_iter=3).fit, X, spk)
    print(f"PLDA fit on {len(X)} x {dim} (not part of the target): {fit_secs:.3f} s")

    secs, scores = timed(score_trials, plda, trials, enroll, test)
    print(f"PLDA score_trials: {secs:.3f} s (target < {TARGET_S} s; float32 GEMM on prepared coordinates)")
    n_peer = min(len(trials), sizes["peer_plda"])
    sub = Trials(trials.enroll[:n_peer], trials.test[:n_peer])
    peer_secs, peer = timed(naive_plda, plda, sub, enroll, test)
    report_peer("per-trial PLDA.score loop", peer_secs, n_peer, len(trials), secs,
                float(np.max(np.abs(peer - scores[:n_peer]))))
    f64_secs, S = timed(plda.score_matrix, enroll.vectors, test.vectors)
    ref = S[enroll.index(trials.enroll), test.index(trials.test)]
    print(f"  float64 score matrix of the raw embeddings: {f64_secs:.3f} s; max |diff| over all trials = "
          f"{np.max(np.abs(ref - scores)):.2e} (scores span {ref.min():.1f} .. {ref.max():.1f})")
    del S, ref
    bench_uncertain(trials, enroll, test, X, spk, min(sizes["uncertain_lda"], dim, n_spk - 1))

    n_models, per_model, n_multi = sizes["models"], 3, sizes["multi_trials"]
    if n_models * per_model > len(enroll) or n_multi > n_models * len(test):
        print(f"PLDA multi-enrollment: skipped (needs --ids >= {n_models * per_model})")
        return
    multi, enroll_map = make_multi(enroll, test, n_models, per_model, n_multi)
    secs, scores = timed(score_trials, plda, multi, enroll, test, enroll_map=enroll_map, multi="plda")
    print(f"PLDA multi-enrollment score_trials (multi='plda', {n_multi} trials, {n_models} models x "
          f"{per_model} utterances, {len(test)} test ids): {secs:.3f} s (target < {TARGET_S} s)")
    n_peer = sizes["peer_multi"]
    sub = Trials(multi.enroll[:n_peer], multi.test[:n_peer])
    peer_secs, peer = timed(naive_plda, plda, sub, enroll, test, enroll_map)
    report_peer("per-trial PLDA.score_multi loop", peer_secs, n_peer, n_multi, secs,
                float(np.max(np.abs(peer - scores[:n_peer]))))


def bench_uncertain(trials: Trials, enroll: Embeddings, test: Embeddings, X: np.ndarray, spk: np.ndarray,
                    lda_dim: int) -> None:
    """Plain and uncertainty-aware (spread) PLDA after LDA to `lda_dim` on the same trials."""
    from scoring.plda import PLDA

    plda = PLDA(lda_dim=lda_dim, n_iter=3).fit(X, spk)
    rng = np.random.default_rng(2)
    with_spread = [Embeddings(e.ids, e.vectors, spread=rng.uniform(0.05, 0.5, e.vectors.shape).astype(np.float32))
                   for e in (enroll, test)]
    plain_secs, plain = timed(score_trials, plda, trials, enroll, test)
    secs, scores = timed(score_trials, plda, trials, *with_spread, uncertainty="spread")
    print(f"PLDA after LDA to {lda_dim} dims: plain score_trials {plain_secs:.3f} s; uncertainty-aware PLDA "
          f"score_trials (spread, diagonal approximation in the PLDA basis): {secs:.3f} s "
          f"(target < {UNCERTAIN_TARGET_S} s); mean |change| of the scores {np.mean(np.abs(scores - plain)):.3f}")
    n_check = min(len(trials), 2000)
    e, t = enroll.index(trials.enroll[:n_check]), test.index(trials.test[:n_check])
    E, T = enroll.vectors[e], test.vectors[t]
    ref = plda.score(E, T, enroll_var=plda.prepare_variance(E, spread=with_spread[0].spread[e], dtype=np.float64),
                     test_var=plda.prepare_variance(T, spread=with_spread[1].spread[t], dtype=np.float64))
    print(f"  float64 per-trial PLDA.score with variances on {n_check} trials: largest deviation "
          f"{np.max(np.abs(ref - scores[:n_check])):.2e} (scores span {ref.min():.1f} .. {ref.max():.1f})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="default 1,000,000 (2,000 with --quick)")
    parser.add_argument("--ids", type=int, default=None, help="default 5000 (100 with --quick)")
    parser.add_argument("--dim", type=int, default=None, help="default 512 (32 with --quick)")
    parser.add_argument("--no-plda", action="store_true", help="time cosine scoring only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    defaults = (2_000, 100, 32) if args.quick else (1_000_000, 5000, 512)
    for name, value in zip(("trials", "ids", "dim"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    sizes = QUICK if args.quick else FULL
    if args.trials > args.ids * args.ids:
        parser.error("--trials must not exceed ids^2 (trials are distinct pairs)")
    trials, enroll, test = make_data(args.trials, args.ids, args.dim)
    print(f"{args.trials} trials, {args.ids} x {args.ids} unique ids, dim {args.dim}")

    secs, scores = timed(score_trials, CosineScorer(), trials, enroll, test)
    print(f"cosine score_trials: {secs:.3f} s (target < {TARGET_S} s)")
    n_peer = min(len(trials), sizes["peer_cosine"])
    sub = Trials(trials.enroll[:n_peer], trials.test[:n_peer])
    peer_secs, peer = timed(naive_cosine, sub, enroll, test)
    report_peer("naive per-trial cosine loop", peer_secs, n_peer, len(trials), secs,
                float(np.max(np.abs(peer - scores[:n_peer]))))
    if not args.no_plda:
        bench_plda(trials, enroll, test, args.dim, sizes)


if __name__ == "__main__":
    main()
