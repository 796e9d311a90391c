r"""Chapter 11's text with an exact answer: a stochastic grammar whose sentences have computable
probabilities, an n-gram baseline, and a small real text for fun.

No corpus can be downloaded, and a real corpus has no exact answer. :class:`BracketGrammar` is a
small probabilistic context-free grammar over single characters with two long-range rules that
an n-gram model cannot follow:

* **agreement**: a clause is a noun, an optional bracketed insertion, and a verb whose number
  (singular: lower case, plural: upper case) agrees with the noun's, however long the insertion;
* **matched brackets**: an insertion opens with ``(`` or ``[`` and closes with the same kind after
  one or two nested clauses.

::

    clause(k)  ->  noun  [insertion(k)]  verb          (the verb agrees with the noun)
    insertion  ->  open clause(k+1) [clause(k+1)] close (open/close: "()" or "[]")

The grammar is unambiguous (a left-to-right parse is deterministic), so the probability of a
sentence is the product of the choices that made it (:meth:`BracketGrammar.log_prob`), and
its entropy is the expected sum of the entropies of those choices (:meth:`BracketGrammar.entropy`).
Nesting stops at depth ``max_depth``, so every sentence is at most ``max_length`` characters long.

:func:`kl_per_sentence` estimates :math:`\mathrm{KL}(P_\text{source}\,\|\,P_\theta)
= \mathbb E_{x \sim P_\text{source}}[\log P_\text{source}(x) - \log P_\theta(x)]` from fresh
sentences, with its standard error.
"""

from __future__ import annotations

import math
import re
import numpy as np
import torch

from .divergences import Estimate, monte_carlo_mean
from .utils import make_generator

__all__ = ["BracketGrammar", "get_source", "kl_per_sentence", "long_range_errors", "NGramModel", "real_text",
           "text_lines"]


