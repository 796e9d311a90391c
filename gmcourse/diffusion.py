r"""Denoising diffusion probabilistic models (chapter 10; Ho et al. 2020, Sohl-Dickstein et al. 2015).

Equations are cited by their labels in ``book/10_diffusion_models.md``. Time steps are integers
:math:`t = 0, 1, \dots, T`; :math:`x_0 = x` is a data point and every schedule tensor is indexed by
:math:`t` directly (entry 0 is the "no noise" convention :math:`\beta_0 = 0`, :math:`\bar\alpha_0 = 1`).

**Forward process** (eq. ``ch10-eq-forward``). A fixed Markov chain adds Gaussian noise,
:math:`q(x_t\mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}\,x_{t-1}, \beta_t I)` with
:math:`\alpha_t = 1 - \beta_t` (:func:`forward_chain` iterates it). Composing Gaussians gives the
closed-form kernel (eq. ``ch10-eq-kernel``, :func:`q_sample`)

.. math:: q(x_t\mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
          \qquad \bar\alpha_t = \prod_{s=1}^t \alpha_s,

i.e. :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,
:math:`\epsilon\sim\mathcal N(0, I)`. Schedules: :meth:`NoiseSchedule.linear` (Ho et al. 2020:
:math:`\beta_t` linear from :math:`10^{-4}` to 0.02 over :math:`T = 1000` steps) and
:meth:`NoiseSchedule.cosine` (Nichol and Dhariwal 2021).

**Posterior** (eq. ``ch10-eq-posterior``, :func:`posterior_mean_variance`). Given :math:`x_0`, Bayes'
rule makes the reverse step Gaussian: :math:`q(x_{t-1}\mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)` with

.. math:: \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
                        + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t, \qquad
          \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .

**Reverse model and ELBO** (eqs. ``ch10-eq-reverse-step``, ``ch10-eq-elbo``). The model
:math:`p_\theta(x_{t-1}\mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)` with the mean written
through a noise predictor :math:`\epsilon_\theta` (substitute :math:`x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}`
into :math:`\tilde\mu_t`):

.. math:: \mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big),

and :math:`\sigma_t^2 = \tilde\beta_t` (``variance="posterior"``, the default) or :math:`\beta_t`
(``variance="beta"``). The ELBO :math:`\mathcal L(x) \le \log p_\theta(x)` (as in chapter 8) is

.. math:: \mathcal L(x_0) = \mathbb E_q\Big[\log p_\theta(x_0\mid x_1)
          - \sum_{t=2}^T \mathrm{KL}\big(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big)\Big]
          - \mathrm{KL}\big(q(x_T\mid x_0)\,\|\,\mathcal N(0, I)\big),

every KL between Gaussians (:func:`gmcourse.divergences.gaussian_kl`). The decoder
:math:`p_\theta(x_0\mid x_1) = \mathcal N(\mu_\theta(x_1, 1), \beta_1 I)` is a Gaussian density
(:math:`\tilde\beta_1 = 0` cannot serve as its variance). :meth:`DDPM.elbo` returns it in nats.

**Noise-prediction loss** (eq. ``ch10-eq-eps-loss``). Because :math:`\tilde\mu_t - \mu_\theta =
\frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}(\epsilon_\theta - \epsilon)`, the KL term of step
:math:`t \ge 2` is a weighted squared error of the noise prediction plus a constant,

.. math:: \mathrm{KL}_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}
          \,\|\epsilon - \epsilon_\theta(x_t, t)\|^2 + \frac12\sum_j\Big[\log\frac{\sigma_t^2}{\tilde\beta_t}
          + \frac{\tilde\beta_t}{\sigma_t^2} - 1\Big]

(:meth:`DDPM.kl_weights`); Ho et al. drop the weight and train on
:math:`\mathbb E_{t,x_0,\epsilon}\|\epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon, t)\|^2`
with :math:`t` uniform on :math:`1..T` (:meth:`DDPM.loss`, ``weighting="simple"``).

**Ancestral sampling** (eq. ``ch10-eq-reverse-step``, :meth:`DDPM.sample`):
:math:`x_T\sim\mathcal N(0, I)`, then :math:`x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z` for
:math:`t = T, \dots, 2` and :math:`x_0 = \mu_\theta(x_1, 1)` (no noise is added at the last step: the
output is the decoder's mean).

**The exact noise predictor of a Gaussian mixture** (:class:`GaussianMixtureNoisePredictor`). If
:math:`p_\text{data} = \sum_k w_k\,\mathcal N(\mu_k, s_k^2 I)` then, by eq. ``ch10-eq-kernel``, the
noisy marginal :math:`q_t = \sum_k w_k\,\mathcal N(\sqrt{\bar\alpha_t}\mu_k, (\bar\alpha_t s_k^2 + 1 - \bar\alpha_t) I)`
is again a mixture, and the minimiser of the noise-prediction loss is
:math:`\epsilon^*(x_t, t) = \mathbb E[\epsilon\mid x_t] = -\sqrt{1-\bar\alpha_t}\,\nabla\log q_t(x_t)` in
closed form. With it the sampler can be tested without any training.

Shapes: data and noise ``(n, D)``; time steps an int or an int64 tensor ``(n,)``; per-example
results ``(n,)``. Schedules are float64; models compute in their parameters' dtype.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gmcourse.divergences import gaussian_kl
from gmcourse.protocol import GenerativeModel
from gmcourse.utils import check_points, make_generator, positive_int, progress as progress_bar

__all__ = ["NoiseSchedule", "q_sample", "forward_chain", "posterior_mean_variance", "sinusoidal_embedding",
           "NoisePredictor", "MLPNoisePredictor", "ConvNoisePredictor", "GaussianMixtureNoisePredictor",
           "DDPM", "EMA", "WEIGHTINGS", "VARIANCES"]

WEIGHTINGS = ("simple", "elbo", "min-snr")
VARIANCES = ("posterior", "beta")
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- schedules

class NoiseSchedule:
    r"""The variances :math:`\beta_t` of the forward steps and everything derived from them.

    Attributes (float64 tensors of length ``T + 1``, indexed by :math:`t = 0..T`):
    ``betas`` (:math:`\beta_0 = 0`), ``alphas`` :math:`= 1 - \beta_t`, ``alpha_bars``
    :math:`\bar\alpha_t = \prod_{s\le t}\alpha_s` (:math:`\bar\alpha_0 = 1`; eq. ``ch10-eq-kernel``),
    ``posterior_variances`` :math:`\tilde\beta_t` (eq. ``ch10-eq-posterior``; :math:`\tilde\beta_0 =
    \tilde\beta_1 = 0`). ``T`` is the number of steps.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("betas must hold at least one step (beta_1, ..., beta_T)")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError(f"every beta_t must lie in (0, 1); got values in [{betas.min():.3g}, {betas.max():.3g}]")
        self.T = int(betas.numel())
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # (T+1,)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)  # alpha_bars[0] = 1
        previous = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])  # alpha_bar_{t-1}
        variances = torch.zeros_like(self.betas)
        variances[1:] = (1.0 - previous[1:]) / (1.0 - self.alpha_bars[1:]) * self.betas[1:]
        self.posterior_variances = variances

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        r""":math:`\beta_t` linear from ``beta_start`` (t = 1) to ``beta_end`` (t = T) (Ho et al. 2020)."""
        positive_int(T, "T")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        r"""Nichol and Dhariwal (2021): :math:`\bar\alpha_t = f(t)/f(0)`,
        :math:`f(t) = \cos^2\big(\frac{t/T + s}{1 + s}\frac\pi2\big)`, with
        :math:`\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}` clipped at ``max_beta`` (only the last
        steps, where :math:`\bar\alpha_t \to 0`, are affected)."""
        positive_int(T, "T")
        if not s >= 0 or not 0 < max_beta < 1:
            raise ValueError(f"need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bars = f / f[0]
        betas = (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=max_beta)
        return cls(betas)

    def to_dict(self) -> dict:
        return {"T": self.T, "beta_1": float(self.betas[1]), "beta_T": float(self.betas[-1])}

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, beta_1={float(self.betas[1]):.3g}, beta_T={float(self.betas[-1]):.3g})"


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def _steps(t, n: int, schedule: NoiseSchedule, device, minimum: int = 0) -> torch.Tensor:
    """``t`` (an int or an int tensor of shape () or (n,)) as an int64 tensor (n,), checked to lie in minimum..T."""
    if isinstance(t, bool):
        raise TypeError("t must be an int or an integer tensor, got a bool")
    if isinstance(t, int):
        t = torch.full((n,), t, dtype=torch.long)
    elif isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer time steps, got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be an int or have shape ({n},), got shape {tuple(t.shape)}")
        t = t.long()
    else:
        raise TypeError(f"t must be an int or an integer tensor, got {type(t).__name__}")
    if n and (int(t.min()) < minimum or int(t.max()) > schedule.T):
        raise ValueError(f"time steps must lie in {minimum}..{schedule.T}, got values in {int(t.min())}..{int(t.max())}")
    return t.to(device)


