"""Stage align: one grid cell (algorithm × model × seed on one setting's labelled data)."""

import argparse

import _boot

from pipa.workflow import align_cell

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--algorithm", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--labels", required=True, help="labelled dataset (JSONL)")
parser.add_argument("--prior", required=True, help="cached prior log-probs (safetensors)")
parser.add_argument("--sft", required=True, help="folder of the SFT model")
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", required=True)
args = parser.parse_args()
summary = align_cell(_boot.params(), algorithm=args.algorithm, model_name=args.model,
                     seed=args.seed, labels_path=args.labels, prior_path=args.prior,
                     sft_dir=args.sft, world_dir=args.world, out_dir=args.out)
print(f"align {args.algorithm} {args.model} seed {args.seed}: lr {summary['selected_lr']:g} "
      f"(validation {summary['val_accuracy']:.4f}), {summary['steps']} steps, "
      f"{summary['seconds']} s")
