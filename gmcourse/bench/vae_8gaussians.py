r"""Benchmark ``vae-8gaussians``: chapter 8's VAE with a Gaussian decoder trained for a wall-clock
budget on fresh samples of eight Gaussians (radius 2, std 0.1), scored by its bound on the NLL and on
its samples, the same way as the other families on this toy.

    python -m gmcourse.bench vae-8gaussians --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

Data: :class:`gmcourse.toys.EightGaussians`, a fresh batch every step (no overfitting, no held-out
split). Model: :class:`gmcourse.vae.VAE` with ``likelihood="gaussian"`` (eq. ``ch8-eq-gaussian-decoder``,
the decoder outputs a mean and a log-variance per coordinate), a latent space of ``latent_dim`` = 2
and MLPs of ``hidden`` units in the encoder and (mirrored) in the decoder.

Training (:data:`DEFAULTS`, each part switchable with ``--set``): Adam on the negative ELBO with one
reparameterised draw per point, batch ``batch_size``, a peak learning rate ``lr`` with a linear
warm-up over ``warmup_fraction`` of the budget and a cosine decay to 0 (``lr_schedule=constant``
switches it off), gradient norm clipped at ``grad_clip``, one thread; the loop is
:func:`gmcourse.bench.ddpm_8gaussians.train` (the clock starts at the first step; ``max_steps`` stops
it after that many steps instead, for tuning independent of the machine).

Scores (:func:`gmcourse.bench.ddpm_8gaussians.evaluate`, the scores of every 8-Gaussians task), on
``n_eval`` = 5,000 samples :math:`z\sim\mathcal N(0, I)`, :math:`x\sim p_\theta(x\mid z)` (the decoder's
noise included: that is the model's distribution) against 5,000 fresh data points: ``mmd2`` ±
``mmd2_stderr``, ``modes_covered`` of ``n_modes``, ``high_quality_fraction`` (within 3 std of a mode),
``mode_kl_to_uniform``. The likelihood side, on the first ``n_elbo`` of those data points, paired per
point with the exact :math:`\log p(x)` of the data so that the spread of :math:`\log p` cancels:

``nll_minus_entropy`` ± ``nll_minus_entropy_stderr``
    :math:`\mathbb E_p[\log p(x) - \mathcal L(x)] = -\mathbb E_p\mathcal L - H(p)`, the ELBO's bound
    on :math:`\mathrm{NLL} - H(p) = \mathrm{KL}(p\,\|\,p_\theta)` (``likelihood_kind = "lower_bound"``:
    the number is an upper bound on the KL, up to its Monte Carlo error); also stored as
    ``elbo_gap_nats``/``elbo_gap_stderr`` like ``ddpm-8gaussians``.
``iwae_nll_minus_entropy`` ± ``iwae_nll_minus_entropy_stderr``
    the same with the importance-weighted bound :math:`\log\hat p_K`, :math:`K` = ``iwae_k``
    (eq. ``ch8-eq-iwae``; Burda et al. 2016), a tighter bound on the same KL: the difference of the two
    is the part of the ELBO's gap that a better encoder would close.

Also ``steps``, ``seconds``, ``steps_per_second``, ``steps_per_cpu_second``, ``sampling_seconds``,
``n_params``, ``threads``, ``device``, ``config``. Evaluation is not counted in the budget.
"""

from __future__ import annotations

import torch

from gmcourse.bench import (apply_overrides, check_at_least, check_max_steps, configuration_label,
                            group_by_configuration, initial_model, pace, run_facts)
from gmcourse.bench.ddpm_8gaussians import evaluate, recipe_of, train
from gmcourse.bench.flow_8gaussians import EVAL_SEED_OFFSET
from gmcourse.divergences import monte_carlo_mean
from gmcourse.toys import EightGaussians
from gmcourse.utils import default_device, make_generator
from gmcourse.vae import ACTIVATIONS, VAE

__all__ = ["DEFAULTS", "LIKELIHOOD_KIND", "check_config", "make_model", "run", "table"]

LIKELIHOOD_KIND = "lower_bound"
DEFAULTS = dict(latent_dim=2, hidden=(128, 128), activation="silu", batch_size=512, lr=3e-3,
                lr_schedule="warmup-cosine", warmup_fraction=0.02, final_lr_fraction=0.0, grad_clip=10.0,
                max_steps=None, n_eval=5000, n_elbo=1000, iwae_k=1000, threads=1)


