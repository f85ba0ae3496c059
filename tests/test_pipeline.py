"""Integration tests: the real DVC stages on the micro config, offline. What the reproduced
pipeline holds, no-op and params-change re-runs, the first stage's refusal of a bad name,
and CI's table check against a planted regression.

The session fixture ``micro`` (tests/conftest.py, built by tests/micro_pipeline.py)
reproduces the whole micro pipeline once, in a scratch copy of the working tree with the
network unreachable; the tests here and in tests/test_pipeline_reruns.py reuse (copies of)
it, the two files on two pytest-xdist workers side by side.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys

import pandas as pd
import pytest
import yaml
from micro_pipeline import copy_repo, run, stages_ran


def test_micro_pipeline_runs_offline_and_reports(micro):
    params = yaml.safe_load((micro / "params.yaml").read_text())
    for model in params["models"]:
        metrics = json.loads((micro / f"runs/sft/{model}/eval/metrics.json").read_text())
        assert set(metrics["benchmarks"]) == {"gsm", "math"}
    table = (micro / "reports/table1.csv").read_text().splitlines()
    assert table[0] == "data,labels,algorithm,model,benchmark,mean,std,n_seeds,paper"
    n_cells = sum(len(v) for v in params["algorithms"].values()) * len(params["models"])
    assert len(table) - 1 >= n_cells * 2  # every cell, both benchmarks
    assert (micro / "reports/figures/fig5_threshold.png").stat().st_size > 0
    agreement = json.loads((micro / "reports/grader_agreement.json").read_text())
    assert agreement
    # a cell with a value head scores it as a verifier on its validation decodes; a cell
    # without one does not
    model, seed = params["models"][0], params["seeds"][0]
    pipa = json.loads((micro / f"runs/main/unpaired_step/pipa_m/{model}/seed{seed}/align/"
                       "train.json").read_text())
    verifier = pipa["verifier"]
    assert verifier["solutions"] > 0 and verifier["step_ends"] >= verifier["solutions"]
    for key in ("auc_step", "auc_last", "auc_min"):
        assert math.isnan(verifier[key]) or 0.0 <= verifier[key] <= 1.0, key
    assert all("verifier" in t for t in pipa["lr_grid"])
    kto = json.loads((micro / f"runs/main/unpaired_step/step_kto/{model}/seed{seed}/align/"
                      "train.json").read_text())
    assert "verifier" not in kto


def test_table5_searches_every_pipa_step_cell_and_its_params_rerun_only_the_search(
        micro, tmp_path):
    """Stages search@... and table5 (issue #20): every cell params' `search` names has a
    record of every mode, with the tokens each sampled; Table 5, g's verifier table and its
    reliability diagram are written; a change of the search params re-runs those stages
    and nothing else."""
    params = yaml.safe_load((micro / "params.yaml").read_text())
    search = params["search"]
    cells = [f"{s}/{a}/{m}/seed{seed}" for s in search["settings"]
             for a in search["algorithms"] for m in params["models"] for seed in params["seeds"]]
    for cell in cells:
        record = json.loads((micro / "runs/search" / cell / "search.json").read_text())
        modes = {(r["mode"], r["scorer"], r["budget"]) for r in record["modes"]}
        for n in search["budgets"]:
            for scorer in ("g", "policy", "random", "oracle"):  # seed 0: the references too
                assert ("step_beam", scorer, n) in modes, (cell, scorer, n)
            assert ("best_of_n_min", "g", n) in modes and ("majority", None, n) in modes
        assert all(len(r["tokens"]) == len(record["problems"]) for r in record["modes"])
        assert "timing" not in record and "seconds" not in record["modes"][0]
    table = (micro / "reports/search/table5.md").read_text()
    assert "value beam (g)" in table and "majority@N" in table
    assert (micro / "reports/search/reliability.png").stat().st_size > 0
    assert len(pd.read_csv(micro / "reports/search/verifier.csv")) == (
        len(search["settings"]) * len(search["algorithms"]) * len(params["models"]))

    repo = copy_repo(micro, tmp_path / "search")
    params["search"]["problems"] = search["problems"] + 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(run(["dvc", "status", "--json"], repo).stdout))
    searched = {f"search@{s}-{a}-{m}-{seed}" for s in search["settings"]
                for a in search["algorithms"] for m in params["models"]
                for seed in params["seeds"]}
    assert changed == searched | {"table5"}


def test_dvc_plots_show_draws_every_curve_file_the_report_writes(micro):
    """dvc.yaml's plots section names two folders once; every long-form CSV the report
    writes under them becomes a plot with one line per curve (the series template)."""
    proc = run(["dvc", "plots", "show", "--json"], micro)
    shown = json.loads(proc.stdout)["data"]
    files = sorted(p.relative_to(micro).as_posix()
                   for p in (micro / "reports" / "plots").rglob("*.csv"))
    assert "reports/plots/curves/training_loss.csv" in files
    assert "reports/plots/threshold/fig5_threshold.csv" in files
    for name in files:
        spec = shown[name][0]["content"]
        assert spec["encoding"]["color"]["field"] == "curve", name
        values = spec["data"]["values"]
        curves = set(pd.read_csv(micro / name)["curve"])
        assert {v["curve"] for v in values} == curves, name


def test_second_repro_is_a_no_op(micro):
    proc = run(["dvc", "repro"], micro)
    assert stages_ran(proc.stdout) == set()


def test_threshold_change_that_keeps_the_labels_reruns_only_the_label_stages(micro, tmp_path):
    """`dvc exp run -S threshold=0.3` works on the params file DVC rewrites, and re-runs the
    step-level label stages and the report only: the micro world's untrained sampler gives
    every intermediate step Q = -1, so at 0.3 the labels come out identical and DVC rightly
    re-runs nothing between the label stages and the report."""
    repo = copy_repo(micro, tmp_path / "exp")
    same = run(["dvc", "exp", "run", "-S", "threshold=0.3"], repo, timeout=1200)
    assert stages_ran(same.stdout) == {"labels_step@paired", "labels_step@unpaired", "report"}


@pytest.mark.slow  # 3.5 min on the AVX2 type: every step-level cell re-runs, one at a time
def test_threshold_change_reruns_only_step_level_cells(micro, tmp_path):
    """`dvc exp run -S threshold=-1` (the one threshold that changes the micro world's step
    labels) re-runs the step-level labels, cells, ablations and report, nothing else."""
    repo = copy_repo(micro, tmp_path / "exp")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    proc = run(["dvc", "exp", "run", "-S", "threshold=-1"], repo, timeout=1200)
    ran = stages_ran(proc.stdout)
    step_cells = {f"align_{s}@{a}-{m}-{seed}"
                  for s in ("paired_step", "unpaired_step")
                  for a in params["algorithms"][s] for m in params["models"]
                  for seed in params["seeds"]}
    answer_cells = {f"align_{s}@{a}-{m}-{seed}"
                    for s in ("paired_answer", "unpaired_answer")
                    for a in params["algorithms"][s] for m in params["models"]
                    for seed in params["seeds"]}
    # the control trains on correct solutions only (answer-level files): untouched too
    answer_cells |= {f"align_control@{k}-{m}-{seed}" for k in ("paired", "unpaired")
                     for m in params["models"] for seed in params["seeds"]}
    assert {"labels_step@paired", "labels_step@unpaired", "report"} <= ran
    assert step_cells <= ran
    assert not ran & answer_cells
    step_ablations = {f"ablation@{n}" for n, a in params["ablations"].items()
                      if a["setting"].endswith("_step")}
    searched = {f"search@unpaired_step-{a}-{m}-{seed}" for a in params["search"]["algorithms"]
                for m in params["models"] for seed in params["seeds"]}
    allowed = step_cells | step_ablations | searched | {
        "labels_step@paired", "labels_step@unpaired", "reduction_study", "report", "table5"}
    assert ran <= allowed, f"unexpected stages re-ran: {sorted(ran - allowed)}"


def test_unknown_algorithm_stops_the_run_before_any_work(micro, tmp_path):
    """Even with the base models due to re-run, the first stage refuses the bad name."""
    repo = copy_repo(micro, tmp_path / "bad")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["algorithms"]["paired_answer"].append("dpoo")
    params["pretrain"]["steps"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "unknown algorithm 'dpoo' in algorithms.paired_answer" in proc.stdout + proc.stderr
    assert stages_ran(proc.stdout) == {"preflight"}


def test_table_check_passes_a_rerun_and_names_the_cells_a_planted_sign_flip_breaks(micro,
                                                                                  tmp_path):
    """CI's study check (`python -m pipa.compare`, bounds from configs/table_check.json) on
    the micro config. The micro models are too small for accuracy to see a broken loss, but
    not its training direction; the micro config's one DPO epoch at a small lr barely moves
    the rewards (|margin| ~0.003 nats, under the check's floor), so both runs here train the
    DPO cells 4 epochs at lr 3e-3 (margins ~0.5 nats). The reference against itself
    reproduces (byte identity expected: same machine); with DPO's loss sign flipped
    (gradient ascent on the preference likelihood) and the DPO cells re-run, it fails and
    names exactly those cells."""
    ref = copy_repo(micro, tmp_path / "reference")
    params = yaml.safe_load((ref / "params.yaml").read_text())
    params["align"]["epochs"] = 4
    params["align"]["lr_grid"]["dpo"] = [3.0e-3]
    (ref / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dpo_cells = [f"align_paired_answer@dpo-{m}-{s}" for m in params["models"]
                 for s in params["seeds"]]
    run(["dvc", "repro", "-s", *dpo_cells], ref)
    run(["dvc", "repro", "-s", "report"], ref)
    committed = tmp_path / "committed"
    shutil.copytree(ref / "reports", committed)
    same = run([sys.executable, "-m", "pipa.compare", str(committed), "reports"], ref)
    assert "identity: expected" in same.stdout and "the study reproduces" in same.stdout

    repo = copy_repo(ref, tmp_path / "planted")
    losses = repo / "pipa/losses.py"
    source = losses.read_text()
    planted = "loss = _batch_mean(-F.logsigmoid(hp.beta * (r_pos - r_neg)))"
    assert source.count(planted) == 1
    losses.write_text(source.replace(planted, planted.replace("-F.", "F.")))
    run(["dvc", "repro", "-s", "preflight"], repo)
    run(["dvc", "repro", "-s", *dpo_cells], repo)
    run(["dvc", "repro", "-s", "report"], repo)
    proc = run([sys.executable, "-m", "pipa.compare", str(committed), "reports"], repo,
               check=False)
    assert proc.returncode == 1, proc.stdout
    directions = [line for line in proc.stdout.splitlines() if "reward margin" in line]
    named = {re.search(r"cells.csv: (\S+):", line).group(1) for line in directions}
    assert named == set(dpo_cells), proc.stdout
    assert "the study does NOT reproduce" in proc.stdout
