"""spkver.features against brute-force transcriptions of Kaldi's algorithms and torchaudio's Kaldi MFCC."""

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as K

from spkver.features import (FeatureConfig, compute_features, energy_vad, features_and_vad, kaldi_features,
                             sliding_cmn)


def _kaldi_cmn_loop(x, window, norm_vars=False):
    """Literal per-frame transcription of Kaldi SlidingWindowCmnInternal with center=true."""
    n = x.shape[0]
    out = np.empty_like(x)
    for t in range(n):
        start = t - window // 2
        end = start + window
        if start < 0:
            end -= start
            start = 0
        if end > n:
            start -= end - n
            end = n
            if start < 0:
                start = 0
        seg = x[start:end]
        mean = seg.mean(0)
        out[t] = x[t] - mean
        if norm_vars:
            out[t] /= np.sqrt((seg ** 2).mean(0) - mean ** 2)
    return out


def _kaldi_vad_loop(e, threshold, mean_scale, context, proportion):
    """Literal transcription of Kaldi ComputeVadEnergy."""
    n = len(e)
    thr = threshold + (mean_scale * e.sum() / n if mean_scale != 0 else 0.0)
    voiced = np.zeros(n, bool)
    for t in range(n):
        num = den = 0
        for t2 in range(t - context, t + context + 1):
            if 0 <= t2 < n:
                den += 1
                num += e[t2] > thr
        voiced[t] = num >= den * proportion
    return voiced


@pytest.mark.parametrize("frames,window,norm_vars", [
    (1, 300, False), (7, 300, False), (10, 4, False), (11, 5, False), (12, 12, False), (40, 9, False),
    (25, 1, False), (7, 300, True), (11, 5, True), (40, 9, True),  # norm_vars needs >= 2 frames per window
])
def test_sliding_cmn_matches_kaldi_loop(frames, window, norm_vars):
    x = np.random.default_rng(frames * 100 + window).standard_normal((frames, 3)) * 2 + 5
    got = sliding_cmn(torch.from_numpy(x), window, norm_vars=norm_vars).numpy()
    np.testing.assert_allclose(got, _kaldi_cmn_loop(x, window, norm_vars), rtol=1e-9, atol=1e-9)


def test_sliding_cmn_by_hand():
    x = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    # window 2: windows [0,2), [0,2), [1,3), [2,4) -> means 1.5, 1.5, 3, 6
    np.testing.assert_allclose(sliding_cmn(x, 2).squeeze(1).numpy(), [-0.5, 0.5, 1.0, 2.0])
    assert torch.equal(sliding_cmn(x, 0), x)
    assert sliding_cmn(x, 2).dtype == torch.float32


@pytest.mark.parametrize("context,proportion,mean_scale", [(0, 0.5, 0.0), (2, 0.12, 0.5), (3, 0.6, 0.5),
                                                             (10, 0.3, 1.0)])
def test_energy_vad_matches_kaldi_loop(context, proportion, mean_scale):
    e = np.random.default_rng(context).normal(8.0, 4.0, size=57).astype(np.float32)
    got = energy_vad(torch.from_numpy(e), 5.5, mean_scale, context, proportion).numpy()
    np.testing.assert_array_equal(got, _kaldi_vad_loop(e, 5.5, mean_scale, context, proportion))


def test_energy_vad_by_hand():
    e = torch.tensor([0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0])
    # threshold 5.5, no mean term. Context 0: only the loud frame. Context 1: frames 1..3 see 1 of 3 frames
    # above threshold, which passes proportion 0.3 (1 >= 0.9) but not 0.4 (1 < 1.2).
    assert energy_vad(e, 5.5, 0.0, 0, 0.5).tolist() == [False, False, True, False, False, False, False]
    assert not energy_vad(e, 5.5, 0.0, 1, 0.4).any()
    assert energy_vad(e, 5.5, 0.0, 1, 0.3).tolist() == [False, True, True, True, False, False, False]


@pytest.mark.parametrize("cfg", [FeatureConfig.voxceleb(), FeatureConfig.sre(), FeatureConfig.fbank80(),
                                 FeatureConfig.fbank80(use_energy=True, snip_edges=True),
                                 FeatureConfig.voxceleb(snip_edges=True, use_energy=False)])