def check_config(cfg: dict) -> dict:
    """The checked configuration (``max_steps`` an int or None); a clear error for a bad value."""
    check_at_least(cfg, ("latent_dim", "batch_size", "threads", "iwae_k"))
    for name in ("n_eval", "n_elbo"):
        if cfg[name] < 2:
            raise ValueError(f"{name} must be >= 2 (a standard error needs two points), got {cfg[name]}")
    if cfg["n_elbo"] > cfg["n_eval"]:
        raise ValueError(f"n_elbo ({cfg['n_elbo']}) must not exceed n_eval ({cfg['n_eval']}): the bound is "
                         f"evaluated on the first n_elbo of the evaluation points")
    if any(width < 1 for width in cfg["hidden"]):
        raise ValueError(f"every hidden width must be >= 1, got {cfg['hidden']}")
    if cfg["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {cfg['activation']!r}")
    if cfg["lr_schedule"] not in ("warmup-cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'warmup-cosine' or 'constant', got {cfg['lr_schedule']!r}")
    if cfg["lr"] is None or not cfg["lr"] > 0:
        raise ValueError(f"lr must be a positive number, got {cfg['lr']}")
    return check_max_steps(cfg)


def make_model(cfg: dict) -> VAE:
    """The VAE of a configuration (initialised from torch's global RNG)."""
    return VAE(2, cfg["latent_dim"], hidden=tuple(cfg["hidden"]), likelihood="gaussian", activation=cfg["activation"])


def iwae_gap(model: VAE, seed: int, n: int, k: int, n_eval: int) -> dict:
    r""":math:`\mathbb E_p[\log p(x) - \log\hat p_K(x)]` on the first ``n`` evaluation points of
    :func:`~gmcourse.bench.ddpm_8gaussians.evaluate` (the same points as the ELBO's gap), paired."""
    toy = EightGaussians()
    x = toy.sample(n_eval, seed=seed + EVAL_SEED_OFFSET)[:n]  # the points of evaluate: its first n of n_eval
    device = model.encoder[0].weight.device
    estimate = model.iwae_log_prob(x.to(device), k, generator=make_generator(seed + 4 * EVAL_SEED_OFFSET,
                                                                              device=device)).log_prob
    gap = monte_carlo_mean(toy.log_prob(x.double()) - estimate.double().cpu())
    return {"iwae_nll_minus_entropy": gap.mean, "iwae_nll_minus_entropy_stderr": gap.stderr, "iwae_k": k}


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train for ``seconds`` of wall time; the scores (see the module docstring). ``overrides`` holds
    ``--set NAME=VALUE`` strings for :data:`DEFAULTS`."""
    if peer is not None:
        raise ValueError(f"vae-8gaussians has no peer library to compare with, got --peer {peer!r}")
    cfg = check_config(apply_overrides(DEFAULTS, overrides))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(cfg["threads"])
    model = initial_model(make_model, cfg, seed, device)
    toy = EightGaussians()
    data_generator, noise_generator = make_generator(seed), make_generator(seed + 1, device=device)
    steps, elapsed, cpu_seconds = train(
        lambda x: model.loss(x, generator=noise_generator), model,
        lambda m: toy.sample(m, generator=data_generator).to(device), seconds, recipe_of(cfg), cfg["max_steps"],
        None, "VAE 8 Gaussians", progress)
    model.eval()
    scores = evaluate(lambda n, g: model.sample(n, generator=g), lambda x, g: model.elbo(x.to(device), generator=g),
                      seed, cfg["n_eval"], cfg["n_elbo"])
    if scores.get("elbo_gap_nats") is None:  # diverged: non-finite samples
        iwae = {"iwae_nll_minus_entropy": None, "iwae_nll_minus_entropy_stderr": None, "iwae_k": cfg["iwae_k"]}
    else:
        iwae = iwae_gap(model, seed, cfg["n_elbo"], cfg["iwae_k"], cfg["n_eval"])
    result = {**scores, **iwae, "likelihood_kind": LIKELIHOOD_KIND,  # scores hold nll_minus_entropy and n_modes
              **pace(steps, elapsed, cpu_seconds), **run_facts(model, cfg, device, seconds)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def _plus_minus(record: dict, name: str, digits: int) -> str:
    if record.get(name) is None:
        return ""
    return f"{record[name]:.{digits}f} ± {record[f'{name}_stderr']:.{digits}f}"


def table(records: list[dict]):
    """One row per recorded run: what differs from :data:`DEFAULTS`, seed and budget, the ELBO's and
    the IWAE's bounds on NLL − H (nats), MMD² ± standard error, modes covered, high-quality fraction,
    steps. Rows of one configuration stay together."""
    import pandas as pd

    rows = [{
        "configuration": configuration_label(record, DEFAULTS),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget"),
        "−ELBO − H (nats)": _plus_minus(record, "nll_minus_entropy", 3),
        "IWAE bound − H (nats)": _plus_minus(record, "iwae_nll_minus_entropy", 3),
        "MMD²": _plus_minus(record, "mmd2", 5),
        "modes": f"{record.get('modes_covered')}/{record.get('n_modes')}",
        "high quality": record.get("high_quality_fraction"),
        "steps": record.get("steps"),
    } for record in records]
    return group_by_configuration(pd.DataFrame(rows))
