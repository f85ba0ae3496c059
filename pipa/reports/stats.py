"""Per-cell means and the paired bootstrap over test problems and seeds: the
significance rows every table and finding reads."""

from __future__ import annotations

import math
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd

from pipa import paper_numbers as paper
from pipa.reports.grid import Cell, Collected, _settings, main_cell

SIGNIFICANCE_COLUMNS = ["table", "setting", "model", "benchmark", "comparison", "a", "b",
                        "mean_a", "mean_b", "diff", "n_problems", "n_seeds", "alternative",
                        "n_boot", "p_boot"]


N_BOOT = 10_000


BOOT_SEED = 0


ALPHA = 0.05


POWER = 0.80  # of the minimum detectable difference


POWER_COLUMNS = ["table", "setting", "model", "benchmark", "a", "b", "n_problems", "n_seeds",
                 "discordant", "sd_diff", "mdd"]


def mean_std(values) -> tuple[float, float, int]:
    """Mean, std over seeds (ddof=1; NaN for one seed) and the count."""
    v = np.asarray(list(values), dtype=float)
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n


def paired_bootstrap(a, b, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                     alternative: str = "greater") -> float:
    """Paired bootstrap p-value over problems.

    ``a`` and ``b`` are 0/1 arrays of shape (n_seeds, n_problems) (or (n_problems,)), the
    same seed's runs in the same row and the same problem in the same column. Problems are
    resampled with replacement (the same resample for every seed); the statistic is the
    mean difference a - b. ``alternative="greater"``: p = fraction of resamples with a
    difference <= 0 (one-sided, a better). ``"two-sided"``: twice the smaller tail, <= 1.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: shapes differ {a.shape} vs {b.shape}")
    d = (a - b).mean(axis=0)
    n = d.size
    if n == 0:
        return math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        stats[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    le = float(np.mean(stats <= 0))
    if alternative == "greater":
        return le
    if alternative == "two-sided":
        return min(1.0, 2.0 * min(le, float(np.mean(stats >= 0))))
    raise ValueError(f"alternative must be 'greater' or 'two-sided', not {alternative!r}")


def _paired_arrays(col: Collected, cells_a: list[Cell], cells_b: list[Cell],
                   benchmark: str) -> tuple[np.ndarray, np.ndarray]:
    """Join two cells' predictions on id, seed by seed (same seed paired)."""
    rows_a, rows_b, ids_ref = [], [], None
    for ca, cb in zip(cells_a, cells_b, strict=True):
        pa, pb = col.predictions(ca, benchmark), col.predictions(cb, benchmark)
        if set(pa) != set(pb):
            raise ValueError(f"{benchmark}: problem ids differ between {ca.predictions} and "
                             f"{cb.predictions} ({len(set(pa) ^ set(pb))} ids)")
        ids = sorted(pa)
        if ids_ref is None:
            ids_ref = ids
        elif ids != ids_ref:
            raise ValueError(f"{benchmark}: problem ids of {ca.predictions} differ from "
                             f"{cells_a[0].predictions}")
        rows_a.append([pa[i] for i in ids])
        rows_b.append([pb[i] for i in ids])
    return np.array(rows_a, dtype=float), np.array(rows_b, dtype=float)


def _main_cells(col: Collected, setting: str, alg: str, model: str) -> list[Cell]:
    return [main_cell(col.grid, model, s, setting, alg) for s in col.seeds]


def _ablation_cells(col: Collected, ablation: str, model: str) -> list[Cell]:
    return [Cell("ablation", model, s, ablation=ablation) for s in col.seeds]


def _summary(col: Collected) -> pd.DataFrame:
    """Mean/std/n over seeds for every (group, key, model, benchmark)."""
    keys = ["group", "setting", "algorithm", "ablation", "threshold", "model", "benchmark"]
    df = col.acc.copy()
    df[keys[1:5]] = df[keys[1:5]].astype(object).where(df[keys[1:5]].notna(), "")
    out = []
    for key, g in df.groupby(keys, sort=False):
        mu, sd, n = mean_std(g["accuracy"])
        out.append(dict(zip(keys, key), mean=mu, std=sd, n_seeds=n))
    return pd.DataFrame(out)


