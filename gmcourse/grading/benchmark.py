"""Throughput of the grader: the same submissions graded with 1 worker and with N, printed side by side.

    python -m gmcourse.grading.benchmark [--assignment A2_ising_mcmc] [--students 20] [--workers 2]

Builds ``--students`` submissions of the assignment (each the instructor's answers, with a comment
naming the student so that every notebook is distinct), grades them with ``--workers 1`` and then
with ``--workers N`` (each from a fresh work dir, each kernel in its sandbox, no feedback), and
prints both wall times, the throughput in submissions per minute, the speed-up and whether every
student got the same score in both runs. The work happens in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import tempfile
import time
from pathlib import Path

from gmcourse.grading.results import COURSE_ROOT

DELIMITERS = {"### BEGIN SOLUTION", "### END SOLUTION"}


def answered_student_version(assignment: str, course_root: Path = COURSE_ROOT):
    """The committed student version with every answer cell filled in from the instructor's notebook."""
    import nbformat

    def grade_id(cell):
        return cell.metadata.get("nbgrader", {}).get("grade_id")

    solution = nbformat.read(course_root / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {grade_id(c): "\n".join(line for line in c.source.splitlines() if line.strip() not in DELIMITERS)
               for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(course_root / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers[grade_id(cell)]
    return nb


def _grade(assignment: str, inbox: Path, workdir: Path, workers: int) -> tuple[float, dict[str, float], int]:
    from gmcourse.grading.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main([assignment, str(inbox), "--workdir", str(workdir), "--workers", str(workers), "--no-feedback"])
    seconds = time.perf_counter() - start
    import csv

    with open(workdir / "grades.csv", newline="") as file:
        scores = {row["student"]: float(row["score"]) if row["score"] else float("nan") for row in csv.DictReader(file)}
    return seconds, scores, code


def main(argv: list[str] | None = None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(prog="python -m gmcourse.grading.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignment", default="A2_ising_mcmc")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    base = answered_student_version(args.assignment)
    with tempfile.TemporaryDirectory(prefix="gmcourse-grading-benchmark-") as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        for i in range(args.students):
            nb = copy.deepcopy(base)
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"Submission of student{i:03d}"))
            nbformat.write(nb, inbox / f"student{i:03d}.ipynb")
        print(f"{args.assignment}: {args.students} submissions, {os.cpu_count()} cores", flush=True)
        runs = {}
        for workers in (1, args.workers):
            seconds, scores, code = _grade(args.assignment, inbox, Path(tmp) / f"work{workers}", workers)
            runs[workers] = (seconds, scores)
            print(f"  --workers {workers}: {seconds:7.1f} s, {60 * args.students / seconds:5.2f} submissions/min, "
                  f"mean score {sum(scores.values()) / len(scores):.2f}, exit status {code}", flush=True)
    (serial, serial_scores), (parallel, parallel_scores) = runs[1], runs[args.workers]
    same = serial_scores == parallel_scores
    print(f"  speed-up with {args.workers} workers: {serial / parallel:.2f}x; same scores in both runs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
