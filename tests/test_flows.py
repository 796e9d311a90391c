"""Tests of gmcourse.flows against independent oracles.

* log-determinants: dense Jacobians from torch.func.jacrev (RealNVP) or central finite
  differences (the residual block, whose own log-det already uses jacrev), then slogdet;
* densities: a one-layer flow with constant s and t is an affine map of a Gaussian, whose
  log-density torch.distributions knows; ``log_prob`` equals the base density of
  torch.distributions at f(x) plus the jacrev log-determinant; every density must integrate to 1
  on a grid; maximum likelihood must move the flow towards a Gaussian it can represent;
* sampling vs log_prob: Pearson's chi^2 of samples against the grid probabilities, at 5 sigma;
* residual block: Banach's a-priori bound on the fixed-point iteration and the Lipschitz bound.

Grid integrals use the midpoint rule on the box [-10, 10]^2 with spacing h = 0.1, in float64.
The test densities are smooth (tanh networks) and decay fast, so by Poisson summation the lattice
sum converges faster than any power of h (measured while writing these tests: the integral moves
by < 1e-13 between h = 0.1 and h = 0.2, and between half-widths 8 and 10); the mass outside the
box is checked to be small by asking that none of the model's own samples falls outside. The
tolerance 1e-6 leaves room for all that and still catches every classic mistake by orders of
magnitude: a sign-flipped log-det changes the integral by a factor E[exp(-2 sum s)] (several per
cent for these layers), a missing base normalisation by 2 pi.
"""

import math

import pytest
import scipy.stats
import torch
from torch.distributions import Independent, Normal

from gmcourse.flows import (
    AffineCoupling, RealNVP, ResidualFlow, ResidualFlowBlock, alternating_mask, standard_normal_log_prob,
    warmup_cosine_lr,
)
from gmcourse.protocol import GenerativeModel

FIVE_SIGMA_P_VALUE = scipy.stats.norm.sf(5.0)
BOX, SPACING = 10.0, 0.1
BINS, CELLS_PER_BIN = 40, 5  # chi^2 bins of 0.5 x 0.5


def dense_log_det(function, x):
    """log|det d function / dx| at every row of x (n, D), from torch.func.jacrev + slogdet."""
    jacobian = torch.func.vmap(torch.func.jacrev(lambda point: function(point[None])[0]))(x)  # (n, D, D)
    return torch.linalg.slogdet(jacobian)[1]


def grid(box=BOX, h=SPACING):
    """Cell centres of the square [-box, box]^2 with spacing h, shape (cells, 2), float64."""
    axis = -box + h * (torch.arange(round(2 * box / h), dtype=torch.float64) + 0.5)
    return torch.cartesian_prod(axis, axis)


