"""VoxCeleb1/2 folders -> Kaldi data dirs and trial files (as Kaldi egs/voxceleb's make_voxceleb1_v2.pl).

Accepted layouts under ``root`` (audio as WAV; VoxCeleb2's AAC must be converted to WAV first, e.g. with
``ffmpeg -i x.m4a -ac 1 -ar 16000 x.wav`` keeping the folder structure)::

    root/vox1_dev_wav/wav/idXXXXX/<video>/NNNNN.wav     subset "dev"   (VoxCeleb1 development speakers)
    root/vox1_test_wav/wav/idXXXXX/<video>/NNNNN.wav    subset "test"  (VoxCeleb1 test speakers)
    root/wav/idXXXXX/<video>/NNNNN.wav                  both, in one tree: the 40 test speakers are
                                                        id10270-id10309, every other speaker is "dev"
    root/vox2_dev_wav/{wav,dev/aac,aac}/idXXXXX/...     subset "vox2_dev" (optional)
    root/vox2_test_wav/{wav,test/aac,aac}/idXXXXX/...   subset "vox2_test" (optional)

Trial lists are looked up in ``root`` and ``root/meta``: ``veri_test.txt`` (Vox1-O), ``veri_test2.txt``
(Vox1-O cleaned), ``list_test_hard2.txt`` / ``list_test_hard.txt`` (Vox1-H), ``list_test_all2.txt`` /
``list_test_all.txt`` (Vox1-E), lines ``1|0 idA/video/NNNNN.wav idB/video/NNNNN.wav``.

Output: ``out/vox1_dev``, ``out/vox1_test``, ``out/vox2_dev``... data dirs (utterance id
``idXXXXX-<video>-NNNNN``, speaker ``idXXXXX``, absolute paths in ``wav.scp``, ``utt2dur`` from the file headers)
and ``out/trials/<list name without .txt>`` in Kaldi format ``enroll test target|nontarget``. A list is written
only when every utterance it names was prepared; Vox1-E/H need both ``dev`` and ``test``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import soundfile as sf

from scoring.io import Trials, read_fields, write_trials
from spkver.data.kaldi import DataDir

SUBSETS = ("dev", "test", "vox2_dev", "vox2_test")
TRIAL_LISTS = ("veri_test.txt", "veri_test2.txt", "list_test_hard2.txt", "list_test_hard.txt",
               "list_test_all2.txt", "list_test_all.txt")
VOX1_TEST_SPEAKERS = frozenset(f"id{n}" for n in range(10270, 10310))
_SPEAKER = re.compile(r"^id\d{5}$")
_OUT_NAME = {"dev": "vox1_dev", "test": "vox1_test", "vox2_dev": "vox2_dev", "vox2_test": "vox2_test"}


def _subset_trees(root: Path, subset: str) -> tuple[Path, frozenset | None, bool]:
    """The folder holding ``idXXXXX/`` speaker dirs for ``subset``, the speakers to keep (None: all) and
    whether the folder is the shared flat ``root/wav`` tree."""
    if subset in ("dev", "test"):
        split = root / f"vox1_{subset}_wav" / "wav"
        if split.is_dir():
            return split, None, False
        if (root / "wav").is_dir():
            return root / "wav", VOX1_TEST_SPEAKERS, True
        raise FileNotFoundError(
            f"{root}: VoxCeleb1 subset {subset!r} not found: expected {split} or a single tree {root / 'wav'}")
    part = subset.split("_")[1]
    base = root / f"vox2_{part}_wav"
    for candidate in (base / "wav", base / part / "aac", base / "aac", root / part / "aac"):
        if candidate.is_dir():
            return candidate, None, False
    raise FileNotFoundError(f"{root}: VoxCeleb2 subset {subset!r} not found: expected {base / 'wav'}, "
                            f"{base / part / 'aac'} or {root / part / 'aac'} holding idXXXXX/ folders of WAV files")


def _scan(tree: Path) -> dict[str, tuple[str, Path]]:
    """``{utt: (spk, path)}`` for every ``tree/idXXXXX/<video>/NNNNN.wav``."""
    found: dict[str, tuple[str, Path]] = {}
    m4a = 0
    for spk_dir in sorted(tree.iterdir()):
        if not spk_dir.is_dir():
            continue
        if not _SPEAKER.match(spk_dir.name):
            raise ValueError(f"{spk_dir}: unexpected folder name, VoxCeleb speaker folders are idNNNNN")
        for video_dir in sorted(spk_dir.iterdir()):
            if not video_dir.is_dir():
                continue
            for f in sorted(video_dir.iterdir()):
                if f.suffix == ".m4a":
                    m4a += 1
                if f.suffix != ".wav":
                    continue
                utt = f"{spk_dir.name}-{video_dir.name}-{f.stem}"
                if any(c.isspace() for c in utt):
                    raise ValueError(f"{f}: whitespace in a file or folder name cannot make a Kaldi id")
                found[utt] = (spk_dir.name, f.resolve())
    if not found:
        hint = f" ({m4a} .m4a files: convert VoxCeleb2 AAC to WAV first)" if m4a else ""
        raise FileNotFoundError(f"{tree}: no idXXXXX/<video>/NNNNN.wav files found{hint}")
    return found


def _utt_from_path(rel: str) -> str:
    parts = rel.strip().split("/")
    if len(parts) != 3 or not parts[2].endswith(".wav"):
        raise ValueError(f"expected idXXXXX/<video>/NNNNN.wav, got {rel!r}")
    return f"{parts[0]}-{parts[1]}-{parts[2][:-4]}"


def read_voxceleb_trials(path: str | os.PathLike) -> Trials:
    """Read a VoxCeleb trial list (``1|0 idA/video/N.wav idB/video/N.wav``) as Trials of our utterance ids."""
    enroll, test, label = [], [], []
    for lineno, line, fields in read_fields(path, error=ValueError):
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: expected '1|0 idA/video/N.wav idB/video/N.wav', "
                             f"got {line.rstrip()!r}")
        try:
            enroll.append(_utt_from_path(fields[1]))
            test.append(_utt_from_path(fields[2]))
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
        label.append(int(fields[0]))
    if not label:
        raise ValueError(f"{path}: no trials")
    return Trials(enroll, test, label, source=str(path))


def prepare_voxceleb(root: str | os.PathLike, out: str | os.PathLike, subsets=("dev", "test"),
                     durations: bool = True) -> dict:
    """Write Kaldi data dirs and trial files for ``subsets`` of a VoxCeleb folder (layouts: module docstring).

    Args:
        subsets: any of ``"dev"``, ``"test"`` (VoxCeleb1), ``"vox2_dev"``, ``"vox2_test"``.
        durations: write ``utt2dur`` (read from every file's header).
    Returns:
        ``{data dir name: number of utterances, ..., "trials": {list name: number of trials}}``.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"VoxCeleb root {root}: no such directory")
    subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or not subsets:
        raise ValueError(f"unknown VoxCeleb subset(s) {bad}; valid: {', '.join(SUBSETS)}")
    summary: dict = {}
    prepared: dict[str, str] = {}  # utt -> spk, over every prepared subset
    for subset in subsets:
        tree, test_speakers, flat = _subset_trees(root, subset)
        found = _scan(tree)
        if flat:
            keep_test = subset == "test"
            found = {u: v for u, v in found.items() if (v[0] in test_speakers) == keep_test}
            if not found:
                raise FileNotFoundError(f"{tree}: no speakers of VoxCeleb1 subset {subset!r}")
        d = DataDir(wav_scp={u: str(p) for u, (_, p) in found.items()},
                    utt2spk={u: s for u, (s, _) in found.items()})
        if durations:
            d.utt2dur = {u: _duration(p) for u, (_, p) in found.items()}
        d.save(out / _OUT_NAME[subset])
        summary[_OUT_NAME[subset]] = len(d)
        prepared.update(d.utt2spk)
    summary["trials"] = _write_trials(root, out, prepared)
    return summary


def _duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: unreadable audio ({err})") from None
    if info.frames == 0:
        raise ValueError(f"{path}: empty audio file")
    return round(info.frames / info.samplerate, 3)


def _write_trials(root: Path, out: Path, prepared: dict[str, str]) -> dict[str, int | str]:
    written: dict[str, int | str] = {}
    for name in TRIAL_LISTS:
        path = next((p for p in (root / name, root / "meta" / name) if p.is_file()), None)
        if path is None:
            continue
        trials = read_voxceleb_trials(path)
        missing = sorted({u for u in (*trials.enroll.tolist(), *trials.test.tolist()) if u not in prepared})
        if missing:
            speakers = {u.split("-", 1)[0] for u in missing}
            prepared_speakers = set(prepared.values())
            known = sorted(u for u in missing if u.split("-", 1)[0] in prepared_speakers)
            if known:
                raise FileNotFoundError(f"{path}: utterance {known[0]} (speaker {known[0][:7]}) is not in the "
                                        f"audio tree ({len(known)} such utterances)")
            written[path.stem] = f"skipped: {len(speakers)} speakers not prepared (add their subset)"
            continue
        write_trials(out / "trials" / path.stem, trials, fmt="kaldi")
        written[path.stem] = len(trials)
    return written
