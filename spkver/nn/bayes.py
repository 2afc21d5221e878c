"""Bayesian affine layers with a factorised Gaussian posterior (Bayes by Backprop).

Each weight and bias has ``q(w) = N(mu, sigma^2)`` with ``sigma = log(1 + exp(rho))``
(Blundell et al. 2015). With ``eps`` fixed, ``w = mu + sigma * eps`` and autograd gives the paper's
eqs. (3)-(4): ``d_mu = df/dw + df/dmu`` and ``d_rho = df/dw * eps / (1 + exp(-rho)) + df/drho``.

Sampling modes (``sampling=``):

* ``"bbb"``: one weight sample per forward pass, shared by the whole batch (Blundell et al. 2015);
  a single ``F.linear`` / ``F.conv1d`` with the sampled weight.
* ``"lrt"``: local reparameterization (Kingma et al. 2015): pre-activations are sampled directly,
  mean ``x mu_W + mu_b``, variance ``x^2 sigma_W^2 + sigma_b^2``; independent per example (and, for
  convolutions, per output frame: exact marginals, correlations across frames dropped).
* ``"flipout"``: (Wen et al. 2018) one shared perturbation ``dW = sigma * eps`` decorrelated per example
  by random sign vectors: ``x mu_W + ((x * s_in) dW) * s_out``; signs are shared over frames for conv.

In training mode a layer samples; in eval mode it uses the posterior mean (exactly the deterministic
layer with weights ``mu``). Set ``layer.sample = True`` (or use :func:`sampling`) to draw at eval
time for Monte Carlo averaging; ``layer.generator`` fixes the random stream, and
:meth:`draw_noise` and ``forward(x, noise)`` take the noise explicitly.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkver.nn.reparam import inverse_softplus, log_softplus, softplus_sigma

__all__ = ["GaussianPrior", "ScaleMixturePrior", "make_prior", "PRIORS", "SAMPLING_MODES",
           "BayesianLayer", "BayesLinear", "BayesConv1d", "sampling", "bayesian_layers", "total_kl"]

SAMPLING_MODES = ("bbb", "lrt", "flipout")
_LOG_2PI = math.log(2.0 * math.pi)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


class GaussianPrior:
    """Isotropic ``p(w) = N(0, sigma^2)``; the KL to a Gaussian posterior has a closed form."""

    closed_form = True

    def __init__(self, sigma: float = 1.0):
        self.sigma = _positive("GaussianPrior sigma", sigma)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """``sum log p(w)`` over all elements (scalar)."""
        s = self.sigma
        return (-0.5 * (w / s) ** 2).sum() - w.numel() * (math.log(s) + 0.5 * _LOG_2PI)

    def kl(self, mu: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """``KL(N(mu, softplus(rho)^2) || N(0, s^2))`` summed over elements (scalar):
        ``log(s / sigma) + (sigma^2 + mu^2) / (2 s^2) - 1/2`` per weight."""
        sigma = softplus_sigma(rho)
        per_weight = (sigma * sigma + mu * mu) * (0.5 / self.sigma ** 2) - log_softplus(rho, sigma)
        return per_weight.sum() + mu.numel() * (math.log(self.sigma) - 0.5)

    def __repr__(self) -> str:
        return f"GaussianPrior(sigma={self.sigma:g})"


class ScaleMixturePrior:
    """``p(w) = pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)`` (Blundell et al. 2015, eq. 7).

    No closed-form KL: layers estimate ``KL = E_q[log q(w) - log p(w)]`` from a weight sample.
    """

    closed_form = False

    def __init__(self, pi: float = 0.5, sigma1: float = 1.0, sigma2: float = math.exp(-6.0)):
        if not 0.0 < float(pi) <= 1.0:
            raise ValueError(f"ScaleMixturePrior pi must be in (0, 1], got {pi}")
        self.pi = float(pi)
        self.sigma1 = _positive("ScaleMixturePrior sigma1", sigma1)
        self.sigma2 = _positive("ScaleMixturePrior sigma2", sigma2)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """``sum log p(w)`` over all elements (scalar), via a stable log-sum-exp."""
        parts = [-0.5 * (w / s) ** 2 + (math.log(weight) - math.log(s) - 0.5 * _LOG_2PI)
                 for weight, s in ((self.pi, self.sigma1), (1.0 - self.pi, self.sigma2)) if weight > 0]
        return (parts[0] if len(parts) == 1 else torch.logaddexp(parts[0], parts[1])).sum()

    def __repr__(self) -> str:
        return f"ScaleMixturePrior(pi={self.pi:g}, sigma1={self.sigma1:g}, sigma2={self.sigma2:g})"


PRIORS = {
    "gaussian": lambda sigma=1.0, **_: GaussianPrior(sigma),
    "mixture": lambda pi=0.5, sigma1=1.0, sigma2=math.exp(-6.0), **_: ScaleMixturePrior(pi, sigma1, sigma2),
}


def make_prior(name: str = "gaussian", **params):
    """Prior by name: ``"gaussian"`` (``sigma``) or ``"mixture"`` (``pi``, ``sigma1``, ``sigma2``)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; valid names: {sorted(PRIORS)}")
    return PRIORS[name](**params)


