"""The training loop: any model of the registry (x-vector, ECAPA-TDNN; Bayesian or not), CPU or GPU, single
process or DDP under torchrun.

Loss (``spkver.nn.objective``): mean cross-entropy (or AAM-softmax, ``loss: {name: aam}``, on a cosine
classifier) + ``kl_weight * KL / N_train`` with N_train the training
examples per epoch (``data.examples_per_epoch``, all ranks together), so that an epoch of steps adds up to
the negative ELBO (Blundell et al. 2015) divided by N_train.

Experiment dir::

    config.yaml              the resolved configuration
    train.log.jsonl          one JSON object per logged step ("kind": "step") and per epoch ("kind": "epoch";
                             also logged at INFO as one summary line: loss, accuracy, KL, validation EER, time)
    checkpoints/epoch_NNN.pt after every epoch (atomic); latest.pt points at the newest
    final.pt                 the model-only checkpoint, once all epochs are done
    feats/                   the feature cache (unless data.cache_dir says otherwise)

``resume=True`` continues from the newest checkpoint exactly: model, optimiser, schedule, gradient scaler,
RNG states and sampler position are restored, so on CPU two epochs in one run and one epoch plus a resumed
one give bitwise-equal weights. A killed run loses at most its current epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from spkver import checkpoint as ckpt
from spkver import distributed
from spkver.config import ConfigError, TrainConfig, as_config, save_config
from spkver.progress import progress as show_progress

log = logging.getLogger(__name__)
# settings that may change between a run and its resumption
RESUMABLE_CHANGES = ("epochs", "device", "log_interval", "validate_every", "keep_checkpoints", "data.num_workers")


# ------------------------------------------------------------------------------------ optimiser, schedule
def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimiser of an ``OptimConfig``: the Bayesian layers' ``rho`` parameters in a second group without
    weight decay and with ``lr * rho_lr_scale`` (see ``OptimConfig``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rho = [p for n, p in named if n.rsplit(".", 1)[-1] in ("weight_rho", "bias_rho")]
    rho_ids = {id(p) for p in rho}
    params = [{"params": [p for _, p in named if id(p) not in rho_ids]}]
    if rho:
        params.append({"params": rho, "lr": cfg.lr * cfg.rho_lr_scale, "weight_decay": 0.0})
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.lr`` at optimisation ``step`` (see ``OptimConfig``)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg, total_steps: int, steps_per_epoch: int):
    """A ``LambdaLR`` stepping once per optimisation step with :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg, total_steps, steps_per_epoch))


# ------------------------------------------------------------------------------------------------ helpers
class JsonLog:
    """Append-only JSON-lines log (one flushed line per record)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(saved: dict, cfg: TrainConfig, source) -> None:
    """Raise :class:`ConfigError` when ``cfg`` changes more than :data:`RESUMABLE_CHANGES` of ``saved`` (a
    setting the saved configuration predates counts as its default)."""
    defaults = _flatten(TrainConfig().to_dict())
    new = _flatten(cfg.to_dict())
    old = {**{k: v for k, v in defaults.items() if k in new}, **_flatten(saved)}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"{source}: cannot resume with a changed configuration ({', '.join(changed)}); "
                          f"only {', '.join(RESUMABLE_CHANGES)} may change")


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return torch.autocast(device.type, enabled=False)
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: fp16 needs a CUDA device (use bf16 or null on CPU)")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _init_from(model, init, speakers: list[str], features: dict, model_kwargs: dict) -> None:
    """Initialise ``model`` (Bayesian: its means) from the baseline experiment (or checkpoint) ``init``, or from
    a pretrained extractor without speakers (``speechbrain:DIR``), whose classifier is not taken."""
    base = ckpt.load_checkpoint(init)
    if base["features"] != features:
        raise ConfigError(f"{base['path']}: the baseline was trained on other features ({base['features']}); "
                          f"set the configuration's features to them")
    if base["speakers"] and base["speakers"] != speakers:
        raise ConfigError(f"{base['path']}: the baseline was trained on other speakers "
                          f"({len(base['speakers'])} vs {len(speakers)})")
    if base["model_kwargs"].get("frontend") != model_kwargs.get("frontend"):
        raise ConfigError(f"{base['path']}: its model's front end differs from the configuration's; set model."
                          f"frontend to {base['model_kwargs'].get('frontend')!r}")
    if not hasattr(model, "init_from_baseline"):
        raise ConfigError(f"model {type(model).__name__} cannot be initialised from a baseline")
    try:
        keep = () if base["speakers"] else ("classifier.",)  # not the classifier of other (or no) speakers
        model.init_from_baseline(base["model_state"], keep=keep if base.get("head", True) else model.head_prefixes)
    except ValueError as err:
        arch = {k: v for k, v in base["model_kwargs"].items() if k not in ("feat_dim", "num_classes")}
        raise ConfigError(f"{base['path']}: {err} (it holds model {base['model_name']} {arch})") from None


def _restore(state: dict, model, optimizer, scheduler, scaler, speakers: list[str]) -> tuple[int, int]:
    """Load a checkpoint's training state (weights, optimiser, schedule, scaler, RNG); returns (epoch, step)."""
    if state["speakers"] != speakers:
        raise ConfigError(f"{state['path']}: checkpoint speakers differ from the training data's")
    model.load_state_dict(state["model_state"])
    saved_groups, groups = len(state["optimizer"]["param_groups"]), len(optimizer.param_groups)
    if saved_groups != groups:  # e.g. a Bayesian run saved before rho had its own parameter group
        raise ConfigError(f"{state['path']}: the checkpoint's optimiser has {saved_groups} parameter group(s), "
                          f"this version builds {groups}: this run cannot be resumed, start a new one")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    ckpt.restore_rng_state(state["rng"])
    log.info("resumed from %s (epoch %d, step %d)", state["path"], state["epoch"], state["step"])
    return state["epoch"], state["step"]


