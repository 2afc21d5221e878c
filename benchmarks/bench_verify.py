"""Verification latency: two recordings in, a calibrated LLR out.

1. Command line, cold start to answer: wall time of ``spkver verify --system S a.wav b.wav`` in a fresh
   subprocess (imports, system loading and checking, both files embedded, scoring), median of ``--cli-runs``
   runs after one untimed run; the same with ``--runtime onnx`` (its ONNX export is made beforehand, in the
   cache folder ``$SPKVER_CACHE`` of this run, so no run pays for the export). The runs get
   ``OMP_NUM_THREADS=--threads`` (torch's threads); the ONNX runtime of the command line and of
   ``spkver.load(..., runtime="onnx")`` uses as many threads as torch.
2. Python API, system loaded: ``Verifier.score(a, b)`` on the two files, median of ``--repeats`` calls. ``score``
   reads and embeds both files on every call (``Verifier`` keeps no per-file embeddings; only ``enroll``
   stores any), so each call does the full work. Reported as a real-time factor (seconds of audio in the trial
   per second of wall time); target >= 300x for two 10 s files (under ~67 ms) on 2 CPU cores. The same with
   ``runtime="onnx"``.
3. The peer: SpeechBrain's ``SpeakerRecognition.verify_files(a, b)`` (both files read and embedded per call,
   cosine score) on a model folder built here with SpeechBrain's own classes (Fbank features, sentence mean
   normalisation, and the system's extractor architecture: ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``
   for an ECAPA-TDNN, ``speechbrain.lobes.models.Xvector.Xvector`` with the layer widths of an x-vector; random
   weights; ``hyperparams.yaml`` plus the checkpoint files its ``Pretrainer`` loads), opened with
   ``from_hparams`` from the local folder: nothing is downloaded. Timed as in 2.
4. Extractor network only, on the same precomputed features of the two files (one call per file, as
   ``score`` does): torch (``spkver.extract.Embedder``) against onnxruntime (``spkver.onnx_export.OnnxEmbedder``
   with ``--threads`` intra-op threads), and the largest difference between their embeddings.

The two recordings are synthetic speakers (``spkver.data.synthetic``), 10 s each, 16 kHz WAV. The system is
``--system PATH``, else the shipped default (``spkver/default_system/``) when installed, else one built here:
a randomly initialised x-vector of the so762 baseline size (256 channels, 768 statistics channels,
256-dim embedding; speed does not depend on the weights) with a PLDA back-end and a calibration trained on a
small synthetic corpus. The output says which.

On a machine that other processes keep busy, torch's OpenMP threads slow down sharply once they outnumber
the free cores (every layer waits for its slowest thread); ``--threads 1`` then measures the code rather than
the contention. The load average is printed before and after.

Run: ``python benchmarks/bench_verify.py [--system PATH] [--threads 2]``. ``--quick``: 2 s recordings, a tiny
system (24 channels), one timed run of everything, one torch thread (a smoke run, ~20 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SIZES = {"default": {"channels": 256, "stats_channels": 768, "embed_dim": 256},  # recipes/so762/conf/baseline.yaml
         "tiny": {"channels": 24, "stats_channels": 48, "embed_dim": 12}}
TARGET_RTF = 300.0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


@contextlib.contextmanager
def _env(**values):
    """Set environment variables for the duration of the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors from ``logger`` (and its children) inside the block."""
    import logging

    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# ------------------------------------------------------------------------------------------------- inputs
def make_recordings(folder: Path, seconds: float) -> list[Path]:
    """Two recordings of ``seconds`` each by two synthetic speakers (16 kHz WAV)."""
    from spkver.data.synthetic.corpus import make_corpus

    data = make_corpus(folder, n_speakers=2, sessions_per_speaker=1, utts_per_session=1, min_seconds=seconds,
                       max_seconds=seconds, seed=7, speaker_offset=500)
    return [Path(data.resolve(data.recording(u)[0])) for u in sorted(data.utt2spk)]


def build_throwaway_system(folder: Path, size: str, quick: bool) -> Path:
    """A system with a randomly initialised x-vector of ``SIZES[size]``, a PLDA back-end and a calibration,
    trained on a small synthetic corpus."""
    from spkver.checkpoint import save_checkpoint
    from spkver.data.synthetic.corpus import make_corpus, make_trials
    from spkver.features import FeatureConfig
    from spkver.nn.tdnn import build_model
    from spkver.system import build_system

    features = FeatureConfig()
    common = dict(sessions_per_speaker=2, utts_per_session=2, min_seconds=1.0 if quick else 1.5,
                  max_seconds=1.5 if quick else 2.5)
    make_corpus(folder / "train", n_speakers=10 if quick else 16, seed=0, **common)
    dev = make_corpus(folder / "dev", n_speakers=6 if quick else 8, seed=1, speaker_offset=100, **common)
    make_trials(dev, n_target=None, n_nontarget=60 if quick else 120, seed=0, path=folder / "dev" / "trials")
    torch.manual_seed(0)
    kwargs = {"feat_dim": features.dim, "num_classes": 16, **SIZES[size]}
    ckpt = save_checkpoint(folder / "xvector.pt", model=build_model("xvector", **kwargs), model_name="xvector",
                           model_kwargs=kwargs, features=features.to_dict(), speakers=[f"s{i}" for i in range(16)])
    with _quiet("scoring"):  # random weights: LDA / PLDA warn of near-singular covariances, as they should
        return build_system([ckpt], folder / "system", "plda", train_data=folder / "train",
                            calibrate_data=folder / "dev", calibrate_trials=folder / "dev" / "trials",
                            lda_dim=6 if quick else 12, names=["xvector"], num_workers=0)


def _ecapa_arch(model) -> dict | None:
    """The architecture settings of spkver's ECAPA-TDNN (SpeechBrain's ``ECAPA_TDNN`` arguments), None for an
    x-vector."""
    arch = getattr(model, "arch", None)
    return arch if arch is not None and "attention_channels" in arch else None


def network_yaml(model, feat_dim: int) -> str:
    """The ``embedding_model`` entry of a SpeechBrain ``hyperparams.yaml`` with ``model``'s architecture: SpeechBrain's
    ``ECAPA_TDNN`` for spkver's ECAPA-TDNN (which wraps that very class), else ``Xvector`` with the x-vector's
    layer widths."""
    arch = _ecapa_arch(model)
    if arch is not None:
        keys = ("channels", "kernel_sizes", "dilations", "attention_channels", "res2net_scale", "se_channels")
        lines = [f"    {k}: {list(arch[k]) if isinstance(arch[k], (list, tuple)) else arch[k]}" for k in keys]
        lines.append(f"    global_context: {arch['global_context']}")
        return ("embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN\n"
                f"    input_size: {feat_dim}\n" + "\n".join(lines) + f"\n    lin_neurons: {model.embed_dim}\n")
    widths = [model.frame_1_norm.num_features] * 4 + [model.frame_5_norm.num_features]
    return ("embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector\n"
            f"    in_channels: {feat_dim}\n    tdnn_channels: {widths}\n    lin_neurons: {model.embed_dim}\n")


def describe(model) -> str:
    """The extractor network in a few words: its kind, widths and parameter count."""
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier"))
    arch = _ecapa_arch(model)
    if arch is not None:
        what = f"ECAPA-TDNN, channels {list(arch['channels'])}, attention {arch['attention_channels']}"
    else:
        what = (f"x-vector, {model.frame_1_norm.num_features} channels, {model.frame_5_norm.num_features} "
                "statistics channels")
    return f"{what}, {model.embed_dim}-dim embedding, {n / 1e6:.2f} M params"


def speechbrain_folder(folder: Path, feat_dim: int, model) -> Path:
    """A SpeechBrain speaker-verification model folder (``hyperparams.yaml`` and the ``NAME.ckpt`` files of its
    pretrainer's loadables) with ``model``'s architecture (:func:`network_yaml`), written with SpeechBrain's own
    classes and checkpoint hooks; random weights."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(f"""\
# speaker verification model (random weights, for timing)
n_mels: {feat_dim}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
{network_yaml(model, feat_dim)}mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
""")
    torch.manual_seed(0)
    with open(folder / "hyperparams.yaml", encoding="utf-8") as fh:
        hparams = load_hyperpyyaml(fh)
    for name, obj in hparams["pretrainer"].loadables.items():
        get_default_hook(obj, DEFAULT_SAVE_HOOKS)(obj, folder / f"{name}.ckpt")
    return folder


# ------------------------------------------------------------------------------------------------- the CLI
def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("spkver")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from spkver.cli import main; sys.exit(main())"]


def cli_time(system: Path, a: Path, b: Path, runtime: str, env: dict, runs: int, warmup: int,
             cwd: Path) -> tuple[float, float]:
    """``(median seconds, LLR)`` of ``spkver verify --system S A B --runtime R --json`` in fresh processes."""
    cmd = _cli_command() + ["verify", "--system", str(system), "--runtime", runtime, "--json", str(a), str(b)]
    outputs = []

    def once():
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
        outputs.append(done.stdout)

    seconds = _median_time(once, runs, warmup)
    return seconds, float(json.loads(outputs[-1])["llr"])


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default=None,
                        help="system folder (default: the shipped one if installed, else one built here)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each recording (default 10; 2 "
                                                                    "with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls of the in-process measurements (default 20; 1 with --quick)")
    parser.add_argument("--cli-runs", type=int, default=None,
                        help="timed command-line runs per runtime (default 5; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads, and OMP_NUM_THREADS "
                                                                  "of the command-line runs (default 2; 1 with "
                                                                  "--quick)")
    parser.add_argument("--no-speechbrain", action="store_true", help="leave out the SpeechBrain peer")
    parser.add_argument("--quick", action="store_true", help="short recordings, a tiny system (a smoke run)")
    args = parser.parse_args(argv)
    q = args.quick
    seconds = args.seconds if args.seconds is not None else (2.0 if q else 10.0)
    repeats = args.repeats if args.repeats is not None else (1 if q else 20)
    cli_runs = args.cli_runs if args.cli_runs is not None else (1 if q else 5)
    threads = args.threads if args.threads is not None else (1 if q else 2)
    warmup = 0 if q else 1
    torch.set_num_threads(threads)

    import spkver
    from spkver.api import onnx_cache_path
    from spkver.audio import read_audio
    from spkver.extract import Embedder
    from spkver.features import compute_features
    from spkver.onnx_export import OnnxEmbedder, export_onnx
    from spkver.system import MANIFEST, default_system_path

    print(f"load average before: {_loadavg()} (/proc/loadavg); torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        a, b = make_recordings(tmp / "audio", seconds)
        audio_s = sum(sf.info(str(p)).duration for p in (a, b))
        print(f"recordings: 2 synthetic speakers, {seconds:g} s each ({audio_s:g} s per trial), 16 kHz WAV")

        tic = time.perf_counter()
        if args.system is not None:
            system_path, what = Path(args.system), "given"
        elif not q and (default_system_path() / MANIFEST).is_file():
            system_path, what = default_system_path(), "the shipped default"
        else:
            size = "tiny" if q else "default"
            system_path = build_throwaway_system(tmp / "build", size, q)
            sz = SIZES[size]
            what = (f"built here in {time.perf_counter() - tic:.1f} s: randomly initialised x-vector "
                    f"({sz['channels']} channels, {sz['stats_channels']} statistics channels, {sz['embed_dim']}-dim "
                    f"embedding), PLDA back-end, calibration; random weights (speed does not depend on them)"
                    + ("" if q else "; no default system is installed"))
        with _env(SPKVER_CACHE=str(cache)):
            sv = spkver.load(system_path)
            extractors = sv.system.extractors
            onnx_ok, onnx_why, onnx_files = True, "", {}
            try:  # the exports the onnx runtime reads from its cache, made once here
                for x in extractors:
                    path = onnx_files[x.name] = onnx_cache_path(x)
                    if x.mc_samples:
                        raise ValueError(f"extractor {x.name!r} averages Monte Carlo samples")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with _quiet("torch.onnx"):
                        export_onnx(x.model, path, feat_dim=x.features.dim)
                sv_onnx = spkver.load(system_path, runtime="onnx")
            except (ImportError, ValueError) as err:
                onnx_ok, onnx_why = False, str(err).splitlines()[0]
        first = extractors[0]
        model = first.model
        print(f"system: {system_path} ({what})")
        print("  extractors: " + "; ".join(f"{x.name}: {x.features.dim}-dim features, {describe(x.model)}"
                                           for x in extractors))

        # 1. command line, cold start
        env = {**os.environ, "SPKVER_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
        print(f"1. command line, cold start to answer (fresh process, `spkver verify --system S a.wav b.wav "
              f"--json`), median of {cli_runs} run(s){' after one untimed run' if warmup else ''}:")
        t_cli, llr_cli = cli_time(system_path, a, b, "torch", env, cli_runs, warmup, tmp)
        print(f"  torch runtime: {t_cli:.3f} s (LLR {llr_cli:.4f})")
        if onnx_ok:
            t_cli_onnx, llr_cli_onnx = cli_time(system_path, a, b, "onnx", env, cli_runs, warmup, tmp)
            print(f"  onnx runtime:  {t_cli_onnx:.3f} s (LLR {llr_cli_onnx:.4f}); ratio torch / onnx time: "
                  f"{t_cli / t_cli_onnx:.2f}x")
        else:
            print(f"  onnx runtime:  unavailable ({onnx_why})")

        # 2. API, system loaded
        print(f"2. API `Verifier.score(a, b)`, system loaded, both files read and embedded per call; median of "
              f"{repeats} call(s):")
        t_api = _median_time(lambda: sv.score(str(a), str(b)), repeats, warmup=1)
        llr_api = sv.score(str(a), str(b))
        rtf = audio_s / t_api
        note = "" if seconds == 10.0 else f"; the target is for 10 s files, these are {seconds:g} s"
        print(f"  spkver score (torch): {1000 * t_api:.1f} ms, {rtf:.0f}x real time (LLR {llr_api:.4f}); target >= "
              f"{TARGET_RTF:.0f}x: {'met' if rtf >= TARGET_RTF else 'NOT met'}{note}")
        if onnx_ok:
            t_api_onnx = _median_time(lambda: sv_onnx.score(str(a), str(b)), repeats, warmup=1)
            print(f"  spkver score (onnx):  {1000 * t_api_onnx:.1f} ms, {audio_s / t_api_onnx:.0f}x real time "
                  f"(LLR {sv_onnx.score(str(a), str(b)):.4f}; onnxruntime with torch's thread count)")

        # 3. the peer: SpeechBrain's SpeakerRecognition on a local model folder of the same size
        have_sb = not args.no_speechbrain
        if have_sb:
            try:
                import speechbrain  # noqa: F401
            except ImportError:
                have_sb = False
                print("3. SpeechBrain peer: speechbrain is not installed")
        if have_sb:
            from speechbrain.inference.speaker import SpeakerRecognition

            sb_dir = speechbrain_folder(tmp / "sb_model", first.features.dim, model)
            with _quiet("speechbrain"):
                verifier = SpeakerRecognition.from_hparams(source=str(sb_dir), savedir=str(tmp / "sb_saved"),
                                                           run_opts={"device": "cpu"})
            t_sb = _median_time(lambda: verifier.verify_files(str(a), str(b)), repeats, warmup=1)
            n_sb = sum(p.numel() for p in verifier.mods.embedding_model.parameters())
            print(f"3. SpeechBrain SpeakerRecognition.verify_files(a, b), local model folder (Fbank "
                  f"{first.features.dim}, {type(verifier.mods.embedding_model).__name__} of the same architecture, "
                  f"{n_sb / 1e6:.2f} M params; cosine score), median of {repeats} call(s):")
            print(f"  SpeechBrain verify_files: {1000 * t_sb:.1f} ms, {audio_s / t_sb:.0f}x real time; "
                  f"spkver score (torch) {1000 * t_api:.1f} ms: ratio SpeechBrain / spkver time "
                  f"{t_sb / t_api:.2f}x")

        # 4. extractor network only: torch against onnxruntime on the same features
        feats = [compute_features(read_audio(p, sample_rate=first.features.sample_rate)[0], first.features).numpy()
                 for p in (a, b)]
        torch_embedder = Embedder(model, "cpu")
        frames = " + ".join(str(len(f)) for f in feats)
        print(f"4. extractor network only ({first.name}), same precomputed features ({frames} frames after VAD), "
              f"one call per file, median of {repeats} call(s):")
        t_torch = _median_time(lambda: [torch_embedder([f]) for f in feats], repeats, warmup=1)
        emb_torch = np.concatenate([torch_embedder([f])[0] for f in feats])
        if onnx_ok:
            onnx_embedder = OnnxEmbedder(onnx_files[first.name], num_threads=threads)
            t_onnx = _median_time(lambda: [onnx_embedder([f]) for f in feats], repeats, warmup=1)
            emb_onnx = np.concatenate([onnx_embedder([f])[0] for f in feats])
            diff = float(np.abs(emb_torch - emb_onnx).max())
            print(f"  torch Embedder: {1000 * t_torch:.2f} ms; onnxruntime OnnxEmbedder: {1000 * t_onnx:.2f} ms; "
                  f"ratio torch / onnx time: {t_torch / t_onnx:.2f}x; max |diff| = {diff:.2e} "
                  f"(embedding max |value| {float(np.abs(emb_torch).max()):.2f})")
        else:
            print(f"  torch Embedder: {1000 * t_torch:.2f} ms; onnxruntime: unavailable ({onnx_why})")
    print(f"load average after: {_loadavg()}")


if __name__ == "__main__":
    main()
