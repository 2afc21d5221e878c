"""Gradient variance of a Bayesian layer's means vs batch size, per sampling mode.

For a fixed minibatch of B examples, the gradient of the mean squared error w.r.t. ``weight_mu`` is
drawn ``--draws`` times with fresh weight noise; its variance (averaged over elements) is the noise
the sampling mode adds. Bayes by Backprop shares one weight sample over the batch, so this variance
levels off at a floor that no batch size removes (``a + b/B``: the per-example part averages out,
the shared-sample part does not); local reparameterization (Kingma et al. 2015) and Flipout (Wen et
al. 2018) draw per-example noise, so it falls like 1/B (the ``var*B`` column stays flat).

Run: ``python benchmarks/bench_gradvar.py [--threads 2] [--draws 200] [--quick]``; ``--quick`` uses batch sizes
16 and 256 with 50 draws on one thread (a smoke run; the ratios are then rough).
"""

from __future__ import annotations

import argparse

import torch

from spkver.nn.bayes import SAMPLING_MODES, BayesLinear


def noise_variance(mode: str, batch: int, draws: int, in_features: int, out_features: int,
                   sigma_rho: float, seed: int) -> float:
    """Mean over elements of Var[d loss / d weight_mu] across weight-noise draws, data fixed."""
    torch.manual_seed(seed)
    layer = BayesLinear(in_features, out_features, sampling=mode, init_rho=sigma_rho)
    layer.generator = torch.Generator().manual_seed(seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(batch, in_features, generator=g)
    target = x @ torch.randn(in_features, out_features, generator=g) / in_features ** 0.5
    grads = []
    for _ in range(draws):
        layer.weight_mu.grad = None
        ((layer(x) - target) ** 2).mean().backward()
        grads.append(layer.weight_mu.grad.flatten().clone())
    return torch.stack(grads).var(0).mean().item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default 2; 1 with --quick)")
    parser.add_argument("--draws", type=int, default=None, help="default 200 (50 with --quick)")
    parser.add_argument("--batches", type=int, nargs="*", default=None,
                        help="default 1 4 16 64 256 1024 (16 256 with --quick)")
    parser.add_argument("--in-features", type=int, default=64)
    parser.add_argument("--out-features", type=int, default=32)
    parser.add_argument("--init-rho", type=float, default=-2.0, help="sigma = softplus(rho)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two batch sizes, few draws (a smoke run)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    if args.draws is None:
        args.draws = 50 if args.quick else 200
    if not args.batches:
        args.batches = [16, 256] if args.quick else [1, 4, 16, 64, 256, 1024]
    if args.draws < 2 or min(args.batches) < 1 or args.threads < 1:
        parser.error("need --draws >= 2, batch sizes >= 1, --threads >= 1")
    torch.set_num_threads(args.threads)
    print(f"BayesLinear({args.in_features}, {args.out_features}), sigma = softplus({args.init_rho}), "
          f"{args.draws} noise draws per cell, data fixed per batch size")
    header = f"{'batch':>6}" + "".join(f"{m + ' var':>14}{m + ' var*B':>14}" for m in SAMPLING_MODES)
    print(header)
    results = {}
    for batch in args.batches:
        row = f"{batch:>6}"
        for mode in SAMPLING_MODES:
            v = noise_variance(mode, batch, args.draws, args.in_features, args.out_features,
                               args.init_rho, args.seed)
            results[mode, batch] = v
            row += f"{v:14.3e}{v * batch:14.3e}"
        print(row, flush=True)
    if len(args.batches) > 1:
        small, large = args.batches[-2], args.batches[-1]
        print(f"\nvariance ratio from batch {small} to {large} (a 1/B law gives {small / large:.3g}; a floor gives 1):")
        for mode in SAMPLING_MODES:
            print(f"  {mode:<8} {results[mode, large] / results[mode, small]:.3g}")

if __name__ == "__main__":
    main()
