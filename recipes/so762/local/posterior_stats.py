"""Per-layer summary of a trained Bayesian x-vector's posterior: how far sigma moved from its initial value,
and the signal-to-noise ratio |mu| / sigma of the weights (Blundell et al. 2015, sec. 5.1).

usage: python local/posterior_stats.py EXP_OR_CHECKPOINT [...]

Prints one row per Bayesian layer: median and 90th percentile of sigma, median |mu|, median |mu| / sigma, and
the fraction of weights with |mu| / sigma < 1 (weights the posterior cannot tell from zero).
"""

from __future__ import annotations

import sys

import torch

from spkver.checkpoint import load_model
from spkver.nn.bayes import BayesianLayer


def layer_stats(model) -> list[tuple]:
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, BayesianLayer):
            sigma = module.weight_sigma.detach().flatten()
            mu = module.weight_mu.detach().abs().flatten()
            snr = mu / sigma
            rows.append((name, sigma.median().item(), sigma.quantile(0.9).item(), mu.median().item(),
                         snr.median().item(), (snr < 1).float().mean().item()))
    return rows


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for path in argv:
        try:
            model, _, _ = load_model(path)
        except (FileNotFoundError, ValueError) as err:
            print(f"posterior_stats.py: error: {err}", file=sys.stderr)
            return 2
        rows = layer_stats(model)
        if not rows:
            print(f"posterior_stats.py: error: {path} has no Bayesian layers", file=sys.stderr)
            return 2
        print(f"{path}\n| layer | median sigma | p90 sigma | median abs(mu) | median SNR | SNR < 1 |\n|---|---|---|---|---|---|")
        for name, med, p90, mu, snr, low in rows:
            print(f"| {name} | {med:.4f} | {p90:.4f} | {mu:.4f} | {snr:.1f} | {low:.1%} |")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
