"""Table 5 (beyond the paper, issue #20): search at inference with PIPA's value head against
majority vote at the same budget, from the cell records of ``pipa.search_eval.search_cell``.

``records``: one dict per searched cell, ``{"setting", "algorithm", "model", "seed"}`` plus
what ``search_cell`` returned (``problems``, ``modes`` with per-problem ``correct``,
``verifier``, ``reliability``, ``spec``). ``table5`` renders the table (md / tex through
``pipa.reports.tables.Table``, a long CSV), ``verifier_table`` g's AUC per cell, and
``reliability_figure`` g's reliability diagram. ``build`` writes them all.

Each value-guided row (the value beam, best-of-N by g) is tested against majority vote at
matched compute: majority@m with the smallest m whose sampled tokens per problem reach the
row's own on that benchmark (the records hold majority at every m up to the largest N), so a
mode is never compared with a vote that spent less. The test is the paired bootstrap over
problems (``pipa.reports.stats``: each problem's 0/1 averaged over seeds, problems
resampled; one-sided: is the value-guided mode better?), with its minimum detectable
difference beside it. No correction for the number of comparisons: the notes say how many
would read significant by chance alone. The references (the world's oracle, chance) run on the seeds that ``spec``
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
                "majority_m", "majority_tokens", "p_vs_majority", "mdd"]
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
        if r["problems"] != first["problems"]:
            raise SearchRecordError(
                f"{_name(r)}: searched other problems than {_name(first)}; re-run the "
                "search of every cell with the same search params")
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


def _tokens(cells: Sequence[Mapping], key: tuple, bench: str) -> float:
    """Tokens row ``key`` sampled per problem of ``bench``, mean over problems and seeds."""
    per_seed = []
    for r in cells:
        row = _rows_of(r)[key]
        mask = [p["benchmark"] == bench for p in r["problems"]]
        mine = [t for t, m in zip(row["tokens"], mask) if m]
        per_seed.append(sum(mine) / len(mine))
    return float(np.mean(per_seed))


def matched_majority(cells: Sequence[Mapping], tokens: float, bench: str) -> int:
    """The m of majority@m at matched compute for a row that sampled ``tokens`` per problem
    of ``bench``: the smallest m whose vote spent at least as many, else the largest m the
    records hold (the row then spent more than any vote: its note says so)."""
    ms = sorted({k[2] for k in _rows_of(cells[0]) if k[0] == "majority"})
    if not ms:
        raise SearchRecordError(f"{_name(cells[0])}: no majority-vote rows; re-run its search")
    for m in ms:
        if _tokens(cells, ("majority", None, m), bench) >= tokens:
            return m
    return ms[-1]


def search_long(records: Sequence[Mapping]) -> pd.DataFrame:
    """Every row of every block, per benchmark: mean and std over seeds, tokens per problem
    (mean over problems and seeds); for the value-guided rows the majority@m at matched
    compute, p_boot against it and the minimum detectable difference."""
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
                tokens = _tokens(mine, (mode, scorer, budget), bench)
                m = p = mdd = maj_tokens = math.nan
                if (mode, scorer) in VALUE_GUIDED:
                    m = matched_majority(mine, tokens, bench)
                    maj = _correct(mine, ("majority", None, m), bench)
                    maj_tokens = _tokens(mine, ("majority", None, m), bench)
                    p = paired_bootstrap(x, maj, alternative="greater")
                    mdd = min_detectable_difference(x, maj)
                rows.append({"setting": setting, "algorithm": alg, "model": model,
                             "benchmark": bench, "mode": mode, "scorer": scorer or "",
                             "budget": budget, "reference": reference, "mean": mean,
                             "std": std, "n_seeds": n, "n_problems": x.shape[1],
                             "tokens_per_problem": tokens, "majority_m": m,
                             "majority_tokens": maj_tokens, "p_vs_majority": p, "mdd": mdd})
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def table5(records: Sequence[Mapping], model_labels: Mapping[str, str] | None = None,
           benchmark_labels: Mapping[str, str] | None = None) -> Table:
    """Table 5: one block per (setting, algorithm, model); greedy, then each budget N's
    majority@N, policy beam and value-guided rows, each value-guided cell with its p_boot
    against majority at matched compute (``search_long``)."""
    if not records:
        raise SearchRecordError("Table 5: no searched cell; run the search stages first")
    model_labels, benchmark_labels = model_labels or {}, benchmark_labels or {}
    long = search_long(records)
    benches = _benchmarks(records[0])
    spec = records[0]["spec"]
    budgets = set(spec["budgets"])
    columns = [benchmark_labels.get(b, b) for b in benches] + ["tokens / problem"]
    blocks = []
    main = long[~long["reference"]]
    # majority at every m is kept for matching; the table shows it at the budgets
    shown = main[(main["mode"] != "majority") | main["budget"].isin(budgets)]
    for (setting, alg, model), g in shown.groupby(["setting", "algorithm", "model"],
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
                    text += f" (vs maj@{int(r['majority_m'])}: p {fmt_p(r['p_vs_majority'])})"
                cells.append(text)
                bold.append(bool((mode, scorer) in VALUE_GUIDED
                                 and r["p_vs_majority"] < ALPHA))
            cells.append(" / ".join(f"{sel.loc[b, 'tokens_per_problem']:.0f}" for b in benches))
            bold.append(False)
            lead = [setting, alg, model_labels.get(model, model),
                    "1" if mode == "greedy" else str(budget), ROWS[(mode, scorer)]]
            block.append((lead, cells, bold))
        blocks.append(block)
    n_problems = "/".join(str(v) for v in sorted(set(long["n_problems"])))
    n_seeds = "/".join(str(v) for v in sorted(set(main["n_seeds"])))
    tested = main[main["p_vs_majority"].notna()]
    outspent = tested[tested["tokens_per_problem"] > tested["majority_tokens"]]
    mdd = tested["mdd"].dropna()
    notes = [
        (f"{n_problems} test problems per benchmark (the same subsample for every cell) x "
         f"{n_seeds} seed(s): mean ± std over seeds of accuracy (%). N: samples for "
         f"majority@N and best-of-N; the beams keep B1 = {spec['beam_width']} partial "
         f"solutions and sample N / B1 next steps from each, at temperature "
         f"{spec['temperature']} (a step ends at a line break, at most "
         f"{spec['max_step_tokens']} tokens; a path at most as long as a sample)."),
        ("tokens / problem: tokens sampled per problem of each benchmark (mean over problems "
         "and seeds); the scorers' own forward passes sample nothing and are not counted."),
        ("Matched compute: each value-guided row is tested against maj@m, majority vote over "
         "the first m of the same samples with the smallest m that spent at least the row's "
         "tokens on that benchmark"
         + (f" (in {len(outspent)} of {len(tested)} cells the row spent more than the "
            "largest vote, maj@" + str(max(budgets)) + ", which is then its comparison)"
            if len(outspent) else "") + "."),
        ("p: paired bootstrap over problems (each problem's 0/1 averaged over the seeds, "
         f"problems resampled; one-sided: the value-guided mode better; bold: p < {ALPHA:g}). "
         f"{len(tested)} such tests, uncorrected for their number: about "
         f"{ALPHA * len(tested):.1f} would read bold by chance alone."),
    ]
    if len(mdd):
        notes.append(
            f"Power: the smallest difference from its matched vote that these rows could "
            f"detect (alpha {ALPHA:g}, power {POWER:.0%}, from the per-problem disagreements; "
            f"column mdd of table5.csv) is {mdd.min():.1f}-{mdd.max():.1f} points; a smaller "
            f"true gain reads as noise.")
    refs = long[long["reference"]]
    if len(refs):
        parts = []
        for (model, mode, scorer, budget), g in refs.groupby(
                ["model", "mode", "scorer", "budget"], sort=True):
            accs = " / ".join(f"{g[g['benchmark'] == b]['mean'].mean():.1f}" for b in benches)
            parts.append(f"{model_labels.get(model, model)} {REFERENCES[(mode, scorer)]} "
                         f"N={budget}: {accs}")
        ref_seeds = sorted({r["seed"] for r in records if r["spec"].get("references")})
        greedy = []
        for model in sorted(set(refs["model"])):
            accs = []
            for b in benches:
                x = [100 * np.mean([c for c, q in zip(_rows_of(r)[("greedy", None, 1)]
                                                      ["correct"], r["problems"])
                                    if q["benchmark"] == b])
                     for r in records if r["model"] == model and r["seed"] in ref_seeds]
                accs.append(f"{np.mean(x):.1f}")
            greedy.append(f"{model_labels.get(model, model)} " + " / ".join(accs))
        notes.append(
            "References, the check on the search itself (on the cells of seed(s) "
            f"{', '.join(map(str, ref_seeds))}; accuracy per benchmark, mean over the "
            "algorithms' cells; greedy on the same cells: " + "; ".join(greedy) + "): "
            + "; ".join(parts) + ". The oracle (the world's checker on the prefix) must lift "
            "the beam far above greedy and chance must not; if they do, a value beam at "
            "greedy's level says g carries no usable signal.")
    return Table(number=5, caption="Search at inference with PIPA's value head g against "
                 "majority vote at matched compute (beyond the paper).",
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


def verifier_markdown(verifier: pd.DataFrame, n_samples: int,
                      model_labels: Mapping[str, str] | None = None) -> str:
    """``verifier_table``'s rows as the markdown section under Table 5."""
    labels = model_labels or {}
    title = (f"**g as a verifier** on the sampled test solutions ({n_samples} per problem; "
             "AUC against final correctness; mean ± std over seeds):")
    header = "| setting | algorithm | model | every step end | last step end | min over steps |"
    lines = [title, "", header, "|---|---|---|---|---|---|"]
    for r in verifier.itertuples():
        lines.append(f"| {r.setting} | {r.algorithm} | {labels.get(r.model, r.model)} | "
                     f"{fmt_cell(r.auc_step, r.auc_step_std, r.n_seeds)} | "
                     f"{fmt_cell(r.auc_last, r.auc_last_std, r.n_seeds)} | "
                     f"{fmt_cell(r.auc_min, r.auc_min_std, r.n_seeds)} |")
    lines += ["", "Reliability diagram: `reliability.png` (bins in `reliability.csv`)."]
    return "\n".join(lines) + "\n"


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
    md = table.markdown() + "\n" + verifier_markdown(
        verifier, max(records[0]["spec"]["budgets"]), model_labels)
    _write_text(out / "table5.md", md)
    _write_text(out / "table5.tex", table.latex())
    _write_csv(table.long.round({"mean": 4, "std": 4, "tokens_per_problem": 2,
                                 "majority_tokens": 2, "p_vs_majority": 4, "mdd": 4}),
               out / "table5.csv")
    _write_csv(verifier.round(4), out / "verifier.csv")
    _write_csv(pooled.round(4), out / "reliability.csv")
    reliability_figure(pooled, out / "reliability.png", model_labels)
    return {"table": table, "verifier": verifier,
            "cells": sorted(_name(r) for r in records)}


