r"""Benchmark ``flow-8gaussians``: chapter 5's RealNVP (affine couplings on a standard-normal base)
trained for a wall-clock budget on fresh samples of eight Gaussians (radius 2, std 0.1) and scored
by the exact KL divergence from the data, KL = NLL - H(p), on 50,000 fresh points.

    python -m gmcourse.bench flow-8gaussians --seconds 60 --seed 0 [--peer zuko] [--set NAME=VALUE ...]

Data: :class:`gmcourse.toys.EightGaussians`, a fresh batch every step, so there is no overfitting
and no held-out split to manage. Model: :class:`gmcourse.flows.RealNVP` with the settings of
:class:`Config`. Score, on ``N_EVAL`` fresh points :math:`x_i \sim p` (a random stream apart from
training's), the exact

.. math:: \mathrm{KL}(p\,\|\,p_\theta) = \mathbb E_p[\log p(x) - \log p_\theta(x)] = \mathrm{NLL} - H(p),

with NLL and :math:`H(p)` averaged over the *same* points, so that their common fluctuation
cancels in the KL and its error bar (the standard error of :math:`\log p - \log p_\theta`) is small.

Training (:data:`CONFIG`): Adam (Kingma and Ba, 2015), batch 512, peak learning rate 5e-3 with a
5 % linear warm-up and a cosine decay (:func:`gmcourse.flows.warmup_cosine_lr`) *in wall-clock
time*, reaching 0 at the end of the budget so that the reported (last) model is a settled one;
log-scales bounded by :math:`|s| \le 3`, gradient norm clipped at 10, one thread. Every field of
:class:`Config` can be changed with ``--set`` (e.g. ``--set lr_schedule=constant``,
``--set log_scale_bound=none``), so an ablation is an ordinary recorded run, and :func:`table`
shows each recorded run with the settings in which it differs from :data:`CONFIG`.

``--peer zuko`` also trains, in the same process, on the same data stream (the same seed), for the
same budget each, with the same device and threads, each timed on its own training only:

``zuko_same_recipe``
    ``zuko.flows.RealNVP`` of the same size as ours (``n_layers`` couplings, ``n_hidden_layers``
    hidden layers of ``hidden`` units, the same activation: the same number of parameters) trained
    with *our* recipe (schedule, peak rate, clipping, batch size). What remains different is the
    architecture's details: zuko bounds its log-scales softly, :math:`a/(1 + |a|/\log 10^3)`, and
    initialises its networks randomly, where ours starts as the identity with :math:`B\tanh(s/B)`.
``zuko_default``
    zuko as its documentation uses it: ``zuko.flows.RealNVP(2)`` with its default architecture
    (zuko 1.6.0: ``transforms=3`` couplings, ``hidden_features=(64, 64)`` from ``zuko.nn.MLP``,
    ReLU) trained with the recipe of zuko's README ("Getting started") and its tutorial "Train from
    data": Adam at a constant learning rate of 1e-3, no clipping, batches of 64.

Every model also reports ``untrained_kl_nats`` (± ``untrained_kl_stderr``), the score of its
initialisation on the same points, outside the timed training. Each peer is reported under
``result["peers"][name]`` with the same scores as ours, ``steps``,
``steps_per_second``, ``n_params``, its ``architecture`` and its ``recipe``. Ours against
``zuko_same_recipe`` compares architectures under one recipe; ``zuko_same_recipe`` against
``zuko_default`` shows what the recipe and size do to one library's flow (a run with ``--set
n_layers=3 --set hidden=64`` gives ours at zuko's default size, to tell size from recipe).

Ours also reports the fields common to the 8-Gaussians tasks of chapter 12's zoo
(:func:`common_fields`): the scores of 5,000 of its samples as every family gets them (``mmd2`` ±
``mmd2_stderr``, ``modes_covered`` of ``n_modes``, ``high_quality_fraction``; see
:func:`gmcourse.bench.ddpm_8gaussians.evaluate`) and ``nll_minus_entropy`` ± ``nll_minus_entropy_stderr``,
the exact KL above under the zoo's name, with ``likelihood_kind = "exact"``. They take about a second,
outside the budget.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from gmcourse.bench import apply_overrides
from gmcourse.divergences import monte_carlo_mean
from gmcourse.flows import ACTIVATIONS, RealNVP, warmup_cosine_lr
from gmcourse.toys import EightGaussians
from gmcourse.utils import default_device, make_generator, progress as progress_bar

__all__ = ["CONFIG", "Config", "Recipe", "ZUKO_DEFAULT_RECIPE", "run", "score", "table", "train"]

PEERS = ("zuko",)
N_EVAL = 50_000  # fresh points for the final NLL / entropy / KL
EVAL_SEED_OFFSET = 1_000_003  # the evaluation stream never overlaps the training stream
LR_SCHEDULES = ("warmup-cosine", "constant")


@dataclasses.dataclass
class Config:
    n_layers: int = 24
    hidden: int = 48
    n_hidden_layers: int = 2
    log_scale_bound: float | None = 3.0
    identity_init: bool = True
    activation: str = "relu"
    batch_size: int = 512
    lr: float = 5e-3  # peak learning rate
    lr_schedule: str = "warmup-cosine"  # or "constant" (lr throughout)
    warmup_fraction: float = 0.05  # of the budget, linear from 0
    final_lr_fraction: float = 0.0  # cosine decay to lr * this at the end of the budget
    grad_clip: float | None = 10.0  # max global gradient norm
    threads: int = 1


CONFIG = Config()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained: optimiser settings, batch size, gradient clipping."""

    lr: float  # peak learning rate (the constant one for lr_schedule="constant")
    batch_size: int
    lr_schedule: str = "warmup-cosine"
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.0
    grad_clip: float | None = None

    @classmethod
    def of(cls, config: Config) -> "Recipe":
        return cls(config.lr, config.batch_size, config.lr_schedule, config.warmup_fraction,
                   config.final_lr_fraction, config.grad_clip)

    def learning_rate(self, fraction: float) -> float:
        if self.lr_schedule == "constant":
            return self.lr
        return warmup_cosine_lr(fraction, self.lr, self.warmup_fraction, self.final_lr_fraction)


