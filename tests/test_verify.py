"""spkver verify / spkver embed and the Python API: decisions and their JSON, multi-file enrollment, trial lists
of audio paths (scored, evaluated, resumed), enrollment names before file names, any rate and channel count,
and bad audio named in every mode without half-written outputs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from scoring.io import read_embeddings, read_scores
from spkver.audio import AudioError
from spkver.cli import main
from system_fixtures import build, dev_files, tiny_setup, write_wave


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def system(setup, tmp_path_factory):
    return build(setup, tmp_path_factory.mktemp("verify") / "plda")


@pytest.fixture(scope="module")
def sv(system):
    import spkver

    return spkver.load(system)


@pytest.fixture(scope="module")
def bad_audio(tmp_path_factory):
    """{case: (file, message)}: every kind of unusable recording."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (root / "text.wav").write_text("not audio")
    speech = 0.3 * rng.standard_normal(3200)  # 0.2 s of noise, then silence
    return {
        "missing": (root / "missing.wav", "no such audio file"),
        "unreadable": (root / "text.wav", "cannot decode audio"),
        "empty": (write_wave(root / "empty.wav", np.zeros(0)), "empty"),
        "nan": (write_wave(root / "nan.wav", np.full(16000, np.nan, np.float32), subtype="FLOAT"), "NaN"),
        "silent": (write_wave(root / "silent.wav", np.zeros(16000)), "silent"),
        "short": (write_wave(root / "short.wav", np.concatenate([speech, np.zeros(28800)])), "too little speech"),
    }


