"""Corpus preparation (VoxCeleb, SRE10-style) on tiny trees fabricated in tmp_path."""

import numpy as np
import pytest
import soundfile as sf

from spkver.data.kaldi import DataDir
from spkver.data.corpora.sre import prepare_sre
from spkver.data.corpora.voxceleb import prepare_voxceleb

SR = 16000


def _wav(path, seed, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)


def _vox_tree(base, speakers):
    """base/idXXXXX/<video>/0000N.wav: two videos per speaker, the second with two files."""
    for i, spk in enumerate(speakers):
        _wav(base / spk / "vid_A-1" / "00001.wav", i)
        _wav(base / spk / "xyz" / "00001.wav", i + 100)
        _wav(base / spk / "xyz" / "00002.wav", i + 200, seconds=0.5)


def _vox_trials(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_voxceleb_split_layout(tmp_path):
    root = tmp_path / "vox"
    _vox_tree(root / "vox1_dev_wav" / "wav", ["id10001", "id10002"])
    _vox_tree(root / "vox1_test_wav" / "wav", ["id10270", "id10271"])
    _vox_trials(root / "meta" / "veri_test2.txt", ["1 id10270/xyz/00001.wav id10270/vid_A-1/00001.wav",
                                                    "0 id10270/xyz/00002.wav id10271/xyz/00001.wav"])
    _vox_trials(root / "list_test_hard2.txt", ["0 id10001/xyz/00001.wav id10271/xyz/00001.wav"])
    summary = prepare_voxceleb(root, tmp_path / "data", subsets=("test",))
    assert summary == {"vox1_test": 6, "trials": {"veri_test2": 2, "list_test_hard2": summary["trials"]
                                                  ["list_test_hard2"]}}
    assert summary["trials"]["list_test_hard2"].startswith("skipped")  # needs "dev"
    d = DataDir.load(tmp_path / "data" / "vox1_test")
    assert d.utts[:3] == ["id10270-vid_A-1-00001", "id10270-xyz-00001", "id10270-xyz-00002"]
    assert d.speakers == ["id10270", "id10271"] and d.utt2dur["id10270-xyz-00002"] == 0.5
    assert d.load_audio("id10271-xyz-00001")[0].shape == (SR,)
    assert (tmp_path / "data" / "trials" / "veri_test2").read_text() == (
        "id10270-xyz-00001 id10270-vid_A-1-00001 target\nid10270-xyz-00002 id10271-xyz-00001 nontarget\n")
    both = prepare_voxceleb(root, tmp_path / "all")
    assert both["vox1_dev"] == 6 and both["trials"] == {"veri_test2": 2, "list_test_hard2": 1}


def test_voxceleb_flat_layout_splits_test_speakers(tmp_path):
    _vox_tree(tmp_path / "wav", ["id10001", "id10270", "id10309", "id10310"])
    summary = prepare_voxceleb(tmp_path, tmp_path / "data", durations=False)
    assert summary == {"vox1_dev": 6, "vox1_test": 6, "trials": {}}
    assert DataDir.load(tmp_path / "data" / "vox1_test").speakers == ["id10270", "id10309"]
    assert DataDir.load(tmp_path / "data" / "vox1_dev").speakers == ["id10001", "id10310"]
    assert not (tmp_path / "data" / "vox1_dev" / "utt2dur").exists()


def test_voxceleb2_converted(tmp_path):
    _vox_tree(tmp_path / "vox2_dev_wav" / "dev" / "aac", ["id00012"])
    assert prepare_voxceleb(tmp_path, tmp_path / "data", subsets=("vox2_dev",))["vox2_dev"] == 3


def test_voxceleb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        prepare_voxceleb(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="VoxCeleb1 subset 'dev' not found"):
        prepare_voxceleb(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown VoxCeleb subset"):
        prepare_voxceleb(tmp_path, tmp_path / "out", subsets=("train",))
    aac = tmp_path / "vox2_dev_wav" / "dev" / "aac" / "id00012" / "v"
    aac.mkdir(parents=True)
    (aac / "00001.m4a").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="convert VoxCeleb2 AAC to WAV"):
        prepare_voxceleb(tmp_path, tmp_path / "out", subsets="vox2_dev")
    _vox_tree(tmp_path / "wav", ["id10270"])
    _vox_trials(tmp_path / "veri_test.txt", ["1 id10270/xyz/00001.wav id10270/xyz/00009.wav"])
    with pytest.raises(FileNotFoundError, match=r"veri_test.txt: utterance id10270-xyz-00009"):
        prepare_voxceleb(tmp_path, tmp_path / "out", subsets="test")
    _vox_trials(tmp_path / "veri_test.txt", ["yes id10270/xyz/00001.wav id10270/xyz/00002.wav"])
    with pytest.raises(ValueError, match=r"veri_test.txt:1: expected"):
        prepare_voxceleb(tmp_path, tmp_path / "out", subsets="test")


# ------------------------------------------------------------------------------------------------ SRE
def _sph(path, n_channels, seed, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (0.1 * rng.standard_normal((int(8000 * seconds), n_channels))).astype(np.float32)
    sf.write(path, data, 8000, format="NIST", subtype="ULAW")
    return sf.read(path, dtype="float32", always_2d=True)[0]


@pytest.fixture
def sre_tree(tmp_path):
    root = tmp_path / "sre10"
    audio = {"conv1": _sph(root / "data" / "tel" / "conv1.sph", 2, 1),
             "conv2": _sph(root / "data" / "tel" / "conv2.sph", 2, 2),
             "conv3": _sph(root / "data" / "mic" / "conv3.sph", 1, 3, seconds=0.25)}
    (root / "train.trn").write_text("m100 f conv1:A\nm200 m conv2.sph:b,conv3:a\n")
    key = tmp_path / "key.csv"
    key.write_text("m100,conv2,a,target\nm100,conv3,a,nontarget\nm200,conv1,b,target\n")
    return root, key, audio


def test_sre_prepare(sre_tree, tmp_path):
    root, key, audio = sre_tree
    summary = prepare_sre(root, key, tmp_path / "out", use_sph2pipe=False)
    assert summary == {"models": 2, "enroll": 3, "test": 3, "trials": 3, "targets": 2}
    enroll = DataDir.load(tmp_path / "out" / "enroll")
    assert enroll.utt2spk == {"m100-conv1-a": "m100", "m200-conv2-b": "m200", "m200-conv3-a": "m200"}
    assert enroll.spk2gender == {"m100": "f", "m200": "m"}
    np.testing.assert_array_equal(enroll.load_audio("m200-conv2-b")[0], audio["conv2"][:, 1])
    test = DataDir.load(tmp_path / "out" / "test")
    assert test.utts == ["conv1-b", "conv2-a", "conv3-a"] and test.utt2dur["conv3-a"] == 0.25
    np.testing.assert_array_equal(test.load_audio("conv1-b")[0], audio["conv1"][:, 1])
    np.testing.assert_array_equal(test.load_audio("conv2-a")[0], audio["conv2"][:, 0])
    assert (tmp_path / "out" / "trials").read_text() == (
        "m100 conv2-a target\nm100 conv3-a nontarget\nm200 conv1-b target\n")
    assert (tmp_path / "out" / "enroll_map").read_text() == "m100 m100-conv1-a\nm200 m200-conv2-b m200-conv3-a\n"


def test_sre_sph2pipe_entries(sre_tree, tmp_path):
    root, key, _ = sre_tree
    prepare_sre(root, key, tmp_path / "out", use_sph2pipe=True)
    line = (tmp_path / "out" / "test" / "wav.scp").read_text().splitlines()[0]
    assert line.startswith("conv1-b sph2pipe -f wav -p -c 2 /") and line.endswith("conv1.sph |")
    assert not (tmp_path / "out" / "test" / "reco2channel").exists()


@pytest.mark.parametrize("key_text,message", [
    ("m999 conv1 a target\n", r"key.csv: trial 1: model 'm999' is not in the train list"),
    ("m100 conv9 a target\n", r"key.csv: trial 1: segment 'conv9' has no .sph file"),
    ("m100 conv3 b target\n", r"side 'b' asked of .*conv3.sph, which has 1 channel"),
    ("m100 conv1 c target\n", r"key.csv:1: side 'c' is not a or b"),
    ("m100 conv1 a maybe\n", r"key.csv:1: expected"),
])
def test_sre_errors(sre_tree, tmp_path, key_text, message):
    root, key, _ = sre_tree
    key.write_text(key_text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_sre(root, key, tmp_path / "out", use_sph2pipe=False)


def test_sre_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        prepare_sre(tmp_path / "nope", tmp_path / "key", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="train list .*train.trn: no such file"):
        prepare_sre(tmp_path, tmp_path / "key", tmp_path / "out")


def test_cli_prepare_subsets_and_enrollment_list(sre_tree, tmp_path):
    from spkver.cli import main

    _vox_tree(tmp_path / "vox" / "vox2_dev_wav" / "dev" / "aac", ["id00012"])
    assert main(["prepare", "voxceleb", "--root", str(tmp_path / "vox"), "--out", str(tmp_path / "v"),
                 "--subsets", "vox2_dev"]) in (0, None)
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["vox2_dev"]
    root, key, _ = sre_tree
    trn = tmp_path / "core.trn"
    trn.write_text("m100 f conv1:A\n")
    assert main(["prepare", "sre", "--root", str(root), "--key", str(key), "--out", str(tmp_path / "s"),
                 "--train", str(trn)]) != 0  # m200 of the key has no enrollment in core.trn
    trn.write_text("m100 f conv1:A\nm200 m conv2:b\n")
    assert main(["prepare", "sre", "--root", str(root), "--key", str(key), "--out", str(tmp_path / "s"),
                 "--train", str(trn)]) in (0, None)
    assert DataDir.load(tmp_path / "s" / "enroll").utts == ["m100-conv1-a", "m200-conv2-b"]
