"""spkver.data.augment on a tiny MUSAN-like tree and synthetic RIRs written into tmp_path."""

import numpy as np
import pytest
import soundfile as sf
import torch

from spkver.data.augment import Augmenter, add_at_snr, reverberate, speed_perturb, telephone_channel

SR = 16000


def _snr(clean, mixed):
    noise = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


def _speech(seed=0, seconds=1.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    musan = tmp_path / "musan"
    for sub, n, seconds in (("noise/free-sound", 2, 0.4), ("music/fma", 1, 2.0), ("speech/librivox", 4, 1.5)):
        (musan / sub).mkdir(parents=True)
        for i in range(n):
            sf.write(musan / sub / f"{i}.wav", (0.3 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)
    rir = tmp_path / "rir" / "smallroom"
    rir.mkdir(parents=True)
    taps = np.zeros(800, np.float32)
    taps[10] = 1.0
    taps[11:] = 0.3 * rng.standard_normal(789) * np.exp(-np.arange(789) / 100)
    sf.write(rir / "r1.wav", taps, 8000)  # resampled to 16 kHz on use
    return musan, tmp_path / "rir"


@pytest.mark.parametrize("kind", ["noise", "music", "babble"])
@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
def test_requested_snr_is_achieved(folders, kind, snr):
    aug = Augmenter(musan=folders[0], seed=1)
    clean = _speech()
    out = aug.additive(clean, kind, snr_db=snr)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert abs(_snr(clean, out) - snr) < 0.5


@pytest.mark.parametrize("kind", ["noise", "music", "babble"])
def test_drawn_snr_lies_in_the_configured_range(folders, kind):
    aug = Augmenter(musan=folders[0], seed=2)
    lo, hi = aug.snr[kind]
    clean = _speech()
    measured = [_snr(clean, aug(clean, kind=kind)) for _ in range(5)]
    assert all(lo - 0.5 <= s <= hi + 0.5 for s in measured)
    assert np.ptp(measured) > 0.1  # the SNR is drawn, not fixed


def test_add_at_snr_by_hand():
    speech = np.array([1.0, -1.0, 1.0, -1.0], np.float32)   # power 1
    noise = np.array([2.0, 2.0, -2.0, -2.0], np.float32)    # power 4
    np.testing.assert_allclose(add_at_snr(speech, noise, 20.0), speech + 0.05 * noise, rtol=1e-6)
    np.testing.assert_array_equal(add_at_snr(speech, np.zeros(4, np.float32), 5.0), speech)


def test_seeded_and_reproducible(folders):
    musan, rir = folders
    clean = _speech()
    a, b = Augmenter(musan, rir, seed=7), Augmenter(musan, rir, seed=7)
    for _ in range(4):
        np.testing.assert_array_equal(a(clean), b(clean))
    np.testing.assert_array_equal(a(clean, seed=3), b(clean, seed=3))
    assert not np.array_equal(a(clean, kind="babble", seed=3), a(clean, kind="babble", seed=4))
    assert sorted(a.kinds) == ["babble", "music", "noise", "reverb"]
    out = a(torch.from_numpy(clean), kind="noise", seed=5)
    assert isinstance(out, torch.Tensor)  # a tensor in, a tensor out, with the numpy path's values
    np.testing.assert_array_equal(out.numpy(), a(clean, kind="noise", seed=5))


def test_reverberate_by_hand():
    wave = _speech(seconds=0.1)
    delta = np.zeros(50, np.float32)
    delta[7] = 0.5  # a pure delay: aligned on the direct path, rescaled to the input power
    np.testing.assert_allclose(reverberate(wave, delta), wave, atol=1e-5)
    echo = np.zeros(50, np.float32)
    echo[[0, 40]] = [1.0, 0.5]
    out = reverberate(wave, echo)
    expected = wave.astype(np.float64).copy()
    expected[40:] += 0.5 * wave[:-40]
    expected *= np.sqrt(np.mean(wave.astype(np.float64) ** 2) / np.mean(expected ** 2))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_reverb_kind_keeps_length_and_power(folders):
    aug = Augmenter(rir=folders[1], seed=0)
    clean = _speech()
    out = aug(clean)
    assert aug.kinds == ["reverb"] and out.shape == clean.shape
    assert abs(np.mean(out.astype(np.float64) ** 2) / np.mean(clean.astype(np.float64) ** 2) - 1) < 1e-3
    assert not np.allclose(out, clean, atol=1e-3)


def test_telephone_channel_band_and_rate():
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    out, sr = telephone_channel(noise, SR)
    assert sr == SR and len(out) == SR
    power = np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / sr)
    outside = power[(freqs < 300) | (freqs > 3400)].sum() / power.sum()
    assert outside < 0.01
    narrow, sr8 = telephone_channel(noise, SR, keep_8k=True)
    assert sr8 == 8000 and len(narrow) == 8000
    np.testing.assert_array_equal(telephone_channel(noise, SR)[0], out)  # deterministic
    odd = noise[:SR - 1]
    assert Augmenter(kinds=["telephone"], sample_rate=SR)(odd).shape == odd.shape


def test_mu_law_quantises_to_256_levels():
    ramp = np.linspace(-1, 1, 20000, dtype=np.float32)
    out, _ = telephone_channel(np.tile(ramp, 2), 8000, band=(1, 3999))
    assert len(np.unique(out)) <= 256


def test_speed_perturb_lengths():
    wave = _speech()
    assert abs(len(speed_perturb(wave, SR, 1.1)) - SR / 1.1) <= 1
    assert abs(len(speed_perturb(wave, SR, 0.9)) - SR / 0.9) <= 1
    np.testing.assert_array_equal(speed_perturb(wave, SR, 1.0), wave)


def test_errors(folders, tmp_path):
    musan, _ = folders
    with pytest.raises(FileNotFoundError, match="no such directory"):
        Augmenter(musan=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="needs a RIR folder"):
        Augmenter(musan=musan, kinds=["reverb"])
    with pytest.raises(ValueError, match="unknown augmentation 'chorus'"):
        Augmenter(musan=musan, kinds=["chorus"])
    with pytest.raises(ValueError, match="no augmentation available"):
        Augmenter()
    with pytest.raises(ValueError, match="1-D"):
        Augmenter(musan=musan)(np.zeros((2, 10), np.float32))
