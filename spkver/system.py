"""Verification systems: one self-contained, versioned folder that turns two recordings into a calibrated LLR.

Layout (paths relative to the folder)::

    system.json               the manifest (below)
    extractors/NAME.pt        per extractor: a model-only checkpoint (state dict, model name and arguments,
                              FeatureConfig; no optimiser), loaded with torch.load(weights_only=True)
    backend/NAME.npz          per extractor: its scorer with its embedding post-processing (cosine: the
                              training mean; PLDA: centring, LDA, whitening, length norm and the model)
    cohort/NAME.npz           per extractor, with S-norm / AS-norm: the cohort embeddings (ids, embeddings)
    calibration.npz           score -> natural-log LLR: a Calibration (one extractor) or the LinearFusion
                              weights over the extractors' scores (several); or a QualityCalibration (kind
                              "quality", ``build_system(qmf=...)``), which also takes each side's speech duration
                              (voiced frames after VAD x frame shift, with the first extractor's features)

``system.json`` holds ``format`` ("spkver-system"), ``format_version`` (:data:`FORMAT_VERSION`), the spkver
version that wrote it, per extractor its feature configuration, model description and back-end, what the
system was trained and calibrated on (paths; counts of speakers, utterances and trials), its metrics on the
calibration trials (``scoring.report.evaluate_system`` rows, plus a speaker-disjoint check: actDCF vs minDCF at
``p_target`` of a calibration trained by 2-fold ``cross_validated_fusion`` over enrollment speakers), and
``files``: the sha256 and size of every other file.

Loading executes no code: JSON, ``.npz`` with ``allow_pickle=False``, weights with ``weights_only=True``.
:func:`load_system` refuses, naming the file, a folder without ``system.json``, a ``format_version`` newer
than this spkver reads, a missing file, a file whose hash differs from the manifest (changed after the build)
and pieces whose dimensions disagree (a back-end or cohort of another dimension than its extractor, a
calibration with another number of weights than extractors).

:func:`build_system` makes one from trained extractors (``spkver system build``); the folder is written under
a temporary name and renamed when complete. ``spkver.api.Verifier`` uses one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from scoring.calibrated import Branch, CalibratedBackend, input_dim, load_scorer, scorer_kind
from scoring.fusion import Calibration, LinearFusion
from scoring.quality import QualityCalibration, QualityTable, parse_quality, quality_features
from scoring.io import Embeddings, ScoringInputError, Trials, atomic_write_text, read_embeddings
from spkver import __version__

log = logging.getLogger(__name__)

FORMAT = "spkver-system"
FORMAT_VERSION = 1
MANIFEST = "system.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CALIBRATIONS = {"calibration": Calibration, "fusion": LinearFusion, "quality": QualityCalibration}  # kind -> class


class SystemFolderError(ValueError):
    """A folder that is not a usable verification system; the message names the file at fault."""


def default_system_path() -> Path:
    """The system shipped inside the package (``spkver/default_system/``), used when no system is given."""
    return Path(__file__).resolve().parent / "default_system"


def resolve_system_path(path=None) -> Path:
    """``path`` as a Path, or the shipped default system; raises when ``path`` is None and none is installed."""
    if path is not None:
        return Path(path)
    folder = default_system_path()
    if not (folder / MANIFEST).is_file():
        raise SystemFolderError(f"no default system is installed; pass --system PATH (in Python: "
                                f"spkver.load(PATH)); looked in {folder}")
    return folder


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- manifest
def _member(folder: Path, rel, mpath: Path) -> Path:
    """``folder / rel`` for a relative path that stays inside the folder."""
    if not isinstance(rel, str) or not rel:
        raise SystemFolderError(f"{mpath}: file name {rel!r} is not a non-empty string")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
        raise SystemFolderError(f"{mpath}: file {rel!r} lies outside the system folder")
    return folder.joinpath(*parts)


def _require(mapping, key: str, kind, where: str, mpath: Path):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SystemFolderError(f"{mpath}: {where}{key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _check_schema(manifest: dict, mpath: Path) -> None:
    """The fields :func:`load_system` reads, with their types."""
    _require(manifest, "files", dict, "", mpath)
    extractors = _require(manifest, "extractors", list, "", mpath)
    if not extractors:
        raise SystemFolderError(f"{mpath}: the system lists no extractor")
    names = set()
    for k, spec in enumerate(extractors):
        where = f"extractors[{k}]."
        name = _require(spec, "name", str, where, mpath)
        if not _NAME_RE.match(name) or name in names:
            raise SystemFolderError(f"{mpath}: extractor name {name!r} is not a unique plain name")
        names.add(name)
        for key in ("checkpoint",):
            _require(spec, key, str, where, mpath)
        _require(spec, "features", dict, where, mpath)
        _require(_require(spec, "model", dict, where, mpath), "name", str, where + "model.", mpath)
        backend = _require(spec, "backend", dict, where, mpath)
        _require(backend, "kind", str, where + "backend.", mpath)
        _require(backend, "file", str, where + "backend.", mpath)
        norm = _require(spec, "norm", dict, where, mpath)
        if _require(norm, "kind", str, where + "norm.", mpath) != "none":
            _require(norm, "cohort", str, where + "norm.", mpath)
    calibration = _require(manifest, "calibration", dict, "", mpath)
    if _require(calibration, "kind", str, "calibration.", mpath) not in CALIBRATIONS:
        raise SystemFolderError(f"{mpath}: calibration kind {calibration['kind']!r}; expected one of "
                                f"{', '.join(CALIBRATIONS)}")
    _require(calibration, "file", str, "calibration.", mpath)
    _require(manifest, "p_target", float, "", mpath)


def read_manifest(path) -> dict:
    """The checked ``system.json`` of system folder ``path``: its format, version and every listed file (present,
    same size and sha256). Raises :class:`SystemFolderError` naming the file at fault."""
    folder = Path(path)
    if not folder.is_dir():
        what = "a file" if folder.exists() else "no such directory"
        raise SystemFolderError(f"{folder}: not a spkver system folder ({what})")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise SystemFolderError(f"{folder}: not a spkver system folder (it has no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemFolderError(f"{mpath}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SystemFolderError(f"{mpath}: not a spkver system manifest (format {found!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SystemFolderError(f"{mpath}: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise SystemFolderError(f"{mpath}: format_version {version} is newer than this spkver ({__version__}) "
                                f"reads (up to {FORMAT_VERSION}); upgrade spkver")
    _check_schema(manifest, mpath)
    for rel, entry in manifest["files"].items():
        file = _member(folder, rel, mpath)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or \
                not isinstance(entry.get("size"), int):
            raise SystemFolderError(f"{mpath}: files[{rel!r}] needs a sha256 string and a size")
        if not file.is_file():
            raise SystemFolderError(f"{file}: missing (listed in {mpath})")
        if file.stat().st_size != entry["size"] or sha256_file(file) != entry["sha256"]:
            raise SystemFolderError(f"{file}: its sha256 or size differs from {mpath}: the file was changed after "
                                    "the system was built")
    return manifest


def _listed(folder: Path, manifest: dict, rel: str) -> Path:
    """A file the manifest uses, which must also be hashed in its ``files``."""
    mpath = folder / MANIFEST
    path = _member(folder, rel, mpath)
    if rel not in manifest["files"]:
        raise SystemFolderError(f"{mpath}: {rel} is used but has no sha256 in 'files'")
    return path


# --------------------------------------------------------------------------------------------- loading
@dataclass
class Extractor:
    """One extractor of a loaded system: ``model`` (eval mode) with its ``features``, embedding ``embed_dim``."""

    name: str
    path: Path
    model: object
    features: object
    embed_dim: int
    mc_samples: int = 0


@dataclass
class System:
    """A loaded system: its folder, manifest, extractors and back-end (branches in extractor order)."""

    path: Path
    manifest: dict
    extractors: list[Extractor]
    backend: CalibratedBackend

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def p_target(self) -> float:
        """The prior the calibration was trained for (the default operating point)."""
        return float(self.manifest["p_target"])

    @property
    def min_speech_seconds(self) -> float:
        return float(self.manifest.get("min_speech_seconds", 0.0))


def load_system(path=None, device="cpu") -> System:
    """Load and check a system folder (``None``: the shipped default); models go to ``device``."""
    from spkver.checkpoint import load_model
    from spkver.features import FeatureConfig

    folder = resolve_system_path(path)
    manifest = read_manifest(folder)
    mpath = folder / MANIFEST
    extractors, branches = [], []
    for spec in manifest["extractors"]:
        name = spec["name"]
        ckpt = _listed(folder, manifest, spec["checkpoint"])
        model, features, meta = load_model(ckpt, device=device)
        if meta["model_name"] != spec["model"]["name"]:
            raise SystemFolderError(f"{ckpt}: holds model {meta['model_name']!r}, {mpath} says "
                                    f"{spec['model']['name']!r}")
        try:
            listed = FeatureConfig.from_dict(spec["features"])
        except (TypeError, ValueError) as err:
            raise SystemFolderError(f"{mpath}: features of extractor {name!r}: {err}") from None
        if listed != features:
            raise SystemFolderError(f"{ckpt}: its feature configuration differs from the one in {mpath}")
        dim = int(model.embed_dim)
        extractors.append(Extractor(name, ckpt, model, features, dim, int(spec.get("mc_samples", 0))))
        backend_file = _listed(folder, manifest, spec["backend"]["file"])
        try:
            scorer = load_scorer(spec["backend"]["kind"], backend_file)
        except ScoringInputError as err:
            raise SystemFolderError(str(err)) from None
        if input_dim(scorer) not in (None, dim):
            raise SystemFolderError(f"{backend_file}: the {spec['backend']['kind']} back-end takes "
                                    f"{input_dim(scorer)}-dim embeddings, extractor {name!r} ({ckpt.name}) gives {dim}")
        norm, cohort, top_k = spec["norm"]["kind"], None, None
        if norm != "none":
            cohort_file = _listed(folder, manifest, spec["norm"]["cohort"])
            try:
                cohort = read_embeddings(cohort_file)
            except ScoringInputError as err:
                raise SystemFolderError(str(err)) from None
            if cohort.dim != dim:
                raise SystemFolderError(f"{cohort_file}: cohort embeddings have dimension {cohort.dim}, extractor "
                                        f"{name!r} ({ckpt.name}) gives {dim}")
            top_k = spec["norm"].get("top_k")
        try:
            branches.append(Branch(name, scorer, norm, cohort, top_k))
        except ScoringInputError as err:
            raise SystemFolderError(f"{mpath}: {err}") from None
    cal = manifest["calibration"]
    cal_file = _listed(folder, manifest, cal["file"])
    try:
        calibration = CALIBRATIONS[cal["kind"]].load(cal_file)
    except ScoringInputError as err:
        raise SystemFolderError(str(err)) from None
    if isinstance(calibration, QualityCalibration):
        if calibration.n_systems != len(extractors):
            raise SystemFolderError(f"{cal_file}: a quality calibration of {calibration.n_systems} score(s) for "
                                    f"{len(extractors)} extractor(s)")
    elif calibration.weights.shape[0] != len(extractors):
        raise SystemFolderError(f"{cal_file}: {calibration.weights.shape[0]} calibration weight(s) for "
                                f"{len(extractors)} extractor(s)")
    return System(folder, manifest, extractors, CalibratedBackend(branches, calibration))


# ------------------------------------------------------------------------------------------ extraction
def extract_cached(model_path, out, data, skip_bad: bool = False, device="cpu", num_workers=None,
                   min_speech_seconds: float = 0.0, model_sha256: str | None = None) -> tuple[Embeddings, dict]:
    """Embeddings of every utterance of ``data`` (a ``DataDir``) written to ``out`` (.npz) by
    ``spkver.extract.extract`` (batched, resumable through ``OUT.partial/``), or read back when ``out`` and its
    record ``out.json`` come from the same model (sha256) and inputs. Returns ``(embeddings, bad {id: reason})``.
    """
    from spkver.audio import AudioError
    from spkver.checkpoint import resolve_checkpoint
    from spkver.extract import extract

    out = Path(out)
    model_sha256 = model_sha256 or sha256_file(resolve_checkpoint(model_path))
    entries = sorted((u, data.resolve(data.recording(u)[0]), data.recording(u)[1:]) for u in data.utt2spk)
    signature = {"model_sha256": model_sha256, "min_speech_seconds": float(min_speech_seconds),
                 "inputs_sha256": hashlib.sha256(json.dumps(entries).encode()).hexdigest()}
    record = out.with_suffix(".json")
    if out.is_file() and record.is_file():
        try:
            stored = json.loads(record.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            stored = {}
        if stored.get("signature") == signature:
            bad = dict(stored.get("bad", {}))
            if bad and not skip_bad:
                raise AudioError(next(iter(bad.values())) + " (--skip-bad leaves such files out; in Python: "
                                                             "skip_bad=True)")
            log.info("reusing the embeddings in %s", out)
            return read_embeddings(out), bad
    summary = extract(model_path, out, data_dir=data, skip_bad=skip_bad, device=device, num_workers=num_workers,
                      min_speech_seconds=min_speech_seconds)
    atomic_write_text(record, json.dumps({"signature": signature, "bad": summary.bad}, indent=1) + "\n")
    return read_embeddings(out), dict(summary.bad)


def speech_seconds(data, utts, features) -> dict[str, float]:
    """``{utt: seconds of speech}`` of utterances of ``data`` (a ``DataDir``): voiced frames after VAD times the
    frame shift of ``features`` (a ``FeatureConfig``; every frame when VAD is off or finds none), as
    ``spkver.api.Verifier`` measures a recording."""
    from spkver.features import features_and_vad

    out = {}
    for utt in utts:
        wave, _ = data.load_audio(utt, sample_rate=features.sample_rate)
        _, voiced = features_and_vad(wave, features)
        out[utt] = (int(voiced.sum()) or len(voiced)) * features.frame_shift_ms / 1000.0
    return out


# -------------------------------------------------------------------------------------------- building
def _default_names(models) -> list[str]:
    names = []
    for model in models:
        path = Path(str(model).split(":", 1)[1] if str(model).startswith("speechbrain:") else model).resolve()
        base = path.name
        if path.is_file():  # a checkpoint: its stem, or its experiment dir's name for final.pt, epoch_003.pt ...
            base = path.stem
            if base in ("final", "latest") or base.startswith("epoch_"):
                base = (path.parent.parent if path.parent.name == "checkpoints" else path.parent).name
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
        base = base if _NAME_RE.match(base) else f"x{len(names)}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _per_model(values, n: int, what: str) -> list | None:
    if values is None:
        return None
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} given for {n} model(s); give one per --model, in the same order")
    return values


def _speaker_count(ids, utt2spk: dict, where: str) -> int:
    missing = [u for u in ids if u not in utt2spk]
    if missing:
        raise ScoringInputError(f"{where}: no speaker for utterance {missing[0]!r}")
    return len({utt2spk[u] for u in ids})


def build_system(models, out, backend: str = "plda", *, calibrate_data, calibrate_trials, train_data=None,
                 train_emb=None, utt2spk=None, lda_dim: int | None = None, norm: str = "none", cohort_emb=None,
                 cohort_data=None, top_k: int | None = None, calibrate_emb=None, names=None,
                 p_target: float = 0.01, name: str | None = None, audio_root=None, device="cpu",
                 skip_bad: bool = False, overwrite: bool = False, min_speech_seconds: float = 0.5,
                 num_workers: int | None = None, plda_iter: int = 10, qmf=None) -> Path:
    """Build a system folder ``out`` from trained extractors (checkpoints or experiment dirs ``models``).

    Args:
        backend: ``"cosine"`` (centred on the training mean) or ``"plda"`` (LDA to ``lda_dim``, PLDA).
        train_data / train_emb + utt2spk: the back-end's training set: a data dir (embedded with each model), or
            one embedding file per model with the speaker of each utterance.
        norm: ``"none"``, ``"snorm"`` or ``"asnorm"`` (``top_k``, default 200) with cohort embeddings: one file per
            model (``cohort_emb``) or a data dir embedded with each model (``cohort_data``).
        calibrate_data, calibrate_trials: data dir (its ``utt2spk`` gives the enrollment speakers) and labelled
            trials between its utterances; the calibration (or, with several models, the fusion) is trained on
            them at prior ``p_target``. ``calibrate_emb``: one embedding file per model instead of extracting.
        names: one name per model (default: the experiment dir names). name: the system's name.
        audio_root: resolves relative ``wav.scp`` paths of the data dirs. skip_bad: leave unreadable
            utterances out. min_speech_seconds: verification refuses audio with less speech after VAD.
        overwrite: replace an existing ``out``.
        qmf: quality measures of a quality-measure calibration (``scoring.quality``) instead of the plain one:
            ``"duration"`` (the speech seconds after VAD of each calibration utterance, measured with the first
            extractor's features as the verifier measures a recording). ``"spread"`` needs Monte Carlo
            extractors, which system folders do not hold (their extractors give the posterior mean).
    Returns:
        ``out``. Embeddings extracted on the way are kept in ``OUT.work/`` until the build succeeds.
    """
    from scoring.io import check_labels, read_trials, read_utt2spk
    from scoring.pipeline import BACKENDS, build_scorer
    from spkver.checkpoint import as_file, is_speechbrain, load_model, resolve_checkpoint
    from spkver.data.kaldi import DataDir

    out = Path(out)
    start = time.perf_counter()
    models = [str(m) if is_speechbrain(m) else Path(m) for m in models]
    if not models:
        raise ValueError("give at least one model (--model)")
    names = list(names) if names else _default_names(models)
    if len(names) != len(models):
        raise ValueError(f"--name: {len(names)} name(s) for {len(models)} model(s)")
    for n in names:
        if not _NAME_RE.match(n) or n in ("fusion", "calibrated", "qmf"):
            raise ValueError(f"--name {n!r}: use letters, digits, '_', '.', '-' (not 'fusion', 'calibrated' or "
                             "'qmf')")
    if len(set(names)) != len(names):
        raise ValueError(f"--name: names must be unique, got {names}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if (train_data is None) == (train_emb is None):
        raise ValueError("give exactly one of --train-data or --train-emb")
    if train_emb is not None and utt2spk is None:
        raise ValueError("--train-emb needs --utt2spk")
    if lda_dim is not None and backend != "plda":
        raise ValueError("--lda-dim goes with --backend plda")
    if norm not in ("none", "snorm", "asnorm"):
        raise ValueError(f"--norm {norm!r}; valid: snorm, asnorm")
    if norm == "none" and (cohort_emb is not None or cohort_data is not None or top_k is not None):
        raise ValueError("--cohort, --cohort-data and --top-k go with --norm snorm|asnorm")
    if norm != "none" and (cohort_emb is None) == (cohort_data is None):
        raise ValueError(f"--norm {norm} needs exactly one of --cohort or --cohort-data")
    if top_k is not None and norm != "asnorm":
        raise ValueError("--top-k goes with --norm asnorm")
    top_k = (200 if top_k is None else int(top_k)) if norm == "asnorm" else None
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"--p-target must lie strictly between 0 and 1, got {p_target}")
    train_emb = _per_model(train_emb, len(models), "--train-emb")
    cohort_emb = _per_model(cohort_emb, len(models), "--cohort")
    calibrate_emb = _per_model(calibrate_emb, len(models), "--calibrate-emb")
    try:
        quality = parse_quality(qmf) if qmf else ()
    except ScoringInputError as err:
        raise ValueError(f"--qmf: {err}") from None
    if "spread" in quality:
        raise ValueError("--qmf spread: a system's extractors give the posterior-mean embedding (mc_samples 0), "
                         "which has no spread; use --qmf duration")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out}: already exists (remove it or pass --overwrite)")

    # every input is read and checked before anything is computed or written
    sources = [resolve_checkpoint(m) for m in models]
    loaded = [load_model(s) for s in sources]  # (model, FeatureConfig, meta)
    dev = DataDir.load(calibrate_data, audio_root=audio_root)
    trials = read_trials(calibrate_trials)
    check_labels(trials)
    unknown = sorted(set(trials.enroll.tolist() + trials.test.tolist()) - set(dev.utt2spk))
    if unknown:
        raise ValueError(f"--calibrate-trials {calibrate_trials}: utterance {unknown[0]!r} is not in "
                         f"--calibrate-data {calibrate_data} ({len(unknown)} unknown)")
    train_dir = None if train_data is None else DataDir.load(train_data, audio_root=audio_root)
    train_spk = train_dir.utt2spk if train_dir is not None else read_utt2spk(utt2spk)
    cohort_dir = None if cohort_data is None else DataDir.load(cohort_data, audio_root=audio_root)

    work = out.with_name(out.name + ".work")

    kinds = [("train", train_emb, train_dir), ("calibrate", calibrate_emb, dev)]
    kinds += [("cohort", cohort_emb, cohort_dir)] if norm != "none" else []
    sets: dict[str, list] = {kind: [None] * len(models) for kind, _, _ in kinds}
    for kind, given, _ in kinds:  # embedding files first: a wrong one stops the build before any extraction
        for k, path in enumerate(given or []):
            sets[kind][k] = read_embeddings(path)
            if sets[kind][k].dim != loaded[k][0].embed_dim:
                raise ValueError(f"{path}: {sets[kind][k].dim}-dim embeddings, but model {names[k]} ({sources[k]}) "
                                 f"gives {loaded[k][0].embed_dim}-dim ones")
    files = [as_file(s, work / "models" / f"{n}.pt") for s, n in zip(sources, names)]  # speechbrain: -> a .pt
    for kind, given, data in kinds:
        if given is None:  # named after the data dir: one used twice (training and cohort) is embedded once
            tag = hashlib.sha256(str(data.path.resolve()).encode()).hexdigest()[:12]
            for k in range(len(models)):
                sets[kind][k] = extract_cached(files[k], work / f"{names[k]}_{tag}.npz", data, skip_bad=skip_bad,
                                               device=device, num_workers=num_workers)[0]

    keep = np.ones(len(trials), dtype=bool)
    for emb in sets["calibrate"]:
        keep &= np.isin(trials.enroll, emb.ids) & np.isin(trials.test, emb.ids)
    if not keep.all():
        if not skip_bad:
            i = int(np.argmin(keep))
            raise ValueError(f"--calibrate-trials: no embedding for trial {trials.enroll[i]} {trials.test[i]} "
                             f"({int((~keep).sum())} trial(s) without)")
        log.warning("calibration: dropped %d trial(s) of skipped utterances", int((~keep).sum()))
        trials = Trials(trials.enroll[keep], trials.test[keep], trials.label[keep], source=trials.source)
        check_labels(trials)

    branches = []
    for k, n in enumerate(names):
        scorer = build_scorer(backend, train=sets["train"][k], utt2spk=train_spk, lda_dim=lda_dim,
                              subtract_mean=backend == "cosine", plda_iter=plda_iter)
        branches.append(Branch(n, scorer, norm, sets["cohort"][k] if norm != "none" else None, top_k))
    back = CalibratedBackend(branches)
    raw = back.raw_scores(trials, [(e, e) for e in sets["calibrate"]])
    labels = trials.label.astype(np.int64)
    sides = ()
    if quality:
        utts = np.unique(np.concatenate([trials.enroll, trials.test])).tolist()
        table = QualityTable().add("duration", speech_seconds(dev, utts, loaded[0][1]),
                                   f"{calibrate_data} (speech seconds after VAD)")
        sides = table.trial_sides(trials, quality)
    calibration = back.fit_calibration(raw, labels, p_target, quality, *sides)
    metrics = _metrics(names, raw, back.llr(raw, *sides), labels, trials, dev.utt2spk, p_target, quality, sides)

    def paths(values):
        return None if values is None else [str(Path(v).resolve()) for v in values]

    used = np.unique(np.concatenate([trials.enroll, trials.test])).tolist()
    counts = {
        "training": {"data": None if train_data is None else paths([train_data])[0], "embeddings": paths(train_emb),
                     "utt2spk": None if utt2spk is None else paths([utt2spk])[0],
                     "n_speakers": _speaker_count(sets["train"][0].ids.tolist(), train_spk, "training set"),
                     "n_utterances": len(sets["train"][0])},
        "calibration_set": {"data": paths([calibrate_data])[0], "trials": paths([calibrate_trials])[0],
                            "embeddings": paths(calibrate_emb),
                            "n_speakers": _speaker_count(used, dev.utt2spk, "calibration set"),
                            "n_utterances": len(used), "n_trials": len(trials), "n_target": trials.n_target,
                            "n_nontarget": trials.n_nontarget},
        "cohort_set": None if norm == "none" else {
            "data": None if cohort_data is None else paths([cohort_data])[0], "embeddings": paths(cohort_emb),
            "n_utterances": len(sets["cohort"][0])},
    }
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name or out.name,
                "spkver_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "p_target": float(p_target), "min_speech_seconds": float(min_speech_seconds), "backend": backend,
                **counts, "metrics": metrics}
    _write_system(out, manifest, names, sources, loaded, branches, calibration)
    shutil.rmtree(work, ignore_errors=True)
    cv = metrics["cross_validated"]
    log.info("built %s in %.1f s: %d extractor(s), %s back-end%s%s; cross-validated actDCF %.3f vs minDCF %.3f at "
             "p_target %g", out, time.perf_counter() - start, len(names), backend,
             "" if norm == "none" else f" + {norm}", f", QMF on {','.join(quality)}" if quality else "",
             cv["act_dcf"], cv["min_dcf"], p_target)
    return out


def _metrics(names, raw, llr, labels, trials, utt2spk: dict, p_target: float, quality=(), sides=()) -> dict:
    """Rows on the calibration trials (each extractor's raw score, the system's LLR) and the speaker-disjoint
    check of the calibration: 2-fold cross-validated over enrollment speakers, actDCF vs minDCF. ``quality``,
    ``sides``: the measures and (q_enroll, q_test) of a quality calibration."""
    from scoring.pipeline import cross_validated_fusion
    from scoring.report import evaluate_system

    priors = (p_target,)
    rows = [evaluate_system(n, raw[:, k], labels, priors) for k, n in enumerate(names)]
    name = "qmf" if quality else "fusion" if len(names) > 1 else "calibrated"
    rows.append(evaluate_system(name, llr, labels, priors, calibrated=True))
    groups = np.asarray([utt2spk[e] for e in trials.enroll.tolist()])
    if np.unique(groups).size < 2:
        raise ValueError("the calibration trials need enrollment utterances of at least 2 speakers")
    features = quality_features(raw, *sides, quality) if quality else raw  # a QMF is a fusion of its features
    cv_llr = cross_validated_fusion(features, labels, groups, n_folds=2, p_target=p_target)
    cv = evaluate_system("cross-validated", cv_llr, labels, priors, calibrated=True)
    key = str(float(p_target))
    return {"p_target": float(p_target), "rows": rows,
            "cross_validated": {"n_folds": 2, "folds_over": "enrollment speakers", "p_target": float(p_target),
                                "act_dcf": cv["act_dcf"][key], "min_dcf": cv["min_dcf"][key], "cllr": cv["cllr"],
                                "min_cllr": cv["min_cllr"], "eer": cv["eer"]}}


def _write_system(out: Path, manifest: dict, names, sources, loaded, branches, calibration) -> None:
    """Write every file into a temporary folder next to ``out``, check it loads, then rename it to ``out``
    (replacing an existing one)."""
    from scoring.io import write_embeddings
    from spkver.checkpoint import save_checkpoint

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        extractors = []
        for n, source, (model, features, meta), branch in zip(names, sources, loaded, branches):
            rel = f"extractors/{n}.pt"  # the embedding network and what rebuilds it; no classifier, optimiser, RNG
            save_checkpoint(tmp / rel, model=model, model_name=meta["model_name"], model_kwargs=meta["model_kwargs"],
                            features=features.to_dict(), speakers=[], epoch=meta.get("epoch", 0),
                            step=meta.get("step", 0), rng=False, head=False)
            kind = scorer_kind(branch.scorer)
            branch.scorer.save(tmp / f"backend/{n}.npz")
            spec = {"name": n, "checkpoint": rel, "mc_samples": 0, "features": features.to_dict(),
                    "model": {"name": meta["model_name"], "kwargs": meta["model_kwargs"],
                              "embed_dim": int(model.embed_dim),
                              "parameters": int(sum(p.numel() for k, p in model.named_parameters()
                                                    if not k.startswith(model.head_prefixes))),
                              "bayesian": bool(getattr(model, "is_bayesian", False)),
                              "source": source if isinstance(source, str) else str(source.resolve()),
                              "epoch": meta.get("epoch"), "step": meta.get("step"),
                              "trained_with": meta.get("version")},
                    "backend": {"kind": kind, "file": f"backend/{n}.npz",
                                **({"lda_dim": branch.scorer.lda_dim, "dim": branch.scorer.dim} if kind == "plda"
                                   else {"subtract_mean": branch.scorer.subtract_mean})},
                    "norm": {"kind": branch.norm}}
            if branch.norm != "none":
                write_embeddings(tmp / f"cohort/{n}.npz", branch.cohort.ids, branch.cohort.vectors)
                spec["norm"].update(cohort=f"cohort/{n}.npz", top_k=branch.top_k, n_cohort=len(branch.cohort))
            extractors.append(spec)
        calibration.save(tmp / "calibration.npz")
        kind = next(k for k, cls in CALIBRATIONS.items() if type(calibration) is cls)
        manifest = {**manifest, "extractors": extractors,
                    "calibration": {"kind": kind, "file": "calibration.npz", "p_target": calibration.p_target,
                                    "weights": calibration.weights.tolist(), "offset": calibration.offset}}
        if kind == "quality":
            manifest["calibration"].update(quality=list(calibration.quality),
                                           features=list(calibration.feature_names),
                                           duration="speech seconds after VAD, first extractor's features")
        manifest["files"] = {rel: {"sha256": sha256_file(tmp / rel), "size": (tmp / rel).stat().st_size}
                             for rel in sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        load_system(tmp)  # the folder reads back
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
