"""Step 1: find the submissions of an assignment in a folder, in either layout, and say what is wrong
with the ones that cannot be graded."""

from __future__ import annotations

import re
from pathlib import Path

from gmcourse.grading.results import COURSE_ROOT, GradingError, Submission

STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*\Z")  # nbgrader treats ids as globs


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
