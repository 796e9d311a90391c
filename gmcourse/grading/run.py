"""Steps 2-5: the student version, the copies of the submissions, nbgrader's autograde and feedback,
and the scores read back from the gradebook."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

from gmcourse.grading.collect import assignment_notebooks, collect_submissions
from gmcourse.grading.flags import notebook_signature, submission_flags
from gmcourse.grading.report import write_csv
from gmcourse.grading.results import (CONFIG_FILE, COURSE_ROOT, LOG_TAIL_LINES, WORKDIR_MARKER, GradingError,
                                      GradingReport, StudentResult)


@contextlib.contextmanager
def _venv_on_path():
    """nbgrader runs the ``alembic`` command to create a gradebook: use this interpreter's.

    Also silences SQLAlchemy's warnings about nbgrader's own session handling, which say
    nothing about the submissions.
    """
    from sqlalchemy.exc import SAWarning

    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)
            yield
    finally:
        os.environ["PATH"] = old


def _nbgrader_api(course_root: Path, workdir: Path, no_database: bool = False):
    """An in-process nbgrader API whose course directory is ``workdir`` (one import, many runs)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.apps import NbGraderAPI
    from nbgrader.preprocessors import GetGrades

    from gmcourse.grading.feedback import RedactHiddenTests
    from traitlets.config.loader import PyFileConfigLoader

    if not (Path(course_root) / CONFIG_FILE).is_file():
        raise GradingError(f"{Path(course_root) / CONFIG_FILE} not found")
    config = PyFileConfigLoader(CONFIG_FILE, path=str(course_root)).load_config()
    directories = config.CourseDirectory
    directories.root = str(workdir)
    for step in ("source", "release", "submitted", "autograded", "feedback", "solution"):
        setattr(directories, f"{step}_directory", step)
    directories.db_url = f"sqlite:///{workdir / 'gradebook.db'}"
    # feedback for students: hidden tests shown as their one-sentence message, never as code
    config.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, RedactHiddenTests]
    if no_database:
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
    logger = logging.getLogger("gmcourse.grading.nbgrader")
    logger.propagate = False  # nbgrader's chatter goes to the captured log, not the terminal
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return NbGraderAPI(config=config, log=logger)


_LOG_ERROR = re.compile(r"\[(ERROR|CRITICAL)\]|[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(:|$)")


def _tail(result: dict) -> str:
    """The informative end of nbgrader's log: its error lines (exceptions and [ERROR]), else the last lines."""
    lines = [line.strip() for line in (result.get("log", "") + "\n" + result.get("error", "")).splitlines()]
    errors = [line for line in lines if _LOG_ERROR.match(line)]
    return "\n".join("    " + line for line in (errors or [line for line in lines if line])[-LOG_TAIL_LINES:])


def generate_student_version(assignment: str, workdir: Path, course_root: Path = COURSE_ROOT,
                             database: bool = True) -> Path:
    """Run ``nbgrader generate_assignment`` on a copy of ``solutions/<assignment>`` in ``workdir``.

    Returns ``workdir/release/<assignment>``; with ``database=True`` the assignment is also
    registered in ``workdir/gradebook.db``.
    """
    workdir = Path(workdir).resolve()
    shutil.copytree(Path(course_root) / "solutions" / assignment, workdir / "source" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"), dirs_exist_ok=True)
    api = _nbgrader_api(course_root, workdir, no_database=not database)
    with _venv_on_path():
        result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise GradingError(f"nbgrader generate_assignment {assignment} failed:\n{_tail(result)}")
    return workdir / "release" / assignment


def restore_deleted_cells(submitted, released) -> list[str]:
    """Put back every cell of the released notebook that nbgrader tracks (a ``grade_id``: tests,
    answers, locked text) and that the submission deleted, after the nearest tracked cell that
    precedes it in the release; nbgrader then restores its locked contents from the gradebook, so a
    deleted test is graded like an untouched one. Returns the grade_ids put back."""
    def grade_id(cell):
        return cell.metadata.get("nbgrader", {}).get("grade_id")

    present = {grade_id(c) for c in submitted.cells} - {None}
    restored, anchor = [], None  # anchor: the grade_id of the last tracked release cell seen
    for cell in released.cells:
        gid = grade_id(cell)
        if gid is None:
            continue
        if gid not in present:
            ids = [grade_id(c) for c in submitted.cells]
            position = ids.index(anchor) + 1 if anchor is not None and anchor in ids else 0
            submitted.cells.insert(position, copy.deepcopy(cell))
            present.add(gid)
            restored.append(gid)
        anchor = gid
    return restored


def _prepare_workdir(workdir: Path, submissions: Path) -> None:
    for inner, outer in ((workdir, submissions), (submissions, workdir)):
        if inner == outer or outer in inner.parents:
            raise GradingError(f"the work dir {workdir} and the submissions {submissions} must not overlap")
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / WORKDIR_MARKER).exists():
        raise GradingError(f"refusing to use --workdir {workdir}: it is not empty and was not made by gmcourse.grading")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / WORKDIR_MARKER).write_text("made by python -m gmcourse.grading; deleted on every run\n")


