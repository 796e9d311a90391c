r"""Benchmark ``ddpm-8gaussians``: chapter 10's DDPM trained for a wall-clock budget on fresh samples
of eight Gaussians (radius 2, std 0.1) and scored on its samples.

    python -m gmcourse.bench ddpm-8gaussians --seconds 60 --seed 0 [--peer diffusers] [--set NAME=VALUE ...]

Data: :class:`gmcourse.toys.EightGaussians`, a fresh batch every step. Model:
:class:`gmcourse.diffusion.DDPM` with :math:`T = 1000` linear steps (Ho et al. 2020: :math:`\beta_t`
from :math:`10^{-4}` to 0.02), :math:`\epsilon`-prediction, :math:`\sigma_t^2 = \tilde\beta_t`, and an
:class:`~gmcourse.diffusion.MLPNoisePredictor` with 3 hidden layers of 128 SiLU units (the size of the
diffusers baseline's 3x128 MLP) and a sinusoidal time embedding of 16 features mapped linearly to a
shift of every hidden layer. Ancestral sampling uses all :math:`T` steps (the model class is not
changed to sample faster).

Scores (:func:`evaluate`), on ``n_eval`` = 5,000 samples against 5,000 fresh data points (a random
stream apart from training's): the unbiased :math:`\mathrm{MMD}^2` with its standard error
(:func:`gmcourse.metrics.mmd2`, RBF kernel, median-heuristic bandwidth) and their ratio
``mmd2_sigmas`` (within about 3 the samples are statistically indistinguishable from data at this
size); the fraction of "high-quality" samples within 3 std of a mode, the modes covered and the KL
of the mode histogram to uniform (:func:`gmcourse.metrics.mode_coverage`), next to the data's own
high-quality fraction :math:`1 - e^{-9/2} = 0.989`; ``elbo_gap_nats`` :math:`= \mathbb E[\log p(x) -
\mathcal L(x)]` on ``n_elbo`` fresh points (the ELBO's bound on the NLL minus the data entropy,
:math:`\ge \mathrm{KL}(p\,\|\,p_\theta) \ge 0`, paired per point so its error bar is small), also
under the names common to the 8-Gaussians tasks, ``nll_minus_entropy`` ± ``nll_minus_entropy_stderr``
with ``likelihood_kind = "lower_bound"``, and ``n_modes``;
``sampling_seconds`` for the ``n_eval`` samples and ``sampling_steps``; ``steps``,
``steps_per_second`` and ``steps_per_cpu_second`` (training steps per second of this process's
CPU time: on a busy machine, an estimate of the speed on an idle core).

Training (:data:`DEFAULTS`, each part switchable with ``--set``): Adam, batch ``batch_size``, a peak
learning rate ``lr`` with a linear warm-up over ``warmup_fraction`` and a cosine decay to
``final_lr_fraction`` of it (``lr_schedule=constant`` switches it off), gradient norm clipped at
``grad_clip``, an exponential moving average of the weights (``ema_decay``; ``none`` switches it off:
the model scored and saved is then the last iterate), the noise-prediction loss with ``weighting``
(``simple``, ``elbo``, ``min-snr``), one thread. Training time steps are drawn uniformly from 1..T
mixed, with weight ``low_t_fraction``, with the uniform distribution on 1..``low_t_max``
(:func:`t_probabilities`; 0 switches it off). This is a weighting of the steps, not a change of the
model: every step's term of the loss still has :math:`\mathbb E[\epsilon\mid x_t]` as its minimiser.
Its reason: with the exact predictor used for some steps and the network for the others (a
diagnostic on a trained model), the samples that land off the modes come from the network at the
low-noise steps, where the noise level passes through the modes' width (at :math:`t \approx 150`
the noise standard deviation :math:`\sqrt{1-\bar\alpha_t}` is about 0.5, at :math:`t \approx 30`
about 0.1). The schedule runs over the wall-clock budget, or over
``max_steps`` steps when that is set (then training stops there, or at the budget if sooner): tuning
by steps does not depend on the machine's speed.

``--peer diffusers`` also trains, in the same process, on the same data stream, for the same budget
each, the same network (class, size, initialisation seed) with the same recipe, driven by
diffusers' ``DDPMScheduler`` (``add_noise`` in training, ``step`` in sampling, its own random
draws of :math:`t` and :math:`\epsilon`). Two variants:

``diffusers``
    ``DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    prediction_type="epsilon", variance_type="fixed_small", clip_sample=False)``: the same model as
    ours, so the pair checks one implementation against the other. Its ELBO is computed by wrapping
    the network in :class:`~gmcourse.diffusion.DDPM` (the same reverse process).
``diffusers_default``
    ``DDPMScheduler(num_train_timesteps=T)`` with its documented defaults, among them
    ``clip_sample=True`` (clip range 1): each step clips the predicted :math:`x_0` to
    :math:`[-1, 1]^2`, which cuts the radius-2 ring. Its ELBO is not reported: the clipped sampler
    is not the Gaussian reverse process the bound refers to.

Diffusers counts time steps from 0 (its :math:`t` is ours minus one); the network sees ours.
"""

