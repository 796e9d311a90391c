"""Record one executed submission: nbgrader's autograde (scores into the gradebook) with the outputs
that the sandboxed kernel produced, the student's feedback, and a record file that makes the result
final. The record is written last and atomically, so a grader killed at any moment leaves every
earlier student complete; the next run skips students whose record matches their notebook's
content hash (:func:`submission_key`) and grades the rest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from gmcourse.grading.results import StudentResult
from gmcourse.utils import write_text_atomic

RECORD_FORMAT = "gmcourse-grading-record-1"
REASON_PREFIX = "**Note from the grader:** "


class InjectExecuted(NbGraderPreprocessor):
    """In nbgrader's autograde, instead of executing: take the outputs of the same cells from
    ``executed_directory/<student>/<notebook>.ipynb`` (run in the sandbox), after checking that the
    sources are exactly the ones nbgrader just sanitized; put the grader's reason, if any, on top."""

    executed_directory = Unicode("").tag(config=True)

    def preprocess(self, nb, resources):
        import nbformat
        from nbformat.v4 import new_markdown_cell

        info = resources["nbgrader"]
        path = Path(self.executed_directory) / info["student"] / f"{info['notebook']}.ipynb"
        executed = nbformat.read(path, as_version=4)
        if [(c.cell_type, c.source) for c in executed.cells] != [(c.cell_type, c.source) for c in nb.cells]:
            raise ValueError(f"{path} does not hold the cells that nbgrader sanitized for {info['student']}")
        for cell, ran in zip(nb.cells, executed.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
        reason = executed.metadata.get("gmcourse_grader", {}).get("reason")
        if reason:
            nb.cells.insert(0, new_markdown_cell(REASON_PREFIX + reason))
        return nb, resources


def source_hash(course_root: Path, assignment: str, config_file: str) -> str:
    """What every grade depends on besides the submission: the instructor's notebooks and the config."""
    digest = hashlib.sha256(RECORD_FORMAT.encode())
    folder = Path(course_root) / "solutions" / assignment
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    digest.update((Path(course_root) / config_file).read_bytes())
    return digest.hexdigest()


def submission_key(notebooks: dict[str, Path], course_hash: str, settings: dict) -> str:
    """The content hash a result is valid for: the submitted notebooks, the course, the sandbox settings."""
    digest = hashlib.sha256((course_hash + json.dumps(settings, sort_keys=True)).encode())
    for name in sorted(notebooks):
        digest.update(name.encode() + b"\0" + Path(notebooks[name]).read_bytes())
    return digest.hexdigest()


def load_record(records: Path, student: str, key: str) -> StudentResult | None:
    path = records / f"{student}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    data.pop("key")
    return StudentResult.from_dict(data)


def save_record(records: Path, result: StudentResult, key: str) -> None:
    records.mkdir(parents=True, exist_ok=True)
    write_text_atomic(records / f"{result.student}.json", json.dumps({"key": key, **result.to_dict()}, indent=1))


def record_result(api, assignment: str, notebooks: list[str], workdir: Path, result: StudentResult,
                  executed: dict, feedback: bool, tail) -> None:
    """Autograde ``result.student`` from the executed notebooks in ``executed``; fill in ``result``."""
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    result.seconds, result.peak_mb = executed.get("seconds"), executed.get("peak_mb")
    if executed.get("error"):
        result.problem = executed["error"]
        return
    result.reason = executed.get("reason")
    folder = workdir / "executed" / result.student
    folder.mkdir(parents=True, exist_ok=True)
    for name in notebooks:
        nb = nbformat.reads(executed["notebooks"][name], as_version=4)
        nb.metadata["gmcourse_grader"] = {"reason": result.reason}
        nbformat.write(nb, folder / f"{name}.ipynb")
    outcome = api.autograde(assignment, result.student, force=True, create=True)
    if not outcome["success"]:
        result.problem = f"autograde failed; last lines of nbgrader's log:\n{tail(outcome)}"
        return
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gradebook:
        try:
            submitted = gradebook.find_submission(assignment, result.student)
        except MissingEntry:
            result.problem = "autograde left no record in the gradebook"
            return
        result.score = float(submitted.score)
        result.parts = {g.name: float(g.score) for nb in submitted.notebooks for g in nb.grades}
        if any(g.needs_manual_grade for nb in submitted.notebooks for g in nb.grades):
            result.flags.append("some cells need manual grading")
    if feedback:
        files = [workdir / "feedback" / result.student / assignment / f"{n}.html" for n in notebooks]
        outcome = api.generate_feedback(assignment, result.student, force=True)
        if not all(f.is_file() for f in files):
            result.problem = f"feedback failed; last lines of nbgrader's log:\n{tail(outcome)}"
        result.feedback = [f for f in files if f.is_file()]
