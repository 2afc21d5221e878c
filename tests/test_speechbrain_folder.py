"""Pretrained SpeechBrain folders (``speechbrain:DIR``): a folder made here with SpeechBrain's own classes
(random weights) gives, through ``spkver extract``, exactly the embeddings of SpeechBrain's
``EncoderClassifier.encode_batch``; it builds a system and initialises a Bayesian model; bad folders are refused
naming the file and the parameter."""

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from spkver.checkpoint import CheckpointError, load_model
from spkver.cli import main
from spkver.speechbrain_folder import read_folder

ECAPA_ARGS = """embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    res2net_scale: 4
    se_channels: 8
    lin_neurons: 12
"""
XVECTOR_ARGS = """embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 3
    tdnn_channels: [16, 16, 24]
    tdnn_kernel_sizes: [5, 3, 1]
    tdnn_dilations: [1, 2, 1]
    lin_neurons: 12
"""
HYPERPARAMS = """# written like the hyperparams.yaml of speechbrain/spkrec-ecapa-voxceleb
n_mels: 24
pretrained_path: {folder}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
{network}
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
"""


def make_folder(folder, kind="ecapa", seed=0):
    """A SpeechBrain speaker-embedding folder made with SpeechBrain's classes: random weights and BatchNorm
    statistics, an embedding normalisation fitted on random embeddings."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.lobes.models.Xvector import Xvector
    from speechbrain.processing.features import InputNormalization

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "ecapa":
        net = ECAPA_TDNN(24, channels=[16, 16, 16, 16, 48], attention_channels=8, res2net_scale=4, se_channels=8,
                         lin_neurons=12)
    else:
        net = Xvector(in_channels=24, tdnn_blocks=3, tdnn_channels=[16, 16, 24], tdnn_kernel_sizes=[5, 3, 1],
                      tdnn_dilations=[1, 2, 1], lin_neurons=12)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), folder / "embedding_model.ckpt")
    norm = InputNormalization(norm_type="global", std_norm=False)
    norm(torch.randn(20, 1, 12) + 0.5, torch.ones(20))
    norm._save(folder / "mean_var_norm_emb.ckpt")
    network = ECAPA_ARGS if kind == "ecapa" else XVECTOR_ARGS
    (folder / "hyperparams.yaml").write_text(HYPERPARAMS.format(folder=folder, network=network))
    return folder


def encoder(folder, savedir):
    from speechbrain.inference.classifiers import EncoderClassifier

    return EncoderClassifier.from_hparams(source=str(folder), savedir=str(savedir), run_opts={"device": "cpu"})


def _waves(tmp_path, n=4):
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.6, 1.3, 0.9, 2.1][:n]):
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) * (1 + np.sin(3 * t)) + 0.05 * rng.standard_normal(len(t))
        paths.append(tmp_path / "wav" / f"utt{i}.wav")
        paths[-1].parent.mkdir(exist_ok=True)
        sf.write(paths[-1], wave.astype(np.float32), 16000, subtype="FLOAT")
    return paths


def test_spkver_extract_equals_encode_batch(tmp_path):
    folder = make_folder(tmp_path / "sb")
    files = _waves(tmp_path)
    out = tmp_path / "emb.npz"
    main(["extract", "--model", f"speechbrain:{folder}", *map(str, files), "--out", str(out), "--workers", "0",
          "--device", "cpu"])
    enc = encoder(folder, tmp_path / "save")
    with np.load(out) as z:
        ours = dict(zip(z["ids"].tolist(), z["embeddings"]))
    for path in files:
        wave, _ = sf.read(path, dtype="float32")
        ref = enc.encode_batch(torch.from_numpy(wave)[None]).squeeze().numpy()
        np.testing.assert_allclose(ours[path.stem], ref, atol=1e-4, rtol=0)
    # a padded batch with relative lengths, as encode_batch takes it, and the embedding normalisation
    model, features, meta = load_model(f"speechbrain:{folder}")
    assert features.kind == "waveform" and meta["speakers"] == [] and model.embed_dim == 12
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in files[:2]]
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([len(w) for w in waves])
    with torch.no_grad():
        ref = enc.encode_batch(batch, lengths / batch.shape[1]).squeeze(1)
        assert torch.allclose(model.embed(batch[..., None], lengths), ref, atol=1e-5)
        normalized = read_folder(folder, normalize=True)
        norm_model = load_model_from(normalized)
        assert torch.allclose(norm_model.embed(batch[..., None], lengths),
                              enc.encode_batch(batch, lengths / batch.shape[1], normalize=True).squeeze(1), atol=1e-5)


def load_model_from(ckpt: dict):
    from spkver.nn.tdnn import build_model

    model = build_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval()


def test_speechbrain_xvector_folder(tmp_path):
    folder = make_folder(tmp_path / "sbx", kind="xvector")
    model, _, meta = load_model(f"speechbrain:{folder}")
    assert meta["model_name"] == "sb_xvector" and meta["model_kwargs"]["channels"] == [16, 16, 24]
    enc = encoder(folder, tmp_path / "save")
    wave = torch.from_numpy(sf.read(_waves(tmp_path, 1)[0], dtype="float32")[0])
    torch.manual_seed(3)  # SpeechBrain's statistics pooling adds a little random noise, in eval mode too
    ours = model.extract(wave[None, :, None])[0]
    torch.manual_seed(3)
    assert torch.allclose(ours, enc.encode_batch(wave[None]).squeeze(1), atol=1e-5)


def test_system_build_and_bayesian_init_from_a_speechbrain_folder(tmp_path):
    from spkver.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from spkver.data.synthetic.corpus import make_corpus, make_trials
    from spkver.features import FeatureConfig
    from spkver.system import build_system, load_system
    from spkver.train import _init_from, train

    folder = make_folder(tmp_path / "sb")
    data = make_corpus(tmp_path / "data", n_speakers=3, sessions_per_speaker=2, utts_per_session=2,
                       min_seconds=0.8, max_seconds=1.0, seed=4)
    make_trials(data, n_target=None, n_nontarget=20, seed=0, path=tmp_path / "trials")
    out = build_system([f"speechbrain:{folder}"], tmp_path / "system", "cosine", train_data=tmp_path / "data",
                       calibrate_data=tmp_path / "data", calibrate_trials=tmp_path / "trials", num_workers=0,
                       min_speech_seconds=0.0)
    system = load_system(out)
    assert system.extractors[0].name == "sb" and system.extractors[0].features.kind == "waveform"
    assert system.manifest["extractors"][0]["model"]["source"] == f"speechbrain:{folder.resolve()}"
    assert not (tmp_path / "system.work").exists()

    # a Bayesian ECAPA whose means start at the folder's weights; the classifier is its own
    sb = read_folder(folder)
    kwargs = {k: v for k, v in sb["model_kwargs"].items() if k not in ("feat_dim", "num_classes")}
    cfg = TrainConfig(epochs=1, seed=0, device="cpu", features=FeatureConfig(kind="waveform"),
                      model=ModelConfig("bayes_ecapa_tdnn", {**kwargs, "bayes_layers": ["embedding_model.fc"]}),
                      data=DataConfig(chunk_min_seconds=0.4, chunk_max_seconds=0.5, examples_per_epoch=8,
                                      batch_size=4, num_workers=0),
                      optim=OptimConfig(lr=1e-8, schedule="constant"))
    final = train(cfg, tmp_path / "data", tmp_path / "exp", init=f"speechbrain:{folder}", progress=False)
    state = torch.load(final, weights_only=True)["model_state"]
    weights = torch.load(folder / "embedding_model.ckpt", weights_only=True)
    torch.testing.assert_close(state["embedding_model.fc.conv.weight_mu"], weights["fc.conv.weight"], atol=1e-5, rtol=0)
    torch.testing.assert_close(state["embedding_model.blocks.0.conv.conv.weight"], weights["blocks.0.conv.conv.weight"],
                               atol=1e-5, rtol=0)
    assert state["classifier.weight"].shape[0] == 3  # the training speakers
    model = load_model(final)[0]
    wrong = {**kwargs, "frontend": None}
    with pytest.raises(Exception, match="front end"):
        _init_from(model, f"speechbrain:{folder}", ["a", "b", "c"], FeatureConfig(kind="waveform").to_dict(), wrong)
    with pytest.raises(Exception, match="other features"):
        _init_from(model, f"speechbrain:{folder}", ["a"], FeatureConfig().to_dict(), {**kwargs, "feat_dim": 1})


def _edit(folder, old, new):
    path = folder / "hyperparams.yaml"
    path.write_text(path.read_text().replace(old, new))


def test_bad_folders_are_refused_naming_the_file_and_the_parameter(tmp_path):
    good = make_folder(tmp_path / "good")

    def broken(name):
        return shutil.copytree(good, tmp_path / name)

    with pytest.raises(CheckpointError, match="no such SpeechBrain model folder"):
        load_model(f"speechbrain:{tmp_path / 'nope'}")
    folder = broken("no_weights")
    (folder / "embedding_model.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"embedding_model\.ckpt: no such file"):
        load_model(f"speechbrain:{folder}")
    folder = broken("no_hparams")
    (folder / "hyperparams.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"hyperparams\.yaml: no such file"):
        load_model(f"speechbrain:{folder}")
    folder = broken("resnet")
    _edit(folder, "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN", "speechbrain.lobes.models.ResNet.ResNet")
    with pytest.raises(CheckpointError, match=r"hyperparams\.yaml: embedding_model is .*ResNet.*cannot load"):
        load_model(f"speechbrain:{folder}")
    folder = broken("shape")
    _edit(folder, "lin_neurons: 12", "lin_neurons: 16")
    with pytest.raises(CheckpointError, match=r"embedding_model\.ckpt: parameter 'fc\.conv\.weight' has shape"):
        load_model(f"speechbrain:{folder}")
    folder = broken("missing_key")
    state = torch.load(folder / "embedding_model.ckpt", weights_only=True)
    del state["mfa.conv.conv.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, folder / "embedding_model.ckpt")
    with pytest.raises(CheckpointError, match=r"embedding_model\.ckpt.*unexpected.*extra\.weight.*missing.*mfa"):
        load_model(f"speechbrain:{folder}")
    folder = broken("parameter")
    _edit(folder, "se_channels: 8", "se_channels: 8\n    groups: [1, 2, 1, 1, 1]")
    with pytest.raises(CheckpointError, match=r"hyperparams\.yaml: embedding_model parameter 'groups'"):
        load_model(f"speechbrain:{folder}")
    folder = broken("norm")
    _edit(folder, "norm_type: sentence", "norm_type: global")
    with pytest.raises(CheckpointError, match=r"hyperparams\.yaml: .*norm_type 'global' is not supported"):
        load_model(f"speechbrain:{folder}")
    folder = broken("mels")
    _edit(folder, "n_mels: 24", "n_mels: 20")
    with pytest.raises(CheckpointError, match=r"embedding_model\.ckpt: parameter 'blocks\.0\.conv\.conv\.weight'"):
        load_model(f"speechbrain:{folder}")
    folder = broken("corrupt")
    (folder / "embedding_model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"embedding_model\.ckpt: not a readable state dict"):
        load_model(f"speechbrain:{folder}")
    with pytest.raises(SystemExit):
        main(["extract", "--model", f"speechbrain:{tmp_path / 'nope'}", "x.wav", "--out", str(tmp_path / "o.npz")])
