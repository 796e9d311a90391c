"""Tests of gmcourse.gan (chapter 9).

* the optimal discriminator: a discriminator trained with ``discriminator_loss`` on samples of two
  known densities approaches D* = p_data / (p_data + p_g) on a grid, and V(D*, G) = -log 4 + 2 JS
  against JS by quadrature (5 Monte Carlo standard errors);
* the gradient penalty of a linear critic against its closed form lambda (|w| - 1)^2;
* the vanishing gradient of the minimax generator loss where D(G(z)) ~ 0, against the non-saturating one;
* the protocol (log_prob raises and names gmcourse.metrics), shapes and dtypes, the detached fake
  samples of the discriminator step, k discriminator steps, the moving-average generator,
  determinism of ``fit`` with a seed, and clear errors for bad input.
"""

import math

import pytest
import torch
from scipy import integrate, stats
from torch import nn

from gmcourse.gan import (GAN, ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator, critic_loss,
                          discriminator_loss, generator_loss, gradient_penalty, optimal_discriminator, r1_penalty,
                          value_function)
from gmcourse.toys import EightGaussians

# ----------------------------------------------------------------------------- two known densities (1D)
# p_data: an equal mixture of N(-1, 0.5^2) and N(1, 0.5^2); p_g: N(0.5, 1). Both sampled, both evaluated.
DATA_MEANS, DATA_STD = (-1.0, 1.0), 0.5
G_MEAN, G_STD = 0.5, 1.0


