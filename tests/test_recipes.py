"""The recipes end to end (every stage, debug configurations) on tiny fabricated corpora in the real layouts,
and the recipes' helper scripts (data-dir merging, aggregation over seeds)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recipe_fixtures import so762_corpus, sre10_corpus, voxceleb_corpus

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
NUM = r"\d+\.\d{2}(?: \[\d+\.\d{2}, \d+\.\d{2}\])?"  # EER, optionally with its bootstrap interval
DCF = r"\d\.\d{4}(?: \[\d\.\d{4}, \d\.\d{4}\])?"
CELL = re.compile(rf"^{NUM} / {DCF}$")  # "EER / minDCF", with or without intervals


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
        elif line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line) and not line.startswith("| eval set"):
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


def _metrics_of(trials: Path, scores: Path) -> tuple[float, float]:
    """(EER %, minDCF at 0.01) computed directly from a score file."""
    from scoring import io, metrics

    t = io.read_trials(trials)
    x = io.align_scores(t, scores)
    lab = t.label == 1
    return 100 * metrics.eer(x[lab], x[~lab]), metrics.min_dcf(x[lab], x[~lab], 0.01)


# ------------------------------------------------------------------------------------------ end to end
def test_voxceleb_recipe_with_cross_corpus_sre10(tmp_path):
    voxceleb_corpus(tmp_path / "voxceleb")
    sre = sre10_corpus(tmp_path / "sre")
    _recipe("voxceleb", ["--root", "voxceleb", "--conf", "debug", "--nj", 2, "--sre-root", sre["root"],
                         "--sre-key", sre["key"]], tmp_path)
    _check_results(tmp_path / "exp" / "results.md", {"in-domain": {"VoxCeleb1-O (cleaned)"},
                                                      "out-of-domain": {"SRE10 core (cross-corpus)"}})
    assert (tmp_path / "exp" / "results" / "vox1_o_plda.png").stat().st_size > 0
    conf = yaml.safe_load((tmp_path / "exp" / "proposed" / "config.yaml").read_text())  # resolved: base + --set
    assert conf["model"]["name"] == "bayes_xvector" and conf["model"]["channels"] == 32 and "base" not in conf
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


def test_ecapa_debug_runs_on_voxceleb_and_sre10(tmp_path):
    """--conf debug_ecapa: the ECAPA-TDNN baseline and Bayesian ECAPA through both recipes end to end."""
    voxceleb_corpus(tmp_path / "voxceleb")
    sre = sre10_corpus(tmp_path / "sre")
    for run in ("vox", "sre10"):
        (tmp_path / run).mkdir()
    _recipe("voxceleb", ["--root", tmp_path / "voxceleb", "--conf", "debug_ecapa", "--nj", 2], tmp_path / "vox")
    _check_results(tmp_path / "vox" / "exp" / "results.md", {"in-domain": {"VoxCeleb1-O (cleaned)"}})
    _recipe("sre10", ["--root", sre["root"], "--key", sre["key"], "--train-data", sre["train"], "--conf",
                      "debug_ecapa", "--nj", 2], tmp_path / "sre10")
    _check_results(tmp_path / "sre10" / "exp" / "results.md", {"in-domain": {"SRE10 core"}})
    for run in ("vox", "sre10"):
        for system, name in (("baseline", "ecapa_tdnn"), ("proposed", "bayes_ecapa_tdnn")):
            conf = yaml.safe_load((tmp_path / run / "exp" / system / "config.yaml").read_text())
            assert conf["model"]["name"] == name and conf["features"]["num_mel_bins"] == 80


@pytest.fixture(scope="module")
def so762_debug(tmp_path_factory) -> Path:
    """The folder of one debug run of the so762 recipe (seed 3), shared by the tests that read it; they write only
    beside its exp/ (the calibration protocol: data/dev_mixed, exp_calib/)."""
    root = tmp_path_factory.mktemp("so762_debug")
    so762_corpus(root / "so762")
    _recipe("so762", ["--root", "so762", "--conf", "debug", "--seeds", "3", "--nj", 2], root)
    return root


def test_so762_recipe_seeds_and_telephone_channel(so762_debug):
    tmp_path = so762_debug
    labels = {"dev (in-domain)", "dev, telephone channel (out-of-domain)"}
    _check_results(tmp_path / "exp" / "seed3" / "results.md", {"speechocean762": labels})
    # a cell of the per-seed table is the metric of its score file
    row = next(r for r in _tables((tmp_path / "exp" / "seed3" / "results.md").read_text())[
        next(h for h in _tables((tmp_path / "exp" / "seed3" / "results.md").read_text()) if h.startswith("speech"))]
        if r[:2] == ["dev (in-domain)", "plda"])
    eer, dcf = _metrics_of(tmp_path / "data" / "dev" / "trials", tmp_path / "exp" / "seed3" / "scores" / "dev" /
                           "plda_baseline.txt")
    assert row[2].startswith(f"{eer:.2f} [") and f" / {dcf:.4f} [" in row[2]
    # stage 7 over one seed: that seed's figures (a single run has no spread to show)
    text = (tmp_path / "exp" / "results.md").read_text()
    assert text.startswith("# Results over 1 seed(s): 3")
    summary = _tables(text)
    rows = next(rows for heading, rows in summary.items() if heading.startswith("speechocean762"))
    assert {(r[0], r[1]) for r in rows} == {(label, b) for label in labels for b in ("cosine", "plda")}
    cell = next(r for r in rows if r[:2] == ["dev (in-domain)", "plda"])[2]
    assert cell == f"{eer:.2f} / {dcf:.4f}"
    per_seed = next(rows for heading, rows in summary.items() if heading.startswith("Seed 3"))
    assert all("[" in c for r in per_seed for c in r[2:])  # bootstrap intervals present
    tel = (tmp_path / "data" / "dev_tel" / "wav.scp").read_text().split()
    assert tel[1].startswith("wav/") and tel[1].endswith(".wav")


def test_so762_recipe_trains_with_augmentation_from_the_training_set(tmp_path):
    so762_corpus(tmp_path / "so762")
    _recipe("so762", ["--root", "so762", "--conf", "debug_augment", "--seeds", "1", "--stop-stage", 3, "--nj", 2],
            tmp_path)
    import torch

    for system in ("baseline", "proposed"):
        model = tmp_path / "exp" / "seed1" / system
        conf = yaml.safe_load((model / "config.yaml").read_text())
        assert conf["data"]["speed_perturb"] == [0.9, 1.1] and conf["data"]["spec_augment"]
        state = torch.load(model / "final.pt", map_location="cpu", weights_only=False)
        assert len(state["speakers"]) == 18 and "sp0.9-9000" in state["speakers"]  # 6 speakers, 3 speeds
    feats = tmp_path / "exp" / "feats"
    assert len(list((feats / "rirs").glob("sim-*/rir_*.wav"))) == 4  # simulated once, shared by both systems
    assert len(list((feats / "babble").iterdir())) == 1


def test_so762_calibration_protocol(so762_debug):
    """local/calibration.sh on the debug run: every row of every condition with numbers, a cell equal to the metrics
    of its calibrated score file, the spread table and plot; a rerun skips every step."""
    root = so762_debug
    args = ["bash", RECIPES / "so762" / "local" / "calibration.sh", "--conf", "debug", "--seeds", 3,
            "--mc-samples", 2, "--nj", 2, "--rir-count", 2, "--bootstrap", 20]
    _run(args, root)
    text = (root / "exp_calib" / "results.md").read_text()
    tables = _tables(text)
    names = ["baseline + calibration", "baseline, duration-uncertainty PLDA + calibration",
             "proposed (posterior mean) + calibration", "proposed MC + calibration",
             "proposed MC, spread-uncertainty PLDA + calibration", "baseline + QMF (duration)",
             "proposed MC + QMF (spread)", "proposed MC + QMF (duration, spread)"]
    conditions = ["dev, telephone channel: calibrated on dev_mixed", "dev_mixed: calibrated on dev, telephone channel",
                  "dev (in-domain): calibrated on dev_mixed"]
    for heading in conditions:
        rows = next(rows for h, rows in tables.items() if h.startswith(heading))
        assert rows[0][:2] == ["System", "EER(%)"] and [r[0] for r in rows[1:]] == names, rows
        assert rows[0][1:6] == ["EER(%)", "EER ROCCH(%)", "minDCF(0.01)", "actDCF(0.01)", "Cllr"]
        for row in rows[1:]:
            assert all(re.fullmatch(r"\d+\.\d{2,4}", c) for c in row[1:6]), f"non-numeric row {row}"
    # per seed, under each condition: the same rows with bootstrap intervals of every metric
    seed_tables = [rows for h, rows in tables.items() if h.startswith("Seed 3, with bootstrap")]
    assert len(seed_tables) == 1 and len(seed_tables[0]) == 3 * (1 + len(names))  # one heading, 3 tables
    header = seed_tables[0][0]
    for key in ("EER CI(%)", "minDCF CI(0.01)", "actDCF CI(0.01)", "Cllr CI"):
        assert key in header, header
    intervals = [r for r in seed_tables[0] if r[0] != "System"]
    assert [r[0] for r in intervals] == names * 3
    for row in intervals:
        cis = [row[header.index(k)] for k in ("EER CI(%)", "actDCF CI(0.01)", "Cllr CI")]
        assert all(re.fullmatch(r"\[\d+\.\d+, \d+\.\d+\]", c) for c in cis), row
    # a cell is the metric of its score file: proposed MC + QMF (spread), in-domain
    from scoring import io, metrics

    trials = io.read_trials(root / "data" / "dev" / "trials")
    llr = io.align_scores(trials, root / "exp_calib" / "seed3" / "llr" / "dev" / "proposed_mc_qmf_spread.txt")
    tar, non = llr[trials.label == 1], llr[trials.label == 0]
    rows = next(rows for h, rows in tables.items() if h.startswith("dev (in-domain)"))
    row = next(r for r in rows if r[0] == "proposed MC + QMF (spread)")
    assert row[1] == f"{100 * metrics.eer(tar, non):.2f}" and row[3] == f"{metrics.min_dcf(tar, non, 0.01):.4f}"
    assert row[4] == f"{float(metrics.act_dcf(tar, non, 0.01)):.4f}" and row[5] == f"{metrics.cllr(tar, non):.4f}"
    seed_rows = json.loads((root / "exp_calib" / "seed3" / "results" / "dev.json").read_text())["systems"]
    seed_row = next(r for r in seed_rows if r["name"] == "proposed MC + QMF (spread)")
    assert seed_row["cllr"] == pytest.approx(metrics.cllr(tar, non)) and len(seed_row["cllr_ci"]) == 2
    # the MC embeddings have a spread; the mixed copy keeps dev's ids and says what each utterance got
    assert io.read_embeddings(root / "exp_calib" / "seed3" / "emb" / "proposed_mc" / "dev_tel.npz").spread is not None
    dev_ids = [line.split()[0] for line in (root / "data" / "dev" / "wav.scp").read_text().splitlines()]
    mixed = (root / "data" / "dev_mixed" / "utt2degradation").read_text().splitlines()
    assert [line.split()[0] for line in mixed] == dev_ids
    assert {line.split()[1] for line in mixed} <= {"noise", "reverb", "short"}
    spread = next(rows for h, rows in tables.items() if h.startswith("Spread of the proposed"))
    assert [r[0] for r in spread[1:4]] == ["dev", "dev_tel", "dev_mixed"]
    assert (root / "exp_calib" / "spread.png").stat().st_size > 0
    rerun = _run(args, root)
    assert "run:" not in rerun.stderr and "skip: seed3.calibrate_tel_baseline_cal" in rerun.stderr


def test_so762_default_system_from_a_run(so762_debug):
    """local/make_default_system.sh builds a system folder from a run's seed: its extractor named after the
    network, the run's PLDA options, calibrated on the dev trials; a missing run is refused by name."""
    root = so762_debug
    script = ["bash", RECIPES / "so762" / "local" / "make_default_system.sh", "--conf", "debug"]
    _run(script + ["--seed", 3, "--out", "system"], root)
    from spkver.system import read_manifest

    manifest = read_manifest(root / "system")
    assert manifest["name"] == "so762-xvector-plda" and manifest["calibration_set"]["n_trials"] > 0
    assert [r["name"] for r in manifest["metrics"]["rows"]] == ["xvector", "calibrated"]
    import spkver

    wav = next((root / "so762" / "audio").rglob("*.*"))
    assert isinstance(spkver.load(root / "system").score(wav, wav), float)
    err = _run(script + ["--seed", 4, "--out", "other"], root, 1).stderr
    assert "exp/seed4/baseline/final.pt: no such file" in err and not (root / "other").exists()


