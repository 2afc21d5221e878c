"""spkver.data.kaldi: reading, validating, subsetting and saving Kaldi data dirs built in tmp_path."""

import numpy as np
import pytest
import soundfile as sf

from spkver.data.kaldi import DataDir, DataDirError, c_sorted


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def corpus(tmp_path):
    """corpus/audio/*.wav with paths relative to corpus/, and a data dir corpus/train."""
    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    utts = {"spkA-001": "spkA", "spkA-002": "spkA", "spkB-001": "spkB"}
    for utt in utts:
        sf.write(tmp_path / "audio" / f"{utt}.wav", 0.1 * rng.standard_normal(800).astype(np.float32), 8000)
    d = tmp_path / "train"
    d.mkdir()
    _write(d / "wav.scp", [f"{u} audio/{u}.wav" for u in utts])
    _write(d / "utt2spk", [f"{u} {s}" for u, s in utts.items()])
    _write(d / "utt2dur", [f"{u} 0.1" for u in utts])
    _write(d / "spk2gender", ["spkA m", "spkB f"])
    return d


def test_load_derives_spk2utt_and_resolves_against_parent(corpus):
    d = DataDir.load(corpus)
    assert d.utts == ["spkA-001", "spkA-002", "spkB-001"]
    assert d.speakers == ["spkA", "spkB"]
    assert d.spk2utt == {"spkA": ["spkA-001", "spkA-002"], "spkB": ["spkB-001"]}
    wave, sr = d.load_audio("spkA-002")
    assert sr == 8000 and wave.shape == (800,)
    assert d.load_audio("spkA-002", sample_rate=16000)[0].shape == (1600,)


def test_paths_resolve_against_data_dir_first_then_audio_root(corpus, tmp_path):
    (corpus / "audio").mkdir()
    inside = np.full(100, 0.5, np.float32)
    sf.write(corpus / "audio" / "spkB-001.wav", inside, 8000)
    parent = {u: sf.read(tmp_path / "audio" / f"{u}.wav", dtype="float32")[0] for u in ("spkA-001", "spkB-001")}
    d = DataDir.load(corpus)
    np.testing.assert_array_equal(d.load_audio("spkB-001")[0], inside)  # found inside the data dir
    np.testing.assert_array_equal(d.load_audio("spkA-001")[0], parent["spkA-001"])  # falls back to the parent
    rooted = DataDir.load(corpus, audio_root=tmp_path)
    np.testing.assert_array_equal(rooted.load_audio("spkB-001")[0], parent["spkB-001"])


def test_c_locale_order():
    assert c_sorted(["b", "B", "a-1", "a_1", "a1"]) == ["B", "a-1", "a1", "a_1", "b"]


@pytest.mark.parametrize("name,lines,message", [
    ("utt2spk", ["spkA-002 spkA", "spkA-001 spkA", "spkB-001 spkB"], r"utt2spk:2: id 'spkA-001' is out of order"),
    ("utt2spk", ["spkA-001 spkA", "spkA-001 spkA", "spkB-001 spkB"], r"utt2spk:2: duplicate id"),
    ("utt2spk", ["spkA-001 spkA", "spkA-002", "spkB-001 spkB"], r"utt2spk:2: expected 2 fields"),
    ("utt2spk", ["spkA-001 spkA", "spkA-002 spkA", "spkB-001 spkB", "spkC-001 spkC"],
     r"wav.scp: utterance 'spkC-001' of utt2spk has no entry"),
    ("spk2utt", ["spkA spkA-001", "spkB spkA-002 spkB-001"], r"spk2utt:2: utterance 'spkA-002' .* belongs to"),
    ("spk2utt", ["spkA spkA-001 spkA-002"], r"spk2utt: utterance 'spkB-001' .* is missing"),
    ("utt2dur", ["spkA-001 0.1", "spkA-002 abc"], r"utt2dur:2: duration 'abc' is not a number"),
    ("spk2gender", ["spkA m", "spkB x"], r"spk2gender: speaker 'spkB' has gender 'x'"),
])
def test_errors_name_file_and_line(corpus, name, lines, message):
    _write(corpus / name, lines)
    with pytest.raises(DataDirError, match=message):
        DataDir.load(corpus)


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(DataDirError, match="no such data directory"):
        DataDir.load(tmp_path / "nope")
    with pytest.raises(DataDirError, match="missing wav.scp"):
        DataDir.load(tmp_path)


