"""spkver.data.examples: sampler determinism / resumption / sharding / balance, feature cache, bad audio."""

import dataclasses
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from spkver.audio import AudioError
from spkver.config import DataConfig
from spkver.data.examples import (AudioChunks, CachedChunks, ChunkSampler, FeatureCache, cut, frame_count,
                                 sample_count, training_set, utterance_features)
from spkver.data.kaldi import DataDir
from spkver.features import FeatureConfig, compute_features

FEATS = FeatureConfig(num_mel_bins=20, num_ceps=13, vad=False)



def tone_corpus(root, utts_per_speaker=(2, 3), seconds=0.6, sr=16000, seed=0):
    """Kaldi data dir of noisy tones, one base frequency per speaker, written into ``root``."""
    rng = np.random.default_rng(seed)
    wav, utt2spk = {}, {}
    (root / "wav").mkdir(parents=True)
    for s, count in enumerate(utts_per_speaker):
        for u in range(count):
            n = int(seconds * sr * (1 + 0.5 * u))
            t = np.arange(n) / sr
            x = 0.3 * np.sin(2 * np.pi * (200 + 150 * s) * t) + 0.01 * rng.standard_normal(n)
            utt = f"s{s}-u{u}"
            sf.write(root / "wav" / f"{utt}.wav", x.astype(np.float32), sr)
            wav[utt], utt2spk[utt] = f"wav/{utt}.wav", f"s{s}"
    data = DataDir(wav_scp=wav, utt2spk=utt2spk)
    return DataDir.load(data.save(root / "data"), audio_root=root)


# ----------------------------------------------------------------------------------------------- helpers
def test_cut_slices_or_tiles():
    feats = np.arange(10).reshape(5, 2)
    np.testing.assert_array_equal(cut(feats, 1, 3), feats[1:4])
    np.testing.assert_array_equal(cut(feats, 0, 7)[:, 0], [0, 2, 4, 6, 8, 0, 2])


def test_frame_and_sample_counts_match_the_features():
    for snip in (False, True):
        cfg = FeatureConfig(num_mel_bins=20, num_ceps=13, vad=False, snip_edges=snip)
        for n in (400, 1234, 16000):
            assert frame_count(n, cfg) == len(compute_features(np.zeros(n, np.float32) + 0.1, cfg))
        assert frame_count(sample_count(37, cfg), cfg) == 37


# ----------------------------------------------------------------------------------------------- sampler
def _sampler(**kw):
    args = dict(lengths=[50, 400, 300, 80, 20, 500], labels=[0, 0, 0, 0, 0, 1], batch_size=4,
                examples_per_epoch=4000, min_frames=30, max_frames=60, seed=3)
    args.update(kw)
    return ChunkSampler(**args)


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = _sampler(), _sampler()
    a.set_epoch(2)
    b.set_epoch(2)
    assert all(np.array_equal(x.rows, y.rows) for x, y in zip(a, b))
    b.set_epoch(3)
    assert not np.array_equal(next(iter(a)).rows, next(iter(b)).rows)
    c = _sampler(seed=4)
    c.set_epoch(2)
    assert not np.array_equal(next(iter(a)).rows, next(iter(c)).rows)


def test_sampler_resumes_mid_epoch():
    s = _sampler()
    s.set_epoch(1)
    full = list(s)
    state = {**s.state_dict(), "start": 7}
    t = _sampler()
    t.load_state_dict(state)
    tail = list(t)
    assert len(tail) == len(full) - 7 == len(t)
    assert all(x.index == y.index and np.array_equal(x.rows, y.rows) for x, y in zip(full[7:], tail))