def test_so762_regime_study(tmp_path):
    """local/regime.sh on a two-seed debug run: the short point reuses the main run's models (copied, with their
    markers: nothing is retrained) on 1 s excerpts, with its tables over the seeds and the two-baseline fusion
    control; bad points and settings are refused before anything is written."""
    so762_corpus(tmp_path / "so762")
    _recipe("so762", ["--root", "so762", "--conf", "debug", "--seeds", "0 1", "--stop-stage", 4, "--nj", 2], tmp_path)
    script = ["bash", RECIPES / "so762" / "local" / "regime.sh", "--conf", "debug", "--seeds", "0 1",
              "--points", "short", "--nj", 2]
    assert "at least two seeds" in _run(script[:2] + ["--seeds", "0"], tmp_path, 2).stderr
    assert "unknown point spk" in _run(script[:2] + ["--points", "spk"], tmp_path, 2).stderr
    assert "needs 2 <= N < the 6 speakers" in _run(script[:2] + ["--points", "short spk6"], tmp_path, 2).stderr
    assert "--long-epochs must be" in _run(script[:2] + ["--points", "long", "--long-epochs", "0"], tmp_path, 2).stderr
    assert not (tmp_path / "exp_regime").exists()
    run = _run(script, tmp_path)
    assert "run: seed0.train" not in run.stderr and "run: seed0.extract_baseline_train" not in run.stderr
    regime = tmp_path / "exp_regime"
    durations = [float(line.split()[1]) for line in (regime / "data_short" / "dev_tel" / "utt2dur").read_text()
                 .splitlines()]
    assert max(durations) <= 1.0 + 1e-3 and (regime / "data_short" / "dev" / "trials").exists()
    for seed in (0, 1):
        main, short = (tmp_path / "exp" / f"seed{seed}", regime / "short" / f"seed{seed}")
        assert (short / "baseline" / "final.pt").read_bytes() == (main / "baseline" / "final.pt").read_bytes()
        assert (short / "scores" / "dev_tel" / "plda_proposed.txt").stat().st_size > 0
    text = (regime / "short" / "results.md").read_text()
    assert text.startswith("# Results over 2 seed(s): 0 1")
    rows = next(iter(_tables((regime / "short" / "control.md").read_text()).values()))
    assert ["in-domain, baseline+baseline", "plda"] in [r[:2] for r in rows]
    # stage 8 again over one of the seeds: the summary is recomputed, not the two-seed one kept
    _recipe("so762", ["--stage", 8, "--data", regime / "data_short", "--exp", regime / "short", "--conf", "debug",
                      "--seeds", 0], tmp_path)
    summary = _tables((regime / "short" / "results.md").read_text())
    cells = next(rows for heading, rows in summary.items() if heading.startswith("speechocean762"))
    assert all("±" not in cell for row in cells for cell in row[2:]), cells
    # the long point's setting: ./run.sh --overrides reaches the configuration a model is trained with
    _recipe("so762", ["--stage", 2, "--stop-stage", 2, "--conf", "debug", "--seeds", 0, "--exp", "exp_long",
                      "--overrides", "epochs=2"], tmp_path)
    assert yaml.safe_load((tmp_path / "exp_long" / "seed0" / "baseline" / "config.yaml").read_text())["epochs"] == 2


