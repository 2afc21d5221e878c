"""spkver.audio: formats, channels, resampling, wav.scp entries and errors, on audio generated in tmp_path."""

import numpy as np
import pytest
import soundfile as sf

from spkver.audio import AudioError, cut_segment, load_entry, read_audio, resample, write_audio


def _tone(freq, sr, seconds=0.5, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_freq(wave, sr):
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("suffix,fmt,subtype,tol", [
    (".wav", "WAV", "PCM_16", 1 / 32768),
    (".flac", "FLAC", "PCM_16", 1 / 32768),
    (".sph", "NIST", "PCM_16", 1 / 32768),
    (".sph", "NIST", "ULAW", 0.02),
])
def test_lossless_formats_round_trip(tmp_path, suffix, fmt, subtype, tol):
    wave = _tone(440, 8000)
    path = tmp_path / f"a{suffix}"
    sf.write(path, wave, 8000, format=fmt, subtype=subtype)
    out, sr = read_audio(path)
    assert sr == 8000 and out.dtype == np.float32 and out.shape == wave.shape
    assert np.max(np.abs(out - wave)) <= tol


def test_ogg_opus_is_read(tmp_path):
    wave = _tone(500, 16000, seconds=1.0)
    path = tmp_path / "a.opus"
    sf.write(path, wave, 16000, format="OGG", subtype="OPUS")
    out, sr = read_audio(path)
    assert sr == 16000 and abs(len(out) - len(wave)) < 1000
    assert abs(_dominant_freq(out, sr) - 500) < 5


def test_channel_none_averages_and_int_picks(tmp_path):
    left, right = _tone(300, 8000), _tone(700, 8000, amp=0.25)
    path = tmp_path / "stereo.sph"
    sf.write(path, np.stack([left, right], axis=1), 8000, format="NIST", subtype="PCM_16")
    mono, _ = read_audio(path)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=2 / 32768)
    picked, _ = read_audio(path, channel=1)
    np.testing.assert_allclose(picked, right, atol=1 / 32768)
    with pytest.raises(AudioError, match="channel 2 requested but the audio has 2"):
        read_audio(path, channel=2, utt="u1")


def test_resample_keeps_frequency_and_length(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440, 8000, seconds=1.0), 8000)
    out, sr = read_audio(path, sample_rate=16000)
    assert sr == 16000 and len(out) == 16000
    assert abs(_dominant_freq(out, sr) - 440) < 2
    same = _tone(440, 16000, seconds=0.01)
    np.testing.assert_array_equal(resample(same, 16000, 16000), same)  # same rate: the samples unchanged


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such audio file"),
    (lambda p: p.write_bytes(b"not audio at all" * 10), "cannot decode"),
    (lambda p: sf.write(p, np.zeros(0, np.float32), 8000), "empty"),
    (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 8000, subtype="FLOAT"), "NaN"),
])
def test_bad_audio_names_utterance_and_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as err:
        read_audio(path, utt="spk1-utt7")
    assert "spk1-utt7" in str(err.value) and "bad.wav" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_min_seconds(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(440, 8000, seconds=0.25), 8000)
    with pytest.raises(AudioError, match="shorter than the required 0.5 s"):
        read_audio(path, min_seconds=0.5, utt="u")
    assert len(read_audio(path, min_seconds=0.2)[0]) == 2000


def test_load_entry_relative_path_and_pipes(tmp_path):
    wave = _tone(440, 8000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.wav", wave, 8000)
    sf.write(tmp_path / "sub" / "b.sph", np.stack([wave, -wave], 1), 8000, format="NIST", subtype="PCM_16")
    rel, _ = load_entry("sub/a.wav", root=tmp_path)
    piped, sr = load_entry("cat sub/a.wav |", root=tmp_path)
    assert sr == 8000
    np.testing.assert_array_equal(rel, piped)
    side_b, _ = load_entry(f"cat {tmp_path / 'sub' / 'b.sph'} |", channel=1)
    np.testing.assert_allclose(side_b, -wave, atol=1 / 32768)


def test_load_entry_errors_name_the_command(tmp_path):
    with pytest.raises(AudioError, match="exit status 3") as err:
        load_entry("echo oops >&2; exit 3 |", utt="u9")
    assert "u9" in str(err.value) and "exit 3" in str(err.value)
    with pytest.raises(AudioError, match="no audio"):
        load_entry("true |", utt="u9")
    with pytest.raises(AudioError, match="no such audio file"):
        load_entry("missing.wav", root=tmp_path, utt="u9")


def test_cut_segment_samples_and_limits():
    wave = np.arange(16000, dtype=np.float32)
    np.testing.assert_array_equal(cut_segment(wave, 8000, 0.5, 1.0), wave[4000:8000])
    np.testing.assert_array_equal(cut_segment(wave, 8000, 1.5, -1), wave[12000:])
    assert len(cut_segment(wave, 8000, 1.5, 2.05)) == 4000  # small overshoot clipped
    with pytest.raises(AudioError, match="beyond the recording"):
        cut_segment(wave, 8000, 1.0, 3.0, utt="seg1")
    with pytest.raises(AudioError, match="invalid segment"):
        cut_segment(wave, 8000, 1.0, 0.5, utt="seg1")


def test_write_audio_is_atomic_and_readable(tmp_path):
    wave = _tone(440, 8000)
    write_audio(tmp_path / "x" / "a.flac", wave, 8000)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["a.flac"]
    np.testing.assert_allclose(read_audio(tmp_path / "x" / "a.flac")[0], wave, atol=1 / 32768)
    with pytest.raises(ValueError, match="unknown audio suffix"):
        write_audio(tmp_path / "a.mp4", wave, 8000)


def test_segment_read_by_offset_equals_slice_of_full_read(tmp_path, monkeypatch):
    """A segment of a long two-channel file is read by seeking: only its frames are requested from soundfile."""
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (8000 * 60, 2)).astype(np.float32)  # one minute at 8 kHz
    path = tmp_path / "long.sph"
    sf.write(path, stereo, 8000, format="NIST", subtype="PCM_16")
    full, _ = read_audio(path, channel=1)
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    part, sr = read_audio(path, channel=1, segment=(30.25, 30.5))
    assert sr == 8000 and requested == [2000]
    np.testing.assert_array_equal(part, full[242000:244000])
    np.testing.assert_array_equal(part, cut_segment(full, 8000, 30.25, 30.5))
    np.testing.assert_array_equal(read_audio(path, channel=1, segment=(59.5, -1))[0], full[476000:])
    with pytest.raises(AudioError, match="beyond the recording"):
        read_audio(path, segment=(59.0, 61.0), utt="seg1")
    piped, _ = load_entry(f"cat {path} |", channel=1, segment=(30.25, 30.5))  # the pipe's output, then cut
    np.testing.assert_array_equal(piped, part)


def test_write_audio_bytes_equal_a_direct_soundfile_write(tmp_path):
    wave = _tone(440, 8000)
    for name, fmt in (("a.wav", "WAV"), ("a.flac", "FLAC"), ("a.sph", "NIST")):
        sf.write(tmp_path / f"direct_{name}", wave, 8000, format=fmt, subtype="PCM_16")
        write_audio(tmp_path / name, wave, 8000)
        assert (tmp_path / name).read_bytes() == (tmp_path / f"direct_{name}").read_bytes()
