"""gmcourse as a package: the wheel holds the whole library, and the assignments run from it.

One wheel is built (``python -m build --wheel --no-isolation``, offline) from a copy of the
package's sources, so the repository gets no ``build/`` folder. Its listing must hold every file
of ``gmcourse/`` (modules and any data file; a package or data file missing from pyproject.toml's
configuration fails here). The wheel is then installed, not editable, into a fresh virtual
environment, which sees the course environment's third-party packages (torch==2.13.0, ipykernel,
numpy, ...) through one ``.pth`` line naming that environment's site-packages directory:
``site`` does not read the ``.pth`` files of a directory named that way, so the course's editable
``gmcourse`` stays invisible, and installing torch and the rest again would cost minutes. From that
environment, every module of the wheel is imported, and each student notebook runs in its own
kernel (its set-up cell, the locked cells before the first answer, the instructor's answer and
the instructor's first test cell), with the working directory outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gmcourse"
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").glob("A*") if (p / f"{p.name}.ipynb").is_file())
TORCH_VERSION = "2.13.0"
CELL_TIMEOUT = 120  # seconds; the cells run here take a few

pytestmark = pytest.mark.slow


def _source_files() -> set[str]:
    """Every file of the library's source tree, as a path in the wheel (``gmcourse/...``)."""
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                            "PYTHONSAFEPATH", "PYTHONUSERBASE"}}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def _run(command: list, what: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600,
                          **kwargs)
    assert done.returncode == 0, (f"{what} failed (exit {done.returncode}):\n{' '.join(map(str, command))}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(PACKAGE, source / "gmcourse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copyfile(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source],
         "building the wheel", cwd=source, env=_clean_env())
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, f"python -m build made {[w.name for w in wheels]}, expected one wheel"
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> dict[str, Path]:
    """A new virtual environment with the wheel installed (not editable); the course environment's
    site-packages directory is visible to it through a .pth line."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], "creating a virtual environment", cwd=base)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     "asking the fresh environment for its site-packages", cwd=base).stdout.strip())
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel],
         "installing the wheel into the fresh environment", cwd=base, env=_clean_env())
    course_site = Path(sysconfig.get_paths()["purelib"])
    assert (course_site / "torch").is_dir(), f"torch is not installed in {course_site}, the environment running the tests"
    # a plain path line: the directory joins sys.path, but its own .pth files (the course's editable
    # gmcourse finder among them) are not processed
    (site / "zz_course_packages.pth").write_text(f"{course_site}\n")
    return {"root": base, "python": python, "site": site}


def test_wheel_holds_every_file_of_the_library(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    in_package = {n for n in names if n.startswith("gmcourse/")}
    missing = sorted(_source_files() - in_package)
    assert not missing, (f"{wheel.name} lacks {len(missing)} file(s) of gmcourse/: {missing[:10]} (a package not "
                         "found by [tool.setuptools.packages.find], or a data file not in package-data)")
    assert {n for n in in_package if n.endswith(".py")} >= {"gmcourse/__init__.py", "gmcourse/grading/__init__.py",
                                                            "gmcourse/bench/__init__.py"}
    stray = sorted(n for n in names - in_package if not n.startswith("gmcourse-"))
    assert not stray, f"{wheel.name} holds files outside the gmcourse package: {stray[:10]}"


def test_fresh_environment_imports_every_module_from_the_wheel(fresh_venv, wheel):
    modules = sorted(name[:-3].replace("/", ".").removesuffix(".__init__")
                     for name in zipfile.ZipFile(wheel).namelist()
                     if name.startswith("gmcourse/") and name.endswith(".py") and not name.endswith("__main__.py"))
    probe = ("import importlib, json, sys, torch\n"
             f"modules = {modules!r}\n"
             "files = {m: importlib.import_module(m).__file__ for m in modules}\n"
             "print(json.dumps({'files': files, 'torch': torch.__version__, 'torch_file': torch.__file__}))\n")
    done = _run([fresh_venv["python"], "-c", probe], "importing gmcourse from the fresh environment",
                cwd=fresh_venv["root"], env=_clean_env(MPLBACKEND="Agg"))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    site = fresh_venv["site"].resolve()
    outside = {m: f for m, f in report["files"].items() if site not in Path(f).resolve().parents}
    assert not outside, f"modules not imported from the installed wheel in {site}: {outside}"
    assert report["torch"].startswith(TORCH_VERSION), f"torch {report['torch']} (from {report['torch_file']}), " \
                                                      f"expected the pinned {TORCH_VERSION}"


def _first_test_run(assignment: str):
    """The student notebook up to and including its first autograded test cell, with the answers
    and that test taken from the instructor's notebook (matched by grade_id)."""
    def meta(cell):
        return cell.metadata.get("nbgrader", {})

    student = nbformat.read(ROOT / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    solution = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    instructor = {meta(c)["grade_id"]: c.source for c in solution.cells if meta(c).get("grade_id")}
    cells = []
    for cell in student.cells:
        if meta(cell).get("solution") or meta(cell).get("grade"):
            cell.source = instructor[meta(cell)["grade_id"]]
        cells.append(cell)
        if meta(cell).get("grade") and not meta(cell).get("solution"):
            break
    else:
        pytest.fail(f"exercises/{assignment} has no autograded test cell")
    student.cells = cells
    return student


@pytest.fixture(scope="module")
def kernel_spec(fresh_venv) -> tuple:
    """A kernel spec that starts ipykernel with the fresh environment's python, and its environment."""
    kernels = fresh_venv["root"] / "kernels"
    (kernels / "gmcourse-wheel").mkdir(parents=True)
    (kernels / "gmcourse-wheel" / "kernel.json").write_text(json.dumps({
        "argv": [str(fresh_venv["python"]), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gmcourse from its wheel", "language": "python"}))
    # the set-up cell must find gmcourse; if it did not, pip and git fail at once instead of going online
    env = _clean_env(MPLBACKEND="Agg", OMP_NUM_THREADS="1", IPYTHONDIR=str(fresh_venv["root"] / "ipython"),
                     PIP_NO_INDEX="1", PIP_FIND_LINKS=str(fresh_venv["root"]), GIT_ALLOW_PROTOCOL="file",
                     GIT_TERMINAL_PROMPT="0")
    return kernels, env


@pytest.mark.notebooks
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_notebook_runs_from_the_wheel(assignment, fresh_venv, kernel_spec, tmp_path):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    kernels, env = kernel_spec
    assert ROOT not in tmp_path.parents, f"the kernel's working directory {tmp_path} must lie outside {ROOT}"
    nb = _first_test_run(assignment)
    nb.cells.append(nbformat.v4.new_code_cell("import gmcourse, torch\nprint(gmcourse.__file__)\nprint(torch.__version__)"))
    km = KernelManager(kernel_name="gmcourse-wheel", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError, with the traceback, on an error
    finally:
        if km.has_kernel:  # nbclient leaves a kernel manager it was given running
            km.shutdown_kernel(now=True)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout").split()
    assert len(printed) == 2, f"{assignment}: the probe printed {printed}"
    site = fresh_venv["site"].resolve()
    assert site in Path(printed[0]).resolve().parents, \
        f"{assignment}: the kernel imported gmcourse from {printed[0]}, not from the wheel in {site}"
    assert printed[1].startswith(TORCH_VERSION), f"{assignment}: the kernel has torch {printed[1]}"
    stderr = [(i, o["text"]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.get("name") == "stderr"]
    assert not stderr, f"{assignment}: cells wrote to stderr: {stderr[:3]}"
