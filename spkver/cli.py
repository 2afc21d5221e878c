"""The ``spkver`` command line: prepare | train | extract | score | eval | table | demo | system | verify | embed.

Each sub-command is a thin wrapper over a library function. ``score`` and ``eval`` only touch the numpy
back-end (``scoring``) and never import torch, so they start fast and run where torch is absent.

Results (tables) go to stdout, logs and progress bars to stderr, so ``spkver ... > results`` holds only
results. Logging: INFO by default, ``-v`` for DEBUG, ``-q`` for warnings only; bars appear only on a terminal.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from spkver import __version__
from spkver.progress import configure_logging

log = logging.getLogger("spkver")

FORMATS = """file formats:
  trials      Kaldi/NIST "enroll test target|nontarget", VoxCeleb "1|0 enroll test", or unlabelled "enroll test"
  embeddings  .npz with arrays "ids" (n,) and "embeddings" (n, dim), or Kaldi .scp/.ark (kaldiio)
  scores      one trial per line: "enroll test score"
  utt2spk     Kaldi "utt spk" lines; enroll map: Kaldi spk2utt-style "model utt1 utt2 ..." lines
"""


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {path}")
    return p


def _model_source(text: str):
    """A checkpoint file or experiment dir that exists, or ``speechbrain:DIR`` with an existing DIR."""
    if text.startswith("speechbrain:"):
        if not Path(text[len("speechbrain:"):]).expanduser().is_dir():
            raise argparse.ArgumentTypeError(f"no such SpeechBrain model folder: {text[len('speechbrain:'):]}")
        return text
    return _existing(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _check_device(device: str | None, amp: str | None = None) -> None:
    """A ``CliError`` naming ``--device`` / ``--amp`` when CUDA is asked for but absent, or fp16 without it."""
    from spkver.distributed import resolve_device

    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise CliError(f"--device {device}: {err}") from None
    if amp == "fp16" and resolved.type != "cuda":
        raise CliError(f"--amp fp16 needs a CUDA device (the device is {resolved}); use --amp bf16 or none")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


# ----------------------------------------------------------------------------------------------- score
def _add_score(sub) -> None:
    p = sub.add_parser(
        "score", help="score trials from embeddings (cosine or LDA+PLDA, optional S-norm)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("--trials", type=_existing, required=True)
    p.add_argument("--enroll", type=_existing, required=True, help="enrollment embeddings")
    p.add_argument("--test", type=_existing, required=True, help="test embeddings")
    p.add_argument("--backend", choices=("cosine", "plda"), default="cosine")
    p.add_argument("--plda", type=_existing, help="a trained PLDA model (.npz)")
    p.add_argument("--train", type=_existing, help="training embeddings (PLDA training; cosine mean)")
    p.add_argument("--utt2spk", type=_existing, help="speaker of each training embedding (PLDA training)")
    p.add_argument("--lda-dim", type=_positive_int, help="LDA dimension before PLDA")
    p.add_argument("--save-plda", type=Path, help="write the trained PLDA model here (.npz)")
    p.add_argument("--subtract-mean", action="store_true",
                   help="cosine: subtract the mean of --train embeddings first")
    p.add_argument("--enroll-map", type=_existing,
                   help="model -> enrollment utterances (spk2utt-style); default: enroll ids are models")
    p.add_argument("--multi", choices=("mean", "plda"), default="mean",
                   help="multi-utterance enrollment: average embeddings, or the PLDA multi-enrollment LLR")
    p.add_argument("--norm", choices=("none", "snorm", "asnorm"), default="none")
    p.add_argument("--cohort", type=_existing, help="cohort embeddings for score normalisation")
    p.add_argument("--top-k", type=_positive_int, default=200, help="cohort size for adaptive S-norm")
    p.add_argument("--uncertainty", choices=("none", "spread", "duration"), default="none",
                   help="plda: add each utterance's own variance to its within-speaker covariance: 'spread' "
                        "(per-dimension std. dev., array 'spread' of the .npz or NAME.spread.ark beside a Kaldi "
                        "table, from `spkver extract --mc-samples K`) or 'duration' (variance --duration-scale / "
                        "seconds, from --utt2dur or an .npz array 'duration')")
    p.add_argument("--utt2dur", type=_existing, help="Kaldi utt2dur of the enroll and test utterances "
                                                       "(--uncertainty duration)")
    p.add_argument("--duration-scale", type=float, default=2.0, metavar="SECONDS",
                   help="--uncertainty duration: the duration whose extra variance equals the within-speaker "
                        "variance (default 2)")
    p.add_argument("--out", type=Path, required=True, help="output score file")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> None:
    from scoring import io
    from scoring.backend import score_trials
    from scoring.pipeline import build_scorer, normalise_scores

    if args.uncertainty != "none" and args.backend != "plda":
        raise CliError("--uncertainty needs --backend plda")
    if args.uncertainty != "none" and args.norm != "none":
        raise CliError("--uncertainty cannot be combined with --norm (cohort scores carry no uncertainty)")
    if args.utt2dur is not None and args.uncertainty != "duration":
        raise CliError("--utt2dur needs --uncertainty duration")
    if not args.duration_scale > 0:
        raise CliError(f"--duration-scale must be a positive number of seconds, got {args.duration_scale}")
    trials = io.read_trials(args.trials)
    enroll = io.read_embeddings(args.enroll, spread=args.uncertainty == "spread")
    test = io.read_embeddings(args.test, spread=args.uncertainty == "spread")
    if args.utt2dur is not None:
        durations = io.read_utt2dur(args.utt2dur)
        enroll, test = enroll.with_duration(durations, args.utt2dur), test.with_duration(durations, args.utt2dur)
    enroll_map = io.read_spk2utt(args.enroll_map) if args.enroll_map else None
    if args.backend == "plda" and args.plda is None and (args.train is None or args.utt2spk is None):
        raise CliError("--backend plda needs --plda MODEL, or --train EMB with --utt2spk F to train one")
    if args.subtract_mean and args.train is None:
        raise CliError("--subtract-mean needs --train EMB")
    if args.norm != "none" and args.cohort is None:
        raise CliError(f"--norm {args.norm} needs --cohort EMB")
    if args.multi == "plda" and args.backend != "plda":
        raise CliError("--multi plda needs --backend plda")

    scorer = build_scorer(
        args.backend, plda_path=args.plda,
        train=io.read_embeddings(args.train, spread=False) if args.train else None,
        utt2spk=io.read_utt2spk(args.utt2spk) if args.utt2spk else None,
        lda_dim=args.lda_dim, subtract_mean=args.subtract_mean)
    if args.save_plda is not None:
        if args.backend != "plda":
            raise CliError("--save-plda needs --backend plda")
        scorer.save(args.save_plda)
    scores = score_trials(scorer, trials, enroll, test, enroll_map=enroll_map, multi=args.multi,
                          uncertainty=args.uncertainty, duration_scale=args.duration_scale)
    if args.norm != "none":
        cohort = io.read_embeddings(args.cohort)
        scores = normalise_scores(scorer, scores, trials, enroll, test, cohort, enroll_map=enroll_map,
                                  top_k=args.top_k if args.norm == "asnorm" else None)
    io.write_scores(args.out, trials, scores)
    log.info("wrote %d scores to %s", len(scores), args.out)


# ------------------------------------------------------------------------------------------------ eval
def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="EER / minDCF / actDCF / Cllr table for score files, with optional fusion and DET plot",
        description="Evaluate systems on a labelled trial list. One run: --scores S1 S2 ... [--names ...]. "
                    "Several runs of the same systems (e.g. training seeds): --system NAME S_RUN1 S_RUN2 ... "
                    "once per system; each run is fused on its own and the table shows mean ± sd over runs. "
                    "EER is the crossing EER (as Kaldi's compute-eer, SpeechBrain and WeSpeaker report it); "
                    "the ROC-convex-hull EER is reported beside it as eer_rocch.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("--trials", type=_existing, required=True, help="labelled trial list")
    runs = p.add_mutually_exclusive_group(required=True)
    runs.add_argument("--scores", type=_existing, nargs="+", help="one score file per system (one run)")
    runs.add_argument("--system", nargs="+", action="append", metavar=("NAME", "SCORES"), dest="systems",
                      help="a system and its score files, one per run (repeatable; every system the same "
                           "number of runs, in the same order)")
    p.add_argument("--names", nargs="+", help="with --scores: system names (default: score file names)")
    p.add_argument("--p-target", type=_probability, action="append", dest="p_targets",
                   help="operating point(s) for minDCF (repeatable; default 0.01 and 0.001)")
    p.add_argument("--calibrated", action="store_true",
                   help="the scores are log-likelihood ratios: also report actDCF and Cllr")
    p.add_argument("--fuse", action="store_true", help="add a logistic-regression fusion of all systems")
    p.add_argument("--fuse-trials", type=_existing, help="labelled trials to train the fusion on")
    p.add_argument("--fuse-scores", type=_existing, nargs="+",
                   help="score files of the same systems on --fuse-trials (same order as --scores)")
    p.add_argument("--fuse-cv", type=_positive_int, metavar="K",
                   help="instead of --fuse-trials: K-fold cross-validation over enrollment models")
    p.add_argument("--fuse-utt2spk", type=_existing,
                   help="with --fuse-cv: make the folds speaker-disjoint (speaker of each enrollment id)")
    p.add_argument("--fuse-prior", type=_probability, default=0.5, help="prior of the fusion objective")
    p.add_argument("--qmf", metavar="duration|spread|duration,spread",
                   help="add a quality-measure calibration of all systems (row 'qmf'): logistic regression on the "
                        "scores, min and max of the two sides' log quality measures and their products with the "
                        "scores; cross-validated with --fuse-cv K or trained on --fuse-trials/--fuse-scores")
    p.add_argument("--utt2dur", type=_existing,
                   help="--qmf duration: seconds (Kaldi utt2dur; best of speech after VAD) of the evaluated "
                        "trials' utterances")
    p.add_argument("--quality-emb", type=_existing, nargs="+", metavar="EMB",
                   help="--qmf: embedding files of the evaluated trials' utterances, with an .npz array "
                        "'duration' and/or 'spread' (spkver extract --mc-samples K)")
    p.add_argument("--fuse-utt2dur", type=_existing, help="--qmf with --fuse-trials: utt2dur of that set")
    p.add_argument("--fuse-quality-emb", type=_existing, nargs="+", metavar="EMB",
                   help="--qmf with --fuse-trials: embedding files of that set (duration / spread)")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="bootstrap replicates for 95%% confidence intervals (resampling enrollment models)")
    p.add_argument("--json", type=Path, help="write the results as JSON (rows over runs also keep each run's)")
    p.add_argument("--csv", type=Path, help="write the results table as CSV")
    p.add_argument("--det", type=Path, help="write a DET plot (PNG; one run only)")
    p.add_argument("--fusion-out", type=Path, help="write the fused scores (one run only)")
    p.add_argument("--qmf-out", type=Path, help="write the quality-calibrated scores (one run only)")
    p.set_defaults(func=_cmd_eval)


def _eval_runs(args) -> tuple[list[str], list[list[Path]]]:
    """System names and, per run, the score file of each system, from --scores/--names or --system."""
    if args.scores is not None:
        names = args.names or [Path(s).name for s in args.scores]
        if len(names) != len(args.scores):
            raise CliError(f"--names gives {len(names)} names for {len(args.scores)} score files")
        runs = [[Path(s) for s in args.scores]]
    else:
        if args.names:
            raise CliError("--names goes with --scores; --system names its system itself")
        names = [entry[0] for entry in args.systems]
        counts = {entry[0]: len(entry) - 1 for entry in args.systems}
        if min(counts.values()) == 0:
            raise CliError(f"--system {min(counts, key=counts.get)} lists no score file")
        if len(set(counts.values())) != 1:
            raise CliError(f"--system: every system needs the same number of runs, got {counts}")
        for entry in args.systems:
            for path in entry[1:]:
                _existing_file(path, "--system")
        runs = [[Path(entry[k]) for entry in args.systems] for k in range(1, len(args.systems[0]))]
    if len(set(names)) != len(names) or "fusion" in names:
        raise CliError(f"system names must be unique and not 'fusion', got {names}")
    return names, runs


def _existing_file(path: str, flag: str) -> Path:
    if not Path(path).is_file():
        raise CliError(f"{flag}: no such file: {path}")
    return Path(path)


def _cmd_eval(args) -> None:
    import numpy as np

    from scoring import io
    from scoring.pipeline import evaluate_runs
    from scoring.quality import parse_quality
    from scoring.report import det_plot, results_table, write_json

    p_targets = args.p_targets or [0.01, 0.001]
    names, runs = _eval_runs(args)
    if args.bootstrap < 0:
        raise CliError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if len(runs) > 1 and (args.det or args.fusion_out):
        raise CliError("--det and --fusion-out need a single run (--scores, or --system with one file each)")
    trials = io.read_trials(args.trials)
    io.check_labels(trials)
    systems = [{n: io.align_scores(trials, path) for n, path in zip(names, run)} for run in runs]

    options = {"p_targets": p_targets, "fuse": args.fuse, "fusion_prior": args.fuse_prior,
               "calibrated": names if args.calibrated else (), "n_boot": args.bootstrap}
    try:
        qmf = parse_quality(args.qmf) if args.qmf is not None else ()
    except ValueError as err:
        raise CliError(f"--qmf: {err}") from None
    if (args.fuse_cv or args.fuse_trials or args.fuse_scores or args.fuse_utt2spk) and not (args.fuse or qmf):
        raise CliError("--fuse-cv, --fuse-trials, --fuse-scores and --fuse-utt2spk go with --fuse or --qmf")
    if args.fusion_out and not args.fuse:
        raise CliError("--fusion-out goes with --fuse")
    if (args.utt2dur or args.quality_emb or args.fuse_utt2dur or args.fuse_quality_emb or args.qmf_out) and not qmf:
        raise CliError("--utt2dur, --quality-emb, --fuse-utt2dur, --fuse-quality-emb and --qmf-out go with --qmf")
    if len(runs) > 1 and args.qmf_out:
        raise CliError("--qmf-out needs a single run (--scores, or --system with one file each)")
    if args.fuse and len(names) < 2:
        raise CliError("--fuse needs at least two systems")
    if args.fuse or qmf:
        if args.fuse_cv is not None:
            if args.fuse_trials is not None or args.fuse_scores is not None:
                raise CliError("--fuse-cv and --fuse-trials/--fuse-scores exclude each other")
            if args.fuse_cv < 2:
                raise CliError(f"--fuse-cv needs at least 2 folds, got {args.fuse_cv}")
            if args.fuse_utt2dur or args.fuse_quality_emb:
                raise CliError("--fuse-utt2dur and --fuse-quality-emb go with --fuse-trials")
            options["n_folds"] = args.fuse_cv
            if args.fuse_utt2spk is not None:
                utt2spk = io.read_utt2spk(args.fuse_utt2spk)
                missing = [e for e in np.unique(trials.enroll) if e not in utt2spk]
                if missing:
                    raise CliError(f"--fuse-utt2spk {args.fuse_utt2spk}: no speaker for enrollment id "
                                   f"{missing[0]!r}")
                options["fusion_groups"] = np.asarray([utt2spk[e] for e in trials.enroll])
        else:
            flag = "--fuse" if args.fuse else "--qmf"
            if args.fuse_trials is None or args.fuse_scores is None:
                raise CliError(f"{flag} needs --fuse-trials and --fuse-scores (a trial set disjoint from the "
                               "evaluated one) or --fuse-cv K")
            if args.fuse_utt2spk is not None:
                raise CliError("--fuse-utt2spk goes with --fuse-cv")
            if len(runs) > 1:
                raise CliError("--fuse-trials needs a single run (--scores)")
            if len(args.fuse_scores) != len(names):
                raise CliError(f"--fuse-scores gives {len(args.fuse_scores)} files for {len(names)} systems")
            dev = io.read_trials(args.fuse_trials)
            io.check_labels(dev)
            dev_scores = {n: io.align_scores(dev, path) for n, path in zip(names, args.fuse_scores)}
            if args.fuse:
                options["fusion_train"] = (dev_scores, dev.label.astype(np.int64))
            if qmf:
                sides = _qmf_sides(dev, qmf, args.fuse_utt2dur, args.fuse_quality_emb, "--fuse-")
                options["qmf_train"] = (dev_scores, dev.label.astype(np.int64), *sides)
    if qmf:
        options.update(qmf=qmf, qmf_quality=_qmf_sides(trials, qmf, args.utt2dur, args.quality_emb, "--"))

    rows, per_run, scores = evaluate_runs(systems, trials, **options)
    if len(runs) == 1:
        rows, per_run = per_run[0], None
    print(results_table(rows), end="")
    if args.json is not None:
        write_json(args.json, rows, runs=per_run)
        log.info("wrote %s", args.json)
    if args.csv is not None:
        with io.atomic_write(args.csv) as tmp:
            Path(tmp).write_text(results_table(rows, fmt="csv"), encoding="utf-8")
        log.info("wrote %s", args.csv)
    if args.det is not None:
        labels = trials.label == 1
        det_plot({n: (s[labels], s[~labels]) for n, s in scores[0].items()}, args.det)
        log.info("wrote %s", args.det)
    if args.fusion_out is not None:
        io.write_scores(args.fusion_out, trials, scores[0]["fusion"])
        log.info("wrote fused scores to %s", args.fusion_out)
    if args.qmf_out is not None:
        io.write_scores(args.qmf_out, trials, scores[0]["qmf"])
        log.info("wrote quality-calibrated scores to %s", args.qmf_out)


def _qmf_sides(trials, qmf, utt2dur, quality_emb, prefix: str):
    """Raw quality measures (q_enroll, q_test) of the trials' sides from ``PREFIXutt2dur`` / ``PREFIXquality-emb``."""
    from scoring.quality import read_quality

    if "duration" in qmf and utt2dur is None and not quality_emb:
        raise CliError(f"--qmf duration needs {prefix}utt2dur F or {prefix}quality-emb EMB (with durations)")
    if "spread" in qmf and not quality_emb:
        raise CliError(f"--qmf spread needs {prefix}quality-emb EMB (with a spread: spkver extract --mc-samples K)")
    return read_quality(utt2dur, quality_emb or ()).trial_sides(trials, qmf)


