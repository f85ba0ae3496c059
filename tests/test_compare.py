"""CI's study check (pipa.compare): identity on the same machine type, the study's claims
within measured bounds elsewhere, every failure named."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipa.compare import load_bounds, main

BOUNDS = {"z": 3.0, "alpha": 0.01, "margin_floor": 0.01,
          "pairs": [{"a": "x", "b": "y", "sd_start": 2.0, "sd_gain_excess": 1.0}]}
MACHINE = {"cpu": "Some CPU", "capability": "AVX512", "bf16_native": "amx", "torch": "2.13.0"}


def _table1(sft_shift: float = 0.0, dpo_gain: float = -1.0) -> list[dict]:
    rows = []
    for bench, start in (("gsm", 46.0), ("math", 37.0)):
        s = start + sft_shift
        rows.append({"data": "all", "labels": "all", "algorithm": "sft", "model": "ds",
                     "benchmark": bench, "mean": s, "std": float("nan"), "n_seeds": 1})
        rows.append({"data": "paired", "labels": "answer", "algorithm": "dpo", "model": "ds",
                     "benchmark": bench, "mean": s + dpo_gain, "std": 0.5, "n_seeds": 2})
    return rows


def _significance(diff: float = 3.0, p: float = 0.001) -> list[dict]:
    return [{"table": 1, "setting": "paired_answer", "model": "ds", "benchmark": "gsm",
             "comparison": "vs_sft_cont", "a": "pipa_m", "b": "sft_cont", "mean_a": 40.0,
             "mean_b": 40.0 - diff, "diff": diff, "n_problems": 500, "n_seeds": 2,
             "alternative": "greater", "n_boot": 10000, "p_boot": p}]


def _cells(margin: float = 0.4) -> list[dict]:
    return [{"group": "main", "setting": "paired_answer", "algorithm": "dpo",
             "ablation": None, "threshold": None, "model": "ds", "seed": 0,
             "stage": "align_paired_answer@dpo-ds-0", "margin": margin,
             "acc_gsm": 45.0, "acc_math": 36.0}]


def _report(folder, table1=None, sig=None, cells=None, machine=None):
    folder.mkdir()
    pd.DataFrame(table1 or _table1()).to_csv(folder / "table1.csv", index=False)
    pd.DataFrame(sig or _significance()).to_csv(folder / "significance.csv", index=False)
    pd.DataFrame(cells or _cells()).to_csv(folder / "cells.csv", index=False)
    if machine is not None:
        (folder / "provenance.json").write_text(json.dumps(
            {"precision": ["bf16"], "machines": [machine], "cells": 1, "cells_recorded": 1}))
    return folder


@pytest.fixture
def bounds(tmp_path):
    path = tmp_path / "bounds.json"
    path.write_text(json.dumps(BOUNDS))
    return path


def _run(committed, new, bounds, capsys) -> tuple[int, str]:
    code = main([str(committed), str(new), "--bounds", str(bounds)])
    return code, capsys.readouterr().out


def test_the_same_study_reproduces_and_identity_holds_on_the_same_machine(tmp_path, bounds,
                                                                          capsys):
    a = _report(tmp_path / "a", machine=MACHINE)
    b = _report(tmp_path / "b", machine=MACHINE)
    code, out = _run(a, b, bounds, capsys)
    assert code == 0, out
    assert "identity: expected (same machine type and precision" in out and "holds" in out
    assert "the study reproduces" in out


def test_same_machine_type_demands_the_same_bytes(tmp_path, bounds, capsys):
    a = _report(tmp_path / "a", machine=MACHINE)
    b = _report(tmp_path / "b", table1=_table1(dpo_gain=-1.1), machine=MACHINE)
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert "table1.csv: not byte-identical on the same machine type and precision" in out


def test_same_machine_type_demands_table5s_bytes_where_the_committed_study_has_them(
        tmp_path, bounds, capsys):
    a = _report(tmp_path / "a", machine=MACHINE)
    b = _report(tmp_path / "b", machine=MACHINE)
    assert _run(a, b, bounds, capsys)[0] == 0  # neither has Table 5: nothing to compare
    for folder, accuracy in ((a, 41.0), (b, 41.5)):
        (folder / "search").mkdir()
        (folder / "search/table5.csv").write_text(f"mode,mean\ngreedy,{accuracy}\n")
        (folder / "search/verifier.csv").write_text("auc_step\n0.52\n")
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert "search/table5.csv: not byte-identical" in out and "verifier.csv" not in out


def test_amx_and_avx512_bf16_alone_are_different_machine_types(tmp_path, bounds, capsys):
    """One model name and capability string, two kinds of bf16 kernels (an Intel with AMX,
    one whose AMX is hidden): bytes may differ, so identity is not demanded, the bounds are."""
    a = _report(tmp_path / "a", machine=MACHINE)
    b = _report(tmp_path / "b", table1=_table1(dpo_gain=-1.1),
                machine=dict(MACHINE, bf16_native="avx512_bf16"))
    code, out = _run(a, b, bounds, capsys)
    assert code == 0, out
    assert "identity: not expected" in out and "native bf16 amx" in out \
        and "native bf16 avx512_bf16" in out


def test_another_machine_may_move_the_base_model_within_the_measured_bound(tmp_path, bounds,
                                                                           capsys):
    """A 5-point shift of the SFT start (within 3 x 2.0) that moves every cell with it is a
    reproduction: the gains over the start are what the tables claim."""
    a = _report(tmp_path / "a", machine=MACHINE)
    b = _report(tmp_path / "b", table1=_table1(sft_shift=-5.0, dpo_gain=-1.5),
                machine=dict(MACHINE, cpu="Other CPU", bf16_native="no"))
    code, out = _run(a, b, bounds, capsys)
    assert code == 0, out
    assert "identity: not expected" in out and "skipped" in out


def test_a_base_model_beyond_the_bound_and_a_moved_gain_are_named(tmp_path, bounds, capsys):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", table1=_table1(sft_shift=-7.0, dpo_gain=-6.0))
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert "SFT start ds/gsm: committed 46.0 -> new 39.0 (|diff| > 6.0" in out
    # tolerance 3 * sqrt(0.25/2 + 0.25/2 + 1) = 3.35 points; the gain moved 5
    assert "table1.csv: paired / answer / dpo / ds / gsm: gain over SFT committed -1.0 -> " \
           "new -6.0 (|diff| 5.0 > 3.4)" in out
    assert "the study does NOT reproduce" in out


def test_a_claimed_direction_that_turns_fails_a_weak_one_may(tmp_path, bounds, capsys):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", sig=_significance(diff=-0.5, p=0.7))
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert ("significance.csv: 1 / paired_answer / ds / gsm / vs_sft_cont: committed pipa_m - "
            "sft_cont +3.0 (p_boot 0.0010 < 0.01) -> new pipa_m - sft_cont -0.5") in out
    weak = _report(tmp_path / "weak", sig=_significance(diff=0.8, p=0.2))
    assert _run(weak, b, bounds, capsys)[0] == 0  # nothing beyond noise was claimed


def test_a_training_direction_that_turns_is_named_by_its_stage(tmp_path, bounds, capsys):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", cells=_cells(margin=-0.3))
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert ("cells.csv: align_paired_answer@dpo-ds-0: reward margin committed +0.400 -> new "
            "-0.300 nats: training moves the other way") in out


def test_missing_rows_and_tables_are_reported(tmp_path, bounds, capsys):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", table1=_table1()[:2])  # the math rows are gone
    code, out = _run(a, b, bounds, capsys)
    assert code == 1
    assert "SFT start ds/math only in committed" in out
    assert "table1.csv: paired / answer / dpo / ds / math: row only in committed" in out
    pd.DataFrame([{"table": 2, "model": "ds", "benchmark": "gsm", "algorithm": "pipa_m",
                   "mean": 40.0, "std": 0.1, "n_seeds": 2}]).to_csv(a / "table2.csv",
                                                                    index=False)
    assert main([str(a), str(b), "--bounds", str(bounds)]) == 2
    assert "table2.csv: missing" in capsys.readouterr().err


def test_measure_adds_a_pair_and_the_check_uses_the_largest(tmp_path, capsys):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", table1=_table1(sft_shift=3.0, dpo_gain=-3.0))
    out = tmp_path / "bounds.json"
    assert main([str(a), str(b), "--measure", "--out", str(out), "--label", "t"]) == 0
    pair = json.loads(out.read_text())["pairs"][0]
    assert pair["sd_start"] == 3.0 and pair["max_abs_start_diff"] == 3.0
    # gain moved by 2 on both rows; the seed noise (0.25/2 twice) is taken out
    assert pair["sd_gain_excess"] == pytest.approx((4 - 0.25) ** 0.5, abs=1e-3)
    assert main([str(a), str(a), "--measure", "--out", str(out)]) == 0
    assert load_bounds(out)["sd_start"] == 3.0  # pairs 3.0 and 0.0: the larger


def test_a_folder_without_tables_is_an_input_error(tmp_path, bounds, capsys):
    (tmp_path / "empty").mkdir()
    b = _report(tmp_path / "b")
    assert main([str(tmp_path / "empty"), str(b), "--bounds", str(bounds)]) == 2
    assert "no table*.csv" in capsys.readouterr().err


def test_a_claim_holds_when_the_best_baseline_it_beats_changes(tmp_path, bounds, capsys):
    """`vs_best_baseline` compares with whichever baseline is best in that run: another
    machine may pick another one, and the claim (PIPA ahead of the best) still holds."""
    a = _report(tmp_path / "a")
    other = [dict(_significance(diff=1.5, p=0.04)[0], b="kto")]
    b = _report(tmp_path / "b", sig=other)
    code, out = _run(a, b, bounds, capsys)
    assert code == 0, out


def _two_rows(dpo: float, kto: float) -> list[dict]:
    rows = _table1(dpo_gain=dpo - 46.0)[:2]             # tier 1: the SFT start 46, DPO
    rows.append(dict(rows[1], algorithm="kto", mean=kto))
    return rows


def test_agreement_counts_orderings_gains_and_verdicts_that_another_run_repeats(tmp_path,
                                                                                capsys):
    # Run A: DPO 44 > KTO 43, both below the SFT start 46; its one claim at p 0.001.
    run_a = _report(tmp_path / "a", table1=_two_rows(44.0, 43.0),
                    sig=_significance(diff=3.0, p=0.001))
    # Run B: the order turns (KTO 47 > DPO 45: KTO now gains), the claim weakens to p 0.03.
    run_b = _report(tmp_path / "b", table1=_two_rows(45.0, 47.0),
                    sig=_significance(diff=1.0, p=0.03))
    out = tmp_path / "agreement.json"
    assert main(["--agreement", str(run_a), str(run_b), "--out", str(out)]) == 0
    found = json.loads(out.read_text())
    assert found["orderings"] == [0, 1]
    assert found["gain_signs"] == [1, 2]
    assert found["verdicts_05"] == [1, 1] and found["verdicts_01"] == [0, 1]
    assert found["claims_05"] == {"held": 1, "turned": 0, "claimed": 1, "found_in_b": 1}
    assert found["claims_01"] == {"held": 0, "turned": 0, "claimed": 1, "found_in_b": 0}
    assert found["same_partner"] == [1, 1]
    capsys.readouterr()
    # A run agrees with itself in everything.
    assert main(["--agreement", str(run_a), str(run_a)]) == 0
    itself = json.loads(capsys.readouterr().out)
    assert itself["orderings"] == [1, 1] and itself["gain_signs"] == [2, 2]
    assert itself["claims_01"]["held"] == itself["claims_01"]["claimed"] == 1
