r"""Benchmark ``ising-ar``: chapter 4's MADE on 20,000 exact samples of the 4x4 Ising model at
:math:`T = 2.269`, scored by the *exact* :math:`\mathrm{KL}(P_\text{data}\,\|\,P_\theta)` over all
:math:`2^{16}` states.

    python -m gmcourse.bench ising-ar --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

The default configuration (:data:`DEFAULTS`) is the recipe of chapter 4; each ingredient can be
switched off with ``--set``, so the ablation that shows what each one contributes is a set of
ordinary recorded runs (:func:`table` shows them side by side):

1. **Augmentation** (``augment``). The periodic 4x4 lattice has a group :math:`G` of 256
   symmetries (8 rotations/reflections x 16 translations x the global flip,
   :func:`~gmcourse.autoregressive.lattice_symmetries`) under which :math:`P_\text{data}` is
   invariant. Each training sample is used in a random orientation (a fresh :math:`g \in G` per
   sample per step, :func:`~gmcourse.autoregressive.random_symmetry`); the network then fits the
   symmetrised empirical distribution, which is much closer to the truth than the empirical one.
2. **Symmetrisation** (``symmetrize``). The model that is scored and saved is
   :math:`p_G(s) = \frac1{|G|}\sum_g p(gs)` (:class:`~gmcourse.autoregressive.SymmetrizedModel`,
   eq. ``ch4-eq-symmetrised``): exactly normalised, exactly invariant, and never further from an
   invariant :math:`P_\text{data}` than the network itself (eq. ``ch4-eq-symmetrisation-helps``).
   Augmented training minimises :math:`\mathbb E_g[-\log p(gx)] \ge -\log p_G(x)` (Jensen), an
   upper bound on the symmetrised model's NLL. The training data are still only the samples.
3. **A held-out split** (``validation_fraction``; 0 switches it off and trains on every sample).
   The held-out samples never enter a gradient; the model is evaluated on them every
   ``eval_every`` seconds, and a checkpoint replaces the final model only if its validation NLL is
   lower by more than ``selection_sigmas`` standard errors of the paired per-sample difference (a
   smaller gap is noise).
4. **Learning-rate decay** (``lr_decay``): a cosine from ``learning_rate`` to 0 over the budget,
   so that the last steps average out the noise of the minibatch gradients instead of following
   it; the last model is then usually the best one. Without it the rate stays constant.

The test NLL uses 20,000 *fresh* exact samples that play no part in training or selection.

Reported: ``kl_nats`` (exact, of the model returned), ``kl_base_nats`` (the same network
without symmetrisation), ``kl_initial_nats`` (the exact KL of the model before training, scored
the same way), ``train_nll``/``val_nll``/``test_nll`` (nats per configuration; the data entropy
``entropy_nats`` is their expectation under a perfect model, but each carries a sampling error of
:math:`\mathrm{std}[\log P_\text{data}]/\sqrt n`), ``test_nll_truth`` (the exact Boltzmann NLL of
the same test samples: ``test_nll - test_nll_truth`` estimates the KL with a far smaller error,
as the fluctuations of the sample cancel), ``seconds`` (training wall time), ``steps``,
``epochs``, ``n_params``, ``selected``, ``group_size``, ``threads`` and ``config`` (the full
configuration), and ``kl_trace``: the exact KL of the model being trained before training, at the
first evaluations after 1, 2, 4, 8, ... seconds (each evaluation's time is not counted in the
budget), and of the model returned, as ``[{"seconds", "kl_nats"}, ...]``.
"""

from __future__ import annotations

import copy
import itertools
import math
import time

import torch

from gmcourse.autoregressive import MADE, SymmetrizedModel, lattice_symmetries, random_symmetry
from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.ising import IsingModel
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "run", "table", "exact_kl", "all_state_log_probs", "ising_data", "fit_and_score", "train_augmented"]

L, TEMPERATURE, N_SAMPLES = 4, 2.269, 20_000
TRACE_FIRST = 1.0  # seconds of training before the first point of the KL trace; then doubling

DEFAULTS = dict(hidden_sizes=(64, 64), direct=True, learning_rate=3e-3, lr_decay=True, batch_size=256,
                weight_decay=0.0, augment=True, symmetrize=True, validation_fraction=0.1, eval_every=2.0,
                selection_sigmas=3.0)


def all_state_log_probs(ising: IsingModel, model) -> torch.Tensor:
    r""":math:`\log p_\theta(s)` of every state of ``ising.all_states()``, float64 (2^D,)."""
    states = ising.all_states().flatten(1)  # (2^D, D)
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    with torch.no_grad():
        return model.log_prob(states.to(device, torch.get_default_dtype())).double().cpu()


