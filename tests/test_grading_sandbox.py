"""The sandbox's pieces and the two schedulers: allowed gmcourse modules, the refusal without a
sandbox, ``--no-sandbox`` said out loud, and grading on a Dask cluster (a LocalCluster started here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gmcourse.grading.run import allowed_modules
from gmcourse.grading.sandbox import STUB_MARKER, gmcourse_closure, stage_gmcourse
from test_grading import CASES, filled_notebook, read_csv, run_main, write_submission

ROOT = Path(__file__).resolve().parent.parent
A1 = next(c for c in CASES if c.ASSIGNMENT == "A1_max_likelihood")

# the library module that holds what each assignment asks students to write
WRITTEN_BY_STUDENTS = {"A1_max_likelihood": "divergences", "A2_ising_mcmc": "ising", "A3_autoregressive": "autoregressive",
                       "A4_realnvp": "flows", "A5_rbm": "rbm", "A6_vae": "vae", "A7_gan": "gan", "A8_ddpm": "diffusion",
                       "A9_mini_transformer": "transformer"}


def test_the_closure_follows_imports():
    assert gmcourse_closure(["gmcourse.ising"]) == ["ising", "sampling", "utils"]
    assert gmcourse_closure([]) == []
    with pytest.raises(ValueError, match="not a module"):
        gmcourse_closure(["gmcourse.no_such_module"])


@pytest.mark.parametrize("assignment", sorted(WRITTEN_BY_STUDENTS))
def test_each_assignment_declares_modules_that_exclude_what_its_students_write(assignment):
    modules = allowed_modules(assignment, ROOT)
    assert WRITTEN_BY_STUDENTS[assignment] not in gmcourse_closure(modules), (assignment, modules)


def test_a_module_outside_the_allowed_ones_fails_to_import_with_a_message(tmp_path):
    stage_gmcourse(tmp_path / "gmcourse", ["gmcourse.toys"], "A7_gan")
    assert (tmp_path / "gmcourse" / "toys.py").read_text() == (ROOT / "gmcourse" / "toys.py").read_text()
    done = subprocess.run([sys.executable, "-c", "import gmcourse.toys\nimport gmcourse.gan"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1 and STUB_MARKER in done.stderr and "A7_gan" in done.stderr, done.stderr
    assert "gmcourse modules it provides: gmcourse.divergences, gmcourse.toys, gmcourse.utils" in done.stderr


def test_without_a_sandbox_the_grader_refuses_and_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr("gmcourse.grading.sandbox.bwrap_path", lambda: None)
    write_submission(tmp_path / "inbox" / "ann.ipynb", filled_notebook(A1))
    code, out, err = run_main([A1.ASSIGNMENT, str(tmp_path / "inbox"), "--workdir", str(tmp_path / "work")])
    assert code == 2 and "no bwrap found" in err and "--no-sandbox" in err and not (tmp_path / "work").exists(), err


def test_no_sandbox_grades_the_same_and_says_so(tmp_path):
    write_submission(tmp_path / "inbox" / "ann.ipynb", filled_notebook(A1))
    code, out, err = run_main([A1.ASSIGNMENT, str(tmp_path / "inbox"), "--workdir", str(tmp_path / "work"),
                               "--no-sandbox", "--no-feedback"])
    assert code == 0, err
    assert "NO SANDBOX (--no-sandbox: kernels ran unisolated)" in out, out
    assert float(read_csv(tmp_path / "work" / "grades.csv")[1]["ann"]["score"]) == A1.MAX_SCORE


def test_a_dask_cluster_grades_like_the_local_pool(tmp_path):
    """The same command on a Dask scheduler: workers execute in their sandboxes, the command records."""
    from distributed import LocalCluster

    wrong = "kl_swapped_arguments"
    students = {"ann": (filled_notebook(A1), A1.MAX_SCORE),
                "ben": (filled_notebook(A1, A1.WRONG_ANSWERS[wrong][0]), A1.WRONG_ANSWERS[wrong][1])}
    for student, (nb, _) in students.items():
        write_submission(tmp_path / "inbox" / f"{student}.ipynb", nb)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        code, out, err = run_main([A1.ASSIGNMENT, str(tmp_path / "inbox"), "--workdir", str(tmp_path / "work"),
                                   "--scheduler", cluster.scheduler_address, "--no-feedback"])
    assert code == 0, err
    assert f"Ran on the Dask scheduler at {cluster.scheduler_address}, each kernel in a bubblewrap sandbox" in out, out
    rows = read_csv(tmp_path / "work" / "grades.csv")[1]
    assert {s: float(rows[s]["score"]) for s in students} == {s: score for s, (_, score) in students.items()}
    assert all(float(rows[s]["peak_mb"]) > 0 and float(rows[s]["seconds"]) > 0 for s in students), rows


def test_kill_9_of_the_grader_loses_nothing_already_graded_and_a_rerun_resumes(tmp_path):
    """The grader is killed (SIGKILL) once the first student is recorded; the CSV it leaves is whole,
    and the same command run again grades only what is missing, ending with every student graded."""
    import os
    import signal
    import time

    import psutil

    wrong = "kl_swapped_arguments"
    expected = {"ann": A1.MAX_SCORE, "ben": A1.WRONG_ANSWERS[wrong][1], "cat": 0.0}
    write_submission(tmp_path / "inbox" / "ann.ipynb", filled_notebook(A1))
    write_submission(tmp_path / "inbox" / "ben.ipynb", filled_notebook(A1, A1.WRONG_ANSWERS[wrong][0]))
    write_submission(tmp_path / "inbox" / "cat.ipynb", nbformat.read(ROOT / "exercises" / A1.ASSIGNMENT / A1.NOTEBOOK,
                                                                       as_version=4))
    command = [sys.executable, "-m", "gmcourse.grading", A1.ASSIGNMENT, str(tmp_path / "inbox"),
               "--workdir", str(tmp_path / "work"), "--workers", "1", "--no-feedback"]
    grader = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / "work" / "records"
    deadline = time.monotonic() + 300
    while not (records.is_dir() and any(records.glob("*.json"))) and grader.poll() is None:
        assert time.monotonic() < deadline, "no student was recorded in 300 s"
        time.sleep(0.05)
    left_behind = psutil.Process(grader.pid).children(recursive=True)  # its workers, their kernels
    assert left_behind, "the grader had no worker process"
    os.kill(grader.pid, signal.SIGKILL)
    grader.wait()
    gone, alive = psutil.wait_procs(left_behind, timeout=15)
    assert not alive, f"still running 15 s after the grader was killed: {[p.cmdline() for p in alive]}"
    done_before = {p.stem for p in records.glob("*.json")}
    assert 1 <= len(done_before) < 3, done_before  # killed part-way
    # each student is committed by its record file; the CSV is rewritten whole just after it, so a
    # kill between the two leaves a CSV (or none yet) that lacks only that last student
    csv_path = tmp_path / "work" / "grades.csv"
    if csv_path.exists():
        header, rows = read_csv(csv_path)
        assert set(rows) <= done_before and len(rows) >= len(done_before) - 1, (rows, done_before)
        assert all(float(rows[s]["score"]) == expected[s] for s in rows), rows
    else:
        assert len(done_before) == 1, done_before
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(done_before)} from an earlier run, unchanged)" in rerun.stdout, rerun.stdout
    rows = read_csv(tmp_path / "work" / "grades.csv")[1]
    assert {s: float(rows[s]["score"]) for s in rows} == expected, rows


def _guard_notebook(answer: str):
    """An answer cell, then a test cell that fails honestly (0 is not 1) and one that passes."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(answer)]
    for grade_id, check in (("test_fails", "assert_close(torch.zeros(()), torch.ones(()))"),
                            ("test_passes", "assert_close(torch.ones(()), torch.ones(()))")):
        cell = nbformat.v4.new_code_cell(f"import torch\nfrom torch.testing import assert_close\n{check}\n")
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id, "points": 1}
        nb.cells.append(cell)
    return nb


