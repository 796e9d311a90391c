"""Shared pytest set-up: one torch thread per process, deterministic seeds, a headless backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Tests that forget to pass a generator still run deterministically."""
    torch.manual_seed(0)
    yield
