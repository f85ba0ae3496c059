"""Stage report: Tables 1-4, Figures 3-5, significance and reports/README.md from the grid."""

import argparse
import sys
from pathlib import Path

import _boot

from pipa.reports import MissingCellsError, build

# The stage's outputs under --out (dvc.yaml), whose stale temporaries a start removes.
OUTPUTS = ["README.md", "significance.csv", "power.csv", "cells.csv", "provenance.json",
           "figures", "plots",
           *(f"table{n}.{ext}" for n in (1, 2, 3, 4) for ext in ("md", "csv", "tex"))]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--params", default="params.yaml")
parser.add_argument("--root", default=".", help="folder that holds runs/")
parser.add_argument("--out", default="reports")
parser.add_argument("--second-base-model", default=None, metavar="FOLDER",
                    help="report folder of the same params on base models of another "
                         "pretraining seed: the README says which claims held there")
args = parser.parse_args()
_boot.outputs(*(Path(args.out) / name for name in OUTPUTS))
try:
    result = build(_boot.config(args.params), args.root, args.out,
                   second_base_model=args.second_base_model)
except (MissingCellsError, ValueError) as err:
    sys.exit(f"error: {err}")
print(f"report: wrote {len(result['tables'])} table files and {len(result['figures'])} "
      f"figures to {args.out}")
