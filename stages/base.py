"""Stage base@MODEL: train a tokenizer and a causal LM from scratch on the family's corpus."""

import argparse

import _boot

from pipa.pretrain import pretrain_base

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", required=True)
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", required=True)
parser.add_argument("--live", required=True, help="dvclive folder for the training curve")
args = parser.parse_args()
summary = pretrain_base(_boot.params(), args.model, args.world, args.out, args.live)
print(f"base {args.model}: {summary['parameters']:,} parameters, {summary['steps']} steps, "
      f"final loss {summary['final_loss']:.4f}, {summary['seconds']} s")
