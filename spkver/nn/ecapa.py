"""SpeechBrain's speaker-embedding networks in spkver's model interface: ECAPA-TDNN (Desplanques et al.,
Interspeech 2020, ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``) and SpeechBrain's x-vector
(``speechbrain.lobes.models.Xvector.Xvector``: padded "same" convolutions, LeakyReLU, pooling with a little
added noise; not spkver's Kaldi-style :class:`~spkver.nn.tdnn.XVector`).

The SpeechBrain network is held unchanged as ``embedding_model`` (the name SpeechBrain's own model folders
use), so ``model.embedding_model.state_dict()`` is exactly what SpeechBrain's class loads, and a SpeechBrain
``embedding_model.ckpt`` is this model's ``embedding_model.*`` (:mod:`spkver.speechbrain_folder`). Around it:

* ``classifier`` (:mod:`spkver.nn.heads`): linear for cross-entropy, cosine for the AAM loss;
* ``frontend`` (optional, :class:`SpeechBrainFrontEnd`): SpeechBrain's own features inside the model,
  ``Fbank`` then per-utterance mean normalisation (``InputNormalization(norm_type="sentence")``), exactly as
  SpeechBrain's ``EncoderClassifier.encode_batch`` computes them. Such a model takes the waveform as its input
  features (``FeatureConfig(kind="waveform")``: ``(batch, samples, 1)``, one "frame" per sample), so
  ``spkver extract`` and ``spkver.load`` feed it audio and it gives SpeechBrain's embeddings. Without a front
  end the model takes spkver's features (e.g. 80 Kaldi fbanks, ``FeatureConfig(kind="fbank", num_mel_bins=80)``);
* ``bayes_layers``: name patterns for :func:`spkver.nn.bayesianize.bayesianize` (``"all"``: every layer), e.g.
  ``["embedding_model.blocks.*", "embedding_model.mfa"]`` for the frame-level layers.

Lengths: ``lengths (batch,)`` count valid input frames (samples with a front end); they reach SpeechBrain as
relative lengths (``lengths / frames``, rounded down to a float whose product with ``frames`` does not exceed
the count, as SpeechBrain's masks compare). SpeechBrain's convolutions pad each sequence at its ends ("same",
reflect), so in a padded batch the frames just before a shorter example's padding see the padding: training
batches are equal-length chunks, and inference (:meth:`~spkver.nn.model.SpeakerModel.extract`, hence
extraction) runs examples of different lengths apart, so an embedding never depends on its batch.

Inference has no BatchNorm folding here (ECAPA's normalisations sit between non-linear pieces): the eval-mode
network with posterior means is the inference path.

``speechbrain`` is imported when a model is built, not when this module is.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from spkver.nn.bayes import SAMPLING_MODES, make_prior
from spkver.nn.bayesianize import bayesian_layer_names, bayesianize
from spkver.nn.heads import make_classifier
from spkver.nn.model import SpeakerModel

__all__ = ["SpeechBrainFrontEnd", "SpeechBrainEmbedding", "ECAPA", "BayesECAPA", "SBXVector", "BayesSBXVector",
           "relative_lengths"]

NET_MIN_FRAMES = 15  # the fewest feature frames an example may have (as for the x-vector)
_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or int(value) < 1:
        raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}")
    return int(value)


def _int_list(owner: str, name: str, values, length: int | None = None) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{owner} {name} must be a list of positive integers, got {values!r}")
    out = [_positive_int(owner, name, v) for v in values]
    if length is not None and len(out) != length:
        raise ValueError(f"{owner} {name} needs {length} values, got {len(out)}: {out}")
    return out


def relative_lengths(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``lengths / frames`` as float32, each lowered to the largest float whose float32 product with ``frames``
    does not exceed its length: SpeechBrain's masks keep frame ``t`` when ``t < rel * frames`` (ECAPA) or
    ``t < rel * frames - 1e-6``, and round ``rel * frames`` (statistics pooling); all then keep ``lengths``."""
    n = lengths.to(torch.float32)
    rel = n / frames
    for _ in range(4):
        over = rel * frames > n
        if not bool(over.any()):
            break
        rel = torch.where(over, torch.nextafter(rel, torch.zeros_like(rel)), rel)
    return rel


