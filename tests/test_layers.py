"""The import rules of docs/ARCHITECTURE.md, checked on the code: each layer imports only
what its place allows, so the layout stays the architecture as the code grows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipa.code_manifest import import_closure

ROOT = Path(__file__).resolve().parents[1]

# The losses are pure functions of tensors: torch, the registry and their shared terms.
LOSSES = ("pipa/losses.py", "pipa/loss_terms.py")
# The data layer: the world, its solver, AlphaMath records, labels, benchmarks, grading
# (``pipa/examples.py`` is the bridge that turns labelled records into training Examples).
DATA = ("pipa/world.py", "pipa/solver.py", "pipa/alphamath.py", "pipa/labels.py",
        "pipa/benchmarks.py", "pipa/grading.py")
TRAINING = {"pipa/training.py", "pipa/align.py", "pipa/finetune.py", "pipa/pretrain.py",
            "pipa/losses.py", "pipa/loss_terms.py", "pipa/batching.py", "pipa/prior.py"}


def _third_party(path: Path) -> set[str]:
    """Top-level names of the packages ``path`` imports that are not ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"pipa", "__future__"}


def _closure(rel: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / rel, ROOT)}


@pytest.mark.parametrize("rel", LOSSES)
def test_losses_import_only_torch_and_their_own_terms(rel):
    assert _closure(rel) <= {rel, "pipa/__init__.py", "pipa/registry.py", *LOSSES}
    stdlib = {"math", "dataclasses", "collections", "typing", "inspect"}
    assert _third_party(ROOT / rel) <= {"torch"} | stdlib


def test_reports_never_import_torch_or_training():
    reports = [*sorted((ROOT / "pipa" / "reports").glob("*.py")), ROOT / "pipa" / "cells.py",
               ROOT / "pipa" / "compare.py", ROOT / "pipa" / "paper_numbers.py"]
    closure = set().union(*(_closure(p.relative_to(ROOT).as_posix()) for p in reports))
    assert not closure & TRAINING, sorted(closure & TRAINING)
    for rel in sorted(closure):
        assert "torch" not in _third_party(ROOT / rel), rel


CONFIG = ("pipa/config.py", "pipa/schema.py", "pipa/config_types.py", "pipa/registry.py")


@pytest.mark.parametrize("rel", CONFIG)
def test_the_config_layer_imports_only_itself_and_no_torch(rel):
    """Every layer reads the typed config, so it must import none of them."""
    closure = _closure(rel)
    assert closure <= {"pipa/__init__.py", *CONFIG}, sorted(closure - set(CONFIG))
    for path in closure:
        assert "torch" not in _third_party(ROOT / path), path


@pytest.mark.parametrize("rel", DATA)
def test_data_knows_no_trainer_and_no_loss(rel):
    closure = _closure(rel)
    assert not closure & TRAINING, sorted(closure & TRAINING)


# The modules that read params.yaml as a mapping: the loader and its checks, and the typed
# config they build. The world generator owns its own knobs (``pipa.world.world_cfg``).
READS_PARAMS = {"pipa/config.py", "pipa/schema.py", "pipa/config_types.py", "pipa/preset.py"}


@pytest.mark.parametrize("rel", sorted(
    p.relative_to(ROOT).as_posix() for p in [*(ROOT / "pipa").rglob("*.py"),
                                              *(ROOT / "stages").glob("*.py")]
    if p.relative_to(ROOT).as_posix() not in READS_PARAMS))
def test_the_library_and_the_stages_read_the_typed_config_never_params_keys(rel):
    """Past ``pipa.config.load`` nothing looks a parameter up by its dotted name or loads
    params.yaml again: ``config.get``, ``load_params`` and ``validate`` stay in the loader."""
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    banned = {"get", "load_params", "validate", "lr_grid"}
    aliases = {a.asname or a.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module == "pipa"
               for a in node.names if a.name == "config"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr in banned:
            pytest.fail(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}; read the Config")
        if isinstance(node, ast.ImportFrom) and node.module == "pipa.config":
            names = {a.name for a in node.names} & banned
            assert not names, f"{rel}:{node.lineno}: imports {sorted(names)} from pipa.config"
