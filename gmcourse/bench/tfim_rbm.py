r"""Benchmark ``tfim-rbm``: neural-network quantum state tomography of the critical transverse-field
Ising chain (:math:`N = 10`, :math:`h = J = 1`, open boundaries) from 10,000 measurement records in
the :math:`\sigma^z` basis, scored exactly against the ground state
(:func:`gmcourse.quantum.tfim_ground_state`).

    python -m gmcourse.bench tfim-rbm --seconds 60 --seed 0 [--set NAME=VALUE ...]

The ground state is positive in the :math:`\sigma^z` basis, so :math:`\psi = \sqrt{p}` and an RBM
:math:`P_\theta(s)` fitted to the records defines the state :math:`\phi = \sqrt{P_\theta}`. Scores:
the fidelity :math:`|\langle\psi|\phi\rangle|^2 = (\sum_s \sqrt{p(s) P_\theta(s)})^2` and
:math:`\mathrm{KL}(p\,\|\,P_\theta)`, both exact over the :math:`2^{10}` basis states.

Training is PCD-k (:func:`gmcourse.bench.ising_rbm.train`). With :math:`N_\text{rec}` records, a
model with :math:`d` free parameters fitted by maximum likelihood ends on average a KL of about
:math:`d / (2 N_\text{rec})` from the truth (the estimation error), so the model is kept small:

1. ``n_hidden`` spin hidden units, spin visible units, **no biases** (``bias``): the model is then
   exactly invariant under the global flip :math:`s \to -s`, a symmetry of the ground state
   (it commutes with :math:`\prod_i\sigma^x_i`), and has :math:`d = 10\,n_h` parameters.
2. **Augmentation** (``augment``): each record is used as one of its 4 images under the exact
   symmetries of the open chain's ground state, the global flip and the reversal
   :math:`i \to N - 1 - i`, which averages the empirical distribution over the group.
3. Many persistent chains (``n_chains``), ``k`` Gibbs steps per update, a cosine learning-rate
   decay (``lr_decay``).

Reported: ``fidelity``, ``kl_nats``, ``kl_initial_nats``, ``train_nll`` (the records' NLL under the
model) and ``train_nll_truth`` (under the exact :math:`p`), ``entropy_nats`` (of :math:`p`),
``sz_correlation_error`` (largest error of :math:`\langle\sigma^z_i\sigma^z_j\rangle`),
``sx_error`` (largest error of :math:`\langle\sigma^x_i\rangle` computed from :math:`\phi`),
``seconds``, ``steps``, ``n_params``, ``kl_trace``, ``threads``, ``config``.
"""

from __future__ import annotations

import torch

from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.bench.ising_rbm import train
from gmcourse.quantum import fidelity, sx_expectation, sz_correlation, tfim_ground_state
from gmcourse.rbm import RBM
from gmcourse.utils import default_device, make_generator

__all__ = ["DEFAULTS", "run", "table", "chain_symmetries", "state_scores"]

N_SPINS, N_RECORDS = 10, 10_000
DEFAULTS = dict(n_hidden=6, bias=False, init_std=0.05, learning_rate=0.01, lr_decay=True, batch_size=1000,
                n_chains=1000, k=5, augment=True, eval_every=5.0)


def chain_symmetries(n_spins: int):
    r"""The open chain's symmetry group {identity, reversal} x {1, global flip} in the form of
    :func:`gmcourse.autoregressive.lattice_symmetries`: ``(permutations (4, N), signs (4,))``."""
    identity = torch.arange(n_spins)
    permutations = torch.stack([identity, identity.flip(0), identity, identity.flip(0)])
    return permutations, torch.tensor([1.0, 1.0, -1.0, -1.0])


def state_scores(state, model) -> dict:
    """Exact fidelity, KL and observables of ``model`` (any model with ``log_prob`` on +-1 spins)
    against ``state``."""
    with torch.no_grad():
        q = model.log_prob(state.all_states().to(next(model.parameters()))).double().exp().cpu()  # (2^N,)
    p = state.probabilities()
    support = p > 0
    kl = float((p[support] * (p[support].log() - q[support].log())).sum())
    return dict(fidelity=fidelity(p, q / q.sum()), kl_nats=kl,
                sz_correlation_error=float((sz_correlation(q / q.sum(), state.all_states())
                                            - state.sz_correlation()).abs().max()),
                sx_error=float((sx_expectation((q / q.sum()).sqrt()) - state.sx_expectation()).abs().max()))


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring).
    ``overrides`` (``--set NAME=VALUE`` strings) change :data:`DEFAULTS`."""
    if peer is not None:
        raise ValueError(f"tfim-rbm has no peer library to compare with, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    for name in ("n_hidden", "batch_size", "n_chains", "k"):
        if cfg[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {cfg[name]}")
    torch.set_num_threads(1)
    device = torch.device(device) if device is not None else default_device()
    state = tfim_ground_state(N_SPINS)  # J = h = 1, open boundaries
    records = state.sample(N_RECORDS, seed=seed)  # (10000, 10) float32 +-1
    g = make_generator(seed)
    train_seed = int(torch.randint(2**62, (1,), generator=g))
    model = RBM(N_SPINS, cfg["n_hidden"], visible="spin", hidden="spin", bias=cfg["bias"], seed=train_seed,
                init_std=cfg["init_std"]).to(device)
    g_train = make_generator(train_seed, device=device)
    symmetries = tuple(t.to(device) for t in chain_symmetries(N_SPINS))

    initial = state_scores(state, model)
    info = train(model, records.to(device, torch.get_default_dtype()), cfg, seconds, g_train, symmetries,
                 evaluate=lambda: state_scores(state, model)["kl_nats"], progress=progress, desc="tfim-rbm")
    scores = state_scores(state, model)
    with torch.no_grad():
        train_nll = float(-model.log_prob(records.to(device, torch.get_default_dtype())).double().mean())
    result = dict(**scores, kl_initial_nats=initial["kl_nats"], seconds=round(info["seconds"], 2),
                  train_nll=train_nll, train_nll_truth=float(-state.log_prob(records).mean()),
                  entropy_nats=float(-(state.probabilities() * state.probabilities().log()).sum()),
                  steps=info["steps"], n_params=sum(p.numel() for p in model.parameters()),
                  kl_trace=[{"seconds": 0.0, "kl_nats": initial["kl_nats"]}, *info["trace"],
                            {"seconds": round(info["seconds"], 2), "kl_nats": scores["kl_nats"]}],
                  threads=torch.get_num_threads(), config=dict(cfg))
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """The recorded runs as a DataFrame, one row per run: configuration (what differs from
    :data:`DEFAULTS`), seed, budget, fidelity, exact KL, steps and number of parameters."""
    import pandas as pd

    frame = pd.DataFrame([{
        "configuration": configuration_label(record, DEFAULTS),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget", record.get("seconds")),
        "fidelity": record.get("fidelity"),
        "KL (nats)": record.get("kl_nats"),
        "steps": record.get("steps"),
        "n_params": record.get("n_params"),
    } for record in records])
    return group_by_configuration(frame)
