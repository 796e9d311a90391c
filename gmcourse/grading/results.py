"""What grading produces: one :class:`StudentResult` per submission, gathered in a :class:`GradingReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

COURSE_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = "nbgrader_config.py"
WORKDIR_MARKER = ".gmcourse-grading"
LOG_TAIL_LINES = 8
STATUS_GRADED, STATUS_PROBLEM, STATUS_NOT_GRADED = "graded", "graded with a problem", "not graded"


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
    problem: str | None = None             # why it was not graded, or what went wrong after grading
    reason: str | None = None              # why the kernel stopped early (points of what ran are kept)
    flags: list[str] = field(default_factory=list)
    feedback: list[Path] = field(default_factory=list)
    seconds: float | None = None           # wall time of its execution in the sandbox
    peak_mb: float | None = None           # peak memory of its kernel's processes
    resumed: bool = False                  # taken from an earlier run's record (same content hash)

    @property
    def status(self) -> str:
        if self.score is None:
            return STATUS_NOT_GRADED
        return STATUS_PROBLEM if self.problem or self.reason else STATUS_GRADED

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(origin=str(self.origin) if self.origin else None, feedback=[str(f) for f in self.feedback])
        data.pop("resumed")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "StudentResult":
        data = dict(data)
        data["origin"] = Path(data["origin"]) if data.get("origin") else None
        data["feedback"] = [Path(f) for f in data.get("feedback", [])]
        return cls(**data, resumed=True)


@dataclass
class GradingReport:
    assignment: str
    max_score: float
    parts: list[str]
    results: list[StudentResult]
    workdir: Path
    csv_path: Path
    warnings: list[str] = field(default_factory=list)  # about the course, not about one student
    sandbox: str = "bubblewrap"                        # how the kernels ran ("none": --no-sandbox)
    scheduler: str = ""                                # where they ran

    @property
    def failures(self) -> list[StudentResult]:
        return [r for r in self.results if r.status != STATUS_GRADED]
