"""Augmentation without downloads: coloured noise, babble of other training speakers, simulated rooms
(spkver.data.rir), SpecAugment, and the no-clipping guarantee."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from spkver.config import ConfigError, DataConfig, load_config
from spkver.data.augment import PEAK_16BIT, Augmenter, colored_noise
from spkver.data.babble import BabblePool
from spkver.data.kaldi import DataDir
from spkver.data.rir import (SPEED_OF_SOUND, check_settings, image_source_rir, rir_folder, schroeder_rt60,
                             simulate_rirs)
from spkver.data.specaug import SpecAugment

SR = 16000
TONES = {f"spk{k}": 300.0 + 125.0 * k for k in range(8)}  # one pure tone per speaker


def _snr(clean, mixed):
    noise = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


def _speech(seconds=1.0, amplitude=0.1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) +
            0.01 * amplitude * rng.standard_normal(len(t))).astype(np.float32)


def tone_speakers(root, speakers=TONES, utts=2, seconds=1.0):
    """Data dir whose speaker ``s`` says only a pure tone at ``speakers[s]`` Hz (distinct phases)."""
    (root / "wav").mkdir(parents=True)
    wav, utt2spk = {}, {}
    t = np.arange(int(seconds * SR)) / SR
    for spk, freq in speakers.items():
        for u in range(utts):
            utt = f"{spk}-u{u}"
            sf.write(root / "wav" / f"{utt}.wav", (0.5 * np.sin(2 * np.pi * freq * t + u)).astype(np.float32), SR)
            wav[utt], utt2spk[utt] = f"wav/{utt}.wav", spk
    return DataDir.load(DataDir(wav_scp=wav, utt2spk=utt2spk).save(root / "data"), audio_root=root)


def _band_energy(x, freq, width=20.0):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[np.abs(f - freq) <= width].sum() / spec.sum())


# ------------------------------------------------------------------------------------------ coloured noise
@pytest.mark.parametrize("snr", [0.0, 7.5, 15.0])
def test_colored_noise_reaches_the_requested_snr(snr):
    aug = Augmenter(kinds=["colored"], seed=1)
    clean = _speech()
    out = aug.additive(clean, "colored", snr_db=snr, seed=3)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert abs(_snr(clean, out) - snr) < 0.1


def test_colored_noise_draws_its_snr_in_range_and_is_seeded():
    aug = Augmenter(kinds=["colored"], colored_snr=(2.0, 12.0), seed=1)
    clean = _speech()
    measured = [_snr(clean, aug(clean, seed=k)) for k in range(6)]
    assert all(2.0 - 0.1 <= s <= 12.0 + 0.1 for s in measured) and np.ptp(measured) > 1.0
    np.testing.assert_array_equal(aug(clean, seed=4), Augmenter(kinds=["colored"], colored_snr=(2.0, 12.0))(
        clean, seed=4))
    assert not np.array_equal(aug(clean, seed=4), aug(clean, seed=5))


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_colored_noise_has_the_slope_and_band_asked_for(beta):
    x = colored_noise(2 ** 16, SR, beta, 200.0, 4000.0, np.random.default_rng(0))
    assert abs(np.mean(x.astype(np.float64) ** 2) - 1.0) < 1e-4
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    band = (f >= 200) & (f <= 4000)
    assert spec[~band].sum() < 1e-9 * spec.sum()  # band-limited
    slope = np.polyfit(np.log10(f[band]), np.log10(spec[band]), 1)[0]
    assert abs(slope + beta) < 0.1  # power ~ 1 / f^beta


# ---------------------------------------------------------------------------------------------- babble
def test_training_set_babble_never_holds_the_chunks_speaker(tmp_path):
    data = tone_speakers(tmp_path)
    pool = BabblePool.build(data, SR, utts_per_speaker=2, seconds=0.5)
    aug = Augmenter(babble_pool=pool, seed=0)
    assert aug.kinds == ["babble"]
    clean = np.zeros(SR, np.float32)
    clean[::97] = 0.05  # a click train: power everywhere, no tone
    for spk, freq in TONES.items():
        for seed in range(4):
            snr = 13.0 + seed
            out = aug.additive(clean, "babble", snr_db=snr, seed=seed, speaker=spk)
            assert abs(_snr(clean, out) - snr) < 0.1
            babble = out - clean
            present = [s for s, f in TONES.items() if _band_energy(babble, f) > 0.02]
            assert spk not in present and 3 <= len(present) <= 7, (spk, present)
    drawn = [_snr(clean, aug(clean, seed=k, speaker="spk0")) for k in range(5)]
    assert all(13.0 - 0.1 <= s <= 20.0 + 0.1 for s in drawn)


def test_babble_pool_is_cached_and_pickles_by_path(tmp_path):
    data = tone_speakers(tmp_path)
    pool = BabblePool.build(data, SR, utts_per_speaker=1, seconds=0.25, folder=tmp_path / "pool")
    assert len(pool) == len(TONES) and pool.audio.dtype == np.int16 and len(pool.audio) == len(TONES) * SR // 4
    again = BabblePool.build(data, SR, utts_per_speaker=1, seconds=0.25, folder=tmp_path / "pool")
    assert again.folder == pool.folder and len(list((tmp_path / "pool").iterdir())) == 1
    blob = pickle.dumps(pool)
    assert len(blob) < 10_000  # the audio stays in the file
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.excerpt(3), pool.excerpt(3))
    other = BabblePool.build(data, SR, utts_per_speaker=2, seconds=0.25, folder=tmp_path / "pool")
    assert other.folder != pool.folder


def test_babble_pool_errors_name_the_setting(tmp_path):
    data = tone_speakers(tmp_path, speakers={f"spk{k}": 300.0 + 100 * k for k in range(4)})
    small = BabblePool.build(data, SR, seconds=0.2)
    with pytest.raises(ValueError, match=r"augment.babble_pool.*at least 4 speakers other.*it has 4"):
        Augmenter(babble_pool=small)
    with pytest.raises(ValueError, match="babble_pool.*at least 4"):
        Augmenter(babble_pool=BabblePool(np.zeros(0, np.int16), [], [], [], SR))
    with pytest.raises(ValueError, match="babble_pool.utts_per_speaker"):
        BabblePool.build(data, SR, utts_per_speaker=0)
    with pytest.raises(ValueError, match="babble_pool settings need the training data"):
        Augmenter(babble_pool=True)
    big = tone_speakers(tmp_path / "big")
    aug = Augmenter(babble_pool=BabblePool.build(big, SR, seconds=0.2))
    with pytest.raises(ValueError, match="needs the chunk's speaker"):
        aug(_speech(), kind="babble", seed=0)
    musan = tmp_path / "musan" / "speech"
    musan.mkdir(parents=True)
    sf.write(musan / "s.wav", _speech(0.5), SR)
    with pytest.raises(ValueError, match="either a MUSAN speech folder.*or babble_pool"):
        Augmenter(musan=tmp_path / "musan", babble_pool=BabblePool.build(big, SR, seconds=0.2))


# ------------------------------------------------------------------------------------------ simulated RIRs
@pytest.mark.parametrize("dims,rt60", [((6.0, 5.0, 3.0), 0.6), ((4.0, 3.5, 2.7), 0.3)])
def test_image_source_rir_decays_at_the_target_rt60(dims, rt60):
    source, mic = np.array([1.2, 1.5, 1.4]), np.array([3.1, 2.2, 1.6])
    h = image_source_rir(dims, source, mic, rt60, SR)
    assert len(h) >= rt60 * SR
    for decay in ((-5.0, -25.0), (-5.0, -35.0)):  # T20, T30
        assert abs(schroeder_rt60(h, SR, decay) / rt60 - 1) < 0.3
    distance = np.linalg.norm(source - mic)
    first = int(np.nonzero(np.abs(h) > 0.1 * np.abs(h).max())[0][0])
    assert abs(first - distance / SPEED_OF_SOUND * SR) <= 1.0  # the direct path is the first significant tap
    assert abs(h.max() * 4 * np.pi * distance - 1) < 0.3  # 1 / r attenuation (high-passed, fractional delay)


def test_simulated_rirs_are_cached_and_reproducible(tmp_path, monkeypatch):
    settings = dict(count=3, sample_rate=8000, seed=5, rt60=(0.2, 0.3), room=((3, 4), (3, 4), (2.5, 3)))
    files = simulate_rirs(tmp_path / "a", **settings)
    assert [f.name for f in files] == ["rir_00000.wav", "rir_00001.wav", "rir_00002.wav"]
    twin = simulate_rirs(tmp_path / "b", **settings)
    # same seed, identical responses (the bytes of float WAV files differ: libsndfile's PEAK chunk is timestamped)
    assert all(np.array_equal(sf.read(p)[0], sf.read(q)[0]) for p, q in zip(files, twin))
    assert (tmp_path / "a" / "manifest.json").read_text() == (tmp_path / "b" / "manifest.json").read_text()
    import spkver.data.rir as rir

    monkeypatch.setattr(rir, "image_source_rir", lambda *a, **k: pytest.fail("simulated again"))
    assert simulate_rirs(tmp_path / "a", **settings) == files  # reused
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other settings"):
        simulate_rirs(tmp_path / "a", **{**settings, "seed": 6})
    assert rir_folder(tmp_path, **settings) != rir_folder(tmp_path, **{**settings, "seed": 6})
    other = simulate_rirs(tmp_path / "c", **{**settings, "seed": 6})
    assert not np.array_equal(sf.read(files[0])[0], sf.read(other[0])[0])
    for path in files:
        taps, sr = sf.read(path)
        assert sr == 8000 and np.abs(taps).max() > 0


@pytest.mark.parametrize("bad,match", [
    (dict(rt60=(0.2, 4.0)), "rt60"), (dict(rt60=(0.0, 0.5)), "rt60"), (dict(rt60=(0.8, 0.2)), "rt60"),
    (dict(room=((3, 10), (-1, 4), (2.5, 4))), r"room\[1\]"), (dict(room=((3, 10), (3, 10), (2.5, 400))), r"room\[2\]"),
    (dict(room=((3, 10), (3, 10))), "three"), (dict(count=0), "count"),
    (dict(room=((0.5, 1), (3, 4), (3, 4))), "room"),
])
def test_rir_settings_out_of_range_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_settings(**bad)


def test_augmenter_reverberates_with_simulated_rooms(tmp_path):
    settings = {"count": 2, "rt60": [0.2, 0.3], "room": [[3, 4], [3, 4], [2.5, 3]]}
    aug = Augmenter(simulate_rir=settings, rir_cache=tmp_path, sample_rate=SR, seed=0)
    assert aug.kinds == ["reverb"] and len(aug.files["reverb"]) == 2
    assert aug.files["reverb"][0].parent.parent == tmp_path
    clean = _speech()
    out = aug(clean, seed=1)
    assert out.shape == clean.shape and not np.allclose(out, clean)
    np.testing.assert_allclose(np.mean(out.astype(np.float64) ** 2), np.mean(clean.astype(np.float64) ** 2),
                               rtol=1e-3)
    np.testing.assert_array_equal(out, Augmenter(simulate_rir=settings, rir_cache=tmp_path, seed=9)(clean, seed=1))
    with pytest.raises(ValueError, match="simulate_rir needs rir_cache"):
        Augmenter(simulate_rir=True)
    with pytest.raises(ValueError, match="augment.simulate_rir: rt60"):
        Augmenter(simulate_rir={"rt60": [0.2, 9.0]}, rir_cache=tmp_path)


# --------------------------------------------------------------------------------------------- no clipping
def test_augmented_output_never_clips_at_16_bits(tmp_path):
    data = tone_speakers(tmp_path)
    aug = Augmenter(babble_pool=BabblePool.build(data, SR, seconds=0.5), kinds=["babble", "colored", "reverb"],
                    simulate_rir={"count": 2, "rt60": [0.2, 0.3], "room": [[3, 4], [3, 4], [2.5, 3]]},
                    rir_cache=tmp_path / "rirs", colored_snr=(0.0, 0.0), babble_snr=(13.0, 13.0))
    loud = _speech(amplitude=0.66)  # peak 0.99
    for kind in ("babble", "colored", "reverb"):
        out = aug(loud, kind=kind, seed=2, speaker="spk1")
        assert np.abs(out).max() <= PEAK_16BIT
        sf.write(tmp_path / f"{kind}.wav", out, SR, subtype="PCM_16")
        back, _ = sf.read(tmp_path / f"{kind}.wav", dtype="float32")
        assert np.abs(back - out).max() <= 1 / 32768  # quantised, not clipped
    quiet = _speech(amplitude=0.05)
    inner_seed = int(np.random.default_rng(2).integers(2**63))  # the call's first draw seeds the kind's draws
    np.testing.assert_array_equal(aug(quiet, kind="colored", seed=2), aug.additive(quiet, "colored", seed=inner_seed))


# ------------------------------------------------------------------------------------------- SpecAugment
def test_spec_augment_masks_bands_and_frames_reproducibly():
    feats = np.random.default_rng(0).standard_normal((200, 30)).astype(np.float32) + 5.0  # no zeros
    spec = SpecAugment(time_masks=2, time_width=(5, 5), freq_masks=1, freq_width=(3, 3))
    out = spec(feats, np.random.default_rng(1))
    assert out.shape == feats.shape and not np.shares_memory(out, feats)
    rows, cols = np.all(out == 0, axis=1), np.all(out == 0, axis=0)
    assert 5 <= rows.sum() <= 10 and cols.sum() == 3
    kept = out != 0
    np.testing.assert_array_equal(out[kept], feats[kept])
    np.testing.assert_array_equal(out, spec(feats, np.random.default_rng(1)))
    assert not np.array_equal(out, spec(feats, np.random.default_rng(2)))
    np.testing.assert_array_equal(SpecAugment(0, (0, 0), 0, (0, 0))(feats, np.random.default_rng(0)), feats)
    assert (SpecAugment(1, (50, 50), 1, (40, 40))(feats[:20], np.random.default_rng(0)) == 0).all()  # capped
    with pytest.raises(ValueError, match="spec_augment.freq_width"):
        SpecAugment(freq_width=(4, 2))
    with pytest.raises(ValueError, match="spec_augment.time_masks"):
        SpecAugment(time_masks=-1)


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("data,match", [
    ({"speed_perturb": [0.0]}, "speed_perturb"), ({"speed_perturb": [-1.1]}, "speed_perturb"),
    ({"speed_perturb": [0.9, 0.9]}, "speed_perturb"), ({"speed_perturb": [1.0]}, "speed_perturb"),
    ({"spec_augment": {"time_masks": 2, "mask_value": 1}}, r"unknown spec_augment key\(s\) \['mask_value'\]"),
    ({"spec_augment": {"freq_width": [8, 2]}}, "spec_augment.freq_width"),
    ({"augment": {"simulate_rir": {"rt60": [0.2, 5.0]}}}, "augment.simulate_rir: rt60"),
    ({"augment": {"simulate_rir": {"count": 0}}}, "augment.simulate_rir: count"),
    ({"augment": {"simulate_rir": {"rooms": []}}}, r"unknown augment.simulate_rir key\(s\) \['rooms'\]"),
    ({"augment": {"babble_pool": {"per_speaker": 2}}}, r"unknown augment.babble_pool key\(s\) \['per_speaker'\]"),
    ({"augment": {"babble_pool": "yes"}}, "augment.babble_pool must be"),
    ({"augment": {"colored_snr": [0, 5], "pink": True}}, r"unknown augment key\(s\) \['pink'\]"),
])
def test_data_config_names_the_bad_setting(tmp_path, data, match):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path)
    assert "section 'data'" in str(err.value)


def test_shipped_augmented_configurations():
    conf = Path(__file__).resolve().parents[1] / "recipes" / "so762" / "conf"
    base, aug = load_config(conf / "baseline.yaml"), load_config(conf / "augment_baseline.yaml")
    assert aug.model == base.model and aug.optim == base.optim and aug.features == base.features
    assert aug.data.speed_perturb == [0.9, 1.1] and aug.data.on_the_fly and aug.data.spec_augment
    assert sorted(aug.data.augment["kinds"]) == ["babble", "colored", "reverb"]
    proposed, aug_proposed = load_config(conf / "proposed.yaml"), load_config(conf / "augment_proposed.yaml")
    assert aug_proposed.model == proposed.model and aug_proposed.kl_weight == proposed.kl_weight
    assert aug_proposed.data == aug.data
    debug = load_config(conf / "debug_augment_proposed.yaml")
    assert debug.model == load_config(conf / "debug_proposed.yaml").model
    assert debug.data == load_config(conf / "debug_augment_baseline.yaml").data
    assert DataConfig(augment={"kinds": ["colored"]}).on_the_fly