# --------------------------------------------------------------------------------------------- prepare
def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="turn a corpus layout into Kaldi data dirs and trial files")
    corpus = p.add_subparsers(dest="corpus", required=True)
    vox = corpus.add_parser("voxceleb", help="VoxCeleb1 (and VoxCeleb2 converted to WAV)")
    vox.add_argument("--root", type=_existing, required=True)
    vox.add_argument("--out", type=Path, required=True)
    vox.add_argument("--subsets", nargs="+", choices=("dev", "test", "vox2_dev", "vox2_test"),
                     default=["dev", "test"], help="which parts to prepare (default: VoxCeleb1 dev and test)")
    vox.set_defaults(func=_cmd_prepare_voxceleb)
    sre = corpus.add_parser("sre", help="NIST SRE10-style SPHERE data with a trial key")
    sre.add_argument("--root", type=_existing, required=True)
    sre.add_argument("--key", type=_existing, required=True)
    sre.add_argument("--out", type=Path, required=True)
    sre.add_argument("--train", type=_existing, help="enrollment list (default: ROOT/train.trn)")
    sre.set_defaults(func=_cmd_prepare_sre)
    chan = corpus.add_parser("channel", help="pass a data dir through a simulated channel (out-of-domain sets)")
    chan.add_argument("--data", type=_existing, required=True)
    chan.add_argument("--out", type=Path, required=True)
    chan.add_argument("--channel", default="telephone", help="telephone (default) or telephone8k")
    chan.add_argument("--audio-root", type=_existing, help="resolve relative wav.scp paths against this folder")
    chan.set_defaults(func=_cmd_prepare_channel)
    comb = corpus.add_parser("combine", help="merge Kaldi data dirs into one, with absolute wav.scp paths")
    comb.add_argument("--out", type=Path, required=True)
    comb.add_argument("sources", type=_existing, nargs="+", help="data dirs (one: a copy)")
    comb.add_argument("--audio-root", type=_existing, help="resolve relative wav.scp paths against this folder")
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


