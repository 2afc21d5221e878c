"""NIST SRE10-style telephone data -> enrollment and test data dirs, trials and an enrollment map.

Input layout ("SRE10-style", as the LDC distributes NIST SRE 2010 and Kaldi's make_sre_2010_*.pl read it)::

    root/**/<segment>.sph      NIST SPHERE audio, 8 kHz, 1 or 2 channels (two-sided telephone calls:
                               side "a" is channel 0, side "b" channel 1), PCM or u-law; segment ids are the
                               file names without ".sph" and must be unique under root
    root/train.trn             (or ``train=``) enrollment list, one model per line:
                               "<model-id> [m|f] <segment>[.sph]:<side>[,<segment>:<side>...]"
    key                        trial key, one trial per line, comma- or space-separated (SRE10 key files):
                               "<model-id> <segment> <side> target|nontarget"

Sides are written ``a``/``b`` (``A``/``B`` accepted). Output in ``out``:

- ``enroll/``: one utterance per (model, side), id ``<model>-<segment>-<side>``, speaker = model id
  (``spk2gender`` when the train list gives genders);
- ``test/``: one utterance per test side, id ``<segment>-<side>``, its own speaker (test speakers are unknown);
- ``trials``: ``<model> <segment>-<side> target|nontarget``; ``enroll_map``: ``<model> <utt> ...``;
- ``wav.scp`` values: ``sph2pipe -f wav -p -c <1|2> /abs/seg.sph |`` when ``sph2pipe`` is on ``PATH`` (needed
  for shorten-compressed SPHERE, which libsndfile cannot read), else the absolute ``.sph`` path plus a
  ``reco2channel`` file (``<utt> <0|1>``) that :class:`spkver.data.kaldi.DataDir` uses to pick the side.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import soundfile as sf

from scoring.io import Trials, atomic_write_text, read_fields, write_trials
from spkver.data.kaldi import DataDir, c_sorted

SIDES = {"a": 0, "b": 1}
LABELS = ("target", "nontarget")


def _find_segments(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".sph" or not path.is_file():
            continue
        if path.stem in found:
            raise ValueError(f"{root}: segment {path.stem!r} found twice: {found[path.stem]} and {path}")
        found[path.stem] = path.resolve()
    if not found:
        raise FileNotFoundError(f"{root}: no .sph files found (expected the SRE10-style layout, see "
                                "spkver.data.corpora.sre)")
    return found


def _side(text: str, where: str) -> str:
    side = text.lower()
    if side not in SIDES:
        raise ValueError(f"{where}: side {text!r} is not a or b")
    return side


def read_train_list(path: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """``({model: [(segment, side), ...]}, {model: gender})`` from an SRE10 ``.trn``-style list."""
    models: dict[str, list[tuple[str, str]]] = {}
    genders: dict[str, str] = {}
    for lineno, line, fields in read_fields(path, error=ValueError):
        where = f"{path}:{lineno}"
        if len(fields) == 3 and fields[1].lower() in ("m", "f"):
            genders[fields[0]] = fields[1].lower()
            fields = [fields[0], fields[2]]
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<model> [m|f] <segment>:<side>[,...]', got {line.rstrip()!r}")
        model = fields[0]
        if model in models:
            raise ValueError(f"{where}: model {model!r} listed twice")
        sides = []
        for item in fields[1].split(","):
            seg, sep, side = item.rpartition(":")
            if not sep or not seg:
                raise ValueError(f"{where}: {item!r} is not '<segment>:<side>'")
            sides.append((re.sub(r"\.sph$", "", seg, flags=re.IGNORECASE), _side(side, where)))
        models[model] = sides
    if not models:
        raise ValueError(f"{path}: no models")
    return models, genders


def read_key(path: Path) -> list[tuple[str, str, str, str]]:
    """``[(model, segment, side, "target"|"nontarget")]`` from an SRE10-style key (csv or whitespace)."""
    rows, seen = [], set()
    for lineno, line, _ in read_fields(path, error=ValueError):
        fields = [x for x in re.split(r"[,\s]+", line.strip()) if x]
        where = f"{path}:{lineno}"
        if len(fields) != 4 or fields[3].lower() not in LABELS:
            raise ValueError(f"{where}: expected '<model> <segment> <side> target|nontarget', got "
                             f"{line.rstrip()!r}")
        model, seg, side, label = fields[0], re.sub(r"\.sph$", "", fields[1]), _side(fields[2], where), \
            fields[3].lower()
        if (model, seg, side) in seen:
            raise ValueError(f"{where}: trial {model} {seg}:{side} listed twice")
        seen.add((model, seg, side))
        rows.append((model, seg, side, label))
    if not rows:
        raise ValueError(f"{path}: no trials")
    return rows


class _Sides:
    """Checks segments and sides against the audio, and makes wav.scp entries."""

    def __init__(self, segments: dict[str, Path], use_sph2pipe: bool):
        self.segments, self.use_sph2pipe, self.info = segments, use_sph2pipe, {}

    def entry(self, seg: str, side: str, where: str) -> tuple[str, int, float | None]:
        """``(wav.scp value, channel, duration or None)``."""
        if seg not in self.segments:
            raise FileNotFoundError(f"{where}: segment {seg!r} has no .sph file under the root")
        path = self.segments[seg]
        channel = SIDES[side]
        if seg not in self.info:
            try:
                self.info[seg] = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as err:
                if not self.use_sph2pipe:
                    raise ValueError(f"{path}: unreadable SPHERE file ({err}); shorten-compressed files need "
                                     "sph2pipe on PATH") from None
                self.info[seg] = None
        info = self.info[seg]
        if info is not None and channel >= info.channels:
            raise ValueError(f"{where}: side {side!r} asked of {path}, which has {info.channels} channel(s)")
        duration = None if info is None else round(info.frames / info.samplerate, 3)
        if self.use_sph2pipe:
            return f"sph2pipe -f wav -p -c {channel + 1} {path} |", channel, duration
        return str(path), channel, duration


def _data_dir(entries: dict[str, tuple[str, int, float | None]], utt2spk: dict[str, str],
              use_sph2pipe: bool) -> DataDir:
    utts = c_sorted(entries)
    d = DataDir(wav_scp={u: entries[u][0] for u in utts}, utt2spk={u: utt2spk[u] for u in utts})
    if not use_sph2pipe:
        d.reco2channel = {u: entries[u][1] for u in utts}
    if all(entries[u][2] for u in utts):
        d.utt2dur = {u: entries[u][2] for u in utts}
    return d


def prepare_sre(root: str | os.PathLike, key: str | os.PathLike, out: str | os.PathLike,
                train: str | os.PathLike | None = None, use_sph2pipe: bool | None = None) -> dict:
    """Prepare SRE10-style data (layout in the module docstring).

    Args:
        root: folder with the ``.sph`` files (searched recursively) and, by default, ``train.trn``.
        key: the trial key. train: the enrollment list (default ``root/train.trn``).
        use_sph2pipe: ``None`` uses ``sph2pipe`` pipes when it is on ``PATH``.
    Returns:
        ``{"models", "enroll", "test", "trials", "targets"}`` counts.
    """
    root, key, out = Path(root), Path(key), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"SRE root {root}: no such directory")
    train = root / "train.trn" if train is None else Path(train)
    for what, path in (("train list", train), ("key", key)):
        if not path.is_file():
            raise FileNotFoundError(f"SRE {what} {path}: no such file")
    if use_sph2pipe is None:
        use_sph2pipe = shutil.which("sph2pipe") is not None
    sides = _Sides(_find_segments(root), use_sph2pipe)
    models, genders = read_train_list(train)
    trials = read_key(key)

    enroll, enroll_spk = {}, {}
    for model, items in models.items():
        for seg, side in items:
            utt = f"{model}-{seg}-{side}"
            enroll[utt] = sides.entry(seg, side, f"{train}: model {model}")
            enroll_spk[utt] = model
    test = {}
    for lineno, (model, seg, side, _) in enumerate(trials, 1):
        where = f"{key}: trial {lineno}"
        if model not in models:
            raise ValueError(f"{where}: model {model!r} is not in the train list {train}")
        utt = f"{seg}-{side}"
        if utt not in test:
            test[utt] = sides.entry(seg, side, where)
    enroll_dir = _data_dir(enroll, enroll_spk, use_sph2pipe)
    enroll_dir.spk2gender = {m: genders[m] for m in c_sorted(models) if m in genders}
    if len(enroll_dir.spk2gender) != len(models):
        enroll_dir.spk2gender = {}
    enroll_dir.save(out / "enroll")
    _data_dir(test, {u: u for u in test}, use_sph2pipe).save(out / "test")
    write_trials(out / "trials", Trials([m for m, *_ in trials], [f"{s}-{d}" for _, s, d, _ in trials],
                                        [int(lab == "target") for *_, lab in trials]), fmt="kaldi")
    atomic_write_text(out / "enroll_map", "".join(f"{spk} {' '.join(utts)}\n"
                                                  for spk, utts in enroll_dir.spk2utt.items()))
    return {"models": len(models), "enroll": len(enroll), "test": len(test), "trials": len(trials),
            "targets": sum(lab == "target" for *_, lab in trials)}
