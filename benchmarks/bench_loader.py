"""Does training data loading keep up with training? Examples per second loaded vs consumed.

On a generated corpus, with the default data settings (2-4 s chunks, batches of 64):

- loaded, cached path: chunks cut from the precomputed feature cache (``spkver.data.examples``), plus the
  one-off cost of building the cache;
- loaded, on-the-fly path: audio read, augmented (generated noise and room impulse responses standing in for
  MUSAN / RIRS) and featurised in ``--num-workers`` DataLoader workers;
- loaded, augmentation without downloads: the data settings of ``recipes/so762/conf/augment_baseline.yaml``
  (speed perturbation 0.9 / 1.1 as new speakers, babble of other training speakers, coloured noise, simulated
  rooms, SpecAugment; its ``augment_prob``) on the fly, with fewer simulated rooms (their one-off simulation is
  timed on its own);
- consumed: one optimisation step (forward, backward, Adam) of the default x-vector on ``--device``
  (bfloat16 autocast on CUDA), and of the so762 baseline x-vector (``recipes/so762/conf/baseline.yaml``) with
  the augmented set's speaker count (three times the corpus's).

A loader/consumer ratio above 1 means the loader does not starve training. ``--quick``: 6 speakers, 2 batches
of 4 chunks of 1-2 s, loading in the main process, one torch thread (a smoke run). Run:
``python benchmarks/bench_loader.py [--device cuda] [--batches 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

RECIPE_CONF = Path(__file__).resolve().parents[1] / "recipes" / "so762" / "conf"


def _loader_rate(examples, n_batches: int) -> float:
    """Examples per second delivered by the loader of epoch 0 (worker start-up included)."""
    tic = time.perf_counter()
    n = 0
    for k, (feats, _) in enumerate(examples.loader(0)):
        n += len(feats)
        if k + 1 == n_batches:
            break
    return n / (time.perf_counter() - tic)


def _consumed_rate(model, batches, device) -> float:
    """Examples per second of optimisation steps (forward, backward, Adam) of ``model`` on ``batches``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(feats, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(feats).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(*batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for feats, labels in batches:
        step(feats, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - tic)


def _fake_musan_and_rir(root: Path, sr: int = 16000) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    (root / "musan" / "noise").mkdir(parents=True)
    (root / "rir").mkdir()
    for k in range(4):
        sf.write(root / "musan" / "noise" / f"n{k}.wav", 0.1 * rng.standard_normal(5 * sr).astype(np.float32), sr)
        taps = np.exp(-np.arange(sr // 4) / (0.03 * sr)) * rng.standard_normal(sr // 4)
        taps[0] = 1.0
        sf.write(root / "rir" / f"r{k}.wav", (0.5 * taps / np.abs(taps).max()).astype(np.float32), sr)
    return root / "musan", root / "rir"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speakers", type=int, default=None, help="default 20 (6 with --quick; at least 6)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches timed per measurement (default 8, 2 with --quick)")
    parser.add_argument("--num-workers", type=int, default=None, help="default 2 (0 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a tiny corpus and small batches (a smoke run)")
    args = parser.parse_args(argv)
    for name, full, quick in (("speakers", 20, 6), ("batches", 8, 2), ("num_workers", 2, 0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick:
        torch.set_num_threads(1)

    from spkver.config import DataConfig, load_config
    from spkver.data.examples import training_set
    from spkver.data.synthetic.corpus import make_corpus
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model

    device = torch.device(args.device)
    feats_cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_corpus(tmp / "data", n_speakers=args.speakers, sessions_per_speaker=2, utts_per_session=3,
                           min_seconds=3.0, max_seconds=8.0, seed=0)
        audio_s = sum(data.utt2dur.values())
        quick = {"batch_size": 4, "chunk_min_seconds": 1.0, "chunk_max_seconds": 2.0} if args.quick else {}
        cfg = DataConfig(num_workers=args.num_workers, **quick)
        cfg = dataclasses.replace(cfg, examples_per_epoch=cfg.batch_size * args.batches)
        print(f"corpus: {len(data)} utterances, {audio_s:.1f} s; batch {cfg.batch_size}, chunks "
              f"{cfg.chunk_min_seconds}-{cfg.chunk_max_seconds} s; {args.num_workers} workers; device {device}")

        tic = time.perf_counter()
        cached = training_set(data, feats_cfg, cfg, tmp / "cache")
        build = time.perf_counter() - tic
        print(f"feature cache build: {build:.2f} s ({audio_s / build:.0f}x real time, once per corpus and config)")
        rate_cached = _loader_rate(cached, args.batches)

        musan, rir = _fake_musan_and_rir(tmp)
        aug_cfg = dataclasses.replace(cfg, augment={"musan": str(musan), "rir": str(rir)})
        rate_fly = _loader_rate(training_set(data, feats_cfg, aug_cfg, tmp / "cache"), args.batches)

        recipe = load_config(RECIPE_CONF / "augment_baseline.yaml").data
        augment = {**recipe.augment, "simulate_rir": {**recipe.augment["simulate_rir"], "count": 20}}
        chain_cfg = dataclasses.replace(cfg, augment=augment, augment_prob=recipe.augment_prob,
                                        speed_perturb=recipe.speed_perturb, spec_augment=recipe.spec_augment)
        tic = time.perf_counter()
        chain = training_set(data, feats_cfg, chain_cfg, tmp / "cache", seed=0)
        setup = time.perf_counter() - tic
        rate_chain = _loader_rate(chain, args.batches)

        torch.manual_seed(0)
        batches = [(f.to(device), y.to(device)) for f, y in cached.loader(0)]
        model = build_model("xvector", feat_dim=feats_cfg.dim, num_classes=len(cached.speakers)).to(device)
        consumed = _consumed_rate(model, batches, device)
        so762 = load_config(RECIPE_CONF / "baseline.yaml").model.kwargs
        model = build_model("xvector", feat_dim=feats_cfg.dim, num_classes=len(chain.speakers), **so762).to(device)
        batches = [(f.to(device), y.to(device)) for f, y in chain.loader(0)]
        consumed_so762 = _consumed_rate(model, batches, device)

        print(f"no-download chain set-up: {setup:.2f} s (20 simulated rooms, babble pool; once per cache dir)")
        print(f"consumed by training steps: {consumed:.0f} examples/s (default x-vector), "
              f"{consumed_so762:.0f} examples/s (so762 baseline x-vector, {len(chain.speakers)} classes)")
        print(f"loaded, cached features:    {rate_cached:.0f} examples/s  (ratio {rate_cached / consumed:.1f}x)")
        print(f"loaded, on the fly + augm.: {rate_fly:.0f} examples/s  (ratio {rate_fly / consumed:.1f}x)")
        print(f"loaded, no-download chain:  {rate_chain:.0f} examples/s  (ratio {rate_chain / consumed_so762:.1f}x "
              f"the so762 baseline's steps)")


if __name__ == "__main__":
    main()
