r"""The one protocol every model and data distribution in the course follows.

Every chapter answers the same question -- given samples from :math:`P_\text{data}`, build
:math:`P_\theta \approx P_\text{data}` -- so every family exposes the same three methods,
in the spirit of :mod:`torch.distributions`:

``log_prob(x) -> Tensor of shape (n,)``
    :math:`\log P_\theta(x)` for a batch ``x`` of shape ``(n, *event_shape)``, in nats.
    Exact where the family allows it (autoregressive models, flows, small Ising models);
    otherwise a *named* substitute, declared in the class attribute ``log_prob_kind``; the
    kinds follow the taxonomy of chapter 0 (section ch0-taxonomy of
    ``book/00_why_generative_models.md``):

    ==================  ===================================================================
    ``"exact"``         the normalised log-density / log-probability
    ``"lower_bound"``   a bound :math:`\le \log P_\theta(x)` (the VAE's ELBO, diffusion's ELBO)
    ``"estimate"``      a stochastic estimate (importance sampling)
    ``"unnormalized"``  :math:`-E_\theta(x)` up to the unknown :math:`\log Z` (energy models)
    ``"none"``          the family cannot evaluate densities (GANs): ``log_prob`` raises
    ==================  ===================================================================

``sample(n, generator=None) -> Tensor of shape (n, *event_shape)``
    ``n`` independent draws (or, for MCMC-based families, draws whose correlation the
    docstring states). Every ``sample`` takes a :class:`torch.Generator` (or ``seed=``).

``loss(x) -> scalar Tensor``
    What training minimises on a batch. For maximum-likelihood families this is the mean
    negative log-likelihood :math:`-\frac1n\sum_i \log P_\theta(x_i)` (eq. ch2-eq-nll), the
    default below.

Data distributions (:class:`gmcourse.ising.IsingModel`, the 2D toys) follow the same
``log_prob`` / ``sample`` part of the protocol, so a model and the truth it imitates can be
compared with one line (see :func:`gmcourse.divergences.negative_log_likelihood`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["LOG_PROB_KINDS", "Distribution", "GenerativeModel"]

LOG_PROB_KINDS = ("exact", "lower_bound", "estimate", "unnormalized", "none")


@runtime_checkable
class Distribution(Protocol):
    """Anything that can be sampled and (in some named sense) evaluated."""

    log_prob_kind: str

    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


class GenerativeModel(nn.Module):
    """Base class of every trainable model in gmcourse.

    Subclasses implement :meth:`log_prob` and :meth:`sample`; :meth:`loss` defaults to the
    mean negative log-likelihood, which is right for every family whose ``log_prob`` is
    exact. Families with another objective (VAE, GAN, diffusion) override it.
    """

    log_prob_kind: str = "exact"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.log_prob_kind not in LOG_PROB_KINDS:
            raise TypeError(
                f"{cls.__name__}.log_prob_kind must be one of {LOG_PROB_KINDS}, "
                f"got {cls.log_prob_kind!r}"
            )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement log_prob(x)")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement sample(n, generator)")

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the batch ``x`` (nats per example; eq. ch2-eq-nll)."""
        if self.log_prob_kind not in ("exact", "lower_bound", "estimate"):
            raise NotImplementedError(
                f"{type(self).__name__} has log_prob_kind={self.log_prob_kind!r}; "
                "it must define its own loss(x)"
            )
        return -self.log_prob(x).mean()
