"""Tests of the ``ising-rbm`` and ``tfim-rbm`` benchmarks: the physics claim behind the ising-rbm
model (a translation-invariant RBM with one hidden spin per bond IS the Ising model), short runs
through the command line with their JSON and saved models checked against independent
computations, the scikit-learn peer's weights read correctly, options and the results tables."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from gmcourse.bench import ising_rbm, tfim_rbm
from gmcourse.ising import IsingModel
from gmcourse.protocol import GenerativeModel
from gmcourse.quantum import fidelity, tfim_ground_state
from gmcourse.rbm import RBM, TranslationInvariantRBM

ISING = IsingModel(4, 1 / 2.269)
BUDGET = 3.0


def cli(task, *arguments, seconds=BUDGET):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "gmcourse.bench", task, "--seconds", str(seconds),
                                "--no-progress", *arguments], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0])


# ----------------------------------------------------------------------------- the physics claim
@pytest.mark.parametrize("L,beta", [(3, 0.3), (4, 1 / 2.269), (4, 0.7)])
def test_translation_invariant_rbm_with_closed_form_bond_weights_is_exactly_the_ising_model(L, beta):
    """Two channels of 2x2 filters, horizontal and vertical bonds of weight w with log cosh 2w = 2 beta J
    (J = 1): for spin hidden units, log 2cosh(w (s_i + s_j)) differs between aligned and opposite
    spins by log cosh 2w, the Boltzmann weight ratio e^{2 beta J} of one bond. Exact: KL < 1e-10."""
    w = 0.5 * math.acosh(math.exp(2 * beta))
    assert math.log(math.cosh(2 * w)) == pytest.approx(2 * beta, rel=1e-14)
    rbm = TranslationInvariantRBM(L, 2, kernel_size=2, init_std=0.0).double()
    with torch.no_grad():
        rbm.filters[0, 0, :] = w  # sites (0,0), (0,1): horizontal bond
        rbm.filters[1, :, 0] = w  # sites (0,0), (1,0): vertical bond
    ising = IsingModel(L, beta)
    states = ising.all_states()  # (2^(L^2), L, L) float64
    p = ising.probabilities()
    with torch.no_grad():
        log_q = rbm.log_prob(states.flatten(1))
    assert float((p * (p.log() - log_q)).sum()) < 1e-10
    torch.testing.assert_close(log_q, ising.log_prob(states), rtol=0, atol=1e-10)
    with torch.no_grad():  # the library's constructor builds the same machine
        torch.testing.assert_close(TranslationInvariantRBM.ising(L, beta).double().log_prob(states.flatten(1)), log_q,
                                   rtol=0, atol=1e-10)


def test_open_chain_symmetries_leave_the_ground_state_invariant():
    """Augmentation uses only exact symmetries: p(g s) = p(s) for the reversal and the global flip."""
    state = tfim_ground_state(10)
    permutations, signs = tfim_rbm.chain_symmetries(10)
    states = state.all_states()  # (1024, 10)
    p = state.probabilities()
    for permutation, sign in zip(permutations, signs):
        image = sign * states[:, permutation]
        torch.testing.assert_close(p[state.state_index(image)], p, rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------- scikit-learn's RBM
def test_sklearn_weights_define_the_rbm_with_binary_units_whose_free_energy_sklearn_computes():
    """rbm_from_sklearn copies components_ / intercepts into the right places: our free energy equals
    scikit-learn's own (BernoulliRBM._free_energy) on every {0,1}^16 configuration."""
    from sklearn.neural_network import BernoulliRBM

    data01 = ((ISING.sample(500, method="exact", seed=0).flatten(1) + 1) / 2).numpy().astype(np.float64)
    peer = BernoulliRBM(n_components=5, learning_rate=0.1, batch_size=50, n_iter=3, random_state=0).fit(data01)
    rbm = ising_rbm.rbm_from_sklearn(peer)
    states01 = ((ISING.all_states().flatten(1) + 1) / 2)  # (2^16, 16) float64 in {0, 1}
    with torch.no_grad():
        ours = rbm.free_energy(states01).numpy()
    np.testing.assert_allclose(ours, peer._free_energy(states01.numpy()), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_sklearn_peer_runs_in_the_same_run_and_reports_its_exact_kl():
    result = ising_rbm.run(1.5, 0, peer="sklearn", progress=False, overrides={"n_chains": "100"})
    assert result["peer"] == "sklearn" and result["peer_updates"] > 0 and result["peer_n_hidden"] == 32
    assert 0 < result["peer_kl_nats"] < math.inf
    assert 1.5 <= result["peer_seconds"] < 10
    assert result["kl_ratio_to_peer"] == pytest.approx(result["kl_nats"] / result["peer_kl_nats"])


# ----------------------------------------------------------------------------- ising-rbm runs
@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    """A 3-second run in this process (the command line is exercised by the tfim-rbm test)."""
    path = tmp_path_factory.mktemp("ising_rbm") / "model.pt"
    result = ising_rbm.run(BUDGET, 1, save=str(path), progress=False)
    return json.loads(json.dumps(result)), torch.load(path, weights_only=False)


@pytest.mark.slow
def test_ising_rbm_reports_finite_json_serialisable_scores(ising_run):
    result, _ = ising_run
    assert BUDGET <= result["seconds"] < 3 * BUDGET
    for key in ("kl_nats", "kl_initial_nats", "seconds", "train_nll", "test_nll", "test_nll_truth", "entropy_nats",
                "steps", "epochs", "n_params"):
        assert math.isfinite(result[key]), f"{key} = {result[key]}"
    assert result["n_params"] == 8 and result["n_hidden"] == 32  # two 2x2 filters, 2 x 16 positions
    assert result["entropy_nats"] == pytest.approx(ISING.entropy())
    assert result["config"] == ising_rbm.DEFAULTS and result["steps"] > 0
    # PCD on the structured model: an order of magnitude below the untrained model in 3 seconds
    assert 0 <= result["kl_nats"] < result["kl_initial_nats"] / 10
    trace = result["kl_trace"]  # the exact KL during training: from the untrained model to the one returned
    assert trace[0] == {"seconds": 0.0, "kl_nats": result["kl_initial_nats"]}
    assert trace[-1]["kl_nats"] == result["kl_nats"] and trace[-1]["seconds"] == round(result["seconds"], 2)
    assert len(trace) >= 2 and all(a["seconds"] < b["seconds"] for a, b in zip(trace, trace[1:]))


@pytest.mark.slow
def test_saved_ising_rbm_gives_exact_log_probs_of_spins_and_the_reported_kl(ising_run):
    """torch.load(...).log_prob on (n, 16) of +-1 works; the KL recomputed from it with IsingModel's
    probabilities equals kl_nats, and the test NLL on fresh samples drawn as the run drew them matches."""
    result, model = ising_run
    assert isinstance(model, GenerativeModel) and model.log_prob_kind == "exact"
    x = ISING.sample(50, method="exact", seed=2).flatten(1)  # (50, 16)
    with torch.no_grad():
        log_p = model.log_prob(x)
        assert log_p.shape == (50,) and (log_p < 0).all()
        log_q = model.double().log_prob(ISING.all_states().flatten(1))
    p = ISING.probabilities()
    assert log_q.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    assert float((p * (p.log() - log_q)).sum()) == pytest.approx(result["kl_nats"], abs=1e-5)


def test_ising_rbm_rejects_unknown_peers_and_contradictory_options():
    with pytest.raises(ValueError, match="compares with"):
        ising_rbm.run(1.0, 0, peer="qucumber", progress=False)
    with pytest.raises(ValueError, match="n_hidden=20.0 contradicts"):
        ising_rbm.run(1.0, 0, progress=False, overrides={"n_hidden": "20"})
    with pytest.raises(ValueError, match="init must be 'bonds' or 'random'"):
        ising_rbm.run(1.0, 0, progress=False, overrides={"init": "ising"})
    with pytest.raises(ValueError, match="unknown option"):
        ising_rbm.run(1.0, 0, progress=False, overrides={"hidden": "8"})


def test_untied_model_starts_with_one_bond_per_hidden_unit_and_the_same_number_of_hidden_units():
    model = ising_rbm.build_model({**ising_rbm.DEFAULTS, "tied": False, "init_std": 0.0}, seed=0)
    assert type(model) is RBM and model.n_hidden == 32 and model.bias
    W = model.weight.detach().view(32, 4, 4)
    assert ((W != 0).sum((1, 2)) == 2).all()  # every unit touches two sites ...
    torch.testing.assert_close(W.sum(0), torch.full((4, 4), 4 * ising_rbm.DEFAULTS["init_bond"]))  # 4 bonds per site


def test_ising_rbm_table_names_what_differs_from_the_defaults():
    scores = dict(task="ising-rbm", kl_nats=0.001, test_nll=4.5, test_nll_truth=4.49, steps=100, n_params=8,
                  seconds_budget=60.0)
    records = [{**scores, "seed": 0, "config": ising_rbm.DEFAULTS},
               {**scores, "seed": 0, "config": {**ising_rbm.DEFAULTS, "tied": False}, "peer_kl_nats": 0.05},
               {**scores, "seed": 1, "overrides": {"k": "5"}}]  # = the default, no stored config
    frame = ising_rbm.table(records)
    assert frame["configuration"].tolist() == ["default", "default", "tied=False"]
    assert frame["sklearn KL (nats)"].tolist()[2] == 0.05
    assert frame["test NLL - truth"].tolist() == pytest.approx([0.01] * 3)


# ----------------------------------------------------------------------------- tfim-rbm runs
@pytest.mark.slow
def test_tfim_rbm_json_and_saved_model_give_the_reported_fidelity_and_kl(tmp_path):
    path = tmp_path / "tfim.pt"
    result = cli("tfim-rbm", "--seed", "2", "--save", str(path), seconds=2.0)
    assert result["task"] == "tfim-rbm" and result["config"] == tfim_rbm.DEFAULTS and result["steps"] > 0
    assert 0 < result["fidelity"] <= 1 and 0 <= result["kl_nats"] < result["kl_initial_nats"]
    model = torch.load(path, weights_only=False)
    state = tfim_ground_state(10)
    records = state.sample(20, seed=3)  # (20, 10) float32 of +-1
    assert model.log_prob(records).shape == (20,)
    with torch.no_grad():
        q = model.double().log_prob(state.all_states()).exp()  # (1024,)
    p = state.probabilities()
    assert q.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert fidelity(p, q) == pytest.approx(result["fidelity"], abs=1e-6)
    assert float((p * (p.log() - q.log())).sum()) == pytest.approx(result["kl_nats"], abs=1e-5)
    assert result["n_params"] == 60  # 6 hidden units x 10 spins, no biases


def test_tfim_rbm_rejects_a_peer_and_bad_sizes():
    with pytest.raises(ValueError, match="no peer"):
        tfim_rbm.run(1.0, 0, peer="qucumber", progress=False)
    with pytest.raises(ValueError, match="n_hidden must be >= 1"):
        tfim_rbm.run(1.0, 0, progress=False, overrides={"n_hidden": "0"})


def test_tfim_rbm_table_names_what_differs_from_the_defaults():
    records = [{"seed": 0, "config": tfim_rbm.DEFAULTS, "fidelity": 0.999, "kl_nats": 0.002},
               {"seed": 0, "config": {**tfim_rbm.DEFAULTS, "augment": False}, "fidelity": 0.998, "kl_nats": 0.004}]
    frame = tfim_rbm.table(records)
    assert frame["configuration"].tolist() == ["default", "augment=False"]
    assert frame["fidelity"].tolist() == [0.999, 0.998]
