"""Kaldi data directories: ``wav.scp``, ``utt2spk``, ``spk2utt``, ``segments``, ``utt2dur``, ``spk2gender``.

File formats (one record per line, fields separated by whitespace, ids without whitespace, every file sorted
by its first field in C-locale (byte) order with unique keys, as Kaldi's ``utils/validate_data_dir.sh`` wants):

- ``wav.scp``: ``<recording-id> <path or "command |">`` (see :func:`spkver.audio.load_entry`). Without a
  ``segments`` file the recording ids are the utterance ids.
- ``utt2spk``: ``<utt> <spk>``; ``spk2utt``: ``<spk> <utt1> <utt2> ...`` (derived from ``utt2spk`` when
  absent, checked against it when present).
- ``segments`` (optional): ``<utt> <recording-id> <start-seconds> <end-seconds>`` (``end = -1``: to the end).
- ``utt2dur`` (optional): ``<utt> <seconds>``; ``spk2gender`` (optional): ``<spk> m|f``.
- ``reco2channel`` (optional, spkver's own): ``<recording-id> <channel>`` with a 0-based channel index. It
  picks one side of a multi-channel recording read directly by soundfile (for example a two-channel NIST
  SPHERE file) without an external ``sph2pipe -c`` pipe; recordings not listed are mixed down to mono.

Relative paths in ``wav.scp`` resolve against ``audio_root`` when given; otherwise against the data dir when
the file exists there, else against the data dir's parent (the layout of a corpus folder holding the audio next
to ``train/``, ``dev/``...). Pipe commands run in ``audio_root`` (else the current directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scoring.io import atomic_write_text, table_rows
from spkver.audio import is_pipe, load_entry


class DataDirError(ValueError):
    """A malformed or inconsistent data dir; the message names the file and line (or id) at fault."""


def _rows(path: Path, min_fields: int = 2, max_fields: int | None = 2, rest_as_value: bool = False):
    """``(line, key, value)`` of a data-dir table (:func:`scoring.io.table_rows`): no blank lines, keys unique
    and in C-locale order, errors :class:`DataDirError` naming ``path:line``."""
    return table_rows(path, min_fields, max_fields, rest_as_value, check_sorted=True, skip_blank=False,
                      error=DataDirError)


def c_sorted(ids) -> list[str]:
    """Sort ids in C-locale (byte) order, Kaldi's order."""
    return sorted(ids, key=lambda s: s.encode())


