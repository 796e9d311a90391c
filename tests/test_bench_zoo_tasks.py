"""Tests of the zoo's tasks ``vae-8gaussians``, ``vae-digits`` and ``ar-digits``.

Tiny runs (a fixed number of steps, small networks, few evaluation points) check that every field
of the zoo's common record is there and sane, against bounds that hold for any model:

* a KL-like number (NLL - H, or a bound on it) is >= 0 up to its Monte Carlo error (5 standard
  errors), and the importance-weighted bound lies between the ELBO's and the exact value;
* bits per pixel of 17 grey levels are >= 0 (a probability of a discrete image is <= 1) and, after
  training, below log2(17) (the uniform model) by more than 5 standard errors;
* the exact bits per pixel of ``ar-digits`` are those of the saved model; the ELBO's bits per pixel of
  ``vae-digits`` lie above the exact ones, obtained for a 2D latent space by quadrature;
* bad options give clear errors.
"""

import json
import math

import pytest
import torch

from gmcourse.bench.__main__ import main
from gmcourse.digits import load_digits

LOG2_17 = math.log2(17)

VAE_8G_TINY = {"hidden": "16,16", "batch_size": "128", "max_steps": "60", "n_eval": "400", "n_elbo": "200",
               "iwae_k": "64"}
VAE_DIGITS_TINY = {"latent_dim": "2", "hidden": "32", "max_steps": "80", "eval_every": "1000", "iwae_k": "64",
                   "elbo_samples": "4", "n_samples": "500"}
AR_TINY = {"channels": "8", "max_steps": "60", "eval_every": "1000", "n_samples": "500"}


def at_least_zero(value, stderr, sigmas=5.0):
    return value > -sigmas * stderr


def check_digit_sample_fields(result, n_samples):
    assert result["n_samples"] == n_samples and sum(result["label_counts"]) == n_samples
    for name in ("label_entropy", "label_entropy_500", "floor_label_entropy"):
        assert 0 <= result[name] <= math.log(10) + 1e-9, name
    # a few dozen steps of training do not reproduce the data: the samples are farther than held-out digits
    assert 0 <= result["floor_frechet_distance"] < result["frechet_distance_500"]
    assert result["frechet_distance"] >= 0


# ----------------------------------------------------------------------------- vae-8gaussians

def test_vae_8gaussians_tiny_run_has_every_field_and_sane_bounds(tmp_path):
    from gmcourse.bench.vae_8gaussians import run, table

    path = tmp_path / "vae.pt"
    result = run(30, seed=0, save=str(path), progress=False, overrides=VAE_8G_TINY)
    json.dumps(result)  # plain JSON types only
    assert result["steps"] == 60 and result["likelihood_kind"] == "lower_bound"
    assert result["n_modes"] == 8 and 0 <= result["modes_covered"] <= 8
    assert 0 <= result["high_quality_fraction"] <= 1
    assert result["mmd2_stderr"] > 0 and at_least_zero(result["mmd2"], result["mmd2_stderr"])
    # -ELBO - H(p) >= KL(p || p_theta) >= 0; the IWAE bound is tighter, and still >= the KL >= 0
    elbo, iwae = result["nll_minus_entropy"], result["iwae_nll_minus_entropy"]
    elbo_err, iwae_err = result["nll_minus_entropy_stderr"], result["iwae_nll_minus_entropy_stderr"]
    assert elbo == result["elbo_gap_nats"] and elbo_err == result["elbo_gap_stderr"]
    assert at_least_zero(elbo, elbo_err) and at_least_zero(iwae, iwae_err)
    # the same points for both, so their common spread cancels in the difference: hypot over-covers it
    assert iwae < elbo + 5 * math.hypot(elbo_err, iwae_err)
    # the saved model is the one scored: its samples have the shape of the data
    x = torch.load(path, weights_only=False).sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    again = run(30, seed=0, progress=False, overrides=VAE_8G_TINY)  # fixed steps and seed: the same scores
    assert again["mmd2"] == result["mmd2"] and again["nll_minus_entropy"] == result["nll_minus_entropy"]
    frame = table([{**result, "seed": 0}])
    assert frame.loc[0, "modes"] == f"{result['modes_covered']}/8" and "±" in frame.loc[0, "−ELBO − H (nats)"]