def test_sampler_shards_over_ranks_without_overlap():
    single = _sampler(batch_size=4, examples_per_epoch=48)
    rows, _ = single.epoch_rows(0)
    shards = [list(_sampler(batch_size=4, examples_per_epoch=48, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    indices = sorted(b.index for s in shards for b in s)
    assert indices == list(range(12))
    for s in shards:
        for b in s:
            np.testing.assert_array_equal(b.rows, rows[b.index])


def test_sampler_balances_speakers_and_respects_lengths():
    s = _sampler()
    rows, sizes = s.epoch_rows(0)
    flat = rows.reshape(-1, 3)
    labels = s.labels[flat[:, 0]]
    assert abs(labels.mean() - 0.5) < 0.05  # one utterance of speaker 1 against five of speaker 0
    assert ((sizes >= 30) & (sizes <= 60)).all()
    assert (rows[:, :, 2] == sizes[:, None]).all()  # one chunk length per batch
    lengths = s.lengths[flat[:, 0]]
    long_enough = lengths >= flat[:, 2]
    assert (flat[long_enough, 1] + flat[long_enough, 2] <= lengths[long_enough]).all()
    assert (flat[~long_enough, 1] == 0).all()
    u = _sampler(speaker_balanced=False)
    assert abs(u.labels[u.epoch_rows(0)[0].reshape(-1, 3)[:, 0]].mean() - 1 / 6) < 0.05


def test_sampler_rejects_too_few_examples():
    with pytest.raises(ValueError, match="less than one step"):
        _sampler(examples_per_epoch=7, batch_size=4, world_size=2, rank=1)


# ------------------------------------------------------------------------------------------------- cache
def test_cache_matches_features_and_is_reused(tmp_path, monkeypatch):
    data = tone_corpus(tmp_path)
    cache = FeatureCache.build(data, FEATS, tmp_path / "cache")
    assert cache.utts == data.utts and cache.bad == {}
    for i, utt in enumerate(cache.utts):
        wave, _ = data.load_audio(utt)
        np.testing.assert_array_equal(cache[i], compute_features(wave, FEATS).numpy())
    import spkver.data.cache as ds

    monkeypatch.setattr(ds, "compute_features", lambda *a, **k: pytest.fail("recomputed a cached utterance"))
    again = FeatureCache.build(data, FEATS, tmp_path / "cache")
    assert again.folder == cache.folder
    monkeypatch.undo()
    other = FeatureCache.build(data, FeatureConfig(num_mel_bins=20, num_ceps=12, vad=False), tmp_path / "cache")
    assert other.folder != cache.folder and other[0].shape[1] == 12
    half = FeatureCache.build(data, FEATS, tmp_path / "cache", dtype="float16")
    assert half.feats.dtype == np.float16 and half.folder != cache.folder
    np.testing.assert_allclose(half[1], cache[1], rtol=1e-3, atol=1e-2)


def test_cached_batches_hold_the_right_frames_and_labels(tmp_path):
    data = tone_corpus(tmp_path)
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=3, examples_per_epoch=12,
                     num_workers=0)
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=1)
    assert ts.speakers == ["s0", "s1"] and len(ts.sampler) == 4
    cache = ts.dataset.cache
    batches = list(ts.loader(epoch=0))
    for (feats, labels), batch in zip(batches, ts.sampler):
        assert feats.dtype == torch.float32 and feats.shape[0] == 3 and 20 <= feats.shape[1] <= 30
        for k, (u, s, n) in enumerate(batch.rows):
            np.testing.assert_array_equal(feats[k].numpy(), cut(cache[u], s, n))
            assert ts.speakers[int(labels[k])] == data.utt2spk[cache.utts[u]]


# --------------------------------------------------------------------------------------------- on the fly
def test_audio_chunks_are_deterministic_and_augmented(tmp_path):
    data = tone_corpus(tmp_path)
    noise = tmp_path / "musan" / "noise"
    noise.mkdir(parents=True)
    sf.write(noise / "n.wav", np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=2, examples_per_epoch=4,
                     num_workers=0, augment={"musan": str(tmp_path / "musan")}, augment_prob=1.0)
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=5)
    assert isinstance(ts.dataset, AudioChunks)
    first = [f for f, _ in ts.loader(0)]
    again = [f for f, _ in ts.loader(0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    clean = AudioChunks(data, ts.utts, ts.dataset.labels, FEATS, augmenter=None, seed=5)
    batch = next(iter(ts.sampler))
    assert first[0].shape == clean[batch][0].shape
    assert not torch.allclose(first[0], clean[batch][0])
    workers = [f for f, _ in training_set(data, FEATS, dataclasses.replace(cfg, num_workers=1),
                                          tmp_path / "cache", seed=5).loader(0)]
    assert all(torch.equal(a, b) for a, b in zip(first, workers))


# ------------------------------------------------------------------------- speed perturbation, SpecAugment
SIX = (2, 3, 2, 2, 3, 2)  # utterances of six speakers: enough for training-set babble


def test_speed_copies_are_new_speakers_in_the_cache(tmp_path, monkeypatch):
    data = tone_corpus(tmp_path, utts_per_speaker=(2, 3))
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=4, examples_per_epoch=8,
                     num_workers=0, speed_perturb=[0.9, 1.1])
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=1)
    assert ts.speakers == ["s0", "s1", "sp0.9-s0", "sp0.9-s1", "sp1.1-s0", "sp1.1-s1"]
    assert len(ts.utts) == 3 * len(data.utts) and "sp1.1-s1-u2" in ts.utts
    assert isinstance(ts.dataset, CachedChunks) and [c.speed for c in ts.dataset.parts] == [1.0, 0.9, 1.1]
    assert len({c.folder for c in ts.dataset.parts}) == 3  # the factor is part of the cache key
    for k, item in enumerate(ts.utts):  # each copy: its own speaker, the features of the perturbed audio
        u, spk = ts.utts[k], ts.speakers[ts.dataset.labels[k]]
        speed = 1.0 if not item.startswith("sp") else float(item[2:item.index("-")])
        source = item if speed == 1.0 else item[item.index("-") + 1:]
        assert spk == (data.utt2spk[source] if speed == 1.0 else f"sp{speed:g}-{data.utt2spk[source]}"), u
        if k % 4 == 0:
            np.testing.assert_array_equal(ts.dataset.feats(k), utterance_features(data, source, FEATS, speed=speed)[0])
    slow = ts.dataset.parts[1]
    assert slow.lengths.sum() > ts.dataset.parts[0].lengths.sum() > ts.dataset.parts[2].lengths.sum()
    for feats, labels in ts.loader(0):
        assert feats.shape[0] == 4 and feats.shape[2] == FEATS.dim and labels.max() < 6
    import spkver.data.cache as cache_module

    monkeypatch.setattr(cache_module, "compute_features", lambda *a, **k: pytest.fail("recomputed"))
    again = training_set(data, FEATS, cfg, tmp_path / "cache", seed=1)  # every factor's cache reused
    assert again.speakers == ts.speakers


