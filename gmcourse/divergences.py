r"""Entropy, KL divergence, likelihood and Monte Carlo error bars (chapter 2).

Chapter 2 turns "make :math:`P_\theta` look like :math:`P_\text{data}`" into a number to
minimise. Equations are cited by their labels in ``book/02_maximum_likelihood_kl.md``. For
discrete distributions :math:`p, q` over the same outcomes (the last axis of a tensor here;
every other axis is a batch axis), eqs. ch2-eq-kl and ch2-eq-kl-cross-entropy:

.. math::

    H(p) = -\sum_x p(x)\log p(x), \qquad
    H(p, q) = -\sum_x p(x)\log q(x), \qquad
    \mathrm{KL}(p\,\|\,q) = \sum_x p(x)\log\frac{p(x)}{q(x)} = H(p, q) - H(p).

Gibbs' inequality (section ch2-gibbs), :math:`\mathrm{KL}(p\|q) \ge 0` with equality iff
:math:`p = q`, follows from :math:`\log t \le t - 1`. With :math:`p = P_\text{data}` the
entropy is a constant, so (eq. ch2-eq-kl-nll)

.. math::

    \mathrm{KL}(P_\text{data}\|P_\theta) = -H(P_\text{data})
        - \mathbb{E}_{x\sim P_\text{data}}\log P_\theta(x)
    \approx -H(P_\text{data}) + \underbrace{\Big[-\frac1N\sum_{i=1}^N \log P_\theta(x_i)\Big]}_{\text{NLL}},

and minimising the KL is maximising the likelihood (the NLL is eq. ch2-eq-nll). The NLL is a
Monte Carlo average, so it comes with an error bar: for :math:`N` samples with integrated
autocorrelation time :math:`\tau` (1 for independent draws),
:math:`\bar O \pm \sqrt{\mathrm{Var}(O)\,\tau / N}` (eq. ch2-eq-stderr, :func:`monte_carlo_mean`;
the factor :math:`\tau` is derived in chapter 3).

Conventions: natural logarithms (nats); :math:`0\log 0 = 0` (the limit of
:math:`t\log t`), so outcomes with :math:`p(x) = 0` contribute nothing, while
:math:`p(x) > 0 = q(x)` makes :math:`H(p,q)` and :math:`\mathrm{KL}(p\|q)` infinite.

Inputs may be tensors, NumPy arrays or nested lists (the latter two are converted with
:func:`torch.as_tensor`); they must have a floating dtype, so ``[1, 0]`` is refused rather
than silently read as integers. ``p`` and ``q`` must agree on the last axis; their batch
axes broadcast as in torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "Estimate",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "gaussian_kl",
    "negative_log_likelihood",
    "monte_carlo_mean",
    "bits_per_dim",
]


class Estimate(NamedTuple):
    """A Monte Carlo estimate: ``mean`` with its standard error ``stderr`` (Python floats)."""

    mean: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.mean:.6g} ± {self.stderr:.2g}"


# ----------------------------------------------------------------------------- checks

def _as_float_tensor(x, name: str) -> torch.Tensor:
    """Convert ``x`` to a tensor and insist on a floating dtype."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a tensor of probabilities, got {type(x).__name__}") from err
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    return x


def _check_distribution(p, name: str) -> torch.Tensor:
    """Return ``p`` as a tensor after checking that its last axis is a probability vector.

    The sums may miss 1 by ``sqrt(eps)`` of the dtype (about 3e-4 in float32, 1.5e-8 in
    float64): far above rounding error, far below any mistake worth catching.
    """
    p = _as_float_tensor(p, name)
    if p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError(f"{name} needs a non-empty last axis of outcomes, got shape {tuple(p.shape)}")
    if torch.isnan(p).any():
        raise ValueError(f"{name} contains NaN")
    if (p < 0).any():
        raise ValueError(f"{name} must be non-negative; got a minimum entry of {p.min().item():.3g}")
    sums = p.sum(dim=-1, dtype=torch.float64)
    tolerance = math.sqrt(torch.finfo(p.dtype).eps)
    if ((sums - 1).abs() > tolerance).any():
        raise ValueError(
            f"{name} must sum to 1 along the last axis (within {tolerance:.1e}); "
            f"got sums in [{sums.min().item():.6g}, {sums.max().item():.6g}]"
        )
    return p


