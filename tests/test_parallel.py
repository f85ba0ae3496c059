"""pipa.parallel: forked jobs give the inline results, in order; errors surface."""

import os

import pytest
import torch

from pipa.parallel import fork_map, worker_plan


def test_worker_plan_never_oversubscribes():
    assert worker_plan(2, 2, 5) == (2, 1)
    assert worker_plan(2, 2, 1) == (1, 2)      # one job: inline with every thread
    assert worker_plan(8, 1, 3) == (1, 8)      # GPU setting: one process
    assert worker_plan(1, 4, 4) == (4, 1)


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
