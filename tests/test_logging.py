"""Logs and results on separate streams: `spkver` logs go to stderr as `TIME LEVEL message` lines (INFO by
default, -q: warnings only, -v: debug), results to stdout, and progress bars only reach a terminal."""

import io
import logging
import re
import subprocess
import sys

import numpy as np
import pytest

from scoring.io import write_embeddings
from spkver.cli import main
from spkver.progress import LogHandler, configure_logging, progress

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture(autouse=True)
def _restore_loggers():
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
             for name in ("spkver", "scoring")}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def _score_inputs(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"s{k // 3}-u{k % 3}" for k in range(12)]
    emb = tmp_path / "emb.npz"
    write_embeddings(emb, ids, rng.normal(size=(12, 8)).astype(np.float32))
    trials = tmp_path / "trials"
    trials.write_text("".join(f"{a} {b} {'target' if a[:2] == b[:2] else 'nontarget'}\n"
                              for i, a in enumerate(ids) for b in ids[i + 1:]))
    return ["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
            "--out", str(tmp_path / "out.scores")]


def test_score_logs_to_stderr_and_leaves_stdout_to_results(tmp_path, capsys):
    assert main(_score_inputs(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]) and "INFO wrote 66 scores to" in lines[0]


def test_quiet_silences_info_and_verbose_enables_debug(tmp_path, capsys):
    assert main(["-q"] + _score_inputs(tmp_path)) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "out.scores").is_file()
    assert main(["--verbose"] + _score_inputs(tmp_path)) == 0
    assert logging.getLogger("spkver").getEffectiveLevel() == logging.DEBUG
    assert "wrote 66 scores" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-q", "-v"] + _score_inputs(tmp_path))
    assert "not allowed with" in capsys.readouterr().err


def test_the_installed_command_separates_the_streams(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spkver.cli"] + _score_inputs(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert [bool(LINE.match(line)) for line in proc.stderr.splitlines()] == [True]


def test_bars_stay_off_when_stderr_is_not_a_terminal(capsys):
    bar = progress(range(5), desc="work")
    assert bar.disable and list(bar) == list(range(5))
    assert progress(total=3, disable=False).disable
    assert "\r" not in capsys.readouterr().err


def test_configuring_twice_keeps_one_handler_that_follows_stderr(monkeypatch):
    configure_logging(logging.INFO)
    configure_logging(logging.INFO)
    handlers = [h for h in logging.getLogger("spkver").handlers if isinstance(h, LogHandler)]
    assert len(handlers) == 1
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logging.getLogger("spkver.train").info("epoch %d/%d: loss %.3f", 1, 2, 0.5)
    logging.getLogger("spkver.train").debug("hidden")
    assert LINE.match(stream.getvalue()) and stream.getvalue().rstrip().endswith("epoch 1/2: loss 0.500")
    assert "hidden" not in stream.getvalue()
