"""Tests of gmcourse.sampling: the generic MCMC samplers and the autocorrelation error bars.

Statistical checks use 5-sigma tolerances. Error bars come either from the spread of
independent chains (each chain's own estimate is one independent number, so the spread is
honest whatever the autocorrelation) or from draws that are independent by construction.
The sampler statistics tests are marked ``slow``; ``pytest -m "not slow"`` runs the rest.
"""

import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch

from gmcourse.sampling import (
    MCMCResult, autocorrelation, autocorrelation_time_and_error, effective_sample_size, gibbs, heat_bath_acceptance,
    integrated_autocorrelation_time, langevin, langevin_log_proposal, mala, metropolis_acceptance,
    metropolis_hastings,
)

FIVE_SIGMA_P_VALUE = scipy.stats.norm.sf(5.0)  # one-sided tail probability of a 5-sigma event

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=torch.float64)
GAUSSIAN = torch.distributions.MultivariateNormal(MEAN, COVARIANCE)


def assert_within_5_sigma(per_chain: torch.Tensor, expected, what: str):
    """``per_chain`` (chains, ...) holds one independent estimate per chain; their mean must
    match ``expected`` within 5 standard errors (from the chain-to-chain spread)."""
    per_chain = torch.as_tensor(per_chain, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    mean = per_chain.mean(0)
    stderr = per_chain.std(0) / math.sqrt(per_chain.shape[0])
    assert torch.all(stderr > 0), f"{what}: zero spread between chains, no error bar"
    z = (mean - expected) / stderr
    assert torch.all(z.abs() < 5.0), f"{what}: estimate {mean.tolist()} vs {expected.tolist()}, z = {z.tolist()}"


def per_chain_mean_and_covariance(samples: torch.Tensor):
    """samples (T, chains, d) -> per-chain means (chains, d) and covariances (chains, d, d),
    the latter centred on the pooled mean so that no 1/T bias enters."""
    centred = samples - samples.mean((0, 1))
    covariance = torch.einsum("tci,tcj->cij", centred, centred) / samples.shape[0]
    return samples.mean(0), covariance


# ----------------------------------------------------------------------------- acceptance rules

def test_metropolis_acceptance_is_min_of_one_and_probability_ratio():
    delta = torch.tensor([-800.0, -3.0, -0.1, 0.0, 0.5, 800.0], dtype=torch.float64)
    expected = torch.tensor([0.0, math.exp(-3.0), math.exp(-0.1), 1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(metropolis_acceptance(delta), expected, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("rule", [metropolis_acceptance, heat_bath_acceptance])
def test_acceptance_rules_satisfy_detailed_balance(rule):
    # p(a) A(a -> b) = p(b) A(b -> a)  <=>  A(delta) / A(-delta) = e^delta, delta = log p(b) - log p(a)
    delta = torch.linspace(-30.0, 30.0, 121, dtype=torch.float64)
    torch.testing.assert_close(rule(delta) / rule(-delta), torch.exp(delta), rtol=1e-12, atol=0.0)
    assert torch.all((rule(delta) > 0) & (rule(delta) <= 1))


def test_metropolis_accepts_one_direction_always_and_more_often_than_heat_bath():
    delta = torch.linspace(-10.0, 10.0, 81, dtype=torch.float64)
    assert torch.equal(torch.maximum(metropolis_acceptance(delta), metropolis_acceptance(-delta)),
                       torch.ones_like(delta))
    assert torch.all(metropolis_acceptance(delta) > heat_bath_acceptance(delta))


def test_heat_bath_acceptance_is_conditional_probability_of_the_other_value():
    p_current, p_other = torch.rand(100, dtype=torch.float64) + 0.01, torch.rand(100, dtype=torch.float64) + 0.01
    delta = torch.log(p_other) - torch.log(p_current)
    torch.testing.assert_close(heat_bath_acceptance(delta), p_other / (p_current + p_other))


def test_langevin_log_proposal_differs_from_gaussian_density_by_a_constant():
    g = torch.Generator().manual_seed(1)
    x_from, x_to, grad = (torch.randn(50, 3, generator=g, dtype=torch.float64) for _ in range(3))
    step = 0.3
    oracle = torch.distributions.Normal(x_from + step * grad, math.sqrt(2 * step)).log_prob(x_to).sum(-1)
    difference = langevin_log_proposal(x_to, x_from, grad, step) - oracle
    torch.testing.assert_close(difference, difference[:1].expand(50))


# ----------------------------------------------------------------------------- samplers

@pytest.mark.slow
def test_metropolis_hastings_recovers_2d_gaussian_mean_and_covariance():
    x0 = torch.zeros(64, 2, dtype=torch.float64)
    result = metropolis_hastings(GAUSSIAN.log_prob, x0, n_steps=3000, step_size=1.2, seed=2)
    assert isinstance(result, MCMCResult) and result.samples.shape == (3000, 64, 2)
    assert 0.2 < result.acceptance_rate < 0.8
    means, covariances = per_chain_mean_and_covariance(result.samples[500:])
    assert_within_5_sigma(means, MEAN, "MH mean")
    assert_within_5_sigma(covariances, COVARIANCE, "MH covariance")


@pytest.mark.slow
def test_metropolis_hastings_recovers_1d_gaussian():
    normal = torch.distributions.Normal(3.0, 0.5)
    result = metropolis_hastings(lambda x: normal.log_prob(x).sum(-1), torch.zeros(64, 1), 3000, 0.8, seed=3)
    means, covariances = per_chain_mean_and_covariance(result.samples[300:].double())
    assert_within_5_sigma(means[:, 0], 3.0, "MH 1D mean")
    assert_within_5_sigma(covariances[:, 0, 0], 0.25, "MH 1D variance")


@pytest.mark.slow
def test_mala_recovers_correlated_gaussian_mean_and_covariance():
    x0 = torch.zeros(64, 2, dtype=torch.float64)
    result = mala(GAUSSIAN.log_prob, x0, n_steps=2000, step_size=0.25, seed=4)
    assert 0.5 < result.acceptance_rate < 1.0
    means, covariances = per_chain_mean_and_covariance(result.samples[500:])
    assert_within_5_sigma(means, MEAN, "MALA mean")
    assert_within_5_sigma(covariances, COVARIANCE, "MALA covariance")


@pytest.mark.slow
def test_ula_variance_matches_closed_form_biased_value_and_mala_removes_the_bias():
    # For N(0, s2): x' = (1 - eta/s2) x + sqrt(2 eta) xi, whose stationary variance v solves
    # v = (1 - eta/s2)^2 v + 2 eta, i.e. v = s2 / (1 - eta / (2 s2)) (eq. ch3-eq-ula-variance).
    variance, step = 2.0, 1.0
    normal = torch.distributions.Normal(0.0, math.sqrt(variance))
    log_prob = lambda x: normal.log_prob(x).sum(-1)  # noqa: E731
    biased = variance / (1.0 - step / (2.0 * variance))
    x0 = torch.zeros(128, 1, dtype=torch.float64)
    ula = langevin(log_prob, x0, 1500, step, seed=5)
    assert ula.acceptance_rate == 1.0
    _, ula_cov = per_chain_mean_and_covariance(ula.samples[100:])
    assert_within_5_sigma(ula_cov[:, 0, 0], biased, "ULA stationary variance")
    _, mala_cov = per_chain_mean_and_covariance(mala(log_prob, x0, 1500, step, seed=6).samples[100:])
    assert_within_5_sigma(mala_cov[:, 0, 0], variance, "MALA variance")
    # and the ULA bias (2.67 vs 2) is far outside ULA's own error bar
    stderr = ula_cov[:, 0, 0].std() / math.sqrt(128)
    assert (ula_cov[:, 0, 0].mean() - variance) / stderr > 5.0


@pytest.mark.slow
def test_gibbs_draws_match_exact_distribution_of_a_three_valued_model():
    # two variables with values {0, 1, 2} and an arbitrary table of log-probabilities
    g = torch.Generator().manual_seed(7)
    table = torch.randn(3, 3, generator=g, dtype=torch.float64)
    exact = torch.softmax(table.flatten(), 0)
    log_prob = lambda x: table[x[:, 0].long(), x[:, 1].long()]  # noqa: E731
    chains = 20000
    result = gibbs(log_prob, torch.zeros(chains, 2, dtype=torch.float64), 15, values=(0.0, 1.0, 2.0), seed=8)
    assert result.samples.shape == (15, chains, 2) and result.acceptance_rate == 1.0
    last = result.samples[-1].long()  # chains are independent: one draw each
    counts = torch.bincount(3 * last[:, 0] + last[:, 1], minlength=9).double()
    statistic, p_value = scipy.stats.chisquare(counts.numpy(), (chains * exact).numpy())
    assert p_value > FIVE_SIGMA_P_VALUE, f"chi2 = {statistic:.1f}, p = {p_value:.2e}"


@pytest.mark.slow
def test_gibbs_on_binary_chain_matches_exact_marginals_and_correlation():
    # p(x) ∝ exp(0.8 x1 x2 - 0.5 x2 x3 + 0.3 x1), x_i = ±1: enumerate the 8 states by hand
    def log_prob(x):
        return 0.8 * x[:, 0] * x[:, 1] - 0.5 * x[:, 1] * x[:, 2] + 0.3 * x[:, 0]
    states = torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)])
    p = torch.softmax(log_prob(states).double(), 0)
    exact_marginals = p @ states.double()
    exact_correlation = p @ (states[:, 0] * states[:, 2]).double()
    result = gibbs(log_prob, torch.ones(256, 3), 400, seed=9)
    samples = result.samples[50:].double()  # (T, chains, 3)
    assert_within_5_sigma(samples.mean(0), exact_marginals, "Gibbs marginals")
    assert_within_5_sigma((samples[..., 0] * samples[..., 2]).mean(0), exact_correlation, "Gibbs <x1 x3>")


def test_samplers_are_reproducible_with_seed_and_generator():
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    a = metropolis_hastings(GAUSSIAN.log_prob, x0, 20, 0.5, seed=10).samples
    b = metropolis_hastings(GAUSSIAN.log_prob, x0, 20, 0.5, generator=torch.Generator().manual_seed(10)).samples
    assert torch.equal(a, b)
    assert torch.equal(mala(GAUSSIAN.log_prob, x0, 20, 0.1, seed=11).samples,
                       mala(GAUSSIAN.log_prob, x0, 20, 0.1, seed=11).samples)


# ----------------------------------------------------------------------------- autocorrelation

def ar1_series(rho: float, length: int, chains: int, seed: int) -> np.ndarray:
    """x_t = rho x_{t-1} + sqrt(1 - rho^2) xi_t, started in its stationary law N(0, 1)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((length, chains)) * math.sqrt(1 - rho**2)
    noise[0] = rng.standard_normal(chains)  # x_0 ~ N(0, 1); then x_t = noise_t + rho x_{t-1}
    return scipy.signal.lfilter([1.0], [1.0, -rho], noise, axis=0)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_integrated_autocorrelation_time_of_ar1_is_one_plus_rho_over_one_minus_rho(rho):
    series = ar1_series(rho, 20000, 50, seed=12)
    tau_exact = (1 + rho) / (1 - rho)
    tau = integrated_autocorrelation_time(series)
    # Madras-Sokal: var(tau_hat) ~ 2 (2M + 1) / N tau^2, with window M ~ 5 tau
    sigma = tau_exact * math.sqrt(2 * (2 * 5 * tau_exact + 1) / series.size)
    assert abs(tau - tau_exact) < 5 * sigma, f"tau = {tau:.3f}, expected {tau_exact:.3f} +- {sigma:.3f}"


def test_autocorrelation_of_ar1_decays_geometrically():
    rho = autocorrelation(ar1_series(0.7, 20000, 50, seed=13))
    # Bartlett: var(rho_hat(t)) of an AR(1) series is at most (1 + r^2) / (1 - r^2) / N
    sigma = math.sqrt((1 + 0.7**2) / (1 - 0.7**2) / 1e6)
    lags = torch.arange(1, 6)
    assert torch.all((rho[1:6] - 0.7**lags).abs() < 5 * sigma), rho[1:6]


def test_effective_sample_size_of_independent_draws_is_about_n():
    series = torch.randn(10000, 20, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    ess = effective_sample_size(series)
    sigma_tau = math.sqrt(2 * (2 * 5 + 1) / series.numel())  # Madras-Sokal with tau = 1, window ~5
    assert abs(series.numel() / ess - 1.0) < 5 * sigma_tau


def test_effective_sample_size_of_ar1_is_n_times_one_minus_rho_over_one_plus_rho():
    rho = 0.8
    series = ar1_series(rho, 20000, 20, seed=15)
    tau_exact = (1 + rho) / (1 - rho)
    sigma_tau = tau_exact * math.sqrt(2 * (2 * 5 * tau_exact + 1) / series.size)
    expected = series.size / tau_exact
    # N / tau: a 5-sigma error on tau moves N / tau by at most N / (tau - 5 sigma) - N / tau
    assert abs(effective_sample_size(series) - expected) < series.size / (tau_exact - 5 * sigma_tau) - expected


def test_tau_of_many_short_chains_is_not_biased_by_per_chain_means():
    """1000 chains of only 400 steps (21 tau each). Centring every chain on its own mean would
    lower rho(t) by ~tau/T = 0.05 at every lag and tau by ~2 W tau / T ~ 9 (W ~ 5 tau); centring
    on the common mean leaves a bias of about -2 sum_t t rho(t) / T = -0.45, within tolerance."""
    rho = 0.9
    series = ar1_series(rho, 400, 1000, seed=16)
    tau_exact = (1 + rho) / (1 - rho)
    sigma = tau_exact * math.sqrt(2 * (2 * 5 * tau_exact + 1) / series.size)
    tau = integrated_autocorrelation_time(series)
    assert abs(tau - tau_exact) < 5 * sigma, f"tau = {tau:.2f}, expected {tau_exact:.2f} +- {sigma:.2f}"


def test_autocorrelation_time_error_bar_matches_madras_sokal_and_covers_the_exact_tau():
    rho, groups = 0.8, 50
    series = ar1_series(rho, 4000, 2 * groups, seed=17)
    tau_exact = (1 + rho) / (1 - rho)
    tau, stderr = autocorrelation_time_and_error(series, n_groups=groups)
    assert abs(tau - tau_exact) < 5 * stderr, f"tau = {tau:.3f} +- {stderr:.3f}, exact {tau_exact}"
    # the spread of 50 group estimates fixes the error bar to ~1/sqrt(2 * 49) = 10 %, so it must
    # agree with the Madras-Sokal formula within 5 x 10 %
    madras_sokal = tau_exact * math.sqrt(2 * (2 * 5 * tau_exact + 1) / series.size)
    assert 0.5 < stderr / madras_sokal < 1.5, f"stderr {stderr:.4f} vs Madras-Sokal {madras_sokal:.4f}"


def test_constant_series_has_autocorrelation_time_one():
    assert integrated_autocorrelation_time(torch.ones(100)) == 1.0


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    log_prob = GAUSSIAN.log_prob
    with pytest.raises(ValueError, match=r"x0 must have shape \(chains, D\).*got \(2,\)"):
        metropolis_hastings(log_prob, torch.zeros(2), 10, 0.1)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        metropolis_hastings(log_prob, [[0.0, 0.0]], 10, 0.1)
    with pytest.raises(ValueError, match="step_size must be a positive finite number, got -0.1"):
        langevin(log_prob, torch.zeros(3, 2), 10, -0.1)
    with pytest.raises(ValueError, match="n_steps must be a positive int, got 0"):
        mala(log_prob, torch.zeros(3, 2), 0, 0.1)
    with pytest.raises(ValueError, match=r"log_prob must map x of shape \(3, 2\) to shape \(3,\), got \(3, 2\)"):
        metropolis_hastings(lambda x: x, torch.zeros(3, 2), 10, 0.1)
    with pytest.raises(ValueError, match="log_prob\\(x0\\) must be finite"):
        metropolis_hastings(lambda x: torch.log(x[:, 0]), torch.zeros(3, 2), 10, 0.1)
    with pytest.raises(ValueError, match=r"every entry of x0 must be one of values=\[-1.0, 1.0\]"):
        gibbs(lambda x: x.sum(-1), torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match="T >= 4"):
        integrated_autocorrelation_time(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        effective_sample_size(torch.tensor([1.0, 2.0, float("nan"), 0.0, 1.0]))
    with pytest.raises(ValueError, match="need n_groups >= 2 and at least n_groups chains; got n_groups=8 and 4 chains"):
        autocorrelation_time_and_error(torch.zeros(100, 4))
