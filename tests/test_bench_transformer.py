"""Tests of the ``ising-transformer`` and ``tfim-transformer`` benchmarks: short runs with a small
network, their fields, and the saved models checked against independent computations (exact
probabilities of the Ising model and of the TFIM ground state, the symmetries, the fidelity
written out); the ``--set`` options and the tables."""

import json
import math
import subprocess
import sys
import os

import pytest
import torch

from gmcourse.bench import ising_transformer, tfim_transformer
from gmcourse.ising import IsingModel
from gmcourse.quantum import tfim_ground_state

SMALL = {"d_model": "8", "n_heads": "2", "n_layers": "1", "n_hidden": "16"}
ISING = IsingModel(4, 1 / 2.269)


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ising_transformer") / "model.pt"
    result = ising_transformer.run(1.0, 0, save=path, progress=False, overrides=SMALL)
    return result, torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def tfim_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfim_transformer") / "model.pt"
    result = tfim_transformer.run(1.5, 0, save=path, progress=False, overrides={**SMALL, "eval_every": "0.5"})
    return result, torch.load(path, weights_only=False)


def test_ising_transformer_reports_exact_scores_of_the_saved_model(ising_run):
    result, model = ising_run
    for key in ("kl_nats", "kl_base_nats", "kl_initial_nats", "train_nll", "test_nll", "test_nll_truth", "seconds"):
        assert math.isfinite(result[key]), key
    assert result["steps"] > 0 and result["group_size"] == 256 and result["val_nll"] is None
    assert result["config"]["d_model"] == 8 and result["n_params"] == sum(p.numel() for p in model.base.parameters())
    states = ISING.all_states().flatten(1)  # (65536, 16), numbered like ISING.probabilities()
    with torch.no_grad():
        log_q = model.log_prob(states.float()).double()
    torch.testing.assert_close(log_q.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-4, rtol=0)
    p = ISING.probabilities()
    kl = float((p * (p.log() - log_q)).sum())
    assert kl == pytest.approx(result["kl_nats"], abs=1e-4)
    assert 0 <= result["kl_nats"] < result["kl_initial_nats"]
    json.dumps(result)  # one JSON line


def test_tfim_transformer_reports_the_exact_fidelity_and_kl_of_the_saved_model(tfim_run):
    result, model = tfim_run
    state = tfim_ground_state(10)
    states = state.all_states()  # (1024, 10)
    with torch.no_grad():
        q = model.log_prob(states.float()).double().exp()
    torch.testing.assert_close(q.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
    p = state.probabilities()
    overlap = float((p * q).sqrt().sum())
    assert result["fidelity"] == pytest.approx(overlap ** 2, abs=1e-5)
    assert result["kl_nats"] == pytest.approx(float((p * (p.log() - q.log())).sum()), abs=1e-5)
    assert 0 <= result["fidelity"] <= 1 and result["kl_nats"] >= 0
    # the scored model is exactly invariant under the chain's reversal and the global flip
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(states.float()), model.log_prob(-states.flip(1).float()))
    trace = result["kl_trace"]
    assert trace[0] == {"seconds": 0.0, "kl_nats": result["kl_initial_nats"]} and len(trace) >= 3
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(trace, trace[1:]))
    assert trace[-1]["kl_nats"] == result["kl_nats"]
    json.dumps(result)


def test_tfim_transformer_takes_the_chain_length_and_refuses_bad_options():
    with pytest.raises(ValueError, match="n_spins must be between 2 and 16"):
        tfim_transformer.run(1.0, 0, progress=False, overrides={"n_spins": "20"})
    with pytest.raises(ValueError, match="unknown option"):
        tfim_transformer.run(1.0, 0, progress=False, overrides={"hidden": "3"})
    with pytest.raises(ValueError, match="no peer"):
        ising_transformer.run(1.0, 0, peer="zuko", progress=False)
    result = tfim_transformer.run(0.3, 1, progress=False, overrides={**SMALL, "n_spins": "6"})
    assert result["n_spins"] == 6 and 0 <= result["fidelity"] <= 1


def test_the_command_line_runs_the_tasks_and_the_tables_show_them(ising_run, tfim_run):
    completed = subprocess.run(
        [sys.executable, "-m", "gmcourse.bench", "tfim-transformer", "--seconds", "0.3", "--no-progress",
         *[arg for name, value in SMALL.items() for arg in ("--set", f"{name}={value}")], "--set", "n_spins=4"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert completed.returncode == 0, completed.stderr
    line = json.loads(completed.stdout)
    assert line["task"] == "tfim-transformer" and line["n_spins"] == 4
    frame = tfim_transformer.table([{**tfim_run[0], "seed": 0}, {**line, "seed": 0}])
    assert list(frame["N"]) == [10, 4] and "fidelity" in frame
    frame = ising_transformer.table([{**ising_run[0], "seed": 0}])
    assert frame["KL (nats)"][0] == ising_run[0]["kl_nats"]
