"""Pass a whole data dir through a simulated channel: the out-of-domain and calibration conditions of the recipes.

``simulate_channel(data, out, channel)`` writes every utterance of ``data`` through the channel as 16-bit WAV
under ``out/wav/`` and a Kaldi data dir in ``out`` (same utterance and speaker ids, ``wav.scp`` paths relative to
``out``), so trial lists of the original set apply unchanged. Channels (:data:`CHANNELS`):

- ``telephone`` / ``telephone8k``: 8 kHz, 300-3400 Hz, G.711 mu-law (:func:`spkver.data.augment.telephone_channel`),
  back at the original rate or kept at 8 kHz; deterministic;
- ``noise``, ``reverb``, ``short``, ``mixed``: the per-utterance degradations of :mod:`spkver.data.degrade`
  (coloured noise at a drawn SNR, simulated rooms, short excerpts, one of the three per utterance), seeded by
  ``(seed, utterance id)``; ``out/utt2degradation`` says what each utterance got (``utt kind key=value ...``).

``out/channel.json`` records the channel and its settings; a second run with the same settings keeps finished
files (resumable; each file is written to a temporary name first), one with other settings is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from scoring.io import atomic_write_text
from spkver.audio import write_audio
from spkver.data.augment import telephone_channel
from spkver.data.degrade import DegradeSettings, Degrader, describe
from spkver.data.kaldi import DataDir
from spkver.progress import progress as show_progress

TELEPHONE = {
    # name -> f(wave (samples,), sr) -> (wave, sr)
    "telephone": lambda wave, sr: telephone_channel(wave, sr, keep_8k=False),
    "telephone8k": lambda wave, sr: telephone_channel(wave, sr, keep_8k=True),
}
DEGRADED = ("noise", "reverb", "short", "mixed")
CHANNELS = tuple(TELEPHONE) + DEGRADED
# the settings of each degraded channel: which channels use them
USES = {"snr": ("noise", "mixed"), "max_seconds": ("short", "mixed"), "rir_count": ("reverb", "mixed"),
        "rir_cache": ("reverb", "mixed"), "seed": DEGRADED}


def channel_settings(channel: str, **given) -> tuple[DegradeSettings | None, dict]:
    """The checked settings of ``channel`` (None for the telephone channels) and the ``channel.json`` record.

    ``given``: the settings passed (None = not given); one the channel does not use raises ``ValueError``."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}")
    for name, value in given.items():
        if value is not None and channel not in USES[name]:
            raise ValueError(f"{name} does not apply to the {channel} channel (it applies to "
                             f"{', '.join(USES[name])})")
    if channel in TELEPHONE:
        return None, {"channel": channel}
    kwargs = {k: v for k, v in given.items() if v is not None and k != "rir_cache"}
    settings = DegradeSettings(kind=channel, **kwargs).check()
    record = settings.to_dict()
    record["channel"] = record.pop("kind")
    return settings, record


def _check_record(out: Path, record: dict) -> None:
    path = out / "channel.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it or choose another output folder") from None
        if old != record:
            raise ValueError(f"{out} was made with other channel settings ({json.dumps(old)}), not "
                             f"{json.dumps(record)}; delete it or choose another output folder")
    elif (out / "wav").is_dir() and any((out / "wav").iterdir()) and record["channel"] not in TELEPHONE:
        raise ValueError(f"{out}/wav holds files but {out} has no channel.json: delete it or choose another "
                         "output folder")


def simulate_channel(data: DataDir | str | os.PathLike, out: str | os.PathLike, channel: str = "telephone",
                     audio_root=None, progress: bool = False, seed: int | None = None,
                     snr: tuple[float, float] | None = None, max_seconds: float | None = None,
                     rir_count: int | None = None, rir_cache: str | os.PathLike | None = None) -> DataDir:
    """Write ``data`` (a DataDir or its path) through ``channel`` into ``out``; returns the new DataDir.

    channel: one of :data:`CHANNELS` (see the module docstring). Settings of the degraded channels (None: the
    default of :class:`spkver.data.degrade.DegradeSettings`): ``seed`` (all four), ``snr`` (low, high) dB
    (noise, mixed; default 0-15), ``max_seconds`` (short, mixed; default 2), ``rir_count`` and ``rir_cache``
    (reverb, mixed; default 20 rooms cached in ``out/rirs``). Raises ``ValueError`` naming an unknown channel
    (listing the valid ones), a setting out of range or not used by the channel, or an ``out`` made with other
    settings; ``AudioError`` naming a bad utterance.
    """
    settings, record = channel_settings(channel, seed=seed, snr=snr, max_seconds=max_seconds,
                                        rir_count=rir_count, rir_cache=rir_cache)
    if not isinstance(data, DataDir):
        data = DataDir.load(data, audio_root=audio_root)
    out = Path(out)
    _check_record(out, record)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "channel.json", json.dumps(record, indent=1) + "\n")
    degrader = None
    if settings is not None:
        degrader = Degrader(settings, rir_cache=out / "rirs" if rir_cache is None else rir_cache)
    utts = show_progress(data.utts, desc=f"{channel} channel", unit="utt", disable=not progress)
    wav_scp, utt2dur, plans = {}, {}, {}
    for utt in utts:
        rel = Path("wav") / f"{utt}.wav"
        target = out / rel
        if target.exists():
            info = sf.info(str(target))
            duration = info.frames / info.samplerate
            if degrader is not None:
                plans[utt] = degrader.plan(utt)
        else:
            wave, sr = data.load_audio(utt)
            if degrader is None:
                wave, sr = TELEPHONE[channel](wave, sr)
            else:
                wave, plans[utt] = degrader(utt, wave, sr)
            wave = np.clip(wave, -1.0, 1.0)
            write_audio(target, wave, sr)
            duration = len(wave) / sr
        wav_scp[utt] = str(rel)
        utt2dur[utt] = round(duration, 4)
    result = DataDir(wav_scp=wav_scp, utt2spk=dict(data.utt2spk), utt2dur=utt2dur,
                     spk2gender=dict(data.spk2gender), path=out)
    result.save(out)
    if plans:
        atomic_write_text(out / "utt2degradation", "".join(f"{u} {describe(plans[u])}\n" for u in sorted(plans)))
    return result
