"""Tests of the ``text-transformer`` benchmark: a short run's fields, its scores recomputed from the
saved transformer, and the table."""

import json
import math

import pytest
import torch

from gmcourse.bench import text_transformer
from gmcourse.results import benchmark_table
from gmcourse.text import get_source, kl_per_sentence

SMALL = {"n_train": "500", "n_val": "200", "n_eval": "1000", "d_model": "8", "n_heads": "2", "n_layers": "1",
         "n_hidden": "16", "gru_hidden": "8", "max_order": "3"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "model.pt"
    result = text_transformer.run(0.5, 0, save=path, progress=False, overrides=SMALL)
    return result, torch.load(path, weights_only=False)


def test_every_model_is_scored_with_an_error_bar(short_run):
    result, _ = short_run
    for name in ("transformer", "gru", "ngram"):
        kl, stderr = result[f"{name}_kl_per_sentence"], result[f"{name}_kl_per_sentence_stderr"]
        assert math.isfinite(kl) and stderr > 0
        assert kl > -5 * stderr  # a KL divergence, up to its sampling error
        assert 0 < result[f"{name}_bits_per_character"] and result[f"{name}_n_params"] > 0
    assert 1 <= result["ngram_order"] <= 3
    assert result["transformer_steps"] > 0 and result["gru_steps"] > 0
    assert result["kl_per_sentence"] == result["transformer_kl_per_sentence"]
    assert result["entropy_nats"] == pytest.approx(get_source().entropy())
    json.dumps(result)


def test_the_transformers_score_is_its_kl_on_fresh_sentences(short_run):
    """Recompute the saved model's KL on the same number of fresh sentences with a different seed:
    the two estimates agree within five combined standard errors."""
    result, model = short_run
    again = kl_per_sentence(get_source(), model, n=1000, seed=12345)
    combined = math.hypot(again.stderr, result["transformer_kl_per_sentence_stderr"])
    assert abs(again.mean - result["transformer_kl_per_sentence"]) < 5 * combined


def test_bad_options_are_refused_and_the_table_has_a_row_per_model(short_run):
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        text_transformer.run(0.1, 0, progress=False, overrides={"n_train": "0"})
    with pytest.raises(ValueError, match="no peer"):
        text_transformer.run(0.1, 0, peer="nltk", progress=False)
    frame = text_transformer.table([{**short_run[0], "seed": 0}])
    assert list(frame["model"]) == ["transformer", "gru", f"{short_run[0]['ngram_order']}-gram"]
    # the results page's table of two recorded runs: three rows per run, the load of each run on its rows
    records = [{**short_run[0], "task": "text-transformer", "seed": seed, "load_average_1min": load}
               for seed, load in ((0, 1.5), (1, 0.5))]
    page = benchmark_table(records)
    assert len(page) == 6 and list(page["load (1 min)"]) == [1.5] * 3 + [0.5] * 3
