"""Bayesian layers for any network: :func:`bayesianize` swaps a model's ``nn.Linear`` / ``nn.Conv1d`` layers
for :class:`~spkver.nn.bayes.BayesLinear` / :class:`~spkver.nn.bayes.BayesConv1d` with their means at the
deterministic weights (Bayes by Backprop, Blundell et al. 2015, started from a trained network as in
"variational fine-tuning").

Layers are replaced where they sit, so a wrapper that calls its inner layer keeps working: SpeechBrain's
``speechbrain.nnet.CNN.Conv1d`` (its ``.conv``, with the wrapper doing the (batch, time, channels) transposes
and the "same" padding) and ``speechbrain.nnet.linear.Linear`` (its ``.w``) become Bayesian through their inner
torch layer. State-dict keys change only for the replaced layers: ``NAME.weight`` / ``NAME.bias`` become
``NAME.weight_mu`` / ``NAME.weight_rho`` / ``NAME.bias_mu`` / ``NAME.bias_rho``;
:func:`init_from_deterministic` maps a deterministic state dict onto a bayesianized model by that rule.

Selecting layers (``include``): ``None`` takes every ``nn.Linear`` / ``nn.Conv1d`` (exactly those types:
subclasses such as attention's output projection, or weight-normalised layers, are left alone); otherwise a
list of ``fnmatch`` patterns over qualified module names (``model.named_modules()``), a pattern selecting the
layers it names and every layer inside a module it names (``"frame_1"``, ``"embedding_model.blocks.*"``,
``"*.conv"``). A pattern that selects no layer is an error naming it.

>>> import torch.nn as nn
>>> net = bayesianize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), include=["2"], init_sigma=0.01)
>>> type(net[0]).__name__, type(net[2]).__name__, sorted(net[2].state_dict())
('Linear', 'BayesLinear', ['bias_mu', 'bias_rho', 'weight_mu', 'weight_rho'])
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from spkver.nn.bayes import (SAMPLING_MODES, BayesConv1d, BayesianLayer, BayesLinear, GaussianPrior, make_prior)
from spkver.nn.reparam import inverse_softplus

__all__ = ["bayesianize", "select_layers", "replaceable_layers", "bayesian_layer_names", "init_from_deterministic",
           "as_prior"]

_BAYES_TYPE = {nn.Linear: BayesLinear, nn.Conv1d: BayesConv1d}


def as_prior(prior=None):
    """A prior object from ``None`` (``N(0, 1)``), a name (``"gaussian"``, ``"mixture"``), a mapping
    ``{"name": ..., **parameters}`` or a prior object itself (returned as it is)."""
    if prior is None:
        return GaussianPrior(1.0)
    if isinstance(prior, str):
        return make_prior(prior)
    if isinstance(prior, dict):
        params = dict(prior)
        return make_prior(params.pop("name", "gaussian"), **params)
    if not (hasattr(prior, "log_prob") and hasattr(prior, "closed_form")):
        raise TypeError(f"prior must be None, a name, a mapping or a prior object, got {type(prior).__name__}")
    return prior


def replaceable_layers(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Linear`` / ``nn.Conv1d`` modules inside ``model`` (exact types), in
    registration order."""
    return [name for name, module in model.named_modules() if name and type(module) in _BAYES_TYPE]


