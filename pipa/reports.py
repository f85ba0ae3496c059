"""Tables 1-4, Figures 3-5, the paired bootstrap and the generated reports/README.md.

Everything is driven by the grid in ``params.yaml``: the expected run cells are computed
from params (never globbed), ``collect`` checks all of them before any work and raises one
error naming every missing file with its DVC stage, and ``build`` writes every output whole.

Public API
----------
``expected_cells(params)``, ``collect(params, root)``, ``paired_bootstrap(a, b, ...)``,
``table1(col)``, ``ablation_table(col, n)``, ``significance(col)``, ``make_figures(col, out)``,
``dvc_plots_spec(params, out)``, ``build(params, root, out)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipa import paper_numbers as paper
from pipa.cells import cell_table, read_curve, study_provenance
from pipa.io import atomic_path, read_jsonl

TABLE1_COLUMNS = ["data", "labels", "algorithm", "model", "benchmark", "mean", "std",
                  "n_seeds", "paper"]
ABLATION_COLUMNS = ["table", "ablation", "role", "row", "setting", "data", "labels",
                    "algorithm", "prior", "model", "benchmark", "mean", "std", "n_seeds",
                    "paper"]
SIGNIFICANCE_COLUMNS = ["table", "setting", "model", "benchmark", "comparison", "a", "b",
                        "mean_a", "mean_b", "diff", "n_problems", "n_seeds", "alternative",
                        "n_boot", "p_boot"]
N_BOOT = 10_000
BOOT_SEED = 0
ALPHA = 0.05
FIG_DPI = 120
FIG4_ALGORITHMS = ("dpo", "step_dpo")

WORLD_BENCHMARK_LABELS = {"gsm": "Tier 1 (GSM8K stand-in)", "math": "Tier 2 (MATH stand-in)"}
REAL_BENCHMARK_LABELS = {"gsm8k": "GSM8K", "math": "MATH", "math500": "MATH500"}
WORLD_MODEL_LABELS = {"ds": "DS stand-in (self-aligned family)",
                      "qw": "QW stand-in (shifted style)"}
REAL_MODEL_LABELS = {"ds": "DS (Deepseek-Math-7B-Instruct)",
                     "qw": "QW (Qwen2.5-Math-7B-Instruct)"}


class MissingCellsError(FileNotFoundError):
    """Raised once, listing every expected run file that does not exist."""


# --------------------------------------------------------------------------------------
# The grid: which cells exist, where they live, which DVC stage makes them
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One evaluated run of the grid."""

    group: str  # "sft" | "main" | "ablation" | "threshold"
    model: str
    seed: int | None = None
    setting: str | None = None
    algorithm: str | None = None
    ablation: str | None = None
    threshold: float | None = None
    control: bool = False  # the control row: one run per data kind serves both label levels

    @property
    def data_kind(self) -> str:
        return _split_setting(self.setting)[0]

    @property
    def run_dir(self) -> str:
        if self.group == "sft":
            return f"runs/sft/{self.model}"
        tail = f"{self.model}/seed{self.seed}"
        if self.group == "main" and self.control:
            return f"runs/main/control/{self.data_kind}/{tail}"
        if self.group == "main":
            return f"runs/main/{self.setting}/{self.algorithm}/{tail}"
        if self.group == "ablation":
            return f"runs/ablation/{self.ablation}/{tail}"
        return f"runs/threshold/{self.threshold}/{tail}"

    def stage(self, kind: str = "eval") -> str:
        """DVC stage name (``kind`` is eval or align) of this cell."""
        if self.group == "sft":
            return f"sft_eval@{self.model}" if kind == "eval" else f"sft@{self.model}"
        if self.group == "main" and self.control:
            return f"align_control@{self.data_kind}-{self.model}-{self.seed}"
        if self.group == "main":  # one stage aligns and evaluates a cell
            return f"align_{self.setting}@{self.algorithm}-{self.model}-{self.seed}"
        # dvc.yaml: one stage per ablation (foreach) / threshold (matrix) trains and
        # evaluates every model and seed of it
        if self.group == "ablation":
            return f"ablation@{self.ablation}"
        return f"sweep@{self.threshold}"

    @property
    def metrics(self) -> str:
        return f"{self.run_dir}/eval/metrics.json"

    @property
    def predictions(self) -> str:
        return f"{self.run_dir}/eval/predictions.jsonl"

    def curve(self, name: str) -> str:
        return f"{self.run_dir}/align/dvclive/plots/metrics/train/{name}.tsv"


def main_cell(params: dict, model: str, seed: int, setting: str, algorithm: str) -> Cell:
    """The Table 1 cell of (setting, algorithm, model, seed); the control's lives once per
    data kind."""
    return Cell("main", model, seed, setting, algorithm,
                control=algorithm == params.get("control"))


