"""The instructor's grading pipeline: one command from a folder of submissions to scores.

    python -m gmcourse.grading ASSIGNMENT SUBMISSIONS [--workdir DIR] [--csv PATH] [--no-feedback]

``SUBMISSIONS`` is either nbgrader's layout ``submitted/<student>/<ASSIGNMENT>/<notebook>.ipynb``
(give the ``submitted`` folder or its parent) or a plain folder of ``<student>.ipynb`` files.
The command

1. generates the student version from ``solutions/ASSIGNMENT`` (``nbgrader generate_assignment``),
   which registers the assignment, its test cells and their points in a fresh gradebook
   (and warns if the committed ``exercises/ASSIGNMENT`` differs from it);
2. copies the submissions into the work dir (the instructor's folder is only read) and puts back
   any tracked cell a student deleted (a deleted test is graded like an untouched one);
3. autogrades each student separately, so one broken notebook cannot stop the others;
   nbgrader restores every locked cell (test code, hidden tests, points) from the gradebook first;
4. writes one HTML feedback file per student, in which a hidden test shows only its one-sentence
   message (:mod:`gmcourse.grading.feedback`);
5. exports the scores (total and per test cell) from the gradebook to a CSV file;
6. prints a summary, flags submissions that look like they game the grader, and
7. exits with status 1 after naming each submission it could not grade and why (invalid JSON,
   wrong or missing notebook, nbgrader's error lines), 0 if all went well, and 2 if it could not
   start (no such assignment, no submissions found).

The work dir (default ``_grading/ASSIGNMENT``, ignored by git) is an nbgrader course directory of
its own (``source/ release/ submitted/ autograded/ feedback/ gradebook.db grades.csv``), rebuilt
from scratch on every run: grading is a pure function of the solutions and the submissions.
Every nbgrader setting comes from the repository's ``nbgrader_config.py``; only paths are changed.

The package follows the data: :mod:`~gmcourse.grading.collect` (find the submissions) →
:mod:`~gmcourse.grading.run` (student version, autograde, feedback, scores) →
:mod:`~gmcourse.grading.feedback` (what a student may see) → :mod:`~gmcourse.grading.report` (CSV and
summary) → :mod:`~gmcourse.grading.cli`; :mod:`~gmcourse.grading.flags` holds the hints about gaming
and :mod:`~gmcourse.grading.results` the records they pass along.
"""

from __future__ import annotations

from gmcourse.grading.collect import assignment_notebooks, collect_submissions
from gmcourse.grading.flags import gaming_flags, notebook_signature
from gmcourse.grading.report import format_summary, write_csv
from gmcourse.grading.results import GradingError, GradingReport, StudentResult
from gmcourse.grading.run import generate_student_version, grade
from gmcourse.grading.cli import main  # noqa: E402  (last: it imports this package's docstring)

__all__ = ["GradingError", "StudentResult", "GradingReport", "assignment_notebooks",
           "collect_submissions", "generate_student_version", "notebook_signature",
           "gaming_flags", "grade", "format_summary", "write_csv", "main"]
