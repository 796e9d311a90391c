"""The grading pipeline, end to end, on every assignment with a module in tests/grading_cases/.

For each assignment one run of ``python -m gmcourse.grading`` (through ``main``) grades a
folder of submissions built from the instructor's notebook: the solution (full marks), the
untouched student version (0), every classic wrong answer (its exact expected score), every
correct alternative (a different convention, a slow but correct loop, ...: full marks), a
tamperer who blanks the test cells of a wrong answer and gives them 100 points (restored, so
the wrong answer's score), a file that is not JSON and a notebook whose metadata nbgrader
rejects (both reported by name with the reason, the others still graded). Each notebook
execution costs seconds, so everything about one assignment is checked on that one run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gmcourse import grading

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = Path(__file__).resolve().parent / "grading_cases"
BROKEN_NOTEBOOK = '{"cells": [{"cell_type": "code", "source": "half a notebook'

pytestmark = pytest.mark.grading


def _load_case_modules():
    modules = []
    for path in sorted(CASES_DIR.glob("*.py")):
        if path.name != "__init__.py":
            spec = importlib.util.spec_from_file_location(f"grading_case_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            modules.append(module)
    return modules


CASES = _load_case_modules()


# ------------------------------------------------------------------------------ building submissions
def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _read(case, folder: str):
    return nbformat.read(ROOT / folder / case.ASSIGNMENT / case.NOTEBOOK, as_version=4)


def _answers(case) -> dict[str, str]:
    """The instructor's answer of each solution cell, without nbgrader's delimiters."""
    delimiters = {"### BEGIN SOLUTION", "### END SOLUTION"}
    return {_nbgrader(c)["grade_id"]: "\n".join(line for line in c.source.splitlines() if line.strip() not in delimiters)
            for c in _read(case, "solutions").cells if _nbgrader(c).get("solution")}


def hidden_test_lines(case) -> tuple[list[str], list[str]]:
    """The lines of the solution's hidden tests, and the feedback message of each hidden region.

    Left out: lines that also occur outside the hidden regions (in the released student version or
    the instructor's answers, which the feedback shows legitimately, e.g. ``import torch``) and lines
    under 8 characters (``)``, ``else:``), which say nothing about a test."""
    from gmcourse.grading.feedback import FEEDBACK_PREFIX, hidden_regions

    solution = _read(case, "solutions")
    outside = [c.source for c in _read(case, "exercises").cells]
    lines, messages = [], []
    for cell in solution.cells:
        source = cell.source.splitlines()
        regions = hidden_regions(cell.source)
        hidden_rows = {i for begin, end in regions for i in range(begin, end + 1)}
        outside.append("\n".join(line for i, line in enumerate(source) if i not in hidden_rows))
        for begin, end in regions:
            for line in (line.strip() for line in source[begin + 1:end]):
                if line.startswith(FEEDBACK_PREFIX):
                    messages.append(line[len(FEEDBACK_PREFIX):].strip())
                else:
                    lines.append(line)
    outside_text = "\n".join(outside)
    return sorted({line for line in lines if len(line) >= 8 and line not in outside_text}), messages


def html_text(path: Path) -> str:
    """The text a reader of an HTML file sees (tags dropped, entities decoded), lines stripped."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    parser = Text()
    parser.feed(path.read_text())
    return "\n".join(line.strip() for line in "".join(parser.parts).splitlines())


def filled_notebook(case, edits: dict[str, str] | None = None):
    """The released student version with every solution cell answered (edits override)."""
    answers = _answers(case)
    unknown = set(edits or {}) - set(answers)
    assert not unknown, f"{case.ASSIGNMENT}: edits name cells that are not solution cells: {sorted(unknown)}"
    nb = copy.deepcopy(_read(case, "exercises"))
    for cell in nb.cells:
        if _nbgrader(cell).get("solution"):
            cell.source = (edits or {}).get(_nbgrader(cell)["grade_id"], answers[_nbgrader(cell)["grade_id"]])
    return nb


