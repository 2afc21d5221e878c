"""Quality-measure calibration (scoring.quality): it beats the plain calibration on held-out trials when score
reliability depends on duration or spread, matches it when quality says nothing, round-trips through .npz, names
bad input; `spkver eval --qmf` rows are the library's; a system folder built with `--qmf duration` scores like
its stored pieces by hand."""

import json

import numpy as np
import pytest

from scoring import io, metrics
from scoring.fusion import Calibration, LinearFusion
from scoring.io import Embeddings, ScoringInputError, Trials
from scoring.pipeline import cross_validated_fusion, evaluate_systems, speaker_folds
from scoring.quality import QualityCalibration, QualityTable, feature_names, quality_features, read_quality
from scoring.report import evaluate_system
from spkver.cli import main

P = 0.05  # the prior the calibrations are trained for and judged at


def _trials(n, seed, informative=True):
    """Scores, labels and per-side durations (n, 1): the shorter side sets the reliability c in (0.25, 0.95):
    short trials have target scores shrunk towards 0 and more noise (an over-confident plain calibration)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int64)
    dur = np.exp(rng.uniform(np.log(1.0), np.log(60.0), size=(n, 2)))
    shorter = dur.min(axis=1)
    c = shorter / (shorter + 3.0) if informative else np.full(n, 0.6)
    s = 6.0 * c * y + (1.0 + 3.0 * (1.0 - c)) * rng.normal(size=n)
    return s, y, dur[:, :1], dur[:, 1:]


def _costs(llr, y):
    tar, non = llr[y == 1], llr[y == 0]
    return metrics.cllr(tar, non), metrics.act_dcf(tar, non, P)


@pytest.mark.parametrize("measure", ["duration", "spread"])
def test_qmf_beats_plain_calibration_on_held_out_trials_when_quality_matters(measure):
    # spread: the Monte Carlo spread of an embedding falls with the speech behind it (1 / sqrt(seconds))
    as_measure = (lambda d: d) if measure == "duration" else (lambda d: 0.3 / np.sqrt(d))  # noqa: E731
    s, y, de, dt = _trials(4000, seed=0)
    s2, y2, de2, dt2 = _trials(4000, seed=1)
    plain = _costs(Calibration(p_target=P).fit(s, y).predict(s2), y2)
    qmf = QualityCalibration((measure,), p_target=P).fit(s, y, as_measure(de), as_measure(dt))
    quality = _costs(qmf.predict(s2, as_measure(de2), as_measure(dt2)), y2)
    assert quality[0] < plain[0] - 0.05  # Cllr
    assert quality[1] < plain[1] - 0.08  # actDCF at P
    # symmetric in enrollment and test
    np.testing.assert_allclose(qmf.predict(s2, as_measure(de2), as_measure(dt2)),
                               qmf.predict(s2, as_measure(dt2), as_measure(de2)))


def test_qmf_equals_plain_calibration_when_quality_carries_no_information():
    s, y, de, dt = _trials(4000, seed=2, informative=False)
    s2, y2, de2, dt2 = _trials(4000, seed=3, informative=False)
    plain = _costs(Calibration(p_target=P).fit(s, y).predict(s2), y2)
    quality = _costs(QualityCalibration("duration", p_target=P).fit(s, y, de, dt).predict(s2, de2, dt2), y2)
    assert quality[0] == pytest.approx(plain[0], abs=0.01)
    assert quality[1] == pytest.approx(plain[1], abs=0.03)


def test_features_by_hand_and_the_fit_is_a_linear_fusion_of_them():
    s = np.array([1.0, -2.0])
    qe = np.array([[4.0, 0.5], [1.0, 0.1]])  # duration, spread
    qt = np.array([[2.0, 0.2], [8.0, 0.4]])
    X = quality_features(s, qe, qt, "spread,duration")  # measures in the fixed order: duration, spread
    lo = np.log(np.minimum(qe, qt))
    hi = np.log(np.maximum(qe, qt))
    terms = np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=1)
    np.testing.assert_allclose(X, np.column_stack([s, terms, s[:, None] * terms]))
    assert feature_names(("duration", "spread"))[:5] == ("score", "min_log_duration", "max_log_duration",
                                                        "min_log_spread", "max_log_spread")
    assert len(feature_names("duration", n_systems=2)) == 2 + 2 + 4
    S, y, de, dt = _trials(600, seed=4)
    qmf = QualityCalibration("duration", p_target=P).fit(S, y, de, dt)
    fusion = LinearFusion(p_target=P).fit(quality_features(S, de, dt, "duration"), y)
    np.testing.assert_allclose(qmf.weights, fusion.weights)
    assert qmf.offset == pytest.approx(fusion.offset)


def test_save_load_round_trip_and_refusals(tmp_path):
    S, y, de, dt = _trials(500, seed=5)
    Q = np.concatenate([de, 0.3 / np.sqrt(de)], axis=1), np.concatenate([dt, 0.3 / np.sqrt(dt)], axis=1)
    qmf = QualityCalibration(("duration", "spread"), p_target=0.01).fit(np.stack([S, -S + 1], axis=1), y, *Q)
    path = tmp_path / "qmf.npz"
    qmf.save(path)
    back = QualityCalibration.load(path)
    assert back.quality == ("duration", "spread") and back.n_systems == 2 and back.p_target == 0.01
    assert back.feature_names == qmf.feature_names
    np.testing.assert_array_equal(back.predict(np.stack([S, -S + 1], axis=1), *Q),
                                  qmf.predict(np.stack([S, -S + 1], axis=1), *Q))
    with np.load(path, allow_pickle=False) as z:
        assert [str(n) for n in z["feature_names"]] == list(qmf.feature_names)
        arrays = {k: z[k] for k in z.files}
    with pytest.raises(ScoringInputError, match="1 system"):
        back.predict(S, *Q)
    arrays["feature_names"] = arrays["feature_names"][::-1]  # features this code would not compute
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(ScoringInputError, match="odd.npz"):
        QualityCalibration.load(tmp_path / "odd.npz")
    Calibration().fit(S, y).save(tmp_path / "plain.npz")
    with pytest.raises(ScoringInputError, match="plain.npz: not a spkver-quality-calibration"):
        QualityCalibration.load(tmp_path / "plain.npz")


def test_bad_quality_is_named():
    s = np.zeros(3)
    good = np.ones((3, 1))
    with pytest.raises(ScoringInputError, match="q_enroll: duration of trial 1 is -2.0"):
        quality_features(s, np.array([[1.0], [-2.0], [3.0]]), good, "duration")
    with pytest.raises(ScoringInputError, match="q_test: spread of trial 2 is nan"):
        quality_features(s, good, np.array([[1.0], [1.0], [np.nan]]), "spread")
    with pytest.raises(ScoringInputError, match="loudness"):
        QualityCalibration("loudness")
    table = QualityTable().add("duration", {"a": 3.0}, "dev/utt2dur")
    with pytest.raises(ScoringInputError, match=r"dev/utt2dur: no duration for utterance 'b'"):
        table.lookup(["a", "b"], "duration")
    with pytest.raises(ScoringInputError, match="no file with spread values: no spread for utterance 'a'"):
        table.lookup(["a"], "spread")
    with pytest.raises(ScoringInputError, match=r"x.npz: spread of 'u1' is 0.0"):
        QualityTable().add_embeddings(Embeddings(["u0", "u1"], np.ones((2, 3)), "x.npz", spread=[[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ScoringInputError, match=r"d.txt: duration of 'u' is 0.0"):
        QualityTable().add("duration", {"u": 0.0}, "d.txt")


def test_a_model_combines_its_utterances_and_tables_read_files(tmp_path):
    utt2dur = tmp_path / "utt2dur"
    utt2dur.write_text("e1 2.0\ne2 3.0\nt1 4.0\n")
    emb = tmp_path / "e.npz"
    io.write_embeddings(emb, ["e1", "e2", "t1"], np.ones((3, 2)), spread=[[0.1, 0.3], [0.4, 0.4], [1.0, 1.0]],
                        duration=[9.0, 9.0, 9.0])
    table = read_quality(utt2dur, [emb])  # utt2dur first: its durations win
    trials = Trials(["m"], ["t1"])
    qe, qt = table.trial_sides(trials, ("duration", "spread"), enroll_map={"m": ["e1", "e2"]})
    np.testing.assert_allclose(qe, [[5.0, 0.3]])  # summed seconds, mean spread
    np.testing.assert_allclose(qt, [[4.0, 1.0]])


def test_evaluate_systems_adds_a_quality_fusion_of_several_systems():
    s, y, de, dt = _trials(800, seed=6)
    trials = Trials([f"e{i % 40}" for i in range(800)], [f"t{i}" for i in range(800)], y)
    systems = {"a": s, "b": s + np.random.default_rng(0).normal(size=800)}
    rows, scores = evaluate_systems(systems, trials, qmf=("duration",), qmf_quality=(de, dt))
    assert [r["name"] for r in rows] == ["a", "b", "fusion", "qmf"] and "cllr" in rows[-1]
    S = np.stack([systems["a"], systems["b"]], axis=1)
    np.testing.assert_allclose(scores["qmf"], cross_validated_fusion(quality_features(S, de, dt, "duration"), y,
                                                                     trials.enroll))
    with pytest.raises(ScoringInputError, match="'qmf'"):
        evaluate_systems({"qmf": s}, trials)


# ------------------------------------------------------------------------------------------------ spkver eval
def _eval_set(tmp_path, tag, seed, n=3000):
    """Trials between 120 enrollment and 600 test utterances, a score file, utt2dur and embeddings with a
    spread; a trial's scores are made from the durations of its two utterances (see ``_trials``)."""
    rng = np.random.default_rng(seed)
    dur = {**{f"{tag}e{i}": float(np.exp(rng.uniform(0, np.log(60)))) for i in range(120)},
           **{f"{tag}t{i}": float(np.exp(rng.uniform(0, np.log(60)))) for i in range(600)}}
    enroll = rng.integers(0, 120, size=n)
    test = rng.integers(0, 600, size=n)
    pairs = sorted({(f"{tag}e{e}", f"{tag}t{t}") for e, t in zip(enroll, test)})
    y = (rng.random(len(pairs)) < 0.25).astype(np.int64)
    shorter = np.array([min(dur[e], dur[t]) for e, t in pairs])
    c = shorter / (shorter + 3.0)
    s = 6.0 * c * y + (1.0 + 3.0 * (1.0 - c)) * rng.normal(size=len(pairs))
    trials, scores, utt2dur = tmp_path / f"{tag}trials", tmp_path / f"{tag}scores", tmp_path / f"{tag}utt2dur"
    trials.write_text("".join(f"{e} {t} {'target' if v else 'nontarget'}\n" for (e, t), v in zip(pairs, y)))
    scores.write_text("".join(f"{e} {t} {v:.6f}\n" for (e, t), v in zip(pairs, s)))
    utt2dur.write_text("".join(f"{u} {d:.4f}\n" for u, d in dur.items()))
    ids = sorted(dur)
    emb = tmp_path / f"{tag}emb.npz"
    io.write_embeddings(emb, ids, rng.normal(size=(len(ids), 4)),
                        spread=np.outer([0.3 / np.sqrt(dur[u]) for u in ids], [0.5, 1.0, 1.0, 1.5]))
    return {"trials": trials, "scores": scores, "utt2dur": utt2dur, "emb": emb}


