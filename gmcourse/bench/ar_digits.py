r"""Benchmark ``ar-digits``: chapter 4's autoregressive pixel model on the 8x8 digits (17 grey levels),
trained for a wall-clock budget and scored by its *exact* likelihood of the test digits, in bits per
pixel, and on its samples.

    python -m gmcourse.bench ar-digits --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

**Data** (as in chapter 4, section ``ch4-digits``): the 1,500 training digits of
:func:`gmcourse.digits.load_digits` in the ``"levels"`` form (integers 0..16, read row by row as a
sequence of :math:`D = 64` pixels, each seen by the network as a one-hot vector of 17 entries); the
first 1,200 train the model, the last 300 are the **validation** set that chooses the checkpoint; the
297 ``"test"`` digits are used only to report.

**Model** (``network``): ``"conv"`` (default) :class:`gmcourse.autoregressive.CausalConv1dAR` with
``channels`` channels, whose receptive field covers the 64 pixels; ``"gru"``
:class:`~gmcourse.autoregressive.GRUAutoregressive` with ``hidden_size`` units; ``"made"``
:class:`~gmcourse.autoregressive.MADE` with one hidden layer of ``hidden_size`` units. Chapter 4 shows
why the convolution and the GRU, which share their weights across positions, generalise better than
NADE and MADE on 1,200 images.

**Training** (:data:`DEFAULTS`, each part switchable with ``--set``): Adam on the mean NLL, minibatches
of ``batch_size`` drawn with replacement, peak learning rate ``lr`` with a cosine decay to 0 over the
budget (``lr_schedule=constant`` switches it off), one thread. Every ``eval_every`` seconds of
training (and at the end) the validation NLL is computed, outside the budget (the clock is paused),
and the weights of the best validation score are kept (:func:`train_with_validation`, as chapter 4
keeps the best epoch): the test set plays no part in any choice.

**Scores**:

``bits_per_pixel`` ± ``bits_per_pixel_stderr``
    the exact test NLL :math:`-\frac1{297}\sum_i\log_2 P_\theta(x_i)/64` (``likelihood_kind = "exact"``),
    with the standard error over the 297 test digits; ``train_bits_per_pixel``,
    ``validation_bits_per_pixel``. Uniform over the 17 levels is :math:`\log_2 17 = 4.09`. The same
    discretisation (17 levels per pixel) as ``vae-digits`` and the ELBO of ``ddpm-digits``, so the
    three numbers are comparable.
``frechet_distance``, ``label_entropy``, ``label_counts`` of ``n_samples`` = 1,000 samples (grey level / 16)
    (:func:`digit_sample_scores`: :func:`gmcourse.metrics.digit_scores` as ``gan-digits`` reports it), with
    ``frechet_distance_500``, ``label_entropy_500`` (the first 500 samples) next to the held-out-real
    floor ``floor_frechet_distance``, ``floor_label_entropy`` (500 real digits,
    :func:`gmcourse.metrics.digit_floor`).
``validation_trace``
    ``[{"seconds", "steps", "validation_bits_per_pixel"}, ...]``; ``best_seconds`` when the kept
    checkpoint was made.

Also ``seconds``, ``steps``, ``epochs``, ``steps_per_second``, ``sampling_seconds``, ``n_params``,
``threads``, ``device``, ``config``.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from gmcourse.bench import (apply_overrides, check_at_least, check_max_steps, configuration_label,
                            group_by_configuration, initial_model, pace, run_facts)
from gmcourse.autoregressive import MADE, CausalConv1dAR, GRUAutoregressive
from gmcourse.digits import N_LEVELS, load_digits
from gmcourse.divergences import monte_carlo_mean
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "LIKELIHOOD_KIND", "N_SAMPLES", "N_FLOOR", "N_VALIDATION", "NETWORKS", "digit_data",
           "digit_sample_scores", "bits_per_pixel", "train_with_validation", "make_model", "run", "table"]

LIKELIHOOD_KIND = "exact"
N_SAMPLES = 1_000  # samples scored
N_FLOOR = 500  # held-out real digits of the floor (gmcourse.metrics.digit_floor)
N_VALIDATION = 300  # the last 300 training digits choose the checkpoint (chapter 4)
D = 64
SAMPLE_SEED_OFFSET = 2_000_003  # the sampling stream never overlaps the training stream
NETWORKS = ("conv", "gru", "made")
LR_SCHEDULES = ("cosine", "constant")

DEFAULTS = dict(network="conv", channels=32, hidden_size=128, batch_size=100, lr=3e-3, lr_schedule="cosine",
                eval_every=5.0, max_steps=None, n_samples=N_SAMPLES, threads=1)


def digit_data(device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train, validation, test)`` grey levels 0..16, int64, (1200, 64), (300, 64), (297, 64)."""
    levels, _ = load_digits("train", "levels", flatten=True, device=device)  # (1500, 64)
    test, _ = load_digits("test", "levels", flatten=True, device=device)  # (297, 64)
    train, validation = levels.split([len(levels) - N_VALIDATION, N_VALIDATION])
    return train, validation, test