# ----------------------------------------------------------------------------------------------- table
def _add_table(sub) -> None:
    p = sub.add_parser("table", help="baseline / proposed / fusion table from `spkver eval --json` results",
                       description="One line per --entry (evaluation set, back-end, `spkver eval --json` file), "
                                   "one column per system; cells are the --metric values joined by ' / ', "
                                   "mean ± sd where the JSON holds several runs.")
    p.add_argument("--entry", nargs=3, action="append", required=True, metavar=("EVAL_SET", "BACKEND", "JSON"),
                   help="one line of the table (repeatable)")
    p.add_argument("--systems", nargs="+", default=["baseline", "proposed", "fusion"],
                   help="system names (columns), as named in the JSON files")
    p.add_argument("--p-target", type=_probability, default=0.01, help="prior of the minDCF / actDCF cells")
    p.add_argument("--metric", action="append", dest="metrics",
                   choices=("eer", "eer_rocch", "min_dcf", "act_dcf", "cllr", "min_cllr"),
                   help="what each cell shows (repeatable, in order; default: eer and min_dcf)")
    p.add_argument("--ci", action="store_true", help="add the bootstrap 95%% intervals the JSON rows hold")
    p.add_argument("--run", type=int, metavar="K",
                   help="show run K (0-based) of JSON files holding several runs, instead of their mean ± sd")
    p.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    p.add_argument("--out", type=Path, help="also write the table here")
    p.set_defaults(func=_cmd_table)


