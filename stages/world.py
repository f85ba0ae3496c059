"""Stage world: the built-in world's problems (two tiers, three splits) and corpora."""

import argparse

import _boot

from pipa.world import make_world

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default="data/world")
args = parser.parse_args()
_boot.outputs(args.out)
stats = make_world(_boot.config(), args.out)
print(f"world: {stats}")
