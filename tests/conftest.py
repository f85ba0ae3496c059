"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micro_pipeline import micro_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_download_offline():
    """Run ``stages/download.py`` as DVC would, in ``folder`` with the default params and
    the socket layer disabled (a ``sitecustomize`` that fails any connection)."""

    def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
        shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
        (folder / "sitecustomize.py").write_text(
            "import socket\n"
            "def _no(*a, **k):\n    raise AssertionError('network touched')\n"
            "socket.create_connection = _no\nsocket.socket.connect = _no\n"
        )
        env = dict(os.environ, PYTHONPATH=str(folder))
        return subprocess.run([sys.executable, str(ROOT / "stages" / "download.py"), *args],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=60,
                              check=False)

    return run


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> Path:
    """The micro pipeline, reproduced once per session and shared by every worker
    (tests/micro_pipeline.py): read it, or copy it (``copy_repo``) before changing it."""
    return micro_pipeline(tmp_path_factory)


# Collection order, which pytest-xdist's --dist loadfile hands out file by file: the file
# that builds the micro pipeline first (its worker then spends minutes on it), the other
# pipeline file last, so the second worker runs the unit tests while the pipeline builds and
# then waits for it only as long as the build still takes.
_FILE_RANK = {"test_pipeline.py": 0, "test_pipeline_reruns.py": 2}  # the rest: 1


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: _FILE_RANK.get(item.path.name, 1))  # stable: the rest keep order
