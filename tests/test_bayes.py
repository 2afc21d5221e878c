"""Bayesian layers: Blundell et al.'s eqs. (3)-(4), sampling modes against explicit weight sampling,
KL against Monte Carlo, gradcheck, sigma -> 0 and conversions."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spkver.nn.bayes import (SAMPLING_MODES, BayesConv1d, BayesLinear, GaussianPrior, ScaleMixturePrior,
                             make_prior, sampling, total_kl)

Z = 5.0



def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear(mode="bbb", prior=None, rho=-1.0, seed=0):
    torch.manual_seed(seed)
    layer = BayesLinear(4, 3, sampling=mode, prior=prior, init_rho=rho).double()
    with torch.no_grad():
        layer.weight_rho.add_(0.3 * torch.randn_like(layer.weight_rho))
        layer.bias_rho.add_(0.3 * torch.randn_like(layer.bias_rho))
    return layer


def _conv(mode="bbb", prior=None, rho=-1.0, seed=0):
    torch.manual_seed(seed)
    return BayesConv1d(3, 2, kernel_size=3, dilation=2, sampling=mode, prior=prior, init_rho=rho).double()


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradients_equal_eqs_3_4_with_gaussian_kl(kind):
    """d_mu = df/dw + df/dmu, d_rho = df/dw * eps / (1 + exp(-rho)) + df/drho, f = data term + KL."""
    s_prior = 0.5
    layer = (_linear if kind == "linear" else _conv)(prior=GaussianPrior(s_prior))
    x = torch.randn((5, 4) if kind == "linear" else (2, 3, 9), generator=_gen(1), dtype=torch.float64)
    target = torch.randn(layer(x, layer.draw_noise(x)).shape, generator=_gen(2), dtype=torch.float64)
    layer.generator = _gen(3)
    noise = layer.draw_noise(x)
    f = ((layer(x, noise) - target) ** 2).sum() + layer.kl()
    f.backward()

    affine = F.linear if kind == "linear" else (lambda inp, w, b: F.conv1d(inp, w, b, dilation=2))
    with torch.no_grad():
        pairs = {"weight": (layer.weight_mu, layer.weight_rho), "bias": (layer.bias_mu, layer.bias_rho)}
        leaves = {k: (mu + F.softplus(rho) * noise[k]).requires_grad_() for k, (mu, rho) in pairs.items()}
    ((affine(x, leaves["weight"], leaves["bias"]) - target) ** 2).sum().backward()
    for key, (mu, rho) in pairs.items():
        sigma = F.softplus(rho.detach())
        df_dw = leaves[key].grad
        dkl_dmu = mu.detach() / s_prior ** 2  # closed-form KL partials
        dkl_drho = (sigma / s_prior ** 2 - 1.0 / sigma) / (1.0 + torch.exp(-rho.detach()))
        assert torch.allclose(mu.grad, df_dw + dkl_dmu, rtol=1e-10, atol=1e-12), key
        expected_rho = df_dw * noise[key] / (1.0 + torch.exp(-rho.detach())) + dkl_drho
        assert torch.allclose(rho.grad, expected_rho, rtol=1e-10, atol=1e-12), key


def test_gradients_equal_eqs_3_4_with_monte_carlo_kl():
    """Blundell's f(w, theta) = log q(w|theta) - log P(w) - log P(D|w) with the scale-mixture prior."""
    prior = ScaleMixturePrior(0.5, 1.0, math.exp(-3))
    layer = _linear(prior=prior)
    x = torch.randn(5, 4, generator=_gen(4), dtype=torch.float64)
    noise = layer.draw_noise(x)
    f = layer(x, noise).sin().sum() + layer.kl()  # kl() reuses the weight sample of this pass
    f.backward()
    with torch.no_grad():
        leaves = {k: (getattr(layer, f"{k}_mu") + F.softplus(getattr(layer, f"{k}_rho")) * noise[k]).requires_grad_()
                  for k in ("weight", "bias")}
    f_hand = F.linear(x, leaves["weight"], leaves["bias"]).sin().sum()
    for key, w in leaves.items():
        mu, rho = getattr(layer, f"{key}_mu").detach(), getattr(layer, f"{key}_rho").detach()
        f_hand = f_hand + torch.distributions.Normal(mu, F.softplus(rho)).log_prob(w).sum() - prior.log_prob(w)
    f_hand.backward()  # df/dw for each sampled tensor, at fixed (mu, rho)
    for key, w in leaves.items():
        mu, rho = getattr(layer, f"{key}_mu"), getattr(layer, f"{key}_rho")
        sigma, w = F.softplus(rho.detach()), w.detach()
        df_dmu = (w - mu.detach()) / sigma ** 2  # partials of log q(w | mu, sigma) at fixed w
        df_dsigma = -1.0 / sigma + (w - mu.detach()) ** 2 / sigma ** 3
        sig = 1.0 / (1.0 + torch.exp(-rho.detach()))
        df_dw = leaves[key].grad
        assert torch.allclose(mu.grad, df_dw + df_dmu, rtol=1e-9, atol=1e-12), key
        assert torch.allclose(rho.grad, df_dw * noise[key] * sig + df_dsigma * sig, rtol=1e-9, atol=1e-12), key


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_sigma_to_zero_reproduces_deterministic_layer(mode):
    x = torch.randn(6, 4, generator=_gen(5))
    layer = BayesLinear(4, 3, sampling=mode, init_rho=-1e4)
    assert layer.training
    assert torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))
    conv = BayesConv1d(4, 3, 3, dilation=3, sampling=mode, init_rho=-1e4)
    xc = torch.randn(2, 4, 12, generator=_gen(6))
    assert torch.equal(conv(xc), F.conv1d(xc, conv.weight_mu, conv.bias_mu, dilation=3))


