"""Training-step and extraction speed of the x-vector models against SpeechBrain's.

Train step = zero_grad + forward + loss + backward on one batch (default 64 x 200 frames x 30 features,
1211 speakers), for SpeechBrain ``Xvector`` + ``Classifier`` (the peer), our baseline x-vector, and the
Bayesian x-vector with every layer Bayesian in bbb, lrt and flipout modes. ECAPA-TDNN on the same batch
size with 80 features (default 512 channels, SpeechBrain's configuration): SpeechBrain's ``ECAPA_TDNN`` +
``Classifier`` + AAM loss (``speechbrain_ecapa``), ours (``ecapa_tdnn``: the same network, cosine classifier, the
AAM objective) and the Bayesian ECAPA with every layer Bayesian (bbb). Extraction = eval-mode
embedding of a batch (peer: ``Xvector.forward``; ours: ``XVector.extract``, BatchNorm folded).

Targets: baseline / peer <= 1.05; bbb / baseline <= 1.5; lrt, flipout / baseline <= 2.5; ecapa /
speechbrain_ecapa <= 1.05; ecapa_bbb / ecapa <= 1.5; peer / ours >= 1.5 for extraction.
Run: ``python benchmarks/bench_train_step.py [--threads 2] [--device cuda --bf16]``;
on a busy machine ``--threads 1 --clock cpu`` gives steadier figures. ``--quick``: batch 4 x 50 frames, 50
speakers, ECAPA at 32 channels, one thread, one warm-up and two runs per system, extraction of one 50-frame
utterance (a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from spkver.nn import XVectorObjective, build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _timed(fn, device, repeats: int, warmup: int) -> list:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = _clock()
        fn()
        _sync(device)
        times.append(_clock() - t0)
    return times


def _peer(args, device):
    from speechbrain.lobes.models.Xvector import Classifier, Xvector
    xvector = Xvector(in_channels=args.feat_dim).to(device)
    classifier = Classifier(input_shape=(2, 1, 512), lin_blocks=1, lin_neurons=512,
                            out_neurons=args.classes).to(device)
    return xvector, classifier


def _train_steps(args, device, x, labels) -> dict:
    steps = {}
    xvector, classifier = _peer(args, device)
    peer_params = list(xvector.parameters()) + list(classifier.parameters())

    def peer_step():
        for p in peer_params:
            p.grad = None
        with _autocast(device, args.bf16):
            log_probs = classifier(xvector(x)).squeeze(1)
        F.nll_loss(log_probs.float(), labels).backward()

    steps["speechbrain"] = peer_step
    objective = XVectorObjective(n_train=100_000)
    variants = {"baseline": ("xvector", {}), "bbb": ("bayes_xvector", {"sampling": "bbb"}),
                "lrt": ("bayes_xvector", {"sampling": "lrt"}),
                "flipout": ("bayes_xvector", {"sampling": "flipout"})}
    for label, (name, kw) in variants.items():
        model = build_model(name, feat_dim=args.feat_dim, num_classes=args.classes, **kw).to(device)

        def step(model=model):
            model.zero_grad(set_to_none=True)
            with _autocast(device, args.bf16):
                logits = model(x)
            loss, _ = objective(model, logits, labels, step=1)
            loss.backward()

        steps[label] = step
    steps.update(_ecapa_steps(args, device, labels))
    return steps


ECAPA_FEATS = 80


def _ecapa_steps(args, device, labels) -> dict:
    """SpeechBrain's ECAPA training step (its ECAPA_TDNN, Classifier, LogSoftmaxWrapper(AdditiveAngularMargin))
    and ours on the same configuration and batch, deterministic and Bayesian (bbb)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    c = args.ecapa_channels
    arch = dict(channels=c, attention_channels=max(8, c // 4), embed_dim=192 if c >= 256 else 16)
    x = torch.randn(args.batch, args.frames, ECAPA_FEATS, device=device)
    peer = ECAPA_TDNN(ECAPA_FEATS, lin_neurons=arch["embed_dim"], channels=[c] * 4 + [3 * c],
                      attention_channels=arch["attention_channels"]).to(device)
    head = Classifier(arch["embed_dim"], out_neurons=args.classes).to(device)
    aam = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30.0))
    peer_params = list(peer.parameters()) + list(head.parameters())

    def peer_step():
        for p in peer_params:
            p.grad = None
        with _autocast(device, args.bf16):
            cosines = head(peer(x))
        aam(cosines.float(), labels.unsqueeze(1)).backward()

    steps = {"speechbrain_ecapa": peer_step}
    objective = XVectorObjective(n_train=100_000, loss="aam", margin=0.2, scale=30.0)
    for label, name in (("ecapa", "ecapa_tdnn"), ("ecapa_bbb", "bayes_ecapa_tdnn")):
        model = build_model(name, feat_dim=ECAPA_FEATS, num_classes=args.classes, classifier="cosine",
                            **arch).to(device)

        def step(model=model):
            model.zero_grad(set_to_none=True)
            with _autocast(device, args.bf16):
                logits = model(x)
            loss, _ = objective(model, logits.float(), labels, step=1)
            loss.backward()

        steps[label] = step
    return steps


