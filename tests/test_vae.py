"""Tests of gmcourse.vae against independent oracles.

* Probabilistic PCA (a linear-Gaussian VAE): log p(x) = log N(x; b, W W^T + sigma^2 I) and the
  posterior are closed form (torch.distributions.MultivariateNormal is the oracle), so the ELBO,
  the IWAE bounds and the quadrature can be compared with the truth.
* The analytic KL term against a Monte Carlo estimate with torch.distributions.Normal.
* The reparameterised gradient of E[z^2] against its closed form.
* Each decoder's log-likelihood against torch.distributions (Bernoulli, Categorical, Normal).
* The all-states quadrature against brute-force enumeration and the general quadrature.
Statistical tolerances are 5 standard errors, with the standard error computed from the samples.
"""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, MultivariateNormal, Normal

from gmcourse.digits import load_digits
from gmcourse.vae import VAE, all_states_log_marginal, latent_grid, quadrature_log_marginal, train

D, d, SIGMA2 = 5, 2, 0.3


def ppca(exact_posterior: bool, variance_factor: float = 1.0, mean_shift: float = 0.0):
    """A linear-Gaussian VAE x = W z + b + noise, in float64, and its exact marginal distribution.

    W has orthogonal columns, so M = W^T W + sigma^2 I is diagonal and so is the exact posterior
    N(M^-1 W^T (x - b), sigma^2 M^-1) (Tipping and Bishop 1999): a diagonal Gaussian encoder can
    represent it exactly. With exact_posterior=False the encoder's variance is multiplied by
    variance_factor and its mean shifted by mean_shift, so q differs from the posterior."""
    g = torch.Generator().manual_seed(11)
    q_basis, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
    W = q_basis * torch.tensor([1.5, 0.8], dtype=torch.float64)  # (D, d), orthogonal columns
    b = torch.randn(D, generator=g, dtype=torch.float64)
    model = VAE(D, d, hidden=(), likelihood="gaussian", gaussian_logvar=math.log(SIGMA2)).double()
    M = W.T @ W + SIGMA2 * torch.eye(d, dtype=torch.float64)  # diagonal
    posterior_mean_map = torch.linalg.solve(M, W.T)  # (d, D)
    posterior_var = SIGMA2 / torch.diagonal(M)  # (d,)
    with torch.no_grad():
        model.decoder[0].weight.copy_(W)
        model.decoder[0].bias.copy_(b)
        encoder = model.encoder[0]
        encoder.weight.zero_()
        encoder.weight[:d] = posterior_mean_map
        encoder.bias[:d] = -posterior_mean_map @ b + (0.0 if exact_posterior else mean_shift)
        factor = 1.0 if exact_posterior else variance_factor
        encoder.bias[d:] = torch.log(posterior_var * factor)
    marginal = MultivariateNormal(b, W @ W.T + SIGMA2 * torch.eye(D, dtype=torch.float64))
    return model, marginal


def test_ppca_elbo_equals_log_p_when_q_is_the_exact_posterior():
    model, marginal = ppca(exact_posterior=True)
    x = marginal.sample((4,), )  # (4, D), seeded by conftest
    truth = marginal.log_prob(x)
    # every importance weight equals p(x) exactly: IWAE_K = log p(x) to rounding error, for any K
    torch.testing.assert_close(model.iwae_log_prob(x, 3, seed=0).log_prob, truth)
    log_w = model.log_importance_weights(x, 7, generator=torch.Generator().manual_seed(1))  # (7, 4)
    torch.testing.assert_close(log_w, truth.expand(7, 4))
    # the ELBO (Monte Carlo reconstruction term, exact KL) is unbiased for log p(x): 5 standard errors
    samples = model.elbo(x.repeat(5000, 1), generator=torch.Generator().manual_seed(2)).view(5000, 4)
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(5000)
    assert ((mean - truth).abs() < 5 * stderr).all(), (mean - truth, stderr)


