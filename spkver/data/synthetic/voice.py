"""Source-filter voice synthesiser: speaker voices (:class:`VoiceParams`) and babble-like utterances.

The model is the classic formant synthesiser (Klatt, "Software for a cascade/parallel formant synthesizer",
JASA 67(3), 1980), simplified:

- **Source**: a Rosenberg glottal pulse train (Rosenberg, "Effect of glottal pulse shape on the quality of
  natural vowels", JASA 49, 1971), differentiated to fold in lip radiation, driven by an F0 contour
  (declination plus smooth random intonation) with per-cycle jitter (F0) and shimmer (amplitude), plus
  aspiration noise gated by the glottal opening (breathiness).
- **Vocal tract**: a cascade of five second-order resonators F1..F5 (Klatt's resonator, unity gain at 0 Hz)
  whose frequencies and bandwidths follow smoothed per-phone targets; frication goes through a parallel
  band-pass branch. The time-varying filter is applied block-wise: 16 ms Hann-windowed blocks every 8 ms are
  filtered in the frequency domain (FFT of four times the hop, so the resonators' ringing has room) and
  overlap-added, which cross-fades the filter settings from block to block.
- **Phones**: a small inventory of vowels (adult male formant targets of Peterson & Barney, "Control methods
  used in a study of the vowels", JASA 24, 1952), nasals, approximants, fricatives, stops and pauses, strung
  into random CV(C) syllables.

Speaker identity lives in :class:`VoiceParams`: F0 level and range, a vocal-tract length factor scaling all
formants, a fixed per-formant offset pattern and a per-vowel offset pattern ("accent"), bandwidths, glottal
pulse shape, spectral tilt, jitter, shimmer, breathiness, speaking rate and sibilant frequency.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import convolve1d

N_FORMANTS = 5
SEXES = ("m", "f")
AGE_GROUPS = ("adult", "child")

# name: (kind, F1..F5 targets in Hz for the reference adult male vocal tract). Consonant rows hold the
# formant loci the transitions head for. Kinds: V vowel, N nasal, A approximant, F fricative (voiceless),
# Z voiced fricative, S stop, P pause.
PHONES: dict[str, tuple[str, tuple[float, ...]]] = {
    "i": ("V", (270, 2290, 3010, 3500, 4500)), "I": ("V", (390, 1990, 2550, 3500, 4500)),
    "E": ("V", (530, 1840, 2480, 3500, 4500)), "ae": ("V", (660, 1720, 2410, 3500, 4500)),
    "a": ("V", (730, 1090, 2440, 3500, 4500)), "O": ("V", (570, 840, 2410, 3500, 4500)),
    "U": ("V", (440, 1020, 2240, 3500, 4500)), "u": ("V", (300, 870, 2240, 3500, 4500)),
    "^": ("V", (640, 1190, 2390, 3500, 4500)), "3": ("V", (490, 1350, 1690, 3500, 4500)),
    "m": ("N", (280, 1000, 2200, 3300, 4500)), "n": ("N", (280, 1500, 2500, 3400, 4500)),
    "l": ("A", (360, 1300, 2700, 3500, 4500)), "r": ("A", (310, 1060, 1380, 3200, 4500)),
    "w": ("A", (290, 610, 2150, 3300, 4500)), "j": ("A", (260, 2070, 3020, 3600, 4500)),
    "s": ("F", (300, 1700, 2600, 3500, 4500)), "S": ("F", (300, 1900, 2500, 3500, 4500)),
    "f": ("F", (300, 900, 2200, 3400, 4500)), "h": ("F", (500, 1500, 2500, 3500, 4500)),
    "z": ("Z", (300, 1700, 2600, 3500, 4500)), "v": ("Z", (300, 900, 2200, 3400, 4500)),
    "p": ("S", (300, 900, 2200, 3400, 4500)), "t": ("S", (300, 1700, 2600, 3500, 4500)),
    "k": ("S", (300, 1900, 2300, 3400, 4500)), "b": ("S", (300, 900, 2200, 3400, 4500)),
    "d": ("S", (300, 1700, 2600, 3500, 4500)), "g": ("S", (300, 1900, 2300, 3400, 4500)),
    "_": ("P", (500, 1500, 2500, 3500, 4500)),
}
CLOSURE = "#"  # suffix of a stop's closure phase in phone sequences
VOWELS = tuple(p for p, (kind, _) in PHONES.items() if kind == "V")
CONSONANTS = tuple(p for p, (kind, _) in PHONES.items() if kind not in ("V", "P"))
PULSE_TABLE = 8192  # samples of one glottal period in the look-up table
BANDWIDTHS = (80.0, 100.0, 140.0, 220.0, 300.0)  # reference formant bandwidths in Hz
# Frication band (centre relative to the speaker's sibilant frequency, bandwidth in Hz) per noise phone;
# "h" is aspiration through the vocal tract instead.
FRICATION = {"s": (1.0, 2500.0), "z": (1.0, 2500.0), "S": (0.55, 1800.0), "f": (1.2, 6000.0),
             "v": (1.2, 6000.0), "p": (0.2, 1500.0), "b": (0.2, 1500.0), "t": (0.75, 3000.0),
             "d": (0.75, 3000.0), "k": (0.4, 1500.0), "g": (0.4, 1500.0)}


@dataclass(frozen=True)
class VoiceParams:
    """One speaker's (or one session's) voice. Frequencies in Hz, factors relative to 1.

    Attributes:
        sex, age_group: ``"m"|"f"`` and ``"adult"|"child"`` (metadata; the numbers below carry the voice).
        f0_hz: mean fundamental frequency. f0_range_st: std of the intonation in semitones.
        declination_st: F0 fall in semitones over an utterance.
        vtl_factor: formant frequency scale (1 = reference adult male; shorter tracts are > 1).
        formant_offsets: ``(5,)`` relative offsets of F1..F5, fixed for the speaker.
        vowel_offsets: ``(len(VOWELS), 3)`` relative offsets of F1..F3 per vowel ("accent").
        bandwidth_factor: formant bandwidth scale. tilt_db_oct: extra source tilt in dB/octave around 1 kHz.
        open_quotient, speed_quotient: Rosenberg pulse open phase (fraction of the period) and
            opening/closing duration ratio.
        jitter, shimmer: per-cycle std of the relative F0 and amplitude perturbations.
        breathiness: aspiration noise level relative to the voiced source.
        rate: speaking rate (phone durations are divided by it). sibilant_hz: centre of /s/ frication.
    """

    sex: str
    age_group: str
    f0_hz: float
    f0_range_st: float
    declination_st: float
    vtl_factor: float
    formant_offsets: tuple[float, ...]
    vowel_offsets: tuple[tuple[float, ...], ...]
    bandwidth_factor: float
    tilt_db_oct: float
    open_quotient: float
    speed_quotient: float
    jitter: float
    shimmer: float
    breathiness: float
    rate: float
    sibilant_hz: float

    def __post_init__(self) -> None:
        if self.sex not in SEXES or self.age_group not in AGE_GROUPS:
            raise ValueError(f"VoiceParams: sex must be one of {SEXES} and age_group one of {AGE_GROUPS}, "
                             f"got {self.sex!r}, {self.age_group!r}")
        for name in ("f0_hz", "vtl_factor", "bandwidth_factor", "rate", "sibilant_hz", "speed_quotient"):
            if not getattr(self, name) > 0:
                raise ValueError(f"VoiceParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("f0_range_st", "jitter", "shimmer", "breathiness"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"VoiceParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.2 <= self.open_quotient <= 0.95:
            raise ValueError(f"VoiceParams.open_quotient must lie in [0.2, 0.95], got {self.open_quotient!r}")
        if len(self.formant_offsets) != N_FORMANTS:
            raise ValueError(f"VoiceParams.formant_offsets needs {N_FORMANTS} values, got "
                             f"{len(self.formant_offsets)}")
        if len(self.vowel_offsets) != len(VOWELS) or any(len(row) != 3 for row in self.vowel_offsets):
            raise ValueError(f"VoiceParams.vowel_offsets must be {len(VOWELS)} rows of 3 values")
        if min(self.formant_offsets) <= -0.5 or min(min(r) for r in self.vowel_offsets) <= -0.5:
            raise ValueError("VoiceParams formant offsets must be > -0.5")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VoiceParams":
        """Inverse of :meth:`to_dict`; unknown or missing keys raise naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) != names:
            raise ValueError(f"VoiceParams: unknown keys {sorted(set(d) - names)}, missing {sorted(names - set(d))}")
        d = dict(d, formant_offsets=tuple(d["formant_offsets"]),
                 vowel_offsets=tuple(tuple(r) for r in d["vowel_offsets"]))
        return cls(**d)


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


