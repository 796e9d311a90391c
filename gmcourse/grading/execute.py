"""Run one submission: each notebook in a fresh kernel inside the sandbox, cell by cell.

A *job* is a plain dict (JSON), so that it can travel to a process or to a Dask worker::

    {"student", "assignment", "notebooks": {name: notebook JSON, sanitized by the grader},
     "sandbox": "bubblewrap" | "none", "allowed_modules": [...], "limits": Limits fields,
     "timeout": seconds per cell, "extra_arguments": [kernel arguments]}

and its *result* is ``{"student", "notebooks": {name: executed JSON}, "reason": str | None,
"seconds": float, "peak_mb": float | None, "error": str | None}``. The executor (this process) is
trusted and lives outside the sandbox; only the kernel runs inside. It stops at the first cell that
times out or kills the kernel, keeps the outputs of the cells before (their tests score as usual)
and gives every cell it did not run an error output with the reason, so those tests score 0. The
reason (one line) goes to the CSV, the summary and the student's feedback. ``error`` is set when
the notebook could not be run at all (the sandbox failed to start): the grader then reports the
submission as not graded instead of giving it 0.

``python -m gmcourse.grading.execute`` reads a job on stdin and writes its result on stdout:
:func:`run_job` starts it for every job, so that nothing a kernel does can take the grader with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gmcourse.grading.guard import SETUP, changes, check_code, new_nonce, parse_report
from gmcourse.grading.sandbox import SANDBOXES, STUB_MARKER, Limits, SandboxUnavailable

NOT_RUN = "NotRun"


def _kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        """Starts the kernel's command through the sandbox's ``wrap``."""
        wrap = staticmethod(lambda command: command)

        def format_kernel_cmd(self, extra_arguments=None):
            return self.wrap(super().format_kernel_cmd(extra_arguments))

    return SandboxedKernelManager


def _client_class():
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import Execute

    class GradingClient(Execute):
        """nbgrader's executor (an error reply always becomes an error output, even when the notebook
        hides tracebacks), with a cap on the bytes of output kept."""
        output_cap = 2 ** 21
        output_bytes = 0
        truncated = False
        nonce = None  # the guard's reports are not outputs of the notebook: never counted or cut

        def output(self, outs, msg, display_id, cell_index):
            if self.nonce and self.nonce in str(msg.get("content", {}).get("evalue", "")):
                return super().output(outs, msg, display_id, cell_index)
            self.output_bytes += len(json.dumps(msg.get("content", {}), default=str))
            if self.output_bytes > self.output_cap:
                if not self.truncated:
                    self.truncated = True
                    outs.append(new_output("stream", name="stdout",
                                           text=f"\n[grader: output beyond {self.output_cap // 1024} kB not kept]\n"))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return GradingClient


class Watchdog(threading.Thread):
    """Samples the kernel's memory (all its processes) and the size of the run directory; kills the
    kernel past the wall-time or disk cap and says which."""

    def __init__(self, process, run_dir: Path, limits: Limits):
        super().__init__(daemon=True)
        self.process, self.run_dir, self.limits = process, run_dir, limits
        self.deadline = time.monotonic() + limits.wall_seconds
        self.peak_bytes, self.reason, self.done = 0, None, threading.Event()

    def _disk_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.run_dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        return total

    def run(self):
        import psutil

        while not self.done.wait(0.2):
            try:
                parent = psutil.Process(self.process.pid)
                rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
                self.peak_bytes = max(self.peak_bytes, rss)
            except psutil.Error:
                pass
            if time.monotonic() > self.deadline:
                self.reason = f"the notebook ran past the wall-time cap of {self.limits.wall_seconds} s"
            elif self._disk_bytes() > self.limits.disk_mb * 2 ** 20:
                self.reason = f"the notebook wrote more than {self.limits.disk_mb} MB of files"
            if self.reason:
                self.process.kill()
                return


def _dead_kernel_reason(returncode: int | None, label: str, limits: Limits) -> str:
    signum = -returncode if returncode is not None and returncode < 0 else \
        returncode - 128 if returncode is not None and returncode > 128 else None
    if signum == signal.SIGXCPU:
        return f"the kernel used more than its CPU-time cap of {limits.cpu_seconds} s in {label}"
    if signum is not None:
        return (f"the kernel was killed by {signal.Signals(signum).name} in {label} (out of memory, over the "
                f"process cap, or it killed itself)")
    return f"the kernel exited (status {returncode}) in {label}: the notebook ends its own Python process"


def _label(cell, index: int) -> str:
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"cell {index} ({grade_id})" if grade_id else f"cell {index}"


def _scan_reasons(nb, assignment: str) -> list[str]:
    """Reasons visible in the outputs: a forbidden gmcourse import, running out of memory."""
    forbidden, memory = {}, []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            text = f"{out.get('ename')}: {out.get('evalue')}"
            if STUB_MARKER in text:
                module = str(out.get("evalue", "")).split(" is not available")[0]
                forbidden.setdefault(module, []).append(str(index))
            elif out.get("ename") == "MemoryError" or "can't allocate memory" in text or "Cannot allocate memory" in text:
                memory.append(str(index))
    reasons = [f"cell{'s' if len(cells) > 1 else ''} {', '.join(cells)} import{'' if len(cells) > 1 else 's'} {module}, "
               f"which {assignment} does not allow" for module, cells in forbidden.items()]
    if memory:
        reasons.append(f"cell{'s' if len(memory) > 1 else ''} {', '.join(memory)} ran out of memory (cap {{memory}} MB)")
    return reasons


def _is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def _take_report(cell, nonce: str):
    """Remove the guard's report from the cell's outputs; return the snapshot, or None if absent."""
    for out in list(cell.outputs):
        if out.get("output_type") == "error" and nonce in str(out.get("evalue", "")):
            cell.outputs.remove(out)
            return parse_report(out["evalue"], nonce)
    return None


def snapshot(client) -> dict[str, str]:
    """The guard's snapshot, taken before any cell of the notebook runs."""
    from nbformat.v4 import new_code_cell, new_notebook

    nonce = new_nonce()
    client.nonce = nonce
    probe = new_code_cell(SETUP + check_code(nonce))
    notebook, client.nb = client.nb, new_notebook(cells=[probe])  # nbclient stores the cell at its index
    try:
        client.execute_cell(probe, 0, store_history=False)
    finally:
        client.nb = notebook
    report = _take_report(probe, nonce)
    if report is None:
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in probe.outputs if o.get("output_type") == "error"]
        raise RuntimeError(f"the grader's snapshot of the kernel failed: {errors or probe.outputs}")
    return report


