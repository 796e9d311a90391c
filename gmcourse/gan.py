r"""Generative adversarial networks (chapter 9): players, value function, losses, WGAN-GP, training.

Equations are cited by their labels in ``book/09_generative_adversarial_networks.md``.

**The game** (eq. ``ch9-eq-value``). A generator :math:`G_\theta` maps latent codes
:math:`z \sim p_z = \mathcal N(0, I_{d_z})` to data space; its samples have the distribution
:math:`p_g`, which has no density the model could evaluate (``log_prob_kind = "none"``). A
discriminator :math:`D_\phi(x) = \sigma(\ell_\phi(x)) \in (0, 1)` -- a logit network
:math:`\ell_\phi` followed by the sigmoid -- is trained to tell data from samples. The value
function

.. math:: V(D, G) = \mathbb E_{x\sim p_\text{data}}\log D(x) + \mathbb E_{z\sim p_z}\log\big(1 - D(G(z))\big)

is maximised by :math:`D` and minimised by :math:`G`. Every loss here takes **logits**, and
:math:`\log D = \log\sigma(\ell)`, :math:`\log(1 - D) = \log\sigma(-\ell)` are computed with
``logsigmoid``, which is exact where :math:`D` is within rounding of 0 or 1 (a ``log(sigmoid)``
gives ``-inf`` there).

**The optimal discriminator** (eq. ``ch9-eq-optimal-d``). For a fixed :math:`G`,
:math:`D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_g(x))` maximises :math:`V`, and
(eq. ``ch9-eq-js``) :math:`V(D^*, G) = -\log 4 + 2\,\mathrm{JS}(p_\text{data}\,\|\,p_g)`, so the
generator's minimax loss is a Jensen-Shannon divergence in disguise (:func:`optimal_discriminator`).

**Generator losses** (eq. ``ch9-eq-nonsaturating``). ``"minimax"`` minimises
:math:`\mathbb E\log(1 - D(G(z)))`, whose gradient vanishes where the discriminator confidently
rejects the samples (:math:`D(G(z)) \approx 0`, early in training); ``"non_saturating"`` minimises
:math:`-\mathbb E\log D(G(z))` instead, with the same fixed points and a large gradient exactly there.

**WGAN-GP** (eqs. ``ch9-eq-wgan``, ``ch9-eq-gp``). A real-valued critic :math:`D` (no sigmoid)
estimates the Wasserstein-1 distance :math:`W_1(p_\text{data}, p_g) = \sup_{\|D\|_L \le 1}
\mathbb E_{p_\text{data}} D - \mathbb E_{p_g} D`; the critic minimises
:math:`\mathbb E_{p_g} D - \mathbb E_{p_\text{data}} D + \lambda\,\mathbb E_{\hat x}(\|\nabla_{\hat x} D(\hat x)\|
- 1)^2` with interpolates :math:`\hat x = \epsilon x + (1 - \epsilon) G(z)`,
:math:`\epsilon \sim U(0, 1)` (Gulrajani et al. 2017), and the generator minimises
:math:`-\mathbb E D(G(z))`.

**Training** (:meth:`GAN.train_step`, :meth:`GAN.fit`): :math:`k` discriminator steps per generator
step, as in Algorithm 1 of Goodfellow et al. (2014); the generator's samples are *detached* for the
discriminator's steps, so those steps never move the generator. Options used by the benchmark
``gan-8gaussians`` (all off by default): a zero-centred gradient penalty on real data
(:func:`r1_penalty`, Mescheder et al. 2018), spectral normalisation of the discriminator's layers
(Miyato et al. 2018), and an exponential moving average of the generator's weights from which
:meth:`GAN.sample` draws (Yazici et al. 2019).

Sample quality is measured with :mod:`gmcourse.metrics` (MMD, modes covered, Fréchet distance),
never with a likelihood.

Shapes: data ``(n, D)`` (``D = 64`` for the 8x8 digits, which may also come as ``(n, 8, 8)``);
latent codes ``(n, d_z)``; logits and critic scores ``(n,)``.
"""

from __future__ import annotations

import copy
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gmcourse.protocol import GenerativeModel
from gmcourse.utils import make_generator, positive_int, progress as progress_bar

