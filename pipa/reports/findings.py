"""The report's prose: what agrees with the paper and what does not (``agreement``), and
reports/README.md."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipa import paper_numbers as paper
from pipa.config_types import Ablation
from pipa.io import atomic_path
from pipa.reports.grid import Collected, _settings, _split_setting, _sweep
from pipa.reports.stats import (
    ALPHA,
    BOOT_SEED,
    N_BOOT,
    POWER,
    _lookup,
    _main_mean,
    power_by_column,
    power_sizes,
)
from pipa.reports.tables import Table, _columns, _paper_bench, benchmark_label, model_label


def _count(pairs) -> tuple[int, int]:
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None
             and not (isinstance(a, float) and math.isnan(a))]
    return sum(a > b for a, b in pairs), len(pairs)


def agreement(col: Collected, summary: pd.DataFrame, sig: pd.DataFrame,
              curves3: dict, curves4: dict, sweep: pd.DataFrame) -> list[str]:
    """Plain-word findings, each computed from the numbers next to the paper's."""
    control = col.grid.control  # the control row: no baseline of the paper
    out = []
    cols = _columns(col, col.models)
    directions = []  # (what, ours a > b, paper a > b) for every comparison the paper has

    def direction(what, ours_a, ours_b, paper_a, paper_b):
        if None not in (paper_a, paper_b) and not math.isnan(ours_a - ours_b):
            directions.append((what, ours_a > ours_b, paper_a > paper_b))

    # Table 1: each PIPA variant against each paper baseline of its block
    for setting, algs in _settings(col.grid).items():
        data, labels = _split_setting(setting)
        bases = [a for a in algs if a not in paper.PIPA_ALGORITHMS and a != control]
        for p in [a for a in algs if a in paper.PIPA_ALGORITHMS]:
            for base in bases:
                ours = _count((_main_mean(summary, setting, p, m, b),
                               _main_mean(summary, setting, base, m, b)) for m, b in cols)
                pc = []
                for m, b in cols:
                    pb = _paper_bench(col.benchmarks, b)
                    if pb:
                        pair = (paper.paper_table1(data, labels, p, m, pb),
                                paper.paper_table1(data, labels, base, m, pb))
                        pc.append(pair)
                        direction(f"{paper.display(p)} vs {paper.display(base)}, {data}/{labels}"
                                  f", {_short_col(col, m, b)}",
                                  _main_mean(summary, setting, p, m, b),
                                  _main_mean(summary, setting, base, m, b), *pair)
                pw, pn = _count(pc)
                ptxt = f"paper: {pw} of {pn}" if pn else "paper: no numbers"
                out.append(f"{paper.display(p)} beats {paper.display(base)} in {ours[0]} of "
                           f"{ours[1]} columns of {data}/{labels} ({ptxt}).")
    t1 = sig[sig["table"] == 1] if len(sig) else sig
    for comp, who, what, aside in (
            ("vs_best_baseline", "The best PIPA variant",
             "the best other algorithm of its block (control included)", True),
            ("vs_best_paper_baseline", "The best PIPA variant",
             "the best of the paper's baselines", True),
            (f"vs_{control}", "The best PIPA variant", "the continued-SFT control", True),
            (f"baseline_vs_{control}", "The best of the paper's baselines",
             "the continued-SFT control", False)):
        s = t1[t1["comparison"] == comp] if len(t1) else t1
        if len(s):
            k = int(((s["p_boot"] < ALPHA) & (s["diff"] > 0)).sum())
            lose = int((s["diff"] < 0).sum())
            out.append(f"{who} beats {what} beyond noise (p_boot < {ALPHA}) in {k} of "
                       f"{len(s)} cells; it has the lower mean in {lose}."
                       + (" (The paper reports no significance tests and no control.)"
                          if aside else ""))
    # the SFT start point
    wins = 0
    for m, b in cols:
        best = max(_main_mean(summary, s, a, m, b)
                   for s, algs in _settings(col.grid).items() for a in algs
                   if a != control)
        wins += best > _lookup(summary, group="sft", model=m, benchmark=b)[0]
    out.append(f"The best aligned model beats the SFT start point in {wins} of {len(cols)} "
               "columns (the paper does not print the SFT accuracy).")
    # step vs answer labels
    settings = _settings(col.grid)
    for data in ("paired", "unpaired"):
        sa, ss = f"{data}_answer", f"{data}_step"
        if sa not in settings or ss not in settings:
            continue
        common = [a for a in settings[sa] if a in settings[ss] and a in paper.PIPA_ALGORITHMS]
        for bi, b in enumerate(col.benchmarks[:2]):
            ours = _count((_main_mean(summary, ss, a, m, b), _main_mean(summary, sa, a, m, b))
                          for a in common for m in col.models)
            pb = paper.PAPER_BENCHMARKS[bi]
            pw, pn = _count((paper.paper_table1(data, "step", a, m, pb),
                             paper.paper_table1(data, "answer", a, m, pb))
                            for a in common for m in col.models)
            out.append(f"Step-level labels beat answer-level labels for PIPA on {data} data, "
                       f"{benchmark_label(col.grid, col.benchmarks, b)}: {ours[0]} of "
                       f"{ours[1]} model × variant pairs (paper, "
                       f"{paper.PAPER_BENCHMARK_NAMES[pb]}: {pw} of {pn}).")
    # ablations
    for name in list(col.grid.ablations):
        spec = col.grid.ablations[name]
        ab_cols = _columns(col, list(col.grid.ablation_models))
        pairs, ppairs = [], []
        for m, b in ab_cols:
            pairs.append((_lookup(summary, group="ablation", ablation=name, model=m,
                                  benchmark=b)[0],
                          _main_mean(summary, spec.setting, spec.baseline, m, b)))
            pb = _paper_bench(col.benchmarks, b)
            if pb:
                ppairs.append((paper.paper_ablation(name, "row", m, pb),
                               paper.paper_ablation(name, "baseline", m, pb)))
                direction(f"{paper.ablation_display(name, spec)} vs "
                          f"{paper.display(spec.baseline)}, {_short_col(col, m, b)}",
                          *pairs[-1], *ppairs[-1])
        ours, (pw, pn) = _count(pairs), _count(ppairs)
        s = sig[sig["comparison"] == f"ablation:{name}"] if len(sig) else sig
        nsig = int((s["p_boot"] < ALPHA).sum()) if len(s) else 0
        ptxt = f"paper: {pw} of {pn}" if pn else "paper: no numbers"
        out.append(f"Table {spec.table}: {paper.ablation_display(name, spec)} is above "
                   f"{paper.display(spec.baseline)} in {ours[0]} of {ours[1]} columns "
                   f"({ptxt}); {nsig} of {len(s)} differences beyond noise (two-sided p_boot "
                   f"< {ALPHA}).")
    # figure 3
    if curves3:
        rise = tot = 0
        for wide in curves3.values():
            for c in wide.columns.drop("step"):
                v = wide[c].dropna().to_numpy()
                if v.size >= 2:
                    tot += 1
                    rise += v[-1] > v[0]
        out.append(f"Figure 3: the value head's label likelihood ends above where it starts "
                   f"in {rise} of {tot} curves (paper: a consistent rise from 0.5).")
    # figure 4
    for alg, paper_dir in paper.FIGURE4_CORRECT_REWARD.items():
        finals = []
        for wide in curves4.values():
            c = f"{alg}_correct"
            if c in wide.columns:
                v = wide[c].dropna().to_numpy()
                if v.size >= 2:
                    finals.append(v[-1] - v[0])
        if finals:
            falls = sum(x < 0 for x in finals)
            out.append(f"Figure 4: the implicit reward of correct samples under "
                       f"{paper.display(alg)} falls over training for {falls} of "
                       f"{len(finals)} models (paper: it {paper_dir}).")
    # figure 5
    if len(sweep):
        for model, g in sweep.groupby("model", sort=False):
            best = g.loc[g["mean"].idxmax()]
            ts = sorted(g["threshold"])
            inner = ts[0] < best["threshold"] < ts[-1]
            out.append(f"Figure 5 ({model}): the best threshold is {best['threshold']:g} "
                       f"({best['mean']:.2f}%), {'an intermediate' if inner else 'an extreme'} "
                       "value of the sweep (paper: an intermediate threshold is best).")
    if directions:
        agree = [d for d in directions if d[1] == d[2]]
        depart = [d for d in directions if d[1] != d[2]]
        text = (f"Overall, the direction of {len(agree)} of {len(directions)} pairwise "
                "comparisons that the paper also reports (Table 1 PIPA against each baseline, "
                "Tables 2-4 ablations, per column) agrees with the paper")
        if depart:
            text += "; it departs on: " + "; ".join(
                f"{w} ({'higher' if o else 'not higher'} here, "
                f"{'higher' if pp else 'not higher'} in the paper)" for w, o, pp in depart)
        out.insert(0, text + ".")
    return out


