"""`spkver train`, `spkver extract`, `spkver demo` and `spkver export`: the torch side."""

from __future__ import annotations

from pathlib import Path

from spkver.cli.common import (CliError, check_device, device_name, existing, log, model_source, non_negative_int,
                               positive_int)


# ----------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train an x-vector or Bayesian x-vector extractor")
    p.add_argument("--config", type=existing, required=True, help="YAML training configuration")
    p.add_argument("--data", type=existing, required=True, help="Kaldi data dir of training utterances")
    p.add_argument("--exp", type=Path, required=True, help="experiment dir (checkpoints, logs, config)")
    p.add_argument("--init", type=model_source,
                   help="initialise the model (a Bayesian model's means) from this baseline experiment, or from "
                        "a pretrained SpeechBrain folder, speechbrain:DIR (its classifier starts afresh)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --exp")
    p.add_argument("--audio-root", type=existing, help="resolve relative wav.scp paths against this folder")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable utterances (and report them)")
    p.add_argument("--dev-data", type=existing, help="data dir for a validation EER each epoch")
    p.add_argument("--dev-trials", type=existing, help="trials for the validation EER")
    p.add_argument("--device", type=device_name, help="auto, cpu, cuda, cuda:N (default: the config's)")
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
        check_device(args.device)
    config = load_config(args.config, args.overrides) if args.overrides else args.config
    ckpt = train(config, args.data, args.exp, init=args.init, resume=args.resume,
                 dev_data=args.dev_data, dev_trials=args.dev_trials, audio_root=args.audio_root,
                 skip_bad=args.skip_bad, device=args.device)
    if ckpt is not None:
        log.info("model: %s", ckpt)


# --------------------------------------------------------------------------------------------- extract
def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="extract embeddings with a trained model")
    p.add_argument("--model", type=model_source, required=True,
                   help="experiment dir, checkpoint file or speechbrain:DIR (a SpeechBrain speaker-embedding "
                        "folder: hyperparams.yaml, embedding_model.ckpt)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=existing, help="Kaldi data dir")
    src.add_argument("--wav-scp", type=existing, help="a wav.scp file")
    src.add_argument("files", nargs="*", default=[], help="audio files (ids are the file stems)")
    p.add_argument("--out", type=Path, required=True, help=".npz, or .ark (with a .scp beside it)")
    p.add_argument("--audio-root", type=existing, help="resolve relative wav.scp paths against this folder")
    p.add_argument("--mc-samples", type=non_negative_int, default=0, metavar="K",
                   help="Bayesian models: average K sampled embeddings (0: posterior mean)")
    p.add_argument("--device", type=device_name, default="auto",
                   help="auto (CUDA when available, else CPU; the default), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="at most N utterances per batch (default: as many as --batch-frames allows)")
    p.add_argument("--batch-frames", type=positive_int, default=10000, metavar="F",
                   help="at most F padded feature frames per batch (default: 10000)")
    p.add_argument("--workers", type=non_negative_int, metavar="N",
                   help="feature-computing worker processes (0: in the main process; default: 1 on CPU, 4 on CUDA)")
    p.add_argument("--amp", choices=("bf16", "fp16", "none"), default="none",
                   help="autocast the model to bfloat16 or float16 (fp16: CUDA only; default: none, float32)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files (and report them)")
    p.add_argument("--no-resume", action="store_true", help="recompute finished utterances")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args) -> None:
    from spkver.extract import extract

    amp = None if args.amp == "none" else args.amp
    check_device(args.device, amp)
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


# ---------------------------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a system's extractor network to ONNX",
                       description="Writes the extractor network (features -> embedding; inputs 'feats' (batch, "
                                   "frames, dim) and 'lengths' (batch,); time axis dynamic, batch axis too for an "
                                   "x-vector, one example per call for an ECAPA-TDNN) as an ONNX model. The feature "
                                   "front end (MFCC/fbank, CMN, VAD) stays in Python.")
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
