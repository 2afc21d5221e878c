"""Estimators of spkver.nn.reparam against closed forms (z-tests and chi-square, seeded)."""

import math

import pytest
import torch
from scipy import stats

from spkver.nn.reparam import (RunningBaseline, gaussian_rsample, gumbel_max_sample, gumbel_softmax,
                               inverse_softplus, log_softplus, reinforce_surrogate, softplus_sigma,
                               straight_through)

MU, SIGMA, N = 2.0, 1.0, 20_000
Z = 5.0  # z-test threshold: a false alarm has probability ~6e-7 per check



def _per_sample_grads(estimator: str, generator: torch.Generator, baseline=None):
    """Per-sample gradients of f(z) = z^2, z ~ N(MU, SIGMA^2), w.r.t. (mu, sigma): shape (N,) each."""
    mu = torch.full((N,), MU, dtype=torch.float64, requires_grad=True)
    sigma = torch.full((N,), SIGMA, dtype=torch.float64, requires_grad=True)
    if estimator == "reparam":
        z = gaussian_rsample(mu, sigma, generator=generator)
        (z ** 2).sum().backward()
    else:
        with torch.no_grad():
            z = gaussian_rsample(mu, sigma, generator=generator)
        log_prob = torch.distributions.Normal(mu, sigma).log_prob(z)
        surrogate = reinforce_surrogate(log_prob, z ** 2, baseline)
        assert torch.allclose(surrogate.detach(), z ** 2, rtol=1e-12)  # forward value is f
        surrogate.sum().backward()
    return mu.grad, sigma.grad


def _z_test(samples: torch.Tensor, expected: float) -> None:
    stderr = samples.std().item() / math.sqrt(samples.numel())
    assert abs(samples.mean().item() - expected) < Z * stderr, (samples.mean().item(), expected, stderr)


@pytest.mark.parametrize("estimator", ["reparam", "reinforce"])
def test_gradient_of_second_moment_is_unbiased(estimator):
    # d/dmu E[z^2] = 2 mu, d/dsigma E[z^2] = 2 sigma, since E[z^2] = mu^2 + sigma^2
    g = torch.Generator().manual_seed(1)
    d_mu, d_sigma = _per_sample_grads(estimator, g)
    _z_test(d_mu, 2 * MU)
    _z_test(d_sigma, 2 * SIGMA)


def test_reinforce_variance_far_above_reparam():
    g = torch.Generator().manual_seed(2)
    rep_mu, rep_sigma = _per_sample_grads("reparam", g)
    sf_mu, sf_sigma = _per_sample_grads("reinforce", g)
    # closed form for the reparameterization estimator: Var[2z] = 4 sigma^2
    assert rep_mu.var().item() == pytest.approx(4 * SIGMA ** 2, rel=0.05)
    # closed forms at (mu, sigma) = (2, 1): REINFORCE variances 87 (mu) and 346 (sigma) against 4 and 24
    assert sf_mu.var().item() > 5 * rep_mu.var().item()
    assert sf_sigma.var().item() > 5 * rep_sigma.var().item()


def test_baseline_keeps_reinforce_unbiased_and_lowers_variance():
    g = torch.Generator().manual_seed(3)
    baseline = RunningBaseline(momentum=0.0)
    baseline.update(gaussian_rsample(torch.tensor(MU), torch.tensor(SIGMA), eps=torch.randn(2000, generator=g)) ** 2)
    assert baseline.value() == pytest.approx(MU ** 2 + SIGMA ** 2, rel=0.1)
    plain_mu, _ = _per_sample_grads("reinforce", torch.Generator().manual_seed(4))
    based_mu, based_sigma = _per_sample_grads("reinforce", torch.Generator().manual_seed(4), baseline.value())
    _z_test(based_mu, 2 * MU)
    _z_test(based_sigma, 2 * SIGMA)
    assert based_mu.var().item() < plain_mu.var().item()


