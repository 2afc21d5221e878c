"""`spkver prepare ...`: corpora into Kaldi data dirs and trial lists."""

from __future__ import annotations

import re
from pathlib import Path

from spkver.cli.common import CliError, existing, log, non_negative_int, positive_int


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
    chan.add_argument("--channel", default="telephone",
                      help="telephone (default; 8 kHz band, mu-law, back at the input rate), telephone8k (kept at "
                           "8 kHz), or a degradation drawn per utterance: noise (white / pink / brown noise at an SNR "
                           "drawn in --snr), reverb (simulated rooms), short (a --max-seconds excerpt), mixed (one of "
                           "noise / reverb / short per utterance)")
    chan.add_argument("--seed", type=non_negative_int,
                      help="noise, reverb, short, mixed: draws are seeded by (seed, utterance id) (default 0)")
    chan.add_argument("--snr", type=float, nargs=2, metavar=("LOW", "HIGH"),
                      help="noise, mixed: SNR range in dB, drawn uniformly per utterance (default 0 15)")
    chan.add_argument("--max-seconds", type=float,
                      help="short, mixed: length of the excerpt in seconds (default 2)")
    chan.add_argument("--rir-count", type=positive_int,
                      help="reverb, mixed: number of simulated rooms (default 20)")
    chan.add_argument("--rir-cache", type=Path,
                      help="reverb, mixed: folder the simulated RIRs are cached in (default OUT/rirs)")
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
    from spkver.data.corpora.channel import channel_settings, simulate_channel

    options = {"seed": args.seed, "snr": None if args.snr is None else tuple(args.snr),
               "max_seconds": args.max_seconds, "rir_count": args.rir_count, "rir_cache": args.rir_cache}
    try:
        channel_settings(args.channel, **options)
    except ValueError as err:  # name the option, not the library's setting
        message = re.sub(r"\b(seed|snr|max_seconds|rir_count|rir_cache)\b",
                         lambda m: "--" + m.group(1).replace("_", "-"), str(err))
        raise CliError(f"--channel {args.channel}: {message}") from None
    result = simulate_channel(args.data, args.out, channel=args.channel, audio_root=args.audio_root,
                              progress=True, **options)
    log.info("wrote %d utterances through the %s channel to %s", len(result), args.channel, args.out)


def _cmd_prepare_combine(args) -> None:
    from spkver.data.kaldi import combine_data_dirs

    merged = combine_data_dirs(args.out, args.sources, audio_root=args.audio_root)
    log.info("wrote %d utterances from %d data dir(s) to %s", len(merged), len(args.sources), args.out)
