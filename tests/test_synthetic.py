"""spkver.data.synthetic (corpus and voice): tiny corpora generated into tmp dirs with fixed seeds."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

import spkver.data.synthetic.corpus as synthetic
from scoring.io import read_trials
from spkver.data.kaldi import DataDir
from spkver.data.synthetic.corpus import make_corpus, make_trials, read_voices, speaker_voice
from spkver.data.synthetic.voice import VoiceParams, sample_speaker, synthesize

SR = 16000
TINY = dict(n_speakers=3, sessions_per_speaker=2, utts_per_session=2, min_seconds=0.6, max_seconds=1.0, seed=7)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same three speakers in both domains (speaker numbers 11-13)."""
    root = tmp_path_factory.mktemp("synthetic")
    wide = make_corpus(root / "wide", speaker_offset=10, domain="wide", **TINY)
    tel = make_corpus(root / "tel", speaker_offset=10, domain="tel", **TINY)
    return root, wide, tel


def _steady(voice: VoiceParams) -> VoiceParams:
    """A voice with little F0 movement, for measurements."""
    return dataclasses.replace(voice, f0_range_st=0.3, declination_st=0.3, jitter=0.002)


def _median_f0(wave: np.ndarray, sr: int) -> float:
    """Median pitch (Hz) of 40 ms frames within 10 dB of the loudest: autocorrelation peak (60-500 Hz) of
    the order-16 LPC residual, which removes the formants that fool a plain autocorrelation."""
    n = int(0.04 * sr)
    frames = wave[: len(wave) // n * n].reshape(-1, n).astype(np.float64)
    energy = (frames ** 2).sum(axis=1)
    lo, hi = sr // 500, sr // 60
    f0 = []
    for frame in frames[energy > 0.1 * energy.max()]:
        frame = (frame - frame.mean()) * np.hanning(n)
        r = np.correlate(frame, frame, "full")[n - 1:]
        residual = lfilter(np.concatenate([[1.0], -solve_toeplitz(r[:16], r[1:17])]), 1.0, frame)
        ac = np.correlate(residual, residual, "full")[n - 1:]
        f0.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


def _high_band_fraction(wave: np.ndarray, sr: int, cutoff: float) -> float:
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sr)
    return float(power[freqs > cutoff].sum() / power.sum())


