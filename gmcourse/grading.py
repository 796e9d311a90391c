"""The instructor's grading pipeline: one command from a folder of submissions to scores.

    python -m gmcourse.grading ASSIGNMENT SUBMISSIONS [--workdir DIR] [--csv PATH] [--no-feedback]

``SUBMISSIONS`` is either nbgrader's layout ``submitted/<student>/<ASSIGNMENT>/<notebook>.ipynb``
(give the ``submitted`` folder or its parent) or a plain folder of ``<student>.ipynb`` files.
The command

1. generates the student version from ``solutions/ASSIGNMENT`` (``nbgrader generate_assignment``),
   which registers the assignment, its test cells and their points in a fresh gradebook
   (and warns if the committed ``exercises/ASSIGNMENT`` differs from it);
2. copies the submissions into the work dir (the instructor's folder is only read);
3. autogrades each student separately, so one broken notebook cannot stop the others;
   nbgrader restores every locked cell (test code, hidden tests, points) from the gradebook first;
4. writes one HTML feedback file per student;
5. exports the scores (total and per test cell) from the gradebook to a CSV file;
6. prints a summary, flags submissions that look like they game the grader, and
7. exits with status 1 after naming each submission it could not grade and why (invalid JSON,
   wrong or missing notebook, nbgrader's error lines), 0 if all went well, and 2 if it could not
   start (no such assignment, no submissions found).

The work dir (default ``_grading/ASSIGNMENT``, ignored by git) is an nbgrader course directory of
its own (``source/ release/ submitted/ autograded/ feedback/ gradebook.db grades.csv``), rebuilt
from scratch on every run: grading is a pure function of the solutions and the submissions.
Every nbgrader setting comes from the repository's ``nbgrader_config.py``; only paths are changed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import logging
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GradingError", "StudentResult", "GradingReport", "assignment_notebooks",
           "collect_submissions", "generate_student_version", "notebook_signature",
           "gaming_flags", "grade", "main"]

COURSE_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = "nbgrader_config.py"
WORKDIR_MARKER = ".gmcourse-grading"
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*\Z")  # nbgrader treats ids as globs
LOG_TAIL_LINES = 8


class GradingError(Exception):
    """The command cannot run at all (no such assignment, no submissions): nothing was graded."""


@dataclass
class Submission:
    student: str
    origin: Path                           # the file or folder in the instructor's submissions
    notebooks: dict[str, Path] = field(default_factory=dict)  # notebook name -> file
    problem: str | None = None             # why it cannot be graded


@dataclass
class StudentResult:
    student: str
    origin: Path | None = None             # where the submission came from
    score: float | None = None
    max_score: float | None = None
    parts: dict[str, float] = field(default_factory=dict)  # test cell grade_id -> points
    problem: str | None = None
    flags: list[str] = field(default_factory=list)
    feedback: list[Path] = field(default_factory=list)


@dataclass
class GradingReport:
    assignment: str
    max_score: float
    parts: list[str]
    results: list[StudentResult]
    workdir: Path
    csv_path: Path
    warnings: list[str] = field(default_factory=list)  # about the course, not about one student

    @property
    def failures(self) -> list[StudentResult]:
        return [r for r in self.results if r.problem is not None]


# ------------------------------------------------------------------------------ inputs
def assignment_notebooks(assignment: str, course_root: Path = COURSE_ROOT) -> list[str]:
    """Names (without ``.ipynb``) of the notebooks of ``solutions/<assignment>/``."""
    source = Path(course_root) / "solutions"
    folder = source / assignment
    if not folder.is_dir():
        known = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
        raise GradingError(f"no assignment {assignment!r} in {source}; available: {', '.join(known) or 'none'}")
    names = sorted(p.stem for p in folder.glob("*.ipynb"))
    if not names:
        raise GradingError(f"{folder} holds no notebook")
    return names


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def _read_problem(path: Path) -> str | None:
    """None if ``path`` is a readable notebook, else what is wrong with it."""
    import nbformat

    try:
        nbformat.read(path, as_version=4)
    except nbformat.reader.NotJSONError as error:
        return f"invalid notebook, not valid JSON ({str(error).splitlines()[0][:80]})"
    except Exception as error:  # not a notebook at all (wrong keys, unknown version, ...)
        return f"invalid notebook ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
    return None


def collect_submissions(folder: Path, assignment: str, notebooks: list[str]) -> list[Submission]:
    """Find the submissions in ``folder``, in either layout (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"submissions folder {folder} does not exist")
    plain = sorted(p for p in folder.glob("*.ipynb") if _visible(p))
    if plain:
        if len(notebooks) != 1:
            raise GradingError(f"{assignment} has {len(notebooks)} notebooks; a plain folder of "
                               f"<student>.ipynb files only works for one: use submitted/<student>/{assignment}/")
        submissions = [Submission(p.stem, p, {notebooks[0]: p}) for p in plain]
    else:
        if (folder / "submitted").is_dir():
            folder = folder / "submitted"
        submissions = []
        for student_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)):
            submission = Submission(student_dir.name, student_dir / assignment)
            if submission.origin.is_dir():
                found = sorted(p.name for p in submission.origin.glob("*.ipynb") if _visible(p))
                missing = [n for n in notebooks if f"{n}.ipynb" not in found]
                if missing and found and len(notebooks) == 1:
                    submission.problem = f"wrong notebook name: expected {missing[0]}.ipynb, found {', '.join(found)}"
                elif missing:
                    submission.problem = f"missing notebook {', '.join(m + '.ipynb' for m in missing)}"
                submission.notebooks = {n: submission.origin / f"{n}.ipynb" for n in notebooks if n not in missing}
            elif any(student_dir.glob("*.ipynb")):
                submission.problem = f"notebook not inside a {assignment}/ folder (expected {student_dir.name}/{assignment}/)"
            else:
                continue  # this student has no submission for this assignment
            submissions.append(submission)
    if not submissions:
        raise GradingError(f"no submissions of {assignment} in {folder}: expected <student>.ipynb files or "
                           f"nbgrader's layout <student>/{assignment}/{notebooks[0]}.ipynb")
    for submission in submissions:
        if submission.problem is None and not STUDENT_ID.match(submission.student):
            submission.problem = (f"student id {submission.student!r} must be letters, digits and _.@- "
                                  "(rename the file or folder)")
        for path in submission.notebooks.values():
            submission.problem = submission.problem or _read_problem(path)
    return submissions