def _cmd_table(args) -> None:
    from scoring.io import atomic_write
    from scoring.report import comparison_table, read_json

    entries = []
    for eval_set, backend, path in args.entry:
        rows, runs = read_json(_existing_file(path, "--entry"), runs=True)
        if args.run is not None:
            if runs is None or not 0 <= args.run < len(runs):
                raise CliError(f"--run {args.run}: {path} holds {len(runs) if runs else 1} run(s) "
                               f"{'(use no --run)' if runs is None else ''}".rstrip())
            rows = runs[args.run]
        entries.append((eval_set, backend, rows))
    table = comparison_table(entries, args.p_target, systems=args.systems,
                             metrics_shown=args.metrics or ("eer", "min_dcf"), fmt="csv" if args.csv else "md",
                             ci=args.ci)
    print(table, end="")
    if args.out is not None:
        with atomic_write(args.out) as tmp:
            Path(tmp).write_text(table, encoding="utf-8")


# ----------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train an x-vector or Bayesian x-vector extractor")
    p.add_argument("--config", type=_existing, required=True, help="YAML training configuration")
    p.add_argument("--data", type=_existing, required=True, help="Kaldi data dir of training utterances")
    p.add_argument("--exp", type=Path, required=True, help="experiment dir (checkpoints, logs, config)")
    p.add_argument("--init", type=_model_source,
                   help="initialise the model (a Bayesian model's means) from this baseline experiment, or from "
                        "a pretrained SpeechBrain folder, speechbrain:DIR (its classifier starts afresh)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --exp")
    p.add_argument("--audio-root", type=_existing, help="resolve relative wav.scp paths against this folder")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable utterances (and report them)")
    p.add_argument("--dev-data", type=_existing, help="data dir for a validation EER each epoch")
    p.add_argument("--dev-trials", type=_existing, help="trials for the validation EER")
    p.add_argument("--device", type=_device, help="auto, cpu, cuda, cuda:N (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a configuration setting, e.g. --set model.channels=256 --set kl_weight=0.01 "
                        "(dotted key, YAML value; repeatable)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> None:
    from spkver.config import load_config
    from spkver.train import train

    if (args.dev_data is None) != (args.dev_trials is None):
        raise CliError("--dev-data and --dev-trials go together")
    if args.device is not None:
        _check_device(args.device)
    config = load_config(args.config, args.overrides) if args.overrides else args.config
    ckpt = train(config, args.data, args.exp, init=args.init, resume=args.resume,
                 dev_data=args.dev_data, dev_trials=args.dev_trials, audio_root=args.audio_root,
                 skip_bad=args.skip_bad, device=args.device)
    if ckpt is not None:
        log.info("model: %s", ckpt)


# --------------------------------------------------------------------------------------------- extract
def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="extract embeddings with a trained model")
    p.add_argument("--model", type=_model_source, required=True,
                   help="experiment dir, checkpoint file or speechbrain:DIR (a SpeechBrain speaker-embedding "
                        "folder: hyperparams.yaml, embedding_model.ckpt)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=_existing, help="Kaldi data dir")
    src.add_argument("--wav-scp", type=_existing, help="a wav.scp file")
    src.add_argument("files", nargs="*", default=[], help="audio files (ids are the file stems)")
    p.add_argument("--out", type=Path, required=True, help=".npz, or .ark (with a .scp beside it)")
    p.add_argument("--audio-root", type=_existing, help="resolve relative wav.scp paths against this folder")
    p.add_argument("--mc-samples", type=_non_negative_int, default=0, metavar="K",
                   help="Bayesian models: average K sampled embeddings (0: posterior mean)")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when available, else CPU; the default), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="at most N utterances per batch (default: as many as --batch-frames allows)")
    p.add_argument("--batch-frames", type=_positive_int, default=10000, metavar="F",
                   help="at most F padded feature frames per batch (default: 10000)")
    p.add_argument("--workers", type=_non_negative_int, metavar="N",
                   help="feature-computing worker processes (0: in the main process; default: 1 on CPU, 4 on CUDA)")
    p.add_argument("--amp", choices=("bf16", "fp16", "none"), default="none",
                   help="autocast the model to bfloat16 or float16 (fp16: CUDA only; default: none, float32)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files (and report them)")
    p.add_argument("--no-resume", action="store_true", help="recompute finished utterances")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args) -> None:
    from spkver.extract import extract

    amp = None if args.amp == "none" else args.amp
    _check_device(args.device, amp)
    extract(args.model, args.out, data_dir=args.data, wav_scp=args.wav_scp,  # logs its summary
            files=[Path(f) for f in args.files] or None, mc_samples=args.mc_samples, device=args.device,
            batch_frames=args.batch_frames, batch_size=args.batch_size, num_workers=args.workers, amp=amp,
            skip_bad=args.skip_bad, resume=not args.no_resume, audio_root=args.audio_root, progress=True)


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the built-in synthetic corpus: baseline vs "
                                    "Bayesian x-vector vs fusion, cosine and PLDA, in- and out-of-domain")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="a tiny configuration (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> None:
    from spkver.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)


