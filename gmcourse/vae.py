r"""Variational autoencoders (chapter 8): Gaussian encoder, reparameterisation, ELBO, IWAE, quadrature.

Equations are cited by their labels in ``book/08_variational_autoencoders.md``.

**The model** (eq. ``ch8-eq-latent-model``). A latent code :math:`z\in\mathbb R^{d_z}` is drawn from the
prior :math:`p(z) = \mathcal N(0, I_{d_z})` and a data point from the decoder :math:`p_\theta(x\mid z)`, a
simple distribution whose parameters a network computes from :math:`z`:

``"bernoulli"``   :math:`x\in\{0,1\}^D`, :math:`p_\theta(x\mid z) = \prod_i \mathrm{Bern}(x_i;\ \sigma(\ell_i(z)))`
                  (eq. ``ch8-eq-bernoulli-decoder``), with logits :math:`\ell(z)`.
``"spin"``        :math:`s\in\{-1,+1\}^D`, the same Bernoulli on :math:`(s+1)/2` (Ising configurations).
``"categorical"`` :math:`x_i\in\{0,\dots,C-1\}` (the 17 grey levels of the digits),
                  a softmax over :math:`C` logits per variable.
``"gaussian"``    :math:`x\in\mathbb R^D`, :math:`\mathcal N(x;\ \mu_\theta(z), \mathrm{diag}\,\sigma^2_\theta(z))`
                  (eq. ``ch8-eq-gaussian-decoder``); with a fixed ``gaussian_logvar`` the
                  log-likelihood is a scaled squared error plus a constant.

The marginal :math:`p_\theta(x) = \int p_\theta(x\mid z)\,p(z)\,dz` has no closed form.

**The ELBO** (eqs. ``ch8-eq-elbo-jensen``, ``ch8-eq-elbo-decomposition``). An encoder network outputs
the mean and the log-variance of :math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))`,
and for every :math:`x`

.. math:: \log p_\theta(x) \;\ge\; \mathcal L(x) = \mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]
          - \mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big),

with a gap :math:`\log p_\theta(x) - \mathcal L(x) = \mathrm{KL}(q_\phi(z\mid x)\,\|\,p_\theta(z\mid x))`.
:meth:`VAE.elbo` estimates the first term with ``n_samples`` reparameterised draws
:math:`z = \mu + \sigma\odot\varepsilon`, :math:`\varepsilon\sim\mathcal N(0, I)`
(eq. ``ch8-eq-reparameterisation``), so that gradients reach :math:`\mu_\phi, \sigma_\phi`, and
computes the KL term exactly with :func:`gmcourse.divergences.gaussian_kl`
(eq. ``ch8-eq-kl-analytic``). ``log_prob`` returns that estimate of the bound
(``log_prob_kind = "lower_bound"``) and ``loss`` is :math:`-\frac1n\sum\mathcal L(x_i)`.

**Importance weighting** (Burda et al. 2016; eq. ``ch8-eq-iwae``). With :math:`K` draws
:math:`z_k\sim q_\phi(z\mid x)` and weights :math:`w_k = p_\theta(x, z_k)/q_\phi(z_k\mid x)`,
:math:`\hat p_K = \frac1K\sum_k w_k` is an unbiased estimate of :math:`p_\theta(x)`, and
:math:`\mathcal L_K = \mathbb E\log\hat p_K` is a lower bound that rises with :math:`K` from
:math:`\mathcal L_1 = \mathcal L` to :math:`\log p_\theta(x)`. :meth:`VAE.iwae_log_prob` returns
:math:`\log\hat p_K` with an error bar (see its docstring for the two kinds).

**Quadrature** (eq. ``ch8-eq-quadrature``). For a latent space of dimension 1 or 2 the integral is
done on a grid: :func:`quadrature_log_marginal` uses the midpoint rule on the square
:math:`[-a, a]^{d_z}` with spacing :math:`h`, :math:`p_\theta(x) \approx \sum_g h^{d_z}\,\mathcal N(z_g; 0, I)\,
p_\theta(x\mid z_g)`. The decoder runs once per grid point, and the log-likelihoods of all pairs
(data point, grid point) are one matrix product (:meth:`VAE.log_likelihood_matrix`); so the exact
:math:`\log p_\theta(s)` of all :math:`2^{16}` states of a 4x4 Ising lattice costs seconds. Its error
is estimated by halving :math:`h`.

Shapes: data ``(n, D)``; latent codes ``(..., n, d_z)``; per-example results ``(n,)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from gmcourse.divergences import gaussian_kl
from gmcourse.protocol import GenerativeModel
from gmcourse.utils import make_generator, progress as progress_bar

__all__ = ["VAE", "IWAEEstimate", "LIKELIHOODS", "quadrature_log_marginal", "all_states_log_marginal", "latent_grid",
           "train"]

LIKELIHOODS = ("bernoulli", "spin", "categorical", "gaussian")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
LOG_2PI = math.log(2 * math.pi)


class IWAEEstimate(NamedTuple):
    """``log_prob`` (n,): the importance-weighted estimate; ``stderr`` (n,): its error bar."""

    log_prob: torch.Tensor
    stderr: torch.Tensor


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if k < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; 0, I_d)`, summed over the last axis: (..., d) -> (...)."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def diagonal_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; \mu, \mathrm{diag}\,e^{\text{logvar}})`, summed over the last axis."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


class VAE(GenerativeModel):
    r"""A variational autoencoder with a diagonal Gaussian encoder and prior :math:`\mathcal N(0, I_{d_z})`.

    Args:
        data_dim: :math:`D`, the number of variables of a data point (pixels, spins).
        latent_dim: :math:`d_z`, the dimension of :math:`z`.
        hidden: widths of the hidden layers of the encoder and (mirrored) of the decoder;
            ``()`` makes both linear (probabilistic PCA with ``"gaussian"``).
        likelihood: the decoder's distribution, one of :data:`LIKELIHOODS` (module docstring).
        n_levels: :math:`C` for ``"categorical"`` (17 for the digits' grey levels).
        gaussian_logvar: for ``"gaussian"``: ``None`` lets the decoder output
            :math:`\log\sigma^2_\theta(z)` per variable; a number fixes :math:`\log\sigma^2` for all.
        activation: ``"tanh"``, ``"relu"``, ``"elu"`` or ``"silu"``.

    The encoder reads :math:`x` as it is, except categorical levels, which it reads as
    :math:`x/(C-1) \in [0, 1]`. Its last layer has :math:`2d` outputs, :math:`\mu` and
    :math:`\log\sigma^2` (a log-variance is unconstrained, so no positivity constraint is needed).
    """

    log_prob_kind = "lower_bound"

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden=(128,), likelihood: str = "bernoulli",
                 n_levels: int = 17, gaussian_logvar: float | None = None, activation: str = "tanh"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        hidden = tuple(hidden)
        for width in hidden:
            _positive_int(width, "every hidden width")
        if gaussian_logvar is not None:
            if likelihood != "gaussian":
                raise ValueError(f"gaussian_logvar applies to likelihood='gaussian' only, got likelihood={likelihood!r}")
            if isinstance(gaussian_logvar, bool) or not isinstance(gaussian_logvar, (int, float)) \
                    or not math.isfinite(gaussian_logvar):
                raise ValueError(f"gaussian_logvar must be a finite number or None, got {gaussian_logvar!r}")
        self.data_dim = _positive_int(data_dim, "data_dim")
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        self.likelihood = likelihood
        self.n_levels = _positive_int(n_levels, "n_levels", 2) if likelihood == "categorical" else None
        self.gaussian_logvar = None if gaussian_logvar is None else float(gaussian_logvar)
        outputs_per_variable = {"bernoulli": 1, "spin": 1, "categorical": self.n_levels or 1,
                                "gaussian": 2 if gaussian_logvar is None else 1}[likelihood]
        self.outputs_per_variable = outputs_per_variable
        self.encoder = _mlp([data_dim, *hidden, 2 * latent_dim], activation)
        self.decoder = _mlp([latent_dim, *reversed(hidden), data_dim * outputs_per_variable], activation)

    # ------------------------------------------------------------------ checks
    def _check_x(self, x) -> torch.Tensor:
        D = self.data_dim
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, {D}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != D:
            raise ValueError(f"x must have shape (n, {D}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one example")
        if self.likelihood == "bernoulli" and not ((x == 0) | (x == 1)).all():
            raise ValueError(f"likelihood='bernoulli' expects x in {{0, 1}}; got values {torch.unique(x)[:6].tolist()}")
        if self.likelihood == "spin" and not ((x == -1) | (x == 1)).all():
            raise ValueError(f"likelihood='spin' expects x in {{-1, +1}}; got values {torch.unique(x)[:6].tolist()}")
        if self.likelihood == "categorical":
            C = self.n_levels
            if not ((x == x.round()) & (x >= 0) & (x <= C - 1)).all():
                raise ValueError(f"likelihood='categorical' expects integer levels 0..{C - 1}; "
                                 f"got values in [{x.min().item()}, {x.max().item()}]")
        if self.likelihood == "gaussian":
            if not x.is_floating_point():
                raise TypeError(f"likelihood='gaussian' expects floating-point x, got dtype {x.dtype}")
            if not torch.isfinite(x).all():
                raise ValueError("x contains NaN or infinite entries")
        return x

    def _dtype(self) -> torch.dtype:
        return self.encoder[0].weight.dtype

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._dtype())
        return x / (self.n_levels - 1) if self.likelihood == "categorical" else x

    # ------------------------------------------------------------------ encoder
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(mu, logvar)`` of :math:`q_\phi(z\mid x)`, each (n, d)."""
        x = self._check_x(x)
        mu, logvar = self.encoder(self._encoder_input(x)).chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`z = \mu + e^{\text{logvar}/2}\odot\varepsilon`, :math:`\varepsilon\sim\mathcal N(0, I)`
        (eq. ch8-eq-reparameterisation): a draw of :math:`\mathcal N(\mu, \sigma^2)` that is a
        differentiable function of ``mu`` and ``logvar``. Shape of ``mu``, or (n_samples, *mu.shape)."""
        shape = tuple(mu.shape) if n_samples is None else (_positive_int(n_samples, "n_samples"), *mu.shape)
        device = generator.device if generator is not None else mu.device
        eps = torch.randn(shape, generator=generator, device=device, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    # ------------------------------------------------------------------ decoder
    def decode(self, z: torch.Tensor):
        r"""The decoder's parameters for codes ``z`` (..., d): logits (..., D) for ``"bernoulli"`` and
        ``"spin"``; log-probabilities (..., D, C) for ``"categorical"``; ``(mean, logvar)``, each
        (..., D), for ``"gaussian"``."""
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.latent_dim,):
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape (..., {self.latent_dim}), got {got}")
        out = self.decoder(z.to(self._dtype()))  # (..., D * outputs_per_variable)
        if self.likelihood in ("bernoulli", "spin"):
            return out
        if self.likelihood == "categorical":
            return torch.log_softmax(out.unflatten(-1, (self.data_dim, self.n_levels)), dim=-1)  # (..., D, C)
        if self.gaussian_logvar is None:
            mean, logvar = out.unflatten(-1, (self.data_dim, 2)).unbind(-1)
            return mean, logvar
        return out, torch.full_like(out, self.gaussian_logvar)

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb E[x\mid z]` (..., D) for pictures: :math:`\sigma(\ell)`, :math:`\tanh(\ell/2)` for
        spins, :math:`\sum_c c\,p_c` for levels, :math:`\mu_\theta(z)` for the Gaussian."""
        params = self.decode(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params)
        if self.likelihood == "spin":
            return torch.tanh(0.5 * params)
        if self.likelihood == "categorical":
            levels = torch.arange(self.n_levels, dtype=params.dtype, device=params.device)
            return params.exp() @ levels
        return params[0]

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p_\theta(x\mid z)` summed over the :math:`D` variables: ``x`` (n, D), ``z`` (..., n, d) -> (..., n).

        Bernoulli: :math:`\sum_i [x_i\ell_i - \log(1 + e^{\ell_i})]` (eq. ch8-eq-bernoulli-decoder);
        spins use :math:`x_i = (s_i + 1)/2`; categorical: :math:`\sum_i \log\mathrm{softmax}(\ell_i)_{x_i}`;
        Gaussian: :math:`-\frac12\sum_i[\log 2\pi\sigma_i^2 + (x_i - \mu_i)^2/\sigma_i^2]` (eq. ch8-eq-gaussian-decoder).
        """
        x = self._check_x(x)
        params = self.decode(z)
        if self.likelihood in ("bernoulli", "spin"):
            bits = x.to(params.dtype) if self.likelihood == "bernoulli" else (x.to(params.dtype) + 1) / 2
            return (bits * params - nn.functional.softplus(params)).sum(-1)
        if self.likelihood == "categorical":
            index = x.long().expand(*params.shape[:-1]).unsqueeze(-1)  # (..., n, D, 1)
            return params.gather(-1, index).squeeze(-1).sum(-1)
        mean, logvar = params
        return -0.5 * (LOG_2PI + logvar + (x.to(mean.dtype) - mean) ** 2 * torch.exp(-logvar)).sum(-1)

    def log_likelihood_matrix(self, x: torch.Tensor, z: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        r""":math:`\log p_\theta(x_i\mid z_g)` for every pair: ``x`` (n, D), ``z`` (G, d) -> (n, G), in ``dtype``.

        The decoder runs once per code; every likelihood here is linear in a fixed encoding of
        :math:`x` (the bits, a one-hot vector, or :math:`(x, x^2)`), so all pairs are one matrix
        product. This is what makes :func:`quadrature_log_marginal` cheap.
        """
        x = self._check_x(x)
        if z.dim() != 2:
            raise ValueError(f"z must have shape (G, {self.latent_dim}), got {tuple(z.shape)}")
        with torch.no_grad():
            params = self.decode(z)
        if self.likelihood in ("bernoulli", "spin"):
            logits = params.to(dtype)  # (G, D)
            bits = x.to(dtype) if self.likelihood == "bernoulli" else (x.to(dtype) + 1) / 2  # (n, D)
            return bits @ logits.T - nn.functional.softplus(logits).sum(-1)  # (n, G)
        if self.likelihood == "categorical":
            one_hot = nn.functional.one_hot(x.long(), self.n_levels).to(dtype).flatten(1)  # (n, D C)
            return one_hot @ params.to(dtype).flatten(1).T  # (n, G)
        mean, logvar = (p.to(dtype) for p in params)  # (G, D) each
        precision = torch.exp(-logvar)
        x = x.to(dtype)
        quadratic = (x**2) @ precision.T - 2 * x @ (mean * precision).T  # (n, G)
        constant = (LOG_2PI + logvar + mean**2 * precision).sum(-1)  # (G,)
        return -0.5 * (quadratic + constant)

    # ------------------------------------------------------------------ ELBO
    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(reconstruction, kl)``, each (n,): the Monte Carlo estimate of
        :math:`\mathbb E_q\log p_\theta(x\mid z)` with ``n_samples`` draws, and the exact
        :math:`\mathrm{KL}(q_\phi(z\mid x)\,\|\,\mathcal N(0, I))` (eq. ch8-eq-kl-analytic)."""
        mu, logvar = self.encode(x)  # (n, d) each
        z = self.reparameterize(mu, logvar, n_samples, generator)  # (S, n, d)
        reconstruction = self.decoder_log_prob(x, z).mean(0)  # (n,)
        return reconstruction, gaussian_kl(mu, logvar)

    def elbo(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Unbiased estimate of the ELBO :math:`\mathcal L(x)` (eq. ch8-eq-elbo-decomposition), shape (n,)."""
        reconstruction, kl = self.elbo_terms(x, n_samples, generator)
        return reconstruction - kl

    def log_prob(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The ELBO (a lower bound on :math:`\log p_\theta(x)`, estimated with ``n_samples`` draws), (n,)."""
        return self.elbo(x, n_samples, generator)

    def loss(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`-\frac1n\sum_i\mathcal L(x_i)`, nats per example: what training minimises."""
        return -self.elbo(x, n_samples, generator).mean()

    # ------------------------------------------------------------------ importance weighting
    def log_importance_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`\log w_k = \log p_\theta(x\mid z_k) + \log p(z_k) - \log q_\phi(z_k\mid x)` for
        :math:`z_k\sim q_\phi(z\mid x)`, shape (k, n)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, k, generator)  # (k, n, d)
        return (self.decoder_log_prob(x, z) + standard_normal_log_prob(z)
                - diagonal_normal_log_prob(z, mu, logvar))

    def iwae_log_prob(self, x: torch.Tensor, k: int, n_repeats: int = 1, generator: torch.Generator | None = None,
                      seed: int | None = None, chunk_size: int = 256) -> IWAEEstimate:
        r"""Importance-weighted estimate :math:`\log\hat p_K = \log\frac1K\sum_{k=1}^K w_k` (eq. ch8-eq-iwae), with an error bar.

        ``n_repeats`` independent estimates are made and averaged; the result is
        ``IWAEEstimate(log_prob, stderr)``, each (n,), computed without gradients.

        * ``n_repeats >= 2``: ``stderr`` is the standard error of the mean of the repeats
          (sample standard deviation / :math:`\sqrt{R}`). ``log_prob`` then estimates the
          bound :math:`\mathcal L_K = \mathbb E\log\hat p_K` and ``stderr`` is its honest error bar.
        * ``n_repeats == 1``: ``stderr`` is the delta-method error of :math:`\log\hat p_K` as an
          estimate of :math:`\log p_\theta(x)`: :math:`\mathrm{sd}(w)/(\sqrt K\,\bar w)`, with the
          spread of the weights estimated from the same :math:`K` draws (ddof 1, computed in
          log space). It is reliable only when :math:`K` is large enough to see the weights'
          tail; NaN for :math:`K = 1`.

        The repeats run as one batch (``x`` tiled ``n_repeats`` times) and the weights are drawn in
        chunks of ``chunk_size`` draws, so memory stays :math:`O(\text{chunk}\cdot R\cdot n\cdot D)`.
        """
        x = self._check_x(x)
        k, n_repeats = _positive_int(k, "k"), _positive_int(n_repeats, "n_repeats")
        chunk_size = _positive_int(chunk_size, "chunk_size")
        generator = make_generator(seed=seed, generator=generator, device=self.encoder[0].weight.device)
        n = x.shape[0]
        tiled = x.repeat(n_repeats, 1)  # (R n, D): the R independent estimates in one batch
        lse1 = lse2 = None  # running log sum_k w and log sum_k w^2, (R n,) float64
        with torch.no_grad():
            for start in range(0, k, chunk_size):
                log_w = self.log_importance_weights(tiled, min(chunk_size, k - start), generator).double()
                parts1, parts2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
                lse1 = parts1 if lse1 is None else torch.logaddexp(lse1, parts1)
                lse2 = parts2 if lse2 is None else torch.logaddexp(lse2, parts2)
        estimates = (lse1 - math.log(k)).view(n_repeats, n)  # (R, n)
        if n_repeats >= 2:
            return IWAEEstimate(estimates.mean(0), estimates.std(0, correction=1) / math.sqrt(n_repeats))
        if k == 1:
            return IWAEEstimate(estimates[0], torch.full_like(estimates[0], math.nan))
        # relative variance of the weights, sd(w)^2 / mean(w)^2 = K/(K-1) (K sum w^2 / (sum w)^2 - 1)
        relative_variance = (k * torch.exp(lse2 - 2 * lse1) - 1).clamp(min=0) * k / (k - 1)
        return IWAEEstimate(estimates[0], torch.sqrt(relative_variance / k))

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None,
               mean: bool = False) -> torch.Tensor:
        r"""``n`` draws :math:`z\sim\mathcal N(0, I)`, :math:`x\sim p_\theta(x\mid z)`, shape (n, D), no gradients.

        Values as the data: {0, 1}, :math:`\pm1`, levels 0..C-1 (as floats), or reals. With
        ``mean=True`` the decoder's mean :math:`\mathbb E[x\mid z]` is returned instead of a draw
        (smoother pictures; not a sample of the model).
        """
        _positive_int(n, "n")
        reference = self.encoder[0].weight
        generator = make_generator(seed=seed, generator=generator, device=reference.device)
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device,
                            dtype=reference.dtype).to(reference.device)
            if mean:
                return self.decoder_mean(z)
            params = self.decode(z)
            if self.likelihood in ("bernoulli", "spin"):
                u = torch.rand(params.shape, generator=generator, device=generator.device,
                               dtype=params.dtype).to(params.device)
                bits = (u < torch.sigmoid(params)).to(params.dtype)
                return bits if self.likelihood == "bernoulli" else 2 * bits - 1
            if self.likelihood == "categorical":
                flat = params.exp().reshape(-1, self.n_levels)  # (n D, C)
                levels = torch.multinomial(flat, 1, generator=generator).view(n, self.data_dim)
                return levels.to(params.dtype)
            mean_x, logvar = params
            eps = torch.randn(mean_x.shape, generator=generator, device=generator.device,
                              dtype=mean_x.dtype).to(mean_x.device)
            return mean_x + torch.exp(0.5 * logvar) * eps


# ----------------------------------------------------------------------------- quadrature

def latent_grid(latent_dim: int, spacing: float, extent: float, device=None,
                dtype=torch.float64) -> tuple[torch.Tensor, float]:
    r"""Midpoints of the cells of side ``spacing`` that tile :math:`[-a, a]^d`, ``a = extent``
    (rounded up to a whole number of cells): ``(z (G, d), log cell volume)``."""
    if latent_dim not in (1, 2):
        raise ValueError(f"quadrature on a grid is for latent_dim 1 or 2 (the grid grows as (2a/h)^d), got {latent_dim}")
    if not (isinstance(spacing, (int, float)) and spacing > 0 and isinstance(extent, (int, float)) and extent > 0):
        raise ValueError(f"spacing and extent must be positive numbers, got spacing={spacing!r}, extent={extent!r}")
    n_cells = math.ceil(2 * extent / spacing)
    half = n_cells * spacing / 2
    axis = -half + spacing * (torch.arange(n_cells, dtype=dtype, device=device) + 0.5)  # (n_cells,)
    z = torch.cartesian_prod(*[axis] * latent_dim).reshape(-1, latent_dim)  # (G, d)
    return z, latent_dim * math.log(spacing)


def quadrature_log_marginal(model: VAE, x: torch.Tensor, spacing: float = 0.1, extent: float = 6.0,
                            batch_size: int = 2048) -> torch.Tensor:
    r""":math:`\log p_\theta(x) = \log\int p_\theta(x\mid z)\,\mathcal N(z; 0, I)\,dz` by the midpoint
    rule on a grid (eq. ch8-eq-quadrature), float64 (n,), for a model with ``latent_dim`` 1 or 2.

    The error has two sources: the prior mass outside :math:`[-a, a]^d` (below
    :math:`2d\,\Phi(-a)`, about :math:`2\times10^{-9}` for :math:`a = 6`) and the discretisation,
    which for smooth integrands falls faster than any power of :math:`h`; estimate it by
    comparing with ``spacing / 2``. ``x`` is processed in batches of ``batch_size`` rows so that the
    (batch, G) matrix stays small.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a gmcourse.vae.VAE, got {type(model).__name__}")
    x = model._check_x(x)
    device = model.encoder[0].weight.device
    z, log_volume = latent_grid(model.latent_dim, spacing, extent, device=device)
    log_weights = standard_normal_log_prob(z) + log_volume  # (G,) log of h^d N(z_g; 0, I)
    out = []
    for start in range(0, x.shape[0], _positive_int(batch_size, "batch_size")):
        matrix = model.log_likelihood_matrix(x[start:start + batch_size].to(device), z)  # (b, G) float64
        out.append(torch.logsumexp(matrix + log_weights, dim=1))
    return torch.cat(out).cpu()


def all_states_log_marginal(model: VAE, spacing: float = 0.1, extent: float = 6.0) -> torch.Tensor:
    r""":math:`\log p_\theta(x)` of all :math:`2^D` binary states by quadrature, float64 (2^D,), for
    ``"bernoulli"`` and ``"spin"`` decoders with ``latent_dim`` 1 or 2 and :math:`D \le 24`.

    State :math:`k` has :math:`x_i = \text{bit}_i(k)` (spins :math:`s_i = 2\,\text{bit}_i(k) - 1`),
    the order of :meth:`gmcourse.ising.IsingModel.all_states`. The same midpoint rule as
    :func:`quadrature_log_marginal`, but faster: the decoder factorises over the variables, so with
    the first half :math:`A` and the second half :math:`B` of them,

    .. math:: p_\theta(x) \approx \sum_g w_g\, p_\theta(x_A\mid z_g)\, p_\theta(x_B\mid z_g)
              = \big[P_A\, \mathrm{diag}(w)\, P_B^\top\big]_{x_A, x_B},

    one product of a :math:`(2^{D/2}, G)` and a :math:`(G, 2^{D/2})` matrix (in probabilities,
    float64, each column rescaled by its largest entry so nothing underflows).
    """
    if not isinstance(model, VAE) or model.likelihood not in ("bernoulli", "spin"):
        raise ValueError("all_states_log_marginal needs a VAE with likelihood 'bernoulli' or 'spin'")
    D = model.data_dim
    if D > 24:
        raise ValueError(f"all 2^D states are enumerated only for D <= 24, got D = {D}")
    device = model.encoder[0].weight.device
    z, log_volume = latent_grid(model.latent_dim, spacing, extent, device=device)
    log_w = standard_normal_log_prob(z) + log_volume  # (G,)
    with torch.no_grad():
        logits = model.decode(z).double()  # (G, D)
    half = D // 2
    scaled, column_logs = [], log_w.clone()
    for part in (logits[:, :half], logits[:, half:]):  # (G, D_part)
        n_part = part.shape[1]
        index = torch.arange(2 ** n_part, device=device)
        bits = ((index[:, None] >> torch.arange(n_part, device=device)) & 1).double()  # (2^D_part, D_part)
        log_p = bits @ part.T - nn.functional.softplus(part).sum(-1)  # (2^D_part, G): log p(x_part | z_g)
        column_max = log_p.max(0).values  # (G,)
        scaled.append(torch.exp(log_p - column_max))
        column_logs = column_logs + column_max
    shift = column_logs.max()
    weights = torch.exp(column_logs - shift)  # (G,) w_g times the two column maxima, rescaled
    joint = (scaled[0] * weights) @ scaled[1].T  # (2^half, 2^(D-half)): [x_A, x_B]
    return (torch.log(joint) + shift).T.reshape(-1).cpu()  # state k = k_A + 2^half k_B


# ----------------------------------------------------------------------------- training

def train(model: VAE, data: torch.Tensor, steps: int, batch_size: int = 128, learning_rate: float = 1e-3,
          seed: int = 0, progress: bool = True, desc: str = "VAE") -> list[float]:
    r"""Adam on :meth:`VAE.loss` for exactly ``steps`` minibatch steps; returns the loss of every step.

    Minibatches (drawn with replacement) and the reparameterisation noise come from one generator
    seeded with ``seed``, so a run is reproducible for a given initialisation of the weights.
    """
    data = model._check_x(data)
    steps, batch_size = _positive_int(steps, "steps"), _positive_int(batch_size, "batch_size")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    device = model.encoder[0].weight.device
    generator = make_generator(seed=seed, device=device)
    data = data.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    for _ in progress_bar(range(steps), desc=desc, disable=None if progress else True):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator, device=device)]
        loss = model.loss(batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
