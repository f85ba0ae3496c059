"""Figures 3-5 (PNG and the CSVs DVC plots), the threshold sweep, and the ``plots:``
spec of dvc.yaml."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipa import paper_numbers as paper
from pipa.cells import read_curve
from pipa.io import atomic_path
from pipa.reports.grid import (
    Cell,
    Collected,
    _fig3_sources,
    _fig4_sources,
    _model_suffix,
    _split_setting,
    _sweep,
    _threshold_cell,
)
from pipa.reports.stats import _main_cells, mean_std
from pipa.reports.tables import benchmark_label, model_label

FIG_DPI = 120


def seed_band(col: Collected, cells: list[Cell], name: str) -> pd.DataFrame:
    """Mean, min and max over seeds per step (steps where any seed logged a value)."""
    frames = []
    for c in cells:
        df = read_curve(col.root / c.curve(name), name)
        frames.append(df.assign(seed=c.seed))
    df = pd.concat(frames).dropna(subset=["value"])
    g = df.groupby("step")["value"]
    return pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max(),
                         "n": g.count()}).reset_index()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=FIG_DPI, format="png", bbox_inches="tight")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def figure3(col: Collected, out: Path) -> dict[str, pd.DataFrame]:
    """Value-head label likelihood against step, per model; returns the curves by model."""
    plt = _plt()
    sources = _fig3_sources(col.grid)
    settings = list(dict.fromkeys(s for s, _ in sources))
    result = {}
    if not settings:
        return result
    datas = list(dict.fromkeys(_split_setting(s)[0] for s in settings))
    labelss = list(dict.fromkeys(_split_setting(s)[1] for s in settings))
    for model in col.models:
        fig, axes = plt.subplots(len(datas), len(labelss), squeeze=False, sharey=True,
                                 figsize=(5.2 * len(labelss), 3.6 * len(datas)))
        wide = None
        for setting in settings:
            data, labels = _split_setting(setting)
            ax = axes[datas.index(data)][labelss.index(labels)]
            for alg in [a for s, a in sources if s == setting]:
                band = seed_band(col, _main_cells(col, setting, alg, model),
                                 "value_label_likelihood")
                color = f"C{paper.PIPA_ALGORITHMS.index(alg)}"
                ax.plot(band["step"], band["mean"], color=color, label=paper.display(alg))
                ax.fill_between(band["step"], band["min"], band["max"], alpha=0.2,
                                color=color, linewidth=0)
                part = band[["step", "mean"]].rename(columns={"mean": f"{alg}_{setting}"})
                wide = part if wide is None else wide.merge(part, on="step", how="outer")
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (g = 0.5)")
            ax.set_title(f"{data} data, {labels}-level labels")
            ax.set_xlabel("training step (optimizer updates)")
            ax.set_ylabel("label likelihood\n(geometric mean over tokens, 0-1)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in axes.flat:
            if not ax.has_data():
                ax.set_visible(False)
        n = len(col.seeds)
        fig.suptitle("Figure 3: value head's likelihood of the token labels, "
                     r"$(\prod_t p(c_t \mid x, y_{<t}))^{1/T}$, during PIPA training" "\n"
                     f"{model_label(col.grid, col.benchmarks, model)}; line = mean over "
                     f"{n} seed{'s' if n != 1 else ''}, band = min-max over seeds",
                     fontsize=10)
        fig.tight_layout()
        _save(fig, out / "figures" / f"fig3_value_likelihood{_model_suffix(col, model)}.png")
        plt.close(fig)
        result[model] = wide.sort_values("step")
    return result


def figure4(col: Collected, out: Path) -> dict[str, pd.DataFrame]:
    """Implicit reward of correct (solid) and incorrect (dashed) samples, DPO vs Step-DPO."""
    plt = _plt()
    sources = _fig4_sources(col.grid)
    result = {}
    if not sources:
        return result
    for model in col.models:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        wide = None
        for i, (setting, alg) in enumerate(sources):
            color = f"C{i}"
            cells = _main_cells(col, setting, alg, model)
            for ax, name, style, what in ((axes[0], "reward_correct", "-", "correct"),
                                          (axes[1], "reward_incorrect", "--", "incorrect")):
                band = seed_band(col, cells, name)
                ax.plot(band["step"], band["mean"], linestyle=style, color=color,
                        label=f"{paper.display(alg)} ({setting.replace('_', '/')})")
                ax.fill_between(band["step"], band["min"], band["max"], alpha=0.15,
                                color=color, linewidth=0)
                part = band[["step", "mean"]].rename(columns={"mean": f"{alg}_{what}"})
                wide = part if wide is None else wide.merge(part, on="step", how="outer")
        for ax, what in zip(axes, ("correct", "incorrect")):
            ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"{what} samples ({'solid' if what == 'correct' else 'dashed'})")
            ax.set_xlabel("training step (optimizer updates)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel(r"implicit reward $R(y)=\sum_t \log \pi_\theta / \pi_{ref}$"
                           "\n(nats, batch mean)")
        n = len(col.seeds)
        fig.suptitle("Figure 4: implicit reward of correct and incorrect samples during "
                     "training, DPO against Step-DPO\n"
                     f"{model_label(col.grid, col.benchmarks, model)}; line = mean over "
                     f"{n} seed{'s' if n != 1 else ''}, band = min-max", fontsize=10)
        fig.tight_layout()
        _save(fig, out / "figures" / f"fig4_implicit_reward{_model_suffix(col, model)}.png")
        plt.close(fig)
        result[model] = wide.sort_values("step")
    return result


def threshold_sweep(col: Collected, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Accuracy on the MATH-column benchmark per threshold and ablation model."""
    bench = col.benchmarks[1] if len(col.benchmarks) > 1 else col.benchmarks[0]
    rows = []
    for model in col.grid.ablation_models:
        for t in _sweep(col.grid):
            accs = []
            for s in col.seeds:
                c = _threshold_cell(col.grid, t, model, s)
                hit = col.acc[(col.acc["cell"] == c) & (col.acc["benchmark"] == bench)]
                accs.append(float(hit["accuracy"].iloc[0]))
            mu, sd, n = mean_std(accs)
            rows.append({"model": model, "benchmark": bench, "threshold": t, "mean": mu,
                         "std": sd, "n_seeds": n,
                         "default": float(t) == float(col.grid.threshold)})
    return pd.DataFrame(rows)


