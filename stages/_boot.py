"""Shared start of every stage script: repo root on sys.path, offline guards, the typed config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# No network at run time: a missing model/dataset file fails fast instead of hanging.
for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(key, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DVCLIVE_OPEN", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: two torch processes on few cores (a stage
# beside a test run) otherwise slow each other down by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _one_line_errors(kind, err, tb, _default=sys.excepthook):
    """Bad input (``pipa.io.DataError``) and bad params (``pipa.config.ConfigError``) reach
    the user as their message, not a traceback: it already names the file, the row or key
    and the fix. Anything else is a bug and keeps its traceback."""
    ours = {"pipa.io.DataError", "pipa.config.ConfigError"}
    if any(f"{c.__module__}.{c.__qualname__}" in ours for c in kind.__mro__):
        print(f"error: {err}", file=sys.stderr, flush=True)
    else:
        _default(kind, err, tb)


sys.excepthook = _one_line_errors  # the process still exits with status 1


# Where the launchers (torchrun / `accelerate launch`, DeepSpeed, mpirun) put a process's rank.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")


def outputs(*paths) -> None:
    """Start of a stage: remove the temporaries a killed run of it left beside its declared
    outputs ``paths`` (``.tmp-<name>-*``: ``pipa.io.remove_stale_temporaries``), and nothing
    else. Under a launcher only the process of rank 0 does, before it writes anything: the
    others write nothing beside the outputs (``pipa.training.main_process_path``) and must
    not remove what rank 0 is writing."""
    if any(os.environ.get(key, "0").strip() not in ("", "0") for key in RANK_VARIABLES):
        return
    from pipa.io import remove_stale_temporaries

    for stale in remove_stale_temporaries(*(p for p in paths if p)):
        print(f"removed {stale}, the temporary of a run that was killed", flush=True)


def launcher_problem(launcher) -> str | None:
    """What is wrong with params' ``runtime.launcher``, the prefix of the training stages'
    commands in dvc.yaml (``<launcher> python stages/...``), or None. The preflight stage
    checks it, so a bad one stops the run before any training stage starts."""
    if not isinstance(launcher, str):
        return (f"runtime.launcher={launcher!r}: expected a string, \"\" for plain python "
                "(an empty `launcher:` is null in YAML, which DVC writes into the commands "
                "as `None`)")
    words = launcher.split()
    while words and (words[0] == "env" or "=" in words[0]):  # env VAR=value ... prefixes
        words.pop(0)
    if words and Path(words[0]).name in ("accelerate", "torchrun") \
            and not {"--no_python", "--no-python"} & set(words):
        return (f"runtime.launcher={launcher!r}: add --no_python (the commands go on with "
                f"`python stages/<script>.py`, and {Path(words[0]).name} would run `python` "
                "itself as the script)")
    return None


def config(path: str = "params.yaml", algorithms=None):
    """Load, validate and type params (``pipa.config.load``): the ``Config`` the stage
    passes to the library. A bad key stops the stage before any work, naming the fix.

    ``algorithms``: the table the algorithm names are checked against (default: the
    torch-free ``pipa.registry.ALGORITHMS``; the training stages pass ``pipa.losses``'s,
    the same entries with their loss functions). The ``preflight`` stage checks the whole
    file before any stage runs; each stage checks again (milliseconds) because DVC, or a
    user, may run one stage on its own."""
    from pipa.config import ConfigError, load

    try:
        return load(path, algorithms)
    except ConfigError as err:
        sys.exit(f"error: {err}")
