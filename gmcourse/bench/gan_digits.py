r"""Benchmark ``gan-digits``: a small convolutional GAN (:class:`gmcourse.gan.ConvGenerator`,
:class:`gmcourse.gan.ConvDiscriminator`) trained for a wall-clock budget on the 1,500 training
digits (8x8, pixel values in [0, 1]) and scored on 1,000 of its samples.

    python -m gmcourse.bench gan-digits --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

**Scores** (:func:`gmcourse.metrics.digit_scores`, a classifier trained once on the real training
digits): ``frechet_distance`` between the classifier's features of the real test digits and of the
samples (the idea of FID at the scale of this data; lower is better), ``label_entropy`` of the
histogram of predicted labels (nats; :math:`\log 10 = 2.303` when all ten digits are equally
frequent) and ``label_counts``. The same numbers for 500 held-out real digits
(:func:`gmcourse.metrics.digit_floor`) are reported as ``floor_frechet_distance``,
``floor_label_entropy``: what a model that reproduced the data would score. The Fréchet distance of a
finite sample is biased upwards by about :math:`1/n`, so the scores of the first 500 samples,
``frechet_distance_500`` and ``label_entropy_500``, are the ones to hold against the floor.
``likelihood_kind`` is ``None``: a GAN has no likelihood, so no bits per pixel. Also ``steps``,
``seconds``, ``steps_per_second``, ``sampling_seconds``, ``n_params``, ``threads``, ``device``, ``config``.

**The recipe** (:data:`DEFAULTS`, each part switchable with ``--set``): the non-saturating loss,
Adam with :math:`\beta_1 = 0.5` and a linear decay of the learning rate to 0 over the budget, and
samples drawn from an exponential moving average of the generator's weights (``ema_decay``). The
zero-centred gradient penalty on the data (``r1_weight``) is available but off: through the
convolutions its double backward pass costs several times the steps it is worth in a short budget.
There is no numeric target: the task places the GAN among the other families on the same scores.
"""

from __future__ import annotations

import time

import torch

from gmcourse.bench import apply_overrides
from gmcourse.bench.gan_8gaussians import LR_DECAYS, learning_rate_factor, run_facts
from gmcourse.digits import load_digits
from gmcourse.gan import GAN, KINDS, ConvDiscriminator, ConvGenerator
from gmcourse.bench.ar_digits import digit_sample_scores
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "N_SAMPLES", "config_of", "run", "table"]

N_SAMPLES = 1_000  # samples scored
EVAL_SEED_OFFSET = 1_000_003

DEFAULTS = dict(kind="non_saturating", latent_dim=16, channels=16, spectral_norm=False, batch_size=64, lr=2e-3,
                d_lr=2e-3, beta1=0.5, beta2=0.999, lr_decay="linear", ema_decay=0.99, r1_weight=0.0,
                discriminator_steps=1, gp_weight=10.0)


def config_of(overrides: dict[str, str] | None) -> dict:
    """:data:`DEFAULTS` with the ``--set`` options, each checked."""
    cfg = apply_overrides(DEFAULTS, overrides)
    if cfg["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {cfg['kind']!r}")
    if cfg["lr_decay"] not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {list(LR_DECAYS)}, got {cfg['lr_decay']!r}")
    for name in ("latent_dim", "channels", "batch_size", "discriminator_steps"):
        if cfg[name] < (2 if name == "channels" else 1):
            raise ValueError(f"{name} must be >= {2 if name == 'channels' else 1}, got {cfg[name]}")
    for name in ("lr", "d_lr"):
        if cfg[name] is None or not cfg[name] > 0:
            raise ValueError(f"{name} must be a positive number, got {cfg[name]}")
    if cfg["ema_decay"] is not None and not 0 < cfg["ema_decay"] < 1:
        raise ValueError(f"ema_decay must be in (0, 1) or none, got {cfg['ema_decay']}")
    return cfg


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train within ``seconds`` of wall time, return the scores (see the module docstring)."""
    if peer is not None:
        raise ValueError(f"gan-digits has no peer library to compare with, got --peer {peer!r}")
    cfg = config_of(overrides)
    torch.set_num_threads(1)
    device = torch.device(device) if device is not None else default_device()
    train, _ = load_digits("train", "float", flatten=True, device=device)  # (1500, 64) in [0, 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights
        model = GAN(ConvGenerator(cfg["latent_dim"], cfg["channels"]),
                    ConvDiscriminator(cfg["channels"], spectral_norm=cfg["spectral_norm"]), cfg["latent_dim"],
                    kind=cfg["kind"], discriminator_steps=cfg["discriminator_steps"], gp_weight=cfg["gp_weight"],
                    r1_weight=cfg["r1_weight"], ema_decay=cfg["ema_decay"]).to(device)
    d_opt, g_opt = model.optimizers(lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), d_lr=cfg["d_lr"])
    peaks = [(group, group["lr"]) for opt in (d_opt, g_opt) for group in opt.param_groups]
    g = make_generator(seed, device=device)
    rows = cfg["batch_size"] * cfg["discriminator_steps"]

    bar = progress_bar(total=round(seconds), desc="gan-digits", unit="s", disable=None if progress else True)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        factor = learning_rate_factor(cfg["lr_decay"], elapsed / seconds)
        for group, peak in peaks:
            group["lr"] = peak * factor
        batch = train[torch.randint(len(train), (rows,), generator=g, device=device)]
        model.train_step(batch, d_opt, g_opt, generator=g)
        steps += 1
        if int(elapsed) > bar.n:
            bar.update(int(elapsed) - bar.n)
    bar.update(round(seconds) - bar.n)
    bar.close()

    model.eval()
    start = time.perf_counter()
    samples = model.sample(N_SAMPLES, generator=make_generator(seed + EVAL_SEED_OFFSET)).cpu()  # (1000, 64)
    sampling_seconds = time.perf_counter() - start
    result = {**digit_sample_scores(samples),
              "steps": steps, "seconds": round(elapsed, 2), "steps_per_second": steps / elapsed,
              "sampling_seconds": sampling_seconds,
              "likelihood_kind": None,  # a GAN has no likelihood: no bits per pixel (the zoo's common field)
              **run_facts(model, cfg, device)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """One row per recorded run (:func:`gmcourse.bench.ar_digits.digits_table` without a likelihood
    column): the configuration (what differs from :data:`DEFAULTS`), seed and budget, Fréchet distance
    and label entropy of the samples next to the held-out-real floor, steps."""
    from gmcourse.bench.ar_digits import digits_table

    return digits_table(records, DEFAULTS, None)
