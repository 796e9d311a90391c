r"""Markov chain Monte Carlo samplers for chapter 3 (Sampling).

We want samples of :math:`p(x) = \tilde p(x) / Z` where :math:`\tilde p(x) = e^{-E(x)}` is
easy to evaluate and :math:`Z` is not. A Markov chain with transition kernel
:math:`K(a \to b)` leaves :math:`\pi` stationary (eq. ch3-eq-stationary) if it obeys
*detailed balance* (eq. ch3-eq-detailed-balance)

.. math:: \pi(a)\, K(a \to b) = \pi(b)\, K(b \to a),

and Metropolis--Hastings achieves it for any proposal :math:`q` by accepting :math:`b` with
probability (eq. ch3-eq-mh)

.. math:: A(a \to b) = \min\Big(1, \frac{\tilde p(b)\, q(b \to a)}{\tilde p(a)\, q(a \to b)}\Big).

Only the *ratio* :math:`\tilde p(b)/\tilde p(a)` enters, so :math:`Z` is never needed.

This module holds the generic samplers, each vectorised over independent chains ``x`` of
shape ``(chains, D)`` and each returning an :class:`MCMCResult`:

* :func:`metropolis_hastings` -- Gaussian random-walk proposal (symmetric, so :math:`q` cancels);
* :func:`gibbs` -- each variable in turn drawn from its exact conditional (never rejected);
* :func:`langevin` -- :math:`x' = x + \eta \nabla \log p(x) + \sqrt{2\eta}\,\xi` (ULA,
  eq. ch3-eq-ula), or with the Metropolis correction eq. ch3-eq-mh for its asymmetric proposal
  (MALA, :func:`mala`);
* :func:`integrated_autocorrelation_time` (eq. ch3-eq-tau), :func:`autocorrelation_time_and_error`
  and :func:`effective_sample_size`, which turn correlated chains into an honest error bar,
  :math:`\sigma_O \sqrt{\tau / N}` (eq. ch3-eq-error-bar).

The acceptance rules are small public functions (:func:`metropolis_acceptance`,
:func:`heat_bath_acceptance`, :func:`langevin_log_proposal`) so that the chapter and the
Ising sampler in :mod:`gmcourse.ising` use literally the same code.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch

from gmcourse.utils import make_generator, progress as progress_bar

__all__ = [
    "MCMCResult", "metropolis_acceptance", "heat_bath_acceptance", "langevin_log_proposal",
    "metropolis_hastings", "gibbs", "langevin", "mala",
    "autocorrelation", "integrated_autocorrelation_time", "autocorrelation_time_and_error", "effective_sample_size",
]

LogProb = Callable[[torch.Tensor], torch.Tensor]


class MCMCResult(NamedTuple):
    """``samples``: the chain states after every step, shape ``(n_steps, chains, D)``;
    ``acceptance_rate``: the fraction of accepted proposals (1.0 for Gibbs and ULA)."""

    samples: torch.Tensor
    acceptance_rate: float


# ----------------------------------------------------------------------------- acceptance rules

def metropolis_acceptance(delta_log_prob: torch.Tensor) -> torch.Tensor:
    r"""Eq. ch3-eq-mh for a symmetric proposal: :math:`\min(1, e^{\Delta \log p})`,
    with :math:`\Delta\log p = \log\tilde p(b) - \log\tilde p(a)` (for a Boltzmann weight,
    :math:`-\beta\,\Delta E`). Written as ``exp(min(Δ, 0))`` so it never overflows."""
    return torch.exp(torch.clamp(delta_log_prob, max=0.0))


def heat_bath_acceptance(delta_log_prob: torch.Tensor) -> torch.Tensor:
    r"""Gibbs ("heat-bath") rule for a variable with two values: go to the other value with its
    conditional probability :math:`\tilde p(b)/(\tilde p(a) + \tilde p(b)) =
    1/(1 + e^{-\Delta\log p})`. It also satisfies detailed balance (eq. ch3-eq-detailed-balance),
    but rejects more often than Metropolis."""
    return torch.sigmoid(delta_log_prob)


def langevin_log_proposal(x_to, x_from, grad_from, step_size: float) -> torch.Tensor:
    r""":math:`\log q(x_\text{from} \to x_\text{to})` of the Langevin proposal
    :math:`\mathcal N(x_\text{from} + \eta\nabla\log p(x_\text{from}),\, 2\eta I)` (step size
    :math:`\eta`), up to a constant that cancels in eq. ch3-eq-mh. Shape ``(chains,)``."""
    mean = x_from + step_size * grad_from  # (chains, D)
    return -((x_to - mean) ** 2).sum(-1) / (4.0 * step_size)


# ----------------------------------------------------------------------------- input checks

def _check_chains(x0) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor of shape (chains, D), got {type(x0).__name__}")
    if x0.ndim != 2 or x0.shape[0] < 1 or x0.shape[1] < 1:
        raise ValueError(f"x0 must have shape (chains, D) with chains, D >= 1, got {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    return x0.detach().clone()


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_step_size(step_size) -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) \
            or not math.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    return float(step_size)


def _evaluate(log_prob: LogProb, x: torch.Tensor) -> torch.Tensor:
    values = log_prob(x)
    if not isinstance(values, torch.Tensor) or values.shape != x.shape[:1]:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"log_prob must map x of shape {tuple(x.shape)} to shape ({x.shape[0]},), got {shape}")
    return values


def _check_start(log_prob_x0: torch.Tensor) -> None:
    bad = ~torch.isfinite(log_prob_x0)
    if bad.any():
        raise ValueError(f"log_prob(x0) must be finite for every chain; chains "
                         f"{bad.nonzero().flatten()[:5].tolist()} start at {log_prob_x0[bad][:5].tolist()}")


# ----------------------------------------------------------------------------- samplers

def metropolis_hastings(log_prob: LogProb, x0: torch.Tensor, n_steps: int, step_size: float,
                        generator=None, seed=None, progress: bool = False) -> MCMCResult:
    r"""Random-walk Metropolis: propose :math:`x^* = x + \sigma\,\xi`, :math:`\xi\sim\mathcal N(0, I)`
    (``step_size`` :math:`=\sigma`), accept with eq. ch3-eq-mh; :math:`q` is symmetric and cancels.

    ``log_prob`` maps ``(chains, D)`` to ``(chains,)`` and may be unnormalised."""
    x = _check_chains(x0)
    n_steps, step_size = _check_positive_int(n_steps, "n_steps"), _check_step_size(step_size)
    g = make_generator(seed, generator, device=x.device)
    with torch.no_grad():
        current = _evaluate(log_prob, x)  # (chains,)
        _check_start(current)
        samples = x.new_empty((n_steps, *x.shape))  # (n_steps, chains, D)
        accepted = 0
        for step in progress_bar(range(n_steps), desc="Metropolis-Hastings", disable=not progress):
            proposal = x + step_size * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            proposed = _evaluate(log_prob, proposal)
            u = torch.rand(current.shape, generator=g, device=x.device, dtype=x.dtype)
            accept = u < metropolis_acceptance(proposed - current)  # (chains,)
            x = torch.where(accept[:, None], proposal, x)
            current = torch.where(accept, proposed, current)
            accepted += int(accept.sum())
            samples[step] = x
    return MCMCResult(samples, accepted / (n_steps * x.shape[0]))


def gibbs(log_prob: LogProb, x0: torch.Tensor, n_sweeps: int, values: Sequence[float] = (-1.0, 1.0),
          generator=None, seed=None, progress: bool = False) -> MCMCResult:
    r"""Gibbs sampling of a discrete model whose variables take values in ``values``.

    One sweep visits :math:`i = 1, \dots, D` in turn and draws
    :math:`x_i \sim p(x_i \mid x_{-i}) \propto \tilde p(x_1, \dots, x_i = v, \dots, x_D)`,
    found by evaluating ``log_prob`` once per value :math:`v` (batched over chains). The draw is
    exact, so nothing is ever rejected. ``samples[t]`` is the state after sweep ``t``."""
    x = _check_chains(x0)
    n_sweeps = _check_positive_int(n_sweeps, "n_sweeps")
    value_tensor = torch.as_tensor(values, dtype=x.dtype, device=x.device)  # (n_values,)
    if value_tensor.ndim != 1 or value_tensor.numel() < 2:
        raise ValueError(f"values must be a 1D sequence of at least two numbers, got {values!r}")
    if not torch.isin(x, value_tensor).all():
        raise ValueError(f"every entry of x0 must be one of values={list(values)}; "
                         f"got entries {torch.unique(x)[:8].tolist()}")
    g = make_generator(seed, generator, device=x.device)
    n_values, (chains, dim) = value_tensor.numel(), x.shape
    samples = x.new_empty((n_sweeps, chains, dim))  # (n_sweeps, chains, D)
    with torch.no_grad():
        for sweep in progress_bar(range(n_sweeps), desc="Gibbs", disable=not progress):
            for i in range(dim):
                candidates = x.unsqueeze(0).repeat(n_values, 1, 1)  # (n_values, chains, D)
                candidates[:, :, i] = value_tensor[:, None]
                logits = _evaluate(log_prob, candidates.reshape(-1, dim)).reshape(n_values, chains)
                conditional = torch.softmax(logits, dim=0).T  # (chains, n_values)
                choice = torch.multinomial(conditional, 1, generator=g).squeeze(1)  # (chains,)
                x[:, i] = value_tensor[choice]
            samples[sweep] = x
    return MCMCResult(samples, 1.0)


def _log_prob_and_grad(log_prob: LogProb, x: torch.Tensor):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        values = _evaluate(log_prob, x)
        # chains are independent, so the gradient of the sum is every chain's own gradient
        (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad


def langevin(log_prob: LogProb, x0: torch.Tensor, n_steps: int, step_size: float,
             generator=None, seed=None, metropolis_adjust: bool = False,
             progress: bool = False) -> MCMCResult:
    r"""Langevin sampling, eq. ch3-eq-ula: :math:`x' = x + \eta\,\nabla_x\log p(x) + \sqrt{2\eta}\,\xi`
    with step size :math:`\eta` (``step_size``).

    Without adjustment (ULA) every step is taken; the chain's stationary law is only
    :math:`\approx p`, with an :math:`O(\eta)` bias (for :math:`\mathcal N(0, \sigma^2)` the
    stationary variance is :math:`\sigma^2 / (1 - \eta/2\sigma^2)`, eq. ch3-eq-ula-variance). With
    ``metropolis_adjust=True`` (MALA) the step is a proposal accepted with eq. ch3-eq-mh, including
    the ratio :math:`q(x'\to x)/q(x\to x')` from :func:`langevin_log_proposal`, and the chain
    samples :math:`p` exactly. Gradients come from :func:`torch.autograd.grad`; no graph is kept.
    """
    x = _check_chains(x0)
    n_steps, step_size = _check_positive_int(n_steps, "n_steps"), _check_step_size(step_size)
    g = make_generator(seed, generator, device=x.device)
    current, grad = _log_prob_and_grad(log_prob, x)
    if metropolis_adjust:
        _check_start(current)
    samples = x.new_empty((n_steps, *x.shape))  # (n_steps, chains, D)
    accepted = 0
    desc = "MALA" if metropolis_adjust else "Langevin (ULA)"
    for step in progress_bar(range(n_steps), desc=desc, disable=not progress):
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        proposal = x + step_size * grad + math.sqrt(2.0 * step_size) * noise
        proposed, proposed_grad = _log_prob_and_grad(log_prob, proposal)
        if metropolis_adjust:
            log_ratio = (proposed - current
                         + langevin_log_proposal(x, proposal, proposed_grad, step_size)
                         - langevin_log_proposal(proposal, x, grad, step_size))  # (chains,)
            u = torch.rand(current.shape, generator=g, device=x.device, dtype=x.dtype)
            accept = u < metropolis_acceptance(log_ratio)
        else:
            accept = torch.ones_like(current, dtype=torch.bool)
        x = torch.where(accept[:, None], proposal, x)
        grad = torch.where(accept[:, None], proposed_grad, grad)
        current = torch.where(accept, proposed, current)
        accepted += int(accept.sum())
        samples[step] = x
    return MCMCResult(samples, accepted / (n_steps * x.shape[0]))


def mala(log_prob: LogProb, x0: torch.Tensor, n_steps: int, step_size: float,
         generator=None, seed=None, progress: bool = False) -> MCMCResult:
    """Metropolis-adjusted Langevin algorithm: :func:`langevin` with ``metropolis_adjust=True``."""
    return langevin(log_prob, x0, n_steps, step_size, generator=generator, seed=seed,
                    metropolis_adjust=True, progress=progress)


# ----------------------------------------------------------------------------- error bars

def _as_series(x) -> torch.Tensor:
    series = torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2 or series.shape[0] < 4:
        raise ValueError(f"expected a series of shape (T,) or (T, chains) with T >= 4, got {tuple(series.shape)}")
    if not torch.isfinite(series).all():
        raise ValueError("the series contains NaN or infinite values")
    return series  # (T, chains)


def autocorrelation(x) -> torch.Tensor:
    r"""Normalised autocorrelation :math:`\rho(t) = C(t)/C(0)`, :math:`t = 0..T-1`, of a series of
    shape ``(T,)`` or ``(T, chains)`` of independent chains in equilibrium.

    :math:`C(t) = \frac1T\sum_s (x_s - \bar x)(x_{s+t} - \bar x)` is computed for each chain with
    an FFT (zero-padded to :math:`2T` so it does not wrap around) and averaged over chains. The
    mean :math:`\bar x` is that of *all* chains: they sample the same distribution, and centring
    each chain on its own mean would bias :math:`\rho(t)` down by about :math:`\tau/T`, which for
    short chains is a large error. Chains that disagree (not yet equilibrated, or stuck in
    different modes) then show up as a large :math:`\rho(t)`, which is a warning, not a bug.
    A constant series has no fluctuations; its :math:`\rho` is returned as :math:`(1, 0, 0, \dots)`."""
    series = _as_series(x)
    length = series.shape[0]
    centred = series - series.mean()  # the mean over all chains and times
    spectrum = torch.fft.rfft(centred, n=2 * length, dim=0)
    autocovariance = torch.fft.irfft(spectrum.abs() ** 2, n=2 * length, dim=0)[:length].mean(1) / length
    if autocovariance[0] <= 1e-300:
        rho = torch.zeros(length, dtype=torch.float64)
        rho[0] = 1.0
        return rho
    return autocovariance / autocovariance[0]


def integrated_autocorrelation_time(x, c: float = 5.0) -> float:
    r""":math:`\tau = 1 + 2\sum_{t=1}^{W}\rho(t)` (eq. ch3-eq-tau) with Sokal's automatic window:
    the smallest :math:`W` with :math:`W \ge c\,\tau(W)` (:math:`c\approx 5`). Longer windows add
    mostly noise.

    ``x`` has shape ``(T,)`` or ``(T, chains)`` (the autocorrelation is averaged over chains).
    :math:`N` correlated samples carry as much information as :math:`N/\tau` independent ones.
    The estimate is reliable when the total number of samples is much larger than :math:`\tau`
    (its relative standard error is about :math:`\sqrt{2(2W + 1)/N}`) and every chain is much
    longer than :math:`\tau`."""
    rho = autocorrelation(x)
    tau_of_window = 2.0 * torch.cumsum(rho, 0) - 1.0  # tau(W) = 1 + 2 sum_{t=1}^W rho(t)
    windows = torch.arange(rho.numel(), dtype=torch.float64)
    large_enough = windows >= c * tau_of_window
    window = int(large_enough.to(torch.int8).argmax()) if large_enough.any() else rho.numel() - 1
    return max(float(tau_of_window[window]), 1e-12)


def autocorrelation_time_and_error(x, n_groups: int = 8, c: float = 5.0) -> tuple[float, float]:
    r""":math:`\tau` of all chains in ``x`` ``(T, chains)`` and its standard error.

    The chains are split into ``n_groups`` disjoint groups; each group gives an independent
    estimate :math:`\tau_g`, and the standard error is their spread,
    :math:`\operatorname{std}(\tau_g)/\sqrt{G}`. This needs no formula for the variance of
    :math:`\tau`, and it includes the noise of the window choice."""
    series = _as_series(x)
    n_groups = _check_positive_int(n_groups, "n_groups")
    if n_groups < 2 or series.shape[1] < n_groups:
        raise ValueError(f"need n_groups >= 2 and at least n_groups chains; got n_groups={n_groups} "
                         f"and {series.shape[1]} chains (series of shape {tuple(series.shape)})")
    per_group = torch.tensor([integrated_autocorrelation_time(group, c=c)
                              for group in torch.tensor_split(series, n_groups, dim=1)])
    return integrated_autocorrelation_time(series, c=c), float(per_group.std() / math.sqrt(n_groups))


def effective_sample_size(x, c: float = 5.0) -> float:
    r""":math:`N_\text{eff} = N / \tau` with :math:`N` the total number of values (``T * chains``)."""
    series = _as_series(x)
    return series.numel() / integrated_autocorrelation_time(series, c=c)