def tampered_notebook(case, edits: dict[str, str]):
    """A wrong answer whose own test cells are replaced by ``pass`` and worth 100 points each."""
    nb = filled_notebook(case, edits)
    tampered, current = [], None
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            current = meta["grade_id"]
        elif meta.get("grade") and current in edits:
            cell.source, meta["points"] = "pass", 100
            tampered.append(meta["grade_id"])
    assert tampered, f"{case.ASSIGNMENT}: no test cell follows the solution cells {sorted(edits)}"
    return nb, tampered


def build_students(case) -> tuple[dict[str, object], dict[str, float]]:
    """student -> notebook (or a broken string), and student -> the exact expected score."""
    students = {"solution": filled_notebook(case), "blank": _read(case, "exercises")}
    expected = {"solution": case.MAX_SCORE, "blank": 0.0}
    for name, (edits, score) in case.WRONG_ANSWERS.items():
        students[f"wrong_{name}"], expected[f"wrong_{name}"] = filled_notebook(case, edits), score
    for name, edits in getattr(case, "CORRECT_ANSWERS", {}).items():
        students[f"correct_{name}"], expected[f"correct_{name}"] = filled_notebook(case, edits), case.MAX_SCORE
    name, (edits, score) = next((n, v) for n, v in case.WRONG_ANSWERS.items() if v[1] < case.MAX_SCORE)
    students["tamperer"], _ = tampered_notebook(case, edits)
    expected["tamperer"] = score
    students["broken"] = BROKEN_NOTEBOOK
    students["corrupt"] = filled_notebook(case)  # valid JSON that nbgrader itself rejects
    next(c for c in students["corrupt"].cells if _nbgrader(c).get("grade")).metadata["nbgrader"]["points"] = "lots"
    return students, expected


def write_submission(path: Path, notebook) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(notebook, str):
        path.write_text(notebook)
    else:
        nbformat.write(notebook, path)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = grading.main(args)
    return code, out.getvalue(), err.getvalue()


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    with open(path, newline="") as file:
        header = next(csv.reader(file))
    return header, {row["student"]: row for row in rows}


# ------------------------------------------------------------------------------ one run per assignment
# One grading run per assignment feeds every test of that assignment: the tests are methods of
# one class per assignment (generated below), and the run is a class-scoped fixture. `make test`
# distributes test classes over processes (pytest-xdist, --dist loadscope), so the assignments are
# graded in parallel and no run is repeated.
@pytest.fixture(scope="class")
def graded(request, tmp_path_factory):
    case = request.cls.case
    tmp = tmp_path_factory.mktemp(case.ASSIGNMENT)
    students, expected = build_students(case)
    course = tmp / "course"  # given as the parent of submitted/
    for student, notebook in students.items():
        write_submission(course / "submitted" / student / case.ASSIGNMENT / case.NOTEBOOK, notebook)
    before = _fingerprint(course)
    # one kernel at a time per class: pytest-xdist already grades one class per core, and a second
    # grading worker per class put more kernels than cores on the machine, where a busy one could
    # push an honest cell past nbgrader's 30 s limit and change a score
    code, out, err = run_main([case.ASSIGNMENT, str(course), "--workdir", str(tmp / "work"),
                               "--csv", str(tmp / "scores.csv"), "--workers", "1"])
    header, rows = read_csv(tmp / "scores.csv")
    return dict(case=case, expected=expected, code=code, out=out, err=err, header=header, rows=rows,
                workdir=tmp / "work", course=course, unchanged=before == _fingerprint(course))


def _score(graded, student) -> float | None:
    value = graded["rows"][student]["score"]
    return float(value) if value else None


def _failed_parts(graded, student) -> list[str]:
    row = graded["rows"][student]
    parts = graded["header"][4:-4]  # after student, score, max_score, status; before seconds, peak_mb, reason, notes
    solution = graded["rows"]["solution"]
    return [p for p in parts if row[p] != solution[p]]


