"""The command's steps in order: the student version, each submission copied, checked and turned into
a job, the jobs sent to the scheduler (each runs in its sandbox), and each result recorded as it
arrives (gradebook, feedback, record, CSV)."""

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
from gmcourse.grading.sandbox import SANDBOXES, Limits, SandboxUnavailable
from gmcourse.grading.schedule import DaskCluster, LocalPool


def alembic_head() -> str:
    """The schema version of nbgrader's gradebook: the head revision of its own migration scripts.

    nbgrader finds it by running the ``alembic heads`` command whenever it creates a gradebook, a new
    Python process that imports SQLAlchemy and alembic (seconds per grading run); alembic's API reads
    the same scripts in-process in milliseconds. tests/test_grading.py checks both give one answer.
    """
    import nbgrader
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()


@contextlib.contextmanager
def _venv_on_path():
    """nbgrader creates gradebooks: give it the schema version in-process (:func:`alembic_head`), and
    this interpreter's ``alembic`` on PATH for any other call of the command.

    Also silences SQLAlchemy's warnings about nbgrader's own session handling, which say
    nothing about the submissions.
    """
    import nbgrader.api
    from sqlalchemy.exc import SAWarning

    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    asks_alembic, head = nbgrader.api.get_alembic_version, alembic_head()
    nbgrader.api.get_alembic_version = lambda: head
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)
            yield
    finally:
        os.environ["PATH"] = old
        nbgrader.api.get_alembic_version = asks_alembic


class SchemaCheckedOnce:
    """Stands in for the ``jsonschema`` module inside nbgrader's cell-metadata validator.

    nbgrader calls ``jsonschema.validate(metadata, schema)`` for every cell of every notebook it
    converts, and ``validate`` first checks the schema itself against its meta-schema: that check
    was six of the seven seconds that grading 14 submissions spent validating metadata. The schema
    is nbgrader's own file, so it is checked once here, and every cell is then validated by the same
    validator, raising the same error ``jsonschema.validate`` would."""

    def __init__(self):
        self._validators = {}

    def validate(self, instance, schema) -> None:
        import jsonschema

        schema_seen, validator = self._validators.get(id(schema), (None, None))
        if schema_seen is not schema:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            validator = cls(schema)
            self._validators[id(schema)] = (schema, validator)
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
        if error is not None:
            raise error


def _nbgrader_api(course_root: Path, workdir: Path, no_database: bool = False):
    """An in-process nbgrader API whose course directory is ``workdir`` (one import, many runs)."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.apps import NbGraderAPI
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, GetGrades, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)

    import nbgrader.nbgraderformat.common as nbgrader_metadata

    from gmcourse.grading.record import InjectExecuted

    from gmcourse.grading.feedback import RedactHiddenTests
    from traitlets.config.loader import PyFileConfigLoader

    if not isinstance(nbgrader_metadata.jsonschema, SchemaCheckedOnce):
        nbgrader_metadata.jsonschema = SchemaCheckedOnce()
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
    # autograde: the outputs come from the sandboxed run of the same cells, never from a kernel of nbgrader's
    config.Autograde.autograde_preprocessors = [InjectExecuted, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                                SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    config.InjectExecuted.executed_directory = str(workdir / "executed")
    if no_database:
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
    return NbGraderAPI(config=config, log=_quiet_logger())


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("gmcourse.grading.nbgrader")
    logger.propagate = False  # nbgrader's chatter goes to the captured log, not the terminal
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


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


def drop_unknown_cell_ids(submitted, released) -> list[str]:
    """Cells that claim an nbgrader id the release does not have (a renamed test cell, a made-up
    one) lose their nbgrader metadata: they run as ordinary cells and score nothing. Returns the ids."""
    known = {c.metadata.get("nbgrader", {}).get("grade_id") for c in released.cells} - {None}
    dropped = []
    for cell in submitted.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if "nbgrader" in cell.metadata and grade_id not in known:
            del cell.metadata["nbgrader"]
            dropped.append(str(grade_id))
    return dropped


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


def allowed_modules(assignment: str, course_root: Path = COURSE_ROOT) -> list[str]:
    """The gmcourse modules an assignment's kernels may import (its data sets and what its tests use),
    declared in the instructor notebook's metadata ``gmcourse.allowed_modules``; the sandbox holds
    only these (and what they import)."""
    import nbformat

    declared = None
    for path in sorted((Path(course_root) / "solutions" / assignment).glob("*.ipynb")):
        modules = nbformat.read(path, as_version=4).metadata.get("gmcourse", {}).get("allowed_modules")
        if modules is None:
            raise GradingError(f"{path} does not declare metadata gmcourse.allowed_modules (the gmcourse modules its "
                               "students and tests may import; [] for none)")
        declared = sorted(set(declared or []) | set(modules))
    return declared or []


def _prepare_workdir(workdir: Path, submissions: Path, course_hash: str) -> bool:
    """Make ``workdir`` ready; True if it holds an earlier run for the same course files (resume)."""
    for inner, outer in ((workdir, submissions), (submissions, workdir)):
        if inner == outer or outer in inner.parents:
            raise GradingError(f"the work dir {workdir} and the submissions {submissions} must not overlap")
    marker = workdir / WORKDIR_MARKER
    if workdir.exists() and any(workdir.iterdir()) and not marker.exists():
        raise GradingError(f"refusing to use --workdir {workdir}: it is not empty and was not made by gmcourse.grading")
    if marker.exists() and marker.read_text().splitlines()[-1:] == [course_hash] and (workdir / "gradebook.db").exists():
        return True
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return False


def _sanitize(nb, config, assignment: str, student: str, notebook: str, db_url: str):
    """What nbgrader's autograde does before executing: clear outputs, restore every locked cell (test
    code, hidden tests, points) and the kernel spec from the gradebook. Done here so that the job sent
    to a worker is exactly what gets graded (:class:`~gmcourse.grading.record.InjectExecuted` checks)."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells, OverwriteKernelspec

    resources = {"nbgrader": {"student": student, "assignment": assignment, "notebook": notebook, "db_url": db_url}}
    for step in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata):
        nb, resources = step(config=config, log=_quiet_logger()).preprocess(nb, resources)
    return nb


