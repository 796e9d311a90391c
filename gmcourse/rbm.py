r"""Restricted Boltzmann machines (chapter 6, ``book/06_energy_based_models.md``).

An RBM couples :math:`D` visible units :math:`v` and :math:`n_h` hidden units :math:`h` through the
energy

.. math::  E(v, h) = -a^\top v - b^\top h - h^\top W v, \qquad
           P_\theta(v, h) = e^{-E(v, h)} / Z,

with weights :math:`W` (``weight``, shape ``(n_h, D)``), visible biases :math:`a` (``visible_bias``)
and hidden biases :math:`b` (``hidden_bias``). Units are either *spins* :math:`\pm 1` (the physics
convention, ``"spin"``) or *bits* :math:`\{0, 1\}` (the machine-learning convention, ``"binary"``),
chosen separately for each layer. There are no couplings inside a layer, so the hidden units are
independent given :math:`v` and can be summed out one at a time: the free energy
(eq. ch6-eq-free-energy)

.. math::  F(v) = -\log\sum_h e^{-E(v, h)} = -a^\top v - \sum_j \log\sum_{h_j} e^{h_j x_j},
           \qquad x_j = b_j + (W v)_j,

where :math:`\log\sum_{h_j\in\{0,1\}} e^{h_j x} = \mathrm{softplus}(x) = \log(1 + e^x)` and
:math:`\log\sum_{h_j=\pm1} e^{h_j x} = \log 2\cosh x`. Then :math:`P_\theta(v) = e^{-F(v)}/Z`.
The same conditional independence gives the block Gibbs sampler :math:`v \to h \to v'`:
:math:`p(h_j = 1 \mid v) = \sigma(x_j)` for bits and :math:`p(h_j = +1 \mid v) = \sigma(2x_j)` for spins.

* :meth:`RBM.log_partition` is exact: it enumerates the *smaller* layer (up to
  :data:`MAX_EXACT_BITS` units, i.e. :math:`2^{22}` terms), summing the other one out in closed form.
  Larger machines get a :class:`ValueError` that points to :func:`ais_log_partition`, annealed
  importance sampling with an error bar.
* :meth:`RBM.loss` is the contrastive-divergence surrogate :math:`\overline{F(x)} - \overline{F(v^-)}`
  whose gradient is minus the CD-k / persistent-CD estimate of the log-likelihood gradient.
* Every computation goes through :meth:`RBM.couplings`, so a subclass can tie weights:
  :class:`TranslationInvariantRBM` shares one filter per hidden channel across the translations of
  a periodic lattice (a convolutional RBM), which represents the nearest-neighbour Ising model
  exactly with one hidden spin per bond.

States are numbered as in :meth:`gmcourse.ising.IsingModel.all_states`: configuration ``k`` of
``n`` units has unit ``i`` on iff bit ``i`` of ``k`` is set (:func:`all_configurations`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gmcourse.divergences import Estimate
from gmcourse.protocol import GenerativeModel
from gmcourse.utils import make_generator

__all__ = ["MAX_EXACT_BITS", "UNIT_TYPES", "RBM", "TranslationInvariantRBM", "all_configurations",
           "ais_log_partition"]

UNIT_TYPES = ("spin", "binary")
MAX_EXACT_BITS = 22  # log_partition enumerates at most 2^22 configurations of the smaller layer
EXACT_SAMPLING_BITS = 20  # sample(method="auto") draws exactly when the smaller layer has <= 20 units
_CHUNK_BITS = 14  # enumerate 2^14 configurations at a time: memory stays O(2^14 x layer size)


# ----------------------------------------------------------------------------- unit conventions
def _log_sum_over_unit(x: torch.Tensor, units: str) -> torch.Tensor:
    r""":math:`\log\sum_u e^{u x}` over the values of one unit: softplus for bits, log 2cosh for spins."""
    if units == "binary":
        return F.softplus(x)
    return torch.logaddexp(x, -x)  # log(e^x + e^-x) = log 2cosh x, stable for large |x|


def _prob_on(x: torch.Tensor, units: str) -> torch.Tensor:
    """Probability that a unit with input ``x`` is on (1 for bits, +1 for spins)."""
    return torch.sigmoid(x) if units == "binary" else torch.sigmoid(2.0 * x)


def _from_bits(bits: torch.Tensor, units: str) -> torch.Tensor:
    return bits if units == "binary" else 2.0 * bits - 1.0


def all_configurations(n: int, units: str = "spin", start: int = 0, stop: int | None = None,
                       dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    r"""Configurations ``start, ..., stop - 1`` (default: all :math:`2^n`) of ``n`` units, shape
    ``(stop - start, n)``: unit ``i`` of configuration ``k`` is on iff bit ``i`` of ``k`` is set
    (:math:`\pm 1` for ``"spin"``, :math:`\{0,1\}` for ``"binary"``), as in
    :meth:`gmcourse.ising.IsingModel.all_states`."""
    if units not in UNIT_TYPES:
        raise ValueError(f"units must be one of {UNIT_TYPES}, got {units!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 62:
        raise ValueError(f"n must be an int in [0, 62], got {n!r}")
    stop = 2 ** n if stop is None else stop
    index = torch.arange(start, stop, dtype=torch.int64, device=device)
    bits = (index[:, None] >> torch.arange(n, device=device)) & 1  # (stop - start, n)
    return _from_bits(bits.to(dtype or torch.get_default_dtype()), units)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- the machine
class RBM(GenerativeModel):
    r"""Restricted Boltzmann machine with ``n_visible`` (:math:`D`) and ``n_hidden`` (:math:`n_h`) units.

    ``visible`` / ``hidden``: ``"spin"`` (units :math:`\pm 1`) or ``"binary"`` (:math:`\{0,1\}`).
    ``bias=False`` fixes :math:`a = b = 0` (they become zero buffers): with spin units on both
    layers the model is then exactly invariant under the global flip :math:`v \to -v`.
    Weights start as :math:`\mathcal N(0, \text{init_std}^2)` drawn from ``seed``.

    Training (:meth:`loss`) is configured by attributes that may be changed at any time:

    * ``k`` (default 1): Gibbs steps per negative sample (CD-k / PCD-k);
    * ``persistent`` (default False): False starts the negative chains at the data (CD);
      True keeps ``n_chains`` chains in the model between calls (persistent CD, PCD), stored
      in the buffer ``chains`` (saved with the model); ``reset_chains()`` forgets them;
    * ``n_chains`` (default None: the size of the first batch): number of persistent chains.
    """

    log_prob_kind = "exact"

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "spin", hidden: str = "binary",
                 seed: int | None = None, bias: bool = True, init_std: float = 0.01, k: int = 1,
                 persistent: bool = False, n_chains: int | None = None):
        super().__init__()
        self.n_visible = _check_int("n_visible", n_visible, 1)
        self.n_hidden = _check_int("n_hidden", n_hidden, 1)
        for name, units in (("visible", visible), ("hidden", hidden)):
            if units not in UNIT_TYPES:
                raise ValueError(f"{name} must be one of {UNIT_TYPES} (units +-1 or {{0, 1}}), got {units!r}")
        if not (isinstance(init_std, (int, float)) and init_std >= 0):
            raise ValueError(f"init_std must be a number >= 0, got {init_std!r}")
        self.visible, self.hidden, self.bias = visible, hidden, bool(bias)
        self.k = _check_int("k", k, 1)
        self.persistent = bool(persistent)
        self.n_chains = None if n_chains is None else _check_int("n_chains", n_chains, 1)
        self.register_buffer("chains", None)
        self._generator = None
        generator = make_generator(seed)
        self._seed = int(torch.randint(2**62, (1,), generator=generator))  # seeds the training chains
        self._init_parameters(generator, float(init_std))

    def _init_parameters(self, generator: torch.Generator, init_std: float):
        """Create the parameters (a subclass with tied weights overrides this and :meth:`couplings`)."""
        self.weight = nn.Parameter(init_std * torch.randn(self.n_hidden, self.n_visible, generator=generator))
        if self.bias:
            self.visible_bias = nn.Parameter(torch.zeros(self.n_visible))
            self.hidden_bias = nn.Parameter(torch.zeros(self.n_hidden))
        else:
            self.register_buffer("visible_bias", torch.zeros(self.n_visible))
            self.register_buffer("hidden_bias", torch.zeros(self.n_hidden))

    def extra_repr(self) -> str:
        return (f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible={self.visible!r}, "
                f"hidden={self.hidden!r}, bias={self.bias}, k={self.k}, persistent={self.persistent}")

    def couplings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""The energy's parameters :math:`(W, a, b)`, shapes ``(n_h, D)``, ``(D,)``, ``(n_h,)``.
        Every other method reads them from here."""
        return self.weight, self.visible_bias, self.hidden_bias

    # ------------------------------------------------------------------ checks
    def _check(self, x, n: int, units: str, name: str) -> torch.Tensor:
        W = self.couplings()[0]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {n}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != n:
            raise ValueError(f"{name} must have shape (batch, {n}), got {tuple(x.shape)}")
        allowed = (0.0, 1.0) if units == "binary" else (-1.0, 1.0)
        if not ((x == allowed[0]) | (x == allowed[1])).all():
            raise ValueError(f"{name} holds {units} units, whose values are {allowed[0]:g} or {allowed[1]:g}; "
                             f"got values {torch.unique(x)[:6].tolist()}")
        return x.to(W.dtype)

    def _check_visible(self, v):
        return self._check(v, self.n_visible, self.visible, "v")

    def _check_hidden(self, h):
        return self._check(h, self.n_hidden, self.hidden, "h")

    def _generator_for(self, device) -> torch.Generator:
        """The training chains' generator (seeded from the constructor's seed), on ``device``."""
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = make_generator(self._seed, device=device)
        return self._generator

    def __getstate__(self):  # a torch.Generator does not pickle: torch.save drops it
        state = self.__dict__.copy()
        state["_generator"] = None
        return state

    # ------------------------------------------------------------------ energy and free energies
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r""":math:`E(v, h) = -a^\top v - b^\top h - h^\top W v` for ``v`` (n, D), ``h`` (n, n_h) -> (n,)."""
        v, h = self._check_visible(v), self._check_hidden(h)
        if v.shape[0] != h.shape[0]:
            raise ValueError(f"v and h must have the same batch size, got {v.shape[0]} and {h.shape[0]}")
        W, a, b = self.couplings()
        return -(v @ a) - (h @ b) - ((h @ W) * v).sum(-1)

    @staticmethod
    def _free_energy(v, W, a, b, hidden: str) -> torch.Tensor:
        x = v @ W.T + b  # (n, n_h): input of each hidden unit
        return -(v @ a) - _log_sum_over_unit(x, hidden).sum(-1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        r"""Free energy of the visible units (eq. ch6-eq-free-energy), ``v`` (n, D) -> (n,):

        .. math::  F(v) = -\log\sum_h e^{-E(v,h)} = -a^\top v - \sum_j \log\sum_{h_j} e^{h_j (b_j + (Wv)_j)},

        :math:`\log(1 + e^{x})` (softplus) for ``{0, 1}`` hidden units, :math:`\log 2\cosh x` for ``+-1``.
        """
        return self._free_energy(self._check_visible(v), *self.couplings(), self.hidden)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`F(h) = -\log\sum_v e^{-E(v,h)}` (the visible units summed out), ``h`` (n, n_h) -> (n,)."""
        W, a, b = self.couplings()
        return self._free_energy(self._check_hidden(h), W.T, b, a, self.visible)

    # ------------------------------------------------------------------ conditionals and Gibbs
    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`p(h_j = \text{on} \mid v)` (on = 1 for bits, +1 for spins), ``v`` (n, D) -> (n, n_h)."""
        W, _, b = self.couplings()
        return _prob_on(self._check_visible(v) @ W.T + b, self.hidden)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`p(v_i = \text{on} \mid h)`, ``h`` (n, n_h) -> (n, D)."""
        W, a, _ = self.couplings()
        return _prob_on(self._check_hidden(h) @ W + a, self.visible)

    @staticmethod
    def _draw(probs: torch.Tensor, units: str, generator) -> torch.Tensor:
        u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
        return _from_bits((u < probs).to(probs.dtype), units)

    def _gibbs(self, v, W, a, b, generator, k: int) -> torch.Tensor:
        """``k`` block Gibbs steps v -> h -> v' with couplings (W, a, b), no checks (hot loop)."""
        for _ in range(k):
            h = self._draw(_prob_on(v @ W.T + b, self.hidden), self.hidden, generator)  # (n, n_h)
            v = self._draw(_prob_on(h @ W + a, self.visible), self.visible, generator)  # (n, D)
        return v

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of :math:`h \\sim p(h \\mid v)` per row of ``v`` (n, D) -> (n, n_h)."""
        return self._draw(self.hidden_probs(v), self.hidden, generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of :math:`v \\sim p(v \\mid h)` per row of ``h`` (n, n_h) -> (n, D)."""
        return self._draw(self.visible_probs(h), self.visible, generator)

    def gibbs_step(self, v: torch.Tensor, generator: torch.Generator | None = None, k: int = 1) -> torch.Tensor:
        r"""``k`` block Gibbs steps :math:`v \to h \sim p(h|v) \to v' \sim p(v|h)`, ``v`` (n, D) -> (n, D).
        Each step leaves :math:`P_\theta(v)` invariant."""
        _check_int("k", k, 0)
        with torch.no_grad():
            return self._gibbs(self._check_visible(v), *self.couplings(), generator, k)

    # ------------------------------------------------------------------ exact normalisation
    def _enumerated_layer(self) -> str:
        """'hidden' or 'visible': the smaller layer, the one :meth:`log_partition` enumerates."""
        return "hidden" if self.n_hidden <= self.n_visible else "visible"

    def _layer_log_weights(self, start: int, stop: int):
        """Configurations ``start..stop-1`` of the smaller layer and their log-weights :math:`-F`."""
        W, a, b = self.couplings()
        if self._enumerated_layer() == "hidden":
            h = all_configurations(self.n_hidden, self.hidden, start, stop, W.dtype, W.device)  # (chunk, n_h)
            return h, -self._free_energy(h, W.T, b, a, self.visible)
        v = all_configurations(self.n_visible, self.visible, start, stop, W.dtype, W.device)  # (chunk, D)
        return v, -self._free_energy(v, W, a, b, self.hidden)

    def log_partition(self) -> torch.Tensor:
        r"""Exact :math:`\log Z` (a 0-d tensor, differentiable), summing :math:`e^{-F}` over every
        configuration of the smaller layer (the other layer is summed out in closed form), in chunks
        of :math:`2^{14}`. Feasible while the smaller layer has at most :data:`MAX_EXACT_BITS` = 22
        units; beyond that a :class:`ValueError` (use :func:`ais_log_partition`)."""
        n_small = min(self.n_visible, self.n_hidden)
        if n_small > MAX_EXACT_BITS:
            raise ValueError(
                f"exact log_partition() enumerates the smaller layer, here {n_small} units = 2^{n_small} terms, "
                f"more than the limit of 2^{MAX_EXACT_BITS}; estimate log Z with "
                "gmcourse.rbm.ais_log_partition(rbm, n_chains, n_temperatures) instead")
        total, chunk = 2 ** n_small, 2 ** _CHUNK_BITS
        parts = [torch.logsumexp(self._layer_log_weights(start, min(start + chunk, total))[1], 0)
                 for start in range(0, total, chunk)]
        return torch.logsumexp(torch.stack(parts), 0)

    def log_prob(self, v: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log P_\theta(v) = -F(v) - \log Z`, ``v`` (n, D) -> (n,) (see :meth:`log_partition`)."""
        return -self.free_energy(v) - self.log_partition()

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None,
               method: str = "auto", burn_in: int = 1000, thin: int = 10, n_chains: int | None = None,
               init: torch.Tensor | None = None) -> torch.Tensor:
        r"""``n`` visible configurations, ``(n, D)``.

        ``method="exact"``: independent draws. The smaller layer is drawn from its exact marginal
        (enumerated as in :meth:`log_partition`), then the other one from its conditional; if the
        hidden layer is the smaller one, :math:`h \sim P_\theta(h)` then :math:`v \sim p(v \mid h)`.
        Possible while the smaller layer has at most 20 units.

        ``method="gibbs"``: ``n_chains`` (default ``min(n, 1000)``) block Gibbs chains started at
        ``init`` (a tensor of shape ``(n_chains, D)``) or at uniformly random units; after
        ``burn_in`` (default 1000) steps, every ``thin``-th (default 10) state of every chain is kept.
        Output ``i`` is chain ``i % n_chains`` at its ``i // n_chains``-th kept state. The draws are
        exact only in the limit of long burn-in and are correlated along a chain; how long is long
        enough depends on the weights (a machine with strong couplings mixes slowly).

        ``method="auto"`` (default): ``"exact"`` when possible, else ``"gibbs"``.
        """
        _check_int("n", n, 1)
        methods = ("auto", "exact", "gibbs")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}, got {method!r}")
        _check_int("burn_in", burn_in, 0)
        _check_int("thin", thin, 1)
        W, a, b = self.couplings()
        g = make_generator(seed, generator, device=W.device)
        n_small = min(self.n_visible, self.n_hidden)
        if method == "exact" and n_small > EXACT_SAMPLING_BITS:
            raise ValueError(f"exact sampling enumerates the smaller layer (2^{n_small} configurations), "
                             f"limited to 2^{EXACT_SAMPLING_BITS}; use method='gibbs'")
        with torch.no_grad():
            if method == "exact" or (method == "auto" and n_small <= EXACT_SAMPLING_BITS and init is None):
                log_weights = torch.cat([self._layer_log_weights(start, min(start + 2 ** _CHUNK_BITS, 2 ** n_small))[1]
                                         for start in range(0, 2 ** n_small, 2 ** _CHUNK_BITS)])
                index = torch.multinomial(torch.softmax(log_weights.double(), 0), n, replacement=True, generator=g)
                if self._enumerated_layer() == "visible":
                    return all_configurations(self.n_visible, self.visible, dtype=W.dtype, device=W.device)[index]
                h = _from_bits(((index[:, None] >> torch.arange(self.n_hidden, device=W.device)) & 1).to(W.dtype),
                               self.hidden)  # (n, n_h): configuration number -> units
                return self._draw(_prob_on(h @ W + a, self.visible), self.visible, g)
            n_chains = min(n, 1000) if n_chains is None else _check_int("n_chains", n_chains, 1)
            if init is None:
                bits = torch.randint(2, (n_chains, self.n_visible), generator=g, device=W.device)
                v = _from_bits(bits.to(W.dtype), self.visible)
            else:
                v = self._check_visible(init)
                if v.shape[0] != n_chains:
                    raise ValueError(f"init must have shape ({n_chains}, {self.n_visible}) (one row per chain), "
                                     f"got {tuple(v.shape)}")
            v = self._gibbs(v, W, a, b, g, burn_in)
            kept = []
            for _ in range(math.ceil(n / n_chains)):
                v = self._gibbs(v, W, a, b, g, thin)
                kept.append(v)
            return torch.cat(kept)[:n]

    # ------------------------------------------------------------------ training
    def reset_chains(self):
        """Forget the persistent chains (the next :meth:`loss` with ``persistent=True`` starts new ones)."""
        self.chains = None

    def negative_samples(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The negative phase's samples :math:`v^-` for a data batch ``x`` (n, D): ``k`` Gibbs steps
        from ``x`` (CD-k) or from the persistent chains (PCD-k, which are then advanced in place)."""
        x = self._check_visible(x)
        W, a, b = self.couplings()
        g = generator if generator is not None else self._generator_for(W.device)
        with torch.no_grad():
            if not self.persistent:
                return self._gibbs(x, W, a, b, g, self.k)
            if self.chains is None or self.chains.shape[1] != self.n_visible:
                n_chains = self.n_chains or x.shape[0]
                bits = torch.randint(2, (n_chains, self.n_visible), generator=g, device=W.device)
                self.chains = _from_bits(bits.to(W.dtype), self.visible)
            self.chains = self._gibbs(self.chains.to(W.dtype), W, a, b, g, self.k)
            return self.chains

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Contrastive-divergence surrogate :math:`\frac1n\sum_i F(x_i) - \frac1m\sum_j F(v^-_j)`.

        :math:`v^-` (:meth:`negative_samples`, detached) are CD-k or PCD-k samples. The gradient of
        this scalar is :math:`-\big(\mathbb E_\text{data}[-\nabla F] - \mathbb E_{v^-}[-\nabla F]\big)`,
        the negative of the log-likelihood gradient with the model's expectation replaced by an
        average over :math:`v^-`, so gradient descent on it is CD / PCD learning. Its *value* is
        not the NLL (the surrogate has no :math:`\log Z`): score a model with :meth:`log_prob`.
        """
        v_negative = self.negative_samples(x, generator)  # (m, D), no gradient
        return self.free_energy(x).mean() - self.free_energy(v_negative).mean()


# ----------------------------------------------------------------------------- weight sharing
class TranslationInvariantRBM(RBM):
    r"""Convolutional RBM on a periodic ``L x L`` lattice: ``n_channels`` filters, each translated
    to all :math:`L^2` positions, so :math:`n_h = n_\text{channels} L^2`. Spin units by default and
    no biases, so the model is invariant under every translation and (with spin hidden units) under
    the global flip :math:`v \to -v`.

    Hidden unit :math:`(c, p)` (channel :math:`c`, position :math:`p = (p_1, p_2)`) couples to
    site :math:`i` with :math:`W_{(c,p), i} = K_c[(i - p) \bmod L]`, where :math:`K_c` is filter
    ``filters[c]``. Hidden units are ordered channel by channel, positions row by row. The filters
    have size ``kernel_size`` (default ``L``: every site); a smaller kernel ``(k, k)`` is zero-padded
    to ``(L, L)``, so each hidden unit sees only a ``k x k`` patch (a local receptive field).

    A nearest-neighbour Ising model at inverse temperature :math:`\beta` is exactly of this form:
    with spin hidden units, a unit that sees only the bond :math:`(i, j)` with weight :math:`w`
    contributes :math:`\log 2\cosh(w(s_i + s_j))` to :math:`-F`, which is :math:`\log 2\cosh 2w`
    for aligned spins and :math:`\log 2` for opposite ones: a bond energy :math:`-J s_i s_j` with
    :math:`\beta J = \frac12\log\cosh 2w` (up to a constant). Two channels, one with
    :math:`K = w` at offsets (0, 0) and (0, 1) (horizontal bonds) and one at (0, 0) and (1, 0)
    (vertical bonds), with :math:`w = \frac12\operatorname{arccosh} e^{2\beta J}`
    (:meth:`ising_bond_weight`), give every bond once.
    """

    def __init__(self, L: int, n_channels: int, visible: str = "spin", hidden: str = "spin",
                 seed: int | None = None, init_std: float = 0.01, kernel_size: int | None = None, **training):
        self.L = _check_int("L", L, 2)
        self.n_channels = _check_int("n_channels", n_channels, 1)
        self.kernel_size = L if kernel_size is None else _check_int("kernel_size", kernel_size, 1)
        if self.kernel_size > L:
            raise ValueError(f"kernel_size must be <= L = {L}, got {kernel_size}")
        super().__init__(L * L, n_channels * L * L, visible=visible, hidden=hidden, seed=seed, bias=False,
                         init_std=init_std, **training)
        rows, cols = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()  # (L^2,) coordinates of sites / positions
        offset = ((rows[None, :] - rows[:, None]) % L) * L + (cols[None, :] - cols[:, None]) % L  # (pos, site)
        self.register_buffer("_offset", offset, persistent=False)

    def _init_parameters(self, generator: torch.Generator, init_std: float):
        k = self.kernel_size
        self.filters = nn.Parameter(init_std * torch.randn(self.n_channels, k, k, generator=generator))
        self.register_buffer("visible_bias", torch.zeros(self.n_visible))
        self.register_buffer("hidden_bias", torch.zeros(self.n_hidden))

    def couplings(self):
        pad = self.L - self.kernel_size
        flat = F.pad(self.filters, (0, pad, 0, pad)).flatten(1)  # (channels, L^2): kernel in the top-left corner
        W = flat[:, self._offset].reshape(self.n_hidden, self.n_visible)  # (channels * L^2 positions, L^2 sites)
        return W, self.visible_bias.to(W.dtype), self.hidden_bias.to(W.dtype)

    @staticmethod
    def ising_bond_weight(beta_J: float) -> float:
        r"""The weight :math:`w = \frac12\operatorname{arccosh} e^{2\beta J}` of a bond's hidden spin:
        :math:`\log\cosh 2w = 2\beta J`."""
        if not beta_J >= 0:
            raise ValueError(f"beta * J must be >= 0 (a ferromagnet), got {beta_J!r}")
        return 0.5 * math.acosh(math.exp(2.0 * beta_J))

    @classmethod
    def ising(cls, L: int, beta: float, J: float = 1.0, dtype: torch.dtype = torch.float64) -> "TranslationInvariantRBM":
        r"""The RBM whose marginal :math:`P_\theta(v)` *is* the periodic Ising model
        (eq. ch3-eq-ising at :math:`h = 0`): two channels of 2x2 filters, horizontal and vertical
        bonds. Parameters in ``dtype`` (float64 by default, so the identity holds to rounding)."""
        rbm = cls(L, 2, init_std=0.0, kernel_size=2).to(dtype)
        w = cls.ising_bond_weight(beta * J)
        with torch.no_grad():
            rbm.filters.zero_()
            rbm.filters[0, 0, 0] = rbm.filters[0, 0, 1] = w  # horizontal bond (0,0)-(0,1)
            rbm.filters[1, 0, 0] = rbm.filters[1, 1, 0] = w  # vertical bond (0,0)-(1,0)
        return rbm


# ----------------------------------------------------------------------------- annealed importance sampling
def ais_log_partition(rbm: RBM, n_chains: int, n_temperatures: int, generator: torch.Generator | None = None,
                      seed: int | None = None) -> Estimate:
    r"""Estimate :math:`\log Z` of ``rbm`` by annealed importance sampling (AIS) with an error bar.

    Path: :math:`P_\beta(v, h) \propto e^{-E_\beta(v,h)}` with the weights scaled,
    :math:`W \to \beta W`, for :math:`\beta_0 = 0 < \beta_1 < \dots < \beta_K = 1` evenly spaced
    (``n_temperatures`` :math:`= K`). The base :math:`\beta = 0` has independent units with the
    RBM's biases, so :math:`\log Z_0 = \sum_i \log\sum_{v_i} e^{a_i v_i} + \sum_j \log\sum_{h_j} e^{b_j h_j}`
    is closed form and :math:`v \sim P_0` is exact. Each of ``n_chains`` independent chains starts
    there and accumulates :math:`\log w = \sum_{k=1}^{K} [F_{\beta_{k-1}}(v_{k-1}) - F_{\beta_k}(v_{k-1})]`,
    where :math:`v_k` follows from :math:`v_{k-1}` by one block Gibbs step that leaves
    :math:`P_{\beta_k}` invariant. Then :math:`\mathbb E[w] = Z / Z_0` and

    .. math::  \widehat{\log Z} = \log Z_0 + \log \bar w, \qquad
               \mathrm{se} = \frac{\mathrm{std}(w)}{\sqrt{n}\,\bar w}

    (delta method: the standard error of :math:`\bar w` divided by :math:`\bar w`), both computed
    from :math:`w_i / \max_j w_j` so nothing overflows. :math:`\log \bar w` is biased low by about
    :math:`\mathrm{se}^2/2` (Jensen), negligible when the error bar is small. A tiny error bar
    from too few temperatures can still be wrong when the weights are dominated by rare chains:
    check that it is stable when ``n_temperatures`` doubles.
    """
    if not isinstance(rbm, RBM):
        raise TypeError(f"rbm must be a gmcourse.rbm.RBM, got {type(rbm).__name__}")
    _check_int("n_chains", n_chains, 2)
    _check_int("n_temperatures", n_temperatures, 1)
    with torch.no_grad():
        W, a, b = rbm.couplings()
        g = make_generator(seed, generator, device=W.device)
        log_z0 = _log_sum_over_unit(a, rbm.visible).sum() + _log_sum_over_unit(b, rbm.hidden).sum()
        v = RBM._draw(_prob_on(a, rbm.visible).expand(n_chains, -1), rbm.visible, g)  # (chains, D) ~ P_0
        betas = torch.linspace(0.0, 1.0, n_temperatures + 1).tolist()
        log_w = torch.zeros(n_chains, dtype=W.dtype, device=W.device)
        for previous, beta in zip(betas[:-1], betas[1:]):
            log_w += (RBM._free_energy(v, previous * W, a, b, rbm.hidden)
                      - RBM._free_energy(v, beta * W, a, b, rbm.hidden))
            v = rbm._gibbs(v, beta * W, a, b, g, 1)
        log_w = log_w.double()
        shifted = torch.exp(log_w - log_w.max())  # w_i / max w, in (0, 1]
        log_mean = float(log_w.max() + shifted.mean().log())
        stderr = float(shifted.std(correction=1) / (math.sqrt(n_chains) * shifted.mean()))
    return Estimate(float(log_z0) + log_mean, stderr)