@pytest.mark.slow
class _GradingRun:
    """The checks of one grading run; subclassed once per assignment below (``case`` is set there)."""

    case = None

    def test_solution_gets_full_marks_and_blank_student_version_gets_zero(self, graded):
        case = graded["case"]
        assert _score(graded, "solution") == case.MAX_SCORE, (
            f"the instructor's solution scored {_score(graded, 'solution')} / {case.MAX_SCORE}; "
            f"failed cells: {[p for p in graded['header'][4:-4] if graded['rows']['solution'][p] in ('0', '')]}\n{graded['err']}")
        assert _score(graded, "blank") == 0.0, f"the untouched student version scored {_score(graded, 'blank')}"


    def test_each_classic_wrong_answer_loses_exactly_its_points(self, graded):
        wrong = {s: e for s, e in graded["expected"].items() if s.startswith("wrong_")}
        assert len(wrong) >= 5, f"{graded['case'].ASSIGNMENT} needs at least 5 classic wrong answers"
        mismatches = [f"{s}: expected {e}, got {_score(graded, s)} (cells below the solution's: {_failed_parts(graded, s)})"
                      for s, e in wrong.items() if _score(graded, s) != e]
        assert not mismatches, "\n".join(mismatches)


    def test_each_correct_alternative_gets_full_marks(self, graded):
        correct = {s: e for s, e in graded["expected"].items() if s.startswith("correct_")}
        short = [f"{s}: got {_score(graded, s)} of {e} (cells below the solution's: {_failed_parts(graded, s)})"
                 for s, e in correct.items() if _score(graded, s) != e]
        assert not short, "\n".join(short)


    def test_tampered_test_cells_are_restored_before_grading(self, graded):
        row = graded["rows"]["tamperer"]
        assert _score(graded, "tamperer") == graded["expected"]["tamperer"], (
            f"tamperer scored {row['score']}, expected {graded['expected']['tamperer']}")
        assert float(row["max_score"]) == graded["case"].MAX_SCORE
        assert "edited locked cell(s)" in row["notes"] and "changed the points" in row["notes"], row["notes"]
        assert "tamperer:" in graded["out"], "the summary should flag the tamperer"


    def test_broken_submissions_are_named_with_their_reason_and_the_others_are_graded(self, graded):
        assert graded["code"] == 1, f"exit code {graded['code']}; stderr:\n{graded['err']}"
        failures = graded["err"].split("Could not grade 2 submission(s)")[-1]
        assert "broken (" in failures and "not valid JSON" in failures, graded["err"]
        assert "corrupt (" in failures and "autograde failed" in failures, graded["err"]
        assert "could not convert string to float: 'lots'" in failures, graded["err"]  # nbgrader's own error line
        for student in ("broken", "corrupt"):
            assert graded["rows"][student]["status"] == "not graded" and graded["rows"][student]["score"] == ""
        graded_students = [s for s in graded["expected"]]
        assert all(graded["rows"][s]["status"] == "graded" for s in graded_students), graded["rows"]
        assert f"graded {len(graded_students)} of {len(graded_students) + 2} submissions" in graded["out"], graded["out"]


    def test_csv_has_total_and_per_test_cell_scores_for_every_submission(self, graded):
        case = graded["case"]
        source = nbformat.read(ROOT / "solutions" / case.ASSIGNMENT / case.NOTEBOOK, as_version=4)
        test_cells = [_nbgrader(c)["grade_id"] for c in source.cells if _nbgrader(c).get("grade")]
        points = sum(float(_nbgrader(c)["points"]) for c in source.cells if _nbgrader(c).get("grade"))
        assert points == case.MAX_SCORE, f"the notebook's points add up to {points}, MAX_SCORE says {case.MAX_SCORE}"
        assert graded["header"] == ["student", "score", "max_score", "status", *test_cells, "seconds", "peak_mb",
                                    "reason", "notes"]
        assert set(graded["rows"]) == set(graded["expected"]) | {"broken", "corrupt"}
        for student in graded["expected"]:
            row = graded["rows"][student]
            assert float(row["max_score"]) == case.MAX_SCORE
            assert sum(float(row[p]) for p in test_cells) == float(row["score"]), row


    def test_feedback_html_is_written_for_every_graded_student(self, graded):
        case = graded["case"]
        feedback = graded["workdir"] / "feedback"
        for student in graded["expected"]:
            html = feedback / student / case.ASSIGNMENT / case.NOTEBOOK.replace(".ipynb", ".html")
            assert html.is_file() and html.stat().st_size > 1000, f"no feedback for {student} at {html}"
        assert not (feedback / "broken").exists() and not (feedback / "corrupt").exists()


    def test_feedback_shows_no_line_of_any_hidden_test_only_its_message(self, graded):
        case = graded["case"]
        hidden, messages = hidden_test_lines(case)
        assert hidden and messages, f"{case.ASSIGNMENT} has no hidden tests with a feedback message"
        files = sorted((graded["workdir"] / "feedback").rglob("*.html"))
        assert files
        for path in files:
            text = html_text(path)
            leaked = [line for line in hidden if line in text]
            assert not leaked, f"{path} shows hidden test code: {leaked[:3]}"
            shown = [m for m in messages if m in text]
            assert shown == messages, f"{path} lacks the hidden tests' messages {set(messages) - set(shown)}"


    def test_instructor_submissions_folder_is_left_untouched(self, graded):
        assert graded["unchanged"], "grading modified the submissions folder it was given"