def test_vae_8gaussians_bound_of_the_initial_model_is_far_above_zero():
    """-ELBO - H(p) >= KL(p || p_theta) = H(p, p_theta) - H(p). A mixture (over z) of Gaussians of
    variances s_1^2, s_2^2 has a density at most 1 / (2 pi s_1 s_2), so H(p, p_theta) >= log(2 pi s_1 s_2)
    and, with H(p) = log 8 + log(2 pi e 0.01) = -3.68, KL >= 5.5 + log(s_1 s_2). At initialisation (and
    after one step) the decoder's log-variances are outputs of a random network, of order 1: to reach
    a KL below 1 their mean would have to be below -4.5, the 0.1 std of the data's modes."""
    from gmcourse.bench.vae_8gaussians import run

    result = run(30, seed=1, progress=False, overrides={**VAE_8G_TINY, "max_steps": "1"})
    assert result["nll_minus_entropy"] > 1 + 5 * result["nll_minus_entropy_stderr"]


@pytest.mark.parametrize("overrides, message", [
    ({"n_elbo": "500", "n_eval": "400"}, "n_elbo .* must not exceed n_eval"),
    ({"activation": "sigmoid"}, "activation must be one of"),
    ({"latent_dim": "0"}, "latent_dim must be >= 1"),
    ({"lr_schedule": "linear"}, "lr_schedule must be"),
    ({"max_steps": "2.5"}, "max_steps must be a positive integer"),
    ({"learning_rate": "0.1"}, r"unknown option\(s\) \['learning_rate'\]"),
])
def test_vae_8gaussians_bad_options(overrides, message):
    from gmcourse.bench.vae_8gaussians import run

    with pytest.raises(ValueError, match=message):
        run(1, 0, progress=False, overrides=overrides)
    with pytest.raises(ValueError, match="no peer"):
        run(1, 0, peer="zuko")


# ----------------------------------------------------------------------------- ar-digits

def test_ar_digits_tiny_run_exact_bits_and_sample_scores(tmp_path):
    from gmcourse.bench.ar_digits import run, table

    path = tmp_path / "ar.pt"
    result = run(30, seed=0, save=str(path), progress=False, overrides=AR_TINY)
    json.dumps(result)
    assert result["steps"] == 60 and result["likelihood_kind"] == "exact"
    bits, err = result["bits_per_pixel"], result["bits_per_pixel_stderr"]
    assert 0 < bits < LOG2_17 - 5 * err  # 60 steps already beat the uniform model over 17 levels
    # the kept checkpoint is the best of the validation trace (here: one evaluation, at the end)
    trace = result["validation_trace"]
    assert [t["steps"] for t in trace] == [60]
    assert result["validation_bits_per_pixel"] == min(t["validation_bits_per_pixel"] for t in trace)
    check_digit_sample_fields(result, 500)
    # exact: the saved model's own log-probabilities of the test digits give the same number
    model = torch.load(path, weights_only=False)
    test, _ = load_digits("test", "levels", flatten=True)
    with torch.no_grad():
        log_p = model.log_prob(test).double()  # (297,) nats
    assert log_p.shape == (297,) and (log_p <= 0).all()
    assert -log_p.mean().item() / (64 * math.log(2)) == pytest.approx(bits, rel=1e-6)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 64) and samples.dtype == torch.int64 and 0 <= samples.min() <= samples.max() <= 16
    frame = table([{**result, "seed": 0}])
    assert frame.loc[0, "configuration"] == "channels=8, eval_every=1000.0, max_steps=60, n_samples=500"
    assert "±" in frame.loc[0, "test bits/pixel (exact)"]