def grade(assignment: str, submissions: Path, workdir: Path | None = None, csv_path: Path | None = None,
          feedback: bool = True, course_root: Path = COURSE_ROOT, show_progress: bool | None = None) -> GradingReport:
    """Grade every submission of ``assignment`` in ``submissions``; see the module docstring."""
    course_root = Path(course_root).resolve()
    notebooks = assignment_notebooks(assignment, course_root)
    submissions = Path(submissions).resolve()
    found = collect_submissions(submissions, assignment, notebooks)
    workdir = Path(workdir if workdir is not None else course_root / "_grading" / assignment).resolve()
    csv_path = Path(csv_path).resolve() if csv_path is not None else workdir / "grades.csv"
    _prepare_workdir(workdir, submissions)

    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    from gmcourse.utils import progress

    release = generate_student_version(assignment, workdir, course_root)                      # 1.
    released = {n: nbformat.read(release / f"{n}.ipynb", as_version=4) for n in notebooks}
    parts = [c.metadata["nbgrader"]["grade_id"] for n in notebooks for c in released[n].cells
             if c.metadata.get("nbgrader", {}).get("grade")]
    warnings_ = []
    for name, nb in released.items():
        committed = course_root / "exercises" / assignment / f"{name}.ipynb"
        if not committed.is_file() or notebook_signature(nbformat.read(committed, as_version=4)) != notebook_signature(nb):
            warnings_.append(f"{committed} is not the student version of solutions/{assignment}: "
                             "students may have worked on another version (run `make exercises`)")
    results = {s.student: StudentResult(s.student, s.origin, problem=s.problem) for s in found}
    for submission in found:                                                                  # 2.
        if submission.problem is None:
            target = workdir / "submitted" / submission.student / assignment
            if submission.origin.is_dir():
                shutil.copytree(submission.origin, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))
            else:
                target.mkdir(parents=True)
                shutil.copyfile(submission.origin, target / f"{notebooks[0]}.ipynb")
            for name in notebooks:
                submitted = nbformat.read(target / f"{name}.ipynb", as_version=4)
                results[submission.student].flags += submission_flags(submitted, released[name])
                if restore_deleted_cells(submitted, released[name]):  # nbgrader grades only cells it finds
                    nbformat.write(submitted, target / f"{name}.ipynb")

    api = _nbgrader_api(course_root, workdir)
    gradable = [s.student for s in found if s.problem is None]
    bar = progress(gradable, desc=f"autograde {assignment}", unit="student",
                   disable=None if show_progress is None else not show_progress)
    with _venv_on_path():
        for student in bar:                                                                   # 3.
            bar.set_postfix_str(student)
            outcome = api.autograde(assignment, student, force=True, create=True)
            if not outcome["success"]:
                results[student].problem = f"autograde failed; last lines of nbgrader's log:\n{_tail(outcome)}"
        autograded = [s for s in gradable if results[s].problem is None]
        if feedback and autograded:                                                           # 4.
            api.generate_feedback(assignment, force=True)  # all at once; a failure is retried alone below
            for student in autograded:
                files = [workdir / "feedback" / student / assignment / f"{n}.html" for n in notebooks]
                if not all(f.is_file() for f in files):
                    outcome = api.generate_feedback(assignment, student, force=True)
                    if not all(f.is_file() for f in files):
                        results[student].problem = f"feedback failed; last lines of nbgrader's log:\n{_tail(outcome)}"
                results[student].feedback = [f for f in files if f.is_file()]

        with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gradebook:                  # 5.
            max_score = float(gradebook.find_assignment(assignment).max_score)
            for student in autograded:
                result = results[student]
                try:
                    submitted = gradebook.find_submission(assignment, student)
                except MissingEntry:
                    result.problem = "autograde left no record in the gradebook"
                    continue
                result.score = float(submitted.score)
                result.parts = {g.name: float(g.score) for nb in submitted.notebooks for g in nb.grades}
                if any(g.needs_manual_grade for nb in submitted.notebooks for g in nb.grades):
                    result.flags.append("some cells need manual grading")
    for result in results.values():
        result.max_score = max_score
    report = GradingReport(assignment, max_score, parts, list(results.values()), workdir, csv_path, warnings_)
    write_csv(report)
    return report
