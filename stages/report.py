"""Stage report: Tables 1-4, Figures 3-5, significance and reports/README.md from the grid."""

import argparse
import sys

import _boot

from pipa.reports import MissingCellsError, build

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--params", default="params.yaml")
parser.add_argument("--root", default=".", help="folder that holds runs/")
parser.add_argument("--out", default="reports")
args = parser.parse_args()
try:
    result = build(_boot.params(args.params), args.root, args.out)
except (MissingCellsError, ValueError) as err:
    sys.exit(f"error: {err}")
print(f"report: wrote {len(result['tables'])} table files and {len(result['figures'])} "
      f"figures to {args.out}")
