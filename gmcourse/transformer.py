r"""Chapter 11: the transformer as an autoregressive model, written out piece by piece.

    positions   pos(d): sinusoidal (Vaswani et al., 2017) or learned
    softmax     softmax_beta(s)_j = exp(beta s_j) / sum_j' exp(beta s_j')          eq. ch11-eq-softmax-beta
    attention   Attention(Q, K, V) = softmax_beta(Q K^T + mask) V, beta = 1/sqrt(d_k)  eq. ch11-eq-attention
    causal mask position d reads positions d' <= d only                          eq. ch11-eq-causal-mask
    multi-head  n_heads attentions on d_k = d_model / n_heads slices, concatenated   eq. ch11-eq-multihead
    block       x <- x + MHA(LN(x));  x <- x + MLP(LN(x))   (pre-norm, as GPT-2)  eq. ch11-eq-block

:class:`TransformerAR` stacks blocks into an exact autoregressive model. The inputs are the tokens
shifted right by one behind a start token, so the output at position d, which sees inputs
:math:`\le d`, predicts :math:`x_d` from :math:`x_{<d}` only. Two kinds of data:

* fixed-length sequences of ``n_classes`` symbols (spins: ``value_set`` (-1, +1), the convention of
  :mod:`gmcourse.autoregressive`), ``log_prob(x)`` for x of shape (n, D);
* variable-length strings over a ``vocabulary`` that end with the end-of-sequence token
  (eq. ``ch11-eq-eos``): :math:`P(x) = \prod_{d=1}^{\ell+1} P(x_d \mid x_{<d})` with
  :math:`x_{\ell+1} = \langle\text{eos}\rangle`. At position :math:`\ell_\text{max}+1` the model emits
  :math:`\langle\text{eos}\rangle` with probability one, so :math:`P` sums to exactly one over the
  strings of length at most :math:`\ell_\text{max}` (the context).

:class:`GRULanguageModel` is chapter 4's recurrent model for the same strings (the baseline of
chapter 11); both share :class:`StringModel`, which turns next-token logits into ``log_prob``,
``loss`` and ancestral ``sample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .autoregressive import AutoregressiveModel, _check_count
from .protocol import GenerativeModel
from .utils import make_generator

__all__ = ["sinusoidal_positions", "softmax", "causal_mask", "scaled_dot_product_attention", "MultiHeadAttention",
           "TransformerBlock", "TransformerStack", "Vocabulary", "StringModel", "TransformerAR", "GRULanguageModel",
           "fit"]


# ----------------------------------------------------------------------------------------------
# The pieces


def sinusoidal_positions(n_positions: int, d_model: int) -> torch.Tensor:
    r"""Position encodings (n_positions, d_model) of Vaswani et al. (2017):
    :math:`\mathrm{pos}(d)_{2i} = \sin(d / 10000^{2i/d_\text{model}})`,
    :math:`\mathrm{pos}(d)_{2i+1} = \cos(d / 10000^{2i/d_\text{model}})`, for d = 0, 1, ..."""
    for name, value in (("n_positions", n_positions), ("d_model", d_model)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n_positions, 1)
    frequency = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(d/2),)
    angle = position * frequency  # (n_positions, ceil(d/2))
    encoding = torch.empty(n_positions, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angle)
    encoding[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return encoding.float()


def softmax(scores: torch.Tensor, beta: float = 1.0, dim: int = -1) -> torch.Tensor:
    r"""Softmax with inverse temperature :math:`\beta` (eq. ``ch11-eq-softmax-beta``): a Boltzmann
    distribution with energies :math:`-s_j`. Entries of ``-inf`` (masked) get weight 0; every slice
    along ``dim`` needs at least one finite score."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    scaled = beta * scores
    scaled = scaled - scaled.amax(dim=dim, keepdim=True)  # exp never overflows; the result is unchanged
    weights = scaled.exp()
    return weights / weights.sum(dim=dim, keepdim=True)


