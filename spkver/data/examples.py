"""Training examples: random fixed-length chunks of training utterances, speaker-balanced.

As in Kaldi's x-vector recipe (Snyder et al. 2018, ``sid/nnet3/xvector/get_egs.sh``) every example is a random
chunk of one utterance and all chunks of a batch share one length, drawn uniformly between the configured
minimum and maximum, so batches need no padding. Utterances shorter than the chunk are repeated (tiled).

Two paths produce the chunks:

- cached (default): features of every utterance are computed once (in ``num_workers`` processes) into one
  raw float array file (``feats.bin``, read through ``numpy.memmap``) plus an index, in a folder keyed by a hash
  of the feature configuration, the storage dtype and the utterance list with their audio sources, so any
  change recomputes. Chunks are frame slices of the cache: cheap enough that CPU training never starves.
- on the fly (augmentation, or ``precompute: false``): each chunk is read as audio, augmented and turned into
  features in DataLoader workers; the feature pipeline (CMN, VAD) then sees the chunk, not the utterance.

:class:`ChunkSampler` draws the batches from a generator seeded by ``(seed, epoch)``: deterministic, resumable
at any batch, and sharded over DDP ranks (rank ``r`` takes global batches ``r, r + W, ...``).
Unreadable utterances (:class:`spkver.audio.AudioError`) raise, naming the utterance and file, or with
``skip_bad`` are left out and reported (count and ids in the log and in :attr:`TrainingSet.bad`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spkver.audio import AudioError
from spkver.features import FeatureConfig, compute_features
from spkver.progress import progress as show_progress

log = logging.getLogger(__name__)


def _window_shift(cfg: FeatureConfig) -> tuple[int, int]:
    return int(cfg.sample_rate * cfg.frame_length_ms / 1000), int(cfg.sample_rate * cfg.frame_shift_ms / 1000)


def frame_count(n_samples: int, cfg: FeatureConfig) -> int:
    """Frames Kaldi's framing makes of ``n_samples`` samples (before VAD), as its ``NumFrames``."""
    win, shift = _window_shift(cfg)
    if not cfg.snip_edges:
        return (n_samples + shift // 2) // shift
    return 0 if n_samples < win else 1 + (n_samples - win) // shift


def sample_count(n_frames: int, cfg: FeatureConfig) -> int:
    """Samples that make ``n_frames`` frames (the inverse of :func:`frame_count`)."""
    win, shift = _window_shift(cfg)
    return n_frames * shift if not cfg.snip_edges else (n_frames - 1) * shift + win


def cut(feats: np.ndarray, start: int, length: int) -> np.ndarray:
    """Frames ``[start, start + length)`` of ``feats`` ``(frames, dim)``, the utterance tiled if too short."""
    n = len(feats)
    if n >= length:
        return feats[start:start + length]
    return feats[np.arange(length) % n]


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


def utterance_features(data, utt: str, cfg: FeatureConfig, min_speech_frames: int = 0) -> tuple[np.ndarray, float]:
    """``(feats (frames, dim) float32, audio seconds)`` of ``utt`` in data dir ``data``; :class:`AudioError`
    (naming the utterance and its audio) when it cannot be read, is too short for one frame or has fewer than
    ``min_speech_frames`` frames of speech."""
    wave, _ = data.load_audio(utt, sample_rate=cfg.sample_rate)
    try:
        with single_thread():
            feats = compute_features(wave, cfg, min_speech_frames=min_speech_frames).numpy()
    except ValueError as err:
        raise AudioError(str(err), utt, data.wav_scp[data.recording(utt)[0]]) from None
    if len(feats) == 0:
        raise AudioError("no feature frames", utt, data.wav_scp[data.recording(utt)[0]])
    return feats, len(wave) / cfg.sample_rate


# ---------------------------------------------------------------------------------------------- cache
class _UttItems(Dataset):
    """Item ``i``: ``(i, array or None, error or None)``; ``with_features=False`` returns sample counts."""

    def __init__(self, data, utts, cfg: FeatureConfig, with_features: bool):
        self.data, self.utts, self.cfg, self.with_features = data, utts, cfg, with_features

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        utt = self.utts[i]
        try:
            if self.with_features:
                return i, utterance_features(self.data, utt, self.cfg)[0], None
            wave, _ = self.data.load_audio(utt, sample_rate=self.cfg.sample_rate)
            return i, len(wave), None
        except AudioError as err:
            return i, None, str(err)


def _single_thread_worker(_):
    torch.set_num_threads(1)


def _cache_key(data, utts, cfg: FeatureConfig, dtype: str, with_features: bool) -> str:
    sources = []
    for utt in utts:
        reco, start, end = data.recording(utt)
        sources.append([utt, data.resolve(reco), start, end, data.reco2channel.get(reco)])
    blob = json.dumps({"features": cfg.to_dict(), "dtype": dtype, "with_features": with_features,
                       "sources": sources}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


class FeatureCache:
    """Per-utterance features (or only lengths) of a data dir, stored once on disk.

    ``lengths[i]``: frames of utterance ``utts[i]`` (samples at the feature sample rate for a lengths-only
    cache); ``bad``: ``{utt: reason}`` of the utterances left out. Pickles by path, so loader workers reopen
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
              with_features: bool = True, num_workers: int = 0, progress: bool = False) -> "FeatureCache":
        """Load the cache for ``(data, cfg, dtype)`` under ``root``, computing it first if absent.

        Bad utterances are recorded in :attr:`bad` rather than raised (the caller decides); the folder
        appears atomically (built under a temporary name, then renamed).
        """
        utts = data.utts
        folder = Path(root) / _cache_key(data, utts, cfg, dtype, with_features)
        if (folder / "meta.json").is_file():
            return cls(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        # A whole folder appears at once (renamed when complete): not a file, so not scoring.io.atomic_write.
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        loader = DataLoader(_UttItems(data, utts, cfg, with_features), batch_size=None,
                            num_workers=num_workers, worker_init_fn=_single_thread_worker,
                            generator=torch.Generator())  # leaves the global RNG alone
        loader = show_progress(loader, total=len(utts), desc="features" if with_features else "scanning",
                               unit="utt", disable=not progress)
        kept, offsets, lengths, bad, offset, dim = [], [], [], {}, 0, cfg.dim
        try:
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
                {"dim": dim, "dtype": dtype, "bad": bad, "with_features": with_features,
                 "features": cfg.to_dict(), "data": str(data.path)}, indent=1))
            try:
                os.rename(tmp, folder)
            except OSError:  # built concurrently by another process: use theirs
                if not (folder / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(folder)


# -------------------------------------------------------------------------------------------- sampler
class Batch(NamedTuple):
    """One batch of chunks: ``rows`` ``(batch, 3)`` int64 of (utterance index, start frame, frames)."""

    epoch: int
    index: int
    rows: np.ndarray


class ChunkSampler:
    """Batches of random chunks, deterministic per ``(seed, epoch)``, resumable and sharded over ranks.

    Args:
        lengths: ``(n_utts,)`` frames per utterance. labels: ``(n_utts,)`` speaker index per utterance.
        batch_size: chunks per batch on each rank. examples_per_epoch: chunks per epoch over all ranks;
            each rank runs ``examples_per_epoch // (batch_size * world_size)`` steps.
        min_frames, max_frames: chunk length range (one length per batch, uniform).
        speaker_balanced: draw a speaker uniformly, then one of its utterances; else utterances uniformly.
    """

    def __init__(self, lengths, labels, batch_size: int, examples_per_epoch: int, min_frames: int,
                 max_frames: int, speaker_balanced: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.lengths) == 0 or len(self.lengths) != len(self.labels):
            raise ValueError(f"need one label per utterance and at least one utterance, got "
                             f"{len(self.lengths)} lengths and {len(self.labels)} labels")
        if not 0 < min_frames <= max_frames:
            raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames}, {max_frames}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.batch_size, self.min_frames, self.max_frames = batch_size, min_frames, max_frames
        self.speaker_balanced, self.seed, self.rank, self.world_size = speaker_balanced, seed, rank, world_size
        self.steps_per_epoch = examples_per_epoch // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"examples_per_epoch {examples_per_epoch} is less than one step of "
                             f"{batch_size} x {world_size} processes")
        order = np.argsort(self.labels, kind="stable")
        self._by_speaker = order
        self._spk_start = np.searchsorted(self.labels[order], np.unique(self.labels))
        self._spk_count = np.diff(np.append(self._spk_start, len(order)))
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to iterate, skipping its first ``start`` batches (resuming mid-epoch)."""
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler {self.seed}")
        self.set_epoch(state["epoch"], state["start"])

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def epoch_rows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """All ranks' chunks of ``epoch``: ``(n_batches, batch, 3)`` rows and ``(n_batches,)`` lengths."""
        rng = np.random.default_rng([self.seed, epoch])
        n_batches = self.steps_per_epoch * self.world_size
        total = n_batches * self.batch_size
        sizes = rng.integers(self.min_frames, self.max_frames + 1, size=n_batches)
        if self.speaker_balanced:
            spk = rng.integers(0, len(self._spk_count), size=total)
            within = (rng.random(total) * self._spk_count[spk]).astype(np.int64)
            utt = self._by_speaker[self._spk_start[spk] + within]
        else:
            utt = rng.integers(0, len(self.lengths), size=total)
        chunk = np.repeat(sizes, self.batch_size)
        room = np.maximum(self.lengths[utt] - chunk, 0) + 1
        start = (rng.random(total) * room).astype(np.int64)
        rows = np.stack([utt, start, chunk], axis=1).reshape(n_batches, self.batch_size, 3)
        return rows, sizes

    def __iter__(self):
        rows, _ = self.epoch_rows(self.epoch)
        for step in range(self.start, self.steps_per_epoch):
            index = step * self.world_size + self.rank
            yield Batch(self.epoch, index, rows[index])


# ------------------------------------------------------------------------------------------- datasets
class CachedChunks(Dataset):
    """``dataset[batch] -> (feats (batch, frames, dim) float32, labels (batch,) int64)`` from the cache."""

    def __init__(self, cache: FeatureCache, labels: np.ndarray):
        self.cache, self.labels = cache, np.asarray(labels, dtype=np.int64)

    def __getitem__(self, batch: Batch):
        out = np.stack([cut(self.cache[u], s, n) for u, s, n in batch.rows]).astype(np.float32)
        return torch.from_numpy(out), torch.from_numpy(self.labels[batch.rows[:, 0]])


class AudioChunks(Dataset):
    """Chunks read as audio, optionally augmented, then featurised (the on-the-fly path).

    A chunk of ``n`` frames starting at frame ``s`` covers the samples of frames ``s .. s + n - 1``; after
    feature extraction (whose VAD may drop frames) it is tiled or cut back to ``n`` frames. A chunk is
    augmented with probability ``augment_prob`` by ``augmenter`` (``spkver.data.augment.Augmenter``). The
    random draws come from a generator seeded by ``(seed, epoch, batch index, row)``, so a batch is the same
    in any worker and on resume.
    """

    def __init__(self, data, utts: list[str], labels, cfg: FeatureConfig, augmenter=None,
                 augment_prob: float = 0.5, seed: int = 0):
        self.data, self.utts, self.cfg, self.augmenter, self.seed = data, utts, cfg, augmenter, seed
        self.augment_prob = augment_prob
        self.labels = np.asarray(labels, dtype=np.int64)
        self.shift = _window_shift(cfg)[1]

    def _chunk(self, utt: str, start: int, frames: int, rng) -> np.ndarray:
        wave, _ = self.data.load_audio(utt, sample_rate=self.cfg.sample_rate)
        n = sample_count(frames, self.cfg)
        first = start * self.shift
        piece = wave[first:first + n] if len(wave) >= first + n else np.resize(wave, n)
        if self.augmenter is not None and rng.random() < self.augment_prob:
            piece = self.augmenter(piece, seed=int(rng.integers(2**63)))
        feats = compute_features(np.asarray(piece, dtype=np.float32), self.cfg).numpy()
        return cut(feats, 0, frames)

    def __getitem__(self, batch: Batch):
        out = []
        with single_thread():
            for row, (u, s, n) in enumerate(batch.rows):
                rng = np.random.default_rng([self.seed, batch.epoch, batch.index, row])
                out.append(self._chunk(self.utts[u], int(s), int(n), rng))
        return torch.from_numpy(np.stack(out)), torch.from_numpy(self.labels[batch.rows[:, 0]])


# ---------------------------------------------------------------------------------------- training set
@dataclass
class TrainingSet:
    """Everything the training loop reads: the loader, its sampler, the speakers and what was left out."""

    speakers: list[str]
    utts: list[str]
    sampler: ChunkSampler
    dataset: Dataset
    num_workers: int = 0
    bad: dict[str, str] = field(default_factory=dict)

    def loader(self, epoch: int, start: int = 0) -> DataLoader:
        """Batches of ``epoch`` on this rank from batch ``start`` on: ``(feats (B, T, D), labels (B,))``."""
        self.sampler.set_epoch(epoch, start)
        return DataLoader(self.dataset, sampler=self.sampler, batch_size=None, num_workers=self.num_workers,
                          worker_init_fn=_single_thread_worker, persistent_workers=False,
                          generator=torch.Generator().manual_seed(self.sampler.seed + epoch))


def training_set(data, features: FeatureConfig, data_cfg, cache_dir: str | os.PathLike, seed: int = 0,
                 rank: int = 0, world_size: int = 1, skip_bad: bool = False, progress: bool = False
                 ) -> TrainingSet:
    """Build the training examples of data dir ``data`` for a ``spkver.config.DataConfig``.

    ``cache_dir`` holds the feature cache (or, on the fly, the scanned utterance lengths). With several ranks
    the caller lets rank 0 build the cache first (see ``spkver.train``). Raises :class:`AudioError` for the
    first unreadable utterance unless ``skip_bad``.
    """
    shift_s = features.frame_shift_ms / 1000
    min_frames = max(1, int(round(data_cfg.chunk_min_seconds / shift_s)))
    max_frames = max(min_frames, int(round(data_cfg.chunk_max_seconds / shift_s)))
    on_the_fly = data_cfg.on_the_fly
    if on_the_fly and not skip_bad and data.utt2dur and all(u in data.utt2dur for u in data.utts):
        utts = data.utts
        lengths = [frame_count(int(round(data.utt2dur[u] * features.sample_rate)), features) for u in utts]
        bad = {}
    else:
        cache = FeatureCache.build(data, features, cache_dir, data_cfg.cache_dtype, with_features=not on_the_fly,
                                   num_workers=data_cfg.num_workers, progress=progress)
        utts, bad = cache.utts, cache.bad
        lengths = cache.lengths if not on_the_fly else [frame_count(int(n), features) for n in cache.lengths]
    if bad and not skip_bad:
        first = next(iter(bad))
        raise AudioError(f"{bad[first]} ({len(bad)} unusable utterance(s); --skip-bad leaves them out; in "
                         "Python: skip_bad=True)")
    if bad:
        log.warning("left out %d unusable utterance(s): %s", len(bad), ", ".join(sorted(bad)))
    if not utts:
        raise ValueError(f"{data.path}: no usable training utterances")
    speakers = sorted({data.utt2spk[u] for u in utts}, key=lambda s: s.encode())
    spk_index = {s: k for k, s in enumerate(speakers)}
    labels = np.array([spk_index[data.utt2spk[u]] for u in utts], dtype=np.int64)
    sampler = ChunkSampler(lengths, labels, data_cfg.batch_size, data_cfg.examples_per_epoch, min_frames,
                           max_frames, data_cfg.speaker_balanced, seed, rank, world_size)
    if on_the_fly:
        augmenter = None
        if data_cfg.augment:
            from spkver.data.augment import Augmenter

            augmenter = Augmenter(**data_cfg.augment, sample_rate=features.sample_rate, seed=seed)
        dataset = AudioChunks(data, utts, labels, features, augmenter, data_cfg.augment_prob, seed)
    else:
        dataset = CachedChunks(cache, labels)
    return TrainingSet(speakers, utts, sampler, dataset, data_cfg.num_workers, bad)
