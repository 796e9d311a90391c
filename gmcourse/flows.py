r"""Normalizing flows (chapter 5): affine couplings (RealNVP) and a residual-flow block.

Equations are cited by the labels they carry in ``book/05_normalizing_flows.md``.

**Change of variables** (eq. ``ch5-eq-change-of-variables``). A bijection :math:`f_\theta` maps
data :math:`x` to a latent :math:`z = f_\theta(x)` whose density :math:`p_Z` is simple, here
:math:`\mathcal N(0, I_D)`. Then

.. math:: \log p_\theta(x) = \log p_Z\big(f_\theta(x)\big) + \log\Big|\det\frac{\partial f_\theta}{\partial x}\Big|,
   \qquad \log p_Z(z) = -\tfrac12\|z\|^2 - \tfrac D2\log 2\pi.

A composition :math:`f = f_K\circ\dots\circ f_1` adds the layers' log-determinants
(eq. ``ch5-eq-composition``): :math:`\log|\det J_f| = \sum_\ell \log|\det J_{f_\ell}(x_{\ell-1})|`,
where :math:`x_0 = x` and :math:`x_\ell = f_\ell(x_{\ell-1})`. Sampling runs the other way,
:math:`z \sim p_Z`, :math:`x = f^{-1}(z)`. Training is maximum likelihood: ``loss`` is the mean of
:math:`-\log p_\theta(x)` over a batch (chapter 2).

**Affine coupling** (RealNVP, eq. ``ch5-eq-coupling``). A binary mask :math:`m` keeps the half
:math:`x_a = m\odot x` and moves the other half with a scale and a translation that depend on
:math:`x_a` only:

.. math:: z = x_a + (1-m)\odot\big(x\odot e^{s(x_a)} + t(x_a)\big), \qquad
          x = z_a + (1-m)\odot\big(z - t(z_a)\big)\odot e^{-s(z_a)}, \quad z_a = x_a .

The Jacobian is triangular (the kept half does not depend on the moved half) with diagonal
:math:`1` on the kept half and :math:`e^{s_j}` on the moved half, so
:math:`\log|\det J| = \sum_{j:\,m_j=0} s_j(x_a)` (eq. ``ch5-eq-coupling-logdet``): no determinant
is ever computed, and :math:`s, t` can be any networks because they are never inverted.
Consecutive layers use complementary masks so that every coordinate gets moved.

Direction: ``forward`` goes from data to latent, as in Dinh et al. (2017). Texts that write the
layer in the generative direction, :math:`x_b = z_b\odot e^{\tilde s(z_a)} + \tilde t(z_a)`, describe
our inverse: from :math:`x_b = (z_b - t)\odot e^{-s} = z_b\odot e^{-s} - t\odot e^{-s}`, their
:math:`\tilde s = -s` and :math:`\tilde t = -t\odot e^{-s}`, and their log-determinant
:math:`\sum\tilde s = -\sum s` belongs to :math:`\partial x/\partial z`.

Two options that matter in practice: ``log_scale_bound`` :math:`B` replaces :math:`s` by
:math:`B\tanh(s/B)`, so that no layer stretches by more than :math:`e^{B}`, and ``identity_init``
zeroes the last layer of the :math:`s, t` network, so that the untrained flow is the identity and
the model starts as the base density. :func:`warmup_cosine_lr` is the learning-rate schedule the
chapter trains with (a linear warm-up, then a cosine decay to a floor at the end of the run).

**Why separated modes are hard** (benchmark ``flow-8gaussians``). :math:`f` is continuous with a
continuous inverse, so :math:`p_\theta > 0` everywhere and the connected Gaussian cannot be cut
into 8 islands: the flow can only squeeze the space between modes into thin *bridges* of low but
nonzero density. Mass left on the bridges is missing from the modes and costs KL; removing it
takes steep local stretches (many layers, large :math:`|s|`), and those same steep maps make
single gradient steps explode (a point falling in a badly mapped sliver has an enormous loss).
Hence depth, bounded log-scales, gradient clipping, and a learning rate decayed to zero by the
end of training.

**Residual flows** (eq. ``ch5-eq-residual``). :math:`F(x) = x + g(x)` is invertible when
:math:`\mathrm{Lip}(g) < 1`: for a given :math:`y` the map :math:`x\mapsto y - g(x)` is a
contraction, so by Banach's fixed-point theorem the iteration :math:`x^{(k+1)} = y - g(x^{(k)})`
converges to the unique solution of :math:`F(x) = y`, with error :math:`\le c^k\|x^{(0)} - x^\ast\|`.
Here :math:`g = c\cdot\mathrm{MLP}` with spectrally normalised weight matrices (each
:math:`\|W\|_2 = 1`, power iteration) and 1-Lipschitz activations, so :math:`\mathrm{Lip}(g) \le c < 1`.
Its log-determinant :math:`\log\det(I + J_g)` has no shortcut; :class:`ResidualFlowBlock` computes
it exactly with :func:`torch.func.jacrev` (:math:`D` backward passes and an :math:`O(D^3)`
determinant per point), affordable in the chapter's 2D demonstration only (large models use
stochastic trace estimators).

Shapes: points are ``(n, D)`` tensors; every ``log_det`` is ``(n,)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gmcourse.protocol import GenerativeModel
from gmcourse.utils import check_points as _check_points, make_generator, positive_int as _positive_int

__all__ = ["AffineCoupling", "RealNVP", "ResidualFlowBlock", "ResidualFlow", "standard_normal_log_prob",
           "alternating_mask", "warmup_cosine_lr"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; 0, I_D) = -\frac12\|z\|^2 - \frac D2\log 2\pi` for ``z`` (n, D) -> (n,)."""
    return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def alternating_mask(dim: int, layer: int) -> torch.Tensor:
    """Mask of coupling ``layer``: 1 (kept) on coordinates ``i`` with ``i + layer`` even, else 0."""
    return ((torch.arange(dim) + layer) % 2 == 0).float()


