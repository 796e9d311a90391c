"""Tests of the benchmarks ``gan-8gaussians`` and ``gan-digits`` (small budgets, small networks).

* the score, on stand-in "models" whose answer is known: the data distribution itself (MMD² within
  5 standard errors of 0, every mode, the data's own high-quality fraction) and a collapsed one;
* the JSON contract of a short run, ``--save`` then ``torch.load(...).sample(n, generator=g)``;
* the recipes (``--set recipe=textbook`` and options on top), ``--set`` validation, the table.
"""

import json
import math

import pytest
import torch

from gmcourse.bench.__main__ import main
from gmcourse.bench.gan_8gaussians import DEFAULTS, TEXTBOOK, config_of, learning_rate_factor, score, table
from gmcourse.toys import EightGaussians, GaussianGrid

SMALL = ["--set", "hidden=16,16", "--set", "batch_size=32", "--set", "trace_every=0.5"]
TINY_DIGITS = ["--set", "channels=4", "--set", "batch_size=16"]


class Stand_in:
    """Anything with ``sample(n, generator=)`` can be scored: here a fixed distribution."""

    def __init__(self, sample):
        self._sample = sample

    def sample(self, n, generator=None):
        return self._sample(n, generator)


def test_score_of_the_data_itself_is_the_floor():
    toy = EightGaussians()
    result = score(Stand_in(lambda n, g: toy.sample(n, generator=g)), toy, seed=0)
    # the model's samples and the fresh data are independent draws of one distribution
    assert abs(result["mmd2"]) < 5 * result["mmd2_stderr"]
    assert result["modes_covered"] == result["n_modes"] == 8
    # the high-quality fraction of 5,000 draws is binomial around 1 - e^{-9/2} = 0.9889: 5 sigma = 0.0074
    p = 1 - math.exp(-4.5)
    for fraction in (result["high_quality_fraction"], result["data_high_quality_fraction"]):
        assert abs(fraction - p) < 5 * math.sqrt(p * (1 - p) / 5000)


def test_score_of_a_collapsed_model():
    toy = GaussianGrid()
    center = toy.centers()[7].float()
    result = score(Stand_in(lambda n, g: center + 0.05 * torch.randn(n, 2, generator=g)), toy, seed=0)
    assert result["modes_covered"] == 1 and result["n_modes"] == 25
    assert result["mmd2"] > 100 * result["mmd2_stderr"]
    assert result["kl_to_uniform"] == pytest.approx(math.log(25), abs=0.01)