# -------------------------------------------------------------------------------------------- validation
def validate(model, feature_cfg, dev_data, dev_trials, cache_root, device, audio_root=None) -> dict:
    """Cosine-scoring EER (``scoring.metrics.eer``) of ``model`` on dev data and its trials.

    Dev features are cached like the training features; unreadable dev utterances and their trials are
    left out (counted in the result).
    """
    from scoring.cosine import cosine_score
    from scoring.io import Embeddings, read_trials
    from scoring.metrics import eer
    from spkver.data.examples import FeatureCache
    from spkver.data.kaldi import DataDir
    from spkver.extract import Embedder, plan_batches

    data = dev_data if isinstance(dev_data, DataDir) else DataDir.load(dev_data, audio_root=audio_root)
    cache = FeatureCache.build(data, feature_cfg, cache_root)
    fps = 1000.0 / feature_cfg.frame_shift_ms
    seconds = {u: n / fps for u, n in zip(cache.utts, cache.lengths)}
    index = {u: i for i, u in enumerate(cache.utts)}
    was_training = model.training
    embedder = Embedder(model, device, max_frames=int(60 * fps))
    ids, vectors = [], []
    for batch in plan_batches(cache.utts, seconds, fps, 30000, int(60 * fps)):
        emb, _ = embedder([np.asarray(cache[index[u]], dtype=np.float32) for u in batch])
        ids += batch
        vectors.append(emb)
    model.train(was_training)
    emb = Embeddings(ids, np.concatenate(vectors))
    trials = read_trials(dev_trials)
    keep = np.array([e in emb and t in emb for e, t in zip(trials.enroll, trials.test)], dtype=bool)
    keep &= trials.label >= 0
    scores = cosine_score(emb.get(trials.enroll[keep]), emb.get(trials.test[keep]))
    labels = trials.label[keep]
    return {"eer": float(eer(scores[labels == 1], scores[labels == 0])), "trials": int(keep.sum()),
            "trials_skipped": int((~keep).sum()), "bad_utts": len(cache.bad)}


