"""Every script in benchmarks/ runs in its ``--quick`` mode and prints figures that hold up.

Each benchmark is imported from its file and its ``main(["--quick"])`` called in this process (one torch import
for all of them); the printed lines are parsed: timings are positive numbers, and where a benchmark compares
our result with a peer's (SpeechBrain, a per-trial loop), the two agree.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
from scipy.stats import norm

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NUM = r"[-+]?\d[\d,]*(?:\.\d*)?(?:e[-+]?\d+)?"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def run_quick(name: str, capsys, *extra: str) -> str:
    """Import benchmarks/NAME.py, run ``main(["--quick", *extra])`` and return what it printed."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    module.main(["--quick", *extra])
    return capsys.readouterr().out


def find(pattern: str, text: str) -> tuple[float, ...]:
    """The numbers captured by ``pattern`` (NUM groups) in its first match in ``text``."""
    m = re.search(pattern, text, re.M)
    assert m is not None, f"no line matching {pattern!r} in:\n{text}"
    return tuple(_number(g) for g in m.groups())


def has_speechbrain() -> bool:
    return importlib.util.find_spec("speechbrain") is not None


def test_every_benchmark_is_tested_in_quick_mode():
    scripts = sorted(p.stem for p in BENCHMARKS.glob("bench_*.py"))
    tested = sorted(name[len("test_"):] for name in globals() if name.startswith("test_bench_"))
    assert tested == scripts
    for name in scripts:
        assert "--quick" in (BENCHMARKS / f"{name}.py").read_text()
    assert '"$@"' in (BENCHMARKS / "run_all.sh").read_text()  # run_all.sh --quick reaches every script


def test_bench_metrics(capsys):
    out = run_quick("bench_metrics", capsys)
    n_tar = find(rf"\(a\) {NUM} trials \(({NUM}) targets\)", out)[0]
    ms, e_cross, e_hull, dcf = find(rf"spkver .*?({NUM}) ms .*EER ({NUM})%  EER\(ROCCH\) ({NUM})%  minDCF ({NUM})",
                                    out)
    assert ms > 0
    true_eer = 100 * norm.cdf(-1.0)  # targets N(2, 1), non-targets N(0, 1): EER = Phi(-1) = 15.87 %
    assert abs(e_cross - true_eer) < 4
    assert e_hull <= e_cross  # the convex hull lies on or above the empirical ROC
    assert 0 < dcf <= 1
    if has_speechbrain():
        sb_ms, sb_eer, sb_dcf = find(rf"speechbrain EER\+minDCF: +({NUM}) ms .*EER ({NUM})%  minDCF ({NUM})", out)
        assert sb_ms > 0
        # SpeechBrain's EER is (miss + fa) / 2 where they are closest: within one miss-rate step of the crossing
        assert abs(sb_eer - e_cross) <= 100 / n_tar + 1e-4
        assert sb_dcf == pytest.approx(dcf, abs=2e-5)
        assert find(rf"\|minDCF difference\| = ({NUM})", out)[0] < 1e-4
    n_large, secs, e_large = find(rf"\(b\) ({NUM}) trials .* in ({NUM}) s .*EER ({NUM})%", out)
    assert n_large == 20_000 and secs >= 0 and abs(e_large - true_eer) < 2.5
    est, low, high = find(rf"\(c\) bootstrap_ci.*EER ({NUM})% \[({NUM}), ({NUM})\]", out)
    assert low < est < high


def test_bench_scoring(capsys):
    out = run_quick("bench_scoring", capsys)
    for what in ("cosine score_trials", "PLDA score_trials", "PLDA multi-enrollment score_trials"):
        assert find(rf"{what}.*?: ({NUM}) s", out)[0] >= 0
    diffs = [_number(d) for d in re.findall(rf"max \|diff\| (?:over all trials )?= ({NUM})", out)]
    assert len(diffs) == 4  # cosine loop, PLDA loop, float64 matrix, multi-enrollment loop
    assert max(diffs) < 1e-4  # the batched float32 back-end gives the per-trial loops' scores
    ratios = [_number(r) for r in re.findall(rf"ratio peer/ours = ({NUM})x", out)]
    assert len(ratios) == 3 and min(ratios) > 0
    plain_s, uncertain_s = find(rf"plain score_trials ({NUM}) s; uncertainty-aware PLDA .*?: ({NUM}) s", out)
    assert plain_s >= 0 and uncertain_s >= 0
    assert find(rf"with variances on .*?largest deviation ({NUM})", out)[0] < 1e-4


