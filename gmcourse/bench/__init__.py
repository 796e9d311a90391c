"""Benchmarks: train a model within a wall-clock budget and score it against the exact answer.

    python -m gmcourse.bench TASK --seconds S --seed K [--save PATH] [--peer LIBRARY]

prints one JSON line on stdout (the scores) and a progress bar on stderr. Every task is a
module in this package with a ``run(seconds, seed, save=None, peer=None, device=None,
progress=True) -> dict`` function; :data:`TASKS` maps task names to those modules. Chapter 12
tabulates the numbers the tasks print.
"""

from __future__ import annotations

import importlib

__all__ = ["TASKS", "get_task"]

# task name -> module (imported only when the task runs, so one task's imports cost others nothing)
TASKS = {
    "ising-ar": "gmcourse.bench.ising_ar",
    "flow-8gaussians": "gmcourse.bench.flow_8gaussians",
}


def get_task(name: str):
    """The module that implements benchmark ``name``; a clear error for an unknown name."""
    if name not in TASKS:
        raise ValueError(f"unknown benchmark task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])
