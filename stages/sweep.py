"""Stage sweep@THRESHOLD: Figure 5, step-level PIPA on unpaired data at one threshold.

Labels are rebuilt at this threshold, then ``sweep_algorithm`` is aligned and evaluated on
every ablation model and seed, into runs/threshold/THRESHOLD/MODEL/seedS/. The default
threshold's point comes from the main grid, not from here.
"""

import argparse

import _boot

from pipa import alphamath
from pipa.align import align_cell
from pipa.config import check_threshold
from pipa.context import context_check
from pipa.evaluation import evaluate_folder
from pipa.io import atomic_path, write_json, write_jsonl
from pipa.labels import build_setting
from pipa.losses import ALGORITHMS

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--threshold", type=float, required=True)
parser.add_argument("--source", default="data/alphamath/train.json")
parser.add_argument("--base", default="models/base",
                    help="folder of the base models (params paths.base_models)")
parser.add_argument("--out", required=True)
args = parser.parse_args()
_boot.outputs(args.out)
cfg = _boot.config(algorithms=ALGORITHMS)
threshold = check_threshold(args.threshold, "sweep_thresholds")
algorithm = cfg.sweep_algorithm
with atomic_path(args.out) as tmp:
    tmp.mkdir()
    records, stats = build_setting(alphamath.read(args.source), "unpaired", "step", threshold,
                                   cfg.seed, exceeds=context_check(cfg, args.base))
    write_jsonl(tmp / "labels.jsonl", records)
    write_json(tmp / "labels_stats.json", stats)
    for model in cfg.ablation_models:
        for seed in cfg.seeds:
            cell = tmp / model / f"seed{seed}"
            summary = align_cell(
                cfg, algorithm=algorithm, model_name=model, seed=seed,
                labels_path=tmp / "labels.jsonl",
                prior_path=f"data/prior/sft/{model}.safetensors", sft_dir=f"models/sft/{model}",
                world_dir="data/world", out_dir=cell / "align")
            result = evaluate_folder(cfg, model, cell / "align" / "model", "data/world",
                                     cell / "eval")
            print(f"sweep {threshold} {model} seed {seed}: lr {summary['selected_lr']:g}, "
                  f"test {result}")
