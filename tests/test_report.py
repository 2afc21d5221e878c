"""Tests of scoring.report: result rows, Markdown / CSV tables, JSON round trip and DET plot files."""

import csv
import io
import json
import re
import struct

import numpy as np
import pytest

from scoring import metrics, report


def trials(seed=0, n_tar=200, n_non=2000, shift=2.0):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1, n_tar), rng.normal(0, 1, n_non)])
    labels = np.concatenate([np.ones(n_tar, dtype=int), np.zeros(n_non, dtype=int)])
    return scores, labels


def test_evaluate_system_row():
    scores, labels = trials()
    row = report.evaluate_system("cosine", scores, labels, p_targets=(0.01, 0.001))
    tar, non = scores[labels == 1], scores[labels == 0]
    assert row["name"] == "cosine" and row["n_target"] == 200 and row["n_nontarget"] == 2000
    assert row["eer"] == pytest.approx(100 * metrics.eer(tar, non))
    assert row["min_dcf"] == {"0.01": metrics.min_dcf(tar, non, 0.01), "0.001": metrics.min_dcf(tar, non, 0.001)}
    assert "cllr" not in row and "act_dcf" not in row


def test_evaluate_system_calibrated_adds_llr_metrics():
    scores, labels = trials()
    row = report.evaluate_system("plda", scores, labels, p_targets=[0.05], calibrated=True)
    tar, non = scores[labels == 1], scores[labels == 0]
    assert set(row["act_dcf"]) == {"0.05"}
    assert row["act_dcf"]["0.05"] == pytest.approx(metrics.act_dcf(tar, non, 0.05))
    assert row["cllr"] == pytest.approx(metrics.cllr(tar, non))
    assert row["min_cllr"] <= row["cllr"]


def test_bootstrap_intervals_of_calibrated_scores_cover_actdcf_and_cllr():
    """A calibrated row's actDCF and Cllr get intervals that resample the same clusters as EER and minDCF; an
    offset (miscalibration) moves them and leaves the discrimination intervals unchanged."""
    scores, labels = trials(n_tar=400, n_non=4000)
    clusters = np.arange(scores.size) % 100
    row = report.evaluate_system("plda", scores, labels, p_targets=[0.05], calibrated=True, clusters=clusters,
                                 n_boot=100)
    cllr_ci = metrics.bootstrap_ci(scores, labels, clusters, metric=metrics.cllr, n_boot=100)
    assert row["cllr_ci"] == [cllr_ci.low, cllr_ci.high]
    low, high = row["act_dcf_ci"]["0.05"]
    assert low < row["act_dcf"]["0.05"] < high and row["cllr_ci"][0] < row["cllr"] < row["cllr_ci"][1]
    shifted = report.evaluate_system("plda", scores + 3.0, labels, p_targets=[0.05], calibrated=True,
                                     clusters=clusters, n_boot=100)
    assert shifted["eer_ci"] == row["eer_ci"] and shifted["min_dcf_ci"] == row["min_dcf_ci"]
    assert shifted["cllr_ci"][0] > row["cllr_ci"][1] and shifted["act_dcf_ci"]["0.05"][0] > high
    plain = report.evaluate_system("plda", scores, labels, p_targets=[0.05], clusters=clusters, n_boot=10)
    assert "cllr_ci" not in plain and "act_dcf_ci" not in plain
    table = report.results_table([row]).splitlines()[0]
    assert "actDCF CI(0.05)" in table and "Cllr CI" in table


def test_evaluate_system_rejects_unlabelled_trials():
    with pytest.raises(ValueError, match="'sys'.*index 1"):
        report.evaluate_system("sys", [0.1, 0.2, 0.3], [1, -1, 0])
    with pytest.raises(ValueError, match="'sys'.*non"):
        report.evaluate_system("sys", [0.1, 0.2], [1, 1])


def rows():
    return [
        {"name": "xvector", "eer": 2.3456, "min_dcf": {"0.01": 0.25678, "0.001": 0.4}, "n_target": 10,
         "n_nontarget": 90},
        {"name": "bayes|mc", "eer": 1.5, "min_dcf": {"0.01": 0.2}, "cllr": 0.123456, "n_target": 10,
         "n_nontarget": 90},
    ]


