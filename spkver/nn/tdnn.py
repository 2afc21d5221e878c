"""The x-vector network (Snyder et al. 2018, "X-vectors: robust DNN embeddings for speaker recognition")
and its Bayesian variant (any subset of its affine layers replaced by Bayes-by-Backprop layers through
:func:`spkver.nn.bayesianize.bayesianize`, the one way any model of the registry becomes Bayesian), and the
model registry :data:`MODELS` (with SpeechBrain's ECAPA-TDNN and x-vector from :mod:`spkver.nn.ecapa`).

Layers (``channels=512``, ``stats_channels=1500``, ``embed_dim=512``)::

    frame_1  context {-2..2}   Conv1d(feat_dim, 512, kernel 5)          ReLU, BatchNorm
    frame_2  context {-2,0,2}  Conv1d(512, 512, kernel 3, dilation 2)   ReLU, BatchNorm
    frame_3  context {-3,0,3}  Conv1d(512, 512, kernel 3, dilation 3)   ReLU, BatchNorm
    frame_4  context {0}       Conv1d(512, 512, kernel 1)               ReLU, BatchNorm
    frame_5  context {0}       Conv1d(512, 1500, kernel 1)              ReLU, BatchNorm
    statistics pooling         mean and std over valid frames -> 3000
    seg_1    Linear(3000, 512)   <- its affine output is the embedding;  ReLU, BatchNorm
    seg_2    Linear(512, 512)                                          ReLU, BatchNorm
    classifier Linear(512, num_classes) -> logits   (or cosines: spkver.nn.heads, for the AAM loss)

The convolutions are unpadded, so ``frames`` shrink by :data:`CONTEXT` = 14; ``lengths`` (valid input
frames per example) shrink accordingly and every example needs at least 15 frames. Padding never
reaches the pooled statistics; in training mode, though, BatchNorm's batch statistics do include
padded frames, so train on equal-length chunks (as Kaldi and SpeechBrain do).

Inference: :meth:`XVector.extract` folds each ReLU -> BatchNorm into the next affine layer
(:class:`FusedXVector`) and averages Monte Carlo samples for Bayesian models.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkver.nn.bayes import SAMPLING_MODES, BayesianLayer, make_prior, sampling
from spkver.nn.bayesianize import bayesianize
from spkver.nn.ecapa import ECAPA, BayesECAPA, BayesSBXVector, SBXVector
from spkver.nn.heads import make_classifier
from spkver.nn.model import SpeakerModel, check_mc_samples
from spkver.nn.pooling import DEFAULT_VAR_FLOOR, stats_pool

__all__ = ["XVector", "BayesXVector", "FusedXVector", "MODELS", "build_model", "LAYER_NAMES",
           "FRAME_LAYERS", "CONTEXT", "prepare_input"]

FRAME_LAYERS = ("frame_1", "frame_2", "frame_3", "frame_4", "frame_5")
SEGMENT_LAYERS = ("seg_1", "seg_2", "classifier")
LAYER_NAMES = FRAME_LAYERS + SEGMENT_LAYERS
EMBEDDING_PATH = FRAME_LAYERS + ("seg_1",)
_KERNELS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))  # (kernel_size, dilation) of frame_1..frame_5
CONTEXT = sum(d * (k - 1) for k, d in _KERNELS)  # frames lost through the TDNN layers (14)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"XVector {name} must be a positive integer, got {value!r}")
    return int(value)


def _parse_bayes_layers(bayes_layers) -> tuple:
    if bayes_layers is None:
        return ()
    names = (bayes_layers,) if isinstance(bayes_layers, str) else tuple(bayes_layers)
    if "all" in names:
        return LAYER_NAMES
    unknown = [n for n in names if n not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown bayes_layers {unknown}; valid: {list(LAYER_NAMES)} or 'all'")
    return tuple(n for n in LAYER_NAMES if n in names)


def prepare_input(x: torch.Tensor, lengths, feat_dim: int) -> tuple:
    """Validate ``x (batch, frames, feat_dim)`` and ``lengths (batch,)`` (valid frames per example).

    Returns ``(x (batch, feat_dim, frames'), out_lengths (batch,) | None)``: trailing padding beyond the
    longest example is dropped, and ``out_lengths`` counts frames after the TDNN context (None when
    every example fills the batch).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != feat_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"XVector expects features (batch, frames, {feat_dim}), got {shape}")
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"XVector: lengths shape {tuple(lengths.shape)} != (batch,) = ({x.shape[0]},)")
        if lengths.is_floating_point() and not bool((lengths == lengths.round()).all()):
            raise ValueError("XVector: lengths must count frames (integers), not relative lengths")
        lengths = lengths.long()
        bad = ((lengths < CONTEXT + 1) | (lengths > x.shape[1])).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"XVector: example {i} has length {int(lengths[i])}; lengths must lie in "
                             f"[{CONTEXT + 1}, {x.shape[1]}] (the TDNN context needs {CONTEXT + 1} frames)")
        longest = int(lengths.max())
        x = x[:, :longest]
        lengths = None if bool((lengths == longest).all()) else lengths - CONTEXT
    elif x.shape[1] < CONTEXT + 1:
        raise ValueError(f"XVector needs at least {CONTEXT + 1} frames, got {x.shape[1]}")
    return x.transpose(1, 2), lengths


