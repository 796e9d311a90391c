"""Every chapter listed in _toc.yml is a page of the book, and every MyST chapter is executed.

The execution itself is nbval's (see conftest.py at the repository root): `pytest` collects each
chapter through jupytext and runs its code cells as test items, the same execution that
`make book` does (and the build reuses it through the execution cache). The tests here check
that nothing escapes that collection.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

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


def test_a_chapter_that_passes_nbval_is_in_the_book_cache_with_its_outputs(tmp_path):
    """The build then renders the outputs of this run: the cache finds the chapter as the book's
    reader (myst-nb) reads it, and the merged notebook is valid with an output in every cell
    that printed."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    chapter = ROOT / "book" / "01_learning_as_inference.md"
    cache_dir = tmp_path / ".jupyter_cache"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(chapter.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "GMCOURSE_BOOK_CACHE": str(cache_dir)},
    )
    assert run.returncode == 0, run.stdout[-3000:]
    notebook = read_myst_markdown_notebook(chapter.read_text())
    cache = get_cache(str(cache_dir))
    record = cache.match_cache_notebook(notebook)  # KeyError if the build would not find it
    assert record.data["execution_seconds"] > 0
    _, merged = cache.merge_match_into_notebook(notebook)
    nbformat.validate(merged)
    code = [cell for cell in merged.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    printing = [cell for cell in code if "\nprint(" in "\n" + cell.source]
    assert printing and all(cell.outputs for cell in printing)