def cells(line):
    """Cells of a Markdown table line, splitting on unescaped pipes."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_markdown_table_content():
    text = report.results_table(rows())
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.startswith("|") and line.endswith("|") for line in lines)
    assert cells(lines[0]) == ["System", "EER(%)", "minDCF(0.01)", "minDCF(0.001)", "Cllr", "#target",
                               "#nontarget"]
    assert set(lines[1]) <= set("|:-") and lines[1].startswith("|:-")  # names left-aligned
    assert all(c.endswith(":") for c in cells(lines[1])[1:])  # numbers right-aligned
    assert cells(lines[2]) == ["xvector", "2.35", "0.2568", "0.4000", "-", "10", "90"]
    assert cells(lines[3]) == ["bayes\\|mc", "1.50", "0.2000", "-", "0.1235", "10", "90"]
    assert len({len(line) for line in lines}) == 1  # columns padded to a common width


def test_table_column_selection_and_errors():
    text = report.results_table(rows(), columns=["name", "min_dcf"])
    assert cells(text.splitlines()[0]) == ["System", "minDCF(0.01)", "minDCF(0.001)"]
    with pytest.raises(ValueError, match="'nope'"):
        report.results_table(rows(), columns=["name", "nope"])
    with pytest.raises(ValueError, match="fmt"):
        report.results_table(rows(), fmt="html")
    with pytest.raises(ValueError, match=r"rows\[1\]"):
        report.results_table([rows()[0], {"eer": 1.0}])


def test_table_shows_bootstrap_intervals():
    row = dict(rows()[0], eer_ci=[1.9876, 2.81], min_dcf_ci={"0.01": [0.2, 0.31234]})
    lines = report.results_table([row], columns=["name", "eer", "eer_ci", "min_dcf_ci"]).splitlines()
    assert cells(lines[0]) == ["System", "EER(%)", "EER CI(%)", "minDCF CI(0.01)"]
    assert cells(lines[2]) == ["xvector", "2.35", "[1.99, 2.81]", "[0.2000, 0.3123]"]


def test_csv_table_keeps_full_precision():
    parsed = list(csv.reader(io.StringIO(report.results_table(rows(), fmt="csv"))))
    assert parsed[0][:3] == ["System", "EER(%)", "minDCF(0.01)"]
    assert parsed[1][:4] == ["xvector", "2.3456", "0.25678", "0.4"]
    assert parsed[2][0] == "bayes|mc" and parsed[2][3] == ""  # missing value left empty


def test_json_round_trip(tmp_path):
    scores, labels = trials(1)
    data = rows() + [report.evaluate_system("computed", scores, labels, calibrated=True)]
    data[0]["n_target"] = np.int64(10)  # numpy scalars are written as plain numbers
    path = report.write_json(tmp_path / "results.json", data)
    assert json.loads(path.read_text())["systems"][0]["n_target"] == 10
    assert report.read_json(path) == data
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_json_rejects_nan_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="results.json"):
        report.write_json(tmp_path / "results.json", [{"name": "x", "eer": float("nan")}])
    assert not any(tmp_path.iterdir())
    bad = tmp_path / "bad.json"
    bad.write_text('{"systems": [\n oops]}')
    with pytest.raises(ValueError, match="bad.json: line 2"):
        report.read_json(bad)


def test_det_plot_writes_png(tmp_path):
    a, la = trials(2)
    b, lb = trials(3, shift=1.0)
    path = report.det_plot({"good": (a[la == 1], a[la == 0]), "weak": (b[lb == 1], b[lb == 0])},
                           tmp_path / "det.png", title="DET")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 300 and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["det.png"]


def test_det_plot_errors_name_the_system(tmp_path):
    with pytest.raises(ValueError, match="'broken'"):
        report.det_plot({"broken": ([0.1, np.nan], [0.0])}, tmp_path / "det.png")
    assert not any(tmp_path.iterdir())
    path = report.det_plot({"ok": ([1.0], [0.0])}, tmp_path / "new" / "det.png")  # folders are created
    assert path.read_bytes()[:4] == b"\x89PNG"
