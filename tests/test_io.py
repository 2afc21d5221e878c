"""scoring.io: trial, embedding, score and speaker-map files written into tmp_path; every bad input names its place."""

import os
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from scoring.io import (
    Embeddings, ScoringInputError, Trials, align_scores, atomic_write, atomic_write_text, check_labels,
    read_embeddings, read_scores, read_spk2utt, read_table, read_trials, read_utt2spk, table_rows, write_embeddings,
    write_scores, write_trials,
)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def trials():
    return Trials(["a", "a", "b", "c"], ["x", "y", "x", "z"], [1, 0, 0, 1])


# ---------------------------------------------------------------------------------------------- trials
@pytest.mark.parametrize("fmt", ["kaldi", "voxceleb"])
def test_trials_round_trip(tmp_path, trials, fmt):
    path = tmp_path / f"trials.{fmt}"
    write_trials(path, trials, fmt=fmt)
    back = read_trials(path)
    assert back.enroll.tolist() == trials.enroll.tolist()
    assert back.test.tolist() == trials.test.tolist()
    assert back.label.tolist() == [1, 0, 0, 1]
    assert (len(back), back.n_target, back.n_nontarget, back.is_labelled) == (4, 2, 2, True)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind


def test_trials_formats_detected(tmp_path):
    vox = read_trials(_write(tmp_path / "v", ["1 id1/a.wav id1/b.wav", "", "0 id1/a.wav id2/c.wav"]))
    assert vox.enroll.tolist() == ["id1/a.wav"] * 2 and vox.label.tolist() == [1, 0]
    kaldi = read_trials(_write(tmp_path / "k", ["u1 u2 nontarget", "u1 u3 target"]))
    assert kaldi.test.tolist() == ["u2", "u3"] and kaldi.label.tolist() == [0, 1]
    plain = read_trials(_write(tmp_path / "p", ["u1 u2", "u3 u4"]))
    assert plain.label.tolist() == [-1, -1] and not plain.is_labelled
    # '1 x target' fits both labelled formats; a later Kaldi-only line settles it.
    mixed = read_trials(_write(tmp_path / "m", ["1 x target", "u1 u2 nontarget"]))
    assert mixed.enroll.tolist() == ["1", "u1"] and mixed.label.tolist() == [1, 0]


def test_write_unlabelled(tmp_path):
    t = Trials(["a"], ["b"])
    with pytest.raises(ScoringInputError, match="unlabelled"):
        write_trials(tmp_path / "t", t, fmt="kaldi")
    write_trials(tmp_path / "t", t, fmt="unlabelled")
    assert (tmp_path / "t").read_text() == "a b\n"


@pytest.mark.parametrize("lines, message", [
    (["u1 u2 target", "u1 u3 target extra"], r"t:2: expected 2 or 3 fields"),
    (["u1"], r"t:1: expected 2 or 3 fields"),
    (["u1 u2 target", "u1 u3 maybe"], r"t:2: unknown label"),
    (["2 u1 u2"], r"t:1: unknown label"),
    (["1 u1 u2", "u1 u3 target"], r"t:2: kaldi line .* line 1 is voxceleb"),
    (["u1 u2", "0 u1 u3"], r"t:2: voxceleb line .* line 1 is unlabelled"),
    (["u1 u2 target", "u3 u4 nontarget", "u1 u2 nontarget"], r"t:3: duplicate trial u1 u2 \(first on line 1\)"),
    ([], r"t: no trials"),
    (["", "  "], r"t: no trials"),
])
def test_bad_trials(tmp_path, lines, message):
    with pytest.raises(ScoringInputError, match=message):
        read_trials(_write(tmp_path / "t", lines))


def test_missing_trial_file(tmp_path):
    with pytest.raises(ScoringInputError, match="nope: cannot open"):
        read_trials(tmp_path / "nope")


def test_check_labels(tmp_path):
    check_labels(Trials(["a", "b"], ["c", "d"], [1, 0]))
    cases = [
        (Trials(["a", "b"], ["c", "d"], [1, 1], source="f.trials"), "f.trials: no non-target"),
        (Trials(["a", "b"], ["c", "d"], [0, 0], source="f.trials"), "f.trials: no target"),
        (Trials([], [], [], source="f.trials"), "f.trials: the trial list is empty"),
        (Trials(["a", "b"], ["c", "d"], None, source="f.trials"), r"trial 0 \(a c\) has no label"),
    ]
    for t, message in cases:
        with pytest.raises(ScoringInputError, match=message):
            check_labels(t)


def test_trials_validation():
    with pytest.raises(ScoringInputError, match="same length"):
        Trials(["a", "b"], ["c"], [1, 0])
    with pytest.raises(ScoringInputError, match="trial 1 has label 2"):
        Trials(["a", "b"], ["c", "d"], [1, 2])
    tar, non = Trials(["a", "b", "c"], ["d", "e", "f"], [1, 0, -1]).split_scores([3.0, 2.0, 1.0])
    assert tar.tolist() == [3.0] and non.tolist() == [2.0]


