"""The command line: ``python -m gmcourse.grading ASSIGNMENT SUBMISSIONS [options]``.

Exit status: 0 every submission graded; 1 some could not be graded (invalid notebook, or the
grader failed on it); 3 all graded, some with a problem (a kernel that died, timed out or ran out of
memory: the points of the tests that ran are kept); 2 nothing was graded (bad arguments, no
submissions, no sandbox).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gmcourse.grading import __doc__ as DESCRIPTION
from gmcourse.grading.report import format_summary
from gmcourse.grading.results import COURSE_ROOT, STATUS_NOT_GRADED, STATUS_PROBLEM, GradingError
from gmcourse.grading.run import grade
from gmcourse.grading.sandbox import Limits

EXIT_GRADED, EXIT_NOT_GRADED, EXIT_NOT_STARTED, EXIT_PROBLEM = 0, 1, 2, 3


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m gmcourse.grading", description=DESCRIPTION.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("assignment", help="assignment name, a folder of solutions/ (e.g. A1_max_likelihood)")
    parser.add_argument("submissions", type=Path, help="submitted/ in nbgrader's layout, or a folder of <student>.ipynb")
    parser.add_argument("--workdir", type=Path, help="grading work dir, kept between runs (default _grading/ASSIGNMENT)")
    parser.add_argument("--csv", type=Path, help="where to write the scores (default WORKDIR/grades.csv)")
    parser.add_argument("--no-feedback", action="store_true", help="skip the HTML feedback files")
    parser.add_argument("--regrade", action="store_true",
                        help="grade every submission again, even those already graded in this work dir")
    parser.add_argument("--workers", type=_positive, default=None,
                        help=f"submissions graded at once on this machine (default: the number of cores, {os.cpu_count()})")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="grade on a Dask distributed cluster instead (see gmcourse.grading.schedule)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run the kernels without isolation (trusted notebooks only: a kernel could read the "
                             "solutions and the gradebook)")
    for name, unit in (("memory_mb", "MB of memory"), ("cpu_seconds", "CPU seconds"), ("wall_seconds", "seconds of wall time"),
                       ("processes", "processes"), ("disk_mb", "MB of files"),
                       ("threads", "torch and BLAS threads (more busy threads than cores slow every kernel down)")):
        parser.add_argument(f"--{name.replace('_', '-')}", type=_positive, default=getattr(defaults, name),
                            help=f"cap per notebook: {unit} (default %(default)s)")
    parser.add_argument("--course-root", type=Path, default=COURSE_ROOT, help="folder with solutions/ and nbgrader_config.py")
    args = parser.parse_args(argv)
    limits = Limits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds, wall_seconds=args.wall_seconds,
                    processes=args.processes, disk_mb=args.disk_mb, threads=args.threads)
    try:
        report = grade(args.assignment, args.submissions, args.workdir, args.csv, feedback=not args.no_feedback,
                       course_root=args.course_root, workers=args.workers, scheduler=args.scheduler,
                       sandbox="none" if args.no_sandbox else "bubblewrap", limits=limits, regrade=args.regrade)
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOT_STARTED
    print(format_summary(report))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for title, status in (("Could not grade", STATUS_NOT_GRADED), ("Graded, but with a problem,", STATUS_PROBLEM)):
        group = [r for r in report.results if r.status == status]
        if group:
            print(f"\n{title} {len(group)} submission(s) of {report.assignment}:", file=sys.stderr)
            for r in group:
                print(f"  {r.student} ({r.origin}): {r.problem or r.reason}", file=sys.stderr)
    if any(r.status == STATUS_NOT_GRADED for r in report.results):
        return EXIT_NOT_GRADED
    return EXIT_PROBLEM if report.failures else EXIT_GRADED
