"""spkver.nn.bayesianize: any network's Linear / Conv1d layers made Bayesian. A bayesianized ECAPA-TDNN at
sigma -> 0 is the deterministic one, its KL is the sum over the replaced layers, include patterns select exactly
the named layers, SpeechBrain's wrapped layers work in their (batch, time, channels) layout, and the Bayesian
x-vector is XVector + bayesianize with unchanged state-dict keys."""

import copy

import pytest
import torch
import torch.nn as nn

from spkver.nn.bayes import SAMPLING_MODES, BayesConv1d, BayesianLayer, BayesLinear, sampling
from spkver.nn.bayesianize import (bayesian_layer_names, bayesianize, init_from_deterministic, replaceable_layers,
                                   select_layers)
from spkver.nn.tdnn import LAYER_NAMES, build_model
from model_fixtures import randomize_batchnorm

ECAPA = dict(feat_dim=12, num_classes=5, channels=16, attention_channels=8, embed_dim=10, res2net_scale=4,
             se_channels=8)


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_bayesianized_ecapa_with_zero_sigma_equals_the_deterministic_one(mode):
    torch.manual_seed(0)
    det = randomize_batchnorm(build_model("ecapa_tdnn", **ECAPA))
    bayes = bayesianize(copy.deepcopy(det), sampling=mode, init_rho=-1e4)  # sigma = softplus(-1e4) = 0
    assert len(bayesian_layer_names(bayes)) == len(replaceable_layers(det)) > 20
    x = torch.randn(3, 30, 12)
    assert bayes.training and det.training  # the sampling path, batch statistics
    assert torch.equal(bayes(x), det(x))
    det.eval(), bayes.eval()
    assert torch.equal(bayes(x), det(x))
    with sampling(bayes, True):
        assert torch.equal(bayes.embed(x), det.embed(x))
    assert torch.equal(bayes.extract(x, lengths=[30, 22, 17])[0], det.extract(x, lengths=[30, 22, 17])[0])


def test_means_start_at_the_deterministic_weights_and_sigma_is_init_sigma():
    torch.manual_seed(1)
    det = build_model("ecapa_tdnn", **ECAPA)
    before = torch.get_rng_state()
    bayes = bayesianize(copy.deepcopy(det), include=["embedding_model.fc"], init_sigma=0.02)
    assert torch.equal(torch.get_rng_state(), before)  # conversion draws nothing
    fc = bayes.embedding_model.fc.conv
    assert isinstance(fc, BayesConv1d) and fc.padding == 0
    assert torch.equal(fc.weight_mu, det.embedding_model.fc.conv.weight)
    assert torch.allclose(fc.weight_sigma, torch.full_like(fc.weight_sigma, 0.02))
    assert torch.allclose(fc.bias_sigma, torch.full_like(fc.bias_sigma, 0.02))
    with pytest.raises(ValueError, match="init_sigma"):
        bayesianize(nn.Sequential(nn.Linear(2, 2)), init_sigma=0.0)


def test_kl_is_the_sum_over_the_replaced_layers():
    torch.manual_seed(2)
    model = build_model("bayes_ecapa_tdnn", bayes_layers=["embedding_model.blocks.1", "classifier"], init_rho=-3.0,
                        prior_sigma=0.5, **ECAPA)
    layers = [m for m in model.modules() if isinstance(m, BayesianLayer)]
    assert len(layers) == len(model.bayes_layers) > 3
    assert torch.allclose(model.kl(), torch.stack([layer.kl() for layer in layers]).sum())
    assert model.kl().item() > 0 and model.is_bayesian
    assert build_model("ecapa_tdnn", **ECAPA).kl().item() == 0.0


def test_include_patterns_select_exactly_the_named_layers():
    model = build_model("ecapa_tdnn", **ECAPA)
    assert select_layers(model, ["embedding_model.fc", "classifier"]) == ["embedding_model.fc.conv", "classifier"]
    assert select_layers(model, "embedding_model.blocks.0") == ["embedding_model.blocks.0.conv.conv"]
    se = select_layers(model, ["embedding_model.blocks.*.se_block.conv?"])
    assert se == [f"embedding_model.blocks.{b}.se_block.conv{i}.conv" for b in (1, 2, 3) for i in (1, 2)]
    assert select_layers(model, None) == replaceable_layers(model)
    bayesianize(model, include=["embedding_model.asp.*", "embedding_model.mfa"])
    assert bayesian_layer_names(model) == ["embedding_model.mfa.conv.conv", "embedding_model.asp.tdnn.conv.conv",
                                           "embedding_model.asp.conv.conv"]
    with pytest.raises(ValueError, match=r"\['embedding_model\.nope', 'fc2'\]"):
        bayesianize(build_model("ecapa_tdnn", **ECAPA), include=["embedding_model.fc", "embedding_model.nope", "fc2"])
    with pytest.raises(ValueError, match="frame_6"):
        bayesianize(build_model("xvector", feat_dim=6, num_classes=3, channels=8, stats_channels=8, embed_dim=4),
                    include=["frame_6"])


