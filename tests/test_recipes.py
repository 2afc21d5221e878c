"""The recipes end to end (every stage, debug configurations) on tiny fabricated corpora in the real layouts,
and the recipes' helper scripts (configuration overrides, data-dir merging, aggregation over seeds)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recipe_fixtures import so762_corpus, sre10_corpus, voxceleb_corpus

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CELL = re.compile(r"^\d+\.\d{2} / \d\.\d{4}$")  # "EER / minDCF"


def _env() -> dict:
    """This interpreter's bin folder (spkver, python) first on PATH; one thread per job (the jobs run in parallel)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], cwd: Path, expect_rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _recipe(name: str, args: list, cwd: Path, expect_rc: int = 0) -> subprocess.CompletedProcess:
    return _run(["bash", RECIPES / name / "run.sh", *args], cwd, expect_rc)


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """``{section heading: table rows (cells)}`` of a results.md, header and rule lines left out."""
    tables, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not line.startswith("|---") and not line.startswith("| eval set"):
            tables.setdefault(heading, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return tables


def _check_results(path: Path, expected: dict[str, set[str]]) -> None:
    """results.md holds one table per expected heading prefix, with rows (label, back-end) and numeric cells."""
    assert path.is_file(), f"{path} was not written"
    tables = _tables(path.read_text())
    for prefix, labels in expected.items():
        heading = next((h for h in tables if h.startswith(prefix)), None)
        assert heading is not None, f"no table '{prefix}...' in {path}: {sorted(tables)}"
        rows = tables[heading]
        assert {(r[0], r[1]) for r in rows} == {(label, b) for label in labels for b in ("cosine", "plda")}
        for row in rows:
            assert len(row) == 5 and all(CELL.match(c) for c in row[2:]), f"{path}: non-numeric row {row}"
            assert all(0.0 <= float(c.split(" / ")[0]) <= 100.0 for c in row[2:])


# ------------------------------------------------------------------------------------------ end to end
def test_voxceleb_recipe_with_cross_corpus_sre10(tmp_path):
    voxceleb_corpus(tmp_path / "voxceleb")
    sre = sre10_corpus(tmp_path / "sre")
    _recipe("voxceleb", ["--root", "voxceleb", "--conf", "debug", "--nj", 2, "--sre-root", sre["root"],
                         "--sre-key", sre["key"]], tmp_path)
    _check_results(tmp_path / "exp" / "results.md", {"in-domain": {"VoxCeleb1-O (cleaned)"},
                                                      "out-of-domain": {"SRE10 core (cross-corpus)"}})
    assert (tmp_path / "exp" / "results" / "vox1_o_plda.png").stat().st_size > 0
    conf = yaml.safe_load((tmp_path / "exp" / "conf" / "proposed.yaml").read_text())
    assert conf["model"]["name"] == "bayes_xvector"
    assert conf["data"]["cache_dir"] == str(tmp_path / "exp" / "feats")

    # a rerun skips every finished step
    rerun = _recipe("voxceleb", ["--stage", 1, "--stop-stage", 5, "--root", "voxceleb", "--conf", "debug",
                                 "--sre-root", sre["root"], "--sre-key", sre["key"]], tmp_path)
    assert "run:" not in rerun.stderr
    assert "skip: train_proposed" in rerun.stderr and "skip: score_sre10_plda_baseline" in rerun.stderr


def test_sre10_recipe_multi_enrollment(tmp_path):
    sre = sre10_corpus(tmp_path)
    _recipe("sre10", ["--root", sre["root"], "--key", sre["key"], "--train-data", sre["train"], "--conf", "debug",
                      "--nj", 2], tmp_path)
    _check_results(tmp_path / "exp" / "results.md", {"in-domain": {"SRE10 core"}})
    enroll_map = (tmp_path / "data" / "sre10" / "enroll_map").read_text().splitlines()
    assert max(len(line.split()) for line in enroll_map) == 3  # model m100 has two enrollment segments
    scores = (tmp_path / "exp" / "scores" / "sre10" / "plda_proposed.txt").read_text().splitlines()
    assert len(scores) == len(sre["key"].read_text().splitlines())


def test_so762_recipe_seeds_and_telephone_channel(tmp_path):
    so762_corpus(tmp_path / "so762")
    _recipe("so762", ["--root", "so762", "--conf", "debug", "--seeds", "3", "--nj", 2], tmp_path)
    labels = {"dev (in-domain)", "dev, telephone channel (out-of-domain)"}
    _check_results(tmp_path / "exp" / "seed3" / "results.md", {"speechocean762": labels})
    summary = _tables((tmp_path / "exp" / "results.md").read_text())
    rows = next(rows for heading, rows in summary.items() if heading.startswith("Results over 1 seed"))
    assert {(r[0], r[1]) for r in rows} == {(label, b) for label in labels for b in ("cosine", "plda")}
    assert all(re.match(r"^\d+\.\d+$", c) for r in rows for c in r[2:])
    per_seed = next(rows for heading, rows in summary.items() if heading.startswith("Per seed"))
    assert all(r[2] == "3" and "[" in r[3] for r in per_seed)  # bootstrap intervals present
    tel = (tmp_path / "data" / "dev_tel" / "wav.scp").read_text().split()
    assert tel[1].startswith("wav/") and tel[1].endswith(".wav")
    # the fusion control on two seeds (seed 4: seed 3's scores with noise added)
    control = ["bash", RECIPES / "so762" / "local" / "fusion_control.sh"]
    assert "at least two seeds" in _run(control + ["--seeds", "3"], tmp_path, 2).stderr
    assert "seed9" in _run(control + ["--seeds", "3 9"], tmp_path, 2).stderr
    rng = np.random.default_rng(0)
    for src in (tmp_path / "exp" / "seed3" / "scores").rglob("*.txt"):
        dst = tmp_path / "exp" / "seed4" / src.relative_to(tmp_path / "exp" / "seed3")
        dst.parent.mkdir(parents=True, exist_ok=True)
        lines = [line.split() for line in src.read_text().splitlines()]
        dst.write_text("".join(f"{a} {b} {float(x) + rng.normal():.6f}\n" for a, b, x in lines))
    shutil.copytree(tmp_path / "exp" / "seed3" / "results", tmp_path / "exp" / "seed4" / "results")
    rows = [r for r in _tables(_run(control + ["--seeds", "3 4"], tmp_path).stdout).values()][0]
    assert [(r[0], r[1]) for r in rows] == [("in-domain", "cosine"), ("in-domain", "plda"),
                                                ("telephone", "cosine"), ("telephone", "plda")]
    assert all(re.match(r"^\d+\.\d{2} / \d\.\d{4}$", c) for r in rows for c in r[2:])


# ---------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("recipe", ["voxceleb", "sre10", "so762"])
def test_configurations_load_and_pair_up(recipe):
    from spkver.config import load_config

    conf = RECIPES / recipe / "conf"
    for prefix in ("", "debug_"):
        base, prop = (load_config(conf / f"{prefix}{name}.yaml") for name in ("baseline", "proposed"))
        assert (base.model.name, prop.model.name) == ("xvector", "bayes_xvector")
        # the two systems differ only in the model and the KL weight
        assert (base.features, base.data, base.optim, base.epochs) == (prop.features, prop.data, prop.optim,
                                                                       prop.epochs)
        assert {k: v for k, v in prop.model.kwargs.items() if k in base.model.kwargs} == base.model.kwargs
        if prefix:
            assert base.epochs == 1 and base.model.kwargs["channels"] == 32
    assert load_config(conf / "baseline.yaml").features == load_config(conf / "debug_baseline.yaml").features



def test_so762_study_configurations_differ_from_proposed_only_in_bayesian_settings():
    from spkver.config import load_config

    conf = RECIPES / "so762" / "conf"
    main = load_config(conf / "proposed.yaml")
    study = sorted((conf / "study").glob("*_proposed.yaml"))
    assert len(study) >= 8
    for path in study:
        variant = load_config(path)
        assert load_config(path.with_name(path.name.replace("_proposed", "_baseline"))) == \
            load_config(conf / "baseline.yaml")
        changed = {k for k, v in variant.model.kwargs.items() if main.model.kwargs.get(k) != v}
        changed |= {"model"} if variant.model.name != main.model.name else set()
        changed |= {"kl_weight"} if variant.kl_weight != main.kl_weight else set()
        changed |= {"rho_lr_scale"} if variant.optim.rho_lr_scale != main.optim.rho_lr_scale else set()
        assert 1 <= len(changed) <= 2, f"{path.name}: {changed}"
        assert (variant.features, variant.data, variant.epochs) == (main.features, main.data, main.epochs)
        assert dataclasses.replace(variant.optim, rho_lr_scale=1.0) == main.optim


def test_options_are_checked(tmp_path):
    bad = _recipe("so762", ["--no-such-option", 1], tmp_path, expect_rc=1)
    assert "unknown option --no-such-option" in bad.stderr
    bad = _recipe("voxceleb", ["--nj", 0], tmp_path, expect_rc=1)
    assert "--nj must be a positive integer" in bad.stderr
    bad = _recipe("so762", ["--seeds", "0 x"], tmp_path, expect_rc=1)
    assert "--seeds must list integers" in bad.stderr
    assert "--stage N" in _recipe("sre10", ["--help"], tmp_path).stdout
    assert not (tmp_path / "exp").exists()


def test_make_conf_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 0\nmodel:\n  name: xvector\n  channels: 32\ndata:\n  batch_size: 8\n")
    out = tmp_path / "run" / "conf.yaml"
    _run([sys.executable, RECIPES / "common" / "make_conf.py", base, out, "seed=4", "model.channels=16",
          "data.augment.musan=/corpora/musan", "optim.betas=[0.8, 0.9]"], tmp_path)
    conf = yaml.safe_load(out.read_text())
    assert conf == {"seed": 4, "model": {"name": "xvector", "channels": 16},
                    "data": {"batch_size": 8, "augment": {"musan": "/corpora/musan"}},
                    "optim": {"betas": [0.8, 0.9]}}
    assert yaml.safe_load(base.read_text())["seed"] == 0
    bad = _run([sys.executable, RECIPES / "common" / "make_conf.py", base, out, "model.channels.x=1"], tmp_path, 2)
    assert "model.channels is not a section" in bad.stderr


def _data_dir(path: Path, utts: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    (path / "wav.scp").write_text("".join(f"{u} audio/{u}.wav\n" for u in sorted(utts)))
    (path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utts.items())))
    return path


