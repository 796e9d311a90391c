"""Tests of the ``ising-vae`` benchmark: a 2-second run, its JSON contract, the saved model, and the
quadrature checked against normalisation and against the independent IWAE estimates of the run."""

import json
import math

import pytest
import torch

from gmcourse.bench.ising_vae import DEFAULTS, IWAE_K, run, table
from gmcourse.ising import IsingModel
from gmcourse.protocol import GenerativeModel
from gmcourse.vae import VAE, all_states_log_marginal

ISING = IsingModel(4, 1 / 2.269)
KEYS = ("kl_nats", "kl_initial_nats", "elbo_gap_nats", "elbo_gap_stderr", "seconds", "train_elbo", "test_elbo",
        "train_nll", "test_nll", "test_nll_truth", "train_nll_truth", "entropy_nats", "steps", "epochs", "n_params")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ising_vae") / "model.pt"
    result = run(2.0, 1, save=str(path), progress=False)
    return json.loads(json.dumps(result)), torch.load(path, weights_only=False)


@pytest.mark.slow
def test_short_run_returns_the_json_contract_with_a_finite_exact_kl(short_run):
    result, _ = short_run
    for key in KEYS:
        assert math.isfinite(result[key]), f"{key} = {result[key]}"
    assert 0 <= result["kl_nats"] < result["kl_initial_nats"]
    assert result["entropy_nats"] == pytest.approx(ISING.entropy())
    assert result["elbo_gap_nats"] > -5 * result["elbo_gap_stderr"]  # ELBO <= log p, within its error bar
    assert result["config"] == {name: list(v) if isinstance(v, tuple) else v for name, v in DEFAULTS.items()}
    assert set(result["iwae"]) >= {str(k) for k in IWAE_K} | {"exact_log_p", "n_states"}
    trace = result["kl_trace"]  # the exact KL during training: from the untrained model to the one returned
    assert trace[0] == {"seconds": 0.0, "kl_nats": result["kl_initial_nats"]}
    assert trace[-1]["kl_nats"] == result["kl_nats"] and trace[-1]["seconds"] == round(result["seconds"], 2)
    assert len(trace) >= 3 and all(a["seconds"] < b["seconds"] for a, b in zip(trace, trace[1:]))


@pytest.mark.slow
def test_quadrature_is_normalised_and_agrees_with_iwae(short_run):
    result, _ = short_run
    quadrature = result["quadrature"]
    # every p(s|z) is normalised, so the states' probabilities sum to the prior mass on the grid:
    # 1 minus the tail outside [-6, 6]^2 (< 4 Phi(-6) = 4e-9), with the discretisation error of a
    # Gaussian's midpoint rule far below that
    assert quadrature["probability_sum"] == pytest.approx(1.0, abs=1e-8)
    assert abs(quadrature["kl_half_spacing_nats"] - result["kl_nats"]) < 1e-3
    # IWAE_K is a lower bound in expectation that rises towards log p: the largest K sits at or
    # below the quadrature's log p (within 5 paired standard errors) and above K = 1
    iwae = result["iwae"]
    assert iwae["1000"]["gap"] > -5 * iwae["1000"]["gap_stderr"]
    assert iwae["1000"]["gap"] < iwae["1"]["gap"]


@pytest.mark.slow
def test_saved_model_is_a_vae_whose_quadrature_log_p_sums_to_one(short_run):
    result, model = short_run
    assert isinstance(model, VAE) and isinstance(model, GenerativeModel) and model.log_prob_kind == "lower_bound"
    x = ISING.sample(50, method="exact", seed=2).flatten(1).float()  # (50, 16) of +-1
    elbo = model.log_prob(x)
    assert elbo.shape == (50,) and torch.isfinite(elbo).all() and (elbo <= 0).all()
    log_p = all_states_log_marginal(model)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-8)
    p = ISING.probabilities()
    assert float((p * (p.log() - log_p)).sum()) == pytest.approx(result["kl_nats"], abs=1e-9)


def test_unknown_peer_and_bad_options_are_rejected():
    with pytest.raises(ValueError, match="no peer"):
        run(1.0, 0, peer="pythae", progress=False)
    with pytest.raises(ValueError, match="unknown option.*hidden"):
        run(1.0, 0, progress=False, overrides={"hidden": "8"})
    with pytest.raises(ValueError, match="latent_dim must be 1 or 2"):
        run(1.0, 0, progress=False, overrides={"latent_dim": "3"})


def test_table_shows_one_row_per_run():
    scores = dict(task="ising-vae", kl_nats=0.2, elbo_gap_nats=0.05, test_nll=4.7, test_nll_truth=4.45,
                  iwae={"1000": {"mean": -4.71, "gap": 0.01, "gap_stderr": 0.005}, "exact_log_p": -4.70},
                  steps=100, n_params=10900, seconds_budget=60.0)
    frame = table([{**scores, "seed": 0}, {**scores, "seed": 1}])
    assert frame["seed"].tolist() == [0, 1]
    assert frame["test NLL - truth"].tolist() == pytest.approx([0.25, 0.25])
    assert frame["log p - IWAE_1000"].tolist() == pytest.approx([0.01, 0.01])
