r"""Benchmark ``ising-rbm``: chapter 6's RBM trained by persistent contrastive divergence on the
20,000 exact samples of the 4x4 Ising model at :math:`T = 2.269` that ``ising-ar`` uses, scored by
the *exact* :math:`\mathrm{KL}(P_\text{data}\,\|\,P_\theta)` over all :math:`2^{16}` states.

    python -m gmcourse.bench ising-rbm --seconds 60 --seed 0 [--peer sklearn] [--set NAME=VALUE ...]

The model's :math:`\log Z` is exact (the RBM enumerates its smaller layer), but training never
uses it: the negative phase is PCD-k on ``n_chains`` persistent chains, as in the chapter. What
the default configuration (:data:`DEFAULTS`) builds in, each switchable with ``--set``:

1. **Structure** (``tied``, ``kernel_size``). A nearest-neighbour Ising model *is* an RBM with one
   hidden spin per bond (:class:`~gmcourse.rbm.TranslationInvariantRBM`). The default model is
   that family: a convolutional RBM on the periodic lattice, ``n_channels`` filters of size
   ``kernel_size`` x ``kernel_size`` (2 by default: a bond fits, and so does a plaquette)
   translated over the lattice, spin units, no biases, so translations and the global flip are
   exact symmetries and there are only ``n_channels * kernel_size**2`` parameters (``kernel_size=4``: filters that cover the whole lattice). ``tied=false`` trains a
   plain RBM with ``n_hidden`` hidden units (default ``n_channels`` :math:`\times L^2`, the same
   number of hidden units as the convolutional one) and biases.
2. **Initialisation** (``init``): ``"bonds"`` starts every hidden unit as a weak nearest-neighbour
   bond of weight ``init_bond`` (even channels/units horizontal, odd ones vertical; the untied
   RBM's units spread over all :math:`2L^2` bonds) plus :math:`\mathcal N(0, \text{init_std}^2)`
   noise; ``"random"`` keeps only the noise. Either way every weight is trained.
3. **Augmentation** (``augment``): each training sample is used in a random image under the
   lattice's 256 symmetries (:func:`~gmcourse.autoregressive.random_symmetry`), which
   :math:`P_\text{data}` respects; for the tied model only the 8 rotations/reflections add
   anything.
4. **Negative chains** (``n_chains``, ``k``): many persistent chains and several Gibbs sweeps per
   update keep the model's expectation well estimated.
5. **Learning-rate decay** (``lr_decay``): Adam's rate follows a cosine from ``learning_rate``
   to 0 over the budget, so the last updates average the noise of the PCD gradient out.

Reported: ``kl_nats`` (exact, of the model returned), ``kl_initial_nats`` (before training),
``train_nll`` / ``test_nll`` (nats per configuration, exact log-likelihoods; the test set is
20,000 fresh exact samples), ``test_nll_truth`` (the Boltzmann NLL of the same test samples),
``entropy_nats``, ``seconds`` (training wall time), ``steps``, ``epochs``, ``n_params``,
``kl_trace`` (the exact KL every ``eval_every`` seconds, for the progress display),
``threads`` and ``config``. With ``--peer sklearn``: scikit-learn's ``BernoulliRBM`` with as
many hidden units, trained on the same data mapped to :math:`\{0,1\}` for the same wall time
(PCD-1, its only method; learning rate ``peer_learning_rate``, minibatches of ``peer_batch_size``),
right after ours; ``peer_kl_nats`` is its exact KL, computed by copying
its weights into a :class:`~gmcourse.rbm.RBM` with binary units.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.autoregressive import lattice_symmetries, random_symmetry
from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.bench.ising_ar import all_state_log_probs, exact_kl, ising_data
from gmcourse.rbm import RBM, TranslationInvariantRBM
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "run", "table", "train", "sklearn_rbm", "PEERS"]

L, TEMPERATURE, N_SAMPLES = 4, 2.269, 20_000
PEERS = ("sklearn",)
DEFAULTS = dict(tied=True, n_channels=2, n_hidden=None, kernel_size=2, init="bonds", init_bond=0.3, init_std=0.01,
                learning_rate=0.02, lr_decay=True,
                batch_size=1000, n_chains=1000, k=5, augment=True, eval_every=5.0,
                peer_learning_rate=0.01, peer_batch_size=10)


def train(model: RBM, data: torch.Tensor, cfg: dict, seconds: float, generator: torch.Generator,
          symmetries=None, evaluate=None, progress: bool = True, desc: str = "rbm") -> dict:
    r"""PCD training of ``model`` on ``data`` (n, D) for ``seconds`` of wall time with Adam.

    ``cfg`` gives ``learning_rate``, ``lr_decay`` (cosine to 0 over the budget), ``batch_size``,
    ``n_chains`` and ``k`` (persistent chains and Gibbs steps per update) and ``augment``;
    ``symmetries`` = (permutations, signs) of the group used for augmentation. ``evaluate()`` is
    called every ``cfg["eval_every"]`` seconds (its time excluded from the budget) and must return
    a KL in nats, shown on the progress bar and collected in ``trace`` as ``{"seconds", "kl_nats"}``
    points. Returns steps, seconds, trace."""
    model.persistent, model.k, model.n_chains = True, cfg["k"], cfg["n_chains"]
    model.reset_chains()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    bar = progress_bar(total=round(seconds, 1), desc=desc, disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
    trace, steps, spent_evaluating = [], 0, 0.0
    start = time.perf_counter()
    next_eval = cfg["eval_every"]
    while (elapsed := time.perf_counter() - start - spent_evaluating) < seconds:
        if cfg["lr_decay"]:
            for group in optimizer.param_groups:
                group["lr"] = cfg["learning_rate"] * 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
        x = data if cfg["batch_size"] >= len(data) else \
            data[torch.randint(len(data), (cfg["batch_size"],), generator=generator, device=data.device)]
        if cfg["augment"] and symmetries is not None:
            x = random_symmetry(x, *symmetries, generator=generator)  # (batch, D)
        loss = model.loss(x)  # mean F(x) - mean F(v^-), v^- from the persistent chains
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if evaluate is not None and elapsed >= next_eval:
            next_eval += cfg["eval_every"]
            pause = time.perf_counter()
            value = evaluate()
            trace.append({"seconds": round(elapsed, 2), "kl_nats": value})
            bar.set_postfix_str(f"exact KL {value:.4f}", refresh=False)
            spent_evaluating += time.perf_counter() - pause
            bar.update(round(elapsed, 1) - bar.n)
    seconds_trained = time.perf_counter() - start - spent_evaluating
    bar.update(round(seconds, 1) - bar.n)
    bar.close()
    return dict(steps=steps, seconds=seconds_trained, trace=trace)


def sklearn_rbm(data01, n_hidden: int, seconds: float, seed: int, learning_rate: float, batch_size: int):
    """scikit-learn's BernoulliRBM trained with partial_fit on minibatches of ``data01`` ({0,1}
    NumPy array) for ``seconds`` of wall time; returns the estimator, the number of updates and
    the seconds spent training."""
    import numpy as np
    from sklearn.neural_network import BernoulliRBM

    rng = np.random.default_rng(seed)
    peer = BernoulliRBM(n_components=n_hidden, learning_rate=learning_rate, batch_size=batch_size,
                        random_state=seed)
    updates, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = rng.permutation(len(data01))  # one epoch of minibatches, as BernoulliRBM.fit does
        for first in range(0, len(order), batch_size):
            peer.partial_fit(data01[order[first:first + batch_size]])
            updates += 1
            if time.perf_counter() - start >= seconds:
                break
    return peer, updates, time.perf_counter() - start


def rbm_from_sklearn(peer) -> RBM:
    r"""An :class:`RBM` with {0,1} units and ``peer``'s parameters (float64): scikit-learn's energy
    is :math:`-a^\top v - b^\top h - h^\top W v` with ``components_`` = W (n_h, D),
    ``intercept_visible_`` = a, ``intercept_hidden_`` = b."""
    n_hidden, n_visible = peer.components_.shape
    rbm = RBM(n_visible, n_hidden, visible="binary", hidden="binary").double()
    with torch.no_grad():
        rbm.weight.copy_(torch.as_tensor(peer.components_))
        rbm.visible_bias.copy_(torch.as_tensor(peer.intercept_visible_))
        rbm.hidden_bias.copy_(torch.as_tensor(peer.intercept_hidden_))
    return rbm


class _OnSpins(torch.nn.Module):
    """A {0,1}-unit RBM seen on spins: log_prob(s) = rbm.log_prob((s + 1) / 2)."""

    log_prob_kind = "exact"

    def __init__(self, rbm):
        super().__init__()
        self.rbm = rbm

    def log_prob(self, s):
        return self.rbm.log_prob(((s + 1) / 2).to(self.rbm.weight.dtype))


def build_model(cfg: dict, seed: int) -> RBM:
    """The configuration's RBM: convolutional (``tied``) or plain, spin units."""
    if cfg["tied"]:
        if cfg["n_hidden"] is not None and cfg["n_hidden"] != cfg["n_channels"] * L * L:
            raise ValueError(f"tied=true has n_channels * L^2 = {cfg['n_channels'] * L * L} hidden units; "
                             f"n_hidden={cfg['n_hidden']} contradicts it (set n_channels, or tied=false)")
        model = TranslationInvariantRBM(L, cfg["n_channels"], seed=seed, init_std=cfg["init_std"],
                                        kernel_size=cfg["kernel_size"])
        bonds = model.filters.data
    else:
        n_hidden = int(cfg["n_hidden"] or cfg["n_channels"] * L * L)
        model = RBM(L * L, n_hidden, visible="spin", hidden="spin", seed=seed, init_std=cfg["init_std"])
    if cfg["init"] not in ("bonds", "random"):
        raise ValueError(f"init must be 'bonds' or 'random', got {cfg['init']!r}")
    if cfg["init"] == "bonds" and cfg["tied"] and cfg["kernel_size"] < 2:
        raise ValueError("init=bonds needs kernel_size >= 2 (a bond spans two sites)")
    if cfg["init"] == "bonds":  # each hidden unit starts as a weak nearest-neighbour bond (+ the noise)
        with torch.no_grad():
            if cfg["tied"]:  # channel c at the origin: even channels horizontal, odd ones vertical
                for c in range(cfg["n_channels"]):
                    model.filters[c, 0, 0] += cfg["init_bond"]
                    model.filters[c, c % 2, (c + 1) % 2] += cfg["init_bond"]
            else:  # unit j on the bond of site (j // 2) mod L^2, horizontal for even j, vertical for odd j
                for j in range(model.n_hidden):
                    row, col = divmod((j // 2) % (L * L), L)
                    right = (row, (col + 1) % L) if j % 2 == 0 else ((row + 1) % L, col)
                    model.weight[j, row * L + col] += cfg["init_bond"]
                    model.weight[j, right[0] * L + right[1]] += cfg["init_bond"]
    return model


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring).
    ``overrides`` (``--set NAME=VALUE`` strings) change :data:`DEFAULTS`."""
    if peer is not None and peer not in PEERS:
        raise ValueError(f"ising-rbm compares with {PEERS}, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    for name in ("n_channels", "batch_size", "n_chains", "k"):
        if cfg[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {cfg[name]}")
    torch.set_num_threads(1)
    device = torch.device(device) if device is not None else default_device()
    ising, g, data, test = ising_data(seed)  # the data of ising-ar
    train_seed = int(torch.randint(2**62, (1,), generator=g))
    model = build_model(cfg, train_seed).to(device)
    g_train = make_generator(train_seed, device=device)
    symmetries = tuple(t.to(device) for t in lattice_symmetries(L))

    kl_initial = exact_kl(ising, model)
    info = train(model, data.to(device), cfg, seconds, g_train, symmetries,
                 evaluate=lambda: exact_kl(ising, model), progress=progress, desc="ising-rbm")

    log_q = all_state_log_probs(ising, model)  # (2^16,) exact; every score below is a lookup in it
    nll = {name: float(-log_q[ising.state_index(part.view(-1, L, L))].mean())
           for name, part in (("train", data), ("test", test))}
    kl = exact_kl(ising, log_q=log_q)
    trace = [{"seconds": 0.0, "kl_nats": kl_initial}, *info["trace"], {"seconds": round(info["seconds"], 2), "kl_nats": kl}]
    result = dict(kl_nats=kl, kl_initial_nats=kl_initial, seconds=round(info["seconds"], 2),
                  train_nll=nll["train"], test_nll=nll["test"],
                  test_nll_truth=float(-ising.log_prob(test.view(-1, L, L)).mean()), entropy_nats=ising.entropy(),
                  steps=info["steps"], epochs=round(info["steps"] * min(cfg["batch_size"], N_SAMPLES) / N_SAMPLES, 1),
                  n_params=sum(p.numel() for p in model.parameters()), n_hidden=model.n_hidden,
                  kl_trace=trace, threads=torch.get_num_threads(), config=dict(cfg))
    if peer == "sklearn":
        data01 = ((data + 1) / 2).double().numpy()  # spins -> {0, 1}
        estimator, updates, peer_seconds = sklearn_rbm(data01, model.n_hidden, seconds, seed,
                                                       cfg["peer_learning_rate"], cfg["peer_batch_size"])
        peer_model = _OnSpins(rbm_from_sklearn(estimator))
        with torch.no_grad():
            peer_test_nll = float(-peer_model.log_prob(test.double()).mean())
        result.update(peer="sklearn", peer_kl_nats=exact_kl(ising, peer_model), peer_test_nll=peer_test_nll,
                      peer_seconds=round(peer_seconds, 2), peer_updates=updates,
                      peer_n_hidden=model.n_hidden)
        result["kl_ratio_to_peer"] = result["kl_nats"] / result["peer_kl_nats"]
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def _configuration(record: dict) -> str:
    """How a recorded run's configuration differs from :data:`DEFAULTS`, e.g. "tied=False" (the
    scikit-learn peer's settings are left out)."""
    return configuration_label(record, DEFAULTS, ignore=tuple(name for name in DEFAULTS if name.startswith("peer_")))


def table(records: list[dict]):
    """The recorded runs as a DataFrame, one row per run: the configuration (what differs from
    :data:`DEFAULTS`), seed, budget, exact KL of the model returned, the excess test NLL, the
    scikit-learn peer's exact KL when it ran, steps and number of parameters. Rows of one
    configuration stay together, in the order the configurations were first recorded."""
    import pandas as pd

    rows = [{
        "configuration": _configuration(record),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget", record.get("seconds")),
        "KL (nats)": record.get("kl_nats"),
        "test NLL - truth": (record["test_nll"] - record["test_nll_truth"]
                             if "test_nll" in record and "test_nll_truth" in record else None),
        "sklearn KL (nats)": record.get("peer_kl_nats"),
        "steps": record.get("steps"),
        "n_params": record.get("n_params"),
    } for record in records]
    frame = pd.DataFrame(rows)
    return group_by_configuration(frame)
