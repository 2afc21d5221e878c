"""Simulated room impulse responses: random shoebox rooms by the image-source method, cached on disk.

Allen & Berkley, "Image method for efficiently simulating small-room acoustics", JASA 65(4), 1979. A source
and a microphone sit inside a rectangular room whose six walls share one pressure reflection coefficient
``beta = sqrt(1 - alpha)``; the absorption ``alpha`` comes from a target reverberation time by Sabine's formula
``RT60 = 0.161 V / (S alpha)`` (V the volume, S the wall area). Every image source up to the RIR's length adds
a tap ``beta ** reflections / (4 pi r)`` at delay ``r / c`` (``c`` = 343 m/s), placed with a Hann-windowed sinc
(a fractional delay, 16 taps) within 50 ms of the direct path and at the nearest sample after it (the dense
late tail, where exact placement does not matter and sinc taps would cost 16 times as much); an optional
high-pass (2nd-order Butterworth at 100 Hz, the cut-off of Allen & Berkley's filter) removes the DC the image
method leaves. The RIR lasts ``RT60`` seconds after the direct path
(60 dB of decay). Sabine's formula holds for moderate absorption: measured by Schroeder integration
(:func:`schroeder_rt60`) the decay matches the target to within about 10% up to ``alpha`` ~ 0.45; in
large rooms with short targets (``alpha`` near 1) it decays faster than the target, as Eyring's formula predicts.

:func:`simulate_rirs` draws ``count`` rooms (dimensions uniform in the ``room`` ranges, RT60 uniform in
``rt60``, source and microphone uniform at least 0.5 m from the walls and from each other) from ``seed`` and
writes them once as float WAV files plus ``manifest.json`` (the settings and each room); a second call with
the same settings reuses the folder, other settings in the same folder are refused. :func:`rir_folder` names a
folder per settings under a cache root, which is how training runs cache them (``spkver.data.augment``:
``simulate_rir`` with ``rir_cache``). The files are used like recorded RIRs (``Augmenter``'s ``reverb``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from spkver.data.cache import build_folder

SPEED_OF_SOUND = 343.0
RT60_RANGE = (0.05, 3.0)     # seconds: sane targets lie in (0, 3]
ROOM_RANGE = (1.0, 50.0)     # metres per dimension
WALL_MARGIN = 0.5            # metres between a wall and the source or microphone, and between the two
_SINC_TAPS = 16
_HIGHPASS_HZ = 100.0
_EARLY_S = 0.05              # images arriving later than this after the direct path: nearest-sample taps


def _pair(value, name: str, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {value!r}")
    return a, b


def check_settings(count: int = 100, sample_rate: int = 16000, seed: int = 0, rt60=(0.2, 0.8),
                   room=((3.0, 10.0), (3.0, 10.0), (2.5, 4.0)), highpass: bool = True) -> dict:
    """The settings of :func:`simulate_rirs` checked and normalised (plain floats and lists).

    Raises ``ValueError`` naming the setting at fault: ``count`` < 1, an RT60 range outside (0, 3] s
    (below 0.05 s), a room range outside [1, 50] m or too small for the source and microphone, a
    non-positive sample rate.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rt = _pair(rt60, "rt60 (seconds)", *RT60_RANGE)
    try:
        dims = [tuple(r) for r in room]
    except TypeError:
        raise ValueError(f"room must be three (low, high) ranges in metres, got {room!r}") from None
    if len(dims) != 3:
        raise ValueError(f"room must be three (low, high) ranges in metres (x, y, z), got {room!r}")
    dims = [_pair(r, f"room[{k}] (metres)", *ROOM_RANGE) for k, r in enumerate(dims)]
    if any(lo < 2 * WALL_MARGIN + 0.1 for lo, _ in dims):
        raise ValueError(f"room dimensions must be >= {2 * WALL_MARGIN + 0.1} m to hold a source and a "
                         f"microphone {WALL_MARGIN} m from the walls, got {room!r}")
    return {"count": int(count), "sample_rate": int(sample_rate), "seed": int(seed), "rt60": list(rt),
            "room": [list(r) for r in dims], "highpass": bool(highpass)}


