"""Stage ablation@NAME: one ablation of Tables 2-4 on every ablation model and seed.

The ablation's setting, algorithm and prior come from params ``ablations.NAME``; each
(model, seed) is aligned and evaluated in this one process (the cells are small and the
interpreter start-up would otherwise dominate), into runs/ablation/NAME/MODEL/seedS/.
"""

import argparse

import _boot

from pipa.align import align_cell
from pipa.config import ConfigError
from pipa.evaluation import evaluate_folder
from pipa.io import atomic_path
from pipa.losses import ALGORITHMS

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--name", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()
_boot.outputs(args.out)
cfg = _boot.config(algorithms=ALGORITHMS)
if args.name not in cfg.ablations:
    raise SystemExit(f"error: unknown ablation {args.name!r}; valid: {', '.join(cfg.ablations)}")
spec = cfg.ablations[args.name]
try:
    with atomic_path(args.out) as tmp:
        for model in cfg.ablation_models:
            for seed in cfg.seeds:
                cell = tmp / model / f"seed{seed}"
                summary = align_cell(
                    cfg, algorithm=spec.algorithm, model_name=model, seed=seed,
                    labels_path=f"data/labels/{spec.setting}.jsonl",
                    prior_path=f"data/prior/{spec.prior}/{model}.safetensors",
                    sft_dir=f"models/sft/{model}", world_dir="data/world", out_dir=cell / "align")
                result = evaluate_folder(cfg, model, cell / "align" / "model", "data/world",
                                         cell / "eval")
                print(f"ablation {args.name} {model} seed {seed}: lr {summary['selected_lr']:g}, "
                      f"test {result}")
except ConfigError as err:
    raise SystemExit(f"error: {err}") from None
