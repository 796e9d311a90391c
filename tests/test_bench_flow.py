"""Tests of the benchmark ``flow-8gaussians`` through its command line (python -m gmcourse.bench)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from gmcourse.bench.__main__ import main
from gmcourse.bench.flow_8gaussians import learning_rate, score, CONFIG

SCORES = ("nll_nats", "nll_stderr", "entropy_nats", "entropy_stderr", "kl_nats", "kl_stderr")


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "gmcourse.bench", "flow-8gaussians", "--seconds", "3", *args],
                               capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got {completed.stdout!r}"
    return json.loads(lines[0]), completed.stderr


def check_scores(result):
    for key in SCORES:
        assert math.isfinite(result[key]), f"{key} = {result[key]}"
    assert abs(result["kl_nats"] - (result["nll_nats"] - result["entropy_nats"])) < 1e-9
    # the KL's error bar comes from the paired differences log p - log q on the same fresh points;
    # it is smaller than the NLL's only once the flow is close to the data (not after 3 s)
    assert result["kl_stderr"] > 0 and result["nll_stderr"] > 0
    assert result["kl_nats"] > -5 * result["kl_stderr"]  # a KL, up to its Monte Carlo error


@pytest.mark.slow
def test_short_run_prints_valid_json_and_saves_a_loadable_model(tmp_path):
    path = tmp_path / "flow.pt"
    result, stderr = run_cli("--seed", "1", "--save", str(path))
    assert result["task"] == "flow-8gaussians" and result["seed"] == 1
    check_scores(result)
    assert 0 < result["seconds"] < 3 + 1 and result["steps"] > 0 and result["n_params"] > 0
    assert "RealNVP" in stderr  # the progress bar
    # entropy of 8 separated Gaussians: log 8 + log(2 pi e sigma^2), within 5 standard errors
    assert abs(result["entropy_nats"] - (math.log(8) + math.log(2 * math.pi * math.e * 0.01))) < 5 * result["entropy_stderr"]

    model = torch.load(path, weights_only=False)
    x = torch.randn(100, 2)
    assert model.log_prob(x).shape == (100,) and torch.isfinite(model.log_prob(x)).all()
    rescored = score(model.log_prob, seed=1)  # the saved model is the one that was scored
    assert abs(rescored["nll_nats"] - result["nll_nats"]) < 1e-9


@pytest.mark.slow
def test_short_run_with_zuko_peer_reports_both_side_by_side():
    result, _ = run_cli("--seed", "2", "--peer", "zuko", "--no-progress")
    check_scores(result)
    peer = result["peer"]
    assert peer["library"] == "zuko"
    check_scores(peer)
    assert peer["entropy_nats"] == result["entropy_nats"]  # scored on the same points
    assert peer["n_params"] == result["n_params"]  # a flow of the same size
    assert 0 < peer["seconds"] < 3 + 1 and peer["steps"] > 0


def test_unknown_peer_exits_with_code_2_and_a_message(capsys):
    assert main(["flow-8gaussians", "--seconds", "1", "--peer", "normflows"]) == 2
    captured = capsys.readouterr()
    assert "unknown peer 'normflows'" in captured.err and "zuko" in captured.err
    assert captured.out == ""


def test_learning_rate_warms_up_then_decays_to_the_floor():
    peak, warmup = CONFIG.lr, CONFIG.warmup_fraction
    assert learning_rate(0.0, CONFIG) == 0.0
    assert learning_rate(warmup / 2, CONFIG) == pytest.approx(peak / 2)
    assert learning_rate(warmup, CONFIG) == pytest.approx(peak)
    assert learning_rate(1.0, CONFIG) == pytest.approx(peak * CONFIG.final_lr_fraction)
    values = [learning_rate(f / 100, CONFIG) for f in range(round(100 * warmup), 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
