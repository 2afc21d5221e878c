"""spkver.checkpoint: self-describing round trip, experiment-dir layout, RNG state, clear errors."""

import random

import numpy as np
import pytest
import torch

from spkver import __version__
from spkver.checkpoint import (CheckpointError, capture_rng_state, epoch_path, link_latest, list_checkpoints,
                               load_checkpoint, load_model, prune_checkpoints, resolve_checkpoint,
                               restore_rng_state, save_checkpoint, write_final)
from spkver.features import FeatureConfig
from spkver.nn.tdnn import build_model

KWARGS = {"feat_dim": 20, "num_classes": 4, "channels": 16, "stats_channels": 24, "embed_dim": 8}


def _model(name="xvector", **extra):
    torch.manual_seed(0)
    model = build_model(name, **KWARGS, **extra)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval-mode outputs depend on them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model


def _save(path, model, name="xvector", **kw):
    feats = FeatureConfig(num_mel_bins=24, num_ceps=20)
    return save_checkpoint(path, model=model, model_name=name, model_kwargs={**KWARGS, **kw},
                           features=feats.to_dict(), speakers=["a", "b", "c", "d"], epoch=3, step=30, **{})


@pytest.mark.parametrize("name, extra", [("xvector", {}), ("bayes_xvector", {"sampling": "lrt"})])
def test_load_model_rebuilds_the_same_network(tmp_path, name, extra):
    model = _model(name, **extra).eval()
    path = _save(tmp_path / "m.pt", model, name, **extra)
    loaded, feats, meta = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert feats == FeatureConfig(num_mel_bins=24, num_ceps=20)
    assert meta["speakers"] == ["a", "b", "c", "d"] and meta["epoch"] == 3 and meta["step"] == 30
    assert meta["version"] == __version__ and meta["model_name"] == name
    x = torch.randn(2, 40, 20)
    torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)


def test_training_state_and_rng_round_trip(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    model(torch.randn(3, 30, 20)).sum().backward()
    opt.step()
    sched.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "c.pt", model=model, model_name="xvector", model_kwargs=KWARGS,
                           features=FeatureConfig().to_dict(), speakers=list("abcd"), optimizer=opt,
                           scheduler=sched, sampler={"seed": 0, "epoch": 2, "start": 0}, config={"epochs": 2})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = load_checkpoint(path)
    restore_rng_state(state["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    opt2 = torch.optim.Adam(_model().parameters(), lr=0.01)
    opt2.load_state_dict(state["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert state["scheduler"]["last_epoch"] == 1 and state["sampler"]["epoch"] == 2
    assert state["config"] == {"epochs": 2}


def test_experiment_dir_layout(tmp_path):
    model = _model()
    for epoch in (1, 2, 3):
        _save(epoch_path(tmp_path, epoch), model)
        link_latest(tmp_path, epoch_path(tmp_path, epoch))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    assert (tmp_path / "latest.pt").resolve() == epoch_path(tmp_path, 3).resolve()
    assert resolve_checkpoint(tmp_path) == tmp_path / "latest.pt"
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_002.pt", "epoch_003.pt"]
    final = write_final(tmp_path, tmp_path / "latest.pt")
    assert resolve_checkpoint(tmp_path) == final
    assert "rng" not in load_checkpoint(final) and load_model(tmp_path)[2]["epoch"] == 3


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="holds no"):
        load_model(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*missing"):
        load_model(foreign)
    path = _save(tmp_path / "wrong.pt", _model())
    state = torch.load(path, weights_only=True)
    state["model_kwargs"]["embed_dim"] = 9
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="wrong.pt"):
        load_model(path)


def test_rng_capture_is_weights_only_safe(tmp_path):
    random.seed(4), np.random.seed(5), torch.manual_seed(6)
    np.random.randn()  # numpy's legacy generator now holds a cached second gaussian
    assert np.random.get_state()[3] == 1
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), np.random.randn(), torch.rand(2))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    draws = (random.random(), np.random.randn(), np.random.randn(), torch.rand(2))
    assert draws[:3] == expected[:3] and torch.equal(draws[3], expected[3])  # the cached gaussian comes back too


ECAPA_SMALL = {"channels": 16, "attention_channels": 8, "embed_dim": 10, "res2net_scale": 4, "se_channels": 8}


@pytest.mark.parametrize("name, kwargs", [
    ("xvector", KWARGS), ("bayes_xvector", KWARGS),
    ("ecapa_tdnn", {"feat_dim": 20, "num_classes": 4, **ECAPA_SMALL}),
    ("bayes_ecapa_tdnn", {"feat_dim": 20, "num_classes": 4, **ECAPA_SMALL})])
def test_an_embedding_only_checkpoint_leaves_the_head_out_and_embeds_the_same(tmp_path, name, kwargs):
    from model_fixtures import randomize_batchnorm
    from spkver.train import _init_from

    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(name, **kwargs)).eval()
    feats = FeatureConfig(num_mel_bins=24, num_ceps=20).to_dict()
    full = save_checkpoint(tmp_path / "full.pt", model=model, model_name=name, model_kwargs=kwargs, features=feats,
                           speakers=[], rng=False)
    bare = save_checkpoint(tmp_path / "bare.pt", model=model, model_name=name, model_kwargs=kwargs, features=feats,
                           speakers=[], rng=False, head=False)
    obj = torch.load(bare, weights_only=True)
    head = [k for k in model.state_dict() if k.startswith(model.head_prefixes)]
    assert head and obj["head"] is False and "head" not in torch.load(full, weights_only=True)
    assert sorted(obj["model_state"]) == sorted(set(model.state_dict()) - set(head))
    assert bare.stat().st_size < full.stat().st_size
    loaded, _, _ = load_model(bare)
    assert not loaded.has_head and load_model(full)[0].has_head
    x = torch.randn(3, 40, 20)
    torch.testing.assert_close(loaded.extract(x)[0], model.extract(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="embedding only"):
        loaded(x)
    # a baseline saved without its head still initialises a Bayesian model (not its classifier: no speakers)
    target = build_model(name if name.startswith("bayes_") else f"bayes_{name}", **kwargs)
    _init_from(target, bare, ["a", "b", "c", "d"], feats, kwargs)
    first = next(k for k, v in obj["model_state"].items() if k.endswith((".weight", ".weight_mu")) and v.dim() > 1)
    mu = first if first.endswith("_mu") else f"{first}_mu"
    torch.testing.assert_close(target.state_dict()[mu], obj["model_state"][first], rtol=0, atol=0)
    # a missing embedding weight is an error naming the file, never a partial load
    del obj["model_state"][first]
    torch.save(obj, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=rf"broken\.pt.*missing key.*{first}"):
        load_model(tmp_path / "broken.pt")