def bits_per_pixel(log_probs: torch.Tensor) -> tuple[float, float]:
    r"""Mean and standard error (over images) of :math:`-\log_2 P(x)/64` from log-probabilities (n,) in nats."""
    estimate = monte_carlo_mean(-log_probs.double().cpu() / (D * math.log(2)))
    return estimate.mean, estimate.stderr


def digit_sample_scores(samples: torch.Tensor) -> dict:
    """The digit-sample fields of every digits task, from ``samples`` (n >= 500, 64) with pixel values in
    [0, 1]: :func:`gmcourse.metrics.digit_scores` of all of them and of the first :data:`N_FLOOR`, and
    the held-out-real floor at that size, under the names ``gan-digits`` uses."""
    from gmcourse.metrics import digit_floor, digit_scores

    if samples.shape[0] < N_FLOOR:
        raise ValueError(f"need at least {N_FLOOR} samples to compare with the floor, got {samples.shape[0]}")
    scores, like_floor, floor = digit_scores(samples), digit_scores(samples[:N_FLOOR]), digit_floor(N_FLOOR)
    return {"frechet_distance": scores["frechet_distance"], "label_entropy": scores["label_entropy"],
            "label_counts": [int(c) for c in scores["label_counts"]], "n_samples": scores["n_samples"],
            "frechet_distance_500": like_floor["frechet_distance"], "label_entropy_500": like_floor["label_entropy"],
            "floor_frechet_distance": floor["frechet_distance"], "floor_label_entropy": floor["label_entropy"]}


def train_with_validation(model: torch.nn.Module, loss_fn, validation_nll, train: torch.Tensor, seconds: float,
                          cfg: dict, generator: torch.Generator, desc: str, progress: bool = True) -> dict:
    """Adam on ``loss_fn(batch)`` (minibatches of ``cfg["batch_size"]`` rows of ``train`` drawn with
    replacement) for ``seconds`` of wall time or ``cfg["max_steps"]`` steps; every ``cfg["eval_every"]``
    seconds and at the end, ``validation_nll()`` (nats per image) with the clock paused; the model ends
    with the weights of the best validation score. Learning rate: ``cfg["lr"]``, with a cosine decay to
    0 over the budget when ``cfg["lr_schedule"] == "cosine"``. Returns ``steps``, ``seconds`` (training
    time), ``best_seconds``, ``validation_nll`` (the best) and ``trace``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    device = train.device
    bar = progress_bar(total=round(seconds), desc=desc, unit="s", disable=None if progress else True)
    trace, best, next_eval, steps = [], None, cfg["eval_every"], 0
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        done = elapsed >= seconds or (cfg["max_steps"] is not None and steps >= cfg["max_steps"])
        if done or elapsed >= next_eval:  # not counted in the budget: the clock is shifted
            model.eval()
            with torch.no_grad():
                nll = float(validation_nll())
            model.train()
            trace.append({"seconds": round(elapsed, 2), "steps": steps,
                          "validation_bits_per_pixel": nll / (D * math.log(2))})
            if math.isfinite(nll) and (best is None or nll < best["nll"]):
                best = {"nll": nll, "seconds": elapsed, "state": copy.deepcopy(model.state_dict())}
            next_eval += cfg["eval_every"]
            bar.set_postfix_str(f"valid. {trace[-1]['validation_bits_per_pixel']:.3f} bits/pixel", refresh=False)
            bar.update(min(round(seconds), int(elapsed)) - bar.n)
            start += time.perf_counter() - start - elapsed
        if done:
            break
        if cfg["lr_schedule"] == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * min(elapsed / seconds, 1.0)))
        batch = train[torch.randint(len(train), (cfg["batch_size"],), generator=generator, device=device)]
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    bar.close()
    if best is None:
        raise RuntimeError(f"{desc}: every validation NLL was non-finite; the training diverged")
    model.load_state_dict(best["state"])
    model.eval()
    return {"steps": steps, "seconds": elapsed, "best_seconds": round(best["seconds"], 2),
            "validation_nll": best["nll"], "trace": trace}


def fit_facts(fit: dict, cfg: dict, n_train: int) -> dict:
    """The training fields of a record from :func:`train_with_validation`'s result."""
    return {**pace(fit["steps"], fit["seconds"]), "epochs": round(fit["steps"] * cfg["batch_size"] / n_train, 1),
            "best_seconds": fit["best_seconds"], "validation_trace": fit["trace"]}


