r"""Benchmark ``vae-digits``: chapter 8's VAE with a categorical decoder over the 17 grey levels of the
8x8 digits, trained for a wall-clock budget and scored by its ELBO on the test digits, in bits per
pixel, and on its samples.

    python -m gmcourse.bench vae-digits --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

**Data**: as ``ar-digits`` (:func:`gmcourse.bench.ar_digits.digit_data`): grey levels 0..16 of the
first 1,200 training digits to train, the last 300 to choose the checkpoint, the 297 test digits to
report. **Model** (chapter 8, section ``ch8-digits``): :class:`gmcourse.vae.VAE` with
``likelihood="categorical"`` and ``n_levels=17``: given :math:`z`, the 64 pixels are independent, each
a softmax over the 17 levels; the encoder reads levels/16. ``latent_dim``, ``hidden`` (encoder widths,
the decoder mirrors them) and ``activation`` are settings. Because the decoder is a distribution on the
same 17 levels per pixel as ``ar-digits``' conditionals, the two likelihoods speak of the same
discrete data and their bits per pixel are comparable.

**Training** (:data:`DEFAULTS`, each part switchable with ``--set``): Adam on the negative ELBO (one
reparameterised draw per image), minibatches of ``batch_size`` drawn with replacement, a cosine decay of
the learning rate over the budget, one thread; every ``eval_every`` seconds the validation
:math:`-\mathcal L` (``validation_samples`` draws per image, the same draws each time) is computed with
the clock paused and the best weights are kept (:func:`gmcourse.bench.ar_digits.train_with_validation`).

**Scores**:

``bits_per_pixel`` ± ``bits_per_pixel_stderr``
    :math:`-\frac1{297}\sum_i\mathcal L(x_i)/(64\ln 2)` on the test digits, each ELBO estimated with
    ``elbo_samples`` draws (``likelihood_kind = "lower_bound"``: an upper bound on the model's test
    NLL in bits per pixel, up to the Monte Carlo error included in the standard error).
``iwae_bits_per_pixel`` ± ``iwae_bits_per_pixel_stderr``
    the same with the importance-weighted bound :math:`\log\hat p_K`, :math:`K` = ``iwae_k``
    (eq. ``ch8-eq-iwae``), tighter: the difference is what the encoder's approximation costs.
``frechet_distance``, ``label_entropy``, ``label_counts`` of ``n_samples`` = 1,000 samples
    :math:`z\sim\mathcal N(0, I)`, :math:`x\sim p_\theta(x\mid z)` (levels/16; the independent pixel
    draws given :math:`z` make them speckled), with ``frechet_distance_500``, ``label_entropy_500`` and the
    held-out-real floor, as ``gan-digits`` reports them
    (:func:`gmcourse.bench.ar_digits.digit_sample_scores`). For comparison only,
    ``decoder_mean_frechet_distance_500`` and ``decoder_mean_label_entropy_500`` score the decoder's
    means :math:`\mathbb E[x\mid z]/16` of the first 500 codes: smoother pictures, but not samples of
    the model.

Also ``train_bits_per_pixel`` and ``validation_bits_per_pixel`` (ELBO), ``validation_trace``,
``best_seconds``, ``seconds``, ``steps``, ``epochs``, ``steps_per_second``, ``sampling_seconds``,
``n_params``, ``threads``, ``device``, ``config``.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.bench import apply_overrides, check_at_least, initial_model, run_facts
from gmcourse.bench.ar_digits import (D, N_FLOOR, N_SAMPLES, SAMPLE_SEED_OFFSET, bits_per_pixel, check_common,
                                      digit_data, digit_sample_scores, digits_table, fit_facts,
                                      train_with_validation)
from gmcourse.digits import N_LEVELS
from gmcourse.utils import default_device, make_generator
from gmcourse.vae import ACTIVATIONS, VAE

__all__ = ["DEFAULTS", "LIKELIHOOD_KIND", "make_model", "run", "table"]

LIKELIHOOD_KIND = "lower_bound"
EVAL_SEED_OFFSET = 1_000_003  # the evaluation draws never overlap the training stream

DEFAULTS = dict(latent_dim=16, hidden=(256,), activation="tanh", batch_size=100, lr=3e-3, lr_schedule="cosine",
                eval_every=2.0, max_steps=None, validation_samples=4, elbo_samples=16, iwae_k=1000,
                n_samples=N_SAMPLES, threads=1)


def check_config(cfg: dict) -> dict:
    check_at_least(cfg, ("latent_dim", "validation_samples", "elbo_samples", "iwae_k"))
    if any(width < 1 for width in cfg["hidden"]):
        raise ValueError(f"every hidden width must be >= 1, got {cfg['hidden']}")
    if cfg["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {cfg['activation']!r}")
    return check_common(cfg)


def make_model(cfg: dict) -> VAE:
    """The VAE of a configuration (initialised from torch's global RNG)."""
    return VAE(D, cfg["latent_dim"], hidden=tuple(cfg["hidden"]), likelihood="categorical", n_levels=N_LEVELS,
               activation=cfg["activation"])


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train for ``seconds`` of wall time; the scores (see the module docstring). ``overrides`` holds
    ``--set NAME=VALUE`` strings for :data:`DEFAULTS`."""
    from gmcourse.metrics import digit_scores

    if peer is not None:
        raise ValueError(f"vae-digits has no peer library to compare with, got --peer {peer!r}")
    cfg = check_config(apply_overrides(DEFAULTS, overrides))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(cfg["threads"])
    train, validation, test = digit_data(device)
    model = initial_model(make_model, cfg, seed, device)
    noise = make_generator(seed + 1, device=device)

    def validation_nll():  # the same draws at every evaluation (common random numbers)
        g = make_generator(seed + EVAL_SEED_OFFSET, device=device)
        return -model.elbo(validation, cfg["validation_samples"], generator=g).double().mean()

    fit = train_with_validation(model, lambda x: model.loss(x, generator=noise), validation_nll, train, seconds, cfg,
                                make_generator(seed, device=device), "vae-digits", progress)
    g = make_generator(seed + 2 * EVAL_SEED_OFFSET, device=device)
    with torch.no_grad():
        test_bits, test_stderr = bits_per_pixel(model.elbo(test, cfg["elbo_samples"], generator=g))
        train_bits, _ = bits_per_pixel(model.elbo(train, cfg["elbo_samples"], generator=g))
    iwae_bits, iwae_stderr = bits_per_pixel(model.iwae_log_prob(test, cfg["iwae_k"], generator=g).log_prob)
    start = time.perf_counter()
    samples = model.sample(cfg["n_samples"], generator=make_generator(seed + SAMPLE_SEED_OFFSET, device=device))
    sampling_seconds = time.perf_counter() - start
    means = model.sample(N_FLOOR, generator=make_generator(seed + SAMPLE_SEED_OFFSET, device=device), mean=True)
    mean_scores = digit_scores(means.cpu().double() / (N_LEVELS - 1))
    result = {"bits_per_pixel": test_bits, "bits_per_pixel_stderr": test_stderr, "likelihood_kind": LIKELIHOOD_KIND,
              "iwae_bits_per_pixel": iwae_bits, "iwae_bits_per_pixel_stderr": iwae_stderr, "iwae_k": cfg["iwae_k"],
              "train_bits_per_pixel": train_bits,
              "validation_bits_per_pixel": fit["validation_nll"] / (D * math.log(2)),
              **digit_sample_scores(samples.cpu().double() / (N_LEVELS - 1)),
              "decoder_mean_frechet_distance_500": mean_scores["frechet_distance"],
              "decoder_mean_label_entropy_500": mean_scores["label_entropy"],
              **fit_facts(fit, cfg, len(train)), "sampling_seconds": sampling_seconds,
              **run_facts(model, cfg, device, seconds)}
    if save is not None:
        torch.save(model.cpu(), save)
    return result


def table(records: list[dict]):
    """One row per recorded run (:func:`gmcourse.bench.ar_digits.digits_table`): the ELBO's bound on the
    test bits per pixel first."""
    return digits_table(records, DEFAULTS, "test bits/pixel (ELBO bound)")
