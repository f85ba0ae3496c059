"""Does a regenerated study reproduce the committed one? What CI checks after `dvc repro`.

    python -m pipa.compare COMMITTED_DIR NEW_DIR [--bounds configs/table_check.json]
    python -m pipa.compare --measure RUN_A RUN_B [--out configs/table_check.json]
    python -m pipa.compare --agreement RUN_A RUN_B [--out FILE.json]

``--agreement`` answers another question: of what run A's tables say, how much does run B
(the same params on another base model: a second pretraining seed, or another CPU type)
say too? Every ordering of two rows within a Table 1 column, every row's sign of gain over
its SFT start, and every verdict of ``significance.csv`` at p_boot < 0.05 and < 0.01.

Two runs of the same params agree bit for bit only on the same kind of machine: another CPU
type (other kernels, bf16 native or not) trains other base models, and everything downstream
moves with them. So the check has two parts, reported separately:

* **Identity**, when both report folders' ``provenance.json`` name the same machine type
  (CPU model, torch's CPU capability, native bf16, torch version) and precision: every
  ``table*.csv``, ``cells.csv`` and ``significance.csv`` must be byte-identical, and Table 5's
  ``search/table5.csv`` and ``search/verifier.csv`` where the committed folder has them. Elsewhere
  it is not expected, and says so.
* **What the study claims, within measured bounds** (always):
  1. the same tables with the same rows (keyed by every label column), no empty cell;
  2. each model's SFT start per benchmark (Table 1's ``sft`` row) within
     ``z * sd_start`` points: the base model's own variation between machines;
  3. every other row's *gain over its SFT start* (the quantity the tables are about; taking
     the difference removes the base model's common shift) within
     ``z * sqrt(s_c^2/n_c + s_n^2/n_n + sd_gain_excess^2)``: the seed-to-seed spread of the
     two runs (``std``/``n_seeds`` of the row) plus what machines add beyond it;
  4. every comparison of ``significance.csv`` that the committed run found beyond noise
     (``p_boot < alpha``) points the same way in the new run;
  5. every aligned cell of ``cells.csv`` whose committed reward margin (implicit reward of
     correct minus incorrect samples over the second half of training) exceeds
     ``margin_floor`` nats in size keeps its sign: alignment still moves probability the
     same way (a sign error in a loss turns it round even where accuracy cannot see it).

``z`` (3.5 in configs/table_check.json) is a family-wise choice: the default study has ~100
rows, and for two runs that agree in distribution a normal row leaves +-3.5 sd with
probability 5e-4, so about one CI run in twenty would see one row outside by chance
(Bonferroni). ``sd_start`` and ``sd_gain_excess`` are measured, never typed in: ``--measure`` computes them
from two report folders of the same params made on different machines and adds the pair to
the bounds file (the largest over the pairs measured is what the check uses).
Exit status: 0 when everything holds, 1 otherwise (every failing cell named), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

KEY = ["table", "ablation", "role", "row", "data", "labels", "algorithm", "prior", "model",
       "benchmark"]
CELL_KEY = ["group", "setting", "algorithm", "ablation", "threshold", "model", "seed"]
# A comparison is named by what it asks (e.g. PIPA vs the best baseline of a column), not by
# whom it compares: the best baseline itself may change between machines.
SIG_KEY = ["table", "setting", "model", "benchmark", "comparison"]
# and Table 5 (stage table5) where the committed study has it
IDENTITY_FILES = ("cells.csv", "significance.csv", "search/table5.csv", "search/verifier.csv")
MACHINE_KEYS = ("cpu", "capability", "bf16_native", "torch")
DEFAULT_BOUNDS = Path(__file__).resolve().parents[1] / "configs" / "table_check.json"


class CompareError(ValueError):
    """A report folder or bounds file that cannot be compared (exit status 2)."""


# ---------------------------------------------------------------- reading

def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CompareError(f"{path}: missing")
    df = pd.read_csv(path)
    missing = [c for c in ("model", "benchmark", "mean") if c not in df.columns]
    if missing:
        raise CompareError(f"{path}: no column(s) {missing}; not a report table")
    return df


def table_key(df: pd.DataFrame) -> list[str]:
    return [k for k in KEY if k in df.columns]


def sft_starts(table1: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(model, benchmark) -> the SFT start (Table 1's ``sft`` row)."""
    rows = table1[table1["algorithm"] == "sft"]
    return {(r.model, r.benchmark): float(r.mean) for r in rows.itertuples()}