def test_bench_plda(capsys):
    out = run_quick("bench_plda", capsys, *([] if has_speechbrain() else ["--no-speechbrain"]))
    train_s, score_s, ours = find(rf"spkver PLDA +train +({NUM}) s +score \S+ +({NUM}) s +EER +({NUM}) %", out)
    assert train_s > 0 and score_s >= 0  # scoring the quick set can take less than the printed 0.1 ms
    assert ours < 45  # data drawn from a PLDA model: well below chance with 300 held-out speakers
    if has_speechbrain():
        theirs = find(rf"SpeechBrain PLDA \(rank 16\) +train +{NUM} s +score \S+ +{NUM} s +EER +({NUM}) %", out)[0]
        assert ours <= theirs + 1.0  # full rank is at least as good as SpeechBrain's rank-16 model
        assert find(rf"EER ({NUM})x", out)[0] == pytest.approx(theirs / ours, rel=1e-2)


def test_bench_estimators(capsys):
    out = run_quick("bench_estimators", capsys)
    n = find(rf"^({NUM}) single-sample estimates", out)[0]
    rows = re.findall(rf"^(\S+) +({NUM}) +({NUM}) \| (mu|sigma) +" + " +".join([f"({NUM})"] * 6) + "$", out, re.M)
    assert len(rows) == 4 * 3 * 2
    for f, mu, sigma, param, *values in rows:
        mean_rep, mean_sf, var_rep, var_sf, ratio, _ = map(_number, values)
        # both estimators are unbiased: their means differ by Monte Carlo error only
        assert abs(mean_rep - mean_sf) < 5 * math.sqrt((var_rep + var_sf) / n), (f, mu, sigma, param)
        if f == "z^2":  # d/dmu E[z^2] = 2 mu, d/dsigma E[z^2] = 2 sigma
            exact = 2 * _number(mu if param == "mu" else sigma)
            assert abs(mean_rep - exact) < 5 * math.sqrt(var_rep / n)
    by_cell = {(f, _number(mu), _number(sigma), param): _number(v[4]) for f, mu, sigma, param, *v in rows}
    assert by_cell["z^2", 2.0, 1.0, "mu"] > 5  # reparameterization wins for a smooth f ...
    assert by_cell["sin(3z)", 0.0, 1.0, "mu"] < 1  # ... but not for a fast-oscillating one


def test_bench_gradvar(capsys):
    out = run_quick("bench_gradvar", capsys)
    rows = re.findall(rf"^ +(\d+)((?: +{NUM}){{6}})$", out, re.M)
    assert [int(b) for b, _ in rows] == [16, 256]
    assert all(_number(v) > 0 for _, values in rows for v in values.split())
    ratio = {mode: find(rf"^  {mode} +({NUM})$", out)[0] for mode in ("bbb", "lrt", "flipout")}
    assert ratio["lrt"] < 0.12 and ratio["flipout"] < 0.12  # per-example noise: the 1/B law (0.0625)
    assert ratio["bbb"] > 0.15  # one shared weight sample: a variance floor


@pytest.mark.skipif(not has_speechbrain(), reason="the peer is SpeechBrain's Xvector")
def test_bench_train_step(capsys):
    out = run_quick("bench_train_step", capsys)
    systems = ["speechbrain", "baseline", "bbb", "lrt", "flipout", "speechbrain_ecapa", "ecapa", "ecapa_bbb"]
    rows = dict(re.findall(rf"^({'|'.join(systems)}) +({NUM}) +{NUM}", out, re.M))
    assert sorted(rows) == sorted(systems)
    assert all(_number(ms) > 0 for ms in rows.values())
    ratio = find(rf"^ecapa +{NUM} +{NUM} +{NUM} +({NUM}) vs speechbrain_ecapa", out)[0]
    assert ratio == pytest.approx(_number(rows["ecapa"]) / _number(rows["speechbrain_ecapa"]), rel=0.05, abs=0.01)
    ecapa_ms, frames_per_s = find(rf"^ecapa +({NUM}) +{NUM} +({NUM}) ", out)
    assert frames_per_s == pytest.approx(4 * 50 / (ecapa_ms / 1e3), rel=0.05)  # --quick: batch 4 x 50 frames
    peer_ms, ours_ms, speedup, frames_per_s = find(rf"^1 +({NUM}) +({NUM}) +({NUM}) +({NUM})$", out)
    assert speedup == pytest.approx(peer_ms / ours_ms, rel=0.1)
    assert frames_per_s == pytest.approx(50 / (ours_ms / 1e3), rel=0.1)


