"""Feature extraction speed: real-time factor (seconds of audio per wall-clock second), higher is better.

Measures spkver.features.compute_features with the VoxCeleb preset (30-dim Kaldi MFCC + sliding CMN + energy
VAD) and the fbank80 preset, one utterance at a time on CPU. Peer, same run: SpeechBrain's
``speechbrain.lobes.features.MFCC`` / ``Fbank`` at the same sizes (its raw features only: no CMN, no VAD).

``--quick``: 3 utterances of 2 s on one thread (a smoke run).

    python benchmarks/bench_features.py [--utts 40] [--seconds 10] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _waves(n: int, seconds: float, sr: int) -> list[np.ndarray]:
    """Speech-like test signals: amplitude-modulated harmonics plus noise, with pauses (seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    waves = []
    for _ in range(n):
        f0 = rng.uniform(90, 250)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t), 0, None)
        waves.append((0.1 * voiced * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32))
    return waves


def _rtf(fn, waves, seconds: float) -> float:
    fn(waves[0])  # warm-up
    start = time.perf_counter()
    for w in waves:
        fn(w)
    return len(waves) * seconds / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=None, help="default 40 (3 with --quick)")
    parser.add_argument("--seconds", type=float, default=None, help="default 10 (2 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="default 2 (1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few short utterances (a smoke run)")
    args = parser.parse_args(argv)
    for name, full, quick in (("utts", 40, 3), ("seconds", 10.0, 2.0), ("threads", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    torch.set_num_threads(args.threads)

    from spkver.features import FeatureConfig, compute_features

    waves = _waves(args.utts, args.seconds, 16000)
    print(f"{args.utts} utterances x {args.seconds:g} s at 16 kHz, torch threads = {args.threads}")
    rows = []
    vox = FeatureConfig.voxceleb()
    fb = FeatureConfig.fbank80()
    ours_vox = _rtf(lambda w: compute_features(w, vox), waves, args.seconds)
    ours_fb = _rtf(lambda w: compute_features(w, fb), waves, args.seconds)
    try:
        from speechbrain.lobes.features import MFCC, Fbank
    except ImportError:
        MFCC = Fbank = None
    if MFCC is not None:
        sb_mfcc = MFCC(deltas=False, context=False, sample_rate=16000, f_min=20, f_max=7600, n_mels=30, n_mfcc=30)
        sb_fbank = Fbank(sample_rate=16000, f_min=20, n_mels=80)

        def run(module):
            def call(w):
                with torch.no_grad():
                    module(torch.from_numpy(w).unsqueeze(0))
            return call

        rows.append(("mfcc30 + CMN + VAD (voxceleb)", ours_vox, "SpeechBrain MFCC(30), raw", _rtf(run(sb_mfcc), waves,
                                                                                                   args.seconds)))
        rows.append(("fbank80 + CMN + VAD", ours_fb, "SpeechBrain Fbank(80), raw", _rtf(run(sb_fbank), waves,
                                                                                         args.seconds)))
    else:
        rows = [("mfcc30 + CMN + VAD (voxceleb)", ours_vox, "speechbrain not installed", float("nan")),
                ("fbank80 + CMN + VAD", ours_fb, "speechbrain not installed", float("nan"))]
    print(f"{'spkver':32s} {'RTF':>8s}   {'peer':28s} {'RTF':>8s}  ratio (ours / peer)")
    for name, ours, peer, theirs in rows:
        print(f"{name:32s} {ours:8.0f}x  {peer:28s} {theirs:8.0f}x  {ours / theirs:.2f}")
    print(f"per 10 s utterance (voxceleb preset): {10.0 / ours_vox * 1000:.2f} ms")


if __name__ == "__main__":
    main()
