"""Statistics pooling over frames (Snyder et al. 2018, "X-vectors: robust DNN embeddings").

Mean and standard deviation of each channel over the valid frames of each example, as Kaldi's
``StatisticsPoolingComponent``: population variance (divided by the number of frames), floored
before the square root. Computed in float32 even under mixed precision.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

__all__ = ["StatsPooling", "stats_pool", "length_mask"]

DEFAULT_VAR_FLOOR = 1e-8
_CHUNK_ELEMENTS = 1 << 18  # size of the centred temporary in the variance pass (1 MiB of float32)


def length_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` bool mask, True on the first ``lengths[b]`` frames of example ``b``."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def _moments(x: torch.Tensor, lengths: torch.Tensor | None, floor: torch.Tensor, step: int | None) -> tuple:
    """``(mean, std, floored)``, each ``(batch, channels)``, of ``x (batch, channels, frames)`` over the valid
    frames: two-pass variance (no cancellation), floored where below ``floor``.

    ``step``: examples centred at a time (a Python loop over the batch); None centres the whole batch in
    one tensor expression, the form an exporter can record with a symbolic batch size. Each example's
    arithmetic is the same either way.
    """
    batch, _, frames = x.shape
    if lengths is None:
        count = frames
        mean = x.sum(dim=2) / count
        mask = None
    else:
        mask = length_mask(lengths, frames).to(x.dtype)[:, :, None]  # (batch, frames, 1)
        count = lengths.to(x.dtype)[:, None]  # (batch, 1)
        mean = torch.bmm(x, mask).squeeze(2) / count
    if step is None:
        centred = x - mean[:, :, None]
        if mask is not None:
            centred = centred * mask.transpose(1, 2)
        sq = torch.linalg.vector_norm(centred, dim=2).square()
    else:
        sq = torch.empty_like(mean)
        for b in range(0, batch, step):
            centred = x[b:b + step] - mean[b:b + step, :, None]
            if mask is not None:
                centred.mul_(mask[b:b + step].transpose(1, 2))
            sq[b:b + step] = torch.linalg.vector_norm(centred, dim=2).square_()
    var = sq / count
    floored = var < floor  # (batch, channels); floor broadcasts from () or (channels,)
    std = torch.sqrt(torch.where(floored, floor, var))
    return mean, std, floored


class _StatsPoolFunction(torch.autograd.Function):
    """Mean and floored std over frames with a one-pass backward:
    ``dx = mask * (g_mean / n + g_std * (x - mean) / (n * std))`` (a single ``addcmul``), instead of
    autograd's chain through ``sub``, ``square``, ``mean``, ``sqrt`` (several full-size temporaries)."""

    @staticmethod
    def forward(ctx, x, lengths, floor):
        # the centred copy is made a few examples at a time so the temporary stays in cache instead of
        # allocating a full (batch, channels, frames) tensor
        step = max(1, _CHUNK_ELEMENTS // max(1, x.shape[1] * x.shape[2]))
        mean, std, floored = _moments(x, lengths, floor, step)
        ctx.save_for_backward(x, mean, std, floored, lengths)
        return torch.cat([mean, std], dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mean, std, floored, lengths = ctx.saved_tensors
        channels, frames = x.shape[1], x.shape[2]
        g_mean, g_std = grad[:, :channels], grad[:, channels:]
        count = float(frames) if lengths is None else lengths.to(x.dtype)[:, None]
        scale = torch.where(floored, torch.zeros_like(std), g_std / (count * std))  # (batch, channels)
        offset = g_mean / count - scale * mean
        dx = torch.addcmul(offset[:, :, None], x, scale[:, :, None])
        if lengths is not None:
            dx.mul_(length_mask(lengths, frames).to(x.dtype)[:, None, :])
        return dx, None, None


def stats_pool(x: torch.Tensor, lengths: torch.Tensor | None = None,
               var_floor: float | torch.Tensor = DEFAULT_VAR_FLOOR) -> torch.Tensor:
    """Concatenated mean and std over frames.

    Args:
        x: ``(batch, channels, frames)``.
        lengths: ``(batch,)`` number of valid leading frames per example (``1 <= lengths <= frames``);
            ``None`` means all frames are valid.
        var_floor: variance floor, a float or a ``(channels,)`` tensor.

    Returns:
        ``(batch, 2 * channels)``: ``[mean, std]``, float32 (or float64 for float64 input).
    """
    if x.dim() != 3:
        raise ValueError(f"stats_pool expects (batch, channels, frames), got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if lengths is not None:
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"stats_pool: lengths shape {tuple(lengths.shape)} does not match batch {x.shape[0]}")
        lengths = lengths.to(device=x.device, dtype=torch.long)
    floor = torch.as_tensor(var_floor, dtype=x.dtype, device=x.device)
    if _exporting():  # an exporter cannot record the autograd Function: the same forward in plain tensor ops
        mean, std, _ = _moments(x, lengths, floor, None)
        return torch.cat([mean, std], dim=1)
    return _StatsPoolFunction.apply(x, lengths, floor)


def _exporting() -> bool:
    """True while ``torch.onnx.export`` (either exporter) records the model; ``torch.onnx`` is imported only
    when it already has been (nobody can be exporting otherwise)."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


class StatsPooling(nn.Module):
    """Module form of :func:`stats_pool`: ``(batch, channels, frames)`` -> ``(batch, 2 * channels)``."""

    def __init__(self, var_floor: float = DEFAULT_VAR_FLOOR):
        super().__init__()
        if not var_floor >= 0.0:
            raise ValueError(f"StatsPooling var_floor must be >= 0, got {var_floor}")
        self.var_floor = float(var_floor)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return stats_pool(x, lengths, self.var_floor)

    def extra_repr(self) -> str:
        return f"var_floor={self.var_floor:g}"