# ---------------------------------------------------------------------------------------------- embeddings
@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    return Embeddings(["spk1-u1", "spk1-u2", "spk2-u1"], rng.standard_normal((3, 4)).astype(np.float32))


@pytest.mark.parametrize("name, read_as", [("e.npz", "e.npz"), ("e.ark", "e.scp"), ("e.scp", "e.ark")])
def test_embeddings_round_trip(tmp_path, emb, name, read_as):
    write_embeddings(tmp_path / name, emb.ids, emb.vectors)
    back = read_embeddings(tmp_path / read_as)
    assert back.ids.tolist() == emb.ids.tolist()
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.dim == 4 and len(back) == 3 and back.vectors.dtype == np.float32
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_scp_points_to_final_archive(tmp_path, emb, monkeypatch):
    write_embeddings(tmp_path / "e.scp", emb.ids, emb.vectors)
    monkeypatch.chdir(tmp_path.parent)  # the index must not depend on the working directory
    assert str(tmp_path / "e.ark") in (tmp_path / "e.scp").read_text()
    np.testing.assert_array_equal(read_embeddings(tmp_path / "e.scp").get(["spk2-u1"]), emb.vectors[2:])


def test_index(emb):
    assert emb.index(["spk2-u1", "spk1-u1", "spk2-u1"]).tolist() == [2, 0, 2]
    assert "spk1-u2" in emb and "x" not in emb
    with pytest.raises(ScoringInputError, match=r"no embedding for id 'ghost' \(1 of 2"):
        emb.index(["spk1-u1", "ghost"])