def causal_mask(n_positions: int, device=None) -> torch.Tensor:
    """Boolean (n, n), True where attention is allowed: position d reads d' <= d
    (eq. ``ch11-eq-causal-mask``)."""
    return torch.ones(n_positions, n_positions, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, beta: float | None = None):
    r"""Attention (eq. ``ch11-eq-attention``): each query's output is an average of the values,
    weighted by :math:`\mathrm{softmax}_\beta` of its dot products with the keys.

    query (..., n_q, d_k), key (..., n_k, d_k), value (..., n_k, d_v); ``mask`` boolean,
    broadcastable to (..., n_q, n_k), True = allowed (masked scores become -inf *before* the
    softmax); ``beta`` defaults to :math:`1/\sqrt{d_k}`, which keeps the scores of unit-variance
    queries and keys at unit variance. Returns (output (..., n_q, d_v), weights (..., n_q, n_k))."""
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"query (..., n_q, d_k), key (..., n_k, d_k) and value (..., n_k, d_v) do not fit: "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    beta = 1.0 / math.sqrt(query.shape[-1]) if beta is None else beta
    scores = query @ key.transpose(-2, -1)  # (..., n_q, n_k)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor (True = allowed), got {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, beta)
    return weights @ value, weights


class MultiHeadAttention(nn.Module):
    r"""``n_heads`` attentions side by side (eq. ``ch11-eq-multihead``). The projections ``query``,
    ``key``, ``value`` map :math:`d_\text{model} \to d_\text{model}`; their outputs are cut into heads of
    :math:`d_k = d_\text{model}/n_\text{heads}` features, (n, L, n_heads, d_k) -> (n, n_heads, L, d_k), each
    head attends on its own, and ``output`` mixes the re-concatenated heads.

    ``cache`` (a dict, for decoding one position at a time) keeps the keys and values of earlier
    positions, so a new position costs one projection instead of recomputing the prefix."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} must be divisible by n_heads = {n_heads}")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.query = nn.Linear(d_model, d_model, bias=bias)
        self.key = nn.Linear(d_model, d_model, bias=bias)
        self.value = nn.Linear(d_model, d_model, bias=bias)
        self.output = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(n, L, d_model) -> (n, n_heads, L, d_k): head h holds features h d_k ... (h + 1) d_k - 1."""
        n, length, _ = x.shape
        return x.view(n, length, self.n_heads, self.d_k).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(n, n_heads, L, d_k) -> (n, L, d_model), the inverse of :meth:`split_heads`."""
        n, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(n, length, self.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: dict | None = None,
                return_weights: bool = False):
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (n, L, d_model={self.d_model}), got {tuple(x.shape)}")
        query, key, value = (self.split_heads(layer(x)) for layer in (self.query, self.key, self.value))
        if cache is not None:
            if "key" in cache:
                key = torch.cat([cache["key"], key], dim=2)
                value = torch.cat([cache["value"], value], dim=2)
            cache["key"], cache["value"] = key, value
        out, weights = scaled_dot_product_attention(query, key, value, mask)  # (n, H, L, d_k), (n, H, L, L')
        out = self.output(self.merge_heads(out))
        return (out, weights) if return_weights else out


class TransformerBlock(nn.Module):
    """Pre-norm block (eq. ``ch11-eq-block``): x <- x + MHA(LN(x)), then x <- x + MLP(LN(x)), the MLP
    with ``n_hidden`` units (default 4 d_model)."""

    def __init__(self, d_model: int, n_heads: int, n_hidden: int | None = None, activation: str = "gelu"):
        super().__init__()
        activations = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        n_hidden = 4 * d_model if n_hidden is None else n_hidden
        self.norm_attention = nn.LayerNorm(d_model)
        self.attention = MultiHeadAttention(d_model, n_heads)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, n_hidden), activations[activation](), nn.Linear(n_hidden, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: dict | None = None,
                return_weights: bool = False):
        attended, weights = self.attention(self.norm_attention(x), mask, cache, return_weights=True)
        x = x + attended
        x = x + self.mlp(self.norm_mlp(x))
        return (x, weights) if return_weights else x


class TransformerStack(nn.Module):
    """Token embedding + position encoding, ``n_layers`` causal blocks, a final LN and a linear
    read-out: tokens (n, L) -> logits (n, L, n_outputs). ``positions``: "learned", "sinusoidal" or
    "none" (then the stack is equivariant under permutations of the positions, up to the mask)."""

    def __init__(self, n_tokens: int, n_outputs: int, n_positions: int, d_model: int = 32, n_heads: int = 4,
                 n_layers: int = 2, n_hidden: int | None = None, positions: str = "learned"):
        super().__init__()
        if positions not in ("learned", "sinusoidal", "none"):
            raise ValueError(f"positions must be 'learned', 'sinusoidal' or 'none', got {positions!r}")
        self.n_positions, self.positions = n_positions, positions
        self.embedding = nn.Embedding(n_tokens, d_model)
        if positions == "learned":
            self.position = nn.Parameter(0.02 * torch.randn(n_positions, d_model))
        else:
            encoding = sinusoidal_positions(n_positions, d_model) if positions == "sinusoidal" else \
                torch.zeros(n_positions, d_model)
            self.register_buffer("position", encoding)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, n_hidden) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_outputs)
        self.register_buffer("mask", causal_mask(n_positions), persistent=False)

    def forward(self, tokens: torch.Tensor, caches: list[dict] | None = None, return_weights: bool = False):
        """Logits (n, L, n_outputs) for tokens (n, L). With ``caches`` (one dict per block) the tokens
        continue the positions already cached (decoding), and no mask is needed for one new token."""
        start = 0 if caches is None or "key" not in caches[0] else caches[0]["key"].shape[2]
        length = tokens.shape[1]
        if start + length > self.n_positions:
            raise ValueError(f"at most {self.n_positions} positions, got {start + length}")
        h = self.embedding(tokens) + self.position[start:start + length]  # (n, L, d_model)
        mask = self.mask[start:start + length, :start + length]
        all_weights = []
        for index, block in enumerate(self.blocks):
            h, weights = block(h, mask, None if caches is None else caches[index], return_weights=True)
            all_weights.append(weights)
        logits = self.head(self.norm(h))
        return (logits, all_weights) if return_weights else logits


# ----------------------------------------------------------------------------------------------
# Strings with an end-of-sequence token


class Vocabulary:
    """Characters <-> token ids: the characters are 0 .. C-1, ⟨eos⟩ is C (also the start token)."""

    def __init__(self, symbols: str):
        if not isinstance(symbols, str) or not symbols:
            raise ValueError(f"symbols must be a non-empty str of distinct characters, got {symbols!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be distinct characters, got {symbols!r}")
        self.symbols = symbols
        self.eos = len(symbols)
        self.size = len(symbols) + 1
        self._index = {c: i for i, c in enumerate(symbols)}

    def __repr__(self):
        return f"Vocabulary({self.symbols!r})"

    def encode(self, strings, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (n, max_length + 1), lengths (n,)): each string, then ⟨eos⟩, padded with ⟨eos⟩."""
        if isinstance(strings, str) or not all(isinstance(s, str) for s in strings):
            raise TypeError("strings must be a list of str")
        tokens = torch.full((len(strings), max_length + 1), self.eos, dtype=torch.long)
        lengths = torch.empty(len(strings), dtype=torch.long)
        for row, string in enumerate(strings):
            if len(string) > max_length:
                raise ValueError(f"string {string!r} has {len(string)} characters; the model's context is "
                                 f"{max_length}")
            try:
                tokens[row, :len(string)] = torch.tensor([self._index[c] for c in string], dtype=torch.long)
            except KeyError as err:
                raise ValueError(f"character {err.args[0]!r} of {string!r} is not in the vocabulary "
                                 f"{self.symbols!r}") from None
            lengths[row] = len(string)
        return tokens, lengths

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Token rows -> strings, each cut at its first ⟨eos⟩."""
        strings = []
        for row in tokens.tolist():
            end = row.index(self.eos) if self.eos in row else len(row)
            strings.append("".join(self.symbols[t] for t in row[:end]))
        return strings


class StringModel(GenerativeModel):
    """Shared machinery of the string models: a subclass provides ``next_token_logits(inputs)``,
    logits (n, L, C + 1) for the input tokens (n, L) (⟨eos⟩ first, then the string), and
    ``start_decoding(n)`` / ``decode_step(tokens, state)`` for ancestral sampling."""

    log_prob_kind = "exact"

    def __init__(self, vocabulary, context: int):
        super().__init__()
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context (the longest string, l_max) must be a positive int, got {context!r}")
        self.vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
        self.context = context
        # position l_max + 1 may only emit <eos>: adding this to the last logits forces it
        forced = torch.zeros(context + 1, self.vocabulary.size)
        forced[context, :self.vocabulary.eos] = float("-inf")
        self.register_buffer("forced_eos", forced, persistent=False)

    def _device(self):
        return self.forced_eos.device

    def inputs_and_targets(self, strings):
        """Inputs (n, L): ⟨eos⟩ as start token, then the string; targets (n, L): the string, then
        ⟨eos⟩; and the lengths (n,). L = the longest string of the batch + 1 (positions after every
        string's ⟨eos⟩ would only be padding)."""
        targets, lengths = self.vocabulary.encode(strings, self.context)
        width = int(lengths.max()) + 1 if len(strings) else 1
        targets, lengths = targets[:, :width].to(self._device()), lengths.to(self._device())
        inputs = torch.cat([torch.full_like(targets[:, :1], self.vocabulary.eos), targets[:, :-1]], dim=1)
        return inputs, targets, lengths

    def token_log_probs(self, strings) -> torch.Tensor:
        """:math:`\\log P(x_d \\mid x_{<d})` (n, L) for every position up to the batch's longest
        string + 1; positions after a string's ⟨eos⟩ are 0 (they are not part of it)."""
        inputs, targets, lengths = self.inputs_and_targets(strings)
        width = inputs.shape[1]
        logits = self.next_token_logits(inputs) + self.forced_eos[:width]  # (n, L, C + 1)
        log_probs = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        inside = torch.arange(width, device=lengths.device) <= lengths[:, None]  # up to the <eos>
        return torch.where(inside, log_probs, torch.zeros_like(log_probs))

    def forward(self, strings) -> torch.Tensor:
        """Logits (n, L, C + 1) of :math:`P_\\theta(\\cdot \\mid x_{<d})` at every position d up to the
        batch's longest string + 1, the forced ⟨eos⟩ at :math:`\\ell_\\text{max} + 1` included."""
        inputs, _, _ = self.inputs_and_targets(strings)
        return self.next_token_logits(inputs) + self.forced_eos[:inputs.shape[1]]

    @torch.no_grad()
    def next_token_distributions(self, strings) -> torch.Tensor:
        """:math:`P_\\theta(\\cdot \\mid x_{<d})` (n, L, C + 1) at every position d up to the batch's
        longest string + 1 (the last symbol is ⟨eos⟩)."""
        return F.softmax(self(strings), dim=-1)

    def log_prob(self, strings) -> torch.Tensor:
        """Exact :math:`\\log P_\\theta(x)` (n,) of each string, its ⟨eos⟩ included (eq. ``ch11-eq-eos``)."""
        return self.token_log_probs(strings).sum(-1)

    def loss(self, strings) -> torch.Tensor:
        """Mean negative log-likelihood per string, in nats."""
        return -self.log_prob(strings).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> list[str]:
        """``n`` exact draws by ancestral sampling, one token at a time until ⟨eos⟩."""
        _check_count(n)
        g = make_generator(seed, generator, device=self._device())
        tokens = torch.full((n, self.context + 1), self.vocabulary.eos, dtype=torch.long, device=self._device())
        step_input = torch.full((n, 1), self.vocabulary.eos, dtype=torch.long, device=self._device())  # start token
        state = self.start_decoding(n)
        finished = torch.zeros(n, dtype=torch.bool, device=self._device())
        for d in range(self.context + 1):
            logits, state = self.decode_step(step_input, state)  # (n, C + 1)
            probs = F.softmax(logits + self.forced_eos[d], dim=-1)
            drawn = torch.multinomial(probs, 1, generator=g).squeeze(-1)
            drawn = torch.where(finished, torch.full_like(drawn, self.vocabulary.eos), drawn)
            tokens[:, d] = drawn
            finished |= drawn == self.vocabulary.eos
            if finished.all():
                break
            step_input = drawn[:, None]
        return self.vocabulary.decode(tokens)


# ----------------------------------------------------------------------------------------------
# The models


class TransformerAR(StringModel):
    r"""A decoder-only transformer as an exact autoregressive model (eqs. ``ch11-eq-attention`` to
    ``ch11-eq-block``).

    * ``TransformerAR(n_classes=2, context=D)``: sequences of D symbols in ``value_set`` (default
      (-1, +1) for two classes, else 0 .. C-1), data of shape (n, D); the start token is the extra
      symbol C. Works with :class:`gmcourse.autoregressive.SymmetrizedModel`.
    * ``TransformerAR(vocabulary="ab()", context=l_max)``: strings of at most ``l_max`` characters,
      ended by ⟨eos⟩ (see :class:`StringModel`).

    ``sample(n, use_cache=True)`` decodes with a key-value cache: each new position costs one pass
    of one token through the stack, attending to the cached keys and values of the prefix."""

    log_prob_kind = "exact"

    def __init__(self, n_classes: int | None = None, context: int | None = None, *, vocabulary=None,
                 value_set=None, d_model: int = 32, n_heads: int = 4, n_layers: int = 2,
                 n_hidden: int | None = None, positions: str = "learned"):
        if (n_classes is None) == (vocabulary is None):
            raise ValueError("give exactly one of n_classes (fixed-length sequences) and vocabulary (strings)")
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be a positive int (D, or l_max for strings), got {context!r}")
        if vocabulary is not None:
            super().__init__(vocabulary, context)
            self.fixed_length = False
            n_tokens = n_outputs = self.vocabulary.size
            n_positions = context + 1
        else:
            GenerativeModel.__init__(self)
            reference = AutoregressiveModel(context, n_classes, value_set)  # checks and the value convention
            self.fixed_length = True
            self.n_inputs, self.n_classes, self.context = context, n_classes, context
            self.register_buffer("values", reference.values.clone())
            n_tokens, n_outputs, n_positions = n_classes + 1, n_classes, context
        self.stack = TransformerStack(n_tokens, n_outputs, n_positions, d_model, n_heads, n_layers, n_hidden,
                                      positions)

    # -- fixed-length sequences --------------------------------------------------------------
    def _device(self):
        return self.stack.head.weight.device

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (n, D) of data ``x`` (n, D) with entries in ``value_set``."""
        return AutoregressiveModel.classes(self, x)

    def _shifted(self, classes: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(classes[:, :1], self.n_classes)
        return torch.cat([start, classes[:, :-1]], dim=1)  # (n, D): x_{d-1} at position d

    def forward(self, x) -> torch.Tensor:
        """Logits of the conditionals: (n, D, C) for sequences ``x`` (n, D), entry (d, c) that of
        :math:`P(x_d = c \\mid x_{<d})`; for a list of strings, (n, L, C + 1) as in :class:`StringModel`."""
        if not self.fixed_length:
            return super().forward(x)
        return self.stack(self._shifted(self.classes(x)))

    def conditional_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log P(x_d = c \\mid x_{<d})` for every d and c, shape (n, D, C)."""
        self._need_fixed_length("conditional_log_probs")
        return F.log_softmax(self(x), dim=-1)

    def log_prob(self, x) -> torch.Tensor:
        """Exact log-probability (n,): the chain rule summed over positions (for strings, the ⟨eos⟩
        term included)."""
        if not self.fixed_length:
            return super().log_prob(x)
        classes = self.classes(x)
        log_probs = F.log_softmax(self.stack(self._shifted(classes)), dim=-1)  # (n, D, C)
        return log_probs.gather(-1, classes.unsqueeze(-1)).squeeze(-1).sum(-1)

    def next_token_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs)

    def start_decoding(self, n: int):
        return [{} for _ in self.stack.blocks] if self._use_cache else None

    def decode_step(self, step_input: torch.Tensor, state):
        """Logits of the next token given the newest input token; without a cache the whole prefix
        is run through the stack again (the state is then the prefix)."""
        if self._use_cache:
            return self.stack(step_input, caches=state)[:, -1], state
        prefix = step_input if state is None else torch.cat([state, step_input], dim=1)
        return self.stack(prefix)[:, -1], prefix

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None,
               use_cache: bool = True):
        """``n`` exact draws by ancestral sampling: (n, D) values, or a list of strings."""
        self._use_cache = use_cache
        if not self.fixed_length:
            return super().sample(n, generator=generator, seed=seed)
        _check_count(n)
        g = make_generator(seed, generator, device=self._device())
        classes = torch.empty(n, self.n_inputs, dtype=torch.long, device=self._device())
        step_input = torch.full((n, 1), self.n_classes, dtype=torch.long, device=self._device())
        state = self.start_decoding(n)
        for d in range(self.n_inputs):
            logits, state = self.decode_step(step_input, state)
            classes[:, d] = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=g).squeeze(-1)
            step_input = classes[:, d:d + 1]
        return self.values[classes]

    @torch.no_grad()
    def attention_weights(self, x) -> list[torch.Tensor]:
        """The attention weights of every block, a list of (n, n_heads, L, L): row d says how much the
        output at position d reads from each input position (input 0 is the start token). L = D for
        sequences; for strings L = the batch's longest string + 1 (its ⟨eos⟩ is predicted at row L - 1)."""
        if self.fixed_length:
            inputs = self._shifted(self.classes(x))
        else:
            inputs, _, _ = self.inputs_and_targets(x)
        return self.stack(inputs, return_weights=True)[1]

    def _need_fixed_length(self, what):
        if not self.fixed_length:
            raise TypeError(f"{what} is defined for fixed-length sequences (n_classes=...), not for strings")


