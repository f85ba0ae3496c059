"""Table 5 (beyond the paper, issue #20): search at inference with PIPA's value head against
majority vote at the same budget, from the cell records of ``pipa.search_eval.search_cell``.

``records``: one dict per searched cell, ``{"setting", "algorithm", "model", "seed"}`` plus
what ``search_cell`` returned (``problems``, ``modes`` with per-problem ``correct``,
``verifier``, ``reliability``, ``spec``). ``table5`` renders the table (md / tex through
``pipa.reports.tables.Table``, a long CSV), ``verifier_table`` g's AUC per cell, and
``reliability_figure`` g's reliability diagram. ``build`` writes them all.

Each value-guided row (the value beam, best-of-N by g) is tested against majority@N at the
same N with the paired bootstrap over problems and seeds (``pipa.reports.stats``,
one-sided: is the value-guided mode better?). A row's tokens are the mean sampled per
problem: a beam that spends fewer tokens than majority@N and still beats it wins at less
compute. The references (the world's oracle, chance) run on the seeds that ``spec``
asked them on; they are shown apart, as a check on the search, not as rows to compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipa.reports.stats import ALPHA, POWER, mean_std, min_detectable_difference, paired_bootstrap
from pipa.reports.tables import Table, fmt_cell, fmt_p

LONG_COLUMNS = ["setting", "algorithm", "model", "benchmark", "mode", "scorer", "budget",
                "reference", "mean", "std", "n_seeds", "n_problems", "tokens_per_problem",
                "p_vs_majority"]
VERIFIER_COLUMNS = ["setting", "algorithm", "model", "auc_step", "auc_step_std", "auc_last",
                    "auc_last_std", "auc_min", "auc_min_std", "n_seeds", "n_samples"]

# (mode, scorer) -> the row's name; the order is the table's.
ROWS = {("greedy", None): "greedy",
        ("majority", None): "majority@N",
        ("step_beam", "policy"): "policy beam (log-prob)",
        ("step_beam", "g"): "value beam (g)",
        ("best_of_n_min", "g"): "value best-of-N (min g)",
        ("best_of_n_last", "g"): "value best-of-N (last g)"}
VALUE_GUIDED = {("step_beam", "g"), ("best_of_n_min", "g"), ("best_of_n_last", "g")}
REFERENCES = {("step_beam", "oracle"): "oracle beam",
              ("best_of_n_min", "oracle"): "oracle best-of-N (min)",
              ("step_beam", "random"): "random beam"}


class SearchRecordError(ValueError):
    """Cell records that cannot make one table (names the cell and the fix)."""


def _name(r: Mapping) -> str:
    return f"{r['setting']}/{r['algorithm']}/{r['model']}/seed{r['seed']}"


def _blocks(records: Sequence[Mapping]) -> dict[tuple, list[Mapping]]:
    """(setting, algorithm, model) -> its cells, seeds in order; every cell of a block must
    have searched the same problems with the same spec (else the pairing is meaningless)."""
    blocks: dict[tuple, list[Mapping]] = {}
    for r in sorted(records, key=lambda r: (r["setting"], r["algorithm"], r["model"],
                                            r["seed"])):
        blocks.setdefault((r["setting"], r["algorithm"], r["model"]), []).append(r)
    first = records[0] if records else None
    for r in records:
        for key in ("problems",):
            if r[key] != first[key]:
                raise SearchRecordError(
                    f"{_name(r)}: searched other problems than {_name(first)}; re-run the "
                    "search stage of every cell with the same search params")
        spec = {k: v for k, v in r["spec"].items() if k != "references"}
        if spec != {k: v for k, v in first["spec"].items() if k != "references"}:
            raise SearchRecordError(f"{_name(r)}: search spec {r['spec']} differs from "
                                    f"{_name(first)}'s {first['spec']}; re-run it")
    return blocks


def _rows_of(record: Mapping) -> dict[tuple, Mapping]:
    return {(m["mode"], m["scorer"], int(m["budget"])): m for m in record["modes"]}


def _benchmarks(record: Mapping) -> list[str]:
    return list(dict.fromkeys(p["benchmark"] for p in record["problems"]))


def _correct(cells: Sequence[Mapping], key: tuple, bench: str) -> np.ndarray | None:
    """(n_seeds, n_problems of ``bench``) 0/1 of row ``key``; None if a cell lacks it."""
    out = []
    for r in cells:
        row = _rows_of(r).get(key)
        if row is None:
            return None
        mask = [p["benchmark"] == bench for p in r["problems"]]
        out.append([c for c, m in zip(row["correct"], mask) if m])
    return np.asarray(out, dtype=float)


def search_long(records: Sequence[Mapping]) -> pd.DataFrame:
    """Every row of every block, per benchmark: mean and std over seeds, tokens per problem
    (mean over seeds), and for the value-guided rows p_boot against majority@N."""
    rows = []
    for (setting, alg, model), cells in _blocks(records).items():
        keys = list(dict.fromkeys(k for r in cells for k in _rows_of(r)))
        for bench in _benchmarks(cells[0]):
            for mode, scorer, budget in keys:
                reference = (mode, scorer) in REFERENCES
                if (mode, scorer) not in ROWS and not reference:
                    continue
                mine = [r for r in cells if (mode, scorer, budget) in _rows_of(r)]
                x = _correct(mine, (mode, scorer, budget), bench)
                mean, std, n = mean_std(100 * x.mean(axis=1))
                tokens = float(np.mean([_rows_of(r)[(mode, scorer, budget)]
                                        ["tokens_per_problem"] for r in mine]))
                p = math.nan
                if (mode, scorer) in VALUE_GUIDED:
                    maj = _correct(mine, ("majority", None, budget), bench)
                    if maj is not None:
                        p = paired_bootstrap(x, maj, alternative="greater")
                rows.append({"setting": setting, "algorithm": alg, "model": model,
                             "benchmark": bench, "mode": mode, "scorer": scorer or "",
                             "budget": budget, "reference": reference, "mean": mean,
                             "std": std, "n_seeds": n, "n_problems": x.shape[1],
                             "tokens_per_problem": tokens, "p_vs_majority": p})
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def _detectable(records: Sequence[Mapping]) -> list[float]:
    """The minimum detectable difference (alpha, power as Table 1's) of every value-guided
    row against majority@N at the same N, per block and benchmark."""
    out = []
    for cells in _blocks(records).values():
        budgets = sorted({k[2] for r in cells for k in _rows_of(r) if k[0] == "majority"})
        for bench in _benchmarks(cells[0]):
            for budget in budgets:
                maj = _correct(cells, ("majority", None, budget), bench)
                for mode, scorer in sorted(VALUE_GUIDED):
                    x = _correct(cells, (mode, scorer, budget), bench)
                    if x is not None and maj is not None:
                        out.append(min_detectable_difference(x, maj))
    return [v for v in out if not math.isnan(v)]


def table5(records: Sequence[Mapping], model_labels: Mapping[str, str] | None = None,
           benchmark_labels: Mapping[str, str] | None = None) -> Table:
    if not records:
        raise SearchRecordError("Table 5: no searched cell; run the search stages first")
    model_labels, benchmark_labels = model_labels or {}, benchmark_labels or {}
    long = search_long(records)
    benches = _benchmarks(records[0])
    spec = records[0]["spec"]
    columns = [benchmark_labels.get(b, b) for b in benches] + ["tokens / problem"]
    blocks = []
    main = long[~long["reference"]]
    for (setting, alg, model), g in main.groupby(["setting", "algorithm", "model"],
                                                 sort=False):
        block = []
        order = sorted({(r.mode, r.scorer or None, r.budget) for r in g.itertuples()},
                       key=lambda k: (k[2] > 1, k[2], list(ROWS).index(k[:2])))
        for mode, scorer, budget in order:
            sel = g[(g["mode"] == mode) & (g["scorer"] == (scorer or ""))
                    & (g["budget"] == budget)].set_index("benchmark")
            cells, bold = [], []
            for b in benches:
                r = sel.loc[b]
                text = fmt_cell(r["mean"], r["std"], int(r["n_seeds"]))
                if (mode, scorer) in VALUE_GUIDED:
                    text += f" (p {fmt_p(r['p_vs_majority'])})"
                cells.append(text)
                bold.append(bool((mode, scorer) in VALUE_GUIDED
                                 and r["p_vs_majority"] < ALPHA))
            cells.append(f"{sel['tokens_per_problem'].mean():.0f}")
            bold.append(False)
            lead = [setting, alg, model_labels.get(model, model),
                    "1" if mode == "greedy" else str(budget), ROWS[(mode, scorer)]]
            block.append((lead, cells, bold))
        blocks.append(block)
    n_problems = "/".join(str(v) for v in sorted(set(long["n_problems"])))
    n_seeds = "/".join(str(v) for v in sorted(set(main["n_seeds"])))
    mdd = _detectable(records)
    notes = [
        (f"{n_problems} test problems per benchmark (the same subsample for every cell) x "
        f"{n_seeds} seed(s): mean ± std over seeds of accuracy (%). N: samples for "
        f"majority@N and best-of-N; the beams keep B1 = {spec['beam_width']} partial "
        f"solutions and sample N / B1 next steps from each, at temperature "
        f"{spec['temperature']} (a step ends at a line break, at most "
        f"{spec['max_step_tokens']} tokens)."),
        ("tokens / problem: tokens sampled per problem (mean over the benchmarks and seeds); "
        "the scorers' own forward passes sample nothing and are not counted. A beam that "
        "beats majority@N with fewer tokens wins at less compute."),
        ("p: paired bootstrap over problems and seeds (one-sided: the value-guided mode "
        f"better than majority@N at the same N; bold: p < {ALPHA:g})."),
    ]
    if mdd:
        notes.append(
            f"Power: the smallest difference from majority@N these rows could detect "
            f"(alpha {ALPHA:g}, power {POWER:.0%}, from the per-problem disagreements) is "
            f"{min(mdd):.1f}-{max(mdd):.1f} points; a smaller true gain reads as noise.")
    refs = long[long["reference"]]
    if len(refs):
        parts = []
        for (model, mode, scorer, budget), g in refs.groupby(
                ["model", "mode", "scorer", "budget"], sort=True):
            accs = " / ".join(f"{g[g['benchmark'] == b]['mean'].mean():.1f}" for b in benches)
            parts.append(f"{model_labels.get(model, model)} {REFERENCES[(mode, scorer)]} "
                         f"N={budget}: {accs}")
        greedy = main[main["mode"] == "greedy"]
        g_accs = " / ".join(f"{greedy[greedy['benchmark'] == b]['mean'].mean():.1f}"
                            for b in benches)
        notes.append(
            "References, the check on the search itself (on the seeds the search spec ran "
            "them on; accuracy per benchmark, mean over the algorithms' cells; greedy "
            f"over all cells {g_accs}): " + "; ".join(parts) + ". The oracle (the world's "
            "checker on the prefix) must lift the beam far above greedy and chance must "
            "not; if they do, a value beam at greedy's level says g carries no usable "
            "signal.")
    return Table(number=5, caption="Search at inference with PIPA's value head g against "
                 "majority vote at the same budget (beyond the paper).",
                 long=long, lead=["setting", "algorithm", "model", "N", "mode"],
                 columns=columns, blocks=blocks, notes=notes)


def verifier_table(records: Sequence[Mapping]) -> pd.DataFrame:
    """g as a verifier on each cell's test samples: AUC at every step end, at the last one,
    and of the minimum over a solution's step ends, against its final correctness; mean and
    std over seeds per block."""
    rows = []
    for (setting, alg, model), cells in _blocks(records).items():
        row = {"setting": setting, "algorithm": alg, "model": model}
        for key in ("auc_step", "auc_last", "auc_min"):
            mean, std, n = mean_std(r["verifier"][key] for r in cells)
            row[key], row[f"{key}_std"], row["n_seeds"] = mean, std, n
        row["n_samples"] = int(sum(r["verifier"].get("solutions", 0) for r in cells))
        rows.append(row)
    return pd.DataFrame(rows, columns=VERIFIER_COLUMNS)


def pooled_reliability(records: Sequence[Mapping]) -> pd.DataFrame:
    """g's reliability bins pooled over the seeds (and settings) of each algorithm and
    model: count-weighted mean g and share correct per bin."""
    rows = []
    for r in records:
        for b in r["reliability"]:
            rows.append({"algorithm": r["algorithm"], "model": r["model"], "low": b["low"],
                         "high": b["high"], "count": b["count"],
                         "g_sum": b["mean_g"] * b["count"],
                         "correct_sum": b["correct"] * b["count"]})
    if not rows:
        return pd.DataFrame(columns=["algorithm", "model", "low", "high", "count", "mean_g",
                                     "correct"])
    df = pd.DataFrame(rows).groupby(["algorithm", "model", "low", "high"], as_index=False,
                                    sort=True)[["count", "g_sum", "correct_sum"]].sum()
    df["mean_g"] = df["g_sum"] / df["count"]
    df["correct"] = df["correct_sum"] / df["count"]
    return df[["algorithm", "model", "low", "high", "count", "mean_g", "correct"]]


def reliability_figure(pooled: pd.DataFrame, path: Path,
                       model_labels: Mapping[str, str] | None = None) -> None:
    """One panel per model: share of correct solutions against mean g per bin, one line per
    algorithm (marker area ~ the bin's count), and the diagonal a calibrated g lies on."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_labels = model_labels or {}
    models = list(dict.fromkeys(pooled["model"]))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 3.8),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
        for alg, g in pooled[pooled["model"] == model].groupby("algorithm", sort=True):
            ax.plot(g["mean_g"], g["correct"], marker="o", lw=1.2, label=alg)
            ax.scatter(g["mean_g"], g["correct"], s=8 + 60 * g["count"] / g["count"].max(),
                       alpha=0.3)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="g at a step end (bin mean)",
               ylabel="share of those solutions correct",
               title=model_labels.get(model, model))
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability of PIPA's value head on test samples (Table 5's cells)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # fixed metadata: the same data gives the same bytes
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def build(records: Sequence[Mapping], out: str | Path,
          model_labels: Mapping[str, str] | None = None,
          benchmark_labels: Mapping[str, str] | None = None) -> dict:
    """Write ``table5.{md,tex,csv}``, ``verifier.csv``, ``reliability.csv`` and
    ``reliability.png`` under ``out``."""
    from pipa.reports.figures import _write_csv
    from pipa.reports.findings import _write_text

    out = Path(out)
    table = table5(records, model_labels, benchmark_labels)
    verifier = verifier_table(records)
    pooled = pooled_reliability(records)
    md = table.markdown() + "\n**g as a verifier** on the N sampled test solutions of each " \
        "problem (AUC against final correctness; mean ± std over seeds):\n\n" \
        "| setting | algorithm | model | every step end | last step end | min over steps |\n" \
        "|---|---|---|---|---|---|\n" + "".join(
            f"| {r.setting} | {r.algorithm} | {(model_labels or {}).get(r.model, r.model)} | "
            f"{fmt_cell(r.auc_step, r.auc_step_std, r.n_seeds)} | "
            f"{fmt_cell(r.auc_last, r.auc_last_std, r.n_seeds)} | "
            f"{fmt_cell(r.auc_min, r.auc_min_std, r.n_seeds)} |\n"
            for r in verifier.itertuples()) + \
        "\nReliability diagram: `reliability.png` (bins in `reliability.csv`).\n"
    _write_text(out / "table5.md", md)
    _write_text(out / "table5.tex", table.latex())
    _write_csv(table.long.round({"mean": 4, "std": 4, "tokens_per_problem": 2,
                                 "p_vs_majority": 4}), out / "table5.csv")
    _write_csv(verifier.round(4), out / "verifier.csv")
    _write_csv(pooled.round(4), out / "reliability.csv")
    reliability_figure(pooled, out / "reliability.png", model_labels)
    return {"table": table, "verifier": verifier,
            "cells": sorted(_name(r) for r in records)}


def read_records(paths: Sequence[tuple[Mapping, Path]]) -> list[dict]:
    """The cell records at ``paths`` (``(cell keys, search.json)``); a missing file is an
    error naming every one that is missing."""
    missing = [str(p) for _, p in paths if not Path(p).is_file()]
    if missing:
        raise SearchRecordError(f"Table 5: {len(missing)} searched cell(s) missing: "
                                + ", ".join(missing[:6]) + ("..." if len(missing) > 6 else "")
                                + "; run their search stages")
    return [{**json.loads(Path(p).read_text()), **keys} for keys, p in paths]