def _coef(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` as a column (n, 1) in the dtype and on the device of ``like``."""
    return values.to(like.device)[t].to(like.dtype).unsqueeze(-1)


def _points(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, D), got {type(x).__name__}")
    return check_points(x, x.shape[-1] if x.dim() == 2 else -1, name)


# ----------------------------------------------------------------------------- forward process

def q_sample(x0: torch.Tensor, t, schedule: NoiseSchedule, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A draw of :math:`x_t \sim q(x_t\mid x_0)` from the closed-form kernel (eq. ``ch10-eq-kernel``):
    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`.

    ``x0`` (n, D); ``t`` an int in 0..T or an int tensor (n,); ``noise`` the :math:`\epsilon` (n, D)
    to use (drawn with ``generator`` when None). Differentiable in ``x0`` and ``noise``.
    """
    schedule = _check_schedule(schedule)
    x0 = _points(x0, "x0")
    t = _steps(t, x0.shape[0], schedule, x0.device)
    if noise is None:
        generator = make_generator(generator=generator)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    abar = _coef(schedule.alpha_bars, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def forward_chain(x0: torch.Tensor, t: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                  return_trajectory: bool = False) -> torch.Tensor:
    r""":math:`x_t` by iterating the one-step kernel :math:`x_s = \sqrt{\alpha_s}\,x_{s-1} + \sqrt{\beta_s}\,\epsilon_s`
    for :math:`s = 1..t` (eq. ``ch10-eq-forward``); ``t`` an int in 0..T.

    Returns ``(n, D)``, or with ``return_trajectory=True`` the whole path ``(t + 1, n, D)`` with
    entry ``s`` holding :math:`x_s` (entry 0 is ``x0``)."""
    schedule = _check_schedule(schedule)
    x0 = _points(x0, "x0")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= schedule.T:
        raise ValueError(f"t must be an int in 0..{schedule.T}, got {t!r}")
    generator = make_generator(generator=generator)
    x, path = x0, [x0]
    for s in range(1, t + 1):
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
        x = math.sqrt(float(schedule.alphas[s])) * x + math.sqrt(float(schedule.betas[s])) * noise
        if return_trajectory:
            path.append(x)
    return torch.stack(path) if return_trajectory else x


def posterior_mean_variance(x_t: torch.Tensor, x0: torch.Tensor, t, schedule: NoiseSchedule
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean :math:`\tilde\mu_t(x_t, x_0)` and variance :math:`\tilde\beta_t` of
    :math:`q(x_{t-1}\mid x_t, x_0)` (eq. ``ch10-eq-posterior``), for ``t`` in 1..T.

    Both are returned with the shape of ``x_t`` (n, D): the variance is the diagonal of the
    covariance :math:`\tilde\beta_t I`, the same in every coordinate. At :math:`t = 1` the posterior
    is the point mass at :math:`x_0` (mean :math:`x_0`, variance 0)."""
    schedule = _check_schedule(schedule)
    x_t, x0 = _points(x_t, "x_t"), _points(x0, "x0")
    if x_t.shape != x0.shape:
        raise ValueError(f"x_t and x0 must have the same shape, got {tuple(x_t.shape)} and {tuple(x0.shape)}")
    t = _steps(t, x_t.shape[0], schedule, x_t.device, minimum=1)
    abar, abar_prev = _coef(schedule.alpha_bars, t, x_t), _coef(schedule.alpha_bars, t - 1, x_t)
    beta, alpha = _coef(schedule.betas, t, x_t), _coef(schedule.alphas, t, x_t)
    mean = abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    variance = _coef(schedule.posterior_variances, t, x_t).expand_as(mean)
    return mean, variance


# ----------------------------------------------------------------------------- noise predictors

def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Transformer-style embedding of integer time steps (Vaswani et al. 2017, as in Ho et al. 2020):
    :math:`[\cos(t\omega_j), \sin(t\omega_j)]_{j < \text{dim}/2}` with
    :math:`\omega_j = \text{max\_period}^{-j/(\text{dim}/2)}`. ``t`` (n,) -> (n, dim) float32."""
    if dim < 2 or dim % 2:
        raise ValueError(f"the embedding dimension must be an even int >= 2, got {dim}")
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().unsqueeze(-1) * frequencies  # (n, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class NoisePredictor(nn.Module):
    r"""Base class of the networks :math:`\epsilon_\theta(x_t, t)`: ``forward(x_t, t) -> (n, D)`` with
    ``x_t`` (n, D) and ``t`` int64 (n,) in 1..T. Subclasses set ``data_dim``."""

    data_dim: int


class MLPNoisePredictor(NoisePredictor):
    r"""An MLP :math:`\epsilon_\theta(x_t, t)` for low-dimensional data.

    The time step enters as ``time_embedding``: ``"sinusoidal"`` (:func:`sinusoidal_embedding` of
    width ``embedding_dim``; with ``embed_every_layer=True`` mapped linearly to a shift of every hidden
    layer's pre-activation, otherwise appended to the input), or ``"scalar"``
    (:math:`t/T` appended to the input, the simplest choice).
    ``residual=True`` makes every hidden layer after the first a residual block
    :math:`h \leftarrow h + \mathrm{act}(W h + b + e(t))`. The output layer starts at zero, so the
    untrained network predicts :math:`\epsilon_\theta = 0`."""

    def __init__(self, data_dim: int = 2, hidden=(128, 128, 128), time_embedding: str = "sinusoidal",
                 embedding_dim: int = 64, activation: str = "silu", T: int = 1000, residual: bool = False,
                 embed_every_layer: bool = True):
        super().__init__()
        self.data_dim = positive_int(data_dim, "data_dim")
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive ints, got {hidden!r}")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual=True needs equal hidden widths, got {hidden}")
        if time_embedding not in ("sinusoidal", "scalar"):
            raise ValueError(f"time_embedding must be 'sinusoidal' or 'scalar', got {time_embedding!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.hidden, self.time_embedding, self.embedding_dim = hidden, time_embedding, embedding_dim
        self.T, self.residual = positive_int(T, "T"), residual
        if time_embedding == "sinusoidal" and (embedding_dim < 2 or embedding_dim % 2):
            raise ValueError(f"embedding_dim must be an even int >= 2, got {embedding_dim}")
        self.embed_every_layer = time_embedding == "sinusoidal" and embed_every_layer
        self.act = ACTIVATIONS[activation]()
        extra = 0 if self.embed_every_layer else 1 if time_embedding == "scalar" else embedding_dim
        sizes = (data_dim + extra,) + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if self.embed_every_layer:  # one matrix maps the embedding to every layer's shift
            self.time_proj = nn.Linear(embedding_dim, sum(hidden))
        self.out = nn.Linear(hidden[-1], data_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.embed_every_layer:
            if self.time_embedding == "scalar":
                features = (t.to(x_t.dtype) / self.T).unsqueeze(-1)
            else:
                features = sinusoidal_embedding(t, self.embedding_dim).to(x_t.dtype)
            h = torch.cat([x_t, features], dim=-1)
            for i, layer in enumerate(self.layers):
                a = self.act(layer(h))
                h = h + a if self.residual and i > 0 else a
            return self.out(h)
        shared = t.numel() > 1 and not torch.is_grad_enabled() and bool((t == t[0]).all())
        steps = t[:1] if shared else t  # sampling: one time step for the whole batch, embedded once
        shifts = self.time_proj(sinusoidal_embedding(steps, self.embedding_dim).to(x_t.dtype)).split(self.hidden, -1)
        h = x_t
        for i, (layer, shift) in enumerate(zip(self.layers, shifts)):
            a = self.act(layer(h) + shift)
            h = h + a if self.residual and i > 0 else a
        return self.out(h)


class ConvNoisePredictor(NoisePredictor):
    r"""A small convolutional :math:`\epsilon_\theta(x_t, t)` for the 8x8 digits (inputs (n, 64)).

    ``n_layers`` 3x3 convolutions with ``channels`` channels at full resolution (padding 1, so the
    receptive field grows by 2 pixels per layer and covers the image after 4), each followed by
    group normalisation and SiLU, with the sinusoidal time embedding added per channel, residual
    connections, and a zero-initialised 3x3 output convolution."""

    def __init__(self, channels: int = 64, n_layers: int = 4, embedding_dim: int = 64, T: int = 1000):
        super().__init__()
        self.data_dim, self.side = 64, 8
        self.channels, self.n_layers = positive_int(channels, "channels"), positive_int(n_layers, "n_layers")
        self.embedding_dim, self.T = embedding_dim, positive_int(T, "T")
        self.inp = nn.Conv2d(1, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(embedding_dim, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.GroupNorm(min(8, channels), channels) for _ in range(n_layers))
        self.time_proj = nn.ModuleList(nn.Linear(channels, channels) for _ in range(n_layers))
        self.out = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x_t.shape[0]
        e = self.time_mlp(sinusoidal_embedding(t, self.embedding_dim).to(x_t.dtype))  # (n, C)
        h = self.inp(x_t.view(n, 1, self.side, self.side))
        for conv, norm, proj in zip(self.convs, self.norms, self.time_proj):
            h = h + nn.functional.silu(norm(conv(h) + proj(e)[:, :, None, None]))
        return self.out(h).view(n, self.data_dim)


class GaussianMixtureNoisePredictor(NoisePredictor):
    r"""The exact noise predictor :math:`\epsilon^*(x_t, t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log q_t(x_t)`
    of data distributed as :math:`\sum_k w_k\,\mathcal N(\mu_k, s_k^2 I)`.

    Under the kernel (eq. ``ch10-eq-kernel``) each component stays Gaussian,
    :math:`q_t = \sum_k w_k\,\mathcal N(\sqrt{\bar\alpha_t}\mu_k, v_{k,t} I)` with
    :math:`v_{k,t} = \bar\alpha_t s_k^2 + 1 - \bar\alpha_t`, so with responsibilities
    :math:`r_k(x_t) \propto w_k\,\mathcal N(x_t; \sqrt{\bar\alpha_t}\mu_k, v_{k,t} I)`

    .. math:: \nabla\log q_t(x_t) = -\sum_k r_k(x_t)\,\frac{x_t - \sqrt{\bar\alpha_t}\mu_k}{v_{k,t}} .

    This is the minimiser of the noise-prediction loss (eq. ``ch10-eq-eps-loss``),
    :math:`\mathbb E[\epsilon\mid x_t]`. ``means`` (K, D); ``stds`` a number, (K,) or (K, D)
    (diagonal components are allowed); ``weights`` (K,) summing to 1 (default equal). Computed in
    float64 and returned in ``x_t``'s dtype. It has no trainable parameters.
    """

    def __init__(self, means, stds, weights=None, schedule: NoiseSchedule | None = None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.dim() == 0:
            stds = stds.expand(K)
        if stds.dim() == 1:
            stds = stds.unsqueeze(-1).expand(K, D) if stds.shape == (K,) else stds
        if stds.shape != (K, D) or (stds <= 0).any():
            raise ValueError(f"stds must be positive, a number or of shape ({K},) or ({K}, {D}); got {tuple(stds.shape)}")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or (weights <= 0).any() or abs(float(weights.sum()) - 1) > 1e-9:
            raise ValueError(f"weights must be {K} positive numbers summing to 1, got {weights.tolist()}")
        self.schedule = _check_schedule(schedule if schedule is not None else NoiseSchedule.linear())
        self.data_dim, self.T = D, self.schedule.T
        self.register_buffer("means", means)
        self.register_buffer("variances", stds.contiguous() ** 2)
        self.register_buffer("log_weights", weights.log())
        self.register_buffer("alpha_bars", self.schedule.alpha_bars.clone())

    @classmethod
    def gaussian(cls, mean, std, schedule: NoiseSchedule | None = None) -> "GaussianMixtureNoisePredictor":
        """A single Gaussian :math:`\\mathcal N(\\text{mean}, \\text{std}^2 I)` (a mixture of one); ``std`` may be per coordinate."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
        std = torch.as_tensor(std, dtype=torch.float64)
        return cls(mean, std.reshape(1, -1) if std.dim() else std, None, schedule)

    @classmethod
    def eight_gaussians(cls, schedule: NoiseSchedule | None = None, radius: float = 2.0,
                        std: float = 0.1) -> "GaussianMixtureNoisePredictor":
        """The exact predictor of :class:`gmcourse.toys.EightGaussians` (equal weights)."""
        from gmcourse.toys import EightGaussians

        return cls.from_toy(EightGaussians(radius, std), schedule)

    @classmethod
    def from_toy(cls, toy, schedule: NoiseSchedule | None = None) -> "GaussianMixtureNoisePredictor":
        """From a toy with ``centers()`` (K, D) and a scalar ``std`` (EightGaussians, a Gaussian grid)."""
        if not (hasattr(toy, "centers") and hasattr(toy, "std")):
            raise TypeError(f"toy must have centers() and std (a Gaussian mixture), got {type(toy).__name__}")
        return cls(toy.centers(), float(toy.std), None, schedule)

    def _components(self, x_t: torch.Tensor, t: torch.Tensor):
        x = x_t.double()
        abar = self.alpha_bars[t].unsqueeze(-1).unsqueeze(-1)  # (n, 1, 1)
        centres = abar.sqrt() * self.means  # (n, K, D)
        variances = abar * self.variances + (1 - abar)  # (n, K, D)
        diff = x.unsqueeze(1) - centres  # (n, K, D)
        log_comp = self.log_weights - 0.5 * ((diff**2 / variances) + variances.log() + LOG_2PI).sum(-1)  # (n, K)
        return x, abar.squeeze(-1), diff, variances, log_comp

    def log_prob_noisy(self, x_t: torch.Tensor, t) -> torch.Tensor:
        r""":math:`\log q_t(x_t)`, the exact density of the noisy data at step ``t`` (0..T); (n,) float64."""
        x_t = _points(x_t, "x_t")
        t = _steps(t, x_t.shape[0], self.schedule, x_t.device)
        return torch.logsumexp(self._components(x_t, t)[4], dim=-1)

    def score(self, x_t: torch.Tensor, t) -> torch.Tensor:
        r""":math:`\nabla_{x_t}\log q_t(x_t)`, (n, D) float64, for ``t`` in 0..T."""
        x_t = _points(x_t, "x_t")
        t = _steps(t, x_t.shape[0], self.schedule, x_t.device)
        _, _, diff, variances, log_comp = self._components(x_t, t)
        responsibilities = torch.softmax(log_comp, dim=-1).unsqueeze(-1)  # (n, K, 1)
        return -(responsibilities * diff / variances).sum(1)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        t = _steps(t, x_t.shape[0], self.schedule, x_t.device)
        abar = self.alpha_bars[t].unsqueeze(-1)  # (n, 1)
        return (-(1 - abar).sqrt() * self.score(x_t, t)).to(x_t.dtype)


# ----------------------------------------------------------------------------- EMA

class EMA:
    r"""Exponential moving average of a module's parameters, :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta`
    after every step (with the warm-up :math:`d_k = \min(d, (1 + k)/(10 + k))` of step :math:`k`, so that the
    average forgets the initialisation early). ``copy_to(module)`` loads the average."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        params = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for shadow, p in zip(self.shadow, module.parameters()):
            p.copy_(shadow)


# ----------------------------------------------------------------------------- the model

class DDPM(GenerativeModel):
    r"""Denoising diffusion probabilistic model: a :class:`NoiseSchedule` and a noise predictor.

    ``variance`` chooses :math:`\sigma_t^2` of the reverse steps (eq. ``ch10-eq-reverse-step``):
    ``"posterior"`` :math:`\tilde\beta_t` (default; what diffusers calls ``"fixed_small"``) or
    ``"beta"`` :math:`\beta_t`. ``data_shift`` and ``data_scale`` standardise the data the diffusion
    sees, :math:`y = (x - \text{shift})/\text{scale}` (default 0 and 1); :meth:`sample` maps back and
    :meth:`elbo` adds the log-Jacobian :math:`-D\log\text{scale}`, so both speak of :math:`x`.
    ``sample_range`` (lo, hi) clamps the returned samples (e.g. pixel values in [0, 1]); it is not
    part of the density that :meth:`elbo` bounds.

    ``log_prob_kind = "lower_bound"``: :meth:`log_prob` returns the ELBO (eq. ``ch10-eq-elbo``).
    """

    log_prob_kind = "lower_bound"

    def __init__(self, noise_predictor: nn.Module, schedule: NoiseSchedule, variance: str = "posterior",
                 data_shift=0.0, data_scale=1.0, sample_range: tuple[float, float] | None = None):
        super().__init__()
        if not isinstance(noise_predictor, nn.Module) or not hasattr(noise_predictor, "data_dim"):
            raise TypeError("noise_predictor must be an nn.Module with a data_dim attribute (a NoisePredictor)")
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        self.noise_predictor, self.schedule, self.variance = noise_predictor, _check_schedule(schedule), variance
        self.data_dim = int(noise_predictor.data_dim)
        if getattr(noise_predictor, "T", schedule.T) != schedule.T:
            raise ValueError(f"the noise predictor was built for T={noise_predictor.T}, the schedule has T={schedule.T}")
        shift = torch.as_tensor(data_shift, dtype=torch.float64).expand(self.data_dim).clone()
        scale = torch.as_tensor(data_scale, dtype=torch.float64).expand(self.data_dim).clone()
        if (scale <= 0).any():
            raise ValueError("data_scale must be positive")
        self.register_buffer("data_shift", shift)
        self.register_buffer("data_scale", scale)
        self.sample_range = sample_range
        sigma2 = schedule.posterior_variances.clone() if variance == "posterior" else schedule.betas.clone()
        self.register_buffer("sigma2", sigma2)  # (T+1,) float64, sigma_t^2 of the reverse step t -> t-1

    # -------------------------------------------------------------- helpers
    @property
    def T(self) -> int:
        return self.schedule.T

    def _dtype(self) -> torch.dtype:
        params = list(self.noise_predictor.parameters())
        return params[0].dtype if params else torch.get_default_dtype()

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        x = check_points(x, self.data_dim, "x", hint_if_3d="flatten images to (n, 64)")
        x = x.to(self.data_scale.device, self._dtype())
        return (x - self.data_shift.to(x.dtype)) / self.data_scale.to(x.dtype)

    def predict_noise(self, x_t: torch.Tensor, t) -> torch.Tensor:
        r""":math:`\epsilon_\theta(x_t, t)` for standardised ``x_t`` (n, D) and ``t`` in 1..T."""
        t = _steps(t, x_t.shape[0], self.schedule, x_t.device, minimum=1)
        return self.noise_predictor(x_t, t)

    def reverse_mean(self, x_t: torch.Tensor, t, eps: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\mu_\theta(x_t, t) = (x_t - \beta_t\,\epsilon_\theta/\sqrt{1-\bar\alpha_t})/\sqrt{\alpha_t}`
        (eq. ``ch10-eq-reverse-step``), for standardised ``x_t``."""
        t = _steps(t, x_t.shape[0], self.schedule, x_t.device, minimum=1)
        eps = self.noise_predictor(x_t, t) if eps is None else eps
        s = self.schedule
        beta, alpha, abar = _coef(s.betas, t, x_t), _coef(s.alphas, t, x_t), _coef(s.alpha_bars, t, x_t)
        return (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()

    def kl_weights(self) -> torch.Tensor:
        r"""The weights :math:`\lambda_t = \beta_t^2 / (2\sigma_t^2\alpha_t(1-\bar\alpha_t))` of eq.
        ``ch10-eq-eps-loss`` (float64, (T+1,); :math:`\lambda_0 = \lambda_1 = 0`, :math:`t = 1` being
        the decoder term)."""
        s, w = self.schedule, torch.zeros(self.T + 1, dtype=torch.float64)
        t = torch.arange(2, self.T + 1)
        w[2:] = s.betas[t] ** 2 / (2 * self.sigma2.cpu()[t] * s.alphas[t] * (1 - s.alpha_bars[t]))
        return w

    # -------------------------------------------------------------- training loss
    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None, weighting: str = "simple",
             snr_gamma: float = 5.0, t_probabilities: torch.Tensor | None = None) -> torch.Tensor:
        r"""The noise-prediction loss (eq. ``ch10-eq-eps-loss``) on a batch ``x`` (n, D): one
        :math:`t` uniform on 1..T and one :math:`\epsilon` per example,
        :math:`\frac1{nD}\sum_i w(t_i)\,\|\epsilon_i - \epsilon_\theta(x_{t_i}, t_i)\|^2`.

        ``weighting``: ``"simple"`` :math:`w = 1` (Ho et al. 2020); ``"elbo"`` the ELBO's own weights
        :math:`w = T\lambda_t` (for :math:`t \ge 2`; the decoder's :math:`t = 1` weight
        :math:`\beta_1/(2\sigma_1^2\alpha_1(1-\bar\alpha_1))` with :math:`\sigma_1^2 = \beta_1`), whose
        expectation is the :math:`\epsilon`-dependent part of :math:`-\mathcal L/D`; ``"min-snr"``
        :math:`w = \min(\mathrm{SNR}_t, \gamma)/\mathrm{SNR}_t` with
        :math:`\mathrm{SNR}_t = \bar\alpha_t/(1-\bar\alpha_t)` (Hang et al. 2023).

        ``t_probabilities`` (T,) draws :math:`t` from that distribution over 1..T instead of the
        uniform one (unweighted: this, too, changes the weighting of the steps, not the minimiser
        :math:`\mathbb E[\epsilon\mid x_t]` of each step's term)."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        y = self._standardise(x)
        n = y.shape[0]
        device = y.device
        generator = make_generator(generator=generator)
        if t_probabilities is None:
            t = torch.randint(1, self.T + 1, (n,), generator=generator, device=generator.device).to(device)
        else:
            if t_probabilities.shape != (self.T,) or (t_probabilities < 0).any() or t_probabilities.sum() <= 0:
                raise ValueError(f"t_probabilities must be {self.T} non-negative numbers (for t = 1..T), not all 0")
            t = 1 + torch.multinomial(t_probabilities.to(generator.device, torch.float64), n, replacement=True,
                                      generator=generator).to(device)
        eps = torch.randn(y.shape, generator=generator, device=generator.device, dtype=y.dtype).to(device)
        x_t = q_sample(y, t, self.schedule, noise=eps)
        error = ((eps - self.noise_predictor(x_t, t)) ** 2).mean(-1)  # (n,)
        if weighting == "simple":
            return error.mean()
        if weighting == "elbo":
            w = self.kl_weights()
            s = self.schedule
            w[1] = s.betas[1] / (2 * s.alphas[1] * (1 - s.alpha_bars[1]))  # decoder, variance beta_1
            weights = (self.T * w).to(device, y.dtype)[t]
        else:
            snr = (self.schedule.alpha_bars / (1 - self.schedule.alpha_bars))[1:]
            weights = torch.cat([torch.zeros(1, dtype=torch.float64), snr.clamp(max=snr_gamma) / snr])
            weights = weights.to(device, y.dtype)[t]
        return (weights * error).mean()

    # -------------------------------------------------------------- ELBO
    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None,
                   t_batch: int = 100) -> dict:
        r"""The parts of the ELBO (eq. ``ch10-eq-elbo``) of every example of ``x`` (n, D), in nats,
        each term estimated with one draw :math:`x_t\sim q(x_t\mid x_0)` per example and step:

        ``decoder`` (n,) :math:`\log p_\theta(x_0\mid x_1)` (including the Jacobian of the
        standardisation), ``kl`` (n, T + 1) with column :math:`t\ge 2` holding
        :math:`\mathrm{KL}(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))` (columns 0, 1 are 0),
        ``prior`` (n,) :math:`\mathrm{KL}(q(x_T\mid x_0)\,\|\,\mathcal N(0, I))` (exact), and ``elbo``
        (n,) = decoder - sum of kl - prior. ``t_batch`` steps are evaluated in one network call.
        Costs T network evaluations per example; no gradients."""
        y = self._standardise(x)
        n, D = y.shape
        s, generator = self.schedule, make_generator(generator=generator)
        kl = torch.zeros(n, self.T + 1, dtype=torch.float64, device=y.device)
        with torch.no_grad():
            for start in range(1, self.T + 1, t_batch):
                steps = torch.arange(start, min(start + t_batch, self.T + 1), device=y.device)  # (m,)
                m = len(steps)
                t = steps.repeat_interleave(n)  # (m n,)
                y0 = y.repeat(m, 1)  # (m n, D)
                eps = torch.randn(y0.shape, generator=generator, device=generator.device, dtype=y.dtype).to(y.device)
                x_t = q_sample(y0, t, s, noise=eps)
                mu_theta = self.reverse_mean(x_t, t)
                if start == 1:  # t = 1: the decoder N(mu_theta(x_1, 1), beta_1 I), a density of y0
                    var1 = float(s.betas[1])
                    dec = -0.5 * (((y - mu_theta[:n]).double() ** 2).sum(-1) / var1 + D * (math.log(var1) + LOG_2PI))
                    decoder = dec - self.data_scale.double().log().sum()
                    t, x_t, y0, mu_theta, steps = t[n:], x_t[n:], y0[n:], mu_theta[n:], steps[1:]
                if len(steps) == 0:
                    continue
                mean, variance = posterior_mean_variance(x_t.double(), y0.double(), t, s)
                logvar_p = self.sigma2.double()[t].unsqueeze(-1)
                kl_t = gaussian_kl(mean, variance.log(), mu_theta.double(), logvar_p.log())  # (m' n,)
                kl[:, steps] = kl_t.view(len(steps), n).T
            abar_T = float(s.alpha_bars[-1])
            prior = gaussian_kl(math.sqrt(abar_T) * y.double(),
                                torch.full_like(y, math.log(1 - abar_T), dtype=torch.float64))  # (n,)
        return {"decoder": decoder, "kl": kl, "prior": prior, "elbo": decoder - kl.sum(-1) - prior}

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None, t_batch: int = 100) -> torch.Tensor:
        r"""The ELBO :math:`\mathcal L(x) \le \log p_\theta(x)` of each example, in nats, (n,) float64
        (eq. ``ch10-eq-elbo``; see :meth:`elbo_terms`). A single-draw Monte Carlo estimate for each of
        the :math:`T` terms: its average over examples is unbiased."""
        return self.elbo_terms(x, generator, t_batch)["elbo"]

    def log_prob(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ELBO (``log_prob_kind = "lower_bound"``), (n,) in nats."""
        return self.elbo(x, generator)

    # -------------------------------------------------------------- sampling
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None,
               return_trajectory: bool = False) -> torch.Tensor:
        r"""Ancestral sampling (eq. ``ch10-eq-reverse-step``): :math:`x_T\sim\mathcal N(0, I)`,
        :math:`x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z` for :math:`t = T..2`, :math:`x_0 = \mu_\theta(x_1, 1)`.

        Returns (n, D) in data units (after ``sample_range`` clamping), no gradients; with
        ``return_trajectory=True`` the path (T + 1, n, D) with entry ``t`` holding :math:`x_t` (in
        data units, unclamped except entry 0)."""
        positive_int(n, "n")
        dtype, device = self._dtype(), self.data_scale.device
        generator = make_generator(seed=seed, generator=generator)

        def noise():
            return torch.randn(n, self.data_dim, generator=generator, device=generator.device, dtype=dtype).to(device)

        sigma = self.sigma2.sqrt().to(dtype)
        shift, scale = self.data_shift.to(dtype), self.data_scale.to(dtype)
        with torch.no_grad():
            x = noise()
            path = [x] if return_trajectory else None
            for t in range(self.T, 0, -1):
                steps = torch.full((n,), t, dtype=torch.long, device=device)
                x = self.reverse_mean(x, steps)
                if t > 1:
                    x = x + sigma[t] * noise()
                if return_trajectory:
                    path.append(x)
            out = x * scale + shift
            if self.sample_range is not None:
                out = out.clamp(*self.sample_range)
            if return_trajectory:
                trajectory = torch.stack(path[::-1]) * scale + shift  # entry t = x_t
                trajectory[0] = out
                return trajectory
            return out

    # -------------------------------------------------------------- training
    def fit(self, data, steps: int, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
            lr_schedule: str = "constant", warmup_fraction: float = 0.0, ema_decay: float | None = None,
            weighting: str = "simple", grad_clip: float | None = None, eval_every: int | None = None,
            evaluate=None, progress: bool = True, desc: str = "DDPM") -> dict:
        r"""Adam on :meth:`loss` for exactly ``steps`` steps; returns the history.

        ``data``: a tensor (n, D) (minibatches drawn with replacement) or a callable ``m -> (m, D)``
        (fresh samples, e.g. ``lambda m: toy.sample(m, generator=g)``). Time steps and noise come from
        one generator seeded with ``seed``. ``lr_schedule``: ``"constant"`` or ``"cosine"`` (a linear
        warm-up over ``warmup_fraction`` of the steps, then a cosine decay to 0). ``ema_decay``: keep an
        exponential moving average of the weights (:class:`EMA`) and load it into the model at the end.
        History: ``step`` and ``loss`` lists (every step), plus ``eval_step`` and ``evaluate(model)``
        results every ``eval_every`` steps (with the EMA weights when there are some).
        """
        from gmcourse.flows import warmup_cosine_lr

        steps, batch_size = positive_int(steps, "steps"), positive_int(batch_size, "batch_size")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if isinstance(data, torch.Tensor):
            tensor = check_points(data, self.data_dim, "data").to(self.data_scale.device, self._dtype())
            draw_generator = make_generator(seed=seed + 1)

            def draw(m):
                return tensor[torch.randint(len(tensor), (m,), generator=draw_generator).to(tensor.device)]
        elif callable(data):
            draw = data
        else:
            raise TypeError(f"data must be a tensor (n, {self.data_dim}) or a callable m -> (m, {self.data_dim})")
        generator = make_generator(seed=seed)
        params = list(self.noise_predictor.parameters())
        optimizer = torch.optim.Adam(params, lr=lr)
        ema = EMA(self.noise_predictor, ema_decay) if ema_decay is not None else None
        history = {"step": [], "loss": [], "eval_step": [], "eval": []}
        for step in progress_bar(range(steps), desc=desc, disable=None if progress else True):
            if lr_schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = warmup_cosine_lr(step / steps, lr, warmup_fraction, 0.0)
            loss = self.loss(draw(batch_size), generator=generator, weighting=weighting)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(self.noise_predictor)
            history["step"].append(step + 1)
            history["loss"].append(loss.item())
            if evaluate is not None and eval_every and (step + 1) % eval_every == 0:
                model = self
                if ema is not None:
                    model = copy.deepcopy(self)
                    ema.copy_to(model.noise_predictor)
                history["eval_step"].append(step + 1)
                history["eval"].append(evaluate(model))
        if ema is not None:
            ema.copy_to(self.noise_predictor)
        return history