def test_ppca_elbo_below_iwae_bounds_rising_with_k_towards_log_p():
    """With q wider and shifted from the posterior: ELBO = L_1 <= L_4 <= L_16 <= L_1000 <= log p(x).
    Each L_K is estimated by R repeated IWAE estimates, error bar std / sqrt(R); the ELBO by 4000
    draws. Consecutive bounds of K = 1, 4, 16 must rise by more than 5 combined standard errors (the
    gap falls roughly as 1/K, from about 2.4 nats at K = 1), none may exceed log p by more than 5
    standard errors, and L_1000 must close at least 90% of the ELBO's gap."""
    model, marginal = ppca(exact_posterior=False, variance_factor=3.0, mean_shift=0.5)
    x = marginal.sample((3,))
    truth = marginal.log_prob(x)
    elbo = model.elbo(x, n_samples=4000, generator=torch.Generator().manual_seed(3))  # (3,)
    g = torch.Generator().manual_seed(4)
    bounds = {k: model.iwae_log_prob(x, k, n_repeats=r, generator=g) for k, r in ((1, 2000), (4, 1000),
                                                                                    (16, 400), (1000, 20))}
    assert (truth - elbo > 0.5).all(), "q should be far enough from the posterior to leave a visible gap"
    assert ((bounds[1].log_prob - elbo).abs() < 5 * bounds[1].stderr).all()  # L_1 is the ELBO
    for small, large in ((1, 4), (4, 16)):
        difference = bounds[large].log_prob - bounds[small].log_prob
        error = torch.hypot(bounds[large].stderr, bounds[small].stderr)
        assert (difference > 5 * error).all(), (small, large, difference, error)
    for k in bounds:
        assert (bounds[k].log_prob < truth + 5 * bounds[k].stderr).all(), (k, bounds[k], truth)
    assert ((truth - bounds[1000].log_prob) < 0.1 * (truth - elbo)).all()


def test_iwae_single_estimate_error_bar_covers_log_p():
    """With one estimate of K = 1000, the delta-method error bar sd(w) / (sqrt(K) mean(w)) must
    cover log p(x) within 5 of itself (the bias, of order the error squared, is far smaller)."""
    model, marginal = ppca(exact_posterior=False, variance_factor=2.0, mean_shift=0.3)
    x = marginal.sample((6,))
    estimate = model.iwae_log_prob(x, 1000, seed=5)
    assert (estimate.stderr > 0).all() and (estimate.stderr < 0.1).all()
    assert ((estimate.log_prob - marginal.log_prob(x)).abs() < 5 * estimate.stderr).all()
    single = model.iwae_log_prob(x, 1, seed=5)
    assert torch.isnan(single.stderr).all()


def test_quadrature_reproduces_the_ppca_marginal():
    model, marginal = ppca(exact_posterior=False)
    x = marginal.sample((20,))
    # the integrand is a smooth Gaussian bump of width ~0.4: the midpoint rule with h = 0.1 is
    # exact to rounding; the prior's mass outside [-7, 7]^2 is ~1e-11
    torch.testing.assert_close(quadrature_log_marginal(model, x, spacing=0.1, extent=7.0), marginal.log_prob(x),
                               rtol=0, atol=1e-9)


def test_latent_grid_tiles_the_square_with_cell_midpoints():
    z, log_volume = latent_grid(2, 0.5, 1.0)
    assert z.shape == (16, 2) and log_volume == pytest.approx(2 * math.log(0.5))
    assert sorted(set(z[:, 0].tolist())) == [-0.75, -0.25, 0.25, 0.75]
    with pytest.raises(ValueError, match="latent_dim 1 or 2"):
        latent_grid(3, 0.1, 1.0)