# -------------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig | str | os.PathLike, data_dir, exp_dir, init=None, resume: bool = False,
          dev_data=None, dev_trials=None, progress: bool = True, audio_root=None, skip_bad: bool = False,
          device: str | None = None, until_epoch: int | None = None) -> Path | None:
    """Train an extractor on Kaldi data dir ``data_dir`` into ``exp_dir``.

    Args:
        cfg: a :class:`TrainConfig` or the path of its YAML file.
        init: baseline experiment dir (or checkpoint) whose weights initialise the model (a Bayesian model's
            means), or ``speechbrain:DIR``, a pretrained SpeechBrain folder (its embedding network; the
            classifier starts afresh): fine-tuning, or a Bayesian model started from it.
        resume: continue from the newest checkpoint in ``exp_dir`` (fresh start when there is none).
            Without it an ``exp_dir`` that already holds checkpoints is refused.
        dev_data, dev_trials: a data dir and its trials for a validation EER every ``validate_every`` epochs.
        progress: tqdm bar (rank 0). audio_root: resolves relative ``wav.scp`` paths.
        skip_bad: leave unreadable training utterances out (reported) instead of raising.
        device: overrides ``cfg.device``. until_epoch: stop after this epoch (the schedule still spans
            ``cfg.epochs``; resume later to continue).
    Returns:
        ``exp_dir/final.pt`` when training is complete, else the newest epoch checkpoint (``None`` on ranks
        other than 0).
    """
    from spkver.data.examples import training_set
    from spkver.data.kaldi import DataDir
    from spkver.nn.objective import XVectorObjective
    from spkver.nn.tdnn import build_model

    cfg = as_config(cfg)
    cfg.model.validate()
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    if (dev_data is None) != (dev_trials is None):
        raise ValueError("dev_data and dev_trials go together")
    last_epoch = cfg.epochs if until_epoch is None else min(int(until_epoch), cfg.epochs)
    info = distributed.setup(cfg.device)
    exp_dir = Path(exp_dir)
    existing = ckpt.list_checkpoints(exp_dir)
    if existing and not resume:
        raise ValueError(f"{exp_dir} already holds checkpoints; pass resume=True or use a new experiment dir")
    state = ckpt.load_checkpoint(existing[-1]) if resume and existing else None
    if state is not None:
        check_resumable(state.get("config", {}), cfg, state["path"])
    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, exp_dir / "config.yaml")
    logbook = JsonLog(exp_dir / "train.log.jsonl", enabled=info.is_main)

    data = DataDir.load(data_dir, audio_root=audio_root)
    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else exp_dir / "feats"
    examples = None
    for turn in (0, 1):  # rank 0 builds the feature cache, the others then read it
        if (turn == 0) == info.is_main:
            examples = training_set(data, cfg.features, cfg.data, cache_root, cfg.seed, info.rank,
                                    info.world_size, skip_bad, progress and info.is_main)
        distributed.barrier(info)
    if examples.bad:
        logbook.write(kind="skipped", count=len(examples.bad), utts=sorted(examples.bad))

    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    model_kwargs = {**cfg.model.kwargs, "feat_dim": cfg.features.dim, "num_classes": len(examples.speakers)}
    if cfg.loss.name == "aam":
        model_kwargs["classifier"] = "cosine"
    model = build_model(cfg.model.name, **model_kwargs)
    if init is not None and state is None:
        _init_from(model, init, examples.speakers, cfg.features.to_dict(), model_kwargs)
    model.to(info.device)
    steps_per_epoch = examples.sampler.steps_per_epoch
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.epochs * steps_per_epoch, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and info.device.type == "cuda" else None
    epoch, step = 0, 0
    if state is not None:
        epoch, step = _restore(state, model, optimizer, scheduler, scaler, examples.speakers)
    net = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    objective = XVectorObjective(cfg.data.examples_per_epoch, cfg.kl_weight, cfg.kl_warmup_steps, cfg.loss.name,
                                 cfg.loss.margin, cfg.loss.scale, cfg.loss.margin_ramp_steps)
    run_meta = dict(model_name=cfg.model.name, model_kwargs=model_kwargs, features=cfg.features.to_dict(),
                    speakers=examples.speakers, config=cfg.to_dict())
    latest = existing[-1] if existing else None

    if info.is_main and epoch < last_epoch:
        log.info("training %s on %d utterances of %d speakers (%s): epochs %d-%d of %d, %d steps each",
                 cfg.model.name, len(examples.utts), len(examples.speakers), info.device, epoch + 1, last_epoch,
                 cfg.epochs, steps_per_epoch)
    while epoch < last_epoch:
        epoch += 1
        tic = time.perf_counter()
        step, totals = _train_epoch(net, model, examples, objective, optimizer, scheduler, scaler, cfg, info,
                                    epoch, step, logbook, progress)
        record = {"kind": "epoch", "epoch": epoch, "step": step, **_epoch_stats(totals, info)}
        if info.is_main and dev_data is not None and cfg.validate_every and epoch % cfg.validate_every == 0:
            record["valid"] = validate(model, cfg.features, dev_data, dev_trials, cache_root, info.device,
                                       audio_root)
        record["seconds"] = time.perf_counter() - tic
        if info.is_main:
            log.info("%s", epoch_summary(record, cfg.epochs))
            latest = ckpt.save_checkpoint(
                ckpt.epoch_path(exp_dir, epoch), model=model, epoch=epoch, step=step, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, sampler={**examples.sampler.state_dict(), "epoch": epoch + 1,
                                                             "start": 0}, **run_meta)
            ckpt.link_latest(exp_dir, latest)
            ckpt.prune_checkpoints(exp_dir, cfg.keep_checkpoints)
            logbook.write(**record)
        distributed.barrier(info)
    if not info.is_main:
        return None
    if epoch >= cfg.epochs and latest is not None:
        return ckpt.write_final(exp_dir, latest)
    return latest