for _case in CASES:
    _name = "TestGrading_" + _case.ASSIGNMENT
    globals()[_name] = type(_name, (_GradingRun,), {"case": _case, "__doc__": f"Grading {_case.ASSIGNMENT} end to end."})


# ------------------------------------------------------------------------------ layouts and errors
@pytest.mark.slow
@pytest.mark.skipif(not CASES, reason="no grading cases")
def test_plain_folder_of_student_notebooks_end_to_end(tmp_path):
    case = CASES[0]
    plain = tmp_path / "inbox"
    write_submission(plain / "alice.ipynb", filled_notebook(case))
    write_submission(plain / "bob.ipynb", BROKEN_NOTEBOOK)
    deleter = filled_notebook(case)  # every test cell deleted: restored and graded, not "not graded"
    deleter.cells = [c for c in deleter.cells if not _nbgrader(c).get("grade") or _nbgrader(c).get("solution")]
    write_submission(plain / "carol.ipynb", deleter)
    code, out, err = run_main([case.ASSIGNMENT, str(plain), "--workdir", str(tmp_path / "work"), "--no-feedback"])
    assert code == 1 and "bob" in err and "not valid JSON" in err, err
    assert "warning" not in err, err  # exercises/ is in sync with solutions/
    header, rows = read_csv(tmp_path / "work" / "grades.csv")
    assert float(rows["alice"]["score"]) == case.MAX_SCORE, rows["alice"]
    assert float(rows["carol"]["score"]) == case.MAX_SCORE and "deleted locked cell(s)" in rows["carol"]["notes"]
    assert rows["bob"]["status"] == "not graded"
    assert not (tmp_path / "work" / "feedback").exists()
    # a second run into the same work dir resumes: carol is unchanged (her record is reused, not rerun),
    # alice left the folder (no row), dave is new (graded now)
    (plain / "alice.ipynb").unlink()
    write_submission(plain / "dave.ipynb", _read(case, "exercises"))
    code, out, err = run_main([case.ASSIGNMENT, str(plain), "--workdir", str(tmp_path / "work")])
    assert code == 1 and "graded 2 of 3 submissions (1 from an earlier run, unchanged)" in out, out
    header, rows = read_csv(tmp_path / "work" / "grades.csv")
    assert set(rows) == {"bob", "carol", "dave"} and float(rows["dave"]["score"]) == 0.0, rows
    assert float(rows["carol"]["score"]) == case.MAX_SCORE, rows["carol"]
    assert [line.split()[:4] for line in out.splitlines() if line.startswith("carol")] == \
        [["carol", f"{case.MAX_SCORE:g}", "/", f"{case.MAX_SCORE:g}"]] and "earlier" in out, out