def bayesian_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the Bayesian layers inside ``model``, in registration order."""
    return [name for name, module in model.named_modules() if isinstance(module, BayesianLayer)]


def select_layers(model: nn.Module, include=None) -> list[str]:
    """The names of the replaceable layers that ``include`` selects (see the module docstring).

    Raises ``ValueError`` naming every pattern that selects no ``nn.Linear`` / ``nn.Conv1d`` layer.
    """
    layers = replaceable_layers(model)
    if include is None:
        return layers
    patterns = [include] if isinstance(include, str) else list(include)
    if not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"include must be a list of non-empty name patterns, got {include!r}")
    modules = [name for name, _ in model.named_modules() if name]
    chosen, unknown = set(), []
    for pattern in patterns:
        named = [m for m in modules if fnmatchcase(m, pattern)]
        hits = {layer for layer in layers if any(layer == m or layer.startswith(m + ".") for m in named)}
        if not hits:
            unknown.append(pattern)
        chosen |= hits
    if unknown:
        shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
        raise ValueError(f"bayesianize: pattern(s) {unknown} select no nn.Linear or nn.Conv1d layer of "
                         f"{type(model).__name__} (its layers: {shown or 'none'})")
    return [layer for layer in layers if layer in chosen]


def bayesianize(model: nn.Module, include=None, sampling: str = "bbb", prior=None, init_sigma: float = 1e-3, *,
                init_rho: float | None = None) -> nn.Module:
    """Replace the selected ``nn.Linear`` / ``nn.Conv1d`` layers of ``model`` by Bayesian ones, in place.

    Args:
        model: any module; its layers are replaced where they are registered (a layer registered twice is
            replaced once, everywhere). The model itself is not replaced: pass its container.
        include: ``None`` for every ``nn.Linear`` / ``nn.Conv1d``, or name patterns (module docstring).
        sampling: ``"bbb"``, ``"lrt"`` or ``"flipout"`` (:mod:`spkver.nn.bayes`).
        prior: see :func:`as_prior`; one prior object is shared by all replaced layers.
        init_sigma: the initial posterior standard deviation of every weight and bias.
        init_rho: instead of ``init_sigma``, its ``rho`` (``sigma = softplus(rho)``), for models configured in
            rho; a very negative ``rho`` gives sigma exactly 0 in floating point.
    Returns:
        ``model``, whose replaced layers keep device, dtype and train/eval mode; their means equal the old
        weights, so in eval mode (posterior mean) the network computes exactly what it computed before.
    Raises:
        ValueError: an unknown sampling mode, a pattern that selects nothing, or a selected layer that the
            Bayesian layers cannot represent (a strided, grouped or non-zero-padded convolution), named.
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {sampling!r}; valid: {list(SAMPLING_MODES)}")
    if init_rho is None:
        init_sigma = float(init_sigma)
        if not init_sigma > 0.0:
            raise ValueError(f"init_sigma must be positive, got {init_sigma}")
        init_rho = float(inverse_softplus(init_sigma))
    prior = as_prior(prior)
    names = set(select_layers(model, include))
    converted: dict[int, nn.Module] = {}
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) not in converted and name not in names:
                continue
            if id(child) not in converted:
                try:
                    converted[id(child)] = _BAYES_TYPE[type(child)].from_deterministic(
                        child, sampling=sampling, prior=prior, init_rho=init_rho)
                except ValueError as err:
                    raise ValueError(f"bayesianize: layer {name!r}: {err}") from None
            setattr(parent, child_name, converted[id(child)])
    return model


def init_from_deterministic(model: nn.Module, state_dict: dict, init_sigma: float | None = None,
                            keep: tuple = ()) -> nn.Module:
    """Load a deterministic (or Bayesian) ``state_dict`` into a bayesianized ``model``.

    ``NAME.weight`` / ``NAME.bias`` of every Bayesian layer ``NAME`` go to its ``weight_mu`` / ``bias_mu``;
    every other key must exist in ``model`` with the same shape. ``rho`` keeps its value, or is set so that
    ``sigma == init_sigma``. Keys under the prefixes ``keep`` (e.g. ``("classifier.",)``: a classifier for
    other speakers) are neither required nor loaded. Anything else missing or unexpected is an error naming
    the key: never a partial load.
    """
    own = model.state_dict()
    bayes = set(bayesian_layer_names(model))
    keep = tuple(keep)
    mapped = {}
    for key, value in state_dict.items():
        layer, _, leaf = key.rpartition(".")
        if layer in bayes and leaf in ("weight", "bias"):
            key = f"{layer}.{leaf}_mu"
        if key.startswith(keep) and keep:
            continue
        if key not in own:
            raise ValueError(f"init_from_baseline: unexpected key {key!r} in the baseline state_dict")
        if own[key].shape != value.shape:
            raise ValueError(f"init_from_baseline: {key!r} has shape {tuple(value.shape)}, "
                             f"this model needs {tuple(own[key].shape)}")
        mapped[key] = value
    missing = [k for k in own if k not in mapped and not k.endswith("_rho") and not (keep and k.startswith(keep))]
    if missing:
        raise ValueError(f"init_from_baseline: baseline state_dict lacks {missing[:5]}")
    for key in own:
        if key not in mapped:
            mapped[key] = own[key]
    model.load_state_dict(mapped)
    if init_sigma is not None:
        rho = float(inverse_softplus(init_sigma))
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, BayesianLayer):
                    layer.weight_rho.fill_(rho)
                    if layer.bias_rho is not None:
                        layer.bias_rho.fill_(rho)
    return model
