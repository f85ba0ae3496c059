"""Report stage on a synthetic run tree: tables, missing-cell error, bootstrap, figures."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipa import paper_numbers, reports
from pipa.config_types import Grid

N = 40  # problems per benchmark
BENCHES = ("gsm", "math")

PARAMS = {
    "threshold": 0.5,
    "models": ["ds", "qw"],
    "seeds": [0, 1],
    "control": "sft_cont",
    "algorithms": {
        "paired_answer": ["dpo", "pipa_m", "pipa_n"],
        "paired_step": ["step_dpo", "pipa_m"],
        "unpaired_answer": ["kto", "pipa_m"],
        "unpaired_step": ["step_kto", "pipa_m", "pipa_n"],
    },
    "ablation_models": ["ds"],
    "ablations": {
        "fixed_g_m": {"table": 2, "setting": "unpaired_step", "algorithm": "pipa_m_fixed_g",
                      "prior": "sft", "baseline": "pipa_m"},
        "kto_sft": {"table": 4, "setting": "unpaired_answer", "algorithm": "kto_sft",
                    "prior": "sft", "baseline": "kto"},
    },
    "sweep_thresholds": [0.0, 0.75],
    "sweep_algorithm": "pipa_m",
}
GRID = Grid.from_params(PARAMS)

# number of correct problems (of N) at seed 0; seed s adds s
QUALITY = {"sft_cont": 20, "dpo": 18, "step_dpo": 19, "kto": 22, "step_kto": 21,
           "pipa_m": 26, "pipa_n": 34}
CONTROL_WINS = "unpaired"  # on this data kind the control gets 30: bold in unpaired/answer


def _k_main(setting: str, alg: str, seed: int) -> int:
    if setting.startswith(CONTROL_WINS + "_") and alg == "sft_cont":
        return 30 + seed
    return QUALITY[alg] + seed


def _write_eval(root: Path, run_dir: str, k: int) -> None:
    ev = root / run_dir / "eval"
    ev.mkdir(parents=True, exist_ok=True)
    rows, bench = [], {}
    for b in BENCHES:
        kb = k if b == "gsm" else max(0, k - 5)  # the harder tier
        for i in range(N):
            rows.append({"benchmark": b, "id": f"{b}-{i:03d}", "output": "", "extracted": "",
                         "correct": i < kb, "malformed": False})
        bench[b] = {"accuracy": kb / N, "n": N, "n_correct": kb, "ci95": [0, 1],
                    "n_malformed": 0}
    (ev / "metrics.json").write_text(json.dumps({"benchmarks": bench}, sort_keys=True))
    (ev / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_curve(root: Path, run_dir: str, name: str, values) -> None:
    d = root / run_dir / "align" / "dvclive" / "plots" / "metrics" / "train"
    d.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp\tstep\t" + name]
    lines += [f"{1000 + i}\t{i}\t{v}" for i, v in enumerate(values)]
    (d / f"{name}.tsv").write_text("\n".join(lines) + "\n")


def make_tree(root: Path) -> None:
    steps = np.arange(20)
    for m in PARAMS["models"]:
        _write_eval(root, f"runs/sft/{m}", 15)
        loss = root / f"runs/sft/{m}/dvclive/plots/metrics/train/loss.tsv"  # no base runs
        loss.parent.mkdir(parents=True, exist_ok=True)
        loss.write_text("timestamp\tstep\tloss\n1\t0\t2.5\n2\t1\t1.5\n")
        for setting, algs in reports.grid._settings(GRID).items():
            for alg in algs:
                for s in PARAMS["seeds"]:
                    run = reports.main_cell(GRID, m, s, setting, alg).run_dir
                    _write_eval(root, run, _k_main(setting, alg, s))
                    if alg in ("pipa_m", "pipa_n"):
                        _write_curve(root, run, "value_label_likelihood",
                                     0.5 + 0.01 * steps + 0.002 * s)
                        verifier = {"auc_step": 0.6 + 0.01 * s, "auc_last": 0.7, "solutions": N}
                        (root / run / "align" / "train.json").write_text(json.dumps(
                            {"verifier": verifier, "selected_lr": 2e-5 if s == 0 else 2e-4,
                             "steps": 21 if setting.startswith("paired") else 50}))
                    if alg in ("dpo", "step_dpo"):
                        sign = -1 if alg == "dpo" else 1
                        _write_curve(root, run, "reward_correct", sign * 0.1 * steps)
                        _write_curve(root, run, "reward_incorrect",
                                     ["nan"] + list(-0.3 * steps[1:]))
    for name, k in (("fixed_g_m", 22), ("kto_sft", 23)):
        for s in PARAMS["seeds"]:
            _write_eval(root, f"runs/ablation/{name}/ds/seed{s}", k + s)
    for t, k in ((0.0, 24), (0.75, 25)):
        for s in PARAMS["seeds"]:
            _write_eval(root, f"runs/threshold/{t}/ds/seed{s}", k + s)
    (root / "runs" / "timing.json").write_text(json.dumps({"eval_paired_answer@dpo-ds-0": 90}))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    # a stale cell from an older grid: must be ignored, never globbed
    _write_eval(root, "runs/main/paired_answer/ipo/ds/seed0", 40)
    out = root / "reports"
    result = reports.build(GRID, root, out)
    return root, out, result


def test_table1_csv_long_format_and_numbers(built):
    _, out, _ = built
    df = pd.read_csv(out / "table1.csv")
    assert list(df.columns) == ["data", "labels", "algorithm", "model", "benchmark", "mean",
                                "std", "n_seeds", "paper"]
    assert "ipo" not in set(df["algorithm"])
    cell = df[(df.data == "paired") & (df.labels == "answer") & (df.algorithm == "dpo")
              & (df.model == "ds") & (df.benchmark == "gsm")].iloc[0]
    # seeds: 18/40 and 19/40 -> 45.0 and 47.5
    assert cell["mean"] == pytest.approx(46.25)
    assert cell["std"] == pytest.approx(np.std([45.0, 47.5], ddof=1))
    assert cell["n_seeds"] == 2
    assert cell["paper"] == pytest.approx(68.39)
    qw_math = df[(df.data == "paired") & (df.labels == "answer") & (df.algorithm == "dpo")
                 & (df.model == "qw") & (df.benchmark == "math")].iloc[0]
    assert qw_math["paper"] == pytest.approx(47.78)
    assert qw_math["mean"] == pytest.approx(np.mean([13 / 40, 14 / 40]) * 100)
    ctrl = df[df.algorithm == "sft_cont"]
    assert ctrl["paper"].isna().all() and len(ctrl) == 4 * 2 * 2
    sft = df[df.algorithm == "sft"]
    assert len(sft) == 4 and (sft["mean"] == 37.5).any() and (sft["n_seeds"] == 1).all()


def test_table1_markdown_bold_paper_and_p(built):
    _, out, _ = built
    md = (out / "table1.md").read_text()
    # PIPA-N is best in paired/answer, ds gsm: 34, 35 of 40 -> 86.25 ± 1.77; paper 80.29
    assert "**86.25 ± 1.77** (paper 80.29)" in md
    assert "46.25 ± 1.77 (paper 68.39)" in md and "**46.25" not in md
    lines = md.splitlines()
    # the control wins unpaired/answer (30, 31 of 40 = 76.25): it is bold there
    assert any("Continued SFT (control)" in ln and "**76.25 ± 1.77** (paper —)" in ln
               for ln in lines)
    assert "SFT model (start point)" in md and "37.50 ± —" in md
    assert "p_boot: best PIPA vs best baseline" in md
    assert "Tier 1 (GSM8K stand-in)" in md
    tex = (out / "table1.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{86.25 $\pm$ 1.77}" in tex


def test_ablation_tables(built):
    _, out, _ = built
    t2 = pd.read_csv(out / "table2.csv")
    row = t2[(t2.role == "ablation") & (t2.benchmark == "gsm")].iloc[0]
    base = t2[(t2.role == "baseline") & (t2.benchmark == "gsm")].iloc[0]
    assert row["row"] == "PIPA-M (g=0.5)" and row["paper"] == pytest.approx(73.54)
    assert base["algorithm"] == "pipa_m" and base["paper"] == pytest.approx(78.24)
    assert base["mean"] == pytest.approx(66.25)  # main-grid unpaired_step pipa_m, ds
    assert row["mean"] == pytest.approx(56.25)
    t4 = pd.read_csv(out / "table4.csv")
    assert set(t4["row"]) == {"KTO", "KTO+SFT"}
    assert not (out / "table3.md").exists()
    assert "**66.25 ± 1.77** (paper 78.24)" in (out / "table2.md").read_text()


def test_significance(built):
    _, out, _ = built
    sig = pd.read_csv(out / "significance.csv")
    assert list(sig.columns) == reports.SIGNIFICANCE_COLUMNS
    pa = sig[(sig.setting == "paired_answer") & (sig.comparison == "vs_best_baseline")
             & (sig.model == "ds") & (sig.benchmark == "gsm")].iloc[0]
    assert (pa["a"], pa["b"]) == ("pipa_n", "sft_cont")
    assert pa["p_boot"] < 0.05 and pa["diff"] > 0
    # the control beats PIPA in unpaired/answer: not significant in PIPA's favour
    ua = sig[(sig.setting == "unpaired_answer") & (sig.comparison == "vs_sft_cont")]
    assert (ua["p_boot"] > 0.5).all()
    assert len(sig[sig.comparison.str.startswith("ablation:")]) == 2 * 2
    # "no algorithm beats the control" is tested too: the best paper baseline of each block
    # and column (control excluded) against the control, one-sided, beside PIPA's rows
    base = sig[sig.comparison == "baseline_vs_sft_cont"]
    pipa_rows = sig[sig.comparison == "vs_best_paper_baseline"]
    assert len(base) == len(pipa_rows) > 0
    assert (base["b"] == "sft_cont").all() and (base["alternative"] == "greater").all()
    merged = base.merge(pipa_rows, on=["setting", "model", "benchmark"], suffixes=("", "_p"))
    assert (merged["a"] == merged["b_p"]).all()  # the same best paper baseline PIPA met
    assert "p_boot: best paper baseline vs continued SFT" in (out / "table1.md").read_text()


def test_min_detectable_difference_has_its_stated_power():
    """At a true difference equal to the MDD, the one-sided paired test at alpha = 0.05
    rejects in about 80% of simulated studies; at no difference in about 5%."""
    rng = np.random.default_rng(0)
    n, p_dis = 400, 0.2
    a0 = rng.random(n) < 0.5
    b0 = np.where(rng.random(n) < p_dis, ~a0, a0)  # disagree on a fifth of the problems
    mdd = reports.min_detectable_difference(a0, b0)
    # closed form: d_i in {-1, 0, 1} with P(d != 0) = p_dis, z = 1.645 + 0.842
    assert mdd == pytest.approx(100 * 2.4865 * np.std(a0.astype(float) - b0, ddof=1)
                                / np.sqrt(n), rel=1e-3)
    assert 4.5 < mdd < 6.0
    z_crit = 1.6449

    def rejection_rate(delta: float) -> float:
        hits = 0
        for _ in range(2000):
            # each problem: disagree w.p. p_dis; when they do, a wins w.p. (1 + delta/p_dis)/2
            dis = rng.random(n) < p_dis
            a_wins = rng.random(n) < 0.5 * (1 + delta / p_dis)
            d = np.where(dis, np.where(a_wins, 1.0, -1.0), 0.0)
            hits += d.mean() / (d.std(ddof=1) / np.sqrt(n)) > z_crit
        return hits / 2000

    assert rejection_rate(mdd / 100) == pytest.approx(0.80, abs=0.04)
    assert rejection_rate(0.0) == pytest.approx(0.05, abs=0.02)
    assert math.isnan(reports.min_detectable_difference([1], [0]))
    assert math.isnan(reports.min_detectable_difference(a0, a0))  # never disagree: no scale
    two = reports.min_detectable_difference(a0, b0, two_sided=True)
    assert two == pytest.approx(mdd * (1.95996 + 0.84162) / (1.64485 + 0.84162), rel=1e-4)


def test_power_rows_and_notes(built):
    _, out, _ = built
    power = pd.read_csv(out / "power.csv")
    assert set(power["table"]) >= {1, 2}
    t1 = power[power["table"] == 1]
    # every pair of trained rows of every block, per model and benchmark
    per_block = {s: len(algs) + 1 for s, algs in PARAMS["algorithms"].items()}  # + control
    pairs = sum(k * (k - 1) // 2 for k in per_block.values())
    assert len(t1) == pairs * len(PARAMS["models"]) * 2
    assert (power["mdd"].dropna() > 0).all()
    assert "Power: the smallest true difference between two trained rows" in \
        (out / "table1.md").read_text()
    assert "## What each table can detect" in (out / "README.md").read_text()


def test_control_cell_is_shared_by_both_label_levels():
    cells = {(c.setting, c.algorithm, c.model, c.seed): c
             for c in reports.expected_cells(GRID)["main"]}
    answer = cells[("unpaired_answer", "sft_cont", "ds", 0)]
    step = cells[("unpaired_step", "sft_cont", "ds", 0)]
    assert answer.run_dir == step.run_dir == "runs/main/control/unpaired/ds/seed0"
    assert answer.stage() == step.stage() == "align_control@unpaired-ds-0"
    paired = cells[("paired_step", "sft_cont", "qw", 1)]
    assert paired.run_dir == "runs/main/control/paired/qw/seed1"
    dpo = cells[("paired_answer", "dpo", "ds", 0)]
    assert dpo.run_dir == "runs/main/paired_answer/dpo/ds/seed0" and not dpo.control
    stages = {st for _, st in reports.expected_files(GRID)}
    assert not any(st.startswith("align_paired_step@sft_cont") for st in stages)


def test_paired_bootstrap_sanity():
    rng = np.random.default_rng(1)
    a = rng.random((2, 200)) < 0.5
    assert reports.paired_bootstrap(a, a) == 1.0
    assert reports.paired_bootstrap(a, a, alternative="two-sided") == 1.0
    better = a | (rng.random((2, 200)) < 0.4)
    assert reports.paired_bootstrap(better, a) < 0.05
    assert reports.paired_bootstrap(a, better) > 0.95
    assert reports.paired_bootstrap(better, a, alternative="two-sided") < 0.05
    # reproducible with the fixed seed
    noisy = rng.random((2, 200)) < 0.52
    assert reports.paired_bootstrap(noisy, a) == reports.paired_bootstrap(noisy, a)
    with pytest.raises(ValueError):
        reports.paired_bootstrap(a, a[:, :10])


def test_figures_readme_and_plots(built):
    _, out, result = built
    for name in ("fig3_value_likelihood.png", "fig3_value_likelihood_qw.png",
                 "fig4_implicit_reward.png", "fig4_implicit_reward_qw.png",
                 "fig5_threshold.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
        assert name in result["figures"]
    # the curves dvc.yaml's plots section reads, long (x, curve, value): one folder per x
    sweep = pd.read_csv(out / "plots" / "threshold" / "fig5_threshold.csv")
    assert list(sweep.columns) == ["threshold", "curve", "value"]
    assert list(sweep["threshold"]) == [0.0, 0.5, 0.75]  # the default from the main grid
    assert set(sweep["curve"]) == {"mean_ds"}
    assert sweep["value"].tolist()[1] == pytest.approx(np.mean([21 / 40, 22 / 40]) * 100)
    f3 = pd.read_csv(out / "plots" / "curves" / "fig3_value_likelihood_ds.csv")
    assert list(f3.columns) == ["step", "curve", "value"]
    assert "pipa_n_unpaired_step" in set(f3["curve"])
    assert len(f3[f3["curve"] == "pipa_n_unpaired_step"]) == 20
    f4 = pd.read_csv(out / "plots" / "curves" / "fig4_implicit_reward_ds.csv")
    assert {"dpo_correct", "step_dpo_incorrect"} <= set(f4["curve"])
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["curves", "threshold"]
    loss = pd.read_csv(out / "plots" / "curves" / "training_loss.csv")
    assert set(loss["curve"]) == {"sft_ds", "sft_qw"} and loss["value"].tolist()[:2] == [2.5, 1.5]
    text = (out / "README.md").read_text()
    assert "## Agreement with the paper" in text and "figures/fig5_threshold.png" in text
    assert "PIPA-M beats DPO in 4 of 4 columns of paired/answer (paper: 4 of 4)" in text
    assert "Figure 4: the implicit reward of correct samples under DPO falls" in text
    # Wall-clock times never enter the report: same params, same bytes.
    assert "1.5 min" not in text and "Report stage time" not in text
    assert "## Table 4" in text
    # the value head as a verifier: per PIPA cell with a head, from its train.json
    assert "## The value head as a verifier" in text
    assert "| paired_answer | PIPA-M | ds | 0.605 ± 0.007 | 0.700 ± 0.000 |" in text
    cells = pd.read_csv(out / "cells.csv")
    pipa_rows = cells[cells["algorithm"].isin(["pipa_m", "pipa_n"]) & (cells["group"] == "main")]
    assert pipa_rows["value_auc_step"].notna().all()
    assert cells[cells["algorithm"] == "dpo"]["value_auc_step"].isna().all()


def test_readme_states_the_lr_each_cell_chose_and_its_steps(built):
    """From the cells' train.json, not from params: what ran, not what was asked."""
    _, out, _ = built
    prov = json.loads((out / "provenance.json").read_text())
    # PIPA-M and PIPA-N cells of the tree: 6 per model and seed, 12 per seed over 2 models
    assert prov["selected_lr"] == {"2e-05": 12, "0.0002": 12}
    assert prov["steps"] == [21, 50]
    text = (out / "README.md").read_text()
    assert ("chose on validation (`align.lr_grid`): 2e-05 in 12, 0.0002 in 12 of 24 cells; "
            "21-50 optimizer steps per cell.") in text


