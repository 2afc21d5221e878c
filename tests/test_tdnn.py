"""x-vector models: parameter count against SpeechBrain, pooling by hand, lengths, Bayesian
equivalences, BatchNorm folding and the registry."""

import math

import pytest
import torch

from spkver.nn.pooling import StatsPooling, stats_pool
from spkver.nn.tdnn import CONTEXT, LAYER_NAMES, MODELS, XVector, build_model
from model_fixtures import randomize_batchnorm

SMALL = dict(feat_dim=6, num_classes=5, channels=16, stats_channels=24, embed_dim=8)


def test_parameter_count_matches_speechbrain():
    """Same layer sizes as SpeechBrain's Xvector(in_channels=30) + Classifier(lin_blocks=1): 5 TDNN
    blocks (conv + BN), seg_1 = the Xvector's final Linear(3000, 512); Classifier = BN(512) on the
    embedding, one Linear(512, 512) + BN block (our seg_2) and Linear(512, n_spk). Deliberate
    differences that do not change the count: ReLU (Kaldi) instead of LeakyReLU, unpadded convolutions
    (Kaldi's TDNN; SpeechBrain pads "same") and population std without added noise in the pooling."""
    sb = pytest.importorskip("speechbrain.lobes.models.Xvector")
    torch.manual_seed(0)
    peer = sb.Xvector(in_channels=30, tdnn_blocks=5, tdnn_channels=[512, 512, 512, 512, 1500],
                      tdnn_kernel_sizes=[5, 3, 3, 1, 1], tdnn_dilations=[1, 2, 3, 1, 1], lin_neurons=512)
    head = sb.Classifier(input_shape=(2, 1, 512), lin_blocks=1, lin_neurons=512, out_neurons=1211)
    n_peer = sum(p.numel() for p in peer.parameters()) + sum(p.numel() for p in head.parameters())
    ours = build_model("xvector", feat_dim=30, num_classes=1211)
    assert sum(p.numel() for p in ours.parameters()) == n_peer
    # a Bayesian layer doubles its parameters (mu and rho)
    bayes = build_model("bayes_xvector", feat_dim=30, num_classes=1211, bayes_layers=["seg_1"])
    assert sum(p.numel() for p in bayes.parameters()) == n_peer + 3000 * 512 + 512


def test_stats_pooling_by_hand_with_mask():
    x = torch.tensor([[[1.0, 2.0, 3.0, 10.0], [0.0, 0.0, 6.0, -5.0]],
                      [[4.0, 4.0, 4.0, 8.0], [1.0, -1.0, 1.0, -1.0]]])  # (batch 2, channels 2, frames 4)
    out = StatsPooling(var_floor=0.0)(x, torch.tensor([3, 4]))
    expected = torch.tensor([
        [2.0, 2.0, math.sqrt(2.0 / 3.0), math.sqrt(8.0)],  # frames 0..2 only
        [5.0, 0.0, math.sqrt(3.0), 1.0],
    ])
    assert torch.allclose(out, expected, atol=1e-6)
    # floor: a constant channel gets std sqrt(floor)
    assert stats_pool(torch.ones(1, 1, 5), var_floor=0.04)[0, 1].item() == pytest.approx(0.2)


def test_stats_pooling_gradient_matches_autograd_reference():
    x = torch.randn(3, 4, 9, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 5, 2])
    assert torch.autograd.gradcheck(lambda t: stats_pool(t, lengths), (x,))
    assert torch.autograd.gradcheck(lambda t: stats_pool(t), (x,))
    g = torch.randn(3, 8, dtype=torch.float64)
    stats_pool(x, lengths).backward(g)
    ours, x.grad = x.grad, None
    ref = []
    for b, n in enumerate(lengths.tolist()):
        seg = x[b, :, :n]
        ref.append(torch.cat([seg.mean(1), seg.std(1, correction=0)]))
    (torch.stack(ref) * g).sum().backward()
    assert torch.allclose(ours, x.grad)


def test_outputs_and_kl():
    model = randomize_batchnorm(build_model("xvector", **SMALL))
    x = torch.randn(3, 40, 6)
    emb = model.embed(x)
    assert emb.shape == (3, 8)
    assert torch.allclose(model(x), model.head(emb))  # logits = head(embedding)
    mean, spread = model.extract(x)
    assert spread is None
    assert model.training  # extract restores the mode
    # extract folds BatchNorm into the next layers: equal to the eval-mode embedding
    assert torch.allclose(mean, model.eval().embed(x), atol=1e-5)
    assert model.kl().item() == 0.0
    bayes = build_model("bayes_xvector", sampling="lrt", **SMALL)
    mean, spread = bayes.extract(x, mc_samples=4)
    assert mean.shape == spread.shape == (3, 8) and (spread > 0).all()
    # every layer is Bayesian by default and the model's KL is the sum of theirs
    assert set(bayes.bayes_layers) == set(LAYER_NAMES)
    per_layer = [getattr(bayes, name).kl() for name in LAYER_NAMES]
    assert all(kl.item() > 0 for kl in per_layer)
    assert torch.allclose(bayes.kl(), torch.stack(per_layer).sum())