def test_bench_features(capsys):
    out = run_quick("bench_features", capsys)
    rtf = [_number(r) for r in re.findall(rf"CMN \+ VAD.*? ({NUM})x", out)]
    assert len(rtf) == 2 and min(rtf) > 0
    if has_speechbrain():
        peer = [_number(r) for r in re.findall(rf"SpeechBrain \S+, raw +({NUM})x", out)]
        assert len(peer) == 2 and min(peer) > 0
    assert find(rf"per 10 s utterance .*: ({NUM}) ms", out)[0] > 0


@pytest.mark.skipif(not has_speechbrain(), reason="the peers are SpeechBrain's Xvector and ECAPA_TDNN")
@pytest.mark.parametrize("model, ours_name, peer_name", [("xvector", "xvector", "Xvector"),
                                                         ("ecapa", "ecapa_tdnn", r"ECAPA_TDNN \(C=32\)")])
def test_bench_extract(capsys, model, ours_name, peer_name):
    out = run_quick("bench_extract", capsys, "--model", model, "--ecapa-channels", "32")
    assert re.match(rf"model {ours_name}[ ;]", out)
    audio_s = find(rf"corpus: \d+ utterances, ({NUM}) s of audio", out)[0]
    secs, rtf = find(rf"end to end .*: ({NUM}) s, ({NUM})x real time", out)
    assert rtf == pytest.approx(audio_s / secs, rel=0.05, abs=1)
    ours = find(rf"spkver {ours_name} .*: ({NUM}) s, ({NUM})x real time", out)
    theirs = find(rf"SpeechBrain {peer_name} .*: ({NUM}) s, ({NUM})x real time", out)
    assert ours[0] > 0 and theirs[0] > 0
    assert find(rf"ratio spkver / SpeechBrain speed: ({NUM})x", out)[0] == pytest.approx(theirs[0] / ours[0],
                                                                                           rel=0.05, abs=0.01)


def test_bench_loader(capsys):
    out = run_quick("bench_loader", capsys)
    consumed = find(rf"consumed by training steps: ({NUM}) examples/s", out)[0]
    cached, cached_ratio = find(rf"loaded, cached features: +({NUM}) examples/s +\(ratio ({NUM})x\)", out)
    fly, fly_ratio = find(rf"loaded, on the fly \+ augm\.: +({NUM}) examples/s +\(ratio ({NUM})x\)", out)
    assert min(consumed, cached, fly) > 0
    assert cached_ratio == pytest.approx(cached / consumed, rel=0.1, abs=0.1)
    assert fly_ratio == pytest.approx(fly / consumed, rel=0.1, abs=0.1)
    so762 = find(rf"({NUM}) examples/s \(so762 baseline x-vector, 18 classes\)", out)[0]
    chain, chain_ratio = find(rf"loaded, no-download chain: +({NUM}) examples/s +\(ratio ({NUM})x", out)
    assert min(so762, chain) > 0 and chain_ratio == pytest.approx(chain / so762, rel=0.1, abs=0.1)


def test_bench_synthetic(capsys):
    out = run_quick("bench_synthetic", capsys)
    audio = {}
    for name in ("train", "eval_wide", "eval_tel", "total"):
        audio[name], rtf = find(rf"^  {name} .*?({NUM}) s audio .*real-time factor +({NUM})x \(cpu\)", out)
        assert audio[name] > 0 and rtf > 0
    assert audio["total"] == pytest.approx(audio["train"] + audio["eval_wide"] + audio["eval_tel"], abs=0.2)
    assert audio["eval_wide"] == audio["eval_tel"]  # the same utterances through two channels
    n_tar, n_non = find(rf"trials: ({NUM}) target, ({NUM}) non-target", out)
    assert n_non == 20 * n_tar
    wide = find(rf"synthetic wide +({NUM}) +({NUM})$", out)
    tel = find(rf"synthetic tel +({NUM}) +({NUM})$", out)
    assert wide[0] < 40  # speakers of the synthetic corpus are told apart by their mean spectrum
    assert find(rf"ratio tel / wide: cosine ({NUM})", out)[0] == pytest.approx(tel[0] / wide[0], abs=0.01)


