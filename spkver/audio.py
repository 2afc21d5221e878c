"""Audio input: read files and Kaldi ``wav.scp`` entries as mono float32 waveforms.

Formats are whatever libsndfile (through ``soundfile``) decodes: WAV, FLAC, OGG/Vorbis, OGG/Opus and NIST
SPHERE with PCM or u-law samples. Shorten-compressed SPHERE (as distributed by the LDC for older NIST SRE
sets) is not readable by libsndfile: use a ``sph2pipe -f wav FILE |`` pipe in ``wav.scp`` for those.

``wav.scp`` values (see :func:`load_entry`) are either a path (relative paths resolve against ``root``) or a
shell command ending in ``|`` whose standard output is an audio file (WAV, FLAC or SPHERE). Kaldi's extended
filenames with byte offsets (``foo.ark:1234``) are not supported; feature archives are out of scope here.

Channels: ``channel=None`` averages all channels into one (a down-mix, not a pick of the first channel),
``channel=k`` keeps channel ``k`` (0-based), as needed for two-sided telephone conversations.
Samples are returned as float32 in [-1, 1] (soundfile's scaling of integer PCM).
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from scoring.io import atomic_write


class AudioError(ValueError):
    """Audio that cannot be used: missing, unreadable, empty, non-finite or too short.

    The message names the utterance id (when known) and the file or command at fault.
    """

    def __init__(self, message: str, utt: str | None = None, source: str | os.PathLike | None = None):
        self.utt = utt
        self.source = None if source is None else str(source)
        where = []
        if utt is not None:
            where.append(f"utterance {utt!r}")
        if source is not None:
            where.append(f"file {str(source)!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited (windowed sinc) resampling with ``torchaudio.functional.resample``.

    Args:
        wave: ``(samples,)`` or ``(channels, samples)`` float array.
    Returns:
        float32 array with the same leading shape and ``ceil(samples * new_sr / orig_sr)`` samples.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == new_sr:
        return wave
    import torch
    import torchaudio.functional as AF

    with torch.no_grad():
        out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(orig_sr), int(new_sr))
    return out.numpy()


def _select_channel(data: np.ndarray, channel: int | None, utt, source) -> np.ndarray:
    """``data`` is ``(samples, channels)`` as soundfile returns it; result ``(samples,)``."""
    n_channels = data.shape[1]
    if channel is None:
        return data[:, 0] if n_channels == 1 else data.mean(axis=1)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise AudioError(f"channel must be None or an int, got {channel!r}", utt, source)
    if not 0 <= channel < n_channels:
        raise AudioError(f"channel {channel} requested but the audio has {n_channels} channel(s)", utt, source)
    return data[:, channel]


def _decode(stream, source, sample_rate, channel, utt, min_seconds,
            segment: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Decode a path or file-like object with soundfile (only the frames of ``segment`` when given and the
    stream is seekable), then pick/mix channels, check and resample."""
    try:
        with sf.SoundFile(stream) as f:
            sr = f.samplerate
            if segment is None:
                data = f.read(dtype="float32", always_2d=True)
            elif f.seekable():
                first, last = _segment_frames(segment, sr, f.frames, utt, source)
                f.seek(first)
                data = f.read(last - first, dtype="float32", always_2d=True)
            else:
                data = f.read(dtype="float32", always_2d=True)
                first, last = _segment_frames(segment, sr, len(data), utt, source)
                data = data[first:last]
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"cannot decode audio ({err})", utt, source) from None
    wave = _select_channel(data, channel, utt, source)
    if wave.size == 0:
        raise AudioError("audio is empty (0 samples)", utt, source)
    if not np.isfinite(wave).all():
        raise AudioError("audio contains NaN or infinite samples", utt, source)
    if sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, int(sample_rate))
        sr = int(sample_rate)
    check_duration(wave, sr, min_seconds, utt, source)
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


def check_duration(wave: np.ndarray, sr: int, min_seconds: float | None, utt=None, source=None) -> None:
    """Raise :class:`AudioError` when ``wave`` ``(samples,)`` lasts less than ``min_seconds``."""
    if min_seconds is not None and len(wave) < min_seconds * sr:
        raise AudioError(f"audio lasts {len(wave) / sr:.3f} s, shorter than the required {min_seconds} s",
                         utt, source)


