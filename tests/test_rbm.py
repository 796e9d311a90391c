"""Tests of gmcourse.rbm against independent oracles on machines small enough to enumerate.

The oracles never call the code under test for the quantity they check: configurations come from
itertools.product, energies from an einsum of the raw parameters, and every distribution from a
brute-force table of exp(-E(v, h)) over all (v, h). Every check runs for the four unit
conventions (visible, hidden) in {spin, binary}^2, in float64.
"""

import itertools
import math
import pickle

import pytest
import torch

from gmcourse.divergences import Estimate
from gmcourse.protocol import GenerativeModel
from gmcourse.rbm import RBM, TranslationInvariantRBM, ais_log_partition, all_configurations

CONVENTIONS = list(itertools.product(("spin", "binary"), repeat=2))  # (visible, hidden)
IDS = [f"{v}-{h}" for v, h in CONVENTIONS]


def configurations(n, units):
    """Every configuration of n units from itertools.product (independent of all_configurations)."""
    values = (-1.0, 1.0) if units == "spin" else (0.0, 1.0)
    return torch.tensor(list(itertools.product(values, repeat=n)), dtype=torch.float64).reshape(-1, n)


def random_rbm(n_visible, n_hidden, visible, hidden, seed=0, scale=0.8):
    """A float64 RBM with non-trivial weights and biases."""
    rbm = RBM(n_visible, n_hidden, visible=visible, hidden=hidden, seed=seed).double()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        rbm.weight.copy_(scale * torch.randn(n_hidden, n_visible, generator=g, dtype=torch.float64))
        rbm.visible_bias.copy_(0.5 * torch.randn(n_visible, generator=g, dtype=torch.float64))
        rbm.hidden_bias.copy_(0.5 * torch.randn(n_hidden, generator=g, dtype=torch.float64))
    return rbm