def test_bench_verify(capsys):
    out = run_quick("bench_verify", capsys)
    audio_s = find(rf"\(({NUM}) s per trial\)", out)[0]
    cli_s, cli_llr = find(rf"^  torch runtime: ({NUM}) s \(LLR ({NUM})\)", out)
    api_ms, rtf, api_llr = find(rf"^  spkver score \(torch\): ({NUM}) ms, ({NUM})x real time \(LLR ({NUM})\); target",
                                out)
    assert cli_s > 0 and api_ms > 0
    assert rtf == pytest.approx(audio_s / (api_ms / 1000), rel=0.05, abs=1)
    assert cli_llr == pytest.approx(api_llr, abs=1e-3)  # the command line and the API give the same answer
    assert re.search(r"target >= 300x: (met|NOT met)", out)
    net_line = rf"^  torch Embedder: ({NUM}) ms"
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        onnx_s, onnx_llr, ratio = find(rf"^  onnx runtime: +({NUM}) s \(LLR ({NUM})\); ratio torch / onnx time: "
                                       rf"({NUM})x", out)
        assert onnx_s > 0 and ratio == pytest.approx(cli_s / onnx_s, rel=0.05, abs=0.01)
        assert onnx_llr == pytest.approx(cli_llr, abs=1e-3)
        assert find(rf"^  spkver score \(onnx\): +({NUM}) ms", out)[0] > 0
        torch_ms, onnx_ms, diff = find(net_line + rf"; onnxruntime OnnxEmbedder: ({NUM}) ms; .*max \|diff\| = ({NUM})",
                                       out)
        assert onnx_ms > 0 and diff < 1e-4  # the exported network gives torch's embeddings
    else:
        torch_ms = find(net_line, out)[0]
    assert torch_ms > 0
    if has_speechbrain():
        sb_ms, sb_rtf, _, ratio = find(rf"^  SpeechBrain verify_files: ({NUM}) ms, ({NUM})x real time; spkver score "
                                       rf"\(torch\) ({NUM}) ms: ratio SpeechBrain / spkver time ({NUM})x", out)
        assert sb_ms > 0 and sb_rtf > 0
        assert ratio == pytest.approx(sb_ms / api_ms, rel=0.05, abs=0.01)


@pytest.mark.skipif(not has_speechbrain(), reason="speechbrain is not installed")
def test_verify_benchmark_peer_has_the_systems_architecture(tmp_path):
    """The SpeechBrain peer folder of bench_verify builds the extractor's own network: an ECAPA-TDNN's
    ``embedding_model`` (SpeechBrain's class) and an x-vector's layer widths, with the same parameter count."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from spkver.nn.tdnn import build_model

    spec = importlib.util.spec_from_file_location("benchmark_bench_verify", BENCHMARKS / "bench_verify.py")
    bench_verify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_verify)

    ecapa = build_model("ecapa_tdnn", feat_dim=20, num_classes=5, channels=16, attention_channels=8, embed_dim=12)
    xvector = build_model("xvector", feat_dim=20, num_classes=5, channels=24, stats_channels=48, embed_dim=12)
    for name, model, ours in (("ecapa", ecapa, ecapa.embedding_model), ("xvector", xvector, None)):
        folder = bench_verify.speechbrain_folder(tmp_path / name, 20, model)
        with open(folder / "hyperparams.yaml", encoding="utf-8") as fh:
            net = load_hyperpyyaml(fh)["embedding_model"]
        n_params = sum(p.numel() for p in net.parameters())
        if ours is not None:
            assert type(net) is type(ours) and n_params == sum(p.numel() for p in ours.parameters())
            net.load_state_dict(ours.state_dict())  # the same layers, shape for shape
        else:
            assert type(net).__name__ == "Xvector" and net(torch.zeros(1, 50, 20)).shape[-1] == 12
        assert (folder / "embedding_model.ckpt").is_file()
    assert "ECAPA-TDNN, channels [16, 16, 16, 16, 48]" in bench_verify.describe(ecapa)
    assert "x-vector, 24 channels, 48 statistics channels" in bench_verify.describe(xvector)


def test_gpu_script_runs_every_measurement_on_cpu():
    """benchmarks/gpu.sh (the one script of GPU figures) runs end to end with DEVICE=cpu --quick."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DEVICE="cpu", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--quick"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "device cpu" in out and "autocast bf16" in out
    assert find(rf"^ecapa_bbb +{NUM} +{NUM} +({NUM}) ", out)[0] > 0
    for name in ("xvector", "ecapa_tdnn"):
        assert find(rf"spkver {name} \(embedding path.*, ({NUM}) frames/s", out)[0] > 0
    bad = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--fast"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr

