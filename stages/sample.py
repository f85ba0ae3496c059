"""Stage sample: AlphaMath-format alignment data sampled from the DS-family base model."""

import argparse
import json

import _boot

from pipa.sampling import sample_alphamath

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--base", required=True,
                    help="folder of the model that samples (params paths.base_models/sampling.model)")
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", default="data/alphamath/train.json")
parser.add_argument("--stats", default="data/alphamath/stats.json")
args = parser.parse_args()
_boot.outputs(args.out, args.stats)
stats = sample_alphamath(_boot.config(), args.base, args.world, args.out, args.stats)
print("sample: " + json.dumps(stats))
