"""Code manifests (the preflight stage): each stage script's import closure, and dvc.yaml
wired to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipa.code_manifest import import_closure, manifest, stage_scripts, write_manifests

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A repository with a package ``pkg`` (a subpackage too) and two stage scripts."""
    write(tmp_path / "pkg/__init__.py", "")
    write(tmp_path / "pkg/a.py", "import json\nfrom pkg import b\n")
    write(tmp_path / "pkg/b.py", "from . import c\nfrom .sub.d import thing\n")
    write(tmp_path / "pkg/c.py", "def late():\n    from pkg.e import x  # lazy: still runs\n")
    write(tmp_path / "pkg/e.py", "import pkg.a  # a cycle back to a\nx = 1\n")
    write(tmp_path / "pkg/sub/__init__.py", "")
    write(tmp_path / "pkg/sub/d.py", "from .. import f\nthing = 1\n")
    write(tmp_path / "pkg/f.py", "import torch  # third party: not followed\n"
          "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import unused\n")
    write(tmp_path / "pkg/unused.py", "x = 2\n")
    write(tmp_path / "stages/_boot.py", "import os\nimport pkg.f\n")
    write(tmp_path / "stages/one.py", "import argparse\nimport _boot\nfrom pkg.a import b\n")
    write(tmp_path / "stages/two.py", "import _boot\n")
    return tmp_path


def rel(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root.resolve()).as_posix() for p in paths]


def test_closure_follows_every_kind_of_import(toy):
    got = rel(import_closure(toy / "stages/one.py", toy), toy)
    assert got == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/e.py",
                   "pkg/f.py", "pkg/sub/__init__.py", "pkg/sub/d.py", "stages/_boot.py",
                   "stages/one.py"]
    assert rel(import_closure(toy / "stages/two.py", toy), toy) == [
        "pkg/__init__.py", "pkg/f.py", "stages/_boot.py", "stages/two.py"]


def test_manifest_changes_exactly_with_the_files_it_runs(toy):
    before = manifest(toy / "stages/two.py", toy)
    assert before["script"] == "stages/two.py"
    write(toy / "pkg/unused.py", "x = 3\n")           # not imported by two.py
    write(toy / "pkg/a.py", "from pkg import b\n")    # not imported by two.py either
    assert manifest(toy / "stages/two.py", toy) == before
    write(toy / "pkg/f.py", "import torch\nY = 1\n")  # imported through _boot
    after = manifest(toy / "stages/two.py", toy)
    assert after["files"]["pkg/f.py"] != before["files"]["pkg/f.py"]
    assert {k: v for k, v in after["files"].items() if k != "pkg/f.py"} == \
        {k: v for k, v in before["files"].items() if k != "pkg/f.py"}


def test_write_manifests_is_whole_or_nothing(toy):
    out = toy / "data/code"
    counts = write_manifests(toy / "stages", toy, out)
    assert counts == {"one": 10, "two": 4}  # _boot.py is a helper, not a stage script
    saved = {p.name: p.read_text() for p in out.iterdir()}
    assert json.loads(saved["two.json"])["files"].keys() == {
        "pkg/__init__.py", "pkg/f.py", "stages/_boot.py", "stages/two.py"}
    write(toy / "pkg/c.py", "def broken(:\n")
    with pytest.raises(ValueError, match=r"pkg/c\.py: cannot parse .*line 1"):
        write_manifests(toy / "stages", toy, out)
    assert {p.name: p.read_text() for p in out.iterdir()} == saved
    with pytest.raises(ValueError, match="no stage scripts"):
        write_manifests(toy / "pkg/sub/nothing", toy, out)


def test_the_align_stage_runs_modules_the_old_hand_lists_missed():
    files = manifest(ROOT / "stages/align.py", ROOT)["files"]
    # reached only through functions of pipa/align.py and its helpers or through stages/_boot.py
    for module in ("pipa/losses.py", "pipa/world.py", "pipa/config.py", "pipa/alphamath.py",
                   "stages/_boot.py", "stages/align.py"):
        assert module in files
    assert "pipa/reports/__init__.py" not in files and "pipa/hub.py" not in files


def test_long_stages_do_not_depend_on_code_they_never_run():
    """The base models (9 min) and the world re-run only for their own code: not for the
    losses, the label rules, the value head or the alignment workflow."""
    def closure(script: str) -> set[str]:
        return set(manifest(ROOT / "stages" / script, ROOT)["files"])

    assert closure("base.py") == {
        "pipa/__init__.py", "pipa/batching.py", "pipa/config.py", "pipa/config_types.py",
        "pipa/hardware.py", "pipa/io.py", "pipa/live.py", "pipa/models.py", "pipa/parallel.py", "pipa/pretrain.py",
        "pipa/registry.py", "pipa/schema.py", "pipa/training.py", "stages/_boot.py",
        "stages/base.py"}
    assert closure("world.py") == {"pipa/__init__.py", "pipa/config.py",
                                   "pipa/config_types.py", "pipa/io.py",
                                   "pipa/registry.py", "pipa/schema.py", "pipa/solver.py",
                                   "pipa/world.py", "stages/_boot.py", "stages/world.py"}
    assert "pipa/losses.py" not in closure("labels.py")
    # it checks the algorithm names against the torch-free registry, not the losses
    assert "pipa/registry.py" in closure("preflight.py")
    assert "pipa/losses.py" not in closure("preflight.py")


def test_table5s_search_cells_do_not_depend_on_the_report_code():
    """An edit to the tables' code re-runs the tables (report, table5), never the searches
    (minutes of decoding) that Table 5 reads."""
    files = set(manifest(ROOT / "stages/search.py", ROOT)["files"])
    assert {"pipa/search.py", "pipa/search_eval.py"} <= files
    assert not {f for f in files if f.startswith("pipa/reports/")}, sorted(files)
    assert "pipa/reports/search_table.py" in manifest(ROOT / "stages/table5.py", ROOT)["files"]


def test_a_loss_edit_reruns_the_cells_never_sampling_sft_the_priors_or_their_evaluation():
    """The stages upstream of alignment never import the preference losses or the cell's
    code: editing DPO's loss (or how a cell picks its lr) re-runs the cells and what reads
    them, not the samples, the SFT models, the priors or the SFT evaluation."""
    def closure(script: str) -> set[str]:
        return set(manifest(ROOT / "stages" / script, ROOT)["files"])

    for script in ("sample.py", "sft.py", "prior.py", "evaluate.py"):
        files = closure(script)
        assert "pipa/losses.py" not in files and "pipa/align.py" not in files, script
    assert "pipa/labels.py" not in closure("evaluate.py")  # evaluation reads no labels
    for script in ("align.py", "ablation.py", "sweep.py", "reduction_study.py"):
        assert {"pipa/losses.py", "pipa/align.py"} <= closure(script), script


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_depends_on_its_scripts_manifest_and_lists_no_code_itself():
    scripts = {p.stem for p in stage_scripts(ROOT / "stages")}
    checked = 0
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        deps = body.get("deps", [])
        if name == "preflight":
            assert deps == ["pipa", "stages"] and body["outs"] == ["data/code"]
            continue
        used = set(re.findall(r"python stages/(\w+)\.py", cmd))
        assert used and used <= scripts, f"{name}: runs {used}"
        assert {f"data/code/{s}.json" for s in used} <= set(deps), name
        code_files = [d for d in deps if re.match(r"(pipa|stages)/", d)]
        assert not code_files, f"{name} lists code files directly: {code_files}"
        checked += 1
    assert checked >= 15
