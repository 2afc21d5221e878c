"""ECAPA-TDNN (SpeechBrain's network in spkver's interface) and the AAM loss: parameter and output parity with
SpeechBrain's ECAPA_TDNN, relative lengths that SpeechBrain's masks read back exactly, embeddings independent of
the batch, the AAM-softmax objective with its margin ramp, configurations, and a tiny Bayesian ECAPA trained with
AAM that learns, resumes exactly and extracts Monte Carlo embeddings."""

import json

import numpy as np
import pytest
import torch

from spkver.checkpoint import load_checkpoint, load_model, save_checkpoint
from spkver.config import ConfigError, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from spkver.data.synthetic.corpus import make_corpus
from spkver.extract import extract
from spkver.features import FeatureConfig
from spkver.nn.ecapa import relative_lengths
from spkver.nn.heads import CosineClassifier
from spkver.nn.objective import XVectorObjective
from spkver.nn.tdnn import build_model
from spkver.train import train
from model_fixtures import randomize_batchnorm

SMALL = dict(channels=16, attention_channels=8, embed_dim=10, res2net_scale=4, se_channels=8)
FEATS = FeatureConfig(kind="fbank", num_mel_bins=24, use_energy=False)


def _speechbrain_ecapa(input_size: int):
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    return ECAPA_TDNN(input_size, lin_neurons=10, channels=[16, 16, 16, 16, 48], attention_channels=8,
                      res2net_scale=4, se_channels=8)


def test_parameters_and_embeddings_equal_speechbrains_ecapa():
    torch.manual_seed(0)
    ours = randomize_batchnorm(build_model("ecapa_tdnn", feat_dim=20, num_classes=7, **SMALL)).eval()
    peer = _speechbrain_ecapa(20).eval()
    peer.load_state_dict(ours.embedding_model.state_dict(), strict=True)  # the same state dict fits
    n_peer = sum(p.numel() for p in peer.parameters())
    assert sum(p.numel() for n, p in ours.named_parameters() if not n.startswith("classifier.")) == n_peer
    assert ours.classifier.weight.shape == (7, 10)
    x = torch.randn(3, 40, 20)
    with torch.no_grad():
        assert torch.equal(ours.embed(x), peer(x).squeeze(1))
        lengths = torch.tensor([40, 33, 17])
        assert torch.equal(ours.embed(x, lengths), peer(x, relative_lengths(lengths, 40)).squeeze(1))
    # SpeechBrain's masks keep exactly `lengths` frames of the relative lengths spkver passes
    n = torch.arange(1, 500)
    for frames in (499, 977, 3001):
        rel = relative_lengths(n, frames)
        assert torch.equal((torch.arange(frames)[None] < (rel * frames)[:, None]).sum(1), n)
        assert torch.equal(torch.round(rel * frames).long(), n)


def test_inference_embeddings_do_not_depend_on_the_batch():
    torch.manual_seed(1)
    model = randomize_batchnorm(build_model("ecapa_tdnn", feat_dim=12, num_classes=3, **SMALL))
    x = torch.randn(3, 50, 12)
    batch, _ = model.extract(x, lengths=[50, 31, 16])
    for i, n in enumerate((50, 31, 16)):
        assert torch.allclose(batch[i], model.extract(x[i:i + 1, :n])[0][0], atol=1e-6)
    assert model.training  # extract restores the mode
    fused = model.fuse_for_inference()
    assert torch.equal(fused(x, torch.tensor([50, 31, 16])), batch)
    with pytest.raises(ValueError, match="example 2 has length 14"):
        model.embed(x, lengths=[50, 31, 14])
    with pytest.raises(ValueError, match=r"\(batch, frames, 12\)"):
        model.embed(torch.randn(2, 30, 11))