def test_prepare_combine(tmp_path, capsys):
    from spkver.cli import main

    a = _data_dir(tmp_path / "corpus" / "a", {"s1-u1": "s1", "s1-u2": "s1"})
    b = _data_dir(tmp_path / "corpus" / "b", {"s1-u3": "s1", "s2-u1": "s2"})
    assert main(["prepare", "combine", "--out", str(tmp_path / "out"), str(a), str(b)]) in (0, None)
    wav = dict(line.split() for line in (tmp_path / "out" / "wav.scp").read_text().splitlines())
    assert wav == {u: str(tmp_path / "corpus" / "audio" / f"{u}.wav") for u in ("s1-u1", "s1-u2", "s1-u3", "s2-u1")}
    assert (tmp_path / "out" / "spk2utt").read_text() == "s1 s1-u1 s1-u2 s1-u3\ns2 s2-u1\n"
    assert main(["prepare", "combine", "--out", str(tmp_path / "out2"), str(a), str(a)]) != 0
    assert "'s1-u1' is also in" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "combine", "--out", str(tmp_path / "out3"), str(a), str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no such file or directory" in err and "nope" in err
    from spkver.data.kaldi import combine_data_dirs
    with pytest.raises(ValueError, match="no source"):
        combine_data_dirs(tmp_path / "out4", [])


