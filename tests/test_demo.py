"""`spkver demo --quick`: the main job end to end on a tiny built-in corpus, and its resume."""

import json
import re

from spkver.cli import main


def test_quick_demo_writes_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert "in-domain" in printed and "out-of-domain" in printed  # the tables: stdout
    assert "INFO" not in printed and "training the baseline" in err  # the log: stderr
    assert "\r" not in err  # no progress bar redraws when stderr is not a terminal
    assert re.findall(r"INFO epoch (\d+)/1: loss [0-9.]+", err) == ["1", "1"]  # one line per epoch and model
    report = json.loads((out / "report.json").read_text())
    for eval_set in ("eval_wide", "eval_tel"):
        for backend in ("cosine", "plda"):
            rows = report["results"][eval_set][backend]
            assert [r["name"] for r in rows] == ["baseline", "proposed", "fusion"]
            assert len({r["n_target"] for r in rows}) == 1 and rows[0]["n_target"] == 30  # DemoConfig.quick()
            assert rows[2]["eer_rocch"] <= rows[2]["eer"] and "cllr" in rows[2]  # the fusion outputs LLRs
    assert (out / "det.png").read_bytes()[:4] == b"\x89PNG"
    # every cell of report.md is the EER / minDCF of the matching row of report.json
    md = (out / "report.md").read_text()
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
             if re.match(r"^\| (in|out)-", line)]
    assert len(lines) == 4
    for cells in lines:
        eval_set = "eval_wide" if cells[0].startswith("in-") else "eval_tel"
        rows = report["results"][eval_set][cells[1]]
        assert cells[2:] == [f"{r['eer']:.2f} / {r['min_dcf']['0.01']:.4f}" for r in rows]
    # a second run finds every stage done and only re-scores
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert "in-domain" in printed and "training" not in err
