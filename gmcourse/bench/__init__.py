"""Benchmarks: train a model within a wall-clock budget and score it against the exact answer.

    python -m gmcourse.bench TASK --seconds S --seed K [--save PATH] [--peer LIBRARY]
                                 [--set NAME=VALUE ...] [--record [PATH]]

prints one JSON line on stdout (the scores) and a progress bar on stderr. Every task is a
module in this package with a ``run(seconds, seed, save=None, peer=None, device=None,
progress=True, overrides=None) -> dict`` function; ``overrides`` holds the ``--set`` options as
strings, which the task turns into its configuration with :func:`apply_overrides` (ablations and
sweeps are ordinary recorded runs). :data:`TASKS` maps task names to those modules. ``--record``
appends each run to ``results/bench/<task>.jsonl``, which the book's results page renders.
"""

from __future__ import annotations

import importlib

__all__ = ["TASKS", "apply_overrides", "check_at_least", "check_max_steps", "configuration_label", "default_seconds",
           "get_task", "group_by_configuration", "initial_model", "pace", "parse_overrides",
           "run_facts"]

# task name -> module (imported only when the task runs, so one task's imports cost others nothing)
TASKS = {
    "ising-ar": "gmcourse.bench.ising_ar",
    "flow-8gaussians": "gmcourse.bench.flow_8gaussians",
    "ising-rbm": "gmcourse.bench.ising_rbm",
    "tfim-rbm": "gmcourse.bench.tfim_rbm",
    "ising-vae": "gmcourse.bench.ising_vae",
    "vae-8gaussians": "gmcourse.bench.vae_8gaussians",
    "vae-digits": "gmcourse.bench.vae_digits",
    "ar-digits": "gmcourse.bench.ar_digits",
    "gan-8gaussians": "gmcourse.bench.gan_8gaussians",
    "gan-digits": "gmcourse.bench.gan_digits",
    "ddpm-8gaussians": "gmcourse.bench.ddpm_8gaussians",
    "ddpm-digits": "gmcourse.bench.ddpm_digits",
    "ising-transformer": "gmcourse.bench.ising_transformer",
    "tfim-transformer": "gmcourse.bench.tfim_transformer",
    "text-transformer": "gmcourse.bench.text_transformer",
}


def default_seconds() -> float:
    """The training budget of one run when ``--seconds`` is not given: 60 s at the default scale (a
    laptop CPU), 300 s with ``GMCOURSE_SCALE=full`` (:func:`gmcourse.utils.scale`; a GPU runner).

    Only the training time grows: the data, the configuration and the scoring of every task are the
    same at both scales, so the scores of runs made at either size can be put side by side (each
    record carries its ``seconds_budget``)."""
    from gmcourse.utils import at_scale

    return at_scale(60.0, 300.0)


def get_task(name: str):
    """The module that implements benchmark ``name``; a clear error for an unknown name."""
    if name not in TASKS:
        raise ValueError(f"unknown benchmark task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["lr=0.01", "augment=false"]`` -> ``{"lr": "0.01", "augment": "false"}``."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set expects NAME=VALUE, got {pair!r}")
        overrides[name.strip()] = value.strip()
    return overrides


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _convert(name: str, text: str, default):
    """Read ``text`` as a value of the type of ``default`` (None allowed for optional numbers)."""
    if text.lower() == "none":
        return None
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float) or default is None:
            return float(text)
        if isinstance(default, tuple):
            return tuple(type(default[0])(part) for part in text.split(",")) if default else tuple(text.split(","))
        return type(default)(text)
    except ValueError:
        kind = "true or false" if isinstance(default, bool) else type(default).__name__
        raise ValueError(f"--set {name}={text}: expected {kind} (the default is {default!r})") from None


def apply_overrides(defaults: dict, overrides: dict[str, str] | None) -> dict:
    """``defaults`` with the ``--set`` strings in ``overrides`` converted to each field's type.

    Tuples are written comma-separated (``hidden_sizes=128,128``); ``none`` gives None.
    An unknown name is an error that lists the known ones.
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **{name: _convert(name, text, defaults[name]) for name, text in overrides.items()}}


def configuration_label(record: dict, defaults: dict, ignore: tuple[str, ...] = ()) -> str:
    """How a recorded run's configuration differs from ``defaults``, e.g. ``"augment=False"``
    (``"default"`` when it does not; names in ``ignore`` are left out)."""
    config = record.get("config")
    if config is None:  # a record made before runs stored their configuration
        config = apply_overrides(defaults, record.get("overrides"))
    config = {name: tuple(value) if isinstance(value, list) else value for name, value in config.items()}
    changed = [f"{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
               for name, value in config.items()
               if name in defaults and name not in ignore and value != defaults[name]]
    return ", ".join(changed) or "default"


def group_by_configuration(frame):
    """The rows of a results table (with a ``configuration`` column) with the runs of one
    configuration together, configurations in the order they were first recorded."""
    first_seen = {name: rank for rank, name in enumerate(dict.fromkeys(frame["configuration"]))}
    return frame.sort_values("configuration", key=lambda column: column.map(first_seen), kind="stable",
                             ignore_index=True)


# ----------------------------------------------------------------------------- shared by the tasks

def check_at_least(cfg: dict, names, minimum: int = 1) -> None:
    """A clear error when a setting in ``names`` is below ``minimum``."""
    for name in names:
        if cfg[name] < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {cfg[name]}")


def check_max_steps(cfg: dict) -> dict:
    """``cfg`` with ``max_steps`` a positive int or None; a clear error for anything else."""
    if cfg["max_steps"] is None:
        return cfg
    if cfg["max_steps"] < 1 or cfg["max_steps"] != int(cfg["max_steps"]):
        raise ValueError(f"max_steps must be a positive integer or none, got {cfg['max_steps']}")
    return {**cfg, "max_steps": int(cfg["max_steps"])}


def initial_model(make_model, cfg: dict, seed: int, device):
    """``make_model(cfg)`` initialised from ``seed`` (torch's global RNG is left as it was), on ``device``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(cfg).to(device)


def pace(steps: int, seconds: float, cpu_seconds: float | None = None) -> dict:
    """The training-speed fields of a record: ``steps``, ``seconds``, ``steps_per_second`` (and
    ``steps_per_cpu_second`` when the CPU time is known)."""
    facts = {"seconds": seconds, "steps": steps, "steps_per_second": steps / max(seconds, 1e-9)}
    if cpu_seconds is not None:
        facts["steps_per_cpu_second"] = steps / max(cpu_seconds, 1e-9)
    return facts


def run_facts(modules, cfg: dict, device, seconds_budget: float | None = None) -> dict:
    """The fields every record carries: parameter count of ``modules`` (one module or several),
    threads, device, the configuration (tuples as lists, for JSON) and the budget when given."""
    import torch

    modules = modules if isinstance(modules, (list, tuple)) else [modules]
    facts = {"n_params": sum(p.numel() for module in modules for p in module.parameters()),
             "threads": torch.get_num_threads(), "device": str(device),
             "config": {name: list(value) if isinstance(value, tuple) else value for name, value in cfg.items()}}
    if seconds_budget is not None:
        facts["seconds_budget"] = seconds_budget
    return facts
