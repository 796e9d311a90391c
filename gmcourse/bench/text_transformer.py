r"""Benchmark ``text-transformer``: language models on chapter 11's bracket grammar
(:func:`gmcourse.text.get_source`), scored by the exact
:math:`\mathrm{KL}(P_\text{source}\,\|\,P_\theta)` per sentence.

    python -m gmcourse.bench text-transformer --seconds 60 --seed 0 [--set NAME=VALUE ...] [--record]

All models learn from the same ``n_train`` sentences drawn with the seed:

* the mini-transformer (:class:`gmcourse.transformer.TransformerAR`, string mode, context = the
  grammar's longest sentence) for ``seconds`` of training;
* chapter 4's GRU (:class:`gmcourse.transformer.GRULanguageModel`) for the same ``seconds``;
* n-gram models of orders 1 .. ``max_order`` (counts with add-α smoothing, no training loop);
  the order with the lowest NLL on ``n_val`` held-out sentences is reported.

The two networks take Adam steps on minibatches with a cosine learning-rate decay over their
budget, the task's total run time is therefore about twice ``seconds``. Each score is the mean of
:math:`\log P_\text{source}(x) - \log P_\theta(x)` over ``n_eval`` fresh sentences, with its
standard error (:func:`gmcourse.text.kl_per_sentence`); the same sentences score every model,
and ``bits_per_character`` divides the model's NLL by the mean number of characters plus one
(the ⟨eos⟩) and by :math:`\ln 2`.

An n-gram model sees only the last ``order - 1`` characters, so it can neither close the right
bracket after a long insertion nor make the verb agree with a noun many characters back; the
GRU must carry both in its hidden state; attention can look the opening bracket and the noun
up directly.

Reported, for ``transformer``, ``gru`` and ``ngram``: ``<model>_kl_per_sentence``,
``<model>_kl_per_sentence_stderr``, ``<model>_bits_per_character``, ``<model>_n_params``; the
networks' ``<model>_steps`` and ``<model>_seconds``; ``ngram_order``; ``entropy_nats`` (exact, per
sentence) and the common ``kl_per_sentence`` / ``kl_per_sentence_stderr`` / ``steps`` /
``seconds`` / ``n_params`` of the transformer.
"""

from __future__ import annotations

import math
import time

import torch

from gmcourse.bench import apply_overrides, configuration_label, group_by_configuration
from gmcourse.text import NGramModel, get_source, kl_per_sentence
from gmcourse.transformer import GRULanguageModel, TransformerAR
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["DEFAULTS", "run", "table", "train_string_model"]

DEFAULTS = dict(n_train=20_000, n_val=2_000, n_eval=10_000, d_model=32, n_heads=4, n_layers=2, n_hidden=64,
                learning_rate=1e-2, batch_size=128, gru_hidden=64, gru_learning_rate=1e-2, max_order=8,
                smoothing=0.01)


