"""The command line: ``python -m gmcourse.grading ASSIGNMENT SUBMISSIONS [options]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gmcourse.grading import __doc__ as DESCRIPTION
from gmcourse.grading.report import format_summary
from gmcourse.grading.results import COURSE_ROOT, GradingError
from gmcourse.grading.run import grade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmcourse.grading", description=DESCRIPTION.split("\n\n")[0])
    parser.add_argument("assignment", help="assignment name, a folder of solutions/ (e.g. A1_max_likelihood)")
    parser.add_argument("submissions", type=Path, help="submitted/ in nbgrader's layout, or a folder of <student>.ipynb")
    parser.add_argument("--workdir", type=Path, help="grading work dir, rebuilt on every run (default _grading/ASSIGNMENT)")
    parser.add_argument("--csv", type=Path, help="where to write the scores (default WORKDIR/grades.csv)")
    parser.add_argument("--no-feedback", action="store_true", help="skip the HTML feedback files")
    parser.add_argument("--course-root", type=Path, default=COURSE_ROOT, help="folder with solutions/ and nbgrader_config.py")
    args = parser.parse_args(argv)
    try:
        report = grade(args.assignment, args.submissions, args.workdir, args.csv, feedback=not args.no_feedback,
                       course_root=args.course_root)
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(report))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for title, group in (("Could not grade", [r for r in report.failures if r.score is None]),
                         ("Graded, but with a problem,", [r for r in report.failures if r.score is not None])):
        if group:
            print(f"\n{title} {len(group)} submission(s) of {report.assignment}:", file=sys.stderr)
            for r in group:
                print(f"  {r.student} ({r.origin}): {r.problem}", file=sys.stderr)
    return 1 if report.failures else 0
