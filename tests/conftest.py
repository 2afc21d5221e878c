"""Test-wide settings: tiny tensors run fastest on one thread (no oversubscription on small CI machines)."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses some tests start


@pytest.fixture(autouse=True)
def _single_thread():
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    yield