def test_missing_cells_listed_in_one_error(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "runs/main/paired_answer/dpo/ds/seed1/eval/metrics.json").unlink()
    shutil.rmtree(tmp_path / "runs/ablation/kto_sft/ds/seed0")
    (tmp_path / "runs/main/paired_step/step_dpo/qw/seed0/align/dvclive/plots/metrics/train/"
     "reward_correct.tsv").unlink()
    (tmp_path / "runs/threshold/0.75/ds/seed1/eval/metrics.json").unlink()
    with pytest.raises(reports.MissingCellsError) as err:
        reports.collect(GRID, tmp_path)
    msg = str(err.value)
    assert msg.startswith("missing 5 cells: ")
    assert ("runs/main/paired_answer/dpo/ds/seed1/eval/metrics.json "
            "(stage align_paired_answer@dpo-ds-1)") in msg
    assert ("runs/ablation/kto_sft/ds/seed0/eval/predictions.jsonl "
            "(stage ablation@kto_sft)") in msg
    assert "reward_correct.tsv (stage align_paired_step@step_dpo-qw-0)" in msg
    assert "runs/threshold/0.75/ds/seed1/eval/metrics.json (stage sweep@0.75)" in msg


def test_grid_errors_and_formatting():
    bad = json.loads(json.dumps(PARAMS))
    bad["ablations"]["kto_sft"]["baseline"] = "ipo"
    bad["ablation_models"] = ["xx"]
    with pytest.raises(ValueError, match="baseline 'ipo'.*|ablation model 'xx'"):
        reports.expected_cells(Grid.from_params(bad))
    assert reports.fmt_cell(45.2, 1.1, 3) == "45.20 ± 1.10"
    assert reports.fmt_cell(45.2, math.nan, 1) == "45.20 ± —"
    assert paper_numbers.paper_table1("unpaired", "step", "pipa_n", "qw", "math") == 52.52
    assert paper_numbers.paper_table1("paired", "answer", "sft_cont", "ds", "gsm") is None
    assert paper_numbers.paper_ablation("prior_incorrect_n", "row", "ds", "math") == 50.84


