"""spkver.config: YAML round trip, defaults, validation and unknown-key errors naming the file."""

import dataclasses

import pytest
import yaml

from spkver.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, as_config, load_config,
                           save_config)
from spkver.features import FeatureConfig


def _write(path, text):
    path.write_text(text)
    return path


def test_round_trip_keeps_every_value(tmp_path):
    cfg = TrainConfig(
        epochs=3, seed=7, amp="bf16", kl_weight=0.5, kl_warmup_steps=100, device="cpu",
        features=FeatureConfig(num_mel_bins=24, num_ceps=20),
        model=ModelConfig("bayes_xvector", {"channels": 32, "embed_dim": 16, "sampling": "lrt"}),
        data=DataConfig(chunk_min_seconds=1.0, chunk_max_seconds=1.5, examples_per_epoch=640, batch_size=32,
                        augment=None, cache_dtype="float16"),
        optim=OptimConfig(name="sgd", lr=0.1, schedule="step", step_epochs=2, gamma=0.5, grad_clip=None))
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    back = load_config(path)
    assert back == cfg
    assert yaml.safe_load(path.read_text())["model"] == {"name": "bayes_xvector", "channels": 32,
                                                         "embed_dim": 16, "sampling": "lrt"}
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_partial_file_fills_defaults(tmp_path):
    path = _write(tmp_path / "c.yaml", "epochs: 2\noptim:\n  lr: 0.01\nmodel:\n  name: xvector\n  channels: 64\n")
    cfg = load_config(path)
    assert cfg.epochs == 2 and cfg.optim.lr == 0.01 and cfg.optim.name == OptimConfig().name
    assert cfg.model.kwargs == {"channels": 64}
    assert cfg.data == DataConfig() and cfg.features == FeatureConfig()
    assert as_config(path) == cfg and as_config(cfg) is cfg


@pytest.mark.parametrize("text, words", [
    ("epocs: 3\n", ["epocs", "epochs", "seed"]),
    ("data:\n  batchsize: 8\n", ["section 'data'", "batchsize", "batch_size"]),
    ("optim:\n  lr: 0.1\n  sceduler: cosine\n", ["section 'optim'", "sceduler", "schedule"]),
    ("features:\n  num_cep: 20\n", ["section 'features'", "num_cep"]),
    ("model:\n  name: xvector\n  chanels: 32\n", ["section 'model'", "chanels", "channels"]),
])
def test_unknown_keys_are_rejected_naming_file_and_valid_keys(tmp_path, text, words):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("text, word", [
    ("epochs: two\n", "epochs"),
    ("amp: fp32\n", "amp"),
    ("optim:\n  name: rmsprop\n", "name"),
    ("data:\n  chunk_min_seconds: 4\n  chunk_max_seconds: 2\n", "chunk_min_seconds"),
    ("model:\n  name: resnet\n", "resnet"),
    ("model:\n  name: xvector\n  num_classes: 3\n", "num_classes"),
    ("data:\n  examples_per_epoch: 10\n  batch_size: 64\n", "examples_per_epoch"),
    ("- 1\n- 2\n", "mapping"),
    ("device: tpu\n", "device"),
    ("features:\n  num_ceps: 40\n", "section 'features'.*num_ceps"),  # FeatureConfig's own check
    ("features:\n  low_freq: low\n", "section 'features'.*low_freq must be a number"),
])
def test_invalid_values_raise_naming_the_key(tmp_path, text, word):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=word) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_ints_accepted_for_floats_and_missing_file(tmp_path):
    cfg = load_config(_write(tmp_path / "c.yaml", "optim:\n  lr: 1\n"))
    assert isinstance(cfg.optim.lr, float)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_on_the_fly_path_follows_augmentation_and_precompute():
    assert not DataConfig().on_the_fly
    assert DataConfig(precompute=False).on_the_fly
    assert DataConfig(augment={"musan": "musan", "kinds": ["noise"]}).on_the_fly
    assert dataclasses.replace(DataConfig(), augment={}).on_the_fly is False
    with pytest.raises(ConfigError, match="noise_prob.*valid.*musan"):
        DataConfig(augment={"noise_prob": 0.5})
    with pytest.raises(ConfigError, match="sample_rate"):  # always the features' rate
        DataConfig(augment={"musan": "m", "sample_rate": 8000})


def test_overrides_set_nested_keys_and_are_validated(tmp_path):
    path = _write(tmp_path / "c.yaml", "epochs: 3\nmodel:\n  name: xvector\n  channels: 64\n")
    cfg = load_config(path, ["epochs=1", "model.channels=32", "model.bayes_layers=[frame_1]",
                             "model.name=bayes_xvector", "optim.lr=0.5", "data.augment.kinds=[noise]",
                             "data.augment.musan=/m"])
    assert (cfg.epochs, cfg.optim.lr, cfg.model.name) == (1, 0.5, "bayes_xvector")
    assert cfg.model.kwargs["channels"] == 32 and cfg.model.kwargs["bayes_layers"] == ["frame_1"]
    assert cfg.data.augment["kinds"] == ["noise"]
    assert load_config(path).epochs == 3  # the file is untouched
    for bad, word in (("epochs", "KEY=VALUE"), ("model..channels=3", "dotted"), ("epochs.x=1", "not a section"),
                      ("model.chanels=3", "chanels"), ("epochs=two", "epochs"), ("x=[1", "invalid YAML")):
        with pytest.raises(ConfigError, match=word) as err:
            load_config(path, [bad])
        assert str(path) in str(err.value)
