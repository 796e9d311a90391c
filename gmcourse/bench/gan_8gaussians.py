r"""Benchmark ``gan-8gaussians``: chapter 9's GAN (:mod:`gmcourse.gan`) trained for a wall-clock budget
on fresh samples of eight Gaussians (radius 2, std 0.1) -- or, with ``--set toy=gaussian-grid``, of the
5x5 grid of Gaussians (spacing 1, std 0.05) -- and scored on its samples, since a GAN has no likelihood.

    python -m gmcourse.bench gan-8gaussians --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

**Scores** (:mod:`gmcourse.metrics`), from ``N_EVAL`` = 5,000 samples of the trained model against
5,000 *fresh* data points (a random stream apart from training's):

``mmd2``, ``mmd2_stderr``
    the unbiased :math:`\mathrm{MMD}^2` (RBF kernel, median-heuristic bandwidth) and its standard
    error under the null; ``mmd2_sigmas`` = their ratio (about 0 for samples indistinguishable from data).
``modes_covered`` (of ``n_modes``), ``high_quality_fraction``, ``kl_to_uniform``, ``mode_counts``
    from :func:`gmcourse.metrics.mode_coverage`: a sample is high quality within 3 std of its nearest
    centre; a mode is covered when it holds at least a quarter of its uniform share of the samples
    (``kl_to_uniform``, of the histogram of high-quality samples, is ``None`` when there are none).
    ``data_high_quality_fraction`` is the same fraction for the fresh data points (the floor a perfect
    model would reach up to noise: :math:`1 - e^{-9/2} = 0.989` in expectation).
``trace``
    ``[{"step", "seconds", "modes_covered", "high_quality_fraction"}, ...]`` every ``trace_every``
    seconds of training (2,000 samples each; the time these evaluations take is not counted in the budget).
``likelihood_kind``
    ``None``: a GAN has neither a likelihood nor a bound on it (the field every 8-Gaussians task has).
``steps``, ``seconds``, ``steps_per_second``, ``sampling_seconds`` (drawing the 5,000 samples),
``cpu_seconds`` (processor time of the training loop, trace included: far below ``seconds`` on a
busy machine, where the process waited for a core),
``n_params`` (generator + discriminator), ``threads``, ``device``, ``config``.

**The recipe** (:data:`DEFAULTS`; every ingredient can be switched with ``--set``, so an ablation is an
ordinary recorded run):

1. the non-saturating generator loss (``kind``; eq. ``ch9-eq-nonsaturating``);
2. large learning rates with a decay to 0 over the budget (``lr``, ``d_lr``, ``lr_decay``):
   the fast early phase finds every mode, the slow late phase sharpens the samples on them; Adam
   without momentum (``beta1`` = 0, ``beta2`` = 0.99), since momentum feeds the rotation of the two
   players around their equilibrium;
3. an exponential moving average of the generator's weights (``ema_decay``; samples are drawn from
   the average), which cancels most of the oscillation of simultaneous gradient play;
4. a zero-centred gradient penalty on data, R1 (``r1_weight``), which damps that oscillation at its source
   and keeps the modes evenly populated;
5. a latent space of the data's dimension (``latent_dim`` = 2): in the recorded runs a wider one
   (``--set latent_dim=8``) left more samples between the modes at the same budget.

``--set recipe=textbook`` starts from the textbook recipe instead (:data:`TEXTBOOK`: 3x128 MLPs,
:math:`d_z = 2`, Adam at 1e-4 with :math:`\beta_1 = 0.5`, batch 256, no decay, no average, no
penalty; Radford et al. 2016); further ``--set`` options change it (e.g. ``--set kind=minimax``).
:func:`table` shows each run with what differs from the recipe it started from.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.bench import run_facts as common_run_facts
from gmcourse.gan import ACTIVATIONS, GAN, KINDS, MLPDiscriminator, MLPGenerator
from gmcourse.metrics import mmd2, mode_coverage
from gmcourse.toys import get_toy
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "TEXTBOOK", "RECIPES", "TOYS", "build", "config_of", "learning_rate_factor", "run", "score",
           "table"]

N_EVAL = 5_000  # model samples and fresh data points for the final scores
N_TRACE = 2_000  # samples per point of the trace
EVAL_SEED_OFFSET = 1_000_003  # the evaluation streams never overlap the training stream
TOYS = {"8gaussians": {}, "gaussian-grid": {"n_per_side": 5, "spacing": 1.0, "std": 0.05}}
LR_DECAYS = ("linear", "cosine", "constant")

DEFAULTS = dict(recipe="best", toy="8gaussians", kind="non_saturating", latent_dim=2, hidden=(128, 128, 128),
                activation="relu", spectral_norm=False, batch_size=256, lr=2e-3, d_lr=2e-3, beta1=0.0, beta2=0.99,
                lr_decay="linear", ema_decay=0.999, r1_weight=0.1, discriminator_steps=1, gp_weight=10.0,
                trace_every=5.0)
TEXTBOOK = {**DEFAULTS, "recipe": "textbook", "latent_dim": 2, "lr": 1e-4, "d_lr": 1e-4, "beta1": 0.5, "beta2": 0.999,
            "lr_decay": "constant",
            "ema_decay": None, "r1_weight": 0.0}
RECIPES = {"best": DEFAULTS, "textbook": TEXTBOOK}


def config_of(overrides: dict[str, str] | None) -> dict:
    """The configuration of a run: the recipe named by ``recipe`` (default ``best`` = :data:`DEFAULTS`),
    then every other ``--set`` option on top of it, each checked."""
    overrides = dict(overrides or {})
    recipe = overrides.pop("recipe", "best")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    cfg = apply_overrides(RECIPES[recipe], overrides)
    if cfg["toy"] not in TOYS:
        raise ValueError(f"toy must be one of {sorted(TOYS)}, got {cfg['toy']!r}")
    if cfg["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {cfg['kind']!r}")
    if cfg["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {cfg['activation']!r}")
    if cfg["lr_decay"] not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {list(LR_DECAYS)}, got {cfg['lr_decay']!r}")
    for name in ("latent_dim", "batch_size", "discriminator_steps"):
        if cfg[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {cfg[name]}")
    for name in ("lr", "d_lr", "trace_every"):
        if cfg[name] is None or not cfg[name] > 0:
            raise ValueError(f"{name} must be a positive number, got {cfg[name]}")
    for name in ("beta1", "beta2"):
        if not 0 <= cfg[name] < 1:
            raise ValueError(f"{name} must be in [0, 1), got {cfg[name]}")
    if cfg["ema_decay"] is not None and not 0 < cfg["ema_decay"] < 1:
        raise ValueError(f"ema_decay must be in (0, 1) or none, got {cfg['ema_decay']}")
    return cfg


def build(cfg: dict) -> GAN:
    """The GAN of a configuration (initialised from torch's global RNG)."""
    hidden = tuple(cfg["hidden"])
    generator = MLPGenerator(cfg["latent_dim"], 2, hidden, cfg["activation"])
    discriminator = MLPDiscriminator(2, hidden, cfg["activation"], spectral_norm=cfg["spectral_norm"])
    return GAN(generator, discriminator, cfg["latent_dim"], kind=cfg["kind"],
               discriminator_steps=cfg["discriminator_steps"], gp_weight=cfg["gp_weight"],
               r1_weight=cfg["r1_weight"], ema_decay=cfg["ema_decay"])


def learning_rate_factor(schedule: str, fraction: float) -> float:
    """The learning rate relative to its peak after ``fraction`` of the budget: 1 (``constant``),
    :math:`1 - f` (``linear``) or :math:`(1 + \\cos\\pi f)/2` (``cosine``)."""
    fraction = min(max(fraction, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - fraction
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    raise ValueError(f"lr_decay must be one of {list(LR_DECAYS)}, got {schedule!r}")


def score(model: GAN, toy, seed: int, n: int = N_EVAL) -> dict:
    """MMD² (± standard error) against ``n`` fresh data points and the mode report of ``n`` samples."""
    g = make_generator(seed + EVAL_SEED_OFFSET)
    data = toy.sample(n, generator=g)  # (n, 2) fresh, never seen in training
    start = time.perf_counter()
    samples = model.sample(n, generator=g).cpu()  # (n, 2)
    sampling_seconds = time.perf_counter() - start
    estimate = mmd2(samples, data)
    report, floor = mode_coverage(samples, toy), mode_coverage(data, toy)
    return {"mmd2": estimate.mean, "mmd2_stderr": estimate.stderr,
            "mmd2_sigmas": estimate.mean / estimate.stderr if estimate.stderr > 0 else None,
            "modes_covered": report.modes_covered, "n_modes": report.n_modes,
            "high_quality_fraction": report.high_quality_fraction,
            "kl_to_uniform": None if math.isnan(report.kl_to_uniform) else report.kl_to_uniform,
            "mode_counts": list(report.counts), "min_fraction": report.min_fraction,
            "data_high_quality_fraction": floor.high_quality_fraction, "sampling_seconds": sampling_seconds}


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring).
    ``overrides`` (``--set NAME=VALUE`` strings) change the recipe."""
    if peer is not None:
        raise ValueError(f"gan-8gaussians has no peer library; compare recipes with --set recipe=textbook "
                         f"(got --peer {peer!r})")
    cfg = config_of(overrides)
    torch.set_num_threads(1)  # batches of 256 x 128 units: a second thread costs more than it gives
    device = torch.device(device) if device is not None else default_device()
    toy = get_toy(cfg["toy"], **TOYS[cfg["toy"]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights
        model = build(cfg).to(device)
    d_opt, g_opt = model.optimizers(lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), d_lr=cfg["d_lr"])
    peaks = [(group, group["lr"]) for opt in (d_opt, g_opt) for group in opt.param_groups]
    g = make_generator(seed, device=device)  # minibatches, codes, interpolation weights
    g_trace = make_generator(seed + 2 * EVAL_SEED_OFFSET)
    rows = cfg["batch_size"] * cfg["discriminator_steps"]

    trace, steps, elapsed = [], 0, 0.0
    next_trace = 0.0
    bar = progress_bar(total=round(seconds), desc=f"gan-8gaussians ({cfg['recipe']})", unit="s",
                       disable=None if progress else True)
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= next_trace or elapsed >= seconds:  # not counted in the budget: the clock is shifted
            report = mode_coverage(model.sample(N_TRACE, generator=g_trace).cpu(), toy)
            trace.append({"step": steps, "seconds": round(elapsed, 2), "modes_covered": report.modes_covered,
                          "high_quality_fraction": round(report.high_quality_fraction, 4)})
            next_trace += cfg["trace_every"]
            bar.set_postfix_str(f"{report.modes_covered}/{report.n_modes} modes", refresh=False)
            bar.update(min(round(seconds), int(elapsed)) - bar.n)
            start += time.perf_counter() - start - elapsed
        if elapsed >= seconds:
            break
        factor = learning_rate_factor(cfg["lr_decay"], elapsed / seconds)
        for group, peak in peaks:
            group["lr"] = peak * factor
        model.train_step(toy.sample(rows, generator=g).to(device), d_opt, g_opt, generator=g)
        steps += 1
    cpu_seconds = time.process_time() - cpu_start  # includes the trace's evaluations
    bar.close()

    model.eval()
    result = {**score(model, toy, seed), "steps": steps, "seconds": round(elapsed, 2),
              "cpu_seconds": round(cpu_seconds, 2),
              "steps_per_second": steps / elapsed, "trace": trace,
              "likelihood_kind": None,  # a GAN has no likelihood (the zoo's common field)
              **run_facts(model, cfg, device)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def run_facts(model: GAN, cfg: dict, device) -> dict:
    """The fields every GAN benchmark record carries: parameter count, threads, device, configuration."""
    return common_run_facts([model.generator_net, model.discriminator_net], cfg, device)


def _configuration(record: dict) -> str:
    """What a recorded run changed from the recipe it started from, e.g. "recipe=textbook, kind=minimax"."""
    config = record.get("config") or config_of(record.get("overrides"))
    recipe = config.get("recipe", "best")
    label = configuration_label({"config": config}, RECIPES.get(recipe, DEFAULTS), ignore=("recipe",))
    if recipe == "best":
        return label
    return f"recipe={recipe}" + ("" if label == "default" else f", {label}")


def table(records: list[dict]):
    """One row per recorded run: the configuration (what differs from its recipe), the toy, seed and
    budget, modes covered, high-quality fraction, MMD² ± standard error, KL of the mode histogram to
    uniform, steps. Rows of one configuration stay together, in the order first recorded."""
    import pandas as pd

    rows = []
    for record in records:
        config = record.get("config") or {}
        mmd = record.get("mmd2")
        rows.append({
            "configuration": _configuration(record),
            "toy": config.get("toy", DEFAULTS["toy"]),
            "seed": record.get("seed"),
            "budget (s)": record.get("seconds_budget", record.get("seconds")),
            "modes": f"{record.get('modes_covered')}/{record.get('n_modes')}",
            "high quality": record.get("high_quality_fraction"),
            "MMD²": None if mmd is None else f"{mmd:.5f} ± {record.get('mmd2_stderr', float('nan')):.5f}",
            "KL to uniform": record.get("kl_to_uniform"),
            "steps": record.get("steps"),
        })
    return group_by_configuration(pd.DataFrame(rows))