def _float(value: str, where: str, what: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise DataDirError(f"{where}: {what} {value!r} is not a number") from None
    if not np.isfinite(out):
        raise DataDirError(f"{where}: {what} {value!r} is not finite")
    return out


@dataclass
class DataDir:
    """A Kaldi data dir in memory. All tables are plain dicts keyed by id.

    ``segments`` maps ``utt -> (recording_id, start_s, end_s)``; ``reco2channel`` maps ``recording_id ->
    channel`` (0-based). Optional tables are empty dicts when absent.
    """

    wav_scp: dict[str, str] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    segments: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    utt2dur: dict[str, float] = field(default_factory=dict)
    spk2gender: dict[str, str] = field(default_factory=dict)
    reco2channel: dict[str, int] = field(default_factory=dict)
    path: Path | None = None
    audio_root: Path | None = None

    # ------------------------------------------------------------------------------------------ views
    @property
    def utts(self) -> list[str]:
        """Utterance ids in C-locale order."""
        return c_sorted(self.utt2spk)

    @property
    def speakers(self) -> list[str]:
        """Speaker ids in C-locale order."""
        return c_sorted(set(self.utt2spk.values()))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """``{spk: [utt, ...]}`` derived from ``utt2spk`` (speakers and utterances in C-locale order)."""
        out: dict[str, list[str]] = {}
        for utt in self.utts:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: out[spk] for spk in c_sorted(out)}

    def __len__(self) -> int:
        return len(self.utt2spk)

    # ------------------------------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | os.PathLike, audio_root: str | os.PathLike | None = None,
             validate: bool = True) -> "DataDir":
        """Read a data dir (``wav.scp`` and ``utt2spk`` required, the rest optional) and validate it."""
        path = Path(path)
        if not path.is_dir():
            raise DataDirError(f"{path}: no such data directory")
        for required in ("wav.scp", "utt2spk"):
            if not (path / required).is_file():
                raise DataDirError(f"{path}: missing {required}")
        if audio_root is not None and not Path(audio_root).is_dir():
            raise DataDirError(f"audio root {audio_root}: no such directory")
        d = cls(path=path, audio_root=None if audio_root is None else Path(audio_root))
        d.wav_scp = {reco: entry for _, reco, entry in _rows(path / "wav.scp", rest_as_value=True)}
        d.utt2spk = {utt: spk for _, utt, spk in _rows(path / "utt2spk")}
        if (path / "segments").is_file():
            seg_path = path / "segments"
            for lineno, utt, (reco, start, end) in _rows(seg_path, min_fields=4, max_fields=4):
                where = f"{seg_path}:{lineno}"
                d.segments[utt] = (reco, _float(start, where, "start"), _float(end, where, "end"))
        if (path / "utt2dur").is_file():
            dur_path = path / "utt2dur"
            for lineno, utt, dur in _rows(dur_path):
                d.utt2dur[utt] = _float(dur, f"{dur_path}:{lineno}", "duration")
        if (path / "spk2gender").is_file():
            d.spk2gender = {spk: gender for _, spk, gender in _rows(path / "spk2gender")}
        if (path / "reco2channel").is_file():
            ch_path = path / "reco2channel"
            for lineno, reco, ch in _rows(ch_path):
                if not ch.isdigit():
                    raise DataDirError(f"{ch_path}:{lineno}: channel {ch!r} is not a 0-based integer")
                d.reco2channel[reco] = int(ch)
        if validate:
            d.validate()
            if (path / "spk2utt").is_file():
                d._check_spk2utt(path / "spk2utt")
        return d

    def _check_spk2utt(self, spk2utt_path: Path) -> None:
        seen = set()
        for lineno, spk, utts in _rows(spk2utt_path, max_fields=None):
            for utt in utts:
                if self.utt2spk.get(utt) != spk:
                    have = self.utt2spk.get(utt)
                    why = "is not in utt2spk" if have is None else f"belongs to speaker {have!r} in utt2spk"
                    raise DataDirError(f"{spk2utt_path}:{lineno}: utterance {utt!r} of speaker {spk!r} {why}")
                if utt in seen:
                    raise DataDirError(f"{spk2utt_path}:{lineno}: utterance {utt!r} listed twice")
                seen.add(utt)
        missing = [u for u in self.utts if u not in seen]
        if missing:
            raise DataDirError(f"{spk2utt_path}: utterance {missing[0]!r} of utt2spk (speaker "
                               f"{self.utt2spk[missing[0]]!r}) is missing ({len(missing)} missing in all)")

    # -------------------------------------------------------------------------------------- validate
    def validate(self) -> "DataDir":
        """Check ids, order and cross-file consistency; raise :class:`DataDirError` naming file and id."""
        if not self.utt2spk:
            raise DataDirError(f"{self._where('utt2spk')}: no utterances")
        for name, table in (("wav.scp", self.wav_scp), ("utt2spk", self.utt2spk), ("segments", self.segments),
                            ("utt2dur", self.utt2dur), ("spk2gender", self.spk2gender),
                            ("reco2channel", self.reco2channel)):
            self._check_ids(name, table)
        for utt, spk in self.utt2spk.items():
            if not spk or any(c.isspace() for c in spk):
                raise DataDirError(f"{self._where('utt2spk')}: utterance {utt!r} has an invalid speaker id")
        if self.segments:
            for utt in self.utt2spk:
                if utt not in self.segments:
                    raise DataDirError(f"{self._where('segments')}: utterance {utt!r} of utt2spk has no segment")
            for utt, (reco, start, end) in self.segments.items():
                if utt not in self.utt2spk:
                    raise DataDirError(f"{self._where('segments')}: utterance {utt!r} is not in utt2spk")
                if reco not in self.wav_scp:
                    raise DataDirError(f"{self._where('segments')}: recording {reco!r} of utterance {utt!r} "
                                       "is not in wav.scp")
                if start < 0 or (end != -1 and end <= start):
                    raise DataDirError(f"{self._where('segments')}: utterance {utt!r} has an invalid time span "
                                       f"[{start}, {end})")
        else:
            for utt in self.utt2spk:
                if utt not in self.wav_scp:
                    raise DataDirError(f"{self._where('wav.scp')}: utterance {utt!r} of utt2spk has no entry")
            for reco in self.wav_scp:
                if reco not in self.utt2spk:
                    raise DataDirError(f"{self._where('utt2spk')}: wav.scp id {reco!r} has no speaker "
                                       "(without a segments file wav.scp ids are utterance ids)")
        for utt, dur in self.utt2dur.items():
            if utt not in self.utt2spk:
                raise DataDirError(f"{self._where('utt2dur')}: utterance {utt!r} is not in utt2spk")
            if dur <= 0:
                raise DataDirError(f"{self._where('utt2dur')}: utterance {utt!r} has duration {dur} <= 0")
        if self.spk2gender:
            speakers = set(self.utt2spk.values())
            for spk, gender in self.spk2gender.items():
                if spk not in speakers:
                    raise DataDirError(f"{self._where('spk2gender')}: speaker {spk!r} is not in utt2spk")
                if gender not in ("m", "f"):
                    raise DataDirError(f"{self._where('spk2gender')}: speaker {spk!r} has gender {gender!r}, "
                                       "expected m or f")
            missing = [s for s in self.speakers if s not in self.spk2gender]
            if missing:
                raise DataDirError(f"{self._where('spk2gender')}: speaker {missing[0]!r} has no gender")
        for reco, ch in self.reco2channel.items():
            if reco not in self.wav_scp:
                raise DataDirError(f"{self._where('reco2channel')}: recording {reco!r} is not in wav.scp")
            if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)) or ch < 0:
                raise DataDirError(f"{self._where('reco2channel')}: recording {reco!r} has channel {ch!r}")
        return self

    def _where(self, name: str) -> str:
        return str(self.path / name) if self.path is not None else name

    def _check_ids(self, name: str, table: dict) -> None:
        previous = None
        for key in table:
            if not isinstance(key, str) or not key or any(c.isspace() for c in key):
                raise DataDirError(f"{self._where(name)}: invalid id {key!r} (ids are non-empty, no whitespace)")
            if previous is not None and key.encode() <= previous.encode():
                raise DataDirError(f"{self._where(name)}: id {key!r} is out of C-locale order after "
                                   f"{previous!r}")
            previous = key

    # ------------------------------------------------------------------------------------------ audio
    def recording(self, utt: str) -> tuple[str, float | None, float | None]:
        """``(recording_id, start_s, end_s)`` of ``utt``; start/end are ``None`` without segments."""
        if utt not in self.utt2spk:
            raise KeyError(f"{self._where('utt2spk')}: unknown utterance {utt!r}")
        if self.segments:
            return self.segments[utt]
        return utt, None, None

    def resolve(self, reco: str) -> str:
        """The ``wav.scp`` value of ``reco`` with a relative path made absolute (see the module docstring)."""
        entry = self.wav_scp[reco]
        if is_pipe(entry) or Path(entry).is_absolute():
            return entry
        if self.audio_root is not None:
            return str(self.audio_root / entry)
        if self.path is None:
            return entry
        here = self.path / entry
        if here.exists():
            return str(here)
        return str(self.path.parent / entry)

    def load_audio(self, utt: str, sample_rate: int | None = None,
                   min_seconds: float | None = None) -> tuple[np.ndarray, int]:
        """Load utterance ``utt`` (reading only its segment, picking its ``reco2channel`` channel).

        Returns:
            ``(wave (samples,) float32, sample_rate)``; raises :class:`spkver.audio.AudioError` naming ``utt``.
        """
        reco, start, end = self.recording(utt)
        return load_entry(self.resolve(reco), sample_rate=sample_rate, channel=self.reco2channel.get(reco),
                          root=self.audio_root, utt=utt, min_seconds=min_seconds,
                          segment=None if start is None else (start, end))

    # ----------------------------------------------------------------------------------------- subset
    def subset(self, utts) -> "DataDir":
        """A new data dir with only ``utts`` (any order; unknown ids raise naming the first one)."""
        keep = set(utts)
        unknown = [u for u in keep if u not in self.utt2spk]
        if unknown:
            raise KeyError(f"{self._where('utt2spk')}: unknown utterance {c_sorted(unknown)[0]!r} "
                           f"({len(unknown)} unknown in all)")
        order = [u for u in self.utts if u in keep]
        utt2spk = {u: self.utt2spk[u] for u in order}
        speakers = set(utt2spk.values())
        if self.segments:
            segments = {u: self.segments[u] for u in order}
            recos = {seg[0] for seg in segments.values()}
        else:
            segments, recos = {}, keep
        wav_scp = {r: v for r, v in self.wav_scp.items() if r in recos}
        return DataDir(
            wav_scp=wav_scp, utt2spk=utt2spk, segments=segments,
            utt2dur={u: d for u, d in self.utt2dur.items() if u in keep},
            spk2gender={s: g for s, g in self.spk2gender.items() if s in speakers},
            reco2channel={r: c for r, c in self.reco2channel.items() if r in recos},
            path=self.path, audio_root=self.audio_root)

    # ------------------------------------------------------------------------------------------- save
    def save(self, path: str | os.PathLike, absolute_paths: bool = False) -> Path:
        """Validate, then write every table (sorted, atomically) into ``path``; returns ``path``.

        ``absolute_paths=True`` writes relative ``wav.scp`` paths resolved as :meth:`resolve` does, so the
        saved dir works wherever it lives. Tables that are empty are not written (stale ones are removed).
        """
        self.validate()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        wav = {r: (self.resolve(r) if absolute_paths else v) for r, v in self.wav_scp.items()}
        tables = {
            "wav.scp": [f"{r} {wav[r]}" for r in c_sorted(wav)],
            "utt2spk": [f"{u} {self.utt2spk[u]}" for u in self.utts],
            "spk2utt": [f"{s} {' '.join(us)}" for s, us in self.spk2utt.items()],
            "segments": [f"{u} {r} {_fmt(s)} {_fmt(e)}" for u, (r, s, e) in
                         ((u, self.segments[u]) for u in c_sorted(self.segments))],
            "utt2dur": [f"{u} {_fmt(self.utt2dur[u])}" for u in c_sorted(self.utt2dur)],
            "spk2gender": [f"{s} {self.spk2gender[s]}" for s in c_sorted(self.spk2gender)],
            "reco2channel": [f"{r} {int(self.reco2channel[r])}" for r in c_sorted(self.reco2channel)],
        }
        for name, lines in tables.items():
            if lines:
                atomic_write_text(path / name, "".join(line + "\n" for line in lines))
            elif (path / name).exists():
                (path / name).unlink()
        return path