def sample_speaker(rng: np.random.Generator, sex: str | None = None, age_group: str | None = None,
                   child_fraction: float = 0.15) -> VoiceParams:
    """Draw a random speaker: sex and age group (unless given), then every voice parameter.

    F0 and vocal-tract length follow the group (adult male ~115 Hz and factor 1, adult female ~205 Hz and
    ~1.17, child ~265 Hz and ~1.3), with individual spread; everything else is drawn per speaker.
    """
    if sex is None:
        sex = SEXES[int(rng.integers(2))]
    if age_group is None:
        age_group = "child" if rng.random() < child_fraction else "adult"
    if sex not in SEXES or age_group not in AGE_GROUPS:
        raise ValueError(f"sample_speaker: sex must be one of {SEXES} and age_group one of {AGE_GROUPS}, "
                         f"got {sex!r}, {age_group!r}")
    f0, vtl = {("m", "adult"): (115.0, 1.0), ("f", "adult"): (205.0, 1.17)}.get((sex, age_group), (265.0, 1.3))
    return VoiceParams(
        sex=sex, age_group=age_group,
        f0_hz=_lognormal(rng, f0, 0.14),
        f0_range_st=_lognormal(rng, 2.0, 0.35),
        declination_st=float(rng.uniform(0.5, 4.0)),
        vtl_factor=_lognormal(rng, vtl, 0.05),
        formant_offsets=tuple(float(x) for x in np.clip(rng.normal(0, [0.04, 0.04, 0.05, 0.06, 0.06]), -0.2, 0.2)),
        vowel_offsets=tuple(tuple(float(x) for x in row)
                            for row in np.clip(rng.normal(0, 0.07, (len(VOWELS), 3)), -0.25, 0.25)),
        bandwidth_factor=_lognormal(rng, 1.0, 0.2),
        tilt_db_oct=float(rng.normal(0.0, 1.5)),
        open_quotient=float(rng.uniform(0.45, 0.8)),
        speed_quotient=float(rng.uniform(1.5, 4.0)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.1)),
        breathiness=_lognormal(rng, 0.08, 0.6),
        rate=_lognormal(rng, 1.0, 0.12),
        sibilant_hz=_lognormal(rng, 5500.0 * (1.0 if vtl == 1.0 else 1.12), 0.1),
    )