class SpeechBrainFrontEnd(nn.Module):
    """SpeechBrain's speaker front end: ``speechbrain.lobes.features.Fbank(**fbank)`` then, when
    ``mean_var_norm`` is given, ``speechbrain.processing.features.InputNormalization(**mean_var_norm)`` with
    ``norm_type="sentence"`` (statistics of each utterance alone).

    ``forward(wave (batch, samples), rel_lengths (batch,) | None) -> (batch, frames, out_dim)``.
    """

    def __init__(self, fbank: dict | None = None, mean_var_norm: dict | None = None):
        super().__init__()
        from speechbrain.lobes.features import Fbank
        from speechbrain.processing.features import InputNormalization

        fbank = dict(fbank or {})
        valid = set(inspect.signature(Fbank).parameters) - {"requires_grad"}
        unknown = sorted(set(fbank) - valid)
        if unknown:
            raise ValueError(f"frontend fbank: unsupported parameter(s) {unknown}; valid: {sorted(valid)}")
        self.fbank = Fbank(**fbank)
        self.norm = None
        if mean_var_norm is not None:
            norm = dict(mean_var_norm)
            if norm.get("norm_type", "global") != "sentence":
                raise ValueError(f"frontend mean_var_norm: norm_type {norm.get('norm_type', 'global')!r} is not "
                                 "supported (only 'sentence': per-utterance statistics, no stored state)")
            valid = set(inspect.signature(InputNormalization).parameters) - {"device"}
            unknown = sorted(set(norm) - valid)
            if unknown:
                raise ValueError(f"frontend mean_var_norm: unsupported parameter(s) {unknown}; valid: {sorted(valid)}")
            self.norm = InputNormalization(**norm)
        self.sample_rate = int(fbank.get("sample_rate", 16000))
        self.hop = int(self.fbank.compute_STFT.hop_length)  # samples
        self.n_fft = int(self.fbank.compute_STFT.n_fft)
        dim = int(fbank.get("n_mels", 40))
        if fbank.get("deltas"):
            dim *= 3
        if fbank.get("context"):
            dim *= int(fbank.get("left_frames", 5)) + int(fbank.get("right_frames", 5)) + 1
        self.out_dim = dim

    @property
    def min_samples(self) -> int:
        """Samples that give :data:`NET_MIN_FRAMES` frames (SpeechBrain's STFT is centred: ``1 + samples // hop``)."""
        return max(self.hop * (NET_MIN_FRAMES - 1), self.n_fft // 2 + 1)

    def forward(self, wave: torch.Tensor, rel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.fbank(wave)
        if self.norm is not None:
            feats = self.norm(feats, torch.ones(len(wave), device=wave.device) if rel_lengths is None
                              else rel_lengths)
        return feats


class SpeechBrainEmbedding(SpeakerModel):
    """Base of :class:`ECAPA` and :class:`SBXVector`: a SpeechBrain embedding network (``embedding_model``,
    made by :meth:`_network`), a classifier, an optional SpeechBrain front end, an optional embedding
    normalisation and Bayesian layers by name pattern (see the module docstring).

    ``embedding_norm``: ``None``, ``"mean"`` or ``"mean_std"``: subtract the stored mean of the embeddings
    (and divide by their standard deviation), as ``encode_batch(normalize=True)`` does with SpeechBrain's
    ``mean_var_norm_emb``; its buffers ``embedding_mean`` / ``embedding_std`` come with the weights.
    """

    def __init__(self, feat_dim: int, num_classes: int, embed_dim: int, classifier: str = "linear",
                 frontend: dict | None = None, embedding_norm: str | None = None, bayes_layers=(),
                 sampling: str = "bbb", prior: str = "gaussian", prior_sigma: float = 1.0, mixture_pi: float = 0.5,
                 mixture_sigma1: float = 1.0, mixture_sigma2: float = math.exp(-6.0), init_rho: float = -5.0):
        super().__init__()
        owner = type(self).__name__
        self.feat_dim = _positive_int(owner, "feat_dim", feat_dim)
        self.num_classes = _positive_int(owner, "num_classes", num_classes)
        self.embed_dim = _positive_int(owner, "embed_dim", embed_dim)
        if frontend is not None:
            if not isinstance(frontend, dict) or set(frontend) - {"fbank", "mean_var_norm"}:
                raise ValueError(f"{owner} frontend must be a mapping with keys fbank and mean_var_norm, "
                                 f"got {frontend!r}")
            if self.feat_dim != 1:
                raise ValueError(f"{owner}: a model with a SpeechBrain front end takes the waveform (features kind "
                                 f"'waveform', feat_dim 1), got feat_dim {self.feat_dim}")
            self.frontend = SpeechBrainFrontEnd(**frontend)
            self.min_frames = self.frontend.min_samples
        else:
            self.frontend = None
        self.embedding_model = self._network(self.frontend.out_dim if self.frontend is not None else self.feat_dim)
        self.classifier = make_classifier(classifier, self.embed_dim, self.num_classes)
        if embedding_norm not in (None, "mean", "mean_std"):
            raise ValueError(f"{owner} embedding_norm must be null, 'mean' or 'mean_std', got {embedding_norm!r}")
        self.embedding_norm = embedding_norm
        if embedding_norm is not None:
            self.register_buffer("embedding_mean", torch.zeros(self.embed_dim))
            self.register_buffer("embedding_std", torch.ones(self.embed_dim))
        if bayes_layers:
            if sampling not in SAMPLING_MODES:
                raise ValueError(f"unknown sampling mode {sampling!r}; valid: {list(SAMPLING_MODES)}")
            prior_obj = make_prior(prior, sigma=prior_sigma, pi=mixture_pi, sigma1=mixture_sigma1,
                                   sigma2=mixture_sigma2)
            include = None if bayes_layers in ("all", ["all"], ("all",)) else bayes_layers
            bayesianize(self, include, sampling, prior_obj, init_rho=init_rho)
        self.bayes_layers = tuple(bayesian_layer_names(self))

    def _network(self, input_size: int) -> nn.Module:
        """The SpeechBrain network for ``input_size`` features: ``(batch, frames, input_size), rel_lengths ->
        (batch, 1, embed_dim)``."""
        raise NotImplementedError

    def _prepare(self, x: torch.Tensor, lengths) -> tuple:
        """Check ``x (batch, frames, feat_dim)`` and ``lengths``; returns ``(x trimmed to the longest example,
        relative lengths or None when every example fills the batch)``."""
        owner = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.feat_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{owner} expects input (batch, frames, {self.feat_dim}), got {shape}")
        if lengths is None:
            if x.shape[1] < self.min_frames:
                raise ValueError(f"{owner} needs at least {self.min_frames} frames, got {x.shape[1]}")
            return x, None
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"{owner}: lengths shape {tuple(lengths.shape)} != (batch,) = ({x.shape[0]},)")
        if lengths.is_floating_point() and not bool((lengths == lengths.round()).all()):
            raise ValueError(f"{owner}: lengths must count frames (integers), not relative lengths")
        lengths = lengths.long()
        bad = ((lengths < self.min_frames) | (lengths > x.shape[1])).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"{owner}: example {i} has length {int(lengths[i])}; lengths must lie in "
                             f"[{self.min_frames}, {x.shape[1]}]")
        longest = int(lengths.max())
        x = x[:, :longest]
        return x, None if bool((lengths == longest).all()) else relative_lengths(lengths, longest)

    def embed(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """Embedding ``(batch, embed_dim)`` (the SpeechBrain network's output) in the current mode."""
        return self.embed_relative(*self._prepare(x, lengths))

    def embed_relative(self, x: torch.Tensor, rel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`embed` without its checks, on relative lengths ``(batch,)`` in (0, 1] (None: every example
        fills the batch), as SpeechBrain's networks take them; the path ONNX export records."""
        if self.frontend is not None:
            x = self.frontend(x[..., 0], rel_lengths)
        emb = self.embedding_model(x, rel_lengths).squeeze(1)
        if self.embedding_norm is not None:
            emb = emb - self.embedding_mean
            if self.embedding_norm == "mean_std":
                emb = emb / self.embedding_std.clamp(min=1e-10)
        return emb

    def embed_inference(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        """:meth:`embed` with examples of different lengths run apart (no padding reaches a valid frame)."""
        if lengths is None:
            return self.embed(x)
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (x.shape[0],) or bool((lengths == lengths.max()).all()):
            return self.embed(x, lengths)
        out = None
        for n in torch.unique(lengths).tolist():
            idx = (lengths == n).nonzero().flatten()
            emb = self.embed(x[idx, :int(n)])
            if out is None:
                out = emb.new_empty(x.shape[0], emb.shape[1])
            out[idx] = emb
        return out


class ECAPA(SpeechBrainEmbedding):
    """ECAPA-TDNN: SpeechBrain's ``ECAPA_TDNN`` with spkver's interface (see the module docstring).

    Args:
        feat_dim, num_classes: input features (1 with a ``frontend``) and training speakers.
        channels: the width ``C`` of the SE-Res2Net blocks, the multi-layer aggregation then has ``3 C``
            (SpeechBrain's ``[C, C, C, C, 3C]``), or the full list, one per layer.
        attention_channels, embed_dim (SpeechBrain's ``lin_neurons``), kernel_sizes, dilations, res2net_scale,
            se_channels, global_context, dropout: as SpeechBrain's ``ECAPA_TDNN``.
        classifier, frontend, embedding_norm, bayes_layers, sampling, prior, prior_sigma, mixture_*, init_rho:
            see :class:`SpeechBrainEmbedding` and :class:`~spkver.nn.tdnn.XVector`.
    """

    def __init__(self, feat_dim: int, num_classes: int, channels=512, attention_channels: int = 128,
                 embed_dim: int = 192, kernel_sizes=(5, 3, 3, 3, 1), dilations=(1, 2, 3, 4, 1), res2net_scale: int = 8,
                 se_channels: int = 128, global_context: bool = True, dropout: float = 0.0, classifier: str = "linear",
                 frontend: dict | None = None, embedding_norm: str | None = None, bayes_layers=(),
                 sampling: str = "bbb", prior: str = "gaussian", prior_sigma: float = 1.0, mixture_pi: float = 0.5,
                 mixture_sigma1: float = 1.0, mixture_sigma2: float = math.exp(-6.0), init_rho: float = -5.0):
        kernel_sizes = _int_list("ECAPA", "kernel_sizes", kernel_sizes)
        if len(kernel_sizes) < 3:
            raise ValueError(f"ECAPA kernel_sizes needs at least 3 layers, got {kernel_sizes}")
        dilations = _int_list("ECAPA", "dilations", dilations, len(kernel_sizes))
        if isinstance(channels, (list, tuple)):
            channels = _int_list("ECAPA", "channels", channels, len(kernel_sizes))
        else:
            c = _positive_int("ECAPA", "channels", channels)
            channels = [c] * (len(kernel_sizes) - 1) + [3 * c]
        res2net_scale = _positive_int("ECAPA", "res2net_scale", res2net_scale)
        odd = [c for c in channels[:-1] if c % res2net_scale]
        if odd:
            raise ValueError(f"ECAPA channels {channels[:-1]} must be multiples of res2net_scale {res2net_scale}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"ECAPA dropout must lie in [0, 1), got {dropout!r}")
        self.arch = dict(channels=channels, kernel_sizes=kernel_sizes, dilations=dilations,
                         attention_channels=_positive_int("ECAPA", "attention_channels", attention_channels),
                         res2net_scale=res2net_scale, se_channels=_positive_int("ECAPA", "se_channels", se_channels),
                         global_context=bool(global_context), dropout=float(dropout))
        super().__init__(feat_dim, num_classes, embed_dim, classifier, frontend, embedding_norm, bayes_layers,
                         sampling, prior, prior_sigma, mixture_pi, mixture_sigma1, mixture_sigma2, init_rho)

    def _network(self, input_size: int) -> nn.Module:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        arch = dict(self.arch)
        if not arch["dropout"]:
            arch.pop("dropout")  # older SpeechBrain releases have no dropout argument
        return ECAPA_TDNN(input_size, lin_neurons=self.embed_dim, **arch)


class SBXVector(SpeechBrainEmbedding):
    """SpeechBrain's x-vector (``speechbrain.lobes.models.Xvector.Xvector``) with spkver's interface.

    Args:
        channels, kernel_sizes, dilations: per TDNN layer (SpeechBrain's ``tdnn_channels``,
            ``tdnn_kernel_sizes``, ``tdnn_dilations``); embed_dim: its ``lin_neurons``; activation: ``"leaky_relu"``
            (SpeechBrain's default) or ``"relu"``. The rest as :class:`ECAPA`.
    """

    def __init__(self, feat_dim: int, num_classes: int, channels=(512, 512, 512, 512, 1500),
                 kernel_sizes=(5, 3, 3, 1, 1), dilations=(1, 2, 3, 1, 1), embed_dim: int = 512,
                 activation: str = "leaky_relu", classifier: str = "linear", frontend: dict | None = None,
                 embedding_norm: str | None = None, bayes_layers=(), sampling: str = "bbb", prior: str = "gaussian",
                 prior_sigma: float = 1.0, mixture_pi: float = 0.5, mixture_sigma1: float = 1.0,
                 mixture_sigma2: float = math.exp(-6.0), init_rho: float = -5.0):
        channels = _int_list("SBXVector", "channels", channels)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"SBXVector activation {activation!r}; valid: {sorted(_ACTIVATIONS)}")
        self.arch = dict(tdnn_blocks=len(channels), tdnn_channels=channels,
                         tdnn_kernel_sizes=_int_list("SBXVector", "kernel_sizes", kernel_sizes, len(channels)),
                         tdnn_dilations=_int_list("SBXVector", "dilations", dilations, len(channels)),
                         activation=_ACTIVATIONS[activation])
        super().__init__(feat_dim, num_classes, embed_dim, classifier, frontend, embedding_norm, bayes_layers,
                         sampling, prior, prior_sigma, mixture_pi, mixture_sigma1, mixture_sigma2, init_rho)

    def _network(self, input_size: int) -> nn.Module:
        from speechbrain.lobes.models.Xvector import Xvector

        return Xvector(in_channels=input_size, lin_neurons=self.embed_dim, **self.arch)


class BayesECAPA(ECAPA):
    """:class:`ECAPA` with Bayesian layers (all of them by default; or name patterns)."""

    def __init__(self, feat_dim: int, num_classes: int, bayes_layers="all", **kwargs):
        super().__init__(feat_dim, num_classes, bayes_layers=bayes_layers, **kwargs)
        if not self.bayes_layers:
            raise ValueError("bayes_ecapa_tdnn needs at least one layer in bayes_layers")


class BayesSBXVector(SBXVector):
    """:class:`SBXVector` with Bayesian layers (all of them by default; or name patterns)."""

    def __init__(self, feat_dim: int, num_classes: int, bayes_layers="all", **kwargs):
        super().__init__(feat_dim, num_classes, bayes_layers=bayes_layers, **kwargs)
        if not self.bayes_layers:
            raise ValueError("bayes_sb_xvector needs at least one layer in bayes_layers")