def _short_col(col: Collected, model: str, bench: str) -> str:
    return f"{model}/{bench}"


def _ablation_words(name: str, spec: Ablation) -> str:
    return (f"`{name}` (Table {spec.table}): {spec.algorithm} with prior "
            f"{spec.prior} against {spec.baseline} in {spec.setting}")


def _provenance_words(prov: dict) -> str:
    machines = "; ".join(f"{m['cpu']} (torch CPU capability {m['capability']}, native bf16 "
                         f"{m['bf16_native']}, torch {m['torch']})"
                         for m in prov["machines"] if m) or "not recorded"
    return (f"- Computed on: {machines}; training precision "
            f"{', '.join(prov['precision']) or 'not recorded'} (`runtime.mixed_precision: "
            f"{{auto, fp32, bf16}}`; {prov['cells_recorded']} of {prov['cells']} aligned "
            "cells recorded it). Another CPU type gives other numbers: "
            "`python -m pipa.compare` checks a rerun within measured bounds."
            + _training_words(prov))


def _training_words(prov: dict) -> str:
    """What the cells trained with, as their train.json recorded it."""
    chosen, steps = prov.get("selected_lr") or {}, prov.get("steps") or []
    if not chosen:
        return ""
    lrs = ", ".join(f"{lr} in {n}" for lr, n in chosen.items())
    span = ""
    if steps:
        low, high = steps
        count = str(low) if low == high else f"{low}-{high}"
        span = f"; {count} optimizer steps per cell"
    return (f"\n- Learning rate each aligned cell chose on validation (`align.lr_grid`): "
            f"{lrs} of {sum(chosen.values())} cells{span}.")


