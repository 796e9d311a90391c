"""Tests of gmcourse.ising: exact enumeration against hand-made oracles, and every MCMC update
against the exact answers.

Statistical checks are at 5 sigma. Error bars come from the spread of independent chains (one
estimate per chain; honest whatever the autocorrelation), from an autocorrelation-corrected
error bar sigma * sqrt(tau / N), or from independent draws (chi-square). The MCMC statistics
tests are marked ``slow``; ``pytest -m "not slow"`` runs the exact and structural checks only.
"""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from gmcourse.ising import (
    CRITICAL_TEMPERATURE, IsingModel, magnetization, metropolis_sweep, onsager_magnetization,
    single_site_update, wolff_update,
)
from gmcourse.sampling import integrated_autocorrelation_time

FIVE_SIGMA_P_VALUE = scipy.stats.norm.sf(5.0)


def assert_within_5_sigma(per_chain, expected, what):
    """Mean of independent per-chain estimates (chains,) equals ``expected`` within 5 std errors."""
    per_chain = torch.as_tensor(per_chain, dtype=torch.float64)
    mean, stderr = per_chain.mean().item(), (per_chain.std() / math.sqrt(per_chain.numel())).item()
    assert stderr > 0, f"{what}: no spread between chains"
    assert abs(mean - expected) < 5 * stderr, f"{what}: {mean:.5f} +- {stderr:.5f} vs exact {expected:.5f}"


def assert_counts_match(counts, probabilities, what):
    """Chi-square test of multinomial counts; impossible outcomes must never occur, and
    outcomes expected fewer than 5 times are pooled into one bin."""
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() * np.asarray(probabilities, dtype=float)
    assert counts[expected == 0].sum() == 0, f"{what}: an impossible outcome was drawn"
    small = (expected < 5) & (expected > 0)
    observed = np.append(counts[expected >= 5], counts[small].sum())
    expected = np.append(expected[expected >= 5], expected[small].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic, p_value = scipy.stats.chisquare(observed, expected)
    assert p_value > FIVE_SIGMA_P_VALUE, f"{what}: chi2 = {statistic:.1f} on {len(observed) - 1} dof, p = {p_value:.1e}"


def naive_energy(s, J, h):
    """Eq. ch3-eq-ising one site at a time; s is a numpy array (batch, L, L)."""
    L = s.shape[-1]
    energy = np.zeros(s.shape[0])
    for r in range(L):
        for c in range(L):
            energy -= J * s[:, r, c] * (s[:, r, (c + 1) % L] + s[:, (r + 1) % L, c]) + h * s[:, r, c]
    return energy


def enumerate_by_hand(L, beta, J, h):
    """States via itertools, energies via the naive loop: log Z, p, E/L^2, |M|/L^2 (numpy, float64)."""
    states = np.array(list(itertools.product((-1.0, 1.0), repeat=L * L))).reshape(-1, L, L)
    log_weights = -beta * naive_energy(states, J, h)
    log_z = np.logaddexp.reduce(log_weights)
    return states, log_z, np.exp(log_weights - log_z), naive_energy(states, J, h) / L**2, \
        np.abs(states.sum((1, 2))) / L**2


def random_spins(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randint(2, shape, generator=g) - 1.0


# ----------------------------------------------------------------------------- energy and exact results

@pytest.mark.parametrize("beta, J", [(0.0, 1.0), (0.3, 1.0), (1 / 2.269, 1.0), (0.7, -0.5)])
def test_log_partition_L2_equals_hand_count(beta, J):
    # L = 2 doubles every bond: E = -2J (ab + cd + ac + bd), a 4-cycle with coupling 2J.
    # 2 aligned states have E = -8J, the 2 alternating ones +8J, the other 12 have E = 0.
    log_z = math.log(2 * math.exp(8 * beta * J) + 12 + 2 * math.exp(-8 * beta * J))
    assert IsingModel(2, beta, J=J).log_partition() == pytest.approx(log_z, rel=1e-13)


@pytest.mark.parametrize("beta, J, h", [(0.4, 1.0, 0.3), (1.0, 0.5, -0.7)])
def test_log_partition_L2_with_field_equals_transfer_matrix_of_four_ring(beta, J, h):
    K, B = 2 * beta * J, beta * h  # ring of 4 spins, coupling 2J, field h
    root = math.sqrt(math.exp(2 * K) * math.sinh(B) ** 2 + math.exp(-2 * K))
    lambda_plus, lambda_minus = math.exp(K) * math.cosh(B) + root, math.exp(K) * math.cosh(B) - root
    log_z = math.log(lambda_plus**4 + lambda_minus**4)
    assert IsingModel(2, beta, J=J, h=h).log_partition() == pytest.approx(log_z, rel=1e-12)


@pytest.mark.parametrize("L", [2, 3, 4, 7])
def test_energy_of_all_up_state_is_minus_2JL2_minus_hL2(L):
    J, h = 0.8, 0.3
    assert IsingModel(L, 0.5, J=J, h=h).energy(torch.ones(L, L)).item() == pytest.approx(-2 * J * L**2 - h * L**2)


@pytest.mark.parametrize("L", [3, 4, 5])
def test_energy_matches_naive_double_loop_over_sites(L):
    s = random_spins((50, L, L), seed=L).double()
    energy = IsingModel(L, 0.5, J=0.7, h=-0.4).energy(s)
    assert energy.shape == (50,)
    np.testing.assert_allclose(energy.numpy(), naive_energy(s.numpy(), 0.7, -0.4), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L, beta, J, h", [(2, 0.6, 1.0, 0.2), (3, 0.4, 1.0, 0.1), (4, 1 / 2.269, 1.0, 0.0),
                                           (4, 0.3, -1.0, 0.5)])
def test_exact_quantities_match_independent_enumeration(L, beta, J, h):
    states, log_z, p, energy, abs_m = enumerate_by_hand(L, beta, J, h)
    model = IsingModel(L, beta, J=J, h=h)
    assert model.log_partition() == pytest.approx(log_z, rel=1e-12)
    assert model.entropy() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-10)
    assert model.mean_energy() == pytest.approx((p * energy).sum(), rel=1e-10)
    assert model.mean_abs_magnetization() == pytest.approx((p * abs_m).sum(), rel=1e-10)
    np.testing.assert_allclose(model.log_prob(torch.from_numpy(states)).numpy(), np.log(p), rtol=1e-10)


