"""Embedding extraction: whole utterances, batched by length, resumable, shardable over torchrun ranks.

Inputs are a Kaldi data dir, a ``wav.scp`` or a list of audio files (ids: the file stems, which must be
unique). Features are computed with the checkpoint's own ``FeatureConfig`` in DataLoader worker processes
while the model runs. Utterances are sorted by duration (``utt2dur``, segment times or the audio header) and
grouped so that a batch holds at most ``batch_frames`` padded frames; every utterance is embedded whole.
An utterance longer than ``max_seconds`` (after VAD) is cut into the fewest equal windows no longer than
that, and its embedding is the frame-weighted mean of the window embeddings (as Kaldi's
``nnet3-xvector-compute --chunk-size`` averages chunk x-vectors). Utterances shorter than the model's
``min_frames`` (the x-vector's 15-frame context) are repeated up to it.

Bayesian models give the posterior-mean embedding (``mc_samples=0``, through the model's
``fuse_for_inference``: for the x-vector, BatchNorm folded into the layers) or the mean of ``mc_samples``
sampled embeddings with their per-dimension standard deviation, stored as ``spread`` (in the ``.npz``, or
beside a Kaldi archive as ``NAME.spread.ark``).

Resuming: finished batches go to ``OUT.partial/`` (one small ``.npz`` each, written atomically); a restart
skips the utterances found there, the final file is written atomically and the folder removed. Under
torchrun rank ``r`` takes batches ``r, r + W, ...`` and rank 0 merges.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scoring.io import atomic_write, atomic_write_text, read_table, write_embeddings
from spkver.audio import AudioError, is_pipe
from spkver.data.examples import utterance_features
from spkver.data.kaldi import DataDir, DataDirError
from spkver.nn.tdnn import CONTEXT
from spkver.progress import progress as show_progress

log = logging.getLogger(__name__)
MIN_FRAMES = CONTEXT + 1


@dataclass
class ExtractSummary:
    """What an :func:`extract` run did. ``bad``: ``{id: reason}`` of skipped utterances."""

    out: Path
    n_utts: int
    n_computed: int = 0
    n_resumed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    bad: dict = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio embedded per second of wall time in this run."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def __str__(self) -> str:
        text = (f"wrote {self.n_utts - len(self.bad)} embeddings to {self.out} ({self.n_computed} computed, "
                f"{self.n_resumed} resumed; {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s, "
                f"{self.realtime_factor:.0f}x real time)")
        if self.bad:
            text += f"; skipped {len(self.bad)} bad: {', '.join(sorted(self.bad))}"
        return text


# ------------------------------------------------------------------------------------------------ inputs
def as_data(data_dir=None, wav_scp=None, files=None, audio_root=None) -> tuple[DataDir, list[str]]:
    """Exactly one input as a :class:`DataDir` plus the output order of its ids (``data_dir``: a path, or a
    :class:`DataDir` already in memory, whose ids keep their order)."""
    given = [x is not None for x in (data_dir, wav_scp, files)]
    if sum(given) != 1:
        raise ValueError("give exactly one of data_dir, wav_scp or files")
    if isinstance(data_dir, DataDir):
        return data_dir, list(data_dir.utt2spk)
    if data_dir is not None:
        data = DataDir.load(data_dir, audio_root=audio_root)
        return data, data.utts
    if wav_scp is not None:
        wav_scp = Path(wav_scp)
        if not wav_scp.is_file():
            raise FileNotFoundError(f"no such wav.scp: {wav_scp}")
        table = read_table(wav_scp, rest_as_value=True, error=DataDirError)
        if not table:
            raise ValueError(f"{wav_scp}: no entries")
        data = DataDir(wav_scp=table, utt2spk={u: u for u in table}, path=wav_scp.parent,
                       audio_root=None if audio_root is None else Path(audio_root))
        return data, list(table)
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("files is empty")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(f"files {seen[p.stem]} and {p} share the id {p.stem!r} (ids are file stems)")
        if not p.stem or any(c.isspace() for c in p.stem):
            raise ValueError(f"file {p}: its stem {p.stem!r} is not a usable id (empty or with whitespace)")
        seen[p.stem] = p
    data = DataDir(wav_scp={s: str(p.resolve()) for s, p in seen.items()}, utt2spk={s: s for s in seen})
    return data, list(seen)


def check_files(data: DataDir, utts: list[str]) -> None:
    """Raise :class:`AudioError` for the first utterance whose audio file (not a pipe) does not exist."""
    for utt in utts:
        reco = data.recording(utt)[0]
        entry = data.resolve(reco)
        if not is_pipe(entry) and not Path(entry).is_file():
            raise AudioError("no such audio file (--skip-bad leaves such files out; in Python: "
                             "skip_bad=True)", utt, entry)


def durations(data: DataDir, utts: list[str]) -> dict[str, float | None]:
    """Seconds per utterance from ``utt2dur``, segment times or the file header; None when unknown."""
    import soundfile as sf

    out: dict[str, float | None] = {}
    for utt in utts:
        dur = data.utt2dur.get(utt)
        if dur is None:
            reco, start, end = data.recording(utt)
            if start is not None and end != -1:
                dur = end - start
            elif not is_pipe(data.wav_scp[reco]):
                try:
                    info = sf.info(data.resolve(reco))
                    dur = info.frames / info.samplerate - (start or 0.0)
                except Exception:  # unreadable: the real error is raised when the audio is loaded
                    dur = None
        out[utt] = dur
    return out


def plan_batches(utts: list[str], seconds: dict, frames_per_second: float, batch_frames: int,
                 max_frames: int, batch_size: int | None = None) -> list[list[str]]:
    """Group utterances, longest first, so that ``windows * longest window <= batch_frames`` per batch, and
    at most ``batch_size`` utterances (when given) are in one.

    Utterances of unknown duration come last, one per batch.
    """
    known = sorted((u for u in utts if seconds.get(u) is not None), key=lambda u: (-seconds[u], u))
    batches, current, windows, longest = [], [], 0, 0
    for utt in known:
        frames = max(MIN_FRAMES, int(seconds[utt] * frames_per_second))
        n_win = math.ceil(frames / max_frames)
        win = math.ceil(frames / n_win)
        if current and ((windows + n_win) * max(longest, win) > batch_frames
                        or batch_size is not None and len(current) >= batch_size):
            batches.append(current)
            current, windows, longest = [], 0, 0
        current.append(utt)
        windows += n_win
        longest = max(longest, win)
    if current:
        batches.append(current)
    return batches + [[u] for u in utts if seconds.get(u) is None]


class BatchFeatures(Dataset):
    """Item ``k``: ``[(utt, feats (frames, dim) float32 | None, error | None, audio seconds)]`` of batch k."""

    def __init__(self, data: DataDir, batches: list[list[str]], feature_cfg, min_speech_frames: int = 0):
        self.data, self.batches, self.cfg, self.min_speech = data, batches, feature_cfg, min_speech_frames

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, k):
        out = []
        for utt in self.batches[k]:
            try:
                feats, seconds = utterance_features(self.data, utt, self.cfg, self.min_speech)
                out.append((utt, feats, None, seconds))
            except AudioError as err:
                out.append((utt, None, str(err), 0.0))
        return out


# ----------------------------------------------------------------------------------------------- compute
def windows(feats: np.ndarray, max_frames: int, min_frames: int = MIN_FRAMES) -> list[np.ndarray]:
    """``feats (frames, dim)`` as the fewest near-equal windows of at most ``max_frames`` frames (but never
    fewer than ``min_frames``, the model's minimum); an utterance shorter than that is repeated up to it."""
    n = len(feats)
    if n < min_frames:
        return [feats[np.arange(min_frames) % n]]
    return np.array_split(feats, max(1, min(math.ceil(n / max_frames), n // min_frames)))


def window_batch(feats: list[np.ndarray], max_frames: int, min_frames: int = MIN_FRAMES) -> tuple:
    """The :func:`windows` of every utterance of ``feats`` (each ``(frames_i, dim)``), zero-padded into one batch.

    Returns ``(x (pieces, longest, dim) float32, lengths (pieces,) int64, owner (pieces,) int64)``:
    ``lengths[j]`` valid frames of window ``j`` (>= :data:`MIN_FRAMES`), ``owner[j]`` the index in ``feats``
    of its utterance. :func:`merge_windows` turns the window embeddings back into one row per utterance.
    """
    pieces, owner = [], []
    for i, f in enumerate(feats):
        for w in windows(f, max_frames, min_frames):
            pieces.append(w)
            owner.append(i)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    x = np.zeros((len(pieces), int(lengths.max()), pieces[0].shape[1]), dtype=np.float32)
    for j, p in enumerate(pieces):
        x[j, :len(p)] = p
    return x, lengths, np.array(owner, dtype=np.int64)


def merge_windows(values: np.ndarray, lengths: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Rows ``values (pieces, d)`` of the windows of :func:`window_batch` -> ``(n, d)`` float32: each
    utterance's frame-weighted mean of its windows (``values`` itself when every utterance is one window)."""
    if len(values) == n:
        return values
    weights = np.zeros((n, len(values)), dtype=np.float64)
    weights[owner, np.arange(len(values))] = lengths
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights @ values).astype(np.float32)


class Embedder:
    """Embeds batches of variable-length features with a trained model.

    ``__call__(feats: list[(frames_i, dim)]) -> (embeddings (n, embed_dim), spread (n, embed_dim) | None)``.
    """

    def __init__(self, model, device="cpu", mc_samples: int = 0, max_frames: int = 6000, amp: str | None = None,
                 seed: int = 0):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.mc = int(mc_samples) if getattr(model, "is_bayesian", False) else 0
        self.fused = model.fuse_for_inference() if self.mc == 0 and hasattr(model, "fuse_for_inference") else None
        self.max_frames, self.amp, self.seed, self.calls = max_frames, amp, seed, 0
        self.min_frames = int(getattr(model, "min_frames", MIN_FRAMES))

    def _forward(self, x: torch.Tensor, lengths):
        if self.fused is not None:
            return self.fused(x, lengths), None
        if self.mc == 0:
            return self.model.embed(x, lengths), None
        return self.model.extract(x, lengths, mc_samples=self.mc)

    def __call__(self, feats: list[np.ndarray]):
        x, lengths, owner = window_batch(feats, self.max_frames, self.min_frames)
        longest = x.shape[1]
        xt = torch.from_numpy(x).to(self.device, non_blocking=True)
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        # Monte Carlo draws are seeded per call, without disturbing the caller's RNG state
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=self.amp is not None):
            torch.manual_seed(self.seed + self.calls)
            emb, spread = self._forward(xt, None if bool((lengths == longest).all())
                                        else torch.from_numpy(lengths).to(self.device))
        self.calls += 1
        emb = emb.float().cpu().numpy()
        spread = None if spread is None else spread.float().cpu().numpy()
        return (merge_windows(emb, lengths, owner, len(feats)),
                None if spread is None else merge_windows(spread, lengths, owner, len(feats)))


def _single_thread(_):
    torch.set_num_threads(1)


def iterate(data: DataDir, batches: list[list[str]], feature_cfg, embedder: Embedder, num_workers: int,
            skip_bad: bool, progress: bool = False, min_speech_frames: int = 0):
    """Yield ``(ids, embeddings, spread | None, bad {id: reason}, audio seconds)`` per batch, in order."""
    loader = DataLoader(BatchFeatures(data, batches, feature_cfg, min_speech_frames), batch_size=None,
                        num_workers=num_workers,
                        worker_init_fn=_single_thread, prefetch_factor=4 if num_workers else None,
                        generator=torch.Generator())  # leaves the global RNG alone
    bar = show_progress(total=sum(len(b) for b in batches), desc="extract", unit="utt", disable=not progress)
    try:
        for items in loader:
            bad = {u: err for u, f, err, _ in items if err is not None}
            if bad and not skip_bad:
                raise AudioError(next(iter(bad.values())) + " (--skip-bad leaves such files out; in Python: "
                                                            "skip_bad=True)")
            good = [(u, f, s) for u, f, err, s in items if err is None]
            if not good:
                bar.update(len(items))
                yield [], None, None, bad, 0.0
                continue
            emb, spread = embedder([f for _, f, _ in good])
            bar.update(len(items))
            yield [u for u, _, _ in good], emb, spread, bad, sum(s for _, _, s in good)
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------ partial store
def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _read_partial(folder: Path, signature: dict) -> tuple[dict, dict]:
    """``({id: (embedding, spread | None)}, {id: reason})`` stored by earlier runs with the same signature."""
    done, bad = {}, {}
    meta = folder / "meta.json"
    if not meta.is_file():
        return done, bad
    if json.loads(meta.read_text()) != signature:
        log.warning("%s: written with another model or options; starting afresh", folder)
        return done, bad
    for chunk in sorted(folder.glob("*.npz")):
        with np.load(chunk, allow_pickle=False) as z:
            spread = z["spread"] if "spread" in z.files else None
            for i, utt in enumerate(z["ids"].tolist()):
                done[utt] = (z["embeddings"][i], None if spread is None else spread[i])
            bad.update(zip(z["bad_ids"].tolist(), z["bad_reasons"].tolist()))
    return done, bad


def _write_chunk(path: Path, ids, emb, spread, bad: dict) -> None:
    arrays = dict(ids=np.array(ids, dtype=str), bad_ids=np.array(list(bad), dtype=str),
                  bad_reasons=np.array(list(bad.values()), dtype=str))
    if ids:
        arrays["embeddings"] = emb
        if spread is not None:
            arrays["spread"] = spread
    else:
        arrays["embeddings"] = np.zeros((0, 0), dtype=np.float32)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _write_output(out: Path, ids: list[str], emb: np.ndarray, spread: np.ndarray | None) -> None:
    if out.suffix.lower() == ".npz" and spread is not None:
        with atomic_write(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, ids=np.array(ids, dtype=str), embeddings=emb, spread=spread)
        return
    write_embeddings(out, ids, emb)
    if spread is not None:
        write_embeddings(out.with_name(out.stem + ".spread" + out.suffix), ids, spread)


# ---------------------------------------------------------------------------------------------- extract
def extract(model_path, out, data_dir=None, wav_scp=None, files=None, mc_samples: int = 0,
            device: str = "cpu", batch_frames: int = 10000, skip_bad: bool = False, resume: bool = True,
            audio_root=None, max_seconds: float = 60.0, num_workers: int | None = None, amp: str | None = None,
            progress: bool = False, seed: int = 0, batch_size: int | None = None,
            min_speech_seconds: float = 0.0) -> ExtractSummary:
    """Extract one embedding per utterance with the model of ``model_path`` (checkpoint, experiment dir or
    ``speechbrain:DIR``, a pretrained SpeechBrain folder: :mod:`spkver.speechbrain_folder`).

    Args:
        out: ``.npz`` (arrays ``ids``, ``embeddings`` and, with ``mc_samples > 0``, ``spread``) or ``.ark`` /
            ``.scp`` (a Kaldi archive and its index).
        data_dir / wav_scp / files: exactly one input (``audio_root`` resolves relative ``wav.scp`` paths);
            ``data_dir`` may be a :class:`DataDir` in memory.
        mc_samples: Bayesian models: 0 for the posterior mean, K > 0 to average K sampled embeddings.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` (under torchrun ``cuda`` means
            ``cuda:LOCAL_RANK``).
        batch_frames: padded feature frames per batch. batch_size: at most this many utterances per batch
            (None: no limit besides ``batch_frames``). max_seconds: window length for long utterances.
        skip_bad: leave unreadable utterances out (reported) instead of raising :class:`AudioError`.
        min_speech_seconds: an utterance with less speech than this after VAD is bad (0: no minimum).
        resume: reuse the batches finished by an interrupted run (``OUT.partial/``).
        num_workers: feature worker processes (default: 1 on CPU, 4 on GPU). amp: ``"bf16"`` autocast (CUDA,
            or CPU where supported), ``"fp16"`` (CUDA only) or None (float32). seed: seeds the Monte Carlo draws.
        progress: a bar over the utterances (rank 0, only when stderr is a terminal).
    Returns:
        :class:`ExtractSummary` (the merged result on rank 0; this rank's share elsewhere).
    """
    from spkver import distributed
    from spkver.checkpoint import fingerprint, load_model, resolve_checkpoint

    start_time = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".npz", ".ark", ".scp"):
        raise ValueError(f"{out}: output must end in .npz, .ark or .scp")
    if isinstance(mc_samples, bool) or int(mc_samples) != mc_samples or mc_samples < 0:
        raise ValueError(f"mc_samples must be an integer >= 0, got {mc_samples!r}")
    if batch_frames <= 0 or max_seconds <= 0:
        raise ValueError("batch_frames and max_seconds must be positive")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if num_workers is not None and (int(num_workers) != num_workers or num_workers < 0):
        raise ValueError(f"num_workers must be an integer >= 0 or None, got {num_workers!r}")
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be 'bf16', 'fp16' or None, got {amp!r}")
    if not min_speech_seconds >= 0:
        raise ValueError(f"min_speech_seconds must be >= 0, got {min_speech_seconds!r}")
    data, order = as_data(data_dir, wav_scp, files, audio_root)
    if not skip_bad:
        check_files(data, order)  # before OUT.partial/ exists: an input error leaves nothing behind
    info = distributed.setup(device)
    if amp == "fp16" and info.device.type != "cuda":
        raise ValueError(f"amp 'fp16' needs a CUDA device, not {info.device} (use 'bf16' or None)")
    ckpt = resolve_checkpoint(model_path)
    model, feature_cfg, meta = load_model(ckpt, device=info.device)
    fps = 1000.0 / feature_cfg.frame_shift_ms
    max_frames = max(MIN_FRAMES, int(max_seconds * fps))
    min_speech_frames = math.ceil(min_speech_seconds * fps - 1e-9)
    signature = {**fingerprint(ckpt), "mc_samples": int(mc_samples),
                 "max_frames": max_frames, "seed": seed, "amp": amp, "min_speech_frames": min_speech_frames}

    partial = _partial_dir(out)
    done, bad = _read_partial(partial, signature) if resume else ({}, {})
    distributed.barrier(info)  # every rank has read the store before anyone writes to it
    if info.is_main:
        if not resume or not done and not bad:
            shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write_text(partial / "meta.json", json.dumps(signature))
    distributed.barrier(info)
    todo = [u for u in order if u not in done and u not in bad]
    batches = plan_batches(todo, durations(data, todo), fps, batch_frames, max_frames,
                           batch_size)[info.rank::info.world_size]
    if num_workers is None:
        num_workers = 4 if info.device.type == "cuda" else 1
    if info.is_main:
        before = f" ({len(done) + len(bad)} done before)" if done or bad else ""
        log.info("extracting %d utterance(s) with %s on %s%s", len(todo), ckpt, info.device, before)
    embedder = Embedder(model, info.device, mc_samples, max_frames, amp, seed=seed + 7919 * info.rank)
    summary = ExtractSummary(out=out, n_utts=len(order), n_resumed=len(done))
    run = uuid.uuid4().hex[:8]
    try:
        for k, (ids, emb, spread, new_bad, seconds) in enumerate(
                iterate(data, batches, feature_cfg, embedder, num_workers, skip_bad, progress and info.is_main,
                        min_speech_frames)):
            _write_chunk(partial / f"r{info.rank:03d}_{run}_{k:06d}.npz", ids, emb, spread, new_bad)
            summary.n_computed += len(ids)
            summary.audio_seconds += seconds
            bad.update(new_bad)
    except BaseException:
        if info.is_main and not any(partial.glob("*.npz")):  # nothing computed yet: leave no OUT.partial/
            shutil.rmtree(partial, ignore_errors=True)
        raise
    distributed.barrier(info)
    if info.is_main:
        done, bad = _read_partial(partial, signature)
        missing = [u for u in order if u not in done and u not in bad]
        if missing:
            raise RuntimeError(f"{partial}: no embedding for {len(missing)} utterance(s), e.g. {missing[0]!r}")
        ids = [u for u in order if u in done]
        if not ids:
            raise ValueError(f"no embeddings extracted: all {len(order)} utterances are bad")
        emb = np.stack([done[u][0] for u in ids])
        has_spread = mc_samples > 0 and done[ids[0]][1] is not None
        spread = np.stack([done[u][1] for u in ids]) if has_spread else None
        _write_output(out, ids, emb, spread)
        shutil.rmtree(partial, ignore_errors=True)
        summary.n_computed = len(ids) - summary.n_resumed
    summary.bad = dict(bad)
    if bad:
        log.warning("skipped %d bad utterance(s): %s", len(bad), ", ".join(sorted(bad)))
    summary.wall_seconds = time.perf_counter() - start_time
    if info.is_main:
        log.info("%s", summary)
    return summary