class BracketGrammar:
    """Sentences of nouns, verbs that agree with them, and matched, nested brackets.

    ``nouns``/``verbs``: the singular forms (lower case); the plural forms are their upper case.
    ``insertion_probs[k]``: the probability that a clause at depth k has an insertion (depth
    ``max_depth`` never does); ``two_clause_prob``: that an insertion holds two clauses, not one."""

    def __init__(self, nouns: str = "abc", verbs: str = "xy", brackets: tuple[str, ...] = ("()", "[]"),
                 insertion_probs: tuple[float, ...] = (0.75, 0.5, 0.25), two_clause_prob: float = 0.4):
        if not nouns or not verbs or not brackets:
            raise ValueError("nouns, verbs and brackets must not be empty")
        if any(len(pair) != 2 for pair in brackets):
            raise ValueError(f"each bracket must be an open and a close character, got {brackets}")
        if not all(0 <= p <= 1 for p in (*insertion_probs, two_clause_prob)):
            raise ValueError("insertion_probs and two_clause_prob must be probabilities in [0, 1]")
        self.nouns, self.verbs, self.brackets = nouns, verbs, tuple(brackets)
        self.insertion_probs = tuple(float(p) for p in insertion_probs)
        self.two_clause_prob = float(two_clause_prob)
        self.max_depth = len(self.insertion_probs)
        self.vocabulary = nouns + nouns.upper() + verbs + verbs.upper() + "".join(self.brackets)
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"characters must be distinct, got {self.vocabulary!r}")
        self._closing = {pair[0]: pair[1] for pair in self.brackets}

    def __repr__(self):
        return (f"BracketGrammar(nouns={self.nouns!r}, verbs={self.verbs!r}, brackets={self.brackets}, "
                f"insertion_probs={self.insertion_probs}, two_clause_prob={self.two_clause_prob})")

    def _insertion_prob(self, depth: int) -> float:
        return self.insertion_probs[depth] if depth < self.max_depth else 0.0

    # -- probabilities ---------------------------------------------------------------------
    def log_prob(self, strings) -> torch.Tensor:
        """Exact log-probabilities (n,) float64 of sentences; -inf for strings the grammar cannot make."""
        if isinstance(strings, str):
            raise TypeError("strings must be a list of str, not one str")
        return torch.tensor([self._log_prob_one(s) for s in strings], dtype=torch.float64)

    def _log_prob_one(self, s: str) -> float:
        try:
            log_p, end = self._parse_clause(s, 0, 0)
        except _NotInLanguage:
            return -math.inf
        return log_p if end == len(s) else -math.inf

    def _parse_clause(self, s: str, at: int, depth: int) -> tuple[float, int]:
        """log-probability of the clause starting at ``at`` and the position after it."""
        if at >= len(s):
            raise _NotInLanguage
        noun = s[at]
        if noun in self.nouns:
            verbs = self.verbs
        elif noun in self.nouns.upper():
            verbs = self.verbs.upper()
        else:
            raise _NotInLanguage
        log_p = math.log(0.5 / len(self.nouns))  # the number, then the noun
        at += 1
        p_insert = self._insertion_prob(depth)
        if at < len(s) and s[at] in self._closing:
            if p_insert == 0:
                raise _NotInLanguage
            close = self._closing[s[at]]
            log_p += math.log(p_insert / len(self.brackets))
            first, at = self._parse_clause(s, at + 1, depth + 1)
            log_p += first
            if at < len(s) and s[at] != close:  # a second clause
                second, at = self._parse_clause(s, at, depth + 1)
                log_p += second + math.log(self.two_clause_prob)
            elif self.two_clause_prob < 1:
                log_p += math.log(1 - self.two_clause_prob)
            else:
                raise _NotInLanguage
            if at >= len(s) or s[at] != close:
                raise _NotInLanguage
            at += 1
        elif p_insert < 1:
            log_p += math.log(1 - p_insert)
        else:
            raise _NotInLanguage
        if at >= len(s) or s[at] not in verbs:
            raise _NotInLanguage
        return log_p + math.log(1 / len(verbs)), at + 1

    def _clause_entropy(self, depth: int) -> float:
        p = self._insertion_prob(depth)
        h = math.log(2 * len(self.nouns)) + math.log(len(self.verbs)) + _binary_entropy(p)
        if p > 0:
            q = self.two_clause_prob
            inner = self._clause_entropy(depth + 1)
            h += p * (math.log(len(self.brackets)) + _binary_entropy(q) + (1 + q) * inner)
        return h

    def entropy(self) -> float:
        """Exact entropy of a sentence in nats: each clause contributes the entropy of its choices
        (number and noun, insertion or not, bracket kind and clause count, verb)."""
        return self._clause_entropy(0)

    def _length_distribution(self, depth: int) -> np.ndarray:
        """Probabilities of clause lengths 0, 1, 2, ... at ``depth`` (exact, by convolution)."""
        p = self._insertion_prob(depth)
        bare = np.zeros(3)
        bare[2] = 1 - p  # noun + verb
        if p == 0:
            return bare
        inner = self._length_distribution(depth + 1)
        one, two = inner, np.convolve(inner, inner)
        q = self.two_clause_prob
        content = np.zeros(len(two))
        content[:len(one)] += (1 - q) * one
        content += q * two
        with_insertion = np.concatenate([np.zeros(4), p * content])  # noun, open, close, verb
        out = np.zeros(max(len(bare), len(with_insertion)))
        out[:len(bare)] += bare
        out[:len(with_insertion)] += with_insertion
        return out

    def length_distribution(self) -> np.ndarray:
        """P(length = l) for l = 0 .. max_length (float64 array summing to one)."""
        return self._length_distribution(0)

    @property
    def max_length(self) -> int:
        return len(self.length_distribution()) - 1

    def sentences(self, max_length: int):
        """Every sentence of at most ``max_length`` characters with its probability, as a list of
        ``(sentence, probability)``, generated from the rules (not by parsing)."""
        return self._expand(0, max_length)

    def _expand(self, depth: int, budget: int):
        """All (clause, probability) pairs at ``depth`` with at most ``budget`` characters."""
        if budget < 2:
            return []
        p_insert = self._insertion_prob(depth)
        insertions = [("", 1 - p_insert)] if p_insert < 1 else []
        if p_insert > 0 and budget >= 6:  # noun, open, a clause of >= 2, close, verb
            room = budget - 4
            q = self.two_clause_prob
            contents = [(a, pa * (1 - q)) for a, pa in self._expand(depth + 1, room)] if q < 1 else []
            if q > 0:
                for a, pa in self._expand(depth + 1, room - 2):
                    contents += [(a + b, pa * pb * q) for b, pb in self._expand(depth + 1, room - len(a))]
            insertions += [(o + c + k, p_insert / len(self.brackets) * pc)
                           for o, k in self.brackets for c, pc in contents]
        out = []
        for nouns, verbs in ((self.nouns, self.verbs), (self.nouns.upper(), self.verbs.upper())):
            for noun in nouns:
                for insertion, pi in insertions:
                    for verb in verbs:
                        out.append((noun + insertion + verb, 0.5 / len(nouns) * pi / len(verbs)))
        return out

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> list[str]:
        """``n`` independent sentences, drawn by expanding the rules with ``generator``'s random numbers."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        g = make_generator(seed, generator)
        # one block of uniforms per sentence: at most 6 draws per clause (number, noun, insertion,
        # bracket kind, clause count, verb) and at most 2^(max_depth + 1) - 1 clauses
        n_clauses = 1 + sum(int(2 ** k) for k in range(1, self.max_depth + 1))
        uniforms = torch.rand(n, 6 * n_clauses, generator=g, dtype=torch.float64).tolist()
        return [self._draw_clause(iter(row), 0) for row in uniforms]

    def _draw_clause(self, u, depth: int) -> str:
        plural = next(u) < 0.5
        nouns, verbs = (self.nouns.upper(), self.verbs.upper()) if plural else (self.nouns, self.verbs)
        noun = nouns[min(int(next(u) * len(nouns)), len(nouns) - 1)]
        insertion = ""
        if next(u) < self._insertion_prob(depth):
            index = min(int(next(u) * len(self.brackets)), len(self.brackets) - 1)
            open_, close = self.brackets[index]
            two = next(u) < self.two_clause_prob
            inner = self._draw_clause(u, depth + 1) + (self._draw_clause(u, depth + 1) if two else "")
            insertion = open_ + inner + close
        verb = verbs[min(int(next(u) * len(verbs)), len(verbs) - 1)]
        return noun + insertion + verb


class _NotInLanguage(Exception):
    pass


def _binary_entropy(p: float) -> float:
    return -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)


def get_source(name: str = "brackets") -> BracketGrammar:
    """The sentence sources of the course by name: ``"brackets"`` (chapter 11, ``text-transformer``)."""
    sources = {"brackets": BracketGrammar}
    if name not in sources:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(sources)}")
    return sources[name]()


def kl_per_sentence(source, model, n: int = 10_000, seed: int = 0) -> Estimate:
    r""":math:`\mathrm{KL}(P_\text{source}\,\|\,P_\theta)` per sentence in nats, with its standard
    error, from ``n`` fresh sentences: the mean of :math:`\log P_\text{source}(x) - \log P_\theta(x)`."""
    sentences = source.sample(n, seed=seed)
    with torch.no_grad():
        log_q = torch.cat([model.log_prob(sentences[i:i + 4096]).double().cpu() for i in range(0, n, 4096)])
    return monte_carlo_mean(source.log_prob(sentences) - log_q)


def long_range_errors(source: BracketGrammar, model, sentences: list[str]) -> dict:
    """Where a model breaks the grammar's long-range rules. At every closing bracket and every verb of
    ``sentences`` the source's next symbol is constrained: the bracket must match its opening one,
    the verb must agree with its noun. The probability a model puts on the *forbidden* symbols
    there (the other closing bracket(s); the verbs of the other number) would be zero under the
    source. Returns arrays ``kind`` ("close" or "verb"), ``distance`` (characters back to the
    opening bracket or the noun) and ``forbidden_mass``, one entry per event, from
    ``model.next_token_distributions``."""
    probs = torch.as_tensor(model.next_token_distributions(sentences)).double().cpu().numpy()
    index = {c: i for i, c in enumerate(source.vocabulary)}
    closing = [pair[1] for pair in source.brackets]
    opening = {pair[0]: pair[1] for pair in source.brackets}
    kinds, distances, masses = [], [], []
    for row, sentence in enumerate(sentences):
        stack = []  # nouns and opening brackets not yet closed / agreed with
        for d, c in enumerate(sentence):
            if c in opening or c.lower() in source.nouns:
                stack.append((d, c))
            elif c in closing:
                start, open_ = stack.pop()
                forbidden = [k for k in closing if k != opening[open_]]
                kinds.append("close")
            else:  # a verb
                start, noun = stack.pop()
                forbidden = source.verbs.upper() if noun.islower() else source.verbs
                kinds.append("verb")
            if c in closing or not (c in opening or c.lower() in source.nouns):
                distances.append(d - start)
                masses.append(float(sum(probs[row, d, index[k]] for k in forbidden)))
    return {"kind": np.array(kinds), "distance": np.array(distances), "forbidden_mass": np.array(masses)}


class NGramModel:
    r"""The n-gram model of order ``order``: :math:`P(x_d \mid x_{d-k+1..d-1})` from counts with
    add-:math:`\alpha` smoothing, the ⟨eos⟩ token included, the history padded with a start symbol.
    Every conditional gives ⟨eos⟩ a positive probability, so :math:`P` sums to one over all
    finite strings. ``log_prob_kind = "exact"``."""

    log_prob_kind = "exact"

    def __init__(self, vocabulary: str, order: int = 2, smoothing: float = 0.1):
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if not smoothing > 0:
            raise ValueError(f"smoothing must be positive, got {smoothing}")
        self.vocabulary, self.order, self.smoothing = vocabulary, order, float(smoothing)
        self.eos = len(vocabulary)  # also the start symbol of the history
        self._index = {c: i for i, c in enumerate(vocabulary)}
        self.counts: dict[tuple[int, ...], np.ndarray] = {}

    def _tokens(self, string: str) -> list[int]:
        try:
            return [self._index[c] for c in string] + [self.eos]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} of {string!r} is not in the vocabulary "
                             f"{self.vocabulary!r}") from None

    def _events(self, string: str):
        history = [self.eos] * (self.order - 1)
        for token in self._tokens(string):
            yield tuple(history[len(history) - self.order + 1:]) if self.order > 1 else (), token
            history.append(token)

    def fit(self, strings) -> "NGramModel":
        counts: dict[tuple[int, ...], np.ndarray] = {}
        for string in strings:
            for history, token in self._events(string):
                counts.setdefault(history, np.zeros(len(self.vocabulary) + 1))[token] += 1
        self.counts = counts
        return self

    def _conditional(self, history: tuple[int, ...]) -> np.ndarray:
        counts = self.counts.get(history, np.zeros(len(self.vocabulary) + 1))
        return (counts + self.smoothing) / (counts.sum() + self.smoothing * len(counts))

    def log_prob(self, strings) -> torch.Tensor:
        """Exact log-probabilities (n,) float64, the ⟨eos⟩ factor included."""
        if isinstance(strings, str):
            raise TypeError("strings must be a list of str, not one str")
        return torch.tensor([sum(math.log(self._conditional(h)[t]) for h, t in self._events(s)) for s in strings],
                            dtype=torch.float64)

    def next_token_distributions(self, strings) -> torch.Tensor:
        """:math:`P(\\cdot \\mid \\text{history})` (n, L, C + 1) at every position up to the longest
        string + 1 (rows past a string's ⟨eos⟩ are zeros)."""
        width = max(map(len, strings)) + 1
        out = torch.zeros(len(strings), width, len(self.vocabulary) + 1, dtype=torch.float64)
        for row, string in enumerate(strings):
            for d, (history, _) in enumerate(self._events(string)):
                out[row, d] = torch.from_numpy(self._conditional(history))
        return out

    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> list[str]:
        """``n`` strings, drawn one character at a time until ⟨eos⟩."""
        g = make_generator(seed, generator)
        out = []
        for _ in range(n):
            history, chars = [self.eos] * (self.order - 1), []
            while True:
                probs = torch.as_tensor(self._conditional(tuple(history[len(history) - self.order + 1:])
                                                          if self.order > 1 else ()))
                token = int(torch.multinomial(probs, 1, generator=g))
                if token == self.eos:
                    break
                chars.append(self.vocabulary[token])
                history.append(token)
            out.append("".join(chars))
        return out

    def n_params(self) -> int:
        """The number of free parameters: one conditional (C probabilities) per history seen."""
        return len(self.counts) * len(self.vocabulary)


REAL_TEXT_CHARACTERS = "abcdefghijklmnopqrstuvwxyz ,.;:'()-"


def real_text() -> str:
    """A small real English text that ships with Python: the prose of the help topics in the
    standard library's ``pydoc_data`` (code and tables dropped), lower-cased and reduced to
    :data:`REAL_TEXT_CHARACTERS`, as one string of paragraphs separated by newlines."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            if block.startswith((" ", "\t")) or "*" in block or "::" in block or "=" in block:
                continue  # code, headings, grammar rules
            words = " ".join(block.split()).lower()
            cleaned = "".join(c for c in words if c in REAL_TEXT_CHARACTERS)
            if len(cleaned) > 40:
                paragraphs.append(re.sub(" +", " ", cleaned))
    return "\n".join(paragraphs)


def text_lines(text: str, max_length: int = 64) -> list[str]:
    """``text`` cut into lines of at most ``max_length`` characters at spaces (no word is split;
    longer words are dropped)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            if len(word) > max_length:
                continue
            if line and len(line) + 1 + len(word) > max_length:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        if line:
            lines.append(line)
    return lines