def test_running_baseline_is_an_exponential_average():
    b = RunningBaseline(momentum=0.5)
    assert b.value() == 0.0
    b.update(torch.tensor([2.0, 4.0]))
    assert b.value() == 3.0
    b.update(torch.tensor([5.0]))
    assert b.value() == 4.0
    with pytest.raises(ValueError):
        RunningBaseline(momentum=1.0)


def test_reinforce_includes_direct_gradient_of_f():
    theta = torch.tensor(1.5, requires_grad=True)
    log_prob = torch.tensor([0.0])  # no score term: only the direct path of f remains
    reinforce_surrogate(log_prob, (theta ** 2).reshape(1)).sum().backward()
    assert theta.grad.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="shape"):
        reinforce_surrogate(torch.zeros(2), torch.zeros(3))


def test_gumbel_max_frequencies_match_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    g = torch.Generator().manual_seed(5)
    n = 20_000
    draws = gumbel_max_sample(logits.expand(n, -1), generator=g)
    assert draws.shape == (n,)
    observed = torch.bincount(draws, minlength=5).numpy()
    expected = torch.softmax(logits.double(), 0).numpy()
    expected = expected / expected.sum() * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_gumbel_softmax_approaches_one_hot_as_tau_shrinks():
    torch.manual_seed(6)
    logits = torch.randn(500, 6)
    peak = {tau: gumbel_softmax(logits, tau).max(dim=-1).values.mean().item() for tau in (5.0, 1.0, 0.1, 0.01)}
    assert peak[5.0] < peak[1.0] < peak[0.1] < peak[0.01]
    assert peak[0.01] > 0.99
    with pytest.raises(ValueError):
        gumbel_softmax(logits, 0.0)


def test_straight_through_forward_one_hot_backward_soft():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(8, 5, generator=torch.Generator().manual_seed(8))
    grads = {}
    samples = {}
    for hard in (True, False):
        leaf = logits.clone().requires_grad_()
        torch.manual_seed(9)  # same Gumbel noise for both calls
        y = gumbel_softmax(leaf, tau=0.5, hard=hard)
        (y * weights).sum().backward()
        grads[hard], samples[hard] = leaf.grad, y.detach()
    one_hot = torch.nn.functional.one_hot(samples[False].argmax(-1), 5).to(samples[True].dtype)
    assert torch.allclose(samples[True], one_hot, atol=1e-6)
    assert torch.allclose(grads[True], grads[False])


def test_straight_through_helper():
    soft = torch.tensor([0.2, 0.7, 0.1], requires_grad=True)
    hard = torch.tensor([0.0, 1.0, 0.0])
    y = straight_through(soft, hard)
    assert torch.allclose(y, hard)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(soft.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_softplus_helpers_are_stable():
    rho = torch.tensor([-200.0, -30.0, -5.0, 0.0, 5.0, 40.0], dtype=torch.float64)
    reference = torch.log1p(torch.exp(rho))
    reference[-1] = rho[-1]
    assert torch.allclose(softplus_sigma(rho), reference, rtol=1e-12, atol=0)
    assert torch.allclose(log_softplus(rho), torch.log(reference), rtol=1e-6)
    # far below the float32 underflow of softplus (about -104), log(softplus(rho)) = rho + log1p(-e^rho / 2) = rho
    deep = torch.tensor([-1e4, -120.0, -20.0])
    assert torch.allclose(log_softplus(deep), deep, rtol=1e-6, atol=0)
    for s in (1e-6, 0.01, 1.0, 30.0):
        assert softplus_sigma(inverse_softplus(s)).item() == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError):
        inverse_softplus(0.0)


def test_gaussian_rsample_with_fixed_eps():
    mu, sigma, eps = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1]), torch.tensor([2.0, -1.0])
    assert torch.allclose(gaussian_rsample(mu, sigma, eps), torch.tensor([2.0, 1.9]))