def log_p_data(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    comps = torch.stack([torch.distributions.Normal(m, DATA_STD).log_prob(x) for m in DATA_MEANS])
    return torch.logsumexp(comps, dim=0) - math.log(2)


def log_p_g(x):
    return torch.distributions.Normal(G_MEAN, G_STD).log_prob(torch.as_tensor(x, dtype=torch.float64))


def sample_data(n, g):
    which = torch.randint(0, 2, (n,), generator=g)
    return torch.tensor(DATA_MEANS)[which] + DATA_STD * torch.randn(n, generator=g)


def sample_g(n, g):
    return G_MEAN + G_STD * torch.randn(n, generator=g)


D_STAR_STEPS, D_STAR_BATCH = 400, 512


def train_discriminator(seed, steps=D_STAR_STEPS, batch=D_STAR_BATCH, swap_labels=False):
    """An MLP discriminator trained with discriminator_loss on fresh samples of p_data and p_g
    (Adam 3e-3, cosine decay to 0, so the last steps average out the minibatch noise)."""
    torch.manual_seed(seed)
    net = MLPDiscriminator(data_dim=1, hidden=(32, 32), activation="tanh")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        real, fake = sample_data(batch, g)[:, None], sample_g(batch, g)[:, None]
        real_logits, fake_logits = net(real), net(fake)
        loss = discriminator_loss(fake_logits, real_logits) if swap_labels else discriminator_loss(real_logits, fake_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return net


# The grid where both densities carry mass: [-1.75, 2] (there (p_data + p_g) / 2 >= 0.07 of its
# peak; further out the discriminator sees few training points, and its error there grows with the
# distance instead of shrinking with the budget). D* ranges over [0.23, 0.82] on it.
GRID = torch.linspace(-1.75, 2.0, 76)
# Tolerance of the largest error on the grid, from the training budget (400 steps of 2 x 512
# points). Measured over seeds 0-19: max_x |D(x) - D*(x)| had mean 0.0309 and standard deviation
# 0.0046 (smallest 0.023, largest 0.041): the budget leaves a small bias plus a seed-to-seed spread.
# The tolerance is that mean plus 5 standard deviations, 0.031 + 5 x 0.0046 = 0.054. For scale, an
# untrained discriminator (D ~ 1/2) is off by up to 0.32 and swapped labels (1 - D*) by up to 0.64.
D_STAR_TOLERANCE = 0.0309 + 5 * 0.0046


def d_star_error(net):
    with torch.no_grad():
        d = torch.sigmoid(net(GRID[:, None])).double()
    return float((d - optimal_discriminator(log_p_data(GRID), log_p_g(GRID))).abs().max())


def test_trained_discriminator_approaches_the_optimal_one():
    assert d_star_error(train_discriminator(seed=0)) < D_STAR_TOLERANCE


def test_discriminator_with_swapped_labels_is_far_from_the_optimal_one():
    """The test above can fail: the classic mistake (labels swapped) learns 1 - D*."""
    assert d_star_error(train_discriminator(seed=0, steps=200, swap_labels=True)) > 5 * D_STAR_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("seed", [101, 102])
def test_trained_discriminator_approaches_the_optimal_one_other_seeds(seed):
    assert d_star_error(train_discriminator(seed=seed)) < D_STAR_TOLERANCE


def test_optimal_discriminator_is_the_density_ratio_and_stable():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    lp, lg = log_p_data(x), log_p_g(x)
    expected = lp.exp() / (lp.exp() + lg.exp())
    torch.testing.assert_close(optimal_discriminator(lp, lg), expected)
    # both densities underflow (log p = -2000): the ratio is still defined
    far = optimal_discriminator(torch.tensor([-2000.0, -2000.0]), torch.tensor([-2000.0, -2000.0 + math.log(3)]))
    torch.testing.assert_close(far, torch.tensor([0.5, 0.25]))
    assert float(optimal_discriminator(torch.tensor([0.0]), torch.tensor([-math.inf]))) == 1.0


def js_by_quadrature():
    """JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, with scipy's adaptive quad."""
    def p(x):
        return 0.5 * sum(stats.norm.pdf(x, m, DATA_STD) for m in DATA_MEANS)

    def q(x):
        return stats.norm.pdf(x, G_MEAN, G_STD)

    def integrand(x):
        px, qx = p(x), q(x)
        mx = 0.5 * (px + qx)
        return 0.5 * (px * math.log(px / mx) if px > 0 else 0.0) + 0.5 * (qx * math.log(qx / mx) if qx > 0 else 0.0)

    value, error = integrate.quad(integrand, -12, 13, points=[-1, 0.5, 1], limit=200)
    assert error < 1e-9
    return value


def test_value_at_the_optimal_discriminator_is_minus_log4_plus_twice_js():
    """V(D*, G) estimated by value_function on 200,000 samples of each density, with logits
    log p_data - log p_g (the logit of D*); compared to -log 4 + 2 JS within 5 standard errors.

    V = mean_i log D*(x_i) + mean_j log(1 - D*(G(z_j))): two independent means, so its variance is
    Var[log D*(x)] / n + Var[log(1 - D*(x'))] / n, estimated from the same samples."""
    js = js_by_quadrature()
    assert 0 < js < math.log(2)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    real, fake = sample_data(n, g).double(), sample_g(n, g).double()
    real_logits, fake_logits = log_p_data(real) - log_p_g(real), log_p_data(fake) - log_p_g(fake)
    # optimal_discriminator's logit is the log-density ratio
    torch.testing.assert_close(torch.logit(optimal_discriminator(log_p_data(real), log_p_g(real))), real_logits)
    v = float(value_function(real_logits, fake_logits))
    stderr = math.sqrt(torch.nn.functional.logsigmoid(real_logits).var().item() / n
                       + torch.nn.functional.logsigmoid(-fake_logits).var().item() / n)
    assert abs(v - (-math.log(4) + 2 * js)) < 5 * stderr, (v, -math.log(4) + 2 * js, stderr)
    assert stderr < 2e-3  # a sharp check: 2 JS here is about 0.2
    # any other discriminator does worse (D* maximises V): the constant 1/2, and D* perturbed
    assert float(value_function(torch.zeros(n), torch.zeros(n))) == pytest.approx(-math.log(4))
    assert float(value_function(real_logits + 0.5, fake_logits + 0.5)) < v - 5 * stderr


# ----------------------------------------------------------------------------- losses on logits

def test_losses_on_logits_are_the_cross_entropies_and_finite_at_extreme_logits():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-0.5, 1.5])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_v = torch.log(d_real).mean() + torch.log(1 - d_fake).mean()
    torch.testing.assert_close(value_function(real, fake), expected_v)
    torch.testing.assert_close(discriminator_loss(real, fake), -expected_v)
    torch.testing.assert_close(generator_loss(fake, "minimax"), torch.log(1 - d_fake).mean())
    torch.testing.assert_close(generator_loss(fake, "non_saturating"), -torch.log(d_fake).mean())
    torch.testing.assert_close(generator_loss(fake, "wgan"), -fake.mean())
    torch.testing.assert_close(critic_loss(real, fake), fake.mean() - real.mean())
    # D within rounding of 0 or 1: log(sigmoid) would give -inf, logsigmoid gives the exact value
    v = value_function(torch.tensor([-200.0]), torch.tensor([200.0]))
    torch.testing.assert_close(v, torch.tensor(-400.0))
    torch.testing.assert_close(generator_loss(torch.tensor([-200.0]), "non_saturating"), torch.tensor(200.0))


