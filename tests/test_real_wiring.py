"""The real setting's wiring: params' ``paths`` route the stages to the download stage's outputs.

No network and no training: the real preset is applied in memory, the hub downloads are
replaced by fakes, and the DVC pipeline is only rendered (``dvc.repo.Repo(...).index.graph``)
in a scratch copy of the repository, never run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import networkx as nx
import pytest
import yaml

from pipa import hub
from pipa.config import parse
from pipa.preset import apply_preset

ROOT = Path(__file__).resolve().parents[1]
HUB_MODELS = "models/hub"
# DVC 3.67's graph code reads pygtrie's deprecated `_NoneStep.value` on every stage.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")
HUB_TRAIN = "data/hub/alphamath/train.json"


def _params(preset: str | None) -> dict:
    if preset is None:
        return yaml.safe_load((ROOT / "params.yaml").read_text())
    return apply_preset(ROOT / "params.yaml", ROOT / "params" / f"{preset}.yaml")


def test_real_preset_paths_point_at_the_hub_outputs() -> None:
    params = _params("real")
    assert params["paths"]["base_models"] == HUB_MODELS
    assert params["paths"]["train_data"] == HUB_TRAIN
    assert params["data"]["alphamath_path"] == HUB_TRAIN
    for name in params["models"]:
        assert params["model_families"][name]["path"] == f"{HUB_MODELS}/{name}"
    bench = Path(params["data"]["benchmark_dir"])
    assert Path(params["paths"]["val_data"]) == bench / "gsm8k" / "train.jsonl"
    assert Path(params["paths"]["test_data"]) == bench
    default = _params(None)["paths"]
    assert default == {"base_models": "models/base", "train_data": "data/alphamath/train.json",
                       "val_data": "data/world/val.jsonl", "test_data": "data/world/test.jsonl"}
    assert _params("smollm2")["paths"]["base_models"] == HUB_MODELS


def test_real_paths_are_where_the_download_stage_writes(tmp_path) -> None:
    """pipa.hub.fetch with the stage's roots (fakes instead of the hub) lands on ``paths``."""
    params = _params("real")

    def fake_snapshot(repo_id, local_dir, revision, allow_patterns):
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "model.safetensors").write_bytes(b"")
        return str(local_dir)

    def fake_file(repo_id, filename, local_dir, revision):
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / filename).write_text("[]")
        return str(Path(local_dir) / filename)

    # The roots dvc.yaml's download command passes, relative to the repository root.
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        manifest = hub.fetch(parse(params), "models/hub", "data/hub", snapshot=fake_snapshot,
                             download_file=fake_file, reachable=lambda: None)
    finally:
        os.chdir(cwd)
    paths = params["paths"]
    for name in params["models"]:
        assert Path(manifest["models"][name]["path"]) == Path(paths["base_models"]) / name
    assert Path(manifest["dataset"]["path"]) == Path(paths["train_data"])


def test_download_stage_default_creates_its_output_folders(tmp_path,
                                                         run_download_offline) -> None:
    """Default params: no network, and both declared folders exist with the tracked READMEs."""
    out = run_download_offline(tmp_path, "--models-root", "models/hub", "--data-root",
                               "data/hub", "--manifest", "data/hub/manifest.json")
    assert out.returncode == 0, out.stderr
    for folder in ("models/hub", "data/hub/alphamath"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["README.md"]
        # Byte-identical to the committed file, so dvc.lock's hash of the folder holds.
        assert ((tmp_path / folder / "README.md").read_bytes()
                == (ROOT / folder / "README.md").read_bytes())


def _graph(tmp_path: Path, params: dict):
    """The DVC pipeline rendered with ``params`` in a scratch copy (no git, nothing run)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".dvc").mkdir()
    (repo / ".dvc" / "config").write_text("[core]\n    no_scm = true\n    analytics = false\n")
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph
        stages = {stage.name: stage for stage in graph.nodes}

    def upstream(name: str) -> set[str]:
        # DVC's edges point from a stage to the stages it depends on.
        return {stage.name for stage in nx.descendants(graph, stages[name])}

    def deps(name: str) -> list[str]:
        return [dep.def_path for dep in stages[name].deps]

    return stages, upstream, deps


def test_real_pipeline_reads_the_hub_and_skips_the_world(tmp_path) -> None:
    stages, upstream, deps = _graph(tmp_path, _params("real"))
    assert "models/hub/ds" in deps("sft@ds")
    assert HUB_TRAIN in deps("sft@ds")
    assert "--base models/hub/ds --data data/hub/alphamath/train.json" in stages["sft@ds"].cmd
    assert HUB_TRAIN in deps("labels_step@unpaired")
    assert f"--source {HUB_TRAIN}" in stages["labels_step@unpaired"].cmd
    assert "models/hub/ds" in deps("prior_ft@ds-all")
    assert "download" in upstream("sft@ds") and "download" in upstream("labels_step@unpaired")
    before_report = upstream("report")
    assert "download" in before_report and "sft@ds" in before_report
    assert not {"base", "sample", "world"} & before_report
    download_outs = {str(out.def_path) for out in stages["download"].outs}
    assert {"models/hub", "data/hub/alphamath"} <= download_outs


def test_default_pipeline_still_reads_the_world_stages(tmp_path) -> None:
    stages, upstream, deps = _graph(tmp_path, _params(None))
    assert "--base models/base/ds" in stages["sft@ds"].cmd
    assert "models/base/ds" in deps("sft@ds")
    assert "data/alphamath/train.json" in deps("labels_step@unpaired")
    assert "data/world/val.jsonl" in deps("sft_eval@ds")
    assert {"base", "sample", "world"} <= upstream("report")
    assert "base" in upstream("sft@ds")  # a dep inside the base stage's output folder
    assert "download" not in upstream("report")


def test_grader_agreement_depends_on_the_files_it_reads(tmp_path) -> None:
    """Its deps name the benchmark files in the repository, so a changed file re-runs it."""
    for preset in (None, "real"):
        (tmp_path / str(preset)).mkdir()
        stages, _, deps = _graph(tmp_path / str(preset), _params(preset))
        bench = _params(preset)["data"]["benchmark_dir"]
        assert bench == "data/benchmarks"
        assert f"--data-dir {bench}" in stages["grader_agreement"].cmd
        assert set(deps("grader_agreement")) == {"data/code/grader_agreement.json"} | {
            f"{bench}/{rel}" for rel in (
                "graded_outputs/gsm8k_gpt3_solutions.jsonl",
                "graded_outputs/math_qwen25_cot100.jsonl",
                "gsm8k/test.jsonl", "math/test.jsonl", "math/corrections.json",
                "math/test500.jsonl")}
        assert all((ROOT / dep).is_file() for dep in deps("grader_agreement")
                   if dep.startswith(bench))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
