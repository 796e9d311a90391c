r"""Quantum spin chains whose measurement statistics are known exactly (chapters 6 and 11).

Quantum state tomography asks the course's question about a quantum system: given measurement
records :math:`s \in \{-1, +1\}^N` of :math:`N` spins in the :math:`\sigma^z` basis, each drawn
with the Born probability :math:`p(s) = |\psi(s)|^2`, reconstruct the state :math:`\psi`.

For the ground state of the **transverse-field Ising chain**

.. math::  H = -J \sum_{i} \sigma^z_i \sigma^z_{i+1} - h \sum_i \sigma^x_i, \qquad h > 0,

every off-diagonal element of :math:`H` in the :math:`\sigma^z` basis is :math:`-h \le 0`, so by the
Perron--Frobenius theorem the ground state can be chosen with :math:`\psi(s) > 0` for every
:math:`s`. Then :math:`\psi = \sqrt{p}`: learning the measurement distribution *is* learning the
state, and a model :math:`q` defines the state :math:`\phi = \sqrt{q}` with fidelity

.. math::  F = |\langle \psi | \phi \rangle|^2 = \Big(\sum_s \sqrt{p(s)\, q(s)}\Big)^2 .

Everything here is exact for :math:`N \le 16` (a sparse Hamiltonian of size :math:`2^{16}` and
Lanczos diagonalisation with :func:`scipy.sparse.linalg.eigsh`). States follow the bit convention
of :meth:`gmcourse.ising.IsingModel.all_states`: basis state ``k`` has
:math:`s_i = 2\,\mathrm{bit}_i(k) - 1`, and :math:`s_i = +1` means spin ``i`` is up
(:math:`\sigma^z_i = +1`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from gmcourse.divergences import _check_pair
from gmcourse.utils import make_generator

__all__ = [
    "MAX_SPINS",
    "QuantumState",
    "fidelity",
    "ghz_state",
    "sx_expectation",
    "sz_correlation",
    "tfim_free_fermion_energy",
    "tfim_ground_state",
    "tfim_hamiltonian",
    "w_state",
]

MAX_SPINS = 16
BOUNDARIES = ("open", "periodic")


def _check_n_spins(n_spins, smallest: int = 2) -> int:
    if not isinstance(n_spins, int) or isinstance(n_spins, bool) or not smallest <= n_spins <= MAX_SPINS:
        raise ValueError(f"n_spins must be an int in [{smallest}, {MAX_SPINS}] (2^n_spins amplitudes are "
                         f"stored), got {n_spins!r}")
    return n_spins


def _all_states(n_spins: int) -> torch.Tensor:
    index = torch.arange(2 ** n_spins, dtype=torch.int64)
    bits = (index[:, None] >> torch.arange(n_spins)) & 1  # (2^N, N)
    return 2.0 * bits.to(torch.float64) - 1.0


class QuantumState:
    r"""A normalised state :math:`\psi` of ``n_spins`` spins with real, non-negative amplitudes in
    the :math:`\sigma^z` basis, seen through its measurement distribution :math:`p = \psi^2`.

    It follows the ``log_prob`` / ``sample`` part of the course's protocol, like
    :class:`gmcourse.ising.IsingModel`, so a model of measurement records and the truth compare in
    one line.
    """

    log_prob_kind = "exact"

    def __init__(self, amplitudes, name: str = "state", energy: float | None = None):
        psi = torch.as_tensor(amplitudes, dtype=torch.float64).clone()
        n_spins = int(round(np.log2(max(psi.numel(), 1))))
        if psi.dim() != 1 or psi.numel() != 2 ** n_spins or n_spins < 1:
            raise ValueError(f"amplitudes must be a 1-D array of length 2^N, got shape {tuple(psi.shape)}")
        _check_n_spins(n_spins, smallest=1)
        if not torch.isfinite(psi).all() or (psi < 0).any():
            raise ValueError("amplitudes must be finite and non-negative (a state that is positive in the "
                             "sigma^z basis); got negative or non-finite entries")
        norm = float((psi ** 2).sum())
        if abs(norm - 1.0) > 1e-9:
            raise ValueError(f"amplitudes must be normalised (sum of squares 1), got {norm:.12g}")
        self.amplitudes = psi  # (2^N,)
        self.n_spins = n_spins
        self.name = name
        self.energy = energy
        self._states = None

    def __repr__(self):
        energy = "" if self.energy is None else f", energy={self.energy:.10g}"
        return f"QuantumState({self.name}, n_spins={self.n_spins}{energy})"

    def all_states(self) -> torch.Tensor:
        r"""Every configuration, float64 (2^N, N) of :math:`\pm 1`; row ``k`` is basis state ``k``."""
        if self._states is None:
            self._states = _all_states(self.n_spins)
        return self._states

    def _check_spins(self, s) -> torch.Tensor:
        s = torch.as_tensor(s)
        if s.dim() != 2 or s.shape[-1] != self.n_spins:
            raise ValueError(f"expected measurement records of shape (n, {self.n_spins}), got {tuple(s.shape)}")
        if not ((s == 1) | (s == -1)).all():
            raise ValueError("measurement records must have entries +1 (up) or -1 (down)")
        return s

    def state_index(self, s) -> torch.Tensor:
        """Inverse of :meth:`all_states`: the int64 index (n,) of each record in ``s`` (n, N)."""
        bits = ((self._check_spins(s) + 1) / 2).long()  # (n, N)
        return (bits << torch.arange(self.n_spins, device=bits.device)).sum(-1)

    def probabilities(self) -> torch.Tensor:
        r"""Born probabilities :math:`p(s) = \psi(s)^2` of every basis state, float64 (2^N,)."""
        return self.amplitudes ** 2

    def log_prob(self, s) -> torch.Tensor:
        r""":math:`\log p(s)` (float64, shape (n,)) of records ``s`` (n, N); ``-inf`` where p = 0."""
        return self.probabilities().log()[self.state_index(s).cpu()]

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` independent measurement records, float32 (n, N) of +-1 (exact: drawn from p)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        generator = make_generator(seed, generator)
        index = torch.multinomial(self.probabilities(), n, replacement=True, generator=generator)  # (n,)
        return self.all_states()[index].to(torch.float32)

    def sz_correlation(self) -> torch.Tensor:
        r""":math:`\langle \sigma^z_i \sigma^z_j \rangle`, float64 (N, N); see :func:`sz_correlation`."""
        return sz_correlation(self.probabilities(), self.all_states())

    def sx_expectation(self) -> torch.Tensor:
        r""":math:`\langle \sigma^x_i \rangle`, float64 (N,); see :func:`sx_expectation`."""
        return sx_expectation(self.amplitudes)


# ----------------------------------------------------------------------------- the TFIM chain
def tfim_hamiltonian(n_spins: int, J: float = 1.0, h: float = 1.0, boundary: str = "open"):
    r"""The transverse-field Ising Hamiltonian as a sparse (2^N, 2^N) float64 CSR matrix.

    Diagonal: :math:`-J \sum_{\langle i, i+1\rangle} s_i s_{i+1}` (``N - 1`` bonds for ``"open"``,
    ``N`` for ``"periodic"``). Off-diagonal: :math:`\sigma^x_i` flips bit ``i``, so
    :math:`H_{k', k} = -h` for :math:`k' = k \oplus 2^i`.
    """
    n_spins = _check_n_spins(n_spins)
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    dim = 2 ** n_spins
    s = _all_states(n_spins).numpy()  # (2^N, N)
    bonds = [(i, i + 1) for i in range(n_spins - 1)]
    if boundary == "periodic" and n_spins > 2:
        bonds.append((n_spins - 1, 0))
    diagonal = -J * sum(s[:, i] * s[:, j] for i, j in bonds)  # (2^N,)
    index = np.arange(dim)
    rows = [index] + [index ^ (1 << i) for i in range(n_spins)]
    values = [diagonal] + [np.full(dim, -float(h))] * n_spins
    return scipy.sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.tile(index, n_spins + 1))), shape=(dim, dim))


def tfim_free_fermion_energy(n_spins: int, J: float = 1.0, h: float = 1.0) -> float:
    r"""Exact ground-state energy of the *periodic* chain from its free-fermion solution
    (Pfeuty 1970): :math:`E_0 = -\sum_k \sqrt{J^2 + h^2 - 2Jh\cos k}` over the ``N`` momenta
    :math:`k = (2m + 1)\pi / N` (the even-parity sector), for :math:`J, h > 0`."""
    n_spins = _check_n_spins(n_spins)
    k = (2 * np.arange(n_spins) + 1) * np.pi / n_spins
    return float(-np.sqrt(J ** 2 + h ** 2 - 2 * J * h * np.cos(k)).sum())


def tfim_ground_state(n_spins: int, J: float = 1.0, h: float = 1.0, boundary: str = "open") -> QuantumState:
    r"""The ground state of :func:`tfim_hamiltonian` (the critical chain is ``h = J``).

    Lanczos (:func:`scipy.sparse.linalg.eigsh`) from the uniform vector, which overlaps the
    positive ground state, so the result is deterministic; the overall sign is fixed to make
    :math:`\psi > 0`. ``h`` must be positive: at ``h = 0`` the ground state is degenerate and not
    positive, for ``h < 0`` it is not positive in the :math:`\sigma^z` basis.
    """
    if not h > 0:
        raise ValueError(f"h must be positive (the ground state is then positive in the sigma^z basis), got {h}")
    H = tfim_hamiltonian(n_spins, J, h, boundary)
    start = np.full(H.shape[0], 1.0 / np.sqrt(H.shape[0]))
    energies, vectors = scipy.sparse.linalg.eigsh(H, k=1, which="SA", v0=start, tol=1e-12)
    psi = vectors[:, 0] * np.sign(vectors[:, 0].sum())
    if psi.min() < -1e-9:
        raise RuntimeError("the computed ground state is not positive; is the spectrum degenerate?")
    psi = np.clip(psi, 0.0, None)
    psi /= np.linalg.norm(psi)
    return QuantumState(psi, name=f"TFIM(N={n_spins}, J={J}, h={h}, {boundary})", energy=float(energies[0]))


def ghz_state(n_spins: int) -> QuantumState:
    r"""GHZ state :math:`(|\uparrow\cdots\uparrow\rangle + |\downarrow\cdots\downarrow\rangle)/\sqrt 2`."""
    n_spins = _check_n_spins(n_spins)
    psi = torch.zeros(2 ** n_spins, dtype=torch.float64)
    psi[0] = psi[-1] = 2 ** -0.5
    return QuantumState(psi, name=f"GHZ(N={n_spins})")


def w_state(n_spins: int) -> QuantumState:
    r"""W state: the equal superposition of the ``N`` states with exactly one spin up."""
    n_spins = _check_n_spins(n_spins)
    psi = torch.zeros(2 ** n_spins, dtype=torch.float64)
    psi[2 ** torch.arange(n_spins)] = n_spins ** -0.5
    return QuantumState(psi, name=f"W(N={n_spins})")


# ----------------------------------------------------------------------------- exact comparisons
def fidelity(p, q) -> float:
    r"""Fidelity :math:`(\sum_s \sqrt{p(s) q(s)})^2` of the positive states :math:`\sqrt p` and
    :math:`\sqrt q` given by two probability vectors over all :math:`2^N` basis states."""
    p, q = _check_pair(p, q)
    if p.dim() != 1 or q.dim() != 1:
        raise ValueError(f"fidelity compares two probability vectors of shape (2^N,); got shapes "
                         f"{tuple(p.shape)} and {tuple(q.shape)}")
    return float((p * q).sqrt().sum() ** 2)


def sz_correlation(p, states) -> torch.Tensor:
    r""":math:`\langle \sigma^z_i \sigma^z_j \rangle = \sum_s p(s)\, s_i s_j`, float64 (N, N), for
    probabilities ``p`` (2^N,) of the rows of ``states`` (2^N, N)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    states = torch.as_tensor(states, dtype=torch.float64)
    if p.dim() != 1 or states.dim() != 2 or states.shape[0] != p.shape[0]:
        raise ValueError(f"expected p of shape (2^N,) and states of shape (2^N, N), got {tuple(p.shape)} "
                         f"and {tuple(states.shape)}")
    return torch.einsum("k,ki,kj->ij", p, states, states)


def sx_expectation(amplitudes) -> torch.Tensor:
    r""":math:`\langle \sigma^x_i \rangle = \sum_s \psi(s)\, \psi(s^{(i)})` with :math:`s^{(i)}` the
    record with spin ``i`` flipped, float64 (N,), for real amplitudes (2^N,). A measurement in the
    :math:`\sigma^z` basis never sees this observable directly; it follows from :math:`\psi` only
    because the state is known to be positive."""
    psi = torch.as_tensor(amplitudes, dtype=torch.float64)
    n_spins = int(round(np.log2(max(psi.numel(), 1))))
    if psi.dim() != 1 or psi.numel() != 2 ** n_spins:
        raise ValueError(f"amplitudes must be a 1-D array of length 2^N, got shape {tuple(psi.shape)}")
    index = torch.arange(psi.numel())
    return torch.stack([(psi * psi[index ^ (1 << i)]).sum() for i in range(n_spins)])