def provenance(folder: Path) -> dict | None:
    path = folder / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine_type(prov: dict | None) -> tuple | None:
    if not prov or len(prov.get("machines", [])) != 1:
        return None  # unknown, or cells made on several kinds of machine
    m = prov["machines"][0]
    return tuple(m.get(k) for k in MACHINE_KEYS) + (tuple(prov.get("precision", [])),)


def _describe(prov: dict | None) -> str:
    if not prov:
        return "unrecorded (no provenance.json)"
    machines = "; ".join(f"{m.get('cpu')} ({m.get('capability')}, native bf16 "
                         f"{m.get('bf16_native')}, torch {m.get('torch')})"
                         for m in prov.get("machines", []))
    return f"{machines or 'no cell records'}, precision {', '.join(prov.get('precision', []))}"


def load_bounds(path: Path) -> dict:
    if not path.is_file():
        raise CompareError(f"{path}: bounds file not found; make one with "
                           "`python -m pipa.compare --measure RUN_A RUN_B --out {path}`")
    bounds = json.loads(path.read_text())
    pairs = bounds.get("pairs", [])
    if not pairs:
        raise CompareError(f"{path}: no measured pairs; add one with --measure")
    for name in ("sd_start", "sd_gain_excess"):
        # The largest over the pairs measured: a machine pair nobody measured may differ
        # as much as the most different pair that was.
        bounds[name] = max(float(p[name]) for p in pairs)
    return bounds


# ---------------------------------------------------------------- the checks

def gains(table: pd.DataFrame, starts: dict, where: Path) -> pd.Series:
    """Each row's mean minus the SFT start of its model and benchmark."""
    try:
        anchor = [starts[(m, b)] for m, b in zip(table["model"], table["benchmark"])]
    except KeyError as err:
        raise CompareError(f"{where}: no SFT start for {err.args[0]} in table1.csv") from None
    return table["mean"].astype(float) - pd.Series(anchor, index=table.index)


def _seed_var(std, n) -> float:
    """Variance of a row's mean over seeds: std^2 / n (0 for a single run)."""
    return 0.0 if pd.isna(std) or not n or n < 2 else float(std) ** 2 / float(n)


def check_tables(committed: Path, new: Path, bounds: dict) -> list[str]:
    z = float(bounds["z"])
    exp1, act1 = read_table(committed / "table1.csv"), read_table(new / "table1.csv")
    starts_c, starts_n = sft_starts(exp1), sft_starts(act1)
    problems = []
    for key, value in starts_c.items():
        other = starts_n.get(key)
        tol = z * bounds["sd_start"]
        if other is None:
            problems.append(f"  table1.csv: SFT start {key[0]}/{key[1]} only in committed")
        elif abs(other - value) > tol:
            problems.append(f"  table1.csv: SFT start {key[0]}/{key[1]}: committed {value:.1f} "
                            f"-> new {other:.1f} (|diff| > {tol:.1f}: the base model moved "
                            "more than between the machines measured)")
    for path in sorted(committed.glob("table*.csv")):
        exp, act = read_table(path), read_table(new / path.name)
        key = table_key(exp)
        exp = exp.assign(gain=gains(exp, starts_c, path))
        act = act.assign(gain=gains(act, starts_n, new / path.name))
        merged = exp.merge(act, on=key, how="outer", suffixes=("_c", "_n"), indicator=True)
        for row in merged.to_dict("records"):
            name = f"{path.name}: " + " / ".join(str(row[k]) for k in key)
            if row["_merge"] != "both":
                side = "committed" if row["_merge"] == "left_only" else "new"
                problems.append(f"  {name}: row only in {side}")
                continue
            if pd.isna(row["mean_c"]) or pd.isna(row["mean_n"]):
                problems.append(f"  {name}: empty cell (committed {row['mean_c']}, "
                                f"new {row['mean_n']})")
                continue
            if row.get("algorithm") == "sft":
                continue  # checked above
            tol = z * math.sqrt(_seed_var(row.get("std_c"), row.get("n_seeds_c"))
                                + _seed_var(row.get("std_n"), row.get("n_seeds_n"))
                                + bounds["sd_gain_excess"] ** 2)
            diff = row["gain_n"] - row["gain_c"]
            if abs(diff) > tol:
                problems.append(f"  {name}: gain over SFT committed {row['gain_c']:+.1f} -> new "
                                f"{row['gain_n']:+.1f} (|diff| {abs(diff):.1f} > {tol:.1f})")
    return problems