def test_speed_copies_on_the_fly_and_too_strong_a_factor(tmp_path):
    data = tone_corpus(tmp_path, utts_per_speaker=(2, 3))
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=4, examples_per_epoch=8,
                     num_workers=0, precompute=False, speed_perturb=[0.9, 1.1])
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=1)
    assert isinstance(ts.dataset, AudioChunks) and len(ts.speakers) == 6
    assert sorted(set(ts.dataset.speeds)) == [0.9, 1.0, 1.1]
    first = [(f, y) for f, y in ts.loader(0)]
    assert all(f.shape[0] == 4 and f.shape[2] == FEATS.dim for f, _ in first)
    # a chunk of a copy is the perturbed audio's stretch: compare with the whole utterance perturbed
    from spkver.data.augment import speed_perturb

    u = ts.utts.index("sp0.9-s1-u2")
    wave, _ = data.load_audio(data.utts[u % len(data.utts)])
    whole = speed_perturb(wave, 16000, 0.9)
    piece = ts.dataset._piece(wave, 1600, 3200, 0.9)
    np.testing.assert_allclose(piece[:-100], whole[1600:4700], atol=1e-3)
    with pytest.raises(ValueError, match=r"data.speed_perturb: factor 3 leaves speaker 's0'.*chunk_min_seconds"):
        training_set(data, FEATS, dataclasses.replace(cfg, chunk_min_seconds=0.8, chunk_max_seconds=0.8,
                                                      speed_perturb=[3.0]), tmp_path / "cache")


def test_spec_augment_in_both_paths_is_reproducible(tmp_path):
    data = tone_corpus(tmp_path)
    spec = {"time_masks": 1, "time_width": [3, 3], "freq_masks": 1, "freq_width": [2, 2]}
    for precompute in (True, False):
        cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=2, examples_per_epoch=4,
                         num_workers=0, precompute=precompute, spec_augment=spec)
        ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=5)
        masked = [f for f, _ in ts.loader(0)]
        plain = [f for f, _ in training_set(data, FEATS, dataclasses.replace(cfg, spec_augment=None),
                                            tmp_path / "cache", seed=5).loader(0)]
        for m, p in zip(masked, plain):
            for row in range(len(m)):
                zero_rows, zero_cols = (m[row] == 0).all(dim=1), (m[row] == 0).all(dim=0)
                assert zero_rows.sum() >= 3 and zero_cols.sum() >= 2
                keep = ~zero_rows[:, None] & ~zero_cols[None, :]
                assert torch.equal(m[row][keep], p[row][keep])
        assert all(torch.equal(a, b) for a, b in zip(masked, [f for f, _ in ts.loader(0)]))
    with pytest.raises(ValueError, match="spec_augment.*waveform"):
        training_set(data, FeatureConfig(kind="waveform"), cfg, tmp_path / "cache")