def _lookup(summary: pd.DataFrame, **kw) -> tuple[float, float, int]:
    m = np.ones(len(summary), dtype=bool)
    for k, v in kw.items():
        m &= (summary[k] == v).to_numpy()
    hit = summary[m]
    if len(hit) != 1:
        raise KeyError(f"summary lookup {kw}: {len(hit)} rows")
    r = hit.iloc[0]
    return float(r["mean"]), float(r["std"]), int(r["n_seeds"])


def _main_mean(summary, setting, alg, model, bench) -> float:
    return _lookup(summary, group="main", setting=setting, algorithm=alg, model=model,
                   benchmark=bench)[0]


def significance(col: Collected, summary: pd.DataFrame | None = None,
                 n_boot: int = N_BOOT) -> pd.DataFrame:
    """Paired bootstraps: per setting x model x benchmark, the best PIPA (by mean) against
    the best other algorithm (the continued-SFT control included), the best of the paper's
    baselines (control excluded) and the control, one-sided; the best of the paper's
    baselines against the control, one-sided (``baseline_vs_<control>``: so "no algorithm
    beats the control" is a tested claim, not only "no PIPA"); per ablation, the ablated
    variant against its baseline, two-sided."""
    summary = _summary(col) if summary is None else summary
    rows = []

    def add(table, setting, model, bench, comparison, a, b, cells_a, cells_b, alternative):
        xa, xb = _paired_arrays(col, cells_a, cells_b, bench)
        rows.append({
            "table": table, "setting": setting, "model": model, "benchmark": bench,
            "comparison": comparison, "a": a, "b": b,
            "mean_a": 100 * xa.mean(), "mean_b": 100 * xb.mean(),
            "diff": 100 * (xa.mean() - xb.mean()), "n_problems": xa.shape[1],
            "n_seeds": xa.shape[0], "alternative": alternative, "n_boot": n_boot,
            "p_boot": paired_bootstrap(xa, xb, n_boot, BOOT_SEED, alternative)})

    control = col.grid.control
    for setting, algs in _settings(col.grid).items():
        pipas = [a for a in algs if a in paper.PIPA_ALGORITHMS]
        others = [a for a in algs if a not in paper.PIPA_ALGORITHMS]
        if not pipas or not others:
            continue
        for model in col.models:
            for bench in col.benchmarks:
                def mean(a, model=model, bench=bench, setting=setting):
                    return _main_mean(summary, setting, a, model, bench)
                best_p = max(pipas, key=mean)
                best_o = max(others, key=mean)
                paper_bases = [a for a in others if a != control]
                best_b = max(paper_bases, key=mean) if paper_bases else None
                comps = [("vs_best_baseline", best_p, best_o)]
                if best_b:
                    comps.append(("vs_best_paper_baseline", best_p, best_b))
                if control in others:
                    comps.append((f"vs_{control}", best_p, control))
                    if best_b:
                        comps.append((f"baseline_vs_{control}", best_b, control))
                for name, first, second in comps:
                    add(1, setting, model, bench, name, first, second,
                        _main_cells(col, setting, first, model),
                        _main_cells(col, setting, second, model), "greater")
    for name in list(col.grid.ablations):
        spec = col.grid.ablations[name]
        for model in col.grid.ablation_models:
            for bench in col.benchmarks:
                add(spec.table, spec.setting, model, bench,
                    f"ablation:{name}", name, spec.baseline,
                    _ablation_cells(col, name, model),
                    _main_cells(col, spec.setting, spec.baseline, model), "two-sided")
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


