"""Data augmentation for x-vector training: MUSAN noise / music / babble, RIR reverberation, telephone channel,
speed perturbation, and kinds that need no download (coloured noise, babble of other training speakers,
simulated rooms).

Follows Snyder et al., "X-vectors: robust DNN embeddings for speaker recognition", ICASSP 2018, and Kaldi
egs/voxceleb/v2/run.sh (steps/data/augment_data_dir.py, wav-reverberate):

- ``noise``: one MUSAN noise at 0-15 dB SNR (Kaldi draws from {0, 5, 10, 15} and adds foreground noises every
  second; here one noise, looped if short, spans the utterance at an SNR drawn uniformly from the range);
- ``music``: one MUSAN music excerpt at 5-15 dB; ``babble``: 3-7 MUSAN speech excerpts summed at 13-20 dB,
  or, without a MUSAN speech folder, excerpts of 3-7 other training speakers (``babble_pool``, a
  :class:`spkver.data.babble.BabblePool`; the call names the chunk's ``speaker``, never among the talkers), each
  talker scaled to unit power before the sum;
- ``colored``: Gaussian noise with a power spectrum ``1 / f^beta`` (``beta`` uniform in ``colored_beta``, 0 =
  white, 1 = pink, 2 = brown) kept between a lower edge drawn in ``colored_low_hz`` and an upper edge drawn in
  ``colored_high_hz`` (capped at Nyquist), at ``colored_snr`` (0-15 dB); generated, needs no folder, drawn
  only when listed in ``kinds``;
- ``reverb``: convolution with a random room impulse response (``torchaudio.functional.fftconvolve``), output
  aligned on the direct path and rescaled to the input power (wav-reverberate's --shift-output and
  --normalize-output); the RIRs come from a folder (``rir``) and/or are simulated once (``simulate_rir``:
  :func:`spkver.data.rir.simulate_rirs` settings, cached under ``rir_cache`` in a folder per settings);
- ``telephone`` / :func:`telephone_channel`: 8 kHz, 300-3400 Hz band-pass, G.711 mu-law, back to the input
  rate (or kept at 8 kHz); needs no folder, and is drawn by :class:`Augmenter` only when listed in ``kinds``;
- :func:`speed_perturb`: Kaldi/sox-style speed change (tempo and pitch) by resampling, e.g. 0.9 / 1.1.

SNR is the ratio of mean powers over the whole utterance: ``10 log10(mean(s^2) / mean(n^2))``; the speech is not
rescaled, except that an output whose peak would exceed 16-bit full scale (|x| > 32767 / 32768) is scaled
down as a whole to that peak (:func:`limit_peak`), so that it never clips. speechbrain.augment (AddNoise,
AddReverb) implements similar operations, but it is an optional dependency here (dev extra only), reads noises
through CSV manifests and its own DataLoader, draws from torch's global RNG (no per-instance or per-example
seed) and attenuates the speech when adding noise; the numpy code below is short, reads MUSAN folders directly
and is reproducible from a seed.

Expected folders: ``musan/{noise,music,speech}/**/*.wav`` (any category may be absent), ``rir/**/*.wav``
(e.g. RIRS_NOISES/simulated_rirs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from spkver.audio import resample

MUSAN_KINDS = ("noise", "music", "babble")
KINDS = ("reverb",) + MUSAN_KINDS + ("colored", "telephone")
GENERATED_KINDS = ("colored", "telephone")  # need no folder; drawn only when listed in ``kinds``
PEAK_16BIT = 32767 / 32768
_MUSAN_DIR = {"noise": "noise", "music": "music", "babble": "speech"}
TELEPHONE_BAND = (300.0, 3400.0)


def _snr_scale(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """Gain for ``noise`` so that ``10 log10(P(speech) / P(gain * noise)) == snr_db`` (0 if undefined)."""
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2))
    if p_speech == 0.0 or p_noise == 0.0:
        return 0.0
    return float(np.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0))))


def add_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with ``g`` giving ``snr_db``; both ``(samples,)`` of equal length."""
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} must have the same shape")
    return (speech + _snr_scale(speech, noise, snr_db) * noise).astype(np.float32)


