"""The built-in synthetic multi-speaker corpus: the default corpus of ``spkver demo`` and of the tests.

Speakers are source-filter voices (:mod:`spkver.data.synthetic.voice`). Each speaker records several sessions; a session
changes the voice slightly (:func:`spkver.data.synthetic.voice.vary_session`: F0 level, rate, vocal effort) and has its
own :class:`Channel` (microphone / room EQ, gain, background noise at a random SNR), so cross-session
same-speaker trials are hard. Two domains:

- ``"wide"``: 16 kHz wideband (the in-domain condition);
- ``"tel"``: the *same* utterances (same speakers, sessions, phones and noise) passed through
  :func:`spkver.data.augment.telephone_channel` (8 kHz, a per-session band around 300-3400 Hz, G.711 mu-law)
  and resampled back to ``sample_rate``, so one model serves both domains. A ``tel`` corpus made with the
  ``seed`` and ``speaker_offset`` of a ``wide`` one is its out-of-domain twin: utterance ids, speakers and
  trial lists carry over.

Randomness is keyed, not sequential: speaker ``k`` (``spk{k:04d}``, ``k = speaker_offset + i + 1``) draws its
voice from ``default_rng([seed, k, 0])``, session ``s`` from ``[seed, k, 1, s]``, utterance ``u`` from
``[seed, k, 2, s, u]``. Any subset of the corpus can therefore be regenerated on its own, in any order or
process, and corpora with disjoint ``speaker_offset`` ranges (train / eval) never share a speaker.

Layout of ``out_dir``: ``wav/<utt>.wav`` (16-bit PCM), Kaldi files ``wav.scp`` (paths relative to
``out_dir``), ``utt2spk``, ``spk2utt``, ``utt2dur``, ``spk2gender``, plus ``voices.json`` (each speaker's
:class:`~spkver.data.synthetic.voice.VoiceParams`) and ``synthetic.json`` (the generation settings; a resumed run must
use the same ones). Utterance ids are ``spk0001-s1-u01``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Mapping

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from scoring.io import Trials, atomic_write_text, read_utt2spk, write_trials
from spkver.audio import write_audio
from spkver.data.kaldi import DataDir
from spkver.data.synthetic.voice import VoiceParams, active_rms, sample_speaker, synthesize, vary_session

DOMAINS = ("wide", "tel")
FORMAT_VERSION = 1
MAX_PEAK = 0.95
_UTT_RE = re.compile(r"^(?P<session>.+-s\d+)-u\d+$")


# ------------------------------------------------------------------------------------------ channel
@dataclass(frozen=True)
class Channel:
    """One recording session's channel.

    Attributes:
        eq_centres_hz, eq_widths_oct, eq_gains_db: Gaussian bumps (on a log-frequency axis) of the
            microphone / room response.
        tilt_db_oct: overall slope of the response around 1 kHz.
        highpass_hz, lowpass_hz: 2nd-order high-pass and 4th-order low-pass corners.
        noise_colour: background noise colour in [0, 1] (0 white, 1 brown; see :func:`coloured_noise`).
        snr_db: mean SNR of the session (active speech level over noise power).
        gain_db: recording level relative to -26 dBFS.
        tel_band: telephone pass band ``(low, high)`` Hz used in the ``tel`` domain.
    """

    eq_centres_hz: tuple[float, ...]
    eq_widths_oct: tuple[float, ...]
    eq_gains_db: tuple[float, ...]
    tilt_db_oct: float
    highpass_hz: float
    lowpass_hz: float
    noise_colour: float
    snr_db: float
    gain_db: float
    tel_band: tuple[float, float]

    def response(self, freqs: np.ndarray) -> np.ndarray:
        """Linear magnitude gains ``(n_bins,)`` at ``freqs`` Hz ``(n_bins,)``."""
        f = np.maximum(np.asarray(freqs, dtype=float), 1.0)
        octaves = np.log2(f / 1000.0)
        db = self.tilt_db_oct * octaves
        for centre, width, gain in zip(self.eq_centres_hz, self.eq_widths_oct, self.eq_gains_db):
            db = db + gain * np.exp(-0.5 * ((octaves - math.log2(centre / 1000.0)) / width) ** 2)
        high = (f / self.highpass_hz) ** 2 / np.sqrt(1.0 + (f / self.highpass_hz) ** 4)
        low = 1.0 / np.sqrt(1.0 + (f / self.lowpass_hz) ** 8)
        return 10.0 ** (db / 20.0) * high * low


def sample_channel(rng: np.random.Generator, sample_rate: int = 16000, n_bumps: int = 3) -> Channel:
    """Draw a session channel: EQ bumps of +-5 dB (std), tilt, band edges, noise colour, SNR 5-30 dB, gain."""
    nyquist = sample_rate / 2
    return Channel(
        eq_centres_hz=tuple(float(x) for x in np.exp(rng.uniform(np.log(150.0), np.log(0.9 * nyquist), n_bumps))),
        eq_widths_oct=tuple(float(x) for x in rng.uniform(0.3, 1.2, n_bumps)),
        eq_gains_db=tuple(float(x) for x in np.clip(rng.normal(0.0, 5.0, n_bumps), -12.0, 12.0)),
        tilt_db_oct=float(rng.normal(0.0, 1.5)),
        highpass_hz=float(np.exp(rng.uniform(np.log(60.0), np.log(300.0)))),
        lowpass_hz=float(rng.uniform(0.6, 0.96) * nyquist),
        noise_colour=float(rng.uniform(0.0, 1.0)),
        snr_db=float(rng.uniform(5.0, 30.0)),
        gain_db=float(rng.normal(0.0, 4.0)),
        tel_band=(float(rng.uniform(250.0, 400.0)), float(rng.uniform(3100.0, 3450.0))),
    )


def coloured_noise(n: int, colour: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Gaussian noise ``(n,)`` with unit RMS: white mixed with "brown" noise (a one-pole low-pass at 250 Hz,
    -6 dB/octave above it) in power proportions ``1 - colour`` and ``colour``."""
    white = rng.standard_normal(n, dtype=np.float32)
    if colour <= 0:
        return white
    pole = math.exp(-2 * math.pi * 250.0 / sample_rate)
    brown = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(n, dtype=np.float32))
    brown /= max(float(np.sqrt(np.mean(brown ** 2))), 1e-12)
    return math.sqrt(1.0 - colour) * white + math.sqrt(colour) * brown