# ------------------------------------------------------------------------------ checks
def notebook_signature(nb) -> list[tuple]:
    """What must agree between two generated student versions: cell types, sources, nbgrader metadata."""
    return [(cell.cell_type, cell.source, dict(cell.metadata.get("nbgrader", {}))) for cell in nb.cells]


def _python_source(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


_WATCHED_MODULES = {"torch", "np", "numpy", "math", "builtins", "__builtins__", "sys", "scipy", "unittest", "pytest"}
_COMPARISON_METHODS = {"__eq__", "__ne__", "__bool__", "__float__", "__lt__", "__le__", "__gt__", "__ge__",
                       "__abs__", "__array__", "__torch_function__", "__instancecheck__"}
# names whose rebinding at top level could make a test cell's check pass wrongly
_TRUSTED_NAMES = _WATCHED_MODULES | {"assert_close", "allclose", "isclose", "type", "isinstance", "issubclass",
                                     "float", "int", "bool", "str", "tuple", "abs", "len", "all", "any", "globals",
                                     "getattr", "hasattr", "AssertionError", "Exception", "__import__"}


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_names(target) -> list:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _bound_names(element)]
    return [target.value if isinstance(target, ast.Starred) else target]


def _top_level_bindings(tree):
    """Names the cell binds in the notebook's namespace (not inside function or class bodies)."""
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield statement.name
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                yield node.id
            elif isinstance(node, (ast.Import, ast.ImportFrom)):  # `import numpy as np` is fine
                yield from (a.asname for a in node.names if a.asname and (a.name, a.asname) != ("numpy", "np")
                            and a.asname != a.name.split(".")[-1])