__all__ = ["ACTIVATIONS", "KINDS", "GENERATOR_LOSSES", "MLPGenerator", "MLPDiscriminator", "ConvGenerator",
           "ConvDiscriminator", "value_function", "discriminator_loss", "generator_loss", "critic_loss",
           "gradient_penalty", "r1_penalty", "optimal_discriminator", "GAN"]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "silu": nn.SiLU,
               "tanh": nn.Tanh}
KINDS = ("non_saturating", "minimax", "wgan-gp")
GENERATOR_LOSSES = ("non_saturating", "minimax", "wgan")


# ----------------------------------------------------------------------------- checks

def _check_tensor(x, what: str, min_dim: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty batch with at least {min_dim} dimension(s), got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_scores(scores, what: str) -> torch.Tensor:
    scores = _check_tensor(scores, what)
    if scores.dim() != 1:
        raise ValueError(f"{what} must have shape (n,) (one logit or score per example), got {tuple(scores.shape)}")
    return scores


def _hidden(hidden, name="hidden") -> tuple[int, ...]:
    hidden = (hidden,) if isinstance(hidden, int) and not isinstance(hidden, bool) else tuple(hidden)
    if not hidden:
        raise ValueError(f"{name} must list at least one layer width, got {hidden!r}")
    for width in hidden:
        positive_int(width, f"every width in {name}")
    return hidden


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- networks

class MLPGenerator(nn.Module):
    r""":math:`G_\theta: \mathbb R^{d_z} \to \mathbb R^D`, an MLP with a linear output layer.

    ``forward(z)`` maps latent codes ``(n, latent_dim)`` to points ``(n, data_dim)``."""

    def __init__(self, latent_dim: int = 2, data_dim: int = 2, hidden=(128, 128, 128), activation: str = "relu"):
        super().__init__()
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.data_dim = positive_int(data_dim, "data_dim")
        layers, width = [], self.latent_dim
        for out in _hidden(hidden):
            layers += [nn.Linear(width, out), _activation(activation)()]
            width = out
        layers.append(nn.Linear(width, self.data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = _check_tensor(z, "z", min_dim=2)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)


class MLPDiscriminator(nn.Module):
    r"""The logit network :math:`\ell_\phi: \mathbb R^D \to \mathbb R` (:math:`D_\phi = \sigma(\ell_\phi)`),
    or a WGAN critic (the same network, read without the sigmoid).

    ``forward(x)`` maps points ``(n, data_dim)`` to logits ``(n,)``. ``spectral_norm=True`` divides
    every weight matrix by (a power-iteration estimate of) its largest singular value, which bounds
    the network's Lipschitz constant by that of its activations (Miyato et al. 2018)."""

    def __init__(self, data_dim: int = 2, hidden=(128, 128, 128), activation: str = "relu",
                 spectral_norm: bool = False):
        super().__init__()
        self.data_dim = positive_int(data_dim, "data_dim")
        linear = (lambda i, o: _spectral_norm(nn.Linear(i, o))) if spectral_norm else nn.Linear
        layers, width = [], self.data_dim
        for out in _hidden(hidden):
            layers += [linear(width, out), _activation(activation)()]
            width = out
        layers.append(linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tensor(x, "x", min_dim=2)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must have shape (n, {self.data_dim}), got {tuple(x.shape)}")
        return self.net(x).squeeze(-1)


class ConvGenerator(nn.Module):
    r"""A small convolutional generator for the 8x8 digits: :math:`z` -> 2x2 -> 4x4 -> 8x8 -> sigmoid.

    ``forward(z)`` maps ``(n, latent_dim)`` to pixel values ``(n, 64)`` in :math:`[0, 1]` (rows of
    the image one after the other, as ``load_digits(form="float", flatten=True)``)."""

    data_dim = 64

    def __init__(self, latent_dim: int = 16, channels: int = 64):
        super().__init__()
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        c = positive_int(channels, "channels", minimum=2)
        self.channels = c
        self.project = nn.Sequential(nn.Linear(self.latent_dim, 2 * c * 2 * 2), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ReLU(),  # 2x2 -> 4x4
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.ReLU(),  # 4x4 -> 8x8
            nn.Conv2d(c // 2, 1, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = _check_tensor(z, "z", min_dim=2)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.project(z).view(-1, 2 * self.channels, 2, 2)
        return torch.sigmoid(self.net(h)).flatten(1)  # (n, 64)


class ConvDiscriminator(nn.Module):
    r"""A small convolutional logit network for the 8x8 digits: 8x8 -> 4x4 -> 2x2 -> logit.

    ``forward(x)`` takes ``(n, 64)`` or ``(n, 8, 8)`` pixel values and returns logits ``(n,)``."""

    data_dim = 64

    def __init__(self, channels: int = 64, spectral_norm: bool = False):
        super().__init__()
        c = positive_int(channels, "channels")
        wrap = _spectral_norm if spectral_norm else (lambda layer: layer)
        self.net = nn.Sequential(
            wrap(nn.Conv2d(1, c, 3, padding=1)), nn.LeakyReLU(0.2),
            wrap(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),  # 8x8 -> 4x4
            wrap(nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),  # 4x4 -> 2x2
            nn.Flatten(), wrap(nn.Linear(2 * c * 4, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_tensor(x, "x", min_dim=2)
        if tuple(x.shape[1:]) not in ((64,), (8, 8)):
            raise ValueError(f"x must have shape (n, 64) or (n, 8, 8) (8x8 digits), got {tuple(x.shape)}")
        return self.net(x.reshape(-1, 1, 8, 8)).squeeze(-1)


# ----------------------------------------------------------------------------- losses

def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Monte Carlo estimate of :math:`V(D, G) = \mathbb E\log D(x) + \mathbb E\log(1 - D(G(z)))`
    (eq. ``ch9-eq-value``) from the logits of a batch of data and a batch of generated samples.

    Computed as ``logsigmoid(real).mean() + logsigmoid(-fake).mean()`` (since
    :math:`1 - \sigma(\ell) = \sigma(-\ell)`): finite for any finite logits. Always :math:`\le 0`;
    :math:`-\log 4` when :math:`D \equiv 1/2`."""
    real_logits = _check_scores(real_logits, "real_logits")
    fake_logits = _check_scores(fake_logits, "fake_logits")
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""What the discriminator minimises: :math:`-V(D, G)` (eq. ``ch9-eq-value``), the binary
    cross-entropy with label 1 for data and 0 for generated samples."""
    return -value_function(real_logits, fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    r"""What the generator minimises, from the discriminator's logits on generated samples.

    ``"minimax"``: :math:`\mathbb E\log(1 - D(G(z)))` (its part of eq. ``ch9-eq-value``);
    ``"non_saturating"``: :math:`-\mathbb E\log D(G(z))` (eq. ``ch9-eq-nonsaturating``);
    ``"wgan"``: :math:`-\mathbb E D(G(z))` for a critic's scores (eq. ``ch9-eq-wgan``).

    The minimax gradient with respect to a logit is :math:`-\sigma(\ell)`, which vanishes where
    :math:`D(G(z)) \approx 0`; the non-saturating one is :math:`-(1 - \sigma(\ell))`, close to -1 there."""
    fake_logits = _check_scores(fake_logits, "fake_logits")
    if kind == "minimax":
        return F.logsigmoid(-fake_logits).mean()
    if kind == "non_saturating":
        return -F.logsigmoid(fake_logits).mean()
    if kind == "wgan":
        return -fake_logits.mean()
    raise ValueError(f"kind must be one of {GENERATOR_LOSSES}, got {kind!r}")


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    r"""The WGAN critic's loss without its penalty: :math:`\mathbb E_{p_g} D - \mathbb E_{p_\text{data}} D`
    (eq. ``ch9-eq-wgan``); minus it estimates :math:`W_1` when the critic is 1-Lipschitz and optimal."""
    real_scores = _check_scores(real_scores, "real_scores")
    fake_scores = _check_scores(fake_scores, "fake_scores")
    return fake_scores.mean() - real_scores.mean()


def _input_gradients(critic, x: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla_x D(x)` per example, (n, D) flattened, with a graph (for the penalty's own gradient)."""
    x = x.detach().requires_grad_(True)
    scores = critic(x)
    if scores.shape != x.shape[:1]:
        raise ValueError(f"the critic must return one score per example, shape ({len(x)},), got {tuple(scores.shape)}")
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
                     weight: float = 10.0) -> torch.Tensor:
    r"""The WGAN-GP penalty :math:`\lambda\,\mathbb E_{\hat x}(\|\nabla_{\hat x} D(\hat x)\|_2 - 1)^2`
    (eq. ``ch9-eq-gp``), ``weight`` = :math:`\lambda` (10 in Gulrajani et al. 2017).

    Interpolates :math:`\hat x = \epsilon x + (1 - \epsilon) G(z)` with one
    :math:`\epsilon \sim U(0, 1)` per pair, drawn with ``generator`` (on its device, then moved to
    ``real``'s). ``fake`` is detached here: the penalty trains the critic only. The result keeps
    its graph (``create_graph``), so ``backward`` reaches the critic's weights through the gradient.
    For a linear critic :math:`D(x) = w\cdot x + b` it equals :math:`\lambda(\|w\| - 1)^2` exactly."""
    real = _check_tensor(real, "real", min_dim=2)
    fake = _check_tensor(fake, "fake", min_dim=2)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    weight = _nonnegative(weight, "weight")
    g = make_generator(generator=generator) if generator is not None else None
    eps_device = g.device if g is not None else real.device
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=g, device=eps_device,
                     dtype=real.dtype).to(real.device)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    grad = _input_gradients(critic, x_hat)
    return weight * ((grad.norm(dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator, real: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    r"""The zero-centred gradient penalty on data, :math:`\frac{\gamma}2\mathbb E_{p_\text{data}}
    \|\nabla_x \ell_\phi(x)\|^2` (Mescheder et al. 2018, "R1"), ``weight`` = :math:`\gamma`.

    It keeps the discriminator flat on the data, which damps the oscillations of simultaneous
    gradient descent around the equilibrium :math:`p_g = p_\text{data}`."""
    real = _check_tensor(real, "real", min_dim=2)
    weight = _nonnegative(weight, "weight")
    grad = _input_gradients(discriminator, real)
    return 0.5 * weight * (grad**2).sum(dim=1).mean()


def optimal_discriminator(log_p_data: torch.Tensor, log_p_g: torch.Tensor) -> torch.Tensor:
    r""":math:`D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_g(x))` (eq. ``ch9-eq-optimal-d``),
    elementwise from log-densities, as :math:`\sigma(\log p_\text{data} - \log p_g)`: stable where
    both densities underflow. Its logit is the log-density ratio."""
    log_p_data = torch.as_tensor(log_p_data)
    log_p_g = torch.as_tensor(log_p_g)
    if not (log_p_data.is_floating_point() and log_p_g.is_floating_point()):
        raise TypeError("log_p_data and log_p_g must be floating-point tensors of log-densities")
    if log_p_data.shape != log_p_g.shape:
        raise ValueError(f"log_p_data and log_p_g must have the same shape, got {tuple(log_p_data.shape)} "
                         f"and {tuple(log_p_g.shape)}")
    if torch.isnan(log_p_data).any() or torch.isnan(log_p_g).any():
        raise ValueError("log-densities contain NaN")
    if ((log_p_data == -math.inf) & (log_p_g == -math.inf)).any():
        raise ValueError("D* is undefined where both densities are 0 (log_p_data = log_p_g = -inf)")
    return torch.sigmoid(log_p_data - log_p_g)


# ----------------------------------------------------------------------------- the model

class GAN(GenerativeModel):
    r"""A generator and a discriminator (or WGAN critic) in one :class:`~gmcourse.protocol.GenerativeModel`.

    Args:
        generator_net: maps latent codes ``(n, latent_dim)`` to data ``(n, *event_shape)``.
        discriminator_net: maps data to logits (critic scores for ``"wgan-gp"``) ``(n,)``.
        latent_dim: :math:`d_z`; :math:`z \sim \mathcal N(0, I_{d_z})`.
        kind: ``"non_saturating"`` (default), ``"minimax"`` (both with :func:`discriminator_loss`) or
            ``"wgan-gp"`` (:func:`critic_loss` + :func:`gradient_penalty`, generator loss ``"wgan"``).
        discriminator_steps: :math:`k`, discriminator updates per generator update.
        gp_weight: :math:`\lambda` of the WGAN-GP penalty (used only by ``"wgan-gp"``).
        r1_weight: :math:`\gamma` of :func:`r1_penalty` added to the discriminator's loss (0: none).
        ema_decay: if given (e.g. 0.999), a copy of the generator whose weights are an exponential
            moving average of the trained ones, :math:`\bar\theta \leftarrow \beta\bar\theta +
            (1 - \beta)\theta` after every generator step (with :math:`\beta_t = \min(\beta, (1+t)/(10+t))`
            so that early averages forget the initialisation); :meth:`sample` then draws from it.

    ``log_prob`` raises: a GAN defines :math:`p_g` only through its samples (``log_prob_kind =
    "none"``). ``loss(x)`` is the value-function estimate :math:`V(D, G)` on ``x`` and as many
    generated samples (the WGAN estimate of :math:`W_1` for ``"wgan-gp"``), a number to monitor:
    the two players optimise it in opposite directions, so training uses :meth:`train_step`.
    """

    log_prob_kind = "none"

    def __init__(self, generator_net: nn.Module, discriminator_net: nn.Module, latent_dim: int,
                 kind: str = "non_saturating", discriminator_steps: int = 1, gp_weight: float = 10.0,
                 r1_weight: float = 0.0, ema_decay: float | None = None):
        super().__init__()
        if not isinstance(generator_net, nn.Module) or not isinstance(discriminator_net, nn.Module):
            raise TypeError("generator_net and discriminator_net must be torch.nn.Module instances")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        if getattr(generator_net, "latent_dim", self.latent_dim) != self.latent_dim:
            raise ValueError(f"latent_dim={latent_dim} but the generator takes codes of dimension "
                             f"{generator_net.latent_dim}")
        self.generator_net = generator_net
        self.discriminator_net = discriminator_net
        self.kind = kind
        self.discriminator_steps = positive_int(discriminator_steps, "discriminator_steps")
        self.gp_weight = _nonnegative(gp_weight, "gp_weight")
        self.r1_weight = _nonnegative(r1_weight, "r1_weight")
        if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0 < ema_decay < 1):
            raise ValueError(f"ema_decay must be None or a number in (0, 1), got {ema_decay!r}")
        self.ema_decay = ema_decay
        self.ema_generator = None
        if ema_decay is not None:
            self.ema_generator = copy.deepcopy(generator_net).requires_grad_(False)
        self.generator_steps = 0

    # -- the protocol
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "a GAN has no density to evaluate (log_prob_kind = 'none'): its generator defines p_g only "
            "through samples G(z). Compare it with the data on samples instead, with gmcourse.metrics "
            "(mmd2 and its standard error, energy_distance, mode_coverage for the 2D toys, digit_scores "
            "for the digits)."
        )

    def _device(self) -> torch.device:
        return next(self.generator_net.parameters()).device

    def latent(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        r"""``n`` latent codes :math:`z \sim \mathcal N(0, I_{d_z})`, ``(n, latent_dim)``, drawn on the
        generator's device and moved to the model's."""
        positive_int(n, "n")
        g = make_generator(seed=seed, generator=generator, device=self._device() if generator is None else None)
        dtype = next(self.generator_net.parameters()).dtype
        return torch.randn(n, self.latent_dim, generator=g, device=g.device, dtype=dtype).to(self._device())

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` independent samples :math:`G(z)` (from the moving-average generator when ``ema_decay``
        is set), without a graph, on the model's device."""
        net = self.ema_generator if self.ema_generator is not None else self.generator_net
        with torch.no_grad():
            return net(self.latent(n, generator=generator, seed=seed))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The value-function estimate :math:`V(D, G)` (eq. ``ch9-eq-value``) on the batch ``x`` and
        ``len(x)`` generated samples; for ``"wgan-gp"`` the critic's estimate of :math:`W_1`,
        :math:`\mathbb E_{p_\text{data}} D - \mathbb E_{p_g} D` (eq. ``ch9-eq-wgan``). Differentiable."""
        x = _check_tensor(x, "x", min_dim=2)
        fake = self.generator_net(self.latent(len(x), generator=generator))
        real_scores, fake_scores = self.discriminator_net(x), self.discriminator_net(fake)
        if self.kind == "wgan-gp":
            return -critic_loss(real_scores, fake_scores)
        return value_function(real_scores, fake_scores)

    # -- training
    def discriminator_objective(self, x_real: torch.Tensor, fake: torch.Tensor,
                                generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one discriminator step on real ``x_real`` and (already detached) ``fake``.

        Both batches go through the discriminator in one call (its layers treat examples
        independently, so this equals two calls and costs half the operations); the R1 term is
        :func:`r1_penalty` computed from that same forward pass."""
        real = x_real.detach().requires_grad_(self.r1_weight > 0)
        scores = self.discriminator_net(torch.cat([real, fake.detach()]))
        if scores.shape != (len(real) + len(fake),):
            raise ValueError(f"the discriminator must return one logit per example, shape (n,), got {tuple(scores.shape)}")
        real_scores, fake_scores = scores[: len(real)], scores[len(real):]
        r1 = None
        if self.r1_weight > 0:
            (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
            r1 = 0.5 * self.r1_weight * (grad.flatten(1) ** 2).sum(dim=1).mean()
        if self.kind == "wgan-gp":
            loss = critic_loss(real_scores, fake_scores)
            if self.gp_weight > 0:
                loss = loss + gradient_penalty(self.discriminator_net, x_real, fake, generator=generator,
                                               weight=self.gp_weight)
        else:
            loss = discriminator_loss(real_scores, fake_scores)
        return loss if r1 is None else loss + r1

    def train_step(self, x_real: torch.Tensor, d_optimizer: torch.optim.Optimizer, g_optimizer: torch.optim.Optimizer,
                   generator: torch.Generator | None = None) -> dict:
        r"""One round of the game: ``discriminator_steps`` (:math:`k`) discriminator updates, then one
        generator update. Returns ``{"d_loss": ..., "g_loss": ...}`` (floats; ``d_loss`` of the last
        discriminator step, penalties included).

        ``x_real`` is cut into :math:`k` equal minibatches, one per discriminator step (Algorithm 1
        of Goodfellow et al. 2014), so its length must be a multiple of :math:`k`. Each step draws
        fresh codes and **detaches** the generated samples, so that the discriminator's loss cannot
        move the generator; the generator step then draws as many codes as one minibatch holds.
        ``d_optimizer`` must hold the discriminator's parameters, ``g_optimizer`` the generator's."""
        x_real = _check_tensor(x_real, "x_real", min_dim=2)
        k = self.discriminator_steps
        if len(x_real) % k:
            raise ValueError(f"x_real holds {len(x_real)} rows, not a multiple of discriminator_steps={k} "
                             "(one real minibatch per discriminator step)")
        batches = x_real.split(len(x_real) // k)
        for batch in batches:
            with torch.no_grad():
                fake = self.generator_net(self.latent(len(batch), generator=generator))
            d_loss = self.discriminator_objective(batch, fake.detach(), generator=generator)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
        # the generator step: the gradient flows through the discriminator to the samples, but the
        # discriminator's own weight gradients are not needed (its flags are restored afterwards)
        flags = [p.requires_grad for p in self.discriminator_net.parameters()]
        self.discriminator_net.requires_grad_(False)
        try:
            fake_scores = self.discriminator_net(self.generator_net(self.latent(len(batches[0]), generator=generator)))
            g_loss = generator_loss(fake_scores, "wgan" if self.kind == "wgan-gp" else self.kind)
            g_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
        finally:
            for p, flag in zip(self.discriminator_net.parameters(), flags):
                p.requires_grad_(flag)
        g_optimizer.step()
        self.generator_steps += 1
        self.update_ema()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the moving-average generator towards the trained one (no-op without ``ema_decay``)."""
        if self.ema_generator is None:
            return
        t = self.generator_steps
        decay = min(self.ema_decay, (1 + t) / (10 + t))
        for avg, new in zip(self.ema_generator.parameters(), self.generator_net.parameters()):
            avg.lerp_(new, 1 - decay)
        for avg, new in zip(self.ema_generator.buffers(), self.generator_net.buffers()):
            avg.copy_(new)

    def optimizers(self, lr: float = 1e-4, betas=(0.5, 0.999), d_lr: float | None = None):
        """Adam for the generator (``lr``) and the discriminator (``d_lr``, default ``lr``): ``(d_opt, g_opt)``."""
        for value, name in ((lr, "lr"), (lr if d_lr is None else d_lr, "d_lr")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        fused = self._device().type in ("cpu", "cuda")  # one kernel for all parameters
        d_opt = torch.optim.Adam(self.discriminator_net.parameters(), lr=lr if d_lr is None else d_lr,
                                 betas=tuple(betas), fused=fused)
        g_opt = torch.optim.Adam(self.generator_net.parameters(), lr=lr, betas=tuple(betas), fused=fused)
        return d_opt, g_opt

    def fit(self, data, steps: int, batch_size: int = 256, lr: float = 1e-4, betas=(0.5, 0.999), seed: int = 0,
            eval_every: int | None = None, evaluate=None, progress: bool = True, d_lr: float | None = None) -> dict:
        """Adam on both players for exactly ``steps`` generator steps (each after :math:`k` discriminator steps).

        ``data`` is a tensor ``(N, ...)`` (minibatches drawn with replacement) or a callable
        returning ``n`` fresh points, ``data(n)`` or ``data(n, generator=g)`` when it takes a
        ``generator`` keyword (e.g. ``EightGaussians().sample``). Minibatches, codes and
        interpolation weights come from one generator seeded with ``seed``, so for given initial
        weights a run is reproducible. ``evaluate(model)`` (any JSON-like result, e.g. a
        :class:`gmcourse.metrics.ModeReport`) is called after every ``eval_every`` steps and after
        the last one.

        Returns the history ``{"step": [1..steps], "d_loss": [...], "g_loss": [...],
        "eval_step": [...], "eval": [...]}``."""
        steps = positive_int(steps, "steps")
        batch_size = positive_int(batch_size, "batch_size")
        if eval_every is not None:
            positive_int(eval_every, "eval_every")
            if evaluate is None:
                raise ValueError("eval_every is set but evaluate is None: pass evaluate=callable(model)")
        if evaluate is not None and not callable(evaluate):
            raise TypeError(f"evaluate must be a callable model -> result, got {type(evaluate).__name__}")
        device = self._device()
        g = make_generator(seed=seed, device=device)
        draw = _data_source(data, device)
        d_opt, g_opt = self.optimizers(lr, betas, d_lr)
        history = {"step": [], "d_loss": [], "g_loss": [], "eval_step": [], "eval": []}
        for step in progress_bar(range(1, steps + 1), desc=f"GAN ({self.kind})", disable=None if progress else True):
            losses = self.train_step(draw(batch_size * self.discriminator_steps, g), d_opt, g_opt, generator=g)
            history["step"].append(step)
            history["d_loss"].append(losses["d_loss"])
            history["g_loss"].append(losses["g_loss"])
            if evaluate is not None and ((eval_every is not None and step % eval_every == 0) or step == steps):
                history["eval_step"].append(step)
                history["eval"].append(evaluate(self))
        return history


def _data_source(data, device):
    """``draw(n, g)`` -> a minibatch of ``n`` real points on ``device``."""
    if isinstance(data, torch.Tensor):
        data = _check_tensor(data, "data", min_dim=2).to(device)

        def draw(n, g):
            return data[torch.randint(len(data), (n,), generator=g, device=g.device).to(device)]
        return draw
    if not callable(data):
        raise TypeError(f"data must be a tensor (n, ...) or a callable n -> tensor, got {type(data).__name__}")
    try:
        takes_generator = "generator" in inspect.signature(data).parameters
    except (TypeError, ValueError):
        takes_generator = False

    def draw(n, g):
        batch = data(n, generator=g) if takes_generator else data(n)
        batch = _check_tensor(batch, "data(n)", min_dim=2)
        if len(batch) != n:
            raise ValueError(f"data(n) must return n = {n} points, got {len(batch)}")
        return batch.to(device)
    return draw