def test_non_saturating_loss_has_a_much_larger_gradient_where_d_rejects_the_samples():
    """G(z) = z + theta in 2D; a linear discriminator l(x) = w.x + b with b = -10 rejects every sample
    (D(G(z)) ~ 4e-5). Through autograd, d/dtheta of the minimax loss is -mean(sigma(l)) w, of the
    non-saturating one -mean(1 - sigma(l)) w: the first vanishes with D(G(z)), the second does not."""
    g = torch.Generator().manual_seed(0)
    z = 0.1 * torch.randn(256, 2, generator=g)
    w = torch.tensor([1.0, -0.5])
    grads = {}
    for kind in ("minimax", "non_saturating"):
        theta = torch.zeros(2, requires_grad=True)
        logits = (z + theta) @ w - 10.0
        generator_loss(logits, kind).backward()
        grads[kind] = theta.grad
        d = torch.sigmoid(logits.detach())
        expected = -(d if kind == "minimax" else 1 - d).mean() * w
        torch.testing.assert_close(theta.grad, expected)
    assert float(torch.sigmoid(((z @ w) - 10.0)).max()) < 1e-4  # D(G(z)) ~ 0 indeed
    assert grads["non_saturating"].norm() > 1e4 * grads["minimax"].norm()
    # same direction: both move the samples towards where D says "data"
    assert float(torch.dot(grads["non_saturating"], grads["minimax"])) > 0


# ----------------------------------------------------------------------------- penalties

@pytest.mark.parametrize("weight", [10.0, 0.5])
def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared(weight):
    torch.manual_seed(1)
    linear = nn.Linear(3, 1)
    critic = lambda x: linear(x).squeeze(-1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g) + 2
    penalty = gradient_penalty(critic, real, fake, generator=g, weight=weight)
    w = linear.weight.detach()[0]
    torch.testing.assert_close(penalty, weight * (w.norm() - 1) ** 2)
    penalty.backward()  # the penalty trains the critic: d/dw lambda (|w| - 1)^2 = 2 lambda (|w| - 1) w / |w|
    torch.testing.assert_close(linear.weight.grad[0], 2 * weight * (w.norm() - 1) * w / w.norm())


def test_gradient_penalty_of_a_quadratic_critic_at_known_points():
    """D(x) = |x|^2 / 2 has gradient x; with real = fake every interpolate is that point, so the
    penalty is lambda * mean (|x| - 1)^2 whatever the interpolation weights."""
    x = torch.tensor([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]])
    penalty = gradient_penalty(lambda y: 0.5 * (y**2).sum(1), x, x.clone(), weight=2.0)
    torch.testing.assert_close(penalty, torch.tensor(2.0 * (16 + 0.25 + 0) / 3))