def vary_session(voice: VoiceParams, rng: np.random.Generator, amount: float = 1.0) -> VoiceParams:
    """The same speaker on another day: small changes of F0 level, range, rate, effort (tilt), breathiness.

    ``amount`` scales every perturbation (0 returns ``voice`` unchanged).
    """
    if amount < 0:
        raise ValueError(f"vary_session: amount must be >= 0, got {amount}")
    z = rng.standard_normal(6) * amount
    return dataclasses.replace(
        voice,
        f0_hz=voice.f0_hz * math.exp(0.06 * z[0]),
        f0_range_st=voice.f0_range_st * math.exp(0.2 * z[1]),
        rate=voice.rate * math.exp(0.06 * z[2]),
        tilt_db_oct=voice.tilt_db_oct + 1.0 * z[3],
        breathiness=voice.breathiness * math.exp(0.3 * z[4]),
        vtl_factor=voice.vtl_factor * math.exp(0.01 * z[5]),
    )


# -------------------------------------------------------------------------------------------- phones
def _phone_sequence(rng: np.random.Generator, seconds: float, rate: float) -> list[tuple[str, float]]:
    """Random ``(phone, seconds)`` list lasting at least ``seconds``: pauses around CV(C) syllables."""
    def dur(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi)) / rate

    out: list[tuple[str, float]] = [("_", float(rng.uniform(0.1, 0.3)))]
    total = out[0][1]

    def add(phone: str, seconds_: float) -> None:
        nonlocal total
        if PHONES[phone][0] == "S":  # closure ("#": silent, or a voice bar for b/d/g) then burst
            out.extend([(phone + CLOSURE, seconds_ * 0.75), (phone, seconds_ * 0.25)])
        else:
            out.append((phone, seconds_))
        total += seconds_

    while total < seconds:
        if rng.random() < 0.7:
            add(CONSONANTS[int(rng.integers(len(CONSONANTS)))], dur(0.05, 0.11))
        add(VOWELS[int(rng.integers(len(VOWELS)))], dur(0.07, 0.16) * (1.4 if rng.random() < 0.3 else 1.0))
        if rng.random() < 0.35:
            add(CONSONANTS[int(rng.integers(len(CONSONANTS)))], dur(0.05, 0.1))
        if rng.random() < 0.12:
            add("_", dur(0.08, 0.3))
    return out


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Hann-kernel smoothing along axis 0 (edges held), for formant and amplitude trajectories."""
    if width < 2:
        return x
    kernel = np.hanning(width + 2)[1:-1]
    return convolve1d(x, kernel / kernel.sum(), axis=0, mode="nearest")


def _tracks(voice: VoiceParams, phones: list[tuple[str, float]], n_frames: int, frame_s: float,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame control tracks: formants (n_frames, 5), amplitudes and frication band (n_frames,)."""
    names = [p for p, _ in phones]
    bounds = np.round(np.cumsum([s for _, s in phones]) / frame_s).astype(int)
    counts = np.diff(np.concatenate([[0], np.minimum(bounds, n_frames)]))
    counts[-1] += n_frames - counts.sum()
    vowel_index = {v: i for i, v in enumerate(VOWELS)}
    offsets = np.asarray(voice.vowel_offsets)
    stress = np.exp(rng.normal(0, 0.25, len(phones)))  # per-phone loudness variation (~2 dB)
    formants, av, af, ah, fc, fbw = [], [], [], [], [], []
    for i, name in enumerate(names):
        closure = name.endswith(CLOSURE)
        name = name.removesuffix(CLOSURE)
        kind, targets = PHONES[name]
        f = np.asarray(targets, dtype=float)
        if kind == "V":
            f[:3] *= 1.0 + offsets[vowel_index[name]]
        formants.append(f)
        voice_bar = 0.12 if name in ("b", "d", "g") else 0.0
        av.append({"V": 1.0, "A": 0.6, "N": 0.35, "Z": 0.3, "S": voice_bar}.get(kind, 0.0) * stress[i])
        band = None if closure else FRICATION.get(name)
        af.append((0.0 if band is None else {"S": 0.5, "Z": 0.25}.get(kind, 0.35)) * stress[i])
        ah.append(0.5 * stress[i] if name == "h" else 0.0)
        fc.append(voice.sibilant_hz * (band[0] if band else 1.0))
        fbw.append(band[1] if band else 2000.0)
    rep = lambda values: np.repeat(np.asarray(values, dtype=float), counts, axis=0)  # noqa: E731
    scale = voice.vtl_factor * (1.0 + np.asarray(voice.formant_offsets))
    return {
        "formants": _smooth(rep(formants), 7) * scale,  # ~50 ms transitions
        "bandwidths": np.asarray(BANDWIDTHS) * voice.bandwidth_factor * np.ones((n_frames, 1)),
        "av": _smooth(rep(av), 3), "af": _smooth(rep(af), 3), "ah": _smooth(rep(ah), 3),
        "fc": _smooth(rep(fc), 3), "fbw": _smooth(rep(fbw), 3),
    }


