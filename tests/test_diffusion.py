"""Tests of gmcourse.diffusion: the forward process against its closed form, the posterior against
Bayes' rule on a grid, the schedules, the sampler and the ELBO with the exact noise predictor of a
Gaussian and of the 8-Gaussian mixture (no training involved), and the reduction of each KL term of
the ELBO to a weighted squared error of noise predictions.

Statistical tolerances are 5 standard errors of the quantity compared (derived where used)."""

import math

import pytest
import torch

from gmcourse.diffusion import (DDPM, EMA, GaussianMixtureNoisePredictor, MLPNoisePredictor, ConvNoisePredictor,
                                NoiseSchedule, forward_chain, posterior_mean_variance, q_sample, sinusoidal_embedding)
from gmcourse.divergences import gaussian_kl
from gmcourse.toys import EightGaussians

LINEAR = NoiseSchedule.linear()  # T = 1000, beta from 1e-4 to 0.02 (Ho et al. 2020)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _check_moments(x, mean, var, sigmas=5.0):
    """Sample mean and variance (per coordinate) of x (n, D) against the truth, at `sigmas` standard
    errors: se(mean) = sqrt(var / n); se(sample variance) = var sqrt(2 / (n - 1)) for Gaussian data
    (used here also for mixtures, whose kurtosis is then stated where it matters)."""
    n = x.shape[0]
    x = x.double()
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    assert ((x.mean(0) - mean).abs() <= sigmas * (var / n).sqrt()).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() <= sigmas * var * math.sqrt(2 / (n - 1))).all(), (x.var(0), var)


# ----------------------------------------------------------------------------- schedules

def test_linear_schedule_endpoints_and_derived_quantities():
    s = LINEAR
    assert s.T == 1000 and s.betas.shape == (1001,) and s.betas.dtype == torch.float64
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1
    torch.testing.assert_close(s.betas[1], torch.tensor(1e-4, dtype=torch.float64))
    torch.testing.assert_close(s.betas[-1], torch.tensor(0.02, dtype=torch.float64))
    torch.testing.assert_close(s.betas[2] - s.betas[1], torch.tensor((0.02 - 1e-4) / 999, dtype=torch.float64))
    # alpha_bar_t = prod_{s <= t} (1 - beta_s), computed here as a running product in Python floats
    betas = s.betas.tolist()
    for t in (1, 2, 500, 1000):
        running = math.prod(1 - b for b in betas[1:t + 1])
        assert math.isclose(float(s.alpha_bars[t]), running, rel_tol=1e-12)
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()  # strictly decreasing
    assert float(s.alpha_bars[-1]) < 1e-4  # x_T is nearly pure noise
    # posterior variance (1 - abar_{t-1}) / (1 - abar_t) beta_t; 0 at t = 0, 1; below beta_t
    assert s.posterior_variances[0] == 0 and s.posterior_variances[1] == 0
    t = 700
    expected = (1 - float(s.alpha_bars[t - 1])) / (1 - float(s.alpha_bars[t])) * float(s.betas[t])
    assert math.isclose(float(s.posterior_variances[t]), expected, rel_tol=1e-12)
    assert (s.posterior_variances[2:] < s.betas[2:]).all()


