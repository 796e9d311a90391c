"""Every student notebook opens with the set-up cell that makes it run outside the course's environment.

The cell (a locked nbgrader cell, ``install_gmcourse``) installs gmcourse from the repository that
_config.yml names (``repository.url`` and ``branch``) when ``gmcourse`` cannot be found, and does
nothing where it can: in the course's .venv, in the grader's sandbox (which holds a staged copy of
gmcourse and has no network), on a JupyterHub that installed the library. Here it runs as plain
Python in a subprocess, with ``sys.executable`` replaced by a shim script that records how it was
called (pip is run as ``sys.executable -m pip``), with and without gmcourse on the path; and once in
the grader's sandbox, under the guard.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("A*") if (p / f"{p.name}.ipynb").is_file())
GRADE_ID = "install_gmcourse"

# Runs the cell's source (a file named in argv[1]) with sys.executable = argv[2]; prints what happened.
DRIVER = r'''
import importlib.util, json, sys
cell, shim = open(sys.argv[1]).read(), sys.argv[2]
launched = []
sys.addaudithook(lambda event, args: launched.append(event) if event in (
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork") else None)
found_before = importlib.util.find_spec("gmcourse") is not None
path_before = list(sys.path)
sys.executable = shim
try:
    exec(compile(cell, "<set-up cell>", "exec"), {"__name__": "__main__"})
    error = None
except BaseException as exc:
    error = type(exc).__name__
print(json.dumps({"found_before": found_before, "launched": launched, "error": error,
                  "path_changed": sys.path != path_before, "imported_gmcourse": "gmcourse" in sys.modules}))
'''


def _repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config.get("repository") or {}
    assert repository.get("url"), "_config.yml names no repository.url"
    return repository["url"].rstrip("/"), repository.get("branch", "main")


def _requirement() -> str:
    url, branch = _repository()
    return f"gmcourse @ git+{url}@{branch}"


def _first_cell(folder: str, assignment: str):
    nb = nbformat.read(ROOT / folder / assignment / f"{assignment}.ipynb", as_version=4)
    assert nb.cells, f"{folder}/{assignment} is empty"
    return nb.cells[0]


def _setup_source() -> str:
    return _first_cell("exercises", ASSIGNMENTS[0]).source


@pytest.mark.parametrize("folder", ["solutions", "exercises"])
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_notebook_opens_with_the_locked_setup_cell(assignment, folder):
    cell = _first_cell(folder, assignment)
    where = f"{folder}/{assignment}: the first cell"
    meta = cell.metadata.get("nbgrader", {})
    assert cell.cell_type == "code" and meta.get("grade_id") == GRADE_ID, \
        f"{where} is not the set-up cell (a code cell with grade_id {GRADE_ID!r}), it is {cell.cell_type} {meta}"
    assert meta.get("locked") is True and not meta.get("grade") and not meta.get("solution"), \
        f"{where} must be a read-only cell (locked, not graded, no solution): {meta}"
    assert cell.source == _setup_source(), f"{where} differs from the set-up cell of exercises/{ASSIGNMENTS[0]}"
    strings = [node.value for node in ast.walk(ast.parse(cell.source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("gmcourse")]
    assert _requirement() in strings, \
        f"{where} does not install {_requirement()!r} (the repository of _config.yml); it names {strings}"


def test_the_setup_cell_trips_none_of_the_graders_flags():
    from gmcourse.grading.flags import gaming_flags

    assert gaming_flags(_setup_source()) == []


def _run_cell(tmp_path: Path, python_flags: list[str], shim_exit: int) -> tuple[dict, list[str] | None]:
    """Run the set-up cell with ``python <flags>``; returns its report and the shim's arguments
    (None if the shim never ran)."""
    (tmp_path / "cell.py").write_text(_setup_source())
    log = tmp_path / "shim-called-with"
    shim = tmp_path / "shim"
    shim.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{log}'\nexit {shim_exit}\n")
    shim.chmod(0o755)
    (tmp_path / "no-wheels").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    # were the real pip called after all, it could install nothing
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "no-wheels"), GIT_ALLOW_PROTOCOL="file")
    done = subprocess.run([sys.executable, *python_flags, "-c", DRIVER, str(tmp_path / "cell.py"), str(shim)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, f"the driver failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout)
    return report, (log.read_text().splitlines() if log.exists() else None)


def test_the_setup_cell_does_nothing_where_gmcourse_is_installed(tmp_path):
    report, shim_args = _run_cell(tmp_path, ["-I"], shim_exit=1)  # -I: site-packages, but not the cwd
    assert report["found_before"], f"{sys.executable} -I cannot find gmcourse: the test cannot run"
    assert report["error"] is None, f"the set-up cell raised {report['error']} although gmcourse is installed"
    assert shim_args is None and report["launched"] == [], \
        f"the set-up cell started a process although gmcourse is installed: {shim_args or report['launched']}"
    assert not report["path_changed"] and not report["imported_gmcourse"], report


def test_the_setup_cell_installs_gmcourse_from_the_repository_where_it_is_missing(tmp_path):
    report, shim_args = _run_cell(tmp_path, ["-I", "-S"], shim_exit=0)  # -S: no site-packages, no gmcourse
    assert not report["found_before"], "gmcourse is importable without site-packages: the test cannot run"
    assert report["error"] is None, f"the set-up cell raised {report['error']} after a successful install"
    assert shim_args == ["-m", "pip", "install", "--quiet", _requirement()], \
        f"the set-up cell ran its python with {shim_args}, expected [-m, pip, install, --quiet, {_requirement()!r}]"


def test_the_setup_cell_fails_loudly_when_the_install_fails(tmp_path):
    report, shim_args = _run_cell(tmp_path, ["-I", "-S"], shim_exit=1)
    assert shim_args is not None and report["error"] == "CalledProcessError", report


@pytest.mark.slow
@pytest.mark.grading
def test_the_setup_cell_does_nothing_in_the_graders_sandbox():
    """In the sandbox (no network; gmcourse staged with no module allowed, as for A1) the cell finds
    gmcourse, starts nothing, writes nothing, and the guard sees nothing replaced."""
    from gmcourse.grading.execute import execute_job
    from gmcourse.grading.sandbox import Limits

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(_setup_source()),
                nbformat.v4.new_code_cell("import importlib.util\nassert importlib.util.find_spec('gmcourse') is not None")]
    nb.cells[1].metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "test_found",
                                        "points": 1}
    job = {"student": "s", "assignment": "A1_max_likelihood", "sandbox": "bubblewrap", "allowed_modules": [],
           "notebooks": {"nb": nbformat.writes(nb)}, "limits": Limits(wall_seconds=120).as_dict(),
           "timeout": 30, "extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    result = execute_job(job)
    executed = nbformat.reads(result["notebooks"]["nb"], as_version=4)
    assert result["reason"] is None, result["reason"]
    assert [c.outputs for c in executed.cells] == [[], []], [c.outputs for c in executed.cells]
