"""The committed student versions (exercises/) are exactly what nbgrader generates from solutions/.

Nothing is kept twice by hand: exercises/<assignment>/ is regenerated with ``make exercises``
(``nbgrader generate_assignment <assignment> --force --no-db`` with the repository's
nbgrader_config.py). Here the same generation runs into a temporary course directory, with the
same configuration, and the result must match the committed files cell by cell.
"""

from pathlib import Path

import nbformat
import pytest

from gmcourse import grading

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("*") if p.is_dir() and any(p.glob("*.ipynb")))


def _first_difference(committed, generated) -> str:
    ours, theirs = grading.notebook_signature(committed), grading.notebook_signature(generated)
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"cell {index} ({b[2].get('grade_id', b[0])}) differs"
    return f"the committed version has {len(ours)} cells, the generated one {len(theirs)}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_the_generated_student_version_of_solutions(assignment, tmp_path):
    release = grading.generate_student_version(assignment, tmp_path, ROOT, database=False)
    generated_files = sorted(p.name for p in release.rglob("*") if p.is_file())
    committed_dir = ROOT / "exercises" / assignment
    committed_files = sorted(p.name for p in committed_dir.rglob("*") if p.is_file()) if committed_dir.is_dir() else []
    assert committed_files == generated_files, (
        f"exercises/{assignment} holds {committed_files}, nbgrader generates {generated_files}: run `make exercises`")
    for name in generated_files:
        if not name.endswith(".ipynb"):
            assert (release / name).read_bytes() == (committed_dir / name).read_bytes(), f"{name}: run `make exercises`"
            continue
        committed = nbformat.read(committed_dir / name, as_version=4)
        generated = nbformat.read(release / name, as_version=4)
        assert (grading.notebook_signature(committed) == grading.notebook_signature(generated)
                and committed.metadata.get("kernelspec") == generated.metadata.get("kernelspec")), (
            f"exercises/{assignment}/{name} is out of date with solutions/ "
            f"({_first_difference(committed, generated)}): run `make exercises`")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_version_has_no_solutions_or_hidden_tests(assignment):
    for path in sorted((ROOT / "exercises" / assignment).glob("*.ipynb")):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
            assert marker not in text, f"{path.relative_to(ROOT)} contains {marker!r}: students would see answers"