# ---------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("recipe", ["voxceleb", "sre10", "so762"])
def test_configurations_load_and_pair_up(recipe):
    from spkver.config import load_config

    conf = RECIPES / recipe / "conf"
    prefixes = [p for p in ("", "debug_", "ecapa_", "debug_ecapa_", "augment_", "debug_augment_", "augment_ecapa_")
                if (conf / f"{p}baseline.yaml").exists()]
    assert "ecapa_" in prefixes
    for prefix in prefixes:
        base, prop = (load_config(conf / f"{prefix}{name}.yaml") for name in ("baseline", "proposed"))
        assert (base.model.name, prop.model.name) == (("ecapa_tdnn", "bayes_ecapa_tdnn") if "ecapa" in prefix
                                                      else ("xvector", "bayes_xvector"))
        # the two systems differ only in the model and the KL weight
        assert (base.features, base.data, base.optim, base.epochs, base.loss) == (prop.features, prop.data,
                                                                                  prop.optim, prop.epochs, prop.loss)
        assert {k: v for k, v in prop.model.kwargs.items() if k in base.model.kwargs} == base.model.kwargs
        if prefix.startswith("debug"):
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
    bad = _recipe("so762", ["--overrides", "epochs=2 kl_weight"], tmp_path, expect_rc=1)
    assert "--overrides: 'kl_weight' is not KEY=VALUE" in bad.stderr
    bad = _recipe("so762", ["--lda-dim", "x"], tmp_path, expect_rc=1)
    assert "--lda-dim must be a positive integer" in bad.stderr
    assert "--stage N" in _recipe("sre10", ["--help"], tmp_path).stdout
    assert not (tmp_path / "exp").exists()


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