# ---------------------------------------------------------------------------------------------- system
def _add_system(sub) -> None:
    p = sub.add_parser("system", help="build or describe a verification system (a self-contained folder)")
    action = p.add_subparsers(dest="action", required=True)
    b = action.add_parser(
        "build", help="extractor(s) + back-end + calibration -> a system folder",
        description="Build a system folder: the extractor checkpoint(s), the back-end (cosine or PLDA, optional "
                    "S-norm / AS-norm cohort), a calibration to log-likelihood ratios trained on --calibrate-trials "
                    "(a fusion when there are several models) and system.json (metrics, file hashes). Data dirs "
                    "are embedded with each model; embedding files are used as given.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    b.add_argument("--model", type=_model_source, action="append", required=True, dest="models",
                   help="experiment dir, checkpoint or speechbrain:DIR (repeatable: several extractors are fused)")
    train = b.add_mutually_exclusive_group(required=True)
    train.add_argument("--train-data", type=_existing, help="data dir the back-end is trained on")
    train.add_argument("--train-emb", type=_existing, nargs="+", help="training embeddings, one file per --model")
    b.add_argument("--utt2spk", type=_existing, help="speaker of each --train-emb utterance")
    b.add_argument("--backend", choices=("plda", "cosine"), required=True)
    b.add_argument("--lda-dim", type=_positive_int, help="LDA dimension before PLDA")
    b.add_argument("--norm", choices=("none", "snorm", "asnorm"), default="none", help="score normalisation")
    cohort = b.add_mutually_exclusive_group()
    cohort.add_argument("--cohort", type=_existing, nargs="+", help="cohort embeddings, one file per --model")
    cohort.add_argument("--cohort-data", type=_existing, help="data dir of cohort utterances")
    b.add_argument("--top-k", type=_positive_int, help="adaptive S-norm cohort size (default 200)")
    b.add_argument("--calibrate-data", type=_existing, required=True,
                   help="data dir of the calibration utterances (its utt2spk gives the speakers)")
    b.add_argument("--calibrate-trials", type=_existing, required=True, help="labelled trials between them")
    b.add_argument("--calibrate-emb", type=_existing, nargs="+",
                   help="calibration embeddings, one file per --model (instead of extracting them)")
    b.add_argument("--name", nargs="+", action="extend", dest="names",
                   help="extractor names, one per --model (default: the experiment dir names)")
    b.add_argument("--system-name", help="the system's name (default: the --out folder name)")
    b.add_argument("--p-target", type=_probability, default=0.01,
                   help="target prior the calibration is trained for and checked at (default 0.01)")
    b.add_argument("--qmf", metavar="duration",
                   help="a quality-measure calibration on each side's speech duration after VAD instead of the "
                        "plain calibration (see spkver eval --qmf)")
    b.add_argument("--min-speech", type=float, default=0.5, metavar="SECONDS",
                   help="verification refuses audio with less speech after VAD (default 0.5 s)")
    b.add_argument("--audio-root", type=_existing, help="resolve relative wav.scp paths against this folder")
    b.add_argument("--device", type=_device, default="auto", help="for extraction: auto, cpu, cuda, cuda:N")
    b.add_argument("--workers", type=_non_negative_int, metavar="N", help="feature worker processes")
    b.add_argument("--skip-bad", action="store_true", help="leave unreadable utterances out (and report them)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    b.add_argument("--out", type=Path, required=True, help="the system folder to write")
    b.set_defaults(func=_cmd_system_build)
    i = action.add_parser("info", help="print a system's system.json summary (extractors, metrics) as JSON")
    i.add_argument("--system", type=Path, help="system folder (default: the shipped system)")
    i.set_defaults(func=_cmd_system_info)


def _cmd_system_build(args) -> None:
    from spkver.system import build_system

    if args.utt2spk is not None and args.train_emb is None:
        raise CliError("--utt2spk goes with --train-emb")
    if args.min_speech < 0:
        raise CliError(f"--min-speech must be >= 0, got {args.min_speech}")
    _check_device(args.device)
    build_system(args.models, args.out, args.backend, train_data=args.train_data, train_emb=args.train_emb,
                 utt2spk=args.utt2spk, lda_dim=args.lda_dim, norm=args.norm, cohort_emb=args.cohort,
                 cohort_data=args.cohort_data, top_k=args.top_k, calibrate_data=args.calibrate_data,
                 calibrate_trials=args.calibrate_trials, calibrate_emb=args.calibrate_emb, names=args.names,
                 p_target=args.p_target, name=args.system_name, audio_root=args.audio_root, device=args.device,
                 skip_bad=args.skip_bad, overwrite=args.overwrite, min_speech_seconds=args.min_speech,
                 num_workers=args.workers, qmf=args.qmf)


def _cmd_system_info(args) -> None:
    import json

    from spkver.system import read_manifest, resolve_system_path

    folder = resolve_system_path(args.system)
    manifest = read_manifest(folder)
    keys = ("name", "format_version", "spkver_version", "created", "p_target", "backend", "training",
            "calibration_set", "cohort_set", "metrics")
    summary = {"path": str(folder), **{k: manifest.get(k) for k in keys},
               "extractors": [{k: x.get(k) for k in ("name", "model", "backend", "norm")}
                              for x in manifest["extractors"]]}
    print(json.dumps(summary, indent=2))


# ---------------------------------------------------------------------------------------------- verify
def _add_verify(sub) -> None:
    p = sub.add_parser(
        "verify", help="are two recordings (or an enrollment and a recording) the same speaker?",
        description="Score recordings with a system: prints the calibrated log-likelihood ratio (LLR), the "
                    "decision (accept when LLR >= threshold) and the threshold. Modes: two files A B; "
                    "--enroll A1 A2 ... --test B; --trials T --out SCORES (trial lines name audio files "
                    "relative to --audio-root; writes 'enroll test llr' lines that `spkver eval` reads).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("files", nargs="*", help="two recordings: A B")
    p.add_argument("--system", type=Path, help="system folder (default: the shipped system)")
    p.add_argument("--enroll", nargs="+", help="enrollment recordings of one speaker (with --test)")
    p.add_argument("--test", help="the recording to verify against --enroll")
    p.add_argument("--trials", type=_existing, help="trial list of audio paths (Kaldi, VoxCeleb or unlabelled)")
    p.add_argument("--audio-root", type=_existing, help="with --trials: folder the trial paths are relative to")
    p.add_argument("--out", type=Path, help="with --trials: score file to write")
    p.add_argument("--skip-bad", action="store_true", help="with --trials: leave unusable files (and their trials) out")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--p-target", type=_probability, default=0.01,
                       help="target prior of the Bayes threshold log((1-p)/p) (default 0.01)")
    level.add_argument("--threshold", type=float, help="accept when LLR >= this instead")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the extractor network with torch or onnxruntime (CPU; exported on first use, see "
                        "`spkver export`)")
    p.add_argument("--workers", type=_non_negative_int, metavar="N", help="with --trials: feature worker processes")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> None:
    import json

    trials_mode = args.trials is not None
    if trials_mode:
        if args.files or args.enroll or args.test:
            raise CliError("--trials excludes recordings on the command line, --enroll and --test")
        if args.out is None:
            raise CliError("--trials needs --out")
    else:
        for flag, value in (("--out", args.out), ("--audio-root", args.audio_root), ("--skip-bad", args.skip_bad),
                            ("--workers", args.workers)):
            if value not in (None, False):
                raise CliError(f"{flag} goes with --trials")
        if args.enroll is not None or args.test is not None:
            if args.files or args.enroll is None or args.test is None:
                raise CliError("give --enroll A1 [A2 ...] with --test B (and no other recordings)")
        elif len(args.files) != 2:
            raise CliError(f"give two recordings A B (got {len(args.files)}), --enroll ... --test B, or --trials")
    _check_device(args.device)
    if args.runtime == "onnx" and trials_mode:
        raise CliError("--runtime onnx scores single trials; --trials extracts with torch")
    from spkver.api import load, score_trial_list

    verifier = load(args.system, device="cpu" if args.runtime == "onnx" else args.device, runtime=args.runtime)
    if trials_mode:
        summary = score_trial_list(verifier.system, args.trials, args.out, audio_root=args.audio_root,
                                   skip_bad=args.skip_bad, device=args.device, num_workers=args.workers)
        if args.json:
            print(json.dumps(summary))
        return
    if args.enroll is not None:
        verifier.enroll("enrollment", args.enroll)
        enroll, test = "enrollment", args.test
    else:
        enroll, test = args.files
    decision = verifier.verify(enroll, test, p_target=args.p_target, threshold=args.threshold)
    if args.json:
        print(json.dumps(decision.to_dict()))
        return
    rule = f"Bayes threshold at p_target {decision.p_target:g}" if decision.p_target is not None else "given"
    print(f"llr        {decision.llr:.4f}\n"
          f"decision   {'accept (same speaker)' if decision.accept else 'reject (different speakers)'}\n"
          f"threshold  {decision.threshold:.4f} ({rule})")


# ---------------------------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a system's extractor network to ONNX",
                       description="Writes the extractor network (features -> embedding; batch and time axes "
                                   "dynamic, inputs 'feats' (batch, frames, dim) and 'lengths' (batch,)) as an ONNX "
                                   "model. The feature front end (MFCC/fbank, CMN, VAD) stays in Python.")
    p.add_argument("--system", type=Path, help="system folder (default: the shipped system)")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--extractor", help="which extractor of a system that holds several (by name)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> None:
    from spkver.onnx_export import export_onnx
    from spkver.system import load_system

    system = load_system(args.system)
    names = [x.name for x in system.extractors]
    if args.extractor is None and len(names) > 1:
        raise CliError(f"the system holds {len(names)} extractors: name one with --extractor ({', '.join(names)})")
    if args.extractor is not None and args.extractor not in names:
        raise CliError(f"--extractor {args.extractor}: the system has {', '.join(names)}")
    extractor = system.extractors[names.index(args.extractor) if args.extractor else 0]
    path = export_onnx(extractor.model, args.onnx, feat_dim=extractor.features.dim)
    log.info("wrote %s (extractor %r of %s)", path, extractor.name, system.path)


