"""Integration tests: the real DVC stages on the micro config, offline.

One module-scoped fixture reproduces the whole micro pipeline in a scratch copy of the
working tree with the network unreachable; the other tests reuse (copies of) it. Together
they take a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Hub and network unreachable: offline flags, proxies pointing at a closed local port.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "DVC_NO_ANALYTICS": "1",
    "OMP_NUM_THREADS": "2",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def run(cmd: list[str], cwd: Path, timeout: int = 900, check: bool = True):
    env = dict(os.environ, **OFFLINE_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def stages_ran(output: str) -> set[str]:
    """Stages that ran, or were restored from DVC's run-cache (same inputs seen before)."""
    ran = re.findall(r"Running stage '([^']+)'", output)
    restored = re.findall(r"Stage '([^']+)' is cached - skipping run", output)
    return set(ran) | set(restored)


def make_micro_repo(dest: Path) -> Path:
    """Copy the working tree (tracked + untracked, not ignored) and apply the micro preset."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run([sys.executable, "-m", "pipa.preset", "micro"], dest)
    # The real benchmark files are tracked in the repository (data/benchmarks), so the copy
    # holds them and params' relative benchmark_dir resolves inside it.
    params = yaml.safe_load((dest / "params.yaml").read_text())
    bench = dest / params["data"]["benchmark_dir"]
    assert (bench / "graded_outputs").is_dir() and bench.resolve().is_relative_to(dest.resolve())
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "micro"], dest)
    return dest


def copy_repo(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def lock_outs(repo: Path) -> dict[str, str]:
    """Output path -> md5 recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o.get("md5", "") for st in lock["stages"].values()
            for o in st.get("outs", [])}


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """The micro pipeline reproduced the main job's way (scripts/parallel_repro.py: two DVC
    processes on two cores, half the wall time of one); test_same_seed_same_numbers runs
    plain `dvc repro` against it."""
    repo = make_micro_repo(tmp_path_factory.mktemp("micro"))
    proc = run([sys.executable, "scripts/parallel_repro.py", "--jobs", "2"], repo,
               timeout=1500)
    assert re.search(r"^\[2\] Running stage '", proc.stdout, re.MULTILINE), proc.stdout[-3000:]
    assert "Running stage 'report'" in proc.stdout
    assert "Data and pipelines are up to date" in proc.stdout  # the closing `dvc repro`
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "repro"], repo)
    return repo


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
    allowed = step_cells | step_ablations | {"labels_step@paired", "labels_step@unpaired",
                                              "reduction_study", "report"}
    assert ran <= allowed, f"unexpected stages re-ran: {sorted(ran - allowed)}"


def test_a_cell_rerun_the_other_way_gives_the_same_bytes(micro, tmp_path):
    """Two cells forced again with plain `dvc repro` (each stage's jobs in forked workers),
    where the fixture ran them through scripts/parallel_repro.py (jobs inline, two DVC
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
    processes at once, each stage's jobs inline).

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
    an edit to the report code re-runs the report alone; an edit to a loss re-runs the
    cells and leaves every stage that never imports the losses alone: world, base models,
    sampling, labels, SFT, the priors and the SFT evaluation."""
    repo = copy_repo(micro, tmp_path / "code")
    with open(repo / "pipa/reports/tables.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert stages_ran(run(["dvc", "repro"], repo).stdout) == {"preflight", "report"}
    with open(repo / "pipa/losses.py", "a") as fh:
        fh.write("\n# an edit\n")
    run(["dvc", "repro", "preflight"], repo)  # the manifests, not the training
    changed = set(json.loads(run(["dvc", "status", "--json"], repo).stdout))
    upstream = {"world", "base", "sample", "labels_step@paired", "download", "sft@ds",
                "prior@ds", "prior_ft@ds-all", "sft_eval@ds", "report"}
    assert upstream <= set(run(["dvc", "stage", "list", "--name-only"], repo).stdout.split())
    assert upstream.isdisjoint(changed), sorted(upstream & changed)
    assert {"align_paired_answer@dpo-ds-0", "align_unpaired_step@pipa_m-qw-0"} <= changed


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
