"""dvclive loggers for jobs that run side by side in forked workers (``pipa.parallel``).

Its own module so the base stage (which logs pretraining from two workers) depends on it
without depending on the whole workflow.
"""

from __future__ import annotations

import os
from pathlib import Path


def forked_live(folder: Path):
    """dvclive logger of a job that may run beside others (an lr candidate, a base model),
    kept away from git.

    Under `dvc exp run`, ``Live.end`` git-adds the untracked files of its folder. An lr
    candidate's folder is temporary (the chosen one is moved into the stage's output, which
    DVC tracks; the others are deleted), and two forked jobs adding at once collide on
    git's index lock. dvclive decides it is inside an experiment from
    ``DVC_EXP_BASELINE_REV`` when the logger is made: hide it then. Its per-step signal
    file for the VS Code extension (``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED``) races the
    same way (one job removes it between the other's check and removal): these loggers do
    not signal.
    """
    import dvclive.live
    from dvclive import Live

    dvclive.live.mark_dvclive_step_completed = lambda step: None
    dvclive.live.cleanup_dvclive_step_completed = lambda: None

    saved = os.environ.pop("DVC_EXP_BASELINE_REV", None)
    try:
        return Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)
    finally:
        if saved is not None:
            os.environ["DVC_EXP_BASELINE_REV"] = saved