def combine_data_dirs(out: str | os.PathLike, sources, audio_root: str | os.PathLike | None = None) -> DataDir:
    """Write the union of the Kaldi data dirs ``sources`` to ``out`` (Kaldi's ``utils/combine_data.sh``) with
    absolute ``wav.scp`` paths, so that ``out`` works wherever it lives; one source makes a copy.

    Relative paths resolve as in :meth:`DataDir.load` (``audio_root``, else the data dir, else its parent).
    Recording and utterance ids must be unique across the sources (a speaker may appear in several, with one
    gender); ``utt2dur`` and ``spk2gender`` are kept only when they cover everything. Raises
    :class:`DataDirError` naming the sources at fault. Returns the combined ``DataDir``.
    """
    sources = [Path(p).resolve() for p in sources]
    if not sources:
        raise ValueError("combine_data_dirs: no source data dirs")
    merged = DataDir()
    reco_from: dict[str, Path] = {}
    utt_from: dict[str, Path] = {}
    root = None if audio_root is None else Path(audio_root).resolve()
    for src in sources:
        d = DataDir.load(src, audio_root=root)
        for reco in d.wav_scp:
            if reco in reco_from:
                raise DataDirError(f"{src / 'wav.scp'}: id {reco!r} is also in {reco_from[reco] / 'wav.scp'}")
            reco_from[reco] = src
            merged.wav_scp[reco] = d.resolve(reco)
        for utt in d.utt2spk:
            if utt in utt_from:
                raise DataDirError(f"{src / 'utt2spk'}: utterance {utt!r} is also in {utt_from[utt] / 'utt2spk'}")
            utt_from[utt] = src
        for spk, gender in d.spk2gender.items():
            if merged.spk2gender.get(spk, gender) != gender:
                raise DataDirError(f"{src / 'spk2gender'}: speaker {spk!r} has another gender in an earlier source")
        for name in ("utt2spk", "segments", "utt2dur", "spk2gender", "reco2channel"):
            getattr(merged, name).update(getattr(d, name))
    if len(merged.utt2dur) != len(merged.utt2spk):
        merged.utt2dur = {}
    if merged.spk2gender and not set(merged.utt2spk.values()) <= set(merged.spk2gender):
        merged.spk2gender = {}
    for name in ("wav_scp", "utt2spk", "segments", "utt2dur", "spk2gender", "reco2channel"):
        table = getattr(merged, name)
        setattr(merged, name, {k: table[k] for k in c_sorted(table)})
    merged.save(out)
    return merged


def _fmt(x: float) -> str:
    """Shortest round-trip text for a time in seconds (``2.5``, ``-1``)."""
    return repr(float(x)).removesuffix(".0") if float(x).is_integer() else repr(float(x))
