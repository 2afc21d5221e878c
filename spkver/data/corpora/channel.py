"""Pass a whole data dir through a simulated channel: the out-of-domain condition of the recipes.

``simulate_channel(data, out, channel="telephone")`` writes every utterance of ``data`` through the channel as
16-bit WAV under ``out/wav/`` and a Kaldi data dir in ``out`` (same utterance and speaker ids, ``wav.scp``
paths relative to ``out``), so trial lists of the original set apply unchanged. Finished files are kept when the
command is run again (resumable); each file is written to a temporary name first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from spkver.audio import write_audio
from spkver.data.augment import telephone_channel
from spkver.data.kaldi import DataDir
from spkver.progress import progress as show_progress

CHANNELS = {
    # name -> f(wave (samples,), sr) -> (wave, sr)
    "telephone": lambda wave, sr: telephone_channel(wave, sr, keep_8k=False),
    "telephone8k": lambda wave, sr: telephone_channel(wave, sr, keep_8k=True),
}


def simulate_channel(data: DataDir | str | os.PathLike, out: str | os.PathLike, channel: str = "telephone",
                     audio_root=None, progress: bool = False) -> DataDir:
    """Write ``data`` (a DataDir or its path) through ``channel`` into ``out``; returns the new DataDir.

    channel: ``telephone`` (8 kHz, 300-3400 Hz, mu-law, back at the original rate) or ``telephone8k`` (kept at
    8 kHz). Raises ``ValueError`` listing the valid names, and ``AudioError`` naming a bad utterance.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; valid: {', '.join(sorted(CHANNELS))}")
    if not isinstance(data, DataDir):
        data = DataDir.load(data, audio_root=audio_root)
    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    apply = CHANNELS[channel]
    utts = data.utts
    utts = show_progress(utts, desc=f"{channel} channel", unit="utt", disable=not progress)
    wav_scp, utt2dur = {}, {}
    for utt in utts:
        rel = Path("wav") / f"{utt}.wav"
        target = out / rel
        if target.exists():
            info = sf.info(str(target))
            duration = info.frames / info.samplerate
        else:
            wave, sr = data.load_audio(utt)
            wave, sr = apply(wave, sr)
            wave = np.clip(wave, -1.0, 1.0)
            write_audio(target, wave, sr)
            duration = len(wave) / sr
        wav_scp[utt] = str(rel)
        utt2dur[utt] = round(duration, 4)
    result = DataDir(wav_scp=wav_scp, utt2spk=dict(data.utt2spk), utt2dur=utt2dur,
                     spk2gender=dict(data.spk2gender), path=out)
    result.save(out)
    return result