def test_r1_penalty_of_a_linear_discriminator():
    linear = nn.Linear(2, 1)
    penalty = r1_penalty(lambda x: linear(x).squeeze(-1), torch.randn(10, 2), weight=4.0)
    torch.testing.assert_close(penalty, 0.5 * 4.0 * linear.weight.detach().pow(2).sum())


def test_discriminator_objective_is_the_loss_plus_its_penalties():
    """One forward pass for data and samples together gives the same loss as separate calls."""
    model = small_gan(r1_weight=0.7)
    x, fake = torch.randn(6, 2), torch.randn(6, 2)
    d = model.discriminator_net
    expected = discriminator_loss(d(x), d(fake)) + r1_penalty(d, x, weight=0.7)
    torch.testing.assert_close(model.discriminator_objective(x, fake), expected)
    wgan = small_gan(kind="wgan-gp", gp_weight=3.0)
    d = wgan.discriminator_net
    expected = critic_loss(d(x), d(fake)) + gradient_penalty(d, x, fake, torch.Generator().manual_seed(5), weight=3.0)
    torch.testing.assert_close(wgan.discriminator_objective(x, fake, torch.Generator().manual_seed(5)), expected)


# ----------------------------------------------------------------------------- networks and the model

def small_gan(**kwargs):
    torch.manual_seed(0)
    return GAN(MLPGenerator(3, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), 3, **kwargs)


def test_network_shapes_and_dtypes():
    z = torch.randn(5, 3)
    assert MLPGenerator(3, 2, (8,))(z).shape == (5, 2)
    logits = MLPDiscriminator(2, (8, 8), spectral_norm=True)(torch.randn(5, 2))
    assert logits.shape == (5,) and logits.dtype == torch.float32
    with torch.no_grad():
        images = ConvGenerator(latent_dim=4, channels=8)(torch.randn(5, 4))
    assert images.shape == (5, 64) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    critic = ConvDiscriminator(channels=8)
    torch.testing.assert_close(critic(images), critic(images.view(5, 8, 8)))
    assert critic(images).shape == (5,)


