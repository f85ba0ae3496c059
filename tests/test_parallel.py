"""pipa.parallel: forked jobs give the inline results, in order; errors surface."""

import os

import pytest
import torch

from pipa.parallel import MAX_WORKERS_ENV, fork_map, max_workers, worker_plan


def test_worker_plan_never_oversubscribes():
    assert worker_plan(2, 2, 5) == (2, 1)
    assert worker_plan(2, 2, 1) == (1, 1)      # one job: inline, with a worker's threads
    assert worker_plan(8, 1, 3) == (1, 8)      # GPU setting: one process
    assert worker_plan(1, 4, 4) == (4, 1)
    assert worker_plan(8, 2, 4) == (2, 4)


def test_max_workers_env_caps_processes_not_threads(monkeypatch):
    monkeypatch.setenv(MAX_WORKERS_ENV, "1")
    assert max_workers(2) == 1
    assert worker_plan(2, 2, 5) == (1, 1)      # same threads per job as in a worker
    monkeypatch.setenv(MAX_WORKERS_ENV, "8")
    assert worker_plan(2, 2, 5) == (2, 1)      # a cap, never more than runtime.workers
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(MAX_WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=f"\\${MAX_WORKERS_ENV}='{bad}'.*positive"):
            max_workers(2)


def test_capped_inline_jobs_match_forked_ones(monkeypatch):
    """What a scheduler running stages side by side relies on: PIPA_MAX_WORKERS=1 runs the
    jobs inline, each with a worker's thread count, and the numbers are the forked ones."""
    weights = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))

    def job(k: int) -> tuple[bytes, int]:
        torch.manual_seed(k)
        x = torch.randn(32, 64)
        return (x @ weights @ weights).numpy().tobytes(), torch.get_num_threads()

    forked = fork_map(job, range(3), threads=2, workers=2)
    monkeypatch.setenv(MAX_WORKERS_ENV, "1")
    before = torch.get_num_threads()
    inline = fork_map(job, range(3), threads=2, workers=2)
    assert torch.get_num_threads() == before           # restored after the inline jobs
    assert [t for _, t in inline] == [1, 1, 1] == [t for _, t in forked]
    assert [b for b, _ in inline] == [b for b, _ in forked]


def test_fork_map_matches_inline_and_keeps_order():
    weights = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))

    def job(k: int) -> tuple[int, float, int]:  # a closure: inherited, never pickled
        torch.manual_seed(k)
        x = torch.randn(8, 16)
        return k, float((x @ weights).sum()), os.getpid()

    inline = fork_map(job, range(5), threads=1, workers=1)
    forked = fork_map(job, range(5), threads=2, workers=2)
    assert [r[:2] for r in forked] == [r[:2] for r in inline]
    assert {r[2] for r in inline} == {os.getpid()}
    assert os.getpid() not in {r[2] for r in forked}


def test_nested_fork_map_runs_inline_in_a_worker():
    def inner(k):
        return os.getpid()

    def outer(k):
        return len(set(fork_map(inner, range(4), threads=2, workers=2))), os.getpid()

    for n_pids, pid in fork_map(outer, range(2), threads=2, workers=2):
        assert n_pids == 1 and pid != os.getpid()


def test_error_in_a_job_is_raised_with_its_message():
    def job(k):
        if k == 3:
            raise ValueError(f"bad item {k}")
        return k

    with pytest.raises(ValueError, match="bad item 3"):
        fork_map(job, range(4), threads=2, workers=2)
