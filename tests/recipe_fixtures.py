"""Tiny fabricated corpora in the real layouts the recipes read: VoxCeleb1, NIST SRE10-style, speechocean762.

Speakers are source-filter voices (:mod:`spkver.data.synthetic.voice`); each recording session (a VoxCeleb video,
an SRE conversation side) varies the voice a little. Everything is drawn from ``numpy.random.default_rng`` with
keyed seeds, so a fixture is the same on every run. Nothing is written outside the folder given.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import soundfile as sf

from spkver.data.synthetic.voice import sample_speaker, synthesize, vary_session


def _speech(seed: int, speaker: int, session: int, utt: int, seconds: float, sample_rate: int) -> np.ndarray:
    """``(samples,)`` float32 speech of ``speaker`` in ``session`` plus a little noise, peak below 1."""
    voice = sample_speaker(np.random.default_rng([seed, speaker]))
    voice = vary_session(voice, np.random.default_rng([seed, speaker, session]))
    rng = np.random.default_rng([seed, speaker, session, utt])
    wave = synthesize(voice, seconds, rng, sample_rate=sample_rate)
    wave = wave + 0.003 * rng.standard_normal(len(wave)).astype(np.float32)
    return (wave / max(1.0, float(np.abs(wave).max()) / 0.9)).astype(np.float32)


def _trial_pairs(utt2spk: dict[str, str], n_nontarget: int, seed: int) -> list[tuple[str, str, bool]]:
    """Every same-speaker pair plus ``n_nontarget`` random different-speaker pairs, shuffled."""
    utts = sorted(utt2spk)
    pairs = [(a, b, True) for a, b in itertools.combinations(utts, 2) if utt2spk[a] == utt2spk[b]]
    rng = np.random.default_rng(seed)
    others = [(a, b, False) for a, b in itertools.combinations(utts, 2) if utt2spk[a] != utt2spk[b]]
    pick = rng.choice(len(others), size=min(n_nontarget, len(others)), replace=False)
    pairs += [others[i] for i in sorted(pick)]
    return [pairs[i] for i in rng.permutation(len(pairs))]


# ------------------------------------------------------------------------------------------------ VoxCeleb
def voxceleb_corpus(root: Path, n_dev: int = 6, n_test: int = 4, videos: int = 2, utts_per_video: int = 2,
                    seconds: float = 1.5, seed: int = 0) -> Path:
    """VoxCeleb1 in its split layout: ``root/vox1_{dev,test}_wav/wav/idXXXXX/<video>/NNNNN.wav`` (16 kHz) and
    ``root/meta/veri_test2.txt`` (``1|0 idA/video/N.wav idB/video/N.wav``) over the test speakers
    (id10270 onwards, as in VoxCeleb1). Returns ``root``."""
    test_ids = [f"id{10270 + i}" for i in range(n_test)]
    dev_ids = [f"id{10001 + i}" for i in range(n_dev)]
    test_utts: dict[str, str] = {}
    for number, spk in enumerate(dev_ids + test_ids):
        subset = "test" if spk in test_ids else "dev"
        for v in range(videos):
            video = f"vid{seed}{number:02d}{v}Xq"
            for u in range(1, utts_per_video + 1):
                path = root / f"vox1_{subset}_wav" / "wav" / spk / video / f"{u:05d}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _speech(seed, number, v, u, seconds, 16000), 16000, subtype="PCM_16")
                if subset == "test":
                    test_utts[f"{spk}/{video}/{u:05d}.wav"] = spk
    pairs = _trial_pairs(test_utts, n_nontarget=3 * len(test_utts), seed=seed)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "veri_test2.txt").write_text("".join(f"{int(t)} {a} {b}\n" for a, b, t in pairs))
    return root


# --------------------------------------------------------------------------------------------------- SRE10
def _write_sphere(path: Path, sides: list[np.ndarray]) -> None:
    """A NIST SPHERE file, 8 kHz mu-law, one channel per conversation side (shorter sides zero-padded)."""
    n = max(len(s) for s in sides)
    data = np.zeros((n, len(sides)), dtype=np.float32)
    for i, side in enumerate(sides):
        data[:len(side), i] = side
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, 8000, format="NIST", subtype="ULAW")


def sre10_corpus(root: Path, n_models: int = 4, n_train: int = 6, conversations: int = 4, seconds: float = 1.5,
                 seed: int = 1) -> dict[str, Path]:
    """An SRE10-style evaluation set plus a training data dir, all 8 kHz two-channel SPHERE telephone calls.

    - ``root/sre10/data/{train,test}/<conv>.sph``: side ``a`` (channel 0) holds the speaker of interest,
      side ``b`` a distractor; ``root/sre10/train.trn`` enrolls each model from one conversation side, and
      the first model from two (multi-enrollment); ``root/sre10/key`` (``model,segment,side,target|nontarget``
      rows) lists every model against every test side;
    - ``root/train_data``: a Kaldi data dir of ``n_train`` other speakers (``wav.scp`` entries are the
      absolute ``.sph`` paths, ``reco2channel`` picks the side), as SRE04-08 / Switchboard data would be.

    Returns ``{"root": ..., "key": ..., "train": ...}``.
    """
    sre = root / "sre10"
    speaker = itertools.count(100)
    models = [f"m{100 + i}" for i in range(n_models)]
    spk_of = {m: next(speaker) for m in models}
    enroll, tests = {}, []
    for i, model in enumerate(models):
        n_enroll = 2 if i == 0 else 1
        segs = []
        for c in range(n_enroll + 1):  # the last conversation is a test segment
            conv = f"tb{seed}{i}{c}x"
            folder = "train" if c < n_enroll else "test"
            _write_sphere(sre / "data" / folder / f"{conv}.sph",
                          [_speech(seed, spk_of[model], c, 1, seconds, 8000),
                           _speech(seed, next(speaker), 0, 1, seconds, 8000)])
            (segs if c < n_enroll else tests).append(f"{conv}:a")
        enroll[model] = segs
    (sre / "train.trn").write_text("".join(f"{m} {'f' if i % 2 else 'm'} {','.join(s)}\n"
                                           for i, (m, s) in enumerate(enroll.items())))
    rows = [f"{m},{seg.split(':')[0]},a,{'target' if j == i else 'nontarget'}"
            for i, m in enumerate(models) for j, seg in enumerate(tests)]
    key = root / "key"
    key.write_text("\n".join(rows) + "\n")

    train = root / "train_data"
    train.mkdir(parents=True)
    wav_scp, utt2spk, reco2channel = [], [], []
    for t in range(n_train):
        spk = f"sw{t:03d}"
        for c in range(conversations):
            path = root / "train_audio" / f"{spk}_{c}.sph"
            sides = [_speech(seed, 500 + t, c, 1, seconds, 8000), _speech(seed, 900 + t * 10 + c, 0, 1, seconds, 8000)]
            channel = c % 2  # the speaker talks on side a or side b
            _write_sphere(path, sides if channel == 0 else sides[::-1])
            utt = f"{spk}-{c}"
            wav_scp.append(f"{utt} {path.resolve()}\n")
            utt2spk.append(f"{utt} {spk}\n")
            reco2channel.append(f"{utt} {channel}\n")
    (train / "wav.scp").write_text("".join(wav_scp))
    (train / "utt2spk").write_text("".join(utt2spk))
    (train / "reco2channel").write_text("".join(reco2channel))
    return {"root": sre, "key": key, "train": train}


# ---------------------------------------------------------------------------------------------- so762
def so762_corpus(root: Path, n_train: int = 6, n_dev: int = 4, utts: int = 4, seconds: float = 1.5,
                 seed: int = 2) -> Path:
    """speechocean762 as prepared under /work/shared/data: ``root/{train,dev}`` Kaldi data dirs (``wav.scp``
    paths relative to ``root``: ``audio/<spk>/<utt>.flac``, 16 kHz; ``utt2spk``, ``spk2utt``, ``utt2dur``,
    ``spk2gender``, ``spk2age``) and ``root/dev/trials`` (Kaldi ``utt1 utt2 target|nontarget``). Returns
    ``root``."""
    for part, speakers in (("train", range(n_train)), ("dev", range(n_train, n_train + n_dev))):
        folder = root / part
        folder.mkdir(parents=True)
        tables = {name: [] for name in ("wav.scp", "utt2spk", "utt2dur", "spk2gender", "spk2age", "spk2utt")}
        utt2spk = {}
        for number in speakers:
            spk = f"{9000 + number:04d}"
            spk_utts = []
            for u in range(utts):
                utt = f"{spk}-{9000 + number:04d}{u:05d}"
                rel = Path("audio") / spk / f"{utt.split('-')[1]}.flac"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                wave = _speech(seed, number, 0, u, seconds, 16000)
                sf.write(root / rel, wave, 16000, format="FLAC")
                tables["wav.scp"].append(f"{utt} {rel}")
                tables["utt2spk"].append(f"{utt} {spk}")
                tables["utt2dur"].append(f"{utt} {len(wave) / 16000:.3f}")
                utt2spk[utt] = spk
                spk_utts.append(utt)
            tables["spk2gender"].append(f"{spk} {'mf'[number % 2]}")
            tables["spk2age"].append(f"{spk} {8 + 5 * number}")
            tables["spk2utt"].append(f"{spk} {' '.join(spk_utts)}")
        for name, lines in tables.items():
            (folder / name).write_text("".join(line + "\n" for line in lines))
        if part == "dev":
            pairs = _trial_pairs(utt2spk, n_nontarget=3 * len(utt2spk), seed=seed)
            (folder / "trials").write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n"
                                                   for a, b, t in pairs))
    return root
