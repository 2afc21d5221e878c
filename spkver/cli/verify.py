"""`spkver system`, `spkver verify` and `spkver embed`: systems anyone can use."""

from __future__ import annotations

import argparse
from pathlib import Path

from spkver.cli.common import (FORMATS, CliError, existing, model_source, positive_int, non_negative_int, device_name,
                               check_device, probability, log)


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
    b.add_argument("--model", type=model_source, action="append", required=True, dest="models",
                   help="experiment dir, checkpoint or speechbrain:DIR (repeatable: several extractors are fused)")
    train = b.add_mutually_exclusive_group(required=True)
    train.add_argument("--train-data", type=existing, help="data dir the back-end is trained on")
    train.add_argument("--train-emb", type=existing, nargs="+", help="training embeddings, one file per --model")
    b.add_argument("--utt2spk", type=existing, help="speaker of each --train-emb utterance")
    b.add_argument("--backend", choices=("plda", "cosine"), required=True)
    b.add_argument("--lda-dim", type=positive_int, help="LDA dimension before PLDA")
    b.add_argument("--norm", choices=("none", "snorm", "asnorm"), default="none", help="score normalisation")
    cohort = b.add_mutually_exclusive_group()
    cohort.add_argument("--cohort", type=existing, nargs="+", help="cohort embeddings, one file per --model")
    cohort.add_argument("--cohort-data", type=existing, help="data dir of cohort utterances")
    b.add_argument("--top-k", type=positive_int, help="adaptive S-norm cohort size (default 200)")
    b.add_argument("--calibrate-data", type=existing, required=True,
                   help="data dir of the calibration utterances (its utt2spk gives the speakers)")
    b.add_argument("--calibrate-trials", type=existing, required=True, help="labelled trials between them")
    b.add_argument("--calibrate-emb", type=existing, nargs="+",
                   help="calibration embeddings, one file per --model (instead of extracting them)")
    b.add_argument("--name", nargs="+", action="extend", dest="names",
                   help="extractor names, one per --model (default: the experiment dir names)")
    b.add_argument("--system-name", help="the system's name (default: the --out folder name)")
    b.add_argument("--p-target", type=probability, default=0.01,
                   help="target prior the calibration is trained for and checked at (default 0.01)")
    b.add_argument("--qmf", metavar="duration",
                   help="a quality-measure calibration on each side's speech duration after VAD instead of the "
                        "plain calibration (see spkver eval --qmf)")
    b.add_argument("--min-speech", type=float, default=0.5, metavar="SECONDS",
                   help="verification refuses audio with less speech after VAD (default 0.5 s)")
    b.add_argument("--audio-root", type=existing, help="resolve relative wav.scp paths against this folder")
    b.add_argument("--device", type=device_name, default="auto", help="for extraction: auto, cpu, cuda, cuda:N")
    b.add_argument("--workers", type=non_negative_int, metavar="N", help="feature worker processes")
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
    check_device(args.device)
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
    p.add_argument("--trials", type=existing, help="trial list of audio paths (Kaldi, VoxCeleb or unlabelled)")
    p.add_argument("--audio-root", type=existing, help="with --trials: folder the trial paths are relative to")
    p.add_argument("--out", type=Path, help="with --trials: score file to write")
    p.add_argument("--skip-bad", action="store_true", help="with --trials: leave unusable files (and their trials) out")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--p-target", type=probability, default=0.01,
                       help="target prior of the Bayes threshold log((1-p)/p) (default 0.01)")
    level.add_argument("--threshold", type=float, help="accept when LLR >= this instead")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the extractor network with torch or onnxruntime (CPU; exported on first use, see "
                        "`spkver export`)")
    p.add_argument("--workers", type=non_negative_int, metavar="N", help="with --trials: feature worker processes")
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
    check_device(args.device)
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
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=non_negative_int, metavar="N", help="feature worker processes")
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(args) -> None:
    from spkver.api import embed_paths
    from spkver.system import load_system

    check_device(args.device)
    summary = embed_paths(load_system(args.system), args.paths, args.out, extractor=args.extractor,
                          skip_bad=args.skip_bad, device=args.device, num_workers=args.workers)
    log.info("embedded %d of %d file(s) into %s", summary["n_embedded"], summary["n_files"], args.out)
