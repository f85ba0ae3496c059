"""Integration tests on the micro pipeline (the session fixture ``micro``, see
tests/test_pipeline.py): determinism, a killed run, stale temporaries, the launcher, code
edits, and a new algorithm registered in one place.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from micro_pipeline import OFFLINE_ENV, copy_repo, lock_outs, make_micro_repo, run, stages_ran


def test_a_cell_rerun_the_other_way_gives_the_same_bytes(micro, tmp_path):
    """Two cells forced again with plain `dvc repro` (a cold interpreter per stage, each
    stage's jobs in forked workers), where the fixture ran them through
    scripts/parallel_repro.py (warm starts: scripts/warm_start.py; jobs inline, two DVC
    processes): every output byte-identical, as DVC hashes them. The from-scratch version,
    upstream stages included, is test_same_seed_same_numbers (slow)."""
    repo = copy_repo(micro, tmp_path / "rerun")
    cells = ["align_paired_answer@dpo-ds-0", "align_unpaired_step@pipa_m-qw-0"]
    proc = run(["dvc", "repro", "-s", "-f", *cells], repo, timeout=900)
    assert stages_ran(proc.stdout) == set(cells), proc.stdout[-3000:]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    again = {o["path"]: o["md5"] for name in cells for o in lock[name]["outs"]}
    first = lock_outs(micro)
    assert len(again) >= 4, again  # per cell: the align folder, predictions, metrics
    assert not [path for path in again if again[path] != first[path]]


@pytest.mark.slow  # 2 min on the AVX2 type; test_a_cell_rerun_the_other_way_gives_the_same_bytes
# is its default-run version
def test_same_seed_same_numbers(micro, tmp_path):
    """A second, independent repro of two cells from scratch gives identical files, though
    it runs differently: plain `dvc repro`, one stage at a time, each stage's jobs in forked
    workers, where the fixture ran scripts/parallel_repro.py (the main job's way: two DVC
    processes at once, stages started warm, each stage's jobs inline).

    Compared: every artifact that carries numbers (weights, sampled data, labels, prior
    log-probs, predictions, metrics, loss curves), and then every output of every stage
    the second run ran, whole, as DVC hashed it: no wall clock reaches a cached output.
    """
    repo = make_micro_repo(tmp_path / "again")
    cells = ["runs/main/paired_answer/dpo/ds/seed0", "runs/main/unpaired_step/pipa_m/qw/seed0"]
    proc = run(["dvc", "repro", "align_paired_answer@dpo-ds-0",
                "align_unpaired_step@pipa_m-qw-0"], repo, timeout=1200)
    assert "Running stage 'align_paired_answer@dpo-ds-0'" in proc.stdout, proc.stdout[-3000:]
    assert "Running stage 'sft@qw'" in proc.stdout, proc.stdout[-3000:]
    assert run(["dvc", "status", "align_paired_answer@dpo-ds-0",
                "align_unpaired_step@pipa_m-qw-0"], repo).stdout.strip().endswith(
        "Data and pipelines are up to date.")
    files = ["data/alphamath/train.json", "data/labels/paired_answer.jsonl",
             "data/labels/unpaired_step.jsonl", "data/prior/sft/ds.safetensors",
             "data/prior/sft/qw.safetensors", "models/base/ds/model.safetensors",
             "models/sft/qw/model.safetensors", "runs/base/ds/dvclive/plots/metrics/train/loss.tsv"]
    for cell in cells:
        files += [f"{cell}/eval/metrics.json", f"{cell}/eval/predictions.jsonl",
                  f"{cell}/align/train.json", f"{cell}/align/dvclive/plots/metrics/train/loss.tsv"]
        files += [str(p.relative_to(repo)) for p in (repo / cell / "align/model").iterdir()]
    for rel in files:
        assert (repo / rel).read_bytes() == (micro / rel).read_bytes(), \
            f"{rel} differs between two runs with the same seed"
    ran = stages_ran(proc.stdout)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    again = {o["path"]: o["md5"] for name in ran for o in lock[name].get("outs", [])}
    first = lock_outs(micro)
    assert len(ran) > 10 and len(again) > 10, sorted(ran)
    differing = sorted(path for path in again if again[path] != first[path])
    assert not differing, f"outputs whose bytes differ between two runs: {differing}"


def test_sigkill_mid_training_leaves_nothing_cached(micro, tmp_path):
    """SIGKILL the SFT stage mid-training: nothing half-written is published or cached, and
    the next `dvc repro` redoes the stage and reproduces the same bytes."""
    repo = copy_repo(micro, tmp_path / "kill")
    before = lock_outs(repo)["models/sft/ds"]
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["sft"]["epochs"] = 5000  # long enough to be killed mid-run
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, **OFFLINE_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(["dvc", "repro", "sft@ds"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list((repo / "models/sft").glob(".tmp-ds-*")):
            assert time.time() < deadline, "training never started"
            assert proc.poll() is None, "dvc repro exited before it could be killed"
            time.sleep(0.2)
        time.sleep(2.0)  # mid-training
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (repo / "models/sft/ds").exists(), "a half-written output was published"
    assert lock_outs(repo)["models/sft/ds"] == before, "dvc.lock recorded the killed run"
    params_path.write_text(original)
    rerun = run(["dvc", "repro"], repo)
    ran = stages_ran(rerun.stdout)
    # The SFT stage is redone; its dvclive log (wall-clock tokens/s) feeds the report's
    # directory dependency, so the report may re-run too - nothing else may.
    assert "sft@ds" in ran and ran <= {"sft@ds", "report"}, sorted(ran)
    assert lock_outs(repo)["models/sft/ds"] == before, "same seed, different weights"
    assert not list((repo / "models/sft").glob(".tmp-*")), "stale temporaries left behind"
    assert run(["dvc", "status", "--json"], repo).stdout.strip() in ("{}", "")


def test_a_stage_start_removes_the_temporaries_a_killed_run_left(micro, tmp_path):
    """A stage killed mid-write leaves its ``.tmp-<output>-*`` temporary beside the output
    (planted here as atomic_path makes it; tests/test_io.py kills a real write). The next
    start of that stage removes those of its own outputs first (it says so), and no other
    stage's: prior@qw's stays in data/prior/sft until prior@qw runs."""
    repo = copy_repo(micro, tmp_path / "stale")
    mine = [Path(tempfile.mkdtemp(prefix=prefix, dir=repo / folder)) for prefix, folder in (
        (".tmp-ds.safetensors-", "data/prior/sft"),
        (".tmp-paired_answer.jsonl-", "data/labels"),
        (".tmp-paired_answer_stats.json-", "data/labels"))]
    other = Path(tempfile.mkdtemp(prefix=".tmp-qw.safetensors-", dir=repo / "data/prior/sft"))
    proc = run(["dvc", "repro", "-f", "-s", "labels_answer@paired", "prior@ds"], repo)
    for stale in mine:
        assert not stale.exists(), stale
        assert f"removed {stale.relative_to(repo)}, the temporary of a run that was killed" \
            in proc.stdout, proc.stdout[-3000:]
    assert other.exists()


def test_base_models_go_into_git_only_as_dvc_lock_records_them(micro, tmp_path):
    """scripts/commit_base_models.py (CI reproduces the study from the committed base
    models: .ci/run's `--keep base`): on the machine type that made the study it adds
    models/base to git when pretraining reproduces the locked bytes; it adds nothing when
    they come out otherwise (a planted lock entry), or on another machine type (a planted
    provenance)."""
    script = [sys.executable, "scripts/commit_base_models.py"]
    repo = copy_repo(micro, tmp_path / "bases")
    # the fixture's repository commits what it built: take the base models out of git first
    run(["git", "rm", "-rq", "--cached", "--ignore-unmatch", "models/base"], repo)
    run(["git", "commit", "-qm", "no base models", "--allow-empty"], repo)
    proc = run(script, repo)
    staged = run(["git", "diff", "--cached", "--name-only"], repo).stdout.split()
    assert "models/base/ds/model.safetensors" in staged, proc.stdout[-3000:]

    planted = copy_repo(micro, tmp_path / "other-bytes")
    lock = planted / "dvc.lock"
    record = yaml.safe_load(lock.read_text())
    out = next(o for o in record["stages"]["base"]["outs"] if o["path"] == "models/base")
    out["md5"] = "0" * 32 + ".dir"  # what another machine type's base models would hash to
    lock.write_text(yaml.safe_dump(record, sort_keys=False))
    proc = run(script, planted, check=False)
    assert proc.returncode != 0 and "came out other than dvc.lock recorded" in proc.stderr
    assert "Running stage 'base'" in proc.stdout, proc.stdout[-3000:]  # it did pretrain
    staged = run(["git", "diff", "--cached", "--name-only"], planted).stdout.split()
    assert not [f for f in staged if f.startswith("models/base/")]

    elsewhere = copy_repo(micro, tmp_path / "other-machine")
    prov = elsewhere / "reports" / "provenance.json"
    record = json.loads(prov.read_text())
    record["machines"][0]["capability"] = "SOME-OTHER-ISA"
    prov.write_text(json.dumps(record))
    proc = run(script, elsewhere, check=False)
    assert proc.returncode != 0 and "its base models would differ" in proc.stderr
    assert "Running stage" not in proc.stdout


# Two CPU processes under accelerate: `--cpu` would start one (accelerate's simple launcher),
# so `--multi_gpu` (torchrun) with runtime.device: cpu, which makes each process's
# Accelerator a gloo MULTI_CPU one; `--no_python`: the commands go on with `python stages/...`.
LAUNCHER_2CPU = ("accelerate launch --multi_gpu --num_processes 2 --num_machines 1 "
                 "--mixed_precision no --dynamo_backend no --main_process_port 0 --no_python")


def test_dvc_repro_runs_a_training_stage_under_runtime_launcher(micro, tmp_path):
    """runtime.launcher in front of an alignment cell's command: `dvc repro` runs it on two
    processes (each trains and validates every lr candidate and says so; only the main one
    writes), records the outputs and the command with the launcher."""
    repo = copy_repo(micro, tmp_path / "launch")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["runtime"]["launcher"] = LAUNCHER_2CPU
    params["runtime"]["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cell = "align_unpaired_answer@pipa_m-ds-0"
    proc = run(["dvc", "repro", "-s", cell], repo, timeout=600)
    assert stages_ran(proc.stdout) == {cell}
    assert f"> {LAUNCHER_2CPU} python stages/align.py --algorithm pipa_m" in proc.stdout
    grid = params["align"]["lr_grid"]["default"]
    said = re.findall(r"pipa_m ds s0 lr=(\S+): validation accuracy (\S+)", proc.stdout)
    assert len(said) == 2 * len(grid), proc.stdout[-3000:]  # both processes, every lr
    assert len(set(said)) == len(grid)                      # the same accuracy on both
    out = repo / "runs/main/unpaired_answer/pipa_m/ds/seed0"
    assert json.loads((out / "align/train.json").read_text())["selected_lr"] in grid
    assert (out / "eval/metrics.json").exists() and (out / "eval/predictions.jsonl").exists()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][cell]
    assert lock["cmd"].startswith(f"{LAUNCHER_2CPU} python stages/align.py")
    assert not list(out.glob(".tmp-*")) and not list((out / "eval").glob(".tmp-*"))


def test_code_edits_rerun_exactly_the_stages_that_run_that_code(micro, tmp_path):
    """A stage depends on its script's import closure (the preflight stage's manifests):
    an edit to the tables' code re-runs the report and Table 5 alone; an edit to a loss re-runs the
    cells and leaves every stage that never imports the losses alone: world, base models,
    sampling, labels, SFT, the priors and the SFT evaluation."""
    repo = copy_repo(micro, tmp_path / "code")
    with open(repo / "pipa/reports/tables.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert stages_ran(run(["dvc", "repro"], repo).stdout) == {"preflight", "report", "table5"}
    with open(repo / "pipa/losses.py", "a") as fh:
        fh.write("\n# an edit\n")
    run(["dvc", "repro", "preflight"], repo)  # the manifests, not the training
    changed = set(json.loads(run(["dvc", "status", "--json"], repo).stdout))
    upstream = {"world", "base", "sample", "labels_step@paired", "download", "sft@ds",
                "prior@ds", "prior_ft@ds-all", "sft_eval@ds", "report"}
    assert upstream <= set(run(["dvc", "stage", "list", "--name-only"], repo).stdout.split())
    assert upstream.isdisjoint(changed), sorted(upstream & changed)
    assert {"align_paired_answer@dpo-ds-0", "align_unpaired_step@pipa_m-qw-0"} <= changed


def slic_loss(batch, hp):
    """A toy algorithm for the registration test: SLiC-HF's calibration hinge (Zhao et al.
    2023), L = max(0, 1 - beta (R(y+) - R(y-))), batch mean."""
    import torch

    from pipa.loss_terms import _batch_mean, sequence_reward
    from pipa.losses import _paired_logs

    y_pos, y_neg = batch.chosen, batch.rejected
    r_pos = sequence_reward(y_pos.policy_logps, y_pos.prior_logps, y_pos.mask)
    r_neg = sequence_reward(y_neg.policy_logps, y_neg.prior_logps, y_neg.mask)
    return _batch_mean(torch.relu(1.0 - hp.beta * (r_pos - r_neg))), _paired_logs(r_pos, r_neg)


def test_a_new_algorithm_and_ablation_table_need_only_their_own_entries(micro, tmp_path,
                                                                        monkeypatch):
    """Adding an algorithm is its loss function, its registry entry and its params line;
    adding an ablation table is its params entry. A toy algorithm (SLiC's hinge) registered
    here, and nowhere else, is checked by validate, trained over the lr grid and evaluated by
    the cell's own entry points on the micro data, and lands in Table 1 under its display
    name; an ablation with a new table number (5) gets its own table5.md/.csv/.tex."""
    from pipa import config, losses, registry
    from pipa.align import align_cell
    from pipa.evaluation import evaluate_folder
    from pipa.reports import build

    repo = copy_repo(micro, tmp_path / "toy")
    monkeypatch.chdir(repo)
    toy = registry.Algorithm("slic", "SLiC (hinge)", "baseline", "paired", "slic_loss")
    monkeypatch.setitem(registry.ALGORITHMS, "slic", toy)
    monkeypatch.setitem(losses.ALGORITHMS, "slic",
                        losses.AlgorithmSpec(**vars(toy), loss_fn=slic_loss))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["algorithms"]["paired_answer"].append("slic")
    params["ablations"]["slic_prior_all"] = {"table": 5, "setting": "paired_answer",
                                             "algorithm": "slic", "prior": "all",
                                             "baseline": "slic"}
    cfg = config.parse(params, "params.yaml", losses.ALGORITHMS)

    def cell(model: str, seed: int, prior: str, run: Path) -> None:
        summary = align_cell(cfg, algorithm="slic", model_name=model, seed=seed,
                             labels_path="data/labels/paired_answer.jsonl",
                             prior_path=f"data/prior/{prior}/{model}.safetensors",
                             sft_dir=f"models/sft/{model}", world_dir="data/world",
                             out_dir=run / "align")
        assert summary["steps"] > 0
        evaluate_folder(cfg, model, run / "align" / "model", "data/world", run / "eval")

    for model in params["models"]:
        for seed in params["seeds"]:
            cell(model, seed, "sft", Path(f"runs/main/paired_answer/slic/{model}/seed{seed}"))
    for model in params["ablation_models"]:
        for seed in params["seeds"]:
            cell(model, seed, "all", Path(f"runs/ablation/slic_prior_all/{model}/seed{seed}"))
    result = build(cfg, repo, repo / "toy_reports")
    table1 = (repo / "toy_reports" / "table1.md").read_text()
    assert "SLiC (hinge)" in table1
    assert "table5.md" in result["tables"]
    table5 = (repo / "toy_reports" / "table5.md").read_text()
    assert "SLiC (hinge) (prior: all)" in table5
    rows = [r.split(",") for r in (repo / "toy_reports" / "table1.csv").read_text().splitlines()]
    toy_rows = {(r[3], r[4]) for r in rows if r[2] == "slic"}
    assert toy_rows == {(m, b) for m in params["models"] for b in ("gsm", "math")}
