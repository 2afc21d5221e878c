"""The one evaluation path: `spkver eval` / `spkver table` over scoring.pipeline and scoring.report.

Every number in a table must be the metric computed directly from the score files, and a cross-validated fusion
must never train on trials of the enrollment speakers it scores.
"""

import csv
import io as stdio
import json
import re

import numpy as np
import pytest

from scoring import io, metrics
from scoring.pipeline import cross_validated_fusion, evaluate_systems
from spkver.cli import main


def _trials(tmp_path, n_spk=10, seed=0):
    """Trials between utterances of ``n_spk`` speakers (enrollment ids are utterances, 4 per speaker; speaker
    spk00 enrolls far more trials than the others), two systems' score files, and utt2spk."""
    rng = np.random.default_rng(seed)
    utts = [f"spk{s:02d}-{u}" for s in range(n_spk) for u in range(4)]
    spk = {u: u.split("-")[0] for u in utts}
    lines, rows = [], []
    for e in utts:
        tests = utts if spk[e] == "spk00" else utts[::3]
        for t in tests:
            if t != e:
                lines.append(f"{e} {t} {'target' if spk[e] == spk[t] else 'nontarget'}\n")
                rows.append((e, t, spk[e] == spk[t]))
    path = tmp_path / "trials"
    path.write_text("".join(lines))
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{u} {s}\n" for u, s in spk.items()))
    label = np.array([r[2] for r in rows], dtype=float)
    files = []
    for k, (shift, noise) in enumerate([(2.0, 1.0), (1.0, 0.7)]):
        x = shift * label + noise * rng.normal(size=label.size)
        f = tmp_path / f"sys{k}.scores"
        f.write_text("".join(f"{e} {t} {v:.6f}\n" for (e, t, _), v in zip(rows, x)))
        files.append(f)
    return path, utt2spk, files


def _flip_speaker(trials_path, speaker, out):
    """The same trial list with every label of ``speaker``'s enrollment trials inverted."""
    flipped = []
    for line in trials_path.read_text().splitlines():
        e, t, lab = line.split()
        if e.startswith(speaker + "-"):
            lab = "nontarget" if lab == "target" else "target"
        flipped.append(f"{e} {t} {lab}\n")
    out.write_text("".join(flipped))
    return out


def test_cross_validated_fusion_never_sees_the_scored_speaker(tmp_path):
    """A fused score may depend on the labels of other speakers' trials only: inverting every label of one
    enrollment speaker leaves that speaker's fused scores unchanged. A fold split per trial (or per enrollment
    utterance, when groups are speakers) trains on the flipped labels and changes them."""
    path, utt2spk, files = _trials(tmp_path)
    trials = io.read_trials(path)
    S = np.stack([io.align_scores(trials, f) for f in files], axis=1)
    groups = np.array([e.split("-")[0] for e in trials.enroll])
    labels = trials.label.astype(int)
    mine = groups == "spk00"
    flipped = labels.copy()
    flipped[mine] = 1 - flipped[mine]
    a = cross_validated_fusion(S, labels, groups, n_folds=3)
    b = cross_validated_fusion(S, flipped, groups, n_folds=3)
    np.testing.assert_array_equal(a[mine], b[mine])
    assert not np.allclose(a[~mine], b[~mine])  # the flip does reach the other folds: the check has teeth
    # grouping by enrollment utterance splits spk00 over the folds: the same flip then moves its scores
    by_utt = cross_validated_fusion(S, labels, trials.enroll, n_folds=3)
    by_utt_flipped = cross_validated_fusion(S, flipped, trials.enroll, n_folds=3)
    assert np.abs(by_utt[mine] - by_utt_flipped[mine]).max() > 1e-3


def test_eval_fusion_folds_follow_enrollment_speakers(tmp_path):
    """The same invariance through `spkver eval --fuse --fuse-cv K --fuse-utt2spk F --fusion-out`."""
    path, utt2spk, files = _trials(tmp_path)
    flipped = _flip_speaker(path, "spk00", tmp_path / "trials.flipped")
    outs = []
    for k, t in enumerate((path, flipped)):
        out = tmp_path / f"fused{k}"
        assert main(["eval", "--trials", str(t), "--scores", *map(str, files), "--names", "a", "b", "--fuse",
                     "--fuse-cv", "3", "--fuse-utt2spk", str(utt2spk), "--fusion-out", str(out)]) == 0
        outs.append(io.read_scores(out))
    mine = np.char.startswith(outs[0][0].astype(str), "spk00-")
    np.testing.assert_array_equal(outs[0][2][mine], outs[1][2][mine])
    assert not np.allclose(outs[0][2][~mine], outs[1][2][~mine])