def _json_rows(path):
    return {r["name"]: r for r in json.loads(path.read_text())["systems"]}


def _same_row(row, expected):
    for key in ("eer", "eer_rocch", "cllr", "min_cllr"):
        assert row[key] == pytest.approx(expected[key])
    for key in ("min_dcf", "act_dcf"):
        assert row[key] == pytest.approx(expected[key])


@pytest.mark.parametrize("qmf", ["duration", "duration,spread"])
def test_eval_qmf_cross_validated_rows_are_the_library_ones(tmp_path, qmf, capsys):
    ev = _eval_set(tmp_path, "", seed=7)
    out, fused = tmp_path / "res.json", tmp_path / "qmf.scores"
    sources = ["--utt2dur", str(ev["utt2dur"])] + (["--quality-emb", str(ev["emb"])] if "spread" in qmf else [])
    assert main(["eval", "--trials", str(ev["trials"]), "--scores", str(ev["scores"]), "--names", "raw",
                 "--qmf", qmf, *sources, "--fuse-cv", "2", "--p-target", str(P), "--json", str(out),
                 "--qmf-out", str(fused)]) == 0
    assert "qmf" in capsys.readouterr().out
    trials = io.read_trials(ev["trials"])
    s, y = io.align_scores(trials, ev["scores"]), trials.label.astype(np.int64)
    qe, qt = read_quality(ev["utt2dur"], [ev["emb"]]).trial_sides(trials, qmf)
    folds = speaker_folds(trials.enroll, 2, seed=0)
    llr = np.empty(len(s))
    for k in range(2):
        held = folds == k
        model = QualityCalibration(qmf, p_target=0.5).fit(s[~held], y[~held], qe[~held], qt[~held])
        llr[held] = model.predict(s[held], qe[held], qt[held])
    np.testing.assert_allclose(io.align_scores(trials, fused), llr, atol=2e-6)
    rows = _json_rows(out)
    assert list(rows) == ["raw", "qmf"]
    _same_row(rows["qmf"], evaluate_system("qmf", llr, y, [P], calibrated=True))