def search_dir(root: str | Path, setting: str, algorithm: str, model: str, seed: int) -> Path:
    """Where a cell's search record lies (stage search's output, ``search.json``)."""
    return Path(root) / "runs/search" / setting / algorithm / model / f"seed{seed}"


def build_from_grid(cfg, root: str | Path, out: str | Path) -> dict:
    """Table 5 over the cells params' ``search`` section names (every setting x algorithm
    x model x seed), from their records under ``root/runs/search``; a missing cell is an
    error naming it (stage table5)."""
    cells = cfg.search.cells(cfg.models, cfg.seeds)
    records = read_records([({"setting": s, "algorithm": a, "model": m, "seed": seed},
                             search_dir(root, s, a, m, seed) / "search.json")
                            for s, a, m, seed in cells])
    return build(records, out, cfg.report.model_labels, cfg.report.benchmark_labels)


def read_records(paths: Sequence[tuple[Mapping, Path]]) -> list[dict]:
    """The cell records at ``paths`` (``(cell keys, search.json)``); a missing file is an
    error naming every one that is missing."""
    missing = [str(p) for _, p in paths if not Path(p).is_file()]
    if missing:
        raise SearchRecordError(f"Table 5: {len(missing)} searched cell(s) missing: "
                                + ", ".join(missing[:6]) + ("..." if len(missing) > 6 else "")
                                + "; run their search stages")
    records = []
    for keys, path in paths:
        try:
            records.append({**json.loads(Path(path).read_text()), **keys})
        except json.JSONDecodeError as err:
            raise SearchRecordError(f"{path}: not a search record ({err}); delete it and "
                                    "search the cell again") from err
    return records