def test_unsupported_layers_are_named_and_shared_layers_converted_once():
    net = nn.Sequential(nn.Conv1d(3, 4, 3, stride=2), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="layer '0'.*stride 2"):
        bayesianize(net)
    assert type(bayesianize(net, include=["1"])[1]) is BayesLinear
    shared = nn.Linear(3, 3)
    twice = bayesianize(nn.ModuleDict({"a": shared, "b": nn.Sequential(shared)}))
    assert twice["a"] is twice["b"][0] and isinstance(twice["a"], BayesLinear)
    with pytest.raises(ValueError, match="sampling"):
        bayesianize(nn.Sequential(nn.Linear(2, 2)), sampling="mc")


def test_speechbrain_wrapped_layers_keep_their_layout():
    """SpeechBrain's Linear / Conv1d take (batch, time, channels) and pad "same" themselves; their inner torch
    layer becomes Bayesian and the wrapper keeps working."""
    from speechbrain.nnet.CNN import Conv1d
    from speechbrain.nnet.linear import Linear

    torch.manual_seed(3)
    det = nn.Sequential(Conv1d(out_channels=6, kernel_size=3, in_channels=4, dilation=2), nn.ReLU(),
                        Linear(n_neurons=5, input_size=6))
    bayes = bayesianize(copy.deepcopy(det), sampling="lrt", init_rho=-1e4)
    assert bayesian_layer_names(bayes) == ["0.conv", "2.w"]
    x = torch.randn(2, 9, 4)  # (batch, time, channels)
    assert torch.equal(bayes(x), det(x)) and bayes(x).shape == (2, 9, 5)
    noisy = bayesianize(copy.deepcopy(det), init_sigma=0.1)
    assert not torch.equal(noisy(x), det(x))  # training mode: a weight sample


def test_bayes_xvector_is_xvector_plus_bayesianize_with_the_same_keys():
    small = dict(feat_dim=6, num_classes=4, channels=8, stats_channels=12, embed_dim=5)
    torch.manual_seed(4)
    base = build_model("xvector", **small)
    torch.manual_seed(4)
    bayes = build_model("bayes_xvector", bayes_layers=["frame_2", "seg_1"], init_rho=-4.0, **small)
    expected = bayesianize(copy.deepcopy(base), include=["frame_2", "seg_1"], init_rho=-4.0)
    assert list(bayes.state_dict()) == list(expected.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(bayes.state_dict().values(), expected.state_dict().values()))
    keys = list(bayes.state_dict())
    assert keys[:6] == ["frame_1.weight", "frame_1.bias", "frame_1_norm.weight", "frame_1_norm.bias",
                        "frame_1_norm.running_mean", "frame_1_norm.running_var"]
    assert {"frame_2.weight_mu", "frame_2.weight_rho", "seg_1.bias_mu", "seg_1.bias_rho"} <= set(keys)
    assert bayes.bayes_layers == ("frame_2", "seg_1")
    cosine = build_model("bayes_xvector", classifier="cosine", **small)  # "all": a cosine classifier stays
    assert cosine.bayes_layers == LAYER_NAMES[:-1]


def test_init_from_deterministic_maps_weights_and_refuses_partial_loads():
    torch.manual_seed(5)
    det = build_model("ecapa_tdnn", **ECAPA)
    bayes = build_model("bayes_ecapa_tdnn", **ECAPA)
    init_from_deterministic(bayes, det.state_dict(), init_sigma=0.01)
    assert torch.equal(bayes.embedding_model.mfa.conv.conv.weight_mu, det.embedding_model.mfa.conv.conv.weight)
    assert torch.allclose(bayes.classifier.weight_sigma, torch.full((5, 10), 0.01))
    partial = {k: v for k, v in det.state_dict().items() if not k.startswith("classifier.")}
    with pytest.raises(ValueError, match="lacks.*classifier"):
        bayes.init_from_baseline(partial)
    classifier = bayes.classifier.weight_mu.clone()
    bayes.init_from_baseline(partial, keep=("classifier.",))  # another classifier: left as it is
    assert torch.equal(bayes.classifier.weight_mu, classifier)
    with pytest.raises(ValueError, match="shape"):
        build_model("bayes_ecapa_tdnn", **{**ECAPA, "embed_dim": 8}).init_from_baseline(det.state_dict())
