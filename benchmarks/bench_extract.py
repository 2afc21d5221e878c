"""Embedding extraction speed of the default x-vector or of ECAPA-TDNN (random weights; speed does not depend
on them).

1. End to end: ``spkver.extract.extract`` on generated speech (audio decoding, features, network, output),
   reported as a real-time factor (seconds of audio per second of wall time; target >= 150x on 2 CPU cores).
2. Network only, on the same precomputed features and the same length-sorted batches: our x-vector
   inference path against SpeechBrain's ``speechbrain.lobes.models.Xvector.Xvector`` forward pass (same layer
   sizes: 512-512-512-512-1500 TDNN, statistics pooling, 512-dim embedding), both in eval mode under
   ``torch.inference_mode``; best of ``--repeats`` passes; target ratio ours / theirs >= 1.5.

``--model ecapa``: the same two measurements for ``ecapa_tdnn`` (80 log mel filterbanks, ``--ecapa-channels``
channels, default 512, attention C / 4, 192-dim embeddings) against SpeechBrain's ``ECAPA_TDNN`` of the same
configuration (ours runs that network, so the network-only ratio shows our batching and padding overhead).

Run: ``python benchmarks/bench_extract.py [--model ecapa] [--device cuda] [--speakers 10] [--amp bf16]``. ``--device cuda``
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
    parser.add_argument("--model", choices=("xvector", "ecapa"), default="xvector")
    parser.add_argument("--ecapa-channels", type=int, default=512, help="ECAPA width C (default 512)")
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
    if args.ecapa_channels < 8 or args.ecapa_channels % 8:
        parser.error("--ecapa-channels must be a positive multiple of 8")
    if args.speakers is None:
        args.speakers = 2 if args.quick else 10
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.num_workers is None and args.quick:
        args.num_workers = 0
    min_seconds, max_seconds = (1.0, 2.0) if args.quick else (3.0, 8.0)
    if args.quick:
        torch.set_num_threads(1)

    from spkver.checkpoint import save_checkpoint
    from spkver.data.examples import utterance_features
    from spkver.data.synthetic.corpus import make_corpus
    from spkver.extract import Embedder, extract, plan_batches
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model

    device = torch.device(args.device)
    amp = ("bf16" if device.type == "cuda" else None) if args.amp is None else (None if args.amp == "none"
                                                                                else args.amp)
    if args.model == "ecapa":
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        c = args.ecapa_channels
        feats_cfg = FeatureConfig(kind="fbank", num_mel_bins=80, use_energy=False)
        name, arch = "ecapa_tdnn", dict(channels=c, attention_channels=c // 4, embed_dim=192)
        peer_net = ECAPA_TDNN(feats_cfg.dim, lin_neurons=192, channels=[c] * 4 + [3 * c], attention_channels=c // 4)
        peer_name, skip = f"SpeechBrain ECAPA_TDNN (C={c})", ("classifier",)
        target_rtf, target_ratio = "", " (the same network: about 1x)"
    else:
        from speechbrain.lobes.models.Xvector import Xvector

        feats_cfg = FeatureConfig()
        name, arch = "xvector", {}
        peer_net = Xvector(in_channels=feats_cfg.dim)
        peer_name, skip = "SpeechBrain Xvector", ("seg_2", "classifier")
        target_rtf, target_ratio = " (target >= 150x)", " (target >= 1.5x)"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_corpus(tmp / "data", n_speakers=args.speakers, sessions_per_speaker=2, utts_per_session=3,
                           min_seconds=min_seconds, max_seconds=max_seconds, seed=0)
        torch.manual_seed(0)
        kwargs = {"feat_dim": feats_cfg.dim, "num_classes": 1000, **arch}
        model = build_model(name, **kwargs)
        ckpt = save_checkpoint(tmp / f"{name}.pt", model=model, model_name=name, model_kwargs=kwargs,
                               features=feats_cfg.to_dict(), speakers=[str(i) for i in range(1000)])
        audio_s = sum(data.utt2dur.values())
        print(f"model {name}{' ' + str(arch) if arch else ''}; corpus: {len(data)} utterances, "
              f"{audio_s:.1f} s of audio; device {device}; "
              f"torch threads {torch.get_num_threads()}; autocast {amp or 'off (float32)'}")

        # 1. end to end (the first run warms the page cache and the imports)
        runs = []
        for k in range(2):
            summary = extract(ckpt, tmp / f"emb{k}.npz", data_dir=data.path, device=str(device),
                              batch_frames=args.batch_frames, num_workers=args.num_workers, amp=amp, resume=False)
            runs.append(summary.wall_seconds)
        wall = min(runs)
        print(f"end to end (audio -> features -> embeddings -> .npz): {wall:.2f} s, "
              f"{audio_s / wall:.0f}x real time{target_rtf}")

        # 2. network only, same features and batches for both
        feats = {u: utterance_features(data, u, feats_cfg)[0] for u in data.utts}
        fps = 1000.0 / feats_cfg.frame_shift_ms
        plan = plan_batches(data.utts, {u: len(f) / fps for u, f in feats.items()}, fps, args.batch_frames,
                            int(60 * fps))
        batches = [[feats[u] for u in batch] for batch in plan]
        ours = Embedder(model, device, amp=amp)
        theirs = peer_net.to(device).eval()

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
        n_params_ours = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))
        frames = sum(len(f) for f in feats.values())
        print(f"network only ({len(batches)} batches, {frames} frames after VAD):")
        print(f"  spkver {name} (embedding path, {n_params_ours / 1e6:.2f} M params): {t_ours:.3f} s, "
              f"{audio_s / t_ours:.0f}x real time, {frames / t_ours:.0f} frames/s")
        print(f"  {peer_name} ({n_params_theirs / 1e6:.2f} M params): {t_theirs:.3f} s, "
              f"{audio_s / t_theirs:.0f}x real time, {frames / t_theirs:.0f} frames/s")
        print(f"  ratio spkver / SpeechBrain speed: {t_theirs / t_ours:.2f}x{target_ratio}")


if __name__ == "__main__":
    main()
