"""gmcourse.quantum: the TFIM chain, GHZ and W states, against independent oracles.

Oracles: the Hamiltonian built a second way from Kronecker products of Pauli matrices and
diagonalised densely by numpy; the free-fermion closed form of the periodic chain; the
expectation <psi|H|psi> assembled from the two observables; exact symmetries; chi^2 for sampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmcourse import quantum

PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]])
# basis (bit 0, bit 1) = (down, up): sigma^z = diag(-1, +1) in the course's convention
PAULI_Z = np.diag([-1.0, 1.0])


def _site_operator(op, site, n_spins):
    """op acting on `site`; numpy's kron puts its first factor on the most significant bit, so
    site i (bit i) is factor n_spins - 1 - i."""
    factors = [np.eye(2)] * n_spins
    factors[n_spins - 1 - site] = op
    out = factors[0]
    for f in factors[1:]:
        out = np.kron(out, f)
    return out


def _kron_hamiltonian(n_spins, J, h, boundary):
    bonds = [(i, i + 1) for i in range(n_spins - 1)] + ([(n_spins - 1, 0)] if boundary == "periodic" else [])
    H = sum(-J * _site_operator(PAULI_Z, i, n_spins) @ _site_operator(PAULI_Z, j, n_spins) for i, j in bonds)
    return H + sum(-h * _site_operator(PAULI_X, i, n_spins) for i in range(n_spins))


@pytest.mark.parametrize("boundary", ["open", "periodic"])
@pytest.mark.parametrize("n_spins", [3, 5])
def test_sparse_hamiltonian_equals_pauli_kronecker_products(n_spins, boundary):
    J, h = 0.7, 1.3
    np.testing.assert_allclose(quantum.tfim_hamiltonian(n_spins, J, h, boundary).toarray(),
                               _kron_hamiltonian(n_spins, J, h, boundary), atol=1e-14)


@pytest.mark.parametrize("boundary", ["open", "periodic"])
@pytest.mark.parametrize("n_spins,h", [(6, 1.0), (8, 0.5), (10, 1.0), (7, 2.0)])
def test_ground_energy_and_state_match_dense_diagonalisation(n_spins, h, boundary):
    state = quantum.tfim_ground_state(n_spins, J=1.0, h=h, boundary=boundary)
    energies, vectors = np.linalg.eigh(_kron_hamiltonian(n_spins, 1.0, h, boundary))
    assert state.energy == pytest.approx(energies[0], abs=1e-10)
    overlap = abs(vectors[:, 0] @ state.amplitudes.numpy())
    assert overlap == pytest.approx(1.0, abs=1e-10)
    assert (state.amplitudes > 0).all(), "the TFIM ground state must be positive in the sigma^z basis"


@pytest.mark.parametrize("n_spins", [4, 9, 16])
def test_periodic_ground_energy_matches_free_fermion_closed_form(n_spins):
    for h in (0.5, 1.0, 1.5):
        state = quantum.tfim_ground_state(n_spins, J=1.0, h=h, boundary="periodic")
        assert state.energy == pytest.approx(quantum.tfim_free_fermion_energy(n_spins, 1.0, h), abs=1e-9)


def test_energy_equals_expectation_assembled_from_sz_correlations_and_sx():
    for boundary in ("open", "periodic"):
        state = quantum.tfim_ground_state(10, J=1.0, h=1.0, boundary=boundary)
        zz = state.sz_correlation()
        bonds = [(i, i + 1) for i in range(9)] + ([(9, 0)] if boundary == "periodic" else [])
        energy = -sum(zz[i, j] for i, j in bonds) - state.sx_expectation().sum()
        assert float(energy) == pytest.approx(state.energy, abs=1e-10)


def test_probabilities_are_normalised_and_have_the_chain_symmetries():
    state = quantum.tfim_ground_state(10, boundary="open")
    p, states = state.probabilities(), state.all_states()
    assert p.dtype == torch.float64 and p.shape == (1024,)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    for image in (-states, states.flip(-1)):  # global flip, chain reversal
        torch.testing.assert_close(p[state.state_index(image)], p, atol=1e-12, rtol=0)
    periodic = quantum.tfim_ground_state(8, boundary="periodic")
    shifted = periodic.all_states().roll(1, dims=-1)  # translation
    torch.testing.assert_close(periodic.probabilities()[periodic.state_index(shifted)],
                               periodic.probabilities(), atol=1e-12, rtol=0)


def test_ghz_and_w_states():
    ghz = quantum.ghz_state(5)
    records = ghz.sample(1000, seed=0)
    assert records.shape == (1000, 5) and records.dtype == torch.float32
    assert (records.abs().sum(-1) == 5).all() and set(records.sum(-1).tolist()) == {-5.0, 5.0}
    torch.testing.assert_close(ghz.sx_expectation(), torch.zeros(5, dtype=torch.float64))
    w = quantum.w_state(5)
    up = (w.sample(1000, seed=1) == 1).sum(-1)
    assert (up == 1).all(), "every W record has exactly one spin up"
    # <sigma^x_i> of W: amplitude 1/sqrt(N) pairs |0...1_i...0> with |0...0> (amplitude 0) only
    torch.testing.assert_close(w.sx_expectation(), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(w.log_prob(torch.tensor([[1.0, -1, -1, -1, -1]])),
                               torch.tensor([np.log(1 / 5)], dtype=torch.float64))


def test_sampling_matches_born_probabilities_chi2_5_sigma():
    state = quantum.tfim_ground_state(4, J=1.0, h=0.8, boundary="open")
    n = 40_000
    counts = torch.bincount(state.state_index(state.sample(n, seed=3)), minlength=16).double()
    expected = n * state.probabilities()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = 15  # chi^2 has mean dof and standard deviation sqrt(2 dof)
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2


def test_sampling_is_reproducible_with_a_seed():
    state = quantum.tfim_ground_state(6)
    torch.testing.assert_close(state.sample(50, seed=7), state.sample(50, seed=7))


def test_fidelity_equals_squared_overlap_of_amplitudes():
    a = quantum.tfim_ground_state(6, h=1.0)
    b = quantum.tfim_ground_state(6, h=1.4)
    overlap = float(a.amplitudes @ b.amplitudes)
    assert quantum.fidelity(a.probabilities(), b.probabilities()) == pytest.approx(overlap ** 2, abs=1e-14)
    assert quantum.fidelity(a.probabilities(), a.probabilities()) == pytest.approx(1.0, abs=1e-14)
    assert quantum.fidelity(quantum.ghz_state(6).probabilities(), quantum.w_state(6).probabilities()) == 0.0


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="n_spins must be an int"):
        quantum.tfim_ground_state(17)
    with pytest.raises(ValueError, match="boundary must be one of"):
        quantum.tfim_hamiltonian(4, boundary="twisted")
    with pytest.raises(ValueError, match="h must be positive"):
        quantum.tfim_ground_state(4, h=0.0)
    state = quantum.ghz_state(3)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        state.log_prob(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\+1 \(up\) or -1"):
        state.log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="normalised"):
        quantum.QuantumState(torch.ones(8))
    with pytest.raises(ValueError, match="non-negative"):
        quantum.QuantumState(torch.tensor([0.6, -0.8]))
    with pytest.raises(ValueError, match="probability vectors"):
        quantum.fidelity(torch.full((2, 4), 0.25), torch.full((2, 4), 0.25))
