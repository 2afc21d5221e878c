"""spkver.extract: batching is padding-invariant, long files are windowed, resume skips finished utterances,
.npz and Kaldi outputs agree, bad files are named, Monte Carlo extraction stores the spread."""

import numpy as np
import pytest
import soundfile as sf
import torch

from scoring.io import read_embeddings
from spkver.audio import AudioError
from spkver.checkpoint import save_checkpoint
from spkver.data.synthetic.corpus import make_corpus
from spkver.extract import Embedder, extract, plan_batches, windows
from spkver.features import FeatureConfig, compute_features
from spkver.nn.tdnn import build_model

FEATS = FeatureConfig(num_mel_bins=24, num_ceps=20)



def _checkpoint(path, name="xvector", **extra):
    torch.manual_seed(0)
    kwargs = {"feat_dim": FEATS.dim, "num_classes": 5, "channels": 32, "stats_channels": 48, "embed_dim": 16,
              **extra}
    model = build_model(name, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(path, model=model, model_name=name, model_kwargs=kwargs, features=FEATS.to_dict(),
                           speakers=[f"s{i}" for i in range(5)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    data = make_corpus(root / "data", n_speakers=3, sessions_per_speaker=1, utts_per_session=3,
                       min_seconds=1.0, max_seconds=3.0, seed=2)
    return {"root": root, "data": data, "model": _checkpoint(root / "x.pt"),
            "bayes": _checkpoint(root / "b.pt", "bayes_xvector", init_rho=-3.0)}


def _files(corpus):
    return [corpus["data"].resolve(u) for u in corpus["data"].utts]


def test_embedding_does_not_depend_on_the_batch(corpus, tmp_path):
    files = _files(corpus)
    together = extract(corpus["model"], tmp_path / "all.npz", files=files, num_workers=0, batch_frames=10**6)
    assert together.n_computed == len(files) and together.bad == {}
    alone = extract(corpus["model"], tmp_path / "one.npz", files=files[:1], num_workers=0)
    both = read_embeddings(tmp_path / "all.npz")
    one = read_embeddings(tmp_path / "one.npz")
    assert list(both.ids) == [f.rsplit("/", 1)[1][:-4] for f in files]  # ids are the stems, in input order
    np.testing.assert_allclose(one.vectors[0], both.get(one.ids)[0], rtol=1e-5, atol=1e-5)
    assert alone.audio_seconds == pytest.approx(corpus["data"].utt2dur[one.ids[0]], abs=1e-3)


def test_data_dir_npz_and_ark_outputs_agree(corpus, tmp_path):
    extract(corpus["model"], tmp_path / "e.npz", data_dir=corpus["data"].path, num_workers=1)
    extract(corpus["model"], tmp_path / "e.ark", data_dir=corpus["data"].path, num_workers=0, batch_frames=300)
    npz, ark = read_embeddings(tmp_path / "e.npz"), read_embeddings(tmp_path / "e.scp")
    assert list(npz.ids) == corpus["data"].utts == list(ark.ids)
    np.testing.assert_allclose(npz.vectors, ark.vectors, rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "e.npz.partial").exists() and not (tmp_path / "e.ark.partial").exists()
    scp = tmp_path / "list.scp"
    scp.write_text("".join(f"{u} {corpus['data'].resolve(u)}\n" for u in reversed(corpus["data"].utts)))
    extract(corpus["model"], tmp_path / "w.npz", wav_scp=scp, num_workers=0)
    w = read_embeddings(tmp_path / "w.npz")
    np.testing.assert_allclose(w.get(npz.ids), npz.vectors, rtol=1e-5, atol=1e-5)


def test_long_utterances_average_their_windows(corpus, tmp_path):
    utt = max(corpus["data"].utts, key=corpus["data"].utt2dur.get)
    path = corpus["data"].resolve(utt)
    summary = extract(corpus["model"], tmp_path / "w.npz", files=[path], max_seconds=0.5, num_workers=0)
    assert summary.n_computed == 1
    wave, _ = sf.read(path, dtype="float32")
    feats = compute_features(wave, FEATS).numpy()
    parts = windows(feats, 50)
    assert len(parts) == int(np.ceil(len(feats) / 50)) > 1 and max(len(p) for p in parts) <= 50
    from spkver.checkpoint import load_model

    model, _, _ = load_model(corpus["model"])
    each = np.stack([model.embed(torch.from_numpy(p)[None]).detach().numpy()[0] for p in parts])
    expected = np.average(each, axis=0, weights=[len(p) for p in parts])
    np.testing.assert_allclose(read_embeddings(tmp_path / "w.npz").vectors[0], expected, rtol=1e-4, atol=1e-5)


def test_interrupted_run_resumes_without_recomputing(corpus, tmp_path, monkeypatch):
    files = _files(corpus)
    reference = extract(corpus["model"], tmp_path / "ref.npz", files=files, num_workers=0)
    calls = []
    original = Embedder.__call__

    def failing(self, feats):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(feats))
        return original(self, feats)

    monkeypatch.setattr(Embedder, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        extract(corpus["model"], tmp_path / "out.npz", files=files, num_workers=0, batch_frames=250)
    assert len(list((tmp_path / "out.npz.partial").glob("*.npz"))) == 2 and not (tmp_path / "out.npz").exists()
    done_before = sum(calls)

    def counting(self, feats):
        calls.append(len(feats))
        return original(self, feats)

    monkeypatch.setattr(Embedder, "__call__", counting)
    calls.clear()
    summary = extract(corpus["model"], tmp_path / "out.npz", files=files, num_workers=0, batch_frames=250)
    assert summary.n_resumed == done_before and sum(calls) == len(files) - done_before == summary.n_computed
    out, ref = read_embeddings(tmp_path / "out.npz"), read_embeddings(tmp_path / "ref.npz")
    assert list(out.ids) == list(ref.ids) and reference.n_utts == len(files)
    np.testing.assert_allclose(out.vectors, ref.vectors, rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "out.npz.partial").exists()


def test_bad_file_is_named_or_skipped_and_reported(corpus, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    files = _files(corpus)[:2] + [str(bad)]
    with pytest.raises(AudioError, match="broken"):
        extract(corpus["model"], tmp_path / "e.npz", files=files, num_workers=0)
    summary = extract(corpus["model"], tmp_path / "e.npz", files=files, num_workers=0, skip_bad=True)
    assert list(summary.bad) == ["broken"] and "broken" in str(summary)
    assert "broken" not in read_embeddings(tmp_path / "e.npz").ids and len(read_embeddings(tmp_path / "e.npz")) == 2


def test_input_errors(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        sf.write(d / "same.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ValueError, match="same"):
        extract(corpus["model"], tmp_path / "e.npz", files=[a / "same.wav", b / "same.wav"])
    with pytest.raises(ValueError, match="exactly one"):
        extract(corpus["model"], tmp_path / "e.npz")
    with pytest.raises(ValueError, match=r"\.txt"):
        extract(corpus["model"], tmp_path / "e.txt", files=[a / "same.wav"])


def test_monte_carlo_extraction_stores_the_spread(corpus, tmp_path):
    files = _files(corpus)
    extract(corpus["bayes"], tmp_path / "mean.npz", files=files, num_workers=0)
    extract(corpus["bayes"], tmp_path / "mc.npz", files=files, num_workers=0, mc_samples=8)
    with np.load(tmp_path / "mean.npz") as mean, np.load(tmp_path / "mc.npz") as mc:
        assert "spread" not in mean.files
        assert mc["spread"].shape == mc["embeddings"].shape and (mc["spread"] > 0).all()
        assert not np.allclose(mc["embeddings"], mean["embeddings"])
        # the MC mean approaches the posterior mean: closer to it than a typical sample is
        gap = np.abs(mc["embeddings"] - mean["embeddings"]).mean()
        assert gap < mc["spread"].mean()
    extract(corpus["bayes"], tmp_path / "mc.ark", files=files, num_workers=0, mc_samples=4)
    assert read_embeddings(tmp_path / "mc.spread.scp").vectors.shape == (len(files), 16)
    extract(corpus["model"], tmp_path / "det.npz", files=files, num_workers=0, mc_samples=4)
    with np.load(tmp_path / "det.npz") as det:  # a deterministic model has no spread to report
        assert "spread" not in det.files


def test_batches_group_similar_lengths_under_the_budget():
    seconds = {"a": 1.0, "b": 3.0, "c": 2.9, "d": 1.1, "e": None}
    batches = plan_batches(list(seconds), seconds, 100.0, batch_frames=600, max_frames=6000)
    assert batches == [["b", "c"], ["d", "a"], ["e"]]
    long = plan_batches(["x"], {"x": 100.0}, 100.0, batch_frames=1, max_frames=3000)
    assert long == [["x"]]


def test_batch_size_caps_the_utterances_per_batch():
    seconds = {u: 1.0 for u in "abcde"}
    assert plan_batches(list(seconds), seconds, 100.0, 10**6, 6000, batch_size=2) == [["a", "b"], ["c", "d"], ["e"]]
    with pytest.raises(ValueError, match="batch_size"):
        extract("unused.pt", "e.npz", files=["a.wav"], batch_size=0)


def test_cli_extract_logs_its_summary_to_stderr(corpus, tmp_path, capsys):
    from spkver.cli import main

    out = tmp_path / "e.npz"
    assert main(["extract", "--model", str(corpus["model"]), "--data", str(corpus["data"].path), "--out", str(out),
                 "--batch-size", "2", "--workers", "0", "--amp", "none", "--device", "auto"]) == 0
    printed, err = capsys.readouterr()
    assert printed == "" and "\r" not in err
    assert f"INFO wrote {len(corpus['data'].utts)} embeddings to {out}" in err
    assert len(read_embeddings(out)) == len(corpus["data"].utts)


@pytest.mark.parametrize("options, flag", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "two"], "--batch-size"),
    (["--batch-frames", "-5"], "--batch-frames"),
    (["--workers", "-1"], "--workers"),
    (["--mc-samples", "-1"], "--mc-samples"),
    (["--amp", "fp8"], "--amp"),
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16"),
    (["--device", "gpu"], "--device"),
])
def test_cli_extract_names_the_bad_flag(corpus, tmp_path, capsys, options, flag):
    from spkver.cli import main

    try:
        rc = main(["extract", "--model", str(corpus["model"]), "--data", str(corpus["data"].path),
                   "--out", str(tmp_path / "e.npz")] + options)
    except SystemExit as exit_:
        rc = exit_.code
    assert rc == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()
