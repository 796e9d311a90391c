"""Tests for gmcourse.divergences (chapter 2), each against an independent oracle."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Categorical, Independent, Normal

from gmcourse.divergences import (
    Estimate,
    bits_per_dim,
    cross_entropy,
    entropy,
    gaussian_kl,
    kl_divergence,
    monte_carlo_mean,
    negative_log_likelihood,
)


def random_distributions(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(shape, generator=g, dtype=dtype), dim=-1)


# ----------------------------------------------------------------------------- discrete

def test_kl_is_non_negative_and_zero_only_for_equal_distributions():
    p = random_distributions((500, 6), seed=0)
    q = random_distributions((500, 6), seed=1)
    kl = kl_divergence(p, q)
    assert kl.shape == (500,)
    assert (kl > 0).all()  # p != q almost surely, so Gibbs' inequality is strict
    assert torch.equal(kl_divergence(p, p), torch.zeros(500, dtype=torch.float64))


def test_kl_equals_cross_entropy_minus_entropy():
    p = random_distributions((200, 10), seed=2)
    q = random_distributions((200, 10), seed=3)
    torch.testing.assert_close(kl_divergence(p, q), cross_entropy(p, q) - entropy(p), rtol=0, atol=1e-12)


def test_kl_matches_torch_categorical_kl():
    p = random_distributions((50, 7), seed=4)
    q = random_distributions((50, 7), seed=5)
    expected = torch.distributions.kl_divergence(Categorical(probs=p), Categorical(probs=q))
    torch.testing.assert_close(kl_divergence(p, q), expected, rtol=1e-12, atol=1e-14)


def test_kl_and_entropy_match_scipy():
    p = random_distributions((8,), seed=6).numpy()
    q = random_distributions((8,), seed=7).numpy()
    assert kl_divergence(p, q).item() == pytest.approx(scipy.stats.entropy(p, q), rel=1e-12)
    assert entropy(p).item() == pytest.approx(scipy.stats.entropy(p), rel=1e-12)


def test_entropy_of_uniform_is_log_k_and_of_point_mass_is_zero():
    for k in (1, 2, 5, 64):
        assert entropy(torch.full((k,), 1.0 / k, dtype=torch.float64)).item() == pytest.approx(math.log(k), abs=1e-14)
    assert entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0


def test_zero_log_zero_is_zero_and_missing_support_gives_inf():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    # Only the first two outcomes count: 2 * 0.5 * log(0.5 / 0.25) = log 2.
    assert kl_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-15)
    assert torch.isfinite(entropy(p)) and entropy(p).item() == pytest.approx(math.log(2), abs=1e-15)
    assert kl_divergence(q, p).item() == math.inf
    assert cross_entropy(q, p).item() == math.inf
    # q = 0 where p = 0 is harmless.
    r = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert kl_divergence(p, r).item() == 0.0


def test_zero_probabilities_give_finite_correct_gradients():
    # For q = softmax(logits), d KL(p || q) / d logits = q - p, also where p = 0.
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    kl_divergence(p, torch.softmax(logits, -1)).backward()
    torch.testing.assert_close(logits.grad, torch.full((3,), 1 / 3, dtype=torch.float64) - p)


def test_batch_axes_broadcast():
    p = random_distributions((4, 1, 5), seed=8)
    q = random_distributions((3, 5), seed=9)
    kl = kl_divergence(p, q)
    assert kl.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            assert kl[i, j].item() == pytest.approx(scipy.stats.entropy(p[i, 0].numpy(), q[j].numpy()), rel=1e-12)


def test_lists_and_numpy_arrays_are_accepted():
    assert kl_divergence([0.5, 0.5], np.array([0.25, 0.75])).item() == pytest.approx(
        scipy.stats.entropy([0.5, 0.5], [0.25, 0.75]), rel=1e-6
    )


def test_float32_softmax_outputs_pass_the_sum_check_and_agree_with_float64():
    # float32 softmax rows over 1000 outcomes miss a sum of 1 by ~1e-6: accepted, not refused.
    p = random_distributions((100, 1000), seed=10, dtype=torch.float32)
    h = entropy(p)
    assert h.dtype == torch.float32
    # float32 rounding (eps = 6e-8) of 1000 logs and a pairwise sum of 1000 terms leaves a relative
    # error of order 10 eps ~ 1e-6; 1e-5 allows for the float32 input sums missing 1 by ~1e-6.
    torch.testing.assert_close(h.double(), entropy(p.double() / p.double().sum(-1, keepdim=True)), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        (torch.tensor([0.7, 0.6]), torch.tensor([0.5, 0.5]), r"p must sum to 1 .*got sums in \[1\.3, 1\.3\]"),
        (torch.tensor([[0.5, 0.5], [0.2, 0.5]]), torch.tensor([0.5, 0.5]), r"got sums in \[0\.7, 1\]"),
        (torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]), "p must be non-negative"),
        (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.25, 0.25]), "same number of outcomes"),
        (torch.ones(2, 3) / 3, torch.ones(4, 3) / 3, "must broadcast"),
        (torch.tensor([1, 0]), torch.tensor([0.5, 0.5]), "p must have a floating dtype, got torch.int64"),
        (torch.tensor([0.5, 0.5]), torch.tensor([float("nan"), 0.5]), "q contains NaN"),
        (torch.tensor(1.0), torch.tensor(1.0), "non-empty last axis"),
    ],
)
def test_bad_distributions_raise_value_error(p, q, match):
    with pytest.raises(ValueError, match=match):
        kl_divergence(p, q)


def test_entropy_rejects_unnormalised_input():
    with pytest.raises(ValueError, match="p must sum to 1"):
        entropy(torch.tensor([0.5, 0.4], dtype=torch.float64))


# ----------------------------------------------------------------------------- Gaussian

def random_gaussian_parameters(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4)]


def reference_gaussian_kl(mu, logvar, mu_p, logvar_p):
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(mu_p, torch.exp(0.5 * logvar_p)), 1)
    return torch.distributions.kl_divergence(q, p)


def test_gaussian_kl_matches_torch_for_standard_normal_prior():
    mu, logvar, _, _ = random_gaussian_parameters((64, 5), seed=11)
    expected = reference_gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected, rtol=1e-12, atol=1e-12)


def test_gaussian_kl_matches_torch_for_general_prior():
    mu, logvar, mu_p, logvar_p = random_gaussian_parameters((64, 5), seed=12)
    expected = reference_gaussian_kl(mu, logvar, mu_p, logvar_p)
    torch.testing.assert_close(gaussian_kl(mu, logvar, mu_p, logvar_p), expected, rtol=1e-12, atol=1e-12)


def test_gaussian_kl_is_zero_for_identical_gaussians_and_broadcasts():
    mu, logvar, _, _ = random_gaussian_parameters((3, 4), seed=13)
    assert torch.equal(gaussian_kl(mu, logvar, mu, logvar), torch.zeros(3, dtype=torch.float64))
    # A single prior broadcast against a batch of posteriors.
    prior_mu, prior_logvar = mu[0], logvar[0]
    expected = reference_gaussian_kl(mu, logvar, prior_mu.expand(3, 4), prior_logvar.expand(3, 4))
    torch.testing.assert_close(gaussian_kl(mu, logvar, prior_mu, prior_logvar), expected, rtol=1e-12, atol=1e-12)


def test_gaussian_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must broadcast"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- likelihood

class NormalModel:
    """A 2D standard-normal 'model' built on torch.distributions (the oracle)."""

    log_prob_kind = "exact"

    def __init__(self, loc, scale):
        self.distribution = Independent(Normal(loc, scale), 1)

    def log_prob(self, x):
        return self.distribution.log_prob(x)


def test_negative_log_likelihood_matches_closed_form_and_ignores_batching():
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    model = NormalModel(loc, scale)
    x = torch.randn(1001, 2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    z = (x - loc) / scale
    closed_form = (0.5 * z**2 + torch.log(scale) + 0.5 * math.log(2 * math.pi)).sum(-1).mean().item()
    assert negative_log_likelihood(model, x) == pytest.approx(closed_form, rel=1e-12)
    assert negative_log_likelihood(model, x, batch_size=64) == pytest.approx(closed_form, rel=1e-12)


def test_negative_log_likelihood_rejects_bad_models():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="must have a log_prob"):
        negative_log_likelihood(object(), x)

    class WrongShape(NormalModel):
        def log_prob(self, x):
            return super().log_prob(x)[:, None]  # (n, 1) instead of (n,)

    with pytest.raises(ValueError, match=r"must return shape \(5,\) .* got \(5, 1\)"):
        negative_log_likelihood(WrongShape(torch.zeros(2), torch.ones(2)), x)

    class Unnormalised(NormalModel):
        log_prob_kind = "unnormalized"

    with pytest.raises(ValueError, match="no normalised"):
        negative_log_likelihood(Unnormalised(torch.zeros(2), torch.ones(2)), x)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        negative_log_likelihood(NormalModel(torch.zeros(2), torch.ones(2)), x, batch_size=0)


def test_bits_per_dim_converts_nats_to_bits_per_dimension():
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(3.0, 1) == pytest.approx(3.0 / math.log(2), rel=1e-15)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        bits_per_dim(1.0, 0)


# ----------------------------------------------------------------------------- Monte Carlo

def test_monte_carlo_mean_covers_the_true_mean_within_five_sigma():
    mu, n = 1.7, 10_000
    x = mu + torch.randn(n, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    estimate = monte_carlo_mean(x)
    assert isinstance(estimate, Estimate) and isinstance(estimate.mean, float)
    assert abs(estimate.mean - mu) < 5 * estimate.stderr


def test_monte_carlo_stderr_matches_sigma_over_root_n():
    # For Gaussian data the sample std s has standard deviation about sigma / sqrt(2(n-1)),
    # so stderr = s / sqrt(n) may differ from sigma / sqrt(n) by 5 / sqrt(2(n-1)) relative.
    sigma, n = 3.0, 10_000
    x = sigma * torch.randn(n, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    estimate = monte_carlo_mean(x)
    exact = sigma / math.sqrt(n)
    assert abs(estimate.stderr / exact - 1) < 5 / math.sqrt(2 * (n - 1))
    # An autocorrelation time tau inflates the error bar by sqrt(tau).
    assert monte_carlo_mean(x, tau=4.0).stderr == pytest.approx(2 * estimate.stderr, rel=1e-14)


def test_monte_carlo_mean_matches_numpy():
    values = np.random.default_rng(17).exponential(size=37)
    estimate = monte_carlo_mean(values)
    assert estimate.mean == pytest.approx(values.mean(), rel=1e-14)
    assert estimate.stderr == pytest.approx(values.std(ddof=1) / math.sqrt(37), rel=1e-12)


@pytest.mark.parametrize(
    ("values", "tau", "match"),
    [
        (torch.tensor([1.0]), 1.0, "at least 2 values"),
        (torch.tensor([1.0, 2.0]), 0.5, "must be a finite number >= 1"),
        (torch.ones(2, 2), 1.0, "one-dimensional"),
        (torch.tensor([1.0, float("inf")]), 1.0, "NaN or infinite"),
    ],
)
def test_monte_carlo_mean_rejects_bad_input(values, tau, match):
    with pytest.raises(ValueError, match=match):
        monte_carlo_mean(values, tau=tau)