def execute_guarded(client, cell, index: int, baseline: dict[str, str] | None) -> str | None:
    """Execute ``cell``; for a test cell, with the guard appended. Returns why the test does not count
    (the notebook replaced something it relies on), after giving the cell an error output saying so."""
    from nbformat.v4 import new_output

    if baseline is None or not _is_test(cell):
        client.execute_cell(cell, index, store_history=True)
        return None
    nonce = new_nonce()
    client.nonce = nonce
    source = cell.source
    cell.source = source + "\n" + check_code(nonce)
    try:
        client.execute_cell(cell, index, store_history=True)
    finally:
        cell.source = source
    report = _take_report(cell, nonce)
    failed = any(o.get("output_type") == "error" for o in cell.outputs)
    if report is None and failed:
        return None  # the test failed before its end: no points, nothing to check
    replaced = changes(baseline, report) if report is not None else ["the way cells run (the check did not run)"]
    if not replaced:
        return None
    shown = ", ".join(replaced[:4]) + (f" and {len(replaced) - 4} more" if len(replaced) > 4 else "")
    why = f"before {_label(cell, index)} the notebook had replaced what the tests rely on: {shown}"
    cell.outputs.append(new_output("error", ename="Tampered", evalue=why, traceback=[f"Tampered: {why}"]))
    return why