def _layouts(tmp_path: Path, assignment: str, notebook: str) -> Path:
    nb = nbformat.v4.new_notebook()
    submitted = tmp_path / "course" / "submitted"
    for student in ("ann", "ben"):
        write_submission(submitted / student / assignment / notebook, nb)
    write_submission(submitted / "cat" / assignment / "Untitled.ipynb", nb)    # wrong name
    (submitted / "dan" / assignment).mkdir(parents=True)                       # no notebook
    write_submission(submitted / "eve" / assignment / notebook, BROKEN_NOTEBOOK)
    (submitted / "fay" / "A0_other").mkdir(parents=True)                        # another assignment only
    return submitted


def test_collect_submissions_reads_nbgrader_layout_from_submitted_or_its_parent(tmp_path):
    submitted = _layouts(tmp_path, "A9", "A9.ipynb")
    for folder in (submitted, submitted.parent):
        found = {s.student: s for s in grading.collect_submissions(folder, "A9", ["A9"])}
        assert sorted(found) == ["ann", "ben", "cat", "dan", "eve"]
        assert found["ann"].problem is None and found["ann"].notebooks == {"A9": submitted / "ann" / "A9" / "A9.ipynb"}
        assert found["cat"].problem == "wrong notebook name: expected A9.ipynb, found Untitled.ipynb"
        assert found["dan"].problem == "missing notebook A9.ipynb"
        assert found["eve"].problem.startswith("invalid notebook, not valid JSON")


def test_collect_submissions_reads_plain_folder_of_student_notebooks(tmp_path):
    write_submission(tmp_path / "zoe.ipynb", nbformat.v4.new_notebook())
    write_submission(tmp_path / "bad name.ipynb", nbformat.v4.new_notebook())
    write_submission(tmp_path / ".ipynb_checkpoints" / "zoe-checkpoint.ipynb", nbformat.v4.new_notebook())
    found = {s.student: s for s in grading.collect_submissions(tmp_path, "A9", ["A9"])}
    assert sorted(found) == ["bad name", "zoe"]
    assert found["zoe"].problem is None and found["zoe"].notebooks == {"A9": tmp_path / "zoe.ipynb"}
    assert "letters, digits" in found["bad name"].problem
    with pytest.raises(grading.GradingError, match="only works for one"):
        grading.collect_submissions(tmp_path, "A9", ["part1", "part2"])


