"""Reproducible per-utterance degradations: the calibration conditions of ``spkver prepare channel``.

Each utterance is degraded by draws from a random generator seeded by ``(seed, utterance id)``
(:func:`utterance_rng`), so a re-run, a resumed run or a run over another order of utterances gives identical
files, and one utterance's degradation does not depend on the others. Kinds (:data:`KINDS`):

- ``noise``: Gaussian coloured noise (power spectrum ``1 / f^beta``, 20 Hz up to Nyquist; slope drawn from
  :data:`NOISE_COLOURS`: white 0, pink 1, brown 2) added at an SNR drawn uniformly in ``snr`` dB (the ratio of
  mean powers over the whole utterance, as in :func:`spkver.data.augment.add_at_snr`);
- ``reverb``: convolution with one of ``rir_count`` simulated room impulse responses
  (:func:`spkver.data.rir.simulate_rirs`, seeded by ``seed``, simulated once per sample rate into
  ``rir_cache/sim-HASH``), by :func:`spkver.data.augment.reverberate` (aligned on the direct path, same power);
- ``short``: an excerpt of ``max_seconds`` starting at a uniformly drawn point (utterances no longer than that
  are kept whole);
- ``mixed``: one of ``noise`` / ``reverb`` / ``short`` per utterance, drawn with equal probabilities.

Outputs whose peak would exceed 16-bit full scale are scaled down as a whole (:func:`spkver.data.augment.
limit_peak`), which leaves the SNR unchanged. What each utterance got is described by :meth:`Degrader.plan`
(``{"kind": "noise", "snr_db": ..., "colour": ...}`` ...), which depends on the seed and the id only, not on
the audio.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("noise", "reverb", "short", "mixed")
MIXED_KINDS = ("noise", "reverb", "short")
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
NOISE_LOW_HZ = 20.0
SNR_LIMITS = (-20.0, 60.0)   # dB: what --snr may ask for


@dataclass(frozen=True)
class DegradeSettings:
    """The settings of one degradation kind; ``check()`` raises ``ValueError`` naming the setting at fault.

    seed: integer >= 0. snr: ``(low, high)`` dB with ``-20 <= low <= high <= 60`` (noise). max_seconds: > 0
    (short). rir_count: integer >= 1 (reverb).
    """

    kind: str
    seed: int = 0
    snr: tuple[float, float] = (0.0, 15.0)
    max_seconds: float = 2.0
    rir_count: int = 20

    def check(self) -> "DegradeSettings":
        if self.kind not in KINDS:
            raise ValueError(f"unknown degradation {self.kind!r}; valid: {', '.join(KINDS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        try:
            low, high = (float(v) for v in self.snr)
        except (TypeError, ValueError):
            raise ValueError(f"snr must be a (low, high) pair of dB, got {self.snr!r}") from None
        if not (SNR_LIMITS[0] <= low <= high <= SNR_LIMITS[1]):
            raise ValueError(f"snr must satisfy {SNR_LIMITS[0]:g} <= low <= high <= {SNR_LIMITS[1]:g} dB, "
                             f"got {low:g} {high:g}")
        if not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds)
                and self.max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number of seconds, got {self.max_seconds!r}")
        if isinstance(self.rir_count, bool) or not isinstance(self.rir_count, (int, np.integer)) \
                or self.rir_count < 1:
            raise ValueError(f"rir_count must be an integer >= 1, got {self.rir_count!r}")
        return self

    def to_dict(self) -> dict:
        """The settings that shape the output (JSON-ready): those a kind does not use are left out."""
        out = {"kind": self.kind, "seed": int(self.seed)}
        if self.kind in ("noise", "mixed"):
            out["snr"] = [float(v) for v in self.snr]
        if self.kind in ("short", "mixed"):
            out["max_seconds"] = float(self.max_seconds)
        if self.kind in ("reverb", "mixed"):
            out["rir_count"] = int(self.rir_count)
        return out


def utterance_rng(seed: int, utt: str, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on ``seed``, the utterance id ``utt`` and ``stream`` (stable across runs,
    platforms and utterance order: the id enters through its SHA-256, not Python's salted ``hash``)."""
    digest = int.from_bytes(hashlib.sha256(utt.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest, int(stream)])