def _scored_runs(root: Path, seeds=(0, 1, 2), n_spk=8) -> None:
    """A finished so762 run as the helper scripts see it: data/dev/{trials,utt2spk} and per seed the score files
    of both systems on dev and dev_tel under both back-ends (scores: a shift on targets plus noise)."""
    rng = np.random.default_rng(0)
    utts = [f"s{s}-u{u}" for s in range(n_spk) for u in range(4)]
    dev = root / "data" / "dev"
    dev.mkdir(parents=True)
    (dev / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    (dev / "trials").write_text("".join(f"{a} {b} {'target' if a[:2] == b[:2] else 'nontarget'}\n"
                                        for a, b in pairs))
    label = np.array([a[:2] == b[:2] for a, b in pairs], dtype=float)
    for run in (root / "exp", root / "exp_study" / "kl1", root / "exp_study" / "half"):
        for seed in seeds if run.name != "half" else seeds[:1]:
            for s in ("dev", "dev_tel"):
                for backend in ("cosine", "plda"):
                    for k, system in enumerate(("baseline", "proposed")):
                        x = (1.5 + k) * label + rng.normal(size=label.size)
                        f = run / f"seed{seed}" / "scores" / s / f"{backend}_{system}.txt"
                        f.parent.mkdir(parents=True, exist_ok=True)
                        f.write_text("".join(f"{a} {b} {v:.5f}\n" for (a, b), v in zip(pairs, x)))


def _cv_fusion(root: Path, run_a: list[Path], run_b: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """EER (%) and minDCF of the fusion of score files a[i] + b[i], per i, through the library directly."""
    from scoring import io
    from scoring.pipeline import evaluate_systems

    trials = io.read_trials(root / "data" / "dev" / "trials")
    spk = {u: u.split("-")[0] for u in np.unique(trials.enroll)}
    eers, dcfs = [], []
    for a, b in zip(run_a, run_b):
        rows, _ = evaluate_systems({"a": io.align_scores(trials, a), "b": io.align_scores(trials, b)}, trials,
                                   fusion_groups=[spk[e] for e in trials.enroll])
        eers.append(rows[-1]["eer"])
        dcfs.append(rows[-1]["min_dcf"]["0.01"])
    return np.array(eers), np.array(dcfs)


def _cell(eer: np.ndarray, dcf: np.ndarray) -> str:
    return f"{eer.mean():.2f} ± {eer.std(ddof=1):.2f} / {dcf.mean():.4f} ± {dcf.std(ddof=1):.4f}"


def test_fusion_control_table_is_the_fusion_of_the_seed_pairs(tmp_path):
    _scored_runs(tmp_path)
    control = ["bash", RECIPES / "so762" / "local" / "fusion_control.sh"]
    assert "at least two seeds" in _run(control + ["--seeds", "0"], tmp_path, 2).stderr
    assert "seed9" in _run(control + ["--seeds", "0 9"], tmp_path, 2).stderr
    rows = next(iter(_tables(_run(control, tmp_path).stdout).values()))
    assert [(r[0], r[1]) for r in rows][:3] == [("in-domain, baseline+baseline", "cosine"),
                                                ("in-domain, proposed+proposed", "cosine"),
                                                ("in-domain, baseline+proposed", "cosine")]
    assert len(rows) == 12
    scores = lambda system, seeds: [tmp_path / "exp" / f"seed{s}" / "scores" / "dev_tel" / f"plda_{system}.txt"
                                    for s in seeds]
    expected = {"baseline+baseline": _cv_fusion(tmp_path, scores("baseline", (0, 1, 2)), scores("baseline", (1, 2, 0))),
                "baseline+proposed": _cv_fusion(tmp_path, scores("baseline", (0, 1, 2)), scores("proposed", (0, 1, 2)))}
    for kind, (eer, dcf) in expected.items():
        assert next(r for r in rows if r[:2] == [f"telephone, {kind}", "plda"])[2] == _cell(eer, dcf)


def test_study_table_puts_variants_beside_the_main_run(tmp_path):
    _scored_runs(tmp_path)
    (tmp_path / "exp_study" / "data_short" / "dev").mkdir(parents=True)  # a data dir (local/regime.sh): no run
    script = ["bash", RECIPES / "so762" / "local" / "study_table.sh"]
    out = _run(script + ["--seeds", "0 1"], tmp_path).stdout
    rows = next(iter(_tables(out).values()))
    assert {r[0] for r in rows} == {"main run: in-domain", "main run: telephone", "kl1: in-domain", "kl1: telephone"}
    assert "not scored for every seed (0 1): half\n" in out
    row = next(r for r in rows if r[:2] == ["kl1: in-domain", "cosine"])
    files = [tmp_path / "exp_study" / "kl1" / f"seed{s}" / "scores" / "dev" / "cosine_proposed.txt" for s in (0, 1)]
    values = np.array([_metrics_of(tmp_path / "data" / "dev" / "trials", f) for f in files])
    assert row[3] == _cell(values[:, 0], values[:, 1])
    one = _tables(_run(script + ["--seeds", "0"], tmp_path).stdout)
    assert any(r[0] == "half: in-domain" for r in next(iter(one.values())))
    assert "has not scored" in _run(script + ["--seeds", "0 5"], tmp_path, 2).stderr


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