class XVector(SpeakerModel):
    """x-vector extractor and speaker classifier; Bayesian in the layers named by ``bayes_layers``.

    Args:
        feat_dim: input feature dimension.
        num_classes: training speakers.
        channels, stats_channels, embed_dim: widths of frame_1..4, frame_5 and seg_1 / seg_2.
        bayes_layers: names among :data:`LAYER_NAMES`, or ``"all"``; ``()`` is the baseline.
        sampling: ``"bbb"``, ``"lrt"`` or ``"flipout"`` (see :mod:`spkver.nn.bayes`).
        prior: ``"gaussian"`` (``prior_sigma``) or ``"mixture"`` (``mixture_pi``, ``mixture_sigma1``,
            ``mixture_sigma2``).
        init_rho: initial ``rho`` of every Bayesian weight (``sigma = softplus(rho)``).
        classifier: ``"linear"`` or ``"cosine"`` (:mod:`spkver.nn.heads`; set by the training loss). A cosine
            classifier has no ``nn.Linear`` and stays deterministic (``"all"`` then means every other layer).

    The Bayesian model is the deterministic one passed through :func:`~spkver.nn.bayesianize.bayesianize`
    with ``include=bayes_layers``, so its state-dict keys are the baseline's with ``NAME.weight`` /
    ``NAME.bias`` of each Bayesian layer ``NAME`` as ``NAME.weight_mu`` / ``_rho`` and ``NAME.bias_mu`` / ``_rho``.
    Input features are ``(batch, frames, feat_dim)`` with optional ``lengths (batch,)``.
    """

    head_prefixes = ("seg_1_norm.", "seg_2.", "seg_2_norm.", "classifier.")  # embedding (seg_1) -> logits

    def __init__(self, feat_dim: int, num_classes: int, channels: int = 512, stats_channels: int = 1500,
                 embed_dim: int = 512, bayes_layers=(), sampling: str = "bbb", prior: str = "gaussian",
                 prior_sigma: float = 1.0, mixture_pi: float = 0.5, mixture_sigma1: float = 1.0,
                 mixture_sigma2: float = math.exp(-6.0), init_rho: float = -5.0, classifier: str = "linear"):
        super().__init__()
        self.feat_dim = _positive_int("feat_dim", feat_dim)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.embed_dim = _positive_int("embed_dim", embed_dim)
        channels = _positive_int("channels", channels)
        stats_channels = _positive_int("stats_channels", stats_channels)
        every = bayes_layers == "all" or not isinstance(bayes_layers, str) and "all" in (bayes_layers or ())
        bayes_layers = _parse_bayes_layers(bayes_layers)
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {sampling!r}; valid: {list(SAMPLING_MODES)}")
        prior_obj = make_prior(prior, sigma=prior_sigma, pi=mixture_pi, sigma1=mixture_sigma1,
                               sigma2=mixture_sigma2)
        widths = [self.feat_dim] + [channels] * 4 + [stats_channels]
        for i, (name, (kernel, dilation)) in enumerate(zip(FRAME_LAYERS, _KERNELS)):
            setattr(self, name, nn.Conv1d(widths[i], widths[i + 1], kernel, dilation=dilation))
            setattr(self, f"{name}_norm", nn.BatchNorm1d(widths[i + 1]))
        self.seg_1 = nn.Linear(2 * stats_channels, self.embed_dim)
        self.seg_1_norm = nn.BatchNorm1d(self.embed_dim)
        self.seg_2 = nn.Linear(self.embed_dim, self.embed_dim)
        self.seg_2_norm = nn.BatchNorm1d(self.embed_dim)
        self.classifier = make_classifier(classifier, self.embed_dim, self.num_classes)
        if bayes_layers:
            bayesianize(self, None if every else list(bayes_layers), sampling, prior_obj, init_rho=init_rho)
        self.bayes_layers = tuple(n for n in LAYER_NAMES if isinstance(getattr(self, n), BayesianLayer))
        self._inference_cache: dict = {}  # plain dict: not part of the state_dict

    def prepare(self, x: torch.Tensor, lengths=None) -> tuple:
        """See :func:`prepare_input`."""
        return prepare_input(x, lengths, self.feat_dim)

    # -- network pieces ---------------------------------------------------------------------------
    def frame_stats(self, x: torch.Tensor, out_lengths: torch.Tensor | None) -> torch.Tensor:
        """``(batch, feat_dim, frames)`` -> pooled ``(batch, 2 * stats_channels)``."""
        for name in FRAME_LAYERS:
            x = getattr(self, f"{name}_norm")(F.relu(getattr(self, name)(x)))
        return stats_pool(x, out_lengths, DEFAULT_VAR_FLOOR)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Embedding ``(batch, embed_dim)`` -> logits ``(batch, num_classes)``."""
        h = self.seg_1_norm(F.relu(embedding))
        h = self.seg_2_norm(F.relu(self.seg_2(h)))
        return self.classifier(h)

    def embed(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """Embedding ``(batch, embed_dim)``: the affine output of seg_1 (in the current mode)."""
        x, out_lengths = self.prepare(x, lengths)
        return self.seg_1(self.frame_stats(x, out_lengths))

    # -- inference ----------------------------------------------------------------------------------
    def extract(self, x: torch.Tensor, lengths=None, mc_samples: int = 0) -> tuple:
        """Embeddings for inference, in eval mode and without autograd.

        Returns ``(mean (batch, embed_dim), spread (batch, embed_dim) | None)``. With
        ``mc_samples == 0`` (or a baseline model) ``mean`` is the posterior-mean embedding computed with
        BatchNorm folded into the following layers (:meth:`fuse_for_inference`) and ``spread`` is
        None. Otherwise ``mean`` averages ``mc_samples`` sampled embeddings and ``spread`` is their
        per-dimension standard deviation (divided by ``mc_samples``).
        """
        mc_samples = check_mc_samples(mc_samples)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.inference_mode():
                xt, out_lengths = self.prepare(x, lengths)
                if mc_samples == 0 or not self.is_bayesian:
                    return self._cached_fused().embed_prepared(xt, out_lengths), None
                if not any(n in self.bayes_layers for n in EMBEDDING_PATH):
                    emb = self.seg_1(self.frame_stats(xt, out_lengths))
                    return emb, torch.zeros_like(emb)
                with sampling(self, True):
                    if any(n in self.bayes_layers for n in FRAME_LAYERS):
                        draws = [self.seg_1(self.frame_stats(xt, out_lengths)) for _ in range(int(mc_samples))]
                    else:  # only seg_1 is random: pool once
                        stats = self.frame_stats(xt, out_lengths)
                        draws = [self.seg_1(stats) for _ in range(int(mc_samples))]
                stacked = torch.stack(draws)  # (mc_samples, batch, embed_dim)
                mean = stacked.mean(0)
                return mean, (stacked - mean).square_().mean(0).sqrt_()
        finally:
            for module, mode in modes:
                module.training = mode

    def _cached_fused(self) -> "FusedXVector":
        """:class:`FusedXVector` reused while no parameter or BatchNorm statistic has changed (in-place
        updates bump a tensor's version counter; moves change its storage)."""
        key = tuple((t.data_ptr(), t._version, t.dtype) for name, t in self.state_dict(keep_vars=True).items()
                    if name.startswith(EMBEDDING_PATH))
        cached = self._inference_cache.get("fused")
        if cached is None or cached[0] != key:
            cached = (key, self.fuse_for_inference())
            self._inference_cache["fused"] = cached
        return cached[1]

    def fuse_for_inference(self) -> "FusedXVector":
        """A frozen copy of the embedding path with BatchNorm folded in (posterior means); see
        :class:`FusedXVector`. Rebuild it after the weights change."""
        with torch.no_grad():
            return FusedXVector(self)


class BayesXVector(XVector):
    """:class:`XVector` with Bayesian layers (all of them by default)."""

    def __init__(self, feat_dim: int, num_classes: int, bayes_layers="all", **kwargs):
        super().__init__(feat_dim, num_classes, bayes_layers=bayes_layers, **kwargs)
        if not self.bayes_layers:
            raise ValueError("bayes_xvector needs at least one layer in bayes_layers")


def _bn_affine(bn: nn.BatchNorm1d) -> tuple:
    """Eval-mode BatchNorm as ``y = a * x + c``; returns ``(a, c)`` of shape ``(channels,)``."""
    a = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    c = -a * bn.running_mean
    if bn.bias is not None:
        c = c + bn.bias
    return a, c


def _mean_weight(layer: nn.Module) -> tuple:
    if isinstance(layer, BayesianLayer):
        return layer.weight_mu, layer.bias_mu
    return layer.weight, layer.bias


class FusedXVector(nn.Module):
    """Inference-only x-vector embedding path with each ReLU -> BatchNorm folded into the next affine
    layer: ``W (a * h + c) + b = (W diag(a)) h + (W c + b)``, valid because the convolutions are
    unpadded, and through statistics pooling (``mean -> a mean + c``, ``std -> |a| std`` with the
    variance floor rescaled by ``1 / a^2``). Uses posterior means of Bayesian layers.

    ``forward(x (batch, frames, feat_dim), lengths=None) -> (batch, embed_dim)``.
    """

    def __init__(self, model: XVector):
        super().__init__()
        self.feat_dim = model.feat_dim
        with torch.no_grad():
            weights, biases, dilations = [], [], []
            a = c = None
            for name, (_, dilation) in zip(FRAME_LAYERS, _KERNELS):
                w, b = _mean_weight(getattr(model, name))
                w, b = w.detach().clone(), (torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
                                            if b is None else b.detach().clone())
                if a is not None:
                    b = b + torch.einsum("oik,i->o", w, c)
                    w = w * a[None, :, None]
                weights.append(w)
                biases.append(b)
                dilations.append(dilation)
                a, c = _bn_affine(getattr(model, f"{name}_norm"))
            w, b = _mean_weight(model.seg_1)
            half = w.shape[1] // 2
            w_mean, w_std = w[:, :half], w[:, half:]
            seg_b = (b if b is not None else torch.zeros_like(w[:, 0])) + w_mean @ c
            seg_w = torch.cat([w_mean * a, w_std * a.abs()], dim=1)
            floor = DEFAULT_VAR_FLOOR / a.square().clamp_min(torch.finfo(a.dtype).tiny)
        for i, (w, b) in enumerate(zip(weights, biases)):
            self.register_buffer(f"w{i}", w.contiguous())
            self.register_buffer(f"b{i}", b.contiguous())
        self.register_buffer("seg_w", seg_w.contiguous())
        self.register_buffer("seg_b", seg_b.contiguous())
        self.register_buffer("var_floor", floor.contiguous())
        self.dilations = tuple(dilations)

    def embed_prepared(self, x: torch.Tensor, out_lengths: torch.Tensor | None) -> torch.Tensor:
        """``x (batch, feat_dim, frames)`` from :meth:`XVector.prepare` -> ``(batch, embed_dim)``."""
        for i, dilation in enumerate(self.dilations):
            x = F.conv1d(x, getattr(self, f"w{i}"), getattr(self, f"b{i}"), dilation=dilation).relu_()
        return F.linear(stats_pool(x, out_lengths, self.var_floor), self.seg_w, self.seg_b)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        with torch.inference_mode():
            return self.embed_prepared(*prepare_input(x, lengths, self.feat_dim))


MODELS = {"xvector": XVector, "bayes_xvector": BayesXVector, "ecapa_tdnn": ECAPA, "bayes_ecapa_tdnn": BayesECAPA,
          "sb_xvector": SBXVector, "bayes_sb_xvector": BayesSBXVector}


def build_model(name: str, **kwargs) -> SpeakerModel:
    """Model from the :data:`MODELS` registry, e.g. ``build_model("bayes_xvector", feat_dim=30,
    num_classes=1211, sampling="lrt")``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    return MODELS[name](**kwargs)