TAMPERING = {
    "patches assert_close": ("import torch.testing\ntorch.testing.assert_close = lambda *a, **k: None\n",
                             "torch.testing.assert_close"),
    "swaps builtins.exec": ("import builtins\nbuiltins.exec = lambda *a, **k: None\n", "the check did not run"),
    "hooks IPython": ("import torch.testing\n_real = torch.testing.assert_close\n"
                      "get_ipython().events.register('pre_run_cell', lambda *a: setattr(torch.testing, 'assert_close', "
                      "lambda *a, **k: None))\n"
                      "get_ipython().events.register('post_run_cell', lambda *a: setattr(torch.testing, 'assert_close', _real))\n",
                      "event pre_run_cell"),
    "shadows isinstance": ("isinstance = lambda *args: True\n", "shadowed builtin isinstance"),
    "traces": ("import sys\nsys.settrace(lambda *args: None)\n", "trace"),
}


@pytest.mark.parametrize("answer, named", [("x = 1\n", None), *TAMPERING.values()], ids=["honest", *TAMPERING])
def test_the_guard_fails_tests_that_ran_after_tampering_and_says_what(answer, named):
    from gmcourse.grading.execute import execute_job
    from gmcourse.grading.sandbox import Limits

    job = {"student": "s", "assignment": "A1_max_likelihood", "sandbox": "bubblewrap", "allowed_modules": [],
           "notebooks": {"nb": nbformat.writes(_guard_notebook(answer))}, "limits": Limits(wall_seconds=120).as_dict(),
           "timeout": 30, "extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    result = execute_job(job)
    nb = nbformat.reads(result["notebooks"]["nb"], as_version=4)
    errors = {c.metadata["nbgrader"]["grade_id"]: [o.ename for o in c.outputs if o.output_type == "error"]
              for c in nb.cells[1:]}
    if named is None:
        assert errors == {"test_fails": ["AssertionError"], "test_passes": []} and result["reason"] is None, result
    else:
        assert errors["test_passes"] == ["Tampered"], errors
        assert named in result["reason"], result["reason"]


@pytest.mark.parametrize("sandbox, threads", [("bubblewrap", None), ("bubblewrap", 2), ("none", 2)])
def test_each_kernel_gets_the_torch_threads_it_is_given_and_one_by_default(sandbox, threads):
    """One thread by default: with more busy torch threads than cores every kernel slows down many times."""
    from gmcourse.grading.execute import execute_job
    from gmcourse.grading.sandbox import Limits

    limits = Limits(wall_seconds=120) if threads is None else Limits(wall_seconds=120, threads=threads)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, torch\nprint(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")]
    job = {"student": "s", "assignment": "A1_max_likelihood", "sandbox": sandbox, "allowed_modules": [],
           "notebooks": {"nb": nbformat.writes(nb)}, "limits": limits.as_dict(), "timeout": 30,
           "extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    result = execute_job(job)
    printed = nbformat.reads(result["notebooks"]["nb"], as_version=4).cells[0].outputs[0]["text"].split()
    expected = threads or 1
    assert printed == [str(expected), str(expected)], printed


def test_the_command_line_passes_the_thread_count_to_the_kernels(monkeypatch, capsys):
    from gmcourse.grading import cli

    seen = {}
    monkeypatch.setattr(cli, "grade", lambda *args, limits, **kwargs: seen.setdefault("limits", limits) and 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["A1_max_likelihood", "inbox", "--threads", "4"])
    assert seen["limits"].threads == 4
    with pytest.raises(SystemExit):
        cli.main(["A1_max_likelihood", "inbox", "--threads", "0"])
    assert "expected a whole number of at least 1, got 0" in capsys.readouterr().err