def power_words(power: pd.DataFrame | None, tables: list[Table]) -> list[str]:
    """One line per table: what difference it could detect (``stats.detectable_differences``)."""
    if power is None or power.empty:
        return []
    out = []
    for t in tables:
        by = power_by_column(power, t.number)
        if not by:
            continue
        medians = [v[0] for v in by.values() if not math.isnan(v[0])]
        if not medians:
            continue
        span = (f"{min(medians):.1f}" if f"{min(medians):.1f}" == f"{max(medians):.1f}"
                else f"{min(medians):.1f}-{max(medians):.1f}")
        out.append(f"- Table {t.number}: a true difference of {span} points between two of "
                   f"its rows is the smallest it "
                   f"detects (median over the pairs of each column; {len(by)} columns, "
                   f"{power_sizes(by)}); {sum(m <= 3.0 for m in medians)} "
                   f"of {len(by)} columns reach 3 points or less.")
    return out


def second_base_words(out: Path, second: Path, label: str) -> list[str]:
    """The README section on a second base model: of what this report says (``out``'s
    ``table1.csv`` and ``significance.csv``, already written), how much the report folder
    ``second`` (the same params on base models pretrained with another seed) repeats, counted
    by ``pipa.compare.agreement``, and each comparison found beyond noise here, with what
    became of it there. ``label``: ``second`` as the stage's command names it. A folder of
    another grid (other Table 1 rows) is not compared; the section says so."""
    from pipa.compare import SIG_KEY, agreement, claim_fates, merged_significance

    for name in ("table1.csv", "significance.csv"):
        if not (second / name).is_file():
            raise ValueError(f"{second / name}: missing; the report stage's "
                             f"--second-base-model ({label}) must name the report folder of "
                             "a finished run of the same params on another base model")
    rows = ["data", "labels", "algorithm", "model", "benchmark"]
    here, there = (set(map(tuple, pd.read_csv(folder / "table1.csv")[rows].to_numpy()))
                   for folder in (out, second))
    if here != there:  # another grid (the micro preset against the default's folder)
        return ["## On a second base model", "",
                (f"`{label}` holds the report of another grid ({len(here & there)} of "
                 f"{len(here)} Table 1 rows in common): not compared. Name the report folder "
                 "of these params on another base model."), ""]
    found = agreement(out, second)
    sig = merged_significance(out, second).sort_values(SIG_KEY)

    def frac(pair: list[int]) -> str:
        return f"{pair[0]} of {pair[1]}"

    intro = (f"The same params on base models pretrained with another seed (`{label}`, made "
             f"on {found['b']}) give other SFT starts and other cells; what this report says "
             "holds there only as far as these counts (`pipa.compare.agreement`). Claims "
             "beyond noise here that held there are the ones to read as findings about the "
             "algorithms rather than about one base model.")
    orderings = (f"- Orderings of two rows within a Table 1 column: "
                 f"{frac(found['orderings'])} the same (a coin gives half).")
    signs = f"- Signs of a row's gain over its SFT start: {frac(found['gain_signs'])} the same."
    verdicts = (f"- Verdicts at p_boot < 0.05 (beyond noise or not): "
                f"{frac(found['verdicts_05'])} the same; at 0.01: {frac(found['verdicts_01'])}.")
    lines = ["## On a second base model", "", intro, "", orderings, signs, verdicts, ""]
    claims = sig[sig["p_boot_a"] < ALPHA]
    if len(claims):
        header = ("| table | setting | model | benchmark | comparison | here: a - b, p_boot "
                  "| second base model: a - b, p_boot | held? |")
        lines += [header, "|---|---|---|---|---|---|---|---|"]
        for r, verdict in zip(claims.itertuples(), claim_fates(sig, ALPHA)):
            lines.append(f"| {r.table} | {r.setting} | {r.model} | {r.benchmark} | "
                         f"{r.comparison} | {r.a_a} - {r.b_a}: {r.diff_a:+.1f}, "
                         f"{r.p_boot_a:.4f} | {r.a_b} - {r.b_b}: {r.diff_b:+.1f}, "
                         f"{r.p_boot_b:.4f} | {verdict} |")
        lines.append("")
    return lines


