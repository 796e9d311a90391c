"""Command line of the benchmarks: ``python -m gmcourse.bench TASK --seconds S --seed K``
(and ``python -m gmcourse.bench zoo ...``, see :mod:`gmcourse.bench.zoo`).

``--record`` appends the run, with the command that made it and where it ran, to
``results/bench/<task>.jsonl`` (or the file given); the book's results page renders those files.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from gmcourse.bench import TASKS, default_seconds, get_task, parse_overrides
from gmcourse.results import append_record, default_record_path, run_context


def build_parser() -> argparse.ArgumentParser:
    """The command line of one task; ``--seconds`` defaults to :func:`gmcourse.bench.default_seconds`
    (60 s, or 300 s with ``GMCOURSE_SCALE=full``), read when the parser is built."""
    parser = argparse.ArgumentParser(
        prog="python -m gmcourse.bench",
        description="Train a model within a wall-clock budget and print its scores as one JSON line.",
    )
    parser.add_argument("task", choices=sorted(TASKS), help="which benchmark to run")
    parser.add_argument("--seconds", type=float, default=default_seconds(),
                        help="training budget in wall-clock seconds (default: %(default)g, from GMCOURSE_SCALE)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random number the task draws")
    parser.add_argument("--save", metavar="PATH", help="torch.save the trained model to PATH")
    parser.add_argument("--peer", metavar="LIBRARY", help="also train a peer library's model on the same budget")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                        help="change one setting of the task's configuration (repeatable), e.g. --set lr=0.01")
    parser.add_argument("--record", nargs="?", const="", metavar="PATH",
                        help="append the scores and the run's context as one JSON line to PATH "
                             "(default: results/bench/<task>.jsonl)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["zoo"]:  # python -m gmcourse.bench zoo ...: every task, several seeds, one file
        from gmcourse.bench.zoo import main as zoo_main

        return zoo_main(args_in[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    torch.set_flush_denormal(True)  # denormal floats can slow CPU training many times over
    task = get_task(args.task)
    try:
        overrides = parse_overrides(args.overrides)
        result = task.run(
            seconds=args.seconds,
            seed=args.seed,
            save=args.save,
            peer=args.peer,
            device=args.device,
            progress=not args.no_progress,
            **({"overrides": overrides} if overrides else {}),
        )
    except ValueError as err:  # bad option for this task (e.g. an unknown peer): say so, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    line = {"task": args.task, "seed": args.seed, **({"overrides": overrides} if overrides else {}), **result}
    print(json.dumps(line), flush=True)
    if args.record is not None:
        path = args.record or default_record_path(args.task)
        argv = sys.argv[1:] if argv is None else argv
        append_record(path, {**run_context(argv, args.device), "seconds_budget": args.seconds, **line})
        print(f"recorded in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
