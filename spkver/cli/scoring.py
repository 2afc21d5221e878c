"""`spkver score`, `spkver eval`, `spkver calibrate`, `spkver table`: the numpy back-end only (never torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spkver.cli.common import FORMATS, CliError, existing, positive_int, probability, log


# ----------------------------------------------------------------------------------------------- score
def _add_score(sub) -> None:
    p = sub.add_parser(
        "score", help="score trials from embeddings (cosine or LDA+PLDA, optional S-norm)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("--trials", type=existing, required=True)
    p.add_argument("--enroll", type=existing, required=True, help="enrollment embeddings")
    p.add_argument("--test", type=existing, required=True, help="test embeddings")
    p.add_argument("--backend", choices=("cosine", "plda"), default="cosine")
    p.add_argument("--plda", type=existing, help="a trained PLDA model (.npz)")
    p.add_argument("--train", type=existing, help="training embeddings (PLDA training; cosine mean)")
    p.add_argument("--utt2spk", type=existing, help="speaker of each training embedding (PLDA training)")
    p.add_argument("--lda-dim", type=positive_int, help="LDA dimension before PLDA")
    p.add_argument("--save-plda", type=Path, help="write the trained PLDA model here (.npz)")
    p.add_argument("--subtract-mean", action="store_true",
                   help="cosine: subtract the mean of --train embeddings first")
    p.add_argument("--enroll-map", type=existing,
                   help="model -> enrollment utterances (spk2utt-style); default: enroll ids are models")
    p.add_argument("--multi", choices=("mean", "plda"), default="mean",
                   help="multi-utterance enrollment: average embeddings, or the PLDA multi-enrollment LLR")
    p.add_argument("--norm", choices=("none", "snorm", "asnorm"), default="none")
    p.add_argument("--cohort", type=existing, help="cohort embeddings for score normalisation")
    p.add_argument("--top-k", type=positive_int, default=200, help="cohort size for adaptive S-norm")
    p.add_argument("--uncertainty", choices=("none", "spread", "duration"), default="none",
                   help="plda: add each utterance's own variance to its within-speaker covariance: 'spread' "
                        "(per-dimension std. dev., array 'spread' of the .npz or NAME.spread.ark beside a Kaldi "
                        "table, from `spkver extract --mc-samples K`) or 'duration' (variance --duration-scale / "
                        "seconds, from --utt2dur or an .npz array 'duration')")
    p.add_argument("--utt2dur", type=existing, help="Kaldi utt2dur of the enroll and test utterances "
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
    p.add_argument("--trials", type=existing, required=True, help="labelled trial list")
    runs = p.add_mutually_exclusive_group(required=True)
    runs.add_argument("--scores", type=existing, nargs="+", help="one score file per system (one run)")
    runs.add_argument("--system", nargs="+", action="append", metavar=("NAME", "SCORES"), dest="systems",
                      help="a system and its score files, one per run (repeatable; every system the same "
                           "number of runs, in the same order)")
    p.add_argument("--names", nargs="+", help="with --scores: system names (default: score file names)")
    p.add_argument("--p-target", type=probability, action="append", dest="p_targets",
                   help="operating point(s) for minDCF (repeatable; default 0.01 and 0.001)")
    p.add_argument("--calibrated", action="store_true",
                   help="the scores are log-likelihood ratios: also report actDCF and Cllr")
    p.add_argument("--fuse", action="store_true", help="add a logistic-regression fusion of all systems")
    p.add_argument("--fuse-trials", type=existing, help="labelled trials to train the fusion on")
    p.add_argument("--fuse-scores", type=existing, nargs="+",
                   help="score files of the same systems on --fuse-trials (same order as --scores)")
    p.add_argument("--fuse-cv", type=positive_int, metavar="K",
                   help="instead of --fuse-trials: K-fold cross-validation over enrollment models")
    p.add_argument("--fuse-utt2spk", type=existing,
                   help="with --fuse-cv: make the folds speaker-disjoint (speaker of each enrollment id)")
    p.add_argument("--fuse-prior", type=probability, default=0.5, help="prior of the fusion objective")
    p.add_argument("--qmf", metavar="duration|spread|duration,spread",
                   help="add a quality-measure calibration of all systems (row 'qmf'): logistic regression on the "
                        "scores, min and max of the two sides' log quality measures and their products with the "
                        "scores; cross-validated with --fuse-cv K or trained on --fuse-trials/--fuse-scores")
    p.add_argument("--utt2dur", type=existing,
                   help="--qmf duration: seconds (Kaldi utt2dur; best of speech after VAD) of the evaluated "
                        "trials' utterances")
    p.add_argument("--quality-emb", type=existing, nargs="+", metavar="EMB",
                   help="--qmf: embedding files of the evaluated trials' utterances, with an .npz array "
                        "'duration' and/or 'spread' (spkver extract --mc-samples K)")
    p.add_argument("--fuse-utt2dur", type=existing, help="--qmf with --fuse-trials: utt2dur of that set")
    p.add_argument("--fuse-quality-emb", type=existing, nargs="+", metavar="EMB",
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


# ------------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="train a calibration (or fusion, or quality-measure calibration) on one labelled trial "
                          "set and write the log-likelihood ratios of another set's scores",
        description="Logistic-regression calibration trained on --train-trials / --train-scores and applied to "
                    "--trials / --scores: one system gives llr = a * score + b, several a fusion; --qmf adds the "
                    "quality measures of both sides of each trial (scoring.quality). The evaluated trials may "
                    "be unlabelled; labels are needed for the training trials only. Writes one 'enroll test llr' "
                    "line per trial of --trials.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("--train-trials", type=existing, required=True, help="labelled trials to train on")
    p.add_argument("--train-scores", type=existing, nargs="+", required=True,
                   help="score files of the systems on --train-trials (one per system)")
    p.add_argument("--trials", type=existing, required=True, help="trials whose scores are calibrated")
    p.add_argument("--scores", type=existing, nargs="+", required=True,
                   help="score files of the same systems on --trials (same order as --train-scores)")
    p.add_argument("--out", type=Path, required=True, help="output score file (log-likelihood ratios)")
    p.add_argument("--prior", type=probability, default=0.5, help="prior of the training objective (default 0.5)")
    p.add_argument("--qmf", metavar="duration|spread|duration,spread",
                   help="quality-measure calibration: also the min and max of the two sides' log quality measures "
                        "and their products with the scores")
    p.add_argument("--train-utt2dur", type=existing, help="--qmf duration: utt2dur of the training trials' utterances")
    p.add_argument("--train-quality-emb", type=existing, nargs="+", metavar="EMB",
                   help="--qmf: embedding files of the training trials' utterances ('duration' / 'spread' arrays)")
    p.add_argument("--utt2dur", type=existing, help="--qmf duration: utt2dur of the calibrated trials' utterances")
    p.add_argument("--quality-emb", type=existing, nargs="+", metavar="EMB",
                   help="--qmf: embedding files of the calibrated trials' utterances ('duration' / 'spread')")
    p.add_argument("--save-model", type=Path, help="also write the trained calibration here (.npz)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args) -> None:
    import numpy as np

    from scoring import io
    from scoring.quality import apply_calibration, parse_quality, train_calibration

    try:
        qmf = parse_quality(args.qmf) if args.qmf is not None else ()
    except ValueError as err:
        raise CliError(f"--qmf: {err}") from None
    if not qmf and (args.train_utt2dur or args.train_quality_emb or args.utt2dur or args.quality_emb):
        raise CliError("--train-utt2dur, --train-quality-emb, --utt2dur and --quality-emb go with --qmf")
    if len(args.scores) != len(args.train_scores):
        raise CliError(f"--scores gives {len(args.scores)} files for the {len(args.train_scores)} systems of "
                       "--train-scores")
    train = io.read_trials(args.train_trials)
    io.check_labels(train)
    trials = io.read_trials(args.trials)
    train_sides = _qmf_sides(train, qmf, args.train_utt2dur, args.train_quality_emb, "--train-") if qmf else ()
    sides = _qmf_sides(trials, qmf, args.utt2dur, args.quality_emb, "--") if qmf else ()
    train_scores = np.stack([io.align_scores(train, path) for path in args.train_scores], axis=1)
    scores = np.stack([io.align_scores(trials, path) for path in args.scores], axis=1)
    model = train_calibration(train_scores, train.label.astype(np.int64), p_target=args.prior, quality=qmf,
                              **dict(zip(("q_enroll", "q_test"), train_sides)))
    llr = apply_calibration(model, scores, *sides)
    io.write_scores(args.out, trials, llr)
    if args.save_model is not None:
        model.save(args.save_model)
    log.info("wrote %d calibrated scores to %s (%s trained on %d trials of %s)", len(llr), args.out,
             type(model).__name__, len(train_scores), args.train_trials)


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
    p.add_argument("--p-target", type=probability, default=0.01, help="prior of the minDCF / actDCF cells")
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