def _cells(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def _direct(files, trials_path):
    """Per run: {system: (eer %, min_dcf at 0.01)} computed straight from the score files."""
    trials = io.read_trials(trials_path)
    lab = trials.label == 1
    out = {}
    for name, f in files.items():
        x = io.align_scores(trials, f)
        out[name] = (100 * metrics.eer(x[lab], x[~lab]), metrics.min_dcf(x[lab], x[~lab], 0.01),
                     100 * metrics.eer_rocch(x[lab], x[~lab]))
    return out


def test_every_table_cell_is_the_metric_of_the_scores(tmp_path, capsys):
    """Three runs of two systems -> `spkver eval --system ...` (JSON, CSV) -> `spkver table`: each Markdown cell
    "EER ± sd / minDCF ± sd" equals mean and sample sd over runs of the metrics computed from the score files,
    and the per-run rows in the JSON equal the metrics of each run."""
    runs = []
    for seed in range(3):
        d = tmp_path / f"run{seed}"
        d.mkdir()
        path, utt2spk, files = _trials(d, seed=seed)
        runs.append(files)
    trials = tmp_path / "run0" / "trials"  # the trial list is the same in every run; only the scores differ
    res, res_csv = tmp_path / "res.json", tmp_path / "res.csv"
    assert main(["eval", "--trials", str(trials), "--system", "baseline", *[str(r[0]) for r in runs],
                 "--system", "proposed", *[str(r[1]) for r in runs], "--p-target", "0.01",
                 "--json", str(res), "--csv", str(res_csv)]) == 0
    capsys.readouterr()
    direct = [_direct({"baseline": r[0], "proposed": r[1]}, trials) for r in runs]
    data = json.loads(res.read_text())
    for run, rows in zip(direct, data["runs"]):
        for row in rows:
            assert row["eer"] == pytest.approx(run[row["name"]][0], abs=1e-9)
            assert row["min_dcf"]["0.01"] == pytest.approx(run[row["name"]][1], abs=1e-12)
            assert row["eer_rocch"] == pytest.approx(run[row["name"]][2], abs=1e-9)

    assert main(["table", "--entry", "dev", "plda", str(res), "--systems", "baseline", "proposed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _cells(lines[0]) == ["eval set", "back-end", "baseline EER (%) / minDCF", "proposed EER (%) / minDCF"]
    cells = _cells(lines[2])
    assert cells[:2] == ["dev", "plda"]
    for name, cell in zip(("baseline", "proposed"), cells[2:]):
        eer = np.array([r[name][0] for r in direct])
        dcf = np.array([r[name][1] for r in direct])
        assert cell == (f"{eer.mean():.2f} ± {eer.std(ddof=1):.2f} / {dcf.mean():.4f} ± {dcf.std(ddof=1):.4f}")

    table = list(csv.DictReader(stdio.StringIO(res_csv.read_text())))
    by_name = {r["System"]: r for r in table}
    for name in ("baseline", "proposed"):
        eer = np.array([r[name][0] for r in direct])
        assert float(by_name[name]["EER(%)"]) == pytest.approx(eer.mean(), abs=1e-9)
        assert float(by_name[name]["EER(%) sd"]) == pytest.approx(eer.std(ddof=1), abs=1e-9)
        rocch = np.array([r[name][2] for r in direct])
        assert float(by_name[name]["EER ROCCH(%)"]) == pytest.approx(rocch.mean(), abs=1e-9)

    # one run of the JSON, with the metrics in another order
    assert main(["table", "--entry", "dev", "plda", str(res), "--systems", "proposed", "--run", "1",
                 "--metric", "min_dcf", "--metric", "eer"]) == 0
    cell = _cells(capsys.readouterr().out.splitlines()[2])[2]
    assert cell == f"{direct[1]['proposed'][1]:.4f} / {direct[1]['proposed'][0]:.2f}"


def test_single_file_form_keeps_its_json(tmp_path, capsys):
    path, _, files = _trials(tmp_path)
    out = tmp_path / "one.json"
    assert main(["eval", "--trials", str(path), "--scores", str(files[0]), "--names", "sys", "--json",
                 str(out)]) == 0
    assert "sys" in capsys.readouterr().out
    row = json.loads(out.read_text())["systems"][0]
    assert isinstance(row["eer"], float) and row["eer"] == pytest.approx(_direct({"s": files[0]}, path)["s"][0])
    assert "runs" not in json.loads(out.read_text())


def test_table_marks_a_missing_system_and_shows_intervals(tmp_path, capsys):
    path, utt2spk, files = _trials(tmp_path)
    out = tmp_path / "r.json"
    assert main(["eval", "--trials", str(path), "--scores", str(files[0]), "--names", "baseline",
                 "--bootstrap", "20", "--p-target", "0.01", "--json", str(out)]) == 0
    capsys.readouterr()
    row = json.loads(out.read_text())["systems"][0]
    assert main(["table", "--entry", "dev", "cosine", str(out), "--ci"]) == 0
    cells = _cells(capsys.readouterr().out.splitlines()[2])
    lo, hi = row["eer_ci"]
    assert cells[2].startswith(f"{row['eer']:.2f} [{lo:.2f}, {hi:.2f}] / {row['min_dcf']['0.01']:.4f} [")
    assert cells[3:] == ["-", "-"]


@pytest.mark.parametrize("extra, message", [
    (["--system", "a", "S0", "S1", "--system", "b", "S0"], "same number of runs"),
    (["--system", "a", "S0", "--names", "x"], "--names goes with --scores"),
    (["--system", "a", "nope.scores"], "--system: no such file: nope.scores"),
    (["--system", "fusion", "S0"], "not 'fusion'"),
    (["--scores", "S0", "S1", "--fuse-cv", "2"], "go with --fuse"),
    (["--system", "a", "S0", "S1", "--system", "b", "S1", "S0", "--det", "x.png"], "single run"),
])
def test_eval_argument_errors_name_the_flag(tmp_path, capsys, extra, message):
    path, _, files = _trials(tmp_path)
    names = {"S0": str(files[0]), "S1": str(files[1])}
    argv = ["eval", "--trials", str(path)] + [names.get(a, a) for a in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_evaluate_systems_rejects_a_system_named_fusion(tmp_path):
    path, _, files = _trials(tmp_path)
    trials = io.read_trials(path)
    with pytest.raises(ValueError, match="fusion"):
        evaluate_systems({"fusion": io.align_scores(trials, files[0])}, trials)