def test_aam_objective_margin_ramp_and_cosine_logits():
    obj = XVectorObjective(n_train=100, loss="aam", margin=0.2, scale=30.0, margin_ramp_steps=10)
    assert [obj.margin_at(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    cos = torch.tensor([[0.5, 0.1, -0.2], [0.3, 0.9, 0.0]])
    labels = torch.tensor([0, 1])
    model = torch.nn.Linear(1, 1)
    loss, stats = obj(model, cos, labels, step=10)
    target = torch.cos(torch.acos(cos[[0, 1], [0, 1]]) + 0.2)  # cos(theta + m) on the target class
    logits = cos.clone()
    logits[[0, 1], [0, 1]] = target
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(30 * logits, labels).item(), rel=1e-5)
    assert stats["margin"] == pytest.approx(0.2) and stats["acc"] == 1.0
    at_zero, _ = obj(model, cos, labels, step=0)  # no margin yet: plain scaled-cosine cross-entropy
    assert at_zero.item() == pytest.approx(torch.nn.functional.cross_entropy(30 * cos, labels).item(), rel=1e-5)
    with pytest.raises(ValueError, match="cosine"):
        obj(model, 3 * cos, labels, step=1)
    with pytest.raises(ValueError, match="unknown loss"):
        XVectorObjective(10, loss="arcface")


def test_configuration_loss_section_and_derived_classifier(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  name: xvector\n  channels: 64\n  stats_channels: 128\n")
    child = tmp_path / "ecapa.yaml"
    child.write_text("base: base.yaml\nmodel:\n  name: ecapa_tdnn\n  stats_channels: null\n  attention_channels: 16\n"
                     "loss:\n  name: aam\n  margin: 0.3\n  margin_ramp_steps: 100\n")
    cfg = load_config(child)
    assert cfg.model.kwargs == {"channels": 64, "attention_channels": 16}  # null: the base's argument is unset
    assert cfg.loss == LossConfig(name="aam", margin=0.3, scale=30.0, margin_ramp_steps=100)
    assert load_config(base).loss.name == "ce"
    with pytest.raises(ConfigError, match="derived"):
        ModelConfig.from_dict({"name": "ecapa_tdnn", "classifier": "cosine"})
    with pytest.raises(ConfigError, match="section 'model'.*attention_chanels"):
        ModelConfig.from_dict({"name": "bayes_ecapa_tdnn", "attention_chanels": 3}, source="x.yaml")
    with pytest.raises(ConfigError, match="section 'loss'"):
        TrainConfig.from_dict({"loss": {"name": "aam", "margin": -1.0}})
    # a run saved before the loss section existed resumes; one saved with another loss does not
    from spkver.train import check_resumable

    saved = {k: v for k, v in load_config(base).to_dict().items() if k != "loss"}
    check_resumable(saved, load_config(base), "old.pt")
    with pytest.raises(ConfigError, match="loss.name"):
        check_resumable(saved, TrainConfig.from_dict({**saved, "loss": {"name": "aam"}}), "old.pt")


# ------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecapa_corpus")
    make_corpus(root / "train", n_speakers=4, sessions_per_speaker=2, utts_per_session=2, min_seconds=1.0,
                max_seconds=1.5, seed=3)
    return root


def _config(epochs=2, examples=64, name="bayes_ecapa_tdnn", **model):
    return TrainConfig(epochs=epochs, seed=0, device="cpu", log_interval=2, kl_weight=0.1, features=FEATS,
                       model=ModelConfig(name, {**SMALL, **model}),
                       data=DataConfig(chunk_min_seconds=0.5, chunk_max_seconds=0.7, examples_per_epoch=examples,
                                       batch_size=16, num_workers=0),
                       optim=OptimConfig(name="adam", lr=0.01, schedule="constant", grad_clip=5.0),
                       loss=LossConfig(name="aam", margin=0.2, scale=30.0, margin_ramp_steps=4))


def test_bayesian_ecapa_with_aam_learns_resumes_exactly_and_extracts(corpus, tmp_path):
    cfg = _config(epochs=3, bayes_layers=["embedding_model.blocks.*", "embedding_model.mfa"], sampling="lrt")
    cfg.data.cache_dir = str(tmp_path / "cache")
    straight = train(cfg, corpus / "train", tmp_path / "a", progress=False)
    records = [json.loads(line) for line in (tmp_path / "a" / "train.log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert epochs[-1]["loss"] < epochs[0]["loss"] and all(np.isfinite(r["kl"]) and r["kl"] > 0 for r in epochs)
    model, features, meta = load_model(straight)
    assert features == FEATS and meta["model_kwargs"]["classifier"] == "cosine"
    assert isinstance(model.classifier, CosineClassifier) and model.is_bayesian
    assert model.bayes_layers[0] == "embedding_model.blocks.0.conv.conv"

    first = train(cfg, corpus / "train", tmp_path / "b", progress=False, until_epoch=1)
    assert first.name == "epoch_001.pt"
    resumed = train(cfg, corpus / "train", tmp_path / "b", progress=False, resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 12
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key

    files = sorted((corpus / "train").rglob("*.wav"))[:5]
    extract(straight, tmp_path / "mean.npz", files=files, num_workers=0)
    extract(straight, tmp_path / "mc.npz", files=files, num_workers=0, mc_samples=4)
    extract(straight, tmp_path / "one.npz", files=files[:1], num_workers=0)
    with np.load(tmp_path / "mean.npz") as mean, np.load(tmp_path / "mc.npz") as mc, \
            np.load(tmp_path / "one.npz") as one:
        assert mc["spread"].shape == (5, 10) and (mc["spread"] > 0).all() and "spread" not in mean.files
        assert np.allclose(one["embeddings"][0], mean["embeddings"][0], atol=1e-5)  # batch-independent


def test_checkpoint_round_trip_of_a_bayesian_ecapa(tmp_path):
    torch.manual_seed(2)
    kwargs = dict(feat_dim=12, num_classes=3, bayes_layers=["embedding_model.fc", "classifier"], **SMALL)
    model = build_model("bayes_ecapa_tdnn", **kwargs)
    path = save_checkpoint(tmp_path / "m.pt", model=model, model_name="bayes_ecapa_tdnn", model_kwargs=kwargs,
                           features=FEATS.to_dict(), speakers=["a", "b", "c"])
    loaded, _, meta = load_model(path)
    assert meta["model_name"] == "bayes_ecapa_tdnn" and loaded.bayes_layers == model.bayes_layers
    x = torch.randn(2, 30, 12)
    assert torch.equal(loaded.extract(x)[0], model.extract(x)[0])
    torch.manual_seed(7)
    mc_a = loaded.extract(x, mc_samples=3)
    torch.manual_seed(7)
    mc_b = model.extract(x, mc_samples=3)
    assert torch.equal(mc_a[0], mc_b[0]) and torch.equal(mc_a[1], mc_b[1])


def test_bayesian_ecapa_starts_from_a_trained_baseline(corpus, tmp_path):
    cfg = _config(epochs=1, examples=32, name="ecapa_tdnn")
    cfg.data.cache_dir = str(tmp_path / "cache")
    baseline = train(cfg, corpus / "train", tmp_path / "base", progress=False)
    bayes_cfg = _config(epochs=1, examples=32, bayes_layers="all")
    bayes_cfg.data.cache_dir = cfg.data.cache_dir
    bayes_cfg.optim.lr = 1e-9
    final = train(bayes_cfg, corpus / "train", tmp_path / "bayes", init=tmp_path / "base", progress=False)
    base, bayes = load_checkpoint(baseline)["model_state"], load_checkpoint(final)["model_state"]
    for layer in ("embedding_model.blocks.0.conv.conv", "embedding_model.fc.conv"):
        torch.testing.assert_close(bayes[f"{layer}.weight_mu"], base[f"{layer}.weight"], atol=1e-5, rtol=0)
    torch.testing.assert_close(bayes["classifier.weight"], base["classifier.weight"], atol=1e-5, rtol=0)  # cosine
