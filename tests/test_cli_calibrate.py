"""`spkver calibrate`: a calibration, fusion or quality-measure calibration trained on one trial set and applied to
another (scoring.quality.train_calibration / apply_calibration), and its bad input."""

import numpy as np
import pytest

from scoring import io
from scoring.fusion import Calibration, LinearFusion
from scoring.quality import QualityCalibration, apply_calibration, train_calibration
from spkver.cli import main

P = 0.5


def _trial_set(folder, seed, n_utt=24, dim=6, spread_scale=1.0):
    """A labelled trial list over n_utt utterances of 6 speakers, two systems' scores that degrade with each
    utterance's spread, an embedding file with that spread, and utt2dur. Returns the paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    ids = [f"s{u % 6}-{folder.name}{u:02d}" for u in range(n_utt)]
    spread = spread_scale * rng.uniform(0.05, 1.0, size=(n_utt, dim)).astype(np.float32)
    io.write_embeddings(folder / "emb.npz", ids, rng.normal(size=(n_utt, dim)).astype(np.float32), spread=spread)
    (folder / "utt2dur").write_text("".join(f"{u} {rng.uniform(1, 10):.2f}\n" for u in sorted(ids)))
    lines, noisy = [], spread.mean(axis=1)
    scores = [[], []]
    for i in range(n_utt):
        for j in range(i + 1, n_utt):
            target = ids[i][:2] == ids[j][:2]
            lines.append(f"{ids[i]} {ids[j]} {'target' if target else 'nontarget'}\n")
            for k, scores_k in enumerate(scores):
                scores_k.append((3.0 if target else 0.0) / (1 + 4 * noisy[i] + 4 * noisy[j]) + (k + 1) * 0.3
                                + rng.normal(scale=0.5))
    (folder / "trials").write_text("".join(lines))
    for k, values in enumerate(scores):
        (folder / f"sys{k}.txt").write_text("".join(f"{ln.split()[0]} {ln.split()[1]} {v:.6f}\n"
                                                    for ln, v in zip(lines, values)))
    return folder


def _calibrate(train, test, out, *extra):
    return main(["calibrate", "--train-trials", str(train / "trials"), "--train-scores",
                 *[str(train / f) for f in extra[0]], "--trials", str(test / "trials"), "--scores",
                 *[str(test / f) for f in extra[0]], "--out", str(out), *map(str, extra[1:])])


@pytest.fixture()
def sets(tmp_path):
    return _trial_set(tmp_path / "a", 0), _trial_set(tmp_path / "b", 1, spread_scale=1.5)


def test_one_system_is_a_calibration_trained_on_the_other_set(sets, tmp_path):
    a, b = sets
    assert _calibrate(a, b, tmp_path / "llr.txt", ["sys0.txt"], "--save-model", tmp_path / "cal.npz") == 0
    ta, tb = io.read_trials(a / "trials"), io.read_trials(b / "trials")
    cal = Calibration(p_target=P).fit(io.align_scores(ta, a / "sys0.txt"), ta.label)
    expected = cal.scale * io.align_scores(tb, b / "sys0.txt") + cal.offset
    np.testing.assert_allclose(io.align_scores(tb, tmp_path / "llr.txt"), expected, rtol=1e-5, atol=1e-5)
    assert Calibration.load(tmp_path / "cal.npz").scale == pytest.approx(cal.scale)
    # unlabelled trials can be calibrated too
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "trials").write_text("".join(" ".join(line.split()[:2]) + "\n"
                                                   for line in (b / "trials").read_text().splitlines()))
    (tmp_path / "u" / "sys0.txt").write_text((b / "sys0.txt").read_text())
    assert _calibrate(a, tmp_path / "u", tmp_path / "llr_u.txt", ["sys0.txt"]) == 0
    assert (tmp_path / "llr_u.txt").read_text() == (tmp_path / "llr.txt").read_text()


def test_two_systems_fuse_and_qmf_uses_each_sets_own_measures(sets, tmp_path):
    a, b = sets
    assert _calibrate(a, b, tmp_path / "fused.txt", ["sys0.txt", "sys1.txt"]) == 0
    ta, tb = io.read_trials(a / "trials"), io.read_trials(b / "trials")
    Sa = np.stack([io.align_scores(ta, a / f"sys{k}.txt") for k in range(2)], axis=1)
    Sb = np.stack([io.align_scores(tb, b / f"sys{k}.txt") for k in range(2)], axis=1)
    fusion = LinearFusion(p_target=P).fit(Sa, ta.label)
    np.testing.assert_allclose(io.align_scores(tb, tmp_path / "fused.txt"), fusion.predict(Sb), atol=1e-5)

    assert _calibrate(a, b, tmp_path / "qmf.txt", ["sys0.txt"], "--qmf", "duration,spread",
                      "--train-quality-emb", a / "emb.npz", "--train-utt2dur", a / "utt2dur",
                      "--quality-emb", b / "emb.npz", "--utt2dur", b / "utt2dur") == 0
    qa, qb = (io.read_embeddings(s / "emb.npz") for s in (a, b))
    dur = [io.read_utt2dur(s / "utt2dur") for s in (a, b)]

    def sides(trials, emb, durations):
        pos = {u: i for i, u in enumerate(emb.ids)}
        mean = emb.spread.mean(axis=1, dtype=np.float64)
        return [np.stack([[durations[u] for u in side], [mean[pos[u]] for u in side]], axis=1)
                for side in (trials.enroll, trials.test)]

    qmf = QualityCalibration(("duration", "spread"), p_target=P).fit(Sa[:, 0], ta.label, *sides(ta, qa, dur[0]))
    np.testing.assert_allclose(io.align_scores(tb, tmp_path / "qmf.txt"),
                               qmf.predict(Sb[:, 0], *sides(tb, qb, dur[1])), atol=1e-5)
    # the same quality calibration as `spkver eval --qmf ... --fuse-trials` (one path for both)
    assert main(["eval", "--trials", str(b / "trials"), "--scores", str(b / "sys0.txt"), "--qmf", "duration,spread",
                 "--fuse-trials", str(a / "trials"), "--fuse-scores", str(a / "sys0.txt"),
                 "--fuse-quality-emb", str(a / "emb.npz"), "--fuse-utt2dur", str(a / "utt2dur"),
                 "--quality-emb", str(b / "emb.npz"), "--utt2dur", str(b / "utt2dur"),
                 "--qmf-out", str(tmp_path / "eval_qmf.txt")]) == 0
    assert (tmp_path / "eval_qmf.txt").read_text() == (tmp_path / "qmf.txt").read_text()


def test_library_shapes_and_models():
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 50)
    s = rng.normal(size=100) + 2 * y
    assert isinstance(train_calibration(s, y), Calibration)
    assert isinstance(train_calibration(np.stack([s, -s], 1), y), LinearFusion)
    q = rng.uniform(1, 5, size=(100, 1))
    model = train_calibration(s, y, quality=("duration",), q_enroll=q, q_test=q)
    assert isinstance(model, QualityCalibration) and apply_calibration(model, s, q, q).shape == (100,)
    with pytest.raises(io.ScoringInputError, match="needs the quality measures"):
        apply_calibration(model, s)
    with pytest.raises(io.ScoringInputError, match="do not match"):
        train_calibration(s[:10], y)


@pytest.mark.parametrize("extra, message", [
    (["--train-scores", "sys0.txt", "--scores", "sys0.txt", "sys1.txt"], "--scores gives 2 files for the 1"),
    (["--train-scores", "sys0.txt", "--scores", "sys0.txt", "--utt2dur", "utt2dur"], "go with --qmf"),
    (["--train-scores", "sys0.txt", "--scores", "sys0.txt", "--qmf", "spread", "--quality-emb", "emb.npz"],
     "--qmf spread needs --train-quality-emb"),
    (["--train-scores", "sys0.txt", "--scores", "sys0.txt", "--qmf", "snr"], "--qmf:"),
])
def test_bad_options_are_named(sets, tmp_path, capsys, extra, message):
    a, b = sets
    args = ["calibrate", "--train-trials", str(a / "trials"), "--trials", str(b / "trials"),
            "--out", str(tmp_path / "x.txt")]
    args += [str((a if previous == "--train-scores" else b) / e) if (b / e).exists() else e
             for previous, e in zip(["--train-scores"] + extra[:-1], extra)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
