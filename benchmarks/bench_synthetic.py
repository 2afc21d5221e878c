"""Benchmark of the built-in synthetic corpus (spkver.data.synthetic.corpus): generation speed and difficulty.

Part 1, speed: generates the corpora of ``spkver demo`` (by default 200 training speakers and 40 evaluation
speakers, 3 sessions x 3 utterances of 2-4 s each, wideband, plus the 40 evaluation speakers again through the
telephone channel) in one process and prints wall and CPU time and the real-time factor (seconds of audio
per second of CPU). The target is > 300x on one core.

Part 2, difficulty: a simple non-neural speaker embedding, the mean and standard deviation over voiced
frames of 30 MFCCs (spkver.features: Kaldi MFCC and energy VAD, no CMN), scored by
- ``cosine``: cosine similarity after standardising each dimension with the training set's mean and std;
- ``LDA``: LDA trained on the training speakers (scoring.lda), length normalisation, cosine.
Trials: every cross-session target pair of the evaluation speakers and 20 non-targets per target, the same
list for the wideband and telephone versions. Printed: EER (crossing, scoring.metrics.eer) per system and
domain. The corpus is meant to land in 10-35 % EER in-domain with the telephone domain harder.

Peer (optional, ``--real DIR``): the same embedding and back-end on real speech, a Kaldi data dir with a
``trials`` file, e.g. ``../shared/data/so762/dev`` (single-session read speech), trained on its sibling
``train`` dir; printed beside the synthetic figures.

``--quick``: 30 training and 12 evaluation speakers, 2 sessions x 2 utterances of 1-2 s each (a smoke run of a
few seconds; the EERs are then rough).

Run: python benchmarks/bench_synthetic.py [--train-speakers 200 --eval-speakers 40 --out DIR --real DIR --quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scoring.io import read_trials
from scoring.lda import ClassStats, lda_projection, length_normalize
from scoring.metrics import eer
from spkver.data.kaldi import DataDir
from spkver.data.synthetic.corpus import make_corpus, make_trials
from spkver.features import FeatureConfig, compute_features

FEATURES = FeatureConfig(cmn_window=0)  # raw MFCC + VAD: the mean carries the spectral envelope


def generate(root: Path, n_train: int, n_eval: int, seed: int, **corpus) -> dict[str, DataDir]:
    """Part 1: generate the demo corpora (``corpus``: more `make_corpus` arguments), print the time and real-time
    factor of each and in total."""
    jobs = {"train": dict(n_speakers=n_train, speaker_offset=0, domain="wide", **corpus),
            "eval_wide": dict(n_speakers=n_eval, speaker_offset=5000, domain="wide", **corpus),
            "eval_tel": dict(n_speakers=n_eval, speaker_offset=5000, domain="tel", **corpus)}
    data, audio_total, cpu_total, wall_total = {}, 0.0, 0.0, 0.0
    print("part 1: generation speed (one process)")
    for name, kw in jobs.items():
        wall, cpu = time.perf_counter(), time.process_time()
        data[name] = make_corpus(root / name, seed=seed, **kw)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        audio = sum(data[name].utt2dur.values())
        audio_total, cpu_total, wall_total = audio_total + audio, cpu_total + cpu, wall_total + wall
        print(f"  {name:10s} {len(data[name]):5d} utts {audio:8.1f} s audio  wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
              f"real-time factor {audio / cpu:6.0f}x (cpu) {audio / wall:6.0f}x (wall)")
    print(f"  {'total':10s} {audio_total:20.1f} s audio  wall {wall_total:6.1f} s  cpu {cpu_total:6.1f} s  "
          f"real-time factor {audio_total / cpu_total:6.0f}x (cpu) {audio_total / wall_total:6.0f}x (wall)")
    return data


def embed(data: DataDir) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of MFCCs over voiced frames: ids (n,), vectors (n, 2 * 30)."""
    ids = data.utts
    vectors = np.empty((len(ids), 2 * FEATURES.dim), dtype=np.float64)
    for i, utt in enumerate(ids):
        wave, _ = data.load_audio(utt, sample_rate=FEATURES.sample_rate)
        feats = compute_features(wave, FEATURES).numpy().astype(np.float64)
        vectors[i] = np.concatenate([feats.mean(axis=0), feats.std(axis=0)])
    return np.asarray(ids), vectors


class Backends:
    """The two back-ends, trained on the training set's embeddings X (n, d) with speaker labels (n,)."""

    def __init__(self, X: np.ndarray, speakers: np.ndarray, lda_dim: int):
        self.mean, self.std = X.mean(axis=0), X.std(axis=0) + 1e-9
        Z = (X - self.mean) / self.std
        _, labels = np.unique(speakers, return_inverse=True)
        stats = ClassStats.from_data(Z, labels, int(labels.max()) + 1)
        self.lda = lda_projection(stats, min(lda_dim, stats.n_classes - 1))

    def transform(self, X: np.ndarray) -> dict[str, np.ndarray]:
        Z = (X - self.mean) / self.std
        return {"cosine": Z, "LDA": length_normalize(Z @ self.lda)}