# -------------------------------------------------------------------------------------------- source
def _f0_track(voice: VoiceParams, n_frames: int, frame_s: float, rng: np.random.Generator) -> np.ndarray:
    """F0 per frame (Hz): declination over the utterance plus smooth random intonation (semitones)."""
    t = np.linspace(0.5, -0.5, n_frames)
    wiggle = _smooth(rng.standard_normal(n_frames + 60), max(3, int(0.15 / frame_s)))[30:-30]
    wiggle *= voice.f0_range_st / max(float(wiggle.std()), 1e-6)
    return voice.f0_hz * 2.0 ** ((voice.declination_st * t + wiggle) / 12.0)


def _glottal_source(voice: VoiceParams, f0: np.ndarray, rng: np.random.Generator, sample_rate: int):
    """Rosenberg flow derivative (samples,) with jitter and shimmer, and the open-phase flow (samples,)."""
    cycles = np.cumsum(f0 / sample_rate).astype(np.int64)  # cycle index before jitter
    n_cycles = int(cycles[-1]) + 2
    f0 = f0 * (1.0 + voice.jitter * rng.standard_normal(n_cycles))[cycles]
    phase = np.cumsum(f0 / sample_rate)
    cycle = phase.astype(np.int64)
    t = phase - cycle
    oq = voice.open_quotient
    tp = oq * voice.speed_quotient / (1.0 + voice.speed_quotient)  # opening part of the period
    tn = oq - tp  # closing part
    grid = np.linspace(0.0, 1.0, PULSE_TABLE + 1)
    pulse = np.where(grid < tp, 0.5 * (1.0 - np.cos(np.pi * grid / tp)),
                     np.where(grid < oq, np.cos(0.5 * np.pi * (grid - tp) / tn), 0.0))
    flow = pulse[(t * PULSE_TABLE).astype(np.int64)]  # table look-up of the pulse at each sample's phase
    flow *= np.exp(voice.shimmer * rng.standard_normal(n_cycles + 1))[np.minimum(cycle, n_cycles)]  # shimmer
    deriv = np.diff(flow, prepend=0.0)
    deriv /= max(float(np.sqrt(np.mean(deriv ** 2))), 1e-12)
    return deriv, flow


