r"""The 2D Ising model: chapter 3's running example and the course's exactly solvable data set.

Spins :math:`s_i = \pm 1` sit on a periodic :math:`L\times L` lattice with energy
(eq. ch3-eq-ising of chapter 3)

.. math:: E(s) = -J \sum_i s_i \big(s_{\text{right}(i)} + s_{\text{down}(i)}\big) - h \sum_i s_i,

i.e. :math:`2L^2` bonds, and :math:`p(s) = e^{-\beta E(s)} / Z`. For :math:`L = 2` the right and
the left neighbour of a site are the *same* site, so eq. ch3-eq-ising counts each neighbouring pair twice
(coupling :math:`2J`); we keep that, because it is what the formula says and it keeps every
site's local field equal to the sum of its four neighbour slots.

* :math:`L \le 4` (:math:`2^{16}` states): :math:`\log Z`, :math:`p(s)`, the entropy,
  :math:`\langle E\rangle` and :math:`\langle|m|\rangle` are *exact* by enumeration.
* Any :math:`L`: Markov chain Monte Carlo, vectorised over many independent chains:
  single-site Metropolis / heat-bath updates (:func:`metropolis_sweep`) and, near
  :math:`T_c = 2J/\ln(1+\sqrt2)`, Wolff cluster updates (:func:`wolff_update`). Flipping
  :math:`s_i` costs :math:`\Delta E_i = 2 s_i (J \sum_{j\sim i} s_j + h)` and is accepted with
  :func:`gmcourse.sampling.metropolis_acceptance` of :math:`-\beta\Delta E_i`.
* :meth:`IsingModel.transition_matrix` builds the *exact* transition matrix of those same
  updates for tiny lattices, so detailed balance (eq. ch3-eq-detailed-balance) and stationarity
  (eq. ch3-eq-stationary) can be checked to machine precision.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from gmcourse.sampling import heat_bath_acceptance, integrated_autocorrelation_time, metropolis_acceptance
from gmcourse.utils import make_generator, progress as progress_bar

__all__ = ["CRITICAL_TEMPERATURE", "IsingModel", "SamplingInfo", "magnetization", "onsager_magnetization",
           "metropolis_sweep", "single_site_update", "wolff_update"]

CRITICAL_TEMPERATURE = 2.0 / math.log(1.0 + math.sqrt(2.0))  # Onsager's T_c for J = 1, k_B = 1
MAX_EXACT_L = 4
ACCEPTANCE_RULES = {"metropolis": metropolis_acceptance, "heat_bath": heat_bath_acceptance}


def magnetization(s: torch.Tensor) -> torch.Tensor:
    r"""Magnetisation per spin :math:`m = M / L^2 = \frac{1}{L^2}\sum_i s_i`; ``s`` (..., L, L) -> (...)."""
    if s.ndim < 2:
        raise ValueError(f"s must have shape (..., L, L), got {tuple(s.shape)}")
    return s.mean(dim=(-2, -1))


def onsager_magnetization(T, J: float = 1.0):
    r"""Onsager's spontaneous magnetisation of the infinite lattice,
    :math:`m(T) = (1 - \sinh(2J/T)^{-4})^{1/8}` for :math:`T < T_c(J) = J\,T_c`, and 0 above."""
    T_tensor = torch.as_tensor(T, dtype=torch.float64)
    if not (T_tensor > 0).all() or not torch.isfinite(T_tensor).all() or not J > 0:
        raise ValueError(f"onsager_magnetization needs T > 0 finite and J > 0, got T={T!r}, J={J!r}")
    m = (1.0 - torch.sinh(2.0 * J / T_tensor) ** -4).clamp(min=0.0) ** 0.125
    m = torch.where(T_tensor < J * CRITICAL_TEMPERATURE, m, torch.zeros_like(m))
    return float(m) if m.ndim == 0 and not isinstance(T, torch.Tensor) else m


def _check_lattices(s, rule="metropolis"):
    if not isinstance(s, torch.Tensor) or s.ndim != 3 or s.shape[1] != s.shape[2] or s.shape[1] < 2:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"expected a batch of chains of shape (chains, L, L) with L >= 2, got {got}")
    if rule not in ACCEPTANCE_RULES:
        raise ValueError(f"rule must be one of {list(ACCEPTANCE_RULES)}, got {rule!r}")
    return s.shape[0], s.shape[1]


def _local_field(s: torch.Tensor) -> torch.Tensor:
    """Sum of the four neighbour slots of every site (for L = 2 each neighbour appears twice)."""
    return (torch.roll(s, 1, -1) + torch.roll(s, -1, -1)
            + torch.roll(s, 1, -2) + torch.roll(s, -1, -2))  # (chains, L, L)


def single_site_update(s, beta, J=1.0, h=0.0, generator=None, rule="metropolis"):
    r"""One random-site update of every chain in ``s`` (chains, L, L): pick a site :math:`i`
    uniformly, propose :math:`s_i \to -s_i`, accept with ``rule`` applied to :math:`-\beta\Delta E_i`.
    Returns a new tensor; ``s`` is not modified."""
    chains, L = _check_lattices(s, rule)
    rows = torch.randint(L, (chains,), generator=generator, device=s.device)
    cols = torch.randint(L, (chains,), generator=generator, device=s.device)
    chain = torch.arange(chains, device=s.device)
    spin = s[chain, rows, cols]  # (chains,)
    neighbours = (s[chain, (rows + 1) % L, cols] + s[chain, (rows - 1) % L, cols]
                  + s[chain, rows, (cols + 1) % L] + s[chain, rows, (cols - 1) % L])
    delta_energy = 2.0 * spin * (J * neighbours + h)
    u = torch.rand(chains, generator=generator, device=s.device, dtype=s.dtype)
    accept = u < ACCEPTANCE_RULES[rule](-beta * delta_energy)
    s = s.clone()
    s[chain, rows, cols] = torch.where(accept, -spin, spin)
    return s


def metropolis_sweep(s, beta, J=1.0, h=0.0, generator=None, rule="metropolis"):
    r"""One sweep (:math:`L^2` single-site proposals per chain, on average) of every chain in ``s``
    (chains, L, L).

    Even :math:`L`: checkerboard order. Black sites (:math:`i + j` even) have only white
    neighbours, so black spins can be updated at once, then white ones; each update is a
    single-site Metropolis (or heat-bath, ``rule="heat_bath"``) step, so the sweep leaves
    :math:`p` stationary. The updates are *lazy*: in each of four half-steps (black, white,
    black, white) every site of that colour proposes a flip with probability 1/2, which is
    accepted with probability :math:`A`; we draw one uniform :math:`u` per site and flip when
    :math:`u < A/2`, which has the same probability. Without the coin, Metropolis at :math:`h = 0`
    is not ergodic: in a striped configuration every site has :math:`\Delta E = 0`, every flip
    is accepted, and the chain hops between the stripes and their negatives for ever (a closed
    class that biases all averages). Odd :math:`L` (the colouring breaks at the periodic
    boundary): :math:`L^2` calls of :func:`single_site_update`. Returns a new tensor."""
    _, L = _check_lattices(s, rule)
    if L % 2:
        for _ in range(L * L):
            s = single_site_update(s, beta, J, h, generator, rule)
        return s
    rows, cols = torch.meshgrid(torch.arange(L, device=s.device), torch.arange(L, device=s.device), indexing="ij")
    colours = [(rows + cols) % 2 == colour for colour in (0, 1)]  # two (L, L) masks
    for colour in (0, 1, 0, 1):
        delta_energy = 2.0 * s * (J * _local_field(s) + h)  # (chains, L, L)
        u = torch.rand(s.shape, generator=generator, device=s.device, dtype=s.dtype)
        flip = colours[colour] & (u < 0.5 * ACCEPTANCE_RULES[rule](-beta * delta_energy))  # lazy: A/2
        s = torch.where(flip, -s, s)
    return s


def wolff_update(s, beta, J=1.0, generator=None):
    r"""One Wolff cluster flip per chain in ``s`` (chains, L, L), for :math:`h = 0`, :math:`J > 0`.

    Wolff grows a cluster from a random seed site, adding each bond to an aligned neighbour
    with probability :math:`p_\text{add} = 1 - e^{-2\beta J}`, and flips it (always accepted).
    Every bond is tried at most once, so drawing all :math:`2L^2` bonds of eq. ch3-eq-ising up front and
    taking the seed's connected component through open bonds between spins aligned with the
    seed gives the same cluster law. The component is found for all chains at once by growing
    a frontier one lattice step per loop. Returns a new tensor."""
    chains, L = _check_lattices(s)
    if not J > 0:
        raise ValueError(f"Wolff cluster updates need a ferromagnetic coupling J > 0, got J={J}")
    p_add = 1.0 - math.exp(-2.0 * beta * J)
    seed_site = torch.randint(L * L, (chains,), generator=generator, device=s.device)
    chain = torch.arange(chains, device=s.device)
    cluster = torch.zeros(chains, L * L, dtype=torch.bool, device=s.device)
    cluster[chain, seed_site] = True
    cluster = cluster.view(chains, L, L)
    aligned = s == s.reshape(chains, -1)[chain, seed_site][:, None, None]  # (chains, L, L)
    bonds = torch.rand((2, chains, L, L), generator=generator, device=s.device) < p_add
    right = bonds[0] & aligned & torch.roll(aligned, -1, -1)  # bond i -- right(i) open and usable
    down = bonds[1] & aligned & torch.roll(aligned, -1, -2)   # bond i -- down(i)
    frontier = cluster.clone()
    while frontier.any():
        reached = (torch.roll(frontier & right, 1, -1) | (torch.roll(frontier, -1, -1) & right)
                   | torch.roll(frontier & down, 1, -2) | (torch.roll(frontier, -1, -2) & down))
        frontier = reached & ~cluster
        cluster |= frontier
    return torch.where(cluster, -s, s)


class SamplingInfo(NamedTuple):
    r"""What :meth:`IsingModel.sample` did: ``tau`` is the largest integrated autocorrelation time
    (in steps) of :math:`E`, :math:`|m|` and (if :math:`h \ne 0`) :math:`m`; ``nan`` if not measured."""

    method: str
    n_chains: int
    burn_in: int
    thin: int
    tau: float


class IsingModel:
    r"""Periodic :math:`L\times L` Ising model (eq. ch3-eq-ising) at inverse temperature ``beta``.

    Follows the course protocol: ``log_prob(s)`` is exact (for :math:`L \le 4`), ``sample(n)``
    gives ``(n, L, L)`` float spins. Spins are float tensors of :math:`\pm 1`."""

    log_prob_kind = "exact"

    def __init__(self, L: int, beta: float, J: float = 1.0, h: float = 0.0):
        if isinstance(L, bool) or not isinstance(L, int) or L < 2:
            raise ValueError(f"L must be an int >= 2, got {L!r}")
        for name, value in (("beta", beta), ("J", J), ("h", h)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite real number, got {value!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0 (beta = 1/T), got {beta}")
        self.L, self.beta, self.J, self.h = L, float(beta), float(J), float(h)
        self.sampling_info: SamplingInfo | None = None
        self._states = self._energies = None

    def __repr__(self):
        return f"IsingModel(L={self.L}, beta={self.beta:g}, J={self.J:g}, h={self.h:g})"

    @property
    def temperature(self) -> float:
        return math.inf if self.beta == 0 else 1.0 / self.beta

    # ------------------------------------------------------------------ energy and exact results
    def _check_spins(self, s) -> torch.Tensor:
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"spins must be a torch.Tensor of shape (..., {self.L}, {self.L}), got {type(s).__name__}")
        if s.ndim < 2 or tuple(s.shape[-2:]) != (self.L, self.L):
            raise ValueError(f"spins must have shape (..., {self.L}, {self.L}), got {tuple(s.shape)}")
        if not ((s == 1) | (s == -1)).all():
            raise ValueError(f"spins must be +1 or -1, got values {torch.unique(s)[:6].tolist()}")
        return s if s.is_floating_point() else s.to(torch.get_default_dtype())

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """Eq. ch3-eq-ising for ``s`` of shape (..., L, L) -> (...)."""
        s = self._check_spins(s)
        bonds = s * (torch.roll(s, -1, -1) + torch.roll(s, -1, -2))  # (..., L, L) right + down
        return -self.J * bonds.sum((-2, -1)) - self.h * s.sum((-2, -1))

    def _require_exact(self, what: str):
        if self.L > MAX_EXACT_L:
            raise ValueError(f"{what} needs exact enumeration of 2^(L*L) states, which is limited to "
                             f"L <= {MAX_EXACT_L}; got L={self.L} (2^{self.L ** 2} states). "
                             "Use sample(n) and Monte Carlo averages for larger lattices.")

    def all_states(self) -> torch.Tensor:
        """All :math:`2^{L^2}` configurations, float64 (2^(L*L), L, L); state ``k`` has
        :math:`s_i = 2\\,\\text{bit}_i(k) - 1` with sites numbered row by row (cached)."""
        self._require_exact("all_states()")
        if self._states is None:
            n_sites = self.L * self.L
            index = torch.arange(2 ** n_sites, dtype=torch.int64)
            bits = (index[:, None] >> torch.arange(n_sites)) & 1  # (2^D, D), D = L^2 sites
            self._states = (2.0 * bits - 1.0).to(torch.float64).view(-1, self.L, self.L)
            self._energies = self.energy(self._states)  # (2^D,)
        return self._states

    def state_index(self, s: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`all_states`: the int64 index (...) of each configuration in ``s``."""
        s = self._check_spins(s)
        bits = ((s.flatten(-2) + 1) / 2).long()  # (..., D)
        return (bits << torch.arange(self.L * self.L, device=s.device)).sum(-1)

    def _log_weights(self) -> torch.Tensor:
        self.all_states()
        return -self.beta * self._energies  # (2^D,) float64

    def log_partition(self) -> float:
        r""":math:`\log Z = \log\sum_s e^{-\beta E(s)}` by enumeration (logsumexp, float64)."""
        return float(torch.logsumexp(self._log_weights(), 0))

    def probabilities(self) -> torch.Tensor:
        """:math:`p(s)` of every state of :meth:`all_states`, float64 (2^(L*L),)."""
        return torch.softmax(self._log_weights(), 0)

    def log_prob(self, s: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(s) = -\beta E(s) - \log Z`, float64, shape (...) for ``s`` (..., L, L)."""
        self._require_exact("log_prob(s)")
        return -self.beta * self.energy(self._check_spins(s).to(torch.float64)) - self.log_partition()

    def entropy(self) -> float:
        r"""Gibbs entropy :math:`H(p) = -\sum_s p(s)\log p(s) = \log Z + \beta\langle E\rangle` in nats."""
        return self.log_partition() + self.beta * float(self.probabilities() @ self._energies)

    def mean_energy(self) -> float:
        r""":math:`\langle E\rangle / L^2 = -\frac{1}{L^2}\,\partial_\beta \log Z`, exact."""
        return float(self.probabilities() @ self._energies) / self.L ** 2

    def mean_abs_magnetization(self) -> float:
        r""":math:`\langle|m|\rangle = \langle|M|\rangle / L^2` with :math:`M = \sum_i s_i`, exact."""
        return float(self.probabilities() @ magnetization(self.all_states()).abs())

    def transition_matrix(self, rule: str = "metropolis", schedule: str = "single_site") -> torch.Tensor:
        r"""Exact transition matrix :math:`K_{ab} = K(a\to b)` (float64, rows sum to 1) of the
        single-site updates and of sweeps built from them, for :math:`L \le 3`.

        Let :math:`K^{(i)}` propose flipping site :math:`i` and accept with ``rule``; each
        :math:`K^{(i)}` obeys detailed balance, eq. ch3-eq-detailed-balance.

        * ``"single_site"``: :func:`single_site_update` (site uniform),
          :math:`K = \frac{1}{L^2}\sum_i K^{(i)}`; reversible (a mixture of reversible kernels).
        * ``"sweep"``: :func:`metropolis_sweep`. Odd :math:`L`: :math:`K^{L^2}`, a power of one
          reversible kernel, hence itself reversible. Even :math:`L`: the product of the lazy
          site kernels :math:`\frac12(1 + K^{(i)})` in the checkerboard order (black, white,
          black, white), which leaves :math:`\pi` stationary (eq. ch3-eq-stationary) but does
          not obey detailed balance.
        * ``"sequential"``: a deterministic-order (systematic-scan) sweep
          :math:`K^{(0)} K^{(1)} \cdots K^{(L^2 - 1)}`, sites row by row. Stationary but not
          reversible: its time reversal is the same sweep in the opposite order. No sampler
          here uses it; chapter 3 shows it as a chain that is stationary without detailed balance."""
        schedules = ("single_site", "sweep", "sequential")
        if rule not in ACCEPTANCE_RULES or schedule not in schedules:
            raise ValueError(f"rule must be one of {list(ACCEPTANCE_RULES)} and schedule one of {list(schedules)}, "
                             f"got rule={rule!r}, schedule={schedule!r}")
        if self.L > 3:
            raise ValueError(f"transition_matrix() is limited to L <= 3 (512 states); got L={self.L}")
        states, n_sites = self.all_states(), self.L * self.L
        index = torch.arange(states.shape[0])
        site_kernels = []  # K^(i): propose flipping site i, accept with `rule`
        for site in range(n_sites):
            flipped = index ^ (1 << site)  # flipping spin `site` toggles its bit
            accept = ACCEPTANCE_RULES[rule](-self.beta * (self._energies[flipped] - self._energies))
            kernel = torch.diag(1.0 - accept)
            kernel[index, flipped] = accept
            site_kernels.append(kernel)
        identity = torch.eye(index.numel(), dtype=torch.float64)
        if schedule == "single_site":
            return torch.stack(site_kernels).mean(0)
        if schedule == "sequential":
            result = identity
            for kernel in site_kernels:
                result = result @ kernel
            return result
        if self.L % 2:
            return torch.linalg.matrix_power(torch.stack(site_kernels).mean(0), n_sites)
        colour = [(site // self.L + site % self.L) % 2 for site in range(n_sites)]
        result = identity
        for half_step in (0, 1, 0, 1):  # lazy checkerboard: each site proposes with probability 1/2
            for site in (i for i in range(n_sites) if colour[i] == half_step):
                result = result @ (0.5 * (identity + site_kernels[site]))
        return result

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, method: str = "auto", burn_in: int | None = None, thin: int | None = None,
               generator=None, seed=None, progress: bool = False, n_chains: int | None = None,
               device=None) -> torch.Tensor:
        r"""``n`` configurations, float ``(n, L, L)`` of :math:`\pm 1`.

        ``method``: ``"exact"`` (:math:`L \le 4`, independent draws from :meth:`probabilities`),
        ``"metropolis"`` / ``"heat_bath"`` (sweeps of :func:`metropolis_sweep`), ``"wolff"``
        (one :func:`wolff_update` per step; needs :math:`h = 0`, :math:`J > 0`) or ``"auto"``:
        a Metropolis sweep per step, followed by a Wolff update when :math:`h = 0`, :math:`J > 0` and
        :math:`|T - T_c| < 0.5` (where single-spin moves slow down critically).

        MCMC runs ``n_chains`` independent chains (default ``min(n, 256)``); chains start random,
        or ordered for :math:`J > 0`, :math:`T < T_c` (along :math:`h`, or with a random sign per
        chain when :math:`h = 0`, which is exact by the :math:`s\to-s` symmetry). Unless given,
        ``burn_in`` and ``thin`` come from a pilot run: the integrated autocorrelation time
        :math:`\tau` of :math:`E`, :math:`|m|` and, when :math:`h \ne 0`, :math:`m` (the largest;
        with a field, tunnelling between the phases is the slowest mode) is measured over at least
        :math:`50\tau` steps, all of which count as burn-in, and ``thin`` :math:`= \lceil 2\tau\rceil`
        (neighbours then correlate by about :math:`e^{-4}`). Output ``k`` is chain ``k % n_chains``
        at its ``k // n_chains``-th kept step; :attr:`sampling_info` records the choices.
        When the model is uniform (:math:`\beta J = \beta h = 0`) every method draws exactly.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        methods = ("auto", "metropolis", "heat_bath", "wolff", "exact")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}, got {method!r}")
        for name, value in (("burn_in", burn_in), ("thin", thin), ("n_chains", n_chains)):
            minimum = 0 if name == "burn_in" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ValueError(f"{name} must be None or an int >= {minimum}, got {value!r}")
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        g = make_generator(seed, generator, device=device)
        dtype = torch.get_default_dtype()
        if method == "exact":
            index = torch.multinomial(self.probabilities().to(device), n, replacement=True, generator=g)
            self.sampling_info = SamplingInfo(method, n, 0, 1, 1.0)
            return self.all_states().to(device)[index].to(dtype)
        if method == "wolff" and not (self.h == 0 and self.J > 0):
            raise ValueError(f"Wolff cluster updates need h = 0 and J > 0, got h={self.h}, J={self.J}; "
                             "use method='metropolis'")
        n_chains = min(n, 256) if n_chains is None else n_chains
        per_chain = math.ceil(n / n_chains)
        shape = (n_chains, self.L, self.L)
        if self.beta * self.J == 0 and self.beta * self.h == 0:  # uniform: independent fair coins
            self.sampling_info = SamplingInfo(method, n, 0, 1, 1.0)
            return (2.0 * torch.randint(2, (n, self.L, self.L), generator=g, device=device) - 1.0).to(dtype)

        use_wolff = method == "wolff" or (method == "auto" and self.h == 0 and self.J > 0
                                          and abs(self.temperature - self.J * CRITICAL_TEMPERATURE) < 0.5)
        rule = "heat_bath" if method == "heat_bath" else "metropolis"

        def step(s):
            if method != "wolff":
                s = metropolis_sweep(s, self.beta, self.J, self.h, g, rule)
            return wolff_update(s, self.beta, self.J, g) if use_wolff else s

        if self.J > 0 and self.temperature < self.J * CRITICAL_TEMPERATURE:  # ordered start
            sign = (torch.full((n_chains, 1, 1), math.copysign(1.0, self.h), device=device) if self.h != 0
                    else 2.0 * torch.randint(2, (n_chains, 1, 1), generator=g, device=device) - 1.0)
            s = sign.to(dtype).expand(shape).clone()
        else:
            s = (2.0 * torch.randint(2, shape, generator=g, device=device) - 1.0).to(dtype)

        bar = progress_bar(desc=f"Ising {method}", disable=not progress)
        tau = math.nan
        if burn_in is None or thin is None:
            s, tau, pilot_steps = self._pilot(s, step, bar)
            burn_in = pilot_steps if burn_in is None else max(burn_in, pilot_steps)
            thin = max(1, math.ceil(2.0 * tau)) if thin is None else thin
        else:
            pilot_steps = 0
        for _ in range(burn_in - pilot_steps):
            s = step(s)
            bar.update()
        samples = torch.empty((per_chain, *shape), dtype=dtype, device=device)  # (per_chain, chains, L, L)
        for k in range(per_chain):
            for _ in range(thin):
                s = step(s)
                bar.update()
            samples[k] = s
        bar.close()
        self.sampling_info = SamplingInfo(method, n_chains, burn_in, thin, tau)
        return samples.reshape(-1, self.L, self.L)[:n]

    def _pilot(self, s, step, bar, first=100, length=256, max_length=8192):
        """Burn in ``first`` steps, then record E, |m| (and m if h != 0) until the run is >= 50 tau long."""
        for _ in range(first):
            s = step(s)
            bar.update()
        observables = []  # (E, |m|, m) of every chain after every step
        while True:
            while len(observables) < length:
                s = step(s)
                bar.update()
                m = magnetization(s)
                observables.append(torch.stack([self.energy(s), m.abs(), m]))
            series = torch.stack(observables)  # (steps, 3, chains)
            # with h != 0 the two phases have different weights and the slowest mode (tunnelling
            # between them) shows in m but hardly in E; with h = 0 it is handled by symmetry
            tau = max(integrated_autocorrelation_time(series[:, k]) for k in range(3 if self.h else 2))
            if length >= 50 * tau or length >= max_length:
                break
            length *= 2
        if length < 50 * tau:
            warnings.warn(f"pilot run of {length} steps is shorter than 50 tau (tau ~ {tau:.0f}); "
                          "the autocorrelation time and hence burn_in/thin may be underestimated")
        return s, tau, first + length