def epoch_summary(record: dict, epochs: int) -> str:
    """One line for an epoch record of ``train.log.jsonl``: epoch, loss, accuracy, KL (when non-zero),
    validation EER (when computed), time and throughput."""
    text = f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, acc {record['acc']:.3f}"
    if record.get("kl"):
        text += f", kl {record['kl']:.4g}"
    if "valid" in record:
        text += f", valid EER {100 * record['valid']['eer']:.2f}%"
    return text + f" ({record['seconds']:.1f} s, {record['examples_per_s']:.0f} examples/s)"


def _epoch_stats(totals: dict, info) -> dict:
    """Example-weighted means of the epoch's step statistics over all ranks, and the throughput."""
    keys = sorted(totals)
    merged = dict(zip(keys, distributed.all_reduce_sum([totals[k] for k in keys], info)))
    n = max(merged.pop("n"), 1.0)
    seconds = merged.pop("seconds")
    out = {k: v / n for k, v in merged.items()}
    out["examples_per_s"] = n / seconds * info.world_size if seconds else 0.0
    return out


def _train_epoch(net, model, examples, objective, optimizer, scheduler, scaler, cfg, info, epoch, step, logbook,
                 progress) -> tuple[int, dict]:
    """One epoch of optimisation steps on this rank; returns the step count after it and summed stats."""
    net.train()
    loader = examples.loader(epoch)
    bar = show_progress(total=len(examples.sampler), desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                        disable=not (progress and info.is_main))
    totals = {"loss": 0.0, "ce": 0.0, "kl": 0.0, "acc": 0.0, "n": 0.0, "seconds": 0.0}
    window = {"loss": 0.0, "acc": 0.0, "n": 0}
    tic = time.perf_counter()
    for feats, labels in loader:
        feats = feats.to(info.device, non_blocking=True)
        labels = labels.to(info.device, non_blocking=True)
        with _autocast(info.device, cfg.amp):
            logits = net(feats)
        loss, stats = objective(model, logits.float(), labels, step)
        if not math.isfinite(stats["ce"]):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        step += 1
        n = len(labels)
        value = float(loss.detach())
        for key, v in (("loss", value), ("ce", stats["ce"]), ("kl", stats["kl"]), ("acc", stats["acc"])):
            totals[key] += v * n
        totals["n"] += n
        window["loss"] += value * n
        window["acc"] += stats["acc"] * n
        window["n"] += n
        if step % cfg.log_interval == 0 and info.is_main:
            logbook.write(kind="step", epoch=epoch, step=step, loss=window["loss"] / window["n"],
                          acc=window["acc"] / window["n"], ce=stats["ce"], kl=stats["kl"],
                          kl_weight=stats["kl_weight"], lr=lr)
            window = {"loss": 0.0, "acc": 0.0, "n": 0}
        bar.update(1)
        if not bar.disable:
            bar.set_postfix(loss=f"{value:.3f}", acc=f"{stats['acc']:.3f}", kl=f"{stats['kl']:.3g}", refresh=False)
    bar.close()
    totals["seconds"] = time.perf_counter() - tic
    return step, totals
