"""Data-dir glue the ``spkver`` command line does not (yet) offer, for the recipes' data stages.

usage:
  python data_dir.py combine OUT SRC [SRC ...] [--audio-root DIR]
      Merge Kaldi data dirs into OUT (one SRC: a copy) with absolute wav.scp paths, so OUT works wherever it
      lives and later stages need no corpus root. Utterance and recording ids must be unique across the
      sources; a speaker may appear in several. Relative paths resolve as spkver.data.kaldi.DataDir does
      (--audio-root, else the data dir, else its parent).
  python data_dir.py voxceleb ROOT OUT SUBSET [SUBSET ...]
      `spkver prepare voxceleb` for chosen subsets (dev, test, vox2_dev, vox2_test): e.g. only the VoxCeleb1
      test speakers for a cross-corpus evaluation, or VoxCeleb2 dev as extra training data.
  python data_dir.py sre ROOT KEY OUT --train LIST
      `spkver prepare sre` with an enrollment list other than ROOT/train.trn (e.g. SRE10's train/core.trn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def combine(out: Path, sources: list[Path], audio_root: Path | None = None) -> int:
    """Write the union of ``sources`` (Kaldi data dirs) to ``out``; returns the number of utterances."""
    from spkver.data.kaldi import DataDir, DataDirError

    merged = DataDir()
    reco_from: dict[str, Path] = {}
    utt_from: dict[str, Path] = {}
    audio_root = None if audio_root is None else Path(audio_root).resolve()
    for src in [Path(p).resolve() for p in sources]:
        d = DataDir.load(src, audio_root=audio_root)
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
        merged.utt2spk.update(d.utt2spk)
        merged.segments.update(d.segments)
        merged.utt2dur.update(d.utt2dur)
        merged.spk2gender.update(d.spk2gender)
        merged.reco2channel.update(d.reco2channel)
    if len(merged.utt2dur) != len(merged.utt2spk):
        merged.utt2dur = {}
    speakers = set(merged.utt2spk.values())
    if merged.spk2gender and not speakers <= set(merged.spk2gender):
        merged.spk2gender = {}
    for name in ("wav_scp", "utt2spk", "segments", "utt2dur", "spk2gender", "reco2channel"):
        table = getattr(merged, name)
        setattr(merged, name, {k: table[k] for k in sorted(table, key=str.encode)})
    merged.save(out)
    return len(merged)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="data_dir.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("combine")
    p.add_argument("out", type=Path)
    p.add_argument("sources", type=Path, nargs="+")
    p.add_argument("--audio-root", type=Path)
    p = sub.add_parser("voxceleb")
    p.add_argument("root", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("subsets", nargs="+")
    p = sub.add_parser("sre")
    p.add_argument("root", type=Path)
    p.add_argument("key", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "combine":
            n = combine(args.out, args.sources, args.audio_root)
            print(f"wrote {n} utterances from {len(args.sources)} data dir(s) to {args.out}")
        elif args.command == "sre":
            from spkver.data.sre import prepare_sre

            print(f"prepared SRE data in {args.out}: {prepare_sre(args.root, args.key, args.out, train=args.train)}")
        else:
            from spkver.data.voxceleb import prepare_voxceleb

            print(f"prepared VoxCeleb in {args.out}: {prepare_voxceleb(args.root, args.out, subsets=args.subsets)}")
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"data_dir.py {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