def _eval_json(path: Path, eer: dict, dcf: dict, ci: bool) -> None:
    rows = []
    for name in ("baseline", "proposed", "fusion"):
        row = {"name": name, "eer": eer[name], "min_dcf": {"0.01": dcf[name]}, "n_target": 5, "n_nontarget": 15}
        if ci:
            row["eer_ci"] = [eer[name] - 1.0, eer[name] + 1.0]
            row["min_dcf_ci"] = {"0.01": [dcf[name] - 0.1, dcf[name] + 0.1]}
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"systems": rows}))


def test_aggregate_seeds(tmp_path):
    _eval_json(tmp_path / "seed0" / "r.json", {"baseline": 10.0, "proposed": 8.0, "fusion": 7.0},
               {"baseline": 0.5, "proposed": 0.4, "fusion": 0.4}, ci=True)
    _eval_json(tmp_path / "seed1" / "r.json", {"baseline": 14.0, "proposed": 8.0, "fusion": 9.0},
               {"baseline": 0.7, "proposed": 0.4, "fusion": 0.5}, ci=False)
    out = _run([sys.executable, RECIPES / "so762" / "local" / "aggregate_seeds.py", "--exp", tmp_path,
                "--seeds", "0", "1", "--p-target", "0.01", "--entry", "dev", "plda", "r.json"], tmp_path).stdout
    tables = _tables(out)
    (summary,) = tables["Results over 2 seed(s): 0 1"]
    # mean +- sample standard deviation: EER (10, 14) -> 12 +- 2.83; minDCF (0.5, 0.7) -> 0.6 +- 0.1414
    assert summary == ["dev", "plda", "12.00 ± 2.83", "8.00 ± 0.00", "8.00 ± 1.41",
                       "0.6000 ± 0.1414", "0.4000 ± 0.0000", "0.4500 ± 0.0707"]
    seed0, seed1 = next(rows for h, rows in tables.items() if h.startswith("Per seed"))
    assert seed0[3] == "10.00 [9.00, 11.00] / 0.5000 [0.4000, 0.6000]"
    assert seed1[3] == "14.00 / 0.7000"
    bad = _run([sys.executable, RECIPES / "so762" / "local" / "aggregate_seeds.py", "--exp", tmp_path,
                "--seeds", "0", "2", "--p-target", "0.01", "--entry", "dev", "plda", "r.json"], tmp_path, 2)
    assert "seed2" in bad.stderr and "no such file" in bad.stderr


