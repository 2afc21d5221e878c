"""Two-process DDP training (gloo on CPU, as under torchrun): the ranks' parameters stay identical."""

import os
import socket

import torch
import torch.multiprocessing as mp

from spkver.checkpoint import load_checkpoint
from spkver.data.synthetic.corpus import make_corpus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data_dir: str, exp_dir: str, out_dir: str) -> None:
    """One torchrun-like process: train, then save this rank's parameters for the parent to compare."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import spkver.train as T
    from spkver.distributed import teardown
    from test_train import tiny_config

    models = []
    original = T._train_epoch

    def spy(net, model, *args, **kwargs):
        models.append(model)
        return original(net, model, *args, **kwargs)

    T._train_epoch = spy
    cfg = tiny_config(epochs=1, name="bayes_xvector", examples=64, batch=8, sampling="flipout")
    result = T.train(cfg, data_dir, exp_dir, progress=False)
    torch.save({"result": None if result is None else str(result),
                "params": {k: v.detach().clone() for k, v in models[0].named_parameters()}},
               os.path.join(out_dir, f"rank{rank}.pt"))
    teardown()


def test_two_process_gloo_run_keeps_replicas_identical(tmp_path):
    data = make_corpus(tmp_path / "train", n_speakers=4, sessions_per_speaker=1, utts_per_session=3,
                       min_seconds=1.5, max_seconds=2.0, seed=1)
    mp.spawn(_worker, args=(2, _free_port(), str(data.path), str(tmp_path / "exp"), str(tmp_path)), nprocs=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["result"] == str(tmp_path / "exp" / "final.pt") and r1["result"] is None
    assert r0["params"].keys() == r1["params"].keys()
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    saved = load_checkpoint(tmp_path / "exp")
    assert saved["step"] == 4  # 64 examples / (8 per rank * 2 ranks)
    assert all(torch.equal(saved["model_state"][k], v) for k, v in r0["params"].items())


def _extract_worker(rank: int, world_size: int, port: int, model: str, files: list, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from spkver.distributed import teardown
    from spkver.extract import extract

    extract(model, out, files=files, num_workers=0, batch_frames=200)
    teardown()


def test_sharded_extraction_matches_a_single_process(tmp_path):
    from scoring.io import read_embeddings
    from spkver.extract import extract
    from test_extract import _checkpoint

    data = make_corpus(tmp_path / "data", n_speakers=2, sessions_per_speaker=1, utts_per_session=3,
                       min_seconds=1.0, max_seconds=2.5, seed=3)
    files = [data.resolve(u) for u in data.utts]
    model = str(_checkpoint(tmp_path / "m.pt"))
    extract(model, tmp_path / "single.npz", files=files, num_workers=0)
    mp.spawn(_extract_worker, args=(2, _free_port(), model, files, str(tmp_path / "sharded.npz")), nprocs=2)
    single, sharded = read_embeddings(tmp_path / "single.npz"), read_embeddings(tmp_path / "sharded.npz")
    assert list(single.ids) == list(sharded.ids)
    torch.testing.assert_close(torch.from_numpy(sharded.vectors), torch.from_numpy(single.vectors),
                               rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "sharded.npz.partial").exists()