def exact_kl(ising: IsingModel, model=None, log_q: torch.Tensor | None = None) -> float:
    r""":math:`\sum_s p(s)\,[\log p(s) - \log p_\theta(s)]` over all :math:`2^{L^2}` states, in nats
    (pass ``model``, or ``log_q`` from :func:`all_state_log_probs`)."""
    log_q = all_state_log_probs(ising, model) if log_q is None else log_q
    p = ising.probabilities()  # (2^D,) float64
    return float((p * (p.log() - log_q)).sum())



def ising_data(seed: int):
    r"""The data every Ising L=4 benchmark shares: the model at :math:`T = 2.269`, a generator seeded
    with ``seed``, 20,000 exact training samples and 20,000 fresh test samples, both (20000, 16) +-1.
    The generator is returned so that a task draws its further random numbers from the same stream."""
    ising = IsingModel(L, 1.0 / TEMPERATURE)
    g = make_generator(seed)
    train = ising.sample(N_SAMPLES, method="exact", generator=g).flatten(1)  # (20000, 16) = sample(seed=seed)
    test = ising.sample(N_SAMPLES, method="exact", generator=g).flatten(1)  # fresh draws, scoring only
    return ising, g, train, test

def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring).
    ``overrides`` (``--set NAME=VALUE`` strings) change :data:`DEFAULTS`."""
    if peer is not None:
        raise ValueError(f"ising-ar has no peer library to compare with, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    model, result = fit_and_score(lambda: MADE(L * L, cfg["hidden_sizes"], direct=cfg["direct"]), cfg, seconds,
                                  seed, device, progress, "ising-ar")
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def fit_and_score(make_base, cfg: dict, seconds: float, seed: int, device=None, progress: bool = True,
                  desc: str = "ising") -> tuple:
    """The recipe of this module for any spin model ``make_base()`` (called with the training seed
    set): augmented minibatches, the symmetrised model, held-out selection and the cosine decay of
    ``cfg`` (the keys of :data:`DEFAULTS` other than the network's), within ``seconds``. Returns
    ``(model, result)``: the model that is scored and the fields of the module docstring."""
    if not 0.0 <= cfg["validation_fraction"] < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {cfg['validation_fraction']}")
    torch.set_num_threads(1)  # small batches: a second thread costs more than it gives
    device = torch.device(device) if device is not None else default_device()
    ising, g, data, test = ising_data(seed)
    split = torch.randperm(N_SAMPLES, generator=g)
    n_val = int(round(cfg["validation_fraction"] * N_SAMPLES))
    val, train = data[split[:n_val]].to(device), data[split[n_val:]].to(device)

    train_seed = int(torch.randint(2**62, (1,), generator=g))  # batches, symmetries, initial weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        base = make_base().to(device)
    permutations, signs = lattice_symmetries(L)
    permutations, signs = permutations.to(device), signs.to(device)
    model = SymmetrizedModel(base, permutations, signs) if cfg["symmetrize"] else base
    optimizer = torch.optim.Adam(base.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    g_train = make_generator(train_seed, device=device)

    kl_initial = exact_kl(ising, model)  # the untrained model, scored as the trained one will be

    def val_log_probs():
        with torch.no_grad():
            return model.log_prob(val) if n_val else torch.zeros(0, device=device)

    bar = progress_bar(total=round(seconds, 1), desc=desc, disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
    best = dict(nll=math.inf, state=None, log_probs=None, at=None)

    trace = [{"seconds": 0.0, "kl_nats": kl_initial}]
    next_trace = [TRACE_FIRST]

    def select(elapsed):  # every eval_every seconds: keep the checkpoint with the best held-out NLL
        excluded = 0.0
        if elapsed >= next_trace[0]:  # the exact KL at 1, 2, 4, 8, ... s, its time not counted in the budget
            began = time.perf_counter()
            trace.append({"seconds": round(elapsed, 2), "kl_nats": exact_kl(ising, model)})
            while next_trace[0] <= elapsed:
                next_trace[0] *= 2
            excluded = time.perf_counter() - began
        if n_val:
            log_probs = val_log_probs()
            if -log_probs.mean() < best["nll"]:
                best.update(nll=float(-log_probs.mean()), state=copy.deepcopy(base.state_dict()),
                            log_probs=log_probs, at=round(elapsed, 1))
            bar.set_postfix_str(f"val NLL {float(-log_probs.mean()):.4f}", refresh=False)
        return excluded

    steps, train_seconds = train_augmented(base, optimizer, train, permutations, signs, cfg, seconds, g_train, bar,
                                           on_eval=select)
    bar.close()

    selected = "end"
    if n_val and best["state"] is not None:
        difference = best["log_probs"] - val_log_probs()  # (n_val,) paired: same samples, two models
        stderr = float(difference.std()) / math.sqrt(n_val)
        if float(difference.mean()) > cfg["selection_sigmas"] * stderr:
            base.load_state_dict(best["state"])
            selected = f"checkpoint at {best['at']} s"

    log_q = all_state_log_probs(ising, model)  # (2^16,): every score below is a lookup in it
    kl = exact_kl(ising, log_q=log_q)
    trace.append({"seconds": round(train_seconds, 2), "kl_nats": kl})
    nll = {name: float(-log_q[ising.state_index(part.view(-1, L, L))].mean()) if len(part) else None
           for name, part in (("train", train.cpu()), ("val", val.cpu()), ("test", test))}
    result = dict(kl_nats=kl, kl_trace=trace, kl_base_nats=exact_kl(ising, base), kl_initial_nats=kl_initial,
                  seconds=round(train_seconds, 2), train_nll=nll["train"], val_nll=nll["val"],
                  test_nll=nll["test"], test_nll_truth=float(-ising.log_prob(test.view(-1, L, L)).mean()),
                  entropy_nats=ising.entropy(), steps=steps, epochs=round(steps * cfg["batch_size"] / len(train), 1),
                  n_params=sum(p.numel() for p in base.parameters()), selected=selected,
                  group_size=len(signs) if cfg["symmetrize"] else 1, threads=torch.get_num_threads(),
                  config={name: list(value) if isinstance(value, tuple) else value for name, value in cfg.items()})
    return model, result


def train_augmented(base, optimizer, train: torch.Tensor, permutations, signs, cfg: dict, seconds: float,
                    generator: torch.Generator, bar, on_eval=None, exclude_eval_time: bool = False) -> tuple[int, float]:
    """Minibatch maximum likelihood for ``seconds`` of wall time: ``cfg["batch_size"]`` samples of
    ``train`` per step, each moved by a random symmetry when ``cfg["augment"]``, the learning rate
    on a cosine from ``cfg["learning_rate"]`` to 0 when ``cfg["lr_decay"]``, after a linear warm-up
    over the fraction ``cfg["warmup"]`` of the budget when that key is positive; ``on_eval(elapsed)``
    every ``cfg["eval_every"]`` seconds, its time not counted in the budget when ``exclude_eval_time``
    (otherwise the number of seconds that ``on_eval`` returns, if any, is not counted).
    Returns (steps, training seconds)."""
    steps, start = 0, time.perf_counter()
    next_eval = cfg["eval_every"]
    while (elapsed := time.perf_counter() - start) < seconds:
        rate = cfg["learning_rate"]
        if cfg["lr_decay"]:  # cosine decay over the wall-clock budget
            rate *= 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
        if cfg.get("warmup", 0.0) > 0:  # a linear warm-up over the first fraction of the budget
            rate *= min(1.0, elapsed / (cfg["warmup"] * seconds))
        for group in optimizer.param_groups:
            group["lr"] = rate
        x = train[torch.randint(len(train), (cfg["batch_size"],), generator=generator, device=train.device)]
        if cfg["augment"]:  # a random symmetry per sample: (gx)_i = sign_g x_{perm_g(i)}
            x = random_symmetry(x, permutations, signs, generator=generator)  # (batch, D)
        loss = base.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if elapsed >= next_eval:
            next_eval += cfg["eval_every"]
            if on_eval is not None:
                began = time.perf_counter()
                excluded = on_eval(elapsed)
                if exclude_eval_time:
                    start += time.perf_counter() - began
                elif excluded:
                    start += excluded
            bar.update(round(elapsed, 1) - bar.n)
    train_seconds = time.perf_counter() - start
    bar.update(round(seconds, 1) - bar.n)
    return steps, train_seconds


def _configuration(record: dict) -> str:
    """How a recorded run's configuration differs from :data:`DEFAULTS`, e.g. "augment=False"."""
    return configuration_label(record, DEFAULTS)


def table(records: list[dict]):
    """The recorded runs as a DataFrame, one row per run: the configuration (what differs from
    :data:`DEFAULTS`), the seed and budget, the exact KL of the model returned and of its network
    without symmetrisation, the excess test NLL, the steps taken and the number of weights. Rows
    of one configuration stay together, in the order the configurations were first recorded."""
    import pandas as pd

    rows = [{
        "configuration": _configuration(record),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget", record.get("seconds")),
        "KL (nats)": record.get("kl_nats"),
        "KL unsymmetrised": record.get("kl_base_nats"),
        "test NLL - truth": (record["test_nll"] - record["test_nll_truth"]
                             if "test_nll" in record and "test_nll_truth" in record else None),
        "steps": record.get("steps"),
        "n_params": record.get("n_params"),
    } for record in records]
    frame = pd.DataFrame(rows)
    return group_by_configuration(frame)
