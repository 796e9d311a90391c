r"""Autoregressive models: exact likelihoods from the chain rule (chapter 4).

Equations are cited by their labels in ``book/04_autoregressive.md``. Any joint distribution of
:math:`D` discrete variables factorises, for any ordering :math:`\sigma` of them (there are
:math:`D!`), into one-dimensional conditionals (eq. ``ch4-eq-chain-rule``),

.. math:: p(x) = \prod_{j=1}^{D} p\big(x_{\sigma_j} \mid x_{\sigma_1}, \dots, x_{\sigma_{j-1}}\big).

An autoregressive model lets a network output every conditional as a categorical
distribution over the :math:`K` values a variable can take,
:math:`p(x_d = c \mid x_{<d}) = \mathrm{softmax}(\ell_d)_c` with logits :math:`\ell_d(x_{<d})`,
so that the log-likelihood is an exact sum of cross-entropies (eq. ``ch4-eq-categorical``),

.. math:: \log p(x) = \sum_d \sum_{c=1}^{K} [x_d = c]\, \log \mathrm{softmax}(\ell_d)_c .

The one rule every architecture must obey is the *autoregressive property*
(eq. ``ch4-eq-autoregressive-property``): the logits :math:`\ell_d` may depend on no variable
generated at or after :math:`x_d`. Then the product of conditionals is normalised by
construction, and :meth:`AutoregressiveModel.sample` draws exactly from it by *ancestral
sampling*: generate :math:`x_{\sigma_1}`, feed it back, draw :math:`x_{\sigma_2}`, and so on
(:math:`D` network calls). The networks, from the least to the most context:

``WindowMLP``
    A finite-memory model (eq. ``ch4-eq-window``): one small perceptron, shared by every
    position, reads the last :math:`k` variables and outputs the next one's logits; a learned
    Markov chain of order :math:`k`.
``CausalConv1dAR``
    A stack of causal 1D convolutions along the sequence (an 8x8 image is read row by row,
    eq. ``ch4-eq-causal-conv``). The first layer is *strictly* causal ("mask A": position
    :math:`t` sees :math:`< t`), the later ones causal ("mask B": :math:`\le t`), with dilations
    :math:`1, 2, 4, \dots`; a model with receptive field :math:`R` is an order-:math:`R` Markov
    chain.
``GRUAutoregressive``
    A recurrent network reads :math:`x_1, \dots, x_{t-1}` into a hidden state :math:`h_t`
    (eqs. ``ch4-eq-rnn``, ``ch4-eq-gru``) and outputs :math:`\ell_t = W h_t + b_t`; sampling
    carries :math:`h_t` along.
``NADE``
    One hidden layer per conditional, all sharing one weight matrix (eq. ``ch4-eq-nade``), so
    that all :math:`D` hidden layers cost :math:`O(D n_h)` by a running sum
    (eq. ``ch4-eq-nade-recursion``) (Larochelle and Murray 2011).
``MADE``
    A multilayer perceptron whose weights are multiplied by 0/1 masks (:class:`MaskedLinear`)
    built from *degrees* (eq. ``ch4-eq-made-masks``). One pass gives all :math:`D` conditionals
    (Germain et al. 2015).

How values become classes and network inputs (every model here): ``value_set`` lists the
:math:`K` values in increasing order and class :math:`c` is ``value_set[c]``. Spins (the
default for :math:`K = 2`) are ``(-1., 1.)``: :math:`s = -1` is class 0 and :math:`s = +1` class
1, and the network sees the spin itself as one number. Grey levels (default for :math:`K > 2`)
are ``0, 1, ..., K-1`` (class = level, e.g. 17 levels of the 8x8 digits) and the network sees a
one-hot vector of length :math:`K` per variable. Data enter as (n, D) tensors; ``sample``
returns values of ``value_set``'s dtype (float spins, int64 levels).

:class:`SymmetrizedModel` averages a model over a symmetry group of the data
(eq. ``ch4-eq-symmetrised``); with :func:`lattice_symmetries` it makes a spin model invariant
under the 256 symmetries of the periodic 4x4 Ising lattice, and :func:`random_symmetry` moves
training data by random group elements (data augmentation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .protocol import GenerativeModel
from .utils import make_generator

__all__ = ["AutoregressiveModel", "MaskedLinear", "MADE", "NADE", "WindowMLP", "CausalConv1d", "CausalConv1dAR",
           "GRUAutoregressive", "SymmetrizedModel", "lattice_symmetries", "random_symmetry"]


class AutoregressiveModel(GenerativeModel):
    """Shared machinery: value <-> class mapping, exact ``log_prob`` (eq. ``ch4-eq-categorical``),
    ancestral ``sample``.

    A subclass builds a network ``forward(inputs) -> logits`` with ``inputs`` the encoded
    variables (n, D, C) (C = 1 for K = 2, else C = K one-hot) and logits (n, D, K), obeying
    the autoregressive property for the generation order ``self.order``."""

    log_prob_kind = "exact"

    def __init__(self, n_inputs: int, n_classes: int = 2, value_set=None):
        super().__init__()
        for name, value, least in (("n_inputs", n_inputs, 1), ("n_classes", n_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if value_set is None:
            value_set = torch.tensor([-1.0, 1.0]) if n_classes == 2 else torch.arange(n_classes)
        values = torch.as_tensor(value_set)
        if values.shape != (n_classes,) or not (values[1:] > values[:-1]).all():
            raise ValueError(f"value_set must hold n_classes={n_classes} increasing values, got {values.tolist()}")
        self.n_inputs, self.n_classes = n_inputs, n_classes
        self.n_channels = 1 if n_classes == 2 else n_classes
        self.register_buffer("values", values)
        self.register_buffer("order", torch.arange(n_inputs))  # generation order; MADE may permute it

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (n, D) int64 of data ``x`` (n, D) whose entries lie in ``value_set``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, {self.n_inputs}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"x must have shape (n, {self.n_inputs}), got {tuple(x.shape)}")
        values = self.values.to(torch.float64)
        x64 = x.to(device=values.device, dtype=torch.float64)
        index = torch.searchsorted(values, x64).clamp(max=self.n_classes - 1)  # (n, D)
        bad = values[index] != x64
        if bad.any():
            raise ValueError(f"x must take values in {self.values.tolist()}; got values "
                             f"{torch.unique(x64[bad])[:6].tolist()}")
        return index

    def encode(self, classes: torch.Tensor) -> torch.Tensor:
        """Network inputs (n, D, C): the spin 2k - 1 for K = 2, a one-hot vector for K > 2."""
        dtype = next(self.parameters()).dtype  # float32, or float64 after .double()
        if self.n_classes == 2:
            return (2.0 * classes - 1.0).to(dtype).unsqueeze(-1)
        return F.one_hot(classes, self.n_classes).to(dtype)

    def conditional_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x_d = k \\mid x_{<d})` for every d and k, shape (n, D, K)."""
        return F.log_softmax(self(self.encode(self.classes(x))), dim=-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` (eq. ``ch4-eq-categorical``), shape (n,): the chain rule as a sum
        over variables."""
        classes = self.classes(x)  # (n, D)
        log_probs = F.log_softmax(self(self.encode(classes)), dim=-1)  # (n, D, K)
        return log_probs.gather(-1, classes.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` exact draws (n, D) by ancestral sampling: D network calls, one variable each."""
        _check_count(n)
        g = make_generator(seed, generator, device=self.values.device)
        classes = torch.zeros(n, self.n_inputs, dtype=torch.long, device=self.values.device)
        for d in self.order.tolist():
            probs = F.softmax(self(self.encode(classes))[:, d], dim=-1)  # (n, K)
            classes[:, d] = torch.multinomial(probs, 1, generator=g).squeeze(-1)
        return self.values[classes]


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` (out, in), kept as a buffer
    so that it follows ``.to(device)`` and ``state_dict`` but is never trained."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))

    def set_mask(self, mask: torch.Tensor):
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask must have shape {tuple(self.mask.shape)}, got {tuple(mask.shape)}")
        self.mask.copy_(mask)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(AutoregressiveModel):
    r"""Masked autoencoder for distribution estimation with categorical outputs.

    Degrees (eq. ``ch4-eq-made-masks``), with ranks :math:`r(d) \in \{0, \dots, D-1\}` from the generation order:
    inputs of variable :math:`d` have degree :math:`r(d)`; hidden unit :math:`j` of every layer has
    degree :math:`j \bmod (D-1)` (spread evenly over :math:`0, \dots, D-2`); a weight is kept
    when the receiving degree is :math:`\ge` the sending one (hidden layers) or :math:`>` it
    (the :math:`K` logits of variable :math:`d` have degree :math:`r(d)`). ``direct=True`` adds a
    masked linear input -> logits connection. ``order``: ``None`` (0, 1, ..., D-1), ``"random"``
    (a permutation drawn with ``seed``/``generator``) or a permutation tensor; ``order[j]`` is
    the variable generated :math:`j`-th."""

    def __init__(self, n_inputs: int, hidden_sizes=(64,), n_classes: int = 2, order=None, value_set=None,
                 direct: bool = False, activation=nn.ReLU, seed=None, generator=None):
        super().__init__(n_inputs, n_classes, value_set)
        hidden_sizes = list(hidden_sizes)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints, got {hidden_sizes!r}")
        if isinstance(order, str) and order == "random":
            order = torch.randperm(n_inputs, generator=make_generator(seed, generator))
        elif order is not None:
            order = torch.as_tensor(order)
            if order.shape != (n_inputs,) or not torch.equal(order.sort().values, torch.arange(n_inputs)):
                raise ValueError(f"order must be None, 'random' or a permutation of 0..{n_inputs - 1}, got {order!r}")
        if order is not None:
            self.order.copy_(order)
        rank = torch.empty(n_inputs, dtype=torch.long)
        rank[self.order] = torch.arange(n_inputs)  # rank[d] = when variable d is generated
        degrees = [rank.repeat_interleave(self.n_channels)]  # (D * C,) input degrees
        degrees += [torch.arange(h) % max(n_inputs - 1, 1) for h in hidden_sizes]
        output_degree = rank.repeat_interleave(n_classes)  # (D * K,)
        sizes = [n_inputs * self.n_channels] + hidden_sizes
        layers = []
        for k in range(len(hidden_sizes)):
            layer = MaskedLinear(sizes[k], sizes[k + 1])
            layer.set_mask((degrees[k + 1][:, None] >= degrees[k][None, :]).float())
            layers += [layer, activation()]
        head = MaskedLinear(sizes[-1], n_inputs * n_classes)
        head.set_mask((output_degree[:, None] > degrees[-1][None, :]).float())
        self.net = nn.Sequential(*layers, head)
        self.direct = None
        if direct:
            self.direct = MaskedLinear(sizes[0], n_inputs * n_classes, bias=False)
            self.direct.set_mask((output_degree[:, None] > degrees[0][None, :]).float())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (n, D, C) -> logits (n, D, K)."""
        flat = inputs.flatten(1)  # (n, D * C)
        logits = self.net(flat)
        if self.direct is not None:
            logits = logits + self.direct(flat)
        return logits.view(-1, self.n_inputs, self.n_classes)


class NADE(AutoregressiveModel):
    r"""Neural autoregressive distribution estimator (Larochelle and Murray 2011), natural order.

    Conditional :math:`d` has its own hidden layer, built from weights *shared* by all
    conditionals (eq. ``ch4-eq-nade``):

    .. math:: a_d = c + \sum_{e<d} W_e\, x_e, \qquad h_d = \mathrm{sigmoid}(a_d), \qquad
              \ell_d = V_d\, h_d + b_d,

    with :math:`W_e` the (n_h, C) input weights of variable :math:`e` (the same in every
    :math:`a_d` with :math:`d > e`), :math:`c` one hidden bias, and output weights :math:`V_d`
    (K, n_h) and biases :math:`b_d` per variable. Because :math:`a_{d+1} = a_d + W_d x_d`
    (eq. ``ch4-eq-nade-recursion``), :meth:`forward` gets all :math:`D` hidden layers from one
    cumulative sum, :math:`O(D\, n_h)` operations per data point, where :meth:`forward_naive`
    (the definition, for checking) needs :math:`O(D^2 n_h)`; :meth:`sample` runs the same
    recursion one variable at a time."""

    def __init__(self, n_inputs: int, n_classes: int = 2, hidden_size: int = 64, value_set=None):
        super().__init__(n_inputs, n_classes, value_set)
        _check_positive_int("hidden_size", hidden_size)
        fan_in = n_inputs * self.n_channels
        self.input_weight = nn.Parameter(torch.randn(n_inputs, self.n_channels, hidden_size) / math.sqrt(fan_in))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_size))  # c
        self.output_weight = nn.Parameter(torch.randn(n_inputs, n_classes, hidden_size) / math.sqrt(hidden_size))
        self.output_bias = nn.Parameter(torch.zeros(n_inputs, n_classes))  # b_d

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (n, D, C) -> logits (n, D, K), by the running sum."""
        contributions = torch.einsum("ndc,dch->ndh", inputs, self.input_weight)  # (n, D, n_h): W_e x_e
        earlier = F.pad(contributions[:, :-1], (0, 0, 1, 0))  # (n, D, n_h): row d holds W_{d-1} x_{d-1}
        hidden = torch.sigmoid(self.hidden_bias + earlier.cumsum(dim=1))  # (n, D, n_h): h_d, from x_{<d}
        return torch.einsum("ndh,dkh->ndk", hidden, self.output_weight) + self.output_bias

    def forward_naive(self, inputs: torch.Tensor) -> torch.Tensor:
        """The same logits computed from the definition, one hidden layer at a time (O(D^2 n_h))."""
        logits = []
        for d in range(self.n_inputs):
            a = self.hidden_bias + torch.einsum("nec,ech->nh", inputs[:, :d], self.input_weight[:d])  # (n, n_h)
            logits.append(torch.sigmoid(a) @ self.output_weight[d].T + self.output_bias[d])  # (n, K)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` exact draws (n, D): the running sum carried along, O(D n_h) per draw."""
        _check_count(n)
        g = make_generator(seed, generator, device=self.values.device)
        classes = torch.empty(n, self.n_inputs, dtype=torch.long, device=self.values.device)
        a = self.hidden_bias.expand(n, -1)  # (n, n_h): a_1 = c
        for d in range(self.n_inputs):
            probs = F.softmax(torch.sigmoid(a) @ self.output_weight[d].T + self.output_bias[d], dim=-1)  # (n, K)
            classes[:, d] = torch.multinomial(probs, 1, generator=g).squeeze(-1)
            a = a + self.encode(classes[:, d:d + 1])[:, 0] @ self.input_weight[d]  # a_{d+1} = a_d + W_d x_d
        return self.values[classes]