def grade(assignment: str, submissions: Path, workdir: Path | None = None, csv_path: Path | None = None,
          feedback: bool = True, course_root: Path = COURSE_ROOT, show_progress: bool | None = None,
          workers: int | None = None, scheduler: str | None = None, sandbox: str = "bubblewrap",
          limits: Limits | None = None, regrade: bool = False) -> GradingReport:
    """Grade every submission of ``assignment`` in ``submissions``; see the package docstring."""
    import nbformat

    from gmcourse.grading.record import load_record, record_result, save_record, source_hash, submission_key
    from gmcourse.utils import progress

    course_root = Path(course_root).resolve()
    notebooks = assignment_notebooks(assignment, course_root)
    submissions = Path(submissions).resolve()
    found = collect_submissions(submissions, assignment, notebooks)
    workdir = Path(workdir if workdir is not None else course_root / "_grading" / assignment).resolve()
    csv_path = Path(csv_path).resolve() if csv_path is not None else workdir / "grades.csv"
    limits = limits or Limits()
    modules = allowed_modules(assignment, course_root)
    try:
        SANDBOXES[sandbox](assignment, modules, limits).probe(course_root)
    except SandboxUnavailable as error:
        raise GradingError(f"cannot isolate the students' kernels: {error}. To grade trusted notebooks without "
                           "isolation, pass --no-sandbox.") from None
    pool = DaskCluster(scheduler) if scheduler else LocalPool(workers)
    pool.start()  # local workers start (and import what they need) while the student version is made
    try:
        return _grade(assignment, notebooks, found, submissions, workdir, csv_path, feedback, course_root,
                      show_progress, pool, sandbox, limits, modules, regrade)
    finally:
        pool.close()


