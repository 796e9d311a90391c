"""The model zoo: every benchmark task, several seeds, one results file.

    python -m gmcourse.bench zoo --seconds S --seeds K [--jobs J] [--tasks a,b] [--output PATH]

runs every task of :data:`gmcourse.bench.TASKS` in its default configuration for seeds
0..K-1 with a training budget of S wall-clock seconds each. Each run is a subprocess
``python -m gmcourse.bench TASK --seconds S --seed k --no-progress`` with one torch thread, so
that a crash of one task becomes an error row and loses none of the others; ``--jobs J`` runs J
of them at once. It adds the empirical-distribution baseline on Ising L = 4 (computed, not
trained, see :func:`empirical_baseline`) and writes ONE JSON file (default ``results/zoo.json``,
atomically: a temporary file renamed over the target) with a header saying how it was made and
one row per (task, seed) holding every field the task returned. Chapter 12 renders that file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gmcourse.bench import TASKS
from gmcourse.results import run_context
from gmcourse.utils import write_text_atomic

__all__ = ["BASELINE_TASK", "SMOOTHING", "empirical_baseline", "run_task", "write_atomic", "main"]

BASELINE_TASK = "ising-empirical"
SMOOTHING = 0.5  # add-1/2 (Jeffreys / Krichevsky-Trofimov) pseudo-count per state
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "results" / "zoo.json"


def empirical_baseline(seed: int, smoothing: float = SMOOTHING) -> dict:
    r"""KL of the smoothed empirical distribution of the 20,000 training samples of Ising L = 4.

    :math:`q(s) = (n_s + a) / (N + a\,2^D)` with :math:`n_s` the count of state :math:`s` among the
    :math:`N` samples (the same draw as every Ising task with this seed,
    :func:`gmcourse.bench.ising_ar.ising_data`) and :math:`a` = ``smoothing``. Returns
    ``kl_nats`` = KL(p || q) (exact sum over all states), ``unseen_mass`` = the probability under
    the true p of the states never seen, ``unseen_states`` (their number), ``kl_unsmoothed_finite``
    (False: the raw empirical distribution has infinite KL as soon as one state is unseen)."""
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    from gmcourse.bench.ising_ar import exact_kl, ising_data

    start = time.perf_counter()
    ising, _, train, _ = ising_data(seed)
    bits = ((train > 0).long() * (2 ** torch.arange(train.shape[1]))).sum(1)  # bit d <-> site d
    n_states = 2 ** train.shape[1]
    counts = torch.bincount(bits, minlength=n_states).double()
    # check the bit convention against the model's own index (state k has s_d = 2 bit_d(k) - 1)
    assert torch.equal(ising.state_index(train[:5].reshape(-1, ising.L, ising.L)).long(), bits[:5])
    q = (counts + smoothing) / (counts.sum() + smoothing * n_states)
    p = ising.probabilities()
    unseen = counts == 0
    return {
        "seconds": time.perf_counter() - start, "steps": 0, "n_params": 0,
        "config": {"smoothing": smoothing, "n_samples": int(train.shape[0])},
        "kl_nats": exact_kl(ising, log_q=q.log()),
        "unseen_mass": float(p[unseen].sum()), "unseen_states": int(unseen.sum()),
        "n_states": n_states, "kl_unsmoothed_finite": bool(not unseen.any()),
    }


def run_task(task: str, seconds: float, seed: int, timeout: float | None = None) -> dict:
    """One row: run ``task`` in a subprocess with one thread, its JSON line or an error row."""
    command = [sys.executable, "-m", "gmcourse.bench", task, "--seconds", repr(seconds), "--seed", str(seed),
               "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        return {"task": task, "seed": seed, "error": f"timed out after {timeout:.0f} s",
                "wall_seconds": time.perf_counter() - start}
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
        return {"task": task, "seed": seed, "error": tail[-500:], "returncode": done.returncode,
                "wall_seconds": wall}
    row = json.loads(lines[-1])
    return {**row, "task": task, "seed": seed, "wall_seconds": wall}


def write_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder + rename."""
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=True) + "\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gmcourse.bench zoo",
        description="Run every benchmark task for several seeds and write one results file.")
    parser.add_argument("--seconds", type=_positive_float, required=True, help="training budget of each run")
    parser.add_argument("--seeds", type=_positive_int, required=True, help="run seeds 0..K-1")
    parser.add_argument("--jobs", type=_positive_int, default=1, help="runs at once (each one thread)")
    parser.add_argument("--tasks", help="comma-separated subset of the tasks (default: all)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="results file (default results/zoo.json)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else ["zoo", *argv]
    if args.tasks is None:
        tasks = sorted(TASKS)
        with_baseline = True
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in TASKS and t != BASELINE_TASK]
        if not tasks or unknown:
            parser.error(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from: {', '.join(sorted(TASKS) + [BASELINE_TASK])}")
        with_baseline = BASELINE_TASK in tasks
        tasks = [t for t in tasks if t != BASELINE_TASK]
    output = Path(args.output)
    if output.exists() and output.is_dir():
        parser.error(f"--output must be a file path, {output} is a folder")

    header = {**run_context(argv), "torch_threads": 1, "seconds_budget": args.seconds, "seeds": args.seeds,
              "jobs": args.jobs, "tasks": tasks + ([BASELINE_TASK] if with_baseline else []),
              "baseline_smoothing": SMOOTHING}
    rows = []
    if with_baseline:
        for seed in range(args.seeds):
            rows.append({"task": BASELINE_TASK, "seed": seed, **empirical_baseline(seed)})
            print(f"zoo: {BASELINE_TASK} seed {seed}: KL {rows[-1]['kl_nats']:.4f} nats", file=sys.stderr)
    jobs = [(task, seed) for task in tasks for seed in range(args.seeds)]
    # a generous cap: a task that hangs past 10x its budget (+ 10 min for data and evaluation) is an error row
    timeout = 10 * args.seconds + 600
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_task, task, args.seconds, seed, timeout) for task, seed in jobs]
        for i, future in enumerate(futures):
            row = future.result()
            rows.append(row)
            status = f"error: {row['error']}" if "error" in row else "ok"
            print(f"zoo: [{i + 1}/{len(jobs)}] {row['task']} seed {row['seed']} "
                  f"({row['wall_seconds']:.0f} s): {status}", file=sys.stderr, flush=True)
    header["wall_seconds"] = time.perf_counter() - started
    write_atomic(output, {"header": header, "rows": rows})
    n_errors = sum("error" in row for row in rows)
    print(f"zoo: wrote {len(rows)} rows ({n_errors} errors) to {output}", file=sys.stderr)
    return 0
