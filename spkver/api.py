"""Python API: compare recordings with a verification system (``spkver.system``).

Usage::

    import spkver
    sv = spkver.load("path/to/system")          # spkver.load() loads the shipped default system
    sv.score("a.wav", "b.wav")                  # calibrated natural-log likelihood ratio
    sv.verify("a.wav", "b.wav")                 # Decision(accept=..., llr=..., threshold=...)
    sv.enroll("alice", ["alice1.wav", "alice2.wav"])
    sv.verify("alice", "b.wav", p_target=0.05)  # an enrolled name before a file of the same name
    sv.embed("a.wav"), sv.embed((samples, 16000)), sv.embed_batch(["a.wav", "b.flac"])

Audio is a path (anything soundfile reads) or ``(samples, rate)`` with ``samples`` shaped ``(n,)`` or
``(n, channels)``; like extraction, channels are averaged and the audio resampled to each extractor's rate.
Missing, unreadable, empty, non-finite or silent audio, or less speech after VAD than the system's
``min_speech_seconds``, raises :class:`spkver.audio.AudioError` naming the file.

A decision accepts when ``llr >= threshold``; the threshold is the Bayes threshold ``log((1 - p) / p)`` of the
target prior ``p`` unless one is given. Embeddings come from one embedder per extractor, an object with
``__call__(feats: list[(frames, dim)]) -> (embeddings (n, embed_dim), spread | None)`` made by the ``runtime``
of :data:`RUNTIMES` (``"torch"``: ``spkver.extract.Embedder``).

Batch work, :func:`score_trial_list` (``spkver verify --trials``) and :func:`embed_paths` (``spkver embed``),
runs through ``spkver.extract.extract``: batched by length, resumable.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scoring.io import Embeddings, Trials, read_embeddings, read_trials, write_embeddings, write_scores
from scoring.quality import QualityTable
from spkver.audio import AudioError, read_audio, resample
from spkver.system import System, extract_cached, load_system

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".sph", ".mp3")
MAX_SECONDS = 60.0  # window length for long recordings, as in extraction


def bayes_threshold(p_target: float) -> float:
    """The LLR threshold ``log((1 - p) / p)`` minimising the expected cost at target prior ``p`` (unit costs).

    >>> round(bayes_threshold(0.01), 3)
    4.595
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    return math.log((1.0 - p_target) / p_target)


@dataclass(frozen=True)
class Decision:
    """The verdict on one trial: ``accept`` iff ``llr >= threshold``; ``p_target`` None for a given threshold."""

    accept: bool
    llr: float
    threshold: float
    p_target: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -------------------------------------------------------------------------------------------- embedders
def _torch_embedder(extractor, device):
    from spkver.extract import Embedder

    max_frames = max(16, int(MAX_SECONDS * 1000.0 / extractor.features.frame_shift_ms))
    return Embedder(extractor.model, device, mc_samples=extractor.mc_samples, max_frames=max_frames)


def onnx_cache_path(extractor) -> Path:
    """Where the ONNX export of ``extractor`` is kept: ``$SPKVER_CACHE`` (default ``~/.cache/spkver``)
    ``/onnx/<sha256 of its checkpoint>.onnx``, so a changed checkpoint never reuses a stale export."""
    from spkver.system import sha256_file

    root = Path(os.environ.get("SPKVER_CACHE") or Path.home() / ".cache" / "spkver")
    return root / "onnx" / f"{sha256_file(extractor.path)}.onnx"


