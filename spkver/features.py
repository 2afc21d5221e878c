"""Kaldi-compatible acoustic features for x-vector extractors: MFCC / fbank, sliding CMN, energy VAD.

The pipeline is Kaldi's x-vector recipe (egs/voxceleb/v2, egs/sre16/v2; Snyder et al., ICASSP 2018):

1. ``compute-mfcc-feats`` (or ``compute-fbank-feats``) through ``torchaudio.compliance.kaldi``, on samples
   scaled to Kaldi's 16-bit integer range (``wave * 32768``), so that log energies, and with them the absolute
   VAD threshold, mean what they mean in Kaldi;
2. ``apply-cmvn-sliding --norm-vars=false --center=true --cmn-window=300`` (:func:`sliding_cmn`);
3. ``compute-vad`` on the log energy of the *raw* features (:func:`energy_vad`), then ``select-voiced-frames``
   on the CMN'd features. If no frame is voiced, every frame is kept (Kaldi would drop the utterance).

Defaults differing from torchaudio's: ``energy_floor=0`` (Kaldi's default, torchaudio uses 1.0),
``use_energy=True`` for MFCC (Kaldi's default: C0 is replaced by the raw log energy), dither 0 (deterministic;
Kaldi uses 1.0), ``snip_edges=False`` (what both Kaldi recipes set).

``kind="waveform"`` is the input of models that bring their own front end (SpeechBrain's Fbank inside a
:class:`spkver.nn.ecapa.ECAPA` read from a SpeechBrain folder): the (resampled) samples themselves as
``(samples, 1)``, one "frame" per sample, so frame-based bookkeeping (``frame_shift_ms``, fixed at
``1000 / sample_rate``, chunk and window lengths) counts samples; no CMN, no VAD.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("mfcc", "fbank", "waveform")
INT16_SCALE = 32768.0
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0


@dataclass
class FeatureConfig:
    """Feature extraction options (the defaults are the VoxCeleb preset, Kaldi egs/voxceleb/v2).

    ``high_freq <= 0`` is an offset from the Nyquist frequency (Kaldi's convention). ``cmn_window=0`` turns
    sliding CMN off. VAD options are Kaldi ``compute-vad``'s, at the values of the recipes' ``conf/vad.conf``
    (Kaldi's own default for ``vad_frames_context`` is 0; the recipes use 2).
    For ``kind="waveform"`` the framing, CMN and VAD options do not apply: frame length and shift are set to one
    sample, ``cmn_window`` to 0 and ``vad`` to false.
    """

    kind: str = "mfcc"
    sample_rate: int = 16000
    num_mel_bins: int = 30
    num_ceps: int = 30
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = -400.0
    dither: float = 0.0
    snip_edges: bool = False
    use_energy: bool = True
    energy_floor: float = 0.0
    cmn_window: int = 300
    cmn_norm_vars: bool = False
    vad: bool = True
    vad_energy_threshold: float = 5.5
    vad_energy_mean_scale: float = 0.5
    vad_frames_context: int = 2
    vad_proportion_threshold: float = 0.12

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"FeatureConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "waveform" and isinstance(self.sample_rate, int) and self.sample_rate > 0:
            self.frame_length_ms = self.frame_shift_ms = 1000.0 / self.sample_rate
            self.cmn_window, self.vad = 0, False
        for name in ("sample_rate", "num_mel_bins", "num_ceps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FeatureConfig.{name} must be a positive int, got {value!r}")
        if self.kind == "mfcc" and self.num_ceps > self.num_mel_bins:
            raise ValueError(f"FeatureConfig.num_ceps ({self.num_ceps}) exceeds num_mel_bins ({self.num_mel_bins})")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ValueError(f"FeatureConfig needs 0 < frame_shift_ms <= frame_length_ms, got "
                             f"{self.frame_shift_ms} and {self.frame_length_ms}")
        nyquist = self.sample_rate / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not 0 <= self.low_freq < high <= nyquist:
            raise ValueError(f"FeatureConfig needs 0 <= low_freq < high_freq <= {nyquist} Hz, got "
                             f"low_freq={self.low_freq}, high_freq={self.high_freq} (= {high} Hz)")
        if self.dither < 0 or self.energy_floor < 0:
            raise ValueError("FeatureConfig.dither and energy_floor must be >= 0")
        if isinstance(self.cmn_window, bool) or not isinstance(self.cmn_window, int) or self.cmn_window < 0:
            raise ValueError(f"FeatureConfig.cmn_window must be an int >= 0, got {self.cmn_window!r}")
        if not 0 < self.vad_proportion_threshold < 1:
            raise ValueError("FeatureConfig.vad_proportion_threshold must lie in (0, 1), got "
                             f"{self.vad_proportion_threshold}")
        if not isinstance(self.vad_frames_context, int) or self.vad_frames_context < 0:
            raise ValueError(f"FeatureConfig.vad_frames_context must be an int >= 0, got {self.vad_frames_context!r}")
        if self.vad_energy_mean_scale < 0:
            raise ValueError(f"FeatureConfig.vad_energy_mean_scale must be >= 0, got {self.vad_energy_mean_scale}")

    # -------------------------------------------------------------------------------------- presets
    @classmethod
    def voxceleb(cls, **overrides) -> "FeatureConfig":
        """Kaldi egs/voxceleb/v2 ``conf/mfcc.conf``: 16 kHz, 30 mel bins, 30 ceps, 20-7600 Hz, no snip-edges."""
        return cls(**{**dict(kind="mfcc", sample_rate=16000, num_mel_bins=30, num_ceps=30, low_freq=20.0,
                             high_freq=-400.0), **overrides})

    @classmethod
    def sre(cls, **overrides) -> "FeatureConfig":
        """Kaldi egs/sre16/v2 ``conf/mfcc.conf``: 8 kHz, 23 ceps, 20-3700 Hz, no snip-edges.

        That file does not set ``--num-mel-bins``, so Kaldi's default of 23 applies.
        """
        return cls(**{**dict(kind="mfcc", sample_rate=8000, num_mel_bins=23, num_ceps=23, low_freq=20.0,
                             high_freq=3700.0), **overrides})

    @classmethod
    def fbank80(cls, **overrides) -> "FeatureConfig":
        """80 log mel filterbanks at 16 kHz (WeSpeaker / SpeechBrain style), 20 Hz up to Nyquist."""
        return cls(**{**dict(kind="fbank", sample_rate=16000, num_mel_bins=80, num_ceps=80, low_freq=20.0,
                             high_freq=0.0, use_energy=False), **overrides})

    # --------------------------------------------------------------------------------------- helpers
    @property
    def dim(self) -> int:
        """Feature dimension of :func:`compute_features`' output."""
        if self.kind == "waveform":
            return 1
        if self.kind == "mfcc":
            return self.num_ceps
        return self.num_mel_bins + int(self.use_energy)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        """Build from a dict (e.g. a YAML section); unknown keys are rejected naming the valid ones."""
        if not isinstance(d, dict):
            raise ValueError(f"feature config must be a mapping, got {type(d).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown feature option(s) {unknown}; valid options: {', '.join(valid)}")
        return cls(**d)


# ------------------------------------------------------------------------------------------- stages
def _as_wave(wave, cfg: FeatureConfig, sample_rate: int | None) -> torch.Tensor:
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    elif not isinstance(wave, torch.Tensor):
        raise TypeError(f"wave must be a numpy array or torch tensor, got {type(wave).__name__}")
    if wave.dim() != 1:
        raise ValueError(f"wave must be 1-D (samples,), got shape {tuple(wave.shape)}")
    wave = wave.to(torch.float32)
    if not torch.isfinite(wave).all():
        raise ValueError("wave contains NaN or infinite samples")
    if sample_rate is not None and sample_rate != cfg.sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, int(sample_rate), cfg.sample_rate)
    return wave


@functools.lru_cache(maxsize=16)
def _front_end_matrices(cfg_key: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Povey window ``(frame_len,)``, mel banks ``(fft_bins, num_mel_bins)``, DCT*lifter ``(bins, ceps)``."""
    import torchaudio.compliance.kaldi as K

    kind, sr, frame_len, n_fft, num_mel_bins, num_ceps, low, high = cfg_key
    window = torch.hann_window(frame_len, periodic=False, dtype=torch.float64).pow(0.85).float()
    banks, _ = K.get_mel_banks(num_mel_bins, n_fft, float(sr), float(low), float(high), 100.0, -500.0, 1.0)
    banks = banks.t().contiguous().float()  # (n_fft // 2, num_mel_bins); the Nyquist bin has weight 0
    if kind != "mfcc":
        return window, banks, None
    n = np.arange(num_mel_bins)[:, None] + 0.5
    k = np.arange(num_ceps)[None, :]
    dct = np.sqrt(2.0 / num_mel_bins) * np.cos(np.pi / num_mel_bins * n * k)  # Kaldi ComputeDctMatrix
    dct[:, 0] = np.sqrt(1.0 / num_mel_bins)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * np.arange(num_ceps) / CEPSTRAL_LIFTER)
    return window, banks, torch.from_numpy(dct * lifter[None, :]).float()


def _frames(x: torch.Tensor, frame_len: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """Kaldi ExtractWindow framing: ``(samples,)`` -> ``(frames, frame_len)`` (a strided view when possible).

    Without ``snip_edges`` frame ``f`` starts at ``f * shift + shift // 2 - frame_len // 2`` and samples outside
    the signal are reflected (index -1 -> 0, n -> n - 1), repeatedly for very short signals, as in Kaldi.
    """
    n = x.shape[0]
    if snip_edges:
        m = 1 + (n - frame_len) // shift
        first = 0
    else:
        m = (n + shift // 2) // shift
        first = shift // 2 - frame_len // 2
    span = (m - 1) * shift + frame_len
    left, right = max(0, -first), max(0, first + span - n)
    if left == 0 and right == 0:
        x = x[first:first + span]
    elif left <= n and right <= n:  # one reflection at each end
        x = torch.cat([x[:left].flip(0), x[max(first, 0):], x[n - right:].flip(0)])[:span]
    else:  # very short signal: reflect repeatedly
        idx = torch.arange(first, first + span) % (2 * n)
        x = x[torch.where(idx >= n, 2 * n - 1 - idx, idx)]
    return x.as_strided((m, frame_len), (shift, 1))


def kaldi_features(wave, cfg: FeatureConfig, sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (un-normalised) Kaldi MFCC or fbank features and the per-frame quantity VAD looks at.

    Kaldi's ``compute-mfcc-feats`` / ``compute-fbank-feats`` (povey window, pre-emphasis 0.97, DC removal, raw
    energy, FFT size the next power of two, cepstral lifter 22), written out here with cached matrices; the
    result equals ``torchaudio.compliance.kaldi.mfcc`` / ``fbank`` with the same options (see the tests) in
    about a third of the time.

    Args:
        wave: ``(samples,)`` float waveform in [-1, 1] at ``cfg.sample_rate`` (or at ``sample_rate``, then
            resampled).
    Returns:
        ``feats (frames, cfg.dim)`` and ``vad_energy (frames,)``: column 0 of the MFCCs (the raw log energy
        with ``use_energy``, else C0) or, for fbank, the raw log energy.
    """
    wave = _as_wave(wave, cfg, sample_rate)
    frame_len = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    shift = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
    n_frames = (1 + (len(wave) - frame_len) // shift if len(wave) >= frame_len else 0) if cfg.snip_edges \
        else (len(wave) + shift // 2) // shift
    if n_frames < 1:
        raise ValueError(f"wave of {len(wave)} samples is too short for one {cfg.frame_length_ms} ms frame")
    n_fft = 1 << (frame_len - 1).bit_length()
    window, banks, dct = _front_end_matrices((cfg.kind, cfg.sample_rate, frame_len, n_fft, cfg.num_mel_bins,
                                              cfg.num_ceps, cfg.low_freq, cfg.high_freq))
    eps = torch.finfo(torch.float32).eps
    with torch.no_grad():
        frames = _frames(wave * INT16_SCALE, frame_len, shift, cfg.snip_edges)  # (frames, frame_len)
        if cfg.dither > 0:
            frames = frames + cfg.dither * torch.randn(frames.shape)
        frames = frames - frames.mean(dim=1, keepdim=True)
        energy = frames.square().sum(dim=1).clamp(min=eps).log()  # raw log energy, (frames,)
        if cfg.energy_floor > 0:
            energy = energy.clamp(min=float(np.log(cfg.energy_floor)))
        emph = frames - PREEMPHASIS * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[-1] := x[0]
        spec = torch.fft.rfft(emph * window, n=n_fft)[:, :n_fft // 2]  # the Nyquist bin has no mel weight
        power = spec.real.square() + spec.imag.square()
        mel = (power @ banks).clamp(min=eps).log()  # (frames, num_mel_bins)
        if cfg.kind == "mfcc":
            feats = mel @ dct  # (frames, num_ceps)
            if cfg.use_energy:
                feats[:, 0] = energy
            return feats, feats[:, 0]
        if cfg.use_energy:
            mel = torch.cat([energy.unsqueeze(1), mel], dim=1)
        return mel, energy


def sliding_cmn(feats: torch.Tensor, window: int = 300, norm_vars: bool = False) -> torch.Tensor:
    """Kaldi ``apply-cmvn-sliding --center=true --cmn-window=window`` in O(frames * dim) with cumulative sums.

    Frame ``t`` is normalised by the statistics of frames ``[s, s + window)``, ``s = t - window // 2`` shifted
    right at the start and left at the end of the utterance so that the window stays inside it (all frames
    when the utterance is shorter than ``window``), as Kaldi's ``SlidingWindowCmnInternal`` does.

    Args:
        feats: ``(frames, dim)``. Returns ``(frames, dim)``, the same dtype.
    """
    if feats.dim() != 2:
        raise ValueError(f"feats must be (frames, dim), got shape {tuple(feats.shape)}")
    n = feats.shape[0]
    if window <= 0 or n == 0:
        return feats
    x = feats.to(torch.float64)
    zero = torch.zeros(1, x.shape[1], dtype=torch.float64)
    csum = torch.cat([zero, x.cumsum(0)])  # (frames + 1, dim)
    t = torch.arange(n)
    start = (t - window // 2).clamp(0, max(n - window, 0))
    end = (start + window).clamp(max=n)
    count = (end - start).to(torch.float64).unsqueeze(1)
    mean = (csum[end] - csum[start]) / count
    out = x - mean
    if norm_vars:
        csq = torch.cat([zero, (x * x).cumsum(0)])
        var = (csq[end] - csq[start]) / count - mean * mean
        out = out / var.clamp(min=1e-10).sqrt()
    return out.to(feats.dtype)


def energy_vad(log_energy: torch.Tensor, threshold: float = 5.5, mean_scale: float = 0.5,
               frames_context: int = 2, proportion_threshold: float = 0.12) -> torch.Tensor:
    """Kaldi ``compute-vad`` (ivector/voice-activity-detection.cc), vectorised.

    A frame is above threshold when its log energy exceeds ``threshold + mean_scale * mean(log_energy)``;
    frame ``t`` is voiced when at least ``proportion_threshold`` of the frames in ``[t - c, t + c]`` (clipped to
    the utterance) are above threshold.

    Args:
        log_energy: ``(frames,)``. Returns a bool mask ``(frames,)``.
    """
    if log_energy.dim() != 1:
        raise ValueError(f"log_energy must be (frames,), got shape {tuple(log_energy.shape)}")
    n = log_energy.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.bool)
    thr = threshold + (mean_scale * float(log_energy.sum()) / n if mean_scale != 0 else 0.0)
    above = (log_energy > thr).to(torch.int64)
    csum = torch.cat([torch.zeros(1, dtype=torch.int64), above.cumsum(0)])
    t = torch.arange(n)
    lo = (t - frames_context).clamp(min=0)
    hi = (t + frames_context + 1).clamp(max=n)
    num = csum[hi] - csum[lo]
    den = (hi - lo).to(torch.float64)
    return num.to(torch.float64) >= den * proportion_threshold


def features_and_vad(wave, cfg: FeatureConfig, sample_rate: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """CMN'd features ``(frames, cfg.dim)`` and the voiced-frame mask ``(frames,)`` (all True without VAD;
    for ``kind="waveform"`` the samples ``(samples, 1)``, all "voiced")."""
    if cfg.kind == "waveform":
        wave = _as_wave(wave, cfg, sample_rate)
        if len(wave) == 0:
            raise ValueError("wave has no samples")
        return wave.unsqueeze(1), torch.ones(len(wave), dtype=torch.bool)
    feats, energy = kaldi_features(wave, cfg, sample_rate)
    if cfg.cmn_window > 0:
        feats = sliding_cmn(feats, cfg.cmn_window, cfg.cmn_norm_vars)
    if not cfg.vad:
        return feats, torch.ones(feats.shape[0], dtype=torch.bool)
    voiced = energy_vad(energy, cfg.vad_energy_threshold, cfg.vad_energy_mean_scale, cfg.vad_frames_context,
                        cfg.vad_proportion_threshold)
    return feats, voiced


def compute_features(wave, cfg: FeatureConfig | None = None, sample_rate: int | None = None,
                     min_speech_frames: int = 0) -> torch.Tensor:
    """Features as Kaldi's x-vector recipes make them: raw features -> sliding CMN -> voiced frames.

    Args:
        wave: ``(samples,)`` numpy array or tensor in [-1, 1] at ``cfg.sample_rate``; give ``sample_rate`` to
            have it resampled to ``cfg.sample_rate`` first.
        cfg: options (default: :meth:`FeatureConfig.voxceleb`).
        min_speech_frames: raise ``ValueError`` when fewer frames than this are voiced (every frame counts
            when VAD is off); 0 never raises.
    Returns:
        float32 tensor ``(voiced_frames, cfg.dim)``; all frames when VAD is off or finds no voiced frame; for
        ``kind="waveform"`` the samples, ``(samples, 1)``.
    """
    cfg = FeatureConfig() if cfg is None else cfg
    feats, voiced = features_and_vad(wave, cfg, sample_rate)
    n_speech = int(voiced.sum())
    if n_speech < min_speech_frames:
        raise ValueError(f"too little speech: {n_speech} of {len(voiced)} frames are speech after VAD, fewer "
                         f"than the {min_speech_frames} ({min_speech_frames * cfg.frame_shift_ms / 1000:g} s) "
                         "needed")
    if cfg.vad and bool(voiced.any()):
        feats = feats[voiced]
    return feats.contiguous()