def _check_pair(p, q) -> tuple[torch.Tensor, torch.Tensor]:
    p = _check_distribution(p, "p")
    q = _check_distribution(q, "q")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p and q must have the same number of outcomes (last axis); "
            f"got shapes {tuple(p.shape)} and {tuple(q.shape)}"
        )
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError as err:
        raise ValueError(
            f"the batch axes of p and q must broadcast; got shapes {tuple(p.shape)} and {tuple(q.shape)}"
        ) from err
    return p, q


# ----------------------------------------------------------------------------- discrete

def entropy(p) -> torch.Tensor:
    r"""Shannon entropy :math:`H(p) = -\sum_x p(x)\log p(x)` in nats, shape ``p.shape[:-1]``."""
    p = _check_distribution(p, "p")
    support = p > 0
    log_p = torch.log(torch.where(support, p, torch.ones_like(p)))  # log 1 = 0 where p = 0
    return -(p * log_p).sum(dim=-1)


def cross_entropy(p, q) -> torch.Tensor:
    r"""Cross-entropy :math:`H(p, q) = -\sum_x p(x)\log q(x)` in nats (``+inf`` if q misses p's support)."""
    p, q = _check_pair(p, q)
    support = p > 0
    log_q = torch.log(torch.where(support, q, torch.ones_like(q)))  # only p > 0 terms count
    return -(p * log_q).sum(dim=-1)


def kl_divergence(p, q) -> torch.Tensor:
    r"""KL divergence :math:`\mathrm{KL}(p\|q) = \sum_x p(x)\log\frac{p(x)}{q(x)}` in nats.

    Computed term by term (not as ``cross_entropy - entropy``) so that nearly equal
    distributions give a small, non-negative number rather than a cancellation error.
    Returns shape ``broadcast(p.shape, q.shape)[:-1]``; ``+inf`` where some :math:`q(x) = 0 < p(x)`.
    """
    p, q = _check_pair(p, q)
    support = p > 0
    log_p = torch.log(torch.where(support, p, torch.ones_like(p)))
    log_q = torch.log(torch.where(support, q, torch.ones_like(q)))
    return (p * (log_p - log_q)).sum(dim=-1)


# ----------------------------------------------------------------------------- Gaussian

def gaussian_kl(mu, logvar, mu_p=None, logvar_p=None) -> torch.Tensor:
    r"""KL between diagonal Gaussians, summed over the last axis (eq. ch2-eq-gaussian-kl per axis).

    For :math:`q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` and
    :math:`p = \mathcal N(\mu_p, \mathrm{diag}\,\sigma_p^2)` with
    :math:`\log\sigma^2 =` ``logvar``:

    .. math::

        \mathrm{KL}(q\|p) = \frac12\sum_j\Big[\log\sigma_{p,j}^2 - \log\sigma_j^2
            + \frac{\sigma_j^2 + (\mu_j - \mu_{p,j})^2}{\sigma_{p,j}^2} - 1\Big],

    which for the default prior :math:`p = \mathcal N(0, I)` is
    :math:`\frac12\sum_j(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)`, the VAE's regulariser.
    ``mu_p`` and ``logvar_p`` default to 0 separately; all four arguments broadcast.
    Returns shape ``broadcast(...)[:-1]``.
    """
    mu = _as_float_tensor(mu, "mu")
    logvar = _as_float_tensor(logvar, "logvar")
    mu_p = torch.zeros_like(mu) if mu_p is None else _as_float_tensor(mu_p, "mu_p")
    logvar_p = torch.zeros_like(logvar) if logvar_p is None else _as_float_tensor(logvar_p, "logvar_p")
    shapes = [tuple(t.shape) for t in (mu, logvar, mu_p, logvar_p)]
    try:
        shape = torch.broadcast_shapes(*shapes)
    except RuntimeError as err:
        raise ValueError(f"mu, logvar, mu_p, logvar_p must broadcast; got shapes {shapes}") from err
    if len(shape) == 0:
        raise ValueError("gaussian_kl needs at least one axis (the latent dimensions) to sum over")
    variance_ratio = torch.exp(logvar - logvar_p)  # sigma^2 / sigma_p^2
    mean_term = (mu - mu_p) ** 2 * torch.exp(-logvar_p)  # (mu - mu_p)^2 / sigma_p^2
    return 0.5 * (variance_ratio + mean_term - 1 - (logvar - logvar_p)).sum(dim=-1)