def test_segments_and_reco2channel(tmp_path, monkeypatch):
    left = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    sf.write(tmp_path / "conv.sph", np.stack([left, -left], 1), 8000, format="NIST", subtype="PCM_16")
    _write(tmp_path / "wav.scp", ["conv-a conv.sph", "conv-b conv.sph"])
    _write(tmp_path / "segments", ["x-1 conv-a 0.0 0.1", "y-1 conv-b 0.1 0.2"])
    _write(tmp_path / "utt2spk", ["x-1 x", "y-1 y"])
    _write(tmp_path / "reco2channel", ["conv-a 0", "conv-b 1"])
    d = DataDir.load(tmp_path)
    requested, real_read = [], sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda f, frames=-1, *a, **k: requested.append(frames)
                        or real_read(f, frames, *a, **k))
    np.testing.assert_allclose(d.load_audio("x-1")[0], left[:800], atol=1 / 32768)
    np.testing.assert_allclose(d.load_audio("y-1")[0], -left[800:1600], atol=1 / 32768)
    assert requested == [800, 800]  # each segment's frames only, not the recording
    _write(tmp_path / "segments", ["x-1 conv-a 0.0 0.1", "y-1 conv-c 0.1 0.2"])
    with pytest.raises(DataDirError, match="recording 'conv-c' of utterance 'y-1' is not in wav.scp"):
        DataDir.load(tmp_path)


def test_subset_and_save_round_trip(corpus, tmp_path):
    d = DataDir.load(corpus)
    sub = d.subset(["spkB-001", "spkA-002"])
    assert sub.utts == ["spkA-002", "spkB-001"] and sorted(sub.utt2dur) == sub.utts
    with pytest.raises(KeyError, match="unknown utterance 'zz'"):
        d.subset(["zz"])
    out = sub.save(tmp_path / "elsewhere" / "sub", absolute_paths=True)
    assert sorted(p.name for p in out.iterdir()) == ["spk2gender", "spk2utt", "utt2dur", "utt2spk", "wav.scp"]
    assert (out / "spk2utt").read_text() == "spkA spkA-002\nspkB spkB-001\n"
    again = DataDir.load(out)
    assert again.utt2spk == sub.utt2spk and again.utt2dur == sub.utt2dur
    np.testing.assert_array_equal(again.load_audio("spkA-002")[0], d.load_audio("spkA-002")[0])
    one = d.subset(["spkA-001"])
    assert one.spk2gender == {"spkA": "m"}


def test_in_memory_dir_validates_before_saving(tmp_path):
    d = DataDir(wav_scp={"u2": "b.wav", "u1": "a.wav"}, utt2spk={"u1": "s", "u2": "s"})
    with pytest.raises(DataDirError, match="wav.scp: id 'u1' is out of C-locale order"):
        d.save(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_pipe_entries_load_and_cut_their_segments(tmp_path):
    """A ``command |`` value has several fields: the rest of the line is the value (Kaldi's wav.scp)."""
    wave = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    sf.write(tmp_path / "rec.wav", wave, 8000)
    _write(tmp_path / "wav.scp", [f"rec cat {tmp_path / 'rec.wav'} |"])
    _write(tmp_path / "segments", ["s-1 rec 0.1 0.15"])
    _write(tmp_path / "utt2spk", ["s-1 s"])
    d = DataDir.load(tmp_path)
    assert d.wav_scp == {"rec": f"cat {tmp_path / 'rec.wav'} |"}
    np.testing.assert_allclose(d.load_audio("s-1")[0], wave[800:1200], atol=1 / 32768)
