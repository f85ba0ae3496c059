"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
