"""Embedding extraction speed of the default x-vector (random weights; speed does not depend on them).

1. End to end: ``spkver.extract.extract`` on generated speech (audio decoding, features, network, output),
   reported as a real-time factor (seconds of audio per second of wall time; target >= 150x on 2 CPU cores).
2. Network only, on the same precomputed features and the same length-sorted batches: our x-vector
   inference path against SpeechBrain's ``speechbrain.lobes.models.Xvector.Xvector`` forward pass (same layer
   sizes: 512-512-512-512-1500 TDNN, statistics pooling, 512-dim embedding), both in eval mode under
   ``torch.inference_mode``; best of ``--repeats`` passes; target ratio ours / theirs >= 1.5.

Run: ``python benchmarks/bench_extract.py [--device cuda] [--speakers 10] [--amp bf16]``. ``--device cuda``
runs both networks under bfloat16 autocast; ``--amp bf16`` does so on CPU too (CPUs with AVX512-BF16/AMX).
``--quick``: 2 speakers with utterances of 1-2 s, features in the main process, one torch thread, one timed pass
(a smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_batches(fn, batches, device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        tic = time.perf_counter()
        for batch in batches:
            fn(batch)
        _sync(device)
        best = min(best, time.perf_counter() - tic)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speakers", type=int, default=None,
                        help="generated speakers (6 utterances of 3-8 s each; default 10, 2 with --quick)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="feature worker processes (default: extract's; 0 with --quick)")
    parser.add_argument("--batch-frames", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--amp", choices=("none", "bf16"), default=None,
                        help="autocast both networks (default: bf16 on CUDA, none on CPU)")
    parser.add_argument("--quick", action="store_true", help="a tiny corpus of short utterances (a smoke run)")
    args = parser.parse_args(argv)
    if args.speakers is None:
        args.speakers = 2 if args.quick else 10
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.num_workers is None and args.quick:
        args.num_workers = 0
    min_seconds, max_seconds = (1.0, 2.0) if args.quick else (3.0, 8.0)
    if args.quick:
        torch.set_num_threads(1)

    from speechbrain.lobes.models.Xvector import Xvector

    from spkver.checkpoint import save_checkpoint
    from spkver.data.examples import utterance_features
    from spkver.data.synthetic.corpus import make_corpus
    from spkver.extract import Embedder, extract, plan_batches
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model

    device = torch.device(args.device)
    amp = ("bf16" if device.type == "cuda" else None) if args.amp is None else (None if args.amp == "none"
                                                                                else args.amp)
    feats_cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_corpus(tmp / "data", n_speakers=args.speakers, sessions_per_speaker=2, utts_per_session=3,
                           min_seconds=min_seconds, max_seconds=max_seconds, seed=0)
        torch.manual_seed(0)
        kwargs = {"feat_dim": feats_cfg.dim, "num_classes": 1000}
        model = build_model("xvector", **kwargs)
        ckpt = save_checkpoint(tmp / "xvector.pt", model=model, model_name="xvector", model_kwargs=kwargs,
                               features=feats_cfg.to_dict(), speakers=[str(i) for i in range(1000)])
        audio_s = sum(data.utt2dur.values())
        print(f"corpus: {len(data)} utterances, {audio_s:.1f} s of audio; device {device}; "
              f"torch threads {torch.get_num_threads()}; autocast {amp or 'off (float32)'}")

        # 1. end to end (the first run warms the page cache and the imports)
        runs = []
        for k in range(2):
            summary = extract(ckpt, tmp / f"emb{k}.npz", data_dir=data.path, device=str(device),
                              batch_frames=args.batch_frames, num_workers=args.num_workers, amp=amp, resume=False)
            runs.append(summary.wall_seconds)
        wall = min(runs)
        print(f"end to end (audio -> features -> embeddings -> .npz): {wall:.2f} s, "
              f"{audio_s / wall:.0f}x real time (target >= 150x)")

        # 2. network only, same features and batches for both
        feats = {u: utterance_features(data, u, feats_cfg)[0] for u in data.utts}
        fps = 1000.0 / feats_cfg.frame_shift_ms
        plan = plan_batches(data.utts, {u: len(f) / fps for u, f in feats.items()}, fps, args.batch_frames,
                            int(60 * fps))
        batches = [[feats[u] for u in batch] for batch in plan]
        ours = Embedder(model, device, amp=amp)
        theirs = Xvector(in_channels=feats_cfg.dim).to(device).eval()

        def run_theirs(batch):
            longest = max(len(f) for f in batch)
            x = np.zeros((len(batch), longest, batch[0].shape[1]), dtype=np.float32)
            for i, f in enumerate(batch):
                x[i, :len(f)] = f
            lens = torch.tensor([len(f) / longest for f in batch], device=device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp is not None):
                return theirs(torch.from_numpy(x).to(device), lens).float().cpu()

        t_ours = _time_batches(ours, batches, device, args.repeats)
        t_theirs = _time_batches(run_theirs, batches, device, args.repeats)
        n_params_theirs = sum(p.numel() for p in theirs.parameters())
        n_params_ours = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("seg_2", "classifier")))
        print(f"network only ({len(batches)} batches, {sum(len(f) for f in feats.values())} frames after VAD):")
        print(f"  spkver XVector (embedding path, {n_params_ours / 1e6:.2f} M params): {t_ours:.3f} s, "
              f"{audio_s / t_ours:.0f}x real time")
        print(f"  SpeechBrain Xvector ({n_params_theirs / 1e6:.2f} M params): {t_theirs:.3f} s, "
              f"{audio_s / t_theirs:.0f}x real time")
        print(f"  ratio spkver / SpeechBrain speed: {t_theirs / t_ours:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