def test_the_no_download_chain_feeds_the_loader(tmp_path):
    data = tone_corpus(tmp_path, utts_per_speaker=SIX, seconds=0.8)
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=3, examples_per_epoch=9,
                     num_workers=0, augment_prob=1.0, speed_perturb=[0.9, 1.1],
                     augment={"kinds": ["babble", "colored", "reverb"], "babble_pool": {"seconds": 0.5},
                              "simulate_rir": {"count": 2, "rt60": [0.2, 0.3], "room": [[3, 4], [3, 4], [2.5, 3]]}},
                     spec_augment={"time_width": [0, 3], "freq_width": [0, 2]})
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=2)
    assert len(ts.speakers) == 18 and (tmp_path / "cache" / "babble").is_dir()
    assert next((tmp_path / "cache" / "rirs").iterdir()).name.startswith("sim-")
    first = [(f, y) for f, y in ts.loader(0)]
    assert len(first) == 3
    for (feats, labels), batch in zip(first, ts.sampler):
        assert feats.shape == (3, batch.rows[0, 2], FEATS.dim) and torch.isfinite(feats).all()
        assert [ts.speakers[y] for y in labels] == [ts.speakers[ts.dataset.labels[u]] for u in batch.rows[:, 0]]
    workers = training_set(data, FEATS, dataclasses.replace(cfg, num_workers=1), tmp_path / "cache", seed=2)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, workers.loader(0)))
    few = tone_corpus(tmp_path / "few", utts_per_speaker=(2, 2, 2, 2))
    with pytest.raises(ValueError, match="augment.babble_pool.*at least 4 speakers other"):
        training_set(few, FEATS, cfg, tmp_path / "few_cache")


def test_audio_cache_replaces_decoding_per_chunk(tmp_path, monkeypatch):
    data = tone_corpus(tmp_path)
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=2, examples_per_epoch=4,
                     num_workers=0, precompute=False, audio_cache=True, speed_perturb=[0.9])
    ts = training_set(data, FEATS, cfg, tmp_path / "cache", seed=3)
    audio = ts.dataset.audio
    assert audio.dtype == "float16" and audio.dim == 1
    for i, utt in enumerate(audio.utts):
        wave, _ = data.load_audio(utt)
        np.testing.assert_array_equal(audio[i][:, 0], wave.astype(np.float16))
    monkeypatch.setattr(DataDir, "load_audio", lambda *a, **k: pytest.fail("decoded a file per chunk"))
    cached = [f for f, _ in ts.loader(0)]
    monkeypatch.undo()
    plain = [f for f, _ in training_set(data, FEATS, dataclasses.replace(cfg, audio_cache=False),
                                        tmp_path / "cache", seed=3).loader(0)]
    for a, b in zip(cached, plain):  # the same chunks; float16 audio moves the features by < 1% of their range
        assert a.shape == b.shape and (a - b).abs().max() <= 0.01 * b.abs().max()


# ------------------------------------------------------------------------------------------------ bad audio
def test_bad_utterance_raises_or_is_skipped_and_reported(tmp_path, caplog):
    data = tone_corpus(tmp_path)
    (tmp_path / "wav" / "s1-u2.wav").write_bytes(b"RIFF garbage")
    cfg = DataConfig(chunk_min_seconds=0.2, chunk_max_seconds=0.3, batch_size=2, examples_per_epoch=4,
                     num_workers=0)
    with pytest.raises(AudioError, match=r"s1-u2.*s1-u2\.wav"):
        training_set(data, FEATS, cfg, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        ts = training_set(data, FEATS, cfg, tmp_path / "cache", skip_bad=True)
    assert list(ts.bad) == ["s1-u2"] and "s1-u2" not in ts.utts and len(ts.utts) == 4
    assert "1 unusable" in caplog.text and "s1-u2" in caplog.text
