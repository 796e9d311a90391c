"""Every chapter listed in _toc.yml is a page of the book, and every MyST chapter is executed.

The execution itself is nbval's (see conftest.py at the repository root): `pytest` collects each
chapter through jupytext and runs its code cells as test items, the same execution that
`make book` does (and the build reuses it through the execution cache). The tests here check
that nothing escapes that collection.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gmcourse.bookcheck import toc_files

ROOT = Path(__file__).resolve().parents[1]


def _is_notebook(path: Path) -> bool:
    """A MyST file is a notebook when its front matter names a kernel."""
    head = path.read_text().split("\n---", 2)[0]
    return "kernelspec:" in head


CHAPTERS = [
    doc
    for doc in toc_files(ROOT / "_toc.yml")
    if doc.startswith("book/") and (ROOT / f"{doc}.md").is_file() and _is_notebook(ROOT / f"{doc}.md")
]


def test_every_chapter_in_the_toc_exists():
    for doc in toc_files(ROOT / "_toc.yml"):
        candidates = [ROOT / f"{doc}{ext}" for ext in (".md", ".ipynb")]
        assert any(p.is_file() for p in candidates), f"_toc.yml names {doc}, but no .md/.ipynb file exists"


def test_there_are_chapters_to_execute():
    assert len(CHAPTERS) >= 4, f"expected chapters 0-3 as MyST notebooks, found {CHAPTERS}"


def test_pytest_collects_every_chapter_and_solution_notebook_cell_by_cell():
    """A plain `pytest` runs every chapter and every solution notebook under nbval: each of their
    code cells is a test item (so a chapter left out of the collection could not fail silently)."""
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "book", "solutions"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout
    collected = {line.split("::")[0] for line in listing.splitlines() if "::Cell " in line}
    solutions = {str(p.relative_to(ROOT)) for p in (ROOT / "solutions").glob("A*/A*.ipynb")}
    expected = {f"{doc}.md" for doc in CHAPTERS} | solutions
    assert len(solutions) >= 9
    assert collected == expected, f"missing: {sorted(expected - collected)}; unexpected: {sorted(collected - expected)}"
