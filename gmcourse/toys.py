r"""Two-dimensional toy distributions whose densities are known exactly (used from chapter 0 on).

A model trained on samples from one of these toys can be scored against the truth: with an
exact :math:`\log P_\text{data}`, the NLL of a model on fresh data and the data entropy give
:math:`\mathrm{KL}(P_\text{data}\|P_\theta) = \mathrm{NLL} - H(P_\text{data}) \ge 0`
(eq. ch2-eq-kl-nll in ``book/02_maximum_likelihood_kl.md``).

``EightGaussians``
    An equal mixture of 8 isotropic Gaussians centred on a circle,
    :math:`p(x) = \frac18\sum_k \mathcal N(x; \mu_k, \sigma^2 I)`,
    :math:`\mu_k = r(\cos\frac{2\pi k}8, \sin\frac{2\pi k}8)`; evaluated with a log-sum-exp.
``GaussianGrid``
    An equal mixture of :math:`K = n^2` isotropic Gaussians centred on an :math:`n\times n`
    square grid of the given spacing, centred on the origin (default: the 5x5 grid of std 0.05
    used to count the modes a generative model covers).
``Checkerboard``
    Uniform on the 8 "black" 2x2 squares of a 4x4 board covering :math:`[-4, 4)^2`, the
    squares :math:`[2i, 2i+2)\times[2j, 2j+2)` with :math:`i + j` even. The density is
    :math:`1/32` there and 0 elsewhere, so :math:`H = \log 32` exactly.
``TwoMoons`` and ``Spiral``
    A curve :math:`\gamma(t)` with a parameter :math:`t \sim \rho(t)`, blurred by isotropic
    Gaussian noise of standard deviation :math:`\sigma`:

    .. math::

        p(x) = \int \rho(t)\,\mathcal N\big(x; \gamma(t), \sigma^2 I\big)\,dt .

    The 1D integral has no closed form, so it is computed by composite Gauss-Legendre
    quadrature: the curve is cut into panels of arc length :math:`2\sigma` with 8 nodes each.
    A Gaussian bump of width :math:`\sigma` is then integrated to a relative error of about
    :math:`10^{-10}`; ``tests/test_toys.py`` checks :math:`|\Delta\log p| < 10^{-6}` against
    SciPy's adaptive ``quad`` for :math:`\sigma \ge 0.05` at points within a few
    :math:`\sigma` of the curve. Far away the relative accuracy degrades (e.g. :math:`10^{-3}`
    in :math:`\log p` at 16 :math:`\sigma`, where :math:`p \approx e^{-166}`), which no
    integral or sample average can notice.

Every toy has ``sample(n, generator=None, seed=None) -> (n, 2)`` float32, ``log_prob(x) ->
(n,)`` (computed in float64, returned in ``x``'s floating dtype, differentiable in ``x``),
``log_prob_kind = "exact"`` and ``entropy(n)``, a Monte Carlo estimate
:math:`-\frac1n\sum_i\log p(x_i)` with its error bar (eq. ch2-eq-stderr).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .divergences import Estimate, monte_carlo_mean
from .utils import make_generator

__all__ = ["Toy2D", "EightGaussians", "GaussianGrid", "TwoMoons", "Checkerboard", "Spiral", "TOYS", "get_toy"]

PANEL_ARC_LENGTH_IN_NOISE = 2.0  # quadrature panel length, in units of the noise std
GAUSS_LEGENDRE_ORDER = 8  # nodes per panel
_CHUNK_ELEMENTS = 2**16  # points x nodes evaluated at once: small enough to stay in cache


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Toy2D:
    """Base class: argument checks, float32 samples, float64 densities, Monte Carlo entropy.

    Subclasses implement ``_sample(n, generator) -> (n, 2) float64`` on the generator's
    device and ``_log_prob(x) -> (n,)`` for float64 ``x`` of shape ``(n, 2)``.
    """

    name = "toy"
    log_prob_kind = "exact"
    event_shape = (2,)

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` independent points, shape ``(n, 2)``, float32, on the generator's device."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        return self._sample(n, make_generator(seed=seed, generator=generator)).float()

    def log_prob(self, x) -> torch.Tensor:
        r""":math:`\log p(x)` for points ``x`` of shape ``(n, 2)``; returns shape ``(n,)``."""
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return self._log_prob(x.double()).to(dtype)

    def entropy(self, n: int = 100_000, generator: torch.Generator | None = None, seed: int | None = None) -> Estimate:
        r"""Monte Carlo estimate of :math:`H = -\mathbb E_p\log p(x)` from ``n`` fresh samples."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an int >= 2 for an entropy estimate with an error bar, got {n!r}")
        x = self._sample(n, make_generator(seed=seed, generator=generator))  # (n, 2) float64
        return monte_carlo_mean(-self._log_prob(x))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class EightGaussians(Toy2D):
    r"""Equal mixture of 8 Gaussians of std ``std`` at angles :math:`2\pi k/8` on a circle of ``radius``.

    When the modes are well separated (the default: neighbours are 15 std apart) the
    entropy is :math:`\log 8 + \log(2\pi e\sigma^2)`, up to a correction below 1e-12.
    """

    name = "8gaussians"

    def __init__(self, radius: float = 2.0, std: float = 0.1):
        self.radius = _positive(radius, "radius")
        self.std = _positive(std, "std")

    def centers(self, device=None) -> torch.Tensor:
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64, device=device) / 8
        return self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (8, 2)

    def _sample(self, n, generator):
        device = generator.device
        component = torch.randint(0, 8, (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return self.centers(device)[component] + self.std * noise

    def _log_prob(self, x):
        squared_distance = ((x[:, None, :] - self.centers(x.device)) ** 2).sum(-1)  # (n, 8)
        log_component = -squared_distance / (2 * self.std**2) - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(log_component, dim=1) - math.log(8)


class GaussianGrid(Toy2D):
    r"""Equal mixture of :math:`K = n^2` Gaussians of std ``std`` on an ``n x n`` grid (``n = n_per_side``).

    The centres are :math:`\mu_{ab} = s\,(a - \tfrac{n-1}2,\ b - \tfrac{n-1}2)` for
    :math:`a, b = 0, \dots, n-1` and spacing :math:`s`, ordered with :math:`a` (the first
    coordinate) outer, so the grid is centred on the origin;
    :math:`p(x) = \frac1K\sum_k\mathcal N(x; \mu_k, \sigma^2 I)`. With the defaults
    neighbours are 20 std apart and the entropy is :math:`\log K + \log(2\pi e\sigma^2)`
    up to a negligible correction.
    """

    name = "gaussian-grid"

    def __init__(self, n_per_side: int = 5, spacing: float = 1.0, std: float = 0.05):
        if isinstance(n_per_side, bool) or not isinstance(n_per_side, int) or n_per_side < 1:
            raise ValueError(f"n_per_side must be a positive int, got {n_per_side!r}")
        self.n_per_side = n_per_side
        self.spacing = _positive(spacing, "spacing")
        self.std = _positive(std, "std")

    @property
    def n_modes(self) -> int:
        return self.n_per_side**2

    def centers(self, device=None) -> torch.Tensor:
        """The :math:`K = n^2` centres, shape ``(K, 2)`` float64, first coordinate outer."""
        ticks = self.spacing * (torch.arange(self.n_per_side, dtype=torch.float64, device=device) - (self.n_per_side - 1) / 2)
        return torch.cartesian_prod(ticks, ticks).reshape(-1, 2)  # (K, 2)

    def _sample(self, n, generator):
        device = generator.device
        component = torch.randint(0, self.n_modes, (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return self.centers(device)[component] + self.std * noise

    def _log_prob(self, x):
        centers = self.centers(x.device)
        pieces = []
        for xs in x.split(max(1, _CHUNK_ELEMENTS // centers.shape[0])):
            squared_distance = ((xs[:, None, :] - centers) ** 2).sum(-1)  # (n, K)
            log_component = -squared_distance / (2 * self.std**2) - math.log(2 * math.pi * self.std**2)
            pieces.append(torch.logsumexp(log_component, dim=1))
        return torch.cat(pieces) - math.log(self.n_modes)


class Checkerboard(Toy2D):
    r"""Uniform density :math:`1/32` on the 8 squares :math:`[2i,2i+2)\times[2j,2j+2)`, :math:`i+j` even.

    Here :math:`i, j \in \{-2,-1,0,1\}`, so the board is :math:`[-4, 4)^2`; outside the black
    squares ``log_prob`` is ``-inf``. Entropy: :math:`\log 32` exactly.
    """

    name = "checkerboard"
    half_width = 4.0
    square = 2.0

    def squares(self) -> torch.Tensor:
        """Lower-left corners of the 8 occupied squares, shape ``(8, 2)``."""
        cells = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
        return self.square * torch.tensor(cells, dtype=torch.float64)

    def _sample(self, n, generator):
        device = generator.device
        which = torch.randint(0, 8, (n,), generator=generator, device=device)
        offset = self.square * torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
        return self.squares().to(device)[which] + offset

    def _log_prob(self, x):
        cell = torch.floor(x / self.square)  # (n, 2) integer-valued
        on_board = ((x >= -self.half_width) & (x < self.half_width)).all(dim=1)
        black = torch.remainder(cell.sum(dim=1), 2) == 0
        log_density = torch.full_like(x[:, 0], -math.log(8 * self.square**2))  # (n,)
        return torch.where(on_board & black, log_density, -math.inf)


def _gauss_legendre_panels(edges: np.ndarray, order: int = GAUSS_LEGENDRE_ORDER):
    """Nodes and weights of composite Gauss-Legendre quadrature on the panels ``edges``."""
    unit_nodes, unit_weights = np.polynomial.legendre.leggauss(order)  # on [-1, 1]
    centre = (edges[1:] + edges[:-1]) / 2
    half = (edges[1:] - edges[:-1]) / 2
    nodes = (centre[:, None] + half[:, None] * unit_nodes).ravel()  # (panels * order,)
    weights = (half[:, None] * unit_weights).ravel()
    return nodes, weights


class _NoisyCurve(Toy2D):
    r"""A curve blurred by Gaussian noise, :math:`p(x) = \int\rho(t)\,\mathcal N(x;\gamma(t),\sigma^2 I)\,dt`.

    Subclasses set ``self.noise`` and call :meth:`_set_quadrature` with the curve points
    :math:`\gamma(t_k)` and the weights :math:`w_k\rho(t_k)` of the quadrature nodes.
    """

    def _set_quadrature(self, points: np.ndarray, weights: np.ndarray):
        self._curve_points = torch.as_tensor(points, dtype=torch.float64)  # (K, 2)
        self._log_weights = torch.log(torch.as_tensor(weights, dtype=torch.float64))  # (K,)

    def _log_prob(self, x):
        points = self._curve_points.to(x.device)
        log_weights = self._log_weights.to(x.device)
        inverse_two_variance = 1.0 / (2 * self.noise**2)
        chunk = max(1, _CHUNK_ELEMENTS // points.shape[0])
        pieces = []
        for xs in x.split(chunk):
            # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c ; in float64 the cancellation error is ~1e-15 |x|^2
            squared_distance = (xs**2).sum(1, keepdim=True) + (points**2).sum(1) - 2 * xs @ points.T  # (n, K)
            log_terms = log_weights - inverse_two_variance * squared_distance.clamp_min(0)  # (n, K)
            pieces.append(torch.logsumexp(log_terms, dim=1))
        return torch.cat(pieces) - math.log(2 * math.pi * self.noise**2)


class TwoMoons(_NoisyCurve):
    r"""Two interleaved half circles (scikit-learn's ``make_moons`` geometry) plus Gaussian noise.

    Each moon is chosen with probability 1/2 and the angle :math:`t` is uniform on
    :math:`[0, \pi]` (uniform in arc length, the radius being 1):

    * upper moon: :math:`\gamma(t) = (\cos t, \sin t) - c`, centre :math:`(0, 0)`,
    * lower moon: :math:`\gamma(t) = (1 - \cos t, \tfrac12 - \sin t) - c`, centre :math:`(1, \tfrac12)`,

    shifted by :math:`c = (\tfrac12, \tfrac14)`, the mean of the noiseless curve, so the
    data are centred at the origin (no rescaling: the moons have radius 1).
    """

    name = "two_moons"
    shift = (0.5, 0.25)

    def __init__(self, noise: float = 0.1):
        self.noise = _positive(noise, "noise")
        panels = math.ceil(math.pi / (PANEL_ARC_LENGTH_IN_NOISE * self.noise))
        angles, weights = _gauss_legendre_panels(np.linspace(0.0, math.pi, panels + 1))
        points = np.concatenate([self._moon_points(angles, 0), self._moon_points(angles, 1)])  # (2K, 2)
        density = 0.5 / math.pi  # which moon, then the angle
        self._set_quadrature(points, np.concatenate([weights, weights]) * density)

    def _moon_points(self, angles, moon: int):
        if moon == 0:
            x, y = np.cos(angles), np.sin(angles)
        else:
            x, y = 1.0 - np.cos(angles), 0.5 - np.sin(angles)
        return np.stack([x - self.shift[0], y - self.shift[1]], axis=1)

    def _sample(self, n, generator):
        device = generator.device
        options = dict(generator=generator, device=device, dtype=torch.float64)
        lower = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
        angles = math.pi * torch.rand(n, **options)
        cos, sin = torch.cos(angles), torch.sin(angles)
        x = torch.where(lower, 1.0 - cos, cos) - self.shift[0]
        y = torch.where(lower, 0.5 - sin, sin) - self.shift[1]
        return torch.stack([x, y], dim=1) + self.noise * torch.randn(n, 2, **options)


class Spiral(_NoisyCurve):
    r"""A noisy Archimedean spiral of ``turns`` turns out to ``radius``.

    With :math:`s = \sqrt u`, :math:`u \sim U(0, 1)` (so :math:`\rho(s) = 2s` on
    :math:`[0, 1]`) and :math:`\theta_\text{max} = 2\pi\,\text{turns}`,

    .. math::

        \gamma(s) = \text{radius}\cdot s\,\big(\cos\theta_\text{max}s,\ \sin\theta_\text{max}s\big).

    The speed :math:`|\gamma'(s)| = \text{radius}\sqrt{1 + \theta_\text{max}^2 s^2}` grows
    like :math:`s` away from the centre, as does :math:`\rho(s)`, so the points are spread
    almost uniformly along the arc (exactly so in the limit of many turns).
    """

    name = "spiral"

    def __init__(self, turns: float = 2.0, radius: float = 4.0, noise: float = 0.1):
        self.turns = _positive(turns, "turns")
        self.radius = _positive(radius, "radius")
        self.noise = _positive(noise, "noise")
        # Panel edges at equal arc length: invert the arc length l(s) on a fine table.
        table = np.linspace(0.0, 1.0, 20_001)
        arc_length = self._arc_length(table)
        panels = math.ceil(arc_length[-1] / (PANEL_ARC_LENGTH_IN_NOISE * self.noise))
        edges = np.interp(np.linspace(0.0, arc_length[-1], panels + 1), arc_length, table)
        edges[0], edges[-1] = 0.0, 1.0
        s, weights = _gauss_legendre_panels(edges)
        self._set_quadrature(self._curve(s), weights * 2 * s)

    @property
    def max_angle(self) -> float:
        return 2 * math.pi * self.turns

    def _curve(self, s):
        angle = self.max_angle * s
        return self.radius * s[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (K, 2)

    def _arc_length(self, s):
        # l(s) = radius / (2 theta_max) * [u sqrt(1 + u^2) + asinh(u)],  u = theta_max s
        u = self.max_angle * s
        return self.radius / (2 * self.max_angle) * (u * np.sqrt(1 + u**2) + np.arcsinh(u))

    def _sample(self, n, generator):
        options = dict(generator=generator, device=generator.device, dtype=torch.float64)
        s = torch.sqrt(torch.rand(n, **options))
        angle = self.max_angle * s
        curve = self.radius * s[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (n, 2)
        return curve + self.noise * torch.randn(n, 2, **options)


TOYS = {cls.name: cls for cls in (EightGaussians, GaussianGrid, TwoMoons, Checkerboard, Spiral)}


def get_toy(name: str, **kwargs) -> Toy2D:
    """Build a toy by name, e.g. ``get_toy("two_moons", noise=0.05)``."""
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose one of {sorted(TOYS)}")
    return TOYS[name](**kwargs)
