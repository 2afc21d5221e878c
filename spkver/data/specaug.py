"""SpecAugment-style masking of feature chunks (Park et al., "SpecAugment", Interspeech 2019; without time
warping).

``time_masks`` masks of ``t`` consecutive frames and ``freq_masks`` masks of ``f`` consecutive feature bins,
``t`` and ``f`` drawn uniformly from the inclusive ranges ``time_width`` and ``freq_width``, positions uniform.
Masked values are set to 0: after cepstral mean normalisation (the feature pipeline's sliding CMN) that is the
mean, as in Kaldi's and WeSpeaker's x-vector recipes. The training examples (``spkver.data.examples``) apply it
per chunk with a generator seeded by ``(seed, epoch, batch, row)``.
"""

from __future__ import annotations

import numpy as np


def _width(value, name: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) if float(v) == int(v) else None for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"spec_augment.{name} must be a [min, max] pair of integers, got {value!r}") from None
    if lo is None or hi is None or not 0 <= lo <= hi:
        raise ValueError(f"spec_augment.{name} must be integers with 0 <= min <= max, got {value!r}")
    return lo, hi


class SpecAugment:
    """Random time and frequency masks.

    Args:
        time_masks, freq_masks: masks per chunk (>= 0).
        time_width: ``[min, max]`` frames per time mask. freq_width: ``[min, max]`` bins per frequency mask.
    """

    def __init__(self, time_masks: int = 2, time_width=(0, 10), freq_masks: int = 2, freq_width=(0, 8)):
        for name, value in (("time_masks", time_masks), ("freq_masks", freq_masks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"spec_augment.{name} must be an integer >= 0, got {value!r}")
        self.time_masks, self.freq_masks = time_masks, freq_masks
        self.time_width, self.freq_width = _width(time_width, "time_width"), _width(freq_width, "freq_width")

    def __call__(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A masked copy of ``feats`` ``(frames, dim)``; widths are capped at the chunk's size."""
        out = np.array(feats, copy=True)
        frames, dim = out.shape
        for count, (lo, hi), size, axis in ((self.time_masks, self.time_width, frames, 0),
                                            (self.freq_masks, self.freq_width, dim, 1)):
            for _ in range(count):
                width = min(int(rng.integers(lo, hi + 1)), size)
                start = int(rng.integers(0, size - width + 1))
                if axis == 0:
                    out[start:start + width] = 0
                else:
                    out[:, start:start + width] = 0
        return out