def figure5(col: Collected, out: Path, sweep: pd.DataFrame) -> None:
    plt = _plt()
    if sweep.empty:
        return
    bench = sweep["benchmark"].iloc[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, g in sweep.groupby("model", sort=False):
        ax.errorbar(g["threshold"], g["mean"], yerr=g["std"].fillna(0.0), marker="o",
                    capsize=3, label=model_label(col.grid, col.benchmarks, model))
    default = float(col.grid.threshold)
    ax.axvline(default, color="grey", linestyle="--", linewidth=1,
               label=f"default threshold {default:g} (main grid)")
    ax.set_xlabel("threshold on the step value Q (in [-1, 1]) above which a step of a "
                  "wrong answer is labelled correct", fontsize=8)
    ax.set_ylabel(f"accuracy on {benchmark_label(col.grid, col.benchmarks, bench)} (%)")
    n = len(col.seeds)
    ax.set_title(f"Figure 5: step-level {paper.display(col.grid.sweep_algorithm)} "
                 "(unpaired data) against the threshold\n"
                 f"mean ± std over {n} seed{'s' if n != 1 else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "figures" / "fig5_threshold.png")
    plt.close(fig)


def long_curves(wide: pd.DataFrame, x: str) -> pd.DataFrame:
    """A wide table (``x`` and one column per curve) in the long form the plots section of
    dvc.yaml reads: ``x, curve, value`` (the ``series`` template draws one line per curve),
    so that the section is written once, for any models, algorithms or thresholds."""
    return wide.melt(id_vars=x, var_name="curve", value_name="value")[[x, "curve", "value"]]


def training_loss(col: Collected) -> pd.DataFrame:
    """The SFT loss per model (``x=step, curve=sft_<model>, value``) from the SFT runs'
    dvclive logs, where they exist. (The pretraining curves stay in ``runs/base``: the
    report does not depend on the base stage, which the real setting never runs.)"""
    parts = []
    for model in col.models:
        path = col.root / f"runs/sft/{model}/dvclive/plots/metrics/train/loss.tsv"
        if path.is_file():
            curve = read_curve(path, "loss")
            parts.append(pd.DataFrame({"step": curve["step"], "curve": f"sft_{model}",
                                       "value": curve["value"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