def warmup_cosine_lr(fraction: float, peak: float, warmup_fraction: float = 0.05,
                     final_fraction: float = 0.0) -> float:
    r"""Learning rate after ``fraction`` of the training run: linear warm-up, then cosine decay.

    From 0 to ``peak`` linearly over the first ``warmup_fraction`` of the run, then
    :math:`\eta_\text{floor} + (\eta_\text{peak} - \eta_\text{floor})\,\tfrac12(1 + \cos\pi u)`
    with :math:`u` the fraction of the decay phase elapsed and
    :math:`\eta_\text{floor} = ` ``final_fraction`` :math:`\times` ``peak`` (the cosine schedule of
    Loshchilov and Hutter, 2017, without restarts). ``fraction`` is steps done / total steps, or
    seconds elapsed / budget; values past 1 stay at the floor.
    """
    if not (isinstance(fraction, (int, float)) and fraction >= 0):
        raise ValueError(f"fraction must be a number >= 0 (the elapsed part of the run), got {fraction!r}")
    if not (isinstance(peak, (int, float)) and peak >= 0):
        raise ValueError(f"peak must be a learning rate >= 0, got {peak!r}")
    if not (isinstance(warmup_fraction, (int, float)) and 0 <= warmup_fraction < 1):
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if not (isinstance(final_fraction, (int, float)) and 0 <= final_fraction <= 1):
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction!r}")
    if fraction < warmup_fraction:
        return peak * fraction / warmup_fraction
    progress = min(1.0, (fraction - warmup_fraction) / (1.0 - warmup_fraction))
    floor = peak * final_fraction
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _mlp(in_features, out_features, hidden, n_hidden_layers, activation, linear=nn.Linear) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    sizes = [in_features] + [hidden] * n_hidden_layers
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    layers.append(linear(sizes[-1], out_features))
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    r"""One RealNVP layer (eq. ch5-eq-coupling): keeps :math:`x_a` (mask 1), scales and shifts :math:`x_b` (mask 0).

    ``mask`` is a 0/1 vector of length :math:`D` with at least one 0 and one 1. One MLP
    (``n_hidden_layers`` layers of width ``hidden``) maps the :math:`d_a` kept coordinates to
    :math:`(s, t) \in \mathbb R^{d_b}\times\mathbb R^{d_b}` for the :math:`d_b` moved ones.
    """

    def __init__(self, mask, hidden: int = 128, n_hidden_layers: int = 2, log_scale_bound: float | None = None,
                 identity_init: bool = True, activation: str = "relu"):
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.dim() != 1 or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"mask must be a 1D tensor of 0s and 1s, got {mask.tolist()}")
        if mask.sum() == 0 or mask.sum() == mask.numel():
            raise ValueError(f"mask must keep some coordinates and move others, got {mask.tolist()}")
        if log_scale_bound is not None and not (isinstance(log_scale_bound, (int, float)) and log_scale_bound > 0):
            raise ValueError(f"log_scale_bound must be a positive number or None, got {log_scale_bound!r}")
        self.dim = mask.numel()
        self.log_scale_bound = None if log_scale_bound is None else float(log_scale_bound)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        self.register_buffer("kept_index", torch.nonzero(mask == 1).flatten())  # (d_a,)
        self.register_buffer("moved_index", torch.nonzero(mask == 0).flatten())  # (d_b,)
        self.net = _mlp(len(self.kept_index), 2 * len(self.moved_index), _positive_int(hidden, "hidden"),
                        _positive_int(n_hidden_layers, "n_hidden_layers", 0), activation)
        if identity_init:  # s = t = 0: the layer starts as the identity map
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def scale_and_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(s, t)` from the kept coordinates ``kept`` (n, d_a); each (n, d_b)."""
        log_scale, shift = self.net(kept).chunk(2, dim=-1)  # (n, d_b) each
        if self.log_scale_bound is not None:
            log_scale = self.log_scale_bound * torch.tanh(log_scale / self.log_scale_bound)
        return log_scale, shift

    def couple(self, kept: torch.Tensor, moved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Eq. ch5-eq-coupling on the two halves: :math:`(x_b e^{s(x_a)} + t(x_a),\ \sum_j s_j)`, shapes (n, d_b) and (n,)."""
        log_scale, shift = self.scale_and_shift(kept)
        return moved * torch.exp(log_scale) + shift, log_scale.sum(dim=-1)

    def uncouple(self, kept: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`couple` for the moved half: :math:`(z_b - t(z_a))e^{-s(z_a)}`."""
        log_scale, shift = self.scale_and_shift(kept)
        return (moved - shift) * torch.exp(-log_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Data side to latent side: ``(z, log_det)`` with log_det :math:`= \sum_j s_j` (eq. ch5-eq-coupling-logdet), shape (n,)."""
        _check_points(x, self.dim)
        moved, log_det = self.couple(x[:, self.kept_index], x[:, self.moved_index])  # (n, d_b), (n,)
        return x.index_copy(1, self.moved_index, moved), log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent side to data side (exact, no iteration): the kept half gives back the same s and t."""
        _check_points(z, self.dim, "z")
        moved = self.uncouple(z[:, self.kept_index], z[:, self.moved_index])  # (n, d_b)
        return z.index_copy(1, self.moved_index, moved)


class RealNVP(GenerativeModel):
    r"""A stack of ``n_layers`` affine couplings with alternating masks and a :math:`\mathcal N(0, I)` base.

    ``log_prob`` is eq. ch5-eq-change-of-variables with the log-determinants summed as in eq.
    ch5-eq-composition; ``sample`` draws :math:`z\sim p_Z` and runs the layers backwards. Keyword
    arguments go to every :class:`AffineCoupling`. The defaults (24 couplings, each with two
    hidden layers of 48 units, :math:`|s| \le 3`, identity initialisation) are the 2D model of the
    benchmark ``flow-8gaussians``, whose recorded runs compare them with wider, shallower and
    unbounded variants.
    """

    log_prob_kind = "exact"

    def __init__(self, dim: int = 2, n_layers: int = 24, hidden: int = 48, n_hidden_layers: int = 2,
                 log_scale_bound: float | None = 3.0, identity_init: bool = True, activation: str = "relu"):
        super().__init__()
        self.dim = _positive_int(dim, "dim", 2)  # a coupling needs a kept and a moved half
        self.layers = nn.ModuleList(
            AffineCoupling(alternating_mask(dim, k), hidden, n_hidden_layers, log_scale_bound, identity_init, activation)
            for k in range(_positive_int(n_layers, "n_layers"))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log_det)``: ``x`` (n, D) through every layer, the log-determinants summed (eq. ch5-eq-composition).

        Same result as ``layer(x)`` applied in turn, but the even and odd coordinates are
        split once and each layer updates one half in place of gathering and scattering
        columns: 10-20% faster training on small 2D models, where per-operation costs dominate.
        """
        _check_points(x, self.dim)
        halves = [x[:, 0::2], x[:, 1::2]]  # (n, ceil(D/2)), (n, floor(D/2)): layer k keeps halves[k % 2]
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for k, layer in enumerate(self.layers):
            halves[1 - k % 2], layer_log_det = layer.couple(halves[k % 2], halves[1 - k % 2])
            log_det = log_det + layer_log_det
        return self._interleave(halves), log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^{-1}(z)`` for ``z`` (n, D), the layers undone from last to first."""
        _check_points(z, self.dim, "z")
        halves = [z[:, 0::2], z[:, 1::2]]
        for k in reversed(range(len(self.layers))):
            halves[1 - k % 2] = self.layers[k].uncouple(halves[k % 2], halves[1 - k % 2])
        return self._interleave(halves)

    def _interleave(self, halves: list[torch.Tensor]) -> torch.Tensor:
        even, odd = halves
        out = even.new_empty(even.shape[0], self.dim)
        out[:, 0::2], out[:, 1::2] = even, odd
        return out

    def intermediates(self, z: torch.Tensor) -> list[torch.Tensor]:
        r"""``[z, f_K^{-1}(z), ..., x]``: the base points pushed through the layers one at a time,
        ``n_layers + 1`` tensors of shape (n, D) (the chapter's figure of a Gaussian becoming the data)."""
        points = [_check_points(z, self.dim, "z")]
        for layer in reversed(self.layers):
            points.append(layer.inverse(points[-1]))
        return points

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p_\theta(x) = \log p_Z(f(x)) + \sum_\ell\log|\det J_\ell|` (eq. ch5-eq-change-of-variables), shape (n,)."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` independent draws (n, D), without gradients (use :meth:`inverse` on your own z for those)."""
        return _sample_through(self, n, generator, seed)