def gaming_flags(source: str) -> list[str]:
    """Reasons to look twice at an answer cell: it patches what the tests rely on.

    Flags reassigning attributes of torch/numpy/math/builtins (``torch.testing.assert_close = ...``),
    rebinding built-in names (``type``, ``isinstance``, ``float``...) at top level, defining comparison
    methods such as ``__eq__``, ``setattr`` on those modules, exec/eval, ``sys.modules`` and reading
    ``NBGRADER_EXECUTION``. A flag is a hint for the instructor, not a verdict.
    """
    try:
        tree = ast.parse(_python_source(source))
    except (SyntaxError, ValueError):
        return []  # it will fail to run, which the tests already punish
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in (t for group in targets for t in _bound_names(group)):
                if isinstance(target, (ast.Attribute, ast.Subscript)) and _root_name(target) in _WATCHED_MODULES:
                    found.append(f"assigns to {ast.unparse(target)}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in _COMPARISON_METHODS:
            found.append(f"defines {node.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in {"setattr", "delattr"} and node.args and _root_name(node.args[0]) in _WATCHED_MODULES:
                found.append(f"calls {node.func.id}({ast.unparse(node.args[0])}, ...)")
            elif node.func.id in {"exec", "eval", "compile", "__import__"}:
                found.append(f"calls {node.func.id}()")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"imports {m}" for m in modules if m.split(".")[0] in {"builtins", "ctypes", "gc"}]
        elif isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.modules":
            found.append("touches sys.modules")
        elif isinstance(node, ast.Name) and node.id == "__builtins__":
            found.append("touches __builtins__")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "NBGRADER" in node.value:
            found.append("reads NBGRADER_EXECUTION (behaves differently under the grader)")
    found += [f"rebinds {name!r}" for name in _top_level_bindings(tree) if name in _TRUSTED_NAMES]
    return sorted(set(found))


def _submission_flags(submitted, release) -> list[str]:
    """Flags from comparing a submitted notebook with the released student version."""
    locked = {c.metadata["nbgrader"]["grade_id"]: c for c in release.cells
              if c.metadata.get("nbgrader", {}).get("locked")}
    seen, edited, points, flags = set(), [], [], []
    for cell in submitted.cells:
        meta = cell.metadata.get("nbgrader", {})
        original = locked.get(meta.get("grade_id"))
        if original is None:
            if cell.cell_type == "code":
                flags += gaming_flags(cell.source)
            continue
        seen.add(meta["grade_id"])
        if original.cell_type == "code" and cell.source != original.source:
            edited.append(meta["grade_id"])
        if original.metadata["nbgrader"].get("grade") and meta.get("points") != original.metadata["nbgrader"]["points"]:
            points.append(meta["grade_id"])
    deleted = [g for g, c in locked.items() if g not in seen and c.cell_type == "code"]
    for what, ids in (("edited", edited), ("changed the points of", points), ("deleted", deleted)):
        if ids:
            flags.append(f"{what} locked cell(s) {', '.join(ids)} (restored before grading)")
    return sorted(set(flags), key=flags.index)


# ------------------------------------------------------------------------------ nbgrader
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
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    if not (Path(course_root) / CONFIG_FILE).is_file():
        raise GradingError(f"{Path(course_root) / CONFIG_FILE} not found")
    config = PyFileConfigLoader(CONFIG_FILE, path=str(course_root)).load_config()
    directories = config.CourseDirectory
    directories.root = str(workdir)
    for step in ("source", "release", "submitted", "autograded", "feedback", "solution"):
        setattr(directories, f"{step}_directory", step)
    directories.db_url = f"sqlite:///{workdir / 'gradebook.db'}"
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
                results[submission.student].flags += _submission_flags(submitted, released[name])

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


# ------------------------------------------------------------------------------ outputs
def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def write_csv(report: GradingReport) -> None:
    """One row per submission: student, score, max_score, status, one column per test cell, notes."""
    report.csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(report.csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "score", "max_score", "status", *report.parts, "notes"])
        for r in report.results:
            status = "not graded" if r.score is None else "graded"
            notes = r.problem.splitlines()[0] if r.problem else "; ".join(r.flags)
            writer.writerow([r.student, _number(r.score), _number(r.max_score), status,
                             *(_number(r.parts.get(p)) for p in report.parts), notes])


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmcourse.grading", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
