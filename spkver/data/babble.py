"""Babble from the training set itself: a pool of short speech excerpts of the training speakers.

MUSAN's speech part is the usual source of babble (Snyder et al. 2018); without it, other training speakers
serve: :class:`BabblePool` holds ``utts_per_speaker`` excerpts of ``seconds`` seconds per speaker (utterances and
offsets drawn from ``seed``), each scaled to a peak of 0.9 and stored as int16, so that a babble mix costs array
slicing, not the decoding of 3-7 files per chunk. Memory: ``speakers * utts_per_speaker * seconds *
sample_rate * 2`` bytes, e.g. 125 speakers * 3 * 3 s at 16 kHz = 36 MB. With ``folder`` the pool is written once
(``audio.npy``, ``index.npz``, ``meta.json``, atomically) and memory-mapped; it pickles by path, so DataLoader
workers map the file instead of receiving a copy.

:meth:`BabblePool.talkers` draws excerpts of distinct speakers other than the chunk's own, which is why the pool
needs at least :data:`MIN_OTHER_SPEAKERS` other speakers for every speaker.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from spkver.data.cache import build_folder

MIN_OTHER_SPEAKERS = 4
_PEAK = 0.9


class BabblePool:
    """Speech excerpts by speaker, as int16 at one sample rate.

    Args:
        audio: ``(total,)`` int16, the excerpts back to back (a full-scale int16 is 1.0).
        offsets, lengths: ``(n,)`` start and length of each excerpt in ``audio``.
        speakers: ``(n,)`` speaker id of each excerpt. sample_rate: the excerpts' rate.
    """

    def __init__(self, audio: np.ndarray, offsets, lengths, speakers, sample_rate: int, folder=None):
        self.audio = audio
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.speakers = np.asarray(speakers, dtype=str)
        self.sample_rate, self.folder = int(sample_rate), folder
        if not len(self.speakers) == len(self.offsets) == len(self.lengths):
            raise ValueError("babble pool: one offset, length and speaker per excerpt")
        self.speaker_set = sorted(set(self.speakers.tolist()))
        self._by_speaker = {s: np.nonzero(self.speakers == s)[0] for s in self.speaker_set}

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.folder is not None:
            state["audio"] = None  # reopened from the folder
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.audio is None:
            self.audio = np.load(Path(self.folder) / "audio.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets)

    def check(self, min_speakers: int, setting: str = "babble_pool") -> None:
        """Raise ``ValueError`` naming ``setting`` unless every speaker has ``max(min_speakers,
        MIN_OTHER_SPEAKERS)`` other speakers in the pool."""
        need = max(int(min_speakers), MIN_OTHER_SPEAKERS)
        if len(self.speaker_set) < need + 1:
            raise ValueError(f"{setting}: babble from the training set needs at least {need} speakers other than "
                             f"the chunk's own, i.e. {need + 1} speakers in the pool; it has "
                             f"{len(self.speaker_set)} ({len(self)} excerpts)")

    def excerpt(self, i: int) -> np.ndarray:
        """Excerpt ``i`` as float32 ``(samples,)``."""
        return self.audio[self.offsets[i]:self.offsets[i] + self.lengths[i]].astype(np.float32) / 32768.0

    def talkers(self, count: int, length: int, exclude: str, rng: np.random.Generator) -> list[np.ndarray]:
        """``count`` excerpts ``(length,)`` float32 of distinct speakers, none of them ``exclude``.

        Each is cut at a random offset of a random excerpt of its speaker (looped when shorter). ``count``
        is capped at the number of other speakers.
        """
        others = [s for s in self.speaker_set if s != exclude]
        if not others:
            raise ValueError(f"babble pool has no speaker other than {exclude!r}")
        chosen = rng.choice(len(others), size=min(int(count), len(others)), replace=False)
        out = []
        for k in chosen:
            items = self._by_speaker[others[int(k)]]
            x = self.excerpt(int(items[int(rng.integers(len(items)))]))
            if len(x) < length:
                x = np.tile(x, int(np.ceil(length / len(x))))
            start = int(rng.integers(0, len(x) - length + 1))
            out.append(x[start:start + length])
        return out

    @classmethod
    def build(cls, data, sample_rate: int, utts_per_speaker: int = 3, seconds: float = 3.0, seed: int = 0,
              folder: str | os.PathLike | None = None, utts=None) -> "BabblePool":
        """Pick ``utts_per_speaker`` utterances per speaker of data dir ``data`` and keep an excerpt of each.

        Args:
            data: a ``spkver.data.kaldi.DataDir``; ``utts``: the utterances to choose from (default all).
            seconds: excerpt length (a random part of a longer utterance, all of a shorter one).
            folder: cache root: the pool lives in ``folder/HASH`` (hash of the settings and the chosen
                utterances' audio sources), built once and reused; None keeps it in memory only.
        Raises ``ValueError`` naming the setting when ``utts_per_speaker`` < 1 or ``seconds`` <= 0.
        """
        if isinstance(utts_per_speaker, bool) or not isinstance(utts_per_speaker, int) or utts_per_speaker < 1:
            raise ValueError(f"babble_pool.utts_per_speaker must be an integer >= 1, got {utts_per_speaker!r}")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
            raise ValueError(f"babble_pool.seconds must be > 0, got {seconds!r}")
        utts = list(data.utts if utts is None else utts)
        rng = np.random.default_rng(seed)
        by_spk: dict[str, list[str]] = {}
        for utt in utts:
            by_spk.setdefault(data.utt2spk[utt], []).append(utt)
        chosen = []
        for spk in sorted(by_spk, key=lambda s: s.encode()):
            pick = rng.permutation(len(by_spk[spk]))[:utts_per_speaker]
            chosen += [(spk, by_spk[spk][int(k)], int(rng.integers(2**31))) for k in sorted(pick)]
        sources = [[u, str(data.resolve(data.recording(u)[0])), data.recording(u)[1:]] for _, u, _ in chosen]
        key = hashlib.sha1(json.dumps({"rate": int(sample_rate), "seconds": float(seconds), "seed": int(seed),
                                       "n": utts_per_speaker, "sources": sources}, default=str).encode())
        target = None if folder is None else Path(folder) / key.hexdigest()[:20]
        if target is not None and (target / "meta.json").is_file():
            return cls._open(target)
        n_keep = int(round(seconds * sample_rate))
        pieces, speakers = [], []
        for spk, utt, draw in chosen:
            wave, _ = data.load_audio(utt, sample_rate=sample_rate)
            if len(wave) > n_keep:
                start = int(np.random.default_rng(draw).integers(0, len(wave) - n_keep + 1))
                wave = wave[start:start + n_keep]
            peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
            if peak == 0.0 or not np.isfinite(peak):
                continue  # silent or broken: useless as babble
            pieces.append(np.round(wave / peak * _PEAK * 32767).astype(np.int16))
            speakers.append(spk)
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(pieces) else lengths
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        if target is None:
            return cls(audio, offsets, lengths, speakers, sample_rate)
        with build_folder(target, "meta.json") as tmp:
            np.save(tmp / "audio.npy", audio)
            np.savez(tmp / "index.npz", offsets=offsets, lengths=lengths, speakers=np.array(speakers, dtype=str))
            (tmp / "meta.json").write_text(json.dumps({"sample_rate": int(sample_rate), "seconds": seconds,
                                                       "utts_per_speaker": utts_per_speaker, "seed": seed,
                                                       "data": str(data.path)}, indent=1))
        return cls._open(target)

    @classmethod
    def _open(cls, folder: Path) -> "BabblePool":
        meta = json.loads((folder / "meta.json").read_text())
        index = np.load(folder / "index.npz")
        return cls(np.load(folder / "audio.npy", mmap_mode="r"), index["offsets"], index["lengths"],
                   index["speakers"], meta["sample_rate"], folder=str(folder))
