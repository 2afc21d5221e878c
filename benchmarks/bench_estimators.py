"""Variance of gradient estimators of d/d(mu, sigma) E_{z ~ N(mu, sigma^2)}[f(z)]: score function
(REINFORCE, with and without a running-mean baseline) against the reparameterization trick.

Each cell draws ``--samples`` single-sample estimates; the table prints the mean (all estimators are
unbiased, so the means agree up to Monte Carlo error) and the variance ratio REINFORCE / reparam.
Run: ``python benchmarks/bench_estimators.py [--samples 200000] [--threads 2] [--quick]``; ``--quick`` draws
5000 estimates per cell on one thread (a smoke run; the ratios are then rough).
"""

from __future__ import annotations

import argparse

import torch

from spkver.nn.reparam import RunningBaseline, gaussian_rsample, reinforce_surrogate

FUNCTIONS = {
    "z^2": lambda z: z ** 2,
    "sin(3z)": lambda z: torch.sin(3 * z),
    "softplus(z)": torch.nn.functional.softplus,
    "(z-1)^4": lambda z: (z - 1) ** 4,
}


def per_sample_grads(f, mu: float, sigma: float, n: int, estimator: str, generator, baseline=None):
    """(n,) single-sample estimates of the gradient w.r.t. mu and sigma."""
    mu_t = torch.full((n,), mu, dtype=torch.float64, requires_grad=True)
    sigma_t = torch.full((n,), sigma, dtype=torch.float64, requires_grad=True)
    if estimator == "reparam":
        f(gaussian_rsample(mu_t, sigma_t, generator=generator)).sum().backward()
    else:
        with torch.no_grad():
            z = gaussian_rsample(mu_t, sigma_t, generator=generator)
        log_prob = torch.distributions.Normal(mu_t, sigma_t).log_prob(z)
        reinforce_surrogate(log_prob, f(z), baseline).sum().backward()
    return mu_t.grad, sigma_t.grad


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=None, help="default 200,000 (5,000 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default 2; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="few samples per cell (a smoke run)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    if args.samples is None:
        args.samples = 5_000 if args.quick else 200_000
    if args.samples < 100 or args.threads < 1:
        parser.error("need --samples >= 100 and --threads >= 1")
    torch.set_num_threads(args.threads)
    print(f"{args.samples} single-sample estimates per cell; ratio = Var[REINFORCE] / Var[reparam]")
    print(f"{'f':<12} {'mu':>5} {'sigma':>5} | {'param':<5} {'mean rep':>10} {'mean SF':>10} "
          f"{'var rep':>10} {'var SF':>10} {'ratio':>8} {'ratio+baseline':>15}")
    for name, f in FUNCTIONS.items():
        for mu, sigma in ((0.0, 1.0), (2.0, 1.0), (2.0, 0.2)):
            g = torch.Generator().manual_seed(args.seed)
            rep = per_sample_grads(f, mu, sigma, args.samples, "reparam", g)
            sf = per_sample_grads(f, mu, sigma, args.samples, "reinforce", g)
            baseline = RunningBaseline(momentum=0.0)  # baseline from an independent pilot batch
            with torch.no_grad():
                baseline.update(f(gaussian_rsample(torch.tensor(mu), torch.tensor(sigma),
                                                   eps=torch.randn(1000, generator=g, dtype=torch.float64))))
            sfb = per_sample_grads(f, mu, sigma, args.samples, "reinforce", g, baseline.value())
            for i, param in enumerate(("mu", "sigma")):
                vr, vs, vb = rep[i].var().item(), sf[i].var().item(), sfb[i].var().item()
                print(f"{name:<12} {mu:5.1f} {sigma:5.1f} | {param:<5} {rep[i].mean().item():10.4f} "
                      f"{sf[i].mean().item():10.4f} {vr:10.3e} {vs:10.3e} {vs / max(vr, 1e-300):8.1f} "
                      f"{vb / max(vr, 1e-300):15.1f}", flush=True)


if __name__ == "__main__":
    main()