def test_embedding_errors(tmp_path):
    with pytest.raises(ScoringInputError, match="duplicate id 'a'"):
        Embeddings(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(ScoringInputError, match="id 'b' contains NaN or inf"):
        Embeddings(["a", "b"], [[0.0, 1.0], [np.nan, 0.0]])
    with pytest.raises(ScoringInputError, match="id 'a' contains NaN or inf"):
        Embeddings(["a", "b"], [[np.inf, 1.0], [0.0, 0.0]])
    with pytest.raises(ScoringInputError, match=r"shape \(2, 2\) for 3 ids"):
        Embeddings(["a", "b", "c"], np.zeros((2, 2)))
    with pytest.raises(ScoringInputError, match="bad.npz: duplicate id 'a'"):
        write_embeddings(tmp_path / "bad.npz", ["a", "a"], np.zeros((2, 2)))
    with pytest.raises(ScoringInputError, match="contains whitespace"):
        write_embeddings(tmp_path / "bad.ark", ["a b"], np.zeros((1, 2)))
    with pytest.raises(ScoringInputError, match=r"unknown embedding format '\.txt'"):
        write_embeddings(tmp_path / "e.txt", ["a"], np.zeros((1, 2)))
    assert not os.listdir(tmp_path)


def test_embedding_io_reexported_from_io():
    """Embedding I/O lives in scoring.embio; scoring.io re-exports the same objects, whichever is imported first."""
    import scoring.embio
    import scoring.io

    for name in ("Embeddings", "read_embeddings", "write_embeddings"):
        assert getattr(scoring.io, name) is getattr(scoring.embio, name)
        assert name in dir(scoring.io) and name in scoring.io.__all__
    with pytest.raises(AttributeError, match="has no attribute 'Embedding'"):
        scoring.io.Embedding
    code = ("import scoring.embio\nfrom scoring.io import Embeddings, write_embeddings\n"
            "assert Embeddings is scoring.embio.Embeddings and write_embeddings is scoring.embio.write_embeddings\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_read_embedding_errors(tmp_path):
    ark = str(tmp_path / "mixed.ark")
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_path / 'mixed.scp'}") as writer:
        writer("u1", np.zeros(3, dtype=np.float32))
        writer("u2", np.zeros(4, dtype=np.float32))
    for name in ("mixed.ark", "mixed.scp"):
        with pytest.raises(ScoringInputError, match=rf"{name}: entry 'u2' has dimension 4, but entry 'u1' has 3"):
            read_embeddings(tmp_path / name)
    _write(tmp_path / "dangling.scp", [f"u1 {tmp_path / 'gone.ark'}:10"])
    with pytest.raises(ScoringInputError, match="dangling.scp: cannot read entry 'u1'"):
        read_embeddings(tmp_path / "dangling.scp")
    np.savez(tmp_path / "keys.npz", ids=np.array(["a"]), vectors=np.zeros((1, 2)))
    with pytest.raises(ScoringInputError, match=r"keys.npz: missing array\(s\) \['embeddings'\]"):
        read_embeddings(tmp_path / "keys.npz")
    np.savez(tmp_path / "dup.npz", ids=np.array(["a", "a"]), embeddings=np.zeros((2, 2)))
    with pytest.raises(ScoringInputError, match="dup.npz: duplicate id 'a'"):
        read_embeddings(tmp_path / "dup.npz")
    with pytest.raises(ScoringInputError, match="absent.npz: no such file"):
        read_embeddings(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------------------------- scores
def test_scores_round_trip_and_align(tmp_path, trials):
    scores = np.array([0.25, -1.5e-3, 12.75, 1 / 3])
    write_scores(tmp_path / "s", trials, scores)
    enroll, test, back = read_scores(tmp_path / "s")
    assert enroll.tolist() == trials.enroll.tolist() and test.tolist() == trials.test.tolist()
    np.testing.assert_allclose(back, scores, rtol=1e-9)
    # A shuffled file with an extra line aligns back to the trial order.
    lines = (tmp_path / "s").read_text().splitlines()
    _write(tmp_path / "shuffled", lines[::-1] + ["q r 9.0"])
    np.testing.assert_allclose(align_scores(trials, tmp_path / "shuffled"), scores, rtol=1e-9)


@pytest.mark.parametrize("lines, message", [
    (["a x 1.0", "a y 2.0", "b x 0.5", "a x 3.0"], r"s:4: duplicate score for a x \(first on line 1\)"),
    (["a x 1.0", "a y nan"], r"s:2: score is nan"),
    (["a x -inf"], r"s:1: score is -inf"),
    (["a x one"], r"s:1: score 'one' is not a number"),
    (["a x"], r"s:1: expected 'enroll test score', got 2 fields"),
])
def test_bad_score_lines(tmp_path, lines, message):
    with pytest.raises(ScoringInputError, match=message):
        read_scores(_write(tmp_path / "s", lines))


def test_align_missing_score(tmp_path, trials):
    _write(tmp_path / "s", ["a x 1.0", "a y 2.0", "c z 0.5"])
    with pytest.raises(ScoringInputError, match=r"s: no score for trial b x .*\(1 of 4 trials"):
        align_scores(trials, tmp_path / "s")


def test_write_scores_errors(tmp_path, trials):
    with pytest.raises(ScoringInputError, match=r"score of trial 2 \(b x\) is nan"):
        write_scores(tmp_path / "s", trials, [0.0, 1.0, np.nan, 2.0])
    with pytest.raises(ScoringInputError, match=r"\(3,\) scores for 4 trials"):
        write_scores(tmp_path / "s", trials, [0.0, 1.0, 2.0])
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------- speakers
def test_speaker_maps(tmp_path):
    assert read_utt2spk(_write(tmp_path / "u", ["u1 s1", "u2 s1", "u3 s2"])) == {"u1": "s1", "u2": "s1", "u3": "s2"}
    assert read_spk2utt(_write(tmp_path / "s", ["s1 u1 u2", "s2 u3"])) == {"s1": ["u1", "u2"], "s2": ["u3"]}
    cases = [
        (read_utt2spk, ["u1 s1", "u1 s2"], r"u:2: duplicate id 'u1' \(first on line 1\)"),
        (read_utt2spk, ["u1 s1 s2"], r"u:1: expected 2 fields, got 3"),
        (read_spk2utt, ["s1 u1", "s2"], r"u:2: expected at least 2 fields, got 1"),
        (read_spk2utt, ["s1 u1", "s1 u2"], r"u:2: duplicate id 's1'"),
        (read_spk2utt, ["s1 u1", "s2 u2 u1"], r"u:2: utterance u1 listed twice \(also line 1\)"),
        (read_spk2utt, ["s1 u1 u1"], r"u:1: utterance u1 listed twice"),
    ]
    for reader, lines, message in cases:
        with pytest.raises(ScoringInputError, match=message):
            reader(_write(tmp_path / "u", lines))


def test_table_reader_options(tmp_path):
    scp = _write(tmp_path / "wav.scp", ["b  sox x.wav -t wav - |", "", "a y.wav"])
    assert read_table(scp, rest_as_value=True) == {"b": "sox x.wav -t wav - |", "a": "y.wav"}
    assert [row[0] for row in table_rows(scp, max_fields=None)] == [1, 3]  # line numbers, blank line skipped
    with pytest.raises(ScoringInputError, match=r"wav.scp:3: id 'a' is out of order after 'b'"):
        read_table(scp, max_fields=None, check_sorted=True)
    with pytest.raises(KeyError, match=r"wav.scp:2: blank line"):
        read_table(scp, max_fields=None, skip_blank=False, error=KeyError)
    seg = _write(tmp_path / "segments", ["u1 r1 0 1", "u2 r1 1"])
    with pytest.raises(ScoringInputError, match=r"segments:2: expected 4 fields, got 3: 'u2 r1 1'"):
        read_table(seg, min_fields=4, max_fields=4)
    with pytest.raises(ScoringInputError, match="absent: cannot open"):
        read_table(tmp_path / "absent")


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "d" / "a.txt", "x\n")
    atomic_write_text(tmp_path / "d" / "b.txt", (f"{i}\n" for i in range(3)))
    assert (tmp_path / "d" / "a.txt").read_text() == "x\n" and (tmp_path / "d" / "b.txt").read_text() == "0\n1\n2\n"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.txt", "b.txt"]  # no temporary files left


def test_embio_does_not_import_io():
    """scoring.embio builds on scoring._base, not on scoring.io (which re-exports it): no import cycle."""
    code = "import sys, scoring.embio\nassert 'scoring.io' not in sys.modules, 'scoring.embio imported scoring.io'\n"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