from __future__ import annotations

import copy
import time

import torch

from gmcourse.bench import apply_overrides, check_at_least, check_max_steps, configuration_label, group_by_configuration
from gmcourse.bench.flow_8gaussians import EVAL_SEED_OFFSET, Recipe
from gmcourse.diffusion import DDPM, EMA, MLPNoisePredictor, NoiseSchedule, WEIGHTINGS, VARIANCES
from gmcourse.divergences import monte_carlo_mean
from gmcourse.toys import EightGaussians
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "run", "table", "train", "evaluate", "make_schedule", "fit_and_score"]

PEERS = ("diffusers",)
DEFAULTS = dict(
    T=1000, schedule="linear", variance="posterior",
    hidden=(128, 128, 128), residual=False, time_embedding="sinusoidal", embed_every_layer=True, embedding_dim=16,
    activation="silu",
    batch_size=512, lr=3e-3, lr_schedule="warmup-cosine", warmup_fraction=0.02, final_lr_fraction=0.0,
    grad_clip=1.0, ema_decay=0.999, weighting="simple", low_t_fraction=0.5, low_t_max=200, max_steps=None,
    n_eval=5000, n_elbo=1000, threads=1,
)
DATA_HIGH_QUALITY_FRACTION = 0.9888910034617577  # 1 - exp(-9/2): P(|x - mu| < 3 std) in 2D


def make_schedule(cfg: dict) -> NoiseSchedule:
    if cfg["schedule"] == "linear":
        return NoiseSchedule.linear(cfg["T"])
    if cfg["schedule"] == "cosine":
        return NoiseSchedule.cosine(cfg["T"])
    raise ValueError(f"schedule must be 'linear' or 'cosine', got {cfg['schedule']!r}")


def check_config(cfg: dict) -> dict:
    """Common checks of a DDPM benchmark configuration; returns it with ``max_steps`` an int or None."""
    check_at_least(cfg, ("T", "batch_size", "n_eval", "threads"))
    if cfg["n_elbo"] < 0:
        raise ValueError(f"n_elbo must be >= 0 (0: no ELBO), got {cfg['n_elbo']}")
    if cfg["lr_schedule"] not in ("warmup-cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'warmup-cosine' or 'constant', got {cfg['lr_schedule']!r}")
    if cfg["weighting"] not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {cfg['weighting']!r}")
    if cfg["variance"] not in VARIANCES:
        raise ValueError(f"variance must be one of {list(VARIANCES)}, got {cfg['variance']!r}")
    if cfg["ema_decay"] is not None and not 0 <= cfg["ema_decay"] < 1:
        raise ValueError(f"ema_decay must be in [0, 1) or none, got {cfg['ema_decay']}")
    cfg = check_max_steps(cfg)
    if not 0 <= cfg["low_t_fraction"] <= 1 or (cfg["low_t_fraction"] > 0 and not 1 <= cfg["low_t_max"] <= cfg["T"]):
        raise ValueError(f"need 0 <= low_t_fraction <= 1 and 1 <= low_t_max <= T, got {cfg['low_t_fraction']}, "
                         f"{cfg['low_t_max']}")
    make_schedule(cfg)  # checks schedule
    return cfg


