"""Stage reduction_study: the measurement behind PIPA's default token reduction.

PIPA's token terms can be summed per sequence (the paper's Algorithm 1) or averaged over
the sequence's labelled tokens. This stage aligns PIPA-M on the unpaired step-level
data with each reduction, for every ablation model and seed, and writes the
test accuracies side by side (reports/reduction_study.md and .json).
"""

import argparse
import copy
import json

import _boot

from pipa.config import get
from pipa.io import atomic_path, write_json
from pipa.workflow import align_cell, evaluate_folder

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--work", default="runs/reduction_study")
parser.add_argument("--out", default="reports/reduction_study")
args = parser.parse_args()
params = _boot.params()
rows = []
with atomic_path(args.work) as tmp:
    for algorithm in ("pipa_m",):
        for reduction in ("sum", "mean"):
            cell_params = copy.deepcopy(params)
            cell_params["align"]["reduction"] = reduction
            for model in get(params, "ablation_models"):
                for seed in get(params, "seeds"):
                    cell = tmp / algorithm / reduction / model / f"seed{seed}"
                    summary = align_cell(
                        cell_params, algorithm=algorithm, model_name=model, seed=int(seed),
                        labels_path="data/labels/unpaired_step.jsonl",
                        prior_path=f"data/prior/sft/{model}.safetensors",
                        sft_dir=f"models/sft/{model}", world_dir="data/world",
                        out_dir=cell / "align")
                    result = evaluate_folder(cell_params, model, cell / "align" / "model",
                                             "data/world", cell / "eval")
                    rows.append({"algorithm": algorithm, "reduction": reduction,
                                 "model": model, "seed": int(seed),
                                 "selected_lr": summary["selected_lr"],
                                 "val_accuracy": summary["val_accuracy"],
                                 **{k: v for k, v in result.items() if k != "seconds"}})
                    print(json.dumps(rows[-1]))
benchmarks = [k for k in rows[0] if k not in ("algorithm", "reduction", "model", "seed",
                                               "selected_lr", "val_accuracy")]
intro = ("Unpaired step-level data; lr chosen on validation per cell; test accuracy (%), "
         "mean over seeds. Made by `dvc repro reduction_study`.")
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
