"""Training objective: KL scale and warm-up, and a tiny model that must learn a tiny task."""

import pytest
import torch

from spkver.nn import XVectorObjective, build_model

TINY = dict(feat_dim=8, num_classes=4, channels=16, stats_channels=16, embed_dim=8)



def _task(seed=0, per_class=6, frames=24):
    """Four 'speakers', each a fixed random mean feature vector plus frame noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(4, 8, generator=g)
    labels = torch.arange(4).repeat_interleave(per_class)
    x = centres[labels][:, None, :] + torch.randn(len(labels), frames, 8, generator=g)
    return x, labels


def test_kl_term_scale_and_warmup():
    torch.manual_seed(0)
    model = build_model("bayes_xvector", **TINY)
    objective = XVectorObjective(n_train=500, kl_weight=0.5, kl_warmup_steps=10)
    x, labels = _task()
    logits = model(x)
    for step, w in ((0, 0.0), (4, 0.2), (10, 0.5), (1000, 0.5)):
        loss, stats = objective(model, logits, labels, step)
        assert stats["kl_weight"] == pytest.approx(w)
        ce = torch.nn.functional.cross_entropy(logits, labels)
        kl = model.kl()  # closed form: deterministic
        assert stats["ce"] == pytest.approx(ce.item(), rel=1e-6)
        assert stats["kl"] == pytest.approx(kl.item(), rel=1e-6)
        assert (loss - ce).item() == pytest.approx(w * kl.item() / 500, rel=1e-5, abs=1e-7)
    assert stats["acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    # the gradient reaching sigma is that of CE + w KL / N (here w = 0.5, N = 500), not that of CE alone
    rho = model.frame_1.weight_rho
    ce = torch.nn.functional.cross_entropy(logits, labels)
    (grad_ce,) = torch.autograd.grad(ce, rho, retain_graph=True)
    (grad_total,) = torch.autograd.grad(ce + 0.5 * model.kl() / 500, rho, retain_graph=True)
    loss.backward()
    assert torch.allclose(rho.grad, grad_total, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(rho.grad, grad_ce, rtol=1e-3, atol=0)


def test_baseline_loss_is_cross_entropy():
    model = build_model("xvector", **TINY)
    x, labels = _task()
    logits = model(x)
    loss, stats = XVectorObjective(n_train=10)(model, logits, labels, step=3)
    assert stats["kl"] == 0.0
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_objective_validates_inputs():
    model = build_model("xvector", **TINY)
    logits = torch.randn(3, 4)
    with pytest.raises(ValueError, match="label 4 of example 2"):
        XVectorObjective(10)(model, logits, torch.tensor([0, 1, 4]), 0)
    with pytest.raises(ValueError, match="labels shape"):
        XVectorObjective(10)(model, logits, torch.tensor([0, 1]), 0)
    with pytest.raises(ValueError, match="n_train"):
        XVectorObjective(0)
    with pytest.raises(ValueError, match="step"):
        XVectorObjective(10).weight(-1)


@pytest.mark.parametrize("name, kwargs", [("xvector", {}), ("bayes_xvector", {"sampling": "bbb"}),
                                          ("bayes_xvector", {"sampling": "flipout", "prior": "mixture"})])
def test_tiny_model_overfits_tiny_task(name, kwargs):
    torch.manual_seed(1)
    x, labels = _task()
    model = build_model(name, **TINY, **kwargs)
    # n_train stands for a large corpus so the KL (thousands of nats for ~4k weights) does not swamp
    # 24 examples; its scale is checked exactly in test_kl_term_scale_and_warmup
    objective = XVectorObjective(n_train=1_000_000, kl_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(80):
        optimizer.zero_grad()
        loss, stats = objective(model, model(x), labels, step)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.15
    model.eval()
    assert (model(x).argmax(1) == labels).all()