@pytest.mark.parametrize("overrides, message", [
    ({"network": "pixelcnn"}, "network must be one of"),
    ({"n_samples": "100"}, "n_samples must be >= 500"),
    ({"eval_every": "0"}, "eval_every must be a positive number"),
    ({"lr_schedule": "warmup"}, "lr_schedule must be one of"),
    ({"channels": "0"}, "channels must be >= 1"),
])
def test_ar_digits_bad_options(overrides, message, capsys):
    from gmcourse.bench.ar_digits import run

    with pytest.raises(ValueError, match=message):
        run(1, 0, progress=False, overrides=overrides)
    with pytest.raises(ValueError, match="no peer"):
        run(1, 0, peer="torch")


# ----------------------------------------------------------------------------- vae-digits

def test_vae_digits_tiny_run_bound_above_the_exact_likelihood():
    """With d_z = 2 the marginal likelihood of each test digit is computed by quadrature
    (gmcourse.vae.quadrature_log_marginal), so the bound's bits per pixel can be held against the
    exact ones: ELBO bits >= IWAE bits >= exact bits, each comparison within 5 standard errors."""
    from gmcourse.bench import vae_digits
    from gmcourse.vae import quadrature_log_marginal

    saved = {}
    original = vae_digits.make_model

    def keep(cfg):  # the model the run trains, to score it independently afterwards
        saved["model"] = original(cfg)
        return saved["model"]

    vae_digits.make_model = keep
    try:
        result = vae_digits.run(30, seed=0, progress=False, overrides=VAE_DIGITS_TINY)
    finally:
        vae_digits.make_model = original
    json.dumps(result)
    assert result["steps"] == 80 and result["likelihood_kind"] == "lower_bound"
    bits, err = result["bits_per_pixel"], result["bits_per_pixel_stderr"]
    iwae, iwae_err = result["iwae_bits_per_pixel"], result["iwae_bits_per_pixel_stderr"]
    assert 0 < iwae and 0 < bits < LOG2_17 - 5 * err  # a bound of discrete probabilities; better than uniform
    test, _ = load_digits("test", "levels", flatten=True)
    with torch.no_grad():
        exact = quadrature_log_marginal(saved["model"], test)  # (297,) log p_theta in nats, spacing 0.1
    exact_bits = float(-exact.mean()) / (64 * math.log(2))
    # the same 297 digits in all three: their spread is common, so these error bars over-cover the
    # differences; the quadrature has no Monte Carlo error
    assert exact_bits < iwae + 5 * iwae_err
    assert iwae < bits + 5 * math.hypot(err, iwae_err)
    assert exact_bits < bits  # the ELBO's bound, by more than its error here (the IWAE gain is large)
    check_digit_sample_fields(result, 500)
    assert 0 <= result["decoder_mean_label_entropy_500"] <= math.log(10) + 1e-9
    assert result["validation_bits_per_pixel"] == min(t["validation_bits_per_pixel"] for t in result["validation_trace"])


@pytest.mark.parametrize("overrides, message", [
    ({"latent_dim": "0"}, "latent_dim must be >= 1"),
    ({"activation": "gelu"}, "activation must be one of"),
    ({"n_samples": "499"}, "n_samples must be >= 500"),
    ({"hidden": "0"}, "every hidden width must be >= 1"),
    ({"lr": "0"}, "lr must be a positive number"),
])
def test_vae_digits_bad_options(overrides, message):
    from gmcourse.bench.vae_digits import run

    with pytest.raises(ValueError, match=message):
        run(1, 0, progress=False, overrides=overrides)


def test_the_command_line_refuses_bad_options_with_a_message(capsys):
    from gmcourse.bench import TASKS

    for task in ("vae-8gaussians", "vae-digits", "ar-digits"):
        if task not in TASKS:
            pytest.skip(f"{task} is not registered in gmcourse.bench.TASKS")
        assert main([task, "--seconds", "1", "--no-progress", "--set", "threads=0"]) == 2
        captured = capsys.readouterr()
        assert "threads must be >= 1" in captured.err and captured.out == ""