def check_common(cfg: dict, names=("batch_size", "threads")) -> dict:
    """Checks shared by the digits likelihood tasks; returns ``cfg`` with ``max_steps`` an int or None."""
    check_at_least(cfg, names)
    if cfg["lr"] is None or not cfg["lr"] > 0:
        raise ValueError(f"lr must be a positive number, got {cfg['lr']}")
    if cfg["eval_every"] is None or not cfg["eval_every"] > 0:
        raise ValueError(f"eval_every must be a positive number of seconds, got {cfg['eval_every']}")
    if cfg["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {cfg['lr_schedule']!r}")
    if cfg["n_samples"] < N_FLOOR:
        raise ValueError(f"n_samples must be >= {N_FLOOR} (the floor compares the first {N_FLOOR}), got {cfg['n_samples']}")
    return check_max_steps(cfg)


def check_config(cfg: dict) -> dict:
    if cfg["network"] not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}, got {cfg['network']!r}")
    return check_common(cfg, ("channels", "hidden_size", "batch_size", "threads"))


def make_model(cfg: dict):
    """The network of a configuration, on 17 grey levels (initialised from torch's global RNG)."""
    if cfg["network"] == "conv":
        return CausalConv1dAR(D, n_classes=N_LEVELS, channels=cfg["channels"])
    if cfg["network"] == "gru":
        return GRUAutoregressive(D, n_classes=N_LEVELS, hidden_size=cfg["hidden_size"])
    return MADE(D, hidden_sizes=(cfg["hidden_size"],), n_classes=N_LEVELS)


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train for ``seconds`` of wall time; the scores (see the module docstring). ``overrides`` holds
    ``--set NAME=VALUE`` strings for :data:`DEFAULTS`."""
    if peer is not None:
        raise ValueError(f"ar-digits has no peer library to compare with, got --peer {peer!r}")
    cfg = check_config(apply_overrides(DEFAULTS, overrides))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(cfg["threads"])
    train, validation, test = digit_data(device)
    model = initial_model(make_model, cfg, seed, device)
    fit = train_with_validation(model, lambda x: -model.log_prob(x).mean(),
                                lambda: -model.log_prob(validation).double().mean(), train, seconds, cfg,
                                make_generator(seed, device=device), "ar-digits", progress)
    with torch.no_grad():
        test_bits, test_stderr = bits_per_pixel(model.log_prob(test))
        train_bits, _ = bits_per_pixel(model.log_prob(train))
    start = time.perf_counter()
    samples = model.sample(cfg["n_samples"], generator=make_generator(seed + SAMPLE_SEED_OFFSET, device=device)).cpu()
    sampling_seconds = time.perf_counter() - start
    result = {"bits_per_pixel": test_bits, "bits_per_pixel_stderr": test_stderr, "likelihood_kind": LIKELIHOOD_KIND,
              "train_bits_per_pixel": train_bits,
              "validation_bits_per_pixel": fit["validation_nll"] / (D * math.log(2)),
              **digit_sample_scores(samples.double() / (N_LEVELS - 1)),
              **fit_facts(fit, cfg, len(train)), "sampling_seconds": sampling_seconds,
              **run_facts(model, cfg, device, seconds)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def digits_table(records: list[dict], defaults: dict, likelihood_label: str | None):
    """The table of a digits task: configuration, seed, budget, the test bits per pixel ± standard
    error under ``likelihood_label`` and the validation bits per pixel (both left out when
    ``likelihood_label`` is None: a family without a likelihood), Fréchet distance and label entropy
    next to the held-out-real floor, steps and (when recorded) epochs."""
    import pandas as pd

    def bits(record):
        if record.get("bits_per_pixel") is None:
            return ""
        return f"{record['bits_per_pixel']:.3f} ± {record.get('bits_per_pixel_stderr', float('nan')):.3f}"

    def row(record):
        likelihood = {} if likelihood_label is None else {
            likelihood_label: bits(record), "validation bits/pixel": record.get("validation_bits_per_pixel")}
        return {"configuration": configuration_label(record, defaults), "seed": record.get("seed"),
                "budget (s)": record.get("seconds_budget", record.get("seconds")), **likelihood,
                "FD (1,000)": record.get("frechet_distance"), "FD (500)": record.get("frechet_distance_500"),
                "FD floor (500 real)": record.get("floor_frechet_distance"),
                "label entropy": record.get("label_entropy"),
                "entropy floor (real)": record.get("floor_label_entropy"), "steps": record.get("steps"),
                **({"epochs": record.get("epochs")} if any("epochs" in r for r in records) else {})}

    return group_by_configuration(pd.DataFrame([row(record) for record in records]))


def table(records: list[dict]):
    """One row per recorded run (see :func:`digits_table`): the exact test bits per pixel first."""
    return digits_table(records, DEFAULTS, "test bits/pixel (exact)")