# ------------------------------------------------------------------------------------------ voice
def test_synthesize_is_deterministic_and_sane():
    voice = sample_speaker(np.random.default_rng(0))
    a = synthesize(voice, 0.75, np.random.default_rng(1), SR)
    b = synthesize(voice, 0.75, np.random.default_rng(1), SR)
    c = synthesize(voice, 0.75, np.random.default_rng(2), SR)
    assert a.dtype == np.float32 and a.shape == (12000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isfinite(a).all() and 0.01 < np.abs(a).max() < 1.0


def test_f0_follows_the_voice_and_speakers_differ():
    rng = np.random.default_rng(3)
    low = _steady(sample_speaker(rng, sex="m", age_group="adult"))
    high = _steady(sample_speaker(rng, sex="f", age_group="child"))
    f_low = _median_f0(synthesize(low, 1.5, np.random.default_rng(4), SR), SR)
    f_high = _median_f0(synthesize(high, 1.5, np.random.default_rng(4), SR), SR)
    assert f_low == pytest.approx(low.f0_hz, rel=0.1)
    assert f_high == pytest.approx(high.f0_hz, rel=0.1)
    assert f_high > 1.5 * f_low


def test_vocal_tract_length_scales_formants():
    base = _steady(sample_speaker(np.random.default_rng(5), sex="m", age_group="adult"))
    short = dataclasses.replace(base, vtl_factor=base.vtl_factor * 1.3)

    def centroid(voice):  # spectral centroid of the 200-5000 Hz band, same phones and source
        wave = synthesize(voice, 1.5, np.random.default_rng(6), SR).astype(np.float64)
        power = np.abs(np.fft.rfft(wave)) ** 2
        f = np.fft.rfftfreq(len(wave), 1 / SR)
        band = (f > 200) & (f < 5000)
        return float((f[band] * power[band]).sum() / power[band].sum())

    assert centroid(short) > 1.1 * centroid(base)


def test_sampled_speakers_differ_and_voice_params_validate():
    voices = [speaker_voice(0, k) for k in range(1, 6)]
    assert len({v.f0_hz for v in voices}) == 5 and len({v.vowel_offsets for v in voices}) == 5
    assert speaker_voice(0, 1) == speaker_voice(0, 1) != speaker_voice(1, 1)
    assert VoiceParams.from_dict(voices[0].to_dict()) == voices[0]
    with pytest.raises(ValueError, match="f0_hz"):
        dataclasses.replace(voices[0], f0_hz=-1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize(voices[0], 1.0, np.random.default_rng(0), 4000)
    with pytest.raises(ValueError, match="n_seconds"):
        synthesize(voices[0], 0.01, np.random.default_rng(0), SR)


# ------------------------------------------------------------------------------------------ corpus
def test_kaldi_dir_is_valid_and_consistent(corpora):
    root, wide, _ = corpora
    d = DataDir.load(root / "wide")
    assert d.speakers == ["spk0011", "spk0012", "spk0013"]
    assert d.utts[:4] == ["spk0011-s1-u01", "spk0011-s1-u02", "spk0011-s2-u01", "spk0011-s2-u02"]
    assert len(d) == 3 * 2 * 2 and d.utts == sorted(d.utts)
    assert set(d.spk2gender) == set(d.speakers)
    for utt in d.utts:
        assert d.wav_scp[utt] == f"wav/{utt}.wav" and d.utt2spk[utt] == utt.split("-")[0]
        info = sf.info(str(root / "wide" / d.wav_scp[utt]))
        assert info.samplerate == SR and info.subtype == "PCM_16" and info.channels == 1
        assert d.utt2dur[utt] == pytest.approx(info.frames / SR, abs=1e-5)
        assert TINY["min_seconds"] - 1e-3 <= d.utt2dur[utt] <= TINY["max_seconds"] + 1e-3
    spk2utt = (root / "wide" / "spk2utt").read_text().split("\n")[0].split()
    assert spk2utt == ["spk0011", "spk0011-s1-u01", "spk0011-s1-u02", "spk0011-s2-u01", "spk0011-s2-u02"]


def test_audio_is_finite_unclipped_and_not_silent(corpora):
    _, wide, tel = corpora
    for data in (wide, tel):
        for utt in data.utts:
            wave, sr = data.load_audio(utt)
            assert sr == SR and np.isfinite(wave).all()
            assert np.abs(wave).max() < 1.0 and np.sqrt(np.mean(wave ** 2)) > 1e-3


def test_domains_share_speakers_and_utterances_and_telephone_is_band_limited(corpora):
    root, wide, tel = corpora
    assert read_voices(root / "wide") == read_voices(root / "tel")
    assert read_voices(root / "wide")["spk0012"] == speaker_voice(TINY["seed"], 12)
    assert wide.utts == tel.utts and wide.utt2dur == tel.utt2dur
    wide_hf = [_high_band_fraction(wide.load_audio(u)[0], SR, 3600) for u in wide.utts]
    tel_hf = [_high_band_fraction(tel.load_audio(u)[0], SR, 3600) for u in tel.utts]
    assert max(tel_hf) < 1e-3  # under 0.1 % of the energy above 3.6 kHz
    assert np.mean(wide_hf) > 10 * max(tel_hf)


def test_make_corpus_is_deterministic_and_offsets_give_new_speakers(corpora, tmp_path):
    root, wide, _ = corpora
    again = make_corpus(tmp_path / "again", speaker_offset=10, **TINY)
    for utt in wide.utts:
        assert (tmp_path / "again" / "wav" / f"{utt}.wav").read_bytes() == \
            (root / "wide" / "wav" / f"{utt}.wav").read_bytes()
    assert again.utt2dur == wide.utt2dur
    other = make_corpus(tmp_path / "other", **dict(TINY, n_speakers=2), speaker_offset=13)
    assert other.speakers == ["spk0014", "spk0015"]
    assert not set(other.speakers) & set(wide.speakers)
    assert set(read_voices(tmp_path / "other").values()).isdisjoint(read_voices(root / "wide").values())


def test_workers_give_the_same_files(tmp_path):
    kw = dict(n_speakers=2, sessions_per_speaker=1, utts_per_session=2, min_seconds=0.5, max_seconds=0.6, seed=3)
    one = make_corpus(tmp_path / "one", workers=1, **kw)
    two = make_corpus(tmp_path / "two", workers=2, **kw)
    assert one.utts == two.utts
    for utt in one.utts:
        assert (tmp_path / "one" / one.wav_scp[utt]).read_bytes() == (tmp_path / "two" / two.wav_scp[utt]).read_bytes()


def test_resume_skips_finished_files_and_redoes_missing_or_truncated(tmp_path, monkeypatch):
    kw = dict(n_speakers=2, sessions_per_speaker=1, utts_per_session=2, min_seconds=0.5, max_seconds=0.6, seed=1)
    data = make_corpus(tmp_path, **kw)
    wavs = {u: tmp_path / data.wav_scp[u] for u in data.utts}
    original = {u: p.read_bytes() for u, p in wavs.items()}
    stamps = {u: p.stat().st_mtime_ns for u, p in wavs.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("synthesize called for a finished file")

    with monkeypatch.context() as m:
        m.setattr(synthetic, "synthesize", refuse)
        assert make_corpus(tmp_path, **kw).utts == data.utts
    assert {u: p.stat().st_mtime_ns for u, p in wavs.items()} == stamps

    first, second = data.utts[0], data.utts[1]
    wavs[first].unlink()
    sf.write(wavs[second], np.zeros(100, dtype=np.float32), 16000, subtype="PCM_16")  # an incomplete file
    calls = []
    real = synthetic.synthesize
    monkeypatch.setattr(synthetic, "synthesize", lambda *a, **k: calls.append(1) or real(*a, **k))
    make_corpus(tmp_path, **kw)
    assert len(calls) == 2
    assert all(p.read_bytes() == original[u] for u, p in wavs.items())
    assert not [p for p in (tmp_path / "wav").iterdir() if p.name.startswith(".")]  # no temp files left


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    kw = dict(n_speakers=1, sessions_per_speaker=1, utts_per_session=1, min_seconds=0.5, max_seconds=0.5)
    make_corpus(tmp_path, seed=0, **kw)
    with pytest.raises(ValueError, match=r"synthetic\.json.*seed"):
        make_corpus(tmp_path, seed=1, **kw)


@pytest.mark.parametrize("bad, match", [
    (dict(n_speakers=0), "n_speakers"), (dict(domain="radio"), "domain"),
    (dict(min_seconds=3.0, max_seconds=2.0), "min_seconds"), (dict(sessions_per_speaker=10), "sessions"),
    (dict(speaker_offset=9999), "9999"), (dict(workers=0), "workers"), (dict(sample_rate=4000), "sample_rate"),
])
def test_bad_arguments_are_rejected(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        make_corpus(tmp_path, **{"n_speakers": 1, **bad})


# ------------------------------------------------------------------------------------------ trials
def test_trials_cross_session_with_both_labels(corpora, tmp_path):
    _, wide, _ = corpora
    path = tmp_path / "trials"
    trials = make_trials(wide, None, 30, seed=2, path=path)
    # 3 speakers x (2 sessions x 2 utts): 4 cross-session pairs per speaker
    assert trials.n_target == 3 * 4 and trials.n_nontarget == 30
    for e, t, y in zip(trials.enroll, trials.test, trials.label):
        same_spk = wide.utt2spk[e] == wide.utt2spk[t]
        assert bool(y) == same_spk and e < t
        if y:
            assert e.rsplit("-", 1)[0] != t.rsplit("-", 1)[0]  # different sessions
    assert len(set(zip(trials.enroll, trials.test))) == len(trials)
    back = read_trials(path)
    assert back.enroll.tolist() == trials.enroll.tolist() and back.label.tolist() == trials.label.tolist()
    again = make_trials(wide.path / "utt2spk", None, 30, seed=2)
    assert again.test.tolist() == trials.test.tolist()


def test_trials_options_and_errors(corpora):
    _, wide, _ = corpora
    all_pairs = make_trials(wide.utt2spk, None, 0, cross_session_only=False)
    assert all_pairs.n_target == 3 * 6  # every pair of a speaker's 4 utterances, same session included
    assert make_trials(wide, 5, 7, seed=1).n_target == 5
    with pytest.raises(ValueError, match="only 12 same-speaker pairs"):
        make_trials(wide, 13, 10)
    with pytest.raises(ValueError, match="non-target"):
        make_trials(wide, 1, 10 ** 6)
    with pytest.raises(ValueError, match="'a1' has no session"):
        make_trials({"a1": "a", "b1": "b"}, 0, 1)
    assert make_trials({"a1": "a", "b1": "b"}, 0, 1, cross_session_only=False).n_nontarget == 1