def record(wave: np.ndarray, channel: Channel, rng: np.random.Generator, sample_rate: int,
           telephone: bool = False) -> np.ndarray:
    """Add the session's background noise (SNR +-2 dB around the session's), set the level, and optionally
    pass through the telephone channel. ``wave`` already carries the channel EQ (see :func:`synthesize`).

    Returns float32 ``(samples,)`` with peak <= 0.95.
    """
    level = active_rms(wave, sample_rate)
    snr = channel.snr_db + float(rng.normal(0.0, 2.0))
    noise = coloured_noise(len(wave), channel.noise_colour, rng, sample_rate)
    out = wave + noise * (level * 10 ** (-snr / 20))
    out *= 10 ** (channel.gain_db / 20)
    if telephone:
        from spkver.data.augment import telephone_channel

        out, _ = telephone_channel(_limit(out), sample_rate, band=channel.tel_band)
    return _limit(out).astype(np.float32)


def _limit(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (MAX_PEAK / peak) if peak > MAX_PEAK else x


# ------------------------------------------------------------------------------------------ corpus
@dataclass(frozen=True)
class _Settings:
    """What makes a corpus (written to ``synthetic.json``; a resumed run must match)."""

    n_speakers: int
    sessions_per_speaker: int
    utts_per_session: int
    min_seconds: float
    max_seconds: float
    domain: str
    seed: int
    sample_rate: int
    speaker_offset: int
    format_version: int = FORMAT_VERSION


def speaker_id(number: int) -> str:
    """``spk0001`` for speaker number 1."""
    return f"spk{number:04d}"


def speaker_voice(seed: int, number: int) -> VoiceParams:
    """The voice of speaker ``number`` (1-based, offset included) in every corpus made with ``seed``."""
    return sample_speaker(np.random.default_rng([seed, number, 0]))


def _utt_seconds(rng: np.random.Generator, s: _Settings) -> int:
    """Number of samples of an utterance (the first draw of its generator)."""
    return int(round(rng.uniform(s.min_seconds, s.max_seconds) * s.sample_rate))


def _is_complete(path: Path, n: int, sample_rate: int) -> bool:
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return False
    return info.frames == n and info.samplerate == sample_rate


def _make_speaker(out: Path, number: int, s: _Settings) -> list[tuple[str, float]]:
    """Write one speaker's utterances (skipping finished ones); returns ``(utt, seconds)`` rows."""
    voice = speaker_voice(s.seed, number)
    rows = []
    for session in range(1, s.sessions_per_speaker + 1):
        srng = np.random.default_rng([s.seed, number, 1, session])
        session_voice = vary_session(voice, srng)
        channel = sample_channel(srng, s.sample_rate)
        for u in range(1, s.utts_per_session + 1):
            utt = f"{speaker_id(number)}-s{session}-u{u:02d}"
            urng = np.random.default_rng([s.seed, number, 2, session, u])
            n = _utt_seconds(urng, s)
            path = out / "wav" / f"{utt}.wav"
            if not _is_complete(path, n, s.sample_rate):
                wave = synthesize(session_voice, n / s.sample_rate, urng, s.sample_rate, eq=channel.response)
                wave = record(wave, channel, urng, s.sample_rate, telephone=s.domain == "tel")
                write_audio(path, wave, s.sample_rate)
            rows.append((utt, n / s.sample_rate))
    return rows


def _make_speakers(out: Path, numbers: list[int], s: _Settings) -> list[tuple[str, float]]:
    with _torch_single_thread(s.domain == "tel"):
        return [row for k in numbers for row in _make_speaker(out, k, s)]


@contextlib.contextmanager
def _torch_single_thread(active: bool):
    """One torch thread while resampling one utterance at a time (the telephone channel resamples with
    torchaudio): on a busy machine, threads on such small tensors cost far more than they save."""
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_int(name: str, value, low: int, high: int | None = None, who: str = "make_corpus") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{who}: {name} must be an int {span}, got {value!r}")


def _check_settings(s: _Settings, workers: int) -> None:
    _check_int("n_speakers", s.n_speakers, 1)
    _check_int("sessions_per_speaker", s.sessions_per_speaker, 1, 9)
    _check_int("utts_per_session", s.utts_per_session, 1, 99)
    _check_int("seed", s.seed, 0)
    _check_int("sample_rate", s.sample_rate, 8000)
    _check_int("speaker_offset", s.speaker_offset, 0)
    _check_int("workers", workers, 1)
    if s.speaker_offset + s.n_speakers > 9999:
        raise ValueError(f"make_corpus: speaker numbers go up to 9999 (spk9999), got speaker_offset "
                         f"{s.speaker_offset} + n_speakers {s.n_speakers}")
    if not 0.5 <= s.min_seconds <= s.max_seconds or not math.isfinite(s.max_seconds):
        raise ValueError(f"make_corpus: need 0.5 <= min_seconds <= max_seconds, got {s.min_seconds}, "
                         f"{s.max_seconds}")
    if s.domain not in DOMAINS:
        raise ValueError(f"make_corpus: domain must be one of {DOMAINS}, got {s.domain!r}")


def _check_manifest(path: Path, s: _Settings) -> None:
    want = asdict(s)
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable corpus settings ({err}); remove the folder to start over")
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
            raise ValueError(f"{path}: the corpus in this folder was made with other settings ({shown}); "
                             "use another out_dir or remove this one")
    else:
        atomic_write_text(path, json.dumps(want, indent=1) + "\n")


def make_corpus(out_dir: str | os.PathLike, n_speakers: int, sessions_per_speaker: int = 3,
                utts_per_session: int = 3, min_seconds: float = 2.0, max_seconds: float = 4.0,
                domain: str = "wide", seed: int = 0, sample_rate: int = 16000, speaker_offset: int = 0,
                workers: int = 1) -> DataDir:
    """Generate (or finish generating) a synthetic corpus and its Kaldi data dir in ``out_dir``.

    Speakers ``spk{speaker_offset + 1:04d}`` ... each get ``sessions_per_speaker`` sessions of
    ``utts_per_session`` utterances lasting ``U(min_seconds, max_seconds)`` (rounded to samples). Existing
    complete WAVs are kept (resume); new ones are written to a temporary name and renamed. ``workers > 1``
    generates speakers in that many processes (started with "spawn": each start costs a few seconds of
    imports, worth it from a few dozen speakers on). The files do not depend on ``workers``. See the module
    docstring for the layout and the domains.

    Returns:
        the saved :class:`~spkver.data.kaldi.DataDir` (loaded back from ``out_dir``).
    Raises:
        ValueError for bad arguments, or when ``out_dir`` holds a corpus made with other settings.
    """
    s = _Settings(n_speakers, sessions_per_speaker, utts_per_session, float(min_seconds), float(max_seconds),
                  domain, seed, sample_rate, speaker_offset)
    _check_settings(s, workers)
    s = _Settings(**{k: int(v) if isinstance(v, np.integer) else v for k, v in asdict(s).items()})  # JSON-able
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    _check_manifest(out / "synthetic.json", s)
    numbers = [speaker_offset + i + 1 for i in range(n_speakers)]
    workers = min(workers, n_speakers)
    if workers == 1:
        rows = _make_speakers(out, numbers, s)
    else:
        chunks = [numbers[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            rows = [r for part in pool.map(_make_speakers, [out] * workers, chunks, [s] * workers) for r in part]
    rows.sort(key=lambda row: row[0].encode())  # C-locale order, as Kaldi wants
    voices = {speaker_id(k): speaker_voice(seed, k) for k in numbers}  # ids zero-padded: already in order
    data = DataDir(wav_scp={utt: f"wav/{utt}.wav" for utt, _ in rows},
                   utt2spk={utt: utt.split("-")[0] for utt, _ in rows},
                   utt2dur={utt: sec for utt, sec in rows},
                   spk2gender={spk: v.sex for spk, v in voices.items()}, path=out)
    data.save(out)
    atomic_write_text(out / "voices.json",
                      json.dumps({spk: v.to_dict() for spk, v in voices.items()}, indent=1) + "\n")
    return DataDir.load(out)


def read_voices(out_dir: str | os.PathLike) -> dict[str, VoiceParams]:
    """``{speaker: VoiceParams}`` from a corpus folder's ``voices.json``."""
    path = Path(out_dir) / "voices.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read voices ({err})") from None
    return {spk: VoiceParams.from_dict(d) for spk, d in table.items()}


# ------------------------------------------------------------------------------------------ trials
def _utt2spk(source) -> tuple[dict[str, str], str]:
    if isinstance(source, DataDir):
        return dict(source.utt2spk), str(source.path or "data dir")
    if isinstance(source, Mapping):
        return dict(source), "utt2spk"
    path = Path(source)
    path = path / "utt2spk" if path.is_dir() else path
    return read_utt2spk(path), str(path)


def make_trials(source: DataDir | str | os.PathLike | Mapping[str, str], n_target: int | None,
                n_nontarget: int, seed: int = 0, cross_session_only: bool = True,
                path: str | os.PathLike | None = None) -> Trials:
    """Draw a labelled trial list from the utterances of ``source``.

    Args:
        source: a DataDir, a data dir path, an ``utt2spk`` file, or a ``{utt: spk}`` mapping.
        n_target: target trials drawn without replacement from the same-speaker pairs (``None``: all).
        n_nontarget: distinct different-speaker pairs drawn uniformly.
        cross_session_only: target pairs only across sessions; the session is the utterance id up to
            ``-uNN`` (``spk0001-s2`` for ``spk0001-s2-u03``).
        path: when given, also written there as a Kaldi trial file (``enroll test target|nontarget``).
    Returns:
        :class:`scoring.io.Trials` sorted by (enroll, test), enroll < test in C-locale order.
    """
    utt2spk, where = _utt2spk(source)
    utts = sorted(utt2spk, key=str.encode)
    if n_target is not None:
        _check_int("n_target", n_target, 0, who="make_trials")
    _check_int("n_nontarget", n_nontarget, 0, who="make_trials")
    sessions = {}
    for utt in utts:
        m = _UTT_RE.match(utt)
        if cross_session_only and m is None:
            raise ValueError(f"{where}: utterance {utt!r} has no session in its id (expected SPK-sN-uNN); "
                             "use cross_session_only=False")
        sessions[utt] = m.group("session") if m else utt
    by_spk: dict[str, list[str]] = {}
    for utt in utts:
        by_spk.setdefault(utt2spk[utt], []).append(utt)
    targets = [(a, b) for group in by_spk.values() for i, a in enumerate(group) for b in group[i + 1:]
               if not cross_session_only or sessions[a] != sessions[b]]
    rng = np.random.default_rng(seed)
    if n_target is None:
        n_target = len(targets)
    if n_target > len(targets):
        raise ValueError(f"{where}: {n_target} target trials asked, only {len(targets)} same-speaker pairs"
                         f"{' across sessions' if cross_session_only else ''} exist")
    chosen = [targets[i] for i in rng.choice(len(targets), n_target, replace=False)]
    counts = np.array([len(g) for g in by_spk.values()])
    possible = (counts.sum() ** 2 - np.sum(counts ** 2)) // 2
    if n_nontarget > possible:
        raise ValueError(f"{where}: {n_nontarget} non-target trials asked, only {possible} different-speaker "
                         "pairs exist")
    spk_index = np.array([utt2spk[u] for u in utts])
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_nontarget:
        i, j = rng.integers(len(utts), size=(2, 2 * (n_nontarget - len(pairs)) + 16))
        keep = spk_index[i] != spk_index[j]
        for a, b in zip(np.minimum(i, j)[keep].tolist(), np.maximum(i, j)[keep].tolist()):
            if len(pairs) == n_nontarget:
                break
            pairs.add((a, b))
    rows = [(a, b, 1) for a, b in chosen] + [(utts[a], utts[b], 0) for a, b in pairs]
    rows.sort(key=lambda r: (r[0].encode(), r[1].encode()))
    trials = Trials([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    if path is not None:
        write_trials(path, trials, fmt="kaldi")
    return trials