def test_probabilities_agree_with_log_prob():
    model = IsingModel(4, 0.5, h=0.1)
    p = model.probabilities()
    assert p.shape == (2**16,) and p.dtype == torch.float64
    # two code paths: log_prob evaluates E(s) - log Z per state, probabilities() a softmax of the cache
    torch.testing.assert_close(model.log_prob(model.all_states()).exp(), p)
    assert model.log_prob_kind == "exact"


@pytest.mark.parametrize("L, beta, h", [(3, 0.35, 0.2), (4, 1 / 2.269, 0.0)])
def test_mean_energy_is_minus_derivative_of_log_partition(L, beta, h):
    step = 1e-5
    derivative = (IsingModel(L, beta + step, h=h).log_partition()
                  - IsingModel(L, beta - step, h=h).log_partition()) / (2 * step)
    assert IsingModel(L, beta, h=h).mean_energy() == pytest.approx(-derivative / L**2, abs=1e-7)


def test_state_index_inverts_all_states():
    model = IsingModel(3, 0.2)
    assert torch.equal(model.state_index(model.all_states()), torch.arange(2**9))


def test_magnetization_is_mean_spin():
    s = random_spins((5, 4, 3, 3), seed=1)
    torch.testing.assert_close(magnetization(s), s.sum((-1, -2)) / 9)


def test_onsager_magnetization_matches_yang_form_and_critical_temperature():
    assert math.sinh(2 / CRITICAL_TEMPERATURE) == pytest.approx(1.0, rel=1e-14)  # Kramers-Wannier point
    for J in (1.0, 2.0):
        for T in (0.5, 1.0, 1.5, 2.0, 2.25):  # in units of J
            t = math.tanh(1.0 / T)  # tanh(beta J); sinh(2K) = 2t / (1 - t^2)
            yang = (1 - (1 - t**2) ** 4 / (16 * t**4)) ** 0.125
            assert onsager_magnetization(T * J, J=J) == pytest.approx(yang, rel=1e-12)
        assert onsager_magnetization(2.3 * J, J=J) == 0.0
    temperatures = torch.tensor([1.0, 2.0, 3.0])
    batch = onsager_magnetization(temperatures)
    assert batch.shape == (3,)
    assert batch.tolist() == pytest.approx([onsager_magnetization(T) for T in (1.0, 2.0, 3.0)])


# ----------------------------------------------------------------------------- exact transition matrices

