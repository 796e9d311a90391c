"""Measured results: benchmark runs recorded as JSON lines, and the tables the book renders.

``python -m gmcourse.bench TASK ... --record`` appends one record per run to
``results/bench/<task>.jsonl``: the command that made it, when and where it ran (commit, device,
threads) and every score the task returned. The book's results page reads those files with
:func:`load_records` and shows them with :func:`benchmark_table`, so no measured number is ever
typed by hand. A task module may define ``table(records) -> pandas.DataFrame`` to choose its
columns; otherwise every scalar field is shown.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path

import torch

__all__ = ["RESULTS_DIR", "append_record", "benchmark_table", "default_record_path", "load_records",
           "run_context"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def default_record_path(task: str) -> Path:
    return RESULTS_DIR / "bench" / f"{task}.jsonl"


def _git_commit() -> str | None:
    """The commit the library ran at, with ``+dirty`` when ``gmcourse/`` had uncommitted changes;
    None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gmcourse"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def run_context(argv: list[str], device: str | None = None) -> dict:
    """Where and how a benchmark ran: enough to reproduce it and to judge its numbers."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else _cpu_name()
    return {
        "command": "python -m gmcourse.bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "device": device,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        # other processes competing for the cores slow a wall-clock benchmark down
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line; the line is written whole (one write, then fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def load_records(path: str | os.PathLike) -> list[dict]:
    """The records of one results file, oldest first; a clear error names a corrupt line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}; record runs with `python -m gmcourse.bench TASK --record`")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON record ({err.msg}); "
                             f"remove or fix that line") from None
        if not isinstance(record, dict) or "task" not in record:
            raise ValueError(f"{path}, line {number}: expected a JSON object with a 'task' field")
        records.append(record)
    return records


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def benchmark_table(records: list[dict]):
    """A pandas DataFrame of ``records`` (all of one task), as the task module chooses to show them."""
    import pandas as pd

    from gmcourse.bench import get_task

    if not records:
        raise ValueError("no records to tabulate")
    tasks = {record["task"] for record in records}
    if len(tasks) != 1:
        raise ValueError(f"benchmark_table takes the records of one task; got {sorted(tasks)}")
    module = get_task(tasks.pop())
    frame = module.table(records) if hasattr(module, "table") else pd.DataFrame([_flatten(r) for r in records])
    if not {"load_average_1min", "load (1 min)"} & set(frame.columns):  # a loaded machine takes fewer steps
        frame["load (1 min)"] = [record.get("load_average_1min") for record in records]
    return frame
