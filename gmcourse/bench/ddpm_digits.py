r"""Benchmark ``ddpm-digits``: chapter 10's DDPM trained for a wall-clock budget on the 8x8 digits and
scored on its samples in a digit classifier's feature space.

    python -m gmcourse.bench ddpm-digits --seconds 60 --seed 0 [--set NAME=VALUE ...]

Data: the 1,500 training digits of :func:`gmcourse.digits.load_digits` in the ``"float"`` form
(pixel values levels/16 in [0, 1], flattened to 64 values), minibatches drawn with replacement. The
diffusion runs on :math:`y = (x - 0.5)/0.5 \in [-1, 1]` (``DDPM(data_shift=0.5, data_scale=0.5)``);
samples are mapped back and clamped to [0, 1] (``sample_range``). Model:
:class:`gmcourse.diffusion.DDPM` with :math:`T = 1000` linear steps, :math:`\sigma_t^2 = \tilde\beta_t`,
and a noise predictor chosen by ``network``: ``"mlp"`` (:class:`~gmcourse.diffusion.MLPNoisePredictor`
on the 64 pixel values, the default: cheap enough that the :math:`T` network calls of ancestral
sampling stay short on one core) or ``"conv"`` (:class:`~gmcourse.diffusion.ConvNoisePredictor`,
``channels`` and ``n_layers``). Training uses the recipe of ``ddpm-8gaussians``
(:func:`gmcourse.bench.ddpm_8gaussians.train`: Adam, warm-up and cosine decay over the budget,
gradient clipping, EMA of the weights); every field of :data:`DEFAULTS` can be changed with ``--set``.

Scores (:func:`gmcourse.metrics.digit_scores`) of ``n_samples`` = 1,000 samples: the Fréchet distance
between the features of real test digits and of the samples in a small classifier trained once on the
real training digits, and the entropy of the predicted-label histogram (log 10 = 2.303 nats when all ten
digits are equally frequent); ``floor`` holds the same numbers for held-out real digits
(:func:`gmcourse.metrics.digit_floor`, at most 500 of them), the best a model can hope for. The
Fréchet distance of a finite sample is biased upwards by about :math:`1/n`, so the first
``floor["n"]`` samples are also scored (``frechet_distance_at_floor_n``, ``label_entropy_at_floor_n``)
for a comparison at equal size; ``floor_frechet_distance`` and ``floor_label_entropy`` repeat the
floor under the names ``gan-digits`` uses. There is no peer library for this task.

**Bits per pixel** (``bits_per_pixel`` ± ``bits_per_pixel_stderr``, ``likelihood_kind =
"lower_bound"``, on the 297 test digits; :func:`discrete_elbo`). The pixel values are discrete (17
levels), and a continuous density on them has no meaningful likelihood. As Ho et al. (2020, section
3.3) do for 8-bit images, the last reverse step is made a *discretised* Gaussian: the probability of
grey level :math:`k` is the mass of :math:`\mathcal N(\mu_\theta(x_1, 1), \beta_1)` over the cell
of width 1/8 around :math:`y_k = k/8 - 1` (the two outer cells extended to :math:`\pm\infty`). With
that decoder the ELBO (eq. ``ch10-eq-elbo``: the same KL terms for :math:`t \ge 2` and the same prior
term, the decoder's log-density replaced by this log-probability) bounds the log-probability of a
digit *as 17 levels per pixel*, the discretisation of ``ar-digits`` and ``vae-digits``, so the three
bits per pixel are comparable. The discretised model's samples are the ancestral samples rounded to the
nearest level (:math:`\sqrt{\beta_1} = 0.01` is small against the cell's half-width 1/16); the
network is trained as before, without knowing about the cells. One draw of :math:`x_t` per step and
digit (``T`` network calls per digit, a few seconds for the test set, outside the budget); the
standard error is over the test digits and includes that Monte Carlo noise.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration, pace, run_facts
from gmcourse.bench.ddpm_8gaussians import check_config, make_network, make_schedule, recipe_of, t_probabilities, train
from gmcourse.diffusion import DDPM, ConvNoisePredictor, q_sample
from gmcourse.digits import N_LEVELS, load_digits
from gmcourse.divergences import monte_carlo_mean
from gmcourse.utils import default_device, make_generator

__all__ = ["DEFAULTS", "run", "table", "discrete_elbo", "discretised_gaussian_log_prob"]

DEFAULTS = dict(
    T=1000, schedule="linear", variance="posterior", network="mlp",
    hidden=(256, 256, 256), residual=False, time_embedding="sinusoidal", embed_every_layer=True, embedding_dim=64,
    activation="silu", channels=32, n_layers=3,
    batch_size=256, lr=1e-3, lr_schedule="warmup-cosine", warmup_fraction=0.02, final_lr_fraction=0.0,
    grad_clip=1.0, ema_decay=0.999, weighting="simple", low_t_fraction=0.0, low_t_max=250, max_steps=None,
    n_samples=1000, threads=1,
)
SAMPLE_SEED_OFFSET = 2_000_003  # the sampling stream never overlaps the training stream
FLOOR_MAX = 500  # gmcourse.metrics.digit_floor has 500 held-out real digits


ELBO_SEED_OFFSET = 3_000_017  # the ELBO's draws never overlap training or sampling


def _log_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(\Phi(u) - \Phi(l))` for standardised bounds :math:`l < u`, stable in both tails."""
    from torch.special import log_ndtr

    # in the upper tail use the mirror image, Phi(u) - Phi(l) = Phi(-l) - Phi(-u), so nothing cancels
    flip = lower > 0
    a, b = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)  # log(Phi(b) - Phi(a)), b <= 0 or a < 0
    log_b, log_a = log_ndtr(b), log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b))


