"""Tests for gmcourse.toys: normalisation, sampler/density agreement, exact entropies.

Grid integrals use a lattice of spacing h = sigma / 2. For a density that is a probability
measure convolved with N(0, sigma^2 I), Poisson summation bounds the error of the lattice sum
h^2 sum_n p(x_n) by sum_{k != 0} exp(-2 pi^2 sigma^2 |k|^2 / h^2) ~ 4 exp(-8 pi^2) ~ 1e-34,
and the box reaches 10 sigma past the noiseless support, so the mass outside it is < 1e-20.
What remains is the quadrature error inside log_prob (< 1e-9 relative) and rounding, hence
the 1e-8 tolerance on the normalisation.
"""

import functools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from gmcourse.toys import TOYS, Checkerboard, EightGaussians, GaussianGrid, Spiral, TwoMoons, get_toy

# name -> (toy, box (x_lo, x_hi, y_lo, y_hi), grid spacing h, fine cells per histogram bin)
GRIDS = {
    "8gaussians": (EightGaussians(), (-3.0, 3.0, -3.0, 3.0), 0.05, 10),
    "gaussian-grid": (GaussianGrid(), (-2.5, 2.5, -2.5, 2.5), 0.025, 8),
    "two_moons": (TwoMoons(), (-2.5, 2.5, -1.75, 1.75), 0.05, 5),
    "two_moons_0.05": (TwoMoons(noise=0.05), (-2.0, 2.0, -1.25, 1.25), 0.025, 10),
    "spiral": (Spiral(), (-5.0, 5.0, -5.0, 5.0), 0.05, 10),
}


def lattice(lo, hi, h):
    cells = round((hi - lo) / h)
    assert abs(cells * h - (hi - lo)) < 1e-9
    return lo + h * (torch.arange(cells, dtype=torch.float64) + 0.5)


@functools.lru_cache(maxsize=None)
def density_on_grid(name):
    """(toy, box, h, k, log p on the lattice of cell centres, shape (nx, ny))."""
    toy, box, h, k = GRIDS[name]
    xs, ys = lattice(box[0], box[1], h), lattice(box[2], box[3], h)
    points = torch.cartesian_prod(xs, ys)  # (nx * ny, 2)
    return toy, box, h, k, toy.log_prob(points).reshape(len(xs), len(ys))


@pytest.mark.parametrize("name", list(GRIDS))
def test_density_integrates_to_one_on_a_fine_grid(name):
    _, _, h, _, log_p = density_on_grid(name)
    assert abs(log_p.exp().sum().item() * h**2 - 1) < 1e-8