def _onnx_embedder(extractor, device):
    """onnxruntime on the CPU, with the extractor's export from :func:`onnx_cache_path` (made on first use)."""
    from spkver.onnx_export import OnnxEmbedder, export_onnx

    if extractor.mc_samples:
        raise ValueError(f"extractor {extractor.name!r} averages {extractor.mc_samples} Monte Carlo samples; the "
                         "ONNX runtime computes the posterior-mean embedding only (use the torch runtime)")
    if str(device) not in ("cpu", "auto"):
        raise ValueError(f"the ONNX runtime runs on the CPU, not {device!r}")
    path = onnx_cache_path(extractor)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting extractor %r to ONNX: %s", extractor.name, path)
        export_onnx(extractor.model, path, feat_dim=extractor.features.dim)
    import torch

    max_frames = max(16, int(MAX_SECONDS * 1000.0 / extractor.features.frame_shift_ms))
    # as many threads as torch uses (torch.set_num_threads, OMP_NUM_THREADS), not onnxruntime's every-core default
    return OnnxEmbedder(path, num_threads=torch.get_num_threads(), max_frames=max_frames)


RUNTIMES = {"torch": _torch_embedder, "onnx": _onnx_embedder}  # runtime -> factory(extractor, device) -> embedder


def make_embedder(extractor, runtime: str = "torch", device="cpu"):
    """The embedder of ``extractor`` for ``runtime`` (a key of :data:`RUNTIMES`)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime](extractor, device)


# ------------------------------------------------------------------------------------------------ audio
def _wave(item) -> tuple[np.ndarray, int, str]:
    """``(mono wave (samples,) float32, rate, label for messages)`` of a path or ``(samples, rate)``."""
    if isinstance(item, (str, os.PathLike)):
        wave, rate = read_audio(item)
        label = str(item)
    elif isinstance(item, tuple) and len(item) == 2:
        samples, rate = item
        label = "<audio array>"
        try:
            wave = np.asarray(samples, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise AudioError(f"samples are not numeric ({err})", source=label) from None
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise AudioError(f"the rate must be a positive int, got {rate!r}", source=label)
        if wave.ndim == 2:
            if wave.shape[0] < wave.shape[1]:
                raise AudioError(f"samples of shape {wave.shape}: expected (samples,) or (samples, channels); "
                                 "transpose (channels, samples) arrays", source=label)
            wave = wave.mean(axis=1)
        elif wave.ndim != 1:
            raise AudioError(f"samples of shape {wave.shape}: expected (samples,) or (samples, channels)",
                             source=label)
        if wave.size == 0:
            raise AudioError("audio is empty (0 samples)", source=label)
        if not np.isfinite(wave).all():
            raise AudioError("audio contains NaN or infinite samples", source=label)
    else:
        raise TypeError(f"audio must be a path or a (samples, rate) tuple, got {type(item).__name__}")
    if not np.any(wave):
        raise AudioError("audio is silent (every sample is 0)", source=label)
    return wave, int(rate), label


# --------------------------------------------------------------------------------------------- verifier
class Verifier:
    """A loaded system ready to embed, enroll, score and verify (see the module docstring)."""

    def __init__(self, system: System, device="cpu", runtime: str = "torch", min_speech_seconds: float | None = None):
        self.system = system
        self.device = device
        self.embedders = [make_embedder(x, runtime, device) for x in system.extractors]
        self.min_speech_seconds = system.min_speech_seconds if min_speech_seconds is None else min_speech_seconds
        # name -> (per extractor (k, embed_dim), {quality measure: (k,)} when the calibration takes some)
        self._enrolled: dict[str, tuple[list[np.ndarray], dict]] = {}

    def __repr__(self) -> str:
        names = ", ".join(x.name for x in self.system.extractors)
        return f"Verifier({str(self.system.path)!r}, extractors=[{names}], enrolled={len(self._enrolled)})"

    @property
    def enrolled(self) -> list[str]:
        return list(self._enrolled)

    def _features(self, item) -> list[np.ndarray]:
        """Per extractor the features (frames, dim) of one recording, checked for speech."""
        from spkver.features import compute_features

        wave, rate, label = _wave(item)
        out = []
        for x in self.system.extractors:
            cfg = x.features
            frames = math.ceil(self.min_speech_seconds * 1000.0 / cfg.frame_shift_ms - 1e-9)
            try:
                w = resample(wave, rate, cfg.sample_rate) if rate != cfg.sample_rate else wave
                out.append(compute_features(w, cfg, min_speech_frames=frames).numpy())
            except ValueError as err:
                raise AudioError(str(err), source=label) from None
        return out

    def _embed_all(self, items, quality: dict | None = None) -> list[np.ndarray]:
        """Per extractor the embeddings (n, embed_dim) of ``items``, batched by length. ``quality``: filled with
        the raw measures (n,) the system's calibration takes, from the first extractor: ``"duration"``, the
        seconds of speech after VAD (voiced frames x frame shift), and ``"spread"``, the mean Monte Carlo
        spread (extractors with ``mc_samples > 0``)."""
        from spkver.extract import plan_batches

        feats = [self._features(item) for item in items]  # every input is checked before any embedding
        out = []
        for k, (x, embedder) in enumerate(zip(self.system.extractors, self.embedders)):
            fps = 1000.0 / x.features.frame_shift_ms
            ids = [str(i) for i in range(len(items))]
            seconds = {i: len(f[k]) / fps for i, f in zip(ids, feats)}
            emb = np.zeros((len(items), x.embed_dim), dtype=np.float32)
            spread = np.full(len(items), np.nan)
            for batch in plan_batches(ids, seconds, fps, batch_frames=20000, max_frames=int(MAX_SECONDS * fps)):
                rows = [int(i) for i in batch]
                emb[rows], batch_spread = embedder([feats[r][k] for r in rows])
                if batch_spread is not None:
                    spread[rows] = batch_spread.mean(axis=1, dtype=np.float64)
            out.append(emb)
            if k == 0 and quality is not None:
                needed = self.system.backend.quality
                if "spread" in needed and np.isnan(spread).any():
                    raise ValueError(f"the calibration of {self.system.path} takes the embedding spread, but "
                                     f"extractor {x.name!r} gives none (mc_samples {x.mc_samples})")
                quality.update({m: v for m, v in (("duration", np.array([seconds[i] for i in ids])),
                                                  ("spread", spread)) if m in needed})
        return out

    def _pick(self, parts: list[np.ndarray], extractor: str | None) -> np.ndarray:
        names = [x.name for x in self.system.extractors]
        if extractor is None:
            return np.concatenate(parts, axis=-1)
        if extractor not in names:
            raise ValueError(f"extractor {extractor!r}: the system has {', '.join(names)}")
        return parts[names.index(extractor)]

    def embed(self, audio, extractor: str | None = None) -> np.ndarray:
        """The embedding (embed_dim,) of one recording: of ``extractor`` (a name), or of every extractor
        concatenated in system order (None; one extractor: its embedding)."""
        return self._pick(self._embed_all([audio]), extractor)[0]

    def embed_batch(self, items, extractor: str | None = None) -> np.ndarray:
        """Embeddings (n, embed_dim) of several recordings (see :meth:`embed`)."""
        items = list(items)
        if not items:
            raise ValueError("embed_batch: no audio given")
        return self._pick(self._embed_all(items), extractor)

    def enroll(self, name: str, audio) -> None:
        """Enroll speaker ``name`` from one recording or a list of them (replacing an earlier enrollment)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"an enrollment name must be a non-empty string, got {name!r}")
        items = list(audio) if isinstance(audio, (list, tuple)) and not _is_array_pair(audio) else [audio]
        if not items:
            raise ValueError(f"enroll {name!r}: no audio given")
        quality: dict = {}
        self._enrolled[name] = (self._embed_all(items, quality), quality)

    def score(self, a, b) -> float:
        """Calibrated natural-log likelihood ratio of ``a`` (an enrolled name or a recording) against ``b``."""
        q_enroll, q_test = {}, {}
        if isinstance(a, str) and a in self._enrolled:
            enroll, q_enroll = self._enrolled[a]
        elif isinstance(a, str) and not Path(a).exists():
            raise AudioError("no such audio file, and no speaker is enrolled under this name", source=a)
        else:
            enroll = self._embed_all([a], q_enroll)
        test = self._embed_all([b], q_test)
        ids = [f"e{i}" for i in range(len(enroll[0]))]
        trials = Trials(["model"], ["test"])
        pairs = [(Embeddings(ids, e), Embeddings(["test"], t)) for e, t in zip(enroll, test)]
        quality = None
        if self.system.backend.quality:  # a model's utterances combine as scoring.quality.MEASURES says
            quality = QualityTable()
            for m in self.system.backend.quality:
                quality.add(m, dict(zip(ids, q_enroll[m].tolist())), "enrollment").add(m, {"test": q_test[m][0]},
                                                                                        "test recording")
        return float(self.system.backend.score(trials, pairs, enroll_map={"model": ids}, quality=quality)[0])

    def verify(self, a, b, p_target: float = 0.01, threshold: float | None = None) -> Decision:
        """Accept or reject ``b`` as the speaker of ``a``: at the Bayes threshold of target prior ``p_target``,
        or at a given LLR ``threshold`` (then ``p_target`` is not used and the decision's is None)."""
        if threshold is None:
            threshold = bayes_threshold(p_target)
        else:
            p_target = None
        llr = self.score(a, b)
        return Decision(bool(llr >= threshold), llr, float(threshold), p_target)