def test_cli_pair_prints_llr_decision_and_threshold(setup, system, capsys):
    files = dev_files(setup)
    a, b = str(files["spk0101"][0]), str(files["spk0101"][2])
    assert main(["verify", "--system", str(system), a, b, "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["llr", "decision", "threshold"]
    assert float(out[2].split()[1]) == pytest.approx(math.log(99), abs=1e-4) and "p_target 0.01" in out[2]
    assert main(["verify", "--system", str(system), "--enroll", a, str(files["spk0101"][1]), "--test", b,
                 "--threshold", "-100", "--json", "--device", "cpu"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["accept"] is True and decision["threshold"] == -100 and decision["p_target"] is None
    assert main(["verify", "--system", str(system), a, "--device", "cpu"]) == 2
    assert "give two recordings" in capsys.readouterr().err


def test_json_stdout_is_exactly_one_object(setup, system):
    files = dev_files(setup)
    proc = subprocess.run([sys.executable, "-m", "spkver.cli", "verify", "--system", str(system), "--json",
                           "--p-target", "0.05", "--device", "cpu", str(files["spk0102"][0]),
                           str(files["spk0103"][0])], capture_output=True, text=True, timeout=120, check=True)
    decision = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert set(decision) == {"llr", "accept", "threshold", "p_target"}
    assert decision["p_target"] == 0.05 and decision["threshold"] == pytest.approx(math.log(19))
    assert decision["accept"] == (decision["llr"] >= decision["threshold"])


def test_trial_list_of_paths_is_scored_evaluated_and_resumed(setup, system, tmp_path, capsys, monkeypatch):
    import spkver.extract

    lines = []
    for line in setup["trials"].read_text().splitlines():
        e, t, label = line.split()
        lines.append(f"{'1' if label == 'target' else '0'} wav/{e}.wav wav/{t}.wav\n")  # VoxCeleb style
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(lines))
    out = tmp_path / "scores"
    cmd = ["verify", "--system", str(system), "--trials", str(trials), "--audio-root", str(setup["dev"]),
           "--out", str(out), "--device", "cpu", "--workers", "0", "--json"]
    assert main(cmd) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_scored"] == len(lines) and summary["skipped"] == {}
    enroll, test, llr = read_scores(out)
    assert enroll[0] == lines[0].split()[1] and len(llr) == len(lines)
    assert main(["eval", "--trials", str(trials), "--scores", str(out), "--calibrated"]) == 0
    assert "scores" in capsys.readouterr().out  # one row, named after the score file
    # the batch LLR is the API's LLR
    import spkver

    pair = lines[0].split()
    api = spkver.load(system).score(setup["dev"] / pair[1], setup["dev"] / pair[2])
    assert llr[0] == pytest.approx(api, rel=1e-3, abs=1e-3)
    # a second run reuses the embeddings in OUT.emb/ and extracts nothing
    assert (tmp_path / "scores.emb" / "a.npz").is_file()
    monkeypatch.setattr(spkver.extract, "extract", lambda *a, **k: pytest.fail("extracted again"))
    out.unlink()
    assert main(cmd) == 0
    assert read_scores(out)[2] == pytest.approx(llr)


def test_bad_files_in_a_trial_list_are_named_or_skipped(setup, system, bad_audio, tmp_path, capsys):
    good = dev_files(setup)
    root = bad_audio["missing"][0].parent
    lines = [f"{good['spk0101'][0]} {good['spk0101'][1]}\n", f"{good['spk0102'][0]} {good['spk0101'][1]}\n"]
    for name in ("silent", "missing"):
        trials = tmp_path / f"{name}.txt"
        trials.write_text("".join(lines) + f"{good['spk0101'][0]} {name}.wav\n")
        out = tmp_path / f"{name}.scores"
        cmd = ["verify", "--system", str(system), "--trials", str(trials), "--audio-root", str(root), "--out",
               str(out), "--device", "cpu", "--workers", "0"]
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert f"{name}.wav" in err and "--skip-bad" in err
        assert not out.exists() and not (tmp_path / f"{name}.scores.emb").exists()
        assert main(cmd + ["--skip-bad", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert list(summary["skipped"]) == [f"{name}.wav"] and summary["n_scored"] == 2
        assert len(read_scores(out)[2]) == 2


def test_bad_audio_is_named_by_the_api_and_the_cli(setup, system, sv, bad_audio, capsys):
    good = dev_files(setup)["spk0101"][0]
    for case, (path, message) in bad_audio.items():
        with pytest.raises(AudioError, match=message) as err:
            sv.score(good, path)
        assert str(path) in str(err.value), case
        assert main(["verify", "--system", str(system), str(good), str(path), "--json", "--device", "cpu"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and str(path) in captured.err, case
    with pytest.raises(AudioError, match="NaN"):
        sv.embed((np.array([0.1, np.nan] * 8000), 16000))
    assert main(["verify", "--system", str(setup["root"]), str(good), str(good)]) == 2
    assert "not a spkver system folder" in capsys.readouterr().err


def test_enrolled_names_come_before_files_and_any_rate_or_layout_works(setup, sv, tmp_path):
    files = dev_files(setup)
    test = files["spk0104"][2]
    same_name = tmp_path / "alice.wav"
    same_name.write_bytes(files["spk0105"][0].read_bytes())  # a file spelled like the enrollment
    sv.enroll(str(same_name), files["spk0104"][:2])
    sv.enroll("bob", files["spk0104"][:2])
    enrolled = sv.score(str(same_name), test)
    assert enrolled == pytest.approx(sv.score("bob", test))
    assert enrolled != pytest.approx(sv.score(same_name, test))  # a Path is a file, never a name
    assert sv.verify(str(same_name), test).llr == pytest.approx(enrolled)
    with pytest.raises(AudioError, match="carol.*no speaker is enrolled under this name"):
        sv.score("carol", test)
    # stereo at 44.1 kHz as a file and as an array: mixed down and resampled the same way
    wave, rate = sf.read(files["spk0104"][0], dtype="float32")
    stereo = np.stack([wave, wave], axis=1)
    from spkver.audio import resample

    hi = resample(stereo.T, rate, 44100).T
    sf.write(tmp_path / "hi.wav", hi, 44100, subtype="FLOAT")
    np.testing.assert_allclose(sv.embed((hi, 44100)), sv.embed(tmp_path / "hi.wav"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sv.embed((stereo, rate)), sv.embed(files["spk0104"][0]), rtol=1e-4, atol=1e-4)
    batch = sv.embed_batch([files["spk0104"][0], (stereo, rate), tmp_path / "hi.wav"])
    assert batch.shape == (3, 16)
    np.testing.assert_allclose(batch[0], batch[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(AudioError, match="transpose"):
        sv.embed((stereo.T, rate))


def test_cli_embed_files_and_folders(setup, system, tmp_path, capsys):
    tree = tmp_path / "tree"
    wav = dev_files(setup)["spk0101"][0]
    for rel in ("id1/v1/00001.wav", "id1/v2/00001.wav", "id2/v1/00002.wav"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(wav.read_bytes())
    (tree / "notes.txt").write_text("ignored")
    out = tmp_path / "emb.npz"
    assert main(["embed", "--system", str(system), str(tree), str(wav), "--out", str(out), "--device", "cpu",
                 "--workers", "0"]) == 0
    emb = read_embeddings(out)
    assert sorted(emb.ids) == sorted(["id1/v1/00001", "id1/v2/00001", "id2/v1/00002", wav.stem])
    np.testing.assert_allclose(emb.get(["id1/v1/00001"])[0], emb.get([wav.stem])[0], rtol=1e-5, atol=1e-5)
    fused = build(setup, tmp_path / "fused", models=("a", "b"))
    assert main(["embed", "--system", str(fused), str(tree), "--out", str(tmp_path / "both.npz"), "--device", "cpu",
                 "--workers", "0"]) == 0
    both = read_embeddings(tmp_path / "both.npz")
    assert both.dim == 16 + 12 and not (tmp_path / "both.npz.parts").exists()
    np.testing.assert_allclose(both.get(emb.ids[:3])[:, :16], emb.get(emb.ids[:3]), rtol=1e-5, atol=1e-5)
    (tmp_path / "more").mkdir()
    (tmp_path / "more/00001.wav").write_bytes(wav.read_bytes())
    assert main(["embed", "--system", str(system), str(tmp_path / "more/00001.wav"), str(tree / "id1/v1/00001.wav"),
                 "--out", str(tmp_path / "dup.npz")]) == 2
    err = capsys.readouterr().err
    assert "more/00001.wav" in err and "id1/v1/00001.wav" in err and "same id" in err


def test_onnx_runtime_and_export_match_torch(setup, system, sv, tmp_path, monkeypatch, capsys):
    """`--runtime onnx` (the extractor exported on first use into the cache) gives torch's LLRs within 1e-4 on
    recordings of several lengths; `spkver export` writes a model that onnxruntime runs with the same result."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from spkver.api import load, onnx_cache_path
    from spkver.onnx_export import OnnxEmbedder

    monkeypatch.setenv("SPKVER_CACHE", str(tmp_path / "cache"))
    files = dev_files(setup)
    onnx = load(system, runtime="onnx")
    assert onnx_cache_path(onnx.system.extractors[0]).is_file()
    pairs = [(files["spk0101"][0], files["spk0101"][2]), (files["spk0101"][1], files["spk0102"][0])]
    for a, b in pairs:
        assert onnx.score(a, b) == pytest.approx(sv.score(a, b), abs=1e-4)
    np.testing.assert_allclose(onnx.embed(pairs[0][0]), sv.embed(pairs[0][0]), atol=1e-4)
    a, b = map(str, pairs[0])
    assert main(["verify", "--system", str(system), "--runtime", "onnx", "--json", a, b]) == 0
    assert json.loads(capsys.readouterr().out)["llr"] == pytest.approx(sv.score(a, b), abs=1e-4)

    out = tmp_path / "x.onnx"
    assert main(["export", "--system", str(system), "--onnx", str(out)]) == 0
    from spkver.features import compute_features
    from spkver.audio import read_audio

    wave, _ = read_audio(a, sample_rate=16000)
    feats = compute_features(wave, sv.system.extractors[0].features).numpy()
    emb, _ = OnnxEmbedder(out)([feats])
    np.testing.assert_allclose(emb[0], sv.embed(a), atol=1e-4)
    assert main(["export", "--system", str(system), "--onnx", str(out), "--extractor", "nope"]) == 2
    assert "--extractor nope" in capsys.readouterr().err