def test_empty_folder_and_unknown_assignment_are_clear_errors(tmp_path):
    assignment = CASES[0].ASSIGNMENT if CASES else "A1_max_likelihood"
    code, out, err = run_main([assignment, str(tmp_path)])
    assert code == 2 and "no submissions of" in err and "<student>.ipynb" in err, err
    code, out, err = run_main([assignment, str(tmp_path / "nowhere")])
    assert code == 2 and "does not exist" in err, err
    # through `python -m`, as the Makefile calls it
    process = subprocess.run([sys.executable, "-m", "gmcourse.grading", "A0_no_such_assignment", str(tmp_path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert process.returncode == 2, process
    assert "no assignment 'A0_no_such_assignment'" in process.stderr and "available:" in process.stderr, process.stderr


def test_workdir_that_was_not_made_by_the_grader_is_never_wiped(tmp_path):
    write_submission(tmp_path / "inbox" / "zoe.ipynb", nbformat.v4.new_notebook())
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    assignment = CASES[0].ASSIGNMENT if CASES else "A1_max_likelihood"
    code, out, err = run_main([assignment, str(tmp_path / "inbox"), "--workdir", str(tmp_path / "precious")])
    assert code == 2 and "refusing" in err, err
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "do not delete"


@pytest.mark.parametrize("source, flag", [
    ("import torch\ntorch.testing.assert_close = lambda *a, **k: None\n", "assigns to torch.testing.assert_close"),
    ("import numpy as np\nnp.testing.assert_allclose = print\n", "assigns to np.testing.assert_allclose"),
    ("import builtins\nbuiltins.isinstance = lambda *a: True\n", "imports builtins"),
    ("def type(x):\n    return float\n", "rebinds 'type'"),
    ("from fakes import always_close as assert_close\n", "rebinds 'assert_close'"),
    ("class Liar(float):\n    def __eq__(self, other):\n        return True\n", "defines __eq__"),
    ("import torch\nsetattr(torch.testing, 'assert_close', print)\n", "calls setattr(torch.testing, ...)"),
    ("import os\nif os.environ.get('NBGRADER_EXECUTION'):\n    pass\n", "reads NBGRADER_EXECUTION"),
    ("%matplotlib inline\nexec('x = 1')\n", "calls exec()"),
])
def test_gaming_flags_spot_answers_that_patch_what_the_tests_rely_on(source, flag):
    assert any(f.startswith(flag) for f in grading.gaming_flags(source)), grading.gaming_flags(source)


def test_gaming_flags_leave_ordinary_answers_alone():
    for case in CASES:
        for grade_id, source in _answers(case).items():
            assert grading.gaming_flags(source) == [], (case.ASSIGNMENT, grade_id, grading.gaming_flags(source))
        for name, edits in getattr(case, "CORRECT_ANSWERS", {}).items():
            for grade_id, source in edits.items():
                assert grading.gaming_flags(source) == [], (case.ASSIGNMENT, name, grading.gaming_flags(source))
    ordinary = "import math\nimport numpy as np\nimport torch.nn.functional as F\n\ndef f(x, type=None):\n    for i in range(3):\n        x = x + i\n    return x\n"
    assert grading.gaming_flags(ordinary) == []


# ------------------------------------------------------------------------------ what feedback may show
def _test_cell(source: str, outputs: list) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output(**o) for o in outputs]
    return cell


def test_redaction_keeps_visible_lines_and_shows_only_the_message_of_a_hidden_region():
    from gmcourse.grading.feedback import redact_cell

    source = ("# Hidden tests for f (2 points).\nassert f(0) == 0\n### BEGIN HIDDEN TESTS\n"
              "# FEEDBACK: checks f on negative inputs\nassert f(-3) == 9, 'f(-3) must be 9'\n"
              "### END HIDDEN TESTS\nprint('visible tail')")
    cell = _test_cell(source, [dict(output_type="error", ename="AssertionError", evalue="f(-3) must be 9",
                                    traceback=["assert f(-3) == 9"])])
    assert redact_cell(cell)
    assert cell.source.splitlines() == ["# Hidden tests for f (2 points).", "assert f(0) == 0",
                                        "# Hidden test: checks f on negative inputs", "print('visible tail')"]
    assert [o.output_type for o in cell.outputs] == ["stream"]
    assert cell.outputs[0].text == "This cell failed. What it checks: checks f on negative inputs\n"
    passed = _test_cell("### BEGIN HIDDEN TESTS\nassert True\n### END HIDDEN TESTS",
                        [dict(output_type="stream", name="stdout", text="secret value 42\n")])
    assert redact_cell(passed) and passed.outputs[0].text == "This cell passed.\n"
    assert passed.source == "# Hidden test: a hidden test of this part of the assignment"  # no message written


def test_redaction_hides_an_unclosed_region_to_the_end_and_leaves_other_cells_alone():
    from gmcourse.grading.feedback import redact_cell

    cell = _test_cell("x = 1\n### BEGIN HIDDEN TESTS\n# FEEDBACK: m\nassert x == 1\nassert secret()", [])
    assert redact_cell(cell) and cell.source == "x = 1\n# Hidden test: m"
    plain = _test_cell("assert x == 1", [dict(output_type="stream", name="stdout", text="kept\n")])
    assert not redact_cell(plain) and plain.source == "assert x == 1" and plain.outputs[0].text == "kept\n"
    markdown = nbformat.v4.new_markdown_cell("### BEGIN HIDDEN TESTS")
    assert not redact_cell(markdown)


def test_every_hidden_test_in_the_solutions_has_a_feedback_message():
    from gmcourse.grading.feedback import FEEDBACK_PREFIX, hidden_regions

    missing = []
    for path in sorted((ROOT / "solutions").glob("A*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            lines = cell.source.splitlines()
            for begin, end in hidden_regions(cell.source):
                found = [line for line in lines[begin + 1:end] if line.strip().startswith(FEEDBACK_PREFIX)]
                if len(found) != 1 or not found[0].strip()[len(FEEDBACK_PREFIX):].strip():
                    missing.append(f"{path.name}: {cell.metadata.get('nbgrader', {}).get('grade_id')}")
    assert not missing, f"hidden tests without exactly one '{FEEDBACK_PREFIX} <message>' line: {missing}"


def test_the_csv_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from gmcourse.grading.report import write_csv
    from gmcourse.grading.results import GradingReport, StudentResult

    path = tmp_path / "grades.csv"
    path.write_text("student,score\nold,1\n")
    report = GradingReport("A1", 2.0, ["part"], [StudentResult("ann", score=2.0, max_score=2.0, parts={"part": 2.0})],
                           tmp_path, path)

    def crash(*args, **kwargs):  # the rename fails: as if the grader were killed before it
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_csv(report)
    assert path.read_text() == "student,score\nold,1\n" and list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    write_csv(report)
    assert path.read_text().splitlines() == ["student,score,max_score,status,part,seconds,peak_mb,reason,notes",
                                             "ann,2,2,graded,2,,,,"]
    assert list(tmp_path.iterdir()) == [path]


def test_deleted_tracked_cells_are_put_back_in_their_place():
    from gmcourse.grading.run import restore_deleted_cells

    def cell(gid, source=""):
        c = nbformat.v4.new_code_cell(source)
        if gid:
            c.metadata["nbgrader"] = {"grade_id": gid, "grade": gid.startswith("test"), "locked": True}
        return c

    released = nbformat.v4.new_notebook(cells=[cell("intro"), cell("answer_a"), cell("test_a"), cell(None, "x = 1"),
                                               cell("answer_b"), cell("test_b")])
    submitted = nbformat.v4.new_notebook(cells=[cell(None, "print('mine')"), cell("answer_b", "b = 2"),
                                                cell("answer_a", "a = 1")])
    assert restore_deleted_cells(submitted, released) == ["intro", "test_a", "test_b"]
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells]
    # intro first (nothing tracked precedes it in the release), each test right after the answer that
    # precedes it in the release, wherever the student moved that answer; the student's own cells stay
    assert ids == ["intro", None, "answer_b", "test_b", "answer_a", "test_a"], ids
    assert submitted.cells[1].source == "print('mine')" and restore_deleted_cells(submitted, released) == []


def test_the_gradebook_schema_version_read_in_process_is_the_one_nbgrader_asks_alembic_for(monkeypatch):
    import nbgrader.api

    from gmcourse.grading.run import alembic_head

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent), prepend=":")
    from_the_command = nbgrader.api.get_alembic_version()  # runs `alembic heads`
    assert alembic_head() == from_the_command and len(from_the_command) == 12


def test_nbgraders_metadata_validation_with_the_schema_checked_once_raises_what_jsonschema_raises():
    import json

    import jsonschema
    import nbgrader.nbgraderformat.common as common

    from gmcourse.grading.run import SchemaCheckedOnce

    schema = json.loads((Path(common.__file__).parent / "v3.json").read_text())
    good = {"schema_version": 3, "grade": True, "solution": False, "locked": True, "grade_id": "t", "points": 2}
    bad = [{**good, "points": "lots"}, {**good, "grade_id": 7}, {**good, "locked": "yes"}, {**good, "schema_version": 4}]
    shim = SchemaCheckedOnce()
    assert jsonschema.validate(good, schema) is None and shim.validate(good, schema) is None
    for metadata in bad:
        with pytest.raises(jsonschema.ValidationError) as expected:
            jsonschema.validate(metadata, schema)
        with pytest.raises(jsonschema.ValidationError) as got:
            shim.validate(metadata, schema)
        assert (got.value.message, list(got.value.path)) == (expected.value.message, list(expected.value.path))
    with pytest.raises(jsonschema.SchemaError):
        shim.validate(good, {"type": "no such type"})