def test_padding_does_not_change_embedding():
    model = randomize_batchnorm(build_model("bayes_xvector", bayes_layers=["frame_2", "seg_1"], **SMALL)).eval()
    g = torch.Generator().manual_seed(1)
    short, long = torch.randn(1, 20, 6, generator=g), torch.randn(1, 33, 6, generator=g)
    padded = torch.cat([short, 100 * torch.randn(1, 13, 6, generator=g)], dim=1)
    batch = torch.cat([padded, long])
    emb = model.embed(batch, lengths=torch.tensor([20, 33]))
    assert torch.allclose(emb[0], model.embed(short)[0], atol=1e-5)
    assert torch.allclose(emb[1], model.embed(long)[0], atol=1e-5)
    fast, _ = model.extract(batch, lengths=[20, 33])
    assert torch.allclose(fast, emb, atol=1e-4)
    # trailing padding beyond the longest example is ignored too
    extra = torch.cat([batch, torch.randn(2, 7, 6, generator=g)], dim=1)
    assert torch.allclose(model.embed(extra, lengths=torch.tensor([20, 33])), emb, atol=1e-5)


def test_lengths_are_validated():
    model = build_model("xvector", **SMALL)
    x = torch.randn(2, 30, 6)
    with pytest.raises(ValueError, match="example 1 has length 14"):
        model(x, lengths=torch.tensor([30, CONTEXT]))
    with pytest.raises(ValueError, match="example 0 has length 31"):
        model(x, lengths=torch.tensor([31, 20]))
    with pytest.raises(ValueError, match="relative"):
        model(x, lengths=torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"\(batch, frames, 6\)"):
        model(torch.randn(2, 30, 7))
    with pytest.raises(ValueError, match="at least 15 frames"):
        model(torch.randn(2, 14, 6))


@pytest.mark.parametrize("mode", ["bbb", "lrt", "flipout"])
def test_bayesian_with_zero_sigma_equals_baseline(mode):
    torch.manual_seed(2)
    base = randomize_batchnorm(build_model("xvector", **SMALL))
    bayes = build_model("bayes_xvector", bayes_layers="all", sampling=mode, init_rho=-1e4, **SMALL)
    bayes.init_from_baseline(base.state_dict())
    x = torch.randn(4, 30, 6)
    assert bayes.training and base.training  # sampling path, batch statistics
    assert torch.equal(bayes(x), base(x))
    base.eval(), bayes.eval()
    assert torch.equal(bayes(x), base(x))


def test_init_from_baseline_sets_mu_and_sigma():
    base = build_model("xvector", **SMALL)
    bayes = build_model("bayes_xvector", bayes_layers=["frame_1", "classifier"], **SMALL)
    bayes.init_from_baseline(base.state_dict(), init_sigma=0.01)
    assert torch.equal(bayes.frame_1.weight_mu, base.frame_1.weight)
    assert torch.equal(bayes.seg_1.weight, base.seg_1.weight)
    assert torch.allclose(bayes.classifier.weight_sigma, torch.full((5, 8), 0.01))
    with pytest.raises(ValueError, match="frame_9"):
        bayes.init_from_baseline({**base.state_dict(), "frame_9.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        build_model("bayes_xvector", **{**SMALL, "num_classes": 7}).init_from_baseline(base.state_dict())


def test_fused_inference_equals_eval_forward():
    model = randomize_batchnorm(build_model("bayes_xvector", bayes_layers=["frame_3", "seg_1"], **SMALL))
    model.eval()
    x = torch.randn(3, 50, 6)
    fused = model.fuse_for_inference()
    assert torch.allclose(fused(x), model.embed(x), atol=1e-5)
    assert torch.allclose(model.extract(x)[0], model.embed(x), atol=1e-5)
    # the cached fused weights follow parameter updates
    with torch.no_grad():
        model.frame_2.weight.mul_(1.5)
        model.frame_5_norm.running_var.mul_(2.0)
    assert torch.allclose(model.extract(x)[0], model.embed(x), atol=1e-5)


def test_extract_monte_carlo():
    torch.manual_seed(3)
    x = torch.randn(2, 25, 6)
    seg_only = build_model("bayes_xvector", bayes_layers=["seg_1"], init_rho=-3.0, **SMALL)
    mean, spread = seg_only.extract(x, mc_samples=200)
    posterior_mean, _ = seg_only.extract(x)
    # seg_1 is linear in its weights: the MC mean converges to the posterior-mean embedding
    assert torch.allclose(mean, posterior_mean, atol=5 * spread.max().item() / math.sqrt(200))
    head_only = build_model("bayes_xvector", bayes_layers=["classifier"], **SMALL)
    assert torch.equal(head_only.extract(x, mc_samples=3)[1], torch.zeros(2, 8))
    with pytest.raises(ValueError, match="mc_samples"):
        seg_only.extract(x, mc_samples=-1)


def test_registry_and_layer_names():
    assert set(MODELS) == {"xvector", "bayes_xvector", "ecapa_tdnn", "bayes_ecapa_tdnn", "sb_xvector",
                           "bayes_sb_xvector"}
    with pytest.raises(ValueError, match=r"\['bayes_ecapa_tdnn', .*'xvector'\]"):
        build_model("resnet", **SMALL)
    with pytest.raises(ValueError, match="frame_1"):
        build_model("xvector", bayes_layers=["frame_6"], **SMALL)
    with pytest.raises(ValueError, match="at least one"):
        build_model("bayes_xvector", bayes_layers=(), **SMALL)
    model = build_model("bayes_xvector", **SMALL)
    assert model.bayes_layers == LAYER_NAMES
    assert isinstance(build_model("xvector", bayes_layers="seg_2", **SMALL), XVector)
