"""spkver.train on a small generated corpus: it learns, resumes exactly, validates, initialises from a baseline."""

import json
import re

import numpy as np
import soundfile as sf
import pytest
import torch

from spkver.checkpoint import list_checkpoints, load_checkpoint, load_model
from spkver.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from spkver.data.examples import FeatureCache
from spkver.data.kaldi import DataDir
from spkver.data.synthetic.corpus import make_corpus, make_trials
from spkver.features import FeatureConfig
from spkver.train import lr_factor, train

FEATS = FeatureConfig(num_mel_bins=24, num_ceps=20)
TINY = {"channels": 32, "stats_channels": 64, "embed_dim": 16}



def tiny_config(epochs=2, name="xvector", examples=384, batch=32, lr=0.01, **model):
    return TrainConfig(
        epochs=epochs, seed=0, device="cpu", log_interval=4, features=FEATS,
        model=ModelConfig(name, {**TINY, **model}),
        data=DataConfig(chunk_min_seconds=0.5, chunk_max_seconds=1.0, examples_per_epoch=examples,
                        batch_size=batch, num_workers=0),
        optim=OptimConfig(name="adam", lr=lr, warmup_steps=2, schedule="cosine", grad_clip=5.0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    data = make_corpus(root / "train", n_speakers=8, sessions_per_speaker=2, utts_per_session=3,
                       min_seconds=1.5, max_seconds=2.5, seed=0)
    make_trials(data, n_target=None, n_nontarget=60, seed=0, path=root / "trials")
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("baseline")
    final = train(tiny_config(), corpus / "train", exp, dev_data=corpus / "train", dev_trials=corpus / "trials",
                  progress=False)
    return exp, final


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr=0.1)
    factors = [lr_factor(s, cfg, total_steps=14, steps_per_epoch=7) for s in range(15)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])) and factors[14] == pytest.approx(0.1)
    step = OptimConfig(lr=1.0, schedule="step", step_epochs=2, gamma=0.5)
    assert [lr_factor(s, step, 60, 10) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_short_run_learns_and_writes_the_experiment_dir(corpus, baseline):
    exp, final = baseline
    assert final == exp / "final.pt"
    assert load_config(exp / "config.yaml") == tiny_config()
    assert [p.name for p in list_checkpoints(exp)] == ["epoch_001.pt", "epoch_002.pt"]
    assert (exp / "latest.pt").resolve() == (exp / "checkpoints" / "epoch_002.pt").resolve()
    records = [json.loads(line) for line in (exp / "train.log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and any(r["kind"] == "step" for r in records)
    assert 0.0 <= epochs[-1]["valid"]["eer"] < 0.5 and epochs[-1]["valid"]["trials"] > 0

    # the saved model classifies whole training utterances far above chance (1/8)
    model, feats_cfg, meta = load_model(exp)
    cache = FeatureCache.build(DataDir.load(corpus / "train"), feats_cfg, exp / "feats")
    labels = [meta["speakers"].index(u.split("-")[0]) for u in cache.utts]
    with torch.no_grad():
        predicted = [int(model(torch.tensor(cache[i])[None]).argmax()) for i in range(len(cache))]
    accuracy = np.mean(np.array(predicted) == np.array(labels))
    assert accuracy > 3 / 8, accuracy


def test_resume_continues_exactly(corpus, tmp_path):
    """Two epochs straight == one epoch, stop, resume for the second: bitwise-equal weights (Bayesian model,
    so the restored RNG state matters too)."""
    cfg = tiny_config(name="bayes_xvector", examples=64, batch=16, sampling="lrt")
    cfg.data.cache_dir = str(tmp_path / "cache")
    straight = train(cfg, corpus / "train", tmp_path / "a", progress=False)
    first = train(cfg, corpus / "train", tmp_path / "b", progress=False, until_epoch=1)
    assert first.name == "epoch_001.pt" and not (tmp_path / "b" / "final.pt").exists()
    resumed = train(cfg, corpus / "train", tmp_path / "b", progress=False, resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 8
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    opt_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "epoch_002.pt")["optimizer"]["state"]
    opt_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "epoch_002.pt")["optimizer"]["state"]
    assert all(torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"]) for k in opt_a)
    # a checkpoint whose optimiser has another number of parameter groups (an older version) is refused
    cfg.epochs = 3
    path = tmp_path / "b" / "checkpoints" / "epoch_002.pt"
    state = torch.load(path, weights_only=False)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]
    torch.save(state, path)
    (tmp_path / "b" / "final.pt").unlink()
    with pytest.raises(ConfigError, match="parameter group"):
        train(cfg, corpus / "train", tmp_path / "b", progress=False, resume=True)


def test_existing_experiment_is_protected(corpus, baseline, tmp_path):
    exp, _ = baseline
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(tiny_config(), corpus / "train", exp, progress=False)
    changed = tiny_config()
    changed.optim.lr = 0.5
    with pytest.raises(ConfigError, match="optim.lr"):
        train(changed, corpus / "train", exp, resume=True, progress=False)


def test_bayesian_model_starts_from_the_baseline(corpus, baseline, tmp_path):
    exp, _ = baseline
    cfg = tiny_config(epochs=1, name="bayes_xvector", examples=64, batch=16, lr=1e-6)
    cfg.data.cache_dir = str(exp / "feats")
    final = train(cfg, corpus / "train", tmp_path / "bayes", init=exp, progress=False)
    base, bayes = load_checkpoint(exp)["model_state"], load_checkpoint(final)["model_state"]
    for layer in ("frame_1", "seg_1", "classifier"):
        torch.testing.assert_close(bayes[f"{layer}.weight_mu"], base[f"{layer}.weight"], atol=1e-4, rtol=0)
    wrong = tiny_config(epochs=1, name="bayes_xvector", examples=64, batch=16)
    wrong.features = FeatureConfig(num_mel_bins=24, num_ceps=19)
    with pytest.raises(ConfigError, match="other features"):
        train(wrong, corpus / "train", tmp_path / "bayes2", init=exp, progress=False)


def test_on_the_fly_augmented_path_trains(corpus, tmp_path):
    noise = tmp_path / "musan" / "noise"
    noise.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(noise / "n.wav", (0.05 * rng.standard_normal(32000)).astype(np.float32), 16000)
    cfg = tiny_config(epochs=1, examples=32, batch=16)
    cfg.data.augment = {"musan": str(tmp_path / "musan")}
    final = train(cfg, corpus / "train", tmp_path / "exp", progress=False)
    records = [json.loads(line) for line in (tmp_path / "exp" / "train.log.jsonl").read_text().splitlines()]
    assert final.is_file() and records[-1]["kind"] == "epoch" and np.isfinite(records[-1]["loss"])
    assert not (tmp_path / "exp" / "feats").exists()  # utt2dur gives the lengths: no feature cache, no scan


def test_cli_train_applies_set_overrides(corpus, tmp_path):
    from spkver.cli import main
    from spkver.config import save_config

    base = save_config(tiny_config(epochs=3), tmp_path / "base.yaml")
    exp = tmp_path / "exp"
    rc = main(["train", "--config", str(base), "--data", str(corpus / "train"), "--exp", str(exp),
               "--set", "epochs=1", "--set", "data.examples_per_epoch=64", "--set", "model.embed_dim=8"])
    assert rc in (0, None)
    saved = load_config(exp / "config.yaml")
    assert (saved.epochs, saved.data.examples_per_epoch, saved.model.kwargs["embed_dim"]) == (1, 64, 8)
    assert load_model(exp / "final.pt")[0].embed_dim == 8
    assert main(["train", "--config", str(base), "--data", str(corpus / "train"), "--exp", str(tmp_path / "e2"),
                 "--set", "model.embed_dims=8"]) != 0


def test_cli_train_logs_one_summary_line_per_epoch(corpus, tmp_path, capsys):
    from spkver.cli import main
    from spkver.config import save_config

    config = save_config(tiny_config(epochs=2, examples=64), tmp_path / "c.yaml")
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(config), "--data", str(corpus / "train"), "--exp", str(exp),
                 "--dev-data", str(corpus / "train"), "--dev-trials", str(corpus / "trials")]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # logs and progress go to stderr
    assert "\r" not in err  # stderr is not a terminal: no progress bar redraws
    summaries = re.findall(r"INFO epoch (\d+)/2: loss ([0-9.]+), acc [0-9.]+, valid EER [0-9.]+% \(", err)
    assert [int(e) for e, _ in summaries] == [1, 2], err
    assert f"model: {exp / 'final.pt'}" in err
    epochs = [r for r in map(json.loads, (exp / "train.log.jsonl").read_text().splitlines())
              if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(r["seconds"] > 0 and "eer" in r["valid"] for r in epochs)
    assert [f"{r['loss']:.4f}" for r in epochs] == [loss for _, loss in summaries]
    assert main(["-q", "train", "--config", str(config), "--data", str(corpus / "train"),
                 "--exp", str(exp), "--resume"]) == 0
    assert capsys.readouterr() == ("", "")  # nothing left to do, and -q keeps INFO lines out


def test_cli_train_names_flags_as_typed(corpus, tmp_path, capsys):
    from spkver.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(config), "--data", str(corpus / "train"), "--exp", str(tmp_path / "e"),
              "--device", "gpu"])
    assert "--device" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--data", str(corpus / "train"), "--exp", str(tmp_path / "e"),
                 "--dev-data", str(corpus / "train")]) == 2
    assert "--dev-data and --dev-trials" in capsys.readouterr().err


def test_rho_parameters_get_their_own_rate_and_no_weight_decay():
    from spkver.nn import build_model
    from spkver.train import build_optimizer

    cfg = OptimConfig(name="adamw", lr=0.01, weight_decay=0.1, rho_lr_scale=5.0)
    bayes = build_model("bayes_xvector", feat_dim=8, num_classes=3, bayes_layers=["frame_1", "seg_1"], **TINY)
    opt = build_optimizer(bayes, cfg)
    main, rho = opt.param_groups
    assert (main["lr"], main["weight_decay"], rho["lr"], rho["weight_decay"]) == (0.01, 0.1, 0.05, 0.0)
    assert {id(p) for p in rho["params"]} == {id(m.weight_rho) for m in (bayes.frame_1, bayes.seg_1)} | \
        {id(m.bias_rho) for m in (bayes.frame_1, bayes.seg_1)}
    assert len(main["params"]) + len(rho["params"]) == len(list(bayes.parameters()))
    assert len(build_optimizer(build_model("xvector", feat_dim=8, num_classes=3, **TINY), cfg).param_groups) == 1
    with pytest.raises(ConfigError, match="rho_lr_scale"):
        OptimConfig(rho_lr_scale=0.0)
