"""Independent pieces of one stage run side by side in forked worker processes.

Why: the default's models are so small that two torch threads on one matmul buy little
(the work per op is too short to split well), while two single-thread processes doing two
independent jobs use both cores fully. A grid cell has such jobs: the candidates of the
learning-rate grid (each trained and validated on its own) and the benchmarks of the test
evaluation. ``runtime.workers`` says how many processes; ``runtime.threads`` is split
between them. With one worker everything runs inline, in this process, with all threads:
that is the setting for a GPU, where candidates would compete for one device's memory.

Results do not depend on how the jobs are scheduled: each job seeds itself and runs with
``runtime.threads // runtime.workers`` threads whether it runs in a worker or inline, and the
results come back in the order of the inputs. That is what lets a scheduler that runs
several stages at once (``scripts/parallel_repro.py``) cap the processes per stage with
``PIPA_MAX_WORKERS`` without changing a number: DVC does not track the variable, and need not.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

_JOB: Callable[[Any], Any] | None = None
_IN_WORKER = False
MAX_WORKERS_ENV = "PIPA_MAX_WORKERS"


def _init_worker(threads: int) -> None:
    global _IN_WORKER
    # One thread per worker keeps each child out of the parent's OpenMP pool (a parallel
    # region with one thread runs inline), which is what makes fork safe here.
    torch.set_num_threads(threads)
    _IN_WORKER = True


def _run(item: Any) -> Any:
    assert _JOB is not None
    return _JOB(item)


def max_workers(workers: int) -> int:
    """``runtime.workers``, capped by ``$PIPA_MAX_WORKERS`` when a scheduler sets it (several
    stages at once: each then runs its jobs in fewer processes, with the same results)."""
    raw = os.environ.get(MAX_WORKERS_ENV, "").strip()
    if not raw:
        return int(workers)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${MAX_WORKERS_ENV}={raw!r}: expected a positive integer (the most "
                         "worker processes per stage), or unset it")
    return min(int(workers), int(raw))


def worker_plan(threads: int, workers: int, n_jobs: int) -> tuple[int, int]:
    """``(processes, threads per job)`` for ``n_jobs`` jobs under ``runtime.threads`` /
    ``runtime.workers``: never more processes than jobs, and every job gets
    ``threads // workers`` threads, inline or forked, so the numbers do not depend on the
    number of processes (``max_workers``)."""
    if _IN_WORKER:  # a job of a worker (validation inside an lr candidate) runs inline
        return 1, max(1, torch.get_num_threads())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # A forked child cannot use the parent's CUDA context: jobs on a GPU run inline.
        return 1, max(1, int(threads))
    per_job = max(1, int(threads) // max(1, int(workers)))
    return max(1, min(max_workers(workers), int(n_jobs))), per_job


def fork_map(job: Callable[[Any], Any], items: Iterable[Any], *, threads: int,
             workers: int) -> list[Any]:
    """``[job(item) for item in items]``, run in up to ``workers`` forked processes.

    ``job`` may be a closure (it is inherited through fork, never pickled); items and
    results are pickled. An exception in a job is raised here with its message. With one
    process the jobs run inline, each with the threads a worker would have had.
    """
    global _JOB
    items = list(items)
    processes, per_job = worker_plan(threads, workers, len(items))
    if processes == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(per_job)  # what a worker would have: the same numbers
        try:
            return [job(item) for item in items]
        finally:
            torch.set_num_threads(before)
    _JOB = job
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(processes, initializer=_init_worker, initargs=(per_job,)) as pool:
            return pool.map(_run, items, chunksize=1)
    finally:
        _JOB = None
