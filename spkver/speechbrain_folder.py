"""Pretrained SpeechBrain speaker-embedding folders as spkver models (``speechbrain:DIR`` wherever a model is
named: ``spkver extract --model``, ``spkver system build --model``, ``spkver train --init``).

A folder is what SpeechBrain's ``EncoderClassifier.from_hparams`` reads (e.g. a local copy of
``speechbrain/spkrec-ecapa-voxceleb``); nothing is downloaded::

    hyperparams.yaml          compute_features (Fbank), mean_var_norm (sentence mean normalisation),
                              embedding_model (ECAPA_TDNN or Xvector), mean_var_norm_emb, ...
    embedding_model.ckpt      state dict of embedding_model
    mean_var_norm_emb.ckpt    optional: the global mean (and std) of the embeddings

``hyperparams.yaml`` is read as data: its ``!ref`` references are resolved (``hyperpyyaml.resolve_references``)
and its ``!new:`` / ``!name:`` tags parsed, but no object it names is created. Only known classes are accepted
(:data:`NETWORKS`, ``speechbrain.lobes.features.Fbank``, ``speechbrain.processing.features.InputNormalization``
with ``norm_type: sentence``), their arguments mapped onto :class:`spkver.nn.ecapa.ECAPA` /
:class:`~spkver.nn.ecapa.SBXVector` with SpeechBrain's front end inside the model (``frontend``), so the model
takes the waveform (``FeatureConfig(kind="waveform")``) and gives ``encode_batch``'s embeddings (by default
without ``mean_var_norm_emb``, as ``encode_batch(normalize=False)``, the default, and SpeechBrain's own
verification do; ``normalize=True`` applies it). Files are read by these names in ``DIR``, whatever paths the
``pretrainer`` section names.

Anything else is refused with a :class:`~spkver.checkpoint.CheckpointError` naming the file and the key or
parameter: a missing file, an unknown class, an unsupported argument, a weight missing from or unexpected in
``embedding_model.ckpt`` (BatchNorm's ``num_batches_tracked`` counters excepted: older files may lack them and
they do not change an output), or one of another shape. The result is a complete checkpoint dict, never a
partial load (SpeechBrain's own ``Pretrainer`` only warns about missing or unexpected weights). The model's classifier (one placeholder class, ``speakers`` empty) is not part of the folder: it is
re-made for the training speakers when the folder initialises a model (``spkver train --init``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from spkver import __version__
from spkver.checkpoint import CHECKPOINT_FORMAT, SPEECHBRAIN_PREFIX as PREFIX, CheckpointError, is_speechbrain

HYPERPARAMS = "hyperparams.yaml"
EMBEDDING_MODEL = "embedding_model.ckpt"
EMBEDDING_NORM = "mean_var_norm_emb.ckpt"
FBANK = "speechbrain.lobes.features.Fbank"
INPUT_NORM = "speechbrain.processing.features.InputNormalization"
_ACTIVATIONS = {"torch.nn.ReLU": "relu", "torch.nn.LeakyReLU": "leaky_relu",
                "torch.nn.modules.activation.ReLU": "relu", "torch.nn.modules.activation.LeakyReLU": "leaky_relu"}


class _Tagged:
    """A ``!new:`` / ``!name:`` / ``!apply:`` ... node: the tag, the dotted name and its arguments."""

    def __init__(self, tag: str, target: str, args):
        self.tag, self.target, self.args = tag, target, args

    def __repr__(self) -> str:
        return f"!{self.tag}:{self.target}"


class _Loader(yaml.SafeLoader):
    """A safe loader that keeps HyperPyYAML's tags as :class:`_Tagged` values."""


def _construct_tagged(loader, suffix, node):
    tag, _, target = suffix.partition(":")
    if isinstance(node, yaml.MappingNode):
        args = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        args = loader.construct_sequence(node, deep=True)
    else:
        args = loader.construct_scalar(node)
    return _Tagged(tag, target, args)


_Loader.add_multi_constructor("!", _construct_tagged)


