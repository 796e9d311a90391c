"""The scores as a CSV file and the summary printed for the instructor."""

from __future__ import annotations

import csv
import io

from gmcourse.grading.results import GradingReport
from gmcourse.utils import write_text_atomic


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _one_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""


def write_csv(report: GradingReport) -> None:
    """One row per submission graded so far: student, score, max_score, status, one column per test
    cell, seconds, peak_mb, reason (why the grader stopped a kernel or could not grade), notes (flags).
    Written atomically (a temporary file, then a rename): the old file stays whole until the new one is."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["student", "score", "max_score", "status", *report.parts, "seconds", "peak_mb", "reason", "notes"])
    for r in report.results:
        if r.score is None and r.problem is None:
            continue  # not run yet
        writer.writerow([r.student, _number(r.score), _number(r.max_score), r.status,
                         *(_number(r.parts.get(p)) for p in report.parts), _number(r.seconds), _number(r.peak_mb),
                         _one_line(r.problem or r.reason), "; ".join(r.flags)])
    write_text_atomic(report.csv_path, buffer.getvalue())


def format_summary(report: GradingReport) -> str:
    """A line per student (score, status, seconds, peak memory, reason), the flags, and the totals."""
    width = max([len("student")] + [len(r.student) for r in report.results])
    lines = [f"{'student':<{width}}  {'score':>13}  {'status':<21}  {'time':>7}  {'memory':>8}  reason",
             f"{'-' * width}  {'-' * 13}  {'-' * 21}  {'-' * 7}  {'-' * 8}  ------"]
    for r in report.results:
        score = "-" if r.score is None else f"{_number(r.score)} / {_number(report.max_score)}"
        seconds = "earlier" if r.resumed else "-" if r.seconds is None else f"{r.seconds:.1f} s"
        memory = "-" if r.peak_mb is None else f"{r.peak_mb:.0f} MB"
        lines.append(f"{r.student:<{width}}  {score:>13}  {r.status:<21}  {seconds:>7}  {memory:>8}  "
                     f"{_one_line(r.problem or r.reason)}")
    flagged = [r for r in report.results if r.flags and r.score is not None]
    if flagged:
        lines.append("\nFlagged for a look (graded normally):")
        lines += [f"  {r.student}: {'; '.join(r.flags)}" for r in flagged]
    graded = [r for r in report.results if r.score is not None]
    mean = f"{sum(r.score for r in graded) / len(graded):.2f}" if graded else "-"
    resumed = sum(r.resumed for r in report.results)
    sandbox = "each kernel in a bubblewrap sandbox" if report.sandbox == "bubblewrap" else \
        "NO SANDBOX (--no-sandbox: kernels ran unisolated)"
    lines.append(f"\n{report.assignment}: graded {len(graded)} of {len(report.results)} submissions"
                 f"{f' ({resumed} from an earlier run, unchanged)' if resumed else ''}, mean score "
                 f"{mean} / {_number(report.max_score)}; {len(report.failures)} with problems. "
                 f"Ran on {report.scheduler}, {sandbox}. Scores: {report.csv_path}")
    return "\n".join(lines)