def readme(col: Collected, tables: list[Table], sig: pd.DataFrame, findings: list[str],
           figures: list[str], prov: dict | None = None,
           power: pd.DataFrame | None = None, cells: pd.DataFrame | None = None,
           second: list[str] | None = None) -> str:
    p = col.grid
    lines = ["# Results: Tables 1-4 and Figures 3-5", "",
             ("Generated by `python stages/report.py --params params.yaml --root . --out "
             "reports` (the `pipa/reports` package); do not edit by hand."), "",
             "## How these were made", "",
             "- Models: " + ", ".join(f"`{m}` = {model_label(p, col.benchmarks, m)}"
                                      for m in col.models),
             "- Benchmarks: " + ", ".join(f"`{b}` = {benchmark_label(p, col.benchmarks, b)}"
                                          for b in col.benchmarks),
             (f"- Seeds: {col.seeds} ({len(col.seeds)} per cell); every cell is mean ± std "
             "over these seeds."),
             "- Algorithms per setting: " + "; ".join(
                 f"{s}: {', '.join(a)}" for s, a in _settings(p).items()),
             f"- Ablations (models {list(p.ablation_models)}): " + "; ".join(
                 _ablation_words(n, p.ablations[n]) for n in p.ablations),
             (f"- Step-label threshold: {p.threshold}; Figure 5 sweep: "
             f"{[float(t) for t in _sweep(p)]} with `{p.sweep_algorithm}` (the default "
             "threshold is the main-grid cell, not a rerun)."),
             (f"- Significance: paired bootstrap over test problems, B={N_BOOT}, numpy seed "
             f"{BOOT_SEED}; all comparisons in `significance.csv`."),
             ("- Wall times are not part of this report (the same params give the same bytes "
              "here): `scripts/repro.sh` writes them to `runs/timing.json` after the run, "
              "and the top-level README quotes them.")]
    if prov is not None:
        lines.append(_provenance_words(prov))
    lines += [""]
    lines += ["## Agreement with the paper (computed from the numbers)", ""]
    lines += [f"- {f}" for f in findings] + [""]
    lines += second or []
    lines += verifier_words(cells)
    detect = power_words(power, tables)
    if detect:
        lines += ["## What each table can detect", "",
                  (f"The minimum detectable difference: the paired test over test problems "
                   f"(seeds averaged per problem; one-sided for Table 1, two-sided for the "
                   f"ablations, as their p_boot), alpha = {ALPHA:g}, {POWER:.0%} power, from "
                   "the spread of the per-problem differences; every pair in `power.csv`. A "
                   "smaller true difference can exist and go unseen; it covers the test "
                   "problems' sampling, not a new training seed or base model."), ""]
        lines += detect + [""]
    for t in tables:
        lines += [f"## Table {t.number}", "", t.markdown(),
                  (f"Files: `table{t.number}.md`, `table{t.number}.csv`, "
                  f"`table{t.number}.tex`."), ""]
    lines += ["## Figures", ""]
    lines += [f"![{f}](figures/{f})" + "\n" for f in figures]
    return "\n".join(lines) + "\n"