@pytest.mark.parametrize("rule", ["metropolis", "heat_bath"])
@pytest.mark.parametrize("L", [2, 3])
def test_single_site_transition_matrix_obeys_detailed_balance(rule, L):
    model = IsingModel(L, 1 / 2.0, J=1.0, h=0.3)
    K, pi = model.transition_matrix(rule), model.probabilities()
    torch.testing.assert_close(K.sum(1), torch.ones(2 ** (L * L), dtype=torch.float64), rtol=0, atol=1e-14)
    flow = pi[:, None] * K  # pi_a K_ab
    torch.testing.assert_close(flow, flow.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(pi @ K, pi, rtol=0, atol=1e-15)
    # moves go exactly to the states one spin flip away
    index = torch.arange(2 ** (L * L))
    differing_bits = index[:, None] ^ index  # (states, states): which spins differ between a and b
    hamming = sum((differing_bits >> site) & 1 for site in range(L * L))
    assert torch.equal((K > 0) & (index[:, None] != index), hamming == 1)


@pytest.mark.parametrize("rule", ["metropolis", "heat_bath"])
@pytest.mark.parametrize("L", [2, 3])
def test_sweep_transition_matrix_leaves_boltzmann_distribution_invariant(rule, L):
    model = IsingModel(L, 1 / 2.0, J=1.0, h=0.3)
    K, pi = model.transition_matrix(rule, schedule="sweep"), model.probabilities()
    torch.testing.assert_close(K.sum(1), torch.ones_like(pi), rtol=0, atol=1e-13)
    torch.testing.assert_close(pi @ K, pi, rtol=0, atol=1e-14)
    flow = pi[:, None] * K
    if L == 2:  # the checkerboard order (black, white, black, white) is stationary but not reversible
        assert (flow - flow.T).abs().max() > 1e-3
    else:  # odd L: L^2 random-site updates, K_single^(L^2), a power of a reversible kernel
        torch.testing.assert_close(flow, flow.T, rtol=0, atol=1e-15)


@pytest.mark.parametrize("rule", ["metropolis", "heat_bath"])
@pytest.mark.parametrize("L", [2, 3])
def test_sweep_is_ergodic_and_aperiodic_at_zero_field(rule, L):
    """Some power of the sweep matrix is strictly positive (a primitive chain), so the
    Boltzmann distribution is its *only* stationary distribution and every start converges."""
    K = IsingModel(L, 1 / 2.0, J=1.0, h=0.0).transition_matrix(rule, schedule="sweep")
    power = torch.linalg.matrix_power(K, 2 * L * L)
    assert power.min() > 0, f"{rule} sweep at L={L}: some state cannot reach another"


def site_kernels_by_hand(L, beta, J, h, rule):
    """K^(i) for every site i, from the hand enumeration (numpy): propose flipping site i (sites
    row by row, state k has s_i = 2 bit_i(k) - 1), accept with min(1, e^-x) or 1 / (1 + e^x)."""
    n_sites = L * L
    states = np.array([[2.0 * ((k >> i) & 1) - 1.0 for i in range(n_sites)] for k in range(2**n_sites)])
    energy = naive_energy(states.reshape(-1, L, L), J, h)
    kernels = []
    for site in range(n_sites):
        kernel = np.zeros((2**n_sites, 2**n_sites))
        for a in range(2**n_sites):
            b = a ^ (1 << site)
            x = beta * (energy[b] - energy[a])
            accept = min(1.0, math.exp(-x)) if rule == "metropolis" else 1.0 / (1.0 + math.exp(x))
            kernel[a, b], kernel[a, a] = accept, 1.0 - accept
        kernels.append(kernel)
    return kernels


@pytest.mark.parametrize("L, rule", [(2, "metropolis"), (2, "heat_bath"), (3, "metropolis")])
def test_sequential_sweep_is_stationary_and_its_time_reversal_is_the_reverse_order(L, rule):
    """The deterministic-order sweep K^(0) K^(1) ... is stationary but not reversible: running it
    backwards in time, diag(pi)^-1 K^T diag(pi), is the sweep in the opposite site order."""
    beta, J, h = 1 / 2.0, 1.0, 0.3
    model = IsingModel(L, beta, J=J, h=h)
    K, pi = model.transition_matrix(rule, schedule="sequential").numpy(), model.probabilities().numpy()
    kernels = site_kernels_by_hand(L, beta, J, h, rule)
    forward, backward = np.eye(2 ** (L * L)), np.eye(2 ** (L * L))
    for kernel in kernels:
        forward, backward = forward @ kernel, kernel @ backward
    np.testing.assert_allclose(K, forward, rtol=0, atol=1e-14)
    np.testing.assert_allclose(pi @ K, pi, rtol=0, atol=1e-14)
    time_reversal = (pi[:, None] * K).T / pi[:, None]  # K*(a -> b) = pi(b) K(b -> a) / pi(a)
    np.testing.assert_allclose(time_reversal, backward, rtol=0, atol=1e-13)
    assert np.abs(time_reversal - K).max() > 1e-2  # so K itself is not reversible


def test_metropolis_sweep_escapes_striped_states_at_zero_field():
    """A plain checkerboard Metropolis sweep maps column stripes to their negatives with
    certainty (every site has dE = 0), a closed class that biases every average. The sweep must
    leave the pair {stripes, -stripes}."""
    L, chains = 4, 1000
    stripes = torch.tensor([(-1.0) ** col for col in range(L)]).expand(L, L)  # (L, L)
    s = stripes.expand(chains, L, L).clone()
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        s = metropolis_sweep(s, 1 / 2.5, 1.0, 0.0, g)
    on_pair = (s == stripes).flatten(1).all(1) | (s == -stripes).flatten(1).all(1)
    assert on_pair.float().mean() < 0.5, f"{on_pair.float().mean():.2f} of chains never left the stripes"


@pytest.mark.parametrize("rule", ["metropolis", "heat_bath"])
@pytest.mark.parametrize("schedule", ["single_site", "sweep"])
def test_sampler_one_step_frequencies_match_transition_matrix_row(rule, schedule):
    """The sampler and the exact matrix cannot disagree: one step from a fixed state."""
    model = IsingModel(2, 1 / 2.0, J=1.0, h=0.3)
    start = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    a = model.state_index(start).item()
    chains = start.expand(100_000, 2, 2).clone()
    g = torch.Generator().manual_seed(20)
    update = single_site_update if schedule == "single_site" else metropolis_sweep
    after = update(chains, model.beta, model.J, model.h, g, rule)
    counts = torch.bincount(model.state_index(after), minlength=16)
    assert_counts_match(counts, model.transition_matrix(rule, schedule)[a], f"{rule} {schedule}")


# ----------------------------------------------------------------------------- MCMC vs exact, L = 4

def run_chains(update, model, chains, burn_in, steps, seed):
    """Energy per spin and |m| of every chain after each step: two (steps, chains) tensors."""
    g = torch.Generator().manual_seed(seed)
    s = random_spins((chains, model.L, model.L), seed=seed + 1)
    energies, abs_m = [], []
    for step in range(burn_in + steps):
        if update == "wolff":
            s = wolff_update(s, model.beta, model.J, g)
        else:
            s = metropolis_sweep(s, model.beta, model.J, model.h, g, rule=update)
        if step >= burn_in:
            energies.append(model.energy(s) / model.L**2)
            abs_m.append(magnetization(s).abs())
    return torch.stack(energies), torch.stack(abs_m)


@pytest.mark.slow
@pytest.mark.parametrize("update, T, h", [
    ("metropolis", 2.269, 0.0), ("metropolis", 3.0, 0.0), ("metropolis", 2.0, 0.2),
    ("heat_bath", 2.269, 0.0), ("heat_bath", 2.5, -0.1),
    ("wolff", 2.269, 0.0), ("wolff", 3.0, 0.0), ("wolff", 1.5, 0.0),
])
def test_update_reproduces_exact_energy_and_abs_magnetization_L4(update, T, h):
    model = IsingModel(4, 1 / T, h=h)
    # with h != 0 the chains must also settle the weights of the two phases, which takes
    # tunnelling: tau(m) ~ 30-60 sweeps here (E alone has tau ~ 5), so burn in longer
    burn_in = 500 if h else 200
    energies, abs_m = run_chains(update, model, chains=128, burn_in=burn_in, steps=800, seed=30)
    assert_within_5_sigma(energies.mean(0), model.mean_energy(), f"{update} <E>/L^2 at T={T}")
    assert_within_5_sigma(abs_m.mean(0), model.mean_abs_magnetization(), f"{update} <|m|> at T={T}")


@pytest.mark.slow
@pytest.mark.parametrize("L, T, h, method", [
    (4, 1.5, 0.0, "auto"), (4, 2.269, 0.0, "auto"), (4, 3.0, 0.0, "auto"), (4, 2.269, 0.2, "auto"),
    (3, 2.0, 0.0, "metropolis"), (4, 2.269, 0.0, "wolff"), (4, 2.5, 0.0, "heat_bath"),
])
def test_sample_reproduces_exact_energy_and_abs_magnetization(L, T, h, method):
    model = IsingModel(L, 1 / T, h=h)
    chains = 128
    x = model.sample(2048, method=method, seed=40, n_chains=chains)
    assert x.shape == (2048, L, L) and x.dtype == torch.get_default_dtype()
    assert ((x == 1) | (x == -1)).all()
    assert model.sampling_info.n_chains == chains and model.sampling_info.thin >= 1
    per_chain = x.view(-1, chains, L, L)  # (kept steps, chains, L, L)
    assert_within_5_sigma((model.energy(per_chain) / L**2).mean(0), model.mean_energy(), f"{method} <E>/L^2")
    assert_within_5_sigma(magnetization(per_chain).abs().mean(0), model.mean_abs_magnetization(), f"{method} <|m|>")


@pytest.mark.slow
def test_sampled_configurations_are_nearly_uncorrelated():
    # thin = ceil(2 tau) leaves a lag-1 correlation of order e^-4; independence gives
    # rho_hat(1) ~ N(0, 1/N), so it must lie within 5 / sqrt(N) of zero
    model = IsingModel(4, 1 / 2.269)
    chains = 32
    x = model.sample(8192, seed=41, n_chains=chains).view(-1, chains, 4, 4)
    for series in (model.energy(x), magnetization(x).abs()):
        centred = (series - series.mean(0)).double()
        lag_one = (centred[1:] * centred[:-1]).mean() / (centred**2).mean()
        assert abs(lag_one) < 5 / math.sqrt(series.numel()), f"lag-1 autocorrelation {lag_one:.3f}"


def test_exact_sampling_frequencies_match_probabilities_L2():
    model = IsingModel(2, 1 / 2.269, h=0.1)
    x = model.sample(100_000, method="exact", seed=42)
    assert_counts_match(torch.bincount(model.state_index(x), minlength=16), model.probabilities(), "exact L=2")


def test_exact_sampling_energy_histogram_matches_L4():
    model = IsingModel(4, 1 / 2.269)
    x = model.sample(50_000, method="exact", seed=43)
    levels, level_of_state = torch.unique(model.energy(model.all_states()), return_inverse=True)
    p_level = torch.zeros(len(levels), dtype=torch.float64).index_add_(0, level_of_state, model.probabilities())
    counts = torch.bincount(torch.searchsorted(levels, model.energy(x).double()), minlength=len(levels))
    assert_counts_match(counts, p_level, "exact L=4 energy histogram")


def test_uniform_model_samples_fair_independent_spins():
    model = IsingModel(5, 0.0, h=0.5)  # beta = 0: every configuration equally likely
    x = model.sample(20_000, seed=44)
    counts = torch.stack([(x == 1).sum(0), (x == -1).sum(0)])  # per site
    for site in range(25):
        assert_counts_match(counts.view(2, -1)[:, site], [0.5, 0.5], f"site {site}")


def test_sampling_is_reproducible_with_seed():
    model = IsingModel(6, 0.4)
    a = model.sample(10, seed=45, burn_in=5, thin=2)
    b = model.sample(10, generator=torch.Generator().manual_seed(45), burn_in=5, thin=2)
    assert torch.equal(a, b)
    assert model.sampling_info.burn_in == 5 and model.sampling_info.thin == 2


# ----------------------------------------------------------------------------- large lattices

@pytest.mark.slow
def test_large_lattice_low_temperature_abs_magnetization_matches_onsager():
    T, chains = 1.5, 64
    model = IsingModel(16, 1 / T)
    per_chain = magnetization(model.sample(2048, seed=50, n_chains=chains).view(-1, chains, 16, 16)).abs().mean(0)
    # Finite-size corrections below T_c fall off exponentially with L; exactly, they shrink
    # from L = 2 to 3 to 4, so the L = 4 deviation bounds the one at L = 16.
    deviations = [abs(IsingModel(L, 1 / T).mean_abs_magnetization() - onsager_magnetization(T)) for L in (2, 3, 4)]
    assert deviations[0] > deviations[1] > deviations[2]
    stderr = (per_chain.std() / math.sqrt(chains)).item()
    difference = abs(per_chain.mean().item() - onsager_magnetization(T))
    assert difference < 5 * stderr + deviations[2], f"|m| off Onsager by {difference:.5f} (stderr {stderr:.5f})"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["metropolis", "heat_bath"])
