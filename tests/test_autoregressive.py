"""Tests of gmcourse.autoregressive (chapter 4).

Oracles: torch.func.jacrev for the autoregressive property (which inputs each output depends
on), exact enumeration of all K^D states for the normalisation and for the conditionals of
the joint, torch.distributions.Categorical for the categorical likelihood, NADE's definition
(one hidden layer per conditional) for its running sum, independent rot90 / transpose / roll
of the lattice for the Ising symmetries, chi-square tests at 5 sigma for the samplers, and the
exact distribution of an open Ising chain for training.
"""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Categorical

from gmcourse.autoregressive import (
    MADE, NADE, CausalConv1d, CausalConv1dAR, GRUAutoregressive, MaskedLinear, SymmetrizedModel, WindowMLP,
    lattice_symmetries, random_symmetry,
)

FIVE_SIGMA_P_VALUE = scipy.stats.norm.sf(5.0)


def all_states(n_inputs, values):
    return torch.tensor(list(itertools.product(values, repeat=n_inputs)))  # (K^D, D)


def randomize(model, seed, scale=1.0):
    """Large random weights: a peaked distribution makes the sampling tests discriminating."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=g, dtype=parameter.dtype))
    return model


def dependency_pattern(model, n_points=6, seed=0):
    """Boolean (D, D): entry (d, e) is True when some logit of variable d has a nonzero
    derivative with respect to some input channel of variable e, at any of n_points inputs."""
    g = torch.Generator().manual_seed(seed)
    depends = torch.zeros(model.n_inputs, model.n_inputs, dtype=torch.bool)
    for _ in range(n_points):
        z = torch.randn(model.n_inputs, model.n_channels, generator=g, dtype=torch.float64)
        jacobian = torch.func.jacrev(lambda inputs: model(inputs.unsqueeze(0))[0])(z)  # (D, K, D, C)
        depends |= (jacobian != 0).any(dim=3).any(dim=1)
    return depends


def assert_counts_match(counts, probabilities, what):
    """Chi-square of multinomial counts; expected counts below 5 are pooled into one bin."""
    counts = torch.as_tensor(counts).double().numpy()
    expected = counts.sum() * torch.as_tensor(probabilities).double().numpy()
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic, p_value = scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())
    assert p_value > FIVE_SIGMA_P_VALUE, f"{what}: chi2 = {statistic:.1f} on {len(observed) - 1} dof, p = {p_value:.1e}"


MODELS = {
    "made_spins": lambda: MADE(8, [24, 24], direct=True),
    "made_random_order": lambda: MADE(8, [24, 24, 24], order="random", seed=3),
    "made_3_classes": lambda: MADE(5, [16], n_classes=3, order=torch.tensor([2, 0, 4, 1, 3])),
    "conv": lambda: CausalConv1dAR(8, channels=8, dilations=(1, 2)),
    "conv_4_classes": lambda: CausalConv1dAR(5, n_classes=4, channels=8, dilations=(1, 2)),
    "gru": lambda: GRUAutoregressive(8, hidden_size=12),
    "gru_3_classes": lambda: GRUAutoregressive(5, n_classes=3, hidden_size=12, num_layers=2),
    "nade": lambda: NADE(8, hidden_size=6),
    "nade_3_classes": lambda: NADE(5, n_classes=3, hidden_size=7),
    "window": lambda: WindowMLP(8, window=3, hidden_size=6),
    "window_4_classes": lambda: WindowMLP(5, n_classes=4, window=2, hidden_size=5),
}


def state_space(model):
    return all_states(model.n_inputs, model.values.tolist())


# ----------------------------------------------------------------------------- autoregressive property

@pytest.mark.parametrize("order", [None, "random", torch.tensor([5, 1, 7, 0, 2, 9, 3, 8, 6, 4])])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_made_logits_depend_exactly_on_the_variables_generated_before(order, n_classes):
    model = MADE(10, [30, 20], n_classes=n_classes, order=order, seed=1, activation=torch.nn.Tanh).double()
    rank = torch.empty(10, dtype=torch.long)
    rank[model.order] = torch.arange(10)
    before = rank[None, :] < rank[:, None]  # (d, e): e is generated before d
    assert torch.equal(dependency_pattern(model), before)


def test_made_random_order_is_a_seeded_permutation():
    orders = [MADE(12, [8], order="random", seed=s).order for s in (0, 0, 1)]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    assert torch.equal(orders[0].sort().values, torch.arange(12))


def test_made_direct_connections_alone_give_exactly_the_allowed_dependencies():
    """With the hidden path cut (output weights zero), the logits depend on the inputs through the
    direct connection only: on every variable generated before, and on no other."""
    model = MADE(9, [4], direct=True, order="random", seed=2).double()
    with torch.no_grad():
        model.net[-1].weight.zero_()
    rank = torch.empty(9, dtype=torch.long)
    rank[model.order] = torch.arange(9)
    assert torch.equal(dependency_pattern(model), rank[None, :] < rank[:, None])


@pytest.mark.parametrize("n_classes", [2, 4])
def test_causal_conv_logits_depend_exactly_on_the_receptive_field(n_classes):
    model = CausalConv1dAR(14, n_classes=n_classes, channels=6, dilations=(1, 2, 4), first_kernel_size=3).double()
    assert model.receptive_field == 2 + 7
    d, e = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    window = (e < d) & (e >= d - model.receptive_field)  # strictly causal, finite memory
    assert torch.equal(dependency_pattern(model), window)


def test_mask_a_convolution_never_sees_the_present():
    layer = CausalConv1d(1, 1, 3, dilation=2, mask_type="A").double()
    jacobian = torch.func.jacrev(lambda x: layer(x.view(1, 1, -1)).flatten())(torch.randn(7, dtype=torch.float64))
    t, s = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    allowed = (s == t - 2) | (s == t - 4)  # taps t - 2 and t - 4; t itself masked
    assert not (jacobian[~allowed] != 0).any() and (jacobian[allowed] != 0).all()


def test_gru_logits_depend_exactly_on_the_past():
    model = GRUAutoregressive(9, n_classes=3, hidden_size=10).double()
    d, e = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(dependency_pattern(model), e < d)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_nade_logits_depend_exactly_on_the_past(n_classes):
    model = NADE(9, n_classes=n_classes, hidden_size=10).double()
    d, e = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(dependency_pattern(model), e < d)


@pytest.mark.parametrize("n_classes, window", [(2, 1), (2, 4), (5, 3)])
def test_window_logits_depend_exactly_on_the_last_k_variables(n_classes, window):
    model = WindowMLP(12, n_classes=n_classes, window=window, hidden_size=8).double()
    d, e = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    assert torch.equal(dependency_pattern(model), (e < d) & (e >= d - window))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_nade_running_sum_equals_one_hidden_layer_per_conditional(n_classes):
    """forward (a_{d+1} = a_d + W_d x_d, one cumulative sum) equals forward_naive, which builds
    a_d = c + sum_{e<d} W_e x_e afresh for every d, and both equal a loop written here from
    the definition with the parameters read off the model."""
    model = randomize(NADE(7, n_classes=n_classes, hidden_size=5).double(), seed=21)
    g = torch.Generator().manual_seed(22)
    inputs = torch.randn(4, 7, model.n_channels, generator=g, dtype=torch.float64)  # any real inputs
    by_definition = torch.empty(4, 7, n_classes, dtype=torch.float64)
    for n, d in itertools.product(range(4), range(7)):
        a = model.hidden_bias.detach().clone()
        for e in range(d):
            a += inputs[n, e] @ model.input_weight[e].detach()  # (C,) @ (C, n_h)
        by_definition[n, d] = model.output_weight[d].detach() @ torch.sigmoid(a) + model.output_bias[d].detach()
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), by_definition)
        torch.testing.assert_close(model.forward_naive(inputs), by_definition)


def test_masks_are_buffers_not_parameters():
    layer = MaskedLinear(3, 4)
    assert "mask" in dict(layer.named_buffers()) and "mask" not in dict(layer.named_parameters())
    assert "mask" in layer.state_dict() and layer.double().mask.dtype == torch.float64


# ----------------------------------------------------------------------------- exact likelihood

@pytest.mark.parametrize("name", sorted(MODELS))
def test_probabilities_sum_to_one_over_all_states(name):
    model = randomize(MODELS[name]().double(), seed=4)
    total = model.log_prob(state_space(model)).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_probabilities_sum_to_one_over_2_to_the_12_states():
    model = randomize(MADE(12, [40, 40], order="random", seed=5, direct=True).double(), seed=6, scale=0.5)
    assert model.log_prob(all_states(12, (-1.0, 1.0)).double()).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["made_random_order", "made_3_classes", "conv_4_classes", "gru_3_classes",
                                  "nade_3_classes", "window_4_classes"])
def test_network_conditionals_equal_the_conditionals_of_the_joint(name):
    """p(x_d | x_before) from summing the enumerated joint over the later variables equals the
    softmax the network outputs for x_d."""
    model = randomize(MODELS[name]().double(), seed=7)
    states = state_space(model)
    joint = model.log_prob(states).exp()  # (K^D,)
    conditionals = model.conditional_log_probs(states).exp()  # (K^D, D, K)
    values = model.values.tolist()
    x = states[11]  # one configuration; check every step of its chain rule
    for j, d in enumerate(model.order.tolist()):
        earlier = model.order[:j]
        prefix_match = (states[:, earlier] == x[earlier]).all(1)  # (K^D,)
        marginal = torch.stack([joint[prefix_match & (states[:, d] == v)].sum() for v in values])  # (K,)
        torch.testing.assert_close(marginal / marginal.sum(), conditionals[11, d], rtol=1e-10, atol=1e-12)


def test_categorical_likelihood_equals_chain_rule_product_by_hand():
    """log p(x) = sum_d sum_k [x_d = k] log theta_dk with theta_d = softmax(logits_d) (4.2),
    written out with a one-hot sum, and once more with torch.distributions.Categorical."""
    model = randomize(MADE(3, [6], n_classes=3, value_set=(-1, 0, 1)).double(), seed=8)
    x = torch.tensor([[1, -1, 0], [0, 0, 0], [-1, 1, 1]])
    classes = x + 1  # value_set (-1, 0, 1) -> classes (0, 1, 2)
    with torch.no_grad():
        theta = torch.softmax(model(torch.nn.functional.one_hot(classes, 3).double()), dim=-1)  # (3, D, K)
    by_hand = torch.zeros(3, dtype=torch.float64)
    for n, d, k in itertools.product(range(3), range(3), range(3)):
        by_hand[n] += float(classes[n, d] == k) * math.log(theta[n, d, k])
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), by_hand)
        torch.testing.assert_close(model.log_prob(x), Categorical(probs=theta).log_prob(classes).sum(-1))


def test_digit_levels_are_classes_and_samples_are_levels():
    model = MADE(64, [32], n_classes=17)
    levels = torch.randint(17, (5, 64), generator=torch.Generator().manual_seed(0))
    assert model.log_prob(levels).shape == (5,)
    assert torch.equal(model.classes(levels), levels)
    samples = model.sample(4, seed=0)
    assert samples.shape == (4, 64) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() <= 16


def test_spins_map_minus_one_to_class_zero():
    model = MADE(3, [4])
    spins = torch.tensor([[-1.0, 1.0, -1.0]])
    assert model.classes(spins).tolist() == [[0, 1, 0]]
    assert torch.equal(model.encode(model.classes(spins)), spins.unsqueeze(-1))  # the network sees the spin
    assert model.sample(3, seed=1).dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_frequencies_match_probabilities(name):
    model = randomize(MODELS[name](), seed=9)
    states = state_space(model)
    samples = model.sample(20_000, generator=torch.Generator().manual_seed(10))
    place_values = model.n_classes ** torch.arange(model.n_inputs - 1, -1, -1)  # itertools.product order
    index = model.classes(samples) @ place_values  # (n,)
    counts = torch.bincount(index, minlength=len(states))
    with torch.no_grad():
        assert_counts_match(counts, model.log_prob(states).double().exp(), name)


def test_sampling_is_reproducible_with_seed_and_generator():
    model = GRUAutoregressive(6, hidden_size=8)
    assert torch.equal(model.sample(7, seed=3), model.sample(7, generator=torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------- symmetries

def lattice_images(s, L):
    """All images of lattice configurations s (n, L, L) under flips, rot90/transpose, rolls."""
    for sign, transpose, k, a, b in itertools.product((1, -1), (False, True), range(4), range(L), range(L)):
        t = s.transpose(1, 2) if transpose else s
        yield sign * torch.roll(torch.rot90(t, k, (1, 2)), (a, b), (1, 2))


def test_lattice_symmetries_form_a_group_of_256_elements_for_L4():
    permutations, signs = lattice_symmetries(4)
    elements = {(tuple(p.tolist()), float(s)) for p, s in zip(permutations, signs)}
    assert len(elements) == 256
    for (p, s), (q, t) in itertools.product(list(elements)[::17], repeat=2):  # closure on a sample
        composed = (tuple(q[i] for i in p), s * t)  # apply q, then p: x -> s t x[q][p] = s t x[q[p]]
        assert composed in elements


def test_symmetrized_model_is_invariant_and_normalised_L3():
    permutations, signs = lattice_symmetries(3)
    model = SymmetrizedModel(randomize(MADE(9, [16]), seed=11), permutations, signs).double()
    states = all_states(9, (-1.0, 1.0)).double()  # 512 * 144 >= 2^9: the table path
    log_p = model.log_prob(states).double()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    for image in lattice_images(states.view(-1, 3, 3), 3):
        torch.testing.assert_close(model.log_prob(image.flatten(1)), log_p, rtol=0, atol=1e-12)


def test_symmetrized_table_path_equals_direct_orbit_average():
    permutations, signs = lattice_symmetries(4)
    base = randomize(MADE(16, [16], direct=True), seed=12, scale=0.5).double()
    model = SymmetrizedModel(base, permutations, signs)
    x = 2.0 * torch.randint(2, (300, 16), generator=torch.Generator().manual_seed(13)) - 1.0
    direct = model.log_prob(x[:10]).double()  # 10 * 256 < 2^16: evaluates the orbit itself
    table = model.log_prob(x)[:10].double()  # 300 * 256 >= 2^16: evaluates base on all states
    by_hand = torch.stack([torch.logsumexp(torch.stack([base.log_prob(i.flatten(1).double()) for i in
                                                        lattice_images(x[k:k + 1].view(1, 4, 4), 4)]), 0)[0]
                           for k in range(10)]) - math.log(256)
    torch.testing.assert_close(direct, by_hand, rtol=0, atol=1e-6)
    torch.testing.assert_close(table, by_hand, rtol=0, atol=1e-6)


def test_symmetrized_samples_match_probabilities():
    permutations, signs = lattice_symmetries(2)
    model = SymmetrizedModel(randomize(MADE(4, [8]), seed=14), permutations, signs)
    states = all_states(4, (-1.0, 1.0)).float()
    samples = model.sample(20_000, seed=15)
    counts = torch.bincount((((samples + 1) / 2) @ (2.0 ** torch.arange(3, -1, -1))).long(), minlength=16)
    with torch.no_grad():
        assert_counts_match(counts, model.log_prob(states).double().exp(), "symmetrized L=2")


def test_random_symmetry_draws_each_image_of_a_configuration_uniformly():
    """Every output is an image of its input under the lattice group (rebuilt from rot90 / transpose /
    roll / negation), and for a configuration whose 256 images are all different each image is
    drawn with probability 1/256 (chi-square at 5 sigma on 25,600 draws)."""
    permutations, signs = lattice_symmetries(4)
    s = torch.tensor([[1, 1, -1, 1], [-1, 1, 1, 1], [1, -1, -1, 1], [1, 1, 1, -1]], dtype=torch.float32)
    images = torch.stack(list(lattice_images(s[None], 4)))[:, 0].flatten(1)  # (256, 16)
    assert len(torch.unique(images, dim=0)) == 256  # no symmetry maps s to itself
    moved = random_symmetry(s.flatten().expand(25_600, 16), permutations, signs, generator=torch.Generator().manual_seed(16))
    matches = (moved[:, None, :] == images[None, :, :]).all(-1)  # (25600, 256)
    assert torch.equal(matches.sum(1), torch.ones(25_600, dtype=torch.long))  # each draw is exactly one image
    assert_counts_match(matches.sum(0), torch.full((256,), 1 / 256), "random_symmetry")


# ----------------------------------------------------------------------------- training

def open_ising_chain(n_spins, beta):
    """All 2^D configurations of an open Ising chain (J = 1, no field) and their exact probabilities."""
    states = all_states(n_spins, (-1.0, 1.0)).double()  # (2^D, D)
    energy = -(states[:, :-1] * states[:, 1:]).sum(1)  # (2^D,)
    return states, torch.softmax(-beta * energy, 0)


TRAINABLE = {
    "made": lambda: MADE(6, [32]),
    "nade": lambda: NADE(6, hidden_size=16),
    "window": lambda: WindowMLP(6, window=2, hidden_size=16),
    "conv": lambda: CausalConv1dAR(6, channels=8, dilations=(1, 2)),
    "gru": lambda: GRUAutoregressive(6, hidden_size=16),
}


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_training_by_loss_learns_the_correlations_of_an_ising_chain(name):
    """Maximum likelihood (300 Adam steps on ``model.loss``) on 4,000 exact samples of an open chain
    of 6 spins at beta = 1. The best model without correlations, the product of the exact marginals
    (uniform spins), has KL = D log 2 - H(P), the multi-information (about 1.6 nats here), and an
    untrained network, a zero learning rate or a loss with the wrong sign stay near or above it.
    The chain is an order-1 Markov chain that every architecture here can represent, and with
    N = 4,000 samples the statistical floor of the KL is of order (free parameters of the chain)
    / 2N, about 1e-3 nats. Asking for a tenth of the multi-information leaves two orders of
    magnitude for the optimisation."""
    states, p = open_ising_chain(6, beta=1.0)
    g = torch.Generator().manual_seed(30)
    data = states[torch.multinomial(p, 4000, replacement=True, generator=g)].float()  # (4000, 6)
    torch.manual_seed(31)  # initial weights
    model = TRAINABLE[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model.loss(data[torch.randint(4000, (200,), generator=g)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        log_q = model.double().log_prob(states)  # (64,)
    kl = float((p * (p.log() - log_q)).sum())
    multi_information = 6 * math.log(2) + float((p * p.log()).sum())
    assert multi_information == pytest.approx(5 * (math.log(2) - scipy.stats.entropy([1, math.exp(-2)])))
    assert kl < 0.1 * multi_information, f"{name}: KL {kl:.4f} nats, multi-information {multi_information:.4f}"


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("x, error, match", [
    (torch.ones(3, 5), ValueError, r"shape \(n, 4\)"),
    (torch.ones(2, 2, 2), ValueError, r"shape \(n, 4\)"),
    (torch.zeros(2, 4), ValueError, r"values in \[-1.0, 1.0\].*0.0"),
    (torch.full((2, 4), 0.5), ValueError, "0.5"),
    ([[1.0, 1.0, 1.0, 1.0]], TypeError, "torch.Tensor"),
])
def test_bad_data_is_rejected_with_a_clear_message(x, error, match):
    with pytest.raises(error, match=match):
        MADE(4, [8]).log_prob(x)


def test_bad_levels_and_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"values in \[0, 1, .*16\].*17"):
        MADE(3, [4], n_classes=17).log_prob(torch.tensor([[0, 16, 17]]))
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, [4], order=[0, 0, 1])
    with pytest.raises(ValueError, match="hidden_sizes"):
        MADE(3, [4, 0])
    with pytest.raises(ValueError, match="n_classes"):
        MADE(3, [4], n_classes=1)
    with pytest.raises(ValueError, match="value_set"):
        GRUAutoregressive(3, n_classes=3, value_set=(0, 2, 1))
    with pytest.raises(ValueError, match="window"):
        WindowMLP(3, window=0)
    with pytest.raises(ValueError, match="hidden_size"):
        NADE(3, hidden_size=0)
    with pytest.raises(ValueError, match="kernel_size >= 2"):
        CausalConv1dAR(3, first_kernel_size=1)
    with pytest.raises(ValueError, match="positive int"):
        CausalConv1dAR(3).sample(0)
    permutations, signs = lattice_symmetries(2)
    with pytest.raises(ValueError, match="permutation"):
        SymmetrizedModel(MADE(4, [4]), permutations.flip(0)[:, [0, 0, 1, 2]])
    with pytest.raises(ValueError, match="spins"):
        SymmetrizedModel(MADE(4, [4]), permutations, signs).log_prob(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        random_symmetry(torch.ones(2, 5), permutations, signs)