# zuko's README ("Getting started") and tutorial "Train from data" (docs/tutorials/forward_kl.ipynb):
# torch.optim.Adam(flow.parameters(), lr=1e-3), no schedule, no clipping; the tutorial's batches hold 64.
ZUKO_DEFAULT_RECIPE = Recipe(lr=1e-3, batch_size=64, lr_schedule="constant", grad_clip=None)


def _check_config(config: Config) -> Config:
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {config.lr_schedule!r}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {config.activation!r}")
    for name in ("n_layers", "hidden", "batch_size", "threads"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.lr < 0:
        raise ValueError(f"lr must be >= 0, got {config.lr}")
    return config


def train(loss_fn, parameters, seconds, generator, recipe: Recipe, device=None, desc=None,
          show_progress=True) -> tuple[int, float]:
    """Adam on ``loss_fn(batch)`` with fresh 8-Gaussians batches until ``seconds`` have passed.

    Returns ``(steps, elapsed seconds)``; the clock starts at the first step, after the set-up,
    and the learning rate follows ``recipe`` as a function of the elapsed fraction of the budget."""
    data = EightGaussians()
    parameters = list(parameters)
    fused = device is None or torch.device(device).type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(parameters, lr=recipe.learning_rate(0.0), fused=fused)  # one kernel
    bar = progress_bar(total=round(seconds), desc=desc, disable=None if show_progress else True, unit="s")
    start = time.perf_counter()
    steps, shown = 0, 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate(elapsed / seconds)
        batch = data.sample(recipe.batch_size, generator=generator).to(device)  # (batch, 2)
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, recipe.grad_clip)
        optimizer.step()
        steps += 1
        if int(elapsed) > shown:
            bar.update(int(elapsed) - shown)
            shown = int(elapsed)
    bar.update(round(seconds) - shown)
    bar.close()
    return steps, elapsed


