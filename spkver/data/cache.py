"""Per-utterance feature cache of a data dir: features computed once, read back through a memory map.

The features of every utterance (optionally speed-perturbed first) are computed once, in ``num_workers``
DataLoader processes, into one raw float array file (``feats.bin``) plus an index (``index.npz``) and
``meta.json``, in a folder keyed by a hash of the feature configuration, the storage dtype, the speed factor
(when not 1) and the utterance list with their audio sources, so any change recomputes. The folder appears
atomically. A lengths-only cache (``with_features=False``) records sample counts for the on-the-fly path.
Used by ``spkver.data.examples`` (training chunks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spkver.audio import AudioError
from spkver.features import FeatureConfig, compute_features
from spkver.progress import progress as show_progress


@contextlib.contextmanager
def build_folder(target: Path, done_file: str):
    """Build the folder ``target`` at once: yields a temporary sibling to fill, renamed to ``target`` when the
    block succeeds (an empty ``target`` is replaced). If another process finished ``target`` first (it holds
    ``done_file``), theirs is kept. The temporary folder is removed in any case. (A whole folder, not a file,
    so not ``scoring._base.atomic_write``.)"""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.rename(tmp, target)
        except OSError:  # built concurrently by another process: use theirs
            if not (target / done_file).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block. Feature extraction is a chain of small ops that intra-op
    threads slow down (several times on a busy 2-core machine); loader workers already run single-threaded."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def utterance_features(data, utt: str, cfg: FeatureConfig, min_speech_frames: int = 0, speed: float = 1.0
                       ) -> tuple[np.ndarray, float]:
    """``(feats (frames, dim) float32, audio seconds)`` of ``utt`` in data dir ``data``, played ``speed`` times
    faster; :class:`AudioError` (naming the utterance and its audio) when it cannot be read, is too short for
    one frame or has fewer than ``min_speech_frames`` frames of speech."""
    wave, _ = data.load_audio(utt, sample_rate=cfg.sample_rate)
    if speed != 1.0 and len(wave):
        from spkver.data.augment import speed_perturb

        wave = speed_perturb(wave, cfg.sample_rate, speed)
    try:
        with single_thread():
            feats = compute_features(wave, cfg, min_speech_frames=min_speech_frames).numpy()
    except ValueError as err:
        raise AudioError(str(err), utt, data.wav_scp[data.recording(utt)[0]]) from None
    if len(feats) == 0:
        raise AudioError("no feature frames", utt, data.wav_scp[data.recording(utt)[0]])
    return feats, len(wave) / cfg.sample_rate


class _UttItems(Dataset):
    """Item ``i``: ``(i, array or None, error or None)``; ``with_features=False`` returns sample counts."""

    def __init__(self, data, utts, cfg: FeatureConfig, with_features: bool, speed: float = 1.0):
        self.data, self.utts, self.cfg, self.with_features, self.speed = data, utts, cfg, with_features, speed

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        utt = self.utts[i]
        try:
            if self.with_features:
                return i, utterance_features(self.data, utt, self.cfg, speed=self.speed)[0], None
            wave, _ = self.data.load_audio(utt, sample_rate=self.cfg.sample_rate)
            return i, int(np.ceil(len(wave) / self.speed)), None
        except AudioError as err:
            return i, None, str(err)


def _single_thread_worker(_):
    torch.set_num_threads(1)


def _cache_key(data, utts, cfg: FeatureConfig, dtype: str, with_features: bool, speed: float = 1.0) -> str:
    sources = []
    for utt in utts:
        reco, start, end = data.recording(utt)
        sources.append([utt, data.resolve(reco), start, end, data.reco2channel.get(reco)])
    key = {"features": cfg.to_dict(), "dtype": dtype, "with_features": with_features, "sources": sources}
    if speed != 1.0:  # unperturbed caches keep the keys they always had
        key["speed"] = float(speed)
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


class FeatureCache:
    """Per-utterance features (or only lengths) of a data dir, stored once on disk.

    ``lengths[i]``: frames of utterance ``utts[i]`` (samples at the feature sample rate for a lengths-only
    cache); ``bad``: ``{utt: reason}`` of the utterances left out; ``speed``: the speed perturbation factor
    the audio was played at (1.0: none). Pickles by path, so loader workers reopen
    the memory map rather than copying it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        index = np.load(self.folder / "index.npz")
        self.utts: list[str] = [str(u) for u in index["utts"]]
        self.offsets, self.lengths = index["offsets"], index["lengths"]
        self.dim, self.dtype, self.bad = meta["dim"], meta["dtype"], meta["bad"]
        self.with_features = meta["with_features"]
        self.speed = float(meta.get("speed", 1.0))
        self._feats = None

    def __getstate__(self):
        return {**self.__dict__, "_feats": None}

    @property
    def feats(self) -> np.ndarray:
        """``(total_frames, dim)`` memory map of all utterances back to back."""
        if self._feats is None:
            if not self.with_features:
                raise ValueError(f"{self.folder}: lengths-only cache has no features")
            total = int(self.offsets[-1] + self.lengths[-1]) if len(self.utts) else 0
            self._feats = np.memmap(self.folder / "feats.bin", dtype=self.dtype, mode="r",
                                    shape=(total, self.dim))
        return self._feats

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.feats[self.offsets[i]:self.offsets[i] + self.lengths[i]]

    @classmethod
    def build(cls, data, cfg: FeatureConfig, root: str | os.PathLike, dtype: str = "float32",
              with_features: bool = True, num_workers: int = 0, progress: bool = False, speed: float = 1.0
              ) -> "FeatureCache":
        """Load the cache for ``(data, cfg, dtype, speed)`` under ``root``, computing it first if absent.

        ``speed`` != 1: the audio is speed-perturbed by that factor first (lengths-only: the perturbed
        sample count).

        Bad utterances are recorded in :attr:`bad` rather than raised (the caller decides); the folder
        appears atomically (built under a temporary name, then renamed).
        """
        utts = data.utts
        folder = Path(root) / _cache_key(data, utts, cfg, dtype, with_features, speed)
        if (folder / "meta.json").is_file():
            return cls(folder)
        loader = DataLoader(_UttItems(data, utts, cfg, with_features, speed), batch_size=None,
                            num_workers=num_workers, worker_init_fn=_single_thread_worker,
                            generator=torch.Generator())  # leaves the global RNG alone
        desc = ("features" if with_features else "scanning") + (f" (speed {speed:g})" if speed != 1.0 else "")
        loader = show_progress(loader, total=len(utts), desc=desc,
                               unit="utt", disable=not progress)
        kept, offsets, lengths, bad, offset, dim = [], [], [], {}, 0, cfg.dim
        with build_folder(folder, "meta.json") as tmp:
            with open(tmp / "feats.bin", "wb") as out:
                for i, value, error in loader:
                    if error is not None:
                        bad[utts[i]] = error
                        continue
                    n = len(value) if with_features else int(value)
                    if with_features:
                        out.write(np.ascontiguousarray(value, dtype=dtype).tobytes())
                        dim = value.shape[1]
                    kept.append(utts[i])
                    offsets.append(offset)
                    lengths.append(n)
                    offset += n if with_features else 0
            np.savez(tmp / "index.npz", utts=np.array(kept, dtype=str),
                     offsets=np.array(offsets, dtype=np.int64), lengths=np.array(lengths, dtype=np.int64))
            (tmp / "meta.json").write_text(json.dumps(
                {"dim": dim, "dtype": dtype, "bad": bad, "with_features": with_features, "speed": float(speed),
                 "features": cfg.to_dict(), "data": str(data.path)}, indent=1))
        return cls(folder)
