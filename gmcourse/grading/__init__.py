"""The instructor's grading pipeline: one command from a folder of submissions to scores.

    python -m gmcourse.grading ASSIGNMENT SUBMISSIONS [--workdir DIR] [--csv PATH] [--no-feedback]
                               [--workers N | --scheduler tcp://HOST:PORT] [--regrade] [--no-sandbox]

``SUBMISSIONS`` is either nbgrader's layout ``submitted/<student>/<ASSIGNMENT>/<notebook>.ipynb``
(give the ``submitted`` folder or its parent) or a plain folder of ``<student>.ipynb`` files.
The command

1. generates the student version from ``solutions/ASSIGNMENT`` (``nbgrader generate_assignment``),
   which registers the assignment, its test cells and their points in the work dir's gradebook
   (and warns if the committed ``exercises/ASSIGNMENT`` differs from it);
2. copies each submission into the work dir (the instructor's folder is only read), puts back any
   tracked cell a student deleted, flags answers that look like gaming, and restores every locked
   cell (test code, hidden tests, points) from the gradebook, as nbgrader's autograde would;
3. runs each notebook in a fresh kernel inside a sandbox (:mod:`~gmcourse.grading.sandbox`,
   :mod:`~gmcourse.grading.execute`) on a pool of local workers or a Dask cluster
   (:mod:`~gmcourse.grading.schedule`); a kernel that dies or runs out of time keeps the points of
   the tests that ran and gets a one-line reason;
4. records each result as soon as it arrives (:mod:`~gmcourse.grading.record`): nbgrader's
   autograde on the sandbox's outputs, the student's HTML feedback, in which a hidden test shows only
   its one-sentence message (:mod:`~gmcourse.grading.feedback`), a record file, and the CSV
   (:mod:`~gmcourse.grading.report`);
5. prints a summary (a line per student: score, status, time, peak memory, reason; the flags) and
6. exits with 0 (all graded), 3 (all graded, some with a problem), 1 (some could not be graded:
   invalid JSON, wrong or missing notebook, nbgrader's error lines) or 2 (could not start).

The work dir (default ``_grading/ASSIGNMENT``, ignored by git) is an nbgrader course directory of
its own (``source/ release/ submitted/ executed/ autograded/ feedback/ records/ gradebook.db
grades.csv``). It is kept between runs: a rerun grades only submissions whose content hash has no
record yet (``--regrade``: all), and starts from scratch when the instructor's notebooks or the
nbgrader config changed. Every nbgrader setting comes from the repository's ``nbgrader_config.py``;
only paths are changed.

The package follows the data: :mod:`~gmcourse.grading.collect` (find the submissions) →
:mod:`~gmcourse.grading.run` (prepare the jobs, drive the rest) → :mod:`~gmcourse.grading.schedule`
and :mod:`~gmcourse.grading.execute` (run one job in its :mod:`~gmcourse.grading.sandbox`) →
:mod:`~gmcourse.grading.record` (gradebook, feedback, record) → :mod:`~gmcourse.grading.report`
(CSV and summary) → :mod:`~gmcourse.grading.cli`; :mod:`~gmcourse.grading.flags` holds the hints
about gaming and :mod:`~gmcourse.grading.results` the records they pass along.
"""

from __future__ import annotations

import sys

# nbformat validates notebooks with jsonschema, which on import also loads the optional
# `rfc3987_syntax` to check the "iri" string format: that module compiles an Earley grammar at
# import, 3-8 s in every process (the grader, each of its workers), and no notebook schema uses
# that format. Marking it absent makes jsonschema skip that one check, as it does wherever the
# package is not installed. (Only when nothing has imported it yet.)
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from gmcourse.grading.collect import assignment_notebooks, collect_submissions
from gmcourse.grading.flags import gaming_flags, notebook_signature
from gmcourse.grading.report import format_summary, write_csv
from gmcourse.grading.results import GradingError, GradingReport, StudentResult
from gmcourse.grading.run import generate_student_version, grade
from gmcourse.grading.cli import main  # noqa: E402  (last: it imports this package's docstring)

__all__ = ["GradingError", "StudentResult", "GradingReport", "assignment_notebooks",
           "collect_submissions", "generate_student_version", "notebook_signature",
           "gaming_flags", "grade", "format_summary", "write_csv", "main"]
