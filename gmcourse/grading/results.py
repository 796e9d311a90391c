"""What grading produces: one :class:`StudentResult` per submission, gathered in a :class:`GradingReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

COURSE_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = "nbgrader_config.py"
WORKDIR_MARKER = ".gmcourse-grading"
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
