"""`spkver prepare channel` and `spkver table`: a real run each, and their bad input."""

import numpy as np
import pytest
import soundfile as sf

from scoring.report import evaluate_system, write_json
from spkver.cli import main
from spkver.data.corpora.channel import simulate_channel
from spkver.data.kaldi import DataDir


def _data_dir(tmp_path, n=2):
    rng = np.random.default_rng(0)
    (tmp_path / "src" / "wav").mkdir(parents=True)
    lines, spk = [], []
    for i in range(n):
        sf.write(str(tmp_path / "src" / "wav" / f"u{i}.wav"), 0.1 * rng.standard_normal(16000), 16000)
        lines.append(f"u{i} wav/u{i}.wav\n")
        spk.append(f"u{i} s{i}\n")
    (tmp_path / "src" / "wav.scp").write_text("".join(lines))
    (tmp_path / "src" / "utt2spk").write_text("".join(spk))
    return tmp_path / "src"


def test_channel_keeps_ids_and_removes_out_of_band_energy(tmp_path):
    out = simulate_channel(_data_dir(tmp_path), tmp_path / "tel")
    assert out.utts == ["u0", "u1"]
    reloaded = DataDir.load(tmp_path / "tel")
    wave, sr = reloaded.load_audio("u0")
    assert sr == 16000 and np.isfinite(wave).all()
    spec = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sr)
    assert spec[freqs > 4000].sum() < 0.01 * spec.sum()


def test_channel_rejects_unknown_name_and_missing_dir(tmp_path, capsys):
    with pytest.raises(ValueError, match="valid: telephone"):
        simulate_channel(_data_dir(tmp_path), tmp_path / "x", channel="radio")
    assert main(["prepare", "channel", "--data", str(tmp_path / "src"), "--out", str(tmp_path / "y"),
                 "--channel", "radio"]) == 2
    assert "radio" in capsys.readouterr().err


def test_table_from_eval_json_and_bad_json(tmp_path, capsys):
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(50), np.zeros(200)].astype(int)
    rows = [evaluate_system(n, rng.normal(size=250) + 2 * labels, labels, [0.01])
            for n in ("baseline", "proposed", "fusion")]
    good = tmp_path / "r.json"
    write_json(good, rows)
    assert main(["table", "--entry", "dev", "plda", str(good), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert cells == ["dev", "plda"] + [f"{r['eer']:.2f} / {r['min_dcf']['0.01']:.4f}" for r in rows]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["table", "--entry", "dev", "plda", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