class GRULanguageModel(StringModel):
    r"""Chapter 4's recurrent conditionals (eq. ``ch4-eq-rnn``) for strings with ⟨eos⟩: a GRU reads
    the tokens one by one (the start token first) and a linear read-out gives the next token's
    logits. Sampling carries the hidden state, one GRU step per token."""

    def __init__(self, vocabulary, context: int, hidden_size: int = 64, num_layers: int = 1,
                 embedding_size: int = 16):
        super().__init__(vocabulary, context)
        self.embedding = nn.Embedding(self.vocabulary.size, embedding_size)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, self.vocabulary.size)

    def next_token_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.embedding(inputs))  # (n, L, hidden)
        return self.head(hidden)

    def start_decoding(self, n: int):
        return None

    def decode_step(self, step_input: torch.Tensor, state):
        hidden, state = self.gru(self.embedding(step_input), state)  # (n, 1, hidden)
        return self.head(hidden[:, -1]), state


def fit(model: GenerativeModel, data, steps: int, batch_size: int = 64, lr: float = 1e-2, seed: int = 0,
        evaluate=None, eval_every: int | None = None, progress: bool = True) -> dict:
    """Maximum likelihood for a fixed number of Adam ``steps`` on minibatches of ``data`` (a list of
    strings or a tensor of sequences), the learning rate on a cosine from ``lr`` to 0. Deterministic
    for a given ``seed``. Returns the history: ``step`` and ``loss`` (per step), and ``evaluate(model)``
    every ``eval_every`` steps (under ``evaluations``, with ``eval_steps``)."""
    from .utils import progress as progress_bar

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    g = make_generator(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"step": [], "loss": [], "eval_steps": [], "evaluations": []}
    for step in progress_bar(range(1, steps + 1), desc=type(model).__name__, disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
        index = torch.randint(len(data), (batch_size,), generator=g)
        batch = [data[i] for i in index.tolist()] if isinstance(data, list) else data[index]
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps):
            history["eval_steps"].append(step)
            history["evaluations"].append(evaluate(model))
    return history
