"""Tests of the benchmarks ``ddpm-8gaussians`` (with the diffusers peer) and ``ddpm-digits``.

* the scoring, independently of training: fresh data scored as if they were samples are
  indistinguishable from data (MMD^2 within 5 standard errors of 0, the high-quality fraction
  within 5 binomial standard errors of 1 - exp(-9/2));
* tiny runs (T = 10 diffusion steps, small networks, a few training steps) checking the JSON
  contract, ``--save`` / ``torch.load`` / ``sample`` shapes, ``--peer diffusers``, ``--set``
  validation and :func:`table`.
"""

import json
import math

import pytest
import torch
from scipy.stats import ncx2

from gmcourse.bench.__main__ import main
from gmcourse.bench.ddpm_8gaussians import DATA_HIGH_QUALITY_FRACTION, DEFAULTS, evaluate, run, table
from gmcourse.toys import EightGaussians

# 10 diffusion steps, a small network, 20 training steps, few evaluation points: seconds per run
TINY = {"T": "10", "low_t_max": "3", "hidden": "16,16", "embedding_dim": "8", "batch_size": "64", "max_steps": "20",
        "n_eval": "300", "n_elbo": "20"}
FIELDS = {"mmd2", "mmd2_stderr", "mmd2_sigmas", "high_quality_fraction", "modes_covered", "mode_kl_to_uniform",
          "elbo_gap_nats", "elbo_gap_stderr", "sampling_seconds", "sampling_steps", "seconds", "steps",
          "steps_per_second", "n_params", "n_modes", "nll_minus_entropy", "nll_minus_entropy_stderr", "likelihood_kind"}


def _sets(options):
    return [arg for name, value in options.items() for arg in ("--set", f"{name}={value}")]