def limit_peak(wave: np.ndarray, peak: float = PEAK_16BIT) -> np.ndarray:
    """``wave`` scaled down as a whole when its largest magnitude exceeds ``peak``, so that it can be written as
    16-bit PCM without clipping; unchanged otherwise."""
    top = float(np.max(np.abs(wave))) if len(wave) else 0.0
    return (wave * (peak / top)).astype(np.float32) if top > peak else wave


def colored_noise(n: int, sample_rate: int, beta: float, low_hz: float, high_hz: float,
                  rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` float32 Gaussian noise of unit power with power spectrum ``1 / f^beta`` between ``low_hz`` and
    ``high_hz`` (zero outside, and at DC); white over the band when ``beta`` = 0."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freq = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = (freq > 0) & (freq >= low_hz) & (freq <= high_hz)
    if not band.any():
        band = freq > 0
    if not band.any():  # a single sample
        return rng.standard_normal(n).astype(np.float32)
    gain = np.zeros(len(freq))
    gain[band] = freq[band] ** (-beta / 2.0)
    x = np.fft.irfft(spec * gain, n)
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``wave`` ``(samples,)`` with ``rir`` ``(taps,)``; same length and power as ``wave``.

    The output starts at the RIR's direct path (its largest tap), as Kaldi's wav-reverberate --shift-output.
    """
    import torch
    import torchaudio.functional as AF

    rir = np.asarray(rir, dtype=np.float32)
    if rir.ndim != 1 or rir.size == 0 or not np.any(rir):
        raise ValueError("rir must be a non-zero 1-D array")
    delay = int(np.argmax(np.abs(rir)))
    with torch.no_grad():
        wet = AF.fftconvolve(torch.from_numpy(np.ascontiguousarray(wave, np.float32)),
                             torch.from_numpy(rir / np.linalg.norm(rir))).numpy()
    wet = wet[delay:delay + len(wave)].astype(np.float64)
    p_in, p_out = float(np.mean(np.square(wave, dtype=np.float64))), float(np.mean(wet ** 2))
    return (wet * (np.sqrt(p_in / p_out) if p_out > 0 else 0.0)).astype(np.float32)


def _mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """8-bit mu-law encode then decode (ITU-T G.711 style companding and quantisation)."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu)  # 256 levels
    y = 2 * q / mu - 1
    return (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu).astype(np.float32)


def telephone_channel(wave: np.ndarray, sr: int, keep_8k: bool = False, band=TELEPHONE_BAND,
                      mu_law: bool = True) -> tuple[np.ndarray, int]:
    """Simulate a narrowband telephone channel.

    Resample to 8 kHz, band-pass ``band`` Hz (8th-order Butterworth, zero phase), mu-law compand to 8 bits
    (G.711), then resample back to ``sr`` unless ``keep_8k``. Deterministic.

    Args:
        wave: ``(samples,)`` float waveform in [-1, 1] at ``sr``.
    Returns:
        ``(wave (samples',) float32, rate)`` with ``rate`` = 8000 if ``keep_8k`` else ``sr``.
    """
    from scipy.signal import butter, sosfiltfilt

    wave = _check_wave(wave)
    low, high = band
    if not 0 < low < high < 4000:
        raise ValueError(f"telephone band must satisfy 0 < low < high < 4000 Hz, got {band}")
    x = resample(wave, int(sr), 8000).astype(np.float64)
    sos = butter(8, [low, high], btype="bandpass", fs=8000, output="sos")
    if len(x) > 3 * (2 * sos.shape[0] + 1):
        x = sosfiltfilt(sos, x)
    else:
        x = np.zeros_like(x)
    x = _mu_law(x.astype(np.float32)) if mu_law else x.astype(np.float32)
    if keep_8k or sr == 8000:
        return x, 8000
    return resample(x, 8000, int(sr)), int(sr)


def speed_perturb(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (pitch shifts too), like ``sox speed``: ``len / factor`` samples."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0:
        return _check_wave(wave)
    return resample(_check_wave(wave), int(round(sr * factor)), int(sr))


def _check_wave(wave) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D array (samples,), got shape {wave.shape}")
    return wave


def _list_wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file())


class Augmenter:
    """Random augmentation of single utterances (see the module docstring).

    Args:
        musan: folder with ``noise/``, ``music/``, ``speech/`` sub-folders (any subset), or None.
        rir: folder of room impulse responses, or None.
        sample_rate: rate of the waves given to :meth:`__call__`; noises and RIRs are resampled to it.
        seed: seed of the generator used when a call gives no ``seed``.
        kinds: augmentation kinds to draw from (default: every kind whose source exists; ``"colored"`` and
            ``"telephone"`` only when listed).
        noise_snr, music_snr, babble_snr, colored_snr: ``(low, high)`` dB ranges; babble_speakers:
            ``(min, max)`` talkers.
        colored_beta: ``(low, high)`` spectral slope; colored_low_hz, colored_high_hz: ``(low, high)`` ranges of
            the band's lower and upper edge in Hz.
        babble_pool: a :class:`spkver.data.babble.BabblePool` of training speakers: the source of ``babble``
            when there is no MUSAN speech folder (giving both is refused). In a configuration: true or a mapping
            of ``BabblePool.build`` settings (``utts_per_speaker``, ``seconds``), which
            ``spkver.data.examples.training_set`` turns into the pool.
        simulate_rir: true or a mapping of :func:`spkver.data.rir.simulate_rirs` settings (``count``,
            ``rt60``, ``room``, ``seed``, ``highpass``; the sample rate is this one): rooms simulated once into
            ``rir_cache/sim-HASH`` and used by ``reverb`` (with the ``rir`` folder's files, if any).
        rir_cache: folder for the simulated RIRs (``training_set`` gives ``CACHE_DIR/rirs`` when unset).
    """

    def __init__(self, musan: str | os.PathLike | None = None, rir: str | os.PathLike | None = None,
                 sample_rate: int = 16000, seed: int = 0, kinds=None, noise_snr=(0.0, 15.0),
                 music_snr=(5.0, 15.0), babble_snr=(13.0, 20.0), babble_speakers=(3, 7),
                 colored_snr=(0.0, 15.0), colored_beta=(0.0, 2.0), colored_low_hz=(0.0, 500.0),
                 colored_high_hz=(2000.0, 8000.0), babble_pool=None, simulate_rir=None,
                 rir_cache: str | os.PathLike | None = None):
        self.sample_rate = int(sample_rate)
        self.rng = np.random.default_rng(seed)
        self.snr = {"noise": tuple(noise_snr), "music": tuple(music_snr), "babble": tuple(babble_snr),
                    "colored": tuple(colored_snr)}
        self.colored = {"beta": tuple(colored_beta), "low_hz": tuple(colored_low_hz),
                        "high_hz": tuple(colored_high_hz)}
        for name, (lo, hi) in [*((f"{k}_snr", v) for k, v in self.snr.items()),
                               *((f"colored_{k}", v) for k, v in self.colored.items())]:
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.colored["beta"][0] < 0 or self.colored["low_hz"][0] < 0 or \
                self.colored["low_hz"][1] >= self.colored["high_hz"][0]:
            raise ValueError(f"need colored_beta >= 0 and 0 <= colored_low_hz < colored_high_hz, got "
                             f"{colored_beta}, {colored_low_hz}, {colored_high_hz}")
        if not 1 <= babble_speakers[0] <= babble_speakers[1]:
            raise ValueError(f"babble_speakers must be (min, max) with 1 <= min <= max, got {babble_speakers}")
        self.babble_speakers = tuple(int(k) for k in babble_speakers)
        self.files: dict[str, list[Path]] = {}
        if musan is not None:
            musan = Path(musan)
            if not musan.is_dir():
                raise FileNotFoundError(f"MUSAN folder {musan}: no such directory")
            for kind in MUSAN_KINDS:
                if (musan / _MUSAN_DIR[kind]).is_dir():
                    found = _list_wavs(musan / _MUSAN_DIR[kind])
                    if found:
                        self.files[kind] = found
        self.pool = None
        if babble_pool is not None and babble_pool is not False:
            if not hasattr(babble_pool, "talkers"):
                raise ValueError("babble_pool settings need the training data: spkver.data.examples.training_set "
                                 "builds the pool from them (in Python: spkver.data.babble.BabblePool.build)")
            if "babble" in self.files:
                raise ValueError(f"babble: give either a MUSAN speech folder ({musan / 'speech'}) or "
                                 "babble_pool, not both")
            babble_pool.check(self.babble_speakers[0], "augment.babble_pool")
            self.pool = babble_pool
        rirs = []
        if rir is not None:
            rir = Path(rir)
            rirs = _list_wavs(rir) if rir.is_dir() else []
            if not rirs:
                raise FileNotFoundError(f"RIR folder {rir}: no .wav/.flac files found")
        if simulate_rir is not None and simulate_rir is not False:
            from spkver.data.rir import rir_folder, simulate_rirs

            settings = {} if simulate_rir is True else dict(simulate_rir)
            if rir_cache is None:
                raise ValueError("simulate_rir needs rir_cache, the folder the simulated RIRs are cached in")
            if "sample_rate" in settings:
                raise ValueError("simulate_rir: the sample rate is the features'; remove sample_rate")
            try:
                folder = rir_folder(rir_cache, sample_rate=self.sample_rate, **settings)
                rirs = rirs + simulate_rirs(folder, sample_rate=self.sample_rate, **settings)
            except (TypeError, ValueError) as err:
                raise ValueError(f"augment.simulate_rir: {err}") from None
        if rirs:
            self.files["reverb"] = rirs
        available = [k for k in KINDS if k in self.files or (k == "babble" and self.pool is not None)]
        if kinds is None:
            kinds = available
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown augmentation {kind!r}; valid: {', '.join(KINDS)}")
            if kind not in GENERATED_KINDS and kind not in available:
                need = {"reverb": "a RIR folder or simulate_rir",
                        "babble": "musan/speech or babble_pool"}.get(kind, f"musan/{_MUSAN_DIR.get(kind)}")
                raise FileNotFoundError(f"augmentation {kind!r} needs {need}")
        if not kinds:
            raise ValueError("no augmentation available: give a MUSAN and/or RIR folder, babble_pool or "
                             "simulate_rir, or list kinds (e.g. colored)")
        self.kinds = kinds
        self._info: dict[Path, tuple[int, int]] = {}
        self._rirs: dict[Path, np.ndarray] = {}

    # ---------------------------------------------------------------------------------------- reading
    def _excerpt(self, path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``n``-sample excerpt of ``path`` at ``self.sample_rate`` (looped when shorter)."""
        if path not in self._info:
            info = sf.info(str(path))
            self._info[path] = (info.frames, info.samplerate)
        frames, sr = self._info[path]
        need = int(np.ceil(n * sr / self.sample_rate)) + 1
        start = int(rng.integers(0, frames - need + 1)) if frames > need else 0
        data, _ = sf.read(str(path), start=start, stop=start + need, dtype="float32", always_2d=True)
        x = resample(data.mean(axis=1), sr, self.sample_rate)
        if len(x) == 0 or not np.isfinite(x).all():
            raise ValueError(f"{path}: empty or non-finite audio")
        if len(x) < n:
            x = np.tile(x, int(np.ceil(n / len(x))))
        return x[:n]

    def _pick(self, kind: str, rng: np.random.Generator) -> Path:
        files = self.files[kind]
        return files[int(rng.integers(len(files)))]

    # ----------------------------------------------------------------------------------------- kinds
    def additive(self, wave: np.ndarray, kind: str, snr_db: float | None = None, seed: int | None = None,
                 speaker: str | None = None) -> np.ndarray:
        """Add ``kind`` ("noise", "music", "babble" or "colored") to ``wave`` ``(samples,)`` at ``snr_db``.

        Babble from the training set (``babble_pool``) needs ``speaker``, the chunk's own, which no talker is.
        """
        rng = self.rng if seed is None else np.random.default_rng(seed)
        wave = _check_wave(wave)
        valid = [k for k in MUSAN_KINDS if k in self.files] + ["colored"] + (["babble"] if self.pool else [])
        if kind not in valid:
            raise ValueError(f"additive kind must be one of {valid}, got {kind!r}")
        lo, hi = self.snr[kind]
        snr = float(rng.uniform(lo, hi)) if snr_db is None else float(snr_db)
        if kind == "colored":
            band = [float(rng.uniform(*self.colored[k])) for k in ("beta", "low_hz", "high_hz")]
            noise = colored_noise(len(wave), self.sample_rate, band[0], band[1],
                                  min(band[2], self.sample_rate / 2), rng)
        elif kind == "babble":
            count = int(rng.integers(self.babble_speakers[0], self.babble_speakers[1] + 1))
            if self.pool is not None:
                if speaker is None:
                    raise ValueError("babble from the training set needs the chunk's speaker (speaker=...)")
                talkers = self.pool.talkers(count, len(wave), str(speaker), rng)
            else:
                talkers = [self._excerpt(self._pick(kind, rng), len(wave), rng) for _ in range(count)]
            noise = np.zeros(len(wave), np.float64)
            for talker in talkers:
                talker = talker.astype(np.float64)
                power = np.mean(talker ** 2)
                noise += talker / np.sqrt(power) if power > 0 else 0.0
        else:
            noise = self._excerpt(self._pick(kind, rng), len(wave), rng)
        return add_at_snr(wave, noise.astype(np.float32), snr)

    def reverb(self, wave: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Reverberate ``wave`` ``(samples,)`` with a random RIR (kept in memory once read)."""
        rng = self.rng if seed is None else np.random.default_rng(seed)
        if "reverb" not in self.files:
            raise ValueError("reverb needs a RIR folder or simulate_rir")
        path = self._pick("reverb", rng)
        if path not in self._rirs:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            self._rirs[path] = resample(data[:, 0], sr, self.sample_rate)
        return reverberate(_check_wave(wave), self._rirs[path])

    def __call__(self, wave, kind: str | None = None, seed: int | None = None, speaker: str | None = None):
        """Apply one augmentation (``kind``, or one drawn uniformly from ``self.kinds``).

        ``seed`` makes this call reproducible on its own (e.g. derived from epoch and example index in a
        data-loader worker); without it the instance's generator is used. ``speaker``: the utterance's
        speaker, which training-set babble leaves out. Returns the type given (numpy ``(samples,)`` float32,
        or a torch tensor), same length, peak at most 32767 / 32768 (:func:`limit_peak`).
        """
        rng = self.rng if seed is None else np.random.default_rng(seed)
        is_torch = type(wave).__module__.startswith("torch")
        x = _check_wave(wave.detach().cpu().numpy() if is_torch else wave)
        kind = self.kinds[int(rng.integers(len(self.kinds)))] if kind is None else kind
        if kind == "telephone":
            out = telephone_channel(x, self.sample_rate)[0]
            out = np.pad(out, (0, max(0, len(x) - len(out))))[:len(x)]
        elif kind == "reverb":
            out = self.reverb(x, seed=int(rng.integers(2**63)))
        else:
            out = self.additive(x, kind, seed=int(rng.integers(2**63)), speaker=speaker)
        out = limit_peak(out)
        if is_torch:
            import torch

            return torch.from_numpy(out)
        return out