def test_gan_protocol_sample_and_loss():
    model = small_gan()
    assert model.log_prob_kind == "none"
    x = model.sample(7, seed=3)
    assert x.shape == (7, 2) and x.dtype == torch.float32 and not x.requires_grad
    torch.testing.assert_close(model.sample(7, seed=3), x)
    torch.testing.assert_close(model.sample(7, generator=torch.Generator().manual_seed(3)), x)
    assert not torch.equal(model.sample(7, seed=4), x)
    loss = model.loss(torch.randn(9, 2), generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and loss.requires_grad and loss.item() < 0  # V <= 0
    assert small_gan(kind="wgan-gp").loss(torch.randn(9, 2)).dim() == 0


def test_log_prob_raises_and_points_to_the_metrics():
    with pytest.raises(NotImplementedError, match="gmcourse.metrics"):
        small_gan().log_prob(torch.randn(3, 2))


def test_discriminator_step_does_not_move_the_generator():
    """A discriminator optimiser that (wrongly) holds the generator's weights too must leave them
    unchanged, because the fake samples are detached; the generator step (lr 0 here) moves nothing."""
    model = small_gan()
    before = [p.detach().clone() for p in model.generator_net.parameters()]
    d_opt = torch.optim.SGD(list(model.discriminator_net.parameters()) + list(model.generator_net.parameters()), lr=1.0)
    g_opt = torch.optim.SGD(model.generator_net.parameters(), lr=0.0)
    d_before = [p.detach().clone() for p in model.discriminator_net.parameters()]
    model.train_step(torch.randn(32, 2), d_opt, g_opt, generator=torch.Generator().manual_seed(0))
    for p, q in zip(model.generator_net.parameters(), before):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    assert any(not torch.equal(p.detach(), q) for p, q in zip(model.discriminator_net.parameters(), d_before))


class CountingSGD(torch.optim.SGD):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes = []

    def step(self, closure=None):
        self.batch_sizes.append(None)
        return super().step(closure)


@pytest.mark.parametrize("kind", ["non_saturating", "minimax", "wgan-gp"])
def test_train_step_takes_k_discriminator_steps_per_generator_step(kind):
    model = small_gan(kind=kind, discriminator_steps=3)
    d_opt = CountingSGD(model.discriminator_net.parameters(), lr=1e-3)
    g_opt = CountingSGD(model.generator_net.parameters(), lr=1e-3)
    losses = model.train_step(torch.randn(30, 2), d_opt, g_opt, generator=torch.Generator().manual_seed(0))
    assert len(d_opt.batch_sizes) == 3 and len(g_opt.batch_sizes) == 1
    assert set(losses) == {"d_loss", "g_loss"} and all(math.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="multiple of discriminator_steps"):
        model.train_step(torch.randn(31, 2), d_opt, g_opt)


def test_moving_average_generator_follows_its_update_rule_and_is_sampled():
    model = small_gan(ema_decay=0.999)
    start = [p.detach().clone() for p in model.generator_net.parameters()]
    d_opt, g_opt = model.optimizers(lr=1e-2)
    model.train_step(torch.randn(16, 2), d_opt, g_opt, generator=torch.Generator().manual_seed(0))
    decay = min(0.999, 2 / 11)  # after the first generator step: (1 + t) / (10 + t) with t = 1
    for avg, new, old in zip(model.ema_generator.parameters(), model.generator_net.parameters(), start):
        torch.testing.assert_close(avg, decay * old + (1 - decay) * new.detach())
    with torch.no_grad():
        expected = model.ema_generator(model.latent(4, seed=0))
    torch.testing.assert_close(model.sample(4, seed=0), expected)
    assert not torch.equal(expected, model.generator_net(model.latent(4, seed=0)).detach())


def test_fit_is_deterministic_given_the_seed_and_records_the_history():
    data = EightGaussians().sample

    def fit(seed):
        model = small_gan(kind="wgan-gp", r1_weight=0.1)
        history = model.fit(data, steps=12, batch_size=16, lr=1e-3, seed=seed, eval_every=5,
                            evaluate=lambda m: float(m.sample(50, seed=0).norm()), progress=False)
        return model, history

    (m1, h1), (m2, h2), (m3, h3) = fit(0), fit(0), fit(1)
    assert h1 == h2
    torch.testing.assert_close(m1.sample(20, seed=0), m2.sample(20, seed=0), rtol=0, atol=0)
    assert h1["d_loss"] != h3["d_loss"]
    assert h1["step"] == list(range(1, 13)) and len(h1["d_loss"]) == len(h1["g_loss"]) == 12
    assert h1["eval_step"] == [5, 10, 12] and len(h1["eval"]) == 3
    # a tensor of data points works as well
    h4 = small_gan().fit(EightGaussians().sample(100, seed=0), steps=3, batch_size=8, progress=False)
    assert len(h4["d_loss"]) == 3


def test_bad_input_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        small_gan(kind="hinge")
    with pytest.raises(ValueError, match="kind must be one of"):
        generator_loss(torch.zeros(3), kind="nonsaturating")
    with pytest.raises(ValueError, match="discriminator_steps"):
        small_gan(discriminator_steps=0)
    with pytest.raises(ValueError, match="latent_dim"):
        GAN(MLPGenerator(3), MLPDiscriminator(), latent_dim=2)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        value_function(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point"):
        discriminator_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        MLPDiscriminator()(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(n, 64\) or \(n, 8, 8\)"):
        ConvDiscriminator(channels=4)(torch.zeros(4, 63))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(MLPDiscriminator(), torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="same shape"):
        optimal_discriminator(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="evaluate"):
        small_gan().fit(EightGaussians().sample, steps=2, eval_every=1, progress=False)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        small_gan().optimizers(lr=0)
    with pytest.raises(ValueError, match="ema_decay"):
        small_gan(ema_decay=1.0)
    with pytest.raises(TypeError, match="data must be a tensor"):
        small_gan().fit([[0.0, 1.0]], steps=1, progress=False)
