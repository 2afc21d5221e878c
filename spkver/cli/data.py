"""`spkver prepare ...`: corpora into Kaldi data dirs and trial lists."""

from __future__ import annotations

from pathlib import Path

from spkver.cli.common import existing, log


# --------------------------------------------------------------------------------------------- prepare
def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="turn a corpus layout into Kaldi data dirs and trial files")
    corpus = p.add_subparsers(dest="corpus", required=True)
    vox = corpus.add_parser("voxceleb", help="VoxCeleb1 (and VoxCeleb2 converted to WAV)")
    vox.add_argument("--root", type=existing, required=True)
    vox.add_argument("--out", type=Path, required=True)
    vox.add_argument("--subsets", nargs="+", choices=("dev", "test", "vox2_dev", "vox2_test"),
                     default=["dev", "test"], help="which parts to prepare (default: VoxCeleb1 dev and test)")
    vox.set_defaults(func=_cmd_prepare_voxceleb)
    sre = corpus.add_parser("sre", help="NIST SRE10-style SPHERE data with a trial key")
    sre.add_argument("--root", type=existing, required=True)
    sre.add_argument("--key", type=existing, required=True)
    sre.add_argument("--out", type=Path, required=True)
    sre.add_argument("--train", type=existing, help="enrollment list (default: ROOT/train.trn)")
    sre.set_defaults(func=_cmd_prepare_sre)
    chan = corpus.add_parser("channel", help="pass a data dir through a simulated channel (out-of-domain sets)")
    chan.add_argument("--data", type=existing, required=True)
    chan.add_argument("--out", type=Path, required=True)
    chan.add_argument("--channel", default="telephone", help="telephone (default) or telephone8k")
    chan.add_argument("--audio-root", type=existing, help="resolve relative wav.scp paths against this folder")
    chan.set_defaults(func=_cmd_prepare_channel)
    comb = corpus.add_parser("combine", help="merge Kaldi data dirs into one, with absolute wav.scp paths")
    comb.add_argument("--out", type=Path, required=True)
    comb.add_argument("sources", type=existing, nargs="+", help="data dirs (one: a copy)")
    comb.add_argument("--audio-root", type=existing, help="resolve relative wav.scp paths against this folder")
    comb.set_defaults(func=_cmd_prepare_combine)


def _cmd_prepare_voxceleb(args) -> None:
    from spkver.data.corpora.voxceleb import prepare_voxceleb

    result = prepare_voxceleb(args.root, args.out, subsets=tuple(args.subsets))
    log.info("prepared VoxCeleb in %s: %s", args.out, result)


def _cmd_prepare_sre(args) -> None:
    from spkver.data.corpora.sre import prepare_sre

    result = prepare_sre(args.root, args.key, args.out, train=args.train)
    log.info("prepared SRE data in %s: %s", args.out, result)


def _cmd_prepare_channel(args) -> None:
    from spkver.data.corpora.channel import simulate_channel

    result = simulate_channel(args.data, args.out, channel=args.channel, audio_root=args.audio_root,
                              progress=True)
    log.info("wrote %d utterances through the %s channel to %s", len(result), args.channel, args.out)


def _cmd_prepare_combine(args) -> None:
    from spkver.data.kaldi import combine_data_dirs

    merged = combine_data_dirs(args.out, args.sources, audio_root=args.audio_root)
    log.info("wrote %d utterances from %d data dir(s) to %s", len(merged), len(args.sources), args.out)