def check_significance(committed: Path, new: Path, bounds: dict) -> list[str]:
    path_c, path_n = committed / "significance.csv", new / "significance.csv"
    if not path_c.is_file():
        return []  # nothing claimed
    if not path_n.is_file():
        return [f"  {path_n}: missing"]
    alpha = float(bounds["alpha"])
    exp, act = pd.read_csv(path_c), pd.read_csv(path_n)
    merged = exp[exp["p_boot"] < alpha].merge(act, on=SIG_KEY, how="left",
                                               suffixes=("_c", "_n"))
    problems = []
    for row in merged.to_dict("records"):
        name = " / ".join(str(row[k]) for k in SIG_KEY)
        if pd.isna(row["diff_n"]):
            problems.append(f"  significance.csv: {name}: missing in new")
        elif math.copysign(1, row["diff_c"]) != math.copysign(1, row["diff_n"]) \
                or row["diff_n"] == 0:
            problems.append(f"  significance.csv: {name}: committed {row['a_c']} - "
                            f"{row['b_c']} {row['diff_c']:+.1f} (p_boot {row['p_boot_c']:.4f} "
                            f"< {alpha}) -> new {row['a_n']} - {row['b_n']} "
                            f"{row['diff_n']:+.1f}: the claimed direction turned")
    return problems


def check_margins(committed: Path, new: Path, bounds: dict) -> tuple[list[str], str]:
    path_c, path_n = committed / "cells.csv", new / "cells.csv"
    if not path_c.is_file():
        return [], "committed folder has no cells.csv: training directions not checked"
    if not path_n.is_file():
        return [f"  {path_n}: missing"], ""
    floor = float(bounds["margin_floor"])
    exp, act = pd.read_csv(path_c), pd.read_csv(path_n)
    merged = exp.merge(act, on=CELL_KEY, how="outer", suffixes=("_c", "_n"), indicator=True)
    problems, checked = [], 0
    for row in merged.to_dict("records"):
        stage = row.get("stage_c") if isinstance(row.get("stage_c"), str) else row["stage_n"]
        if row["_merge"] != "both":
            side = "committed" if row["_merge"] == "left_only" else "new"
            problems.append(f"  cells.csv: {stage}: only in {side}")
            continue
        margin_c, margin_n = row["margin_c"], row["margin_n"]
        if pd.isna(margin_c) or abs(margin_c) <= floor:
            continue
        checked += 1
        if pd.isna(margin_n) or math.copysign(1, margin_c) != math.copysign(1, margin_n):
            problems.append(f"  cells.csv: {stage}: reward margin committed {margin_c:+.3f} -> "
                            f"new {margin_n:+.3f} nats: training moves the other way")
    return problems, f"{checked} cells' training direction checked"


def check_identity(committed: Path, new: Path) -> tuple[list[str], str]:
    prov_c, prov_n = provenance(committed), provenance(new)
    kind_c, kind_n = _machine_type(prov_c), _machine_type(prov_n)
    if kind_c is None or kind_c != kind_n:
        return [], (f"not expected: committed on {_describe(prov_c)}; new on "
                    f"{_describe(prov_n)}")
    names = [p.name for p in sorted(committed.glob("table*.csv"))] + list(IDENTITY_FILES)
    differ = [n for n in names if (committed / n).is_file()
              and (not (new / n).is_file()
                   or (committed / n).read_bytes() != (new / n).read_bytes())]
    problems = [f"  {n}: not byte-identical on the same machine type and precision"
                for n in differ]
    return problems, f"expected (same machine type and precision: {_describe(prov_n)})"


