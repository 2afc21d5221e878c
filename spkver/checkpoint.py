"""Self-describing checkpoints: the weights travel with everything needed to rebuild and use the model.

A checkpoint is a ``torch.save`` dict loadable with ``weights_only=True`` (no pickled code)::

    format          CHECKPOINT_FORMAT
    version         spkver.__version__ that wrote it
    model_name      key of spkver.nn.tdnn.MODELS
    model_kwargs    constructor arguments, including feat_dim and num_classes
    model_state     state_dict of the (unwrapped) model; without the keys under its ``head_prefixes`` when
                    ``head`` is False
    head            False for an embedding-only extractor (no classifier of the training speakers); absent: True
    features        FeatureConfig.to_dict() the model was trained on
    speakers        training speaker ids; class k is speakers[k]
    epoch, step     completed epochs and optimisation steps
    config          resolved TrainConfig.to_dict() (optional)
    optimizer, scheduler, scaler, sampler, rng     training state (absent from a final, model-only file)

Layout in an experiment dir: ``checkpoints/epoch_NNN.pt`` after every epoch, ``latest.pt`` a relative symlink
(a copy where links are not possible) to the newest one, ``final.pt`` the model-only file written when training
ends. :func:`load_model` accepts a file or an experiment dir and needs nothing else.

A pretrained SpeechBrain speaker-embedding folder is named ``speechbrain:DIR`` (:mod:`spkver.speechbrain_folder`):
:func:`load_checkpoint` and :func:`load_model` read it as a model-only checkpoint, :func:`resolve_checkpoint`
gives back ``speechbrain:/absolute/DIR``, :func:`fingerprint` identifies it by its files and :func:`as_file`
writes it out as a spkver checkpoint where a file is needed (a system's ``extractors/NAME.pt``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from scoring.io import atomic_write
from spkver import __version__

CHECKPOINT_FORMAT = 1
SPEECHBRAIN_PREFIX = "speechbrain:"  # a pretrained SpeechBrain folder where a model is named
REQUIRED_KEYS = ("format", "model_name", "model_kwargs", "model_state", "features", "speakers")
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint or experiment dir that cannot be used; the message names the file."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """Python, numpy (legacy global), torch CPU and CUDA generator states, in ``weights_only``-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _as_tuple(obj):
    """Lists back to the nested tuples ``random.setstate`` wants."""
    return tuple(_as_tuple(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


# -------------------------------------------------------------------------------------------------- save
def _atomic_save(obj: dict, path: Path) -> Path:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, model_name: str, model_kwargs: dict,
                    features: dict, speakers: list[str], epoch: int = 0, step: int = 0,
                    config: dict | None = None, optimizer=None, scheduler=None, scaler=None,
                    sampler: dict | None = None, rng: bool = True, head: bool = True) -> Path:
    """Write a checkpoint atomically (temp file + ``os.replace``); see the module docstring for the keys.

    ``model`` may be DDP-wrapped. Optimiser, scheduler, scaler and sampler states are stored when given;
    ``rng=True`` stores the RNG states so that a resumed run continues exactly. ``head=False`` writes an
    embedding-only extractor: the layers between the embedding and the training speakers' logits are left out.
    """
    model = unwrap(model)
    if not head and not hasattr(model, "embedding_state"):
        raise ValueError(f"save_checkpoint: {type(model).__name__} cannot be saved without its head")
    state = model.embedding_state() if not head else model.state_dict()
    state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "model_name": str(model_name),
        "model_kwargs": dict(model_kwargs),
        "model_state": state,
        "features": dict(features),
        "speakers": [str(s) for s in speakers],
        "epoch": int(epoch),
        "step": int(step),
    }
    if not head:
        obj["head"] = False
    if config is not None:
        obj["config"] = config
    for key, value in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if value is not None:
            obj[key] = value.state_dict()
    if sampler is not None:
        obj["sampler"] = dict(sampler)
    if rng:
        obj["rng"] = capture_rng_state()
    return _atomic_save(obj, Path(path))


