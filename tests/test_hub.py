"""The download stage: silent and offline by default, fast and clear when the hub is out of reach.

No test here opens a network connection: the download functions and the reachability probe
are replaced, and the default-params tests forbid sockets outright.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml

from pipa import hub
from pipa.config import Config, parse

ROOT = Path(__file__).resolve().parents[1]


def _default_params() -> Config:
    return parse(yaml.safe_load((ROOT / "params.yaml").read_text()))


def _real_params() -> Config:
    from pipa.preset import apply_preset

    return parse(apply_preset(ROOT / "params.yaml", ROOT / "params" / "real.yaml"))


def _forbidden(*args, **kwargs):
    raise AssertionError("the network was touched")


@pytest.fixture
def no_sockets(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    monkeypatch.setattr(socket.socket, "connect", _forbidden)


def test_default_params_request_nothing(tmp_path, no_sockets) -> None:
    params = _default_params()
    req = hub.requests(params)
    assert req == {"dataset": None, "models": {}, "gguf": {}}
    manifest = hub.fetch(params, tmp_path / "m", tmp_path / "d", snapshot=_forbidden,
                         download_file=_forbidden, reachable=_forbidden)
    assert manifest["requested"] is False and manifest["network"] is False
    assert "nothing to download" in manifest["note"]
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()


def test_download_stage_default_writes_manifest(tmp_path, run_download_offline) -> None:
    """The stage script itself, as DVC runs it, with the socket layer disabled."""
    started = time.perf_counter()
    out = run_download_offline(tmp_path, "--models-root", "m", "--data-root", "d",
                               "--manifest", "d/manifest.json")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["requested"] is False
    assert "nothing to download" in out.stdout
    assert time.perf_counter() - started < 30


def test_real_preset_requests_models_and_alphamath() -> None:
    req = hub.requests(_real_params())
    assert req["models"]["ds"]["hub_id"] == "deepseek-ai/deepseek-math-7b-instruct"
    assert req["models"]["qw"]["hub_id"] == "Qwen/Qwen2.5-Math-7B-Instruct"
    assert req["dataset"]["repo_id"] == "MARIO-Math-Reasoning/AlphaMath-Trainset"
    assert hub.needs_network(req)


def test_unreachable_hub_fails_fast_with_clear_message(tmp_path, monkeypatch) -> None:
    """The real probe, with the socket layer failing the way a dead network does."""
    calls = []

    def dead_network(address, timeout=None, *args, **kwargs):
        calls.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", dead_network)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    started = time.perf_counter()
    with pytest.raises(hub.HubError, match="cannot reach the Hugging Face hub") as info:
        hub.fetch(_real_params(), tmp_path / "m", tmp_path / "d", snapshot=_forbidden,
                  download_file=_forbidden)
    assert time.perf_counter() - started < 10
    assert calls == [(("huggingface.co", 443), hub.PROBE_TIMEOUT_S)]
    assert hub.PROBE_TIMEOUT_S <= 10
    assert "docs/real_setting.md" in str(info.value)
    assert not (tmp_path / "m").exists()


def test_offline_download_error_is_explained(tmp_path, monkeypatch) -> None:
    """Probe passes but the download raises what huggingface_hub raises offline."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline_snapshot(repo_id, local_dir, revision, allow_patterns):
        raise OfflineModeIsEnabled(f"Cannot reach https://huggingface.co/{repo_id}")

    started = time.perf_counter()
    with pytest.raises(hub.HubError, match="deepseek-ai/deepseek-math-7b-instruct") as info:
        hub.fetch(_real_params(), tmp_path / "m", tmp_path / "d", snapshot=offline_snapshot,
                  download_file=_forbidden, reachable=lambda: None)
    assert time.perf_counter() - started < 10
    assert "unreachable" in str(info.value)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the guard is back after the failed call


def test_offline_guard_lifted_only_inside_the_download_call(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = []

    def fake_snapshot(repo_id, local_dir, revision, allow_patterns):
        seen.append(("model", os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "model.safetensors").write_bytes(b"")
        return str(local_dir)

    def fake_file(repo_id, filename, local_dir, revision):
        seen.append(("data", os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / filename).write_text("[]")
        return str(Path(local_dir) / filename)

    manifest = hub.fetch(_real_params(), tmp_path / "m", tmp_path / "d",
                         snapshot=fake_snapshot, download_file=fake_file,
                         reachable=lambda: None)
    assert seen == [("model", None, False), ("model", None, False), ("data", None, False)]
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert set(manifest["models"]) == {"ds", "qw"}
    assert manifest["dataset"]["path"].endswith("train.json")


def test_snapshot_without_safetensors_is_an_error(tmp_path) -> None:
    def empty_snapshot(repo_id, local_dir, revision, allow_patterns):
        Path(local_dir).mkdir(parents=True)
        return str(local_dir)

    with pytest.raises(hub.HubError, match="hub_allow_patterns"):
        hub.fetch(_real_params(), tmp_path / "m", tmp_path / "d", snapshot=empty_snapshot,
                  download_file=_forbidden, reachable=lambda: None)
