"""Step 6: the scores as a CSV file and the summary printed for the instructor."""

from __future__ import annotations

import csv
import io

from gmcourse.grading.results import GradingReport
from gmcourse.utils import write_text_atomic


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def write_csv(report: GradingReport) -> None:
    """One row per submission: student, score, max_score, status, one column per test cell, notes.
    Written atomically (a temporary file, then a rename): the old file stays whole until the new one is."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["student", "score", "max_score", "status", *report.parts, "notes"])
    for r in report.results:
        status = "not graded" if r.score is None else "graded"
        notes = r.problem.splitlines()[0] if r.problem else "; ".join(r.flags)
        writer.writerow([r.student, _number(r.score), _number(r.max_score), status,
                         *(_number(r.parts.get(p)) for p in report.parts), notes])
    write_text_atomic(report.csv_path, buffer.getvalue())


def format_summary(report: GradingReport) -> str:
    width = max([len("student")] + [len(r.student) for r in report.results])
    lines = [f"{'student':<{width}}  {'score':>13}  status", f"{'-' * width}  {'-' * 13}  ------"]
    for r in report.results:
        score = "-" if r.score is None else f"{_number(r.score)} / {_number(report.max_score)}"
        status = "NOT GRADED" if r.score is None else "PROBLEM" if r.problem else "ok, flagged" if r.flags else "ok"
        lines.append(f"{r.student:<{width}}  {score:>13}  {status}")
    flagged = [r for r in report.results if r.flags and r.score is not None]
    if flagged:
        lines.append("\nFlagged for a look (graded normally):")
        lines += [f"  {r.student}: {'; '.join(r.flags)}" for r in flagged]
    graded = [r for r in report.results if r.score is not None]
    mean = f"{sum(r.score for r in graded) / len(graded):.2f}" if graded else "-"
    lines.append(f"\n{report.assignment}: graded {len(graded)} of {len(report.results)} submissions, mean score "
                 f"{mean} / {_number(report.max_score)}; {len(report.failures)} with problems. "
                 f"Scores: {report.csv_path}")
    return "\n".join(lines)