def _explicit_moments(layer, x):
    """Closed-form mean and variance of the output under q: x mu_W + mu_b, x^2 sigma_W^2 + sigma_b^2."""
    with torch.no_grad():
        mean = layer._affine(x, layer.weight_mu, layer.bias_mu)
        var = layer._affine(x * x, layer.weight_sigma ** 2, layer.bias_sigma ** 2)
    return mean, var


@pytest.mark.parametrize("mode", ["lrt", "flipout", "bbb"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_output_moments_match_weight_sampling(mode, kind):
    n = 4000
    layer = (_linear if kind == "linear" else _conv)(mode=mode, seed=7)
    layer.generator = _gen(8)
    x = torch.randn((1, 4) if kind == "linear" else (1, 3, 7), generator=_gen(9), dtype=torch.float64)
    mean, var = _explicit_moments(layer, x)
    with torch.no_grad():
        # explicit weight sampling: one weight draw per output sample
        w = layer.weight_mu + layer.weight_sigma * torch.randn((n,) + layer.weight_mu.shape, generator=_gen(10),
                                                               dtype=torch.float64)
        b = layer.bias_mu + layer.bias_sigma * torch.randn(n, *layer.bias_mu.shape, generator=_gen(11),
                                                            dtype=torch.float64)
        if kind == "linear":
            explicit = torch.einsum("noi,bi->nbo", w, x) + b[:, None, :]
        else:  # (batch, in, out_frames, kernel) patches of the dilated context
            patches = x.unfold(2, 2 * (layer.kernel_size - 1) + 1, 1)[..., ::2]
            explicit = torch.einsum("noik,bitk->nbot", w, patches) + b[:, None, :, None]
        # the layer: lrt in one batch of n copies (independent per example); flipout and bbb share one
        # weight perturbation per pass, so use batches of 8 over n / 8 passes
        if mode == "lrt":
            drawn = layer(x.expand(n, *x.shape[1:]))
        else:
            drawn = torch.cat([layer(x.expand(8, *x.shape[1:])) for _ in range(n // 8)])
    for samples in (explicit, drawn.reshape(explicit.shape)):
        m, v = samples.mean(0), samples.var(0)
        assert (torch.abs(m - mean) < Z * torch.sqrt(var / n) * (3 if samples is drawn else 1)).all()
        assert torch.allclose(v, var, rtol=0.2)


def test_flipout_decorrelates_examples_while_bbb_does_not():
    passes = 2000
    for mode, expect_corr in (("flipout", 0.0), ("bbb", 1.0)):
        layer = BayesLinear(4, 3, sampling=mode, init_rho=-1.0)
        layer.generator = _gen(12)
        x = torch.randn(1, 4, generator=_gen(13)).expand(2, 4)
        with torch.no_grad():
            mean = F.linear(x, layer.weight_mu, layer.bias_mu)
            d = torch.stack([layer(x) - mean for _ in range(passes)])  # (passes, 2, 3)
        corr = torch.stack([torch.corrcoef(d[:, :, j].T)[0, 1] for j in range(3)])
        assert torch.allclose(corr, torch.full_like(corr, expect_corr), atol=Z / math.sqrt(passes)), mode


def test_closed_form_kl_equals_monte_carlo():
    s_prior, n = 0.7, 20_000
    layer = _linear(prior=GaussianPrior(s_prior))
    with torch.no_grad():
        closed = layer.kl().item()
        mc = torch.zeros(n, dtype=torch.float64)
        for mu, rho in ((layer.weight_mu, layer.weight_rho), (layer.bias_mu, layer.bias_rho)):
            q = torch.distributions.Normal(mu, F.softplus(rho))
            w = q.sample((n,))
            p = torch.distributions.Normal(0.0, s_prior)
            mc += (q.log_prob(w) - p.log_prob(w)).flatten(1).sum(1)
    assert abs(mc.mean().item() - closed) < Z * mc.std().item() / math.sqrt(n)


def test_monte_carlo_kl_of_degenerate_mixture_matches_closed_form():
    n = 3000
    gaussian = _linear(prior=GaussianPrior(0.8))
    mixture = _linear(prior=ScaleMixturePrior(pi=1.0, sigma1=0.8), mode="lrt")  # fresh sample per kl()
    mixture.generator = _gen(14)
    with torch.no_grad():
        draws = torch.stack([mixture.kl() for _ in range(n)])
        closed = gaussian.kl().item()
    assert abs(draws.mean().item() - closed) < Z * draws.std().item() / math.sqrt(n)


@pytest.mark.parametrize("mode", SAMPLING_MODES)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradcheck_with_fixed_noise(mode, kind):
    layer = (_linear if kind == "linear" else _conv)(mode=mode, prior=ScaleMixturePrior())
    x = torch.randn((3, 4) if kind == "linear" else (2, 3, 8), generator=_gen(15), dtype=torch.float64)
    noise = layer.draw_noise(x)
    names = ["weight_mu", "weight_rho", "bias_mu", "bias_rho"]

    def fn(wm, wr, bm, br, inp):
        params = dict(zip(names, (wm, wr, bm, br)))
        return torch.func.functional_call(layer, params, (inp,), {"noise": noise})

    inputs = tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names) + (x.requires_grad_(),)
    assert torch.autograd.gradcheck(fn, inputs)
    prior = GaussianPrior(0.3)
    assert torch.autograd.gradcheck(prior.kl, inputs[:2])


def test_eval_uses_posterior_mean_and_sampling_context_draws():
    layer = BayesLinear(4, 3, init_rho=-2.0)
    x = torch.randn(5, 4)
    layer.eval()
    assert torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))
    with sampling(layer, True):
        assert not torch.equal(layer(x), layer(x))
    assert layer.sample is None and torch.equal(layer(x), layer(x))
    layer.train()
    with sampling(layer, False):
        assert torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))


