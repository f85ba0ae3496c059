"""Stage eval: generate for every test problem, grade, write metrics.json + predictions."""

import argparse

import _boot

from pipa.evaluation import evaluate_folder

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", required=True, help="model family (ds, qw, ...)")
parser.add_argument("--model-dir", required=True)
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", required=True)
args = parser.parse_args()
_boot.outputs(f"{args.out}/predictions.jsonl", f"{args.out}/metrics.json")
summary = evaluate_folder(_boot.config(), args.model, args.model_dir, args.world, args.out)
print(f"eval {args.model_dir}: {summary}")