def test_data_scored_as_samples_is_at_the_floor():
    """evaluate() on samples that *are* data: MMD^2 = 0 within 5 standard errors; the high-quality
    fraction is a binomial proportion with p = 1 - exp(-9/2) (P(|x - mu| < 3 std) in 2D), so within
    5 sqrt(p (1 - p) / n) of p; the exact log-density as "ELBO" gives a gap of exactly 0."""
    toy, n = EightGaussians(), 2000
    assert math.isclose(DATA_HIGH_QUALITY_FRACTION, 1 - math.exp(-4.5), rel_tol=1e-15)
    report = evaluate(lambda m, g: toy.sample(m, generator=g), lambda x, g: toy.log_prob(x.double()), seed=5,
                      n_eval=n, n_elbo=500)
    assert abs(report["mmd2"]) <= 5 * report["mmd2_stderr"]
    p = DATA_HIGH_QUALITY_FRACTION
    assert abs(report["high_quality_fraction"] - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert report["modes_covered"] == report["n_modes"] == 8 and report["elbo_gap_nats"] == 0.0
    assert report["nll_minus_entropy"] == 0.0 and report["likelihood_kind"] == "lower_bound"
    # a ring 3 std too wide is rejected (more than 5 null standard errors)
    shifted = evaluate(lambda m, g: EightGaussians(radius=2.3).sample(m, generator=g), None, seed=5, n_eval=n)
    assert shifted["mmd2"] > 5 * shifted["mmd2_stderr"]
    # |x - mu|^2 / std^2 of a point of a mode shifted by 3 std is noncentral chi^2 (2 dof, lambda = 9)
    q = ncx2.cdf(9.0, 2, 9.0)  # about 0.42
    assert abs(shifted["high_quality_fraction"] - q) <= 5 * math.sqrt(q * (1 - q) / n)
    assert shifted["elbo_gap_nats"] is None and shifted["nll_minus_entropy"] is None
    assert shifted["likelihood_kind"] is None  # no ELBO given: no likelihood side


def test_tiny_run_json_contract_and_saved_model(tmp_path):
    path = tmp_path / "ddpm.pt"
    result = run(30, seed=0, save=str(path), progress=False, overrides=TINY)
    assert FIELDS <= set(result) and result["steps"] == 20 and result["sampling_steps"] == 10
    assert result["config"]["hidden"] == [16, 16] and result["config"]["max_steps"] == 20
    assert result["likelihood_kind"] == "lower_bound" and result["nll_minus_entropy"] == result["elbo_gap_nats"]
    # -ELBO - H(p) >= KL(p || p_theta) >= 0, up to its Monte Carlo error
    assert result["nll_minus_entropy"] > -5 * result["nll_minus_entropy_stderr"]
    json.dumps(result)  # plain JSON types only
    model = torch.load(path, weights_only=False)
    x = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    again = run(30, seed=0, progress=False, overrides=TINY)  # same seed, same steps: same model and scores
    assert again["mmd2"] == result["mmd2"] and again["high_quality_fraction"] == result["high_quality_fraction"]


def test_cli_with_diffusers_peer_and_table(capsys):
    assert main(["ddpm-8gaussians", "--seconds", "30", "--seed", "1", "--peer", "diffusers", "--no-progress",
                 *_sets(TINY)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIELDS <= set(record)
    peers = record["peers"]
    assert set(peers) == {"diffusers", "diffusers_default"}
    assert peers["diffusers"]["scheduler_config"]["clip_sample"] is False
    assert peers["diffusers_default"]["scheduler_config"]["clip_sample"] is True
    for name, peer in peers.items():
        assert peer["steps"] == 20 and peer["n_params"] == record["n_params"] and peer["sampling_steps"] == 10
        assert peer["library"].startswith("diffusers ")
    assert peers["diffusers"]["elbo_gap_nats"] is not None and peers["diffusers_default"]["elbo_gap_nats"] is None
    assert peers["diffusers"]["likelihood_kind"] == "lower_bound" and peers["diffusers_default"]["likelihood_kind"] is None
    plain = {**record, "seed": 2, "overrides": {"lr": "0.001"}, "config": {**record["config"], "lr": 0.001}}
    del plain["peers"]
    frame = table([record, plain])
    assert list(frame["configuration"]) == ["T=10, hidden=16,16, embedding_dim=8, batch_size=64, low_t_max=3, "
                                            "max_steps=20, n_eval=300, n_elbo=20",
                                            "T=10, hidden=16,16, embedding_dim=8, batch_size=64, lr=0.001, "
                                            "low_t_max=3, max_steps=20, n_eval=300, n_elbo=20"]
    assert frame.loc[0, "diffusers steps"] == 20 and frame.loc[1, "diffusers steps"] == ""
    assert "±" in frame.loc[0, "MMD²"]


def test_set_validation(capsys):
    with pytest.raises(ValueError, match="unknown option"):
        run(1, 0, overrides={"learning_rate": "0.1"})
    with pytest.raises(ValueError, match="weighting must be one of"):
        run(1, 0, overrides={"weighting": "snr"})
    with pytest.raises(ValueError, match="expected int"):
        run(1, 0, overrides={"T": "ten"})
    with pytest.raises(ValueError, match="low_t_max <= T"):
        run(1, 0, overrides={"T": "100"})  # the default low_t_max is beyond 100 steps
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        run(1, 0, overrides={"max_steps": "2.5"})
    with pytest.raises(ValueError, match="unknown peer"):
        run(1, 0, peer="zuko")
    assert main(["ddpm-8gaussians", "--seconds", "1", "--set", "schedule=quadratic"]) == 2
    assert "schedule must be" in capsys.readouterr().err
    assert DEFAULTS["T"] == 1000  # the comparison with diffusers' 1,000 linear steps


def test_digits_tiny_run(tmp_path):
    from gmcourse.bench.ddpm_digits import run as run_digits, table as digits_table

    path = tmp_path / "digits.pt"
    result = run_digits(30, seed=0, save=str(path), progress=False,
                        overrides={"T": "10", "hidden": "32,32", "embedding_dim": "8", "max_steps": "5",
                                   "n_samples": "50"})
    assert result["steps"] == 5 and result["sampling_steps"] == 10
    assert result["floor"]["n"] == 50  # the floor at the same number of digits as the samples
    assert result["frechet_distance_at_floor_n"] == result["frechet_distance"]
    assert result["frechet_distance"] > result["floor"]["frechet_distance"] >= 0  # 5 steps: far from real
    assert 0 <= result["label_entropy"] <= math.log(10) + 1e-9 and sum(result["label_counts"]) == 50
    assert result["floor_frechet_distance"] == result["floor"]["frechet_distance"]
    assert result["floor_label_entropy"] == result["floor"]["label_entropy"]
    # bits per pixel of the 17 grey levels, from the ELBO with the discretised decoder: a bound on the
    # log-probability of discrete images, so >= 0 (every draw's ELBO is <= 0, see the test below)
    assert result["likelihood_kind"] == "lower_bound" and result["bits_per_pixel"] > 0
    assert result["bits_per_pixel_stderr"] > 0
    json.dumps(result)
    x = torch.load(path, weights_only=False).sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 64) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert list(digits_table([{**result, "seed": 0}])["steps"]) == [5]
    with pytest.raises(ValueError, match="no peer"):
        run_digits(1, 0, peer="diffusers")
    with pytest.raises(ValueError, match="network must be"):
        run_digits(1, 0, overrides={"network": "unet"})


def test_discretised_decoder_masses_sum_to_one_over_the_levels():
    """The 17 cells tile the line (the outer ones reach to -inf and +inf): for any mean and std the
    masses sum to 1 (float64 rounding), also far in the tails where a naive difference of CDFs
    would cancel to 0."""
    from gmcourse.bench.ddpm_digits import discretised_gaussian_log_prob

    mean = torch.cat([torch.linspace(-3, 3, 61), torch.tensor([-40.0, 40.0])]).unsqueeze(1)  # (63, 1)
    for std in (0.01, 0.3):
        log_p = torch.stack([discretised_gaussian_log_prob(torch.full((63, 1), k), mean, std) for k in range(17)])
        torch.testing.assert_close(log_p.exp().sum(0), torch.ones(63, dtype=torch.float64), rtol=0, atol=1e-12)
        assert torch.isfinite(log_p).all()  # no log(0), even 4,000 std away


def test_discrete_elbo_of_a_model_concentrated_on_one_digit():
    """A DDPM with the exact noise predictor of N(y, s^2 I), s = 1e-3, for one test digit y = 2x - 1:
    the model puts almost all its probability on that digit (s is 1/62 of a cell's half-width), so
    log P(digit) is about 0, and the discretised ELBO, a lower bound on it, is <= 0 for every digit
    (a bound on probabilities, never a density) and close to 0 for that one (1e-3 bits per pixel
    is 0.04 nats per image). Another digit is far from it: many bits. The continuous decoder's
    ELBO of the same digit is a log-density, positive (hundreds of nats): not a bits-per-pixel."""
    from gmcourse.bench.ddpm_digits import discrete_elbo
    from gmcourse.diffusion import DDPM, GaussianMixtureNoisePredictor, NoiseSchedule
    from gmcourse.digits import load_digits

    levels, _ = load_digits("test", "levels", flatten=True)
    schedule = NoiseSchedule.linear(1000)
    model = DDPM(GaussianMixtureNoisePredictor.gaussian(levels[0].double() / 8 - 1, 1e-3, schedule), schedule,
                 data_shift=0.5, data_scale=0.5)
    elbo = discrete_elbo(model, levels[:3], torch.Generator().manual_seed(0))  # (3,) nats
    assert elbo.shape == (3,) and (elbo <= 0).all()
    bits = -elbo / (64 * math.log(2))
    assert bits[0] < 1e-3 and (bits[1:] > 1).all()
    assert model.elbo(levels[:1].double() / 16, generator=torch.Generator().manual_seed(0)).item() > 0
    with pytest.raises(ValueError, match="data_shift = data_scale = 0.5"):
        discrete_elbo(DDPM(model.noise_predictor, schedule), levels[:1], torch.Generator())