def test_generator_makes_sampling_reproducible():
    layer = BayesConv1d(3, 4, 3, sampling="flipout", init_rho=-2.0)
    x = torch.randn(2, 3, 10)
    outs = []
    for _ in range(2):
        layer.generator = _gen(16)
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_from_deterministic(mode):
    torch.manual_seed(17)
    for det, cls, x in ((nn.Linear(6, 4), BayesLinear, torch.randn(3, 6)),
                        (nn.Conv1d(6, 4, 3, dilation=2), BayesConv1d, torch.randn(3, 6, 11))):
        bayes = cls.from_deterministic(det, init_sigma=1e-3, sampling=mode).eval()
        assert torch.equal(bayes(x), det(x))
        assert torch.allclose(bayes.weight_sigma, torch.full_like(bayes.weight_sigma, 1e-3))
        bayes.train()
        diff = (bayes(x) - det(x)).abs()
        assert 0 < diff.max() < 0.05
    with pytest.raises(TypeError):
        BayesLinear.from_deterministic(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError):
        BayesConv1d.from_deterministic(nn.Conv1d(2, 2, 3, stride=2))


def test_total_kl_and_input_validation():
    model = nn.Sequential(BayesLinear(4, 3), nn.ReLU(), BayesLinear(3, 2))
    assert torch.allclose(total_kl(model), model[0].kl() + model[2].kl())
    assert total_kl(nn.Linear(2, 2)).item() == 0.0
    with pytest.raises(ValueError, match="sampling"):
        BayesLinear(2, 2, sampling="mc")
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 4\)"):
        BayesLinear(4, 3)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="frames"):
        BayesConv1d(2, 2, 3)(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="receptive field"):
        BayesConv1d(2, 2, 3, dilation=3)(torch.randn(1, 2, 6))
    with pytest.raises(ValueError, match="valid names"):
        make_prior("laplace")
    with pytest.raises(ValueError):
        GaussianPrior(0.0)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_lrt_backward_equals_autograd_of_the_formula(kind):
    """The hand-written lrt backward against autograd through mean + sqrt(var) * eps, 3-D linear input
    included, and under bf16 autocast (gradients in the parameters' dtype, close to float32's)."""
    layer = BayesLinear(4, 3, sampling="lrt", init_rho=-1.0) if kind == "linear" else \
        BayesConv1d(3, 2, kernel_size=3, dilation=2, padding=1, sampling="lrt", init_rho=-1.0)
    x = torch.randn((2, 5, 4) if kind == "linear" else (2, 3, 8), generator=_gen(18), requires_grad=True)
    noise = layer.draw_noise(x)
    params = [layer.weight_mu, layer.weight_rho, layer.bias_mu, layer.bias_rho, x]
    weights = torch.randn(layer._output_shape(x), generator=_gen(19))

    def reference():
        mean = layer._affine(x, layer.weight_mu, layer.bias_mu)
        var = layer._affine(x.square(), layer.weight_sigma.square(), layer.bias_sigma.square())
        return mean + var.sqrt() * noise["out"]

    expected = torch.autograd.grad((reference() * weights).sum(), params)
    out = layer(x, noise)
    assert torch.allclose(out, reference(), atol=1e-6)
    got = torch.autograd.grad((out * weights).sum(), params)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, noise)
    assert out.dtype == torch.bfloat16
    got = torch.autograd.grad((out.float() * weights).sum(), params)
    for g, e, p in zip(got, expected, params):
        assert g.dtype == p.dtype and torch.allclose(g, e, rtol=0.05, atol=0.05 * e.abs().max().item())
