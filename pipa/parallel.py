"""Independent pieces of one stage run side by side in forked worker processes.

Why: the default's models are so small that two torch threads on one matmul buy little
(the work per op is too short to split well), while two single-thread processes doing two
independent jobs use both cores fully. A grid cell has such jobs: the candidates of the
learning-rate grid (each trained and validated on its own) and the benchmarks of the test
evaluation. ``runtime.workers`` says how many processes; ``runtime.threads`` is split
between them. With one worker everything runs inline, in this process, with all threads:
that is the setting for a GPU, where candidates would compete for one device's memory.

Determinism does not depend on the split: each job seeds itself and runs with a fixed
thread count, and the results come back in the order of the inputs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

import torch

_JOB: Callable[[Any], Any] | None = None
_IN_WORKER = False


def _init_worker(threads: int) -> None:
    global _IN_WORKER
    # One thread per worker keeps each child out of the parent's OpenMP pool (a parallel
    # region with one thread runs inline), which is what makes fork safe here.
    torch.set_num_threads(threads)
    _IN_WORKER = True


def _run(item: Any) -> Any:
    assert _JOB is not None
    return _JOB(item)


def worker_plan(threads: int, workers: int, n_jobs: int) -> tuple[int, int]:
    """``(processes, threads per process)`` for ``n_jobs`` jobs: never more processes than
    jobs, and the threads shared out so the machine is not oversubscribed."""
    if _IN_WORKER:  # a job of a worker (validation inside an lr candidate) runs inline
        return 1, max(1, torch.get_num_threads())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # A forked child cannot use the parent's CUDA context: jobs on a GPU run inline.
        return 1, max(1, int(threads))
    processes = max(1, min(int(workers), int(n_jobs)))
    return processes, max(1, int(threads) // processes)


def fork_map(job: Callable[[Any], Any], items: Iterable[Any], *, threads: int,
             workers: int) -> list[Any]:
    """``[job(item) for item in items]``, run in up to ``workers`` forked processes.

    ``job`` may be a closure (it is inherited through fork, never pickled); items and
    results are pickled. An exception in a job is raised here with its message. With one
    process the jobs run inline with ``threads`` threads.
    """
    global _JOB
    items = list(items)
    processes, per_worker = worker_plan(threads, workers, len(items))
    if processes == 1:
        return [job(item) for item in items]
    _JOB = job
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(processes, initializer=_init_worker, initargs=(per_worker,)) as pool:
            return pool.map(_run, items, chunksize=1)
    finally:
        _JOB = None
