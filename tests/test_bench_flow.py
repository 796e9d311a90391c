"""Tests of the benchmark ``flow-8gaussians``.

* the score, against models whose KL from the eight Gaussians is known: the standard normal (in
  closed form) and mixtures with wider or shifted modes (by quadrature on a grid, checked against
  the closed form of well-separated components); its error bar against the spread over seeds;
* training: a short run must beat the untrained flow by a margin set by the scores' error bars
  (so a learning rate of 0 or a flipped loss sign fails);
* ``--set`` overrides, the table of recorded runs, and the command line with ``--peer zuko``.

Tolerances are 5 standard errors of the quantity compared, derived where each test uses them.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from gmcourse.bench.__main__ import main
from gmcourse.bench.flow_8gaussians import CONFIG, run, score, table
from gmcourse.flows import standard_normal_log_prob
from gmcourse.results import benchmark_table
from gmcourse.toys import EightGaussians

RADIUS, STD = 2.0, 0.1
# Neighbouring centres are 2 r sin(pi/8) = 15.3 std apart, so the components do not overlap (the
# density of one at the next centre is e^{-117} of its peak) and H(p) = log 8 + log(2 pi e std^2).
ENTROPY = math.log(8) + math.log(2 * math.pi * math.e * STD**2)
# A small flow, so that a run of two seconds takes hundreds of steps even on a loaded machine.
SMALL = {"n_layers": "4", "hidden": "32", "batch_size": "256"}


def within(estimate, exact, stderr, sigmas=5.0):
    return abs(estimate - exact) < sigmas * stderr


# ----------------------------------------------------------------------------- the score

def test_score_of_the_standard_normal_matches_its_closed_form_kl():
    """KL(p || N(0, I)) = E_p[|x|^2 / 2] + log(2 pi) - H(p), with E_p|x|^2 = r^2 + 2 std^2.

    The untrained (identity-initialised) flow is exactly this standard normal."""
    result = score(standard_normal_log_prob, seed=0)
    cross_entropy = (RADIUS**2 + 2 * STD**2) / 2 + math.log(2 * math.pi)
    assert within(result["entropy_nats"], ENTROPY, result["entropy_stderr"])
    assert within(result["nll_nats"], cross_entropy, result["nll_stderr"])
    assert within(result["kl_nats"], cross_entropy - ENTROPY, result["kl_stderr"])
    assert result["kl_stderr"] < 0.01  # 50,000 points: the check above is a sharp one


def quadrature_kl(p, q, half_width=2.8, h=0.01):
    """KL(p || q) = sum over a grid of p log(p / q) h^2 (midpoint rule, float64).

    The modes have std 0.1 = 10 h: for a Gaussian (times a smooth factor) the lattice sum errs by
    about exp(-2 pi^2 std^2 / h^2) = e^{-1974}; the box reaches 8 std beyond every centre, so the
    mass of p outside it is below e^{-32}."""
    axis = -half_width + h * (torch.arange(round(2 * half_width / h), dtype=torch.float64) + 0.5)
    grid = torch.cartesian_prod(axis, axis)  # (cells, 2)
    log_p, log_q = p.log_prob(grid), q.log_prob(grid)
    return float((log_p.exp() * (log_p - log_q)).sum() * h**2)


@pytest.mark.parametrize("model, closed_form", [
    # same centres, std 0.13: per component (D = 2) KL = (D/2)(v - 1 - log v), v = (0.1 / 0.13)^2
    (EightGaussians(RADIUS, 0.13), (0.1 / 0.13) ** 2 - 1 - math.log((0.1 / 0.13) ** 2)),
    # centres moved out by 0.05: per component KL = |shift|^2 / (2 std^2) = 0.125
    (EightGaussians(RADIUS + 0.05, STD), 0.05**2 / (2 * STD**2)),
])
def test_score_of_a_mixture_matches_the_kl_by_quadrature(model, closed_form):
    data = EightGaussians(RADIUS, STD)
    exact = quadrature_kl(data, model)
    assert abs(exact - closed_form) < 1e-6  # the quadrature is right (components do not overlap)
    result = score(model.log_prob, seed=1)
    assert within(result["kl_nats"], exact, result["kl_stderr"]), (result["kl_nats"], exact, result["kl_stderr"])
    assert abs(result["kl_nats"] - (result["nll_nats"] - result["entropy_nats"])) < 1e-9  # KL = NLL - H(p)


def test_score_error_bar_matches_the_spread_over_seeds():
    """K = 200 independent scores of 2,000 points each. Their KL estimates are (CLT) normal, so
    the sample variance s^2 over seeds has relative standard deviation sqrt(2 / (K - 1)) = 0.1 around
    the true variance; the mean squared reported error bar is far more precise. Five of those
    standard deviations: |s^2 / mean(stderr^2) - 1| < 0.5. A wrong error bar (no square root, n
    instead of sqrt(n), the NLL's spread instead of the paired difference's) is off by 10x or more."""
    model = EightGaussians(RADIUS, 0.13)
    results = [score(model.log_prob, seed=seed, n=2000) for seed in range(200)]
    kls = torch.tensor([r["kl_nats"] for r in results], dtype=torch.float64)
    reported = torch.tensor([r["kl_stderr"] for r in results], dtype=torch.float64)
    ratio = kls.var(correction=1) / (reported**2).mean()
    assert abs(ratio.item() - 1) < 5 * math.sqrt(2 / (len(results) - 1)), ratio.item()


def test_a_model_with_an_infinite_log_density_has_no_finite_kl():
    result = score(lambda x: torch.where(x[:, 0] > 0, standard_normal_log_prob(x), -math.inf), seed=0)
    assert result["kl_nats"] is None and result["nll_nats"] is None and result["non_finite_log_prob"] > 0
    assert within(result["entropy_nats"], ENTROPY, result["entropy_stderr"])


# ----------------------------------------------------------------------------- training

def test_a_short_run_beats_the_untrained_flow():
    """Ours and the untrained flow are scored on the same points, so the error of their difference
    is at most the root sum of squares of the two error bars (the common fluctuation cancels); a
    learning rate of 0 (no change) or a flipped loss sign (the KL grows) fails by 5 of those."""
    budget = 2.0
    result = run(budget, seed=0, progress=False, overrides=SMALL)
    untrained = score(standard_normal_log_prob, seed=0)  # identity initialisation: exactly N(0, I)
    assert result["untrained_kl_nats"] == pytest.approx(untrained["kl_nats"], abs=1e-5)  # float32 vs float64
    margin = 5 * math.hypot(result["kl_stderr"], untrained["kl_stderr"])
    assert result["kl_nats"] < untrained["kl_nats"] - margin, (result["kl_nats"], untrained["kl_nats"], result["steps"])
    assert result["steps"] > 0 and budget <= result["seconds"] < 3 * budget
    # the zoo's common fields: NLL - H is the exact KL; the sample scores of every 8-Gaussians task
    assert result["likelihood_kind"] == "exact"
    assert (result["nll_minus_entropy"], result["nll_minus_entropy_stderr"]) == (result["kl_nats"], result["kl_stderr"])
    assert result["n_modes"] == 8 and 0 <= result["modes_covered"] <= 8 and 0 <= result["high_quality_fraction"] <= 1
    assert result["mmd2_stderr"] > 0 and result["mmd2"] > -5 * result["mmd2_stderr"]  # MMD^2 >= 0 within its error


def test_common_sample_fields_are_the_scores_of_the_flows_samples():
    """common_fields scores model.sample with ddpm_8gaussians.evaluate: a "flow" that samples the data
    itself (a toy with the flow's sample signature) is at the floor, MMD^2 = 0 within 5 standard
    errors and all eight modes covered; its exact KL is passed through as nll_minus_entropy."""
    from gmcourse.bench.flow_8gaussians import common_fields

    fields = common_fields(EightGaussians(), {"kl_nats": 0.0, "kl_stderr": 0.0}, seed=3)
    assert abs(fields["mmd2"]) < 5 * fields["mmd2_stderr"] and fields["modes_covered"] == fields["n_modes"] == 8
    assert fields["nll_minus_entropy"] == 0.0 and fields["likelihood_kind"] == "exact"
    # a ring 3 std too wide (as in tests/test_bench_ddpm.py): rejected, and fewer samples near a mode
    wider = common_fields(EightGaussians(RADIUS + 0.3, STD), {"kl_nats": 1.0, "kl_stderr": 0.01}, seed=3)
    assert wider["mmd2"] > 5 * wider["mmd2_stderr"] and wider["high_quality_fraction"] < fields["high_quality_fraction"]


def test_overrides_change_the_configuration_and_are_recorded():
    result = run(0.3, seed=0, progress=False,
                 overrides={"n_layers": "2", "hidden": "8", "lr_schedule": "constant", "log_scale_bound": "none"})
    # two couplings, each 1 -> 8 -> 8 -> 2 (s and t of the moved coordinate): (8 + 8) + (64 + 8) + (16 + 2)
    assert result["n_params"] == 2 * 106
    assert result["config"]["log_scale_bound"] is None and result["config"]["lr_schedule"] == "constant"
    assert result["recipe"]["lr_schedule"] == "constant" and result["recipe"]["lr"] == CONFIG.lr


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": "1"}, r"unknown option\(s\) \['learning_rate'\]"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
    ({"activation": "sigmoid"}, "activation must be one of"),
    ({"n_layers": "0"}, "n_layers must be >= 1"),
])
def test_bad_overrides_get_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        run(0.1, seed=0, progress=False, overrides=overrides)


def test_unknown_peer_exits_with_code_2_and_a_message(capsys):
    assert main(["flow-8gaussians", "--seconds", "1", "--peer", "normflows"]) == 2
    captured = capsys.readouterr()
    assert "unknown peer 'normflows'" in captured.err and "zuko" in captured.err
    assert captured.out == ""


# ----------------------------------------------------------------------------- the table

def record(seed, kl, config=None, peers=None):
    config = {**{"n_layers": 24, "hidden": 48}, **(config or {})}
    return {"task": "flow-8gaussians", "seed": seed, "seconds_budget": 60.0, "kl_nats": kl, "kl_stderr": 0.0012,
            "steps": 1000, "config": {**vars(CONFIG), **config}, **({"peers": peers} if peers else {})}


def test_table_shows_settings_scores_and_peers():
    peers = {"zuko_same_recipe": {"kl_nats": 0.5, "kl_stderr": 0.004, "steps": 900},
             "zuko_default": {"kl_nats": None, "kl_stderr": None, "non_finite_log_prob": 3, "steps": 5000}}
    frame = table([record(0, 0.0612, peers=peers),
                   record(1, 0.25, config={"lr_schedule": "constant", "grad_clip": None})])
    assert list(frame["settings"]) == ["default", "lr_schedule=constant, grad_clip=None"]
    assert list(frame["KL (nats)"]) == ["0.061 ± 0.001", "0.250 ± 0.001"]
    assert list(frame["seed"]) == [0, 1] and list(frame["budget (s)"]) == [60.0, 60.0]
    assert frame["zuko_same_recipe KL (nats)"][0] == "0.500 ± 0.004"
    assert frame["zuko_default KL (nats)"][0] == "diverged (3 non-finite log-densities)"
    assert frame["zuko_default steps"][0] == 5000 and frame["steps"][0] == 1000
    assert frame["zuko_same_recipe steps"][1] == "" == frame["zuko_default KL (nats)"][1]  # no peers: blank


def test_table_calls_a_finite_but_huge_kl_diverged():
    frame = table([record(0, 8.6e31)])
    assert list(frame["KL (nats)"]) == ["diverged (KL 8.6e+31)"]


# ----------------------------------------------------------------------------- command line

def run_cli(*args, seconds="3"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "gmcourse.bench", "flow-8gaussians", "--seconds", seconds,
                                *args], capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got {completed.stdout!r}"
    return json.loads(lines[0]), completed.stderr


def check_trained(report, budget):
    """Finite scores, and better than its own initialisation by 5 error bars of the difference."""
    for key in ("nll_nats", "kl_nats", "kl_stderr", "untrained_kl_nats"):
        assert math.isfinite(report[key]), f"{key} = {report[key]}"
    margin = 5 * math.hypot(report["kl_stderr"], report["untrained_kl_stderr"])
    assert report["kl_nats"] < report["untrained_kl_nats"] - margin, report
    assert report["steps"] > 0 and budget <= report["seconds"] < 3 * budget


@pytest.mark.slow
def test_cli_run_with_zuko_peers_trains_all_three_on_the_same_terms(tmp_path):
    path, records = tmp_path / "flow.pt", tmp_path / "runs.jsonl"
    small = [option for name, value in SMALL.items() for option in ("--set", f"{name}={value}")]
    result, stderr = run_cli("--seed", "1", "--save", str(path), "--peer", "zuko", "--record", str(records), *small)
    assert result["task"] == "flow-8gaussians" and result["seed"] == 1 and "RealNVP" in stderr  # progress bar
    assert within(result["entropy_nats"], ENTROPY, result["entropy_stderr"])
    check_trained(result, 3.0)
    assert set(result["peers"]) == {"zuko_same_recipe", "zuko_default"}
    same, default = result["peers"]["zuko_same_recipe"], result["peers"]["zuko_default"]
    for peer in (same, default):
        check_trained(peer, 3.0)
        assert peer["entropy_nats"] == result["entropy_nats"]  # scored on the same points
    # same size as ours: 4 couplings of 1 -> 32 -> 32 -> 2 units
    assert same["n_params"] == result["n_params"] == 4 * ((32 + 32) + (32 * 32 + 32) + (32 * 2 + 2))
    assert same["architecture"] == {"transforms": 4, "hidden_features": [32, 32], "activation": ["ReLU"]}
    assert same["recipe"] == result["recipe"]
    # zuko.flows.RealNVP(2) as documented: 3 couplings of 1 -> 64 -> 64 -> 2, Adam 1e-3 constant, batch 64
    assert default["architecture"] == {"transforms": 3, "hidden_features": [64, 64], "activation": ["ReLU"]}
    assert default["n_params"] == 3 * ((64 + 64) + (64 * 64 + 64) + (64 * 2 + 2))
    assert (default["recipe"]["lr"], default["recipe"]["lr_schedule"], default["recipe"]["batch_size"],
            default["recipe"]["grad_clip"]) == (1e-3, "constant", 64, None)
    frame = benchmark_table([json.loads(line) for line in records.read_text().splitlines()])
    assert list(frame["settings"]) == ["n_layers=4, hidden=32, batch_size=256"] and list(frame["budget (s)"]) == [3.0]

    # the saved model is the one scored: its KL on other fresh points agrees within 5 error bars
    model = torch.load(path, weights_only=False)
    data = EightGaussians()
    x = data.sample(50_000, seed=12345).double()
    with torch.no_grad():
        difference = data.log_prob(x) - model.double().log_prob(x)  # (50000,)
    kl, stderr = difference.mean().item(), difference.std().item() / math.sqrt(len(difference))
    assert within(kl, result["kl_nats"], math.hypot(stderr, result["kl_stderr"]))
