"""`spkver demo --quick`: the main job end to end on a tiny built-in corpus, and its resume."""

import json

from spkver.cli import main


def test_quick_demo_writes_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "in-domain" in printed and "out-of-domain" in printed
    report = json.loads((out / "report.json").read_text())
    for eval_set in ("eval_wide", "eval_tel"):
        for backend in ("cosine", "plda"):
            rows = report["results"][eval_set][backend]
            assert [r["name"] for r in rows] == ["baseline", "proposed", "fusion"]
            for row in rows:
                assert 0.0 <= row["eer"] <= 100.0
                assert row["n_target"] > 0 and row["n_nontarget"] > 0
    assert (out / "det.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert md.count("| plda |") == 2 and md.count("| cosine |") == 2
    # a second run finds every stage done and only re-scores
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "training" not in capsys.readouterr().out
