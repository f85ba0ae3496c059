"""Stage base: for each family of params' `models`, a tokenizer and a causal LM trained
from scratch on the family's corpus; the families train side by side (runtime.workers)."""

import argparse

import _boot

from pipa.pretrain import pretrain_bases

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", required=True, help="folder of the models: <out>/<model>")
parser.add_argument("--live", required=True, help="dvclive folders: <live>/<model>/dvclive")
args = parser.parse_args()
_boot.outputs(args.out, args.live)
for summary in pretrain_bases(_boot.config(), args.world, args.out, args.live):
    print(f"base {summary['model']}: {summary['parameters']:,} parameters, {summary['steps']} "
          f"steps, final loss {summary['final_loss']:.4f}, {summary['seconds']} s")