def test_cosine_schedule_follows_nichol_dhariwal():
    T, s_offset = 200, 0.008
    s = NoiseSchedule.cosine(T, s=s_offset)

    def f(t):
        return math.cos((t / T + s_offset) / (1 + s_offset) * math.pi / 2) ** 2

    unclipped = [t for t in range(1, T + 1) if 1 - f(t) / f(t - 1) < 0.999]
    assert len(unclipped) == T - 1  # only the last step is clipped at max_beta
    for t in (1, 50, 100, 199):
        assert math.isclose(float(s.alpha_bars[t]), f(t) / f(0), rel_tol=1e-10)
    assert float(s.betas[-1]) == pytest.approx(0.999)
    assert s.alpha_bars[0] == 1 and (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="beta_t must lie in"):
        NoiseSchedule([0.1, 1.0])
    with pytest.raises(ValueError, match="T must be"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        NoiseSchedule.linear(10, 0.1, 0.01)


# ----------------------------------------------------------------------------- forward process

def test_iterated_forward_chain_matches_closed_form_kernel():
    n = 4000
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(n, 2)
    path = forward_chain(x0, 1000, LINEAR, generator=_gen(0), return_trajectory=True)  # (1001, n, 2)
    assert path.shape == (1001, n, 2)
    torch.testing.assert_close(path[0], x0)
    for t in (1, 10, 300, 1000):
        abar = float(LINEAR.alpha_bars[t])
        _check_moments(path[t], math.sqrt(abar) * x0[0], torch.full((2,), 1 - abar))
    # the closed-form draw has the same moments, and a given noise gives the formula exactly
    t = 300
    direct = q_sample(x0, t, LINEAR, generator=_gen(1))
    abar = float(LINEAR.alpha_bars[t])
    _check_moments(direct, math.sqrt(abar) * x0[0], torch.full((2,), 1 - abar))
    noise = torch.randn(n, 2, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(q_sample(x0, t, LINEAR, noise=noise), math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise)
    torch.testing.assert_close(q_sample(x0, 0, LINEAR, noise=noise), x0)  # t = 0: no noise
    steps = torch.tensor([0, 1000]).repeat(n // 2)  # per-example time steps
    mixed = q_sample(x0, steps, LINEAR, noise=noise)
    torch.testing.assert_close(mixed[0], x0[0])
    torch.testing.assert_close(mixed[1], math.sqrt(float(LINEAR.alpha_bars[1000])) * x0[1]
                               + math.sqrt(1 - float(LINEAR.alpha_bars[1000])) * noise[1])


@pytest.mark.parametrize("t", [1, 2, 10, 500, 1000])
def test_posterior_matches_bayes_rule_on_a_grid(t):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): normalise the
    product on a fine 1D grid and take its mean and variance (no formula of the posterior used)."""
    s = LINEAR
    x0, x_t = 0.7, -0.4
    mean, variance = posterior_mean_variance(torch.tensor([[x_t]], dtype=torch.float64),
                                             torch.tensor([[x0]], dtype=torch.float64), t, s)
    assert mean.shape == variance.shape == (1, 1)
    if t == 1:  # abar_0 = 1: x_0 is known, the posterior is the point mass at x_0
        assert float(variance) == 0 and math.isclose(float(mean), x0, rel_tol=1e-12)
        return
    abar_prev, alpha, beta = float(s.alpha_bars[t - 1]), float(s.alphas[t]), float(s.betas[t])
    # the posterior lies between the centres of its two factors, the likelihood in x_{t-1}
    # (x_t / sqrt(alpha), sd sqrt(beta / alpha)) and the prior (sqrt(abar_{t-1}) x_0, sd sqrt(1 - abar_{t-1})):
    # a grid 12 of the wider sd beyond both centres holds all of it
    centres = (x_t / math.sqrt(alpha), math.sqrt(abar_prev) * x0)
    half = 12 * max(math.sqrt(beta / alpha), math.sqrt(1 - abar_prev))
    grid = torch.linspace(min(centres) - half, max(centres) + half, 400_001, dtype=torch.float64)
    log_w = (-(x_t - math.sqrt(alpha) * grid) ** 2 / (2 * beta)
             - (grid - math.sqrt(abar_prev) * x0) ** 2 / (2 * (1 - abar_prev)))
    w = torch.softmax(log_w, dim=0)
    grid_mean = float((w * grid).sum())
    grid_var = float((w * (grid - grid_mean) ** 2).sum())
    assert math.isclose(float(mean), grid_mean, rel_tol=1e-7, abs_tol=1e-9)
    assert math.isclose(float(variance), grid_var, rel_tol=1e-5)


def test_posterior_accepts_per_example_steps_and_rejects_t0():
    x = torch.randn(3, 2, generator=_gen(0))
    mean, var = posterior_mean_variance(x, x + 1, torch.tensor([2, 50, 1000]), LINEAR)
    assert mean.shape == var.shape == (3, 2)
    torch.testing.assert_close(var[:, 0], LINEAR.posterior_variances[[2, 50, 1000]].float())
    with pytest.raises(ValueError, match=r"time steps must lie in 1\.\.1000"):
        posterior_mean_variance(x, x, 0, LINEAR)
    with pytest.raises(ValueError, match="same shape"):
        posterior_mean_variance(x, x[:2], 5, LINEAR)


# ----------------------------------------------------------------------------- exact noise predictor

def test_exact_noise_predictor_is_minus_scaled_score_by_autograd():
    """eps*(x_t, t) = -sqrt(1 - abar_t) grad log q_t(x_t): the closed form against autograd of the
    mixture's log-density."""
    exact = GaussianMixtureNoisePredictor.eight_gaussians(LINEAR)
    x = (3 * torch.randn(64, 2, generator=_gen(0), dtype=torch.float64)).requires_grad_()
    t = torch.randint(0, 1001, (64,), generator=_gen(1))
    grad, = torch.autograd.grad(exact.log_prob_noisy(x, t).sum(), x)
    abar = LINEAR.alpha_bars[t].unsqueeze(-1)
    torch.testing.assert_close(exact(x.detach(), t), -(1 - abar).sqrt() * grad)
    # at t = 0 the noisy density is the data density itself
    toy = EightGaussians()
    torch.testing.assert_close(exact.log_prob_noisy(x.detach(), 0), toy.log_prob(x.detach()))


def test_exact_sampler_reproduces_a_gaussian():
    """Ancestral sampling with eps* of N(m, diag s^2) returns that Gaussian (moments at 5 sigma)."""
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    model = DDPM(GaussianMixtureNoisePredictor.gaussian(mean, std, LINEAR), LINEAR)
    x = model.sample(4000, seed=0)
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    _check_moments(x, mean, std**2)


@pytest.mark.slow
def test_exact_sampler_reproduces_eight_gaussians():
    """With eps* of the 8-Gaussian mixture the sampler's output is indistinguishable from data:
    MMD^2 within 5 standard errors of 0, and the high-quality fraction (within 3 std of a mode)
    within 5 binomial standard errors of its exact value for the data, 1 - exp(-9/2)."""
    from gmcourse.metrics import mmd2, mode_coverage

    toy = EightGaussians()
    model = DDPM(GaussianMixtureNoisePredictor.eight_gaussians(LINEAR), LINEAR)
    n = 2000
    x = model.sample(n, seed=1)
    data = toy.sample(n, seed=2)
    estimate = mmd2(x, data)
    assert abs(estimate.mean) <= 5 * estimate.stderr, estimate
    report = mode_coverage(x, toy)
    p = 1 - math.exp(-4.5)  # P(|x - mu| < 3 std) for a 2D isotropic Gaussian
    assert abs(report.high_quality_fraction - p) <= 5 * math.sqrt(p * (1 - p) / n), report
    assert report.modes_covered == 8
    # moments: mean 0; variance per coordinate r^2 / 2 + std^2. The variance's standard error for
    # this mixture is sqrt((E x^4 - var^2) / n) with E x^4 = 3 r^4 / 8 + 3 r^2 std^2 + 3 std^4.
    r, s2 = 2.0, 0.01
    var = r**2 / 2 + s2
    fourth = 3 * r**4 / 8 + 3 * r**2 * s2 + 3 * s2**2
    xd = x.double()
    assert (xd.mean(0).abs() <= 5 * math.sqrt(var / n)).all()
    assert ((xd.var(0) - var).abs() <= 5 * math.sqrt((fourth - var**2) / n)).all()


# ----------------------------------------------------------------------------- ELBO

def test_elbo_is_tight_for_standard_normal_data_with_beta_variance():
    """For x_0 ~ N(0, I) every marginal q_t is N(0, I) and the true reverse kernel is
    N(sqrt(alpha_t) x_t, beta_t I): the model with eps* and sigma_t^2 = beta_t is exact, so the
    ELBO equals log p(x) on average (the gap KL(q(x_1:T|x_0) || p(x_1:T|x_0)) is 0): the paired
    difference ELBO - log p is 0 within 5 standard errors. The "posterior" variance is too small
    here and leaves a positive gap (more than 5 standard errors)."""
    n = 1000
    x = torch.randn(n, 2, generator=_gen(3), dtype=torch.float64)
    log_p = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
    for variance in ("beta", "posterior"):
        model = DDPM(GaussianMixtureNoisePredictor.gaussian([0.0, 0.0], 1.0, LINEAR), LINEAR, variance=variance)
        terms = model.elbo_terms(x, generator=_gen(4))
        assert terms["elbo"].shape == (n,) and terms["kl"].shape == (n, 1001)
        assert (terms["kl"][:, :2] == 0).all() and (terms["kl"] >= -1e-9).all()
        gap = log_p - terms["elbo"]
        stderr = float(gap.std()) / math.sqrt(n)
        if variance == "beta":
            assert abs(float(gap.mean())) <= 5 * stderr, (float(gap.mean()), stderr)
        else:
            assert float(gap.mean()) > 5 * stderr


def test_elbo_with_data_standardisation_includes_the_jacobian():
    """DDPM on y = (x - m) / s with the exact N(0, I) predictor and beta variance is exactly
    N(m, s^2): the ELBO in data units equals log N(x; m, s^2) within 5 standard errors."""
    m, s, n = torch.tensor([3.0, -1.0]), torch.tensor([0.2, 5.0]), 1000
    x = m + s * torch.randn(n, 2, generator=_gen(5))
    log_p = torch.distributions.Normal(m.double(), s.double()).log_prob(x.double()).sum(1)
    model = DDPM(GaussianMixtureNoisePredictor.gaussian([0.0, 0.0], 1.0, LINEAR), LINEAR, variance="beta",
                 data_shift=m, data_scale=s)
    gap = log_p - model.elbo(x, generator=_gen(6))
    assert abs(float(gap.mean())) <= 5 * float(gap.std()) / math.sqrt(n)
    y = model.sample(3000, seed=7)
    _check_moments(y, m, s**2)


@pytest.mark.slow
def test_elbo_of_exact_eight_gaussians_model_bounds_the_entropy():
    """-E[ELBO] >= H(p_data): the ELBO is a lower bound on log p_theta and E[-log p_theta] >= H.
    Paired per point, log p(x) - ELBO(x) has a mean >= -5 standard errors; and the bound is not
    vacuous (within 2 nats)."""
    toy = EightGaussians()
    model = DDPM(GaussianMixtureNoisePredictor.eight_gaussians(LINEAR), LINEAR)
    x = toy.sample(400, seed=8)
    gap = toy.log_prob(x.double()) - model.log_prob(x, generator=_gen(9))
    mean, stderr = float(gap.mean()), float(gap.std()) / math.sqrt(len(x))
    assert mean >= -5 * stderr
    assert mean < 2.0


def test_kl_term_is_weighted_squared_noise_error():
    """KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) computed with gaussian_kl from the two means
    equals lambda_t ||eps - eps_theta||^2 (+ a constant for sigma_t^2 = beta_t), eq. ch10-eq-eps-loss."""
    torch.manual_seed(0)
    net = MLPNoisePredictor(hidden=(32, 32)).double()
    torch.nn.init.normal_(net.out.weight)  # a predictor that is not zero
    x0 = torch.randn(50, 2, generator=_gen(10), dtype=torch.float64)
    eps = torch.randn(50, 2, generator=_gen(11), dtype=torch.float64)
    t = torch.randint(2, 1001, (50,), generator=_gen(12))
    x_t = q_sample(x0, t, LINEAR, noise=eps)
    for variance in ("posterior", "beta"):
        model = DDPM(net, LINEAR, variance=variance)
        mean, var = posterior_mean_variance(x_t, x0, t, LINEAR)
        sigma2 = model.sigma2[t].unsqueeze(-1).expand_as(var)
        with torch.no_grad():
            eps_theta = model.predict_noise(x_t, t)
            kl = gaussian_kl(mean, var.log(), model.reverse_mean(x_t, t), sigma2.log())
        constant = 0.5 * (sigma2.log() - var.log() + var / sigma2 - 1).sum(-1)
        torch.testing.assert_close(kl, model.kl_weights()[t] * ((eps - eps_theta) ** 2).sum(-1) + constant)
        if variance == "posterior":
            torch.testing.assert_close(constant, torch.zeros_like(constant))


# ----------------------------------------------------------------------------- model, training, errors

def test_shapes_determinism_and_protocol():
    small = NoiseSchedule.linear(20, 1e-3, 0.2)
    torch.manual_seed(0)
    model = DDPM(MLPNoisePredictor(T=20), small)
    assert model.log_prob_kind == "lower_bound"
    a, b = model.sample(7, seed=3), model.sample(7, generator=_gen(3))
    assert a.shape == (7, 2) and torch.equal(a, b)
    path = model.sample(5, seed=3, return_trajectory=True)
    assert path.shape == (21, 5, 2)
    torch.testing.assert_close(path[0], model.sample(5, seed=3))
    x = torch.randn(6, 2, generator=_gen(0))
    torch.testing.assert_close(model.log_prob(x, generator=_gen(1)), model.elbo(x, generator=_gen(1)))
    assert model.elbo(x).shape == (6,)
    loss = model.loss(x, generator=_gen(2))
    assert loss.dim() == 0 and loss.requires_grad
    for weighting in ("elbo", "min-snr"):
        assert torch.isfinite(model.loss(x, generator=_gen(2), weighting=weighting))
    # the untrained network predicts eps = 0, so the simple loss is the mean of eps^2 over the batch
    gen = _gen(2)
    t = torch.randint(1, 21, (6,), generator=gen)
    eps = torch.randn(6, 2, generator=gen)
    torch.testing.assert_close(loss, (eps**2).mean())
    digits = DDPM(ConvNoisePredictor(channels=8, n_layers=2, T=20), small, data_shift=0.5, data_scale=0.5,
                  sample_range=(0.0, 1.0))
    pixels = digits.sample(3, seed=0)
    assert pixels.shape == (3, 64) and pixels.min() >= 0 and pixels.max() <= 1
    assert sinusoidal_embedding(torch.arange(4), 6).shape == (4, 6)


def test_fit_reduces_the_loss_and_ema_averages():
    toy = EightGaussians()
    torch.manual_seed(0)
    model = DDPM(MLPNoisePredictor(hidden=(64, 64)), LINEAR)
    fresh = toy.sample(4096, seed=20)

    def fresh_loss(m):
        with torch.no_grad():
            return float(m.loss(fresh, generator=_gen(21)))

    before = fresh_loss(model)
    data_gen = _gen(22)
    history = model.fit(lambda m: toy.sample(m, generator=data_gen), steps=200, batch_size=128, lr=3e-3,
                        ema_decay=0.99, lr_schedule="cosine", warmup_fraction=0.1, eval_every=100,
                        evaluate=fresh_loss, progress=False)
    assert history["step"] == list(range(1, 201)) and len(history["loss"]) == 200
    assert history["eval_step"] == [100, 200]
    after = fresh_loss(model)
    assert after < 0.6 * before  # 1.0 untrained (eps_theta = 0); a trained net explains much of eps
    assert after == pytest.approx(history["eval"][-1])  # the EMA weights were loaded at the end
    ema = EMA(torch.nn.Linear(2, 2), decay=0.5)
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(2, 2), decay=1.0)
    assert ema.updates == 0


def test_bad_input_errors():
    model = DDPM(MLPNoisePredictor(), LINEAR)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        model.loss(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        model.elbo(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.1000"):
        q_sample(torch.zeros(2, 2), 1001, LINEAR)
    with pytest.raises(TypeError, match="integer"):
        q_sample(torch.zeros(2, 2), torch.tensor([0.5, 1.0]), LINEAR)
    with pytest.raises(ValueError, match="noise must have the shape"):
        q_sample(torch.zeros(2, 2), 1, LINEAR, noise=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="T=1000"):
        DDPM(MLPNoisePredictor(T=1000), NoiseSchedule.linear(10))
    with pytest.raises(ValueError, match="variance"):
        DDPM(MLPNoisePredictor(), LINEAR, variance="large")
    with pytest.raises(ValueError, match="weighting"):
        model.loss(torch.zeros(4, 2), weighting="snr")
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixtureNoisePredictor(torch.zeros(2, 2), 1.0, [0.3, 0.3], LINEAR)
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        q_sample(torch.zeros(2, 2), 1, "linear")