def chi_squared_against_grid(name, x):
    """Pearson's chi^2 of samples x against the lattice density of GRIDS[name]; returns (chi2, dof).

    Bins are k x k lattice cells. The midpoint rule errs only where a bin edge cuts the
    density, by ~ h^2/24 * |grad p| per unit edge length: ~1e-3 of a bin's probability,
    far below the ~1/sqrt(count) statistical resolution of 20,000 samples.
    """
    _, box, h, k, log_p = density_on_grid(name)
    n = x.shape[0]
    cell_mass = log_p.exp() * h**2  # (nx, ny)
    nx, ny = cell_mass.shape
    expected = n * cell_mass.reshape(nx // k, k, ny // k, k).sum(dim=(1, 3)).flatten()  # (bins,)

    index = torch.floor((x.double() - torch.tensor([box[0], box[2]], dtype=torch.float64)) / (k * h)).long()
    inside = ((index >= 0) & (index < torch.tensor([nx // k, ny // k]))).all(dim=1)  # (n,)
    flat = index[inside, 0] * (ny // k) + index[inside, 1]
    observed = torch.bincount(flat, minlength=expected.numel()).double()

    keep = expected >= 5  # Pearson's chi^2 needs reasonable expectations; pool the rest
    observed_bins = torch.cat([observed[keep], (n - observed[keep].sum()).reshape(1)])
    expected_bins = torch.cat([expected[keep], (n - expected[keep].sum()).reshape(1)])
    chi2 = ((observed_bins - expected_bins) ** 2 / expected_bins.clamp_min(1e-300)).sum().item()
    return chi2, len(observed_bins) - 1


@pytest.mark.parametrize("name", list(GRIDS))
def test_samples_follow_log_prob_chi_squared(name):
    chi2, dof = chi_squared_against_grid(name, GRIDS[name][0].sample(20_000, seed=123))
    assert dof > 20
    assert chi2 < dof + 5 * math.sqrt(2 * dof), f"chi2 = {chi2:.1f} for {dof} degrees of freedom"


def test_chi_squared_check_detects_a_slightly_wrong_sampler():
    # The same test has the power to see a 10% error in the mode width.
    chi2, dof = chi_squared_against_grid("8gaussians", EightGaussians(std=0.11).sample(20_000, seed=123))
    assert chi2 > dof + 5 * math.sqrt(2 * dof)


def test_eight_gaussians_log_prob_matches_torch_mixture():
    toy = EightGaussians(radius=1.5, std=0.3)
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    centres = 1.5 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    mixture = MixtureSameFamily(
        Categorical(probs=torch.full((8,), 1 / 8, dtype=torch.float64)),
        Independent(Normal(centres, torch.full_like(centres, 0.3)), 1),
    )
    x = 3 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(toy.log_prob(x), mixture.log_prob(x), rtol=1e-12, atol=1e-12)
    # log_prob is differentiable in x (chapter 2 fits a Gaussian by reverse KL through it).
    x.requires_grad_(True)
    (ours,) = torch.autograd.grad(toy.log_prob(x).sum(), x)
    (theirs,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_curve_log_prob_gradient_matches_finite_differences():
    toy = TwoMoons()
    x = toy.sample(20, seed=7).double().requires_grad_(True)
    (grad,) = torch.autograd.grad(toy.log_prob(x).sum(), x)
    step = 1e-6
    for axis in range(2):
        shift = torch.zeros(2, dtype=torch.float64)
        shift[axis] = step
        central = (toy.log_prob(x.detach() + shift) - toy.log_prob(x.detach() - shift)) / (2 * step)
        torch.testing.assert_close(grad[:, axis], central, rtol=1e-6, atol=1e-6)


def test_eight_gaussians_entropy_matches_closed_form_within_five_sigma():
    # Neighbouring modes are 2 r sin(pi/8) / std = 15 std apart, so the mixture entropy is
    # log 8 + log(2 pi e std^2) up to H(component | x) ~ exp(-(7.6)^2 / 2) ~ 1e-13.
    toy = EightGaussians()
    estimate = toy.entropy(n=100_000, seed=1)
    closed_form = math.log(8) + math.log(2 * math.pi * math.e * toy.std**2)
    assert abs(estimate.mean - closed_form) < 5 * estimate.stderr


def test_gaussian_grid_centres_are_a_square_lattice_around_the_origin():
    toy = GaussianGrid(n_per_side=4, spacing=0.5, std=0.02)
    centres = toy.centers()
    assert centres.shape == (16, 2) and centres.dtype == torch.float64
    ticks = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(centres, torch.cartesian_prod(ticks, ticks), rtol=0, atol=1e-15)
    assert get_toy("gaussian-grid").centers().shape == (25, 2)


def test_gaussian_grid_log_prob_matches_torch_mixture():
    toy = GaussianGrid(n_per_side=3, spacing=0.8, std=0.2)
    ticks = torch.tensor([-0.8, 0.0, 0.8], dtype=torch.float64)
    centres = torch.cartesian_prod(ticks, ticks)
    mixture = MixtureSameFamily(
        Categorical(probs=torch.full((9,), 1 / 9, dtype=torch.float64)),
        Independent(Normal(centres, torch.full_like(centres, 0.2)), 1),
    )
    x = 1.5 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(toy.log_prob(x), mixture.log_prob(x), rtol=1e-12, atol=1e-12)


def test_gaussian_grid_sample_moments_within_five_sigma():
    # Each coordinate is a uniform tick in spacing * {-2, ..., 2} plus N(0, std^2) noise:
    # mean 0, variance 2 spacing^2 + std^2, the two coordinates independent.
    toy = GaussianGrid()
    n = 50_000
    x = toy.sample(n, seed=8).double()
    variance = 2 * toy.spacing**2 + toy.std**2
    # standard error of a mean: sqrt(variance / n); of a sample variance: sqrt((mu_4 - variance^2) / n)
    ticks = toy.spacing * torch.arange(-2, 3, dtype=torch.float64)
    mu4 = (ticks**4).mean().item() + 6 * (ticks**2).mean().item() * toy.std**2 + 3 * toy.std**4
    assert (x.mean(0).abs() < 5 * math.sqrt(variance / n)).all()
    assert ((x.var(0) - variance).abs() < 5 * math.sqrt((mu4 - variance**2) / n)).all()
    assert abs(((x[:, 0] * x[:, 1]).mean()).item()) < 5 * variance / math.sqrt(n)


def test_gaussian_grid_entropy_matches_closed_form_within_five_sigma():
    # Neighbours are spacing / std = 20 std apart: H = log 25 + log(2 pi e std^2) up to ~exp(-50).
    toy = GaussianGrid()
    estimate = toy.entropy(n=50_000, seed=9)
    closed_form = math.log(25) + math.log(2 * math.pi * math.e * toy.std**2)
    assert abs(estimate.mean - closed_form) < 5 * estimate.stderr


def test_checkerboard_entropy_is_log_of_the_black_area():
    estimate = Checkerboard().entropy(n=10_000, seed=2)
    assert estimate.mean == pytest.approx(math.log(8 * 2.0**2), rel=1e-14)
    assert estimate.stderr < 1e-12  # -log p is the same constant on every sample


def test_checkerboard_samples_fill_the_black_squares_evenly():
    n = 16_000
    x = Checkerboard().sample(n, seed=3)
    assert ((x >= -4) & (x < 4)).all()
    cell = torch.floor(x.double() / 2).long() + 2  # (n, 2), indices 0..3
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).reshape(4, 4)
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    black = (i + j) % 2 == 0
    assert counts[~black].sum() == 0
    chi2 = ((counts[black].double() - n / 8) ** 2 / (n / 8)).sum().item()
    assert chi2 < 7 + 5 * math.sqrt(2 * 7)


def test_checkerboard_density_is_one_over_32_on_black_squares_only():
    toy = Checkerboard()
    # An aligned midpoint grid integrates the piecewise-constant density exactly.
    h = 0.25
    centres = lattice(-4.5, 4.5, h)
    log_p = toy.log_prob(torch.cartesian_prod(centres, centres))
    assert log_p.exp().sum().item() * h**2 == pytest.approx(1.0, abs=1e-12)
    probes = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-3.9, -3.9], [3.9, -0.1], [4.0, 0.5], [0.0, -4.1]])
    expected = torch.tensor([-math.log(32), -math.inf, -math.log(32), -math.log(32), -math.inf, -math.inf])
    torch.testing.assert_close(toy.log_prob(probes), expected)


def quad_reference(curve, weight, t_max, noise, x, pieces):
    """log of the integral of weight(t) N(x; curve(t), noise^2 I) over [0, t_max] by scipy quad."""
    x0, x1 = x
    t_fine = np.linspace(0.0, t_max, 20_001)
    c0, c1 = curve(t_fine)
    closest = ((c0 - x0) ** 2 + (c1 - x1) ** 2).min()  # factored out to avoid underflow

    def integrand(t):
        c0, c1 = curve(t)
        return weight(t) * math.exp(-((c0 - x0) ** 2 + (c1 - x1) ** 2 - closest) / (2 * noise**2))

    edges = np.linspace(0.0, t_max, pieces + 1)
    total = sum(quad(integrand, a, b, epsabs=0, epsrel=1e-12, limit=200)[0] for a, b in zip(edges[:-1], edges[1:]))
    return math.log(total) - closest / (2 * noise**2) - math.log(2 * math.pi * noise**2)


def moons_reference(noise, x):
    s0, s1 = TwoMoons.shift
    upper = lambda t: (np.cos(t) - s0, np.sin(t) - s1)  # noqa: E731
    lower = lambda t: (1 - np.cos(t) - s0, 0.5 - np.sin(t) - s1)  # noqa: E731
    half_over_pi = lambda t: 0.5 / math.pi  # noqa: E731
    return np.logaddexp(
        quad_reference(upper, half_over_pi, math.pi, noise, x, 30),
        quad_reference(lower, half_over_pi, math.pi, noise, x, 30),
    )


def spiral_reference(toy, x):
    def curve(s):
        return toy.radius * s * np.cos(toy.max_angle * s), toy.radius * s * np.sin(toy.max_angle * s)

    return quad_reference(curve, lambda s: 2 * s, 1.0, toy.noise, x, 100)


@pytest.mark.parametrize("noise", [0.05, 0.1])
def test_curve_quadrature_matches_scipy_quad(noise):
    near = [(0.0, 0.0), (0.1, 0.05), (-1.5, -0.25), (0.5, 0.5)]  # on, between and beside the curves
    for toy, reference in ((TwoMoons(noise), lambda x: moons_reference(noise, x)),
                           (Spiral(noise=noise), lambda x: spiral_reference(toy, x))):
        points = [tuple(p) for p in toy.sample(6, seed=4).double().tolist()] + near
        ours = toy.log_prob(torch.tensor(points, dtype=torch.float64))
        theirs = torch.tensor([reference(p) for p in points], dtype=torch.float64)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_two_moons_entropy_matches_grid_entropy_within_five_sigma():
    toy, _, h, _, log_p = density_on_grid("two_moons")
    grid_entropy = -(log_p.exp() * log_p).sum().item() * h**2
    estimate = toy.entropy(n=50_000, seed=5)
    assert abs(estimate.mean - grid_entropy) < 5 * estimate.stderr


# ----------------------------------------------------------------------------- interface

@pytest.mark.parametrize("name", sorted(TOYS))
def test_sample_shape_dtype_and_reproducibility(name):
    toy = get_toy(name)
    assert toy.name == name and toy.log_prob_kind == "exact"
    x = toy.sample(7, seed=11)
    assert x.shape == (7, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy.sample(7, seed=11))
    assert torch.equal(x, toy.sample(7, generator=torch.Generator().manual_seed(11)))
    assert not torch.equal(x, toy.sample(7, seed=12))
    log_p = toy.log_prob(x)
    assert log_p.shape == (7,) and log_p.dtype == torch.float32 and torch.isfinite(log_p).all()
    assert toy.log_prob(x.double()).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(TOYS))
def test_sampling_and_log_prob_stay_on_the_generator_device(name):
    toy = get_toy(name)
    x = toy.sample(1000, generator=torch.Generator(device="cuda").manual_seed(0))
    assert x.device.type == "cuda" and x.dtype == torch.float32
    log_p = toy.log_prob(x)
    assert log_p.device.type == "cuda"
    torch.testing.assert_close(log_p.cpu(), toy.log_prob(x.cpu()))  # same float64 formula on both devices


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: EightGaussians(std=-0.1), "std must be a positive finite number, got -0.1"),
        (lambda: EightGaussians(radius=0), "radius must be a positive"),
        (lambda: TwoMoons(noise=0.0), "noise must be a positive"),
        (lambda: Spiral(turns=float("inf")), "turns must be a positive finite"),
        (lambda: GaussianGrid(n_per_side=0), "n_per_side must be a positive int, got 0"),
        (lambda: GaussianGrid(std=0), "std must be a positive"),
        (lambda: get_toy("moons"), r"unknown toy 'moons'; choose one of \['8gaussians', 'checkerboard'"),
    ],
)
def test_bad_parameters_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", sorted(TOYS))
def test_bad_sample_sizes_and_shapes_raise_value_error(name):
    toy = get_toy(name)
    for n in (0, -3):
        with pytest.raises(ValueError, match=f"n must be a positive int, got {n}"):
            toy.sample(n)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\), got \(5, 3\)"):
        toy.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"got \(2,\)"):
        toy.log_prob(torch.zeros(2))
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        toy.entropy(n=1)