def score(log_prob, seed: int, device=None, n: int = N_EVAL) -> dict:
    r"""NLL, entropy and KL (nats) of a density on ``n`` fresh points, each with its standard error.

    ``log_prob`` maps points (m, 2) to log-densities (m,). A model that gives some point a
    non-finite log-density has no finite NLL: its NLL and KL are then reported as ``None`` (JSON
    ``null``) with the number of such points.
    """
    data = EightGaussians()
    x = data.sample(n, seed=seed + EVAL_SEED_OFFSET)  # (n, 2), the same points for every model
    with torch.no_grad():
        log_q = torch.cat([log_prob(chunk.to(device)).double().cpu() for chunk in x.split(10_000)])  # (n,)
    log_p = data.log_prob(x.double())  # (n,) exact
    entropy = monte_carlo_mean(-log_p)
    result = {"entropy_nats": entropy.mean, "entropy_stderr": entropy.stderr}
    bad = int((~torch.isfinite(log_q)).sum())
    if bad:
        return {**result, "nll_nats": None, "nll_stderr": None, "kl_nats": None, "kl_stderr": None,
                "non_finite_log_prob": bad}
    nll, kl = monte_carlo_mean(-log_q), monte_carlo_mean(log_p - log_q)
    return {"nll_nats": nll.mean, "nll_stderr": nll.stderr, **result, "kl_nats": kl.mean, "kl_stderr": kl.stderr}


def _fit_and_score(make_model, loss_fn, log_prob, recipe: Recipe, seconds, seed, device, desc, progress) -> tuple:
    """Build (seeded), train on the seed's data stream for ``seconds``, score: (model, report)."""
    torch.manual_seed(seed)  # network initialisation
    model = make_model().to(device)
    untrained = score(lambda x: log_prob(model, x), seed, device)  # where training starts from
    generator = make_generator(seed=seed)  # the training data stream, the same for every model
    steps, elapsed = train(lambda x: loss_fn(model, x), model.parameters(), seconds, generator, recipe,
                           device=device, desc=desc, show_progress=progress)
    model.eval()
    report = {**score(lambda x: log_prob(model, x), seed, device), "seconds": elapsed, "steps": steps,
              "steps_per_second": steps / elapsed, "n_params": sum(p.numel() for p in model.parameters()),
              "untrained_kl_nats": untrained["kl_nats"], "untrained_kl_stderr": untrained["kl_stderr"],
              "recipe": dataclasses.asdict(recipe)}
    return model, report


SAMPLE_FIELDS = ("mmd2", "mmd2_stderr", "mmd2_sigmas", "modes_covered", "n_modes", "high_quality_fraction",
                 "mode_kl_to_uniform", "non_finite_samples", "sampling_seconds")


def common_fields(model, report: dict, seed: int) -> dict:
    """The fields every 8-Gaussians task reports (chapter 12's zoo): the sample scores of
    :func:`gmcourse.bench.ddpm_8gaussians.evaluate` (5,000 samples against 5,000 fresh points, the same
    points as the other families) and ``nll_minus_entropy`` = the exact KL = NLL - H(p) of the score,
    with ``likelihood_kind = "exact"``."""
    from gmcourse.bench.ddpm_8gaussians import evaluate  # imported here: that module imports this one

    samples = evaluate(lambda n, g: model.sample(n, generator=g), None, seed)
    return {**{name: samples[name] for name in SAMPLE_FIELDS}, "nll_minus_entropy": report["kl_nats"],
            "nll_minus_entropy_stderr": report["kl_stderr"], "likelihood_kind": "exact"}


def _zuko_architecture(flow) -> dict:
    import zuko

    couplings = [m for m in flow.modules() if isinstance(m, zuko.flows.coupling.GeneralCouplingTransform)]
    linear = [m for m in couplings[0].hyper if hasattr(m, "out_features")]  # zuko.nn.Linear layers
    activations = {type(m).__name__ for m in couplings[0].hyper if not hasattr(m, "out_features")}
    return {"transforms": len(couplings), "hidden_features": [m.out_features for m in linear[:-1]],
            "activation": sorted(activations)}


