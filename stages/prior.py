"""Stage prior@MODEL: cache the prior's per-token log-probs of every training solution."""

import argparse

import _boot

from pipa.prior import compute_prior

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", required=True)
parser.add_argument("--prior-model", required=True, help="folder of the prior model")
parser.add_argument("--data", default="data/alphamath/train.json")
parser.add_argument("--out", required=True)
args = parser.parse_args()
_boot.outputs(args.out)
summary = compute_prior(_boot.config(), args.model, args.prior_model, args.data, args.out)
print(f"prior {args.model} from {args.prior_model}: {summary}")