def _sample_through(model, n, generator, seed) -> torch.Tensor:
    _positive_int(n, "n")
    reference = next(model.parameters())
    generator = make_generator(seed=seed, generator=generator, device=reference.device)
    z = torch.randn(n, model.dim, generator=generator, device=generator.device, dtype=reference.dtype)
    with torch.no_grad():
        return model.inverse(z.to(reference.device))


class ResidualFlowBlock(nn.Module):
    r"""Invertible residual block :math:`F(x) = x + g(x)` with :math:`\mathrm{Lip}(g) \le c < 1` (eq. ch5-eq-residual).

    :math:`g = c\cdot\mathrm{MLP}`: spectrally normalised linear layers (``n_power_iterations``
    power-iteration steps per training forward) and 1-Lipschitz activations (``elu``, ``tanh``,
    ``relu``), so :math:`\mathrm{Lip}(g) \le c\prod_i\|W_i\|_2 \approx c`.
    :meth:`lipschitz_bound` returns the certified product with the exact matrix norms.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, n_hidden_layers: int = 2, lipschitz_constant: float = 0.9,
                 activation: str = "elu", n_power_iterations: int = 5):
        super().__init__()
        if not (isinstance(lipschitz_constant, (int, float)) and 0 < lipschitz_constant < 1):
            raise ValueError(f"lipschitz_constant c must be in (0, 1) for F to be invertible, got {lipschitz_constant!r}")
        if activation not in ("elu", "tanh", "relu"):
            raise ValueError(f"activation must be 1-Lipschitz: 'elu', 'tanh' or 'relu', got {activation!r}")
        self.dim = _positive_int(dim, "dim")
        self.lipschitz_constant = float(lipschitz_constant)
        iterations = _positive_int(n_power_iterations, "n_power_iterations")
        self.net = _mlp(dim, dim, _positive_int(hidden, "hidden"), _positive_int(n_hidden_layers, "n_hidden_layers", 0),
                        activation, linear=lambda i, o: spectral_norm(nn.Linear(i, o), n_power_iterations=iterations))
        self.last_inverse_iterations = 0
        with torch.no_grad():  # converge the power iterations before first use (cheap: tiny matrices)
            for _ in range(40):
                self.net(torch.zeros(1, dim))

    def normalised_layers(self) -> list:
        """The MLP with its spectrally normalised weights evaluated now: ``(W, b)`` pairs and activations.

        In training mode every evaluation of a normalised weight advances the power iteration,
        so the weights drift slightly from call to call; one call of :meth:`forward`,
        :meth:`g` or :meth:`inverse` uses one fixed set (call ``.eval()`` to freeze them).
        """
        return [(m.weight, m.bias) if isinstance(m, nn.Linear) else m for m in self.net]

    def g(self, x: torch.Tensor, layers: list | None = None) -> torch.Tensor:
        r"""The residual branch :math:`g(x) = c\,\mathrm{MLP}(x)`, (n, D) -> (n, D) (or (D,) -> (D,))."""
        for layer in layers if layers is not None else self.normalised_layers():
            x = nn.functional.linear(x, *layer) if isinstance(layer, tuple) else layer(x)
        return self.lipschitz_constant * x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(F(x), log_det)`` with log_det :math:`= \log\det(I + J_g(x))`, exact via :func:`torch.func.jacrev`.

        The determinant is positive: every eigenvalue of :math:`J_g` has modulus :math:`\le c < 1`.
        """
        _check_points(x, self.dim)
        layers = self.normalised_layers()  # outside jacrev/vmap, which must not see the power iteration
        jacobian = torch.func.vmap(torch.func.jacrev(lambda point: self.g(point, layers)))(x)  # (n, D, D)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        _, log_det = torch.linalg.slogdet(eye + jacobian)  # (n,)
        return x + self.g(x, layers), log_det

    def inverse(self, y: torch.Tensor, max_iterations: int = 1000, tolerance: float | None = None) -> torch.Tensor:
        r"""Solve :math:`x + g(x) = y` by the fixed-point iteration :math:`x \leftarrow y - g(x)` from :math:`x = y`.

        Stops when :math:`\max|\Delta x| \le` ``tolerance`` :math:`\times(1 + \max|x|)`; the default
        :math:`32\,\epsilon/(1-c)` sits just above the floor set by rounding (each step errs by a few
        :math:`\epsilon`, amplified by :math:`1/(1-c)`). Raises ``RuntimeError`` if that takes more
        than ``max_iterations`` steps, which for :math:`c < 1` only a broken bound can cause.
        """
        _check_points(y, self.dim, "y")
        if tolerance is None:
            tolerance = 32 * torch.finfo(y.dtype).eps / (1 - self.lipschitz_constant)
        with torch.no_grad():
            layers, x = self.normalised_layers(), y.clone()
            for iteration in range(1, max_iterations + 1):
                x_next = y - self.g(x, layers)
                step = (x_next - x).abs().max()
                x = x_next
                if step <= tolerance * (1 + x.abs().max()):
                    self.last_inverse_iterations = iteration
                    return x
        raise RuntimeError(f"fixed-point inverse did not converge in {max_iterations} iterations "
                           f"(last step {step.item():.2e}); is Lip(g) < 1? lipschitz_bound() = {self.lipschitz_bound():.4f}")

    def lipschitz_bound(self) -> float:
        r""":math:`c\prod_i\|W_i\|_2` with exact spectral norms of the normalised weights (a certificate)."""
        with torch.no_grad():
            norms = [torch.linalg.matrix_norm(m.weight, ord=2).item() for m in self.net if isinstance(m, nn.Linear)]
        return self.lipschitz_constant * math.prod(norms)


class ResidualFlow(GenerativeModel):
    r"""``n_blocks`` residual blocks (:class:`ResidualFlowBlock`) on a :math:`\mathcal N(0, I)` base:
    exact ``log_prob`` (eq. ch5-eq-change-of-variables) by dense Jacobians (small :math:`D` only), ``sample`` by fixed-point
    inversion of the blocks from last to first."""

    log_prob_kind = "exact"

    def __init__(self, dim: int = 2, n_blocks: int = 4, hidden: int = 64, n_hidden_layers: int = 2,
                 lipschitz_constant: float = 0.9, activation: str = "elu"):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.blocks = nn.ModuleList(ResidualFlowBlock(dim, hidden, n_hidden_layers, lipschitz_constant, activation)
                                    for _ in range(_positive_int(n_blocks, "n_blocks")))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_points(x, self.dim)
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, block_log_det = block(x)
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            z = block.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        return _sample_through(self, n, generator, seed)