def t_probabilities(cfg: dict) -> torch.Tensor | None:
    """The distribution of training time steps over 1..T: uniform, mixed with weight ``low_t_fraction``
    with the uniform one over 1..``low_t_max`` (None when uniform)."""
    if cfg["low_t_fraction"] == 0:
        return None
    T, low = cfg["T"], cfg["low_t_max"]
    p = torch.full((T,), (1 - cfg["low_t_fraction"]) / T, dtype=torch.float64)
    p[:low] += cfg["low_t_fraction"] / low
    return p


def recipe_of(cfg: dict) -> Recipe:
    return Recipe(cfg["lr"], cfg["batch_size"], cfg["lr_schedule"], cfg["warmup_fraction"],
                  cfg["final_lr_fraction"], cfg["grad_clip"])


def train(loss_fn, module, draw, seconds, recipe: Recipe, max_steps=None, ema_decay=None, desc=None,
          show_progress=True) -> tuple[int, float, float]:
    """Adam on ``loss_fn(batch)`` with batches ``draw(batch_size)`` until ``seconds`` have passed (or
    ``max_steps`` steps, when given); the learning rate follows ``recipe`` as a function of the
    elapsed fraction of the budget (of ``max_steps`` when given). With ``ema_decay`` the module ends
    with the exponential moving average of its weights. Returns ``(steps, elapsed seconds, CPU
    seconds)``; the clock starts at the first step. On a shared machine, steps per CPU second (of
    this process) estimates the speed on an idle core."""
    parameters = list(module.parameters())
    optimizer = torch.optim.Adam(parameters, lr=recipe.learning_rate(0.0), fused=parameters[0].device.type
                                 in ("cpu", "cuda"))
    ema = EMA(module, ema_decay) if ema_decay is not None else None
    bar = progress_bar(total=round(seconds), desc=desc, disable=None if show_progress else True, unit="s")
    start, cpu_start = time.perf_counter(), time.process_time()
    steps, shown = 0, 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or (max_steps is not None and steps >= max_steps):
            break
        fraction = elapsed / seconds if max_steps is None else steps / max_steps
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate(fraction)
        loss = loss_fn(draw(recipe.batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, recipe.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(module)
        steps += 1
        if int(elapsed) > shown:
            bar.update(int(elapsed) - shown)
            shown = int(elapsed)
    cpu_seconds = time.process_time() - cpu_start
    bar.update(max(round(seconds) - shown, 0))
    bar.close()
    if ema is not None:
        ema.copy_to(module)
    return steps, elapsed, cpu_seconds


def evaluate(sample_fn, elbo_fn, seed: int, n_eval: int = 5000, n_elbo: int = 1000) -> dict:
    r"""Sample scores of ``sample_fn(n, generator) -> (n, 2)`` against ``n_eval`` fresh data points,
    and the ELBO gap of ``elbo_fn(x, generator) -> (n,)`` (None: not reported) on ``n_elbo`` of them.

    The gap is also returned under the names every 8-Gaussians task uses, ``nll_minus_entropy`` and
    ``nll_minus_entropy_stderr`` (:math:`-\mathcal L - H(p)`, a bound on the KL), with
    ``likelihood_kind`` ``"lower_bound"`` (None when there is no ELBO); ``n_modes`` is the toy's 8."""
    from gmcourse.metrics import mmd2, mode_coverage

    toy = EightGaussians()
    data = toy.sample(n_eval, seed=seed + EVAL_SEED_OFFSET)  # the same points for every model
    start = time.perf_counter()
    with torch.no_grad():
        samples = sample_fn(n_eval, make_generator(seed + 2 * EVAL_SEED_OFFSET)).float().cpu()
    sampling_seconds = time.perf_counter() - start
    finite = torch.isfinite(samples).all(dim=1)
    result = {"sampling_seconds": sampling_seconds, "non_finite_samples": int((~finite).sum()),
              "n_modes": int(toy.centers().shape[0])}
    if not finite.all():  # a diverged model: no scores
        return {**result, "mmd2": None, "mmd2_stderr": None, "mmd2_sigmas": None, "high_quality_fraction": 0.0,
                "modes_covered": 0, "mode_kl_to_uniform": None, "elbo_gap_nats": None, "elbo_gap_stderr": None,
                "nll_minus_entropy": None, "nll_minus_entropy_stderr": None,
                "likelihood_kind": None if elbo_fn is None else "lower_bound"}
    estimate = mmd2(samples, data)
    report = mode_coverage(samples, toy)
    result.update(mmd2=estimate.mean, mmd2_stderr=estimate.stderr, mmd2_sigmas=estimate.mean / estimate.stderr,
                  high_quality_fraction=report.high_quality_fraction, modes_covered=report.modes_covered,
                  mode_kl_to_uniform=report.kl_to_uniform, data_high_quality_fraction=DATA_HIGH_QUALITY_FRACTION)
    if elbo_fn is not None and n_elbo >= 2:
        x = data[:n_elbo]
        with torch.no_grad():
            gap = monte_carlo_mean(toy.log_prob(x.double()) - elbo_fn(x, make_generator(seed + 3 * EVAL_SEED_OFFSET)))
        result.update(elbo_gap_nats=gap.mean, elbo_gap_stderr=gap.stderr)
    else:
        result.update(elbo_gap_nats=None, elbo_gap_stderr=None)
    # the zoo's common fields: -ELBO - H(p), the ELBO's bound on NLL - H(p) = KL(p || p_theta)
    result.update(nll_minus_entropy=result["elbo_gap_nats"], nll_minus_entropy_stderr=result["elbo_gap_stderr"],
                  likelihood_kind=None if result["elbo_gap_nats"] is None else "lower_bound")
    return result


def make_network(cfg: dict, data_dim: int = 2) -> MLPNoisePredictor:
    return MLPNoisePredictor(data_dim, cfg["hidden"], cfg["time_embedding"], cfg["embedding_dim"],
                             cfg["activation"], cfg["T"], cfg["residual"], cfg["embed_every_layer"])


def fit_and_score(make_net, loss_fn, sample_fn, elbo_fn, cfg, seconds, seed, device, desc, progress) -> tuple:
    """Build the module (seeded; ours: a DDPM, a peer: its network), train it on the seed's data stream
    for ``seconds`` with ``loss_fn(module, x, generator)``, score it with ``sample_fn(module, n,
    generator)`` and ``elbo_fn(module, x, generator)`` (or None). Returns (module, report)."""
    torch.manual_seed(seed)  # network initialisation: the same for every model of a run
    net = make_net().to(device)
    data_generator = make_generator(seed)  # the training data stream, the same for every model
    noise_generator = make_generator(seed + 1)  # time steps and noise
    toy = EightGaussians()
    steps, elapsed, cpu_seconds = train(lambda x: loss_fn(net, x, noise_generator), net,
                           lambda m: toy.sample(m, generator=data_generator).to(device), seconds, recipe_of(cfg),
                           cfg["max_steps"], cfg["ema_decay"], desc, progress)
    net.eval()
    scores = evaluate(lambda n, g: sample_fn(net, n, g), None if elbo_fn is None else lambda x, g: elbo_fn(net, x, g),
                      seed, cfg["n_eval"], cfg["n_elbo"])
    report = {**scores, "seconds": elapsed, "steps": steps, "steps_per_second": steps / elapsed,
              "steps_per_cpu_second": steps / max(cpu_seconds, 1e-9),
              "sampling_steps": cfg["T"], "n_params": sum(p.numel() for p in net.parameters())}
    return net, report


def _diffusers_scheduler(cfg: dict, default: bool):
    from diffusers import DDPMScheduler

    if default:
        return DDPMScheduler(num_train_timesteps=cfg["T"])
    return DDPMScheduler(num_train_timesteps=cfg["T"], beta_start=1e-4, beta_end=0.02,
                         beta_schedule="linear" if cfg["schedule"] == "linear" else "squaredcos_cap_v2",
                         prediction_type="epsilon", variance_type="fixed_small", clip_sample=False)


def diffusers_fns(scheduler, T: int, probabilities: torch.Tensor | None = None):
    """Training loss and sampler of a network driven by a diffusers scheduler (its t = ours - 1);
    ``probabilities`` (T,) as :func:`t_probabilities` (None: uniform)."""
    import torch.nn.functional as F

    def loss_fn(net, x, generator):
        if probabilities is None:
            t = torch.randint(0, T, (x.shape[0],), generator=generator).to(x.device)
        else:
            t = torch.multinomial(probabilities, x.shape[0], replacement=True, generator=generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        noisy = scheduler.add_noise(x, noise, t)
        return F.mse_loss(net(noisy, t + 1), noise)

    def sample_fn(net, n, generator):
        sampler = copy.deepcopy(scheduler)
        sampler.set_timesteps(T)
        device = next(net.parameters()).device
        x = torch.randn(n, net.data_dim, generator=generator).to(device)
        for t in sampler.timesteps:
            eps = net(x, torch.full((n,), int(t) + 1, dtype=torch.long, device=device))
            x = sampler.step(eps, t, x, generator=generator).prev_sample
        return x

    return loss_fn, sample_fn


def _diffusers_peers(cfg, schedule, seconds, seed, device, progress) -> dict:
    import diffusers

    peers = {}
    for name, default in (("diffusers", False), ("diffusers_default", True)):
        scheduler = _diffusers_scheduler(cfg, default)
        loss_fn, sample_fn = diffusers_fns(scheduler, cfg["T"], t_probabilities(cfg))
        elbo_fn = None if default else (lambda net, x, g: DDPM(net, schedule, "posterior").elbo(x, generator=g))
        _, report = fit_and_score(lambda: make_network(cfg), loss_fn, sample_fn, elbo_fn, cfg, seconds, seed, device,
                                  name, progress)
        config = {key: value for key, value in scheduler.config.items() if not key.startswith("_")}
        peers[name] = {"library": f"diffusers {diffusers.__version__}", "scheduler": "DDPMScheduler",
                       "scheduler_config": config, **report}
    return peers


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train ours (and, with ``peer="diffusers"``, the two diffusers variants) for ``seconds`` each;
    the scores (see the module docstring). ``overrides`` holds ``--set`` strings for :data:`DEFAULTS`."""
    if peer is not None and peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r} for ddpm-8gaussians; choose one of: {', '.join(PEERS)}")
    cfg = check_config(apply_overrides(DEFAULTS, overrides))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(cfg["threads"])
    schedule = make_schedule(cfg)

    def make_model():
        return DDPM(make_network(cfg), schedule, cfg["variance"])

    probabilities = t_probabilities(cfg)
    model, report = fit_and_score(
        make_model, lambda model, x, g: model.loss(x, generator=g, weighting=cfg["weighting"],
                                                   t_probabilities=probabilities),
        lambda model, n, g: model.sample(n, generator=g), lambda model, x, g: model.elbo(x, generator=g),
        cfg, seconds, seed, device, "DDPM", progress)
    result = {**report, "seconds_budget": seconds, "device": str(device), "threads": cfg["threads"],
              "config": {name: list(value) if isinstance(value, tuple) else value for name, value in cfg.items()}}
    if save is not None:
        torch.save(model.cpu(), save)
    if peer == "diffusers":
        result["peers"] = _diffusers_peers(cfg, schedule, seconds, seed, device, progress)
    return result


def _mmd(report: dict) -> str:
    if report.get("mmd2") is None:
        return f"diverged ({report.get('non_finite_samples', '?')} non-finite samples)"
    return f"{report['mmd2']:.5f} ± {report['mmd2_stderr']:.5f} ({report['mmd2_sigmas']:.1f} σ)"


def _gap(report: dict):
    if report.get("elbo_gap_nats") is None:
        return ""
    return f"{report['elbo_gap_nats']:.3f} ± {report['elbo_gap_stderr']:.3f}"


def table(records: list[dict]):
    """One row per recorded run: what differs from :data:`DEFAULTS`, seed and budget, then for ours and
    each diffusers variant: MMD² ± standard error (and in standard errors), high-quality fraction,
    modes covered, the ELBO's bound on the NLL minus the data entropy (nats), steps. Rows of one
    configuration stay together."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"configuration": configuration_label(record, DEFAULTS), "seed": record.get("seed"),
               "budget (s)": record.get("seconds_budget")}
        for prefix, report in [("", record)] + [(f"{name} ", peer) for name, peer in (record.get("peers") or {}).items()]:
            row[f"{prefix}MMD²"] = _mmd(report)
            row[f"{prefix}high-quality"] = report.get("high_quality_fraction")
            row[f"{prefix}modes"] = report.get("modes_covered")
            row[f"{prefix}NLL bound - H (nats)"] = _gap(report)
            row[f"{prefix}steps"] = report.get("steps")
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.astype(object).where(frame.notna(), "")  # blank where a run had no such peer
    return group_by_configuration(frame)