class Degrader:
    """Degrade utterances by one kind of :data:`KINDS` (see the module docstring).

    ``plan(utt)`` draws what utterance ``utt`` gets (a dict; no audio needed), ``__call__(utt, wave, sr)``
    applies it to ``wave`` ``(samples,)`` at ``sr`` and returns ``(wave (samples',) float32, plan)``.
    rir_cache: the folder the simulated RIRs are cached in (needed to apply ``reverb``).
    """

    def __init__(self, settings: DegradeSettings, rir_cache: str | os.PathLike | None = None):
        self.settings = settings.check()
        self.rir_cache = None if rir_cache is None else Path(rir_cache)
        self._rirs: dict[int, list[np.ndarray]] = {}

    def plan(self, utt: str) -> dict:
        """What ``utt`` gets, drawn from ``utterance_rng(seed, utt)``: ``{"kind": "noise", "snr_db", "colour"}``,
        ``{"kind": "reverb", "rir": index}`` or ``{"kind": "short", "max_seconds", "start_fraction"}``."""
        s = self.settings
        rng = utterance_rng(s.seed, utt)
        kind = MIXED_KINDS[int(rng.integers(len(MIXED_KINDS)))] if s.kind == "mixed" else s.kind
        if kind == "noise":
            colour = list(NOISE_COLOURS)[int(rng.integers(len(NOISE_COLOURS)))]
            return {"kind": kind, "snr_db": float(rng.uniform(*s.snr)), "colour": colour}
        if kind == "reverb":
            return {"kind": kind, "rir": int(rng.integers(s.rir_count))}
        return {"kind": kind, "max_seconds": float(s.max_seconds), "start_fraction": float(rng.random())}

    def rirs(self, sample_rate: int) -> list[np.ndarray]:
        """The ``rir_count`` simulated RIRs at ``sample_rate`` (simulated on first use, then read from the cache)."""
        if self.rir_cache is None:
            raise ValueError(f"the {self.settings.kind} degradation needs rir_cache, a folder for the simulated RIRs")
        if sample_rate not in self._rirs:
            import soundfile as sf

            from spkver.data.rir import rir_folder, simulate_rirs

            settings = {"count": int(self.settings.rir_count), "sample_rate": int(sample_rate),
                        "seed": int(self.settings.seed)}
            files = simulate_rirs(rir_folder(self.rir_cache, **settings), **settings)
            self._rirs[sample_rate] = [sf.read(str(f), dtype="float32")[0] for f in files]
        return self._rirs[sample_rate]

    def __call__(self, utt: str, wave: np.ndarray, sr: int) -> tuple[np.ndarray, dict]:
        from spkver.data.augment import add_at_snr, colored_noise, limit_peak, reverberate

        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"utterance {utt}: expected a non-empty (samples,) waveform, got shape {wave.shape}")
        plan = self.plan(utt)
        if plan["kind"] == "noise":
            noise = colored_noise(len(wave), sr, NOISE_COLOURS[plan["colour"]], NOISE_LOW_HZ, sr / 2.0,
                                  utterance_rng(self.settings.seed, utt, stream=1))
            out = add_at_snr(wave, noise, plan["snr_db"])
        elif plan["kind"] == "reverb":
            out = reverberate(wave, self.rirs(int(sr))[plan["rir"]])
        else:
            keep = max(1, int(round(plan["max_seconds"] * sr)))
            start = int(plan["start_fraction"] * (len(wave) - keep + 1)) if len(wave) > keep else 0
            out = wave[start:start + keep]
        return limit_peak(np.asarray(out, dtype=np.float32)), plan


def describe(plan: dict) -> str:
    """``plan`` as one table value: ``"noise snr_db=7.31 colour=pink"``."""
    rest = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in plan.items() if k != "kind")
    return f"{plan['kind']} {rest}".strip()
