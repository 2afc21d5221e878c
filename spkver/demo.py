"""``spkver demo``: the whole pipeline on the built-in synthetic corpus, in minutes on a CPU.

Stages (each leaves a ``.done`` marker in the output folder, so an interrupted demo resumes where it stopped):

1. corpus: training speakers (wideband), disjoint evaluation speakers in the wideband domain (in-domain) and the
   same evaluation speakers through a telephone channel (out-of-domain), with cross-session trial lists;
2. train the baseline x-vector and the Bayesian x-vector (same architecture, data, epochs and seed);
3. extract embeddings of the training and evaluation sets (Bayesian model: posterior mean);
4. score with cosine (centred on the training mean) and LDA + PLDA (trained on training embeddings), fuse the two
   systems by logistic regression cross-validated over enrollment speakers, and write ``report.md``,
   ``report.json`` and ``det.png`` (in-domain and out-of-domain DET curves under PLDA).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from scoring.io import atomic_write

log = logging.getLogger(__name__)
P_TARGET = 0.01
SYSTEMS = ("baseline", "proposed")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: the corpus, the models and the training run."""

    train_speakers: int = 300
    eval_speakers: int = 50
    sessions: int = 3
    utts_per_session: int = 3
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    n_target: int | None = None  # None: every cross-session same-speaker pair
    n_nontarget: int = 10000
    channels: int = 256
    stats_channels: int = 768
    embed_dim: int = 128
    epochs: int = 6
    examples_per_epoch: int = 6400
    batch_size: int = 64
    chunk_seconds: tuple[float, float] = (1.0, 2.0)
    lr: float = 2e-3
    bayes_layers: tuple[str, ...] = ("frame_1", "frame_2", "frame_3", "frame_4", "frame_5")
    kl_weight: float = 1e-3  # KL tempering: the chunks of a small corpus are far from N_train independent examples
    prior_sigma: float = 0.1
    lda_dim: int = 100

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A tiny configuration for tests (seconds, not minutes)."""
        return cls(train_speakers=12, eval_speakers=8, sessions=2, utts_per_session=2, min_seconds=1.0,
                   max_seconds=1.5, n_target=30, n_nontarget=240, channels=32, stats_channels=64, embed_dim=16,
                   epochs=1, examples_per_epoch=128, batch_size=32, chunk_seconds=(0.8, 1.0), lda_dim=8)


class _Stages:
    """``.done`` markers: a stage runs unless its marker exists; the marker is written after it succeeds."""

    def __init__(self, root: Path):
        self.root = root

    def done(self, name: str) -> bool:
        return (self.root / f".{name}.done").exists()

    def mark(self, name: str) -> None:
        (self.root / f".{name}.done").touch()


def _train_config(cfg: DemoConfig, bayes: bool, seed: int):
    from spkver.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from spkver.features import FeatureConfig

    kwargs = {"channels": cfg.channels, "stats_channels": cfg.stats_channels, "embed_dim": cfg.embed_dim}
    if bayes:
        kwargs.update(bayes_layers=list(cfg.bayes_layers), sampling="bbb", prior_sigma=cfg.prior_sigma)
    return TrainConfig(
        epochs=cfg.epochs, seed=seed, kl_weight=cfg.kl_weight if bayes else 0.0, device="cpu",
        validate_every=0, features=FeatureConfig.voxceleb(),
        model=ModelConfig(name="bayes_xvector" if bayes else "xvector", kwargs=kwargs),
        data=DataConfig(chunk_min_seconds=cfg.chunk_seconds[0], chunk_max_seconds=cfg.chunk_seconds[1],
                        examples_per_epoch=cfg.examples_per_epoch, batch_size=cfg.batch_size, num_workers=0),
        optim=OptimConfig(name="adam", lr=cfg.lr, schedule="cosine", warmup_steps=20, weight_decay=0.0),
    )


def make_demo_corpus(root: Path, cfg: DemoConfig, seed: int, workers: int = 1) -> None:
    """Training set, in-domain and out-of-domain evaluation sets, and their trial lists."""
    from spkver.data.synthetic.corpus import make_corpus, make_trials

    common = dict(sessions_per_speaker=cfg.sessions, utts_per_session=cfg.utts_per_session,
                  min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, workers=workers)
    log.info("corpus: %d training speakers (wideband)", cfg.train_speakers)
    make_corpus(root / "train", cfg.train_speakers, domain="wide", seed=seed, **common)
    for name, domain in (("eval_wide", "wide"), ("eval_tel", "tel")):
        log.info("corpus: %d evaluation speakers (%s)", cfg.eval_speakers, domain)
        data = make_corpus(root / name, cfg.eval_speakers, domain=domain, seed=seed + 1,
                           speaker_offset=cfg.train_speakers, **common)
        make_trials(data, n_target=cfg.n_target, n_nontarget=cfg.n_nontarget, seed=seed,
                    path=root / name / "trials")


def run_demo(out, quick: bool = False, seed: int = 0, cfg: DemoConfig | None = None) -> dict:
    """Run (or resume) the demo into folder ``out``; returns the results written to ``report.json``."""
    from spkver.extract import extract
    from spkver.train import train

    cfg = cfg or (DemoConfig.quick() if quick else DemoConfig())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out)
    start = time.perf_counter()
    data = out / "data"

    if not stages.done("corpus"):
        make_demo_corpus(data, cfg, seed, workers=1 if quick else 2)
        stages.mark("corpus")

    for system in SYSTEMS:
        exp = out / "exp" / system
        if not stages.done(f"train_{system}"):
            kind = "Bayesian" if system == "proposed" else "deterministic"
            log.info("training the %s x-vector (%s)", system, kind)
            train(_train_config(cfg, system == "proposed", seed), data / "train", exp,
                  resume=True, progress=True)
            stages.mark(f"train_{system}")
        for subset in ("train", "eval_wide", "eval_tel"):
            emb = out / "emb" / system / f"{subset}.npz"
            if not stages.done(f"extract_{system}_{subset}"):
                extract(exp, emb, data_dir=data / subset, resume=True, progress=True)
                stages.mark(f"extract_{system}_{subset}")

    log.info("scoring (cosine, PLDA), fusion and report")
    results = score_demo(out, cfg)
    results["minutes"] = (time.perf_counter() - start) / 60.0
    results["config"] = dataclasses.asdict(cfg)
    with atomic_write(out / "report.json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2) + "\n")
    log.info("done in %.1f min: %s, %s, %s", results["minutes"], out / "report.md", out / "report.json",
             out / "det.png")
    return results


def score_demo(out: Path, cfg: DemoConfig) -> dict:
    """Back-ends, fusion, tables and DET plot from the demo's embeddings (``scoring.pipeline`` rows,
    ``scoring.report`` tables: the same path as ``spkver eval`` and ``spkver table``)."""
    from scoring.io import read_embeddings, read_trials, read_utt2spk
    from scoring.pipeline import evaluate_systems, score_systems
    from scoring.report import comparison_table, det_plot

    data, emb = out / "data", out / "emb"
    utt2spk = read_utt2spk(data / "train" / "utt2spk")
    tables, results, det = {}, {}, {}
    for eval_set, label in (("eval_wide", "in-domain (wideband)"), ("eval_tel", "out-of-domain (telephone)")):
        trials = read_trials(data / eval_set / "trials")
        eval_utt2spk = read_utt2spk(data / eval_set / "utt2spk")
        groups = [eval_utt2spk[u] for u in trials.enroll]
        systems = {s: (read_embeddings(emb / s / "train.npz"), read_embeddings(emb / s / f"{eval_set}.npz"))
                   for s in SYSTEMS}
        entries = []
        for backend in ("cosine", "plda"):
            scores = score_systems(backend, systems, trials, utt2spk, lda_dim=cfg.lda_dim)
            rows, scores = evaluate_systems(scores, trials, p_targets=(P_TARGET,), fusion_groups=groups)
            entries.append((label, backend, rows))
            if backend == "plda":
                labels = trials.label
                for name, s in scores.items():
                    det[f"{name} ({eval_set.split('_')[1]})"] = (s[labels == 1], s[labels == 0])
        tables[label] = comparison_table(entries, P_TARGET)
        results[eval_set] = {backend: rows for _, backend, rows in entries}
        print(f"\n{label}: EER(%) / minDCF(p_target={P_TARGET})\n{tables[label]}", flush=True)

    det_plot(det, out / "det.png", title="DET, PLDA back-end")
    report = ["# spkver demo", "",
              "Synthetic corpus: wideband training speakers; evaluation speakers disjoint from them, in the wideband",
              "domain (in-domain) and through a telephone channel (out-of-domain). Fusion: logistic regression",
              "trained by 2-fold cross-validation over enrollment speakers. EER: the crossing EER (where the miss",
              "and false-alarm rates cross, as Kaldi's compute-eer, SpeechBrain and WeSpeaker report it);",
              "report.json also gives the ROC-convex-hull EER (eer_rocch) of every row.", ""]
    for label, table in tables.items():
        report += [f"## {label}: EER(%) / minDCF (P_tgt = {P_TARGET})", "", table.rstrip(), ""]
    with atomic_write(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(report) + "\n")
    return {"p_target": P_TARGET, "results": results}