def _err(msg: str) -> CheckpointError:
    return CheckpointError(msg)


def folder_of(spec) -> Path:
    """``DIR`` of ``speechbrain:DIR`` (absolute)."""
    return Path(os.fspath(spec)[len(PREFIX):]).expanduser().resolve()


def files_of(spec) -> list[Path]:
    """The files of a folder that make its model (for fingerprints)."""
    folder = folder_of(spec)
    return [folder / name for name in (HYPERPARAMS, EMBEDDING_MODEL, EMBEDDING_NORM) if (folder / name).is_file()]


def read_hyperparams(path: Path) -> dict:
    """``hyperparams.yaml`` as data: references resolved, tags as :class:`_Tagged` (no object is created)."""
    try:
        from hyperpyyaml import resolve_references

        with open(path, encoding="utf-8") as fh:
            text = resolve_references(fh).getvalue()
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except Exception as err:  # ruamel / hyperpyyaml / yaml raise many types for a malformed file
        raise _err(f"{path}: cannot read it as HyperPyYAML ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise _err(f"{path}: expected a mapping at the top level")
    return data


def _module(params: dict, key: str, path: Path, required: bool = True):
    """The ``!new:`` node of ``key`` (in ``modules`` when the file has that section, else at the top level)."""
    modules = params.get("modules") if isinstance(params.get("modules"), dict) else {}
    node = modules.get(key, params.get(key))
    if node is None:
        if required:
            raise _err(f"{path}: no {key!r} defined (a SpeechBrain speaker-embedding model needs compute_features, "
                       "mean_var_norm and embedding_model)")
        return None
    if not isinstance(node, _Tagged) or node.tag != "new" or not isinstance(node.args, dict):
        raise _err(f"{path}: {key} must be a '!new:' object with named arguments, got {node!r}")
    return node


def _plain(value, key: str, where: str, path: Path):
    """``value`` if it is plain YAML data (numbers, strings, lists, mappings), else an error naming ``key``."""
    if isinstance(value, _Tagged):
        raise _err(f"{path}: {where} parameter {key!r} = {value!r} is not supported")
    if isinstance(value, dict):
        return {k: _plain(v, f"{key}.{k}", where, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, key, where, path) for v in value]
    return value


def _ecapa_kwargs(args: dict, path: Path) -> tuple[dict, int]:
    """spkver ``ECAPA`` arguments and the network's input size from ``ECAPA_TDNN``'s arguments."""
    names = {"channels": "channels", "kernel_sizes": "kernel_sizes", "dilations": "dilations",
             "attention_channels": "attention_channels", "lin_neurons": "embed_dim", "res2net_scale": "res2net_scale",
             "se_channels": "se_channels", "global_context": "global_context", "dropout": "dropout"}
    out, input_size = {}, None
    for key, value in args.items():
        if key == "input_size":
            input_size = value
        elif key == "device":
            continue
        elif key == "activation":
            if not (isinstance(value, _Tagged) and _ACTIVATIONS.get(value.target) == "relu"):
                raise _err(f"{path}: embedding_model parameter 'activation' = {value!r} is not supported "
                           "(ECAPA_TDNN with torch.nn.ReLU only)")
        elif key == "groups":
            if any(g != 1 for g in _plain(value, key, "embedding_model", path)):
                raise _err(f"{path}: embedding_model parameter 'groups' = {value!r} is not supported (all 1 only)")
        elif key in names:
            out[names[key]] = _plain(value, key, "embedding_model", path)
        else:
            raise _err(f"{path}: embedding_model parameter {key!r} is not supported")
    if input_size is None:
        raise _err(f"{path}: embedding_model has no 'input_size'")
    return out, input_size


def _xvector_kwargs(args: dict, path: Path) -> tuple[dict, int]:
    """spkver ``SBXVector`` arguments and the input size from SpeechBrain ``Xvector``'s arguments."""
    names = {"tdnn_channels": "channels", "tdnn_kernel_sizes": "kernel_sizes", "tdnn_dilations": "dilations",
             "lin_neurons": "embed_dim"}
    out, input_size, blocks = {}, 40, 5
    defaults = {"channels": [512, 512, 512, 512, 1500], "kernel_sizes": [5, 3, 3, 1, 1], "dilations": [1, 2, 3, 1, 1]}
    for key, value in args.items():
        if key == "in_channels":
            input_size = value
        elif key == "device":
            continue
        elif key == "tdnn_blocks":
            blocks = value
        elif key == "activation":
            if not (isinstance(value, _Tagged) and value.target in _ACTIVATIONS):
                raise _err(f"{path}: embedding_model parameter 'activation' = {value!r} is not supported "
                           f"(valid: {sorted(_ACTIVATIONS)})")
            out["activation"] = _ACTIVATIONS[value.target]
        elif key in names:
            out[names[key]] = _plain(value, key, "embedding_model", path)
        else:
            raise _err(f"{path}: embedding_model parameter {key!r} is not supported")
    for key, default in defaults.items():  # SpeechBrain uses the first tdnn_blocks entries of each list
        values = out.get(key, default)
        if not isinstance(values, list) or len(values) < blocks:
            raise _err(f"{path}: embedding_model needs {blocks} values of {key}, got {values!r}")
        out[key] = values[:blocks]
    return out, input_size


NETWORKS = {"speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN": ("ecapa_tdnn", _ecapa_kwargs),
            "speechbrain.lobes.models.Xvector.Xvector": ("sb_xvector", _xvector_kwargs)}


def _frontend(params: dict, path: Path) -> dict:
    fbank = _module(params, "compute_features", path)
    if fbank.target != FBANK:
        raise _err(f"{path}: compute_features is {fbank.target}, which spkver cannot load (supported: {FBANK})")
    norm = _module(params, "mean_var_norm", path, required=False)
    if norm is not None and norm.target != INPUT_NORM:
        raise _err(f"{path}: mean_var_norm is {norm.target}, which spkver cannot load (supported: {INPUT_NORM})")
    frontend = {"fbank": _plain(fbank.args, "compute_features", "compute_features", path),
                "mean_var_norm": None if norm is None else _plain(norm.args, "mean_var_norm", "mean_var_norm", path)}
    if frontend["fbank"].get("requires_grad"):
        raise _err(f"{path}: compute_features parameter 'requires_grad' (learnable filterbank) is not supported")
    frontend["fbank"].pop("requires_grad", None)
    if frontend["mean_var_norm"] is not None:
        frontend["mean_var_norm"].pop("device", None)
    return frontend


def _load_tensors(path: Path, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt or foreign files
        raise _err(f"{path}: not a readable {what} ({type(err).__name__}: {err})") from None


def _embedding_norm_kind(params: dict, hp_path: Path) -> str:
    """``"mean"`` or ``"mean_std"``: what ``mean_var_norm_emb`` (InputNormalization) divides by."""
    node = _module(params, "mean_var_norm_emb", hp_path, required=False)
    return "mean_std" if node is not None and node.args.get("std_norm", True) else "mean"


def _embedding_norm(folder: Path, kind: str, dim: int) -> dict:
    """The buffers ``embedding_mean`` / ``embedding_std`` (dim,) from ``mean_var_norm_emb.ckpt``."""
    path = folder / EMBEDDING_NORM
    if not path.is_file():
        raise _err(f"{path}: no such file (normalize=True needs mean_var_norm_emb.ckpt)")
    std_norm = kind == "mean_std"
    stats = _load_tensors(path, "embedding normalisation")
    if not isinstance(stats, dict) or not isinstance(stats.get("glob_mean"), torch.Tensor):
        raise _err(f"{path}: expected a dict with a 'glob_mean' tensor (SpeechBrain's InputNormalization)")
    out = {}
    for key, name in (("glob_mean", "embedding_mean"), ("glob_std", "embedding_std")):
        value = stats.get(key)
        if key == "glob_std" and not std_norm:
            value = torch.ones(dim)
        if not isinstance(value, torch.Tensor) or value.numel() != dim:
            raise _err(f"{path}: {key!r} has shape {tuple(getattr(value, 'shape', ()))}, the embeddings have "
                       f"dimension {dim}")
        out[name] = value.reshape(dim).float()
    return out


def read_folder(spec, normalize: bool = False) -> dict:
    """The spkver checkpoint dict (see :mod:`spkver.checkpoint`) of the SpeechBrain folder ``spec``
    (``speechbrain:DIR`` or ``DIR``). ``normalize``: apply ``mean_var_norm_emb.ckpt`` to the embeddings, as
    ``encode_batch(normalize=True)``; by default it is checked when present but not applied."""
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model

    folder = folder_of(spec) if is_speechbrain(spec) else Path(spec).expanduser().resolve()
    if not folder.is_dir():
        raise _err(f"{folder}: no such SpeechBrain model folder")
    hp_path, weights_path = folder / HYPERPARAMS, folder / EMBEDDING_MODEL
    for path in (hp_path, weights_path):
        if not path.is_file():
            raise _err(f"{path}: no such file (a SpeechBrain speaker-embedding folder has {HYPERPARAMS} and "
                       f"{EMBEDDING_MODEL})")
    params = read_hyperparams(hp_path)
    network = _module(params, "embedding_model", hp_path)
    if network.target not in NETWORKS:
        raise _err(f"{hp_path}: embedding_model is {network.target}, which spkver cannot load "
                   f"(supported: {', '.join(NETWORKS)})")
    name, convert = NETWORKS[network.target]
    kwargs, input_size = convert(network.args, hp_path)
    frontend = _frontend(params, hp_path)
    try:
        from spkver.nn.ecapa import SpeechBrainFrontEnd

        front = SpeechBrainFrontEnd(**frontend)
    except (TypeError, ValueError) as err:
        raise _err(f"{hp_path}: {err}") from None
    if input_size != front.out_dim:
        raise _err(f"{hp_path}: embedding_model input size {input_size!r} differs from the {front.out_dim} "
                   "features compute_features gives")
    kwargs = {**kwargs, "frontend": frontend, "feat_dim": 1, "num_classes": 1}
    if normalize:
        kwargs["embedding_norm"] = _embedding_norm_kind(params, hp_path)
    try:
        model = build_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise _err(f"{hp_path}: cannot build {network.target} from its parameters ({err})") from None
    if normalize:
        norm_state = _embedding_norm(folder, kwargs["embedding_norm"], model.embed_dim)
    else:
        norm_state = {}
        if (folder / EMBEDDING_NORM).is_file():  # present but not applied: it must at least be readable
            _load_tensors(folder / EMBEDDING_NORM, "embedding normalisation")

    state = _load_tensors(weights_path, "state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _err(f"{weights_path}: expected a state dict (parameter name -> tensor)")
    own = model.embedding_model.state_dict()
    unexpected = sorted(set(state) - set(own))
    # BatchNorm's step counter is the one thing older SpeechBrain files may lack; it does not touch the outputs
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
    if unexpected or missing:
        raise _err(f"{weights_path}: does not fit {network.target} as {HYPERPARAMS} describes it: "
                   + "; ".join(part for part in (f"unexpected parameter(s) {unexpected[:5]}" if unexpected else "",
                                                 f"missing parameter(s) {missing[:5]}" if missing else "") if part))
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise _err(f"{weights_path}: parameter {key!r} has shape {tuple(value.shape)}, {HYPERPARAMS}'s "
                       f"{network.target} needs {tuple(own[key].shape)}")
    model.embedding_model.load_state_dict({**own, **state})
    for key, value in norm_state.items():
        getattr(model, key).copy_(value)
    features = FeatureConfig(kind="waveform", sample_rate=front.sample_rate)
    return {"format": CHECKPOINT_FORMAT, "version": __version__, "model_name": name, "model_kwargs": kwargs,
            "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "features": features.to_dict(), "speakers": [], "epoch": 0, "step": 0,
            "path": f"{PREFIX}{folder}", "source": {"speechbrain": str(folder)}}
