"""gmcourse.transformer against independent oracles: torch's attention, nn.MultiheadAttention,
Jacobians for causality, exact enumeration for normalisation, and chi-square tests for sampling."""

import itertools
import math

import pytest
import torch
from torch import nn

from gmcourse.autoregressive import SymmetrizedModel
from gmcourse.transformer import (GRULanguageModel, MultiHeadAttention, TransformerAR, TransformerBlock,
                                  Vocabulary, causal_mask, scaled_dot_product_attention, sinusoidal_positions,
                                  softmax)


def all_spin_sequences(n):
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=torch.float64)


def all_strings(symbols, max_length):
    return [""] + ["".join(p) for length in range(1, max_length + 1) for p in itertools.product(symbols, repeat=length)]


def chi_square_sigmas(counts, probs):
    """(chi^2 - dof) / sqrt(2 dof) for observed counts against expected probabilities (every
    expected count >= 5: smaller cells are lumped into one)."""
    n = counts.sum()
    expected = n * probs
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    expected = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = expected > 0
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = keep.sum() - 1
    return float((chi2 - dof) / math.sqrt(2 * dof))


# --- the pieces ---------------------------------------------------------------------------


def test_sinusoidal_positions_follow_the_closed_form():
    pe = sinusoidal_positions(7, 6)
    for d in range(7):
        for i in range(3):
            angle = d / 10000 ** (2 * i / 6)
            assert pe[d, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[d, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sinusoidal_positions(3, 5).shape == (3, 5)  # odd width: the last sine has no cosine partner


def test_softmax_with_inverse_temperature_and_its_limits():
    torch.manual_seed(0)
    s = torch.randn(4, 9, dtype=torch.float64)
    for beta in (0.3, 1.0, 2.5):
        torch.testing.assert_close(softmax(s, beta), torch.softmax(beta * s, dim=-1))
    torch.testing.assert_close(softmax(s, 1e-9), torch.full_like(s, 1 / 9))  # beta -> 0: uniform
    hot = softmax(s, 1e4)
    torch.testing.assert_close(hot, nn.functional.one_hot(s.argmax(-1), 9).double())  # beta -> inf: argmax
    masked = s.clone()
    masked[:, 3:] = float("-inf")
    assert (softmax(masked)[:, 3:] == 0).all()
    with pytest.raises(ValueError, match="beta must be positive"):
        softmax(s, 0.0)


def test_causal_mask_lets_each_position_read_itself_and_earlier_ones():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_torch_scaled_dot_product_attention(causal):
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 5)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(7) if causal else None)
    expected = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 7))
    if causal:
        assert (weights[..., causal_mask(7).logical_not()] == 0).all()


def test_attention_rejects_mismatched_shapes_and_non_boolean_masks():
    q = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="do not fit"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 3), torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(5, 5))


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_equals_nn_multiheadattention_with_copied_weights(causal):
    torch.manual_seed(2)
    ours = MultiHeadAttention(d_model=12, n_heads=3)
    theirs = nn.MultiheadAttention(12, 3, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        theirs.out_proj.weight.copy_(ours.output.weight)
        theirs.out_proj.bias.copy_(ours.output.bias)
    x = torch.randn(4, 6, 12)
    mask = causal_mask(6) if causal else None
    out, weights = ours(x, mask, return_weights=True)
    expected, expected_weights = theirs(x, x, x, attn_mask=None if mask is None else ~mask,  # torch: True = blocked
                                        average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)


def test_heads_split_and_merge_are_inverse_and_take_contiguous_feature_slices():
    attention = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    heads = attention.split_heads(x)
    assert heads.shape == (2, 2, 3, 4)
    torch.testing.assert_close(heads[:, 1], x[..., 4:])
    torch.testing.assert_close(attention.merge_heads(heads), x)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(d_model=10, n_heads=3)


def test_a_block_without_positions_is_permutation_equivariant():
    torch.manual_seed(3)
    block = TransformerBlock(d_model=8, n_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm])