def _zuko_peers(config: Config, seconds, seed, device, progress) -> dict:
    import zuko

    def loss(flow, x):
        return -flow().log_prob(x).mean()

    def log_prob(flow, x):
        return flow().log_prob(x)

    variants = {
        "zuko_same_recipe": (
            lambda: zuko.flows.RealNVP(features=2, transforms=config.n_layers,
                                       hidden_features=(config.hidden,) * config.n_hidden_layers,
                                       activation=ACTIVATIONS[config.activation]),
            Recipe.of(config)),
        "zuko_default": (lambda: zuko.flows.RealNVP(features=2), ZUKO_DEFAULT_RECIPE),
    }
    peers = {}
    for name, (make_flow, recipe) in variants.items():
        flow, report = _fit_and_score(make_flow, loss, log_prob, recipe, seconds, seed, device, name, progress)
        peers[name] = {"library": f"zuko {zuko.__version__}", "model": "zuko.flows.RealNVP",
                       "architecture": _zuko_architecture(flow), **report}
    return peers


def run(seconds, seed, save=None, peer=None, device=None, progress=True,
        overrides: dict[str, str] | None = None) -> dict:
    """Train ours (and, with ``peer="zuko"``, the two zuko variants) for ``seconds`` each; the scores.

    ``overrides`` holds ``--set`` strings for the fields of :class:`Config`."""
    if peer is not None and peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r} for flow-8gaussians; choose one of: {', '.join(PEERS)}")
    config = _check_config(Config(**apply_overrides(dataclasses.asdict(CONFIG), overrides)))
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(config.threads)

    model, report = _fit_and_score(
        lambda: RealNVP(2, config.n_layers, config.hidden, config.n_hidden_layers, config.log_scale_bound,
                        config.identity_init, config.activation),
        lambda flow, x: flow.loss(x), lambda flow, x: flow.log_prob(x), Recipe.of(config), seconds, seed,
        device, "RealNVP", progress)
    result = {**report, **common_fields(model, report, seed), "seconds_budget": seconds, "device": str(device),
              "threads": config.threads, "config": dataclasses.asdict(config)}
    if save is not None:
        torch.save(model.cpu(), save)
    if peer == "zuko":
        result["peers"] = _zuko_peers(config, seconds, seed, device, progress)
    return result


def _plus_minus(report: dict) -> str:
    if report.get("kl_nats") is None:
        return f"diverged ({report.get('non_finite_log_prob', '?')} non-finite log-densities)"
    if report["kl_nats"] > 100:  # finite, but the flow put its mass far from the data
        return f"diverged (KL {report['kl_nats']:.1e})"
    return f"{report['kl_nats']:.3f} ± {report['kl_stderr']:.3f}"


def _settings(record: dict) -> str:
    """The fields of the run's configuration that differ from :data:`CONFIG`, or "default"."""
    defaults = dataclasses.asdict(CONFIG)
    config = record.get("config") or apply_overrides(defaults, record.get("overrides"))
    changed = [f"{name}={config[name]}" for name in defaults if name in config and config[name] != defaults[name]]
    return ", ".join(changed) or "default"


def table(records: list[dict]):
    """One row per recorded run: its settings, seed and budget, then KL ± standard error and steps
    of ours and of each peer variant."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"settings": _settings(record), "seed": record.get("seed"),
               "budget (s)": record.get("seconds_budget"), "KL (nats)": _plus_minus(record),
               "steps": record.get("steps")}
        for name, peer in (record.get("peers") or {}).items():
            row[f"{name} KL (nats)"] = _plus_minus(peer)
            row[f"{name} steps"] = peer.get("steps")
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in frame.columns[5:]:  # peer columns: blank where a run had no such peer
        whole = column.endswith("steps")  # pandas made them floats to hold the blanks
        frame[column] = ["" if pd.isna(value) else int(value) if whole else value for value in frame[column]]
    return frame
