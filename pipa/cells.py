"""Per-cell records of a study and what made them: the report's ``cells.csv`` and
``provenance.json``, the files ``pipa.compare`` reads beside the tables.

``cells.csv`` has one row per evaluated cell and seed: its accuracy per benchmark and, for
an aligned cell, its training direction, the reward margin: the mean implicit reward of
correct minus incorrect samples over the second half of the selected run's steps
(``reward_correct`` / ``reward_incorrect``, logged by every loss of ``pipa.losses``); for a
cell with a value head, the head as a verifier: the AUC of g at step ends against final
correctness on the cell's validation decodes (``pipa.verifier``, in ``train.json``).
``provenance.json`` lists the precisions and machines recorded in the cells' ``train.json``
(``pipa.hardware.machine``), so a reader, and the table check, know what computed the numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

MARGIN_CURVES = ("reward_correct", "reward_incorrect")


def read_curve(path: Path, name: str) -> pd.DataFrame:
    """A dvclive metric TSV as (step, value); unparsable values become NaN."""
    df = pd.read_csv(path, sep="\t")
    if "step" not in df.columns or name not in df.columns:
        raise ValueError(f"{path}: expected columns 'step' and {name!r}, got "
                         f"{list(df.columns)}")
    return pd.DataFrame({"step": df["step"].astype(int),
                         "value": pd.to_numeric(df[name], errors="coerce")})


def late_mean(path: Path, name: str, share: float = 0.5) -> float:
    """Mean of a dvclive metric over the last ``share`` of its steps (the steps from
    (1 - share) x the last one on; NaN if never logged)."""
    if not path.is_file():
        return math.nan
    df = read_curve(path, name)
    late = df["value"][df["step"] >= df["step"].max() * (1 - share)].dropna()
    return float(late.mean()) if len(late) else math.nan


def reward_margin(root: Path, cell) -> float:
    """The cell's training direction in nats (NaN where it has no incorrect samples, as
    the control, or no alignment run, as the SFT start)."""
    if cell.group == "sft" or cell.control:
        return math.nan
    correct, incorrect = (late_mean(root / cell.curve(n), n) for n in MARGIN_CURVES)
    return correct - incorrect


VERIFIER_COLUMNS = {"value_auc_step": "auc_step", "value_auc_last": "auc_last"}


def verifier_aucs(root: Path, cell) -> dict[str, float]:
    """The cell's value-head AUCs (NaN for a cell without a head, or the SFT start)."""
    path = root / cell.run_dir / "align" / "train.json"
    found = {}
    if cell.group != "sft" and path.is_file():
        found = json.loads(path.read_text()).get("verifier") or {}
    return {col: round(float(found.get(key, math.nan)), 6)
            for col, key in VERIFIER_COLUMNS.items()}


def cell_table(col) -> pd.DataFrame:
    """One row per cell of ``col`` (``pipa.reports.Collected``): accuracy per benchmark in
    percent, the reward margin, and the DVC stage that made it."""
    wide = col.acc.pivot_table(index="cell", columns="benchmark", values="accuracy",
                               sort=False)
    rows = []
    for group in ("sft", "main", "ablation", "threshold"):
        for c in col.cells[group]:
            row = {"group": c.group, "setting": c.setting, "algorithm": c.algorithm,
                   "ablation": c.ablation, "threshold": c.threshold, "model": c.model,
                   "seed": c.seed, "stage": c.stage(),
                   "margin": round(reward_margin(col.root, c), 6),
                   **verifier_aucs(col.root, c)}
            row.update({f"acc_{b}": wide.loc[c, b] for b in col.benchmarks})
            rows.append(row)
    return pd.DataFrame(rows)


def study_provenance(col) -> dict:
    """Precisions and machines recorded by the cells that trained (their ``train.json``),
    with the learning rates they chose on validation and their optimizer steps."""
    precisions, machines, recorded, cells = set(), [], 0, 0
    chosen: dict[str, int] = {}
    steps: list[int] = []
    for group in ("main", "ablation", "threshold"):
        for c in col.cells[group]:
            cells += 1
            path = col.root / c.run_dir / "align" / "train.json"
            if not path.is_file():
                continue
            info = json.loads(path.read_text())
            if "selected_lr" in info:
                lr = f"{float(info['selected_lr']):g}"
                chosen[lr] = chosen.get(lr, 0) + 1
            if "steps" in info:
                steps.append(int(info["steps"]))
            if "precision" not in info:
                continue
            recorded += 1
            precisions.add(info["precision"])
            if info.get("machine") not in machines:
                machines.append(info.get("machine"))
    return {"precision": sorted(precisions), "machines": machines,
            "cells": cells, "cells_recorded": recorded,
            "selected_lr": dict(sorted(chosen.items(), key=lambda kv: float(kv[0]))),
            "steps": [min(steps), max(steps)] if steps else []}
