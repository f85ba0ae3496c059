"""Stage table5: Table 5 (beyond the paper, issue #20) from the search records of the cells
params' ``search`` section names; a missing cell is an error naming it."""

import argparse
import sys
from pathlib import Path

import _boot

from pipa.reports.search_table import SearchRecordError, build_from_grid

# The stage's outputs under --out (dvc.yaml), whose stale temporaries a start removes.
OUTPUTS = ["table5.md", "table5.tex", "table5.csv", "verifier.csv", "reliability.csv",
           "reliability.png"]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--params", default="params.yaml")
parser.add_argument("--root", default=".", help="folder that holds runs/search")
parser.add_argument("--out", default="reports/search")
args = parser.parse_args()
_boot.outputs(*(Path(args.out) / name for name in OUTPUTS))
try:
    result = build_from_grid(_boot.config(args.params), args.root, args.out)
except SearchRecordError as err:
    sys.exit(f"error: {err}")
print(f"table5: {len(result['cells'])} cells into {args.out}")