def joint_table(rbm):
    """v (2^D, D), h (2^n_h, n_h) and log of exp(-E(v, h)) for every pair (2^D, 2^n_h), E by einsum."""
    v, h = configurations(rbm.n_visible, rbm.visible), configurations(rbm.n_hidden, rbm.hidden)
    W, a, b = (t.detach() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    minus_energy = (v @ a)[:, None] + (h @ b)[None, :] + torch.einsum("vi,ji,hj->vh", v, W, h)
    return v, h, minus_energy


def exact_visible_distribution(rbm):
    """P(v) of every configuration in all_configurations' order (bit i of k = unit i), by brute force."""
    _, _, minus_energy = joint_table(rbm)
    p = torch.softmax(minus_energy.flatten(), 0).view(minus_energy.shape).sum(1)  # in itertools order
    # itertools.product varies the LAST unit fastest; all_configurations varies unit 0 fastest
    n = rbm.n_visible
    reorder = torch.tensor([int("".join(str((k >> i) & 1) for i in range(n)), 2) for k in range(2 ** n)])
    return p[reorder]


# ----------------------------------------------------------------------------- energies and Z
@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_energy_matches_the_definition_and_free_energy_sums_out_hidden_units(visible, hidden):
    rbm = random_rbm(4, 3, visible, hidden)
    v, h, minus_energy = joint_table(rbm)
    pairs_v = v.repeat_interleave(len(h), 0)  # (2^D 2^n_h, D)
    pairs_h = h.repeat(len(v), 1)
    torch.testing.assert_close(rbm.energy(pairs_v, pairs_h), -minus_energy.flatten(), rtol=0, atol=1e-12)
    torch.testing.assert_close(rbm.free_energy(v), -torch.logsumexp(minus_energy, 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(rbm.hidden_free_energy(h), -torch.logsumexp(minus_energy, 0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
@pytest.mark.parametrize("n_visible,n_hidden", [(5, 3), (3, 5)], ids=["sum-over-hidden", "sum-over-visible"])
def test_log_partition_equals_brute_force_over_all_visible_and_hidden_configurations(visible, hidden, n_visible,
                                                                                     n_hidden):
    rbm = random_rbm(n_visible, n_hidden, visible, hidden)
    _, _, minus_energy = joint_table(rbm)
    assert rbm.log_partition().item() == pytest.approx(torch.logsumexp(minus_energy.flatten(), 0).item(), abs=1e-12)


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_log_prob_is_normalised_and_equals_the_brute_force_marginal(visible, hidden):
    rbm = random_rbm(5, 4, visible, hidden)
    states = all_configurations(5, visible, dtype=torch.float64)
    torch.testing.assert_close(rbm.log_prob(states).exp(), exact_visible_distribution(rbm), rtol=0, atol=1e-12)


def test_log_partition_is_chunked_and_exact_for_a_layer_larger_than_one_chunk():
    """n_hidden = 15 > the 2^14 chunk: the chunks' logsumexp equals one logsumexp over all 2^15 rows."""
    rbm = random_rbm(17, 15, "spin", "binary", scale=0.3)
    h = all_configurations(15, "binary", dtype=torch.float64)  # (2^15, 15)
    W, a, b = rbm.couplings()
    minus_free = h @ b + torch.logaddexp(h @ W + a, -(h @ W + a)).sum(1)  # sum over +-1 visible units
    assert rbm.log_partition().item() == pytest.approx(torch.logsumexp(minus_free, 0).item(), abs=1e-10)


def test_log_partition_beyond_two_to_the_22_says_to_use_ais():
    rbm = RBM(30, 23)
    with pytest.raises(ValueError, match=r"2\^23.*ais_log_partition"):
        rbm.log_partition()
    with pytest.raises(ValueError, match="method='gibbs'"):
        rbm.sample(3, seed=0, method="exact")
    assert rbm.sample(3, seed=0, method="auto", burn_in=2).shape == (3, 30)  # auto falls back to Gibbs


# ----------------------------------------------------------------------------- conditionals
@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_conditionals_factorise_and_match_enumeration(visible, hidden):
    """p(h | v) from the joint table equals the product over j of hidden_probs (and likewise p(v | h))."""
    rbm = random_rbm(4, 3, visible, hidden)
    v, h, minus_energy = joint_table(rbm)

    def product_of_marginals(probs, units):  # probs (n_cond, m) of "on" (= 1 in both conventions)
        return torch.where(units[None] == 1, probs[:, None, :], 1 - probs[:, None, :]).prod(-1)  # (n_cond, 2^m)

    torch.testing.assert_close(product_of_marginals(rbm.hidden_probs(v), h), torch.softmax(minus_energy, 1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(product_of_marginals(rbm.visible_probs(h), v), torch.softmax(minus_energy, 0).T,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_sampled_units_take_the_values_of_their_convention_with_the_conditional_frequency(visible, hidden):
    """10,000 draws of h | v for one v: each unit's frequency of 'on' is within 5 standard errors
    sqrt(p(1-p)/n) of hidden_probs; values are exactly those of the convention."""
    rbm = random_rbm(4, 3, visible, hidden)
    v = configurations(4, visible)[[5]].expand(10_000, -1)
    h = rbm.sample_hidden(v, torch.Generator().manual_seed(1))
    allowed = torch.tensor([-1.0, 1.0] if hidden == "spin" else [0.0, 1.0], dtype=torch.float64)
    assert torch.isin(h, allowed).all()
    p = rbm.hidden_probs(v[:1])[0]
    frequency = (h == 1).double().mean(0)
    assert ((frequency - p).abs() < 5 * (p * (1 - p) / 10_000).sqrt()).all(), (frequency, p)
    v_new = rbm.sample_visible(h[:10], torch.Generator().manual_seed(2))
    assert v_new.shape == (10, 4) and torch.isin(v_new, torch.tensor([-1.0, 1.0] if visible == "spin" else [0.0, 1.0],
                                                                       dtype=torch.float64)).all()


# ----------------------------------------------------------------------------- gradient
@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_exact_log_likelihood_gradient_is_data_term_minus_model_term(visible, hidden):
    """d mean log P(x) / d theta by autograd through log Z equals <-dE/dtheta>_data - <-dE/dtheta>_model,
    both expectations computed by enumeration: -dE/dW_ji = h_j v_i, -dE/da_i = v_i, -dE/db_j = h_j;
    in the data term h is averaged over the brute-force p(h | x)."""
    rbm = random_rbm(4, 3, visible, hidden)
    v, h, minus_energy = joint_table(rbm)
    data = v[torch.tensor([0, 3, 3, 7, 9, 12, 15, 15])]  # (8, 4), some repeated
    (-rbm.log_prob(data).mean()).backward()

    joint = torch.softmax(minus_energy.flatten(), 0).view(minus_energy.shape)  # P(v, h)
    model_W = torch.einsum("vh,hj,vi->ji", joint, h, v)
    model_a, model_b = joint.sum(1) @ v, joint.sum(0) @ h
    data_index = torch.stack([(v == x).all(1).nonzero()[0, 0] for x in data])
    conditional = torch.softmax(minus_energy[data_index], 1)  # p(h | x) (8, 2^n_h)
    mean_h = conditional @ h  # (8, n_h)
    data_W = torch.einsum("nj,ni->ji", mean_h, data) / len(data)
    data_a, data_b = data.mean(0), mean_h.mean(0)
    for parameter, data_term, model_term in ((rbm.weight, data_W, model_W), (rbm.visible_bias, data_a, model_a),
                                             (rbm.hidden_bias, data_b, model_b)):
        torch.testing.assert_close(-parameter.grad, data_term - model_term, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- Gibbs sampling
def gibbs_transition_matrix(rbm):
    """K[v, v'] = sum_h p(h | v) p(v' | h), with p(h | v) and p(v | h) from the brute-force joint table."""
    _, _, minus_energy = joint_table(rbm)
    return torch.softmax(minus_energy, 1) @ torch.softmax(minus_energy, 0).T  # (2^D, 2^D)


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_gibbs_kernel_leaves_the_exact_distribution_invariant(visible, hidden):
    rbm = random_rbm(4, 3, visible, hidden)
    K = gibbs_transition_matrix(rbm)
    p = torch.softmax(joint_table(rbm)[2].flatten(), 0).view(16, 8).sum(1)  # itertools order, as K
    torch.testing.assert_close(K.sum(1), torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(p @ K, p, rtol=0, atol=1e-12)
    # detailed balance too: v -> h -> v' is reversible because p(v)K(v, v') = sum_h p(v, h) p(v' | h) is symmetric
    torch.testing.assert_close(p[:, None] * K, (p[:, None] * K).T, rtol=0, atol=1e-12)


def chi_square_threshold(n_cells):
    # Pearson's statistic for n_cells cells with expected counts >= 5 is approximately chi^2 with
    # d = n_cells - 1 degrees of freedom: mean d, variance 2d. 5 standard deviations above the mean,
    # d + 5 sqrt(2d), is exceeded by chance with probability ~1e-5 (the chi^2 tail is a bit heavier
    # than Gaussian, still < 1e-4 for d = 15).
    d = n_cells - 1
    return d + 5 * math.sqrt(2 * d)


def chi_square(samples, p):
    """Pearson's statistic of samples (n, D) against p over configurations numbered as all_configurations
    (unit i on, i.e. = 1 in both conventions, iff bit i is set)."""
    index = ((samples == 1).long() << torch.arange(samples.shape[1])).sum(1)
    counts = torch.bincount(index, minlength=len(p)).double()
    expected = len(samples) * p
    assert expected.min() >= 5, "too few samples for the chi^2 approximation"
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_one_gibbs_step_draws_from_the_rows_of_the_exact_transition_matrix(visible, hidden):
    rbm = random_rbm(4, 3, visible, hidden, scale=0.5)
    K = gibbs_transition_matrix(rbm)  # rows/columns in itertools order: unit 0 is the most significant bit
    start = configurations(4, visible)[6]
    v_new = rbm.gibbs_step(start.expand(20_000, -1), torch.Generator().manual_seed(3))  # (20000, 4)
    reorder = torch.tensor([int("".join(str((k >> i) & 1) for i in range(4)), 2) for k in range(16)])
    assert chi_square(v_new, K[6][reorder]) < chi_square_threshold(16)


@pytest.mark.parametrize("visible,hidden", CONVENTIONS, ids=IDS)
def test_gibbs_samples_match_the_exact_distribution_chi_square_5_sigma(visible, hidden):
    """20,000 independent chains (one kept state each), 50 burn-in steps on a machine whose
    Gibbs kernel mixes in a few steps (weights of scale 0.5): Pearson chi^2 against brute force."""
    rbm = random_rbm(4, 3, visible, hidden, scale=0.5)
    samples = rbm.sample(20_000, seed=4, method="gibbs", burn_in=50, thin=1, n_chains=20_000)
    assert chi_square(samples, exact_visible_distribution(rbm)) < chi_square_threshold(16)


@pytest.mark.parametrize("n_visible,n_hidden", [(4, 3), (4, 6)], ids=["hidden-enumerated", "visible-enumerated"])
def test_exact_sampling_matches_the_exact_distribution_chi_square_5_sigma(n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden, "binary", "spin", scale=1.0)
    samples = rbm.sample(20_000, seed=5)  # method="auto" -> exact for a machine this small
    assert chi_square(samples, exact_visible_distribution(rbm)) < chi_square_threshold(16)


# ----------------------------------------------------------------------------- AIS
@pytest.mark.parametrize("visible,hidden", [("binary", "binary"), ("spin", "spin")])
def test_ais_covers_the_exact_log_partition_within_5_standard_errors(visible, hidden):
    """A 12 x 10 machine with weights of scale 0.3 (log Z far from the independent-unit base:
    the difference is many error bars). The estimate lies within 5 standard errors of the exact value
    and the error bar is small enough to be informative (< 0.1 nats)."""
    rbm = random_rbm(12, 10, visible, hidden, scale=0.3, seed=7)
    exact = rbm.log_partition().item()
    estimate = ais_log_partition(rbm, n_chains=500, n_temperatures=200, seed=8)
    assert isinstance(estimate, Estimate) and 0 < estimate.stderr < 0.1
    assert abs(estimate.mean - exact) < 5 * estimate.stderr, (estimate, exact)
    with torch.no_grad():
        W, a, b = rbm.couplings()
        base = RBM(12, 10, visible=visible, hidden=hidden, init_std=0.0).double()
        base.visible_bias.copy_(a), base.hidden_bias.copy_(b)
        assert abs(base.log_partition().item() - exact) > 20 * estimate.stderr  # AIS moved far from its start


def test_ais_is_exact_for_a_machine_without_weights():
    """W = 0: every importance weight is 1, so the estimate is log Z_0 with zero error."""
    rbm = random_rbm(6, 5, "spin", "binary", scale=0.0)
    estimate = ais_log_partition(rbm, n_chains=10, n_temperatures=3, seed=0)
    assert estimate.mean == pytest.approx(rbm.log_partition().item(), abs=1e-12) and estimate.stderr == 0


# ----------------------------------------------------------------------------- training
def ising_like_data(n, seed):
    """Samples of a 2 x 3 ferromagnetic ring-like model in {0,1} units, drawn exactly."""
    teacher = random_rbm(6, 2, "binary", "binary", seed=seed, scale=2.0)
    return teacher.sample(n, seed=seed)


@pytest.mark.parametrize("persistent", [False, True], ids=["CD-5", "PCD-5"])
def test_one_contrastive_divergence_step_lowers_the_exact_negative_log_likelihood(persistent):
    """The gradient of loss() points along the exact NLL gradient (cosine > 0.9 with 5,000 negative
    samples; a sign error gives -1) and one small SGD step on it lowers the exact NLL of the data,
    i.e. lowers mean F(data) relative to log Z."""
    data = ising_like_data(5000, seed=11)
    rbm = random_rbm(6, 4, "binary", "binary", seed=12, scale=0.1)
    rbm.k, rbm.persistent, rbm.n_chains = 5, persistent, 5000
    exact = torch.autograd.grad(-rbm.log_prob(data).mean(), list(rbm.parameters()))
    contrastive = torch.autograd.grad(rbm.loss(data, torch.Generator().manual_seed(13)), list(rbm.parameters()))
    exact, contrastive = torch.cat([g.flatten() for g in exact]), torch.cat([g.flatten() for g in contrastive])
    assert torch.nn.functional.cosine_similarity(exact, contrastive, 0) > 0.9
    before = -rbm.log_prob(data).mean().item()
    gradients = torch.autograd.grad(rbm.loss(data, torch.Generator().manual_seed(14)), list(rbm.parameters()))
    with torch.no_grad():
        for parameter, gradient in zip(rbm.parameters(), gradients):
            parameter -= 0.05 * gradient  # one step of gradient descent
    assert -rbm.log_prob(data).mean().item() < before


def test_persistent_chains_are_kept_between_calls_and_saved_with_the_model():
    rbm = RBM(6, 3, visible="binary", k=2, persistent=True, n_chains=7, seed=0)
    x = torch.ones(4, 6)
    first = rbm.negative_samples(x).clone()
    assert first.shape == (7, 6) and rbm.chains.shape == (7, 6)
    rbm.loss(x)  # two more Gibbs steps of the same 7 chains (42 near-fair coins: equal with prob. 2^-42)
    assert rbm.chains.shape == (7, 6) and not torch.equal(rbm.chains, first)
    copy = pickle.loads(pickle.dumps(rbm))  # torch.save pickles the module
    torch.testing.assert_close(copy.chains, rbm.chains)
    rbm.reset_chains()
    assert rbm.chains is None


def test_cd_negative_samples_start_at_the_data():
    """With k = 1 and a machine that (nearly) copies each unit through the hidden layer, CD's
    negative samples equal the data, while PCD's come from the chains."""
    rbm = RBM(3, 3, visible="spin", hidden="spin", k=1, seed=0).double()
    with torch.no_grad():
        rbm.weight.copy_(20.0 * torch.eye(3))
    x = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(rbm.negative_samples(x), x)


# ----------------------------------------------------------------------------- protocol and errors
def test_rbm_follows_the_protocol_and_round_trips_through_pickle():
    rbm = RBM(5, 3, seed=1)
    assert isinstance(rbm, GenerativeModel) and rbm.log_prob_kind == "exact"
    x = rbm.sample(8, seed=2)
    assert x.shape == (8, 5) and x.dtype == torch.get_default_dtype()
    assert rbm.log_prob(x).shape == (8,) and rbm.loss(x).dim() == 0
    copy = pickle.loads(pickle.dumps(rbm))
    torch.testing.assert_close(copy.log_prob(x), rbm.log_prob(x))
    torch.testing.assert_close(RBM(5, 3, seed=1).weight, rbm.weight)  # the seed fixes the weights


def test_bad_input_gets_a_clear_error():
    rbm = RBM(4, 2, visible="spin", hidden="binary")
    with pytest.raises(ValueError, match="visible must be one of"):
        RBM(4, 2, visible="ising")
    with pytest.raises(ValueError, match="n_hidden must be an int >= 1"):
        RBM(4, 0)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        rbm.free_energy(torch.ones(3, 5))
    with pytest.raises(ValueError, match="spin units, whose values are -1 or 1"):
        rbm.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="binary units, whose values are 0 or 1"):
        rbm.visible_probs(-torch.ones(2, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        rbm.free_energy([[1, 1, 1, 1]])
    with pytest.raises(ValueError, match="same batch size"):
        rbm.energy(torch.ones(2, 4), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"init must have shape \(5, 4\)"):
        rbm.sample(5, seed=0, method="gibbs", init=torch.ones(3, 4))


# ----------------------------------------------------------------------------- weight sharing
def test_translation_invariant_rbm_couplings_are_translated_filters_and_its_law_is_invariant():
    rbm = TranslationInvariantRBM(3, 2, seed=0, init_std=0.7).double()
    W, a, b = rbm.couplings()
    assert W.shape == (18, 9) and not a.any() and not b.any()
    for channel, p1, p2 in itertools.product(range(2), range(3), range(3)):
        row = W[channel * 9 + p1 * 3 + p2].view(3, 3)  # unit at position p sees filter shifted by p
        torch.testing.assert_close(row, torch.roll(rbm.filters[channel], (p1, p2), (0, 1)), rtol=0, atol=0)
    states = all_configurations(9, "spin", dtype=torch.float64)  # (512, 9)
    log_p = rbm.log_prob(states)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    images = [torch.roll(states.view(-1, 3, 3), (1, 0), (1, 2)), torch.roll(states.view(-1, 3, 3), (0, 2), (1, 2)),
              -states.view(-1, 3, 3)]  # two translations and the global flip
    for image in images:
        torch.testing.assert_close(rbm.log_prob(image.reshape(-1, 9)), log_p, rtol=0, atol=1e-12)
    assert sum(p.numel() for p in rbm.parameters()) == 18  # only the filters are trained
