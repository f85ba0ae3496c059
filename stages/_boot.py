"""Shared start of every stage script: repo root on sys.path, offline guards, validated params."""

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


def params(path: str = "params.yaml", algorithms=None) -> dict:
    """Load and validate params; a bad key stops the stage before any work, naming the fix.

    ``algorithms``: the ``ALGORITHMS`` table, passed by the stages that train or evaluate
    with algorithm names (they import ``pipa.losses`` anyway), so the names are checked
    too; the others leave it out and so do not depend on ``pipa/losses.py``. The
    ``preflight`` stage checks the names before any stage runs."""
    from pipa.config import ConfigError, load_params, validate

    try:
        loaded = load_params(path)
        validate(loaded, path, algorithms)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    return loaded