# ----------------------------------------------------------------------------- likelihood

def negative_log_likelihood(model, x, batch_size: int | None = None) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_i \log P_\theta(x_i)` in nats (eq. ch2-eq-nll).

    ``model`` is anything with ``log_prob(x) -> (N,)`` (a gmcourse model, a toy density, a
    :mod:`torch.distributions` object with a scalar event). The data ``x`` (shape
    ``(N, *event_shape)``) is fed in batches of ``batch_size`` (all at once if None) under
    :func:`torch.no_grad`; the sum is accumulated in float64. The model's train/eval mode is
    left alone: call ``model.eval()`` first if it uses dropout or batch norm.

    For ``log_prob_kind == "lower_bound"`` (VAE, diffusion) the result is an *upper bound* on
    the NLL; models without a normalised density (``"unnormalized"``, ``"none"``) are refused.
    """
    log_prob = getattr(model, "log_prob", None)
    if not callable(log_prob):
        raise ValueError(f"model must have a log_prob(x) method; {type(model).__name__} has none")
    kind = getattr(model, "log_prob_kind", "exact")
    if kind in ("unnormalized", "none"):
        raise ValueError(
            f"{type(model).__name__} has log_prob_kind={kind!r}: it has no normalised "
            "log-likelihood, so its NLL is undefined"
        )
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must hold at least one example along axis 0, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = x[start : start + batch_size]
            values = log_prob(batch)
            if not isinstance(values, torch.Tensor) or values.shape != (batch.shape[0],):
                got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
                raise ValueError(
                    f"{type(model).__name__}.log_prob must return shape ({batch.shape[0]},) "
                    f"for a batch of {batch.shape[0]} examples, got {got}"
                )
            total += values.double().sum().item()
    return -total / n


def bits_per_dim(nll_nats, dim: int):
    r"""Convert an NLL in nats per example to bits per dimension: :math:`\mathrm{NLL}/(D\ln 2)`."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive int (the number of dimensions), got {dim!r}")
    return nll_nats / (dim * math.log(2))


# ----------------------------------------------------------------------------- Monte Carlo

def monte_carlo_mean(values, tau: float = 1.0) -> Estimate:
    r"""Monte Carlo estimate :math:`\bar O = \frac1N\sum_i O_i` with its standard error (eq. ch2-eq-stderr).

    The error bar is :math:`s\sqrt{\tau/N}` with :math:`s` the sample standard deviation
    (ddof = 1) and :math:`\tau \ge 1` the integrated autocorrelation time of the sequence
    (1 for independent draws; estimate it with :mod:`gmcourse.sampling` for MCMC output).
    """
    values = _as_float_tensor(values, "values").detach()
    if values.dim() != 1:
        raise ValueError(f"values must be one-dimensional (N samples), got shape {tuple(values.shape)}")
    n = values.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 values to estimate an error bar, got {n}")
    if not (tau >= 1.0 and math.isfinite(tau)):
        raise ValueError(f"tau (integrated autocorrelation time) must be a finite number >= 1, got {tau!r}")
    if not torch.isfinite(values).all():
        raise ValueError("values contain NaN or infinite entries; the mean and its error are undefined")
    values = values.double()
    mean = values.mean().item()
    std = values.std(correction=1).item()
    return Estimate(mean, std * math.sqrt(tau / n))
