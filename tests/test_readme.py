"""The README's Python example runs as written, against the shipped system, on recordings made here."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _verify_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Verify two recordings"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """a.wav, b.wav (speaker 1), alice1.wav, alice2.flac (speaker 0) from the synthetic corpus."""
    from spkver.audio import write_audio
    from spkver.data.synthetic.corpus import make_corpus

    root = tmp_path_factory.mktemp("readme")
    data = make_corpus(root / "corpus", n_speakers=2, sessions_per_speaker=1, utts_per_session=3,
                       min_seconds=2.0, max_seconds=2.5, seed=7, workers=1)
    by_spk = {}
    for utt in sorted(data.utt2spk):
        by_spk.setdefault(data.utt2spk[utt], []).append(utt)
    (s0, s1) = sorted(by_spk)
    names = {"alice1.wav": by_spk[s0][0], "alice2.flac": by_spk[s0][1], "a.wav": by_spk[s1][0],
             "b.wav": by_spk[s1][1]}
    for name, utt in names.items():
        wave, rate = data.load_audio(utt)
        write_audio(root / name, wave, rate)
    return root


def test_readme_python_example_runs(recordings, monkeypatch, capsys):
    import spkver
    from spkver.api import Decision

    monkeypatch.chdir(recordings)
    namespace = {}
    exec(compile(_verify_example(), str(README), "exec"), namespace)
    assert isinstance(namespace["decision"], Decision)
    assert namespace["decision"].llr == pytest.approx(namespace["llr"])
    documented = int(re.search(r"sv\.embed\(\"a\.wav\"\) +# \((\d+),\)", _verify_example()).group(1))
    assert namespace["embedding"].shape == (documented,) and np.isfinite(namespace["embedding"]).all()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0] in ("True", "False") and len(printed) == 2
    assert isinstance(spkver.load().score("a.wav", "b.wav"), float)


def test_shipped_system_is_intact_and_calibrated():
    """The packaged system loads (every file's hash checked) and its recorded calibration check holds: on
    speaker-disjoint folds the actual DCF is within 5% of the minimum."""
    from spkver.system import default_system_path, read_manifest

    manifest = read_manifest(default_system_path())
    cv = manifest["metrics"]["cross_validated"]
    assert cv["act_dcf"] <= 1.05 * cv["min_dcf"] and cv["cllr"] <= 1.05 * cv["min_cllr"]
    assert sum(f["size"] for f in manifest["files"].values()) < 10 * 2 ** 20


def test_verify_without_system_uses_the_shipped_one(recordings, capsys):
    import json

    from spkver.cli import main

    a, b = str(recordings / "a.wav"), str(recordings / "b.wav")
    assert main(["verify", a, b, "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    import spkver
    assert out["llr"] == pytest.approx(spkver.load().score(a, b), abs=1e-6)
    assert out["threshold"] == pytest.approx(np.log(99)) and out["accept"] == (out["llr"] >= out["threshold"])