def test_stage_script_names_missing_cells(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(repo / "stages" / "report.py"), "--params",
         str(repo / "params.yaml"), "--root", str(tmp_path), "--out", str(tmp_path / "r")],
        check=False, capture_output=True, text=True, cwd=repo, timeout=60)
    assert proc.returncode != 0
    assert "missing" in proc.stderr and "(stage sft_eval@" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_second_base_model_marks_which_claims_held(built, tmp_path):
    """--second-base-model: the README says which comparisons beyond noise held on the
    second base model's report folder, which fell back into noise and which turned round,
    with pipa.compare's counts; a folder of another grid is not compared, and a folder
    without the files is an error naming it."""
    from pipa.compare import SIG_KEY

    root, out, _ = built
    second = root / "second"
    shutil.copytree(out, second)
    sig = pd.read_csv(second / "significance.csv")
    claims = sig[sig["p_boot"] < 0.05].sort_values(SIG_KEY).index
    assert len(claims) >= 3
    noise, turned = claims[0], claims[1]
    sig.loc[noise, "p_boot"] = 0.4                       # still the same way, not beyond noise
    sig.loc[turned, "diff"] = -sig.loc[turned, "diff"]   # the other way round
    sig.to_csv(second / "significance.csv", index=False)
    again = root / "again"
    reports.build(GRID, root, again, second_base_model="second")
    readme = (again / "README.md").read_text()
    section = readme.split("## On a second base model", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in rows[1:]]
    assert len(verdicts) == len(claims)
    assert verdicts.count("not beyond noise") == 1 and verdicts.count("turned round") == 1
    assert verdicts.count("held") == len(claims) - 2
    assert f"Verdicts at p_boot < 0.05 (beyond noise or not): {len(sig) - 1} of {len(sig)}" \
        in section
    assert "Orderings of two rows within a Table 1 column:" in section
    # without it: no such section (the default report above)
    assert "## On a second base model" not in (out / "README.md").read_text()
    # a folder of another grid: said, not compared
    other = root / "other"
    shutil.copytree(second, other)
    t1 = pd.read_csv(other / "table1.csv")
    t1[t1["model"] != "qw"].to_csv(other / "table1.csv", index=False)
    reports.build(GRID, root, root / "fourth", second_base_model="other")
    assert "holds the report of another grid" in (root / "fourth" / "README.md").read_text()
    with pytest.raises(ValueError, match=r"nowhere/table1.csv: missing"):
        reports.build(GRID, root, root / "third", second_base_model="nowhere")
