"""The report's grid: which cells and files params expect (never globbed), and reading
them all, with one error naming every missing file and its DVC stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipa import paper_numbers as paper
from pipa import registry
from pipa.config_types import Grid
from pipa.io import read_jsonl


class MissingCellsError(FileNotFoundError):
    """Raised once, listing every expected run file that does not exist."""


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


def main_cell(grid: Grid, model: str, seed: int, setting: str, algorithm: str) -> Cell:
    """The Table 1 cell of (setting, algorithm, model, seed); the control's lives once per
    data kind."""
    return Cell("main", model, seed, setting, algorithm,
                control=algorithm == grid.control)


def _settings(grid: Grid) -> dict[str, list[str]]:
    """Rows of each Table 1 block: the control (``grid.control``) first, then the
    setting's algorithms."""
    control = [grid.control] if grid.control else []
    return {s: control + [a for a in algs if a not in control]
            for s, algs in grid.algorithms.items()}


def _split_setting(setting: str) -> tuple[str, str]:
    """(data kind, label level) of a setting name (``pipa.registry``)."""
    return registry.SETTINGS[setting].data, registry.SETTINGS[setting].labels


def _fig3_sources(grid: Grid) -> list[tuple[str, str]]:
    return [(s, a) for s, algs in _settings(grid).items() for a in algs
            if a in paper.PIPA_ALGORITHMS]


def _fig4_sources(grid: Grid) -> list[tuple[str, str]]:
    out = []
    for alg in paper.FIGURE4_CORRECT_REWARD:
        for s, algs in _settings(grid).items():
            if alg in algs and _split_setting(s)[0] == "paired":
                out.append((s, alg))
                break
    return out


def _sweep(grid: Grid) -> list[float]:
    """Thresholds of Figure 5, the default one included (from the main grid)."""
    default = float(grid.threshold)
    ts = {float(t) for t in grid.sweep_thresholds} | {default}
    return sorted(ts)


def _threshold_cell(grid: Grid, t: float, model: str, seed: int) -> Cell:
    if float(t) == float(grid.threshold):
        return main_cell(grid, model, seed, "unpaired_step", grid.sweep_algorithm)
    # keep the params spelling of the value so the path matches the DVC matrix key
    raw = next(x for x in grid.sweep_thresholds if float(x) == float(t))
    return Cell("threshold", model, seed, threshold=raw)


def check_grid(grid: Grid) -> None:
    """Consistency of the grid itself (raises one ValueError listing every problem)."""
    problems = []
    for key in ("models", "seeds", "algorithms"):
        if not getattr(grid, key):
            problems.append(f"params `{key}` is missing or empty")
    if problems:
        raise ValueError("report grid: " + "; ".join(problems))
    settings = _settings(grid)
    models = list(grid.models)
    for m in grid.ablation_models:
        if m not in models:
            problems.append(f"ablation model {m!r} is not in `models` {models}")
    for name in list(grid.ablations):
        spec = grid.ablations.get(name)
        if spec is None:
            problems.append(f"ablation {name!r} has no entry in `ablations`")
            continue
        setting, base = spec.setting, spec.baseline
        if base not in settings.get(setting, []):
            problems.append(f"ablation {name!r}: baseline {base!r} is not in the main grid "
                            f"of setting {setting!r}")
    if grid.sweep_thresholds:
        alg = grid.sweep_algorithm
        if alg not in settings.get("unpaired_step", []):
            problems.append(f"sweep_algorithm {alg!r} is not in algorithms.unpaired_step")
    if problems:
        raise ValueError("report grid: " + "; ".join(problems))


def expected_cells(grid: Grid) -> dict[str, list[Cell]]:
    """Every cell the report reads, by group, in params order."""
    check_grid(grid)
    models, seeds = list(grid.models), list(grid.seeds)
    ab_models = list(grid.ablation_models)
    cells: dict[str, list[Cell]] = {"sft": [Cell("sft", m) for m in models], "main": [],
                                    "ablation": [], "threshold": []}
    for setting, algs in _settings(grid).items():
        for alg in algs:
            for m in models:
                cells["main"] += [main_cell(grid, m, s, setting, alg) for s in seeds]
    for name in list(grid.ablations):
        for m in ab_models:
            cells["ablation"] += [Cell("ablation", m, s, ablation=name) for s in seeds]
    if grid.sweep_thresholds:
        for t in grid.sweep_thresholds:
            if float(t) == float(grid.threshold):
                continue
            for m in ab_models:
                cells["threshold"] += [Cell("threshold", m, s, threshold=t) for s in seeds]
    return cells


def expected_files(grid: Grid) -> list[tuple[str, str]]:
    """(path, producing stage) of every file the report reads."""
    cells = expected_cells(grid)
    curves = {k: ["value_label_likelihood"] for k in _fig3_sources(grid)}
    for k in _fig4_sources(grid):
        curves.setdefault(k, []).extend(["reward_correct", "reward_incorrect"])
    files: list[tuple[str, str]] = [(c.metrics, c.stage()) for c in cells["sft"]]
    for c in cells["main"] + cells["ablation"]:
        files += [(c.metrics, c.stage()), (c.predictions, c.stage())]
        for name in curves.get((c.setting, c.algorithm), []) if c.group == "main" else []:
            files.append((c.curve(name), c.stage("align")))
    files += [(c.metrics, c.stage()) for c in cells["threshold"]]
    return files


@dataclass
class Collected:
    grid: Grid
    root: Path
    cells: dict[str, list[Cell]]
    benchmarks: list[str]
    acc: pd.DataFrame  # one row per (cell, benchmark): accuracy in percent
    _preds: dict = field(default_factory=dict, repr=False)

    @property
    def models(self) -> list[str]:
        return list(self.grid.models)

    @property
    def seeds(self) -> list[int]:
        return list(self.grid.seeds)

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


def collect(grid: Grid, root: str | Path) -> Collected:
    """Check every expected file exists (one error listing all missing), then load metrics."""
    root = Path(root)
    missing = [(p, st) for p, st in expected_files(grid) if not (root / p).is_file()]
    if missing:
        items = ", ".join(f"{p} (stage {st})" for p, st in missing)
        raise MissingCellsError(f"missing {len(missing)} cells: {items}")
    cells = expected_cells(grid)
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
    return Collected(grid, root, cells, benchmarks, pd.DataFrame(rows))


def _model_suffix(col: Collected, model: str) -> str:
    return "" if model == col.models[0] else f"_{model}"


def _expected_figures(col: Collected) -> list[str]:
    """The figure files this build writes (computed from params, never globbed)."""
    names = []
    for prefix, ok in (("fig3_value_likelihood", _fig3_sources(col.grid)),
                       ("fig4_implicit_reward", _fig4_sources(col.grid))):
        if ok:
            names += [f"{prefix}{_model_suffix(col, m)}.png" for m in col.models]
    if col.grid.sweep_thresholds and col.grid.ablation_models:
        names.append("fig5_threshold.png")
    return names