def sabine_absorption(dims, rt60: float) -> float:
    """Wall absorption ``alpha`` giving ``rt60`` seconds in a shoebox of ``dims`` (x, y, z) metres (Sabine);
    ``ValueError`` when no ``alpha`` <= 1 reaches it (a room too large for so short a time)."""
    x, y, z = (float(d) for d in dims)
    alpha = 0.161 * x * y * z / (2 * (x * y + x * z + y * z) * float(rt60))
    if not 0 < alpha <= 1:
        raise ValueError(f"rt60 {rt60} s is too short for a {x:.1f} x {y:.1f} x {z:.1f} m room (Sabine "
                         f"absorption {alpha:.2f} > 1)")
    return alpha


def image_source_rir(dims, source, mic, rt60: float, sample_rate: int, highpass: bool = True) -> np.ndarray:
    """Impulse response ``(taps,)`` float32 from ``source`` to ``mic`` (metres) in a shoebox ``dims``.

    Tap ``k`` is the pressure at ``k / sample_rate`` s; the direct path arrives at ``|source - mic| / c``
    with amplitude ``1 / (4 pi r)``. Every image source within ``c * (r_direct / c + rt60)`` metres is
    summed (Allen & Berkley 1979; uniform wall reflection coefficient from :func:`sabine_absorption`).
    """
    dims, source, mic = (np.asarray(v, dtype=np.float64) for v in (dims, source, mic))
    if not (np.all(source > 0) and np.all(source < dims) and np.all(mic > 0) and np.all(mic < dims)):
        raise ValueError(f"source {source} and microphone {mic} must lie inside the room {dims}")
    beta = np.sqrt(1.0 - sabine_absorption(dims, rt60))
    direct = float(np.linalg.norm(source - mic))
    length_s = direct / SPEED_OF_SOUND + float(rt60)
    n_taps = int(np.ceil(length_s * sample_rate)) + _SINC_TAPS
    reach = SPEED_OF_SOUND * length_s
    # per axis: image coordinate (1 - 2p) s + 2 n L minus the mic's, and the reflection count |n - p| + |n|
    axes = []
    for d in range(3):
        n = np.arange(-int(np.ceil(reach / (2 * dims[d]))) - 1, int(np.ceil(reach / (2 * dims[d]))) + 2)
        offset = np.concatenate([source[d] + 2 * n * dims[d], -source[d] + 2 * n * dims[d]]) - mic[d]
        reflections = np.concatenate([2 * np.abs(n), np.abs(n - 1) + np.abs(n)])
        keep = np.abs(offset) <= reach
        axes.append((offset[keep], reflections[keep]))
    (dx, rx), (dy, ry), (dz, rz) = axes
    rir = np.zeros(n_taps + _SINC_TAPS, np.float64)
    half = _SINC_TAPS // 2
    window_k = np.arange(-half + 1, half + 1)
    early = (direct / SPEED_OF_SOUND + _EARLY_S) * sample_rate
    for x, r_x in zip(dx, rx):  # one plane of images at a time keeps memory small
        dist = np.sqrt(x * x + dy[:, None] ** 2 + dz[None, :] ** 2).ravel()
        refl = (r_x + ry[:, None] + rz[None, :]).ravel()
        keep = dist <= reach
        dist, refl = dist[keep], refl[keep]
        gain = beta ** refl / (4 * np.pi * np.maximum(dist, 1e-3))
        delay = dist / SPEED_OF_SOUND * sample_rate
        late = delay >= early
        rir += np.bincount(np.rint(delay[late]).astype(np.int64) + half, weights=gain[late], minlength=len(rir))
        delay, gain = delay[~late], gain[~late]
        base = np.floor(delay).astype(np.int64)
        frac = delay - base
        for k in window_k:  # Hann-windowed sinc centred on the fractional delay
            t = k - frac
            taps = gain * np.sinc(t) * (0.5 + 0.5 * np.cos(np.pi * t / (half + 1)))
            rir += np.bincount(base + k + half, weights=taps, minlength=len(rir))
    rir = rir[half:half + n_taps]
    if highpass:
        from scipy.signal import butter, sosfilt

        rir = sosfilt(butter(2, _HIGHPASS_HZ, btype="highpass", fs=sample_rate, output="sos"), rir)
    return rir.astype(np.float32)