def discretised_gaussian_log_prob(levels: torch.Tensor, mean: torch.Tensor, std: float, n_levels: int = N_LEVELS,
                                  low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    r""":math:`\sum_i\log P(k_i)` for grey levels ``levels`` (n, D) in 0..n_levels-1 placed at
    :math:`y_k = \text{low} + k\,\Delta`, :math:`\Delta = (\text{high} - \text{low})/(\text{n\_levels} - 1)`,
    where :math:`P(k)` is the mass of :math:`\mathcal N(\text{mean}, \text{std}^2)` over
    :math:`[y_k - \Delta/2, y_k + \Delta/2]`, the first and last cells extended to :math:`\mp\infty`
    (Ho et al. 2020, eq. 13); float64 (n,). The masses of the ``n_levels`` cells sum to 1."""
    levels, mean = levels.double(), mean.double()
    half = (high - low) / (n_levels - 1) / 2
    centre = low + 2 * half * levels
    lower = torch.where(levels == 0, -math.inf, (centre - half - mean) / std)
    upper = torch.where(levels == n_levels - 1, math.inf, (centre + half - mean) / std)
    return _log_mass(lower, upper).sum(-1)


def discrete_elbo(model: DDPM, levels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The ELBO of digits ``levels`` (n, 64) in 0..16 with the discretised decoder (module docstring):
    :meth:`DDPM.elbo_terms`' KL terms (:math:`t \ge 2`) and prior term, and
    :math:`\mathbb E_{q(x_1\mid x_0)}\log P_\theta(x_0\mid x_1)` (one draw) from
    :func:`discretised_gaussian_log_prob` with :math:`\sigma_1^2 = \beta_1`; nats, float64 (n,). A lower
    bound on :math:`\log P_\theta(x)` of the discrete model, for a DDPM on :math:`y = 2x - 1`."""
    if not (torch.equal(model.data_shift.cpu(), torch.full((model.data_dim,), 0.5, dtype=torch.float64))
            and torch.equal(model.data_scale.cpu(), torch.full((model.data_dim,), 0.5, dtype=torch.float64))):
        raise ValueError("discrete_elbo expects the DDPM of ddpm-digits (data_shift = data_scale = 0.5: y = 2x - 1)")
    x = levels.double() / (N_LEVELS - 1)
    terms = model.elbo_terms(x, generator=generator)
    y = model._standardise(x)  # (n, 64) = 2x - 1, the levels' cell centres
    device = y.device
    with torch.no_grad():
        noise = torch.randn(y.shape, generator=generator, device=generator.device, dtype=y.dtype).to(device)
        x1 = q_sample(y, 1, model.schedule, noise=noise)
        mean = model.reverse_mean(x1, 1)  # mu_theta(x_1, 1)
    decoder = discretised_gaussian_log_prob(levels.to(device), mean, math.sqrt(float(model.schedule.betas[1])))
    return (decoder.cpu() - terms["kl"].sum(-1).cpu() - terms["prior"].cpu())


def _check(cfg: dict) -> dict:
    if cfg["network"] not in ("mlp", "conv"):
        raise ValueError(f"network must be 'mlp' or 'conv', got {cfg['network']!r}")
    if cfg["n_samples"] < 2:
        raise ValueError(f"n_samples must be >= 2, got {cfg['n_samples']}")
    checked = check_config({**cfg, "n_eval": cfg["n_samples"], "n_elbo": 0})
    return {name: checked[name] for name in cfg}  # without the fields only ddpm-8gaussians has


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train for ``seconds`` of wall time; the sample scores and the real-digit floor (see the module
    docstring). ``overrides`` (``--set NAME=VALUE`` strings) change :data:`DEFAULTS`."""
    from gmcourse.metrics import digit_floor, digit_scores

    if peer is not None:
        raise ValueError(f"ddpm-digits has no peer library to compare with, got --peer {peer!r}")
    cfg = _check(apply_overrides(DEFAULTS, overrides))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(cfg["threads"])
    schedule = make_schedule(cfg)
    images, _ = load_digits("train", form="float", flatten=True)  # (1500, 64) in [0, 1]
    images = images.to(device)

    torch.manual_seed(seed)  # network initialisation
    net = (make_network(cfg, data_dim=64) if cfg["network"] == "mlp"
           else ConvNoisePredictor(cfg["channels"], cfg["n_layers"], cfg["embedding_dim"], cfg["T"]))
    model = DDPM(net, schedule, cfg["variance"], data_shift=0.5, data_scale=0.5, sample_range=(0.0, 1.0)).to(device)
    data_generator, noise_generator = make_generator(seed), make_generator(seed + 1)

    def draw(m):
        return images[torch.randint(len(images), (m,), generator=data_generator).to(device)]

    probabilities = t_probabilities(cfg)
    steps, elapsed, cpu_seconds = train(
        lambda x: model.loss(x, generator=noise_generator, weighting=cfg["weighting"], t_probabilities=probabilities),
        model, draw, seconds, recipe_of(cfg), cfg["max_steps"], cfg["ema_decay"], "DDPM digits", progress)
    model.eval()
    start = time.perf_counter()
    samples = model.sample(cfg["n_samples"], generator=make_generator(seed + SAMPLE_SEED_OFFSET)).cpu()  # (n, 64)
    sampling_seconds = time.perf_counter() - start
    scores = digit_scores(samples)
    start = time.perf_counter()
    test_levels, _ = load_digits("test", form="levels", flatten=True)  # (297, 64) int64 0..16
    elbo = discrete_elbo(model, test_levels.to(device), make_generator(seed + ELBO_SEED_OFFSET))
    bits = monte_carlo_mean(-elbo / (64 * math.log(2)))
    elbo_seconds = time.perf_counter() - start
    n_floor = min(cfg["n_samples"], FLOOR_MAX)
    floor = digit_floor(n=n_floor)
    same_n = scores if n_floor == cfg["n_samples"] else digit_scores(samples[:n_floor])
    result = {"frechet_distance": scores["frechet_distance"], "label_entropy": scores["label_entropy"],
              "label_counts": [int(c) for c in scores["label_counts"]], "n_samples": cfg["n_samples"],
              "frechet_distance_at_floor_n": same_n["frechet_distance"],
              "label_entropy_at_floor_n": same_n["label_entropy"],
              "floor": {"n": n_floor, "frechet_distance": floor["frechet_distance"],
                        "label_entropy": floor["label_entropy"]},
              "floor_frechet_distance": floor["frechet_distance"], "floor_label_entropy": floor["label_entropy"],
              "bits_per_pixel": bits.mean, "bits_per_pixel_stderr": bits.stderr, "likelihood_kind": "lower_bound",
              "elbo_seconds": elbo_seconds,
              **pace(steps, elapsed, cpu_seconds), "epochs": round(steps * cfg["batch_size"] / len(images), 1),
              "sampling_seconds": sampling_seconds, "sampling_steps": cfg["T"],
              **run_facts(model, cfg, device, seconds)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """One row per recorded run: what differs from :data:`DEFAULTS`, seed and budget, the Fréchet
    distance and label entropy of the samples next to the held-out-real floor, steps and epochs."""
    import pandas as pd

    rows = [{
        "configuration": configuration_label(record, DEFAULTS),
        "seed": record.get("seed"),
        "budget (s)": record.get("seconds_budget"),
        "Fréchet distance": record.get("frechet_distance"),
        "FD at floor n": record.get("frechet_distance_at_floor_n"),
        "floor FD": (record.get("floor") or {}).get("frechet_distance"),
        "label entropy (nats)": record.get("label_entropy"),
        "floor entropy": (record.get("floor") or {}).get("label_entropy"),
        "steps": record.get("steps"),
        "epochs": record.get("epochs"),
    } for record in records]
    return group_by_configuration(pd.DataFrame(rows))