def train_string_model(model, sentences: list[str], seconds: float, learning_rate: float, batch_size: int,
                       generator: torch.Generator, desc: str, progress: bool) -> tuple[int, float]:
    """Adam on minibatches of ``sentences`` for ``seconds`` of wall time, the learning rate on a
    cosine to 0 over the budget. Returns (steps, seconds)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    bar = progress_bar(total=round(seconds, 1), desc=desc, disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
        batch = torch.randint(len(sentences), (batch_size,), generator=generator).tolist()
        loss = model.loss([sentences[i] for i in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 20 == 0:
            bar.set_postfix_str(f"NLL {loss.item():.3f}", refresh=False)
            bar.update(round(elapsed, 1) - bar.n)
    bar.update(round(seconds, 1) - bar.n)
    bar.close()
    return steps, time.perf_counter() - start


def run(seconds: float, seed: int, save=None, peer=None, device=None, progress: bool = True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train the transformer and the GRU for ``seconds`` each, fit the n-grams, return the scores."""
    if peer is not None:
        raise ValueError(f"text-transformer has no peer library to compare with, got --peer {peer!r}")
    cfg = apply_overrides(DEFAULTS, overrides)
    for name in ("n_train", "n_val", "n_eval", "batch_size", "max_order"):
        if cfg[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {cfg[name]}")
    torch.set_num_threads(1)
    device = torch.device(device) if device is not None else default_device()
    source = get_source()
    g = make_generator(seed)
    train = source.sample(cfg["n_train"], generator=g)
    val = source.sample(cfg["n_val"], generator=g)
    eval_seed = int(torch.randint(2**62, (1,), generator=g))  # fresh sentences for scoring
    train_seed = int(torch.randint(2**62, (1,), generator=g))
    eval_sentences = source.sample(cfg["n_eval"], seed=eval_seed)
    mean_characters = sum(map(len, eval_sentences)) / len(eval_sentences) + 1  # the <eos> counts

    def scores(name, model):
        kl = kl_per_sentence(source, model, cfg["n_eval"], seed=eval_seed)
        nll = kl.mean + source.entropy()  # per sentence: KL + H, in nats
        return {f"{name}_kl_per_sentence": kl.mean, f"{name}_kl_per_sentence_stderr": kl.stderr,
                f"{name}_bits_per_character": nll / mean_characters / math.log(2)}

    result = {"entropy_nats": source.entropy(), "mean_characters": mean_characters}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        transformer = TransformerAR(vocabulary=source.vocabulary, context=source.max_length, d_model=cfg["d_model"],
                                    n_heads=cfg["n_heads"], n_layers=cfg["n_layers"], n_hidden=cfg["n_hidden"]).to(device)
        gru = GRULanguageModel(source.vocabulary, source.max_length, hidden_size=cfg["gru_hidden"]).to(device)
    for name, model, lr in (("transformer", transformer, cfg["learning_rate"]), ("gru", gru, cfg["gru_learning_rate"])):
        steps, train_seconds = train_string_model(model, train, seconds, lr, cfg["batch_size"],
                                                  make_generator(train_seed + 1), f"text {name}", progress)
        result.update(scores(name, model), **{f"{name}_steps": steps, f"{name}_seconds": round(train_seconds, 2),
                                              f"{name}_n_params": sum(p.numel() for p in model.parameters())})

    best = min((NGramModel(source.vocabulary, order, cfg["smoothing"]).fit(train) for order in range(1, cfg["max_order"] + 1)),
               key=lambda ngram: float(-ngram.log_prob(val).mean()))
    result.update(scores("ngram", best), ngram_order=best.order, ngram_n_params=best.n_params())
    result.update(kl_per_sentence=result["transformer_kl_per_sentence"],
                  kl_per_sentence_stderr=result["transformer_kl_per_sentence_stderr"],
                  steps=result["transformer_steps"], seconds=result["transformer_seconds"],
                  n_params=result["transformer_n_params"], threads=torch.get_num_threads(), config=dict(cfg))
    if save is not None:
        torch.save(transformer.cpu(), save)
    return result


def table(records: list[dict]):
    """One row per recorded run and model: KL per sentence ± standard error, bits per character,
    steps and parameters."""
    import pandas as pd

    rows = []
    for record in records:
        for name in ("transformer", "gru", "ngram"):
            rows.append({
                "configuration": configuration_label(record, DEFAULTS),
                "seed": record.get("seed"),
                "budget (s)": record.get("seconds_budget", record.get("seconds")),
                "model": name if name != "ngram" else f"{record.get('ngram_order')}-gram",
                "KL per sentence (nats)": record.get(f"{name}_kl_per_sentence"),
                "± stderr": record.get(f"{name}_kl_per_sentence_stderr"),
                "bits per character": record.get(f"{name}_bits_per_character"),
                "steps": record.get(f"{name}_steps"),
                "n_params": record.get(f"{name}_n_params"),
                "load (1 min)": record.get("load_average_1min"),  # one row per model: the page adds no column
            })
    return group_by_configuration(pd.DataFrame(rows))