def _is_array_pair(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, np.integer)) \
        and not isinstance(value[0], (str, os.PathLike))


def load(path=None, device="cpu", runtime: str = "torch", min_speech_seconds: float | None = None) -> Verifier:
    """Load the system folder ``path`` (None: the shipped default) as a :class:`Verifier`."""
    from spkver.distributed import resolve_device

    device = resolve_device(device)
    return Verifier(load_system(path, device=device), device=device, runtime=runtime,
                    min_speech_seconds=min_speech_seconds)


# ----------------------------------------------------------------------------------------------- batches
def _data(files: dict[str, Path]):
    from spkver.data.kaldi import DataDir

    return DataDir(wav_scp={i: str(p) for i, p in files.items()}, utt2spk={i: i for i in files})


def score_trial_list(system: System, trials_path, out, audio_root=None, skip_bad: bool = False, device="cpu",
                     num_workers: int | None = None) -> dict:
    """LLRs of a trial list whose ids are audio paths (relative to ``audio_root``, else the current folder),
    written to ``out`` as ``enroll test llr`` lines keyed by the ids as written.

    Each file is embedded once per extractor into ``OUT.emb/NAME.npz`` (resumable; a later run with the same
    files reuses them). With ``skip_bad``, unusable files are left out with their trials. Returns a summary.
    """
    out = Path(out)
    trials = read_trials(trials_path)
    root = Path(audio_root) if audio_root is not None else Path.cwd()
    tokens = list(dict.fromkeys(trials.enroll.tolist() + trials.test.tolist()))
    files = {t: (Path(t) if Path(t).is_absolute() else root / t).resolve() for t in tokens}
    if not skip_bad:  # before anything is written
        for token, path in files.items():
            if not path.is_file():
                raise AudioError("no such audio file (--skip-bad leaves such files out)", token, path)
    data = _data(files)
    emb_dir = out.with_name(out.name + ".emb")
    existed = emb_dir.exists()
    embeddings, bad = [], {}
    try:
        for x in system.extractors:
            sha = system.manifest["files"][x.path.relative_to(system.path).as_posix()]["sha256"]
            emb, skipped = extract_cached(x.path, emb_dir / f"{x.name}.npz", data, skip_bad=skip_bad, device=device,
                                          num_workers=num_workers, min_speech_seconds=system.min_speech_seconds,
                                          model_sha256=sha)
            embeddings.append(emb)
            bad.update(skipped)
    except BaseException:
        if not existed and emb_dir.is_dir() and not any(emb_dir.iterdir()):
            emb_dir.rmdir()  # nothing was computed: leave nothing behind
        raise
    keep = ~(np.isin(trials.enroll, list(bad)) | np.isin(trials.test, list(bad)))
    if not keep.any():
        raise ValueError(f"{trials_path}: every trial involves a skipped file")
    kept = Trials(trials.enroll[keep], trials.test[keep], trials.label[keep], source=trials.source)
    quality = None
    if system.backend.quality:  # measured as the Verifier measures them (first extractor)
        from spkver.system import speech_seconds

        quality = QualityTable()
        if "duration" in system.backend.quality:
            used = [t for t in tokens if t not in bad]
            quality.add("duration", speech_seconds(data, used, system.extractors[0].features),
                        f"{trials_path} (speech seconds after VAD)")
        quality.add_embeddings(embeddings[0])
    llr = system.backend.score(kept, [(e, e) for e in embeddings], quality=quality)
    write_scores(out, kept, llr)
    if bad:
        log.warning("skipped %d file(s) and their %d trial(s): %s", len(bad), int((~keep).sum()),
                    "; ".join(bad.values()))
    log.info("wrote %d LLRs to %s", len(kept), out)
    return {"out": str(out), "n_trials": len(trials), "n_scored": len(kept), "skipped": dict(bad)}


