"""Shared pytest set-up: one torch thread per process, deterministic seeds."""



import pytest
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Tests that forget to pass a generator still run deterministically."""
    torch.manual_seed(0)
    yield
