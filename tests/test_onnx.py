"""spkver.onnx_export: exported x-vectors and ECAPA-TDNNs (baseline and Bayesian) give torch's Embedder
embeddings on onnxruntime for padded batches, long (windowed) and short (repeated) utterances, with dynamic
time axes (and batch axes for the x-vector); bad files and feature dims are named."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the torch.export-based ONNX exporter translates through it

from spkver.extract import Embedder  # noqa: E402
from spkver.nn.tdnn import CONTEXT, build_model  # noqa: E402
from spkver.onnx_export import OnnxEmbedder, export_onnx  # noqa: E402

SMALL = dict(feat_dim=20, num_classes=5, channels=32, stats_channels=48, embed_dim=16)
MAX_FRAMES = 200


ECAPA = dict(feat_dim=20, num_classes=5, channels=16, attention_channels=8, embed_dim=16)
MODELS = {"xvector": {}, "bayes_xvector": {"init_rho": -3.0}, "ecapa_tdnn": {},
          "bayes_ecapa_tdnn": {"init_rho": -3.0, "bayes_layers": ["embedding_model.blocks.*"]}}


def _model(name, **extra):
    torch.manual_seed(0)
    model = build_model(name, **(ECAPA if "ecapa" in name else SMALL), **extra)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BatchNorm statistics as after training, so folding them matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, extra in MODELS.items():
        model = _model(name, **extra)
        out[name] = (model, export_onnx(model, root / f"{name}.onnx", feat_dim=SMALL["feat_dim"]))
    return out


def _feats(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, SMALL["feat_dim"])).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_equals_torch_embedder(exported, name):
    model, path = exported[name]
    ours = OnnxEmbedder(path, num_threads=1, max_frames=MAX_FRAMES)
    reference = Embedder(model, max_frames=MAX_FRAMES)
    assert (ours.feat_dim, ours.embed_dim) == (SMALL["feat_dim"], SMALL["embed_dim"])
    assert ours.metadata["feat_dim"] == str(SMALL["feat_dim"])
    # 7 < 15 frames (repeated), 15 (the minimum), padded lengths, 700 > MAX_FRAMES (four windows averaged)
    batch = _feats([7, 15, 40, 123, 700])
    emb, spread = ours(batch)
    expected, _ = reference(batch)
    assert spread is None and emb.dtype == np.float32 and emb.shape == (5, SMALL["embed_dim"])
    assert np.abs(expected).max() > 0.1  # a tolerance of 1e-4 means something at this scale
    np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=1e-4)
    # the same file with another batch size and other lengths: one utterance, no padding
    for n in (16, 57, 333):
        alone, _ = ours(_feats([n], seed=n))
        np.testing.assert_allclose(alone, reference(_feats([n], seed=n))[0], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours(batch[2:3])[0][0], emb[2], atol=1e-5)  # batching does not matter
    # an ECAPA-TDNN's graph takes one example per call (padding would reach valid frames), an x-vector's any
    assert ours.session.get_inputs()[0].shape[0] == (1 if "ecapa" in name else "batch")


def test_padded_batch_with_lengths_in_the_graph(exported):
    model, path = exported["bayes_xvector"]
    session = OnnxEmbedder(path).session
    fused = model.fuse_for_inference()
    lengths = np.array([90, 15, 61], dtype=np.int64)
    x = np.zeros((3, 100, SMALL["feat_dim"]), dtype=np.float32)  # padding beyond the longest example too
    for i, f in enumerate(_feats(lengths, seed=3)):
        x[i, :len(f)] = f
    got = session.run(None, {"feats": x, "lengths": lengths})[0]
    expected = np.stack([fused(torch.from_numpy(x[i:i + 1, :n]))[0].numpy() for i, n in enumerate(lengths)])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert lengths.min() == CONTEXT + 1


def test_export_is_atomic_and_checks_its_arguments(exported, tmp_path):
    import onnx

    model, _ = exported["xvector"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "sub" / "x.onnx"
    path.parent.mkdir()
    path.write_bytes(b"old")
    assert export_onnx(model.fuse_for_inference(), path, SMALL["feat_dim"], opset=18) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.onnx"]  # replaced, no temporary left
    assert OnnxEmbedder(path).embed_dim == SMALL["embed_dim"]
    assert [o.version for o in onnx.load(path).opset_import if o.domain == ""] == [18]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="feat_dim 30 does not match the model's 20"):
        export_onnx(model, tmp_path / "y.onnx", feat_dim=30)
    with pytest.raises(ValueError, match="opset must be an integer >= 18"):
        export_onnx(model, tmp_path / "y.onnx", feat_dim=20, opset=11)
    with pytest.raises(TypeError, match="Linear"):
        export_onnx(torch.nn.Linear(3, 2), tmp_path / "y.onnx", feat_dim=3)
    assert not (tmp_path / "y.onnx").exists()


def test_bad_files_and_feature_dims_are_named(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _, path = exported["xvector"]
    wrong = r"xvector\.onnx: expects features \(frames, 20\).*utterance 1 has shape \(50, 19\)"
    with pytest.raises(ValueError, match=wrong):
        OnnxEmbedder(path)([np.zeros((50, 20), np.float32), np.zeros((50, 19), np.float32)])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ValueError, match="junk.onnx: not a loadable ONNX model"):
        OnnxEmbedder(junk)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    other = tmp_path / "other.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), other)
    with pytest.raises(ValueError, match="other.onnx: not an embedding extractor"):
        OnnxEmbedder(other)
    with pytest.raises(ValueError, match="num_threads"):
        OnnxEmbedder(path, num_threads=0)