def cli(capsys, task, *args):
    assert main([task, "--no-progress", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_gan_8gaussians_run_json_and_saved_model(capsys, tmp_path):
    path = tmp_path / "gan.pt"
    result = cli(capsys, "gan-8gaussians", "--seconds", "1.5", "--seed", "3", "--save", str(path), *SMALL)
    assert result["task"] == "gan-8gaussians" and result["seed"] == 3
    assert result["kl_to_uniform"] is None or result["kl_to_uniform"] >= 0
    for key in ("mmd2", "mmd2_stderr", "high_quality_fraction", "sampling_seconds",
                "steps_per_second", "data_high_quality_fraction"):
        assert math.isfinite(result[key]), key
    assert result["n_modes"] == 8 and 0 <= result["modes_covered"] <= 8 and len(result["mode_counts"]) == 8
    assert "likelihood_kind" in result and result["likelihood_kind"] is None  # the zoo's field: no likelihood
    assert result["steps"] > 0 and result["seconds"] >= 1.5
    trace = result["trace"]
    assert trace[0]["step"] == 0 and trace[-1]["step"] == result["steps"] and len(trace) >= 3
    assert [t["step"] for t in trace] == sorted(t["step"] for t in trace)
    assert result["config"]["hidden"] == [16, 16] and result["config"]["recipe"] == "best"
    model = torch.load(path, weights_only=False)
    g = torch.Generator().manual_seed(0)
    x = model.sample(100, generator=g)
    assert x.shape == (100, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    torch.testing.assert_close(model.sample(100, generator=torch.Generator().manual_seed(0)), x)


def test_gan_8gaussians_on_the_grid(capsys):
    result = cli(capsys, "gan-8gaussians", "--seconds", "0.5", *SMALL, "--set", "toy=gaussian-grid")
    assert result["n_modes"] == 25 and len(result["mode_counts"]) == 25 and result["config"]["toy"] == "gaussian-grid"


def test_recipes_and_overrides():
    assert config_of(None) == DEFAULTS
    textbook = config_of({"recipe": "textbook"})
    assert textbook == TEXTBOOK
    assert (textbook["lr"], textbook["beta1"], textbook["batch_size"], textbook["hidden"]) == (1e-4, 0.5, 256,
                                                                                                 (128, 128, 128))
    assert textbook["ema_decay"] is None and textbook["r1_weight"] == 0 and textbook["lr_decay"] == "constant"
    minimax = config_of({"recipe": "textbook", "kind": "minimax"})
    assert minimax == {**TEXTBOOK, "kind": "minimax"}
    assert config_of({"ema_decay": "none"})["ema_decay"] is None
    assert [learning_rate_factor("linear", f) for f in (0, 0.25, 1)] == [1.0, 0.75, 0.0]
    assert learning_rate_factor("cosine", 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("overrides, message", [
    (["--set", "learning_rate=1"], r"unknown option\(s\) \['learning_rate'\]"),
    (["--set", "recipe=fancy"], "recipe must be one of"),
    (["--set", "toy=moons"], "toy must be one of"),
    (["--set", "kind=hinge"], "kind must be one of"),
    (["--set", "lr_decay=step"], "lr_decay must be one of"),
    (["--set", "lr=0"], "lr must be a positive number"),
    (["--set", "ema_decay=1.5"], "ema_decay must be in"),
    (["--set", "spectral_norm=maybe"], "expected true or false"),
    (["--peer", "pytorch-gan"], "no peer library"),
])
def test_bad_options_get_a_clear_error(capsys, overrides, message):
    assert main(["gan-8gaussians", "--seconds", "1", "--no-progress", *overrides]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert __import__("re").search(message, captured.err), captured.err


def record(seed, config, **scores):
    return {"task": "gan-8gaussians", "seed": seed, "seconds_budget": 60.0, "modes_covered": 8, "n_modes": 8,
            "high_quality_fraction": 0.98, "mmd2": 0.00012, "mmd2_stderr": 0.00005, "kl_to_uniform": 0.001,
            "steps": 4000, "config": {**config, "hidden": list(config["hidden"])}, **scores}


def test_table_shows_each_run_against_its_recipe():
    frame = table([record(0, DEFAULTS), record(1, {**DEFAULTS, "ema_decay": None}),
                   record(0, TEXTBOOK), record(0, {**TEXTBOOK, "kind": "minimax"}),
                   record(2, {**DEFAULTS, "toy": "gaussian-grid"}, n_modes=25, modes_covered=24)])
    assert list(frame["configuration"]) == ["default", "ema_decay=None", "recipe=textbook",
                                            "recipe=textbook, kind=minimax", "toy=gaussian-grid"]
    assert list(frame["modes"]) == ["8/8"] * 4 + ["24/25"]
    assert frame["MMD²"][0] == "0.00012 ± 0.00005" and frame["steps"][0] == 4000


def test_gan_digits_run_json_and_saved_model(capsys, tmp_path):
    path = tmp_path / "gan_digits.pt"
    result = cli(capsys, "gan-digits", "--seconds", "1", "--save", str(path), *TINY_DIGITS)
    for key in ("frechet_distance", "label_entropy", "frechet_distance_500", "floor_frechet_distance",
                "floor_label_entropy"):
        assert math.isfinite(result[key]), key
    assert 0 <= result["label_entropy"] <= math.log(10) + 1e-9 and sum(result["label_counts"]) == 1000
    assert result["floor_frechet_distance"] < result["frechet_distance_500"]  # a second of training is not the data
    assert result["steps"] > 0
    assert "likelihood_kind" in result and result["likelihood_kind"] is None and "bits_per_pixel" not in result
    x = torch.load(path, weights_only=False).sample(10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 64) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert main(["gan-digits", "--seconds", "1", "--set", "channels=1"]) == 2