def compare(committed: Path, new: Path, bounds: dict) -> tuple[bool, list[str]]:
    """Every check; returns (all hold, the lines to print)."""
    if not sorted(committed.glob("table*.csv")):
        raise CompareError(f"{committed}: no table*.csv")
    lines, ok = [], True
    identity, how = check_identity(committed, new)
    lines.append(f"identity: {how}: " + ("FAILED" if identity else
                                          "holds" if how.startswith("expected") else "skipped"))
    lines += identity
    z = bounds["z"]
    lines.append(f"bounds: z={z}, SFT start +-{z * bounds['sd_start']:.1f} points, gain "
                 f"+-{z * bounds['sd_gain_excess']:.1f} points beyond seed noise "
                 f"({len(bounds['pairs'])} measured machine pair(s)), directions at "
                 f"p_boot < {bounds['alpha']}")
    for title, problems in (("tables", check_tables(committed, new, bounds)),
                            ("significance", check_significance(committed, new, bounds))):
        lines.append(f"{title}: " + (f"{len(problems)} problem(s)" if problems else "OK"))
        lines += problems
        ok &= not problems
    margins, note = check_margins(committed, new, bounds)
    lines.append("training directions: " + (f"{len(margins)} problem(s)" if margins
                                            else f"OK ({note})"))
    lines += margins
    ok &= not margins and not identity
    lines.append("the study reproduces" if ok else "the study does NOT reproduce")
    return ok, lines


# ---------------------------------------------------------------- measuring the bounds

def merged_gains(run_a: Path, run_b: Path, starts_a: dict, starts_b: dict) -> list[pd.DataFrame]:
    """Per table of ``run_a``, its rows joined with ``run_b``'s (suffixes ``_a``, ``_b``),
    each with its ``gain`` over its own run's SFT start (``sft_starts`` of each run's
    Table 1); the SFT start rows left out."""
    out = []
    for path in sorted(run_a.glob("table*.csv")):
        a, b = read_table(path), read_table(run_b / path.name)
        a = a.assign(gain=gains(a, starts_a, path))
        b = b.assign(gain=gains(b, starts_b, run_b / path.name))
        m = a.merge(b, on=table_key(a), suffixes=("_a", "_b"))
        out.append(m[m["algorithm"] != "sft"] if "algorithm" in m.columns else m)
    return out


def measure(run_a: Path, run_b: Path) -> dict:
    """The variation between two runs of the same params on different machines: the SFT
    starts' root mean square difference, and that of the gains beyond seed noise."""
    a1, b1 = read_table(run_a / "table1.csv"), read_table(run_b / "table1.csv")
    starts_a, starts_b = sft_starts(a1), sft_starts(b1)
    start_d = [starts_b[k] - v for k, v in starts_a.items() if k in starts_b]
    excess, n_cells = [], 0
    for m in merged_gains(run_a, run_b, starts_a, starts_b):
        for row in m.to_dict("records"):
            seed = (_seed_var(row.get("std_a"), row.get("n_seeds_a"))
                    + _seed_var(row.get("std_b"), row.get("n_seeds_b")))
            excess.append((row["gain_b"] - row["gain_a"]) ** 2 - seed)
            n_cells += 1
    if not start_d or not excess:
        raise CompareError(f"{run_a} and {run_b} share no SFT start or no cell")
    prov_a, prov_b = provenance(run_a), provenance(run_b)
    return {
        "a": _describe(prov_a), "b": _describe(prov_b), "n_cells": n_cells,
        "sd_start": round(math.sqrt(sum(d * d for d in start_d) / len(start_d)), 3),
        "sd_gain_excess": round(math.sqrt(max(0.0, sum(excess) / len(excess))), 3),
        "max_abs_start_diff": round(max(abs(d) for d in start_d), 2),
    }


# ---------------------------------------------------------------- agreement between runs

