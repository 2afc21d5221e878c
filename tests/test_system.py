"""spkver.system: a system folder is built atomically with its manifest (metrics, hashes), loads back, scores
like its stored pieces by hand, and refuses folders that are not systems, too new, incomplete, tampered with or
inconsistent, naming the file; `spkver system build` and the extraction fixes it relies on."""

import json
import math

import numpy as np
import pytest
import torch

from scoring.cosine import CosineScorer
from scoring.io import Embeddings, read_embeddings, write_embeddings
from scoring.plda import PLDA
from spkver.cli import main
from spkver.system import FORMAT_VERSION, SystemFolderError, load_system, read_manifest, sha256_file
from system_fixtures import build, dev_files, tiny_setup, write_wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def systems(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("systems")
    return {"plda": build(setup, root / "plda"),
            "cosine_asnorm": build(setup, root / "cosine_asnorm", backend="cosine", norm="asnorm", top_k=8),
            "fusion": build(setup, root / "fusion", models=("a", "b"), norm="snorm")}


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _reseal(folder, rel):
    """Record the current hash of ``rel`` in system.json (a consistent but wrongly shaped system)."""
    manifest = json.loads((folder / "system.json").read_text())
    manifest["files"][rel] = {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
    (folder / "system.json").write_text(json.dumps(manifest))


def test_cli_build_from_data_dirs_writes_a_complete_manifest(setup, tmp_path, capsys):
    out = tmp_path / "sys"
    assert main(["system", "build", "--model", str(setup["models"]["a"]), "--train-data", str(setup["train"]),
                 "--backend", "plda", "--lda-dim", "6", "--calibrate-data", str(setup["dev"]),
                 "--calibrate-trials", str(setup["trials"]), "--name", "base", "--out", str(out),
                 "--device", "cpu", "--workers", "0"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sys"]  # no OUT.work/, no temporary folder
    manifest = read_manifest(out)
    assert manifest["format"] == "spkver-system" and manifest["format_version"] == FORMAT_VERSION == 1
    assert set(manifest["files"]) == {"extractors/base.pt", "backend/base.npz", "calibration.npz"}
    for rel, entry in manifest["files"].items():
        assert entry == {"sha256": sha256_file(out / rel), "size": (out / rel).stat().st_size}
    (x,) = manifest["extractors"]
    assert x["features"]["num_mel_bins"] == 24 and x["model"]["name"] == "xvector" and x["model"]["embed_dim"] == 16
    assert x["backend"] == {"kind": "plda", "file": "backend/base.npz", "lda_dim": 6, "dim": 6}
    assert manifest["training"]["n_speakers"] == 10 and manifest["training"]["n_utterances"] == 40
    cal = manifest["calibration_set"]
    assert (cal["n_speakers"], cal["n_utterances"], cal["n_trials"]) == (6, 24, cal["n_target"] + 60)
    metrics = manifest["metrics"]
    assert [r["name"] for r in metrics["rows"]] == ["base", "calibrated"] and "act_dcf" in metrics["rows"][1]
    cv = metrics["cross_validated"]
    assert cv["n_folds"] == 2 and cv["p_target"] == 0.01 and cv["act_dcf"] >= cv["min_dcf"] > 0
    # the checkpoint holds the embedding network only (no classifier, optimiser ...), and loads with weights_only
    ckpt = torch.load(out / "extractors/base.pt", weights_only=True)
    assert not {"optimizer", "scheduler", "rng", "sampler"} & set(ckpt) and ckpt["speakers"] == []
    assert ckpt["head"] is False and not any(k.startswith(("seg_2.", "classifier.")) for k in ckpt["model_state"])
    assert x["model"]["parameters"] == sum(v.numel() for k, v in ckpt["model_state"].items()
                                           if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert main(["system", "info", "--system", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["cross_validated"] == cv


def test_llr_is_the_calibrated_cosine_asnorm_score_by_hand(setup, systems):
    import spkver

    folder = systems["cosine_asnorm"]
    sv = spkver.load(folder)
    files = dev_files(setup)
    a, b = files["spk0101"][0], files["spk0102"][1]
    ea, eb = sv.embed(a), sv.embed(b)
    # the embedding is the one extraction gives
    ref = read_embeddings(setup["emb"]["a/dev"])
    np.testing.assert_allclose(ea, ref.get([a.stem])[0], rtol=1e-4, atol=1e-4)
    cos = CosineScorer.load(folder / "backend/a.npz")
    cohort = read_embeddings(folder / "cohort/a.npz")
    top = lambda s: np.sort(s)[-8:]  # noqa: E731  (top_k = 8)
    ca, cb = top(cos.score_matrix(ea[None], cohort.vectors)[0]), top(cos.score_matrix(eb[None], cohort.vectors)[0])
    raw = float(cos.score(ea[None], eb[None])[0])
    normed = 0.5 * ((raw - ca.mean()) / ca.std() + (raw - cb.mean()) / cb.std())
    with np.load(folder / "calibration.npz", allow_pickle=False) as z:
        llr = float(z["weights"][0]) * normed + float(z["offset"])
    assert sv.score(a, b) == pytest.approx(llr, rel=1e-5, abs=1e-6)
    d = sv.verify(a, b)
    assert d.threshold == pytest.approx(math.log(99)) and d.accept == (d.llr >= d.threshold)


def test_plda_llr_by_hand_and_same_speaker_scores_higher(setup, systems):
    import spkver

    folder = systems["plda"]
    sv = spkver.load(folder)
    files = dev_files(setup)
    a, b = files["spk0103"][0], files["spk0103"][3]
    plda = PLDA.load(folder / "backend/a.npz")
    with np.load(folder / "calibration.npz", allow_pickle=False) as z:
        scale, offset = float(z["weights"][0]), float(z["offset"])
    raw = plda.score(sv.embed(a)[None], sv.embed(b)[None])[0]
    assert sv.score(a, b) == pytest.approx(scale * raw + offset, rel=1e-5, abs=1e-6)
    spks = sorted(files)
    same = [sv.score(files[s][0], files[s][k]) for s in spks for k in (2, 3)]
    other = [sv.score(files[s][0], files[t][k]) for s, t in zip(spks, spks[1:] + spks[:1]) for k in (2, 3)]
    assert np.mean(same) > np.mean(other)


def test_two_extractors_are_fused(setup, systems):
    import spkver

    folder = systems["fusion"]
    manifest = read_manifest(folder)
    assert manifest["calibration"]["kind"] == "fusion" and len(manifest["calibration"]["weights"]) == 2
    assert [r["name"] for r in manifest["metrics"]["rows"]] == ["a", "b", "fusion"]
    sv = spkver.load(folder)
    files = dev_files(setup)
    a, b = files["spk0104"][0], files["spk0105"][2]
    assert sv.embed(a).shape == (28,) and sv.embed(a, extractor="b").shape == (12,)
    system = sv.system
    from scoring.io import Trials

    pairs = [(Embeddings(["a"], sv.embed(a, x.name)[None]), Embeddings(["b"], sv.embed(b, x.name)[None]))
             for x in system.extractors]
    raw = system.backend.raw_scores(Trials(["a"], ["b"]), pairs)[0]
    w = np.asarray(manifest["calibration"]["weights"])
    assert sv.score(a, b) == pytest.approx(float(raw @ w) + manifest["calibration"]["offset"], rel=1e-5)


@pytest.mark.parametrize("backend, norm, models", [("cosine", "none", ("a",)), ("plda", "asnorm", ("a", "b")),
                                                   ("cosine", "snorm", ("a", "b"))])
def test_every_backend_and_norm_builds_loads_and_scores(setup, tmp_path, backend, norm, models):
    import spkver

    kwargs = {"top_k": 8} if norm == "asnorm" else {}
    folder = build(setup, tmp_path / "s", models=models, backend=backend, norm=norm, **kwargs)
    manifest = read_manifest(folder)
    assert [(x["backend"]["kind"], x["norm"]["kind"]) for x in manifest["extractors"]] == [(backend, norm)] * len(models)
    assert manifest["calibration"]["kind"] == ("fusion" if len(models) > 1 else "calibration")
    files = dev_files(setup)
    assert np.isfinite(spkver.load(folder).score(files["spk0101"][0], files["spk0102"][0]))


def test_refuses_what_is_not_a_usable_system_and_names_the_file(setup, systems, tmp_path, monkeypatch):
    import spkver.system as system_module

    with pytest.raises(SystemFolderError, match=f"{tmp_path}.*no system.json"):
        load_system(tmp_path)
    monkeypatch.setattr(system_module, "default_system_path", lambda: tmp_path / "none")
    with pytest.raises(SystemFolderError, match="no default system is installed; pass --system"):
        load_system(None)

    newer = _copy(systems["plda"], tmp_path / "newer")
    manifest = json.loads((newer / "system.json").read_text())
    (newer / "system.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(SystemFolderError, match=r"newer/system.json: format_version 2 is newer"):
        load_system(newer)

    missing = _copy(systems["plda"], tmp_path / "missing")
    (missing / "backend/a.npz").unlink()
    with pytest.raises(SystemFolderError, match=r"missing/backend/a.npz: missing"):
        load_system(missing)

    tampered = _copy(systems["plda"], tmp_path / "tampered")
    with open(tampered / "calibration.npz", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(SystemFolderError, match=r"tampered/calibration.npz: its sha256 or size differs"):
        load_system(tampered)

    # a PLDA of another input dimension, recorded in system.json: the shapes disagree
    shapes = _copy(systems["plda"], tmp_path / "shapes")
    rng = np.random.default_rng(0)
    PLDA(lda_dim=3).fit(rng.normal(size=(40, 8)), np.repeat(np.arange(8), 5)).save(shapes / "backend/a.npz")
    _reseal(shapes, "backend/a.npz")
    with pytest.raises(SystemFolderError, match=r"shapes/backend/a.npz: the plda back-end takes 8-dim"):
        load_system(shapes)

    cohort = _copy(systems["cosine_asnorm"], tmp_path / "cohort")
    write_embeddings(cohort / "cohort/a.npz", ["c1", "c2"], rng.normal(size=(2, 5)))
    _reseal(cohort, "cohort/a.npz")
    with pytest.raises(SystemFolderError, match=r"cohort/cohort/a.npz: cohort embeddings have dimension 5"):
        load_system(cohort)

    fused = _copy(systems["fusion"], tmp_path / "fused")
    manifest = json.loads((fused / "system.json").read_text())
    manifest["extractors"] = manifest["extractors"][:1]
    (fused / "system.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemFolderError, match=r"fused/calibration.npz: 2 calibration weight\(s\) for 1"):
        load_system(fused)


def test_build_checks_its_inputs_before_writing(setup, systems, tmp_path, capsys):
    base = ["system", "build", "--model", str(setup["models"]["a"]), "--backend", "cosine",
            "--calibrate-data", str(setup["dev"]), "--calibrate-trials", str(setup["trials"])]
    emb = ["--train-emb", str(setup["emb"]["a/train"]), "--utt2spk", str(setup["train"] / "utt2spk")]
    cases = [
        (emb + ["--top-k", "5", "--out", str(tmp_path / "x")], "--top-k go with --norm snorm|asnorm"),
        (emb + ["--norm", "snorm", "--out", str(tmp_path / "x")], "--norm snorm needs exactly one of --cohort"),
        (emb + ["--calibrate-emb", str(setup["emb"]["b/dev"]), "--out", str(tmp_path / "x")], "12-dim embeddings"),
        (["--train-emb", str(setup["emb"]["a/train"]), "--out", str(tmp_path / "x")], "--train-emb needs --utt2spk"),
        (emb + ["--out", str(systems["plda"])], "already exists"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.work").exists()


def test_cosine_scorer_round_trips_through_npz(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 4))
    scorer = CosineScorer(subtract_mean=True).fit(X)
    scorer.save(tmp_path / "c.npz")
    back = CosineScorer.load(tmp_path / "c.npz")
    np.testing.assert_allclose(back.score_matrix(X[:3], X[3:6]), scorer.score_matrix(X[:3], X[3:6]))
    with pytest.raises(ValueError, match="p.npz: not a spkver-cosine-v1 file"):
        np.savez(tmp_path / "p.npz", format=np.array("other"))
        CosineScorer.load(tmp_path / "p.npz")


def test_extract_leaves_no_partial_folder_after_an_input_error(setup, tmp_path, capsys):
    good = dev_files(setup)["spk0101"][0]
    for files in ([str(tmp_path / "missing.wav")], [str(write_wave(tmp_path / "empty.wav", np.zeros(0)))]):
        assert main(["extract", "--model", str(setup["models"]["a"]), *files, str(good),
                     "--out", str(tmp_path / "e.npz"), "--device", "cpu", "--workers", "0"]) == 2
        err = capsys.readouterr().err
        assert files[0] in err and "--skip-bad" in err
        assert not (tmp_path / "e.npz.partial").exists() and not (tmp_path / "e.npz").exists()
