"""spkver.config: configurations extending a base (`base: OTHER.yaml`), and the shipped recipe configurations."""

from pathlib import Path

import pytest
import yaml

from spkver.config import ConfigError, as_config, load_config, merge_config, resolve_yaml, save_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(RECIPES.glob("*/conf/**/*.yaml"))
MAX_MEAN_LINES = 18  # configurations state only what differs from their base and from the code's defaults

BASE = """epochs: 3
model:
  name: bayes_xvector
  channels: 64
  embed_dim: 32
  bayes_layers: [frame_1, frame_2, frame_3]
optim:
  lr: 0.01
  warmup_steps: 10
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_overrides_and_nested_sections_merge(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "base: base.yaml\nepochs: 1\nmodel:\n  channels: 32\n"
                                            "  bayes_layers: [frame_1]\noptim:\n  lr: 0.5\n")
    cfg = load_config(child)
    assert cfg.epochs == 1
    assert cfg.model.name == "bayes_xvector"
    assert cfg.model.kwargs == {"channels": 32, "embed_dim": 32, "bayes_layers": ["frame_1"]}  # list replaced
    assert (cfg.optim.lr, cfg.optim.warmup_steps) == (0.5, 10)
    assert "base" not in resolve_yaml(child)
    assert load_config(tmp_path / "base.yaml").epochs == 3  # the base is untouched


def test_merge_config_is_deep_and_pure():
    base = {"a": 1, "s": {"x": 1, "y": [1, 2], "t": {"p": 1}}, "n": {"k": 1}}
    child = {"s": {"y": [3], "t": {"q": 2}}, "n": None, "b": 2}
    assert merge_config(base, child) == {"a": 1, "s": {"x": 1, "y": [3], "t": {"p": 1, "q": 2}}, "n": None, "b": 2}
    assert base == {"a": 1, "s": {"x": 1, "y": [1, 2], "t": {"p": 1}}, "n": {"k": 1}}


def test_null_in_the_child_replaces_a_section_value(tmp_path):
    _write(tmp_path / "base.yaml", "data:\n  augment: {musan: /m, kinds: [noise]}\n  batch_size: 8\n"
                                   "  examples_per_epoch: 64\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ndata:\n  augment: null\n")
    cfg = load_config(child)
    assert cfg.data.augment is None and cfg.data.batch_size == 8


def test_chains_resolve_relative_to_the_file_that_names_the_base(tmp_path):
    _write(tmp_path / "conf" / "base.yaml", BASE)
    _write(tmp_path / "conf" / "mid.yaml", "base: base.yaml\nseed: 5\nmodel:\n  channels: 48\n")
    leaf = _write(tmp_path / "conf" / "study" / "leaf.yaml", "base: ../mid.yaml\nkl_weight: 0.1\n")
    cfg = load_config(leaf)
    assert (cfg.epochs, cfg.seed, cfg.kl_weight, cfg.model.kwargs["channels"]) == (3, 5, 0.1, 48)
    assert as_config(leaf) == cfg  # spkver train --config without --set goes through as_config
    saved = yaml.safe_load(save_config(cfg, tmp_path / "exp" / "config.yaml").read_text())
    assert "base" not in saved and load_config(tmp_path / "exp" / "config.yaml") == cfg


def test_cycles_are_rejected_naming_the_files(tmp_path):
    a = _write(tmp_path / "a.yaml", "base: b.yaml\nepochs: 1\n")
    _write(tmp_path / "b.yaml", "base: sub/c.yaml\n")
    _write(tmp_path / "sub" / "c.yaml", "base: ../a.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(a)
    assert all(name in str(err.value) for name in ("a.yaml", "b.yaml", "c.yaml"))
    self_ref = _write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle.*self.yaml -> .*self.yaml"):
        resolve_yaml(self_ref)


def test_missing_or_invalid_base_is_named(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: nope/base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert "child.yaml" in str(err.value) and "nope/base.yaml" in str(err.value)
    assert "no such configuration file" in str(err.value)
    for text in ("base: 3\n", "base: [a.yaml]\n", "base: ''\n"):
        with pytest.raises(ConfigError, match="base must be the path of a YAML file"):
            load_config(_write(tmp_path / "bad.yaml", text))
    _write(tmp_path / "list.yaml", "- 1\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(_write(tmp_path / "c2.yaml", "base: list.yaml\n"))


def test_unknown_keys_after_merging_name_the_file_they_came_from(tmp_path):
    base = _write(tmp_path / "base.yaml", "epocs: 3\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match="epocs") as err:
        load_config(child)
    assert str(err.value).startswith(f"{base}: ") and f"a base of {child}" in str(err.value)

    _write(tmp_path / "good.yaml", BASE)
    child = _write(tmp_path / "child2.yaml", "base: good.yaml\ndata:\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match="section 'data'.*batchsize") as err:
        load_config(child)
    assert str(err.value).startswith(f"{child}: ")

    # an unknown argument of the model the base names
    _write(tmp_path / "xvector.yaml", "model:\n  name: xvector\n  channels: 64\n")
    child = _write(tmp_path / "child3.yaml", "base: xvector.yaml\nmodel:\n  chanels: 32\n")
    with pytest.raises(ConfigError, match="section 'model'.*chanels") as err:
        load_config(child)
    assert str(err.value).startswith(f"{child}: ")


def test_overrides_apply_after_the_bases(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "base: base.yaml\nepochs: 2\n")
    cfg = load_config(child, ["epochs=1", "model.channels=16", "optim.lr=0.2"])
    assert (cfg.epochs, cfg.optim.lr, cfg.optim.warmup_steps) == (1, 0.2, 10)
    assert cfg.model.kwargs == {"channels": 16, "embed_dim": 32, "bayes_layers": ["frame_1", "frame_2", "frame_3"]}
    with pytest.raises(ConfigError, match="batchsize") as err:  # a bad override names the file it was applied to
        load_config(child, ["data.batchsize=3"])
    assert str(err.value).startswith(f"{child}: ")


def test_spkver_train_resolves_bases_with_and_without_set(tmp_path, monkeypatch):
    import spkver.train
    from spkver.cli import main

    _write(tmp_path / "conf" / "base.yaml", BASE)
    child = _write(tmp_path / "conf" / "study" / "child.yaml", "base: ../base.yaml\nepochs: 2\n")
    (tmp_path / "data").mkdir()
    seen = []
    monkeypatch.setattr(spkver.train, "train", lambda cfg, *args, **kw: seen.append(as_config(cfg)))
    for extra in ([], ["--set", "seed=7"]):
        main(["train", "--config", str(child), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
              *extra])
    assert [(c.epochs, c.seed, c.model.kwargs["channels"]) for c in seen] == [(2, 0, 64), (2, 7, 64)]


# ------------------------------------------------------------------------------- shipped configurations
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_configuration_resolves(path):
    from spkver.nn.tdnn import MODELS

    cfg = load_config(path)
    assert cfg.model.name in MODELS


def _content_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_shipped_configurations_state_only_their_differences():
    assert len(SHIPPED) >= 10
    mean = sum(_content_lines(p) for p in SHIPPED) / len(SHIPPED)
    assert mean <= MAX_MEAN_LINES, (f"{mean:.1f} setting lines per configuration file; a new configuration should "
                                    f"extend one (base: OTHER.yaml) and state only what differs")
