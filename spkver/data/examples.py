"""Training examples: random fixed-length chunks of training utterances, speaker-balanced.

As in Kaldi's x-vector recipe (Snyder et al. 2018, ``sid/nnet3/xvector/get_egs.sh``) every example is a random
chunk of one utterance and all chunks of a batch share one length, drawn uniformly between the configured
minimum and maximum, so batches need no padding. Utterances shorter than the chunk are repeated (tiled).

Two paths produce the chunks:

- cached (default): features of every utterance are computed once into a :class:`spkver.data.cache.FeatureCache`
  (re-exported here; a memory-mapped array in a folder keyed by everything the features depend on). Chunks
  are frame slices of the cache: cheap enough that CPU training never starves.
- on the fly (augmentation, or ``precompute: false``): each chunk is read as audio, augmented and turned into
  features in DataLoader workers; the feature pipeline (CMN, VAD) then sees the chunk, not the utterance.

Speed perturbation as new speakers (``data.speed_perturb``, e.g. ``[0.9, 1.1]``; Yamamoto et al., "Speaker
augmentation and bandwidth extension for deep speaker embedding", Interspeech 2019; ids named as by Kaldi's
``utils/data/perturb_data_dir_speed.sh``): each factor ``f`` adds a copy of every training utterance,
``sp{f}-UTT`` of speaker ``sp{f}-SPK``, played ``f`` times faster
(:func:`spkver.data.augment.speed_perturb`), so the speakers (and the classifier's classes) triple with two
factors. Cached, each factor has its own feature cache (its key includes the factor); on the fly, the chunk's
stretch of the original audio is perturbed per example. SpecAugment (``data.spec_augment``,
:class:`spkver.data.specaug.SpecAugment`) masks each chunk's features in both paths. Augmentation with a babble
pool or simulated RIRs caches them under ``cache_dir`` (``babble/``, ``rirs/``) unless the ``augment`` settings
name another folder (``rir_cache``). On the fly, ``data.audio_cache`` decodes every utterance once into a
float16 waveform cache (a :class:`FeatureCache` of ``kind="waveform"``, 2 bytes per sample) that chunks are
sliced from, instead of decoding the (compressed) file for every chunk.

:class:`ChunkSampler` draws the batches from a generator seeded by ``(seed, epoch)``: deterministic, resumable
at any batch, and sharded over DDP ranks (rank ``r`` takes global batches ``r, r + W, ...``).
Unreadable utterances (:class:`spkver.audio.AudioError`) raise, naming the utterance and file, or with
``skip_bad`` are left out and reported (count and ids in the log and in :attr:`TrainingSet.bad`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spkver.audio import AudioError
from spkver.data.cache import FeatureCache, _single_thread_worker, single_thread, utterance_features
from spkver.features import FeatureConfig, compute_features

__all__ = ["AudioChunks", "Batch", "CachedChunks", "ChunkSampler", "FeatureCache", "TrainingSet", "cut",
           "frame_count", "sample_count", "single_thread", "speed_name", "training_set", "utterance_features"]
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
def _mask_rng(seed: int, batch: Batch, row: int) -> np.random.Generator:
    """The SpecAugment generator of one chunk: ``(seed, epoch, batch index, row)``, apart from other draws."""
    return np.random.default_rng([seed, batch.epoch, batch.index, row, 1])


class CachedChunks(Dataset):
    """``dataset[batch] -> (feats (batch, frames, dim) float32, labels (batch,) int64)`` from the cache.

    ``cache``: one :class:`FeatureCache`, or several (e.g. one per speed factor) whose utterances are numbered
    one after the other (:attr:`parts`; :attr:`cache` is the first). ``spec_augment``: a
    :class:`spkver.data.specaug.SpecAugment` applied to every chunk.
    """

    def __init__(self, cache, labels: np.ndarray, spec_augment=None, seed: int = 0):
        self.parts = list(cache) if isinstance(cache, (list, tuple)) else [cache]
        self.cache = self.parts[0]
        self.starts = np.cumsum([0] + [len(c) for c in self.parts])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec_augment, self.seed = spec_augment, seed

    def feats(self, u: int) -> np.ndarray:
        """``(frames, dim)`` features of utterance ``u`` (numbered over all parts)."""
        k = int(np.searchsorted(self.starts, u, side="right")) - 1
        return self.parts[k][int(u - self.starts[k])]

    def __getitem__(self, batch: Batch):
        out = np.stack([cut(self.feats(u), s, n) for u, s, n in batch.rows]).astype(np.float32)
        if self.spec_augment is not None:
            for row in range(len(out)):
                out[row] = self.spec_augment(out[row], _mask_rng(self.seed, batch, row))
        return torch.from_numpy(out), torch.from_numpy(self.labels[batch.rows[:, 0]])


class AudioChunks(Dataset):
    """Chunks read as audio, optionally augmented, then featurised (the on-the-fly path).

    A chunk of ``n`` frames starting at frame ``s`` covers the samples of frames ``s .. s + n - 1``; after
    feature extraction (whose VAD may drop frames) it is tiled or cut back to ``n`` frames. A chunk is
    augmented with probability ``augment_prob`` by ``augmenter`` (``spkver.data.augment.Augmenter``, told the
    chunk's speaker), then masked by ``spec_augment``. The random draws come from generators seeded by
    ``(seed, epoch, batch index, row)``, so a batch is the same in any worker and on resume.

    ``utts[i]`` is the audio of example utterance ``i``; ``speeds[i]`` (default 1) the speed it is played at
    (frames and starts count perturbed time; only the chunk's stretch of audio is perturbed);
    ``speakers[i]`` (default the data dir's speaker of ``utts[i]``) the speaker training-set babble leaves out.
    ``audio``: a waveform :class:`FeatureCache` (``kind="waveform"``) of the data dir, read instead of decoding
    the utterance's file for every chunk.
    """

    def __init__(self, data, utts: list[str], labels, cfg: FeatureConfig, augmenter=None,
                 augment_prob: float = 0.5, seed: int = 0, speeds=None, speakers=None, spec_augment=None,
                 audio: FeatureCache | None = None):
        self.data, self.utts, self.cfg, self.augmenter, self.seed = data, utts, cfg, augmenter, seed
        self.augment_prob, self.spec_augment = augment_prob, spec_augment
        self.labels = np.asarray(labels, dtype=np.int64)
        self.speeds = np.ones(len(utts)) if speeds is None else np.asarray(speeds, dtype=np.float64)
        self.speakers = [data.utt2spk[u] for u in utts] if speakers is None else list(speakers)
        self.shift = _window_shift(cfg)[1]
        self.audio = audio
        self._audio_index = None if audio is None else {u: i for i, u in enumerate(audio.utts)}

    def _wave(self, utt: str) -> np.ndarray:
        """The samples of ``utt`` at the feature rate (a memory-map view when cached)."""
        if self.audio is not None:
            return self.audio[self._audio_index[utt]][:, 0]
        return self.data.load_audio(utt, sample_rate=self.cfg.sample_rate)[0]

    def _piece(self, wave: np.ndarray, first: int, n: int, speed: float) -> np.ndarray:
        """Samples ``[first, first + n)`` of ``wave`` played ``speed`` times faster (tiled when short)."""
        if speed == 1.0:
            piece = wave[first:first + n] if len(wave) >= first + n else np.resize(wave, n)
            return np.asarray(piece, dtype=np.float32)
        from spkver.data.augment import speed_perturb

        sr = self.cfg.sample_rate
        step = int(round(sr * speed))
        g = math.gcd(step, sr)
        p, q = step // g, sr // g  # input samples k * p land exactly on output samples k * q
        pad = 64  # resampling filter context on either side
        k = max(0, int(first * speed) - pad) // p
        lo, skip = k * p, first - k * q
        need = int(np.ceil((skip + n + 1) * speed)) + pad
        src = wave[lo:lo + need] if len(wave) >= lo + need else np.resize(wave, lo + need)[lo:]
        src = np.asarray(src, dtype=np.float32)
        out = speed_perturb(src, sr, speed)[skip:skip + n]
        return out if len(out) == n else np.resize(out, n)

    def _chunk(self, u: int, start: int, frames: int, rng) -> np.ndarray:
        piece = self._piece(self._wave(self.utts[u]), start * self.shift, sample_count(frames, self.cfg),
                            float(self.speeds[u]))
        if self.augmenter is not None and rng.random() < self.augment_prob:
            piece = self.augmenter(piece, seed=int(rng.integers(2**63)), speaker=self.speakers[u])
        feats = compute_features(np.asarray(piece, dtype=np.float32), self.cfg).numpy()
        return cut(feats, 0, frames)

    def __getitem__(self, batch: Batch):
        out = []
        with single_thread():
            for row, (u, s, n) in enumerate(batch.rows):
                rng = np.random.default_rng([self.seed, batch.epoch, batch.index, row])
                feats = self._chunk(int(u), int(s), int(n), rng)
                if self.spec_augment is not None:
                    feats = self.spec_augment(feats, _mask_rng(self.seed, batch, row))
                out.append(feats)
        return torch.from_numpy(np.stack(out)), torch.from_numpy(self.labels[batch.rows[:, 0]])


# ---------------------------------------------------------------------------------------- training set
@dataclass
class TrainingSet:
    """Everything the training loop reads: the loader, its sampler, the speakers and what was left out.

    ``utts`` and ``speakers`` include the speed-perturbed copies (``sp0.9-UTT``, ``sp0.9-SPK``).
    """

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


def speed_name(name: str, speed: float) -> str:
    """The id of ``name`` (an utterance or a speaker) in the copy played ``speed`` times faster."""
    return name if speed == 1.0 else f"sp{speed:g}-{name}"


def _check_speed_copies(data, utts, lengths, speeds, shift_s: float, min_seconds: float) -> None:
    """``ValueError`` naming ``data.speed_perturb``, the factor and the speaker when a perturbed copy of a
    speaker has less than ``min_seconds`` of audio (one chunk)."""
    total: dict[tuple[float, str], float] = {}
    for utt, n, f in zip(utts, lengths, speeds):
        if f != 1.0:
            key = (f, data.utt2spk[utt])
            total[key] = total.get(key, 0.0) + n * shift_s
    for (f, spk), seconds in sorted(total.items()):
        if seconds < min_seconds:
            raise ValueError(f"data.speed_perturb: factor {f:g} leaves speaker {spk!r} (as {speed_name(spk, f)!r}) "
                             f"with {seconds:.2f} s of audio, less than chunk_min_seconds = {min_seconds:g} s")


def _augmenter(data, utts, features: FeatureConfig, data_cfg, cache_dir, seed: int):
    """The ``Augmenter`` of ``data_cfg.augment``, its babble pool built from ``utts`` of ``data``."""
    from spkver.data.augment import Augmenter

    settings = dict(data_cfg.augment)
    pool = settings.get("babble_pool")
    if pool is not None and pool is not False and not hasattr(pool, "talkers"):
        from spkver.data.babble import BabblePool

        options = {} if pool is True else dict(pool)
        try:
            settings["babble_pool"] = BabblePool.build(data, features.sample_rate, folder=Path(cache_dir) / "babble",
                                                       utts=utts, **options)
        except TypeError as err:
            raise ValueError(f"augment.babble_pool: {err}") from None
    if settings.get("simulate_rir") and settings.get("rir_cache") is None:
        settings["rir_cache"] = str(Path(cache_dir) / "rirs")
    return Augmenter(**settings, sample_rate=features.sample_rate, seed=seed)


def training_set(data, features: FeatureConfig, data_cfg, cache_dir: str | os.PathLike, seed: int = 0,
                 rank: int = 0, world_size: int = 1, skip_bad: bool = False, progress: bool = False
                 ) -> TrainingSet:
    """Build the training examples of data dir ``data`` for a ``spkver.config.DataConfig``.

    ``cache_dir`` holds the feature caches (or, on the fly, the scanned utterance lengths or, with
    ``audio_cache``, the decoded audio), the babble pool and the simulated RIRs. With several ranks the caller
    lets rank 0 build the caches first (see ``spkver.train``). Raises :class:`AudioError` for the first
    unreadable utterance unless ``skip_bad``; ``ValueError`` naming the setting for a speed factor that leaves a
    speaker with less than one chunk of audio, a babble pool with too few speakers, or SpecAugment on waveform
    features.
    """
    shift_s = features.frame_shift_ms / 1000
    min_frames = max(1, int(round(data_cfg.chunk_min_seconds / shift_s)))
    max_frames = max(min_frames, int(round(data_cfg.chunk_max_seconds / shift_s)))
    on_the_fly = data_cfg.on_the_fly
    speeds = [1.0] + [float(f) for f in (data_cfg.speed_perturb or [])]
    spec_augment = None
    if data_cfg.spec_augment is not None:
        from spkver.data.specaug import SpecAugment

        if features.kind == "waveform":
            raise ValueError("data.spec_augment masks feature bins and frames: not for waveform features")
        spec_augment = SpecAugment(**data_cfg.spec_augment)
    caches, audio = [], None
    if on_the_fly and data_cfg.audio_cache:
        wave_cfg = FeatureConfig(kind="waveform", sample_rate=features.sample_rate)
        audio = FeatureCache.build(data, wave_cfg, cache_dir, "float16", num_workers=data_cfg.num_workers,
                                   progress=progress)
        utts, bad, samples = audio.utts, audio.bad, [int(n) for n in audio.lengths]
    elif on_the_fly and not skip_bad and data.utt2dur and all(u in data.utt2dur for u in data.utts):
        utts = data.utts
        samples = [int(round(data.utt2dur[u] * features.sample_rate)) for u in utts]
        bad = {}
    else:
        cache = FeatureCache.build(data, features, cache_dir, data_cfg.cache_dtype, with_features=not on_the_fly,
                                   num_workers=data_cfg.num_workers, progress=progress)
        utts, bad = cache.utts, cache.bad
        samples = None if not on_the_fly else [int(n) for n in cache.lengths]
        caches = [cache]
    if bad and not skip_bad:
        first = next(iter(bad))
        raise AudioError(f"{bad[first]} ({len(bad)} unusable utterance(s); --skip-bad leaves them out; in "
                         "Python: skip_bad=True)")
    if bad:
        log.warning("left out %d unusable utterance(s): %s", len(bad), ", ".join(sorted(bad)))
    if not utts:
        raise ValueError(f"{data.path}: no usable training utterances")
    sources, item_speed, lengths = [], [], []
    for f in speeds:
        if on_the_fly:
            part = list(utts)
            lengths += [frame_count(int(np.ceil(n / f)), features) for n in samples]
        else:
            if f != 1.0:
                caches.append(FeatureCache.build(data, features, cache_dir, data_cfg.cache_dtype,
                                                 num_workers=data_cfg.num_workers, progress=progress, speed=f))
            part = caches[-1].utts
            lengths += list(caches[-1].lengths)
        sources += part
        item_speed += [f] * len(part)
    _check_speed_copies(data, sources, lengths, item_speed, shift_s, data_cfg.chunk_min_seconds)
    item_speakers = [speed_name(data.utt2spk[u], f) for u, f in zip(sources, item_speed)]
    speakers = sorted(set(item_speakers), key=lambda s: s.encode())
    spk_index = {s: k for k, s in enumerate(speakers)}
    labels = np.array([spk_index[s] for s in item_speakers], dtype=np.int64)
    sampler = ChunkSampler(lengths, labels, data_cfg.batch_size, data_cfg.examples_per_epoch, min_frames,
                           max_frames, data_cfg.speaker_balanced, seed, rank, world_size)
    if on_the_fly:
        augmenter = _augmenter(data, utts, features, data_cfg, cache_dir, seed) if data_cfg.augment else None
        dataset = AudioChunks(data, sources, labels, features, augmenter, data_cfg.augment_prob, seed,
                              speeds=item_speed, spec_augment=spec_augment, audio=audio)
    else:
        dataset = CachedChunks(caches, labels, spec_augment, seed)
    items = [speed_name(u, f) for u, f in zip(sources, item_speed)]
    return TrainingSet(speakers, items, sampler, dataset, data_cfg.num_workers, bad)
