"""A tiny verification set-up shared by tests/test_system.py and tests/test_verify.py: synthetic speakers, two
small extractors (one trained for a few steps, one randomly initialised with another embedding size), their
embeddings, and helpers to build systems from them.

Made once per test session under pytest's base temporary folder (a ``.done`` marker says it is complete);
nothing is written anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

FEATS = {"num_mel_bins": 24, "num_ceps": 20}
TRAINED = {"channels": 32, "stats_channels": 64, "embed_dim": 16}


def _random_model(path: Path, features) -> Path:
    import torch

    from spkver.checkpoint import save_checkpoint
    from spkver.nn.tdnn import build_model

    torch.manual_seed(1)
    kwargs = {"feat_dim": features.dim, "num_classes": 4, "channels": 24, "stats_channels": 48, "embed_dim": 12}
    model = build_model("xvector", **kwargs)
    return save_checkpoint(path, model=model, model_name="xvector", model_kwargs=kwargs,
                           features=features.to_dict(), speakers=[f"s{i}" for i in range(4)])


def tiny_setup(base: Path) -> dict:
    """``{"root", "train", "dev", "trials", "models": {"a": ckpt, "b": ckpt}, "emb": {(model, set): path}}``;
    dev is the calibration set, its trials a Kaldi list between its utterances."""
    root = Path(base) / "spkver_system_fixture"
    index = root / "index.json"
    if (root / ".done").exists():
        return _decode(json.loads(index.read_text()))
    from spkver.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from spkver.data.synthetic.corpus import make_corpus, make_trials
    from spkver.extract import extract
    from spkver.features import FeatureConfig
    from spkver.train import train

    features = FeatureConfig(**FEATS)
    common = dict(sessions_per_speaker=2, utts_per_session=2, min_seconds=1.2, max_seconds=1.8)
    make_corpus(root / "train", n_speakers=10, seed=0, **common)
    dev = make_corpus(root / "dev", n_speakers=6, seed=1, speaker_offset=100, **common)
    make_trials(dev, n_target=None, n_nontarget=60, seed=0, path=root / "dev" / "trials")
    cfg = TrainConfig(epochs=1, seed=0, device="cpu", log_interval=100, features=features,
                      model=ModelConfig("xvector", dict(TRAINED)),
                      data=DataConfig(chunk_min_seconds=0.8, chunk_max_seconds=1.0, examples_per_epoch=128,
                                      batch_size=32, num_workers=0),
                      optim=OptimConfig(name="adam", lr=0.01, warmup_steps=2, schedule="cosine", grad_clip=5.0))
    models = {"a": train(cfg, root / "train", root / "exp_a", progress=False),
              "b": _random_model(root / "b.pt", features)}
    emb = {}
    for m, ckpt in models.items():
        for subset in ("train", "dev"):
            emb[f"{m}/{subset}"] = root / "emb" / m / f"{subset}.npz"
            extract(ckpt, emb[f"{m}/{subset}"], data_dir=root / subset, num_workers=0)
    setup = {"root": root, "train": root / "train", "dev": root / "dev", "trials": root / "dev" / "trials",
             "models": models, "emb": emb}
    index.write_text(json.dumps(setup, default=str))
    (root / ".done").touch()
    return setup


def _decode(raw: dict) -> dict:
    out = {k: Path(v) for k, v in raw.items() if isinstance(v, str)}
    out["models"] = {k: Path(v) for k, v in raw["models"].items()}
    out["emb"] = {k: Path(v) for k, v in raw["emb"].items()}
    return out


def build(setup: dict, out: Path, models=("a",), backend="plda", norm="none", **kwargs) -> Path:
    """A system from the stored embeddings (no extraction): cohort = the training embeddings."""
    from spkver.system import build_system

    if norm != "none":
        kwargs["cohort_emb"] = [setup["emb"][f"{m}/train"] for m in models]
    if backend == "plda":
        kwargs.setdefault("lda_dim", 6)
    return build_system([setup["models"][m] for m in models], out, backend, norm=norm,
                        train_emb=[setup["emb"][f"{m}/train"] for m in models], utt2spk=setup["train"] / "utt2spk",
                        calibrate_data=setup["dev"], calibrate_trials=setup["trials"],
                        calibrate_emb=[setup["emb"][f"{m}/dev"] for m in models], names=list(models), **kwargs)


def dev_files(setup: dict) -> dict[str, list[Path]]:
    """``{speaker: [wav, ...]}`` of the dev (calibration) set."""
    out: dict[str, list[Path]] = {}
    for line in (setup["dev"] / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        spk = utt.split("-")[0]
        p = Path(path)
        out.setdefault(spk, []).append(p if p.is_absolute() else setup["dev"] / p)
    return out


def write_wave(path: Path, wave, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    sf.write(path, np.asarray(wave), rate, subtype=subtype)
    return path