def test_study_table(tmp_path):
    def run_dir(root, seeds, offset):
        for seed in seeds:
            for name in ("dev", "dev_tel"):
                for backend in ("cosine", "plda"):
                    base = 10.0 + seed + (5 if name == "dev_tel" else 0)
                    _eval_json(root / f"seed{seed}" / "results" / f"{name}_{backend}.json",
                               {"baseline": base, "proposed": base - offset, "fusion": base - 2 * offset},
                               {"baseline": 0.5, "proposed": 0.5 - offset / 10, "fusion": 0.4}, ci=False)

    run_dir(tmp_path / "exp", (0, 1), 1.0)
    run_dir(tmp_path / "study" / "good", (0, 1), 2.0)
    run_dir(tmp_path / "study" / "half", (0,), 3.0)
    script = RECIPES / "so762" / "local" / "study_table.py"
    out = _run([sys.executable, script, "--exp", tmp_path / "exp", "--study", tmp_path / "study", "--seeds", "0", "1"],
               tmp_path).stdout
    eer = _tables(out)["EER (%), mean over seeds 0 1; cells: proposed / fusion with the main run's baseline"][1:]
    assert eer[0] == ["baseline (main run)", "10.50", "10.50", "15.50", "15.50"]
    assert eer[1] == ["main run: proposed / fusion", "9.50 / 8.50", "9.50 / 8.50", "14.50 / 13.50", "14.50 / 13.50"]
    assert eer[2][0] == "good: proposed / fusion" and eer[2][4] == "13.50 / 11.50" and len(eer) == 3
    assert "not finished for every seed (0 1): half" in out
    one = _run([sys.executable, script, "--exp", tmp_path / "exp", "--study", tmp_path / "study", "--seeds", "0"],
               tmp_path).stdout
    assert "half: proposed / fusion | 7.00 / 4.00" in one
    bad = _run([sys.executable, script, "--exp", tmp_path / "exp", "--seeds", "0", "5"], tmp_path, 2)
    assert "not all finished" in bad.stderr


def test_posterior_stats(tmp_path):
    from spkver.checkpoint import save_checkpoint
    from spkver.features import FeatureConfig
    from spkver.nn import build_model

    def checkpoint(path, name, **kw):
        kwargs = {"feat_dim": 30, "num_classes": 5, "channels": 16, "stats_channels": 32, "embed_dim": 8, **kw}
        return save_checkpoint(path, model=build_model(name, **kwargs), model_name=name, model_kwargs=kwargs,
                               features=FeatureConfig().to_dict(), speakers=[f"s{i}" for i in range(5)])

    script = RECIPES / "so762" / "local" / "posterior_stats.py"
    bayes = checkpoint(tmp_path / "b.pt", "bayes_xvector", bayes_layers=["frame_1", "seg_1"], init_rho=-3.0)
    out = _run([sys.executable, script, bayes], tmp_path).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| frame") or line.startswith("| seg")]
    assert [r[0].strip() for r in rows] == ["frame_1", "seg_1"]
    assert all(float(r[1]) == pytest.approx(math.log1p(math.exp(-3.0)), abs=1e-4) for r in rows)  # sigma at init
    bad = _run([sys.executable, script, checkpoint(tmp_path / "x.pt", "xvector")], tmp_path, 2)
    assert "no Bayesian layers" in bad.stderr
    assert "no such" in _run([sys.executable, script, tmp_path / "nope.pt"], tmp_path, 2).stderr.lower()