def epoch_path(exp_dir: str | os.PathLike, epoch: int) -> Path:
    """``EXP_DIR/checkpoints/epoch_NNN.pt``."""
    return Path(exp_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt"


def list_checkpoints(exp_dir: str | os.PathLike) -> list[Path]:
    """Per-epoch checkpoints of an experiment dir, oldest first."""
    folder = Path(exp_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def link_latest(exp_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Point ``EXP_DIR/latest.pt`` at ``target`` (relative symlink, replaced atomically; a copy if needed)."""
    # Not atomic_write: this replaces a symbolic link (os.symlink needs a free name), not a file's contents.
    exp_dir = Path(exp_dir)
    latest = exp_dir / "latest.pt"
    tmp = exp_dir / f".latest.pt.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(Path(target), exp_dir), tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, latest)
    return latest


def prune_checkpoints(exp_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` per-epoch checkpoints (``keep=0`` keeps all)."""
    if keep > 0:
        for path in list_checkpoints(exp_dir)[:-keep]:
            path.unlink()


def write_final(exp_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """``EXP_DIR/final.pt``: the model-only part of ``checkpoint`` (no optimiser or RNG state)."""
    obj = load_checkpoint(checkpoint)
    for key in ("optimizer", "scheduler", "scaler", "sampler", "rng"):
        obj.pop(key, None)
    return _atomic_save(obj, Path(exp_dir) / "final.pt")


# -------------------------------------------------------------------------------------------------- load
def is_speechbrain(spec) -> bool:
    """True for a ``speechbrain:DIR`` model reference."""
    return isinstance(spec, (str, os.PathLike)) and os.fspath(spec).startswith(SPEECHBRAIN_PREFIX)


def resolve_checkpoint(path_or_exp_dir: str | os.PathLike) -> Path | str:
    """A checkpoint file as given, or for an experiment dir its ``final.pt``, ``latest.pt`` or newest epoch;
    ``speechbrain:DIR`` as ``speechbrain:/absolute/DIR`` (a string; the folder must exist)."""
    if is_speechbrain(path_or_exp_dir):
        from spkver.speechbrain_folder import folder_of

        folder = folder_of(path_or_exp_dir)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: no such SpeechBrain model folder")
        return f"{SPEECHBRAIN_PREFIX}{folder}"
    path = Path(path_or_exp_dir)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("final.pt", "latest.pt"):
            if (path / name).is_file():
                return path / name
        epochs = list_checkpoints(path)
        if epochs:
            return epochs[-1]
        raise CheckpointError(f"{path}: experiment dir holds no final.pt, latest.pt or checkpoints/epoch_*.pt")
    raise CheckpointError(f"{path}: no such checkpoint file or experiment dir")


def load_checkpoint(path_or_exp_dir: str | os.PathLike, map_location="cpu") -> dict:
    """Load and check a checkpoint dict (``weights_only=True``: tensors and plain containers only); a
    ``speechbrain:DIR`` folder is converted (:func:`spkver.speechbrain_folder.read_folder`)."""
    if is_speechbrain(path_or_exp_dir):
        from spkver.speechbrain_folder import read_folder

        return read_folder(resolve_checkpoint(path_or_exp_dir))
    path = resolve_checkpoint(path_or_exp_dir)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a spkver checkpoint (got {type(obj).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: not a spkver checkpoint, missing {missing}")
    if obj["format"] > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {obj['format']} is newer than this spkver "
                              f"({__version__}) understands; upgrade spkver")
    if obj.get("version") != __version__:
        warnings.warn(f"{path}: written by spkver {obj.get('version')}, loading with {__version__}",
                      stacklevel=2)
    obj["path"] = str(path)
    return obj


def fingerprint(spec) -> dict:
    """What identifies a model's weights for reusing its results: ``{"model": absolute path, "model_mtime":
    modification time}`` of a checkpoint file, or of a SpeechBrain folder (its newest file)."""
    spec = resolve_checkpoint(spec)
    if is_speechbrain(spec):
        from spkver.speechbrain_folder import files_of

        return {"model": spec, "model_mtime": max(os.path.getmtime(f) for f in files_of(spec))}
    return {"model": str(spec.resolve()), "model_mtime": os.path.getmtime(spec)}


def as_file(spec, out: str | os.PathLike) -> Path:
    """The checkpoint file of ``spec``: a file or experiment dir resolved as it is, a SpeechBrain folder written
    to ``out`` as a model-only spkver checkpoint (the same weights, model name and arguments, features)."""
    spec = resolve_checkpoint(spec)
    if not is_speechbrain(spec):
        return spec
    obj = load_checkpoint(spec)
    obj = {k: v for k, v in obj.items() if k != "path"}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return _atomic_save(obj, Path(out))


def load_model(path_or_exp_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a trained model from a checkpoint file, an experiment dir or a ``speechbrain:DIR`` folder.

    Returns:
        ``(model, feature_cfg, meta)``: the model in eval mode on ``device``, the ``FeatureConfig`` it was
        trained with, and ``meta`` (``model_name``, ``model_kwargs``, ``speakers``, ``epoch``, ``step``,
        ``version``, ``path``, ``config`` when stored).
    """
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model

    obj = load_checkpoint(path_or_exp_dir)
    path = obj["path"]
    try:
        model = build_model(obj["model_name"], **obj["model_kwargs"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild model {obj['model_name']!r} ({err})") from None
    try:
        if obj.get("head", True):
            model.load_state_dict(obj["model_state"])
        else:
            model.load_embedding_state(obj["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model {obj['model_name']!r} ({err})") from None
    feature_cfg = FeatureConfig.from_dict(obj["features"])
    meta = {k: obj[k] for k in ("model_name", "model_kwargs", "speakers", "epoch", "step", "version", "path",
                                "config") if k in obj}
    return model.to(device).eval(), feature_cfg, meta
