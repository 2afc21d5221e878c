"""`spkver prepare channel` with the per-utterance degradations (noise, reverb, short, mixed): measured SNR and
lengths, reproducibility, ids kept, settings checked."""

import json

import numpy as np
import pytest
import soundfile as sf

from spkver.cli import main
from spkver.data.corpora.channel import simulate_channel
from spkver.data.degrade import DegradeSettings, Degrader, utterance_rng
from spkver.data.kaldi import DataDir


def _speechlike(rng, seconds, sr=16000):
    """A harmonic tone with a slow amplitude envelope: non-stationary, most energy below 1 kHz."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 220)
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _data_dir(tmp_path, seconds=(3.0, 1.5, 4.0, 2.5, 3.5, 1.0)):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "wav").mkdir(parents=True)
    scp, spk = [], []
    for i, s in enumerate(seconds):
        sf.write(str(src / "wav" / f"u{i}.wav"), _speechlike(rng, s), 16000, subtype="PCM_16")
        scp.append(f"s{i % 2}-u{i} wav/u{i}.wav\n")
        spk.append(f"s{i % 2}-u{i} s{i % 2}\n")
    (src / "wav.scp").write_text("".join(sorted(scp)))
    (src / "utt2spk").write_text("".join(sorted(spk)))
    return src


def _snr(clean, noisy):
    """SNR (dB) of ``noisy`` against ``clean``, allowing a common gain (the peak limit scales both)."""
    clean, noisy = clean.astype(np.float64), noisy.astype(np.float64)
    gain = np.dot(noisy, clean) / np.dot(clean, clean)
    return 10 * np.log10(np.mean((gain * clean) ** 2) / np.mean((noisy - gain * clean) ** 2))


def test_noise_snr_lies_in_the_range_and_is_the_drawn_one(tmp_path):
    src = _data_dir(tmp_path)
    out = simulate_channel(src, tmp_path / "noise", channel="noise", snr=(5.0, 10.0), seed=3)
    plans = dict(line.split(" ", 1) for line in (tmp_path / "noise" / "utt2degradation").read_text().splitlines())
    original = DataDir.load(src)
    colours = set()
    for utt in out.utts:
        clean, _ = original.load_audio(utt)
        noisy, sr = out.load_audio(utt)
        assert sr == 16000 and len(noisy) == len(clean)
        measured = _snr(clean, noisy)
        assert 5.0 - 0.2 <= measured <= 10.0 + 0.2, (utt, measured)
        fields = dict(f.split("=") for f in plans[utt].split()[1:])
        assert plans[utt].startswith("noise ") and abs(measured - float(fields["snr_db"])) < 0.2
        colours.add(fields["colour"])
    assert colours <= {"white", "pink", "brown"} and len(colours) >= 2


def test_short_excerpts_and_ids_kept(tmp_path):
    src = _data_dir(tmp_path)
    out = simulate_channel(src, tmp_path / "short", channel="short", max_seconds=2.0)
    original = DataDir.load(src)
    assert out.utts == original.utts and out.utt2spk == original.utt2spk
    for utt in out.utts:
        wave, sr = out.load_audio(utt)
        full, _ = original.load_audio(utt)
        assert len(wave) == min(len(full), 2 * sr)
        assert out.utt2dur[utt] == pytest.approx(min(len(full), 2 * sr) / sr, abs=1e-3)
        start = next(i for i in range(len(full) - len(wave) + 1)  # an excerpt of the original (16-bit both)
                     if abs(full[i] - wave[0]) < 1e-4 and np.allclose(full[i:i + len(wave)], wave, atol=1e-4))
        assert 0 <= start <= len(full) - len(wave)


def test_mixed_is_reproducible_and_draws_each_kind(tmp_path):
    src = _data_dir(tmp_path, seconds=(1.0,) * 12)
    a = simulate_channel(src, tmp_path / "a", channel="mixed", seed=5, rir_count=2, rir_cache=tmp_path / "rirs")
    b = simulate_channel(src, tmp_path / "b", channel="mixed", seed=5, rir_count=2, rir_cache=tmp_path / "rirs")
    for utt in a.utts:
        assert (tmp_path / "a" / a.wav_scp[utt]).read_bytes() == (tmp_path / "b" / b.wav_scp[utt]).read_bytes()
    table = (tmp_path / "a" / "utt2degradation").read_text()
    assert table == (tmp_path / "b" / "utt2degradation").read_text()
    kinds = {line.split()[1] for line in table.splitlines()}
    assert kinds == {"noise", "reverb", "short"}
    assert len(list((tmp_path / "rirs").glob("sim-*/rir_*.wav"))) == 2  # simulated once, shared
    assert json.loads((tmp_path / "a" / "channel.json").read_text())["seed"] == 5
    # resumed: a deleted file is rewritten identically, the others are kept
    victim = tmp_path / "a" / a.wav_scp[a.utts[0]]
    before = victim.read_bytes()
    victim.unlink()
    simulate_channel(src, tmp_path / "a", channel="mixed", seed=5, rir_count=2, rir_cache=tmp_path / "rirs")
    assert victim.read_bytes() == before
    # another seed draws otherwise; the plan depends on the id only, not on the order of utterances
    other = Degrader(DegradeSettings("mixed", seed=6))
    same = Degrader(DegradeSettings("mixed", seed=5))
    assert [other.plan(u) for u in a.utts] != [same.plan(u) for u in a.utts]
    assert [same.plan(u) for u in reversed(a.utts)][::-1] == [same.plan(u) for u in a.utts]
    assert utterance_rng(7, "x").random() == utterance_rng(7, "x").random() != utterance_rng(7, "y").random()


def test_reverb_keeps_length_and_power(tmp_path):
    src = _data_dir(tmp_path, seconds=(1.5, 2.0))
    out = simulate_channel(src, tmp_path / "rev", channel="reverb", rir_count=1)
    original = DataDir.load(src)
    assert (tmp_path / "rev" / "rirs").is_dir()
    for utt in out.utts:
        wet, _ = out.load_audio(utt)
        dry, _ = original.load_audio(utt)
        assert len(wet) == len(dry) and not np.allclose(wet, dry, atol=1e-3)
        assert np.mean(wet ** 2) == pytest.approx(np.mean(dry ** 2), rel=0.05)


def test_bad_settings_are_rejected_naming_the_option(tmp_path, capsys):
    src = _data_dir(tmp_path, seconds=(1.0,))
    with pytest.raises(ValueError, match="snr must satisfy"):
        simulate_channel(src, tmp_path / "x", channel="noise", snr=(10.0, 5.0))
    with pytest.raises(ValueError, match="max_seconds does not apply to the noise channel"):
        simulate_channel(src, tmp_path / "x", channel="noise", max_seconds=1.0)
    with pytest.raises(ValueError, match="valid: telephone, telephone8k, noise, reverb, short, mixed"):
        simulate_channel(src, tmp_path / "x", channel="radio")
    cases = [(["--channel", "noise", "--snr", "9", "3"], "--snr must satisfy"),
             (["--channel", "short", "--max-seconds", "0"], "--max-seconds must be a positive number"),
             (["--channel", "telephone", "--seed", "1"], "--seed does not apply to the telephone channel"),
             (["--channel", "short", "--snr", "0", "5"], "--snr does not apply to the short channel")]
    for extra, message in cases:
        assert main(["prepare", "channel", "--data", str(src), "--out", str(tmp_path / "y"), *extra]) == 2
        assert message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit):  # argparse's own check
        main(["prepare", "channel", "--data", str(src), "--out", str(tmp_path / "y"), "--channel", "noise",
              "--seed", "-1"])
    assert "--seed: must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    # an output folder made with other settings is refused
    assert main(["prepare", "channel", "--data", str(src), "--out", str(tmp_path / "z"), "--channel", "short"]) == 0
    assert main(["prepare", "channel", "--data", str(src), "--out", str(tmp_path / "z"), "--channel", "short",
                 "--max-seconds", "1"]) == 2
    assert "made with other channel settings" in capsys.readouterr().err