def test_eval_qmf_trained_on_another_set_beats_plain_calibration(tmp_path):
    ev, dev = _eval_set(tmp_path, "", seed=8), _eval_set(tmp_path, "dev", seed=9)
    out, fused = tmp_path / "res.json", tmp_path / "qmf.scores"
    assert main(["eval", "--trials", str(ev["trials"]), "--scores", str(ev["scores"]), "--names", "raw",
                 "--qmf", "duration", "--utt2dur", str(ev["utt2dur"]), "--fuse-trials", str(dev["trials"]),
                 "--fuse-scores", str(dev["scores"]), "--fuse-utt2dur", str(dev["utt2dur"]), "--p-target", str(P),
                 "--fuse-prior", str(P), "--json", str(out), "--qmf-out", str(fused)]) == 0
    trials, dev_trials = io.read_trials(ev["trials"]), io.read_trials(dev["trials"])
    s, y = io.align_scores(trials, ev["scores"]), trials.label.astype(np.int64)
    ds, dy = io.align_scores(dev_trials, dev["scores"]), dev_trials.label.astype(np.int64)
    model = QualityCalibration("duration", p_target=P).fit(
        ds, dy, *read_quality(dev["utt2dur"]).trial_sides(dev_trials, "duration"))
    llr = model.predict(s, *read_quality(ev["utt2dur"]).trial_sides(trials, "duration"))
    np.testing.assert_allclose(io.align_scores(trials, fused), llr, atol=2e-6)
    row = _json_rows(out)["qmf"]
    _same_row(row, evaluate_system("qmf", llr, y, [P], calibrated=True))
    plain = Calibration(p_target=P).fit(ds, dy).predict(s)
    assert row["cllr"] < metrics.cllr(plain[y == 1], plain[y == 0]) - 0.05
    assert row["act_dcf"][str(P)] < metrics.act_dcf(plain[y == 1], plain[y == 0], P) - 0.05


