"""Tables 1-4, Figures 3-5, the paired bootstrap and the generated reports/README.md.

Everything is driven by the grid in ``params.yaml``: the expected run cells are computed
from params (never globbed), ``collect`` checks all of them before any work and raises one
error naming every missing file with its DVC stage, and ``build`` writes every output whole.

Modules: ``grid`` (expected cells and files, ``collect``), ``stats`` (means, the paired
bootstrap, ``significance``), ``tables`` (``table1``, ``ablation_table``), ``figures``
(Figures 3-5 and the long-form curves dvc.yaml's ``plots:`` reads), ``findings`` (``agreement``, the README); ``build``
here writes them all. The names below are the package's public API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipa.cells import cell_table, study_provenance
from pipa.config_types import Grid
from pipa.reports.figures import (
    _write_csv,
    figure3,
    figure4,
    figure5,
    long_curves,
    threshold_sweep,
    training_loss,
)
from pipa.reports.findings import _write_text, agreement, readme, second_base_words
from pipa.reports.grid import (
    Cell,
    Collected,
    MissingCellsError,
    _expected_figures,
    collect,
    expected_cells,
    expected_files,
    main_cell,
)
from pipa.reports.stats import (
    SIGNIFICANCE_COLUMNS,
    _summary,
    detectable_differences,
    min_detectable_difference,
    paired_bootstrap,
    significance,
)
from pipa.reports.tables import Table, ablation_table, fmt_cell, table1

__all__ = [
    "SIGNIFICANCE_COLUMNS",
    "Cell",
    "Collected",
    "MissingCellsError",
    "Table",
    "ablation_table",
    "build",
    "collect",
    "detectable_differences",
    "expected_cells",
    "expected_files",
    "fmt_cell",
    "main_cell",
    "min_detectable_difference",
    "paired_bootstrap",
    "significance",
    "table1",
]


def build(grid: Grid, root: str | Path, out: str | Path,
          second_base_model: str | Path | None = None) -> dict:
    """Collect the grid under ``root`` and write every report file under ``out``;
    ``second_base_model``: the report folder of the same params on another base model
    (relative to ``root``), whose repeats of this report's claims the README counts."""
    col = collect(grid, root)
    out = Path(out)
    summary = _summary(col)
    sig = significance(col, summary)
    power = detectable_differences(col)
    tables = [table1(col, summary, sig, power)]
    # Every ablation table params name (2-4 are the paper's; a new number gets its own).
    for n in sorted({s.table for s in grid.ablations.values()
                     if s is not None}):
        t = ablation_table(col, n, summary, sig, power)
        if t is not None:
            tables.append(t)
    written = []
    for t in tables:
        stem = out / f"table{t.number}"
        _write_text(stem.with_suffix(".md"), t.markdown())
        _write_text(stem.with_suffix(".tex"), t.latex())
        _write_csv(t.long, stem.with_suffix(".csv"))
        written += [f"table{t.number}.{x}" for x in ("md", "tex", "csv")]
    _write_csv(sig.round({"mean_a": 4, "mean_b": 4, "diff": 4, "p_boot": 4}),
               out / "significance.csv")
    _write_csv(power.round({"discordant": 4, "sd_diff": 4, "mdd": 3}), out / "power.csv")
    curves3 = figure3(col, out)
    curves4 = figure4(col, out)
    sweep = threshold_sweep(col, summary) if grid.sweep_thresholds else pd.DataFrame()
    figure5(col, out, sweep)
    # The curves `dvc plots show` draws (dvc.yaml's plots: one entry per folder, one plot
    # per file, one line per curve): by training step, and by step-label threshold.
    for model, wide in curves3.items():
        _write_csv(long_curves(wide, "step"),
                   out / "plots" / "curves" / f"fig3_value_likelihood_{model}.csv")
    for model, wide in curves4.items():
        _write_csv(long_curves(wide, "step"),
                   out / "plots" / "curves" / f"fig4_implicit_reward_{model}.csv")
    loss = training_loss(col)
    if len(loss):
        _write_csv(loss, out / "plots" / "curves" / "training_loss.csv")
    if len(sweep):
        wide = sweep.pivot(index="threshold", columns="model", values="mean")
        wide.columns = [f"mean_{m}" for m in wide.columns]
        _write_csv(long_curves(wide.reset_index(), "threshold"),
                   out / "plots" / "threshold" / "fig5_threshold.csv")
    figures = _expected_figures(col)
    findings = agreement(col, summary, sig, curves3, curves4, sweep)
    # What pipa.compare checks beside the tables: per-cell records and what computed them.
    cells = cell_table(col)
    _write_csv(cells, out / "cells.csv")
    prov = study_provenance(col)
    _write_text(out / "provenance.json", json.dumps(prov, indent=2, sort_keys=True) + "\n")
    second = None
    if second_base_model:
        second = second_base_words(out, Path(root) / second_base_model, str(second_base_model))
    _write_text(out / "README.md",
                readme(col, tables, sig, findings, figures, prov, power, cells, second))
    return {"tables": written, "figures": figures, "findings": findings,
            "significance": sig, "power": power}
