"""Step 4: what a student may see of the grading. The feedback shows every test cell with its points
and whether it passed; a visible test with its code and error message; a hidden test with its name,
its points and one sentence written for students, never its code or its traceback.

The sentence is the line ``# FEEDBACK: ...`` that the instructor writes first in each hidden region of
``solutions/`` (``### BEGIN HIDDEN TESTS``); nbgrader restores the hidden regions into the graded
notebook, and :class:`RedactHiddenTests`, run by nbgrader's feedback converter, replaces each region
with its sentence before the HTML is written. The graded notebooks in the work dir keep everything, for
the instructor.
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_output
from traitlets import Bool

__all__ = ["BEGIN_HIDDEN", "END_HIDDEN", "FEEDBACK_PREFIX", "RedactHiddenTests", "hidden_regions", "redact_cell"]

BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
FEEDBACK_PREFIX = "# FEEDBACK:"
DEFAULT_MESSAGE = "a hidden test of this part of the assignment"
_BEGIN = re.compile(rf"^\s*{re.escape(BEGIN_HIDDEN)}\s*$")
_END = re.compile(rf"^\s*{re.escape(END_HIDDEN)}\s*$")


def hidden_regions(source: str) -> list[tuple[int, int]]:
    """``(begin, end)`` line indices of each hidden region of ``source``, both markers included; a
    region left open runs to the end of the cell (nbgrader would refuse such a source, but a
    redaction must never show a hidden line)."""
    lines, regions, begin = source.splitlines(), [], None
    for i, line in enumerate(lines):
        if begin is None and _BEGIN.match(line):
            begin = i
        elif begin is not None and _END.match(line):
            regions.append((begin, i))
            begin = None
    if begin is not None:
        regions.append((begin, len(lines) - 1))
    return regions


def _message(lines: list[str]) -> str:
    for line in lines:
        if line.strip().startswith(FEEDBACK_PREFIX):
            return line.strip()[len(FEEDBACK_PREFIX):].strip() or DEFAULT_MESSAGE
    return DEFAULT_MESSAGE


def redact_cell(cell) -> bool:
    """Replace each hidden region of a code cell by ``# Hidden test: <sentence>`` and its outputs by
    one line that says whether the cell passed; True if the cell had a hidden region."""
    if cell.cell_type != "code":
        return False
    regions = hidden_regions(cell.source)
    if not regions:
        return False
    lines, kept, messages, start = cell.source.splitlines(), [], [], 0
    for begin, end in regions:
        kept += lines[start:begin]
        message = _message(lines[begin:end + 1])
        messages.append(message)
        kept.append(f"# Hidden test: {message}")
        start = end + 1
    kept += lines[start:]
    cell.source = "\n".join(kept)
    failed = any(output.get("output_type") == "error" for output in cell.get("outputs", []))
    verdict = (f"This cell failed. What it checks: {' / '.join(messages)}" if failed
               else "This cell passed.")
    cell.outputs = [new_output("stream", name="stdout", text=verdict + "\n")]
    return True


class RedactHiddenTests(Preprocessor):
    """An nbconvert preprocessor for nbgrader's ``GenerateFeedback``: every hidden region becomes its
    feedback sentence and the outputs of its cell a pass/fail line (see the module docstring)."""

    enabled = Bool(True, help="on by default: nbconvert skips a preprocessor that is not enabled").tag(config=True)

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            redact_cell(cell)
        return nb, resources
