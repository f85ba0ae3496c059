"""Stage align: one grid cell (algorithm × model × seed on one setting's labelled data).

Trains over the lr grid (selection on validation), then, with --eval-out, evaluates the
selected model on the test benchmarks in the same process: one interpreter start per cell
instead of two (start-up, not compute, dominates the tiny default's cells).
"""

import argparse

import _boot

from pipa.align import align_cell
from pipa.evaluation import evaluate_folder
from pipa.losses import ALGORITHMS
from pipa.training import end_distributed, is_main_process

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--algorithm", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--labels", required=True, help="labelled dataset (JSONL)")
parser.add_argument("--prior", required=True, help="cached prior log-probs (safetensors)")
parser.add_argument("--sft", required=True, help="folder of the SFT model")
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", required=True)
parser.add_argument("--eval-out", default=None, help="also evaluate into this folder")
args = parser.parse_args()
evaluated = [f"{args.eval_out}/{name}" for name in ("predictions.jsonl", "metrics.json")
             if args.eval_out]
_boot.outputs(args.out, *evaluated)
cfg = _boot.config(algorithms=ALGORITHMS)
summary = align_cell(cfg, algorithm=args.algorithm, model_name=args.model,
                     seed=args.seed, labels_path=args.labels, prior_path=args.prior,
                     sft_dir=args.sft, world_dir=args.world, out_dir=args.out)
end_distributed()  # the remaining work (evaluation) is the main process's alone
if is_main_process():  # under `accelerate launch` only the main process reports and evaluates
    print(f"align {args.algorithm} {args.model} seed {args.seed}: lr {summary['selected_lr']:g} "
          f"(validation {summary['val_accuracy']:.4f}), {summary['steps']} steps, "
          f"{summary['seconds']} s")
    if args.eval_out:
        result = evaluate_folder(cfg, args.model, f"{args.out}/model", args.world,
                                 args.eval_out)
        print(f"eval {args.algorithm} {args.model} seed {args.seed}: {result}")