def test_analytic_kl_term_matches_monte_carlo_with_torch_distributions():
    model = VAE(6, 3, hidden=(16,), likelihood="bernoulli").double()
    x = (torch.rand(4, 6, dtype=torch.float64) < 0.5).double()
    _, kl = model.elbo_terms(x)
    mu, logvar = model.encode(x)
    q, prior = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = q.sample((100_000,))  # (N, 4, 3)
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).sum(-1)  # (N, 4)
    mean, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(log_ratio))
    assert ((kl - mean).abs() < 5 * stderr).all(), (kl, mean, stderr)


def test_reparameterised_gradient_of_gaussian_second_moment_matches_closed_form():
    """E[z^2] = mu^2 + sigma^2 for z ~ N(mu, sigma^2): d/dmu = 2 mu, d/dlogvar = sigma^2
    (= d/dsigma * dsigma/dlogvar = 2 sigma * sigma / 2). Per-sample gradients (one leaf per draw)
    give the Monte Carlo mean and its standard error."""
    n, mu0, logvar0 = 200_000, 0.7, math.log(0.5**2)
    mu = torch.full((n, 1), mu0, dtype=torch.float64, requires_grad=True)
    logvar = torch.full((n, 1), logvar0, dtype=torch.float64, requires_grad=True)
    z = VAE.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(6))
    (z**2).sum().backward()
    for grad, exact in ((mu.grad, 2 * mu0), (logvar.grad, math.exp(logvar0))):
        mean, stderr = grad.mean().item(), grad.std().item() / math.sqrt(n)
        assert abs(mean - exact) < 5 * stderr, (mean, exact, stderr)
    # a sample drawn without the trick (detached) carries no gradient to mu
    z_detached = VAE.reparameterize(mu, logvar).detach()
    assert not z_detached.requires_grad


@pytest.mark.parametrize("likelihood", ["bernoulli", "spin", "categorical", "gaussian", "gaussian_fixed"])
def test_decoder_log_likelihood_matches_torch_distributions(likelihood):
    fixed = likelihood == "gaussian_fixed"
    model = VAE(7, 2, hidden=(8,), likelihood="gaussian" if fixed else likelihood, n_levels=5,
                gaussian_logvar=-1.3 if fixed else None).double()
    g = torch.Generator().manual_seed(7)
    z = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)  # (S, n, d)
    params = model.decode(z)
    if likelihood == "bernoulli":
        x = torch.randint(0, 2, (4, 7), generator=g).double()
        expected = Bernoulli(logits=params).log_prob(x).sum(-1)
    elif likelihood == "spin":
        x = 2.0 * torch.randint(0, 2, (4, 7), generator=g).double() - 1
        expected = Bernoulli(logits=params).log_prob((x + 1) / 2).sum(-1)
    elif likelihood == "categorical":
        x = torch.randint(0, 5, (4, 7), generator=g).double()
        expected = Categorical(logits=params).log_prob(x.long()).sum(-1)
    else:
        x = torch.randn(4, 7, generator=g, dtype=torch.float64)
        mean, logvar = params
        expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    torch.testing.assert_close(model.decoder_log_prob(x, z), expected)  # (S, n)
    # the all-pairs matrix used by the quadrature agrees with the direct evaluation
    grid = z[:, 0]  # (3, d)
    torch.testing.assert_close(model.log_likelihood_matrix(x, grid), model.decoder_log_prob(x, grid[None].expand(4, 3, 2).transpose(0, 1)).T)


def test_all_states_quadrature_matches_enumeration_and_sums_to_one():
    model = VAE(6, 2, hidden=(8,), likelihood="spin").double()
    index = torch.arange(64)
    states = 2.0 * ((index[:, None] >> torch.arange(6)) & 1).double() - 1  # state k: s_i = 2 bit_i(k) - 1
    fast = all_states_log_marginal(model, spacing=0.1)
    torch.testing.assert_close(fast, quadrature_log_marginal(model, states, spacing=0.1), rtol=0, atol=1e-10)
    # brute force: a Python loop over grid points, probabilities from torch.distributions
    z, log_volume = latent_grid(2, 0.25, 6.0)
    prior = Normal(0.0, 1.0).log_prob(z).sum(-1) + log_volume  # (G,)
    likelihood = Bernoulli(logits=model.decode(z)[:, None, :]).log_prob((states + 1) / 2).sum(-1)  # (G, 64)
    torch.testing.assert_close(all_states_log_marginal(model, spacing=0.25), torch.logsumexp(prior[:, None] + likelihood, 0))
    # every decoder distribution is normalised, so the states' probabilities add up to the prior
    # mass on the grid: 1 up to the tail outside [-6, 6]^2 (< 4 Phi(-6) = 4e-9) and rounding
    assert fast.exp().sum().item() == pytest.approx(1.0, abs=1e-8)