def _draw_room(settings: dict, index: int) -> dict:
    rng = np.random.default_rng([settings["seed"], index])
    for _ in range(100):
        dims = np.array([rng.uniform(lo, hi) for lo, hi in settings["room"]])
        rt60 = float(rng.uniform(*settings["rt60"]))
        try:
            sabine_absorption(dims, rt60)
        except ValueError:
            continue
        source, mic = (rng.uniform(WALL_MARGIN, dims - WALL_MARGIN) for _ in range(2))
        if np.linalg.norm(source - mic) >= WALL_MARGIN:
            return {"dims": dims.tolist(), "rt60": rt60, "source": source.tolist(), "mic": mic.tolist()}
    raise ValueError(f"rt60 {settings['rt60']} and room {settings['room']}: no room of these ranges reaches "
                     "its reverberation time with absorption <= 1 (shorten the rooms or lengthen rt60)")


def settings_key(settings: dict) -> str:
    """A short hash of checked settings (:func:`check_settings`)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def rir_folder(root: str | os.PathLike, **settings) -> Path:
    """``root/sim-HASH``: the folder of :func:`simulate_rirs` for these settings under a cache root."""
    return Path(root) / f"sim-{settings_key(check_settings(**settings))}"


def simulate_rirs(out_dir: str | os.PathLike, count: int = 100, sample_rate: int = 16000, seed: int = 0,
                  rt60=(0.2, 0.8), room=((3.0, 10.0), (3.0, 10.0), (2.5, 4.0)), highpass: bool = True
                  ) -> list[Path]:
    """Simulate ``count`` RIRs of random shoebox rooms into ``out_dir`` once; return their files (sorted).

    Args:
        out_dir: folder written atomically (built under a temporary name, then renamed): ``rir_NNNNN.wav``
            (float32 at ``sample_rate``) and ``manifest.json`` (the settings, and per file the room
            dimensions, RT60, source and microphone positions in metres).
        count: number of rooms (>= 1). seed: the rooms, positions and times come from ``(seed, index)``,
            so the same settings give identical responses (sample for sample).
        rt60: ``(low, high)`` target reverberation time in seconds, within (0, 3].
        room: three ``(low, high)`` ranges in metres for x, y and z, within [1, 50].
        highpass: apply the 100 Hz high-pass of Allen & Berkley.
    Returns:
        The ``count`` WAV paths. An existing ``out_dir`` made with the same settings is reused; one made with
        other settings raises ``ValueError`` (use :func:`rir_folder` for one folder per settings).
    """
    from spkver.audio import write_audio

    settings = check_settings(count, sample_rate, seed, rt60, room, highpass)
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if old.get("settings") != settings:
            raise ValueError(f"{out_dir} holds RIRs simulated with other settings ({old.get('settings')}); "
                             f"choose another folder (e.g. spkver.data.rir.rir_folder) or delete it")
        return [out_dir / item["file"] for item in old["rirs"]]
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and has no manifest.json: not a folder of simulated RIRs")
    with build_folder(out_dir, "manifest.json") as tmp:
        rirs = []
        for i in range(settings["count"]):
            room_i = _draw_room(settings, i)
            taps = image_source_rir(room_i["dims"], room_i["source"], room_i["mic"], room_i["rt60"],
                                    settings["sample_rate"], settings["highpass"])
            name = f"rir_{i:05d}.wav"
            write_audio(tmp / name, taps, settings["sample_rate"], subtype="FLOAT")
            rirs.append({"file": name, **room_i})
        (tmp / "manifest.json").write_text(json.dumps({"settings": settings, "rirs": rirs}, indent=1))
    return simulate_rirs(out_dir, **{k: settings[k] for k in settings})


def schroeder_rt60(rir: np.ndarray, sample_rate: int, decay_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """Reverberation time of ``rir`` ``(taps,)`` measured by Schroeder backward integration.

    The energy decay curve ``10 log10(sum_{k >= t} h[k]^2)`` is fitted by least squares between
    ``decay_db`` (T20 by default; ``(-5, -35)`` for T30) and extrapolated to 60 dB of decay.
    """
    energy = np.cumsum(np.asarray(rir, dtype=np.float64)[::-1] ** 2)[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-300)
    hi, lo = decay_db
    span = np.nonzero((edc <= hi) & (edc >= lo))[0]
    if len(span) < 2:
        raise ValueError(f"the decay curve does not span {decay_db} dB")
    slope = np.polyfit(span / sample_rate, edc[span], 1)[0]
    return float(-60.0 / slope)
