"""Who runs the jobs: a local pool of worker processes, or a Dask cluster. One narrow interface:
``scheduler.results(jobs)`` yields one result per job (:mod:`gmcourse.grading.execute`) as soon as
it is done, in any order. Workers only execute; the gradebook and the CSV are written by the
command that iterates over the results.

A Dask cluster for a class that outgrows one machine: on the scheduler host run
``dask scheduler`` (it prints ``tcp://HOST:8786``); on every grading machine, with this repository's
environment installed (``make venv``) and bubblewrap able to start, run
``dask worker tcp://HOST:8786 --nthreads 1 --nworkers N``; then grade with
``python -m gmcourse.grading A2_ising_mcmc submitted/ --scheduler tcp://HOST:8786``.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
import uuid
from typing import Iterable, Iterator

from gmcourse.grading.execute import execute_job


def warm_up() -> None:
    """Import what a job needs (nbgrader, nbclient, jupyter_client: seconds) before the first job arrives."""
    from gmcourse.grading.execute import _client_class, _kernel_manager_class

    _client_class()
    _kernel_manager_class()


def exit_with_the_grader(grader_pid: int) -> None:
    """Initializer of each local worker: end this worker (and, through bubblewrap's --die-with-parent,
    its kernel) once the grader is gone. A worker holds both ends of the pool's result pipe, so after a
    ``kill -9`` of the grader it would otherwise block forever sending a result nobody reads."""
    def watch() -> None:
        while os.getppid() == grader_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-the-grader", daemon=True).start()


def _failed(job: dict, why: str) -> dict:
    return {"student": job["student"], "notebooks": {}, "error": why}


class LocalPool:
    """``workers`` processes on this machine, each running one job at a time (each job's kernel in its
    own sandbox). A worker that dies costs only the job it was running: the pool is rebuilt."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.pool = None

    def start(self) -> None:
        """Start the worker processes now and have each import the executor, ahead of the first job."""
        if self.pool is None:
            context = multiprocessing.get_context("spawn")  # no copy of the grader's state, threads or locks
            self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context,
                                                               initializer=exit_with_the_grader,
                                                               initargs=(os.getpid(),))
            for _ in range(self.workers):
                self.pool.submit(warm_up)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers > 1 else ''}"

    def results(self, jobs: Iterable[dict]) -> Iterator[dict]:
        pending = jobs  # consumed lazily: each job is submitted as soon as it is prepared
        while True:
            self.start()
            with self.pool as pool:
                futures = {}
                for job in pending:
                    futures[pool.submit(execute_job, job)] = job
                pending, broken = [], False
                for future in concurrent.futures.as_completed(futures):
                    job = futures[future]
                    try:
                        yield future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        if not broken:  # the first casualty is the job that broke the pool
                            broken = True
                            yield _failed(job, "the grading worker process died while running this submission")
                        else:
                            pending.append(job)  # innocent bystanders: run again in a new pool
                    except Exception as error:  # noqa: BLE001 (a bug in the executor: report it per student)
                        yield _failed(job, f"the grading worker failed: {type(error).__name__}: {error}")
            self.pool = None
            if not pending:
                return


def execute_job_in_own_thread(job: dict) -> dict:
    """:func:`execute_job` on a new thread of its own, for a Dask worker.

    A Dask worker runs several tasks at once on the threads of its pool, next to its own event loop;
    nbclient drives each kernel through an event loop that jupyter_core keeps per thread. Under load
    two jobs could meet the same loop ("This event loop is already running"), so each job gets a
    fresh thread, with a unique name, that lives as long as the job.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = execute_job(job)
        except BaseException as error:  # noqa: BLE001 (re-raised in the calling thread)
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"gmcourse-grade-{job['student']}-{uuid.uuid4().hex[:8]}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class DaskCluster:
    """The jobs on a Dask distributed cluster (``address`` like ``tcp://HOST:8786``)."""

    def __init__(self, address: str):
        self.address = address

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"the Dask scheduler at {self.address}"

    def results(self, jobs: Iterable[dict]) -> Iterator[dict]:
        from distributed import Client, as_completed

        jobs = list(jobs)
        with Client(self.address, timeout="30s") as client:
            futures = {client.submit(execute_job_in_own_thread, job, pure=False, key=f"grade-{job['student']}-{i}"): job
                       for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except Exception as error:  # noqa: BLE001 (a worker lost or failing: report it per student)
                    yield _failed(job, f"the Dask worker failed: {type(error).__name__}: {error}")
