"""Typed training configuration: one dataclass per component, loaded from YAML with unknown keys rejected.

A configuration file has top-level training fields (:class:`TrainConfig`) and five sections whose keys map
one to one onto a component::

    epochs: 10
    seed: 0
    amp: null            # "bf16" | "fp16" | null
    features:            # spkver.features.FeatureConfig
      kind: mfcc
      num_ceps: 30
    model:               # name from spkver.nn.tdnn.MODELS; the other keys are that constructor's arguments
      name: xvector
      embed_dim: 512
    data:                # DataConfig: random chunks, speaker-balanced sampling, caching, augmentation
      chunk_min_seconds: 2.0
      chunk_max_seconds: 4.0
    optim:               # OptimConfig: optimiser, learning-rate schedule, gradient clipping
      name: sgd
      lr: 0.05
    loss:                # LossConfig: cross-entropy (the default) or additive angular margin
      name: aam
      margin: 0.2

The model's input dimension and class count are not configured: they come from the features and from the
training speakers; nor is its classifier, which the loss decides (cosine for ``aam``, else linear). A ``null``
model argument is left out (the constructor's default applies), so a file can unset an argument of its base's
model (``stats_channels: null`` when an ECAPA configuration extends an x-vector one).

A file may extend another and state only what differs: a top-level ``base: OTHER.yaml`` (a path relative to
the file that names it; the base may have a base in turn) is read first, then the file's own keys are merged
into it key by key (nested sections merged, any other value, lists included, replaced). :func:`load_config`
resolves the bases, applies ``KEY=VALUE`` overrides and validates; :func:`save_config` writes the resolved
configuration (every default filled in, no ``base``) so that an experiment dir documents exactly what ran.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from scoring.io import atomic_write_text
from spkver.features import FeatureConfig

# constructor arguments filled in by the trainer, never by the configuration
DERIVED_MODEL_ARGS = ("feat_dim", "num_classes", "classifier")


class ConfigError(ValueError):
    """An invalid configuration; the message names the file (when known), the section and the key."""


def _where(source, section: str) -> str:
    parts = [str(source)] if source is not None else []
    if section:
        parts.append(f"section {section!r}")
    return ": ".join(parts) + ": " if parts else ""


def _check_type(value, hint, name: str, prefix: str):
    """Check ``value`` against a simple type hint; ints are accepted (and converted) for floats."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, name, prefix)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{prefix}{name}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{prefix}{name} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{prefix}{name} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_check_type(v, item, name, prefix) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{prefix}{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{prefix}{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{prefix}{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{prefix}{name} must be a string, got {value!r}")
        return value
    return value


def _from_mapping(cls, data, source=None, section: str = ""):
    """Build dataclass ``cls`` from a mapping: unknown keys rejected (listing the valid ones), types checked."""
    prefix = _where(source, section)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}expected a mapping of keys to values, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}unknown key(s) {unknown}; valid keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _check_type(value, hints[key], key, prefix) for key, value in data.items()}
    try:
        return cls(**kwargs)  # the values are checked by the dataclass's own __post_init__
    except ValueError as err:
        raise ConfigError(f"{prefix}{err}") from None


def _constructor_arguments(cls) -> set | None:
    """Keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the class hierarchy (a subclass that
    passes them on to its base); None when they end in an open ``**kwargs``."""
    names: set = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return None


