"""Stage labels: the labelled dataset of one setting (paired/unpaired × answer/step)."""

import argparse

import _boot

from pipa import alphamath
from pipa.config import check_threshold
from pipa.context import context_check
from pipa.io import write_json, write_jsonl
from pipa.labels import build_setting

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--data", choices=["paired", "unpaired"], required=True)
parser.add_argument("--labels", choices=["answer", "step"], required=True)
parser.add_argument("--threshold", type=float, default=None,
                    help="override params' threshold (the Figure 5 sweep)")
parser.add_argument("--source", default="data/alphamath/train.json")
parser.add_argument("--base", default="models/base",
                    help="folder of the base models (params paths.base_models): their "
                         "tokenizers apply each model's context limit")
parser.add_argument("--out", required=True)
parser.add_argument("--stats", required=True)
args = parser.parse_args()
_boot.outputs(args.out, args.stats)
cfg = _boot.config()
threshold = check_threshold(args.threshold if args.threshold is not None else cfg.threshold)
solutions = alphamath.read(args.source)
records, stats = build_setting(solutions, args.data, args.labels, threshold,
                               cfg.seed, exceeds=context_check(cfg, args.base))
stats["context_limits"] = {m: cfg.family(m).arch.max_len for m in cfg.models}
write_jsonl(args.out, records)
write_json(args.stats, stats)
print(f"labels {args.data}/{args.labels} (threshold {threshold}): {len(records)} records, "
      f"{stats['skipped_solutions']['too_long']} solutions over a model's context dropped")
