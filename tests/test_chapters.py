"""Every chapter listed in _toc.yml executes from top to bottom without an error.

This is the same execution that `make book` does (the book build caches it), so a chapter
that does not run is a failing test, not a surprise at build time. The student versions in
exercises/ are published unexecuted and are checked by the grading tests instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

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


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_executes_without_error_or_warning(doc, tmp_path):
    notebook = jupytext.read(ROOT / f"{doc}.md")
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str((ROOT / doc).parent)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    elapsed = time.perf_counter() - start
    warnings = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
        and output.get("name") == "stderr"
        and "Warning" in output.get("text", "")
    ]
    assert not warnings, f"{doc} printed warnings:\n" + "\n".join(warnings)
    nbformat.validate(notebook)
    print(f"{doc}: executed in {elapsed:.1f} s")
