"""Notebook validation with nbval, for the chapters as well as the solution notebooks.

`pytest` (see `testpaths` and `addopts` in pyproject.toml) runs every solution notebook in
solutions/ and every chapter listed in _toc.yml under ``--nbval-lax``: each code cell is one test
item, run in order in one fresh kernel, and a cell that raises fails. nbval reads only ``.ipynb``
files; the chapters are MyST markdown, so this file collects them through jupytext and hands
them to nbval's own collector and cell items. Two things are added for chapters:

* a cell that prints a ``Warning`` to stderr fails (the built book would show it to every reader);
* when every cell of a chapter has passed, the executed chapter is stored in the book's
  execution cache (``_build/.jupyter_cache``, or the full-size build's), the one that
  `jupyter-book build` reads with ``execute_notebooks: cache``. A build that follows finds the chapter executed and renders
  these outputs instead of running it a second time. The cache matches a notebook by the hash of
  its code, so a chapter edited after the test run is executed again by the build.
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from pathlib import Path

import jupytext
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

ROOT = Path(__file__).resolve().parent

# pytest-xdist runs one test process per core, and the notebook kernels that nbval starts from them
# share those cores: more busy torch threads than cores make every kernel many times slower, so each
# gets its share (the grader sets its own kernels' threads: gmcourse.grading.sandbox.Limits).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _threads = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("OMP_NUM_THREADS", _threads)
    os.environ.setdefault("MKL_NUM_THREADS", _threads)

# the cache of the build that `make book` makes at this GMCOURSE_SCALE (see the Makefile);
# GMCOURSE_BOOK_CACHE names another one (tests/test_chapters.py uses it)
BOOK_CACHE = Path(
    os.environ.get("GMCOURSE_BOOK_CACHE")
    or ROOT / ("_build/full/_build" if os.environ.get("GMCOURSE_SCALE") == "full" else "_build") / ".jupyter_cache"
)


@functools.lru_cache(maxsize=1)
def _chapters() -> frozenset[Path]:
    from gmcourse.bookcheck import toc_files

    chapters = set()
    for doc in toc_files(ROOT / "_toc.yml"):
        path = ROOT / f"{doc}.md"
        if doc.startswith("book/") and path.is_file() and "kernelspec:" in path.read_text().split("\n---", 2)[0]:
            chapters.add(path)
    return frozenset(chapters)


def pytest_collect_file(file_path: Path, parent):
    options = parent.config.option
    if (options.nbval or options.nbval_lax) and file_path.suffix == ".md" and file_path in _chapters():
        return ChapterNotebook.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):
    """Longest work first. pytest-xdist (``--dist loadscope --no-loadscope-reorder``, see the
    Makefile) hands out whole modules and test classes in this order: the end-to-end grading runs
    (minutes each) first, then the notebooks (a chapter runs for minutes in one kernel), then the
    many short tests, which fill in at the end instead of leaving one process idle while another
    grades. The sort is stable, so each module keeps its own order."""

    def weight(item) -> int:
        if item.get_closest_marker("grading"):
            return 0
        return 1 if isinstance(item, IPyNbCell) else 2

    items.sort(key=weight)


class ChapterNotebook(IPyNbFile):
    """A MyST chapter read by jupytext, validated by nbval like any notebook."""

    def collect(self):
        self.nb = jupytext.read(self.path)
        self.outputs: dict[int, list] = {}
        self.failed = False
        self.started = None
        code_cells = [cell for cell in self.nb.cells if cell.cell_type == "code"]
        self.last_cell = len(code_cells) - 1
        for number, cell in enumerate(code_cells):
            options = {"check": self.compare_outputs}
            options.update(find_metadata_tags(cell.metadata))
            options.update(find_comment_markers(cell.source))
            yield ChapterCell.from_parent(self, name=f"Cell {number}", cell_num=number, cell=cell, options=_Options(options))

    def store_executed(self) -> None:
        """Put the executed chapter into the book's execution cache (see the module docstring)."""
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn

        notebook = jupytext.read(self.path)
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for number, cell in enumerate(code_cells):
            cell.execution_count = number + 1  # one fresh kernel, every cell run once, in order
            cell.outputs = self.outputs[number]
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = number + 1
        seconds = time.perf_counter() - self.started
        BOOK_CACHE.parent.mkdir(parents=True, exist_ok=True)
        # pytest-xdist runs chapters in several processes: one writer at a time
        with open(BOOK_CACHE.parent / ".jupyter_cache.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            get_cache(str(BOOK_CACHE)).cache_notebook_bundle(
                CacheBundleIn(notebook, str(self.path), data={"execution_seconds": seconds}),
                check_validity=False,
                overwrite=True,
            )


class _Options(dict):
    """nbval reads options with ``options['skip']`` and expects False for the ones not set."""

    def __missing__(self, key):
        return False


class ChapterCell(IPyNbCell):
    def runtest(self):
        notebook = self.parent
        if notebook.started is None:
            notebook.started = time.perf_counter()
        try:
            super().runtest()
        except BaseException:
            notebook.failed = True
            raise
        warnings = [
            output.text
            for output in self.test_outputs
            if output.output_type == "stream" and output.name == "stderr" and "Warning" in output.text
        ]
        if warnings:
            notebook.failed = True
            pytest.fail(f"{self.path.name}, code cell {self.cell_num} printed a warning:\n" + "\n".join(warnings), pytrace=False)
        notebook.outputs[self.cell_num] = list(self.test_outputs)
        if self.cell_num == notebook.last_cell and not notebook.failed:
            notebook.store_executed()