def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def agreement(run_a: Path, run_b: Path) -> dict:
    """How much of run A's claims run B repeats. Counts, each with its total:

    * ``orderings``: pairs of rows within one Table 1 column (data, labels, model,
      benchmark; the SFT start left out) whose means compare the same way in both runs
      (a tie is its own outcome);
    * ``gain_signs``: rows of every table (the SFT start left out) whose gain over their
      SFT start has the same sign in both runs;
    * ``verdicts_05`` / ``verdicts_01``: comparisons of ``significance.csv`` (keyed by what
      they ask, ``SIG_KEY``) with the same verdict, p_boot below the level or not, in both;
      ``same_partner`` counts those that compare with the same row b;
    * ``claims_05`` / ``claims_01``: of A's comparisons below the level, how many are
      below it in B with the difference pointing the same way (a claim that held), and
      how many point the other way at all.
    """
    a1, b1 = read_table(run_a / "table1.csv"), read_table(run_b / "table1.csv")
    column = ["data", "labels", "model", "benchmark"]
    rows_a, rows_b = a1[a1["algorithm"] != "sft"], b1[b1["algorithm"] != "sft"]
    m = rows_a.merge(rows_b, on=column + ["algorithm"], suffixes=("_a", "_b"))
    same_order = pairs = 0
    for _, grp in m.groupby(column):
        recs = grp.to_dict("records")
        for i, x in enumerate(recs):
            for y in recs[i + 1:]:
                pairs += 1
                same_order += (_sign(x["mean_a"] - y["mean_a"])
                               == _sign(x["mean_b"] - y["mean_b"]))
    same_gain = n_gain = 0
    for g in merged_gains(run_a, run_b, sft_starts(a1), sft_starts(b1)):
        n_gain += len(g)
        same_gain += int(sum(_sign(x) == _sign(y) for x, y in zip(g["gain_a"], g["gain_b"])))
    out = {"a": _describe(provenance(run_a)), "b": _describe(provenance(run_b)),
           "orderings": [same_order, pairs], "gain_signs": [same_gain, n_gain]}
    sig_a, sig_b = run_a / "significance.csv", run_b / "significance.csv"
    if sig_a.is_file() and sig_b.is_file():
        s = merged_significance(run_a, run_b)
        for level, tag in ((0.05, "05"), (0.01, "01")):
            va, vb = s["p_boot_a"] < level, s["p_boot_b"] < level
            fates = claim_fates(s, level)
            out[f"verdicts_{tag}"] = [int((va == vb).sum()), len(s)]
            out[f"claims_{tag}"] = {"held": fates.count("held"),
                                    "turned": fates.count("turned round"),
                                    "claimed": int(va.sum()), "found_in_b": int(vb.sum())}
        out["same_partner"] = [int((s["b_a"] == s["b_b"]).sum()), len(s)]
    return out


def merged_significance(run_a: Path, run_b: Path) -> pd.DataFrame:
    """The two runs' ``significance.csv`` side by side (suffixes ``_a``, ``_b``), matched by
    what each comparison asks (``SIG_KEY``)."""
    return pd.read_csv(run_a / "significance.csv").merge(
        pd.read_csv(run_b / "significance.csv"), on=SIG_KEY, suffixes=("_a", "_b"))


def claim_fates(merged: pd.DataFrame, level: float) -> list[str]:
    """For each comparison of ``merged`` (``merged_significance``) that run A found below
    ``level``, in order: ``"turned round"`` (run B's difference points the other way),
    ``"held"`` (below ``level`` in B too, the same way) or ``"not beyond noise"``."""
    fates = []
    for r in merged[merged["p_boot_a"] < level].itertuples():
        if _sign(r.diff_a) != _sign(r.diff_b):
            fates.append("turned round")
        else:
            fates.append("held" if r.p_boot_b < level else "not beyond noise")
    return fates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("committed", type=Path, help="report folder of the committed study "
                        "(--measure: the first run)")
    parser.add_argument("new", type=Path, help="report folder of the new run")
    parser.add_argument("--bounds", type=Path, default=DEFAULT_BOUNDS,
                        help="measured bounds (default: configs/table_check.json)")
    parser.add_argument("--measure", action="store_true",
                        help="measure the variation between the two folders and add it to "
                             "--out as a pair")
    parser.add_argument("--agreement", action="store_true",
                        help="count how much of the first folder's orderings, gains and "
                             "verdicts the second repeats (printed; --out FILE.json keeps it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="--measure: the bounds file to add to (default: --bounds'); "
                             "--agreement: a JSON file to write")
    parser.add_argument("--label", default="", help="with --measure: how the runs were made")
    args = parser.parse_args(argv)
    try:
        if args.agreement:
            found = dict(agreement(args.committed, args.new), label=args.label)
            if args.out:
                args.out.write_text(json.dumps(found, indent=2) + "\n")
            print(json.dumps(found, indent=2))
            return 0
        if args.measure:
            out = args.out or args.bounds
            pair = dict(measure(args.committed, args.new), label=args.label)
            bounds = json.loads(out.read_text()) if out.is_file() else {
                "z": 3.5, "alpha": 0.01, "margin_floor": 0.01, "pairs": []}
            bounds["pairs"].append(pair)
            out.write_text(json.dumps(bounds, indent=2) + "\n")
            print(json.dumps(pair, indent=2))
            return 0
        ok, lines = compare(args.committed, args.new, load_bounds(args.bounds))
    except (CompareError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return int(not ok)


if __name__ == "__main__":
    sys.exit(main())
