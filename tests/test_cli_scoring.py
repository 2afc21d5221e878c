"""`spkver score` and `spkver eval` end to end on generated embeddings, without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scoring.io import read_scores, write_embeddings
from spkver.cli import main


def _make_set(tmp_path, n_spk=12, per_spk=6, dim=16, seed=0):
    """Embeddings of n_spk speakers (speaker mean + noise), utt2spk and a Kaldi trial list over all pairs."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_spk, dim))
    ids, vecs, spk = [], [], []
    for s in range(n_spk):
        for u in range(per_spk):
            ids.append(f"spk{s:02d}-u{u}")
            spk.append(f"spk{s:02d}")
            vecs.append(means[s] + 0.8 * rng.normal(size=dim))
    emb = tmp_path / "emb.npz"
    write_embeddings(emb, ids, np.asarray(vecs, dtype=np.float32))
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{u} {s}\n" for u, s in zip(ids, spk)))
    trials = tmp_path / "trials"
    lines = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids), 3):
            lines.append(f"{ids[i]} {ids[j]} {'target' if spk[i] == spk[j] else 'nontarget'}\n")
    trials.write_text("".join(lines))
    return emb, utt2spk, trials


def test_score_and_eval_cosine_plda_fusion(tmp_path, capsys):
    emb, utt2spk, trials = _make_set(tmp_path)
    cos, plda = tmp_path / "cos.scores", tmp_path / "plda.scores"
    assert main(["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
                 "--backend", "cosine", "--out", str(cos)]) == 0
    assert main(["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
                 "--backend", "plda", "--train", str(emb), "--utt2spk", str(utt2spk), "--lda-dim", "8",
                 "--save-plda", str(tmp_path / "plda.npz"), "--out", str(plda)]) == 0
    enroll, test, scores = read_scores(cos)
    assert len(scores) == len(trials.read_text().splitlines())
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    out_json = tmp_path / "res.json"
    det = tmp_path / "det.png"
    assert main(["eval", "--trials", str(trials), "--scores", str(cos), str(plda), "--names", "cos", "plda",
                 "--fuse", "--fuse-cv", "2", "--json", str(out_json), "--det", str(det)]) == 0
    table = capsys.readouterr().out
    assert "cos" in table and "plda" in table and "fusion" in table
    systems = json.loads(out_json.read_text())["systems"]
    assert [s["name"] for s in systems] == ["cos", "plda", "fusion"]
    from scoring import io, metrics
    labels = io.read_trials(trials).label == 1
    for s, path in zip(systems, (cos, plda)):
        x = io.align_scores(io.read_trials(trials), path)
        assert s["eer"] == pytest.approx(100 * metrics.eer(x[labels], x[~labels]))
        assert s["eer_rocch"] == pytest.approx(100 * metrics.eer_rocch(x[labels], x[~labels]))
        assert s["min_dcf"]["0.001"] == pytest.approx(metrics.min_dcf(x[labels], x[~labels], 0.001))
    assert set(systems[2]) >= {"act_dcf", "cllr", "min_cllr"}  # the fusion outputs LLRs
    assert det.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_with_snorm_and_plda_model_reuse(tmp_path):
    emb, utt2spk, trials = _make_set(tmp_path)
    model = tmp_path / "plda.npz"
    first, second = tmp_path / "a.scores", tmp_path / "b.scores"
    base = ["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb), "--backend", "plda"]
    assert main(base + ["--train", str(emb), "--utt2spk", str(utt2spk), "--save-plda", str(model),
                        "--out", str(first)]) == 0
    assert main(base + ["--plda", str(model), "--out", str(second)]) == 0
    np.testing.assert_allclose(read_scores(first)[2], read_scores(second)[2], rtol=1e-5, atol=1e-5)
    normed = tmp_path / "as.scores"
    assert main(base + ["--plda", str(model), "--norm", "asnorm", "--cohort", str(emb), "--top-k", "20",
                        "--out", str(normed)]) == 0
    # trial 0 by hand: the PLDA scores of each side against the cohort, top 20 of each, symmetric AS-norm
    from scoring.io import read_embeddings, read_trials
    from scoring.plda import PLDA

    plda, e = PLDA.load(model), read_embeddings(emb)
    t = read_trials(trials)
    raw = read_scores(second)[2][0]
    sides = []
    for side in (t.enroll[0], t.test[0]):
        x = e.vectors[e.index([side])]
        top = np.sort(plda.score_matrix(x, e.vectors)[0])[-20:]
        sides.append((raw - top.mean()) / top.std())
    assert read_scores(normed)[2][0] == pytest.approx(0.5 * sum(sides), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--backend", "plda"], "--plda MODEL"),
    (["--norm", "snorm"], "--cohort"),
])
def test_score_argument_errors(tmp_path, capsys, extra, message):
    emb, _, trials = _make_set(tmp_path)
    rc = main(["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
               "--out", str(tmp_path / "s")] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_eval_names_the_trial_without_score(tmp_path, capsys):
    emb, _, trials = _make_set(tmp_path)
    scores = tmp_path / "s"
    assert main(["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
                 "--out", str(scores)]) == 0
    lines = scores.read_text().splitlines()
    scores.write_text("\n".join(lines[1:]) + "\n")
    first = lines[0].split()
    assert main(["eval", "--trials", str(trials), "--scores", str(scores)]) == 2
    err = capsys.readouterr().err
    assert first[0] in err and first[1] in err


def test_eval_fusion_needs_disjoint_training_set(tmp_path, capsys):
    emb, _, trials = _make_set(tmp_path)
    scores = tmp_path / "s"
    assert main(["score", "--trials", str(trials), "--enroll", str(emb), "--test", str(emb),
                 "--out", str(scores)]) == 0
    assert main(["eval", "--trials", str(trials), "--scores", str(scores), str(scores), "--names", "a", "b",
                 "--fuse"]) == 2
    assert "--fuse-trials" in capsys.readouterr().err


def test_score_and_eval_do_not_import_torch(tmp_path):
    emb, _, trials = _make_set(tmp_path)
    code = (
        "import sys\n"
        "from spkver.cli import main\n"
        f"assert main(['score', '--trials', {str(trials)!r}, '--enroll', {str(emb)!r}, '--test', {str(emb)!r},"
        f" '--out', {str(tmp_path / 's')!r}]) == 0\n"
        f"assert main(['eval', '--trials', {str(trials)!r}, '--scores', {str(tmp_path / 's')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import scoring.metrics, scoring.plda, scoring.fusion, scoring.norm, scoring.report, scoring.pipeline\n"
        "assert 'torch' not in sys.modules, 'torch was imported by scoring'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