@dataclass
class ModelConfig:
    """A model from the ``spkver.nn.tdnn.MODELS`` registry and its constructor arguments.

    ``kwargs`` maps one to one onto the constructor's keyword arguments, except ``feat_dim``, ``num_classes``
    and ``classifier``, which the trainer derives from the feature configuration, the training speakers and
    the loss. Arguments set to ``None`` are dropped (the constructor's default applies).
    In YAML the arguments sit beside ``name`` (``model: {name: xvector, embed_dim: 256}``).
    """

    name: str = "xvector"
    kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Check ``name`` against the registry and ``kwargs`` against the constructor's signature."""
        from spkver.nn.tdnn import MODELS

        if self.name not in MODELS:
            raise ConfigError(f"unknown model {self.name!r}; valid names: {sorted(MODELS)}")
        derived = sorted(set(self.kwargs) & set(DERIVED_MODEL_ARGS))
        if derived:
            raise ConfigError(f"model argument(s) {derived} are derived from the data and features; "
                              f"remove them from the configuration")
        valid = _constructor_arguments(MODELS[self.name])
        if valid is None:
            return
        valid = sorted(n for n in valid if n not in DERIVED_MODEL_ARGS)
        unknown = sorted(set(self.kwargs) - set(valid))
        if unknown:
            raise ConfigError(f"unknown argument(s) {unknown} for model {self.name!r}; valid: {valid}")

    def to_dict(self) -> dict:
        return {"name": self.name, **self.kwargs}

    @classmethod
    def from_dict(cls, data, source=None) -> "ModelConfig":
        prefix = _where(source, "model")
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}expected a mapping, got {type(data).__name__}")
        data = dict(data)
        name = data.pop("name", cls.name)
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}name must be a string, got {name!r}")
        cfg = cls(name=name, kwargs={k: v for k, v in data.items() if v is not None})
        try:
            cfg.validate()
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from None
        return cfg


