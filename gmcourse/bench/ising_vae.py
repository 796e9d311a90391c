r"""Benchmark ``ising-vae``: chapter 8's VAE with a 2-dimensional latent space on 20,000 exact samples
of the 4x4 Ising model at :math:`T = 2.269` (the data of ``ising-ar``), scored *exactly*.

    python -m gmcourse.bench ising-vae --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

A VAE cannot evaluate its own likelihood, but with a 2D latent space the integral
:math:`p_\theta(s) = \int p_\theta(s\mid z)\,\mathcal N(z; 0, I)\,dz` is done by quadrature on a grid
(:func:`gmcourse.vae.all_states_log_marginal`, eq. ``ch8-eq-quadrature``) for all :math:`2^{16}` states at
once. That gives the exact :math:`\mathrm{KL}(P_\text{data}\,\|\,P_\theta)` and, next to the ELBO,
the exact gap :math:`\log p_\theta(s) - \mathcal L(s) = \mathrm{KL}(q_\phi(z\mid s)\,\|\,p_\theta(z\mid s))`.

Training: Adam on the negative ELBO (one reparameterised draw per sample) with minibatches of
the training samples, for the given wall-clock budget, the learning rate decayed by a cosine to
0 at its end (``lr_decay``). The network is the chapter's (:data:`DEFAULTS`).

Reported:

* ``kl_nats``: the exact KL of the trained model (quadrature with spacing ``spacing``);
  ``kl_initial_nats`` the same for the untrained model; ``kl_trace`` the same during training, at 1, 2,
  4, ... seconds (not counted in the budget) and at the end, as ``[{"seconds", "kl_nats"}, ...]``.
* ``quadrature``: the check of the quadrature: ``kl_half_spacing_nats`` (the KL with half the
  spacing), ``max_abs_log_p_change`` (the largest change of any state's :math:`\log p_\theta` between the
  two grids, an estimate of the error of the grid used for ``kl_nats``), ``probability_sum`` (:math:`\sum_s p_\theta(s)`, 1 up to the prior's mass outside the grid).
* ``elbo_gap_nats``: :math:`\sum_s P_\text{data}(s)\,[\log p_\theta(s) - \mathcal L(s)]`, the
  ELBO of every state estimated with ``elbo_samples`` draws (4096 for the 256 most probable states,
  which carry most of the weight); ``elbo_gap_stderr`` its Monte Carlo error.
* ``train_elbo``/``test_elbo`` (mean ELBO, nats per configuration), ``train_nll``/``test_nll`` (exact),
  ``test_nll_truth``/``train_nll_truth`` (the Boltzmann NLL of the same samples: the difference
  ``test_nll - test_nll_truth`` estimates the KL), ``entropy_nats``.
* ``iwae``: for ``K`` in 1, 10, 100, 1000, the IWAE estimate :math:`\log\hat p_K` averaged over the first
  ``iwae_states`` test samples (``mean``), the mean of :math:`\log p_\theta(s) - \log\hat p_K(s)` over them
  (``gap``) with its standard error (``gap_stderr``, paired per sample), and ``exact_log_p``, the
  quadrature's mean :math:`\log p_\theta` of the same samples.
* ``seconds`` (training wall time), ``steps``, ``epochs``, ``n_params``, ``threads``, ``config``.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.bench import apply_overrides
from gmcourse.bench.ising_ar import TRACE_FIRST, exact_kl, ising_data
from gmcourse.divergences import gaussian_kl
from gmcourse.ising import IsingModel
from gmcourse.utils import default_device, make_generator, progress as progress_bar
from gmcourse.vae import VAE, all_states_log_marginal

__all__ = ["DEFAULTS", "IWAE_K", "run", "table", "make_model", "score"]

L, TEMPERATURE, N_SAMPLES = 4, 2.269, 20_000
IWAE_K = (1, 10, 100, 1000)
TOP_STATES, TOP_SAMPLES = 256, 4096  # the ELBO of the most probable states with more draws
DEFAULTS = dict(latent_dim=2, hidden_sizes=(64, 64), activation="tanh", learning_rate=3e-3, lr_decay=True,
                batch_size=256, spacing=0.1, extent=6.0, elbo_samples=32, iwae_states=500)


def make_model(cfg: dict) -> VAE:
    """The chapter's VAE for the 16 spins of the 4x4 lattice (Bernoulli decoder on (s + 1)/2)."""
    return VAE(L * L, cfg["latent_dim"], hidden=cfg["hidden_sizes"], likelihood="spin", activation=cfg["activation"])