def random_realnvp(dim=2, n_layers=4, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("activation", "tanh")
    return RealNVP(dim, n_layers, hidden=16, identity_init=False, **kw).double()


# ----------------------------------------------------------------------------- affine coupling

@pytest.mark.parametrize("dim, bound", [(2, None), (5, 2.0)])
def test_coupling_logdet_matches_jacrev_slogdet(dim, bound):
    torch.manual_seed(1)
    mask = (torch.rand(dim) < 0.5).double()
    mask[0], mask[-1] = 1.0, 0.0  # keep one coordinate, move another
    layer = AffineCoupling(mask, hidden=16, log_scale_bound=bound, identity_init=False).double()
    x = 2 * torch.randn(64, dim, dtype=torch.float64)
    z, log_det = layer(x)
    torch.testing.assert_close(log_det, dense_log_det(lambda p: layer(p)[0], x), rtol=0, atol=1e-12)
    assert log_det.abs().min() > 1e-3  # a non-trivial layer: the check above compares something
    assert torch.equal(z[:, mask == 1], x[:, mask == 1])  # the kept half passes unchanged


def test_coupling_inverse_undoes_forward_and_vice_versa():
    torch.manual_seed(2)
    layer = AffineCoupling(alternating_mask(3, 1), hidden=16, identity_init=False).double()
    x = 3 * torch.randn(100, 3, dtype=torch.float64)
    assert (layer.inverse(layer(x)[0]) - x).abs().max() < 1e-12
    assert (layer(layer.inverse(x))[0] - x).abs().max() < 1e-12


def test_log_scale_bound_limits_the_stretch():
    torch.manual_seed(3)
    layer = AffineCoupling(alternating_mask(2, 0), hidden=16, log_scale_bound=1.5, identity_init=False)
    with torch.no_grad():
        layer.net[-1].weight.mul_(100.0)  # make the raw scales huge
    log_scale, _ = layer.scale_and_shift(1e3 * torch.randn(1000, 1))  # (n, d_a = 1) kept coordinate
    assert log_scale.abs().max() <= 1.5 and log_scale.abs().max() > 1.4


def test_one_constant_layer_gives_the_gaussian_that_torch_distributions_knows():
    """s = a, t = b on x2 (mask [1, 0]): z2 = x2 e^a + b, so x2 ~ N(-b e^{-a}, e^{-2a}), x1 ~ N(0, 1).

    A sign-flipped log-det or a base density without its -log(2 pi) would fail this."""
    a, b = 0.7, -1.3
    flow = RealNVP(2, n_layers=1, hidden=4, log_scale_bound=None).double()  # last layer zero
    with torch.no_grad():
        flow.layers[0].net[-1].bias.copy_(torch.tensor([a, b], dtype=torch.float64))  # (s, t) of x2
    oracle = Independent(Normal(torch.tensor([0.0, -b * math.exp(-a)], dtype=torch.float64),
                                torch.tensor([1.0, math.exp(-a)], dtype=torch.float64)), 1)
    x = 2 * torch.randn(200, 2, dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x), oracle.log_prob(x), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- RealNVP

def test_identity_initialised_flow_is_the_standard_normal():
    flow = RealNVP(3, n_layers=4, hidden=8).double()
    x = torch.randn(50, 3, dtype=torch.float64)
    oracle = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    torch.testing.assert_close(flow.log_prob(x), oracle.log_prob(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(standard_normal_log_prob(x), oracle.log_prob(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_flow_logdet_matches_jacrev_slogdet(dim):
    flow = random_realnvp(dim, n_layers=5, seed=4, log_scale_bound=2.0, activation="relu")
    x = 2 * torch.randn(64, dim, dtype=torch.float64)
    z, log_det = flow(x)
    torch.testing.assert_close(log_det, dense_log_det(lambda p: flow(p)[0], x), rtol=0, atol=1e-11)
    per_layer, point = [], x  # and layer by layer
    for layer in flow.layers:
        torch.testing.assert_close(layer(point)[1], dense_log_det(lambda p: layer(p)[0], point), rtol=0, atol=1e-12)
        per_layer.append(layer(point)[1])
        point = layer(point)[0]
    torch.testing.assert_close(torch.stack(per_layer).sum(0), log_det, rtol=0, atol=1e-12)
    # log_prob against the change of variables written with independent parts: the base density
    # of torch.distributions at z = f(x), plus log|det| of the jacrev Jacobian of f
    base = Independent(Normal(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)), 1)
    oracle = base.log_prob(z) + dense_log_det(lambda p: flow(p)[0], x)
    torch.testing.assert_close(flow.log_prob(x), oracle, rtol=0, atol=1e-11)


def test_flow_inverse_undoes_forward_to_1e_6():
    flow = random_realnvp(2, n_layers=8, seed=5, activation="relu")
    x = 3 * torch.randn(500, 2, dtype=torch.float64)
    assert (flow.inverse(flow(x)[0]) - x).abs().max() < 1e-6
    z = torch.randn(500, 2, dtype=torch.float64)
    assert (flow(flow.inverse(z))[0] - z).abs().max() < 1e-6


def test_intermediates_push_the_base_through_every_layer():
    flow = random_realnvp(2, n_layers=3, seed=6)
    z = torch.randn(10, 2, dtype=torch.float64)
    stages = flow.intermediates(z)
    assert len(stages) == 4 and torch.equal(stages[0], z)
    for layer, before, after in zip(reversed(flow.layers), stages[:-1], stages[1:]):
        torch.testing.assert_close(after, layer.inverse(before), rtol=0, atol=0)
    torch.testing.assert_close(stages[-1], flow.inverse(z), rtol=0, atol=0)


def test_realnvp_density_integrates_to_one_on_a_grid():
    flow = random_realnvp(2, n_layers=4, seed=8, log_scale_bound=2.0)
    with torch.no_grad():
        log_q = flow.log_prob(grid())
    assert abs(log_q.exp().sum().item() * SPACING**2 - 1) < 1e-6
    assert (flow.sample(20_000, seed=0).abs() < BOX).all()  # no visible mass outside the box
    with torch.no_grad():  # the same density with its log-det sign-flipped is far from normalised
        z, log_det = flow(grid())
        flipped = (standard_normal_log_prob(z) - log_det).exp().sum().item() * SPACING**2
    assert abs(flipped - 1) > 1e-2


def test_realnvp_samples_follow_its_log_prob_chi_squared():
    flow = random_realnvp(2, n_layers=4, seed=8, log_scale_bound=2.0)
    cells = BINS * CELLS_PER_BIN
    with torch.no_grad():
        cell_mass = (flow.log_prob(grid()).exp() * SPACING**2).reshape(cells, cells)  # (x cells, y cells)
    bin_mass = cell_mass.reshape(BINS, CELLS_PER_BIN, BINS, CELLS_PER_BIN).sum(dim=(1, 3)).flatten()  # (bins,)
    n = 20_000
    x = flow.sample(n, seed=9)  # (n, 2)
    index = torch.floor((x + BOX) / (CELLS_PER_BIN * SPACING)).long()
    inside = ((index >= 0) & (index < BINS)).all(dim=1)
    counts = torch.bincount(index[inside, 0] * BINS + index[inside, 1], minlength=BINS**2).double()
    expected = n * bin_mass
    keep = expected >= 5  # Pearson's chi^2 needs reasonable expectations; pool the rest
    observed = torch.cat([counts[keep], (n - counts[keep].sum()).reshape(1)])
    expected = torch.cat([expected[keep], (n - expected[keep].sum()).reshape(1)])
    statistic, p_value = scipy.stats.chisquare(observed.numpy(), expected.numpy())
    assert keep.sum() > 50
    assert p_value > FIVE_SIGMA_P_VALUE, f"chi2 = {statistic:.1f} on {len(observed) - 1} dof, p = {p_value:.1e}"


def test_realnvp_follows_the_protocol():
    flow = RealNVP(2, n_layers=2, hidden=8)
    assert isinstance(flow, GenerativeModel) and flow.log_prob_kind == "exact"
    assert flow.sample(7, seed=1).shape == (7, 2)
    assert torch.equal(flow.sample(5, seed=3), flow.sample(5, generator=torch.Generator().manual_seed(3)))
    x = torch.randn(32, 2)
    loss = flow.loss(x)
    torch.testing.assert_close(loss, -flow.log_prob(x).mean())  # the protocol: loss is the mean NLL
    loss.backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # identity init still lets gradients reach the last layers


def test_realnvp_trained_by_maximum_likelihood_approaches_a_correlated_gaussian():
    """300 Adam steps on fresh batches of N(mu, Sigma), a density that two couplings can represent
    exactly. KL(p || p_theta) = E_p[log p - log p_theta] is estimated on 20,000 fresh points for the
    trained and the untrained flow, on the same points: the error of their difference is at most
    the root sum of squares of the two standard errors, and training must win by 5 of those (a
    learning rate of 0 or a sign-flipped loss cannot)."""
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    covariance = torch.tensor([[0.5, 0.4], [0.4, 0.5]], dtype=torch.float64)
    data = torch.distributions.MultivariateNormal(mean, covariance)
    torch.manual_seed(13)
    flow = RealNVP(2, n_layers=4, hidden=16).double()
    generator = torch.Generator().manual_seed(14)
    test_points = data.sample((20_000,))  # global stream, seeded above

    def kl():
        with torch.no_grad():
            difference = data.log_prob(test_points) - flow.log_prob(test_points)
        return difference.mean().item(), difference.std().item() / math.sqrt(len(difference))

    untrained, untrained_error = kl()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        batch = mean + torch.randn(256, 2, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(covariance).T
        loss = flow.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained, trained_error = kl()
    assert trained < untrained - 5 * math.hypot(trained_error, untrained_error), (trained, untrained)


# ----------------------------------------------------------------------------- learning-rate schedule

def test_warmup_cosine_lr_warms_up_linearly_then_decays_along_a_cosine():
    peak, warmup, floor_fraction = 0.01, 0.1, 0.2
    floor = peak * floor_fraction
    lr = lambda fraction: warmup_cosine_lr(fraction, peak, warmup, floor_fraction)  # noqa: E731
    assert lr(0.0) == 0.0
    assert lr(warmup / 4) == pytest.approx(peak / 4, rel=1e-12)
    assert lr(warmup) == pytest.approx(peak, rel=1e-12)
    # a quarter of the decay phase: cos(pi / 4) = 1 / sqrt(2); half of it: cos(pi / 2) = 0
    assert lr(warmup + (1 - warmup) / 4) == pytest.approx(floor + (peak - floor) * (1 + 2**-0.5) / 2, rel=1e-12)
    assert lr(warmup + (1 - warmup) / 2) == pytest.approx((peak + floor) / 2, rel=1e-12)
    assert lr(1.0) == pytest.approx(floor, rel=1e-12) and lr(1.5) == pytest.approx(floor, rel=1e-12)
    values = [lr(warmup + k * (1 - warmup) / 100) for k in range(101)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing after the warm-up
    assert warmup_cosine_lr(0.0, peak, warmup_fraction=0.0) == peak  # no warm-up: start at the peak


@pytest.mark.parametrize("args, match", [
    ((-0.1, 1e-3), "fraction must be a number >= 0"),
    ((0.5, -1e-3), "peak must be a learning rate >= 0"),
    ((0.5, 1e-3, 1.0), r"warmup_fraction must be in \[0, 1\)"),
    ((0.5, 1e-3, 0.05, 2.0), r"final_fraction must be in \[0, 1\]"),
])
def test_warmup_cosine_lr_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        warmup_cosine_lr(*args)


# ----------------------------------------------------------------------------- residual flows

def residual_block(seed=10, c=0.9):
    torch.manual_seed(seed)
    return ResidualFlowBlock(2, hidden=16, lipschitz_constant=c, activation="tanh").double().eval()


def test_residual_block_logdet_matches_finite_differences():
    block = residual_block()
    x = 2 * torch.randn(20, 2, dtype=torch.float64)
    h = 1e-5
    columns = [(block(x + h * e)[0] - block(x - h * e)[0]) / (2 * h) for e in torch.eye(2, dtype=torch.float64)]
    jacobian = torch.stack(columns, dim=-1)  # (n, D, D), column j = dF/dx_j
    torch.testing.assert_close(block(x)[1], torch.linalg.slogdet(jacobian)[1], rtol=0, atol=1e-7)
    assert (torch.linalg.det(jacobian) > 0).all()


@pytest.mark.parametrize("n_hidden_layers", [0, 2])
def test_residual_block_is_lipschitz_below_c(n_hidden_layers):
    """With no hidden layer g(x) = c W x / ||W||_2 + b is linear and its slope is exactly c, so
    random pairs must come close to c (the check bites); with hidden layers c is only a bound."""
    torch.manual_seed(10)
    block = ResidualFlowBlock(2, hidden=16, n_hidden_layers=n_hidden_layers, lipschitz_constant=0.8,
                              activation="tanh").double().eval()
    for module in block.net:
        if isinstance(module, torch.nn.Linear):  # each normalised weight has spectral norm 1
            assert abs(torch.linalg.matrix_norm(module.weight, ord=2).item() - 1) < 1e-6
    bound = block.lipschitz_bound()
    assert bound < 1 and abs(bound - 0.8) < 1e-5
    x, y = torch.randn(20_000, 2, dtype=torch.float64), torch.randn(20_000, 2, dtype=torch.float64)
    y[:10_000] = x[:10_000] + 1e-3 * torch.randn(10_000, 2, dtype=torch.float64)  # near pairs probe the slope
    with torch.no_grad():
        ratio = (block.g(x) - block.g(y)).norm(dim=1) / (x - y).norm(dim=1)  # (pairs,)
    assert ratio.max() <= bound
    if n_hidden_layers == 0:
        assert ratio.max() > 0.8 - 1e-4


def test_residual_fixed_point_inverse_converges_at_the_banach_rate():
    block = residual_block(c=0.9)
    x_true = 2 * torch.randn(200, 2, dtype=torch.float64)
    y = block(x_true)[0].detach()
    x = block.inverse(y)
    assert (x - x_true).abs().max() < 1e-10
    assert block.last_inverse_iterations < 400
    iterate, first_error = y.clone(), (y - x_true).norm(dim=1)  # a-priori bound: |x_k - x*| <= c^k |x_0 - x*|
    with torch.no_grad():
        for k in range(1, 30):
            iterate = y - block.g(iterate)
            assert ((iterate - x_true).norm(dim=1) <= 0.9**k * first_error + 1e-12).all()


def test_residual_flow_is_normalised_and_invertible():
    torch.manual_seed(12)
    flow = ResidualFlow(2, n_blocks=2, hidden=16, activation="tanh").double().eval()
    with torch.no_grad():
        log_q = flow.log_prob(grid())
    assert abs(log_q.exp().sum().item() * SPACING**2 - 1) < 1e-6
    z = torch.randn(100, 2, dtype=torch.float64)
    assert (flow(flow.inverse(z))[0] - z).abs().max() < 1e-10
    assert flow.sample(5, seed=0).shape == (5, 2)
    flow.train()
    loss = flow.loss(2 * torch.randn(16, 2, dtype=torch.float64))
    loss.backward()  # gradients flow through the jacrev log-det
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
    assert sum(p.grad.abs().sum() for p in flow.parameters() if p.grad is not None) > 0


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, match", [
    (lambda: AffineCoupling(torch.tensor([1.0, 1.0])), "keep some coordinates and move others"),
    (lambda: AffineCoupling(torch.tensor([1.0, 0.5])), "0s and 1s"),
    (lambda: AffineCoupling(alternating_mask(2, 0), log_scale_bound=-1.0), "log_scale_bound"),
    (lambda: RealNVP(1), "dim must be an int >= 2"),
    (lambda: RealNVP(2, n_layers=0), "n_layers"),
    (lambda: RealNVP(2, activation="sigmoid"), "activation must be one of"),
    (lambda: ResidualFlowBlock(2, lipschitz_constant=1.0), r"in \(0, 1\)"),
    (lambda: ResidualFlowBlock(2, activation="silu"), "1-Lipschitz"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise_clear_errors():
    flow = RealNVP(2, n_layers=2, hidden=4)
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got \(5, 3\)"):
        flow.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got \(2,\)"):
        flow.log_prob(torch.zeros(2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        flow.log_prob([[0.0, 0.0]])
    with pytest.raises(TypeError, match="floating-point"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        flow.sample(0)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        ResidualFlowBlock(2).inverse(torch.zeros(4, 3))


# ----------------------------------------------------------------------------- documentation

def test_docstrings_cite_equation_labels_that_the_chapter_defines():
    """The module cites chapter 5's equations by their MyST labels; each must exist in the chapter."""
    import re
    from pathlib import Path

    import gmcourse.flows

    root = Path(__file__).resolve().parents[1]
    source = Path(gmcourse.flows.__file__).read_text()
    chapter = (root / "book" / "05_normalizing_flows.md").read_text()
    cited = set(re.findall(r"ch5-eq-[a-z-]*[a-z]", source))
    defined = set(re.findall(r"^\$\$ \((ch5-eq-[a-z-]+)\)$", chapter, flags=re.MULTILINE))
    assert len(cited) >= 5, cited  # the docstrings do cite them
    assert cited <= defined, f"cited but not defined in the chapter: {sorted(cited - defined)}"
    assert not re.search(r"\(5\.\d\)", source), "cite equations by label, not by a number the chapter does not show"