def test_eval_qmf_bad_inputs_are_named(tmp_path, capsys):
    ev = _eval_set(tmp_path, "", seed=10, n=400)
    base = ["eval", "--trials", str(ev["trials"]), "--scores", str(ev["scores"])]
    short = tmp_path / "short_utt2dur"
    short.write_text("".join(ev["utt2dur"].read_text().splitlines(keepends=True)[1:]))  # e0 left out
    zero = tmp_path / "zero_utt2dur"
    lines = ev["utt2dur"].read_text().splitlines(keepends=True)
    zero.write_text("".join(lines[:3] + ["e3 0\n"] + lines[4:]))
    nan = tmp_path / "nan.npz"
    np.savez(nan, ids=np.array(["e0", "t0"]), embeddings=np.ones((2, 2)), spread=np.array([[1.0, np.nan], [1, 1]]))
    cases = [
        (["--qmf", "loudness", "--utt2dur", str(ev["utt2dur"]), "--fuse-cv", "2"], "--qmf: quality measures"),
        (["--qmf", "duration", "--fuse-cv", "2"], "--qmf duration needs --utt2dur"),
        (["--qmf", "spread", "--utt2dur", str(ev["utt2dur"]), "--fuse-cv", "2"], "--qmf spread needs --quality-emb"),
        (["--qmf", "duration", "--utt2dur", str(ev["utt2dur"])], "--qmf needs --fuse-trials"),
        (["--utt2dur", str(ev["utt2dur"])], "go with --qmf"),
        (["--qmf", "duration", "--utt2dur", str(short), "--fuse-cv", "2"], f"{short}: no duration for utterance 'e0'"),
        (["--qmf", "duration", "--utt2dur", str(zero), "--fuse-cv", "2"], f"{zero}:4: duration of e3"),
        (["--qmf", "spread", "--quality-emb", str(nan), "--fuse-cv", "2"], f"{nan}: spread of id 'e0'"),
        (["--qmf", "spread", "--quality-emb", str(ev["emb"]), "--fuse-cv", "2", "--fuse-utt2dur", str(short)],
         "--fuse-utt2dur and --fuse-quality-emb go with --fuse-trials"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in capsys.readouterr().err, extra


# -------------------------------------------------------------------------------------------- system folder
def test_system_built_with_qmf_duration_scores_by_hand(tmp_path_factory, capsys):
    import spkver
    from scoring.plda import PLDA
    from spkver.api import score_trial_list
    from spkver.data.kaldi import DataDir
    from spkver.system import load_system, read_manifest, speech_seconds
    from system_fixtures import build, dev_files, tiny_setup

    setup = tiny_setup(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("qmf_system")
    out = root / "sys"
    assert main(["system", "build", "--model", str(setup["models"]["a"]), "--train-emb",
                 str(setup["emb"]["a/train"]), "--utt2spk", str(setup["train"] / "utt2spk"), "--backend", "plda",
                 "--lda-dim", "6", "--calibrate-data", str(setup["dev"]), "--calibrate-trials", str(setup["trials"]),
                 "--calibrate-emb", str(setup["emb"]["a/dev"]), "--name", "a", "--qmf", "duration",
                 "--out", str(out), "--device", "cpu"]) == 0
    manifest = read_manifest(out)
    cal = manifest["calibration"]
    assert cal["kind"] == "quality" and cal["quality"] == ["duration"] and len(cal["features"]) == 5
    assert [r["name"] for r in manifest["metrics"]["rows"]] == ["a", "qmf"]
    assert load_system(out).backend.quality == ("duration",)
    assert load_system(build(setup, root / "plain")).backend.quality == ()  # plain folders load as before

    sv = spkver.load(out)
    files = dev_files(setup)
    a, b = files["spk0101"][0], files["spk0102"][1]
    dev = DataDir.load(setup["dev"])
    seconds = speech_seconds(dev, [a.stem, b.stem], sv.system.extractors[0].features)
    raw = PLDA.load(out / "backend/a.npz").score(sv.embed(a)[None], sv.embed(b)[None])
    llr = QualityCalibration.load(out / "calibration.npz").predict(raw, [seconds[a.stem]], [seconds[b.stem]])
    assert sv.score(a, b) == pytest.approx(float(llr[0]), rel=1e-5, abs=1e-5)
    assert sv.score(b, a) == pytest.approx(sv.score(a, b), rel=1e-5, abs=1e-5)
    sv.enroll("two", [a, files["spk0101"][1]])  # a model's speech is the sum of its recordings'
    assert np.isfinite(sv.score("two", b))

    trials = root / "trials"
    trials.write_text(f"{a} {b}\n{b} {files['spk0102'][2]}\n")
    score_trial_list(sv.system, trials, root / "llr", device="cpu", num_workers=0)
    got = io.read_scores(root / "llr")[2]
    assert got == pytest.approx([sv.score(a, b), sv.score(b, files["spk0102"][2])], rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="--qmf spread"):
        build(setup, root / "spread", qmf="spread")