def _extract_calls(args, device) -> dict:
    xvector, _ = _peer(args, device)
    xvector.eval()
    model = build_model("xvector", feat_dim=args.feat_dim, num_classes=args.classes).to(device).eval()
    calls = {}
    for batch in args.extract_batches:
        feats = torch.randn(batch, args.extract_frames, args.feat_dim, device=device)

        def peer(feats=feats):
            with torch.inference_mode(), _autocast(device, args.bf16):
                xvector(feats)

        def ours(feats=feats):
            with _autocast(device, args.bf16):
                model.extract(feats)

        calls[batch] = (peer, ours)
    return calls


FULL = {"batch": 64, "frames": 200, "classes": 1211, "repeats": 5, "warmup": 2, "extract_batches": [1, 16],
        "extract_frames": 300, "ecapa_channels": 512}
QUICK = {"batch": 4, "frames": 50, "classes": 50, "repeats": 2, "warmup": 1, "extract_batches": [1],
         "extract_frames": 50, "ecapa_channels": 32}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default 2; 1 with --quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--batch", type=int, default=None, help="default 64 (4 with --quick)")
    parser.add_argument("--frames", type=int, default=None, help="default 200 (50 with --quick)")
    parser.add_argument("--feat-dim", type=int, default=30)
    parser.add_argument("--classes", type=int, default=None, help="default 1211 (50 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="default 2 (1 with --quick)")
    parser.add_argument("--extract-batches", type=int, nargs="*", default=None,
                        help="default 1 16 (1 with --quick)")
    parser.add_argument("--extract-frames", type=int, default=None, help="default 300 (50 with --quick)")
    parser.add_argument("--ecapa-channels", type=int, default=None,
                        help="ECAPA-TDNN channels, a multiple of 8 (default 512; 32 with --quick)")
    parser.add_argument("--clock", choices=sorted(_CLOCK), default="wall",
                        help="wall time, or process CPU time (with --threads 1: robust to other load)")
    parser.add_argument("--quick", action="store_true", help="tiny batches, few runs (a smoke run)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) in (None, []):
            setattr(args, name, value)
    global _clock
    _clock = _CLOCK[args.clock]
    if args.threads < 1 or args.batch < 2 or args.frames < 15 or args.repeats < 1 or args.ecapa_channels % 8:
        parser.error("need --threads >= 1, --batch >= 2, --frames >= 15, --repeats >= 1, --ecapa-channels a "
                     "multiple of 8")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} bf16={args.bf16} clock={args.clock} "
          f"torch={torch.__version__}")

    x = torch.randn(args.batch, args.frames, args.feat_dim, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    steps = _train_steps(args, device, x, labels)
    times = {label: [] for label in steps}
    for _ in range(args.repeats):  # interleave the systems so load changes hit all of them alike
        for label, fn in steps.items():
            times[label] += _timed(fn, device, 1, args.warmup if not times[label] else 0)
    best = {label: min(t) for label, t in times.items()}
    print(f"\ntrain step, batch {args.batch} x {args.frames} frames x {args.feat_dim}, {args.classes} speakers "
          f"({args.repeats} runs each; ratios of the fastest run, the least disturbed by other load)")
    print(f"(ECAPA-TDNN rows: {args.ecapa_channels} channels, {ECAPA_FEATS} features, AAM loss)")
    print(f"{'system':<17} {'min ms':>9} {'median ms':>10} {'frames/s':>10}  ratio")
    targets = {"baseline": ("speechbrain", 1.05), "bbb": ("baseline", 1.5), "lrt": ("baseline", 2.5),
               "flipout": ("baseline", 2.5), "ecapa": ("speechbrain_ecapa", 1.05), "ecapa_bbb": ("ecapa", 1.5)}
    for label, value in best.items():
        ref = targets.get(label)
        ratio = "" if ref is None else f"{value / best[ref[0]]:.2f} vs {ref[0]} (target <= {ref[1]})"
        print(f"{label:<17} {value * 1e3:9.1f} {statistics.median(times[label]) * 1e3:10.1f} "
              f"{args.batch * args.frames / value:10.0f}  {ratio}")

    print(f"\nextraction, {args.extract_frames} frames, eval mode ({args.repeats} runs each, fastest)")
    print(f"{'batch':<6} {'speechbrain ms':>15} {'ours ms':>9}  speed-up (target >= 1.5)  ours frames/s")
    for batch, (peer, ours) in _extract_calls(args, device).items():
        t_peer, t_ours = [], []
        for _ in range(args.repeats):
            t_peer += _timed(peer, device, 1, 0 if t_peer else args.warmup)
            t_ours += _timed(ours, device, 1, 0 if t_ours else args.warmup)
        p, o = min(t_peer), min(t_ours)
        print(f"{batch:<6} {p * 1e3:15.1f} {o * 1e3:9.1f}  {p / o:8.2f}  {batch * args.extract_frames / o:18.0f}")


if __name__ == "__main__":
    main()