class BayesianLayer(nn.Module):
    """Shared machinery of :class:`BayesLinear` and :class:`BayesConv1d` (not used directly).

    Attributes:
        sample: ``None`` (sample in training, posterior mean in eval), ``True`` or ``False``.
        generator: optional ``torch.Generator`` for all noise this layer draws.
    """

    def __init__(self, weight_shape: tuple, fan_in: int, bias: bool, sampling: str, prior, init_rho: float):
        super().__init__()
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {sampling!r}; valid: {list(SAMPLING_MODES)}")
        out_channels = weight_shape[0]
        self.sampling = sampling
        self.prior = GaussianPrior(1.0) if prior is None else prior
        self.sample: bool | None = None
        self.generator: torch.Generator | None = None
        self._kl_noise: tuple | None = None
        self.weight_mu = nn.Parameter(torch.empty(weight_shape))
        self.weight_rho = nn.Parameter(torch.full(weight_shape, float(init_rho)))
        if bias:
            self.bias_mu = nn.Parameter(torch.empty(out_channels))
            self.bias_rho = nn.Parameter(torch.full((out_channels,), float(init_rho)))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_rho", None)
        # same initialisation as torch.nn.Linear / Conv1d for the means
        nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias_mu, -bound, bound)

    # -- subclass hooks -------------------------------------------------------------------------
    def _affine(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _affine_backward(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: tuple) -> tuple:
        """``(d x, d weight, d bias)`` of ``_affine`` for output gradient ``grad``; ``None`` where ``mask``
        (three booleans) is False."""
        raise NotImplementedError

    def _channel_shape(self, x: torch.Tensor, channels: int) -> tuple:
        """Shape of one per-example, per-channel vector broadcast against ``x`` or the output."""
        raise NotImplementedError

    def _output_shape(self, x: torch.Tensor) -> tuple:
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    # -- posterior ----------------------------------------------------------------------------
    @property
    def weight_sigma(self) -> torch.Tensor:
        return softplus_sigma(self.weight_rho)

    @property
    def bias_sigma(self) -> torch.Tensor | None:
        return None if self.bias_rho is None else softplus_sigma(self.bias_rho)

    def is_sampling(self) -> bool:
        return self.training if self.sample is None else bool(self.sample)

    def _randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=like.dtype, device=like.device)

    def draw_noise(self, x: torch.Tensor) -> dict:
        """Noise for one forward pass on input ``x``, keyed by name; see :meth:`forward`.

        bbb: ``weight`` (weight shape), ``bias`` (out,). lrt: ``out`` (output shape).
        flipout: ``weight``, ``bias``, ``sign_in`` / ``sign_out`` (+-1 per example and channel).
        """
        w = self.weight_mu
        if self.sampling == "lrt":
            return {"out": self._randn(self._output_shape(x), x)}
        noise = {"weight": self._randn(w.shape, w)}
        if self.bias_mu is not None:
            noise["bias"] = self._randn(self.bias_mu.shape, w)
        if self.sampling == "flipout":
            in_ch, out_ch = w.shape[1], w.shape[0]
            for key, ch in (("sign_in", in_ch), ("sign_out", out_ch)):
                bits = torch.randint(0, 2, self._channel_shape(x, ch), generator=self.generator,
                                     device=x.device, dtype=x.dtype)
                noise[key] = bits * 2 - 1
        return noise

    def forward(self, x: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
        """Output for input ``x``: sampled in training mode (or when ``sample`` is True), the posterior
        mean otherwise. A ``noise`` dict (from :meth:`draw_noise`) forces a sample with that noise,
        differentiable in mu and rho (fixed-noise gradient checks, eqs. 3-4)."""
        if noise is None:
            if not self.is_sampling():
                self._check_input(x)
                return self._affine(x, self.weight_mu, self.bias_mu)
            noise = self.draw_noise(x)
        self._check_input(x)
        b_mu, b_rho = self.bias_mu, self.bias_rho
        if self.sampling == "lrt":
            var_b = None if b_rho is None else softplus_sigma(b_rho).square()
            return _LocalReparam.apply(x, self.weight_mu, b_mu, softplus_sigma(self.weight_rho).square(),
                                       var_b, noise["out"], self)
        if not self.prior.closed_form:
            self._kl_noise = (noise["weight"].detach(), None if b_mu is None else noise["bias"].detach())
        if self.sampling == "bbb":
            weight = torch.addcmul(self.weight_mu, softplus_sigma(self.weight_rho), noise["weight"])
            bias = None if b_mu is None else torch.addcmul(b_mu, softplus_sigma(b_rho), noise["bias"])
            return self._affine(x, weight, bias)
        # flipout
        d_weight = softplus_sigma(self.weight_rho) * noise["weight"]
        d_bias = None if b_mu is None else softplus_sigma(b_rho) * noise["bias"]
        mean = self._affine(x, self.weight_mu, b_mu)
        return mean.addcmul_(self._affine(x * noise["sign_in"], d_weight, d_bias), noise["sign_out"])

    def kl(self) -> torch.Tensor:
        """``KL(q || p)`` summed over weights and bias (scalar).

        Closed form for a Gaussian prior; otherwise the single-sample Monte Carlo estimate
        ``log q(w) - log p(w)`` at the weight sample of the latest forward pass (a fresh one when
        there is none, e.g. in lrt mode), as in Blundell et al. 2015.
        """
        pairs = [(self.weight_mu, self.weight_rho)]
        if self.bias_mu is not None:
            pairs.append((self.bias_mu, self.bias_rho))
        if self.prior.closed_form:
            return sum(self.prior.kl(mu, rho) for mu, rho in pairs)
        cached = self._kl_noise or (None, None)
        total = 0.0
        for (mu, rho), eps in zip(pairs, cached):
            if eps is None or eps.shape != mu.shape or eps.device != mu.device:
                eps = self._randn(mu.shape, mu)
            sigma = softplus_sigma(rho)
            w = mu + sigma * eps
            log_q = (-0.5 * ((w - mu) / sigma) ** 2 - log_softplus(rho, sigma)).sum() - 0.5 * _LOG_2PI * w.numel()
            total = total + log_q - self.prior.log_prob(w)
        return total

    @classmethod
    def _converted(cls, layer: nn.Module, init_sigma: float, init_rho: float | None, **shape) -> "BayesianLayer":
        """A new layer of ``shape`` (constructor arguments) with ``mu`` = ``layer``'s weights and ``sigma`` =
        ``init_sigma`` (or ``softplus(init_rho)`` when given: ``init_rho`` may be -inf-like, sigma 0 in float).
        The caller's random stream is left as it was (the means are copied, not drawn)."""
        rho = float(inverse_softplus(_positive("init_sigma", init_sigma))) if init_rho is None else float(init_rho)
        with torch.random.fork_rng(devices=[]):
            new = cls(**shape, init_rho=rho)
        with torch.no_grad():
            new.weight_mu.copy_(layer.weight)
            if layer.bias is not None:
                new.bias_mu.copy_(layer.bias)
        return new.to(device=layer.weight.device, dtype=layer.weight.dtype).train(layer.training)

    def extra_repr(self) -> str:
        return f"sampling={self.sampling!r}, prior={self.prior!r}, bias={self.bias_mu is not None}"


class _LocalReparam(torch.autograd.Function):
    """lrt sample ``y = (x W_mu + b_mu) + sqrt(x^2 W_var + b_var + tiny) * eps`` with a hand-written backward.

    Autograd through square, sqrt and addcmul costs about eleven passes over activation-sized tensors
    per layer; here forward and backward take five, and only ``x``, ``x^2`` and ``eps / std`` are kept.
    With ``r = eps / std``: ``dL/dvar = g * r / 2``, so ``dL/dx = T_mu(g) + x * T_var(g * r)`` (``T``: the
    affine map's input gradient, the 2 of ``d x^2`` cancelling the 1/2) and the variance weights get
    half the weight gradient of ``g * r`` on ``x^2``. ``tiny`` keeps ``r`` finite where ``var = 0`` while
    ``sigma -> 0`` still reproduces the mean exactly. Under autocast, everything runs in the autocast dtype.
    """

    @staticmethod
    def forward(ctx, x, w_mu, b_mu, w_var, b_var, eps, layer):
        device = x.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, w_mu, b_mu, w_var, b_var, eps = (None if t is None else t.to(dtype)
                                                for t in (x, w_mu, b_mu, w_var, b_var, eps))
        with torch.autocast(device, enabled=False):
            x2 = x.square()
            mean = layer._affine(x, w_mu, b_mu)
            std = layer._affine(x2, w_var, b_var).add_(torch.finfo(x.dtype).tiny).sqrt_()
            out = mean.addcmul_(std, eps)
            ratio = torch.div(eps, std, out=std)
        ctx.layer, ctx.has_bias = layer, b_mu is not None
        ctx.save_for_backward(x, x2, w_mu, w_var, ratio)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, x2, w_mu, w_var, ratio = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad = grad.to(ratio.dtype)
        gx, gw_mu, gb_mu = ctx.layer._affine_backward(grad, x, w_mu, (need[0], need[1], need[2]))
        grad_var = grad * ratio
        gx_var, gw_var, gb_var = ctx.layer._affine_backward(grad_var, x2, w_var, (need[0], need[3], need[4]))
        if need[0]:
            gx = gx.addcmul_(x, gx_var)
        gw_var = None if gw_var is None else gw_var.mul_(0.5)
        gb_var = None if gb_var is None else gb_var.mul_(0.5)
        return gx, gw_mu, gb_mu, gw_var, gb_var, None, None


class BayesLinear(BayesianLayer):
    """Bayesian ``nn.Linear``: input ``(batch, ..., in_features)`` -> ``(batch, ..., out_features)``.

    Flipout and lrt noise is per example (first dimension) and, for lrt, per output element.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, sampling: str = "bbb",
                 prior=None, init_rho: float = -5.0):
        super().__init__((int(out_features), int(in_features)), int(in_features), bias, sampling, prior, init_rho)
        self.in_features, self.out_features = int(in_features), int(out_features)

    def _affine(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def _affine_backward(self, grad, x, weight, mask):
        g = grad.reshape(-1, grad.shape[-1])
        gx = grad.matmul(weight) if mask[0] else None
        gw = g.t().mm(x.reshape(-1, x.shape[-1])) if mask[1] else None
        gb = g.sum(0) if mask[2] else None
        return gx, gw, gb

    def _channel_shape(self, x, channels):
        return (x.shape[0],) + (1,) * (x.dim() - 2) + (channels,)

    def _output_shape(self, x):
        return tuple(x.shape[:-1]) + (self.out_features,)

    def _check_input(self, x):
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"BayesLinear expects input (batch, ..., {self.in_features}), "
                             f"got {tuple(x.shape)}")

    @classmethod
    def from_deterministic(cls, layer: nn.Linear, init_sigma: float = 1e-3, sampling: str = "bbb",
                           prior=None, init_rho: float | None = None) -> "BayesLinear":
        """Posterior centred on a trained ``nn.Linear`` (``mu = weight``) with a small ``sigma`` (``init_sigma``,
        or ``softplus(init_rho)`` when ``init_rho`` is given)."""
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"BayesLinear.from_deterministic needs nn.Linear, got {type(layer).__name__}")
        return cls._converted(layer, init_sigma, init_rho, in_features=layer.in_features,
                              out_features=layer.out_features, bias=layer.bias is not None, sampling=sampling,
                              prior=prior)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()


class BayesConv1d(BayesianLayer):
    """Bayesian ``nn.Conv1d`` (stride 1): input ``(batch, channels, frames)`` ->
    ``(batch, out_channels, frames + 2 * padding - dilation * (kernel_size - 1))``.

    This is the TDNN layer: kernel 3 with dilation 2 is the context {-2, 0, 2}.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True, sampling: str = "bbb", prior=None, init_rho: float = -5.0,
                 padding: int = 0):
        in_channels, out_channels, kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        if kernel_size < 1 or dilation < 1 or padding < 0:
            raise ValueError(f"BayesConv1d needs kernel_size >= 1, dilation >= 1, padding >= 0; got "
                             f"{kernel_size}, {dilation}, {padding}")
        super().__init__((out_channels, in_channels, kernel_size), in_channels * kernel_size, bias,
                         sampling, prior, init_rho)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation, self.padding = kernel_size, int(dilation), int(padding)

    def _affine(self, x, weight, bias):
        return F.conv1d(x, weight, bias, padding=self.padding, dilation=self.dilation)

    def _affine_backward(self, grad, x, weight, mask):
        bias_sizes = [weight.shape[0]] if mask[2] else None
        return torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, [1], [self.padding],
                                                   [self.dilation], False, [0], 1, list(mask))

    def _channel_shape(self, x, channels):
        return (x.shape[0], channels, 1)

    def _output_shape(self, x):
        frames = x.shape[2] + 2 * self.padding - self.dilation * (self.kernel_size - 1)
        return (x.shape[0], self.out_channels, frames)

    def _check_input(self, x):
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"BayesConv1d expects input (batch, {self.in_channels}, frames), got {tuple(x.shape)}")
        if self._output_shape(x)[2] < 1:
            raise ValueError(f"BayesConv1d: {x.shape[2]} frames is shorter than the receptive field "
                             f"{self.dilation * (self.kernel_size - 1) + 1}")

    @classmethod
    def from_deterministic(cls, layer: nn.Conv1d, init_sigma: float = 1e-3, sampling: str = "bbb",
                           prior=None, init_rho: float | None = None) -> "BayesConv1d":
        """Posterior centred on a trained ``nn.Conv1d`` (``mu = weight``) with a small ``sigma`` (``init_sigma``,
        or ``softplus(init_rho)`` when ``init_rho`` is given)."""
        if not isinstance(layer, nn.Conv1d):
            raise TypeError(f"BayesConv1d.from_deterministic needs nn.Conv1d, got {type(layer).__name__}")
        if layer.stride != (1,) or layer.groups != 1 or not isinstance(layer.padding, tuple) \
                or layer.padding_mode != "zeros":
            raise ValueError(f"BayesConv1d supports stride 1, groups 1 and integer zero padding; this Conv1d has "
                             f"stride {layer.stride[0]}, groups {layer.groups}, padding {layer.padding!r} "
                             f"({layer.padding_mode})")
        return cls._converted(layer, init_sigma, init_rho, in_channels=layer.in_channels,
                              out_channels=layer.out_channels, kernel_size=layer.kernel_size[0],
                              dilation=layer.dilation[0], bias=layer.bias is not None, sampling=sampling, prior=prior,
                              padding=layer.padding[0])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, padding={self.padding}, " + super().extra_repr())


def bayesian_layers(model: nn.Module) -> Iterator[BayesianLayer]:
    """All :class:`BayesianLayer` modules inside ``model`` (including itself)."""
    return (m for m in model.modules() if isinstance(m, BayesianLayer))


def total_kl(model: nn.Module) -> torch.Tensor:
    """Sum of ``kl()`` over the Bayesian layers of ``model``; a zero scalar when there are none."""
    layers = list(bayesian_layers(model))
    if not layers:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return sum(layer.kl() for layer in layers)


@contextlib.contextmanager
def sampling(model: nn.Module, enabled: bool | None = True):
    """Temporarily set ``sample`` on every Bayesian layer of ``model`` (``True``: draw weights even in
    eval mode, for Monte Carlo averaging; ``False``: posterior mean; ``None``: follow train/eval)."""
    layers = list(bayesian_layers(model))
    saved = [layer.sample for layer in layers]
    try:
        for layer in layers:
            layer.sample = enabled
        yield model
    finally:
        for layer, value in zip(layers, saved):
            layer.sample = value