def _grade(assignment, notebooks, found, submissions, workdir, csv_path, feedback, course_root, show_progress,
           pool, sandbox, limits, modules, regrade) -> GradingReport:
    import nbformat

    from gmcourse.grading.record import load_record, record_result, save_record, source_hash, submission_key
    from gmcourse.utils import progress

    course_hash = source_hash(course_root, assignment, CONFIG_FILE)
    resuming = _prepare_workdir(workdir, submissions, course_hash)
    release = workdir / "release" / assignment
    if not resuming:
        generate_student_version(assignment, workdir, course_root)                            # 1.
        (workdir / WORKDIR_MARKER).write_text("made by python -m gmcourse.grading; results of the course files\n"
                                              f"{course_hash}\n")
    released = {n: nbformat.read(release / f"{n}.ipynb", as_version=4) for n in notebooks}
    parts = [c.metadata["nbgrader"]["grade_id"] for n in notebooks for c in released[n].cells
             if c.metadata.get("nbgrader", {}).get("grade")]
    warnings_ = []
    for name, nb in released.items():
        committed = course_root / "exercises" / assignment / f"{name}.ipynb"
        if not committed.is_file() or notebook_signature(nbformat.read(committed, as_version=4)) != notebook_signature(nb):
            warnings_.append(f"{committed} is not the student version of solutions/{assignment}: "
                             "students may have worked on another version (run `make exercises`)")

    api = _nbgrader_api(course_root, workdir)
    settings = {"sandbox": sandbox, "limits": limits.as_dict(), "modules": modules}
    results, keys = {}, {}
    todo = []
    for submission in found:                                                                  # 2.
        results[submission.student] = StudentResult(submission.student, submission.origin, problem=submission.problem)
        if submission.problem is not None:
            continue
        keys[submission.student] = submission_key(submission.notebooks, course_hash, settings)
        earlier = None if regrade else load_record(workdir / "records", submission.student, keys[submission.student])
        if earlier is not None:
            results[submission.student] = earlier
        else:
            todo.append(submission)

    def jobs():
        """Each submission copied, checked and sanitized just before it is sent: the workers start at once."""
        for submission in todo:
            result = results[submission.student]
            target = workdir / "submitted" / submission.student / assignment
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(workdir / "executed" / submission.student, ignore_errors=True)
            target.mkdir(parents=True)
            if submission.origin.is_dir() and (submission.origin / "timestamp.txt").is_file():  # late penalties
                shutil.copyfile(submission.origin / "timestamp.txt", target / "timestamp.txt")
            job = {"student": submission.student, "assignment": assignment, "notebooks": {}, "sandbox": sandbox,
                   "allowed_modules": modules, "limits": limits.as_dict(),
                   "timeout": int(api.config.Execute.get("timeout", 30)),
                   "extra_arguments": list(api.config.Execute.get("extra_arguments", []))}
            try:
                for name in notebooks:
                    submitted = nbformat.read(submission.notebooks[name], as_version=4)
                    result.flags += submission_flags(submitted, released[name])
                    unknown = drop_unknown_cell_ids(submitted, released[name])
                    if unknown:
                        result.flags.append(f"cell id(s) not in the assignment: {', '.join(unknown)} "
                                            "(ran as ordinary cells)")
                    restore_deleted_cells(submitted, released[name])  # nbgrader grades only cells it finds
                    nbformat.write(submitted, target / f"{name}.ipynb")
                    sanitized = _sanitize(copy.deepcopy(submitted), api.config, assignment, submission.student, name,
                                          f"sqlite:///{workdir / 'gradebook.db'}")
                    job["notebooks"][name] = nbformat.writes(sanitized)
            except Exception as error:  # noqa: BLE001 (whatever nbgrader rejects in this notebook: report it, go on)
                result.problem = f"autograde failed: nbgrader rejects the notebook ({type(error).__name__}: {error})"
                bar.update()
                continue
            yield job

    max_score = _max_score(workdir, assignment)
    report = GradingReport(assignment, max_score, parts, list(results.values()), workdir, csv_path, warnings_,
                           sandbox=sandbox, scheduler=pool.describe())
    for result in results.values():
        result.max_score = max_score
    bar = progress(total=len(todo), desc=f"grade {assignment}", unit="student",
                   disable=None if show_progress is None else not show_progress)
    with _venv_on_path(), bar:
        for executed in pool.results(jobs()):                                                 # 3.-4.
            result = results[executed["student"]]
            record_result(api, assignment, notebooks, workdir, result, executed, feedback, _tail)
            if result.score is not None:
                save_record(workdir / "records", result, keys[result.student])
            write_csv(report)                                                                 # 5.
            bar.set_postfix_str(result.student)
            bar.update()
    write_csv(report)
    return report


def _max_score(workdir: Path, assignment: str) -> float:
    from nbgrader.api import Gradebook

    with _venv_on_path(), Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gradebook:
        return float(gradebook.find_assignment(assignment).max_score)