def audio_files(paths) -> dict[str, Path]:
    """``{id: file}`` of audio files and folders (searched recursively for :data:`AUDIO_EXTENSIONS`): a file's
    id is its stem, a file in a folder has its path relative to the folder without extension
    (``id10001/1zcIwhmdeo4/00001``). Duplicate ids raise naming both files."""
    found: dict[str, Path] = {}

    def add(key: str, path: Path) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}: its id {key!r} is empty or has whitespace")
        if key in found:
            raise ValueError(f"{found[key]} and {path} have the same id {key!r}")
        found[key] = path

    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise ValueError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            for f in files:
                add(f.relative_to(path).with_suffix("").as_posix(), f.resolve())
        elif path.is_file():
            add(path.stem, path.resolve())
        else:
            raise AudioError("no such audio file or folder", source=path)
    return found


def embed_paths(system: System, paths, out, extractor: str | None = None, skip_bad: bool = False, device="cpu",
                num_workers: int | None = None) -> dict:
    """Embed audio files and folders (:func:`audio_files`) into ``out`` (.npz, .ark or .scp): the embeddings
    of ``extractor``, or of every extractor side by side in system order (None). Returns a summary."""
    from spkver.extract import extract

    out = Path(out)
    if out.suffix.lower() not in (".npz", ".ark", ".scp"):
        raise ValueError(f"--out {out}: must end in .npz, .ark or .scp")
    names = [x.name for x in system.extractors]
    if extractor is not None and extractor not in names:
        raise ValueError(f"--extractor {extractor!r}: the system has {', '.join(names)}")
    chosen = [x for x in system.extractors if extractor in (None, x.name)]
    files = audio_files(paths)
    data = _data(files)
    common = dict(data_dir=data, skip_bad=skip_bad, device=device, num_workers=num_workers,
                  min_speech_seconds=system.min_speech_seconds)
    if len(chosen) == 1:
        summary = extract(chosen[0].path, out, **common)
        return {"out": str(out), "n_files": len(files), "n_embedded": len(files) - len(summary.bad),
                "skipped": dict(summary.bad)}
    parts = out.with_name(out.name + ".parts")
    embs, bad = [], {}
    for x in chosen:
        summary = extract(x.path, parts / f"{x.name}.npz", **common)
        embs.append(read_embeddings(parts / f"{x.name}.npz"))
        bad.update(summary.bad)
    ids = [i for i in files if i not in bad]
    write_embeddings(out, ids, np.concatenate([e.get(ids) for e in embs], axis=1))
    shutil.rmtree(parts, ignore_errors=True)
    log.info("columns of %s: %s", out, ", ".join(f"{x.name} {x.embed_dim}" for x in chosen))
    return {"out": str(out), "n_files": len(files), "n_embedded": len(ids), "skipped": dict(bad)}