def trial_eers(backends: Backends, ids: np.ndarray, X: np.ndarray, trials) -> dict[str, float]:
    index = {u: i for i, u in enumerate(ids)}
    e = np.array([index[u] for u in trials.enroll])
    t = np.array([index[u] for u in trials.test])
    out = {}
    for name, Y in backends.transform(X).items():
        Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        scores = np.einsum("ij,ij->i", Y[e], Y[t])
        out[name] = 100 * eer(*trials.split_scores(scores))
    return out


def difficulty(data: dict[str, DataDir], seed: int, real: Path | None) -> None:
    """Part 2: EERs of the MFCC mean+std embedding on cross-session trials, in and out of domain."""
    print("part 2: difficulty (MFCC mean+std embeddings, cross-session trials)")
    t0 = time.perf_counter()
    emb = {name: embed(d) for name, d in data.items()}
    print(f"  embeddings of {sum(len(d) for d in data.values())} utterances in {time.perf_counter() - t0:.1f} s")
    train_ids, train_X = emb["train"]
    backends = Backends(train_X, np.array([data["train"].utt2spk[u] for u in train_ids]), lda_dim=40)
    trials = make_trials(data["eval_wide"], None, 0, seed=seed)
    trials = make_trials(data["eval_wide"], trials.n_target, 20 * trials.n_target, seed=seed)
    print(f"  trials: {trials.n_target} target, {trials.n_nontarget} non-target (same list for both domains)")
    rows = {f"synthetic {d}": trial_eers(backends, *emb[f"eval_{d}"], trials) for d in ("wide", "tel")}
    if real is not None:
        rows["real (peer)"] = real_eers(real)
    print(f"  {'EER %':26s} {'cosine':>8s} {'LDA':>8s}")
    for name, r in rows.items():
        print(f"  {name:26s} {r['cosine']:8.2f} {r['LDA']:8.2f}")
    w, t = rows["synthetic wide"], rows["synthetic tel"]
    print(f"  ratio tel / wide: cosine {t['cosine'] / w['cosine']:.2f}, LDA {t['LDA'] / w['LDA']:.2f}")
    if real is not None:
        r = rows["real (peer)"]
        print(f"  ratio synthetic wide / real: cosine {w['cosine'] / r['cosine']:.2f}, LDA {w['LDA'] / r['LDA']:.2f}")


def real_eers(dev: Path) -> dict[str, float]:
    """The same system on a real corpus: train on ``dev/../train``, score ``dev/trials``."""
    root = dev.parent  # wav.scp paths are relative to the corpus folder
    train = DataDir.load(dev.parent / "train", audio_root=root)
    test = DataDir.load(dev, audio_root=root)
    t0 = time.perf_counter()
    train_ids, train_X = embed(train)
    ids, X = embed(test)
    print(f"  real corpus {dev}: embeddings of {len(train) + len(test)} utterances in "
          f"{time.perf_counter() - t0:.1f} s")
    backends = Backends(train_X, np.array([train.utt2spk[u] for u in train_ids]), lda_dim=40)
    return trial_eers(backends, ids, X, read_trials(dev / "trials"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-speakers", type=int, default=None, help="default 200 (30 with --quick)")
    parser.add_argument("--eval-speakers", type=int, default=None, help="default 40 (12 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the corpora here (default: a temp dir)")
    parser.add_argument("--real", type=Path, default=None,
                        help="real Kaldi data dir with a trials file and a sibling train dir (peer figures)")
    parser.add_argument("--quick", action="store_true", help="a few speakers (a smoke run)")
    args = parser.parse_args(argv)
    for name, full, quick in (("train_speakers", 200, 30), ("eval_speakers", 40, 12)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.train_speakers < 2 or args.eval_speakers < 2:
        parser.error("--train-speakers and --eval-speakers must be >= 2")
    if args.real is not None and not (args.real / "trials").is_file():
        parser.error(f"--real {args.real}: no trials file there")
    torch.set_num_threads(1)  # one utterance at a time: threads only add contention on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out if args.out is not None else Path(tmp)
        corpus = {}
        if args.quick:
            corpus = dict(sessions_per_speaker=2, utts_per_session=2, min_seconds=1.0, max_seconds=2.0)
        data = generate(root, args.train_speakers, args.eval_speakers, args.seed, **corpus)
        difficulty(data, args.seed, args.real)


if __name__ == "__main__":
    main()
