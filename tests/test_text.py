"""gmcourse.text: the bracket grammar's probabilities against an independent expansion of its
rules, its sampler against its probabilities (chi-square), its exact entropy and length
distribution, the n-gram model's normalisation, and the long-range structure an n-gram misses."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from gmcourse.text import (BracketGrammar, NGramModel, get_source, kl_per_sentence, long_range_errors, real_text,
                           text_lines)
from gmcourse.transformer import TransformerAR

SOURCE = get_source()
TINY = BracketGrammar(nouns="a", verbs="x", insertion_probs=(0.5, 0.5), two_clause_prob=0.5)


def test_every_sentence_of_a_small_grammar_is_enumerated_once_and_the_probabilities_sum_to_one():
    sentences = TINY.sentences(TINY.max_length)
    strings = [s for s, _ in sentences]
    assert len(set(strings)) == len(strings)  # unambiguous: one derivation per sentence
    assert sum(p for _, p in sentences) == pytest.approx(1.0, abs=1e-12)
    parsed = TINY.log_prob(strings)
    torch.testing.assert_close(parsed, torch.tensor([math.log(p) for _, p in sentences], dtype=torch.float64))


def test_below_a_length_bound_the_remainder_is_the_probability_of_longer_sentences():
    """sum over sentences of length <= B (enumerated from the rules) + P(length > B) (from the exact
    length distribution, computed by convolution) = 1, for the default grammar."""
    lengths = SOURCE.length_distribution()
    assert lengths.sum() == pytest.approx(1.0, abs=1e-12) and len(lengths) - 1 == SOURCE.max_length == 44
    for bound in (6, 12):
        enumerated = sum(p for _, p in SOURCE.sentences(bound))
        assert enumerated + lengths[bound + 1:].sum() == pytest.approx(1.0, abs=1e-12)


def test_strings_outside_the_language_have_probability_zero():
    bad = ["", "a", "ax)", "a(bx]x", "aX", "Ax", "a(bxCXcy)x", "a(x", "q", "a()x", "a(b(c(d(ax)x)x)x)x"]
    assert torch.isneginf(SOURCE.log_prob(bad)).all()
    good = ["ax", "a(bx)x", "A[by]X", "a(bxCX)y"]
    assert torch.isfinite(SOURCE.log_prob(good)).all()
    # agreement: the verb's number follows the noun's, whatever is in between
    assert torch.isneginf(SOURCE.log_prob(["a(bxCX)Y"])).all()
    with pytest.raises(TypeError, match="list of str"):
        SOURCE.log_prob("ax")


def test_the_sampler_matches_the_probabilities():
    n = 20_000
    counts = Counter(TINY.sample(n, seed=0))
    sentences = TINY.sentences(TINY.max_length)
    expected = np.array([n * p for _, p in sentences])
    observed = np.array([counts.get(s, 0) for s, _ in sentences], dtype=float)
    assert observed.sum() == n  # nothing outside the language
    big = expected >= 5  # cells with fewer expected draws are lumped into one
    observed = np.append(observed[big], observed[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    chi2, dof = float(((observed - expected) ** 2 / expected).sum()), len(expected) - 1
    assert abs(chi2 - dof) / math.sqrt(2 * dof) < 5


def test_the_default_sampler_matches_its_most_frequent_sentences():
    n = 20_000
    counts = Counter(SOURCE.sample(n, seed=1))
    # the 30 most probable sentences by their exact probability (choosing the cells by their
    # observed counts would bias the statistic upwards)
    frequent = [s for s, _ in sorted(SOURCE.sentences(8), key=lambda pair: -pair[1])[:30]]
    probs = SOURCE.log_prob(frequent).exp().numpy()
    observed = np.array([counts[s] for s in frequent], dtype=float)
    observed, expected = np.append(observed, n - observed.sum()), np.append(n * probs, n * (1 - probs.sum()))
    chi2, dof = float(((observed - expected) ** 2 / expected).sum()), len(expected) - 1
    assert abs(chi2 - dof) / math.sqrt(2 * dof) < 5
    assert SOURCE.sample(5, seed=3) == SOURCE.sample(5, seed=3)


def test_the_exact_entropy_equals_the_enumeration_and_the_monte_carlo_mean():
    sentences = TINY.sentences(TINY.max_length)
    assert TINY.entropy() == pytest.approx(-sum(p * math.log(p) for _, p in sentences), abs=1e-10)
    minus_log_p = -SOURCE.log_prob(SOURCE.sample(20_000, seed=2))
    stderr = float(minus_log_p.std()) / math.sqrt(len(minus_log_p))
    assert abs(float(minus_log_p.mean()) - SOURCE.entropy()) < 5 * stderr


def test_the_length_distribution_matches_the_enumeration():
    lengths = TINY.length_distribution()
    by_length = np.zeros(len(lengths))
    for s, p in TINY.sentences(TINY.max_length):
        by_length[len(s)] += p
    np.testing.assert_allclose(lengths, by_length, atol=1e-14)


def test_ngram_probabilities_sum_to_one_over_all_strings():
    """An n-gram with <eos> is normalised over all finite strings: enumerate every string up to
    length B and bound the rest by the probability of not having stopped after B characters."""
    model = NGramModel("ab", order=2, smoothing=0.5).fit(["ab", "aab", "b", ""])
    bound = 12
    total = sum(float(model.log_prob(["".join(p) for p in itertools.product("ab", repeat=length)]).exp().sum())
                for length in range(bound + 1))
    # the chance of no <eos> in the first B + 1 draws is at most (1 - min P(eos | history))^(B + 1)
    p_stop = min(model._conditional(h)[model.eos] for h in [(0,), (1,), (2,)])
    remainder_bound = (1 - p_stop) ** (bound + 1)
    assert 1 - remainder_bound <= total <= 1 + 1e-12


def test_ngram_sampling_matches_its_probabilities_and_errors_are_clear():
    model = NGramModel("ab", order=3, smoothing=1.0).fit(["abab", "ba", "aa"])
    samples = model.sample(4000, seed=0)
    short = [s for s in samples if len(s) <= 1]
    for s in ("", "a", "b"):
        p = float(model.log_prob([s]).exp())
        se = math.sqrt(p * (1 - p) / len(samples))
        assert abs(short.count(s) / len(samples) - p) < 5 * se
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.log_prob(["abc"])
    with pytest.raises(ValueError, match="order"):
        NGramModel("ab", order=0)


def test_the_grammar_has_structure_that_no_short_n_gram_captures():
    """The best n-gram fitted to many sentences stays many standard errors away from the source:
    it cannot match brackets or make a verb agree across an insertion."""
    train = SOURCE.sample(20_000, seed=4)
    for order in (2, 4):
        kl = kl_per_sentence(SOURCE, NGramModel(SOURCE.vocabulary, order, 0.01).fit(train), n=3000, seed=5)
        assert kl.mean > 20 * kl.stderr and kl.mean > 1.0


def test_real_text_is_plain_prose_cut_into_bounded_lines():
    text = real_text()
    assert len(text) > 50_000 and set(text) <= set("abcdefghijklmnopqrstuvwxyz ,.;:'()-\n")
    lines = text_lines(text, max_length=48)
    assert all(0 < len(line) <= 48 for line in lines) and len(lines) > 1000
    paragraph = text.split("\n")[0]
    assert " ".join(text_lines(paragraph, max_length=48)).split() == paragraph.split()  # nothing lost or split


def test_bad_grammar_arguments_and_unknown_sources_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        BracketGrammar(nouns="ax", verbs="xy")
    with pytest.raises(ValueError, match="probabilities"):
        BracketGrammar(insertion_probs=(1.5,))
    with pytest.raises(ValueError, match="unknown source"):
        get_source("shakespeare")
    with pytest.raises(ValueError, match="non-negative"):
        SOURCE.sample(-1)


def test_long_range_errors_find_each_rule_and_measure_the_forbidden_mass():
    uniform = NGramModel(SOURCE.vocabulary, order=1, smoothing=1.0).fit([])  # every symbol 1/(C + 1)
    report = long_range_errors(SOURCE, uniform, ["a(bxCX)y", "A[by]X"])
    assert report["kind"].tolist() == ["verb", "verb", "close", "verb", "verb", "close", "verb"]
    assert report["distance"].tolist() == [1, 1, 5, 7, 1, 3, 5]
    share = 1 / (len(SOURCE.vocabulary) + 1)
    expected = [2 * share if kind == "verb" else share for kind in report["kind"]]  # two verbs, one bracket
    np.testing.assert_allclose(report["forbidden_mass"], expected)
    # a network's conditionals work the same way; its masses are probabilities
    model = TransformerAR(vocabulary=SOURCE.vocabulary, context=SOURCE.max_length)
    errors = long_range_errors(SOURCE, model, SOURCE.sample(20, seed=0))
    assert ((errors["forbidden_mass"] >= 0) & (errors["forbidden_mass"] <= 1)).all()
    assert len(errors["kind"]) == len(errors["distance"]) == len(errors["forbidden_mass"]) > 20