def min_detectable_difference(a, b, alpha: float = ALPHA, power: float = POWER,
                              two_sided: bool = False) -> float:
    """The smallest true difference in accuracy, in points, that the paired test over
    problems (one-sided, or ``two_sided`` at alpha/2 per tail) detects at level ``alpha``
    with probability ``power``, given the spread of the per-problem differences that ``a``
    and ``b`` show.

    ``a``, ``b``: 0/1 arrays (n_seeds, n_problems) as in ``paired_bootstrap``. With d_i the
    seed-mean difference on problem i (the bootstrap's unit), MDD = (z_{1-alpha} + z_power)
    * sd(d) / sqrt(n): the normal approximation of that test, the standard planning formula
    for a paired comparison. It grows with the share of problems on which the two rows
    disagree and shrinks with more problems; more seeds shrink it only through sd(d). NaN
    when the two rows never differ (the formula needs some disagreement to scale from).
    It conditions on the trained runs: it covers the sampling of test problems, not a new
    training seed or base model.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    d = (a - b).mean(axis=0)
    if d.size < 2 or not np.any(d != 0):
        return math.nan
    z = NormalDist().inv_cdf(1 - (alpha / 2 if two_sided else alpha)) \
        + NormalDist().inv_cdf(power)
    return float(100 * z * d.std(ddof=1) / math.sqrt(d.size))


def detectable_differences(col: Collected) -> pd.DataFrame:
    """The minimum detectable difference of every pair of rows a table compares: in Table 1
    every two trained rows of a block (the control included; the SFT start has no seeds),
    one-sided as Table 1's p_boot; in an ablation table the variant and its baseline,
    two-sided as its p_boot; per model and benchmark."""
    rows = []

    def add(table, setting, model, bench, a, b, cells_a, cells_b, two_sided=False):
        xa, xb = _paired_arrays(col, cells_a, cells_b, bench)
        d = (xa - xb).mean(axis=0)
        rows.append({"table": table, "setting": setting, "model": model, "benchmark": bench,
                     "a": a, "b": b, "n_problems": xa.shape[1], "n_seeds": xa.shape[0],
                     "discordant": float(np.mean(d != 0)),
                     "sd_diff": float(d.std(ddof=1)) if d.size > 1 else math.nan,
                     "mdd": min_detectable_difference(xa, xb, two_sided=two_sided)})

    for setting, algs in _settings(col.grid).items():
        for model in col.models:
            for bench in col.benchmarks:
                for a, b in combinations(algs, 2):
                    add(1, setting, model, bench, a, b, _main_cells(col, setting, a, model),
                        _main_cells(col, setting, b, model))
    for name in list(col.grid.ablations):
        spec = col.grid.ablations[name]
        for model in col.grid.ablation_models:
            for bench in col.benchmarks:
                add(spec.table, spec.setting, model, bench, name,
                    spec.baseline, _ablation_cells(col, name, model),
                    _main_cells(col, spec.setting, spec.baseline, model),
                    two_sided=True)  # as the ablation tables' p_boot
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def power_by_column(power: pd.DataFrame, table: int) -> dict[tuple[str, str], tuple]:
    """(model, benchmark) -> (median MDD, max MDD, n_problems, n_seeds) over the pairs of
    ``table`` that ever disagree (NaN when none does)."""
    out = {}
    for (model, bench), g in power[power["table"] == table].groupby(["model", "benchmark"],
                                                                     sort=False):
        mdd = g["mdd"].dropna()
        out[(model, bench)] = (float(mdd.median()) if len(mdd) else math.nan,
                               float(mdd.max()) if len(mdd) else math.nan,
                               int(g["n_problems"].iloc[0]), int(g["n_seeds"].iloc[0]))
    return out


def power_sizes(by: dict[tuple[str, str], tuple]) -> str:
    """"500 test problems x 2 seed(s)" for the columns of ``power_by_column``."""
    n_problems = "/".join(map(str, sorted({v[2] for v in by.values()})))
    n_seeds = "/".join(map(str, sorted({v[3] for v in by.values()})))
    return f"{n_problems} test problems x {n_seeds} seed(s)"

