"""Compare regenerated tables with the committed ones (what CI checks after `dvc repro`).

    python -m pipa.compare EXPECTED_DIR ACTUAL_DIR [--tolerance 0.5]

Every ``table*.csv`` of EXPECTED_DIR must exist in ACTUAL_DIR with the same rows (keyed by
every label column present: table, ablation, role, row, data, labels, algorithm, prior,
model, benchmark) and ``mean``/``std`` within ``--tolerance``
percentage points. Prints a readable diff of every cell that moved and exits 1 if any did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEY = ["table", "ablation", "role", "row", "data", "labels", "algorithm", "prior", "model",
       "benchmark"]


def compare_table(expected: Path, actual: Path, tolerance: float) -> list[str]:
    if not actual.exists():
        return [f"{actual}: missing (expected like {expected})"]
    exp, act = pd.read_csv(expected), pd.read_csv(actual)
    key = [k for k in KEY if k in exp.columns]
    merged = exp.merge(act, on=key, how="outer", suffixes=("_committed", "_new"),
                       indicator=True)
    problems = []
    for _, row in merged.iterrows():
        name = " / ".join(str(row[k]) for k in key)
        if row["_merge"] != "both":
            side = "only in committed" if row["_merge"] == "left_only" else "only in new"
            problems.append(f"  {name}: row {side}")
            continue
        for col in ("mean", "std"):
            a, b = row.get(f"{col}_committed"), row.get(f"{col}_new")
            if pd.isna(a) and pd.isna(b):
                continue
            if pd.isna(a) or pd.isna(b) or abs(float(a) - float(b)) > tolerance:
                problems.append(f"  {name}: {col} committed {a} -> new {b}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("expected", type=Path)
    parser.add_argument("actual", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="allowed absolute difference in percentage points")
    args = parser.parse_args(argv)
    tables = sorted(args.expected.glob("table*.csv"))
    if not tables:
        print(f"error: no table*.csv in {args.expected}", file=sys.stderr)
        return 2
    failed = False
    for table in tables:
        problems = compare_table(table, args.actual / table.name, args.tolerance)
        status = "OK" if not problems else f"{len(problems)} difference(s)"
        print(f"{table.name}: {status}")
        for line in problems:
            print(line)
        failed |= bool(problems)
    print("tables reproduce" if not failed else
          f"tables differ beyond {args.tolerance} percentage points")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