def test_bernoulli_and_spin_models_agree_under_s_equals_2x_minus_1():
    torch.manual_seed(3)
    binary = VAE(5, 2, hidden=(8,), likelihood="bernoulli").double()
    spin = VAE(5, 2, hidden=(8,), likelihood="spin").double()
    spin.load_state_dict(binary.state_dict())
    z = torch.randn(6, 2, dtype=torch.float64)
    x = torch.randint(0, 2, (6, 5)).double()
    torch.testing.assert_close(binary.decoder_log_prob(x, z), spin.decoder_log_prob(2 * x - 1, z))


@pytest.mark.parametrize("likelihood", ["bernoulli", "spin", "categorical", "gaussian"])
def test_samples_have_the_data_shape_and_values_and_are_reproducible(likelihood):
    model = VAE(9, 2, hidden=(8,), likelihood=likelihood, n_levels=4)
    x = model.sample(50, seed=1)
    assert x.shape == (50, 9) and not x.requires_grad
    torch.testing.assert_close(x, model.sample(50, seed=1))
    allowed = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0), "categorical": (0.0, 1.0, 2.0, 3.0)}.get(likelihood)
    if allowed is not None:
        assert set(x.unique().tolist()) <= set(allowed)
        model.elbo(x)  # samples are valid input
    assert model.sample(5, seed=2, mean=True).shape == (5, 9)


def test_bad_input_gets_a_clear_error():
    model = VAE(4, 2, hidden=(8,), likelihood="spin")
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        model.elbo(torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"expects x in \{-1, \+1\}"):
        model.elbo(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.elbo([[1, 1, 1, 1]])
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(4, likelihood="poisson")
    with pytest.raises(ValueError, match="gaussian_logvar applies to likelihood='gaussian'"):
        VAE(4, likelihood="bernoulli", gaussian_logvar=0.0)
    with pytest.raises(ValueError, match="integer levels 0..16"):
        VAE(4, likelihood="categorical").elbo(torch.full((2, 4), 17.0))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        model.iwae_log_prob(torch.ones(2, 4), 0)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(\.\.\., 2\)"):
        model.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="bernoulli' or 'spin'"):
        all_states_log_marginal(VAE(4, likelihood="gaussian"))


@pytest.mark.slow
def test_training_on_binarised_digits_raises_the_held_out_elbo():
    """200 Adam steps raise the test-set ELBO of a Bernoulli VAE by far more than 5 standard errors of
    the paired per-image difference; the untrained decoder says 64 log 2 nats per image or so."""
    train_x, _ = load_digits("train", form="binary", flatten=True)
    test_x, _ = load_digits("test", form="binary", flatten=True)
    torch.manual_seed(0)
    model = VAE(64, 2, hidden=(64,), likelihood="bernoulli")
    before = model.elbo(test_x, n_samples=16, generator=torch.Generator().manual_seed(0)).detach()
    losses = train(model, train_x, steps=200, batch_size=64, learning_rate=3e-3, seed=0, progress=False)
    after = model.elbo(test_x, n_samples=16, generator=torch.Generator().manual_seed(0)).detach()
    gain = after - before
    assert gain.mean() > 5 * gain.std() / math.sqrt(len(gain)) and gain.mean() > 5.0
    assert len(losses) == 200 and all(math.isfinite(v) for v in losses)