def execute_notebook(nb, sandbox, job: dict, limits: Limits):
    """Run ``nb`` in place; return (reason or None, peak bytes of memory)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.v4 import new_output

    reason, stopped_at, guard_reasons = None, None, []
    with sandbox.kernel() as place:
        km = _kernel_manager_class()(kernel_name="python3", transport="ipc", ip=str(place.run_dir / "kernel"),
                                     connection_file=str(place.run_dir / "kernel.json"))
        km.wrap = place.wrap
        client = _client_class()(km=km, timeout=job["timeout"], interrupt_on_timeout=False, allow_errors=True,
                                 shutdown_kernel="immediate", extra_arguments=list(job["extra_arguments"]),
                                 raise_on_iopub_timeout=False)
        client.output_cap = limits.output_kb * 1024
        client.nb, client.resources = nb, {"metadata": {"path": str(place.run_dir)}}
        watchdog = None
        code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        try:
            with client.setup_kernel(env={**os.environ, **place.env}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL):
                watchdog = Watchdog(km.provisioner.process, place.run_dir, limits)
                watchdog.start()
                baseline = snapshot(client) if job.get("guard", True) else None
                for index in code_cells:
                    cell = nb.cells[index]
                    try:
                        tampered = execute_guarded(client, cell, index, baseline)
                        if tampered:
                            guard_reasons.append(tampered)
                    except CellTimeoutError:
                        reason = f"{_label(cell, index)} ran longer than {job['timeout']} s; the cells after it were not run"
                        stopped_at = index
                        break
                    except DeadKernelError:
                        process = km.provisioner.process if km.provisioner else None
                        if process is not None:
                            try:
                                process.wait(timeout=5)
                            except subprocess.TimeoutExpired:
                                pass
                        reason = (watchdog.reason or _dead_kernel_reason(process.poll() if process else None,
                                                                         _label(cell, index), limits))
                        stopped_at = index
                        break
                    if watchdog.reason:
                        reason, stopped_at = watchdog.reason, index
                        break
        except (RuntimeError, TimeoutError, OSError) as error:  # the kernel did not start or answer
            if stopped_at is None:
                reason = reason or (watchdog.reason if watchdog and watchdog.reason else
                                    f"the kernel stopped answering ({type(error).__name__}: {error})")
                stopped_at = next((i for i in code_cells if not nb.cells[i].get("outputs") and
                                   nb.cells[i].get("execution_count") is None), None)
        finally:
            if watchdog is not None:
                watchdog.done.set()
                watchdog.join()
        if stopped_at is not None:
            for index in code_cells:
                cell = nb.cells[index]
                if index == stopped_at or (index > stopped_at):
                    if index > stopped_at or not any(o.get("output_type") == "error" for o in cell.outputs):
                        cell.outputs.append(new_output("error", ename=NOT_RUN, evalue=reason,
                                                       traceback=[f"Not run: {reason}"]))
    if guard_reasons:
        later = [f"{len(guard_reasons) - 1} more test cell(s) likewise"] if len(guard_reasons) > 1 else []
        reason = "; ".join(([reason] if reason else []) + guard_reasons[:1] + later)
    return reason, (watchdog.peak_bytes if watchdog else 0)


def execute_job(job: dict) -> dict:
    """Run every notebook of ``job``; see the module docstring."""
    import nbformat

    start = time.monotonic()
    limits = Limits(**job["limits"])
    sandbox = SANDBOXES[job["sandbox"]](job["assignment"], job["allowed_modules"], limits, limits.threads)
    result = {"student": job["student"], "notebooks": {}, "reason": None, "seconds": None, "peak_mb": None,
              "error": None}
    reasons, peak = [], 0
    try:
        for name, source in job["notebooks"].items():
            nb = nbformat.reads(source, as_version=4)
            reason, peak_bytes = execute_notebook(nb, sandbox, job, limits)
            reasons += [reason] if reason else []
            reasons += [r.replace("{memory}", str(limits.memory_mb)) for r in _scan_reasons(nb, job["assignment"])]
            peak = max(peak, peak_bytes)
            result["notebooks"][name] = nbformat.writes(nb)
    except SandboxUnavailable as error:
        result["error"] = f"the sandbox did not start: {error}"
    result["reason"] = "; ".join(dict.fromkeys(reasons)) or None
    result["seconds"] = round(time.monotonic() - start, 2)
    result["peak_mb"] = round(peak / 2 ** 20, 1) if peak else None
    return result


def run_job(job: dict) -> dict:
    """:func:`execute_job` in a fresh Python process (also what a Dask worker runs)."""
    limit = job["limits"]["wall_seconds"] * len(job["notebooks"]) + 300
    try:
        done = subprocess.run([sys.executable, "-m", "gmcourse.grading.execute"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"student": job["student"], "notebooks": {}, "error": f"the grading process ran past {limit} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"student": job["student"], "notebooks": {}, "error": f"the grading process failed: {last}"}
    return json.loads(done.stdout)


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)  # nbclient's own log lines about the kernel; reasons are in the result
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the result
    result_stream.write(json.dumps(execute_job(json.loads(sys.stdin.read()))))
    result_stream.close()