def verifier_words(cells: pd.DataFrame | None) -> list[str]:
    """The README section on PIPA's value head as a verifier: per main-grid cell with a
    head, the AUC of g at step ends (pooled, and the last step end) against the final
    correctness of its validation decodes, mean ± std over seeds."""
    if cells is None or "value_auc_step" not in cells or cells["value_auc_step"].isna().all():
        return []
    main = cells[(cells["group"] == "main") & cells["value_auc_step"].notna()]
    rows = ["| setting | algorithm | model | AUC, every step end | AUC, last step end |",
            "|---|---|---|---|---|"]
    for (setting, alg, model), g in main.groupby(["setting", "algorithm", "model"],
                                                 sort=False):
        cols = [f"{g[c].mean():.3f} ± " + ("—" if pd.isna(g[c].std()) else f"{g[c].std():.3f}")
                for c in ("value_auc_step", "value_auc_last")]
        rows.append(f"| {setting} | {paper.display(alg)} | {model} | " + " | ".join(cols) + " |")
    auc = main["value_auc_step"]
    return ["## The value head as a verifier", "",
            ("PIPA's g = p(c = 1 | x, y<t) read at the end of each step of the cell's own greedy "
             "decodes of the validation problems (never trained on), scored against whether "
             "the solution's final answer is right: ROC AUC, 0.5 = g carries no information "
             "about correctness, 1 = it ranks every correct solution above every incorrect "
             f"one. Mean ± std over seeds; per cell in `cells.csv`. Over the {len(auc)} "
             f"cells: AUC {auc.min():.3f} to {auc.max():.3f} (median {auc.median():.3f})."),
            "", *rows, ""]


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