@dataclass
class DataConfig:
    """Training examples: random fixed-length chunks of training utterances (see ``spkver.data.examples``).

    Each batch draws one chunk length uniformly in ``[chunk_min_seconds, chunk_max_seconds]`` (as Kaldi's
    x-vector egs do per archive), so a batch needs no padding. ``speaker_balanced`` picks a speaker uniformly
    and then one of its utterances (otherwise utterances are drawn uniformly). ``examples_per_epoch`` counts
    chunks over all processes; it is also N_train in the KL term of the loss.

    Without ``augment`` and with ``precompute`` (the default) features are computed once per utterance into a
    cache (``cache_dir``, default ``EXP_DIR/feats``) and chunks are cut from it. With ``augment`` (keyword
    arguments of ``spkver.data.augment.Augmenter``: noise/RIR paths and probabilities) or ``precompute: false``
    each chunk is read as audio, augmented (with probability ``augment_prob``) and turned into features in
    ``num_workers`` loader processes. ``augment`` keys (its sample rate is the features', its seed the run's):

    - ``musan``, ``rir``: MUSAN and RIR folders (optional);
    - ``kinds``: the kinds drawn from (``reverb``, ``noise``, ``music``, ``babble``, ``colored``,
      ``telephone``; default: every kind whose source is configured);
    - ``noise_snr``, ``music_snr``, ``babble_snr``, ``colored_snr``: ``[low, high]`` dB; ``babble_speakers``:
      ``[min, max]`` talkers;
    - ``colored_beta``, ``colored_low_hz``, ``colored_high_hz``: ranges of the coloured noise's spectral slope
      (``1 / f^beta``) and band edges (Hz);
    - ``babble_pool``: babble from other training speakers when there is no MUSAN speech: ``true`` or
      ``{utts_per_speaker: 3, seconds: 3.0, seed: 0}`` (``spkver.data.babble.BabblePool.build``), cached in
      ``CACHE_DIR/babble``;
    - ``simulate_rir``: simulated rooms for ``reverb``: ``true`` or ``{count: 100, rt60: [0.2, 0.8], room:
      [[3, 10], [3, 10], [2.5, 4]], seed: 0, highpass: true}`` (``spkver.data.rir.simulate_rirs``), made once in
      ``rir_cache`` (default ``CACHE_DIR/rirs``), one folder per settings.

    ``speed_perturb``: speed factors (e.g. ``[0.9, 1.1]``; null or ``[]``: off), each adding a copy of every
    training utterance as new speakers (``sp0.9-SPK``), so the classifier's classes grow with them; factors in
    (0, 3], not 1, no repeats; cached, each factor gets its own feature cache. ``spec_augment``: masks on
    each chunk's features (``spkver.data.specaug.SpecAugment``: ``time_masks``, ``time_width: [min, max]``
    frames, ``freq_masks``, ``freq_width: [min, max]`` bins; masked values set to 0, the mean after CMN), in
    the cached and the on-the-fly path alike; null: off. ``audio_cache`` (on the fly only): decode every
    training utterance once into a float16 waveform cache under ``cache_dir`` (2 bytes per sample: 360 MB for
    so762's 3.1 hours) and cut chunks from it, rather than decode a compressed file for every chunk (most of
    the on-the-fly loader's time).
    """

    chunk_min_seconds: float = 2.0
    chunk_max_seconds: float = 4.0
    speaker_balanced: bool = True
    examples_per_epoch: int = 20000
    batch_size: int = 64
    num_workers: int = 2
    precompute: bool = True
    cache_dir: Optional[str] = None
    cache_dtype: Literal["float32", "float16"] = "float32"
    augment: Optional[dict] = None
    augment_prob: float = 0.5
    speed_perturb: Optional[list[float]] = None
    spec_augment: Optional[dict] = None
    audio_cache: bool = False

    def __post_init__(self):
        if not 0 < self.chunk_min_seconds <= self.chunk_max_seconds:
            raise ConfigError(f"need 0 < chunk_min_seconds <= chunk_max_seconds, got "
                              f"{self.chunk_min_seconds} and {self.chunk_max_seconds}")
        for name in ("examples_per_epoch", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.examples_per_epoch < self.batch_size:
            raise ConfigError(f"examples_per_epoch ({self.examples_per_epoch}) is smaller than one batch "
                              f"({self.batch_size})")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.augment_prob <= 1.0:
            raise ConfigError(f"augment_prob must lie in [0, 1], got {self.augment_prob}")
        if self.augment:
            self._check_augment()
        if self.speed_perturb:
            factors = [float(f) for f in self.speed_perturb]
            bad = [f for f in factors if not 0 < f <= 3.0 or f == 1.0]
            if bad or len(set(factors)) != len(factors):
                raise ConfigError(f"speed_perturb must list distinct factors in (0, 3] other than 1 (e.g. "
                                  f"[0.9, 1.1]), got {self.speed_perturb}")
        if self.spec_augment is not None:
            from spkver.data.specaug import SpecAugment

            params = set(inspect.signature(SpecAugment).parameters)
            unknown = sorted(set(self.spec_augment) - params)
            if unknown:
                raise ConfigError(f"unknown spec_augment key(s) {unknown}; valid: {sorted(params)}")
            try:
                SpecAugment(**self.spec_augment)
            except ValueError as err:
                raise ConfigError(str(err)) from None

    def _check_augment(self) -> None:
        """``augment`` against the ``Augmenter``'s signature, and its nested settings against theirs."""
        from spkver.data.augment import Augmenter

        params = inspect.signature(Augmenter).parameters
        unknown = sorted(set(self.augment) - set(params) | ({"sample_rate", "seed"} & set(self.augment)))
        if unknown:
            valid = sorted(set(params) - {"sample_rate", "seed"})
            raise ConfigError(f"unknown augment key(s) {unknown}; valid: {valid}")
        from spkver.data.babble import BabblePool
        from spkver.data.rir import check_settings

        for key, func in (("babble_pool", BabblePool.build), ("simulate_rir", check_settings)):
            value = self.augment.get(key)
            if value is None or isinstance(value, bool):
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"augment.{key} must be true, false, null or a mapping of settings, got {value!r}")
            allowed = set(inspect.signature(func).parameters) - {"data", "sample_rate", "folder", "utts"}
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ConfigError(f"unknown augment.{key} key(s) {unknown}; valid: {sorted(allowed)}")
        if isinstance(self.augment.get("simulate_rir"), dict):
            try:
                check_settings(**self.augment["simulate_rir"])
            except ValueError as err:
                raise ConfigError(f"augment.simulate_rir: {err}") from None

    @property
    def on_the_fly(self) -> bool:
        """True when chunks are read as audio and featurised per example (augmentation or no cache)."""
        return bool(self.augment) or not self.precompute


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule and gradient clipping.

    The schedule is a function of the optimisation step: a linear warm-up from 0 over ``warmup_steps``, then
    ``constant``, ``cosine`` (half a cosine from ``lr`` down to ``min_lr`` at the last step; Loshchilov &
    Hutter 2017, without restarts) or ``step`` (``lr * gamma ** (epoch // step_epochs)``).
    ``grad_clip`` is the maximum global L2 norm of the gradients (null: no clipping).

    Bayesian layers: the posterior's ``rho`` parameters (``sigma = softplus(rho)``) get no weight decay (their
    regulariser is the KL term; decay would pull sigma towards softplus(0) = 0.69) and a learning rate of
    ``lr * rho_lr_scale``: with Adam each step moves a parameter by about ``lr`` at most, so in a short run
    sigma stays near its initial value unless its rate is raised.
    """

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    step_epochs: int = 10
    gamma: float = 0.1
    grad_clip: Optional[float] = 5.0
    rho_lr_scale: float = 1.0

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.rho_lr_scale <= 0:
            raise ConfigError(f"rho_lr_scale must be positive, got {self.rho_lr_scale}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.min_lr < 0:
            raise ConfigError("weight_decay, warmup_steps and min_lr must be >= 0")
        if self.step_epochs <= 0:
            raise ConfigError(f"step_epochs must be positive, got {self.step_epochs}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must have two values, got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or null, got {self.grad_clip}")


@dataclass
class LossConfig:
    """The classification loss: ``ce`` (cross-entropy on a linear classifier) or ``aam`` (additive angular
    margin softmax on a cosine classifier: ``scale * cos(theta_target + m)``, ``m`` rising linearly from 0 to
    ``margin`` over ``margin_ramp_steps`` optimisation steps; see ``spkver.nn.objective``). ``margin``, ``scale``
    and ``margin_ramp_steps`` apply to ``aam`` only."""

    name: Literal["ce", "aam"] = "ce"
    margin: float = 0.2
    scale: float = 30.0
    margin_ramp_steps: int = 0

    def __post_init__(self):
        if not 0.0 <= self.margin < 1.5:
            raise ConfigError(f"margin must lie in [0, 1.5) (radians), got {self.margin}")
        if self.scale <= 0:
            raise ConfigError(f"scale must be positive, got {self.scale}")
        if self.margin_ramp_steps < 0:
            raise ConfigError(f"margin_ramp_steps must be >= 0, got {self.margin_ramp_steps}")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data: the five sections plus the loop's own settings.

    ``amp``: ``"bf16"`` autocasts to bfloat16 (CUDA, or CPU where supported), ``"fp16"`` to float16 with a
    gradient scaler (CUDA only), null trains in float32. ``kl_weight`` and ``kl_warmup_steps`` go to
    ``XVectorObjective`` (loss = CE + kl_weight * KL / N_train, N_train = ``data.examples_per_epoch``).
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``; under torchrun each
    process uses ``cuda:LOCAL_RANK``. ``validate_every``: epochs between validation EERs (0: never; only when
    dev data and trials are given). ``keep_checkpoints``: per-epoch checkpoints kept (0: all).
    """

    epochs: int = 10
    seed: int = 0
    amp: Optional[Literal["bf16", "fp16"]] = None
    kl_weight: float = 1.0
    kl_warmup_steps: int = 0
    device: str = "auto"
    log_interval: int = 50
    validate_every: int = 1
    keep_checkpoints: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.kl_weight < 0 or self.kl_warmup_steps < 0:
            raise ConfigError("kl_weight and kl_warmup_steps must be >= 0")
        if self.log_interval <= 0:
            raise ConfigError(f"log_interval must be positive, got {self.log_interval}")
        if self.validate_every < 0 or self.keep_checkpoints < 0:
            raise ConfigError("validate_every and keep_checkpoints must be >= 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-ready) of the resolved configuration."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("features", "model", "data", "optim", "loss")}
        out["features"] = self.features.to_dict()
        out["model"] = self.model.to_dict()
        out["data"] = dataclasses.asdict(self.data)
        out["optim"] = dataclasses.asdict(self.optim)
        out["loss"] = dataclasses.asdict(self.loss)
        return out

    @classmethod
    def from_dict(cls, data, source=None) -> "TrainConfig":
        """Build from a nested dict; ``source`` (a file name) is named in every error."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{_where(source, '')}expected a mapping at the top level")
        data = dict(data)
        sections = {}
        if "features" in data:
            sections["features"] = _from_mapping(FeatureConfig, data.pop("features"), source, "features")
        if "model" in data:
            sections["model"] = ModelConfig.from_dict(data.pop("model"), source)
        if "data" in data:
            sections["data"] = _from_mapping(DataConfig, data.pop("data"), source, "data")
        if "optim" in data:
            sections["optim"] = _from_mapping(OptimConfig, data.pop("optim"), source, "optim")
        if "loss" in data:
            sections["loss"] = _from_mapping(LossConfig, data.pop("loss"), source, "loss")
        cfg = _from_mapping(cls, data, source, "")
        return dataclasses.replace(cfg, **sections) if sections else cfg


def apply_overrides(config: dict, overrides) -> dict:
    """``config`` (a mapping read from YAML) with each ``"a.b.c=value"`` of ``overrides`` set, the value read
    as YAML (``3``, ``0.5``, ``true``, ``null``, ``[1, 2]``, a string); missing sections are created. The
    input is not modified. Raises ``ValueError`` naming the override at fault."""
    out = dict(config)
    for item in overrides:
        key, sep, text = str(item).partition("=")
        parts = key.split(".")
        if not sep or not key or any(not part for part in parts):
            raise ValueError(f"override {item!r}: expected KEY=VALUE with a dotted KEY (e.g. model.channels=256)")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: invalid YAML value ({err})") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return out


BASE_KEY = "base"


def merge_config(base: dict, child: dict) -> dict:
    """``base`` updated by ``child``, key by key: where both values are mappings they are merged the same way,
    otherwise (scalars, lists, null) the child's value replaces the base's. The inputs are not modified."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def _read_mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _base_chain(path: Path) -> list[tuple[Path, dict]]:
    """``[(file, its own keys without base), ...]`` from ``path`` down to the file that has no base."""
    chain: list[tuple[Path, dict]] = []
    seen: list[Path] = []
    while True:
        real = path.resolve()
        if real in seen:
            files = " -> ".join(str(p) for p in [*(p for p, _ in chain), path])
            raise ConfigError(f"configuration bases form a cycle: {files}")
        seen.append(real)
        data = dict(_read_mapping(path))
        base = data.pop(BASE_KEY, None)
        chain.append((path, data))
        if base is None:
            return chain
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: {BASE_KEY} must be the path of a YAML file, got {base!r}")
        parent = Path(os.path.normpath(path.parent / base))
        if not parent.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} {base}: no such configuration file: {parent}")
        path = parent