# -------------------------------------------------------------------------------------------- filter
def _cascade_denominator(formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int):
    """All-pole polynomial ``(n_frames, 11)`` and gain ``(n_frames,)`` of five Klatt resonators in cascade.

    Klatt (1980): y[n] = A x[n] + B y[n-1] + C y[n-2], C = -exp(-2 pi BW T), B = 2 exp(-pi BW T) cos(2 pi F T),
    A = 1 - B - C (unity gain at 0 Hz). The cascade is 1 / prod_k (1 - B_k z^-1 - C_k z^-2) times prod_k A_k;
    its response on the FFT grid is ``gain / rfft(poly, nfft)``. Resonators above 0.47 * sample_rate are
    left out.
    """
    T = 1.0 / sample_rate
    keep = formants < 0.47 * sample_rate
    r = np.exp(-np.pi * bandwidths * T)
    B = np.where(keep, 2.0 * r * np.cos(2.0 * np.pi * formants * T), 0.0)
    C = np.where(keep, -r * r, 0.0)
    poly = np.zeros((formants.shape[0], 2 * formants.shape[1] + 1))
    poly[:, 0] = 1.0
    for k in range(formants.shape[1]):  # multiply by (1 - B z^-1 - C z^-2), highest powers first
        top = 2 * k + 2
        poly[:, 2:top + 1] -= B[:, k:k + 1] * poly[:, 1:top] + C[:, k:k + 1] * poly[:, 0:top - 1]
        poly[:, 1] -= B[:, k] * poly[:, 0]
    return poly, np.prod(1.0 - B - C, axis=1)