def test_high_temperature_sample_matches_exact_energy_and_abs_magnetization_L4(method):
    """Two-sided check at T = 3.5 against exact enumeration of the 2^16 states. A sampler that
    ignored beta (ran at beta = 0) would give <E>/L^2 = 0 and <|m|> = E|sum of 16 signs|/16 =
    0.196 instead of -0.776 and 0.488: more than 100 standard errors off."""
    T, L, chains = 3.5, 4, 64
    model, uniform = IsingModel(L, 1 / T), IsingModel(L, 0.0)
    x = model.sample(4096, method=method, seed=51, n_chains=chains).view(-1, chains, L, L)  # (steps, chains, L, L)
    for name, series, exact, exact_at_beta_0 in [
        ("<E>/L^2", model.energy(x) / L**2, model.mean_energy(), uniform.mean_energy()),
        ("<|m|>", magnetization(x).abs(), model.mean_abs_magnetization(), uniform.mean_abs_magnetization()),
    ]:
        # sigma_O sqrt(tau / N), tau from the (thinned) chains themselves; tau < 1 would shrink it
        tau = max(1.0, integrated_autocorrelation_time(series))
        stderr = series.std().item() * math.sqrt(tau / series.numel())
        assert abs(series.mean().item() - exact) < 5 * stderr, \
            f"{method} {name} at T={T}: {series.mean().item():.4f} +- {stderr:.4f} vs exact {exact:.4f}"
        assert abs(exact_at_beta_0 - exact) > 20 * stderr  # the check can tell T = 3.5 from T = infinity


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="L must be an int >= 2, got 1"):
        IsingModel(1, 0.5)
    with pytest.raises(ValueError, match="L must be an int >= 2, got 2.5"):
        IsingModel(2.5, 0.5)
    with pytest.raises(ValueError, match=r"beta must be >= 0 \(beta = 1/T\), got -1"):
        IsingModel(4, -1.0)
    with pytest.raises(ValueError, match="beta must be a finite real number, got nan"):
        IsingModel(4, float("nan"))
    model = IsingModel(3, 0.5)
    with pytest.raises(ValueError, match=r"spins must have shape \(\.\.\., 3, 3\), got \(4, 4\)"):
        model.energy(torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"spins must be \+1 or -1, got values \[0.0, 1.0\]"):
        model.log_prob(torch.tensor([[1.0, 0.0, 1.0]] * 3))
    with pytest.raises(ValueError, match=r"L <= 4; got L=5 \(2\^25 states\).*Use sample\(n\)"):
        IsingModel(5, 0.5).log_partition()
    with pytest.raises(ValueError, match="Wolff cluster updates need h = 0 and J > 0, got h=0.1"):
        IsingModel(4, 0.5, h=0.1).sample(10, method="wolff")
    with pytest.raises(ValueError, match="method must be one of"):
        model.sample(10, method="hmc")
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        model.sample(0)
    with pytest.raises(ValueError, match="transition_matrix\\(\\) is limited to L <= 3"):
        IsingModel(4, 0.5).transition_matrix()
    with pytest.raises(ValueError, match="rule must be one of"):
        model.transition_matrix("glauber")
    with pytest.raises(ValueError, match="onsager_magnetization needs T > 0"):
        onsager_magnetization(0.0)
    with pytest.raises(ValueError, match=r"shape \(chains, L, L\) with L >= 2, got \(3, 3\)"):
        metropolis_sweep(torch.ones(3, 3), 0.5)
    with pytest.raises(ValueError, match="rule must be one of \\['metropolis', 'heat_bath'\\], got 'glauber'"):
        single_site_update(torch.ones(2, 3, 3), 0.5, rule="glauber")
    with pytest.raises(ValueError, match="J > 0, got J=-1.0"):
        wolff_update(torch.ones(2, 4, 4), 0.5, J=-1.0)


def test_model_follows_the_distribution_protocol_and_shows_progress(capsys):
    from gmcourse.protocol import Distribution

    model = IsingModel(4, 0.4)
    assert isinstance(model, Distribution)
    x = model.sample(8, seed=60, progress=True, burn_in=3, thin=1)
    assert x.shape == (8, 4, 4) and model.log_prob(x).shape == (8,)
    assert "Ising auto" in capsys.readouterr().err
