r"""Benchmark ``tfim-transformer``: attention-based quantum state tomography of the critical
transverse-field Ising chain (:math:`h = J = 1`, open boundaries; :math:`N = 10` spins by default,
``--set n_spins=16`` for the longer chain) from 10,000 measurement records in the :math:`\sigma^z`
basis, with chapter 11's mini-transformer, scored exactly against the ground state.

    python -m gmcourse.bench tfim-transformer --seconds 60 --seed 0 [--set n_spins=16] [--record]

The ground state is positive in the :math:`\sigma^z` basis, so the model :math:`P_\theta` of the
records defines the state :math:`\phi = \sqrt{P_\theta}`; the fidelity
:math:`(\sum_s \sqrt{p(s) P_\theta(s)})^2` and :math:`\mathrm{KL}(p\,\|\,P_\theta)` are exact sums over
the :math:`2^N` basis states (:func:`gmcourse.bench.tfim_rbm.state_scores`). ``tfim-rbm`` is the
restricted Boltzmann machine on the same records, in the same table on the results page.

Recipe (:func:`gmcourse.bench.ising_ar.train_augmented`): :class:`~gmcourse.transformer.TransformerAR`
on the spins in chain order; every record used in a random image under the chain's symmetries
(reversal and global flip, :func:`gmcourse.bench.tfim_rbm.chain_symmetries`); the scored model is
the symmetrised :math:`p_G` (exactly normalised and invariant); Adam with a cosine learning-rate
decay over the budget. A transformer reads the chain in order and can attend to any earlier
spin, the natural model of a record (Cha et al., 2021); an RBM with few hidden units must
squeeze the correlations into a handful of features, and with many it overfits 10,000 records.

Reported: ``fidelity``, ``kl_nats``, ``kl_initial_nats``, ``sz_correlation_error``, ``sx_error``,
``train_nll`` and ``train_nll_truth``, ``entropy_nats``, ``kl_trace`` (exact KL every
``eval_every`` training seconds; the evaluation is not counted in the budget), ``steps``,
``seconds``, ``n_params``, ``n_spins``, ``threads``, ``config``.
"""

from __future__ import annotations

import torch

from gmcourse.autoregressive import SymmetrizedModel
from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.bench.ising_ar import train_augmented
from gmcourse.bench.tfim_rbm import chain_symmetries, state_scores
from gmcourse.quantum import tfim_ground_state
from gmcourse.transformer import TransformerAR
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "run", "table"]

N_RECORDS = 10_000
DEFAULTS = dict(n_spins=10, d_model=32, n_heads=4, n_layers=2, n_hidden=64, positions="learned", learning_rate=1e-2,
                lr_decay=True, batch_size=256, weight_decay=0.0, augment=True, symmetrize=True, eval_every=5.0)


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of training time and return the scores (see the module docstring)."""
    if peer is not None:
        raise ValueError(f"tfim-transformer has no peer library to compare with, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    if not 2 <= cfg["n_spins"] <= 16:
        raise ValueError(f"n_spins must be between 2 and 16 (exact diagonalisation), got {cfg['n_spins']}")
    torch.set_num_threads(1)
    device = torch.device(device) if device is not None else default_device()
    n_spins = cfg["n_spins"]
    state = tfim_ground_state(n_spins)  # J = h = 1, open boundaries
    records = state.sample(N_RECORDS, seed=seed).to(device)  # (10000, N) +-1
    g = make_generator(seed)
    train_seed = int(torch.randint(2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        base = TransformerAR(n_classes=2, context=n_spins, d_model=cfg["d_model"], n_heads=cfg["n_heads"],
                             n_layers=cfg["n_layers"], n_hidden=cfg["n_hidden"], positions=cfg["positions"]).to(device)
    permutations, signs = (t.to(device) for t in chain_symmetries(n_spins))
    model = SymmetrizedModel(base, permutations, signs) if cfg["symmetrize"] else base
    optimizer = torch.optim.Adam(base.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    g_train = make_generator(train_seed, device=device)

    initial = state_scores(state, model)
    trace = [{"seconds": 0.0, "kl_nats": initial["kl_nats"]}]
    bar = progress_bar(total=round(seconds, 1), desc="tfim-transformer", disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")

    def record(elapsed):
        kl = state_scores(state, model)["kl_nats"]
        trace.append({"seconds": round(elapsed, 2), "kl_nats": kl})
        bar.set_postfix_str(f"KL {kl:.4f}", refresh=False)

    steps, train_seconds = train_augmented(base, optimizer, records, permutations, signs, cfg, seconds, g_train, bar,
                                           on_eval=record, exclude_eval_time=True)
    bar.close()
    scores = state_scores(state, model)
    trace.append({"seconds": round(train_seconds, 2), "kl_nats": scores["kl_nats"]})
    with torch.no_grad():
        train_nll = float(-model.log_prob(records).double().mean())
    p = state.probabilities()
    result = dict(**scores, kl_initial_nats=initial["kl_nats"], seconds=round(train_seconds, 2), train_nll=train_nll,
                  train_nll_truth=float(-state.log_prob(records.cpu()).mean()),
                  entropy_nats=float(-(p[p > 0] * p[p > 0].log()).sum()), steps=steps,
                  n_params=sum(p.numel() for p in base.parameters()), n_spins=n_spins, kl_trace=trace,
                  threads=torch.get_num_threads(), config=dict(cfg))
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """One row per recorded run: N, configuration, seed, budget, fidelity, exact KL, steps, parameters."""
    import pandas as pd

    frame = pd.DataFrame([{
        "N": record.get("n_spins"),
        "configuration": configuration_label(record, DEFAULTS, ignore=("n_spins",)),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget", record.get("seconds")),
        "fidelity": record.get("fidelity"),
        "KL (nats)": record.get("kl_nats"),
        "steps": record.get("steps"),
        "n_params": record.get("n_params"),
    } for record in records])
    return group_by_configuration(frame)