def all_state_elbos(model: VAE, states: torch.Tensor, n_samples: int, seed: int,
                    batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """ELBO of every row of ``states`` (2^D, D) with ``n_samples`` draws each, and its Monte Carlo
    standard error per state (from the spread of the draws' reconstruction terms), float64."""
    generator = make_generator(seed, device=model.encoder[0].weight.device)
    values, errors = [], []
    with torch.no_grad():
        for start in range(0, len(states), batch_size):
            x = states[start:start + batch_size]
            mu, logvar = model.encode(x)
            z = model.reparameterize(mu, logvar, n_samples, generator)  # (S, b, d)
            reconstruction = model.decoder_log_prob(x, z).double()  # (S, b)
            kl = gaussian_kl(mu, logvar).double()  # (b,) exact, eq. ch8-eq-kl-analytic
            values.append(reconstruction.mean(0) - kl)
            errors.append(reconstruction.std(0) / math.sqrt(n_samples))
    return torch.cat(values).cpu(), torch.cat(errors).cpu()


def score(model: VAE, ising: IsingModel, cfg: dict, seed: int) -> dict:
    """Exact KL, quadrature check and the ELBO of every state (see the module docstring); a dict with
    the (2^16,) tables ``log_q`` (spacing ``cfg["spacing"]``), ``log_q_fine`` (half of it) and ``elbo``."""
    p = ising.probabilities()  # (2^16,)
    log_q = all_states_log_marginal(model, cfg["spacing"], cfg["extent"])
    log_q_fine = all_states_log_marginal(model, cfg["spacing"] / 2, cfg["extent"])  # the check: half the spacing
    states = ising.all_states().flatten(1).to(model.encoder[0].weight)  # (2^16, 16)
    elbo, elbo_error = all_state_elbos(model, states, cfg["elbo_samples"], seed)
    # the most probable states carry most of the Monte Carlo error of the P_data-weighted gap: redo them
    top = torch.argsort(p, descending=True)[:TOP_STATES]
    elbo[top], elbo_error[top] = all_state_elbos(model, states[top], TOP_SAMPLES, seed + 1, batch_size=64)
    gap = log_q - elbo
    return dict(log_q=log_q, log_q_fine=log_q_fine, elbo=elbo, kl=exact_kl(ising, log_q=log_q), kl_fine=exact_kl(ising, log_q=log_q_fine),
                max_change=float((log_q - log_q_fine).abs().max()), probability_sum=float(log_q.exp().sum()),
                gap=float((p * gap).sum()), gap_stderr=float(torch.sqrt((p**2 * elbo_error**2).sum())))


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring).
    ``overrides`` (``--set NAME=VALUE`` strings) change :data:`DEFAULTS`."""
    if peer is not None:
        raise ValueError(f"ising-vae has no peer library to compare with, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    if cfg["latent_dim"] not in (1, 2):
        raise ValueError(f"latent_dim must be 1 or 2 (the quadrature runs on a grid), got {cfg['latent_dim']}")
    torch.set_num_threads(1)  # batches of 256 x 64 units: a second thread costs more than it gives
    device = torch.device(device) if device is not None else default_device()
    ising, g, train, test = ising_data(seed)  # the data of ising-ar
    train_seed = int(torch.randint(2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        model = make_model(cfg).to(device)
    kl_initial = exact_kl(ising, log_q=all_states_log_marginal(model, cfg["spacing"], cfg["extent"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    g_train = make_generator(train_seed, device=device)
    train_device = train.to(device, torch.get_default_dtype())

    bar = progress_bar(total=round(seconds, 1), desc="ising-vae", disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
    trace, next_trace = [{"seconds": 0.0, "kl_nats": kl_initial}], TRACE_FIRST
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        if elapsed >= next_trace:  # the exact KL at 1, 2, 4, ... s, its time not counted in the budget
            began = time.perf_counter()
            log_q = all_states_log_marginal(model, cfg["spacing"], cfg["extent"])
            trace.append({"seconds": round(elapsed, 2), "kl_nats": exact_kl(ising, log_q=log_q)})
            while next_trace <= elapsed:
                next_trace *= 2
            start += time.perf_counter() - began
        if cfg["lr_decay"]:  # cosine decay over the wall-clock budget
            for group in optimizer.param_groups:
                group["lr"] = cfg["learning_rate"] * 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
        x = train_device[torch.randint(N_SAMPLES, (cfg["batch_size"],), generator=g_train, device=device)]
        loss = model.loss(x, generator=g_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 200 == 0:
            bar.set_postfix_str(f"-ELBO {loss.item():.3f}", refresh=False)
            bar.update(round(elapsed, 1) - bar.n)
    train_seconds = time.perf_counter() - start
    bar.update(round(seconds, 1) - bar.n)
    bar.close()

    model.eval()
    scores = score(model, ising, cfg, seed)
    trace.append({"seconds": round(train_seconds, 2), "kl_nats": scores["kl"]})
    train_index, test_index = ising.state_index(train.view(-1, L, L)), ising.state_index(test.view(-1, L, L))
    iwae_x = test[:cfg["iwae_states"]].to(device, torch.get_default_dtype())
    iwae_generator = make_generator(seed + 1, device=device)
    exact_iwae_x = scores["log_q"][test_index[:cfg["iwae_states"]]]  # (n,)
    iwae = {}
    for k in IWAE_K:
        estimate = model.iwae_log_prob(iwae_x, k, generator=iwae_generator).log_prob.cpu()  # (n,)
        gap = exact_iwae_x - estimate  # paired: the same states, so their spread of log p cancels
        iwae[str(k)] = dict(mean=float(estimate.mean()), gap=float(gap.mean()),
                            gap_stderr=float(gap.std() / math.sqrt(len(gap))))
    result = dict(
        kl_nats=scores["kl"], kl_initial_nats=kl_initial, kl_trace=trace,
        elbo_gap_nats=scores["gap"], elbo_gap_stderr=scores["gap_stderr"],
        quadrature=dict(spacing=cfg["spacing"], extent=cfg["extent"], kl_half_spacing_nats=scores["kl_fine"],
                        max_abs_log_p_change=scores["max_change"], probability_sum=scores["probability_sum"]),
        iwae=dict(iwae, exact_log_p=float(exact_iwae_x.mean()),
                  n_states=len(iwae_x)),
        seconds=round(train_seconds, 2),
        train_elbo=float(scores["elbo"][train_index].mean()), test_elbo=float(scores["elbo"][test_index].mean()),
        train_nll=float(-scores["log_q"][train_index].mean()), test_nll=float(-scores["log_q"][test_index].mean()),
        test_nll_truth=float(-ising.log_prob(test.view(-1, L, L)).mean()),
        train_nll_truth=float(-ising.log_prob(train.view(-1, L, L)).mean()), entropy_nats=ising.entropy(),
        steps=steps, epochs=round(steps * cfg["batch_size"] / N_SAMPLES, 1),
        n_params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads(),
        config={name: list(value) if isinstance(value, tuple) else value for name, value in cfg.items()})
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """The recorded runs as a DataFrame, one row per run: seed, budget, the exact KL, the mean exact
    ELBO gap, the test NLL above the truth, the gap left by IWAE with K = 1000, steps and weights."""
    import pandas as pd

    def iwae_gap(record):
        iwae = record.get("iwae") or {}
        if "1000" not in iwae or "exact_log_p" not in iwae:
            return None
        return iwae["1000"].get("gap", iwae["exact_log_p"] - iwae["1000"]["mean"])

    rows = [{
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget", record.get("seconds")),
        "KL (nats)": record.get("kl_nats"),
        "ELBO gap (nats)": record.get("elbo_gap_nats"),
        "test NLL - truth": (record["test_nll"] - record["test_nll_truth"]
                             if "test_nll" in record and "test_nll_truth" in record else None),
        "log p - IWAE_1000": iwae_gap(record),
        "steps": record.get("steps"),
        "n_params": record.get("n_params"),
    } for record in records]
    return pd.DataFrame(rows)
