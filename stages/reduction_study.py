"""Stage reduction_study: the measurement behind PIPA's default token reduction.

PIPA's token terms can be summed per sequence (the paper's Algorithm 1) or averaged over
the sequence's labelled tokens. The main grid already aligns PIPA-M on the unpaired
step-level data with params' ``align.reduction``; this stage reads those cells and aligns
the other reduction for every ablation model and seed, then writes the test accuracies
side by side (reports/reduction_study.md and .json).
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import _boot

from pipa.align import align_cell
from pipa.evaluation import evaluate_folder
from pipa.io import atomic_path, write_json
from pipa.losses import ALGORITHMS

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--work", default="runs/reduction_study")
parser.add_argument("--out", default="reports/reduction_study")
args = parser.parse_args()
_boot.outputs(args.work, f"{args.out}.md", f"{args.out}.json")
cfg = _boot.config(algorithms=ALGORITHMS)
ALGORITHM, SETTING = "pipa_m", "unpaired_step"
REDUCTIONS = ("sum", "mean")
main_reduction = cfg.align.reduction
if ALGORITHM not in cfg.algorithms.get(SETTING, ()):
    raise SystemExit(f"params.yaml: algorithms.{SETTING} lacks {ALGORITHM!r}, whose main-grid "
                     f"cells are this study's align.reduction={main_reduction!r} arm; add it")


def main_grid_row(model: str, seed: int) -> dict:
    """The arm with params' reduction: the main grid's cell (stage align_unpaired_step)."""
    run = Path("runs/main") / SETTING / ALGORITHM / model / f"seed{seed}"
    try:
        summary = json.loads((run / "align" / "train.json").read_text())
        bench = json.loads((run / "eval" / "metrics.json").read_text())["benchmarks"]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise SystemExit(f"{run}: main-grid cell unreadable ({err}); run "
                         f"`dvc repro align_{SETTING}@{ALGORITHM}-{model}-{seed}`") from None
    return {"selected_lr": summary["selected_lr"], "val_accuracy": summary["val_accuracy"],
            **{b: v["accuracy"] for b, v in bench.items()}}


rows = []
with atomic_path(args.work) as tmp:
    for reduction in REDUCTIONS:
        cell_cfg = replace(cfg, align=replace(cfg.align, reduction=reduction))
        for model in cfg.ablation_models:
            for seed in cfg.seeds:
                if reduction == main_reduction:
                    result = main_grid_row(model, int(seed))
                else:
                    cell = tmp / ALGORITHM / reduction / model / f"seed{seed}"
                    summary = align_cell(
                        cell_cfg, algorithm=ALGORITHM, model_name=model, seed=int(seed),
                        labels_path=f"data/labels/{SETTING}.jsonl",
                        prior_path=f"data/prior/sft/{model}.safetensors",
                        sft_dir=f"models/sft/{model}", world_dir="data/world",
                        out_dir=cell / "align")
                    evaluated = evaluate_folder(cell_cfg, model, cell / "align" / "model",
                                                "data/world", cell / "eval")
                    result = {"selected_lr": summary["selected_lr"],
                              "val_accuracy": summary["val_accuracy"],
                              **{k: v for k, v in evaluated.items() if k != "seconds"}}
                rows.append({"algorithm": ALGORITHM, "reduction": reduction, "model": model,
                             "seed": int(seed), **result})
                print(json.dumps(rows[-1]))
benchmarks = [k for k in rows[0] if k not in ("algorithm", "reduction", "model", "seed",
                                               "selected_lr", "val_accuracy")]
intro = ("Unpaired step-level data; lr chosen on validation per cell; test accuracy (%), "
         f"mean over seeds. The {main_reduction} rows are the main grid's cells; made by "
         "`dvc repro reduction_study`.")
lines = ["# Token reduction of PIPA: sum per sequence vs mean over tokens", "", intro, "",
         "| algorithm | reduction | model | " + " | ".join(benchmarks) + " | validation |",
         "|---|---|---|" + "---|" * (len(benchmarks) + 1)]
groups: dict = {}
for r in rows:
    groups.setdefault((r["algorithm"], r["reduction"], r["model"]), []).append(r)
for (algorithm, reduction, model), rs in groups.items():
    cells = [f"{100 * sum(r[b] for r in rs) / len(rs):.2f}" for b in benchmarks]
    val = 100 * sum(r["val_accuracy"] for r in rs) / len(rs)
    lines.append(f"| {algorithm} | {reduction} | {model} | " + " | ".join(cells) +
                 f" | {val:.2f} |")
write_json(f"{args.out}.json", {"rows": rows})
with atomic_path(f"{args.out}.md") as tmp_md:
    tmp_md.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