def _merge_chain(chain: list[tuple[Path, dict]]) -> dict:
    data: dict = {}
    for _, own in reversed(chain):
        data = merge_config(data, own)
    return data


def resolve_yaml(path: str | os.PathLike) -> dict:
    """The mapping of YAML file ``path`` with its ``base`` chain resolved (:func:`merge_config`, the file's
    keys over its base's), not yet validated. Raises :class:`ConfigError` naming the files of a cycle or a
    missing base, ``FileNotFoundError`` for a missing ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such configuration file: {path}")
    return _merge_chain(_base_chain(path))


def _problem(data: dict) -> str | None:
    """The validation error of ``data`` without a file name, or None when it is valid."""
    try:
        TrainConfig.from_dict(data)
    except ConfigError as err:
        return str(err)
    return None


def load_config(path: str | os.PathLike, overrides=()) -> TrainConfig:
    """Read a YAML training configuration: its bases resolved (:func:`resolve_yaml`), then the optional
    ``KEY=VALUE`` overrides (:func:`apply_overrides`) applied, then validated. Errors name the file, the
    section and the key at fault; a bad key or value that came from a base names that base."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such configuration file: {path}")
    chain = _base_chain(path)
    resolved = data = _merge_chain(chain)
    overrides = list(overrides)
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None
    try:
        return TrainConfig.from_dict(data, source=path)
    except ConfigError:
        if len(chain) == 1:
            raise
    # name the deepest base that already has the problem (none when an override or the file itself caused it)
    problem = _problem(data)
    origin = path
    if not overrides or _problem(resolved) == problem:
        for i in range(1, len(chain)):
            if _problem(_merge_chain(chain[i:])) != problem:
                break
            origin = chain[i][0]
    if origin == path:
        raise ConfigError(f"{path}: {problem}")
    raise ConfigError(f"{origin}: {problem} (a base of {path})")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    """Write the resolved configuration as YAML, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def as_config(cfg: TrainConfig | str | os.PathLike) -> TrainConfig:
    """Accept a :class:`TrainConfig` or the path of a YAML file."""
    if isinstance(cfg, TrainConfig):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg)
    raise TypeError(f"expected a TrainConfig or a YAML path, got {type(cfg).__name__}")