def _settings(params: dict) -> dict[str, list[str]]:
    """Rows of each Table 1 block: the control (``params['control']``) first, then the
    setting's algorithms."""
    control = [params["control"]] if params.get("control") else []
    return {s: control + [a for a in algs if a not in control]
            for s, algs in params["algorithms"].items()}


def _split_setting(setting: str) -> tuple[str, str]:
    if setting in paper.SETTINGS:
        return paper.SETTINGS[setting]
    data, _, labels = setting.partition("_")
    return data, labels


def _fig3_sources(params: dict) -> list[tuple[str, str]]:
    return [(s, a) for s, algs in _settings(params).items() for a in algs
            if a in paper.PIPA_ALGORITHMS]


def _fig4_sources(params: dict) -> list[tuple[str, str]]:
    out = []
    for alg in FIG4_ALGORITHMS:
        for s, algs in _settings(params).items():
            if alg in algs and _split_setting(s)[0] == "paired":
                out.append((s, alg))
                break
    return out


def _sweep(params: dict) -> list[float]:
    """Thresholds of Figure 5, the default one included (from the main grid)."""
    default = float(params["threshold"])
    ts = {float(t) for t in params.get("sweep_thresholds", [])} | {default}
    return sorted(ts)


def _threshold_cell(params: dict, t: float, model: str, seed: int) -> Cell:
    if float(t) == float(params["threshold"]):
        return main_cell(params, model, seed, "unpaired_step", params["sweep_algorithm"])
    # keep the params spelling of the value so the path matches the DVC matrix key
    raw = next(x for x in params["sweep_thresholds"] if float(x) == float(t))
    return Cell("threshold", model, seed, threshold=raw)


def check_grid(params: dict) -> None:
    """Consistency of the grid itself (raises one ValueError listing every problem)."""
    problems = []
    for key in ("models", "seeds", "algorithms"):
        if not params.get(key):
            problems.append(f"params `{key}` is missing or empty")
    if problems:
        raise ValueError("report grid: " + "; ".join(problems))
    settings = _settings(params)
    models = list(params["models"])
    for m in params.get("ablation_models", []):
        if m not in models:
            problems.append(f"ablation model {m!r} is not in `models` {models}")
    for name in list(params.get("ablations", {})):
        spec = params.get("ablations", {}).get(name)
        if spec is None:
            problems.append(f"ablation {name!r} has no entry in `ablations`")
            continue
        setting, base = spec.get("setting"), spec.get("baseline")
        if base not in settings.get(setting, []):
            problems.append(f"ablation {name!r}: baseline {base!r} is not in the main grid "
                            f"of setting {setting!r}")
    if params.get("sweep_thresholds"):
        alg = params.get("sweep_algorithm")
        if alg not in settings.get("unpaired_step", []):
            problems.append(f"sweep_algorithm {alg!r} is not in algorithms.unpaired_step")
    if problems:
        raise ValueError("report grid: " + "; ".join(problems))


def expected_cells(params: dict) -> dict[str, list[Cell]]:
    """Every cell the report reads, by group, in params order."""
    check_grid(params)
    models, seeds = list(params["models"]), list(params["seeds"])
    ab_models = list(params.get("ablation_models", []))
    cells: dict[str, list[Cell]] = {"sft": [Cell("sft", m) for m in models], "main": [],
                                    "ablation": [], "threshold": []}
    for setting, algs in _settings(params).items():
        for alg in algs:
            for m in models:
                cells["main"] += [main_cell(params, m, s, setting, alg) for s in seeds]
    for name in list(params.get("ablations", {})):
        for m in ab_models:
            cells["ablation"] += [Cell("ablation", m, s, ablation=name) for s in seeds]
    if params.get("sweep_thresholds"):
        for t in params["sweep_thresholds"]:
            if float(t) == float(params["threshold"]):
                continue
            for m in ab_models:
                cells["threshold"] += [Cell("threshold", m, s, threshold=t) for s in seeds]
    return cells


def expected_files(params: dict) -> list[tuple[str, str]]:
    """(path, producing stage) of every file the report reads."""
    cells = expected_cells(params)
    curves = {k: ["value_label_likelihood"] for k in _fig3_sources(params)}
    for k in _fig4_sources(params):
        curves.setdefault(k, []).extend(["reward_correct", "reward_incorrect"])
    files: list[tuple[str, str]] = [(c.metrics, c.stage()) for c in cells["sft"]]
    for c in cells["main"] + cells["ablation"]:
        files += [(c.metrics, c.stage()), (c.predictions, c.stage())]
        for name in curves.get((c.setting, c.algorithm), []) if c.group == "main" else []:
            files.append((c.curve(name), c.stage("align")))
    files += [(c.metrics, c.stage()) for c in cells["threshold"]]
    return files


# --------------------------------------------------------------------------------------
# Collecting the inputs
# --------------------------------------------------------------------------------------

