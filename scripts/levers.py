"""Measure one lever of the study on chosen grid cells, outside DVC, from the default run's
inputs (labels, cached priors, SFT models: run `bash scripts/repro.sh` first).

    python scripts/levers.py --tag epochs4 --set align.epochs=4 \
        --cell paired_answer/dpo/ds/0 --cell unpaired_step/pipa_m/ds/0

Each cell is aligned over params' lr grid (with the ``--set`` overrides, YAML values) and
evaluated on the test problems exactly as its DVC stage does (``pipa.align.align_cell``,
``pipa.evaluation.evaluate_folder``), into ``runs/levers/<tag>/<cell>/``; one JSON line per
cell is appended to ``runs/levers/results.jsonl``: the overrides, the lr chosen and every
lr's validation accuracy, the last step's logs of the chosen run (implicit rewards of
correct and incorrect samples, the value head's label likelihood), the test accuracies,
the steps, the wall time and the machine. ``--summary`` prints the file as a table;
``--base-rates`` the label base rate of each labelled dataset (the floor of Figure 3).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import _boot  # noqa: F401  (the repo root on sys.path, the offline guards)

from pipa import config as C

RESULTS = ROOT / "runs" / "levers" / "results.jsonl"


def override(params: dict, assignment: str) -> dict:
    """``key.sub=value`` (value parsed as YAML) applied to a copy of ``params``."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise SystemExit(f"error: --set {assignment!r}: write key=value, e.g. align.epochs=4")
    out = copy.deepcopy(params)
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    node[last] = value
    return out


def run_cell(cfg: C.Config, cell: str, folder: Path) -> dict:
    from pipa.align import align_cell
    from pipa.evaluation import evaluate_folder

    setting, algorithm, model, seed = cell.split("/")
    started = time.perf_counter()
    summary = align_cell(cfg, algorithm=algorithm, model_name=model, seed=int(seed),
                         labels_path=ROOT / f"data/labels/{setting}.jsonl",
                         prior_path=ROOT / f"data/prior/sft/{model}.safetensors",
                         sft_dir=ROOT / f"models/sft/{model}", world_dir=ROOT / "data/world",
                         out_dir=folder / "align")
    test = evaluate_folder(cfg, model, folder / "align" / "model", ROOT / "data/world",
                           folder / "eval")
    chosen = next(t for t in summary["lr_grid"] if t["lr"] == summary["selected_lr"])
    return {"cell": cell, "steps": summary["steps"], "selected_lr": summary["selected_lr"],
            "curves": curve_summary(folder / "align" / "dvclive"),
            "val_by_lr": {f"{t['lr']:g}": t["val_accuracy"] for t in summary["lr_grid"]},
            "final": chosen["final"], "verifier": summary.get("verifier"), "test": test,
            "precision": summary["precision"],
            "machine": summary["machine"], "seconds": round(time.perf_counter() - started, 1)}


def curve_summary(live: Path) -> dict:
    """What the chosen run's curves say beyond its last batch (one batch is noisy): the
    reward margin (correct minus incorrect) averaged over the second half of the steps, as
    the report's training direction (``pipa.cells.reward_margin``, ``late_mean``), and the value head's
    label likelihood averaged over the last tenth of the steps (Figure 3's end point)."""
    from pipa.cells import late_mean

    def curve(name: str, share: float) -> float:
        return late_mean(live / "plots" / "metrics" / "train" / f"{name}.tsv", name, share)

    margin = curve("reward_correct", 0.5) - curve("reward_incorrect", 0.5)
    out = {"margin_second_half": margin,
           "g_likelihood_last_tenth": curve("value_label_likelihood", 0.1)}
    return {k: v for k, v in out.items() if not math.isnan(v)}


def summary_table(path: Path, only: str = "") -> str:
    """``results.jsonl`` as a table. margin and g lik. come from the chosen run's curves
    (``curve_summary``: second half of the steps, last tenth) where the row has them, else
    from its last batch (rows written before the curves were recorded, marked *)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["tag"].startswith(only)]
    header = ("| tag | cell | steps | lr | val | test | margin | g lik. | g AUC | s |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        f, curves = r["final"], r.get("curves")
        test = " / ".join(f"{100 * v:.1f}" for k, v in r["test"].items() if k != "seconds")
        if curves is None:
            margin = f.get("reward_correct", math.nan) - f.get("reward_incorrect", math.nan)
            g_lik, mark = f.get("value_label_likelihood", math.nan), "*"
        else:
            margin = curves.get("margin_second_half", math.nan)
            g_lik, mark = curves.get("g_likelihood_last_tenth", math.nan), ""
        lines.append(
            f"| {r['tag']} | {r['cell']} | {r['steps']} | {r['selected_lr']:g} | "
            f"{100 * max(r['val_by_lr'].values()):.1f} | {test} | {margin:.2f}{mark} | "
            f"{g_lik:.4f}{mark} | "
            f"{(r.get('verifier') or {}).get('auc_step', math.nan):.3f} | {r['seconds']} |")
    return "\n".join(lines)


def base_rates() -> str:
    """Per labelled dataset: the share of response characters labelled c = 1 and the label
    likelihood of the best constant g (what a value head that learned only the base rate
    scores in Figure 3), the floor a head must beat to carry information."""
    lines = ["| labels | share c=1 | best constant g likelihood |", "|---|---|---|"]
    for path in sorted((ROOT / "data" / "labels").glob("*.jsonl")):
        n = n1 = 0
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for step, label in zip(record["steps"], record["step_labels"], strict=True):
                n += len(step)
                n1 += len(step) * label
        p = n1 / n
        ll = math.exp(p * math.log(p) + (1 - p) * math.log(1 - p)) if 0 < p < 1 else 1.0
        lines.append(f"| {path.stem} | {p:.3f} | {ll:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", help="name of this lever setting (folder and results key)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cell", action="append", default=[],
                        metavar="SETTING/ALGORITHM/MODEL/SEED")
    parser.add_argument("--summary", action="store_true", help="print the results table")
    parser.add_argument("--only", default="", metavar="PREFIX",
                        help="--summary: only the rows whose tag starts with PREFIX")
    parser.add_argument("--base-rates", action="store_true",
                        help="print each labelled dataset's label base rate")
    args = parser.parse_args()
    if args.summary:
        print(summary_table(RESULTS, args.only))
        return
    if args.base_rates:
        print(base_rates())
        return
    if not args.tag or not args.cell:
        raise SystemExit("error: give --tag and at least one --cell (or --summary)")
    params = C.load_params(ROOT / "params.yaml")
    for assignment in args.set:
        params = override(params, assignment)
    from pipa.losses import ALGORITHMS

    cfg = C.parse(params, "params.yaml + --set", ALGORITHMS)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for cell in args.cell:
        folder = ROOT / "runs" / "levers" / args.tag / cell.replace("/", "-")
        record = {"tag": args.tag, "overrides": args.set, **run_cell(cfg, cell, folder)}
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        f = record["final"]
        print(f"{args.tag} {cell}: lr {record['selected_lr']:g}, test {record['test']}, "
              f"R+ {f.get('reward_correct')}, R- {f.get('reward_incorrect')}, "
              f"g-likelihood {f.get('value_label_likelihood')}, {record['seconds']} s",
              flush=True)


if __name__ == "__main__":
    main()
