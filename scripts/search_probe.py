"""Search with PIPA's value head on one trained cell of the default run, outside DVC: every
mode of ``pipa.search_eval`` on a subset of the test problems (issue #20's measurements
before Table 5 has stages of its own).

    python scripts/search_probe.py --cell unpaired_step/pipa_m/ds/0 --problems 100
    python scripts/search_probe.py --summary

Reads the cell's ``align/model`` (policy + value head) from the default run, draws
``--problems`` test problems per benchmark (``pipa.world.subsample`` with the data seed),
and runs greedy, majority@N, best-of-N by g (minimum and last step end), and the step beam
scored by g, the policy's log-probability, chance and the world's oracle, for each budget N
(``--budgets``, beam width ``--beam-width``). One JSON line per run goes to
``runs/levers/search.jsonl``; ``--summary`` prints that file as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import _boot  # noqa: F401  (the repo root on sys.path, the offline guards)

from pipa import config as C

RESULTS = ROOT / "runs" / "levers" / "search.jsonl"


def summary() -> None:
    print("| cell | problems / tier | mode | N | scorer | tier 1 / tier 2 | tokens / problem "
          "| s |")
    print("|---|---|---|---|---|---|---|---|")
    for line in RESULTS.read_text().splitlines():
        run = json.loads(line)
        where = run.get("align_dir", "")
        cell = run["cell"] + (f" ({where})" if "levers" in where else "")
        for row in run["modes"]:
            acc = " / ".join(f"{v:.1f}" for v in row["accuracy"].values())
            print(f"| {cell} | {run['problems']} | {row['mode']} | {row['budget']} | "
                  f"{row['scorer'] or ''} | {acc} | {row['tokens_per_problem']:.0f} | "
                  f"{row['seconds'] if row['seconds'] is not None else ''} |")
        v = run["verifier"]
        print(f"| {run['cell']} | | g as a verifier on the samples | | | AUC every / last / "
              f"min step end {v['auc_step']:.3f} / {v['auc_last']:.3f} / {v['auc_min']:.3f} "
              f"| | {run['sampling_seconds']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", help="SETTING/ALGORITHM/MODEL/SEED of a cell with a value head")
    ap.add_argument("--align-dir", type=Path, default=None,
                    help="read the policy from this align folder instead of the cell's in the "
                         "default run (e.g. runs/levers/<tag>/<cell>/align from levers.py)")
    ap.add_argument("--problems", type=int, default=100, help="test problems per benchmark")
    ap.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    if args.summary:
        summary()
        return
    if not args.cell:
        ap.error("--cell is required (or --summary)")

    from pipa.hardware import setup_runtime
    from pipa.search_eval import SearchSpec, align_dir, search_cell

    setting, algorithm, model_name, seed = args.cell.split("/")
    folder = args.align_dir or align_dir(ROOT, setting, algorithm, model_name, int(seed))
    cfg = C.load(ROOT / "params.yaml")
    setup_runtime(cfg.runtime.threads, cfg.seed)
    spec = SearchSpec(problems=args.problems, budgets=tuple(args.budgets),
                      beam_width=args.beam_width, temperature=args.temperature)
    found = search_cell(cfg, spec, model_name=model_name, seed=int(seed), align_dir=folder,
                        world_dir=ROOT / "data/world")
    where = folder.resolve()
    timing = found.pop("timing")
    record = {**found, "cell": args.cell,
              "align_dir": str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where),
              "problems": args.problems, "budgets": args.budgets,  # per tier, not the ids
              "beam_width": args.beam_width, "temperature": args.temperature,
              "seconds": timing["seconds"], "sampling_seconds": timing["sampling_seconds"],
              # the log keeps each mode's summary and seconds; per-problem lists are Table 5's
              "modes": [{**{k: v for k, v in row.items() if k not in ("correct", "tokens")},
                         "seconds": timing["modes"].get(
                             f"{row['mode']}/{row['budget']}/{row['scorer']}")}
                        for row in found["modes"]]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    print(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
