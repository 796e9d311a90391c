"""Tests of the ``ising-ar`` benchmark: a 3-second run through the command line, its JSON, and
the saved model checked against independent computations (IsingModel's exact probabilities,
the symmetry group rebuilt from rot90 / transpose / roll of the lattice, a Monte Carlo estimate
of the KL on fresh exact samples); the ``--set`` overrides and the results table."""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from gmcourse.autoregressive import MADE
from gmcourse.bench.ising_ar import DEFAULTS, exact_kl, run, table
from gmcourse.ising import IsingModel
from gmcourse.protocol import GenerativeModel

ISING = IsingModel(4, 1 / 2.269)
KEYS = ("kl_nats", "kl_base_nats", "kl_initial_nats", "seconds", "train_nll", "val_nll", "test_nll",
        "test_nll_truth", "entropy_nats", "steps", "epochs", "n_params")
BUDGET = 3.0


def lattice_images(s):
    """The 256 images of configurations s (n, 4, 4): flip x (transpose) x rot90 x rolls."""
    for sign, transpose, k, a, b in itertools.product((1, -1), (False, True), range(4), range(4), range(4)):
        t = s.transpose(1, 2) if transpose else s
        yield sign * torch.roll(torch.rot90(t, k, (1, 2)), (a, b), (1, 2))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ising_ar") / "model.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "gmcourse.bench", "ising-ar", "--seconds", str(BUDGET), "--seed", "1", "--save", str(path)],
        capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0]), torch.load(path, weights_only=False), completed.stderr


@pytest.mark.slow
def test_cli_prints_one_json_line_with_finite_scores_and_a_progress_bar(short_run):
    result, _, stderr = short_run
    assert result["task"] == "ising-ar" and result["seed"] == 1
    for key in KEYS:
        assert math.isfinite(result[key]), f"{key} = {result[key]}"
    assert result["kl_nats"] >= 0 and result["kl_base_nats"] >= 0
    # training stops at the first step after the budget; the upper bound only catches a runaway loop
    assert BUDGET <= result["seconds"] < 3 * BUDGET and result["steps"] > 0
    assert result["entropy_nats"] == pytest.approx(ISING.entropy())
    assert result["config"] == {name: list(v) if isinstance(v, tuple) else v for name, v in DEFAULTS.items()}
    assert "ising-ar" in stderr and "100%" in stderr
    trace = result["kl_trace"]  # the exact KL during training: from the untrained model to the one returned
    assert trace[0] == {"seconds": 0.0, "kl_nats": result["kl_initial_nats"]}
    assert trace[-1]["kl_nats"] == result["kl_nats"] and trace[-1]["seconds"] == round(result["seconds"], 2)
    assert len(trace) >= 3 and all(a["seconds"] < b["seconds"] for a, b in zip(trace, trace[1:]))


@pytest.mark.slow
def test_short_run_beats_the_untrained_model_by_five_standard_errors(short_run):
    """The saved model's KL, estimated independently of the run by the excess NLL on 20,000 fresh
    exact samples, mean(log P_data(s) - log p(s)) with standard error std/sqrt(N), (1) agrees with
    the exact kl_nats the run reports within 5 standard errors, and (2) lies more than 5 standard
    errors below the KL of the same model before training (kl_initial_nats) and below
    16 log 2 - H, the KL of the best model without correlations (uniform spins: the exact marginals
    at zero field). A zero learning rate leaves the model at kl_initial_nats and a loss with the
    wrong sign moves it away, so both fail (2)."""
    result, model, _ = short_run
    fresh = ISING.sample(20_000, method="exact", seed=99)  # (20000, 4, 4), not the run's data
    with torch.no_grad():
        excess = ISING.log_prob(fresh) - model.double().log_prob(fresh.flatten(1))  # (20000,)
    kl_estimate = float(excess.mean())
    standard_error = float(excess.std()) / math.sqrt(len(excess))
    assert abs(kl_estimate - result["kl_nats"]) < 5 * standard_error
    uniform_kl = 16 * math.log(2) - ISING.entropy()
    assert kl_estimate + 5 * standard_error < min(result["kl_initial_nats"], uniform_kl), (
        f"KL {kl_estimate:.4f} +- {standard_error:.4f} after training, {result['kl_initial_nats']:.4f} before, "
        f"{uniform_kl:.4f} for uniform spins")


@pytest.mark.slow
def test_saved_model_round_trips_and_gives_log_probs_of_spins(short_run):
    _, model, _ = short_run
    assert isinstance(model, GenerativeModel) and model.log_prob_kind == "exact"
    x = ISING.sample(50, method="exact", seed=2).flatten(1)  # (50, 16) of +-1
    log_p = model.log_prob(x)
    assert log_p.shape == (50,) and torch.isfinite(log_p).all() and (log_p <= 0).all()
    samples = model.sample(20, seed=3)
    assert samples.shape == (20, 16) and ((samples == 1) | (samples == -1)).all()