def _check_rate(sample_rate) -> None:
    if sample_rate is not None and (isinstance(sample_rate, bool) or int(sample_rate) != sample_rate
                                    or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive int or None, got {sample_rate!r}")


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, channel: int | None = None,
               utt: str | None = None, min_seconds: float | None = None,
               segment: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (or one segment of it) as a mono float32 waveform.

    Args:
        path: a file soundfile can decode (WAV, FLAC, OGG/Opus, NIST SPHERE, ...).
        sample_rate: resample to this rate if given and different from the file's.
        channel: ``None`` averages all channels to mono; an int keeps that channel (0-based).
        utt: utterance id, only used in error messages.
        min_seconds: raise :class:`AudioError` if shorter than this (after cutting and resampling).
        segment: ``(start_s, end_s)`` of a Kaldi ``segments`` entry (rules of :func:`cut_segment`, at the
            file's own rate): only those frames are read (seek, then read), not the whole recording.
    Returns:
        ``(wave (samples,) float32, sample_rate)``.
    Raises:
        AudioError: missing, unreadable, empty, NaN/inf or too short, naming ``utt`` and ``path``.
    """
    _check_rate(sample_rate)
    path = Path(path)
    if not path.is_file():
        raise AudioError("no such audio file", utt, path)
    return _decode(str(path), path, sample_rate, channel, utt, min_seconds, segment)


def is_pipe(entry: str) -> bool:
    """True for a ``wav.scp`` value that is a shell command (``cmd args |``)."""
    return entry.rstrip().endswith("|")


def resolve_path(entry: str, root: str | os.PathLike | None) -> Path:
    """Resolve a ``wav.scp`` path value against ``root`` when it is relative."""
    path = Path(entry.strip())
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return path


def load_entry(entry: str, sample_rate: int | None = None, channel: int | None = None,
               root: str | os.PathLike | None = None, utt: str | None = None,
               min_seconds: float | None = None, timeout: float | None = 600.0,
               segment: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Load one Kaldi ``wav.scp`` value.

    Args:
        entry: a path (relative ones resolve against ``root``) or a shell command ending in ``|`` whose stdout
            is an audio file soundfile can decode, e.g. ``sph2pipe -f wav -p -c 1 a.sph |``. The command runs
            through the shell with ``root`` (if given) as its working directory, like Kaldi running from the
            recipe folder.
        sample_rate, channel, utt, min_seconds, segment: as in :func:`read_audio` (a pipe's whole output is
            buffered, then the segment cut from it).
        timeout: seconds before a pipe command is abandoned.
    Returns:
        ``(wave (samples,) float32, sample_rate)``.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise AudioError(f"empty or invalid wav.scp value {entry!r}", utt)
    _check_rate(sample_rate)
    if not is_pipe(entry):
        return read_audio(resolve_path(entry, root), sample_rate, channel, utt, min_seconds, segment)
    command = entry.rstrip()[:-1].strip()
    if not command:
        raise AudioError("pipe entry has no command before '|'", utt, entry)
    try:
        proc = subprocess.run(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=None if root is None else str(root), timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"command timed out after {timeout} s", utt, command) from None
    except OSError as err:
        raise AudioError(f"cannot run command ({err})", utt, command) from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise AudioError(f"command failed with exit status {proc.returncode}: {tail[0]}", utt, command)
    if not proc.stdout:
        raise AudioError("command wrote no audio to stdout", utt, command)
    return _decode(io.BytesIO(proc.stdout), command, sample_rate, channel, utt, min_seconds, segment)


def cut_segment(wave: np.ndarray, sr: int, start: float, end: float, utt: str | None = None) -> np.ndarray:
    """Cut ``[start, end)`` seconds out of ``wave`` ``(samples,)``, as Kaldi's ``segments`` file specifies.

    Sample indices are ``round(t * sr)``. ``end == -1`` (Kaldi's "to the end of the recording") is accepted.
    An ``end`` past the end of the recording by up to 0.1 s is clipped (rounding in segment files); more than
    that is an error, as are negative starts and empty segments.
    """
    first, last = _segment_frames((start, end), sr, len(wave), utt)
    return wave[first:last]


def _segment_frames(segment: tuple[float, float], sr: int, n: int, utt=None, source=None) -> tuple[int, int]:
    """``[first, last)`` sample indices of ``segment = (start_s, end_s)`` in ``n`` samples (see :func:`cut_segment`)."""
    start, end = segment
    if end == -1:
        end = n / sr
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
        raise AudioError(f"invalid segment [{start}, {end}) s", utt, source)
    first = int(round(start * sr))
    last = int(round(end * sr))
    if last > n:
        if last - n > 0.1 * sr:
            raise AudioError(f"segment end {end} s lies beyond the recording ({n / sr:.3f} s)", utt, source)
        last = n
    if last <= first:
        raise AudioError(f"segment [{start}, {end}) s is empty in a {n / sr:.3f} s recording", utt, source)
    return first, last


def write_audio(path: str | os.PathLike, wave: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write ``wave`` ``(samples,)`` or ``(samples, channels)`` atomically (:func:`scoring.io.atomic_write`).

    The container comes from the suffix (``.wav``, ``.flac``, ``.sph``/``.nist``, ``.ogg``). The file is
    encoded in memory first (soundfile syncs a file it closes to disk, which is slow for many small files); the
    bytes are those soundfile writes to a path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = {".wav": "WAV", ".flac": "FLAC", ".sph": "NIST", ".nist": "NIST", ".ogg": "OGG"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown audio suffix {suffix!r} (use .wav, .flac, .sph, .ogg)")
    if fmt == "OGG":
        subtype = "VORBIS"
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wave), int(sr), format=fmt, subtype=subtype)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