def test_causality_through_the_jacobian_of_the_stack():
    """No output position depends on a later input position: the Jacobian of the block stack with
    respect to its (embedded) inputs is block lower-triangular."""
    torch.manual_seed(4)
    model = TransformerAR(n_classes=2, context=6, d_model=8, n_heads=2).double()
    blocks = model.stack.blocks
    mask = causal_mask(6)

    def run(h):
        for block in blocks:
            h = block(h[None], mask)[0]
        return h

    h = torch.randn(6, 8, dtype=torch.float64)
    jacobian = torch.func.jacrev(run)(h)  # (6, 8, 6, 8): output d, feature, input d', feature
    influence = jacobian.abs().sum(dim=(1, 3))  # (6, 6)
    assert (influence[~mask] == 0).all()
    assert (influence[mask] > 0).all()


def test_each_conditional_depends_on_earlier_variables_only():
    """d log P(x_d = c | x_<d) / d x_d' = 0 for every d' >= d, through the one-hot input embedding."""
    torch.manual_seed(5)
    model = TransformerAR(n_classes=3, context=5, d_model=8, n_heads=2).double()
    classes = torch.tensor([[2, 0, 1, 1, 0]])
    shifted = model._shifted(classes)

    def conditionals(one_hot):
        h = one_hot @ model.stack.embedding.weight + model.stack.position
        for block in model.stack.blocks:
            h = block(h, model.stack.mask)
        return torch.log_softmax(model.stack.head(model.stack.norm(h)), -1)[0]  # (D, C)

    one_hot = nn.functional.one_hot(shifted, 4).double()  # (1, D, C + 1): input d holds x_{d-1}
    jacobian = torch.func.jacrev(conditionals)(one_hot)  # (D, C, 1, D, C + 1)
    influence = jacobian.abs().sum(dim=(1, 2, 4))  # (D output, D input position)
    # input position p holds x_{p-1} (position 0: the start token): output d may read p <= d only
    assert (influence.triu(1) == 0).all()
    assert (influence.diagonal() > 0).all()
    torch.testing.assert_close(conditionals(one_hot), model.conditional_log_probs(classes.double())[0])