# ----------------------------------------------------------------------------------------------- embed
def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="embed audio files and folders with a system's extractor(s)",
        description="Embed files and folders (searched recursively for wav, flac, ogg, opus, sph, mp3). Ids: a "
                    "file's stem; in a folder, the path relative to it without extension "
                    "(id10001/1zcIwhmdeo4/00001). Several extractors: their embeddings side by side, in system "
                    "order, unless --extractor picks one.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("paths", nargs="+", help="audio files and folders")
    p.add_argument("--system", type=Path, help="system folder (default: the shipped system)")
    p.add_argument("--out", type=Path, required=True, help=".npz, or .ark (with a .scp beside it)")
    p.add_argument("--extractor", help="the extractor to use (default: all of them)")
    p.add_argument("--skip-bad", action="store_true", help="leave unusable files out (and report them)")
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=_non_negative_int, metavar="N", help="feature worker processes")
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(args) -> None:
    from spkver.api import embed_paths
    from spkver.system import load_system

    _check_device(args.device)
    summary = embed_paths(load_system(args.system), args.paths, args.out, extractor=args.extractor,
                          skip_bad=args.skip_bad, device=args.device, num_workers=args.workers)
    log.info("embedded %d of %d file(s) into %s", summary["n_embedded"], summary["n_files"], args.out)


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spkver", description="Speaker verification with Bayesian x-vectors.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    parser.add_argument("--version", action="version", version=f"spkver {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_const", const=logging.DEBUG, dest="log_level",
                          default=logging.INFO, help="also log debugging details (before the sub-command)")
    loudness.add_argument("-q", "--quiet", action="store_const", const=logging.WARNING, dest="log_level",
                          help="log only warnings and errors (before the sub-command)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_prepare, _add_train, _add_extract, _add_score, _add_eval, _add_table, _add_demo, _add_export,
                _add_system, _add_verify, _add_embed):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        args.func(args)
    except (CliError, ValueError, FileNotFoundError) as err:
        print(f"spkver {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