@dataclass
class Collected:
    params: dict
    root: Path
    cells: dict[str, list[Cell]]
    benchmarks: list[str]
    acc: pd.DataFrame  # one row per (cell, benchmark): accuracy in percent
    _preds: dict = field(default_factory=dict, repr=False)

    @property
    def models(self) -> list[str]:
        return list(self.params["models"])

    @property
    def seeds(self) -> list[int]:
        return list(self.params["seeds"])

    def predictions(self, cell: Cell, benchmark: str) -> dict[str, bool]:
        """id -> correct for one cell and benchmark (cached per file)."""
        if cell not in self._preds:
            path = self.root / cell.predictions
            per: dict[str, dict[str, bool]] = {}
            for i, row in enumerate(read_jsonl(path), start=1):
                try:
                    per.setdefault(row["benchmark"], {})[str(row["id"])] = bool(row["correct"])
                except KeyError as err:
                    raise ValueError(f"{path}:{i}: missing key {err}") from None
            self._preds[cell] = per
        return self._preds[cell].get(benchmark, {})


def _read_metrics(path: Path) -> dict[str, dict]:
    try:
        obj = json.loads(path.read_text())
        bench = obj["benchmarks"]
        for val in bench.values():
            float(val["accuracy"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a metrics file as in docs/ARCHITECTURE.md "
                         f"({type(err).__name__}: {err})") from None
    return bench


def collect(params: dict, root: str | Path) -> Collected:
    """Check every expected file exists (one error listing all missing), then load metrics."""
    root = Path(root)
    missing = [(p, st) for p, st in expected_files(params) if not (root / p).is_file()]
    if missing:
        items = ", ".join(f"{p} (stage {st})" for p, st in missing)
        raise MissingCellsError(f"missing {len(missing)} cells: {items}")
    cells = expected_cells(params)
    first = _read_metrics(root / cells["main"][0].metrics)
    benchmarks = list(first)
    rows, bad = [], []
    for group in ("sft", "main", "ablation", "threshold"):
        for c in cells[group]:
            m = _read_metrics(root / c.metrics)
            lacking = [b for b in benchmarks if b not in m]
            if lacking:
                bad.append(f"{c.metrics} lacks {lacking}")
                continue
            for b in benchmarks:
                rows.append({"group": group, "setting": c.setting, "algorithm": c.algorithm,
                             "ablation": c.ablation, "threshold": c.threshold,
                             "model": c.model, "seed": c.seed, "benchmark": b,
                             "accuracy": 100.0 * float(m[b]["accuracy"]), "cell": c})
    if bad:
        raise ValueError(f"benchmarks differ from {cells['main'][0].metrics} "
                         f"({benchmarks}): " + "; ".join(bad))
    return Collected(params, root, cells, benchmarks, pd.DataFrame(rows))


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------

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
    return [main_cell(col.params, model, s, setting, alg) for s in col.seeds]


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
    baselines (control excluded) and the control, one-sided; per ablation, the ablated
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

    for setting, algs in _settings(col.params).items():
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
                comps = [("vs_best_baseline", best_o)]
                paper_bases = [a for a in others if a != "sft_cont"]
                if paper_bases:
                    comps.append(("vs_best_paper_baseline", max(paper_bases, key=mean)))
                if "sft_cont" in others:
                    comps.append(("vs_sft_cont", "sft_cont"))
                for name, other in comps:
                    add(1, setting, model, bench, name, best_p, other,
                        _main_cells(col, setting, best_p, model),
                        _main_cells(col, setting, other, model), "greater")
    for name in list(col.params.get("ablations", {})):
        spec = col.params["ablations"][name]
        for model in col.params.get("ablation_models", []):
            for bench in col.benchmarks:
                add(int(spec.get("table", 0)), spec["setting"], model, bench,
                    f"ablation:{name}", name, spec["baseline"],
                    _ablation_cells(col, name, model),
                    _main_cells(col, spec["setting"], spec["baseline"], model), "two-sided")
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


# --------------------------------------------------------------------------------------
# Labels and formatting
# --------------------------------------------------------------------------------------

def _is_world(benchmarks: list[str]) -> bool:
    return "gsm" in benchmarks


def benchmark_label(params: dict, benchmarks: list[str], b: str) -> str:
    labels = (params.get("report") or {}).get("benchmark_labels") or {}
    fallback = WORLD_BENCHMARK_LABELS if _is_world(benchmarks) else REAL_BENCHMARK_LABELS
    return labels.get(b) or fallback.get(b) or b


def model_label(params: dict, benchmarks: list[str], m: str) -> str:
    labels = (params.get("report") or {}).get("model_labels") or {}
    fallback = WORLD_MODEL_LABELS if _is_world(benchmarks) else REAL_MODEL_LABELS
    return labels.get(m) or fallback.get(m) or m


def _paper_bench(benchmarks: list[str], b: str) -> str | None:
    """The paper column a benchmark stands for: the first two are GSM8K and MATH."""
    i = benchmarks.index(b)
    return paper.PAPER_BENCHMARKS[i] if i < len(paper.PAPER_BENCHMARKS) else None


def fmt_cell(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "—"
    sd = "—" if n < 2 or math.isnan(std) else f"{std:.2f}"
    return f"{mean:.2f} ± {sd}"


def fmt_paper(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("<", r"$<$"), (">", r"$>$")):
        s = s.replace(a, b)
    return s.replace("±", r"$\pm$").replace("—", "--").replace(" · ", ", ")


def _short(alg: str) -> str:
    return "control" if alg == "sft_cont" else paper.display(alg)


def _bold_md(cell: str) -> str:
    """Bold the accuracy part of a cell, not the paper number beside it."""
    main, sep, rest = cell.partition(" (paper ")
    return f"**{main}**{sep}{rest}"


@dataclass
class Table:
    """A rendered table: the long CSV, header labels, body rows (block-separated)."""

    number: int
    caption: str
    long: pd.DataFrame
    lead: list[str]  # the left header columns
    columns: list[str]  # the value header columns
    blocks: list[list[tuple[list[str], list[str], list[bool]]]]  # rows: lead, cells, bold
    notes: list[str]

    def markdown(self) -> str:
        head = self.lead + self.columns
        lines = [f"**Table {self.number}.** {self.caption}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for block in self.blocks:
            for lead, cells, bold in block:
                shown = [_bold_md(c) if b else c for c, b in zip(cells, bold)]
                lines.append("| " + " | ".join(lead + shown) + " |")
        lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        ncol = len(self.lead) + len(self.columns)
        spec = "l" * len(self.lead) + "c" * len(self.columns)
        out = [r"% generated by pipa/reports.py; needs \usepackage{booktabs}",
               r"\begin{table}[t]", r"\centering", r"\small",
               f"\\caption{{{_tex_escape(self.caption)}}}", f"\\label{{tab:{self.number}}}",
               f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
               " & ".join(_tex_escape(h) for h in self.lead + self.columns) + r" \\",
               r"\midrule"]
        for i, block in enumerate(self.blocks):
            if i:
                out.append(r"\midrule")
            for lead, cells, bold in block:
                texed = []
                for c, b in zip(cells, bold):
                    main, sep, rest = c.partition(" (paper ")
                    main = _tex_escape(main)
                    if b:
                        main = f"\\textbf{{{main}}}"
                    if sep:
                        main += " {\\scriptsize (" + _tex_escape(rest.rstrip(")")) + ")}"
                    texed.append(main)
                out.append(" & ".join([_tex_escape(x) for x in lead] + texed) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\smallskip\parbox{\linewidth}{\footnotesize "
                       + _tex_escape(" ".join(self.notes)) + "}")
        out.append(r"\end{table}")
        assert ncol == len(spec)
        return "\n".join(out) + "\n"


def _bold_flags(means: list[float], contest: list[bool]) -> list[bool]:
    vals = [m for m, c in zip(means, contest) if c and not math.isnan(m)]
    if not vals:
        return [False] * len(means)
    best = max(vals)
    return [c and not math.isnan(m) and math.isclose(m, best, abs_tol=1e-9)
            for m, c in zip(means, contest)]


def _columns(col: Collected, models: list[str]) -> list[tuple[str, str]]:
    """(model, benchmark) columns in the paper's order: benchmark-major."""
    return [(m, b) for b in col.benchmarks for m in models]


def _col_header(col: Collected, m: str, b: str) -> str:
    return f"{benchmark_label(col.params, col.benchmarks, b)} · " \
           f"{model_label(col.params, col.benchmarks, m)}"


def _seeds_note(col: Collected) -> str:
    n = len(col.seeds)
    return (f"Cells: accuracy in % on the test problems, mean ± std over {n} seed"
            f"{'s' if n != 1 else ''} (std with ddof=1; '± —' when one seed); "
            "(paper x) = the paper's number for the same cell, — where the paper has none.")


def table1(col: Collected, summary: pd.DataFrame | None = None,
           sig: pd.DataFrame | None = None) -> Table:
    summary = _summary(col) if summary is None else summary
    columns = _columns(col, col.models)
    long_rows, blocks = [], []
    sft_stats = {}
    for m, b in columns:
        mu, sd, n = _lookup(summary, group="sft", model=m, benchmark=b)
        sft_stats[(m, b)] = (mu, sd, n)
        long_rows.append({"data": "all", "labels": "all", "algorithm": "sft", "model": m,
                          "benchmark": b, "mean": mu, "std": sd, "n_seeds": n,
                          "paper": math.nan})
    for setting, algs in _settings(col.params).items():
        data, labels = _split_setting(setting)
        stats = {}
        for alg in algs:
            for m, b in columns:
                mu, sd, n = _lookup(summary, group="main", setting=setting, algorithm=alg,
                                    model=m, benchmark=b)
                pb = _paper_bench(col.benchmarks, b)
                pv = paper.paper_table1(data, labels, alg, m, pb) if pb else None
                stats[(alg, m, b)] = (mu, sd, n, pv)
                long_rows.append({"data": data, "labels": labels, "algorithm": alg,
                                  "model": m, "benchmark": b, "mean": mu, "std": sd,
                                  "n_seeds": n, "paper": math.nan if pv is None else pv})
        bold = {}
        for m, b in columns:
            flags = _bold_flags([stats[(a, m, b)][0] for a in algs], [True] * len(algs))
            bold.update({(a, m, b): f for a, f in zip(algs, flags)})
        block = [([data, labels, paper.display("sft")],
                  [fmt_cell(*sft_stats[c]) for c in columns], [False] * len(columns))]
        for alg in algs:
            cells = []
            for m, b in columns:
                mu, sd, n, pv = stats[(alg, m, b)]
                cells.append(f"{fmt_cell(mu, sd, n)} (paper {fmt_paper(pv)})")
            block.append((["", "", paper.display(alg)], cells,
                          [bold[(alg, m, b)] for m, b in columns]))
        if sig is not None and len(sig):
            for comp, title in (("vs_best_baseline", "p_boot: best PIPA vs best baseline"),
                                ("vs_sft_cont", "p_boot: best PIPA vs continued SFT")):
                s = sig[(sig["table"] == 1) & (sig["setting"] == setting)
                        & (sig["comparison"] == comp)]
                if s.empty:
                    continue
                cells = []
                for m, b in columns:
                    r = s[(s["model"] == m) & (s["benchmark"] == b)].iloc[0]
                    cells.append(f"{fmt_p(r['p_boot'])} ({_short(r['a'])} vs "
                                 f"{_short(r['b'])})")
                block.append((["", "", title], cells, [False] * len(columns)))
        blocks.append(block)
    notes = [_seeds_note(col),
             ("Bold: the best mean of each block and column among the trained rows, the "
             "continued-SFT control included (so a reader sees when the control wins); the "
             "SFT row is the starting point of every algorithm and is not in the contest."),
             ("Continued SFT (control): the same correct solutions, the same steps and "
             "learning-rate selection, no negatives; neither it nor the SFT row is in the "
             "paper."),
             (f"p_boot: one-sided paired bootstrap over test problems (B={N_BOOT}, seeds "
             "paired), P(PIPA not better); best PIPA and best other chosen by mean.")]
    if _is_world(col.benchmarks):
        notes.append("Built-in world: the columns are its two tiers and two model families, "
                     "standing in for the paper's GSM8K/MATH and Deepseek/Qwen columns; the "
                     "paper numbers are shown for orientation, not as a like-for-like target.")
    long = pd.DataFrame(long_rows, columns=TABLE1_COLUMNS)
    return Table(1, paper.TABLE_CAPTIONS[1], long, ["data", "labels", "algorithm"],
                 [_col_header(col, m, b) for m, b in columns], blocks, notes)


def ablation_table(col: Collected, number: int, summary: pd.DataFrame | None = None,
                   sig: pd.DataFrame | None = None) -> Table | None:
    summary = _summary(col) if summary is None else summary
    names = [n for n in list(col.params.get("ablations", {}))
             if int(col.params["ablations"][n].get("table", 0)) == number]
    if not names:
        return None
    ab_models = list(col.params.get("ablation_models", []))
    columns = _columns(col, ab_models)
    long_rows, blocks = [], []
    for name in names:
        spec = col.params["ablations"][name]
        setting, base = spec["setting"], spec["baseline"]
        data, labels = _split_setting(setting)
        rows = []
        for role in ("baseline", "row"):
            stats = []
            for m, b in columns:
                if role == "baseline":
                    mu, sd, n = _lookup(summary, group="main", setting=setting,
                                        algorithm=base, model=m, benchmark=b)
                else:
                    mu, sd, n = _lookup(summary, group="ablation", ablation=name, model=m,
                                        benchmark=b)
                pb = _paper_bench(col.benchmarks, b)
                pv = paper.paper_ablation(name, role, m, pb) if pb else None
                stats.append((mu, sd, n, pv))
                long_rows.append({
                    "table": number, "ablation": name,
                    "role": "baseline" if role == "baseline" else "ablation",
                    "row": paper.display(base) if role == "baseline"
                    else paper.ablation_display(name, spec),
                    "setting": setting, "data": data, "labels": labels,
                    "algorithm": base if role == "baseline" else spec.get("algorithm", name),
                    "prior": "sft" if role == "baseline" else spec.get("prior", "sft"),
                    "model": m, "benchmark": b, "mean": mu, "std": sd, "n_seeds": n,
                    "paper": math.nan if pv is None else pv})
            rows.append(stats)
        flags = [_bold_flags([rows[0][j][0], rows[1][j][0]], [True, True])
                 for j in range(len(columns))]
        block = []
        for i, (role, title) in enumerate((("baseline", paper.display(base)),
                                           ("row", paper.ablation_display(name, spec)))):
            cells = [f"{fmt_cell(*s[:3])} (paper {fmt_paper(s[3])})" for s in rows[i]]
            block.append(([data, labels, title] if i == 0 else ["", "", title], cells,
                          [f[i] for f in flags]))
        if sig is not None and len(sig):
            s = sig[sig["comparison"] == f"ablation:{name}"]
            cells = [fmt_p(s[(s["model"] == m) & (s["benchmark"] == b)].iloc[0]["p_boot"])
                     for m, b in columns]
            block.append((["", "", "p_boot (two-sided, vs row above)"], cells,
                          [False] * len(columns)))
        blocks.append(block)
    notes = [_seeds_note(col),
             ("Each block compares an ablated variant with its baseline from the main grid "
             "(same setting, model and seeds); bold = the better mean of the block."),
             (f"p_boot: two-sided paired bootstrap over test problems (B={N_BOOT}, seeds "
             "paired).")]
    long = pd.DataFrame(long_rows, columns=ABLATION_COLUMNS)
    return Table(number, paper.TABLE_CAPTIONS.get(number, f"Ablation table {number}"), long,
                 ["data", "labels", "variant"], [_col_header(col, m, b) for m, b in columns],
                 blocks, notes)


# --------------------------------------------------------------------------------------
# Curves and figures
# --------------------------------------------------------------------------------------

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


def _model_suffix(col: Collected, model: str) -> str:
    return "" if model == col.models[0] else f"_{model}"


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
    sources = _fig3_sources(col.params)
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
                     f"{model_label(col.params, col.benchmarks, model)}; line = mean over "
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
    sources = _fig4_sources(col.params)
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
                     f"{model_label(col.params, col.benchmarks, model)}; line = mean over "
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
    for model in col.params.get("ablation_models", []):
        for t in _sweep(col.params):
            accs = []
            for s in col.seeds:
                c = _threshold_cell(col.params, t, model, s)
                hit = col.acc[(col.acc["cell"] == c) & (col.acc["benchmark"] == bench)]
                accs.append(float(hit["accuracy"].iloc[0]))
            mu, sd, n = mean_std(accs)
            rows.append({"model": model, "benchmark": bench, "threshold": t, "mean": mu,
                         "std": sd, "n_seeds": n,
                         "default": float(t) == float(col.params["threshold"])})
    return pd.DataFrame(rows)


def figure5(col: Collected, out: Path, sweep: pd.DataFrame) -> None:
    plt = _plt()
    if sweep.empty:
        return
    bench = sweep["benchmark"].iloc[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, g in sweep.groupby("model", sort=False):
        ax.errorbar(g["threshold"], g["mean"], yerr=g["std"].fillna(0.0), marker="o",
                    capsize=3, label=model_label(col.params, col.benchmarks, model))
    default = float(col.params["threshold"])
    ax.axvline(default, color="grey", linestyle="--", linewidth=1,
               label=f"default threshold {default:g} (main grid)")
    ax.set_xlabel("threshold on the step value Q (in [-1, 1]) above which a step of a "
                  "wrong answer is labelled correct", fontsize=8)
    ax.set_ylabel(f"accuracy on {benchmark_label(col.params, col.benchmarks, bench)} (%)")
    n = len(col.seeds)
    ax.set_title(f"Figure 5: step-level {paper.display(col.params['sweep_algorithm'])} "
                 "(unpaired data) against the threshold\n"
                 f"mean ± std over {n} seed{'s' if n != 1 else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "figures" / "fig5_threshold.png")
    plt.close(fig)


def dvc_plots_spec(params: dict, out: str = "reports") -> list[dict]:
    """Top-level ``plots:`` entries of dvc.yaml for the curves of Figures 3-5 (they read the
    CSVs the report stage writes under ``{out}/plots/``)."""
    models = list(params["models"])
    specs = []

    def suffix(m):
        return "" if m == models[0] else f"_{m}"

    f3 = [f"{a}_{s}" for s, a in _fig3_sources(params)]
    f4 = [f"{a}_{w}" for _, a in _fig4_sources(params) for w in ("correct", "incorrect")]
    for m in models if f3 else []:
        specs.append({f"fig3_value_likelihood{suffix(m)}": {
            "template": "linear", "x": "step",
            "y": {f"{out}/plots/fig3_value_likelihood_{m}.csv": f3},
            "title": f"Value-head label likelihood during PIPA training ({m})",
            "x_label": "training step", "y_label": "geometric-mean label likelihood"}})
    for m in models if f4 else []:
        specs.append({f"fig4_implicit_reward{suffix(m)}": {
            "template": "linear", "x": "step",
            "y": {f"{out}/plots/fig4_implicit_reward_{m}.csv": f4},
            "title": f"Implicit reward, DPO vs Step-DPO ({m})",
            "x_label": "training step", "y_label": "implicit reward R(y) (nats)"}})
    if params.get("sweep_thresholds"):
        specs.append({"fig5_threshold": {
            "template": "linear", "x": "threshold",
            "y": {f"{out}/plots/fig5_threshold.csv": [
                f"mean_{m}" for m in params.get("ablation_models", [])]},
            "title": "Accuracy on the MATH column against the step-label threshold",
            "x_label": "threshold", "y_label": "accuracy (%)"}})
    return specs


# --------------------------------------------------------------------------------------
# The agreement paragraph and README
# --------------------------------------------------------------------------------------

def _count(pairs) -> tuple[int, int]:
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None
             and not (isinstance(a, float) and math.isnan(a))]
    return sum(a > b for a, b in pairs), len(pairs)


def agreement(col: Collected, summary: pd.DataFrame, sig: pd.DataFrame,
              curves3: dict, curves4: dict, sweep: pd.DataFrame) -> list[str]:
    """Plain-word findings, each computed from the numbers next to the paper's."""
    out = []
    cols = _columns(col, col.models)
    directions = []  # (what, ours a > b, paper a > b) for every comparison the paper has

    def direction(what, ours_a, ours_b, paper_a, paper_b):
        if None not in (paper_a, paper_b) and not math.isnan(ours_a - ours_b):
            directions.append((what, ours_a > ours_b, paper_a > paper_b))

    # Table 1: each PIPA variant against each paper baseline of its block
    for setting, algs in _settings(col.params).items():
        data, labels = _split_setting(setting)
        bases = [a for a in algs if a not in paper.PIPA_ALGORITHMS and a != "sft_cont"]
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
    for comp, what in (("vs_best_baseline", ("the best other algorithm of its block (control "
                        "included)")),
                       ("vs_best_paper_baseline", "the best of the paper's baselines"),
                       ("vs_sft_cont", "the continued-SFT control")):
        s = t1[t1["comparison"] == comp] if len(t1) else t1
        if len(s):
            k = int(((s["p_boot"] < ALPHA) & (s["diff"] > 0)).sum())
            lose = int((s["diff"] < 0).sum())
            out.append(f"The best PIPA variant beats {what} beyond noise (p_boot < {ALPHA}) "
                       f"in {k} of {len(s)} cells; it has the lower mean in {lose}. "
                       "(The paper reports no significance tests and no control.)")
    # the SFT start point
    wins = 0
    for m, b in cols:
        best = max(_main_mean(summary, s, a, m, b)
                   for s, algs in _settings(col.params).items() for a in algs
                   if a != "sft_cont")
        wins += best > _lookup(summary, group="sft", model=m, benchmark=b)[0]
    out.append(f"The best aligned model beats the SFT start point in {wins} of {len(cols)} "
               "columns (the paper does not print the SFT accuracy).")
    # step vs answer labels
    settings = _settings(col.params)
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
                       f"{benchmark_label(col.params, col.benchmarks, b)}: {ours[0]} of "
                       f"{ours[1]} model × variant pairs (paper, "
                       f"{paper.PAPER_BENCHMARK_NAMES[pb]}: {pw} of {pn}).")
    # ablations
    for name in list(col.params.get("ablations", {})):
        spec = col.params["ablations"][name]
        ab_cols = _columns(col, list(col.params.get("ablation_models", [])))
        pairs, ppairs = [], []
        for m, b in ab_cols:
            pairs.append((_lookup(summary, group="ablation", ablation=name, model=m,
                                  benchmark=b)[0],
                          _main_mean(summary, spec["setting"], spec["baseline"], m, b)))
            pb = _paper_bench(col.benchmarks, b)
            if pb:
                ppairs.append((paper.paper_ablation(name, "row", m, pb),
                               paper.paper_ablation(name, "baseline", m, pb)))
                direction(f"{paper.ablation_display(name, spec)} vs "
                          f"{paper.display(spec['baseline'])}, {_short_col(col, m, b)}",
                          *pairs[-1], *ppairs[-1])
        ours, (pw, pn) = _count(pairs), _count(ppairs)
        s = sig[sig["comparison"] == f"ablation:{name}"] if len(sig) else sig
        nsig = int((s["p_boot"] < ALPHA).sum()) if len(s) else 0
        ptxt = f"paper: {pw} of {pn}" if pn else "paper: no numbers"
        out.append(f"Table {spec.get('table')}: {paper.ablation_display(name, spec)} is above "
                   f"{paper.display(spec['baseline'])} in {ours[0]} of {ours[1]} columns "
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
    for alg, paper_dir in (("dpo", "falls"), ("step_dpo", "rises")):
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


def _ablation_words(name: str, spec: dict) -> str:
    return (f"`{name}` (Table {spec.get('table')}): {spec.get('algorithm')} with prior "
            f"{spec.get('prior', 'sft')} against {spec.get('baseline')} in {spec.get('setting')}")


def _provenance_words(prov: dict) -> str:
    machines = "; ".join(f"{m['cpu']} (torch CPU capability {m['capability']}, native bf16 "
                         f"{m['bf16_native']}, torch {m['torch']})"
                         for m in prov["machines"] if m) or "not recorded"
    return (f"- Computed on: {machines}; training precision "
            f"{', '.join(prov['precision']) or 'not recorded'} (`runtime.mixed_precision: "
            f"{{auto, fp32, bf16}}`; {prov['cells_recorded']} of {prov['cells']} aligned "
            "cells recorded it). Another CPU type gives other numbers: "
            "`python -m pipa.compare` checks a rerun within measured bounds.")


def readme(col: Collected, tables: list[Table], sig: pd.DataFrame, findings: list[str],
           figures: list[str], prov: dict | None = None) -> str:
    p = col.params
    lines = ["# Results: Tables 1-4 and Figures 3-5", "",
             ("Generated by `python stages/report.py --params params.yaml --root . --out "
             "reports` (`pipa/reports.py`); do not edit by hand."), "",
             "## How these were made", "",
             "- Models: " + ", ".join(f"`{m}` = {model_label(p, col.benchmarks, m)}"
                                      for m in col.models),
             "- Benchmarks: " + ", ".join(f"`{b}` = {benchmark_label(p, col.benchmarks, b)}"
                                          for b in col.benchmarks),
             (f"- Seeds: {col.seeds} ({len(col.seeds)} per cell); every cell is mean ± std "
             "over these seeds."),
             "- Algorithms per setting: " + "; ".join(
                 f"{s}: {', '.join(a)}" for s, a in _settings(p).items()),
             f"- Ablations (models {p.get('ablation_models', [])}): " + "; ".join(
                 _ablation_words(n, p["ablations"][n]) for n in list(p.get("ablations", {}))),
             (f"- Step-label threshold: {p['threshold']}; Figure 5 sweep: "
             f"{[float(t) for t in _sweep(p)]} with `{p.get('sweep_algorithm')}` (the default "
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
    for t in tables:
        lines += [f"## Table {t.number}", "", t.markdown(),
                  (f"Files: `table{t.number}.md`, `table{t.number}.csv`, "
                  f"`table{t.number}.tex`."), ""]
    lines += ["## Figures", ""]
    lines += [f"![{f}](figures/{f})" + "\n" for f in figures]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def build(params: dict, root: str | Path, out: str | Path) -> dict:
    """Collect the grid under ``root`` and write every report file under ``out``."""
    col = collect(params, root)
    out = Path(out)
    summary = _summary(col)
    sig = significance(col, summary)
    tables = [table1(col, summary, sig)]
    for n in sorted({int(s.get("table", 0)) for s in params.get("ablations", {}).values()
                     if s is not None}):
        if n in (2, 3, 4):
            t = ablation_table(col, n, summary, sig)
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
    curves3 = figure3(col, out)
    curves4 = figure4(col, out)
    sweep = threshold_sweep(col, summary) if params.get("sweep_thresholds") else pd.DataFrame()
    figure5(col, out, sweep)
    for model, wide in curves3.items():
        _write_csv(wide, out / "plots" / f"fig3_value_likelihood_{model}.csv")
    for model, wide in curves4.items():
        _write_csv(wide, out / "plots" / f"fig4_implicit_reward_{model}.csv")
    if len(sweep):
        wide = sweep.pivot(index="threshold", columns="model", values="mean")
        wide.columns = [f"mean_{m}" for m in wide.columns]
        _write_csv(wide.reset_index(), out / "plots" / "fig5_threshold.csv")
    figures = _expected_figures(col)
    findings = agreement(col, summary, sig, curves3, curves4, sweep)
    # What pipa.compare checks beside the tables: per-cell records and what computed them.
    _write_csv(cell_table(col), out / "cells.csv")
    prov = study_provenance(col)
    _write_text(out / "provenance.json", json.dumps(prov, indent=2, sort_keys=True) + "\n")
    _write_text(out / "README.md",
                readme(col, tables, sig, findings, figures, prov))
    return {"tables": written, "figures": figures, "findings": findings,
            "significance": sig}


def _expected_figures(col: Collected) -> list[str]:
    """The figure files this build writes (computed from params, never globbed)."""
    names = []
    for prefix, ok in (("fig3_value_likelihood", _fig3_sources(col.params)),
                       ("fig4_implicit_reward", _fig4_sources(col.params))):
        if ok:
            names += [f"{prefix}{_model_suffix(col, m)}.png" for m in col.models]
    if col.params.get("sweep_thresholds") and col.params.get("ablation_models"):
        names.append("fig5_threshold.png")
    return names