@pytest.mark.parametrize("samples", [401, 4123])
def test_raw_features_equal_torchaudio_kaldi(cfg, samples):
    """Same options as torchaudio.compliance.kaldi, computed there in float64: equal up to float32 rounding."""
    wave = np.random.default_rng(samples).standard_normal(samples).astype(np.float32) * 0.1
    feats, vad_energy = kaldi_features(wave, cfg)
    opts = dict(sample_frequency=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins, low_freq=cfg.low_freq,
                high_freq=cfg.high_freq, dither=0.0, snip_edges=cfg.snip_edges, energy_floor=0.0,
                use_energy=cfg.use_energy)
    x = torch.from_numpy(wave).unsqueeze(0).double() * 32768
    ref = K.mfcc(x, num_ceps=cfg.num_ceps, **opts) if cfg.kind == "mfcc" else K.fbank(x, **opts)
    assert feats.shape == ref.shape == (feats.shape[0], cfg.dim)
    shift, length = cfg.sample_rate // 100, cfg.sample_rate * 25 // 1000
    assert feats.shape[0] == (1 + (samples - length) // shift if cfg.snip_edges else (samples + shift // 2) // shift)
    torch.testing.assert_close(feats.double(), ref, atol=1e-3, rtol=1e-5)
    if cfg.kind == "fbank":  # VAD looks at the raw log energy, the column fbank(use_energy=True) prepends
        energy = K.fbank(x, **{**opts, "use_energy": True})[:, 0]
        torch.testing.assert_close(vad_energy.double(), energy, atol=1e-3, rtol=1e-5)


def test_framing_reflects_like_kaldi_for_very_short_signals():
    """Kaldi reflects repeatedly (index -1 -> 0, n -> n - 1) when a frame is longer than the signal."""
    cfg = FeatureConfig.voxceleb(use_energy=True)
    wave = np.random.default_rng(5).standard_normal(100).astype(np.float64) * 0.1  # 1 frame of 400 samples
    idx = np.arange(80 - 200, 80 - 200 + 400)
    while ((idx < 0) | (idx >= 100)).any():
        idx = np.where(idx < 0, -idx - 1, np.where(idx >= 100, 2 * 100 - 1 - idx, idx))
    frame = wave[idx].astype(np.float32).astype(np.float64) * 32768
    _, energy = kaldi_features(wave.astype(np.float32), cfg)
    assert energy.shape == (1,)
    assert abs(float(energy[0]) - np.log(np.sum((frame - frame.mean()) ** 2))) < 1e-3


def test_energy_column_is_kaldi_raw_log_energy():
    """With snip_edges, frame 0 is samples [0, 400); raw energy is taken after DC removal, before windowing."""
    cfg = FeatureConfig.voxceleb(snip_edges=True)
    wave = np.random.default_rng(2).standard_normal(1600).astype(np.float64) * 0.1
    _, energy = kaldi_features(wave.astype(np.float32), cfg)
    frame = wave[:400].astype(np.float32).astype(np.float64) * 32768
    frame -= frame.mean()
    assert energy.shape == (1 + (1600 - 400) // 160,)
    assert abs(float(energy[0]) - np.log(np.sum(frame ** 2))) < 1e-3


def _speech_and_silence(sr, seed=3):
    rng = np.random.default_rng(seed)
    loud = 0.3 * rng.standard_normal(sr).astype(np.float32)
    quiet = 1e-4 * rng.standard_normal(sr).astype(np.float32)
    return np.concatenate([quiet, loud, quiet])


def test_compute_features_is_cmn_then_voiced_frames():
    cfg = FeatureConfig.voxceleb()
    wave = _speech_and_silence(16000)
    feats, voiced = features_and_vad(wave, cfg)
    raw, energy = kaldi_features(wave, cfg)
    out = compute_features(wave, cfg)
    assert feats.shape == raw.shape == (300, 30)
    assert 95 <= int(voiced.sum()) <= 110  # the loud second, plus context at its edges
    assert bool(voiced[150]) and not bool(voiced[20]) and not bool(voiced[280])
    torch.testing.assert_close(out, sliding_cmn(raw, 300)[voiced])
    assert out.dtype == torch.float32 and out.shape[1] == cfg.dim
    assert torch.equal(out, compute_features(torch.from_numpy(wave), cfg))  # deterministic, numpy or torch
    assert compute_features(wave, FeatureConfig.voxceleb(vad=False)).shape == (300, 30)


def test_no_voiced_frame_keeps_all():
    cfg = FeatureConfig.voxceleb()
    silence = np.zeros(8000, np.float32)
    out = compute_features(silence, cfg)
    assert out.shape == (50, 30)  # every frame kept, as if VAD were off
    torch.testing.assert_close(out, compute_features(silence, FeatureConfig.voxceleb(vad=False)))


def test_resampling_input_rate_and_bad_input():
    cfg = FeatureConfig.voxceleb(vad=False)
    wave8k = _speech_and_silence(8000)
    assert compute_features(wave8k, cfg, sample_rate=8000).shape == (300, 30)
    with pytest.raises(ValueError, match="1-D"):
        compute_features(np.zeros((2, 8000), np.float32), cfg)
    with pytest.raises(ValueError, match="NaN"):
        compute_features(np.full(8000, np.nan, np.float32), cfg)
    with pytest.raises(ValueError, match="too short"):
        compute_features(np.zeros(10, np.float32), cfg)


def test_presets_and_dims():
    vox, sre, fb = FeatureConfig.voxceleb(), FeatureConfig.sre(), FeatureConfig.fbank80()
    assert (vox.sample_rate, vox.num_mel_bins, vox.num_ceps, vox.high_freq, vox.dim) == (16000, 30, 30, -400, 30)
    assert (sre.sample_rate, sre.num_mel_bins, sre.num_ceps, sre.high_freq, sre.dim) == (8000, 23, 23, 3700, 23)
    assert (fb.kind, fb.dim) == ("fbank", 80)
    assert FeatureConfig() == vox
    assert FeatureConfig.fbank80(use_energy=True).dim == 81


def test_dict_round_trip_and_validation():
    cfg = FeatureConfig.sre(cmn_window=200)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown feature option\(s\) \['num_cep'\]; valid options: kind"):
        FeatureConfig.from_dict({"num_cep": 20})
    for bad, message in [({"kind": "plp"}, "kind"), ({"num_ceps": 40}, "exceeds"),
                         ({"high_freq": 9000}, "high_freq"), ({"vad_proportion_threshold": 1.5}, "proportion"),
                         ({"cmn_window": -1}, "cmn_window")]:
        with pytest.raises(ValueError, match=message):
            FeatureConfig(**bad)