class WindowMLP(AutoregressiveModel):
    r"""A finite-memory model (eq. ``ch4-eq-window``): one perceptron, shared by all positions,
    reads the previous ``window`` :math:`= k` variables and outputs the logits of the next,

    .. math:: \ell_d = W_2\, \mathrm{relu}\big(W_1 [x_{d-1}, \dots, x_{d-k}] + c\big) + b_d ,

    a learned Markov chain of order :math:`k` (eq. ``ch4-eq-markov``). Positions before the start
    of the sequence are read as zeros ("no value": a spin is :math:`\pm1` and a one-hot vector has
    a 1). The bias :math:`b_d` is learned per position and class, as in :class:`CausalConv1dAR`
    (pixels near an edge are not like the others). ``hidden_size`` is :math:`n_h`."""

    def __init__(self, n_inputs: int, n_classes: int = 2, window: int = 8, hidden_size: int = 32, value_set=None):
        super().__init__(n_inputs, n_classes, value_set)
        _check_positive_int("window", window)
        _check_positive_int("hidden_size", hidden_size)
        self.window = window
        self.hidden = nn.Linear(window * self.n_channels, hidden_size)  # W_1, c
        self.head = nn.Linear(hidden_size, n_classes, bias=False)  # W_2
        self.position_bias = nn.Parameter(torch.zeros(n_inputs, n_classes))  # b_d

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (n, D, C) -> logits (n, D, K); position d reads x_{d-k}, ..., x_{d-1}."""
        k, n_inputs = self.window, self.n_inputs
        padded = F.pad(inputs, (0, 0, k, 0))  # (n, k + D, C): k empty places before x_1
        lags = [padded[:, k - j: k - j + n_inputs] for j in range(1, k + 1)]  # lag j: row d holds x_{d-j}
        windows = torch.cat(lags, dim=-1)  # (n, D, k * C): row d holds [x_{d-1}, ..., x_{d-k}]
        hidden = torch.relu(self.hidden(windows))  # (n, D, n_h)
        return self.head(hidden) + self.position_bias


class CausalConv1d(nn.Conv1d):
    r"""A 1D convolution that never looks ahead: the input is padded on the left only.

    With taps at :math:`t - (k-1)\delta, \dots, t - \delta, t` (kernel :math:`k`, dilation
    :math:`\delta`), ``mask_type="B"`` keeps all taps (output :math:`t` sees inputs :math:`\le t`)
    and ``mask_type="A"`` zeroes the last one (output :math:`t` sees only inputs :math:`< t`),
    through a 0/1 ``mask`` buffer on the kernel."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, mask_type="B"):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if mask_type == "A" and kernel_size < 2:
            raise ValueError(f"a mask-A convolution needs kernel_size >= 2 (it drops the present tap), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_padding = (kernel_size - 1) * dilation
        mask = torch.ones_like(self.weight)  # (out, in, k)
        if mask_type == "A":
            mask[..., -1] = 0.0
        self.register_buffer("mask", mask)

    def forward(self, x):  # (n, C, D) -> (n, out, D)
        return F.conv1d(F.pad(x, (self.left_padding, 0)), self.weight * self.mask, self.bias,
                        dilation=self.dilation)


class CausalConv1dAR(AutoregressiveModel):
    r"""Autoregressive model from stacked causal convolutions (a small WaveNet / PixelCNN in 1D).

    One mask-A layer (kernel ``first_kernel_size``), then residual mask-B layers with the given
    ``dilations`` (kernel ``kernel_size``), ReLU, and a 1x1 convolution to K logits plus a learned
    bias per position and class (a convolution is translation invariant, pixels and spins near
    an edge are not). Position :math:`t` sees :math:`x_{t-R}, \dots, x_{t-1}` with receptive
    field :math:`R = (k_A - 1) + (k - 1)\sum\delta`; the default covers 64 variables."""

    def __init__(self, n_inputs: int, n_classes: int = 2, channels: int = 32, kernel_size: int = 2,
                 dilations=(1, 2, 4, 8, 16, 32), first_kernel_size: int = 2, value_set=None):
        super().__init__(n_inputs, n_classes, value_set)
        self.first = CausalConv1d(self.n_channels, channels, first_kernel_size, mask_type="A")
        self.hidden = nn.ModuleList(CausalConv1d(channels, channels, kernel_size, d, "B") for d in dilations)
        self.head = nn.Conv1d(channels, n_classes, 1)
        self.position_bias = nn.Parameter(torch.zeros(n_classes, n_inputs))
        self.receptive_field = (first_kernel_size - 1) + (kernel_size - 1) * sum(dilations)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (n, D, C) -> logits (n, D, K)."""
        h = torch.relu(self.first(inputs.transpose(1, 2)))  # (n, channels, D)
        for layer in self.hidden:
            h = h + torch.relu(layer(h))  # residual: the identity path keeps causality
        return (self.head(h) + self.position_bias).transpose(1, 2)  # (n, D, K)


class GRUAutoregressive(AutoregressiveModel):
    r"""Recurrent conditionals (eq. ``ch4-eq-rnn``): :math:`h_t = \mathrm{GRU}(h_{t-1}, x_{t-1})`,
    logits :math:`\ell_t = W h_t + b_t` (a bias per position), with a learned start input at
    :math:`t = 1`. The cell is :class:`torch.nn.GRU`, whose update gate :math:`z` is the fraction of
    the old state that is *kept* (eq. ``ch4-eq-gru``):
    :math:`h_t = (1 - z) \odot n + z \odot h_{t-1}`, with the candidate
    :math:`n = \tanh(W_n u + b_n + r \odot (U_n h_{t-1} + c_n))`.
    ``sample`` runs the recurrence once, carrying the hidden state (D GRU steps, not D passes)."""

    def __init__(self, n_inputs: int, n_classes: int = 2, hidden_size: int = 64, num_layers: int = 1,
                 value_set=None):
        super().__init__(n_inputs, n_classes, value_set)
        self.start = nn.Parameter(torch.zeros(self.n_channels))
        self.gru = nn.GRU(self.n_channels, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)
        self.position_bias = nn.Parameter(torch.zeros(n_inputs, n_classes))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (n, D, C) -> logits (n, D, K); step t reads inputs < t only."""
        start = self.start.expand(inputs.shape[0], 1, -1)  # (n, 1, C)
        shifted = torch.cat([start, inputs[:, :-1]], dim=1)  # (n, D, C): x_{t-1} at step t
        hidden, _ = self.gru(shifted)  # (n, D, hidden)
        return self.head(hidden) + self.position_bias

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        _check_count(n)
        g = make_generator(seed, generator, device=self.values.device)
        classes = torch.empty(n, self.n_inputs, dtype=torch.long, device=self.values.device)
        step_input, state = self.start.expand(n, 1, -1), None  # (n, 1, C)
        for t in range(self.n_inputs):
            hidden, state = self.gru(step_input, state)  # (n, 1, hidden)
            probs = F.softmax(self.head(hidden[:, 0]) + self.position_bias[t], dim=-1)  # (n, K)
            classes[:, t] = torch.multinomial(probs, 1, generator=g).squeeze(-1)
            step_input = self.encode(classes[:, t:t + 1])  # (n, 1, C)
        return self.values[classes]


def lattice_symmetries(L: int, spin_flip: bool = True, translations: bool = True, point_group: bool = True):
    r"""The symmetry group of the periodic :math:`L\times L` Ising model as site permutations.

    Returns ``(permutations (G, L*L) int64, signs (G,))``: element :math:`g` maps a row-major
    flattened configuration :math:`s` to :math:`(gs)_i = \mathrm{sign}_g\, s_{\mathrm{perm}_g(i)}`. All
    combinations of the 8 rotations/reflections of the square, the :math:`L^2` cyclic
    translations and the global flip :math:`s \to -s`: :math:`8 \cdot 16 \cdot 2 = 256` elements
    for :math:`L = 4` (for :math:`L = 2` some coincide; the list then covers the group evenly)."""
    if isinstance(L, bool) or not isinstance(L, int) or L < 2:
        raise ValueError(f"L must be an int >= 2, got {L!r}")
    sites = torch.arange(L * L).view(L, L)
    shapes = [torch.rot90(sites, k, (0, 1)) for k in range(4 if point_group else 1)]
    if point_group:
        shapes += [shape.T for shape in shapes]
    shifts = [(a, b) for a in range(L) for b in range(L)] if translations else [(0, 0)]
    permutations = torch.stack([torch.roll(shape, shift, (0, 1)).flatten() for shape in shapes for shift in shifts])
    signs = torch.ones(len(permutations))
    if spin_flip:
        permutations, signs = torch.cat([permutations, permutations]), torch.cat([signs, -signs])
    return permutations, signs


def random_symmetry(x: torch.Tensor, permutations: torch.Tensor, signs: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Data augmentation: each configuration of ``x`` (n, D) moved by its own uniformly drawn
    group element, :math:`(gx)_i = \mathrm{sign}_g\, x_{\mathrm{perm}_g(i)}`, with the group given as
    by :func:`lattice_symmetries` (``permutations`` (G, D), ``signs`` (G,))."""
    if x.ndim != 2 or x.shape[1] != permutations.shape[1]:
        raise ValueError(f"x must have shape (n, {permutations.shape[1]}), got {tuple(x.shape)}")
    element = torch.randint(len(signs), (len(x),), generator=generator, device=x.device)  # (n,)
    return signs[element, None] * torch.gather(x, 1, permutations[element])  # (n, D)


class SymmetrizedModel(GenerativeModel):
    r"""A spin model averaged over a group :math:`G` of symmetries (eq. ``ch4-eq-symmetrised``):

    .. math:: p_G(s) = \frac{1}{|G|} \sum_{g\in G} p(g s).

    *Normalised*: each :math:`g` permutes the :math:`2^D` configurations, so
    :math:`\sum_s p(gs) = \sum_{s'} p(s') = 1` for every :math:`g`, and
    :math:`\sum_s p_G(s) = \frac1{|G|}\sum_g 1 = 1`. *Invariant*: for :math:`h\in G`,
    :math:`p_G(hs) = \frac1{|G|}\sum_g p(ghs) = p_G(s)` because :math:`g \mapsto gh` is a bijection
    of :math:`G` (this needs a group; normalisation needs only bijections). *Sampling*: draw
    :math:`s \sim p` and a uniform :math:`g`; then :math:`P(gs = x) = \frac1{|G|}\sum_g p(g^{-1}x) = p_G(x)`.

    ``log_prob`` is a log-mean-exp over the orbit. When the batch needs more evaluations than
    there are configurations (:math:`n|G| \ge 2^D`, :math:`D \le 20`), ``base`` is evaluated once
    on all :math:`2^D` states (numbered as in :meth:`gmcourse.ising.IsingModel.all_states`) and the
    orbit is looked up in that table. Data: float ±1 spins (n, D)."""

    log_prob_kind = "exact"
    max_table_sites = 20

    def __init__(self, base: GenerativeModel, permutations: torch.Tensor, signs: torch.Tensor | None = None):
        super().__init__()
        permutations = torch.as_tensor(permutations, dtype=torch.long)
        if permutations.ndim != 2:
            raise ValueError(f"permutations must have shape (G, D), got {tuple(permutations.shape)}")
        group_size, n_sites = permutations.shape
        if not torch.equal(permutations.sort(1).values, torch.arange(n_sites).expand(group_size, -1)):
            raise ValueError("every row of permutations must be a permutation of 0..D-1")
        signs = torch.ones(group_size) if signs is None else torch.as_tensor(signs, dtype=torch.float32)
        if signs.shape != (group_size,) or not ((signs == 1) | (signs == -1)).all():
            raise ValueError(f"signs must be (G,) = ({group_size},) entries of +-1, got shape {tuple(signs.shape)}")
        self.base, self.n_sites = base, n_sites
        self.register_buffer("permutations", permutations)
        self.register_buffer("signs", signs)

    def _check(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, {self.n_sites}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_sites:
            raise ValueError(f"x must have shape (n, {self.n_sites}), got {tuple(x.shape)}")
        if not ((x == 1) | (x == -1)).all():
            raise ValueError(f"x must hold spins +-1, got values {torch.unique(x)[:6].tolist()}")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p_G(x)` (eq. ``ch4-eq-symmetrised``), shape (n,)."""
        self._check(x)
        group_size, n = len(self.signs), x.shape[0]
        x = x.to(self.signs)
        if self.n_sites <= self.max_table_sites and n * group_size >= 2 ** self.n_sites:
            log_sum = self._orbit_logsumexp_from_table(x)  # (n,)
        else:
            orbit = self.signs[:, None] * x[:, self.permutations]  # (n, G, D)
            log_sum = torch.logsumexp(self.base.log_prob(orbit.reshape(-1, self.n_sites)).view(n, group_size), 1)
        return log_sum - math.log(group_size)

    def _orbit_logsumexp_from_table(self, x):
        """log sum_g p(g x), (n,), from one evaluation of ``base`` on all 2^D states.

        State number of s: sum_i b_i 2^i with bits b = (s + 1) / 2. Moving site perm_g(i) to i
        sends bit j to place perm_g^{-1}(j), so index(g s) = b @ place_values[:, g], and the flip
        s -> -s turns the index k into 2^D - 1 - k."""
        n_states = 2 ** self.n_sites
        states = 2.0 * ((torch.arange(n_states, device=x.device)[:, None]
                         >> torch.arange(self.n_sites, device=x.device)) & 1) - 1.0  # (2^D, D)
        table = torch.cat([self.base.log_prob(chunk) for chunk in states.to(x.dtype).split(2 ** 14)])
        inverse = torch.argsort(self.permutations, dim=1)  # (G, D): inverse[g, j] = perm_g^{-1}(j)
        place_values = (2.0 ** inverse.to(torch.float64)).T  # (D, G), exact integers in float64
        log_probs = []
        for chunk in x.split(4096):  # bounds memory at (4096, G)
            bits = (chunk.to(torch.float64) + 1.0) / 2.0  # (chunk, D)
            index = (bits @ place_values).long()  # (chunk, G)
            index = torch.where(self.signs > 0, index, n_states - 1 - index)
            log_probs.append(torch.logsumexp(table[index], 1))  # (chunk,)
        return torch.cat(log_probs)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """``n`` exact draws (n, D): a draw of ``base`` moved by a uniformly random group element."""
        _check_count(n)
        g = make_generator(seed, generator, device=self.signs.device)
        s = self.base.sample(n, generator=g).to(self.signs)  # (n, D)
        element = torch.randint(len(self.signs), (n,), generator=g, device=self.signs.device)
        return self.signs[element, None] * torch.gather(s, 1, self.permutations[element])
