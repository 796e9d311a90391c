"""`python -m gmcourse.timings BUILD_DIR` turns the book's execution cache into a per-chapter table."""

from __future__ import annotations

import csv

import nbformat
import pytest
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn

from gmcourse import timings


def _executed(source: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    notebook.cells = [cell]
    return notebook


def test_table_lists_each_chapter_of_the_toc_with_its_latest_seconds(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/a\n  - file: book/b\n")
    (tmp_path / "book").mkdir()
    for name in ("intro", "a", "b", "unlisted"):
        (tmp_path / "book" / f"{name}.md").write_text("x")
    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    for name, source, seconds in [("a", "print(1)", 3.0), ("a", "print(2)", 5.5), ("b", "print(3)", 1.25), ("unlisted", "print(4)", 9.0)]:
        uri = str(tmp_path / "book" / f"{name}.md")
        cache.cache_notebook_bundle(CacheBundleIn(_executed(source), uri, data={"execution_seconds": seconds}), check_validity=False, overwrite=True)
    monkeypatch.setenv("GMCOURSE_SCALE", "full")
    table = timings.write_tables(tmp_path / "_build", root=tmp_path)
    assert "| book/a | 5.5 |" in table  # the later execution of a chapter replaces the earlier one
    assert "| book/b | 1.2 |" in table and "unlisted" not in table and "book/intro" not in table
    assert "| **total** | 6.8 |" in table and "GMCOURSE_SCALE=full" in table
    rows = list(csv.DictReader(open(tmp_path / "_build" / "timings.csv")))
    assert [(r["chapter"], float(r["seconds"]), r["scale"]) for r in rows] == [("book/a", 5.5, "full"), ("book/b", 1.25, "full")]


def test_no_cache_is_a_clear_error(tmp_path, capsys):
    assert timings.main([str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "no execution cache" in error and "make book" in error
    with pytest.raises(FileNotFoundError, match="build the book first"):
        timings.chapter_seconds(tmp_path, tmp_path)