def synthesize(voice: VoiceParams, n_seconds: float, rng: np.random.Generator, sample_rate: int = 16000,
               eq: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Synthesise one utterance of random phones spoken by ``voice``.

    Args:
        voice: the speaker's (or session's) voice.
        n_seconds: duration; the output has ``round(n_seconds * sample_rate)`` samples.
        rng: source of the utterance's randomness (phones, intonation, jitter, noise).
        sample_rate: output rate in Hz (>= 8000).
        eq: optional recording-channel magnitude response ``eq(freqs_hz (n_bins,)) -> gains (n_bins,)``,
            applied inside the same block-wise filter (a static linear filter on the whole output).
    Returns:
        float32 ``(samples,)`` with the active-speech RMS at -26 dBFS (scaled down if the peak would
        exceed 0.9).
    """
    if not isinstance(voice, VoiceParams):
        raise TypeError(f"synthesize: voice must be a VoiceParams, got {type(voice).__name__}")
    if not (isinstance(sample_rate, int) and sample_rate >= 8000):
        raise ValueError(f"synthesize: sample_rate must be an int >= 8000, got {sample_rate!r}")
    if not (math.isfinite(n_seconds) and n_seconds >= 0.1):
        raise ValueError(f"synthesize: n_seconds must be a finite number >= 0.1, got {n_seconds!r}")
    n = int(round(n_seconds * sample_rate))
    hop = sample_rate // 125  # 8 ms blocks
    win, nfft = 2 * hop, 4 * hop
    frame_s = hop / sample_rate
    n_frames = n // hop + 2  # block i is centred on sample i * hop
    phones = _phone_sequence(rng, n_seconds, voice.rate)
    tr = _tracks(voice, phones, n_frames, frame_s, rng)
    f0 = np.interp(np.arange(n), np.arange(n_frames) * hop, _f0_track(voice, n_frames, frame_s, rng))
    deriv, flow = _glottal_source(voice, f0, rng, sample_rate)
    noise = rng.standard_normal((2, n), dtype=np.float32)
    breath = noise[0] * (0.25 + flow)  # aspiration gated by the glottal opening

    def blocks(x: np.ndarray) -> np.ndarray:  # (n_frames, win), Hann-weighted, block i covers [i-1, i+1) hops
        padded = np.concatenate([np.zeros(hop), x, np.zeros(n_frames * hop + hop - n)])
        return sliding_window_view(padded, win)[::hop][:n_frames]

    window = np.hanning(win + 1)[:-1]  # periodic Hann: 50 % overlaps sum to one
    voiced = blocks(deriv + voice.breathiness * breath) * (tr["av"][:, None] * window)
    aspirated = tr["ah"] > 1e-3  # /h/: aspiration alone through the vocal tract
    if aspirated.any():
        voiced[aspirated] += blocks(noise[0])[aspirated] * (tr["ah"][aspirated, None] * window)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    tilt = (np.maximum(freqs, 50.0) / 1000.0) ** (voice.tilt_db_oct / (20 * math.log10(2)))
    poly, gain = _cascade_denominator(tr["formants"], tr["bandwidths"], sample_rate)
    spec = np.fft.rfft(voiced, nfft) * (gain[:, None] * tilt) / np.fft.rfft(poly, nfft)
    noisy = tr["af"] > 1e-3  # the frication branch only where it sounds
    if noisy.any():
        band = 1.0 / (1.0 + ((freqs - tr["fc"][noisy, None]) / (0.5 * tr["fbw"][noisy, None])) ** 2)
        fric = blocks(noise[1])[noisy] * (tr["af"][noisy, None] * window)
        spec[noisy] += np.fft.rfft(fric, nfft) * band
    if eq is not None:
        gains = np.asarray(eq(freqs), dtype=float)
        if gains.shape != freqs.shape or not np.all(np.isfinite(gains)):
            raise ValueError(f"synthesize: eq must return {freqs.shape} finite gains, got {gains.shape}")
        spec *= gains
    out_blocks = np.fft.irfft(spec, nfft)  # (n_frames, nfft): each block's filtered output
    out = np.zeros((n_frames + 3) * hop)
    for j in range(nfft // hop):  # overlap-add, one hop-wide column group at a time
        out[j * hop:j * hop + n_frames * hop] += out_blocks[:, j * hop:(j + 1) * hop].reshape(-1)
    out = out[hop:hop + n]
    return _normalise(out, sample_rate).astype(np.float32)


def active_rms(x: np.ndarray, sample_rate: int, floor_db: float = -35.0) -> float:
    """RMS over the 10 ms frames within ``floor_db`` of the loudest frame (a crude active speech level)."""
    hop = max(1, min(sample_rate // 100, len(x)))
    m = len(x) // hop
    if m == 0:
        return 0.0
    power = np.mean(x[:m * hop].reshape(m, hop).astype(np.float64) ** 2, axis=1)
    active = power[power >= power.max() * 10 ** (floor_db / 10)]
    return float(np.sqrt(active.mean()))


def _normalise(x: np.ndarray, sample_rate: int, level_db: float = -26.0, max_peak: float = 0.9) -> np.ndarray:
    rms = active_rms(x, sample_rate)
    if rms <= 0:
        return x
    x = x * (10 ** (level_db / 20) / rms)
    peak = float(np.max(np.abs(x)))
    return x * (max_peak / peak) if peak > max_peak else x