@pytest.mark.slow
def test_reported_kl_equals_an_independent_orbit_average_of_the_saved_model(short_run):
    """KL(P_data || p_G) with p_G rebuilt by hand: log mean_g p_base(g s) over the 256 lattice images
    of every state, each image's number found by IsingModel.state_index after torch.roll / rot90 /
    transpose / negation of the configurations, looked up in one table of the base network."""
    result, model, _ = short_run
    states = ISING.all_states()  # (2^16, 4, 4) float64
    with torch.no_grad():
        table = model.base.double().log_prob(states.flatten(1))  # (2^16,)
    # number of the image of state k under each generator of the group
    flip, transpose = ISING.state_index(-states), ISING.state_index(states.transpose(1, 2))
    rotate = ISING.state_index(torch.rot90(states, 1, (1, 2)))
    shift_rows, shift_cols = ISING.state_index(torch.roll(states, 1, 1)), ISING.state_index(torch.roll(states, 1, 2))
    log_sum = torch.full_like(table, -math.inf)
    for sign, transposed, k, a, b in itertools.product((1, -1), (False, True), range(4), range(4), range(4)):
        index = torch.arange(len(states))
        for generator, power in ((flip, sign < 0), (transpose, transposed), (rotate, k), (shift_rows, a),
                                 (shift_cols, b)):
            for _ in range(int(power)):
                index = generator[index]
        log_sum = torch.logaddexp(log_sum, table[index])
    log_q = log_sum - math.log(256)
    p = ISING.probabilities()
    assert float((p * (p.log() - log_q)).sum()) == pytest.approx(result["kl_nats"], abs=2e-6)


@pytest.mark.slow
def test_saved_model_is_normalised_and_invariant_under_the_lattice_group(short_run):
    _, model, _ = short_run
    model = model.double()
    states = ISING.all_states()  # (2^16, 4, 4)
    subset = states[torch.randperm(len(states), generator=torch.Generator().manual_seed(4))[:200]]  # (200, 4, 4)
    with torch.no_grad():
        assert model.log_prob(states.flatten(1)).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
        log_p = model.log_prob(subset.flatten(1))
        images = list(lattice_images(subset))
        for k in (1, 37, 70, 128, 130, 201, 255):  # translations, rotations, transposes, flips
            torch.testing.assert_close(model.log_prob(images[k].flatten(1)), log_p, rtol=0, atol=1e-12)


def test_exact_kl_of_the_uniform_distribution_is_log_2_to_16_minus_entropy():
    uniform = MADE(16, [8])
    with torch.no_grad():
        for parameter in uniform.parameters():
            parameter.zero_()  # every logit 0: each spin +-1 with probability 1/2
    assert exact_kl(ISING, uniform) == pytest.approx(16 * math.log(2) - ISING.entropy(), abs=1e-5)


def test_unknown_peer_and_bad_options_are_rejected():
    with pytest.raises(ValueError, match="no peer"):
        run(1.0, 0, peer="zuko", progress=False)
    with pytest.raises(ValueError, match="unknown option.*hidden"):
        run(1.0, 0, progress=False, overrides={"hidden": "8"})
    with pytest.raises(ValueError, match="augment=maybe: expected true or false"):
        run(1.0, 0, progress=False, overrides={"augment": "maybe"})
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        run(1.0, 0, progress=False, overrides={"validation_fraction": "1"})


@pytest.mark.slow
def test_overrides_switch_off_symmetrisation_and_the_held_out_split():
    result = run(1.0, 0, progress=False, overrides={"symmetrize": "false", "validation_fraction": "0",
                                                    "hidden_sizes": "16,16"})
    assert result["group_size"] == 1 and result["kl_nats"] == result["kl_base_nats"]
    assert result["val_nll"] is None and result["selected"] == "end"
    config = result["config"]
    assert config["hidden_sizes"] == [16, 16] and config["symmetrize"] is False
    assert config["validation_fraction"] == 0.0 and config["augment"] is True
    n_weights = sum(p.numel() for p in MADE(16, [16, 16], direct=True).parameters())
    assert result["n_params"] == n_weights


def test_table_names_what_differs_from_the_defaults_and_keeps_configurations_together():
    defaults = {name: list(v) if isinstance(v, tuple) else v for name, v in DEFAULTS.items()}
    scores = dict(task="ising-ar", kl_nats=0.01, kl_base_nats=0.02, test_nll=4.5, test_nll_truth=4.49,
                  steps=100, n_params=7840, seconds_budget=60.0)
    records = [
        {**scores, "seed": 0, "config": defaults},
        {**scores, "seed": 0, "overrides": {"augment": "false", "symmetrize": "false"}},  # no stored config
        {**scores, "seed": 1, "overrides": {"augment": "true"}, "config": defaults},  # = the default
        {**scores, "seed": 0, "config": {**defaults, "hidden_sizes": [128, 128], "lr_decay": False}},
    ]
    frame = table(records)
    assert frame["configuration"].tolist() == ["default", "default", "augment=False, symmetrize=False",
                                               "hidden_sizes=128,128, lr_decay=False"]
    assert frame["seed"].tolist() == [0, 1, 0, 0]
    assert frame["test NLL - truth"].tolist() == pytest.approx([0.01] * 4)
    assert {"budget (s)", "KL (nats)", "KL unsymmetrised", "steps", "n_params"} <= set(frame.columns)