# --- fixed-length sequences -----------------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "none"])
def test_probabilities_of_all_spin_sequences_sum_to_one(positions):
    torch.manual_seed(6)
    model = TransformerAR(n_classes=2, context=10, positions=positions).double()
    total = model.log_prob(all_spin_sequences(10)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.slow
def test_probabilities_of_all_twelve_spin_sequences_sum_to_one():
    torch.manual_seed(7)
    model = TransformerAR(n_classes=2, context=12, n_layers=3).double()
    total = model.log_prob(all_spin_sequences(12)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_conditionals_agree_with_log_prob_and_take_any_value_set():
    torch.manual_seed(8)
    model = TransformerAR(n_classes=3, context=4, value_set=(0.0, 1.0, 2.0)).double()
    x = torch.tensor([[0.0, 2.0, 1.0, 1.0], [2.0, 2.0, 0.0, 1.0]])
    conditionals = model.conditional_log_probs(x)
    assert conditionals.shape == (2, 4, 3)
    chosen = conditionals.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(chosen, model.log_prob(x))
    everything = torch.tensor(list(itertools.product([0.0, 1.0, 2.0], repeat=4)))
    torch.testing.assert_close(model.log_prob(everything).exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_spin_sampling_frequencies_match_the_probabilities():
    torch.manual_seed(9)
    model = TransformerAR(n_classes=2, context=6)
    with torch.no_grad():  # make the distribution far from uniform
        model.stack.head.weight.mul_(30)
    states = all_spin_sequences(6).float()
    probs = model.log_prob(states).exp().detach().double()
    samples = model.sample(20_000, seed=0)
    index = ((samples + 1) / 2).long() @ (2 ** torch.arange(5, -1, -1))  # itertools order: first spin is the top bit
    counts = torch.bincount(index, minlength=64).double()
    assert abs(chi_square_sigmas(counts, probs)) < 5


def test_the_key_value_cache_gives_the_same_draws():
    torch.manual_seed(10)
    model = TransformerAR(n_classes=2, context=9)
    torch.testing.assert_close(model.sample(50, seed=3), model.sample(50, seed=3, use_cache=False))
    for context in (7, 40):  # long strings too: the start token must stay the first input throughout
        strings = TransformerAR(vocabulary="xy(", context=context)
        assert strings.sample(50, seed=4) == strings.sample(50, seed=4, use_cache=False)


def test_symmetrised_transformer_stays_normalised():
    torch.manual_seed(11)
    base = TransformerAR(n_classes=2, context=8).double()
    identity = torch.arange(8)
    model = SymmetrizedModel(base, torch.stack([identity, identity.flip(0)] * 2), torch.tensor([1.0, 1, -1, -1]))
    states = all_spin_sequences(8)
    torch.testing.assert_close(model.log_prob(states).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(model.log_prob(states), model.log_prob(-states.flip(1)))


def test_training_lowers_the_loss_towards_a_simple_distribution():
    torch.manual_seed(12)
    x = torch.ones(256, 5)
    x[::2] *= -1  # half all-up, half all-down: entropy log 2
    model = TransformerAR(n_classes=2, context=5, d_model=16, n_heads=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(x).backward()
        optimizer.step()
    assert model.loss(x).item() < math.log(2) + 0.05  # uniform would be 5 log 2


# --- strings with <eos> ----------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: TransformerAR(vocabulary="ab", context=6),
                                  lambda: GRULanguageModel("ab", context=6, hidden_size=8)])
def test_string_probabilities_sum_to_one_up_to_the_context(make):
    torch.manual_seed(13)
    model = make().double()
    total = model.log_prob(all_strings("ab", 6)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: TransformerAR(vocabulary="ab", context=8),
                                  lambda: GRULanguageModel("ab", context=8, hidden_size=8)])
def test_below_the_context_the_remainder_is_the_probability_of_longer_prefixes(make):
    """sum_{len <= B} P(x) + P(the first B + 1 characters are no <eos>) = 1, with the remainder
    computed from prefix probabilities (products of conditionals), not from the strings."""
    torch.manual_seed(14)
    model = make().double()
    bound = 4
    short = model.log_prob(all_strings("ab", bound)).exp().sum()
    prefixes = ["".join(p) for p in itertools.product("ab", repeat=bound + 1)]
    # the per-position log-probabilities of a long string, summed over its first bound + 1 characters
    padded = [p + "a" for p in prefixes]  # any continuation; positions <= bound + 1 do not see it
    prefix_log_probs = model.token_log_probs(padded)[:, :bound + 1].sum(-1)
    torch.testing.assert_close(short + prefix_log_probs.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_the_eos_term_is_part_of_a_strings_probability():
    torch.manual_seed(15)
    model = TransformerAR(vocabulary="ab", context=5).double()
    per_position = model.token_log_probs(["ab"])[0]
    assert per_position[2] < 0  # the <eos> after "ab"
    assert (per_position[3:] == 0).all()
    torch.testing.assert_close(model.log_prob(["ab"])[0], per_position[:3].sum())
    # the longest string's <eos> is certain
    assert model.token_log_probs(["abbab"])[0, 5] == 0


@pytest.mark.parametrize("make", [lambda: GRULanguageModel("ab", context=3, hidden_size=8),
                                  lambda: TransformerAR(vocabulary="ab", context=3, d_model=16, n_heads=2)])
def test_string_sampling_frequencies_match_the_probabilities(make):
    torch.manual_seed(16)
    model = make()
    with torch.no_grad():  # make the distribution far from uniform
        model.head.weight.mul_(5) if isinstance(model, GRULanguageModel) else model.stack.head.weight.mul_(10)
    strings = all_strings("ab", 3)
    probs = model.log_prob(strings).exp().detach().double()
    assert probs.max() > 3 * probs.min()
    samples = model.sample(20_000, seed=1)
    counts = torch.tensor([samples.count(s) for s in strings], dtype=torch.float64)
    assert counts.sum() == 20_000
    assert abs(chi_square_sigmas(counts, probs)) < 5


def test_vocabulary_round_trip_and_errors():
    vocabulary = Vocabulary("ab()")
    tokens, lengths = vocabulary.encode(["a(b)", ""], max_length=5)
    assert tokens.tolist() == [[0, 2, 1, 3, 4, 4], [4, 4, 4, 4, 4, 4]]
    assert lengths.tolist() == [4, 0]
    assert vocabulary.decode(tokens) == ["a(b)", ""]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocabulary.encode(["abc"], 5)
    with pytest.raises(ValueError, match="context is 5"):
        vocabulary.encode(["aaaaaa"], 5)
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("aa")


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        TransformerAR(context=4)
    with pytest.raises(ValueError, match="exactly one"):
        TransformerAR(n_classes=2, context=4, vocabulary="ab")
    with pytest.raises(ValueError, match="context"):
        TransformerAR(n_classes=2, context=0)
    with pytest.raises(ValueError, match="positions"):
        TransformerAR(n_classes=2, context=4, positions="rotary")
    model = TransformerAR(n_classes=2, context=4)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        model.log_prob(torch.ones(3, 5))
    with pytest.raises(ValueError, match="values in"):
        model.log_prob(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="fixed-length"):
        TransformerAR(vocabulary="ab", context=4).conditional_log_probs(["a"])


def test_string_models_reject_strings_they_cannot_score():
    for model in (TransformerAR(vocabulary="ab", context=4), GRULanguageModel("ab", context=4, hidden_size=8)):
        with pytest.raises(ValueError, match="'c' of 'abc' is not in the vocabulary"):
            model.log_prob(["ab", "abc"])
        with pytest.raises(ValueError, match="'ababa' has 5 characters; the model's context is 4"):
            model.log_prob(["ababa"])
        with pytest.raises(TypeError, match="list of str"):
            model.log_prob("ab")


# --- logits, attention weights and the key-value cache ---------------------------------------


def test_forward_gives_the_logits_of_the_conditionals():
    torch.manual_seed(17)
    spins = TransformerAR(n_classes=2, context=5).double()
    x = all_spin_sequences(5)[::7].contiguous()
    logits = spins(x)
    assert logits.shape == (len(x), 5, 2)
    torch.testing.assert_close(torch.log_softmax(logits, -1), spins.conditional_log_probs(x))
    strings = TransformerAR(vocabulary="ab", context=4).double()
    batch = ["ab", "", "abba"]
    logits = strings(batch)
    assert logits.shape == (3, 5, 3)  # longest string + 1 positions, C + 1 symbols
    chosen = torch.log_softmax(logits, -1).gather(-1, torch.tensor([[0, 1, 2, 2, 2], [2] * 5, [0, 1, 1, 0, 2]])[..., None])
    inside = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close((chosen[..., 0] * inside).sum(-1), strings.log_prob(batch))


def test_attention_weights_are_causal_distributions_over_the_inputs():
    torch.manual_seed(18)
    spins = TransformerAR(n_classes=2, context=6, n_layers=3, n_heads=2)
    weights = spins.attention_weights(all_spin_sequences(6)[:4].float())
    assert len(weights) == 3
    strings = TransformerAR(vocabulary="ab", context=9, n_heads=4)
    string_weights = strings.attention_weights(["abab", "a"])
    assert [w.shape for w in string_weights] == [(2, 4, 5, 5)] * 2  # the longest string + 1 positions
    for w in weights + string_weights:
        length = w.shape[-1]
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert (w[..., ~causal_mask(length)] == 0).all()
    assert weights[0].shape == (4, 2, 6, 6)


def test_cached_decoding_reproduces_the_full_pass():
    """Feeding the tokens one at a time through the key-value cache gives the logits of the full
    masked pass at every position."""
    torch.manual_seed(19)
    model = TransformerAR(n_classes=3, context=7, value_set=(0.0, 1.0, 2.0)).double()
    x = torch.tensor([[0.0, 2.0, 1.0, 1.0, 0.0, 2.0, 2.0], [1.0, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0]])
    inputs = model._shifted(model.classes(x))
    caches = [{} for _ in model.stack.blocks]
    one_at_a_time = torch.cat([model.stack(inputs[:, d:d + 1], caches=caches) for d in range(7)], dim=1)
    torch.testing.assert_close(one_at_a_time, model(x))
    with pytest.raises(ValueError, match="at most 7 positions"):
        model.stack(inputs[:, :1], caches=caches)
