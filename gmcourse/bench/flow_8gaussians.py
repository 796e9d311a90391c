r"""Benchmark ``flow-8gaussians``: chapter 5's RealNVP on 8 Gaussians, scored by the exact KL.

    python -m gmcourse.bench flow-8gaussians --seconds 60 --seed 0 [--save PATH] [--peer zuko]

Data: :class:`gmcourse.toys.EightGaussians` (radius 2, std 0.1), a fresh batch every step, so
there is no overfitting and no held-out split to manage. Model: :class:`gmcourse.flows.RealNVP`
with a standard-normal base and affine couplings only. Score, on ``N_EVAL`` fresh points
:math:`x_i \sim p` (a generator apart from training's), the exact

.. math:: \mathrm{KL}(p\|q_\theta) = \mathbb E_p[\log p(x) - \log q_\theta(x)] = \mathrm{NLL} - H(p),

with NLL and :math:`H` averaged over the *same* points, so their common fluctuation cancels
in the KL and its error bar (the standard error of :math:`\log p - \log q_\theta`) is small.

Training: Adam (fused), batch 512, a 5% linear warm-up then cosine decay of the learning rate
(peak 5e-3) *in wall-clock time*, reaching 0 at the end of the budget so that the reported (last)
model is a settled one; log-scales bounded by :math:`|s| \le 3`, gradient norm clipped at 10, one
thread (small matrices; the machine is shared). The 60-s sweep behind :data:`CONFIG` (seed 0,
one otherwise idle core), KL in nats:

=========================================================  =====================
8 x 2x128, Adam 1e-3 constant, unbounded s, no clipping     1.38
  + warm-up and cosine decay                               0.33
  + peak 5e-3, :math:`|s|\le 3`, clipping                   0.12
24 x 2x48 (about the same cost per second): ``CONFIG``      0.057
``CONFIG`` but constant rate / no bound / no clipping       0.29 / diverged / 0.23
``CONFIG`` but batch 256 / batch 1024 / peak 1e-2           0.088 / 0.060 / 0.079
``CONFIG`` but no warm-up / random (not identity) init      0.057 / 0.056
=========================================================  =====================

So the decay to zero, the bound and the clipping (which let a high rate be used at all) and
depth matter; warm-up and identity initialisation do not, here. The recipe, not the library,
makes the difference: zuko's RealNVP of the same size trained with this recipe reaches the same
KL (0.062).

``--peer zuko`` trains ``zuko.flows.RealNVP`` of the same size (``CONFIG.n_layers`` couplings,
2 x ``CONFIG.hidden`` hidden units, the same number of parameters, its own soft-bounded scales)
with the recipe the issue measured it with, a constant-rate Adam at 1e-3 without clipping, on the
same data stream, batch size and budget, and reports it under ``"peer"``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from gmcourse.divergences import monte_carlo_mean
from gmcourse.flows import RealNVP
from gmcourse.toys import EightGaussians
from gmcourse.utils import default_device, make_generator, progress as progress_bar

PEERS = ("zuko",)
N_EVAL = 50_000  # fresh points for the final NLL / entropy / KL
EVAL_SEED_OFFSET = 1_000_003  # the evaluation stream never overlaps the training stream
PEER_LR = 1e-3  # the peer's recipe: Adam at a constant 1e-3, no clipping (as the issue measured it)


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
    warmup_fraction: float = 0.05  # of the budget, linear from 0
    final_lr_fraction: float = 0.0  # cosine decay to lr * this at the end of the budget
    grad_clip: float | None = 10.0  # max global gradient norm
    threads: int = 1


CONFIG = Config()


def learning_rate(fraction: float, config: Config) -> float:
    """Warm-up then cosine decay as a function of the elapsed fraction of the budget."""
    if fraction < config.warmup_fraction:
        return config.lr * fraction / config.warmup_fraction
    progress = min(1.0, (fraction - config.warmup_fraction) / (1.0 - config.warmup_fraction))
    floor = config.lr * config.final_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(loss_fn, parameters, seconds, generator, config: Config, schedule=True, device=None, desc=None,
          show_progress=True) -> tuple[int, float]:
    """Adam on ``loss_fn(batch)`` with fresh 8-Gaussians batches until ``seconds`` have passed.

    Returns ``(steps, elapsed seconds)``; the clock starts at the first step, after the set-up."""
    data = EightGaussians()
    parameters = list(parameters)
    fused = device is None or torch.device(device).type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(parameters, lr=config.lr if not schedule else 0.0, fused=fused)  # one kernel
    bar = progress_bar(total=round(seconds), desc=desc, disable=None if show_progress else True, unit="s")
    start = time.perf_counter()
    steps, shown = 0, 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        if schedule:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(elapsed / seconds, config)
        batch = data.sample(config.batch_size, generator=generator).to(device)  # (batch, 2)
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
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

    A model that gives some point a non-finite log-density has no finite NLL: its NLL and KL are
    then reported as ``None`` (JSON ``null``) with the number of such points.
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


def _zuko_flow(config: Config):
    import zuko

    return zuko.flows.RealNVP(features=2, transforms=config.n_layers,
                              hidden_features=(config.hidden,) * config.n_hidden_layers)


def run(seconds, seed, save=None, peer=None, device=None, progress=True, config: Config | None = None) -> dict:
    if peer is not None and peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r} for flow-8gaussians; choose one of: {', '.join(PEERS)}")
    config = config or CONFIG
    device = torch.device(device) if device is not None else default_device()
    torch.set_num_threads(config.threads)

    torch.manual_seed(seed)  # network initialisation
    model = RealNVP(2, config.n_layers, config.hidden, config.n_hidden_layers, config.log_scale_bound,
                    config.identity_init, config.activation).to(device)
    generator = make_generator(seed=seed)  # the training data stream
    steps, elapsed = train(model.loss, model.parameters(), seconds, generator, config, device=device,
                           desc="RealNVP", show_progress=progress)
    model.eval()
    result = {**score(model.log_prob, seed, device), "seconds": elapsed, "steps": steps,
              "steps_per_second": steps / elapsed, "n_params": sum(p.numel() for p in model.parameters()),
              "device": str(device), "threads": config.threads}
    if save is not None:
        torch.save(model.cpu(), save)

    if peer == "zuko":
        torch.manual_seed(seed)
        flow = _zuko_flow(config).to(device)
        generator = make_generator(seed=seed)  # the same data stream as ours
        peer_config = dataclasses.replace(config, lr=PEER_LR, grad_clip=None)
        peer_steps, peer_elapsed = train(lambda x: -flow().log_prob(x).mean(), flow.parameters(), seconds,
                                         generator, peer_config, schedule=False, device=device,
                                         desc="zuko RealNVP", show_progress=progress)
        flow.eval()
        result["peer"] = {"library": "zuko", "model": "zuko.flows.RealNVP", "recipe": f"Adam {PEER_LR:g} constant",
                          **score(lambda x: flow().log_prob(x), seed, device), "seconds": peer_elapsed,
                          "steps": peer_steps, "steps_per_second": peer_steps / peer_elapsed,
                          "n_params": sum(p.numel() for p in flow.parameters())}
        if result["kl_nats"] is not None and result["peer"]["kl_nats"] is not None:
            result["kl_ratio_to_peer"] = result["kl_nats"] / result["peer"]["kl_nats"]
    return result
